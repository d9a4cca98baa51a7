//! Kafka request handling: one module per API family, dispatched from [`handle`].
//!
//! The schemas come from the `kafka-protocol` crate; this layer decides what each request
//! means for the broker. Architecture invariant: handlers never touch sockets; they take a
//! decoded request and return a response value (or none, for `acks=0` produces).

mod acls;
mod admin;
mod api_versions;
mod configs;
mod consumer_group;
mod delete_records;
mod describe_cluster;
mod describe_log_dirs;
mod elect_leaders;
mod features;
mod fetch;
pub mod fetch_session;
mod group;
mod init_producer_id;
mod legacy;
mod list_offsets;
mod metadata;
mod nulls;
mod offset_for_leader_epoch;
mod offsets;
pub mod pieces;
mod produce;
mod quotas;
mod reassignments;
mod sasl;
mod share;
mod txn;

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use thiserror::Error;

use crate::auth::sasl::Gate;
use crate::auth::Session;
use crate::broker::Broker;
use crate::limits::quotas::Key;
use nulls::NullMessages;

/// Why a connection must be closed: the request could not be understood well enough to answer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("request frame of {0} bytes is too short for a request header")]
    ShortFrame(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot read a response's records from their segment: {0}")]
    Io(std::io::Error),
}

/// The versions this broker serves: (API, lowest, highest). A superset of Kafka 3.9's and 4's:
/// the versions Kafka 4 removed (KIP-896) are served through [`legacy`], so clients of any
/// age that Kafka 3.9 served keep working.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 0, 16),
    (ApiKey::ListOffsets, 0, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::DescribeCluster, 0, 1),
    // Replica-level APIs, answered for the one replica each partition has: Kafka 4 serves
    // OffsetForLeaderEpoch from v2 and DescribeLogDirs from v1 too.
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::UpdateFeatures, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
    // Transactions versions 1 and 2 (KIP-890: Produce v12, EndTxn v5 and TxnOffsetCommit v5
    // are what version-2 clients send; AddPartitionsToTxn v4+ is the batched form).
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareFetch, 1, 1),
    (ApiKey::ShareAcknowledge, 1, 1),
    // v0: the tokens follow as bare frames (see `sasl::raw_token`). librdkafka requires v0
    // in the range before it will do SASL at all, though it then sends v1.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::DescribeAcls, 0, 3),
    (ApiKey::CreateAcls, 0, 3),
    (ApiKey::DeleteAcls, 0, 3),
];

fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, ..)| *k == api)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// Whether `api`'s response at `version` begins with `throttle_time_ms` (most do, from the
/// version that added it). A throttle decided after the response was encoded (the request
/// quota, which needs the handling time) is written there (KIP-219); for the others (Produce,
/// ApiVersions, OffsetDelete, SASL) the muted connection is the only sign.
fn throttle_time_first(api: ApiKey, version: i16) -> bool {
    use ApiKey::*;
    let from = match api {
        Fetch | SyncGroup | Heartbeat | LeaveGroup | ListGroups | DescribeGroups
        | FindCoordinator | DeleteTopics | ShareGroupHeartbeat | ShareFetch | ShareAcknowledge => 1,
        ListOffsets | CreateTopics | JoinGroup => 2,
        Metadata | OffsetCommit | OffsetFetch => 3,
        DeleteRecords
        | CreatePartitions
        | DescribeConfigs
        | DescribeCluster
        | OffsetForLeaderEpoch
        | DescribeLogDirs
        | ElectLeaders
        | UpdateFeatures
        | AlterPartitionReassignments
        | ListPartitionReassignments
        | AlterConfigs
        | IncrementalAlterConfigs
        | InitProducerId
        | AddPartitionsToTxn
        | AddOffsetsToTxn
        | EndTxn
        | TxnOffsetCommit
        | DescribeTransactions
        | ListTransactions
        | DescribeProducers
        | DeleteGroups
        | ConsumerGroupHeartbeat
        | ConsumerGroupDescribe
        | DescribeUserScramCredentials
        | AlterUserScramCredentials
        | DescribeClientQuotas
        | AlterClientQuotas
        | DescribeAcls
        | CreateAcls
        | DeleteAcls => 0,
        _ => return false,
    };
    version >= from
}

/// Raises the `throttle_time_ms` of an encoded response (length prefix included) to
/// `throttle`, where [`throttle_time_first`] says the field is.
fn raise_throttle_time(resp: &mut [u8], api: ApiKey, version: i16, throttle: i32) {
    if !throttle_time_first(api, version) {
        return;
    }
    // Length, correlation id, and in header v1 its (empty) tagged fields: one byte.
    let at = 8 + usize::from(api.response_header_version(version) >= 1);
    if let Some(field) = resp.get_mut(at..at + 4) {
        let now = i32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        field.copy_from_slice(&now.max(throttle).to_be_bytes());
    }
}

/// Per-request context handed to handlers.
pub struct Ctx<'a> {
    pub broker: &'a Arc<Broker>,
    pub version: i16,
    pub client_id: Option<&'a str>,
    /// The client's address, as DescribeGroups reports it.
    pub peer: &'a str,
    /// The listener the request came in on: its advertised address is the broker's.
    pub listener: &'a crate::auth::Listener,
    /// Who sent it (`User:NAME`).
    pub principal: &'a str,
}

impl Ctx<'_> {
    /// The member host groups report: Java's `InetAddress.toString()` form ("/127.0.0.1"),
    /// which Kafka's tools print as is.
    pub fn client_host(&self) -> String {
        format!("/{}", self.peer)
    }

    /// Whether the caller may do `op` on the resource (always, with the authorizer off).
    pub fn allowed(
        &self,
        op: crate::auth::acl::Operation,
        resource: crate::auth::acl::Resource,
        name: &str,
    ) -> bool {
        self.broker
            .acls
            .allowed(self.principal, self.peer, op, resource, name)
    }

    pub fn may(&self, op: crate::auth::acl::Operation, topic: &str) -> bool {
        self.allowed(op, crate::auth::acl::Resource::Topic, topic)
    }

    pub fn may_cluster(&self, op: crate::auth::acl::Operation) -> bool {
        self.allowed(op, crate::auth::acl::Resource::Cluster, "kafka-cluster")
    }

    /// The authorized-operations bitfield for a resource, or "not requested".
    pub fn operations(&self, asked: bool, resource: crate::auth::acl::Resource, name: &str) -> i32 {
        if !asked {
            return describe_cluster::operations::NOT_REQUESTED;
        }
        self.broker
            .acls
            .operations_bitfield(self.principal, self.peer, resource, name)
    }
}

pub(crate) fn code(e: ResponseError) -> i16 {
    e.code()
}

pub(crate) fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Encodes a framed response: length prefix, header, body.
fn encode_response<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<BytesMut, ProtocolError> {
    let header_version = if api == ApiKey::ApiVersions {
        // Always v0, so a client that does not know our versions yet can read it.
        0
    } else {
        api.response_header_version(version)
    };
    let err = |e: anyhow::Error| ProtocolError::Encode {
        api,
        version,
        reason: format!("{e:#}"),
    };
    // Sized up front: a fetch response carries megabytes, and growing by doubling would copy
    // them several times.
    let size = body.compute_size(version).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(4 + 16 + size);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(err)?;
    body.encode(&mut buf, version).map_err(err)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

fn decode<T: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<T, ProtocolError> {
    T::decode(body, version).map_err(|e| ProtocolError::Malformed {
        api,
        version,
        reason: format!("{e:#}"),
    })
}

/// Encodes a framed response as pieces to write one after the other: the record sets of a
/// fetch answer are not copied (see `pieces.rs`). The first piece holds the length prefix,
/// the header and at least the body's first field.
fn encode_response_pieces<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
    records: Vec<Bytes>,
    files: Vec<pieces::FileRange>,
) -> Result<Answer, ProtocolError> {
    let err = |e: anyhow::Error| ProtocolError::Encode {
        api,
        version,
        reason: format!("{e:#}"),
    };
    let mut p = pieces::Pieces::new(records, files);
    p.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut p, api.response_header_version(version))
        .map_err(err)?;
    body.encode(&mut p, version).map_err(err)?;
    let (mut head, rest) = p.finish().map_err(|e| err(e.into()))?;
    let len = head.len() + rest.iter().map(pieces::Piece::len).sum::<usize>();
    if head.len() < 4 {
        return Err(err(anyhow::anyhow!(
            "response head shorter than its length prefix"
        )));
    }
    let len = i32::try_from(len - 4).map_err(|_| err(anyhow::anyhow!("response over 2 GiB")))?;
    head[..4].copy_from_slice(&len.to_be_bytes());
    Ok((head, rest))
}

/// A framed response: its first bytes, and pieces that follow them unchanged (record sets
/// of a fetch answer, in memory or in a file; empty for every other answer).
pub type Answer = (BytesMut, Vec<pieces::Piece>);

/// Handles one request frame (without its length prefix). `Ok(None)` means no response is
/// due (a produce with `acks=0`); `Err` means the connection should be closed.
pub async fn handle(
    broker: &Arc<Broker>,
    session: &mut Session,
    frame: Bytes,
) -> Result<Option<BytesMut>, ProtocolError> {
    let Some((mut head, rest)) = handle_pieces(broker, session, frame).await? else {
        return Ok(None);
    };
    for piece in rest {
        piece.append_to(&mut head).map_err(ProtocolError::Io)?;
    }
    Ok(Some(head))
}

/// [`handle`], with the answer in pieces, as the connection writes it.
pub async fn handle_pieces(
    broker: &Arc<Broker>,
    session: &mut Session,
    frame: Bytes,
) -> Result<Option<Answer>, ProtocolError> {
    let one = |r: Option<BytesMut>| r.map(|b| (b, Vec::new()));
    if session.sasl.as_ref().is_some_and(|s| s.expects_raw_token()) {
        return sasl::raw_token(broker, session, &frame).map(one);
    }
    if frame.len() < 8 {
        return Err(ProtocolError::ShortFrame(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(raw_key).map_err(|_| ProtocolError::UnknownApi(raw_key))?;
    let Some((lo, hi)) = supported(api) else {
        return Err(ProtocolError::UnknownApi(raw_key));
    };
    if api == ApiKey::ApiVersions && !(lo..=hi).contains(&version) {
        // KIP-511: answer in v0 so the client learns our range and retries.
        return Ok(one(Some(api_versions::unsupported_version_response(
            correlation_id,
        ))));
    }
    if !(lo..=hi).contains(&version) {
        return Err(ProtocolError::UnsupportedVersion { api, version });
    }
    if let Some(sasl) = &session.sasl {
        if let Gate::Close(why) = sasl.gate(api, Instant::now()) {
            return Err(ProtocolError::Unauthenticated(why));
        }
    }
    // A version Kafka 4 removed: served as the oldest one the handlers know, the answer
    // rewritten back into the old layout at the end.
    let asked = version;
    let (version, mut frame) = match legacy::served_as(api, version) {
        Some(served) => {
            if broker.metrics.old_version(raw_key, version) {
                tracing::info!(
                    api = ?api,
                    version,
                    peer = %session.peer,
                    "a client uses a version Kafka 4 removed: served as Kafka 3.9 did"
                );
            }
            let now = crate::broker::now_ms();
            (served, legacy::upgrade(api, asked, frame, now)?)
        }
        None => (version, frame),
    };
    let header =
        RequestHeader::decode(&mut frame, api.request_header_version(version)).map_err(|e| {
            ProtocolError::Malformed {
                api,
                version,
                reason: format!("request header: {e:#}"),
            }
        })?;
    let client_id = header.client_id.as_ref().map(|s| s.as_str().to_string());
    // Kafka's kafka.request.logger: every request at DEBUG, off unless asked for (SLUICE_LOG
    // or the broker-loggers config); a disabled callsite costs one load.
    tracing::debug!(
        target: "sluice::protocol::requests",
        api = ?api,
        version = asked,
        correlation_id,
        client = client_id.as_deref().unwrap_or(""),
        peer = %session.peer,
        "request"
    );
    match api {
        ApiKey::SaslHandshake => {
            let mut r = sasl::handshake(session, version, decode(api, version, &mut frame)?);
            r.null_empty_messages();
            return Ok(one(Some(encode_response(
                api,
                version,
                correlation_id,
                &r,
            )?)));
        }
        ApiKey::SaslAuthenticate => {
            let mut r = sasl::authenticate(broker, session, decode(api, version, &mut frame)?);
            r.null_empty_messages();
            return Ok(one(Some(encode_response(
                api,
                version,
                correlation_id,
                &r,
            )?)));
        }
        _ => {}
    }
    let principal = session.principal();
    // Client quotas: None when none are set, so the common case costs one check.
    let quota_who = (!broker.quotas.is_empty())
        .then(|| (session.quota_user(), client_id.clone().unwrap_or_default()));
    let charge = |key: Key, amount: f64| -> std::time::Duration {
        let Some((user, client)) = &quota_who else {
            return std::time::Duration::ZERO;
        };
        let t = broker
            .quotas
            .charge(user, client, key, amount, Instant::now());
        if !t.is_zero() {
            broker.metrics.quota_throttled(key, user, client, t);
        }
        t
    };
    let mut throttled = std::time::Duration::ZERO;
    let mut response_memory = crate::limits::memory::Held::default();
    let frame_len = frame.len();
    let ctx = Ctx {
        broker,
        version,
        client_id: client_id.as_deref(),
        peer: &session.peer,
        listener: &session.listener,
        principal: &principal,
    };
    let peer = session.peer.as_str();
    let started = Instant::now();
    let body = &mut frame;
    // Every API: decode the body at the request's version, handle it, encode the answer.
    macro_rules! answer {
        ($handler:path) => {{
            let mut r = $handler(&ctx, decode(api, version, body)?);
            NullMessages::null_empty_messages(&mut r);
            Some(encode_response(api, version, correlation_id, &r)?)
        }};
        ($handler:path, await) => {{
            let mut r = $handler(&ctx, decode(api, version, body)?).await;
            NullMessages::null_empty_messages(&mut r);
            Some(encode_response(api, version, correlation_id, &r)?)
        }};
        // Handlers that create, fsync or delete files run on the blocking pool, not on an
        // async worker that other connections share.
        ($handler:path, blocking) => {{
            let req = decode(api, version, body)?;
            let (b, client, from) = (broker.clone(), client_id.clone(), peer.to_string());
            let (listener, who) = (session.listener.clone(), principal.clone());
            let mut r = tokio::task::spawn_blocking(move || {
                let ctx = Ctx {
                    broker: &b,
                    version,
                    client_id: client.as_deref(),
                    peer: &from,
                    listener: &listener,
                    principal: &who,
                };
                $handler(&ctx, req)
            })
            .await
            .map_err(|e| ProtocolError::Malformed {
                api,
                version,
                reason: format!("handler failed: {e}"),
            })?;
            NullMessages::null_empty_messages(&mut r);
            Some(encode_response(api, version, correlation_id, &r)?)
        }};
    }
    // In durable mode the coordinators fsync their logs (off their locks, but in the
    // request): those requests go to the blocking pool too.
    let durable = broker.config.durable_internal_logs;
    // A fetch answer's record sets, written after `resp` (see `encode_response_pieces`).
    let mut tail: Vec<pieces::Piece> = Vec::new();
    let mut resp = match api {
        ApiKey::OffsetCommit if durable => answer!(offsets::commit, blocking),
        ApiKey::OffsetDelete if durable => answer!(offsets::delete, blocking),
        ApiKey::DeleteGroups if durable => answer!(group::delete, blocking),
        ApiKey::InitProducerId if durable => answer!(init_producer_id::handle, blocking),
        ApiKey::AddPartitionsToTxn if durable => answer!(txn::add_partitions, blocking),
        ApiKey::AddOffsetsToTxn if durable => answer!(txn::add_offsets, blocking),
        ApiKey::TxnOffsetCommit if durable => answer!(txn::offset_commit, blocking),
        ApiKey::EndTxn if durable => answer!(txn::end, blocking),
        ApiKey::ApiVersions => {
            let _req = decode::<kafka_protocol::messages::ApiVersionsRequest>(api, version, body)?;
            Some(encode_response(
                api,
                version,
                correlation_id,
                &api_versions::handle(&broker.config),
            )?)
        }
        ApiKey::Produce => {
            let req: kafka_protocol::messages::ProduceRequest = decode(api, version, body)?;
            let throttle = req
                .topic_data
                .iter()
                .map(|t| broker.produce_throttle_ms(t.name.0.as_str()))
                .max()
                .unwrap_or(0);
            let (mut r, waits) = produce::handle(&ctx, req);
            throttled = charge(Key::ProducerByteRate, frame_len as f64);
            if let Some(r) = r.as_mut() {
                r.throttle_time_ms = (throttle as i32).max(throttled.as_millis() as i32);
                produce::finish_durable(r, waits).await;
            }
            if throttle > 0 {
                // Back pressure: the records are stored, but the answer is held back (as
                // Kafka's quotas do), so a client with a bounded in-flight window slows down,
                // and it also reads throttle_time_ms and backs off by itself.
                broker
                    .metrics
                    .produce_throttled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(throttle as u64)).await;
            }
            match r {
                Some(r) => Some(encode_response(api, version, correlation_id, &r)?),
                None => None,
            }
        }
        ApiKey::Metadata => answer!(metadata::handle),
        ApiKey::Fetch => {
            // Old versions are rewritten whole at the end: their records must be in memory.
            let zero_copy = session.zero_copy && version == asked;
            let (mut r, held, files) =
                fetch::handle(&ctx, decode(api, version, body)?, zero_copy).await;
            response_memory = held;
            let bytes: usize = r
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
                .sum();
            throttled = charge(Key::ConsumerByteRate, bytes as f64);
            r.throttle_time_ms = r.throttle_time_ms.max(throttled.as_millis() as i32);
            let records = r
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .filter_map(|p| p.records.clone())
                .collect();
            let in_files: usize = files.iter().map(|f| f.len).sum();
            broker
                .metrics
                .fetch_sendfile_bytes
                .fetch_add(in_files as u64, std::sync::atomic::Ordering::Relaxed);
            let (head, rest) =
                encode_response_pieces(api, version, correlation_id, &r, records, files)?;
            // The records are written as they were read, not copied: they and the head are
            // what the answer holds (file ranges hold no memory).
            drop(r);
            response_memory
                .shrink_to(head.len() + rest.iter().map(pieces::Piece::in_memory).sum::<usize>());
            tail = rest;
            Some(head)
        }
        ApiKey::DescribeClientQuotas => answer!(quotas::describe),
        ApiKey::AlterClientQuotas => answer!(quotas::alter, blocking),
        ApiKey::ListOffsets => answer!(list_offsets::handle),
        ApiKey::CreateTopics => answer!(admin::create_topics, blocking),
        ApiKey::CreatePartitions => answer!(admin::create_partitions, blocking),
        ApiKey::DeleteTopics => answer!(admin::delete_topics, blocking),
        ApiKey::DeleteRecords => answer!(delete_records::handle, blocking),
        ApiKey::DescribeConfigs => answer!(configs::describe),
        ApiKey::DescribeCluster => answer!(describe_cluster::handle),
        ApiKey::OffsetForLeaderEpoch => answer!(offset_for_leader_epoch::handle),
        ApiKey::DescribeLogDirs => answer!(describe_log_dirs::handle),
        ApiKey::ElectLeaders => answer!(elect_leaders::handle),
        ApiKey::UpdateFeatures => answer!(features::update),
        ApiKey::AlterPartitionReassignments => answer!(reassignments::alter),
        ApiKey::ListPartitionReassignments => answer!(reassignments::list),
        ApiKey::AlterConfigs => answer!(configs::alter),
        ApiKey::IncrementalAlterConfigs => answer!(configs::incremental_alter),
        ApiKey::InitProducerId => answer!(init_producer_id::handle),
        ApiKey::AddPartitionsToTxn => answer!(txn::add_partitions),
        ApiKey::AddOffsetsToTxn => answer!(txn::add_offsets),
        ApiKey::TxnOffsetCommit => answer!(txn::offset_commit),
        ApiKey::EndTxn => answer!(txn::end),
        ApiKey::DescribeTransactions => answer!(txn::describe),
        ApiKey::ListTransactions => answer!(txn::list),
        ApiKey::DescribeProducers => answer!(txn::describe_producers),
        ApiKey::WriteTxnMarkers => answer!(txn::write_markers),
        ApiKey::FindCoordinator => answer!(group::find_coordinator),
        ApiKey::JoinGroup => answer!(group::join, await),
        ApiKey::SyncGroup => answer!(group::sync, await),
        ApiKey::Heartbeat => answer!(group::heartbeat),
        ApiKey::LeaveGroup => answer!(group::leave),
        ApiKey::ListGroups => answer!(group::list),
        ApiKey::DescribeGroups => answer!(group::describe),
        ApiKey::DeleteGroups => answer!(group::delete),
        ApiKey::OffsetCommit => answer!(offsets::commit),
        ApiKey::OffsetDelete => answer!(offsets::delete),
        ApiKey::OffsetFetch => answer!(offsets::fetch),
        ApiKey::ConsumerGroupHeartbeat => answer!(consumer_group::heartbeat),
        ApiKey::ConsumerGroupDescribe => answer!(consumer_group::describe),
        ApiKey::ShareGroupHeartbeat => answer!(share::heartbeat),
        ApiKey::ShareFetch => answer!(share::fetch, await),
        ApiKey::ShareAcknowledge => answer!(share::acknowledge),
        ApiKey::DescribeUserScramCredentials => answer!(sasl::describe),
        ApiKey::AlterUserScramCredentials => answer!(sasl::alter, blocking),
        ApiKey::DescribeAcls => answer!(acls::describe),
        ApiKey::CreateAcls => answer!(acls::create, blocking),
        ApiKey::DeleteAcls => answer!(acls::delete, blocking),
        _ => return Err(ProtocolError::UnknownApi(raw_key)),
    };
    let took = started.elapsed();
    broker.metrics.observe_request(raw_key, took);
    // Fractions of a microsecond count: a quick request still uses its share.
    let mut for_time = charge(Key::RequestPercentage, took.as_secs_f64() * 1e6);
    if api == ApiKey::InitProducerId && resp.is_some() {
        // Every InitProducerId answered may have minted an id (or bumped an epoch, which
        // costs the same state): counted whether or not it did, so an error is no way around.
        for_time = for_time.max(charge(Key::ProducerIdsRate, 1.0));
    }
    if !for_time.is_zero() {
        if let Some(r) = resp.as_mut() {
            let ms = i32::try_from(for_time.as_millis()).unwrap_or(i32::MAX);
            raise_throttle_time(r, api, version, ms);
        }
    }
    if version != asked {
        // Old versions are rewritten whole (old clients only).
        for piece in std::mem::take(&mut tail) {
            if let Some(r) = resp.as_mut() {
                piece.append_to(r).map_err(ProtocolError::Io)?;
            }
        }
        resp = resp.map(|r| legacy::downgrade(api, asked, r)).transpose()?;
    }
    throttled = throttled.max(for_time);
    session.mute = throttled;
    session.response_memory = response_memory;
    Ok(resp.map(|r| (r, tail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of where `throttle_time_ms` sits, checked against the encoder itself at every
    /// version served: a wrong entry would corrupt responses.
    #[test]
    fn throttle_time_is_raised_where_each_response_has_it() {
        use kafka_protocol::messages::*;
        macro_rules! check {
            ($($api:ident => $resp:ty),* $(,)?) => {{
                let mut covered = Vec::new();
                $(
                    let (lo, hi) = supported(ApiKey::$api).unwrap();
                    for v in lo..=hi {
                        // Removed versions are raised at the version they are served as.
                        if legacy::served_as(ApiKey::$api, v).is_some() || !throttle_time_first(ApiKey::$api, v) {
                            continue;
                        }
                        let r = <$resp>::default().with_throttle_time_ms(3);
                        let mut b = encode_response(ApiKey::$api, v, 7, &r).unwrap();
                        raise_throttle_time(&mut b, ApiKey::$api, v, 0x0102_0304);
                        let want = encode_response(ApiKey::$api, v, 7, &r.clone().with_throttle_time_ms(0x0102_0304)).unwrap();
                        assert_eq!(b, want, "{:?} v{v}", ApiKey::$api);
                    }
                    covered.push(ApiKey::$api);
                )*
                covered
            }};
        }
        let covered = check!(
            Fetch => FetchResponse, SyncGroup => SyncGroupResponse, Heartbeat => HeartbeatResponse,
            LeaveGroup => LeaveGroupResponse, ListGroups => ListGroupsResponse,
            DescribeGroups => DescribeGroupsResponse, FindCoordinator => FindCoordinatorResponse,
            DeleteTopics => DeleteTopicsResponse, ShareGroupHeartbeat => ShareGroupHeartbeatResponse,
            ShareFetch => ShareFetchResponse, ShareAcknowledge => ShareAcknowledgeResponse,
            ListOffsets => ListOffsetsResponse, CreateTopics => CreateTopicsResponse,
            JoinGroup => JoinGroupResponse, Metadata => MetadataResponse,
            OffsetCommit => OffsetCommitResponse, OffsetFetch => OffsetFetchResponse,
            DeleteRecords => DeleteRecordsResponse, CreatePartitions => CreatePartitionsResponse,
            DescribeConfigs => DescribeConfigsResponse, DescribeCluster => DescribeClusterResponse,
            OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
            DescribeLogDirs => DescribeLogDirsResponse, ElectLeaders => ElectLeadersResponse,
            UpdateFeatures => UpdateFeaturesResponse,
            AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
            ListPartitionReassignments => ListPartitionReassignmentsResponse,
            AlterConfigs => AlterConfigsResponse,
            IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
            InitProducerId => InitProducerIdResponse, AddPartitionsToTxn => AddPartitionsToTxnResponse,
            AddOffsetsToTxn => AddOffsetsToTxnResponse, EndTxn => EndTxnResponse,
            TxnOffsetCommit => TxnOffsetCommitResponse,
            DescribeTransactions => DescribeTransactionsResponse,
            ListTransactions => ListTransactionsResponse, DescribeProducers => DescribeProducersResponse,
            DeleteGroups => DeleteGroupsResponse, ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
            ConsumerGroupDescribe => ConsumerGroupDescribeResponse,
            DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
            AlterUserScramCredentials => AlterUserScramCredentialsResponse,
            DescribeClientQuotas => DescribeClientQuotasResponse,
            AlterClientQuotas => AlterClientQuotasResponse, DescribeAcls => DescribeAclsResponse,
            CreateAcls => CreateAclsResponse, DeleteAcls => DeleteAclsResponse,
        );
        // Every served API the table names was checked.
        for &(api, lo, hi) in SUPPORTED {
            if (lo..=hi).any(|v| throttle_time_first(api, v)) {
                assert!(
                    covered.contains(&api),
                    "{api:?} is in the table but not checked"
                );
            }
        }
    }

    fn broker(dir: &std::path::Path) -> Arc<Broker> {
        Arc::new(crate::broker::testing::open(dir))
    }

    fn frame(api: i16, version: i16, rest: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(api);
        b.put_i16(version);
        b.put_i32(42);
        b.put_i16(-1); // null client id (header v1)
        b.extend_from_slice(rest);
        b.freeze()
    }

    #[tokio::test]
    async fn huge_array_counts_are_refused_not_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        // Metadata v1: topics array claiming 2^31-1 entries, then nothing.
        let r = handle(
            &b,
            &mut Session::plaintext("test"),
            frame(3, 1, &0x7fff_ffffi32.to_be_bytes()),
        )
        .await;
        assert!(matches!(r, Err(ProtocolError::Malformed { .. })), "{r:?}");
        // Produce v3: null transactional id, acks, timeout, then a huge topic count.
        let mut body = Vec::new();
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1000i32.to_be_bytes());
        body.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
        let r = handle(&b, &mut Session::plaintext("test"), frame(0, 3, &body)).await;
        assert!(matches!(r, Err(ProtocolError::Malformed { .. })), "{r:?}");
        // The broker still answers afterwards.
        let ok = handle(&b, &mut Session::plaintext("test"), frame(18, 0, &[]))
            .await
            .unwrap()
            .unwrap();
        assert!(ok.len() > 10);
    }

    /// A request quota (`request_percentage`) shows in `throttle_time_ms` of any response that
    /// has the field, not only Produce and Fetch, and mutes the connection.
    #[tokio::test]
    async fn request_quota_throttles_show_in_every_response() {
        use crate::limits::quotas::{Entity, Key};
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let everyone = Entity {
            user: Some(None),
            client_id: None,
        };
        b.quotas
            // 0.01 ns of handling per second: any request goes over, however fast the
            // machine (0.001 % was 10 µs/s, which a quick Metadata answer stayed under).
            .alter(&[(everyone, Key::RequestPercentage, Some(1e-6))])
            .unwrap();
        let mut session = Session::plaintext("test");
        // Metadata v4: all topics (null), no auto-creation.
        let mut body = (-1i32).to_be_bytes().to_vec();
        body.push(0);
        let mut throttles = Vec::new();
        for _ in 0..3 {
            let r = handle(&b, &mut session, frame(3, 4, &body))
                .await
                .unwrap()
                .unwrap();
            throttles.push(i32::from_be_bytes([r[8], r[9], r[10], r[11]]));
            assert!(!session.mute.is_zero(), "the connection is muted too");
        }
        assert!(throttles.iter().all(|&t| t > 0), "{throttles:?}");
    }

    /// producer_ids_rate (KIP-936's quota): InitProducerId past the rate is answered with a
    /// throttle and mutes the connection; other clients are not charged for it.
    #[tokio::test]
    async fn producer_ids_rate_throttles_a_client_minting_ids() {
        use crate::limits::quotas::{Entity, Key};
        use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let churner = Entity {
            user: None,
            client_id: Some(Some("churner".into())),
        };
        b.quotas
            .alter(&[(churner, Key::ProducerIdsRate, Some(2.0))])
            .unwrap();
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let mut body = BytesMut::new();
        req.encode(&mut body, 4).unwrap();
        let init = |client: &'static str| {
            let b = b.clone();
            let body = body.clone();
            async move {
                let mut session = Session::plaintext("test");
                let mut f = BytesMut::new();
                f.put_i16(22);
                f.put_i16(4);
                f.put_i32(7);
                f.put_i16(client.len() as i16);
                f.put_slice(client.as_bytes());
                f.put_u8(0);
                f.put_slice(&body);
                let mut r = handle(&b, &mut session, f.freeze()).await.unwrap().unwrap();
                // Length, correlation id, the flexible header's tagged fields.
                let mut r = r.split_off(9).freeze();
                let r = InitProducerIdResponse::decode(&mut r, 4).unwrap();
                assert_eq!(r.error_code, 0);
                (r.throttle_time_ms, !session.mute.is_zero())
            }
        };
        // A burst of one second's worth, then throttled.
        assert_eq!(init("churner").await, (0, false));
        assert_eq!(init("churner").await, (0, false));
        let (ms, muted) = init("churner").await;
        assert!(
            ms > 0 && muted,
            "the third id in a second: {ms} ms, muted {muted}"
        );
        // Another client is not.
        assert_eq!(init("honest").await, (0, false));
    }

    /// Produces six batches to partition 0 of topic "big", batch `i` of `records(i)` records
    /// of 5,000 bytes `i`.
    /// Sends `req` through the handler as Fetch v11 on a plaintext session; the decoded answer.
    async fn fetch_v11(
        b: &Arc<Broker>,
        req: &kafka_protocol::messages::FetchRequest,
    ) -> kafka_protocol::messages::FetchResponse {
        let mut body = BytesMut::new();
        req.encode(&mut body, 11).unwrap();
        let mut r = handle(b, &mut Session::plaintext("test"), frame(1, 11, &body))
            .await
            .unwrap()
            .unwrap();
        // Length prefix and response header (correlation id) before the body.
        let mut r = r.split_off(8).freeze();
        kafka_protocol::messages::FetchResponse::decode(&mut r, 11).unwrap()
    }

    async fn produce_big_batches(b: &Arc<Broker>, records: impl Fn(u8) -> usize) {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{ProduceRequest, TopicName};
        let mut s = Session::plaintext("test");
        for i in 0..6u8 {
            let value = vec![i; 5000];
            let values: Vec<&[u8]> = (0..records(i)).map(|_| value.as_slice()).collect();
            let produce = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("big")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(
                            crate::log::batch::testing::batch(&values, 1000),
                        )))])]);
            let mut body = BytesMut::new();
            produce.encode(&mut body, 8).unwrap();
            handle(b, &mut s, frame(0, 8, &body))
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// A fetch answered from the segment files (sendfile) is byte for byte the answer read
    /// into memory, for read_uncommitted and read_committed, at limits that cut between
    /// batches and below the first one (KIP-74), and the file path was really taken.
    #[tokio::test]
    async fn a_fetch_from_the_files_is_the_fetch_from_memory() {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{FetchRequest, TopicName};
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let name = TopicName(StrBytes::from_static_str("big"));
        produce_big_batches(&b, |i| 4 + i as usize).await;
        for isolation in [0i8, 1] {
            for (offset, partition_max) in [(0i64, 1 << 20), (0, 60_000), (5, 10), (20, 100_000)] {
                let fetch = FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_min_bytes(1)
                    .with_max_bytes(50 << 20)
                    .with_isolation_level(isolation)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(name.clone())
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(partition_max)])]);
                let mut body = BytesMut::new();
                fetch.encode(&mut body, 11).unwrap();
                let mut answers = Vec::new();
                for zero_copy in [false, true] {
                    let before = b
                        .metrics
                        .fetch_sendfile_bytes
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let mut s = Session::plaintext("test");
                    s.zero_copy = zero_copy;
                    let r = handle(&b, &mut s, frame(1, 11, &body))
                        .await
                        .unwrap()
                        .unwrap();
                    let from_files = b
                        .metrics
                        .fetch_sendfile_bytes
                        .load(std::sync::atomic::Ordering::Relaxed)
                        - before;
                    assert_eq!(
                        from_files > 0,
                        zero_copy,
                        "offset {offset}, limit {partition_max}"
                    );
                    answers.push(r);
                }
                assert!(answers[0].len() > 20_000, "records came back");
                assert!(
                    answers[0] == answers[1],
                    "isolation {isolation}, offset {offset}, limit {partition_max}"
                );
            }
        }
    }

    /// Records sent from their files hold no memory: with the memory budget nearly spent, a
    /// fetch from the files still carries everything the client asked for, where one from
    /// memory is cut to its first batch (KIP-74).
    #[tokio::test]
    async fn a_fetch_from_the_files_needs_no_room_in_the_memory_budget() {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
        use kafka_protocol::protocol::Decodable;
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let name = TopicName(StrBytes::from_static_str("big"));
        produce_big_batches(&b, |_| 8).await;
        // Everything but 20 kB of the budget is taken (as by other responses in flight).
        let cap = crate::limits::Limits::default().max_in_flight_bytes;
        let taken = b.limits.memory.take_up_to(cap - 20_000);
        assert_eq!(taken.bytes(), cap - 20_000);
        let fetch = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name.clone())
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let mut body = BytesMut::new();
        fetch.encode(&mut body, 11).unwrap();
        let mut records = Vec::new();
        for zero_copy in [false, true] {
            let mut s = Session::plaintext("test");
            s.zero_copy = zero_copy;
            let mut r = handle(&b, &mut s, frame(1, 11, &body))
                .await
                .unwrap()
                .unwrap();
            // Length prefix and response header (correlation id) before the body.
            let mut r = r.split_off(8).freeze();
            let resp = FetchResponse::decode(&mut r, 11).unwrap();
            let pd = &resp.responses[0].partitions[0];
            let (end, n) = crate::log::batch::span(pd.records.as_ref().unwrap()).unzip();
            records.push((n.unwrap_or(0), end));
        }
        assert_eq!(
            records[0],
            (8, Some(8)),
            "from memory: the first batch only"
        );
        assert_eq!(records[1], (48, Some(48)), "from the files: all of it");
        drop(taken);
        assert_eq!(b.limits.memory.in_use(), 0, "nothing left held");
    }

    /// A long-polling fetch wakes when one of its own partitions gets records, whether it
    /// waits on each partition (a few of a topic) or on the whole topic (many), and not for
    /// another partition's records; a deleted topic wakes it too.
    #[tokio::test]
    async fn a_parked_fetch_wakes_for_its_own_partitions_and_a_deletion() {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let config = crate::broker::config::TopicConfig::default;
        b.create_topic("many", 40, config(), false).unwrap();
        b.create_topic("few", 3, config(), false).unwrap();
        b.create_topic("gone", 40, config(), false).unwrap();
        // Parks a fetch of `parts` of `topic` at offset 0 (10 s at most); resolves to the
        // answer and how long it took.
        let park = |topic: &'static str, parts: Vec<i32>| {
            let b = b.clone();
            let req = FetchRequest::default()
                .with_max_wait_ms(10_000)
                .with_min_bytes(1)
                .with_max_bytes(50 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str(topic)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(0)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    )]);
            tokio::spawn(async move {
                let t0 = Instant::now();
                (fetch_v11(&b, &req).await, t0.elapsed())
            })
        };
        let append = |topic: &str, p: i32| {
            let value = b"v".as_slice();
            b.topic(topic)
                .unwrap()
                .partition(p)
                .unwrap()
                .append(
                    &crate::log::batch::testing::batch(&[value], 1000),
                    1 << 20,
                    None,
                )
                .unwrap();
        };
        let with_records = |resp: &FetchResponse| -> Vec<i32> {
            resp.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
                .map(|p| p.partition_index)
                .collect()
        };
        let settle = || tokio::time::sleep(Duration::from_millis(200));

        // 40 partitions: the fetch waits on the topic.
        let many = park("many", (0..40).collect());
        settle().await;
        append("many", 17);
        let (resp, took) = many.await.unwrap();
        assert_eq!(with_records(&resp), vec![17]);
        assert!(
            took < Duration::from_secs(5),
            "woken by the append: {took:?}"
        );

        // 1 partition of 3: another partition's records leave it parked.
        let few = park("few", vec![0]);
        settle().await;
        append("few", 1);
        settle().await;
        assert!(!few.is_finished(), "woken by another partition's records");
        append("few", 0);
        let (resp, took) = few.await.unwrap();
        assert_eq!(with_records(&resp), vec![0]);
        assert!(
            took < Duration::from_secs(5),
            "woken by the append: {took:?}"
        );

        // Deleted under a parked fetch: answered at once, the topic unknown.
        let gone = park("gone", (0..40).collect());
        settle().await;
        b.delete_topic("gone").unwrap();
        let (resp, took) = gone.await.unwrap();
        assert!(
            took < Duration::from_secs(5),
            "woken by the deletion: {took:?}"
        );
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, code(ResponseError::UnknownTopicOrPartition));
    }

    /// KIP-227 through the request handler: a full fetch opens a session; an incremental one
    /// at the next epoch reads the whole session and answers only the partition with news;
    /// the same epoch twice is INVALID_FETCH_SESSION_EPOCH.
    #[tokio::test]
    async fn a_fetch_session_answers_only_partitions_with_news() {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        b.create_topic("s", 3, crate::broker::config::TopicConfig::default(), false)
            .unwrap();
        let name = TopicName(StrBytes::from_static_str("s"));
        let part = |p: i32, offset: i64| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)
        };
        let fetch = |id: i32, epoch: i32, parts: Vec<FetchPartition>, wait_ms: i32| {
            let b = b.clone();
            let topics = if parts.is_empty() {
                vec![]
            } else {
                vec![FetchTopic::default()
                    .with_topic(name.clone())
                    .with_partitions(parts)]
            };
            let req = FetchRequest::default()
                .with_max_wait_ms(wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(50 << 20)
                .with_session_id(id)
                .with_session_epoch(epoch)
                .with_topics(topics);
            async move { fetch_v11(&b, &req).await }
        };
        let listed = |r: &FetchResponse| -> Vec<(i32, i64, usize)> {
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| {
                    let n = p.records.as_ref().map_or(0, |r| r.len());
                    (p.partition_index, p.high_watermark, n)
                })
                .collect()
        };
        let full = fetch(0, 0, vec![part(0, 0), part(1, 0), part(2, 0)], 0).await;
        let id = full.session_id;
        assert_ne!(id, 0, "a session is opened");
        assert_eq!(listed(&full).len(), 3);
        let batch = crate::broker::testing::plain_batch(2);
        b.topic("s").unwrap().partitions[1]
            .append(&batch, 1 << 20, None)
            .unwrap();
        let news = fetch(id, 1, vec![], 0).await;
        assert_eq!(news.error_code, 0);
        assert_eq!(news.session_id, id);
        let got = listed(&news);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].0, got[0].1), (1, 2));
        assert!(got[0].2 > 0, "with its records");
        let quiet = fetch(id, 2, vec![part(1, 2)], 0).await;
        assert_eq!((quiet.error_code, listed(&quiet)), (0, vec![]));
        // Caught up everywhere, the next fetch parks until its deadline; DeleteRecords moving
        // partition 1's log start meanwhile (no append, so no records: as in Kafka, not
        // enough to answer early) shows in the answer, though nothing was appended.
        let parked = tokio::spawn(fetch(id, 3, vec![], 1500));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!parked.is_finished(), "answered with nothing new");
        assert_eq!(
            b.topic("s").unwrap().partitions[1]
                .delete_records(1)
                .unwrap(),
            Some(1)
        );
        let moved = tokio::time::timeout(std::time::Duration::from_secs(5), parked)
            .await
            .expect("answered at its deadline")
            .unwrap();
        let shown: Vec<(i32, i64, bool)> = moved
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| {
                let records = p.records.as_ref().is_some_and(|r| !r.is_empty());
                (p.partition_index, p.log_start_offset, records)
            })
            .collect();
        assert_eq!(shown, vec![(1, 1, false)]);
        assert_eq!(fetch(id, 3, vec![], 0).await.error_code, 71);
        assert_eq!(fetch(id + 1, 1, vec![], 0).await.error_code, 70);
        assert_eq!(b.fetch_sessions.len(), 1);
    }

    /// A BROKER resource names this broker by its id, or the cluster default by "": another
    /// id is INVALID_REQUEST, as in Kafka, not this broker's configs under another name.
    #[tokio::test]
    async fn broker_configs_of_another_broker_id_are_refused() {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
        use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let mut s = Session::plaintext("test");
        for (name, ok) in [("1", true), ("", true), ("7", false), ("x", false)] {
            let req = DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_string(name.into()))
                    .with_configuration_keys(None),
            ]);
            let mut body = BytesMut::new();
            req.encode(&mut body, 1).unwrap();
            let mut r = handle(&b, &mut s, frame(32, 1, &body))
                .await
                .unwrap()
                .unwrap()
                .freeze();
            r.advance(8); // length, correlation id
            let resp = DescribeConfigsResponse::decode(&mut r, 1).unwrap();
            let res = &resp.results[0];
            if ok {
                assert_eq!(
                    res.error_code, 0,
                    "broker '{name}': {:?}",
                    res.error_message
                );
            } else {
                assert_eq!(res.error_code, 42, "broker '{name}' answered"); // INVALID_REQUEST
                assert!(res.configs.is_empty());
            }
        }
    }

    /// Sends `req` at `version` (one with request header v1 and response header v0, i.e. not
    /// flexible) and decodes the answer.
    async fn ask<Req, Resp>(b: &Arc<Broker>, api: i16, version: i16, req: &Req) -> Resp
    where
        Req: kafka_protocol::protocol::Encodable,
        Resp: kafka_protocol::protocol::Decodable,
    {
        let mut body = BytesMut::new();
        req.encode(&mut body, version).unwrap();
        let mut r = handle(
            b,
            &mut Session::plaintext("test"),
            frame(api, version, &body),
        )
        .await
        .unwrap()
        .unwrap()
        .freeze();
        r.advance(8); // length, correlation id
        Resp::decode(&mut r, version).unwrap()
    }

    /// The same for a flexible version (request header v2, response header v1).
    async fn ask_flexible<Req, Resp>(b: &Arc<Broker>, api: i16, version: i16, req: &Req) -> Resp
    where
        Req: kafka_protocol::protocol::Encodable,
        Resp: kafka_protocol::protocol::Decodable,
    {
        let mut body = BytesMut::new();
        body.put_u8(0); // no tagged fields in the header
        req.encode(&mut body, version).unwrap();
        let mut r = handle(
            b,
            &mut Session::plaintext("test"),
            frame(api, version, &body),
        )
        .await
        .unwrap()
        .unwrap()
        .freeze();
        r.advance(9); // length, correlation id, no tagged fields
        Resp::decode(&mut r, version).unwrap()
    }

    /// As Kafka's coordinator: a KIP-848 or share heartbeat without a group id is refused
    /// (INVALID_REQUEST), and no group named "" comes to exist.
    #[tokio::test]
    async fn heartbeats_without_a_group_id_are_refused() {
        use kafka_protocol::messages::{
            ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
            ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, TopicName,
        };
        use kafka_protocol::protocol::StrBytes;
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let topics = Some(vec![TopicName(StrBytes::from_static_str("t"))]);
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_member_id(StrBytes::from_static_str("m"))
            .with_rebalance_timeout_ms(10_000)
            .with_subscribed_topic_names(topics.clone());
        let resp: ConsumerGroupHeartbeatResponse = ask_flexible(&b, 68, 0, &req).await;
        assert_eq!(resp.error_code, 42, "{:?}", resp.error_message);
        let req = ShareGroupHeartbeatRequest::default()
            .with_member_id(StrBytes::from_static_str("m"))
            .with_subscribed_topic_names(topics);
        let resp: ShareGroupHeartbeatResponse = ask_flexible(&b, 76, 1, &req).await;
        assert_eq!(resp.error_code, 42, "{:?}", resp.error_message);
        assert!(b.groups.list().iter().all(|g| !g.id.is_empty()));
    }

    /// IncrementalAlterConfigs (v0) of one resource: its error code and message.
    async fn alter_incrementally(
        b: &Arc<Broker>,
        resource_type: i8,
        name: &str,
        ops: &[(&str, i8, Option<&str>)],
    ) -> (i16, Option<String>) {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::{
            IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
        };
        use kafka_protocol::protocol::StrBytes;
        let s = |v: &str| StrBytes::from_string(v.to_string());
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configs(
                    ops.iter()
                        .map(|&(k, op, v)| {
                            AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(op)
                                .with_value(v.map(s))
                        })
                        .collect(),
                ),
        ]);
        let resp: IncrementalAlterConfigsResponse = ask(b, 44, 0, &req).await;
        let r = &resp.responses[0];
        (
            r.error_code,
            r.error_message.as_ref().map(|m| m.to_string()),
        )
    }

    /// DescribeConfigs (v1) of one resource: (name, value, source) of each config.
    async fn described(
        b: &Arc<Broker>,
        resource_type: i8,
        name: &str,
    ) -> Vec<(String, String, i8)> {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
        use kafka_protocol::protocol::StrBytes;
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.into()))
                .with_configuration_keys(None),
        ]);
        let resp: DescribeConfigsResponse = ask(b, 32, 1, &req).await;
        let res = &resp.results[0];
        assert_eq!(res.error_code, 0, "{:?}", res.error_message);
        res.configs
            .iter()
            .map(|c| {
                let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                (c.name.to_string(), value, c.config_source)
            })
            .collect()
    }

    /// Kafka 4's group configs: a group (existing or not) takes overrides of the coordinator's
    /// KIP-848 settings through IncrementalAlterConfigs, Describe shows them as GROUP_CONFIG
    /// (8), a restart keeps them; unknown keys, bad values and list operations are refused.
    #[tokio::test]
    async fn group_configs_are_set_described_and_kept() {
        const GROUP: i8 = 32;
        let (set, delete, append) = (0, 1, 2);
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let session = |d: &[(String, String, i8)]| {
            d.iter()
                .find(|(k, ..)| k == "consumer.session.timeout.ms")
                .map(|(_, v, src)| (v.clone(), *src))
                .unwrap()
        };
        assert_eq!(
            session(&described(&b, GROUP, "g").await),
            ("45000".into(), 5)
        );
        let (code, msg) = alter_incrementally(
            &b,
            GROUP,
            "g",
            &[("consumer.session.timeout.ms", set, Some("50000"))],
        )
        .await;
        assert_eq!(code, 0, "{msg:?}");
        assert_eq!(
            session(&described(&b, GROUP, "g").await),
            ("50000".into(), 8)
        );
        assert_eq!(
            session(&described(&b, GROUP, "other").await),
            ("45000".into(), 5),
            "only that group"
        );
        assert_eq!(
            b.groups.group_config("g", |c| c.session_timeout_ms()),
            50_000,
            "the coordinator runs the group with it"
        );
        for (ops, want) in [
            (vec![("group.max.size", set, Some("3"))], 40), // INVALID_CONFIG
            (vec![("consumer.session.timeout.ms", set, Some("1"))], 40),
            (vec![("consumer.session.timeout.ms", append, Some("1"))], 40),
        ] {
            let (code, msg) = alter_incrementally(&b, GROUP, "g", &ops).await;
            assert_eq!(code, want, "{ops:?}: {msg:?}");
            assert!(msg.is_some_and(|m| !m.is_empty()), "{ops:?} says why");
        }
        drop(b);
        let b = broker(dir.path());
        assert_eq!(
            session(&described(&b, GROUP, "g").await),
            ("50000".into(), 8),
            "kept across a restart"
        );
        let (code, _) = alter_incrementally(
            &b,
            GROUP,
            "g",
            &[("consumer.session.timeout.ms", delete, None)],
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(
            session(&described(&b, GROUP, "g").await),
            ("45000".into(), 5)
        );
    }

    /// APPEND and SUBTRACT apply to a broker's list configs (`log.cleanup.policy`) as to a
    /// topic's, starting from the value the level has or inherits; other configs refuse them.
    #[tokio::test]
    async fn broker_list_configs_take_append_and_subtract() {
        let (append, subtract) = (2, 3);
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        // The broker's log.cleanup.policy (value, source) after one change to it.
        async fn policy_after(b: &Arc<Broker>, op: i8, value: &str) -> Option<(String, i8)> {
            let (code, msg) =
                alter_incrementally(b, BROKER, "1", &[("log.cleanup.policy", op, Some(value))])
                    .await;
            assert_eq!(code, 0, "{msg:?}");
            described(b, BROKER, "1")
                .await
                .into_iter()
                .find(|(k, ..)| k == "log.cleanup.policy")
                .map(|(_, v, src)| (v, src))
        }
        assert_eq!(
            policy_after(&b, append, "compact").await,
            Some(("delete,compact".into(), 2))
        );
        assert_eq!(
            policy_after(&b, subtract, "delete").await,
            Some(("compact".into(), 2))
        );
        let (code, _) =
            alter_incrementally(&b, BROKER, "1", &[("log.retention.ms", append, Some("5"))]).await;
        assert_eq!(code, 40, "not a list: INVALID_CONFIG");
    }

    /// DescribeConfigs resource type of a broker.
    const BROKER: i8 = 4;

    /// Broker 1's `key` as DescribeConfigs gives it: value and source.
    async fn broker_config(b: &Arc<Broker>, key: &str) -> Option<(String, i8)> {
        described(b, BROKER, "1")
            .await
            .into_iter()
            .find(|(k, ..)| k == key)
            .map(|(_, v, src)| (v, src))
    }

    /// Kafka's Kerberos settings, which Kafka takes at run time (librdkafka's 0081 sets one):
    /// kept, typed and reported as this broker's dynamic value, never a topic default.
    #[tokio::test]
    async fn kafkas_kerberos_broker_settings_are_kept_and_reported() {
        let key = "sasl.kerberos.min.time.before.relogin";
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        assert_eq!(broker_config(&b, key).await, Some(("60000".into(), 5)));
        let (code, msg) = alter_incrementally(&b, BROKER, "1", &[(key, 0, Some("58000"))]).await;
        assert_eq!(code, 0, "{msg:?}");
        assert_eq!(broker_config(&b, key).await, Some(("58000".into(), 2)));
        let (code, _) = alter_incrementally(&b, BROKER, "1", &[(key, 0, Some("soon"))]).await;
        assert_ne!(code, 0, "a value of the wrong type is refused");
        let (code, _) =
            alter_incrementally(&b, BROKER, "1", &[("log.dirs", 0, Some("/elsewhere"))]).await;
        assert_eq!(code, 42, "other static settings are still refused");
    }

    /// `log.cleaner.threads` changes while the broker runs, within Kafka's steps (at most
    /// double, at least half the current count).
    #[tokio::test]
    async fn cleaner_threads_change_while_running_within_kafkas_steps() {
        let key = "log.cleaner.threads";
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        assert_eq!(broker_config(&b, key).await, Some(("1".into(), 5)));
        let (code, msg) = alter_incrementally(&b, BROKER, "1", &[(key, 0, Some("2"))]).await;
        assert_eq!(code, 0, "{msg:?}");
        assert_eq!(b.cleaner_threads(), 2);
        assert_eq!(broker_config(&b, key).await, Some(("2".into(), 2)));
        // Set at the cluster default, 5 is taken: this broker's own 2 stands over it.
        let (code, msg) = alter_incrementally(&b, BROKER, "", &[(key, 0, Some("5"))]).await;
        assert_eq!(code, 0, "{msg:?}");
        assert_eq!(b.cleaner_threads(), 2);
        let (code, msg) = alter_incrementally(&b, BROKER, "", &[(key, 1, None)]).await;
        assert_eq!(code, 0, "{msg:?}");
        let (code, msg) = alter_incrementally(&b, BROKER, "1", &[(key, 0, Some("5"))]).await;
        assert_eq!(
            code, 42,
            "more than double: INVALID_REQUEST, as Kafka 4.4 answers"
        );
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.contains("more than double the current value 2")),
            "{msg:?}"
        );
        let (code, _) = alter_incrementally(&b, BROKER, "1", &[(key, 0, Some("0"))]).await;
        assert_ne!(code, 0, "at least one thread");
        assert_eq!(b.cleaner_threads(), 2, "refused changes change nothing");
        let (code, msg) = alter_incrementally(&b, BROKER, "1", &[(key, 1, None)]).await;
        assert_eq!(code, 0, "{msg:?}");
        assert_eq!(
            b.cleaner_threads(),
            1,
            "deleted: the config file's count again"
        );
        // The step is checked on the count that results, whichever way: 4 deleted back to 1
        // is less than half.
        for v in ["2", "4"] {
            let (code, msg) = alter_incrementally(&b, BROKER, "1", &[(key, 0, Some(v))]).await;
            assert_eq!(code, 0, "{msg:?}");
        }
        let (code, msg) = alter_incrementally(&b, BROKER, "1", &[(key, 1, None)]).await;
        assert_eq!(code, 42, "{msg:?}");
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.contains("less than half the current value 4")),
            "{msg:?}"
        );
        assert_eq!(b.cleaner_threads(), 4);
    }

    #[tokio::test]
    async fn unknown_apiversions_version_gets_a_v0_answer() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let r = handle(&b, &mut Session::plaintext("test"), frame(18, 99, &[]))
            .await
            .unwrap()
            .unwrap();
        // length, correlation id, then error code 35 (UNSUPPORTED_VERSION).
        assert_eq!(&r[4..8], &42i32.to_be_bytes());
        assert_eq!(&r[8..10], &35i16.to_be_bytes());
    }

    use bytes::Buf;

    fn put_str(b: &mut BytesMut, s: &str) {
        b.put_i16(s.len() as i16);
        b.put_slice(s.as_bytes());
    }

    fn get_str(b: &mut Bytes) -> String {
        let n = b.get_i16();
        String::from_utf8(b.split_to(n.max(0) as usize).to_vec()).unwrap()
    }

    /// What Debian's Sarama sends with its defaults: a message set produced with Produce v2,
    /// fetched with v0 (magic 0) and v2 (magic 1), offsets listed with v0, committed with
    /// OffsetCommit v1 and read back with OffsetFetch v0. Each answer is read in its old
    /// layout, field by field, to its last byte.
    #[tokio::test]
    async fn removed_versions_are_served_in_their_old_layouts() {
        use crate::records::{
            legacy::encode_message_set, legacy::read_message_set, Compression, Record,
        };
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let mut s = Session::plaintext("test");
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                offset: i,
                timestamp: 1_000 + i,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                headers: Vec::new(),
            })
            .collect();
        let set = encode_message_set(&records, 1, Compression::Gzip).unwrap();
        let mut body = BytesMut::new();
        body.put_i16(1); // acks
        body.put_i32(1000);
        body.put_i32(1);
        put_str(&mut body, "t");
        body.put_i32(1);
        body.put_i32(0);
        body.put_i32(set.len() as i32);
        body.put_slice(&set);
        let mut r = handle(&b, &mut s, frame(0, 2, &body))
            .await
            .unwrap()
            .unwrap()
            .freeze();
        assert_eq!(r.get_i32() as usize, r.len());
        assert_eq!(r.get_i32(), 42);
        assert_eq!(
            (r.get_i32(), get_str(&mut r), r.get_i32()),
            (1, "t".into(), 1)
        );
        // partition, error, base offset, log-append time (v2), then the throttle time (v1+).
        assert_eq!(
            (r.get_i32(), r.get_i16(), r.get_i64(), r.get_i64()),
            (0, 0, 0, -1)
        );
        assert_eq!((r.get_i32(), r.len()), (0, 0));

        for (version, magic) in [(0i16, 0i8), (2, 1)] {
            let mut body = BytesMut::new();
            body.put_i32(-1); // replica
            body.put_i32(0); // max wait
            body.put_i32(0); // min bytes
            body.put_i32(1);
            put_str(&mut body, "t");
            body.put_i32(1);
            body.put_i32(0);
            body.put_i64(0);
            body.put_i32(1 << 20);
            let mut r = handle(&b, &mut s, frame(1, version, &body))
                .await
                .unwrap()
                .unwrap()
                .freeze();
            assert_eq!(r.get_i32() as usize, r.len());
            r.advance(4);
            if version >= 1 {
                assert_eq!(r.get_i32(), 0, "throttle time");
            }
            assert_eq!(
                (r.get_i32(), get_str(&mut r), r.get_i32()),
                (1, "t".into(), 1)
            );
            assert_eq!((r.get_i32(), r.get_i16(), r.get_i64()), (0, 0, 3));
            let n = r.get_i32() as usize;
            let got = r.split_to(n);
            assert!(r.is_empty());
            assert_eq!(got[16], magic as u8, "magic of the first message");
            let back = read_message_set(got, 77).unwrap();
            assert_eq!(back.compression, Compression::None);
            for (a, b) in records.iter().zip(&back.records) {
                assert_eq!((&a.key, &a.value), (&b.key, &b.value));
                assert_eq!(b.timestamp, if magic == 0 { 77 } else { a.timestamp });
            }
            assert_eq!(back.records.len(), 3);
        }

        let mut body = BytesMut::new();
        body.put_i32(-1);
        body.put_i32(1);
        put_str(&mut body, "t");
        body.put_i32(1);
        body.put_i32(0);
        body.put_i64(-1); // latest
        body.put_i32(1); // max_num_offsets
        let mut r = handle(&b, &mut s, frame(2, 0, &body))
            .await
            .unwrap()
            .unwrap()
            .freeze();
        r.advance(8);
        assert_eq!(
            (r.get_i32(), get_str(&mut r), r.get_i32()),
            (1, "t".into(), 1)
        );
        assert_eq!(
            (r.get_i32(), r.get_i16(), r.get_i32(), r.get_i64()),
            (0, 0, 1, 3)
        );
        assert!(r.is_empty());

        let mut body = BytesMut::new();
        put_str(&mut body, "g");
        body.put_i32(-1); // generation
        put_str(&mut body, "");
        body.put_i32(1);
        put_str(&mut body, "t");
        body.put_i32(1);
        body.put_i32(0);
        body.put_i64(2);
        body.put_i64(-1); // commit timestamp (v1 only)
        put_str(&mut body, "meta");
        let mut r = handle(&b, &mut s, frame(8, 1, &body))
            .await
            .unwrap()
            .unwrap()
            .freeze();
        r.advance(8);
        assert_eq!(
            (r.get_i32(), get_str(&mut r), r.get_i32()),
            (1, "t".into(), 1)
        );
        assert_eq!((r.get_i32(), r.get_i16()), (0, 0));
        assert!(r.is_empty());

        let mut body = BytesMut::new();
        put_str(&mut body, "g");
        body.put_i32(1);
        put_str(&mut body, "t");
        body.put_i32(1);
        body.put_i32(0);
        let mut r = handle(&b, &mut s, frame(9, 0, &body))
            .await
            .unwrap()
            .unwrap()
            .freeze();
        r.advance(8);
        assert_eq!(
            (r.get_i32(), get_str(&mut r), r.get_i32()),
            (1, "t".into(), 1)
        );
        assert_eq!(
            (r.get_i32(), r.get_i64(), get_str(&mut r), r.get_i16()),
            (0, 2, "meta".into(), 0)
        );
        assert!(r.is_empty());
    }

    /// A message set that fails its crc is refused for its partition, in the old layout, and
    /// nothing is stored.
    #[tokio::test]
    async fn a_corrupt_old_message_set_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let rec = crate::records::Record {
            value: Some(Bytes::from_static(b"v")),
            ..Default::default()
        };
        let mut set = crate::records::legacy::encode_message_set(
            &[rec],
            0,
            crate::records::Compression::None,
        )
        .unwrap()
        .to_vec();
        let last = set.len() - 1;
        set[last] ^= 0xff;
        let mut body = BytesMut::new();
        body.put_i16(1);
        body.put_i32(1000);
        body.put_i32(1);
        put_str(&mut body, "t");
        body.put_i32(1);
        body.put_i32(0);
        body.put_i32(set.len() as i32);
        body.put_slice(&set);
        let mut r = handle(&b, &mut Session::plaintext("test"), frame(0, 0, &body))
            .await
            .unwrap()
            .unwrap()
            .freeze();
        r.advance(8);
        assert_eq!(
            (r.get_i32(), get_str(&mut r), r.get_i32()),
            (1, "t".into(), 1)
        );
        let (partition, error, base) = (r.get_i32(), r.get_i16(), r.get_i64());
        assert_eq!(partition, 0);
        assert_eq!(error, 2, "CORRUPT_MESSAGE");
        assert_eq!(base, -1);
        assert!(
            r.is_empty(),
            "v0 has no log-append time and no throttle time"
        );
        if let Some(t) = b.topic("t") {
            assert_eq!(t.partition(0).map(|p| p.watermarks().high), Some(0));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_frames_never_panic(api in 0i16..70, version in -1i16..20, rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let dir = tempfile::tempdir().unwrap();
            let b = broker(dir.path());
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(2), handle(&b, &mut Session::plaintext("test"), frame(api, version, &rest))).await
            });
        }
    }
}
