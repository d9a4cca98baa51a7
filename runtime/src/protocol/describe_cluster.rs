//! DescribeCluster (KIP-700): the one broker, the cluster id and, when asked, what a client may
//! do to the cluster.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{sb, Ctx};
use crate::auth::acl::{Operation, Resource};

/// Authorized-operation bitfields (bit n for Kafka's `AclOperation` code n) come from the
/// authorizer (`Ctx::operations`); a field the client did not ask for keeps the protocol's
/// "not requested" value.
pub mod operations {
    pub const NOT_REQUESTED: i32 = i32::MIN;
}

pub fn handle(ctx: &Ctx<'_>, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let b = ctx.broker;
    let node = b.config.node_id;
    // Any client may describe the cluster, as on a Kafka broker (its controller asks for
    // ALTER); without DESCRIBE it is told it may do nothing to it.
    let operations = if ctx.may_cluster(Operation::Describe) {
        ctx.operations(
            req.include_cluster_authorized_operations,
            Resource::Cluster,
            "kafka-cluster",
        )
    } else if req.include_cluster_authorized_operations {
        0
    } else {
        operations::NOT_REQUESTED
    };
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(sb(b.cluster_id.clone()))
        .with_controller_id(BrokerId(node))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(node))
            .with_host(sb(ctx.listener.advertised_host.clone()))
            .with_port(ctx.listener.advertised_port)])
        .with_cluster_authorized_operations(operations)
}

#[cfg(test)]
mod tests {
    use crate::auth::acl::{AclConfig, Acls, Resource};

    #[test]
    fn bitfields_match_kafka_without_an_authorizer() {
        // The values a Kafka 4 broker without ACLs reports (librdkafka's 0081_admin checks
        // them; groups gained DESCRIBE_CONFIGS and ALTER_CONFIGS with Kafka 4's group configs).
        let dir = tempfile::tempdir().unwrap();
        let acls = Acls::open(dir.path(), AclConfig::default(), Vec::new()).unwrap();
        let ops = |r| acls.operations_bitfield("User:ANONYMOUS", "127.0.0.1", r, "x");
        assert_eq!(ops(Resource::Topic), 3576);
        assert_eq!(ops(Resource::Cluster), 8096);
        assert_eq!(ops(Resource::Group), 3400);
    }
}
