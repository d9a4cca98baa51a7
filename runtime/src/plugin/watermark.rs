//! Event time: the watermark of one task's input partition, as a pure state machine.
//!
//! A partition is fed either by producers (a *source* partition: its records' timestamps are
//! the event times) or by upstream pipeline tasks (*writers*), which announce their own
//! watermark into the partition with control records (see [`Announcement`]). The tracker
//! turns the partition's items, in offset order, into:
//!
//! - a verdict per record: on time, or late (its timestamp is behind the watermark);
//! - the watermark itself, which only grows: for a source partition, the newest timestamp seen
//!   minus `lateness`; for a fed partition, the smallest watermark of the writers that are not
//!   idle (a writer expected from the topology but not heard from yet holds it back), minus
//!   `lateness`;
//! - when to hand the watermark to the plugin: whenever it has crossed into a new
//!   [`HAND_EVERY`]-millisecond step since the last hand-over.
//!
//! Everything here depends only on the items and their order, never on the clock or on how
//! the items were batched, so a replay of the same log reaches the same verdicts and hands
//! the same watermarks at the same records. The one wall-clock input is the explicit
//! `idle_timeout_ms` of a source partition ([`Tracker::silence`]); the task writes what follows
//! from it ahead in its checkpoint.
//!
//! ## Invariants
//! - `current` never decreases, and `handed <= current`.
//! - A record judged on time has `timestamp >= current >= handed`: the plugin never sees a
//!   record behind the last watermark it was handed.
//! - A writer's records are never late downstream of it as long as it emits no record behind
//!   its own announced watermark, because its announcement follows its data in each partition
//!   and the fed partition's watermark is at most that writer's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The granularity of hand-overs (ms of event time): the watermark reaches the plugin when it
/// crosses a multiple of this, which bounds the calls a fast-moving source causes.
pub const HAND_EVERY: i64 = 100;

/// A writer's announcement, carried in a control record of the fed partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// `pipeline/topic/partition` of the task that writes.
    pub writer: String,
    /// Its watermark (what its plugin was last handed); None before it has one.
    pub watermark: Option<i64>,
    /// No data and nothing pending upstream of it: leave it out of the minimum.
    pub idle: bool,
}

/// Kafka's control-record key is (version: i16, type: i16). Clients skip control batches and
/// ignore types they do not know; this one is sluice's own.
pub const CONTROL_TYPE: i16 = 0x534c;
const VALUE_VERSION: u8 = 1;

impl Announcement {
    pub fn control_key() -> [u8; 4] {
        let t = CONTROL_TYPE.to_be_bytes();
        [0, 0, t[0], t[1]]
    }

    /// Whether a control record's key is a watermark announcement's.
    pub fn is_ours(key: Option<&[u8]>) -> bool {
        key.is_some_and(|k| {
            k.len() >= 4 && k[0..2] == [0, 0] && k[2..4] == CONTROL_TYPE.to_be_bytes()
        })
    }

    /// version (1) · watermark (i64, big-endian; i64::MIN for none) · flags (bit 0: idle) ·
    /// writer (UTF-8, the rest).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(10 + self.writer.len());
        v.push(VALUE_VERSION);
        v.extend_from_slice(&self.watermark.unwrap_or(i64::MIN).to_be_bytes());
        v.push(u8::from(self.idle));
        v.extend_from_slice(self.writer.as_bytes());
        v
    }

    /// None for anything malformed or of a later version: an announcement we cannot read is
    /// skipped, never trusted.
    pub fn decode(b: &[u8]) -> Option<Announcement> {
        if b.len() < 10 || b[0] != VALUE_VERSION {
            return None;
        }
        let wm = i64::from_be_bytes(b[1..9].try_into().ok()?);
        let writer = std::str::from_utf8(&b[10..]).ok()?;
        if writer.is_empty() {
            return None;
        }
        Some(Announcement {
            writer: writer.to_string(),
            watermark: (wm != i64::MIN).then_some(wm),
            idle: b[9] & 1 == 1,
        })
    }
}

/// The pipeline a writer id belongs to.
pub fn writer_pipeline(writer: &str) -> &str {
    writer.split('/').next().unwrap_or(writer)
}

pub fn writer_id(pipeline: &str, topic: &str, partition: i32) -> String {
    format!("{pipeline}/{topic}/{partition}")
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterState {
    pub watermark: Option<i64>,
    pub idle: bool,
}

/// What a checkpoint keeps: everything the tracker derived from the input so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    /// Newest timestamp of the records read (what a source partition's watermark follows).
    #[serde(default)]
    pub newest: Option<i64>,
    /// Writers heard from, with their last announcement.
    #[serde(default)]
    pub writers: BTreeMap<String, WriterState>,
    /// The watermark records are judged against.
    #[serde(default)]
    pub current: Option<i64>,
    /// The last watermark handed to the plugin (and announced downstream).
    #[serde(default)]
    pub handed: Option<i64>,
    /// Raised by the explicit idle timeout of a source partition.
    #[serde(default)]
    pub idle_floor: Option<i64>,
    /// A source partition that has had no record for the whole idle timeout: idle for its
    /// readers until a record comes. (Without the timeout an empty partition is never taken
    /// for idle: its producers may just not have started yet, and leaving it out would make
    /// their first records look late downstream.)
    #[serde(default)]
    pub empty_idle: bool,
}

/// Who feeds the partition, from the deployed pipelines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feeders {
    /// Writers whose default output is this topic: waited for even before they speak.
    pub expected: BTreeSet<String>,
    /// Pipelines running now: a writer of any other pipeline has stopped for good.
    pub running: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    OnTime,
    /// Behind the watermark, which is given.
    Late(i64),
}

pub struct Tracker {
    pub state: TrackerState,
    lateness: i64,
    /// Whether late records are set apart (the manifest has `[event_time]`).
    judge: bool,
    feeders: Feeders,
    /// [`Tracker::fed`], kept up to date: asked for every record.
    fed: bool,
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Tracker {
    pub fn new(state: TrackerState, lateness: i64, judge: bool, feeders: Feeders) -> Tracker {
        let mut t = Tracker {
            state,
            lateness,
            judge,
            feeders,
            fed: false,
        };
        t.recompute();
        t
    }

    pub fn set_feeders(&mut self, feeders: Feeders) {
        self.feeders = feeders;
        self.recompute();
    }

    /// The writers that count: expected ones and those of running pipelines heard from.
    fn counted(&self) -> impl Iterator<Item = (&str, WriterState)> + '_ {
        let heard = self
            .state
            .writers
            .iter()
            .filter(|(w, _)| {
                self.feeders.expected.contains(*w)
                    || self.feeders.running.contains(writer_pipeline(w))
            })
            .map(|(w, s)| (w.as_str(), *s));
        let unheard = self
            .feeders
            .expected
            .iter()
            .filter(|w| !self.state.writers.contains_key(*w))
            .map(|w| (w.as_str(), WriterState::default()));
        heard.chain(unheard)
    }

    /// Fed by writers (rather than by producers)?
    pub fn fed(&self) -> bool {
        self.fed
    }

    fn recompute(&mut self) {
        let fed = self.counted().next().is_some();
        self.fed = fed;
        let candidate = if self.fed {
            let mut min: Option<Option<i64>> = None;
            for (_, w) in self.counted().filter(|(_, w)| !w.idle) {
                min = Some(match min {
                    None => w.watermark,
                    Some(m) => match (m, w.watermark) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    },
                });
            }
            // All idle (or none): nothing moves.
            min.flatten()
        } else {
            max_opt(
                self.state.newest,
                self.state.idle_floor.map(|f| f + self.lateness),
            )
        };
        let candidate = candidate.map(|c| c.saturating_sub(self.lateness));
        self.state.current = max_opt(self.state.current, candidate);
    }

    /// A data record's verdict, then its effect on the watermark.
    pub fn record(&mut self, timestamp: i64) -> Verdict {
        if self.judge {
            if let Some(c) = self.state.current.filter(|&c| timestamp < c) {
                return Verdict::Late(c);
            }
        }
        self.state.newest = max_opt(self.state.newest, Some(timestamp));
        self.state.empty_idle = false;
        if !self.fed {
            // recompute() for a producers' partition, without the writer bookkeeping: this
            // runs for every record.
            let candidate = timestamp.saturating_sub(self.lateness);
            if self.state.current.is_none_or(|c| candidate > c) {
                self.state.current = Some(candidate);
            }
        }
        Verdict::OnTime
    }

    pub fn announcement(&mut self, a: Announcement) {
        let w = self.state.writers.entry(a.writer).or_default();
        // A writer's watermark only grows; a restarted writer may repeat an older one.
        w.watermark = max_opt(w.watermark, a.watermark);
        w.idle = a.idle;
        self.recompute();
    }

    /// The explicit idle timeout of a source partition: after `silence_ms` with nothing new,
    /// its event time is taken to have moved on with the wall clock from its newest record
    /// (an empty one is left out by its readers from then on). Returns whether the watermark
    /// moved.
    pub fn silence(&mut self, silence_ms: i64, idle_timeout_ms: i64) -> bool {
        if self.fed() || silence_ms < idle_timeout_ms {
            return false;
        }
        let Some(newest) = self.state.newest else {
            self.state.empty_idle = true;
            return false;
        };
        let before = self.state.current;
        let floor = newest
            .saturating_add(silence_ms)
            .saturating_sub(self.lateness);
        self.state.idle_floor = max_opt(self.state.idle_floor, Some(floor));
        self.recompute();
        self.state.current != before
    }

    /// The watermark to hand to the plugin now, if it crossed into a new step since the last.
    pub fn to_hand(&self) -> Option<i64> {
        let c = self.state.current?;
        match self.state.handed {
            Some(h) if c.div_euclid(HAND_EVERY) <= h.div_euclid(HAND_EVERY) => None,
            _ => Some(c),
        }
    }

    /// Like [`to_hand`](Self::to_hand) but for any growth at all (the idle path, which is
    /// written ahead anyway).
    pub fn to_hand_any(&self) -> Option<i64> {
        let c = self.state.current?;
        (self.state.handed < Some(c)).then_some(c)
    }

    pub fn handed(&mut self, wm: i64) {
        self.state.handed = max_opt(self.state.handed, Some(wm));
    }

    /// Idle for its readers downstream: caught up, and nothing upstream with data pending.
    pub fn idle(&self, caught_up: bool) -> bool {
        if !caught_up {
            return false;
        }
        if self.fed() {
            self.counted().all(|(_, w)| w.idle)
        } else {
            self.state.newest.is_none() && self.state.empty_idle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feeders(expected: &[&str]) -> Feeders {
        Feeders {
            expected: expected.iter().map(|s| s.to_string()).collect(),
            running: expected
                .iter()
                .map(|s| writer_pipeline(s).to_string())
                .collect(),
        }
    }

    fn ann(w: &str, wm: Option<i64>, idle: bool) -> Announcement {
        Announcement {
            writer: w.into(),
            watermark: wm,
            idle,
        }
    }

    #[test]
    fn announcement_roundtrip_and_garbage() {
        let a = ann("p/clicks/3", Some(-5), true);
        assert_eq!(Announcement::decode(&a.encode()), Some(a));
        let b = ann("x/y/0", None, false);
        assert_eq!(Announcement::decode(&b.encode()), Some(b));
        for bad in [
            &b""[..],
            b"\x02aaaaaaaaaaaaa",
            b"\x01\0\0\0\0\0\0\0\0\0",
            b"\x01\0\0\0\0\0\0\0\0\0\xff",
        ] {
            assert_eq!(Announcement::decode(bad), None);
        }
        assert!(Announcement::is_ours(Some(&Announcement::control_key())));
        assert!(!Announcement::is_ours(Some(&[0, 0, 0, 1])));
        assert!(!Announcement::is_ours(None));
    }

    #[test]
    fn source_partition_follows_its_newest_record_minus_lateness() {
        let mut t = Tracker::new(TrackerState::default(), 1000, true, Feeders::default());
        assert_eq!(t.record(5000), Verdict::OnTime);
        assert_eq!(t.state.current, Some(4000));
        assert_eq!(t.to_hand(), Some(4000));
        t.handed(4000);
        // Out of order within the lateness: on time, and the watermark holds.
        assert_eq!(t.record(4500), Verdict::OnTime);
        assert_eq!(t.record(4000), Verdict::OnTime);
        assert_eq!(t.state.current, Some(4000));
        assert_eq!(t.record(3999), Verdict::Late(4000));
        // Small steps are not handed until a new step is crossed.
        t.record(5050);
        assert_eq!(t.to_hand(), None);
        t.record(5100);
        assert_eq!(t.to_hand(), Some(4100));
    }

    #[test]
    fn without_event_time_nothing_is_late() {
        let mut t = Tracker::new(TrackerState::default(), 0, false, Feeders::default());
        t.record(5000);
        assert_eq!(t.record(1), Verdict::OnTime);
        assert_eq!(t.state.current, Some(5000));
    }

    #[test]
    fn fed_partition_takes_the_minimum_and_waits_for_expected_writers() {
        let f = feeders(&["v/c/0", "v/c/1"]);
        let mut t = Tracker::new(TrackerState::default(), 0, true, f);
        assert!(t.fed());
        t.announcement(ann("v/c/0", Some(9000), false));
        // v/c/1 has not spoken: it holds everything back.
        assert_eq!(t.state.current, None);
        // Records do not move a fed partition's watermark.
        t.record(20_000);
        assert_eq!(t.state.current, None);
        t.announcement(ann("v/c/1", Some(7000), false));
        assert_eq!(t.state.current, Some(7000));
        t.announcement(ann("v/c/1", Some(12_000), false));
        assert_eq!(t.state.current, Some(9000));
        // A repeated older announcement (a restarted writer) does not move anything back.
        t.announcement(ann("v/c/0", Some(1000), false));
        assert_eq!(t.state.current, Some(9000));
        assert_eq!(t.record(8999), Verdict::Late(9000));
    }

    #[test]
    fn idle_writers_are_left_out_and_all_idle_moves_nothing() {
        let f = feeders(&["v/c/0", "v/c/1"]);
        let mut t = Tracker::new(TrackerState::default(), 0, true, f);
        t.announcement(ann("v/c/1", None, true));
        assert!(!t.idle(true));
        t.announcement(ann("v/c/0", Some(5000), false));
        assert_eq!(t.state.current, Some(5000));
        t.announcement(ann("v/c/0", Some(6000), true));
        assert_eq!(t.state.current, Some(5000), "all idle: nothing moves");
        assert!(t.idle(true));
        assert!(!t.idle(false));
        // The idle writer wakes with an older watermark: the minimum would drop, the
        // watermark does not.
        t.announcement(ann("v/c/1", Some(3000), false));
        assert_eq!(t.state.current, Some(5000));
        // v/c/0 is still idle: left out, so v/c/1 alone decides.
        t.announcement(ann("v/c/1", Some(8000), false));
        assert_eq!(t.state.current, Some(8000));
    }

    #[test]
    fn stopped_pipelines_stop_counting_and_new_writers_are_picked_up() {
        let mut t = Tracker::new(TrackerState::default(), 0, true, feeders(&["v/c/0"]));
        t.announcement(ann("v/c/0", Some(5000), false));
        // A writer of a running pipeline that writes here by name joins when heard.
        t.set_feeders(Feeders {
            expected: ["v/c/0".to_string()].into(),
            running: ["v".to_string(), "r".to_string()].into(),
        });
        t.announcement(ann("r/x/0", Some(7000), false));
        assert_eq!(t.state.current, Some(5000));
        // v is undeployed: only r counts now.
        t.set_feeders(Feeders {
            expected: BTreeSet::new(),
            running: ["r".to_string()].into(),
        });
        assert_eq!(t.state.current, Some(7000));
    }

    #[test]
    fn idle_timeout_moves_a_source_with_the_clock_from_its_newest_record() {
        let mut t = Tracker::new(TrackerState::default(), 1000, true, Feeders::default());
        assert!(
            !t.idle(true),
            "an empty source partition is not idle by itself: its producers may be starting"
        );
        assert!(!t.silence(9_999, 10_000));
        assert!(!t.idle(true));
        assert!(
            !t.silence(60_000, 10_000),
            "nothing seen: nothing to move from"
        );
        assert!(t.idle(true), "empty for the whole idle timeout: idle");
        assert!(!t.idle(false));
        t.record(50_000);
        assert!(!t.idle(true));
        assert!(!t.silence(9_999, 10_000));
        assert!(t.silence(10_000, 10_000));
        assert_eq!(t.state.current, Some(59_000));
        assert_eq!(t.to_hand_any(), Some(59_000));
        // Records that arrive after are judged against it.
        assert_eq!(t.record(58_000), Verdict::Late(59_000));
        assert_eq!(t.record(61_000), Verdict::OnTime);
        assert_eq!(t.state.current, Some(60_000));
    }

    proptest! {
        /// Two writers each emit records in event-time order, with at most `lateness` of
        /// disorder, and announce after their data; interleaved any way, no record is late and
        /// the watermark never passes a record still to come from either writer.
        #[test]
        fn well_behaved_writers_are_never_late(
            a in proptest::collection::vec(0i64..50, 1..40),
            b in proptest::collection::vec(0i64..50, 1..40),
            order in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let mut t = Tracker::new(TrackerState::default(), 0, true, feeders(&["w/a/0", "w/b/0"]));
            // Each writer's stream: (timestamp, then its announcement = running max).
            let stream = |steps: &[i64], name: &str| {
                let mut ts = 0;
                let mut items = Vec::new();
                for s in steps {
                    ts += s;
                    items.push((Some(ts), None));
                    items.push((None, Some(ann(name, Some(ts), false))));
                }
                items
            };
            let (sa, sb) = (stream(&a, "w/a/0"), stream(&b, "w/b/0"));
            let (mut i, mut j) = (0, 0);
            let mut pick = order.into_iter();
            while i < sa.len() || j < sb.len() {
                let from_a = j >= sb.len() || (i < sa.len() && pick.next().unwrap_or(true));
                let item = if from_a { i += 1; &sa[i - 1] } else { j += 1; &sb[j - 1] };
                match item {
                    (Some(ts), _) => prop_assert_eq!(t.record(*ts), Verdict::OnTime),
                    (_, Some(an)) => t.announcement(an.clone()),
                    _ => unreachable!(),
                }
            }
            let last = |s: &Vec<(Option<i64>, Option<Announcement>)>| s.iter().filter_map(|x| x.0).max();
            prop_assert_eq!(t.state.current, last(&sa).min(last(&sb)));
        }

        /// The verdicts and hand-overs depend on the items alone: restoring from a saved
        /// state at any point gives the same as running straight through.
        #[test]
        fn restoring_mid_way_changes_nothing(
            ts in proptest::collection::vec(0i64..5000, 1..100),
            cut in 0usize..100,
        ) {
            let run = |t: &mut Tracker, xs: &[i64], out: &mut Vec<(Verdict, Option<i64>)>| {
                for &x in xs {
                    let v = t.record(x);
                    let h = t.to_hand();
                    if let Some(h) = h { t.handed(h); }
                    out.push((v, h));
                }
            };
            let mut straight = Vec::new();
            run(&mut Tracker::new(TrackerState::default(), 700, true, Feeders::default()), &ts, &mut straight);
            let cut = cut.min(ts.len());
            let mut resumed = Vec::new();
            let mut t = Tracker::new(TrackerState::default(), 700, true, Feeders::default());
            run(&mut t, &ts[..cut], &mut resumed);
            let saved = t.state.clone();
            let mut t = Tracker::new(saved, 700, true, Feeders::default());
            run(&mut t, &ts[cut..], &mut resumed);
            prop_assert_eq!(straight, resumed);
        }
    }
}
