use crate::{HostFacts, Policy, Refusal, ResolvedPath, Rule};
use oci_spec::runtime::{Mount, Spec};
use std::path::Path;

/// Whether an OCI mount is a bind of a host path.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

/// Refuse restricted sources; return the binds the caller must ID-map.
pub(crate) fn harden(
    spec: &mut Spec,
    facts: &HostFacts,
    policy: &Policy,
) -> Result<Vec<usize>, Refusal> {
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
        check_source(resolved, facts, policy)?;
        binds.push(index);
    }
    Ok(binds)
}

fn check_source(source: &ResolvedPath, facts: &HostFacts, policy: &Policy) -> Result<(), Refusal> {
    if facts
        .own_paths
        .iter()
        .any(|own| source.canonical.starts_with(own))
    {
        return Ok(());
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
    Ok(())
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
}
