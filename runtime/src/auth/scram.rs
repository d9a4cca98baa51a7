//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them (KIP-84): the
//! server side of the exchange as a state machine with no I/O, and the credentials it checks.
//!
//! The broker never keeps a password. It keeps, per user and mechanism, what RFC 5802 calls
//! StoredKey and ServerKey with their salt and iteration count: enough to check a proof and
//! to prove itself to the client, not enough to log in as the user.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Kafka's bounds on iterations (ScramMechanism.minIterations / maxIterations).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The number DescribeUserScramCredentials and AlterUserScramCredentials use (KIP-554).
    pub fn code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    /// Bytes of a salted password (the digest's size).
    pub fn salted_len(self) -> usize {
        self.digest().output_len()
    }

    fn mac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), msg)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// RFC 5802's Hi(): PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.salted_len()];
        let n = std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2(), n, salt, password, &mut out);
        out
    }
}

/// What the broker stores for one user and mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl Credential {
    /// From a salted password, as AlterUserScramCredentials carries it (the client salts and
    /// hashes, so the password itself never crosses the wire).
    pub fn from_salted_password(
        mech: Mechanism,
        salted: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Credential {
        let client_key = mech.mac(salted, b"Client Key");
        Credential {
            salt,
            stored_key: mech.hash(&client_key),
            server_key: mech.mac(salted, b"Server Key"),
            iterations,
        }
    }

    /// From a password, with a fresh random salt.
    pub fn new(mech: Mechanism, password: &str, iterations: u32) -> Result<Credential, ScramError> {
        let salt = random_bytes(24)?;
        let salted = mech.salted_password(password.as_bytes(), &salt, iterations);
        Ok(Credential::from_salted_password(
            mech, &salted, salt, iterations,
        ))
    }

    /// Whether `password` is this credential's password: SASL/PLAIN checks against the same
    /// store as SCRAM, so a user has one password whichever mechanism the client picks.
    pub fn matches_password(&self, mech: Mechanism, password: &str) -> bool {
        let salted = mech.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = mech.mac(&salted, b"Client Key");
        bool::from(mech.hash(&client_key).ct_eq(&self.stored_key))
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// Unknown user and wrong password look alike to the client, so neither reveals which
    /// user names exist.
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {0}")]
    InvalidCredentials(&'static str),
    #[error("no randomness available")]
    Random,
}

pub fn random_bytes(n: usize) -> Result<Vec<u8>, ScramError> {
    let mut out = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| ScramError::Random)?;
    Ok(out)
}

/// A SASL name as RFC 5802 writes it: ',' as "=2C" and '=' as "=3D".
fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of attribute `key` (e.g. 'r') among comma-separated `k=v` fields.
fn attr<'a>(fields: &[&'a str], key: char) -> Option<&'a str> {
    fields.iter().find_map(|f| {
        let mut c = f.chars();
        (c.next() == Some(key) && c.next() == Some('=')).then(|| &f[2..])
    })
}

/// The server's side of one exchange, between the client's first and final messages.
#[derive(Debug)]
pub struct ServerFirst {
    mech: Mechanism,
    user: String,
    credential: Option<Credential>,
    nonce: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
}

impl ServerFirst {
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// Reads the client-first message, looks the user up and makes the server-first
    /// message. An unknown user still gets a well-formed answer (with a made-up salt) and
    /// fails at the proof, as a wrong password does.
    pub fn start(
        mech: Mechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<(ServerFirst, Vec<u8>), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = text.splitn(3, ',');
        let cbind = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let fields: Vec<&str> = bare.split(',').collect();
        if fields.first().is_some_and(|f| f.starts_with("m=")) {
            return Err(ScramError::Malformed("mandatory extension not supported"));
        }
        let user = unescape_name(attr(&fields, 'n').ok_or(ScramError::Malformed("no user name"))?)?;
        if !authzid.is_empty() {
            let az = unescape_name(
                authzid
                    .strip_prefix("a=")
                    .ok_or(ScramError::Malformed("bad authzid"))?,
            )?;
            if az != user {
                return Err(ScramError::InvalidCredentials(mech.name()));
            }
        }
        let client_nonce = attr(&fields, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if client_nonce.is_empty() || client_nonce.contains(',') {
            return Err(ScramError::Malformed("bad nonce"));
        }
        let credential = lookup(&user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (random_bytes(24)?, MIN_ITERATIONS),
        };
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(18)?));
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let state = ServerFirst {
            mech,
            user,
            credential,
            nonce,
            gs2_header: format!("{cbind},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
        };
        Ok((state, server_first.into_bytes()))
    }

    /// Checks the client-final message's proof. On success, the authenticated user name and
    /// the server-final message (which proves to the client that we know its key).
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let fail = ScramError::InvalidCredentials(self.mech.name());
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let fields: Vec<&str> = without_proof.split(',').collect();
        let binding = attr(&fields, 'c').ok_or(ScramError::Malformed("no channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        // librdkafka puts its own nonce in front of the combined one it was sent; Kafka
        // accepts any nonce that ends with the combined one, and so must we. The proof
        // covers the message as sent either way.
        if !attr(&fields, 'r').is_some_and(|r| r.ends_with(self.nonce.as_str())) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let Some(cred) = self.credential else {
            return Err(fail);
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = self.mech.mac(&cred.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(fail);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !bool::from(self.mech.hash(&client_key).ct_eq(&cred.stored_key)) {
            return Err(fail);
        }
        let server_signature = self.mech.mac(&cred.server_key, auth_message.as_bytes());
        Ok((
            self.user,
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

/// The client's side, for the CLI and for tests: first message, then the final one from the
/// server's first, then a check of the server's signature.
pub struct ClientExchange {
    mech: Mechanism,
    password: String,
    client_first_bare: String,
    server_signature: Vec<u8>,
}

impl ClientExchange {
    pub fn new(mech: Mechanism, user: &str) -> Result<(ClientExchange, Vec<u8>), ScramError> {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={name},r={}", B64.encode(random_bytes(18)?));
        let first = format!("n,,{bare}");
        Ok((
            ClientExchange {
                mech,
                password: String::new(),
                client_first_bare: bare,
                server_signature: Vec::new(),
            },
            first.into_bytes(),
        ))
    }

    pub fn with_password(mut self, password: &str) -> Self {
        self.password = password.to_string();
        self
    }

    pub fn final_message(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let fields: Vec<&str> = text.split(',').collect();
        let nonce = attr(&fields, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        let ours = attr(&self.client_first_bare.split(',').collect::<Vec<_>>(), 'r')
            .unwrap_or_default()
            .to_string();
        if !nonce.starts_with(&ours) {
            return Err(ScramError::Malformed("server nonce does not extend ours"));
        }
        let salt = B64
            .decode(attr(&fields, 's').ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = attr(&fields, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("bad iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Malformed("iteration count out of range"));
        }
        let m = self.mech;
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.mac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = m.mac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.server_signature = m.mac(&m.mac(&salted, b"Server Key"), auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let v = text
            .strip_prefix("v=")
            .ok_or(ScramError::Malformed("server error or no signature"))?;
        match B64.decode(v) {
            Ok(sig) if sig == self.server_signature => Ok(()),
            _ => Err(ScramError::InvalidCredentials(self.mech.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(
        mech: Mechanism,
        stored: &Credential,
        user: &str,
        password: &str,
    ) -> Result<String, ScramError> {
        let (mut client, first) = ClientExchange::new(mech, user)?;
        client = client.with_password(password);
        let (server, server_first) =
            ServerFirst::start(mech, &first, |u| (u == "alice").then(|| stored.clone()))?;
        let fin = client.final_message(&server_first)?;
        let (who, server_final) = server.finish(&fin)?;
        client.verify_server(&server_final)?;
        Ok(who)
    }

    #[test]
    fn a_right_password_authenticates_and_a_wrong_one_does_not() {
        for mech in Mechanism::ALL {
            let cred = Credential::new(mech, "s3cret", 4096).unwrap();
            assert_eq!(exchange(mech, &cred, "alice", "s3cret").unwrap(), "alice");
            assert_eq!(
                exchange(mech, &cred, "alice", "wrong"),
                Err(ScramError::InvalidCredentials(mech.name()))
            );
            // An unknown user fails exactly like a wrong password.
            assert_eq!(
                exchange(mech, &cred, "mallory", "s3cret"),
                Err(ScramError::InvalidCredentials(mech.name()))
            );
            assert!(cred.matches_password(mech, "s3cret"));
            assert!(!cred.matches_password(mech, "s3cret "));
        }
    }

    /// RFC 7677's SCRAM-SHA-256 example: the server's messages for the published client
    /// messages, nonce, salt and password.
    #[test]
    fn rfc7677_test_vector() {
        let mech = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = mech.salted_password(b"pencil", &salt, 4096);
        let cred = Credential::from_salted_password(mech, &salted, salt, 4096);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_sig = mech.mac(&cred.server_key, auth.as_bytes());
        assert_eq!(
            B64.encode(server_sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let state = ServerFirst {
            mech,
            user: "user".into(),
            credential: Some(cred),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            gs2_header: "n,,".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into(),
        };
        let (user, fin) = state
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn names_are_unescaped_and_bad_messages_refused() {
        assert_eq!(unescape_name("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(unescape_name("a=2").is_err());
        let m = Mechanism::Sha256;
        assert_eq!(
            ServerFirst::start(m, b"p=tls-unique,,n=a,r=x", |_| None).err(),
            Some(ScramError::ChannelBinding)
        );
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,r=x",
            b"n,,n=a",
            b"q,,n=a,r=x",
            b"n,,m=ext,n=a,r=x",
            b"\xff",
        ] {
            assert!(ServerFirst::start(m, bad, |_| None).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_client_messages_never_panic(first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                                                 fin in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let cred = Credential::new(Mechanism::Sha256, "p", 4096).unwrap();
            if let Ok((s, _)) = ServerFirst::start(Mechanism::Sha256, &first, |_| Some(cred.clone())) {
                let _ = s.finish(&fin);
            }
        }
    }
}
