//! A task's checkpoint: where it is in its input, its plugin's state, and how many records it
//! has emitted to each output partition — saved together in one file, atomically.
//!
//! ## Exactly-once output (the invariant)
//! Each task writes all its output (results, retries, dead letters) as one idempotent
//! producer whose id is kept in the checkpoint. The n-th record the task ever emits to an
//! output partition carries sequence `n mod 2^31`. Replaying a deterministic plugin from a
//! checkpoint re-emits the same records in the same order, so the task knows, from the count
//! in the checkpoint and the sequence the partition expects next from its producer id, exactly
//! how many replayed records are already in the log, and skips them. Hence, after any crash:
//! output = f(input) with nothing lost and nothing doubled.
//!
//! Output that does not follow from the input alone (from `tick`, driven by the wall clock) is
//! written ahead: the checkpoint holding it in `pending` is saved before the records are
//! appended, and a recovering task appends `pending` first (deduplicated the same way).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("corrupt checkpoint {path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot write checkpoint: {0}")]
    Write(String),
}

/// A record written ahead of its append (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    pub topic: String,
    pub partition: i32,
    #[serde(with = "opt_bin")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "opt_bin")]
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Bin)>,
    pub timestamp: i64,
}

/// Bytes that MessagePack stores as a binary blob rather than an array of integers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bin(pub Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bin, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bin, E> {
                Ok(Bin(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Bin, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bin(out))
            }
        }
        d.deserialize_bytes(V)
    }
}

mod opt_bin {
    use super::Bin;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|b| Bin(b.clone())).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Bin>::deserialize(d)?.map(|b| b.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The producer id all of this task's output is written with.
    pub producer_id: i64,
    /// The next input offset to process.
    pub next_offset: i64,
    /// The plugin's `snapshot()`; empty means "no state yet".
    pub state: Bin,
    /// Version (hash prefix) of the plugin that produced `state`.
    pub plugin_version: String,
    /// Records emitted so far, per output topic and partition.
    pub emitted: BTreeMap<String, BTreeMap<i32, u64>>,
    /// Output to append before anything else (written ahead; see the module docs).
    pub pending: Vec<PendingRecord>,
    /// The input's event-time bookkeeping as of `next_offset` (absent in older checkpoints).
    #[serde(default)]
    pub watermarks: super::watermark::TrackerState,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        let bytes = match crate::disk::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(CheckpointError::Read {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        Checkpoint::decode(&bytes)
            .map(Some)
            .map_err(|why| CheckpointError::Corrupt {
                path: path.to_path_buf(),
                why,
            })
    }

    /// Decodes a checkpoint file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Replaces the checkpoint at `path` atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        if let Some(dir) = path.parent() {
            crate::disk::create_dir_all_durably(dir)
                .map_err(|e| CheckpointError::Write(e.to_string()))?;
        }
        let bytes =
            rmp_serde::to_vec_named(self).map_err(|e| CheckpointError::Write(e.to_string()))?;
        crate::broker::write_atomically(path, &bytes)
            .map_err(|e| CheckpointError::Write(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p").join("clicks-3.ckpt");
        assert_eq!(Checkpoint::load(&path).unwrap(), None);
        let mut emitted = BTreeMap::new();
        emitted.insert("out".to_string(), BTreeMap::from([(0, 7u64), (2, 9)]));
        let c = Checkpoint {
            producer_id: 42,
            next_offset: 1234,
            state: Bin(vec![0, 200, 255, 3]),
            plugin_version: "abc".into(),
            emitted,
            pending: vec![PendingRecord {
                topic: "out".into(),
                partition: 1,
                key: Some(b"k".to_vec()),
                value: None,
                headers: vec![("h".into(), Bin(b"v".to_vec()))],
                timestamp: 5,
            }],
            watermarks: super::super::watermark::TrackerState {
                newest: Some(9),
                current: Some(4),
                ..Default::default()
            },
        };
        c.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(c.clone()));
        // State bytes are stored as a blob, not one integer per byte.
        let raw = std::fs::read(&path).unwrap();
        assert!(raw.windows(4).any(|w| w == [0, 200, 255, 3]));
        std::fs::write(&path, b"\x93garbage").unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Corrupt { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("SIM_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
        ))]
        /// Checkpoints on the simulated disk, saved with failed fsyncs and power cuts between:
        /// what loads after a cut is whole, and it is the last save that returned `Ok` or one
        /// that failed after it (whose outcome is unknown); never an older one, never a mix.
        #[test]
        fn a_checkpoint_survives_power_cuts_whole(
            ops in proptest::collection::vec((0u8..10, proptest::prelude::any::<u64>()), 1..60),
        ) {
            use crate::disk::sim::{Faults, SimDisk};
            let d = SimDisk::mount();
            let path = d.root().join("pipelines").join("p").join("clicks-0.ckpt");
            let mut saved = 0i64;
            // Saves a cut may leave in place: the last that succeeded, and failed ones after.
            let mut allowed: Vec<Option<i64>> = vec![None];
            for (op, arg) in ops {
                match op {
                    0 => d.arm(Faults { fail_sync_after: Some(arg % 4), ..Faults::default() }),
                    1 => {
                        d.power_off();
                        d.power_on(arg);
                        let found = Checkpoint::load(&path)
                            .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?
                            .map(|c| c.next_offset);
                        proptest::prop_assert!(
                            allowed.contains(&found),
                            "loaded {:?}, expected one of {:?}", found, allowed
                        );
                        allowed = vec![found];
                    }
                    _ => {
                        saved += 1;
                        let c = Checkpoint {
                            producer_id: 7,
                            next_offset: saved,
                            // Sizes vary, so a mix of two saves cannot pass for either.
                            state: Bin(vec![saved as u8; (arg % 3000) as usize]),
                            plugin_version: "v".into(),
                            emitted: BTreeMap::new(),
                            pending: Vec::new(),
                            watermarks: Default::default(),
                        };
                        match c.save(&path) {
                            Ok(()) => allowed = vec![Some(saved)],
                            Err(_) => allowed.push(Some(saved)),
                        }
                    }
                }
            }
        }
    }
}
