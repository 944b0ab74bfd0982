//! Runtime options a client sends with Create. They are read for compatibility and never
//! weaken isolation.

use crate::error::ShimError;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use std::path::PathBuf;

/// Runtime option types the shim accepts. They are read for compatibility and never weaken
/// isolation: a `BinaryName` pointing at runc, for one, is ignored.
pub(crate) const KNOWN_OPTION_TYPES: &[&str] = &[
    "containerd.runc.v1.Options",
    "io.containerd.runc.v1.Options",
    "runtimeoptions.v1.Options",
    // What ctr sends with --uidmap: the fifo owner for a user-namespaced container. The shim
    // opens the fifos itself and hands the process fds, so there is nothing to apply.
    "containerd.linux.runc.CreateOptions",
];

/// Read the runtime options the client sent. Only the policy file may be chosen, and only
/// among the administrator's files; nothing in them can weaken isolation.
pub(crate) fn policy_from_options(options: &Any) -> Result<PathBuf, ShimError> {
    let default = default_policy();
    if options.type_url.is_empty() {
        return Ok(default);
    }
    let name = options
        .type_url
        .rsplit('/')
        .next()
        .unwrap_or(&options.type_url);
    if !KNOWN_OPTION_TYPES.contains(&name) {
        return Err(ShimError::InvalidArgument(format!("eci: unknown runtime options type {:?}; the ECI runtime accepts runc's options ({}) or runtimeoptions.v1.Options", options.type_url, KNOWN_OPTION_TYPES[0])));
    }
    if name != "runtimeoptions.v1.Options" {
        return Ok(default);
    }
    // runtimeoptions.v1.Options { string type_url = 1; string config_path = 2; }
    let config_path = protobuf_string_field(&options.value, 2).unwrap_or_default();
    if config_path.is_empty() {
        return Ok(default);
    }
    let path = PathBuf::from(&config_path);
    let admin_dir = std::path::Path::new(eci_policy::DEFAULT_POLICY_PATH)
        .parent()
        .expect("policy dir");
    if !path.is_absolute() || !path.starts_with(admin_dir) || config_path.contains("/../") {
        return Err(ShimError::InvalidArgument(format!("eci: runtime option ConfigPath {config_path:?} is refused: an ECI policy file must live in {} (rule policy-file; ask an administrator to install it there)", admin_dir.display())));
    }
    if !path.exists() {
        return Err(ShimError::InvalidArgument(format!(
            "eci: runtime option ConfigPath names {config_path}, which does not exist"
        )));
    }
    Ok(path)
}

/// The policy when the client names none: `ECI_POLICY` from the shim's environment (which is
/// containerd's, the administrator's), if it names a file in the policy directory, else
/// [`eci_policy::DEFAULT_POLICY_PATH`]. For a containerd whose pods use `hostUsers: false`:
/// containerd 2's CRI sends runc's options to start such a pod's containers, and fails on a
/// handler configured with `ConfigPath` (runtimeoptions).
pub(crate) fn default_policy() -> PathBuf {
    let default = PathBuf::from(eci_policy::DEFAULT_POLICY_PATH);
    let admin_dir = default.parent().expect("policy dir").to_path_buf();
    std::env::var_os("ECI_POLICY")
        .map(PathBuf::from)
        .filter(|p| {
            p.is_absolute()
                && p.starts_with(&admin_dir)
                && !p.components().any(|c| c == std::path::Component::ParentDir)
        })
        .unwrap_or(default)
}

/// The first length-delimited field `field` of a protobuf message, as a string.
pub(crate) fn protobuf_string_field(mut buf: &[u8], field: u64) -> Option<String> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let (value, rest) = (buf.get(..len)?, buf.get(len..)?);
                if key >> 3 == field {
                    return String::from_utf8(value.to_vec()).ok();
                }
                buf = rest;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn options() {
        assert!(policy_from_options(&Any::default()).is_ok());
        assert!(policy_from_options(&any("containerd.runc.v1.Options", vec![])).is_ok());
        let e = policy_from_options(&any("example.com/evil.Options", vec![])).unwrap_err();
        assert!(
            e.to_string().contains("unknown runtime options type"),
            "{e}"
        );
        let mut v = vec![0x12, 9];
        v.extend_from_slice(b"/tmp/p.tl");
        let e = policy_from_options(&any("runtimeoptions.v1.Options", v)).unwrap_err();
        assert!(
            e.to_string()
                .contains("must live in /etc/containerd-shim-eci"),
            "{e}"
        );
    }
}
