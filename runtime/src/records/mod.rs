//! Record-level encoding and decoding of v2 batches, with all four Kafka codecs.
//!
//! The broker's produce and fetch paths never come here: they move batches whole. This is for
//! the places that must see individual records: timestamp lookups, the CLI client, plugins.
//! Codecs are the pure-Rust ones we chose (flate2, snap via kafka-protocol's xerial framing,
//! lz4_flex frames) plus zstd; kafka-protocol's lz4/zstd features would pull other C builds.

use std::io::Read;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Snappy};
pub use kafka_protocol::records::Compression;
use thiserror::Error;

pub mod legacy;

/// Decompressed batches larger than this are refused: a few bytes on the wire must not be able
/// to make the broker allocate gigabytes.
pub const MAX_DECOMPRESSED: usize = 256 << 20;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecordsError {
    #[error("cannot decode record batch: {0}")]
    Decode(String),
    #[error("cannot encode record batch: {0}")]
    Encode(String),
}

fn read_bounded(mut r: impl Read, cap: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    let n = r.by_ref().take(cap as u64 + 1).read_to_end(&mut out)?;
    if n > cap {
        return Err(crate::limits::decompression_refused(cap));
    }
    Ok(Bytes::from(out))
}

fn decompress(buf: &mut Bytes, c: Compression) -> anyhow::Result<Bytes> {
    decompress_capped(buf, c, MAX_DECOMPRESSED)
}

/// [`decompress`], refusing a body that inflates past `cap` (at most [`MAX_DECOMPRESSED`])
/// before more than that is held.
fn decompress_capped(buf: &mut Bytes, c: Compression, cap: usize) -> anyhow::Result<Bytes> {
    let cap = cap.min(MAX_DECOMPRESSED);
    let body = match c {
        Compression::None => std::mem::take(buf),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(&buf[..]), cap)?,
        Compression::Snappy => decompress_snappy(buf)?,
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(&buf[..]), cap)?,
        Compression::Zstd => read_bounded(zstd::stream::read::Decoder::new(&buf[..])?, cap)?,
    };
    // Snappy's blocks are bounded by their ratio to the input, and an uncompressed body by
    // the request: checked after.
    if body.len() > cap {
        return Err(crate::limits::decompression_refused(cap));
    }
    Ok(body)
}

/// The xerial framing Java and other clients wrap snappy blocks in; without it, the data is
/// one raw snappy block (as librdkafka may send).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// A snappy block never expands more than this (its largest copy, 64 bytes, costs 3): a
/// block that claims more is lying, and is refused before anything is allocated for it.
const SNAPPY_MAX_RATIO: usize = 32;

/// Snappy, raw or xerial-framed. Each block's claimed length is checked against its size and
/// what is left of [`MAX_DECOMPRESSED`] before any memory is given to it: a 100-byte batch
/// claiming gigabytes once made the decoder allocate them.
fn decompress_snappy(buf: &[u8]) -> anyhow::Result<Bytes> {
    let mut out: Vec<u8> = Vec::new();
    let block = |b: &[u8], out: &mut Vec<u8>| -> anyhow::Result<()> {
        let claimed = snap::raw::decompress_len(b)?;
        let left = MAX_DECOMPRESSED - out.len();
        if claimed > left {
            return Err(crate::limits::decompression_refused(MAX_DECOMPRESSED));
        }
        if claimed > b.len().saturating_mul(SNAPPY_MAX_RATIO) + 32 {
            anyhow::bail!("snappy block claims {claimed} bytes from {}", b.len());
        }
        let at = out.len();
        out.resize(at + claimed, 0);
        let n = snap::raw::Decoder::new().decompress(b, &mut out[at..])?;
        out.truncate(at + n);
        Ok(())
    };
    if buf.len() < 16 || &buf[..8] != XERIAL_MAGIC {
        block(buf, &mut out)?;
        return Ok(Bytes::from(out));
    }
    // Magic, then version and minimum compatible version (4 bytes each), then blocks, each
    // a 4-byte big-endian length and that many bytes.
    let mut rest = &buf[16..];
    while !rest.is_empty() {
        anyhow::ensure!(rest.len() >= 4, "torn snappy block length");
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        anyhow::ensure!(rest.len() - 4 >= n, "torn snappy block");
        block(&rest[4..4 + n], &mut out)?;
        rest = &rest[4 + n..];
    }
    Ok(Bytes::from(out))
}

/// Compresses `input` into `out` with codec `c`, at `level` where the codec takes one
/// (gzip 1-9, zstd -131072-22; lz4_flex has only its one level, snappy none).
fn compress(
    input: &mut BytesMut,
    out: &mut BytesMut,
    c: Compression,
    level: Option<i32>,
) -> anyhow::Result<()> {
    use std::io::Write;
    match (c, level) {
        (Compression::Gzip, Some(l)) if (1..=9).contains(&l) => {
            let mut e =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(l as u32));
            e.write_all(input)?;
            out.extend_from_slice(&e.finish()?);
            return Ok(());
        }
        (Compression::Zstd, Some(l)) => {
            out.extend_from_slice(&zstd::bulk::compress(input, l)?);
            return Ok(());
        }
        _ => {}
    }
    match c {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => Gzip::compress(out, |b: &mut BytesMut| {
            b.extend_from_slice(input);
            Ok(())
        })?,
        Compression::Snappy => Snappy::compress(out, |b: &mut BytesMut| {
            b.extend_from_slice(input);
            Ok(())
        })?,
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(input)?;
            out.extend_from_slice(&e.finish()?);
        }
        Compression::Zstd => out.extend_from_slice(&zstd::bulk::compress(input, 3)?),
    }
    Ok(())
}

/// One record as clients see it. Header keys may repeat, as Kafka allows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// A cursor over untrusted bytes: every length is checked against what remains before use.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn err(what: &str) -> RecordsError {
        RecordsError::Decode(format!("truncated or malformed {what}"))
    }
    fn varlong(&mut self, what: &str) -> Result<i64, RecordsError> {
        let mut z: u64 = 0;
        for i in 0..10 {
            if self.buf.is_empty() {
                return Err(Self::err(what));
            }
            let b = self.buf[0];
            self.buf.advance(1);
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(Self::err(what))
    }
    fn varint(&mut self, what: &str) -> Result<i32, RecordsError> {
        let v = self.varlong(what)?;
        i32::try_from(v).map_err(|_| Self::err(what))
    }
    fn bytes(&mut self, len: i32, what: &str) -> Result<Option<Bytes>, RecordsError> {
        match len {
            -1 => Ok(None),
            n if n >= 0 && n as usize <= self.buf.len() => Ok(Some(self.buf.split_to(n as usize))),
            _ => Err(Self::err(what)),
        }
    }
}

fn write_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// The codec named by a batch's attributes (their low three bits).
pub(crate) fn codec_of(attributes: i16) -> Result<Compression, RecordsError> {
    Ok(match attributes & 0x07 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        c => {
            return Err(RecordsError::Decode(format!(
                "unknown compression codec {c}"
            )))
        }
    })
}

/// Decodes the records of one whole batch (CRC not checked here; the log did that). Control
/// batches are skipped unless `control`.
fn decode_one(batch: Bytes, out: &mut Vec<Record>, control: bool) -> Result<(), RecordsError> {
    decode_capped(batch, out, control, MAX_DECOMPRESSED).map(|_| ())
}

/// [`decode_one`] with at most `cap` bytes decompressed; returns how many were, and how many
/// of those the records did not take (a producer's batch has none left over).
fn decode_capped(
    batch: Bytes,
    out: &mut Vec<Record>,
    control: bool,
    cap: usize,
) -> Result<(usize, usize), RecordsError> {
    let h =
        crate::log::batch::parse_header(&batch).map_err(|e| RecordsError::Decode(e.to_string()))?;
    if h.is_control() && !control {
        return Ok((0, 0));
    }
    let mut body = batch.slice(crate::log::batch::HEADER_LEN..h.size);
    let body = decompress_capped(&mut body, codec_of(h.attributes)?, cap)
        .map_err(|e| RecordsError::Decode(format!("{e:#}")))?;
    let inflated = body.len();
    // Seven bytes is the smallest possible record: this bounds the count before any reserve.
    let count = h.records_count as usize;
    if count > body.len() / 7 {
        return Err(RecordsError::Decode(format!(
            "batch claims {count} records in {} bytes",
            body.len()
        )));
    }
    out.reserve(count);
    let mut r = Reader { buf: body };
    for _ in 0..count {
        let len = r.varint("record length")?;
        if len < 0 || len as usize > r.buf.len() {
            return Err(Reader::err("record length"));
        }
        let mut rec = Reader {
            buf: r.buf.split_to(len as usize),
        };
        if rec.buf.is_empty() {
            return Err(Reader::err("record attributes"));
        }
        rec.buf.advance(1);
        let ts_delta = rec.varlong("timestamp delta")?;
        let off_delta = rec.varint("offset delta")?;
        let klen = rec.varint("key length")?;
        let key = rec.bytes(klen, "key")?;
        let vlen = rec.varint("value length")?;
        let value = rec.bytes(vlen, "value")?;
        let nh = rec.varint("header count")?;
        if nh < 0 || nh as usize > rec.buf.len() / 2 {
            return Err(Reader::err("header count"));
        }
        let mut headers = Vec::with_capacity(nh as usize);
        for _ in 0..nh {
            let hk = rec.varint("header key length")?;
            let k = rec
                .bytes(hk, "header key")?
                .ok_or_else(|| Reader::err("header key"))?;
            let hv = rec.varint("header value length")?;
            headers.push((k, rec.bytes(hv, "header value")?));
        }
        out.push(Record {
            offset: h.base_offset.wrapping_add(i64::from(off_delta)),
            timestamp: if h.log_append_time() {
                h.max_timestamp
            } else {
                h.base_timestamp.wrapping_add(ts_delta)
            },
            key,
            value,
            headers,
        });
    }
    Ok((inflated, r.buf.len()))
}

/// Reads a zigzag varlong from a stream, with the number of bytes it took.
fn stream_varlong(r: &mut impl Read) -> std::io::Result<(i64, usize)> {
    let mut z: u64 = 0;
    let mut b = [0u8; 1];
    for i in 0..10 {
        r.read_exact(&mut b)?;
        z |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "varint longer than 10 bytes",
    ))
}

/// What the broker looks at in a record it is asked to store: see [`peek_records`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    /// The record's create time (the batch's base timestamp plus the record's delta).
    pub timestamp: i64,
    pub keyless: bool,
}

/// The indexes of the records without a key in one whole batch `b` (a compacted topic refuses
/// them). See [`peek_records`].
pub fn keyless_records(b: &[u8], left: &mut usize) -> Result<Vec<i32>, RecordsError> {
    let mut keyless = Vec::new();
    peek_records(b, left, |i, p| {
        if p.keyless {
            keyless.push(i)
        }
    })?;
    Ok(keyless)
}

/// Calls `each` with the index and the [`Peek`] of every record of one whole batch `b`,
/// found while decompressing as a stream: only a record's first bytes are looked at and the
/// rest is skipped, so a batch that inflates to hundreds of megabytes costs CPU but no
/// memory. At most `left` decompressed bytes are read (what is left of the request's
/// allowance, reduced by what this batch used); a batch that needs more is refused.
pub fn peek_records(
    b: &[u8],
    left: &mut usize,
    mut each: impl FnMut(i32, Peek),
) -> Result<(), RecordsError> {
    use std::io::BufReader;
    let h = crate::log::batch::parse_header(b).map_err(|e| RecordsError::Decode(e.to_string()))?;
    let body = b
        .get(crate::log::batch::HEADER_LEN..h.size)
        .ok_or_else(|| Reader::err("batch"))?;
    let snappy;
    let raw: Box<dyn Read + '_> = match codec_of(h.attributes)? {
        Compression::None => Box::new(body),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(body)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(body)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| RecordsError::Decode(e.to_string()))?,
        ),
        // Snappy's blocks say their size up front, and are bounded by their ratio.
        Compression::Snappy => {
            snappy = decompress_snappy(body).map_err(|e| RecordsError::Decode(format!("{e:#}")))?;
            Box::new(&snappy[..])
        }
    };
    let allowance = (*left).min(MAX_DECOMPRESSED);
    let mut r = BufReader::with_capacity(16 * 1024, raw.take(allowance as u64));
    let over = |r: &BufReader<std::io::Take<Box<dyn Read + '_>>>| r.get_ref().limit() == 0;
    let fail = |e: std::io::Error, over: bool| {
        if over {
            RecordsError::Decode(format!(
                "batch decompresses to more than the {allowance} bytes allowed"
            ))
        } else {
            RecordsError::Decode(format!("truncated or malformed record: {e}"))
        }
    };
    for i in 0..h.records_count.max(0) {
        let step = |r: &mut BufReader<_>| -> std::io::Result<Peek> {
            let (len, _) = stream_varlong(r)?;
            let mut attributes = [0u8; 1];
            r.read_exact(&mut attributes)?;
            let (delta, a) = stream_varlong(r)?;
            let (_, b) = stream_varlong(r)?; // offset delta
            let (key_len, c) = stream_varlong(r)?;
            let used = (1 + a + b + c) as i64;
            if len < used {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "record shorter than its fields",
                ));
            }
            let rest = (len - used) as u64;
            if std::io::copy(&mut r.by_ref().take(rest), &mut std::io::sink())? < rest {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(Peek {
                timestamp: h.base_timestamp.wrapping_add(delta),
                keyless: key_len < 0,
            })
        };
        match step(&mut r) {
            Ok(p) => each(i, p),
            Err(e) => return Err(fail(e, over(&r))),
        }
    }
    let used = allowance - r.get_ref().limit() as usize - r.buffer().len();
    *left -= used.min(*left);
    Ok(())
}

/// Decodes every record of every batch in `data`. A trailing partial batch (fetch responses
/// may end with one) is ignored.
pub fn decode_batches(mut data: Bytes) -> Result<Vec<Record>, RecordsError> {
    let mut out = Vec::new();
    while let Some(size) = crate::log::batch::framed_size(&data) {
        if size > data.len() {
            break;
        }
        decode_one(data.split_to(size), &mut out, false)?;
    }
    Ok(out)
}

/// One batch of a partition, decoded on its own so that one bad batch does not hide the rest.
#[derive(Debug)]
pub struct DecodedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub control: bool,
    /// Its records (control records too), or why they cannot be read.
    pub records: Result<Vec<Record>, RecordsError>,
}

/// Every whole batch in `data`, each decoded separately. Fails only if a batch header cannot
/// be read at all (the log checked every header it stored, so that is not a record problem).
pub fn decode_each(mut data: Bytes) -> Result<Vec<DecodedBatch>, RecordsError> {
    let mut out = Vec::new();
    while let Some(size) = crate::log::batch::framed_size(&data) {
        if size > data.len() {
            break;
        }
        let batch = data.split_to(size);
        let h = crate::log::batch::parse_header(&batch)
            .map_err(|e| RecordsError::Decode(e.to_string()))?;
        let mut records = Vec::new();
        let result = decode_one(batch, &mut records, true).map(|()| records);
        out.push(DecodedBatch {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            control: h.is_control(),
            records: result,
        });
    }
    Ok(out)
}

/// A control batch holding `records` (the attribute bit Kafka clients skip such batches by).
pub fn encode_control_batch(records: &[Record]) -> Result<Bytes, RecordsError> {
    encode(records, Compression::None, None, CONTROL_ATTRIBUTE)
}

const CONTROL_ATTRIBUTE: i16 = 0x20;
const TRANSACTIONAL_ATTRIBUTE: i16 = 0x10;

/// A transaction marker as Kafka writes it: a transactional control batch of the producer
/// holding one record, key (version 0, type 0 abort / 1 commit), value (version 0,
/// coordinator epoch). Readers in read_committed mode end or drop the producer's open
/// transaction on it.
pub fn encode_txn_marker(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Result<Bytes, RecordsError> {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(i16::from(commit));
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(coordinator_epoch);
    let r = Record {
        offset: 0,
        timestamp,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Vec::new(),
    };
    encode(
        std::slice::from_ref(&r),
        Compression::None,
        Some(ProducerFields {
            producer_id,
            epoch,
            base_sequence: -1,
        }),
        CONTROL_ATTRIBUTE | TRANSACTIONAL_ATTRIBUTE,
    )
}

/// Whether a transaction marker's record (its key) commits; `None` for any other control
/// record (sluice's watermark announcements, unknown types).
pub fn txn_marker_commits(key: &[u8]) -> Option<bool> {
    match key {
        [0, 0, 0, 0] => Some(false),
        [0, 0, 0, 1] => Some(true),
        _ => None,
    }
}

/// The idempotent-producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

/// Encodes `records` into one v2 batch with codec `compression`. Offsets are taken relative to
/// the first record; the broker assigns the real ones.
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes, RecordsError> {
    encode_batch_as(records, compression, None)
}

/// [`encode_batch`] for an idempotent producer.
pub fn encode_batch_as(
    records: &[Record],
    compression: Compression,
    producer: Option<ProducerFields>,
) -> Result<Bytes, RecordsError> {
    encode(records, compression, producer, 0)
}

/// The records of one batch, uncompressed: offsets and timestamps as deltas from the batch's.
fn records_body(records: &[Record], base_offset: i64, base_ts: i64) -> BytesMut {
    let mut body = BytesMut::new();
    let mut one = BytesMut::new();
    for r in records {
        one.clear();
        one.put_u8(0);
        // Wrapping, as the decoder adds them: a client's base values may sit at the ends of i64.
        write_varlong(&mut one, r.timestamp.wrapping_sub(base_ts));
        write_varlong(&mut one, r.offset.wrapping_sub(base_offset));
        for f in [&r.key, &r.value] {
            match f {
                None => write_varlong(&mut one, -1),
                Some(b) => {
                    write_varlong(&mut one, b.len() as i64);
                    one.extend_from_slice(b);
                }
            }
        }
        write_varlong(&mut one, r.headers.len() as i64);
        for (k, v) in &r.headers {
            write_varlong(&mut one, k.len() as i64);
            one.extend_from_slice(k);
            match v {
                None => write_varlong(&mut one, -1),
                Some(v) => {
                    write_varlong(&mut one, v.len() as i64);
                    one.extend_from_slice(v);
                }
            }
        }
        write_varlong(&mut body, one.len() as i64);
        body.extend_from_slice(&one);
    }
    body
}

/// The header fields of a batch being written.
struct Frame {
    /// The codec's level (see [`compress`]); `None`: its default.
    level: Option<i32>,
    base_offset: i64,
    attributes: i16,
    last_offset_delta: i32,
    base_ts: i64,
    max_ts: i64,
    producer: Option<ProducerFields>,
}

fn frame(f: &Frame, count: usize, mut body: BytesMut) -> Result<Bytes, RecordsError> {
    let mut payload = BytesMut::new();
    compress(&mut body, &mut payload, codec_of(f.attributes)?, f.level)
        .map_err(|e| RecordsError::Encode(format!("{e:#}")))?;
    let header_len = crate::log::batch::HEADER_LEN;
    let mut b = BytesMut::with_capacity(header_len + payload.len());
    b.put_i64(f.base_offset);
    b.put_i32((header_len - crate::log::batch::LOG_OVERHEAD + payload.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(f.attributes);
    b.put_i32(f.last_offset_delta);
    b.put_i64(f.base_ts);
    b.put_i64(f.max_ts);
    match f.producer {
        Some(p) => {
            b.put_i64(p.producer_id);
            b.put_i16(p.epoch);
            b.put_i32(p.base_sequence);
        }
        None => {
            b.put_i64(-1);
            b.put_i16(-1);
            b.put_i32(-1);
        }
    }
    b.put_i32(count as i32);
    b.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b.freeze())
}

fn encode(
    records: &[Record],
    compression: Compression,
    producer: Option<ProducerFields>,
    attributes: i16,
) -> Result<Bytes, RecordsError> {
    let base_ts = records.first().map(|r| r.timestamp).unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    // Offsets relative to the first record: the broker assigns the real ones.
    let base_offset = records.first().map(|r| r.offset).unwrap_or(0);
    let relative: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            offset: base_offset + i as i64,
            ..r.clone()
        })
        .collect();
    let body = records_body(&relative, base_offset, base_ts);
    frame(
        &Frame {
            level: None,
            base_offset: 0,
            attributes: compression as i16 | attributes,
            last_offset_delta: records.len().saturating_sub(1) as i32,
            base_ts,
            max_ts,
            producer,
        },
        records.len(),
        body,
    )
}

/// A stored batch rewritten with only some of its records (compaction): the same base
/// offset, last offset delta, timestamps, attributes (codec, transactional) and producer
/// fields, so offsets and idempotence state are unchanged; each kept record keeps its offset.
/// With `delete_horizon`, the batch carries it (KIP-534) in place of its base timestamp.
pub fn encode_retained(
    h: &crate::log::batch::BatchHeader,
    kept: &[Record],
    delete_horizon: Option<i64>,
) -> Result<Bytes, RecordsError> {
    let (attributes, base_ts) = match delete_horizon {
        Some(t) => (h.attributes | crate::log::batch::DELETE_HORIZON_FLAG, t),
        None => (h.attributes, h.base_timestamp),
    };
    let body = records_body(kept, h.base_offset, base_ts);
    frame(
        &Frame {
            level: None,
            base_offset: h.base_offset,
            attributes,
            last_offset_delta: h.last_offset_delta,
            base_ts,
            max_ts: h.max_timestamp,
            producer: (h.producer_id >= 0).then_some(ProducerFields {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                base_sequence: h.base_sequence,
            }),
        },
        kept.len(),
        body,
    )
}

/// A producer's batch (whole, its CRC checked) rewritten with codec `to`, as Kafka's broker
/// recompresses for a topic's `compression.type`: the same base offset, records, timestamps,
/// producer fields and attributes other than the codec, so idempotence and transactions see
/// the batch they were sent. `left`: what is left of the request's allowance of decompressed
/// bytes, reduced by this batch's; a batch that needs more than is left is refused.
pub fn recompress(
    b: &Bytes,
    h: &crate::log::batch::BatchHeader,
    (to, level): (Compression, Option<i32>),
    left: &mut usize,
) -> Result<Bytes, RecordsError> {
    let mut records = Vec::new();
    let (inflated, spare) = decode_capped(b.clone(), &mut records, false, *left)?;
    *left -= inflated.min(*left);
    if spare > 0 {
        return Err(RecordsError::Decode(format!(
            "{spare} bytes follow the batch's {} records",
            records.len()
        )));
    }
    let body = records_body(&records, h.base_offset, h.base_timestamp);
    frame(
        &Frame {
            level,
            base_offset: h.base_offset,
            attributes: (h.attributes & !0x07) | to as i16,
            last_offset_delta: h.last_offset_delta,
            base_ts: h.base_timestamp,
            max_ts: h.max_timestamp,
            producer: (h.producer_id >= 0).then_some(ProducerFields {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                base_sequence: h.base_sequence,
            }),
        },
        records.len(),
        body,
    )
}

/// Parses a codec name as Kafka's `compression.type` spells it.
pub fn parse_compression(name: &str) -> Option<Compression> {
    Some(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(offset: i64, key: Option<Vec<u8>>, value: Option<Vec<u8>>, ts: i64) -> Record {
        Record {
            offset,
            timestamp: ts,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: vec![
                (Bytes::from_static(b"h"), Some(Bytes::from_static(b"v"))),
                (Bytes::from_static(b"h"), None),
            ],
        }
    }

    /// Found by the `records` fuzz target: a 136-byte batch whose snappy block claimed
    /// hundreds of megabytes made the decoder allocate them (1.8 GB peak). Claims beyond what
    /// snappy can expand to are refused before allocating, raw or xerial-framed.
    #[test]
    fn a_snappy_block_claiming_more_than_it_can_hold_is_refused() {
        let artifact: &[u8] = &[
            0x03, 0xcf, 0x00, 0xc7, 0x3a, 0xcf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7c, 0x3f, 0x3f,
            0x3f, 0x3f, 0x02, 0x00, 0x01, 0x00, 0xcf, 0xcf, 0x0a, 0x3f, 0x3f, 0x2c, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x3f,
            0x3f, 0x3f, 0x9e, 0x8e, 0x62, 0x8e, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xff, 0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00, 0x00,
            0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x29, 0xfb, 0xff,
            0xfa, 0xfa, 0x06, 0x04, 0xfa, 0xf5, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xcf,
            0xc7, 0x3a, 0xcf, 0xcf, 0xcf, 0x0a, 0x3f, 0x3f, 0x3f, 0x00, 0xcf, 0x00, 0x00, 0x8e,
            0x00, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x41, 0x50, 0x50, 0x59, 0x00, 0x00,
            0x00, 0x06, 0x01, 0x7a, 0xff, 0x8e,
        ];
        let started = std::time::Instant::now();
        let _ = decode_batches(Bytes::copy_from_slice(artifact));
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
        // A raw block claiming 1 GiB in 6 bytes, and the same inside xerial framing.
        let raw: &[u8] = &[0x80, 0x80, 0x80, 0x80, 0x04, 0x00];
        assert!(decompress_snappy(raw).is_err());
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        framed.extend_from_slice(raw);
        assert!(decompress_snappy(&framed).is_err());
        // Real data still decodes, both ways.
        let data = vec![7u8; 100_000];
        let mut raw_ok = vec![0u8; snap::raw::max_compress_len(data.len())];
        let n = snap::raw::Encoder::new()
            .compress(&data, &mut raw_ok)
            .unwrap();
        raw_ok.truncate(n);
        assert_eq!(decompress_snappy(&raw_ok).unwrap(), data);
        let mut input = BytesMut::from(&data[..]);
        let mut framed_ok = BytesMut::new();
        compress(&mut input, &mut framed_ok, Compression::Snappy, None).unwrap();
        assert_eq!(decompress_snappy(&framed_ok).unwrap(), data);
    }

    /// Recompression decompresses no more than the request has left, and refuses bytes
    /// after a batch's last record (a bomb of zeros behind one small record).
    #[test]
    fn recompression_is_bounded_and_refuses_trailing_bytes() {
        let recs = [record(0, Some(b"k".to_vec()), Some(vec![7; 5000]), 1)];
        let b = encode_batch(&recs, Compression::Gzip).unwrap();
        let h = crate::log::batch::validate(&b).unwrap();
        let mut left = 1000;
        let counted =
            || crate::limits::DECOMPRESSION_REFUSED.load(std::sync::atomic::Ordering::Relaxed);
        let before = counted();
        assert!(recompress(&b, &h, (Compression::Zstd, None), &mut left).is_err());
        assert!(
            counted() > before,
            "counted in sluice_decompression_refused_total"
        );
        let mut left = MAX_DECOMPRESSED;
        assert!(recompress(&b, &h, (Compression::Zstd, None), &mut left).is_ok());
        assert!(MAX_DECOMPRESSED - left >= 5000, "charged what was inflated");

        let plain = encode_batch(&recs, Compression::None).unwrap();
        let mut padded = plain.to_vec();
        padded.extend_from_slice(&[0; 64]);
        let len = (padded.len() - 12) as i32;
        padded[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&padded[21..]);
        padded[17..21].copy_from_slice(&crc.to_be_bytes());
        let padded = Bytes::from(padded);
        let h = crate::log::batch::validate(&padded).unwrap();
        let mut left = MAX_DECOMPRESSED;
        let e = recompress(&padded, &h, (Compression::Zstd, None), &mut left).unwrap_err();
        assert!(e.to_string().contains("64 bytes follow"), "{e}");
    }

    proptest! {
        #[test]
        fn every_codec_roundtrips(
            vals in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))), 1..20),
            codec in 0usize..5,
        ) {
            let c = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][codec];
            let recs: Vec<Record> = vals.into_iter().enumerate()
                .map(|(i, (k, v))| record(i as i64, k, v, 1_700_000_000_000 + i as i64)).collect();
            let b = encode_batch(&recs, c).unwrap();
            crate::log::batch::validate(&b).unwrap();
            let back = decode_batches(b).unwrap();
            prop_assert_eq!(back.len(), recs.len());
            for (a, b) in back.iter().zip(&recs) {
                prop_assert_eq!(&a.key, &b.key);
                prop_assert_eq!(&a.value, &b.value);
                prop_assert_eq!(a.timestamp, b.timestamp);
                prop_assert_eq!(a.offset, b.offset);
                prop_assert_eq!(&a.headers, &b.headers);
            }
        }

        /// A batch recompressed to any codec holds the same records, and keeps its header:
        /// producer fields, transactional flag, offsets and timestamps; only the codec moves.
        #[test]
        fn recompression_changes_only_the_codec(
            vals in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
                 -5_000i64..5_000), 1..20),
            from in 0usize..5,
            to in 0usize..5,
        ) {
            let codecs = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];
            let recs: Vec<Record> = vals.into_iter().enumerate()
                .map(|(i, (k, v, dt))| record(i as i64, k, v, 1_700_000_000_000 + dt)).collect();
            let producer = ProducerFields { producer_id: 7, epoch: 2, base_sequence: 40 };
            let b = encode(&recs, codecs[from], Some(producer), 0x10).unwrap();
            let h = crate::log::batch::validate(&b).unwrap();
            let mut left = MAX_DECOMPRESSED;
            let level = [None, Some(1), None, None, Some(-5)][to];
            let r = recompress(&b, &h, (codecs[to], level), &mut left).unwrap();
            let rh = crate::log::batch::validate(&r).unwrap();
            prop_assert_eq!(rh.compression(), codecs[to] as u8);
            prop_assert_eq!(rh.attributes & !7, h.attributes & !7);
            prop_assert_eq!(
                (rh.base_offset, rh.last_offset_delta, rh.base_timestamp, rh.max_timestamp, rh.records_count),
                (h.base_offset, h.last_offset_delta, h.base_timestamp, h.max_timestamp, h.records_count));
            prop_assert_eq!(
                (rh.producer_id, rh.producer_epoch, rh.base_sequence),
                (h.producer_id, h.producer_epoch, h.base_sequence));
            prop_assert!(left < MAX_DECOMPRESSED);
            let (back, want) = (decode_batches(r).unwrap(), decode_batches(b).unwrap());
            prop_assert_eq!(back, want);
        }

        /// The streaming key check finds exactly the records the full decoder finds keyless,
        /// in every codec, and charges the decompressed size to the allowance.
        #[test]
        fn the_streaming_key_check_agrees_with_the_decoder(
            vals in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300))), 1..30),
            codec in 0usize..5,
        ) {
            let c = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][codec];
            let recs: Vec<Record> = vals.into_iter().enumerate()
                .map(|(i, (k, v))| record(i as i64, k, v, 1_700_000_000_000 + i as i64)).collect();
            let b = encode_batch(&recs, c).unwrap();
            let expected: Vec<i32> = decode_batches(b.clone()).unwrap().iter().enumerate()
                .filter(|(_, r)| r.key.is_none()).map(|(i, _)| i as i32).collect();
            let mut left = usize::MAX;
            prop_assert_eq!(keyless_records(&b, &mut left).unwrap(), expected);
            let plain = encode_batch(&recs, Compression::None).unwrap();
            let inflated = plain.len() - crate::log::batch::HEADER_LEN;
            prop_assert_eq!(usize::MAX - left, inflated);
            // One byte short of what it inflates to: refused.
            let mut short = inflated - 1;
            prop_assert!(keyless_records(&b, &mut short).is_err());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_batches(Bytes::from(data.clone()));
            let mut left = 1 << 20;
            let _ = keyless_records(&data, &mut left);
        }
    }
}
