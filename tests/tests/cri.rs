//! The Kubernetes path: containerd's CRI plugin with the ECI shim as runtime handler "eci", as a
//! RuntimeClass names it, driven through the CRI gRPC API as the kubelet does.

use eci_tests::*;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// The cgroup parent of every pod here, as the kubelet's cgroupfs driver would give one.
const CGROUP_PARENT: &str = "eci-cri-test";

type Client = RuntimeServiceClient<Channel>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client() -> Client {
    let socket = cri_env().socket.clone();
    let channel = Endpoint::try_from("http://[::]:0")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to containerd's CRI");
    RuntimeServiceClient::new(channel)
}

fn pod_config(name: &str, network: NamespaceMode) -> PodSandboxConfig {
    pod_config_with_pid(name, network, NamespaceMode::Container)
}

fn pod_config_with_pid(name: &str, network: NamespaceMode, pid: NamespaceMode) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: name.to_string(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{CGROUP_PARENT}"),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: network as i32,
                    pid: pid as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_pod(c: &mut Client, config: &PodSandboxConfig) -> Result<String, tonic::Status> {
    let resp = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "eci".into(),
        })
        .await?;
    Ok(resp.into_inner().pod_sandbox_id)
}

async fn start_container(
    c: &mut Client,
    pod: &str,
    config: &PodSandboxConfig,
    name: &str,
    command: &[&str],
) -> Result<String, String> {
    let resp = c
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.to_string(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: cri_env().image.clone(),
                    ..Default::default()
                }),
                command: command.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            sandbox_config: Some(config.clone()),
        })
        .await
        .map_err(|e| format!("create {name}: {e}"))?;
    let id = resp.into_inner().container_id;
    c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .map_err(|e| format!("start {name}: {e}"))?;
    Ok(id)
}

/// `sh -c script` in a started container: exit code, stdout, stderr. A container that did not
/// start, or an exec that failed, is exit code -1 with the error as stderr: the test then
/// removes its pod before it fails.
async fn exec_sync(
    c: &mut Client,
    started: &Result<String, String>,
    script: &str,
) -> (i32, String, String) {
    let id = match started {
        Ok(id) => id,
        Err(e) => return (-1, String::new(), e.clone()),
    };
    match c
        .exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
    {
        Ok(resp) => {
            let resp = resp.into_inner();
            (
                resp.exit_code,
                String::from_utf8_lossy(&resp.stdout).into_owned(),
                String::from_utf8_lossy(&resp.stderr).into_owned(),
            )
        }
        Err(e) => (-1, String::new(), format!("exec in {id}: {e}")),
    }
}

async fn remove_pod(c: &mut Client, pod: &str) {
    let _ = c
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await;
    let _ = c
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await;
}

/// Run a pod of `config` with one container ("app", sleeping), run `script` in it, remove the
/// pod: the script's exit code, stdout and stderr, and whatever the pod left on the host.
async fn in_a_pod(
    c: &mut Client,
    config: &PodSandboxConfig,
    script: &str,
) -> ((i32, String, String), Vec<String>) {
    let pod = run_pod(c, config)
        .await
        .unwrap_or_else(|e| panic!("run pod: {e}"));
    let app = start_container(c, &pod, config, "app", &["sleep", "60"]).await;
    let seen = exec_sync(c, &app, script).await;
    remove_pod(c, &pod).await;
    let left = std::iter::once(&pod)
        .chain(app.iter())
        .flat_map(|id| cri_leftovers_after(id))
        .collect();
    (seen, left)
}

fn cri_leftovers_after(id: &str) -> Vec<String> {
    wait_until(std::time::Duration::from_secs(10), || {
        leftovers_in("k8s.io", CGROUP_PARENT, id).is_empty()
    });
    leftovers_in("k8s.io", CGROUP_PARENT, id)
}

/// A pod of two containers under the "eci" handler: one user namespace and ID block for the
/// pod (both containers and the sandbox), the pod's network namespace, the container's own
/// uptime; stopping and removing the pod leaves nothing on the host.
#[test]
fn a_pod_runs_under_eci_through_the_cri_runtime_handler() {
    let rt = runtime();
    rt.block_on(async {
        let mut c = client().await;
        let name = name("cri-pod");
        let config = pod_config(&name, NamespaceMode::Pod);
        let pod = run_pod(&mut c, &config)
            .await
            .unwrap_or_else(|e| panic!("run pod: {e}"));
        let first = start_container(&mut c, &pod, &config, "first", &["sleep", "60"]).await;
        let second = start_container(&mut c, &pod, &config, "second", &["sleep", "60"]).await;
        let probe =
            "cat /proc/self/uid_map; for n in user net ipc; do readlink /proc/self/ns/$n; done; \
                     read u rest < /proc/uptime; echo uptime $u";
        let a = exec_sync(&mut c, &first, probe).await;
        let b = exec_sync(&mut c, &second, probe).await;
        remove_pod(&mut c, &pod).await;
        let left: Vec<String> = std::iter::once(&pod)
            .chain(first.iter())
            .chain(second.iter())
            .flat_map(|id| cri_leftovers_after(id))
            .collect();

        assert_eq!(a.0, 0, "{} {}", a.1, a.2);
        assert_eq!(b.0, 0, "{} {}", b.1, b.2);
        let map = parse_uid_map(a.1.lines().next().unwrap_or_default()).expect("uid_map");
        assert_eq!(map.0, 0);
        assert!(map.1 >= 100_000, "{}", a.1);
        assert_eq!(map.2, 65536);
        let namespaces = |out: &str| out.lines().skip(1).take(3).collect::<Vec<_>>().join(" ");
        assert_eq!(
            (a.1.lines().next(), namespaces(&a.1)),
            (b.1.lines().next(), namespaces(&b.1)),
            "one ID block and one user, network and IPC namespace per pod"
        );
        let uptime: f64 =
            a.1.lines()
                .find_map(|l| l.strip_prefix("uptime "))
                .and_then(|v| v.trim().parse().ok())
                .expect("uptime");
        let host = host_uptime();
        assert!(
            uptime + 1.0 < host,
            "the pod's uptime {uptime}, the host's {host}"
        );
        assert!(left.is_empty(), "{left:?}");
    });
}

/// A pod on the host's network is refused with the rule's words, through CRI to the caller.
#[test]
fn a_host_network_pod_is_refused_through_cri() {
    let rt = runtime();
    rt.block_on(async {
        let mut c = client().await;
        let name = name("cri-hostnet");
        let refused = run_pod(&mut c, &pod_config(&name, NamespaceMode::Node)).await;
        let message = match refused {
            Ok(pod) => {
                remove_pod(&mut c, &pod).await;
                panic!("a host-network pod ran under ECI");
            }
            Err(status) => status.message().to_string(),
        };
        assert!(
            message.contains("can't share a network namespace with the host"),
            "{message}"
        );
    });
}

/// Pod sysctls of its network namespace (containerd 2 asks every pod for the first two) are set
/// there, though container root does not own it; a group range means the pod's own groups.
/// The host's values do not move.
#[test]
fn a_pods_network_sysctls_are_set_in_its_network_namespace() {
    let host_ports =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut c = client().await;
        let name = name("cri-sysctl");
        let mut config = pod_config(&name, NamespaceMode::Pod);
        if let Some(linux) = config.linux.as_mut() {
            linux.sysctls = [
                ("net.ipv4.ip_unprivileged_port_start", "0"),
                ("net.ipv4.ping_group_range", "0 2147483647"),
                ("net.core.somaxconn", "1234"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        }
        let (seen, left) = in_a_pod(
            &mut c,
            &config,
            "cd /proc/sys/net; echo $(cat ipv4/ip_unprivileged_port_start) $(cat ipv4/ping_group_range) $(cat core/somaxconn)",
        )
        .await;

        assert_eq!(seen.0, 0, "{} {}", seen.1, seen.2);
        assert_eq!(seen.1.trim(), "0 0 65535 1234");
        assert!(left.is_empty(), "{left:?}");
    });
    let after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_eq!(after, host_ports);
}

/// `shareProcessNamespace: true`: the app container sees the sandbox's processes, and pid 1 is
/// the sandbox's.
#[test]
fn a_pod_can_share_one_process_namespace() {
    let rt = runtime();
    rt.block_on(async {
        let mut c = client().await;
        let name = name("cri-sharedpid");
        let config = pod_config_with_pid(&name, NamespaceMode::Pod, NamespaceMode::Pod);
        let (seen, left) = in_a_pod(
            &mut c,
            &config,
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o args | grep -c '^sleep'",
        )
        .await;

        assert_eq!(seen.0, 0, "{} {}", seen.1, seen.2);
        let mut lines = seen.1.lines();
        assert_eq!(
            lines.next().map(str::trim),
            Some("sleep 2147483647"),
            "{}",
            seen.1
        );
        // The sandbox's sleep and the app's.
        assert_eq!(lines.next().map(str::trim), Some("2"), "{}", seen.1);
        assert!(left.is_empty(), "{left:?}");
    });
}
