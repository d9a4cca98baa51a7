//! The log cleaner: compaction of `cleanup.policy=compact` logs, keeping the latest record of
//! each key (Kafka's `LogCleaner`).
//!
//! One pass over a log, in three steps, only the last under the log's lock:
//! 1. [`Log::clean_plan`] picks the sealed, flushed segments below the last stable offset and
//!    the first offset that must stay uncleaned (`min.compaction.lag.ms`), and decides whether
//!    the dirty part (written since the last pass) is worth a pass (`min.cleanable.dirty.ratio`,
//!    or `max.compaction.lag.ms` overdue).
//! 2. [`clean`] reads the dirty part into a map from key hash to its latest offset (bounded:
//!    when the map is full the pass stops there, as Kafka's does), then rewrites the planned
//!    segments into `cleaning/`, keeping a record only if it is the latest of its key,
//!    not in an aborted transaction, and not a tombstone past its delete horizon. Batches
//!    keep their offsets, producer fields and codec; offsets become sparse (as in Kafka).
//!    Transaction markers are handled as Kafka handles them: an abort marker stays while
//!    its transaction's records are in the log, a commit marker while any of its batches
//!    is; after that it may go.
//!    What may go (a tombstone, such a marker) is first stamped with a delete horizon,
//!    `delete.retention.ms` from the pass that found it (KIP-534, in the batch's base
//!    timestamp), and goes in the first pass after it, so a reader that started before has
//!    that long to see it, whatever the record's own timestamp. A pass is due when the
//!    earliest horizon passes, even if nothing new was written.
//! 3. [`Log::swap_cleaned`] replaces the old segments by the new ones: a manifest written
//!    atomically is the commit point, then renames and deletions. A crash before the
//!    manifest leaves the old segments (the `cleaning/` leftovers are removed at start-up);
//!    after it, start-up finishes the swap. Either the old or the new segments, never a mix.
//!
//! Invariant: a kept record is the last record of its key at or below the cleaned range's
//! end, or its key has a later record only above that end; offsets never change.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::batch::{self, BatchHeader};
use super::segment::{file_stem, Segment};
use super::{Log, LogError};
use crate::disk;
use crate::records::{self, Record};

/// Where cleaned segments are written before the swap.
const CLEANING_DIR: &str = "cleaning";
/// The swap's commit point: the bases replaced and the bases written.
const SWAP_MANIFEST: &str = "clean-swap.json";
/// The first offset the next pass treats as dirty.
pub const CHECKPOINT_FILE: &str = "cleaner-offset";
/// The earliest delete horizon in the cleaned segments (absent: none).
const HORIZON_FILE: &str = "cleaner-horizon";

/// The topic configs that drive compaction.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanConfig {
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    /// Keys the offset map holds in one pass (its memory is about 48 bytes per key).
    pub map_keys: usize,
    /// Bytes per second the cleaner reads and writes at most (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`); `None`: no limit.
    pub io_bytes_per_sec: Option<u64>,
}

/// Bytes of memory the offset map uses per key (a 16-byte hash, an offset, the table's own).
pub const MAP_BYTES_PER_KEY: usize = 48;

/// Holds a pass to `io_bytes_per_sec`: after each batch read or written, sleeps until the
/// bytes so far are within the rate since the pass began.
struct Throttle {
    started: std::time::Instant,
    bytes: u64,
    rate: Option<u64>,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            started: std::time::Instant::now(),
            bytes: 0,
            rate: rate.filter(|&r| r > 0),
        }
    }

    fn take(&mut self, n: usize) {
        let Some(rate) = self.rate else { return };
        self.bytes += n as u64;
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

impl Default for CleanConfig {
    fn default() -> Self {
        CleanConfig {
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            map_keys: (64 << 20) / MAP_BYTES_PER_KEY,
            io_bytes_per_sec: None,
        }
    }
}

/// A sealed segment to read during a pass, opened before the lock was released.
pub struct Source {
    pub base: i64,
    pub next_offset: i64,
    pub size: u64,
    pub file: Arc<crate::disk::File>,
}

/// What one pass works on.
pub struct Plan {
    pub dir: PathBuf,
    /// The sealed segments from the log start to `end`, oldest first.
    pub sources: Vec<Source>,
    /// The first offset not cleaned before (records below were already deduplicated).
    pub first_dirty: i64,
    /// Records at or past this offset are not looked at.
    pub end: i64,
    pub index_interval: u64,
    /// A delete horizon has passed: the pass runs even with nothing new to deduplicate.
    pub horizon_due: bool,
}

/// The result of a pass, ready to swap in.
pub struct Cleaned {
    /// Bases of the segments replaced.
    pub replaced: Vec<i64>,
    /// Bases of the segments written in `cleaning/` (each replaces the group it starts).
    pub written: Vec<i64>,
    /// The next pass's first dirty offset.
    pub cleaned_to: i64,
    /// The earliest delete horizon stamped in the kept batches: a pass is due then even if
    /// nothing new was written.
    pub next_horizon: Option<i64>,
    /// (producer id, offset) of the transaction markers removed: the partition forgets those
    /// aborted transactions.
    pub dropped_markers: Vec<(i64, i64)>,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// (producer id, first offset, last offset) of the aborted transactions in the range.
pub type AbortedRanges = Vec<(i64, i64, i64)>;

fn key_hash(key: &[u8]) -> [u8; 16] {
    let d = Sha256::digest(key);
    let mut h = [0u8; 16];
    h.copy_from_slice(&d[..16]);
    h
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |e| LogError::Io {
        path: dir.to_path_buf(),
        error: e,
    }
}

#[track_caller]
fn corrupt(dir: &Path) -> LogError {
    LogError::Corrupt {
        path: dir.to_path_buf(),
        position: u64::from(std::panic::Location::caller().line()),
    }
}

/// Every whole batch of a source, read in chunks: (header, raw bytes).
fn batches(
    src: &Source,
    dir: &Path,
    mut f: impl FnMut(&BatchHeader, Bytes) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let mut pos = 0u64;
    while pos < src.size {
        let mut hdr = [0u8; batch::HEADER_LEN];
        src.file.read_exact_at(&mut hdr, pos).map_err(io(dir))?;
        let h = batch::parse_header(&hdr).map_err(|_| corrupt(dir))?;
        let mut raw = vec![0u8; h.size];
        src.file.read_exact_at(&mut raw, pos).map_err(io(dir))?;
        if !f(&h, Bytes::from(raw))? {
            break;
        }
        pos += h.size as u64;
    }
    Ok(())
}

/// Keeps the earlier of `at` and the horizon already found.
fn earliest(horizon: &mut Option<i64>, at: i64) {
    *horizon = Some(horizon.map_or(at, |h| h.min(at)));
}

/// The marker offset of the aborted transaction `h` belongs to, if any.
fn aborted_range(aborted: &AbortedRanges, h: &BatchHeader) -> Option<i64> {
    if !h.is_transactional() {
        return None;
    }
    aborted
        .iter()
        .find(|&&(p, first, last)| {
            p == h.producer_id && h.base_offset >= first && h.base_offset <= last
        })
        .map(|&(_, _, last)| last)
}

/// Steps 1-2 of a pass (see the module doc): no lock held. `None` when nothing changes.
pub fn clean(
    plan: &Plan,
    aborted: &AbortedRanges,
    now_ms: i64,
    cfg: &CleanConfig,
) -> Result<Option<Cleaned>, LogError> {
    let dir = &plan.dir;
    let mut throttle = Throttle::new(cfg.io_bytes_per_sec);
    // The map of the dirty part: key hash -> offset of its latest record.
    let mut map: HashMap<[u8; 16], i64> = HashMap::new();
    let mut end = plan.end;
    let mut first_source = true;
    'sources: for src in plan
        .sources
        .iter()
        .filter(|s| s.next_offset > plan.first_dirty)
    {
        let mut full = false;
        // The first dirty segment is mapped whole even past `map_keys`: only whole segments
        // are rewritten, so a pass that stopped inside it would never make progress. The map
        // is thus bounded by `map_keys` plus one segment's keys.
        let may_stop = !first_source;
        first_source = false;
        batches(src, dir, |h, raw| {
            if h.base_offset >= end {
                return Ok(false);
            }
            throttle.take(h.size);
            if h.is_control() || aborted_range(aborted, h).is_some() {
                return Ok(true);
            }
            let recs = records::decode_each(raw).map_err(|_| corrupt(dir))?;
            let Some(b) = recs.into_iter().next() else {
                return Ok(true);
            };
            let recs = b.records.map_err(|_| corrupt(dir))?;
            if may_stop && map.len() + recs.len() > cfg.map_keys {
                // Full: this pass ends before this batch.
                end = h.base_offset;
                full = true;
                return Ok(false);
            }
            for r in recs.iter().filter(|r| r.offset >= plan.first_dirty) {
                if let Some(k) = &r.key {
                    map.insert(key_hash(k), r.offset);
                }
            }
            Ok(true)
        })?;
        if full {
            break 'sources;
        }
    }
    // Only whole segments below the end are rewritten.
    let sources: Vec<&Source> = plan
        .sources
        .iter()
        .filter(|s| s.next_offset <= end)
        .collect();
    if sources.is_empty() || (map.is_empty() && !plan.horizon_due) {
        return Ok(None);
    }
    let cleaning = dir.join(CLEANING_DIR);
    let _ = disk::remove_dir_all(&cleaning);
    disk::create_dir_all(&cleaning).map_err(io(dir))?;
    // KIP-534: what may go (a tombstone, a marker whose transaction has no records left)
    // is first stamped with a delete horizon, and goes in the first pass after it.
    let stamp = now_ms.saturating_add(cfg.delete_retention_ms);
    let mut next_horizon: Option<i64> = None;
    let mut dropped_markers = Vec::new();
    // Producers with a committed transaction's batch read since their last marker (and
    // whether this pass kept any of them), and the aborted transactions (by marker offset)
    // whose records this pass met: their markers stay, for readers must see a marker after
    // its transaction's records. When this pass removed all of them, the next pass may
    // stamp the marker, so it is due at once.
    let mut open_committed: HashMap<i64, bool> = HashMap::new();
    let mut aborted_seen: HashSet<i64> = HashSet::new();
    let mut written = Vec::new();
    let mut current: Option<Segment> = None;
    let mut bytes_before = 0;
    let mut bytes_after = 0;
    let segment_limit = sources
        .iter()
        .map(|s| s.size)
        .max()
        .unwrap_or(0)
        .max(1 << 20);
    for src in &sources {
        bytes_before += src.size;
        batches(src, dir, |h, raw| {
            throttle.take(h.size);
            let recs = || -> Result<Vec<Record>, LogError> {
                let b = records::decode_each(raw.clone()).map_err(|_| corrupt(dir))?;
                b.into_iter()
                    .next()
                    .map(|b| b.records)
                    .transpose()
                    .map_err(|_| corrupt(dir))
                    .map(Option::unwrap_or_default)
            };
            let kept = if h.is_control() {
                let recs = recs()?;
                let commit = recs
                    .first()
                    .and_then(|r| r.key.as_deref())
                    .and_then(records::txn_marker_commits);
                let (records_left, all_removed_now) = match commit {
                    None => (true, false), // not a transaction marker: kept
                    Some(true) => match open_committed.remove(&h.producer_id) {
                        Some(kept_any) => (true, !kept_any),
                        None => (false, false),
                    },
                    Some(false) => {
                        let seen = aborted_seen.remove(&h.base_offset);
                        (seen, seen)
                    }
                };
                if all_removed_now {
                    earliest(&mut next_horizon, now_ms);
                }
                match (records_left, h.delete_horizon()) {
                    (true, _) => Some(raw),
                    (false, Some(t)) if t <= now_ms => {
                        dropped_markers.push((h.producer_id, h.base_offset));
                        None
                    }
                    (false, Some(t)) => {
                        earliest(&mut next_horizon, t);
                        Some(raw)
                    }
                    (false, None) => {
                        earliest(&mut next_horizon, stamp);
                        Some(
                            records::encode_retained(h, &recs, Some(stamp))
                                .map_err(|_| corrupt(dir))?,
                        )
                    }
                }
            } else if let Some(marker) = aborted_range(aborted, h) {
                aborted_seen.insert(marker);
                None
            } else {
                let recs = recs()?;
                let n = recs.len();
                let expired = h.delete_horizon().is_some_and(|t| t <= now_ms);
                let keep: Vec<Record> = recs
                    .into_iter()
                    .filter(|r| {
                        let Some(k) = &r.key else { return true };
                        let latest = map.get(&key_hash(k)).is_none_or(|&o| o <= r.offset);
                        latest && !(r.value.is_none() && expired)
                    })
                    .collect();
                let tombstones = keep.iter().any(|r| r.value.is_none());
                let horizon = match h.delete_horizon() {
                    Some(t) => t,
                    None if tombstones => stamp,
                    None => i64::MAX,
                };
                if tombstones {
                    earliest(&mut next_horizon, horizon);
                }
                if h.is_transactional() {
                    *open_committed.entry(h.producer_id).or_default() |= !keep.is_empty();
                }
                let restamp = tombstones && h.delete_horizon().is_none();
                if keep.len() == n && !restamp {
                    Some(raw)
                } else if keep.is_empty() {
                    None
                } else {
                    let t = restamp.then_some(stamp);
                    Some(records::encode_retained(h, &keep, t).map_err(|_| corrupt(dir))?)
                }
            };
            let Some(out) = kept else { return Ok(true) };
            let oh = batch::parse_header(&out).map_err(|_| corrupt(dir))?;
            // A new segment when the current one would grow past the largest source, or its
            // relative offsets past i32.
            let roll = current.as_ref().is_some_and(|s| {
                s.size + out.len() as u64 > segment_limit
                    || oh.last_offset() - s.base_offset > i64::from(i32::MAX)
            });
            if roll || current.is_none() {
                if let Some(mut s) = current.take() {
                    // Sealed like a rolled segment: its time index ends with its max
                    // timestamp, which retention (compact,delete) and lookups read.
                    s.seal();
                    s.sync()?;
                }
                let base = if written.is_empty() {
                    sources[0].base
                } else {
                    oh.base_offset
                };
                current = Some(Segment::create(&cleaning, base)?);
                written.push(base);
            }
            if let Some(s) = current.as_mut() {
                let mut prefix = [0u8; 16];
                prefix.copy_from_slice(&out[..16]);
                s.append(&prefix, &out[16..], &oh, plan.index_interval)?;
                bytes_after += out.len() as u64;
            }
            Ok(true)
        })?;
    }
    if let Some(mut s) = current.take() {
        s.seal();
        s.sync()?;
    }
    let _ = disk::sync_dir(&cleaning);
    Ok(Some(Cleaned {
        replaced: sources.iter().map(|s| s.base).collect(),
        written,
        // What was rewritten: a segment mapped only in part stays dirty for the next pass.
        cleaned_to: sources.last().map_or(end, |s| s.next_offset),
        next_horizon,
        dropped_markers,
        bytes_before,
        bytes_after,
    }))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    replaced: Vec<i64>,
    written: Vec<i64>,
}

/// Moves the written segments into place and deletes the replaced ones. Idempotent: start-up
/// runs it again after a crash past the manifest.
fn finish_swap(dir: &Path, m: &Manifest) {
    let cleaning = dir.join(CLEANING_DIR);
    for &base in &m.replaced {
        if !m.written.contains(&base) {
            super::segment::delete_segment(dir, base);
        } else {
            // Its indexes describe the old file; the new ones come with it.
            for ext in ["index", "timeindex"] {
                let _ = disk::remove_file(&dir.join(format!("{}.{ext}", file_stem(base))));
            }
        }
    }
    for &base in &m.written {
        for ext in ["log", "index", "timeindex"] {
            let name = format!("{}.{ext}", file_stem(base));
            let from = cleaning.join(&name);
            if disk::exists(&from) {
                if let Err(e) = disk::rename(&from, &dir.join(&name)) {
                    tracing::error!(file = %from.display(), error = %e, "cannot move a cleaned segment into place");
                }
            }
        }
    }
    let _ = disk::sync_dir(dir);
    let _ = disk::remove_file(&dir.join(SWAP_MANIFEST));
    let _ = disk::remove_dir_all(&cleaning);
}

/// At start-up, before segments are listed: finishes a swap past its commit point, or drops
/// the leftovers of a pass that did not reach it.
pub fn recover(dir: &Path) {
    let manifest = dir.join(SWAP_MANIFEST);
    match disk::read(&manifest)
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
    {
        Some(m) => {
            tracing::warn!(dir = %dir.display(), "finishing a compaction swap cut short by a crash");
            finish_swap(dir, &m);
        }
        None => {
            let _ = disk::remove_file(&manifest);
            let _ = disk::remove_dir_all(&dir.join(CLEANING_DIR));
        }
    }
}

impl Log {
    /// Step 1 of a pass (see the module doc). `first_dirty`: where the previous pass ended;
    /// `stable`: the last stable offset.
    pub fn clean_plan(
        &self,
        first_dirty: i64,
        stable: i64,
        now_ms: i64,
        cfg: &CleanConfig,
    ) -> Result<Option<Plan>, LogError> {
        let recovery_point = super::flush::read_recovery_point(&self.dir).unwrap_or(0);
        // Only flushed, sealed segments wholly below the last stable offset, and none with
        // records newer than min.compaction.lag.ms.
        let limit = stable.min(self.active().base_offset).min(recovery_point);
        let mut sources = Vec::new();
        let (mut dirty, mut total) = (0u64, 0u64);
        let mut overdue = false;
        for s in &self.segments[..self.segments.len() - 1] {
            let newest = s.newest_ms(now_ms);
            if s.next_offset > limit
                || (cfg.min_compaction_lag_ms > 0
                    && newest > now_ms.saturating_sub(cfg.min_compaction_lag_ms))
            {
                break;
            }
            total += s.size;
            if s.next_offset > first_dirty {
                dirty += s.size;
                overdue |= cfg.max_compaction_lag_ms < i64::MAX
                    && newest < now_ms.saturating_sub(cfg.max_compaction_lag_ms);
            }
            sources.push(Source {
                base: s.base_offset,
                next_offset: s.next_offset,
                size: s.size,
                file: s.file_handle(),
            });
        }
        let horizon_due =
            super::flush::read_offset_file(&self.dir, HORIZON_FILE).is_some_and(|t| t <= now_ms);
        let ratio = dirty as f64 / total.max(1) as f64;
        let worth = dirty > 0 && (ratio >= cfg.min_cleanable_dirty_ratio || overdue);
        if sources.is_empty() || !(worth || horizon_due) {
            return Ok(None);
        }
        let end = sources.last().map_or(0, |s| s.next_offset);
        Ok(Some(Plan {
            dir: self.dir.clone(),
            sources,
            first_dirty,
            end,
            index_interval: self.config.index_interval_bytes,
            horizon_due,
        }))
    }

    /// Step 3: swaps the cleaned segments in, if the segments they replace are all still
    /// here (retention or DeleteRecords may have removed some meanwhile). Returns whether it
    /// swapped.
    pub fn swap_cleaned(&mut self, c: &Cleaned) -> Result<bool, LogError> {
        let present = c.replaced.iter().all(|b| {
            self.segments[..self.segments.len() - 1]
                .iter()
                .any(|s| s.base_offset == *b)
        });
        if !present {
            let _ = disk::remove_dir_all(&self.dir.join(CLEANING_DIR));
            return Ok(false);
        }
        let m = Manifest {
            replaced: c.replaced.clone(),
            written: c.written.clone(),
        };
        let body = serde_json::to_vec(&m).map_err(|_| corrupt(&self.dir))?;
        disk::replace(&self.dir.join(SWAP_MANIFEST), &body).map_err(io(&self.dir))?;
        finish_swap(&self.dir, &m);
        // The new segments replace the old ones in the list, in offset order.
        let first = self
            .segments
            .iter()
            .position(|s| s.base_offset == c.replaced[0])
            .unwrap_or(0);
        let count = c.replaced.len();
        let mut fresh = Vec::with_capacity(c.written.len());
        for &base in &c.written {
            fresh.push(Segment::open(
                &self.dir,
                base,
                self.config.index_interval_bytes,
                false,
                false,
            )?);
        }
        let old: Vec<Segment> = self.segments.splice(first..first + count, fresh).collect();
        drop(old); // their files are already gone or replaced
                   // A pass held below an older one's end (a lower LSO, a horizon due) does not make
                   // what that one cleaned dirty again.
        let checkpoint = c.cleaned_to.max(self.cleaner_checkpoint());
        super::flush::write_offset_file(&self.dir, CHECKPOINT_FILE, checkpoint)
            .map_err(io(&self.dir))?;
        match c.next_horizon {
            Some(t) => super::flush::write_offset_file(&self.dir, HORIZON_FILE, t)
                .map_err(io(&self.dir))?,
            None => {
                let _ = disk::remove_file(&self.dir.join(HORIZON_FILE));
            }
        }
        Ok(true)
    }

    /// Where the previous pass ended (the log start when none ran).
    pub fn cleaner_checkpoint(&self) -> i64 {
        super::flush::read_offset_file(&self.dir, CHECKPOINT_FILE).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;
    use crate::records::{encode_batch, Compression};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 600,
            retention_ms: -1,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    /// Every record in the log, in order.
    fn records_of(log: &Log) -> Vec<Record> {
        let mut out = Vec::new();
        let mut next = log.log_start_offset();
        while let Some(slice) = log.plan_read(next).unwrap() {
            let data = slice.read(usize::MAX, true).unwrap();
            if data.is_empty() {
                break;
            }
            next = batch::span(&data).unwrap().0;
            out.extend(records::decode_batches(data).unwrap());
        }
        out
    }

    /// (offset, key, value) of every record in the log.
    fn read_all(log: &Log) -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
        records_of(log)
            .into_iter()
            .map(|r| {
                (
                    r.offset,
                    r.key.unwrap().to_vec(),
                    r.value.map(|v| v.to_vec()),
                )
            })
            .collect()
    }

    /// (offset, timestamp) of every record in the log.
    fn read_timestamps(log: &Log) -> Vec<(i64, i64)> {
        records_of(log)
            .iter()
            .map(|r| (r.offset, r.timestamp))
            .collect()
    }

    fn append(log: &mut Log, recs: &[(u8, Option<u8>)], ts: i64, codec: Compression) {
        let records: Vec<Record> = recs
            .iter()
            .map(|(k, v)| Record {
                timestamp: ts,
                key: Some(Bytes::from(vec![b'k', *k])),
                value: v.map(|v| Bytes::from(vec![v; 20])),
                ..Default::default()
            })
            .collect();
        let b = encode_batch(&records, codec).unwrap();
        let parsed = batch::split_batches(&b).unwrap();
        log.append(&b, &parsed, 0).unwrap();
    }

    /// Runs one whole pass as the broker does, with everything sealed counted as flushed.
    fn pass(log: &mut Log, now: i64, cfg: &CleanConfig) -> Option<Cleaned> {
        let stable = log.next_offset();
        pass_below(log, stable, now, cfg)
    }

    /// A pass with the last stable offset at `stable` (an open transaction from there on).
    fn pass_below(log: &mut Log, stable: i64, now: i64, cfg: &CleanConfig) -> Option<Cleaned> {
        // Flush jobs still queued from earlier rolls would write a lower recovery point.
        super::super::flush::wait_idle();
        super::super::flush::write_recovery_point(log.dir(), log.next_offset()).unwrap();
        let plan = log
            .clean_plan(log.cleaner_checkpoint(), stable, now, cfg)
            .unwrap()?;
        assert!(plan.end <= stable, "a pass planned past the LSO");
        let cleaned = clean(&plan, &Vec::new(), now, cfg).unwrap()?;
        assert!(log.swap_cleaned(&cleaned).unwrap());
        Some(cleaned)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random keyed writes (tombstones included, every codec) and passes of the cleaner,
        /// each a delete.retention.ms after the last: below the cleaned end each key keeps
        /// exactly its latest record, at its original offset, and a tombstone goes in the
        /// second pass that rewrites it (KIP-534: the first stamps its horizon), whatever its
        /// record timestamp; no pass reaches past the last stable offset; everything above
        /// the end is untouched; and the log reads the same after a restart.
        #[test]
        fn compaction_keeps_the_latest_record_of_each_key(
            batches in proptest::collection::vec(
                (proptest::collection::vec((0u8..6, proptest::option::weighted(0.8, any::<u8>())), 1..6), 0u8..4, any::<bool>()),
                1..40),
            passes in proptest::collection::vec(0usize..40, 1..5),
            map_keys in prop_oneof![Just(1usize << 20), 1usize..8],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), config()).unwrap();
            let cfg = CleanConfig {
                min_cleanable_dirty_ratio: 0.0,
                delete_retention_ms: 1000,
                map_keys,
                ..Default::default()
            };
            let codecs = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4];
            // (offset, key, value, timestamp) of every record written.
            type Written = (i64, Vec<u8>, Option<Vec<u8>>, i64);
            let mut model: Vec<Written> = Vec::new();
            let mut cleaned_to = 0i64;
            // The cleaned end of every pass that ran.
            let mut ends = Vec::new();
            let mut now = 2_000_000;
            for (i, (recs, codec, old)) in batches.iter().enumerate() {
                // Record timestamps long past (or not) make no difference.
                let ts = if *old { 1_000 } else { 1_000_000 };
                let base = log.next_offset();
                append(&mut log, recs, ts, codecs[*codec as usize]);
                for (j, (k, v)) in recs.iter().enumerate() {
                    model.push((base + j as i64, vec![b'k', *k], v.map(|v| vec![v; 20]), ts));
                }
                for (k, _) in passes.iter().enumerate().filter(|(_, &p)| p == i) {
                    log.force_roll().unwrap();
                    // Every other pass runs under an open transaction that began two thirds
                    // of the way into what was written: nothing from there on may change.
                    let stable = match k % 2 {
                        0 => log.next_offset(),
                        _ => model.get(model.len() * 2 / 3).map_or(log.next_offset(), |r| r.0),
                    };
                    if let Some(c) = pass_below(&mut log, stable, now, &cfg) {
                        prop_assert!(c.cleaned_to <= stable);
                        cleaned_to = cleaned_to.max(c.cleaned_to);
                        ends.push(c.cleaned_to);
                    }
                    now += 1000;
                }
            }
            let rewritten = |o: i64| ends.iter().filter(|&&e| o < e).count();
            // The model: below cleaned_to, the latest record of each key (among all records
            // below cleaned_to... or later), minus tombstones rewritten twice.
            let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
            for (o, k, _, _) in model.iter().filter(|r| r.0 < cleaned_to) {
                latest.insert(k.clone(), *o);
            }
            let want: Vec<_> = model
                .iter()
                .filter(|(o, k, v, _)| {
                    *o >= cleaned_to
                        || (latest.get(k) == Some(o) && !(v.is_none() && rewritten(*o) >= 2))
                })
                .map(|(o, k, v, _)| (*o, k.clone(), v.clone()))
                .collect();
            // A pass may also drop a record below cleaned_to that a later pass's map (built
            // over a later dirty part) superseded; each key's surviving record below the
            // end is at most one, and it is its latest.
            let got = read_all(&log);
            let above: Vec<_> = got.iter().filter(|r| r.0 >= cleaned_to).cloned().collect();
            let want_above: Vec<_> = want.iter().filter(|r| r.0 >= cleaned_to).cloned().collect();
            prop_assert_eq!(&above, &want_above);
            // Below the end, each key holds its latest record there, or nothing when a later
            // record of the key exists above the end (a pass's map may reach past what it
            // rewrote) or that record was a tombstone past its horizon.
            let below: Vec<_> = got.iter().filter(|r| r.0 < cleaned_to).cloned().collect();
            for r in &below {
                prop_assert!(want.contains(r), "{:?} is not a record the model keeps", r);
            }
            for w in want.iter().filter(|r| r.0 < cleaned_to) {
                let later_above = model.iter().any(|m| m.1 == w.1 && m.0 >= cleaned_to);
                prop_assert!(below.contains(w) || later_above, "{:?} lost", w);
            }
            // Record timestamps survive the delete-horizon stamp.
            let stamps: BTreeMap<i64, i64> = model.iter().map(|r| (r.0, r.3)).collect();
            prop_assert!(read_timestamps(&log).iter().all(|(o, t)| stamps.get(o) == Some(t)));
            drop(log);
            let log = Log::open(dir.path(), config()).unwrap();
            prop_assert_eq!(read_all(&log), got);
        }
    }

    /// A key map smaller than the dirty part's keys: each pass stops where the map fills, and
    /// passes in a row still end with one record per key.
    #[test]
    fn a_small_key_map_cleans_in_several_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        for round in 0..4u8 {
            for k in 0..6u8 {
                append(&mut log, &[(k, Some(round))], 1_000_000, Compression::None);
            }
        }
        log.force_roll().unwrap();
        let end = log.next_offset();
        let cfg = CleanConfig {
            min_cleanable_dirty_ratio: 0.0,
            map_keys: 3,
            ..Default::default()
        };
        let mut passes = 0;
        while let Some(c) = pass(&mut log, 1_000_000, &cfg) {
            passes += 1;
            assert!(passes < 50, "no progress");
            if c.cleaned_to >= end {
                break;
            }
        }
        assert!(passes > 1, "one pass cannot hold 6 keys in a map of 3");
        let mut seen: Vec<_> = read_all(&log).into_iter().map(|r| r.1).collect();
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!((n, seen.len()), (6, 6), "one record per key");
    }

    /// The I/O limit holds a pass back: 300 KB read and rewritten at 1 MB/s cannot finish
    /// in less than 0.3 s (the bound only goes one way, so a slow machine cannot fail it).
    #[test]
    fn the_io_limit_slows_a_pass_down() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        while log.size_bytes() < 150_000 {
            append(
                &mut log,
                &[(1, Some(1)), (2, Some(2))],
                1_000_000,
                Compression::None,
            );
        }
        log.force_roll().unwrap();
        let cfg = CleanConfig {
            min_cleanable_dirty_ratio: 0.0,
            io_bytes_per_sec: Some(1_000_000),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        pass(&mut log, 1_000_000, &cfg).unwrap();
        let took = started.elapsed();
        assert!(took >= std::time::Duration::from_millis(280), "{took:?}");
    }

    #[test]
    fn a_crash_before_the_manifest_keeps_the_old_segments_and_after_it_the_new() {
        let cfg = CleanConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..Default::default()
        };
        for commit in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), config()).unwrap();
            for v in 0..30u8 {
                append(&mut log, &[(v % 3, Some(v))], 1_000_000, Compression::None);
            }
            log.force_roll().unwrap();
            let before = read_all(&log);
            super::super::flush::wait_idle();
            super::super::flush::write_recovery_point(log.dir(), log.next_offset()).unwrap();
            let plan = log
                .clean_plan(0, log.next_offset(), 1_000_000, &cfg)
                .unwrap()
                .unwrap();
            let cleaned = clean(&plan, &Vec::new(), 1_000_000, &cfg).unwrap().unwrap();
            if commit {
                // The commit point, then a crash before any rename.
                let m = Manifest {
                    replaced: cleaned.replaced.clone(),
                    written: cleaned.written.clone(),
                };
                disk::replace(
                    &dir.path().join(SWAP_MANIFEST),
                    &serde_json::to_vec(&m).unwrap(),
                )
                .unwrap();
            }
            drop(log);
            let log = Log::open(dir.path(), config()).unwrap();
            let after = read_all(&log);
            if commit {
                let keys: Vec<_> = after.iter().map(|r| r.1.clone()).collect();
                assert_eq!(after.len(), 3, "one record per key: {keys:?}");
                assert_eq!(
                    after.iter().map(|r| r.0).collect::<Vec<_>>(),
                    vec![27, 28, 29]
                );
            } else {
                assert_eq!(after, before);
            }
            assert!(!dir.path().join(CLEANING_DIR).exists());
            assert!(!dir.path().join(SWAP_MANIFEST).exists());
        }
    }
}
