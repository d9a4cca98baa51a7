//! One connection's SASL state (KIP-43, KIP-152, KIP-368), with no I/O: the protocol layer
//! feeds it SaslHandshake and SaslAuthenticate requests and asks it, before every other
//! request, whether the connection may be served.

use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

use super::oauth::{self, OAuth};
use super::scram::{Mechanism, ServerFirst};
use super::users::Users;

/// A SASL mechanism the broker offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mech {
    Plain,
    Scram(Mechanism),
    OAuthBearer,
}

impl Mech {
    pub fn name(self) -> &'static str {
        match self {
            Mech::Plain => "PLAIN",
            Mech::Scram(m) => m.name(),
            Mech::OAuthBearer => "OAUTHBEARER",
        }
    }

    pub fn from_name(name: &str) -> Option<Mech> {
        if name == "PLAIN" {
            Some(Mech::Plain)
        } else if name == "OAUTHBEARER" {
            Some(Mech::OAuthBearer)
        } else {
            Mechanism::from_name(name).map(Mech::Scram)
        }
    }

    /// Enabled unless configured otherwise (OAUTHBEARER needs its keys configured).
    pub const ALL: [Mech; 3] = [
        Mech::Scram(Mechanism::Sha256),
        Mech::Scram(Mechanism::Sha512),
        Mech::Plain,
    ];
}

/// Largest frame a connection may send before it has authenticated (Kafka's
/// `sasl.server.max.receive.size`): an unauthenticated peer cannot make the broker buffer
/// 100 MB.
pub const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

#[derive(Debug)]
enum Phase {
    /// Waiting for a SaslHandshake.
    Idle,
    /// Mechanism chosen; waiting for the first SaslAuthenticate.
    Chosen(Mech),
    /// SCRAM: server-first sent; waiting for the client's final message.
    Scram(Box<ServerFirst>),
    /// OAUTHBEARER: the token was refused and the error challenge sent; waiting for the
    /// client's lone kvsep (RFC 7628 §3.2.3) to fail with this reason.
    OAuthRefused(String),
}

#[derive(Debug)]
struct Session {
    mech: Mech,
    user: String,
    /// KIP-368: when the session ends unless the client re-authenticates.
    expires: Option<Instant>,
}

/// What to answer a SaslAuthenticate with.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes; the exchange goes on.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send these bytes and the session lifetime (0: no limit).
    Done {
        bytes: Vec<u8>,
        user: String,
        lifetime_ms: i64,
    },
    /// Answer with this error and close the connection after the response, as Kafka does.
    Failed { code: i16, message: String },
}

/// Whether a request may be served on this connection now.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Serve,
    /// Close the connection without an answer (Kafka does the same: a client that sends
    /// anything else before authenticating is broken or hostile).
    Close(String),
}

#[derive(Debug)]
pub struct Sasl {
    enabled: Vec<Mech>,
    /// SaslHandshake v0: the exchange's tokens come as bare length-prefixed frames, not
    /// wrapped in SaslAuthenticate requests (KIP-43; pre-1.0 Java clients).
    raw: bool,
    phase: Phase,
    session: Option<Session>,
}

impl Sasl {
    pub fn new(enabled: Vec<Mech>) -> Sasl {
        Sasl {
            enabled,
            raw: false,
            phase: Phase::Idle,
            session: None,
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.user.as_str())
    }

    /// Whether the connection has authenticated (and is not mid-way through re-authenticating
    /// past its session's end): the frame limit and the request gate follow from it.
    pub fn authenticated(&self, now: Instant) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.expires.is_none_or(|e| now < e))
    }

    pub fn gate(&self, api: ApiKey, now: Instant) -> Gate {
        if matches!(
            api,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        ) {
            return Gate::Serve;
        }
        match &self.session {
            None => Gate::Close(format!(
                "unexpected {api:?} request before SASL authentication"
            )),
            Some(s) if s.expires.is_some_and(|e| now >= e) => {
                Gate::Close("the SASL session expired without re-authentication".into())
            }
            Some(_) if !matches!(self.phase, Phase::Idle) => Gate::Close(format!(
                "unexpected {api:?} request during SASL re-authentication"
            )),
            Some(_) => Gate::Serve,
        }
    }

    /// SaslHandshake: the mechanism for the next exchange. The error (if any) goes in the
    /// response together with the enabled mechanisms.
    /// Whether the next frame is a bare SASL token (after a SaslHandshake v0).
    pub fn expects_raw_token(&self) -> bool {
        self.raw && !matches!(self.phase, Phase::Idle)
    }

    pub fn handshake(&mut self, mechanism: &str, raw_tokens: bool) -> Result<(), ResponseError> {
        if !matches!(self.phase, Phase::Idle) {
            return Err(ResponseError::IllegalSaslState);
        }
        let Some(mech) = Mech::from_name(mechanism).filter(|m| self.enabled.contains(m)) else {
            return Err(ResponseError::UnsupportedSaslMechanism);
        };
        if self.session.as_ref().is_some_and(|s| s.mech != mech) {
            // KIP-368: a re-authentication keeps the mechanism.
            return Err(ResponseError::IllegalSaslState);
        }
        self.phase = Phase::Chosen(mech);
        self.raw = raw_tokens;
        Ok(())
    }

    pub fn enabled(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.enabled.iter().map(|m| m.name())
    }

    /// SaslAuthenticate: one token of the exchange.
    pub fn authenticate(
        &mut self,
        token: &[u8],
        users: &Users,
        oauth: Option<&OAuth>,
        now: Instant,
        max_reauth_ms: u64,
    ) -> Step {
        let failed = |e: &dyn std::fmt::Display| Step::Failed {
            code: ResponseError::SaslAuthenticationFailed.code(),
            message: e.to_string(),
        };
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => Step::Failed {
                code: ResponseError::IllegalSaslState.code(),
                message: "SaslAuthenticate before SaslHandshake".into(),
            },
            Phase::Chosen(Mech::Plain) => match plain(token, users) {
                Ok(user) => self.finish(Mech::Plain, user, Vec::new(), now, max_reauth_ms),
                Err(e) => failed(&e),
            },
            Phase::Chosen(Mech::OAuthBearer) => {
                let Some(oauth) = oauth else {
                    return failed(&"OAUTHBEARER is not configured");
                };
                match oauth.authenticate(token, crate::broker::now_ms()) {
                    Ok(v) => {
                        // KIP-368: the session ends with the token, or sooner.
                        let left = (v.expires_ms - crate::broker::now_ms()).max(1) as u64;
                        let lifetime = match max_reauth_ms {
                            0 => left,
                            m => m.min(left),
                        };
                        self.finish(Mech::OAuthBearer, v.user, Vec::new(), now, lifetime)
                    }
                    Err(e) => {
                        self.phase = Phase::OAuthRefused(e.to_string());
                        Step::Continue(oauth::error_challenge())
                    }
                }
            }
            Phase::OAuthRefused(why) => failed(&why),
            Phase::Chosen(Mech::Scram(m)) => {
                match ServerFirst::start(m, token, |u| users.credential(u, m)) {
                    Ok((state, bytes)) => {
                        self.phase = Phase::Scram(Box::new(state));
                        Step::Continue(bytes)
                    }
                    Err(e) => failed(&e),
                }
            }
            Phase::Scram(state) => {
                let m = state.mechanism();
                match state.finish(token) {
                    Ok((user, bytes)) => {
                        self.finish(Mech::Scram(m), user, bytes, now, max_reauth_ms)
                    }
                    Err(e) => failed(&e),
                }
            }
        }
    }

    fn finish(
        &mut self,
        mech: Mech,
        user: String,
        bytes: Vec<u8>,
        now: Instant,
        max_reauth_ms: u64,
    ) -> Step {
        if let Some(s) = &self.session {
            if s.user != user {
                // KIP-368: a connection is one principal for its whole life.
                return Step::Failed {
                    code: ResponseError::SaslAuthenticationFailed.code(),
                    message: "cannot change principals during re-authentication".into(),
                };
            }
        }
        self.raw = false;
        let expires = (max_reauth_ms > 0).then(|| now + Duration::from_millis(max_reauth_ms));
        self.session = Some(Session {
            mech,
            user: user.clone(),
            expires,
        });
        Step::Done {
            bytes,
            user,
            lifetime_ms: max_reauth_ms as i64,
        }
    }
}

/// SASL/PLAIN (RFC 4616): `[authzid] NUL authcid NUL password`, checked against the user's
/// SCRAM credential.
fn plain(token: &[u8], users: &Users) -> Result<String, &'static str> {
    const BAD: &str = "Authentication failed: Invalid username or password";
    let text = std::str::from_utf8(token).map_err(|_| "PLAIN token is not UTF-8")?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed PLAIN token");
    };
    if user.is_empty() || (!authzid.is_empty() && authzid != user) {
        return Err(BAD);
    }
    match users.any_credential(user) {
        Some((m, c)) if c.matches_password(m, password) => Ok(user.to_string()),
        _ => Err(BAD),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{ClientExchange, Credential};
    use crate::auth::users::Change;

    fn users(dir: &std::path::Path) -> Users {
        let u = Users::open(dir).unwrap();
        let mut changes = Vec::new();
        for (name, pw) in [("alice", "apw"), ("bob", "bpw")] {
            for m in Mechanism::ALL {
                changes.push(Change::Upsert {
                    user: name.into(),
                    mech: m,
                    credential: Credential::new(m, pw, 4096).unwrap(),
                });
            }
        }
        u.apply(&changes).unwrap();
        u
    }

    fn scram(s: &mut Sasl, u: &Users, user: &str, pw: &str, now: Instant, reauth: u64) -> Step {
        let m = Mechanism::Sha512;
        assert_eq!(s.handshake(m.name(), false), Ok(()));
        let (c, first) = ClientExchange::new(m, user).unwrap();
        let mut c = c.with_password(pw);
        let Step::Continue(server_first) = s.authenticate(&first, u, None, now, reauth) else {
            panic!("first step");
        };
        let fin = c.final_message(&server_first).unwrap();
        s.authenticate(&fin, u, None, now, reauth)
    }

    #[test]
    fn nothing_but_sasl_is_served_before_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let u = users(dir.path());
        let now = Instant::now();
        let mut s = Sasl::new(Mech::ALL.to_vec());
        assert_eq!(s.gate(ApiKey::ApiVersions, now), Gate::Serve);
        assert!(matches!(s.gate(ApiKey::Metadata, now), Gate::Close(_)));
        assert!(matches!(
            s.authenticate(b"x", &u, None, now, 0),
            Step::Failed { code: 34, .. }
        ));
        assert_eq!(
            s.handshake("GSSAPI", false),
            Err(ResponseError::UnsupportedSaslMechanism)
        );
        assert_eq!(s.handshake("PLAIN", false), Ok(()));
        assert!(matches!(
            s.authenticate(b"\0alice\0wrong", &u, None, now, 0),
            Step::Failed { code: 58, .. }
        ));
        assert!(!s.authenticated(now));
        assert_eq!(s.handshake("PLAIN", false), Ok(()));
        assert!(
            matches!(s.authenticate(b"\0alice\0apw", &u, None, now, 0), Step::Done { ref user, .. } if user == "alice")
        );
        assert_eq!(s.gate(ApiKey::Metadata, now), Gate::Serve);
        assert_eq!(s.user(), Some("alice"));
    }

    #[test]
    fn scram_authenticates_and_reauthentication_keeps_the_principal() {
        let dir = tempfile::tempdir().unwrap();
        let u = users(dir.path());
        let t0 = Instant::now();
        let mut s = Sasl::new(Mech::ALL.to_vec());
        assert!(matches!(
            scram(&mut s, &u, "alice", "bad", t0, 1000),
            Step::Failed { code: 58, .. }
        ));
        let Step::Done { lifetime_ms, .. } = scram(&mut s, &u, "alice", "apw", t0, 1000) else {
            panic!("alice with her password");
        };
        assert_eq!(lifetime_ms, 1000);
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(s.gate(ApiKey::Fetch, t0), Gate::Serve);
        assert!(
            matches!(s.gate(ApiKey::Fetch, later), Gate::Close(_)),
            "expired session"
        );
        // Re-authentication: another mechanism or another user is refused.
        assert_eq!(
            s.handshake("PLAIN", false),
            Err(ResponseError::IllegalSaslState)
        );
        assert!(matches!(
            scram(&mut s, &u, "bob", "bpw", later, 1000),
            Step::Failed { code: 58, .. }
        ));
        assert!(matches!(
            scram(&mut s, &u, "alice", "apw", later, 1000),
            Step::Done { .. }
        ));
        assert_eq!(s.gate(ApiKey::Fetch, later), Gate::Serve);
    }
}
