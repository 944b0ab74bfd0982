//! The container's root file system from the mounts containerd hands to Create: overlay with
//! ID-mapped lower layers (an ID-mapped overlay itself is refused by the kernel), and an upper
//! and work dir owned by the block's first ID. Image layers on disk are never chowned.

use crate::idmap::{attach, idmapped_clone, IdmapUserNs, LockedFlags};
use crate::resolve::open_path;
use eci_policy::IdBlock;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chown, Gid, Uid};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One mount of the rootfs as containerd describes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RootfsMount {
    pub typ: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs mount type {0:?} is not supported by ECI: only overlay and bind rootfs mounts can be ID-mapped")]
    Unsupported(String),
    #[error("rootfs: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("rootfs: {path} cannot be ID-mapped ({source}); ECI never chowns image files, so this snapshotter's file system is not supported")]
    NotIdmappable { path: PathBuf, source: io::Error },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Mount `mounts` at `target`, staging ID-mapped layers under `staging`. The staging mounts
/// are detached again before returning: overlay keeps private clones of its layers.
pub fn mount_rootfs(
    mounts: &[RootfsMount],
    target: &Path,
    staging: &Path,
    userns: &IdmapUserNs,
    block: IdBlock,
) -> Result<(), RootfsError> {
    match mounts {
        [] => Err(RootfsError::Unsupported("none".into())),
        [m] if m.typ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") => {
            let read_only = m.options.iter().any(|o| o == "ro");
            idmap_at(Path::new(&m.source), target, userns, read_only)
        }
        [m] if m.typ == "overlay" => mount_overlay(m, target, staging, userns, block),
        [m, ..] => Err(RootfsError::Unsupported(m.typ.clone())),
    }
}

fn idmap_at(
    source: &Path,
    target: &Path,
    userns: &IdmapUserNs,
    read_only: bool,
) -> Result<(), RootfsError> {
    let (fd, _) = open_path(source).map_err(io_err("open", source))?;
    let flags = LockedFlags {
        read_only,
        ..LockedFlags::default()
    };
    let tree =
        idmapped_clone(&fd, userns, flags).map_err(|source_err| RootfsError::NotIdmappable {
            path: source.to_path_buf(),
            source: source_err,
        })?;
    attach(&tree, target).map_err(io_err("attach ID-mapped mount at", target))
}

fn mount_overlay(
    m: &RootfsMount,
    target: &Path,
    staging: &Path,
    userns: &IdmapUserNs,
    block: IdBlock,
) -> Result<(), RootfsError> {
    let mut lowers = Vec::new();
    let mut rest = Vec::new();
    let mut upper_and_work = Vec::new();
    for opt in &m.options {
        if let Some(l) = opt.strip_prefix("lowerdir=") {
            lowers.extend(l.split(':').map(PathBuf::from));
        } else {
            if let Some(dir) = opt
                .strip_prefix("upperdir=")
                .or_else(|| opt.strip_prefix("workdir="))
            {
                upper_and_work.push(PathBuf::from(dir));
            }
            rest.push(opt.clone());
        }
    }
    fs::create_dir_all(staging).map_err(io_err("create", staging))?;
    let mut staged = Vec::new();
    let result = (|| {
        for (i, lower) in lowers.iter().enumerate() {
            let at = staging.join(i.to_string());
            fs::create_dir_all(&at).map_err(io_err("create", &at))?;
            idmap_at(lower, &at, userns, true)?;
            staged.push(at);
        }
        // Empty at create, so this is O(1): container root owns what it writes.
        for dir in &upper_and_work {
            chown_shallow(dir, block).map_err(io_err("chown", dir))?;
        }
        let lowerdir = staged
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut data = vec![format!("lowerdir={lowerdir}")];
        data.extend(rest.iter().cloned());
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.join(",").as_str()),
        )
        .map_err(|e| io_err("mount overlay at", target)(e.into()))
    })();
    for at in staged.iter().rev() {
        let _ = umount2(at, MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(staging);
    result
}

fn chown_shallow(dir: &Path, block: IdBlock) -> io::Result<()> {
    let (uid, gid) = (Uid::from_raw(block.first), Gid::from_raw(block.first));
    chown(dir, Some(uid), Some(gid))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown(&entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// A rootfs the engine mounted itself before Create, as dockerd 20.10 does (its overlay2
/// graph driver hands containerd a bundle whose root is an overlay mount and no rootfs mounts).
/// The kernel cannot ID-map an overlay mount, so the same layers are described again to be
/// mounted the way ECI mounts any overlay: ID-mapped lower layers, the engine's upper dir, and a
/// work dir of ECI's own beside it (the engine's mount keeps its work dir; two overlays may share
/// an upper dir with `index=off`, and only ECI's is used by the container).
pub fn premounted_overlay(root: &Path) -> Result<Option<RootfsMount>, RootfsError> {
    let root = fs::canonicalize(root).map_err(io_err("resolve", root))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
    let Some(options) = overlay_options_at(&mountinfo, &root) else {
        return Ok(None);
    };
    // The engine may have mounted with paths relative to its layer store (docker does when the
    // absolute paths would not fit a page): that store holds `<id>/merged`.
    let store = root
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let absolute = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            store.join(p)
        }
    };
    let mut lowers = Vec::new();
    let mut upper = None;
    for opt in options.split(',') {
        if let Some(l) = opt.strip_prefix("lowerdir=") {
            lowers.extend(l.split(':').map(|p| absolute(p).display().to_string()));
        } else if let Some(u) = opt.strip_prefix("upperdir=") {
            upper = Some(absolute(u));
        }
    }
    let Some(upper) = upper.filter(|_| !lowers.is_empty()) else {
        return Err(RootfsError::Unsupported(
            "overlay mounted without upper or lower dirs".into(),
        ));
    };
    let work = upper.parent().unwrap_or(Path::new("/")).join("eci-work");
    fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    Ok(Some(RootfsMount {
        typ: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            format!("lowerdir={}", lowers.join(":")),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
            "index=off".into(),
        ],
    }))
}

/// The super options of the overlay mounted last at `root`, from mountinfo text.
fn overlay_options_at<'a>(mountinfo: &'a str, root: &Path) -> Option<&'a str> {
    let root = root.to_str()?;
    crate::mountinfo::entries(mountinfo)
        .rev()
        .find(|e| e.mount_point == root && e.fstype == "overlay")
        .map(|e| e.super_options)
}

/// Make a `--read-only` root file system read-only here, in the host's mount namespace, before
/// the container's is copied from it: the kernel then locks the flag in the copy
/// (MNT_LOCK_READONLY), and no bind, remount, mount_setattr or clone inside the container can
/// clear it. A read-only root made inside the container's own namespace (as libcontainer does)
/// is not locked. The mount points the container's mounts need on the root file system are
/// made first, owned by the container's root, as a runtime does before it remounts read-only.
/// `mount_points` are (destination in the container, whether it is a directory).
pub fn seal_read_only(
    rootfs: &Path,
    mount_points: &[(PathBuf, bool)],
    owner: u32,
) -> Result<(), RootfsError> {
    let root = open_dir(rootfs).map_err(io_err("open", rootfs))?;
    for (dest, dir) in mount_points {
        make_mount_point(&root, dest, *dir, owner).map_err(io_err("create mount point", dest))?;
    }
    mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| io_err("make read-only", rootfs)(e.into()))
}

/// The mount points of `destinations` (in mount order, with whether each is a directory) that
/// lie on the root file system itself: one inside an earlier mount is made in that mount.
pub fn mount_points_on_root(destinations: &[(PathBuf, bool)]) -> Vec<(PathBuf, bool)> {
    let mut on_root = Vec::new();
    for (i, (dest, dir)) in destinations.iter().enumerate() {
        let inside_earlier = destinations[..i]
            .iter()
            .any(|(earlier, _)| dest != earlier && dest.starts_with(earlier));
        if !inside_earlier && dest != Path::new("/") {
            on_root.push((dest.clone(), *dir));
        }
    }
    on_root
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: fresh fd from open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `path` resolved inside `root` as the container will (symlinks and `..` stay in it).
fn open_in_root(root: &OwnedFd, path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: open_how is plain data.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with our NUL-terminated path and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from openat2.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Make `dest` (and missing parents) inside `root`, owned by `owner`; what exists is left.
fn make_mount_point(root: &OwnedFd, dest: &Path, dir: bool, owner: u32) -> io::Result<()> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let parts: Vec<_> = rel.components().collect();
    let mut at = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        let parent = if at.as_os_str().is_empty() {
            open_in_root(root, Path::new("."))?
        } else {
            open_in_root(root, &at)?
        };
        at.push(part);
        match open_in_root(root, &at) {
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let name = part.as_os_str();
        let last = i + 1 == parts.len();
        let made = if last && !dir {
            nix::fcntl::openat(
                Some(parent.as_raw_fd()),
                name,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_WRONLY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            // SAFETY: fresh fd from openat, closed at once.
            .map(|fd| drop(unsafe { OwnedFd::from_raw_fd(fd) }))
        } else {
            nix::sys::stat::mkdirat(
                Some(parent.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o755),
            )
        };
        match made {
            Ok(()) => {}
            // A dangling symlink: the runtime reports it when it mounts there.
            Err(nix::errno::Errno::EEXIST) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        nix::unistd::fchownat(
            Some(parent.as_raw_fd()),
            name,
            Some(Uid::from_raw(owner)),
            Some(Gid::from_raw(owner)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

/// Unmount everything at `target` (the rootfs, possibly stacked).
pub fn unmount_all(target: &Path) {
    while umount2(target, MntFlags::MNT_DETACH).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mount_points_on_the_root_are_made_there() {
        let d = |p: &str, dir: bool| (PathBuf::from(p), dir);
        let dests = [
            d("/proc", true),
            d("/dev", true),
            d("/dev/pts", true),
            d("/etc/hosts", false),
            d("/proc/uptime", false),
            d("/data", true),
            d("/data", true),
            d("/", true),
        ];
        assert_eq!(
            mount_points_on_root(&dests),
            [
                d("/proc", true),
                d("/dev", true),
                d("/etc/hosts", false),
                d("/data", true),
                d("/data", true)
            ]
        );
    }

    #[test]
    fn the_last_overlay_at_the_root_is_found() {
        let info = "\
29 1 8:1 / / rw,relatime - ext4 /dev/vda rw
120 29 0:50 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=l/A:l/B,upperdir=abc/diff,workdir=abc/work
121 29 0:51 / /var/lib/docker/overlay2/abcd/merged rw - overlay overlay rw,lowerdir=/x,upperdir=/u,workdir=/w
";
        let root = Path::new("/var/lib/docker/overlay2/abc/merged");
        assert_eq!(
            overlay_options_at(info, root),
            Some("rw,lowerdir=l/A:l/B,upperdir=abc/diff,workdir=abc/work")
        );
        assert_eq!(
            overlay_options_at(info, Path::new("/")),
            None,
            "ext4, not overlay"
        );
        assert_eq!(overlay_options_at(info, Path::new("/var/lib/docker")), None);
    }
}
