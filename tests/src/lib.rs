//! Harness for the integration tests: a private containerd (started by scripts/testenv.sh if
//! the environment does not name one), the locally built busybox image, and `ctr`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The runtime name the tests ask containerd for.
pub const RUNTIME: &str = "io.containerd.eci.v2";

/// The private containerd the tests drive.
pub struct Env {
    /// Its socket.
    pub address: String,
    /// The busybox image it holds.
    pub image: String,
    /// The `ctr` of the containerd under test (its flags and output differ between 1.6 and 2.x).
    pub ctr: String,
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The values of `keys`: from the process environment when all are set there, else from what
/// `scripts/SCRIPT start` prints (`export K=V …`), which starts what they describe.
fn started_env(script: &str, keys: &[&str]) -> Vec<String> {
    if let Ok(values) = keys
        .iter()
        .map(std::env::var)
        .collect::<Result<Vec<_>, _>>()
    {
        return values;
    }
    let out = Command::new(repo().join("scripts").join(script))
        .arg("start")
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    keys.iter()
        .map(|k| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("{script} did not print {k}: {text}"))
        })
        .collect()
}

/// The shared test environment; started once per test binary.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let [address, image, ctr] = <[String; 3]>::try_from(started_env(
            "testenv.sh",
            &["ECI_CONTAINERD", "ECI_TEST_IMAGE", "ECI_CTR"],
        ))
        .expect("three values");
        Env {
            address,
            image,
            ctr,
        }
    })
}

/// dockerd on a containerd of its own whose runc shim name is enforced to ECI.
pub struct DockerEnv {
    /// DOCKER_HOST of the private dockerd.
    pub host: String,
    /// The docker CLI.
    pub cli: String,
    /// The address of dockerd's containerd: restricted for its containers.
    pub containerd: String,
    /// The image the docker tests run.
    pub image: String,
}

/// The private dockerd, started on first use.
pub fn docker_env() -> &'static DockerEnv {
    static ENV: OnceLock<DockerEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let [host, cli, containerd, image] = <[String; 4]>::try_from(started_env(
            "dockerenv.sh",
            &[
                "ECI_DOCKER_HOST",
                "ECI_DOCKER_CLI",
                "ECI_DOCKER_CONTAINERD",
                "ECI_DOCKER_IMAGE",
            ],
        ))
        .expect("four values");
        DockerEnv {
            host,
            cli,
            containerd,
            image,
        }
    })
}

/// containerd's CRI plugin with the ECI shim as runtime handler "eci" (scripts/crienv.sh).
pub struct CriEnv {
    /// The CRI socket.
    pub socket: String,
    /// The image the CRI tests run.
    pub image: String,
}

/// The private containerd with its CRI plugin, started on first use.
pub fn cri_env() -> &'static CriEnv {
    static ENV: OnceLock<CriEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let [socket, image] = <[String; 2]>::try_from(started_env(
            "crienv.sh",
            &["ECI_CRI_SOCKET", "ECI_CRI_IMAGE"],
        ))
        .expect("two values");
        CriEnv { socket, image }
    })
}

/// containerd 2.x's CRI with handlers `runc` and `eci` (scripts/critest.sh), for crictl.
pub struct CritestEnv {
    /// The CRI endpoint critest drives.
    pub endpoint: String,
    /// The image critest runs.
    pub image: String,
}

/// The containerd critest drives, started on first use.
pub fn critest_env() -> &'static CritestEnv {
    static ENV: OnceLock<CritestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let [endpoint, image] = <[String; 2]>::try_from(started_env(
            "critest.sh",
            &["CONTAINER_RUNTIME_ENDPOINT", "ECI_CRITEST_IMAGE"],
        ))
        .expect("two values");
        CritestEnv { endpoint, image }
    })
}

/// `crictl args…` against [`cri_env`]'s containerd (scripts/crienv.sh: the containerd that
/// ECI_CONTAINERD_BIN_DIR names, 1.6 or 2.x).
pub fn crictl(args: &[&str]) -> Run {
    let endpoint = format!("unix://{}", cri_env().socket);
    let bin = std::env::var("ECI_CRICTL")
        .unwrap_or_else(|_| "/opt/eci-tools/cri-tools-1.37.0/crictl".into());
    Command::new(bin)
        .args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["--timeout", "60s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run crictl")
        .into()
}

/// The major version of [`cri_env`]'s containerd, from its CRI `Version` (`1.6.20~ds1`,
/// `v2.4.2`): 1.x knows nothing of user namespaces for pods nor of image volumes.
pub fn cri_containerd_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| {
        let v = crictl(&["version"]);
        v.stdout
            .lines()
            .find_map(|l| l.strip_prefix("RuntimeVersion:"))
            .map(|v| v.trim().trim_start_matches('v'))
            .and_then(|v| v.split('.').next()?.parse().ok())
            .unwrap_or_else(|| panic!("crictl version: {}{}", v.stdout, v.stderr))
    })
}

/// `docker -H HOST args…`
pub fn docker(args: &[&str]) -> Run {
    let e = docker_env();
    Command::new(&e.cli)
        .arg("-H")
        .arg(&e.host)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
        .into()
}

/// A container name unique to this test run.
pub fn name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// What a command did.
pub struct Run {
    /// Its exit status (-1 when killed).
    pub code: i32,
    /// What it printed.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Run `ctr` against the private containerd.
pub fn ctr(args: &[&str]) -> Run {
    Command::new(&env().ctr)
        .arg("--address")
        .arg(&env().address)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ctr")
        .into()
}

/// The (major, minor) version of the containerd under test, as `ctr version` shows the server.
pub fn containerd_version() -> (u32, u32) {
    let out = ctr(&["version"]).stdout;
    let server = out.split("Server:").nth(1).unwrap_or_default();
    let version = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .unwrap_or_default();
    let mut parts = version
        .trim()
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// `ctr run --rm --runtime eci IMAGE id cmd…`
pub fn run(id: &str, extra: &[&str], cmd: &[&str]) -> Run {
    let e = env();
    let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
    args.extend_from_slice(extra);
    args.push(&e.image);
    args.push(id);
    args.extend_from_slice(cmd);
    ctr(&args)
}

/// Start a detached container running `cmd`.
pub fn run_detached(id: &str, extra: &[&str], cmd: &[&str]) {
    let e = env();
    let mut args = vec!["run", "-d", "--runtime", RUNTIME];
    args.extend_from_slice(extra);
    args.push(&e.image);
    args.push(id);
    args.extend_from_slice(cmd);
    let r = ctr(&args);
    assert_eq!(r.code, 0, "ctr run -d {id}: {}", r.stderr);
}

/// `ctr task exec --exec-id EXEC_ID ID cmd…`
pub fn exec(id: &str, exec_id: &str, cmd: &[&str]) -> Run {
    let mut args = vec!["task", "exec", "--exec-id", exec_id, id];
    args.extend_from_slice(cmd);
    ctr(&args)
}

/// The (pid, status) `ctr task ls` shows for task `id`, matched on the whole name.
fn task_row(id: &str) -> Option<(i32, String)> {
    ctr(&["task", "ls"]).stdout.lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next()? == id).then_some(())?;
        Some((cols.next()?.parse().ok()?, cols.next()?.to_string()))
    })
}

/// The task's status (RUNNING, PAUSED, STOPPED…), if it exists.
pub fn task_status(id: &str) -> Option<String> {
    task_row(id).map(|(_, status)| status)
}

/// The host pid of the task's init.
pub fn task_pid(id: &str) -> Option<i32> {
    task_row(id).map(|(pid, _)| pid)
}

/// Kill (SIGKILL) and delete a task and its container, ignoring what is already gone.
pub fn remove(id: &str) {
    let _ = ctr(&["task", "kill", "-s", "SIGKILL", id]);
    wait_until(Duration::from_secs(10), || {
        task_status(id).as_deref() != Some("RUNNING")
    });
    let _ = ctr(&["task", "delete", id]);
    let _ = ctr(&["container", "delete", id]);
}

/// Poll `f` until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The host ID a container's root maps to, from a uid_map line `0 BASE 65536`.
pub fn parse_uid_map(text: &str) -> Option<(u32, u32, u32)> {
    let f: Vec<u32> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (f.len() == 3).then(|| (f[0], f[1], f[2]))
}

/// The shim's state directory.
pub const BASE: &str = "/run/containerd-shim-eci";

/// Everything the shim may leave on the host for container `id`, that exists now.
pub fn leftovers(id: &str) -> Vec<String> {
    leftovers_in("default", "default", id)
}

/// What is still left for container `id` once it has had `timeout` to go: empty as soon as
/// nothing is (the shim's delete and containerd's clean-up finish asynchronously).
pub fn leftovers_after(id: &str, timeout: Duration) -> Vec<String> {
    wait_until(timeout, || leftovers(id).is_empty());
    leftovers(id)
}

/// What is still left for a dockerd container (see [`leftovers_in`]) after `timeout`.
pub fn docker_leftovers_after(id: &str, timeout: Duration) -> Vec<String> {
    wait_until(timeout, || leftovers_in("moby", "docker", id).is_empty());
    leftovers_in("moby", "docker", id)
}

/// The same for a container of containerd namespace `namespace` whose cgroups sit under
/// `cgroup_parent` (dockerd: "moby" and "docker").
pub fn leftovers_in(namespace: &str, cgroup_parent: &str, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for kind in ["state", "bundles", "mnt", "rootfs", "emu"] {
        let p = Path::new(BASE).join(kind).join(namespace).join(id);
        if p.exists() {
            found.push(p.display().to_string());
        }
    }
    // A deleted container's block stays parked until the next allocation releases it; the
    // sweep is that allocation's first step.
    sweep_leases();
    for entry in std::fs::read_dir(Path::new(BASE).join("leases"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_to_string(entry.path())
            .is_ok_and(|t| t.contains(&format!("\"container\":\"{id}\"")))
        {
            found.push(format!("lease {}", entry.path().display()));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines().filter(|l| l.contains(id)) {
        found.push(format!("mount {line}"));
    }
    for controller in ["memory", "pids", "cpu", "freezer", "unified"] {
        let p = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(cgroup_parent)
            .join(id);
        if p.exists() {
            found.push(format!("cgroup {}", p.display()));
        }
    }
    let ps = Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in ps
        .lines()
        .filter(|l| l.contains("containerd-shim-eci-v2") && l.contains(&format!("-id {id} ")))
    {
        found.push(format!("process {line}"));
    }
    found
}

/// The shim binary under test.
pub fn shim_binary() -> PathBuf {
    std::env::var_os("ECI_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release"))
        .join("containerd-shim-eci-v2")
}

/// Release the ID blocks parked for containers that no longer exist, as the next create does
/// (`containerd-shim-eci-v2 leases sweep`).
pub fn sweep_leases() {
    let r = Command::new(shim_binary())
        .args(["leases", "sweep"])
        .stdin(Stdio::null())
        .output()
        .expect("run containerd-shim-eci-v2 leases sweep");
    assert!(
        r.status.success(),
        "leases sweep: {}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// The lease files naming container `id` of containerd namespace `namespace`: (block, text).
pub fn leases_of(namespace: &str, id: &str) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = std::fs::read_dir(Path::new(BASE).join("leases"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let first = e.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            (text.contains(&format!("\"namespace\":\"{namespace}\""))
                && text.contains(&format!("\"container\":\"{id}\"")))
            .then_some((first, text))
        })
        .collect();
    found.sort();
    found
}

/// The pid of the shim serving container `id`.
pub fn shim_pid(id: &str) -> Option<i32> {
    let out = Command::new("ps").args(["-eo", "pid,args"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let l = l.trim();
        (l.contains("containerd-shim-eci-v2") && l.contains(&format!("-id {id} ")))
            .then(|| l.split_whitespace().next()?.parse().ok())?
    })
}

/// A directory holding the static `probe` binary (tests/probes/probe.c), built once.
pub fn probe_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/probe");
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(dir.join("probe"))
            .arg(repo().join("tests/probes/probe.c"))
            .status()
            .expect("gcc");
        assert!(status.success(), "building the probe failed");
        dir
    })
    .clone()
}

/// `--mount` option binding the probe at /probe.
pub fn probe_mount() -> String {
    format!(
        "type=bind,src={},dst=/probe,options=rbind:ro",
        probe_dir().display()
    )
}

/// Host binaries `names` (found on PATH or in the sbin directories) for a container, at
/// /usr/local/bin/NAME, and the directories of the shared libraries they load, per `ldd`: as
/// (host path, container path), all to be bound read-only.
pub fn host_binaries(names: &[&str]) -> Vec<(String, String)> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for name in names {
        let found = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/sbin", "/usr/bin", "/sbin"])
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{name} not found (apt-get install runc docker.io)"));
        let out = Command::new("ldd").arg(&found).output().expect("ldd");
        dirs.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter(|w| w.starts_with('/'))
                .filter_map(|p| Path::new(p).parent())
                .map(|d| d.display().to_string()),
        );
        files.push((
            found.display().to_string(),
            format!("/usr/local/bin/{name}"),
        ));
    }
    dirs.sort();
    dirs.dedup();
    dirs.into_iter()
        .map(|d| (d.clone(), d))
        .chain(files)
        .collect()
}

/// What a container needs to run the host's runc.
pub fn inner_runtime_files() -> Vec<(String, String)> {
    host_binaries(&["runc"])
}

/// Run inside a privileged container with [`inner_runtime_files`]: build a busybox bundle,
/// `runc run` it, and report both containers' ID maps and uptimes; then try to unmount the
/// outer container's emulated /proc/uptime.
pub const INNER_RUNTIME_SCRIPT: &str = r#"set -e
    cat /proc/self/uid_map
    mkdir -p /b/rootfs/bin /b/rootfs/proc /b/rootfs/sys /b/rootfs/dev && cd /b
    cp /bin/busybox rootfs/bin/ && ln -s busybox rootfs/bin/sh
    /usr/local/bin/runc spec
    sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"sh", "-c", "echo inner pid $$; cat \/proc\/self\/uid_map; read u rest < \/proc\/uptime; echo inner-uptime $u"/' config.json
    /usr/local/bin/runc --root /run/inner run inner
    umount /proc/uptime 2>/dev/null && echo BAD_UMOUNT_EMULATION
    read u rest < /proc/uptime; echo outer-uptime $u"#;

/// The inner container ran as pid 1 of its own, in the outer container's ID block, with the
/// outer container's uptime (not the host's), and the emulation stayed in place.
pub fn check_inner_run(r: &Run) {
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("BAD_"), "{}", r.stdout);
    assert!(
        r.stdout.contains("inner pid 1"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let maps: Vec<_> = r.stdout.lines().filter_map(parse_uid_map).collect();
    assert_eq!(maps.len(), 2, "{}", r.stdout);
    assert_eq!(maps[0], maps[1], "{}", r.stdout);
    assert_ne!(maps[0].1, 0, "{}", r.stdout);
    let seconds = |prefix: &str| -> f64 {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {}", r.stdout))
    };
    let host = host_uptime();
    let (inner, outer) = (seconds("inner-uptime "), seconds("outer-uptime "));
    assert!(inner <= outer + 0.5, "inner {inner} outer {outer}");
    assert!(outer + 1.0 < host, "outer {outer} host {host}");
}

/// The host's uptime in seconds, from its /proc/uptime.
pub fn host_uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .expect("/proc/uptime")
}
