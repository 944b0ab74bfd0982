//! The seed's `docker run` examples through dockerd 20.10, whose every container asks containerd
//! for the runc shim: with enforcement that name runs ECI. dockerd mounts the rootfs itself
//! (overlay2) and sets `net.ipv4.ping_group_range` to all groups; both must work under ECI.

use eci_tests::*;

fn docker_run(extra: &[&str], cmd: &[&str]) -> Run {
    let e = docker_env();
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.push(&e.image);
    args.extend_from_slice(cmd);
    docker(&args)
}

#[test]
fn docker_run_gets_an_exclusive_block_and_host_namespaces_are_refused() {
    let first = docker_run(&[], &["cat", "/proc/self/uid_map"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let (inside, host, size) = parse_uid_map(&first.stdout).expect("uid_map");
    assert_eq!((inside, size), (0, 65536), "{}", first.stdout);
    assert!(host >= 100_000, "{}", first.stdout);

    let userns_host = docker_run(&["--userns=host"], &["cat", "/proc/self/uid_map"]);
    assert_eq!(userns_host.code, 0, "{}", userns_host.stderr);
    let (_, host, size) = parse_uid_map(&userns_host.stdout).expect("uid_map");
    assert!(
        host >= 100_000 && size == 65536,
        "--userns=host honoured: {}",
        userns_host.stdout
    );

    let pid = docker_run(&["--pid=host"], &["true"]);
    assert_ne!(pid.code, 0);
    assert!(
        pid.stderr.contains("can't share namespaces [pid] with the host (because they use the linux user-namespace for isolation)"),
        "{}",
        pid.stderr
    );
    let net = docker_run(&["--network=host"], &["true"]);
    assert_ne!(net.code, 0);
    assert!(
        net.stderr
            .contains("can't share a network namespace with the host"),
        "{}",
        net.stderr
    );
}

#[test]
fn read_only_volumes_stay_read_only_and_own_tmpfs_mounts_work() {
    let dir = std::env::temp_dir().join(name("docker-vol"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), "original").unwrap();
    let volume = format!("{}:/mnt:ro", dir.display());
    let r = docker_run(
        &["--cap-add", "SYS_ADMIN", "-v", &volume],
        &[
            "sh",
            "-c",
            "mount -o remount,rw /mnt /mnt && echo BAD_REMOUNT; echo x > /mnt/f 2>/dev/null && echo BAD_WRITE; \
             mkdir /root/tmpfs && mount -t tmpfs tmpfs /root/tmpfs && mount -o remount,ro /root/tmpfs /root/tmpfs && \
             grep ' /root/tmpfs ' /proc/mounts",
        ],
    );
    let host = std::fs::read_to_string(dir.join("f")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("BAD_"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("mount: permission denied (are you root?)"),
        "the seed's message: {}",
        r.stderr
    );
    assert!(
        r.stdout.contains("tmpfs /root/tmpfs tmpfs ro,"),
        "{}",
        r.stdout
    );
    assert_eq!(host, "original");
}

#[test]
fn the_engines_own_socket_is_a_restricted_mount() {
    let e = docker_env();
    let volume = format!("{}:/mnt/containerd.sock", e.containerd);
    let r = docker_run(&["-v", &volume], &["true"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!(
            "can't mount {} because it's configured as a restricted host mount",
            e.containerd
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn exec_uptime_and_removal_leave_nothing_behind() {
    let e = docker_env();
    let started = docker(&["run", "-d", &e.image, "sleep", "60"]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    let id = started.stdout.trim().to_string();
    let exec = docker(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /proc/self/uid_map; cut -d' ' -f1 /proc/uptime",
    ]);
    let stop = docker(&["rm", "-f", &id]);
    assert_eq!(exec.code, 0, "{}", exec.stderr);
    let (_, host, _) = parse_uid_map(&exec.stdout).expect("uid_map");
    assert!(
        host >= 100_000,
        "docker exec is outside the user namespace: {}",
        exec.stdout
    );
    let uptime: f64 = exec.stdout.lines().nth(1).unwrap().parse().unwrap();
    assert!(uptime < 60.0, "the container's uptime: {uptime}");
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    let left = docker_leftovers_after(&id, std::time::Duration::from_secs(5));
    assert!(left.is_empty(), "{left:?}");
}

/// Docker-in-Docker's core through dockerd: `docker run --privileged` with the host's runc bound
/// in runs a container of its own (dockerd gives the container its cgroup v1 hierarchies).
#[test]
fn docker_in_docker_a_runtime_inside_runs_a_container_of_its_own() {
    let volumes: Vec<String> = inner_runtime_files()
        .into_iter()
        .flat_map(|(src, dst)| ["-v".to_string(), format!("{src}:{dst}:ro")])
        .collect();
    let mut extra: Vec<&str> = vec!["--privileged"];
    extra.extend(volumes.iter().map(String::as_str));
    let r = docker_run(&extra, &["sh", "-c", INNER_RUNTIME_SCRIPT]);
    check_inner_run(&r);
}

/// The seeds' Docker-in-Docker: dockerd, containerd and runc (the host's, bound in read-only)
/// run inside `docker run --privileged`, with overlay2 storage on a tmpfs, and the inner `docker run --memory 64m` works: the
/// inner container is in the outer one's ID block, sees its uptime, and gets its memory limit
/// from the cgroup the outer container was delegated. Nothing is left on the host after.
#[test]
fn docker_in_docker_runs_dockerd_and_its_containers() {
    let e = docker_env();
    let mut files = host_binaries(&["dockerd", "containerd", "containerd-shim-runc-v2", "runc"]);
    files.push((e.cli.clone(), "/usr/local/bin/docker".into()));
    let volumes: Vec<String> = files
        .into_iter()
        .flat_map(|(src, dst)| ["-v".to_string(), format!("{src}:{dst}:ro")])
        .collect();
    let script = r#"set -e
        export PATH=/usr/local/bin:$PATH
        cat /proc/self/uid_map
        mkdir -p /var/lib/docker /run /tmp /img/bin && mount -t tmpfs tmpfs /var/lib/docker
        dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver overlay2 \
            -H unix:///run/inner.sock > /tmp/dockerd.log 2>&1 &
        for i in $(seq 300); do docker -H unix:///run/inner.sock version >/dev/null 2>&1 && break; sleep 0.1; done
        cp /bin/busybox /img/bin/ && ln -s busybox /img/bin/sh
        tar -C /img -c . | docker -H unix:///run/inner.sock import - bb >/dev/null
        docker -H unix:///run/inner.sock run --rm --network none --memory 64m bb sh -c \
            'echo inner pid $$; cat /proc/self/uid_map; read u rest < /proc/uptime; echo inner-uptime $u; echo limit $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)' \
            || { tail -20 /tmp/dockerd.log; exit 1; }
        umount /proc/uptime 2>/dev/null && echo BAD_UMOUNT_EMULATION
        read u rest < /proc/uptime; echo outer-uptime $u"#;
    let cidfile = std::env::temp_dir().join(name("dind-cid"));
    let cid = format!("--cidfile={}", cidfile.display());
    let mut extra: Vec<&str> = vec!["--privileged", &cid];
    extra.extend(volumes.iter().map(String::as_str));
    let r = docker_run(&extra, &["sh", "-c", script]);
    check_inner_run(&r);
    assert!(r.stdout.contains("limit 67108864"), "{}", r.stdout);
    let id = std::fs::read_to_string(&cidfile).unwrap_or_default();
    let _ = std::fs::remove_file(&cidfile);
    assert!(!id.is_empty(), "no container id in {}", cidfile.display());
    let left = docker_leftovers_after(&id, std::time::Duration::from_secs(10));
    assert!(left.is_empty(), "{left:?}");
}
