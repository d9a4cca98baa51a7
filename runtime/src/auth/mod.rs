//! Who is on the other end of a connection: listeners and their security protocols (Kafka's
//! PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), TLS, SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) and the
//! credentials store. Each connection carries a [`Session`]; the protocol layer asks it
//! before serving a request and reads its principal.

pub mod acl;
pub mod oauth;
pub mod sasl;
pub mod scram;
pub mod tls;
pub mod users;

use std::sync::Arc;
use std::time::Instant;

use sasl::{Mech, Sasl};

/// Kafka's `security.protocol` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Security {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl Security {
    pub fn tls(self) -> bool {
        matches!(self, Security::Ssl | Security::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Security::SaslPlaintext | Security::SaslSsl)
    }
}

/// One listener as clients see it: Metadata, FindCoordinator and DescribeCluster answer
/// with the advertised address of the listener the request came in on, as Kafka does, so a
/// client that bootstrapped over TLS stays on TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub security: Security,
    pub advertised_host: String,
    pub advertised_port: i32,
}

impl Listener {
    pub fn plaintext(host: &str, port: i32) -> Listener {
        Listener {
            name: "PLAINTEXT".into(),
            security: Security::Plaintext,
            advertised_host: host.into(),
            advertised_port: port,
        }
    }
}

/// The broker-wide authentication settings.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Kafka's `sasl.enabled.mechanisms`.
    pub sasl_mechanisms: Vec<Mech>,
    /// Kafka's `connections.max.reauth.ms` (KIP-368): 0 lets a SASL session last as long as
    /// its connection.
    pub max_reauth_ms: u64,
    /// Kafka's `super.users`: principals (`User:NAME`) allowed everything, such as managing
    /// SCRAM credentials.
    pub super_users: Vec<String>,
    /// Whether ACLs are enforced, and what happens on a resource without any.
    pub acl: acl::AclConfig,
    /// OAUTHBEARER's token validation, when configured.
    pub oauth: Option<Arc<oauth::OAuth>>,
    /// Topics whose records command the broker (the plugin host's deployments topic: a
    /// manifest names the principal its pipeline acts as). With ACLs on, writing them takes
    /// ALTER on the cluster besides WRITE on the topic, so only operators deploy, as only
    /// they may grant ACLs.
    pub operator_topics: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            sasl_mechanisms: Mech::ALL.to_vec(),
            max_reauth_ms: 0,
            super_users: Vec::new(),
            acl: Default::default(),
            oauth: None,
            operator_topics: Vec::new(),
        }
    }
}

/// The principal of a connection that did not authenticate (Kafka's `User:ANONYMOUS`).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// One connection's identity.
#[derive(Debug)]
pub struct Session {
    /// The client's address, as DescribeGroups reports it.
    pub peer: String,
    pub listener: Arc<Listener>,
    /// The verified client certificate's subject, on SSL listeners with client auth.
    pub tls_subject: Option<String>,
    /// Present on SASL listeners.
    pub sasl: Option<Sasl>,
    /// Set by a handler whose answer must be the connection's last (a failed SASL
    /// authentication).
    pub close_after_response: bool,
    /// How long the answer waits before it is sent: a failed authentication's, as Kafka's
    /// `connection.failed.authentication.delay.ms`, so guessing passwords one connection at
    /// a time is slow.
    pub delay_response: std::time::Duration,
    /// A quota's throttle: the connection reads nothing more for this long after the
    /// response (KIP-219).
    pub mute: std::time::Duration,
    /// Room a handler took in the broker's memory pool for its response (a fetch's), given
    /// back once the response is written.
    pub response_memory: crate::limits::memory::Held,
    /// The connection can send a fetch's records from their segment files (a plaintext TCP
    /// socket; see `protocol/pieces.rs`).
    pub zero_copy: bool,
}

impl Session {
    pub fn new(peer: String, listener: Arc<Listener>, mechanisms: &[Mech]) -> Session {
        let sasl = listener
            .security
            .sasl()
            .then(|| Sasl::new(mechanisms.to_vec()));
        Session {
            peer,
            listener,
            tls_subject: None,
            sasl,
            close_after_response: false,
            delay_response: std::time::Duration::ZERO,
            mute: std::time::Duration::ZERO,
            response_memory: Default::default(),
            zero_copy: false,
        }
    }

    /// A plaintext session, for tests and the fuzz targets.
    pub fn plaintext(peer: &str) -> Session {
        Session::new(
            peer.into(),
            Arc::new(Listener::plaintext("127.0.0.1", 9092)),
            &[],
        )
    }

    /// `User:NAME` for SASL, `User:<subject>` for a client certificate, else anonymous.
    pub fn principal(&self) -> String {
        match (self.sasl.as_ref().and_then(|s| s.user()), &self.tls_subject) {
            (Some(u), _) => format!("User:{u}"),
            (None, Some(subject)) => format!("User:{subject}"),
            (None, None) => ANONYMOUS.to_string(),
        }
    }

    /// The user name quotas are kept for (`ANONYMOUS` without authentication).
    pub fn quota_user(&self) -> String {
        let p = self.principal();
        p.strip_prefix("User:").unwrap_or(&p).to_string()
    }

    /// Whether the connection has what it needs to send anything beyond the SASL exchange.
    pub fn authenticated(&self, now: Instant) -> bool {
        self.sasl.as_ref().is_none_or(|s| s.authenticated(now))
    }
}
