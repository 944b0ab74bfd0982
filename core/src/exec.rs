//! Starting an additional process in a running container (containerd's Exec), run in the
//! single-threaded helper because it forks.
//!
//! libcontainer 0.7's tenant builder does not join the container's *user* namespace: an
//! exec'd process would be real host root inside the container's other namespaces. So exec
//! is done here: join the cgroup, join the user namespace first and then the others, fork
//! into the pid namespace, set IDs, capabilities, limits and seccomp, and execve.

use crate::create::{error_chain, Stdio};
use crate::error::ExecError;
use crate::layout::Layout;
use eci_sys::channel::Channel;
use eci_sys::pidfd::PidFd;
use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::{Process, Spec};
use nix::sched::{setns, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Gid, Uid};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
/// What the shim asks the helper to start in a running container.
pub struct ExecRequest {
    /// containerd namespace.
    pub namespace: String,
    /// Container id.
    pub id: String,
    /// The OCI process (process.json) to run.
    pub process: PathBuf,
    /// The process's stdio.
    pub stdio: Stdio,
    /// The shim's state directory (see [`Layout`]).
    pub base: PathBuf,
    /// Where the shim's supervisor takes the exec'd process's seccomp notify fd.
    #[serde(default)]
    pub seccomp_listener: Option<PathBuf>,
}

/// Namespaces in the order they are joined: user first, so that joining the others is
/// authorised by the capabilities the process then holds in the container's user namespace.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
];

fn other(what: impl std::fmt::Display) -> ExecError {
    ExecError::Refused(what.to_string())
}

/// A failure of the host's, not of the process asked for.
fn internal(what: impl std::fmt::Display) -> ExecError {
    ExecError::Internal(what.to_string())
}

/// What the helper and the children it forks for an exec tell each other, on channels made
/// before the forks (each child holds its end, close-on-exec, until it execs or exits).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Step {
    /// To the first child: it is in the container's cgroup, it may join the namespaces.
    Joined,
    /// To the process: its pid is announced, it may go on (before, it would leave the
    /// helper's process group unknown to the shim).
    Announced,
    /// To the helper, from the first child: the process was forked with this pid.
    Started { pid: i32 },
    /// To the helper, from either child: what failed (the process's execve included).
    Failed { message: String },
}

enum ExecStdio {
    Plain {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Console(UnixStream),
}

/// Start the process `req` names in the container (in the single-threaded helper): join
/// its cgroup and namespaces, user namespace first, and exec. Returns its pid.
///
/// `announce` is called in the helper's first child with the new process's pid as soon as it
/// is forked, before the process may do anything (a terminal's `setsid` takes it out of the
/// helper's process group, where the shim would otherwise find it): whoever started the
/// helper then knows what to kill if the helper dies before it answers.
pub fn exec(req: &ExecRequest, announce: &dyn Fn(i32)) -> Result<i32, ExecError> {
    let layout = Layout::new(&req.base);
    let container = Container::load(layout.container_state(&req.namespace, &req.id))
        .map_err(|e| other(error_chain(&e)))?;
    let init = container
        .pid()
        .ok_or_else(|| other(format!("container {} has no running init", req.id)))?;
    let text = fs::read(&req.process)
        .map_err(|e| other(format!("read exec process {}: {e}", req.process.display())))?;
    let process: Process = serde_json::from_slice(&text)
        .map_err(|e| other(format!("exec process spec is invalid: {e}")))?;
    let spec = Spec::load(
        layout
            .private_bundle(&req.namespace, &req.id)
            .join("config.json"),
    )
    .map_err(|e| other(e.to_string()))?;
    let cgroup_path = container
        .spec()
        .map_err(|e| other(error_chain(&e)))?
        .cgroup_path;
    let cgroup = create_cgroup_manager(CgroupConfig {
        cgroup_path: cgroup_path.clone(),
        systemd_cgroup: false,
        container_name: req.id.clone(),
    })
    .map_err(|e| other(error_chain(&e)))?;

    // Namespaces the container shares with the host (the time namespace of a container that
    // joined another's) are not joined: we are in them already, and setns would be refused.
    let same_as_ours = |name: &str, f: &File| {
        let ours =
            nix::sys::stat::stat(format!("/proc/self/ns/{name}").as_str()).map(|st| st.st_ino);
        nix::sys::stat::fstat(f.as_raw_fd())
            .map(|st| st.st_ino)
            .ok()
            == ours.ok()
    };
    // The init's pid names the init only while the init is not reaped: held from before its
    // namespaces are opened until after, and then checked alive and in the container's cgroup,
    // no other process that got the pid meanwhile (another container's) is joined.
    let init_fd = PidFd::open(init.as_raw()).map_err(|e| {
        other(format!(
            "container {} is gone (its init {init}: {})",
            req.id,
            std::io::Error::from(e)
        ))
    })?;
    let mut namespaces: Vec<(File, CloneFlags)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let f = File::open(format!("/proc/{init}/ns/{name}")).map_err(|e| {
            other(format!(
                "container {} is gone ({name} namespace: {e})",
                req.id
            ))
        })?;
        if *flag == CloneFlags::CLONE_NEWUSER || !same_as_ours(name, &f) {
            namespaces.push((f, *flag));
        }
    }
    let in_container = fs::read_to_string(format!("/proc/{init}/cgroup"))
        .is_ok_and(|text| in_cgroup(&text, &cgroup_path));
    if !in_container || !init_fd.is_alive() {
        return Err(other(format!(
            "container {} is gone (its init {init} exited, or its pid names another process \
             outside the container's cgroup {})",
            req.id,
            cgroup_path.display()
        )));
    }
    drop(init_fd);
    // A namespace the container's user namespace does not own (a CRI pod's network namespace,
    // which the host or, for a pod with hostUsers: false, containerd's own user namespace owns)
    // is joined before the user namespace, while the process still holds the host's
    // capabilities.
    let container_user_ns = namespaces
        .iter()
        .find(|(_, flag)| *flag == CloneFlags::CLONE_NEWUSER)
        .and_then(|(f, _)| nix::sys::stat::fstat(f.as_raw_fd()).ok())
        .map(|st| st.st_ino);
    let host_owned = |(f, flag): &(File, CloneFlags)| {
        *flag != CloneFlags::CLONE_NEWUSER
            && crate::create::owner_inode(f).is_ok_and(|o| Some(o) != container_user_ns)
    };
    namespaces.sort_by_key(|ns| !host_owned(ns));
    let stdio = match &req.stdio.console_socket {
        Some(path) => ExecStdio::Console(
            UnixStream::connect(path).map_err(|e| other(format!("console socket: {e}")))?,
        ),
        None => ExecStdio::Plain {
            stdin: open_stdio(req.stdio.stdin.as_deref(), false)?,
            stdout: open_stdio(req.stdio.stdout.as_deref(), true)?,
            stderr: open_stdio(req.stdio.stderr.as_deref(), true)?,
        },
    };
    let program = resolve_program(&process)?;
    // Connected here, in the host's mount namespace; the process hands its notify fd over it.
    let supervisor = match &req.seccomp_listener {
        Some(path) => {
            Some(UnixStream::connect(path).map_err(|e| other(format!("seccomp supervisor: {e}")))?)
        }
        None => None,
    };

    // The helper's end and its children's: `Joined` goes one way, the children's reports the
    // other, and the helper reads reports until every child's end is closed (the process's
    // at its execve).
    let (helper_end, children_end) = Channel::pair().map_err(internal)?;
    // SAFETY: the helper is single-threaded, so the child may run ordinary Rust code.
    match unsafe { fork() }.map_err(internal)? {
        ForkResult::Child => {
            drop(helper_end);
            let target = Target {
                spec: &spec,
                process: &process,
                program: &program,
                stdio,
                supervisor,
            };
            let (step, code) = match join_and_spawn(&namespaces, target, &children_end, announce) {
                Ok(pid) => (Step::Started { pid }, 0),
                Err(message) => (Step::Failed { message }, 1),
            };
            let _ = children_end.send(&step, &[]);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(children_end);
            let joined = cgroup.add_task(child);
            // And where the create helper put the init in the hierarchies libcontainer leaves
            // alone (cgroup2 and name=systemd on a hybrid host).
            let placed = joined.as_ref().map_or(Ok(()), |_| {
                crate::delegate::place_exec(child.as_raw(), &cgroup_path, init.as_raw())
            });
            if joined.is_ok() && placed.is_ok() {
                let _ = helper_end.send(&Step::Joined, &[]);
            } else {
                // The first child reads this as "not joined" and fails.
                let _ = nix::sys::socket::shutdown(
                    helper_end.as_raw_fd(),
                    nix::sys::socket::Shutdown::Write,
                );
            }
            let reports = read_reports(&helper_end);
            let status = waitpid(child, None);
            joined.map_err(|e| internal(format!("join container cgroup: {}", error_chain(&e))))?;
            placed.map_err(|e| internal(format!("join container cgroup: {e}")))?;
            outcome(&reports)
                .map_err(|e| other(format!("{e} (reports {reports:?}, first child {status:?})")))
        }
    }
}

/// Whether a /proc/PID/cgroup text places the process in `cgroup_path` or beneath it (a
/// delegated container moves its init into cgroups of its own), in some hierarchy.
fn in_cgroup(proc_cgroup: &str, cgroup_path: &Path) -> bool {
    let wanted = Path::new("/").join(cgroup_path);
    eci_sys::cgroup::memberships(proc_cgroup).any(|m| Path::new(m.path).starts_with(&wanted))
}

/// Every report until both children's ends are closed: the first child's `Started`, then
/// (only if execve failed) the process's `Failed`. Each is one message, so two writers never
/// interleave.
fn read_reports(helper_end: &Channel) -> Vec<Step> {
    let mut reports = Vec::new();
    loop {
        match helper_end.recv::<Step>() {
            Ok((step, _)) => reports.push(step),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return reports,
            Err(e) => {
                reports.push(Step::Failed {
                    message: format!("exec: unreadable report: {e}"),
                });
                return reports;
            }
        }
    }
}

/// The new pid, unless a child failed.
fn outcome(reports: &[Step]) -> Result<i32, ExecError> {
    if let Some(message) = reports.iter().find_map(|r| match r {
        Step::Failed { message } => Some(message),
        _ => None,
    }) {
        return Err(other(message));
    }
    reports
        .iter()
        .find_map(|r| match r {
            Step::Started { pid } => Some(*pid),
            _ => None,
        })
        .ok_or_else(|| other("exec: the process did not start"))
}

fn open_stdio(path: Option<&Path>, write: bool) -> Result<OwnedFd, ExecError> {
    crate::create::open_stdio(path, write).map_err(|e| other(format!("open {path:?}: {e}")))
}

/// Find the program the way execvp would, but with the process's own PATH.
fn resolve_program(process: &Process) -> Result<(CString, Vec<CString>, Vec<CString>), ExecError> {
    let args = process.args().clone().unwrap_or_default();
    let first = args
        .first()
        .ok_or_else(|| other("exec: the process has no args"))?
        .clone();
    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let cstr =
        |s: &str| CString::new(s).map_err(|_| other(format!("exec: {s:?} contains a NUL byte")));
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let candidates: Vec<String> = if first.contains('/') {
        vec![first.clone()]
    } else {
        path.split(':')
            .map(|dir| format!("{dir}/{first}"))
            .collect()
    };
    Ok((
        cstr(&candidates.join(":"))?,
        args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
        env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?,
    ))
}

/// In the first child: wait until the parent put us in the cgroup, join the namespaces, and
/// fork the process itself into the container's pid namespace.
/// What the exec'd process becomes.
struct Target<'a> {
    spec: &'a Spec,
    process: &'a Process,
    program: &'a (CString, Vec<CString>, Vec<CString>),
    stdio: ExecStdio,
    supervisor: Option<UnixStream>,
}

fn join_and_spawn(
    namespaces: &[(File, CloneFlags)],
    target: Target,
    helper: &Channel,
    announce: &dyn Fn(i32),
) -> Result<i32, String> {
    // Never dumpable while host credentials are held: a dumpable process can be ptraced, and
    // its /proc/<pid>/fd read, by anyone with its uid or CAP_SYS_PTRACE over its memory.
    // SAFETY: prctl(PR_SET_DUMPABLE) has no pointer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "exec: cannot make the process undumpable: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !matches!(helper.recv::<Step>(), Ok((Step::Joined, _))) {
        return Err("exec: could not join the container's cgroup".into());
    }
    for (ns, flag) in namespaces {
        setns(ns.as_fd(), *flag).map_err(|e| format!("join {flag:?}: {e}"))?;
        if *flag == CloneFlags::CLONE_NEWUSER {
            become_container_root()?;
        }
    }
    // The process waits for `announced` before it does anything: until its pid is known to
    // the shim, it must stay in the helper's process group (which the shim kills if the
    // helper dies), and it ends (EOF) if this process dies first.
    let (first, process) = Channel::pair().map_err(|e| e.to_string())?;
    // SAFETY: still single-threaded after the first fork.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Parent { child } => {
            drop(process);
            announce(child.as_raw());
            let _ = first.send(&Step::Announced, &[]);
            Ok(child.as_raw())
        }
        ForkResult::Child => {
            drop(first);
            if !matches!(process.recv::<Step>(), Ok((Step::Announced, _))) {
                // SAFETY: leaving the forked child; its creator died before announcing it.
                unsafe { libc::_exit(127) }
            }
            drop(process);
            let message = become_process(target);
            let _ = helper.send(&Step::Failed { message }, &[]);
            // SAFETY: leaving the forked child after a failed exec.
            unsafe { libc::_exit(127) }
        }
    }
}

/// Right after joining the container's user namespace, and before the pid namespace makes
/// us visible in the container: the container's root (its block's first host ID) instead of
/// host root, with no host supplementary groups. Capabilities in the container's user
/// namespace stay (the kernel keeps them when the euid becomes that namespace's root), so the
/// remaining namespaces can still be joined. Nothing the container can see ever runs with
/// host credentials; runc's nsexec does the same before it enters the pid namespace.
fn become_container_root() -> Result<(), String> {
    nix::unistd::setgroups(&[]).map_err(|e| format!("exec: drop host groups: {e}"))?;
    let gid = Gid::from_raw(0);
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| format!("exec: become the container's root group: {e}"))?;
    let uid = Uid::from_raw(0);
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| format!("exec: become the container's root: {e}"))?;
    // A change of credentials resets dumpability to the host's suid_dumpable; make sure.
    // SAFETY: prctl(PR_SET_DUMPABLE) has no pointer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    Ok(())
}

/// In the container: set up stdio, IDs, capabilities, limits and seccomp, then execve.
/// Returns only on failure.
fn become_process(target: Target) -> String {
    let Target {
        spec,
        process,
        program,
        stdio,
        supervisor,
    } = target;
    let result = (|| -> Result<(), String> {
        match stdio {
            ExecStdio::Plain {
                stdin,
                stdout,
                stderr,
            } => {
                for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
                    nix::unistd::dup2(fd.as_raw_fd(), target).map_err(|e| format!("stdio: {e}"))?;
                }
            }
            ExecStdio::Console(socket) => setup_terminal(&socket, process)?,
        }
        for rlimit in process.rlimits().iter().flatten() {
            let lim = libc::rlimit {
                rlim_cur: rlimit.soft(),
                rlim_max: rlimit.hard(),
            };
            // SAFETY: setrlimit with a valid resource number and struct.
            if unsafe { libc::setrlimit(rlimit.typ() as libc::__rlimit_resource_t, &lim) } != 0 {
                return Err(format!(
                    "setrlimit {:?}: {}",
                    rlimit.typ(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        let user = process.user();
        let no_new_privs = process.no_new_privileges().unwrap_or(false);
        // A filter needs no_new_privs or CAP_SYS_ADMIN: without no_new_privs it is loaded
        // while the capabilities are still there, as runc does.
        let mut supervisor = supervisor;
        let mut load_seccomp = || -> Result<(), String> {
            let supervisor = supervisor.take();
            // As the init has it (see create): mount syscalls no profile can name.
            crate::unseen::refuse_unsupervised_mount_syscalls()
                .map_err(|e| format!("seccomp: {e}"))?;
            if let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
                let notify = libcontainer::seccomp::initialize_seccomp(seccomp)
                    .map_err(|e| format!("seccomp: {e}"))?;
                if let Some(fd) = notify {
                    // SAFETY: initialize_seccomp returned a fresh notify fd that nothing else
                    // owns; owned here, it is closed when this block ends.
                    let notify = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    // The listener fd goes to the supervisor and is closed here: a process that
                    // kept it could answer its own trapped syscalls.
                    let sent = supervisor
                        .as_ref()
                        .map(|s| eci_sys::fdpass::send(s.as_fd(), b"seccomp", &[notify.as_fd()]));
                    drop(notify);
                    if !matches!(sent, Some(Ok(_))) {
                        return Err("seccomp: cannot hand the notify fd to the supervisor".into());
                    }
                }
            }
            drop(supervisor);
            Ok(())
        };
        if !no_new_privs {
            load_seccomp()?;
        }
        // SAFETY: prctl(PR_SET_KEEPCAPS) has no pointer arguments.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
        let groups: Vec<Gid> = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setresgid(
            Gid::from_raw(user.gid()),
            Gid::from_raw(user.gid()),
            Gid::from_raw(user.gid()),
        )
        .map_err(|e| format!("setgid {}: {e}", user.gid()))?;
        nix::unistd::setresuid(
            Uid::from_raw(user.uid()),
            Uid::from_raw(user.uid()),
            Uid::from_raw(user.uid()),
        )
        .map_err(|e| format!("setuid {}: {e}", user.uid()))?;
        if let Some(caps) = process.capabilities() {
            let syscall = libcontainer::syscall::syscall::create_syscall();
            // Changing to a uid other than 0 cleared the effective set (KEEPCAPS keeps only the
            // permitted one), and shrinking the bounding set takes CAP_SETPCAP in it: raise it
            // again from what is permitted, as libcontainer's own init does.
            libcontainer::capabilities::reset_effective(&*syscall)
                .map_err(|e| format!("capabilities: {e}"))?;
            libcontainer::capabilities::drop_privileges(caps, &*syscall)
                .map_err(|e| format!("capabilities: {e}"))?;
        }
        if process.no_new_privileges().unwrap_or(false) {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) has no pointer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        }
        std::env::set_current_dir(process.cwd())
            .map_err(|e| format!("chdir {}: {e}", process.cwd().display()))?;
        if no_new_privs {
            load_seccomp()?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        return e;
    }
    // Exactly the fds it was given (0-2), and default signal handling, as under runc.
    if let Err(e) = crate::hygiene::close_on_exec_from(3) {
        return format!("exec: close inherited fds: {e}");
    }
    crate::hygiene::reset_signals();
    let (candidates, args, env) = program;
    let mut last = nix::errno::Errno::ENOENT;
    for candidate in candidates.to_bytes().split(|b| *b == b':') {
        let Ok(path) = CString::new(candidate) else {
            continue;
        };
        let Err(e) = nix::unistd::execve(&path, args, env);
        if e != nix::errno::Errno::ENOENT {
            last = e;
        }
    }
    format!(
        "exec {:?}: {last} (is it installed in the image?)",
        args.first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// A pty from the container's own devpts, its master sent to the shim over the console socket.
fn setup_terminal(socket: &UnixStream, process: &Process) -> Result<(), String> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
        .map_err(|e| format!("openpt: {e}"))?;
    grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let slave_path = ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    if let Some(size) = process.console_size() {
        // A size the terminal does not take leaves it at its default size.
        let _ = eci_sys::terminal::set_size(master.as_fd(), size.width(), size.height());
    }
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_path)
        .map_err(|e| format!("open {slave_path}: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY on the slave pty we just opened, no pointer argument.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(format!(
            "set controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(|e| format!("stdio: {e}"))?;
    }
    let master_fd: BorrowedFd<'_> = master.as_fd();
    eci_sys::fdpass::send(socket.as_fd(), b"exec", &[master_fd])
        .map_err(|e| format!("send pty master: {e}"))?;
    drop(master);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_is_in_its_container_cgroup_or_beneath() {
        let hybrid = "9:name=systemd:/default/c1\n4:memory:/default/c1\n0::/default/c1\n";
        assert!(in_cgroup(hybrid, Path::new("/default/c1")));
        assert!(in_cgroup(hybrid, Path::new("default/c1")));
        let moved = "0::/default/c1/init.scope\n";
        assert!(in_cgroup(moved, Path::new("/default/c1")));
        let other = "4:memory:/default/c10\n0::/default/c10\n";
        assert!(!in_cgroup(other, Path::new("/default/c1")));
        assert!(!in_cgroup(
            "1:cpu:/\n0::/system.slice\n",
            Path::new("/default/c1")
        ));
        assert!(!in_cgroup("", Path::new("/default/c1")));
    }
}
