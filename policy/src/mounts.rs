use crate::{BoundTree, FsLocation, HostFacts, Policy, Refusal, ResolvedPath, Rule, TreeSearch};
use oci_spec::runtime::{Mount, Spec};
use std::path::Path;

/// Whether an OCI mount is a bind of a host path.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

/// What to change when a container asks for mounts to propagate back to the host.
const PROPAGATION_FIX: &str = "use rslave (Kubernetes mountPropagation: HostToContainer: the host's later mounts under the volume appear in the container) or rprivate (None) instead";

/// Mounts made in an ECI container never reach the host: its mount namespace is owned by its
/// own user namespace, and the kernel reduces every shared mount copied into a less privileged
/// namespace to a slave, so propagation runs host to container only. A request for the other
/// direction — `rshared`/`shared` on a bind (Kubernetes' `Bidirectional`, Docker's `:rshared`)
/// or a shared root file system (`rootfsPropagation`, which containerd sets for such a mount) —
/// would silently get less than it asked for, so it is refused; it would hand the container
/// the host's mount table if it worked. `rslave`/`slave` keeps the host's mounts flowing in.
///
/// The recursive spellings of `rootfsPropagation` that containerd's CRI writes (`rslave` for a
/// HostToContainer volume) are the plain ones libcontainer knows (it always applies them
/// recursively, and fails on any other): without this the container's init died on
/// `rslave` and libcontainer reported it as "failed seccomp listener".
fn harden_propagation(spec: &mut Spec) -> Result<(), Refusal> {
    let shared = |o: &str| o == "shared" || o == "rshared";
    for m in spec.mounts().iter().flatten().filter(|m| is_bind(m)) {
        if let Some(p) = m.options().iter().flatten().find(|o| shared(o)) {
            return Err(Refusal::new(
                Rule::MountPropagation,
                format!(
                    "eci containers can't propagate mounts to the host ({p} on the mount of {} at {}): an ECI container's mounts stay in its own user namespace",
                    m.source().as_deref().unwrap_or(Path::new("?")).display(),
                    m.destination().display()
                ),
                PROPAGATION_FIX,
            ));
        }
    }
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(());
    };
    let Some(root) = linux.rootfs_propagation().clone() else {
        return Ok(());
    };
    if shared(&root) {
        return Err(Refusal::new(
            Rule::MountPropagation,
            format!("eci containers can't propagate mounts to the host (rootfsPropagation {root}): an ECI container's mounts stay in its own user namespace"),
            format!("drop rootfsPropagation {root}; {PROPAGATION_FIX}"),
        ));
    }
    let plain = match root.as_str() {
        "rslave" => "slave",
        "rprivate" => "private",
        "runbindable" => "unbindable",
        other => other,
    };
    if plain != root {
        linux.set_rootfs_propagation(Some(plain.to_string()));
        spec.set_linux(Some(linux));
    }
    Ok(())
}

/// Refuse restricted sources and mounts that ask to propagate to the host; return the binds
/// the caller must ID-map.
pub(crate) fn harden(
    spec: &mut Spec,
    facts: &HostFacts,
    policy: &Policy,
) -> Result<Vec<usize>, Refusal> {
    harden_propagation(spec)?;
    let mut binds = Vec::new();
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let Some(source) = m.source().as_deref() else {
            continue;
        };
        let Some(resolved) = facts.mount_sources.get(source) else {
            return Err(Refusal::new(
                Rule::InvalidSpec,
                format!(
                    "can't mount {}: the source does not exist or cannot be resolved",
                    source.display()
                ),
                "create the source directory or file on the host, or fix the path",
            ));
        };
        check_source(resolved, facts.bound_trees.get(source), facts, policy)?;
        binds.push(index);
    }
    Ok(binds)
}

/// File systems of the host's kernel: a bind of one (or of a directory holding one) shows the
/// host's processes, devices, cgroups or kernel knobs, not the container's.
pub const HOST_KERNEL_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "fusectl",
    "pstore",
    "efivarfs",
    "binfmt_misc",
    "mqueue",
];

fn check_source(
    source: &ResolvedPath,
    tree: Option<&BoundTree>,
    facts: &HostFacts,
    policy: &Policy,
) -> Result<(), Refusal> {
    if facts
        .own_paths
        .iter()
        .any(|own| source.canonical.starts_with(own))
    {
        return Ok(());
    }
    let Some(loc) = &source.location else {
        // Its mount is not in the host's mount table: another mount namespace's file system,
        // reached through `/proc/PID/root` or `/proc/PID/cwd` (another container's root), or
        // a kernel-internal one (a pipe or socket through `/proc/self/fd/N`).
        return Err(Refusal::new(
            Rule::RestrictedMount,
            format!(
                "can't mount {} because it is not on a file system mounted on the host (another container's or process's files, reached through /proc?)",
                source.requested.display()
            ),
            "mount a host path, not one reached through /proc/PID/root, /proc/PID/cwd or /proc/PID/fd",
        ));
    };
    if HOST_KERNEL_FS.contains(&loc.fstype.as_str()) {
        return Err(kernel_fs_refusal(&source.requested, &source.canonical, loc));
    }
    for restricted in &facts.restricted {
        if !(source.is_within(restricted) || source.contains(restricted)) {
            continue;
        }
        let is_socket = facts
            .engine_sockets
            .iter()
            .any(|s| s.id == source.id && s.id == restricted.id);
        if is_socket
            && facts
                .image
                .as_ref()
                .is_some_and(|i| policy.trusts_socket_image(i))
        {
            continue;
        }
        return Err(restricted_refusal(
            &source.requested,
            &restricted.canonical,
            is_socket,
        ));
    }
    let Some(tree) = tree else {
        return Ok(());
    };
    for (at, mounted) in &tree.submounts {
        if HOST_KERNEL_FS.contains(&mounted.fstype.as_str()) {
            return Err(kernel_fs_refusal(&source.requested, at, mounted));
        }
        let shown = ResolvedPath {
            canonical: at.clone(),
            location: Some(mounted.clone()),
            ..ResolvedPath::default()
        };
        if let Some(restricted) = facts
            .restricted
            .iter()
            .find(|r| shown.is_within(r) || shown.contains(r))
        {
            return Err(Refusal::new(
                Rule::RestrictedMount,
                format!(
                    "can't mount {} because the mount at {} inside it shows {}, which is configured as a restricted host mount",
                    source.requested.display(),
                    at.display(),
                    restricted.canonical.display()
                ),
                format!(
                    "unmount {} on the host, or mount a host path without it",
                    at.display()
                ),
            ));
        }
    }
    for (at, id) in &tree.linked {
        if let Some(restricted) = facts.restricted.iter().find(|r| r.id == *id) {
            return Err(Refusal::new(
                Rule::RestrictedMount,
                format!(
                    "can't mount {} because {} inside it is another name (a hard link) of {}, which is configured as a restricted host mount",
                    source.requested.display(),
                    at.display(),
                    restricted.canonical.display()
                ),
                format!(
                    "remove the link {} on the host, or mount a host path without it",
                    at.display()
                ),
            ));
        }
    }
    if let TreeSearch::Stopped { entries } = tree.search {
        if let Some(linked) = facts.restricted.iter().find(|r| r.has_other_names()) {
            return Err(Refusal::new(
                Rule::RestrictedMount,
                format!(
                    "can't mount {}: {} is configured as a restricted host mount and has {} hard links, and {} is too large to be searched for them (more than {entries} entries)",
                    source.requested.display(),
                    linked.canonical.display(),
                    linked.links,
                    source.requested.display(),
                ),
                format!(
                    "mount a smaller host directory, or remove the extra hard links of {} on the host",
                    linked.canonical.display()
                ),
            ));
        }
    }
    Ok(())
}

fn kernel_fs_refusal(requested: &Path, at: &Path, fs: &FsLocation) -> Refusal {
    Refusal::new(
        Rule::RestrictedMount,
        format!(
            "can't mount {} because {} is the host's {} file system, which is configured as a restricted host mount",
            requested.display(),
            at.display(),
            fs.fstype
        ),
        format!(
            "mount {} inside the container instead (a privileged container mounts its own), or mount a host path without it",
            fs.fstype
        ),
    )
}

fn restricted_refusal(requested: &Path, restricted: &Path, is_socket: bool) -> Refusal {
    let fix = if is_socket {
        "mount a different path, or ask an administrator to list the image in trusted_socket_images of the ECI policy".to_string()
    } else if requested == restricted {
        "mount a different host path".to_string()
    } else {
        format!(
            "mount a host path that neither is nor contains {}",
            restricted.display()
        )
    };
    Refusal::new(
        Rule::RestrictedMount,
        format!(
            "can't mount {} because it's configured as a restricted host mount",
            requested.display()
        ),
        fix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ctr_spec;
    use crate::{FileId, ImageRef};
    use oci_spec::runtime::MountBuilder;
    use std::path::PathBuf;

    fn rp(requested: &str, canonical: &str, ino: u64) -> ResolvedPath {
        ResolvedPath {
            requested: requested.into(),
            canonical: canonical.into(),
            id: FileId { dev: 8, ino },
            location: Some(FsLocation {
                device: "8:0".into(),
                path: canonical.into(),
                fstype: "ext4".into(),
            }),
            ..ResolvedPath::default()
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            restricted: vec![
                rp("/etc/docker", "/etc/docker", 10),
                rp("/var/run/docker.sock", "/run/docker.sock", 11),
            ],
            engine_sockets: vec![rp("/var/run/docker.sock", "/run/docker.sock", 11)],
            own_paths: vec!["/var/lib/docker/containers/abc".into()],
            ..HostFacts::default()
        }
    }

    fn with_bind(source: &str, facts: &mut HostFacts, resolved: ResolvedPath) -> Spec {
        let mut spec = ctr_spec();
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            MountBuilder::default()
                .destination("/mnt")
                .typ("bind")
                .source(source)
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        facts.mount_sources.insert(PathBuf::from(source), resolved);
        spec
    }

    fn check(
        source: &str,
        resolved: ResolvedPath,
        image: Option<ImageRef>,
        policy: &Policy,
    ) -> Result<Vec<usize>, Refusal> {
        let mut f = facts();
        f.image = image;
        let mut spec = with_bind(source, &mut f, resolved);
        harden(&mut spec, &f, policy)
    }

    #[test]
    fn propagation_to_the_host_is_refused_and_from_it_allowed() {
        let mut facts = facts();
        let check =
            |spec: &Spec, facts: &HostFacts| harden(&mut spec.clone(), facts, &Policy::default());
        let with = |facts: &mut HostFacts, option: &str| {
            let mut spec = with_bind("/srv/data", facts, rp("/srv/data", "/srv/data", 7));
            let mut mounts = spec.mounts().clone().unwrap();
            let last = mounts.last_mut().unwrap();
            last.set_options(Some(vec!["rbind".into(), option.into()]));
            spec.set_mounts(Some(mounts));
            spec
        };
        for option in ["rshared", "shared"] {
            let r = check(&with(&mut facts, option), &facts).unwrap_err();
            assert_eq!(r.rule, Rule::MountPropagation);
            assert!(
                r.detail.contains(option) && r.detail.contains("/srv/data"),
                "{r}"
            );
            assert!(
                r.fix.contains("rslave") && r.fix.contains("HostToContainer"),
                "{r}"
            );
        }
        for option in ["rslave", "slave", "rprivate", "private"] {
            assert!(check(&with(&mut facts, option), &facts).is_ok(), "{option}");
        }
        // A shared root file system, as containerd's CRI sets for a Bidirectional volume.
        let mut spec = with(&mut facts, "rslave");
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_rootfs_propagation(Some("rshared".into()));
        spec.set_linux(Some(linux.clone()));
        let r = check(&spec, &facts).unwrap_err();
        assert_eq!(r.rule, Rule::MountPropagation);
        assert!(r.to_string().contains("rootfsPropagation rshared"), "{r}");
        // containerd's recursive spellings become the ones libcontainer knows.
        for (asked, given) in [
            ("rslave", "slave"),
            ("slave", "slave"),
            ("rprivate", "private"),
            ("runbindable", "unbindable"),
        ] {
            linux.set_rootfs_propagation(Some(asked.into()));
            spec.set_linux(Some(linux.clone()));
            let mut hardened = spec.clone();
            assert!(harden(&mut hardened, &facts, &Policy::default()).is_ok());
            assert_eq!(
                hardened
                    .linux()
                    .as_ref()
                    .unwrap()
                    .rootfs_propagation()
                    .as_deref(),
                Some(given),
                "{asked}"
            );
        }
        // Shared propagation of a file system the container makes itself stays inside it.
        let mut spec = ctr_spec();
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            MountBuilder::default()
                .destination("/scratch")
                .typ("tmpfs")
                .source("tmpfs")
                .options(vec!["rshared".to_string()])
                .build()
                .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        assert!(check(&spec, &facts).is_ok());
    }

    #[test]
    fn plain_host_dir_is_allowed_and_idmapped() {
        let n = ctr_spec().mounts().as_ref().unwrap().len();
        assert_eq!(
            check(
                "/home/u",
                rp("/home/u", "/home/u", 20),
                None,
                &Policy::default()
            )
            .unwrap(),
            vec![n]
        );
    }

    #[test]
    fn restricted_file_inside_dir_is_refused_with_seed_wording() {
        let r = check(
            "/etc/docker/daemon.json",
            rp("/etc/docker/daemon.json", "/etc/docker/daemon.json", 21),
            None,
            &Policy::default(),
        )
        .unwrap_err();
        assert_eq!(r.rule, Rule::RestrictedMount);
        assert!(r.detail.contains("can't mount /etc/docker/daemon.json because it's configured as a restricted host mount"), "{r}");
    }

    #[test]
    fn symlink_and_dotdot_are_judged_resolved() {
        assert!(check(
            "/tmp/link",
            rp("/tmp/link", "/etc/docker", 10),
            None,
            &Policy::default()
        )
        .is_err());
        assert!(check(
            "/etc/x/../docker",
            rp("/etc/x/../docker", "/etc/docker", 10),
            None,
            &Policy::default()
        )
        .is_err());
    }

    #[test]
    fn parent_of_restricted_is_refused() {
        let r = check("/etc", rp("/etc", "/etc", 2), None, &Policy::default()).unwrap_err();
        assert!(r.fix.contains("/etc/docker"), "{r}");
        assert!(check("/", rp("/", "/", 1), None, &Policy::default()).is_err());
    }

    #[test]
    fn hard_link_or_bind_alias_is_refused_by_identity() {
        assert!(check(
            "/srv/alias",
            rp("/srv/alias", "/srv/alias", 10),
            None,
            &Policy::default()
        )
        .is_err());
    }

    #[test]
    fn socket_needs_trusted_image() {
        let socket = || rp("/var/run/docker.sock", "/run/docker.sock", 11);
        let image = ImageRef {
            name: "docker.io/library/docker:cli".into(),
            digest: "sha256:1".into(),
        };
        assert!(check(
            "/var/run/docker.sock",
            socket(),
            Some(image.clone()),
            &Policy::default()
        )
        .is_err());
        let trusting = Policy {
            trusted_socket_images: vec!["docker@sha256:1".into()],
            ..Policy::default()
        };
        assert!(check(
            "/var/run/docker.sock",
            socket(),
            Some(image.clone()),
            &trusting
        )
        .is_ok());
        assert!(check("/var/run/docker.sock", socket(), None, &trusting).is_err());
        // Trust for the socket never extends to the rest of the engine.
        assert!(check(
            "/etc/docker",
            rp("/etc/docker", "/etc/docker", 10),
            Some(image),
            &trusting
        )
        .is_err());
    }

    #[test]
    fn containers_own_engine_files_are_allowed() {
        let own = rp(
            "/var/lib/docker/containers/abc/hosts",
            "/var/lib/docker/containers/abc/hosts",
            30,
        );
        let mut f = facts();
        f.restricted
            .push(rp("/var/lib/docker", "/var/lib/docker", 31));
        let mut spec = with_bind("/var/lib/docker/containers/abc/hosts", &mut f, own);
        assert!(harden(&mut spec, &f, &Policy::default()).is_ok());
    }

    #[test]
    fn unresolvable_source_is_refused() {
        let mut spec = with_bind("/nope", &mut facts(), rp("/x", "/x", 1));
        assert!(harden(&mut spec, &facts(), &Policy::default()).is_err());
    }

    fn loc(device: &str, path: &str, fstype: &str) -> FsLocation {
        FsLocation {
            device: device.into(),
            path: path.into(),
            fstype: fstype.into(),
        }
    }

    fn located(requested: &str, ino: u64, at: FsLocation) -> ResolvedPath {
        ResolvedPath {
            location: Some(at),
            ..rp(requested, requested, ino)
        }
    }

    /// Facts with /run/containerd restricted at its place on device 254:0 and a socket in it.
    fn located_facts() -> HostFacts {
        let mut f = facts();
        f.restricted.push(located(
            "/run/containerd",
            40,
            loc("254:0", "/run/containerd", "ext4"),
        ));
        f.restricted.push(ResolvedPath {
            kind: crate::FileKind::Socket,
            links: 2,
            ..located(
                "/run/containerd/containerd.sock",
                41,
                loc("254:0", "/run/containerd/containerd.sock", "ext4"),
            )
        });
        f
    }

    fn judge(
        f: &mut HostFacts,
        source: ResolvedPath,
        tree: Option<BoundTree>,
    ) -> Result<Vec<usize>, Refusal> {
        let path = source.requested.clone();
        if let Some(tree) = tree {
            f.bound_trees.insert(path.clone(), tree);
        }
        let mut spec = with_bind(path.to_str().unwrap(), f, source);
        harden(&mut spec, f, &Policy::default())
    }

    #[test]
    fn subdirectory_of_a_bind_alias_is_refused_by_location() {
        // `mount --bind /run/containerd /srv/alias`, then a bind of /srv/alias/io.containerd…
        let source = located(
            "/srv/alias/io.containerd.runtime.v2.task",
            50,
            loc(
                "254:0",
                "/run/containerd/io.containerd.runtime.v2.task",
                "ext4",
            ),
        );
        let r = judge(&mut located_facts(), source, None).unwrap_err();
        assert_eq!(r.rule, Rule::RestrictedMount);
        assert!(r.detail.contains("can't mount /srv/alias/io.containerd.runtime.v2.task because it's configured as a restricted host mount"), "{r}");
        // The same path on another device is someone else's directory.
        let other = located("/srv/other", 51, loc("8:1", "/run/containerd/x", "ext4"));
        assert!(judge(&mut located_facts(), other, None).is_ok());
    }

    #[test]
    fn a_source_outside_the_hosts_mount_table_is_refused() {
        // /proc/PID/root/home of another container: its overlay is not mounted on the host.
        let source = ResolvedPath {
            location: None,
            ..rp("/proc/123/root/home", "/home", 90)
        };
        let r = judge(&mut located_facts(), source, None).unwrap_err();
        assert!(r.detail.contains("can't mount /proc/123/root/home because it is not on a file system mounted on the host"), "{r}");
        assert!(
            r.fix.contains("not one reached through /proc/PID/root"),
            "{r}"
        );
    }

    #[test]
    fn host_kernel_file_systems_are_refused() {
        let r = judge(
            &mut located_facts(),
            located("/proc", 1, loc("0:21", "/", "proc")),
            None,
        )
        .unwrap_err();
        assert!(r.detail.contains("can't mount /proc because /proc is the host's proc file system, which is configured as a restricted host mount"), "{r}");
        assert!(r.fix.contains("mount proc inside the container"), "{r}");
        let tree = BoundTree {
            submounts: vec![("/srv/d/sys".into(), loc("0:22", "/", "sysfs"))],
            ..BoundTree::default()
        };
        let r = judge(
            &mut located_facts(),
            located("/srv/d", 60, loc("254:0", "/srv/d", "ext4")),
            Some(tree),
        )
        .unwrap_err();
        assert!(r.detail.contains("/srv/d/sys is the host's sysfs"), "{r}");
    }

    #[test]
    fn submount_showing_a_restricted_directory_is_refused() {
        let tree = BoundTree {
            submounts: vec![(
                "/srv/d/x".into(),
                loc(
                    "254:0",
                    "/run/containerd/io.containerd.runtime.v2.task",
                    "ext4",
                ),
            )],
            ..BoundTree::default()
        };
        let r = judge(
            &mut located_facts(),
            located("/srv/d", 60, loc("254:0", "/srv/d", "ext4")),
            Some(tree),
        )
        .unwrap_err();
        assert!(
            r.detail
                .contains("the mount at /srv/d/x inside it shows /run/containerd"),
            "{r}"
        );
        assert!(r.fix.contains("unmount /srv/d/x"), "{r}");
        // A submount of something harmless goes along.
        let tree = BoundTree {
            submounts: vec![("/srv/d/t".into(), loc("0:99", "/", "tmpfs"))],
            ..BoundTree::default()
        };
        assert!(judge(
            &mut located_facts(),
            located("/srv/d", 60, loc("254:0", "/srv/d", "ext4")),
            Some(tree)
        )
        .is_ok());
    }

    #[test]
    fn hard_link_of_a_restricted_socket_in_a_bound_directory_is_refused() {
        let tree = BoundTree {
            linked: vec![
                ("/srv/d/harmless".into(), FileId { dev: 8, ino: 77 }),
                ("/srv/d/sock".into(), FileId { dev: 8, ino: 41 }),
            ],
            search: TreeSearch::Complete,
            ..BoundTree::default()
        };
        let r = judge(
            &mut located_facts(),
            located("/srv/d", 60, loc("254:0", "/srv/d", "ext4")),
            Some(tree),
        )
        .unwrap_err();
        assert!(r.detail.contains("/srv/d/sock inside it is another name (a hard link) of /run/containerd/containerd.sock"), "{r}");
        assert!(r.fix.contains("remove the link /srv/d/sock"), "{r}");
    }

    #[test]
    fn a_search_cut_short_refuses_only_while_a_restricted_file_has_other_names() {
        let tree = || BoundTree {
            search: TreeSearch::Stopped { entries: 100 },
            ..BoundTree::default()
        };
        let source = || located("/srv/big", 60, loc("254:0", "/srv/big", "ext4"));
        let r = judge(&mut located_facts(), source(), Some(tree())).unwrap_err();
        assert!(r.detail.contains("too large to be searched"), "{r}");
        assert!(
            r.fix
                .contains("remove the extra hard links of /run/containerd/containerd.sock"),
            "{r}"
        );
        let mut f = located_facts();
        for r in &mut f.restricted {
            r.links = 1;
        }
        assert!(judge(&mut f, source(), Some(tree())).is_ok());
    }
}
