//! The runtime foundation through a real containerd: user namespace and exclusive ID block per
//! container, ID-mapped file systems, the Task API through ctr, cleanup.

use eci_tests::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

#[test]
fn uid_map_is_an_exclusive_block_and_exit_codes_pass_through() {
    let id = name("uidmap");
    let r = run(&id, &[], &["cat", "/proc/self/uid_map"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (inside, host, size) = parse_uid_map(&r.stdout).expect("uid_map line");
    assert_eq!((inside, size), (0, 65536), "{}", r.stdout);
    assert!(
        host >= 100_000 && (host - 100_000) % 65536 == 0,
        "block {host}"
    );
    let gid = run(&name("gidmap"), &[], &["cat", "/proc/self/gid_map"]);
    assert_eq!(parse_uid_map(&gid.stdout).map(|m| m.2), Some(65536));

    let r = run(&name("exit"), &[], &["sh", "-c", "exit 3"]);
    assert_eq!(r.code, 3);
    // The lease is parked at task delete and freed by the sweep once containerd has deleted the
    // container; on containerd 1.6 that may come just after `ctr run --rm` returns.
    let left = leftovers_after(&id, Duration::from_secs(10));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn image_files_keep_their_owners_and_root_can_write() {
    let r = run(
        &name("owners"),
        &[],
        &["sh", "-c", "stat -c '%u:%g %n' /root/file /home/user/file /bin/busybox && echo x > /new && stat -c '%u:%g %n' /new && touch /home/user/file && id -u"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "0:0 /root/file",
            "1000:1000 /home/user/file",
            "0:0 /bin/busybox",
            "0:0 /new",
            "0"
        ]
    );
}

#[test]
fn concurrent_containers_get_disjoint_blocks() {
    let (a, b) = (name("pair-a"), name("pair-b"));
    run_detached(&a, &[], &["sleep", "60"]);
    run_detached(&b, &[], &["sleep", "60"]);
    let ma = exec(&a, "m", &["cat", "/proc/self/uid_map"]);
    let mb = exec(&b, "m", &["cat", "/proc/self/uid_map"]);
    remove(&a);
    remove(&b);
    let (_, ha, _) = parse_uid_map(&ma.stdout).expect("a's uid_map");
    let (_, hb, _) = parse_uid_map(&mb.stdout).expect("b's uid_map");
    assert!(ha.abs_diff(hb) >= 65536, "blocks overlap: {ha} {hb}");
    // A block stays leased until the last process has left its user namespace, which can
    // take a moment after delete on a loaded machine.
    let (la, lb) = (
        leftovers_after(&a, Duration::from_secs(10)),
        leftovers_after(&b, Duration::from_secs(10)),
    );
    assert!(la.is_empty() && lb.is_empty(), "{la:?} {lb:?}");
}

#[test]
fn detached_exec_pids_pause_metrics_kill_delete() {
    let id = name("detached");
    run_detached(&id, &[], &["sleep", "60"]);
    let e = exec(
        &id,
        "e1",
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; cat /proc/1/cmdline; exit 4",
        ],
    );
    assert_eq!(e.code, 4, "{}", e.stderr);
    assert!(
        e.stdout.contains("sleep"),
        "exec is not in the container's pid namespace: {}",
        e.stdout
    );
    let (_, host, _) = parse_uid_map(&e.stdout).expect("exec uid_map");
    assert!(
        host >= 100_000,
        "exec'd process is not in the container's user namespace: {}",
        e.stdout
    );

    let missing = exec(&id, "e2", &["no-such-binary"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("no-such-binary"),
        "{}",
        missing.stderr
    );

    // The init alone once the execs are reaped (header line + one pid).
    assert!(
        wait_until(Duration::from_secs(5), || ctr(&["task", "ps", &id])
            .stdout
            .lines()
            .count()
            == 2),
        "{}",
        ctr(&["task", "ps", &id]).stdout
    );
    assert_eq!(ctr(&["task", "pause", &id]).code, 0);
    assert!(task_status(&id).as_deref() == Some("PAUSED"));
    assert_eq!(ctr(&["task", "resume", &id]).code, 0);
    let metrics = ctr(&["task", "metrics", &id]);
    assert!(
        metrics.stdout.contains("memory.usage_in_bytes"),
        "{}",
        metrics.stdout
    );

    assert_eq!(ctr(&["task", "kill", "-s", "SIGKILL", &id]).code, 0);
    assert!(wait_until(Duration::from_secs(10), || task_status(&id)
        .as_deref()
        == Some("STOPPED")));
    assert_eq!(ctr(&["task", "delete", &id]).code, 0);
    assert_eq!(ctr(&["container", "delete", &id]).code, 0);
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
}

#[test]
fn signals_reach_the_process_and_its_exit_code_comes_back() {
    let id = name("signal");
    let e = env();
    let mut child = Command::new(&env().ctr)
        .args([
            "--address",
            &e.address,
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            &e.image,
            &id,
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ctr run");
    assert!(wait_until(Duration::from_secs(10), || task_status(&id)
        .as_deref()
        == Some("RUNNING")));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ctr(&["task", "kill", "-s", "SIGTERM", &id]).code, 0);
    let status = child.wait().expect("ctr run exits");
    assert_eq!(status.code(), Some(42));
}

#[test]
fn terminal_containers_and_execs_get_a_pty() {
    let id = name("tty");
    let e = env();
    let cmd = format!(
        "ctr --address {} run --rm -t --runtime {RUNTIME} {} {id} sh -c 'tty; exit 5'",
        e.address, e.image
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");

    let d = name("tty-exec");
    run_detached(&d, &[], &["sleep", "60"]);
    let cmd = format!(
        "ctr --address {} task exec -t --exec-id t {d} sh -c 'tty; cat /proc/self/uid_map'",
        e.address
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    remove(&d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/") && text.contains("65536"),
        "{text}"
    );
}

#[test]
fn a_host_directory_is_shared_consistently_between_two_blocks() {
    let dir = std::env::temp_dir().join(name("volume"));
    std::fs::create_dir_all(&dir).unwrap();
    let mount = format!("type=bind,src={},dst=/data,options=rbind:rw", dir.display());
    let (a, b) = (name("vol-a"), name("vol-b"));
    run_detached(&a, &["--mount", &mount], &["sleep", "60"]);
    run_detached(&b, &["--mount", &mount], &["sleep", "60"]);
    let wa = exec(
        &a,
        "w",
        &["sh", "-c", "echo a > /data/a && cat /proc/self/uid_map"],
    );
    let wb = exec(
        &b,
        "w",
        &[
            "sh",
            "-c",
            "echo b > /data/b && stat -c '%u %n' /data/a && cat /data/a && cat /proc/self/uid_map",
        ],
    );
    remove(&a);
    remove(&b);
    assert_eq!(wa.code, 0, "{}", wa.stderr);
    assert_eq!(wb.code, 0, "{}", wb.stderr);
    assert_ne!(
        parse_uid_map(wa.stdout.lines().last().unwrap()),
        parse_uid_map(wb.stdout.lines().last().unwrap())
    );
    assert!(
        wb.stdout.starts_with("0 /data/a\na\n"),
        "b sees a's file as {}",
        wb.stdout
    );
    use std::os::unix::fs::MetadataExt;
    for f in ["a", "b"] {
        let meta = std::fs::metadata(dir.join(f)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{f} landed on the host with the block's IDs"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_shim_leaves_nothing_after_containerd_cleans_up() {
    let id = name("shimkill");
    run_detached(&id, &[], &["sleep", "60"]);
    let pid = shim_pid(&id).expect("shim pid");
    nix_kill(pid);
    // containerd notices the dead shim and runs `containerd-shim-eci-v2 delete`.
    assert!(wait_until(Duration::from_secs(20), || {
        let _ = ctr(&["task", "delete", &id]);
        !ctr(&["task", "ls"]).stdout.contains(&id)
    }));
    let _ = ctr(&["container", "delete", &id]);
    let left = leftovers_after(&id, Duration::from_secs(10));
    assert!(left.is_empty(), "{left:?}");
}

fn nix_kill(pid: i32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn twenty_parallel_containers_get_distinct_blocks() {
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let id = name(&format!("par{i}"));
            std::thread::spawn(move || {
                let r = run(&id, &[], &["sh", "-c", "cat /proc/self/uid_map; sleep 3"]);
                (id, r)
            })
        })
        .collect();
    let mut blocks = BTreeSet::new();
    for h in handles {
        let (id, r) = h.join().unwrap();
        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
        blocks.insert(parse_uid_map(&r.stdout).expect("uid_map").1);
        assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
    }
    assert_eq!(blocks.len(), 20, "{blocks:?}");
}

#[test]
fn no_runc_is_needed() {
    let e = env();
    let r = run(&name("norunc"), &[], &["true"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The private containerd (and so the shim) runs with a PATH that has no runc on it.
    let pid =
        std::fs::read_to_string(std::path::Path::new(&e.address).with_file_name("containerd.pid"))
            .unwrap_or_default();
    if let Ok(environ) = std::fs::read(format!("/proc/{}/environ", pid.trim())) {
        let path = environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"PATH="))
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap();
        assert!(
            path.split(':')
                .all(|d| !std::path::Path::new(d).join("runc").exists()),
            "runc on containerd's PATH {path}"
        );
    }
}

#[test]
fn task_events_reach_containerd_including_oom() {
    let e = env();
    let log = std::env::temp_dir().join(name("events"));
    let mut events = Command::new(&env().ctr)
        .args(["--address", &e.address, "events"])
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("ctr events");
    std::thread::sleep(Duration::from_millis(300));
    let id = name("events");
    run_detached(&id, &[], &["sleep", "60"]);
    assert_eq!(exec(&id, "ev", &["true"]).code, 0);
    assert_eq!(ctr(&["task", "pause", &id]).code, 0);
    assert_eq!(ctr(&["task", "resume", &id]).code, 0);
    remove(&id);
    let oom = name("oom");
    let r = run(
        &oom,
        &["--memory-limit", "33554432"],
        &["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"],
    );
    assert_eq!(r.code, 137, "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let _ = events.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(
            text.lines().any(|l| l.contains(topic) && l.contains(&id)),
            "no {topic} for {id}:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.contains("/tasks/oom") && l.contains(&oom)),
        "no /tasks/oom for {oom}:\n{text}"
    );
}

/// containerd's clients act on task events in order: a TaskExit that arrives before its
/// TaskStart (or an exec's before its TaskExecStarted) leaves dockerd waiting for an exit it
/// was already told of. Short-lived tasks, started in parallel, must never show that.
#[test]
fn a_tasks_start_event_always_comes_before_its_exit() {
    let e = env();
    let mut events = Command::new(&env().ctr)
        .args(["--address", &e.address, "events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ctr events");
    std::thread::sleep(Duration::from_millis(300));
    let ids: Vec<String> = (0..12).map(|i| name(&format!("order{i}"))).collect();
    let runs: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| std::thread::spawn(move || run(&id, &[], &["true"])))
        .collect();
    for r in runs {
        let r = r.join().unwrap();
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let host = name("order-exec");
    run_detached(&host, &[], &["sleep", "60"]);
    let exec_ids: Vec<String> = (0..8).map(|i| name(&format!("ox{i}"))).collect();
    for exec_id in &exec_ids {
        let r = exec(&host, exec_id, &["true"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    remove(&host);
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let out = events.wait_with_output().expect("ctr events output");
    let text = String::from_utf8_lossy(&out.stdout);
    // The topics seen for each task or exec, in the order containerd published them.
    let mut seen: std::collections::HashMap<String, Vec<&str>> = Default::default();
    for line in text.lines() {
        let Some(topic) = ["/tasks/start", "/tasks/exec-started", "/tasks/exit"]
            .into_iter()
            .find(|t| line.contains(&format!(" {t} ")))
        else {
            continue;
        };
        let field = |key: &str| {
            let at = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
            Some(line[at..].split('"').next()?.to_string())
        };
        let task = match topic {
            "/tasks/exec-started" => field("exec_id"),
            "/tasks/exit" => field("id"),
            _ => field("container_id"),
        };
        if let Some(task) = task {
            seen.entry(task).or_default().push(topic);
        }
    }
    let tasks: Vec<String> = ids.iter().chain(&exec_ids).cloned().collect();
    for task in tasks {
        let topics = seen.get(&task).cloned().unwrap_or_default();
        assert_eq!(topics.len(), 2, "{task}: {topics:?}");
        assert_ne!(
            topics[0], "/tasks/exit",
            "{task}: exit before start: {topics:?}"
        );
    }
}
