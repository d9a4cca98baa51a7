//! Length-prefixed request framing. An incomplete frame is the normal state between reads,
//! not an error; the buffer grows with the bytes that actually arrive, never with a length
//! the peer merely claims. A large frame reserves its length from the broker's memory pool
//! before more of it is read, and a frame that has begun must be whole within
//! [`FRAME_DEADLINE`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::limits::memory::{Held, MemoryPool, SMALL_FRAME};

/// Largest request accepted (Kafka's `socket.request.max.bytes` default, 100 MiB).
pub const MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;
/// The smallest request: api key, api version, correlation id.
const MIN_REQUEST_BYTES: usize = 8;
/// Most we grow the buffer by per read, so a huge claimed length costs nothing until sent.
const READ_CHUNK: usize = 64 * 1024;
/// A request must arrive whole within this long of its first bytes (100 MiB at 1.7 MB/s).
/// Its reservation is held meanwhile: without a deadline, a peer that stops mid-request
/// would keep it forever.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("request length {0} is over {1} or shorter than a request header")]
    BadLength(i64, usize),
    #[error("connection closed mid-request")]
    Truncated,
    #[error("request not complete {0:?} after it began")]
    TooSlow(Duration),
    #[error("no request for {0:?}")]
    Idle(Duration),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    min: usize,
    max: usize,
    pool: Option<Arc<MemoryPool>>,
    /// What the frame being read (or the last one returned) holds from `pool`.
    held: Held,
    deadline: Duration,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(8 * 1024),
            min: MIN_REQUEST_BYTES,
            max,
            pool: None,
            held: Held::default(),
            deadline: FRAME_DEADLINE,
        }
    }

    /// Large frames reserve their length from `pool` before the rest of them is read.
    pub fn with_pool(mut self, pool: Arc<MemoryPool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// How long a frame may take from its first byte to its last, from the next frame on.
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    /// The reservation of the frame [`next`](Self::next) returned last, to be dropped once
    /// the request is handled and answered.
    pub fn take_held(&mut self) -> Held {
        std::mem::take(&mut self.held)
    }

    /// The length the frame being read claims, once its prefix is in.
    fn claimed(&self) -> Option<usize> {
        let b = self.buf.get(..4)?;
        usize::try_from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok()
    }

    /// The largest frame accepted from now on (smaller before a SASL connection has
    /// authenticated).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Whether the next frame is a bare SASL token (after SaslHandshake v0), which may be
    /// shorter than a request header.
    pub fn set_bare_token(&mut self, bare: bool) {
        self.min = if bare { 0 } else { MIN_REQUEST_BYTES };
    }

    /// Whether a whole, acceptable frame is already buffered, so that the next
    /// [`next_within`](Self::next_within) returns it without reading the socket.
    pub fn frame_ready(&self) -> bool {
        self.claimed()
            .is_some_and(|len| len >= self.min && len <= self.max && self.buf.len() >= 4 + len)
    }

    /// Checks the buffer for a whole frame; `Ok(None)` when more bytes are needed.
    fn parse(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len < self.min as i32 || len as usize > self.max {
            return Err(FrameError::BadLength(i64::from(len), self.max));
        }
        let len = len as usize;
        if self.buf.len() < 4 + len {
            let missing = 4 + len - self.buf.len();
            self.buf.reserve(missing.min(READ_CHUNK));
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// The next request frame (without its length prefix), or `None` at a clean end of stream.
    #[cfg(test)]
    pub async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.next_within(None).await
    }

    /// [`next`](Self::next), failing with [`FrameError::Idle`] if no byte of the frame has
    /// come within `idle`. Only the wait for a frame's first byte counts: once a request
    /// has begun, a slow upload or a wait for the memory pool is the frame deadline's
    /// business, not silence.
    pub async fn next_within(
        &mut self,
        idle: Option<Duration>,
    ) -> Result<Option<Bytes>, FrameError> {
        // The previous frame's reservation, if nobody took it.
        self.held = Held::default();
        // Bytes of the next frame may already be buffered: its clock starts now.
        let mut began = (!self.buf.is_empty()).then(Instant::now);
        loop {
            if let Some(f) = self.parse()? {
                return Ok(Some(f));
            }
            if let (Some(pool), Some(len)) = (&self.pool, self.claimed()) {
                if len > SMALL_FRAME && self.held.bytes() == 0 {
                    let pool = pool.clone();
                    self.held = self.within(began, pool.reserve(len)).await?;
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            let read = match began {
                Some(t) => {
                    tokio::time::timeout_at(t + self.deadline, self.inner.read_buf(&mut self.buf))
                        .await
                        .map_err(|_| FrameError::TooSlow(self.deadline))??
                }
                None => match idle {
                    Some(idle) => tokio::time::timeout(idle, self.inner.read_buf(&mut self.buf))
                        .await
                        .map_err(|_| FrameError::Idle(idle))??,
                    None => self.inner.read_buf(&mut self.buf).await?,
                },
            };
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            began.get_or_insert_with(Instant::now);
        }
    }

    /// Runs `f` within the deadline of the frame that began at `began`.
    async fn within<T>(
        &self,
        began: Option<Instant>,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, FrameError> {
        let start = began.unwrap_or_else(Instant::now);
        tokio::time::timeout_at(start + self.deadline, f)
            .await
            .map_err(|_| FrameError::TooSlow(self.deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn huge_length_is_refused_before_allocating() {
        let data: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut r = FrameReader::new(data, MAX_REQUEST_BYTES);
        assert!(matches!(r.next().await, Err(FrameError::BadLength(..))));
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_joined() {
        let mut data = Vec::new();
        for i in 0..3u8 {
            data.extend_from_slice(&10i32.to_be_bytes());
            data.extend_from_slice(&[i; 10]);
        }
        let (client, server) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut client = client;
            client.write_all(&data).await.unwrap();
        });
        let mut r = FrameReader::new(server, MAX_REQUEST_BYTES);
        for i in 0..3u8 {
            assert_eq!(&r.next().await.unwrap().unwrap()[..], &[i; 10]);
        }
        writer.await.unwrap();
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_large_frame_waits_for_room_in_the_pool() {
        let pool = MemoryPool::new(300 * 1024);
        let big = |n: u8| {
            let mut f = (200i32 * 1024).to_be_bytes().to_vec();
            f.extend(std::iter::repeat_n(n, 200 * 1024));
            f
        };
        let first = big(1);
        let mut a = FrameReader::new(&first[..], MAX_REQUEST_BYTES).with_pool(pool.clone());
        let fa = a.next().await.unwrap().unwrap();
        let held = a.take_held();
        assert_eq!((fa.len(), held.bytes()), (200 * 1024, 200 * 1024));
        // A second large frame does not fit beside the first until it is answered.
        let second = big(2);
        let p = pool.clone();
        let reader = tokio::spawn(async move {
            let mut b = FrameReader::new(&second[..], MAX_REQUEST_BYTES).with_pool(p);
            b.next().await.unwrap().unwrap().len()
        });
        // Small frames need no room.
        let small: &[u8] = &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut c = FrameReader::new(small, MAX_REQUEST_BYTES).with_pool(pool.clone());
        assert_eq!(c.next().await.unwrap().unwrap().len(), 8);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!reader.is_finished(), "waits for room");
        drop(held);
        assert_eq!(reader.await.unwrap(), 200 * 1024);
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn a_frame_that_stalls_is_cut_off() {
        let (mut client, server) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        client.write_all(&[0, 0, 0, 20, 1, 2, 3]).await.unwrap();
        let mut r = FrameReader::new(server, MAX_REQUEST_BYTES);
        r.set_deadline(std::time::Duration::from_millis(100));
        assert!(matches!(r.next().await, Err(FrameError::TooSlow(_))));
        drop(client);
    }

    #[tokio::test]
    async fn only_the_wait_for_a_first_byte_is_idle() {
        use tokio::io::AsyncWriteExt;
        let idle = std::time::Duration::from_millis(150);
        let (mut client, server) = tokio::io::duplex(1024);
        let mut r = FrameReader::new(server, MAX_REQUEST_BYTES);
        // A request uploaded slowly, over three times the idle limit, but begun within it.
        let writer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            for b in [0u8, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8] {
                client.write_all(&[b]).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(40)).await;
            }
            client
        });
        assert_eq!(r.next_within(Some(idle)).await.unwrap().unwrap().len(), 8);
        let _client = writer.await.unwrap();
        // Then silence.
        assert!(matches!(
            r.next_within(Some(idle)).await,
            Err(FrameError::Idle(d)) if d == idle
        ));
    }

    #[tokio::test]
    async fn eof_mid_frame_is_truncation() {
        let data: &[u8] = &[0, 0, 0, 20, 1, 2];
        let mut r = FrameReader::new(data, MAX_REQUEST_BYTES);
        assert!(matches!(r.next().await, Err(FrameError::Truncated)));
    }
}
