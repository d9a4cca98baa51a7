//! The broker's state: topics, their partitions' logs, and their persisted configuration.
//!
//! Layout on disk (`data_dir`):
//! ```text
//! cluster.json                      cluster id, created once
//! topics/<name>/topic.json          topic id, partition count, config overrides
//! topics/<name>/<partition>/        the partition's log segments
//! trash/                            deleted topics, removed in the background
//! ```
//! Invariant: `topic.json` is written atomically (temp file, fsync, rename) before a topic is
//! visible to clients, so a crash never leaves a topic half-created.

pub mod config;
pub mod durable;
pub mod dynamic;
pub mod producer_ids;
pub mod producers;
#[cfg(test)]
mod sim_tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use thiserror::Error;
use tokio::sync::watch;
use uuid::Uuid;

use crate::disk;
use crate::log::batch::{self, BatchError};
use crate::log::segment::ReadSlice;
use crate::log::{Appended, Log, LogConfig, LogError};
use crate::metrics::Metrics;
use config::{ConfigError, Defaults, TopicConfig};
use producers::{ProducerBatch, ProducerStates, Verdict};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name '{0}': use 1-249 of [a-zA-Z0-9._-], not '.' or '..'")]
    InvalidTopicName(String),
    #[error("invalid partition count {0}: must be between 1 and 10000")]
    InvalidPartitions(i32),
    #[error("cannot go from {have} to {asked} partitions: the count can only grow, up to 10000")]
    InvalidPartitionIncrease { have: i32, asked: i32 },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("I/O error on {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("corrupt metadata file {path}: {why}")]
    CorruptMetadata { path: PathBuf, why: String },
    /// The users, ACL or client-quota file.
    #[error(transparent)]
    Settings(#[from] crate::disk::json::JsonFileError),
}

/// Why a produce to one partition failed; each maps to a Kafka error code.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("corrupt record batch: {0}")]
    Corrupt(#[from] BatchError),
    #[error("produce request carried no records")]
    Empty,
    #[error("storage error: {0}")]
    Storage(#[from] LogError),
    #[error("out-of-order sequence from producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError + '_ {
    move |source| BrokerError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

/// Settings of the broker process (from flags and the config file).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub defaults: Defaults,
    pub retention_check_ms: u64,
    pub cleaner_backoff_ms: u64,
    /// Threads cleaning compacted partitions at once (Kafka's log.cleaner.threads).
    pub cleaner_threads: usize,
    /// Memory for the cleaner's key map (Kafka's log.cleaner.dedupe.buffer.size), shared by
    /// its threads.
    pub cleaner_dedupe_buffer_bytes: usize,
    /// The cleaner's I/O limit (Kafka's log.cleaner.io.max.bytes.per.second); None: none.
    pub cleaner_io_bytes_per_sec: Option<u64>,
    /// The `transaction.version` finalized for clients: 2 (KIP-890, Kafka 4's default) or 1.
    pub transaction_version: i16,
    /// `durability = "fsync"`: the offsets and transaction logs fsync every write.
    pub durable_internal_logs: bool,
    /// Fetches send records from their segment files: with `sendfile` on plaintext
    /// connections, read a megabyte at a time as they are written over TLS (see
    /// `protocol/pieces.rs`).
    pub fetch_sendfile: bool,
    pub groups: crate::group::state::GroupConfig,
    /// Connections and response sizes (see `limits.rs`).
    pub limits: crate::limits::Limits,
    /// SASL mechanisms, re-authentication and super users (see `auth/`).
    pub auth: crate::auth::AuthConfig,
}

impl BrokerConfig {
    /// A broker on `data_dir` with every other setting at its default (tests, fuzzing).
    pub fn with_defaults(data_dir: PathBuf) -> BrokerConfig {
        BrokerConfig {
            data_dir,
            node_id: 1,
            auto_create_topics: true,
            default_partitions: 1,
            defaults: Defaults::default(),
            retention_check_ms: 1000,
            cleaner_backoff_ms: 1000,
            cleaner_threads: 1,
            cleaner_dedupe_buffer_bytes: 1 << 20,
            cleaner_io_bytes_per_sec: None,
            transaction_version: 2,
            durable_internal_logs: false,
            fetch_sendfile: true,
            groups: Default::default(),
            limits: Default::default(),
            auth: Default::default(),
        }
    }
}

/// Traffic counters of one topic, exported as metrics.
#[derive(Default)]
pub struct TopicStats {
    pub bytes_in: AtomicU64,
    pub records_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub records_out: AtomicU64,
}

pub struct Partition {
    pub index: i32,
    log: Mutex<PartitionLog>,
    /// Signalled after every change (see `appended`), for readers that wait on one
    /// partition (plugin tasks, small fetches) and should not wake for every append
    /// anywhere. Only the signal counts; the count to compare is `changes`.
    appends: watch::Sender<()>,
    /// See [`Partition::changes`]: an atomic, readable without the watch's lock.
    changes: std::sync::atomic::AtomicU64,
    /// The topic's own signal, bumped after every append to any of its partitions (see
    /// [`Topic::subscribe_appends`]).
    topic_appends: Arc<watch::Sender<()>>,
    /// Durable mode's fsyncs (see `durable.rs`).
    sync: durable::SyncGate,
    /// Held by a DeleteRecords for its whole length.
    deleting: Mutex<()>,
}

/// A partition's log and the state derived from it, kept under one lock so they never
/// disagree.
struct PartitionLog {
    log: Log,
    producers: ProducerStates,
    /// `max_producer_ids_per_partition` (see `limits`).
    max_producers: usize,
}

impl std::ops::Deref for PartitionLog {
    type Target = Log;
    fn deref(&self) -> &Log {
        &self.log
    }
}
impl std::ops::DerefMut for PartitionLog {
    fn deref_mut(&mut self) -> &mut Log {
        &mut self.log
    }
}

/// Producer ids idle longer than this are forgotten (Kafka's `producer.id.expiration.ms`).
const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 3600 * 1000;
const SNAPSHOT_SUFFIX: &str = ".producers";
/// Written by a clean shutdown once every log is fsynced; removed at start.
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

fn producer_batch(h: &batch::BatchHeader) -> ProducerBatch {
    ProducerBatch {
        producer_id: h.producer_id,
        epoch: h.producer_epoch,
        first_seq: h.base_sequence,
        last_offset_delta: h.last_offset_delta,
        transactional: h.is_transactional(),
    }
}

/// If `raw` (a whole control batch) is a transaction marker: whether it commits.
fn marker_of(raw: bytes::Bytes) -> Option<bool> {
    let batch = crate::records::decode_each(raw).ok()?.into_iter().next()?;
    let records = batch.records.ok()?;
    crate::records::txn_marker_commits(records.first()?.key.as_deref()?)
}

impl PartitionLog {
    fn watermarks(&self) -> Watermarks {
        let high = self.log.next_offset();
        let log_start = self.log.log_start_offset();
        Watermarks {
            log_start,
            high,
            // Retention or DeleteRecords may remove the start of an open transaction: the
            // LSO never lies below the log start.
            stable: self
                .producers
                .first_unstable_offset()
                .map_or(high, |f| f.max(log_start)),
        }
    }

    /// Opens the log and rebuilds producer state: the newest snapshot, then the batch headers
    /// written after it (normally only the active segment's).
    fn open(
        dir: &Path,
        config: crate::log::LogConfig,
        clean: bool,
        max_producers: usize,
    ) -> Result<PartitionLog, BrokerError> {
        let log = Log::open_after(dir, config, clean)?;
        let mut snapshots: Vec<(i64, PathBuf)> = disk::list_dir(dir)
            .map_err(io(dir))?
            .into_iter()
            .filter_map(|name| {
                let base = name.strip_suffix(SNAPSHOT_SUFFIX)?.parse::<i64>().ok()?;
                Some((base, dir.join(name)))
            })
            .collect();
        snapshots.sort();
        // Snapshots past the end describe batches recovery cut off. They go, durably, before
        // anything is appended: once the log grew past them again, a stale one would be
        // taken for the state of different batches (as Kafka deletes them on truncation).
        let end = snapshots.partition_point(|(base, _)| *base <= log.next_offset());
        if end < snapshots.len() {
            for (_, path) in snapshots.drain(end..) {
                tracing::warn!(path = %path.display(), "deleting a producer snapshot past the end of the log");
                disk::remove_file(&path).map_err(io(&path))?;
            }
            disk::sync_dir(dir).map_err(io(dir))?;
        }
        let mut producers = ProducerStates::default();
        let mut from = log.log_start_offset();
        while let Some((base, path)) = snapshots.pop() {
            match disk::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<ProducerStates>(&b).ok())
            {
                Some(p) => {
                    producers = p;
                    from = base;
                    break;
                }
                None => {
                    tracing::warn!(path = %path.display(), "unreadable producer snapshot: ignored")
                }
            }
        }
        let now = now_ms();
        log.scan_headers(from, |h, marker| match marker {
            Some(raw) => {
                if let Some(commit) = marker_of(raw) {
                    producers.apply_marker(h.producer_id, h.producer_epoch, commit, h.base_offset);
                }
            }
            // Other control batches carry no producer id: `apply` leaves them out.
            None => producers.apply(&producer_batch(h), h.base_offset, now),
        })?;
        // A snapshot may predate a compaction that removed abort markers.
        let cleaned_to = log.cleaner_checkpoint();
        let mut unreadable = None;
        producers.retain_aborted(|a| {
            a.last_offset >= cleaned_to
                || log.control_at(a.last_offset).unwrap_or_else(|e| {
                    unreadable = Some(e);
                    true
                })
        });
        if let Some(e) = unreadable {
            return Err(e.into());
        }
        producers.cap(max_producers);
        Ok(PartitionLog {
            log,
            producers,
            max_producers,
        })
    }

    /// Writes the producer state as of `base` (a new segment's first offset) and drops
    /// snapshots that are no longer the newest two. The state is captured here; the file is
    /// written by the log's background flusher, since its fsyncs can take a hundred
    /// milliseconds right after a segment roll and no produce request should wait for them.
    fn snapshot(&mut self, base: i64) {
        let log_start = self.log.log_start_offset();
        self.producers
            .expire(now_ms(), PRODUCER_ID_EXPIRATION_MS, log_start);
        let dir = self.log.dir().to_path_buf();
        let bytes = match serde_json::to_vec(&self.producers) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "producer snapshot failed");
                return;
            }
        };
        crate::log::flush::in_background(move || write_producer_snapshot(&dir, base, &bytes));
    }

    /// Appends validated batches, applying idempotent-producer rules batch by batch.
    fn append_checked(
        &mut self,
        records: &[u8],
        batches: &[(usize, batch::BatchHeader)],
    ) -> Result<Appended, AppendError> {
        // Refuse the whole request if any batch is refused, before writing any of it.
        self.producers
            .check_all(batches.iter().map(|(_, h)| producer_batch(h)))?;
        let now = now_ms();
        let mut first = None;
        let mut last = self.log.next_offset() - 1;
        for (pos, h) in batches {
            let pb = producer_batch(h);
            match self.producers.check(&pb) {
                Verdict::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    tracing::debug!(
                        producer_id = pb.producer_id,
                        seq = pb.first_seq,
                        "duplicate batch acknowledged without writing"
                    );
                    first.get_or_insert(base_offset);
                    last = last_offset;
                }
                _ => {
                    let (at, rolled) =
                        self.log.append_batch(&records[*pos..*pos + h.size], h, 0)?;
                    if let Some(base) = rolled {
                        self.snapshot(base);
                    }
                    self.producers.apply(&pb, at.base_offset, now);
                    first.get_or_insert(at.base_offset);
                    last = at.last_offset;
                }
            }
        }
        let forgotten = self.producers.cap(self.max_producers);
        if forgotten > 0 {
            crate::limits::producer_ids_forgotten(forgotten, self.log.dir());
        }
        Ok(Appended {
            base_offset: first.unwrap_or(last + 1),
            last_offset: last,
        })
    }
}

/// A topic as of now. Adding partitions publishes a new `Topic` that shares every part of the
/// old one (partitions, config, counters), so holders of the old value keep working.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    config: Arc<RwLock<TopicConfig>>,
    /// What the produce path needs from the config, kept apart so it costs no lock or clone.
    produce_limits: Arc<ProduceLimits>,
    dir: PathBuf,
    pub stats: Arc<TopicStats>,
    /// Bumped after every append to any partition (and when the topic is deleted):
    /// what a fetch parked on many partitions waits on, one signal per topic rather than one
    /// per partition. Shared with the partitions, and kept when the topic grows.
    appends: Arc<watch::Sender<()>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TopicMeta {
    id: Uuid,
    partitions: i32,
    config: TopicConfig,
}

struct ProduceLimits {
    max_message_bytes: std::sync::atomic::AtomicUsize,
    log_append_time: std::sync::atomic::AtomicBool,
    compacted: std::sync::atomic::AtomicBool,
    /// `message.timestamp.before/after.max.ms`, `i64::MAX` for no bound.
    timestamp_before_ms: std::sync::atomic::AtomicI64,
    timestamp_after_ms: std::sync::atomic::AtomicI64,
    /// `compression.type` as a codec number; [`KEEP_CODEC`] for `producer`.
    target_codec: std::sync::atomic::AtomicU8,
    /// Its level; `i32::MIN` for the codec's default.
    target_level: std::sync::atomic::AtomicI32,
    /// `flush.ms` is set: the background flush looks at this topic's partitions.
    timed_flush: std::sync::atomic::AtomicBool,
}

/// [`ProduceLimits::target_codec`] when batches are kept as the producer compressed them.
const KEEP_CODEC: u8 = u8::MAX;

impl Default for ProduceLimits {
    fn default() -> Self {
        use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize};
        ProduceLimits {
            max_message_bytes: AtomicUsize::new(0),
            log_append_time: AtomicBool::new(false),
            compacted: AtomicBool::new(false),
            timestamp_before_ms: AtomicI64::new(i64::MAX),
            timestamp_after_ms: AtomicI64::new(i64::MAX),
            target_codec: std::sync::atomic::AtomicU8::new(KEEP_CODEC),
            target_level: std::sync::atomic::AtomicI32::new(i32::MIN),
            timed_flush: AtomicBool::new(false),
        }
    }
}

impl ProduceLimits {
    fn set(&self, c: &TopicConfig, d: &Defaults) {
        use std::sync::atomic::Ordering::Relaxed;
        self.max_message_bytes
            .store(c.max_message_bytes(d), Relaxed);
        self.log_append_time.store(c.log_append_time(d), Relaxed);
        self.compacted.store(c.compacted(d), Relaxed);
        let target = c.target_compression(d);
        self.target_level
            .store(target.and_then(|(_, l)| l).unwrap_or(i32::MIN), Relaxed);
        self.target_codec
            .store(target.map_or(KEEP_CODEC, |(c, _)| c as u8), Relaxed);
        let bounds = c.timestamp_bounds(d);
        self.timestamp_before_ms
            .store(bounds.before_ms.unwrap_or(i64::MAX), Relaxed);
        self.timestamp_after_ms
            .store(bounds.after_ms.unwrap_or(i64::MAX), Relaxed);
        self.timed_flush
            .store(c.log_config(d).flush_ms < i64::MAX, Relaxed);
    }
}

/// Offsets of a partition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub log_start: i64,
    pub high: i64,
    /// The last stable offset: the first offset of the oldest open transaction, or `high`.
    pub stable: i64,
}

/// The config file's defaults for the cleaner (`log_cleaner_backoff_ms`,
/// `log_cleaner_dedupe_buffer_size`, `log_cleaner_threads`), which DescribeConfigs reports as
/// the built-in ones.
pub const DEFAULT_CLEANER_BACKOFF_MS: u64 = 15_000;
pub const DEFAULT_CLEANER_DEDUPE_BYTES: usize = 64 << 20;
/// Kafka's default `log.cleaner.threads`, the file's `log_cleaner_threads` when unset.
pub const DEFAULT_CLEANER_THREADS: usize = 1;

/// The most cleaner threads: each holds a key map and a partition's worth of I/O.
pub const MAX_CLEANER_THREADS: usize = 64;

/// The log cleaner's shortest pause. Kafka takes a `log.cleaner.backoff.ms` of 0; below this
/// a pass over logs with nothing to clean would keep a core busy.
pub const MIN_CLEANER_PAUSE_MS: u64 = 10;

pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Bumped after every append, so long-polling fetches wake up and look again.
    appended: watch::Sender<()>,
    pub metrics: Metrics,
    /// Admission of connections and the caps on responses (see `limits.rs`).
    pub limits: Arc<crate::limits::Connections>,
    /// SCRAM credentials (also what SASL/PLAIN checks).
    pub users: crate::auth::users::Users,
    /// ACLs and the authorizer (see `auth/acl.rs`).
    pub acls: crate::auth::acl::Acls,
    /// Client quotas (see `limits/quotas.rs`).
    pub quotas: crate::limits::quotas::Quotas,
    pub producer_ids: producer_ids::ProducerIds,
    pub groups: crate::group::Coordinator,
    pub txns: crate::txn::Coordinator,
    /// Consumers' fetch sessions (KIP-227, see `protocol/fetch_session.rs`).
    pub fetch_sessions: crate::protocol::fetch_session::Sessions,
    /// Produce throttling (ms) per topic, set while a pipeline reading the topic lags beyond
    /// its `max_lag`: Kafka's quota mechanism, used for back pressure.
    throttle: RwLock<std::collections::HashMap<String, u32>>,
    /// Topics whose files are being created (see [`Broker::create_topic`]).
    creating: Mutex<std::collections::HashSet<String>>,
    /// Topic defaults changed while running (see `dynamic.rs`). Held while any topic's
    /// effective config is recomputed, so a topic change and a default change never
    /// interleave.
    dynamic: Mutex<dynamic::DynamicConfigs>,
    /// The file's defaults overlaid by the dynamic ones: what topics fall back to.
    defaults: RwLock<Arc<config::Defaults>>,
}

/// `segment.bytes` and `segment.ms` against the broker's floors.
pub fn check_segment_floors(
    c: &LogConfig,
    limits: &crate::limits::Limits,
) -> Result<(), config::ConfigError> {
    for (key, value, floor, setting) in [
        (
            "segment.bytes",
            c.segment_bytes,
            limits.segment_bytes_min,
            "segment_bytes_min",
        ),
        (
            "segment.ms",
            c.segment_ms,
            limits.segment_ms_min,
            "segment_ms_min",
        ),
    ] {
        if value < floor {
            crate::limits::CONFIG_FLOORS_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                key,
                value,
                floor,
                setting,
                "topic config refused: below the broker's floor"
            );
            return Err(config::ConfigError::BelowFloor {
                key,
                value,
                floor,
                setting,
            });
        }
    }
    Ok(())
}

pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn write_producer_snapshot(dir: &Path, base: i64, bytes: &[u8]) {
    if !disk::exists(dir) {
        return; // the partition was deleted meanwhile
    }
    let path = dir.join(format!(
        "{}{SNAPSHOT_SUFFIX}",
        crate::log::segment::file_stem(base)
    ));
    if let Err(e) = write_atomically(&path, bytes) {
        // A lost snapshot costs a longer replay at the next start, never correctness.
        tracing::warn!(path = %path.display(), error = %e, "producer snapshot failed");
        return;
    }
    let mut old: Vec<i64> = disk::list_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|name| name.strip_suffix(SNAPSHOT_SUFFIX)?.parse().ok())
        .collect();
    old.sort_unstable();
    old.reverse();
    for b in old.into_iter().skip(2) {
        let _ = disk::remove_file(&dir.join(format!(
            "{}{SNAPSHOT_SUFFIX}",
            crate::log::segment::file_stem(b)
        )));
    }
}

pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> Result<(), BrokerError> {
    disk::replace(path, data).map_err(io(path))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a log lock is a bug, but the log's own invariants hold between
    // calls, so the data is still consistent: keep serving rather than poisoning every request.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Partition {
    /// Validates and appends the batches of one produce request's `records` field.
    pub fn append(
        &self,
        records: &[u8],
        max_message_bytes: usize,
        log_append_time: Option<i64>,
    ) -> Result<Appended, AppendError> {
        if records.is_empty() {
            return Err(AppendError::Empty);
        }
        // Check sizes before CRCs: an oversized batch is a client's mistake, not corruption.
        let mut at = 0;
        while let Some(size) = batch::framed_size(&records[at..]) {
            if size > max_message_bytes {
                return Err(AppendError::TooLarge {
                    size,
                    max: max_message_bytes,
                });
            }
            at += size;
            if at >= records.len() {
                break;
            }
        }
        let r = match log_append_time {
            None => {
                let batches = batch::split_batches(records)?;
                lock(&self.log).append_checked(records, &batches)
            }
            Some(now) => {
                // The broker stamps the time, which changes bytes under the CRC: a copy.
                let mut owned = records.to_vec();
                let batches = batch::split_batches(&owned)?;
                for (pos, h) in &batches {
                    batch::stamp_log_append_time(&mut owned[*pos..*pos + h.size], now);
                }
                let batches = batch::split_batches(&owned)?;
                lock(&self.log).append_checked(&owned, &batches)
            }
        };
        if r.is_ok() {
            self.appended();
        }
        r
    }

    /// Called after every change to the partition's watermarks (appends and markers, a log
    /// start moved by retention, DeleteRecords or the cleaner, the topic's deletion), once
    /// the log's lock is released.
    fn appended(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.appends.send_replace(());
        self.topic_appends.send_replace(());
    }

    /// How many times the partition's watermarks may have changed since it was opened:
    /// bumped after each change, so a reader that notes it before looking at the log can
    /// tell later, without the log's lock, that nothing moved since (fetch sessions skip
    /// such partitions; parked fetches wait for it to move).
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Changes after every append to this partition.
    pub fn subscribe_appends(&self) -> watch::Receiver<()> {
        self.appends.subscribe()
    }

    /// See [`ProducerStates::next_seq`].
    pub fn producer_next_seq(&self, producer_id: i64) -> Option<i32> {
        lock(&self.log).producers.next_seq(producer_id)
    }

    pub fn watermarks(&self) -> Watermarks {
        lock(&self.log).watermarks()
    }

    /// Appends a transaction marker for `producer_id` and ends its open transaction here.
    /// Returns the marker's offset, or `None` when the producer had no transaction open here
    /// (nothing to end: a partition added to a transaction but never written).
    pub fn write_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<Option<i64>, AppendError> {
        let raw = crate::records::encode_txn_marker(
            producer_id,
            epoch,
            commit,
            coordinator_epoch,
            now_ms(),
        )
        .map_err(|_| AppendError::Empty)?;
        let batches = batch::split_batches(&raw)?;
        let mut log = lock(&self.log);
        if !log.producers.in_transaction(producer_id) {
            return Ok(None);
        }
        if let Some(current) = log.producers.epoch(producer_id).filter(|&c| c > epoch) {
            return Err(AppendError::InvalidProducerEpoch {
                producer_id,
                current,
                got: epoch,
            });
        }
        let Some((_, h)) = batches.first() else {
            return Err(AppendError::Empty);
        };
        let (at, rolled) = log.log.append_batch(&raw, h, 0)?;
        if let Some(base) = rolled {
            log.snapshot(base);
        }
        log.producers
            .apply_marker(producer_id, epoch, commit, at.base_offset);
        drop(log);
        self.appended();
        Ok(Some(at.base_offset))
    }

    /// Whether `producer_id` has a transaction open on this partition.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        lock(&self.log).producers.in_transaction(producer_id)
    }

    /// Open transactions on this partition: (producer id, first offset).
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        lock(&self.log).producers.open_transactions().collect()
    }

    /// Producers this partition remembers: (id, epoch, last sequence, last seen ms).
    pub fn producers(&self) -> Vec<(i64, i16, i32, i64)> {
        lock(&self.log).producers.producers().collect()
    }

    /// Aborted transactions whose records may lie in `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<producers::AbortedTxn> {
        lock(&self.log).producers.aborted_between(from, to)
    }

    pub fn size_bytes(&self) -> u64 {
        lock(&self.log).size_bytes()
    }

    /// DeleteRecords: moves the log start up to `offset` (-1: the high watermark) and returns
    /// the new log start. `None` when `offset` is past the high watermark.
    pub fn delete_records(&self, offset: i64) -> Result<Option<i64>, BrokerError> {
        // One DeleteRecords at a time per partition, so the start file only moves forward;
        // its fsync happens without the log lock, which produces and fetches wait on.
        let _one = lock(&self.deleting);
        let (target, start, dir) = {
            let log = lock(&self.log);
            let high = log.log.next_offset();
            let target = if offset == -1 { high } else { offset };
            if !(0..=high).contains(&target) {
                return Ok(None);
            }
            (
                target,
                log.log.log_start_offset(),
                log.log.dir().to_path_buf(),
            )
        };
        if target <= start {
            return Ok(Some(start));
        }
        crate::log::persist_log_start(&dir, target)?;
        let start = {
            let mut log = lock(&self.log);
            log.log.move_start(target);
            log.log.log_start_offset()
        };
        self.appended();
        Ok(Some(start))
    }

    /// Plans a read at `offset`; the bytes are read after the lock is released.
    pub fn plan_read(&self, offset: i64) -> Result<(Watermarks, Option<ReadSlice>), LogError> {
        let log = lock(&self.log);
        let wm = log.watermarks();
        if offset < wm.log_start || offset >= wm.high {
            return Ok((wm, None));
        }
        Ok((wm, log.plan_read(offset)?))
    }

    /// The earliest record stamped at or after `ts`: (offset, its timestamp).
    pub fn offset_for_time(&self, ts: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        let found = lock(&self.log).plan_time_lookup(ts)?;
        let Some((slice, _base)) = found else {
            return Ok(None);
        };
        let data = slice
            .read(usize::MAX, true)
            .map_err(io(Path::new("segment")))?;
        let records =
            crate::records::decode_batches(data).map_err(|e| BrokerError::CorruptMetadata {
                path: PathBuf::from("segment"),
                why: e.to_string(),
            })?;
        // Records below a DeleteRecords start may share the found batch: skip them.
        let start = self.watermarks().log_start;
        Ok(records
            .iter()
            .find(|r| r.timestamp >= ts && r.offset >= start)
            .map(|r| (r.offset, r.timestamp)))
    }

    pub fn max_timestamp(&self) -> i64 {
        lock(&self.log).max_timestamp()
    }

    fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let deleted = lock(&self.log).apply_retention(now_ms)?;
        if deleted > 0 {
            self.appended();
        }
        Ok(deleted)
    }

    /// One compaction pass (see `log/cleaner.rs`): planned and swapped under the lock, the
    /// reading and rewriting done without it, so produces and fetches never wait on it.
    /// Returns (bytes before, bytes after) when segments were replaced.
    pub fn clean(
        &self,
        cfg: &crate::log::cleaner::CleanConfig,
    ) -> Result<Option<(u64, u64)>, LogError> {
        self.clean_at(cfg, now_ms())
    }

    fn clean_at(
        &self,
        cfg: &crate::log::cleaner::CleanConfig,
        now: i64,
    ) -> Result<Option<(u64, u64)>, LogError> {
        let (plan, aborted) = {
            let log = lock(&self.log);
            let first_dirty = log.log.cleaner_checkpoint();
            let stable = log.watermarks().stable;
            let Some(plan) = log.log.clean_plan(first_dirty, stable, now, cfg)? else {
                return Ok(None);
            };
            let aborted = log
                .producers
                .aborted_between(0, plan.end)
                .into_iter()
                .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                .collect();
            (plan, aborted)
        };
        let Some(cleaned) = crate::log::cleaner::clean(&plan, &aborted, now, cfg)? else {
            return Ok(None);
        };
        let mut log = lock(&self.log);
        let swapped = log.log.swap_cleaned(&cleaned)?;
        if swapped && !cleaned.dropped_markers.is_empty() {
            let gone = &cleaned.dropped_markers;
            log.producers
                .retain_aborted(|a| !gone.contains(&(a.producer_id, a.last_offset)));
        }
        drop(log);
        if swapped {
            self.appended();
        }
        Ok(swapped.then_some((cleaned.bytes_before, cleaned.bytes_after)))
    }

    fn set_log_config(&self, c: crate::log::LogConfig) {
        lock(&self.log).set_config(c);
    }
}

impl Topic {
    /// Changes after every append to any of the topic's partitions, and when the topic is
    /// deleted. Which partition moved, [`Partition::changes`] tells.
    pub fn subscribe_appends(&self) -> watch::Receiver<()> {
        self.appends.subscribe()
    }

    /// Puts `config` over `defaults` into force in this topic's logs and produce limits.
    fn apply_config(&self, config: &TopicConfig, defaults: &config::Defaults) {
        let lc = config.log_config(defaults);
        for p in &self.partitions {
            p.set_log_config(lc.clone());
        }
        self.produce_limits.set(config, defaults);
    }

    pub fn config(&self) -> TopicConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `max.message.bytes` of this topic.
    pub fn max_message_bytes(&self) -> usize {
        self.produce_limits
            .max_message_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `cleanup.policy` includes `compact` (keyless records are refused).
    pub fn compacted(&self) -> bool {
        self.produce_limits
            .compacted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The codec (and level) produced batches are recompressed to (`compression.type`), if
    /// any.
    pub fn target_compression(&self) -> Option<(crate::records::Compression, Option<i32>)> {
        use std::sync::atomic::Ordering::Relaxed;
        let codec = self.produce_limits.target_codec.load(Relaxed);
        let level = Some(self.produce_limits.target_level.load(Relaxed)).filter(|&l| l != i32::MIN);
        // KEEP_CODEC is no codec number.
        let codec = crate::records::codec_of(i16::from(codec)).ok()?;
        Some((codec, level))
    }

    /// How far from the broker's clock a record's create time may be.
    pub fn timestamp_bounds(&self) -> config::TimestampBounds {
        use std::sync::atomic::Ordering::Relaxed;
        let bound = |v: i64| Some(v).filter(|&v| v < i64::MAX);
        config::TimestampBounds {
            before_ms: bound(self.produce_limits.timestamp_before_ms.load(Relaxed)),
            after_ms: bound(self.produce_limits.timestamp_after_ms.load(Relaxed)),
        }
    }

    /// Whether the broker stamps batches (`message.timestamp.type=LogAppendTime`).
    pub fn log_append_time(&self) -> bool {
        self.produce_limits
            .log_append_time
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Broker {
    /// Opens the data directory, recovering every partition's log.
    pub fn open(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let topics_dir = config.data_dir.join("topics");
        disk::create_dir_all_durably(&topics_dir).map_err(io(&topics_dir))?;
        let trash = config.data_dir.join("trash");
        if disk::exists(&trash) {
            let _ = disk::remove_dir_all(&trash);
        }
        let cluster_file = config.data_dir.join("cluster.json");
        let cluster_id = match disk::read(&cluster_file) {
            Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v.get("cluster_id")?.as_str().map(str::to_string))
                .ok_or_else(|| BrokerError::CorruptMetadata {
                    path: cluster_file.clone(),
                    why: "no cluster_id".into(),
                })?,
            Err(_) => {
                let id = Uuid::new_v4().simple().to_string();
                let body = serde_json::json!({ "cluster_id": id }).to_string();
                write_atomically(&cluster_file, body.as_bytes())?;
                id
            }
        };
        let marker = config.data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = disk::exists(&marker);
        if clean {
            tracing::info!("clean shutdown last time: active segments are trusted without a scan");
        }
        let dynamic: dynamic::DynamicConfigs =
            crate::disk::json::load(&config.data_dir.join(dynamic::FILE))?;
        let defaults = dynamic.over(&config.defaults);
        let mut topics = BTreeMap::new();
        let mut names: Vec<_> = disk::list_dir(&topics_dir)
            .map_err(io(&topics_dir))?
            .into_iter()
            .filter(|n| valid_topic_name(n))
            .collect();
        names.sort();
        for name in names {
            let dir = topics_dir.join(&name);
            let meta_path = dir.join("topic.json");
            let Ok(raw) = disk::read(&meta_path) else {
                tracing::warn!(dir = %dir.display(), "topic directory without topic.json: ignored");
                continue;
            };
            let meta: TopicMeta =
                serde_json::from_slice(&raw).map_err(|e| BrokerError::CorruptMetadata {
                    path: meta_path.clone(),
                    why: e.to_string(),
                })?;
            let topic = Self::open_topic(&config, &defaults, name.clone(), dir, meta, clean)?;
            topics.insert(name, Arc::new(topic));
        }
        if clean {
            // From now on a crash must be followed by a full check: the marker goes before
            // anything is written.
            disk::remove_file(&marker).map_err(io(&marker))?;
            disk::sync_dir(&config.data_dir).map_err(io(&config.data_dir))?;
        }
        tracing::info!(
            topics = topics.len(),
            data_dir = %config.data_dir.display(),
            "broker state loaded"
        );
        let (appended, _) = watch::channel(());
        let producer_ids = producer_ids::ProducerIds::open(&config.data_dir)?;
        let groups = crate::group::Coordinator::open(
            &config.data_dir.join("internal").join("consumer-offsets"),
            config.groups.clone(),
            config.durable_internal_logs,
        )?
        .keep_configs_in(config.data_dir.join(crate::group::configs::FILE))?;
        let txns = crate::txn::Coordinator::open(
            &config.data_dir.join("internal").join("transactions"),
            config.durable_internal_logs,
        )?;
        let users = crate::auth::users::Users::open(&config.data_dir)?;
        let acls = crate::auth::acl::Acls::open(
            &config.data_dir,
            config.auth.acl.clone(),
            config.auth.super_users.clone(),
        )?;
        let quotas = crate::limits::quotas::Quotas::open(&config.data_dir)?;
        let broker = Broker {
            users,
            acls,
            quotas,
            producer_ids,
            groups,
            txns,
            fetch_sessions: Default::default(),
            limits: crate::limits::Connections::new(config.limits.clone()),
            config,
            cluster_id,
            topics: RwLock::new(topics),
            appended,
            metrics: Metrics::default(),
            throttle: RwLock::default(),
            creating: Mutex::default(),
            dynamic: Mutex::new(dynamic),
            defaults: RwLock::new(Arc::new(defaults)),
        };
        broker
            .groups
            .forget_missing_topics(|t| broker.topic(t).is_some());
        // Transactions a crash left between their two phases are finished before any client
        // can read their partitions.
        broker.txns.tick(&broker);
        Ok(broker)
    }

    fn open_topic(
        config: &BrokerConfig,
        defaults: &config::Defaults,
        name: String,
        dir: PathBuf,
        meta: TopicMeta,
        clean: bool,
    ) -> Result<Topic, BrokerError> {
        let log_config = meta.config.log_config(defaults);
        let appends = Arc::new(watch::channel(()).0);
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            partitions.push(Arc::new(Self::open_partition(
                &dir,
                p,
                &log_config,
                clean,
                &config.limits,
                &appends,
            )?));
        }
        let produce_limits = ProduceLimits::default();
        produce_limits.set(&meta.config, defaults);
        Ok(Topic {
            name,
            id: meta.id,
            partitions,
            config: Arc::new(RwLock::new(meta.config)),
            produce_limits: Arc::new(produce_limits),
            dir,
            stats: Arc::new(TopicStats::default()),
            appends,
        })
    }

    fn open_partition(
        dir: &Path,
        index: i32,
        log_config: &crate::log::LogConfig,
        clean: bool,
        limits: &crate::limits::Limits,
        topic_appends: &Arc<watch::Sender<()>>,
    ) -> Result<Partition, BrokerError> {
        let log = PartitionLog::open(
            &dir.join(index.to_string()),
            log_config.clone(),
            clean,
            limits.max_producer_ids_per_partition,
        )?;
        let durable = log.log.synced_offset();
        Ok(Partition {
            index,
            log: Mutex::new(log),
            appends: watch::channel(()).0,
            changes: std::sync::atomic::AtomicU64::new(0),
            topic_appends: topic_appends.clone(),
            sync: durable::SyncGate::new(durable),
            deleting: Mutex::new(()),
        })
    }

    /// Grows a topic to `count` partitions (Kafka never shrinks one). With `validate_only`,
    /// checks and changes nothing.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let old = topics
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        let have = old.partitions.len() as i32;
        if count <= have || count > 10_000 {
            return Err(BrokerError::InvalidPartitionIncrease { have, asked: count });
        }
        if validate_only {
            return Ok(());
        }
        let config = old.config();
        let log_config = config.log_config(&self.defaults());
        let mut partitions = old.partitions.clone();
        for p in have..count {
            partitions.push(Arc::new(Self::open_partition(
                &old.dir,
                p,
                &log_config,
                false,
                &self.config.limits,
                &old.appends,
            )?));
        }
        let meta = TopicMeta {
            id: old.id,
            partitions: count,
            config,
        };
        let body = serde_json::to_vec_pretty(&meta).map_err(|e| BrokerError::CorruptMetadata {
            path: old.dir.clone(),
            why: e.to_string(),
        })?;
        write_atomically(&old.dir.join("topic.json"), &body)?;
        topics.insert(
            name.to_string(),
            Arc::new(Topic {
                name: old.name.clone(),
                id: old.id,
                partitions,
                config: old.config.clone(),
                produce_limits: old.produce_limits.clone(),
                dir: old.dir.clone(),
                stats: old.stats.clone(),
                appends: old.appends.clone(),
            }),
        );
        tracing::info!(topic = name, from = have, to = count, "partitions added");
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Whether `principal` may write records into topic `name`: WRITE on it, and for a topic
    /// whose records command the broker (`auth.operator_topics`, the deployments topic: a
    /// manifest names the principal its pipeline acts as) ALTER on the cluster too, so only
    /// operators, who may grant ACLs anyway, deploy. Produce and the plugins' outputs alike.
    pub fn may_write_topic(&self, principal: &str, host: &str, name: &str) -> bool {
        use crate::auth::acl::{Operation, Resource};
        self.acls
            .allowed(principal, host, Operation::Write, Resource::Topic, name)
            && (!self.config.auth.operator_topics.iter().any(|t| t == name)
                || self.acls.allowed(
                    principal,
                    host,
                    Operation::Alter,
                    Resource::Cluster,
                    "kafka-cluster",
                ))
    }

    /// Whether `principal` may create topic `name`: CREATE on the topic or on the cluster, as
    /// Kafka asks of CreateTopics and of auto-creation (Produce, Metadata, a pipeline's
    /// outputs).
    pub fn may_create_topic(&self, principal: &str, host: &str, name: &str) -> bool {
        use crate::auth::acl::{Operation, Resource};
        self.acls
            .allowed(principal, host, Operation::Create, Resource::Topic, name)
            || self.acls.allowed(
                principal,
                host,
                Operation::Create,
                Resource::Cluster,
                "kafka-cluster",
            )
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// Name → (id, partition count) of every topic, for server-side assignors.
    pub fn topic_info(&self) -> crate::group::consumer::TopicInfo {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|t| (t.name.clone(), (t.id, t.partitions.len() as i32)))
            .collect()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Creates a topic; `partitions` of -1 means the broker default. With `validate_only`,
    /// checks everything and changes nothing.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        if !valid_topic_name(name) {
            return Err(BrokerError::InvalidTopicName(name.to_string()));
        }
        let partitions = if partitions == -1 {
            self.config.default_partitions
        } else {
            partitions
        };
        if !(1..=10_000).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(partitions));
        }
        if self.topic(name).is_some() {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        self.check_floors(&config)?;
        let meta = TopicMeta {
            id: Uuid::new_v4(),
            partitions,
            config,
        };
        let dir = self.config.data_dir.join("topics").join(name);
        if validate_only {
            return Ok(Arc::new(Topic {
                name: name.to_string(),
                id: meta.id,
                partitions: Vec::new(),
                config: Arc::new(RwLock::new(meta.config)),
                produce_limits: Arc::default(),
                dir,
                stats: Arc::default(),
                appends: Arc::new(watch::channel(()).0),
            }));
        }
        // The files (thousands, each fsynced, for a large topic) are made without the topics
        // lock, which every produce and metadata request takes; the name is reserved so that
        // a concurrent creation of the same topic is refused rather than sharing the files.
        if !lock(&self.creating).insert(name.to_string()) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let made = (|| {
            if self.topic(name).is_some() {
                return Err(BrokerError::TopicExists(name.to_string()));
            }
            disk::create_dir_all(&dir).map_err(io(&dir))?;
            let body =
                serde_json::to_vec_pretty(&meta).map_err(|e| BrokerError::CorruptMetadata {
                    path: dir.clone(),
                    why: e.to_string(),
                })?;
            let topic = Self::open_topic(
                &self.config,
                &self.defaults(),
                name.to_string(),
                dir.clone(),
                meta,
                false,
            )?;
            write_atomically(&dir.join("topic.json"), &body)?;
            // The topic directory's own entry, so a power cut cannot lose an acknowledged
            // creation (topic.json's write synced the topic directory itself).
            if let Some(parent) = dir.parent() {
                disk::sync_dir(parent).map_err(io(parent))?;
            }
            let topic = Arc::new(topic);
            self.topics
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), topic.clone());
            Ok(topic)
        })();
        if matches!(&made, Err(e) if !matches!(e, BrokerError::TopicExists(_))) {
            // Half-made files would be picked up by the next creation of this name.
            let _ = disk::remove_dir_all(&dir);
        }
        lock(&self.creating).remove(name);
        let topic = made?;
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Looks a topic up, creating it with defaults when auto-creation is on.
    pub fn topic_or_create(&self, name: &str, allow_create: bool) -> Option<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Some(t);
        }
        if !(allow_create && self.config.auto_create_topics) {
            return None;
        }
        match self.create_topic(name, -1, TopicConfig::default(), false) {
            Ok(t) => Some(t),
            Err(BrokerError::TopicExists(_)) => self.topic(name),
            Err(e) => {
                tracing::warn!(topic = name, error = %e, "auto-creation failed");
                None
            }
        }
    }

    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let topic = self
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        // Readers parked on it look again, and find it gone.
        for p in &topic.partitions {
            p.appended();
        }
        let trash = self.config.data_dir.join("trash");
        disk::create_dir_all_durably(&trash).map_err(io(&trash))?;
        let target = trash.join(format!("{}-{}", name, topic.id.simple()));
        // The rename is the commit point: after it the topic is gone even if we crash before
        // the files are removed (start-up empties the trash). Durable once both directories
        // are synced, before the deletion is acknowledged.
        disk::rename(&topic.dir, &target).map_err(io(&topic.dir))?;
        if let Some(topics) = topic.dir.parent() {
            disk::sync_dir(topics).map_err(io(topics))?;
        }
        disk::sync_dir(&trash).map_err(io(&trash))?;
        std::thread::spawn(move || {
            if let Err(e) = disk::remove_dir_all(&target) {
                tracing::warn!(path = %target.display(), %e, "could not remove deleted topic");
            }
        });
        tracing::info!(topic = name, "topic deleted");
        self.groups.forget_topic(name);
        Ok(())
    }

    /// The floors on segment size and age (see `limits.rs`), for a topic's effective config.
    pub fn check_floors(&self, config: &TopicConfig) -> Result<(), BrokerError> {
        check_segment_floors(&config.log_config(&self.defaults()), &self.config.limits)
            .map_err(BrokerError::Config)
    }

    /// What topics fall back to: the config file's defaults overlaid by the dynamic ones.
    pub fn defaults(&self) -> Arc<config::Defaults> {
        self.defaults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The dynamic broker configs (topic keys), at both levels.
    pub fn dynamic_configs(&self) -> dynamic::DynamicConfigs {
        lock(&self.dynamic).clone()
    }

    /// How long the log cleaner rests between passes: `log.cleaner.backoff.ms` if set
    /// while the broker runs, else the config file's `log_cleaner_backoff_ms`, never under
    /// [`MIN_CLEANER_PAUSE_MS`] whichever it is.
    pub fn cleaner_backoff_ms(&self) -> u64 {
        lock(&self.dynamic)
            .broker_own("log.cleaner.backoff.ms")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(self.config.cleaner_backoff_ms)
            .max(MIN_CLEANER_PAUSE_MS)
    }

    /// How many compacted partitions the log cleaner cleans at once: `log.cleaner.threads`
    /// if set while the broker runs, else the config file's `log_cleaner_threads`.
    pub fn cleaner_threads(&self) -> usize {
        self.cleaner_threads_in(&lock(&self.dynamic))
            .clamp(1, MAX_CLEANER_THREADS)
    }

    /// The cleaner's thread count as `d` sets it, unbounded (what Kafka's steps compare).
    fn cleaner_threads_in(&self, d: &dynamic::DynamicConfigs) -> usize {
        d.broker_own("log.cleaner.threads")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(self.config.cleaner_threads)
    }

    /// Changes the dynamic broker configs (`change` gets a copy; all of it applies or none),
    /// persists them and applies the new defaults to every topic's logs.
    pub fn alter_dynamic_configs(
        &self,
        validate_only: bool,
        change: impl FnOnce(&mut dynamic::DynamicConfigs) -> Result<(), config::ConfigError>,
    ) -> Result<(), BrokerError> {
        let mut current = lock(&self.dynamic);
        let mut next = current.clone();
        change(&mut next).map_err(BrokerError::Config)?;
        // Kafka checks the cleaner's thread count as it results from the whole change
        // (set, deleted, or a level replaced), against the count in force.
        let (was, wanted) = (
            self.cleaner_threads_in(&current),
            self.cleaner_threads_in(&next),
        );
        if wanted != was && (wanted < was / 2 || wanted > was.saturating_mul(2)) {
            return Err(BrokerError::Config(
                config::ConfigError::CleanerThreadsStep {
                    current: was,
                    wanted,
                },
            ));
        }
        let defaults = next.over(&self.config.defaults);
        check_segment_floors(
            &TopicConfig::default().log_config(&defaults),
            &self.config.limits,
        )
        .map_err(BrokerError::Config)?;
        if validate_only || next == *current {
            return Ok(());
        }
        crate::disk::json::store(&self.config.data_dir.join(dynamic::FILE), &next)?;
        *self.defaults.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(defaults.clone());
        for topic in self.topics() {
            topic.apply_config(&topic.config(), &defaults);
        }
        tracing::info!(cluster = ?next.cluster, broker = ?next.broker, "dynamic broker configs changed");
        *current = next;
        Ok(())
    }

    /// Replaces a topic's config, persisting it and applying it to its logs.
    pub fn set_topic_config(&self, name: &str, config: TopicConfig) -> Result<(), BrokerError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        // Not while the defaults change under it (see `dynamic`).
        let _defaults_stay = lock(&self.dynamic);
        self.check_floors(&config)?;
        let meta = TopicMeta {
            id: topic.id,
            partitions: topic.partitions.len() as i32,
            config: config.clone(),
        };
        let body = serde_json::to_vec_pretty(&meta).map_err(|e| BrokerError::CorruptMetadata {
            path: topic.dir.clone(),
            why: e.to_string(),
        })?;
        write_atomically(&topic.dir.join("topic.json"), &body)?;
        topic.apply_config(&config, &self.defaults());
        *topic.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        tracing::info!(topic = name, "topic config changed");
        Ok(())
    }

    /// How long to hold back produce responses for `topic`, in ms (0: not throttled).
    pub fn produce_throttle_ms(&self, topic: &str) -> u32 {
        let t = self.throttle.read().unwrap_or_else(|p| p.into_inner());
        if t.is_empty() {
            return 0;
        }
        t.get(topic).copied().unwrap_or(0)
    }

    /// Replaces the set of throttled topics.
    pub fn set_produce_throttles(&self, throttles: std::collections::HashMap<String, u32>) {
        let mut t = self.throttle.write().unwrap_or_else(|p| p.into_inner());
        for (topic, ms) in &throttles {
            if !t.contains_key(topic) {
                tracing::info!(topic = %topic, throttle_ms = ms, "producers throttled: a pipeline reading this topic is behind its max_lag");
            }
        }
        for topic in t.keys() {
            if !throttles.contains_key(topic) {
                tracing::info!(topic = %topic, "producer throttling lifted: pipelines caught up");
            }
        }
        *t = throttles;
    }

    pub fn notify_appended(&self) {
        self.appended.send_replace(());
    }

    pub fn subscribe_appends(&self) -> watch::Receiver<()> {
        self.appended.subscribe()
    }

    /// One log-cleaner pass over the internal logs and every partition of every compacted
    /// topic.
    pub fn clean_logs(&self) {
        self.groups.compact_offsets();
        self.txns.compact_log();
        let defaults = self.defaults();
        let mut work = Vec::new();
        for t in self.topics() {
            let Some(cfg) = t.config().clean_config(&defaults) else {
                continue;
            };
            for p in &t.partitions {
                work.push((t.clone(), p.clone(), cfg.clone()));
            }
        }
        // Kafka's dedupe buffer and I/O limit are the cleaner's in total, shared by the
        // threads that run (0 is no limit, as in the file).
        let threads = self.cleaner_threads().min(work.len()).max(1);
        let map_keys = (self.config.cleaner_dedupe_buffer_bytes
            / threads
            / crate::log::cleaner::MAP_BYTES_PER_KEY)
            .max(1);
        let io = self
            .config
            .cleaner_io_bytes_per_sec
            .filter(|&r| r > 0)
            .map(|r| (r / threads as u64).max(1));
        for (_, _, cfg) in &mut work {
            cfg.map_keys = map_keys;
            cfg.io_bytes_per_sec = io;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let clean = || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((t, p, cfg)) = work.get(i) else {
                return;
            };
            match p.clean(cfg) {
                Ok(Some((before, after))) => tracing::info!(
                    topic = %t.name,
                    partition = p.index,
                    bytes_before = before,
                    bytes_after = after,
                    "compacted"
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(topic = %t.name, partition = p.index, error = %e, "compaction failed")
                }
            }
        };
        let helpers = threads - 1;
        std::thread::scope(|s| {
            for _ in 0..helpers {
                s.spawn(clean);
            }
            clean();
        });
    }

    /// Clean shutdown: every partition's log is fsynced and closed to writes, and a marker
    /// says so, so that the next start trusts active segments without a CRC scan (as Kafka's
    /// `.kafka_cleanshutdown`). No marker if any log had a failed flush.
    pub fn close_cleanly(&self) {
        let started = std::time::Instant::now();
        // Queued segment flushes first: they would write older recovery points later.
        crate::log::flush::wait_idle();
        let mut trusted = true;
        let mut partitions = 0;
        for t in self.topics() {
            for p in &t.partitions {
                partitions += 1;
                match lock(&p.log).log.close_cleanly() {
                    Ok(ok) => trusted &= ok,
                    Err(e) => {
                        tracing::warn!(topic = %t.name, partition = p.index, error = %e, "closing a log failed: it is checked at the next start");
                        trusted = false;
                    }
                }
            }
        }
        if trusted {
            let marker = self.config.data_dir.join(CLEAN_SHUTDOWN_FILE);
            if let Err(e) = write_atomically(&marker, b"") {
                tracing::warn!(error = %e, "cannot write the clean-shutdown marker");
            }
        }
        tracing::info!(
            partitions,
            trusted,
            ms = started.elapsed().as_millis() as u64,
            "logs closed"
        );
    }

    /// `flush.ms`: starts a background fsync of every partition whose records have waited
    /// that long.
    pub fn flush_overdue(&self) {
        let timed = |t: &Topic| {
            t.produce_limits
                .timed_flush
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        for t in self.topics().iter().filter(|t| timed(t)) {
            for p in &t.partitions {
                p.flush_if_overdue();
            }
        }
    }

    /// One retention pass over every partition.
    pub fn apply_retention(&self) {
        let now = now_ms();
        for t in self.topics() {
            for p in &t.partitions {
                if let Err(e) = p.apply_retention(now) {
                    tracing::warn!(topic = %t.name, partition = p.index, error = %e, "retention failed");
                }
            }
        }
    }
}

/// What unit tests across the crate need: a broker on a directory, transactional batches.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::records::{encode_batch_as, Compression, ProducerFields, Record};

    /// A broker whose topics may have tiny segments (the tests roll them on purpose).
    pub fn open(dir: &Path) -> Broker {
        let mut config = BrokerConfig::with_defaults(dir.to_path_buf());
        config.limits.segment_bytes_min = 100;
        config.limits.segment_ms_min = 1;
        Broker::open(config).unwrap()
    }

    /// A plain (non-idempotent) batch of `n` empty records.
    pub fn plain_batch(n: usize) -> Vec<u8> {
        let records = vec![Record::default(); n];
        crate::records::encode_batch(&records, Compression::None)
            .unwrap()
            .to_vec()
    }

    /// Produces one transactional record from `pid` at `epoch` (sequence `seq`) to
    /// `topic`-`p`, as the produce path does: only if the coordinator takes it.
    pub fn txn_produce(
        b: &Broker,
        topic: &str,
        p: i32,
        pid: i64,
        epoch: i16,
        seq: i32,
    ) -> Result<(), crate::txn::state::TxnError> {
        let batch = txn_batch(pid, epoch, seq, 1);
        let part = b.topic(topic).unwrap().partitions[p as usize].clone();
        b.txns
            .verify_and(pid, epoch, &(topic.to_string(), p), false, || {
                part.append(&batch, 1 << 20, None)
            })?
            .unwrap();
        Ok(())
    }

    /// A transactional batch of `n` records from `pid` at `epoch`, first sequence `seq`.
    pub fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
        let keys: Vec<Option<String>> = vec![None; n];
        txn_batch_keyed(pid, epoch, seq, &keys)
    }

    /// A transactional batch with one record per key (`None`: keyless).
    pub fn txn_batch_keyed(pid: i64, epoch: i16, seq: i32, keys: &[Option<String>]) -> Vec<u8> {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                key: k.clone().map(bytes::Bytes::from),
                value: Some(bytes::Bytes::from(format!("v{i}"))),
                ..Default::default()
            })
            .collect();
        let b = encode_batch_as(
            &records,
            Compression::None,
            Some(ProducerFields {
                producer_id: pid,
                epoch,
                base_sequence: seq,
            }),
        )
        .unwrap();
        let mut b = b.to_vec();
        b[22] |= 0x10;
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segment_floors_refuse_tiny_segments_at_creation_and_alteration() {
        let dir = tempfile::tempdir().unwrap();
        let b = Broker::open(BrokerConfig::with_defaults(dir.path().to_path_buf())).unwrap();
        let tiny = TopicConfig::from_pairs([("segment.bytes", "1024")]).unwrap();
        let refused =
            || crate::limits::CONFIG_FLOORS_REFUSED.load(std::sync::atomic::Ordering::Relaxed);
        let before = refused();
        let e = b.create_topic("t", 1, tiny.clone(), false).err().unwrap();
        assert!(
            refused() > before,
            "counted in sluice_config_floors_refused_total"
        );
        assert!(e.to_string().contains("segment_bytes_min"), "{e}");
        let fast = TopicConfig::from_pairs([("segment.ms", "10")]).unwrap();
        assert!(b.create_topic("t", 1, fast, false).is_err());
        b.create_topic("t", 1, TopicConfig::default(), false)
            .unwrap();
        assert!(b.set_topic_config("t", tiny).is_err());
        let ok = TopicConfig::from_pairs([("segment.bytes", "2097152")]).unwrap();
        b.set_topic_config("t", ok).unwrap();
    }

    /// A crash after a deletion's rename but before its offsets were forgotten: start-up
    /// forgets them, so a topic created again under the name does not inherit them.
    #[test]
    fn offsets_of_a_topic_missing_at_start_up_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = Broker::open(BrokerConfig::with_defaults(dir.path().to_path_buf())).unwrap();
            for t in ["gone", "kept"] {
                b.create_topic(t, 1, TopicConfig::default(), false).unwrap();
                let entry = (t.to_string(), 0, 42, -1, String::new());
                assert_eq!(b.groups.commit("g", "", -1, vec![entry]), 0);
            }
        }
        // What the deletion's rename does, without the forgetting that follows it.
        let topics = dir.path().join("topics");
        std::fs::rename(topics.join("gone"), dir.path().join("gone-moved")).unwrap();
        let b = Broker::open(BrokerConfig::with_defaults(dir.path().to_path_buf())).unwrap();
        assert!(b.groups.committed("g", "gone", 0).is_none());
        assert_eq!(
            b.groups.committed("g", "kept", 0).map(|c| c.offset),
            Some(42)
        );
        b.create_topic("gone", 1, TopicConfig::default(), false)
            .unwrap();
        assert!(b.groups.committed("g", "gone", 0).is_none());
    }

    /// Dynamic broker configs reach every topic that does not override them, at once and
    /// after a restart; the broker's own level wins over the cluster default; a topic's
    /// override wins over both; a floor still holds.
    #[test]
    fn dynamic_defaults_apply_to_topics_now_and_after_a_restart() {
        use dynamic::Level;
        let dir = tempfile::tempdir().unwrap();
        let retention = |b: &Broker, t: &str| {
            let p = b.topic(t).unwrap().partitions[0].clone();
            let ms = lock(&p.log).log.config().retention_ms;
            ms
        };
        {
            let b = Broker::open(BrokerConfig::with_defaults(dir.path().to_path_buf())).unwrap();
            b.create_topic("plain", 1, TopicConfig::default(), false)
                .unwrap();
            let own = TopicConfig::from_pairs([("retention.ms", "5000")]).unwrap();
            b.create_topic("own", 1, own, false).unwrap();
            b.alter_dynamic_configs(false, |d| d.set(Level::Cluster, "retention.ms", "60000"))
                .unwrap();
            assert_eq!(retention(&b, "plain"), 60000);
            b.alter_dynamic_configs(false, |d| d.set(Level::Broker, "retention.ms", "70000"))
                .unwrap();
            assert_eq!(retention(&b, "plain"), 70000);
            assert_eq!(retention(&b, "own"), 5000);
            // validate_only changes nothing; a floor refuses; a bad value refuses.
            b.alter_dynamic_configs(true, |d| d.set(Level::Broker, "retention.ms", "1"))
                .unwrap();
            assert_eq!(retention(&b, "plain"), 70000);
            assert!(b
                .alter_dynamic_configs(false, |d| d.set(Level::Cluster, "segment.bytes", "10"))
                .is_err());
            assert!(b
                .alter_dynamic_configs(false, |d| d.set(Level::Cluster, "retention.ms", "x"))
                .is_err());
        }
        let b = Broker::open(BrokerConfig::with_defaults(dir.path().to_path_buf())).unwrap();
        assert_eq!(retention(&b, "plain"), 70000);
        assert_eq!(b.dynamic_configs().cluster["retention.ms"], "60000");
        b.create_topic("later", 1, TopicConfig::default(), false)
            .unwrap();
        assert_eq!(retention(&b, "later"), 70000);
        b.alter_dynamic_configs(false, |d| {
            d.delete(Level::Broker, "retention.ms");
            Ok(())
        })
        .unwrap();
        assert_eq!(retention(&b, "later"), 60000);
    }

    use super::testing::{open, plain_batch, txn_batch, txn_batch_keyed};
    use super::*;

    /// Open transactions, the LSO and the aborted index come back after a restart, rebuilt from
    /// the markers in the log.
    #[test]
    fn transaction_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let check = |b: &Broker| {
            let p = b.topic("t").unwrap().partitions[0].clone();
            assert_eq!(
                p.watermarks().stable,
                7,
                "LSO: producer 3's open transaction"
            );
            assert_eq!(
                p.aborted_between(0, 100),
                vec![producers::AbortedTxn {
                    producer_id: 1,
                    first_offset: 0,
                    last_offset: 5,
                }]
            );
            assert!(p.in_transaction(3) && !p.in_transaction(1) && !p.in_transaction(2));
        };
        {
            let b = open(dir.path());
            b.create_topic("t", 1, TopicConfig::default(), false)
                .unwrap();
            let p = b.topic("t").unwrap().partitions[0].clone();
            p.append(&txn_batch(1, 0, 0, 3), 1 << 20, None).unwrap(); // 0..3
            p.append(&txn_batch(2, 0, 0, 2), 1 << 20, None).unwrap(); // 3..5
            assert_eq!(p.write_marker(1, 0, false, 0).unwrap(), Some(5));
            assert_eq!(p.write_marker(2, 0, true, 0).unwrap(), Some(6));
            assert_eq!(p.write_marker(2, 0, true, 0).unwrap(), None, "nothing open");
            p.append(&txn_batch(3, 0, 0, 1), 1 << 20, None).unwrap(); // 7
            check(&b);
        }
        check(&open(dir.path()));
    }

    /// Topic creation works without the topics lock: of racing creations of one name exactly
    /// one wins, the others are told it exists, and lookups never wait for the files.
    #[test]
    fn racing_creations_of_one_topic_make_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(open(dir.path()));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    b.create_topic("race", 64, TopicConfig::default(), false)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1);
        assert!(results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(BrokerError::TopicExists(_)))));
        assert_eq!(b.topic("race").unwrap().partitions.len(), 64);
        drop(b);
        let b = open(dir.path());
        assert_eq!(b.topic("race").unwrap().partitions.len(), 64);
    }

    /// A clean shutdown lets the next start trust active segments (no CRC scan: a flipped
    /// byte goes unseen), once; that start removes the marker, so after a crash the scan is
    /// back and finds it.
    #[test]
    fn a_clean_shutdown_skips_the_scan_once() {
        let dir = tempfile::tempdir().unwrap();
        let end = {
            let b = open(dir.path());
            b.create_topic("t", 1, TopicConfig::default(), false)
                .unwrap();
            let p = b.topic("t").unwrap().partitions[0].clone();
            for _ in 0..5 {
                p.append(&plain_batch(2), 1 << 20, None).unwrap();
            }
            b.close_cleanly();
            assert!(p.append(&plain_batch(1), 1 << 20, None).is_err(), "closed");
            p.watermarks().high
        };
        assert_eq!(end, 10);
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        // Bit rot in the last batch's records (its CRC no longer matches).
        let seg = dir
            .path()
            .join("topics/t/0")
            .join(format!("{}.log", crate::log::segment::file_stem(0)));
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let high = |b: &Broker| b.topic("t").unwrap().partitions[0].watermarks().high;
        let b = open(dir.path());
        assert_eq!(high(&b), 10, "trusted: not scanned");
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        drop(b); // a crash
        let b = open(dir.path());
        assert_eq!(high(&b), 8, "scanned: the damaged batch is cut");
    }

    /// Kafka's rules for markers under compaction: an abort marker stays while its
    /// transaction's records are in the log, a commit marker while any of its batches is;
    /// then the marker gets a delete horizon and goes in the first pass after it, and the
    /// aborted index forgets that transaction, so no read_committed reader is told to skip a
    /// producer's records up to a marker that is gone. Across a restart too.
    #[test]
    fn markers_go_after_their_transactions_records_and_a_delete_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let key = |k: &str| Some(k.to_string());
        let b = open(dir.path());
        let mut cfg = TopicConfig::default();
        cfg.set("cleanup.policy", "compact").unwrap();
        b.create_topic("c", 1, cfg, false).unwrap();
        let p = b.topic("c").unwrap().partitions[0].clone();
        // Producer 1 aborts [0, 2), producer 2 commits [3, 5), both keys later overwritten by
        // producer 3's committed [6, 8), which stays.
        p.append(
            &txn_batch_keyed(1, 0, 0, &[key("a"), key("b")]),
            1 << 20,
            None,
        )
        .unwrap();
        assert_eq!(p.write_marker(1, 0, false, 0).unwrap(), Some(2));
        p.append(
            &txn_batch_keyed(2, 0, 0, &[key("a"), key("b")]),
            1 << 20,
            None,
        )
        .unwrap();
        assert_eq!(p.write_marker(2, 0, true, 0).unwrap(), Some(5));
        p.append(
            &txn_batch_keyed(3, 0, 0, &[key("a"), key("b")]),
            1 << 20,
            None,
        )
        .unwrap();
        assert_eq!(p.write_marker(3, 0, true, 0).unwrap(), Some(8));
        let markers = |p: &Partition| -> Vec<i64> {
            let log = lock(&p.log);
            (0..9).filter(|&o| log.log.control_at(o).unwrap()).collect()
        };
        let clean = |p: &Partition, now: i64| {
            let mut log = lock(&p.log);
            log.log.force_roll().unwrap();
            let next = log.log.next_offset();
            crate::log::flush::wait_idle();
            crate::log::flush::write_recovery_point(log.log.dir(), next).unwrap();
            drop(log);
            let c = crate::log::cleaner::CleanConfig {
                min_cleanable_dirty_ratio: 0.0,
                delete_retention_ms: 1000,
                ..Default::default()
            };
            p.clean_at(&c, now).unwrap();
        };
        {
            // A producer snapshot from before the cleaning, as a segment roll writes it.
            let mut log = lock(&p.log);
            log.log.force_roll().unwrap();
            let base = log.log.next_offset();
            log.snapshot(base);
            let dir = log.log.dir().to_path_buf();
            drop(log);
            let stem = crate::log::segment::file_stem(base);
            let file = dir.join(format!("{stem}{SNAPSHOT_SUFFIX}"));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !file.exists() {
                assert!(std::time::Instant::now() < deadline, "no snapshot written");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let t0 = now_ms();
        clean(&p, t0);
        // Records gone; both markers met their transaction's batches in this pass.
        assert_eq!(markers(&p), vec![2, 5, 8]);
        assert_eq!(p.aborted_between(0, 9).len(), 1);
        // Nothing new written: a pass still runs when a horizon is due. The next stamps them.
        clean(&p, t0 + 10);
        assert_eq!(markers(&p), vec![2, 5, 8]);
        clean(&p, t0 + 500);
        assert_eq!(markers(&p), vec![2, 5, 8], "before the horizon");
        clean(&p, t0 + 1010);
        assert_eq!(markers(&p), vec![8], "producer 3's records are still there");
        assert!(p.aborted_between(0, 9).is_empty());
        assert_eq!(p.watermarks().stable, 9);
        drop(p);
        drop(b);
        let b = open(dir.path());
        let p = b.topic("c").unwrap().partitions[0].clone();
        assert_eq!(markers(&p), vec![8]);
        assert!(
            p.aborted_between(0, 9).is_empty(),
            "the producer snapshot predates the cleaning"
        );
    }
}
