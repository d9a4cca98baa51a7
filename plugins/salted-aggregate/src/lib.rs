//! The standard `salted-aggregate` plugin: counts (and sums, minima, maxima) per key over
//! tumbling event-time windows, for keys that producers salt to spread a hot key over many
//! partitions (`ad42#7`: the key `ad42`, salt 7).
//!
//! It runs as two pipelines with the same plugin:
//!
//! - `mode = "partial"` reads the salted records. Each instance (one per input partition, a
//!   *source* named `<topic>/<partition>`) aggregates per unsalted key and window, and when its
//!   watermark passes a window's end it emits one *partial* per key of that window, followed
//!   by a *watermark marker* saying "this source has emitted every window ending at or before
//!   T". Both go, key-less, to a one-partition topic.
//! - `mode = "merge"` reads that topic in one instance, adds up the partials of each key and
//!   window, and emits the final record of a window once every source has passed its end.
//!
//! The README (plugins/README.md) has the full configuration and the watermark design.

mod agg;
mod merge;
mod partial;

use serde::{Deserialize, Serialize};
use sluice_plugin::{Config, Outcome, Output, Plugin, Record};

pub use agg::{Agg, Num, Wanted};
pub use merge::{Merge, MergeState};
pub use partial::{Partial, PartialState};

/// Event times must lie in [0, MAX_TIME]: far from overflow in window arithmetic, and past
/// any real date (year 285,000).
pub const MAX_TIME: i64 = 1 << 53;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<String>,
    window_ms: Option<i64>,
    lateness_ms: Option<i64>,
    idle_ms: Option<i64>,
    separator: Option<String>,
    key_field: Option<String>,
    time_field: Option<String>,
    value_field: Option<String>,
    aggregates: Option<Vec<String>>,
    sources: Option<u32>,
    source_timeout_ms: Option<i64>,
}

/// Default `idle_ms`: how long (wall clock) without input before a source counts as idle.
pub const DEFAULT_IDLE_MS: i64 = 10_000;

pub enum SaltedAggregate {
    Partial(Partial),
    Merge(Merge),
}

/// Both stages' state; an instance uses the half of its mode.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub partial: PartialState,
    #[serde(default)]
    pub merge: MergeState,
}

fn non_negative(name: &str, v: Option<i64>, default: i64) -> Result<i64, String> {
    match v {
        None => Ok(default),
        Some(x) if (0..=MAX_TIME).contains(&x) => Ok(x),
        Some(x) => Err(format!(
            "'{name}' must be between 0 and {MAX_TIME}, got {x}"
        )),
    }
}

impl SaltedAggregate {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let c: RawConfig = config.parse()?;
        let wanted = Wanted::parse(c.aggregates.as_deref().unwrap_or_default())?;
        let lateness_ms = non_negative("lateness_ms", c.lateness_ms, 0)?;
        let idle_ms = non_negative("idle_ms", c.idle_ms, DEFAULT_IDLE_MS)?;
        let not_for = |key: &str, set: bool, mode: &str| {
            if set {
                Err(format!("'{key}' does not apply to mode = \"{mode}\""))
            } else {
                Ok(())
            }
        };
        match c.mode.as_deref() {
            Some("partial") => {
                not_for("sources", c.sources.is_some(), "partial")?;
                not_for(
                    "source_timeout_ms",
                    c.source_timeout_ms.is_some(),
                    "partial",
                )?;
                let window_ms = match c.window_ms {
                    None => return Err("'window_ms' is required for mode = \"partial\"".into()),
                    Some(w) if (1..=MAX_TIME).contains(&w) => w,
                    Some(w) => {
                        return Err(format!(
                            "'window_ms' must be between 1 and {MAX_TIME}, got {w}"
                        ))
                    }
                };
                let separator = c.separator.unwrap_or_else(|| "#".into());
                if separator.is_empty() {
                    return Err("'separator' must not be empty".into());
                }
                if wanted.any_value() && c.value_field.is_none() {
                    return Err(
                        "'aggregates' has sum, min or max: 'value_field' must name the number to aggregate"
                            .into(),
                    );
                }
                Partial::new(partial::Settings {
                    window_ms,
                    lateness_ms,
                    idle_ms,
                    separator,
                    key_field: c.key_field,
                    time_field: c.time_field,
                    value_field: c.value_field,
                    wanted,
                })
                .map(SaltedAggregate::Partial)
            }
            Some("merge") => {
                for (key, set) in [
                    ("window_ms", c.window_ms.is_some()),
                    ("separator", c.separator.is_some()),
                    ("key_field", c.key_field.is_some()),
                    ("time_field", c.time_field.is_some()),
                    ("value_field", c.value_field.is_some()),
                ] {
                    not_for(key, set, "merge")?;
                }
                let sources = match c.sources {
                    Some(n) if n >= 1 => n as usize,
                    _ => {
                        return Err(
                            "'sources' is required for mode = \"merge\": how many partial-stage partitions to wait for (at least 1)"
                                .into(),
                        )
                    }
                };
                let source_timeout_ms = non_negative("source_timeout_ms", c.source_timeout_ms, 0)?;
                Ok(SaltedAggregate::Merge(Merge::new(merge::Settings {
                    sources,
                    lateness_ms,
                    idle_ms,
                    source_timeout_ms,
                    wanted,
                })))
            }
            Some(other) => Err(format!(
                "'mode' must be \"partial\" or \"merge\", got \"{other}\""
            )),
            None => Err("'mode' is required: \"partial\" or \"merge\"".into()),
        }
    }
}

impl Plugin for SaltedAggregate {
    type State = State;

    fn init(config: &Config) -> Result<Self, String> {
        SaltedAggregate::from_config(config)
    }

    fn process(&mut self, state: &mut State, record: &Record) -> Outcome {
        match self {
            SaltedAggregate::Partial(p) => p.process(&mut state.partial, record),
            SaltedAggregate::Merge(m) => m.process(&mut state.merge, record),
        }
    }

    fn tick(&mut self, state: &mut State, now_ms: i64) -> Vec<Output> {
        match self {
            SaltedAggregate::Partial(p) => p.tick(&mut state.partial, now_ms),
            SaltedAggregate::Merge(m) => m.tick(&mut state.merge, now_ms),
        }
    }
}

sluice_plugin::export_plugin!(SaltedAggregate);

/// Outputs as an outcome: the record itself is consumed either way.
fn emit_or_drop(outs: Vec<Output>) -> Outcome {
    if outs.is_empty() {
        Outcome::Drop
    } else {
        Outcome::Emit(outs)
    }
}

#[cfg(test)]
mod tests;
