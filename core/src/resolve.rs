//! Resolve paths the way the kernel will, holding an O_PATH fd so that the file judged is the
//! file later mounted (no window between check and use).

use eci_policy::{FileId, ResolvedPath};
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub fn open_path(path: &Path) -> io::Result<(OwnedFd, ResolvedPath)> {
    let raw = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: `open` just returned this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = fstat(fd.as_raw_fd())?;
    let canonical = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let resolved = ResolvedPath {
        requested: path.to_path_buf(),
        canonical,
        id: FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        },
    };
    Ok((fd, resolved))
}

pub fn file_id(path: &Path) -> io::Result<FileId> {
    let st = nix::sys::stat::stat(path)?;
    Ok(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

pub fn is_device(fd: &OwnedFd) -> bool {
    fstat(fd.as_raw_fd())
        .is_ok_and(|st| matches!(st.st_mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK))
}

pub fn is_dir(fd: &OwnedFd) -> bool {
    fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Resolve each existing path; missing ones are skipped (nothing there to protect yet).
pub fn resolve_existing(paths: &[PathBuf]) -> Vec<ResolvedPath> {
    paths
        .iter()
        .filter_map(|p| open_path(p).ok().map(|(_, r)| r))
        .collect()
}
