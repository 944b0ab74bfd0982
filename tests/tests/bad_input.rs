//! Bad input gets a clear error and leaves nothing behind.

use eci_tests::*;
use std::process::{Command, Stdio};

/// Run the create helper as the shim does: the request as the first message on the channel
/// that is its stdout, the reply as the next message (`{"failed": {"kind", "message"}}`).
fn helper(request: &serde_json::Value) -> serde_json::Value {
    let bin = repo().join("target/release/containerd-shim-eci-v2");
    let (ours, theirs) = eci_sys::channel::Channel::pair().expect("channel");
    let mut child = Command::new(bin)
        .args(["helper", "create"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .spawn()
        .expect("run helper");
    ours.send(request, &[])
        .expect("send the helper its request");
    let reply = ours.recv::<serde_json::Value>();
    let _ = child.wait();
    reply
        .map(|(reply, _)| reply)
        .unwrap_or_else(|e| panic!("helper answered nothing readable: {e}"))
}

fn create_request(id: &str, bundle: &std::path::Path) -> serde_json::Value {
    serde_json::json!({"create": {
        "namespace": "default", "id": id, "bundle": bundle, "rootfs": [],
        "stdio": {"stdin": null, "stdout": null, "stderr": null, "console_socket": null},
        "policy_path": "/etc/containerd-shim-eci/policy.toml", "containerd_address": null,
        "shim_pid": std::process::id(), "base": BASE,
    }})
}

#[test]
fn truncated_and_malformed_config_json_are_clear_errors() {
    let _ = env();
    for (label, text) in [
        ("truncated", "{\"ociVersion\": \"1.0.2\", \"process\": {"),
        ("malformed", "{\"ociVersion\": 7}"),
        ("empty", ""),
    ] {
        let id = name(label);
        let bundle = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(bundle.join("config.json"), text).unwrap();
        let reply = helper(&create_request(&id, &bundle));
        let error = reply["failed"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: {reply}"));
        assert!(error.contains("invalid config.json"), "{label}: {error}");
        assert!(leftovers(&id).is_empty(), "{label}: {:?}", leftovers(&id));
        let _ = std::fs::remove_dir_all(bundle);
    }
}

#[test]
fn missing_rootfs_is_a_clear_error() {
    let id = name("norootfs");
    let bundle = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&bundle).unwrap();
    let spec = Command::new(&env().ctr)
        .args(["oci", "spec"])
        .output()
        .unwrap()
        .stdout;
    std::fs::write(bundle.join("config.json"), spec).unwrap();
    let reply = helper(&create_request(&id, &bundle));
    let error = reply["failed"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"));
    assert!(error.contains("rootfs"), "{error}");
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
    let _ = std::fs::remove_dir_all(bundle);

    // And through ctr, with a host directory that does not exist as rootfs.
    let r = ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--rootfs",
        "/nonexistent-eci-rootfs",
        &name("ctr-norootfs"),
        "true",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("rootfs"), "{}", r.stderr);
}

#[test]
fn unknown_runtime_options_are_refused() {
    let id = name("opts");
    let r = run(
        &id,
        &["--runtime-config-path", "/tmp/not-an-eci-policy.toml"],
        &["true"],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("/etc/containerd-shim-eci"),
        "{}",
        r.stderr
    );
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
}
