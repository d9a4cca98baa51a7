//! Per-group configs: Kafka 4's group configs (`kafka-configs --entity-type groups
//! --entity-name G --alter`, resource type GROUP in IncrementalAlterConfigs), each overriding
//! a coordinator default for one group id. Kept in `DATA/group-configs.json` so they outlive
//! a restart; a group need not exist to be given one (as in Kafka: configure, then start the
//! consumers), and deleting a group keeps them.
//!
//! Invariants, checked on every change as a whole (all of a request's changes apply, or
//! none): each value parses and lies within the coordinator's bounds, and a group's
//! heartbeat interval stays below its session timeout, counting defaults for what is unset.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::state::GroupConfig;

pub const FILE: &str = "group-configs.json";

pub const SESSION_TIMEOUT: &str = "consumer.session.timeout.ms";
pub const HEARTBEAT_INTERVAL: &str = "consumer.heartbeat.interval.ms";
pub const SHARE_OFFSET_RESET: &str = "share.auto.offset.reset";

/// What a group may override.
pub const KEYS: &[&str] = &[HEARTBEAT_INTERVAL, SESSION_TIMEOUT, SHARE_OFFSET_RESET];

/// Kafka's bounds on the per-group values (`group.consumer.min/max.session.timeout.ms`,
/// `group.consumer.min/max.heartbeat.interval.ms`), widened to take in the broker's own
/// default when its config file sets one outside them.
const SESSION_BOUNDS: (i64, i64) = (45_000, 60_000);
const HEARTBEAT_BOUNDS: (i64, i64) = (5_000, 15_000);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GroupConfigError {
    #[error("'{0}' is not a group config; a group may set {list}", list = KEYS.join(", "))]
    Unknown(String),
    #[error("{key} must be an integer number of milliseconds, not '{value}'")]
    NotANumber { key: String, value: String },
    #[error("{key} must be between {min} and {max} (the coordinator's bounds), not {value}")]
    OutOfBounds {
        key: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{HEARTBEAT_INTERVAL} ({heartbeat}) must be less than {SESSION_TIMEOUT} ({session})")]
    HeartbeatNotBelowSession { heartbeat: i64, session: i64 },
    #[error("{SHARE_OFFSET_RESET} must be earliest or latest, not '{0}'")]
    BadReset(String),
    #[error("a group config needs a group id")]
    NoGroup,
}

/// Why a change to group configs did not happen.
#[derive(Debug, Error)]
pub enum AlterError {
    #[error(transparent)]
    Invalid(#[from] GroupConfigError),
    #[error(transparent)]
    Store(#[from] crate::disk::json::JsonFileError),
}

/// Every group's overrides, by group id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupConfigs {
    groups: BTreeMap<String, BTreeMap<String, String>>,
}

impl GroupConfigs {
    /// The overrides of `group` (empty if none).
    pub fn of(&self, group: &str) -> BTreeMap<String, String> {
        self.groups.get(group).cloned().unwrap_or_default()
    }

    /// Applies `changes` (key, Some(value) to set or None to remove) to `group`, checked as a
    /// whole against `defaults`.
    pub fn alter(
        &mut self,
        group: &str,
        changes: &[(&str, Option<&str>)],
        defaults: &GroupConfig,
    ) -> Result<(), GroupConfigError> {
        if group.is_empty() {
            return Err(GroupConfigError::NoGroup);
        }
        let mut next = self.of(group);
        for &(key, value) in changes {
            if !KEYS.contains(&key) {
                return Err(GroupConfigError::Unknown(key.to_string()));
            }
            match value {
                Some(v) => next.insert(key.to_string(), v.trim().to_string()),
                None => next.remove(key),
            };
        }
        let view = Effective {
            overrides: &next,
            defaults,
        };
        view.check()?;
        if next.is_empty() {
            self.groups.remove(group);
        } else {
            self.groups.insert(group.to_string(), next);
        }
        Ok(())
    }

    /// The values `group` runs with: its overrides over `defaults`.
    pub fn effective<'a>(&'a self, group: &str, defaults: &'a GroupConfig) -> Effective<'a> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        Effective {
            overrides: self.groups.get(group).unwrap_or(&NONE),
            defaults,
        }
    }
}

/// One group's values.
pub struct Effective<'a> {
    overrides: &'a BTreeMap<String, String>,
    defaults: &'a GroupConfig,
}

impl Effective<'_> {
    fn number(&self, key: &str) -> Result<Option<i64>, GroupConfigError> {
        self.overrides
            .get(key)
            .map(|v| {
                v.parse::<i64>().map_err(|_| GroupConfigError::NotANumber {
                    key: key.to_string(),
                    value: v.clone(),
                })
            })
            .transpose()
    }

    fn check(&self) -> Result<(), GroupConfigError> {
        let bounded = |key: &str, (min, max): (i64, i64), default: i64| {
            let Some(value) = self.number(key)? else {
                return Ok(default);
            };
            let (min, max) = (min.min(default), max.max(default));
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(GroupConfigError::OutOfBounds {
                    key: key.to_string(),
                    value,
                    min,
                    max,
                })
            }
        };
        let session = bounded(
            SESSION_TIMEOUT,
            SESSION_BOUNDS,
            self.defaults.consumer_session_timeout_ms,
        )?;
        let heartbeat = bounded(
            HEARTBEAT_INTERVAL,
            HEARTBEAT_BOUNDS,
            self.defaults.consumer_heartbeat_interval_ms.into(),
        )?;
        if heartbeat >= session {
            return Err(GroupConfigError::HeartbeatNotBelowSession { heartbeat, session });
        }
        if let Some(v) = self.overrides.get(SHARE_OFFSET_RESET) {
            if v != "earliest" && v != "latest" {
                return Err(GroupConfigError::BadReset(v.clone()));
            }
        }
        Ok(())
    }

    /// Whether `key` is overridden for this group.
    pub fn is_set(&self, key: &str) -> bool {
        self.overrides.contains_key(key)
    }

    pub fn session_timeout_ms(&self) -> i64 {
        self.number(SESSION_TIMEOUT)
            .ok()
            .flatten()
            .unwrap_or(self.defaults.consumer_session_timeout_ms)
    }

    pub fn heartbeat_interval_ms(&self) -> i32 {
        self.number(HEARTBEAT_INTERVAL)
            .ok()
            .flatten()
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(self.defaults.consumer_heartbeat_interval_ms)
    }

    pub fn share_from_earliest(&self) -> bool {
        match self.overrides.get(SHARE_OFFSET_RESET).map(String::as_str) {
            Some("earliest") => true,
            Some(_) => false,
            None => self.defaults.share_from_earliest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_checked_as_a_whole_and_fall_back_to_the_defaults() {
        let d = GroupConfig::default();
        let mut c = GroupConfigs::default();
        c.alter("g", &[(SESSION_TIMEOUT, Some("50000"))], &d)
            .unwrap();
        assert_eq!(c.effective("g", &d).session_timeout_ms(), 50_000);
        assert!(c.effective("g", &d).is_set(SESSION_TIMEOUT));
        assert_eq!(c.effective("other", &d).session_timeout_ms(), 45_000);
        assert_eq!(c.effective("g", &d).heartbeat_interval_ms(), 5_000);

        let before = c.clone();
        let refused = [
            (
                vec![(SESSION_TIMEOUT, Some("1000"))],
                GroupConfigError::OutOfBounds {
                    key: SESSION_TIMEOUT.into(),
                    value: 1000,
                    min: 45_000,
                    max: 60_000,
                },
            ),
            (
                // The first change alone would do; the second spoils the whole request.
                vec![
                    (HEARTBEAT_INTERVAL, Some("6000")),
                    (HEARTBEAT_INTERVAL, Some("soon")),
                ],
                GroupConfigError::NotANumber {
                    key: HEARTBEAT_INTERVAL.into(),
                    value: "soon".into(),
                },
            ),
            (
                vec![("group.max.size", Some("3"))],
                GroupConfigError::Unknown("group.max.size".into()),
            ),
            (
                vec![(SHARE_OFFSET_RESET, Some("none"))],
                GroupConfigError::BadReset("none".into()),
            ),
        ];
        for (changes, want) in refused {
            assert_eq!(c.alter("g", &changes, &d).unwrap_err(), want);
            assert_eq!(c, before, "a refused change leaves everything as it was");
        }
        assert_eq!(c.alter("", &[], &d).unwrap_err(), GroupConfigError::NoGroup);

        c.alter("g", &[(SHARE_OFFSET_RESET, Some("earliest"))], &d)
            .unwrap();
        assert!(c.effective("g", &d).share_from_earliest());
        c.alter(
            "g",
            &[(SESSION_TIMEOUT, None), (SHARE_OFFSET_RESET, None)],
            &d,
        )
        .unwrap();
        assert_eq!(
            c,
            GroupConfigs::default(),
            "a group with no overrides is forgotten"
        );
    }

    #[test]
    fn the_bounds_take_in_the_brokers_own_defaults() {
        // A broker configured for short sessions (tests, development).
        let d = GroupConfig {
            consumer_session_timeout_ms: 6_000,
            ..GroupConfig::default()
        };
        let mut c = GroupConfigs::default();
        c.alter("g", &[(SESSION_TIMEOUT, Some("6000"))], &d)
            .unwrap();
        assert_eq!(
            c.alter("g", &[(HEARTBEAT_INTERVAL, Some("8000"))], &d),
            Err(GroupConfigError::HeartbeatNotBelowSession {
                heartbeat: 8_000,
                session: 6_000
            })
        );
        let back: GroupConfigs = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
