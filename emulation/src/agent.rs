//! The mount agent: a small process (this binary, `agent` sub-command) inside the container's
//! user namespace, which performs the mount operations the supervisor allowed, on behalf of the
//! trapped process: in its mount namespace, under its root and working directory, with the
//! supervisor's copies of its arguments. Each check resolves a path to an O_PATH fd and the
//! operation then uses that same fd, so nothing can change between the check and the use.

use crate::mountops::{
    own_fd_link, own_proc_path, Answer, MountKey, Op, Protected, ToAgent, KEPT_FLAGS,
};
use crate::newmount::{Joined, NewMount, PROC_SUPER_MAGIC, SYSFS_MAGIC};
use eci_sys::channel::Channel;
use eci_sys::mount::{
    move_mount, set_attr, MountAttr, AT_RECURSIVE, MOUNT_ATTR_IDMAP, MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_F_SYMLINKS, MOVE_MOUNT_T_EMPTY_PATH, MOVE_MOUNT_T_SYMLINKS,
};
use eci_sys::mountinfo;
use eci_sys::statx::{is_mount_root, mount_id};
use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::{fstat, Mode};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A copy of one mount (a non-recursive bind or clone) of a directory of a procfs or sysfs
/// would leave the emulated files and masks mounted below it behind and show what they hide:
/// EINVAL, as the kernel answers for a mount with locked submounts. A single file has nothing
/// mounted below it.
fn refuse_partial_copy(source: &OwnedFd) -> Result<(), Errno> {
    let magic = nix::sys::statfs::fstatfs(source)?.filesystem_type().0 as i64;
    let dir = fstat(source.as_raw_fd())?.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if dir && (magic == PROC_SUPER_MAGIC || magic == SYSFS_MAGIC) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// `containerd-shim-eci-v2 agent INIT_PID`, with its channel to the supervisor as fd 0: the
/// protected facts come first on it, then the requests.
pub fn main(args: &[String]) -> i32 {
    let Some(pid) = args.first() else {
        eprintln!("usage: agent INIT_PID (with the supervisor's channel as fd 0)");
        return 2;
    };
    // Not dumpable, ever: it enters the container's namespaces, and a child it forks into the
    // container's pid namespace must not be ptraceable or expose its fds there.
    // SAFETY: prctl(PR_SET_DUMPABLE) has no pointer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // Nothing inherited from the shim beyond the socket (fd 0) survives an exec.
    // SAFETY: close_range takes no pointers; CLOSE_RANGE_CLOEXEC only sets a flag on fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // SAFETY: fd 0 is the channel the supervisor gave us and nothing else owns it.
    let Ok(channel) = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(0) }) else {
        return 2;
    };
    let Ok((ToAgent::Protect(protected), _)) = channel.recv::<ToAgent>() else {
        return 2;
    };
    let host_proc = match open(
        "/proc",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        // SAFETY: fresh fd from open.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(_) => return 1,
    };
    // Capabilities in the container's user namespace, never more.
    let joined = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|_| Errno::ESRCH)
        .and_then(|f| setns(f.as_fd(), CloneFlags::CLONE_NEWUSER));
    if joined.is_err() {
        return 1;
    }
    // And the container's root as owner of what it creates (a tmpfs root, say), not the host
    // root, which is unmapped in there.
    let root = nix::unistd::Uid::from_raw(0);
    let root_group = nix::unistd::Gid::from_raw(0);
    let _ = nix::unistd::setgroups(&[]);
    if nix::unistd::setresgid(root_group, root_group, root_group).is_err()
        || nix::unistd::setresuid(root, root, root).is_err()
    {
        return 1;
    }
    // The credential change resets dumpability to the host's suid_dumpable: set it again.
    // SAFETY: prctl(PR_SET_DUMPABLE) has no pointer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    serve(&channel, &host_proc, &protected);
    0
}

fn serve(channel: &Channel, host_proc: &OwnedFd, protected: &Protected) {
    let mut joined_ns = None;
    let mut joined = Joined::default();
    let mut protected = protected.clone();
    loop {
        let answer = match channel.recv::<ToAgent>() {
            Ok((ToAgent::Perform(req), fds)) if fds.len() >= 3 => perform(
                &req.op,
                req.caller,
                &fds,
                host_proc,
                &mut protected,
                &mut joined_ns,
                &mut joined,
            ),
            Ok(_) => Err(Errno::EINVAL),
            // The supervisor hung up, or the channel failed: the agent's work is over.
            Err(e) if e.kind() != std::io::ErrorKind::InvalidData => return,
            Err(_) => Err(Errno::EINVAL),
        };
        let sent = match answer {
            Ok(fd) => channel.send(
                &Answer::Done,
                &fd.iter().map(AsFd::as_fd).collect::<Vec<_>>(),
            ),
            Err(e) => channel.send(&Answer::Failed { errno: e as i32 }, &[]),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The agent's mountinfo (the namespace it acts in), through the host's /proc.
fn read_mountinfo(host_proc: &OwnedFd) -> Result<String, Errno> {
    let fd = openat(
        Some(host_proc.as_raw_fd()),
        "self/mountinfo",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: fresh fd from openat, owned by the File from here.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(|_| Errno::EIO)?;
    Ok(text)
}

/// A close-on-exec duplicate of `fd` (a plain dup would be inherited across exec).
fn dup_cloexec(fd: RawFd) -> Result<OwnedFd, Errno> {
    let d = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0))?;
    // SAFETY: fresh fd from F_DUPFD_CLOEXEC, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

/// The parent of mount `id` in the agent's mount namespace, from its mountinfo.
fn parent_mount(host_proc: &OwnedFd, id: u64) -> Result<Option<u64>, Errno> {
    let text = read_mountinfo(host_proc)?;
    Ok(mountinfo::find(&text, id).map(|e| e.parent))
}

/// Whether `target` is the container's root file system left beside a root the caller made
/// itself: pivot_root's old root, which a runtime inside the container (runc, crun) unmounts
/// next. Its unmount reveals only a directory of the caller's new root, as the kernel agrees
/// (pivot_root moves a mount lock from the old root to the new one).
fn is_old_root(
    target: &OwnedFd,
    caller_root: &OwnedFd,
    host_proc: &OwnedFd,
    protected: &Protected,
    mount_ns: u64,
) -> Result<bool, Errno> {
    if protected.root != Some(key(target)?) || !is_mount_root(caller_root)? {
        return Ok(false);
    }
    let root_mount = mount_id(caller_root)?;
    if protected.is_pinned(key(caller_root)?, root_mount, mount_ns) {
        return Ok(false);
    }
    Ok(parent_mount(host_proc, mount_id(target)?)? == Some(root_mount))
}

/// Whether making the read-only mount `fd` is on writable would make writable a directory that
/// was read-only at start: the mount is a bind or clone of (a directory below) a mount that
/// was read-only then. Writable mounts (nothing to clear) pass.
fn makes_writable(fd: &OwnedFd, host_proc: &OwnedFd, protected: &Protected) -> Result<bool, Errno> {
    if !nix::sys::statvfs::fstatvfs(fd)?
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    {
        return Ok(false);
    }
    let id = mount_id(fd)?;
    Ok(match mount_source(host_proc, id)? {
        Some((dev, root)) => protected.within_read_only(dev, Some(&root)),
        // Not in the caller's namespace (a detached clone): judged by its file system alone.
        None => protected.within_read_only(fstat(fd.as_raw_fd())?.st_dev, None),
    })
}

/// Whether mount `id` is mounted on a procfs or sysfs, per the agent's mountinfo (the
/// caller's namespace); one it does not list (detached) counts as such.
fn over_proc_or_sys(host_proc: &OwnedFd, id: u64) -> Result<bool, Errno> {
    let text = read_mountinfo(host_proc)?;
    let Some(entry) = mountinfo::find(&text, id) else {
        return Ok(true);
    };
    Ok(match mountinfo::find(&text, entry.parent) {
        Some(parent) => parent.fstype == "proc" || parent.fstype == "sysfs",
        None => true,
    })
}

/// The file system (device) and the directory of it that mount `id` shows, from the agent's
/// mountinfo (the caller's namespace).
fn mount_source(host_proc: &OwnedFd, id: u64) -> Result<Option<(u64, String)>, Errno> {
    let text = read_mountinfo(host_proc)?;
    Ok(mountinfo::find(&text, id).and_then(|e| {
        Some((
            e.dev()?,
            mountinfo::unescape(e.root).to_string_lossy().into_owned(),
        ))
    }))
}

/// Remount options with `uid=`/`gid=` given as host IDs of the container's block (what
/// /proc/mounts shows for a file system the container owns, and busybox's one-argument
/// remount replays) turned into the container's own IDs: the kernel parses them in the
/// container's user namespace, where the host's are unmapped (EINVAL).
fn owner_ids_as_seen_inside(data: &str, host_proc: &OwnedFd) -> String {
    let map = |name: &str| {
        openat(
            Some(host_proc.as_raw_fd()),
            format!("self/{name}").as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .and_then(|fd| {
            // SAFETY: fresh fd from openat, owned by the File from here.
            let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text).ok()?;
            Some(text)
        })
        .unwrap_or_default()
    };
    crate::mountops::owner_ids_inside(data, &map("uid_map"), &map("gid_map"))
}

pub(crate) fn key(fd: &OwnedFd) -> Result<MountKey, Errno> {
    let st = fstat(fd.as_raw_fd())?;
    Ok((st.st_dev, st.st_ino))
}

fn resolve(dirfd: RawFd, path: &str, follow: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = openat(Some(dirfd), path, flags, Mode::empty())?;
    // SAFETY: fresh fd from openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `path` from `dirfd` as the trapped process `caller` would resolve it: for
/// `/proc/self/fd/N`, its own fd N, reached through the host's /proc by its tid.
fn resolve_for(
    caller: i32,
    host_proc: &OwnedFd,
    dirfd: RawFd,
    path: &str,
    follow: bool,
) -> Result<OwnedFd, Errno> {
    match own_fd_link(path) {
        // The link itself, not followed, is no mount point.
        Some(_) if !follow => Err(Errno::EINVAL),
        Some(n) => resolve(host_proc.as_raw_fd(), &format!("{caller}/fd/{n}"), true),
        None => match own_proc_path(path) {
            // Never above the caller's own directory of the host's /proc.
            Some(rest) if rest.split('/').any(|c| c == "..") => Err(Errno::EACCES),
            Some(rest) => resolve(host_proc.as_raw_fd(), &format!("{caller}/{rest}"), follow),
            None => resolve(dirfd, path, follow),
        },
    }
}

/// A path naming `fd` that works whatever our root is: relative to the host's /proc.
fn fd_path(host_proc: &OwnedFd, fd: &OwnedFd) -> Result<CString, Errno> {
    nix::unistd::fchdir(host_proc.as_raw_fd())?;
    CString::new(format!("self/fd/{}", fd.as_raw_fd())).map_err(|_| Errno::EINVAL)
}

/// One request's caller, as the agent sees it after entering its mount namespace, root and
/// working directory: `fds` are the caller's mount namespace, root and cwd (0..3), then the
/// dirfds and namespaces the operation names.
struct Caller<'a> {
    pid: i32,
    fds: &'a [OwnedFd],
    host_proc: &'a OwnedFd,
    mount_ns: u64,
}

impl Caller<'_> {
    /// `path` resolved to an O_PATH fd as the caller would, from `dirfd`.
    fn resolve(&self, dirfd: RawFd, path: &str, follow: bool) -> Result<OwnedFd, Errno> {
        resolve_for(self.pid, self.host_proc, dirfd, path, follow)
    }

    /// The dirfd the caller passed at `index` when it `used` one, else its cwd.
    fn dirfd(&self, used: bool, index: usize) -> Result<RawFd, Errno> {
        if used {
            self.fds
                .get(index)
                .map(|f| f.as_raw_fd())
                .ok_or(Errno::EBADF)
        } else {
            Ok(libc::AT_FDCWD)
        }
    }

    /// Whether `fd` is a pinned mount: a mask or an emulated file, or a copy of one (`mount
    /// --rbind /proc /x` in the first namespace has other mount IDs) over a procfs or sysfs.
    fn pinned(&self, fd: &OwnedFd, protected: &Protected) -> Result<bool, Errno> {
        let (k, id) = (key(fd)?, mount_id(fd)?);
        if protected.is_pinned(k, id, self.mount_ns) {
            return Ok(true);
        }
        if protected.pinned.iter().any(|(pinned, _)| *pinned == k) {
            return over_proc_or_sys(self.host_proc, id);
        }
        Ok(false)
    }
}

/// Perform `op` for process `caller`. `fds`: its mount namespace, root and cwd, then its
/// dirfds; for a new mount, its other namespaces and FUSE fd instead of dirfds.
fn perform(
    op: &Op,
    caller: i32,
    fds: &[OwnedFd],
    host_proc: &OwnedFd,
    protected: &mut Protected,
    joined_ns: &mut Option<u64>,
    joined: &mut Joined,
) -> Result<Option<OwnedFd>, Errno> {
    let mount_ns = fstat(fds[0].as_raw_fd())?.st_ino;
    // Entering a mount namespace is the costly step: skip it when the last request was there.
    if *joined_ns != Some(mount_ns) {
        setns(fds[0].as_fd(), CloneFlags::CLONE_NEWNS)?;
        *joined_ns = Some(mount_ns);
    }
    nix::unistd::fchdir(fds[1].as_raw_fd())?;
    nix::unistd::chroot(".")?;
    nix::unistd::fchdir(fds[2].as_raw_fd())?;
    let c = Caller {
        pid: caller,
        fds,
        host_proc,
        mount_ns,
    };
    match op {
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            let after_namespaces = if crate::mountops::joins_namespaces(fstype.as_deref()) {
                7
            } else {
                3
            };
            let namespaces = fds.get(3..after_namespaces).ok_or(Errno::EBADF)?;
            let target_fd = own_fd_link(target)
                .map(|_| c.resolve(libc::AT_FDCWD, target, true))
                .transpose()?;
            let m = NewMount {
                target_fd: target_fd.as_ref(),
                source: source.as_deref(),
                target,
                fstype: fstype.as_deref(),
                flags: *flags,
                data: data.as_deref(),
                namespaces,
                fuse: fds.get(after_namespaces),
            };
            crate::newmount::mount(&m, host_proc, joined, protected)
        }
        Op::Umount { target, flags } => umount(&c, protected, target, *flags),
        Op::Remount {
            target,
            flags,
            data,
        } => remount(&c, protected, target, *flags, data.as_deref()),
        Op::Move { source, target } => move_tree(&c, protected, source, target),
        Op::SetAttr {
            dirfd: used,
            path,
            at_flags,
            attr_set,
            attr_clr,
            propagation,
        } => {
            let attr = MountAttr {
                attr_set: *attr_set,
                attr_clr: *attr_clr,
                propagation: *propagation,
                userns_fd: 0,
            };
            set_attributes(&c, protected, c.dirfd(*used, 3)?, path, *at_flags, &attr)
        }
        Op::MoveMount {
            from_dirfd,
            from_path,
            to_dirfd,
            to_path,
            flags,
        } => {
            // The dirfds the caller used come in order after its cwd.
            let from_base = c.dirfd(*from_dirfd, 3)?;
            let to_base = c.dirfd(*to_dirfd, if *from_dirfd { 4 } else { 3 })?;
            attach_tree(
                &c,
                protected,
                (from_base, from_path),
                (to_base, to_path),
                *flags,
            )
        }
        Op::Bind {
            source,
            target,
            flags,
        } => bind(&c, source, target, *flags),
    }
    .map(|()| None)
}

fn umount(c: &Caller<'_>, protected: &Protected, target: &str, flags: i32) -> Result<(), Errno> {
    let fd = c.resolve(libc::AT_FDCWD, target, flags & libc::UMOUNT_NOFOLLOW == 0)?;
    if c.pinned(&fd, protected)?
        && !is_old_root(&fd, &c.fds[1], c.host_proc, protected, c.mount_ns)?
    {
        return Err(Errno::EBUSY);
    }
    // Through the fd that was checked; our own reference to it would make a plain unmount
    // fail with EBUSY, so the unmount is lazy (the mount is the container's).
    let path = fd_path(c.host_proc, &fd)?;
    let flags = nix::mount::MntFlags::from_bits_truncate(flags & !libc::UMOUNT_NOFOLLOW)
        | nix::mount::MntFlags::MNT_DETACH;
    nix::mount::umount2(path.as_c_str(), flags)
}

fn remount(
    c: &Caller<'_>,
    protected: &Protected,
    target: &str,
    flags: u64,
    data: Option<&str>,
) -> Result<(), Errno> {
    let fd = c.resolve(libc::AT_FDCWD, target, true)?;
    if protected.cleared(key(&fd)?, flags & KEPT_FLAGS) != 0
        || (flags & libc::MS_RDONLY == 0 && makes_writable(&fd, c.host_proc, protected)?)
    {
        return Err(Errno::EPERM);
    }
    let data = data.map(|d| owner_ids_as_seen_inside(d, c.host_proc));
    let path = fd_path(c.host_proc, &fd)?;
    nix::mount::mount(
        None::<&str>,
        path.as_c_str(),
        None::<&str>,
        nix::mount::MsFlags::from_bits_retain(flags),
        data.as_deref(),
    )
}

/// `mount --move`: a pinned mount stays where it is.
fn move_tree(
    c: &Caller<'_>,
    protected: &Protected,
    source: &str,
    target: &str,
) -> Result<(), Errno> {
    let from = c.resolve(libc::AT_FDCWD, source, true)?;
    if c.pinned(&from, protected)? {
        return Err(Errno::EBUSY);
    }
    let to = c.resolve(libc::AT_FDCWD, target, true)?;
    mount_between(c, &from, &to, nix::mount::MsFlags::MS_MOVE)
}

/// `mount_setattr`: no ID-mapping, no flag kept at start cleared (recursively or on a mount
/// that had it), nothing read-only at start made writable.
fn set_attributes(
    c: &Caller<'_>,
    protected: &Protected,
    base: RawFd,
    path: &str,
    at_flags: u32,
    attr: &MountAttr,
) -> Result<(), Errno> {
    let fd = if path.is_empty() && at_flags & libc::AT_EMPTY_PATH as u32 != 0 {
        dup_cloexec(base)?
    } else {
        c.resolve(base, path, at_flags & libc::AT_SYMLINK_NOFOLLOW as u32 == 0)?
    };
    let clears_kept = attr.attr_clr & KEPT_FLAGS;
    if attr.attr_set & MOUNT_ATTR_IDMAP != 0 || (clears_kept != 0 && at_flags & AT_RECURSIVE != 0) {
        return Err(Errno::EPERM);
    }
    let current = protected
        .flags
        .iter()
        .find(|(k, _)| Some(*k) == key(&fd).ok())
        .map(|(_, f)| *f)
        .unwrap_or(0);
    if current & clears_kept != 0
        || (attr.attr_clr & MOUNT_ATTR_RDONLY != 0 && makes_writable(&fd, c.host_proc, protected)?)
    {
        return Err(Errno::EPERM);
    }
    set_attr(fd.as_fd(), at_flags & AT_RECURSIVE != 0, attr)
}

/// `move_mount`: a pinned mount stays where it is; a detached tree gets the emulated files
/// and masks covered before it is attached.
fn attach_tree(
    c: &Caller<'_>,
    protected: &mut Protected,
    (from_base, from_path): (RawFd, &str),
    (to_base, to_path): (RawFd, &str),
    flags: u32,
) -> Result<(), Errno> {
    let open_end = |base: RawFd, path: &str, empty: bool, follow: bool| {
        if empty && path.is_empty() {
            dup_cloexec(base)
        } else {
            c.resolve(base, path, follow)
        }
    };
    let from = open_end(
        from_base,
        from_path,
        flags & MOVE_MOUNT_F_EMPTY_PATH != 0,
        flags & MOVE_MOUNT_F_SYMLINKS != 0,
    )?;
    if c.pinned(&from, protected)? {
        return Err(Errno::EBUSY);
    }
    crate::newmount::cover(&from, protected)?;
    let to = open_end(
        to_base,
        to_path,
        flags & MOVE_MOUNT_T_EMPTY_PATH != 0,
        flags & MOVE_MOUNT_T_SYMLINKS != 0,
    )?;
    move_mount(from.as_fd(), Some(to.as_fd()), c"", MOVE_MOUNT_T_EMPTY_PATH)
}

/// A bind (recursive or not) through the checked fds; a partial copy of a procfs or sysfs
/// directory is refused.
fn bind(c: &Caller<'_>, source: &str, target: &str, flags: u64) -> Result<(), Errno> {
    let from = c.resolve(libc::AT_FDCWD, source, true)?;
    refuse_partial_copy(&from)?;
    let to = c.resolve(libc::AT_FDCWD, target, true)?;
    mount_between(c, &from, &to, nix::mount::MsFlags::from_bits_retain(flags))
}

/// mount(2) from one checked fd to another (a move or a bind), through their
/// `/proc/self/fd` links in the host's /proc.
fn mount_between(
    c: &Caller<'_>,
    from: &OwnedFd,
    to: &OwnedFd,
    flags: nix::mount::MsFlags,
) -> Result<(), Errno> {
    let from_path = fd_path(c.host_proc, from)?;
    let to_path = fd_path(c.host_proc, to)?;
    nix::mount::mount(
        Some(from_path.as_c_str()),
        to_path.as_c_str(),
        None::<&str>,
        flags,
        None::<&str>,
    )
}
