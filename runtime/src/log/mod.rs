//! The partition log: segments of record batches on disk, found by offset or by time.
//!
//! Architecture invariant: this module knows nothing of the Kafka protocol, topics or plugins. It
//! takes validated batches in, hands byte ranges of whole batches out, and keeps these promises:
//! - a batch `append` returned `Ok` for is in the `.log` file (written, not necessarily fsynced:
//!   it survives the broker's death, and survives the machine's only once the page cache is
//!   flushed, as with Kafka's default `flush.messages`);
//! - offsets are dense and increasing across segments, starting at `log_start_offset`;
//! - recovery after a crash scans the newest segment and any sealed one not yet known to be
//!   flushed (at or above the `recovery-point`, see [`flush`]); older ones are trusted;
//! - a segment recovery truncated is the end of the log: nothing after a gap is kept.

pub mod batch;
pub mod cleaner;
pub mod flush;
pub mod kv;
pub mod segment;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod sim_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::disk;

use batch::BatchHeader;
use segment::{ReadSlice, Segment};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("I/O error on {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("corrupt batch in {path} at byte {position}")]
    Corrupt { path: PathBuf, position: u64 },
    #[error("{path} is closed: the broker is shutting down")]
    Closed { path: PathBuf },
}

/// Per-log settings; the topic layer maps Kafka config keys onto these.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// -1 keeps data forever.
    pub retention_ms: i64,
    /// -1 sets no size limit.
    pub retention_bytes: i64,
    pub index_interval_bytes: u64,
    /// Kafka's `flush.messages`: an append that leaves this many records unsynced waits for
    /// an fsync before it is acknowledged (1: every acknowledged record is on disk).
    pub flush_messages: i64,
    /// Kafka's `flush.ms`: records unsynced for this long are synced in the background.
    pub flush_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
        }
    }
}

/// One durability sync: the files holding the records from the last sync up to `upto`, and
/// the directory when a segment was created since (its entry must be durable too).
pub struct SyncJob {
    files: Vec<Arc<disk::File>>,
    dir: Option<PathBuf>,
    active_base: i64,
    /// The base of the oldest segment covered.
    first_base: i64,
    /// Every record below this offset is durable once the job has run.
    pub upto: i64,
    /// The log's flush cap: lowered by any failed fsync of the log, the flusher's included.
    cap: flush::Cap,
    log_dir: PathBuf,
}

impl SyncJob {
    /// Blocking: fsyncs. Fails, too, once any fsync of this log has failed since it was
    /// opened, even if these succeed: the failed one may have dropped writes these files
    /// still hold in the cache only, and a later fsync does not write them again. (A flusher
    /// failure racing this job's own fsync of the same file can slip through this check;
    /// the next job sees it.)
    pub fn run(&self) -> std::io::Result<()> {
        let failed =
            || std::io::Error::other("an earlier fsync of this log failed: writes may be lost");
        if self.cap.fsync_failed() {
            return Err(failed());
        }
        let synced = self
            .files
            .iter()
            .try_for_each(|f| f.sync_data())
            .and_then(|()| self.dir.as_deref().map_or(Ok(()), disk::sync_dir));
        if let Err(e) = synced {
            // Start-up checks (and rewrites) what this job covered.
            flush::record_failure(&self.cap, &self.log_dir, self.first_base);
            return Err(e);
        }
        if self.cap.fsync_failed() {
            return Err(failed());
        }
        Ok(())
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
}

/// Bytes of whole batches read from one segment.
pub struct ReadChunk {
    pub data: Bytes,
}

pub struct Log {
    dir: PathBuf,
    /// Sorted by base offset; the last one is the active segment.
    segments: Vec<Segment>,
    config: LogConfig,
    /// Set by DeleteRecords: records below it are gone for readers even where their segment
    /// remains. Kept in the `log-start-offset` file.
    start_floor: i64,
    /// The recovery point may not pass this: the base of the first sealed segment whose flush
    /// failed or could not be queued (see [`flush::FlushJob::cap`]).
    flush_cap: flush::Cap,
    /// Records below this offset were on disk at open or fsynced by a [`SyncJob`] since.
    synced: i64,
    /// The active segment at the last sync (a newer one needs its directory entry synced).
    synced_active_base: i64,
    /// When the oldest record not yet synced was appended (`flush.ms`).
    unsynced_since: Option<std::time::Instant>,
    /// Set by [`Log::close_cleanly`]: nothing more may be written.
    closed: bool,
}

/// Where DeleteRecords' log start offset is kept.
const LOG_START_FILE: &str = "log-start-offset";

/// The first half of DeleteRecords: records `offset` as the log start of the log in `dir`,
/// durably (it fsyncs, so callers hold no lock that requests wait on). Writers of one log
/// must be serialized, so the file only moves forward.
pub fn persist_log_start(dir: &Path, offset: i64) -> Result<(), LogError> {
    flush::write_offset_file(dir, LOG_START_FILE, offset).map_err(|e| LogError::Io {
        path: dir.join(LOG_START_FILE),
        error: e,
    })
}

/// After a failed fsync ([`flush::record_failure`]): copies each segment at or above the
/// recovery point into a fresh file, syncs it and renames it into place, so the bytes the
/// start-up scan is about to read are the bytes on disk. Indexes are rebuilt by that scan.
fn rewrite_unflushed(dir: &Path, bases: &[i64], recovery_point: i64) -> Result<(), LogError> {
    let io = |e| LogError::Io {
        path: dir.to_path_buf(),
        error: e,
    };
    for &base in bases.iter().filter(|&&b| b >= recovery_point) {
        let path = dir.join(format!("{}.log", segment::file_stem(base)));
        let tmp = dir.join(format!("{}.log.rewrite", segment::file_stem(base)));
        // In chunks: a segment may be a gigabyte.
        let copied = (|| {
            let from = disk::File::open_append(&path)?;
            let to = disk::File::create(&tmp)?;
            let len = from.size()?;
            let mut at = 0;
            while at < len {
                let n = (len - at).min(8 << 20) as usize;
                to.write_all(&from.read_vec_at(at, n)?)?;
                at += n as u64;
            }
            to.sync_all()?;
            disk::rename(&tmp, &path)?;
            Ok(len)
        })();
        let len = copied.map_err(|e| {
            let _ = disk::remove_file(&tmp);
            io(e)
        })?;
        tracing::warn!(segment = %path.display(), bytes = len, "rewrote a segment after a failed fsync");
    }
    disk::remove_file(&dir.join(flush::SYNC_FAILED_FILE)).map_err(io)?;
    disk::sync_dir(dir).map_err(io)
}

/// Hands a sealed segment to the flusher; once synced, the recovery point may move to
/// `next_base` (the following segment's base).
fn queue_flush(sealed: &Segment, next_base: i64, dir: &Path, cap: &flush::Cap) {
    match sealed.flush_files() {
        Ok(files) => flush::submit(flush::FlushJob {
            files,
            log_path: sealed.log_path().to_path_buf(),
            dir: dir.to_path_buf(),
            base: sealed.base_offset,
            recovery_point: next_base,
            cap: cap.clone(),
        }),
        // The recovery point never passes this segment from now on: it is checked at the
        // next start.
        Err(e) => {
            cap.lower_to(sealed.base_offset);
            tracing::warn!(
                segment = %sealed.log_path().display(),
                error = %e,
                "cannot queue sealed segment for flushing"
            )
        }
    }
}

fn segment_bases(dir: &Path) -> Result<Vec<i64>, LogError> {
    let io = |e| LogError::Io {
        path: dir.to_path_buf(),
        error: e,
    };
    let mut bases = Vec::new();
    for name in disk::list_dir(dir).map_err(io)? {
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(b) = stem.parse::<i64>() {
                if b >= 0 {
                    bases.push(b);
                }
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering the segments a crash may have damaged:
    /// the active one and those rolled since the last recorded flush.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        Self::open_after(dir, config, false)
    }

    /// As [`Log::open`]; `clean`: the broker shut down cleanly, after fsyncing every segment
    /// and index, so the active segment is trusted too (no CRC scan, as Kafka after a clean
    /// shutdown).
    pub fn open_after(dir: &Path, config: LogConfig, clean: bool) -> Result<Log, LogError> {
        let io = |e| LogError::Io {
            path: dir.to_path_buf(),
            error: e,
        };
        disk::create_dir_all(dir).map_err(io)?;
        cleaner::recover(dir);
        let bases = segment_bases(dir)?;
        let recovery_point = match flush::read_recovery_point(dir).filter(|_| !bases.is_empty()) {
            Some(p) => p,
            None => {
                // A new log (whatever an old file said), or one from before recovery points:
                // every segment but the last was flushed when it rolled.
                let p = bases.last().copied().unwrap_or(0);
                flush::write_recovery_point(dir, p).map_err(io)?;
                p
            }
        };
        // After a failed fsync nothing at or above the lowest base it covered is trusted,
        // whatever recovery point a flush racing the failure wrote.
        let recovery_point = match disk::exists(&dir.join(flush::SYNC_FAILED_FILE)) {
            true => {
                let from = flush::read_failed_base(dir).map_or(0, |b| b.min(recovery_point));
                rewrite_unflushed(dir, &bases, from)?;
                from
            }
            false => recovery_point,
        };
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let active = i + 1 == bases.len();
            // After a clean shutdown the recovery point is the active segment's base and the
            // active segment was fsynced too.
            let check = if active {
                !clean
            } else {
                base >= recovery_point
            };
            let seg = Segment::open(dir, base, config.index_interval_bytes, check, active)?;
            let next_base = bases.get(i + 1).copied();
            // Below the recovery point a gap before the next segment is compaction's (the
            // cleaner only rewrites flushed segments); above it, only a cut can make one.
            if let Some(next_base) = next_base.filter(|&n| check && seg.next_offset < n) {
                // Recovery cut this segment short: the offsets after it would leave a hole, so
                // they go too, as Kafka does. Only an unflushed segment can get here.
                for &later in &bases[i + 1..] {
                    tracing::warn!(
                        dir = %dir.display(),
                        segment = later,
                        lost_from = seg.next_offset,
                        expected = next_base,
                        "deleting segment after a truncated one"
                    );
                    segment::delete_segment(dir, later);
                }
                // The deletions must be durable before new batches take those offsets.
                disk::sync_dir(dir).map_err(io)?;
                drop(seg);
                segments.push(Segment::open(
                    dir,
                    base,
                    config.index_interval_bytes,
                    true,
                    true,
                )?);
                break;
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
        }
        // Sealed segments the recovery point has not passed were rolled and never flushed
        // (a crash dropped their flush): they may sit in the page cache only. They are queued
        // again, oldest first, or the flush of a newer segment would move the recovery point
        // past them.
        let flush_cap = flush::Cap::default();
        for pair in segments.windows(2) {
            if pair[0].base_offset >= recovery_point {
                queue_flush(&pair[0], pair[1].base_offset, dir, &flush_cap);
            }
        }
        let start_floor = flush::read_offset_file(dir, LOG_START_FILE).unwrap_or(0);
        let next_offset = segments.last().map_or(0, |s| s.next_offset);
        // What a crash left may still sit in the page cache only (the process died, the
        // machine did not): it is durable once a sync covers it, and the first durability
        // sync covers everything above the recovery point. After a clean shutdown all of it
        // was synced.
        let synced = if clean {
            next_offset
        } else {
            recovery_point.min(next_offset)
        };
        Ok(Log {
            dir: dir.to_path_buf(),
            segments,
            config,
            start_floor,
            flush_cap,
            synced,
            // The first durability sync also syncs the directory: a new log's first segment
            // was created after the directory was last synced.
            synced_active_base: -1,
            unsynced_since: (synced < next_offset).then(std::time::Instant::now),
            closed: false,
        })
    }

    /// Clean shutdown: fsyncs every segment and index written since the recovery point and
    /// moves the recovery point past them all, so the next start trusts the whole log.
    /// Returns whether the whole log may be trusted (no flush ever failed); the log takes no
    /// more writes either way.
    pub fn close_cleanly(&mut self) -> Result<bool, LogError> {
        self.closed = true;
        let recovery_point = flush::read_recovery_point(&self.dir).unwrap_or(0);
        for s in self
            .segments
            .iter()
            .filter(|s| s.next_offset > recovery_point || s.base_offset >= recovery_point)
        {
            let synced = s
                .flush_files()
                .and_then(|files| files.iter().try_for_each(|f| f.sync_data()));
            if let Err(e) = synced {
                flush::record_failure(&self.flush_cap, &self.dir, s.base_offset);
                return Err(LogError::Io {
                    path: s.log_path().to_path_buf(),
                    error: e,
                });
            }
        }
        let io = |e| LogError::Io {
            path: self.dir.clone(),
            error: e,
        };
        disk::sync_dir(&self.dir).map_err(io)?;
        // The active segment's base: segments below it are sealed and synced; the active one
        // is trusted through the shutdown marker alone.
        let active = self.active().base_offset;
        // A failed flush (fsyncgate: a later fsync may "succeed" with the data gone) keeps
        // its segments, and the active one, checked at the next start.
        if self.flush_cap.get() <= active {
            return Ok(false);
        }
        flush::write_recovery_point(&self.dir, active).map_err(io)?;
        Ok(true)
    }

    /// Whether an append that ends here must wait for an fsync (`flush.messages`).
    pub fn flush_due(&self) -> bool {
        self.next_offset() - self.synced >= self.config.flush_messages
    }

    /// Whether unsynced records have waited `flush.ms`.
    pub fn flush_overdue(&self) -> bool {
        self.config.flush_ms < i64::MAX
            && self.unsynced_since.is_some_and(|t| {
                t.elapsed() >= Duration::from_millis(self.config.flush_ms.max(0) as u64)
            })
    }

    /// What an fsync must cover for every record written so far to be durable; `None` when
    /// they already are.
    pub fn sync_job(&self) -> Option<SyncJob> {
        let upto = self.next_offset();
        if upto <= self.synced && self.active().base_offset == self.synced_active_base {
            return None;
        }
        let covered: Vec<&Segment> = self
            .segments
            .iter()
            .filter(|s| s.next_offset > self.synced)
            .collect();
        let active_base = self.active().base_offset;
        Some(SyncJob {
            files: covered.iter().map(|s| s.file_handle()).collect(),
            first_base: covered.first().map_or(active_base, |s| s.base_offset),
            dir: (active_base != self.synced_active_base).then(|| self.dir.clone()),
            active_base,
            upto,
            cap: self.flush_cap.clone(),
            log_dir: self.dir.clone(),
        })
    }

    /// Records that `job` ran: its records are durable.
    pub fn synced(&mut self, job: &SyncJob) {
        if job.upto >= self.synced {
            self.synced = job.upto;
            self.synced_active_base = job.active_base;
        }
        if self.synced >= self.next_offset() {
            self.unsynced_since = None;
        }
    }

    /// Offset below which every record is durable.
    pub fn synced_offset(&self) -> i64 {
        self.synced
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        // Invariant: a log always has at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    /// The offset the next record will get (the high watermark: a single node commits at once).
    pub fn next_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        let first = self
            .segments
            .iter()
            .find(|s| s.next_offset > s.base_offset)
            .map(|s| s.base_offset)
            .unwrap_or_else(|| self.next_offset());
        // A floor past the end (the log was truncated by recovery after it was set) stops at
        // the end.
        first.max(self.start_floor.min(self.next_offset()))
    }

    /// DeleteRecords: makes `offset` the log start, so nothing below it is served again, and
    /// deletes the segments wholly below it. The new start is on disk before this returns.
    /// Moving the start backwards or past the end is the caller's to refuse.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset > self.log_start_offset() {
            persist_log_start(&self.dir, offset)?;
            self.move_start(offset);
        }
        Ok(self.log_start_offset())
    }

    /// The second half of DeleteRecords, once [`persist_log_start`] has recorded `offset`.
    pub fn move_start(&mut self, offset: i64) {
        if offset > self.start_floor {
            self.start_floor = offset;
            self.delete_segments_before(offset);
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn roll(&mut self) -> Result<(), LogError> {
        let next = self.next_offset();
        let n = self.segments.len();
        self.segments[n - 1].seal();
        self.segments.push(Segment::create(&self.dir, next)?);
        queue_flush(&self.segments[n - 1], next, &self.dir, &self.flush_cap);
        Ok(())
    }

    /// `incoming`: the next batch's size and last offset delta.
    fn should_roll(&self, incoming: usize, last_offset_delta: i32) -> bool {
        let a = self.active();
        a.size > 0
            && (a.size + incoming as u64 > self.config.segment_bytes
                || a.opened_at.elapsed() >= Duration::from_millis(self.config.segment_ms)
                // Positions in the offset index are 32-bit.
                || a.size + incoming as u64 > u64::from(u32::MAX)
                // So are offsets relative to the segment's base (kept within i32, as Kafka
                // does). A header may claim 2^31 - 1 records in a few bytes, so sizes alone
                // do not bound them: without this, relative offsets wrap and reads land on
                // the wrong batch.
                || self.next_offset() + i64::from(last_offset_delta) - a.base_offset
                    > i64::from(i32::MAX))
    }

    /// Appends the already validated batches found at `batches` within `records`, assigning
    /// offsets. Each batch is written as the producer sent it except for its first 16 bytes.
    pub fn append(
        &mut self,
        records: &[u8],
        batches: &[(usize, BatchHeader)],
        leader_epoch: i32,
    ) -> Result<Appended, LogError> {
        let mut first = None;
        let mut last = self.next_offset() - 1;
        for (pos, h) in batches {
            let (at, _) = self.append_batch(&records[*pos..*pos + h.size], h, leader_epoch)?;
            first.get_or_insert(at.base_offset);
            last = at.last_offset;
        }
        Ok(Appended {
            base_offset: first.unwrap_or(last + 1),
            last_offset: last,
        })
    }

    /// Appends one validated batch (`raw` is exactly the batch). Returns where it landed and,
    /// when a new segment was started for it, that segment's base offset: the point at which
    /// callers keeping derived state (producer ids) snapshot it.
    pub fn append_batch(
        &mut self,
        raw: &[u8],
        h: &BatchHeader,
        leader_epoch: i32,
    ) -> Result<(Appended, Option<i64>), LogError> {
        if self.closed {
            return Err(LogError::Closed {
                path: self.dir.clone(),
            });
        }
        let mut rolled = None;
        if self.should_roll(h.size, h.last_offset_delta) {
            self.roll()?;
            rolled = Some(self.next_offset());
        }
        let base = self.next_offset();
        let prefix = batch::patched_prefix(raw, base, leader_epoch);
        let mut placed = *h;
        placed.base_offset = base;
        let interval = self.config.index_interval_bytes;
        let n = self.segments.len();
        self.segments[n - 1].append(&prefix, &raw[16..], &placed, interval)?;
        self.unsynced_since
            .get_or_insert_with(std::time::Instant::now);
        Ok((
            Appended {
                base_offset: base,
                last_offset: placed.last_offset(),
            },
            rolled,
        ))
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.iter().map(|s| s.base_offset).collect()
    }

    /// Calls `f` with the header of every batch from the one holding `from` to the end, and
    /// with the whole batch for transactional control batches (transaction markers: small, and
    /// their record says commit or abort). Other control batches (watermark announcements,
    /// many in a pipeline's output) are not read.
    pub fn scan_headers(
        &self,
        from: i64,
        mut f: impl FnMut(&BatchHeader, Option<Bytes>),
    ) -> Result<(), LogError> {
        let mut next = from.max(self.log_start_offset());
        while let Some(slice) = self.plan_read(next)? {
            let mut pos = slice.position;
            while pos < slice.end {
                let h = slice.header_at(pos)?;
                let whole = if h.is_control() && h.is_transactional() {
                    let raw = slice
                        .file
                        .read_vec_at(pos, h.size)
                        .map_err(|e| LogError::Io {
                            path: self.dir.clone(),
                            error: e,
                        })?;
                    Some(Bytes::from(raw))
                } else {
                    None
                };
                f(&h, whole);
                next = h.last_offset() + 1;
                pos += h.size as u64;
            }
        }
        Ok(())
    }

    /// Forces written batches to stable storage.
    pub fn sync(&self) -> Result<(), LogError> {
        self.active().sync()
    }

    /// Whether a control batch (a transaction marker) starts at `offset`.
    pub fn control_at(&self, offset: i64) -> Result<bool, LogError> {
        let Some(slice) = self.plan_read(offset)? else {
            return Ok(false);
        };
        let h = slice.header_at(slice.position)?;
        Ok(h.base_offset == offset && h.is_control())
    }

    /// Where to read from for `offset`: the segment slice starting at the batch that holds it.
    /// `None` when there is nothing at or after `offset`.
    pub fn plan_read(&self, offset: i64) -> Result<Option<ReadSlice>, LogError> {
        let idx = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for seg in &self.segments[idx..] {
            if let Some(slice) = seg.locate(offset)? {
                return Ok(Some(slice));
            }
        }
        Ok(None)
    }

    /// The first batch holding a record stamped at or after `ts`, and that batch's base offset.
    pub fn plan_time_lookup(&self, ts: i64) -> Result<Option<(ReadSlice, i64)>, LogError> {
        for seg in &self.segments {
            if let Some(found) = seg.locate_time(ts)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.segments
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(-1)
    }

    /// Starts a new segment now (the next append goes into it).
    pub fn force_roll(&mut self) -> Result<(), LogError> {
        if self.active().size > 0 {
            self.roll()?;
        }
        Ok(())
    }

    /// Deletes every sealed segment whose records all lie below `offset`. Callers use it to
    /// compact: rewrite what is live at the end of the log, then drop what came before.
    pub fn delete_segments_before(&mut self, offset: i64) -> usize {
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[0].next_offset <= offset {
            self.segments.remove(0).delete_files();
            deleted += 1;
        }
        deleted
    }

    /// Deletes whole sealed segments past `retention.ms` (by their newest timestamp) or beyond
    /// `retention.bytes` (oldest first). An expired active segment is rolled first so that it
    /// can go too. Returns how many segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let expired = |s: &Segment, cfg: &LogConfig| {
            cfg.retention_ms >= 0 && s.size > 0 && s.newest_ms(now_ms) < now_ms - cfg.retention_ms
        };
        if expired(self.active(), &self.config) {
            self.roll()?;
        }
        let mut total = self.size_bytes() as i64;
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let over_size = self.config.retention_bytes >= 0
                && total - oldest.size as i64 >= self.config.retention_bytes;
            if !(expired(oldest, &self.config) || over_size) {
                break;
            }
            total -= oldest.size as i64;
            let seg = self.segments.remove(0);
            tracing::info!(
                dir = %self.dir.display(),
                base_offset = seg.base_offset,
                "retention deleted segment"
            );
            seg.delete_files();
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// Whole batches of a slice, located by their headers but not read (see [`disk::FileRange`]).
pub struct Span {
    pub range: disk::FileRange,
    /// Records in those batches.
    pub records: u64,
    /// The offset after the last of them (`None` when there are none).
    pub end_offset: Option<i64>,
}

/// Batches smaller than this on average are read into memory rather than spanned: one header
/// read per batch would cost more than copying them.
const MIN_SPAN_BATCH: u64 = 16 * 1024;

impl ReadSlice {
    /// What [`ReadSlice::read`] would return, as a place in the file: the same whole batches,
    /// found by reading only their headers, and none from offset `below` on (a read_committed
    /// fetch stops at the last stable offset, always a batch boundary, as
    /// [`batch::before_offset`] cuts). `None` when the batches are small (below
    /// [`MIN_SPAN_BATCH`] on average over the first few), then `read` is the cheaper way, or
    /// when a header does not parse.
    pub fn span(
        &self,
        max_bytes: usize,
        min_one: bool,
        below: i64,
    ) -> std::io::Result<Option<Span>> {
        let max = max_bytes as u64;
        let mut hdr = [0u8; batch::HEADER_LEN];
        let (mut pos, mut records, mut batches) = (self.position, 0u64, 0u64);
        let mut end_offset = None;
        while pos < self.end {
            let taken = pos - self.position;
            if batches >= 8 && taken / batches < MIN_SPAN_BATCH {
                return Ok(None);
            }
            let avail = self.end - pos;
            if avail < batch::HEADER_LEN as u64 {
                break;
            }
            self.file.read_exact_at(&mut hdr, pos)?;
            let Ok(h) = batch::parse_header(&hdr) else {
                // Not a batch `span` understands (damage): `read` decides what goes out, as
                // it always did, and the client reports what it gets.
                return Ok(None);
            };
            if h.base_offset >= below {
                break;
            }
            let mut size = h.size as u64;
            if taken == 0 && min_one {
                // KIP-74: the first batch goes whole whatever the limit (cut only by the end
                // of the data, as `read` does).
                size = size.min(avail);
            } else if taken + size > max || size > avail {
                break;
            }
            records += h.records_count.max(0) as u64;
            end_offset = Some(h.last_offset() + 1);
            batches += 1;
            pos += size;
        }
        Ok(Some(Span {
            range: disk::FileRange {
                file: self.file.clone(),
                position: self.position,
                len: (pos - self.position) as usize,
            },
            records,
            end_offset,
        }))
    }

    /// The header of the batch at byte `pos` of this slice's file.
    pub fn header_at(&self, pos: u64) -> Result<BatchHeader, LogError> {
        let mut hdr = [0u8; batch::HEADER_LEN];
        let corrupt = || LogError::Corrupt {
            path: PathBuf::from("segment"),
            position: pos,
        };
        self.file
            .read_exact_at(&mut hdr, pos)
            .map_err(|_| corrupt())?;
        batch::parse_header(&hdr).map_err(|_| corrupt())
    }

    /// Reads whole batches from this slice: as many as fit in `max_bytes`. With `min_one`, at
    /// least the first one whatever its size (KIP-74), so a consumer can never get stuck.
    pub fn read(&self, max_bytes: usize, min_one: bool) -> std::io::Result<Bytes> {
        let avail = (self.end - self.position) as usize;
        let want = avail.min(max_bytes.max(batch::LOG_OVERHEAD));
        let mut buf = self.file.read_vec_at(self.position, want)?;
        let mut cut = 0;
        while let Some(size) = batch::framed_size(&buf[cut..]) {
            if cut + size > buf.len() {
                break;
            }
            cut += size;
        }
        if cut == 0 && !min_one {
            return Ok(Bytes::new());
        }
        if cut == 0 {
            let Some(size) = batch::framed_size(&buf) else {
                return Ok(Bytes::new());
            };
            let size = size.min(avail);
            buf = self.file.read_vec_at(self.position, size)?;
            cut = size;
        }
        buf.truncate(cut);
        Ok(Bytes::from(buf))
    }
}
