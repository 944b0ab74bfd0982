use std::fmt;

/// The rule a refusal comes from; its name is what the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Sharing a namespace with the host.
    HostNamespace,
    /// The user namespace and its ID block.
    UserNamespace,
    /// A bind mount of a restricted host path.
    RestrictedMount,
    /// Mount propagation asked from the host.
    MountPropagation,
    /// A device the container may not have.
    Device,
    /// The policy file itself.
    PolicyFile,
    /// No ID block is free.
    IdPoolExhausted,
    /// A spec that is not valid OCI.
    InvalidSpec,
}

impl Rule {
    /// The rule's name, as refusals print it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::HostNamespace => "host-namespace",
            Rule::UserNamespace => "user-namespace",
            Rule::RestrictedMount => "restricted-mount",
            Rule::MountPropagation => "mount-propagation",
            Rule::Device => "device",
            Rule::PolicyFile => "policy-file",
            Rule::IdPoolExhausted => "id-pool-exhausted",
            Rule::InvalidSpec => "invalid-spec",
        }
    }
}

/// Why a container may not be created, worded for the person who typed `ctr run` or
/// `docker run`: what is refused and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule that refuses.
    pub rule: Rule,
    /// The seed's wording of what is refused.
    pub detail: String,
    /// What the user can change to get a container.
    pub fix: String,
}

impl Refusal {
    /// A refusal by `rule`: what is wrong (`detail`) and what to change (`fix`).
    pub fn new(rule: Rule, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Refusal {
            rule,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "eci: {} (rule {}; {})",
            self.detail,
            self.rule.name(),
            self.fix
        )
    }
}

impl std::error::Error for Refusal {}
