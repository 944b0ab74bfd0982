//! Container creation, run in the create helper: a fresh, single-threaded process of the shim
//! binary, so libcontainer may fork and change process-wide state (cwd, environment) safely.
//! The helper judges the spec, leases an ID block, prepares ID-mapped file systems, builds the
//! container with libcontainer and exits; the container's init is the shim's child.

use crate::audit;
use crate::idmap::{attach, idmapped_clone, IdmapUserNs, LockedFlags};
use crate::layout::Layout;
use crate::lease::{LeaseDir, LeaseRecord, ProcessRef};
use crate::resolve::{
    bound_tree, file_id, is_device, is_dir, open_located, resolve_existing, Mounts,
};
use crate::rootfs::{mount_rootfs, unmount_all, RootfsMount};
use eci_policy::{harden, HostFacts, IdBlock, KubeletRange, Policy, Refusal, Rule};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{LinuxNamespaceType as Ns, Spec};
use libcontainer::syscall::syscall::SyscallType;
use nix::mount::{umount2, MntFlags};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// Where a process's stdio comes from: containerd's fifos, or a console socket for a terminal.
pub struct Stdio {
    /// stdin ([`STDIN_FROM_HELPER`]: the helper's own fd 0, fed by the shim).
    pub stdin: Option<PathBuf>,
    /// stdout (a fifo or file).
    pub stdout: Option<PathBuf>,
    /// stderr (a fifo or file).
    pub stderr: Option<PathBuf>,
    /// The socket the pty master is sent to, for a terminal.
    pub console_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
/// What the shim asks the create helper to make.
pub struct CreateRequest {
    /// containerd namespace.
    pub namespace: String,
    /// Container id.
    pub id: String,
    /// containerd's bundle (config.json, rootfs).
    pub bundle: PathBuf,
    /// The rootfs mounts containerd prepared.
    pub rootfs: Vec<RootfsMount>,
    /// The init's stdio.
    pub stdio: Stdio,
    /// The policy file to judge the spec by.
    pub policy_path: PathBuf,
    /// The containerd address the shim was started with: always a restricted mount.
    pub containerd_address: Option<PathBuf>,
    /// The shim's pid, recorded in the ID lease.
    pub shim_pid: i32,
    /// The shim's state directory (see [`Layout`]).
    pub base: PathBuf,
    /// Files the shim serves (its /proc and /sys emulation), bound over their targets after
    /// the spec's own mounts: (source on the host, target in the container, writable).
    #[serde(default)]
    pub emulated: Vec<(PathBuf, PathBuf, bool)>,
    /// Where the shim's supervisor waits for the container's seccomp notify fd.
    #[serde(default)]
    pub seccomp_listener: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
/// A container the helper made; its init waits for Start.
pub struct Created {
    /// The init's pid.
    pub pid: i32,
    /// The first host ID of the container's ID block.
    pub block: u32,
    /// Whether the container's seccomp profile hands syscalls to the shim's supervisor.
    pub supervised: bool,
}

#[derive(Debug, thiserror::Error)]
/// Why a container could not be created.
pub enum CreateError {
    #[error("{0}")]
    /// The policy refuses the spec.
    Refused(Refusal),
    /// The bundle's spec cannot be read.
    #[error("invalid config.json in bundle {bundle}: {message}")]
    BadSpec {
        /// The bundle.
        bundle: PathBuf,
        /// What is wrong with its config.json.
        message: String,
    },
    #[error("{0}")]
    /// No ID block could be leased.
    Lease(#[from] crate::lease::LeaseError),
    #[error("{0}")]
    /// The root file system could not be mounted.
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("cannot ID-map bind mount source {path}: {source} (ECI maps host directories into the container's ID range and never chowns them; use a directory on ext4, xfs, btrfs or tmpfs)")]
    /// A bind source cannot be ID-mapped.
    BindNotIdmappable {
        /// The bind source.
        path: PathBuf,
        /// The kernel's answer.
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    /// A file-system step failed.
    Io {
        /// The step.
        what: String,
        /// Its error.
        source: std::io::Error,
    },
    /// The spec asks for an oom_score_adj below the shim's own.
    #[error("oom_score_adj {requested} is lower than this shim may set: that needs CAP_SYS_RESOURCE, which containerd and its shims do not have here; ask for {current} or more (containerd's CRI: restrict_oom_score_adj = true), or run containerd with CAP_SYS_RESOURCE")]
    OomScoreAdj {
        /// What the spec asks for.
        requested: i32,
        /// The shim's own, the lowest it may set.
        current: i32,
    },
    #[error("libcontainer: {0}")]
    /// libcontainer failed to build the container.
    Libcontainer(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CreateError {
    let what = what.into();
    move |source| CreateError::Io { what, source }
}

/// Everything create put on the host, undone in reverse if a later step fails.
struct Undo<'a> {
    layout: &'a Layout,
    req: &'a CreateRequest,
    lease: Option<IdBlock>,
    rootfs: Option<PathBuf>,
    staged: Vec<PathBuf>,
    /// The container's cgroups in hierarchies libcontainer does not manage.
    cgroups: Vec<PathBuf>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for at in self.staged.iter().rev() {
            let _ = umount2(at, MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(self.layout.staging(&self.req.namespace, &self.req.id));
        if !self.armed {
            return;
        }
        let state = self
            .layout
            .container_state(&self.req.namespace, &self.req.id);
        if let Ok(mut c) = libcontainer::container::Container::load(state.clone()) {
            let _ = c.delete(true);
        }
        crate::delegate::remove_dirs(&self.cgroups);
        let _ = fs::remove_dir_all(state);
        let _ = fs::remove_dir_all(
            self.layout
                .private_bundle(&self.req.namespace, &self.req.id),
        );
        if let Some(rootfs) = &self.rootfs {
            unmount_all(rootfs);
            let _ = fs::remove_dir(rootfs);
        }
        if let Some(block) = self.lease {
            let _ = LeaseDir::new(self.layout.leases()).release(block);
        }
    }
}

/// Create the container `req` describes (in the single-threaded helper): judge its spec, lease
/// an ID block, mount its root file system and ID-mapped binds, and build it with libcontainer.
/// Its init waits for Start; everything made is undone if a step fails.
pub fn create(req: &CreateRequest) -> Result<Created, CreateError> {
    let layout = Layout::new(&req.base);
    let mut undo = Undo {
        layout: &layout,
        req,
        lease: None,
        rootfs: None,
        staged: Vec::new(),
        cgroups: Vec::new(),
        armed: true,
    };

    let spec = read_spec(&req.bundle)?;
    check_oom_score_adj(&spec)?;
    let policy = load_policy(&req.policy_path).map_err(|r| refuse(req, &Policy::default(), r))?;

    let leases = LeaseDir::new(layout.leases());
    let record = LeaseRecord {
        namespace: req.namespace.clone(),
        container: req.id.clone(),
        holder: ProcessRef::of(req.shim_pid),
        init: None,
        user_ns: None,
        anchor: None,
        parked: false,
    };
    let mut block = lease_block(req, &spec, &policy, &leases, &record)?;
    undo.lease = Some(block);

    let (facts, source_fds) = gather_facts(req, &spec, &policy);
    let image = facts.image.as_ref().map(|i| i.name.clone());
    let hardened = harden(&spec, &facts, &policy, block)
        .map_err(|r| refuse_with_image(req, &policy, r, image.as_deref()))?;
    if hardened.joins_user_namespace {
        // Sharing another container's namespaces means sharing its user namespace and IDs.
        leases.release(block)?;
        undo.lease = None;
        block = joined_block(&leases, &hardened.spec).ok_or_else(|| {
            refuse(
                req,
                &policy,
                Refusal::new(
                    Rule::HostNamespace,
                    "the namespace to join belongs to no ECI container",
                    "join the namespaces of a container started with the ECI runtime",
                ),
            )
        })?;
    }
    let mut spec = hardened.spec;
    if let Some(listener) = &req.seccomp_listener {
        eci_policy::seccomp::supervise(&mut spec, listener);
    }
    let supervised = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .is_some_and(|s| s.listener_path().is_some());

    let userns = IdmapUserNs::new(block).map_err(io("create user namespace for ID-mapping"))?;
    let rootfs = layout.rootfs(&req.namespace, &req.id);
    fs::create_dir_all(&rootfs).map_err(io(format!("create {}", rootfs.display())))?;
    undo.rootfs = Some(rootfs.clone());
    mount_container_root(req, &spec, &rootfs, &userns, block)?;

    let staging = layout.staging(&req.namespace, &req.id).join("binds");
    let pod_network = enter_host_owned_netns(&mut spec)?;
    if pod_network {
        set_network_sysctls(&mut spec, block)?;
    }
    let mut mounts = without_idmap_options(spec.mounts().clone().unwrap_or_default());
    if pod_network {
        let at = staging.join("sysfs");
        stage_sysfs(&mut mounts, &at)?;
        undo.staged.push(at);
    }
    let binds = IdmappedBinds {
        staging: &staging,
        userns: &userns,
        block,
    };
    binds.stage(
        &mut mounts,
        hardened.idmapped_binds,
        source_fds,
        &mut undo.staged,
    )?;
    mounts.extend(emulated_mounts(req)?);
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let destinations: Vec<(PathBuf, bool)> = mounts
            .iter()
            .map(|m| (m.destination().clone(), mount_point_is_dir(m)))
            .collect();
        crate::rootfs::seal_read_only(
            &rootfs,
            &crate::rootfs::mount_points_on_root(&destinations),
            block.first,
        )?;
    }
    spec.set_mounts(Some(mounts));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(rootfs);
    spec.set_root(Some(root));

    let container = build_container(req, &layout, &spec, &mut undo.cgroups)?;
    let pid = container
        .pid()
        .ok_or_else(|| CreateError::Libcontainer("container has no init pid".into()))?
        .as_raw();
    if may_manage_cgroups(&spec) {
        delegate_to_container_root(req, &container, block)?;
    }
    if !hardened.joins_user_namespace {
        let record = LeaseRecord {
            init: ProcessRef::of(pid),
            // As acquired: a pod's own block goes with the task, a pool block stays parked.
            anchor: leases.read(block).and_then(|r| r.anchor),
            user_ns: nix::sys::stat::stat(format!("/proc/{pid}/ns/user").as_str())
                .ok()
                .map(|st| st.st_ino),
            ..record
        };
        leases.update(block, &record)?;
    }
    undo.armed = false;
    Ok(Created {
        pid,
        block: block.first,
        supervised,
    })
}

/// The container's ID block: a pod's own user namespace (Kubernetes' hostUsers: false) is
/// honoured when its block is safe and refused otherwise; a container that asks for none gets
/// a block from the pool (its own parked block first).
fn lease_block(
    req: &CreateRequest,
    spec: &Spec,
    policy: &Policy,
    leases: &LeaseDir,
    record: &LeaseRecord,
) -> Result<IdBlock, CreateError> {
    let kubelet = kubelet_range().unwrap_or_else(|e| {
        log::warn!("{e}; judging pod user namespaces against the kubelet's default range");
        KubeletRange::default()
    });
    let requested = eci_policy::requested_block(spec, &kubelet, &policy.id_pool)
        .map_err(|r| refuse(req, policy, r))?;
    match requested {
        Some(block) => leases
            .acquire_exact(block, record)
            .map(|()| block)
            .map_err(Into::into),
        None => leases
            .acquire(
                &policy.id_pool,
                &LeaseRecord {
                    anchor: anchor(req, spec),
                    ..record.clone()
                },
                &crate::containerd::Containerd,
            )
            .map_err(|e| match e {
                // A refusal like the policy's: said to the user and written to the audit log.
                crate::lease::LeaseError::Exhausted(r) => refuse(req, policy, r),
                e => e.into(),
            }),
    }
}

/// containerd's rootfs mounts, or (with none) the bundle's own rootfs directory, ID-mapped
/// and mounted at `rootfs`, where container root can reach it.
fn mount_container_root(
    req: &CreateRequest,
    spec: &Spec,
    rootfs: &Path,
    userns: &IdmapUserNs,
    block: IdBlock,
) -> Result<(), CreateError> {
    if !req.rootfs.is_empty() {
        return Ok(mount_rootfs(&req.rootfs, rootfs, userns, block)?);
    }
    let source = rootfs_path(&req.bundle, spec);
    if !source.is_dir() {
        return Err(CreateError::Io {
            what: format!(
                "rootfs {} (no rootfs mounts were given and the bundle has none)",
                source.display()
            ),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let described = crate::rootfs::premounted_overlay(&source)?.unwrap_or(RootfsMount {
        typ: "bind".into(),
        source: source.display().to_string(),
        options: vec!["rbind".into()],
    });
    Ok(mount_rootfs(&[described], rootfs, userns, block)?)
}

/// The spec's mounts without containerd's `idmap`/`ridmap` requests (a pod with hostUsers:
/// false asks for ID-mapped volumes): the helper maps every bind source itself, with the
/// container's block.
fn without_idmap_options(
    mut mounts: Vec<libcontainer::oci_spec::runtime::Mount>,
) -> Vec<libcontainer::oci_spec::runtime::Mount> {
    for m in mounts.iter_mut() {
        m.set_uid_mappings(None).set_gid_mappings(None);
        if let Some(options) = m.options().clone() {
            m.set_options(Some(
                options
                    .into_iter()
                    .filter(|o| o != "idmap" && o != "ridmap")
                    .collect(),
            ));
        }
    }
    mounts
}

/// Where and how the bind sources the policy chose are ID-mapped: each is cloned from the fd
/// opened when it was judged, ID-mapped with the container's block and attached below
/// `staging`, and the mount's source becomes that staged copy.
struct IdmappedBinds<'a> {
    staging: &'a Path,
    userns: &'a IdmapUserNs,
    block: IdBlock,
}

impl IdmappedBinds<'_> {
    fn stage(
        &self,
        mounts: &mut [libcontainer::oci_spec::runtime::Mount],
        indices: Vec<usize>,
        mut source_fds: std::collections::HashMap<PathBuf, OwnedFd>,
        staged: &mut Vec<PathBuf>,
    ) -> Result<(), CreateError> {
        for index in indices {
            let m = &mut mounts[index];
            let Some(source) = m.source().clone() else {
                continue;
            };
            let Some(fd) = source_fds.remove(&source) else {
                continue;
            };
            if is_device(&fd) {
                continue;
            }
            let at = self.staging.join(index.to_string());
            if is_dir(&fd) {
                fs::create_dir_all(&at).map_err(io(format!("create {}", at.display())))?;
            } else {
                fs::create_dir_all(self.staging)
                    .map_err(io(format!("create {}", self.staging.display())))?;
                File::create(&at).map_err(io(format!("create {}", at.display())))?;
            }
            // A Kubernetes image volume: an overlay containerd mounted, which the kernel cannot
            // ID-map; its image layers are mounted again, ID-mapped, at the staging path.
            let canonical = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(io(format!("resolve {}", source.display())))?;
            if let Some(view) =
                crate::rootfs::idmapped_overlay_view(&fd, &canonical, &at, self.userns, self.block)?
            {
                staged.push(at.clone());
                m.set_source(Some(view));
                continue;
            }
            let tree = idmapped_clone(
                &fd,
                self.userns,
                LockedFlags::from_options(m.options().iter().flatten()),
            )
            .map_err(|e| CreateError::BindNotIdmappable {
                path: source.clone(),
                source: e,
            })?;
            attach(&tree, &at).map_err(io(format!("attach {}", at.display())))?;
            staged.push(at.clone());
            m.set_source(Some(at));
        }
        Ok(())
    }
}

/// The shim's emulated /proc and /sys files, bound over their targets after the spec's own
/// mounts.
fn emulated_mounts(
    req: &CreateRequest,
) -> Result<Vec<libcontainer::oci_spec::runtime::Mount>, CreateError> {
    req.emulated
        .iter()
        .map(|(source, target, writable)| {
            let mut options = vec![
                "rbind".to_string(),
                "nosuid".into(),
                "nodev".into(),
                "noexec".into(),
            ];
            if !writable {
                options.push("ro".into());
            }
            libcontainer::oci_spec::runtime::MountBuilder::default()
                .destination(target)
                .typ("bind")
                .source(source)
                .options(options)
                .build()
                .map_err(|e| CreateError::Libcontainer(e.to_string()))
        })
        .collect()
}

/// Write the hardened spec to the container's private bundle and build the container with
/// libcontainer, its init a sibling (the shim's child) waiting for Start. `cgroups` records
/// the cgroups entered in the hierarchies libcontainer does not manage, for the undo.
fn build_container(
    req: &CreateRequest,
    layout: &Layout,
    spec: &Spec,
    cgroups: &mut Vec<PathBuf>,
) -> Result<libcontainer::container::Container, CreateError> {
    let private = layout.private_bundle(&req.namespace, &req.id);
    fs::create_dir_all(&private).map_err(io(format!("create {}", private.display())))?;
    let json = serde_json::to_vec(spec).map_err(|e| CreateError::Libcontainer(e.to_string()))?;
    fs::write(private.join("config.json"), json).map_err(io("write hardened config.json"))?;

    let state_root = layout.state_root(&req.namespace);
    fs::create_dir_all(&state_root).map_err(io(format!("create {}", state_root.display())))?;
    let builder = with_stdio(
        ContainerBuilder::new(req.id.clone(), SyscallType::default()),
        &req.stdio,
    )?
    .with_root_path(&state_root)
    .map_err(|e| CreateError::Libcontainer(e.to_string()))?
    .with_console_socket(req.stdio.console_socket.as_ref())
    .validate_id()
    .map_err(|e| CreateError::Libcontainer(e.to_string()))?;
    // Inherited by the container's init and everything it starts.
    crate::unseen::refuse_unsupervised_mount_syscalls().map_err(io(
        "install the filter for mount syscalls the supervisor cannot trap",
    ))?;
    // On a hybrid host libcontainer places the container in the v1 controllers only; the
    // helper enters the container's cgroup in the other hierarchies first, so that the
    // container inherits it and its cgroup namespace is rooted at its own cgroup everywhere.
    let cgroups_path = libcontainer::utils::get_cgroup_path(
        &spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
        &req.id,
    );
    let (placement, placed) = crate::delegate::Placement::enter(&cgroups_path);
    cgroups.clone_from(&placement.dirs);
    if let Err(e) = placed {
        placement.leave();
        return Err(io(format!(
            "place the container in cgroup {} of the v2 and named hierarchies",
            cgroups_path.display()
        ))(e));
    }
    let built = builder
        .as_init(&private)
        .as_sibling(true)
        .with_systemd(false)
        .with_detach(true)
        .build();
    placement.leave();
    built.map_err(|e| CreateError::Libcontainer(error_chain(&e)))
}

/// Hand the container's cgroup to its root (a container that may manage cgroups: a nested
/// runtime, Docker-in-Docker).
fn delegate_to_container_root(
    req: &CreateRequest,
    container: &libcontainer::container::Container,
    block: IdBlock,
) -> Result<(), CreateError> {
    let config = container
        .spec()
        .map_err(|e| CreateError::Libcontainer(error_chain(&e)))?;
    let delegated = crate::delegate::delegate(&config.cgroup_path, &req.id, block.first).map_err(
        io(format!(
            "delegate cgroup {} to the container's root",
            config.cgroup_path.display()
        )),
    )?;
    if !delegated {
        log::warn!(
            "{}: cgroup {} is not the container's own; not delegated",
            req.id,
            config.cgroup_path.display()
        );
    }
    Ok(())
}

/// What names this container beyond its id, for keeping its ID block between tasks: a Docker
/// container's directory (the source of the `/etc/hostname`, `hosts` or `resolv.conf` dockerd
/// binds, `<data-root>/containers/<id>/…`), else containerd's record of it. None when neither
/// can be had: the block then goes with the task.
fn anchor(req: &CreateRequest, spec: &Spec) -> Option<crate::lease::Anchor> {
    let docker_dir = spec.mounts().iter().flatten().find_map(|m| {
        let target = m.destination().to_str()?;
        if !["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"].contains(&target) {
            return None;
        }
        let dir = m.source().as_ref()?.parent()?;
        let named = dir.is_absolute()
            && dir.file_name()?.to_str()? == req.id
            && dir.parent()?.file_name()?.to_str()? == "containers";
        named.then(|| dir.to_path_buf())
    });
    if let Some(dir) = docker_dir {
        return crate::lease::Anchor::directory(&dir);
    }
    let address = req.containerd_address.as_ref()?;
    use crate::lease::Registry;
    match crate::containerd::Containerd
        .created(address, &[(req.namespace.clone(), req.id.clone())])
        .pop()?
    {
        crate::lease::Recorded::Created(created) => Some(crate::lease::Anchor::Containerd {
            address: address.clone(),
            created,
        }),
        _ => None,
    }
}

/// Whether the runtime makes a directory (not a file) as `m`'s mount point: a bind of a file
/// needs a file, everything else a directory.
fn mount_point_is_dir(m: &libcontainer::oci_spec::runtime::Mount) -> bool {
    let bind = m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind");
    match (bind, m.source()) {
        (true, Some(source)) => source.is_dir(),
        _ => true,
    }
}

/// A network namespace the spec joins that is owned by the host's user namespace (containerd's
/// CRI makes the pod's before the sandbox exists and sets it up with CNI) cannot be entered from
/// inside the container's user namespace, where libcontainer joins namespaces. This helper,
/// still host root, enters it instead, and the container inherits it: the entry leaves the spec.
/// The container's root holds no capability over that namespace, as in a Kubernetes pod with
/// user namespaces: the orchestrator owns the pod's network. Returns whether it did.
fn enter_host_owned_netns(spec: &mut Spec) -> Result<bool, CreateError> {
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(false);
    };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let Some(path) = namespaces
        .iter()
        .find(|n| n.typ() == Ns::Network)
        .and_then(|n| n.path().clone())
    else {
        return Ok(false);
    };
    let netns =
        File::open(&path).map_err(io(format!("open network namespace {}", path.display())))?;
    // The policy judged the path; this is the namespace itself, opened once and entered by fd.
    let host = file_id(Path::new("/proc/self/ns/net"))
        .map(|id| id.ino)
        .ok();
    if nix::sys::stat::fstat(netns.as_raw_fd())
        .ok()
        .map(|st| st.st_ino)
        == host
    {
        return Err(CreateError::Refused(Refusal::new(
            Rule::HostNamespace,
            format!("{} is the host's network namespace", path.display()),
            "join a pod's or another container's network namespace, not the host's",
        )));
    }
    // The user namespace the container joins, if any, can join the network namespaces it owns
    // itself. Any other one — the host's, or the one containerd makes for a pod with
    // `hostUsers: false` (created in a user namespace with the pod's mapping) — only host root
    // can enter.
    let joined_user_ns = namespaces
        .iter()
        .find(|n| n.typ() == Ns::User)
        .and_then(|n| n.path().clone())
        .map(|p| file_id(&p).map(|id| id.ino))
        .transpose()
        .map_err(io("identify the user namespace to join"))?;
    let owner = owner_inode(&netns)
        .map_err(io(format!("owner of network namespace {}", path.display())))?;
    if joined_user_ns == Some(owner) {
        return Ok(false);
    }
    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        CreateError::Io {
            what: format!("enter network namespace {}", path.display()),
            source: e.into(),
        }
    })?;
    namespaces.retain(|n| n.typ() != Ns::Network);
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    Ok(true)
}

/// The spec's `net.*` sysctls, for a network namespace the host owns: container root may not
/// write them there, so this helper, in that namespace already, does, and they leave the spec.
/// containerd 2's CRI asks every pod for `net.ipv4.ip_unprivileged_port_start` and
/// `net.ipv4.ping_group_range`. A group range is written in host IDs, the container's block:
/// the kernel reads it in the writer's user namespace.
fn set_network_sysctls(spec: &mut Spec, block: IdBlock) -> Result<(), CreateError> {
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(());
    };
    let Some(mut sysctls) = linux.sysctl().clone() else {
        return Ok(());
    };
    let network: Vec<(String, String)> = sysctls
        .iter()
        .filter(|(k, _)| k.starts_with("net."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in &network {
        let value = if key == "net.ipv4.ping_group_range" {
            eci_policy::sysctls::to_host_range(value, block)
        } else {
            value.clone()
        };
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, &value).map_err(io(format!(
            "sysctl {key} = {value} in the pod's network namespace"
        )))?;
        sysctls.remove(key);
    }
    linux.set_sysctl(Some(sysctls));
    spec.set_linux(Some(linux));
    Ok(())
}

/// NS_GET_USERNS, _IO(0xb7, 0x1): the user namespace owning a namespace.
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// The inode of the user namespace owning namespace `ns`.
pub(crate) fn owner_inode(ns: &File) -> std::io::Result<u64> {
    // SAFETY: NS_GET_USERNS takes no argument and returns a new fd (or -1).
    let owner = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    if owner < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from the ioctl, owned from here.
    let owner = unsafe { OwnedFd::from_raw_fd(owner) };
    Ok(nix::sys::stat::fstat(owner.as_raw_fd())?.st_ino)
}

/// In a network namespace the container's root does not own, the kernel refuses it a sysfs (a
/// sysfs shows a network namespace). This helper mounts one there, of the pod's network
/// namespace, at `at`, and the spec's sysfs becomes a bind of it with the same flags.
fn stage_sysfs(
    mounts: &mut [libcontainer::oci_spec::runtime::Mount],
    at: &Path,
) -> Result<(), CreateError> {
    use nix::mount::{mount, MsFlags};
    for m in mounts
        .iter_mut()
        .filter(|m| m.typ().as_deref() == Some("sysfs"))
    {
        let options: Vec<String> = m.options().clone().unwrap_or_default();
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if options.iter().any(|o| o == "ro") {
            flags |= MsFlags::MS_RDONLY;
        }
        if !at.exists() {
            fs::create_dir_all(at).map_err(io(format!("create {}", at.display())))?;
            mount(Some("sysfs"), at, Some("sysfs"), flags, None::<&str>).map_err(|e| {
                CreateError::Io {
                    what: format!("mount the pod network's sysfs at {}", at.display()),
                    source: e.into(),
                }
            })?;
        }
        let mut bind = vec!["rbind".to_string()];
        bind.extend(options.into_iter().filter(|o| o != "rbind" && o != "bind"));
        m.set_typ(Some("bind".into()))
            .set_source(Some(at.to_path_buf()))
            .set_options(Some(bind));
    }
    Ok(())
}

/// libcontainer sets the process's oom_score_adj in this helper (host root, about to become the
/// container's parent), which its children inherit. Lowering it takes CAP_SYS_RESOURCE, and
/// without that libcontainer fails with a bare EACCES: the same write is tried first here, so
/// the refusal says what to change, before anything is made.
fn check_oom_score_adj(spec: &Spec) -> Result<(), CreateError> {
    let Some(requested) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) else {
        return Ok(());
    };
    match fs::write("/proc/self/oom_score_adj", requested.to_string()) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let current = fs::read_to_string("/proc/self/oom_score_adj")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            Err(CreateError::OomScoreAdj { requested, current })
        }
        // Anything else (an out-of-range value) is libcontainer's to report.
        _ => Ok(()),
    }
}

/// Whether the container holds CAP_SYS_ADMIN, and so may mount a cgroup file system and run a
/// container runtime of its own: such a container gets its cgroups delegated.
fn may_manage_cgroups(spec: &Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| b.contains(&libcontainer::oci_spec::runtime::Capability::SysAdmin))
}

/// Open the container's stdio the way libcontainer wants it: fds, with /dev/null for absent
/// streams so the container never inherits the helper's own pipes.
/// Stdin path meaning "the helper's own fd 0".
pub const STDIN_FROM_HELPER: &str = "/proc/self/fd/0";

pub(crate) fn with_stdio(
    mut b: ContainerBuilder,
    stdio: &Stdio,
) -> Result<ContainerBuilder, CreateError> {
    if stdio.console_socket.is_some() {
        return Ok(b);
    }
    let open = |p: &Option<PathBuf>, write: bool| {
        open_stdio(p.as_deref(), write).map_err(io(format!(
            "open stdio {}",
            p.as_deref().unwrap_or(Path::new("/dev/null")).display()
        )))
    };
    let stdin = open(&stdio.stdin, false)?;
    b = b.with_stdin(stdin);
    b = b.with_stdout(open(&stdio.stdout, true)?);
    b = b.with_stderr(open(&stdio.stderr, true)?);
    Ok(b)
}

/// Open one of a process's stdio streams: containerd's fifo, /dev/null for an absent stream
/// (never the helper's own pipes), or — for stdin — the helper's own fd 0, a pipe the shim
/// feeds from containerd's fifo so the process sees EOF only when containerd closes stdin.
pub(crate) fn open_stdio(path: Option<&Path>, write: bool) -> std::io::Result<OwnedFd> {
    if !write && path == Some(Path::new(STDIN_FROM_HELPER)) {
        return std::io::stdin().as_fd().try_clone_to_owned();
    }
    let path = path
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/dev/null"));
    Ok(OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)?
        .into())
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn read_spec(bundle: &Path) -> Result<Spec, CreateError> {
    let path = bundle.join("config.json");
    let bad = |message: String| CreateError::BadSpec {
        bundle: bundle.to_path_buf(),
        message,
    };
    let text = fs::read(&path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))
}

/// The host IDs the kubelet hands out to pods with `hostUsers: false`, read as the kubelet
/// reads them (a `kubelet` user and its /etc/subuid entry, else 65536 up).
pub fn kubelet_range() -> Result<KubeletRange, String> {
    let passwd = fs::read_to_string("/etc/passwd").ok();
    let subuid = fs::read_to_string("/etc/subuid").ok();
    KubeletRange::from_files(passwd.as_deref(), subuid.as_deref())
}

/// Whether the kubelet's user-namespace range and ECI's pool (from the policy at
/// `policy_path`) are kept apart, worded for `enforce status`.
pub fn userns_pools_report(policy_path: &Path) -> (bool, String) {
    let policy = match load_policy(policy_path) {
        Ok(p) => p,
        Err(r) => return (false, r.to_string()),
    };
    let pool = &policy.id_pool;
    match kubelet_range() {
        Err(e) => (false, format!("WARNING: kubelet user namespaces: {e}")),
        Ok(k) => match k.conflict(pool) {
            Some(why) => (false, format!("WARNING: kubelet user namespaces: {why}")),
            None => (
                true,
                format!(
                    "kubelet user namespaces: the kubelet's range {}..{} and ECI's pool {}..{} are apart; pods with hostUsers: false keep the kubelet's block",
                    k.first,
                    k.end(),
                    pool.first,
                    pool.end()
                ),
            ),
        },
    }
}

/// At the shim's start: when the kubelet's user-namespace range and ECI's pool (from the policy
/// at `policy_path`) meet, say so in the shim's log (containerd's) and, once, in the audit log —
/// before a pod is refused for it.
pub fn warn_if_pools_meet(layout: &Layout, policy_path: &Path) {
    let Ok(policy) = load_policy(policy_path) else {
        // Every create reports a bad policy file itself.
        return;
    };
    let conflict = match kubelet_range() {
        Err(e) => Some(format!("kubelet user namespaces: {e}")),
        Ok(k) => k.conflict(&policy.id_pool),
    };
    if let Some(detail) = conflict {
        crate::audit::warn_once(
            &policy.audit_log,
            &layout.base().join("kubelet-pool-warning"),
            Rule::UserNamespace,
            &detail,
        );
    }
}

fn load_policy(path: &Path) -> Result<Policy, Refusal> {
    match fs::read_to_string(path) {
        Ok(text) => Policy::parse(path, &text).map_err(|e| {
            Refusal::new(Rule::PolicyFile, e.to_string(), "an administrator must fix the ECI policy file; every container is refused until then")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
        Err(e) => Err(Refusal::new(
            Rule::PolicyFile,
            format!("policy file {}: {e}", path.display()),
            "an administrator must make the ECI policy file readable; every container is refused until then",
        )),
    }
}

fn refuse(req: &CreateRequest, policy: &Policy, refusal: Refusal) -> CreateError {
    refuse_with_image(req, policy, refusal, None)
}

fn refuse_with_image(
    req: &CreateRequest,
    policy: &Policy,
    refusal: Refusal,
    image: Option<&str>,
) -> CreateError {
    // A refusal is rare: worth asking containerd which image it was, for the audit line.
    let looked_up = match image {
        Some(_) => None,
        None => containerd_image(req).map(|i| i.name),
    };
    let image = image.or(looked_up.as_deref());
    audit::record(&policy.audit_log, &req.namespace, &req.id, image, &refusal);
    CreateError::Refused(refusal)
}

fn rootfs_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let p = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    if p.is_absolute() {
        p
    } else {
        bundle.join(p)
    }
}

/// Facts for the policy, and the O_PATH fds of bind sources so that what is judged is mounted.
fn gather_facts(
    req: &CreateRequest,
    spec: &Spec,
    policy: &Policy,
) -> (HostFacts, std::collections::HashMap<PathBuf, OwnedFd>) {
    let mut facts = HostFacts {
        host_boottime_secs: nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .ok()
            .map(|t| t.tv_sec()),
        ..HostFacts::default()
    };
    for (typ, name) in [
        (Ns::Pid, "pid"),
        (Ns::Network, "net"),
        (Ns::Ipc, "ipc"),
        (Ns::Uts, "uts"),
        (Ns::Cgroup, "cgroup"),
        (Ns::Mount, "mnt"),
        (Ns::User, "user"),
    ] {
        if let Ok(id) = file_id(Path::new(&format!("/proc/self/ns/{name}"))) {
            facts.host_namespaces.insert(typ, id);
        }
    }
    for ns in spec
        .linux()
        .iter()
        .flat_map(|l| l.namespaces().iter().flatten())
    {
        if let Some(path) = ns.path() {
            if let Ok(id) = file_id(path) {
                facts.namespace_paths.insert(path.clone(), id);
            }
        }
    }
    let mounts = Mounts::read();
    let mut fds = std::collections::HashMap::new();
    for m in spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| eci_policy::is_bind(m))
    {
        if let Some(source) = m.source() {
            if let Ok((fd, resolved)) = open_located(source, Some(&mounts)) {
                facts.mount_sources.insert(source.clone(), resolved);
                fds.insert(source.clone(), fd);
            }
        }
    }
    let engine = EngineFacts::gather(req);
    let mut extra: Vec<PathBuf> = vec![req.policy_path.clone()];
    extra.extend(req.policy_path.parent().map(Path::to_path_buf));
    extra.extend(std::env::current_exe().ok());
    extra.extend(engine.restricted.iter().cloned());
    facts.restricted = resolve_existing(&policy.restricted_paths(&extra), &mounts);
    // Other names of restricted sockets and files can only be found by identity: collect the
    // ones that have other names (more than one link) at a bounded cost.
    let linked = linked_restricted(&facts.restricted, &mounts);
    facts.restricted.extend(linked);
    facts.engine_sockets = resolve_existing(
        &eci_policy::ENGINE_SOCKETS
            .iter()
            .map(PathBuf::from)
            .collect::<Vec<_>>(),
        &mounts,
    );
    let wanted: std::collections::HashSet<eci_policy::FileId> = facts
        .restricted
        .iter()
        .filter(|r| r.has_other_names())
        .map(|r| r.id)
        .collect();
    let mut budget = crate::resolve::TREE_SEARCH_LIMIT;
    for (source, resolved) in &facts.mount_sources {
        if resolved.kind != eci_policy::FileKind::Dir {
            continue;
        }
        if let Some(fd) = fds.get(source) {
            let tree = bound_tree(fd, resolved, &mounts, &wanted, &mut budget);
            facts.bound_trees.insert(source.clone(), tree);
        }
    }
    facts.own_paths = vec![PathBuf::from("/var/lib/docker/containers").join(&req.id)];
    facts
        .own_paths
        .extend(engine.cri_own_paths(&req.id, &pod_members(req, spec)));
    // Asking containerd costs two client runs: only when the answer can matter.
    let mounts_engine_socket = facts
        .mount_sources
        .values()
        .any(|m| facts.engine_sockets.iter().any(|s| s.id == m.id));
    if mounts_engine_socket && !policy.trusted_socket_images.is_empty() {
        facts.image = containerd_image(req);
    }
    (facts, fds)
}

/// Most named sockets looked at in /proc/net/unix, and entries of each engine configuration
/// directory: both are small on any host, and the bound keeps a create's cost bounded.
const SOCKETS_LIMIT: usize = 4096;
const CONFIG_DIR_LIMIT: usize = 256;

/// Restricted sockets and configuration files that have more than one name. Sockets are the
/// named ones in /proc/net/unix (the sockets bound in this network namespace, found without
/// walking any directory) that lie within a restricted path; files are the entries of the
/// engines' small configuration directories. Data directories (/var/lib/…) are not walked.
fn linked_restricted(
    restricted: &[eci_policy::ResolvedPath],
    mounts: &Mounts,
) -> Vec<eci_policy::ResolvedPath> {
    let within = |r: &eci_policy::ResolvedPath| restricted.iter().any(|x| r.is_within(x));
    let mut found = Vec::new();
    let text = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for path in text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|p| p.starts_with('/'))
        .take(SOCKETS_LIMIT)
    {
        // Only a socket bound under a restricted path can be one (a cheap test first).
        let bound_at = Path::new(path);
        if !seen.insert(path)
            || !restricted
                .iter()
                .any(|r| bound_at.starts_with(&r.canonical) || bound_at.starts_with(&r.requested))
        {
            continue;
        }
        if let Ok((_, r)) = open_located(Path::new(path), Some(mounts)) {
            if r.has_other_names() && within(&r) {
                found.push(r);
            }
        }
    }
    for dir in restricted
        .iter()
        .filter(|r| r.kind == eci_policy::FileKind::Dir && r.canonical.starts_with("/etc"))
    {
        for entry in fs::read_dir(&dir.canonical)
            .into_iter()
            .flatten()
            .flatten()
            .take(CONFIG_DIR_LIMIT)
        {
            if let Ok((_, r)) = open_located(&entry.path(), Some(mounts)) {
                if r.has_other_names() {
                    found.push(r);
                }
            }
        }
    }
    for r in restricted.iter().filter(|r| r.has_other_names()) {
        log::debug!("restricted {} has {} links", r.canonical.display(), r.links);
    }
    found
}

/// What the shim and its containerd keep on the host, found from what they run with rather than
/// from default paths: the shim's state, containerd's addresses (gRPC and ttrpc, as given to
/// the shim), its state and root directories (from the bundle path and the snapshots of the
/// rootfs), and its configuration file (from the command line of the process that serves the
/// address).
#[derive(Debug, Default)]
struct EngineFacts {
    restricted: Vec<PathBuf>,
    root: Option<PathBuf>,
    state: Option<PathBuf>,
}

/// A bundle is `STATE/io.containerd.runtime.v2.task/NAMESPACE/ID`.
const TASK_PLUGIN_DIR: &str = "io.containerd.runtime.v2.task";
/// Snapshots are under `ROOT/io.containerd.snapshotter.v1.NAME/…`.
const SNAPSHOTTER_PREFIX: &str = "io.containerd.snapshotter.v1.";
const CRI_PLUGIN_DIR: &str = "io.containerd.grpc.v1.cri";

impl EngineFacts {
    fn gather(req: &CreateRequest) -> EngineFacts {
        let mut e = EngineFacts::default();
        e.restricted.push(req.base.clone());
        e.restricted.push(req.bundle.clone());
        let unix = |a: &str| PathBuf::from(a.strip_prefix("unix://").unwrap_or(a));
        if let Some(address) = &req.containerd_address {
            e.restricted.push(address.clone());
            let mut ttrpc = address.clone().into_os_string();
            ttrpc.push(".ttrpc");
            e.restricted.push(ttrpc.into());
            e.restricted.extend(containerd_config(address));
        }
        // containerd hands its shims the addresses it really serves.
        for var in ["TTRPC_ADDRESS", "GRPC_ADDRESS"] {
            if let Ok(a) = std::env::var(var) {
                if !a.is_empty() {
                    e.restricted.push(unix(&a));
                }
            }
        }
        e.state = state_dir(&req.bundle);
        e.root = req.rootfs.iter().find_map(|m| {
            std::iter::once(m.source.as_str())
                .chain(m.options.iter().flat_map(|o| {
                    o.split_once('=')
                        .map(|(_, v)| v.split(':').collect::<Vec<_>>())
                        .unwrap_or_default()
                }))
                .find_map(|p| root_dir(Path::new(p)))
        });
        e.restricted.extend(e.state.clone());
        e.restricted.extend(e.root.clone());
        e
    }

    /// Containerd CRI's per-pod and per-container files (hosts, resolv.conf, hostname, the
    /// pod's /dev/shm, image volumes), which its containers bind: their own, and their pod's.
    fn cri_own_paths(&self, id: &str, pod: &[String]) -> Vec<PathBuf> {
        let mut own = Vec::new();
        for dir in self.root.iter().chain(self.state.iter()) {
            let cri = dir.join(CRI_PLUGIN_DIR);
            own.push(cri.join("containers").join(id));
            for sandbox in std::iter::once(id).chain(pod.iter().map(String::as_str)) {
                own.push(cri.join("sandboxes").join(sandbox));
                // containerd 2.1+: the pod's image volumes, mounted read-only for it.
                own.push(cri.join("image-volumes").join(sandbox));
            }
        }
        own
    }
}

fn state_dir(bundle: &Path) -> Option<PathBuf> {
    let tasks = bundle.parent()?.parent()?;
    (tasks.file_name()? == TASK_PLUGIN_DIR).then(|| tasks.parent().map(Path::to_path_buf))?
}

fn root_dir(snapshot: &Path) -> Option<PathBuf> {
    let mut root = PathBuf::new();
    for c in snapshot.components() {
        if c.as_os_str()
            .to_str()
            .is_some_and(|s| s.starts_with(SNAPSHOTTER_PREFIX))
        {
            return root.is_absolute().then_some(root);
        }
        root.push(c);
    }
    None
}

/// The configuration file of the containerd serving `address` (`--config`/`-c` on its command
/// line), found through the socket's peer credentials. A non-blocking connect: a full backlog
/// only loses this fact, it never holds up a create.
fn containerd_config(address: &Path) -> Option<PathBuf> {
    let pid = socket_peer(address)?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let value = args.iter().enumerate().find_map(|(i, a)| {
        for flag in [&b"--config"[..], b"-c", b"-config"] {
            if *a == flag {
                return args.get(i + 1).copied();
            }
            if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix(b"=")) {
                return Some(v);
            }
        }
        None
    })?;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(value));
    if path.is_absolute() {
        Some(path)
    } else {
        Some(fs::read_link(format!("/proc/{pid}/cwd")).ok()?.join(path))
    }
}

fn socket_peer(address: &Path) -> Option<i32> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    // A path too long for sun_path is no socket this host's clients reach either.
    let addr = UnixAddr::new(address).ok()?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    connect(sock.as_raw_fd(), &addr).ok()?;
    let cred =
        nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    (cred.pid() > 0).then_some(cred.pid())
}

/// Containers whose namespaces `spec` joins by `/proc/PID/ns/…` (a CRI pod's sandbox), by the
/// lease recording PID as their init: their CRI pod files are this container's too.
fn pod_members(req: &CreateRequest, spec: &Spec) -> Vec<String> {
    let leases = LeaseDir::new(Layout::new(&req.base).leases());
    spec.linux()
        .iter()
        .flat_map(|l| l.namespaces().iter().flatten())
        .filter_map(|n| {
            let pid: i32 = n
                .path()
                .as_ref()?
                .to_str()?
                .strip_prefix("/proc/")?
                .split('/')
                .next()?
                .parse()
                .ok()?;
            let block = leases.held_by_init(pid)?;
            let record = leases.read(block)?;
            (record.namespace == req.namespace).then_some(record.container)
        })
        .collect()
}

fn containerd_image(req: &CreateRequest) -> Option<eci_policy::ImageRef> {
    recorded_image(req.containerd_address.as_deref()?, &req.namespace, &req.id)
}

/// The image containerd recorded for the container, resolved to its digest, asked of containerd
/// itself over its gRPC API — never a label or annotation the user can set. None when
/// containerd cannot say, which leaves every exception closed.
fn recorded_image(address: &Path, namespace: &str, id: &str) -> Option<eci_policy::ImageRef> {
    let (name, digest) = crate::containerd::recorded_image(address, namespace, id)?;
    Some(eci_policy::ImageRef { name, digest })
}

/// The block of the container whose user namespace `spec` joins, found by its init pid: the
/// lease says which ECI container that is, and the namespace's own ID map must be exactly that
/// block (a lease file is bookkeeping; the kernel's map is what the container really has).
fn joined_block(leases: &LeaseDir, spec: &Spec) -> Option<IdBlock> {
    let path = spec
        .linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == Ns::User)?
        .path()
        .clone()?;
    let pid: i32 = path
        .to_str()?
        .strip_prefix("/proc/")?
        .split('/')
        .next()?
        .parse()
        .ok()?;
    let block = leases.held_by_init(pid)?;
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).ok()?;
    (crate::lease::parse_id_map(&map) == [(block.first, block.size())]).then_some(block)
}
