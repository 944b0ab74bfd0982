use crate::Refusal;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, Spec};

/// Host device nodes a container may be given, privileged or not. Everything else on the host
/// (disks, memory, other ttys, kvm…) stays outside. /dev/console and /dev/ptmx are not taken
/// from the host at all: the runtime makes them from the container's own pty and devpts.
pub const SAFE_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/fuse",
    "/dev/net/tun",
];

/// (type, major, minor) of the safe set, for the device cgroup; `None` minor is any.
const SAFE_RULES: &[(LinuxDeviceType, i64, Option<i64>)] = &[
    (LinuxDeviceType::C, 1, Some(3)),
    (LinuxDeviceType::C, 1, Some(5)),
    (LinuxDeviceType::C, 1, Some(7)),
    (LinuxDeviceType::C, 1, Some(8)),
    (LinuxDeviceType::C, 1, Some(9)),
    (LinuxDeviceType::C, 5, Some(0)),
    (LinuxDeviceType::C, 5, Some(1)),
    (LinuxDeviceType::C, 5, Some(2)),
    (LinuxDeviceType::C, 136, None),
    (LinuxDeviceType::C, 10, Some(229)),
    (LinuxDeviceType::C, 10, Some(200)),
];

/// Drop host devices beyond the safe set and replace any "allow all" device-cgroup rule
/// (what `--privileged` asks for) with deny-all plus the safe set.
pub(crate) fn harden(spec: &mut Spec) -> Result<(), Refusal> {
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(());
    };
    if let Some(devices) = linux.devices().clone() {
        let kept: Vec<_> = devices
            .into_iter()
            .filter(|d| SAFE_DEVICES.iter().any(|s| d.path().as_os_str() == *s))
            .collect();
        linux.set_devices(Some(kept));
    }
    if let Some(mut resources) = linux.resources().clone() {
        let rules = resources.devices().clone().unwrap_or_default();
        let allows_more_than_safe = rules.iter().any(|r| r.allow() && !is_safe_rule(r));
        if allows_more_than_safe {
            resources.set_devices(Some(safe_rules()));
            linux.set_resources(Some(resources));
        }
    }
    spec.set_linux(Some(linux));
    Ok(())
}

fn is_safe_rule(rule: &LinuxDeviceCgroup) -> bool {
    SAFE_RULES.iter().any(|(t, major, minor)| {
        rule.typ() == Some(*t)
            && rule.major() == Some(*major)
            && (rule.minor() == *minor || (minor.is_some() && rule.minor() == *minor))
    })
}

fn safe_rules() -> Vec<LinuxDeviceCgroup> {
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .expect("rule");
    std::iter::once(deny_all)
        .chain(SAFE_RULES.iter().map(|(t, major, minor)| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(*t)
                .major(*major)
                .access("rwm");
            if let Some(minor) = minor {
                b = b.minor(*minor);
            }
            b.build().expect("rule")
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ctr_spec;
    use oci_spec::runtime::LinuxDeviceBuilder;

    fn privileged() -> Spec {
        let mut spec = ctr_spec();
        let mut linux = spec.linux().clone().unwrap();
        let dev = |p: &str, t, major, minor| {
            LinuxDeviceBuilder::default()
                .path(p)
                .typ(t)
                .major(major)
                .minor(minor)
                .build()
                .unwrap()
        };
        linux.set_devices(Some(vec![
            dev("/dev/sda", LinuxDeviceType::B, 8, 0),
            dev("/dev/mem", LinuxDeviceType::C, 1, 1),
            dev("/dev/null", LinuxDeviceType::C, 1, 3),
            dev("/dev/fuse", LinuxDeviceType::C, 10, 229),
        ]));
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(vec![LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap()]));
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn privileged_keeps_only_safe_devices() {
        let mut spec = privileged();
        harden(&mut spec).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let paths: Vec<_> = linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        assert_eq!(paths, vec!["/dev/null", "/dev/fuse"]);
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(!rules[0].allow() && rules[0].typ().is_none());
        assert!(rules[1..].iter().all(is_safe_rule));
        assert!(!rules.iter().any(|r| r.allow() && r.major() == Some(8)));
    }

    #[test]
    fn default_rules_are_left_alone() {
        let mut spec = ctr_spec();
        let before = spec.clone();
        harden(&mut spec).unwrap();
        assert_eq!(
            spec.linux().as_ref().unwrap().resources(),
            before.linux().as_ref().unwrap().resources()
        );
    }
}
