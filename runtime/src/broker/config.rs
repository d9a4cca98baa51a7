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
    /// Kafka's steps for `log.cleaner.threads` while the broker runs.
    #[error("Log cleaner threads cannot be {}", if wanted < current { format!("reduced to less than half the current value {current}") } else { format!("increased to more than double the current value {current}") })]
    CleanerThreadsStep { current: usize, wanted: usize },
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
    /// A compression level: `default`, or an integer from `min` to `max`.
    Level {
        min: i64,
        max: i64,
        default: i64,
    },
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
        "The codec batches are stored with: producer keeps each as the producer compressed it; any other is what the broker recompresses to (uncompressed: none).",
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
        "With CreateTime, a batch holding a record stamped more than this before the broker's clock is refused (INVALID_TIMESTAMP).",
    ),
    (
        // Kafka 4's default (KIP-1030): a record from more than an hour ahead would hold
        // its segment back from time-based retention.
        "message.timestamp.after.max.ms",
        "3600000",
        Kind::Long(0),
        "With CreateTime, a batch holding a record stamped more than this after the broker's clock is refused (INVALID_TIMESTAMP).",
    ),
    (
        "compression.gzip.level",
        "-1",
        Kind::Level {
            min: 1,
            max: 9,
            default: -1,
        },
        "The level the broker recompresses at (compression.type); -1: the codec's default.",
    ),
    (
        "compression.lz4.level",
        "9",
        Kind::Level {
            min: 1,
            max: 17,
            default: 9,
        },
        "Accepted for compatibility: the broker's lz4 has one level.",
    ),
    (
        "compression.zstd.level",
        "3",
        Kind::Level {
            min: -131072,
            max: 22,
            default: 3,
        },
        "The level the broker recompresses at (compression.type).",
    ),
    (
        "max.decompressed.message.bytes",
        "2147483639",
        Kind::Long(0),
        "Accepted for compatibility; the broker's own allowance of decompressed bytes per request applies.",
    ),
    (
        "errors.deadletterqueue.group.enable",
        "false",
        Kind::OneOf(&["true", "false"]),
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
        "remote.copy.lag.ms",
        "0",
        Kind::Long(0),
        "Accepted for compatibility.",
    ),
    (
        "remote.copy.lag.bytes",
        "-1",
        Kind::Long(-1),
        "Accepted for compatibility.",
    ),
    (
        "remote.log.copy.disable",
        "false",
        Kind::OneOf(&["true", "false"]),
        "Accepted for compatibility.",
    ),
    (
        "remote.log.delete.on.disable",
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

/// See [`TopicConfig::timestamp_bounds`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampBounds {
    pub before_ms: Option<i64>,
    pub after_ms: Option<i64>,
}

impl TimestampBounds {
    pub fn any(&self) -> bool {
        self.before_ms.is_some() || self.after_ms.is_some()
    }

    /// Whether a record stamped `ts` is refused at broker time `now` (a record without a
    /// timestamp, -1, never is).
    pub fn refuses(&self, ts: i64, now: i64) -> bool {
        ts != NO_TIMESTAMP
            && (self.before_ms.is_some_and(|b| ts < now.saturating_sub(b))
                || self.after_ms.is_some_and(|a| ts > now.saturating_add(a)))
    }

    /// The range Kafka names in its refusal: `[now - before, now + after]`, an unbounded side
    /// as `i64::MAX` ms away.
    pub fn range(&self, now: i64) -> (i64, i64) {
        (
            now.saturating_sub(self.before_ms.unwrap_or(i64::MAX)),
            now.saturating_add(self.after_ms.unwrap_or(i64::MAX)),
        )
    }
}

/// Kafka's `RecordBatch.NO_TIMESTAMP`.
const NO_TIMESTAMP: i64 = -1;

/// The built-in default of a known topic key.
pub fn default_of(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|(k, ..)| *k == key).map(|(_, d, ..)| *d)
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
        Kind::Level { min, max, default } => {
            let v: i64 = value.trim().parse().map_err(|_| bad("not an integer"))?;
            if v != default && !(min..=max).contains(&v) {
                return Err(bad("not a level of that codec"));
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
                is_long: matches!(kind, Kind::Long(_) | Kind::Level { .. }),
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

    /// The codec the broker recompresses produced batches to (`compression.type`), with the
    /// level its `compression.*.level` sets (gzip and zstd; lz4_flex has one level); `None`
    /// keeps the producer's.
    pub fn target_compression(
        &self,
        defaults: &Defaults,
    ) -> Option<(crate::records::Compression, Option<i32>)> {
        use crate::records::Compression;
        let codec = match self.get(defaults, "compression.type").as_str() {
            "uncompressed" => Compression::None,
            other => crate::records::parse_compression(other)?,
        };
        let level = |key| {
            let v = self.long(defaults, key);
            i32::try_from(v).ok()
        };
        let level = match codec {
            Compression::Gzip => level("compression.gzip.level").filter(|&l| l != -1),
            Compression::Zstd => level("compression.zstd.level"),
            _ => None,
        };
        Some((codec, level))
    }

    /// How far before and after the broker's clock a record's create time may be
    /// (`message.timestamp.before/after.max.ms`); `None` where there is no bound, and for
    /// LogAppendTime topics, whose records take the broker's time.
    pub fn timestamp_bounds(&self, defaults: &Defaults) -> TimestampBounds {
        if self.log_append_time(defaults) {
            return TimestampBounds::default();
        }
        let bound = |key| Some(self.long(defaults, key)).filter(|&v| v < i64::MAX);
        TimestampBounds {
            before_ms: bound("message.timestamp.before.max.ms"),
            after_ms: bound("message.timestamp.after.max.ms"),
        }
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
    fn compression_levels_take_their_codecs_range_or_the_default() {
        for (key, ok, bad) in [
            ("compression.gzip.level", ["-1", "1", "9"], ["0", "10"]),
            ("compression.lz4.level", ["9", "1", "17"], ["0", "18"]),
            (
                "compression.zstd.level",
                ["3", "-131072", "22"],
                ["-131073", "23"],
            ),
        ] {
            for v in ok {
                assert_eq!(validate(key, v), Ok(()), "{key}={v}");
            }
            for v in bad {
                assert!(validate(key, v).is_err(), "{key}={v}");
            }
        }
    }

    #[test]
    fn timestamps_are_bounded_as_in_kafka_4_unless_the_broker_stamps_them() {
        let d = Defaults::default();
        let b = TopicConfig::default().timestamp_bounds(&d);
        assert_eq!(b.before_ms, None);
        assert_eq!(b.after_ms, Some(3_600_000));
        let now = 1_800_000_000_000;
        assert!(!b.refuses(now + 3_600_000, now));
        assert!(b.refuses(now + 3_600_001, now));
        assert!(!b.refuses(0, now));
        assert!(!b.refuses(-1, now), "a record without a timestamp");
        let both = TopicConfig::from_pairs([
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "9223372036854775807"),
        ])
        .unwrap()
        .timestamp_bounds(&d);
        assert!(both.refuses(now - 1001, now));
        assert!(!both.refuses(i64::MAX, now));
        let stamped = TopicConfig::from_pairs([("message.timestamp.type", "LogAppendTime")])
            .unwrap()
            .timestamp_bounds(&d);
        assert!(!stamped.any());
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
