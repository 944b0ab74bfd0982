//! One FUSE file system per container, served by a thread of the shim, whose files are bound
//! over single files of the container's /proc and /sys. No daemon, no process per access.

use crate::cgroup::{CgroupView, LimitsCache};
use crate::render;
use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, Notifier, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, SessionACL,
    WriteFlags,
};
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uptime,
    Swaps,
    Meminfo,
    Cpuinfo,
    Stat,
    Loadavg,
    CpuOnline,
    /// A host-wide knob: reads the host's value until the container writes its own.
    Knob,
    /// A per-container identity (dmi product_uuid).
    Uuid,
}

pub struct Emulated {
    /// Where it is bound in the container.
    pub target: &'static str,
    pub kind: Kind,
}

const fn e(target: &'static str, kind: Kind) -> Emulated {
    Emulated { target, kind }
}

/// Every emulated file. Knobs and sysfs files are bound only where the host has them.
pub const EMULATED: &[Emulated] = &[
    e("/proc/uptime", Kind::Uptime),
    e("/proc/swaps", Kind::Swaps),
    e("/proc/meminfo", Kind::Meminfo),
    e("/proc/cpuinfo", Kind::Cpuinfo),
    e("/proc/stat", Kind::Stat),
    e("/proc/loadavg", Kind::Loadavg),
    e("/sys/devices/system/cpu/online", Kind::CpuOnline),
    e("/proc/sys/kernel/panic", Kind::Knob),
    e("/proc/sys/kernel/panic_on_oops", Kind::Knob),
    e("/proc/sys/kernel/printk", Kind::Knob),
    e("/proc/sys/kernel/sysrq", Kind::Knob),
    e("/proc/sys/kernel/kptr_restrict", Kind::Knob),
    e("/proc/sys/kernel/dmesg_restrict", Kind::Knob),
    e("/proc/sys/kernel/pid_max", Kind::Knob),
    e("/proc/sys/vm/overcommit_memory", Kind::Knob),
    e("/proc/sys/vm/mmap_min_addr", Kind::Knob),
    e("/proc/sys/fs/file-max", Kind::Knob),
    e("/proc/sys/fs/nr_open", Kind::Knob),
    e("/proc/sys/fs/protected_hardlinks", Kind::Knob),
    e("/proc/sys/fs/protected_symlinks", Kind::Knob),
    e("/proc/sys/net/netfilter/nf_conntrack_max", Kind::Knob),
    e("/sys/module/nf_conntrack/parameters/hashsize", Kind::Knob),
    e("/sys/kernel/mm/transparent_hugepage/enabled", Kind::Knob),
    e("/sys/kernel/mm/transparent_hugepage/defrag", Kind::Knob),
    e("/sys/devices/virtual/dmi/id/product_uuid", Kind::Uuid),
];

/// How long the kernel may serve a file from its page cache before asking again: the
/// resolution of /proc/uptime (hundredths of a second). Within it an open+read+close costs
/// what a page-cache read costs and never reaches this process; past it, the next read asks
/// for attributes, whose new mtime makes the kernel drop the page (`FUSE_AUTO_INVAL_DATA`),
/// and reads it again. Knobs too: a write invalidates the kernel's cached attributes, so the
/// next read asks for them, sees a new mtime and reads the stored value (not the page the
/// write filled with what was written); a knob the container has not written shows the
/// host's value at most this late.
const CACHED_FOR: Duration = Duration::from_millis(10);
/// The longest value a knob takes (sysfs refuses longer writes with E2BIG, as here); the
/// knobs emulated hold a number or a line of words.
const KNOB_MAX: usize = 4096;
/// What one container's written knob values may hold together, beyond which a write gets
/// ENOSPC: the memory a container can make the shim keep for it.
const KNOBS_HELD_MAX: usize = 16 * 1024;
/// The largest write the kernel hands over in one request. Above [`KNOB_MAX`], so that a
/// longer write(2) is refused whole at its first request; below the kernel's default of up
/// to 1 MiB, which fuser's per-thread buffer would hold resident for the shim's lifetime.
const MAX_WRITE: u32 = 8192;
const _: () = assert!(MAX_WRITE as usize == 2 * KNOB_MAX);
/// How often a FUSE thread asks again whether its container is created (and its cgroup there).
const CHARGE_RETRY: Duration = Duration::from_millis(100);
/// The size files report. procfs reports 0, but the page cache stops at i_size: reads end
/// where the content ends instead (FUSE shrinks i_size to the end of a short page read until
/// the next attribute refresh restores it).
const REPORTED_SIZE: u64 = 1 << 20;
const ROOT: u64 = 1;

fn ino_of(index: usize) -> u64 {
    index as u64 + 2
}

fn entry_of(ino: INodeNo) -> Option<(usize, &'static Emulated)> {
    let index = usize::try_from(ino.0.checked_sub(2)?).ok()?;
    EMULATED.get(index).map(|e| (index, e))
}

fn file_name(e: &Emulated) -> String {
    e.target.trim_start_matches('/').replace('/', "_")
}

fn boottime() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

/// The container as its own processes should see it: uptime from its start, limits from its
/// cgroup. Shared by the emulated files and the supervisor's syscall views.
#[derive(Clone)]
pub struct ContainerView {
    started: Duration,
    limits: Arc<LimitsCache>,
}

impl ContainerView {
    /// The container's cgroup, where work done on its behalf is charged.
    pub fn cgroup(&self) -> &crate::cgroup::CgroupView {
        self.limits.cgroup()
    }

    fn uptime(&self) -> Duration {
        boottime().saturating_sub(self.started)
    }

    /// How many CPUs the container may use, when its cgroup limits them: what the affinity
    /// view shows.
    pub fn cpus(&self) -> Option<u32> {
        self.limits.get().cpus
    }

    /// sysinfo(2) for the container: the kernel's answer with the container's uptime, memory,
    /// swap (none), load (none of the host's) and process count.
    pub fn sysinfo(&self) -> std::io::Result<libc::sysinfo> {
        // SAFETY: sysinfo is plain data the kernel fills in.
        let mut host: libc::sysinfo = unsafe { std::mem::zeroed() };
        // SAFETY: sysinfo writes one struct sysinfo into ours.
        if unsafe { libc::sysinfo(&mut host) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tasks = self.limits.cgroup().tasks();
        Ok(render::sysinfo(
            &host,
            self.uptime(),
            &self.limits.get(),
            tasks,
        ))
    }
}

/// The FUSE threads serving one container, moved into its CPU cgroup (cgroup v1) so that
/// reading its emulated files in a loop spends its own quota, not the shim's.
#[derive(Default)]
struct Charged {
    /// Set once the container is created: before, requests are the shim's own set-up work,
    /// and a thread in the cgroup would keep a failed create's cleanup from removing it.
    armed: bool,
    /// Set when the container goes: no thread joins its cgroup after.
    released: bool,
    tids: Vec<i32>,
}

#[derive(Clone, Copy)]
enum ChargeState {
    /// Not yet in the container's cgroup; the last attempt, if any.
    Pending(Option<Instant>),
    Done,
}

thread_local! {
    /// Each Fs has threads of its own (one fuser session per container), so one state per
    /// thread is one per container.
    static CHARGE: Cell<ChargeState> = const { Cell::new(ChargeState::Pending(None)) };
}

struct Fs {
    view: ContainerView,
    charged: Arc<Mutex<Charged>>,
    /// Whether an oversized knob write was logged already: once per container, so that a
    /// loop of them cannot fill the shim's log.
    told_size: AtomicBool,
    /// Host ID of the container's root, so that files appear as root's inside.
    owner: Arc<AtomicU32>,
    host_cpus: u32,
    uuid: String,
    knobs: Mutex<HashMap<usize, Vec<u8>>>,
}

impl Fs {
    fn limits(&self) -> crate::cgroup::Limits {
        self.view.limits.get()
    }

    /// Put the calling FUSE thread into the container's CPU cgroup, once (see [`Charged`]).
    /// Under the lock, so that a release in between cannot miss it.
    fn charge_this_thread(&self) {
        CHARGE.with(|state| {
            if let ChargeState::Pending(last) = state.get() {
                if last.is_some_and(|at| at.elapsed() < CHARGE_RETRY) {
                    return;
                }
                let mut charged = self.charged.lock().unwrap_or_else(|p| p.into_inner());
                if !charged.armed || charged.released {
                    return state.set(ChargeState::Pending(Some(Instant::now())));
                }
                let tid = nix::unistd::gettid().as_raw();
                match self.view.cgroup().charge(tid, false) {
                    Ok(true) => {
                        charged.tids.push(tid);
                        state.set(ChargeState::Done);
                    }
                    // cgroup v2: a domain cgroup takes whole processes only.
                    Ok(false) => state.set(ChargeState::Done),
                    Err(e) => {
                        // Perhaps in one of the two hierarchies: given back all the same.
                        if !charged.tids.contains(&tid) {
                            charged.tids.push(tid);
                        }
                        log::warn!("emulation thread {tid} stays in the shim's cgroup: {e}");
                        state.set(ChargeState::Done);
                    }
                }
            }
        })
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm) = match entry_of(INodeNo(ino)) {
            None => (FileType::Directory, 0o555),
            Some((_, e)) if e.kind == Kind::Knob => (FileType::RegularFile, 0o644),
            Some(_) => (FileType::RegularFile, 0o444),
        };
        let owner = self.owner.load(Ordering::Relaxed);
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(ino),
            size: if kind == FileType::RegularFile {
                REPORTED_SIZE
            } else {
                0
            },
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: owner,
            gid: owner,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn cpus(&self, limits: &crate::cgroup::Limits) -> u32 {
        limits
            .cpus
            .unwrap_or(self.host_cpus)
            .clamp(1, self.host_cpus.max(1))
    }

    fn render(&self, index: usize, e: &Emulated) -> Vec<u8> {
        let host = || std::fs::read_to_string(e.target).unwrap_or_default();
        match e.kind {
            Kind::Uptime => render::uptime(self.view.uptime().as_secs_f64()).into_bytes(),
            Kind::Swaps => render::swaps().into_bytes(),
            Kind::Meminfo => render::meminfo(&host(), &self.limits()).into_bytes(),
            Kind::Cpuinfo => render::cpuinfo(&host(), self.cpus(&self.limits())).into_bytes(),
            Kind::Stat => render::stat(&host(), self.cpus(&self.limits())).into_bytes(),
            Kind::Loadavg => {
                let tasks = self.view.limits.cgroup().tasks();
                render::loadavg(1, tasks).into_bytes()
            }
            Kind::CpuOnline => render::cpu_online(self.cpus(&self.limits())).into_bytes(),
            Kind::Uuid => format!("{}\n", self.uuid).into_bytes(),
            Kind::Knob => {
                let knobs = self.knobs.lock().expect("knobs lock");
                knobs
                    .get(&index)
                    .cloned()
                    .unwrap_or_else(|| host().into_bytes())
            }
        }
    }

    fn tell_once(&self, message: std::fmt::Arguments) {
        if !self.told_size.swap(true, Ordering::Relaxed) {
            log::warn!("{}: {message}", self.view.cgroup().path().display());
        }
    }

    /// The kernel already checked the mode bits (`default_permissions`); this keeps writes to
    /// the container's root and host root even if those bits change.
    fn may_write(&self, req: &Request) -> bool {
        let uid = req.uid();
        uid == 0 || uid == self.owner.load(Ordering::Relaxed)
    }
}

/// A knob written with one word of a `a [b] c` choice list shows that word selected.
fn store_knob(current: &str, written: &[u8]) -> Vec<u8> {
    let word = String::from_utf8_lossy(written).trim().to_string();
    if current.contains('[') {
        let choices: Vec<&str> = current
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '[' || c == ']'))
            .collect();
        if choices.contains(&word.as_str()) {
            let line: Vec<String> = choices
                .iter()
                .map(|c| {
                    if *c == word {
                        format!("[{c}]")
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            return format!("{}\n", line.join(" ")).into_bytes();
        }
    }
    format!("{word}\n").into_bytes()
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.charge_this_thread();
        if parent.0 != ROOT {
            return reply.error(Errno::ENOENT);
        }
        match EMULATED
            .iter()
            .position(|e| OsStr::new(&file_name(e)) == name)
        {
            Some(i) => reply.entry(&CACHED_FOR, &self.attr(ino_of(i)), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.charge_this_thread();
        if ino.0 == ROOT || entry_of(ino).is_some() {
            reply.attr(&CACHED_FOR, &self.attr(ino.0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.charge_this_thread();
        // Only truncation (O_TRUNC of `echo v > knob`) is accepted, and it changes nothing:
        // the following write replaces the value whole.
        match entry_of(ino) {
            Some((_, e)) if e.kind == Kind::Knob && size == Some(0) && self.may_write(req) => {
                reply.attr(&CACHED_FOR, &self.attr(ino.0))
            }
            _ => reply.error(Errno::EACCES),
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Without it a cached page would outlive the attribute refresh (see CACHED_FOR).
        config
            .add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA)
            .map_err(|_| std::io::Error::other("the kernel's FUSE lacks FUSE_AUTO_INVAL_DATA"))?;
        config
            .set_max_write(MAX_WRITE)
            .map_err(|max| std::io::Error::other(format!("FUSE max_write above {max}")))?;
        Ok(())
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // ENOSYS once, and the kernel opens every file without asking (and never sends a
        // release): no round trip per open. Permissions are the kernel's (default_permissions,
        // files owned by the container's root); writes are checked again in `write`.
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.charge_this_thread();
        let Some((index, e)) = entry_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let data = self.render(index, e);
        let start = usize::try_from(offset).map_or(data.len(), |o| o.min(data.len()));
        let end = (start + size as usize).min(data.len());
        reply.data(&data[start..end]);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.charge_this_thread();
        match entry_of(ino) {
            Some((index, e)) if e.kind == Kind::Knob && self.may_write(req) => {
                if data.len() > KNOB_MAX {
                    self.tell_once(format_args!(
                        "a write of {} bytes to {} was refused (E2BIG): a knob holds at most \
                         {KNOB_MAX} bytes (rule knob-size; write a shorter value)",
                        data.len(),
                        e.target
                    ));
                    return reply.error(Errno::E2BIG);
                }
                let current = String::from_utf8_lossy(&self.render(index, e)).into_owned();
                let value = store_knob(&current, data);
                let mut knobs = self.knobs.lock().expect("knobs lock");
                let others: usize = knobs
                    .iter()
                    .filter(|(i, _)| **i != index)
                    .map(|(_, v)| v.len())
                    .sum();
                if others + value.len() > KNOBS_HELD_MAX {
                    drop(knobs);
                    self.tell_once(format_args!(
                        "a write to {} was refused (ENOSPC): the container's knob values \
                         would hold more than {KNOBS_HELD_MAX} bytes (rule knob-size; write \
                         shorter values)",
                        e.target
                    ));
                    return reply.error(Errno::ENOSPC);
                }
                knobs.insert(index, value);
                // At most MAX_WRITE bytes: the kernel hands over no more in one request.
                reply.written(u32::try_from(data.len()).unwrap_or(MAX_WRITE));
            }
            _ => reply.error(Errno::EACCES),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        // ENOSYS once, and the kernel stops sending flushes: one round trip less per close.
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.charge_this_thread();
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        for (i, e) in EMULATED
            .iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(
                INodeNo(ino_of(i)),
                i as u64 + 1,
                FileType::RegularFile,
                file_name(e),
            ) {
                break;
            }
        }
        reply.ok();
    }
}

/// A container's emulation: the FUSE mount and the thread serving it. Dropping it unmounts.
pub struct Emulation {
    dir: PathBuf,
    owner: Arc<AtomicU32>,
    view: ContainerView,
    charged: Arc<Mutex<Charged>>,
    _session: BackgroundSession,
}

impl Drop for Emulation {
    /// The threads go back to the shim's cgroup before the session ends (they outlive it
    /// while any copy of the mount lives), so that the container's cgroup can be removed.
    fn drop(&mut self) {
        let mut charged = self.charged.lock().unwrap_or_else(|p| p.into_inner());
        charged.released = true;
        for tid in charged.tids.drain(..) {
            if let Err(e) = self.view.cgroup().uncharge(tid) {
                log::warn!("emulation thread {tid} left in the container's cgroup: {e}");
            }
        }
    }
}

impl Emulation {
    /// Mount the container's emulation at `dir`. `cgroups_path` is the spec's
    /// linux.cgroupsPath; `id` seeds the per-container identity files.
    pub fn start(dir: &Path, cgroups_path: &Path, id: &str) -> std::io::Result<Emulation> {
        std::fs::create_dir_all(dir)?;
        let owner = Arc::new(AtomicU32::new(0));
        let view = ContainerView {
            started: boottime(),
            limits: Arc::new(LimitsCache::new(CgroupView::new(cgroups_path))),
        };
        let charged = Arc::new(Mutex::new(Charged::default()));
        let fs = Fs {
            view: view.clone(),
            charged: charged.clone(),
            told_size: AtomicBool::new(false),
            owner: owner.clone(),
            host_cpus: host_cpus(),
            uuid: uuid_for(id),
            knobs: Mutex::new(HashMap::new()),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("eci-emulation".into()),
            MountOption::Subtype("eci".into()),
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::NoExec,
            MountOption::DefaultPermissions,
        ];
        config.acl = SessionACL::All;
        // Two threads with their own fds: a request finds a thread awake more often, which
        // here cut the p50 of open+read+close of /proc/uptime from ~210 to ~20 µs.
        config.n_threads = Some(2);
        config.clone_fd = true;
        let session = fuser::spawn_mount(fs, dir, &config)?;
        Ok(Emulation {
            dir: dir.to_path_buf(),
            owner,
            view,
            charged,
            _session: session,
        })
    }

    /// Files appear owned by this host ID (the container's root). Attributes the kernel
    /// cached while the container was being set up are dropped. From now on the threads
    /// serving it join its CPU cgroup (see [`Charged`]).
    pub fn set_owner(&self, host_uid: u32) {
        self.owner.store(host_uid, Ordering::Relaxed);
        self.charged.lock().unwrap_or_else(|p| p.into_inner()).armed = true;
        let notifier: Notifier = self._session.notifier();
        for ino in std::iter::once(ROOT).chain((0..EMULATED.len()).map(ino_of)) {
            // ENOENT: the kernel has not looked that file up yet, nothing to drop.
            let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
        }
    }

    /// (source on the host, target in the container, writable) for every file the host has.
    pub fn binds(&self) -> Vec<(PathBuf, PathBuf, bool)> {
        EMULATED
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    Kind::Uptime
                        | Kind::Swaps
                        | Kind::Meminfo
                        | Kind::Cpuinfo
                        | Kind::Stat
                        | Kind::Loadavg
                ) || Path::new(e.target).exists()
            })
            .map(|e| {
                (
                    self.dir.join(file_name(e)),
                    PathBuf::from(e.target),
                    e.kind == Kind::Knob,
                )
            })
            .collect()
    }

    /// Where the emulation is mounted on the host.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The container's view, for the supervisor's answers to sched_getaffinity and sysinfo.
    pub fn view(&self) -> ContainerView {
        self.view.clone()
    }
}

fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// A stable, container-specific UUID-shaped identity (not the host's).
fn uuid_for(id: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut parts = [0u64; 2];
    for (i, p) in parts.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (id, i, std::process::id()).hash(&mut h);
        *p = h.finish();
    }
    let hex = format!("{:016x}{:016x}", parts[0], parts[1]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_knobs_keep_their_format() {
        assert_eq!(
            store_knob("always [madvise] never\n", b"never\n"),
            b"always madvise [never]\n"
        );
        assert_eq!(store_knob("1\n", b"0\n"), b"0\n");
        assert_eq!(store_knob("always [madvise] never\n", b"bogus"), b"bogus\n");
    }

    #[test]
    fn names_are_flat_and_unique() {
        let names: std::collections::BTreeSet<_> = EMULATED.iter().map(file_name).collect();
        assert_eq!(names.len(), EMULATED.len());
        assert!(names.contains("proc_uptime"));
        assert_eq!(uuid_for("a").len(), 36);
    }
}
