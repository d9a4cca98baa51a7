//! ApiVersions: the first request of every client, telling it which versions to speak.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::ResponseError;

use super::SUPPORTED;

pub fn handle() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
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
