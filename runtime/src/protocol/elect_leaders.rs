//! ElectLeaders (KIP-183, KIP-460): on a single node every partition's leader is its only
//! replica, always alive and preferred, so no election is ever needed. Answered as Kafka
//! answers a cluster where that holds, so `kafka-leader-election` and admin clients work.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::Operation;

pub fn handle(ctx: &Ctx<'_>, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    let allowed = ctx.may_cluster(Operation::Alter);
    if !allowed {
        resp.error_code = code(ResponseError::ClusterAuthorizationFailed);
    }
    // Null asks for every partition; Kafka then reports only partitions where something
    // happened (or failed), which here is none.
    let Some(asked) = req.topic_partitions else {
        return resp;
    };
    for t in asked {
        let topic = ctx.broker.topic(t.topic.0.as_str());
        let mut tr = ReplicaElectionResult::default().with_topic(t.topic.clone());
        for p in t.partitions {
            let (error, message) = if !allowed {
                (ResponseError::ClusterAuthorizationFailed, None)
            } else if topic.as_ref().and_then(|t| t.partition(p)).is_none() {
                (ResponseError::UnknownTopicOrPartition, None)
            } else {
                (
                    ResponseError::ElectionNotNeeded,
                    Some("the leader is the preferred and only replica"),
                )
            };
            tr.partition_result.push(
                PartitionResult::default()
                    .with_partition_id(p)
                    .with_error_code(code(error))
                    .with_error_message(message.map(sb)),
            );
        }
        resp.replica_election_results.push(tr);
    }
    resp
}
