//! Lines of /proc/PID/mountinfo, parsed once for every reader in this crate.

/// The fields of one mountinfo line that this crate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The mount's root within its file system (`/` for a whole one).
    pub root: &'a str,
    /// Where it is mounted, with the kernel's `\040` escapes for spaces.
    pub mount_point: &'a str,
    pub fstype: &'a str,
    /// The super block's options (`lowerdir=…` for an overlay).
    pub super_options: &'a str,
}

/// The entries of a mountinfo text, in its order; malformed lines are skipped.
pub fn entries(mountinfo: &str) -> impl DoubleEndedIterator<Item = Entry<'_>> {
    mountinfo.lines().filter_map(|line| {
        let (head, tail) = line.split_once(" - ")?;
        let mut head = head.split(' ');
        let (root, mount_point) = (head.nth(3)?, head.next()?);
        let mut tail = tail.split(' ');
        let (fstype, _source, super_options) = (tail.next()?, tail.next()?, tail.next()?);
        Some(Entry {
            root,
            mount_point,
            fstype,
            super_options,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_after_optional_ones_are_found() {
        let info = "\
29 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 30 0:26 /default/c1 /run/c1/memory rw master:2 shared:3 - cgroup cgroup rw,memory
oops";
        let all: Vec<Entry> = entries(info).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1],
            Entry {
                root: "/default/c1",
                mount_point: "/run/c1/memory",
                fstype: "cgroup",
                super_options: "rw,memory",
            }
        );
    }
}
