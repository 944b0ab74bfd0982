use crate::{HostFacts, IdBlock, IdPool, KubeletRange, Refusal, Rule, BLOCK_SIZE};
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
/// containerd's CRI annotation naming a pod's sandbox ("sandbox") or app container.
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

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

/// The ID block a Kubernetes pod with `hostUsers: false` asked for: the sandbox of a CRI pod
/// whose spec names a user namespace with `linux.uidMappings` (containerd 2 pins one and passes
/// its path; the kubelet picked the block). `None` for every other spec — one that asks for no
/// mapping, one that joins another container's namespaces (a pod's app containers join the
/// sandbox's), and any non-CRI client (`ctr --uidmap`, `docker --userns`), whose mapping is
/// replaced by a block from ECI's pool as ever. A pod's mapping is honoured only when it is a
/// whole kubelet block that no other user of the host's IDs can hold: container IDs 0..65535
/// on 65536 host IDs starting at a multiple of 65536, uids and gids alike, inside the kubelet's
/// range (so never host root nor the host's own users below it) and outside ECI's pool. The
/// user namespace itself is always ECI's own, made with that mapping; exclusivity among ECI
/// containers is the caller's lease on the block.
pub fn requested_block(
    spec: &Spec,
    kubelet: &KubeletRange,
    pool: &IdPool,
) -> Result<Option<IdBlock>, Refusal> {
    let Some(linux) = spec.linux() else {
        return Ok(None);
    };
    let sandbox = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CRI_CONTAINER_TYPE))
        .is_some_and(|t| t == "sandbox");
    let user_ns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == Ns::User);
    let joins = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.path().as_deref().and_then(sibling_user_ns).is_some());
    let uids = linux.uid_mappings().clone().unwrap_or_default();
    let gids = linux.gid_mappings().clone().unwrap_or_default();
    if !sandbox || !user_ns || joins || (uids.is_empty() && gids.is_empty()) {
        return Ok(None);
    }
    let show = |m: &[oci_spec::runtime::LinuxIdMapping]| {
        m.iter()
            .map(|m| format!("{}:{}:{}", m.container_id(), m.host_id(), m.size()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let refuse = |why: String, fix: &str| {
        Err(Refusal::new(
            Rule::UserNamespace,
            format!(
                "the pod's user namespace (uids {}, gids {}) {why}",
                show(&uids),
                show(&gids)
            ),
            fix.to_string(),
        ))
    };
    const KUBELET_BLOCK: &str = "use the kubelet's own mapping (one block of 65536 IDs per pod, userNamespaces.idsPerPod = 65536), or drop hostUsers: false and ECI gives the pod a block of its own";
    if uids.len() != 1 || gids.len() != 1 || uids != gids {
        return refuse(
            "is not one mapping shared by uids and gids".into(),
            KUBELET_BLOCK,
        );
    }
    let m = &uids[0];
    let (first, size) = (u64::from(m.host_id()), u64::from(m.size()));
    if m.container_id() != 0 || size != u64::from(BLOCK_SIZE) {
        return refuse(
            "does not map container IDs 0..65535, the block every ECI container gets".into(),
            KUBELET_BLOCK,
        );
    }
    // 2^32 - 1 is no ID at all (the kernel's "invalid" uid): the last block cannot be whole.
    if first == 0 || first < kubelet.first || first + size > kubelet.end().min(u64::from(u32::MAX))
    {
        return refuse(
            format!(
                "maps host IDs outside the kubelet's range {}..{}{}, which would hand the pod host root or the host's own users",
                kubelet.first,
                kubelet.end(),
                if kubelet.configured { " (its /etc/subuid entry)" } else { "" }
            ),
            "let the kubelet pick the pod's block, from its range in /etc/subuid",
        );
    }
    if first % u64::from(BLOCK_SIZE) != 0 {
        return refuse(
            "does not start at a multiple of 65536, as every kubelet block does".into(),
            KUBELET_BLOCK,
        );
    }
    if pool.overlaps(first, size) {
        return refuse(
            format!(
                "overlaps ECI's own ID pool {}..{}, whose blocks go to other containers",
                pool.first,
                pool.end()
            ),
            "keep the kubelet's range and ECI's pool apart: an /etc/subuid entry `kubelet:FIRST:COUNT` past ECI's pool, or [id_pool] first/blocks in the ECI policy (`containerd-shim-eci-v2 enforce status` checks them)",
        );
    }
    // Below 2^32 - 1 by the range check above.
    let first = u32::try_from(first).unwrap_or(u32::MAX);
    Ok(Some(IdBlock { first }))
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

    /// A CRI sandbox as containerd 2 writes it: its pinned user namespace and the mapping.
    fn pod_spec(uids: &[(u32, u32, u32)], gids: &[(u32, u32, u32)]) -> Spec {
        let mut spec = ctr_spec();
        set_ns(&mut spec, |ns| {
            ns.push(
                LinuxNamespaceBuilder::default()
                    .typ(Ns::User)
                    .path("/var/lib/containerd/sandboxes/p/pinned-namespaces/user")
                    .build()
                    .unwrap(),
            )
        });
        spec.set_annotations(Some(
            [(CRI_CONTAINER_TYPE.to_string(), "sandbox".to_string())].into(),
        ));
        let maps = |m: &[(u32, u32, u32)]| {
            m.iter()
                .map(|&(c, h, s)| {
                    LinuxIdMappingBuilder::default()
                        .container_id(c)
                        .host_id(h)
                        .size(s)
                        .build()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let mut linux = spec.linux().clone().unwrap();
        linux
            .set_uid_mappings(Some(maps(uids)))
            .set_gid_mappings(Some(maps(gids)));
        spec.set_linux(Some(linux));
        spec
    }

    const POOL: IdPool = IdPool {
        first: 100_000,
        blocks: 1000,
    };
    const KUBELET_BLOCK: u32 = 1 << 31;

    #[test]
    fn a_kubelet_block_outside_our_pool_is_honoured() {
        let spec = pod_spec(&[(0, KUBELET_BLOCK, 65536)], &[(0, KUBELET_BLOCK, 65536)]);
        let block = requested_block(&spec, &KubeletRange::default(), &POOL)
            .unwrap()
            .unwrap();
        assert_eq!(block.first, KUBELET_BLOCK);
        let mut spec = spec;
        assert!(!harden(&mut spec, &facts(), block).unwrap());
        let linux = spec.linux().as_ref().unwrap();
        let m = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!(
            (m.container_id(), m.host_id(), m.size()),
            (0, KUBELET_BLOCK, 65536)
        );
        assert_eq!(linux.gid_mappings(), linux.uid_mappings());
        let users: Vec<_> = ns_of(&spec)
            .into_iter()
            .filter(|n| n.typ() == Ns::User)
            .collect();
        assert_eq!(users.len(), 1);
        // Every other rule still holds: host pid is refused with a pod mapping too.
        let mut spec = pod_spec(&[(0, KUBELET_BLOCK, 65536)], &[(0, KUBELET_BLOCK, 65536)]);
        set_ns(&mut spec, |ns| ns.retain(|n| n.typ() != Ns::Pid));
        assert_eq!(
            harden(&mut spec, &facts(), block).unwrap_err().rule,
            Rule::HostNamespace
        );
    }

    #[test]
    fn no_mapping_or_a_joined_namespace_asks_for_nothing() {
        let k = KubeletRange::default();
        assert_eq!(requested_block(&ctr_spec(), &k, &POOL), Ok(None));
        // Not a CRI sandbox (`ctr run --uidmap 0:0:65536`): replaced by a pool block, as ever.
        let mut spec = pod_spec(&[(0, 0, 65536)], &[(0, 0, 65536)]);
        spec.set_annotations(None);
        assert_eq!(requested_block(&spec, &k, &POOL), Ok(None));
        let mut spec = pod_spec(&[(0, KUBELET_BLOCK, 65536)], &[(0, KUBELET_BLOCK, 65536)]);
        set_ns(&mut spec, |ns| {
            ns.retain(|n| n.typ() != Ns::User);
            ns.push(
                LinuxNamespaceBuilder::default()
                    .typ(Ns::User)
                    .path("/proc/4242/ns/user")
                    .build()
                    .unwrap(),
            );
        });
        assert_eq!(requested_block(&spec, &k, &POOL), Ok(None));
    }

    #[test]
    fn unsafe_mappings_are_refused_naming_the_rule() {
        let k = KubeletRange::default();
        let b = KUBELET_BLOCK;
        for (uids, gids, says) in [
            // critest's own mapping: host IDs from 1000, the host's users, and into our pool.
            (
                vec![(0, 1000, 100_000)],
                vec![(0, 1000, 100_000)],
                "0..65535",
            ),
            (
                vec![(0, 0, 65536)],
                vec![(0, 0, 65536)],
                "outside the kubelet's range",
            ),
            (
                vec![(0, 1000, 65536)],
                vec![(0, 1000, 65536)],
                "outside the kubelet's range",
            ),
            (
                vec![(0, 131_072, 65536)],
                vec![(0, 131_072, 65536)],
                "overlaps ECI's own ID pool",
            ),
            (
                vec![(0, b + 1, 65536)],
                vec![(0, b + 1, 65536)],
                "multiple of 65536",
            ),
            (vec![(1, b, 65536)], vec![(1, b, 65536)], "0..65535"),
            (
                vec![(0, b, 65536)],
                vec![(0, b + 65536, 65536)],
                "shared by uids and gids",
            ),
            (
                vec![(0, b, 65536), (0, b + 65536, 65536)],
                vec![(0, b, 65536)],
                "shared by uids and gids",
            ),
            (
                vec![(0, u32::MAX - 65535, 65536)],
                vec![(0, u32::MAX - 65535, 65536)],
                "outside",
            ),
        ] {
            let spec = pod_spec(&uids, &gids);
            let r = requested_block(&spec, &k, &POOL).unwrap_err();
            assert_eq!(r.rule, Rule::UserNamespace);
            assert!(r.to_string().contains(says), "{uids:?} {gids:?}: {r}");
            assert!(r.to_string().contains("rule user-namespace"), "{r}");
        }
        // The default pool reaches 2^32: there every kubelet block is refused until the two
        // ranges are kept apart.
        let spec = pod_spec(&[(0, b, 65536)], &[(0, b, 65536)]);
        let r = requested_block(&spec, &k, &IdPool::default()).unwrap_err();
        assert!(r.to_string().contains("/etc/subuid"), "{r}");
        // A configured kubelet range is the only one honoured.
        let narrow = KubeletRange {
            first: 65_667_072,
            len: 110 * 65_536,
            configured: true,
        };
        assert!(requested_block(&spec, &narrow, &POOL).is_err());
        let inside = pod_spec(&[(0, 65_667_072, 65536)], &[(0, 65_667_072, 65536)]);
        assert!(requested_block(&inside, &narrow, &POOL).unwrap().is_some());
    }
}
