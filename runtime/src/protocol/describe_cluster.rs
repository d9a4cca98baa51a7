//! DescribeCluster (KIP-700): the one broker, the cluster id and, when asked, what a client may
//! do to the cluster.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{sb, Ctx};

/// Authorized-operation bitfields, bit n set for Kafka's `AclOperation` code n. Sluice has no
/// authorizer, so, like a Kafka broker without one, it grants everything that applies to each
/// resource type. Sent only when the client asks; otherwise the field keeps the protocol's
/// "not requested" value (i32::MIN).
pub mod operations {
    const fn bits(ops: &[u8]) -> i32 {
        let mut b = 0;
        let mut i = 0;
        while i < ops.len() {
            b |= 1 << ops[i];
            i += 1;
        }
        b
    }
    // READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
    // DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
    pub const TOPIC: i32 = bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
    pub const CLUSTER: i32 = bits(&[5, 7, 8, 9, 10, 11, 12]);
    pub const GROUP: i32 = bits(&[3, 6, 8]);
    pub const NOT_REQUESTED: i32 = i32::MIN;

    pub fn when(asked: bool, ops: i32) -> i32 {
        if asked {
            ops
        } else {
            NOT_REQUESTED
        }
    }
}

pub fn handle(ctx: &Ctx<'_>, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let b = ctx.broker;
    let node = b.config.node_id;
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(sb(b.cluster_id.clone()))
        .with_controller_id(BrokerId(node))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(node))
            .with_host(sb(ctx.listener.advertised_host.clone()))
            .with_port(ctx.listener.advertised_port)])
        .with_cluster_authorized_operations(operations::when(
            req.include_cluster_authorized_operations,
            operations::CLUSTER,
        ))
}

#[cfg(test)]
mod tests {
    use super::operations;

    #[test]
    fn bitfields_match_kafka_without_an_authorizer() {
        // The values a Kafka broker without ACLs reports (librdkafka's 0081_admin checks them).
        assert_eq!(operations::TOPIC, 3576);
        assert_eq!(operations::CLUSTER, 8096);
        assert_eq!(operations::GROUP, 328);
    }
}
