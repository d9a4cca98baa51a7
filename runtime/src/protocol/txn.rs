//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
//! DescribeTransactions, ListTransactions, DescribeProducers. InitProducerId with a
//! transactional id is in `init_producer_id.rs`; the rules are in `txn/`.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::{Operation, Resource};
use crate::txn::state::{PendingOffset, TxnError};

/// KIP-588: clients from before PRODUCER_FENCED know it as INVALID_PRODUCER_EPOCH.
pub(crate) fn compat(err: i16, version: i16, fenced_since: i16) -> i16 {
    if err == TxnError::ProducerFenced.code() && version < fenced_since {
        code(ResponseError::InvalidProducerEpoch)
    } else {
        err
    }
}

fn result_of(r: Result<(), i16>) -> i16 {
    r.err().unwrap_or(0)
}

/// Answers every partition of `topics`: those of unknown topics with
/// UNKNOWN_TOPIC_OR_PARTITION, and the rest with `rest` (OPERATION_NOT_ATTEMPTED when
/// another partition failed, else the coordinator's answer).
fn add_partitions_one(
    ctx: &Ctx<'_>,
    txn_id: &str,
    pid: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    from_broker: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let b = ctx.broker;
    let mut parts = Vec::new();
    let mut unknown = Vec::new();
    let mut forbidden = Vec::new();
    // A broker's request (v4+) was authorized by its CLUSTER_ACTION, as Kafka does: the
    // producer's own rights were checked when it produced.
    let txn_denied = !from_broker && !may_write_txn(ctx, txn_id);
    for t in topics {
        let topic = b.topic(t.name.0.as_str());
        let denied = !from_broker && !ctx.may(Operation::Write, t.name.0.as_str());
        for &p in &t.partitions {
            let key = (t.name.0.to_string(), p);
            if txn_denied || denied {
                forbidden.push(key);
            } else if topic.as_ref().and_then(|t| t.partition(p)).is_some() {
                parts.push(key);
            } else {
                unknown.push(key);
            }
        }
    }
    let outcome = |key: &(String, i32)| -> i16 {
        if txn_denied {
            code(ResponseError::TransactionalIdAuthorizationFailed)
        } else if forbidden.contains(key) {
            code(ResponseError::TopicAuthorizationFailed)
        } else if !forbidden.is_empty() {
            code(ResponseError::OperationNotAttempted)
        } else if unknown.contains(key) {
            code(ResponseError::UnknownTopicOrPartition)
        } else if !unknown.is_empty() {
            code(ResponseError::OperationNotAttempted)
        } else {
            0
        }
    };
    let shared = if !unknown.is_empty() || !forbidden.is_empty() {
        0
    } else if verify_only {
        // KIP-890's broker-side check: answered per partition below.
        0
    } else {
        compat(
            result_of(b.txns.add_partitions(txn_id, pid, epoch, &parts)),
            ctx.version,
            2,
        )
    };
    let described = verify_only.then(|| b.txns.describe(txn_id));
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            let key = (t.name.0.to_string(), p);
                            let mut e = outcome(&key);
                            if e == 0 {
                                e = shared;
                            }
                            if e == 0 {
                                if let Some(d) = &described {
                                    let ok = d.as_ref().is_some_and(|d| {
                                        d.verify_produce(pid, epoch, &key).is_ok()
                                    });
                                    if !ok {
                                        e = TxnError::InvalidTxnState.code();
                                    }
                                }
                            }
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(e)
                        })
                        .collect(),
                )
        })
        .collect()
}

pub fn add_partitions(ctx: &Ctx<'_>, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let mut r = AddPartitionsToTxnResponse::default();
    if ctx.version <= 3 {
        r.results_by_topic_v3_and_below = add_partitions_one(
            ctx,
            req.v3_and_below_transactional_id.0.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &req.v3_and_below_topics,
            false,
            false,
        );
        return r;
    }
    // v4+ is the brokers' batched form (and its verify_only probe): CLUSTER_ACTION, as Kafka.
    if !ctx.may_cluster(crate::auth::acl::Operation::ClusterAction) {
        return r.with_error_code(super::code(
            kafka_protocol::ResponseError::ClusterAuthorizationFailed,
        ));
    }
    r.results_by_transaction = req
        .transactions
        .iter()
        .map(|t| {
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(add_partitions_one(
                    ctx,
                    t.transactional_id.0.as_str(),
                    t.producer_id.0,
                    t.producer_epoch,
                    &t.topics,
                    t.verify_only,
                    true,
                ))
        })
        .collect();
    r
}

/// Transactions take WRITE on their transactional id.
fn may_write_txn(ctx: &Ctx<'_>, txn_id: &str) -> bool {
    ctx.allowed(Operation::Write, Resource::TransactionalId, txn_id)
}

pub fn add_offsets(ctx: &Ctx<'_>, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    if !may_write_txn(ctx, req.transactional_id.0.as_str()) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed));
    }
    if !super::group::may_read_group(ctx, req.group_id.0.as_str()) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(code(ResponseError::GroupAuthorizationFailed));
    }
    let e = result_of(ctx.broker.txns.add_offsets(
        req.transactional_id.0.as_str(),
        req.producer_id.0,
        req.producer_epoch,
        req.group_id.0.as_str(),
    ));
    AddOffsetsToTxnResponse::default().with_error_code(compat(e, ctx.version, 2))
}

pub fn offset_commit(ctx: &Ctx<'_>, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let b = ctx.broker;
    let group = req.group_id.0.as_str();
    // KIP-447: the consumer's group generation, so a zombie that lost its partitions in a
    // rebalance cannot commit for them.
    let forbidden = |t: &str| !ctx.may(Operation::Read, t);
    let mut e = if !may_write_txn(ctx, req.transactional_id.0.as_str()) {
        code(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !super::group::may_read_group(ctx, group) {
        code(ResponseError::GroupAuthorizationFailed)
    } else {
        b.groups
            .check_txn_commit(group, req.member_id.as_str(), req.generation_id)
    };
    if e == 0 {
        let offsets = req
            .topics
            .iter()
            .filter(|t| !forbidden(t.name.0.as_str()))
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        (t.name.0.to_string(), p.partition_index),
                        PendingOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                        },
                    )
                })
            })
            .collect();
        e = compat(
            result_of(b.txns.stage_offsets(
                req.transactional_id.0.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                group,
                offsets,
                ctx.version >= 5,
            )),
            ctx.version,
            3,
        );
    }
    if e != 0 {
        tracing::debug!(txn = %req.transactional_id.0.as_str(), group, member = %req.member_id.as_str(), generation = req.generation_id, code = e, "TxnOffsetCommit refused");
    }
    TxnOffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(if e == 0 && forbidden(t.name.0.as_str()) {
                                        code(ResponseError::TopicAuthorizationFailed)
                                    } else {
                                        e
                                    })
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// EndTxn; v5 is transactions version 2: the epoch is bumped and returned.
pub fn end(ctx: &Ctx<'_>, req: EndTxnRequest) -> EndTxnResponse {
    if !may_write_txn(ctx, req.transactional_id.0.as_str()) {
        return EndTxnResponse::default()
            .with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let r = ctx.broker.txns.end(
        ctx.broker,
        req.transactional_id.0.as_str(),
        req.producer_id.0,
        req.producer_epoch,
        req.committed,
        ctx.version >= 5,
    );
    let (pid, epoch) = r.unwrap_or((-1, -1));
    let mut resp = EndTxnResponse::default()
        .with_error_code(compat(result_of(r.map(|_| ())), ctx.version, 2))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if ctx.version >= 5 {
        resp.producer_id = ProducerId(pid);
        resp.producer_epoch = epoch;
    }
    resp
}

pub fn describe(ctx: &Ctx<'_>, req: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let mut s = describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            if !ctx.allowed(
                Operation::Describe,
                Resource::TransactionalId,
                id.0.as_str(),
            ) {
                s.error_code = code(ResponseError::TransactionalIdAuthorizationFailed);
                return s;
            }
            match ctx.broker.txns.describe(id.0.as_str()) {
                None => s.error_code = code(ResponseError::TransactionalIdNotFound),
                Some(t) => {
                    s.transaction_state = sb(t.phase.name());
                    s.transaction_timeout_ms = t.timeout_ms;
                    s.transaction_start_time_ms = t.start_ms;
                    s.producer_id = ProducerId(t.producer_id);
                    s.producer_epoch = t.epoch;
                    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> =
                        Default::default();
                    for (topic, p) in t
                        .partitions
                        .iter()
                        .filter(|(t, _)| ctx.may(Operation::Describe, t))
                    {
                        by_topic.entry(topic).or_default().push(*p);
                    }
                    s.topics = by_topic
                        .into_iter()
                        .map(|(topic, ps)| {
                            TopicData::default()
                                .with_topic(TopicName(sb(topic)))
                                .with_partitions(ps)
                        })
                        .collect();
                }
            }
            s
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

pub fn list(ctx: &Ctx<'_>, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let now = crate::broker::now_ms();
    let states: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    let pattern = req
        .transactional_id_pattern
        .as_ref()
        .map(|p| regex::Regex::new(&format!("^(?:{})$", p.as_str())));
    if let Some(Err(_)) = &pattern {
        return ListTransactionsResponse::default()
            .with_error_code(code(ResponseError::InvalidRegularExpression));
    }
    let pattern = pattern.and_then(Result::ok);
    let rows = ctx
        .broker
        .txns
        .list()
        .into_iter()
        .filter(|(_, t)| states.is_empty() || states.iter().any(|s| s == t.phase.name()))
        .filter(|(_, t)| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(t.producer_id))
        })
        .filter(|(_, t)| {
            // KIP-994: only transactions open longer than this many ms.
            req.duration_filter < 0 || (t.start_ms >= 0 && now - t.start_ms >= req.duration_filter)
        })
        .filter(|(id, _)| pattern.as_ref().is_none_or(|p| p.is_match(id)))
        .filter(|(id, _)| ctx.allowed(Operation::Describe, Resource::TransactionalId, id))
        .map(|(id, t)| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(sb(id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(sb(t.phase.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(
            req.state_filters
                .into_iter()
                .filter(|s| !STATES.contains(&s.as_str()))
                .collect(),
        )
        .with_transaction_states(rows)
}

/// DescribeProducers: the producers each partition remembers and the first offset of each
/// one's open transaction (what `kafka-transactions.sh find-hanging` looks for).
pub fn describe_producers(
    ctx: &Ctx<'_>,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let denied = !ctx.may(Operation::Read, t.name.0.as_str());
            let topic = ctx.broker.topic(t.name.0.as_str()).filter(|_| !denied);
            TopicResponse::default().with_name(t.name).with_partitions(
                t.partition_indexes
                    .into_iter()
                    .map(|p| {
                        let mut pr = PartitionResponse::default().with_partition_index(p);
                        let Some(part) = topic.as_ref().and_then(|t| t.partition(p)) else {
                            pr.error_code = code(if denied {
                                ResponseError::TopicAuthorizationFailed
                            } else {
                                ResponseError::UnknownTopicOrPartition
                            });
                            return pr;
                        };
                        let open: std::collections::HashMap<i64, i64> =
                            part.open_transactions().into_iter().collect();
                        pr.active_producers = part
                            .producers()
                            .into_iter()
                            .map(|(id, epoch, seq, seen)| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(id))
                                    .with_producer_epoch(i32::from(epoch))
                                    .with_last_sequence(seq)
                                    .with_last_timestamp(seen)
                                    .with_coordinator_epoch(-1)
                                    .with_current_txn_start_offset(
                                        open.get(&id).copied().unwrap_or(-1),
                                    )
                            })
                            .collect();
                        pr
                    })
                    .collect(),
            )
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

/// WriteTxnMarkers: markers written straight into partitions. Kafka's coordinators send it to
/// partition leaders; here the coordinator writes its own markers, and this serves the
/// administrators' abort of a hanging transaction (`kafka-transactions.sh abort`,
/// `sluice txn abort`): a partition holding a transaction no coordinator will end.
pub fn write_markers(ctx: &Ctx<'_>, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    // KIP-664: ALTER on the cluster is the administrators' grant for the abort; brokers hold
    // CLUSTER_ACTION.
    let denied = !ctx.may_cluster(Operation::Alter) && !ctx.may_cluster(Operation::ClusterAction);
    let markers = req
        .markers
        .into_iter()
        .map(|m| {
            let topics = m
                .topics
                .into_iter()
                .map(|t| {
                    let topic = ctx.broker.topic(t.name.0.as_str());
                    let partitions = t
                        .partition_indexes
                        .into_iter()
                        .map(|p| {
                            let e = match topic.as_ref().and_then(|t| t.partition(p)) {
                                _ if denied => {
                                    code(ResponseError::ClusterAuthorizationFailed)
                                }
                                None => code(ResponseError::UnknownTopicOrPartition),
                                Some(part) => match part.write_marker(
                                    m.producer_id.0,
                                    m.producer_epoch,
                                    m.transaction_result,
                                    m.coordinator_epoch,
                                ) {
                                    Ok(at) => {
                                        tracing::warn!(topic = %t.name.0.as_str(), partition = p, producer_id = m.producer_id.0, commit = m.transaction_result, offset = ?at, "transaction marker written on request");
                                        0
                                    }
                                    Err(crate::broker::AppendError::InvalidProducerEpoch {
                                        ..
                                    }) => code(ResponseError::InvalidProducerEpoch),
                                    Err(e) => {
                                        tracing::error!(error = %e, "cannot write a transaction marker");
                                        code(ResponseError::KafkaStorageError)
                                    }
                                },
                            };
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(p)
                                .with_error_code(e)
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}
