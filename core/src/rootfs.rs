//! The container's root file system from the mounts containerd hands to Create: an overlay
//! whose layers are all ID-mapped mounts of the container's block (an ID-mapped overlay itself
//! is refused by the kernel), created as the block's root. Image layers on disk are never
//! chowned, and the writable layer stores container-relative IDs (0..65535), so a container
//! owns its files whatever block it runs with next, and `docker commit` sees what it wrote.

use crate::idmap::{attach, idmapped_clone, idmapped_clone_single, IdmapUserNs, LockedFlags};
use crate::resolve::open_path;
use eci_policy::IdBlock;
use eci_sys::cvt::cvt;
use eci_sys::mount::openat2;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One mount of the rootfs as containerd describes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RootfsMount {
    /// Mount type (`overlay` or `bind`).
    pub typ: String,
    /// Mount source.
    pub source: String,
    /// Mount options as containerd gives them.
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
    #[error("rootfs: overlay {step}: {source}{}", if log.is_empty() { String::new() } else { format!(" (kernel: {log})") })]
    Overlay {
        step: String,
        log: String,
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

/// Mount `mounts` at `target`. Overlay layers are handed to the kernel as fds of detached
/// ID-mapped mounts (overlay keeps private clones), so nothing is left to detach afterwards.
pub fn mount_rootfs(
    mounts: &[RootfsMount],
    target: &Path,
    userns: &IdmapUserNs,
    block: IdBlock,
) -> Result<(), RootfsError> {
    match mounts {
        [] => Err(RootfsError::Unsupported("none".into())),
        [m] if m.typ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") => {
            let read_only = m.options.iter().any(|o| o == "ro");
            idmap_at(Path::new(&m.source), target, userns, read_only)
        }
        [m] if m.typ == "overlay" => mount_overlay(m, target, userns, block),
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
    userns: &IdmapUserNs,
    block: IdBlock,
) -> Result<(), RootfsError> {
    let layers = OverlayLayers::parse(&m.options);
    let fc = FsContext::overlay().map_err(io_err("fsopen overlay for", target))?;
    // A detached mount is dissolved when its last fd closes, and overlay clones its layers
    // only when the superblock is created: keep every tree open until then.
    let mut trees = Vec::new();
    for (key, dir) in &layers.lowers {
        let (fd, _) = open_path(dir).map_err(io_err("open", dir))?;
        let flags = LockedFlags {
            read_only: true,
            ..LockedFlags::default()
        };
        let tree =
            idmapped_clone(&fd, userns, flags).map_err(|source| RootfsError::NotIdmappable {
                path: dir.clone(),
                source,
            })?;
        fc.set_fd(key, &tree, dir)?;
        trees.push(tree);
    }
    if let Some((upper, work)) = &layers.upper_and_work {
        // The upper and work dir must be on one mount: ID-map the directory holding both, so
        // the files overlay writes there are stored with container-relative IDs (0..65535).
        let (parent, upper_rel, work_rel) = split_common_parent(upper, work).ok_or_else(|| {
            RootfsError::Unsupported(format!(
                "overlay with upperdir {} and workdir {} in different directories",
                upper.display(),
                work.display()
            ))
        })?;
        let (fd, _) = open_path(&parent).map_err(io_err("open", &parent))?;
        let plain_upper = open_beneath(&fd, &upper_rel).map_err(io_err("open", upper))?;
        own_upper_relative(&plain_upper, block).map_err(io_err("own", upper))?;
        let tree =
            idmapped_clone_single(&fd, userns, LockedFlags::default()).map_err(|source| {
                RootfsError::NotIdmappable {
                    path: parent.clone(),
                    source,
                }
            })?;
        let upper_fd = open_beneath(&tree, &upper_rel).map_err(io_err("open", upper))?;
        let work_fd = open_beneath(&tree, &work_rel).map_err(io_err("open", work))?;
        fc.set_fd("upperdir", &upper_fd, upper)?;
        fc.set_fd("workdir", &work_fd, work)?;
        trees.push(tree);
    }
    for opt in &layers.options {
        fc.set_option(opt)?;
    }
    {
        // Overlay keeps the credentials of the process that creates the superblock and makes
        // every file of its own (copy-up, whiteouts, its work dir) with them: as the block's
        // root, through the ID-mapped upper, they are stored as 0:0, as the container's are.
        let _creds = CreatorCreds::block_root(block)
            .map_err(io_err("become the block's root to mount", target))?;
        fc.create()?;
    }
    drop(trees);
    let mnt = fc.mount().map_err(io_err("fsmount overlay for", target))?;
    attach(&mnt, target).map_err(io_err("attach overlay at", target))
}

/// Store the upper dir's own owner as a container ID, as everything beneath it is stored.
/// containerd's overlay snapshotter chowns a new upper dir to the pod's root *host* ID when the
/// pod has a user namespace of its own (Kubernetes' `hostUsers: false`: the snapshot label
/// `containerd.io/snapshot/uidmapping`), for runtimes that mount the upper plain. Seen through
/// ECI's ID-mapped upper that host ID has no mapping (the mapping covers on-disk 0..65535): the
/// rootfs would show `/` as 65534, and the block's root — overlay's creator credentials — holds
/// no capability over an unmapped owner, so creating anything in `/` (a copy-up of `/etc` for
/// the resolv.conf mount point) is EPERM. The dir is the container's own and empty at create,
/// so this is one chown of one inode, through the fd just checked.
fn own_upper_relative(upper: &OwnedFd, block: IdBlock) -> io::Result<()> {
    let st = nix::sys::stat::fstat(upper.as_raw_fd())?;
    let (uid, gid) = (block.container_id(st.st_uid), block.container_id(st.st_gid));
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    // SAFETY: fchownat on our own O_PATH fd with an empty path (AT_EMPTY_PATH); -1 (u32::MAX)
    // leaves an ID unchanged.
    cvt(unsafe {
        libc::fchownat(
            upper.as_raw_fd(),
            c"".as_ptr(),
            uid.unwrap_or(u32::MAX),
            gid.unwrap_or(u32::MAX),
            libc::AT_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// An overlay mount's options, split into the directories ECI ID-maps and the rest.
#[derive(Debug, Default, PartialEq, Eq)]
struct OverlayLayers {
    /// (`lowerdir+` or `datadir+`, directory), top layer first.
    lowers: Vec<(&'static str, PathBuf)>,
    upper_and_work: Option<(PathBuf, PathBuf)>,
    options: Vec<String>,
}

impl OverlayLayers {
    fn parse(options: &[String]) -> Self {
        let mut layers = OverlayLayers::default();
        let (mut upper, mut work) = (None, None);
        for opt in options {
            if let Some(l) = opt.strip_prefix("lowerdir=") {
                // `a:b::c` names data-only layers after the `::`.
                let (regular, data) = l.split_once("::").unwrap_or((l, ""));
                for (key, list) in [("lowerdir+", regular), ("datadir+", data)] {
                    layers.lowers.extend(
                        list.split(':')
                            .filter(|p| !p.is_empty())
                            .map(|p| (key, PathBuf::from(p))),
                    );
                }
            } else if let Some(l) = opt.strip_prefix("lowerdir+=") {
                layers.lowers.push(("lowerdir+", PathBuf::from(l)));
            } else if let Some(l) = opt.strip_prefix("datadir+=") {
                layers.lowers.push(("datadir+", PathBuf::from(l)));
            } else if let Some(u) = opt.strip_prefix("upperdir=") {
                upper = Some(PathBuf::from(u));
            } else if let Some(w) = opt.strip_prefix("workdir=") {
                work = Some(PathBuf::from(w));
            } else if opt.starts_with("uidmap=") || opt.starts_with("gidmap=") {
                // containerd 2's ID-mapped layers for a pod with hostUsers: false (its mount
                // code maps them itself): every layer here is mapped with the container's block.
                continue;
            } else {
                layers.options.push(opt.clone());
            }
        }
        layers.upper_and_work = upper.zip(work);
        layers
    }
}

/// The deepest directory holding both `upper` and `work`, and each relative to it.
fn split_common_parent(upper: &Path, work: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    use std::path::Component;
    let plain = |p: &Path| {
        p.is_absolute()
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    };
    if !plain(upper) || !plain(work) {
        return None;
    }
    let common: PathBuf = upper
        .components()
        .zip(work.components())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    let upper_rel = upper.strip_prefix(&common).ok()?.to_path_buf();
    let work_rel = work.strip_prefix(&common).ok()?.to_path_buf();
    if upper_rel.as_os_str().is_empty() || work_rel.as_os_str().is_empty() {
        return None;
    }
    Some((common, upper_rel, work_rel))
}

/// Open a directory inside a detached mount, never leaving it.
fn open_beneath(tree: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let rel = CString::new(rel.as_os_str().as_encoded_bytes())?;
    Ok(openat2(
        tree.as_fd(),
        &rel,
        libc::O_PATH | libc::O_DIRECTORY,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_XDEV | libc::RESOLVE_NO_MAGICLINKS,
    )?)
}

/// An overlay superblock being configured (`fsopen`): layers are handed over as fds of
/// detached ID-mapped mounts, so nothing is staged on a path. Its errors carry what the
/// kernel logged on the context.
struct FsContext {
    context: eci_sys::mount::FsContext,
}

impl FsContext {
    fn overlay() -> io::Result<Self> {
        Ok(FsContext {
            context: eci_sys::mount::FsContext::open(c"overlay")?,
        })
    }

    fn set_fd(&self, key: &str, fd: &OwnedFd, path: &Path) -> Result<(), RootfsError> {
        CString::new(key)
            .map_err(io::Error::from)
            .and_then(|k| Ok(self.context.set_fd(&k, fd.as_fd())?))
            .map_err(|source| self.failed(format!("{key} {}", path.display()), source))
    }

    /// A mount option as containerd writes it: `key=value` or a flag.
    fn set_option(&self, opt: &str) -> Result<(), RootfsError> {
        let set = || -> io::Result<()> {
            match opt.split_once('=') {
                Some((key, value)) => {
                    let (key, value) = (CString::new(key)?, CString::new(value)?);
                    Ok(self.context.set_string(&key, &value)?)
                }
                None => Ok(self.context.set_flag(&CString::new(opt)?)?),
            }
        };
        set().map_err(|source| self.failed(format!("option {opt}"), source))
    }

    fn create(&self) -> Result<(), RootfsError> {
        self.context
            .create()
            .map_err(|source| self.failed("create".into(), source.into()))
    }

    fn mount(self) -> io::Result<OwnedFd> {
        Ok(self.context.mount(0)?)
    }

    /// The error with what the kernel logged on the context (overlay says why it refused).
    fn failed(&self, step: String, source: io::Error) -> RootfsError {
        RootfsError::Overlay {
            step,
            log: self.context.messages().join("; "),
            source,
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// This thread's fsuid/fsgid set to the block's root until dropped. Setting a nonzero fsuid
/// clears the file capabilities (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER …) from the effective
/// set; overlay needs them to copy files up with their owners, so they are raised again.
struct CreatorCreds {
    fsuid: u32,
    fsgid: u32,
    caps: [CapData; 2],
}

impl CreatorCreds {
    fn block_root(block: IdBlock) -> io::Result<Self> {
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut caps = [CapData::default(); 2];
        // SAFETY: capget of this thread into a correctly sized two-element array.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                caps.as_mut_ptr(),
            )
        })?;
        // SAFETY: setfsgid/setfsuid only change this thread's credentials; an ID of -1 is
        // invalid and returns the current one unchanged, which checks that the change held.
        let saved = unsafe {
            let fsgid = libc::setfsgid(block.first).cast_unsigned();
            let fsuid = libc::setfsuid(block.first).cast_unsigned();
            CreatorCreds { fsuid, fsgid, caps }
        };
        // SAFETY: as above; -1 only reads.
        let (uid, gid) = unsafe {
            (
                libc::setfsuid(u32::MAX).cast_unsigned(),
                libc::setfsgid(u32::MAX).cast_unsigned(),
            )
        };
        if (uid, gid) != (block.first, block.first) {
            return Err(io::Error::other(format!(
                "setfsuid/setfsgid to {} did not take effect (the shim needs CAP_SETUID and CAP_SETGID)",
                block.first
            )));
        }
        let mut raised = caps;
        for c in &mut raised {
            c.effective = c.permitted;
        }
        set_caps(&raised)?;
        Ok(saved)
    }
}

fn set_caps(caps: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset of this thread from a correctly sized two-element array.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            caps.as_ptr(),
        )
    })?;
    Ok(())
}

impl Drop for CreatorCreds {
    fn drop(&mut self) {
        // SAFETY: restoring this thread's own fsuid/fsgid.
        unsafe {
            libc::setfsuid(self.fsuid);
            libc::setfsgid(self.fsgid);
        }
        let _ = set_caps(&self.caps);
    }
}

/// A rootfs the engine mounted itself before Create, as dockerd 20.10 does (its overlay2
/// graph driver hands containerd a bundle whose root is an overlay mount and no rootfs mounts).
/// The kernel cannot ID-map an overlay mount, so the same layers are described again to be
/// mounted the way ECI mounts any overlay: ID-mapped lower layers, the engine's upper dir, and a
/// work dir of ECI's own beside it (the engine's mount keeps its work dir; two overlays may share
/// an upper dir with `index=off`, and only ECI's is used by the container).
pub fn premounted_overlay(root: &Path) -> Result<Option<RootfsMount>, RootfsError> {
    let root = fs::canonicalize(root).map_err(io_err("resolve", root))?;
    let mountinfo = eci_sys::mountinfo::read_own()
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

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// A bind source on an overlay, as containerd 2.1+ gives a Kubernetes image volume: it mounts
/// the image's snapshot as an overlay on the host (`STATE/io.containerd.grpc.v1.cri/
/// image-volumes/POD/IMAGE`) and hands the container a bind of it, or of a directory in it (the
/// volume's subPath). The kernel cannot ID-map an overlay, so the same image layers are mounted
/// again at `at` the way ECI mounts a rootfs — every lower layer ID-mapped with the container's
/// block, so image files keep their owners — read-only and without containerd's upper layer
/// (an image volume is read-only; containerd's upper is empty). Returns the directory in it that
/// `source` (an O_PATH fd, at `canonical`) stands for, or `None` when `source` is on no overlay
/// or on one that is not an image volume.
pub fn idmapped_overlay_view(
    source: &OwnedFd,
    canonical: &Path,
    at: &Path,
    userns: &IdmapUserNs,
    block: IdBlock,
) -> Result<Option<PathBuf>, RootfsError> {
    let fs =
        nix::sys::statfs::fstatfs(source).map_err(|e| io_err("statfs", canonical)(e.into()))?;
    if fs.filesystem_type().0 as i64 != OVERLAYFS_SUPER_MAGIC {
        return Ok(None);
    }
    // The mount the fd is on, by its ID, and where in its file system the fd sits.
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", source.as_raw_fd()))
        .map_err(io_err("read fdinfo of", canonical))?;
    let mnt_id = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mountinfo = eci_sys::mountinfo::read_own()
        .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
    let unsupported = |why: &str| {
        RootfsError::Unsupported(format!(
            "overlay bind source {} ({why}): ECI can re-mount only an overlay of image layers",
            canonical.display()
        ))
    };
    let entry = eci_sys::mountinfo::entries(&mountinfo)
        .find(|e| Some(e.id) == mnt_id)
        .ok_or_else(|| unsupported("its mount is not in this mount namespace"))?;
    let mount_point = eci_sys::mountinfo::unescape(entry.mount_point);
    // Only containerd's image volumes: any other overlay (an engine's container rootfs, one an
    // administrator mounted) has an upper layer whose files this view would leave out, so it
    // stays refused as a file system the kernel cannot ID-map.
    if !is_image_volume_mount(&mount_point) {
        return Ok(None);
    }
    let in_mount = canonical
        .strip_prefix(&mount_point)
        .map_err(|_| unsupported("not beneath its mount point"))?;
    let in_fs = eci_sys::mountinfo::unescape(entry.root)
        .join(in_mount)
        .strip_prefix("/")
        .map(Path::to_path_buf)
        .map_err(|_| unsupported("a mount root that is not absolute"))?;
    let options: Vec<String> = entry.super_options.split(',').map(str::to_string).collect();
    let layers = OverlayLayers::parse(&options);
    if layers.lowers.iter().any(|(k, _)| *k != "lowerdir+") {
        return Err(unsupported("data-only layers"));
    }
    match layers.lowers.as_slice() {
        [] => return Err(unsupported("no lower layers")),
        // One image layer: an ID-mapped bind of it is the same view.
        [("lowerdir+", dir)] => idmap_at(dir, at, userns, true)?,
        lowers => {
            let view = RootfsMount {
                typ: "overlay".into(),
                source: "overlay".into(),
                options: vec![format!(
                    "lowerdir={}",
                    lowers
                        .iter()
                        .map(|(_, d)| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                )],
            };
            mount_overlay(&view, at, userns, block)?;
        }
    }
    Ok(Some(at.join(in_fs)))
}

/// Whether `mount_point` is where containerd's CRI mounts an image volume:
/// `…/io.containerd.grpc.v1.cri/image-volumes/POD/IMAGE`.
fn is_image_volume_mount(mount_point: &Path) -> bool {
    let names: Vec<_> = mount_point.iter().rev().take(4).collect();
    matches!(names.as_slice(), [_, _, v, c] if *v == "image-volumes" && *c == "io.containerd.grpc.v1.cri")
}

/// The super options of the overlay mounted last at `root`, from mountinfo text.
fn overlay_options_at<'a>(mountinfo: &'a str, root: &Path) -> Option<&'a str> {
    let root = root.to_str()?;
    eci_sys::mountinfo::entries(mountinfo)
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
    {
        // As the block's root, as overlay itself writes: host root has no ID in the ID-mapped
        // upper layer (EOVERFLOW), the block's root is stored there as 0.
        let _creds = CreatorCreds::block_root(IdBlock { first: owner }).map_err(io_err(
            "take the container root's file credentials for",
            rootfs,
        ))?;
        for (dest, dir) in mount_points {
            make_mount_point(&root, dest, *dir, owner)
                .map_err(io_err("create mount point", dest))?;
        }
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
    Ok(openat2(
        root.as_fd(),
        &c,
        libc::O_PATH,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )?)
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

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlay_options_split_into_layers_and_the_rest() {
        let layers = OverlayLayers::parse(&strings(&[
            "index=off",
            "workdir=/s/2/work",
            "upperdir=/s/2/fs",
            "lowerdir=/s/1/fs:/s/0/fs::/d/0",
            "volatile",
        ]));
        assert_eq!(
            layers.lowers,
            vec![
                ("lowerdir+", PathBuf::from("/s/1/fs")),
                ("lowerdir+", PathBuf::from("/s/0/fs")),
                ("datadir+", PathBuf::from("/d/0")),
            ]
        );
        assert_eq!(
            layers.upper_and_work,
            Some((PathBuf::from("/s/2/fs"), PathBuf::from("/s/2/work")))
        );
        assert_eq!(layers.options, strings(&["index=off", "volatile"]));

        let view = OverlayLayers::parse(&strings(&["lowerdir=/a:/b"]));
        assert_eq!(view.upper_and_work, None, "a read-only view has no upper");
        assert_eq!(view.lowers.len(), 2);
    }

    #[test]
    fn upper_and_work_are_mapped_through_their_common_parent() {
        assert_eq!(
            split_common_parent(Path::new("/s/2/fs"), Path::new("/s/2/work")),
            Some((
                PathBuf::from("/s/2"),
                PathBuf::from("fs"),
                PathBuf::from("work")
            ))
        );
        assert_eq!(
            split_common_parent(Path::new("/a/x/diff"), Path::new("/a/y/work")),
            Some((
                PathBuf::from("/a"),
                PathBuf::from("x/diff"),
                PathBuf::from("y/work")
            ))
        );
        for (upper, work) in [
            ("/s/fs", "/s/fs"),
            ("s/fs", "s/work"),
            ("/s/../fs", "/s/work"),
            ("/s/fs", "/s/fs/work"),
        ] {
            assert_eq!(
                split_common_parent(Path::new(upper), Path::new(work)),
                None,
                "{upper} {work}"
            );
        }
    }

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
    fn only_containerds_image_volume_overlays_are_viewed() {
        let state = "/run/containerd/io.containerd.grpc.v1.cri";
        assert!(is_image_volume_mount(Path::new(&format!(
            "{state}/image-volumes/pod/abc"
        ))));
        for other in [
            format!("{state}/image-volumes/pod"),
            format!("{state}/image-volumes/pod/abc/sub"),
            format!("{state}/sandboxes/pod/abc"),
            "/var/lib/docker/overlay2/abc/merged".to_string(),
            "/srv/image-volumes/pod/abc".to_string(),
        ] {
            assert!(!is_image_volume_mount(Path::new(&other)), "{other}");
        }
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
