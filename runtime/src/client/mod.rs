//! A small Kafka client: enough for the `sluice` CLI (admin, produce, consume) against sluice
//! or any Kafka broker. One connection, requests answered in order.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response we accept from a broker.
const MAX_RESPONSE: usize = 256 << 20;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("connection to the broker failed")]
    Io(#[from] std::io::Error),
    #[error("the broker does not support {api:?} v{version}")]
    Unsupported { api: ApiKey, version: i16 },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
}

async fn tls_connect(
    addr: &str,
    tcp: TcpStream,
    opts: &TlsOptions,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let err = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
    let Some(ca) = &opts.ca_file else {
        return Err(ClientError::Tls(
            "no CA to check the broker's certificate against: pass --ca-file".into(),
        ));
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).map_err(|e| err(&format!("{}: {e}", ca.display())))?
    {
        roots.add(c.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(&e))?
    .with_root_certificates(roots);
    let config = match &opts.cert_and_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| err(&format!("{}: {e}", cert.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(&e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| err(&format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err(&e))?
        }
    };
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(addr);
    let name = ServerName::try_from(host.to_string()).map_err(|e| err(&e))?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| err(&e))
}

/// Any byte stream to a broker: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to reach a secured listener (librdkafka's `security.protocol`, `ssl.ca.location`,
/// `ssl.certificate.location`, `ssl.key.location`, `sasl.mechanism`, `sasl.username`,
/// `sasl.password`).
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub tls: Option<TlsOptions>,
    pub sasl: Option<SaslLogin>,
}

#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// The CA the broker's certificate chains to.
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and key, for listeners that ask for one.
    pub cert_and_key: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

#[derive(Clone, Debug)]
pub struct SaslLogin {
    pub mechanism: crate::auth::sasl::Mech,
    pub username: String,
    pub password: String,
}

pub struct Client {
    stream: Box<dyn Stream>,
    next_correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
    pub addr: String,
}

impl Client {
    /// Connects and learns the broker's API versions.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_secured(addr, &Security::default()).await
    }

    /// Connects over TLS and authenticates with SASL as `security` says.
    /// `addr` may be a bootstrap list (`host:port,host:port`): the first that answers is used.
    pub async fn connect_secured(addr: &str, security: &Security) -> Result<Client, ClientError> {
        let mut last = None;
        for one in addr.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match Client::connect_one(one, security).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: addr.to_string(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address given"),
        }))
    }

    async fn connect_one(addr: &str, security: &Security) -> Result<Client, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                error: source,
            })?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &security.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(tls_connect(addr, tcp, tls).await?),
        };
        let mut c = Client {
            stream,
            next_correlation: 1,
            versions: HashMap::new(),
            addr: addr.to_string(),
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-cli"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp = c.call_unchecked(&req, 3).await?;
        if resp.error_code != 0 {
            return Err(ClientError::Protocol(format!(
                "ApiVersions failed with error code {}",
                resp.error_code
            )));
        }
        c.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(login) = &security.sasl {
            c.login(login).await?;
        }
        Ok(c)
    }

    /// SaslHandshake v1, then the mechanism's exchange in SaslAuthenticate requests.
    async fn login(&mut self, login: &SaslLogin) -> Result<(), ClientError> {
        use crate::auth::sasl::Mech;
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let failed = |code: i16, msg: Option<&StrBytes>| {
            ClientError::Auth(crate::cli::kafka_error(code, msg.map(|m| m.as_str())))
        };
        let hs = self
            .call(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(login.mechanism.name())),
                1,
            )
            .await?;
        if hs.error_code != 0 {
            return Err(failed(hs.error_code, None));
        }
        let v = self
            .version(ApiKey::SaslAuthenticate, 2)
            .ok_or(ClientError::Unsupported {
                api: ApiKey::SaslAuthenticate,
                version: 0,
            })?;
        let mut step = async |bytes: Vec<u8>| {
            let r = self
                .call(
                    &SaslAuthenticateRequest::default().with_auth_bytes(bytes.into()),
                    v,
                )
                .await?;
            if r.error_code != 0 {
                return Err(failed(r.error_code, r.error_message.as_ref()));
            }
            Ok::<_, ClientError>(r.auth_bytes.to_vec())
        };
        let scram_err = |e: crate::auth::scram::ScramError| ClientError::Auth(e.to_string());
        match login.mechanism {
            Mech::Plain => {
                let token = format!("\0{}\0{}", login.username, login.password);
                step(token.into_bytes()).await?;
            }
            Mech::Scram(m) => {
                let (c, first) = crate::auth::scram::ClientExchange::new(m, &login.username)
                    .map_err(scram_err)?;
                let mut c = c.with_password(&login.password);
                let server_first = step(first).await?;
                let fin = c.final_message(&server_first).map_err(scram_err)?;
                let server_final = step(fin).await?;
                c.verify_server(&server_final).map_err(scram_err)?;
            }
            Mech::OAuthBearer => {
                // The password is the token (RFC 7628). A refused token gets an error
                // challenge; the lone kvsep answering it brings the broker's reason.
                let first = format!("n,,\x01auth=Bearer {}\x01\x01", login.password);
                let challenge = step(first.into_bytes()).await?;
                if !challenge.is_empty() {
                    step(b"\x01".to_vec()).await?;
                    return Err(ClientError::Auth(format!(
                        "token refused: {}",
                        String::from_utf8_lossy(&challenge)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Sends `req` at `version`, if the broker supports it, and waits for its response.
    pub async fn call<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let api = ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::Protocol(format!("unknown api key {}", R::KEY)))?;
        match self.versions.get(&R::KEY) {
            Some(&(lo, hi)) if (lo..=hi).contains(&version) => {}
            _ => return Err(ClientError::Unsupported { api, version }),
        }
        self.call_unchecked(req, version).await
    }

    /// The highest version of `api` both sides speak, capped at `ours`.
    pub fn version(&self, api: ApiKey, ours: i16) -> Option<i16> {
        let &(lo, hi) = self.versions.get(&(api as i16))?;
        let v = hi.min(ours);
        (v >= lo).then_some(v)
    }

    /// Sends a request that gets no response (a produce with `acks=0`).
    pub async fn send_only<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        self.write_request(req, version).await.map(|_| ())
    }

    async fn write_request<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<i32, ClientError> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let buf = encode_request(req, version, correlation, "sluice-cli")?;
        self.stream.write_all(&buf).await?;
        self.stream.flush().await?;
        Ok(correlation)
    }

    async fn call_unchecked<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let api = ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::Protocol(format!("unknown api key {}", R::KEY)))?;
        let correlation = self.write_request(req, version).await?;
        let enc = |e: anyhow::Error| ClientError::Protocol(format!("{e:#}"));
        let len = self.stream.read_i32().await?;
        if len < 4 || len as usize > MAX_RESPONSE {
            return Err(ClientError::Protocol(format!("bad response length {len}")));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        let hv = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let h = ResponseHeader::decode(&mut body, hv).map_err(enc)?;
        if h.correlation_id != correlation {
            return Err(ClientError::Protocol(format!(
                "response correlation id {} for request {}",
                h.correlation_id, correlation
            )));
        }
        let resp = R::Response::decode(&mut body, version).map_err(enc)?;
        if body.has_remaining() {
            tracing::debug!(?api, extra = body.remaining(), "trailing bytes in response");
        }
        Ok(resp)
    }
}

/// One request as it goes on the wire: length prefix, header, body.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation: i32,
    client_id: &'static str,
) -> Result<BytesMut, ClientError> {
    let api = ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Protocol(format!("unknown api key {}", R::KEY)))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let enc = |e: anyhow::Error| ClientError::Protocol(format!("{e:#}"));
    header
        .encode(&mut buf, api.request_header_version(version))
        .map_err(enc)?;
    req.encode(&mut buf, version).map_err(enc)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), used by its default partitioner.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's own UtilsTest.testMurmur2.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(
                murmur2(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
