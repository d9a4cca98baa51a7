//! KIP-848 consumer groups: ConsumerGroupHeartbeat and ConsumerGroupDescribe. The rules live
//! in `group::consumer`.

use kafka_protocol::messages::consumer_group_describe_response as describe;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};

use super::describe_cluster::operations::NOT_REQUESTED;
use super::{code, sb, Ctx};
use crate::auth::acl::{Operation, Resource};
use crate::group::consumer::Heartbeat;
use kafka_protocol::ResponseError;

const GROUP_ID_NOT_FOUND: i16 = 69;

pub fn heartbeat(
    ctx: &Ctx<'_>,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let interval = ctx
        .broker
        .groups
        .group_config(req.group_id.0.as_str(), |c| c.heartbeat_interval_ms());
    let mut r = ConsumerGroupHeartbeatResponse::default().with_heartbeat_interval_ms(interval);
    if !super::group::may_read_group(ctx, req.group_id.0.as_str()) {
        r.error_code = code(ResponseError::GroupAuthorizationFailed);
        return r;
    }
    if req.group_id.0.is_empty() {
        // As Kafka's coordinator: refused before any group is touched.
        r.error_code = code(ResponseError::InvalidRequest);
        r.error_message = Some(sb("GroupId can't be empty."));
        return r;
    }
    // A subscription may name only topics the member may describe (as Kafka checks it).
    if let Some(message) =
        super::group::undescribable(ctx, req.subscribed_topic_names.iter().flatten())
    {
        r.error_code = code(ResponseError::TopicAuthorizationFailed);
        r.error_message = Some(sb(message));
        return r;
    }
    let owned = req.topic_partitions.map(|tps| {
        tps.into_iter()
            .map(|tp| (tp.topic_id, tp.partitions.into_iter().collect()))
            .collect()
    });
    let hb = Heartbeat {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed: req
            .subscribed_topic_names
            .map(|ns| ns.into_iter().map(|n| n.0.to_string()).collect()),
        subscribed_regex: req.subscribed_topic_regex.map(|r| r.to_string()),
        owned,
        client_id: ctx.client_id.unwrap_or_default().to_string(),
        client_host: ctx.client_host(),
        principal: ctx.principal.to_string(),
    };
    let topics = ctx.broker.topic_info();
    let (group, member, epoch) = (hb.group_id.clone(), hb.member_id.clone(), hb.member_epoch);
    let acls = &ctx.broker.acls;
    let describable = |principal: &str, host: &str, topic: &str| {
        acls.allowed(principal, host, Operation::Describe, Resource::Topic, topic)
    };
    let o = ctx
        .broker
        .groups
        .consumer_heartbeat(hb, &topics, &describable);
    if o.error != 0 {
        tracing::debug!(%group, %member, epoch, error = o.error, message = ?o.message, "consumer group heartbeat refused");
    }
    r.error_code = o.error;
    r.error_message = o.message.map(sb);
    r.member_id = Some(sb(o.member_id));
    r.member_epoch = o.member_epoch;
    r.assignment = o.assignment.map(|a| {
        Assignment::default().with_topic_partitions(
            a.into_iter()
                .map(|(tid, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(tid)
                        .with_partitions(ps.into_iter().collect())
                })
                .collect(),
        )
    });
    r
}

pub fn describe(ctx: &Ctx<'_>, req: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    let mut r = ConsumerGroupDescribeResponse::default();
    for gid in req.group_ids {
        let mut d = describe::DescribedGroup::default()
            .with_group_id(gid.clone())
            .with_authorized_operations(ctx.operations(
                req.include_authorized_operations,
                Resource::Group,
                gid.0.as_str(),
            ));
        if !ctx.allowed(Operation::Describe, Resource::Group, gid.0.as_str()) {
            d.authorized_operations = NOT_REQUESTED;
            d.error_code = code(ResponseError::GroupAuthorizationFailed);
            r.groups.push(d);
            continue;
        }
        match ctx.broker.groups.describe(gid.0.as_str()) {
            Some(crate::group::GroupView {
                consumer: Some(detail),
                state,
                protocol,
                members,
                owned,
                ..
            }) => {
                d.group_state = sb(state);
                d.assignor_name = sb(protocol);
                d.group_epoch = detail.group_epoch;
                d.assignment_epoch = detail.assignment_epoch;
                let partitions = |a: crate::group::consumer::Assignment| {
                    let tps = a
                        .into_iter()
                        .map(|(tid, ps)| {
                            let name = ctx
                                .broker
                                .topic_by_id(tid)
                                .map(|t| t.name.clone())
                                .unwrap_or_default();
                            describe::TopicPartitions::default()
                                .with_topic_id(tid)
                                .with_topic_name(TopicName(sb(name)))
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect::<Vec<_>>();
                    describe::Assignment::default().with_topic_partitions(tps)
                };
                d.members = members
                    .into_iter()
                    .zip(owned)
                    .zip(detail.members)
                    .map(|(((id, inst, client, host, _, _), owned), x)| {
                        describe::Member::default()
                            .with_member_id(sb(id))
                            .with_instance_id(inst.map(sb))
                            .with_client_id(sb(client))
                            .with_client_host(sb(host))
                            .with_assignment(partitions(owned))
                            // Every member of a KIP-848 group speaks the consumer protocol
                            // here (no classic members join one).
                            .with_member_type(1)
                            .with_member_epoch(x.epoch)
                            .with_subscribed_topic_names(
                                x.subscribed_names
                                    .into_iter()
                                    .map(|n| TopicName(sb(n)))
                                    .collect(),
                            )
                            .with_subscribed_topic_regex(x.regex.map(sb))
                            .with_target_assignment(partitions(x.target))
                    })
                    .collect();
                // As Kafka: the members' assigned topics are part of the answer, so every one
                // of them must be describable, or the group is refused whole.
                let hidden = d.members.iter().any(|m| {
                    m.assignment
                        .topic_partitions
                        .iter()
                        .chain(&m.target_assignment.topic_partitions)
                        .any(|t| !ctx.may(Operation::Describe, t.topic_name.0.as_str()))
                });
                if hidden {
                    d = describe::DescribedGroup::default()
                        .with_group_id(gid.clone())
                        .with_authorized_operations(NOT_REQUESTED)
                        .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                        .with_error_message(Some(sb(
                            "the group's members use topics the caller may not describe",
                        )));
                }
            }
            _ => {
                d.error_code = GROUP_ID_NOT_FOUND;
                d.error_message = Some(sb(format!(
                    "group '{}' is not a consumer-protocol group",
                    gid.0.as_str()
                )));
            }
        }
        r.groups.push(d);
    }
    r
}
