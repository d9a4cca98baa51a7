//! Produce: validate each partition's batches and append them to the log as they came.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::{Operation, Resource};
use crate::broker::config::TimestampBounds;
use crate::broker::{now_ms, AppendError};
use crate::log::batch::BatchError;
use crate::txn::state::TxnError;

fn error_for(e: &AppendError) -> ResponseError {
    match e {
        AppendError::TooLarge { .. } => ResponseError::MessageTooLarge,
        AppendError::Corrupt(BatchError::UnsupportedMagic(_)) => {
            ResponseError::UnsupportedForMessageFormat
        }
        AppendError::Corrupt(BatchError::Invalid(_)) => ResponseError::InvalidRecord,
        AppendError::Corrupt(_) | AppendError::Empty => ResponseError::CorruptMessage,
        AppendError::Storage(_) => ResponseError::KafkaStorageError,
        AppendError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        AppendError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
    }
}

/// Decompressed bytes one produce request may make the broker look at (the records of
/// compacted topics are checked for keys): a request of small batches that each inflate to
/// the per-batch limit must not cost minutes of CPU.
const MAX_DECOMPRESSED_PER_REQUEST: usize = crate::records::MAX_DECOMPRESSED;

/// Why a partition's records are refused before anything is written: Kafka's record
/// validation (its LogValidator), record by record.
struct Refusal {
    error: ResponseError,
    message: String,
    /// Each refused record's index within its batch, as Kafka reports them, and why.
    records: Vec<(i32, String)>,
}

/// Looks into the records only where a topic's settings ask it to: keys on a compacted
/// topic, create times against `message.timestamp.before/after.max.ms` (a batch whose header
/// puts its newest record in range is not opened unless a `before` bound is set: a record
/// may be older than the batch's base timestamp). Unlike Kafka, which reads every record and
/// rewrites the header's max timestamp, the header is trusted for `after`: it is what this
/// broker's time index and time-based retention go by, the things a record from the future
/// would hold back, so a header that understates its records misleads only its own reader.
/// `Err` for a batch that cannot be read or inflates past what is left of the request's
/// allowance (`left`). Malformed framing is left to the append's validation.
fn refused_records(
    records: &Bytes,
    partition: (&str, i32),
    compacted: bool,
    bounds: TimestampBounds,
    now: i64,
    left: &mut usize,
) -> Result<Option<Refusal>, String> {
    if !compacted && !bounds.any() {
        return Ok(None);
    }
    let (low, high) = bounds.range(now);
    let keyless = || {
        format!(
            "Compacted topic cannot accept message without key in topic partition {}-{}.",
            partition.0, partition.1
        )
    };
    let mut refused = Vec::new();
    let mut bad_time = false;
    // Headers only (no CRC) on the way: a produce's CRCs are checked once, by the append,
    // and a batch is checked here only if it is to be opened.
    for (pos, h) in crate::log::batch::headers(records) {
        let at = pos + h.size;
        let times = bounds.before_ms.is_some() || h.max_timestamp > high;
        if !compacted && !times {
            continue;
        }
        let Some(batch) = records.get(pos..at) else {
            break;
        };
        if crate::log::batch::validate(batch).is_err() {
            // Corrupt: the append refuses it with Kafka's code.
            return Ok(None);
        }
        crate::records::peek_records(batch, left, |i, p| {
            if compacted && p.keyless {
                refused.push((i, keyless()));
            } else if times && bounds.refuses(p.timestamp, now) {
                bad_time = true;
                refused.push((
                    i,
                    format!(
                        "Timestamp {} of message with offset {i} is out of range. The timestamp should be within [{low}, {high}]",
                        p.timestamp
                    ),
                ));
            }
        })
        .map_err(|e| e.to_string())?;
        if !refused.is_empty() {
            // As Kafka: the first batch with refused records is the answer, so that every
            // index in it counts within that one batch.
            break;
        }
    }
    Ok(match refused.first() {
        None => None,
        Some(_) if bad_time => Some(Refusal {
            error: ResponseError::InvalidTimestamp,
            message: "One or more records have been rejected due to invalid timestamp".into(),
            records: refused,
        }),
        Some(_) => Some(Refusal {
            error: ResponseError::InvalidRecord,
            message: keyless(),
            records: refused,
        }),
    })
}

/// The records as they are to be appended (recompressed to the topic's codec), or why the
/// partition is refused before anything is written (an unreadable batch: no record errors).
fn prepared(
    records: Bytes,
    topic: &crate::broker::Topic,
    partition: (&str, i32),
    left: &mut usize,
) -> Result<Bytes, Refusal> {
    let unreadable = |why| Refusal {
        error: ResponseError::InvalidRecord,
        message: why,
        records: Vec::new(),
    };
    let bounds = topic.timestamp_bounds();
    let refused = refused_records(
        &records,
        partition,
        topic.compacted(),
        bounds,
        now_ms(),
        left,
    );
    if let Some(r) = refused.map_err(unreadable)? {
        return Err(r);
    }
    match topic.target_compression() {
        None => Ok(records),
        Some(to) => recompressed(records, to, topic.max_message_bytes(), left).map_err(unreadable),
    }
}

/// `records` with every batch not already in codec `to` recompressed to it (a topic's
/// `compression.type`). Batches that fail validation, or are larger than `max` as sent, are
/// left for the append to refuse with the error Kafka gives.
fn recompressed(
    records: Bytes,
    (to, level): (crate::records::Compression, Option<i32>),
    max: usize,
    left: &mut usize,
) -> Result<Bytes, String> {
    // Headers first (no CRC): batches already in the codec cost nothing more.
    let keep = crate::log::batch::headers(&records)
        .all(|(_, h)| h.compression() == to as u8 || h.size > max);
    if keep {
        return Ok(records);
    }
    let Ok(batches) = crate::log::batch::split_batches(&records) else {
        return Ok(records);
    };
    let mut out = bytes::BytesMut::with_capacity(records.len());
    for (pos, h) in batches {
        let b = records.slice(pos..pos + h.size);
        if h.compression() == to as u8 || h.size > max {
            out.extend_from_slice(&b);
        } else {
            out.extend_from_slice(
                &crate::records::recompress(&b, &h, (to, level), left)
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    Ok(out.freeze())
}

/// Whether any batch in `records` is a control batch. Only the broker writes those
/// (transaction markers, watermark announcements): a client's would be trusted by readers.
/// The walk stops at a batch it cannot parse, which the append refuses anyway.
fn has_control_batch(records: &[u8]) -> bool {
    crate::log::batch::headers(records).any(|(_, h)| h.is_control())
}

/// The producer id and epoch of the transactional batches in `records`, which must be
/// checked with the transaction coordinator before they are written. `Err` when batches of
/// several producers are mixed (no client does that; one could slip an unchecked batch in).
fn transactional_producer(records: &[u8]) -> Result<Option<(i64, i16)>, ()> {
    let mut found = None;
    let mut plain = false;
    for (_, h) in crate::log::batch::headers(records) {
        if h.is_transactional() {
            let this = (h.producer_id, h.producer_epoch);
            if plain || found.is_some_and(|f| f != this) {
                return Err(());
            }
            found = Some(this);
        } else if found.is_some() {
            return Err(());
        } else {
            plain = true;
        }
    }
    Ok(found)
}

/// A partition's answer that must wait until its records are durable (`flush.messages`).
pub struct DurableWait {
    /// Where its answer is in the response: topic, then partition.
    pub at: (usize, usize),
    pub partition: std::sync::Arc<crate::broker::Partition>,
    /// Every record below this offset must be on disk.
    pub upto: i64,
}

/// Appends every partition's records; `None` when the producer asked for no reply (acks=0).
/// The answers of durable partitions may go only after [`finish_durable`].
pub fn handle(ctx: &Ctx<'_>, req: ProduceRequest) -> (Option<ProduceResponse>, Vec<DurableWait>) {
    let b = ctx.broker;
    let mut resp = ProduceResponse::default();
    let mut appended_any = false;
    let mut waits = Vec::new();
    let mut decompress_left = MAX_DECOMPRESSED_PER_REQUEST;
    let txn_denied = req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !ctx.allowed(Operation::Write, Resource::TransactionalId, t));
    // Transactional batches come with the transactional id they are written for, which the
    // check above authorized (as Kafka's handleProduceRequest requires): without one, a
    // principal allowed to write the topic could write into another's open transaction.
    let no_txn_id = req.transactional_id.is_none();
    for td in req.topic_data {
        let name = td.name.0.as_str().to_string();
        let denied = if txn_denied {
            Some(ResponseError::TransactionalIdAuthorizationFailed)
        } else if !b.may_write_topic(ctx.principal, ctx.peer, &name) {
            Some(ResponseError::TopicAuthorizationFailed)
        } else {
            None
        };
        // Auto-creation on produce needs CREATE too (on the topic or the cluster).
        let create = denied.is_none() && b.may_create_topic(ctx.principal, ctx.peer, &name);
        let topic = match denied {
            Some(_) => None,
            None => b.topic_or_create(&name, create),
        };
        let mut tr = TopicProduceResponse::default().with_name(td.name.clone());
        for pd in td.partition_data {
            let mut pr = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            if let Some(e) = denied {
                pr.error_code = code(e);
                tr.partition_responses.push(pr);
                continue;
            }
            let Some(topic) = topic.as_ref() else {
                pr.error_code = code(ResponseError::UnknownTopicOrPartition);
                tr.partition_responses.push(pr);
                continue;
            };
            let Some(part) = topic.partition(pd.index) else {
                pr.error_code = code(ResponseError::UnknownTopicOrPartition);
                tr.partition_responses.push(pr);
                continue;
            };
            let records = pd.records.unwrap_or_default();
            if has_control_batch(&records) {
                tracing::debug!(topic = %name, partition = pd.index, "control batch from a client refused");
                pr.error_code = code(ResponseError::InvalidRecord);
                if ctx.version >= 8 {
                    pr.error_message =
                        Some(sb("clients may not produce control records".to_string()));
                }
                tr.partition_responses.push(pr);
                continue;
            }
            // Bytes in, as Kafka counts them: as they came over the wire.
            let wire_bytes = records.len() as u64;
            let records = match prepared(records, topic, (&name, pd.index), &mut decompress_left) {
                Ok(r) => r,
                Err(r) => {
                    match r.records.first() {
                        None => {
                            tracing::info!(topic = %name, partition = pd.index, error = %r.message, "produce refused: records unreadable")
                        }
                        Some((_, why)) => {
                            tracing::debug!(topic = %name, partition = pd.index, client = ?ctx.client_id, error = ?r.error, records = r.records.len(), "produce refused: {why}")
                        }
                    }
                    pr.error_code = code(r.error);
                    if ctx.version >= 8 {
                        pr.error_message = Some(sb(r.message));
                        pr.record_errors = r
                            .records
                            .into_iter()
                            .map(|(i, why)| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(i)
                                    .with_batch_index_error_message(Some(sb(why)))
                            })
                            .collect();
                    }
                    tr.partition_responses.push(pr);
                    continue;
                }
            };
            let max = topic.max_message_bytes();
            let stamp = topic.log_append_time().then(now_ms);
            let appended = match transactional_producer(&records) {
                Err(()) => {
                    pr.error_code = code(ResponseError::InvalidRecord);
                    tr.partition_responses.push(pr);
                    continue;
                }
                Ok(None) => Ok(part.append(&records, max, stamp)),
                Ok(Some(_)) if no_txn_id => {
                    pr.error_code = code(ResponseError::TransactionalIdAuthorizationFailed);
                    if ctx.version >= 8 {
                        pr.error_message = Some(sb(
                            "transactional records need a transactional id".to_string(),
                        ));
                    }
                    tr.partition_responses.push(pr);
                    continue;
                }
                Ok(Some((pid, epoch))) => {
                    b.txns
                        // Produce v12+ comes from clients on transactions version 2: the
                        // batch adds its partition to the transaction by itself.
                        .verify_and(
                            pid,
                            epoch,
                            &(name.clone(), pd.index),
                            ctx.version >= 12,
                            || part.append(&records, max, stamp),
                        )
                }
            };
            let appended = match appended {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(topic = %name, partition = pd.index, error = %e, client = ?ctx.client_id, "transactional produce refused");
                    pr.error_code = match e {
                        TxnError::ProducerFenced => code(ResponseError::InvalidProducerEpoch),
                        e => e.code(),
                    };
                    if ctx.version >= 8 {
                        pr.error_message = Some(sb(e.to_string()));
                    }
                    tr.partition_responses.push(pr);
                    continue;
                }
            };
            match appended {
                Ok(at) => {
                    appended_any = true;
                    topic
                        .stats
                        .bytes_in
                        .fetch_add(wire_bytes, Ordering::Relaxed);
                    topic.stats.records_in.fetch_add(
                        (at.last_offset - at.base_offset + 1) as u64,
                        Ordering::Relaxed,
                    );
                    pr.base_offset = at.base_offset;
                    pr.log_append_time_ms = stamp.unwrap_or(-1);
                    pr.log_start_offset = part.watermarks().log_start;
                    if req.acks != 0 && part.flush_due() {
                        waits.push(DurableWait {
                            at: (resp.responses.len(), tr.partition_responses.len()),
                            partition: part.clone(),
                            upto: at.last_offset + 1,
                        });
                    }
                }
                Err(e) => {
                    let err = error_for(&e);
                    tracing::debug!(topic = %name, partition = pd.index, error = %e, client = ?ctx.client_id, "produce refused");
                    if let AppendError::Storage(_) = e {
                        tracing::error!(topic = %name, partition = pd.index, error = %e, "produce failed on storage");
                    }
                    pr.error_code = code(err);
                    if ctx.version >= 8 {
                        pr.error_message = Some(sb(e.to_string()));
                    }
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    if appended_any {
        b.notify_appended();
    }
    if req.acks == 0 {
        return (None, Vec::new());
    }
    (Some(resp), waits)
}

/// Waits until the records of every durable partition are on disk (their fsyncs run side by
/// side); a partition whose fsync failed is answered KAFKA_STORAGE_ERROR.
pub async fn finish_durable(resp: &mut ProduceResponse, waits: Vec<DurableWait>) {
    for w in &waits {
        // Started together, so the waits below overlap.
        let _ = w.partition.start_sync();
    }
    for w in waits {
        if let Err(e) = w.partition.wait_durable(w.upto).await {
            tracing::warn!(partition = w.partition.index, error = %e, "durable produce refused");
            if let Some(pr) = resp
                .responses
                .get_mut(w.at.0)
                .and_then(|t| t.partition_responses.get_mut(w.at.1))
            {
                pr.error_code = code(ResponseError::KafkaStorageError);
                pr.base_offset = -1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{encode_batch, encode_control_batch, Compression, Record};

    fn batch(records: &[(Option<&'static str>, i64)], c: Compression) -> Bytes {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, &(key, timestamp))| Record {
                offset: i as i64,
                timestamp,
                key: key.map(|k| Bytes::from_static(k.as_bytes())),
                value: Some(Bytes::from_static(b"v")),
                ..Default::default()
            })
            .collect();
        encode_batch(&records, c).unwrap()
    }

    #[test]
    fn records_out_of_the_time_bounds_are_refused_one_by_one() {
        let now = 1_800_000_000_000;
        let hour = 3_600_000;
        let kafka4 = TimestampBounds {
            before_ms: None,
            after_ms: Some(hour),
        };
        let check = |b: &Bytes, compacted, bounds| {
            let mut left = MAX_DECOMPRESSED_PER_REQUEST;
            refused_records(b, ("t", 0), compacted, bounds, now, &mut left).unwrap()
        };
        // In range, or without a timestamp: not refused; a topic without bounds looks at nothing.
        let fine = batch(
            &[(Some("k"), now + hour), (Some("k"), -1)],
            Compression::None,
        );
        assert!(check(&fine, false, kafka4).is_none());
        let late = batch(
            &[
                (Some("k"), now),
                (Some("k"), now + hour + 1),
                (None, now + 2 * hour),
            ],
            Compression::Lz4,
        );
        assert!(check(&late, false, TimestampBounds::default()).is_none());
        let r = check(&late, false, kafka4).unwrap();
        assert_eq!(r.error, ResponseError::InvalidTimestamp);
        assert_eq!(
            r.records.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(
            r.records[0].1,
            format!(
                "Timestamp {} of message with offset 1 is out of range. The timestamp should be within [{}, {}]",
                now + hour + 1,
                now - i64::MAX,
                now + hour
            )
        );
        // On a compacted topic a keyless record is refused for its key, the others for
        // their time, and the answer is Kafka's: INVALID_TIMESTAMP if any time is wrong.
        let r = check(&late, true, kafka4).unwrap();
        assert_eq!(r.error, ResponseError::InvalidTimestamp);
        assert!(r.records[1].1.starts_with("Compacted topic cannot accept"));
        let keyless = batch(&[(None, now)], Compression::Gzip);
        assert_eq!(
            check(&keyless, true, kafka4).unwrap().error,
            ResponseError::InvalidRecord
        );
        // A record older than its batch's base timestamp (a negative delta) is found too.
        let old = batch(
            &[(Some("k"), now), (Some("k"), now - 5_000)],
            Compression::None,
        );
        let before = TimestampBounds {
            before_ms: Some(1_000),
            after_ms: None,
        };
        let r = check(&old, false, before).unwrap();
        assert_eq!(r.records.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn control_batches_are_spotted_among_data_batches() {
        let r = Record {
            key: Some(Bytes::from_static(b"k")),
            ..Default::default()
        };
        let data = encode_batch(std::slice::from_ref(&r), Compression::None).unwrap();
        let control = encode_control_batch(std::slice::from_ref(&r)).unwrap();
        assert!(!has_control_batch(&data));
        assert!(has_control_batch(&control));
        let mut both = data.to_vec();
        both.extend_from_slice(&control);
        assert!(has_control_batch(&both));
        assert!(!has_control_batch(b"short"));
    }
}
