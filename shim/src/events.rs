//! The one sender of task events, and the owner of their order. containerd's clients expect a
//! process's TaskExit after its TaskStart (TaskExecStarted for an exec): a TaskExit that came
//! first left dockerd waiting forever for an exit it had already been told of. A start holds
//! [`Starting`] from releasing the process until its start event is out; an exit waits for it.

use crate::publisher::RemotePublisher;
use async_trait::async_trait;
use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics::{TASK_EXIT_EVENT_TOPIC, TASK_OOM_EVENT_TOPIC};
use containerd_shim::protos::ttrpc;
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard};

/// Where events go: containerd's publisher, or a recorder in tests.
#[async_trait]
pub(crate) trait EventSink: Send + Sync + 'static {
    /// Deliver one event; failures are the sink's to log.
    async fn send(&self, topic: &'static str, event: Box<dyn MessageDyn>);
}

/// containerd's event API, in the namespace the shim was started for.
pub(crate) struct Containerd {
    pub(crate) publisher: RemotePublisher,
    pub(crate) namespace: String,
}

#[async_trait]
impl EventSink for Containerd {
    async fn send(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(
                ttrpc::context::Context::default(),
                topic,
                &self.namespace,
                event,
            )
            .await
        {
            log::warn!("publish {topic}: {e}");
        }
    }
}

/// Publishes task events in the order containerd's clients rely on.
pub(crate) struct Events {
    sink: Arc<dyn EventSink>,
    order: Mutex<()>,
}

/// A process being started: until [`Starting::started`] has published its start event, no
/// exit is published (it waits, and goes out right after).
pub(crate) struct Starting<'a> {
    events: &'a Events,
    _order: MutexGuard<'a, ()>,
}

impl Starting<'_> {
    /// Publish the start event; exits held back may follow.
    pub(crate) async fn started(self, topic: &'static str, event: Box<dyn MessageDyn>) {
        self.events.sink.send(topic, event).await;
    }
}

impl Events {
    /// Events to `sink`.
    pub(crate) fn new(sink: Arc<dyn EventSink>) -> Self {
        Events {
            sink,
            order: Mutex::new(()),
        }
    }

    /// An event with no order to keep (create, exec added, paused, resumed, delete, OOM).
    pub(crate) async fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        self.sink.send(topic, event).await;
    }

    /// Hold exits back while a process is released and its start event published.
    pub(crate) async fn starting(&self) -> Starting<'_> {
        Starting {
            events: self,
            _order: self.order.lock().await,
        }
    }

    /// A TaskOOM for container `id`.
    pub(crate) async fn oom(&self, id: &str) {
        let event = TaskOOM {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publish(TASK_OOM_EVENT_TOPIC, Box::new(event)).await;
    }

    /// A process's TaskExit, after its start event. An OOM kill of an init is reported just
    /// before it (`oom` is asked once the order allows), as containerd's clients expect;
    /// `record` makes the exit visible to Wait and State just before the event goes out.
    pub(crate) async fn exit(
        &self,
        event: TaskExit,
        oom: impl FnOnce() -> bool + Send,
        record: impl FnOnce() + Send,
    ) {
        let _ordered = self.order.lock().await;
        if oom() {
            self.oom(&event.container_id).await;
        }
        record();
        self.sink.send(TASK_EXIT_EVENT_TOPIC, Box::new(event)).await;
    }
}
