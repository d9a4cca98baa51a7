//! The Kafka listener: one task per connection, requests answered in order, as Kafka does
//! (a connection's next request is read only after the previous response is written).

mod frame;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::broker::Broker;
use crate::protocol;
pub use frame::{FrameError, FrameReader, MAX_REQUEST_BYTES};

/// Accepts connections until the listener fails.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) -> std::io::Result<()> {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: log, breathe, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Refused connections are closed at once: the client sees the connection drop and
        // retries or fails over, as with a Kafka broker at max.connections.
        let Ok(admitted) = broker.limits.admit(peer.ip()) else {
            drop(sock);
            continue;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            broker.metrics.connections.fetch_add(1, Ordering::Relaxed);
            broker
                .metrics
                .connections_total
                .fetch_add(1, Ordering::Relaxed);
            connection(sock, peer, &broker).await;
            broker.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connection(sock: TcpStream, peer: SocketAddr, broker: &Arc<Broker>) {
    let _ = sock.set_nodelay(true);
    let (rd, mut wr) = sock.into_split();
    let mut frames = FrameReader::new(rd, MAX_REQUEST_BYTES);
    let peer_host = peer.ip().to_string();
    loop {
        let frame = match frames.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                broker
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, error = %e, "closing connection");
                return;
            }
        };
        match protocol::handle(broker, &peer_host, frame).await {
            Ok(Some(resp)) => {
                if let Err(e) = wr.write_all(&resp).await {
                    tracing::debug!(%peer, error = %e, "write failed");
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                broker
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, error = %e, "closing connection");
                return;
            }
        }
    }
}
