//! CreateTopics, CreatePartitions and DeleteTopics.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::Operation;
use crate::broker::config::TopicConfig;
use crate::broker::BrokerError;

pub(super) fn broker_error_code(e: &BrokerError) -> ResponseError {
    match e {
        BrokerError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        BrokerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        BrokerError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        BrokerError::InvalidPartitions(_) | BrokerError::InvalidPartitionIncrease { .. } => {
            ResponseError::InvalidPartitions
        }
        // Kafka 4.4 answers a refused dynamic thread count so.
        BrokerError::Config(crate::broker::config::ConfigError::CleanerThreadsStep { .. }) => {
            ResponseError::InvalidRequest
        }
        BrokerError::Config(_) => ResponseError::InvalidConfig,
        BrokerError::Log(_) | BrokerError::Io { .. } => ResponseError::KafkaStorageError,
        _ => ResponseError::UnknownServerError,
    }
}

/// A manual assignment is valid on a single node when it names this node, once: the
/// assignment clients compute from our metadata.
fn check_replicas(node: i32, replicas: &[BrokerId]) -> Result<(), (ResponseError, String)> {
    match replicas {
        [only] if only.0 == node => Ok(()),
        [] => Err((
            ResponseError::InvalidReplicaAssignment,
            "a partition was assigned no replicas".to_string(),
        )),
        _ => Err((
            ResponseError::InvalidReplicaAssignment,
            format!(
                "replicas {:?} requested, but the only broker is {node}",
                replicas.iter().map(|r| r.0).collect::<Vec<_>>()
            ),
        )),
    }
}

pub fn create_topics(ctx: &Ctx<'_>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let b = ctx.broker;
    let mut resp = CreateTopicsResponse::default();
    // As Kafka: a name given more than once is refused (one result, INVALID_REQUEST) and
    // none of its entries is created.
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut reported = std::collections::HashSet::<String>::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        if seen[&name] > 1 {
            if reported.insert(name.clone()) {
                resp.topics.push(
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(sb("Duplicate topic name."))),
                );
            }
            continue;
        }
        let mut r = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let outcome = (|| {
            if !ctx.broker.may_create_topic(ctx.principal, ctx.peer, &name) {
                return Err((
                    ResponseError::TopicAuthorizationFailed,
                    "Authorization failed.".to_string(),
                ));
            }
            if t.replication_factor > 1 {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "replication factor {} is larger than the 1 available broker",
                        t.replication_factor
                    ),
                ));
            }
            let mut num_partitions = t.num_partitions;
            if !t.assignments.is_empty() {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err((
                        ResponseError::InvalidRequest,
                        "numPartitions or replicationFactor was set together with a manual \
                         replica assignment; only one may be given"
                            .to_string(),
                    ));
                }
                let mut indexes: Vec<i32> =
                    t.assignments.iter().map(|a| a.partition_index).collect();
                indexes.sort_unstable();
                if indexes.iter().enumerate().any(|(i, &p)| p != i as i32) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        "the assigned partitions must be numbered 0, 1, 2... without gaps"
                            .to_string(),
                    ));
                }
                for a in &t.assignments {
                    check_replicas(b.config.node_id, &a.broker_ids)?;
                }
                num_partitions = t.assignments.len() as i32;
            }
            let mut pairs = Vec::with_capacity(t.configs.len());
            for c in &t.configs {
                let Some(v) = c.value.as_ref() else {
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("config '{}' has a null value", c.name.as_str()),
                    ));
                };
                pairs.push((c.name.as_str(), v.as_str()));
            }
            let config = TopicConfig::from_pairs(pairs)
                .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
            b.create_topic(&name, num_partitions, config, req.validate_only)
                .map_err(|e| (broker_error_code(&e), e.to_string()))
        })();
        match outcome {
            Ok(topic) => {
                r.topic_id = topic.id;
                r.num_partitions = if req.validate_only {
                    if !t.assignments.is_empty() {
                        t.assignments.len() as i32
                    } else if t.num_partitions == -1 {
                        b.config.default_partitions
                    } else {
                        t.num_partitions
                    }
                } else {
                    topic.partitions.len() as i32
                };
                r.replication_factor = 1;
                // As Kafka: the effective configs go only to who may describe them.
                if ctx.version >= 5 && !ctx.may(Operation::DescribeConfigs, &name) {
                    r.topic_config_error_code = code(ResponseError::TopicAuthorizationFailed);
                } else if ctx.version >= 5 {
                    r.configs = Some(
                        topic
                            .config()
                            .entries(&b.defaults())
                            .into_iter()
                            .map(|e| {
                                CreatableTopicConfigs::default()
                                    .with_name(sb(e.key))
                                    .with_value(Some(sb(e.value)))
                                    .with_config_source(if e.is_default { 5 } else { 1 })
                            })
                            .collect(),
                    );
                }
            }
            Err((e, msg)) => {
                r.error_code = code(e);
                r.error_message = Some(sb(msg));
            }
        }
        resp.topics.push(r);
    }
    resp
}

pub fn delete_topics(ctx: &Ctx<'_>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let b = ctx.broker;
    // v6 names topics by name or id; earlier versions by name only.
    let targets: Vec<(Option<TopicName>, uuid::Uuid)> = if ctx.version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let topic = match &name {
            Some(n) => b.topic(n.0.as_str()),
            None => b.topic_by_id(id),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let may_delete = |n: &str| ctx.may(Operation::Delete, n);
        match topic {
            Some(t) if !may_delete(&t.name) => {
                // Asked by id, the name is told to a caller that may see the topic (Kafka).
                if ctx.may(Operation::Describe, &t.name) {
                    r.name = Some(TopicName(sb(t.name.clone())));
                }
                r.error_code = code(ResponseError::TopicAuthorizationFailed);
            }
            // As Kafka's controller: without DESCRIBE a caller cannot tell a missing topic
            // from a forbidden one; with it, a missing topic is reported before DELETE.
            None if name
                .as_ref()
                .is_some_and(|n| !ctx.may(Operation::Describe, n.0.as_str())) =>
            {
                r.error_code = code(ResponseError::TopicAuthorizationFailed);
            }
            None => {
                r.error_code = code(if name.is_none() {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                });
            }
            Some(t) => {
                r.name = Some(TopicName(sb(t.name.clone())));
                r.topic_id = t.id;
                if let Err(e) = b.delete_topic(&t.name) {
                    r.error_code = code(broker_error_code(&e));
                    r.error_message = Some(sb(e.to_string()));
                }
            }
        }
        resp.responses.push(r);
    }
    resp
}

pub fn create_partitions(ctx: &Ctx<'_>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let node = ctx.broker.config.node_id;
        if !ctx.may(Operation::Alter, t.name.0.as_str()) {
            r.error_code = code(ResponseError::TopicAuthorizationFailed);
            r.error_message = Some(sb("Authorization failed."));
            resp.results.push(r);
            continue;
        }
        let outcome = match t.assignments.as_ref().filter(|a| !a.is_empty()) {
            Some(assignments) => {
                let current = ctx
                    .broker
                    .topic(t.name.0.as_str())
                    .map_or(0, |topic| topic.partitions.len() as i32);
                if current + assignments.len() as i32 != t.count {
                    Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "{} assignments given for {} new partitions",
                            assignments.len(),
                            t.count - current
                        ),
                    ))
                } else {
                    assignments
                        .iter()
                        .try_for_each(|a| check_replicas(node, &a.broker_ids))
                }
            }
            None => Ok(()),
        }
        .and_then(|()| {
            ctx.broker
                .create_partitions(t.name.0.as_str(), t.count, req.validate_only)
                .map_err(|e| (broker_error_code(&e), e.to_string()))
        });
        if let Err((e, msg)) = outcome {
            r.error_code = code(e);
            r.error_message = Some(sb(msg));
        }
        resp.results.push(r);
    }
    resp
}
