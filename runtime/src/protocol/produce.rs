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

/// Indexes (within their batch, as Kafka reports them) of records without a key, or `None` if
/// every record has one; `Err` for a batch that cannot be read or inflates past what is left
/// of the request's allowance (`left`). Malformed framing is left to the append's validation.
fn keyless_records(records: &Bytes, left: &mut usize) -> Result<Option<Vec<i32>>, String> {
    let Ok(batches) = crate::log::batch::split_batches(records) else {
        return Ok(None);
    };
    let mut bad = Vec::new();
    for (pos, h) in batches {
        bad.extend(
            crate::records::keyless_records(&records[pos..pos + h.size], left)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok((!bad.is_empty()).then_some(bad))
}

/// Whether any v2 batch in `records` is a control batch. Only the broker writes those
/// (transaction markers, watermark announcements): a client's would be trusted by readers.
fn has_control_batch(records: &[u8]) -> bool {
    let mut at = 0;
    while let Some(size) = crate::log::batch::framed_size(&records[at..]) {
        // magic at byte 16, attributes (bit 5: control) at 21..23, in v2 batches only.
        if let Some(b) = records.get(at..at + 23) {
            if b[16] == 2 && i16::from_be_bytes([b[21], b[22]]) & 0x20 != 0 {
                return true;
            }
        }
        at += size;
        if at >= records.len() {
            break;
        }
    }
    false
}

/// The producer id and epoch of the transactional batches in `records`, which must be
/// checked with the transaction coordinator before they are written. `Err` when batches of
/// several producers are mixed (no client does that; one could slip an unchecked batch in).
fn transactional_producer(records: &[u8]) -> Result<Option<(i64, i16)>, ()> {
    let mut at = 0;
    let mut found = None;
    let mut plain = false;
    while let Ok(h) = crate::log::batch::parse_header(&records[at..]) {
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
        at += h.size;
        if at >= records.len() {
            break;
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
    for td in req.topic_data {
        let name = td.name.0.as_str().to_string();
        let denied = if txn_denied {
            Some(ResponseError::TransactionalIdAuthorizationFailed)
        } else if !ctx.may(Operation::Write, &name) {
            Some(ResponseError::TopicAuthorizationFailed)
        } else {
            None
        };
        // Auto-creation on produce needs CREATE too (on the topic or the cluster).
        let create = denied.is_none()
            && (ctx.may(Operation::Create, &name) || ctx.may_cluster(Operation::Create));
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
            if topic.compacted() {
                let errors = match keyless_records(&records, &mut decompress_left) {
                    Ok(e) => e,
                    Err(why) => {
                        tracing::info!(topic = %name, partition = pd.index, error = %why, "produce refused: records unreadable");
                        pr.error_code = code(ResponseError::InvalidRecord);
                        if ctx.version >= 8 {
                            pr.error_message = Some(sb(why));
                        }
                        tr.partition_responses.push(pr);
                        continue;
                    }
                };
                if let Some(errors) = errors {
                    tracing::debug!(topic = %name, partition = pd.index, "keyless record refused on a compacted topic");
                    pr.error_code = code(ResponseError::InvalidRecord);
                    if ctx.version >= 8 {
                        let msg = format!(
                            "Compacted topic cannot accept message without key in topic partition {name}-{}.",
                            pd.index
                        );
                        pr.error_message = Some(sb(msg.clone()));
                        pr.record_errors = errors
                            .into_iter()
                            .map(|i| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(i)
                                    .with_batch_index_error_message(Some(sb(msg.clone())))
                            })
                            .collect();
                    }
                    tr.partition_responses.push(pr);
                    continue;
                }
            }
            let max = topic.max_message_bytes();
            let stamp = topic.log_append_time().then(now_ms);
            let appended = match transactional_producer(&records) {
                Err(()) => {
                    pr.error_code = code(ResponseError::InvalidRecord);
                    tr.partition_responses.push(pr);
                    continue;
                }
                Ok(None) => Ok(part.append(&records, max, stamp)),
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
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
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
