use oci_spec::runtime::LinuxNamespaceType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A file's identity: device and inode. Two paths with the same `FileId` are the same file,
/// which catches hard links and bind-mount aliases that a path comparison misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileId {
    /// Device of the file system.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

/// Where a file sits in its file system, whatever name it is reached by: the device of its
/// mount (mountinfo's `major:minor`) and its path from that file system's root. A bind-mount
/// alias of a directory, and every subdirectory of the alias, has the location of the original,
/// which a comparison of host paths misses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsLocation {
    /// The file system's device, as mountinfo names it.
    pub device: String,
    /// The path within that file system.
    pub path: PathBuf,
    /// The file system type of the mount (`proc`, `sysfs`, `ext4` …).
    pub fstype: String,
}

impl FsLocation {
    /// Whether this location is `other` or lies beneath it.
    pub fn is_within(&self, other: &FsLocation) -> bool {
        self.device == other.device && self.path.starts_with(&other.path)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
/// What kind of file a path names.
pub enum FileKind {
    /// A directory.
    Dir,
    /// A unix socket.
    Socket,
    #[default]
    /// Anything else.
    Other,
}

/// A path resolved the way the kernel will resolve it (symlinks, `..`, repeated slashes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedPath {
    /// The path as the spec gives it.
    pub requested: PathBuf,
    /// The path the kernel will use (symlinks and `..` resolved).
    pub canonical: PathBuf,
    /// The file's identity.
    pub id: FileId,
    /// What kind of file it is.
    pub kind: FileKind,
    /// Its number of hard links: more than one for a non-directory means another name exists
    /// somewhere on its file system.
    pub links: u64,
    /// None when the mount could not be found (then path and identity still judge).
    pub location: Option<FsLocation>,
}

impl ResolvedPath {
    /// True when `self` is `other` or lies beneath it, by path, identity or location.
    pub fn is_within(&self, other: &ResolvedPath) -> bool {
        self.id == other.id
            || self.canonical.starts_with(&other.canonical)
            || matches!((&self.location, &other.location), (Some(s), Some(o)) if s.is_within(o))
    }

    /// True when `self` is a directory that holds `other` somewhere beneath it.
    pub fn contains(&self, other: &ResolvedPath) -> bool {
        other.canonical.starts_with(&self.canonical)
            || matches!((&self.location, &other.location), (Some(s), Some(o)) if o.is_within(s))
    }

    /// A file other than a directory that has another name somewhere (a hard link).
    pub fn has_other_names(&self) -> bool {
        self.kind != FileKind::Dir && self.links > 1
    }
}

/// What a bind of a directory brings into the container besides the directory itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundTree {
    /// Mounts beneath the source (a bind takes them along): mount point and what it shows.
    pub submounts: Vec<(PathBuf, FsLocation)>,
    /// Entries of the tree that may be another name of a restricted file: sockets, and files
    /// with more than one hard link. Only searched for when a restricted file has more than one
    /// name; see `search`.
    pub linked: Vec<(PathBuf, FileId)>,
    /// Whether the search covered the whole tree.
    pub search: TreeSearch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
/// How far a search of a directory tree went.
pub enum TreeSearch {
    /// No restricted file has a second name: there is nothing to search for.
    #[default]
    NotNeeded,
    /// Every entry was looked at.
    Complete,
    /// The search stopped after this many entries (its cost is bounded).
    Stopped {
        /// Entries looked at.
        entries: u64,
    },
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
    /// For each bind source that is a directory: what else its bind brings along.
    pub bound_trees: HashMap<PathBuf, BoundTree>,
    /// Every restricted path that exists on the host, resolved.
    pub restricted: Vec<ResolvedPath>,
    /// Paths the container owns and may always mount (dockerd's per-container resolv.conf,
    /// hosts and hostname live under the otherwise restricted /var/lib/docker).
    pub own_paths: Vec<PathBuf>,
    /// Restricted paths that are engine sockets, excepted for images the policy trusts.
    pub engine_sockets: Vec<ResolvedPath>,
    /// The image the container runs, when containerd could say.
    pub image: Option<ImageRef>,
    /// Seconds the host has been up (CLOCK_BOOTTIME), so that a new time namespace can start
    /// the container's boot clock near zero.
    pub host_boottime_secs: Option<i64>,
}

impl HostFacts {
    /// Whether the namespace at `path` (of type `typ`) is the host's own.
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
