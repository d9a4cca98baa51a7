//! Topic configuration: Kafka's topic config keys, their defaults, validation, and the mapping
//! onto the log's own settings.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::log::LogConfig;

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("unknown topic config '{0}'")]
    UnknownKey(String),
    #[error("invalid value '{value}' for '{key}': {why}")]
    InvalidValue {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("invalid value {value} for '{key}': below this broker's floor of {floor} (its {setting} setting)")]
    BelowFloor {
        key: &'static str,
        value: u64,
        floor: u64,
        setting: &'static str,
    },
}

/// How a key's value is checked.
#[derive(Clone, Copy)]
enum Kind {
    /// An integer no smaller than the bound.
    Long(i64),
    OneOf(&'static [&'static str]),
    /// Accepted and stored, not interpreted by a single-node broker.
    Any,
}

/// Every topic config this broker knows: (key, default, kind, documentation).
const KEYS: &[(&str, &str, Kind, &str)] = &[
    (
        "retention.ms",
        "604800000",
        Kind::Long(-1),
        "Delete a sealed segment once its newest record is older than this (ms); -1 keeps forever.",
    ),
    (
        "retention.bytes",
        "-1",
        Kind::Long(-1),
        "Delete the oldest segments while a partition is larger than this; -1 sets no limit.",
    ),
    (
        "segment.bytes",
        "1073741824",
        Kind::Long(1024),
        "Roll to a new segment file at this size.",
    ),
    (
        "segment.ms",
        "604800000",
        Kind::Long(1),
        "Roll to a new segment file after this long even if it is not full.",
    ),
    (
        "max.message.bytes",
        "1048588",
        Kind::Long(0),
        "Largest record batch the topic accepts, in bytes.",
    ),
    (
        "segment.index.bytes",
        "10485760",
        Kind::Long(4),
        "Accepted for compatibility.",
    ),
    (
        "index.interval.bytes",
        "4096",
        Kind::Long(0),
        "Bytes between sparse offset index entries.",
    ),
    (
        "cleanup.policy",
        "delete",
        Kind::OneOf(&["delete", "compact", "compact,delete", "delete,compact"]),
        "With compact, the log cleaner keeps the latest record of each key and records without a key are refused (INVALID_RECORD); retention deletes only under compact,delete.",
    ),
    (
        "compression.type",
        "producer",
        Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        "Batches are kept as the producer compressed them.",
    ),
    (
        "message.timestamp.type",
        "CreateTime",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        "Whether record timestamps come from the producer or the broker.",
    ),
    (
        "min.insync.replicas",
        "1",
        Kind::Long(1),
        "Accepted for compatibility (single node).",
    ),
    (
        "unclean.leader.election.enable",
        "false",
        Kind::OneOf(&["true", "false"]),
        "Accepted for compatibility (single node).",
    ),
    (
        "flush.messages",
        "9223372036854775807",
        Kind::Long(1),
        "A produce that leaves this many records unsynced is acknowledged only after an fsync, shared by every request waiting on the partition (1: every acknowledged record is on disk; the broker's `durability = \"fsync\"` sets it).",
    ),
    (
        "flush.ms",
        "9223372036854775807",
        Kind::Long(0),
        "Records unsynced for this long are fsynced in the background.",
    ),
    (
        "delete.retention.ms",
        "86400000",
        Kind::Long(0),
        "Accepted for compatibility.",
    ),
    (
        "file.delete.delay.ms",
        "60000",
        Kind::Long(0),
        "Accepted for compatibility.",
    ),
    (
        "min.compaction.lag.ms",
        "0",
        Kind::Long(0),
        "Accepted for compatibility.",
    ),
    (
        "max.compaction.lag.ms",
        "9223372036854775807",
        Kind::Long(1),
        "Accepted for compatibility.",
    ),
    (
        "min.cleanable.dirty.ratio",
        "0.5",
        Kind::Any,
        "Accepted for compatibility.",
    ),
    (
        "message.downconversion.enable",
        "true",
        Kind::Any,
        "Accepted for compatibility.",
    ),
    (
        "preallocate",
        "false",
        Kind::OneOf(&["true", "false"]),
        "Accepted for compatibility.",
    ),
    (
        "segment.jitter.ms",
        "0",
        Kind::Long(0),
        "Accepted for compatibility.",
    ),
    (
        "message.timestamp.before.max.ms",
        "9223372036854775807",
        Kind::Long(0),
        "Accepted for compatibility.",
    ),
    (
        "message.timestamp.after.max.ms",
        "9223372036854775807",
        Kind::Long(0),
        "Accepted for compatibility.",
    ),
    // Kafka 3.x topic configs that Kafka 4 removed (KIP-937, KIP-724): clients and tools
    // written for 3.x still set them when they create topics.
    (
        "message.timestamp.difference.max.ms",
        "9223372036854775807",
        Kind::Long(0),
        "Accepted for compatibility with Kafka 3.x clients (removed in Kafka 4).",
    ),
    (
        "message.format.version",
        "3.0-IV1",
        Kind::Any,
        "Accepted for compatibility with Kafka 3.x clients (removed in Kafka 4); batches are always v2.",
    ),
    (
        "local.retention.ms",
        "-2",
        Kind::Long(-2),
        "Accepted for compatibility.",
    ),
    (
        "local.retention.bytes",
        "-2",
        Kind::Long(-2),
        "Accepted for compatibility.",
    ),
    (
        "remote.storage.enable",
        "false",
        Kind::OneOf(&["true", "false"]),
        "Accepted for compatibility.",
    ),
    (
        "follower.replication.throttled.replicas",
        "",
        Kind::Any,
        "Accepted for compatibility.",
    ),
    (
        "leader.replication.throttled.replicas",
        "",
        Kind::Any,
        "Accepted for compatibility.",
    ),
];

/// A topic's explicitly set configs; everything else takes the broker default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
}

/// Broker-wide defaults that topic configs fall back to (set from the broker config file).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub values: BTreeMap<String, String>,
}

pub struct Entry {
    pub key: &'static str,
    pub value: String,
    pub is_default: bool,
    pub doc: &'static str,
    pub is_long: bool,
}

/// Checks one key/value pair against the known keys.
pub fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
    let Some(&(_, _, kind, _)) = KEYS.iter().find(|(k, ..)| *k == key) else {
        return Err(ConfigError::UnknownKey(key.to_string()));
    };
    let bad = |why| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        why,
    };
    match kind {
        Kind::Long(min) => {
            let v: i64 = value.trim().parse().map_err(|_| bad("not an integer"))?;
            if v < min {
                return Err(bad("below the minimum"));
            }
        }
        Kind::OneOf(choices) => {
            if !choices.contains(&value) {
                return Err(bad("not one of the allowed values"));
            }
        }
        Kind::Any => {}
    }
    Ok(())
}

impl TopicConfig {
    /// Builds a config from key/value pairs, rejecting unknown keys and bad values.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig, ConfigError> {
        let mut c = TopicConfig::default();
        for (k, v) in pairs {
            validate(k, v)?;
            c.overrides.insert(k.to_string(), v.trim().to_string());
        }
        Ok(c)
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        validate(key, value)?;
        self.overrides
            .insert(key.to_string(), value.trim().to_string());
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> Result<(), ConfigError> {
        if !KEYS.iter().any(|(k, ..)| *k == key) {
            return Err(ConfigError::UnknownKey(key.to_string()));
        }
        self.overrides.remove(key);
        Ok(())
    }

    /// The value in force: the topic's override, else the broker default, else the built-in one.
    pub fn get(&self, defaults: &Defaults, key: &str) -> String {
        self.overrides
            .get(key)
            .or_else(|| defaults.values.get(key))
            .cloned()
            .or_else(|| {
                KEYS.iter()
                    .find(|(k, ..)| *k == key)
                    .map(|(_, d, ..)| d.to_string())
            })
            .unwrap_or_default()
    }

    fn long(&self, defaults: &Defaults, key: &str) -> i64 {
        self.get(defaults, key).parse().unwrap_or(i64::MAX)
    }

    /// Every known key with its effective value, for DescribeConfigs.
    pub fn entries(&self, defaults: &Defaults) -> Vec<Entry> {
        KEYS.iter()
            .map(|&(key, _, kind, doc)| Entry {
                key,
                value: self.get(defaults, key),
                is_default: !self.overrides.contains_key(key),
                doc,
                is_long: matches!(kind, Kind::Long(_)),
            })
            .collect()
    }

    pub fn max_message_bytes(&self, defaults: &Defaults) -> usize {
        self.long(defaults, "max.message.bytes")
            .clamp(0, i32::MAX as i64) as usize
    }

    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub fn compacted(&self, defaults: &Defaults) -> bool {
        self.get(defaults, "cleanup.policy")
            .split(',')
            .any(|p| p.trim() == "compact")
    }

    pub fn log_append_time(&self, defaults: &Defaults) -> bool {
        self.get(defaults, "message.timestamp.type") == "LogAppendTime"
    }

    /// How the log cleaner treats this topic; `None` unless `cleanup.policy` includes compact.
    pub fn clean_config(&self, defaults: &Defaults) -> Option<crate::log::cleaner::CleanConfig> {
        if !self.compacted(defaults) {
            return None;
        }
        Some(crate::log::cleaner::CleanConfig {
            delete_retention_ms: self.long(defaults, "delete.retention.ms"),
            min_compaction_lag_ms: self.long(defaults, "min.compaction.lag.ms"),
            max_compaction_lag_ms: self.long(defaults, "max.compaction.lag.ms"),
            min_cleanable_dirty_ratio: self
                .get(defaults, "min.cleanable.dirty.ratio")
                .parse()
                .unwrap_or(0.5),
            ..Default::default()
        })
    }

    /// `cleanup.policy` includes `delete`: old segments go by retention.
    pub fn deletes(&self, defaults: &Defaults) -> bool {
        self.get(defaults, "cleanup.policy")
            .split(',')
            .any(|p| p.trim() == "delete")
    }

    pub fn log_config(&self, defaults: &Defaults) -> LogConfig {
        // A compact-only topic (Kafka Connect's configs, Schema Registry's schemas, Streams'
        // changelogs) keeps its latest values forever: retention does not apply to it.
        let deletes = self.deletes(defaults);
        LogConfig {
            segment_bytes: self.long(defaults, "segment.bytes").max(1024) as u64,
            segment_ms: self.long(defaults, "segment.ms").max(1) as u64,
            retention_ms: if deletes {
                self.long(defaults, "retention.ms")
            } else {
                -1
            },
            retention_bytes: if deletes {
                self.long(defaults, "retention.bytes")
            } else {
                -1
            },
            index_interval_bytes: self.long(defaults, "index.interval.bytes").max(0) as u64,
            flush_messages: self.long(defaults, "flush.messages").max(1),
            flush_ms: self.long(defaults, "flush.ms").max(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_and_bad_values() {
        assert!(matches!(
            TopicConfig::from_pairs([("retention.msx", "1")]),
            Err(ConfigError::UnknownKey(_))
        ));
        assert!(matches!(
            TopicConfig::from_pairs([("retention.ms", "soon")]),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            TopicConfig::from_pairs([("segment.bytes", "10")]),
            Err(ConfigError::InvalidValue { .. })
        ));
    }

    #[test]
    fn retention_does_not_delete_from_compact_only_topics() {
        let d = Defaults::default();
        let compact =
            TopicConfig::from_pairs([("cleanup.policy", "compact"), ("retention.ms", "1000")])
                .unwrap();
        assert_eq!(compact.log_config(&d).retention_ms, -1);
        let both = TopicConfig::from_pairs([
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "1000"),
        ])
        .unwrap();
        assert_eq!(both.log_config(&d).retention_ms, 1000);
        assert_eq!(
            TopicConfig::default().log_config(&d).retention_ms,
            7 * 24 * 3600 * 1000
        );
    }

    #[test]
    fn overrides_beat_broker_defaults_which_beat_kafka_defaults() {
        let mut d = Defaults::default();
        d.values.insert("retention.ms".into(), "1000".into());
        let c = TopicConfig::from_pairs([("segment.bytes", "4096")]).unwrap();
        let lc = c.log_config(&d);
        assert_eq!(lc.retention_ms, 1000);
        assert_eq!(lc.segment_bytes, 4096);
        assert_eq!(lc.retention_bytes, -1);
        assert_eq!(c.max_message_bytes(&d), 1048588);
    }
}
