//! Cross-process, crash-safe ID block leases. containerd runs one shim per container, so the
//! shims agree through the file system: a lease is a file named after its block's first ID,
//! created with O_EXCL. A lease outlives a killed shim and is reclaimed once neither its shim
//! nor its container's init is alive (each checked by pid and start time, against pid reuse).
//!
//! A container keeps its block while it exists: when its task is deleted the lease is *parked*
//! (no shim, no init) with an [`Anchor`] naming the container, taken back by the container's
//! next task, and released once the anchor says the container is gone (checked at every
//! allocation) — or handed to another container when the pool has no free block left. Every
//! change of a lease file is made under one `flock` of the directory, so two allocators never
//! both take, reclaim or re-create one lease; a shim that dies holding it releases it.

use eci_policy::{IdBlock, IdPool, BLOCK_SIZE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Most parked leases whose containerd is asked about at one allocation (a question costs
/// about what the image lookup does); the rest wait for a later one, or for a full pool.
const MAX_ASKED: usize = 16;

/// Where the shim keeps the ID block leases.
pub const DEFAULT_LEASE_DIR: &str = "/run/containerd-shim-eci/leases";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{}", .0)]
    Exhausted(eci_policy::Refusal),
    #[error("eci: the pod's ID block {first}..{end} is already leased to container {holder} (rule user-namespace; every pod with hostUsers: false needs a block of its own: let the kubelet pick it)", end = u64::from(*first) + 65536)]
    BlockTaken { first: u32, holder: String },
    #[error("ID lease directory {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// A live process identified so that a recycled pid does not pass for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessRef {
    pub fn of(pid: i32) -> Option<ProcessRef> {
        Some(ProcessRef {
            pid,
            start_time: start_time(pid)?,
        })
    }
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 of /proc/PID/stat, in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub namespace: String,
    pub container: String,
    pub holder: Option<ProcessRef>,
    pub init: Option<ProcessRef>,
    /// Inode of the container's user namespace. Containers that join it (a pod, `--net
    /// container:X`) take no lease of their own: the block stays leased while any process is in
    /// that namespace, even after the container that created it is gone.
    #[serde(default)]
    pub user_ns: Option<u64>,
    /// The container this block is kept for between its tasks. None: the block goes with the
    /// task (a pod's own block, or a container containerd could not identify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
    /// Kept for its container between tasks. Its `holder` is then the host's init, so that a
    /// shim of an older version sharing this directory (one still serving a container started
    /// before an upgrade), which knows no parking, sees the lease held and leaves it alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
}

/// What identifies a container — not just its id, which a new container may reuse once the old
/// one is deleted — so that its parked block is given back to it and to nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// A containerd container: its containerd's address and its creation time there
    /// (`seconds.nanoseconds`); a new container with the same id is created at another time.
    Containerd { address: PathBuf, created: String },
    /// A Docker container. dockerd deletes its containerd container when the task exits and
    /// creates a new one at each start, so that one cannot be the anchor; the Docker container
    /// is its directory in dockerd's data root (`…/containers/<id>`), which `docker rm` removes.
    /// Device and inode, so that a directory made again under the same name is another.
    Directory { path: PathBuf, dev: u64, ino: u64 },
}

/// Whether a parked lease's container still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Exists,
    Gone,
    /// Its containerd did not answer: kept, unless the pool has no other block.
    Unknown,
}

/// What containerd recorded under a container's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A container created at this time (`seconds.nanoseconds`).
    Created(String),
    Absent,
    /// containerd could not be asked.
    Unknown,
}

/// Asks containerd which containers exist: one connection per address, however many names.
pub trait Registry {
    fn created(&self, address: &Path, names: &[(String, String)]) -> Vec<Recorded>;
}

impl Anchor {
    /// The anchor of a directory as it is now.
    pub fn directory(path: &Path) -> Option<Anchor> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(path).ok().filter(|m| m.is_dir())?;
        Some(Anchor::Directory {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

impl LeaseRecord {
    /// A shim, an init or (for joined containers) a process in its user namespace uses it.
    fn is_live(&self) -> bool {
        (!self.parked && self.holder.is_some_and(|p| p.is_alive()))
            || self.init.is_some_and(|p| p.is_alive())
            || self.user_ns.is_some_and(user_ns_in_use)
    }

    /// Kept for a container whose task is gone.
    pub fn is_parked(&self) -> bool {
        self.anchor.is_some() && !self.is_live()
    }

    /// Abandoned, with nothing to keep it for.
    fn is_stale(&self) -> bool {
        self.anchor.is_none() && !self.is_live()
    }

    /// The same container, parked by an earlier task of it.
    fn is_parked_for(&self, record: &LeaseRecord) -> bool {
        record.anchor.is_some()
            && self.anchor == record.anchor
            && self.namespace == record.namespace
            && self.container == record.container
            && self.is_parked()
    }

    /// Whether the block can go now that this container is deleted.
    pub fn releasable(&self) -> bool {
        !self.user_ns.is_some_and(user_ns_in_use)
    }
}

/// Host UID ranges (first, length) mapped by the user namespaces of live processes other than
/// the host's own: one `stat` per process and one read per distinct namespace, so the cost
/// grows with the number of processes, not with the size of the pool.
pub fn live_id_ranges() -> Vec<(u32, u32)> {
    let ns_of = |pid: &str| nix::sys::stat::stat(format!("/proc/{pid}/ns/user").as_str());
    let mut seen = std::collections::HashSet::new();
    if let Ok(own) = ns_of("self") {
        seen.insert(own.st_ino);
    }
    let mut ranges = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(st) = ns_of(pid) else {
            continue;
        };
        if !seen.insert(st.st_ino) {
            continue;
        }
        let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
        ranges.extend(parse_id_map(&map));
    }
    ranges
}

/// The (host first ID, length) of each line of a uid_map read from the host's namespace.
pub fn parse_id_map(map: &str) -> Vec<(u32, u32)> {
    map.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1).map(|w| w.parse::<u32>().ok());
            Some((f.next()??, f.next()??))
        })
        .collect()
}

/// Whether any process is still in the user namespace with this inode.
pub fn user_ns_in_use(inode: u64) -> bool {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .any(|pid| in_user_ns(pid, inode))
}

/// Whether process `pid` is in the user namespace with this inode. A zombie still is: its
/// credentials, which name the namespace, live until it is reaped.
pub fn in_user_ns(pid: i32, inode: u64) -> bool {
    nix::sys::stat::stat(format!("/proc/{pid}/ns/user").as_str()).is_ok_and(|st| st.st_ino == inode)
}

pub struct LeaseDir {
    dir: PathBuf,
}

impl LeaseDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LeaseDir { dir: dir.into() }
    }

    fn path(&self, block: IdBlock) -> PathBuf {
        self.dir.join(block.first.to_string())
    }

    fn err(&self, e: io::Error) -> LeaseError {
        LeaseError::Io(self.dir.clone(), e)
    }

    /// Lease a block of `pool` for `record`: the block parked for the same container if there
    /// is one, else the lowest free block, else (the pool is full) an abandoned or parked one.
    /// A block that a live user namespace maps is never handed out, whatever its lease file says
    /// or whether it has one: the lease files are the allocator's bookkeeping, the kernel's ID
    /// maps are the truth. Parked leases whose container is gone are released on the way.
    pub fn acquire(
        &self,
        pool: &IdPool,
        record: &LeaseRecord,
        registry: &dyn Registry,
    ) -> Result<IdBlock, LeaseError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        let body = serde_json::to_vec(record).expect("lease record serializes");
        let live = live_id_ranges();
        let mapped = |b: IdBlock| {
            live.iter().any(|&(start, len)| {
                let (start, end) = (u64::from(start), u64::from(start) + u64::from(len));
                start < u64::from(b.first) + u64::from(b.size()) && u64::from(b.first) < end
            })
        };
        // Asked before the lock: containerd may be slow, the lock is held for file changes only.
        let presence = self.parked_presence(registry, Some(record), MAX_ASKED);
        let _lock = self.lock()?;
        self.release_gone(&presence);

        // The container's own parked block, unless something maps it now.
        let own = self
            .entries()
            .into_iter()
            .find(|(_, r, _)| r.is_parked_for(record));
        if let Some((block, _, _)) = own {
            if pool.block_at(block.first).is_some() && !mapped(block) {
                self.write(block, &body).map_err(|e| self.err(e))?;
                return Ok(block);
            }
            self.remove(block);
        }

        let taken = self.taken(pool);
        for block in pool.candidates(&taken) {
            if mapped(block) {
                continue;
            }
            match self.create(block, &body) {
                Ok(()) => return Ok(block),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        // No free block: the abandoned ones first, then those whose containerd cannot be
        // asked, then the block parked longest. A stopped container that loses its block gets
        // another at its next start; its files are container-relative, so nothing is lost.
        let gone_or_unknown = |b: IdBlock| {
            presence
                .iter()
                .find(|(pb, _, _)| *pb == b)
                .map_or(Presence::Exists, |(_, _, p)| *p)
        };
        let spare: Vec<(u8, std::time::SystemTime, IdBlock, LeaseRecord)> = self
            .entries()
            .into_iter()
            .filter(|(block, r, _)| {
                pool.block_at(block.first).is_some() && !mapped(*block) && !r.is_live()
            })
            .map(|(block, r, modified)| {
                let rank = match (&r.anchor, gone_or_unknown(block)) {
                    (None, _) => 0,
                    (Some(_), Presence::Unknown) => 1,
                    _ => 2,
                };
                (rank, modified, block, r)
            })
            .collect();
        if let Some((_, _, block, r)) = spare
            .into_iter()
            .min_by_key(|(rank, modified, block, _)| (*rank, *modified, *block))
        {
            if r.anchor.is_some() {
                log::warn!(
                    "ID pool full: block {} parked for stopped container {}/{} goes to {}/{}",
                    block.first,
                    r.namespace,
                    r.container,
                    record.namespace,
                    record.container
                );
            }
            self.write(block, &body).map_err(|e| self.err(e))?;
            return Ok(block);
        }
        // Unreadable lease files (a shim between create and write) are reclaimed when old.
        for block in self.taken(pool) {
            if !mapped(block) && self.reclaim_if_stale(block) && self.create(block, &body).is_ok() {
                return Ok(block);
            }
        }
        Err(LeaseError::Exhausted(self.exhausted(pool)))
    }

    /// The parked leases (other than `own`'s) and whether their containers still exist: a
    /// directory anchor is one `stat`, containerd anchors one question each, at most `limit`
    /// of them (from a place that moves with the pid, so that all are asked over time), one
    /// connection per containerd.
    fn parked_presence(
        &self,
        registry: &dyn Registry,
        own: Option<&LeaseRecord>,
        limit: usize,
    ) -> Vec<(IdBlock, Vec<u8>, Presence)> {
        let mut parked: Vec<(IdBlock, Vec<u8>, LeaseRecord)> = Vec::new();
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let Some(first) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(bytes) = fs::read(entry.path()) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<LeaseRecord>(&bytes) else {
                continue;
            };
            if own.is_some_and(|own| record.is_parked_for(own)) || !record.is_parked() {
                continue;
            }
            parked.push((IdBlock { first }, bytes, record));
        }
        let mut answers = Vec::new();
        let mut asks: std::collections::BTreeMap<PathBuf, Vec<(IdBlock, Vec<u8>, LeaseRecord)>> =
            Default::default();
        let skip = if parked.is_empty() {
            0
        } else {
            std::process::id() as usize % parked.len()
        };
        parked.rotate_left(skip);
        let mut asked = 0;
        for (block, bytes, record) in parked {
            match &record.anchor {
                Some(Anchor::Directory { path, .. }) => {
                    let now = Anchor::directory(path);
                    let p = if now == record.anchor {
                        Presence::Exists
                    } else {
                        Presence::Gone
                    };
                    answers.push((block, bytes, p));
                }
                Some(Anchor::Containerd { address, .. }) if asked < limit => {
                    asked += 1;
                    asks.entry(address.clone())
                        .or_default()
                        .push((block, bytes, record));
                }
                _ => answers.push((block, bytes, Presence::Unknown)),
            }
        }
        for (address, leases) in asks {
            let names: Vec<(String, String)> = leases
                .iter()
                .map(|(_, _, r)| (r.namespace.clone(), r.container.clone()))
                .collect();
            let recorded = registry.created(&address, &names);
            for (i, (block, bytes, record)) in leases.into_iter().enumerate() {
                let p = match (recorded.get(i), &record.anchor) {
                    (Some(Recorded::Created(c)), Some(Anchor::Containerd { created, .. })) => {
                        if c == created {
                            Presence::Exists
                        } else {
                            Presence::Gone
                        }
                    }
                    (Some(Recorded::Absent), _) => Presence::Gone,
                    _ => Presence::Unknown,
                };
                answers.push((block, bytes, p));
            }
        }
        answers
    }

    /// Release the parked leases whose containers are gone, if unchanged since they were judged.
    /// Called with the lock held.
    fn release_gone(&self, presence: &[(IdBlock, Vec<u8>, Presence)]) {
        for (block, bytes, p) in presence {
            if *p == Presence::Gone && fs::read(self.path(*block)).ok().as_ref() == Some(bytes) {
                log::info!("released ID block {} of a deleted container", block.first);
                self.remove(*block);
            }
        }
    }

    /// Release every parked lease whose container is gone and every stale lease: what the
    /// next allocation would do, for `containerd-shim-eci-v2 leases sweep`.
    pub fn sweep_parked(&self, registry: &dyn Registry) -> Result<(), LeaseError> {
        let presence = self.parked_presence(registry, None, usize::MAX);
        let _lock = self.lock()?;
        self.release_gone(&presence);
        self.sweep_locked();
        Ok(())
    }

    /// The lease directory's lock, held until the returned file is dropped (or its holder dies).
    fn lock(&self) -> Result<fs::File, LeaseError> {
        use std::os::fd::AsRawFd;
        fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))
            .map_err(|e| self.err(e))?;
        loop {
            // SAFETY: flock on an fd this function owns; no memory is passed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(f);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(self.err(e));
            }
        }
    }

    /// Every readable lease: block, record, time of its last change.
    fn entries(&self) -> Vec<(IdBlock, LeaseRecord, std::time::SystemTime)> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let first = e.file_name().to_str()?.parse().ok()?;
                let record = self.read_path(&e.path())?;
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((IdBlock { first }, record, modified))
            })
            .collect()
    }

    fn remove(&self, block: IdBlock) {
        let _ = fs::remove_file(self.path(block));
    }

    /// Replace a lease file whole (write aside, rename over). Called with the lock held.
    fn write(&self, block: IdBlock, body: &[u8]) -> io::Result<()> {
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", block.first, std::process::id()));
        fs::write(&tmp, body)?;
        fs::rename(&tmp, self.path(block)).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Every block is held by a container that exists (a stopped one keeps its block until it
    /// is deleted): say which, so the administrator knows what to delete.
    fn exhausted(&self, pool: &IdPool) -> eci_policy::Refusal {
        let mut holders: Vec<String> = self
            .taken(pool)
            .into_iter()
            .filter_map(|block| self.read(block))
            .map(|r| {
                let stopped = if r.is_parked() { " (stopped)" } else { "" };
                format!("{}/{}{stopped}", r.namespace, r.container)
            })
            .collect();
        holders.sort();
        const NAMED: usize = 10;
        let more = holders.len().saturating_sub(NAMED);
        holders.truncate(NAMED);
        let mut named = holders.join(", ");
        if more > 0 {
            named.push_str(&format!(" and {more} more"));
        }
        eci_policy::Refusal::new(
            eci_policy::Rule::IdPoolExhausted,
            format!(
                "no free ID block: all {} blocks of 65536 IDs from {} are leased to containers that still exist: {named}",
                pool.blocks, pool.first
            ),
            "delete containers that are no longer needed (a stopped container keeps its block until it is deleted), or raise id_pool.blocks in the ECI policy",
        )
    }

    /// Lease exactly `block`, a block outside the pool that a pod asked for (the kubelet's), so
    /// that no two ECI containers ever share it. A stale lease of it is reclaimed; a live one,
    /// or a live lease of any block overlapping it, refuses.
    pub fn acquire_exact(&self, block: IdBlock, record: &LeaseRecord) -> Result<(), LeaseError> {
        let _lock = self.lock()?;
        let body = serde_json::to_vec(record).expect("lease record serializes");
        let taken = |first: u32| {
            let holder = self
                .read(IdBlock { first })
                .map(|r| format!("{}/{}", r.namespace, r.container))
                .unwrap_or_else(|| "(unknown)".into());
            LeaseError::BlockTaken {
                first: block.first,
                holder,
            }
        };
        let lo = u64::from(block.first);
        for entry in fs::read_dir(&self.dir).map_err(|e| self.err(e))?.flatten() {
            let Some(first) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let f = u64::from(first);
            let overlaps =
                f != lo && f < lo + u64::from(BLOCK_SIZE) && lo < f + u64::from(BLOCK_SIZE);
            if overlaps && !self.reclaim_unused(IdBlock { first }) {
                return Err(taken(first));
            }
        }
        match self.create(block, &body) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.reclaim_unused(block) && self.create(block, &body).is_ok() {
                    Ok(())
                } else {
                    Err(taken(block.first))
                }
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn create(&self, block: IdBlock, body: &[u8]) -> io::Result<()> {
        let path = self.path(block);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(body).inspect_err(|_| {
            let _ = fs::remove_file(&path);
        })
    }

    /// Blocks with a lease file, stale or not.
    fn taken(&self, pool: &IdPool) -> BTreeSet<IdBlock> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter_map(|first| pool.block_at(first))
            .collect()
    }

    /// Remove the lease of `block` if nothing uses it: stale or parked. A pod's own block (the
    /// kubelet's choice, outside the pool) is not kept from it for a stopped container.
    fn reclaim_unused(&self, block: IdBlock) -> bool {
        self.reclaim_if(block, |r| !r.is_live())
    }

    /// Remove the lease of `block` if its shim and container are gone and it is not parked for
    /// its container. A lease that cannot be read is left alone unless it is old: a shim may be
    /// between create and write.
    fn reclaim_if_stale(&self, block: IdBlock) -> bool {
        self.reclaim_if(block, LeaseRecord::is_stale)
    }

    fn reclaim_if(&self, block: IdBlock, unused: impl Fn(&LeaseRecord) -> bool) -> bool {
        let path = self.path(block);
        let stale = match self.read_path(&path) {
            Some(record) => unused(&record),
            None => fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 60)),
        };
        // Rename first so that two reclaimers cannot both remove a lease a third just created.
        if stale {
            let grave = self
                .dir
                .join(format!(".stale-{}-{}", block.first, std::process::id()));
            if fs::rename(&path, &grave).is_ok() {
                let _ = fs::remove_file(grave);
                return true;
            }
        }
        false
    }

    fn read_path(&self, path: &Path) -> Option<LeaseRecord> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    pub fn read(&self, block: IdBlock) -> Option<LeaseRecord> {
        self.read_path(&self.path(block))
    }

    /// Rewrite a held lease, e.g. to record the container's init once it exists.
    pub fn update(&self, block: IdBlock, record: &LeaseRecord) -> Result<(), LeaseError> {
        let _lock = self.lock()?;
        self.write(
            block,
            &serde_json::to_vec(record).expect("lease record serializes"),
        )
        .map_err(|e| self.err(e))
    }

    pub fn release(&self, block: IdBlock) -> Result<(), LeaseError> {
        let _lock = self.lock()?;
        match fs::remove_file(self.path(block)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err(e)),
            _ => Ok(()),
        }
    }

    /// Release every stale lease: a block whose container is gone and that no joined container
    /// uses any more. Parked leases stay (see [`LeaseDir::acquire`]).
    pub fn sweep(&self) {
        if let Ok(_lock) = self.lock() {
            self.sweep_locked();
        }
    }

    fn sweep_locked(&self) {
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if let Some(block) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse().ok())
                .map(|first| IdBlock { first })
            {
                self.reclaim_if_stale(block);
            }
        }
    }

    /// The block leased to a container, if any: a live lease before a parked one (a container
    /// of the same name on another containerd may have one parked).
    pub fn find(&self, namespace: &str, container: &str) -> Option<IdBlock> {
        let mut found: Vec<(bool, IdBlock)> = fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let first: u32 = e.file_name().to_str()?.parse().ok()?;
                let record = self.read_path(&e.path())?;
                (record.namespace == namespace && record.container == container)
                    .then(|| (!record.is_live(), IdBlock { first }))
            })
            .collect();
        found.sort();
        found.first().map(|(_, block)| *block)
    }

    /// Keep `block` for its container, whose task is deleted: no shim, no init. The user
    /// namespace is kept while a joined container still uses it (the block is live until then).
    pub fn park(
        &self,
        block: IdBlock,
        record: LeaseRecord,
        joined: bool,
    ) -> Result<(), LeaseError> {
        let record = LeaseRecord {
            holder: ProcessRef::of(1),
            init: None,
            user_ns: record.user_ns.filter(|_| joined),
            parked: true,
            ..record
        };
        self.update(block, &record)
    }
}

impl LeaseDir {
    /// The block whose container's init is `pid`.
    pub fn held_by_init(&self, pid: i32) -> Option<IdBlock> {
        fs::read_dir(&self.dir).ok()?.flatten().find_map(|e| {
            let first: u32 = e.file_name().to_str()?.parse().ok()?;
            let record = self.read_path(&e.path())?;
            record
                .init
                .filter(|p| p.pid == pid && p.is_alive())
                .map(|_| IdBlock { first })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far above the blocks this machine's containers use: a block a live namespace maps is
    /// never handed out.
    const POOL: u32 = 3_600_000_000;

    /// A lease directory of the test's own, removed when the test ends.
    struct TestDir(LeaseDir, PathBuf);

    impl std::ops::Deref for TestDir {
        type Target = LeaseDir;
        fn deref(&self) -> &LeaseDir {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.1);
        }
    }

    fn dir(name: &str) -> TestDir {
        let d = std::env::temp_dir().join(format!("eci-lease-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        TestDir(LeaseDir::new(d.clone()), d)
    }

    fn record(id: &str, holder: Option<ProcessRef>) -> LeaseRecord {
        LeaseRecord {
            namespace: "default".into(),
            container: id.into(),
            holder,
            init: None,
            user_ns: None,
            anchor: None,
            parked: false,
        }
    }

    /// A containerd that knows the containers in its map, by id, with their creation times.
    struct Known(std::collections::HashMap<String, String>);

    impl Registry for Known {
        fn created(&self, _: &Path, names: &[(String, String)]) -> Vec<Recorded> {
            names
                .iter()
                .map(|(_, id)| match self.0.get(id) {
                    Some(c) => Recorded::Created(c.clone()),
                    None => Recorded::Absent,
                })
                .collect()
        }
    }

    fn none() -> Known {
        Known(Default::default())
    }

    fn anchored(id: &str, created: &str, holder: Option<ProcessRef>) -> LeaseRecord {
        LeaseRecord {
            anchor: Some(Anchor::Containerd {
                address: "/run/test.sock".into(),
                created: created.into(),
            }),
            ..record(id, holder)
        }
    }

    #[test]
    fn a_container_gets_its_parked_block_back_until_it_is_deleted() {
        let d = dir("parked");
        let pool = IdPool {
            first: POOL,
            blocks: 3,
        };
        let me = ProcessRef::of(std::process::id().cast_signed());
        let mut known = Known(
            [("a".to_string(), "1.000000001".to_string())]
                .into_iter()
                .collect(),
        );
        let a = d
            .acquire(&pool, &anchored("a", "1.000000001", me), &known)
            .unwrap();
        // The task is deleted: parked, not released; another container does not get it.
        d.park(a, d.read(a).unwrap(), false).unwrap();
        assert!(d.read(a).unwrap().is_parked());
        // A shim that knows no parking judges a lease by its holder: held (the host's init).
        assert!(d.read(a).unwrap().holder.is_some_and(|p| p.is_alive()));
        let b = d.acquire(&pool, &record("b", me), &known).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            d.acquire(&pool, &anchored("a", "1.000000001", me), &known)
                .unwrap(),
            a,
            "the next task of the same container"
        );
        d.park(a, d.read(a).unwrap(), false).unwrap();
        // Deleted, and a new container made with the same id: the old block is released at
        // the next allocation, and the new container does not take it as its own.
        known.0.insert("a".into(), "2.000000000".into());
        let a2 = d
            .acquire(&pool, &anchored("a", "2.000000000", me), &known)
            .unwrap();
        assert_eq!(
            d.read(a2).unwrap().anchor,
            anchored("a", "2.000000000", me).anchor
        );
        assert_eq!(
            fs::read_dir(&d.dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| !n.starts_with('.')))
                .count(),
            2,
            "a's old lease is gone"
        );
        // Deleted with no new one: gone at the next allocation.
        d.park(a2, d.read(a2).unwrap(), false).unwrap();
        known.0.clear();
        d.acquire(&pool, &record("c", me), &known).unwrap();
        assert_eq!(d.find("default", "a"), None);
    }

    #[test]
    fn a_full_pool_takes_a_parked_block_and_says_which_are_stopped() {
        let d = dir("full");
        let pool = IdPool {
            first: POOL,
            blocks: 2,
        };
        let me = ProcessRef::of(std::process::id().cast_signed());
        let known = Known([("a".to_string(), "1.0".to_string())].into_iter().collect());
        let a = d.acquire(&pool, &anchored("a", "1.0", me), &known).unwrap();
        let b = d.acquire(&pool, &record("b", me), &known).unwrap();
        d.park(a, d.read(a).unwrap(), false).unwrap();
        let c = d.acquire(&pool, &record("c", me), &known).unwrap();
        assert_eq!(
            c, a,
            "a stopped container's block goes when nothing else is free"
        );
        let e = d.acquire(&pool, &record("x", me), &none()).unwrap_err();
        assert!(
            e.to_string()
                .contains("containers that still exist: default/b, default/c"),
            "{e}"
        );
        assert_ne!(b, c);
    }

    #[test]
    fn distinct_blocks_then_exhaustion_then_release() {
        let d = dir("basic");
        let pool = IdPool {
            first: POOL,
            blocks: 2,
        };
        let me = ProcessRef::of(std::process::id().cast_signed());
        let a = d.acquire(&pool, &record("a", me), &none()).unwrap();
        let b = d.acquire(&pool, &record("b", me), &none()).unwrap();
        assert_eq!((a.first, b.first), (POOL, POOL + 65_536));
        let e = d.acquire(&pool, &record("c", me), &none()).unwrap_err();
        assert!(e.to_string().contains("no free ID block"), "{e}");
        assert!(
            e.to_string()
                .contains("containers that still exist: default/a, default/b"),
            "{e}"
        );
        assert_eq!(d.find("default", "b"), Some(b));
        d.release(a).unwrap();
        assert_eq!(d.acquire(&pool, &record("c", me), &none()).unwrap(), a);
    }

    #[test]
    fn lease_of_dead_holder_is_reclaimed() {
        let d = dir("stale");
        let pool = IdPool {
            first: POOL,
            blocks: 1,
        };
        let dead = ProcessRef {
            pid: std::process::id().cast_signed(),
            start_time: 1,
        };
        d.acquire(&pool, &record("gone", Some(dead)), &none())
            .unwrap();
        let me = ProcessRef::of(std::process::id().cast_signed());
        assert_eq!(
            d.acquire(&pool, &record("new", me), &none()).unwrap().first,
            POOL
        );
        assert_eq!(d.read(IdBlock { first: POOL }).unwrap().container, "new");
    }

    #[test]
    fn a_pods_own_block_is_leased_exclusively() {
        let d = dir("exact");
        let me = ProcessRef::of(std::process::id().cast_signed());
        let block = IdBlock { first: 1 << 31 };
        d.acquire_exact(block, &record("pod-a", me)).unwrap();
        let e = d.acquire_exact(block, &record("pod-b", me)).unwrap_err();
        assert!(
            e.to_string()
                .contains("already leased to container default/pod-a"),
            "{e}"
        );
        assert!(e.to_string().contains("rule user-namespace"), "{e}");
        // A live block overlapping it by one ID is as taken.
        let e = d
            .acquire_exact(
                IdBlock {
                    first: (1 << 31) + 65535,
                },
                &record("pod-c", me),
            )
            .unwrap_err();
        assert!(e.to_string().contains("pod-a"), "{e}");
        assert_eq!(d.find("default", "pod-a"), Some(block));
        // Once its holder is gone, the block is reclaimed for the next pod.
        let dead = ProcessRef {
            pid: std::process::id().cast_signed(),
            start_time: 1,
        };
        d.update(block, &record("pod-a", Some(dead))).unwrap();
        d.acquire_exact(block, &record("pod-b", me)).unwrap();
        assert_eq!(d.read(block).unwrap().container, "pod-b");
        d.release(block).unwrap();
        assert_eq!(d.find("default", "pod-b"), None);
    }

    #[test]
    fn id_maps_parse() {
        assert_eq!(
            parse_id_map("         0     100000      65536\n"),
            vec![(100_000, 65_536)]
        );
        assert_eq!(
            parse_id_map("0 1 2\n5 300000 10\nbad\n"),
            vec![(1, 2), (300_000, 10)]
        );
    }

    #[test]
    fn a_block_a_live_namespace_maps_is_skipped_without_a_lease() {
        // A user namespace of this test's own, mapping the pool's first block, stands for a
        // container whose lease file was deleted: its block must not be handed out again.
        let first = 3_000_000_000u32;
        let Ok(mut child) = std::process::Command::new("unshare")
            .args(["--user", "sleep", "10"])
            .stdin(std::process::Stdio::null())
            .spawn()
        else {
            return;
        };
        let pid = child.id();
        let own = nix::sys::stat::stat("/proc/self/ns/user").unwrap().st_ino;
        for _ in 0..100 {
            if nix::sys::stat::stat(format!("/proc/{pid}/ns/user").as_str())
                .is_ok_and(|st| st.st_ino != own)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mapped =
            fs::write(format!("/proc/{pid}/uid_map"), format!("0 {first} 65536\n")).is_ok();
        let d = dir("mapped");
        let pool = IdPool { first, blocks: 2 };
        let me = ProcessRef::of(std::process::id().cast_signed());
        let got = d.acquire(&pool, &record("new", me), &none());
        let _ = child.kill();
        let _ = child.wait();
        if !mapped {
            return; // not root here: nothing to check
        }
        assert_eq!(got.unwrap().first, first + BLOCK_SIZE);
    }
}
