//! A simulated disk for crash tests, in the spirit of FoundationDB's simulation and redb's
//! crash tests: the storage code runs unchanged (paths under a mounted disk's root are served
//! here instead of by the kernel), while the disk keeps two images of every file and
//! directory:
//! - what was written, which reads see (the page cache);
//! - what is durable: the bytes as of the last successful sync of the file, and a directory's
//!   names as of its last sync.
//!
//! A power cut ([`SimDisk::power_off`], then [`SimDisk::power_on`]) keeps the durable image
//! plus a random subset of the writes made since each file's last sync, any of them torn
//! (only a prefix reaches the platter), and a directory's names as last synced: a file
//! created and never made durable in its directory is gone, whatever was synced into it.
//! Faults on demand: the n-th sync fails and drops what it should have written (as Linux
//! does), the n-th write fails after writing only part of its bytes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

static MOUNTS: Mutex<Vec<Arc<SimDisk>>> = Mutex::new(Vec::new());

/// Runs `f` on the simulated disk that holds `path`, if one does.
pub(super) fn route<T>(path: &Path, f: impl FnOnce(&Arc<SimDisk>, &Path) -> T) -> Option<T> {
    let disk = {
        let mounts = MOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        mounts.iter().find(|d| path.starts_with(&d.root)).cloned()
    }?;
    Some(f(&disk, path))
}

pub(super) enum Mode {
    /// Create if absent; writes go to the end.
    Append,
    /// Create or empty; writes go to the end.
    Truncate,
}

pub(super) enum Remove {
    File,
    EmptyDir,
    Tree,
}

const ROOT: u64 = 0;

#[derive(Debug)]
pub struct SimDisk {
    root: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every power cut: handles opened before it are dead.
    generation: u64,
    powered: bool,
    nodes: HashMap<u64, Node>,
    next_node: u64,
    faults: Faults,
    syncs: u64,
}

/// Faults armed on the disk: each counts down the operations of its kind and fires when it
/// reaches zero.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// This many more syncs succeed, then one fails (dropping the file's unsynced writes).
    pub fail_sync_after: Option<u64>,
    /// This many more writes succeed, then one writes only half its bytes and fails.
    pub fail_write_after: Option<u64>,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug, Default)]
struct FileNode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: what a power cut may or may not keep.
    pending: Vec<Op>,
    modified_ms: i64,
}

#[derive(Debug, Default)]
struct DirNode {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Write { at: u64, bytes: Vec<u8> },
    SetLen(u64),
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated disk: {what}"))
}

fn not_found() -> io::Error {
    io::ErrorKind::NotFound.into()
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { at, bytes } => {
            let at = *at as usize;
            if image.len() < at + bytes.len() {
                image.resize(at + bytes.len(), 0);
            }
            image[at..at + bytes.len()].copy_from_slice(bytes);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
    }
}

/// A small deterministic generator: a crash is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// A mounted disk; unmounted when dropped.
pub struct Mount(Arc<SimDisk>);

impl std::ops::Deref for Mount {
    type Target = SimDisk;
    fn deref(&self) -> &SimDisk {
        &self.0
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        MOUNTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| !Arc::ptr_eq(d, &self.0));
    }
}

impl SimDisk {
    /// A new, empty, powered disk under a root path no real file system has.
    pub fn mount() -> Mount {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let root = PathBuf::from(format!(
            "/sluice-sim-disk/{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut state = State {
            powered: true,
            next_node: ROOT + 1,
            ..State::default()
        };
        state.nodes.insert(ROOT, Node::Dir(DirNode::default()));
        let disk = Arc::new(SimDisk {
            root,
            state: Mutex::new(state),
        });
        MOUNTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(disk.clone());
        Mount(disk)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn arm(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Successful and failed syncs so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The power goes: every operation fails until [`Self::power_on`].
    pub fn power_off(&self) {
        self.lock().powered = false;
    }

    /// The power comes back: the disk holds what was durable plus whatever of the rest the
    /// cut let through, chosen by `seed`. Every handle opened before is dead.
    pub fn power_on(&self, seed: u64) {
        let mut rng = Rng(seed);
        let mut st = self.lock();
        st.generation += 1;
        st.powered = true;
        st.faults = Faults::default();
        let mut ids: Vec<u64> = st.nodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            match st.nodes.get_mut(&id) {
                Some(Node::File(f)) => {
                    let mut image = std::mem::take(&mut f.durable);
                    for op in &f.pending {
                        match rng.below(4) {
                            0 => {}
                            // Torn: part of the write reached the disk.
                            1 => {
                                if let Op::Write { at, bytes } = op {
                                    let cut = rng.below(bytes.len() as u64 + 1) as usize;
                                    apply(
                                        &mut image,
                                        &Op::Write {
                                            at: *at,
                                            bytes: bytes[..cut].to_vec(),
                                        },
                                    );
                                }
                            }
                            _ => apply(&mut image, op),
                        }
                    }
                    f.pending.clear();
                    f.data = image.clone();
                    f.durable = image;
                }
                Some(Node::Dir(d)) => d.entries = d.durable.clone(),
                None => {}
            }
        }
        // What no durable name reaches is gone.
        let mut reachable = vec![ROOT];
        let mut i = 0;
        while i < reachable.len() {
            if let Some(Node::Dir(d)) = st.nodes.get(&reachable[i]) {
                reachable.extend(d.entries.values().copied());
            }
            i += 1;
        }
        st.nodes.retain(|id, _| reachable.contains(id));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn powered(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = self.lock();
        if !st.powered {
            return Err(eio("powered off"));
        }
        Ok(st)
    }

    /// The names of `path` below the root.
    fn parts(&self, path: &Path) -> io::Result<Vec<String>> {
        let rel = path.strip_prefix(&self.root).map_err(|_| not_found())?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => parts.push(n.to_str().ok_or_else(not_found)?.to_string()),
                Component::CurDir => {}
                _ => return Err(eio("unsupported path")),
            }
        }
        Ok(parts)
    }

    pub(super) fn open(self: &Arc<Self>, path: &Path, mode: Mode) -> io::Result<Handle> {
        let parts = self.parts(path)?;
        let mut st = self.powered()?;
        let (name, dir_parts) = parts.split_last().ok_or_else(|| eio("open of the root"))?;
        let dir = st.resolve(dir_parts)?;
        let existing = st.dir(dir)?.entries.get(name).copied();
        let node = match existing {
            Some(id) => {
                if let (Mode::Truncate, Some(Node::File(f))) = (&mode, st.nodes.get_mut(&id)) {
                    f.data.clear();
                    f.pending.push(Op::SetLen(0));
                }
                id
            }
            None => {
                let id = st.next_node;
                st.next_node += 1;
                st.nodes.insert(id, Node::File(FileNode::default()));
                st.dir_mut(dir)?.entries.insert(name.clone(), id);
                id
            }
        };
        if !matches!(st.nodes.get(&node), Some(Node::File(_))) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        Ok(Handle {
            disk: self.clone(),
            node,
            generation: st.generation,
        })
    }

    pub(super) fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let parts = self.parts(path)?;
        let st = self.powered()?;
        let id = st.resolve(&parts)?;
        Ok(st.file(id)?.data.clone())
    }

    pub(super) fn exists(&self, path: &Path) -> bool {
        let Ok(parts) = self.parts(path) else {
            return false;
        };
        self.lock().resolve(&parts).is_ok()
    }

    pub(super) fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let parts = self.parts(path)?;
        let mut st = self.powered()?;
        let mut dir = ROOT;
        for p in parts {
            dir = match st.dir(dir)?.entries.get(&p).copied() {
                Some(id) => {
                    st.dir(id)?;
                    id
                }
                None => {
                    let id = st.next_node;
                    st.next_node += 1;
                    st.nodes.insert(id, Node::Dir(DirNode::default()));
                    st.dir_mut(dir)?.entries.insert(p, id);
                    id
                }
            };
        }
        Ok(())
    }

    pub(super) fn remove(&self, path: &Path, what: Remove) -> io::Result<()> {
        let parts = self.parts(path)?;
        let mut st = self.powered()?;
        let (name, dir_parts) = parts
            .split_last()
            .ok_or_else(|| eio("removal of the root"))?;
        let dir = st.resolve(dir_parts)?;
        let id = *st.dir(dir)?.entries.get(name).ok_or_else(not_found)?;
        match (what, st.nodes.get(&id)) {
            (Remove::File, Some(Node::Dir(_))) => return Err(io::ErrorKind::IsADirectory.into()),
            (Remove::EmptyDir, Some(Node::File(_))) => {
                return Err(io::ErrorKind::NotADirectory.into())
            }
            (Remove::EmptyDir, Some(Node::Dir(d))) if !d.entries.is_empty() => {
                return Err(io::ErrorKind::DirectoryNotEmpty.into())
            }
            _ => {}
        }
        st.dir_mut(dir)?.entries.remove(name);
        Ok(())
    }

    pub(super) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (self.parts(from)?, self.parts(to)?);
        let mut st = self.powered()?;
        let (fname, fdir) = from.split_last().ok_or_else(|| eio("rename of the root"))?;
        let (tname, tdir) = to.split_last().ok_or_else(|| eio("rename onto the root"))?;
        let (fdir, tdir) = (st.resolve(fdir)?, st.resolve(tdir)?);
        let id = st
            .dir_mut(fdir)?
            .entries
            .remove(fname)
            .ok_or_else(not_found)?;
        st.dir_mut(tdir)?.entries.insert(tname.clone(), id);
        Ok(())
    }

    pub(super) fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let parts = self.parts(path)?;
        let st = self.powered()?;
        let id = st.resolve(&parts)?;
        Ok(st.dir(id)?.entries.keys().cloned().collect())
    }

    pub(super) fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let parts = self.parts(path)?;
        let mut st = self.powered()?;
        let id = st.resolve(&parts)?;
        st.syncs += 1;
        if st.sync_fault() {
            return Err(eio("directory sync failed"));
        }
        let d = st.dir_mut(id)?;
        d.durable = d.entries.clone();
        Ok(())
    }
}

impl State {
    fn resolve(&self, parts: &[String]) -> io::Result<u64> {
        let mut at = ROOT;
        for p in parts {
            at = *self.dir(at)?.entries.get(p).ok_or_else(not_found)?;
        }
        Ok(at)
    }

    fn dir(&self, id: u64) -> io::Result<&DirNode> {
        match self.nodes.get(&id) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(io::ErrorKind::NotADirectory.into()),
            None => Err(not_found()),
        }
    }

    fn dir_mut(&mut self, id: u64) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&id) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(io::ErrorKind::NotADirectory.into()),
            None => Err(not_found()),
        }
    }

    fn file(&self, id: u64) -> io::Result<&FileNode> {
        match self.nodes.get(&id) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found()),
        }
    }

    fn file_mut(&mut self, id: u64) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&id) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found()),
        }
    }

    /// Counts a sync down its armed fault; true when this one fails.
    fn sync_fault(&mut self) -> bool {
        fire(&mut self.faults.fail_sync_after)
    }
}

fn fire(countdown: &mut Option<u64>) -> bool {
    match countdown {
        Some(0) => {
            *countdown = None;
            true
        }
        Some(n) => {
            *n -= 1;
            false
        }
        None => false,
    }
}

/// An open simulated file.
#[derive(Debug, Clone)]
pub struct Handle {
    disk: Arc<SimDisk>,
    node: u64,
    generation: u64,
}

impl Handle {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = self.disk.powered()?;
        if st.generation != self.generation {
            return Err(eio("handle from before a power cut"));
        }
        Ok(st)
    }

    pub(super) fn size(&self) -> io::Result<u64> {
        Ok(self.state()?.file(self.node)?.data.len() as u64)
    }

    pub(super) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let st = self.state()?;
        let data = &st.file(self.node)?.data;
        let end = pos as usize + buf.len();
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[pos as usize..end]);
        Ok(())
    }

    /// Appends `bytes` at the end of the file.
    pub(super) fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state()?;
        let torn = fire(&mut st.faults.fail_write_after);
        let f = st.file_mut(self.node)?;
        let bytes = if torn {
            &bytes[..bytes.len() / 2]
        } else {
            bytes
        };
        let op = Op::Write {
            at: f.data.len() as u64,
            bytes: bytes.to_vec(),
        };
        apply(&mut f.data, &op);
        f.pending.push(op);
        f.modified_ms = crate::broker::now_ms();
        if torn {
            return Err(eio("write failed part way"));
        }
        Ok(())
    }

    pub(super) fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state()?;
        let f = st.file_mut(self.node)?;
        let op = Op::SetLen(len);
        apply(&mut f.data, &op);
        f.pending.push(op);
        Ok(())
    }

    pub(super) fn sync(&self) -> io::Result<()> {
        let mut st = self.state()?;
        st.syncs += 1;
        let failed = st.sync_fault();
        let f = st.file_mut(self.node)?;
        let pending = std::mem::take(&mut f.pending);
        if failed {
            // fsyncgate: the pages are marked clean, so the writes are never retried.
            return Err(eio("fsync failed"));
        }
        for op in &pending {
            apply(&mut f.durable, op);
        }
        Ok(())
    }

    pub(super) fn modified_ms(&self) -> Option<i64> {
        self.state()
            .ok()?
            .file(self.node)
            .ok()
            .map(|f| f.modified_ms)
    }

    pub(super) fn is_at(&self, path: &Path) -> bool {
        let Ok(parts) = self.disk.parts(path) else {
            return false;
        };
        self.state()
            .is_ok_and(|st| st.resolve(&parts).is_ok_and(|id| id == self.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk;

    #[test]
    fn only_synced_bytes_and_names_survive_a_power_cut() {
        let d = SimDisk::mount();
        let dir = d.root().join("log");
        disk::create_dir_all(&dir).unwrap();
        disk::sync_dir(d.root()).unwrap();
        let kept = disk::File::create(&dir.join("kept")).unwrap();
        kept.write_all(b"durable").unwrap();
        kept.sync_all().unwrap();
        disk::sync_dir(&dir).unwrap();
        // Synced data whose name never was: lost with its name.
        let unnamed = disk::File::create(&dir.join("unnamed")).unwrap();
        unnamed.write_all(b"x").unwrap();
        unnamed.sync_all().unwrap();
        // Not synced: any prefix of it may survive, torn or not.
        kept.write_all(b" and more").unwrap();
        assert_eq!(disk::read(&dir.join("kept")).unwrap(), b"durable and more");
        d.power_off();
        assert!(kept.sync_all().is_err());
        d.power_on(7);
        assert!(kept.size().is_err(), "handles die with the power");
        let after = disk::read(&dir.join("kept")).unwrap();
        assert!(after.starts_with(b"durable"));
        assert!(b"durable and more".starts_with(&after[..]));
        assert!(!disk::exists(&dir.join("unnamed")));
    }

    #[test]
    fn a_failed_sync_loses_its_writes_for_good() {
        let d = SimDisk::mount();
        disk::sync_dir(d.root()).unwrap();
        let p = d.root().join("f");
        let f = disk::File::create(&p).unwrap();
        disk::sync_dir(d.root()).unwrap();
        f.write_all(b"lost").unwrap();
        d.arm(Faults {
            fail_sync_after: Some(0),
            ..Faults::default()
        });
        assert!(f.sync_data().is_err());
        f.write_all(b"kept").unwrap();
        f.sync_data().unwrap();
        // Reads still see both (the page cache) ...
        assert_eq!(disk::read(&p).unwrap(), b"lostkept");
        d.power_off();
        d.power_on(1);
        // ... but the first write never reached the disk: a hole where it was.
        assert_eq!(disk::read(&p).unwrap(), b"\0\0\0\0kept");
    }

    #[test]
    fn a_failed_write_leaves_part_of_it() {
        let d = SimDisk::mount();
        let f = disk::File::create(&d.root().join("f")).unwrap();
        d.arm(Faults {
            fail_write_after: Some(1),
            ..Faults::default()
        });
        f.write_all(b"ab").unwrap();
        assert!(f.write_all(b"cdef").is_err());
        assert_eq!(f.size().unwrap(), 4);
    }
}
