//! A container keeps its ID block while it exists (issue 14, part 3): a deleted task parks the
//! block for its container, the container's next task takes it back, and the block is released
//! once the container is deleted — by the next allocation, which asks containerd (or, for a
//! Docker container, looks for its directory). A new container that reuses a deleted one's id
//! is another container and gets a lease of its own.

use eci_tests::*;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// These tests assert on what is parked between two allocations, and any allocation (another
/// test's container start) sweeps the leases of deleted containers: they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn host_block(id: &str, exec_id: &str) -> u32 {
    let r = exec(id, exec_id, &["cat", "/proc/self/uid_map"]);
    assert_eq!(r.code, 0, "{id}: {}", r.stderr);
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

/// The blocks of `id`'s leases once its shim has finished deleting the task.
fn parked(namespace: &str, id: &str) -> Vec<(u32, String)> {
    wait_until(Duration::from_secs(10), || {
        leases_of(namespace, id)
            .iter()
            .all(|(_, t)| t.contains("\"parked\":true") && t.contains("\"init\":null"))
    });
    leases_of(namespace, id)
}

#[test]
fn a_containers_next_task_gets_its_block_back_until_the_container_is_deleted() {
    let _serial = serial();
    let (keep, other, next) = (name("keep-own"), name("keep-other"), name("keep-next"));
    run_detached(&keep, &[], &["sleep", "600"]);
    let first = host_block(&keep, "m1");
    stop_task(&keep);
    // Parked for the container: no shim, no init, the container's anchor.
    let kept = parked("default", &keep);
    // Another container created meanwhile gets another block.
    run_detached(&other, &[], &["sleep", "600"]);
    let others = host_block(&other, "m");
    let r = ctr(&["task", "start", "-d", &keep]);
    assert_eq!(r.code, 0, "ctr task start {keep}: {}", r.stderr);
    let again = host_block(&keep, "m2");
    stop_task(&keep);
    let r = ctr(&["container", "delete", &keep]);
    assert_eq!(r.code, 0, "ctr container delete {keep}: {}", r.stderr);
    let after_rm = leases_of("default", &keep);
    // The next allocation releases the block of the deleted container.
    let r = run(&next, &[], &["true"]);
    let after_next = leases_of("default", &keep);
    remove(&other);

    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].0, first, "{kept:?}");
    assert!(
        kept[0].1.contains("\"parked\":true")
            && kept[0].1.contains("\"init\":null")
            && kept[0].1.contains("\"containerd\""),
        "{kept:?}"
    );
    assert_ne!(others, first, "another container got the parked block");
    assert_eq!(again, first, "the container's next task got another block");
    assert_eq!(
        after_rm.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        vec![first],
        "parked until the next allocation"
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(after_next.is_empty(), "{after_next:?}");
    for id in [&keep, &other, &next] {
        assert!(leftovers_after(id, Duration::from_secs(10)).is_empty());
    }
}

#[test]
fn a_new_container_with_a_deleted_ones_id_gets_a_lease_of_its_own() {
    let _serial = serial();
    let id = name("keep-reused");
    run_detached(&id, &[], &["sleep", "600"]);
    host_block(&id, "m1");
    stop_task(&id);
    let old = parked("default", &id);
    let r = ctr(&["container", "delete", &id]);
    assert_eq!(r.code, 0, "ctr container delete {id}: {}", r.stderr);
    // No allocation in between (no sweep): the old container's lease is still parked when the
    // new one is created under the same name.
    run_detached(&id, &[], &["sleep", "600"]);
    let block = host_block(&id, "m2");
    let new = leases_of("default", &id);
    remove(&id);

    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(new.len(), 1, "one lease for the new container: {new:?}");
    assert_eq!(new[0].0, block, "{new:?}");
    assert!(
        new[0].1.contains("\"holder\":{") && !new[0].1.contains("\"parked\""),
        "{new:?}"
    );
    let created = |t: &str| t.split("\"created\":").nth(1).map(str::to_string);
    assert!(created(&new[0].1).is_some(), "{new:?}");
    assert_ne!(
        created(&new[0].1),
        created(&old[0].1),
        "the new container took the old one's anchor"
    );
    assert!(leftovers_after(&id, Duration::from_secs(10)).is_empty());
}

fn docker_ok(args: &[&str]) -> String {
    let r = docker(args);
    assert_eq!(r.code, 0, "docker {args:?}: {}", r.stderr);
    r.stdout.trim().to_string()
}

fn docker_block(name: &str) -> u32 {
    parse_uid_map(&docker_ok(&["exec", name, "cat", "/proc/self/uid_map"]))
        .expect("uid_map")
        .1
}

#[test]
fn docker_restart_start_and_restart_policy_keep_the_block_and_rm_frees_it() {
    let _serial = serial();
    let e = docker_env();
    let (keep, other, policy) = (name("keep-d"), name("keep-d-other"), name("keep-d-policy"));
    docker_ok(&["run", "-d", "--name", &keep, &e.image, "sleep", "600"]);
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &keep]);
    let first = docker_block(&keep);
    docker_ok(&["restart", "-t", "0", &keep]);
    let restarted = docker_block(&keep);
    docker_ok(&["stop", "-t", "0", &keep]);
    let kept = parked("moby", &id);
    docker_ok(&["run", "-d", "--name", &other, &e.image, "sleep", "600"]);
    let others = docker_block(&other);
    docker_ok(&["start", &keep]);
    let started = docker_block(&keep);

    // A restart policy: each run appends its uid_map to a host file.
    let dir = std::env::temp_dir().join(name("keep-d-maps"));
    std::fs::create_dir_all(&dir).unwrap();
    let volume = format!("{}:/out", dir.display());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &policy,
        "--restart",
        "on-failure:3",
        "-v",
        &volume,
        &e.image,
        "sh",
        "-c",
        "cat /proc/self/uid_map >> /out/maps; exit 1",
    ]);
    let maps = || std::fs::read_to_string(dir.join("maps")).unwrap_or_default();
    wait_until(Duration::from_secs(30), || maps().lines().count() >= 3);
    let runs: Vec<u32> = maps()
        .lines()
        .filter_map(|l| parse_uid_map(l).map(|m| m.1))
        .collect();

    docker_ok(&["rm", "-f", &keep]);
    let after_rm = leases_of("moby", &id);
    // The next allocation releases it.
    let r = docker(&["run", "--rm", &e.image, "true"]);
    let after_next = leases_of("moby", &id);
    let policy_id = docker_ok(&["inspect", "-f", "{{.Id}}", &policy]);
    let other_id = docker_ok(&["inspect", "-f", "{{.Id}}", &other]);
    let _ = docker(&["rm", "-f", &other, &policy]);
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(restarted, first, "docker restart gave another block");
    assert_eq!(
        kept.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        vec![first],
        "{kept:?}"
    );
    assert!(kept[0].1.contains("\"directory\""), "{kept:?}");
    assert_ne!(others, first, "another container got the parked block");
    assert_eq!(started, first, "docker start gave another block");
    assert!(runs.len() >= 3, "restart policy runs: {runs:?}");
    assert!(runs.iter().all(|b| *b == runs[0]), "{runs:?}");
    assert_eq!(
        after_rm.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        vec![first],
        "parked until the next allocation"
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(after_next.is_empty(), "{after_next:?}");
    for id in [&id, &policy_id, &other_id] {
        let left = docker_leftovers_after(id, Duration::from_secs(10));
        assert!(left.is_empty(), "{left:?}");
    }
}
