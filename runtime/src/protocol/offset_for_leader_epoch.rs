//! OffsetForLeaderEpoch (KIP-320): where a leader epoch ended, so a consumer that saw records
//! of that epoch can tell whether the log was truncated under it. A single node has had one
//! leader epoch (0) for every partition, ever, so the answer is the log end for epoch 0 and
//! "undefined" for any other; a client claiming a newer current epoch is told it is ahead.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::{code, Ctx};
use crate::auth::acl::Operation;

/// The only leader epoch a partition of this broker has had (Metadata and ListOffsets say so).
const EPOCH: i32 = 0;

pub fn handle(ctx: &Ctx<'_>, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    // Followers ask with CLUSTER_ACTION; consumers need DESCRIBE on each topic.
    let cluster = ctx.may_cluster(Operation::ClusterAction);
    for t in req.topics {
        let denied = !cluster && !ctx.may(Operation::Describe, t.topic.0.as_str());
        let topic = ctx.broker.topic(t.topic.0.as_str());
        let mut tr = OffsetForLeaderTopicResult::default().with_topic(t.topic.clone());
        for p in t.partitions {
            let mut r = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let part = topic.as_ref().and_then(|t| t.partition(p.partition));
            match part {
                _ if denied => r.error_code = code(ResponseError::TopicAuthorizationFailed),
                None => r.error_code = code(ResponseError::UnknownTopicOrPartition),
                // -1: the client does not know the current epoch (no fencing). With epoch 0
                // the only one there is, no client can hold an older one (FENCED_LEADER_EPOCH).
                Some(_) if p.current_leader_epoch > EPOCH => {
                    r.error_code = code(ResponseError::UnknownLeaderEpoch)
                }
                Some(part) if p.leader_epoch == EPOCH => {
                    r.leader_epoch = EPOCH;
                    r.end_offset = part.watermarks().high;
                }
                // An epoch this log never had: Kafka's UNDEFINED_EPOCH_OFFSET, no error.
                Some(_) => {}
            }
            tr.partitions.push(r);
        }
        resp.topics.push(tr);
    }
    resp
}
