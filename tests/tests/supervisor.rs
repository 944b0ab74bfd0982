//! Read-only stays read-only: every bypass from a privileged container against a read-only bind
//! of a host directory, checked on the host afterwards; the container's own mounts keep working;
//! the rules hold in a nested mount namespace, after chroot and after pivot_root.

use eci_tests::*;

fn ro_dir() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(name("sup"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), "original").unwrap();
    let mount = format!("type=bind,src={},dst=/data,options=rbind:ro", dir.display());
    (dir, mount)
}

#[test]
fn every_bypass_of_a_read_only_bind_is_refused() {
    let (dir, mount) = ro_dir();
    let probe = probe_mount();
    let script = "mkdir -p /x /m2; \
        mount -o remount,rw /data && echo BAD_REMOUNT; \
        mount -o remount,rw,bind /data 2>/dev/null && echo BAD_REMOUNT_BIND; \
        /probe/probe setattr-clear-ro /data; \
        /probe/probe clone-attach-rw /data /x; echo 1 > /x/f 2>/dev/null && echo BAD_CLONE_WRITE; \
        mount --bind /data /m2 && mount -o remount,rw,bind /m2 2>/dev/null && echo BAD_BIND_REMOUNT; \
        echo 2 > /m2/f 2>/dev/null && echo BAD_BIND_WRITE; \
        /probe/probe fspick /data; \
        /probe/probe move /proc /x; \
        umount /proc/uptime 2>/dev/null && echo BAD_UMOUNT_EMULATION; \
        umount /proc 2>/dev/null && echo BAD_UMOUNT_PROC; \
        umount /sys 2>/dev/null && echo BAD_UMOUNT_SYS; \
        umount / 2>/dev/null && echo BAD_UMOUNT_ROOT; \
        echo 3 > /data/f 2>/dev/null && echo BAD_WRITE; true";
    let r = run(
        &name("bypass"),
        &["--privileged", "--mount", &mount, "--mount", &probe],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("BAD_"), "{}", r.stdout);
    assert!(
        r.stdout.contains("setattr-clear-ro: errno=EPERM"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("setattr-clone-rw: errno=EPERM"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("fspick: errno=EPERM"), "{}", r.stdout);
    assert!(r.stdout.contains("move: errno=EBUSY"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("mount: permission denied (are you root?)"),
        "the seed's message: {}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "original");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_containers_own_mounts_work() {
    let script = "set -e; mkdir -p /t /p /s /o /b; mount -t tmpfs o /o; mkdir -p /o/l /o/u /o/w /o/m; \
        mount -t tmpfs t /t; mount -o remount,ro /t /t; grep -q ' /t .* ro,' /proc/self/mountinfo; umount /t; echo TMPFS_OK; \
        mount -t proc proc /p; test -e /p/self/status; umount /p; echo PROC_OK; \
        mount -t sysfs sysfs /s; umount /s; echo SYSFS_OK; \
        mount -t overlay overlay -o lowerdir=/o/l,upperdir=/o/u,workdir=/o/w /o/m; umount /o/m; echo OVERLAY_OK; \
        mount --bind /tmp /b; mount -o remount,ro,bind /b; umount /b; echo BIND_OK; \
        mkdir -p /d /q; mount -t devpts -o newinstance devpts /d; test -e /d/ptmx; umount /d; echo DEVPTS_OK; \
        mount -t mqueue mqueue /q; umount /q; echo MQUEUE_OK";
    let r = run(&name("own"), &["--privileged"], &["sh", "-c", script]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for ok in [
        "TMPFS_OK",
        "PROC_OK",
        "SYSFS_OK",
        "OVERLAY_OK",
        "BIND_OK",
        "DEVPTS_OK",
        "MQUEUE_OK",
    ] {
        assert!(r.stdout.contains(ok), "{ok}: {}", r.stdout);
    }
}

#[test]
fn rules_hold_in_a_nested_mount_namespace_after_chroot_and_pivot_root() {
    let (dir, mount) = ro_dir();
    let script = "unshare -m sh -c 'umount /proc/uptime 2>/dev/null && echo BAD_NESTED_UMOUNT; \
            mount -o remount,rw /data 2>/dev/null && echo BAD_NESTED_REMOUNT; \
            mount -o remount,rw,bind /data 2>/dev/null && echo BAD_NESTED_REMOUNT_BIND; \
            mount -t tmpfs t /tmp && umount /tmp && echo NESTED_OWN_OK'; \
        chroot / sh -c 'umount /proc 2>/dev/null && echo BAD_CHROOT_UMOUNT; mount -o remount,rw /data 2>/dev/null && echo BAD_CHROOT_REMOUNT; true'; \
        mkdir -p /nr; unshare -m sh -c 'mount -t tmpfs t /nr && mkdir -p /nr/old /nr/bin && cp /bin/busybox /nr/bin/ && cd /nr && pivot_root . old && \
            { /bin/busybox umount /old/proc/uptime 2>/dev/null && echo BAD_PIVOT_UMOUNT; \
              /bin/busybox mount -o remount,rw /old/data 2>/dev/null && echo BAD_PIVOT_REMOUNT; \
              /bin/busybox mount -o remount,rw,bind /old/data 2>/dev/null && echo BAD_PIVOT_REMOUNT_BIND; \
              /bin/busybox umount -l /old/proc 2>/dev/null && echo BAD_PIVOT_UMOUNT_PROC; echo PIVOTED; \
              /bin/busybox umount -l /old && echo OLD_ROOT_DETACHED; }'; \
        echo 1 > /data/f 2>/dev/null && echo BAD_WRITE; cat /proc/uptime";
    let r = run(
        &name("nested"),
        &["--privileged", "--mount", &mount],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("BAD_"), "{}", r.stdout);
    assert!(r.stdout.contains("NESTED_OWN_OK"), "{}", r.stdout);
    assert!(
        r.stdout.contains("PIVOTED"),
        "pivot_root did not happen: {} {}",
        r.stdout,
        r.stderr
    );
    // pivot_root's old root may go (it reveals the caller's own new root), as natively.
    assert!(r.stdout.contains("OLD_ROOT_DETACHED"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "original");
    let _ = std::fs::remove_dir_all(dir);
}

/// In a nested user namespace the kernel answers (every inherited mount is locked there); the
/// rules still hold and the namespace's own mounts work as they would natively.
#[test]
fn rules_hold_in_a_nested_user_namespace_whose_own_mounts_work() {
    let (dir, mount) = ro_dir();
    let probe = probe_mount();
    let script = "mkdir -p /p /x; unshare -r -m -p -f sh -c ' \
            umount /proc/uptime 2>/dev/null && echo BAD_UMOUNT_EMULATION; \
            umount -l /proc 2>/dev/null && echo BAD_UMOUNT_PROC; \
            mount -o remount,rw /data 2>/dev/null && echo BAD_REMOUNT; \
            mount -o remount,rw,bind /data 2>/dev/null && echo BAD_REMOUNT_BIND; \
            /probe/probe setattr-clear-ro /data; \
            /probe/probe clone-attach-rw /data /x; echo 1 > /x/f 2>/dev/null && echo BAD_CLONE_WRITE; \
            echo 2 > /data/f 2>/dev/null && echo BAD_WRITE; \
            mount -t proc proc /p 2>/dev/null && echo fresh-proc $(cut -d\" \" -f1 /p/uptime); \
            mount -t tmpfs t /tmp && mount -o remount,ro /tmp /tmp && umount /tmp && echo OWN_OK'";
    let r = run(
        &name("nested-userns"),
        &["--privileged", "--mount", &mount, "--mount", &probe],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("BAD_"), "{}", r.stdout);
    assert!(r.stdout.contains("OWN_OK"), "{} {}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("setattr-clear-ro: errno=EPERM"),
        "{}",
        r.stdout
    );
    // A fresh procfs is either refused by the kernel or shows the container's uptime.
    if let Some(line) = r.stdout.lines().find(|l| l.starts_with("fresh-proc")) {
        let uptime: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            uptime < 60.0,
            "a nested procfs shows the host's uptime: {line}"
        );
    }
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "original");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn exec_processes_are_supervised_too() {
    let id = name("sup-exec");
    run_detached(&id, &["--privileged"], &["sleep", "60"]);
    let r = exec(&id, "u", &["sh", "-c", "umount /proc/uptime; echo rc=$?; mkdir -p /t && mount -t tmpfs t /t && umount /t && echo OWN_OK"]);
    remove(&id);
    assert!(
        r.stdout.contains("rc=1") && r.stdout.contains("OWN_OK"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert!(r.stderr.contains("Device or resource busy"), "{}", r.stderr);
}

/// Voluntary context switches of the shim's `eci-supervisor` thread for container `id`: one per
/// syscall it wakes for.
fn supervisor_wakeups(id: &str) -> u64 {
    let shim = shim_pid(id).expect("shim of the container");
    let tasks = std::fs::read_dir(format!("/proc/{shim}/task")).unwrap();
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "eci-supervisor")
        })
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap();
            status
                .lines()
                // Voluntary switches only: each is the thread blocking again after a wake-up,
                // while involuntary ones count preemptions, which a loaded machine adds.
                .filter(|l| l.starts_with("voluntary_ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn a_container_that_mounts_nothing_never_wakes_the_supervisor() {
    let id = name("sup-idle");
    run_detached(&id, &["--privileged"], &["sleep", "60"]);
    // An exec'd process's notify fd is handed to the supervisor and hangs up when it exits:
    // the wake-ups of an exec that does nothing are the baseline.
    let before = supervisor_wakeups(&id);
    let idle = exec(&id, "t", &["true"]);
    let baseline = supervisor_wakeups(&id) - before;
    let before = supervisor_wakeups(&id);
    let work = exec(
        &id,
        "w",
        &["sh", "-c", "for i in $(seq 300); do cat /proc/uptime /etc/passwd >/dev/null; echo $i > /tmp/f; ls / >/dev/null; done; grep -c ^ /proc/self/mountinfo"],
    );
    let after_work = supervisor_wakeups(&id);
    let mounts = exec(
        &id,
        "m",
        &[
            "sh",
            "-c",
            "mkdir -p /t && mount -t tmpfs t /t && umount /t",
        ],
    );
    let after_mounts = supervisor_wakeups(&id);
    remove(&id);
    assert_eq!(work.code, 0, "{}", work.stderr);
    assert_eq!(mounts.code, 0, "{}", mounts.stderr);
    assert_eq!(idle.code, 0, "{}", idle.stderr);
    // 300 rounds of spawning, reading and writing add nothing to an empty exec: a trapped
    // syscall in the loop would add hundreds; lock contention on the fd list may add one or two.
    assert!(
        after_work - before <= baseline + 2,
        "supervisor woke {} times for a workload with no mount syscall, {baseline} for an empty exec",
        after_work - before
    );
    assert!(
        after_mounts > after_work,
        "the counter is live: a mount and an unmount must wake the supervisor"
    );
}

/// The cgroup of v1 controller `controller` in /proc/<pid>/task/<tid>/cgroup (or
/// /proc/<pid>/cgroup).
fn v1_cgroup(proc_path: &str, controller: &str) -> String {
    std::fs::read_to_string(format!("{proc_path}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == controller))
        })
        .map(|l| l.rsplit(':').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
fn supervision_is_charged_to_the_containers_cpu_limit() {
    if !std::path::Path::new("/sys/fs/cgroup/cpu").is_dir() {
        eprintln!("skipped: no cgroup v1 cpu controller (on v2 only the agent moves)");
        return;
    }
    let id = name("sup-cpu");
    run_detached(&id, &["--privileged", "--cpus", "0.5"], &["sleep", "60"]);
    // The agent starts on the first unmount.
    let r = exec(
        &id,
        "m",
        &[
            "sh",
            "-c",
            "mkdir -p /t && mount -t tmpfs t /t && umount /t",
        ],
    );
    let shim = shim_pid(&id).expect("shim of the container");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{shim}/task"))
        .unwrap()
        .flatten()
        .map(|t| t.path().display().to_string())
        .collect();
    let supervisor = threads
        .iter()
        .find(|t| {
            std::fs::read_to_string(format!("{t}/comm")).is_ok_and(|c| c.trim() == "eci-supervisor")
        })
        .cloned()
        .expect("the supervisor thread");
    let agent = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|p| p.path().display().to_string())
        .find(|p| {
            let stat = std::fs::read_to_string(format!("{p}/stat")).unwrap_or_default();
            let parent = stat.rsplit(") ").next().and_then(|s| s.split(' ').nth(1));
            let cmdline = std::fs::read(format!("{p}/cmdline")).unwrap_or_default();
            parent == Some(&shim.to_string()) && cmdline.split(|b| *b == 0).nth(1) == Some(b"agent")
        })
        .expect("the mount agent");
    let container = format!("/default/{id}");
    let placed = |controller: &str| {
        (
            v1_cgroup(&supervisor, controller),
            v1_cgroup(&agent, controller),
            v1_cgroup(&format!("/proc/{shim}"), controller),
        )
    };
    let (cpu, cpuacct) = (placed("cpu"), placed("cpuacct"));
    remove(&id);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for (controller, (supervisor_cg, agent_cg, shim_cg)) in [("cpu", cpu), ("cpuacct", cpuacct)] {
        assert_eq!(supervisor_cg, container, "supervisor thread, {controller}");
        assert_eq!(agent_cg, container, "mount agent, {controller}");
        assert_ne!(
            shim_cg, container,
            "the shim's other threads stay where they were, {controller}"
        );
    }
    // The supervisor and agent left before the cgroup was removed: nothing is left behind.
    let left = leftovers_after(&id, std::time::Duration::from_secs(5));
    assert!(left.is_empty(), "{left:?}");
    assert!(
        !std::path::Path::new(&agent).exists(),
        "the agent outlived its container"
    );
}

/// Docker-in-Docker's core: a container runtime inside a privileged ECI container (the host's
/// runc, bound in read-only) creates and runs a container of its own. runc names every mount
/// target by an fd it opened (`/proc/self/fd/N`) and unmounts pivot_root's old root; the inner
/// container stays in the outer one's ID block and sees its emulated /proc/uptime.
#[test]
fn a_runtime_inside_the_container_runs_a_container_of_its_own() {
    let mut extra = vec!["--privileged".to_string()];
    for (src, dst) in inner_runtime_files() {
        extra.push("--mount".into());
        extra.push(format!("type=bind,src={src},dst={dst},options=rbind:ro"));
    }
    // ctr gives no /sys/fs/cgroup; runc finds the cgroup2 hierarchy the container mounts.
    let script = format!("mount -t cgroup2 none /sys/fs/cgroup && {INNER_RUNTIME_SCRIPT}");
    let id = name("inner-runc");
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let r = run(&id, &extra, &["sh", "-c", &script]);
    check_inner_run(&r);
    let left = leftovers_after(&id, std::time::Duration::from_secs(10));
    assert!(left.is_empty(), "{left:?}");
}

/// `--read-only`: the root file system stays read-only through every bind, remount, clone and
/// API a privileged container has (the kernel holds it: it was read-only before the container's
/// mount namespace was copied into its user namespace), and /proc/sys (a read-only path made
/// inside the container) stays read-only through a bind of a subdirectory.
#[test]
fn a_read_only_rootfs_stays_read_only_through_binds_and_clones() {
    let probe = probe_mount();
    let script = "mount --bind /etc /etc && mount -o remount,bind,rw /etc /etc 2>/dev/null && echo BAD_REMOUNT_BIND; \
        touch /etc/x 2>/dev/null && echo BAD_WRITE_ETC; \
        mount --bind /var /home && /probe/probe setattr-clear-ro /home; touch /home/x 2>/dev/null && echo BAD_WRITE_SUBDIR; \
        /probe/probe clone-attach-rw /bin /root; touch /root/x 2>/dev/null && echo BAD_WRITE_CLONE; \
        /probe/probe open-tree-attr-rw /etc /tmp; touch /tmp/x 2>/dev/null && echo BAD_WRITE_OPEN_TREE_ATTR; \
        mount -o remount,rw / 2>/dev/null && echo BAD_REMOUNT_ROOT; \
        mount -o remount,bind,rw / 2>/dev/null && echo BAD_REMOUNT_ROOT_BIND; \
        unshare -m sh -c 'mount -o remount,bind,rw / 2>/dev/null && echo BAD_NESTED_REMOUNT'; \
        touch /x 2>/dev/null && echo BAD_WRITE_ROOT; \
        mount -t tmpfs t /tmp && touch /tmp/ok && echo TMPFS_OK; \
        echo done";
    let r = run(
        &name("ro-root"),
        &["--privileged", "--read-only", "--mount", &probe],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("done"), "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("BAD_"), "{}", r.stdout);
    assert!(r.stdout.contains("TMPFS_OK"), "{}", r.stdout);
    for probe in ["setattr-clear-ro", "setattr-clone-rw"] {
        assert!(
            r.stdout.contains(&format!("{probe}: errno=EPERM")),
            "{probe}: {}",
            r.stdout
        );
    }
}

/// A read-only path of the spec (/proc/sys, made read-only inside the container) stays
/// read-only through a bind of a subdirectory and through clones, and neither it nor a masked
/// path can be unmounted from a copy of /proc.
#[test]
fn a_read_only_path_stays_read_only_through_a_bind_of_a_subdirectory() {
    let probe = probe_mount();
    // --cap-add keeps the default masked and read-only paths (--privileged drops them).
    let script = "mkdir -p /k /c; mount --bind /proc/sys/kernel /k && { \
            mount -o remount,bind,rw /k 2>/dev/null && echo BAD_REMOUNT_SUBDIR; \
            /probe/probe setattr-clear-ro /k; }; \
        /probe/probe clone-attach-rw /proc/sys/vm /c; \
        /probe/probe setattr-clear-ro /proc/sys; \
        umount /proc/sys 2>/dev/null && echo BAD_RO_PATH_UNMOUNTED_FIRST; \
        mkdir -p /mq; mount --rbind /proc /mq && { umount /mq/sys 2>/dev/null && echo BAD_RO_PATH_UNMOUNTED; \
            umount /mq/timer_list 2>/dev/null && echo BAD_MASK_UNMOUNTED; \
            umount -l /mq/kcore 2>/dev/null && echo BAD_MASK_DETACHED; }; \
        grep -E ' /(k|c|proc/sys) ' /proc/self/mountinfo | grep -v ' ro,' | sed 's/^/BAD_RW_MOUNT /'; \
        echo done";
    let r = run(
        &name("ro-path"),
        &["--cap-add", "CAP_SYS_ADMIN", "--mount", &probe],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("done"), "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("BAD_"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("setattr-clear-ro: ok") && !r.stdout.contains("setattr-clone-rw: ok"),
        "{}",
        r.stdout
    );
}

/// busybox's one-argument remount replays the options /proc/mounts shows, owner IDs included,
/// which are the block's host IDs there: it works as under runc.
#[test]
fn a_one_argument_remount_of_the_containers_own_tmpfs_works() {
    let script = "mkdir -p /root/t && mount -t tmpfs tmpfs /root/t && \
        mount -o remount,ro /root/t && echo REMOUNTED; grep ' /root/t ' /proc/mounts; \
        touch /root/t/x 2>/dev/null || echo READ_ONLY; \
        mount -o remount,rw /root/t && touch /root/t/y && echo RW_AGAIN";
    let r = run(&name("remount1"), &["--privileged"], &["sh", "-c", script]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("REMOUNTED"), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("READ_ONLY"), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains(" ro,"), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("RW_AGAIN"), "{} {}", r.stdout, r.stderr);
}
