//! DeleteRecords: move a partition's log start offset forward (`kafka-delete-records`,
//! admin clients' `delete_records`). Records below it are never served again; the segments
//! wholly below it are deleted at once, the rest when retention reaches them.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::{code, Ctx};
use crate::auth::acl::Operation;

pub fn handle(ctx: &Ctx<'_>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let denied = !ctx.may(Operation::Delete, t.name.0.as_str());
        let topic = ctx.broker.topic(t.name.0.as_str()).filter(|_| !denied);
        let mut tr = DeleteRecordsTopicResult::default().with_name(t.name.clone());
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                None if denied => pr.error_code = code(ResponseError::TopicAuthorizationFailed),
                None => pr.error_code = code(ResponseError::UnknownTopicOrPartition),
                Some(part) => match part.delete_records(p.offset) {
                    Ok(Some(low)) => pr.low_watermark = low,
                    Ok(None) => pr.error_code = code(ResponseError::OffsetOutOfRange),
                    Err(e) => {
                        tracing::error!(topic = %t.name.0.as_str(), partition = p.partition_index, error = %e, "delete records failed");
                        pr.error_code = code(ResponseError::KafkaStorageError);
                    }
                },
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
