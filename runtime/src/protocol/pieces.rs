//! Fetch responses encoded without copying their records.
//!
//! A fetch answer is mostly records, already in memory as the `Bytes` the segment reads
//! returned. Encoding it into one buffer copied them once more, into a fresh allocation as
//! large as the response (tens of MB with many partitions): the kernel then had to fault in
//! and zero every page of it on every fetch, which cost a third of the broker's CPU when
//! consumers read 64 partitions at once. Here everything but the records is encoded into
//! small buffers, and each partition's records stay the `Bytes` they were: the answer is a
//! list of pieces the connection writes one after the other.
//!
//! On a plaintext connection a partition's records need not be in memory at all: the fetch
//! hands the encoder a [`placeholder`] of their length, and the piece becomes the file range
//! they are in, which the connection sends with `sendfile` (as Kafka does): the bytes go from
//! the page cache to the socket without the broker copying them.

use std::collections::VecDeque;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a piece of its own costs a write call.
pub const MIN_PIECE: usize = 16 * 1024;

/// The largest file range one piece may stand for.
pub const MAX_FILE_PIECE: usize = 64 << 20;

/// Never read: only its address and a length reach the encoder. Zeroed, so it lives in .bss
/// and costs no memory.
static PLACEHOLDER: [u8; MAX_FILE_PIECE] = [0; MAX_FILE_PIECE];

/// Bytes that stand in for `len` bytes of a file range while a response is encoded
/// (`MIN_PIECE..=MAX_FILE_PIECE`, or [`Pieces`] would not tell them from records).
pub fn placeholder(len: usize) -> Bytes {
    Bytes::from_static(&PLACEHOLDER[..len.min(MAX_FILE_PIECE)])
}

pub use crate::disk::FileRange;

/// One piece of an answer, in the order it is written.
#[derive(Clone)]
pub enum Piece {
    Mem(Bytes),
    File(FileRange),
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Mem(b) => b.len(),
            Piece::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in the broker's memory (a file range holds none).
    pub fn in_memory(&self) -> usize {
        match self {
            Piece::Mem(b) => b.len(),
            Piece::File(_) => 0,
        }
    }

    /// Appends the piece's bytes (reading a file range) to `out`.
    pub fn append_to(&self, out: &mut BytesMut) -> std::io::Result<()> {
        match self {
            Piece::Mem(b) => out.extend_from_slice(b),
            Piece::File(f) => out.extend_from_slice(&f.read()?),
        }
        Ok(())
    }
}

/// An encoding target that keeps the given record sets by reference. The encoder hands
/// `put_slice` the very bytes of each `Bytes` it encodes, so a slice is known as one of them
/// by its address and length.
pub struct Pieces {
    cur: BytesMut,
    done: Vec<Piece>,
    done_len: usize,
    records: Vec<Bytes>,
    /// The file ranges the placeholders stand for, in the order they are encoded.
    files: VecDeque<FileRange>,
    /// A placeholder met with no file range of its length to take its place.
    unmatched: bool,
}

/// A placeholder reached the encoder with no file range to stand for.
#[derive(Debug, thiserror::Error)]
#[error("a placeholder of {0} bytes had no file range to stand for")]
pub struct Unmatched(usize);

impl Pieces {
    /// `records`: the record sets the message holds (cheap clones); `files`: the ranges its
    /// placeholders stand for, in message order.
    pub fn new(records: Vec<Bytes>, files: Vec<FileRange>) -> Pieces {
        Pieces {
            cur: BytesMut::with_capacity(4096),
            done: Vec::new(),
            done_len: 0,
            records,
            files: files.into(),
            unmatched: false,
        }
    }

    /// Every piece, in order; the first holds at least what was written before the first
    /// record set kept by reference (the length prefix and header, at least). An error if a
    /// placeholder was not replaced: its zeros must never reach a client.
    pub fn finish(mut self) -> Result<(BytesMut, Vec<Piece>), Unmatched> {
        if self.unmatched || !self.files.is_empty() {
            return Err(Unmatched(self.files.front().map_or(0, |f| f.len)));
        }
        self.flush();
        let mut done = self.done.into_iter();
        let head = match done.next() {
            // The encoded header: small, copied so that it can be patched.
            Some(Piece::Mem(b)) => BytesMut::from(&b[..]),
            Some(first) => {
                return Ok((
                    BytesMut::new(),
                    std::iter::once(first).chain(done).collect(),
                ))
            }
            None => BytesMut::new(),
        };
        Ok((head, done.collect()))
    }

    fn flush(&mut self) {
        if !self.cur.is_empty() {
            self.done_len += self.cur.len();
            self.done.push(Piece::Mem(self.cur.split().freeze()));
        }
    }
}

// SAFETY: every method forwards to `cur`, a `BytesMut`, which upholds `BufMut`'s contract;
// `put_slice` either forwards too or appends an existing `Bytes` to the finished pieces
// without touching `cur`'s memory.
unsafe impl BufMut for Pieces {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut()`, which is `cur`'s.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= MIN_PIECE {
            if src.as_ptr() == PLACEHOLDER.as_ptr() {
                match self.files.pop_front() {
                    Some(f) if f.len == src.len() => {
                        self.flush();
                        self.done_len += f.len;
                        self.done.push(Piece::File(f));
                    }
                    _ => self.unmatched = true,
                }
                return;
            }
            let same = |b: &&Bytes| b.as_ptr() == src.as_ptr() && b.len() == src.len();
            if let Some(b) = self.records.iter().find(same).cloned() {
                self.flush();
                self.done_len += b.len();
                self.done.push(Piece::Mem(b));
                return;
            }
        }
        self.cur.put_slice(src);
    }
}

impl ByteBufMut for Pieces {
    fn offset(&self) -> usize {
        self.done_len + self.cur.len()
    }

    /// Only within what is not yet a finished piece; the messages encoded here (fetch
    /// responses) never seek back.
    fn seek(&mut self, offset: usize) {
        self.cur.resize(offset.saturating_sub(self.done_len), 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let start = r.start.saturating_sub(self.done_len).min(self.cur.len());
        let end = r
            .end
            .saturating_sub(self.done_len)
            .clamp(start, self.cur.len());
        &mut self.cur[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::File;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::Encodable;
    use std::sync::Arc;

    fn response(parts: Vec<PartitionData>) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName::from(
                kafka_protocol::protocol::StrBytes::from_static_str("t"),
            ))
            .with_partitions(parts)])
    }

    fn part(i: i32, r: &Bytes) -> PartitionData {
        PartitionData::default()
            .with_partition_index(i)
            .with_records(Some(r.clone()))
    }

    /// The pieces, joined, are exactly what encoding into one buffer gives, with a file
    /// range's bytes where its placeholder was; the large record sets are not copied and the
    /// file range is not read.
    #[test]
    fn pieces_join_to_the_plain_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.log");
        let in_file: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &in_file).unwrap();
        let file = Arc::new(File::open_append(&path).unwrap());
        let range = FileRange {
            file,
            position: 1_000,
            len: 40_000,
        };
        let from_file = Bytes::copy_from_slice(&in_file[1_000..41_000]);

        let big = Bytes::from(vec![7u8; 100_000]);
        let small = Bytes::from(vec![9u8; 100]);
        let plain_resp = response(vec![
            part(0, &big),
            part(1, &small),
            part(2, &from_file),
            part(3, &big),
        ]);
        let piece_resp = response(vec![
            part(0, &big),
            part(1, &small),
            part(2, &placeholder(range.len)),
            part(3, &big),
        ]);
        for version in [4i16, 11, 12, 16] {
            let mut plain = BytesMut::new();
            plain_resp.encode(&mut plain, version).unwrap();
            let mut p = Pieces::new(vec![big.clone(), small.clone()], vec![range.clone()]);
            piece_resp.encode(&mut p, version).unwrap();
            let (mut joined, rest) = p.finish().unwrap();
            for piece in &rest {
                piece.append_to(&mut joined).unwrap();
            }
            assert!(joined == plain, "v{version}");
            let by_ref = rest
                .iter()
                .filter(|b| matches!(b, Piece::Mem(b) if b.as_ptr() == big.as_ptr()))
                .count();
            assert_eq!(
                by_ref, 2,
                "v{version}: both big record sets kept by reference"
            );
            let files = rest.iter().filter(|b| matches!(b, Piece::File(_))).count();
            assert_eq!(files, 1, "v{version}: the file range stays a file range");
        }
    }

    /// A placeholder without its file range (or of another length) is an error, never zeros
    /// sent to a client.
    #[test]
    fn an_unmatched_placeholder_fails_the_encoding() {
        let resp = response(vec![part(0, &placeholder(MIN_PIECE))]);
        let mut p = Pieces::new(Vec::new(), Vec::new());
        resp.encode(&mut p, 12).unwrap();
        assert!(p.finish().is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.log");
        std::fs::write(&path, vec![1u8; 2 * MIN_PIECE]).unwrap();
        let range = FileRange {
            file: Arc::new(File::open_append(&path).unwrap()),
            position: 0,
            len: MIN_PIECE + 1,
        };
        let mut p = Pieces::new(Vec::new(), vec![range]);
        resp.encode(&mut p, 12).unwrap();
        assert!(p.finish().is_err(), "a range of another length");
    }
}
