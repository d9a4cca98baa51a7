//! Durable mode: a produce acknowledged only once its records are fsynced (Kafka's
//! `flush.messages`; 1, or the broker's `durability = "fsync"`, for every record).
//!
//! Group commit: one fsync at a time per partition, covering every record written before it
//! started. A produce that needs offsets below `upto` durable waits on the partition's gate:
//! if no sync runs, it starts one; else it waits for the running one, and then for the next
//! if that one started before its records were written. So under load each fsync covers
//! every request that arrived during the previous one, and a fsync costs one request's wait,
//! not one per request.
//!
//! Invariant: the gate's durable offset D is published only after a [`SyncJob`] whose `upto`
//! is D has returned from fsync; every acknowledged durable produce ended below D. A failed
//! fsync leaves the page cache in an unknown state (a retry may "succeed" with the data gone),
//! so the partition stops acknowledging durable produces until a restart rechecks its
//! segments (KAFKA_STORAGE_ERROR), and its recovery point is capped so that start-up checks
//! the segments the failed sync covered.
//!
//! Records become readable when written, before they are durable (as on a Kafka leader
//! before replication): after a power cut a consumer may have read an unacknowledged record
//! that is gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::watch;

use super::{lock, Partition};

/// Durability fsyncs run, and the records they made durable (their ratio is the group
/// commit's batching), for `/metrics`.
pub static FSYNCS: AtomicU64 = AtomicU64::new(0);
pub static FSYNCED_RECORDS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Error, Clone)]
#[error("fsync of the partition's log failed: {0}")]
pub struct SyncFailed(pub String);

/// A partition's fsync in progress, shared by every produce waiting on it.
pub(super) struct SyncGate {
    state: Mutex<GateState>,
    /// Records below this offset are durable.
    durable: watch::Sender<i64>,
    /// Fsyncs run for this partition.
    syncs: AtomicU64,
}

#[derive(Default)]
struct GateState {
    running: bool,
    failed: Option<SyncFailed>,
}

impl SyncGate {
    pub(super) fn new(durable: i64) -> SyncGate {
        SyncGate {
            state: Mutex::new(GateState::default()),
            durable: watch::channel(durable).0,
            syncs: AtomicU64::new(0),
        }
    }
}

impl Partition {
    /// Whether the records written so far leave `flush.messages` or more unsynced: the
    /// produce that wrote the last of them waits for [`Self::wait_durable`].
    pub fn flush_due(&self) -> bool {
        lock(&self.log).log.flush_due()
    }

    /// Returns once every record below `upto` is on disk, fsyncing if need be.
    pub async fn wait_durable(self: &Arc<Self>, upto: i64) -> Result<(), SyncFailed> {
        let mut rx = self.sync.durable.subscribe();
        loop {
            if *rx.borrow_and_update() >= upto {
                return Ok(());
            }
            // Starts one, or there is one running: either way, the next change is its end.
            self.start_sync()?;
            if rx.changed().await.is_err() {
                return Err(SyncFailed("the partition was closed".into()));
            }
        }
    }

    /// Starts a sync unless one is running. The sync runs as its own task, so a produce
    /// that gives up waiting cannot leave the gate shut.
    pub fn start_sync(self: &Arc<Self>) -> Result<(), SyncFailed> {
        let mut g = lock(&self.sync.state);
        if let Some(e) = &g.failed {
            return Err(e.clone());
        }
        if g.running {
            return Ok(());
        }
        g.running = true;
        drop(g);
        let p = self.clone();
        tokio::spawn(async move { p.run_sync().await });
        Ok(())
    }

    async fn run_sync(self: Arc<Self>) {
        let p = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || p.sync_now()).await {
            lock(&self.sync.state).failed = Some(SyncFailed(e.to_string()));
        }
        lock(&self.sync.state).running = false;
        // Wakes every waiter, also on failure (they then see it).
        self.sync.durable.send_modify(|_| {});
    }

    /// Blocking: fsyncs every record written so far and publishes the durable offset. For
    /// callers off the async runtime (pipeline tasks before a checkpoint); several may run
    /// at once, the durable offset only grows.
    pub fn sync_now(&self) -> Result<(), SyncFailed> {
        if let Some(e) = &lock(&self.sync.state).failed {
            return Err(e.clone());
        }
        let job = lock(&self.log).log.sync_job();
        let outcome = match job {
            None => Ok(()),
            Some(job) => match job.run() {
                Ok(()) => {
                    let mut log = lock(&self.log);
                    let newly = job.upto - log.log.synced_offset();
                    log.log.synced(&job);
                    FSYNCS.fetch_add(1, Ordering::Relaxed);
                    self.sync.syncs.fetch_add(1, Ordering::Relaxed);
                    FSYNCED_RECORDS.fetch_add(newly.max(0) as u64, Ordering::Relaxed);
                    Ok(())
                }
                // The job recorded the failure in the log itself.
                Err(e) => Err(SyncFailed(e.to_string())),
            },
        };
        if let Err(e) = &outcome {
            tracing::error!(partition = self.index, error = %e, "fsync failed: durable produces to this partition are refused until a restart");
            lock(&self.sync.state).failed = Some(e.clone());
        }
        let durable = lock(&self.log).log.synced_offset();
        self.sync.durable.send_modify(|d| *d = (*d).max(durable));
        outcome
    }

    /// `flush.ms`: starts a background sync if unsynced records have waited that long.
    pub fn flush_if_overdue(self: &Arc<Self>) {
        if lock(&self.log).log.flush_overdue() {
            let _ = self.start_sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::config::TopicConfig;
    use crate::broker::testing::{open, plain_batch};

    /// Group commit: produces written while no sync ran are all made durable by one fsync,
    /// however many wait on it; a later record needs a new one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_fsync_covers_every_waiting_produce() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        let mut cfg = TopicConfig::default();
        cfg.set("flush.messages", "1").unwrap();
        b.create_topic("d", 1, cfg, false).unwrap();
        let p = b.topic("d").unwrap().partitions[0].clone();
        let mut ends = Vec::new();
        for i in 0..10 {
            let at = p.append(&plain_batch(3), 1 << 20, None).unwrap();
            assert!(p.flush_due(), "append {i} left records unsynced");
            ends.push(at.last_offset + 1);
        }
        let syncs = || p.sync.syncs.load(Ordering::Relaxed);
        let before = syncs();
        let waits: Vec<_> = ends
            .iter()
            .map(|&upto| {
                let p = p.clone();
                tokio::spawn(async move { p.wait_durable(upto).await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        assert_eq!(syncs() - before, 1, "one fsync for all");
        assert!(!p.flush_due());
        assert_eq!(lock(&p.log).log.synced_offset(), 30);
        // Already durable: no fsync.
        p.wait_durable(30).await.unwrap();
        assert_eq!(syncs() - before, 1);
        let at = p.append(&plain_batch(1), 1 << 20, None).unwrap();
        p.wait_durable(at.last_offset + 1).await.unwrap();
        assert_eq!(syncs() - before, 2);
    }
}

#[cfg(test)]
mod flush_ms_tests {
    use super::*;
    use crate::broker::config::TopicConfig;
    use crate::broker::testing::{open, plain_batch};

    /// `flush.ms`: the broker's background flush syncs a partition whose records have waited
    /// that long, with no produce asking for it; topics without it are left to the OS.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_ms_syncs_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        let mut timed = TopicConfig::default();
        timed.set("flush.ms", "0").unwrap();
        b.create_topic("timed", 1, timed, false).unwrap();
        b.create_topic("plain", 1, TopicConfig::default(), false)
            .unwrap();
        let batch = plain_batch(1);
        for t in ["timed", "plain"] {
            let p = b.topic(t).unwrap().partitions[0].clone();
            p.append(&batch, 1 << 20, None).unwrap();
        }
        let synced = |t: &str| {
            let p = b.topic(t).unwrap().partitions[0].clone();
            let s = lock(&p.log).log.synced_offset();
            s
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while synced("timed") < 1 {
            assert!(std::time::Instant::now() < deadline, "never synced");
            b.flush_overdue();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(synced("plain"), 0, "no flush.ms: left to the OS");
    }
}
