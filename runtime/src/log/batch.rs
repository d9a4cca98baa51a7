//! The v2 record batch header (magic 2), read and patched without touching the records.
//!
//! The broker stores batches exactly as producers compressed them; all it needs from a batch is
//! its header, so this module never decompresses. Layout (big-endian), from the Kafka spec:
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 (CRC32C of bytes 21..end) | 21 attributes i16 | 23 lastOffsetDelta i32
//! 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16
//! 53 baseSequence i32 | 57 recordsCount i32 | 61 records...
//! ```
//!
//! Invariant: `baseOffset` and `partitionLeaderEpoch` sit outside the CRC, which is why the
//! broker can assign offsets by rewriting the first 16 bytes and nothing else.

use thiserror::Error;

/// Bytes before the records in a v2 batch.
pub const HEADER_LEN: usize = 61;
/// The prefix (baseOffset + batchLength) that frames every batch.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// Why a batch was refused; each maps to one Kafka error code in the protocol layer.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    #[error("batch is truncated: {have} bytes where the header needs {need}")]
    Truncated { have: usize, need: usize },
    #[error("unsupported record batch magic {0} (only v2 batches are accepted)")]
    UnsupportedMagic(i8),
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("batch header is inconsistent: {0}")]
    Invalid(&'static str),
}

/// The fields of a batch header the broker acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, framing included.
    pub size: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    pub fn log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }
    /// KIP-534: when the cleaner may drop this batch's tombstones or transaction marker. It
    /// stamps the time in the base timestamp (record timestamps stay right: they are deltas
    /// from it) and flags it in the attributes.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_FLAG != 0).then_some(self.base_timestamp)
    }
}

/// The attribute bit that says the base timestamp is a delete horizon (KIP-534).
pub const DELETE_HORIZON_FLAG: i16 = 0x40;

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads the total size (framing included) of the batch starting at `b`, from its first 12
/// bytes. `None` if fewer than 12 bytes are present or the length is impossible.
pub fn framed_size(b: &[u8]) -> Option<usize> {
    if b.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(b, 8);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return None;
    }
    Some(LOG_OVERHEAD + len as usize)
}

/// The headers of the batches framed one after another in `b`, each with where it starts, up
/// to the first that cannot be parsed. No CRC is checked: these are cheap walks over a
/// produce's batches, which the append then validates in full.
pub fn headers(b: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let h = parse_header(b.get(at..)?).ok()?;
        let pos = at;
        at += h.size;
        Some((pos, h))
    })
}

/// Parses the header of the batch at the start of `b` without checking the CRC.
/// `b` may extend past the batch; it must hold at least the header.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader, BatchError> {
    if b.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            have: b.len(),
            need: HEADER_LEN,
        });
    }
    let magic = b[16] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let size = framed_size(b).ok_or(BatchError::Invalid("batch length below header size"))?;
    let h = BatchHeader {
        base_offset: be_i64(b, 0),
        size,
        attributes: be_i16(b, 21),
        last_offset_delta: be_i32(b, 23),
        base_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        producer_id: be_i64(b, 43),
        producer_epoch: be_i16(b, 51),
        base_sequence: be_i32(b, 53),
        records_count: be_i32(b, 57),
    };
    if h.records_count < 0 || h.last_offset_delta < 0 {
        return Err(BatchError::Invalid("negative record count or offset delta"));
    }
    // Offsets past the batch are computed everywhere as last offset + 1: a header whose base
    // offset leaves no room for that (only a damaged file or a hostile client writes one)
    // is refused here rather than overflowing there.
    if h.base_offset
        .checked_add(i64::from(h.last_offset_delta) + 1)
        .is_none()
    {
        return Err(BatchError::Invalid(
            "base offset too large for the batch's offsets",
        ));
    }
    if !h.is_control() && h.records_count == 0 {
        return Err(BatchError::Invalid("batch holds no records"));
    }
    // A compacted batch keeps its last offset delta with fewer records; more records than
    // offsets is never valid. (Producers' batches must match exactly: `split_batches`.)
    if h.records_count > 0 && i64::from(h.records_count) > i64::from(h.last_offset_delta) + 1 {
        return Err(BatchError::Invalid("more records than the batch's offsets"));
    }
    if h.compression() > 4 {
        return Err(BatchError::Invalid("unknown compression codec"));
    }
    Ok(h)
}

/// Parses and fully validates the single batch that `b` holds exactly (CRC included).
pub fn validate(b: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = parse_header(b)?;
    if h.size != b.len() {
        return Err(BatchError::Truncated {
            have: b.len(),
            need: h.size,
        });
    }
    let stored = be_i32(b, 17) as u32;
    let computed = crc32c::crc32c(&b[CRC_START..]);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(h)
}

/// Walks the headers of whole batches read from the log: the offset after the last one and
/// the number of records they hold. `None` when `b` starts with no whole batch header.
pub fn span(b: &[u8]) -> Option<(i64, u64)> {
    let mut at = 0;
    let mut end = None;
    let mut records = 0u64;
    while let Ok(h) = parse_header(&b[at..]) {
        end = Some(h.last_offset() + 1);
        records += h.records_count.max(0) as u64;
        at += h.size;
        if at >= b.len() {
            break;
        }
    }
    end.map(|e| (e, records))
}

/// The whole batches of `b` that start below `offset` (read_committed readers get nothing
/// from the last stable offset on, which is always a batch boundary).
pub fn before_offset(b: &[u8], offset: i64) -> usize {
    let mut at = 0;
    while let Ok(h) = parse_header(&b[at..]) {
        if h.base_offset >= offset || at + h.size > b.len() {
            break;
        }
        at += h.size;
    }
    at
}

/// Splits a produce request's `records` field into its batches, validating each one.
pub fn split_batches(mut b: &[u8]) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while !b.is_empty() {
        let size = framed_size(b).ok_or(BatchError::Truncated {
            have: b.len(),
            need: HEADER_LEN,
        })?;
        if size > b.len() {
            return Err(BatchError::Truncated {
                have: b.len(),
                need: size,
            });
        }
        let h = validate(&b[..size])?;
        // Only compaction leaves offsets without records; a producer's batch holds one record
        // per offset (Kafka refuses it otherwise too).
        if h.records_count > 0 && h.last_offset_delta != h.records_count - 1 {
            return Err(BatchError::Invalid(
                "last offset delta does not match record count",
            ));
        }
        out.push((pos, h));
        pos += size;
        b = &b[size..];
    }
    Ok(out)
}

/// The 16 bytes the broker rewrites when it appends a batch: its base offset, its length
/// (unchanged) and the partition leader epoch.
pub fn patched_prefix(original: &[u8], base_offset: i64, leader_epoch: i32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&base_offset.to_be_bytes());
    p[8..12].copy_from_slice(&original[8..12]);
    p[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    p
}

/// Marks a whole, valid batch as stamped with the broker's clock (`LogAppendTime`): sets the
/// timestamp-type bit and the max timestamp, which every record then reports, and re-seals the
/// CRC. Caller guarantees `b` is exactly one batch that passed [`validate`].
pub fn stamp_log_append_time(b: &mut [u8], now_ms: i64) {
    let attrs = i16::from_be_bytes([b[21], b[22]]) | 0x08;
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    b[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builds valid uncompressed batches for the log's own tests.
    use super::*;

    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    /// An uncompressed batch of `values`, all stamped `ts`.
    pub fn batch(values: &[&[u8]], ts: i64) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut r = Vec::new();
            r.push(0); // attributes
            varint(&mut r, 0); // timestamp delta
            varint(&mut r, i as i64); // offset delta
            varint(&mut r, -1); // null key
            varint(&mut r, v.len() as i64);
            r.extend_from_slice(v);
            varint(&mut r, 0); // headers
            varint(&mut records, r.len() as i64);
            records.extend_from_slice(&r);
        }
        let mut b = Vec::with_capacity(HEADER_LEN + records.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]); // crc, filled below
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(values.len() as i32 - 1).to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(values.len() as i32).to_be_bytes());
        b.extend_from_slice(&records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testing::batch;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_batch_parses() {
        let b = batch(&[b"a", b"bc"], 42);
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.max_timestamp, 42);
        assert_eq!(h.size, b.len());
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut b = batch(&[b"hello"], 1);
        let last = b.len() - 2;
        b[last] ^= 0xff;
        assert!(matches!(validate(&b), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn offset_patch_keeps_crc_valid() {
        let b = batch(&[b"x"], 1);
        let mut patched = patched_prefix(&b, 1234, 7).to_vec();
        patched.extend_from_slice(&b[16..]);
        let h = validate(&patched).unwrap();
        assert_eq!(h.base_offset, 1234);
    }

    #[test]
    fn header_walk_stops_at_the_first_unparsable_batch() {
        let (a, b) = (batch(&[b"a"], 1), batch(&[b"bc", b"d"], 2));
        let mut all = [a.clone(), b.clone()].concat();
        let got: Vec<(usize, i32)> = headers(&all).map(|(p, h)| (p, h.records_count)).collect();
        assert_eq!(got, vec![(0, 1), (a.len(), 2)]);
        // A v1 batch in the middle ends the walk; so does a header cut short.
        all.extend_from_slice(&a);
        all[a.len() + 16] = 1;
        assert_eq!(headers(&all).count(), 1);
        assert_eq!(headers(&a[..HEADER_LEN - 1]).count(), 0);
    }

    proptest! {
        #[test]
        fn header_walk_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = headers(&data).count();
        }

        #[test]
        fn split_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = split_batches(&data);
        }

        #[test]
        fn split_roundtrips_concatenated_batches(
            vals in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)
        ) {
            let mut all = Vec::new();
            for v in &vals {
                all.extend_from_slice(&batch(&[v], 5));
            }
            let got = split_batches(&all).unwrap();
            prop_assert_eq!(got.len(), vals.len());
        }
    }
}
