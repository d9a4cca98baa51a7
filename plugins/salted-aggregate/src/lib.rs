//! The standard `salted-aggregate` plugin: counts (and sums, minima, maxima) per key over
//! tumbling event-time windows, for keys that producers salt to spread a hot key over many
//! partitions (`ad42#7`: the key `ad42`, salt 7).
//!
//! It runs as two pipelines with the same plugin:
//!
//! - `mode = "partial"` reads the salted records. Each instance (one per input partition, a
//!   *source* named `<topic>/<partition>`) aggregates per unsalted key and window, and when the
//!   host's watermark passes a window's end it emits one *partial* per key of that window,
//!   key-less, to the partials topic.
//! - `mode = "merge"` reads that topic in one instance, adds up the partials of each key and
//!   window, and emits the final record of a window when its own watermark (the smallest of
//!   the partial stage's, which the host announces after the partials) passes its end.
//!
//! Event time is the host's: the pipelines' manifests carry `[event_time]` (`lateness_ms` on
//! the pipeline that reads what producers write), and the host sets late records apart.
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
    separator: Option<String>,
    key_field: Option<String>,
    time_field: Option<String>,
    value_field: Option<String>,
    aggregates: Option<Vec<String>>,
    // Keys of the versions that tracked watermarks themselves: refused with a pointer.
    lateness_ms: Option<serde::de::IgnoredAny>,
    idle_ms: Option<serde::de::IgnoredAny>,
    sources: Option<serde::de::IgnoredAny>,
    source_timeout_ms: Option<serde::de::IgnoredAny>,
}

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

impl SaltedAggregate {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let c: RawConfig = config.parse()?;
        if c.lateness_ms.is_some() {
            return Err("'lateness_ms' moved to the pipeline manifest: [event_time] lateness_ms = 1000 on the pipeline that reads the producers' topic (the host tracks watermarks since sluice plugin API 0.1.2)".into());
        }
        if c.idle_ms.is_some() {
            return Err("'idle_ms' is gone: the host decides idleness from the data; for sources that may go silent for good, set [event_time] idle_timeout_ms in the manifest of the pipeline that reads the producers' topic".into());
        }
        if c.sources.is_some() {
            return Err("'sources' is no longer needed: the host tells the merge when every upstream partition has passed a window (remove it)".into());
        }
        if c.source_timeout_ms.is_some() {
            return Err("'source_timeout_ms' is no longer needed: the host leaves idle upstream partitions out of the watermark (remove it)".into());
        }
        let wanted = Wanted::parse(c.aggregates.as_deref().unwrap_or_default())?;
        let not_for = |key: &str, set: bool, mode: &str| {
            if set {
                Err(format!("'{key}' does not apply to mode = \"{mode}\""))
            } else {
                Ok(())
            }
        };
        match c.mode.as_deref() {
            Some("partial") => {
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
                Ok(SaltedAggregate::Merge(Merge::new(merge::Settings {
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

    fn on_watermark(&mut self, state: &mut State, watermark_ms: i64) -> Vec<Output> {
        match self {
            SaltedAggregate::Partial(p) => p.on_watermark(&mut state.partial, watermark_ms),
            SaltedAggregate::Merge(m) => m.on_watermark(&mut state.merge, watermark_ms),
        }
    }
}

sluice_plugin::export_plugin!(SaltedAggregate);

#[cfg(test)]
mod tests;
