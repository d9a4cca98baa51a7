//! Dynamic broker configs: the topic defaults changed while the broker runs (Kafka's
//! `kafka-configs --entity-type brokers [--entity-default | --entity-name ID] --alter`), kept
//! in `DATA/broker-configs.json` so they outlive a restart.
//!
//! Precedence, as in Kafka: a topic's own override, then this broker's dynamic value, then
//! the cluster-wide dynamic default, then the config file, then the built-in default. On one
//! node the two dynamic levels differ only in what Describe reports as their source.
//!
//! Values are stored under topic keys (`retention.ms`); the protocol layer shows them under
//! Kafka's broker names (`log.retention.ms`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{self, ConfigError, Defaults};

pub const FILE: &str = "broker-configs.json";

/// The two dynamic levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `--entity-default`: every broker of the cluster.
    Cluster,
    /// `--entity-name ID`: this broker.
    Broker,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicConfigs {
    #[serde(default)]
    pub cluster: BTreeMap<String, String>,
    #[serde(default)]
    pub broker: BTreeMap<String, String>,
}

impl DynamicConfigs {
    pub fn level(&self, level: Level) -> &BTreeMap<String, String> {
        match level {
            Level::Cluster => &self.cluster,
            Level::Broker => &self.broker,
        }
    }

    pub fn level_mut(&mut self, level: Level) -> &mut BTreeMap<String, String> {
        match level {
            Level::Cluster => &mut self.cluster,
            Level::Broker => &mut self.broker,
        }
    }

    /// Sets a topic key at one level, checked as a topic config would be.
    pub fn set(&mut self, level: Level, key: &str, value: &str) -> Result<(), ConfigError> {
        config::validate(key, value)?;
        self.level_mut(level)
            .insert(key.to_string(), value.trim().to_string());
        Ok(())
    }

    pub fn delete(&mut self, level: Level, key: &str) {
        self.level_mut(level).remove(key);
    }

    /// The value `key` has at `level`: its own, else what it inherits (for this broker the
    /// cluster default; then the config file; then the built-in default).
    pub fn current(&self, level: Level, key: &str, file: &Defaults) -> String {
        let inherited = match level {
            Level::Broker => self.cluster.get(key),
            Level::Cluster => None,
        };
        match self.level(level).get(key).or(inherited) {
            Some(v) => v.clone(),
            None => config::TopicConfig::default().get(file, key),
        }
    }

    /// Where a key's value comes from, if a dynamic level sets it.
    pub fn source_of(&self, key: &str) -> Option<Level> {
        if self.broker.contains_key(key) {
            Some(Level::Broker)
        } else if self.cluster.contains_key(key) {
            Some(Level::Cluster)
        } else {
            None
        }
    }

    /// The defaults topics fall back to: the config file's, overlaid by both levels.
    pub fn over(&self, file: &Defaults) -> Defaults {
        let mut values = file.values.clone();
        values.extend(self.cluster.clone());
        values.extend(self.broker.clone());
        Defaults { values }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_level_wins_over_the_cluster_default_over_the_file() {
        let file = Defaults {
            values: BTreeMap::from([
                ("retention.ms".to_string(), "1000".to_string()),
                ("segment.bytes".to_string(), "4096".to_string()),
            ]),
        };
        let mut d = DynamicConfigs::default();
        d.set(Level::Cluster, "retention.ms", "2000").unwrap();
        d.set(Level::Cluster, "retention.bytes", "77").unwrap();
        d.set(Level::Broker, "retention.ms", " 3000 ").unwrap();
        let eff = d.over(&file);
        assert_eq!(eff.values["retention.ms"], "3000");
        assert_eq!(eff.values["retention.bytes"], "77");
        assert_eq!(eff.values["segment.bytes"], "4096");
        assert_eq!(d.source_of("retention.ms"), Some(Level::Broker));
        assert_eq!(d.source_of("retention.bytes"), Some(Level::Cluster));
        assert_eq!(d.source_of("segment.bytes"), None);
        d.delete(Level::Broker, "retention.ms");
        assert_eq!(d.over(&file).values["retention.ms"], "2000");
        assert!(d.set(Level::Cluster, "retention.ms", "soon").is_err());
        assert!(d.set(Level::Cluster, "no.such.key", "1").is_err());
        let back: DynamicConfigs =
            serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }
}
