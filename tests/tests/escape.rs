//! Ways out through the create path, tried as an attacker would (issue 11, items 3, 4 and 10):
//! binds of what the shim and its containerd keep, other names of restricted sockets and files
//! inside a bound directory, lease files that lie, and the host's cgroup tree. Each is tested
//! by detection: the refusal and its wording, or what the container saw, never by using it.

use eci_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn bind(src: &Path) -> String {
    format!("type=bind,src={},dst=/x,options=rbind:rw", src.display())
}

/// The create is refused, naming the rule and the seed's wording, and leaves nothing.
fn refused(id: &str, src: &Path, needle: &str) {
    let r = run(id, &["--mount", &bind(src)], &["true"]);
    let _ = ctr(&["container", "delete", id]);
    assert_ne!(r.code, 0, "{id}: a bind of {} ran", src.display());
    assert!(
        r.stderr.contains(needle) && r.stderr.contains("rule restricted-mount"),
        "{id}: {}",
        r.stderr
    );
    assert!(leftovers(id).is_empty(), "{id}: {:?}", leftovers(id));
}

fn restricted_wording(src: &Path) -> String {
    format!(
        "can't mount {} because it's configured as a restricted host mount",
        src.display()
    )
}

/// containerd's root and state of the test environment: not the default paths.
fn containerd_dirs() -> (PathBuf, PathBuf) {
    let root = Path::new(&env().address).parent().unwrap();
    (root.join("root"), root.join("state"))
}

#[test]
fn what_the_shim_and_its_containerd_keep_is_restricted() {
    let (root, state) = containerd_dirs();
    let ttrpc = PathBuf::from(format!("{}.ttrpc", env().address));
    let leases = Path::new(BASE).join("leases");
    for (label, src) in [
        ("leases", leases.clone()),
        ("shimstate", PathBuf::from(BASE)),
        ("ttrpc", ttrpc),
        ("ctrdroot", root.clone()),
        ("ctrdstate", state.join("io.containerd.runtime.v2.task")),
        (
            "snapshots",
            root.join("io.containerd.snapshotter.v1.overlayfs"),
        ),
    ] {
        assert!(src.exists(), "{} is missing", src.display());
        refused(&name(label), &src, &restricted_wording(&src));
    }
}

/// The host's kernel file systems are not the container's: a bind of the host's /proc or
/// /sys, or of a directory with one mounted beneath it, is refused.
#[test]
fn host_proc_and_sys_are_restricted() {
    refused(
        &name("hostproc"),
        Path::new("/proc"),
        "can't mount /proc because /proc is the host's proc file system",
    );
    refused(&name("hostsys"), Path::new("/sys/fs/cgroup"), "the host's");
}

/// Scratch directory for one test, removed (with anything mounted in it) when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let dir = std::env::temp_dir().join(name(label));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines() {
            if let Some(at) = line
                .split(' ')
                .nth(4)
                .filter(|m| m.starts_with(self.0.to_str().unwrap()))
            {
                let _ = std::process::Command::new("umount")
                    .args(["-l", at])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bind_mount(src: &Path, at: &Path) {
    let ok = std::process::Command::new("mount")
        .arg("--bind")
        .arg(src)
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "bind {} at {}", src.display(), at.display());
}

#[test]
fn a_hard_link_of_the_containerd_socket_in_a_bound_directory_is_refused() {
    let scratch = Scratch::new("socklink");
    let dir = scratch.0.join("d");
    std::fs::create_dir_all(dir.join("deeper")).unwrap();
    let link = dir.join("deeper/innocent");
    std::fs::hard_link(&env().address, &link).unwrap();
    refused(
        &name("socklink"),
        &dir,
        &format!(
            "because {} inside it is another name (a hard link) of {}, which is configured as a restricted host mount",
            link.display(),
            env().address
        ),
    );
    let r = run(&name("socklink"), &["--mount", &bind(&dir)], &["true"]);
    assert!(
        r.stderr
            .contains(&format!("remove the link {}", link.display())),
        "{}",
        r.stderr
    );
}

#[test]
fn a_hard_link_of_a_restricted_configuration_file_is_refused() {
    let scratch = Scratch::new("filelink");
    let config = Path::new("/etc/containerd-shim-eci").join(format!("{}.toml", name("linked")));
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "# a restricted file\n").unwrap();
    let link = scratch.0.join("copy.toml");
    std::fs::hard_link(&config, &link).unwrap();
    let id = name("filelink");
    let r = run(&id, &["--mount", &bind(&scratch.0)], &["true"]);
    let _ = std::fs::remove_file(&config);
    let _ = ctr(&["container", "delete", &id]);
    assert_ne!(
        r.code,
        0,
        "a directory holding a link of {} was bound",
        config.display()
    );
    assert!(
        r.stderr.contains(&format!(
            "{} inside it is another name (a hard link) of {}",
            link.display(),
            config.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn bind_mount_aliases_inside_or_of_a_bound_directory_are_refused() {
    let (_, state) = containerd_dirs();
    // A subdirectory of an alias of containerd's state.
    let scratch = Scratch::new("alias");
    let alias = scratch.0.join("alias");
    std::fs::create_dir_all(&alias).unwrap();
    bind_mount(&state, &alias);
    let sub = alias.join("io.containerd.runtime.v2.task");
    refused(&name("aliassub"), &sub, &restricted_wording(&sub));
    // A harmless directory with the shim's leases mounted beneath it.
    let outer = scratch.0.join("outer");
    std::fs::create_dir_all(outer.join("x")).unwrap();
    bind_mount(&Path::new(BASE).join("leases"), &outer.join("x"));
    refused(
        &name("aliasbeneath"),
        &outer,
        &format!(
            "because the mount at {} inside it shows {}",
            outer.join("x").display(),
            Path::new(BASE).display()
        ),
    );
}

/// Lease files are bookkeeping: a deleted lease, or one rewritten to name a dead shim and init,
/// must not hand a running container's block to the next one.
#[test]
fn a_lying_or_missing_lease_never_gives_two_containers_one_block() {
    let first = 3_000_000_000u32 + (std::process::id() % 1000) * 65536;
    let policy = Path::new("/etc/containerd-shim-eci").join(format!("{}.toml", name("pool")));
    std::fs::write(&policy, format!("[id_pool]\nfirst = {first}\nblocks = 3\n")).unwrap();
    let pool = ["--runtime-config-path", policy.to_str().unwrap()];
    let lease = Path::new(BASE).join("leases").join(first.to_string());
    let a = name("lease-a");
    run_detached(&a, &pool, &["sleep", "60"]);
    let a_map = exec(&a, "m", &["cat", "/proc/self/uid_map"]).stdout;
    let mut seen = Vec::new();
    for (label, tamper) in [
        ("gone", None),
        (
            "lies",
            Some(
                r#"{"namespace":"x","container":"x","holder":{"pid":1,"start_time":1},"init":null}"#,
            ),
        ),
    ] {
        let saved = std::fs::read(&lease).expect("a's lease");
        match tamper {
            None => std::fs::remove_file(&lease).unwrap(),
            Some(text) => std::fs::write(&lease, text).unwrap(),
        }
        let b = name(&format!("lease-{label}"));
        let r = run(&b, &pool, &["cat", "/proc/self/uid_map"]);
        // Put a's lease back as it was, whatever b got.
        std::fs::write(&lease, saved).unwrap();
        seen.push((label, r.code, r.stdout, r.stderr));
        assert!(leftovers_after(&b, Duration::from_secs(10)).is_empty());
    }
    remove(&a);
    let _ = std::fs::remove_file(&policy);
    assert_eq!(parse_uid_map(&a_map).map(|m| m.1), Some(first), "{a_map}");
    for (label, code, stdout, stderr) in seen {
        assert_eq!(code, 0, "{label}: {stderr}");
        let host = parse_uid_map(&stdout).map(|m| m.1);
        assert_ne!(
            host,
            Some(first),
            "{label}: b got a's block {first} while a ran"
        );
        assert!(host.is_some_and(|h| h > first), "{label}: {stdout}");
    }
}

/// On a hybrid host (v1 controllers and the v2 hierarchy at /sys/fs/cgroup/unified) a
/// privileged container that mounts cgroup2 or name=systemd sees its own cgroup as the root,
/// not the host's tree; and delete leaves nothing in those hierarchies.
#[test]
fn a_privileged_container_sees_only_its_own_cgroup_in_every_hierarchy() {
    let id = name("cgview");
    let hybrid = Path::new("/sys/fs/cgroup/unified").is_dir();
    let systemd = Path::new("/sys/fs/cgroup/systemd").is_dir();
    let script = "mkdir -p /mnt/u /mnt/s; \
        mount -t cgroup2 none /mnt/u && echo U-MOUNTED; \
        echo U-DIRS $(find /mnt/u -mindepth 1 -type d | wc -l); \
        mount -t cgroup -o none,name=systemd none /mnt/s && echo S-MOUNTED; \
        echo S-DIRS $(find /mnt/s -mindepth 1 -type d | wc -l); \
        grep -E '^(0::|[0-9]+:name=systemd:)' /proc/self/cgroup";
    let r = run(&id, &["--privileged"], &["sh", "-c", script]);
    let left = leftovers_after(&id, Duration::from_secs(10));
    let dirs_left: Vec<PathBuf> = ["unified", "systemd"]
        .iter()
        .map(|h| {
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join("default")
                .join(&id)
        })
        .filter(|d| d.exists())
        .collect();
    if !hybrid {
        return; // pure v2 or v1-only host: libcontainer's manager places the container itself
    }
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("U-MOUNTED"), "{} {}", r.stdout, r.stderr);
    // Its own cgroup has no children; the host's root has /default at least.
    assert!(
        r.stdout.contains("U-DIRS 0"),
        "cgroup2 shows the host's tree: {}",
        r.stdout
    );
    assert!(r.stdout.lines().any(|l| l == "0::/"), "{}", r.stdout);
    if systemd {
        assert!(r.stdout.contains("S-MOUNTED"), "{}", r.stdout);
        assert!(
            r.stdout.contains("S-DIRS 0"),
            "name=systemd shows the host's tree: {}",
            r.stdout
        );
        assert!(r.stdout.contains(":name=systemd:/\n"), "{}", r.stdout);
    }
    assert!(left.is_empty(), "{left:?}");
    assert!(dirs_left.is_empty(), "{dirs_left:?}");
}

/// Another container's files through `/proc/PID/root` (a path in the host's /proc that leads
/// into the other container's mount namespace): not a host path, refused.
#[test]
fn another_containers_root_through_proc_is_refused() {
    let a = name("victim");
    run_detached(&a, &[], &["sleep", "60"]);
    let pid = task_pid(&a).expect("victim pid");
    let src = PathBuf::from(format!("/proc/{pid}/root/home/user"));
    let b = name("thief");
    let r = run(
        &b,
        &[
            "--mount",
            &format!("type=bind,src={},dst=/x,options=rbind:ro", src.display()),
        ],
        &["cat", "/x/file"],
    );
    remove(&a);
    let _ = ctr(&["container", "delete", &b]);
    assert!(
        !r.stdout.contains("owned by 1000 in the image"),
        "read the victim's file: {}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&format!(
            "can't mount {} because it is not on a file system mounted on the host",
            src.display()
        )) && r.stderr.contains("rule restricted-mount"),
        "{}",
        r.stderr
    );
    assert!(leftovers(&b).is_empty(), "{:?}", leftovers(&b));
}

/// An exec'd process lands where the init is in every hierarchy, not only in libcontainer's
/// v1 controllers: on a hybrid host it was left in the shim's cgroup in the v2 and
/// name=systemd hierarchies, outside the container's cgroup namespace (`0::/../../..`).
#[test]
fn an_exec_is_in_the_containers_cgroup_in_every_hierarchy() {
    let id = name("execcg");
    run_detached(&id, &[], &["sleep", "60"]);
    let r = exec(
        &id,
        "cg",
        &[
            "sh",
            "-c",
            "cat /proc/1/cgroup; echo ---; cat /proc/self/cgroup",
        ],
    );
    let init = task_pid(&id).expect("init pid");
    let host_init = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap_or_default();
    remove(&id);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let (of_init, of_exec) = r.stdout.split_once("---\n").expect("both cgroup files");
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(of_exec),
        sorted(of_init),
        "the exec's cgroups differ from the init's"
    );
    assert!(
        !of_exec.contains("/.."),
        "the exec is outside the container's cgroup namespace: {of_exec}"
    );
    // The init itself is in the container's cgroup everywhere (its namespace root).
    assert!(
        of_init.lines().all(|l| l.ends_with(":/")),
        "{of_init} (host view {host_init})"
    );
    let left = leftovers_after(&id, Duration::from_secs(10));
    assert!(left.is_empty(), "{left:?}");
}
