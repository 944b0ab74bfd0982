//! A hostile container against the process plumbing: what an exec'd or init process can see
//! and reach of the shim (credentials, fds, signals), and that its stdin ends as under runc.

use eci_tests::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `ctr task exec` with `input` on its stdin (None: /dev/null); None if it had not ended after
/// `timeout` (it is then killed).
fn exec_with_stdin(id: &str, exec_id: &str, input: Option<&[u8]>, cmd: &[&str]) -> Option<Run> {
    let mut args = vec![
        "--address",
        &env().address,
        "task",
        "exec",
        "--exec-id",
        exec_id,
        id,
    ];
    args.extend_from_slice(cmd);
    let mut child = Command::new("ctr")
        .args(&args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ctr");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("write stdin");
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if child.try_wait().expect("wait ctr").is_some() {
            return Some(child.wait_with_output().expect("ctr output").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The way in of issue 11's first escape: a privileged process in the container seizes each
/// new pid the moment it appears, hoping for an exec'd child that still holds host root.
/// Before exec switched to the container's root and turned undumpable ahead of entering the
/// pid namespace, this caught a host-uid-0 process within a few execs.
#[test]
fn an_exec_is_never_seen_in_the_container_with_host_credentials() {
    let id = name("ptrace-exec");
    run_detached(
        &id,
        &["--privileged", "--mount", &probe_mount()],
        &["sleep", "120"],
    );
    let watcher = {
        let id = id.clone();
        std::thread::spawn(move || exec(&id, "watch", &["/probe/probe", "watch-exec", "8"]))
    };
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let mut execs = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let r = exec(&id, &format!("t{execs}"), &["true"]);
        assert_eq!(r.code, 0, "exec {execs}: {}", r.stderr);
        execs += 1;
    }
    let watched = watcher.join().expect("watcher");
    remove(&id);
    assert_eq!(watched.code, 0, "{} {}", watched.stdout, watched.stderr);
    let summary = watched
        .stdout
        .lines()
        .find(|l| l.starts_with("watch-exec"))
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.ends_with("host_root=0"),
        "{execs} execs: {}",
        watched.stdout
    );
}

/// Issue 11 (2): an exec'd process inherited the supervisor's stop pipe, other execs' stdin
/// pipes and a pipe shared with containerd. Each process starts with 0-2 only.
#[test]
fn container_processes_start_with_only_the_fds_they_are_given() {
    let id = name("fds");
    run_detached(&id, &["--privileged"], &["sleep", "120"]);
    // Another exec that holds a stdin pipe while the next ones start.
    let holder = {
        let id = id.clone();
        std::thread::spawn(move || exec_with_stdin(&id, "holder", Some(b""), &["sleep", "5"]))
    };
    std::thread::sleep(Duration::from_millis(500));
    let r = exec(&id, "list", &["ls", "/proc/self/fd"]);
    let init = exec(&id, "init", &["ls", "/proc/1/fd"]);
    let _ = holder.join();
    remove(&id);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fds: Vec<&str> = r.stdout.split_whitespace().collect();
    // ls holds 3 itself: the directory it lists.
    assert_eq!(fds, ["0", "1", "2", "3"], "an exec'd process's fds");
    let fds: Vec<&str> = init.stdout.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2"], "the init's fds: {}", init.stderr);
}

/// Issue 16 (1): `echo hi | ctr task exec … cat` printed hi and never ended: the exec held
/// the write end of its own stdin pipe. (`ctr task exec … cat </dev/null` is left out: ctr
/// itself races there — it may close its fifo before the shim opens it and before it has a
/// process to send CloseIO to — and hangs the same way under runc, 3 runs of 6 here.)
#[test]
fn an_exec_sees_the_end_of_its_stdin() {
    let id = name("stdin-eof");
    run_detached(&id, &[], &["sleep", "120"]);
    let mut results = Vec::new();
    for n in 0..3 {
        results.push(exec_with_stdin(
            &id,
            &format!("piped{n}"),
            Some(b"hi\n"),
            &["cat"],
        ));
    }
    let counted = exec_with_stdin(&id, "wc", Some(b"a\nb\nc\n"), &["wc", "-l"]);
    remove(&id);
    for piped in results {
        let piped = piped.expect("`echo hi | ctr task exec cat` did not end");
        assert_eq!((piped.code, piped.stdout.as_str()), (0, "hi\n"));
    }
    let counted = counted.expect("`wc -l` did not end");
    assert_eq!(counted.stdout.trim(), "3");
}

/// Issue 16 (2): container processes started with SIGPIPE (and, under a nohup'd containerd,
/// SIGHUP) ignored; `yes | head -1` made `yes` print "Broken pipe" and exit 1.
#[test]
fn container_processes_start_with_default_signal_handling() {
    let id = name("signals");
    // Run directly, not through `sh -c`: busybox ash as pid 1 ignores SIGQUIT itself and
    // execs the last command in place (under runc too).
    let status = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"];
    let init = run(&id, &[], &status);
    assert_eq!(init.code, 0, "{}", init.stderr);
    assert_eq!(
        init.stdout,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    let id = name("signals-exec");
    run_detached(&id, &[], &["sleep", "120"]);
    let execd = exec(&id, "status", &status);
    let pipe = exec(
        &id,
        "pipe",
        &["sh", "-c", "yes | head -1; echo ${PIPESTATUS:-done}"],
    );
    let hup = exec(
        &id,
        "hup",
        &[
            "sh",
            "-c",
            "sleep 30 & p=$!; kill -HUP $p; wait $p; echo $?",
        ],
    );
    remove(&id);
    assert_eq!(
        execd.stdout,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    assert!(!pipe.stderr.contains("Broken pipe"), "{}", pipe.stderr);
    assert_eq!(pipe.stdout.lines().next(), Some("y"));
    // 128 + SIGHUP: the child died of the signal rather than ignoring it.
    assert_eq!(hup.stdout.trim(), "129", "{}", hup.stderr);
}

/// The mount agent's child that builds a fresh procfs lives in the container's pid namespace
/// while it works, as the container's root: the container sees it and may signal it (which
/// stalls only its own mount), but it must not reach into it: it holds the host's /proc
/// (fd 3) and was exec'd in the host's user namespace, undumpable.
#[test]
fn the_agents_child_in_the_container_cannot_be_ptraced_or_read() {
    let id = name("agent-child");
    let script = "mkdir -p /tmp/p; /probe/probe agent-child 30 > /tmp/found & \
        i=0; while [ $i -lt 600 ] && ! [ -s /tmp/found ]; do \
          mount -t proc proc /tmp/p && umount /tmp/p; i=$((i+1)); done; wait; cat /tmp/found";
    let r = run(
        &id,
        &["--privileged", "--mount", &probe_mount()],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let found = r
        .stdout
        .lines()
        .find(|l| l.starts_with("agent-child"))
        .unwrap_or_default();
    assert!(
        found.starts_with("agent-child found"),
        "the agent's child was never seen (inconclusive): {}",
        r.stdout
    );
    for denied in ["seize=EPERM", "fd3=EACCES", "mem=EACCES", "ns=EACCES"] {
        assert!(found.contains(denied), "{denied} expected: {found}");
    }
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
}
