//! OffsetCommit and OffsetFetch.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::{Operation, Resource};
use crate::group::CommitEntry;

pub fn commit(ctx: &Ctx<'_>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let b = ctx.broker;
    let mut entries: Vec<CommitEntry> = Vec::new();
    // Partitions that cannot be committed whatever the group says.
    let mut unknown = Vec::new();
    let mut forbidden = Vec::new();
    let group_denied = !super::group::may_read_group(ctx, req.group_id.0.as_str());
    for t in &req.topics {
        let topic = b.topic(t.name.0.as_str());
        let topic_denied = !ctx.may(Operation::Read, t.name.0.as_str());
        for p in &t.partitions {
            if group_denied || topic_denied {
                forbidden.push((t.name.0.to_string(), p.partition_index));
                continue;
            }
            if topic
                .as_ref()
                .and_then(|tt| tt.partition(p.partition_index))
                .is_none()
            {
                unknown.push((t.name.0.to_string(), p.partition_index));
                continue;
            }
            entries.push((
                t.name.0.to_string(),
                p.partition_index,
                p.committed_offset,
                if ctx.version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                p.committed_metadata
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    let e = if group_denied {
        code(ResponseError::GroupAuthorizationFailed)
    } else {
        b.groups.commit(
            req.group_id.0.as_str(),
            req.member_id.as_str(),
            req.generation_id_or_member_epoch,
            entries,
        )
    };
    let mut r = OffsetCommitResponse::default();
    for t in req.topics {
        let mut tr = OffsetCommitResponseTopic::default().with_name(t.name.clone());
        for p in t.partitions {
            let key = (t.name.0.to_string(), p.partition_index);
            let pe = if group_denied {
                e
            } else if forbidden.contains(&key) {
                code(ResponseError::TopicAuthorizationFailed)
            } else if unknown.contains(&key) {
                code(ResponseError::UnknownTopicOrPartition)
            } else {
                e
            };
            tr.partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(pe),
            );
        }
        r.topics.push(tr);
    }
    r
}

/// (topic, [(partition, offset, leader epoch, metadata)]) for one group and topic selection.
type Fetched = Vec<(String, Vec<(i32, i64, i32, String)>)>;

/// UNSTABLE_OFFSET_COMMIT: a transaction has staged an offset for the partition and not ended
/// yet; a client asking with `require_stable` (KIP-447) retries until it has.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// The error of one fetched row: unstable while a transaction holds a pending offset for it.
fn row_error(ctx: &Ctx<'_>, require_stable: bool, group: &str, topic: &str, p: i32) -> i16 {
    if !ctx.may(Operation::Describe, topic) {
        code(ResponseError::TopicAuthorizationFailed)
    } else if require_stable
        && ctx
            .broker
            .txns
            .offset_pending(group, &(topic.to_string(), p))
    {
        UNSTABLE_OFFSET_COMMIT
    } else {
        0
    }
}

fn fetch_group(ctx: &Ctx<'_>, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Fetched {
    let g = &ctx.broker.groups;
    match topics {
        // Null topics: everything the group has committed.
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, i64, i32, String)>> =
                Default::default();
            // Only the topics the caller may describe.
            for (t, p, c) in g.committed_all(group) {
                if !ctx.may(Operation::Describe, &t) {
                    continue;
                }
                by_topic
                    .entry(t)
                    .or_default()
                    .push((p, c.offset, c.leader_epoch, c.metadata));
            }
            by_topic.into_iter().collect()
        }
        Some(list) => list
            .into_iter()
            .map(|(t, parts)| {
                let rows = parts
                    .into_iter()
                    .map(|p| match g.committed(group, &t, p) {
                        Some(c) => (p, c.offset, c.leader_epoch, c.metadata),
                        None => (p, -1, -1, String::new()),
                    })
                    .collect();
                (t, rows)
            })
            .collect(),
    }
}

/// A partition refused (a topic the caller may not describe, an unstable offset) tells
/// nothing of its commit: no metadata and no leader epoch either, as Kafka answers.
fn hidden_unless_ok(err: i16, epoch: i32, metadata: String) -> (i32, String) {
    if err == 0 {
        (epoch, metadata)
    } else {
        (-1, String::new())
    }
}

pub fn fetch(ctx: &Ctx<'_>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let mut r = OffsetFetchResponse::default();
    if ctx.version >= 8 {
        for grp in req.groups {
            let topics = grp.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let group = grp.group_id.0.to_string();
            let mut gr = OffsetFetchResponseGroup::default().with_group_id(grp.group_id);
            if !ctx.allowed(Operation::Describe, Resource::Group, &group) {
                gr.error_code = code(ResponseError::GroupAuthorizationFailed);
                r.groups.push(gr);
                continue;
            }
            let fetched = fetch_group(ctx, &group, topics);
            gr.topics = fetched
                .into_iter()
                .map(|(t, rows)| {
                    let parts = rows
                        .into_iter()
                        .map(|(p, o, e, m)| {
                            let err = row_error(ctx, req.require_stable, &group, &t, p);
                            let (e, m) = hidden_unless_ok(err, e, m);
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p)
                                .with_committed_offset(if err == 0 { o } else { -1 })
                                .with_committed_leader_epoch(e)
                                .with_metadata(Some(sb(m)))
                                .with_error_code(err)
                        })
                        .collect();
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(sb(t)))
                        .with_partitions(parts)
                })
                .collect();
            r.groups.push(gr);
        }
        return r;
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let group = req.group_id.0.to_string();
    if !ctx.allowed(Operation::Describe, Resource::Group, &group) {
        r.error_code = code(ResponseError::GroupAuthorizationFailed);
        return r;
    }
    let fetched = fetch_group(ctx, &group, topics);
    let require_stable = ctx.version >= 7 && req.require_stable;
    r.topics = fetched
        .into_iter()
        .map(|(t, rows)| {
            let t2 = t.clone();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(sb(t)))
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, o, e, m)| {
                            let err = row_error(ctx, require_stable, &group, &t2, p);
                            let (e, m) = hidden_unless_ok(err, e, m);
                            let mut pr = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(if err == 0 { o } else { -1 })
                                .with_error_code(err)
                                .with_metadata(Some(sb(m)));
                            if ctx.version >= 5 {
                                pr.committed_leader_epoch = e;
                            }
                            pr
                        })
                        .collect(),
                )
        })
        .collect();
    r
}

pub fn delete(ctx: &Ctx<'_>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut r = OffsetDeleteResponse::default();
    if !ctx.allowed(Operation::Delete, Resource::Group, req.group_id.0.as_str()) {
        r.error_code = code(ResponseError::GroupAuthorizationFailed);
        return r;
    }
    // Partitions of topics the caller may not read are refused one by one; the rest go ahead.
    let (wanted, forbidden): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|(t, _)| ctx.may(Operation::Read, t));
    match ctx
        .broker
        .groups
        .delete_offsets(req.group_id.0.as_str(), &wanted)
    {
        Err(e) => r.error_code = e,
        Ok(codes) => {
            let mut codes = codes.into_iter();
            for t in req.topics {
                let mut tr = OffsetDeleteResponseTopic::default().with_name(t.name.clone());
                for p in t.partitions {
                    let e = if forbidden.contains(&(t.name.0.to_string(), p.partition_index)) {
                        code(ResponseError::TopicAuthorizationFailed)
                    } else {
                        codes.next().unwrap_or(0)
                    };
                    tr.partitions.push(
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(e),
                    );
                }
                r.topics.push(tr);
            }
        }
    }
    r
}
