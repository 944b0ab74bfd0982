//! What a cluster administrator types: crictl against containerd 2.x's CRI with the ECI shim as
//! runtime handler "eci" (scripts/crienv.sh, on the containerd ECI_CONTAINERD_BIN_DIR names),
//! beside the Rust CRI client tests in cri.rs.
//! Pods with `hostUsers: false` keep the block the kubelet gave them when it is safe.

use eci_tests::*;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every pod's cgroup parent, so that leftovers are found by id.
const CGROUP_PARENT: &str = "eci-crictl-test";

fn write(dir: &Path, file: &str, json: serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(file);
    std::fs::write(&p, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    p
}

fn pod_json(name: &str, log_dir: &Path, userns: Option<serde_json::Value>) -> serde_json::Value {
    let mut ns = serde_json::json!({"network": 0, "pid": 1, "ipc": 0});
    if let Some(u) = userns {
        ns["userns_options"] = u;
    }
    serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": name, "attempt": 0},
        "hostname": name,
        "log_directory": log_dir,
        "linux": {
            "cgroup_parent": format!("/{CGROUP_PARENT}"),
            "security_context": {"namespace_options": ns}
        }
    })
}

fn container_json(command: &[&str], mounts: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": "app", "attempt": 0},
        "image": {"image": cri_env().image},
        "command": command,
        "log_path": "app.log",
        "mounts": mounts,
    })
}

fn ok(r: &Run, what: &str) -> String {
    assert_eq!(r.code, 0, "crictl {what}: {}{}", r.stdout, r.stderr);
    r.stdout.trim().to_string()
}

/// Stop and remove the pod, then what it left on the host.
fn remove_pod(pod: &str, ids: &[&str]) -> Vec<String> {
    let _ = crictl(&["stopp", pod]);
    let _ = crictl(&["rmp", "-f", pod]);
    ids.iter()
        .flat_map(|id| {
            wait_until(Duration::from_secs(10), || {
                leftovers_in("k8s.io", CGROUP_PARENT, id).is_empty()
            });
            leftovers_in("k8s.io", CGROUP_PARENT, id)
        })
        .collect()
}

/// containerd 1.x's CRI knows no user namespaces for pods: it ignores `userns_options`.
fn cri_has_user_namespaces() -> bool {
    let yes = cri_containerd_major() >= 2;
    if !yes {
        eprintln!("skipped: containerd 1.x's CRI has no user namespaces for pods");
    }
    yes
}

fn host_uid_of(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn container_pid(id: &str) -> i32 {
    let info: serde_json::Value =
        serde_json::from_str(&ok(&crictl(&["inspect", "-o", "json", id]), "inspect")).unwrap();
    i32::try_from(info["info"]["pid"].as_i64().unwrap_or(0)).unwrap_or(0)
}

/// runp, create, start, exec, logs, stats, stopp and rmp on the eci handler: the pod runs in a
/// user namespace of its own with an ID block from ECI's pool, and leaves nothing behind.
#[test]
fn crictl_runs_a_pod_under_eci_from_runp_to_rmp() {
    let name = name("crictl-pod");
    let dir = std::env::temp_dir().join(&name);
    let pod_cfg = write(&dir, "pod.json", pod_json(&name, &dir.join("logs"), None));
    let ctr_cfg = write(
        &dir,
        "ctr.json",
        container_json(
            &["sh", "-c", "echo hello from crictl; exec sleep 600"],
            serde_json::json!([]),
        ),
    );
    let pod = ok(
        &crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]),
        "runp",
    );
    let created = crictl(&[
        "create",
        &pod,
        ctr_cfg.to_str().unwrap(),
        pod_cfg.to_str().unwrap(),
    ]);
    let ctr = created.stdout.trim().to_string();
    let started = (created.code == 0).then(|| crictl(&["start", &ctr]));
    let exec = crictl(&["exec", &ctr, "sh", "-c", "cat /proc/self/uid_map; id -u"]);
    let logs = wait_until(Duration::from_secs(10), || {
        crictl(&["logs", &ctr]).stdout.contains("hello from crictl")
    });
    let stats = crictl(&["stats", "-o", "json", "--id", &ctr]);
    let metrics = crictl(&["metricsp", "-o", "json"]);
    let pid = container_pid(&ctr);
    let host_uid = host_uid_of(pid);
    let left = remove_pod(&pod, &[&pod, &ctr]);
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(created.code, 0, "create: {}", created.stderr);
    assert_eq!(started.map(|r| r.code), Some(0));
    assert_eq!(exec.code, 0, "exec: {}", exec.stderr);
    let (inside, outside, len) = parse_uid_map(exec.stdout.lines().next().unwrap_or("")).unwrap();
    assert_eq!((inside, len), (0, 65536), "{}", exec.stdout);
    assert!(outside >= 100_000, "{}", exec.stdout);
    assert_eq!(exec.stdout.lines().nth(1), Some("0"));
    assert_eq!(
        host_uid,
        Some(outside),
        "the app runs as its block's first ID on the host"
    );
    assert!(logs, "crictl logs never showed the container's output");
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap_or_default();
    let s = &stats["stats"][0];
    assert!(
        s["memory"]["workingSetBytes"]["value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0),
        "crictl stats: {stats}"
    );
    assert!(s["cpu"]["usageCoreNanoSeconds"].is_object(), "{stats}");
    // The kubelet's cAdvisor-style metrics (critest's "listing pod sandbox metrics"): CFS
    // throttling and OOM kills come from the shim's task metrics. (containerd 1.x's CRI has no
    // ListPodSandboxMetrics.)
    if cri_containerd_major() >= 2 {
        let metrics: serde_json::Value = serde_json::from_str(&metrics.stdout).unwrap_or_default();
        let names: Vec<&str> = metrics["podMetrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["podSandboxId"] == pod.as_str())
            .flat_map(|p| p["containerMetrics"].as_array().into_iter().flatten())
            .filter(|c| c["containerId"] == ctr.as_str())
            .flat_map(|c| c["metrics"].as_array().into_iter().flatten())
            .filter_map(|m| m["name"].as_str())
            .collect();
        for want in [
            "container_cpu_cfs_periods_total",
            "container_cpu_cfs_throttled_periods_total",
            "container_cpu_cfs_throttled_seconds_total",
            "container_oom_events_total",
            "container_memory_usage_bytes",
        ] {
            assert!(
                names.contains(&want),
                "crictl metricsp lacks {want}: {names:?}"
            );
        }
    }
    assert_eq!(left, Vec::<String>::new());
}

/// A block of 65536 IDs where the kubelet hands them out (its default range, 65536 up), past
/// ECI's pool (crienv.sh's policy: 1000 blocks from 100000), distinct per test run.
fn kubelet_block() -> u32 {
    (1u32 << 31) + (std::process::id() % 4096) * 65536
}

/// `hostUsers: false`: the pod's sandbox runs in a user namespace with the kubelet's mapping, as
/// the block's first host ID, under a lease of that block that goes with the pod.
///
/// containerd's snapshotter chowns such a pod's upper dir to the block's first host ID; through
/// ECI's ID-mapped upper that owner had no mapping, and making the read-only sandbox's
/// /etc/resolv.conf mount point was EPERM (this failed before the upper's owner was stored as
/// container root).
#[test]
fn a_host_users_false_sandbox_runs_in_the_kubelets_block() {
    if !cri_has_user_namespaces() {
        return;
    }
    let name = name("crictl-userns-sandbox");
    let dir = std::env::temp_dir().join(&name);
    let block = kubelet_block() + 65536 * 4096;
    let mapping = serde_json::json!([{"container_id": 0, "host_id": block, "length": 65536}]);
    let userns = serde_json::json!({"mode": 0, "uids": mapping, "gids": mapping});
    let pod_cfg = write(
        &dir,
        "pod.json",
        pod_json(&name, &dir.join("logs"), Some(userns)),
    );
    let runp = crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]);
    let pod = runp.stdout.trim().to_string();
    let info: serde_json::Value =
        serde_json::from_str(&crictl(&["inspectp", "-o", "json", &pod]).stdout).unwrap_or_default();
    let pid = info["info"]["pid"].as_i64().unwrap_or(0);
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
    let host_uid = host_uid_of(i32::try_from(pid).unwrap_or(0));
    let lease = Path::new(BASE).join("leases").join(block.to_string());
    let leased = std::fs::read_to_string(&lease).unwrap_or_default();
    let left = if runp.code == 0 {
        remove_pod(&pod, &[&pod])
    } else {
        Vec::new()
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(runp.code, 0, "runp: {}", runp.stderr);
    assert_eq!(
        parse_uid_map(&uid_map),
        Some((0, block, 65536)),
        "{uid_map}"
    );
    assert_eq!(host_uid, Some(block));
    assert!(leased.contains(&pod), "lease {}: {leased}", lease.display());
    assert!(!lease.exists(), "the block's lease outlived the pod");
    assert_eq!(left, Vec::<String>::new());
}

/// `hostUsers: false`: the pod keeps the kubelet's mapping. Its processes run as the block's
/// IDs on the host, a volume's files show their owners as the mapping says (host 0 and 1000 are
/// container 0 and 1000, through an ID-mapped mount), image files keep theirs, and what
/// container root writes lands on the volume as 0. The root directory is container root's
/// (it showed as 65534 while containerd's chown of the upper dir to the block's host root stood).
#[test]
fn a_pod_with_host_users_false_keeps_the_kubelets_mapping() {
    if !cri_has_user_namespaces() {
        return;
    }
    let name = name("crictl-userns");
    let dir = std::env::temp_dir().join(&name);
    let vol = dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("by-root"), "r").unwrap();
    std::fs::write(vol.join("by-1000"), "u").unwrap();
    chown(vol.join("by-1000"), Some(1000), Some(1000)).unwrap();
    let block = kubelet_block();
    let mapping = serde_json::json!([{"container_id": 0, "host_id": block, "length": 65536}]);
    let userns = serde_json::json!({"mode": 0, "uids": mapping, "gids": mapping});
    let pod = pod_json(&name, &dir.join("logs"), Some(userns));
    let pod_cfg = write(&dir, "pod.json", pod.clone());
    // The kubelet repeats the pod's namespace options for each of its containers.
    let mut ctr = container_json(
        &["sleep", "600"],
        serde_json::json!([{"container_path": "/vol", "host_path": vol}]),
    );
    ctr["linux"] = serde_json::json!({"security_context": {
        "namespace_options": pod["linux"]["security_context"]["namespace_options"]
    }});
    let ctr_cfg = write(&dir, "ctr.json", ctr);
    let runp = crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]);
    let pod = runp.stdout.trim().to_string();
    let created = (runp.code == 0).then(|| {
        crictl(&[
            "create",
            &pod,
            ctr_cfg.to_str().unwrap(),
            pod_cfg.to_str().unwrap(),
        ])
    });
    let ctr = created
        .as_ref()
        .map(|r| r.stdout.trim().to_string())
        .unwrap_or_default();
    let started = created
        .as_ref()
        .filter(|r| r.code == 0)
        .map(|_| crictl(&["start", &ctr]));
    let exec = crictl(&[
        "exec",
        &ctr,
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; stat -c '%n %u:%g' /vol/by-root /vol/by-1000 /home/user /; touch /vol/by-container-root /made-by-root",
    ]);
    let pid = if started.as_ref().is_some_and(|r| r.code == 0) {
        container_pid(&ctr)
    } else {
        0
    };
    let host_uid = host_uid_of(pid);
    let left = if runp.code == 0 {
        remove_pod(&pod, &[&pod, &ctr])
    } else {
        Vec::new()
    };
    let written = std::fs::metadata(vol.join("by-container-root")).map(|m| (m.uid(), m.gid()));
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(runp.code, 0, "runp: {}", runp.stderr);
    let created = created.unwrap();
    assert_eq!(created.code, 0, "create: {}", created.stderr);
    assert_eq!(started.map(|r| r.code), Some(0));
    assert_eq!(exec.code, 0, "exec: {}{}", exec.stdout, exec.stderr);
    let lines: Vec<&str> = exec.stdout.lines().collect();
    assert_eq!(
        parse_uid_map(lines[0]),
        Some((0, block, 65536)),
        "{}",
        exec.stdout
    );
    assert_eq!(
        parse_uid_map(lines[1]),
        Some((0, block, 65536)),
        "{}",
        exec.stdout
    );
    assert_eq!(lines[2], "/vol/by-root 0:0");
    assert_eq!(lines[3], "/vol/by-1000 1000:1000");
    assert_eq!(lines[4], "/home/user 1000:1000");
    assert_eq!(lines[5], "/ 0:0");
    assert_eq!(
        host_uid,
        Some(block),
        "the pod's processes run as the kubelet's block"
    );
    assert_eq!(
        written.ok(),
        Some((0, 0)),
        "container root writes as 0 on the volume"
    );
    assert_eq!(left, Vec::<String>::new());
}

/// A mapping that is not a safe kubelet block is refused when the pod starts, naming the rule
/// and what to change, and nothing is left: critest's own (host IDs from 1000, the host's
/// users, running into ECI's pool) and one inside ECI's pool.
#[test]
fn a_pod_asking_for_unsafe_host_ids_is_refused() {
    if !cri_has_user_namespaces() {
        return;
    }
    for (host_id, length, says) in [
        (1000u32, 100_000u32, "0..65535"),
        (1000, 65536, "outside the kubelet's range"),
        (131_072, 65536, "overlaps ECI's own ID pool"),
    ] {
        let name = name("crictl-userns-bad");
        let dir = std::env::temp_dir().join(&name);
        let mapping =
            serde_json::json!([{"container_id": 0, "host_id": host_id, "length": length}]);
        let userns = serde_json::json!({"mode": 0, "uids": mapping, "gids": mapping});
        let pod_cfg = write(
            &dir,
            "pod.json",
            pod_json(&name, &dir.join("logs"), Some(userns)),
        );
        let r = crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]);
        let pods = crictl(&["pods", "-q", "--name", &name]);
        for pod in pods.stdout.split_whitespace() {
            let _ = crictl(&["rmp", "-f", pod]);
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_ne!(r.code, 0, "{host_id}:{length} was accepted");
        assert!(
            r.stderr.contains("rule user-namespace") && r.stderr.contains(says),
            "{host_id}:{length}: {}",
            r.stderr
        );
        for pod in pods.stdout.split_whitespace() {
            assert_eq!(
                leftovers_in("k8s.io", CGROUP_PARENT, pod),
                Vec::<String>::new()
            );
        }
    }
}

/// critest's RunAsUser spec: an exec in a container whose user is not root runs as that user,
/// with the container's capability bounding set (exec once failed here: shrinking the bounding
/// set after the uid change, without CAP_SETPCAP, was refused).
#[test]
fn an_exec_in_a_container_running_as_a_user_runs_as_that_user() {
    let name = name("crictl-runas");
    let dir = std::env::temp_dir().join(&name);
    let pod_cfg = write(&dir, "pod.json", pod_json(&name, &dir.join("logs"), None));
    let mut ctr = container_json(&["sleep", "600"], serde_json::json!([]));
    ctr["linux"] = serde_json::json!({"security_context": {"run_as_user": {"value": 1000}}});
    let ctr_cfg = write(&dir, "ctr.json", ctr);
    let pod = ok(
        &crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]),
        "runp",
    );
    let ctr = ok(
        &crictl(&[
            "create",
            &pod,
            ctr_cfg.to_str().unwrap(),
            pod_cfg.to_str().unwrap(),
        ]),
        "create",
    );
    let started = crictl(&["start", &ctr]);
    let exec = crictl(&[
        "exec",
        &ctr,
        "sh",
        "-c",
        "id -u; grep CapBnd /proc/self/status",
    ]);
    let left = remove_pod(&pod, &[&pod, &ctr]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(started.code, 0, "start: {}", started.stderr);
    assert_eq!(exec.code, 0, "exec: {}{}", exec.stdout, exec.stderr);
    assert_eq!(exec.stdout.lines().next(), Some("1000"), "{}", exec.stdout);
    assert!(
        exec.stdout.contains("CapBnd:\t00000000a80425fb"),
        "{}",
        exec.stdout
    );
    assert_eq!(left, Vec::<String>::new());
}

/// Mount propagation through CRI. `Bidirectional` (containerd: `rshared` on the bind and a shared
/// root file system) is refused when the container starts, naming the rule and what to use
/// instead: an ECI container's mounts stay in its own user namespace and never reach the host.
/// `HostToContainer` (`rslave`) works: a mount the host makes under the volume after the start
/// shows in the container. containerd wants the source on a shared mount for both, so the test
/// makes its own directory one, and removes it afterwards.
#[test]
fn mount_propagation_host_to_container_works_and_bidirectional_is_refused() {
    let name = name("crictl-propagation");
    let dir = std::env::temp_dir().join(&name);
    let vol = dir.join("vol");
    std::fs::create_dir_all(vol.join("late")).unwrap();
    let host = |cmd: &str, args: &[&str]| -> Run {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .expect("run mount")
            .into()
    };
    let host_mount = |args: &[&str]| {
        let r = host("mount", args);
        assert_eq!(r.code, 0, "mount {args:?}: {}", r.stderr);
    };
    let v = vol.to_str().unwrap();
    host_mount(&["--bind", v, v]);
    host_mount(&["--make-shared", v]);
    let pod_cfg = write(&dir, "pod.json", pod_json(&name, &dir.join("logs"), None));
    let pod = ok(
        &crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]),
        "runp",
    );
    let create = |file: &str, propagation: u32| {
        let mut ctr = container_json(
            &["sleep", "600"],
            serde_json::json!([{"container_path": "/vol", "host_path": vol, "propagation": propagation}]),
        );
        ctr["metadata"]["name"] = serde_json::json!(file);
        let cfg = write(&dir, file, ctr);
        crictl(&[
            "create",
            &pod,
            cfg.to_str().unwrap(),
            pod_cfg.to_str().unwrap(),
        ])
    };
    // CRI's MountPropagation: 1 = HOST_TO_CONTAINER, 2 = BIDIRECTIONAL.
    let bidirectional = create("bidir.json", 2);
    let bidir_start = crictl(&["start", bidirectional.stdout.trim()]);
    let slave = create("slave.json", 1);
    let slave_id = slave.stdout.trim().to_string();
    let slave_start = crictl(&["start", &slave_id]);
    let late = format!("{v}/late");
    host_mount(&["-t", "tmpfs", "-o", "size=1m", "eci-late", &late]);
    std::fs::write(vol.join("late/file"), "mounted after the start").unwrap();
    let seen = crictl(&["exec", &slave_id, "cat", "/vol/late/file"]);
    let left = remove_pod(&pod, &[&pod, bidirectional.stdout.trim(), &slave_id]);
    let _ = host("umount", &[&late]);
    let _ = host("umount", &[v]);
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(bidirectional.code, 0, "create: {}", bidirectional.stderr);
    assert_ne!(bidir_start.code, 0, "a Bidirectional volume was started");
    assert!(
        bidir_start.stderr.contains("rule mount-propagation")
            && bidir_start
                .stderr
                .contains("can't propagate mounts to the host")
            && bidir_start.stderr.contains("HostToContainer"),
        "{}",
        bidir_start.stderr
    );
    assert_eq!(slave.code, 0, "create: {}", slave.stderr);
    assert_eq!(slave_start.code, 0, "start: {}", slave_start.stderr);
    assert_eq!(
        seen.stdout.trim(),
        "mounted after the start",
        "{}",
        seen.stderr
    );
    assert_eq!(left, Vec::<String>::new());
}

/// The kubelet's user-namespace range (no `kubelet` user here: its default, 65536 up to 2^32)
/// meets ECI's pool (crienv.sh's policy: 1000 blocks from 100000). `enforce status` warns and
/// says what to change, and a shim's start says so in containerd's log and, once per boot, in
/// the audit log (a marker file per distinct warning, under the shim's state directory, records
/// that it was written).
#[test]
fn a_kubelet_range_meeting_ecis_pool_is_reported() {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|l| l.starts_with("kubelet:")) {
        eprintln!(
            "skipped: this host has a kubelet user; the test needs the kubelet's default range"
        );
        return;
    }
    let status: Run =
        std::process::Command::new(repo().join("target/release/containerd-shim-eci-v2"))
            .args(["enforce", "status", "--path", "/nonexistent"])
            .env("ECI_POLICY", "/etc/containerd-shim-eci/crienv.toml")
            .output()
            .unwrap()
            .into();
    assert!(
        status.stdout.contains("WARNING: kubelet user namespaces: the kubelet's user-namespace range 65536..4294967296")
            && status.stdout.contains("overlaps ECI's ID pool 100000..65636000")
            && status.stdout.contains("1001 of the kubelet's 65535 pod blocks (1.5%)")
            && status.stdout.contains("kubelet:65667072:7208960"),
        "{}",
        status.stdout
    );

    // A pod's shim, started by containerd, says the same in containerd's log, once per boot:
    // the first shim to claim the marker does. Forget an earlier shim's claim so that this
    // pod's is the first.
    for e in std::fs::read_dir(BASE).into_iter().flatten().flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with("kubelet-pool-warning.")
            && std::fs::read_to_string(e.path())
                .is_ok_and(|m| m.contains("overlaps ECI's ID pool 100000..65636000"))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let name = name("crictl-pools");
    let dir = std::env::temp_dir().join(&name);
    let pod_cfg = write(&dir, "pod.json", pod_json(&name, &dir.join("logs"), None));
    let pod = ok(
        &crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]),
        "runp",
    );
    let log = Path::new(&cri_env().socket).with_file_name("containerd.log");
    let logged = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.contains("overlaps ECI's ID pool 100000..65636000")
                && l.contains("rule user-namespace")
        })
    });
    let marker: String = std::fs::read_dir(BASE)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("kubelet-pool-warning.")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .find(|m| m.contains("overlaps ECI's ID pool 100000..65636000"))
        .unwrap_or_default();
    let left = remove_pod(&pod, &[&pod]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(logged, "no warning in {}", log.display());
    assert!(
        marker.contains("overlaps ECI's ID pool"),
        "marker: {marker}"
    );
    assert_eq!(left, Vec::<String>::new());
}

/// A Kubernetes image volume (containerd 2.1+: an OCI image mounted read-only into a
/// container, whole or a subPath of it). containerd mounts the image as an overlay on the host,
/// which the kernel cannot ID-map; ECI mounts the image's layers again, ID-mapped, so the
/// volume's files keep the owners the image gives them, and it stays read-only. Before, the
/// volume was refused as a restricted mount (it lives in containerd's state directory).
#[test]
fn an_image_volume_is_mounted_with_its_owners_and_read_only() {
    if cri_containerd_major() < 2 {
        eprintln!("skipped: containerd 1.x's CRI has no image volumes");
        return;
    }
    // In a pod of ECI's own block, and in a hostUsers: false pod keeping the kubelet's.
    let block = kubelet_block() + 65536 * 8192;
    let mapping = serde_json::json!([{"container_id": 0, "host_id": block, "length": 65536}]);
    image_volume_case(None);
    image_volume_case(Some(
        serde_json::json!({"mode": 0, "uids": mapping, "gids": mapping}),
    ));
}

fn image_volume_case(userns: Option<serde_json::Value>) {
    let name = name("crictl-imgvol");
    let dir = std::env::temp_dir().join(&name);
    let pod = pod_json(&name, &dir.join("logs"), userns.clone());
    let pod_cfg = write(&dir, "pod.json", pod.clone());
    let image = serde_json::json!({"image": cri_env().image});
    let mut ctr = container_json(
        &["sleep", "600"],
        serde_json::json!([
            {"container_path": "/img", "readonly": true, "image": image},
            {"container_path": "/img-home", "readonly": true, "image": image, "image_sub_path": "home"},
        ]),
    );
    if userns.is_some() {
        // The kubelet repeats the pod's namespace options for each of its containers.
        ctr["linux"] = serde_json::json!({"security_context": {
            "namespace_options": pod["linux"]["security_context"]["namespace_options"]
        }});
    }
    let ctr_cfg = write(&dir, "ctr.json", ctr);
    let pod = ok(
        &crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]),
        "runp",
    );
    let created = crictl(&[
        "create",
        &pod,
        ctr_cfg.to_str().unwrap(),
        pod_cfg.to_str().unwrap(),
    ]);
    let ctr = created.stdout.trim().to_string();
    let started = crictl(&["start", &ctr]);
    let exec = crictl(&[
        "exec",
        &ctr,
        "sh",
        "-c",
        "stat -c '%n %u:%g' /img/home/user /img-home/user /img/bin/busybox; touch /img/x 2>&1; touch /img-home/x 2>&1; true",
    ]);
    let left = remove_pod(&pod, &[&pod, &ctr]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(created.code, 0, "create: {}", created.stderr);
    assert_eq!(started.code, 0, "start: {}", started.stderr);
    assert_eq!(exec.code, 0, "exec: {}{}", exec.stdout, exec.stderr);
    let lines: Vec<&str> = exec.stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"/img/home/user 1000:1000"),
        "{}",
        exec.stdout
    );
    assert_eq!(
        lines.get(1),
        Some(&"/img-home/user 1000:1000"),
        "{}",
        exec.stdout
    );
    assert_eq!(
        lines.get(2),
        Some(&"/img/bin/busybox 0:0"),
        "{}",
        exec.stdout
    );
    assert_eq!(
        exec.stdout.matches("Read-only file system").count(),
        2,
        "{}",
        exec.stdout
    );
    assert_eq!(left, Vec::<String>::new());
}

/// Only containerd's image volumes get the re-mounted view: a bind of any other overlay (here
/// one the host mounted, with an upper layer the view would leave out) is still refused as a
/// file system the kernel cannot ID-map, naming what to use instead.
#[test]
fn a_bind_of_another_overlay_is_still_refused() {
    let name = name("crictl-overlay-bind");
    let dir = std::env::temp_dir().join(&name);
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("upper/only-in-upper"), "u").unwrap();
    let merged = dir.join("merged");
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let mounted = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(mounted.success());
    let pod_cfg = write(&dir, "pod.json", pod_json(&name, &dir.join("logs"), None));
    let ctr_cfg = write(
        &dir,
        "ctr.json",
        container_json(
            &["sleep", "600"],
            serde_json::json!([{"container_path": "/data", "host_path": merged, "readonly": true}]),
        ),
    );
    let pod = ok(
        &crictl(&["runp", "--runtime", "eci", pod_cfg.to_str().unwrap()]),
        "runp",
    );
    let created = crictl(&[
        "create",
        &pod,
        ctr_cfg.to_str().unwrap(),
        pod_cfg.to_str().unwrap(),
    ]);
    let ctr = created.stdout.trim().to_string();
    let started = crictl(&["start", &ctr]);
    let left = remove_pod(&pod, &[&pod, &ctr]);
    let _ = std::process::Command::new("umount").arg(&merged).status();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(created.code, 0, "create: {}", created.stderr);
    assert_ne!(started.code, 0, "a bind of a host overlay was started");
    assert!(
        started.stderr.contains("cannot ID-map bind mount source")
            && started.stderr.contains("use a directory on ext4"),
        "{}",
        started.stderr
    );
    assert_eq!(left, Vec::<String>::new());
}
