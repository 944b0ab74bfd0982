//! The seccomp-notify supervisor: one thread of the shim per container, fed the container's
//! notify fd(s). The filter traps the mount family by syscall number only.
//!
//! Decisions use only integer arguments when the answer is "continue" (a new file system, a
//! bind, a propagation change, open_tree, fsopen/fsconfig/fsmount): nothing read from the
//! process's memory ever leads to SECCOMP_USER_NOTIF_FLAG_CONTINUE. Anything whose safety
//! depends on a path or a struct (umount2, remount, move, mount_setattr, move_mount) is copied
//! once, the notification is checked to be still valid, and the agent performs it for the
//! process or refuses. fspick is refused. A process in a nested user namespace gets the
//! kernel's own answer (CONTINUE, decided on its namespace alone): there every inherited mount
//! is kernel-locked. If the supervisor dies, the kernel fails the trapped syscalls (ENOSYS):
//! closed, never open.

use crate::cgroup::CgroupView;
use crate::mountops::{Answer, Op, Request, ToAgent};
use crate::procfs::ContainerView;
use eci_sys::channel::Channel;
use eci_sys::mount::{AT_RECURSIVE, OPEN_TREE_CLONE};
use eci_sys::pidfd::PidFd;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CpuSet;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
const CAP_SYS_ADMIN: u32 = 21;

const MS_REMOUNT: u64 = libc::MS_REMOUNT;
const MS_MOVE: u64 = libc::MS_MOVE;
const MS_BIND: u64 = libc::MS_BIND;
const MS_REC: u64 = libc::MS_REC;
const MS_PROPAGATION: u64 =
    libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE;

/// Starts the container's mount agent and returns the supervisor's end of its channel (the
/// protected facts sent already) and the agent's pid.
pub type AgentFactory = Box<dyn FnMut() -> std::io::Result<(Channel, i32)> + Send>;

/// The agent, started on first need: most containers never unmount anything, and then pay
/// neither its start nor its memory.
struct Agent {
    factory: AgentFactory,
    conn: Option<Channel>,
    pid: i32,
    /// The running agent, to wait for its exit: it is charged to the container's cgroup,
    /// which cannot be removed while the agent is in it.
    pidfd: Option<PidFd>,
    cgroup: CgroupView,
    /// The CPU the agent is pinned to, and the CPUs this thread may run on between requests.
    cpu: Option<i32>,
    own_cpus: Option<CpuSet>,
    proc_dir: Option<(i32, OwnedFd)>,
    /// The container's user namespace: the agent holds all capabilities there and acts only
    /// for processes in it, never for one in a nested user namespace it would out-rank.
    user_ns: u64,
}

impl Agent {
    /// `/proc/<pid>` of the trapped thread, kept for the next request: an fd on a dead
    /// process's directory fails every lookup, so a reused pid is never mistaken for it.
    fn proc_dir(&mut self, pid: i32) -> Result<&OwnedFd, Errno> {
        let alive = |dir: &OwnedFd| {
            nix::sys::stat::fstatat(Some(dir.as_raw_fd()), "ns", AtFlags::empty()).is_ok()
        };
        let reuse = matches!(&self.proc_dir, Some((p, dir)) if *p == pid && alive(dir));
        if !reuse {
            let dir = nix::fcntl::open(
                format!("/proc/{pid}").as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|_| Errno::ESRCH)?;
            // SAFETY: fresh fd from open.
            self.proc_dir = Some((pid, unsafe { OwnedFd::from_raw_fd(dir) }));
        }
        self.proc_dir
            .as_ref()
            .map(|(_, dir)| dir)
            .ok_or(Errno::ESRCH)
    }

    /// Whether thread `tid` is in the container's own user namespace (not a nested one).
    fn in_container_user_ns(&mut self, tid: i32) -> Result<bool, Errno> {
        let user_ns = self.user_ns;
        let dir = self.proc_dir(tid)?;
        let st = nix::sys::stat::fstatat(Some(dir.as_raw_fd()), "ns/user", AtFlags::empty())
            .map_err(|_| Errno::ESRCH)?;
        Ok(st.st_ino == user_ns)
    }

    /// Whether the running agent has exited (killed, OOM): its pidfd is readable then.
    fn exited(&self) -> bool {
        self.pidfd
            .as_ref()
            .is_some_and(|pidfd| pidfd.exited_within(PollTimeout::ZERO))
    }

    fn conn(&mut self) -> Result<&mut Channel, Errno> {
        // An agent that died since the last request is replaced before this one, which it
        // would otherwise have refused.
        if self.conn.is_some() && self.exited() {
            log::warn!("mount agent {} died; starting another", self.pid);
            self.conn = None;
            self.pidfd = None;
        }
        if self.conn.is_none() {
            let (conn, pid) = (self.factory)().map_err(|_| Errno::EPERM)?;
            self.pidfd = PidFd::open(pid).ok();
            if let Err(e) = self.cgroup.charge(pid, true) {
                log::warn!("mount agent {pid} stays in the shim's cgroup: {e}");
            }
            self.pid = pid;
            self.cpu = None;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(Errno::EPERM)
    }

    /// One request–answer exchange with the agent, on this thread's CPU. The kernel's
    /// synchronous wake-up brought this thread to the trapped process's CPU; the agent is
    /// moved there too and this thread stays there until the answer, so the round trip never
    /// crosses CPUs (a wake-up on another CPU costs tens of microseconds in a VM, more than the
    /// operation). Only the agent stays pinned; it runs only when asked.
    fn exchange<T>(&mut self, exchange: impl FnOnce(&mut Channel) -> T) -> Result<T, Errno> {
        // SAFETY: sched_getcpu takes no arguments.
        let cpu = unsafe { libc::sched_getcpu() };
        // Without our own CPU set to return to, stay unpinned.
        let here = self.own_cpus.and(single_cpu(cpu));
        self.conn()?;
        if let Some(here) = &here {
            if self.cpu != Some(cpu)
                && nix::sched::sched_setaffinity(Pid::from_raw(self.pid), here).is_ok()
            {
                self.cpu = Some(cpu);
            }
            let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), here);
        }
        let answer = exchange(self.conn.as_mut().ok_or(Errno::EPERM)?);
        if let (Some(_), Some(own)) = (here, &self.own_cpus) {
            let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), own);
        }
        Ok(answer)
    }
}

impl Drop for Agent {
    /// Hang up (the agent exits when its socket closes) and wait until it has, killing it
    /// after a second: only then can the container's cgroup be removed.
    fn drop(&mut self) {
        self.conn = None;
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let second = PollTimeout::from(1000u16);
        if !pidfd.exited_within(second) {
            pidfd.kill();
            pidfd.exited_within(second);
        }
    }
}

fn single_cpu(cpu: i32) -> Option<CpuSet> {
    let mut set = CpuSet::new();
    let cpu = usize::try_from(cpu).ok()?;
    set.set(cpu).is_ok().then_some(set)
}

/// Running supervision of one container. Dropping it stops the thread and the agent;
/// [`Supervisor::stop`] also waits for both to be gone.
pub struct Supervisor {
    stop: OwnedFd,
    fds: Arc<Mutex<NotifyFds>>,
    wake: OwnedFd,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Supervisor {
    /// Start serving `notify` (the init's listener fd), performing through an agent that
    /// `agent` starts when first needed. `user_ns` is the inode of the container's user
    /// namespace, the one the agent acts in.
    pub fn start(
        notify: OwnedFd,
        agent: AgentFactory,
        user_ns: u64,
        view: ContainerView,
    ) -> std::io::Result<Supervisor> {
        // Close-on-exec: a process that inherited the stop pipe could end supervision.
        let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (wake_r, wake_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let fds = Arc::new(Mutex::new(NotifyFds {
            open: vec![notify],
            ended: false,
        }));
        let shared = fds.clone();
        let thread = std::thread::Builder::new()
            .name("eci-supervisor".into())
            .spawn(move || serve(shared, agent, user_ns, view, stop_r, wake_r))?;
        Ok(Supervisor {
            stop: stop_w,
            fds,
            wake: wake_w,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stop serving and wait until the thread and the agent are gone: both are charged to
    /// the container's cgroup, so call this before removing it. Blocks; idempotent.
    pub fn stop(&self) {
        let _ = nix::unistd::write(&self.stop, b"s");
        let thread = self.thread.lock().expect("supervisor thread").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Serve another notify fd (an exec'd process's filter).
    /// Once supervision has ended, the fd is closed at once: the process's trapped calls
    /// then fail with ENOSYS instead of waiting for an answer that would never come.
    pub fn add(&self, notify: OwnedFd) {
        set_sync_wakeup(&notify);
        let mut fds = self.fds.lock().expect("supervisor fds");
        if fds.ended {
            return;
        }
        fds.open.push(notify);
        drop(fds);
        let _ = nix::unistd::write(&self.wake, b"w");
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = nix::unistd::write(&self.stop, b"s");
    }
}

/// Wake the supervisor on the trapped thread's CPU (Linux 6.6+): cheaper round trips.
fn set_sync_wakeup(fd: &OwnedFd) {
    // SAFETY: SECCOMP_IOCTL_NOTIF_SET_FLAGS takes the flags by value; failure is harmless.
    unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
}

/// The notify fds being served; `ended` once the serving thread is gone for good.
struct NotifyFds {
    open: Vec<OwnedFd>,
    ended: bool,
}

/// However the serving thread ends, the notify fds close with it: every trapped call of the
/// container then fails (ENOSYS) rather than hang.
struct EndSupervision(Arc<Mutex<NotifyFds>>);

impl Drop for EndSupervision {
    fn drop(&mut self) {
        let mut fds = match self.0.lock() {
            Ok(fds) => fds,
            Err(poisoned) => poisoned.into_inner(),
        };
        fds.ended = true;
        fds.open.clear();
    }
}

fn serve(
    fds: Arc<Mutex<NotifyFds>>,
    factory: AgentFactory,
    user_ns: u64,
    view: ContainerView,
    stop: OwnedFd,
    wake: OwnedFd,
) {
    let _end = EndSupervision(fds.clone());
    // Charged to the container, as is the agent when it starts (see CgroupView::charge).
    let tid = nix::unistd::gettid().as_raw();
    match view.cgroup().charge(tid, false) {
        Ok(true) => {}
        Ok(false) => log::debug!("supervisor thread {tid} stays in the shim's cgroup (cgroup v2)"),
        Err(e) => log::warn!("supervisor thread {tid} stays in the shim's cgroup: {e}"),
    }
    let mut agent = Agent {
        factory,
        conn: None,
        pid: 0,
        pidfd: None,
        cgroup: view.cgroup().clone(),
        cpu: None,
        own_cpus: nix::sched::sched_getaffinity(Pid::from_raw(0)).ok(),
        proc_dir: None,
        user_ns,
    };
    if let Some(first) = fds.lock().expect("supervisor fds").open.first() {
        set_sync_wakeup(first);
    }
    loop {
        let notify: Vec<RawFd> = fds
            .lock()
            .expect("supervisor fds")
            .open
            .iter()
            .map(|f| f.as_raw_fd())
            .collect();
        let mut polls: Vec<PollFd> = notify
            .iter()
            .map(|fd| {
                PollFd::new(
                    // SAFETY: the fds stay open in `fds` while this loop runs; only this
                    // thread removes them.
                    unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) },
                    PollFlags::POLLIN,
                )
            })
            .collect();
        polls.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
        polls.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
        if poll(&mut polls, PollTimeout::NONE).is_err() {
            continue;
        }
        let n = notify.len();
        if polls[n].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        if polls[n + 1]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            let _ = nix::unistd::read(wake.as_raw_fd(), &mut [0u8; 16]);
        }
        let mut dead = Vec::new();
        for (i, fd) in notify.iter().enumerate() {
            let Some(revents) = polls[i].revents() else {
                continue;
            };
            if revents.contains(PollFlags::POLLIN) {
                handle_one(*fd, &mut agent, &view);
            } else if revents
                .intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
            {
                dead.push(*fd);
            }
        }
        if !dead.is_empty() {
            let mut fds = fds.lock().expect("supervisor fds");
            fds.open.retain(|f| !dead.contains(&f.as_raw_fd()));
            if fds.open.is_empty() {
                return;
            }
        }
    }
}

enum Verdict {
    Continue,
    Fail(Errno),
    Perform(Op, Vec<i32>),
    /// sched_getaffinity(0, len, addr), answered from the container's CPU view.
    Affinity {
        len: u64,
        addr: u64,
    },
    /// sysinfo(addr), answered from the container's view.
    Sysinfo {
        addr: u64,
    },
}

fn handle_one(fd: RawFd, agent: &mut Agent, view: &ContainerView) {
    // SAFETY: seccomp_notif is plain data; RECV requires it zeroed.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one seccomp_notif into the struct we own.
    if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV as _, &mut req) } < 0 {
        return;
    }
    let pid = req.pid.cast_signed();
    let nr = libc::c_long::from(req.data.nr);
    let views = [libc::SYS_sched_getaffinity, libc::SYS_sysinfo];
    let verdict = if views.contains(&nr) {
        decide(&req)
    } else {
        match agent.in_container_user_ns(pid) {
            Ok(true) => decide(&req),
            // A nested user namespace: the kernel's own answer is the right one. Every mount
            // it inherited was locked when its mount namespace was copied from the container's
            // (flags, and to their parents: no unmount, no move, no remount rw), a fresh procfs
            // or sysfs is refused as too revealing over the locked emulated files, and what it
            // mounts itself is its own. Decided on the caller's namespace, never its memory.
            Ok(false) if id_valid(fd, req.id) => Ok(Verdict::Continue),
            Ok(false) => Err(Errno::ESRCH),
            Err(e) => Err(e),
        }
    }
    .unwrap_or_else(Verdict::Fail);
    let result = match verdict {
        Verdict::Continue => Ok(None),
        Verdict::Fail(e) => Err(e),
        Verdict::Perform(op, dirfds) => {
            perform(fd, req.id, pid, op, &dirfds, agent).map(|_| Some(0))
        }
        Verdict::Affinity { len, addr } => {
            affinity(fd, req.id, pid, len, addr, agent, view.cpus()).map(Some)
        }
        Verdict::Sysinfo { addr } => sysinfo(fd, req.id, pid, addr, agent, view).map(Some),
    };
    // SAFETY: seccomp_notif_resp is plain data.
    let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
    resp.id = req.id;
    match result {
        Ok(None) => resp.flags = CONTINUE_FLAG,
        Ok(Some(val)) => resp.val = val,
        Err(e) => resp.error = -(e as i32),
    }
    // SAFETY: SEND reads the response struct we own; ENOENT (target gone) is fine.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND as _, &mut resp) };
}

/// Decide from integer arguments; copy pointer arguments only for operations the agent will
/// perform (or refuse) itself.
fn decide(req: &libc::seccomp_notif) -> Result<Verdict, Errno> {
    let a = req.data.args;
    let pid = req.pid.cast_signed();
    let nr = libc::c_long::from(req.data.nr);
    let verdict = match nr {
        libc::SYS_mount => {
            let flags = a[3];
            if flags & MS_REMOUNT != 0 {
                Verdict::Perform(
                    Op::Remount {
                        target: read_str(pid, a[1])?,
                        flags,
                        data: read_opt_str(pid, a[4])?,
                    },
                    vec![],
                )
            } else if flags & MS_BIND != 0 && flags & MS_REC == 0 {
                // A bind of one mount leaves its submounts behind: of a procfs directory, it
                // would show what the emulated files hide. Judged on the source, performed.
                Verdict::Perform(
                    Op::Bind {
                        source: read_str(pid, a[0])?,
                        target: read_str(pid, a[1])?,
                        flags,
                    },
                    vec![],
                )
            } else if flags & (MS_BIND | MS_PROPAGATION) != 0 {
                // A recursive bind (copies keep the kernel's locks, the submounts and this
                // supervisor's pins) or a propagation change: decided on flags alone.
                Verdict::Continue
            } else if flags & MS_MOVE != 0 {
                Verdict::Perform(
                    Op::Move {
                        source: read_str(pid, a[0])?,
                        target: read_str(pid, a[1])?,
                    },
                    vec![],
                )
            } else {
                // A new file system. The agent mounts it in the process's namespaces, so that
                // a procfs or sysfs carries the emulated files before it appears; letting the
                // kernel go on after reading the type would trust a string the process can
                // still change.
                Verdict::Perform(
                    Op::Mount {
                        source: read_opt_str(pid, a[0])?,
                        target: read_str(pid, a[1])?,
                        fstype: read_opt_str(pid, a[2])?,
                        flags,
                        data: if a[4] == 0 {
                            None
                        } else {
                            Some(read_bytes(pid, a[4], 4096)?)
                        },
                    },
                    vec![],
                )
            }
        }
        libc::SYS_umount2 => Verdict::Perform(
            Op::Umount {
                target: read_str(pid, a[0])?,
                flags: int_arg(a[1]),
            },
            vec![],
        ),
        libc::SYS_mount_setattr => {
            let size = usize::try_from(a[4]).unwrap_or(usize::MAX);
            if size < 32 {
                return Err(Errno::EINVAL);
            }
            let attr = read_bytes(pid, a[3], 32)?;
            let word =
                |i: usize| u64::from_ne_bytes(attr[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            let dirfd = int_arg(a[0]);
            Verdict::Perform(
                Op::SetAttr {
                    dirfd: dirfd != libc::AT_FDCWD,
                    path: read_str(pid, a[1])?,
                    at_flags: uint_arg(a[2]),
                    attr_set: word(0),
                    attr_clr: word(1),
                    propagation: word(2),
                },
                if dirfd != libc::AT_FDCWD {
                    vec![dirfd]
                } else {
                    vec![]
                },
            )
        }
        libc::SYS_move_mount => {
            let (from, to) = (int_arg(a[0]), int_arg(a[2]));
            let dirfds: Vec<i32> = [from, to]
                .into_iter()
                .filter(|d| *d != libc::AT_FDCWD)
                .collect();
            Verdict::Perform(
                Op::MoveMount {
                    from_dirfd: from != libc::AT_FDCWD,
                    from_path: read_opt_str(pid, a[1])?.unwrap_or_default(),
                    to_dirfd: to != libc::AT_FDCWD,
                    to_path: read_opt_str(pid, a[3])?.unwrap_or_default(),
                    flags: uint_arg(a[4]),
                },
                dirfds,
            )
        }
        // A clone of one mount leaves its submounts behind (of /proc: the emulated files), and
        // a new file system context becomes a mount readable through its fd before it is ever
        // attached. Both give an O_PATH fd, which the supervisor cannot place in the caller's
        // table (SECCOMP_IOCTL_NOTIF_ADDFD takes no O_PATH file), so they cannot be performed
        // for it: ENOSYS, decided on the syscall number and flags alone, as on a kernel before
        // the new mount API (5.2). util-linux and crun fall back to mount(2), which the agent
        // performs. A recursive clone keeps every submount, pinned, and an open_tree without
        // a clone makes no mount: those go on.
        libc::SYS_open_tree
            if a[2] & u64::from(OPEN_TREE_CLONE) != 0 && a[2] & u64::from(AT_RECURSIVE) == 0 =>
        {
            Verdict::Fail(Errno::ENOSYS)
        }
        libc::SYS_open_tree => Verdict::Continue,
        libc::SYS_fsopen | libc::SYS_fsconfig | libc::SYS_fsmount => Verdict::Fail(Errno::ENOSYS),
        // Another process's mask is the kernel's answer; the caller's own is the CPU view.
        libc::SYS_sched_getaffinity if a[0] != 0 => Verdict::Continue,
        libc::SYS_sched_getaffinity => Verdict::Affinity {
            len: a[1],
            addr: a[2],
        },
        libc::SYS_sysinfo => Verdict::Sysinfo { addr: a[0] },
        // Picking an existing superblock to reconfigure it is refused outright.
        libc::SYS_fspick => Verdict::Fail(Errno::EPERM),
        _ => Verdict::Fail(Errno::ENOSYS),
    };
    Ok(verdict)
}

/// The namespaces, after the mount namespace, root and cwd, that a new mount is made in.
pub const MOUNT_NAMESPACES: [&str; 4] = ["ns/pid", "ns/net", "ns/ipc", "ns/cgroup"];

/// A copy of the thread's fd `fd`.
fn steal_fd(tid: i32, fd: i32) -> Result<OwnedFd, Errno> {
    let pidfd = PidFd::open_thread(tid).map_err(|_| Errno::ESRCH)?;
    pidfd.get_fd(fd).map_err(|_| Errno::EBADF)
}

/// The `fd=N` option of a FUSE mount's data.
pub fn fuse_fd(fstype: Option<&str>, data: Option<&[u8]>) -> Option<i32> {
    let fstype = fstype?;
    if fstype != "fuse" && !fstype.starts_with("fuse.") && fstype != "fuseblk" {
        return None;
    }
    let data = data?;
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    std::str::from_utf8(&data[..end])
        .ok()?
        .split(',')
        .find_map(|o| o.strip_prefix("fd=")?.parse().ok())
}

fn id_valid(fd: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: ID_VALID reads the u64 id we own.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _, &mut id) == 0 }
}

/// Whether thread `tid` has CAP_SYS_ADMIN in its effective set (in its own user namespace).
fn has_cap_sys_admin(tid: i32) -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: tid,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a v3 header and room for its two data words, both ours.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    r == 0 && data[0].effective & (1 << CAP_SYS_ADMIN) != 0
}

fn perform(
    fd: RawFd,
    id: u64,
    pid: i32,
    op: Op,
    dirfds: &[i32],
    agent: &mut Agent,
) -> Result<Option<OwnedFd>, Errno> {
    // handle_one sends only processes of the container's own user namespace here, where the
    // agent holds all capabilities; a caller without CAP_SYS_ADMIN gets EPERM, as from the kernel.
    if !has_cap_sys_admin(pid) {
        return Err(Errno::EPERM);
    }
    let dir = agent.proc_dir(pid)?;
    // The namespace is opened for reading: setns takes no O_PATH fd.
    let open = |what: &str| {
        let kind = if what.starts_with("ns/") {
            OFlag::O_RDONLY
        } else {
            OFlag::O_PATH
        };
        nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            what,
            kind | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        // SAFETY: fresh fd from openat.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .map_err(|_| Errno::ESRCH)
    };
    let mut fds = vec![open("ns/mnt")?, open("root")?, open("cwd")?];
    if let Op::Mount { fstype, data, .. } = &op {
        // A file system is made in its mounter's namespaces: procfs shows a pid namespace,
        // sysfs a network namespace, mqueue an IPC one, cgroupfs a cgroup one.
        if crate::mountops::joins_namespaces(fstype.as_deref()) {
            for ns in MOUNT_NAMESPACES {
                fds.push(open(ns)?);
            }
        }
        // A FUSE mount names its /dev/fuse by fd number in the process's table.
        if let Some(fd) = fuse_fd(fstype.as_deref(), data.as_deref()) {
            fds.push(steal_fd(pid, fd)?);
        }
    }
    for d in dirfds {
        fds.push(steal_fd(pid, *d)?);
    }
    // Everything about the process has been read and opened: is it still the same request?
    if !id_valid(fd, id) {
        return Err(Errno::ESRCH);
    }
    let request = ToAgent::Perform(Request { op, caller: pid });
    let lent: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    let exchange = |conn: &mut Channel| -> std::io::Result<(Answer, Option<OwnedFd>)> {
        conn.send(&request, &lent)?;
        let (answer, fds) = conn.recv::<Answer>()?;
        Ok((answer, fds.into_iter().next()))
    };
    let mut answer = agent.exchange(exchange)?;
    if matches!(&answer, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
        // The agent died before the request reached it (between the check in `conn` and
        // the send): nothing was done, so the request goes once to a fresh agent.
        agent.conn = None;
        answer = agent.exchange(exchange)?;
    }
    match answer {
        Ok((Answer::Done, new)) => Ok(new),
        // Only an errno the kernel could have answered: 0 or nonsense from an agent (it runs
        // in the container's namespaces) is a refusal.
        Ok((Answer::Failed { errno }, _)) if (1..4096).contains(&errno) => {
            Err(Errno::from_raw(errno))
        }
        Ok((Answer::Failed { .. }, _)) => Err(Errno::EPERM),
        // Over the channel's bound (two paths of PATH_MAX and a page of mount data fit many
        // times over): refused before anything was sent.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(Errno::ENAMETOOLONG),
        Err(e) => {
            // The agent died with the request (it may or may not have acted on it): refused,
            // and the next request starts another agent.
            log::warn!("mount agent {} failed a request: {e}", agent.pid);
            agent.conn = None;
            Err(Errno::EPERM)
        }
    }
}

/// The trapped thread's own affinity mask, narrowed to the first `cpus` CPUs in it, written
/// where it asked, as sched_getaffinity(2) would: the kernel's own call on the thread gives
/// the length checks, the errors and the mask.
fn affinity(
    fd: RawFd,
    id: u64,
    tid: i32,
    len: u64,
    addr: u64,
    agent: &mut Agent,
    cpus: Option<u32>,
) -> Result<i64, Errno> {
    // Far above any kernel's cpumask size, so the answer's length is the kernel's.
    const MAX_MASK_BYTES: u64 = 64 * 1024;
    let mut mask = vec![0u8; len.min(MAX_MASK_BYTES) as usize];
    // SAFETY: sched_getaffinity writes at most mask.len() bytes into our buffer.
    let copied = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            mask.len(),
            mask.as_mut_ptr(),
        )
    };
    if copied < 0 {
        return Err(Errno::last());
    }
    mask.truncate(usize::try_from(copied).unwrap_or(0));
    if let Some(cpus) = cpus {
        narrow_mask(&mut mask, cpus);
    }
    write_answer(fd, id, tid, addr, &mask, agent)?;
    Ok(copied)
}

/// The container's sysinfo(2), written where the trapped thread asked.
fn sysinfo(
    fd: RawFd,
    id: u64,
    tid: i32,
    addr: u64,
    agent: &mut Agent,
    view: &ContainerView,
) -> Result<i64, Errno> {
    let info = view.sysinfo().map_err(|_| Errno::EIO)?;
    // SAFETY: a sysinfo struct is plain data; these are its bytes, read while it lives.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&info as *const libc::sysinfo).cast::<u8>(),
            std::mem::size_of::<libc::sysinfo>(),
        )
    };
    write_answer(fd, id, tid, addr, bytes, agent)?;
    Ok(0)
}

/// Write a syscall's answer into the trapped thread's memory at `addr`, as the kernel would.
/// The write goes through /proc/<tid>/mem opened before the notification is checked valid, so
/// it can only reach that thread's memory; nothing is read from it.
fn write_answer(
    fd: RawFd,
    id: u64,
    tid: i32,
    addr: u64,
    bytes: &[u8],
    agent: &mut Agent,
) -> Result<(), Errno> {
    let dir = agent.proc_dir(tid)?;
    let mem = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        "mem",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    // SAFETY: fresh fd from openat.
    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
    .map_err(|_| Errno::ESRCH)?;
    if !id_valid(fd, id) {
        return Err(Errno::ESRCH);
    }
    let written =
        nix::sys::uio::pwrite(&mem, bytes, addr.cast_signed()).map_err(|_| Errno::EFAULT)?;
    if written != bytes.len() {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

/// Keep the first `cpus` CPUs set in `mask`, a kernel cpumask (an array of native longs).
fn narrow_mask(mask: &mut [u8], cpus: u32) {
    let mut kept = 0;
    for bit in 0..mask.len() * 8 {
        let (byte, shift) = cpu_bit(bit, mask.len());
        if mask[byte] & (1 << shift) != 0 {
            if kept < cpus {
                kept += 1;
            } else {
                mask[byte] &= !(1 << shift);
            }
        }
    }
}

/// Where CPU `bit` lives in a kernel cpumask of `len` bytes (an array of native longs).
fn cpu_bit(bit: usize, len: usize) -> (usize, usize) {
    const LONG: usize = std::mem::size_of::<libc::c_ulong>();
    let (word, in_word) = (bit / (LONG * 8), bit % (LONG * 8));
    let byte_in_word = if cfg!(target_endian = "little") {
        in_word / 8
    } else {
        LONG - 1 - in_word / 8
    };
    let byte = (word * LONG + byte_in_word).min(len.saturating_sub(1));
    (byte, in_word % 8)
}

/// An `int` argument as the kernel reads it from its 64-bit register: the low 32 bits, so
/// that the supervisor judges the value the kernel would act on.
#[allow(clippy::cast_possible_truncation)]
fn int_arg(register: u64) -> i32 {
    register as i32
}

/// An `unsigned int` argument as the kernel reads it: the low 32 bits of its register.
#[allow(clippy::cast_possible_truncation)]
fn uint_arg(register: u64) -> u32 {
    register as u32
}

/// SECCOMP_USER_NOTIF_FLAG_CONTINUE (1) as `seccomp_notif_resp.flags` holds it; only for
/// answers decided on integer arguments.
#[allow(clippy::cast_possible_truncation)]
const CONTINUE_FLAG: u32 = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;

/// Copy up to `len` bytes of the process's memory, stopping early at an unmapped page.
fn read_bytes(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
    let mut out = vec![0u8; len];
    let mut local = [std::io::IoSliceMut::new(&mut out)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: usize::try_from(addr).map_err(|_| Errno::EFAULT)?,
        len,
    }];
    let n = nix::sys::uio::process_vm_readv(nix::unistd::Pid::from_raw(pid), &mut local, &remote)
        .map_err(|_| Errno::EFAULT)?;
    out.truncate(n);
    Ok(out)
}

/// Copy a NUL-terminated string (at most PATH_MAX), page by page.
fn read_str(pid: i32, addr: u64) -> Result<String, Errno> {
    if addr == 0 {
        return Err(Errno::EFAULT);
    }
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let to_page_end = 4096 - usize::try_from(at % 4096).unwrap_or(0);
        let chunk = read_bytes(pid, at, to_page_end)?;
        if chunk.is_empty() {
            return Err(Errno::EFAULT);
        }
        if let Some(end) = chunk.iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return String::from_utf8(out).map_err(|_| Errno::EINVAL);
        }
        out.extend_from_slice(&chunk);
        at += chunk.len() as u64;
    }
    Err(Errno::ENAMETOOLONG)
}

fn read_opt_str(pid: i32, addr: u64) -> Result<Option<String>, Errno> {
    if addr == 0 {
        Ok(None)
    } else {
        read_str(pid, addr).map(Some)
    }
}

/// Protection facts for the agent, measured from the container's init before it starts.
/// `emulated` are the emulated files' (target, source on the host): their keys come from the
/// source, since a path under the container's /proc/sys/net resolves differently from the
/// shim's network namespace.
pub fn measure(
    init_pid: i32,
    pinned_targets: &[&str],
    emulated: &[(String, std::path::PathBuf)],
) -> crate::mountops::Protected {
    use crate::mountops::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY};
    let root = format!("/proc/{init_pid}/root");
    let key_of = |path: &str| {
        nix::sys::stat::stat(path)
            .ok()
            .map(|st| (st.st_dev, st.st_ino))
    };
    let mut protected = crate::mountops::Protected {
        mount_ns: nix::sys::stat::stat(format!("/proc/{init_pid}/ns/mnt").as_str())
            .map(|st| st.st_ino)
            .unwrap_or(0),
        ..Default::default()
    };
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{init_pid}/mountinfo")).unwrap_or_default();
    for entry in eci_sys::mountinfo::entries(&mountinfo) {
        let mount_id = entry.id;
        let mut flags = 0;
        for o in entry.options.split(',') {
            flags |= match o {
                "ro" => MS_RDONLY,
                "nosuid" => MS_NOSUID,
                "nodev" => MS_NODEV,
                "noexec" => MS_NOEXEC,
                _ => 0,
            };
        }
        if flags & MS_RDONLY != 0 {
            if let Some(dev) = entry.dev() {
                protected.read_only.push(crate::mountops::ReadOnlyTree {
                    dev,
                    root: eci_sys::mountinfo::unescape(entry.root)
                        .to_string_lossy()
                        .into_owned(),
                });
            }
        }
        let mountpoint = eci_sys::mountinfo::unescape(entry.mount_point)
            .to_string_lossy()
            .into_owned();
        let source = emulated.iter().find(|(target, _)| *target == mountpoint);
        let key = match source {
            Some((_, source)) => key_of(&source.display().to_string()),
            None => key_of(&format!("{root}{mountpoint}")),
        };
        let Some(k) = key else {
            continue;
        };
        protected.flags.push((k, flags));
        if mountpoint == "/" {
            protected.root = Some(k);
        }
        // The read-only paths of /proc and /sys too: unmounting one shows the writable file
        // system under it.
        let read_only_path = flags & MS_RDONLY != 0
            && (mountpoint.starts_with("/proc/") || mountpoint.starts_with("/sys/"));
        if pinned_targets.contains(&mountpoint.as_str()) || source.is_some() || read_only_path {
            protected.pinned.push((k, mount_id));
        }
        if source.is_some() {
            protected.emulated.push((mountpoint, k));
        }
    }
    protected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_keeps_its_first_cpus() {
        // CPUs 1, 3, 9 and 64 of a 16-byte mask.
        let mut mask = vec![0u8; 16];
        for cpu in [1usize, 3, 9, 64] {
            let (byte, shift) = cpu_bit(cpu, mask.len());
            mask[byte] |= 1 << shift;
        }
        let mut two = mask.clone();
        narrow_mask(&mut two, 2);
        let set: Vec<usize> = (0..128)
            .filter(|c| {
                let (byte, shift) = cpu_bit(*c, two.len());
                two[byte] & (1 << shift) != 0
            })
            .collect();
        assert_eq!(set, vec![1, 3]);
        let mut all = mask.clone();
        narrow_mask(&mut all, 8);
        assert_eq!(all, mask);
    }
}
