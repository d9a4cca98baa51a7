//! The Kafka listeners: one task per connection, requests answered in order, as Kafka does
//! (a connection's next request is read only after the previous response is written). A
//! listener is plaintext or TLS; SASL happens inside the protocol, on the connection's
//! [`Session`].

mod frame;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::auth::sasl::MAX_UNAUTHENTICATED_FRAME;
use crate::auth::{Listener, Session};
use crate::broker::Broker;
use crate::protocol;
pub use frame::{FrameError, FrameReader, MAX_REQUEST_BYTES};

/// A TLS handshake must finish within this, so half-open handshakes cannot pile up.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener: where clients are told to connect, and how its connections are secured.
#[derive(Clone)]
pub struct Endpoint {
    pub listener: Arc<Listener>,
    /// Present on SSL and SASL_SSL listeners.
    pub tls: Option<Arc<crate::auth::tls::Tls>>,
}

impl Endpoint {
    pub fn plaintext(listener: Listener) -> Endpoint {
        Endpoint {
            listener: Arc::new(listener),
            tls: None,
        }
    }
}

/// Accepts connections until the listener fails.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    endpoint: Endpoint,
) -> std::io::Result<()> {
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
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            broker.metrics.connections.fetch_add(1, Ordering::Relaxed);
            broker
                .metrics
                .connections_total
                .fetch_add(1, Ordering::Relaxed);
            accepted(sock, peer, &broker, &endpoint).await;
            broker.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn accepted(sock: TcpStream, peer: SocketAddr, broker: &Arc<Broker>, endpoint: &Endpoint) {
    let _ = sock.set_nodelay(true);
    let mut session = Session::new(
        peer.ip().to_string(),
        endpoint.listener.clone(),
        &broker.config.auth.sasl_mechanisms,
    );
    let Some(tls) = &endpoint.tls else {
        let (rd, wr) = sock.into_split();
        return connection(rd, wr, peer, broker, session).await;
    };
    // rustls reads the socket 4 KiB at a time; a buffer underneath turns that into one
    // syscall per 64 KiB (writes pass straight through).
    let sock = tokio::io::BufReader::with_capacity(64 * 1024, sock);
    let acceptor = tls.acceptor();
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            broker
                .metrics
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, listener = %endpoint.listener.name, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            broker
                .metrics
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, listener = %endpoint.listener.name, "TLS handshake timed out");
            return;
        }
    };
    // Only certificates the verifier accepted get here: their subject is the principal.
    session.tls_subject = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::auth::tls::certificate_principal);
    let (rd, wr) = tokio::io::split(tls);
    connection(rd, wr, peer, broker, session).await
}

async fn connection<R, W>(
    rd: R,
    mut wr: W,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    mut session: Session,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames =
        FrameReader::new(rd, MAX_REQUEST_BYTES).with_pool(broker.limits.memory.clone());
    loop {
        frames.set_max(if session.authenticated(Instant::now()) {
            MAX_REQUEST_BYTES
        } else {
            MAX_UNAUTHENTICATED_FRAME
        });
        frames.set_bare_token(session.sasl.as_ref().is_some_and(|s| s.expects_raw_token()));
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
        // Held until the request is handled and answered (see `limits/memory.rs`).
        let _request_memory = frames.take_held();
        let answer = protocol::handle_pieces(broker, &mut session, frame).await;
        let _response_memory = std::mem::take(&mut session.response_memory);
        match answer {
            Ok(Some((head, rest))) => {
                // flush: a TLS stream holds written bytes until flushed.
                if let Err(e) = async {
                    write_pieces(&mut wr, &head, &rest).await?;
                    wr.flush().await
                }
                .await
                {
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
        if session.close_after_response {
            let _ = wr.shutdown().await;
            return;
        }
        if !session.mute.is_zero() {
            // Throttled by a quota: the response went out with throttle_time_ms; the next
            // request waits (KIP-219), so a client that ignores the field slows down too.
            tokio::time::sleep(std::mem::take(&mut session.mute)).await;
        }
    }
}

/// Most iovecs handed to one `writev` (Linux's IOV_MAX is 1024).
const MAX_IOVECS: usize = 256;

/// Writes a response's pieces in order. A fetch answer alternates a few encoded bytes with
/// each partition's records; written one by one, with TCP_NODELAY, every small piece left as
/// its own packet and woke the client once more per partition. One `writev` hands the kernel
/// all of them at once, so they go out in full segments.
async fn write_pieces<W: AsyncWrite + Unpin>(
    wr: &mut W,
    head: &[u8],
    rest: &[bytes::Bytes],
) -> std::io::Result<()> {
    if rest.is_empty() || !wr.is_write_vectored() {
        wr.write_all(head).await?;
        for piece in rest {
            wr.write_all(piece).await?;
        }
        return Ok(());
    }
    let bufs: Vec<&[u8]> = std::iter::once(head)
        .chain(rest.iter().map(|b| &b[..]))
        .filter(|b| !b.is_empty())
        .collect();
    let (mut i, mut off) = (0, 0);
    while i < bufs.len() {
        let end = (i + MAX_IOVECS).min(bufs.len());
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&bufs[i][off..])
            .chain(bufs[i + 1..end].iter().copied())
            .map(std::io::IoSlice::new)
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && i < bufs.len() {
            let left = bufs[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::write_pieces;
    use bytes::Bytes;
    use std::io::IoSlice;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::AsyncWrite;

    /// A writer that takes at most `step` bytes per call, vectored, as a busy socket does.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut budget = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(budget);
                self.out.extend_from_slice(&b[..take]);
                budget -= take;
                n += take;
                if budget == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn pieces_arrive_whole_and_in_order_through_partial_writes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // More pieces than one writev takes, empty ones among them.
        let rest: Vec<Bytes> = (0..700u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i % 7) as usize]))
            .collect();
        let mut want = b"head".to_vec();
        for r in &rest {
            want.extend_from_slice(r);
        }
        for step in [1, 3, 64, 1 << 20] {
            let mut w = Trickle {
                out: Vec::new(),
                step,
            };
            rt.block_on(write_pieces(&mut w, b"head", &rest)).unwrap();
            assert_eq!(w.out, want, "step {step}");
        }
    }
}
