//! Events to containerd: queued, forwarded one at a time in order, and drained before the shim
//! exits. containerd-shim's publisher has the same queue but no way to learn when it is empty,
//! so a shim that exited right after Shutdown lost the event still in flight (containerd 1.6
//! logged "failed sending message on channel … broken pipe" for its answer to it).

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::ttrpc::{self, context::Context};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Events waiting beyond this are refused (containerd is not reading them).
const QUEUE: usize = 1024;
/// Attempts per event before it is dropped (with a warning).
const ATTEMPTS: u32 = 5;
/// One forward's limit: a containerd that stopped answering must not hold the queue forever.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Cloned handles share one queue.
#[derive(Clone)]
pub struct RemotePublisher {
    sender: mpsc::Sender<Envelope>,
    /// Events published and not yet answered by containerd (or given up on).
    pending: Arc<watch::Sender<usize>>,
}

impl RemotePublisher {
    /// Connect to containerd's ttrpc address and start forwarding.
    pub async fn new(address: &str) -> Result<RemotePublisher, String> {
        let client = connect(address).await?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let pending = Arc::new(watch::channel(0usize).0);
        tokio::spawn(forward_all(
            address.to_string(),
            client,
            receiver,
            pending.clone(),
        ));
        Ok(RemotePublisher { sender, pending })
    }

    /// Queue an event; it is forwarded after every event queued before it.
    pub async fn publish(
        &self,
        _ctx: Context,
        topic: &str,
        namespace: &str,
        event: Box<dyn MessageDyn>,
    ) -> Result<(), String> {
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_owned());
        envelope.set_namespace(namespace.to_owned());
        envelope.set_timestamp(crate::container::now());
        envelope
            .set_event(containerd_shim::util::convert_to_any(event).map_err(|e| e.to_string())?);
        self.pending.send_modify(|n| *n += 1);
        if let Err(e) = self.sender.send_timeout(envelope, FORWARD_TIMEOUT).await {
            self.pending.send_modify(|n| *n -= 1);
            return Err(format!("event queue: {e}"));
        }
        Ok(())
    }

    /// Wait until every event published so far has been answered by containerd, for at most
    /// `limit`. Whether the queue drained.
    pub async fn drain(&self, limit: Duration) -> bool {
        let mut rx = self.pending.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn connect(address: &str) -> Result<Client, String> {
    let address = address.to_string();
    let fd = tokio::task::spawn_blocking(move || containerd_shim::util::connect(&address))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connect to containerd's ttrpc address: {e}"))?;
    // SAFETY: `fd` is a connected unix socket that nothing else owns.
    Ok(unsafe { Client::from_raw_unix_socket_fd(fd) })
}

/// Forward each event until containerd answers it (reconnecting when the connection closed),
/// in order: a TaskExit must never overtake its TaskStart.
async fn forward_all(
    address: String,
    client: Client,
    mut receiver: mpsc::Receiver<Envelope>,
    pending: Arc<watch::Sender<usize>>,
) {
    let mut client = EventsClient::new(client);
    while let Some(envelope) = receiver.recv().await {
        let topic = envelope.topic.clone();
        let mut req = ForwardRequest::new();
        req.set_envelope(envelope);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ctx = ttrpc::context::with_timeout(
                i64::try_from(FORWARD_TIMEOUT.as_nanos()).unwrap_or(i64::MAX),
            );
            match client.forward(ctx, &req).await {
                Ok(_) => break,
                Err(e) if attempt >= ATTEMPTS => {
                    log::warn!("event {topic} dropped after {attempt} attempts: {e}");
                    break;
                }
                Err(e) => {
                    log::debug!("event {topic}: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    if matches!(
                        e,
                        ttrpc::error::Error::RemoteClosed | ttrpc::error::Error::LocalClosed
                    ) {
                        if let Ok(c) = connect(&address).await {
                            client = EventsClient::new(c);
                        }
                    }
                }
            }
        }
        pending.send_modify(|n| *n -= 1);
    }
}
