//! The broker's limits in one place: what one client (or many) may make the broker hold.
//!
//! Each limit is a broker setting under Kafka's name (with `_` for `.`), and each, when it
//! bites, gives the client a clear answer (a closed connection, a capped response), bumps a
//! counter in `/metrics` and logs a line (at most one per second per limit, so a flood does
//! not become a flood of logs too).
//!
//! | setting | default | when reached |
//! |---|---|---|
//! | `max_connections` | 10000 | a new connection is closed at once (`sluice_connections_refused_total{reason="total"}`) |
//! | `max_connections_per_ip` | 2000 | the same, for one address (`reason="per_ip"`) |
//! | `fetch_max_bytes` | 55 MiB, as Kafka | a fetch's (or share fetch's) response stops there, whatever the client asked (`sluice_fetch_capped_total`); the first batch still goes whole (KIP-74) |
//! | request size | 100 MiB (`server::MAX_REQUEST_BYTES`) | the connection is closed (`sluice_protocol_errors_total`) |
//! | `connections_max_idle_ms` | 600000, as Kafka (-1: never; at least 1000) | a connection that sends no request for this long is closed (`sluice_connections_idle_closed_total`); a SASL connection that has not authenticated, after 10 s without a request (`UNAUTHENTICATED_IDLE_MS`, `sluice_connections_unauthenticated_closed_total`), and its requests must come whole within that time of their first byte |
//! | request time | 60 s (`server::FRAME_DEADLINE`) | a request that has begun must arrive whole within it, or the connection is closed: a stalled request would hold its reservation below forever |
//! | `max_in_flight_bytes` | 512 MiB | one budget for large requests (over 64 KiB) being read and handled and for fetch responses until written (`memory.rs`; records a plaintext fetch sends from their files take none): a large request waits for room before more of it is read (`sluice_memory_waits_total`), a fetch gets a smaller response, down to one batch (`sluice_fetch_shrunk_total`) |
//! | decompressed batch | 256 MiB per request, 32x its compressed size for snappy (`records/mod.rs`) | the batch is refused as corrupt (`sluice_decompression_refused_total`) |
//! | `segment_bytes_min` | 1 MiB, as Kafka 4 | a topic config (`segment.bytes`, at creation or altered, or a broker default) below it is refused with `INVALID_CONFIG` naming the floor (`sluice_config_floors_refused_total`): tiny segments would cost three open files each |
//! | `max_producer_ids_per_partition` | 10000 | a partition remembering more idempotent producers forgets the least recently seen (never one inside a transaction), as Redpanda's `max_concurrent_producer_ids` does: a forgotten producer's next batch is taken at any sequence, like one whose state expired (`sluice_producer_ids_forgotten_total`). Memory per partition stays near 2 MB whatever ids clients make up |
//! | `segment_ms_min` | 60000 | the same for `segment.ms`: a segment per produce would exhaust file descriptors |
//! | client quotas | none | `producer_byte_rate`, `consumer_byte_rate`, `request_percentage`, `producer_ids_rate` (KIP-936's name: producer ids minted a second, each InitProducerId counting one, so one client churning ids is throttled on its own before `max_producer_ids_per_partition` forgets other clients' states) per user / client id (`quotas.rs`, set with AlterClientQuotas): the response carries `throttle_time_ms` and the connection is muted that long (`sluice_quota_throttled_total{key}`) |
//! | groups | — | a group with no members and no committed offsets is forgotten at the next cleanup (every minute), so group ids named once do not pile up (`group/mod.rs`, `sluice_groups_expired_total`) |
//! | `max_groups` | 100000 | classic and KIP-848 groups kept (a group with committed offsets stays until `offsets.retention`): JoinGroup, OffsetCommit or ConsumerGroupHeartbeat for one more gets `COORDINATOR_NOT_AVAILABLE`, which clients retry (`sluice_groups_refused_total`) |

pub mod memory;
pub mod quotas;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Limits set in the broker's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Kafka's broker `fetch.max.bytes`: the most a fetch response carries.
    pub fetch_max_bytes: usize,
    /// Floors on `segment.bytes` and `segment.ms`: every segment holds three files open.
    pub segment_bytes_min: u64,
    pub segment_ms_min: u64,
    /// Idempotent producers each partition remembers at most (see `ProducerStates::cap`).
    pub max_producer_ids_per_partition: usize,
    /// The budget of `memory.rs`.
    pub max_in_flight_bytes: usize,
    /// Kafka's `connections.max.idle.ms`: a connection with no request for this long is
    /// closed.
    pub connections_max_idle_ms: u64,
}

/// Before it has authenticated, a SASL connection may wait this long between requests (or
/// `connections_max_idle_ms`, if shorter). Its handshake is a few quick round trips; without
/// a bound, idle unauthenticated sockets would hold the connection caps' places for
/// `connections_max_idle_ms`.
pub const UNAUTHENTICATED_IDLE_MS: u64 = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 2_000,
            fetch_max_bytes: 55 << 20,
            segment_bytes_min: 1 << 20,
            segment_ms_min: 60_000,
            max_producer_ids_per_partition: 10_000,
            max_in_flight_bytes: 512 << 20,
            connections_max_idle_ms: 600_000,
        }
    }
}

/// Producer states forgotten by `max_producer_ids_per_partition`, for `/metrics`. Process-wide:
/// partitions are opened before the broker's other state and hold no handle to it.
pub static PRODUCER_IDS_FORGOTTEN: AtomicU64 = AtomicU64::new(0);
static PRODUCER_IDS_LAST_LOG_MS: AtomicI64 = AtomicI64::new(0);

/// Counts producer states a partition (in `dir`) forgot, with a log line at most once a second.
pub fn producer_ids_forgotten(n: usize, dir: &std::path::Path) {
    let total = PRODUCER_IDS_FORGOTTEN.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
    if log_due(&PRODUCER_IDS_LAST_LOG_MS) {
        tracing::warn!(partition = %dir.display(), forgotten = n, forgotten_so_far = total,
            setting = "max_producer_ids_per_partition",
            "too many idempotent producers on one partition: the least recently seen are forgotten");
    }
}

/// Connections closed for their silence, for `/metrics`: idle past `connections_max_idle_ms`,
/// and SASL connections that did not authenticate in time.
pub static IDLE_CLOSED: AtomicU64 = AtomicU64::new(0);
pub static UNAUTHENTICATED_CLOSED: AtomicU64 = AtomicU64::new(0);
static IDLE_LAST_LOG_MS: AtomicI64 = AtomicI64::new(0);

/// Counts a connection closed for its silence, with a log line at most once a second.
pub fn idle_closed(peer: std::net::SocketAddr, authenticated: bool, after: std::time::Duration) {
    let (counter, setting) = if authenticated {
        (&IDLE_CLOSED, "connections_max_idle_ms")
    } else {
        (&UNAUTHENTICATED_CLOSED, "UNAUTHENTICATED_IDLE_MS")
    };
    let total = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if log_due(&IDLE_LAST_LOG_MS) {
        tracing::info!(%peer, authenticated, idle = ?after, closed_so_far = total, setting,
            "closing a silent connection");
    }
}

/// Batches refused because they inflate past the decompression cap, for `/metrics`.
pub static DECOMPRESSION_REFUSED: AtomicU64 = AtomicU64::new(0);
static DECOMPRESSION_LAST_LOG_MS: AtomicI64 = AtomicI64::new(0);

/// Counts a batch refused by the decompression cap (`cap` bytes), with a log line at most once
/// a second; the error the produce answers with.
pub fn decompression_refused(cap: usize) -> anyhow::Error {
    let total = DECOMPRESSION_REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    if log_due(&DECOMPRESSION_LAST_LOG_MS) {
        tracing::warn!(
            cap,
            refused_so_far = total,
            "a batch inflates past the decompression cap: refused as corrupt"
        );
    }
    anyhow::anyhow!("decompressed batch exceeds {cap} bytes")
}

/// Topic configs refused by `segment_bytes_min` / `segment_ms_min`, for `/metrics`.
pub static CONFIG_FLOORS_REFUSED: AtomicU64 = AtomicU64::new(0);

/// Whether a log line is due for a limit last logged at `last` (at most one per second).
pub(crate) fn log_due(last_log_ms: &AtomicI64) -> bool {
    let now = crate::broker::now_ms();
    let last = last_log_ms.load(Ordering::Relaxed);
    now - last >= 1000
        && last_log_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
}

/// Counts of what the limits refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct Refusals {
    pub connections_total: AtomicU64,
    pub connections_per_ip: AtomicU64,
    pub fetch_capped: AtomicU64,
}

/// Admission of connections against `max_connections` and `max_connections_per_ip`.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    /// Bytes held for clients at once (see `memory.rs`).
    pub memory: Arc<memory::MemoryPool>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub refused: Refusals,
    last_log_ms: AtomicI64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

/// Held for a connection's life; gives its place back when dropped.
#[derive(Debug)]
pub struct Admitted {
    conns: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.open.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.conns.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Connections> {
        Arc::new(Connections {
            memory: memory::MemoryPool::new(limits.max_in_flight_bytes),
            limits,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refused: Refusals::default(),
            last_log_ms: AtomicI64::new(0),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Admits a connection from `ip`, or says which limit it would pass.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.open.load(Ordering::Acquire) >= self.limits.max_connections {
            drop(per_ip);
            self.refuse(Refused::Total, ip);
            return Err(Refused::Total);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.max_connections_per_ip {
            drop(per_ip);
            self.refuse(Refused::PerIp, ip);
            return Err(Refused::PerIp);
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted {
            conns: self.clone(),
            ip,
        })
    }

    fn refuse(&self, why: Refused, ip: IpAddr) {
        let (counter, limit, name) = match why {
            Refused::Total => (
                &self.refused.connections_total,
                self.limits.max_connections,
                "max_connections",
            ),
            Refused::PerIp => (
                &self.refused.connections_per_ip,
                self.limits.max_connections_per_ip,
                "max_connections_per_ip",
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.log_due() {
            tracing::warn!(%ip, limit, setting = name, refused_so_far = counter.load(Ordering::Relaxed), "connection refused: limit reached");
        }
    }

    /// Caps a fetch's byte budget at `fetch_max_bytes` (a client's 0 or negative means no
    /// wish, not no limit).
    pub fn fetch_budget(&self, asked: i32) -> usize {
        let cap = self.limits.fetch_max_bytes;
        let asked = usize::try_from(asked).ok().filter(|&a| a > 0);
        match asked {
            Some(a) if a <= cap => a,
            _ => {
                self.refused.fetch_capped.fetch_add(1, Ordering::Relaxed);
                if asked.is_some() && self.log_due() {
                    tracing::info!(asked, cap, "fetch response capped at fetch_max_bytes");
                }
                cap
            }
        }
    }

    /// At most one log line per second for all the limits together.
    fn log_due(&self) -> bool {
        log_due(&self.last_log_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_admitted_up_to_each_limit_and_given_back() {
        let c = Connections::new(Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.admit(a).unwrap();
        let _a2 = c.admit(a).unwrap();
        assert_eq!(c.admit(a).unwrap_err(), Refused::PerIp);
        let _b1 = c.admit(b).unwrap();
        assert_eq!(c.admit(b).unwrap_err(), Refused::Total);
        drop(a1);
        let _b2 = c.admit(b).unwrap();
        assert_eq!(c.refused.connections_per_ip.load(Ordering::Relaxed), 1);
        assert_eq!(c.refused.connections_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn fetch_budgets_never_pass_the_cap() {
        let c = Connections::new(Limits {
            fetch_max_bytes: 1000,
            ..Limits::default()
        });
        assert_eq!(c.fetch_budget(500), 500);
        assert_eq!(c.fetch_budget(i32::MAX), 1000);
        assert_eq!(c.fetch_budget(0), 1000);
        assert_eq!(c.fetch_budget(-1), 1000);
    }
}
