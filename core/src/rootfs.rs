//! The container's root file system from the mounts containerd hands to Create: overlay with
//! ID-mapped lower layers (an ID-mapped overlay itself is refused by the kernel), and an upper
//! and work dir owned by the block's first ID. Image layers on disk are never chowned.

use crate::idmap::{attach, idmapped_clone, IdmapUserNs, LockedFlags};
use crate::resolve::open_path;
use eci_policy::IdBlock;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chown, Gid, Uid};
use std::fs;
use std::io;
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
        } else if opt.starts_with("uidmap=") || opt.starts_with("gidmap=") {
            // containerd 2's ID-mapped layers for a pod with hostUsers: false (its mount code
            // maps them itself); the layers are mapped below, with the container's block.
            continue;
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

/// Unmount everything at `target` (the rootfs, possibly stacked).
pub fn unmount_all(target: &Path) {
    while umount2(target, MntFlags::MNT_DETACH).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

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
