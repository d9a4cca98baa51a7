//! Producer id allocation for InitProducerId. Ids are handed out from blocks whose end is
//! persisted before any id of the block is used, so an id is never given twice, even across
//! crashes (a crash only skips the rest of a block).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{write_atomically, BrokerError};

const BLOCK: i64 = 1000;

pub struct ProducerIds {
    path: PathBuf,
    state: Mutex<(i64, i64)>, // (next id, end of the persisted block)
}

impl ProducerIds {
    pub fn open(data_dir: &Path) -> Result<ProducerIds, BrokerError> {
        let path = data_dir.join("producer-ids.json");
        let start = match crate::disk::read(&path) {
            Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v.get("next_block")?.as_i64())
                .ok_or_else(|| BrokerError::CorruptMetadata {
                    path: path.clone(),
                    why: "no next_block".into(),
                })?,
            Err(_) => 0,
        };
        Ok(ProducerIds {
            path,
            state: Mutex::new((start, start)),
        })
    }

    /// A producer id never handed out before.
    pub fn next(&self) -> Result<i64, BrokerError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 >= s.1 {
            let end = s.0 + BLOCK;
            let body = serde_json::json!({ "next_block": end }).to_string();
            write_atomically(&self.path, body.as_bytes())?;
            s.1 = end;
        }
        let id = s.0;
        s.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.next().unwrap()).collect();
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        let again = b.next().unwrap();
        assert!(first.iter().all(|&x| x < again), "{first:?} then {again}");
    }
}
