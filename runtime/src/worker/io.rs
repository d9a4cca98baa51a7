//! A task's I/O in a `sluice worker`: any Kafka cluster with transactions.
//!
//! Each task runs on a thread of its own with its own transactional producer (one producer
//! per worker thread, as in Kafka Streams' EOS v2). A commit puts in one transaction:
//! the output since the last commit, the task's checkpoint (input position, plugin state,
//! watermarks) as [`super::changelog`] records, and the input position as the pipeline
//! group's offset (`send_offsets_to_transaction` with the membership's group metadata,
//! KIP-447). On any failure the transaction is aborted and the task starts again from its
//! last committed checkpoint: nothing it wrote since is seen by read_committed readers, so
//! output, state and position stay exactly once.
//!
//! Zombies are fenced by the producer's `transactional.id`, which is the task's name: the
//! worker that takes a task over fences the one that had it at once, even one the group has
//! not yet noticed is gone (its open transaction is aborted then, not at the transaction
//! timeout, which lets the new owner's restore read the changelog to its end). The group's
//! check of the offsets' generation refuses, besides, a member that lost its generation in
//! a rebalance (not one whose member id librdkafka has already reset: the coordinator takes
//! a commit with neither member nor generation, as from a producer without group metadata).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::{Offset, TopicPartitionList};

use super::changelog::{self, Restore};
use crate::plugin::checkpoint::{Bin, Checkpoint};
use crate::plugin::io::{Dest, Item, Moved, Read, Routed, TaskIo};
use crate::plugin::output::MAX_CREATED_TOPICS;
use crate::plugin::task::Waiting;
use crate::plugin::watermark::Announcement;
use crate::records::Record;

/// Header that marks a watermark announcement. Kafka has no control records a client may
/// write, so on a cluster announcements are ordinary records; only topics some pipeline reads
/// get them.
pub const H_WATERMARK: &str = "sluice.watermark";

/// Most input records taken into one read.
const READ_RECORDS: usize = 2000;
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka's default `max.message.bytes`, assumed for every output topic.
pub const MAX_MESSAGE_BYTES: usize = 1_048_588;
/// After being fenced, wait this long (a few heartbeats) for the membership to tell whether
/// the task is still ours before taking it back.
const FENCED_PAUSE: Duration = Duration::from_secs(6);
/// How long a restore waits for the transactions open on its changelog partition to end:
/// past the tasks' `transaction.timeout.ms` (60 s), after which the coordinator aborts them.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(75);
/// The time `send_offsets_to_transaction` is given, and how much longer it is waited for
/// (see [`ClusterIo::send_offsets`]). A coordinator's failover on a Kafka cluster (a node's
/// session timing out, a new leader for its `__consumer_offsets` partition) fits in it.
const SEND_OFFSETS_TIMEOUT: Duration = Duration::from_secs(20);
const SEND_OFFSETS_GRACE: Duration = Duration::from_secs(5);

type TaskProducer = BaseProducer<ChangelogAcks>;

/// Producers given up with a `send_offsets_to_transaction` that has not returned (see
/// [`ClusterIo::send_offsets`]): each holds its librdkafka threads and sockets until it does.
static STUCK_PRODUCERS: AtomicI64 = AtomicI64::new(0);

/// What every task of one pipeline in this worker shares.
pub struct Shared {
    /// librdkafka settings for every client (bootstrap servers, security).
    pub client: ClientConfig,
    /// The pipeline's consumer group (its input offsets are committed there).
    pub group: String,
    /// The prefix of the tasks' transactional ids.
    pub txn_prefix: String,
    pub changelog: String,
    pub changelog_partitions: i32,
    /// The worker's member of `group`, whose group metadata each commit carries. Weak: the
    /// membership thread owns it, and dropping it leaves the group.
    pub(super) membership: OnceLock<Weak<BaseConsumer<super::MemberContext>>>,
    /// Where checkpoints are cached, so a restart does not read the whole changelog.
    pub cache_dir: PathBuf,
    pub rt: tokio::runtime::Handle,
}

pub struct ClusterIo {
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
    revoked: Arc<AtomicBool>,
    /// Shared only with a `send_offsets_to_transaction` call that may outlive its wait.
    producer: Option<Arc<TaskProducer>>,
    consumer: Option<BaseConsumer>,
    /// Input read and not yet behind the task's position.
    buffer: VecDeque<Item>,
    /// The last committed checkpoint, and the changelog keys of its chunks (None: unknown,
    /// the next commit writes them all).
    committed: Option<Checkpoint>,
    live: Option<BTreeSet<String>>,
    in_txn: bool,
    fenced: bool,
    /// A commit failed: whether its transaction ended committed is not known here (see
    /// [`TaskIo::open`]).
    commit_unsettled: bool,
    topics: HashMap<String, Arc<Dest>>,
    created: usize,
    written: BTreeSet<String>,
    /// How far behind the input's end the task was when last asked of its leader, and when.
    behind: Option<(i64, Instant)>,
}

/// How often a task with nothing buffered asks its input's leader where the input ends.
const END_CHECK: Duration = Duration::from_secs(1);

/// The consumer's position in a partition (past transaction markers), if it has one yet.
fn position(c: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    c.position()
        .ok()?
        .find_partition(topic, partition)?
        .offset()
        .to_raw()
        .filter(|o| *o >= 0)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Whether someone else holds the task's `transactional.id` now. A group generation
/// refused (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID: a rebalance in between) is not that: the
/// producer is sound, the transaction is aborted and the task goes on from its checkpoint,
/// and if the task moved, the membership says so.
fn is_fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::FencedInstanceId
        )
    ) || matches!(e, KafkaError::Transaction(t) if t.is_fatal())
}

impl ClusterIo {
    pub fn new(
        shared: Arc<Shared>,
        topic: String,
        partition: i32,
        revoked: Arc<AtomicBool>,
    ) -> ClusterIo {
        ClusterIo {
            shared,
            topic,
            partition,
            revoked,
            producer: None,
            consumer: None,
            buffer: VecDeque::new(),
            committed: None,
            live: None,
            in_txn: false,
            fenced: false,
            commit_unsettled: false,
            topics: HashMap::new(),
            created: 0,
            written: BTreeSet::new(),
            behind: None,
        }
    }

    /// How many offsets the consumer is behind the end of its input partition, asked of the
    /// partition's leader (at most every [`END_CHECK`]). Unknown (the leader unreachable, a
    /// position not yet known) counts as behind: an input that cannot be read is not silent,
    /// and a silent input is what lets a task declare itself idle and its watermark move on.
    /// The end is what ListOffsets answers this read_committed consumer: the last stable
    /// offset, so records of a transaction still open upstream do not count as behind (they
    /// are not readable yet); librdkafka's position steps over transaction markers. (The
    /// high watermark librdkafka caches from fetches would save the request, but counts an
    /// open transaction as behind.)
    fn behind(&mut self, next: i64) -> i64 {
        if let Some((n, at)) = self.behind {
            if at.elapsed() < END_CHECK {
                return n;
            }
        }
        let n = (|| {
            let c = self.consumer.as_ref()?;
            let (_, high) = c
                .fetch_watermarks(&self.topic, self.partition, Duration::from_secs(2))
                .ok()?;
            // librdkafka's position steps over transaction markers, but is unknown until a
            // first message was consumed: the task's own position stands in for it.
            let pos = position(c, &self.topic, self.partition).unwrap_or(next);
            Some((high - pos.max(next)).max(0))
        })()
        .unwrap_or(1);
        self.behind = Some((n, Instant::now()));
        n
    }

    fn key(&self) -> String {
        changelog::task_key(&self.topic, self.partition)
    }

    fn changelog_partition(&self) -> i32 {
        crate::client::partition_for_key(self.key().as_bytes(), self.shared.changelog_partitions)
    }

    fn cache_path(&self) -> PathBuf {
        self.shared
            .cache_dir
            .join(&self.topic)
            .join(format!("{}.ckpt", self.partition))
    }

    fn producer(&self) -> Result<&TaskProducer, String> {
        self.producer
            .as_deref()
            .ok_or_else(|| "the task's producer is not open".to_string())
    }

    /// A transactional producer with the task's id: fences whoever had the task before.
    fn start_producer(&mut self) -> Result<(), String> {
        self.producer = None;
        self.in_txn = false;
        let id = format!(
            "{}{}-{}",
            self.shared.txn_prefix, self.topic, self.partition
        );
        let p: TaskProducer = self
            .shared
            .client
            .clone()
            .set("transactional.id", &id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("transaction.timeout.ms", "60000")
            .set("queue.buffering.max.kbytes", "65536")
            .create_with_context(ChangelogAcks {
                changelog: self.shared.changelog.clone(),
                partition: self.changelog_partition(),
                last: AtomicI64::new(-1),
            })
            .map_err(err)?;
        p.init_transactions(OP_TIMEOUT).map_err(err)?;
        self.producer = Some(Arc::new(p));
        Ok(())
    }

    fn begin(&mut self) -> Result<(), String> {
        if !self.in_txn {
            self.producer()?.begin_transaction().map_err(err)?;
            self.in_txn = true;
        }
        Ok(())
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut c = self.shared.client.clone();
        c.set("group.id", &self.shared.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("queued.max.messages.kbytes", "8192")
            .set("fetch.wait.max.ms", "50")
            .set("auto.offset.reset", "earliest");
        c
    }

    /// The task's last committed checkpoint (the cached one, brought up to date with what the
    /// changelog holds after it), and the changelog keys of its chunks if known.
    fn restore(&mut self) -> Result<(Option<Checkpoint>, Option<BTreeSet<String>>), String> {
        let path = self.cache_path();
        let cached = Checkpoint::load(&path).ok().flatten();
        let from = std::fs::read_to_string(path.with_extension("from"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|_| cached.is_some());
        let cp = self.changelog_partition();
        let probe: BaseConsumer = self.consumer_config().create().map_err(err)?;
        let (low, high) = self.settled_end(&probe, cp)?;
        let start = from.map_or(low, |f| f.clamp(low, high));
        if start >= high {
            // Nothing committed since the cache: its chunks are live if the head kept beside
            // it is the cache's own (a crash between the two writes leaves them apart).
            let live = cached.as_ref().and_then(|c| {
                let head = std::fs::read(path.with_extension("head")).ok()?;
                changelog::live_if_matches(&self.key(), c, &changelog::Head::parse(&head)?)
            });
            return Ok((cached, live));
        }
        let read = self.read_changelog(&probe, cp, start, high, cached.as_ref());
        let read = match read {
            // A chunk the cache did not have and that was written before `start`: all of it.
            Err(e) if start > low && !self.revoked.load(Ordering::Acquire) => {
                tracing::info!(error = %e, "changelog read from the cache's position fell short; reading all of it");
                // A consumer of its own: the probe's position stays the first read's (at or
                // past `high`) until its fetch has stopped, and read_changelog takes such a
                // position for the end, so the second read could end at once with nothing
                // read and hand back the stale cache. And this read must find a head: the
                // first one failed on a chunk a head after `start` named.
                let fresh: BaseConsumer = self.consumer_config().create().map_err(err)?;
                match self.read_changelog(&fresh, cp, low, high, None) {
                    Ok(None) => Err(format!(
                        "changelog {}-{cp}: no checkpoint of the task in offsets {low}..{high}, \
                         although one after {start} named a missing chunk",
                        self.shared.changelog
                    )),
                    r => r,
                }
            }
            r => r,
        }?;
        match read {
            Some((c, head)) => Ok((Some(c), Some(head.keys(&self.key())))),
            None => Ok((cached, None)),
        }
    }

    /// Where changelog partition `cp` starts and, once every transaction open on it when
    /// asked has ended, where its committed records end.
    ///
    /// The partition is shared by many tasks, and a read_committed consumer reads only up to
    /// the last stable offset: the first record of the oldest transaction still open there.
    /// A task's last checkpoint, committed after another task's transaction began writing to
    /// the same partition, sits past that offset until that transaction ends, and is
    /// invisible. Restoring then would take an older checkpoint and process again input whose
    /// output is already committed: counted twice downstream. The blocking transaction is
    /// typically a dead worker's, killed in the middle of a commit; it ends when its task
    /// starts elsewhere (its new owner's `init_transactions` aborts it) or at its timeout.
    /// Waiting until the stable offset reaches the high watermark read now (this task's own
    /// transactions are settled: `init_transactions` came first) makes every checkpoint it
    /// ever committed readable.
    fn settled_end(&self, committed: &BaseConsumer, cp: i32) -> Result<(i64, i64), String> {
        let changelog = &self.shared.changelog;
        let uncommitted: BaseConsumer = self
            .consumer_config()
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(err)?;
        let (_, high) = uncommitted
            .fetch_watermarks(changelog, cp, OP_TIMEOUT)
            .map_err(err)?;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut said = false;
        loop {
            let (low, stable) = committed
                .fetch_watermarks(changelog, cp, OP_TIMEOUT)
                .map_err(err)?;
            if stable >= high {
                return Ok((low, stable));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "changelog {changelog}-{cp}: a transaction open before offset {high} has not ended in {} s (stable offset {stable})",
                    SETTLE_TIMEOUT.as_secs()
                ));
            }
            if !said {
                tracing::info!(topic = %self.topic, partition = self.partition, changelog = %changelog, changelog_partition = cp, stable, high, "waiting for the transactions open on the changelog to end before restoring");
                said = true;
            }
            if self.revoked.load(Ordering::Acquire) {
                return Err("the task moved to another worker".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reads changelog partition `cp` from `start` to `high` for this task's last head.
    fn read_changelog(
        &self,
        probe: &BaseConsumer,
        cp: i32,
        start: i64,
        high: i64,
        seed: Option<&Checkpoint>,
    ) -> Result<Option<(Checkpoint, changelog::Head)>, String> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.shared.changelog, cp, Offset::Offset(start))
            .map_err(err)?;
        probe.assign(&tpl).map_err(err)?;
        let key = self.key();
        let mut r = Restore::default();
        if let Some(c) = seed {
            r.seed(c);
        }
        let deadline = Instant::now() + OP_TIMEOUT * 2;
        loop {
            // A rebalance waits for the task to stop: not for a whole read it no longer needs.
            if self.revoked.load(Ordering::Acquire) {
                return Err("the task moved to another worker".into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "changelog {}-{cp}: could not read up to offset {high}",
                    self.shared.changelog
                ));
            }
            match probe.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if let Some(k) = m.key() {
                        r.record(&key, k, m.payload());
                    }
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                // librdkafka reconnects and retries by itself; the deadline bounds it.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "changelog read");
                    std::thread::sleep(Duration::from_millis(100));
                }
                None => {
                    // Transaction markers are not delivered: the position says whether the
                    // end was reached.
                    if position(probe, &self.shared.changelog, cp).is_some_and(|p| p >= high) {
                        break;
                    }
                }
            }
        }
        r.finish()
    }

    fn open_consumer(&mut self, at: i64) -> Result<(), String> {
        let c: BaseConsumer = match self.consumer.take() {
            Some(c) => c,
            None => self.consumer_config().create().map_err(err)?,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(at))
            .map_err(err)?;
        c.assign(&tpl).map_err(err)?;
        self.consumer = Some(c);
        self.buffer.clear();
        Ok(())
    }

    fn item(m: &rdkafka::message::BorrowedMessage<'_>) -> Item {
        let mut headers = Vec::new();
        let mut announcement = false;
        if let Some(h) = m.headers() {
            for x in h.iter() {
                if x.key == H_WATERMARK {
                    announcement = true;
                }
                headers.push((
                    Bytes::copy_from_slice(x.key.as_bytes()),
                    x.value.map(Bytes::copy_from_slice),
                ));
            }
        }
        if announcement && Announcement::is_ours(m.key()) {
            return Item::Control {
                offset: m.offset(),
                announcement: m.payload().and_then(Announcement::decode),
            };
        }
        Item::Data(Record {
            offset: m.offset(),
            timestamp: m.timestamp().to_millis().unwrap_or(0),
            key: m.key().map(Bytes::copy_from_slice),
            value: m.payload().map(Bytes::copy_from_slice),
            headers,
        })
    }

    fn send(&self, topic: &str, partition: i32, r: &Record) -> Result<(), String> {
        let p = self.producer()?;
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: &String::from_utf8_lossy(k),
                value: v.as_deref(),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(partition)
            .timestamp(r.timestamp)
            .headers(headers);
        if let Some(k) = r.key.as_deref() {
            rec = rec.key(k);
        }
        if let Some(v) = r.value.as_deref() {
            rec = rec.payload(v);
        }
        // A full queue drains as the cluster acknowledges; one that does not (its partitions'
        // leaders gone, the producer in error) would hold the task here until librdkafka's
        // message timeout, 5 minutes, and with it the rebalance waiting for the task to stop
        // (a moved task's last commit comes through here too, so it is not cut short).
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            match p.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "cannot produce to {topic}-{partition}: the producer's queue stayed full for {} s",
                            OP_TIMEOUT.as_secs()
                        ));
                    }
                    rec = back;
                    p.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(format!("cannot produce to {topic}-{partition}: {e}")),
            }
        }
    }

    /// Adds the input position `next` to the transaction as the pipeline group's offset,
    /// with the worker's current group metadata.
    ///
    /// librdkafka's `send_offsets_to_transaction` can wait for ever, past its timeout, when
    /// the group coordinator's node dies (librdkafka #5456: the timeout is never checked;
    /// #5511: a coordinator whose broker left the metadata is never looked up again), which
    /// froze tasks when a Kafka node was killed. So it runs on a thread of its own, and if it
    /// has not answered by its timeout and a grace, the task gives its producer up to that
    /// thread and fails the commit: its next open makes a new producer with the same
    /// `transactional.id`, which fences the stuck one (anything it still sends is refused
    /// for its old epoch) and aborts its transaction, and restores from the changelog. The
    /// stuck thread frees the old producer whenever librdkafka lets it return.
    fn send_offsets(&mut self, next: i64) -> Result<(), String> {
        let Some(cgm) = self
            .shared
            .membership
            .get()
            .and_then(Weak::upgrade)
            .and_then(|c| c.group_metadata())
        else {
            // The membership is gone (its thread ended): so is this worker's claim on the
            // task. Retrying could only fail again.
            self.revoked.store(true, Ordering::Release);
            return Err("the worker is no longer in the pipeline's group".into());
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(next))
            .map_err(err)?;
        let producer = self
            .producer
            .clone()
            .ok_or_else(|| "the task's producer is not open".to_string())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // 0: running, 1: returned, 2: given up on. Whoever comes second settles the count.
        let state = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let (topic, partition, theirs) = (self.topic.clone(), self.partition, state.clone());
        std::thread::Builder::new()
            .name(format!("{}-{}:offsets", self.topic, self.partition))
            .spawn(move || {
                let _ = tx.send(producer.send_offsets_to_transaction(
                    &tpl,
                    &cgm,
                    SEND_OFFSETS_TIMEOUT,
                ));
                if theirs.swap(1, Ordering::AcqRel) == 2 {
                    // Given up on: the producer goes with this thread.
                    let left = STUCK_PRODUCERS.fetch_sub(1, Ordering::Relaxed) - 1;
                    tracing::info!(%topic, partition, stuck_producers = left, "a send_offsets_to_transaction given up on returned at last; its producer is freed");
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let answer = match rx.recv_timeout(SEND_OFFSETS_TIMEOUT + SEND_OFFSETS_GRACE) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                STUCK_PRODUCERS.fetch_add(1, Ordering::Relaxed);
                if state.swap(2, Ordering::AcqRel) == 1 {
                    // It returned just now after all.
                    STUCK_PRODUCERS.fetch_sub(1, Ordering::Relaxed);
                    rx.try_recv().ok()
                } else {
                    None
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.producer = None;
                self.in_txn = false;
                return Err("send_offsets_to_transaction's thread panicked".into());
            }
            Ok(r) => Some(r),
        };
        match answer {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(self.fail(e)),
            None => {
                tracing::warn!(topic = %self.topic, partition = self.partition, stuck_producers = STUCK_PRODUCERS.load(Ordering::Relaxed), "send_offsets_to_transaction did not return in {} s (librdkafka #5456/#5511); replacing the task's producer", (SEND_OFFSETS_TIMEOUT + SEND_OFFSETS_GRACE).as_secs());
                if let Some(p) = self.producer.take() {
                    // What it still holds is aborted output: its queue need not wait for the
                    // stuck thread to let it go.
                    p.purge(PurgeConfig::default().queue().inflight().non_blocking());
                }
                self.in_txn = false;
                Err("the offsets could not be added to the transaction in time".into())
            }
        }
    }

    fn fail(&mut self, e: KafkaError) -> String {
        if is_fenced(&e) {
            self.fenced = true;
        }
        e.to_string()
    }
}

impl TaskIo for ClusterIo {
    fn open(&mut self, earliest: bool) -> Result<Checkpoint, String> {
        if self.fenced {
            // Someone else may run the task now: wait for the membership to say.
            let until = Instant::now() + FENCED_PAUSE;
            while Instant::now() < until && !self.revoked.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.revoked.load(Ordering::Acquire) {
                return Err("the task moved to another worker".into());
            }
            self.fenced = false;
            self.producer = None;
        }
        let aborted = match &self.producer {
            // After a failed commit the transaction may have committed all the same (an
            // abort that bumps the producer's epoch reports success once InitProducerId
            // answers, and the coordinator may have finished the commit before that): the
            // checkpoint held here could be one behind the changelog's, and going on from it
            // would process one commit's input twice. The changelog says which.
            Some(_) if self.commit_unsettled => false,
            Some(p) if self.in_txn => p.abort_transaction(OP_TIMEOUT).is_ok(),
            Some(_) => true,
            None => false,
        };
        self.in_txn = false;
        if !aborted {
            self.start_producer()?;
            // Only now, with any earlier owner fenced, is the changelog final for this task.
            match self.restore() {
                Ok((restored, live)) => {
                    // No checkpoint in the changelog: none was ever committed (the restore
                    // waited for every transaction on it to settle), so one held here is the
                    // task's fresh start, which a restart must keep: taken again, "latest"
                    // would move to today's end and skip the input since.
                    if restored.is_some() {
                        (self.committed, self.live) = (restored, live);
                    } else {
                        self.live = None;
                    }
                    self.commit_unsettled = false;
                }
                Err(e) => {
                    // The next open must restore again: with the producer kept, it would take
                    // the task's state as never checkpointed and start its input afresh (a
                    // Kafka node dying during a failover's restore did that: the input
                    // since the last checkpoint counted twice).
                    self.producer = None;
                    return Err(e);
                }
            }
        }
        let ckpt = match self.committed.clone() {
            Some(c) => c,
            None => {
                let probe: BaseConsumer = self.consumer_config().create().map_err(err)?;
                let (low, high) = probe
                    .fetch_watermarks(&self.topic, self.partition, OP_TIMEOUT)
                    .map_err(err)?;
                let fresh = Checkpoint {
                    producer_id: 0,
                    next_offset: if earliest { low } else { high },
                    state: Bin::default(),
                    plugin_version: String::new(),
                    emitted: Default::default(),
                    pending: Vec::new(),
                    watermarks: Default::default(),
                };
                // A restart before the first commit starts where this one did ("latest" is
                // the end as of the task's first start here, not of each restart).
                self.committed = Some(fresh.clone());
                fresh
            }
        };
        self.open_consumer(ckpt.next_offset)?;
        if let Err(e) = self.begin() {
            // A producer that cannot begin (fatal error, fenced) would fail every open from
            // here on: the next one makes a new one, and restores.
            self.producer = None;
            return Err(e);
        }
        Ok(ckpt)
    }

    fn read(&mut self, next: i64) -> Result<Read, String> {
        let offset = |i: &Item| match i {
            Item::Data(r) => r.offset,
            Item::Control { offset, .. } => *offset,
            Item::Bad { last, .. } => *last,
        };
        while self.buffer.front().is_some_and(|i| offset(i) < next) {
            self.buffer.pop_front();
        }
        let consumer = self
            .consumer
            .as_ref()
            .ok_or_else(|| "the task's input is not open".to_string())?;
        while self.buffer.len() < READ_RECORDS {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => {
                    let item = ClusterIo::item(&m);
                    if offset(&item) >= next {
                        self.buffer.push_back(item);
                    }
                }
                // Errors a consumer reports (a broker gone, a leader moved) are librdkafka's
                // to retry; the position stays where it was.
                Some(Err(e)) => {
                    transient_or_warn(&self.topic, self.partition, &e);
                    break;
                }
            }
        }
        let last = self.buffer.back().map(|i| offset(i) + 1);
        let high = match last {
            Some(l) => l.max(next),
            // Nothing fetched: caught up only if the leader says so (see `behind`).
            None => next + self.behind(next),
        };
        if last.is_some() {
            self.behind = None;
        }
        Ok(Read {
            items: self.buffer.iter().cloned().collect(),
            high,
            // A position out of range is reset by the consumer (auto.offset.reset).
            log_start: next,
            moved: Moved::No,
        })
    }

    fn mark_seen(&mut self) {}

    fn wait(&mut self, w: &Waiting) {
        let (until, input) = (w.until, w.input);
        loop {
            if w.changed() || self.revoked.load(Ordering::Acquire) {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            let slice = (until - now).min(Duration::from_millis(100));
            if let Some(p) = &self.producer {
                // Delivery reports and errors are served here.
                p.poll(Duration::ZERO);
            }
            match (&self.consumer, input) {
                (Some(c), true) => match c.poll(slice) {
                    Some(Ok(m)) => {
                        self.buffer.push_back(ClusterIo::item(&m));
                        return;
                    }
                    Some(Err(e)) => {
                        transient_or_warn(&self.topic, self.partition, &e);
                        std::thread::sleep(slice);
                    }
                    None => {}
                },
                _ => std::thread::sleep(slice),
            }
        }
    }

    fn topic(&mut self, name: &str) -> Result<Arc<Dest>, String> {
        if let Some(d) = self.topics.get(name) {
            return Ok(d.clone());
        }
        if !crate::broker::valid_topic_name(name) || name.starts_with("__") {
            return Err(format!("'{name}' is not a valid output topic name"));
        }
        let producer = self.producer()?;
        let partitions = |producer: &TaskProducer| -> Result<usize, String> {
            let md = producer
                .client()
                .fetch_metadata(Some(name), OP_TIMEOUT)
                .map_err(err)?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == name && t.error().is_none())
                .map_or(0, |t| t.partitions().len()))
        };
        let mut n = partitions(producer)?;
        if n == 0 {
            if self.created >= MAX_CREATED_TOPICS {
                return Err(format!(
                    "the plugin named more than {MAX_CREATED_TOPICS} new output topics"
                ));
            }
            create_topics(&self.shared.client, &self.shared.rt, &[name], &[])?;
            self.created += 1;
            let deadline = Instant::now() + OP_TIMEOUT;
            while n == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                n = partitions(self.producer()?)?;
            }
            if n == 0 {
                return Err(format!(
                    "topic {name} was created but has no partitions yet"
                ));
            }
        }
        let d = Arc::new(Dest {
            name: name.to_string(),
            partitions: n,
            max_message_bytes: MAX_MESSAGE_BYTES,
        });
        self.topics.insert(name.to_string(), d.clone());
        Ok(d)
    }

    fn write(&mut self, out: Vec<Routed>) -> Result<(), String> {
        self.begin()?;
        for r in out {
            self.send(&r.topic.name, r.partition, &r.record)?;
            if !self.written.contains(&r.topic.name) {
                self.written.insert(r.topic.name.clone());
            }
        }
        Ok(())
    }

    fn announce(&mut self, topic: &str, a: &Announcement, only: Option<i32>) -> Result<(), String> {
        let n = self.topic(topic)?.partitions as i32;
        self.begin()?;
        let record = Record {
            offset: 0,
            timestamp: crate::broker::now_ms(),
            key: Some(Bytes::copy_from_slice(&Announcement::control_key())),
            value: Some(Bytes::from(a.encode())),
            headers: vec![(Bytes::from_static(H_WATERMARK.as_bytes()), None)],
        };
        for p in 0..n {
            if only.is_some_and(|q| q.rem_euclid(n) != p) {
                continue;
            }
            self.send(topic, p, &record)?;
        }
        Ok(())
    }

    fn replaying(&mut self) -> bool {
        // Uncommitted output is dropped, never replayed.
        false
    }

    fn topics_written(&self) -> BTreeSet<String> {
        self.written.clone()
    }

    fn commit(&mut self, c: Checkpoint) -> Result<(), String> {
        self.begin()?;
        let key = self.key();
        let cp = self.changelog_partition();
        let id = uuid::Uuid::new_v4().as_u64_pair().0;
        let (entries, head) = changelog::encode(&key, id, &c, self.live.as_ref())?;
        let changelog = self.shared.changelog.clone();
        self.producer()?.context().last.store(-1, Ordering::Relaxed);
        for (k, v) in &entries {
            let r = Record {
                offset: 0,
                timestamp: crate::broker::now_ms(),
                key: Some(Bytes::copy_from_slice(k.as_bytes())),
                value: v.as_deref().map(Bytes::copy_from_slice),
                headers: Vec::new(),
            };
            self.send(&changelog, cp, &r)?;
        }
        // The position is also in the checkpoint, which is what a restart reads (a task's
        // state and position must come from one commit); the group's offset is the same
        // number, for lag (`plugin list --workers`, any Kafka tool) and for the group's
        // fencing of a worker that lost the task.
        self.send_offsets(c.next_offset)?;
        let p = self.producer()?;
        if let Err(e) = p.commit_transaction(OP_TIMEOUT) {
            self.commit_unsettled = true;
            return Err(self.fail(e));
        }
        self.in_txn = false;
        self.live = Some(head.keys(&key));
        // The cache: the checkpoint, its head, then where the changelog is to be read from
        // next time: past this commit's head (sent last, its offset from the delivery reports
        // commit_transaction's flush served) and its marker. Nothing of this task's can be
        // there: a later owner writes only once this transaction has ended, so past the
        // marker, at head + 2 or later. (It was the partition's end asked after the commit,
        // which a new owner, after a lost assignment, could already have written past.)
        let head_at = self.producer()?.context().last.load(Ordering::Relaxed);
        let path = self.cache_path();
        let saved = c.save(&path).is_ok()
            && std::fs::write(path.with_extension("head"), head.to_bytes()).is_ok();
        if saved && head_at >= 0 {
            let _ = std::fs::write(path.with_extension("from"), (head_at + 2).to_string());
        }
        self.committed = Some(c);
        self.begin()
    }

    fn revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

/// A task producer's context: the offset of the last changelog record it had acknowledged
/// (the task's changelog partition), which places the next restore's read.
struct ChangelogAcks {
    changelog: String,
    partition: i32,
    last: AtomicI64,
}

impl rdkafka::ClientContext for ChangelogAcks {}

impl rdkafka::producer::ProducerContext for ChangelogAcks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Ok(m) = r {
            if m.partition() == self.partition && m.topic() == self.changelog {
                self.last.fetch_max(m.offset(), Ordering::Relaxed);
            }
        }
    }
}

/// A broker going away is librdkafka's to ride out (it logs it itself); anything else a
/// consumer reports (authorization, a topic gone) is said, at most every few seconds.
fn transient_or_warn(topic: &str, partition: i32, e: &KafkaError) {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let transient = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
        )
    );
    if transient {
        tracing::debug!(%topic, partition, error = %e, "input read");
    } else if crate::limits::log_due(&LAST) {
        tracing::warn!(%topic, partition, error = %e, "input read failed; retrying");
    }
}

/// Creates topics with the cluster's default partition count and replication; `compacted`
/// ones with `cleanup.policy=compact`. Existing topics are fine.
pub fn create_topics(
    client: &ClientConfig,
    rt: &tokio::runtime::Handle,
    plain: &[&str],
    compacted: &[(&str, i32, usize)],
) -> Result<(), String> {
    if plain.is_empty() && compacted.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client.create().map_err(err)?;
    let mut topics: Vec<NewTopic<'_>> = plain
        .iter()
        .map(|t| NewTopic::new(t, -1, TopicReplication::Fixed(-1)))
        .collect();
    let max_bytes: Vec<String> = compacted.iter().map(|c| c.2.to_string()).collect();
    for ((t, n, _), max) in compacted.iter().zip(&max_bytes) {
        topics.push(
            NewTopic::new(t, *n, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact")
                .set("max.message.bytes", max),
        );
    }
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    let results = rt
        .block_on(admin.create_topics(topics.iter(), &opts))
        .map_err(err)?;
    for r in results {
        if let Err((t, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(format!("cannot create topic {t}: {code}"));
            }
        }
    }
    Ok(())
}
