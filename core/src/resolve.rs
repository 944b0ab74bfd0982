//! Resolve paths the way the kernel will, holding an O_PATH fd so that the file judged is the
//! file later mounted (no window between check and use), and measure what else a bind of it
//! brings along: the mounts beneath it, and other names (hard links) of restricted files.

use eci_policy::{BoundTree, FileId, FileKind, FsLocation, ResolvedPath, TreeSearch};
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, FileStat, Mode};
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Entries looked at, over all bound directories of one container, before a search for hard
/// links stops: about 10 ms of `lstat` on this host. A bigger tree is refused only while a
/// restricted file has a second name somewhere (see README, "Policy").
pub const TREE_SEARCH_LIMIT: u64 = 20_000;

/// The helper's mount table, read once per create.
pub struct Mounts {
    /// id, device, root, mount point, fstype
    entries: Vec<(u64, String, PathBuf, PathBuf, String)>,
}

impl Mounts {
    pub fn read() -> Mounts {
        let text = eci_sys::mountinfo::read_own().unwrap_or_default();
        Mounts {
            entries: eci_sys::mountinfo::entries(&text)
                .map(|e| {
                    (
                        e.id,
                        e.device.to_string(),
                        eci_sys::mountinfo::unescape(e.root),
                        eci_sys::mountinfo::unescape(e.mount_point),
                        e.fstype.to_string(),
                    )
                })
                .collect(),
        }
    }

    /// Where the file open as `fd` (whose path in this namespace is `canonical`) sits in its
    /// file system, found through the fd's own mount (`mnt_id` in its fdinfo).
    fn locate(&self, fd: &OwnedFd, canonical: &Path) -> Option<FsLocation> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
        let mnt_id: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))?
            .trim()
            .parse()
            .ok()?;
        let (_, device, root, mount_point, fstype) = self.entries.iter().find(|e| e.0 == mnt_id)?;
        let below = canonical.strip_prefix(mount_point).ok()?;
        Some(FsLocation {
            device: device.clone(),
            path: if below.as_os_str().is_empty() {
                root.clone()
            } else {
                root.join(below)
            },
            fstype: fstype.clone(),
        })
    }

    /// Mounts strictly beneath `dir`, which a bind of `dir` takes along (the shim binds
    /// recursively), with what each shows.
    pub fn beneath(&self, dir: &Path) -> Vec<(PathBuf, FsLocation)> {
        self.entries
            .iter()
            .filter(|e| e.3 != dir && e.3.starts_with(dir))
            .map(|(_, device, root, at, fstype)| {
                (
                    at.clone(),
                    FsLocation {
                        device: device.clone(),
                        path: root.clone(),
                        fstype: fstype.clone(),
                    },
                )
            })
            .collect()
    }
}

fn kind(st: &FileStat) -> FileKind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFSOCK => FileKind::Socket,
        _ => FileKind::Other,
    }
}

pub fn open_path(path: &Path) -> io::Result<(OwnedFd, ResolvedPath)> {
    open_located(path, None)
}

/// [`open_path`], and where the file sits in its file system when `mounts` is given.
pub fn open_located(path: &Path, mounts: Option<&Mounts>) -> io::Result<(OwnedFd, ResolvedPath)> {
    let raw = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: `open` just returned this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = fstat(fd.as_raw_fd())?;
    let canonical = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let location = mounts.and_then(|m| m.locate(&fd, &canonical));
    let resolved = ResolvedPath {
        requested: path.to_path_buf(),
        canonical,
        id: FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        kind: kind(&st),
        links: st.st_nlink,
        location,
    };
    Ok((fd, resolved))
}

pub fn file_id(path: &Path) -> io::Result<FileId> {
    let st = nix::sys::stat::stat(path)?;
    Ok(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

pub fn is_device(fd: &OwnedFd) -> bool {
    fstat(fd.as_raw_fd())
        .is_ok_and(|st| matches!(st.st_mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK))
}

pub fn is_dir(fd: &OwnedFd) -> bool {
    fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Resolve each existing path; missing ones are skipped (nothing there to protect yet).
pub fn resolve_existing(paths: &[PathBuf], mounts: &Mounts) -> Vec<ResolvedPath> {
    paths
        .iter()
        .filter_map(|p| open_located(p, Some(mounts)).ok().map(|(_, r)| r))
        .collect()
}

/// Look through the directory open as `dir` (shown as `shown` in messages) for sockets and
/// files with more than one name whose identity is in `wanted`, at most `budget` entries (which
/// is decreased by what was looked at). Symbolic links are not followed: in the container they
/// resolve inside its own root. Mounts beneath are entered, as the bind takes them along.
pub fn search_tree(
    dir: &OwnedFd,
    shown: &Path,
    wanted: &HashSet<FileId>,
    budget: &mut u64,
) -> (Vec<(PathBuf, FileId)>, TreeSearch) {
    let mut found = Vec::new();
    let mut looked = 0u64;
    let mut stack = vec![PathBuf::new()];
    let base = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(base.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            if *budget == 0 {
                return (found, TreeSearch::Stopped { entries: looked });
            }
            *budget -= 1;
            looked += 1;
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let path = rel.join(entry.file_name());
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if (ft.is_socket() || meta.nlink() > 1) && wanted.contains(&id) {
                found.push((shown.join(path), id));
            }
        }
    }
    (found, TreeSearch::Complete)
}

/// What a bind of the directory open as `fd` brings along, for the policy to judge.
pub fn bound_tree(
    fd: &OwnedFd,
    source: &ResolvedPath,
    mounts: &Mounts,
    linked_restricted: &HashSet<FileId>,
    budget: &mut u64,
) -> BoundTree {
    let mut tree = BoundTree {
        submounts: mounts.beneath(&source.canonical),
        ..BoundTree::default()
    };
    if !linked_restricted.is_empty() {
        (tree.linked, tree.search) = search_tree(fd, &source.requested, linked_restricted, budget);
    }
    tree
}
