//! SASL/OAUTHBEARER (RFC 7628; Kafka's KIP-255 and KIP-768): the client sends a JSON Web
//! Token, and the broker checks it against keys it was given, with no call to the identity
//! provider on the request path.
//!
//! - Keys come from a JWKS file (RFC 7517, what an identity provider publishes at its
//!   `jwks_uri`; Kafka's `sasl.oauthbearer.jwks.endpoint.url` may name a file too). The file
//!   is read again when it changes, so keys rotate without a restart.
//! - Signatures (RFC 7515/7518): HS256/384/512 (`oct` keys), RS256/384/512 and PS256/384/512
//!   (`RSA`), ES256/384 (`EC`), EdDSA (`OKP`, Ed25519), all verified with ring.
//! - Claims: `exp` is required (the session ends there, KIP-368); `nbf` and `iat` must not be
//!   in the future; `iss` and `aud` are checked when configured; the principal is the
//!   configured claim (`sub` by default), as `User:VALUE`.
//! - Unsecured tokens (`alg: none`, what Kafka's default validator and librdkafka's
//!   `sasl.oauthbearer.config` make, for development) are accepted only when `unsecured` is
//!   set, and then still need `exp` and a principal.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OAuthError {
    #[error("malformed OAUTHBEARER message: {0}")]
    Message(&'static str),
    #[error("malformed token: {0}")]
    Token(String),
    #[error("unsecured tokens (alg none) are not accepted")]
    Unsecured,
    #[error("no key to verify a token signed with {alg}{}", kid.as_ref().map(|k| format!(" by key '{k}'")).unwrap_or_default())]
    NoKey { alg: String, kid: Option<String> },
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not the expected one")]
    Issuer,
    #[error("the token is not meant for this audience")]
    Audience,
    #[error("the token has no '{0}' claim to name its principal")]
    NoPrincipal(String),
    #[error("the token's principal is not the authorization id asked for")]
    AuthzId,
    #[error("cannot read the JWKS file {path}: {why}")]
    Jwks { path: PathBuf, why: String },
}

/// The broker's `[oauthbearer]` settings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// A JWKS file: the keys tokens may be signed with.
    pub jwks_file: Option<PathBuf>,
    /// Kafka's `sasl.oauthbearer.expected.issuer`.
    pub expected_issuer: Option<String>,
    /// Kafka's `sasl.oauthbearer.expected.audience`: one of these must be in `aud`.
    #[serde(default)]
    pub expected_audience: Vec<String>,
    /// Kafka's `sasl.oauthbearer.sub.claim.name` (default `sub`).
    pub sub_claim_name: Option<String>,
    /// Kafka's `sasl.oauthbearer.clock.skew.seconds` (default 30).
    pub clock_skew_seconds: Option<i64>,
    /// Accept unsigned tokens (development only).
    #[serde(default)]
    pub unsecured: bool,
}

/// A token found good.
#[derive(Debug, PartialEq, Eq)]
pub struct Validated {
    /// The principal's name (without `User:`).
    pub user: String,
    /// The token's `exp`, in ms since the epoch.
    pub expires_ms: i64,
}

enum Key {
    Hmac(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { crv: String, point: Vec<u8> },
    Ed25519(Vec<u8>),
}

struct Jwk {
    kid: Option<String>,
    /// The JWK's `alg`, when it pins one.
    alg: Option<String>,
    key: Key,
}

struct Loaded {
    modified: Option<SystemTime>,
    keys: Vec<Jwk>,
}

pub struct OAuth {
    settings: OAuthSettings,
    keys: Mutex<Loaded>,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn b64(s: &str) -> Result<Vec<u8>, OAuthError> {
    // Base64url without padding (RFC 7515 §2); some encoders pad anyway.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| OAuthError::Token(format!("bad base64url: {e}")))
}

fn jwks_error(path: &Path, why: impl std::fmt::Display) -> OAuthError {
    OAuthError::Jwks {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The keys of a JWKS document. Keys of kinds not supported here are skipped (a provider's
/// set may hold some), but a set with none usable is an error.
fn parse_jwks(path: &Path, text: &str) -> Result<Vec<Jwk>, OAuthError> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| jwks_error(path, e))?;
    let list = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| jwks_error(path, "no \"keys\" array"))?;
    let mut keys = Vec::new();
    for k in list {
        let s = |name: &str| k.get(name).and_then(|v| v.as_str());
        let field = |name: &str| -> Result<Vec<u8>, OAuthError> {
            let v = s(name).ok_or_else(|| jwks_error(path, format!("a key lacks \"{name}\"")))?;
            b64(v).map_err(|e| jwks_error(path, e))
        };
        if s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match s("kty") {
            Some("oct") => Key::Hmac(field("k")?),
            Some("RSA") => Key::Rsa {
                n: field("n")?,
                e: field("e")?,
            },
            Some("EC") => {
                let (x, y) = (field("x")?, field("y")?);
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4); // uncompressed
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Key::Ec {
                    crv: s("crv").unwrap_or_default().to_string(),
                    point,
                }
            }
            Some("OKP") if s("crv") == Some("Ed25519") => Key::Ed25519(field("x")?),
            _ => continue,
        };
        keys.push(Jwk {
            kid: s("kid").map(str::to_string),
            alg: s("alg").map(str::to_string),
            key,
        });
    }
    if keys.is_empty() {
        return Err(jwks_error(path, "no signing key this broker can use"));
    }
    Ok(keys)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl OAuth {
    /// Reads the JWKS file now, so a bad one stops the broker from starting.
    pub fn new(settings: OAuthSettings) -> Result<OAuth, OAuthError> {
        let loaded = match &settings.jwks_file {
            Some(path) => Loaded {
                modified: modified(path),
                keys: parse_jwks(
                    path,
                    &std::fs::read_to_string(path).map_err(|e| jwks_error(path, e))?,
                )?,
            },
            None => Loaded {
                modified: None,
                keys: Vec::new(),
            },
        };
        Ok(OAuth {
            settings,
            keys: Mutex::new(loaded),
        })
    }

    /// Reads the JWKS file again if it changed; a broken new file keeps the old keys.
    fn refresh(&self) {
        let Some(path) = &self.settings.jwks_file else {
            return;
        };
        let now = modified(path);
        let mut g = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if now == g.modified {
            return;
        }
        g.modified = now;
        match std::fs::read_to_string(path)
            .map_err(|e| jwks_error(path, e))
            .and_then(|t| parse_jwks(path, &t))
        {
            Ok(keys) => {
                tracing::info!(path = %path.display(), keys = keys.len(), "OAUTHBEARER keys reloaded");
                g.keys = keys;
            }
            Err(e) => {
                tracing::warn!(error = %e, "OAUTHBEARER keys not reloaded; the previous keys stay")
            }
        }
    }

    /// The client's first (and only) message: the token, checked at `now_ms`.
    pub fn authenticate(&self, message: &[u8], now_ms: i64) -> Result<Validated, OAuthError> {
        let (authzid, token) = client_first(message)?;
        let v = self.validate(token, now_ms)?;
        if authzid.is_some_and(|a| a != v.user) {
            return Err(OAuthError::AuthzId);
        }
        Ok(v)
    }

    pub fn validate(&self, token: &str, now_ms: i64) -> Result<Validated, OAuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OAuthError::Token("not three dot-separated parts".into()));
        };
        let header: serde_json::Value = serde_json::from_slice(&b64(h)?)
            .map_err(|e| OAuthError::Token(format!("header: {e}")))?;
        let alg = header
            .get("alg")
            .and_then(|a| a.as_str())
            .ok_or_else(|| OAuthError::Token("header has no alg".into()))?;
        if alg == "none" {
            if !self.settings.unsecured {
                return Err(OAuthError::Unsecured);
            }
            if !sig.is_empty() {
                return Err(OAuthError::Token(
                    "an unsecured token carries a signature".into(),
                ));
            }
        } else {
            let kid = header.get("kid").and_then(|k| k.as_str());
            self.refresh();
            self.verify(alg, kid, &token[..h.len() + 1 + p.len()], &b64(sig)?)?;
        }
        let claims: serde_json::Value = serde_json::from_slice(&b64(p)?)
            .map_err(|e| OAuthError::Token(format!("claims: {e}")))?;
        self.check_claims(&claims, now_ms)
    }

    fn verify(
        &self,
        alg: &str,
        kid: Option<&str>,
        input: &str,
        sig: &[u8],
    ) -> Result<(), OAuthError> {
        let g = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let candidates = g.keys.iter().filter(|k| {
            kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
                && k.alg.as_deref().is_none_or(|a| a == alg)
        });
        let mut tried = false;
        for k in candidates {
            let Some(ok) = verify_with(&k.key, alg, input.as_bytes(), sig) else {
                continue; // this key is of another kind than alg needs
            };
            tried = true;
            if ok {
                return Ok(());
            }
        }
        if tried {
            Err(OAuthError::Signature)
        } else {
            Err(OAuthError::NoKey {
                alg: alg.to_string(),
                kid: kid.map(str::to_string),
            })
        }
    }

    fn check_claims(&self, c: &serde_json::Value, now_ms: i64) -> Result<Validated, OAuthError> {
        let skew_ms = self.settings.clock_skew_seconds.unwrap_or(30).max(0) * 1000;
        // NumericDate: seconds, possibly with a fraction.
        let time = |name: &str| -> Result<Option<i64>, OAuthError> {
            match c.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(|s| Some((s * 1000.0) as i64))
                    .ok_or_else(|| OAuthError::Token(format!("'{name}' is not a number"))),
            }
        };
        let exp = time("exp")?.ok_or_else(|| OAuthError::Token("no 'exp' claim".into()))?;
        if exp + skew_ms <= now_ms {
            return Err(OAuthError::Expired);
        }
        for name in ["nbf", "iat"] {
            if time(name)?.is_some_and(|t| t - skew_ms > now_ms) {
                return Err(OAuthError::NotYetValid);
            }
        }
        if let Some(iss) = &self.settings.expected_issuer {
            if c.get("iss").and_then(|v| v.as_str()) != Some(iss.as_str()) {
                return Err(OAuthError::Issuer);
            }
        }
        if !self.settings.expected_audience.is_empty() {
            let aud: Vec<&str> = match c.get("aud") {
                Some(serde_json::Value::String(s)) => vec![s.as_str()],
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
                _ => Vec::new(),
            };
            if !aud
                .iter()
                .any(|a| self.settings.expected_audience.iter().any(|e| e == a))
            {
                return Err(OAuthError::Audience);
            }
        }
        let claim = self.settings.sub_claim_name.as_deref().unwrap_or("sub");
        let user = c
            .get(claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OAuthError::NoPrincipal(claim.to_string()))?;
        Ok(Validated {
            user: user.to_string(),
            expires_ms: exp,
        })
    }
}

/// Some(verified) when `key` is of the kind `alg` needs, None otherwise.
fn verify_with(key: &Key, alg: &str, input: &[u8], sig: &[u8]) -> Option<bool> {
    use ring::hmac;
    let ok = match (key, alg) {
        (Key::Hmac(secret), "HS256" | "HS384" | "HS512") => {
            let a = match alg {
                "HS256" => hmac::HMAC_SHA256,
                "HS384" => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            hmac::verify(&hmac::Key::new(a, secret), input, sig).is_ok()
        }
        (Key::Rsa { n, e }, _) => {
            let params: &signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return None,
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, input, sig)
                .is_ok()
        }
        (Key::Ec { crv, point }, _) => {
            let a: &signature::EcdsaVerificationAlgorithm = match (alg, crv.as_str()) {
                ("ES256", "P-256") => &signature::ECDSA_P256_SHA256_FIXED,
                ("ES384", "P-384") => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return None,
            };
            UnparsedPublicKey::new(a, point).verify(input, sig).is_ok()
        }
        (Key::Ed25519(x), "EdDSA" | "Ed25519") => UnparsedPublicKey::new(&signature::ED25519, x)
            .verify(input, sig)
            .is_ok(),
        _ => return None,
    };
    Some(ok)
}

/// RFC 7628 §3.1: `gs2-header kvsep *(key=value kvsep) kvsep`, the token in `auth=Bearer T`.
/// Returns the authorization id (if any) and the token.
fn client_first(m: &[u8]) -> Result<(Option<&str>, &str), OAuthError> {
    let m = std::str::from_utf8(m).map_err(|_| OAuthError::Message("not UTF-8"))?;
    let (gs2, rest) = m
        .split_once('\x01')
        .ok_or(OAuthError::Message("no key-value pairs"))?;
    let mut g = gs2.split(',');
    let (Some(flag), Some(authz), Some(""), None) = (g.next(), g.next(), g.next(), g.next()) else {
        return Err(OAuthError::Message("bad GS2 header"));
    };
    if flag != "n" && flag != "y" {
        return Err(OAuthError::Message("channel binding is not supported"));
    }
    let authzid = match authz {
        "" => None,
        a => Some(
            a.strip_prefix("a=")
                .ok_or(OAuthError::Message("bad authorization id"))?,
        ),
    };
    let body = rest
        .strip_suffix("\x01\x01")
        .ok_or(OAuthError::Message("not terminated"))?;
    let mut token = None;
    for kv in body.split('\x01') {
        let (k, v) = kv
            .split_once('=')
            .ok_or(OAuthError::Message("a pair without '='"))?;
        if k == "auth" {
            let (scheme, t) = v
                .split_once(' ')
                .ok_or(OAuthError::Message("auth is not 'Bearer TOKEN'"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(OAuthError::Message("auth scheme is not Bearer"));
            }
            token = Some(t.trim_start_matches(' '));
        }
        // Other keys are SASL extensions (KIP-342); none is required here.
    }
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or(OAuthError::Message("no auth=Bearer token"))?;
    Ok((authzid, token))
}

/// The server's answer to a token it refused (RFC 7628 §3.2.2); the client then sends a
/// lone kvsep and the exchange fails.
pub fn error_challenge() -> Vec<u8> {
    br#"{"status":"invalid_token"}"#.to_vec()
}

#[cfg(test)]
mod tests;
