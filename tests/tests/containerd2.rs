//! One shim binary for containerd 1.6 to 2.4: the `start` handshake (BootstrapParams from 2.3
//! on, flags and stdin options before), task API v3 for 2.x, `-info`, and starts that fail
//! leaving nothing behind. Run against whichever containerd the test environment runs
//! (ECI_CONTAINERD_BIN_DIR for scripts/testenv.sh); version-specific checks follow `ctr version`.

use eci_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn shim_bin() -> PathBuf {
    repo().join("target/release/containerd-shim-eci-v2")
}

fn containerd_log() -> String {
    let root = Path::new(&env().address).parent().unwrap().to_path_buf();
    std::fs::read_to_string(root.join("containerd.log")).unwrap_or_default()
}

// A minimal protobuf writer and reader, enough for BootstrapParams, BootstrapResult and
// RuntimeInfo (the test plays containerd, independently of the shim's own codec).
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    out.push(v.to_le_bytes()[0]);
}

fn bytes_field(field: u64, value: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

fn any(type_url: &str, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    bytes_field(1, type_url.as_bytes(), &mut a);
    bytes_field(2, value, &mut a);
    a
}

/// runtimeoptions.v1.Options { config_path = 2 }, as an Any.
fn config_path_option(path: &str) -> Vec<u8> {
    let mut o = Vec::new();
    bytes_field(2, path.as_bytes(), &mut o);
    any("runtimeoptions.v1.Options", &o)
}

/// containerd 2.3+'s BootstrapParams.
fn bootstrap_params(id: &str, socket_dir: &Path, options: Option<&[u8]>) -> Vec<u8> {
    let e = env();
    let mut p = Vec::new();
    bytes_field(1, id.as_bytes(), &mut p);
    bytes_field(2, b"default", &mut p);
    bytes_field(4, b"v2.4.2", &mut p);
    bytes_field(5, format!("{}.ttrpc", e.address).as_bytes(), &mut p);
    bytes_field(6, e.address.as_bytes(), &mut p);
    if let Some(o) = options {
        let mut ext = Vec::new();
        bytes_field(1, o, &mut ext);
        bytes_field(8, &ext, &mut p);
    }
    bytes_field(9, socket_dir.to_str().unwrap().as_bytes(), &mut p);
    p
}

/// Top-level fields of a protobuf message: (field, wire type, varint value or bytes).
fn fields(mut buf: &[u8]) -> Vec<(u64, u64, u64, Vec<u8>)> {
    fn read_varint(buf: &mut &[u8]) -> u64 {
        let mut v = 0;
        let mut shift = 0;
        loop {
            let b = buf[0];
            *buf = &buf[1..];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf);
        match key & 7 {
            0 => out.push((key >> 3, 0, read_varint(&mut buf), Vec::new())),
            2 => {
                let len = usize::try_from(read_varint(&mut buf)).unwrap();
                out.push((key >> 3, 2, 0, buf[..len].to_vec()));
                buf = &buf[len..];
            }
            w => panic!("unexpected wire type {w}"),
        }
    }
    out
}

fn string_field(msg: &[u8], field: u64) -> Option<String> {
    fields(msg)
        .into_iter()
        .find(|f| f.0 == field && f.1 == 2)
        .map(|f| String::from_utf8(f.3).unwrap())
}

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

/// Run the shim binary as containerd would, in a scratch bundle directory.
fn shim(args: &[&str], stdin: &[u8], bundle: &Path) -> Out {
    std::fs::create_dir_all(bundle).unwrap();
    // containerd makes the shim's log fifo; a file does for the test.
    std::fs::write(bundle.join("log"), "").unwrap();
    let mut child = Command::new(shim_bin())
        .args(args)
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", format!("{}.ttrpc", env().address))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the shim");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn start_args<'a>(id: &'a str, address: &'a str) -> Vec<&'a str> {
    vec![
        "-namespace",
        "default",
        "-address",
        address,
        "-publish-binary",
        "/bin/false",
        "-id",
        id,
        "start",
    ]
}

fn shim_processes(id: &str) -> Vec<String> {
    leftovers(id)
        .into_iter()
        .filter(|l| l.starts_with("process"))
        .collect()
}

#[test]
fn containers_start_and_containerd_2_talks_task_v3() {
    let id = name("c2-start");
    let r = run(&id, &[], &["cat", "/proc/self/uid_map"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (inside, base, len) = parse_uid_map(&r.stdout).expect("one uid_map line");
    assert_eq!((inside, len), (0, 65536), "{}", r.stdout);
    assert_ne!(base, 0, "root in the container is not root on the host");
    let version = containerd_version();
    if version < (2, 0) {
        // 1.6 logs the connection only at debug level; it takes nothing but task v2.
        assert!(leftovers_after(&id, Duration::from_secs(10)).is_empty());
        return;
    }
    // containerd 2.x logs how it connected: the task API version the start answer chose.
    let log = containerd_log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("connecting to shim {id}")))
        .unwrap_or_else(|| panic!("containerd did not log connecting to shim {id}"));
    let expected = if version >= (2, 3) {
        "version=3"
    } else {
        "version=2"
    };
    assert!(line.contains(expected), "containerd {version:?}: {line}");
    assert!(leftovers_after(&id, Duration::from_secs(10)).is_empty());
}

#[test]
fn a_start_refused_for_its_options_leaves_no_process() {
    // Through containerd: 2.3+ sends the options in BootstrapParams, older ones on stdin; the
    // shim refuses them at start either way.
    let id = name("c2-badopt");
    let r = run(
        &id,
        &[
            "--runtime-config-path",
            "/etc/containerd-shim-eci/no-such-policy.toml",
        ],
        &["true"],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("start") && r.stderr.contains("no-such-policy.toml"),
        "refused at start, naming the option: {}",
        r.stderr
    );
    assert!(
        leftovers_after(&id, Duration::from_secs(10)).is_empty(),
        "{:?}",
        leftovers(&id)
    );
}

#[test]
fn start_with_bootstrap_params_answers_a_bootstrap_result_and_refusals_leave_nothing() {
    let e = env();
    let dir = std::env::temp_dir().join(name("c2-boot"));
    let sockets = dir.join("s");
    let bundle = dir.join("bundle");

    // A bad option inside BootstrapParams: refused before any process exists.
    let id = name("c2-bootbad");
    let bad = config_path_option("/tmp/evil-policy.toml");
    let r = shim(
        &start_args(&id, &e.address),
        &bootstrap_params(&id, &sockets, Some(&bad)),
        &bundle,
    );
    assert_eq!(r.code, 1, "{:?}", r.stdout);
    assert!(
        r.stderr.contains("must live in /etc/containerd-shim-eci"),
        "{}",
        r.stderr
    );
    assert!(shim_processes(&id).is_empty(), "{:?}", shim_processes(&id));
    assert!(
        std::fs::read_dir(&sockets).map_or(true, |mut d| d.next().is_none()),
        "no socket left"
    );

    // Bytes that are neither BootstrapParams nor options.
    let r = shim(&start_args(&id, &e.address), b"\xff\xff\xff\xff", &bundle);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("stdin holds neither"), "{}", r.stderr);
    assert!(shim_processes(&id).is_empty());

    // Valid: a BootstrapResult naming task v3 over ttrpc, in the socket_dir containerd chose.
    let id = name("c2-bootok");
    let r = shim(
        &start_args(&id, &e.address),
        &bootstrap_params(&id, &sockets, None),
        &bundle,
    );
    let pid = shim_pid(&id);
    if let Some(pid) = pid {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert_eq!(r.code, 0, "{}", r.stderr);
    let result = &r.stdout[..];
    let version = fields(result).into_iter().find(|f| f.0 == 1).map(|f| f.2);
    assert_eq!(version, Some(3));
    assert_eq!(string_field(result, 3).as_deref(), Some("ttrpc"));
    let address = string_field(result, 2).expect("address");
    assert!(
        address.starts_with(&format!("unix://{}/", sockets.display())),
        "{address}"
    );
    assert!(pid.is_some(), "the server was running");
    assert!(wait_until(Duration::from_secs(5), || shim_processes(&id).is_empty()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn info_answers_runtime_info_with_user_namespaces_idmap_and_the_policy() {
    let bundle = std::env::temp_dir().join(name("c2-info"));
    let r = shim(&["-info"], b"", &bundle);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info = &r.stdout[..];
    assert_eq!(string_field(info, 1).as_deref(), Some(RUNTIME));
    let features = fields(info)
        .into_iter()
        .find(|f| f.0 == 4)
        .expect("features")
        .3;
    assert_eq!(
        string_field(&features, 1).as_deref(),
        Some("types.containerd.io/opencontainers/runtime-spec/1/features/Features")
    );
    let json: serde_json::Value =
        serde_json::from_str(&string_field(&features, 2).unwrap()).unwrap();
    // What CRI needs to report user namespace support (supportsCRIUserns).
    assert!(json["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&"user".into()));
    assert_eq!(
        json["linux"]["mountExtensions"]["idmap"]["enabled"],
        serde_json::Value::Bool(true)
    );
    assert!(json["linux"]["seccomp"]["actions"]
        .as_array()
        .unwrap()
        .contains(&"SCMP_ACT_NOTIFY".into()));
    // annotations: map<string,string> entries { key = 1; value = 2; }
    let annotations: Vec<(String, String)> = fields(info)
        .into_iter()
        .filter(|f| f.0 == 5)
        .map(|f| {
            (
                string_field(&f.3, 1).unwrap(),
                string_field(&f.3, 2).unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        annotations
            .iter()
            .any(|(k, v)| k == "io.containerd.eci.policy.path"
                && v == "/etc/containerd-shim-eci/policy.toml"),
        "{annotations:?}"
    );
    // The options containerd passes: a ConfigPath outside the administrator's directory.
    let r = shim(
        &["-info"],
        &config_path_option("/tmp/evil-policy.toml"),
        &bundle,
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("must live in"), "{}", r.stderr);
    let _ = std::fs::remove_dir_all(&bundle);
}

#[test]
fn containerd_2_loads_the_runtime_info_without_errors() {
    if containerd_version() < (2, 0) {
        return; // 1.6 never runs -info
    }
    let failures = || {
        containerd_log()
            .lines()
            .filter(|l| l.contains("failed to load runtime info") && l.contains(RUNTIME))
            .count()
    };
    let before = failures();
    let id = name("c2-info-run");
    let r = run(&id, &[], &["true"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // containerd 2.2+ asks for the info on every create until it once succeeds.
    assert_eq!(failures(), before, "{}", containerd_log());
    assert!(leftovers_after(&id, Duration::from_secs(10)).is_empty());
}
