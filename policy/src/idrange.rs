use serde::Deserialize;
use std::collections::BTreeSet;

/// Every container gets this many IDs, container 0 mapping to the block's first host ID.
pub const BLOCK_SIZE: u32 = 65536;

/// An exclusive block of host user and group IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdBlock {
    /// The first host ID of the block (container root).
    pub first: u32,
}

impl IdBlock {
    /// How many IDs the block maps.
    pub fn size(self) -> u32 {
        BLOCK_SIZE
    }
    /// Whether `host_id` lies in the block.
    pub fn contains(self, host_id: u32) -> bool {
        host_id >= self.first && host_id - self.first < BLOCK_SIZE
    }

    /// The container ID a host ID of this block stands for, if it is one of the block's.
    pub fn container_id(self, host_id: u32) -> Option<u32> {
        self.contains(host_id).then(|| host_id - self.first)
    }
}

/// The host IDs containers may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdPool {
    /// First host ID of the pool.
    pub first: u32,
    /// How many blocks of 65536 the pool holds.
    pub blocks: u32,
}

impl Default for IdPool {
    fn default() -> Self {
        // 100000 upward, as Docker's ECI does, up to just below 2^32 - 1 (the invalid ID).
        IdPool {
            first: 100_000,
            blocks: (u32::MAX - 100_000) / BLOCK_SIZE,
        }
    }
}

impl IdPool {
    /// The block at `index` in the pool, if the pool has one.
    pub fn block(&self, index: u32) -> Option<IdBlock> {
        (index < self.blocks).then(|| IdBlock {
            first: self.first + index * BLOCK_SIZE,
        })
    }

    /// Blocks in the order the allocator tries them: lowest free first, so the first
    /// container on a quiet machine gets 100000 as in Docker's examples.
    pub fn candidates<'a>(
        &'a self,
        taken: &'a BTreeSet<IdBlock>,
    ) -> impl Iterator<Item = IdBlock> + 'a {
        (0..self.blocks)
            .filter_map(|i| self.block(i))
            .filter(move |b| !taken.contains(b))
    }

    /// The block a lease name refers to, if it is one of this pool's.
    pub fn block_at(&self, first: u32) -> Option<IdBlock> {
        let off = first.checked_sub(self.first)?;
        (off % BLOCK_SIZE == 0 && off / BLOCK_SIZE < self.blocks).then_some(IdBlock { first })
    }

    /// Refuse a pool that cannot hold a block or overflows the ID space.
    pub fn validate(&self) -> Result<(), String> {
        if self.blocks == 0 {
            return Err("id_pool.blocks must be at least 1".into());
        }
        if self.first == 0 {
            return Err(
                "id_pool.first must not be 0: host root would be mapped into containers".into(),
            );
        }
        let end = u64::from(self.first) + u64::from(self.blocks) * u64::from(BLOCK_SIZE);
        if end > u64::from(u32::MAX) {
            return Err(format!(
                "id_pool ends at {end}, past the largest valid ID {}",
                u32::MAX - 1
            ));
        }
        Ok(())
    }
}

impl IdPool {
    /// One past the pool's last host ID.
    pub fn end(&self) -> u64 {
        u64::from(self.first) + u64::from(self.blocks) * u64::from(BLOCK_SIZE)
    }

    /// Whether `[first, first + len)` shares a host ID with the pool.
    pub fn overlaps(&self, first: u64, len: u64) -> bool {
        first < self.end() && u64::from(self.first) < first + len
    }
}

/// The host IDs the kubelet hands out to pods with `hostUsers: false`, one block of 65536 per
/// pod. The kubelet asks `getsubids kubelet` when a user named `kubelet` exists (the first
/// `/etc/subuid` entry of that user, by name or uid); without one it uses 65536 up to 2^32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeletRange {
    /// The first host ID the kubelet may hand out.
    pub first: u64,
    /// How many IDs it may hand out.
    pub len: u64,
    /// Whether the range comes from an `/etc/subuid` entry (else the kubelet's default).
    pub configured: bool,
}

impl Default for KubeletRange {
    fn default() -> Self {
        KubeletRange {
            first: u64::from(BLOCK_SIZE),
            len: (1u64 << 32) - u64::from(BLOCK_SIZE),
            configured: false,
        }
    }
}

impl KubeletRange {
    /// One past the last host ID.
    pub fn end(&self) -> u64 {
        self.first + self.len
    }

    /// The kubelet's range from the text of `/etc/passwd` and `/etc/subuid`, as the kubelet
    /// reads them. A `kubelet` user without a subordinate range is an error: the kubelet then
    /// refuses every pod with `hostUsers: false` itself.
    pub fn from_files(passwd: Option<&str>, subuid: Option<&str>) -> Result<KubeletRange, String> {
        let uid = passwd.and_then(|p| {
            p.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == "kubelet")
                .map(|f| f[2].to_string())
        });
        let Some(uid) = uid else {
            return Ok(KubeletRange::default());
        };
        for line in subuid.unwrap_or("").lines() {
            let f: Vec<&str> = line.trim().split(':').collect();
            if f.len() == 3 && (f[0] == "kubelet" || f[0] == uid) {
                let (Ok(first), Ok(len)) = (f[1].parse::<u64>(), f[2].parse::<u64>()) else {
                    return Err(format!("/etc/subuid: bad entry {line:?}"));
                };
                if first % u64::from(BLOCK_SIZE) != 0
                    || len % u64::from(BLOCK_SIZE) != 0
                    || len == 0
                {
                    return Err(format!(
                        "/etc/subuid: the kubelet's entry {line:?} must start at and span a multiple of 65536"
                    ));
                }
                return Ok(KubeletRange {
                    first,
                    len,
                    configured: true,
                });
            }
        }
        Err("a user `kubelet` exists but /etc/subuid gives it no range".into())
    }

    /// The host IDs the kubelet's range and ECI's pool share, `[first, end)`, if any.
    pub fn overlap(&self, pool: &IdPool) -> Option<(u64, u64)> {
        let first = self.first.max(u64::from(pool.first));
        let end = self.end().min(pool.end());
        (first < end).then_some((first, end))
    }

    /// How many of the kubelet's 65536-ID blocks (its blocks start at multiples of 65536) share
    /// an ID with ECI's pool, and how many blocks its range holds. The kubelet picks a pod's
    /// block at random among its free ones, so the first over the second is the share of
    /// `hostUsers: false` pods ECI must refuse.
    pub fn blocks_in_pool(&self, pool: &IdPool) -> (u64, u64) {
        let size = u64::from(BLOCK_SIZE);
        let total = self.len / size;
        let Some((first, end)) = self.overlap(pool) else {
            return (0, total);
        };
        // Blocks [first_block, end_block) of the kubelet's grid touch the shared IDs.
        let first_block = first / size;
        let end_block = end.div_ceil(size);
        (end_block - first_block, total)
    }

    /// Why the kubelet's blocks and ECI's pool may meet, with what to change; `None` when they
    /// are apart. Kept apart, every block the kubelet hands out can be honoured.
    pub fn conflict(&self, pool: &IdPool) -> Option<String> {
        let (first, end) = self.overlap(pool)?;
        let (meeting, total) = self.blocks_in_pool(pool);
        // The first multiple of 65536 past ECI's pool: a kubelet range of 110 pods' blocks
        // (the kubelet's default maxPods, the least it accepts) from there.
        let size = u64::from(BLOCK_SIZE);
        let len = 110 * size;
        let past = pool.end().div_ceil(size) * size;
        let subuid = if past + len <= 1u64 << 32 {
            format!("add a user `kubelet` and the /etc/subuid and /etc/subgid entries `kubelet:{past}:{len}` (past ECI's pool)")
        } else if u64::from(pool.first) >= size + len {
            format!("add a user `kubelet` and the /etc/subuid and /etc/subgid entries `kubelet:{size}:{len}` (below ECI's pool)")
        } else {
            // ECI's pool leaves no room for 110 blocks on either side: both must move.
            format!("add a user `kubelet` and the /etc/subuid and /etc/subgid entries `kubelet:{size}:{len}` and start ECI's pool past them ([id_pool] first = {} in the ECI policy)", size + len)
        };
        let fix = if self.configured {
            format!("{subuid}, or move ECI's pool clear of {}..{} with [id_pool] first/blocks in the ECI policy", self.first, self.end())
        } else {
            // The kubelet's default range reaches from 65536 to 2^32: no pool of ECI's can
            // stay clear of it.
            format!("{subuid}; no [id_pool] can stay clear of the kubelet's default range")
        };
        Some(format!(
            "the kubelet's user-namespace range {}..{} ({}) overlaps ECI's ID pool {}..{} at {first}..{end}: {meeting} of the kubelet's {total} pod blocks ({:.1}%) fall in ECI's pool, and a pod with hostUsers: false given one of them is refused. Keep them apart: {fix}",
            self.first,
            self.end(),
            if self.configured { "its /etc/subuid entry" } else { "the kubelet's default, no `kubelet` entry in /etc/subuid" },
            pool.first,
            pool.end(),
            meeting as f64 * 100.0 / total.max(1) as f64,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_two_blocks_match_docker_examples() {
        let pool = IdPool::default();
        let mut taken = BTreeSet::new();
        let a = pool.candidates(&taken).next().unwrap();
        assert_eq!(a.first, 100_000);
        taken.insert(a);
        assert_eq!(pool.candidates(&taken).next().unwrap().first, 165_536);
    }

    #[test]
    fn exhausted_pool_has_no_candidates() {
        let pool = IdPool {
            first: 100_000,
            blocks: 2,
        };
        let taken: BTreeSet<_> = (0..2).filter_map(|i| pool.block(i)).collect();
        assert_eq!(pool.candidates(&taken).next(), None);
    }

    #[test]
    fn freed_hole_is_reused() {
        let pool = IdPool {
            first: 100_000,
            blocks: 3,
        };
        let taken: BTreeSet<_> = [pool.block(0).unwrap(), pool.block(2).unwrap()].into();
        assert_eq!(pool.candidates(&taken).next(), pool.block(1));
    }

    #[test]
    fn block_at_rejects_foreign_names() {
        let pool = IdPool {
            first: 100_000,
            blocks: 3,
        };
        assert_eq!(pool.block_at(165_536), pool.block(1));
        assert_eq!(pool.block_at(165_537), None);
        assert_eq!(pool.block_at(99_999), None);
        assert_eq!(pool.block_at(100_000 + 3 * BLOCK_SIZE), None);
    }

    #[test]
    fn pool_validation() {
        assert!(IdPool::default().validate().is_ok());
        assert!(IdPool {
            first: 0,
            blocks: 1
        }
        .validate()
        .is_err());
        assert!(IdPool {
            first: 1,
            blocks: 0
        }
        .validate()
        .is_err());
        assert!(IdPool {
            first: u32::MAX - 10,
            blocks: 1
        }
        .validate()
        .is_err());
        assert!(IdBlock { first: 100_000 }.contains(165_535));
        assert!(!IdBlock { first: 100_000 }.contains(165_536));
        let b = IdBlock { first: 100_000 };
        assert_eq!(b.container_id(100_000), Some(0));
        assert_eq!(b.container_id(101_000), Some(1000));
        assert_eq!(b.container_id(99_999), None);
        assert_eq!(b.container_id(0), None);
        assert_eq!(b.container_id(165_536), None);
    }

    #[test]
    fn kubelet_range_default_and_from_subuid() {
        assert_eq!(
            KubeletRange::from_files(Some("root:x:0:0::/:/bin/sh\n"), None),
            Ok(KubeletRange::default())
        );
        let passwd = "root:x:0:0::/:/bin/sh\nkubelet:x:999:999::/:/bin/false\n";
        let r = KubeletRange::from_files(
            Some(passwd),
            Some("alice:100000:65536\nkubelet:65667072:7208960\n"),
        )
        .unwrap();
        assert_eq!(
            (r.first, r.len, r.configured),
            (65_667_072, 7_208_960, true)
        );
        // By uid, as getsubids also matches.
        let r = KubeletRange::from_files(Some(passwd), Some("999:131072:65536\n")).unwrap();
        assert_eq!(r.first, 131_072);
        assert!(KubeletRange::from_files(Some(passwd), Some("")).is_err());
        assert!(KubeletRange::from_files(Some(passwd), Some("kubelet:100000:65536")).is_err());
    }

    #[test]
    fn overlap_of_the_kubelets_range_and_the_pool() {
        let pool = IdPool {
            first: 100_000,
            blocks: 1000,
        };
        // The kubelet's default: 65536..2^32, every block from 1 up.
        let k = KubeletRange::default();
        assert_eq!(k.overlap(&pool), Some((100_000, 65_636_000)));
        // Blocks 1 (65536..131071, holding 100000) to 1001 (65601536.., holding 65635999).
        assert_eq!(k.blocks_in_pool(&pool), (1001, 65535));
        // A range that ends where the pool begins, and one that starts where it ends.
        let below = KubeletRange {
            first: 0,
            len: 100_000,
            configured: true,
        };
        assert_eq!(below.overlap(&pool), None);
        assert_eq!(below.blocks_in_pool(&pool).0, 0);
        let above = KubeletRange {
            first: 65_636_000,
            len: 65_536,
            configured: true,
        };
        assert_eq!(above.overlap(&pool), None);
        let touching = KubeletRange {
            first: 65_536 * 1001,
            len: 65_536 * 10,
            configured: true,
        };
        assert_eq!(touching.overlap(&pool), Some((65_601_536, 65_636_000)));
        assert_eq!(touching.blocks_in_pool(&pool), (1, 10));
        // The pool inside the range, and the range inside the pool.
        let inside = KubeletRange {
            first: 65_536 * 10,
            len: 65_536 * 2,
            configured: true,
        };
        assert_eq!(inside.overlap(&pool), Some((655_360, 786_432)));
        assert_eq!(inside.blocks_in_pool(&pool), (2, 2));
        // The default pool reaches 2^32 - 1: it meets every kubelet block past 100000.
        let (meeting, total) = k.blocks_in_pool(&IdPool::default());
        assert_eq!((meeting, total), (65535, 65535));
    }

    #[test]
    fn the_conflict_names_the_share_of_pods_refused_and_the_fix() {
        let pool = IdPool {
            first: 100_000,
            blocks: 1000,
        };
        let msg = KubeletRange::default().conflict(&pool).unwrap();
        assert!(
            msg.contains("1001 of the kubelet's 65535 pod blocks (1.5%)"),
            "{msg}"
        );
        assert!(msg.contains("no [id_pool] can stay clear"), "{msg}");
        // A pool that reaches the top of the ID space leaves no room past it: the advice is a
        // range below it and a pool moved past that, never an entry past 2^32.
        let msg = KubeletRange::default()
            .conflict(&IdPool::default())
            .unwrap();
        assert!(
            msg.contains("kubelet:65536:7208960") && msg.contains("first = 7274496"),
            "{msg}"
        );
        let configured = KubeletRange {
            first: 65_536 * 10,
            len: 65_536 * 110,
            configured: true,
        };
        let msg = configured.conflict(&pool).unwrap();
        assert!(msg.contains("its /etc/subuid entry"), "{msg}");
        assert!(
            msg.contains("or move ECI's pool clear of 655360..7864320"),
            "{msg}"
        );
    }

    #[test]
    fn kubelet_default_range_meets_the_default_pool_and_a_subuid_entry_keeps_them_apart() {
        let pool = IdPool {
            first: 100_000,
            blocks: 1000,
        };
        let msg = KubeletRange::default().conflict(&pool).unwrap();
        assert!(msg.contains("kubelet:65667072:"), "{msg}");
        let apart = KubeletRange {
            first: 65_667_072,
            len: 110 * 65_536,
            configured: true,
        };
        assert_eq!(apart.conflict(&pool), None);
        assert!(KubeletRange::default()
            .conflict(&IdPool::default())
            .is_some());
    }
}
