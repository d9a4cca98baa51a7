//! The SCRAM credentials store: users, and per user one credential for each mechanism they
//! may log in with. One small JSON file in the data directory, replaced whole (and fsynced)
//! on every change, so it is always exactly the state as of some change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use super::scram::{Credential, Mechanism};
use crate::disk::json::{self, JsonFileError};

pub const FILE: &str = "scram-credentials.json";

type Table = BTreeMap<String, BTreeMap<Mechanism, Credential>>;

/// One change, as AlterUserScramCredentials and `sluice user` make them.
#[derive(Clone, Debug)]
pub enum Change {
    Upsert {
        user: String,
        mech: Mechanism,
        credential: Credential,
    },
    Delete {
        user: String,
        mech: Mechanism,
    },
}

pub struct Users {
    path: PathBuf,
    table: RwLock<Table>,
    /// Serialises writers, so the file always holds the last change applied in memory.
    write: std::sync::Mutex<()>,
}

impl Users {
    pub fn open(data_dir: &Path) -> Result<Users, JsonFileError> {
        let path = data_dir.join(FILE);
        let table = json::load(&path)?;
        Ok(Users {
            path,
            table: RwLock::new(table),
            write: std::sync::Mutex::new(()),
        })
    }

    pub fn credential(&self, user: &str, mech: Mechanism) -> Option<Credential> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.get(user).and_then(|m| m.get(&mech)).cloned()
    }

    /// Any credential of `user`: SASL/PLAIN checks the password against it.
    pub fn any_credential(&self, user: &str) -> Option<(Mechanism, Credential)> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.get(user)
            .and_then(|m| m.iter().next())
            .map(|(m, c)| (*m, c.clone()))
    }

    /// Users and, for each, their mechanisms with iteration counts.
    pub fn describe(&self) -> BTreeMap<String, Vec<(Mechanism, u32)>> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.iter()
            .map(|(u, m)| {
                (
                    u.clone(),
                    m.iter().map(|(m, c)| (*m, c.iterations)).collect(),
                )
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Applies `changes` and writes the file before returning: a change is answered only
    /// once it survives a power cut. A delete of a credential that does not exist is
    /// reported back (as `false`) and changes nothing.
    pub fn apply(&self, changes: &[Change]) -> Result<Vec<bool>, JsonFileError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut done = Vec::with_capacity(changes.len());
        for c in changes {
            match c {
                Change::Upsert {
                    user,
                    mech,
                    credential,
                } => {
                    next.entry(user.clone())
                        .or_default()
                        .insert(*mech, credential.clone());
                    done.push(true);
                }
                Change::Delete { user, mech } => {
                    let removed = next.get_mut(user).and_then(|m| m.remove(mech)).is_some();
                    if next.get(user).is_some_and(|m| m.is_empty()) {
                        next.remove(user);
                    }
                    done.push(removed);
                }
            }
        }
        json::store(&self.path, &next)?;
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_a_restart_and_deletes_report_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path()).unwrap();
        let up = |u: &str, m| Change::Upsert {
            user: u.into(),
            mech: m,
            credential: Credential::new(m, "pw", 4096).unwrap(),
        };
        assert_eq!(
            users
                .apply(&[
                    up("alice", Mechanism::Sha256),
                    up("alice", Mechanism::Sha512),
                    up("bob", Mechanism::Sha256)
                ])
                .unwrap(),
            vec![true, true, true]
        );
        let del = |u: &str, m| Change::Delete {
            user: u.into(),
            mech: m,
        };
        assert_eq!(
            users
                .apply(&[del("bob", Mechanism::Sha256), del("bob", Mechanism::Sha512)])
                .unwrap(),
            vec![true, false]
        );
        let again = Users::open(dir.path()).unwrap();
        let d = again.describe();
        assert_eq!(d.len(), 1);
        assert_eq!(
            d["alice"],
            vec![(Mechanism::Sha256, 4096), (Mechanism::Sha512, 4096)]
        );
        assert!(again
            .credential("alice", Mechanism::Sha512)
            .unwrap()
            .matches_password(Mechanism::Sha512, "pw"));
        assert!(again.credential("bob", Mechanism::Sha256).is_none());
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(matches!(
            Users::open(dir.path()),
            Err(JsonFileError::Damaged { .. })
        ));
    }
}
