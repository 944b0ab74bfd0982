//! Where the shim keeps its state on the host. Everything sits under one tmpfs directory, so a
//! reboot clears it together with the containers it described.

use std::path::{Path, PathBuf};

/// Where the shim keeps its state unless told otherwise.
pub const DEFAULT_BASE: &str = "/run/containerd-shim-eci";

#[derive(Debug, Clone)]
/// The shim's state directories, under one base.
pub struct Layout {
    base: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new(DEFAULT_BASE)
    }
}

impl Layout {
    /// Everything under `base`.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Layout { base: base.into() }
    }
    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }
    /// libcontainer's state root for a containerd namespace.
    pub fn state_root(&self, namespace: &str) -> PathBuf {
        self.base.join("state").join(namespace)
    }
    /// libcontainer's state of one container.
    pub fn container_state(&self, namespace: &str, id: &str) -> PathBuf {
        self.state_root(namespace).join(id)
    }
    /// The hardened spec libcontainer builds from; containerd's bundle is left untouched.
    pub fn private_bundle(&self, namespace: &str, id: &str) -> PathBuf {
        self.base.join("bundles").join(namespace).join(id)
    }
    /// ID-mapped bind sources and layers, attached only while libcontainer builds.
    pub fn staging(&self, namespace: &str, id: &str) -> PathBuf {
        self.base.join("mnt").join(namespace).join(id)
    }
    /// Where the container's root file system is mounted. Not containerd's bundle/rootfs: the
    /// bundle's parents are 0700 and host root's, which container root cannot traverse.
    pub fn rootfs(&self, namespace: &str, id: &str) -> PathBuf {
        self.base.join("rootfs").join(namespace).join(id)
    }
    /// The container's /proc and /sys emulation (a FUSE mount served by its shim).
    pub fn emulation(&self, namespace: &str, id: &str) -> PathBuf {
        self.base.join("emu").join(namespace).join(id)
    }
    /// The ID block leases.
    pub fn leases(&self) -> PathBuf {
        self.base.join("leases")
    }
}
