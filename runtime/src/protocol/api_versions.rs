//! ApiVersions: the first request of every client, telling it which versions to speak.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::ResponseError;

use super::SUPPORTED;

/// Also the features (KIP-584, fields of v3+): the `transaction.version` clients should use.
/// Kafka 4 clients use transactions version 2 (KIP-890) when it is finalized at 2, and
/// version 1 otherwise.
pub fn handle(config: &crate::broker::BrokerConfig) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    let tv = config.transaction_version;
    r.supported_features = vec![SupportedFeatureKey::default()
        .with_name(super::sb("transaction.version"))
        .with_min_version(0)
        .with_max_version(2)];
    r.finalized_features_epoch = 1;
    r.finalized_features = vec![FinalizedFeatureKey::default()
        .with_name(super::sb("transaction.version"))
        .with_min_version_level(tv)
        .with_max_version_level(tv)];
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect();
    r
}

/// The reply to an ApiVersions request of a version we do not know: a v0 body (error code,
/// then our ranges) behind a v0 header, as Kafka does, so any client can parse it.
pub fn unsupported_version_response(correlation_id: i32) -> BytesMut {
    let mut b = BytesMut::with_capacity(16 + SUPPORTED.len() * 6);
    b.put_i32(0);
    b.put_i32(correlation_id);
    b.put_i16(ResponseError::UnsupportedVersion.code());
    b.put_i32(SUPPORTED.len() as i32);
    for &(k, lo, hi) in SUPPORTED {
        b.put_i16(k as i16);
        b.put_i16(lo);
        b.put_i16(hi);
    }
    let len = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}
