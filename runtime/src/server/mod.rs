//! The Kafka listeners: one task per connection, requests handled and answered one at a
//! time, in order, as Kafka does. Answers to requests that came in one read (a producer
//! pipelining small requests) go out together, in one write, unless a request among them
//! waits (a long poll): what is answered goes out before that wait. A listener is plaintext
//! or TLS; SASL happens inside the protocol, on the connection's [`Session`].

mod frame;
pub mod tls;

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
use crate::protocol::pieces::{FileRange, Piece};
pub use frame::{FrameError, FrameReader, FRAME_DEADLINE, MAX_REQUEST_BYTES};

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
    // Records go out from their files: with sendfile on plaintext, and over TLS read a
    // megabyte at a time as they are written, so a fetch never holds its records in memory
    // whatever the client asks (over TLS a 50 MB read into a fresh block had the kernel
    // fault in and zero every page, half the broker's time on a TLS consume).
    session.zero_copy = broker.config.fetch_sendfile;
    let Some(tls) = &endpoint.tls else {
        let (rd, wr) = sock.into_split();
        return connection(rd, wr, peer, broker, session).await;
    };
    let accepted = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls::accept(tls.config(), sock));
    let tls = match accepted.await {
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
        .peer_certificate
        .as_ref()
        .and_then(crate::auth::tls::certificate_principal);
    connection(tls.reader, tls.writer, peer, broker, session).await
}

/// Where a connection writes its answers.
trait Out: AsyncWrite + Unpin {
    /// The TCP socket itself, on a plaintext connection: file ranges go out with `sendfile`.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Out for tokio::net::tcp::OwnedWriteHalf {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl Out for tls::TlsWriter {}

/// How long a closing connection may take to hand the peer its last bytes (TLS: the alert or
/// close_notify) before it is dropped anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

async fn connection<R, W>(
    rd: R,
    mut wr: W,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    session: Session,
) where
    R: AsyncRead + Unpin,
    W: Out,
{
    requests(rd, &mut wr, peer, broker, session, ANSWER_HOLD).await;
    // However it ended: a TLS connection ends with close_notify, or with the fatal alert its
    // reader's failure calls for (RFC 8446 §6); a plaintext one with its FIN.
    let _ = tokio::time::timeout(CLOSE_WAIT, wr.shutdown()).await;
}

/// Serves a connection's requests; answers are kept back at most `hold` (see [`Answered`]).
async fn requests<R, W>(
    rd: R,
    wr: &mut W,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    mut session: Session,
    hold: Duration,
) where
    R: AsyncRead + Unpin,
    W: Out,
{
    let mut frames =
        FrameReader::new(rd, MAX_REQUEST_BYTES).with_pool(broker.limits.memory.clone());
    let mut answered = Answered::new(hold);
    loop {
        let authenticated = session.authenticated(Instant::now());
        frames.set_max(if authenticated {
            MAX_REQUEST_BYTES
        } else {
            MAX_UNAUTHENTICATED_FRAME
        });
        frames.set_bare_token(session.sasl.as_ref().is_some_and(|s| s.expects_raw_token()));
        // The idle clock runs only while waiting for the next request: a long-poll being
        // answered, or a throttle's mute, is not silence.
        let max_idle = broker.config.limits.connections_max_idle_ms;
        let idle = Duration::from_millis(if authenticated {
            max_idle
        } else {
            max_idle.min(crate::limits::UNAUTHENTICATED_IDLE_MS)
        });
        // Before authentication a request, too, must come whole within that cap: a
        // handshake is small, and trickling one in must not hold a place for a minute.
        frames.set_deadline(if authenticated {
            FRAME_DEADLINE
        } else {
            FRAME_DEADLINE.min(idle)
        });
        // Answers wait while the next request is already here (a producer pipelining
        // small requests): one write then carries them all, rather than a packet and a
        // wake-up of the client each. Before the socket is read, everything goes out.
        if !frames.frame_ready() {
            if let Err(e) = answered.send(wr).await {
                tracing::debug!(%peer, error = %e, "write failed");
                return;
            }
        }
        let frame = match frames.next_within(Some(idle)).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(FrameError::Idle(idle)) => {
                crate::limits::idle_closed(peer, authenticated, idle);
                return;
            }
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
        let request_memory = frames.take_held();
        let answer = {
            let handled = protocol::handle_pieces(broker, &mut session, frame);
            tokio::pin!(handled);
            match poll_once(handled.as_mut()).await {
                Some(answer) => answer,
                None => {
                    // This request waits (a long-poll, a join, an fsync): what is answered
                    // goes out first. A failed write ends the connection once the handler
                    // is done, never in the middle of it.
                    let sent = answered.send(wr).await;
                    let answer = handled.await;
                    if let Err(e) = sent {
                        tracing::debug!(%peer, error = %e, "write failed");
                        return;
                    }
                    answer
                }
            }
        };
        // The request is handled: its memory goes back now, not with its answer.
        drop(request_memory);
        let response_memory = std::mem::take(&mut session.response_memory);
        if !session.delay_response.is_zero() {
            // A failed login's delay is this answer's alone.
            if let Err(e) = answered.send(wr).await {
                tracing::debug!(%peer, error = %e, "write failed");
                return;
            }
            tokio::time::sleep(std::mem::take(&mut session.delay_response)).await;
        }
        match answer {
            Ok(Some((head, rest))) => {
                answered.push(head, rest, response_memory);
            }
            Ok(None) => {}
            Err(e) => {
                // What was answered before the bad request still goes out.
                let _ = answered.send(wr).await;
                broker
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, error = %e, "closing connection");
                return;
            }
        }
        if session.close_after_response || !session.mute.is_zero() || answered.full() {
            if let Err(e) = answered.send(wr).await {
                tracing::debug!(%peer, error = %e, "write failed");
                return;
            }
        }
        if session.close_after_response {
            return;
        }
        if !session.mute.is_zero() {
            // Throttled by a quota: the response went out with throttle_time_ms; the next
            // request waits (KIP-219), so a client that ignores the field slows down too.
            tokio::time::sleep(std::mem::take(&mut session.mute)).await;
        }
    }
}

/// How long an answer may be kept back for the ones after it: handlers that are ready at
/// once may still block their thread (a write stalled by dirty-page throttling), and the
/// earliest answer must not wait behind many of them.
const ANSWER_HOLD: Duration = Duration::from_millis(1);

/// Answers handled but not yet written, in order, with the memory they hold from the pool.
struct Answered {
    pieces: Vec<Piece>,
    bytes: usize,
    count: usize,
    held: Vec<crate::limits::memory::Held>,
    /// When the first answer kept back was ready.
    since: Option<Instant>,
    hold: Duration,
}

impl Answered {
    /// Most answers, and bytes, kept back before they are written anyway.
    const MAX_COUNT: usize = 64;
    const MAX_BYTES: usize = 1 << 20;

    fn new(hold: Duration) -> Answered {
        Answered {
            pieces: Vec::new(),
            bytes: 0,
            count: 0,
            held: Vec::new(),
            since: None,
            hold,
        }
    }

    fn push(&mut self, head: bytes::BytesMut, rest: Vec<Piece>, held: crate::limits::memory::Held) {
        self.since.get_or_insert_with(Instant::now);
        self.bytes += head.len() + rest.iter().map(Piece::len).sum::<usize>();
        self.count += 1;
        self.pieces.push(Piece::Mem(head.freeze()));
        self.pieces.extend(rest);
        if held.bytes() > 0 {
            self.held.push(held);
        }
    }

    fn full(&self) -> bool {
        self.count >= Self::MAX_COUNT
            || self.bytes >= Self::MAX_BYTES
            || self.since.is_some_and(|t| t.elapsed() >= self.hold)
    }

    /// Writes every answer kept back (and flushes: a TLS stream holds written bytes until
    /// flushed), then lets their memory go.
    async fn send<W: Out>(&mut self, wr: &mut W) -> std::io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let result = async {
            write_pieces(wr, &[], &self.pieces).await?;
            wr.flush().await
        }
        .await;
        self.pieces.clear();
        self.held.clear();
        // A fetch over thousands of partitions must not leave its piece list behind on a
        // connection for good.
        if self.pieces.capacity() > 1024 {
            self.pieces.shrink_to(64);
        }
        self.bytes = 0;
        self.count = 0;
        self.since = None;
        result
    }
}

/// Polls `f` once: its output if that is ready, else `None` (its waker stays registered).
async fn poll_once<F: std::future::Future>(mut f: std::pin::Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Most iovecs handed to one `writev` (Linux's IOV_MAX is 1024).
const MAX_IOVECS: usize = 256;

/// Writes a response's pieces in order. A fetch answer alternates a few encoded bytes with
/// each partition's records; written one by one, with TCP_NODELAY, every small piece left as
/// its own packet and woke the client once more per partition. One `writev` hands the kernel
/// all of them at once, so they go out in full segments; around records sent from their file,
/// the socket is corked for the same reason.
async fn write_pieces<W: Out>(wr: &mut W, head: &[u8], rest: &[Piece]) -> std::io::Result<()> {
    let corked = rest.iter().any(|p| matches!(p, Piece::File(_))) && cork(wr.tcp(), true);
    let mut mem: Vec<&[u8]> = vec![head];
    let mut result = Ok(());
    for piece in rest {
        match piece {
            Piece::Mem(b) => mem.push(b),
            Piece::File(f) => {
                result = write_all_vectored(wr, &mem).await;
                if result.is_ok() {
                    result = send_file(wr, f).await;
                }
                if result.is_err() {
                    break;
                }
                mem.clear();
            }
        }
    }
    if result.is_ok() {
        result = write_all_vectored(wr, &mem).await;
    }
    if corked {
        cork(wr.tcp(), false);
    }
    result
}

/// Sets or clears TCP_CORK (the kernel holds partial segments until it is cleared); whether
/// it was set.
fn cork(tcp: Option<&TcpStream>, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let Some(tcp) = tcp else { return false };
    let v: libc::c_int = on.into();
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from the pointer to `v`, which
    // lives across the call; the descriptor is the socket's own.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Sends a file range: with `sendfile` from the page cache to a plaintext socket, else read
/// and written a megabyte at a time. A file shorter than the range (it never is: segments
/// only grow, and a replaced or deleted one stays readable through the open handle) fails
/// the write, and with it the connection, rather than sending a short response.
async fn send_file<W: Out>(wr: &mut W, f: &FileRange) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let end = f.position + f.len as u64;
    let short = || {
        Error::new(
            ErrorKind::UnexpectedEof,
            "segment ended inside a fetch's range",
        )
    };
    let mut pos = f.position;
    if let (Some(tcp), Some(fd)) = (wr.tcp(), f.file.raw_fd()) {
        use std::os::fd::AsRawFd;
        let mut off = libc::off_t::try_from(f.position).map_err(|_| short())?;
        loop {
            if off as u64 >= end {
                return Ok(());
            }
            tcp.writable().await?;
            let left = (end - off as u64) as usize;
            let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
                // SAFETY: both descriptors are open for the call (the socket is borrowed, the
                // file held by `f`); the kernel writes only `off`, a live local.
                let n = unsafe { libc::sendfile(tcp.as_raw_fd(), fd, &mut off, left) };
                if n < 0 {
                    Err(Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match sent {
                Ok(0) => return Err(short()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                // A file system without sendfile (some FUSE and overlay ones): before anything
                // went out the range can still be copied instead, as Kafka's transferTo does.
                Err(e)
                    if off as u64 == f.position
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                        ) =>
                {
                    tracing::debug!(error = %e, "sendfile refused; copying the range");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        pos = off as u64;
    }
    while pos < end {
        let buf = f.read_part((pos - f.position) as usize, 1 << 20)?;
        if buf.is_empty() {
            return Err(short());
        }
        wr.write_all(&buf).await?;
        pos += buf.len() as u64;
    }
    Ok(())
}

/// Writes all of `bufs`, `MAX_IOVECS` at a time.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bufs: &[&[u8]],
) -> std::io::Result<()> {
    if !wr.is_write_vectored() {
        for b in bufs {
            wr.write_all(b).await?;
        }
        return Ok(());
    }
    let bufs: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
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
    use super::{write_pieces, Out};
    use crate::protocol::pieces::{FileRange, Piece};
    use bytes::Bytes;
    use std::io::IoSlice;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;
    use tokio::io::AsyncWrite;

    /// A writer that takes at most `step` bytes per call, vectored, as a busy socket does.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl Out for Trickle {}

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
        let rest: Vec<Piece> = (0..700u32)
            .map(|i| Piece::Mem(Bytes::from(vec![(i % 251) as u8; (i % 7) as usize])))
            .collect();
        let mut want = b"head".to_vec();
        for r in &rest {
            let Piece::Mem(r) = r else { unreachable!() };
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

    /// Pieces in memory and ranges of a real file, some large, go out whole and in order:
    /// through `sendfile` to a real socket, and read and written where there is no socket.
    #[test]
    fn file_ranges_go_out_in_place_with_sendfile_or_without() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let file = Arc::new(crate::disk::File::open_append(&path).unwrap());
        let range = |position: u64, len: usize| {
            Piece::File(FileRange {
                file: file.clone(),
                position,
                len,
            })
        };
        let rest = vec![
            Piece::Mem(Bytes::from_static(b"partition 0")),
            range(10, 2_500_000),
            Piece::Mem(Bytes::from_static(b"partition 1")),
            range(2_999_000, 1_000),
            range(0, 20_000),
        ];
        let mut want = b"head".to_vec();
        want.extend_from_slice(b"partition 0");
        want.extend_from_slice(&content[10..2_500_010]);
        want.extend_from_slice(b"partition 1");
        want.extend_from_slice(&content[2_999_000..]);
        want.extend_from_slice(&content[..20_000]);

        let mut w = Trickle {
            out: Vec::new(),
            step: 100_000,
        };
        rt.block_on(write_pieces(&mut w, b"head", &rest)).unwrap();
        assert!(w.out == want, "without a socket: {} bytes", w.out.len());

        let got = rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let reader = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                got
            });
            let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (_rd, mut wr) = sock.into_split();
            write_pieces(&mut wr, b"head", &rest).await.unwrap();
            drop(wr);
            reader.await.unwrap()
        });
        assert!(got == want, "through sendfile: {} bytes", got.len());

        // A range past the file's end fails the write instead of sending less.
        let short = vec![range(2_990_000, 20_000)];
        let err = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let keep = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
            let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (_rd, mut wr) = sock.into_split();
            let r = write_pieces(&mut wr, b"head", &short).await;
            drop(keep);
            r
        });
        assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// A connection's write half that keeps what was written, and when and how much of it
    /// each flush (one send of answers) had.
    #[derive(Default)]
    struct Recorder {
        out: Vec<u8>,
        flushes: Vec<(std::time::Instant, usize)>,
    }

    impl Out for Recorder {}

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.out.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            let n = self.out.len();
            self.flushes.push((std::time::Instant::now(), n));
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Each response's correlation id and where it ends in `out`.
    fn responses(out: &[u8]) -> Vec<(i32, usize)> {
        let mut at = 0;
        let mut found = Vec::new();
        while at + 8 <= out.len() {
            let len = i32::from_be_bytes(out[at..at + 4].try_into().unwrap()) as usize;
            let corr = i32::from_be_bytes(out[at + 4..at + 8].try_into().unwrap());
            at += 4 + len;
            found.push((corr, at));
        }
        assert_eq!(at, out.len(), "a response was cut short");
        found
    }

    /// Serves `input` (requests back to back, as a pipelining client sends them) on a fresh
    /// broker with topic `t`, keeping answers back at most `hold`; what the connection
    /// wrote.
    fn serve_requests(input: Vec<u8>, hold: Duration) -> (Recorder, std::time::Instant) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(
            crate::broker::Broker::open(crate::broker::BrokerConfig::with_defaults(
                dir.path().to_path_buf(),
            ))
            .unwrap(),
        );
        broker
            .create_topic("t", 1, Default::default(), false)
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut rec = Recorder::default();
        let start = std::time::Instant::now();
        rt.block_on(super::requests(
            &input[..],
            &mut rec,
            "127.0.0.1:1".parse().unwrap(),
            &broker,
            crate::auth::Session::plaintext("127.0.0.1"),
            hold,
        ));
        (rec, start)
    }

    fn api_versions(correlation: i32) -> bytes::BytesMut {
        crate::client::encode_request(
            &kafka_protocol::messages::ApiVersionsRequest::default(),
            3,
            correlation,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn answers_to_pipelined_requests_go_out_together_in_order() {
        let mut input = Vec::new();
        for c in 0..16 {
            input.extend_from_slice(&api_versions(c));
        }
        // (A long hold: a slow test machine must not split them.)
        let (rec, _) = serve_requests(input, Duration::from_secs(30));
        let got: Vec<i32> = responses(&rec.out).iter().map(|r| r.0).collect();
        assert_eq!(got, (0..16).collect::<Vec<_>>());
        // One send for all sixteen: they were all read before the first was answered.
        assert_eq!(rec.flushes.len(), 1, "{:?}", rec.flushes);
    }

    #[test]
    fn answers_are_kept_back_only_so_many_and_so_long() {
        let mut input = Vec::new();
        for c in 0..100 {
            input.extend_from_slice(&api_versions(c));
        }
        let (rec, _) = serve_requests(input.clone(), Duration::from_secs(30));
        let got = responses(&rec.out);
        assert_eq!(got.len(), 100);
        let sends: Vec<usize> = rec.flushes.iter().map(|f| f.1).collect();
        assert_eq!(sends, [got[63].1, got[99].1], "64 at most in one send");
        // With no time to wait, each answer goes out on its own.
        let (rec, _) = serve_requests(input, Duration::ZERO);
        assert_eq!(responses(&rec.out).len(), 100);
        assert_eq!(rec.flushes.len(), 100);
    }

    #[test]
    fn answers_before_a_bad_request_still_go_out() {
        let mut input = Vec::new();
        for c in 0..3 {
            input.extend_from_slice(&api_versions(c));
        }
        // API key 9999 exists in no Kafka: the connection is closed at it.
        let mut bad = api_versions(3);
        bad[4..6].copy_from_slice(&9999i16.to_be_bytes());
        input.extend_from_slice(&bad);
        input.extend_from_slice(&api_versions(4));
        let (rec, _) = serve_requests(input, Duration::from_secs(30));
        let got: Vec<i32> = responses(&rec.out).iter().map(|r| r.0).collect();
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn an_answer_is_not_held_back_by_a_request_that_waits() {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{FetchRequest, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let fetch = FetchRequest::default()
            .with_max_wait_ms(1500)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let mut input = api_versions(1).to_vec();
        input.extend_from_slice(&crate::client::encode_request(&fetch, 12, 2, "test").unwrap());
        input.extend_from_slice(&api_versions(3));
        let (rec, start) = serve_requests(input, Duration::from_secs(30));
        let got = responses(&rec.out);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
        // The first answer went out on its own, before the fetch's long poll (on an empty
        // partition: the whole 1.5 s) was over; the other two after it.
        let (first_at, first_len) = rec.flushes[0];
        assert_eq!(first_len, got[0].1);
        assert!(first_at - start < std::time::Duration::from_millis(1000));
        let (last_at, last_len) = *rec.flushes.last().unwrap();
        assert_eq!(last_len, rec.out.len());
        assert!(last_at - start >= std::time::Duration::from_millis(1400));
    }
}
