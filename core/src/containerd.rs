//! Questions for containerd itself, over its gRPC API on the address the shim was started
//! with: never a label or annotation a user can set, and no `ctr` on the shim's PATH.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest};
use containerd_client::tonic::Request;
use std::path::Path;
use std::time::Duration;

/// How long the create helper waits for containerd's answer before it treats the image as
/// unknown (which keeps every image exception closed).
const TIMEOUT: Duration = Duration::from_secs(5);

/// The image containerd recorded for container `id` in `namespace`, with the digest of the
/// manifest its name points to. None when containerd cannot say.
pub fn recorded_image(address: &Path, namespace: &str, id: &str) -> Option<(String, String)> {
    // A runtime on this thread alone: the create helper must stay single-threaded (it forks).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .ok()?;
    let answer = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, ask(address, namespace, id))
            .await
            .ok()
            .flatten()
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    answer
}

fn in_namespace<T>(message: T, namespace: &str) -> Option<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("containerd-namespace", namespace.parse().ok()?);
    Some(request)
}

async fn ask(address: &Path, namespace: &str, id: &str) -> Option<(String, String)> {
    let channel = containerd_client::connect(address).await.ok()?;
    let container = ContainersClient::new(channel.clone())
        .get(in_namespace(
            GetContainerRequest { id: id.to_string() },
            namespace,
        )?)
        .await
        .ok()?
        .into_inner()
        .container?;
    let name = container.image;
    if name.is_empty() {
        return None;
    }
    let image = ImagesClient::new(channel)
        .get(in_namespace(
            GetImageRequest { name: name.clone() },
            namespace,
        )?)
        .await
        .ok()?
        .into_inner()
        .image?;
    let digest = image.target?.digest;
    digest.starts_with("sha256:").then_some((name, digest))
}

/// How long one allocation waits for a containerd to say which containers exist. Its own
/// containerd is waiting for this create and answers at once; another (a parked lease's) may
/// be stopped, and then its leases are kept unless the pool is full.
const LEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// containerd's container records over its gRPC API, for the ID leases.
pub struct Containerd;

impl crate::lease::Registry for Containerd {
    fn created(&self, address: &Path, names: &[(String, String)]) -> Vec<crate::lease::Recorded> {
        use crate::lease::Recorded;
        // No socket at all: no containerd serves that address any more (a containerd removed,
        // a test's torn down), so none of its containers exists. A containerd that restarts
        // makes its socket again; a container that lost its parked block so gets another.
        if std::fs::symlink_metadata(address)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return vec![Recorded::Absent; names.len()];
        }
        let unknown = || vec![Recorded::Unknown; names.len()];
        // A runtime on this thread alone: the create helper must stay single-threaded.
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
        else {
            return unknown();
        };
        let answer = runtime.block_on(async {
            tokio::time::timeout(LEASE_TIMEOUT, created(address, names))
                .await
                .ok()
                .flatten()
        });
        runtime.shutdown_timeout(Duration::from_millis(100));
        answer.unwrap_or_else(unknown)
    }
}

async fn created(
    address: &Path,
    names: &[(String, String)],
) -> Option<Vec<crate::lease::Recorded>> {
    use crate::lease::Recorded;
    let channel = containerd_client::connect(address).await.ok()?;
    let mut client = ContainersClient::new(channel);
    let mut answers = Vec::with_capacity(names.len());
    for (namespace, id) in names {
        let Some(request) = in_namespace(GetContainerRequest { id: id.clone() }, namespace) else {
            answers.push(Recorded::Unknown);
            continue;
        };
        answers.push(match client.get(request).await {
            Ok(reply) => match reply.into_inner().container.and_then(|c| c.created_at) {
                Some(t) => Recorded::Created(format!("{}.{:09}", t.seconds, t.nanos)),
                None => Recorded::Unknown,
            },
            Err(status) if status.code() == containerd_client::tonic::Code::NotFound => {
                Recorded::Absent
            }
            Err(_) => Recorded::Unknown,
        });
    }
    Some(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{Recorded, Registry};

    #[test]
    fn no_socket_means_no_container_and_a_dead_one_cannot_say() {
        let names = [("default".to_string(), "c".to_string())];
        let gone = std::env::temp_dir().join(format!("eci-no-containerd-{}", std::process::id()));
        assert_eq!(Containerd.created(&gone, &names), vec![Recorded::Absent]);
        // A path that exists but where nothing answers: containerd cannot be asked.
        let file = gone.with_extension("file");
        std::fs::write(&file, "").unwrap();
        let answer = Containerd.created(&file, &names);
        let _ = std::fs::remove_file(&file);
        assert_eq!(answer, vec![Recorded::Unknown]);
    }
}
