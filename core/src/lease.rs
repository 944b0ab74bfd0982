//! Cross-process, crash-safe ID block leases. containerd runs one shim per container, so the
//! shims agree through the file system: a lease is a file named after its block's first ID,
//! created with O_EXCL. A lease outlives a killed shim and is reclaimed once neither its shim
//! nor its container's init is alive (each checked by pid and start time, against pid reuse).

use eci_policy::{IdBlock, IdPool, BLOCK_SIZE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
}

impl LeaseRecord {
    fn is_stale(&self) -> bool {
        !self.holder.is_some_and(|p| p.is_alive())
            && !self.init.is_some_and(|p| p.is_alive())
            && !self.user_ns.is_some_and(user_ns_in_use)
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

    /// Lease the lowest free block of `pool` for `record`. A block that a live user namespace
    /// maps is never handed out, whatever its lease file says or whether it has one: the lease
    /// files are the allocator's bookkeeping, the kernel's ID maps are the truth.
    pub fn acquire(&self, pool: &IdPool, record: &LeaseRecord) -> Result<IdBlock, LeaseError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        let body = serde_json::to_vec(record).expect("lease record serializes");
        let live = live_id_ranges();
        let mapped = |b: IdBlock| {
            live.iter().any(|&(start, len)| {
                let (start, end) = (u64::from(start), u64::from(start) + u64::from(len));
                start < u64::from(b.first) + u64::from(b.size()) && u64::from(b.first) < end
            })
        };
        // Two passes: leases that look taken may be stale, and are reclaimed on the second.
        for reclaim in [false, true] {
            let taken = if reclaim {
                BTreeSet::new()
            } else {
                self.taken(pool)
            };
            for block in pool.candidates(&taken) {
                if mapped(block) {
                    continue;
                }
                match self.create(block, &body) {
                    Ok(()) => return Ok(block),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        if reclaim
                            && self.reclaim_if_stale(block)
                            && self.create(block, &body).is_ok()
                        {
                            return Ok(block);
                        }
                    }
                    Err(e) => return Err(self.err(e)),
                }
            }
        }
        Err(LeaseError::Exhausted(self.exhausted(pool)))
    }

    /// Every block is held by a container that exists (a stopped one keeps its block until it
    /// is deleted): say which, so the administrator knows what to delete.
    fn exhausted(&self, pool: &IdPool) -> eci_policy::Refusal {
        let mut holders: Vec<String> = self
            .taken(pool)
            .into_iter()
            .filter_map(|block| self.read(block))
            .map(|r| format!("{}/{}", r.namespace, r.container))
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
        fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
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
            if overlaps && !self.reclaim_if_stale(IdBlock { first }) {
                return Err(taken(first));
            }
        }
        match self.create(block, &body) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.reclaim_if_stale(block) && self.create(block, &body).is_ok() {
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

    /// Remove the lease of `block` if its shim and container are gone. A lease that cannot be
    /// read is left alone unless it is old: a shim may be between create and write.
    fn reclaim_if_stale(&self, block: IdBlock) -> bool {
        let path = self.path(block);
        let stale = match self.read_path(&path) {
            Some(record) => record.is_stale(),
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
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", block.first, std::process::id()));
        fs::write(
            &tmp,
            serde_json::to_vec(record).expect("lease record serializes"),
        )
        .map_err(|e| self.err(e))?;
        fs::rename(&tmp, self.path(block)).map_err(|e| self.err(e))
    }

    pub fn release(&self, block: IdBlock) -> Result<(), LeaseError> {
        match fs::remove_file(self.path(block)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err(e)),
            _ => Ok(()),
        }
    }

    /// Release every stale lease: a block whose container is gone and that no joined container
    /// uses any more.
    pub fn sweep(&self) {
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

    /// The block leased to a container, if any.
    pub fn find(&self, namespace: &str, container: &str) -> Option<IdBlock> {
        fs::read_dir(&self.dir).ok()?.flatten().find_map(|e| {
            let first: u32 = e.file_name().to_str()?.parse().ok()?;
            let record = self.read_path(&e.path())?;
            (record.namespace == namespace && record.container == container)
                .then_some(IdBlock { first })
        })
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

    fn dir(name: &str) -> LeaseDir {
        let d = std::env::temp_dir().join(format!("eci-lease-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        LeaseDir::new(d)
    }

    fn record(id: &str, holder: Option<ProcessRef>) -> LeaseRecord {
        LeaseRecord {
            namespace: "default".into(),
            container: id.into(),
            holder,
            init: None,
            user_ns: None,
        }
    }

    #[test]
    fn distinct_blocks_then_exhaustion_then_release() {
        let d = dir("basic");
        let pool = IdPool {
            first: 100_000,
            blocks: 2,
        };
        let me = ProcessRef::of(std::process::id().cast_signed());
        let a = d.acquire(&pool, &record("a", me)).unwrap();
        let b = d.acquire(&pool, &record("b", me)).unwrap();
        assert_eq!((a.first, b.first), (100_000, 165_536));
        let e = d.acquire(&pool, &record("c", me)).unwrap_err();
        assert!(e.to_string().contains("no free ID block"), "{e}");
        assert!(
            e.to_string()
                .contains("containers that still exist: default/a, default/b"),
            "{e}"
        );
        assert_eq!(d.find("default", "b"), Some(b));
        d.release(a).unwrap();
        assert_eq!(d.acquire(&pool, &record("c", me)).unwrap(), a);
    }

    #[test]
    fn lease_of_dead_holder_is_reclaimed() {
        let d = dir("stale");
        let pool = IdPool {
            first: 100_000,
            blocks: 1,
        };
        let dead = ProcessRef {
            pid: std::process::id().cast_signed(),
            start_time: 1,
        };
        d.acquire(&pool, &record("gone", Some(dead))).unwrap();
        let me = ProcessRef::of(std::process::id().cast_signed());
        assert_eq!(d.acquire(&pool, &record("new", me)).unwrap().first, 100_000);
        assert_eq!(d.read(IdBlock { first: 100_000 }).unwrap().container, "new");
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
        let got = d.acquire(&pool, &record("new", me));
        let _ = child.kill();
        let _ = child.wait();
        if !mapped {
            return; // not root here: nothing to check
        }
        assert_eq!(got.unwrap().first, first + BLOCK_SIZE);
    }
}
