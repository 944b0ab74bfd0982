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
    let mountinfo = eci_sys::mountinfo::read_own().unwrap_or_default();
    hierarchy_mounts(&mountinfo)
        .into_iter()
        .map(|mount| mount.join(relative))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Mounts of whole cgroup hierarchies: cgroup or cgroup2 mounts whose root is the hierarchy's
/// root (not a bind of one of its directories).
fn whole_hierarchies(mountinfo: &str) -> impl Iterator<Item = eci_sys::mountinfo::Entry<'_>> {
    eci_sys::mountinfo::entries(mountinfo)
        .filter(|e| (e.fstype == "cgroup" || e.fstype == "cgroup2") && e.root == "/")
}

/// Mount points of whole cgroup hierarchies in a mountinfo text, each once.
fn hierarchy_mounts(mountinfo: &str) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = whole_hierarchies(mountinfo)
        .map(|e| eci_sys::mountinfo::unescape(e.mount_point))
        .collect();
    mounts.sort();
    mounts.dedup();
    mounts
}

/// The v1 controllers libcontainer's cgroup manager places a container in (libcgroups'
/// `v1::CONTROLLERS`).
const MANAGED_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Whole hierarchies libcontainer's manager leaves alone on a host with cgroup v1 controllers
/// (where it uses its v1 manager): the v2 hierarchy of a hybrid host, named hierarchies
/// (`name=systemd`) and v1 controllers it does not know. A container left there stays in its
/// parent's cgroup, and its cgroup namespace is rooted at the host's: a `cgroup2` or
/// `name=systemd` mount inside would show the whole host tree. On a pure v2 host: none.
fn unmanaged_hierarchies(mountinfo: &str) -> Vec<(PathBuf, String)> {
    let whole: Vec<_> = whole_hierarchies(mountinfo).collect();
    if !whole.iter().any(|e| e.fstype == "cgroup") {
        return Vec::new();
    }
    let mut found: Vec<(PathBuf, String)> = whole
        .iter()
        .filter(|e| {
            e.fstype == "cgroup2" || !e.super_options.split(',').any(|o| MANAGED_V1.contains(&o))
        })
        .map(|e| {
            (
                eci_sys::mountinfo::unescape(e.mount_point),
                if e.fstype == "cgroup2" {
                    String::new()
                } else {
                    e.super_options.to_string()
                },
            )
        })
        .collect();
    found.sort();
    found.dedup_by(|a, b| a.0 == b.0);
    found
}

/// This process's cgroup in a hierarchy, from /proc/self/cgroup: the v2 line (`0::/…`) for an
/// empty `options`, else the v1 line whose controllers are all among the mount's options.
fn own_cgroup(proc_cgroup: &str, options: &str) -> Option<PathBuf> {
    let opts: Vec<&str> = options.split(',').collect();
    eci_sys::cgroup::memberships(proc_cgroup).find_map(|m| {
        let matches = if options.is_empty() {
            m.controllers.is_empty()
        } else {
            !m.controllers.is_empty() && m.controllers.split(',').all(|c| opts.contains(&c))
        };
        matches.then(|| PathBuf::from(m.path))
    })
}

/// Where the create helper put itself so that the container it builds inherits it.
#[derive(Debug, Default)]
pub struct Placement {
    /// (hierarchy mount, the helper's cgroup there before)
    previous: Vec<(PathBuf, PathBuf)>,
    /// The container's directories made or joined.
    pub dirs: Vec<PathBuf>,
}

impl Placement {
    /// Put this process (the create helper, before libcontainer forks the container's first
    /// process) into `cgroups_path` of every hierarchy libcontainer does not manage. The
    /// container's processes inherit it, and the cgroup namespace they create is rooted there,
    /// as runc does on hybrid hosts.
    /// What was done is returned even when a step failed, so that it can be undone.
    pub fn enter(cgroups_path: &Path) -> (Placement, io::Result<()>) {
        let mut placement = Placement::default();
        let result = placement.enter_all(cgroups_path);
        (placement, result)
    }

    fn enter_all(&mut self, cgroups_path: &Path) -> io::Result<()> {
        let placement = self;
        let Some(relative) = relative_cgroup(cgroups_path) else {
            return Ok(());
        };
        let mountinfo = eci_sys::mountinfo::read_own()?;
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup")?;
        let pid = std::process::id().to_string();
        for (mount, options) in unmanaged_hierarchies(&mountinfo) {
            let Some(before) = own_cgroup(&proc_cgroup, &options) else {
                continue;
            };
            let dir = mount.join(relative);
            std::fs::create_dir_all(&dir)?;
            placement.dirs.push(dir.clone());
            placement.previous.push((
                mount.clone(),
                mount.join(before.strip_prefix("/").unwrap_or(&before)),
            ));
            std::fs::write(dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    /// Go back to where this process was; the container's processes stay.
    pub fn leave(&self) {
        let pid = std::process::id().to_string();
        for (mount, before) in &self.previous {
            if std::fs::write(before.join("cgroup.procs"), &pid).is_err() {
                let _ = std::fs::write(mount.join("cgroup.procs"), &pid);
            }
        }
    }
}

/// The spec's cgroups path below a hierarchy's root, or `None` for an empty path or one with
/// `..` or `.` in it (nothing is placed then: it could name a directory outside the container's).
fn relative_cgroup(cgroups_path: &Path) -> Option<&Path> {
    let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    let normal = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (!relative.as_os_str().is_empty() && normal).then_some(relative)
}

/// Put process `pid` (an exec'd process, before it joins the container's namespaces) into the
/// container's cgroup in every hierarchy libcontainer does not manage, where [`Placement`] put
/// the init: without it an exec stayed in the shim's cgroup there, outside the container's
/// cgroup namespace. A directory the init never had (a container created before the shim did
/// this) is skipped. Where the container's own directory refuses a process (cgroup v2's "no
/// internal processes", once a runtime inside enabled controllers for its children), the
/// process goes where the init `init` is now, as runc does.
pub fn place_exec(pid: i32, cgroups_path: &Path, init: i32) -> io::Result<()> {
    let Some(relative) = relative_cgroup(cgroups_path) else {
        return Ok(());
    };
    let mountinfo = eci_sys::mountinfo::read_own()?;
    let pid = pid.to_string();
    for (mount, options) in unmanaged_hierarchies(&mountinfo) {
        let dir = mount.join(relative);
        if !dir.is_dir() {
            continue;
        }
        let Err(first) = std::fs::write(dir.join("cgroup.procs"), &pid) else {
            continue;
        };
        let init_cgroup = std::fs::read_to_string(format!("/proc/{init}/cgroup"))
            .ok()
            .and_then(|text| own_cgroup(&text, &options))
            .filter(|p| {
                p.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )
                })
            });
        let Some(init_cgroup) = init_cgroup else {
            return Err(io::Error::new(
                first.kind(),
                format!("join {}: {first}", dir.display()),
            ));
        };
        let there = mount.join(init_cgroup.strip_prefix("/").unwrap_or(&init_cgroup));
        std::fs::write(there.join("cgroup.procs"), &pid).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "join {} ({first}) or the init's {}: {e}",
                    dir.display(),
                    there.display()
                ),
            )
        })?;
    }
    Ok(())
}

/// Remove the container's own directories that are left once libcontainer removed its own
/// (the hierarchies of [`Placement`]). Their processes must be gone; returns those that stay.
pub fn remove_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .filter(|d| d.is_dir() && std::fs::remove_dir(d).is_err())
        .cloned()
        .collect()
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
    fn unmanaged_hierarchies_of_a_hybrid_host() {
        let hybrid = "\
27 26 0:25 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 26 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
30 26 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/rdma rw - cgroup cgroup rw,rdma
40 30 0:26 /default/c1 /run/c1/memory rw - cgroup cgroup rw,memory";
        assert_eq!(
            unmanaged_hierarchies(hybrid),
            [
                ("/sys/fs/cgroup/rdma", "rw,rdma"),
                ("/sys/fs/cgroup/systemd", "rw,xattr,name=systemd"),
                ("/sys/fs/cgroup/unified", ""),
            ]
            .map(|(a, b)| (PathBuf::from(a), b.to_string()))
        );
        let pure_v2 = "27 26 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        assert!(unmanaged_hierarchies(pure_v2).is_empty());
    }

    #[test]
    fn own_cgroup_per_hierarchy() {
        let proc_cgroup = "12:rdma:/r\n9:name=systemd:/s\n4:memory:/m\n0::/u\n";
        assert_eq!(own_cgroup(proc_cgroup, ""), Some(PathBuf::from("/u")));
        assert_eq!(
            own_cgroup(proc_cgroup, "rw,xattr,name=systemd"),
            Some(PathBuf::from("/s"))
        );
        assert_eq!(
            own_cgroup(proc_cgroup, "rw,rdma"),
            Some(PathBuf::from("/r"))
        );
        assert_eq!(own_cgroup(proc_cgroup, "rw,net_cls"), None);
    }

    #[test]
    fn no_path_is_no_directory() {
        assert!(container_dirs(Path::new("/")).is_empty());
        assert!(container_dirs(Path::new("")).is_empty());
    }
}
