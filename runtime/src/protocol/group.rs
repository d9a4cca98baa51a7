//! The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups. The rules live in `group::state`.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};

use super::{code, sb, Ctx};
use crate::auth::acl::{Operation, Resource};
use crate::group::state::JoinRequest;
use kafka_protocol::ResponseError;

/// FindCoordinator key types.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

pub fn find_coordinator(ctx: &Ctx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let c = &ctx.broker.config;
    // This node coordinates groups and transactions alike.
    let (error, message): (i16, Option<kafka_protocol::protocol::StrBytes>) =
        if matches!(req.key_type, KEY_GROUP | KEY_TRANSACTION) {
            (0, None)
        } else {
            (
                COORDINATOR_NOT_AVAILABLE,
                Some(sb(format!("unknown coordinator key type {}", req.key_type))),
            )
        };
    // Finding a coordinator takes DESCRIBE on the group or transactional id.
    let denied = |key: &str| -> Option<(i16, Option<kafka_protocol::protocol::StrBytes>)> {
        let (resource, e) = match req.key_type {
            KEY_GROUP => (Resource::Group, ResponseError::GroupAuthorizationFailed),
            KEY_TRANSACTION => (
                Resource::TransactionalId,
                ResponseError::TransactionalIdAuthorizationFailed,
            ),
            _ => return None,
        };
        (!ctx.allowed(Operation::Describe, resource, key)).then(|| (code(e), None))
    };
    let mut r = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        r.coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|k| {
                let (error, message) = denied(k.as_str()).unwrap_or((error, message.clone()));
                CoordinatorEntry::default()
                    .with_key(k)
                    .with_node_id(BrokerId(if error == 0 { c.node_id } else { -1 }))
                    .with_host(sb(if error == 0 {
                        ctx.listener.advertised_host.clone()
                    } else {
                        String::new()
                    }))
                    .with_port(if error == 0 {
                        ctx.listener.advertised_port
                    } else {
                        -1
                    })
                    .with_error_code(error)
                    .with_error_message(message.clone())
            })
            .collect();
    } else {
        let (error, message) = denied(req.key.as_str()).unwrap_or((error, message));
        r.error_code = error;
        if ctx.version >= 1 {
            r.error_message = message;
        }
        if error == 0 {
            r.node_id = BrokerId(c.node_id);
            r.host = sb(ctx.listener.advertised_host.clone());
            r.port = ctx.listener.advertised_port;
        } else {
            r.node_id = BrokerId(-1);
            r.port = -1;
        }
    }
    r
}

pub async fn join(ctx: &Ctx<'_>, req: JoinGroupRequest) -> JoinGroupResponse {
    let v = ctx.version;
    if !may_read_group(ctx, req.group_id.0.as_str()) {
        return JoinGroupResponse::default()
            .with_error_code(code(ResponseError::GroupAuthorizationFailed))
            .with_generation_id(-1);
    }
    // As Kafka: JoinGroup, SyncGroup, Heartbeat and LeaveGroup refuse an empty group id.
    if req.group_id.0.is_empty() {
        return JoinGroupResponse::default()
            .with_error_code(code(ResponseError::InvalidGroupId))
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone());
    }
    let jr = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.unwrap_or_default().to_string(),
        client_host: ctx.client_host(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 had no rebalance timeout: it equals the session timeout.
        rebalance_timeout_ms: if v >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let o = ctx.broker.groups.join(req.group_id.0.as_str(), jr).await;
    // A restarted static leader keeps the current assignment: v9 says so with skipAssignment;
    // older versions name its previous id as leader, so it acts as a follower and syncs.
    let (leader, members) = match (&o.previous_leader_id, v >= 9) {
        (Some(prev), false) => (prev.clone(), Vec::new()),
        _ => (o.leader.clone(), o.members),
    };
    let mut r = JoinGroupResponse::default()
        .with_error_code(o.error)
        .with_generation_id(o.generation)
        .with_leader(sb(leader))
        .with_member_id(sb(o.member_id));
    if v >= 9 {
        r.skip_assignment = o.skip_assignment;
    }
    r.protocol_name = match o.protocol_name {
        Some(p) => Some(sb(p)),
        // Before v7 the field is not nullable.
        None if v < 7 => Some(sb("")),
        None => None,
    };
    if v >= 7 {
        r.protocol_type = o.protocol_type.map(sb);
    }
    r.members = members
        .into_iter()
        .map(|(id, inst, meta)| {
            let mut m = JoinGroupResponseMember::default()
                .with_member_id(sb(id))
                .with_metadata(meta);
            if v >= 5 {
                m.group_instance_id = inst.map(sb);
            }
            m
        })
        .collect();
    r
}

pub async fn sync(ctx: &Ctx<'_>, req: SyncGroupRequest) -> SyncGroupResponse {
    if !may_read_group(ctx, req.group_id.0.as_str()) {
        return SyncGroupResponse::default()
            .with_error_code(code(ResponseError::GroupAuthorizationFailed));
    }
    if req.group_id.0.is_empty() {
        return SyncGroupResponse::default().with_error_code(code(ResponseError::InvalidGroupId));
    }
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let o = ctx
        .broker
        .groups
        .sync(
            req.group_id.0.as_str(),
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            req.generation_id,
            assignments,
        )
        .await;
    let mut r = SyncGroupResponse::default()
        .with_error_code(o.error)
        .with_assignment(o.assignment);
    if ctx.version >= 5 {
        r.protocol_type = o.protocol_type.map(sb);
        r.protocol_name = o.protocol_name.map(sb);
    }
    r
}

pub fn heartbeat(ctx: &Ctx<'_>, req: HeartbeatRequest) -> HeartbeatResponse {
    if !may_read_group(ctx, req.group_id.0.as_str()) {
        return HeartbeatResponse::default()
            .with_error_code(code(ResponseError::GroupAuthorizationFailed));
    }
    if req.group_id.0.is_empty() {
        return HeartbeatResponse::default().with_error_code(code(ResponseError::InvalidGroupId));
    }
    let e = ctx.broker.groups.heartbeat(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(e)
}

pub fn leave(ctx: &Ctx<'_>, req: LeaveGroupRequest) -> LeaveGroupResponse {
    // v3 batched members (KIP-345); earlier versions name one member.
    let who: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let mut r = LeaveGroupResponse::default();
    if !may_read_group(ctx, req.group_id.0.as_str()) {
        r.error_code = code(ResponseError::GroupAuthorizationFailed);
        return r;
    }
    if req.group_id.0.is_empty() {
        r.error_code = code(ResponseError::InvalidGroupId);
        return r;
    }
    match ctx.broker.groups.leave(req.group_id.0.as_str(), &who) {
        Err(e) => r.error_code = e,
        Ok(codes) => {
            if ctx.version >= 3 {
                r.members = who
                    .iter()
                    .zip(&codes)
                    .map(|((id, inst), &code)| {
                        MemberResponse::default()
                            .with_member_id(sb(id.clone()))
                            .with_group_instance_id(inst.clone().map(sb))
                            .with_error_code(code)
                    })
                    .collect();
            } else {
                r.error_code = codes.first().copied().unwrap_or(0);
            }
        }
    }
    r
}

pub fn list(ctx: &Ctx<'_>, req: ListGroupsRequest) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    r.groups = ctx
        .broker
        .groups
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        // Listing shows the groups the caller may describe (all, with DESCRIBE on the cluster).
        .filter(|g| {
            ctx.may_cluster(Operation::Describe)
                || ctx.allowed(Operation::Describe, Resource::Group, &g.id)
        })
        .map(|g| {
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(sb(g.id)))
                .with_protocol_type(sb(g.protocol_type));
            if ctx.version >= 4 {
                l.group_state = sb(g.state);
            }
            if ctx.version >= 5 {
                // Kafka's GroupType names, lowercase as its brokers send them.
                l.group_type = sb(g.group_type);
            }
            l
        })
        .collect();
    r
}

pub fn describe(ctx: &Ctx<'_>, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    for gid in req.groups {
        let mut d = DescribedGroup::default()
            .with_group_id(gid.clone())
            .with_authorized_operations(ctx.operations(
                ctx.version >= 3 && req.include_authorized_operations,
                Resource::Group,
                gid.0.as_str(),
            ));
        if !ctx.allowed(Operation::Describe, Resource::Group, gid.0.as_str()) {
            // Kafka's error answer leaves the operations at their default.
            d.authorized_operations = super::describe_cluster::operations::NOT_REQUESTED;
            d.error_code = code(ResponseError::GroupAuthorizationFailed);
            r.groups.push(d);
            continue;
        }
        match ctx.broker.groups.describe(gid.0.as_str()) {
            // Kafka describes an unknown group as Dead, without an error.
            None => d.group_state = sb("Dead"),
            Some(g) => {
                d.group_state = sb(g.state);
                d.protocol_type = sb(g.protocol_type);
                d.protocol_data = sb(g.protocol);
                // KIP-848 members have no client-encoded assignment: describe what they own
                // in the classic encoding, so classic tools can show it.
                let owned: Vec<Option<bytes::Bytes>> = if g.consumer.is_some() {
                    g.owned
                        .iter()
                        .map(|a| Some(classic_assignment(ctx, a)))
                        .collect()
                } else {
                    vec![None; g.members.len()]
                };
                d.members = g
                    .members
                    .into_iter()
                    .zip(owned)
                    .map(|((id, inst, client, host, meta, assignment), owned)| {
                        let assignment = owned.unwrap_or(assignment);
                        let mut m = DescribedGroupMember::default()
                            .with_member_id(sb(id))
                            .with_client_id(sb(client))
                            .with_client_host(sb(host))
                            .with_member_metadata(meta)
                            .with_member_assignment(assignment);
                        if ctx.version >= 4 {
                            m.group_instance_id = inst.map(sb);
                        }
                        m
                    })
                    .collect();
            }
        }
        r.groups.push(d);
    }
    r
}

pub fn delete(ctx: &Ctx<'_>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut r = DeleteGroupsResponse::default();
    for gid in req.groups_names {
        let e = if ctx.allowed(Operation::Delete, Resource::Group, gid.0.as_str()) {
            ctx.broker.groups.delete(gid.0.as_str())
        } else {
            code(ResponseError::GroupAuthorizationFailed)
        };
        r.results.push(
            DeletableGroupResult::default()
                .with_group_id(gid)
                .with_error_code(e),
        );
    }
    r
}

/// A group subscription may name only topics the member may describe (as Kafka checks it):
/// the error message listing those it may not, if any.
pub(crate) fn undescribable<'a>(
    ctx: &Ctx<'_>,
    topics: impl Iterator<Item = &'a kafka_protocol::messages::TopicName>,
) -> Option<String> {
    let hidden: Vec<&str> = topics
        .map(|n| n.0.as_str())
        .filter(|n| !ctx.may(Operation::Describe, n))
        .collect();
    (!hidden.is_empty()).then(|| format!("Topics not authorized: {}", hidden.join(", ")))
}

/// Joining, syncing, heartbeating and leaving a group take READ on it.
pub(crate) fn may_read_group(ctx: &Ctx<'_>, group: &str) -> bool {
    ctx.allowed(Operation::Read, Resource::Group, group)
}

/// `assignment` in the classic ConsumerProtocolAssignment encoding (v0, version-prefixed).
fn classic_assignment(ctx: &Ctx<'_>, a: &crate::group::consumer::Assignment) -> bytes::Bytes {
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::{ConsumerProtocolAssignment, TopicName};
    use kafka_protocol::protocol::Encodable;
    let value = ConsumerProtocolAssignment::default().with_assigned_partitions(
        a.iter()
            .filter_map(|(tid, ps)| {
                let t = ctx.broker.topic_by_id(*tid)?;
                Some(
                    TopicPartition::default()
                        .with_topic(TopicName(sb(t.name.clone())))
                        .with_partitions(ps.iter().copied().collect()),
                )
            })
            .collect(),
    );
    let mut buf = bytes::BytesMut::new();
    buf.put_i16(0);
    if value.encode(&mut buf, 0).is_err() {
        return bytes::Bytes::new();
    }
    buf.freeze()
}
