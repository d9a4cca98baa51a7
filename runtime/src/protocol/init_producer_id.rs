//! InitProducerId: ids for idempotent producers, and for transactional ones through the
//! transaction coordinator (which fences older instances of the same transactional id).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{code, Ctx};
use crate::auth::acl::{Operation, Resource};

pub fn handle(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = req.transactional_id.as_ref() {
        if id.0.is_empty() {
            r.error_code = code(ResponseError::InvalidRequest);
            return r;
        }
        if !ctx.allowed(Operation::Write, Resource::TransactionalId, id.0.as_str()) {
            r.error_code = code(ResponseError::TransactionalIdAuthorizationFailed);
            return r;
        }
        match ctx.broker.txns.init_producer_id(
            ctx.broker,
            id.0.as_str(),
            (req.producer_id.0, req.producer_epoch),
            req.transaction_timeout_ms,
        ) {
            Ok((pid, epoch)) => {
                r.producer_id = ProducerId(pid);
                r.producer_epoch = epoch;
            }
            Err(e) => r.error_code = super::txn::compat(e, ctx.version, 4),
        }
        return r;
    }
    // KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster, or WRITE on
    // some topic.
    if !ctx.may_cluster(Operation::IdempotentWrite)
        && !ctx.broker.acls.allowed_on_any(
            ctx.principal,
            ctx.peer,
            Operation::Write,
            Resource::Topic,
        )
    {
        r.error_code = code(ResponseError::ClusterAuthorizationFailed);
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
