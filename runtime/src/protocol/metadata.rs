//! Metadata: which topics and partitions exist and which broker leads them (always us).

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::{Operation, Resource};
use crate::broker::{valid_topic_name, Topic};

fn describe(topic: &Topic, node: i32) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default()
        .with_name(Some(TopicName(sb(topic.name.clone()))))
        .with_topic_id(topic.id);
    t.partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect();
    t
}

pub fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let b = ctx.broker;
    let node = b.config.node_id;
    let mut r = MetadataResponse::default();
    r.brokers = vec![MetadataResponseBroker::default()
        .with_node_id(BrokerId(node))
        .with_host(sb(ctx.listener.advertised_host.clone()))
        .with_port(ctx.listener.advertised_port)];
    if ctx.version >= 2 {
        r.cluster_id = Some(sb(b.cluster_id.clone()));
    }
    r.controller_id = BrokerId(node);
    if (8..=10).contains(&ctx.version) {
        r.cluster_authorized_operations = ctx.operations(
            req.include_cluster_authorized_operations,
            Resource::Cluster,
            "kafka-cluster",
        );
    }
    let want_ops = ctx.version >= 8 && req.include_topic_authorized_operations;
    let topic_ops = |name: &str| ctx.operations(want_ops, Resource::Topic, name);
    // v0 asks for every topic with an empty list; v1+ with a null one.
    let wanted = match req.topics {
        None => None,
        Some(ts) if ts.is_empty() && ctx.version == 0 => None,
        Some(ts) => Some(ts),
    };
    // Before v4 there was no flag, and Kafka auto-created on any metadata request.
    let allow_create = ctx.version < 4 || req.allow_auto_topic_creation;
    r.topics = match wanted {
        // Every topic: those the caller may not describe are left out, as Kafka does.
        None => b
            .topics()
            .iter()
            .filter(|t| ctx.may(Operation::Describe, &t.name))
            .map(|t| describe(t, node).with_topic_authorized_operations(topic_ops(&t.name)))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|want| {
                let found = match &want.name {
                    Some(name) => {
                        let name = name.0.as_str();
                        if !valid_topic_name(name) {
                            return MetadataResponseTopic::default()
                                .with_name(Some(TopicName(sb(name))))
                                .with_error_code(code(ResponseError::InvalidTopicException));
                        }
                        if !ctx.may(Operation::Describe, name) {
                            return MetadataResponseTopic::default()
                                .with_name(Some(TopicName(sb(name))))
                                .with_error_code(code(ResponseError::TopicAuthorizationFailed));
                        }
                        let may_create = b.may_create_topic(ctx.principal, ctx.peer, name);
                        match b.topic(name) {
                            Some(t) => Some(t),
                            // As Kafka: asked to create a topic it may see but not create,
                            // the caller learns it lacks the right, not that the topic is
                            // missing (which a client would retry until its timeout).
                            None if allow_create && b.config.auto_create_topics && !may_create => {
                                return MetadataResponseTopic::default()
                                    .with_name(Some(TopicName(sb(name))))
                                    .with_error_code(code(
                                        ResponseError::TopicAuthorizationFailed,
                                    ));
                            }
                            // As Kafka: the request that auto-creates a topic is answered
                            // LEADER_NOT_AVAILABLE, without partitions, and clients ask again.
                            // (A client deleting a topic and then asking for its metadata with
                            // auto-creation on sees it gone, as kafka-go's tests expect.)
                            None if b.topic_or_create(name, allow_create).is_some() => {
                                return MetadataResponseTopic::default()
                                    .with_name(Some(TopicName(sb(name))))
                                    .with_error_code(code(ResponseError::LeaderNotAvailable));
                            }
                            None => None,
                        }
                    }
                    None => match b.topic_by_id(want.topic_id) {
                        // As Kafka: an id is not secret, so a topic the caller may not
                        // describe is refused by id, without its name.
                        Some(t) if !ctx.may(Operation::Describe, &t.name) => {
                            return MetadataResponseTopic::default()
                                .with_name(None)
                                .with_topic_id(want.topic_id)
                                .with_error_code(code(ResponseError::TopicAuthorizationFailed));
                        }
                        found => found,
                    },
                };
                match found {
                    Some(t) => {
                        let ops = topic_ops(&t.name);
                        describe(&t, node).with_topic_authorized_operations(ops)
                    }
                    None => MetadataResponseTopic::default()
                        .with_name(want.name)
                        .with_topic_id(want.topic_id)
                        .with_error_code(code(
                            if ctx.version >= 10 && want.topic_id != uuid::Uuid::nil() {
                                ResponseError::UnknownTopicId
                            } else {
                                ResponseError::UnknownTopicOrPartition
                            },
                        )),
                }
            })
            .collect(),
    };
    r
}
