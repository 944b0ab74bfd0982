//! What the supervisor asks the agent to do, and what the agent knows about the container's
//! mounts. Shared by both sides of the socket.

use serde::{Deserialize, Serialize};

/// A mount's root as (device, inode): the same for every bind or clone of it, in every mount
/// namespace, so protection follows a mount through `unshare -m`, chroot and pivot_root.
pub type MountKey = (u64, u64);

/// Mount flags the kernel calls "locked" when it copies a namespace; the supervisor keeps them
/// set on every mount present at start.
pub const MS_RDONLY: u64 = 1;
pub const MS_NOSUID: u64 = 2;
pub const MS_NODEV: u64 = 4;
pub const MS_NOEXEC: u64 = 8;
pub const KEPT_FLAGS: u64 = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;

/// File systems that take nothing from their mounter's pid, net, ipc or cgroup namespace (only
/// its user namespace, which the agent is in): for these the agent is not handed those
/// namespaces, saving the supervisor four opens and the agent four checks per mount. Decided
/// on the supervisor's copy of the type, the one the agent mounts.
const NAMESPACE_FREE: &[&str] = &["tmpfs", "ramfs", "overlay", "devpts"];

/// Whether a new mount of `fstype` is made in the mounter's pid, net, ipc and cgroup
/// namespaces (procfs shows a pid namespace, sysfs a network namespace, mqueue an IPC one…).
pub fn joins_namespaces(fstype: Option<&str>) -> bool {
    !fstype.is_some_and(|t| NAMESPACE_FREE.contains(&t))
}

/// What the agent protects, computed when the container was created.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Protected {
    /// Mounts that may not be unmounted or moved away: /, /proc, /sys, the emulated files and
    /// the masked paths (EBUSY), with their mount IDs in the container's first mount namespace.
    pub pinned: Vec<(MountKey, u64)>,
    /// Inode of the container's first mount namespace. There, mount IDs tell a pinned mount
    /// from another mount of the same superblock (a second sysfs); in namespaces the container
    /// made later, every mount of a pinned root is pinned.
    pub mount_ns: u64,
    /// Every mount present at start, with the flags (of [`KEPT_FLAGS`]) it must keep.
    pub flags: Vec<(MountKey, u64)>,
    /// The emulated files: where they are bound (`/proc/uptime`) and the root of that bind.
    /// A procfs or sysfs the container mounts later gets them too.
    #[serde(default)]
    pub emulated: Vec<(String, MountKey)>,
    /// The container's root file system, as mounted at `/` when it started.
    #[serde(default)]
    pub root: Option<MountKey>,
    /// Every mount read-only at start, by file system and the directory of it the mount shows:
    /// a mount of a directory below one of these (a bind of a subdirectory, a clone) is just
    /// as read-only.
    #[serde(default)]
    pub read_only: Vec<ReadOnlyTree>,
}

/// A read-only mount present at start: its file system (`st_dev`) and the path, inside that
/// file system, of the directory it shows (mountinfo's fourth field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOnlyTree {
    pub dev: u64,
    pub root: String,
}

/// Whether `path` is `dir` or lies below it (whole components).
pub fn is_within(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    match path.strip_prefix(dir) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || dir.is_empty(),
        None => false,
    }
}

impl Protected {
    /// Whether a mount with root `key` may not be unmounted or moved. An emulated file's root
    /// is the shim's own FUSE inode: every mount of it, in every namespace and every copy of
    /// /proc (`mount --rbind`, a recursive clone), is pinned. Other pinned roots are told
    /// apart by mount ID in the first namespace (a second sysfs is the container's own).
    pub fn is_pinned(&self, key: MountKey, mount_id: u64, mount_ns: u64) -> bool {
        self.emulated.iter().any(|(_, k)| *k == key)
            || self
                .pinned
                .iter()
                .any(|(k, id)| *k == key && (mount_ns != self.mount_ns || *id == mount_id))
    }
    /// Whether a mount of file system `dev` showing its directory `root` lies within a mount
    /// that was read-only at start. `root` is None for a mount the caller's namespace does not
    /// list (a detached clone): then any read-only mount of that file system counts.
    pub fn within_read_only(&self, dev: u64, root: Option<&str>) -> bool {
        self.read_only.iter().any(|t| {
            t.dev == dev
                && match root {
                    Some(r) => is_within(r, &t.root),
                    None => true,
                }
        })
    }
    /// The kept flags a change to `key` would clear, if it is a mount present at start.
    pub fn cleared(&self, key: MountKey, new_flags: u64) -> u64 {
        self.flags
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, kept)| kept & !new_flags)
            .unwrap_or(0)
    }
}

/// One operation performed for a trapped process. Paths are the supervisor's copies of the
/// process's strings, read once: nothing is read from the process after the decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// A new file system (mount(2) without remount, bind, move or propagation flags), with
    /// the process's data page copied as bytes.
    Mount {
        source: Option<String>,
        target: String,
        fstype: Option<String>,
        flags: u64,
        data: Option<Vec<u8>>,
    },
    Umount {
        target: String,
        flags: i32,
    },
    Remount {
        target: String,
        flags: u64,
        data: Option<String>,
    },
    Move {
        source: String,
        target: String,
    },
    /// mount_setattr with the process's attr struct, copied.
    SetAttr {
        dirfd: bool,
        path: String,
        at_flags: u32,
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
    },
    /// A bind of one mount (mount(2) with MS_BIND, no MS_REC): the copy leaves the source's
    /// submounts behind, so a procfs or sysfs source is judged first.
    Bind {
        source: String,
        target: String,
        flags: u64,
    },
    /// move_mount; `*_dirfd` says whether a dirfd (passed along) is used rather than the cwd.
    MoveMount {
        from_dirfd: bool,
        from_path: String,
        to_dirfd: bool,
        to_path: String,
        flags: u32,
    },
}

/// One operation the supervisor asks of the agent, sent with the caller's mount namespace,
/// root and cwd (and, as the operation needs, its other namespaces and fds) as fds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub op: Op,
    /// The trapped thread (host tid): what `/proc/self` in its paths means.
    #[serde(default)]
    pub caller: i32,
}

/// What the supervisor sends the agent on their channel: the protected facts once, as the
/// first message, then requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToAgent {
    /// What the agent protects (measured from the init before it ran anything).
    Protect(Protected),
    /// Perform an operation for a trapped process.
    Perform(Request),
}

/// The agent's answer to one request. A `Done` of an `open_tree` clone carries the new mount's
/// fd with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Performed.
    Done,
    /// Refused or failed, with the errno the trapped call returns.
    Failed { errno: i32 },
}

/// The fd number in a path naming one of the caller's own fds through procfs
/// (`/proc/self/fd/N`, `/proc/thread-self/fd/N`): how runc, crun and youki name a mount target
/// they opened and checked first. The agent is not in the caller's pid namespace, so resolved
/// as given that path would name nothing, or the agent's own fds.
pub fn own_fd_link(path: &str) -> Option<i32> {
    let n = path
        .strip_prefix("/proc/self/fd/")
        .or_else(|| path.strip_prefix("/proc/thread-self/fd/"))?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// `uid=N`/`gid=N` options whose N is unmapped in the user namespace of `uid_map`/`gid_map`
/// (their text, as /proc/self/uid_map shows them there) but is the host ID of one of its IDs,
/// turned into that ID; everything else kept as is.
pub fn owner_ids_inside(data: &str, uid_map: &str, gid_map: &str) -> String {
    let inside = |map: &str, id: u64| -> Option<u64> {
        let ranges: Vec<(u64, u64, u64)> = map
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(|v| v.parse::<u64>().ok());
                Some((f.next()??, f.next()??, f.next()??))
            })
            .collect();
        if ranges.iter().any(|(i, _, n)| (*i..i + n).contains(&id)) {
            return None;
        }
        ranges
            .iter()
            .find(|(_, o, n)| (*o..o + n).contains(&id))
            .map(|(i, o, _)| i + (id - o))
    };
    data.split(',')
        .map(|option| {
            let translated =
                [("uid=", uid_map), ("gid=", gid_map)]
                    .iter()
                    .find_map(|(prefix, map)| {
                        let id = option.strip_prefix(prefix)?.parse::<u64>().ok()?;
                        Some(format!("{prefix}{}", inside(map, id)?))
                    });
            translated.unwrap_or_else(|| option.to_string())
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What follows `/proc/self/` or `/proc/thread-self/` in a path: those name the caller, which
/// the agent reaches through the host's /proc by its tid (it is not in the caller's pid
/// namespace, where `self` would name nothing).
pub fn own_proc_path(path: &str) -> Option<&str> {
    path.strip_prefix("/proc/self/")
        .or_else(|| path.strip_prefix("/proc/thread-self/"))
        .filter(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_fd_link_of_the_caller_is_its_fd() {
        assert_eq!(own_fd_link("/proc/self/fd/7"), Some(7));
        assert_eq!(own_fd_link("/proc/thread-self/fd/12"), Some(12));
        for p in [
            "/proc/self/fd/",
            "/proc/self/fd/7/",
            "/proc/self/fd/7/..",
            "/proc/self/fd/-1",
            "/proc/self/fd/+7",
            "/proc/self/root/etc",
            "/proc/1/fd/7",
            "proc/self/fd/7",
            "/proc/self/fd/99999999999",
        ] {
            assert_eq!(own_fd_link(p), None, "{p}");
        }
    }

    #[test]
    fn within_is_by_whole_components() {
        assert!(is_within("/sys/kernel", "/sys"));
        assert!(is_within("/sys", "/sys"));
        assert!(is_within("/etc", "/"));
        assert!(is_within("/", "/"));
        assert!(!is_within("/sysrq-trigger", "/sys"));
        assert!(!is_within("/", "/sys"));
        let p = Protected {
            read_only: vec![ReadOnlyTree {
                dev: 7,
                root: "/sys".into(),
            }],
            ..Default::default()
        };
        assert!(p.within_read_only(7, Some("/sys/kernel")));
        assert!(!p.within_read_only(7, Some("/self")));
        assert!(p.within_read_only(7, None));
        assert!(!p.within_read_only(8, None));
    }

    #[test]
    fn owner_ids_of_the_block_become_the_containers() {
        let map = "         0     100000      65536\n";
        assert_eq!(
            owner_ids_inside("rw,uid=100000,gid=100005,mode=755", map, map),
            "rw,uid=0,gid=5,mode=755"
        );
        assert_eq!(
            owner_ids_inside("uid=1000,gid=99999", map, map),
            "uid=1000,gid=99999"
        );
        assert_eq!(owner_ids_inside("", map, map), "");
    }

    #[test]
    fn own_proc_paths_are_the_callers() {
        assert_eq!(own_proc_path("/proc/self/ns/net"), Some("ns/net"));
        assert_eq!(own_proc_path("/proc/thread-self/fd/3"), Some("fd/3"));
        assert_eq!(own_proc_path("/proc/self/"), None);
        assert_eq!(own_proc_path("/proc/1/ns/net"), None);
        assert_eq!(own_proc_path("proc/self/ns/net"), None);
    }

    #[test]
    fn only_listed_file_systems_skip_the_mounters_namespaces() {
        assert!(!joins_namespaces(Some("tmpfs")));
        assert!(!joins_namespaces(Some("overlay")));
        for t in [
            Some("proc"),
            Some("sysfs"),
            Some("mqueue"),
            Some("cgroup2"),
            Some("tmpfs2"),
            None,
        ] {
            assert!(joins_namespaces(t), "{t:?}");
        }
    }
}
