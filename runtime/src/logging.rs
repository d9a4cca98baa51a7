//! The process's log filter, changeable while it runs: Kafka's "broker loggers"
//! (`kafka-configs --entity-type broker-loggers`, resource type BROKER_LOGGER in
//! DescribeConfigs and IncrementalAlterConfigs) map onto `tracing` targets.
//!
//! Kafka names log4j loggers (`kafka.server.ReplicaManager`, `root`); here a logger is a
//! `tracing` target prefix written with dots (`sluice.protocol` for `sluice::protocol`, as
//! Kafka's tools refuse `:` in a config name; either spelling is accepted) and `root` is the
//! level of every target no directive names. The start value comes from `SLUICE_LOG`, like `RUST_LOG`.
//! A change lasts until the process exits, as Kafka's does.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use thiserror::Error;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The logger name Kafka's tools use for the default level.
pub const ROOT: &str = "root";

/// The modules a reader of sluice's logs would tune, listed by Describe even when no
/// directive names them, with the level they get. Kafka's tools change only loggers that
/// Describe lists.
const KNOWN: &[&str] = &[
    "sluice::auth",
    "sluice::broker",
    "sluice::group",
    "sluice::log",
    "sluice::plugin",
    "sluice::protocol",
    // Every request at DEBUG, as Kafka's kafka.request.logger.
    "sluice::protocol::requests",
    "sluice::server",
    "sluice::txn",
    "sluice::worker",
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LoggingError {
    #[error("'{0}' is not a log level: use OFF, FATAL, ERROR, WARN, INFO, DEBUG, TRACE or ALL")]
    BadLevel(String),
    #[error("'{0}' is not a logger name: use root or a target such as sluice.protocol")]
    BadName(String),
    #[error("the root logger's level can be set but not removed")]
    RemoveRoot,
    #[error("cannot apply the log filter: {0}")]
    Reload(String),
}

/// Levels by their `tracing` names; Kafka's log4j names are mapped onto them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    pub fn parse(s: &str) -> Result<Level, LoggingError> {
        Ok(match s.trim().to_ascii_uppercase().as_str() {
            "OFF" => Level::Off,
            "FATAL" | "ERROR" => Level::Error,
            "WARN" | "WARNING" => Level::Warn,
            "INFO" => Level::Info,
            "DEBUG" => Level::Debug,
            "TRACE" | "ALL" => Level::Trace,
            _ => return Err(LoggingError::BadLevel(s.to_string())),
        })
    }

    /// The name Kafka's tools show.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Level::Off => "OFF",
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }

    fn directive(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// The directives: a root level, a level per target, and whatever else `SLUICE_LOG` held
/// that is not a plain `target=level` (span filters), kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    root: Level,
    targets: BTreeMap<String, Level>,
    other: Vec<String>,
}

impl Filter {
    /// Parses an `EnvFilter`-style string such as `info,sluice::protocol=debug`.
    pub fn parse(spec: &str) -> Filter {
        let mut f = Filter {
            root: Level::Info,
            targets: BTreeMap::new(),
            other: Vec::new(),
        };
        for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.split_once('=') {
                None => match Level::parse(d) {
                    Ok(l) => f.root = l,
                    // A bare target enables everything in it.
                    Err(_) if valid_name(d) => {
                        f.targets.insert(d.to_string(), Level::Trace);
                    }
                    Err(_) => f.other.push(d.to_string()),
                },
                Some((t, l)) if valid_name(t) => match Level::parse(l) {
                    Ok(l) => {
                        f.targets.insert(t.to_string(), l);
                    }
                    Err(_) => f.other.push(d.to_string()),
                },
                Some(_) => f.other.push(d.to_string()),
            }
        }
        f
    }

    pub fn set(&mut self, name: &str, level: &str) -> Result<(), LoggingError> {
        let level = Level::parse(level)?;
        let target = target_of(name);
        if name == ROOT {
            self.root = level;
        } else if valid_name(&target) {
            self.targets.insert(target, level);
        } else {
            return Err(LoggingError::BadName(name.to_string()));
        }
        Ok(())
    }

    /// Removes a logger's own level, so it follows the root again.
    pub fn remove(&mut self, name: &str) -> Result<(), LoggingError> {
        if name == ROOT {
            return Err(LoggingError::RemoveRoot);
        }
        let target = target_of(name);
        if !valid_name(&target) {
            return Err(LoggingError::BadName(name.to_string()));
        }
        self.targets.remove(&target);
        Ok(())
    }

    /// The level a target logs at: its longest configured prefix's, else the root's.
    pub fn level_of(&self, target: &str) -> Level {
        self.targets
            .iter()
            .filter(|(t, _)| {
                target == t.as_str()
                    || target
                        .strip_prefix(t.as_str())
                        .is_some_and(|rest| rest.starts_with("::"))
            })
            .max_by_key(|(t, _)| t.len())
            .map_or(self.root, |(_, l)| *l)
    }

    /// Every logger worth showing, by its dotted name, with its level: root, each configured
    /// target, and the known modules.
    pub fn loggers(&self) -> Vec<(String, Level)> {
        let mut names: Vec<String> = self.targets.keys().cloned().collect();
        names.extend(KNOWN.iter().map(|s| s.to_string()));
        names.sort();
        names.dedup();
        let mut out = vec![(ROOT.to_string(), self.root)];
        out.extend(names.into_iter().map(|n| {
            let l = self.level_of(&n);
            (n.replace("::", "."), l)
        }));
        out
    }

    /// The `EnvFilter` directives string.
    pub fn spec(&self) -> String {
        let mut parts = vec![self.root.directive().to_string()];
        parts.extend(
            self.targets
                .iter()
                .map(|(t, l)| format!("{t}={}", l.directive())),
        );
        parts.extend(self.other.iter().cloned());
        parts.join(",")
    }
}

/// A logger's target: Kafka's dotted spelling turned into a module path.
fn target_of(name: &str) -> String {
    name.trim().replace('.', "::")
}

/// A target path: letters, digits, `_` and `-`, with `::` separators.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.split("::").all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        })
}

struct Live {
    filter: Mutex<Filter>,
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

static LIVE: OnceLock<Live> = OnceLock::new();

fn live() -> &'static Live {
    LIVE.get_or_init(|| Live {
        filter: Mutex::new(Filter::parse(
            &std::env::var("SLUICE_LOG").unwrap_or_else(|_| "info".into()),
        )),
        handle: None,
    })
}

/// Installs the process's subscriber: logs to stderr, filtered by `SLUICE_LOG` (default
/// `info`), changeable later through [`set`] and [`remove`].
pub fn init() {
    let spec = std::env::var("SLUICE_LOG").unwrap_or_else(|_| "info".into());
    let filter = Filter::parse(&spec);
    // EnvFilter reads span filters and the rest that `Filter` keeps verbatim; a spec it
    // refuses falls back to `info`, as before.
    let env = EnvFilter::try_new(filter.spec()).unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(env);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = LIVE.set(Live {
            filter: Mutex::new(filter),
            handle: Some(handle),
        });
    }
}

/// The loggers and their levels (Kafka's DescribeConfigs of BROKER_LOGGER).
pub fn loggers() -> Vec<(String, Level)> {
    let l = live();
    l.filter.lock().unwrap_or_else(|p| p.into_inner()).loggers()
}

/// Applies a batch of changes (name, Some(level) to set, None to remove) as one: all of
/// them, or none if any is invalid. `validate_only` checks without applying.
pub fn change(changes: &[(&str, Option<&str>)], validate_only: bool) -> Result<(), LoggingError> {
    let l = live();
    let mut current = l.filter.lock().unwrap_or_else(|p| p.into_inner());
    let mut next = current.clone();
    for (name, level) in changes {
        match level {
            Some(level) => next.set(name, level)?,
            None => next.remove(name)?,
        }
    }
    let env = EnvFilter::try_new(next.spec()).map_err(|e| LoggingError::Reload(e.to_string()))?;
    if validate_only {
        return Ok(());
    }
    if let Some(h) = &l.handle {
        h.reload(env)
            .map_err(|e| LoggingError::Reload(e.to_string()))?;
    }
    tracing::info!(filter = %next.spec(), "log levels changed");
    *current = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_change_and_resolve_levels_by_longest_prefix() {
        let mut f = Filter::parse("warn,sluice::protocol=debug,sluice=info,[conn]=trace");
        assert_eq!(f.root, Level::Warn);
        assert_eq!(f.level_of("sluice::protocol::fetch"), Level::Debug);
        assert_eq!(f.level_of("sluice::protocolx"), Level::Info);
        assert_eq!(f.level_of("sluice::log"), Level::Info);
        assert_eq!(f.level_of("wasmtime"), Level::Warn);
        assert_eq!(f.other, vec!["[conn]=trace".to_string()]);
        f.set("sluice.log", "ALL").unwrap();
        f.set(ROOT, "fatal").unwrap();
        assert_eq!(f.level_of("sluice::log::segment"), Level::Trace);
        assert_eq!(f.level_of("rdkafka"), Level::Error);
        assert_eq!(
            f.spec(),
            "error,sluice=info,sluice::log=trace,sluice::protocol=debug,[conn]=trace"
        );
        assert!(EnvFilter::try_new(f.spec()).is_ok());
        f.remove("sluice::protocol").unwrap();
        assert_eq!(f.level_of("sluice::protocol"), Level::Info);
        assert_eq!(f.remove(ROOT), Err(LoggingError::RemoveRoot));
        assert!(matches!(
            f.set("sluice", "LOUD"),
            Err(LoggingError::BadLevel(_))
        ));
        assert!(matches!(
            f.set("a b", "INFO"),
            Err(LoggingError::BadName(_))
        ));
        assert!(matches!(
            f.set("a::", "INFO"),
            Err(LoggingError::BadName(_))
        ));
        let shown = f.loggers();
        assert_eq!(shown[0], (ROOT.to_string(), Level::Error));
        assert!(shown.contains(&("sluice.group".to_string(), Level::Info)));
        assert!(shown.contains(&("sluice.log".to_string(), Level::Trace)));
        f.remove("sluice.log").unwrap();
        assert_eq!(f.level_of("sluice::log"), Level::Info);
    }
}
