//! TLS on a listener: rustls negotiates the session, and this module carries the records.
//!
//! rustls' own stream copies every byte a client sends three times before the request sees
//! it (into its deframer buffer, the decrypted record into a fresh `Vec`, that into the
//! reader's buffer), and on a TLS produce those copies and the small reads between them were
//! most of what TLS cost the broker beyond AES itself. So the handshake runs on rustls'
//! unbuffered API, and once it is done the connection is handed over as rustls hands it to
//! kTLS (`rustls::kernel`; this kernel has no kTLS): the traffic keys and a
//! [`KernelConnection`] that computes the next keys on a KeyUpdate. Records are then read
//! into one buffer, each decrypted with ring where it lies and moved down over the record
//! headers in the same pass, and copied once, into the request; responses are sealed in
//! place in the buffer they are written to.
//!
//! What rustls would otherwise enforce after the handshake is enforced here: records no
//! longer than the version allows, the sequence numbers, TLS 1.3's inner content type and
//! padding, alerts (close_notify ends the stream; TLS 1.2 warnings and user_canceled pass, a
//! few in a row; any other ends the connection),
//! KeyUpdate (answered with ours when the peer asks), no renegotiation, and fresh keys
//! before AES-GCM's confidentiality limit. A connection ends as RFC 8446 §6 asks: with
//! close_notify, or with the fatal alert that names what the peer got wrong
//! (bad_record_mac, record_overflow, unexpected_message, ...).

use std::io;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use ring::aead;
use rustls::kernel::KernelConnection;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, ServerConfig};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A record's header: content type, legacy version, length.
const HEADER: usize = 5;
/// The AEAD tag closing every record (AES-GCM and ChaCha20-Poly1305 alike).
const TAG: usize = 16;
/// TLS 1.2 AES-GCM's explicit nonce, leading each record's payload.
const EXPLICIT_NONCE: usize = 8;
/// Most plaintext a record carries (2^14).
const MAX_PLAIN: usize = 16 * 1024;
/// Most ciphertext a record may carry: plaintext plus 2048 in TLS 1.2, 256 in TLS 1.3.
const MAX_CIPHER_12: usize = MAX_PLAIN + 2048;
const MAX_CIPHER_13: usize = MAX_PLAIN + 256;
/// The read buffer: a few records per read, always room for the largest record after
/// compaction. An idle connection keeps `READ_MIN` (what the buffered reader under rustls
/// took before); one whose reads fill the buffer (a producer streaming) reads `READ_MAX` at
/// a time, a quarter of the syscalls, wake-ups and ACKs per byte (broker CPU per GB of TLS
/// produce 0.78/0.78/0.65 to 0.62/0.62/0.61 with it, runtime/benches/ab_bench.sh), until its
/// reads come back small.
const READ_MIN: usize = 64 * 1024;
const READ_MAX: usize = 256 * 1024;
/// A caller with this much room takes the records into its own buffer, where they are
/// opened, rather than their plaintext copied out of the reader's (the request reader asks
/// for at least 64 KiB while a produce request streams in).
const DIRECT_MIN: usize = 32 * 1024;
/// Sealed bytes a writer holds before it makes the caller wait for the socket.
const WRITE_MAX: usize = 64 * 1024;
/// A writer's buffer is given back after a flush when larger than this, so an idle
/// connection does not keep its largest response's worth (as rustls' own buffers did not).
const WRITE_KEEP: usize = 16 * 1024;
/// Handshake bytes buffered at most: rustls' own limit for a handshake message (64 KiB, a
/// long client certificate chain) and the record headers around it.
const HANDSHAKE_MAX: usize = 80 * 1024;
/// TLS 1.3 records sealed under one key before the writer moves to the next: well inside
/// AES-GCM's confidentiality limit (RFC 8446 §5.5: 2^24.5 records).
const RECORDS_PER_KEY: u64 = 1 << 23;
/// TLS 1.2 has no key update: past this many records under AES-GCM the connection ends, as
/// rustls ends it (its `confidentiality_limit` for those suites), and the client reconnects.
const TLS12_GCM_RECORDS: u64 = 1 << 24;
/// What a peer may send between two records of application data: empty records, KeyUpdates
/// (each costs a key derivation) and warning alerts, rustls' own limits.
const MAX_EMPTY_RECORDS: u8 = 32;
const MAX_KEY_UPDATES: u8 = 32;
const MAX_WARNINGS: u8 = 4;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
const KEY_UPDATE: u8 = 24;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
/// Alert levels, and the fatal alerts a reader's failure is answered with (RFC 8446 §6.2,
/// RFC 5246 §7.2.2).
const WARNING: u8 = 1;
const FATAL: u8 = 2;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const ILLEGAL_PARAMETER: u8 = 47;
const DECODE_ERROR: u8 = 50;
const INTERNAL_ERROR: u8 = 80;
/// In `Shared::alert`: no failure, so the connection ends with close_notify; or nothing is
/// to be sent (the peer ended it with an alert of its own, or the socket failed).
const END_WITH_CLOSE_NOTIFY: u8 = 0;
const END_SILENTLY: u8 = 255;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("the client closed the connection during the handshake")]
    Closed,
    #[error("{0}")]
    Refused(&'static str),
}

/// A connection whose handshake is done: its two directions, and the certificate the
/// client presented (already verified, if the listener asks for one).
pub struct Accepted {
    pub reader: TlsReader,
    pub writer: TlsWriter,
    pub peer_certificate: Option<CertificateDer<'static>>,
}

/// Runs the server side of a handshake on `sock` and hands the connection over.
pub async fn accept(
    config: Arc<ServerConfig>,
    mut sock: TcpStream,
) -> Result<Accepted, HandshakeError> {
    let mut conn = UnbufferedServerConnection::new(config)?;
    let mut incoming = vec![0u8; 16 * 1024];
    let mut used = 0;
    let mut outgoing = vec![0u8; 16 * 1024];
    let mut out_used = 0;
    // Bytes offered to rustls: whole records, one more each time it has taken them all, so
    // it never sees the record after the client's Finished. Records after the handshake are
    // ours: a KeyUpdate sent with the Finished, taken by rustls, would switch the keys it
    // hands over, and its answer would never be sent.
    let mut fed = 0;
    loop {
        let status = conn.process_tls_records(&mut incoming[..fed]);
        let discard = status.discard;
        let state = match status.state {
            Ok(s) => s,
            Err(e) => {
                // The alert rustls queued for the client says why (a missing certificate,
                // no common cipher suite): best effort, the connection is over anyway.
                let _ = send_alerts(&mut conn, &mut sock).await;
                return Err(e.into());
            }
        };
        let (mut read_more, mut done) = (false, false);
        match state {
            ConnectionState::ReadTraffic(_) => {
                return Err(HandshakeError::Refused(
                    "application data inside the handshake",
                ))
            }
            ConnectionState::EncodeTlsData(mut e) => loop {
                match e.encode(&mut outgoing[out_used..]) {
                    Ok(n) => {
                        out_used += n;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        outgoing.resize(out_used + required_size, 0)
                    }
                    Err(_) => {
                        return Err(HandshakeError::Refused("cannot encode a handshake record"))
                    }
                }
            },
            ConnectionState::TransmitTlsData(t) => {
                sock.write_all(&outgoing[..out_used]).await?;
                out_used = 0;
                t.done();
            }
            ConnectionState::BlockedHandshake => read_more = true,
            ConnectionState::WriteTraffic(_) => done = true,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(HandshakeError::Closed)
            }
            _ => return Err(HandshakeError::Refused("unexpected handshake state")),
        }
        incoming.copy_within(discard..used, 0);
        used -= discard;
        fed -= discard;
        if done {
            // Only with half-RTT data, which the listener's settings leave off.
            if conn.is_handshaking() {
                return Err(HandshakeError::Refused(
                    "traffic before the handshake ended",
                ));
            }
            break;
        }
        if read_more {
            // rustls has taken every whole record offered: offer the next, if it is here.
            if used - fed >= HEADER {
                let len = record_len(&incoming[fed..]);
                if len > MAX_CIPHER_12 {
                    // rustls refuses it, with the alert.
                    fed = used;
                    continue;
                }
                if used - fed >= HEADER + len {
                    fed += HEADER + len;
                    continue;
                }
            }
            if used == incoming.len() {
                if incoming.len() >= HANDSHAKE_MAX {
                    return Err(HandshakeError::Refused("handshake message too large"));
                }
                incoming.resize((incoming.len() * 2).min(HANDSHAKE_MAX), 0);
            }
            let n = sock.read(&mut incoming[used..]).await?;
            if n == 0 {
                return Err(HandshakeError::Closed);
            }
            used += n;
        }
    }
    if out_used > 0 {
        sock.write_all(&outgoing[..out_used]).await?;
    }
    let peer_certificate = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => Version::Tls13,
        Some(ProtocolVersion::TLSv1_2) => Version::Tls12,
        _ => {
            return Err(HandshakeError::Refused(
                "TLS version other than 1.2 and 1.3",
            ))
        }
    };
    let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
    let rx = Cipher::new(version, secrets.rx)?;
    let tx = Cipher::new(version, secrets.tx)?;
    let shared = Arc::new(Shared {
        kernel: Some(Mutex::new(kernel)),
        key_update_asked: AtomicBool::new(false),
        alert: AtomicU8::new(END_WITH_CLOSE_NOTIFY),
    });
    let (rd, wr) = sock.into_split();
    // The handshake's buffer becomes the reader's, with whatever followed the handshake in
    // it: records not yet decrypted.
    incoming.resize(READ_MIN.max(used), 0);
    Ok(Accepted {
        reader: TlsReader::new(rd, rx, shared.clone(), incoming, used),
        writer: TlsWriter {
            sock: wr,
            tx,
            shared,
            out: Vec::new(),
            written: 0,
            closing: false,
            failed: false,
        },
        peer_certificate,
    })
}

/// Writes whatever alerts rustls queued after a failed handshake.
async fn send_alerts(
    conn: &mut UnbufferedServerConnection,
    sock: &mut TcpStream,
) -> io::Result<()> {
    let mut out = vec![0u8; 512];
    let mut used = 0;
    for _ in 0..4 {
        let status = conn.process_tls_records(&mut []);
        match status.state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => match e.encode(&mut out[used..]) {
                Ok(n) => used += n,
                Err(_) => break,
            },
            _ => break,
        }
    }
    if used > 0 {
        sock.write_all(&out[..used]).await?;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Tls12,
    Tls13,
}

/// What both directions of one connection share: the key schedule, and whether the peer
/// asked for our next key with its KeyUpdate.
struct Shared {
    /// None only for the fuzz target's reader, which has no handshake behind it.
    kernel: Option<Mutex<KernelConnection<ServerConnectionData>>>,
    key_update_asked: AtomicBool,
    /// How the writer ends the connection: the fatal alert the reader's failure calls for,
    /// or `END_WITH_CLOSE_NOTIFY`, or `END_SILENTLY`.
    alert: AtomicU8,
}

impl Shared {
    /// The next key for one direction (TLS 1.3).
    fn next_key(&self, rx: bool) -> io::Result<(u64, ConnectionTrafficSecrets)> {
        let kernel = self.kernel.as_ref().ok_or_else(|| bad("no key schedule"))?;
        let mut kernel = kernel.lock().unwrap_or_else(|p| p.into_inner());
        if rx {
            kernel.update_rx_secret()
        } else {
            kernel.update_tx_secret()
        }
        .map_err(|e| bad(format!("KeyUpdate: {e}")))
    }
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// A peer's fault, and the alert that tells it which.
#[derive(Debug, Error)]
#[error("{why}")]
struct Fatal {
    alert: u8,
    why: String,
}

fn fatal(alert: u8, why: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        Fatal {
            alert,
            why: why.into(),
        },
    )
}

/// The alert that answers a reader's error: the one it names; internal_error for other
/// broken data; none for the socket's own errors or the peer's alert (it has gone).
fn alert_for(e: &io::Error) -> u8 {
    match e.get_ref().and_then(|i| i.downcast_ref::<Fatal>()) {
        Some(f) => f.alert,
        None if e.kind() == io::ErrorKind::InvalidData => INTERNAL_ERROR,
        None => END_SILENTLY,
    }
}

/// One direction's key, its nonce base and the sequence number of its next record.
struct Cipher {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    version: Version,
    /// TLS 1.2 AES-GCM: an explicit nonce leads each record.
    explicit: bool,
}

impl Cipher {
    fn new(
        version: Version,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> io::Result<Cipher> {
        let (alg, key, iv, gcm) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv, true),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv, true),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv, false)
            }
            _ => return Err(bad("a cipher suite this listener cannot carry")),
        };
        let iv = iv.as_ref().try_into().map_err(|_| bad("bad traffic IV"))?;
        Cipher::from_parts(alg, key.as_ref(), iv, seq, version, gcm)
    }

    fn from_parts(
        alg: &'static aead::Algorithm,
        key: &[u8],
        iv: [u8; aead::NONCE_LEN],
        seq: u64,
        version: Version,
        gcm: bool,
    ) -> io::Result<Cipher> {
        let key = aead::UnboundKey::new(alg, key).map_err(|_| bad("bad traffic key"))?;
        Ok(Cipher {
            key: aead::LessSafeKey::new(key),
            iv,
            seq,
            version,
            explicit: gcm && version == Version::Tls12,
        })
    }

    /// The IV with the sequence number mixed into its last eight bytes (TLS 1.3, ChaCha in
    /// TLS 1.2, and rustls' choice of explicit nonce for TLS 1.2 AES-GCM).
    fn nonce(&self) -> [u8; aead::NONCE_LEN] {
        let mut n = self.iv;
        for (a, b) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *a ^= b;
        }
        n
    }

    fn advance(&mut self) -> io::Result<()> {
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| bad("TLS sequence numbers exhausted"))?;
        Ok(())
    }

    /// TLS 1.2's additional data: sequence number, content type, version, plaintext length.
    fn aad12(&self, typ: u8, version: [u8; 2], plain_len: usize) -> aead::Aad<[u8; 13]> {
        let mut aad = [0u8; 13];
        aad[..8].copy_from_slice(&self.seq.to_be_bytes());
        aad[8] = typ;
        aad[9..11].copy_from_slice(&version);
        aad[11..].copy_from_slice(&(plain_len as u16).to_be_bytes());
        aead::Aad::from(aad)
    }

    /// Decrypts the record whose header is at `buf[rec..]` and whose payload ends at `end`,
    /// writing its plaintext at `buf[dst..]` (`dst <= rec`, so it moves down over the
    /// headers in the same pass). The record's content type and plaintext length.
    fn open(
        &mut self,
        buf: &mut [u8],
        dst: usize,
        rec: usize,
        end: usize,
    ) -> io::Result<(u8, usize)> {
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&buf[rec..rec + HEADER]);
        let body = rec + HEADER;
        let len = end - body;
        match self.version {
            Version::Tls13 => {
                if header[0] != APPLICATION_DATA {
                    return Err(fatal(
                        UNEXPECTED_MESSAGE,
                        format!(
                            "TLS 1.3 record of outer type {} after the handshake",
                            header[0]
                        ),
                    ));
                }
                if len > MAX_CIPHER_13 {
                    return Err(fatal(
                        RECORD_OVERFLOW,
                        format!("TLS 1.3 record of {len} bytes"),
                    ));
                }
                if len <= TAG {
                    return Err(fatal(
                        BAD_RECORD_MAC,
                        format!("TLS 1.3 record of {len} bytes"),
                    ));
                }
                let nonce = aead::Nonce::assume_unique_for_key(self.nonce());
                let plain = self
                    .key
                    .open_within(
                        nonce,
                        aead::Aad::from(header),
                        &mut buf[dst..end],
                        body - dst..,
                    )
                    .map_err(|_| fatal(BAD_RECORD_MAC, "TLS record failed authentication"))?;
                if plain.len() > MAX_PLAIN + 1 {
                    return Err(fatal(
                        RECORD_OVERFLOW,
                        "TLS 1.3 record over 2^14 + 1 bytes of plaintext",
                    ));
                }
                // TLSInnerPlaintext: content, its type, then zeros.
                let typed = plain.iter().rposition(|&b| b != 0).ok_or_else(|| {
                    fatal(UNEXPECTED_MESSAGE, "TLS 1.3 record without a content type")
                })?;
                let typ = plain[typed];
                self.advance()?;
                Ok((typ, typed))
            }
            Version::Tls12 => {
                let (nonce, cipher_at) = if self.explicit {
                    if len < EXPLICIT_NONCE + TAG {
                        return Err(fatal(
                            BAD_RECORD_MAC,
                            format!("TLS 1.2 record of {len} bytes"),
                        ));
                    }
                    let mut n = [0u8; aead::NONCE_LEN];
                    n[..4].copy_from_slice(&self.iv[..4]);
                    n[4..].copy_from_slice(&buf[body..body + EXPLICIT_NONCE]);
                    (n, body + EXPLICIT_NONCE)
                } else {
                    if len < TAG {
                        return Err(fatal(
                            BAD_RECORD_MAC,
                            format!("TLS 1.2 record of {len} bytes"),
                        ));
                    }
                    (self.nonce(), body)
                };
                let plain_len = end - cipher_at - TAG;
                if len > MAX_CIPHER_12 || plain_len > MAX_PLAIN {
                    return Err(fatal(
                        RECORD_OVERFLOW,
                        format!("TLS 1.2 record of {len} bytes"),
                    ));
                }
                let aad = self.aad12(header[0], [header[1], header[2]], plain_len);
                self.key
                    .open_within(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aad,
                        &mut buf[dst..end],
                        cipher_at - dst..,
                    )
                    .map_err(|_| fatal(BAD_RECORD_MAC, "TLS record failed authentication"))?;
                self.advance()?;
                Ok((header[0], plain_len))
            }
        }
    }

    /// The bytes in front of a record's plaintext: header, and TLS 1.2 AES-GCM's nonce.
    fn prefix(&self) -> usize {
        if self.explicit {
            HEADER + EXPLICIT_NONCE
        } else {
            HEADER
        }
    }

    /// Seals the record that starts at `out[start..]`: `prefix()` bytes reserved, then its
    /// plaintext up to the end of `out`. Fills in the header, encrypts in place, appends the
    /// tag (and, in TLS 1.3, the real content type before it).
    fn seal(&mut self, out: &mut Vec<u8>, start: usize, typ: u8) -> io::Result<()> {
        // Never a nonce twice: the last sequence number is not used.
        if self.seq == u64::MAX {
            out.truncate(start);
            return Err(bad("TLS sequence numbers exhausted"));
        }
        let body = start + HEADER;
        let outer = match self.version {
            Version::Tls13 => {
                out.push(typ);
                let len = out.len() - body + TAG;
                let header = header(APPLICATION_DATA, len);
                out[start..body].copy_from_slice(&header);
                let nonce = aead::Nonce::assume_unique_for_key(self.nonce());
                self.key.seal_in_place_separate_tag(
                    nonce,
                    aead::Aad::from(header),
                    &mut out[body..],
                )
            }
            Version::Tls12 => {
                let nonce = self.nonce();
                let plain_at = start + self.prefix();
                let plain_len = out.len() - plain_at;
                let len = out.len() - body + TAG;
                out[start..body].copy_from_slice(&header(typ, len));
                if self.explicit {
                    out[body..plain_at].copy_from_slice(&nonce[4..]);
                }
                let aad = self.aad12(typ, [3, 3], plain_len);
                self.key.seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aad,
                    &mut out[plain_at..],
                )
            }
        }
        .map_err(|_| bad("TLS record could not be sealed"));
        match outer {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            Err(e) => {
                // Whatever was put there is plaintext: it must not go out.
                out.truncate(start);
                return Err(e);
            }
        }
        self.advance()
    }
}

/// The length a record's header (at least `HEADER` bytes) gives its payload.
fn record_len(header: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([header[3], header[4]]))
}

fn header(typ: u8, len: usize) -> [u8; HEADER] {
    let [hi, lo] = (len as u16).to_be_bytes();
    [typ, 3, 3, hi, lo]
}

/// The reading half: records in, plaintext out.
pub struct TlsReader<R = OwnedReadHalf> {
    sock: R,
    rx: Cipher,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    /// Decrypted bytes not yet read: `buf[plain.0..plain.1]`.
    plain: (usize, usize),
    /// Received bytes not yet decrypted: `buf[raw.0..raw.1]`, after `plain`.
    raw: (usize, usize),
    /// The peer sent close_notify: the stream has ended.
    closed: bool,
    /// Bytes the last socket read gave.
    last_read: usize,
    /// Empty records, KeyUpdates and warning alerts since the last record of data.
    since_data: [u8; 3],
    /// An error was returned: the stream gives nothing more (its buffer may hold a record
    /// that failed to open).
    failed: bool,
}

impl<R> TlsReader<R> {
    /// A reader whose `buf` holds `raw` received bytes not yet decrypted.
    fn new(sock: R, rx: Cipher, shared: Arc<Shared>, buf: Vec<u8>, raw: usize) -> Self {
        TlsReader {
            sock,
            rx,
            shared,
            buf,
            plain: (0, 0),
            raw: (0, raw),
            closed: false,
            last_read: 0,
            since_data: [0; 3],
            failed: false,
        }
    }

    /// Decrypts every whole record received, into `plain`.
    fn decrypt(&mut self) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let opened = self.open_records(&mut buf, self.raw.0, self.raw.1);
        self.buf = buf;
        let (plain_end, raw_at) = opened?;
        self.plain = (self.raw.0, plain_end);
        self.raw.0 = raw_at;
        Ok(())
    }

    /// Opens every whole record in `buf[at..end]`, moving the plaintext of each down to
    /// follow the last's from `at` on (in the reader's buffer or in the caller's). Where
    /// the plaintext ends, and where the first record not yet whole begins.
    fn open_records(
        &mut self,
        buf: &mut [u8],
        mut at: usize,
        end: usize,
    ) -> io::Result<(usize, usize)> {
        let mut dst = at;
        while !self.closed {
            if end - at < HEADER {
                break;
            }
            let len = record_len(&buf[at..]);
            if len > MAX_CIPHER_12 {
                return Err(fatal(RECORD_OVERFLOW, format!("TLS record of {len} bytes")));
            }
            if end - at < HEADER + len {
                break;
            }
            let (typ, n) = self.rx.open(buf, dst, at, at + HEADER + len)?;
            at += HEADER + len;
            match typ {
                APPLICATION_DATA if n > 0 => {
                    dst += n;
                    self.since_data = [0; 3];
                }
                APPLICATION_DATA => self.count(0, MAX_EMPTY_RECORDS, "empty records")?,
                ALERT => self.alert(&buf[dst..dst + n])?,
                HANDSHAKE if self.rx.version == Version::Tls13 => {
                    self.count(1, MAX_KEY_UPDATES, "KeyUpdates")?;
                    self.key_update(&buf[dst..dst + n])?
                }
                HANDSHAKE => {
                    return Err(fatal(
                        UNEXPECTED_MESSAGE,
                        "TLS renegotiation is not supported",
                    ))
                }
                CHANGE_CIPHER_SPEC => {
                    return Err(fatal(
                        UNEXPECTED_MESSAGE,
                        "ChangeCipherSpec after the handshake",
                    ))
                }
                t => {
                    return Err(fatal(
                        UNEXPECTED_MESSAGE,
                        format!("TLS record of content type {t}"),
                    ))
                }
            }
        }
        Ok((dst, at))
    }

    /// Counts one of what a peer may send only so many of between records of data.
    fn count(&mut self, what: usize, max: u8, name: &str) -> io::Result<()> {
        self.since_data[what] += 1;
        if self.since_data[what] > max {
            return Err(fatal(
                UNEXPECTED_MESSAGE,
                format!("over {max} TLS {name} in a row"),
            ));
        }
        Ok(())
    }

    fn alert(&mut self, m: &[u8]) -> io::Result<()> {
        let &[level, description] = m else {
            return Err(fatal(DECODE_ERROR, "malformed TLS alert"));
        };
        match description {
            CLOSE_NOTIFY => {
                self.closed = true;
                Ok(())
            }
            // Followed by close_notify; not an error in itself.
            USER_CANCELED if level == WARNING => self.count(2, MAX_WARNINGS, "warning alerts"),
            // TLS 1.2 leaves the level to the sender (RFC 5246 §7.2): a warning is only
            // that. TLS 1.3 makes every other alert fatal whatever its level (RFC 8446 §6).
            _ if level == WARNING && self.rx.version == Version::Tls12 => {
                self.count(2, MAX_WARNINGS, "warning alerts")
            }
            d => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the client sent TLS alert {d}"),
            )),
        }
    }

    /// TLS 1.3 handshake messages after the handshake: a client may send only KeyUpdate,
    /// which ends its record (RFC 8446 §5.1: handshake messages must not span key changes).
    fn key_update(&mut self, m: &[u8]) -> io::Result<()> {
        let n = m.len();
        if n == 0 || m[0] != KEY_UPDATE {
            return Err(fatal(
                UNEXPECTED_MESSAGE,
                "unexpected TLS handshake message after the handshake",
            ));
        }
        if n > 5 && m[1..4] == [0, 0, 1] {
            // RFC 8446 §5.1: a message before a key change must end its record.
            return Err(fatal(
                UNEXPECTED_MESSAGE,
                "data after a TLS KeyUpdate in its record",
            ));
        }
        if n != 5 || m[1..4] != [0, 0, 1] {
            return Err(fatal(DECODE_ERROR, "malformed TLS KeyUpdate"));
        }
        if m[4] > 1 {
            return Err(fatal(ILLEGAL_PARAMETER, "TLS KeyUpdate asking for neither"));
        }
        let asked = m[4] == 1;
        let next = self.shared.next_key(true)?;
        self.rx = Cipher::new(Version::Tls13, next)?;
        if asked {
            self.shared.key_update_asked.store(true, Ordering::Release);
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for TlsReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(Err(bad("the TLS stream failed")));
        }
        let r = this.read_some(cx, out);
        if let Poll::Ready(Err(e)) = &r {
            this.failed = true;
            this.shared.alert.store(alert_for(e), Ordering::Release);
        }
        r
    }
}

impl<R: AsyncRead + Unpin> TlsReader<R> {
    fn read_some(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self;
        loop {
            let (from, to) = this.plain;
            if from < to {
                let n = (to - from).min(out.remaining());
                out.put_slice(&this.buf[from..from + n]);
                this.plain.0 += n;
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            this.decrypt()?;
            if this.plain.0 < this.plain.1 || this.closed {
                continue;
            }
            if out.remaining() >= DIRECT_MIN {
                if ready!(this.read_direct(cx, out))? {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Nothing whole left: move the partial record to the front and read more.
            let (at, end) = this.raw;
            this.buf.copy_within(at..end, 0);
            this.raw = (0, end - at);
            this.plain = (0, 0);
            if this.raw.1 == 0 && this.buf.len() > READ_MIN && this.last_read < this.buf.len() / 4 {
                this.buf = vec![0u8; READ_MIN];
            }
            let free = this.buf.len() - this.raw.1;
            let mut rb = ReadBuf::new(&mut this.buf[this.raw.1..]);
            ready!(Pin::new(&mut this.sock).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            this.last_read = n;
            if n == free && this.buf.len() < READ_MAX {
                this.buf.resize(READ_MAX, 0);
            }
            if n == 0 {
                // Many clients close without close_notify; between records that is the end
                // of the stream, inside one it is a truncation.
                return Poll::Ready(if this.raw.1 == 0 {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a TLS record",
                    ))
                });
            }
            this.raw.1 += n;
        }
    }
}

impl<R: AsyncRead + Unpin> TlsReader<R> {
    /// Reads the socket straight into the caller's buffer (after the partial record this
    /// reader holds) and opens the records there, so their plaintext is never copied; only
    /// an incomplete record at the end comes back into the reader's buffer. Whether it gave
    /// the caller anything, or the stream ended.
    fn read_direct(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        let (at, end) = self.raw;
        // SAFETY: the region is written only through `sub`, which records how much of it
        // holds initialized bytes, and nothing uninitialized is read: only `sub.filled()`.
        let mut sub = ReadBuf::uninit(unsafe { out.unfilled_mut() });
        sub.put_slice(&self.buf[at..end]);
        // Pending leaves the partial record where it was: nothing is consumed.
        ready!(Pin::new(&mut self.sock).poll_read(cx, &mut sub))?;
        let filled = sub.filled().len();
        self.last_read = filled - (end - at);
        if self.last_read == 0 {
            return Poll::Ready(if end == at {
                Ok(true)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a TLS record",
                ))
            });
        }
        self.plain = (0, 0);
        self.raw = (0, 0);
        let (plain, next) = self.open_records(sub.filled_mut(), 0, filled)?;
        // After close_notify the rest is ignored (RFC 8446 §6.1), however long; before it,
        // what is left is shorter than a record, which the reader's buffer has room for.
        if !self.closed {
            let tail = &sub.filled()[next..filled];
            let room = self
                .buf
                .get_mut(..tail.len())
                .ok_or_else(|| bad("TLS record tail larger than the read buffer"))?;
            room.copy_from_slice(tail);
            self.raw = (0, tail.len());
        }
        // SAFETY: `sub` wrote (and so initialized) the first `filled >= plain` bytes of the
        // caller's unfilled region, and they now hold `plain` bytes of plaintext.
        unsafe { out.assume_init(plain) };
        out.advance(plain);
        Poll::Ready(Ok(plain > 0 || self.closed))
    }
}

/// The writing half: plaintext in, sealed records out (on flush, or once `WRITE_MAX` is
/// held).
pub struct TlsWriter {
    sock: OwnedWriteHalf,
    tx: Cipher,
    shared: Arc<Shared>,
    out: Vec<u8>,
    /// How much of `out` the socket has taken.
    written: usize,
    /// close_notify is sealed: nothing more may be.
    closing: bool,
    /// Sealing failed: nothing more is sealed.
    failed: bool,
}

impl TlsWriter {
    /// Seals one record of `typ` holding `data`.
    fn record(&mut self, typ: u8, data: &[u8]) -> io::Result<()> {
        let start = self.out.len();
        self.out.resize(start + self.tx.prefix(), 0);
        self.out.extend_from_slice(data);
        self.tx.seal(&mut self.out, start, typ)
    }

    /// Before application data: our KeyUpdate, when the peer asked for it or the key has
    /// sealed its share of records (TLS 1.3; TLS 1.2 has no key update, so its AES-GCM
    /// connections end at their limit instead).
    fn rekey_if_due(&mut self) -> io::Result<()> {
        if self.tx.version != Version::Tls13 {
            if self.tx.explicit && self.tx.seq >= TLS12_GCM_RECORDS {
                return Err(bad(
                    "TLS 1.2 AES-GCM key used up: the client is to reconnect",
                ));
            }
            return Ok(());
        }
        let asked = self.shared.key_update_asked.swap(false, Ordering::AcqRel);
        if !asked && self.tx.seq < RECORDS_PER_KEY {
            return Ok(());
        }
        self.record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0])?;
        let next = self.shared.next_key(false)?;
        self.tx = Cipher::new(Version::Tls13, next)?;
        Ok(())
    }

    /// Seals up to `WRITE_MAX` bytes of `bufs` into records; how many were taken. On an
    /// error none were: what this call sealed is taken back out.
    fn seal(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let before = self.out.len();
        let sealed = self.seal_records(bufs);
        if sealed.is_err() {
            self.out.truncate(before);
        }
        sealed
    }

    fn seal_records(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.closing {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS stream closed",
            ));
        }
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(WRITE_MAX);
        let mut taken = 0;
        let mut pieces = bufs.iter().map(|b| &b[..]).filter(|b| !b.is_empty());
        let mut piece: &[u8] = &[];
        while taken < total {
            self.rekey_if_due()?;
            let n = MAX_PLAIN.min(total - taken);
            let start = self.out.len();
            self.out.resize(start + self.tx.prefix(), 0);
            let mut left = n;
            while left > 0 {
                if piece.is_empty() {
                    piece = pieces.next().unwrap_or_default();
                    if piece.is_empty() {
                        break;
                    }
                }
                let k = left.min(piece.len());
                self.out.extend_from_slice(&piece[..k]);
                piece = &piece[k..];
                left -= k;
            }
            self.tx.seal(&mut self.out, start, APPLICATION_DATA)?;
            taken += n;
        }
        Ok(taken)
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.sock).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(Err(bad("the TLS stream failed")));
        }
        if this.out.len() - this.written >= WRITE_MAX {
            ready!(this.poll_drain(cx))?;
        }
        let sealed = this.seal(bufs);
        this.failed = sealed.is_err();
        Poll::Ready(sealed)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if this.out.capacity() > WRITE_KEEP {
            this.out = Vec::new();
        }
        Pin::new(&mut this.sock).poll_flush(cx)
    }

    /// Ends the connection as TLS asks (RFC 8446 §6): with the fatal alert the reader's
    /// failure calls for, else with close_notify; then the socket's write side.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A failed writer seals nothing more, close_notify included.
        if !this.closing && !this.failed {
            this.closing = true;
            // What was sealed and not yet sent goes first: the alert follows it.
            match this.shared.alert.load(Ordering::Acquire) {
                END_SILENTLY => {}
                END_WITH_CLOSE_NOTIFY => this.record(ALERT, &[WARNING, CLOSE_NOTIFY])?,
                d => this.record(ALERT, &[FATAL, d])?,
            }
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.sock).poll_shutdown(cx)
    }
}

/// A reader with no handshake behind it (so no KeyUpdate), for the fuzz target and tests.
#[cfg(any(test, feature = "fuzzing"))]
fn reader_over<R>(sock: R, rx: Cipher) -> TlsReader<R> {
    let shared = Arc::new(Shared {
        kernel: None,
        key_update_asked: AtomicBool::new(false),
        alert: AtomicU8::new(END_WITH_CLOSE_NOTIFY),
    });
    TlsReader::new(sock, rx, shared, vec![0; READ_MIN], 0)
}

/// Two ciphers under one fixed key (suite 0: AES-128-GCM, 1: AES-256-GCM, 2: ChaCha20-
/// Poly1305): one seals what the other opens, for the fuzz target and tests.
#[cfg(any(test, feature = "fuzzing"))]
fn fixed_pair(suite: usize, version: Version, seq: u64) -> (Cipher, Cipher) {
    let (alg, gcm) = [
        (&aead::AES_128_GCM, true),
        (&aead::AES_256_GCM, true),
        (&aead::CHACHA20_POLY1305, false),
    ][suite];
    let make = || {
        Cipher::from_parts(alg, &[7u8; 32][..alg.key_len()], [9; 12], seq, version, gcm)
            .expect("a valid key for the suite")
    };
    (make(), make())
}

/// The fuzz target's body (`runtime/fuzz`, `crate::fuzzing::tls_records`): a script of
/// records, each sealed under a fixed key or put on the wire as raw bytes, read back through
/// the reader a little at a time. Whatever the bytes, the reader must return data, an end or
/// an error, never panic or loop. The script: one byte choosing suite and version (bits 0-2),
/// how much the socket gives per read (bits 3-5) and whether the reads are small enough to
/// be served from the reader's buffer (bit 6) rather than opened in the caller's, then
/// pieces of `op` (high bit: raw bytes; else the content type to seal), a 2-byte length and
/// the bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_records(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let version = if first & 4 != 0 {
        Version::Tls13
    } else {
        Version::Tls12
    };
    let (mut tx, rx) = fixed_pair(usize::from(first % 3), version, 0);
    let mut wire = Vec::new();
    while rest.len() >= 3 && wire.len() < 1 << 20 {
        let op = rest[0];
        let n = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3);
        let body = &rest[3..3 + n];
        rest = &rest[3 + n..];
        if op & 0x80 != 0 {
            wire.extend_from_slice(body);
        } else {
            let start = wire.len();
            wire.resize(start + tx.prefix(), 0);
            wire.extend_from_slice(&body[..n.min(MAX_PLAIN)]);
            if tx.seal(&mut wire, start, op & 0x1f).is_err() {
                return;
            }
        }
    }
    /// Hands out at most `step` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);
    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.0.len().min(self.1).min(out.remaining());
            out.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Poll::Ready(Ok(()))
        }
    }
    let step = [1, 7, 5000, 70_000, usize::MAX][usize::from(first >> 3) % 5];
    let mut reader = reader_over(Trickle(&wire, step), rx);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Reads served from the reader's buffer, and reads whose records are opened in ours,
    // with more room than the reader's buffer has (the request reader may offer that).
    // Kept across inputs: zeroing it for each would cost more than the input.
    thread_local! {
        static OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_MAX + 1000]);
    }
    OUT.with_borrow_mut(|out| {
        let room = if first & 0x40 != 0 { 1000 } else { out.len() };
        // Every read makes progress on a finite wire: bounded by its length.
        for _ in 0..=wire.len() + 1 {
            let mut rb = ReadBuf::new(&mut out[..room]);
            match Pin::new(&mut reader).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) | Poll::Pending => return,
            }
        }
        panic!("the reader kept returning data past the end of its input");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tls::{ClientAuth, Tls, TlsFiles};
    use proptest::prelude::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::SupportedCipherSuite;
    use std::path::Path;
    use tokio::net::TcpListener;

    /// Every suite the listener offers that an ECDSA certificate can serve (the record
    /// layer is the same for TLS 1.2's RSA twins).
    fn suites() -> Vec<SupportedCipherSuite> {
        let suites: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .into_iter()
            .filter(|s| !format!("{:?}", s.suite()).contains("_RSA_"))
            .collect();
        let tls13 = suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
        assert_eq!((tls13.count(), suites.len()), (3, 6), "{suites:?}");
        suites
    }

    /// Opens every record in `wire`, in the same buffer, the way the reader does.
    fn open_all(rx: &mut Cipher, wire: &mut [u8]) -> io::Result<Vec<(u8, Vec<u8>)>> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < wire.len() {
            if wire.len() - at < HEADER {
                return Err(bad("short"));
            }
            let len = record_len(&wire[at..]);
            if wire.len() - at < HEADER + len {
                return Err(bad("short"));
            }
            // Plaintext lands over the record's own header, as in the reader.
            let (typ, n) = rx.open(wire, at, at, at + HEADER + len)?;
            out.push((typ, wire[at..at + n].to_vec()));
            at += HEADER + len;
        }
        Ok(out)
    }

    proptest! {
        #[test]
        fn sealed_records_open_and_any_flipped_bit_is_refused(
            suite in 0usize..3,
            tls13 in any::<bool>(),
            seq in prop_oneof![Just(0u64), any::<u64>().prop_map(|s| s >> 1)],
            records in proptest::collection::vec(
                (prop_oneof![Just(APPLICATION_DATA), Just(ALERT)],
                 proptest::collection::vec(any::<u8>(), 0..2000)),
                1..5),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let version = if tls13 { Version::Tls13 } else { Version::Tls12 };
            let (mut tx, mut rx) = fixed_pair(suite, version, seq);
            let mut wire = Vec::new();
            for (typ, data) in &records {
                let start = wire.len();
                wire.resize(start + tx.prefix(), 0);
                wire.extend_from_slice(data);
                tx.seal(&mut wire, start, *typ).unwrap();
            }
            let mut tampered = wire.clone();
            let got = open_all(&mut rx, &mut wire).unwrap();
            prop_assert_eq!(&got, &records);
            prop_assert_eq!(rx.seq, seq + records.len() as u64);
            let i = flip.index(tampered.len());
            tampered[i] ^= 1 << bit;
            let (_, mut rx) = fixed_pair(suite, version, seq);
            prop_assert!(open_all(&mut rx, &mut tampered).is_err());
        }

        #[test]
        fn records_out_of_order_are_refused(suite in 0usize..3, tls13 in any::<bool>()) {
            let version = if tls13 { Version::Tls13 } else { Version::Tls12 };
            let (mut tx, mut rx) = fixed_pair(suite, version, 0);
            let mut first = vec![0; tx.prefix()];
            first.extend_from_slice(b"one");
            tx.seal(&mut first, 0, APPLICATION_DATA).unwrap();
            let mut second = vec![0; tx.prefix()];
            second.extend_from_slice(b"two");
            tx.seal(&mut second, 0, APPLICATION_DATA).unwrap();
            // A replayed or reordered record is sealed under another sequence number.
            prop_assert!(open_all(&mut rx, &mut second).is_err());
        }
    }

    fn certificate(dir: &Path) -> TlsFiles {
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        TlsFiles {
            cert,
            key,
            client_ca: None,
            client_auth: ClientAuth::None,
        }
    }

    /// A broker-side echo: every byte read is written back; the error that ended it, if any.
    async fn echo(config: Arc<ServerConfig>, listener: TcpListener) -> io::Result<()> {
        let (sock, _) = listener.accept().await?;
        let Accepted {
            mut reader,
            mut writer,
            ..
        } = accept(config, sock).await.map_err(|e| bad(e.to_string()))?;
        let mut buf = vec![0u8; 70_000];
        let mut reads = 0usize;
        loop {
            // Reads small enough to be served from the reader's buffer, and large enough
            // for the records to be opened in ours, in turn.
            let room = if reads.is_multiple_of(2) {
                7000
            } else {
                buf.len()
            };
            reads += 1;
            // As the broker's connections end: a failed read still shuts the writer down,
            // which tells the peer why.
            let n = match reader.read(&mut buf[..room]).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.shutdown().await;
                    return Err(e);
                }
            };
            if n == 0 {
                writer.shutdown().await?;
                return Ok(());
            }
            writer.write_all(&buf[..n]).await?;
            writer.flush().await?;
        }
    }

    fn client(files: &TlsFiles, suite: SupportedCipherSuite) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&files.cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::ring::default_provider()
        };
        let version = match suite {
            SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
            SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    async fn start(
        files: &TlsFiles,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        start_with(Tls::new(files).unwrap().config()).await
    }

    async fn start_with(
        config: Arc<ServerConfig>,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, tokio::spawn(echo(config, listener)))
    }

    /// Sends `total` bytes in writes of uneven sizes, reading each one's echo back before
    /// the next (and asking for new keys after every other one, with `rekey`), then closes.
    async fn exchange(
        mut tls: tokio_rustls::client::TlsStream<TcpStream>,
        total: usize,
        rekey: bool,
    ) {
        let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        let mut back = vec![0u8; 70_000];
        let (mut at, mut step) = (0, 0);
        while at < total {
            let n = [1, 5000, 16384, 16385, 70000, 300][step % 6].min(total - at);
            tls.write_all(&data[at..at + n]).await.unwrap();
            tls.flush().await.unwrap();
            tls.read_exact(&mut back[..n]).await.unwrap();
            assert!(back[..n] == data[at..at + n], "the echo differs at {at}");
            at += n;
            step += 1;
            if rekey && step % 2 == 0 {
                tls.get_mut().1.refresh_traffic_keys().unwrap();
            }
        }
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        // An error here is an end without close_notify.
        tls.read_to_end(&mut rest)
            .await
            .expect("a clean end, with close_notify");
        assert!(rest.is_empty());
    }

    async fn connect(
        files: &TlsFiles,
        suite: SupportedCipherSuite,
        addr: std::net::SocketAddr,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        client(files, suite).connect(name, tcp).await.unwrap()
    }

    #[tokio::test]
    async fn rustls_clients_of_every_version_and_suite_are_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let files = certificate(dir.path());
        for suite in suites() {
            let (addr, server) = start(&files).await;
            exchange(connect(&files, suite, addr).await, 300_000, false).await;
            server
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{suite:?}: {e}"));
        }
    }

    #[tokio::test]
    async fn key_updates_are_followed_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let files = certificate(dir.path());
        for suite in suites() {
            if matches!(suite, SupportedCipherSuite::Tls13(_)) {
                let (addr, server) = start(&files).await;
                exchange(connect(&files, suite, addr).await, 200_000, true).await;
                server
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{suite:?}: {e}"));
            }
        }
    }

    /// A client whose Finished, a KeyUpdate asking for ours and its first request leave in
    /// one write: rustls must not take the KeyUpdate (it would switch the keys it hands
    /// over), and the echo must come back under our next key. With session tickets (rustls
    /// then stops after the Finished to send them) and without (a client that offers no
    /// resumption, as Go's by default, gets none).
    #[tokio::test]
    async fn a_key_update_sent_with_the_finished_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let files = certificate(dir.path());
        for tickets in [2, 0] {
            let mut config = (*Tls::new(&files).unwrap().config()).clone();
            config.send_tls13_tickets = tickets;
            key_update_with_the_finished(&files, Arc::new(config)).await;
        }
    }

    async fn key_update_with_the_finished(files: &TlsFiles, config: Arc<ServerConfig>) {
        use std::io::{Read, Write};
        let (addr, server) = start_with(config).await;
        let suite = suites()[0];
        assert!(matches!(suite, SupportedCipherSuite::Tls13(_)));
        let connector = client(files, suite);
        let echoed = tokio::task::spawn_blocking(move || {
            let mut sock = std::net::TcpStream::connect(addr).unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(connector.config().clone(), name).unwrap();
            while conn.is_handshaking() {
                while conn.wants_write() {
                    conn.write_tls(&mut sock).unwrap();
                }
                if conn.is_handshaking() {
                    conn.read_tls(&mut sock).unwrap();
                    conn.process_new_packets().unwrap();
                }
            }
            // The Finished is still queued: the KeyUpdate and the data go with it.
            conn.refresh_traffic_keys().unwrap();
            conn.writer().write_all(b"hello").unwrap();
            let mut all = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut all).unwrap();
            }
            sock.write_all(&all).unwrap();
            sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut got = Vec::new();
            while got.len() < 5 {
                assert!(
                    conn.read_tls(&mut sock).unwrap() > 0,
                    "closed before the echo"
                );
                conn.process_new_packets().expect("the echo opens");
                let mut b = [0u8; 16];
                if let Ok(n) = conn.reader().read(&mut b) {
                    got.extend_from_slice(&b[..n]);
                }
            }
            conn.send_close_notify();
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            got
        })
        .await
        .unwrap();
        assert_eq!(echoed, b"hello");
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn floods_of_key_updates_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let files = certificate(dir.path());
        let (addr, server) = start(&files).await;
        let mut tls = connect(&files, suites()[0], addr).await;
        // Far more KeyUpdates than anyone sends, each a key derivation, no data between.
        for _ in 0..40 {
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.flush().await.unwrap();
        }
        let _ = tls.write_all(b"x").await;
        let _ = tls.flush().await;
        let e = server
            .await
            .unwrap()
            .expect_err("40 KeyUpdates in a row accepted");
        assert!(e.to_string().contains("KeyUpdates"), "{e}");
    }

    /// Reads everything `wire` holds through a reader with `rx`'s key: the data, or the error.
    async fn read_wire(wire: &[u8], rx: Cipher) -> io::Result<Vec<u8>> {
        let mut reader = reader_over(wire, rx);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.map(|_| got)
    }

    #[tokio::test]
    async fn runs_of_empty_records_are_cut_off() {
        for (empties, ok) in [(MAX_EMPTY_RECORDS, true), (MAX_EMPTY_RECORDS + 1, false)] {
            let (mut tx, rx) = fixed_pair(0, Version::Tls13, 0);
            let mut wire = Vec::new();
            for data in std::iter::repeat_n(&b""[..], usize::from(empties)).chain([&b"x"[..]]) {
                let start = wire.len();
                wire.resize(start + tx.prefix(), 0);
                wire.extend_from_slice(data);
                tx.seal(&mut wire, start, APPLICATION_DATA).unwrap();
            }
            let got = read_wire(&wire, rx).await;
            assert_eq!(got.is_ok(), ok, "{empties} empty records: {got:?}");
        }
    }

    /// A 1 MB request over TLS in pieces with pauses, read by the frame reader as the
    /// broker reads it.
    #[tokio::test]
    async fn a_large_frame_over_tls_arrives_whole() {
        use super::super::frame::{FrameReader, MAX_REQUEST_BYTES};
        let dir = tempfile::tempdir().unwrap();
        let files = certificate(dir.path());
        let config = Tls::new(&files).unwrap().config();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let len = 1_000_003usize;
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut wire = (len as i32).to_be_bytes().to_vec();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(&10i32.to_be_bytes());
        wire.extend_from_slice(&[7; 10]);
        for suite in suites() {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let (files, wire) = (files.clone(), wire.clone());
            let client = tokio::spawn(async move {
                let mut tls = connect(&files, suite, addr).await;
                for piece in wire.chunks(70_001) {
                    tls.write_all(piece).await.unwrap();
                    tls.flush().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                }
                // Open until the frames are read: they must not need the end of the stream.
                let _ = done_rx.await;
            });
            let (sock, _) = listener.accept().await.unwrap();
            let accepted = accept(config.clone(), sock).await.unwrap();
            let mut r = FrameReader::new(accepted.reader, MAX_REQUEST_BYTES);
            let within = std::time::Duration::from_secs(10);
            let f = tokio::time::timeout(within, r.next())
                .await
                .expect("the frame never came");
            assert!(f.unwrap().unwrap() == body, "{suite:?}: the frame differs");
            let g = tokio::time::timeout(within, r.next())
                .await
                .expect("the next never came");
            assert_eq!(&g.unwrap().unwrap()[..], &[7; 10]);
            done_tx.send(()).unwrap();
            client.await.unwrap();
        }
    }

    #[tokio::test]
    async fn bytes_that_are_not_records_end_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let files = certificate(dir.path());
        for suite in suites() {
            let (addr, server) = start(&files).await;
            let mut tls = connect(&files, suite, addr).await;
            tls.write_all(b"fine").await.unwrap();
            tls.flush().await.unwrap();
            let mut four = [0u8; 4];
            tls.read_exact(&mut four).await.unwrap();
            // Straight onto the socket: a record header and bytes no key sealed.
            let tcp = tls.get_mut().0;
            tcp.write_all(&[APPLICATION_DATA, 3, 3, 0, 40])
                .await
                .unwrap();
            tcp.write_all(&[0x55; 40]).await.unwrap();
            let e = server.await.unwrap().expect_err("forged record accepted");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            // The client is told, with the alert RFC 8446 §5.2 asks for.
            let said = tls.read(&mut four).await.expect_err("no alert");
            let alert = said
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>());
            assert!(
                matches!(
                    alert,
                    Some(rustls::Error::AlertReceived(
                        rustls::AlertDescription::BadRecordMac
                    ))
                ),
                "{suite:?}: {said:?}"
            );
        }
    }

    /// TLS 1.2 warnings are passed over, a few in a row; in TLS 1.3 the same alert ends the
    /// connection.
    #[tokio::test]
    async fn tls12_warnings_pass_and_tls13_alerts_end() {
        const NO_RENEGOTIATION: u8 = 100;
        for version in [Version::Tls12, Version::Tls13] {
            let wire = |warnings: usize| {
                let (mut tx, rx) = fixed_pair(0, version, 0);
                let mut wire = Vec::new();
                let mut records = vec![(ALERT, &[WARNING, NO_RENEGOTIATION][..]); warnings];
                records.push((APPLICATION_DATA, b"data"));
                for (typ, body) in records {
                    let start = wire.len();
                    wire.resize(start + tx.prefix(), 0);
                    wire.extend_from_slice(body);
                    tx.seal(&mut wire, start, typ).unwrap();
                }
                (wire, rx)
            };
            let (one, rx) = wire(1);
            let got = read_wire(&one, rx).await;
            let (many, rx) = wire(usize::from(MAX_WARNINGS) + 1);
            let too_many = read_wire(&many, rx).await;
            if version == Version::Tls12 {
                assert_eq!(got.unwrap(), b"data");
                assert!(too_many.is_err(), "a run of warnings is cut off");
            } else {
                let e = got.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
            }
        }
    }

    /// Whatever follows close_notify is ignored, however much of it one read brings into a
    /// caller's buffer larger than the reader's own (it once overran the reader's buffer).
    #[tokio::test]
    async fn bytes_after_close_notify_are_ignored_in_a_large_read() {
        let (mut tx, rx) = fixed_pair(0, Version::Tls13, 0);
        let mut wire = Vec::new();
        for (typ, body) in [(APPLICATION_DATA, &b"last words"[..]), (ALERT, &[1, 0][..])] {
            let start = wire.len();
            wire.resize(start + tx.prefix(), 0);
            wire.extend_from_slice(body);
            tx.seal(&mut wire, start, typ).unwrap();
        }
        wire.extend(std::iter::repeat_n(0x17, 2 * READ_MAX));
        let mut reader = reader_over(&wire[..], rx);
        let mut out = vec![0u8; 3 * READ_MAX];
        let n = reader.read(&mut out).await.unwrap();
        assert_eq!(&out[..n], b"last words");
        assert_eq!(reader.read(&mut out).await.unwrap(), 0, "the end");
    }

    /// Each failure is answered with its own alert, sealed under the current key.
    #[tokio::test]
    async fn a_failed_read_ends_with_the_alert_that_names_it() {
        let cases: [(&[u8], u8); 5] = [
            // An alert of three bytes.
            (&[ALERT, 1, 0, 0], DECODE_ERROR),
            // A handshake message other than KeyUpdate.
            (&[HANDSHAKE, 1, 0, 0, 0], UNEXPECTED_MESSAGE),
            // A KeyUpdate asking for neither.
            (&[HANDSHAKE, KEY_UPDATE, 0, 0, 1, 7], ILLEGAL_PARAMETER),
            // A record of an unknown content type.
            (&[99, 1], UNEXPECTED_MESSAGE),
            // No content type at all: zeros only.
            (&[0], UNEXPECTED_MESSAGE),
        ];
        for (record, want) in cases {
            let (mut tx, rx) = fixed_pair(0, Version::Tls13, 0);
            let mut wire = Vec::new();
            let (typ, body) = (record[0], &record[1..]);
            wire.resize(tx.prefix(), 0);
            wire.extend_from_slice(body);
            tx.seal(&mut wire, 0, typ).unwrap();
            let e = read_wire(&wire, rx).await.expect_err("accepted");
            assert_eq!(alert_for(&e), want, "{record:?}: {e}");
        }
        // Forged, too long, and the socket's own end.
        let (_, rx) = fixed_pair(0, Version::Tls13, 0);
        let mut forged = header(APPLICATION_DATA, 40).to_vec();
        forged.extend_from_slice(&[0x55; 40]);
        let e = read_wire(&forged, rx).await.unwrap_err();
        assert_eq!(alert_for(&e), BAD_RECORD_MAC, "{e}");
        let (_, rx) = fixed_pair(0, Version::Tls13, 0);
        let e = read_wire(&header(APPLICATION_DATA, MAX_CIPHER_12 + 1), rx)
            .await
            .unwrap_err();
        assert_eq!(alert_for(&e), RECORD_OVERFLOW, "{e}");
        let (_, rx) = fixed_pair(0, Version::Tls13, 0);
        let e = read_wire(&header(APPLICATION_DATA, 100), rx)
            .await
            .unwrap_err();
        assert_eq!(alert_for(&e), END_SILENTLY, "{e}");
    }
}
