//! Fetch responses encoded without copying their records.
//!
//! A fetch answer is mostly records, already in memory as the `Bytes` the segment reads
//! returned. Encoding it into one buffer copied them once more, into a fresh allocation as
//! large as the response (tens of MB with many partitions): the kernel then had to fault in
//! and zero every page of it on every fetch, which cost a third of the broker's CPU when
//! consumers read 64 partitions at once. Here everything but the records is encoded into
//! small buffers, and each partition's records stay the `Bytes` they were: the answer is a
//! list of pieces the connection writes one after the other.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a piece of its own costs a write call.
const MIN_PIECE: usize = 16 * 1024;

/// An encoding target that keeps the given record sets by reference. The encoder hands
/// `put_slice` the very bytes of each `Bytes` it encodes, so a slice is known as one of them
/// by its address and length.
pub struct Pieces {
    cur: BytesMut,
    done: Vec<Bytes>,
    done_len: usize,
    records: Vec<Bytes>,
}

impl Pieces {
    /// `records`: the record sets the message holds (cheap clones).
    pub fn new(records: Vec<Bytes>) -> Pieces {
        Pieces {
            cur: BytesMut::with_capacity(4096),
            done: Vec::new(),
            done_len: 0,
            records,
        }
    }

    /// Every piece, in order; the first holds at least what was written before the first
    /// record set kept by reference (the length prefix and header, at least).
    pub fn finish(mut self) -> Vec<Bytes> {
        if !self.cur.is_empty() || self.done.is_empty() {
            self.done.push(self.cur.split().freeze());
        }
        self.done
    }

    fn flush(&mut self) {
        if !self.cur.is_empty() {
            self.done_len += self.cur.len();
            self.done.push(self.cur.split().freeze());
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
            let same = |b: &&Bytes| b.as_ptr() == src.as_ptr() && b.len() == src.len();
            if let Some(b) = self.records.iter().find(same).cloned() {
                self.flush();
                self.done_len += b.len();
                self.done.push(b);
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
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::Encodable;

    /// The pieces, joined, are exactly what encoding into one buffer gives, and the large
    /// record sets are not copied.
    #[test]
    fn pieces_join_to_the_plain_encoding() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let small = Bytes::from(vec![9u8; 100]);
        let part = |i: i32, r: &Bytes| {
            PartitionData::default()
                .with_partition_index(i)
                .with_records(Some(r.clone()))
        };
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName::from(
                kafka_protocol::protocol::StrBytes::from_static_str("t"),
            ))
            .with_partitions(vec![part(0, &big), part(1, &small), part(2, &big)])]);
        for version in [4i16, 11, 12, 16] {
            let mut plain = BytesMut::new();
            resp.encode(&mut plain, version).unwrap();
            let mut p = Pieces::new(vec![big.clone(), small.clone()]);
            resp.encode(&mut p, version).unwrap();
            let pieces = p.finish();
            let joined: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(joined, plain.to_vec(), "v{version}");
            let by_ref = pieces.iter().filter(|b| b.as_ptr() == big.as_ptr()).count();
            assert_eq!(
                by_ref, 2,
                "v{version}: both big record sets kept by reference"
            );
        }
    }
}
