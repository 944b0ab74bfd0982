use oci_spec::runtime::LinuxNamespaceType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A file's identity: device and inode. Two paths with the same `FileId` are the same file,
/// which catches hard links and bind-mount aliases that a path comparison misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A path resolved the way the kernel will resolve it (symlinks, `..`, repeated slashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPath {
    pub requested: PathBuf,
    pub canonical: PathBuf,
    pub id: FileId,
}

impl ResolvedPath {
    /// True when `self` is `other` or lies beneath it, by path or by identity.
    pub fn is_within(&self, other: &ResolvedPath) -> bool {
        self.id == other.id || self.canonical.starts_with(&other.canonical)
    }

    /// True when `self` is a directory that holds `other` somewhere beneath it.
    pub fn contains(&self, other: &ResolvedPath) -> bool {
        other.canonical.starts_with(&self.canonical)
    }
}

/// The image containerd recorded for the container, resolved to its digest by asking containerd.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageRef {
    /// e.g. `docker.io/library/alpine:3.19`
    pub name: String,
    /// e.g. `sha256:…`
    pub digest: String,
}

/// What the caller measured on the host before asking for a decision.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The host's (the shim's) namespaces.
    pub host_namespaces: HashMap<LinuxNamespaceType, FileId>,
    /// Identity of each namespace path named in the spec.
    pub namespace_paths: HashMap<PathBuf, FileId>,
    /// Each bind-mount source in the spec, resolved; a source missing here could not be resolved.
    pub mount_sources: HashMap<PathBuf, ResolvedPath>,
    /// Every restricted path that exists on the host, resolved.
    pub restricted: Vec<ResolvedPath>,
    /// Paths the container owns and may always mount (dockerd's per-container resolv.conf,
    /// hosts and hostname live under the otherwise restricted /var/lib/docker).
    pub own_paths: Vec<PathBuf>,
    /// Restricted paths that are engine sockets, excepted for images the policy trusts.
    pub engine_sockets: Vec<ResolvedPath>,
    pub image: Option<ImageRef>,
    /// Seconds the host has been up (CLOCK_BOOTTIME), so that a new time namespace can start
    /// the container's boot clock near zero.
    pub host_boottime_secs: Option<i64>,
}

impl HostFacts {
    pub fn namespace_is_host(&self, typ: LinuxNamespaceType, path: &Path) -> bool {
        match (
            self.namespace_paths.get(path),
            self.host_namespaces.get(&typ),
        ) {
            (Some(id), Some(host)) => id == host,
            // A path we could not identify is treated as the host's: fail closed.
            _ => true,
        }
    }
}
