use serde::Deserialize;
use std::collections::BTreeSet;

/// Every container gets this many IDs, container 0 mapping to the block's first host ID.
pub const BLOCK_SIZE: u32 = 65536;

/// An exclusive block of host user and group IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdBlock {
    pub first: u32,
}

impl IdBlock {
    pub fn size(self) -> u32 {
        BLOCK_SIZE
    }
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
            blocks: ((u32::MAX as u64 - 100_000) / BLOCK_SIZE as u64) as u32,
        }
    }
}

impl IdPool {
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

    pub fn validate(&self) -> Result<(), String> {
        if self.blocks == 0 {
            return Err("id_pool.blocks must be at least 1".into());
        }
        if self.first == 0 {
            return Err(
                "id_pool.first must not be 0: host root would be mapped into containers".into(),
            );
        }
        let end = self.first as u64 + self.blocks as u64 * BLOCK_SIZE as u64;
        if end > u32::MAX as u64 {
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
        self.first as u64 + self.blocks as u64 * BLOCK_SIZE as u64
    }

    /// Whether `[first, first + len)` shares a host ID with the pool.
    pub fn overlaps(&self, first: u64, len: u64) -> bool {
        first < self.end() && (self.first as u64) < first + len
    }
}

/// The host IDs the kubelet hands out to pods with `hostUsers: false`, one block of 65536 per
/// pod. The kubelet asks `getsubids kubelet` when a user named `kubelet` exists (the first
/// `/etc/subuid` entry of that user, by name or uid); without one it uses 65536 up to 2^32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeletRange {
    pub first: u64,
    pub len: u64,
    /// Whether the range comes from an `/etc/subuid` entry (else the kubelet's default).
    pub configured: bool,
}

impl Default for KubeletRange {
    fn default() -> Self {
        KubeletRange {
            first: BLOCK_SIZE as u64,
            len: (1u64 << 32) - BLOCK_SIZE as u64,
            configured: false,
        }
    }
}

impl KubeletRange {
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
                if first % BLOCK_SIZE as u64 != 0 || len % BLOCK_SIZE as u64 != 0 || len == 0 {
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

    /// Why the kubelet's blocks and ECI's pool may meet, with what to change; `None` when they
    /// are apart. Kept apart, every block the kubelet hands out can be honoured.
    pub fn conflict(&self, pool: &IdPool) -> Option<String> {
        pool.overlaps(self.first, self.len).then(|| {
            let suggest = pool.end().div_ceil(BLOCK_SIZE as u64) * BLOCK_SIZE as u64;
            format!(
                "the kubelet's user-namespace range {}..{} ({}) overlaps ECI's ID pool {}..{}: pods with hostUsers: false whose block falls in ECI's pool are refused. Keep them apart: add a user `kubelet` and an /etc/subuid entry `kubelet:{suggest}:{}` (past ECI's pool), or move ECI's pool with [id_pool] first/blocks in the policy",
                self.first,
                self.end(),
                if self.configured { "/etc/subuid" } else { "the kubelet's default, no `kubelet` entry in /etc/subuid" },
                pool.first,
                pool.end(),
                (110u64 * BLOCK_SIZE as u64).min((1u64 << 32) - suggest),
            )
        })
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
