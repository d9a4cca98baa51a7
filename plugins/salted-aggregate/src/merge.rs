//! Stage 3, `mode = "merge"`: one instance reads every source's partials and watermark
//! markers (one partition, so in each source's order), adds up the partials per key and
//! window, and emits a window's final records once, when every source has passed its end.
//!
//! Exact path (process): once at least `sources` sources are known, a marker that raises
//! the lowest `closed_before` of all known sources finalises the windows ending at or before
//! it.
//!
//! Fallback (tick), for sources that do not speak: a partial-stage instance announces itself
//! (from the host's task info) even when its partition never had a record, but an older
//! host, or a stage that is not running, leaves the merge waiting. While fewer than
//! `sources` sources are known and the set of known sources has not changed for `idle_ms`
//! of wall time, each missing source is taken to be idle, as if it had said
//! `closed_before = now - idle_ms - lateness_ms` (what an idle partial instance says of
//! itself). With `source_timeout_ms`, a known source silent for that long is treated the
//! same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_plugin::{Outcome, Output, Record};

use crate::agg::{Agg, Num, Wanted};
use crate::{emit_or_drop, MAX_TIME};

pub struct Settings {
    pub sources: usize,
    pub lateness_ms: i64,
    pub idle_ms: i64,
    /// 0: never.
    pub source_timeout_ms: i64,
    pub wanted: Wanted,
}

pub struct Merge {
    s: Settings,
    /// Wall-clock tracking for `tick`, not in the state (a restart starts afresh, which only
    /// delays the fallback): how many sources were known at the last tick, since when, and
    /// per source its message count and when that last changed.
    known: Option<usize>,
    known_since: i64,
    heard: BTreeMap<String, (u64, i64)>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// The source's last marker: it has emitted every window ending at or before this.
    pub closed_before: Option<i64>,
    /// Partials and markers received, for `source_timeout_ms`.
    pub messages: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub end: i64,
    pub keys: BTreeMap<String, Agg>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeState {
    #[serde(default)]
    pub sources: BTreeMap<String, SourceState>,
    /// Windows not final yet, by start.
    #[serde(default)]
    pub windows: BTreeMap<i64, Window>,
    /// Every window ending at or before this is final: a partial for one is late. One number
    /// is all the memory of finalised windows needed, because windows are finalised in order
    /// of their end.
    #[serde(default)]
    pub final_before: Option<i64>,
}

/// A record of the partials topic: a partial (`type` "partial") or a marker ("watermark").
/// Flat rather than an internally tagged enum, which buffers every value (and weighs on the
/// wasm size).
#[derive(Deserialize)]
struct Message {
    #[serde(rename = "type")]
    kind: String,
    source: String,
    key: Option<String>,
    window_start: Option<i64>,
    window_end: Option<i64>,
    count: Option<u64>,
    sum: Option<Num>,
    min: Option<Num>,
    max: Option<Num>,
    closed_before: Option<i64>,
}

/// The final record's value. Dashboards read these fields: keep them as they are.
#[derive(Serialize)]
struct FinalOut<'a> {
    key: &'a str,
    window_start: i64,
    window_end: i64,
    #[serde(flatten)]
    agg: &'a Agg,
}

impl Merge {
    pub fn new(s: Settings) -> Merge {
        Merge {
            s,
            known: None,
            known_since: 0,
            heard: BTreeMap::new(),
        }
    }

    pub fn process(&mut self, st: &mut MergeState, record: &Record) -> Outcome {
        let msg: Message = match record.value().map(serde_json::from_slice) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Outcome::Fail(format!(
                    "not a partial or watermark record of the partial stage: {e}"
                ))
            }
            None => return Outcome::fail("record has no value"),
        };
        match (msg.kind.as_str(), msg.closed_before) {
            ("partial", _) => {
                let (Some(key), Some(window_start), Some(window_end), Some(count)) =
                    (msg.key, msg.window_start, msg.window_end, msg.count)
                else {
                    return Outcome::fail(
                        "a partial needs key, window_start, window_end and count",
                    );
                };
                let (source, sum, min, max) = (msg.source, msg.sum, msg.min, msg.max);
                st.sources.entry(source).or_default().messages += 1;
                if window_end <= window_start || !(0..=MAX_TIME + MAX_TIME).contains(&window_end) {
                    return Outcome::Fail(format!(
                        "invalid window [{window_start},{window_end}) of key '{key}'"
                    ));
                }
                if let Some(f) = st.final_before.filter(|&f| window_end <= f) {
                    return Outcome::Fail(format!(
                        "late partial: window [{window_start},{window_end}) of key '{key}' is already final (windows ending at or before {f} are)"
                    ));
                }
                let w = self.s.wanted;
                for (name, wanted, v) in [
                    ("sum", w.sum, sum),
                    ("min", w.min, min),
                    ("max", w.max, max),
                ] {
                    if wanted && v.is_none() {
                        return Outcome::Fail(format!(
                            "partial of key '{key}' has no '{name}': aggregate it in the partial stage too"
                        ));
                    }
                }
                let window = st.windows.entry(window_start).or_insert_with(|| Window {
                    end: window_end,
                    keys: BTreeMap::new(),
                });
                if window.end != window_end {
                    return Outcome::Fail(format!(
                        "partial for window [{window_start},{window_end}) but another has [{window_start},{}): was window_ms changed?",
                        window.end
                    ));
                }
                let agg = Agg {
                    count,
                    sum: sum.filter(|_| w.sum),
                    min: min.filter(|_| w.min),
                    max: max.filter(|_| w.max),
                };
                window.keys.entry(key).or_default().merge(&agg);
                Outcome::Drop
            }
            ("watermark", Some(closed_before)) => {
                let s = st.sources.entry(msg.source).or_default();
                s.messages += 1;
                s.closed_before = Some(
                    s.closed_before
                        .map_or(closed_before, |c| c.max(closed_before)),
                );
                emit_or_drop(self.finalize_exact(st))
            }
            ("watermark", None) => Outcome::fail("a watermark record needs closed_before"),
            (other, _) => Outcome::Fail(format!(
                "not a partial or watermark record of the partial stage: type '{other}'"
            )),
        }
    }

    /// Finalises what every known source has passed, once `sources` sources are known.
    fn finalize_exact(&self, st: &mut MergeState) -> Vec<Output> {
        if st.sources.len() < self.s.sources {
            return Vec::new();
        }
        // A source known only from partials (no marker yet) holds everything back.
        let Some(horizon) = st.sources.values().map(|s| s.closed_before).min().flatten() else {
            return Vec::new();
        };
        if st.final_before.is_some_and(|f| horizon <= f) {
            return Vec::new();
        }
        st.final_before = Some(horizon);
        finalize(st, horizon)
    }

    pub fn tick(&mut self, st: &mut MergeState, now_ms: i64) -> Vec<Output> {
        if self.known != Some(st.sources.len()) {
            self.known = Some(st.sources.len());
            self.known_since = now_ms;
        }
        let timeout = self.s.source_timeout_ms;
        let mut timed_out = 0;
        let mut horizon = now_ms
            .saturating_sub(self.s.idle_ms)
            .saturating_sub(self.s.lateness_ms);
        for (name, s) in &st.sources {
            let heard = self
                .heard
                .entry(name.clone())
                .or_insert((s.messages, now_ms));
            if heard.0 != s.messages {
                *heard = (s.messages, now_ms);
            }
            if timeout > 0 && now_ms.saturating_sub(heard.1) >= timeout {
                timed_out += 1;
            } else {
                horizon = horizon.min(s.closed_before.unwrap_or(i64::MIN));
            }
        }
        let missing = self.s.sources.saturating_sub(st.sources.len());
        if missing == 0 && timed_out == 0 {
            // All sources speak: the exact path decides.
            return Vec::new();
        }
        if missing > 0 && now_ms.saturating_sub(self.known_since) < self.s.idle_ms {
            // Sources are still announcing themselves: wait for stragglers.
            return Vec::new();
        }
        // Only move final_before together with output (the host checkpoints after a tick's
        // output, and a replay must see what process() saw).
        let outs = finalize(st, horizon);
        if let Some(end) = outs.iter().filter_map(|o| o.timestamp).max() {
            st.final_before = Some(st.final_before.map_or(end, |f| f.max(end)));
        }
        outs
    }
}

/// Emits and forgets the windows ending at or before `horizon`, by window then key.
fn finalize(st: &mut MergeState, horizon: i64) -> Vec<Output> {
    let done: Vec<i64> = st
        .windows
        .iter()
        .filter(|(_, w)| w.end <= horizon)
        .map(|(&start, _)| start)
        .collect();
    let mut outs = Vec::new();
    for start in done {
        let Some(w) = st.windows.remove(&start) else {
            continue;
        };
        for (key, agg) in &w.keys {
            let value = serde_json::to_vec(&FinalOut {
                key,
                window_start: start,
                window_end: w.end,
                agg,
            })
            .expect("serialisable");
            outs.push(Output::value(value).key(key.as_bytes()).timestamp(w.end));
        }
    }
    outs
}
