//! A deployed pipeline: its manifest, the code its tasks run, and the figures users see.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::engine::Code;
use super::manifest::Manifest;
use super::watermark::Feeders;

/// The code tasks should run; replaced as a whole on hot reload.
#[derive(Clone)]
pub struct Deployed {
    pub code: Code,
    pub config_json: String,
    pub limits: super::engine::Limits,
    /// Bumped on every replacement, so tasks notice at their next batch boundary.
    pub generation: u64,
}

/// Progress of one task, for lag and `sluice plugin list`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TaskProgress {
    pub next_offset: i64,
    pub high_watermark: i64,
    pub event_time_watermark: Option<i64>,
}

#[derive(Default)]
pub struct Stats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub retried: AtomicU64,
    pub traps: AtomicU64,
    /// Input batches that could not be decoded, dead-lettered whole.
    pub undecodable: AtomicU64,
    /// Records set apart as behind the watermark.
    pub late: AtomicU64,
    pub reloads: AtomicU64,
    /// Calls of the plugins' `tick`.
    pub ticks: AtomicU64,
    /// Longest time a task spent switching versions in the last reload, in microseconds.
    pub last_reload_pause_us: AtomicU64,
    pub progress: Mutex<BTreeMap<(String, i32), TaskProgress>>,
    /// The last failure and when it happened (ms since the epoch): an operator must tell an
    /// old, dealt-with error from one that keeps coming.
    pub last_error: Mutex<Option<(String, i64)>>,
}

impl Stats {
    pub fn error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((e, crate::broker::now_ms()));
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Which tasks write into which topics, for the watermark trackers of the tasks reading them
/// (see [`super::watermark`]). The host rewrites it whenever pipelines change.
#[derive(Default)]
pub struct Topology {
    generation: AtomicU64,
    inner: Mutex<Flows>,
    /// Notified after every change (waiting tasks must follow it).
    pub changed: tokio::sync::Notify,
}

/// Who writes where and who reads what, from the manifests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flows {
    pub writers_of: WritersOf,
    /// The pipelines there are (running or not yet).
    pub running: BTreeSet<String>,
    /// The topics some pipeline reads: the only ones watermark announcements are for.
    pub read: BTreeSet<String>,
}

/// Per topic, the writers (`pipeline/topic/partition`) whose default output it is, each with
/// the one partition it writes to if it keeps records on their input partition's number
/// (`partitioning = "input"`), else None (it may write to any).
pub type WritersOf = BTreeMap<String, BTreeMap<String, Option<i32>>>;

impl Topology {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn set(&self, flows: Flows) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if *g == flows {
            return;
        }
        *g = flows;
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(g);
        self.changed.notify_waiters();
    }

    /// Whether some pipeline reads `topic` (announcements elsewhere would be read by no one:
    /// clients skip them).
    pub fn is_read(&self, topic: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read
            .contains(topic)
    }

    pub fn feeders(&self, topic: &str, partition: i32) -> Feeders {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Feeders {
            expected: g
                .writers_of
                .get(topic)
                .map(|ws| {
                    ws.iter()
                        .filter(|(_, only)| only.is_none_or(|q| q == partition))
                        .map(|(w, _)| w.clone())
                        .collect()
                })
                .unwrap_or_default(),
            running: g.running.clone(),
        }
    }
}

/// What tasks of one pipeline share.
pub struct Pipeline {
    pub manifest: Manifest,
    deployed: Mutex<Deployed>,
    pub generation: AtomicU64,
    pub stop: AtomicBool,
    pub wake: tokio::sync::Notify,
    pub stats: Arc<Stats>,
}

impl Pipeline {
    pub fn new(manifest: Manifest, deployed: Deployed, stats: Arc<Stats>) -> Pipeline {
        Pipeline {
            manifest,
            generation: AtomicU64::new(deployed.generation),
            deployed: Mutex::new(deployed),
            stop: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            stats,
        }
    }

    pub fn deployed(&self) -> Deployed {
        self.deployed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hands tasks new code; each switches at its next batch boundary.
    pub fn replace(&self, mut d: Deployed) {
        let mut cur = self.deployed.lock().unwrap_or_else(|p| p.into_inner());
        d.generation = cur.generation + 1;
        self.generation.store(d.generation, Ordering::Release);
        *cur = d;
        drop(cur);
        self.wake.notify_waiters();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_partitioned_writers_feed_only_their_partition() {
        let t = Topology::default();
        let g = t.generation();
        let mut ws = BTreeMap::new();
        ws.insert("v/c/0".to_string(), Some(0));
        ws.insert("v/c/1".to_string(), Some(1));
        ws.insert("k/d/0".to_string(), None);
        let flows = Flows {
            writers_of: BTreeMap::from([("out".to_string(), ws)]),
            running: BTreeSet::from(["v".to_string(), "k".to_string()]),
            read: BTreeSet::from(["c".to_string(), "d".to_string()]),
        };
        t.set(flows.clone());
        assert_ne!(t.generation(), g);
        let f = t.feeders("out", 1);
        assert_eq!(
            f.expected,
            BTreeSet::from(["k/d/0".to_string(), "v/c/1".to_string()])
        );
        assert!(t.feeders("other", 0).expected.is_empty());
        assert!(t.is_read("c") && !t.is_read("out"));
        // Setting the same again is no change; a new reader is one.
        let g = t.generation();
        t.set(flows.clone());
        assert_eq!(t.generation(), g);
        let mut read_out = flows;
        read_out.read.insert("out".to_string());
        t.set(read_out);
        assert_ne!(t.generation(), g);
        assert!(t.is_read("out"));
    }
}
