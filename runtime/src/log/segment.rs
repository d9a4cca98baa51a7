//! One segment: a `.log` file of whole batches plus its sparse offset and time indexes.
//!
//! Invariants:
//! - `size` is the length of the valid prefix of the `.log` file; every byte below it belongs to a
//!   batch that passed validation and whose offsets are strictly above the previous batch's.
//! - Offset index entries `(relative offset, position)` and time index entries
//!   `(timestamp, relative offset)` are strictly increasing in both fields and only ever point at
//!   batch starts below `size`. An index is a hint: losing it costs a scan, never data.
//! - Only the newest segment of a partition is written to; older segments are immutable.

use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::batch::{self, BatchHeader, LOG_OVERHEAD};
use super::LogError;
use crate::disk::{self, File};

/// Offset index entry: offset relative to the segment base, and byte position in the `.log`.
const OFFSET_ENTRY: usize = 8;
/// Time index entry: max timestamp so far and the relative offset of the batch that reached it.
const TIME_ENTRY: usize = 12;

pub struct Segment {
    pub base_offset: i64,
    log_path: PathBuf,
    file: Arc<File>,
    index_file: File,
    time_file: File,
    /// Valid bytes in the `.log` file.
    pub size: u64,
    /// Offset after the last record in this segment (== base_offset when empty).
    pub next_offset: i64,
    /// Largest batch max-timestamp stored here, -1 when empty.
    pub max_timestamp: i64,
    /// Index entries of the active segment, cached in memory. A sealed segment keeps none:
    /// lookups binary-search its index files with `pread`, so memory does not grow with the
    /// data stored.
    offset_index: Vec<(u32, u32)>,
    time_index: Vec<(i64, u32)>,
    /// Entry counts of the index files once sealed (`None` while active).
    sealed: Option<(usize, usize)>,
    bytes_since_entry: u64,
    /// When this segment took its first batch in this process (drives `segment.ms`).
    pub opened_at: Instant,
    /// The end of the blocks reserved ahead of the appends (`File::preallocate`); 0 until
    /// the first reservation, `u64::MAX` where the file system has none.
    reserved: u64,
}

/// A segment reserves blocks ahead of its appends once it holds this much, in steps of its
/// size so far, up to [`RESERVE_MAX`]: ext4's per-page delayed allocation was a quarter of a
/// 1 KiB produce's broker CPU, and reserved blocks skip it (a C writer of 1 GiB in 600 kB
/// writes: 0.18-0.22 s of CPU against 0.24-0.36, the writeback included). A partition that
/// gets little never reserves; one that gets much holds at most its size, and 4 MiB, unused
/// (4 GB for 1,000 busy partitions, until their segments roll).
const RESERVE_FROM: u64 = 1 << 20;
const RESERVE_MAX: u64 = 4 << 20;

pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

fn io_err(path: &Path, e: io::Error) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        error: e,
    }
}

/// Index entries a batch produced: (relative offset, position) and (timestamp, relative offset).
type NewEntries = (Option<(u32, u32)>, Option<(i64, u32)>);

/// A place to start reading a batch from and the bytes that remain of its segment.
#[derive(Clone)]
pub struct ReadSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub end: u64,
}

impl Segment {
    pub fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let stem = file_stem(base_offset);
        let log_path = dir.join(format!("{stem}.log"));
        let open = |p: PathBuf| File::open_append(&p).map_err(|e| io_err(&p, e));
        let file = open(log_path.clone())?;
        let index_file = open(dir.join(format!("{stem}.index")))?;
        let time_file = open(dir.join(format!("{stem}.timeindex")))?;
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            index_file,
            time_file,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            sealed: None,
            bytes_since_entry: 0,
            opened_at: Instant::now(),
            reserved: 0,
        })
    }

    /// Opens an existing segment. Unless `check` is set, a segment trusts its indexes when
    /// they look sane, and its last batch is located through them. A checked segment, or one
    /// whose indexes are missing or damaged, is scanned batch by batch, its CRCs checked, a torn
    /// or corrupt tail truncated and its indexes rewritten. Only the `active` one keeps its
    /// indexes in memory.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        check: bool,
        active: bool,
    ) -> Result<Segment, LogError> {
        let mut seg = Segment::create(dir, base_offset)?;
        let len = seg.file.size().map_err(|e| io_err(&seg.log_path, e))?;
        if !check && !active && seg.load_sealed(len).is_ok() {
            return Ok(seg);
        }
        if !check && active && seg.load_active(len).is_ok() {
            return Ok(seg);
        }
        seg.recover(len, index_interval)?;
        if !active {
            seg.release_indexes();
        }
        Ok(seg)
    }

    /// Opens a sealed segment without reading its indexes into memory: checks their sizes
    /// and last entries, then walks the batch headers after the last indexed position (at most
    /// one index interval) to find where the segment ends.
    fn load_sealed(&mut self, file_len: u64) -> Result<(), ()> {
        let len = |f: &File| f.size().map(|l| l as usize).map_err(|_| ());
        let (oi_len, ti_len) = (len(&self.index_file)?, len(&self.time_file)?);
        if oi_len % OFFSET_ENTRY != 0 || ti_len % TIME_ENTRY != 0 {
            return Err(());
        }
        self.sealed = Some((oi_len / OFFSET_ENTRY, ti_len / TIME_ENTRY));
        let last_offset_entry = match oi_len / OFFSET_ENTRY {
            0 => None,
            n => Some(self.offset_entry(n - 1).ok_or(())?),
        };
        let last_time = match ti_len / TIME_ENTRY {
            0 => -1,
            n => self.time_entry(n - 1).ok_or(())?.0,
        };
        let mut pos = match last_offset_entry {
            Some((_, p)) if u64::from(p) < file_len => u64::from(p),
            Some(_) => return Err(()),
            None => 0,
        };
        let mut next = self.base_offset;
        let mut max_ts = last_time;
        while pos < file_len {
            let mut hdr = [0u8; batch::HEADER_LEN];
            self.file.read_exact_at(&mut hdr, pos).map_err(|_| ())?;
            let h = batch::parse_header(&hdr).map_err(|_| ())?;
            if pos + h.size as u64 > file_len || h.base_offset < next {
                return Err(());
            }
            next = h.last_offset() + 1;
            max_ts = max_ts.max(h.max_timestamp);
            pos += h.size as u64;
        }
        self.size = file_len;
        self.next_offset = next;
        self.max_timestamp = max_ts;
        Ok(())
    }

    /// Opens the active segment without a scan (after a clean shutdown, when every file was
    /// fsynced): as [`Self::load_sealed`], then its indexes are read into memory, as an active
    /// segment keeps them.
    fn load_active(&mut self, file_len: u64) -> Result<(), ()> {
        self.load_sealed(file_len)?;
        let (offsets, times) = self.sealed.ok_or(())?;
        let offset_index: Option<Vec<_>> = (0..offsets).map(|i| self.offset_entry(i)).collect();
        let time_index: Option<Vec<_>> = (0..times).map(|i| self.time_entry(i)).collect();
        self.offset_index = offset_index.ok_or(())?;
        self.time_index = time_index.ok_or(())?;
        self.sealed = None;
        // The next entry goes where it would have gone had the process not stopped.
        let last = self.offset_index.last().map_or(0, |e| u64::from(e.1));
        self.bytes_since_entry = file_len.saturating_sub(last);
        Ok(())
    }

    /// Drops the in-memory index cache; from now on lookups read the index files.
    fn release_indexes(&mut self) {
        self.sealed = Some((self.offset_index.len(), self.time_index.len()));
        self.offset_index = Vec::new();
        self.time_index = Vec::new();
    }

    fn offset_entries(&self) -> usize {
        self.sealed.map(|s| s.0).unwrap_or(self.offset_index.len())
    }

    fn time_entries(&self) -> usize {
        self.sealed.map(|s| s.1).unwrap_or(self.time_index.len())
    }

    fn offset_entry(&self, i: usize) -> Option<(u32, u32)> {
        if self.sealed.is_none() {
            return self.offset_index.get(i).copied();
        }
        let mut e = [0u8; OFFSET_ENTRY];
        self.index_file
            .read_exact_at(&mut e, (i * OFFSET_ENTRY) as u64)
            .ok()?;
        Some((
            u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
        ))
    }

    fn time_entry(&self, i: usize) -> Option<(i64, u32)> {
        if self.sealed.is_none() {
            return self.time_index.get(i).copied();
        }
        let mut e = [0u8; TIME_ENTRY];
        self.time_file
            .read_exact_at(&mut e, (i * TIME_ENTRY) as u64)
            .ok()?;
        let mut t = [0u8; 8];
        t.copy_from_slice(&e[..8]);
        Some((
            i64::from_be_bytes(t),
            u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
        ))
    }

    /// The first index in `0..n` where `pred` is false (entries satisfying it come first).
    fn partition_point(n: usize, mut pred: impl FnMut(usize) -> bool) -> usize {
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Scans the whole `.log`, keeping the longest prefix of valid batches.
    fn recover(&mut self, file_len: u64, index_interval: u64) -> Result<(), LogError> {
        self.sealed = None;
        self.offset_index.clear();
        self.time_index.clear();
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.bytes_since_entry = 0;
        let mut pos = 0u64;
        let mut buf = Vec::new();
        let mut truncated_reason = None;
        while pos < file_len {
            let mut frame = [0u8; LOG_OVERHEAD];
            if self.file.read_exact_at(&mut frame, pos).is_err() {
                truncated_reason = Some("torn batch framing");
                break;
            }
            let Some(size) = batch::framed_size(&frame) else {
                truncated_reason = Some("impossible batch length");
                break;
            };
            if pos + size as u64 > file_len {
                truncated_reason = Some("torn batch");
                break;
            }
            buf.resize(size, 0);
            if self.file.read_exact_at(&mut buf, pos).is_err() {
                truncated_reason = Some("unreadable batch");
                break;
            }
            let h = match batch::validate(&buf) {
                Ok(h) => h,
                Err(_) => {
                    truncated_reason = Some("corrupt batch (CRC or header)");
                    break;
                }
            };
            if h.base_offset < self.next_offset {
                truncated_reason = Some("offsets go backwards");
                break;
            }
            self.track(&h, pos, index_interval);
            pos += size as u64;
        }
        if pos < file_len {
            tracing::warn!(
                segment = %self.log_path.display(),
                valid_bytes = pos,
                file_bytes = file_len,
                reason = truncated_reason.unwrap_or("unknown"),
                "truncating damaged tail of segment"
            );
            // Durably: new batches will take these offsets, and a cut that brought the old
            // tail back would put two batches at one offset.
            self.file
                .set_len(pos)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| io_err(&self.log_path, e))?;
        }
        self.size = pos;
        self.rewrite_indexes()?;
        Ok(())
    }

    fn rewrite_indexes(&mut self) -> Result<(), LogError> {
        let mut oi = Vec::with_capacity(self.offset_index.len() * OFFSET_ENTRY);
        for &(rel, pos) in &self.offset_index {
            oi.extend_from_slice(&rel.to_be_bytes());
            oi.extend_from_slice(&pos.to_be_bytes());
        }
        let mut ti = Vec::with_capacity(self.time_index.len() * TIME_ENTRY);
        for &(ts, rel) in &self.time_index {
            ti.extend_from_slice(&ts.to_be_bytes());
            ti.extend_from_slice(&rel.to_be_bytes());
        }
        for (f, data) in [(&self.index_file, oi), (&self.time_file, ti)] {
            f.set_len(0).map_err(|e| io_err(&self.log_path, e))?;
            f.write_all(&data).map_err(|e| io_err(&self.log_path, e))?;
        }
        Ok(())
    }

    /// Records a batch appended at `pos` in the in-memory state, returning the index entries
    /// that should be persisted.
    fn track(&mut self, h: &BatchHeader, pos: u64, index_interval: u64) -> NewEntries {
        let rel = (h.base_offset - self.base_offset) as u32;
        let mut oe = None;
        let mut te = None;
        if self.offset_index.is_empty() || self.bytes_since_entry >= index_interval {
            let e = (rel, pos as u32);
            self.offset_index.push(e);
            oe = Some(e);
            // Entries carry the running maximum, so every batch before an entry's offset has a
            // timestamp no larger than the entry's: lookups may start from it safely.
            let running = self.max_timestamp.max(h.max_timestamp);
            if running > self.time_index.last().map(|t| t.0).unwrap_or(-1) {
                let t = (running, rel);
                self.time_index.push(t);
                te = Some(t);
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += h.size as u64;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.next_offset = h.last_offset() + 1;
        self.size = pos + h.size as u64;
        (oe, te)
    }

    /// Appends one validated batch whose first 16 bytes are replaced by `prefix`.
    pub fn append(
        &mut self,
        prefix: &[u8; 16],
        rest: &[u8],
        h: &BatchHeader,
        index_interval: u64,
    ) -> Result<(), LogError> {
        let pos = self.size;
        if self.size == 0 {
            self.opened_at = Instant::now();
        }
        self.reserve_for((prefix.len() + rest.len()) as u64);
        if let Err(e) = self
            .file
            .write_all_vectored(&[IoSlice::new(prefix), IoSlice::new(rest)])
        {
            // Leave no partial batch behind: the next append must start on a boundary.
            let _ = self.file.set_len(pos);
            return Err(io_err(&self.log_path, e));
        }
        let (oe, te) = self.track(h, pos, index_interval);
        if let Some((rel, p)) = oe {
            let mut e = [0u8; OFFSET_ENTRY];
            e[..4].copy_from_slice(&rel.to_be_bytes());
            e[4..].copy_from_slice(&p.to_be_bytes());
            // Index writes are hints; a failure is logged and repaired at the next recovery.
            if let Err(err) = self.index_file.write_all(&e) {
                tracing::warn!(segment = %self.log_path.display(), %err, "offset index write failed");
            }
        }
        if let Some((ts, rel)) = te {
            let mut e = [0u8; TIME_ENTRY];
            e[..8].copy_from_slice(&ts.to_be_bytes());
            e[8..].copy_from_slice(&rel.to_be_bytes());
            if let Err(err) = self.time_file.write_all(&e) {
                tracing::warn!(segment = %self.log_path.display(), %err, "time index write failed");
            }
        }
        Ok(())
    }

    /// Seals the segment: makes its time index end with its true max timestamp, so retention
    /// and timestamp lookups after a restart need no scan, and drops the in-memory indexes.
    pub fn seal(&mut self) {
        if self.max_timestamp > self.time_index.last().map(|t| t.0).unwrap_or(-1) {
            let rel = (self.next_offset - 1 - self.base_offset) as u32;
            let t = (self.max_timestamp, rel);
            self.time_index.push(t);
            let mut e = [0u8; TIME_ENTRY];
            e[..8].copy_from_slice(&t.0.to_be_bytes());
            e[8..].copy_from_slice(&t.1.to_be_bytes());
            if let Err(err) = self.time_file.write_all(&e) {
                tracing::warn!(segment = %self.log_path.display(), %err, "time index write failed");
            }
        }
        // No fsync here: that is the flusher's job (see `flush.rs`), off the append path.
        self.release_indexes();
        // A sealed segment takes no more appends: what was reserved past its end goes back
        // (setting a file's length frees the blocks past it, however many a restart or a
        // kill -9 left there).
        if let Err(err) = self.file.set_len(self.size) {
            tracing::debug!(segment = %self.log_path.display(), %err, "reserved blocks not given back");
        }
        self.reserved = 0;
    }

    /// Reserves blocks ahead of an append of `len` bytes (see [`RESERVE_FROM`]).
    fn reserve_for(&mut self, len: u64) {
        let end = self.size + len;
        if self.reserved == u64::MAX || end <= self.reserved || self.size < RESERVE_FROM {
            return;
        }
        let from = self.reserved.max(self.size);
        let step = self.size.min(RESERVE_MAX).max(len);
        match self.file.preallocate(from, end - from + step) {
            Ok(()) => self.reserved = end + step,
            Err(err) => {
                // Not supported here, or the disk is full (the append will say so): appends
                // go on without reservations.
                tracing::debug!(segment = %self.log_path.display(), %err, "blocks not reserved");
                if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    self.reserved = u64::MAX;
                }
            }
        }
    }

    /// The time retention ages this segment from: its newest record timestamp, or, when its
    /// records carry none (-1, or a producer's 0), when it was last written, as Kafka does.
    /// Without that, records sent without timestamps would be deleted at the first
    /// retention pass.
    pub fn newest_ms(&self, now_ms: i64) -> i64 {
        if self.max_timestamp > 0 {
            return self.max_timestamp;
        }
        self.file.modified_ms().unwrap_or(now_ms)
    }

    /// Handles on this segment's three files, for the flusher to sync.
    pub fn flush_files(&self) -> io::Result<Vec<File>> {
        Ok(vec![
            self.file.try_clone()?,
            self.index_file.try_clone()?,
            self.time_file.try_clone()?,
        ])
    }

    /// A handle on the `.log` file that stays valid if the file is later replaced or deleted.
    pub fn file_handle(&self) -> Arc<File> {
        self.file.clone()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().map_err(|e| io_err(&self.log_path, e))
    }

    /// Position of the batch that holds `offset`, or of the first batch after it: found through
    /// the sparse index, then at most one index interval of headers.
    pub fn locate(&self, offset: i64) -> Result<Option<ReadSlice>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = (offset.max(self.base_offset) - self.base_offset) as u32;
        let idx = Self::partition_point(self.offset_entries(), |i| {
            self.offset_entry(i).is_some_and(|(r, _)| r <= rel)
        });
        let mut pos = match idx.checked_sub(1).and_then(|i| self.offset_entry(i)) {
            // An index entry past the data is damage: start from the top instead.
            Some((_, p)) if u64::from(p) < self.size => u64::from(p),
            _ => 0,
        };
        while pos < self.size {
            let mut hdr = [0u8; 27];
            self.file
                .read_exact_at(&mut hdr, pos)
                .map_err(|e| io_err(&self.log_path, e))?;
            let base = i64::from_be_bytes(hdr[..8].try_into().unwrap_or([0; 8]));
            let size = batch::framed_size(&hdr).ok_or(LogError::Corrupt {
                path: self.log_path.clone(),
                position: pos,
            })?;
            let delta = i32::from_be_bytes(hdr[23..27].try_into().unwrap_or([0; 4]));
            if base.saturating_add(i64::from(delta)) >= offset {
                return Ok(Some(ReadSlice {
                    file: self.file.clone(),
                    position: pos,
                    end: self.size,
                }));
            }
            pos += size as u64;
        }
        Ok(None)
    }

    /// First batch whose max timestamp is at or after `ts`: its position, found through the
    /// time index and then a header walk.
    pub fn locate_time(&self, ts: i64) -> Result<Option<(ReadSlice, i64)>, LogError> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        // The time index holds running maxima, so the last entry below `ts` bounds where the
        // first batch reaching `ts` can start.
        let idx = Self::partition_point(self.time_entries(), |i| {
            self.time_entry(i).is_some_and(|(t, _)| t < ts)
        });
        let start_rel = idx
            .checked_sub(1)
            .and_then(|i| self.time_entry(i))
            .map(|(_, r)| r)
            .unwrap_or(0);
        let start = self.base_offset + i64::from(start_rel);
        let Some(slice) = self.locate(start)? else {
            return Ok(None);
        };
        let mut pos = slice.position;
        while pos < self.size {
            let mut hdr = [0u8; batch::HEADER_LEN];
            self.file
                .read_exact_at(&mut hdr, pos)
                .map_err(|e| io_err(&self.log_path, e))?;
            let h = batch::parse_header(&hdr).map_err(|_| LogError::Corrupt {
                path: self.log_path.clone(),
                position: pos,
            })?;
            if h.max_timestamp >= ts {
                return Ok(Some((
                    ReadSlice {
                        file: self.file.clone(),
                        position: pos,
                        end: pos + h.size as u64,
                    },
                    h.base_offset,
                )));
            }
            pos += h.size as u64;
        }
        Ok(None)
    }

    pub fn delete_files(self) {
        delete_files(&self.log_path.with_extension(""));
    }
}

/// Removes the three files of the segment at `base_offset` in `dir`.
pub fn delete_segment(dir: &Path, base_offset: i64) {
    delete_files(&dir.join(file_stem(base_offset)));
}

fn delete_files(stem: &Path) {
    for ext in ["log", "index", "timeindex"] {
        let p = stem.with_extension(ext);
        if let Err(e) = disk::remove_file(&p) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), %e, "could not delete segment file");
            }
        }
    }
}
