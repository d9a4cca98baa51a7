//! Fetch: hand out whole stored batches from each requested offset, long-polling until
//! `min_bytes` are available or `max_wait_ms` passes.
//!
//! Fetch sessions (KIP-227, `fetch_session.rs`) turn every request into a plan of
//! partitions to read; for an incremental request the session's whole list, each partition
//! with what the client was last told of it, so a partition with nothing new is left out of
//! the answer, and left unread when its change count says nothing moved.

use crate::limits::memory::Held;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{code, Ctx};
use crate::auth::acl::Operation;
use crate::broker::Topic;
use crate::log::batch;
use crate::log::segment::ReadSlice;
use crate::protocol::fetch_session::{Plan, PlanTopic, Seen, Sent};
use crate::protocol::pieces::{self, FileRange};

/// Longest a fetch may park, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

struct Gathered {
    resp: FetchResponse,
    /// Bytes of records in the answer, and of those the ones held in memory (not file ranges).
    bytes: usize,
    in_memory: usize,
    errors: bool,
    /// The file ranges the response's placeholders stand for, in response order.
    files: Vec<FileRange>,
    /// Bytes and records read per topic: counted in its stats only if this answer is sent
    /// (a long poll gathers and drops answers until enough data is there).
    read: Vec<(Arc<Topic>, u64, u64)>,
    /// What was found of each planned partition, in plan order (for the session).
    seen: Vec<Seen>,
    /// What to wait on if the answer is not ready.
    parked: Parked,
}

impl Gathered {
    fn count(&self) {
        for (topic, bytes, records) in &self.read {
            topic.stats.bytes_out.fetch_add(*bytes, Ordering::Relaxed);
            topic
                .stats
                .records_out
                .fetch_add(*records, Ordering::Relaxed);
        }
    }
}

fn partition_error(index: i32, e: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code(e))
        .with_high_watermark(-1)
        .with_records(Some(Bytes::new()))
}

/// A partition's records as read for one fetch answer.
struct Records {
    /// The records, or (`in_memory` false) a placeholder of their length.
    data: Bytes,
    records: u64,
    /// The offset after the last record, if there is one.
    end: Option<i64>,
    /// False when `data` stands for a file range: those bytes take no memory.
    in_memory: bool,
}

/// A partition's records, none from offset `below` on: in memory, at most `memory_limit`
/// bytes, or (`zero_copy`) a placeholder of their length, at most `limit`, and the file range
/// it stands for (which takes no memory, so is not bounded by what the memory pool has free).
fn read_records(
    slice: &ReadSlice,
    (limit, memory_limit): (usize, usize),
    min_one: bool,
    below: i64,
    zero_copy: bool,
    files: &mut Vec<FileRange>,
) -> std::io::Result<Records> {
    if zero_copy {
        if let Some(span) = slice.span(limit, min_one, below)? {
            let len = span.range.len;
            let in_file = (pieces::MIN_PIECE..=pieces::MAX_FILE_PIECE).contains(&len);
            if in_file || len <= memory_limit {
                let data = if in_file {
                    files.push(span.range);
                    pieces::placeholder(len)
                } else {
                    span.range.read()?.into()
                };
                return Ok(Records {
                    data,
                    records: span.records,
                    end: span.end_offset,
                    in_memory: !in_file,
                });
            }
        }
    }
    let mut data = slice.read(memory_limit, min_one)?;
    if below != i64::MAX {
        data.truncate(batch::before_offset(&data, below));
    }
    let (end, records) = batch::span(&data).unzip();
    Ok(Records {
        data,
        records: records.unwrap_or(0),
        end,
        in_memory: true,
    })
}

/// The topic a plan's entry names: by id from v13 on, by name before.
fn topic_of(ctx: &Ctx<'_>, pt: &PlanTopic) -> Option<Arc<Topic>> {
    if ctx.version >= 13 {
        ctx.broker.topic_by_id(pt.id)
    } else {
        ctx.broker.topic(pt.name.0.as_str())
    }
}

/// Reads what `plan` asks for, at most `budget` bytes, of which at most `memory` in memory
/// (beyond the first batch, which KIP-74 sends whole whatever the limits).
fn gather(
    ctx: &Ctx<'_>,
    plan: &Plan,
    read_committed: bool,
    mut budget: usize,
    mut memory: usize,
    zero_copy: bool,
) -> Gathered {
    let by_id = ctx.version >= 13;
    let mut total = 0usize;
    let mut in_memory = 0usize;
    let mut errors = false;
    let mut files = Vec::new();
    let mut read = Vec::new();
    let mut seen = Vec::with_capacity(plan.topics.iter().map(|t| t.partitions.len()).sum());
    let mut parked = Parked::default();
    let mut resp = FetchResponse::default();
    for pt in &plan.topics {
        let topic = topic_of(ctx, pt);
        let mut tr = FetchableTopicResponse::default()
            .with_topic(pt.name.clone())
            .with_topic_id(pt.id);
        let denied = topic
            .as_ref()
            .is_some_and(|t| !ctx.may(Operation::Read, &t.name))
            || (topic.is_none() && !by_id && !ctx.may(Operation::Read, pt.name.0.as_str()));
        let whole_topic = pt.partitions.len() > PER_TOPIC_ABOVE;
        let parked_at = parked.topics.len();
        if let (Some(t), false) = (topic.as_ref(), denied) {
            parked.topics.push((t.clone(), whole_topic));
        }
        for want in &pt.partitions {
            let mut error = |e: ResponseError, tr: &mut FetchableTopicResponse| {
                errors = true;
                seen.push(Seen::Error);
                tr.partitions.push(partition_error(want.partition, e));
            };
            if denied {
                error(ResponseError::TopicAuthorizationFailed, &mut tr);
                continue;
            }
            let Some(topic) = topic.as_ref() else {
                let e = if by_id {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                error(e, &mut tr);
                continue;
            };
            let Some(part) = topic.partition(want.partition) else {
                error(ResponseError::UnknownTopicOrPartition, &mut tr);
                continue;
            };
            // Read before the watermarks are, so that what is read is at least this new.
            let changes = part.changes();
            parked.seen.push((parked_at, want.partition, changes));
            if want.unchanged(topic.id, changes) {
                seen.push(Seen::Unchanged);
                continue;
            }
            let (wm, slice) = match part.plan_read(want.fetch_offset) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = want.partition, error = %e, "fetch failed on storage");
                    error(ResponseError::KafkaStorageError, &mut tr);
                    continue;
                }
            };
            let mut pd = PartitionData::default()
                .with_partition_index(want.partition)
                .with_high_watermark(wm.high)
                .with_last_stable_offset(wm.stable)
                .with_log_start_offset(wm.log_start);
            if want.fetch_offset < wm.log_start || want.fetch_offset > wm.high {
                errors = true;
                seen.push(Seen::Error);
                pd.error_code = code(ResponseError::OffsetOutOfRange);
                tr.partitions.push(pd);
                continue;
            }
            // KIP-74: the first batch of the response is always whole, whatever the limits, so
            // a batch larger than the limits can never stall a consumer.
            let limit = (want.max_bytes.max(0) as usize).min(budget);
            let limits = (limit, limit.min(memory));
            let mut has_records = false;
            if let Some(slice) = slice {
                // read_committed: nothing from the last stable offset on; and the client is
                // told which aborted transactions' records it must drop.
                let below = if read_committed { wm.stable } else { i64::MAX };
                match read_records(&slice, limits, total == 0, below, zero_copy, &mut files) {
                    Ok(Records {
                        data,
                        records,
                        end,
                        in_memory: held,
                    }) => {
                        if read_committed {
                            let end = end.unwrap_or(want.fetch_offset);
                            pd.aborted_transactions = Some(
                                part.aborted_between(want.fetch_offset, end)
                                    .into_iter()
                                    .map(|a| {
                                        AbortedTransaction::default()
                                            .with_producer_id(ProducerId(a.producer_id))
                                            .with_first_offset(a.first_offset)
                                    })
                                    .collect(),
                            );
                        }
                        total += data.len();
                        budget = budget.saturating_sub(data.len());
                        if held {
                            in_memory += data.len();
                            memory = memory.saturating_sub(data.len());
                        }
                        has_records = !data.is_empty();
                        read.push((topic.clone(), data.len() as u64, records));
                        pd.records = Some(data);
                    }
                    Err(e) => {
                        tracing::error!(topic = %topic.name, partition = want.partition, error = %e, "fetch read failed");
                        error(ResponseError::KafkaStorageError, &mut tr);
                        continue;
                    }
                }
            }
            let s = Seen::Read {
                sent: Sent {
                    high: wm.high,
                    stable: wm.stable,
                    log_start: wm.log_start,
                    changes,
                    topic: topic.id,
                },
                records: has_records,
            };
            if plan.shows(want, &s) {
                tr.partitions.push(pd);
            }
            seen.push(s);
        }
        if !(plan.trim && tr.partitions.is_empty()) {
            resp.responses.push(tr);
        }
    }
    Gathered {
        resp,
        bytes: total,
        in_memory,
        errors,
        files,
        read,
        seen,
        parked,
    }
}

/// Above this many partitions of one topic, a parked fetch waits on the topic's append
/// signal rather than on each partition's.
const PER_TOPIC_ABOVE: usize = 32;

/// What a parked fetch waits on: each partition it read with its change count as the fetch
/// found it. A fetch over 1,000 partitions once held a watch receiver and a boxed future per
/// partition, made afresh on every round: a fifth of the broker's time for a consumer
/// long-polling 1,000 quiet partitions. Now, for a topic it reads many partitions of, it
/// waits on the topic's one signal and, woken, compares counts (which takes no lock). For a
/// few partitions it waits on each: a group of many members, each parked on a few
/// partitions, is not woken whole by every append to the topic.
#[derive(Default)]
struct Parked {
    /// The topics read, and whether to wait on the topic's signal (else its partitions').
    topics: Vec<(Arc<Topic>, bool)>,
    /// (index in `topics`, partition, its change count when read).
    seen: Vec<(usize, i32, u64)>,
}

impl Parked {
    fn partitions(&self) -> impl Iterator<Item = (&crate::broker::Partition, u64, bool)> {
        self.seen.iter().filter_map(|&(t, p, n)| {
            let (topic, whole) = self.topics.get(t)?;
            Some((&**topic.partition(p)?, n, !*whole))
        })
    }

    /// Resolves once one of the partitions has changed since it was read (or its topic was
    /// deleted): changes to other partitions of a topic waited on whole wake it only to
    /// compare counts.
    async fn moved(&mut self) {
        // Subscribed before the counts are compared: a change before this shows in the
        // counts, one after wakes a receiver.
        let mut signals: Vec<watch::Receiver<()>> = self
            .topics
            .iter()
            .filter(|(_, whole)| *whole)
            .map(|(t, _)| t.subscribe_appends())
            .chain(
                self.partitions()
                    .filter(|(_, _, own)| *own)
                    .map(|(p, _, _)| p.subscribe_appends()),
            )
            .collect();
        loop {
            if self.partitions().any(|(p, n, _)| p.changes() != n) {
                return;
            }
            if signals.is_empty() {
                return std::future::pending().await;
            }
            let mut changes: Vec<_> = signals.iter_mut().map(|r| Box::pin(r.changed())).collect();
            let closed = std::future::poll_fn(|cx| {
                for c in &mut changes {
                    if let Poll::Ready(r) = c.as_mut().poll(cx) {
                        return Poll::Ready(r.is_err());
                    }
                }
                Poll::Pending
            })
            .await;
            if closed {
                return;
            }
        }
    }
}

/// The response, the room it holds in the broker's memory pool until it is written (as much
/// as the pool has free, up to twice what the client may be sent: see `limits/memory.rs`),
/// and the file ranges its placeholders stand for. With `zero_copy`, records may be left in
/// their files (see `pieces.rs`).
pub async fn handle(
    ctx: &Ctx<'_>,
    req: FetchRequest,
    zero_copy: bool,
) -> (FetchResponse, Held, Vec<FileRange>) {
    let sessions = &ctx.broker.fetch_sessions;
    let plan = match sessions.open(&req, ctx.version >= 13, std::time::Instant::now()) {
        Ok(p) => p,
        Err(e) => {
            let r = FetchResponse::default().with_error_code(e);
            return (r, ctx.broker.limits.memory.take_up_to(0), Vec::new());
        }
    };
    let read_committed = req.isolation_level == 1;
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let allowed = ctx.broker.limits.fetch_budget(req.max_bytes);
    loop {
        // Twice the records: they are copied once more when the response is encoded. The
        // caller gives back the copy's half once encoding is done.
        let mut room = ctx
            .broker
            .limits
            .memory
            .take_up_to(allowed.saturating_mul(2));
        // File ranges (zero copy) take no room: under memory pressure they still fill what
        // the client may be sent. Looked up again on every round, so a topic recreated
        // meanwhile is followed too.
        let g = gather(
            ctx,
            &plan,
            read_committed,
            allowed,
            room.bytes() / 2,
            zero_copy,
        );
        // As Kafka: a fetch naming no partition (a session being closed) is answered at once.
        let nothing_asked = plan.topics.is_empty();
        if g.errors
            || nothing_asked
            || g.bytes >= req.min_bytes.max(1) as usize
            || Instant::now() >= deadline
        {
            room.shrink_to(g.in_memory.saturating_mul(2));
            g.count();
            let mut resp = g.resp;
            sessions.close(&plan, &g.seen, &mut resp);
            return (resp, room, g.files);
        }
        drop(room);
        let mut parked = g.parked;
        tokio::select! {
            _ = parked.moved() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}
