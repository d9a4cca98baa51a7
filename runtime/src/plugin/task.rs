//! One task: one input partition of one pipeline, with its own plugin instance and state.
//!
//! The task reads its partition straight from the log, calls the plugin with batches of
//! records, appends the results through its [`Writer`], and checkpoints (input offset, state,
//! output counts) together. Any failure restarts it from its last checkpoint; the checkpoint
//! module explains why that neither loses nor doubles output.
//!
//! Poison records: when a call traps (panic, loop, memory), the batch is replayed one record at
//! a time from the last checkpoint; the record that traps alone is dead-lettered and skipped.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::checkpoint::{Bin, Checkpoint, PendingRecord};
use super::engine::{self, Batch, CallError, Instance, Outcome, OutputRecord, PluginEngine};
use super::io::{Dest, Item, Moved, Routed, TaskIo};
use super::manifest::{Partitioning, Start};
use super::output::{self, MAX_HEADERS, MAX_OUTPUTS_PER_RECORD};
use super::pipeline::{Pipeline, Stats, TaskProgress, Topology};
use super::watermark::{self, Announcement, Tracker, Verdict};
use crate::broker::now_ms;
use crate::records::Record;

/// Most records handed to the plugin in one call.
const MAX_CALL_RECORDS: usize = 1000;
/// How often progress is checkpointed while records flow.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);
/// Pause before restarting after an error that is not a poison record.
const ERROR_BACKOFF: Duration = Duration::from_millis(1000);
/// Announcements downstream are at most this frequent: they cost a control batch per output
/// partition, and readers only need the latest.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(20);
/// How often a silent source partition's idle timeout is looked at.
const SILENCE_CHECK: Duration = Duration::from_millis(1000);
/// How soon a task that read nothing but is not at its input's end looks again (see `wait`).
const BEHIND_RECHECK: Duration = Duration::from_millis(1000);

/// Headers on records in a retry topic.
pub const H_ATTEMPTS: &str = "sluice.retry.attempts";
pub const H_NOT_BEFORE: &str = "sluice.retry.not-before";
pub const H_TOPIC: &str = "sluice.retry.topic";
pub const H_PARTITION: &str = "sluice.retry.partition";
pub const H_OFFSET: &str = "sluice.retry.offset";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads one of the pipeline's input topics.
    Input,
    /// Reads the pipeline's retry topic and waits out each record's backoff.
    Retry,
}

pub struct TaskSpec {
    pub engine: Arc<PluginEngine>,
    pub pipeline: Arc<Pipeline>,
    pub topic: String,
    pub partition: i32,
    pub kind: Kind,
    pub rt: tokio::runtime::Handle,
    pub topology: Arc<Topology>,
}

impl TaskSpec {
    fn task_info(&self) -> engine::TaskInfo {
        engine::TaskInfo {
            pipeline: self.pipeline.manifest.name.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            retry: self.kind == Kind::Retry,
        }
    }
}

/// Why an incarnation of the task ended early.
enum Restart {
    /// A call failed on the records at these input offsets (inclusive).
    Trap { first: i64, last: i64, why: String },
    /// Anything else: log, wait, start again from the checkpoint.
    Error(String),
}

impl From<CallError> for Restart {
    fn from(e: CallError) -> Restart {
        Restart::Error(e.to_string())
    }
}

/// Poison-record bookkeeping that outlives incarnations.
#[derive(Default)]
struct Isolation {
    /// Offsets to feed one record per call.
    window: Option<(i64, i64)>,
    /// Offsets known to trap, with the reason: dead-lettered without calling the plugin.
    poison: BTreeMap<i64, String>,
}

/// What a waiting task waits for: input (if `input`), `until`, or its pipeline stopped,
/// woken or reloaded (its generation no longer `generation`), or the topology changed (its
/// generation no longer `topology_generation`: new readers to announce to, writers gone).
/// Without a tick to come (paused or `tick_ms = 0`) nothing else would wake the task, so
/// every change it must see is here, checked after the wait is armed.
#[derive(Clone)]
pub struct Waiting {
    pub until: Instant,
    pub input: bool,
    pub pipeline: Arc<Pipeline>,
    pub generation: u64,
    pub topology: Arc<Topology>,
    pub topology_generation: u64,
}

impl Waiting {
    /// Something changed since the task looked: it must step again now.
    pub fn changed(&self) -> bool {
        self.pipeline.stopping()
            || self.pipeline.generation.load(Ordering::Acquire) != self.generation
            || self.topology.generation() != self.topology_generation
    }
}

/// What a task asks of whoever runs it after a [`Task::step`].
pub enum Step {
    /// Step again (after others had their turn).
    Again,
    /// Nothing to do until input may have arrived, a deadline, or a change (see [`Waiting`]).
    Wait(Waiting),
    /// An error: start again at `until`, or sooner if the pipeline is stopped or woken.
    Backoff { until: Instant },
    /// The pipeline stopped (or the partition is no longer ours): the task is over.
    Done,
}

/// A task as a state machine: each [`Task::step`] does a bounded piece of work (a batch,
/// a tick, a checkpoint, a restart) and says what it waits for next, so one thread can run
/// many tasks in turn (the broker's [`super::pool`]) or one thread can run one ([`run`]).
pub struct Task {
    spec: Arc<TaskSpec>,
    iso: Isolation,
    life: Life,
}

enum Life {
    /// Between incarnations (at the start, or after a failure).
    Between(Box<dyn TaskIo>),
    Running(Box<Incarnation>),
    /// Only while a step moves the I/O from one life to the next.
    Moving,
}

impl Task {
    pub fn new(spec: TaskSpec, io: Box<dyn TaskIo>) -> Task {
        Task {
            spec: Arc::new(spec),
            iso: Isolation::default(),
            life: Life::Between(io),
        }
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.spec.pipeline
    }

    pub fn io(&mut self) -> &mut dyn TaskIo {
        match &mut self.life {
            Life::Between(io) => io.as_mut(),
            Life::Running(i) => i.io.as_mut(),
            Life::Moving => unreachable!("a task's I/O is only moved inside a step"),
        }
    }

    /// Never panics on plugin or input data.
    pub fn step(&mut self) -> Step {
        match std::mem::replace(&mut self.life, Life::Moving) {
            Life::Between(io) => {
                if self.spec.pipeline.stopping() || io.revoked() {
                    self.life = Life::Between(io);
                    return Step::Done;
                }
                match Incarnation::start(self.spec.clone(), io) {
                    Ok(i) => {
                        self.life = Life::Running(Box::new(i));
                        Step::Again
                    }
                    Err((e, io)) => {
                        self.life = Life::Between(io);
                        self.failed(e)
                    }
                }
            }
            Life::Running(mut i) => match i.step(&mut self.iso) {
                Ok(s) => {
                    self.life = Life::Running(i);
                    s
                }
                Err(e) => {
                    // The instance goes with the incarnation; the next starts from the checkpoint.
                    self.life = Life::Between(i.io);
                    self.failed(e)
                }
            },
            Life::Moving => unreachable!("a task's I/O is only moved inside a step"),
        }
    }

    fn failed(&mut self, e: Restart) -> Step {
        if let Restart::Error(why) = &e {
            if self.io().revoked() {
                // On its way to another worker (a worker's rebalance waits for it to stop):
                // what it did not commit, its next owner does again from the last checkpoint.
                tracing::info!(pipeline = %self.spec.pipeline.manifest.name, topic = %self.spec.topic, partition = self.spec.partition, error = %why, "task stopped on its way to another worker");
                return Step::Done;
            }
        }
        let spec = &self.spec;
        let name = &spec.pipeline.manifest.name;
        match e {
            Restart::Trap { first, last, why } => {
                Stats::add(&spec.pipeline.stats.traps, 1);
                tracing::warn!(pipeline = %name, topic = %spec.topic, partition = spec.partition, first, last, error = %why, "plugin trapped; restarting from the last checkpoint");
                spec.pipeline.stats.error(why.clone());
                if first == last {
                    self.iso.poison.insert(first, why);
                } else {
                    self.iso.window = Some((first, last));
                }
                Step::Again
            }
            Restart::Error(e) => {
                tracing::error!(pipeline = %name, topic = %spec.topic, partition = spec.partition, error = %e, "task failed; restarting from the last checkpoint");
                spec.pipeline.stats.error(e);
                Step::Backoff {
                    until: Instant::now() + ERROR_BACKOFF,
                }
            }
        }
    }
}

/// Waits for a backed-off task's restart: `until`, or a stop or wake of its pipeline.
pub async fn backoff(p: Arc<Pipeline>, until: Instant) {
    let n = p.wake.notified();
    tokio::pin!(n);
    n.as_mut().enable();
    if !p.stopping() {
        let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(until), n).await;
    }
}

/// Runs the task on this thread until its pipeline stops (or `io` says it is no longer ours).
/// Never panics on plugin or input data.
pub fn run(spec: TaskSpec, io: Box<dyn TaskIo>) {
    let rt = spec.rt.clone();
    let mut task = Task::new(spec, io);
    loop {
        match task.step() {
            Step::Again => {}
            Step::Done => return,
            Step::Wait(w) => task.io().wait(&w),
            Step::Backoff { until } => rt.block_on(backoff(task.pipeline().clone(), until)),
        }
    }
}

/// One life of the task, from a checkpoint to a stop or a failure.
struct Incarnation {
    spec: Arc<TaskSpec>,
    io: Box<dyn TaskIo>,
    instance: Instance,
    generation: u64,
    version: String,
    next: i64,
    dirty: bool,
    last_checkpoint: Instant,
    next_tick: Instant,
    /// Event time of the input (None for the retry task, which has none of its own).
    tracker: Option<Tracker>,
    topology_generation: u64,
    /// Read everything there was at the last look.
    caught_up: bool,
    /// Since when the input has been silent, for `idle_timeout_ms`: the last time a record
    /// arrived, the incarnation started, or the task was found behind its input's end. Only
    /// time spent caught up counts: an input that cannot be read (its leader gone) or whose
    /// records are still on their way is not silent, and a task that called it idle the
    /// moment its leader came back would let its watermark pass the records a producer still
    /// holds for it (they would arrive late).
    last_data: Instant,
    last_silence_check: Instant,
    /// What was last announced downstream (watermark, idle) and when.
    announced: Option<(Option<i64>, bool)>,
    last_announce: Instant,
    announce_due: bool,
    /// A watermark that moved for a reason other than the input (feeders changed): handed
    /// once the task has caught up.
    hand_ahead_due: bool,
}

fn err(e: impl std::fmt::Display) -> Restart {
    Restart::Error(e.to_string())
}

/// What an incarnation starts from: its checkpoint, restored into a fresh instance.
struct Begun {
    instance: Instance,
    generation: u64,
    version: String,
    next: i64,
    dirty: bool,
    tracker: Option<Tracker>,
    topology_generation: u64,
}

impl Incarnation {
    /// On failure the I/O comes back, for the next try.
    #[allow(clippy::result_large_err)]
    fn start(
        spec: Arc<TaskSpec>,
        mut io: Box<dyn TaskIo>,
    ) -> Result<Incarnation, (Restart, Box<dyn TaskIo>)> {
        let b = match Self::begin(&spec, io.as_mut()) {
            Ok(b) => b,
            Err(e) => return Err((e, io)),
        };
        let tick_ms = spec.pipeline.manifest.tick_ms;
        Ok(Incarnation {
            spec,
            io,
            instance: b.instance,
            generation: b.generation,
            version: b.version,
            next: b.next,
            dirty: b.dirty,
            last_checkpoint: Instant::now(),
            next_tick: next_tick(tick_ms),
            tracker: b.tracker,
            topology_generation: b.topology_generation,
            caught_up: false,
            last_data: Instant::now(),
            last_silence_check: Instant::now(),
            announced: None,
            last_announce: Instant::now(),
            // Say where we are at once: an announcement lost in a crash must not leave the
            // readers downstream waiting.
            announce_due: true,
            hand_ahead_due: false,
        })
    }

    fn begin(spec: &TaskSpec, io: &mut dyn TaskIo) -> Result<Begun, Restart> {
        let m = &spec.pipeline.manifest;
        let earliest = spec.kind == Kind::Retry || m.start == Start::Earliest;
        let ckpt = io.open(earliest).map_err(err)?;
        let d = spec.pipeline.deployed();
        let mut instance = spec
            .engine
            .instantiate(&d.code, spec.task_info(), d.limits)
            .map_err(err)?;
        instance
            .init(&d.config_json)?
            .map_err(|e| err(format!("plugin refused its config: {e}")))?;
        if !ckpt.state.0.is_empty() {
            instance
                .restore(&ckpt.state.0)?
                .map_err(|e| err(format!("plugin could not restore its state: {e}")))?;
        }
        let topology_generation = spec.topology.generation();
        let tracker = (spec.kind == Kind::Input).then(|| {
            let et = m.event_time.as_ref();
            Tracker::new(
                ckpt.watermarks.clone(),
                et.map_or(0, |e| e.lateness_ms),
                et.is_some(),
                spec.topology.feeders(&spec.topic, spec.partition),
            )
        });
        let dirty = !ckpt.pending.is_empty();
        if dirty {
            let mut routed = Vec::with_capacity(ckpt.pending.len());
            for p in ckpt.pending {
                let t = io.topic(&p.topic).map_err(err)?;
                routed.push(Routed {
                    topic: t,
                    partition: p.partition,
                    record: Record {
                        offset: 0,
                        timestamp: p.timestamp,
                        key: p.key.map(Bytes::from),
                        value: p.value.map(Bytes::from),
                        headers: p
                            .headers
                            .into_iter()
                            .map(|(k, v)| (Bytes::from(k), Some(Bytes::from(v.0))))
                            .collect(),
                    },
                });
            }
            io.write(routed).map_err(err)?;
        }
        Ok(Begun {
            instance,
            generation: d.generation,
            version: d.code.version.clone(),
            next: ckpt.next_offset,
            dirty,
            tracker,
            topology_generation,
        })
    }

    fn pipeline(&self) -> &Pipeline {
        &self.spec.pipeline
    }

    /// One turn: a batch of input processed, or the tick, checkpoint and announcements due
    /// while caught up and then what to wait for.
    fn step(&mut self, iso: &mut Isolation) -> Result<Step, Restart> {
        if self.pipeline().stopping() || self.io.revoked() {
            if self.dirty {
                self.checkpoint(Vec::new())?;
            }
            return Ok(Step::Done);
        }
        if self.pipeline().generation.load(Ordering::Acquire) != self.generation {
            self.switch_version();
        }
        self.follow_topology();
        // Appends from here on end the wait: mark what the read below will see as seen.
        self.io.mark_seen();
        let (items, high, hold) = self.read()?;
        self.progress(high);
        if items.is_empty() {
            self.caught_up = self.next >= high && hold.is_none();
            if !self.caught_up {
                self.last_data = Instant::now();
            }
            self.when_caught_up()?;
            self.announce()?;
            if self.dirty && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.checkpoint(Vec::new())?;
            }
            if self.tick_due() {
                self.tick()?;
                return Ok(Step::Again);
            }
            return Ok(self.wait(hold));
        }
        self.caught_up = false;
        self.process(items, iso)?;
        self.announce()?;
        if self.tick_due() {
            self.tick()?;
        }
        if self.dirty && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            self.checkpoint(Vec::new())?;
        }
        Ok(Step::Again)
    }

    fn progress(&self, high: i64) {
        let mut p = self
            .pipeline()
            .stats
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        p.insert(
            (self.spec.topic.clone(), self.spec.partition),
            TaskProgress {
                next_offset: self.next,
                high_watermark: high,
                event_time_watermark: self.tracker.as_ref().and_then(|t| t.state.handed),
            },
        );
    }

    /// What to wait for: an append, a stop or reload, the next tick, or `hold` (a retry
    /// record's due time).
    fn wait(&self, hold: Option<Instant>) -> Step {
        // A paused instance is ticked again only after input, which ends the wait anyway.
        let mut until = if self.instance.ticks_paused() {
            Instant::now() + NO_TICK
        } else {
            self.next_tick
        };
        if let Some(h) = hold {
            until = until.min(h);
        }
        if self.dirty {
            until = until.min(self.last_checkpoint + CHECKPOINT_EVERY);
        }
        if self.announce_due {
            until = until.min(self.last_announce + ANNOUNCE_EVERY);
        }
        // Read nothing, yet not at the end: records past the last stable offset, or a worker's
        // estimate of its input's end (asked of the leader at most every second) not yet
        // caught up with its position. No append may come to end the wait, and until the task
        // knows it is at the end it cannot say it is idle, so its readers' watermark (and the
        // last windows) would wait for good: look again soon. (Ticks did this before they
        // could be paused.)
        if self.tracker.is_some() && !self.caught_up && hold.is_none() {
            until = until.min(Instant::now() + BEHIND_RECHECK);
        }
        // Only a task that looks at silence (an input task, caught up: see when_caught_up)
        // moves last_silence_check on; for any other, that deadline would stay in the past
        // and the wait would spin.
        if self.tracker.is_some()
            && self.caught_up
            && self
                .spec
                .pipeline
                .manifest
                .event_time
                .as_ref()
                .is_some_and(|e| e.idle_timeout_ms.is_some())
        {
            until = until.min(self.last_silence_check + SILENCE_CHECK);
        }
        Step::Wait(Waiting {
            until,
            input: hold.is_none(),
            pipeline: self.spec.pipeline.clone(),
            generation: self.generation,
            topology: self.spec.topology.clone(),
            topology_generation: self.topology_generation,
        })
    }

    /// Items from `next` on: (items, high watermark, when the first held-back retry is due).
    /// Only committed records: as a read_committed consumer, never past the last stable offset.
    #[allow(clippy::type_complexity)]
    fn read(&mut self) -> Result<(Vec<Item>, i64, Option<Instant>), Restart> {
        let read = self.io.read(self.next).map_err(err)?;
        match read.moved {
            Moved::No => {}
            Moved::StepTo(to) => {
                self.next = self.next.max(to);
                return Ok((Vec::new(), read.high, None));
            }
            Moved::OutOfRange => {
                let to = if self.next < read.log_start
                    || self.pipeline().manifest.start == Start::Earliest
                {
                    read.log_start
                } else {
                    read.high
                };
                tracing::warn!(pipeline = %self.pipeline().manifest.name, topic = %self.spec.topic, partition = self.spec.partition, from = self.next, to, "pipeline position outside the log (retention or a re-created topic); moving");
                self.next = to;
                self.dirty = true;
                return Ok((Vec::new(), read.high, None));
            }
        }
        let mut items = read.items;
        if items.is_empty() {
            return Ok((items, read.high, None));
        }
        let mut hold = None;
        if self.spec.kind == Kind::Retry {
            let now = now_ms();
            let due_at = |i: &Item| match i {
                Item::Data(r) => header_i64(r, H_NOT_BEFORE).unwrap_or(0),
                _ => 0,
            };
            if let Some(i) = items.iter().position(|it| due_at(it) > now) {
                let due = due_at(&items[i]);
                hold = Some(Instant::now() + Duration::from_millis((due - now).max(1) as u64));
                items.truncate(i);
            }
        }
        Ok((items, read.high, hold))
    }

    /// Handles `items` in order. Everything that decides output (verdicts, hand-overs of the
    /// watermark, poison records) happens at a given item whatever the batching, so a replay
    /// emits the same records in the same order.
    fn process(&mut self, items: Vec<Item>, iso: &mut Isolation) -> Result<(), Restart> {
        let mut chunk: Vec<Record> = Vec::with_capacity(items.len().min(MAX_CALL_RECORDS));
        if items.iter().any(|i| matches!(i, Item::Data(_))) {
            self.last_data = Instant::now();
        }
        // Only retried records can come from different origins.
        let retry = self.spec.kind == Kind::Retry;
        for item in items {
            match item {
                Item::Control {
                    offset,
                    announcement,
                } => {
                    self.flush(&mut chunk)?;
                    if let (Some(t), Some(a)) = (self.tracker.as_mut(), announcement) {
                        t.announcement(a);
                        self.dirty = true;
                    }
                    self.next = self.next.max(offset + 1);
                }
                Item::Bad { first, last, why } => {
                    self.flush(&mut chunk)?;
                    Stats::add(&self.spec.pipeline.stats.undecodable, 1);
                    tracing::warn!(pipeline = %self.pipeline().manifest.name, topic = %self.spec.topic, partition = self.spec.partition, first, last, error = %why, "undecodable batch dead-lettered");
                    self.spec.pipeline.stats.error(format!(
                        "{}-{} offsets {first}..={last}: {why}",
                        self.spec.topic, self.spec.partition
                    ));
                    let out = self.dead_letter_batch(first, last, &why);
                    self.write(out, 0)?;
                    self.next = self.next.max(last + 1);
                }
                Item::Data(r) => {
                    let verdict = match self.tracker.as_mut() {
                        Some(t) => t.record(r.timestamp),
                        None => Verdict::OnTime,
                    };
                    if let Verdict::Late(wm) = verdict {
                        self.flush(&mut chunk)?;
                        let out = self.late(&r, wm);
                        Stats::add(&self.spec.pipeline.stats.late, 1);
                        self.write(out, 1)?;
                        self.next = r.offset + 1;
                    } else if let Some(why) = iso.poison.get(&r.offset).cloned() {
                        self.flush(&mut chunk)?;
                        let out = self.dead_letter(&r, &why, self.attempts(&r));
                        self.write(out, 1)?;
                        self.next = r.offset + 1;
                        iso.poison.remove(&r.offset);
                        // Checkpoint past the poison now, so a later one does not replay far.
                        self.checkpoint(Vec::new())?;
                    } else if iso
                        .window
                        .is_some_and(|(a, b)| r.offset >= a && r.offset <= b)
                    {
                        // Suspects go one per call, so the one that traps is found.
                        self.flush(&mut chunk)?;
                        let last = iso.window.is_some_and(|(_, b)| r.offset >= b);
                        chunk.push(r);
                        self.flush(&mut chunk)?;
                        if last {
                            iso.window = None;
                        }
                    } else {
                        if chunk.len() >= MAX_CALL_RECORDS
                            || (retry
                                && chunk
                                    .first()
                                    .is_some_and(|c| self.origin(c) != self.origin(&r)))
                        {
                            self.flush(&mut chunk)?;
                        }
                        chunk.push(r);
                    }
                }
            }
            if let Some(wm) = self.tracker.as_ref().and_then(Tracker::to_hand) {
                self.flush(&mut chunk)?;
                self.hand(wm)?;
            }
        }
        self.flush(&mut chunk)
    }

    /// Calls the plugin on the records gathered so far.
    fn flush(&mut self, chunk: &mut Vec<Record>) -> Result<(), Restart> {
        if chunk.is_empty() {
            return Ok(());
        }
        let origin = self.origin(&chunk[0]);
        let records = std::mem::take(chunk);
        self.call(&records, origin)
    }

    /// Hands the plugin the watermark at this point of the input; what it emits is output
    /// like any other (replayed the same way after a crash).
    fn hand(&mut self, wm: i64) -> Result<(), Restart> {
        let routed = self.watermark_output(wm)?;
        self.write(routed, 0)?;
        if let Some(t) = self.tracker.as_mut() {
            t.handed(wm);
        }
        self.dirty = true;
        self.announce_due = true;
        Ok(())
    }

    fn watermark_output(&mut self, wm: i64) -> Result<Vec<Routed>, Restart> {
        let outs = self
            .instance
            .on_watermark(wm)
            .map_err(|e| Restart::Error(format!("on-watermark({wm}) failed: {e}")))?;
        match outs {
            None => Ok(Vec::new()),
            Some(outs) => self
                .check_outputs(outs, wm, None)
                .map_err(|e| Restart::Error(format!("invalid output from on-watermark: {e}"))),
        }
    }

    /// Work for a task with nothing to read: the idle timeout of a silent source, and a
    /// watermark that moved because the feeders changed. Both depend on the clock or on
    /// deployments rather than on the input, so their output is written ahead, like `tick`'s,
    /// and only once a replay has caught up with what the log already holds.
    fn when_caught_up(&mut self) -> Result<(), Restart> {
        if !self.caught_up || self.tracker.is_none() {
            return Ok(());
        }
        if let Some(timeout) = self
            .spec
            .pipeline
            .manifest
            .event_time
            .as_ref()
            .and_then(|e| e.idle_timeout_ms)
        {
            if self.last_silence_check.elapsed() >= SILENCE_CHECK {
                self.last_silence_check = Instant::now();
                let silence = self.last_data.elapsed().as_millis() as i64;
                if let Some(t) = self.tracker.as_mut() {
                    if t.silence(silence, timeout) {
                        self.hand_ahead_due = true;
                    }
                }
            }
        }
        if !self.hand_ahead_due || self.io.replaying() {
            return Ok(());
        }
        self.hand_ahead_due = false;
        let Some(wm) = self.tracker.as_ref().and_then(Tracker::to_hand_any) else {
            return Ok(());
        };
        let routed = self.watermark_output(wm)?;
        if let Some(t) = self.tracker.as_mut() {
            t.handed(wm);
        }
        self.announce_due = true;
        let pending = routed.iter().map(pending_record).collect();
        self.checkpoint(pending)?;
        self.write(routed, 0)
    }

    /// Picks up changed feeders (pipelines deployed or removed upstream).
    fn follow_topology(&mut self) {
        let g = self.spec.topology.generation();
        if g == self.topology_generation {
            return;
        }
        self.topology_generation = g;
        if let Some(t) = self.tracker.as_mut() {
            t.set_feeders(
                self.spec
                    .topology
                    .feeders(&self.spec.topic, self.spec.partition),
            );
            if t.to_hand_any().is_some() {
                self.hand_ahead_due = true;
            }
            // A topic may have gained a reader that has not heard this task yet.
            self.announced = None;
            self.announce_due = true;
        }
    }

    /// Tells the readers of this task's outputs its watermark (at most every
    /// [`ANNOUNCE_EVERY`]), after the output it covers.
    fn announce(&mut self) -> Result<(), Restart> {
        let Some(t) = self.tracker.as_ref() else {
            self.announce_due = false;
            return Ok(());
        };
        // Checked every round, not only after a hand-over: idleness changes with what the
        // writers upstream say and with being caught up.
        let now = (t.state.handed, t.idle(self.caught_up));
        if self.announced == Some(now) {
            self.announce_due = false;
            return Ok(());
        }
        if self.announced.is_some() && self.last_announce.elapsed() < ANNOUNCE_EVERY {
            self.announce_due = true;
            return Ok(());
        }
        let m = &self.spec.pipeline.manifest;
        let a = Announcement {
            writer: watermark::writer_id(&m.name, &self.spec.topic, self.spec.partition),
            watermark: now.0,
            idle: now.1,
        };
        let mut side = vec![m.dead_letter.clone(), m.retry_topic.clone()];
        if let Some(e) = &m.event_time {
            side.push(e.late_topic.clone());
        }
        let mut topics = self.io.topics_written();
        topics.extend(m.output.iter().cloned());
        // Only pipelines read announcements (clients skip them): a topic none reads gets
        // none, and follow_topology announces again when one starts to.
        topics.retain(|t| !side.contains(t) && self.spec.topology.is_read(t));
        // Under input partitioning this task writes to one partition of each topic only, and
        // its readers expect it there only (see Topology).
        let only = (m.partitioning == Partitioning::Input).then_some(self.spec.partition);
        for topic in topics {
            self.io.announce(&topic, &a, only).map_err(err)?;
        }
        self.announced = Some(now);
        self.last_announce = Instant::now();
        self.announce_due = false;
        Ok(())
    }

    /// The topic and partition the plugin is told a record came from.
    fn origin(&self, r: &Record) -> (String, i32) {
        match self.spec.kind {
            Kind::Input => (self.spec.topic.clone(), self.spec.partition),
            Kind::Retry => (
                header_str(r, H_TOPIC).unwrap_or_else(|| self.spec.topic.clone()),
                header_i64(r, H_PARTITION).unwrap_or(0) as i32,
            ),
        }
    }

    fn source_offset(&self, r: &Record) -> i64 {
        match self.spec.kind {
            Kind::Input => r.offset,
            Kind::Retry => header_i64(r, H_OFFSET).unwrap_or(r.offset),
        }
    }

    fn attempts(&self, r: &Record) -> u32 {
        match self.spec.kind {
            Kind::Input => 1,
            Kind::Retry => header_i64(r, H_ATTEMPTS).unwrap_or(1).clamp(1, 1 << 20) as u32 + 1,
        }
    }

    fn call(&mut self, chunk: &[Record], origin: (String, i32)) -> Result<(), Restart> {
        let first = chunk[0].offset;
        let last = chunk[chunk.len() - 1].offset;
        let batch = Batch {
            topic: origin.0,
            partition: origin.1,
            records: chunk
                .iter()
                .map(|r| engine::Record {
                    offset: self.source_offset(r),
                    timestamp: r.timestamp,
                    key: r.key.as_ref().map(|b| b.to_vec()),
                    value: r.value.as_ref().map(|b| b.to_vec()),
                    headers: user_headers(r, self.spec.kind)
                        .map(|(k, v)| {
                            (
                                String::from_utf8_lossy(k).into_owned(),
                                v.as_ref().map(|v| v.to_vec()).unwrap_or_default(),
                            )
                        })
                        .collect(),
                })
                .collect(),
        };
        let outcomes = self.instance.process(&batch).map_err(|e| Restart::Trap {
            first,
            last,
            why: e.to_string(),
        })?;
        if outcomes.len() != chunk.len() {
            return Err(Restart::Trap {
                first,
                last,
                why: format!(
                    "plugin returned {} outcomes for {} records",
                    outcomes.len(),
                    chunk.len()
                ),
            });
        }
        let mut out = Vec::new();
        for (r, o) in chunk.iter().zip(outcomes) {
            out.extend(self.route(r, o));
        }
        self.write(out, chunk.len() as u64)?;
        self.next = last + 1;
        Ok(())
    }

    fn write(&mut self, out: Vec<Routed>, consumed: u64) -> Result<(), Restart> {
        let stats = &self.spec.pipeline.stats;
        let dlq = &self.spec.pipeline.manifest.dead_letter;
        let retry = &self.spec.pipeline.manifest.retry_topic;
        let (mut n_out, mut n_dlq, mut n_retry) = (0, 0, 0);
        for r in &out {
            if &r.topic.name == dlq {
                n_dlq += 1;
            } else if &r.topic.name == retry {
                n_retry += 1;
            } else {
                n_out += 1;
            }
        }
        self.io.write(out).map_err(err)?;
        Stats::add(&stats.records_in, consumed);
        Stats::add(&stats.records_out, n_out);
        Stats::add(&stats.dead_lettered, n_dlq);
        Stats::add(&stats.retried, n_retry);
        self.dirty = true;
        Ok(())
    }

    /// Turns one outcome into output records, checking everything the plugin returned.
    fn route(&mut self, r: &Record, o: Outcome) -> Vec<Routed> {
        let m = &self.spec.pipeline.manifest;
        match o {
            Outcome::Drop => Vec::new(),
            Outcome::Keep => match m.output.clone() {
                Some(out) => match self.forward(r, &out, Vec::new(), false) {
                    Ok(routed) => vec![routed],
                    Err(e) => self.dead_letter(r, &e, self.attempts(r)),
                },
                None => self.dead_letter(
                    r,
                    "the plugin kept the record but the pipeline has no output topic",
                    self.attempts(r),
                ),
            },
            Outcome::Replace(outs) => match self.check_outputs(outs, r.timestamp, Some(r)) {
                Ok(routed) => routed,
                Err(e) => {
                    self.dead_letter(r, &format!("invalid plugin output: {e}"), self.attempts(r))
                }
            },
            Outcome::Fail(why) => self.dead_letter(r, &why, self.attempts(r)),
            Outcome::Retry(why) => {
                let attempts = self.attempts(r);
                if attempts >= m.retry.max_attempts {
                    self.dead_letter(
                        r,
                        &format!("gave up after {attempts} attempts: {why}"),
                        attempts,
                    )
                } else {
                    self.retry(r, attempts)
                }
            }
        }
    }

    /// Where a record for `topic` goes. `keeps_key`: it has its input record's key; `side`:
    /// a dead letter or retry, which always go by key.
    fn resolve(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        keeps_key: bool,
        side: bool,
    ) -> Result<(Arc<Dest>, i32), String> {
        let t = self.io.topic(topic)?;
        let n = t.partitions;
        let home = self.spec.partition;
        let by_input = !side
            && match self.spec.pipeline.manifest.partitioning {
                Partitioning::Input => true,
                Partitioning::Auto => keeps_key,
                Partitioning::Key => false,
            };
        let p = if by_input {
            home.rem_euclid(n.max(1) as i32)
        } else {
            output::partition_for(key, n, home)
        };
        Ok((t, p))
    }

    /// Checks a plugin's output records; `input` is the record they replace (None for
    /// `tick` and `on-watermark` output).
    fn check_outputs(
        &mut self,
        outs: Vec<OutputRecord>,
        default_ts: i64,
        input: Option<&Record>,
    ) -> Result<Vec<Routed>, String> {
        if outs.len() > MAX_OUTPUTS_PER_RECORD {
            return Err(format!(
                "{} output records for one input (at most {MAX_OUTPUTS_PER_RECORD})",
                outs.len()
            ));
        }
        // A handle of its own: resolving below borrows self mutably.
        let spec = self.spec.clone();
        let m = &spec.pipeline.manifest;
        let mut routed = Vec::with_capacity(outs.len());
        for o in outs {
            let name = match o.topic {
                Some(t) => t,
                None => m.output.clone().ok_or(
                    "a record without a topic, and the pipeline has no output topic".to_string(),
                )?,
            };
            if m.inputs.contains(&name) || name == m.retry_topic {
                return Err(format!(
                    "the plugin wrote to '{name}', which this pipeline reads"
                ));
            }
            if o.headers.len() > MAX_HEADERS {
                return Err(format!(
                    "{} headers on one record (at most {MAX_HEADERS})",
                    o.headers.len()
                ));
            }
            let record = Record {
                offset: 0,
                timestamp: o.timestamp.unwrap_or(default_ts),
                key: o.key.map(Bytes::from),
                value: o.value.map(Bytes::from),
                headers: o
                    .headers
                    .into_iter()
                    .map(|(k, v)| (Bytes::from(k), Some(Bytes::from(v))))
                    .collect(),
            };
            let keeps_key = input.is_some_and(|r| r.key == record.key);
            let (topic, partition) =
                self.resolve(&name, record.key.as_deref(), keeps_key, false)?;
            let size = output::record_size(&record);
            if size > topic.max_message_bytes {
                return Err(format!(
                    "a {size}-byte record exceeds max.message.bytes of '{name}' ({})",
                    topic.max_message_bytes
                ));
            }
            routed.push(Routed {
                topic,
                partition,
                record,
            });
        }
        Ok(routed)
    }

    /// The input record as it came (the user's headers plus `extra`), bound for `topic`.
    fn forward(
        &mut self,
        r: &Record,
        topic: &str,
        extra: Vec<(&'static str, String)>,
        side: bool,
    ) -> Result<Routed, String> {
        let mut headers: Vec<(Bytes, Option<Bytes>)> =
            user_headers(r, self.spec.kind).cloned().collect();
        headers.extend(
            extra
                .into_iter()
                .map(|(k, v)| (Bytes::from_static(k.as_bytes()), Some(Bytes::from(v)))),
        );
        let (topic, partition) = self.resolve(topic, r.key.as_deref(), true, side)?;
        Ok(Routed {
            topic,
            partition,
            record: Record {
                offset: 0,
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            },
        })
    }

    /// The headers every dead letter carries: why, from where, and by which plugin version.
    fn dlq_headers(
        &self,
        why: &str,
        topic: String,
        partition: i32,
        offset: i64,
    ) -> Vec<(&'static str, String)> {
        vec![
            // The reason may come from the plugin: bounded, so a dead letter always fits.
            ("sluice.dlq.reason", truncate(why, MAX_REASON).to_string()),
            (
                "sluice.dlq.pipeline",
                self.spec.pipeline.manifest.name.clone(),
            ),
            ("sluice.dlq.plugin.version", self.version.clone()),
            ("sluice.dlq.topic", topic),
            ("sluice.dlq.partition", partition.to_string()),
            ("sluice.dlq.offset", offset.to_string()),
        ]
    }

    fn dead_letter(&mut self, r: &Record, why: &str, attempts: u32) -> Vec<Routed> {
        let (topic, partition) = self.origin(r);
        let mut extra = self.dlq_headers(why, topic, partition, self.source_offset(r));
        extra.push(("sluice.dlq.attempts", attempts.to_string()));
        let m = &self.spec.pipeline.manifest;
        let dlq = m.dead_letter.clone();
        match self.forward(r, &dlq, extra, true) {
            Ok(routed) => vec![routed],
            Err(e) => {
                // Only if the dead-letter topic cannot be created: the record cannot be kept
                // anywhere, so say so loudly.
                tracing::error!(pipeline = %self.spec.pipeline.manifest.name, error = %e, "cannot dead-letter a record");
                Vec::new()
            }
        }
    }

    /// A record behind the watermark, set apart in the late topic with the reason.
    fn late(&mut self, r: &Record, wm: i64) -> Vec<Routed> {
        let m = &self.spec.pipeline.manifest;
        let Some(e) = m.event_time.as_ref() else {
            return Vec::new();
        };
        let topic = e.late_topic.clone();
        let why = format!(
            "late record: event time {} is {} ms behind the watermark {wm} (lateness_ms = {})",
            r.timestamp,
            wm - r.timestamp,
            e.lateness_ms
        );
        let mut extra =
            self.dlq_headers(&why, self.spec.topic.clone(), self.spec.partition, r.offset);
        extra.push(("sluice.dlq.watermark", wm.to_string()));
        match self.forward(r, &topic, extra, true) {
            Ok(routed) => vec![routed],
            Err(e) => self.dead_letter(r, &format!("cannot write to the late topic: {e}"), 1),
        }
    }

    /// A batch no record of which can be read: one dead letter that names its offsets and
    /// carries nothing of it (its bytes stay in the log for whoever wants to look).
    fn dead_letter_batch(&mut self, first: i64, last: i64, why: &str) -> Vec<Routed> {
        let spec = self.spec.clone();
        let m = &spec.pipeline.manifest;
        let reason = format!("undecodable batch at offsets {first}..={last}: {why}");
        let mut headers =
            self.dlq_headers(&reason, self.spec.topic.clone(), self.spec.partition, first);
        headers.push(("sluice.dlq.last.offset", last.to_string()));
        let headers = headers
            .into_iter()
            .map(|(k, v)| (Bytes::from_static(k.as_bytes()), Some(Bytes::from(v))))
            .collect();
        let dlq = m.dead_letter.clone();
        match self.resolve(&dlq, None, false, true) {
            Ok((topic, partition)) => vec![Routed {
                topic,
                partition,
                record: Record {
                    offset: 0,
                    timestamp: now_ms(),
                    key: None,
                    value: None,
                    headers,
                },
            }],
            Err(e) => {
                tracing::error!(pipeline = %m.name, error = %e, "cannot dead-letter an undecodable batch");
                Vec::new()
            }
        }
    }

    fn retry(&mut self, r: &Record, attempts: u32) -> Vec<Routed> {
        let m = &self.spec.pipeline.manifest;
        let (topic, partition) = self.origin(r);
        let extra = vec![
            (H_ATTEMPTS, attempts.to_string()),
            (
                H_NOT_BEFORE,
                (now_ms() + m.retry.backoff_ms as i64).to_string(),
            ),
            (H_TOPIC, topic),
            (H_PARTITION, partition.to_string()),
            (H_OFFSET, self.source_offset(r).to_string()),
        ];
        let rt = m.retry_topic.clone();
        match self.forward(r, &rt, extra, true) {
            Ok(routed) => vec![routed],
            Err(e) => self.dead_letter(r, &format!("cannot retry: {e}"), attempts),
        }
    }

    /// The tick period has passed and the instance has not paused its ticks
    /// (`host.pause-ticks`).
    fn tick_due(&self) -> bool {
        Instant::now() >= self.next_tick && !self.instance.ticks_paused()
    }

    fn tick(&mut self) -> Result<(), Restart> {
        self.next_tick = next_tick(self.spec.pipeline.manifest.tick_ms);
        if self.io.replaying() {
            // Written-ahead output must follow what the log already holds from before a crash.
            return Ok(());
        }
        let now = now_ms();
        Stats::add(&self.spec.pipeline.stats.ticks, 1);
        let outs = self.instance.tick(now)?;
        if outs.is_empty() {
            return Ok(());
        }
        let routed = self
            .check_outputs(outs, now, None)
            .map_err(|e| Restart::Error(format!("invalid output from tick: {e}")))?;
        // Written ahead: this output depends on the clock, not on the input, so a replay
        // would not reproduce it.
        let pending = routed.iter().map(pending_record).collect();
        self.checkpoint(pending)?;
        self.write(routed, 0)
    }

    fn checkpoint(&mut self, pending: Vec<PendingRecord>) -> Result<(), Restart> {
        let state = self.instance.snapshot()?;
        self.io
            .commit(Checkpoint {
                producer_id: 0,
                next_offset: self.next,
                state: Bin(state),
                plugin_version: self.version.clone(),
                emitted: BTreeMap::new(),
                pending,
                watermarks: self
                    .tracker
                    .as_ref()
                    .map(|t| t.state.clone())
                    .unwrap_or_default(),
            })
            .map_err(err)?;
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Hot reload: the new code takes over this task's state at a batch boundary, or, if it
    /// cannot, the old code keeps running.
    fn switch_version(&mut self) {
        let started = Instant::now();
        let d = self.spec.pipeline.deployed();
        self.generation = d.generation;
        let name = self.spec.pipeline.manifest.name.clone();
        let attempt = (|| -> Result<Instance, String> {
            let state = self.instance.snapshot().map_err(|e| e.to_string())?;
            let mut fresh = self
                .spec
                .engine
                .instantiate(&d.code, self.spec.task_info(), d.limits)
                .map_err(|e| e.to_string())?;
            fresh
                .init(&d.config_json)
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("new version refused its config: {e}"))?;
            fresh
                .restore(&state)
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("new version could not restore the state: {e}"))?;
            Ok(fresh)
        })();
        match attempt {
            Ok(fresh) => {
                self.instance = fresh;
                self.version = d.code.version.clone();
                self.dirty = true;
                let us = started.elapsed().as_micros() as u64;
                self.spec
                    .pipeline
                    .stats
                    .last_reload_pause_us
                    .fetch_max(us, Ordering::Relaxed);
                tracing::info!(pipeline = %name, topic = %self.spec.topic, partition = self.spec.partition, version = %self.version, pause_us = us, "task switched to the new version");
            }
            Err(e) => {
                tracing::error!(pipeline = %name, topic = %self.spec.topic, partition = self.spec.partition, error = %e, "hot reload failed; the old version keeps running");
                self.spec.pipeline.stats.error(e);
            }
        }
    }
}

const MAX_REASON: usize = 4096;

/// "Never" as a wait: a year is as good, and an `Instant` that far cannot overflow.
const NO_TICK: Duration = Duration::from_secs(365 * 24 * 3600);

/// When the next tick is due; `tick_ms` 0 means never.
fn next_tick(tick_ms: u64) -> Instant {
    let every = match tick_ms {
        0 => NO_TICK,
        ms => Duration::from_millis(ms),
    };
    Instant::now() + every
}

fn pending_record(r: &Routed) -> PendingRecord {
    PendingRecord {
        topic: r.topic.name.clone(),
        partition: r.partition,
        key: r.record.key.as_ref().map(|b| b.to_vec()),
        value: r.record.value.as_ref().map(|b| b.to_vec()),
        headers: r
            .record
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    Bin(v.as_ref().map(|v| v.to_vec()).unwrap_or_default()),
                )
            })
            .collect(),
        timestamp: r.record.timestamp,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// A record's headers minus the host's own retry bookkeeping.
fn user_headers(r: &Record, kind: Kind) -> impl Iterator<Item = &(Bytes, Option<Bytes>)> + '_ {
    r.headers
        .iter()
        .filter(move |(k, _)| kind == Kind::Input || !k.starts_with(b"sluice.retry."))
}

fn header_str(r: &Record, name: &str) -> Option<String> {
    r.headers
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == name.as_bytes())
        .and_then(|(_, v)| v.as_ref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

fn header_i64(r: &Record, name: &str) -> Option<i64> {
    header_str(r, name)?.parse().ok()
}
