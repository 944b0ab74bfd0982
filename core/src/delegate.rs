//! Cgroup delegation. A container that may manage cgroups (it holds CAP_SYS_ADMIN, as
//! Docker-in-Docker and Kubernetes-in-Docker need) owns its own cgroup directories, so a runtime
//! inside it can create, limit and remove cgroups beneath them. Its own limits stay the host's:
//! the interface files of those directories keep their owner, and only the directory and the
//! files that move processes (and, on v2, enable controllers for children) change hands, as the
//! kernel's cgroup v2 delegation model prescribes. Removal takes what the container made,
//! deepest first, since libcontainer removes only the container's own directory.

use std::io;
use std::path::{Path, PathBuf};

/// Files of a delegated directory that its new owner writes: moving processes in cgroup v1 and
/// v2, threads and child controllers in v2.
const DELEGATED_FILES: &[&str] = &[
    "tasks",
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
];

/// The container's directory in every cgroup hierarchy mounted on the host where it has one:
/// `cgroups_path` (libcontainer's, absolute) under each hierarchy's mount. On a hybrid host the
/// v2 hierarchy holds no directory of the container, and is skipped.
pub fn container_dirs(cgroups_path: &Path) -> Vec<PathBuf> {
    let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    if relative.as_os_str().is_empty() {
        return Vec::new();
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    hierarchy_mounts(&mountinfo)
        .into_iter()
        .map(|mount| mount.join(relative))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Mount points of whole cgroup hierarchies (cgroup or cgroup2 mounts whose root is the
/// hierarchy's root) in a mountinfo text, each once.
fn hierarchy_mounts(mountinfo: &str) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = crate::mountinfo::entries(mountinfo)
        .filter(|e| (e.fstype == "cgroup" || e.fstype == "cgroup2") && e.root == "/")
        .map(|e| PathBuf::from(e.mount_point.replace("\\040", " ")))
        .collect();
    mounts.sort();
    mounts.dedup();
    mounts
}

/// Whether `cgroups_path` can be the container's alone: its last component names the container
/// (`/default/ID`, `/docker/ID`, `…:cri-containerd:ID`). A path a user pointed at a shared
/// cgroup (`--cgroup-parent`, `/`) is never handed over.
pub fn is_own(cgroups_path: &Path, id: &str) -> bool {
    !id.is_empty()
        && cgroups_path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(id))
}

/// Hand the container `id`'s cgroup directories to `owner` (the host ID of its root). Only
/// directories of its own that hold no cgroup yet: anything else stays the host's, and the
/// answer is false.
pub fn delegate(cgroups_path: &Path, id: &str, owner: u32) -> io::Result<bool> {
    let dirs = container_dirs(cgroups_path);
    let has_children = |dir: &PathBuf| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    };
    if !is_own(cgroups_path, id) || dirs.iter().any(has_children) {
        return Ok(false);
    }
    let (owner, group) = (
        Some(nix::unistd::Uid::from_raw(owner)),
        Some(nix::unistd::Gid::from_raw(owner)),
    );
    for dir in dirs {
        nix::unistd::chown(&dir, owner, group)?;
        for file in DELEGATED_FILES {
            match nix::unistd::chown(&dir.join(file), owner, group) {
                Err(nix::errno::Errno::ENOENT) => {}
                other => other?,
            }
        }
    }
    Ok(true)
}

/// Remove every cgroup the container made beneath its directories (from [`container_dirs`]),
/// deepest first. Their processes must be gone; a directory that still holds one stays, and
/// is returned.
pub fn remove_descendants(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for dir in dirs {
        remove_children(dir, &mut left);
    }
    left
}

fn remove_children(dir: &Path, left: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // Only directories are cgroups; a cgroup's files cannot be removed, nor need to be.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let child = entry.path();
            remove_children(&child, left);
            if std::fs::remove_dir(&child).is_err() {
                left.push(child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hierarchies_only_each_once() {
        let mountinfo = "\
25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 26 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
40 30 0:26 /default/c1 /run/c1/memory rw - cgroup cgroup rw,memory
41 30 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
42 30 0:28 / /mnt/with\\040space rw - cgroup cgroup rw,pids";
        assert_eq!(
            hierarchy_mounts(mountinfo),
            [
                "/mnt/with space",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/unified",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn only_a_path_naming_the_container_is_its_own() {
        assert!(is_own(Path::new("/default/c1"), "c1"));
        assert!(is_own(Path::new("/docker/abc123"), "abc123"));
        assert!(is_own(
            Path::new("/system.slice/cri-containerd-abc123.scope"),
            "abc123"
        ));
        assert!(!is_own(Path::new("/default"), "c1"));
        assert!(!is_own(Path::new("/"), "c1"));
        assert!(!is_own(Path::new("/c1/shared"), "c1"));
        assert!(!is_own(Path::new("/default/c1"), ""));
    }

    #[test]
    fn no_path_is_no_directory() {
        assert!(container_dirs(Path::new("/")).is_empty());
        assert!(container_dirs(Path::new("")).is_empty());
    }
}
