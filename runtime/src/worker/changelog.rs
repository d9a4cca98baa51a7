//! A task's checkpoint as records of a compacted changelog topic, written as a delta.
//!
//! A checkpoint (input position, plugin state, watermarks) can be far larger than a record
//! may be (Kafka's `max.message.bytes` is 1 MB by default), and most of a large state does
//! not change between two commits a second apart. So the encoded checkpoint is cut by its
//! content (a rolling hash picks the cut points, so an edit moves only the cuts near it) into
//! chunks of at most [`CHUNK`] bytes, each stored under a key naming its content:
//!
//! - `K/H` — a chunk whose SHA-256 starts with the 16 bytes `H` (hex): its bytes;
//! - `K` — the head, written last: `"SCK2" · id (u64 BE) · length (u64 BE) · n (u32 BE) ·
//!   H₁ … Hₙ` (the chunks in order);
//! - a commit writes only the chunks the previous head did not name, and tombstones for the
//!   ones it named that the new head does not, so compaction drops them.
//!
//! `K` is `topic/partition` of the task's input. All of a commit's records are in one
//! transaction, so a read_committed reader sees a head only after its new chunks in the same
//! partition. Invariant: every chunk the last head names has a live record (written by this
//! commit or by an earlier one, and not tombstoned since, as only chunks that leave the head
//! are), so reading a partition and keeping the latest value of every key gives the last
//! committed checkpoint whole, and compaction, which keeps the latest value of every key,
//! never breaks it. A writer that does not know which chunks are live (a fresh start) writes
//! them all.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use crate::plugin::checkpoint::Checkpoint;

/// Most bytes in a chunk: under Kafka's default max.message.bytes with room for the record's
/// own framing.
pub const CHUNK: usize = 512 * 1024;
/// No cut before this many bytes.
const MIN_CHUNK: usize = 64 * 1024;
/// A cut where the rolling hash has these bits clear: 1 in 2^17 positions, so chunks
/// average about 128 KiB beyond the minimum.
const CUT_MASK: u64 = (1 << 17) - 1;
const HEAD_MAGIC: &[u8; 4] = b"SCK2";
const HASH: usize = 16;

/// The key of a task's head record.
pub fn task_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// One record to write: key and value (None: a tombstone).
pub type Entry = (String, Option<Vec<u8>>);

/// The rolling hash's table: 256 fixed pseudo-random words (splitmix64 from a constant), the
/// same in every build, so every worker cuts the same bytes the same way.
fn gear() -> &'static [u64; 256] {
    static GEAR: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    GEAR.get_or_init(|| {
        let mut t = [0u64; 256];
        let mut x = 0x5d1c_e5a1_7e0b_2c3du64;
        for w in t.iter_mut() {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *w = z ^ (z >> 31);
        }
        t
    })
}

/// Cuts `blob` by content: each chunk is MIN_CHUNK..=CHUNK bytes (the last may be shorter).
pub fn cut(blob: &[u8]) -> Vec<&[u8]> {
    let g = gear();
    let mut out = Vec::new();
    let mut start = 0;
    while start < blob.len() {
        let rest = &blob[start..];
        let mut end = rest.len().min(CHUNK);
        if rest.len() > MIN_CHUNK {
            let mut h = 0u64;
            for (i, &b) in rest.iter().enumerate().take(CHUNK).skip(MIN_CHUNK) {
                h = (h << 1).wrapping_add(g[usize::from(b)]);
                if h & CUT_MASK == 0 {
                    end = i + 1;
                    break;
                }
            }
        }
        out.push(&rest[..end]);
        start += end;
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn chunk_name(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..HASH])
}

/// A parsed head: the commit's id, the encoded checkpoint's length and its chunks in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub id: u64,
    pub len: u64,
    pub chunks: Vec<String>,
}

impl Head {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24 + self.chunks.len() * HASH);
        v.extend_from_slice(HEAD_MAGIC);
        v.extend_from_slice(&self.id.to_be_bytes());
        v.extend_from_slice(&self.len.to_be_bytes());
        v.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for c in &self.chunks {
            for i in 0..HASH {
                v.push(
                    u8::from_str_radix(c.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0),
                );
            }
        }
        v
    }

    pub fn parse(v: &[u8]) -> Option<Head> {
        let rest = v.strip_prefix(HEAD_MAGIC)?;
        let id = u64::from_be_bytes(rest.get(0..8)?.try_into().ok()?);
        let len = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
        let n = u32::from_be_bytes(rest.get(16..20)?.try_into().ok()?) as usize;
        let hashes = rest.get(20..)?;
        if hashes.len() != n.checked_mul(HASH)? {
            return None;
        }
        let chunks = hashes.chunks(HASH).map(hex).collect();
        Some(Head { id, len, chunks })
    }

    /// The record keys of this head's chunks.
    pub fn keys(&self, key: &str) -> BTreeSet<String> {
        self.chunks.iter().map(|c| format!("{key}/{c}")).collect()
    }
}

/// The records of one commit: new chunks first, then tombstones, the head last; and the head.
/// `live`: the chunk keys the last committed head named, if known (None: write every chunk).
pub fn encode(
    key: &str,
    id: u64,
    c: &Checkpoint,
    live: Option<&BTreeSet<String>>,
) -> Result<(Vec<Entry>, Head), String> {
    let blob =
        rmp_serde::to_vec_named(c).map_err(|e| format!("cannot encode a checkpoint: {e}"))?;
    let pieces = cut(&blob);
    u32::try_from(pieces.len()).map_err(|_| "a checkpoint of over 2^32 chunks")?;
    let mut out = Vec::new();
    let mut names = Vec::with_capacity(pieces.len());
    let mut written = BTreeSet::new();
    for bytes in pieces {
        let name = chunk_name(bytes);
        let k = format!("{key}/{name}");
        if !live.is_some_and(|l| l.contains(&k)) && written.insert(k.clone()) {
            out.push((k, Some(bytes.to_vec())));
        }
        names.push(name);
    }
    let head = Head {
        id,
        len: blob.len() as u64,
        chunks: names,
    };
    if let Some(live) = live {
        let now = head.keys(key);
        for gone in live.difference(&now) {
            out.push((gone.clone(), None));
        }
    }
    out.push((key.to_string(), Some(head.to_bytes())));
    Ok((out, head))
}

/// The chunk keys of `head` if it is `c`'s own head (the same chunks, so `c` encodes the same
/// as when `head` was written), else None.
pub fn live_if_matches(key: &str, c: &Checkpoint, head: &Head) -> Option<BTreeSet<String>> {
    let blob = rmp_serde::to_vec_named(c).ok()?;
    let pieces = cut(&blob);
    let same = blob.len() as u64 == head.len
        && pieces.len() == head.chunks.len()
        && pieces
            .iter()
            .zip(&head.chunks)
            .all(|(p, name)| chunk_name(p) == *name);
    same.then(|| head.keys(key))
}

/// Reads the records of one changelog partition, in offset order, keeping what belongs to
/// one task.
#[derive(Default)]
pub struct Restore {
    head: Option<Head>,
    /// A head record that could not be parsed (written by another version).
    unreadable: bool,
    chunks: HashMap<String, Vec<u8>>,
}

impl Restore {
    /// Offers the chunks of a checkpoint already at hand (the local cache), so a read from
    /// where the cache was taken needs only what changed since. Content-addressed: a seeded
    /// chunk is used only where a head names its hash.
    pub fn seed(&mut self, c: &Checkpoint) {
        if let Ok(blob) = rmp_serde::to_vec_named(c) {
            for bytes in cut(&blob) {
                self.chunks
                    .entry(chunk_name(bytes))
                    .or_insert_with(|| bytes.to_vec());
            }
        }
    }

    /// Takes one record; records of other tasks are ignored.
    pub fn record(&mut self, key: &str, record_key: &[u8], value: Option<&[u8]>) {
        let Ok(k) = std::str::from_utf8(record_key) else {
            return;
        };
        if k == key {
            self.head = value.and_then(Head::parse);
            self.unreadable = value.is_some() && self.head.is_none();
            return;
        }
        let Some(name) = k.strip_prefix(key).and_then(|r| r.strip_prefix('/')) else {
            return;
        };
        match value {
            Some(v) => {
                self.chunks.insert(name.to_string(), v.to_vec());
            }
            None => {
                self.chunks.remove(name);
            }
        }
    }

    /// Whether a head was seen (a checkpoint newer than whatever was had before reading).
    pub fn found(&self) -> bool {
        self.head.is_some() || self.unreadable
    }

    /// The checkpoint of the last head and the head, or None if there was none.
    pub fn finish(self) -> Result<Option<(Checkpoint, Head)>, String> {
        if self.unreadable {
            return Err("changelog: a checkpoint head this version cannot read".into());
        }
        let Some(head) = self.head else {
            return Ok(None);
        };
        let mut blob = Vec::with_capacity(head.len.min(1 << 30) as usize);
        for name in &head.chunks {
            match self.chunks.get(name) {
                Some(bytes) => blob.extend_from_slice(bytes),
                None => {
                    return Err(format!(
                        "changelog: chunk {name} of checkpoint {} is missing",
                        head.id
                    ))
                }
            }
        }
        if blob.len() as u64 != head.len {
            return Err(format!(
                "changelog: checkpoint {} is {} bytes, its head says {}",
                head.id,
                blob.len(),
                head.len
            ));
        }
        Ok(Some((Checkpoint::decode(&blob)?, head)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::checkpoint::Bin;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ckpt(next: i64, state: Vec<u8>) -> Checkpoint {
        Checkpoint {
            producer_id: 0,
            next_offset: next,
            state: Bin(state),
            plugin_version: "v1".into(),
            emitted: Default::default(),
            pending: Vec::new(),
            watermarks: Default::default(),
        }
    }

    /// Bytes that look random (real state mostly compresses poorly), from a seed.
    fn noise(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Reads `view` as a restoring task would: the latest value of every key.
    fn read(key: &str, view: &[&Entry]) -> Option<Checkpoint> {
        let mut r = Restore::default();
        for (k, v) in view {
            r.record(key, k.as_bytes(), v.as_deref());
        }
        r.finish().unwrap().map(|(c, _)| c)
    }

    /// What compaction leaves of `log`: the latest record of every key, in offset order
    /// (tombstones too, as within delete.retention.ms).
    fn compact(log: &[Entry]) -> Vec<&Entry> {
        let mut latest = BTreeMap::new();
        for (at, e) in log.iter().enumerate() {
            latest.insert(e.0.clone(), at);
        }
        log.iter()
            .enumerate()
            .filter(|(at, e)| latest.get(&e.0) == Some(at))
            .map(|(_, e)| e)
            .collect()
    }

    proptest! {
        /// Commits of two tasks into one partition, each state an edit of the one before
        /// (bytes overwritten, inserted or removed), some by a writer that does not know what
        /// is live (a restart): each task's last commit reads back whole, from the whole log
        /// and after compaction.
        #[test]
        fn the_last_commit_reads_back_whole(
            steps in proptest::collection::vec(
                (any::<bool>(), 0u8..4, 0usize..3 * CHUNK, 0usize..200_000, any::<bool>()),
                1..8,
            ),
        ) {
            let mut log: Vec<Entry> = Vec::new();
            let mut state = [noise(1, 2 * CHUNK), noise(2, CHUNK / 3)];
            let mut live: [Option<BTreeSet<String>>; 2] = [None, None];
            let mut last = [None, None];
            for (i, (which, edit, at, len, restarted)) in steps.into_iter().enumerate() {
                let t = usize::from(which);
                let s = &mut state[t];
                let at = at.min(s.len());
                match edit {
                    0 => s.splice(at..at, noise(i as u64 + 7, len)).for_each(drop),
                    1 => s.drain(at..(at + len).min(s.len())).for_each(drop),
                    2 => {
                        let end = (at + len).min(s.len());
                        s[at..end].fill(0xAB);
                    }
                    _ => {}
                }
                let key = task_key("in", t as i32);
                let c = ckpt(i as i64, s.clone());
                let known = if restarted { None } else { live[t].as_ref() };
                let (entries, head) = encode(&key, i as u64, &c, known).unwrap();
                live[t] = Some(head.keys(&key));
                log.extend(entries);
                last[t] = Some(c);
            }
            for (t, want) in last.iter().enumerate() {
                let key = task_key("in", t as i32);
                let whole: Vec<&Entry> = log.iter().collect();
                for view in [whole, compact(&log)] {
                    let got = read(&key, &view);
                    prop_assert_eq!(
                        got.map(|c| (c.next_offset, c.state.0)),
                        want.clone().map(|c| (c.next_offset, c.state.0))
                    );
                }
            }
        }
    }

    #[test]
    fn a_small_change_writes_a_small_delta() {
        let mut state = noise(3, 8 << 20);
        let (first, head) = encode("t/0", 1, &ckpt(1, state.clone()), None).unwrap();
        let bytes =
            |es: &[Entry]| -> usize { es.iter().filter_map(|e| e.1.as_ref()).map(Vec::len).sum() };
        assert!(bytes(&first) > 8 << 20);
        // A few bytes changed in the middle, and some inserted near the start.
        state[4 << 20..(4 << 20) + 10].fill(0);
        state.splice(1000..1000, [1, 2, 3]);
        let live = head.keys("t/0");
        let (second, head2) = encode("t/0", 2, &ckpt(2, state.clone()), Some(&live)).unwrap();
        let written = bytes(&second);
        assert!(
            written < 4 * CHUNK,
            "{written} bytes written for a 13-byte change of an 8 MiB state"
        );
        // The log of both commits reads back as the second; after compaction too.
        let log: Vec<Entry> = first.into_iter().chain(second).collect();
        let got = read("t/0", &log.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(got.state.0, state);
        let got = read("t/0", &compact(&log)).unwrap();
        assert_eq!(got.state.0, state);
        assert_eq!(
            head2.chunks.len(),
            cut(&rmp_serde::to_vec_named(&ckpt(2, state)).unwrap()).len()
        );
    }

    #[test]
    fn a_seeded_restore_needs_only_what_came_after() {
        let old = ckpt(1, noise(4, 3 << 20));
        let (first, head) = encode("t/0", 1, &old, None).unwrap();
        let mut s = old.state.0.clone();
        s[100..200].fill(9);
        let new = ckpt(2, s);
        let (second, _) = encode("t/0", 2, &new, Some(&head.keys("t/0"))).unwrap();
        assert!(second.len() < first.len());
        // Only the second commit's records, plus the cached first checkpoint.
        let mut r = Restore::default();
        r.seed(&old);
        for (k, v) in &second {
            r.record("t/0", k.as_bytes(), v.as_deref());
        }
        let (got, _) = r.finish().unwrap().unwrap();
        assert_eq!(got.state.0, new.state.0);
        // Without the seed the same records are not enough.
        let mut r = Restore::default();
        for (k, v) in &second {
            r.record("t/0", k.as_bytes(), v.as_deref());
        }
        assert!(r.finish().is_err());
    }

    #[test]
    fn a_missing_chunk_is_an_error_not_a_wrong_state() {
        let c = ckpt(7, noise(5, CHUNK + 10));
        let (entries, head) = encode("t/0", 1, &c, None).unwrap();
        assert!(head.chunks.len() >= 2);
        let dropped = format!("t/0/{}", head.chunks[1]);
        let mut r = Restore::default();
        for (k, v) in entries.iter().filter(|(k, _)| *k != dropped) {
            r.record("t/0", k.as_bytes(), v.as_deref());
        }
        assert!(r.finish().is_err());
    }

    #[test]
    fn a_cached_head_counts_only_for_its_own_checkpoint() {
        let c = ckpt(1, noise(7, CHUNK * 2));
        let (_, head) = encode("t/0", 1, &c, None).unwrap();
        assert_eq!(live_if_matches("t/0", &c, &head), Some(head.keys("t/0")));
        // The cache saved the next checkpoint but not yet its head: not trusted.
        let next = ckpt(2, noise(8, CHUNK * 2));
        assert_eq!(live_if_matches("t/0", &next, &head), None);
    }

    #[test]
    fn heads_round_trip_and_garbage_is_refused() {
        let h = Head {
            id: 9,
            len: 1234,
            chunks: vec!["00112233445566778899aabbccddeeff".into(), "ff".repeat(16)],
        };
        assert_eq!(Head::parse(&h.to_bytes()), Some(h));
        assert_eq!(Head::parse(b"SCK2short"), None);
        assert_eq!(Head::parse(&[0u8; 20]), None);
    }

    #[test]
    fn cuts_cover_the_blob_within_bounds() {
        let b = noise(6, 5 << 20);
        let pieces = cut(&b);
        assert_eq!(pieces.iter().map(|p| p.len()).sum::<usize>(), b.len());
        for p in &pieces[..pieces.len() - 1] {
            assert!((MIN_CHUNK..=CHUNK).contains(&p.len()), "{}", p.len());
        }
        assert!(cut(&[]).is_empty());
    }
}
