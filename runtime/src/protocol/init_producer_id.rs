//! InitProducerId: ids for idempotent producers. Transactions are not supported yet, so a
//! request with a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{code, Ctx};

pub fn handle(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        r.error_code = code(ResponseError::InvalidRequest);
        tracing::info!(client = ?ctx.client_id, "refused InitProducerId for a transactional producer: transactions are not supported");
        return r;
    }
    // KIP-360: an idempotent producer that hit an error bumps its epoch to reset sequences.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        r.producer_id = req.producer_id;
        r.producer_epoch = req.producer_epoch + 1;
        return r;
    }
    match ctx.broker.producer_ids.next() {
        Ok(id) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            r.error_code = code(ResponseError::KafkaStorageError);
        }
    }
    r
}
