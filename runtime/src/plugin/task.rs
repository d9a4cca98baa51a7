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
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::checkpoint::{Bin, Checkpoint, PendingRecord};
use super::engine::{self, Batch, CallError, Instance, Outcome, OutputRecord, PluginEngine};
use super::manifest::Start;
use super::output::{self, Routed, Writer, MAX_HEADERS, MAX_OUTPUTS_PER_RECORD};
use super::pipeline::{Pipeline, Stats, TaskProgress};
use crate::broker::{now_ms, Broker};
use crate::records::Record;

/// Most records handed to the plugin in one call, and most bytes read from the log at once.
const MAX_CALL_RECORDS: usize = 1000;
const READ_BYTES: usize = 1 << 20;
/// How often progress is checkpointed while records flow.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);
/// Pause before restarting after an error that is not a poison record.
const ERROR_BACKOFF: Duration = Duration::from_millis(1000);

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
    pub broker: Arc<Broker>,
    pub engine: Arc<PluginEngine>,
    pub pipeline: Arc<Pipeline>,
    pub topic: String,
    pub partition: i32,
    pub kind: Kind,
    pub checkpoint: PathBuf,
    pub rt: tokio::runtime::Handle,
}

impl TaskSpec {
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        let t = self.broker.topic(&self.topic)?;
        Some(t.partition(self.partition)?.subscribe_appends())
    }

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

/// Runs the task until its pipeline stops. Never panics on plugin or input data.
pub fn run(spec: TaskSpec) {
    let mut iso = Isolation::default();
    let name = spec.pipeline.manifest.name.clone();
    while !spec.pipeline.stopping() {
        match Incarnation::start(&spec).and_then(|mut i| i.run(&mut iso)) {
            Ok(()) => return,
            Err(Restart::Trap { first, last, why }) => {
                Stats::add(&spec.pipeline.stats.traps, 1);
                tracing::warn!(pipeline = %name, topic = %spec.topic, partition = spec.partition, first, last, error = %why, "plugin trapped; restarting from the last checkpoint");
                spec.pipeline.stats.error(why.clone());
                if first == last {
                    iso.poison.insert(first, why);
                } else {
                    iso.window = Some((first, last));
                }
            }
            Err(Restart::Error(e)) => {
                tracing::error!(pipeline = %name, topic = %spec.topic, partition = spec.partition, error = %e, "task failed; restarting from the last checkpoint");
                spec.pipeline.stats.error(e);
                let p = spec.pipeline.clone();
                spec.rt.block_on(async move {
                    let n = p.wake.notified();
                    tokio::pin!(n);
                    n.as_mut().enable();
                    if !p.stopping() {
                        let _ = tokio::time::timeout(ERROR_BACKOFF, n).await;
                    }
                });
            }
        }
    }
}

/// One life of the task, from a checkpoint to a stop or a failure.
struct Incarnation<'a> {
    spec: &'a TaskSpec,
    instance: Instance,
    generation: u64,
    version: String,
    writer: Writer,
    next: i64,
    dirty: bool,
    last_checkpoint: Instant,
    next_tick: Instant,
    /// Changes on every append to the input partition.
    appended: tokio::sync::watch::Receiver<u64>,
}

fn err(e: impl std::fmt::Display) -> Restart {
    Restart::Error(e.to_string())
}

impl<'a> Incarnation<'a> {
    fn start(spec: &'a TaskSpec) -> Result<Incarnation<'a>, Restart> {
        let m = &spec.pipeline.manifest;
        let topic = output::ensure_topic(&spec.broker, &spec.topic).map_err(err)?;
        let part = topic
            .partition(spec.partition)
            .ok_or_else(|| err(format!("{}-{} does not exist", spec.topic, spec.partition)))?;
        let ckpt = match Checkpoint::load(&spec.checkpoint).map_err(err)? {
            Some(c) => c,
            None => {
                let wm = part.watermarks();
                let c = Checkpoint {
                    producer_id: spec.broker.producer_ids.next().map_err(err)?,
                    next_offset: match (spec.kind, m.start) {
                        (Kind::Retry, _) | (_, Start::Earliest) => wm.log_start,
                        (_, Start::Latest) => wm.high,
                    },
                    state: Bin::default(),
                    plugin_version: String::new(),
                    emitted: BTreeMap::new(),
                    pending: Vec::new(),
                };
                // Saved before any output, so the producer id of what we write is never lost.
                c.save(&spec.checkpoint).map_err(err)?;
                c
            }
        };
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
        let appended = part.subscribe_appends();
        let mut writer = Writer::new(spec.broker.clone(), ckpt.producer_id, &ckpt.emitted);
        let dirty = !ckpt.pending.is_empty();
        if dirty {
            let mut routed = Vec::with_capacity(ckpt.pending.len());
            for p in ckpt.pending {
                let t = writer.topic(&p.topic).map_err(err)?;
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
            writer.write(routed).map_err(err)?;
        }
        Ok(Incarnation {
            spec,
            instance,
            generation: d.generation,
            version: d.code.version.clone(),
            writer,
            next: ckpt.next_offset,
            dirty,
            last_checkpoint: Instant::now(),
            next_tick: Instant::now() + Duration::from_millis(m.tick_ms),
            appended,
        })
    }

    fn pipeline(&self) -> &Pipeline {
        &self.spec.pipeline
    }

    fn run(&mut self, iso: &mut Isolation) -> Result<(), Restart> {
        loop {
            if self.pipeline().stopping() {
                if self.dirty {
                    self.checkpoint(Vec::new())?;
                }
                return Ok(());
            }
            if self.pipeline().generation.load(Ordering::Acquire) != self.generation {
                self.switch_version();
            }
            // Appends from here on wake `wait`: mark what the read below will see as seen.
            self.appended.borrow_and_update();
            let (records, high, hold) = self.read()?;
            self.progress(high);
            if records.is_empty() {
                if self.dirty && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    self.checkpoint(Vec::new())?;
                }
                if Instant::now() >= self.next_tick {
                    self.tick()?;
                    continue;
                }
                self.wait(hold);
                continue;
            }
            self.process(records, iso)?;
            if Instant::now() >= self.next_tick {
                self.tick()?;
            }
            if self.dirty && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.checkpoint(Vec::new())?;
            }
        }
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
            },
        );
    }

    /// Parks until something may have changed: an append, a stop or reload, the next tick, or
    /// `hold` (a retry record's due time).
    fn wait(&mut self, hold: Option<Instant>) {
        let p = self.spec.pipeline.clone();
        let mut appended = self.appended.clone();
        if appended.has_changed().is_err() {
            // The partition was re-created: follow the new one.
            if let Some(rx) = self.spec.subscribe() {
                self.appended = rx;
            }
            std::thread::sleep(Duration::from_millis(50));
            return;
        }
        let mut until = self.next_tick;
        if let Some(h) = hold {
            until = until.min(h);
        }
        if self.dirty {
            until = until.min(self.last_checkpoint + CHECKPOINT_EVERY);
        }
        let generation = self.generation;
        self.spec.rt.block_on(async move {
            let n = p.wake.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if p.stopping() || p.generation.load(Ordering::Acquire) != generation {
                return;
            }
            let deadline = tokio::time::Instant::from_std(until);
            tokio::select! {
                _ = n => {}
                _ = appended.changed(), if hold.is_none() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        });
    }

    /// Records from `next` on: (records, high watermark, when the first held-back retry is due).
    #[allow(clippy::type_complexity)]
    fn read(&mut self) -> Result<(Vec<Record>, i64, Option<Instant>), Restart> {
        let topic = self
            .spec
            .broker
            .topic(&self.spec.topic)
            .ok_or_else(|| err(format!("input topic {} disappeared", self.spec.topic)))?;
        let part = topic
            .partition(self.spec.partition)
            .ok_or_else(|| err("input partition disappeared"))?;
        let (wm, slice) = part.plan_read(self.next).map_err(err)?;
        if self.next < wm.log_start || self.next > wm.high {
            let to =
                if self.next < wm.log_start || self.pipeline().manifest.start == Start::Earliest {
                    wm.log_start
                } else {
                    wm.high
                };
            tracing::warn!(pipeline = %self.pipeline().manifest.name, topic = %self.spec.topic, partition = self.spec.partition, from = self.next, to, "pipeline position outside the log (retention or a re-created topic); moving");
            self.next = to;
            self.dirty = true;
            return Ok((Vec::new(), wm.high, None));
        }
        let Some(slice) = slice else {
            return Ok((Vec::new(), wm.high, None));
        };
        let data = slice.read(READ_BYTES, true).map_err(err)?;
        let covered = last_offset_of(&data);
        let mut records = crate::records::decode_batches(data).map_err(err)?;
        records.retain(|r| r.offset >= self.next);
        if records.is_empty() {
            // A batch of control records or records all below `next`: step over it.
            if let Some(end) = covered {
                self.next = self.next.max(end + 1);
            }
            return Ok((Vec::new(), wm.high, None));
        }
        let mut hold = None;
        if self.spec.kind == Kind::Retry {
            let now = now_ms();
            if let Some(i) = records
                .iter()
                .position(|r| header_i64(r, H_NOT_BEFORE).unwrap_or(0) > now)
            {
                let due = header_i64(&records[i], H_NOT_BEFORE).unwrap_or(now);
                hold = Some(Instant::now() + Duration::from_millis((due - now).max(1) as u64));
                records.truncate(i);
            }
        }
        Ok((records, wm.high, hold))
    }

    fn process(&mut self, records: Vec<Record>, iso: &mut Isolation) -> Result<(), Restart> {
        let mut i = 0;
        while i < records.len() {
            let r = &records[i];
            if let Some(why) = iso.poison.get(&r.offset).cloned() {
                let out = self.dead_letter(r, &why, self.attempts(r));
                self.write(out, 1)?;
                self.next = r.offset + 1;
                iso.poison.remove(&r.offset);
                // Checkpoint past the poison now, so a later one does not replay far.
                self.checkpoint(Vec::new())?;
                i += 1;
                continue;
            }
            let in_window = iso
                .window
                .is_some_and(|(a, b)| r.offset >= a && r.offset <= b);
            let origin = self.origin(r);
            let mut end = i + 1;
            if !in_window {
                while end < records.len()
                    && end - i < MAX_CALL_RECORDS
                    && self.origin(&records[end]) == origin
                    && !iso.poison.contains_key(&records[end].offset)
                    && !iso
                        .window
                        .is_some_and(|(a, _)| records[end].offset >= a && r.offset < a)
                {
                    end += 1;
                }
            }
            let chunk = &records[i..end];
            self.call(chunk, origin)?;
            if let Some((_, b)) = iso.window {
                if chunk[chunk.len() - 1].offset >= b {
                    iso.window = None;
                }
            }
            i = end;
        }
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
        self.writer.write(out).map_err(err)?;
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
                Some(out) => match self.forward(r, &out, Vec::new()) {
                    Ok(routed) => vec![routed],
                    Err(e) => self.dead_letter(r, &e, self.attempts(r)),
                },
                None => self.dead_letter(
                    r,
                    "the plugin kept the record but the pipeline has no output topic",
                    self.attempts(r),
                ),
            },
            Outcome::Replace(outs) => match self.check_outputs(outs, r.timestamp) {
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

    fn resolve(
        &mut self,
        topic: &str,
        key: Option<Bytes>,
    ) -> Result<(Arc<crate::broker::Topic>, i32), String> {
        let t = self.writer.topic(topic)?;
        let p = output::partition_for(key.as_deref(), t.partitions.len(), self.spec.partition);
        Ok((t, p))
    }

    fn check_outputs(
        &mut self,
        outs: Vec<OutputRecord>,
        default_ts: i64,
    ) -> Result<Vec<Routed>, String> {
        if outs.len() > MAX_OUTPUTS_PER_RECORD {
            return Err(format!(
                "{} output records for one input (at most {MAX_OUTPUTS_PER_RECORD})",
                outs.len()
            ));
        }
        let m = &self.spec.pipeline.manifest;
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
            let (topic, partition) = self.resolve(&name, record.key.clone())?;
            let size = output::record_size(&record);
            if size > topic.max_message_bytes() {
                return Err(format!(
                    "a {size}-byte record exceeds max.message.bytes of '{name}' ({})",
                    topic.max_message_bytes()
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
    ) -> Result<Routed, String> {
        let mut headers: Vec<(Bytes, Option<Bytes>)> =
            user_headers(r, self.spec.kind).cloned().collect();
        headers.extend(
            extra
                .into_iter()
                .map(|(k, v)| (Bytes::from_static(k.as_bytes()), Some(Bytes::from(v)))),
        );
        let (topic, partition) = self.resolve(topic, r.key.clone())?;
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

    fn dead_letter(&mut self, r: &Record, why: &str, attempts: u32) -> Vec<Routed> {
        let m = &self.spec.pipeline.manifest;
        let (topic, partition) = self.origin(r);
        let extra = vec![
            // The reason may come from the plugin: bounded, so a dead letter always fits.
            ("sluice.dlq.reason", truncate(why, MAX_REASON).to_string()),
            ("sluice.dlq.pipeline", m.name.clone()),
            ("sluice.dlq.plugin.version", self.version.clone()),
            ("sluice.dlq.topic", topic),
            ("sluice.dlq.partition", partition.to_string()),
            ("sluice.dlq.offset", self.source_offset(r).to_string()),
            ("sluice.dlq.attempts", attempts.to_string()),
        ];
        let dlq = m.dead_letter.clone();
        match self.forward(r, &dlq, extra) {
            Ok(routed) => vec![routed],
            Err(e) => {
                // Only if the dead-letter topic cannot be created: the record cannot be kept
                // anywhere, so say so loudly.
                tracing::error!(pipeline = %self.spec.pipeline.manifest.name, error = %e, "cannot dead-letter a record");
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
        match self.forward(r, &rt, extra) {
            Ok(routed) => vec![routed],
            Err(e) => self.dead_letter(r, &format!("cannot retry: {e}"), attempts),
        }
    }

    fn tick(&mut self) -> Result<(), Restart> {
        let tick_ms = self.spec.pipeline.manifest.tick_ms;
        self.next_tick = Instant::now() + Duration::from_millis(tick_ms);
        let now = now_ms();
        let outs = self.instance.tick(now)?;
        if outs.is_empty() {
            return Ok(());
        }
        let routed = self
            .check_outputs(outs, now)
            .map_err(|e| Restart::Error(format!("invalid output from tick: {e}")))?;
        // Written ahead: this output depends on the clock, not on the input, so a replay
        // would not reproduce it.
        let pending = routed
            .iter()
            .map(|r| PendingRecord {
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
            })
            .collect();
        self.checkpoint(pending)?;
        self.write(routed, 0)
    }

    fn checkpoint(&mut self, pending: Vec<PendingRecord>) -> Result<(), Restart> {
        let state = self.instance.snapshot()?;
        Checkpoint {
            producer_id: self.writer.producer_id,
            next_offset: self.next,
            state: Bin(state),
            plugin_version: self.version.clone(),
            emitted: self.writer.emitted(),
            pending,
        }
        .save(&self.spec.checkpoint)
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

/// The last offset covered by the whole batches in `data`.
fn last_offset_of(data: &[u8]) -> Option<i64> {
    let mut at = 0;
    let mut last = None;
    while let Some(size) = crate::log::batch::framed_size(&data[at..]) {
        if at + size > data.len() {
            break;
        }
        let h = crate::log::batch::parse_header(&data[at..at + size]).ok()?;
        last = Some(h.base_offset + i64::from(h.last_offset_delta));
        at += size;
    }
    last
}
