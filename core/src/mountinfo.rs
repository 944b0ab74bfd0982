//! Lines of /proc/PID/mountinfo, parsed once for every reader in this crate.

/// The fields of one mountinfo line that this crate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The mount's ID (what `/proc/PID/fdinfo/FD` names as `mnt_id`).
    pub id: u64,
    /// The file system's device, `major:minor`.
    pub device: &'a str,
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
        let id = head.next()?.parse().ok()?;
        let (device, root, mount_point) = (head.nth(1)?, head.next()?, head.next()?);
        let mut tail = tail.split(' ');
        let (fstype, _source, super_options) = (tail.next()?, tail.next()?, tail.next()?);
        Some(Entry {
            id,
            device,
            root,
            mount_point,
            fstype,
            super_options,
        })
    })
}

/// A mountinfo path field with the kernel's octal escapes (`\040` for a space, `\134` for a
/// backslash …) undone.
pub fn unescape(field: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out).into()
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
                id: 40,
                device: "0:26",
                root: "/default/c1",
                mount_point: "/run/c1/memory",
                fstype: "cgroup",
                super_options: "rw,memory",
            }
        );
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(
            unescape("/a\\040b\\134c"),
            std::path::PathBuf::from("/a b\\c")
        );
        assert_eq!(unescape("/plain"), std::path::PathBuf::from("/plain"));
    }
}
