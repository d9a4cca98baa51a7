//! SaslHandshake and SaslAuthenticate (they change the connection's session, so they take it
//! mutably), and the SCRAM credential APIs of KIP-554.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::ResponseError;

use bytes::{BufMut, Bytes, BytesMut};

use super::{code, sb, Ctx, ProtocolError};
use crate::auth::acl::Operation;
use crate::auth::sasl::Step;
use crate::auth::scram::{Credential, Mechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::auth::users::Change;
use crate::auth::Session;
use crate::broker::Broker;

/// Kafka's `connection.failed.authentication.delay.ms` default.
const FAILED_AUTHENTICATION_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

pub fn handshake(
    session: &mut Session,
    version: i16,
    req: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let Some(sasl) = session.sasl.as_mut() else {
        // Not a SASL listener (Kafka answers the same).
        return SaslHandshakeResponse::default()
            .with_error_code(code(ResponseError::IllegalSaslState));
    };
    let result = sasl.handshake(req.mechanism.as_str(), version == 0);
    if let Err(e) = result {
        tracing::info!(peer = %session.peer, mechanism = %req.mechanism.as_str(), error = ?e, "SASL handshake refused");
    }
    SaslHandshakeResponse::default()
        .with_error_code(result.err().map(code).unwrap_or(0))
        .with_mechanisms(sasl.enabled().map(sb).collect())
}

/// A bare token after SaslHandshake v0: the answer is a bare length-prefixed token too, and
/// a failure closes the connection without one (there is no error field to put it in).
pub fn raw_token(
    broker: &Broker,
    session: &mut Session,
    token: &[u8],
) -> Result<Option<BytesMut>, ProtocolError> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token));
    let r = authenticate(broker, session, req);
    if r.error_code != 0 {
        return Err(ProtocolError::Unauthenticated(
            r.error_message.map(|m| m.to_string()).unwrap_or_default(),
        ));
    }
    let mut out = BytesMut::with_capacity(4 + r.auth_bytes.len());
    out.put_i32(r.auth_bytes.len() as i32);
    out.extend_from_slice(&r.auth_bytes);
    Ok(Some(out))
}

pub fn authenticate(
    broker: &Broker,
    session: &mut Session,
    req: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let Some(sasl) = session.sasl.as_mut() else {
        session.close_after_response = true;
        return SaslAuthenticateResponse::default()
            .with_error_code(code(ResponseError::IllegalSaslState))
            .with_error_message(Some(sb("this listener does not use SASL")));
    };
    let step = sasl.authenticate(
        &req.auth_bytes,
        &broker.users,
        broker.config.auth.oauth.as_deref(),
        Instant::now(),
        broker.config.auth.max_reauth_ms,
    );
    match step {
        Step::Continue(bytes) => SaslAuthenticateResponse::default().with_auth_bytes(bytes.into()),
        Step::Done {
            bytes,
            user,
            lifetime_ms,
        } => {
            tracing::debug!(peer = %session.peer, %user, "SASL authenticated");
            broker
                .metrics
                .authentications
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            SaslAuthenticateResponse::default()
                .with_auth_bytes(bytes.into())
                .with_session_lifetime_ms(lifetime_ms)
        }
        Step::Failed { code, message } => {
            broker
                .metrics
                .authentication_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(peer = %session.peer, listener = %session.listener.name, reason = %message, "SASL authentication failed");
            session.close_after_response = true;
            session.delay_response = FAILED_AUTHENTICATION_DELAY;
            SaslAuthenticateResponse::default()
                .with_error_code(code)
                .with_error_message(Some(sb(message)))
        }
    }
}

/// Managing credentials is a cluster operation: ALTER (DESCRIBE to list) on the cluster when
/// ACLs are on. Without an authorizer, if `super_users` is set only they may; otherwise
/// anyone who got in may, as on Kafka without an authorizer.
fn may_manage_users(ctx: &Ctx, op: Operation) -> bool {
    if ctx.broker.acls.enabled() {
        return ctx.may_cluster(op);
    }
    let supers = &ctx.broker.config.auth.super_users;
    supers.is_empty() || supers.iter().any(|s| s == ctx.principal)
}

pub fn describe(
    ctx: &Ctx,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let r = DescribeUserScramCredentialsResponse::default();
    if !may_manage_users(ctx, Operation::Describe) {
        return r.with_error_code(code(ResponseError::ClusterAuthorizationFailed));
    }
    let all = ctx.broker.users.describe();
    let info = |mechs: &Vec<(Mechanism, u32)>| {
        mechs
            .iter()
            .map(|(m, i)| {
                CredentialInfo::default()
                    .with_mechanism(m.code())
                    .with_iterations(*i as i32)
            })
            .collect()
    };
    // Null or empty: every user (KIP-554).
    let results = match req.users.filter(|u| !u.is_empty()) {
        None => all
            .iter()
            .map(|(u, m)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(sb(u.clone()))
                    .with_credential_infos(info(m))
            })
            .collect(),
        Some(names) => {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for n in &names {
                *seen.entry(n.name.as_str()).or_default() += 1;
            }
            let mut out = Vec::new();
            let mut done = std::collections::HashSet::new();
            for n in &names {
                let name = n.name.as_str();
                if !done.insert(name) {
                    continue;
                }
                let res = DescribeUserScramCredentialsResult::default().with_user(sb(name));
                out.push(if seen[name] > 1 {
                    res.with_error_code(code(ResponseError::DuplicateResource))
                        .with_error_message(Some(sb(format!(
                            "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                        ))))
                } else if let Some(m) = all.get(name) {
                    res.with_credential_infos(info(m))
                } else {
                    res.with_error_code(code(ResponseError::ResourceNotFound))
                        .with_error_message(Some(sb(format!(
                            "Attempt to describe a user credential that does not exist: {name}"
                        ))))
                });
            }
            out
        }
    };
    r.with_results(results)
}

/// Writes the credentials file, so it runs on the blocking pool.
pub fn alter(
    ctx: &Ctx,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut results: BTreeMap<String, (i16, Option<String>)> = BTreeMap::new();
    let users = req
        .deletions
        .iter()
        .map(|d| d.name.as_str())
        .chain(req.upsertions.iter().map(|u| u.name.as_str()));
    if !may_manage_users(ctx, Operation::Alter) {
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|u| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(sb(u))
                        .with_error_code(code(ResponseError::ClusterAuthorizationFailed))
                })
                .collect(),
        );
    }
    // Kafka's rules: one change per user and mechanism per request, an empty name and an
    // unknown mechanism are refused, iterations within the mechanism's bounds.
    let mut count: HashMap<(&str, i8), usize> = HashMap::new();
    for (n, m) in req
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism))
        .chain(
            req.upsertions
                .iter()
                .map(|u| (u.name.as_str(), u.mechanism)),
        )
    {
        *count.entry((n, m)).or_default() += 1;
    }
    let mut fail = |user: &str, e: ResponseError, msg: String| {
        results
            .entry(user.to_string())
            .or_insert((code(e), Some(msg)));
    };
    let mut changes = Vec::new();
    let mut changed_users = Vec::new();
    for d in &req.deletions {
        let user = d.name.as_str();
        if user.is_empty() {
            fail(
                user,
                ResponseError::UnacceptableCredential,
                "Username must not be empty".into(),
            );
        } else if count[&(user, d.mechanism)] > 1 {
            fail(
                user,
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request".into(),
            );
        } else if let Some(mech) = Mechanism::from_code(d.mechanism) {
            if ctx.broker.users.credential(user, mech).is_none() {
                fail(
                    user,
                    ResponseError::ResourceNotFound,
                    "Attempt to delete a user credential that does not exist".into(),
                );
                continue;
            }
            changes.push(Change::Delete {
                user: user.to_string(),
                mech,
            });
            changed_users.push(user.to_string());
        } else {
            fail(
                user,
                ResponseError::UnsupportedSaslMechanism,
                "Unknown SCRAM mechanism".into(),
            );
        }
    }
    for u in &req.upsertions {
        let user = u.name.as_str();
        let Some(mech) = Mechanism::from_code(u.mechanism) else {
            fail(
                user,
                ResponseError::UnsupportedSaslMechanism,
                "Unknown SCRAM mechanism".into(),
            );
            continue;
        };
        if user.is_empty() {
            fail(
                user,
                ResponseError::UnacceptableCredential,
                "Username must not be empty".into(),
            );
        } else if count[&(user, u.mechanism)] > 1 {
            fail(
                user,
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request".into(),
            );
        } else if !(MIN_ITERATIONS as i32..=MAX_ITERATIONS as i32).contains(&u.iterations) {
            fail(
                user,
                ResponseError::UnacceptableCredential,
                format!("Iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}"),
            );
        } else if u.salted_password.is_empty() || u.salt.is_empty() {
            // Any other length is taken, as Kafka takes it: the keys are HMACs of it.
            fail(
                user,
                ResponseError::UnacceptableCredential,
                "Salt and salted password must not be empty".into(),
            );
        } else {
            changes.push(Change::Upsert {
                user: user.to_string(),
                mech,
                credential: Credential::from_salted_password(
                    mech,
                    &u.salted_password,
                    u.salt.to_vec(),
                    u.iterations as u32,
                ),
            });
            changed_users.push(user.to_string());
        }
    }
    // A user with any refused change gets none of its changes applied.
    changes.retain(|c| {
        let user = match c {
            Change::Upsert { user, .. } | Change::Delete { user, .. } => user,
        };
        !results.contains_key(user)
    });
    match ctx.broker.users.apply(&changes) {
        Ok(_) => {
            for u in changed_users {
                results.entry(u).or_insert((0, None));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store SCRAM credentials");
            for u in changed_users {
                results
                    .entry(u)
                    .or_insert((code(ResponseError::UnknownServerError), Some(e.to_string())));
            }
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(
        results
            .into_iter()
            .map(|(u, (c, m))| {
                AlterUserScramCredentialsResult::default()
                    .with_user(sb(u))
                    .with_error_code(c)
                    .with_error_message(m.map(sb))
            })
            .collect(),
    )
}
