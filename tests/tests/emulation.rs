//! Each container's own /proc and /sys: uptime, memory and CPU views from its cgroup, host-wide
//! knobs kept per container, nothing broken, nothing left mounted.

use eci_tests::*;

fn uptime_of(line: &str) -> (f64, f64) {
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v[0], v[1])
}

#[test]
fn uptime_is_the_containers_and_grows() {
    let id = name("uptime");
    let r = run(
        &id,
        &[],
        &[
            "sh",
            "-c",
            "cat /proc/uptime; sleep 1.2; cat /proc/uptime; uptime",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let (a, a_idle) = uptime_of(lines[0]);
    let (b, b_idle) = uptime_of(lines[1]);
    assert!(a < 5.0, "uptime at start {a}");
    assert_eq!(a, a_idle, "both columns are the container's: {}", lines[0]);
    assert_eq!(b, b_idle);
    assert!(b >= a + 1.0, "{a} then {b}");
    assert!(
        lines[2].contains("up 0 min"),
        "sysinfo uptime is the host's: {}",
        lines[2]
    );
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(host > b, "host uptime {host}");
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
}

#[test]
fn memory_and_cpu_views_come_from_the_cgroup() {
    let r = run(
        &name("limits"),
        &["--memory-limit", "268435456", "--cpus", "1"],
        &["sh", "-c", "grep -E '^(MemTotal|SwapTotal):' /proc/meminfo; cat /sys/devices/system/cpu/online; grep -c ^processor /proc/cpuinfo; grep -c '^cpu[0-9]' /proc/stat; wc -l < /proc/swaps; free | grep -c Mem; nproc"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["MemTotal:", "262144", "kB"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["SwapTotal:", "0", "kB"]
    );
    assert_eq!(&lines[2..], ["0", "1", "1", "1", "1", "1"], "{}", r.stdout);

    let host_cpus = std::thread::available_parallelism().unwrap().get();
    let unlimited = run(&name("nolimit"), &[], &["nproc"]);
    assert_eq!(unlimited.stdout.trim(), host_cpus.to_string());
}

#[test]
fn knobs_are_per_container_and_never_reach_the_host() {
    let host_panic = std::fs::read_to_string("/proc/sys/kernel/panic").unwrap();
    let (a, b) = (name("knob-a"), name("knob-b"));
    run_detached(&a, &["--privileged"], &["sleep", "60"]);
    run_detached(&b, &["--privileged"], &["sleep", "60"]);
    let wa = exec(&a, "w", &["sh", "-c", "echo 11 > /proc/sys/kernel/panic"]);
    let wb = exec(&b, "w", &["sh", "-c", "echo 22 > /proc/sys/kernel/panic"]);
    let ra = exec(&a, "r", &["cat", "/proc/sys/kernel/panic"]);
    // Written and read back at once: a read must not find the bytes written (or a page the
    // kernel cached before the write) instead of the value the file keeps.
    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    let host_thp = std::fs::read_to_string(thp).ok();
    let ta = host_thp.as_ref().map(|_| {
        exec(
            &a,
            "t",
            &[
                "sh",
                "-c",
                &format!("cat {thp} >/dev/null; echo never > {thp} && cat {thp}"),
            ],
        )
    });
    let rb = exec(&b, "r", &["cat", "/proc/sys/kernel/panic"]);
    remove(&a);
    remove(&b);
    assert_eq!((wa.code, wb.code), (0, 0), "{} {}", wa.stderr, wb.stderr);
    assert_eq!((ra.stdout.trim(), rb.stdout.trim()), ("11", "22"));
    if let (Some(host), Some(ta)) = (host_thp, ta) {
        assert!(ta.stdout.contains("[never]"), "{} {}", ta.stdout, ta.stderr);
        assert_eq!(std::fs::read_to_string(thp).unwrap(), host);
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/panic").unwrap(),
        host_panic
    );
    for id in [&a, &b] {
        assert!(leftovers(id).is_empty(), "{:?}", leftovers(id));
    }
}

#[test]
fn busybox_tools_still_work() {
    let r = run(&name("tools"), &[], &["sh", "-c", "free >/dev/null && top -bn1 >/dev/null && ps >/dev/null && uptime >/dev/null && nproc >/dev/null && sysctl -a >/dev/null 2>&1; echo $?; cat /proc/self/status | grep -c ^Pid"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        ["0", "1"],
        "{}",
        r.stderr
    );
}
