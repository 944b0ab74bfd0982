use crate::{HostFacts, IdBlock, Refusal, Rule};
use oci_spec::runtime::{
    LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType as Ns, Spec,
};
use std::path::{Path, PathBuf};

/// Namespaces a container may never share with the host: sharing them would let container
/// root act on host processes, the host network or host IPC objects.
const MUST_BE_PRIVATE: &[(Ns, &str)] = &[
    (Ns::Pid, "--pid"),
    (Ns::Network, "--network"),
    (Ns::Ipc, "--ipc"),
];
/// Namespaces that are made private whatever the spec asks.
const ALWAYS_PRIVATE: &[Ns] = &[Ns::Uts, Ns::Cgroup, Ns::Mount];

/// Force a user namespace, refuse host pid/net/ipc, privatise uts/cgroup/mount.
/// Returns whether the container joins another container's user namespace.
pub(crate) fn harden(spec: &mut Spec, facts: &HostFacts, block: IdBlock) -> Result<bool, Refusal> {
    let mut linux = spec
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().expect("empty linux"));
    let mut namespaces: Vec<LinuxNamespace> = linux.namespaces().clone().unwrap_or_default();

    for &(typ, flag) in MUST_BE_PRIVATE {
        let shares_host = match namespaces.iter().find(|n| n.typ() == typ) {
            None => true,
            Some(ns) => ns
                .path()
                .as_deref()
                .is_some_and(|p| facts.namespace_is_host(typ, p)),
        };
        if shares_host {
            return Err(host_namespace_refusal(typ, flag));
        }
    }

    // The user namespace whose container we join, if any: the owner of a joined pid/net/ipc
    // namespace of another container (`/proc/<pid>/ns/net` → `/proc/<pid>/ns/user`).
    let joined_user_ns = namespaces
        .iter()
        .filter(|n| MUST_BE_PRIVATE.iter().any(|(t, _)| *t == n.typ()))
        .find_map(|n| n.path().as_deref().and_then(sibling_user_ns));

    namespaces.retain(|n| n.typ() != Ns::User);
    for typ in ALWAYS_PRIVATE {
        namespaces.retain(|n| {
            n.typ() != *typ
                || n.path()
                    .as_deref()
                    .is_some_and(|p| !facts.namespace_is_host(*typ, p))
        });
        if !namespaces.iter().any(|n| n.typ() == *typ) {
            namespaces.push(private(*typ));
        }
    }

    let mut user = private(Ns::User);
    if let Some(path) = &joined_user_ns {
        user.set_path(Some(path.clone()));
        linux.set_uid_mappings(None).set_gid_mappings(None);
    } else {
        let mapping = vec![LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(block.first)
            .size(block.size())
            .build()
            .expect("id mapping")];
        linux
            .set_uid_mappings(Some(mapping.clone()))
            .set_gid_mappings(Some(mapping));
    }
    namespaces.insert(0, user);
    if joined_user_ns.is_none() {
        private_boot_clock(&mut linux, &mut namespaces, facts);
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    Ok(joined_user_ns.is_some())
}

/// A time namespace whose boot clock starts at the container's creation: uptime(1), sysinfo(2)
/// and CLOCK_BOOTTIME report the container's uptime, not the host's.
fn private_boot_clock(
    linux: &mut oci_spec::runtime::Linux,
    namespaces: &mut Vec<LinuxNamespace>,
    facts: &HostFacts,
) {
    let Some(host_secs) = facts.host_boottime_secs else {
        return;
    };
    if namespaces
        .iter()
        .any(|n| n.typ() == Ns::Time && n.path().is_some())
    {
        return;
    }
    if !namespaces.iter().any(|n| n.typ() == Ns::Time) {
        namespaces.push(private(Ns::Time));
    }
    let mut offsets = linux.time_offsets().clone().unwrap_or_default();
    offsets.entry("boottime".to_string()).or_insert_with(|| {
        let mut offset = oci_spec::runtime::LinuxTimeOffset::default();
        offset.set_secs(Some(-host_secs));
        offset
    });
    linux.set_time_offsets(Some(offsets));
}

fn private(typ: Ns) -> LinuxNamespace {
    LinuxNamespaceBuilder::default()
        .typ(typ)
        .build()
        .expect("namespace")
}

fn sibling_user_ns(path: &Path) -> Option<PathBuf> {
    let parts: Vec<&str> = path.to_str()?.split('/').collect();
    match parts.as_slice() {
        ["", "proc", pid, "ns", _]
            if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) =>
        {
            Some(PathBuf::from(format!("/proc/{pid}/ns/user")))
        }
        _ => None,
    }
}

fn host_namespace_refusal(typ: Ns, flag: &str) -> Refusal {
    let detail = match typ {
        Ns::Network => "invalid or unsupported container spec: eci containers can't share a network namespace with the host (because they use the linux user-namespace for isolation)".to_string(),
        _ => format!(
            "invalid or unsupported container spec: eci containers can't share namespaces [{typ}] with the host (because they use the linux user-namespace for isolation)"
        ),
    };
    Refusal::new(
        Rule::HostNamespace,
        detail,
        format!("drop {flag}=host, or share another container's namespace instead"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ctr_spec;
    use crate::FileId;

    const HOST_NET: FileId = FileId {
        dev: 4,
        ino: 4026531840,
    };

    fn facts() -> HostFacts {
        let mut f = HostFacts::default();
        f.host_namespaces.insert(Ns::Network, HOST_NET);
        f.host_namespaces.insert(
            Ns::Pid,
            FileId {
                dev: 4,
                ino: 4026531836,
            },
        );
        f.namespace_paths.insert("/proc/1/ns/net".into(), HOST_NET);
        f.namespace_paths.insert(
            "/proc/4242/ns/net".into(),
            FileId {
                dev: 4,
                ino: 4026532999,
            },
        );
        f
    }

    fn block() -> IdBlock {
        IdBlock { first: 165_536 }
    }

    fn ns_of(spec: &Spec) -> Vec<LinuxNamespace> {
        spec.linux().as_ref().unwrap().namespaces().clone().unwrap()
    }

    fn set_ns(spec: &mut Spec, f: impl FnOnce(&mut Vec<LinuxNamespace>)) {
        let mut linux = spec.linux().clone().unwrap();
        let mut ns = linux.namespaces().clone().unwrap();
        f(&mut ns);
        linux.set_namespaces(Some(ns));
        spec.set_linux(Some(linux));
    }

    #[test]
    fn default_spec_gets_user_namespace_and_mapping() {
        let mut spec = ctr_spec();
        assert!(!harden(&mut spec, &facts(), block()).unwrap());
        let ns = ns_of(&spec);
        assert!(ns.iter().any(|n| n.typ() == Ns::User && n.path().is_none()));
        assert!(ns.iter().any(|n| n.typ() == Ns::Cgroup));
        let linux = spec.linux().as_ref().unwrap();
        let m = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!(
            (m.container_id(), m.host_id(), m.size()),
            (0, 165_536, 65_536)
        );
        assert_eq!(linux.gid_mappings(), linux.uid_mappings());
    }

    #[test]
    fn boot_clock_starts_at_create() {
        let mut spec = ctr_spec();
        let mut f = facts();
        f.host_boottime_secs = Some(7_000);
        harden(&mut spec, &f, block()).unwrap();
        assert!(ns_of(&spec)
            .iter()
            .any(|n| n.typ() == Ns::Time && n.path().is_none()));
        let offsets = spec
            .linux()
            .as_ref()
            .unwrap()
            .time_offsets()
            .clone()
            .unwrap();
        assert_eq!(offsets["boottime"].secs(), Some(-7_000));
    }

    #[test]
    fn host_user_namespace_is_replaced() {
        let mut spec = ctr_spec();
        set_ns(&mut spec, |ns| {
            ns.push(
                LinuxNamespaceBuilder::default()
                    .typ(Ns::User)
                    .path("/proc/1/ns/user")
                    .build()
                    .unwrap(),
            )
        });
        harden(&mut spec, &facts(), block()).unwrap();
        let users: Vec<_> = ns_of(&spec)
            .into_iter()
            .filter(|n| n.typ() == Ns::User)
            .collect();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].path(), &None);
    }

    #[test]
    fn omitted_pid_namespace_is_refused_with_seed_wording() {
        let mut spec = ctr_spec();
        set_ns(&mut spec, |ns| ns.retain(|n| n.typ() != Ns::Pid));
        let r = harden(&mut spec, &facts(), block()).unwrap_err();
        assert_eq!(r.rule, Rule::HostNamespace);
        assert!(r.to_string().contains("can't share namespaces [pid] with the host (because they use the linux user-namespace for isolation)"), "{r}");
    }

    #[test]
    fn host_network_by_omission_or_path_is_refused() {
        let mut spec = ctr_spec();
        set_ns(&mut spec, |ns| ns.retain(|n| n.typ() != Ns::Network));
        let r = harden(&mut spec, &facts(), block()).unwrap_err();
        assert!(
            r.detail
                .contains("can't share a network namespace with the host"),
            "{r}"
        );

        let mut spec = ctr_spec();
        set_ns(&mut spec, |ns| {
            for n in ns.iter_mut().filter(|n| n.typ() == Ns::Network) {
                n.set_path(Some("/proc/1/ns/net".into()));
            }
        });
        assert!(harden(&mut spec, &facts(), block()).is_err());
    }

    #[test]
    fn unidentified_namespace_path_fails_closed() {
        let mut spec = ctr_spec();
        set_ns(&mut spec, |ns| {
            for n in ns.iter_mut().filter(|n| n.typ() == Ns::Ipc) {
                n.set_path(Some("/proc/999/ns/ipc".into()));
            }
        });
        let r = harden(&mut spec, &facts(), block()).unwrap_err();
        assert!(r.detail.contains("[ipc]"), "{r}");
    }

    #[test]
    fn other_containers_network_is_joined_with_its_user_namespace() {
        let mut spec = ctr_spec();
        set_ns(&mut spec, |ns| {
            for n in ns.iter_mut().filter(|n| n.typ() == Ns::Network) {
                n.set_path(Some("/proc/4242/ns/net".into()));
            }
        });
        assert!(harden(&mut spec, &facts(), block()).unwrap());
        let user = ns_of(&spec)
            .into_iter()
            .find(|n| n.typ() == Ns::User)
            .unwrap();
        assert_eq!(
            user.path().as_deref(),
            Some(Path::new("/proc/4242/ns/user"))
        );
        assert!(spec.linux().as_ref().unwrap().uid_mappings().is_none());
    }
}
