//! Dynamic broker configs: the topic defaults changed while the broker runs (Kafka's
//! `kafka-configs --entity-type brokers [--entity-default | --entity-name ID] --alter`), kept
//! in `DATA/broker-configs.json` so they outlive a restart.
//!
//! Precedence, as in Kafka: a topic's own override, then this broker's dynamic value, then
//! the cluster-wide dynamic default, then the config file, then the built-in default. On one
//! node the two dynamic levels differ only in what Describe reports as their source.
//!
//! Values are stored under topic keys (`retention.ms`); the protocol layer shows them under
//! Kafka's broker names (`log.retention.ms`). Beside them, [`INERT`]: Kafka's dynamic broker
//! configs for a feature sluice does not have, kept under their own names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{self, ConfigError, Defaults};

pub const FILE: &str = "broker-configs.json";

/// How an [`INERT`] value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InertKind {
    Long,
    Double,
    Text,
}

/// Kafka's dynamic broker configs for GSSAPI (Kerberos), which sluice does not offer: Kafka
/// takes them at run time whether or not a listener uses Kerberos, so Kafka's tools (and
/// clients' admin tests, librdkafka's 0081) set them. sluice checks their type, keeps them
/// and reports them, and they change nothing, as on a Kafka broker without GSSAPI.
/// (name, Kafka's default, kind)
pub const INERT: &[(&str, &str, InertKind)] = &[
    ("sasl.kerberos.kinit.cmd", "/usr/bin/kinit", InertKind::Text),
    (
        "sasl.kerberos.min.time.before.relogin",
        "60000",
        InertKind::Long,
    ),
    (
        "sasl.kerberos.principal.to.local.rules",
        "DEFAULT",
        InertKind::Text,
    ),
    ("sasl.kerberos.service.name", "", InertKind::Text),
    (
        "sasl.kerberos.ticket.renew.jitter",
        "0.05",
        InertKind::Double,
    ),
    (
        "sasl.kerberos.ticket.renew.window.factor",
        "0.8",
        InertKind::Double,
    ),
];

pub fn inert(key: &str) -> Option<&'static (&'static str, &'static str, InertKind)> {
    INERT.iter().find(|(k, ..)| *k == key)
}

/// Settings of the broker's own (not topic defaults) that it applies while it runs, under
/// Kafka's names, with Kafka's floor (its dynamic log cleaner configs).
pub const BROKER_OWN: &[(&str, i64)] = &[("log.cleaner.backoff.ms", 0), ("log.cleaner.threads", 1)];

/// A [`BROKER_OWN`] setting: its name and floor.
pub fn broker_own(key: &str) -> Option<&'static (&'static str, i64)> {
    BROKER_OWN.iter().find(|(k, _)| *k == key)
}

/// Whether `key` is kept under its own name rather than as a topic default.
fn own_name(key: &str) -> bool {
    broker_own(key).is_some() || inert(key).is_some()
}

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
        if let Some(&(_, min)) = broker_own(key) {
            if !value.trim().parse::<i64>().is_ok_and(|v| v >= min) {
                return Err(ConfigError::InvalidValue {
                    key: key.to_string(),
                    value: value.to_string(),
                    why: "not an integer at least the setting's floor",
                });
            }
        }
        match inert(key) {
            None if broker_own(key).is_some() => {}
            None => config::validate(key, value)?,
            Some(&(_, _, kind)) => {
                let v = value.trim();
                let ok = match kind {
                    InertKind::Long => v.parse::<i64>().is_ok_and(|n| n >= 0),
                    InertKind::Double => v.parse::<f64>().is_ok_and(|x| x.is_finite() && x >= 0.0),
                    InertKind::Text => true,
                };
                if !ok {
                    return Err(ConfigError::InvalidValue {
                        key: key.to_string(),
                        value: value.to_string(),
                        why: match kind {
                            InertKind::Long => "not a non-negative integer",
                            _ => "not a non-negative number",
                        },
                    });
                }
            }
        }
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
        let topic_keys = |(k, _): &(&String, &String)| !own_name(k);
        let mut values = file.values.clone();
        for level in [&self.cluster, &self.broker] {
            values.extend(
                level
                    .iter()
                    .filter(topic_keys)
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        Defaults { values }
    }

    /// A [`BROKER_OWN`] setting's dynamic value: this broker's, else the cluster default's.
    pub fn broker_own(&self, key: &str) -> Option<&String> {
        self.broker.get(key).or_else(|| self.cluster.get(key))
    }

    /// An [`INERT`] config's value: this broker's, else the cluster default's, else Kafka's.
    pub fn inert_value(&self, key: &str) -> Option<String> {
        let &(_, default, _) = inert(key)?;
        Some(
            self.broker
                .get(key)
                .or_else(|| self.cluster.get(key))
                .cloned()
                .unwrap_or_else(|| default.to_string()),
        )
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

        // Kafka's Kerberos settings are kept and typed, never topic defaults.
        let relogin = "sasl.kerberos.min.time.before.relogin";
        assert_eq!(d.inert_value(relogin).as_deref(), Some("60000"));
        d.set(Level::Broker, relogin, "58000").unwrap();
        assert_eq!(d.inert_value(relogin).as_deref(), Some("58000"));
        assert_eq!(d.source_of(relogin), Some(Level::Broker));
        assert!(!d.over(&file).values.contains_key(relogin));
        assert!(d.set(Level::Broker, relogin, "soon").is_err());
        assert!(d
            .set(Level::Cluster, "sasl.kerberos.ticket.renew.jitter", "-1")
            .is_err());
        assert_eq!(d.inert_value("retention.ms"), None);

        // The cleaner's pause is the broker's own, floored at Kafka's 0, never a topic default.
        assert!(d
            .set(Level::Cluster, "log.cleaner.backoff.ms", "-1")
            .is_err());
        d.set(Level::Cluster, "log.cleaner.backoff.ms", "0")
            .unwrap();
        d.set(Level::Cluster, "log.cleaner.backoff.ms", "20000")
            .unwrap();
        assert_eq!(
            d.broker_own("log.cleaner.backoff.ms").map(String::as_str),
            Some("20000")
        );
        assert!(!d.over(&file).values.contains_key("log.cleaner.backoff.ms"));
    }
}
