//! What the shim reads from and leaves in containerd's bundle directory besides what create
//! judges: the spec's cgroup path (for the workers that start before the container exists)
//! and the init's pid (for `shim delete` after a crash).

use std::path::{Path, PathBuf};

/// The init's pid, in the bundle, for `shim delete` after a crash.
pub const INIT_PID_FILE: &str = "init.pid";

/// `linux.cgroupsPath` of the bundle's spec, read loosely (a malformed spec is reported by
/// create), or containerd's default `/<namespace>/<id>`.
pub fn cgroups_path(bundle: &Path, namespace: &str, id: &str) -> PathBuf {
    read_cgroups_path(bundle).unwrap_or_else(|| PathBuf::from(format!("/{namespace}/{id}")))
}

fn read_cgroups_path(bundle: &Path) -> Option<PathBuf> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    spec.get("linux")?
        .get("cgroupsPath")?
        .as_str()
        .map(PathBuf::from)
}

/// Record where `shim delete` finds the init after a crash of this shim, for the pid of its
/// TaskExit and TaskDelete (as runc's shim does).
pub fn record_init_pid(bundle: &Path, pid: i32) -> std::io::Result<()> {
    std::fs::write(bundle.join(INIT_PID_FILE), pid.to_string())
}

/// The init pid a previous shim recorded, if any.
pub fn init_pid(bundle: &Path) -> Option<u32> {
    std::fs::read_to_string(bundle.join(INIT_PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_path_from_spec_or_default() {
        let dir = std::env::temp_dir().join(format!("eci-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(cgroups_path(&dir, "ns", "c"), PathBuf::from("/ns/c"));
        std::fs::write(
            dir.join("config.json"),
            r#"{"linux":{"cgroupsPath":"/a/b"}}"#,
        )
        .unwrap();
        assert_eq!(cgroups_path(&dir, "ns", "c"), PathBuf::from("/a/b"));
        std::fs::write(dir.join("config.json"), "not json").unwrap();
        assert_eq!(cgroups_path(&dir, "ns", "c"), PathBuf::from("/ns/c"));
        record_init_pid(&dir, 42).unwrap();
        assert_eq!(init_pid(&dir), Some(42));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
