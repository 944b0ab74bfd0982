//! Namespaced sysctls whose values name IDs: inside the container's user namespace only its own
//! block's IDs exist, so a range reaching past them is narrowed to the block instead of failing
//! the create. dockerd 20.10 asks every container for `net.ipv4.ping_group_range = 0 2147483647`
//! (unprivileged ping for all groups); the kernel refuses unmapped group IDs there.

use crate::idrange::BLOCK_SIZE;
use oci_spec::runtime::Spec;

const PING_GROUP_RANGE: &str = "net.ipv4.ping_group_range";

/// The highest group ID the container's user namespace maps.
const LAST_ID: u64 = BLOCK_SIZE as u64 - 1;

/// Keep only the sysctls a container's own namespaces hold.
pub fn harden(spec: &mut Spec) {
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let Some(mut sysctls) = linux.sysctl().clone() else {
        return;
    };
    let Some(value) = sysctls.get(PING_GROUP_RANGE) else {
        return;
    };
    if let Some(narrowed) = narrow_range(value) {
        sysctls.insert(PING_GROUP_RANGE.to_string(), narrowed);
        linux.set_sysctl(Some(sysctls));
        spec.set_linux(Some(linux));
    }
}

/// A group range of the container's IDs (`first last`, as the spec and the container see
/// it) in host IDs, for a writer outside the container's user namespace. Anything that is not
/// a range is passed on for the kernel to refuse.
pub fn to_host_range(value: &str, block: crate::IdBlock) -> String {
    let mut ends = value.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(first)), Some(Ok(last)), None) = (ends.next(), ends.next(), ends.next()) else {
        return value.to_string();
    };
    if first > last {
        return "1 0".to_string();
    }
    let base = u64::from(block.first);
    format!("{} {}", base + first.min(LAST_ID), base + last.min(LAST_ID))
}

/// `first last` with both ends inside the block, or None when it already is (or is not a
/// range at all: the kernel's own error then says so).
fn narrow_range(value: &str) -> Option<String> {
    let mut ends = value.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(first)), Some(Ok(last)), None) = (ends.next(), ends.next(), ends.next()) else {
        return None;
    };
    if first <= LAST_ID && last <= LAST_ID {
        return None;
    }
    // An empty range (first > last) is the kernel's "nobody may ping": keep it empty.
    Some(if first > LAST_ID || first > last {
        "1 0".to_string()
    } else {
        format!("{first} {}", last.min(LAST_ID))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ctr_spec;

    #[test]
    fn a_range_becomes_the_blocks_host_ids() {
        let block = crate::IdBlock { first: 165536 };
        assert_eq!(to_host_range("0 65535", block), "165536 231071");
        assert_eq!(to_host_range("0 2147483647", block), "165536 231071");
        assert_eq!(to_host_range("10 20", block), "165546 165556");
        assert_eq!(to_host_range("1 0", block), "1 0");
        assert_eq!(to_host_range("nonsense", block), "nonsense");
    }

    #[test]
    fn dockers_range_is_narrowed_to_the_block() {
        assert_eq!(narrow_range("0 2147483647").as_deref(), Some("0 65535"));
        assert_eq!(narrow_range("0\t2147483647").as_deref(), Some("0 65535"));
        assert_eq!(narrow_range("100 70000").as_deref(), Some("100 65535"));
        assert_eq!(narrow_range("70000 80000").as_deref(), Some("1 0"));
        assert_eq!(narrow_range("0 1000"), None, "inside the block already");
        assert_eq!(narrow_range("1 0"), None);
        assert_eq!(narrow_range("bogus"), None);
    }

    #[test]
    fn only_that_sysctl_changes() {
        let mut spec = ctr_spec();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_sysctl(Some(
            [
                (PING_GROUP_RANGE.to_string(), "0 2147483647".to_string()),
                ("net.core.somaxconn".to_string(), "1024".to_string()),
            ]
            .into_iter()
            .collect(),
        ));
        spec.set_linux(Some(linux));
        harden(&mut spec);
        let sysctls = spec.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert_eq!(sysctls[PING_GROUP_RANGE], "0 65535");
        assert_eq!(sysctls["net.core.somaxconn"], "1024");
    }
}
