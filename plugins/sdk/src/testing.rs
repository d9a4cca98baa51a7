//! Unit-testing plugins natively, with plain `cargo test`.

use crate::runtime::Instance;
use crate::{Config, Outcome, Output, Plugin, Record};

/// Runs a plugin the way the host does: `init` with a config, then records, ticks, snapshots
/// and restores, through the same code as the wasm exports.
///
/// ```
/// use sluice_plugin::testing::Harness;
/// use sluice_plugin::{Outcome, Record};
///
/// sluice_plugin::filter!(Buys, |r| r.value_str() == Some("buy"));
///
/// let mut h = Harness::<Buys>::new("{}").unwrap();
/// assert_eq!(h.process(Record::new("buy")), Outcome::Keep);
/// assert_eq!(h.process(Record::new("sell")), Outcome::Drop);
/// ```
pub struct Harness<P: Plugin> {
    inner: Instance<P>,
    ticks_paused: bool,
}

impl<P: Plugin> Harness<P> {
    /// Starts an instance with this JSON config; `Err` is `init`'s refusal.
    pub fn new(config: &str) -> Result<Self, String> {
        let mut inner = Instance::new();
        inner.init(&Config::new(config))?;
        Ok(Harness {
            inner,
            ticks_paused: false,
        })
    }

    pub fn process(&mut self, record: Record) -> Outcome {
        self.ticks_paused = false;
        self.inner.process(&record)
    }

    /// One outcome per record, in order, like the host's batches.
    pub fn process_all(&mut self, records: impl IntoIterator<Item = Record>) -> Vec<Outcome> {
        self.ticks_paused = false;
        records
            .into_iter()
            .map(|r| self.inner.process(&r))
            .collect()
    }

    /// Hands the plugin a watermark, as the host does between records.
    pub fn watermark(&mut self, watermark_ms: i64) -> Vec<Output> {
        self.inner.on_watermark(watermark_ms)
    }

    /// Ticks the plugin, as the host does while ticks are not paused.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Output> {
        crate::task::take_ticks_paused();
        let out = self.inner.tick(now_ms);
        self.ticks_paused = crate::task::take_ticks_paused();
        out
    }

    /// Whether the last [`tick`](Self::tick) called [`pause_ticks`](crate::pause_ticks): the
    /// host would tick this instance again only after its next record.
    pub fn ticks_paused(&self) -> bool {
        self.ticks_paused
    }

    /// The state as the host would store it at a checkpoint.
    pub fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }

    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.inner.restore(bytes)
    }

    pub fn state(&self) -> &P::State {
        &self.inner.state
    }

    pub fn plugin(&self) -> &P {
        self.inner
            .plugin
            .as_ref()
            .expect("a harness is always initialised")
    }
}
