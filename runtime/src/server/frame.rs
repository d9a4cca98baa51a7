//! Length-prefixed request framing. An incomplete frame is the normal state between reads,
//! not an error; the buffer grows with the bytes that actually arrive, never with a length
//! the peer merely claims.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request accepted (Kafka's `socket.request.max.bytes` default, 100 MiB).
pub const MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;
/// The smallest request: api key, api version, correlation id.
const MIN_REQUEST_BYTES: usize = 8;
/// Most we grow the buffer by per read, so a huge claimed length costs nothing until sent.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("request length {0} is over {1} or shorter than a request header")]
    BadLength(i64, usize),
    #[error("connection closed mid-request")]
    Truncated,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    min: usize,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(8 * 1024),
            min: MIN_REQUEST_BYTES,
            max,
        }
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
    pub async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(f) = self.parse()? {
                return Ok(Some(f));
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
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
    async fn eof_mid_frame_is_truncation() {
        let data: &[u8] = &[0, 0, 0, 20, 1, 2];
        let mut r = FrameReader::new(data, MAX_REQUEST_BYTES);
        assert!(matches!(r.next().await, Err(FrameError::Truncated)));
    }
}
