//! Message sets: the record formats before v2 batches (magic 0, Kafka 0.8; magic 1, Kafka
//! 0.10, which added timestamps). Kafka 4 stopped reading and writing them (KIP-896); Kafka
//! 3.9 still converted them, and clients of that age (Debian's Sarama, old librdkafka) send
//! and expect them. The log stores only v2 batches, so old producers are converted up on the
//! way in and old consumers' fetches are converted down on the way out.
//!
//! A message set is messages back to back, with no count:
//!
//! ```text
//! offset i64 | size i32 | crc u32 | magic i8 | attributes i8 | [timestamp i64, magic 1]
//!            | key bytes (i32 length, -1 null) | value bytes
//! ```
//!
//! The crc (CRC-32, not v2's CRC-32C) covers magic to the end of the value. A compressed set
//! is one wrapper message whose value is the compressed inner set (attributes' low 3 bits:
//! 1 gzip, 2 snappy, 3 lz4); bit 3 of a magic-1 message marks log-append time.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{decompress, encode, Compression, Record, RecordsError};

const CODEC_MASK: i8 = 0x07;
const LOG_APPEND_TIME: i8 = 0x08;
/// Offset, size, crc, magic, attributes: the least a message can be (magic 0, both byte
/// arrays' lengths included).
const MIN_MESSAGE: usize = 8 + 4 + 4 + 1 + 1 + 4 + 4;

fn bad(what: &str) -> RecordsError {
    RecordsError::Decode(format!("message set: {what}"))
}

fn bytes_field(b: &mut Bytes) -> Result<Option<Bytes>, RecordsError> {
    if b.remaining() < 4 {
        return Err(bad("truncated length"));
    }
    let n = b.get_i32();
    if n < 0 {
        return Ok(None);
    }
    let n = n as usize;
    if b.remaining() < n {
        return Err(bad("length beyond the message"));
    }
    Ok(Some(b.split_to(n)))
}

/// What a produced message set becomes: the records (timestamps filled in) and the codec of
/// its wrapper, which the v2 batch keeps.
#[derive(Debug)]
pub struct UpConverted {
    pub records: Vec<Record>,
    pub compression: Compression,
}

/// Reads a produced message set of magic 0 or 1. Records of magic 0, which carry no
/// timestamp, get `now_ms`, as do log-append-time ones. Every crc is checked; any flaw
/// fails the whole set (Kafka answers CORRUPT_MESSAGE for it).
pub fn read_message_set(set: Bytes, now_ms: i64) -> Result<UpConverted, RecordsError> {
    let mut out = UpConverted {
        records: Vec::new(),
        compression: Compression::None,
    };
    read_into(set, now_ms, &mut out, true)?;
    if out.records.is_empty() {
        return Err(bad("no messages"));
    }
    Ok(out)
}

fn read_into(
    mut set: Bytes,
    now_ms: i64,
    out: &mut UpConverted,
    outer: bool,
) -> Result<(), RecordsError> {
    while set.has_remaining() {
        if set.remaining() < 12 {
            return Err(bad("truncated message header"));
        }
        let _offset = set.get_i64();
        let size = set.get_i32();
        let size = usize::try_from(size).map_err(|_| bad("negative size"))?;
        if size < MIN_MESSAGE - 12 || set.remaining() < size {
            return Err(bad("message size beyond the set"));
        }
        let mut m = set.split_to(size);
        let crc = m.get_u32();
        if crc32fast::hash(&m) != crc {
            return Err(bad("crc mismatch"));
        }
        let magic = m.get_i8();
        let attributes = m.get_i8();
        let timestamp = match magic {
            0 => now_ms,
            1 => {
                if m.remaining() < 8 {
                    return Err(bad("truncated timestamp"));
                }
                let t = m.get_i64();
                if attributes & LOG_APPEND_TIME != 0 || t < 0 {
                    now_ms
                } else {
                    t
                }
            }
            _ => return Err(bad("magic is neither 0 nor 1")),
        };
        let key = bytes_field(&mut m)?;
        let value = bytes_field(&mut m)?;
        let codec = match attributes & CODEC_MASK {
            0 => None,
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            _ => return Err(bad("unknown codec")),
        };
        match codec {
            None => out.records.push(Record {
                offset: out.records.len() as i64,
                timestamp,
                key,
                value,
                headers: Vec::new(),
            }),
            // Only the producer's outer messages may wrap others (Kafka refuses nesting).
            Some(c) if outer => {
                let mut inner = value.ok_or_else(|| bad("compressed message without a value"))?;
                let inner = decompress(&mut inner, c)
                    .map_err(|e| bad(&format!("cannot decompress: {e:#}")))?;
                out.compression = c;
                read_into(inner, now_ms, out, false)?;
            }
            Some(_) => return Err(bad("nested compressed message")),
        }
    }
    Ok(())
}

/// A produced message set as one v2 batch (offsets from 0; the log assigns the real ones).
pub fn up_convert(set: Bytes, now_ms: i64) -> Result<Bytes, RecordsError> {
    let u = read_message_set(set, now_ms)?;
    encode(&u.records, u.compression, None, 0)
}

/// Stored v2 batches as a message set of `magic` (0 or 1) for a consumer that reads nothing
/// newer, as Kafka 3.9 did for Fetch v0-3: uncompressed, control batches left out, headers
/// dropped (they have no place), each message at its own offset. A trailing partial batch
/// (fetch data may end with one) is left out; a batch that cannot be read ends the set there,
/// so the consumer gets what precedes it and asks again from there.
pub fn down_convert(batches: Bytes, magic: i8) -> Bytes {
    let mut out = BytesMut::new();
    let Ok(decoded) = super::decode_each(batches) else {
        return out.freeze();
    };
    for b in decoded {
        if b.control {
            continue;
        }
        let Ok(records) = b.records else { break };
        for r in records {
            write_message(&mut out, &r, magic);
        }
    }
    out.freeze()
}

fn write_message(out: &mut BytesMut, r: &Record, magic: i8) {
    out.put_i64(r.offset);
    let size_at = out.len();
    out.put_i32(0);
    let crc_at = out.len();
    out.put_u32(0);
    out.put_i8(magic);
    out.put_i8(0);
    if magic >= 1 {
        out.put_i64(r.timestamp);
    }
    for field in [&r.key, &r.value] {
        match field {
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            None => out.put_i32(-1),
        }
    }
    let crc = crc32fast::hash(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    let size = (out.len() - crc_at) as i32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
}

/// A message set holding `records` as one message each, or, with a codec, wrapped in one
/// compressed message: what an old producer sends. For tests and the fuzz target's seeds.
pub fn encode_message_set(
    records: &[Record],
    magic: i8,
    compression: Compression,
) -> Result<Bytes, RecordsError> {
    let mut inner = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        let r = Record {
            offset: i as i64,
            ..r.clone()
        };
        write_message(&mut inner, &r, magic);
    }
    let attr = match compression {
        Compression::None => return Ok(inner.freeze()),
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => return Err(RecordsError::Encode("zstd needs v2 batches".into())),
    };
    let mut packed = BytesMut::new();
    super::compress(&mut inner, &mut packed, compression, None)
        .map_err(|e| RecordsError::Encode(format!("{e:#}")))?;
    let wrapper = Record {
        offset: records.len().saturating_sub(1) as i64,
        timestamp: records.last().map_or(0, |r| r.timestamp),
        key: None,
        value: Some(packed.freeze()),
        headers: Vec::new(),
    };
    let mut out = BytesMut::new();
    write_message(&mut out, &wrapper, magic);
    // The attributes byte follows offset, size, crc and magic; the crc is redone over it.
    out[8 + 4 + 4 + 1] = attr;
    let crc = crc32fast::hash(&out[16..]);
    out[12..16].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(i: usize, ts: i64) -> Record {
        Record {
            offset: i as i64,
            timestamp: ts,
            key: (!i.is_multiple_of(3)).then(|| Bytes::from(format!("k{i}"))),
            value: (i % 5 != 4).then(|| Bytes::from(vec![i as u8; i % 40])),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let set = encode_message_set(&[record(1, 5)], 1, Compression::None).unwrap();
        let mut bad = set.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(read_message_set(Bytes::from(bad), 0).is_err());
        assert!(read_message_set(set, 0).is_ok());
    }

    #[test]
    fn magic_zero_records_take_the_brokers_clock() {
        let set = encode_message_set(&[record(1, 5), record(2, 6)], 0, Compression::Gzip).unwrap();
        let u = read_message_set(set, 1234).unwrap();
        assert_eq!(u.compression, Compression::Gzip);
        assert!(u.records.iter().all(|r| r.timestamp == 1234));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for n in 0..64 {
            let b: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            let _ = read_message_set(Bytes::from(b), 0);
        }
        assert!(read_message_set(Bytes::new(), 0).is_err());
    }

    proptest! {
        /// Produced by an old client, stored as v2, fetched by an old client: the same
        /// keys, values and (magic 1) timestamps, at consecutive offsets.
        #[test]
        fn up_then_down_is_the_identity(
            n in 1usize..60,
            magic in 0i8..2,
            codec in 0usize..4,
            ts in 0i64..1 << 40,
        ) {
            let c = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4][codec];
            let records: Vec<Record> = (0..n).map(|i| record(i, ts + i as i64)).collect();
            let set = encode_message_set(&records, magic, c).unwrap();
            let batch = up_convert(set, 7).unwrap();
            let back = read_message_set(down_convert(batch, magic), 7).unwrap();
            prop_assert_eq!(back.records.len(), n);
            for (a, b) in records.iter().zip(&back.records) {
                prop_assert_eq!(&a.key, &b.key);
                prop_assert_eq!(&a.value, &b.value);
                prop_assert_eq!(b.timestamp, if magic == 0 { 7 } else { a.timestamp });
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = read_message_set(Bytes::from(b.clone()), 0);
            let _ = down_convert(Bytes::from(b), 1);
        }
    }
}
