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
    }
}
