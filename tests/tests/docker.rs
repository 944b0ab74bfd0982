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

/// `docker run -d`, failing the test with dockerd's words if it does not start.
fn docker_detached(name: &str, cmd: &[&str]) {
    let e = docker_env();
    let mut args = vec!["run", "-d", "--name", name, &e.image];
    args.extend_from_slice(cmd);
    let r = docker(&args);
    assert_eq!(r.code, 0, "docker run -d {name}: {}", r.stderr);
}

fn docker_ok(args: &[&str]) -> String {
    let r = docker(args);
    assert_eq!(r.code, 0, "docker {args:?}: {}", r.stderr);
    r.stdout
}

/// Issue 14's examples: what a container writes is stored with its own IDs, so a restart with
/// another block, `docker commit`, `diff`, `export`, `cp` both ways and `docker build` all see
/// the IDs the container used.
#[test]
fn a_containers_files_keep_its_own_ids_through_restart_commit_cp_export_and_build() {
    let (keep, other) = (name("own-keep"), name("own-other"));
    let image = format!("{}:committed", name("own-image"));
    let built = format!("{}:built", name("own-image"));
    docker_detached(
        &keep,
        &[
            "sh",
            "-c",
            "echo hi > /f; touch /b; chown 1000 /b; sleep 1000",
        ],
    );
    let map = |c: &str| parse_uid_map(&docker_ok(&["exec", c, "cat", "/proc/self/uid_map"]));
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        docker(&["exec", &keep, "test", "-e", "/b"]).code == 0
    }));
    let before = map(&keep);
    docker_ok(&["stop", "-t", "1", &keep]);
    // dockerd deletes the task after `stop` returns; the block stays parked for the container
    // (keepblock.rs), nothing else is left.
    let full_id = docker_ok(&["inspect", "-f", "{{.Id}}", &keep]);
    let parked = |l: &String| l.starts_with("lease ");
    wait_until(std::time::Duration::from_secs(10), || {
        docker_leftovers_after(full_id.trim(), std::time::Duration::ZERO)
            .iter()
            .all(parked)
    });
    let left = docker_leftovers_after(full_id.trim(), std::time::Duration::ZERO);
    assert!(left.iter().all(parked), "{left:?}");
    docker_detached(&other, &["sleep", "1000"]);
    docker_ok(&["start", &keep]);
    let after = map(&keep);
    let seen = docker(&[
        "exec",
        &keep,
        "sh",
        "-c",
        "stat -c '%u:%g %n' /f /b && echo more >> /f && cat /f",
    ]);

    let host_file = std::env::temp_dir().join(name("own-cp"));
    std::fs::write(&host_file, "from the host\n").unwrap();
    let cp_in = docker(&[
        "cp",
        &host_file.display().to_string(),
        &format!("{keep}:/cpin"),
    ]);
    let cp_seen = docker(&[
        "exec",
        &keep,
        "sh",
        "-c",
        "stat -c '%u:%g' /cpin && cat /cpin",
    ]);
    let cp_out = docker_bytes(&["cp", &format!("{keep}:/b"), "-"]);
    let diff = docker(&["diff", &keep]);
    let export = docker_bytes(&["export", &keep]);
    let commit = docker(&["commit", &keep, &image]);
    let committed = docker_run_image(&image, &["stat", "-c", "%u:%g %n", "/f", "/b"]);

    let dir = std::env::temp_dir().join(name("own-build"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo built > /id && touch /u && chown 1000:1000 /u\n",
            docker_env().image
        ),
    )
    .unwrap();
    let build = docker_bytes(&["build", "-q", "-t", &built, &dir.display().to_string()]);
    let from_build = docker_run_image(&built, &["stat", "-c", "%u:%g %n", "/id", "/u"]);

    let _ = docker(&["rm", "-f", &keep, &other]);
    let _ = docker(&["rmi", "-f", &image, &built]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&host_file);

    // The container keeps its block (keepblock.rs); ownfiles.rs forces another block through
    // ctr, and the ownership checks below hold either way.
    if before != after {
        eprintln!("{keep} restarted with another block {after:?}");
    }
    assert_eq!(
        seen.code, 0,
        "after the restart: {}{}",
        seen.stdout, seen.stderr
    );
    assert_eq!(seen.stdout, "0:0 /f\n1000:0 /b\nhi\nmore\n");
    assert_eq!(cp_in.code, 0, "docker cp in: {}", cp_in.stderr);
    assert_eq!(cp_seen.stdout, "0:0\nfrom the host\n", "{}", cp_seen.stderr);
    assert!(
        cp_out.status.success(),
        "docker cp out: {}",
        String::from_utf8_lossy(&cp_out.stderr)
    );
    assert_eq!(tar_owners(&cp_out.stdout), vec![("b".into(), 1000, 0)]);
    assert!(
        diff.stdout.lines().any(|l| l == "A /f") && diff.stdout.lines().any(|l| l == "A /b"),
        "docker diff: {}{}",
        diff.stdout,
        diff.stderr
    );
    let exported = tar_owners(&export.stdout);
    for want in [("f", 0, 0), ("b", 1000, 0), ("cpin", 0, 0)] {
        assert!(
            exported.contains(&(want.0.to_string(), want.1, want.2)),
            "docker export lists {want:?}? {:?}",
            exported
                .iter()
                .filter(|(n, ..)| ["f", "b", "cpin"].contains(&n.as_str()))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(commit.code, 0, "docker commit: {}", commit.stderr);
    assert_eq!(
        committed.stdout, "0:0 /f\n1000:0 /b\n",
        "{}",
        committed.stderr
    );
    assert!(
        build.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    assert_eq!(
        from_build.stdout, "0:0 /id\n1000:1000 /u\n",
        "{}",
        from_build.stderr
    );
}

/// `docker args…` with its raw output (tar streams are binary), the legacy builder for `build`
/// (what dockerd 20.10's `RUN` steps use: a container per step, committed from its upper dir).
fn docker_bytes(args: &[&str]) -> std::process::Output {
    let e = docker_env();
    std::process::Command::new(&e.cli)
        .arg("-H")
        .arg(&e.host)
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run docker")
}

fn docker_run_image(image: &str, cmd: &[&str]) -> Run {
    let mut args = vec!["run", "--rm", image];
    args.extend_from_slice(cmd);
    docker(&args)
}

/// (name without a leading `./`, uid, gid) of each entry of a tar stream, numeric owners.
fn tar_owners(tar: &[u8]) -> Vec<(String, u32, u32)> {
    use std::io::Write;
    let mut child = std::process::Command::new("tar")
        .args(["-tvf", "-", "--numeric-owner"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run tar");
    let mut stdin = child.stdin.take().unwrap();
    let data = tar.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("tar output");
    let _ = writer.join();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let owners = cols.nth(1)?;
            let (u, g) = owners.split_once('/')?;
            let name = l.split_whitespace().last()?;
            Some((
                name.trim_start_matches("./").to_string(),
                u.parse().ok()?,
                g.parse().ok()?,
            ))
        })
        .collect()
}

/// Issue 14, part 2 (one overlay per writable layer): dockerd's overlay stays mounted beside the
/// container's, so `docker cp` writes through a mount the container does not use. Not fixed:
/// overlay mounts cannot be ID-mapped (see the README's design section).
#[test]
#[ignore = "known gap (README, Status): two overlays on one upper under dockerd; a name the \
            container looked up before stays absent for it after docker cp"]
fn docker_cp_into_a_running_container_is_seen_even_for_a_name_it_looked_up() {
    let c = name("cp-seen");
    docker_detached(&c, &["sleep", "600"]);
    let host_file = std::env::temp_dir().join(name("cp-seen-file"));
    std::fs::write(&host_file, "from the host\n").unwrap();
    let before = docker(&["exec", &c, "cat", "/cpin"]);
    let cp = docker(&[
        "cp",
        &host_file.display().to_string(),
        &format!("{c}:/cpin"),
    ]);
    let after = docker(&["exec", &c, "cat", "/cpin"]);
    let changed = docker(&["exec", &c, "sh", "-c", "echo changed >> /root/file"]);
    let out = docker_bytes(&["cp", &format!("{c}:/root/file"), "-"]);
    let _ = docker(&["rm", "-f", &c]);
    let _ = std::fs::remove_file(&host_file);
    assert_ne!(before.code, 0, "{}", before.stdout);
    assert_eq!(cp.code, 0, "{}", cp.stderr);
    assert_eq!(after.stdout, "from the host\n", "{}", after.stderr);
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("changed"),
        "docker cp out missed the container's change"
    );
}
