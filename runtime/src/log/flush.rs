//! Flushing sealed segments to stable storage, off the append path.
//!
//! Rolling a segment used to `fdatasync` it on the spot, inside the produce request that
//! crossed `segment.bytes`: up to a gigabyte of dirty pages, 120 ms for 256 MB on this
//! machine's virtual disk and seconds on a real one, while the partition's lock was held and a
//! runtime worker was blocked. Kafka hands that flush to a background scheduler; so does this.
//!
//! What recovery may trust is kept on paper in the partition's `recovery-point` file (the
//! same idea as Kafka's `recovery-point-offset-checkpoint`): every segment whose base offset is
//! below it has been flushed and is trusted at start-up; every segment at or above it is
//! scanned and its CRCs checked, like the active one. One thread flushes jobs in the order
//! segments rolled, so the recovery point only moves forward.
//!
//! Invariant: `recovery-point` = P is written only after every segment with a base below P
//! has had its `.log` and index files `fdatasync`ed. A segment whose flush fails (or cannot
//! be queued) lowers its log's [`Cap`] to its base, and no later job moves the recovery point
//! past the cap: a failure is never papered over by the next segment's success.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;

use crate::disk::{self, File};

pub const RECOVERY_POINT_FILE: &str = "recovery-point";

/// Left in a log's directory by a failed fsync: the next start rewrites every segment at or
/// above the recovery point from what it reads back (see [`record_failure`]).
pub const SYNC_FAILED_FILE: &str = "sync-failed";

/// After a failed fsync the kernel may have dropped the writes it covered while still serving
/// them from its cache (Linux marks the pages clean: "fsyncgate"), so no later fsync of that
/// file makes them durable. The recovery point stops below `base` for good, and a marker asks
/// the next start to rewrite the unflushed segments into fresh files and sync those: only
/// then is what the log reads back also what the disk holds. Best effort: a disk that failed
/// an fsync may fail this write too, and the cap alone still keeps the segments checked.
pub fn record_failure(cap: &Cap, dir: &Path, base: i64) {
    cap.lower_to(base);
    cap.0 .1.store(true, Ordering::Release);
    // The lowest failed base so far: start-up checks and rewrites from there even if a
    // flush racing this failure already wrote a higher recovery point.
    let lowest = cap.get().min(read_failed_base(dir).unwrap_or(i64::MAX));
    if let Err(e) = write_offset_file(dir, SYNC_FAILED_FILE, lowest) {
        tracing::error!(dir = %dir.display(), error = %e, "could not record a failed fsync");
    }
}

/// The lowest segment base a failed fsync covered, if one was recorded.
pub fn read_failed_base(dir: &Path) -> Option<i64> {
    read_offset_file(dir, SYNC_FAILED_FILE)
}

/// A sealed segment's open files, to be synced, and the recovery point that holds afterwards.
pub struct FlushJob {
    pub files: Vec<File>,
    /// The sealed segment's `.log`: if it is gone or replaced (the partition was deleted, or
    /// retention removed it), the recovery point is left alone.
    pub log_path: PathBuf,
    pub dir: PathBuf,
    /// The sealed segment's base offset.
    pub base: i64,
    pub recovery_point: i64,
    /// The log's cap on its recovery point.
    pub cap: Cap,
}

/// The highest recovery point a log may record: the base of its first segment that could not
/// be flushed (none: `i64::MAX`). Shared by the log and its queued jobs.
#[derive(Clone, Debug)]
pub struct Cap(std::sync::Arc<(std::sync::atomic::AtomicI64, std::sync::atomic::AtomicBool)>);

impl Default for Cap {
    fn default() -> Cap {
        Cap(std::sync::Arc::new((
            std::sync::atomic::AtomicI64::new(i64::MAX),
            std::sync::atomic::AtomicBool::new(false),
        )))
    }
}

impl Cap {
    pub fn lower_to(&self, base: i64) {
        self.0 .0.fetch_min(base, Ordering::AcqRel);
    }

    pub fn get(&self) -> i64 {
        self.0 .0.load(Ordering::Acquire)
    }

    /// Whether an fsync of the log failed (not merely a flush that could not be queued):
    /// writes may have been dropped, so no later sync may be taken for durable.
    pub fn fsync_failed(&self) -> bool {
        self.0 .1.load(Ordering::Acquire)
    }
}

type Task = Box<dyn FnOnce() + Send>;

static FLUSHER: OnceLock<Sender<Task>> = OnceLock::new();

/// Queues `job` for the flusher thread.
pub fn submit(job: FlushJob) {
    in_background(move || run(job));
}

/// Runs `task` on the flusher thread, after every task queued before it; the thread starts on
/// first use. For slow durable writes that no request should wait for (segment flushes,
/// producer-state snapshots). If the thread cannot be started the task runs here: slower,
/// never unsafe.
pub fn in_background(task: impl FnOnce() + Send + 'static) {
    #[cfg(test)]
    let task = match manual::queue(Box::new(task)) {
        Some(task) => task,
        None => return,
    };
    let tx = FLUSHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Task>();
        let spawned = std::thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || {
                for task in rx {
                    task();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the log flusher thread");
        }
        tx
    });
    if let Err(mpsc::SendError(task)) = tx.send(Box::new(task)) {
        task();
    }
}

/// Returns once every task queued before this call has run.
pub fn wait_idle() {
    #[cfg(test)]
    if manual::run(usize::MAX) {
        return;
    }
    let (tx, rx) = mpsc::channel();
    in_background(move || {
        let _ = tx.send(());
    });
    let _ = rx.recv();
}

fn run(job: FlushJob) {
    let started = std::time::Instant::now();
    for f in &job.files {
        if let Err(e) = f.sync_data() {
            // The recovery point stays behind this segment for good, so it is checked (and
            // rewritten) at the next start.
            record_failure(&job.cap, &job.dir, job.base);
            tracing::error!(segment = %job.log_path.display(), error = %e, "segment flush failed");
            return;
        }
    }
    if !job.files.first().is_some_and(|f| f.is_at(&job.log_path)) {
        return;
    }
    if let Err(e) = write_recovery_point(&job.dir, job.recovery_point.min(job.cap.get())) {
        tracing::warn!(dir = %job.dir.display(), error = %e, "could not record the recovery point");
    }
    tracing::debug!(
        segment = %job.log_path.display(),
        ms = started.elapsed().as_millis() as u64,
        "sealed segment flushed"
    );
}

/// The recovery point recorded in `dir`, if any. A log written before recovery points
/// existed has none; its sealed segments were flushed when they rolled.
pub fn read_recovery_point(dir: &Path) -> Option<i64> {
    read_offset_file(dir, RECOVERY_POINT_FILE)
}

/// Replaces the recovery point atomically.
pub fn write_recovery_point(dir: &Path, offset: i64) -> std::io::Result<()> {
    write_offset_file(dir, RECOVERY_POINT_FILE, offset)
}

/// An offset read from a one-line file in `dir`, if present and well formed.
pub fn read_offset_file(dir: &Path, name: &str) -> Option<i64> {
    disk::read_to_string(&dir.join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Replaces a one-line offset file atomically: temp file, fsync, rename, fsync of the
/// directory.
pub fn write_offset_file(dir: &Path, name: &str, offset: i64) -> std::io::Result<()> {
    // Unique temp names: the flusher and a log being opened may both write at once.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    disk::replace_with_name(
        &dir.join(name),
        &format!("{name}.{n}.tmp"),
        format!("{offset}\n").as_bytes(),
    )
}

/// A flusher the test thread runs by hand, so a crash test decides which background jobs ran
/// before the power went (and a cut simply drops the rest, as the process's death would).
#[cfg(test)]
pub(crate) mod manual {
    use super::Task;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    thread_local! {
        static QUEUE: RefCell<Option<VecDeque<Task>>> = const { RefCell::new(None) };
    }

    /// From now on this thread's background jobs wait for [`run`] or [`drop_queued`].
    pub fn enable() {
        QUEUE.with(|q| *q.borrow_mut() = Some(VecDeque::new()));
    }

    /// Keeps `task` if this thread flushes by hand; gives it back otherwise.
    pub(super) fn queue(task: Task) -> Option<Task> {
        QUEUE.with(|q| match q.borrow_mut().as_mut() {
            Some(q) => {
                q.push_back(task);
                None
            }
            None => Some(task),
        })
    }

    /// Runs up to `n` queued jobs, oldest first; false when this thread is not in manual mode.
    pub fn run(n: usize) -> bool {
        for _ in 0..n {
            let next = QUEUE.with(|q| q.borrow_mut().as_mut().map(|q| q.pop_front()));
            match next {
                None => return false,
                Some(None) => break,
                Some(Some(task)) => task(),
            }
        }
        true
    }

    pub fn drop_queued() {
        QUEUE.with(|q| {
            if let Some(q) = q.borrow_mut().as_mut() {
                q.clear();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flush that fails must hold the recovery point below its segment even when the next
    /// segment's flush succeeds (the bug: the next job wrote a higher point anyway).
    #[test]
    fn a_failed_flush_caps_the_recovery_point() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("00000000000000000100.log");
        std::fs::write(&log, b"x").unwrap();
        let cap = Cap::default();
        // fsync of a pipe fails (EINVAL): a flush that cannot reach stable storage.
        let (reader, _writer) = std::io::pipe().unwrap();
        let unsyncable = File::from_os(std::fs::File::from(std::os::fd::OwnedFd::from(reader)));
        run(FlushJob {
            files: vec![unsyncable],
            log_path: dir.path().join("00000000000000000000.log"),
            dir: dir.path().to_path_buf(),
            base: 0,
            recovery_point: 100,
            cap: cap.clone(),
        });
        assert_eq!(cap.get(), 0);
        run(FlushJob {
            files: vec![File::open_append(&log).unwrap()],
            log_path: log.clone(),
            dir: dir.path().to_path_buf(),
            base: 100,
            recovery_point: 200,
            cap: cap.clone(),
        });
        assert_eq!(read_recovery_point(dir.path()), Some(0));
        // Without a failure, the point follows the jobs.
        let fine = Cap::default();
        run(FlushJob {
            files: vec![File::open_append(&log).unwrap()],
            log_path: log,
            dir: dir.path().to_path_buf(),
            base: 100,
            recovery_point: 200,
            cap: fine,
        });
        assert_eq!(read_recovery_point(dir.path()), Some(200));
    }
}
