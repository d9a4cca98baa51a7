//! Small settings files (users, ACLs, client quotas): one JSON document each, read whole at
//! start-up and replaced whole (temporary file, fsync, rename, fsync of the directory) at
//! every change, so the file always holds the state as of some change.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JsonFileError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is damaged: {error}")]
    Damaged {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The document at `path`, or `T::default()` when there is no file yet. A file that does
/// not parse is an error, never an empty document.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, JsonFileError> {
    if !super::exists(path) {
        return Ok(T::default());
    }
    let bytes = super::read(path).map_err(|error| JsonFileError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    serde_json::from_slice(&bytes).map_err(|error| JsonFileError::Damaged {
        path: path.to_path_buf(),
        error,
    })
}

/// Replaces the document at `path` durably.
pub fn store<T: Serialize>(path: &Path, value: &T) -> Result<(), JsonFileError> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    super::replace(path, &bytes).map_err(|error| JsonFileError::Write {
        path: path.to_path_buf(),
        error,
    })
}
