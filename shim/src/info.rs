//! `containerd-shim-eci-v2 -info`: what containerd 2.x asks a runtime before it uses it.
//!
//! containerd runs `<shim> -info` with the runtime options (a protobuf `Any`, or nothing) on
//! stdin and reads a `containerd.types.RuntimeInfo` protobuf from stdout
//! (core/runtime/v2/task_manager.go `getRuntimeInfo`). Its `features` is an `Any` holding the
//! OCI runtime features JSON, as `runc features` prints it; CRI reports a handler as supporting
//! user namespaces only if it lists the `user` namespace and idmap mounts, and containerd
//! refuses a spec with idmap mounts unless `mountExtensions.idmap.enabled` is true.
//!
//! The features are what this runtime does (libcontainer with the shim's own idmapped mounts),
//! not what the host's runc does: the shim never runs runc.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use eci_policy::Policy;
use serde_json::json;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// `-info`: read the options from stdin, print the RuntimeInfo.
pub fn main() -> i32 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(10 << 20).read_to_end(&mut input) {
        eprintln!("{}: read stdin: {e}", crate::RUNTIME_NAME);
        return 1;
    }
    match runtime_info(&input).and_then(|i| i.write_to_bytes().map_err(|e| e.to_string())) {
        Ok(bytes) => {
            let mut out = std::io::stdout();
            if out.write_all(&bytes).and_then(|_| out.flush()).is_err() {
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("{}: {e}", crate::RUNTIME_NAME);
            1
        }
    }
}

pub fn runtime_info(options: &[u8]) -> Result<RuntimeInfo, String> {
    let options = if options.is_empty() {
        None
    } else {
        Some(
            Any::parse_from_bytes(options)
                .map_err(|e| format!("stdin holds no runtime options (a protobuf Any): {e}"))?,
        )
    };
    let policy_path = crate::options::policy_from_options(&options.clone().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let mut info = RuntimeInfo::new();
    info.name = crate::RUNTIME_NAME.to_string();
    let mut version = RuntimeVersion::new();
    version.version = env!("CARGO_PKG_VERSION").to_string();
    info.version = MessageField::some(version);
    info.options = options.into();
    let mut features = Any::new();
    features.type_url = FEATURES_TYPE_URL.to_string();
    features.value = serde_json::to_vec(&features_json()).map_err(|e| e.to_string())?;
    info.features = MessageField::some(features);
    info.annotations = policy_annotations(&policy_path);
    Ok(info)
}

/// The policy in force, as RuntimeInfo annotations: a CRI client or an administrator can see
/// which file applies and whether it is valid (an invalid file refuses every container).
fn policy_annotations(path: &Path) -> HashMap<String, String> {
    let mut a = HashMap::new();
    a.insert(
        "io.containerd.eci.policy.path".to_string(),
        path.display().to_string(),
    );
    let (status, policy) = match std::fs::read_to_string(path) {
        Ok(text) => match Policy::parse(path, &text) {
            Ok(p) => ("loaded".to_string(), Some(p)),
            Err(e) => (format!("invalid, every container is refused: {e}"), None),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            "absent, the built-in defaults apply".to_string(),
            Some(Policy::default()),
        ),
        Err(e) => (format!("unreadable, every container is refused: {e}"), None),
    };
    a.insert("io.containerd.eci.policy.status".to_string(), status);
    if let Some(p) = policy {
        let join = |v: Vec<String>| v.join(",");
        a.insert(
            "io.containerd.eci.policy.restricted_mounts".to_string(),
            join(
                p.restricted_paths(&[])
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            ),
        );
        a.insert(
            "io.containerd.eci.policy.trusted_socket_images".to_string(),
            join(p.trusted_socket_images.clone()),
        );
        a.insert(
            "io.containerd.eci.policy.id_pool".to_string(),
            format!(
                "first={} blocks={} block_size={}",
                p.id_pool.first,
                p.id_pool.blocks,
                eci_policy::BLOCK_SIZE
            ),
        );
        a.insert(
            "io.containerd.eci.policy.audit_log".to_string(),
            p.audit_log.display().to_string(),
        );
    }
    a.insert(
        "io.containerd.eci.isolation".to_string(),
        "every container in its own user namespace with a private 64K ID block; sensitive host paths refused; /proc and /sys emulated".to_string(),
    );
    a
}

/// The OCI runtime features (runtime-spec features.md) of this runtime.
pub fn features_json() -> serde_json::Value {
    const MOUNT_OPTIONS: &[&str] = &[
        "async",
        "atime",
        "bind",
        "defaults",
        "dev",
        "diratime",
        "dirsync",
        "exec",
        "idmap",
        "mand",
        "noatime",
        "nodev",
        "nodiratime",
        "noexec",
        "nomand",
        "norelatime",
        "nostrictatime",
        "nosuid",
        "private",
        "ratime",
        "rbind",
        "rdev",
        "rdiratime",
        "relatime",
        "remount",
        "rexec",
        "ridmap",
        "rnoatime",
        "rnodev",
        "rnodiratime",
        "rnoexec",
        "rnorelatime",
        "rnostrictatime",
        "rnosuid",
        "rnosymfollow",
        "ro",
        "rprivate",
        "rrelatime",
        "rro",
        "rrw",
        "rshared",
        "rslave",
        "rstrictatime",
        "rsuid",
        "rsymfollow",
        "runbindable",
        "rw",
        "shared",
        "slave",
        "strictatime",
        "suid",
        "sync",
        "unbindable",
    ];
    const CAPABILITIES: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    const SECCOMP_ARCHS: &[&str] = &[
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_LOONGARCH64",
        "SCMP_ARCH_M68K",
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_SH",
        "SCMP_ARCH_SHEB",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
    ];
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.1",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            // The shim puts every container in a user namespace; the others as asked.
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": CAPABILITIES,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
                    "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": SECCOMP_ARCHS,
                "knownFlags": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
                ],
                "supportedFlags": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
                ]
            },
            "apparmor": {"enabled": true},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            // The shim idmaps bind mounts and rootfs layers itself (open_tree/mount_setattr).
            "mountExtensions": {"idmap": {"enabled": true}}
        },
        "annotations": {
            "io.containerd.eci.version": env!("CARGO_PKG_VERSION"),
            "io.github.seccomp.libseccomp.version": libseccomp_version()
        }
    })
}

fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lists_user_namespaces_and_idmap() {
        let info = runtime_info(b"").unwrap();
        assert_eq!(info.name, crate::RUNTIME_NAME);
        let f: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
        assert_eq!(info.features.type_url, FEATURES_TYPE_URL);
        assert!(f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("user")));
        assert_eq!(
            f["linux"]["mountExtensions"]["idmap"]["enabled"],
            json!(true)
        );
        assert!(info
            .annotations
            .contains_key("io.containerd.eci.policy.status"));
    }

    #[test]
    fn info_refuses_a_policy_outside_the_admin_dir() {
        let mut o = Any::new();
        o.type_url = "runtimeoptions.v1.Options".into();
        o.value = b"\x12\x09/tmp/p.tl".to_vec();
        let e = runtime_info(&o.write_to_bytes().unwrap()).unwrap_err();
        assert!(e.contains("must live in"), "{e}");
    }
}
