//! Prometheus metrics: counters kept in atomics on the hot path, rendered as text on scrape,
//! and a tiny HTTP endpoint that serves them at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::broker::Broker;

/// Upper bounds (seconds) of the request latency histogram buckets.
const BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
/// API keys are small integers; this covers every key Kafka has assigned so far.
const MAX_API_KEY: usize = 96;

#[derive(Default)]
struct ApiStats {
    count: AtomicU64,
    sum_micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

pub struct Metrics {
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Produce responses held back for back pressure.
    pub produce_throttled: AtomicU64,
    /// Fetched record bytes sent from segment files with sendfile (not copied).
    pub fetch_sendfile_bytes: AtomicU64,
    /// SASL authentications (re-authentications included), and the failed ones with the
    /// failed TLS handshakes.
    pub authentications: AtomicU64,
    /// Requests throttled by a client quota, per quota key.
    quota_throttled: [AtomicU64; crate::limits::quotas::Key::ALL.len()],
    quota_last_log_ms: AtomicU64,
    pub authentication_failures: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    apis: Vec<ApiStats>,
    /// Requests at versions Kafka 4 removed, per (API key, version): who still runs old
    /// clients. Only old requests take this lock.
    old_versions: std::sync::Mutex<std::collections::BTreeMap<(i16, i16), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            produce_throttled: AtomicU64::new(0),
            fetch_sendfile_bytes: AtomicU64::new(0),
            authentications: AtomicU64::new(0),
            quota_throttled: Default::default(),
            quota_last_log_ms: AtomicU64::new(0),
            authentication_failures: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            apis: (0..MAX_API_KEY).map(|_| ApiStats::default()).collect(),
            old_versions: Default::default(),
        }
    }
}

fn api_name(key: i16) -> String {
    kafka_protocol::messages::ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| format!("Unknown{key}"))
}

impl Metrics {
    /// Counts a request at a version Kafka 4 removed; true the first time that API and
    /// version is seen, so it is logged once.
    pub fn old_version(&self, api_key: i16, version: i16) -> bool {
        let mut m = self
            .old_versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry((api_key, version)).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts a request a quota throttled, and logs it (at most once a second).
    pub fn quota_throttled(
        &self,
        key: crate::limits::quotas::Key,
        user: &str,
        client: &str,
        throttle: Duration,
    ) {
        let i = crate::limits::quotas::Key::ALL
            .iter()
            .position(|k| *k == key)
            .unwrap_or(0);
        self.quota_throttled[i].fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.quota_last_log_ms.load(Ordering::Relaxed);
        if now >= last + 1000
            && self
                .quota_last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(
                quota = key.name(),
                user,
                client_id = client,
                throttle_ms = throttle.as_millis() as u64,
                "client over its quota: throttled"
            );
        }
    }

    /// Requests handled so far, every API together.
    pub fn requests_total(&self) -> u64 {
        self.apis
            .iter()
            .map(|a| a.count.load(Ordering::Relaxed))
            .sum()
    }

    pub fn observe_request(&self, api_key: i16, took: Duration) {
        let Some(s) = usize::try_from(api_key).ok().and_then(|i| self.apis.get(i)) else {
            return;
        };
        s.count.fetch_add(1, Ordering::Relaxed);
        s.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Renders every metric in the Prometheus text format.
/// The HELP and TYPE lines of a metric family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One unlabelled counter or gauge: its header, then its value.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

pub fn render(broker: &Broker) -> String {
    let m = &broker.metrics;
    let mut out = String::new();
    scalar(
        &mut out,
        "sluice_connections",
        "gauge",
        "Open client connections.",
        m.connections.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_connections_total",
        "counter",
        "Client connections accepted.",
        m.connections_total.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_authentications_total",
        "counter",
        "Successful SASL authentications, re-authentications included.",
        m.authentications.load(Ordering::Relaxed),
    );
    header(
        &mut out,
        "sluice_authentication_failures_total",
        "counter",
        "Connections refused at SASL authentication or the TLS handshake.",
    );
    for (stage, n) in [
        ("sasl", &m.authentication_failures),
        ("tls", &m.tls_handshake_failures),
    ] {
        let _ = writeln!(
            out,
            "sluice_authentication_failures_total{{stage=\"{stage}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    header(
        &mut out,
        "sluice_quota_throttled_total",
        "counter",
        "Requests throttled by a client quota.",
    );
    for (k, n) in crate::limits::quotas::Key::ALL
        .iter()
        .zip(&m.quota_throttled)
    {
        let _ = writeln!(
            out,
            "sluice_quota_throttled_total{{key=\"{}\"}} {}",
            k.name(),
            n.load(Ordering::Relaxed)
        );
    }
    let refused = &broker.limits.refused;
    header(
        &mut out,
        "sluice_connections_refused_total",
        "counter",
        "Connections closed at once because a limit was reached (max_connections, max_connections_per_ip).",
    );
    for (reason, n) in [
        ("total", &refused.connections_total),
        ("per_ip", &refused.connections_per_ip),
    ] {
        let _ = writeln!(
            out,
            "sluice_connections_refused_total{{reason=\"{reason}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    scalar(
        &mut out,
        "sluice_fetch_capped_total",
        "counter",
        "Fetches whose response was held to fetch_max_bytes (the client asked for more, or set no limit).",
        refused.fetch_capped.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_fetch_sessions",
        "gauge",
        "Consumers' incremental fetch sessions cached (KIP-227; at most 1,000).",
        broker.fetch_sessions.len(),
    );
    scalar(
        &mut out,
        "sluice_fetch_session_partitions",
        "gauge",
        "Partitions held by the cached fetch sessions, all told.",
        broker.fetch_sessions.partitions(),
    );
    let mem = &broker.limits.memory;
    scalar(
        &mut out,
        "sluice_memory_in_flight_bytes",
        "gauge",
        "Bytes of large requests and fetch responses held now (max_in_flight_bytes).",
        mem.in_use(),
    );
    scalar(
        &mut out,
        "sluice_memory_waits_total",
        "counter",
        "Large requests that waited for room in max_in_flight_bytes before being read.",
        mem.waited.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_fetch_shrunk_total",
        "counter",
        "Fetch responses made smaller because max_in_flight_bytes was spent.",
        mem.shrunk.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_groups_refused_total",
        "counter",
        "Requests refused because a new group would pass max_groups.",
        crate::group::GROUPS_REFUSED.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_producer_ids_forgotten_total",
        "counter",
        "Idempotent producer states a partition forgot because it held max_producer_ids_per_partition.",
        crate::limits::PRODUCER_IDS_FORGOTTEN.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_connections_idle_closed_total",
        "counter",
        "Connections closed after connections_max_idle_ms without a request.",
        crate::limits::IDLE_CLOSED.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_connections_unauthenticated_closed_total",
        "counter",
        "SASL connections closed for not authenticating in time.",
        crate::limits::UNAUTHENTICATED_CLOSED.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_decompression_refused_total",
        "counter",
        "Batches refused because they inflate past the decompression cap.",
        crate::limits::DECOMPRESSION_REFUSED.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_config_floors_refused_total",
        "counter",
        "Topic configs refused for a segment.bytes or segment.ms below the broker's floor.",
        crate::limits::CONFIG_FLOORS_REFUSED.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_groups_expired_total",
        "counter",
        "Groups forgotten for having no members and no committed offsets.",
        crate::group::GROUPS_EXPIRED.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_durable_fsyncs_total",
        "counter",
        "Fsyncs run so that produces to durable topics (flush.messages) could be acknowledged.",
        crate::broker::durable::FSYNCS.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_durable_fsynced_records_total",
        "counter",
        "Records those fsyncs made durable (per fsync: the group commit's batch).",
        crate::broker::durable::FSYNCED_RECORDS.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_fetch_sendfile_bytes_total",
        "counter",
        "Fetched record bytes sent from the segment files, never held in memory whole (sendfile on plaintext, read a megabyte at a time over TLS).",
        m.fetch_sendfile_bytes.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_produce_throttled_total",
        "counter",
        "Produce responses held back because a pipeline reading the topic is behind its max_lag.",
        m.produce_throttled.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "sluice_protocol_errors_total",
        "counter",
        "Connections closed for malformed or unsupported requests.",
        m.protocol_errors.load(Ordering::Relaxed),
    );

    let old: Vec<((i16, i16), u64)> = m
        .old_versions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    if !old.is_empty() {
        header(
            &mut out,
            "sluice_old_version_requests_total",
            "counter",
            "Requests at versions Kafka 4 removed (KIP-896), served as Kafka 3.9 did.",
        );
        for ((key, version), n) in old {
            let api = api_name(key);
            let _ = writeln!(
                out,
                "sluice_old_version_requests_total{{api=\"{api}\",version=\"{version}\"}} {n}"
            );
        }
    }

    let _ = writeln!(
        out,
        "# HELP sluice_request_duration_seconds Request handling time per API."
    );
    let _ = writeln!(out, "# TYPE sluice_request_duration_seconds histogram");
    for (key, s) in m.apis.iter().enumerate() {
        let count = s.count.load(Ordering::Relaxed);
        if count == 0 {
            continue;
        }
        let api = api_name(key as i16);
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += s.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sluice_request_duration_seconds_bucket{{api=\"{api}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "sluice_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "sluice_request_duration_seconds_sum{{api=\"{api}\"}} {}",
            s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "sluice_request_duration_seconds_count{{api=\"{api}\"}} {count}"
        );
    }

    let topics = broker.topics();
    for (name, help, get) in [
        (
            "sluice_topic_bytes_in_total",
            "Record batch bytes produced to a topic.",
            0,
        ),
        (
            "sluice_topic_records_in_total",
            "Records produced to a topic.",
            1,
        ),
        (
            "sluice_topic_bytes_out_total",
            "Record batch bytes fetched from a topic.",
            2,
        ),
        (
            "sluice_topic_records_out_total",
            "Records fetched from a topic (counted per batch header).",
            3,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for t in &topics {
            let v = match get {
                0 => &t.stats.bytes_in,
                1 => &t.stats.records_in,
                2 => &t.stats.bytes_out,
                _ => &t.stats.records_out,
            }
            .load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{topic=\"{}\"}} {v}", t.name);
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_partition_log_bytes Bytes of log segments per partition."
    );
    let _ = writeln!(out, "# TYPE sluice_partition_log_bytes gauge");
    let _ = writeln!(
        out,
        "# HELP sluice_partition_high_watermark Next offset per partition."
    );
    let _ = writeln!(out, "# TYPE sluice_partition_high_watermark gauge");
    for t in &topics {
        for p in &t.partitions {
            let _ = writeln!(
                out,
                "sluice_partition_log_bytes{{topic=\"{}\",partition=\"{}\"}} {}",
                t.name,
                p.index,
                p.size_bytes()
            );
            let _ = writeln!(
                out,
                "sluice_partition_high_watermark{{topic=\"{}\",partition=\"{}\"}} {}",
                t.name,
                p.index,
                p.watermarks().high
            );
        }
    }
    out
}

/// Serves `GET /metrics` until the process ends. Anything else gets a 404.
use crate::plugin::host::PipelineStatus;

/// Prometheus text for the pipelines.
pub fn render_pipelines(host: &crate::plugin::PluginHost) -> String {
    render_pipeline_status(&host.status())
}

/// The `sluice_pipeline_*` metrics of pipelines (a broker's, or a worker's tasks).
pub fn render_pipeline_status(st: &[PipelineStatus]) -> String {
    let mut out = String::new();
    type Counter = (&'static str, &'static str, fn(&PipelineStatus) -> u64);
    let counters: [Counter; 8] = [
        (
            "sluice_pipeline_records_in_total",
            "Records a pipeline consumed.",
            |p| p.records_in,
        ),
        (
            "sluice_pipeline_records_out_total",
            "Records a pipeline emitted to its outputs.",
            |p| p.records_out,
        ),
        (
            "sluice_pipeline_dead_lettered_total",
            "Records a pipeline sent to its dead-letter topic.",
            |p| p.dead_lettered,
        ),
        (
            "sluice_pipeline_retried_total",
            "Records a pipeline sent to its retry topic.",
            |p| p.retried,
        ),
        (
            "sluice_pipeline_traps_total",
            "Plugin traps (panic, timeout, memory).",
            |p| p.traps,
        ),
        (
            "sluice_pipeline_late_total",
            "Records behind the watermark, sent to the pipeline's late topic.",
            |p| p.late,
        ),
        (
            "sluice_pipeline_undecodable_batches_total",
            "Input batches that could not be decoded, dead-lettered whole.",
            |p| p.undecodable,
        ),
        (
            "sluice_pipeline_ticks_total",
            "Calls of the plugin's tick (idle instances that paused their ticks get none).",
            |p| p.ticks,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for p in st {
            let _ = writeln!(out, "{name}{{pipeline=\"{}\"}} {}", p.name, get(p));
        }
    }
    let _ = writeln!(out, "# HELP sluice_pipeline_up 1 if the pipeline runs its latest files, 0 if they were rejected.");
    let _ = writeln!(out, "# TYPE sluice_pipeline_up gauge");
    for p in st {
        let up = u8::from(p.status == "running");
        let _ = writeln!(out, "sluice_pipeline_up{{pipeline=\"{}\"}} {up}", p.name);
    }
    let _ = writeln!(
        out,
        "# HELP sluice_pipeline_lag Records in an input partition not yet processed."
    );
    let _ = writeln!(out, "# TYPE sluice_pipeline_lag gauge");
    for p in st {
        for q in &p.partitions {
            let _ = writeln!(
                out,
                "sluice_pipeline_lag{{pipeline=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                p.name, q.topic, q.partition, q.lag
            );
        }
    }
    out
}

/// What an HTTP listener serves.
#[derive(Debug, Clone)]
pub enum Access {
    /// `/metrics` only (the `--metrics` listener): nothing there changes anything.
    MetricsOnly,
    /// `/metrics` and the admin API; with a token, the admin API answers only requests that
    /// carry `Authorization: Bearer TOKEN`.
    Admin { token: Option<String> },
}

/// Answers one request: (request head, method, target) to (status, content type, body).
pub type Router = dyn Fn(&str, &str, &str) -> (&'static str, &'static str, String) + Send + Sync;

/// Serves `/metrics` and, when a plugin host runs and `access` allows, the admin API that
/// `sluice plugin` uses: `GET /v1/pipelines` and
/// `POST /v1/pipelines/NAME/reset?to=...&keep_state=true&downstream=true`.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    host: Option<Arc<crate::plugin::PluginHost>>,
    history: Option<Arc<crate::console::History>>,
    access: Access,
) {
    let router = move |head: &str, method: &str, target: &str| {
        let admin = match &access {
            Access::MetricsOnly => Allowed::No,
            Access::Admin { token: None } => Allowed::Yes,
            Access::Admin { token: Some(t) } => {
                if bearer(head).is_some_and(|b| same(b.as_bytes(), t.as_bytes())) {
                    Allowed::Yes
                } else {
                    Allowed::Unauthorized
                }
            }
        };
        route(
            method,
            target,
            &broker,
            host.as_deref(),
            history.as_deref(),
            admin,
        )
    };
    serve_with(listener, Arc::new(router)).await
}

/// A minimal HTTP/1.1 server: one request per connection, its head bounded, answered by
/// `router` on the blocking pool.
pub async fn serve_with(listener: TcpListener, router: Arc<Router>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head; bounded so a slow or huge request cannot hold memory.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let r = sock.read(&mut buf[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (status, ctype, body) = tokio::task::spawn_blocking(move || {
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or("");
                let target = words.next().unwrap_or("");
                router(&head, method, target)
            })
            .await
            .unwrap_or((
                "500 Internal Server Error",
                "text/plain",
                "internal error\n".into(),
            ));
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// Whether a request may use the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Yes,
    /// The listener serves metrics only.
    No,
    /// A token is required and the request carried none or another.
    Unauthorized,
}

/// The bearer token of a request head, if any.
fn bearer(head: &str) -> Option<&str> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let value = value.trim();
        value
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("bearer "))
            .map(|_| value[7..].trim())
    })
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub const TEXT: &str = "text/plain; version=0.0.4";
pub const JSON: &str = "application/json";

fn route(
    method: &str,
    target: &str,
    broker: &Broker,
    host: Option<&crate::plugin::PluginHost>,
    history: Option<&crate::console::History>,
    admin: Allowed,
) -> (&'static str, &'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |k: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(a, _)| *a == k)
            .map(|(_, v)| v.to_string())
    };
    let json_err =
        |status, e: String| (status, JSON, serde_json::json!({ "error": e }).to_string());
    // The console's page holds no data (it asks for the token itself): any listener but the
    // metrics-only one serves it.
    if method == "GET" && admin != Allowed::No {
        if let Some((ctype, body)) = crate::console::asset(path) {
            return ("200 OK", ctype, body.to_string());
        }
    }
    match (method, path) {
        ("GET", "/metrics") => {
            let mut body = render(broker);
            if let Some(h) = host {
                body.push_str(&render_pipelines(h));
            }
            ("200 OK", TEXT, body)
        }
        (_, p) if p.starts_with("/v1/") && admin == Allowed::No => {
            json_err("404 Not Found", "this listener serves /metrics only".into())
        }
        (_, p) if p.starts_with("/v1/") && admin == Allowed::Unauthorized => json_err(
            "401 Unauthorized",
            "the admin API needs 'Authorization: Bearer TOKEN' (sluice ... --admin-token)".into(),
        ),
        (_, p) if p.starts_with("/v1/") && admin == Allowed::Yes => {
            match crate::console::api(method, p, query, broker, host, history) {
                Some(reply) => reply,
                None => pipelines(method, p, &param, host),
            }
        }
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

/// The pipelines' part of the admin API: their status, and resets.
fn pipelines(
    method: &str,
    path: &str,
    param: &dyn Fn(&str) -> Option<String>,
    host: Option<&crate::plugin::PluginHost>,
) -> (&'static str, &'static str, String) {
    let json_err =
        |status, e: String| (status, JSON, serde_json::json!({ "error": e }).to_string());
    if !path.starts_with("/v1/pipelines") {
        return json_err("404 Not Found", format!("no route {method} {path}"));
    }
    let Some(h) = host else {
        return json_err("404 Not Found", "no plugin host runs in this broker".into());
    };
    let rest = path.trim_start_matches("/v1/pipelines").trim_matches('/');
    match (method, rest.split_once('/')) {
        ("GET", None) if rest.is_empty() => (
            "200 OK",
            JSON,
            serde_json::to_string(&h.status()).unwrap_or_default(),
        ),
        ("POST", Some((name, "reset"))) => {
            let to = match param("to")
                .as_deref()
                .map(crate::plugin::reset::parse_reset_to)
            {
                Some(Ok(t)) => t,
                Some(Err(e)) => return json_err("400 Bad Request", e),
                None => return json_err("400 Bad Request", "missing 'to'".into()),
            };
            let flag = |k: &str| param(k).is_some_and(|v| v == "true" || v == "1");
            match h.reset(name, to, flag("keep_state"), flag("downstream")) {
                Ok(moves) => (
                    "200 OK",
                    JSON,
                    serde_json::json!({ "reset": moves }).to_string(),
                ),
                Err(e) => json_err("409 Conflict", e),
            }
        }
        _ => json_err("404 Not Found", format!("no route {method} {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_follows_the_listeners_access() {
        let dir = tempfile::tempdir().unwrap();
        let b = crate::broker::testing::open(dir.path());
        let status = |target: &str, admin| route("GET", target, &b, None, None, admin).0;
        // The metrics-only listener serves neither the page nor its data.
        assert_eq!(status("/", Allowed::No), "404 Not Found");
        assert_eq!(status("/v1/topics", Allowed::No), "404 Not Found");
        assert_eq!(status("/metrics", Allowed::No), "200 OK");
        // Without the token: the page (it asks for the token), no data.
        assert_eq!(status("/", Allowed::Unauthorized), "200 OK");
        assert_eq!(
            status("/console/console.js", Allowed::Unauthorized),
            "200 OK"
        );
        assert_eq!(
            status("/v1/topics", Allowed::Unauthorized),
            "401 Unauthorized"
        );
        assert_eq!(
            status("/v1/groups", Allowed::Unauthorized),
            "401 Unauthorized"
        );
        assert_eq!(status("/v1/topics", Allowed::Yes), "200 OK");
        // Pipelines are still answered by the admin API, and nothing writes through GET.
        assert_eq!(status("/v1/pipelines", Allowed::Yes), "404 Not Found");
        assert_eq!(
            route("POST", "/v1/topics", &b, None, None, Allowed::Yes).0,
            "404 Not Found"
        );
    }
}
