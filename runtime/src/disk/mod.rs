//! The file layer every durable byte goes through: segments, indexes, the flusher's recovery
//! points, producer snapshots, the internal logs (committed offsets, transactions) and plugin
//! checkpoints.
//!
//! In the broker it is a thin shell over `std::fs` (one enum variant, so calls compile to the
//! plain system calls). Under test (and in the fuzz targets, which need no real disk), a path inside a mounted [`sim::SimDisk`] is served by a
//! simulated disk instead, which keeps what was written apart from what was made durable and
//! can lose the difference, tear writes and fail fsyncs and writes on demand: the crash
//! property tests (`log/sim_tests.rs`) drive the real storage code through it.
//!
//! Durability rules, as POSIX gives them and as the simulation enforces them:
//! - a file's bytes are durable after `sync_data`/`sync_all` of that file returns `Ok`;
//! - a name (created, renamed or removed) is durable after its directory is synced
//!   ([`sync_dir`]);
//! - a failed sync may have dropped the unsynced bytes for good (Linux marks the pages clean:
//!   "fsyncgate"); a later sync that succeeds says nothing about them.

pub mod json;
#[cfg(any(test, feature = "fuzzing"))]
pub mod sim;

use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// Bytes of a file handed out by place, not read: a fetch on a plaintext connection has the
/// kernel send them straight from the file (`sendfile`); elsewhere they are read when needed.
#[derive(Clone, Debug)]
pub struct FileRange {
    pub file: std::sync::Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl FileRange {
    /// Reads the bytes from `at` (relative to the range) up to at most `max` of them.
    pub fn read_part(&self, at: usize, max: usize) -> io::Result<Vec<u8>> {
        let n = max.min(self.len.saturating_sub(at));
        if n == 0 {
            return Ok(Vec::new());
        }
        self.file.read_vec_at(self.position + at as u64, n)
    }

    /// Reads the whole range.
    pub fn read(&self) -> io::Result<Vec<u8>> {
        self.read_part(0, self.len)
    }
}

/// An open file. Cloning handles ([`File::try_clone`]) share the file.
#[derive(Debug)]
pub struct File(Inner);

#[derive(Debug)]
enum Inner {
    Os(std::fs::File),
    #[cfg(any(test, feature = "fuzzing"))]
    Sim(sim::Handle),
}

impl File {
    /// Opens `path` for reading and appending, creating it if absent (segments, indexes).
    pub fn open_append(path: &Path) -> io::Result<File> {
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(h) = sim::route(path, |d, p| d.open(p, sim::Mode::Append)) {
            return h.map(|h| File(Inner::Sim(h)));
        }
        std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map(|f| File(Inner::Os(f)))
    }

    /// Creates `path` empty (truncating it) for writing.
    pub fn create(path: &Path) -> io::Result<File> {
        #[cfg(any(test, feature = "fuzzing"))]
        if let Some(h) = sim::route(path, |d, p| d.open(p, sim::Mode::Truncate)) {
            return h.map(|h| File(Inner::Sim(h)));
        }
        std::fs::File::create(path).map(|f| File(Inner::Os(f)))
    }

    pub fn size(&self) -> io::Result<u64> {
        match &self.0 {
            Inner::Os(f) => f.metadata().map(|m| m.len()),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => h.size(),
        }
    }

    /// The descriptor of a real file (not a simulated one), for `sendfile`.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match &self.0 {
            Inner::Os(f) => Some(f.as_raw_fd()),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(_) => None,
        }
    }

    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        match &self.0 {
            Inner::Os(f) => f.read_exact_at(buf, pos),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => h.read_exact_at(buf, pos),
        }
    }

    /// Reads exactly `len` bytes at `pos` into a fresh buffer, without zeroing it first:
    /// fetches read megabytes at a time, and clearing memory the kernel is about to overwrite
    /// showed up as a third of the broker's time when consuming.
    pub fn read_vec_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        match &self.0 {
            Inner::Os(f) => read_uninit(f, pos, len),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => {
                let mut buf = vec![0; len];
                h.read_exact_at(&mut buf, pos)?;
                Ok(buf)
            }
        }
    }

    /// Writes all of `bufs` (at the end, for a file opened to append).
    pub fn write_all_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        match &self.0 {
            Inner::Os(f) => write_all_vectored(f, bufs),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => h.write(
                &bufs
                    .iter()
                    .flat_map(|b| b.iter().copied())
                    .collect::<Vec<u8>>(),
            ),
        }
    }

    pub fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.write_all_vectored(&[IoSlice::new(data)])
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        match &self.0 {
            Inner::Os(f) => f.set_len(len),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => h.set_len(len),
        }
    }

    /// Reserves the blocks of `from..from + len` without changing the file's size
    /// (`FALLOC_FL_KEEP_SIZE`), so appends into them skip the file system's per-page block
    /// reservation. A hint: the append reports a full disk itself. Simulated files: nothing.
    /// Setting the file's length (`set_len`) gives them back.
    pub fn preallocate(&self, from: u64, len: u64) -> io::Result<()> {
        self.fallocate(libc::FALLOC_FL_KEEP_SIZE, from, len)
    }

    fn fallocate(&self, mode: libc::c_int, from: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        match &self.0 {
            Inner::Os(f) => {
                let (Ok(from), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(len))
                else {
                    return Err(io::ErrorKind::InvalidInput.into());
                };
                // SAFETY: the descriptor is this open file's; fallocate takes no pointers.
                if unsafe { libc::fallocate(f.as_raw_fd(), mode, from, len) } == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(_) => Ok(()),
        }
    }

    pub fn sync_data(&self) -> io::Result<()> {
        match &self.0 {
            Inner::Os(f) => f.sync_data(),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => h.sync(),
        }
    }

    pub fn sync_all(&self) -> io::Result<()> {
        match &self.0 {
            Inner::Os(f) => f.sync_all(),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => h.sync(),
        }
    }

    pub fn try_clone(&self) -> io::Result<File> {
        match &self.0 {
            Inner::Os(f) => f.try_clone().map(|f| File(Inner::Os(f))),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => Ok(File(Inner::Sim(h.clone()))),
        }
    }

    /// When the file was last written, in milliseconds since the epoch.
    pub fn modified_ms(&self) -> Option<i64> {
        match &self.0 {
            Inner::Os(f) => f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64),
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => h.modified_ms(),
        }
    }

    /// Whether `path` still names this very file (not deleted, not replaced).
    pub fn is_at(&self, path: &Path) -> bool {
        match &self.0 {
            Inner::Os(f) => match (f.metadata(), std::fs::metadata(path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            },
            #[cfg(any(test, feature = "fuzzing"))]
            Inner::Sim(h) => h.is_at(path),
        }
    }

    #[cfg(test)]
    pub(crate) fn from_os(f: std::fs::File) -> File {
        File(Inner::Os(f))
    }
}

pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(path, |d, p| d.read(p)) {
        return r;
    }
    std::fs::read(path)
}

pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn exists(path: &Path) -> bool {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(path, |d, p| d.exists(p)) {
        return r;
    }
    path.exists()
}

pub fn create_dir_all(path: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(path, |d, p| d.create_dir_all(p)) {
        return r;
    }
    std::fs::create_dir_all(path)
}

/// [`create_dir_all`], then syncs the parent of every directory it made, so that the new
/// directories outlive a power cut (a file synced into a directory whose own entry is not
/// durable is lost with it).
pub fn create_dir_all_durably(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty() && !exists(p)) {
        missing.push(p);
        at = p.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    create_dir_all(path)?;
    let synced = missing.iter().rev().try_for_each(|made| {
        made.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or(Ok(()), sync_dir)
    });
    if synced.is_err() {
        // Made again (and synced) by the next call, rather than taken for durable. Only
        // while still empty: another writer may have started using them.
        for made in &missing {
            let _ = remove_empty_dir(made);
        }
    }
    synced
}

pub fn remove_file(path: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(path, |d, p| d.remove(p, sim::Remove::File)) {
        return r;
    }
    std::fs::remove_file(path)
}

pub fn remove_empty_dir(path: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(path, |d, p| d.remove(p, sim::Remove::EmptyDir)) {
        return r;
    }
    std::fs::remove_dir(path)
}

pub fn remove_dir_all(path: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(path, |d, p| d.remove(p, sim::Remove::Tree)) {
        return r;
    }
    std::fs::remove_dir_all(path)
}

pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(from, |d, p| d.rename(p, to)) {
        return r;
    }
    std::fs::rename(from, to)
}

/// The names in directory `path` (entries whose name is not UTF-8 are left out: nothing here
/// makes such names).
pub fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(path, |d, p| d.list(p)) {
        return r;
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        if let Some(n) = entry?.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// Makes the names in directory `path` durable (entries created, renamed or removed).
pub fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(r) = sim::route(path, |d, p| d.sync_dir(p)) {
        return r;
    }
    std::fs::File::open(path)?.sync_all()
}

/// Replaces `path` so that after a crash it holds the old or the new content, never a mix: a
/// synced temporary file renamed into place, then the directory synced. `tmp_name` must be
/// unique among concurrent writers of the same directory.
pub fn replace_with_name(path: &Path, tmp_name: &str, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(tmp_name);
    let f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    rename(&tmp, path)?;
    sync_dir(dir)
}

/// [`replace_with_name`] with `NAME.tmp` as the temporary file.
pub fn replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| format!("{}.tmp", n.to_string_lossy()))
        .unwrap_or_else(|| "replace.tmp".into());
    replace_with_name(path, &name, data)
}

fn read_uninit(file: &std::fs::File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::io::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut done = 0usize;
    while done < len {
        // SAFETY: the destination is the vector's spare capacity, `len - done` bytes long from
        // `done`; pread writes at most that many bytes and reports how many it wrote.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(done).cast(),
                len - done,
                (pos + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n as usize;
    }
    // SAFETY: pread initialised exactly `len` bytes.
    unsafe { buf.set_len(len) };
    Ok(buf)
}

fn write_all_vectored(mut f: &std::fs::File, bufs: &[IoSlice<'_>]) -> io::Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let n = f.write_vectored(bufs)?;
    if n == total {
        return Ok(());
    }
    // Short write: finish the remainder plainly.
    let mut skip = n;
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        f.write_all(&b[skip..])?;
        skip = 0;
    }
    Ok(())
}
