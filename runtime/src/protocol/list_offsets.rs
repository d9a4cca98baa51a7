//! ListOffsets: earliest, latest, max-timestamp and by-timestamp offset lookups.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::{code, Ctx};
use crate::auth::acl::Operation;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-1005/tiered storage: with everything local, these equal earliest.
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;

pub fn handle(ctx: &Ctx<'_>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let b = ctx.broker;
    let mut resp = ListOffsetsResponse::default();
    let read_committed = req.isolation_level == 1;
    for t in req.topics {
        let denied = !ctx.may(Operation::Describe, t.name.0.as_str());
        let topic = b.topic(t.name.0.as_str());
        let mut tr = ListOffsetsTopicResponse::default().with_name(t.name.clone());
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            if ctx.version >= 4 {
                pr.leader_epoch = 0;
            }
            if denied {
                pr.error_code = code(ResponseError::TopicAuthorizationFailed);
                tr.partitions.push(pr);
                continue;
            }
            let Some(part) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                pr.error_code = code(ResponseError::UnknownTopicOrPartition);
                tr.partitions.push(pr);
                continue;
            };
            let wm = part.watermarks();
            match p.timestamp {
                // read_committed readers end at the last stable offset.
                LATEST if read_committed => pr.offset = wm.stable,
                LATEST => pr.offset = wm.high,
                EARLIEST | EARLIEST_LOCAL | EARLIEST_PENDING_UPLOAD => pr.offset = wm.log_start,
                ts if ts == MAX_TIMESTAMP || ts >= 0 => {
                    let target = if ts == MAX_TIMESTAMP {
                        part.max_timestamp()
                    } else {
                        ts
                    };
                    match part.offset_for_time(target) {
                        Ok(Some((offset, _))) if read_committed && offset >= wm.stable => {}
                        Ok(Some((offset, found_ts))) => {
                            pr.offset = offset;
                            pr.timestamp = found_ts;
                        }
                        // No record that late: Kafka answers -1/-1.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(topic = %t.name.0.as_str(), partition = p.partition_index, error = %e, "timestamp lookup failed");
                            pr.error_code = code(ResponseError::KafkaStorageError);
                        }
                    }
                }
                _ => pr.error_code = code(ResponseError::InvalidRequest),
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
