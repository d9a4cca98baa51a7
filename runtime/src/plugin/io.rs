//! What a task needs from the outside world: its input partition, its output topics and a
//! place to keep its checkpoint. [`super::task`] decides everything else and is the same
//! wherever it runs.
//!
//! Two implementations:
//! - [`LocalIo`]: inside the broker. Reads the log directly; writes as an idempotent producer
//!   whose replay after a crash skips what is already in the log; the checkpoint is a file.
//! - `worker::ClusterIo`: in a `sluice worker` on any Kafka cluster. Reads with a
//!   read_committed consumer; outputs, state and input offsets go in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::checkpoint::{Bin, Checkpoint};
use super::output::{self, Writer};
use super::task::Waiting;
use super::watermark::Announcement;
use crate::broker::Broker;
use crate::records::Record;

/// An output topic as a task sees it when it routes records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub name: String,
    pub partitions: usize,
    pub max_message_bytes: usize,
}

/// One record on its way to a partition.
#[derive(Clone)]
pub struct Routed {
    pub topic: Arc<Dest>,
    pub partition: i32,
    pub record: Record,
}

/// One entry of the input, in offset order.
#[derive(Clone)]
pub enum Item {
    Data(Record),
    /// A control record: a watermark announcement (if one of ours and readable) or anything
    /// else (a transaction marker), which is stepped over.
    Control {
        offset: i64,
        announcement: Option<Announcement>,
    },
    /// A batch whose records cannot be decoded.
    Bad {
        first: i64,
        last: i64,
        why: String,
    },
}

/// What one read found.
pub struct Read {
    pub items: Vec<Item>,
    /// The end of what is readable now (the high watermark, or the last stable offset).
    pub high: i64,
    pub log_start: i64,
    pub moved: Moved,
}

pub enum Moved {
    No,
    /// The task's position is outside the input (retention, a re-created topic).
    OutOfRange,
    /// Nothing readable before this offset (records stepped over).
    StepTo(i64),
}

pub trait TaskIo: Send {
    /// The task's last committed checkpoint, or a fresh one at the input's start (or end, if
    /// `earliest` is false). Called at the start of every incarnation: whatever was written
    /// after the checkpoint is either dropped here or skipped on replay.
    fn open(&mut self, earliest: bool) -> Result<Checkpoint, String>;
    /// Committed input from `next` on.
    fn read(&mut self, next: i64) -> Result<Read, String>;
    /// Input readable from now on wakes [`TaskIo::wait`].
    fn mark_seen(&mut self);
    /// Blocks until what `w` waits for (see [`Waiting`]).
    fn wait(&mut self, w: &Waiting);
    /// The same wait as a future, so the task holds no thread while it waits (the broker's
    /// task pool); None when this I/O can only wait by blocking (then `wait` is used).
    fn park(&mut self, _w: &Waiting) -> Option<Parked> {
        None
    }
    /// Resolves an output topic a plugin named, creating it if needed.
    fn topic(&mut self, name: &str) -> Result<Arc<Dest>, String>;
    fn write(&mut self, out: Vec<Routed>) -> Result<(), String>;
    /// Tells the readers of `topic` (every partition, or the one numbered like `only`) this
    /// task's watermark, after what it has written there.
    fn announce(&mut self, topic: &str, a: &Announcement, only: Option<i32>) -> Result<(), String>;
    /// Whether output from before a crash is still being replayed (output that is not a
    /// function of the input must wait until it is not).
    fn replaying(&mut self) -> bool;
    /// Topics this task has written to.
    fn topics_written(&self) -> BTreeSet<String>;
    /// Makes the output so far and `c` (the input position and state that match it) durable
    /// together.
    fn commit(&mut self, c: Checkpoint) -> Result<(), String>;
    /// The task is no longer this process's to run (its partition moved to another worker).
    fn revoked(&self) -> bool {
        false
    }
}

/// A task's wait, as [`TaskIo::park`] gives it.
pub type Parked = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A task inside the broker.
pub struct LocalIo {
    broker: Arc<Broker>,
    topic: String,
    partition: i32,
    checkpoint: PathBuf,
    rt: tokio::runtime::Handle,
    /// Starts at the first `open`.
    writer: Option<Writer>,
    /// Changes on every append to the input partition.
    appended: Option<tokio::sync::watch::Receiver<()>>,
    /// The pipeline's principal, whose ACLs bound the topics a plugin names at run time.
    principal: Option<String>,
    /// Topics found writable, and when: checked again after [`ACL_RECHECK`], so a revoked
    /// grant takes effect without an ACL lookup per record.
    writable: HashMap<String, std::time::Instant>,
}

const ACL_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl LocalIo {
    pub fn new(
        broker: Arc<Broker>,
        topic: String,
        partition: i32,
        checkpoint: PathBuf,
        rt: tokio::runtime::Handle,
    ) -> LocalIo {
        LocalIo {
            broker,
            topic,
            partition,
            checkpoint,
            rt,
            writer: None,
            appended: None,
            principal: None,
            writable: HashMap::new(),
        }
    }

    /// Output goes only to topics `principal` may write (and create, if they are new), when
    /// ACLs are on: a plugin names its output topics at run time, and the host's check of the
    /// manifest covers only the topics the manifest names.
    pub fn acting_as(mut self, principal: &str) -> LocalIo {
        self.principal = Some(principal.to_string());
        self
    }

    /// `Ok(true)`: checked just now (and allowed), to be remembered once the writer takes it.
    fn may_write(&mut self, name: &str) -> Result<bool, String> {
        use super::PIPELINE_HOST;
        let acls = &self.broker.acls;
        let Some(principal) = self.principal.as_ref().filter(|_| acls.enabled()) else {
            return Ok(false);
        };
        let now = std::time::Instant::now();
        if self
            .writable
            .get(name)
            .is_some_and(|at| now.duration_since(*at) < ACL_RECHECK)
        {
            return Ok(false);
        }
        if !self.broker.may_write_topic(principal, PIPELINE_HOST, name) {
            return Err(format!(
                "not authorized: {principal} may not write topic {name}"
            ));
        }
        if self.broker.topic(name).is_none()
            && !self.broker.may_create_topic(principal, PIPELINE_HOST, name)
        {
            return Err(format!(
                "not authorized: {principal} may not create topic {name}"
            ));
        }
        Ok(true)
    }

    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        let t = self.broker.topic(&self.topic)?;
        Some(t.partition(self.partition)?.subscribe_appends())
    }

    fn writer(&mut self) -> Result<&mut Writer, String> {
        self.writer
            .as_mut()
            .ok_or_else(|| "the task's output is not open".to_string())
    }
}

impl TaskIo for LocalIo {
    fn open(&mut self, earliest: bool) -> Result<Checkpoint, String> {
        let topic = output::ensure_topic(&self.broker, &self.topic).map_err(err)?;
        let part = topic
            .partition(self.partition)
            .ok_or_else(|| format!("{}-{} does not exist", self.topic, self.partition))?;
        let ckpt = match Checkpoint::load(&self.checkpoint).map_err(err)? {
            Some(c) => c,
            None => {
                let wm = part.watermarks();
                let c = Checkpoint {
                    producer_id: self.broker.producer_ids.next().map_err(err)?,
                    next_offset: if earliest { wm.log_start } else { wm.high },
                    state: Bin::default(),
                    plugin_version: String::new(),
                    emitted: BTreeMap::new(),
                    pending: Vec::new(),
                    watermarks: Default::default(),
                };
                // Saved before any output, so the producer id of what we write is never lost.
                c.save(&self.checkpoint).map_err(err)?;
                c
            }
        };
        self.appended = Some(part.subscribe_appends());
        self.writer = Some(Writer::new(
            self.broker.clone(),
            ckpt.producer_id,
            &ckpt.emitted,
        ));
        Ok(ckpt)
    }

    fn read(&mut self, next: i64) -> Result<Read, String> {
        let topic = self
            .broker
            .topic(&self.topic)
            .ok_or_else(|| format!("input topic {} disappeared", self.topic))?;
        let part = topic
            .partition(self.partition)
            .ok_or_else(|| "input partition disappeared".to_string())?;
        let (wm, slice) = part.plan_read(next).map_err(err)?;
        let none = |moved| Read {
            items: Vec::new(),
            high: wm.high,
            log_start: wm.log_start,
            moved,
        };
        if next < wm.log_start || next > wm.high {
            return Ok(none(Moved::OutOfRange));
        }
        let Some(slice) = slice else {
            return Ok(none(Moved::No));
        };
        let mut data = slice.read(READ_BYTES, true).map_err(err)?;
        // Pipelines read committed: nothing from the last stable offset on, and no record of
        // an aborted transaction (its marker, a control item, passes).
        data.truncate(crate::log::batch::before_offset(&data, wm.stable));
        if data.is_empty() {
            return Ok(none(Moved::No));
        }
        let covered = last_offset_of(&data);
        let aborted = aborted_batches(&data, || {
            part.aborted_between(next, covered.map_or(next, |c| c + 1))
        });
        let mut items = Vec::new();
        for b in crate::records::decode_each(data).map_err(err)? {
            if b.last_offset < next || aborted.contains(&b.base_offset) {
                continue;
            }
            match b.records {
                Err(e) => items.push(Item::Bad {
                    first: b.base_offset.max(next),
                    last: b.last_offset,
                    why: e.to_string(),
                }),
                Ok(records) => {
                    for r in records.into_iter().filter(|r| r.offset >= next) {
                        items.push(if b.control {
                            Item::Control {
                                offset: r.offset,
                                announcement: if Announcement::is_ours(r.key.as_deref()) {
                                    r.value.as_deref().and_then(Announcement::decode)
                                } else {
                                    None
                                },
                            }
                        } else {
                            Item::Data(r)
                        });
                    }
                }
            }
        }
        if items.is_empty() {
            // Records all below `next` (or an empty batch): step over them.
            if let Some(end) = covered.filter(|&end| end >= next) {
                return Ok(none(Moved::StepTo(end + 1)));
            }
        }
        Ok(Read {
            items,
            high: wm.high,
            log_start: wm.log_start,
            moved: Moved::No,
        })
    }

    fn mark_seen(&mut self) {
        if let Some(a) = self.appended.as_mut() {
            a.borrow_and_update();
        }
    }

    fn wait(&mut self, w: &Waiting) {
        if let Some(parked) = self.park(w) {
            self.rt.block_on(parked);
        }
    }

    fn park(&mut self, w: &Waiting) -> Option<Parked> {
        let mut appended = self.appended.clone()?;
        if appended.has_changed().is_err() {
            // The partition was re-created: follow the new one.
            if let Some(rx) = self.subscribe() {
                self.appended = Some(rx);
            }
            return Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
        }
        let w = w.clone();
        Some(Box::pin(async move {
            let n = w.pipeline.wake.notified();
            let t = w.topology.changed.notified();
            tokio::pin!(n, t);
            n.as_mut().enable();
            t.as_mut().enable();
            if w.changed() {
                return;
            }
            let deadline = tokio::time::Instant::from_std(w.until);
            tokio::select! {
                _ = n => {}
                _ = t => {}
                _ = appended.changed(), if w.input => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }))
    }

    fn topic(&mut self, name: &str) -> Result<Arc<Dest>, String> {
        let checked = self.may_write(name)?;
        let dest = self.writer()?.topic(name)?;
        if checked {
            // Only names the writer took (valid, within its allowance of new topics) are
            // remembered; stale entries go when there are many.
            if self.writable.len() >= 1024 {
                self.writable.retain(|_, at| at.elapsed() < ACL_RECHECK);
            }
            self.writable
                .insert(name.to_string(), std::time::Instant::now());
        }
        Ok(dest)
    }

    fn write(&mut self, out: Vec<Routed>) -> Result<(), String> {
        self.writer()?.write(out).map_err(err)
    }

    fn announce(&mut self, topic: &str, a: &Announcement, only: Option<i32>) -> Result<(), String> {
        self.writer()?.announce(topic, a, only).map_err(err)
    }

    fn replaying(&mut self) -> bool {
        self.writer.as_mut().is_some_and(Writer::replaying)
    }

    fn topics_written(&self) -> BTreeSet<String> {
        self.writer
            .as_ref()
            .map(Writer::topics_written)
            .unwrap_or_default()
    }

    fn commit(&mut self, mut c: Checkpoint) -> Result<(), String> {
        let w = self.writer()?;
        // Outputs first on disk, then the checkpoint that counts them.
        w.make_durable().map_err(err)?;
        c.producer_id = w.producer_id;
        c.emitted = w.emitted();
        c.save(&self.checkpoint).map_err(err)
    }
}

/// Most bytes read from the log at once.
const READ_BYTES: usize = 1 << 20;

/// Base offsets of the data batches in `data` that belong to aborted transactions.
/// `aborted` is asked only when a transactional batch is there.
fn aborted_batches(
    data: &[u8],
    aborted: impl FnOnce() -> Vec<crate::broker::producers::AbortedTxn>,
) -> Vec<i64> {
    let txn: Vec<(i64, i64)> = crate::log::batch::headers(data)
        .filter(|(_, h)| h.is_transactional() && !h.is_control())
        .map(|(_, h)| (h.producer_id, h.base_offset))
        .collect();
    if txn.is_empty() {
        return Vec::new();
    }
    let aborted = aborted();
    txn.into_iter()
        .filter(|&(pid, base)| {
            aborted
                .iter()
                .any(|a| a.producer_id == pid && base >= a.first_offset && base <= a.last_offset)
        })
        .map(|(_, base)| base)
        .collect()
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
