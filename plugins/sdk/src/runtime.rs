use std::cell::RefCell;
use std::fmt::Display;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bindings::sluice::plugin::types as wit;
use crate::{Config, Outcome, Output, Record};

/// A processing plugin. The host runs one instance per input partition.
pub trait Plugin: Sized + 'static {
    /// What the plugin remembers between records, snapshotted at the host's checkpoints and
    /// restored after a restart or a hot reload. `()` for stateless plugins.
    ///
    /// A new version of the plugin must be able to read the old one's state: add fields with
    /// `#[serde(default)]`, don't rename or retype them.
    type State: Default + Serialize + DeserializeOwned;

    /// Reads the config. An error refuses it: the pipeline (or this new version of it) does
    /// not start, and the host shows the message.
    fn init(config: &Config) -> Result<Self, String>;

    /// Decides one record's fate; records arrive in offset order.
    ///
    /// Must depend only on `state` and `record`: after a crash the host replays records from
    /// a checkpoint and expects the same output (see the crate docs, rule 1).
    fn process(&mut self, state: &mut Self::State, record: &Record) -> Outcome;

    /// Called periodically with the host's wall clock (ms since the Unix epoch), for work that
    /// must not wait for the next record, such as closing a time window.
    ///
    /// State that `process` reads may change here only in a call that returns output: only
    /// then does the host checkpoint after it (see the crate docs, rule 2).
    ///
    /// Call [`pause_ticks`](crate::pause_ticks) when there is nothing to do until more input
    /// (no window open): the host then stops ticking this instance until its next record.
    /// The default does nothing and pauses, so a plugin without time-based work costs no CPU
    /// while its input is idle.
    fn tick(&mut self, state: &mut Self::State, now_ms: i64) -> Vec<Output> {
        let _ = (state, now_ms);
        crate::pause_ticks();
        Vec::new()
    }

    /// Event time has reached `watermark_ms`: the host promises (when the pipeline's manifest
    /// has an `[event_time]` table) that no record with an earlier timestamp will reach
    /// [`process`](Plugin::process) from now on. Close windows here; the output is written
    /// like `process` output, and a record without a timestamp gets `watermark_ms`.
    ///
    /// The host computes the watermark from the data (never from the clock unless the
    /// manifest asks for `idle_timeout_ms`) and calls this at points of the input that do not
    /// depend on timing, so like `process` it must depend only on `state` and the watermark
    /// (rule 1): a replay calls it again at the same records.
    fn on_watermark(&mut self, state: &mut Self::State, watermark_ms: i64) -> Vec<Output> {
        let _ = (state, watermark_ms);
        Vec::new()
    }
}

/// What a [`map!`](crate::map) closure may return.
pub trait IntoOutcome {
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

impl IntoOutcome for Output {
    fn into_outcome(self) -> Outcome {
        Outcome::emit(self)
    }
}

/// `None` drops the record.
impl IntoOutcome for Option<Output> {
    fn into_outcome(self) -> Outcome {
        match self {
            Some(o) => Outcome::emit(o),
            None => Outcome::Drop,
        }
    }
}

impl IntoOutcome for Vec<Output> {
    fn into_outcome(self) -> Outcome {
        Outcome::Emit(self)
    }
}

impl IntoOutcome for bool {
    fn into_outcome(self) -> Outcome {
        Outcome::keep_if(self)
    }
}

/// `Err` sends the record to the dead-letter topic with the error as reason.
impl<T: IntoOutcome, E: Display> IntoOutcome for Result<T, E> {
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(t) => t.into_outcome(),
            Err(e) => Outcome::fail(e),
        }
    }
}

/// A plugin and its state: the logic behind the exports, free of wasm types so that
/// [`testing::Harness`](crate::testing::Harness) runs exactly what the host would.
pub(crate) struct Instance<P: Plugin> {
    pub(crate) plugin: Option<P>,
    pub(crate) state: P::State,
}

impl<P: Plugin> Instance<P> {
    pub(crate) fn new() -> Self {
        Instance {
            plugin: None,
            state: P::State::default(),
        }
    }

    pub(crate) fn init(&mut self, config: &Config) -> Result<(), String> {
        self.plugin = Some(P::init(config)?);
        Ok(())
    }

    fn plugin(&mut self) -> (&mut P, &mut P::State) {
        match self.plugin.as_mut() {
            Some(p) => (p, &mut self.state),
            // The host always calls init first; anything else is a host bug worth a trap.
            None => panic!("sluice plugin called before init"),
        }
    }

    pub(crate) fn process(&mut self, record: &Record) -> Outcome {
        let (p, s) = self.plugin();
        p.process(s, record)
    }

    pub(crate) fn tick(&mut self, now_ms: i64) -> Vec<Output> {
        let (p, s) = self.plugin();
        p.tick(s, now_ms)
    }

    pub(crate) fn on_watermark(&mut self, watermark_ms: i64) -> Vec<Output> {
        let (p, s) = self.plugin();
        p.on_watermark(s, watermark_ms)
    }

    pub(crate) fn snapshot(&self) -> Vec<u8> {
        // Named fields, so that a later version of the plugin with more (defaulted) fields
        // still reads this snapshot.
        match rmp_serde::to_vec_named(&self.state) {
            Ok(bytes) => bytes,
            // Losing state silently would be worse than stopping the task.
            Err(e) => panic!("cannot snapshot plugin state: {e}"),
        }
    }

    pub(crate) fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.state = if bytes.is_empty() {
            P::State::default()
        } else {
            rmp_serde::from_slice(bytes).map_err(|e| format!("cannot restore plugin state: {e}"))?
        };
        Ok(())
    }
}

/// The per-instance storage behind [`export_plugin!`](crate::export_plugin): converts the
/// WIT types and forwards to [`Instance`].
#[doc(hidden)]
pub struct Slot<P: Plugin>(RefCell<Instance<P>>);

impl<P: Plugin> Default for Slot<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Plugin> Slot<P> {
    pub fn new() -> Self {
        Slot(RefCell::new(Instance::new()))
    }

    pub fn init(&self, config: String) -> Result<(), String> {
        install_panic_hook();
        self.0.borrow_mut().init(&Config::new(config))
    }

    pub fn process(&self, batch: wit::Batch) -> Vec<wit::Outcome> {
        let mut inst = self.0.borrow_mut();
        let topic: Rc<str> = Rc::from(batch.topic);
        batch
            .records
            .into_iter()
            .map(|r| {
                let record = Record::from_parts(
                    topic.clone(),
                    batch.partition,
                    r.offset,
                    r.timestamp,
                    r.key,
                    r.value,
                    r.headers,
                );
                to_wit_outcome(inst.process(&record))
            })
            .collect()
    }

    pub fn tick(&self, now_ms: i64) -> Vec<wit::OutputRecord> {
        let outputs = self.0.borrow_mut().tick(now_ms);
        outputs.into_iter().map(to_wit_output).collect()
    }

    pub fn on_watermark(&self, watermark_ms: i64) -> Vec<wit::OutputRecord> {
        let outputs = self.0.borrow_mut().on_watermark(watermark_ms);
        outputs.into_iter().map(to_wit_output).collect()
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.0.borrow().snapshot()
    }

    pub fn restore(&self, state: &[u8]) -> Result<(), String> {
        self.0.borrow_mut().restore(state)
    }
}

fn to_wit_output(o: Output) -> wit::OutputRecord {
    wit::OutputRecord {
        topic: o.topic,
        key: o.key,
        value: o.value,
        headers: o.headers,
        timestamp: o.timestamp,
    }
}

fn to_wit_outcome(o: Outcome) -> wit::Outcome {
    match o {
        Outcome::Keep => wit::Outcome::Keep,
        Outcome::Drop => wit::Outcome::Drop,
        Outcome::Emit(v) => wit::Outcome::Replace(v.into_iter().map(to_wit_output).collect()),
        Outcome::Fail(r) => wit::Outcome::Fail(r),
        Outcome::Retry(r) => wit::Outcome::Retry(r),
    }
}

/// A panic traps the instance and the host sees only "unreachable"; logging the message
/// first tells the user which line and why.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            // One line: "plugin panicked at src/lib.rs:9:26: message".
            crate::log::error(&format!("plugin {info}").replace('\n', " "));
        }))
    });
}
