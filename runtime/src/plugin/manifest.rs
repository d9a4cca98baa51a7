//! Pipeline manifests: `NAME.toml` in the plugins directory.
//!
//! Every key is checked: an unknown key, a wrong type or a missing `inputs` refuses the whole
//! manifest with one message naming the file, the key and the problem, so a typo never
//! silently deploys something other than what the user wrote.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::engine::Limits;
use crate::broker::valid_topic_name;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{path}: {why}")]
pub struct ManifestError {
    pub path: PathBuf,
    pub why: String,
}

/// Where a new pipeline starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> u64 {
    1000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_attempts(),
            backoff_ms: default_backoff(),
        }
    }
}

/// Where output records with the input record's key go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Partitioning {
    /// A record that keeps its input record's key (and every key-less one) stays on the
    /// partition numbered like its input partition, so a 1:1 stage keeps per-partition order
    /// end to end whatever partitioner the producer used; a record with a new key goes where
    /// murmur2 puts it, as Kafka's default partitioner would.
    #[default]
    Auto,
    /// Every output record goes to the partition numbered like the input partition.
    Input,
    /// Every keyed record goes where murmur2 puts its key.
    Key,
}

/// `[event_time]`: the pipeline judges records by event time (their timestamps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    /// How far behind the newest event time of its source a record may come and still be on
    /// time; the watermark is the sources' progress minus this.
    pub lateness_ms: i64,
    /// Explicit choice for producers that may go silent for good: a producers' partition
    /// with nothing new for this long lets its watermark advance with the wall clock.
    pub idle_timeout_ms: Option<i64>,
    /// Where records behind the watermark go (default: the dead-letter topic).
    pub late_topic: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEventTime {
    lateness_ms: Option<i64>,
    idle_timeout_ms: Option<i64>,
    late_topic: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mb: Option<u64>,
    cpu_ms_per_call: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    inputs: Vec<String>,
    output: Option<String>,
    dead_letter: Option<String>,
    wasm: Option<String>,
    start: Option<Start>,
    /// Pause producers to the inputs (Kafka quota throttling) while lag exceeds this.
    max_lag: Option<u64>,
    /// How often `tick` is called, in ms.
    tick_ms: Option<u64>,
    #[serde(default)]
    retry: Option<RetryPolicy>,
    #[serde(default)]
    limits: RawLimits,
    partitioning: Option<Partitioning>,
    event_time: Option<RawEventTime>,
    #[serde(default)]
    config: Option<toml::Table>,
    /// Who the pipeline acts as when ACLs are on (default `User:pipeline-NAME`).
    principal: Option<String>,
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub inputs: Vec<String>,
    pub output: Option<String>,
    pub dead_letter: String,
    /// The retry topic: `<NAME>.retry`.
    pub retry_topic: String,
    pub wasm: PathBuf,
    pub start: Start,
    pub max_lag: Option<u64>,
    pub tick_ms: u64,
    pub retry: RetryPolicy,
    pub limits: Limits,
    pub partitioning: Partitioning,
    /// None: records are passed on whatever their timestamps (watermarks still flow).
    pub event_time: Option<EventTime>,
    /// The `[config]` table as JSON, handed to the plugin's `init`.
    pub config_json: String,
    /// The principal the pipeline reads and writes as (ACLs bound it like any client).
    pub principal: String,
}

/// Limits a manifest may not exceed: one pipeline must not be able to starve the broker.
const MAX_MEMORY_MB: u64 = 4096;
const MAX_CPU_MS: u64 = 60_000;
/// Lateness and idle timeouts beyond a year are typos.
const MAX_EVENT_MS: i64 = 366 * 24 * 3_600_000;

impl Manifest {
    /// Parses `NAME.toml` found in `dir`.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let err = |why: String| ManifestError {
            path: path.to_path_buf(),
            why,
        };
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| err("the file name is not valid UTF-8".into()))?
            .to_string();
        if !valid_topic_name(&name) || name.starts_with("__") {
            return Err(err(format!(
                "the pipeline name '{name}' (from the file name) must use only [a-zA-Z0-9._-] and not start with '__'"
            )));
        }
        // toml's messages name the key and its position ("unknown field `x`, expected one of
        // ..." / "invalid type: string, expected u64 for key `limits.memory_mb`").
        let raw: Raw = toml::from_str(text).map_err(|e| err(one_line(&e.to_string())))?;
        if raw.inputs.is_empty() {
            return Err(err(
                "key 'inputs': at least one input topic is needed".into()
            ));
        }
        let topic = |key: &str, t: &str| -> Result<(), ManifestError> {
            if valid_topic_name(t) && !t.starts_with("__") {
                Ok(())
            } else {
                Err(err(format!("key '{key}': '{t}' is not a valid topic name")))
            }
        };
        for t in &raw.inputs {
            topic("inputs", t)?;
        }
        if let Some(o) = &raw.output {
            topic("output", o)?;
            if raw.inputs.contains(o) {
                return Err(err(format!(
                    "key 'output': '{o}' is also an input: the pipeline would consume its own output"
                )));
            }
        }
        let dead_letter = raw.dead_letter.unwrap_or_else(|| format!("{name}.dlq"));
        topic("dead_letter", &dead_letter)?;
        let retry = raw.retry.unwrap_or_default();
        if retry.max_attempts == 0 {
            return Err(err("key 'retry.max_attempts': must be at least 1".into()));
        }
        let d = Limits::default();
        let limits = Limits {
            memory_mb: raw.limits.memory_mb.unwrap_or(d.memory_mb),
            cpu_ms_per_call: raw.limits.cpu_ms_per_call.unwrap_or(d.cpu_ms_per_call),
        };
        if !(1..=MAX_MEMORY_MB).contains(&limits.memory_mb) {
            return Err(err(format!(
                "key 'limits.memory_mb': must be between 1 and {MAX_MEMORY_MB}"
            )));
        }
        if !(1..=MAX_CPU_MS).contains(&limits.cpu_ms_per_call) {
            return Err(err(format!(
                "key 'limits.cpu_ms_per_call': must be between 1 and {MAX_CPU_MS}"
            )));
        }
        let tick_ms = raw.tick_ms.unwrap_or(1000);
        // 0: never, for plugins that do no time-based work (an idle task then costs nothing).
        if tick_ms != 0 && !(10..=3_600_000).contains(&tick_ms) {
            return Err(err(
                "key 'tick_ms': must be 0 (never) or between 10 and 3600000".into(),
            ));
        }
        let wasm = raw.wasm.unwrap_or_else(|| format!("{name}.wasm"));
        let wasm_path = Path::new(&wasm);
        if wasm_path.is_absolute() || wasm_path.components().any(|c| c.as_os_str() == "..") {
            return Err(err(format!(
                "key 'wasm': '{wasm}' must be a path inside the plugins directory"
            )));
        }
        let event_time = match raw.event_time {
            None => None,
            Some(e) => {
                let lateness_ms = e.lateness_ms.unwrap_or(0);
                if !(0..=MAX_EVENT_MS).contains(&lateness_ms) {
                    return Err(err(format!(
                        "key 'event_time.lateness_ms': must be between 0 and {MAX_EVENT_MS}"
                    )));
                }
                if let Some(t) = e.idle_timeout_ms {
                    if !(1..=MAX_EVENT_MS).contains(&t) {
                        return Err(err(format!(
                            "key 'event_time.idle_timeout_ms': must be between 1 and {MAX_EVENT_MS}"
                        )));
                    }
                }
                let late_topic = e.late_topic.unwrap_or_else(|| dead_letter.clone());
                topic("event_time.late_topic", &late_topic)?;
                if raw.inputs.contains(&late_topic) {
                    return Err(err(format!(
                        "key 'event_time.late_topic': '{late_topic}' is also an input"
                    )));
                }
                Some(EventTime {
                    lateness_ms,
                    idle_timeout_ms: e.idle_timeout_ms,
                    late_topic,
                })
            }
        };
        let config_json = serde_json::to_string(&raw.config.unwrap_or_default())
            .map_err(|e| err(format!("key 'config': {e}")))?;
        let principal = raw
            .principal
            .unwrap_or_else(|| format!("User:pipeline-{name}"));
        if !principal.starts_with("User:") || principal.len() == 5 {
            return Err(err(format!(
                "key 'principal': '{principal}' is not a principal (write it as User:NAME)"
            )));
        }
        Ok(Manifest {
            retry_topic: format!("{name}.retry"),
            name,
            inputs: raw.inputs,
            output: raw.output,
            dead_letter,
            wasm: path.parent().unwrap_or(Path::new(".")).join(wasm_path),
            start: raw.start.unwrap_or(Start::Earliest),
            max_lag: raw.max_lag,
            tick_ms,
            retry,
            limits,
            partitioning: raw.partitioning.unwrap_or_default(),
            event_time,
            config_json,
            principal,
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("/p/clicks.toml"), text)
    }

    #[test]
    fn full_manifest() {
        let m = parse(
            r#"
inputs = ["clicks"]
output = "clicks-clean"
dead_letter = "clicks-dlq"
wasm = "filter.wasm"
start = "latest"
[retry]
max_attempts = 5
backoff_ms = 200
[limits]
memory_mb = 32
cpu_ms_per_call = 50
[config]
field = "ad"
min = 3
"#,
        )
        .unwrap();
        assert_eq!(m.name, "clicks");
        assert_eq!(m.inputs, vec!["clicks"]);
        assert_eq!(m.output.as_deref(), Some("clicks-clean"));
        assert_eq!(m.dead_letter, "clicks-dlq");
        assert_eq!(m.retry_topic, "clicks.retry");
        assert_eq!(m.wasm, PathBuf::from("/p/filter.wasm"));
        assert_eq!(m.start, Start::Latest);
        assert_eq!(
            m.retry,
            RetryPolicy {
                max_attempts: 5,
                backoff_ms: 200
            }
        );
        assert_eq!(m.limits.memory_mb, 32);
        assert_eq!(m.limits.cpu_ms_per_call, 50);
        let cfg: serde_json::Value = serde_json::from_str(&m.config_json).unwrap();
        assert_eq!(cfg, serde_json::json!({"field": "ad", "min": 3}));
    }

    #[test]
    fn defaults() {
        let m = parse("inputs = [\"a\", \"b\"]").unwrap();
        assert_eq!(m.dead_letter, "clicks.dlq");
        assert_eq!(m.wasm, PathBuf::from("/p/clicks.wasm"));
        assert_eq!(m.start, Start::Earliest);
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.config_json, "{}");
        assert_eq!(m.output, None);
        assert_eq!(m.partitioning, Partitioning::Auto);
        assert_eq!(m.event_time, None);
    }

    #[test]
    fn event_time_and_partitioning() {
        let m = parse(
            "inputs = [\"a\"]\npartitioning = \"key\"\n[event_time]\nlateness_ms = 1000\nidle_timeout_ms = 10000\n",
        )
        .unwrap();
        assert_eq!(m.partitioning, Partitioning::Key);
        assert_eq!(
            m.event_time,
            Some(EventTime {
                lateness_ms: 1000,
                idle_timeout_ms: Some(10000),
                late_topic: "clicks.dlq".into()
            })
        );
        let m = parse("inputs = [\"a\"]\n[event_time]\nlate_topic = \"late\"").unwrap();
        let e = m.event_time.unwrap();
        assert_eq!((e.lateness_ms, e.late_topic.as_str()), (0, "late"));
        for bad in [
            "[event_time]\nlateness_ms = -1",
            "[event_time]\nidle_timeout_ms = 0",
            "[event_time]\nlate_topic = \"a\"",
            "[event_time]\ngrace = 3",
            "partitioning = \"random\"",
        ] {
            let e = parse(&format!("inputs = [\"a\"]\n{bad}")).unwrap_err();
            assert!(
                e.to_string().contains("event_time")
                    || e.to_string().contains("grace")
                    || e.to_string().contains("random"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn errors_name_the_key_and_problem() {
        let e = parse("inputs = [\"a\"]\noutptu = \"b\"").unwrap_err();
        assert!(e.to_string().contains("outptu"), "{e}");
        assert!(e.to_string().starts_with("/p/clicks.toml: "), "{e}");
        let e = parse("inputs = [\"a\"]\n[limits]\nmemory_mb = \"lots\"").unwrap_err();
        assert!(e.to_string().contains("memory_mb"), "{e}");
        let e = parse("output = \"b\"").unwrap_err();
        assert!(e.to_string().contains("inputs"), "{e}");
        let e = parse("inputs = []").unwrap_err();
        assert!(e.to_string().contains("inputs"), "{e}");
        let e = parse("inputs = [\"a b\"]").unwrap_err();
        assert!(e.to_string().contains("not a valid topic name"), "{e}");
        let e = parse("inputs = [\"a\"]\nwasm = \"../x.wasm\"").unwrap_err();
        assert!(e.to_string().contains("wasm"), "{e}");
        let e = parse("inputs = [\"a\"]\noutput = \"a\"").unwrap_err();
        assert!(e.to_string().contains("output"), "{e}");
        let e = parse("inputs = [\"a\"]\ntick_ms = 5").unwrap_err();
        assert!(e.to_string().contains("tick_ms"), "{e}");
        assert_eq!(parse("inputs = [\"a\"]\ntick_ms = 0").unwrap().tick_ms, 0);
    }
}
