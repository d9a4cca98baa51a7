//! Share groups (KIP-932): ShareGroupHeartbeat, ShareFetch, ShareAcknowledge. The rules live
//! in `group::share`; this module moves records between the log and the wire.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    share_acknowledge_response, ShareAcknowledgeRequest, ShareAcknowledgeResponse,
    ShareFetchRequest, ShareFetchResponse, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse,
};
use kafka_protocol::ResponseError;
use tokio::time::Instant;
use uuid::Uuid;

use super::{code, sb, Ctx};
use crate::auth::acl::Operation;
use crate::broker::now_ms;
use crate::group::share::{err, ShareMember, SharePartition, HEARTBEAT_INTERVAL_MS, LOCK_MS};
use crate::log::batch;

/// Records handed out per ShareFetch when the client sets no limit.
const DEFAULT_MAX_RECORDS: usize = 500;
/// Bytes of batches read per partition per ShareFetch at most.
const MAX_READ: usize = 8 << 20;
const MAX_WAIT: Duration = Duration::from_secs(30);

pub fn heartbeat(ctx: &Ctx<'_>, req: ShareGroupHeartbeatRequest) -> ShareGroupHeartbeatResponse {
    let mut r =
        ShareGroupHeartbeatResponse::default().with_heartbeat_interval_ms(HEARTBEAT_INTERVAL_MS);
    let member = req.member_id.to_string();
    r.member_id = Some(req.member_id.clone());
    if !super::group::may_read_group(ctx, req.group_id.0.as_str()) {
        r.error_code = code(ResponseError::GroupAuthorizationFailed);
        return r;
    }
    if let Some(message) =
        super::group::undescribable(ctx, req.subscribed_topic_names.iter().flatten())
    {
        r.error_code = code(ResponseError::TopicAuthorizationFailed);
        r.error_message = Some(sb(message));
        return r;
    }
    if req.group_id.0.is_empty() {
        r.error_code = err::INVALID_REQUEST;
        r.error_message = Some(sb("GroupId can't be empty."));
        return r;
    }
    if member.is_empty() {
        r.error_code = err::INVALID_REQUEST;
        r.error_message = Some(sb(
            "ShareGroupHeartbeat v1 needs a client-generated member id",
        ));
        return r;
    }
    let topics = ctx.broker.topic_info();
    let now = now_ms();
    let (error, epoch, assignment) = ctx.broker.groups.with_share(req.group_id.0.as_str(), |g| {
        match req.member_epoch {
            -1 => {
                g.remove_member(&member);
                return (0, -1, None);
            }
            0 => {
                let subscribed: Vec<String> = req
                    .subscribed_topic_names
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| t.0.to_string())
                    .collect();
                g.epoch += 1;
                let epoch = g.epoch;
                g.members.insert(
                    member.clone(),
                    ShareMember {
                        id: member.clone(),
                        subscribed,
                        last_heartbeat_ms: now,
                        epoch,
                        client_id: ctx.client_id.unwrap_or_default().to_string(),
                        client_host: ctx.client_host(),
                    },
                );
            }
            e => {
                let group_epoch = g.epoch;
                let Some(m) = g.members.get_mut(&member) else {
                    return (err::UNKNOWN_MEMBER_ID, -1, None);
                };
                if e > group_epoch || e < m.epoch.min(group_epoch) - 1 {
                    return (err::FENCED_MEMBER_EPOCH, -1, None);
                }
                m.last_heartbeat_ms = now;
                if let Some(subs) = &req.subscribed_topic_names {
                    let subs: Vec<String> = subs.iter().map(|t| t.0.to_string()).collect();
                    if subs != m.subscribed {
                        m.subscribed = subs;
                        g.epoch += 1;
                    }
                }
            }
        }
        let epoch = g.epoch;
        let send = req.member_epoch != epoch || req.subscribed_topic_names.is_some();
        if let Some(m) = g.members.get_mut(&member) {
            m.epoch = epoch;
        }
        let a = send.then(|| g.assignment(&member, &topics));
        (0, epoch, a)
    });
    r.error_code = error;
    r.member_epoch = epoch;
    r.assignment = assignment.map(|a| {
        Assignment::default().with_topic_partitions(
            a.into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(t)
                        .with_partitions(ps.into_iter().collect())
                })
                .collect(),
        )
    });
    r
}

/// One partition's acknowledgement batches: (topic id, partition, [(first, last, types)]).
type PartitionAcks = (Uuid, i32, Vec<(i64, i64, Vec<i8>)>);
/// Acknowledgement batches of a request, per partition.
type Acks = Vec<PartitionAcks>;
/// Archived records of one partition: (topic id, partition, [(offset, deliveries, reason)]).
type DeadRecords = (Uuid, i32, Vec<(i64, i16, &'static str)>);

fn ack_batches<'a>(
    t: Uuid,
    p: i32,
    batches: impl Iterator<Item = (i64, i64, &'a Vec<i8>)>,
) -> PartitionAcks {
    (t, p, batches.map(|(f, l, ty)| (f, l, ty.clone())).collect())
}

/// The dead-letter topic of share group `group`.
/// ShareFetch and ShareAcknowledge take READ on the group (or the whole request is refused)
/// and on each topic they name: the topics the caller may not read, answered per partition
/// with TOPIC_AUTHORIZATION_FAILED while the others are served, as Kafka does.
fn unreadable_topics(
    ctx: &Ctx<'_>,
    topics: impl Iterator<Item = Uuid>,
) -> std::collections::BTreeSet<Uuid> {
    topics
        .filter(|&id| {
            ctx.broker
                .topic_by_id(id)
                .is_some_and(|t| !ctx.may(Operation::Read, &t.name))
        })
        .collect()
}

pub fn dead_letter_topic(group: &str) -> String {
    format!("{group}.dlq")
}

/// Copies records the group archived (rejected, or past the delivery limit) to its
/// dead-letter topic, with headers saying where they came from and why. Records are only
/// archived after they were read from the log, so a failure here is logged, not retried.
fn dead_letter(ctx: &Ctx<'_>, group: &str) {
    let dead: Vec<DeadRecords> = ctx.broker.groups.with_share(group, |g| {
        g.partitions
            .iter_mut()
            .filter(|(_, sp)| !sp.dead.is_empty())
            .map(|((t, p), sp)| (*t, *p, std::mem::take(&mut sp.dead)))
            .collect()
    });
    if dead.is_empty() {
        return;
    }
    let dlq_name = dead_letter_topic(group);
    let dlq = match ctx.broker.topic(&dlq_name) {
        Some(t) => Some(t),
        None => match ctx
            .broker
            .create_topic(&dlq_name, 1, Default::default(), false)
        {
            Ok(t) => Some(t),
            Err(_) => ctx.broker.topic(&dlq_name),
        },
    };
    let Some(dlq) = dlq else {
        tracing::error!(group, topic = %dlq_name, "cannot create the share group's dead-letter topic");
        return;
    };
    for (tid, p, offsets) in dead {
        let Some(topic) = ctx.broker.topic_by_id(tid) else {
            continue;
        };
        let Some(part) = topic.partition(p).cloned() else {
            continue;
        };
        let (Some(first), Some(last)) = (
            offsets.iter().map(|o| o.0).min(),
            offsets.iter().map(|o| o.0).max(),
        ) else {
            continue;
        };
        let (data, _) = read_range(&part, first, last, MAX_READ);
        let Ok(records) = crate::records::decode_batches(data) else {
            tracing::error!(group, topic = %topic.name, partition = p, "cannot decode records to dead-letter");
            continue;
        };
        let out: Vec<crate::records::Record> = records
            .into_iter()
            .filter_map(|mut r| {
                let &(_, deliveries, why) = offsets.iter().find(|o| o.0 == r.offset)?;
                let h = |k: &str, v: String| (Bytes::from(k.to_string()), Some(Bytes::from(v)));
                r.headers.push(h("sluice.dlq.reason", why.to_string()));
                r.headers.push(h("sluice.dlq.group", group.to_string()));
                r.headers.push(h("sluice.dlq.topic", topic.name.clone()));
                r.headers.push(h("sluice.dlq.partition", p.to_string()));
                r.headers.push(h("sluice.dlq.offset", r.offset.to_string()));
                r.headers
                    .push(h("sluice.dlq.deliveries", deliveries.to_string()));
                Some(r)
            })
            .collect();
        if out.is_empty() {
            continue;
        }
        let target = dlq
            .partition(p % dlq.partitions.len().max(1) as i32)
            .cloned();
        let written = crate::records::encode_batch(&out, crate::records::Compression::None)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                target
                    .ok_or_else(|| "no partition".to_string())?
                    .append(&b, usize::MAX, None)
                    .map_err(|e| e.to_string())
            });
        match written {
            Ok(_) => {
                ctx.broker.notify_appended();
                tracing::warn!(group, topic = %topic.name, partition = p, records = out.len(), dlq = %dlq_name, "share records dead-lettered");
            }
            Err(e) => {
                tracing::error!(group, topic = %topic.name, partition = p, error = %e, "dead-lettering failed")
            }
        }
    }
}

/// Writes the start offsets that moved since they were last persisted.
fn persist_moved(ctx: &Ctx<'_>, group: &str) {
    let moved: Vec<(Uuid, i32, i64)> = ctx.broker.groups.with_share(group, |g| {
        g.partitions
            .iter_mut()
            .filter(|(_, sp)| sp.spso != sp.persisted_spso)
            .map(|((t, p), sp)| {
                sp.persisted_spso = sp.spso;
                (*t, *p, sp.spso)
            })
            .collect()
    });
    for (t, p, spso) in moved {
        if let Some(topic) = ctx.broker.topic_by_id(t) {
            ctx.broker
                .groups
                .persist_share_start(group, &topic.name, p, spso);
        }
    }
}

/// Applies acknowledgement batches; returns the error code per (topic, partition).
fn apply_acks(ctx: &Ctx<'_>, group: &str, member: &str, acks: Acks) -> Vec<((Uuid, i32), i16)> {
    let out = ctx.broker.groups.with_share(group, |g| {
        acks.into_iter()
            .map(|(t, p, batches)| {
                let mut e = 0;
                match g.partitions.get_mut(&(t, p)) {
                    None => e = err::INVALID_RECORD_STATE,
                    Some(sp) => {
                        for (first, last, types) in batches {
                            if let Err(x) = sp.acknowledge(member, first, last, &types) {
                                e = x;
                            }
                        }
                    }
                }
                ((t, p), e)
            })
            .collect()
    });
    dead_letter(ctx, group);
    persist_moved(ctx, group);
    out
}

/// Reads whole batches covering `first..=last`, stopping at `MAX_READ` bytes. Returns the data
/// and the first offset it does not cover.
/// Whole batches covering `first..=last`, at most `cap` bytes (but at least one batch).
fn read_range(part: &crate::broker::Partition, first: i64, last: i64, cap: usize) -> (Bytes, i64) {
    let cap = cap.min(MAX_READ);
    let mut out = BytesMut::new();
    let mut next = first;
    while next <= last && out.len() < cap {
        let Ok((_, Some(slice))) = part.plan_read(next) else {
            break;
        };
        let Ok(data) = slice.read(cap - out.len(), out.is_empty()) else {
            break;
        };
        if data.is_empty() {
            break;
        }
        if let Some((end, _)) = batch::span(&data) {
            next = end;
        }
        out.extend_from_slice(&data);
    }
    (out.freeze(), next)
}

pub async fn fetch(ctx: &Ctx<'_>, req: ShareFetchRequest) -> ShareFetchResponse {
    let mut r = ShareFetchResponse::default().with_acquisition_lock_timeout_ms(LOCK_MS as i32);
    let (Some(group), Some(member)) = (req.group_id.as_ref(), req.member_id.as_ref()) else {
        r.error_code = code(ResponseError::InvalidRequest);
        return r;
    };
    let (group, member) = (group.0.to_string(), member.to_string());
    if !super::group::may_read_group(ctx, &group) {
        r.error_code = code(ResponseError::GroupAuthorizationFailed);
        return r;
    }
    let denied = unreadable_topics(ctx, req.topics.iter().map(|t| t.topic_id));
    // A member that already left may still close its session with its last acknowledgements.
    if req.share_session_epoch != -1 && !ctx.broker.groups.share_member_known(&group, &member) {
        r.error_code = err::UNKNOWN_MEMBER_ID;
        return r;
    }
    let add: Vec<(Uuid, i32)> = req
        .topics
        .iter()
        .filter(|t| !denied.contains(&t.topic_id))
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic_id, p.partition_index))
        })
        .collect();
    let forget: Vec<(Uuid, i32)> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |&p| (t.topic_id, p)))
        .collect();
    let acks: Acks = req
        .topics
        .iter()
        .filter(|t| !denied.contains(&t.topic_id))
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| !p.acknowledgement_batches.is_empty())
                .map(move |p| {
                    let b = p.acknowledgement_batches.iter();
                    ack_batches(
                        t.topic_id,
                        p.partition_index,
                        b.map(|b| (b.first_offset, b.last_offset, &b.acknowledge_types)),
                    )
                })
        })
        .collect();
    // Acknowledgements first (a closing request's too), then the session moves on.
    let ack_errors = apply_acks(ctx, &group, &member, acks);
    let session = ctx.broker.groups.with_share(&group, |g| {
        g.session(&member, req.share_session_epoch, &add, &forget, now_ms())
    });
    let parts = match session {
        Ok(p) => p,
        Err(e) => {
            r.error_code = e;
            return r;
        }
    };
    // As Kafka, READ is checked on every partition of the session, not only on those this
    // request names: a grant revoked mid-session stops the deliveries at the next fetch.
    let revoked = unreadable_topics(ctx, parts.iter().map(|&(t, _)| t));
    let closing = req.share_session_epoch == -1;
    let max_records = if req.max_records > 0 {
        req.max_records as usize
    } else {
        DEFAULT_MAX_RECORDS
    };
    let from_earliest = ctx
        .broker
        .groups
        .group_config(&group, |c| c.share_from_earliest());
    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let mut appended = ctx.broker.subscribe_appends();
    let mut by_topic: std::collections::BTreeMap<Uuid, Vec<PartitionData>> = Default::default();
    loop {
        appended.borrow_and_update();
        by_topic.clear();
        let mut any = false;
        let mut budget = max_records;
        // The response as a whole stays under fetch_max_bytes, as a Fetch's does.
        let mut bytes_left = ctx.broker.limits.fetch_budget(req.max_bytes);
        for &(tid, p) in &parts {
            let mut pd = PartitionData::default()
                .with_partition_index(p)
                .with_records(Some(Bytes::new()));
            if let Some(&(_, e)) = ack_errors.iter().find(|(k, _)| *k == (tid, p)) {
                pd.acknowledge_error_code = e;
            }
            if revoked.contains(&tid) {
                pd.error_code = code(ResponseError::TopicAuthorizationFailed);
                // Its acknowledgements were not applied: the client must not take them as done.
                let acked = req.topics.iter().any(|t| {
                    t.topic_id == tid
                        && t.partitions.iter().any(|x| {
                            x.partition_index == p && !x.acknowledgement_batches.is_empty()
                        })
                });
                if acked {
                    pd.acknowledge_error_code = code(ResponseError::TopicAuthorizationFailed);
                }
                by_topic.entry(tid).or_default().push(pd);
                // An error to tell: answered now, not after the long poll.
                any = true;
                continue;
            }
            let topic = ctx.broker.topic_by_id(tid);
            let part = topic.as_ref().and_then(|t| t.partition(p).cloned());
            let Some(part) = part else {
                pd.error_code = code(ResponseError::UnknownTopicOrPartition);
                by_topic.entry(tid).or_default().push(pd);
                continue;
            };
            if !closing && budget > 0 && bytes_left > 0 {
                let wm = part.watermarks();
                let known = ctx
                    .broker
                    .groups
                    .with_share(&group, |g| g.partitions.contains_key(&(tid, p)));
                // A partition new to this process resumes where the group last finished it.
                let start = if known {
                    None
                } else {
                    let name = topic.as_ref().map(|t| t.name.clone()).unwrap_or_default();
                    ctx.broker.groups.share_start(&group, &name, p)
                };
                let acquired = ctx.broker.groups.with_share(&group, |g| {
                    let sp = g.partitions.entry((tid, p)).or_insert_with(|| {
                        SharePartition::new(start.unwrap_or(if from_earliest {
                            wm.log_start
                        } else {
                            wm.high
                        }))
                    });
                    sp.acquire(&member, wm.log_start, wm.high, budget, now_ms())
                });
                if let (Some(first), Some(last)) = (acquired.first(), acquired.last()) {
                    let (data, covered_to) = read_range(&part, first.first, last.last, bytes_left);
                    bytes_left = bytes_left.saturating_sub(data.len());
                    let mut sent = Vec::new();
                    for a in &acquired {
                        if a.first < covered_to {
                            sent.push(
                                AcquiredRecords::default()
                                    .with_first_offset(a.first)
                                    .with_last_offset(a.last.min(covered_to - 1))
                                    .with_delivery_count(a.deliveries),
                            );
                        }
                    }
                    if covered_to <= last.last {
                        ctx.broker.groups.with_share(&group, |g| {
                            if let Some(sp) = g.partitions.get_mut(&(tid, p)) {
                                sp.unacquire(&member, covered_to);
                            }
                        });
                    }
                    let n: i64 = sent
                        .iter()
                        .map(|a| a.last_offset - a.first_offset + 1)
                        .sum();
                    budget = budget.saturating_sub(n as usize);
                    any |= n > 0;
                    pd.records = Some(data);
                    pd.acquired_records = sent;
                }
            }
            by_topic.entry(tid).or_default().push(pd);
        }
        if any || closing || Instant::now() >= deadline {
            break;
        }
        // Nothing to hand out: wait for new records, or a lock to lapse (checked each second).
        let wake = (Instant::now() + Duration::from_secs(1)).min(deadline);
        tokio::select! {
            _ = appended.changed() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    for t in req.topics.iter().filter(|t| denied.contains(&t.topic_id)) {
        by_topic.entry(t.topic_id).or_default().extend(
            t.partitions
                .iter()
                .filter(|p| !parts.contains(&(t.topic_id, p.partition_index)))
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                        .with_records(Some(Bytes::new()))
                }),
        );
    }
    r.responses = by_topic
        .into_iter()
        .map(|(t, ps)| {
            ShareFetchableTopicResponse::default()
                .with_topic_id(t)
                .with_partitions(ps)
        })
        .collect();
    r
}

pub fn acknowledge(ctx: &Ctx<'_>, req: ShareAcknowledgeRequest) -> ShareAcknowledgeResponse {
    let mut r = ShareAcknowledgeResponse::default();
    let (Some(group), Some(member)) = (req.group_id.as_ref(), req.member_id.as_ref()) else {
        r.error_code = code(ResponseError::InvalidRequest);
        return r;
    };
    let (group, member) = (group.0.to_string(), member.to_string());
    if !super::group::may_read_group(ctx, &group) {
        r.error_code = code(ResponseError::GroupAuthorizationFailed);
        return r;
    }
    let denied = unreadable_topics(ctx, req.topics.iter().map(|t| t.topic_id));
    if req.share_session_epoch == 0 {
        r.error_code = err::INVALID_SHARE_SESSION_EPOCH;
        return r;
    }
    let acks: Acks = req
        .topics
        .iter()
        .filter(|t| !denied.contains(&t.topic_id))
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                let b = p.acknowledgement_batches.iter();
                ack_batches(
                    t.topic_id,
                    p.partition_index,
                    b.map(|b| (b.first_offset, b.last_offset, &b.acknowledge_types)),
                )
            })
        })
        .collect();
    let errors = apply_acks(ctx, &group, &member, acks);
    if let Err(e) = ctx.broker.groups.with_share(&group, |g| {
        g.session(&member, req.share_session_epoch, &[], &[], now_ms())
    }) {
        r.error_code = e;
    }
    let mut by_topic: std::collections::BTreeMap<
        Uuid,
        Vec<share_acknowledge_response::PartitionData>,
    > = Default::default();
    let refused = req
        .topics
        .iter()
        .filter(|t| denied.contains(&t.topic_id))
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    (t.topic_id, p.partition_index),
                    code(ResponseError::TopicAuthorizationFailed),
                )
            })
        });
    for ((t, p), e) in errors.into_iter().chain(refused) {
        by_topic.entry(t).or_default().push(
            share_acknowledge_response::PartitionData::default()
                .with_partition_index(p)
                .with_error_code(e),
        );
    }
    r.responses = by_topic
        .into_iter()
        .map(|(t, ps)| {
            share_acknowledge_response::ShareAcknowledgeTopicResponse::default()
                .with_topic_id(t)
                .with_partitions(ps)
        })
        .collect();
    r
}
