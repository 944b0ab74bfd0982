use crate::idrange::IdPool;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The administrator's policy file, read when the client names none.
pub const DEFAULT_POLICY_PATH: &str = "/etc/containerd-shim-eci/policy.toml";

/// Paths no container may bind-mount, whatever the policy file says.
pub const DEFAULT_RESTRICTED: &[&str] = &[
    "/run/containerd",
    "/var/run/containerd",
    "/etc/containerd",
    "/var/lib/containerd",
    "/etc/docker",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/lib/docker",
    "/etc/containerd-shim-eci",
];

/// Sockets that hand a container the engine; images the policy trusts may mount these.
pub const ENGINE_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// The administrator's policy file. Absent file: these defaults. Any unknown key or bad value
/// is an error, and an invalid file refuses every container (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Host paths refused as bind-mount sources, in addition to [`DEFAULT_RESTRICTED`].
    pub restricted_mounts: Vec<PathBuf>,
    /// Images allowed to mount the engine socket: `name@sha256:…`, `name:tag` or `*`.
    pub trusted_socket_images: Vec<String>,
    /// Where every refusal is appended as one JSON line.
    pub audit_log: PathBuf,
    /// Where ID blocks come from.
    pub id_pool: IdPool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            restricted_mounts: Vec::new(),
            trusted_socket_images: Vec::new(),
            audit_log: PathBuf::from("/var/log/containerd-shim-eci/audit.jsonl"),
            id_pool: IdPool::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("policy file {path}: {message}")]
/// A policy file that cannot be used.
pub struct PolicyError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it, with the line and column.
    pub message: String,
}

impl Policy {
    /// Parse the text of a policy file found at `path` (named in errors only).
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let err = |message: String| PolicyError {
            path: path.to_path_buf(),
            message,
        };
        let policy: Policy =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;
        policy.id_pool.validate().map_err(err)?;
        for p in &policy.restricted_mounts {
            if !p.is_absolute() {
                return Err(err(format!(
                    "restricted_mounts: {} is not an absolute path",
                    p.display()
                )));
            }
        }
        for image in &policy.trusted_socket_images {
            if image.is_empty() || image.contains(char::is_whitespace) {
                return Err(err(format!(
                    "trusted_socket_images: {image:?} is not an image reference"
                )));
            }
        }
        Ok(policy)
    }

    /// Every restricted path: the defaults, the engine address the shim was started with, the
    /// policy file and its folder, the shim binary, and the administrator's additions.
    pub fn restricted_paths(&self, extra: &[PathBuf]) -> Vec<PathBuf> {
        DEFAULT_RESTRICTED
            .iter()
            .map(PathBuf::from)
            .chain(extra.iter().cloned())
            .chain(self.restricted_mounts.iter().cloned())
            .collect()
    }

    /// Whether `image` may mount an engine socket.
    pub fn trusts_socket_image(&self, image: &crate::ImageRef) -> bool {
        self.trusted_socket_images.iter().any(|t| {
            if t == "*" {
                return true;
            }
            match t.split_once('@') {
                Some((name, digest)) => {
                    digest == image.digest && repository(name) == repository(&image.name)
                }
                None => names_match(t, &image.name),
            }
        })
    }
}

/// `alpine:3.19` matches `docker.io/library/alpine:3.19`; a name without a tag means `latest`.
fn names_match(wanted: &str, recorded: &str) -> bool {
    normalize(wanted) == normalize(recorded)
}

/// The normalized name without its tag: what a `name@digest` entry names.
fn repository(name: &str) -> String {
    let full = normalize(name);
    match full.rfind(':') {
        Some(i) if !full[i..].contains('/') => full[..i].to_string(),
        _ => full,
    }
}

fn normalize(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let last = name.rsplit('/').next().unwrap_or(name);
    let name = if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    };
    let first = name.split('/').next().unwrap_or("");
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        name
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageRef;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/etc/containerd-shim-eci/policy.toml"), text)
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("").unwrap(), Policy::default());
    }

    #[test]
    fn full_file_parses() {
        let p = parse(
            r#"
restricted_mounts = ["/srv/secrets"]
trusted_socket_images = ["docker.io/library/docker:cli"]
audit_log = "/var/log/eci.jsonl"
[id_pool]
first = 200000
blocks = 10
"#,
        )
        .unwrap();
        assert_eq!(p.restricted_mounts, vec![PathBuf::from("/srv/secrets")]);
        assert_eq!(
            p.id_pool,
            IdPool {
                first: 200_000,
                blocks: 10
            }
        );
    }

    #[test]
    fn typo_names_key_and_line() {
        let e = parse("restricted_mount = [\"/x\"]\n").unwrap_err();
        assert!(e.message.contains("restricted_mount"), "{e}");
        assert!(e.message.contains("line 1"), "{e}");
        let e = parse("\n\n[id_pool]\nfirst = 1\nblock = 2\n").unwrap_err();
        assert!(
            e.message.contains("block") && e.message.contains("line 5"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse("restricted_mounts = \"/x\"").is_err());
        assert!(parse("restricted_mounts = [\"relative/path\"]").is_err());
        assert!(parse("[id_pool]\nfirst = -1\nblocks = 1").is_err());
        assert!(parse("[id_pool]\nfirst = 0\nblocks = 1").is_err());
        assert!(parse("trusted_socket_images = [\"\"]").is_err());
        assert!(parse("audit_log = 3").is_err());
    }

    #[test]
    fn trusted_images() {
        let image = ImageRef {
            name: "docker.io/library/docker:cli".into(),
            digest: "sha256:abc".into(),
        };
        let with = |t: &str| Policy {
            trusted_socket_images: vec![t.into()],
            ..Policy::default()
        };
        assert!(with("*").trusts_socket_image(&image));
        assert!(with("docker:cli").trusts_socket_image(&image));
        assert!(with("docker.io/library/docker:cli").trusts_socket_image(&image));
        assert!(with("docker@sha256:abc").trusts_socket_image(&image));
        assert!(!with("docker@sha256:abd").trusts_socket_image(&image));
        assert!(!with("docker").trusts_socket_image(&image));
        assert!(!with("evil/docker:cli").trusts_socket_image(&image));
        assert!(!Policy::default().trusts_socket_image(&image));
    }
}
