//! The one reader of cgroup files, v1 or v2: a container's cgroup (its memory and CPU views,
//! OOM counters, metrics' probe), the flat-keyed files' parser, and /proc/PID/cgroup's lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the host's cgroup hierarchies are mounted: the v2 hierarchy itself on a unified host;
/// one directory per v1 hierarchy (and `unified` for v2) on a hybrid or legacy host.
pub const ROOT: &str = "/sys/fs/cgroup";

/// Whether the memory controller is on cgroup v1 (legacy and hybrid hosts, which containerd
/// 1.6 drives as v1), so statistics take v1's shape.
pub fn memory_on_v1() -> bool {
    Path::new(ROOT).join("memory").exists()
}

/// One cgroup, the same relative path in every hierarchy (an OCI `cgroupsPath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The path, relative to each hierarchy's root.
    path: PathBuf,
    root: PathBuf,
}

impl Cgroup {
    /// The cgroup at `cgroups_path` (a spec's `linux.cgroupsPath`, e.g. `/default/c1`) under
    /// [`ROOT`].
    pub fn new(cgroups_path: &Path) -> Self {
        Self::under(Path::new(ROOT), cgroups_path)
    }

    /// The cgroup at `cgroups_path` with the hierarchies mounted under `root`.
    pub fn under(root: &Path, cgroups_path: &Path) -> Self {
        Cgroup {
            path: cgroups_path
                .strip_prefix("/")
                .unwrap_or(cgroups_path)
                .to_path_buf(),
            root: root.to_path_buf(),
        }
    }

    /// The cgroup's path relative to each hierarchy's root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the hierarchies are mounted.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cgroup's directory in the v1 hierarchy of `controller` (it may not exist).
    pub fn v1_dir(&self, controller: &str) -> PathBuf {
        self.root.join(controller).join(&self.path)
    }

    /// The cgroup's possible directories in the v2 hierarchy: at the root (unified host),
    /// then under `unified` (hybrid host).
    pub fn v2_dirs(&self) -> [PathBuf; 2] {
        [
            self.root.join(&self.path),
            self.root.join("unified").join(&self.path),
        ]
    }

    /// The cgroup's v1 file `file` of `controller`, trimmed; `None` if unreadable.
    pub fn v1(&self, controller: &str, file: &str) -> Option<String> {
        read_trimmed(&self.v1_dir(controller).join(file))
    }

    /// The cgroup's v2 file `file`, trimmed; `None` if unreadable.
    pub fn v2(&self, file: &str) -> Option<String> {
        self.v2_dirs()
            .iter()
            .find_map(|dir| read_trimmed(&dir.join(file)))
    }

    /// The memory controller's OOM counters: memory.oom_control on v1 (`oom_kill_disable`,
    /// `under_oom`, `oom_kill`), memory.events on v2 (`low` … `oom_kill`, `oom_group_kill`).
    /// `None` if neither can be read (no memory controller, the cgroup is gone).
    pub fn memory_events(&self) -> Option<HashMap<String, u64>> {
        let text = self
            .v1("memory", "memory.oom_control")
            .or_else(|| self.v2("memory.events"))?;
        Some(flat_keyed(&text))
    }

    /// How many times the kernel's OOM killer has killed in the cgroup (0 if unknown).
    pub fn oom_kills(&self) -> u64 {
        self.memory_events()
            .and_then(|events| events.get("oom_kill").copied())
            .unwrap_or(0)
    }

    /// The processes in the cgroup (the pids hierarchy's on v1).
    pub fn procs(&self) -> usize {
        self.v1("pids", "cgroup.procs")
            .or_else(|| self.v2("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A flat-keyed cgroup file (`key value` lines: memory.events, memory.oom_control,
/// memory.stat …); lines that are not a key and a number are skipped.
pub fn flat_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The value of `key` in a flat-keyed text, 0 if it is absent or not a number.
pub fn field(text: Option<&str>, key: &str) -> u64 {
    text.into_iter()
        .flat_map(str::lines)
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// One line of /proc/PID/cgroup: a process's cgroup in one hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership<'a> {
    /// The v1 hierarchy's controllers (`cpu,cpuacct`, `name=systemd`); empty for v2.
    pub controllers: &'a str,
    /// The cgroup, from the hierarchy's root (as the reader's cgroup namespace shows it).
    pub path: &'a str,
}

impl Membership<'_> {
    /// Whether this is the v1 hierarchy holding `controller`.
    pub fn has_controller(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// The lines of a /proc/PID/cgroup text (`ID:controllers:path`); malformed ones are skipped.
pub fn memberships(proc_cgroup: &str) -> impl Iterator<Item = Membership<'_>> {
    proc_cgroup.lines().filter_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        Some(Membership { controllers, path })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counters_are_read_from_both_hierarchies_files() {
        let v1 = flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
        assert_eq!(v1.get("oom_kill"), Some(&3));
        assert_eq!(v1.get("under_oom"), Some(&0));
        let v2 = flat_keyed("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n");
        assert_eq!((v2["max"], v2["oom"], v2["oom_kill"]), (7, 2, 1));
        assert_eq!(v2.len(), 6);
        assert!(flat_keyed("garbage\nkey notanumber\n").is_empty());
        assert_eq!(field(Some("cache 5\ntotal_cache 7\n"), "total_cache"), 7);
        assert_eq!(field(Some("cache 5\n"), "cach"), 0);
        assert_eq!(field(None, "cache"), 0);
    }

    #[test]
    fn paths_in_each_hierarchy() {
        let c = Cgroup::under(Path::new("/cg"), Path::new("/default/c1"));
        assert_eq!(c.path(), Path::new("default/c1"));
        assert_eq!(c.v1_dir("memory"), PathBuf::from("/cg/memory/default/c1"));
        assert_eq!(
            c.v2_dirs(),
            [
                PathBuf::from("/cg/default/c1"),
                PathBuf::from("/cg/unified/default/c1")
            ]
        );
        assert_eq!(Cgroup::new(Path::new("a/b")).root(), Path::new(ROOT));
    }

    #[test]
    fn files_are_read_v1_first_then_v2() {
        let root = std::env::temp_dir().join(format!("eci-sys-cgroup-{}", std::process::id()));
        let v2 = root.join("unified/c1");
        std::fs::create_dir_all(&v2).expect("mkdir");
        std::fs::write(v2.join("memory.events"), "oom 2\noom_kill 4\n").expect("write");
        std::fs::write(v2.join("cgroup.procs"), "1\n2\n").expect("write");
        let c = Cgroup::under(&root, Path::new("/c1"));
        assert_eq!(c.oom_kills(), 4);
        assert_eq!(c.procs(), 2);
        assert_eq!(c.v2("memory.events").as_deref(), Some("oom 2\noom_kill 4"));
        let v1 = root.join("memory/c1");
        std::fs::create_dir_all(&v1).expect("mkdir");
        std::fs::write(v1.join("memory.oom_control"), "oom_kill 9\n").expect("write");
        assert_eq!(c.oom_kills(), 9);
        assert_eq!(
            Cgroup::under(&root, Path::new("gone")).memory_events(),
            None
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn proc_cgroup_lines() {
        let text = "12:cpu,cpuacct:/default/c1\n1:name=systemd:/x\n0::/a:b\nbad\n";
        let all: Vec<_> = memberships(text).collect();
        assert_eq!(all.len(), 3);
        assert!(all[0].has_controller("cpuacct") && !all[0].has_controller("cpu,"));
        assert_eq!(all[0].path, "/default/c1");
        assert_eq!(
            all[2],
            Membership {
                controllers: "",
                path: "/a:b"
            }
        );
    }
}
