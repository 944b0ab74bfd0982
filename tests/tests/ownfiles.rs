//! A container's own files stay its own: the writable layer stores container-relative IDs
//! (0..65535), whatever ID block the container runs with (issue 14).

use eci_tests::*;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

/// The upper dir of the overlayfs snapshot `key`, from `ctr snapshots mounts`.
fn upper_dir(key: &str) -> PathBuf {
    let r = ctr(&["snapshots", "mounts", "/mnt", key]);
    assert_eq!(r.code, 0, "ctr snapshots mounts {key}: {}", r.stderr);
    let dir = r
        .stdout
        .split([',', ' ', '\n'])
        .find_map(|w| w.strip_prefix("upperdir="))
        .unwrap_or_else(|| panic!("no upperdir in {}", r.stdout));
    PathBuf::from(dir)
}

fn first_host_id(id: &str) -> u32 {
    let r = exec(id, &name("map"), &["cat", "/proc/self/uid_map"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    parse_uid_map(&r.stdout).expect("uid_map").1
}

fn stop_task(id: &str) {
    let _ = ctr(&["task", "kill", "-s", "SIGKILL", id]);
    assert!(
        wait_until(Duration::from_secs(10), || task_status(id).as_deref()
            == Some("STOPPED")),
        "{id} did not stop"
    );
    let r = ctr(&["task", "delete", id]);
    assert_eq!(r.code, 0, "ctr task delete {id}: {}", r.stderr);
}

/// A process of the test's own in a new user namespace that maps `first`'s block, until dropped.
struct BlockHolder(std::process::Child);

impl Drop for BlockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hold_block(first: u32) -> BlockHolder {
    let child = std::process::Command::new("unshare")
        .args(["--user", "sleep", "600"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("unshare --user");
    let pid = child.id();
    let holder = BlockHolder(child);
    let own = std::fs::metadata("/proc/self/ns/user").unwrap().ino();
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::metadata(format!("/proc/{pid}/ns/user")).is_ok_and(|m| m.ino() != own)
    }));
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {first} 65536\n"))
        .expect("map the block");
    holder
}

#[test]
fn a_restarted_task_owns_its_files_under_another_block() {
    let (keep, other) = (name("own-keep"), name("own-other"));
    run_detached(&keep, &[], &["sleep", "600"]);
    let before = first_host_id(&keep);
    let w = exec(
        &keep,
        "w",
        &[
            "sh",
            "-c",
            "echo hi > /f && touch /b && chown 1000:1000 /b && echo more >> /home/user/file && mkdir /d && echo x > /d/x",
        ],
    );
    assert_eq!(w.code, 0, "{}", w.stderr);

    // The container keeps its block while it exists, unless something else maps it when the
    // next task starts (as when a full pool gave it away): a process in a user namespace of
    // the test's own holds it, so the next task gets another block.
    stop_task(&keep);
    let holder = hold_block(before);
    run_detached(&other, &[], &["sleep", "600"]);
    let r = ctr(&["task", "start", "-d", &keep]);
    assert_eq!(r.code, 0, "ctr task start {keep}: {}", r.stderr);
    let after = first_host_id(&keep);
    let seen = exec(
        &keep,
        "r",
        &[
            "sh",
            "-c",
            "stat -c '%u:%g %n' /f /b /home/user/file /d/x && echo again >> /f && echo again >> /b && chown 2000 /d/x && cat /f",
        ],
    );
    let upper = upper_dir(&keep);
    let owners: Vec<(String, (u32, u32))> = ["f", "b", "home/user/file", "d", "d/x", "."]
        .iter()
        .map(|f| {
            let m = std::fs::symlink_metadata(upper.join(f)).unwrap();
            (f.to_string(), (m.uid(), m.gid()))
        })
        .collect();
    remove(&other);
    remove(&keep);
    drop(holder);

    assert_ne!(
        before, after,
        "{keep} restarted with the block another namespace maps"
    );
    assert_eq!(
        seen.code, 0,
        "after the restart: {}{}",
        seen.stdout, seen.stderr
    );
    assert_eq!(
        seen.stdout,
        "0:0 /f\n1000:1000 /b\n1000:1000 /home/user/file\n0:0 /d/x\nhi\nagain\n"
    );
    assert_eq!(
        owners,
        vec![
            ("f".to_string(), (0, 0)),
            ("b".into(), (1000, 1000)),
            ("home/user/file".into(), (1000, 1000)),
            ("d".into(), (0, 0)),
            ("d/x".into(), (2000, 0)),
            (".".into(), (0, 0)),
        ],
        "the host sees the writable layer with the block's IDs"
    );
    assert!(leftovers_after(&keep, Duration::from_secs(5)).is_empty());
}
