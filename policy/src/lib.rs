//! The ECI isolation policy, kept pure: an OCI spec, facts the caller measured on the host, and
//! the administrator's policy file go in; a hardened spec or a [`Refusal`] comes out. Nothing
//! here touches the kernel or the file system, so every rule is unit-tested without one.

mod devices;
pub use mounts::is_bind;
mod facts;
mod file;
mod idrange;
mod mounts;
mod namespaces;
mod refusal;
pub mod seccomp;
pub mod sysctls;

pub use devices::SAFE_DEVICES;
pub use facts::{
    BoundTree, FileId, FileKind, FsLocation, HostFacts, ImageRef, ResolvedPath, TreeSearch,
};
pub use file::{Policy, PolicyError, DEFAULT_POLICY_PATH, DEFAULT_RESTRICTED, ENGINE_SOCKETS};
pub use idrange::{IdBlock, IdPool, KubeletRange, BLOCK_SIZE};
pub use namespaces::requested_block;
pub use refusal::{Refusal, Rule};

use oci_spec::runtime::Spec;

/// What [`harden`] decided besides the spec itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardened {
    /// The spec to build from.
    pub spec: Spec,
    /// Bind mounts the caller must ID-map, by index into `spec.mounts()`.
    pub idmapped_binds: Vec<usize>,
    /// The container joins another container's user namespace (a pod sandbox or
    /// `--net container:X`) and so shares that container's ID block.
    pub joins_user_namespace: bool,
}

/// Apply every rule to `spec`. `block` is the ID block leased for this container; when the
/// spec joins another container's namespaces the caller passes that container's block.
pub fn harden(
    spec: &Spec,
    facts: &HostFacts,
    policy: &Policy,
    block: IdBlock,
) -> Result<Hardened, Refusal> {
    let mut spec = spec.clone();
    let joins_user_namespace = namespaces::harden(&mut spec, facts, block)?;
    let idmapped_binds = mounts::harden(&mut spec, facts, policy)?;
    devices::harden(&mut spec)?;
    sysctls::harden(&mut spec);
    Ok(Hardened {
        spec,
        idmapped_binds,
        joins_user_namespace,
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use oci_spec::runtime::Spec;

    /// containerd's default spec for `ctr run`, as JSON, trimmed to what the rules read.
    pub fn ctr_spec() -> Spec {
        serde_json::from_str(include_str!("testdata/ctr-default.json")).expect("test spec")
    }
}
