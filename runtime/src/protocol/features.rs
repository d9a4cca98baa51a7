//! UpdateFeatures (KIP-584): the only feature is `transaction.version`, finalized from the
//! broker config (`transaction_version`), so it cannot move while the broker runs. Answered
//! as a Kafka 4 controller answers: a feature it does not know, or a level it will not
//! finalize, fails the whole request with INVALID_UPDATE_VERSION; asking for the level
//! already finalized succeeds (nothing changes).

use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use kafka_protocol::messages::{UpdateFeaturesRequest, UpdateFeaturesResponse};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::Operation;

pub fn update(ctx: &Ctx<'_>, req: UpdateFeaturesRequest) -> UpdateFeaturesResponse {
    let current = ctx.broker.config.transaction_version;
    let error: Option<(ResponseError, String)> = if !ctx.may_cluster(Operation::Alter) {
        Some((
            ResponseError::ClusterAuthorizationFailed,
            "Authorization failed.".into(),
        ))
    } else {
        req.feature_updates.iter().find_map(|u| {
            let name = u.feature.as_str();
            let level = u.max_version_level;
            if name != "transaction.version" {
                Some((
                    ResponseError::InvalidUpdateVersion,
                    format!(
                        "Invalid update version {level} for feature {name}. The controller \
                         does not support the given feature."
                    ),
                ))
            } else if level != current {
                Some((
                    ResponseError::InvalidUpdateVersion,
                    format!(
                        "Invalid update version {level} for feature {name}. It is finalized \
                         at {current} by the broker config (transaction_version) and cannot \
                         change while the broker runs."
                    ),
                ))
            } else {
                None
            }
        })
    };
    let (err, message) = match &error {
        Some((e, m)) => (code(*e), Some(sb(m.clone()))),
        None => (0, None),
    };
    let mut resp = UpdateFeaturesResponse::default()
        .with_error_code(err)
        .with_error_message(message.clone());
    // v2 dropped the per-feature results (KIP-1022): the top-level error says it all.
    if ctx.version < 2 {
        resp.results = req
            .feature_updates
            .iter()
            .map(|u| {
                UpdatableFeatureResult::default()
                    .with_feature(u.feature.clone())
                    .with_error_code(err)
                    .with_error_message(message.clone())
            })
            .collect();
    }
    resp
}
