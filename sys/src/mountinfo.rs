//! The one parser of /proc/PID/mountinfo (proc(5)): every reader, in core and in the
//! emulation, takes its lines from [`entries`].

use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mountinfo line's fields, borrowed from the text. Paths keep the kernel's octal escapes
/// (`\040` for a space); [`unescape`] undoes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The mount's ID (what `statx` and `/proc/PID/fdinfo/FD` name as `mnt_id`).
    pub id: u64,
    /// The ID of the mount it is mounted on (its own for the namespace's root).
    pub parent: u64,
    /// The file system's device, `major:minor` (see [`Entry::dev`]).
    pub device: &'a str,
    /// The directory of its file system the mount shows (`/` for a whole one).
    pub root: &'a str,
    /// Where it is mounted.
    pub mount_point: &'a str,
    /// The mount's own options (`ro`, `nosuid`, `nodev`, `noexec`, `relatime` …).
    pub options: &'a str,
    /// The file system type (`overlay`, `cgroup2`, `proc` …).
    pub fstype: &'a str,
    /// The mount source (`overlay`, `/dev/vda1`, `none` …).
    pub source: &'a str,
    /// The super block's options (`lowerdir=…` for an overlay, the controllers of a cgroup v1
    /// hierarchy).
    pub super_options: &'a str,
}

impl Entry<'_> {
    /// The device as a number (`st_dev`), if the field is well formed.
    pub fn dev(&self) -> Option<u64> {
        let (major, minor) = self.device.split_once(':')?;
        Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
    }

    /// Whether the mount's own options include `option` (`ro` …).
    pub fn has_option(&self, option: &str) -> bool {
        self.options.split(',').any(|o| o == option)
    }
}

/// The entries of a mountinfo text, in its order; malformed lines are skipped.
pub fn entries(mountinfo: &str) -> impl DoubleEndedIterator<Item = Entry<'_>> {
    mountinfo.lines().filter_map(|line| {
        // Optional fields (`shared:1`, `master:2` …) stand between the options and " - ".
        let (head, tail) = line.split_once(" - ")?;
        let mut head = head.split(' ');
        let id = head.next()?.parse().ok()?;
        let parent = head.next()?.parse().ok()?;
        let (device, root, mount_point, options) =
            (head.next()?, head.next()?, head.next()?, head.next()?);
        let mut tail = tail.split(' ');
        let (fstype, source, super_options) = (tail.next()?, tail.next()?, tail.next()?);
        Some(Entry {
            id,
            parent,
            device,
            root,
            mount_point,
            options,
            fstype,
            source,
            super_options,
        })
    })
}

/// The entry of mount `id`, if the text lists it.
pub fn find(mountinfo: &str, id: u64) -> Option<Entry<'_>> {
    entries(mountinfo).find(|e| e.id == id)
}

/// This process's mountinfo (the mount namespace it is in).
pub fn read_own() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
}

/// A mountinfo path field with the kernel's octal escapes (`\040` for a space, `\134` for a
/// backslash …) undone; a backslash not followed by three octal digits stays as it is.
pub fn unescape(field: &str) -> PathBuf {
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

    const SAMPLE: &str = "\
29 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 30 0:26 /default/c1 /run/c1/memory rw master:2 shared:3 - cgroup cgroup rw,memory
41 29 0:53 / /mnt/a\\040b ro,nosuid,nodev - tmpfs none rw,size=64k
oops
42 29 0:54 / /short rw -";

    #[test]
    fn fields_after_optional_ones_are_found() {
        let all: Vec<Entry> = entries(SAMPLE).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[1],
            Entry {
                id: 40,
                parent: 30,
                device: "0:26",
                root: "/default/c1",
                mount_point: "/run/c1/memory",
                options: "rw",
                fstype: "cgroup",
                source: "cgroup",
                super_options: "rw,memory",
            }
        );
        assert_eq!(all[0].parent, 1);
        assert_eq!(all[0].options, "rw,relatime");
    }

    #[test]
    fn ids_devices_and_options() {
        let e = find(SAMPLE, 41).expect("mount 41");
        assert_eq!(e.parent, 29);
        assert_eq!(e.dev(), Some(libc::makedev(0, 53)));
        assert!(e.has_option("ro") && e.has_option("nodev"));
        assert!(!e.has_option("r"));
        assert_eq!(unescape(e.mount_point), PathBuf::from("/mnt/a b"));
        assert_eq!(find(SAMPLE, 7), None);
        let bad = Entry { device: "x", ..e };
        assert_eq!(bad.dev(), None);
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("/a\\040b\\134c"), PathBuf::from("/a b\\c"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/x\\04"), PathBuf::from("/x\\04"));
        assert_eq!(unescape("/x\\777"), PathBuf::from("/x\\777"));
    }
}
