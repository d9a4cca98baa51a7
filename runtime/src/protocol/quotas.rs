//! DescribeClientQuotas and AlterClientQuotas (KIP-546): Kafka's `kafka-configs
//! --entity-type users|clients --alter --add-config producer_byte_rate=...`. Describing takes
//! DESCRIBE_CONFIGS on the cluster, altering ALTER_CONFIGS.

use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlterEntity, EntryData as AlterEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::Operation;
use crate::limits::quotas::{Change, Entity, Key};

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

pub fn describe(ctx: &Ctx, req: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    if !ctx.may_cluster(Operation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(code(ResponseError::ClusterAuthorizationFailed))
            .with_entries(None);
    }
    for c in &req.components {
        let t = c.entity_type.as_str();
        if (t != "user" && t != "client-id") || !(0..=2).contains(&c.match_type) {
            return DescribeClientQuotasResponse::default()
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_error_message(Some(sb(format!("unsupported entity type or match: {t}"))))
                .with_entries(None);
        }
    }
    let matches = |e: &Entity| {
        let comps = e.components();
        let each = req.components.iter().all(|c| {
            let have = comps.iter().find(|(t, _)| *t == c.entity_type.as_str());
            match (c.match_type, have) {
                (_, None) => false,
                (MATCH_ANY, Some(_)) => true,
                (MATCH_DEFAULT, Some((_, name))) => name.is_none(),
                (MATCH_EXACT, Some((_, name))) => *name == c._match.as_deref(),
                _ => false,
            }
        });
        // strict: the entity has no component the filter does not name.
        each && (!req.strict || comps.len() == req.components.len())
    };
    let entries = ctx
        .broker
        .quotas
        .all()
        .into_iter()
        .filter(|(e, _)| matches(e))
        .map(|(e, values)| {
            EntryData::default()
                .with_entity(
                    e.components()
                        .into_iter()
                        .map(|(t, n)| {
                            EntityData::default()
                                .with_entity_type(sb(t))
                                .with_entity_name(n.map(sb))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .into_iter()
                        .map(|(k, v)| ValueData::default().with_key(sb(k.name())).with_value(v))
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// Writes the quota file, so it runs on the blocking pool.
pub fn alter(ctx: &Ctx, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    let allowed = ctx.may_cluster(Operation::AlterConfigs);
    let mut results = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    for entry in &req.entries {
        let echo: Vec<AlterEntity> = entry
            .entity
            .iter()
            .map(|e| {
                AlterEntity::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect();
        let checked = (|| -> Result<Vec<Change>, (ResponseError, String)> {
            if !allowed {
                return Err((
                    ResponseError::ClusterAuthorizationFailed,
                    "Authorization failed.".into(),
                ));
            }
            let mut entity = Entity::default();
            for e in &entry.entity {
                let name = e.entity_name.as_ref().map(|n| n.to_string());
                let slot = match e.entity_type.as_str() {
                    "user" => &mut entity.user,
                    "client-id" => &mut entity.client_id,
                    other => {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("unsupported entity type {other} (user and client-id are)"),
                        ))
                    }
                };
                if slot.is_some() {
                    return Err((
                        ResponseError::InvalidRequest,
                        "an entity type given twice".into(),
                    ));
                }
                *slot = Some(name);
            }
            if entry.entity.is_empty() {
                return Err((ResponseError::InvalidRequest, "no entity".into()));
            }
            entry
                .ops
                .iter()
                .map(|op| {
                    let key = Key::from_name(op.key.as_str()).ok_or_else(|| {
                        (
                            ResponseError::InvalidRequest,
                            format!(
                                "unsupported quota key {} (producer_byte_rate, consumer_byte_rate, request_percentage and producer_ids_rate are)",
                                op.key.as_str()
                            ),
                        )
                    })?;
                    let valid = op.value.is_finite() && op.value > 0.0;
                    if !op.remove && !valid {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("{} must be a positive number", key.name()),
                        ));
                    }
                    Ok((entity.clone(), key, (!op.remove).then_some(op.value)))
                })
                .collect()
        })();
        match checked {
            Ok(c) => {
                changes.extend(c);
                results.push((echo, None));
            }
            Err(e) => results.push((echo, Some(e))),
        }
    }
    let stored = if req.validate_only || changes.is_empty() {
        Ok(())
    } else {
        ctx.broker.quotas.alter(&changes)
    };
    if let Err(e) = &stored {
        tracing::error!(error = %e, "cannot store client quotas");
    } else if !req.validate_only && !changes.is_empty() {
        tracing::info!(principal = %ctx.principal, changes = ?changes, "client quotas altered");
    }
    AlterClientQuotasResponse::default().with_entries(
        results
            .into_iter()
            .map(|(entity, err)| {
                let (c, m) = match (err, &stored) {
                    (Some((e, m)), _) => (code(e), Some(sb(m))),
                    (None, Err(e)) => (
                        code(ResponseError::UnknownServerError),
                        Some(sb(e.to_string())),
                    ),
                    (None, Ok(())) => (0, None),
                };
                AlterEntry::default()
                    .with_entity(entity)
                    .with_error_code(c)
                    .with_error_message(m)
            })
            .collect(),
    )
}
