//! `containerd-shim-eci-v2 … start`: the handshake with every containerd from 1.6 to 2.4.
//!
//! What containerd sends and takes back (read from containerd's sources, core/runtime/v2):
//! - 1.6 – 2.2: flags and env (`TTRPC_ADDRESS`, `GRPC_ADDRESS`, `NAMESPACE`), the runtime
//!   options as a protobuf `Any` on stdin (or nothing). 1.6 takes back only a bare address and
//!   talks task API v2; 1.7 also a JSON answer with version ≤ 2; 2.0 – 2.2 also JSON with
//!   version 3. 1.7 and 2.0 – 2.2 start a shim identically (same flags, env, stdin), and 1.7
//!   refuses version 3, so without a `BootstrapParams` the answer is the bare address: task v2,
//!   which 2.0 – 2.2 drive through their v2 bridge request for request.
//! - 2.3+: the same flags and env, and a `BootstrapParams` protobuf (containerd
//!   api/runtime/bootstrap/v1) on stdin, the runtime options in its `extensions`. It takes a
//!   `BootstrapResult` protobuf back (or the legacy forms); version 3 makes it talk task v3.
//!
//! The runtime options may also be legacy bytes that happen to decode as `BootstrapParams`;
//! as containerd's own shims do (pkg/shim/compat.go), stdin counts as `BootstrapParams` only
//! when its instance id and namespace are the ones on the command line.
//!
//! Everything that can be refused is checked before any process exists; once the server
//! process is spawned, a failure kills and reaps it and removes the socket, so a failed start
//! leaves nothing behind.

use containerd_shim::protos::protobuf::rt::WireType;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedInputStream, CodedOutputStream, Message};
use containerd_shim::Flags;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Env var naming the listening socket the start process hands the server process.
pub const LISTEN_FD_ENV: &str = "ECI_SHIM_LISTEN_FD";
/// Annotations under which containerd's CRI groups a pod's containers into one shim.
const GROUP_LABELS: &[&str] = &[
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
/// Where containerd ≤ 2.2 (and 2.3+ without `socket_dir`) expects shim sockets.
const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
/// containerd's own shims read at most this much of stdin.
const MAX_STDIN: u64 = 10 << 20;
/// How long the server process may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// `LOG_LEVEL_DEBUG` in bootstrap/v1; trace is lower still.
const LOG_LEVEL_DEBUG: i32 = -4;

/// containerd api/runtime/bootstrap/v1 `BootstrapParams`, the fields the shim reads.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BootstrapParams {
    pub instance_id: String,
    pub namespace: String,
    pub log_level: i32,
    pub containerd_version: String,
    pub containerd_ttrpc_address: String,
    pub containerd_grpc_address: String,
    pub containerd_binary: String,
    pub extensions: Vec<Any>,
    pub socket_dir: Option<String>,
}

type PResult<T> = Result<T, String>;

fn pb<T>(r: containerd_shim::protos::protobuf::Result<T>) -> PResult<T> {
    r.map_err(|e| e.to_string())
}

impl BootstrapParams {
    /// Decode as Go's `proto.Unmarshal` would: a known field with the wrong wire type or a
    /// string that is not UTF-8 is an error; unknown fields are skipped.
    pub fn decode(buf: &[u8]) -> PResult<Self> {
        let mut p = BootstrapParams::default();
        let mut is = CodedInputStream::from_bytes(buf);
        while let Some(tag) = pb(is.read_raw_tag_or_eof())? {
            let (field, wire) = (tag >> 3, tag & 7);
            let wire = WireType::new(wire).ok_or(format!("bad wire type {wire}"))?;
            let want = match field {
                3 => WireType::Varint,
                1 | 2 | 4..=9 => WireType::LengthDelimited,
                _ => {
                    pb(is.skip_field(wire))?;
                    continue;
                }
            };
            if wire != want {
                return Err(format!("field {field} has wire type {wire:?}"));
            }
            match field {
                1 => p.instance_id = pb(is.read_string())?,
                2 => p.namespace = pb(is.read_string())?,
                3 => p.log_level = pb(is.read_int32())?,
                4 => p.containerd_version = pb(is.read_string())?,
                5 => p.containerd_ttrpc_address = pb(is.read_string())?,
                6 => p.containerd_grpc_address = pb(is.read_string())?,
                7 => p.containerd_binary = pb(is.read_string())?,
                // Extension { google.protobuf.Any value = 1; }
                8 => {
                    let ext = pb(is.read_bytes())?;
                    let mut es = CodedInputStream::from_bytes(&ext);
                    let mut value = Any::new();
                    while let Some(tag) = pb(es.read_raw_tag_or_eof())? {
                        let wire = WireType::new(tag & 7).ok_or("bad wire type")?;
                        if tag >> 3 == 1 && wire == WireType::LengthDelimited {
                            value = Any::parse_from_bytes(&pb(es.read_bytes())?)
                                .map_err(|e| e.to_string())?;
                        } else {
                            pb(es.skip_field(wire))?;
                        }
                    }
                    p.extensions.push(value);
                }
                9 => p.socket_dir = Some(pb(is.read_string())?),
                _ => unreachable!(),
            }
        }
        Ok(p)
    }

    /// Encode (for tests, which play containerd 2.3+).
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut os = CodedOutputStream::vec(&mut out);
        let strings = [
            (1, &self.instance_id),
            (2, &self.namespace),
            (4, &self.containerd_version),
            (5, &self.containerd_ttrpc_address),
            (6, &self.containerd_grpc_address),
            (7, &self.containerd_binary),
        ];
        for (field, s) in strings {
            if !s.is_empty() {
                os.write_string(field, s).expect("vec write");
            }
        }
        if self.log_level != 0 {
            os.write_int32(3, self.log_level).expect("vec write");
        }
        for ext in &self.extensions {
            let mut e = Vec::new();
            let mut es = CodedOutputStream::vec(&mut e);
            es.write_bytes(1, &ext.write_to_bytes().expect("any"))
                .expect("vec write");
            es.flush().expect("vec write");
            drop(es);
            os.write_bytes(8, &e).expect("vec write");
        }
        if let Some(dir) = &self.socket_dir {
            os.write_string(9, dir).expect("vec write");
        }
        os.flush().expect("vec write");
        drop(os);
        out
    }
}

/// containerd api/runtime/bootstrap/v1 `BootstrapResult`: `version = 1`, `address = 2`,
/// `protocol = 3` (capabilities, metadata and extensions stay empty).
pub fn encode_result(version: i32, address: &str, protocol: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut os = CodedOutputStream::vec(&mut out);
    os.write_int32(1, version).expect("vec write");
    os.write_string(2, address).expect("vec write");
    os.write_string(3, protocol).expect("vec write");
    os.flush().expect("vec write");
    drop(os);
    out
}

/// What containerd sent on stdin at `start`.
#[derive(Debug, PartialEq)]
pub enum StartInput {
    /// containerd 2.3+.
    Bootstrap(BootstrapParams),
    /// containerd ≤ 2.2: the runtime options, if any.
    Legacy(Option<Any>),
}

impl StartInput {
    pub fn parse(input: &[u8], id: &str, namespace: &str) -> PResult<Self> {
        if let Ok(p) = BootstrapParams::decode(input) {
            if !input.is_empty() && p.instance_id == id && p.namespace == namespace {
                return Ok(StartInput::Bootstrap(p));
            }
            // An Any (legacy options) has fields 1 and 2 only: with containerd's addresses in
            // it, this is BootstrapParams meant for another container.
            if !p.containerd_grpc_address.is_empty() || !p.containerd_ttrpc_address.is_empty() {
                return Err(format!(
                    "stdin holds containerd's BootstrapParams for {}/{}, not for {namespace}/{id} of the command line",
                    p.namespace, p.instance_id
                ));
            }
        }
        if input.is_empty() {
            return Ok(StartInput::Legacy(None));
        }
        let any = Any::parse_from_bytes(input).map_err(|e| {
            format!("stdin holds neither containerd's BootstrapParams for {namespace}/{id} nor runtime options (a protobuf Any): {e}")
        })?;
        Ok(StartInput::Legacy(Some(any)))
    }

    /// The runtime options: for 2.3+ the extension that is one of the option types the shim
    /// knows (containerd puts the runtime options there; other extensions are not options).
    pub fn options(&self) -> Option<&Any> {
        match self {
            StartInput::Legacy(o) => o.as_ref(),
            StartInput::Bootstrap(p) => p.extensions.iter().find(|a| {
                let name = a.type_url.rsplit('/').next().unwrap_or_default();
                crate::options::KNOWN_OPTION_TYPES.contains(&name)
            }),
        }
    }
}

/// runc's `Options.shim_cgroup` (field 9) when the options are runc's.
fn shim_cgroup(options: Option<&Any>) -> Option<String> {
    let o = options?;
    let name = o.type_url.rsplit('/').next()?;
    if name != "containerd.runc.v1.Options" && name != "io.containerd.runc.v1.Options" {
        return None;
    }
    crate::options::protobuf_string_field(&o.value, 9).filter(|s| !s.is_empty())
}

/// The grouping key: a pod's containers share one shim.
fn read_group(id: &str) -> String {
    let spec: Option<serde_json::Value> = std::fs::read("config.json")
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    spec.as_ref()
        .and_then(|s| s.get("annotations"))
        .and_then(|a| GROUP_LABELS.iter().find_map(|l| a.get(*l)?.as_str()))
        .unwrap_or(id)
        .to_string()
}

/// containerd's shim socket address: sha256 of `<grpc address>/<namespace>/<group>` in the
/// socket directory (the same address containerd-shim 0.11 used, so a running shim of an
/// older build is still found for its pod).
fn socket_address(socket_dir: &str, grpc: &str, namespace: &str, group: &str) -> String {
    let default = containerd_shim::socket_address(grpc, namespace, group);
    let hash = default.rsplit('/').next().unwrap_or_default();
    format!("unix://{socket_dir}/{hash}")
}

fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// Answer containerd's `start`; the bytes to write on stdout.
pub fn start(flags: &Flags) -> PResult<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut input)
        .map_err(|e| format!("read stdin: {e}"))?;
    if input.len() as u64 > MAX_STDIN {
        return Err(format!("stdin is larger than {MAX_STDIN} bytes"));
    }
    if flags.id.is_empty() || flags.namespace.is_empty() {
        return Err("start needs -id and -namespace".into());
    }
    let input = StartInput::parse(&input, &flags.id, &flags.namespace)?;
    let options = input.options();
    // A bad option is refused here, before any process exists, with the rule and the fix.
    if let Some(o) = options {
        crate::options::policy_from_options(o).map_err(|e| e.to_string())?;
    }
    let params = match &input {
        StartInput::Bootstrap(p) => Some(p),
        StartInput::Legacy(_) => None,
    };
    let grpc = params
        .map(|p| p.containerd_grpc_address.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| flags.address.clone());
    let ttrpc = params
        .map(|p| p.containerd_ttrpc_address.clone())
        .filter(|a| !a.is_empty())
        .or_else(|| std::env::var("TTRPC_ADDRESS").ok())
        .ok_or("containerd's ttrpc address is unknown (no TTRPC_ADDRESS)")?;
    let socket_dir = match params.and_then(|p| p.socket_dir.as_deref()) {
        Some(d) if Path::new(d).is_absolute() && !d.split('/').any(|c| c == "..") => {
            d.trim_end_matches('/').to_string()
        }
        Some(d) => return Err(format!("socket_dir {d:?} is not an absolute path")),
        None => DEFAULT_SOCKET_DIR.to_string(),
    };
    let debug = flags.debug || params.is_some_and(|p| p.log_level <= LOG_LEVEL_DEBUG);
    let group = read_group(&flags.id);
    let address = socket_address(&socket_dir, &grpc, &flags.namespace, &group);

    // Another container of the pod already started the shim.
    if UnixStream::connect(socket_path(&address)).is_err() {
        spawn_server(flags, &grpc, &ttrpc, &address, debug, shim_cgroup(options))?;
    }
    std::fs::write("address", &address).map_err(|e| format!("write address file: {e}"))?;
    Ok(match input {
        StartInput::Bootstrap(_) => encode_result(3, &address, "ttrpc"),
        StartInput::Legacy(_) => address.into_bytes(),
    })
}

/// Kills and reaps the server process and removes its socket unless disarmed.
struct Spawned {
    child: Option<Child>,
    socket: PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// Listen on the shim socket; `None` when another start for the same pod got there first.
fn bind(path: &Path) -> PResult<Option<UnixListener>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let listener = match UnixListener::bind(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            // Nothing answers on it: a socket left by a dead shim.
            std::fs::remove_file(path).map_err(|e| format!("remove stale socket: {e}"))?;
            UnixListener::bind(path)
        }
        r => r,
    }
    .map_err(|e| format!("listen on {}: {e}", path.display()))?;
    // Whoever connects controls the containers: root only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(Some(listener))
}

fn spawn_server(
    flags: &Flags,
    grpc: &str,
    ttrpc: &str,
    address: &str,
    debug: bool,
    cgroup: Option<String>,
) -> PResult<()> {
    let path = socket_path(address);
    let Some(listener) = bind(path)? else {
        return Ok(());
    };
    let mut guard = Spawned {
        child: None,
        socket: path.to_path_buf(),
    };
    // The server inherits the listening socket: it is accepting before containerd is told the
    // address, and two starts for one pod cannot both serve it.
    let fd = listener.as_raw_fd();
    set_cloexec(fd, false)?;
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["-namespace", &flags.namespace, "-id", &flags.id])
        .args(["-address", grpc, "-socket", address])
        .env("TTRPC_ADDRESS", ttrpc)
        .env(LISTEN_FD_ENV, fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if debug {
        cmd.arg("-debug");
    }
    let spawned = cmd.spawn();
    drop(listener);
    let child = guard
        .child
        .insert(spawned.map_err(|e| format!("spawn shim server: {e}"))?);
    let pid = child.id();
    if let Some(cgroup) = cgroup {
        containerd_shim::cgroup::add_task_to_cgroup(&cgroup, pid)
            .map_err(|e| format!("move the shim into cgroup {cgroup}: {e}"))?;
    }
    adjust_oom_score(pid)?;
    wait_ready(child)?;
    // Serving: the server is on its own from here.
    guard.child = None;
    Ok(())
}

fn set_cloexec(fd: i32, on: bool) -> PResult<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map(drop)
        .map_err(|e| format!("fcntl: {e}"))
}

/// The shim scores one above containerd, so the OOM killer takes it first.
fn adjust_oom_score(pid: u32) -> PResult<()> {
    let parent = std::os::unix::process::parent_id();
    let score: i64 = std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if score < 1000 {
        std::fs::write(
            format!("/proc/{pid}/oom_score_adj"),
            (score + 1).to_string(),
        )
        .map_err(|e| format!("set the shim's oom_score_adj: {e}"))?;
    }
    Ok(())
}

/// The server closes its stdout once it serves; before that it writes its error there.
fn wait_ready(child: &mut Child) -> PResult<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdout = child.stdout.take().ok_or("no pipe to the shim server")?;
    let mut stdout = std::fs::File::from(OwnedFd::from(stdout));
    let mut said = Vec::new();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&stdout),
            PollFlags::POLLIN,
        )];
        let ready = poll(&mut fds, PollTimeout::from(50u16)).unwrap_or(0);
        if ready > 0 {
            let mut buf = [0u8; 4096];
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if said.len() < 64 << 10 => said.extend_from_slice(&buf[..n]),
                _ => {}
            }
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "shim server exited ({status}): {}",
                String::from_utf8_lossy(&said).trim()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "shim server did not start serving within {READY_TIMEOUT:?}"
            ));
        }
    }
    // EOF: serving, unless it exited just now.
    std::thread::sleep(Duration::from_millis(1));
    if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
        return Err(format!(
            "shim server exited ({status}): {}",
            String::from_utf8_lossy(&said).trim()
        ));
    }
    Ok(())
}

/// The listening socket `start` handed down, taken once, close-on-exec again so that no
/// container or helper inherits it.
pub fn inherited_listener() -> Option<UnixListener> {
    let fd: i32 = std::env::var(LISTEN_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: libc::stat is plain data, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if fd < 3
        // SAFETY: fstat on an fd number (a closed one only yields EBADF); `st` is a valid
        // out-pointer.
        || unsafe { libc::fstat(fd, &mut st) } != 0
        || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
    {
        return None;
    }
    set_cloexec(fd, true).ok()?;
    // SAFETY: the fd was created by our start process for this server and nothing else in this
    // process owns it.
    Some(UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: &[u8]) -> Any {
        let mut a = Any::new();
        a.type_url = type_url.into();
        a.value = value.to_vec();
        a
    }

    #[test]
    fn bootstrap_params_round_trip_and_detection() {
        let p = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "default".into(),
            log_level: -4,
            containerd_version: "v2.4.2".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            extensions: vec![any("runtimeoptions.v1.Options", b"\x12\x04/etc")],
            socket_dir: Some("/run/containerd/s".into()),
        };
        let bytes = p.encode();
        assert_eq!(BootstrapParams::decode(&bytes).unwrap(), p);
        let input = StartInput::parse(&bytes, "c1", "default").unwrap();
        assert_eq!(
            input.options().unwrap().type_url,
            "runtimeoptions.v1.Options"
        );
        // Same bytes for another container: refused, naming both.
        let e = StartInput::parse(&bytes, "c2", "default").unwrap_err();
        assert!(e.contains("default/c1") && e.contains("default/c2"), "{e}");
        // Legacy runtime options decode as BootstrapParams too (type_url as instance_id), and
        // must stay options.
        let legacy = any("containerd.runc.v1.Options", b"")
            .write_to_bytes()
            .unwrap();
        assert!(BootstrapParams::decode(&legacy).is_ok());
        match StartInput::parse(&legacy, "c1", "default").unwrap() {
            StartInput::Legacy(Some(a)) => assert_eq!(a.type_url, "containerd.runc.v1.Options"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            StartInput::parse(b"", "c1", "default").unwrap(),
            StartInput::Legacy(None)
        );
        assert!(StartInput::parse(b"\xff\xff\xff", "c1", "default").is_err());
    }

    #[test]
    fn result_encoding() {
        // version=3, address="a", protocol="ttrpc"
        assert_eq!(
            encode_result(3, "a", "ttrpc"),
            b"\x08\x03\x12\x01a\x1a\x05ttrpc".to_vec()
        );
    }

    #[test]
    fn shim_cgroup_from_runc_options() {
        let mut v = vec![0x4a, 4];
        v.extend_from_slice(b"/eci");
        assert_eq!(
            shim_cgroup(Some(&any("containerd.runc.v1.Options", &v))).as_deref(),
            Some("/eci")
        );
        assert_eq!(
            shim_cgroup(Some(&any("runtimeoptions.v1.Options", &v))),
            None
        );
    }

    #[test]
    fn socket_addresses() {
        let a = socket_address("/run/containerd/s", "/run/c.sock", "default", "g");
        assert_eq!(
            a,
            containerd_shim::socket_address("/run/c.sock", "default", "g")
        );
        let b = socket_address("/tmp/s", "/run/c.sock", "default", "g");
        assert!(b.starts_with("unix:///tmp/s/") && b.ends_with(a.rsplit('/').next().unwrap()));
    }
}
