//! The isolation policy through ctr: refusals as the user sees them, allowed cases, privileged
//! containers contained (checked on the host afterwards), read-only mounts that stay so, the
//! policy file and enforcement.

use eci_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn refused(id: &str, extra: &[&str], needle: &str) {
    let r = run(id, extra, &["true"]);
    assert_ne!(r.code, 0, "{id} ran");
    assert!(r.stderr.contains(needle), "{id}: {}", r.stderr);
    assert!(leftovers(id).is_empty(), "{id}: {:?}", leftovers(id));
    let _ = ctr(&["container", "delete", id]);
}

#[test]
fn host_pid_net_ipc_are_refused_with_the_seed_wording() {
    refused(
        &name("pidhost"),
        &["--with-ns", "pid:/proc/1/ns/pid"],
        "can't share namespaces [pid] with the host (because they use the linux user-namespace for isolation)",
    );
    refused(
        &name("nethost"),
        &["--net-host"],
        "can't share a network namespace with the host (because they use the linux user-namespace for isolation)",
    );
    refused(
        &name("ipchost"),
        &["--with-ns", "ipc:/proc/1/ns/ipc"],
        "can't share namespaces [ipc] with the host",
    );
}

#[test]
fn restricted_mounts_are_refused_after_resolution_and_audited() {
    let bind = |src: &str| format!("type=bind,src={src},dst=/x,options=rbind:ro");
    std::fs::create_dir_all("/etc/containerd").unwrap();
    let id = name("restricted");
    refused(
        &id,
        &["--mount", &bind("/etc/containerd")],
        "can't mount /etc/containerd because it's configured as a restricted host mount",
    );
    let audit =
        std::fs::read_to_string("/var/log/containerd-shim-eci/audit.jsonl").unwrap_or_default();
    let line = audit
        .lines()
        .find(|l| l.contains(&id))
        .expect("audit line for the refusal");
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["rule"], "restricted-mount");
    assert!(entry["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // A parent of a restricted path, a symlink to one, and `..` tricks.
    refused(
        &name("parent"),
        &["--mount", &bind("/etc")],
        "can't mount /etc because it's configured as a restricted host mount",
    );
    let link = std::env::temp_dir().join(name("link"));
    std::os::unix::fs::symlink("/etc/containerd", &link).unwrap();
    refused(
        &name("symlink"),
        &["--mount", &bind(link.to_str().unwrap())],
        "restricted host mount",
    );
    let _ = std::fs::remove_file(&link);
    refused(
        &name("dotdot"),
        &["--mount", &bind("/tmp/../etc/containerd")],
        "restricted host mount",
    );
    // The engine's own address.
    refused(
        &name("sock"),
        &["--mount", &bind(&env().address)],
        "restricted host mount",
    );
}

#[test]
fn joining_another_containers_network_shares_its_user_namespace() {
    let a = name("netowner");
    run_detached(&a, &[], &["sleep", "60"]);
    let pid = task_pid(&a).expect("pid of a");
    let b = name("netjoiner");
    let r = run(
        &b,
        &["--with-ns", &format!("network:/proc/{pid}/ns/net")],
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; readlink /proc/self/ns/net",
        ],
    );
    let ma = exec(
        &a,
        "m",
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; readlink /proc/self/ns/net",
        ],
    );
    remove(&a);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout, ma.stdout,
        "b must see a's user and network namespaces"
    );
    assert!(leftovers(&b).is_empty(), "{:?}", leftovers(&b));
}

#[test]
fn privileged_containers_run_but_stay_contained() {
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let script = "cat /proc/self/uid_map; \
        mkdir -p /mnt/t && mount -t tmpfs t /mnt/t && echo tmpfs-ok; \
        mknod /tmp/sda b 8 0 2>/dev/null && echo mknod-ok; \
        echo '|/tmp/evil' > /proc/sys/kernel/core_pattern 2>/dev/null && echo core-ok; \
        echo c > /proc/sysrq-trigger 2>/dev/null && echo sysrq-ok; \
        ls /dev/sda /dev/mem /dev/kmsg /dev/vda 2>/dev/null; \
        mkdir -p /mnt/cg && mount -t cgroup -o memory cg /mnt/cg 2>/dev/null && echo x > /mnt/cg/release_agent 2>/dev/null && echo release-ok; \
        hostname pwned && echo hostname-ok; \
        /probe/probe bpf-next-map x; /probe/probe open-by-handle /; true";
    let r = run(
        &name("priv"),
        &["--privileged", "--mount", &probe_mount()],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (_, host, _) = parse_uid_map(r.stdout.lines().next().unwrap()).expect("uid_map");
    assert!(host >= 100_000);
    assert!(
        r.stdout.contains("tmpfs-ok"),
        "privileged container cannot mount tmpfs: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("hostname-ok"),
        "its own uts namespace: {}",
        r.stdout
    );
    for bad in [
        "mknod-ok",
        "core-ok",
        "sysrq-ok",
        "release-ok",
        "/dev/sda",
        "/dev/mem",
        "/dev/kmsg",
        "/dev/vda",
    ] {
        assert!(!r.stdout.contains(bad), "{bad} in {}", r.stdout);
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname
    );
}

#[test]
fn read_only_bind_mounts_stay_read_only() {
    let dir = std::env::temp_dir().join(name("ro"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), "original").unwrap();
    let mount = format!("type=bind,src={},dst=/data,options=rbind:ro", dir.display());
    let script = "echo 1 > /data/f 2>/dev/null && echo BAD_WRITE; \
        mount -o remount,rw,bind /data 2>/dev/null && echo BAD_REMOUNT; \
        mount -o remount,rw /data 2>/dev/null && echo BAD_REMOUNT2; \
        mkdir -p /m2 && mount --bind /data /m2 && echo bind-ok; \
        mount -o remount,rw,bind /m2 2>/dev/null && echo BAD_BIND_REMOUNT; \
        echo 2 > /m2/f 2>/dev/null && echo BAD_WRITE2; \
        mkdir -p /r && mount -t tmpfs t /r && mount -o remount,ro /r /r && echo own-remount-ok";
    let r = run(
        &name("ro"),
        &["--privileged", "--mount", &mount],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for bad in [
        "BAD_WRITE",
        "BAD_REMOUNT",
        "BAD_REMOUNT2",
        "BAD_BIND_REMOUNT",
        "BAD_WRITE2",
    ] {
        assert!(!r.stdout.contains(bad), "{bad}: {}", r.stdout);
    }
    assert!(
        r.stdout.contains("bind-ok") && r.stdout.contains("own-remount-ok"),
        "{}",
        r.stdout
    );
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "original");
    let _ = std::fs::remove_dir_all(&dir);
}

fn policy_file(label: &str, text: &str) -> PathBuf {
    let p = Path::new("/etc/containerd-shim-eci").join(format!("test-{}.toml", name(label)));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn policy_file_typos_refuse_every_container_and_additions_apply() {
    let bad = policy_file("typo", "restricted_mount = [\"/srv\"]\n");
    let id = name("typo");
    refused(
        &id,
        &["--runtime-config-path", bad.to_str().unwrap()],
        "restricted_mount",
    );
    let r = run(
        &name("typo2"),
        &["--runtime-config-path", bad.to_str().unwrap()],
        &["true"],
    );
    assert!(r.stderr.contains("line 1"), "{}", r.stderr);

    let extra = std::env::temp_dir().join(name("secret"));
    std::fs::create_dir_all(&extra).unwrap();
    let good = policy_file(
        "extra",
        &format!("restricted_mounts = [\"{}\"]\n", extra.display()),
    );
    let mount = format!("type=bind,src={},dst=/x,options=rbind:ro", extra.display());
    refused(
        &name("extra"),
        &[
            "--runtime-config-path",
            good.to_str().unwrap(),
            "--mount",
            &mount,
        ],
        "configured as a restricted host mount",
    );
    // The shipped default does not restrict it.
    let r = run(&name("noextra"), &["--mount", &mount], &["true"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for p in [bad, good] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn enforcement_makes_the_runc_runtime_name_run_under_eci() {
    let e = env();
    let root = Path::new(&e.address).parent().unwrap().to_path_buf();
    let bin = repo().join("target/release/containerd-shim-eci-v2");
    let enforce_dir = root.join("enforce");
    let path = format!("{}:{}", enforce_dir.display(), root.join("bin").display());
    let shim = |args: &[&str]| {
        Run::from(
            Command::new(&bin)
                .arg("enforce")
                .args(args)
                .output()
                .unwrap(),
        )
    };

    assert_eq!(shim(&["status", "--path", &path]).code, 1);
    let install = shim(&["install", "--bin-dir", enforce_dir.to_str().unwrap()]);
    assert_eq!(install.code, 0, "{}", install.stderr);
    let status = shim(&["status", "--path", &path]);
    let id = name("enforced");
    let r = ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runc.v2",
        "--runc-binary",
        "runc",
        &e.image,
        &id,
        "cat",
        "/proc/self/uid_map",
    ]);
    let uninstall = shim(&["uninstall", "--bin-dir", enforce_dir.to_str().unwrap()]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    assert!(
        status.stdout.contains("enforcement active"),
        "{}",
        status.stdout
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (_, host, _) = parse_uid_map(&r.stdout).expect("uid_map");
    assert!(
        host >= 100_000,
        "runc runtime name was not enforced: {}",
        r.stdout
    );
    assert_eq!(uninstall.code, 0, "{}", uninstall.stderr);
    assert_eq!(shim(&["status", "--path", &path]).code, 1);
    let _ = wait_until(Duration::from_secs(1), || false);
}

#[test]
fn the_engine_socket_is_mounted_only_by_trusted_images() {
    // A stand-in engine socket where Docker keeps its own, created only if none exists.
    let socket = Path::new("/run/docker.sock");
    let created = !socket.exists();
    let _listener = created.then(|| std::os::unix::net::UnixListener::bind(socket).unwrap());
    let mount = "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock,options=rbind:rw";
    let e = env();
    let trusting = policy_file(
        "trust",
        &format!("trusted_socket_images = [\"{}\"]\n", e.image),
    );
    let other = policy_file(
        "trust-other",
        "trusted_socket_images = [\"docker.io/library/docker:cli\"]\n",
    );

    let id = name("sock-untrusted");
    refused(
        &id,
        &["--mount", mount],
        "can't mount /var/run/docker.sock because it's configured as a restricted host mount",
    );
    let audit =
        std::fs::read_to_string("/var/log/containerd-shim-eci/audit.jsonl").unwrap_or_default();
    let line = audit.lines().find(|l| l.contains(&id)).expect("audit line");
    assert!(
        line.contains(&format!("\"image\":\"{}\"", e.image)),
        "{line}"
    );
    refused(
        &name("sock-other"),
        &[
            "--runtime-config-path",
            other.to_str().unwrap(),
            "--mount",
            mount,
        ],
        "restricted host mount",
    );
    let r = run(
        &name("sock-trusted"),
        &[
            "--runtime-config-path",
            trusting.to_str().unwrap(),
            "--mount",
            mount,
        ],
        &["test", "-S", "/var/run/docker.sock"],
    );
    // Trust covers the socket only, never the rest of the engine.
    refused(
        &name("sock-etc"),
        &[
            "--runtime-config-path",
            trusting.to_str().unwrap(),
            "--mount",
            "type=bind,src=/etc/containerd,dst=/x,options=rbind:ro",
        ],
        "restricted host mount",
    );
    if created {
        let _ = std::fs::remove_file(socket);
    }
    for p in [trusting, other] {
        let _ = std::fs::remove_file(p);
    }
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_requested_host_user_namespace_or_mapping_is_replaced() {
    // The seed's `docker run --userns=host`: whatever the spec asks, the container gets its own
    // user namespace and block.
    for (label, extra) in [
        ("userns-host", vec!["--with-ns", "user:/proc/1/ns/user"]),
        (
            "identity-map",
            vec!["--uidmap", "0:0:65536", "--gidmap", "0:0:65536"],
        ),
    ] {
        let id = name(label);
        let r = run(&id, &extra, &["cat", "/proc/self/uid_map"]);
        assert_eq!(r.code, 0, "{label}: {}", r.stderr);
        let (inside, host, size) = parse_uid_map(&r.stdout).expect("uid_map");
        assert_eq!((inside, size), (0, 65536), "{label}: {}", r.stdout);
        assert!(host >= 100_000, "{label}: container root is host ID {host}");
        assert!(leftovers(&id).is_empty(), "{label}: {:?}", leftovers(&id));
    }
}

#[test]
fn a_joined_user_namespace_keeps_its_block_until_the_last_container_leaves() {
    let owner = name("ns-owner");
    run_detached(&owner, &[], &["sleep", "60"]);
    let pid = task_pid(&owner).expect("owner pid");
    let joiner = name("ns-joiner");
    run_detached(
        &joiner,
        &["--with-ns", &format!("network:/proc/{pid}/ns/net")],
        &["sleep", "60"],
    );
    let map = |id: &str| {
        parse_uid_map(&exec(id, "m", &["cat", "/proc/self/uid_map"]).stdout)
            .expect("uid_map")
            .1
    };
    let shared = map(&joiner);
    remove(&owner);
    // The owner is gone but its block is still in use by the joiner: nobody else may get it.
    let other = name("ns-other");
    let r = run(&other, &[], &["cat", "/proc/self/uid_map"]);
    let other_block = parse_uid_map(&r.stdout).expect("uid_map").1;
    remove(&joiner);
    assert_ne!(
        other_block, shared,
        "the block of a live joined user namespace was handed out again"
    );
    let left = leftovers_after(&owner, std::time::Duration::from_secs(5));
    assert!(left.is_empty(), "{left:?}");
}

/// A container that may manage cgroups (privileged) owns its cgroup directory, as a runtime
/// inside it needs: it makes a child cgroup, limits it and moves itself there. Its own limit
/// is the host's and stays so, and the cgroups it made go with it.
#[test]
fn a_privileged_container_is_delegated_its_cgroup_but_not_its_limits() {
    let id = name("delegated");
    let script = "mkdir -p /mnt/mem && mount -t cgroup -o memory cg /mnt/mem && cd /mnt/mem; \
        echo 9223372036854771712 > memory.limit_in_bytes 2>/dev/null && echo BAD_OWN_LIMIT; \
        echo 1 > memory.use_hierarchy 2>/dev/null && echo BAD_OWN_KNOB; \
        mkdir child && echo 33554432 > child/memory.limit_in_bytes && echo $$ > child/cgroup.procs \
          && echo child-limit $(cat child/memory.limit_in_bytes) && grep -q /child /proc/self/cgroup && echo MOVED; \
        mkdir -p child/grandchild && echo NESTED";
    let r = run(
        &id,
        &["--privileged", "--memory-limit", "67108864"],
        &["sh", "-c", script],
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("BAD_"), "{}", r.stdout);
    assert!(r.stdout.contains("child-limit 33554432"), "{}", r.stdout);
    assert!(r.stdout.contains("MOVED"), "{}", r.stdout);
    assert!(r.stdout.contains("NESTED"), "{}", r.stdout);
    // The container exited leaving child/grandchild behind: delete removed them, and its cgroup.
    let left = leftovers_after(&id, std::time::Duration::from_secs(10));
    assert!(left.is_empty(), "{left:?}");
}

/// Without CAP_SYS_ADMIN nothing is delegated, nor is a cgroup path that does not name the
/// container (one a user pointed elsewhere): those cgroups stay the host's.
#[test]
fn cgroups_stay_the_hosts_without_sys_admin_or_on_a_shared_path() {
    let owner_of = |id: &str, path: &str| {
        // cgroup v1 (memory hierarchy) or v2.
        let dir = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
            .map(|h| std::path::Path::new(h).join(path.trim_start_matches('/')))
            .into_iter()
            .find(|d| d.is_dir())
            .unwrap_or_else(|| panic!("no cgroup {path} for {id}"));
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&dir).unwrap())
    };
    let unprivileged = name("undelegated");
    run_detached(&unprivileged, &[], &["sleep", "30"]);
    let owner = owner_of(&unprivileged, &format!("default/{unprivileged}"));
    remove(&unprivileged);
    assert_eq!(owner, 0, "unprivileged");

    let shared = name("shared-cg");
    let path = format!("/eci-shared-{}", std::process::id());
    run_detached(
        &shared,
        &["--privileged", "--cgroup", &path],
        &["sleep", "30"],
    );
    let owner = owner_of(&shared, &path);
    remove(&shared);
    assert_eq!(owner, 0, "privileged on {path}");
}

/// What containerd's CRI does for a pod, through ctr: the sandbox and an app container carry
/// the same `io.kubernetes.cri.sandbox-id`, so one shim serves both; the app container joins
/// the sandbox's network and IPC namespaces and so shares its user namespace and ID block.
/// The app container comes and goes while the sandbox lives; then the sandbox goes, and with
/// it the shim, leaving nothing.
#[test]
fn a_pods_containers_share_one_shim_and_one_id_block() {
    let sandbox = name("pod");
    let app = name("pod-app");
    let group = format!("io.kubernetes.cri.sandbox-id={sandbox}");
    run_detached(&sandbox, &["--annotation", &group], &["sleep", "60"]);
    let pid = task_pid(&sandbox).expect("sandbox pid");
    let shim = shim_pid(&sandbox).expect("the pod's shim");
    run_detached(
        &app,
        &[
            "--annotation",
            &group,
            "--with-ns",
            &format!("network:/proc/{pid}/ns/net"),
            "--with-ns",
            &format!("ipc:/proc/{pid}/ns/ipc"),
        ],
        &["sleep", "60"],
    );
    let app_pid = task_pid(&app).expect("app pid");
    let parent = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PPid:")?.trim().parse::<i32>().ok())
    };
    let parents = (parent(pid), parent(app_pid));
    let probe = "cat /proc/self/uid_map; for n in net ipc user; do readlink /proc/self/ns/$n; done";
    let in_sandbox = exec(&sandbox, "s", &["sh", "-c", probe]);
    let in_app = exec(&app, "a", &["sh", "-c", probe]);
    let shims_of_app = shim_pid(&app);
    remove(&app);
    let sandbox_still_runs = task_status(&sandbox);
    let app_left = leftovers_after(&app, std::time::Duration::from_secs(10));
    remove(&sandbox);
    let shim_gone = wait_until(std::time::Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{shim}")).exists()
    });
    let sandbox_left = leftovers_after(&sandbox, std::time::Duration::from_secs(10));

    assert_eq!(
        parents.0,
        Some(shim),
        "the sandbox's init is the shim's child"
    );
    assert_eq!(
        parents.1,
        Some(shim),
        "the app container is served by the pod's shim"
    );
    assert_eq!(
        shims_of_app, None,
        "no shim of its own for the app container"
    );
    assert_eq!(in_sandbox.code, 0, "{}", in_sandbox.stderr);
    assert_eq!(in_app.code, 0, "{}", in_app.stderr);
    assert_eq!(
        in_app.stdout, in_sandbox.stdout,
        "one user, network and IPC namespace"
    );
    assert!(parse_uid_map(&in_app.stdout).is_some_and(|(_, host, _)| host >= 100_000));
    assert_eq!(sandbox_still_runs.as_deref(), Some("RUNNING"));
    assert!(app_left.is_empty(), "{app_left:?}");
    assert!(shim_gone, "the pod's shim outlived its last container");
    assert!(sandbox_left.is_empty(), "{sandbox_left:?}");
}
