//! AlterPartitionReassignments / ListPartitionReassignments (KIP-455). On a single node a
//! partition's only possible replica set is this node, so no reassignment is ever in
//! progress: asking for exactly that set is the no-op Kafka answers with success, anything
//! else names a broker that does not exist.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::Operation;

pub fn alter(
    ctx: &Ctx<'_>,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut resp = AlterPartitionReassignmentsResponse::default();
    // Refused, every partition repeats the error as Kafka's error response does: the Java
    // AdminClient reads the per-partition codes, and finding none it reports an unknown error.
    let denied = !ctx.may_cluster(Operation::Alter);
    if denied {
        resp.error_code = code(ResponseError::ClusterAuthorizationFailed);
    }
    let node = ctx.broker.config.node_id;
    for t in req.topics {
        let topic = ctx.broker.topic(t.name.0.as_str());
        let mut tr = ReassignableTopicResponse::default().with_name(t.name.clone());
        for p in t.partitions {
            let (error, message) = match (&topic, &p.replicas) {
                _ if denied => (Some(ResponseError::ClusterAuthorizationFailed), None),
                (None, _) => (Some(ResponseError::UnknownTopicOrPartition), None),
                (Some(tp), _) if tp.partition(p.partition_index).is_none() => {
                    (Some(ResponseError::UnknownTopicOrPartition), None)
                }
                // Null replicas cancels a reassignment: there never is one here.
                (Some(_), None) => (
                    Some(ResponseError::NoReassignmentInProgress),
                    Some("no reassignment is in progress".to_string()),
                ),
                (Some(_), Some(r)) if r.len() == 1 && r[0].0 == node => (None, None),
                (Some(_), Some(r)) => (
                    Some(ResponseError::InvalidReplicaAssignment),
                    Some(format!(
                        "replicas {:?} requested, but the only broker is {node}",
                        r.iter().map(|b| b.0).collect::<Vec<_>>()
                    )),
                ),
            };
            tr.partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error.map_or(0, code))
                    .with_error_message(message.map(sb)),
            );
        }
        resp.responses.push(tr);
    }
    resp
}

pub fn list(
    ctx: &Ctx<'_>,
    _req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let mut resp = ListPartitionReassignmentsResponse::default();
    if !ctx.may_cluster(Operation::Describe) {
        resp.error_code = code(ResponseError::ClusterAuthorizationFailed);
    }
    // Only ongoing reassignments are listed, and there are none.
    resp
}
