//! The lifecycle without a kernel: a stub backend stands in for the helper and the host, and
//! a recorder for containerd's event API. Exits are delivered the way the reaper delivers
//! them, through `settle_exit`, at the moments that have gone wrong before.

use super::*;
use crate::events::EventSink;
use async_trait::async_trait;
use containerd_shim::protos::protobuf::MessageDyn;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;
use tokio::sync::mpsc;

/// An exit for the reaper's task to deliver; `ack` says it was settled (or kept).
type Delivery = (i32, i32, Option<tokio::sync::oneshot::Sender<()>>);

#[derive(Default)]
struct Stub {
    next_pid: AtomicI32,
    /// The reaper: exits sent here reach `settle_exit` on another task.
    reaper: StdMutex<Option<mpsc::UnboundedSender<Delivery>>>,
    /// The init dies while create runs (before its pid is in the table).
    die_in_create: StdMutex<Option<i32>>,
    /// The init dies as Start releases it (before TaskStart is out).
    die_in_start: StdMutex<Option<i32>>,
    /// The exec dies before the helper's answer reaches the table.
    die_in_exec: StdMutex<Option<i32>>,
    /// The exec fails to start.
    fail_exec: StdMutex<Option<ShimError>>,
    teardowns: AtomicUsize,
    signals: StdMutex<Vec<(i32, u32)>>,
}

impl Stub {
    fn reaper(&self) -> mpsc::UnboundedSender<Delivery> {
        self.reaper.lock().unwrap().clone().expect("reaper")
    }

    /// Deliver an exit and wait until it is settled or kept.
    async fn die_now(&self, pid: i32, code: i32) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.reaper().send((pid, code, Some(tx))).unwrap();
        rx.await.unwrap();
    }

    fn pid(&self) -> i32 {
        100 + self.next_pid.fetch_add(1, Ordering::SeqCst)
    }
}

#[async_trait]
impl Backend for Stub {
    type Workers = ();

    async fn create(&self, _req: &CreateTask) -> Result<Made<()>, ShimError> {
        let pid = self.pid();
        let code = self.die_in_create.lock().unwrap().take();
        if let Some(code) = code {
            self.die_now(pid, code).await;
        }
        Ok(Made {
            pid,
            block: 100_000,
            workers: (),
            io: ProcessIo::default(),
        })
    }

    async fn start(&self, _id: &str) -> Result<(), ShimError> {
        let code = self.die_in_start.lock().unwrap().take();
        if let Some(code) = code {
            // The exit cannot be published yet (TaskStart is not out): deliver it and give
            // it every chance to overtake.
            let pid = 100;
            self.reaper().send((pid, code, None)).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn exec(
        &self,
        _id: &str,
        _exec_id: &str,
        _spec: Vec<u8>,
        _stdio: &StdioPaths,
        _workers: Option<Arc<()>>,
    ) -> Result<Started, ShimError> {
        let failure = self.fail_exec.lock().unwrap().take();
        if let Some(e) = failure {
            return Err(e);
        }
        let pid = self.pid();
        let code = self.die_in_exec.lock().unwrap().take();
        if let Some(code) = code {
            self.die_now(pid, code).await;
        }
        Ok(Started {
            pid,
            io: ProcessIo::default(),
        })
    }

    fn signal(&self, pid: i32, signal: u32) -> Result<(), ShimError> {
        self.signals.lock().unwrap().push((pid, signal));
        self.reaper()
            .send((pid, 128 + i32::try_from(signal).unwrap(), None))
            .unwrap();
        Ok(())
    }

    async fn kill_all(&self, _id: &str, _signal: u32) -> Result<(), ShimError> {
        Ok(())
    }

    async fn freeze(&self, _id: &str, _frozen: bool) -> Result<(), ShimError> {
        Ok(())
    }

    async fn pids(&self, _id: &str) -> Result<Vec<i32>, ShimError> {
        Ok(vec![])
    }

    async fn stats(&self, _id: &str) -> Result<Any, ShimError> {
        Ok(Any::default())
    }

    async fn update(&self, _id: &str, _resources: &[u8]) -> Result<(), ShimError> {
        Ok(())
    }

    async fn teardown(&self, _id: &str, _bundle: &str, _workers: Option<Arc<()>>) {
        self.teardowns.fetch_add(1, Ordering::SeqCst);
    }

    fn oom_fired(_workers: &()) -> bool {
        false
    }
}

/// The events containerd would have received, as "topic id".
#[derive(Default)]
struct Recorder(StdMutex<Vec<String>>);

#[async_trait]
impl EventSink for Recorder {
    async fn send(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let id = if let Some(e) = event.downcast_ref::<TaskExit>() {
            format!("{} {}", e.id, e.exit_status)
        } else if let Some(e) = event.downcast_ref::<TaskExecStarted>() {
            e.exec_id.clone()
        } else if let Some(e) = event.downcast_ref::<TaskExecAdded>() {
            e.exec_id.clone()
        } else {
            String::new()
        };
        let topic = topic.rsplit('/').next().unwrap_or(topic);
        self.0
            .lock()
            .unwrap()
            .push(format!("{topic} {id}").trim().to_string());
    }
}

struct World {
    stub: Arc<Stub>,
    events: Arc<Recorder>,
    containers: Arc<Containers<Stub>>,
}

impl World {
    fn new() -> World {
        let stub = Arc::new(Stub::default());
        let events = Arc::new(Recorder::default());
        let containers = Arc::new(Containers::new(
            stub.clone(),
            Arc::new(Events::new(events.clone())),
            SharedExits::default(),
        ));
        let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
        *stub.reaper.lock().unwrap() = Some(tx);
        let reaper = containers.clone();
        tokio::spawn(async move {
            while let Some((pid, code, ack)) = rx.recv().await {
                let reaper = reaper.clone();
                // Each exit on its own task, as a blocked one must not hold up the next.
                tokio::spawn(async move {
                    reaper.settle_exit(pid, code).await;
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                });
            }
        });
        World {
            stub,
            events,
            containers,
        }
    }

    fn events(&self) -> Vec<String> {
        self.events.0.lock().unwrap().clone()
    }

    async fn create(&self, id: &str) -> Result<i32, ShimError> {
        self.containers
            .create(CreateTask {
                id: id.into(),
                bundle: format!("/bundles/{id}"),
                rootfs: vec![],
                stdio: StdioPaths::default(),
                policy_path: "/etc/containerd-shim-eci/policy.toml".into(),
            })
            .await
    }

    async fn state(&self, id: &str, exec_id: &str) -> State {
        self.containers.state(id, exec_id).await.unwrap().state
    }
}

#[tokio::test]
async fn a_whole_life_in_order() {
    let w = World::new();
    let pid = w.create("c1").await.unwrap();
    assert_eq!(w.state("c1", "").await, State::Created);
    assert_eq!(w.containers.start("c1", "").await.unwrap(), pid);
    assert_eq!(w.state("c1", "").await, State::Running);
    w.containers
        .add_exec("c1", "e1", b"{}".to_vec(), StdioPaths::default())
        .await
        .unwrap();
    let epid = w.containers.start("c1", "e1").await.unwrap();
    w.containers.kill("c1", "e1", 9, false).await.unwrap();
    assert_eq!(w.containers.wait("c1", "e1").await.unwrap().code, 137);
    let (deleted, exit) = w.containers.delete("c1", "e1").await.unwrap();
    assert_eq!((deleted, exit.map(|e| e.code)), (epid, Some(137)));
    w.containers.kill("c1", "", 15, false).await.unwrap();
    assert_eq!(w.containers.wait("c1", "").await.unwrap().code, 143);
    let (_, exit) = w.containers.delete("c1", "").await.unwrap();
    assert_eq!(exit.map(|e| e.code), Some(143));
    assert_eq!(w.stub.teardowns.load(Ordering::SeqCst), 1);
    assert_eq!(
        w.events(),
        [
            "create",
            "start",
            "exec-added e1",
            "exec-started e1",
            "exit e1 137",
            "exit c1 143",
            "delete"
        ]
    );
    assert!(w.containers.is_empty().await);
    assert_eq!(
        w.containers.state("c1", "").await.err().map(|e| e.code()),
        Some(ShimError::not_found("c1").code())
    );
}

#[tokio::test]
async fn init_exit_during_start_waits_for_task_start() {
    let w = World::new();
    w.create("c1").await.unwrap();
    *w.stub.die_in_start.lock().unwrap() = Some(1);
    w.containers.start("c1", "").await.unwrap();
    assert_eq!(w.containers.wait("c1", "").await.unwrap().code, 1);
    assert_eq!(w.events(), ["create", "start", "exit c1 1"]);
    // The reaper's Stopped stands: Start did not make it Running afterwards.
    assert_eq!(w.state("c1", "").await, State::Stopped);
}

#[tokio::test]
async fn init_exit_during_create_follows_task_create() {
    let w = World::new();
    *w.stub.die_in_create.lock().unwrap() = Some(137);
    w.create("c1").await.unwrap();
    assert_eq!(w.containers.wait("c1", "").await.unwrap().code, 137);
    assert_eq!(w.events(), ["create", "exit c1 137"]);
    assert_eq!(w.state("c1", "").await, State::Stopped);
    let e = w.containers.start("c1", "").await.unwrap_err();
    assert_eq!(
        e,
        ShimError::Refused("container c1 is not in created state".into())
    );
    w.containers.delete("c1", "").await.unwrap();
}

#[tokio::test]
async fn exec_exit_before_its_start_event() {
    let w = World::new();
    w.create("c1").await.unwrap();
    w.containers.start("c1", "").await.unwrap();
    w.containers
        .add_exec("c1", "e1", b"{}".to_vec(), StdioPaths::default())
        .await
        .unwrap();
    *w.stub.die_in_exec.lock().unwrap() = Some(3);
    w.containers.start("c1", "e1").await.unwrap();
    assert_eq!(w.containers.wait("c1", "e1").await.unwrap().code, 3);
    assert_eq!(w.state("c1", "e1").await, State::Stopped);
    assert_eq!(
        w.events(),
        [
            "create",
            "start",
            "exec-added e1",
            "exec-started e1",
            "exit e1 3"
        ]
    );
    // Killing it now finds nothing to kill.
    let e = w.containers.kill("c1", "e1", 9, false).await.unwrap_err();
    assert_eq!(e, ShimError::NotFound("process already finished".into()));
}

#[tokio::test]
async fn an_exec_that_fails_to_start_is_stopped_with_255() {
    let w = World::new();
    w.create("c1").await.unwrap();
    w.containers.start("c1", "").await.unwrap();
    w.containers
        .add_exec("c1", "e1", b"{}".to_vec(), StdioPaths::default())
        .await
        .unwrap();
    *w.stub.fail_exec.lock().unwrap() = Some(ShimError::Refused("no such program".into()));
    let e = w.containers.start("c1", "e1").await.unwrap_err();
    assert_eq!(e, ShimError::Refused("no such program".into()));
    assert_eq!(w.containers.wait("c1", "e1").await.unwrap().code, 255);
    assert_eq!(w.state("c1", "e1").await, State::Stopped);
    w.containers.delete("c1", "e1").await.unwrap();
}

#[tokio::test]
async fn delete_while_running_is_refused_and_changes_nothing() {
    let w = World::new();
    w.create("c1").await.unwrap();
    w.containers.start("c1", "").await.unwrap();
    let e = w.containers.delete("c1", "").await.unwrap_err();
    assert_eq!(
        e,
        ShimError::Refused("container c1 is still running; kill it first".into())
    );
    assert_eq!(w.state("c1", "").await, State::Running);
    assert_eq!(w.stub.teardowns.load(Ordering::SeqCst), 0);
    w.containers
        .add_exec("c1", "e1", b"{}".to_vec(), StdioPaths::default())
        .await
        .unwrap();
    w.containers.start("c1", "e1").await.unwrap();
    let e = w.containers.delete("c1", "e1").await.unwrap_err();
    assert_eq!(e, ShimError::Refused("exec e1 is still running".into()));
    // A paused container is running too.
    w.containers.freeze("c1", true).await.unwrap();
    assert_eq!(w.state("c1", "").await, State::Paused);
    assert!(matches!(
        w.containers.delete("c1", "").await,
        Err(ShimError::Refused(_))
    ));
    // A created one that never ran may go.
    w.create("c2").await.unwrap();
    w.containers.delete("c2", "").await.unwrap();
    assert_eq!(w.stub.teardowns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn invalid_transitions_are_refused_with_their_reason() {
    let w = World::new();
    w.create("c1").await.unwrap();
    let refused = |e: ShimError| match e {
        ShimError::Refused(m) => m,
        other => panic!("not a refusal: {other:?}"),
    };
    let e = w.containers.freeze("c1", true).await.unwrap_err();
    assert_eq!(refused(e), "container c1 is not running");
    w.containers.start("c1", "").await.unwrap();
    let e = w.containers.start("c1", "").await.unwrap_err();
    assert_eq!(refused(e), "container c1 is not in created state");
    let e = w.containers.freeze("c1", false).await.unwrap_err();
    assert_eq!(refused(e), "container c1 is not paused");
    w.containers.freeze("c1", true).await.unwrap();
    let e = w.containers.freeze("c1", true).await.unwrap_err();
    assert_eq!(refused(e), "container c1 is paused already");
    w.containers.freeze("c1", false).await.unwrap();
    w.containers
        .add_exec("c1", "e1", b"{}".to_vec(), StdioPaths::default())
        .await
        .unwrap();
    let e = w
        .containers
        .add_exec("c1", "e1", b"{}".to_vec(), StdioPaths::default())
        .await
        .unwrap_err();
    assert_eq!(e, ShimError::AlreadyExists("exec e1 already exists".into()));
    w.containers.start("c1", "e1").await.unwrap();
    let e = w.containers.start("c1", "e1").await.unwrap_err();
    assert_eq!(refused(e), "exec e1 already started");
    let e = w.create("c1").await.unwrap_err();
    assert_eq!(
        e,
        ShimError::AlreadyExists("container c1 already exists".into())
    );
    // Stopped: no exec, no pause.
    w.containers.kill("c1", "", 9, false).await.unwrap();
    w.containers.wait("c1", "").await.unwrap();
    let e = w
        .containers
        .add_exec("c1", "e2", b"{}".to_vec(), StdioPaths::default())
        .await
        .unwrap_err();
    assert_eq!(refused(e), "container c1 is stopped");
    let e = w.containers.freeze("c1", true).await.unwrap_err();
    assert_eq!(refused(e), "container c1 is stopped");
    assert_eq!(
        w.events(),
        [
            "create",
            "start",
            "paused",
            "resumed",
            "exec-added e1",
            "exec-started e1",
            "exit c1 137"
        ]
    );
}

#[tokio::test]
async fn unknown_containers_and_execs_are_not_found() {
    let w = World::new();
    let e = w.containers.kill("nope", "", 9, false).await.unwrap_err();
    assert_eq!(e, ShimError::NotFound("nope: not found".into()));
    w.create("c1").await.unwrap();
    w.containers.start("c1", "").await.unwrap();
    let e = w.containers.kill("c1", "e9", 9, false).await.unwrap_err();
    assert_eq!(e, ShimError::NotFound("e9: not found".into()));
    for e in [
        w.containers.start("c1", "e9").await.unwrap_err(),
        w.containers.delete("c1", "e9").await.err().unwrap(),
        w.containers.wait("c1", "e9").await.unwrap_err(),
        w.containers.close_io("c1", "e9").await.unwrap_err(),
        w.containers.resize("c1", "e9", 80, 24).await.unwrap_err(),
    ] {
        assert_eq!(e, ShimError::NotFound("e9: not found".into()));
    }
    assert!(w.stub.signals.lock().unwrap().is_empty());
    // A kill of an exec added but not started finds no process.
    w.containers
        .add_exec("c1", "e1", b"{}".to_vec(), StdioPaths::default())
        .await
        .unwrap();
    let e = w.containers.kill("c1", "e1", 9, false).await.unwrap_err();
    assert_eq!(e, ShimError::NotFound("process already finished".into()));
}

#[tokio::test]
async fn exits_of_strangers_are_kept_for_a_later_claim_only() {
    let w = World::new();
    // A pid nobody holds: kept as early, and not given to a process started later.
    w.stub.die_now(100, 5).await;
    w.create("c1").await.unwrap();
    assert_eq!(w.state("c1", "").await, State::Created);
    assert_eq!(w.events(), ["create"]);
}
