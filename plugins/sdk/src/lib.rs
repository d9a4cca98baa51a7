//! Write sluice processing plugins in Rust.
//!
//! A plugin sees the records of one input partition, in offset order, and says what becomes of
//! each: keep it, drop it, emit other records instead, or send it to the dead-letter topic.
//!
//! The smallest plugins are one macro call:
//!
//! ```
//! sluice_plugin::filter!(|r| r.value_str().map_or(false, |v| v.contains("buy")));
//! ```
//!
//! ```
//! sluice_plugin::map!(|r| Some(r.to_output().with_value(r.value_str()?.to_uppercase())));
//! ```
//!
//! Plugins with configuration or state implement [`Plugin`] and export it with
//! [`export_plugin!`]. The state is a plain serde type: the SDK snapshots it as MessagePack at
//! the host's checkpoints and restores it after a restart or a hot reload, so a new version of
//! the plugin reads what the old one wrote (add fields with `#[serde(default)]`).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sluice_plugin::{Config, Outcome, Output, Plugin, Record};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Seen { count: u64 }
//!
//! struct Numbered;
//!
//! impl Plugin for Numbered {
//!     type State = Seen;
//!     fn init(_config: &Config) -> Result<Self, String> { Ok(Numbered) }
//!     fn process(&mut self, state: &mut Seen, record: &Record) -> Outcome {
//!         state.count += 1;
//!         Outcome::emit(record.to_output().header("n", state.count.to_string()))
//!     }
//! }
//!
//! sluice_plugin::export_plugin!(Numbered);
//! ```
//!
//! Everything but the macros' wasm exports also compiles for the host, so plugin logic is unit
//! tested with plain `cargo test` through [`testing::Harness`].
//!
//! [`json::Fields`] reads a few fields of a JSON value without decoding the whole of it.
//!
//! # Two rules for exactly-once output
//!
//! The host saves a checkpoint (input position, the state's snapshot, and how many records the
//! plugin has emitted so far) now and then, not after every record. After a crash it restores
//! the last checkpoint and feeds the records since then through `process` again, and skips as
//! many of the re-emitted records as it finds already written: it deduplicates by count, not
//! by content. Hence:
//!
//! 1. **[`Plugin::process`] must depend only on the state and the record.** No clock, no
//!    randomness, no hash-map iteration order, nothing kept in `self` that changes as records
//!    pass: `self` is built again by `init` from the config after a restart or a reload, and
//!    is never snapshotted. A replay that emits other records, or another number of them,
//!    silently loses or doubles output.
//!
//!    The same holds for [`Plugin::on_watermark`]: the host hands the watermark over at
//!    points of the input that do not depend on timing, and again at the same points in a
//!    replay. Closing event-time windows belongs there.
//! 2. **[`Plugin::tick`] may read the clock (it is given `now_ms`), but may change state that
//!    `process` depends on only in a tick that also emits output.** The host checkpoints right
//!    after a tick only when the tick emitted something; after a tick that emitted nothing, a
//!    crash rolls the state back to before it while the records processed since are replayed
//!    against the rolled-back state, so they may come out differently than the first time.
//!    (Closing a time window that emits its result is fine; quietly expiring entries that
//!    `process` reads is not.)

// The generated bindings name the SDK by its crate name, which must also resolve inside it.
extern crate self as sluice_plugin;

mod config;
pub mod json;
pub mod log;
mod record;
mod runtime;
mod task;
pub mod testing;

pub use config::Config;
pub use record::{Headers, Outcome, Output, Record};
pub use runtime::{IntoOutcome, Plugin};
#[cfg(not(target_arch = "wasm32"))]
pub use task::set_native_task;
pub use task::{pause_ticks, task, Task};

#[doc(hidden)]
pub mod bindings {
    // The WIT lives once, at the repository's wit/; `sluice plugin new` writes a copy at the
    // same relative place when it vendors this crate.
    wit_bindgen::generate!({
        path: "../../wit",
        world: "processor",
        pub_export_macro: true,
        runtime_path: "::sluice_plugin::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::Slot;
    pub use wit_bindgen;

    pub fn filter<F: Fn(&crate::Record) -> bool>(f: F, r: &crate::Record) -> crate::Outcome {
        crate::Outcome::keep_if(f(r))
    }

    pub fn map<O: crate::IntoOutcome, F: Fn(&crate::Record) -> O>(
        f: F,
        r: &crate::Record,
    ) -> crate::Outcome {
        f(r).into_outcome()
    }
}

/// Exports a type implementing [`Plugin`] as the component's `processor` world.
///
/// Use it once per crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct __SluiceExport;

            ::std::thread_local! {
                static SLOT: $crate::__private::Slot<$plugin> = $crate::__private::Slot::new();
            }

            impl $crate::bindings::Guest for __SluiceExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    SLOT.with(|s| s.init(config))
                }
                fn process(
                    batch: $crate::bindings::Batch,
                ) -> ::std::vec::Vec<$crate::bindings::Outcome> {
                    SLOT.with(|s| s.process(batch))
                }
                fn tick(now_ms: i64) -> ::std::vec::Vec<$crate::bindings::OutputRecord> {
                    SLOT.with(|s| s.tick(now_ms))
                }
                fn on_watermark(
                    watermark_ms: i64,
                ) -> ::std::vec::Vec<$crate::bindings::OutputRecord> {
                    SLOT.with(|s| s.on_watermark(watermark_ms))
                }
                fn snapshot() -> ::std::vec::Vec<u8> {
                    SLOT.with(|s| s.snapshot())
                }
                fn restore(
                    state: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    SLOT.with(|s| s.restore(&state))
                }
            }

            $crate::bindings::export! { __SluiceExport with_types_in $crate::bindings }
        };
    };
}

/// A stateless plugin that keeps the records for which the closure returns true and drops the
/// others.
///
/// `filter!(|r| ...)` exports it directly; `filter!(Name, |r| ...)` also names the plugin type,
/// so unit tests can drive it with [`testing::Harness`].
#[macro_export]
macro_rules! filter {
    ($name:ident, $f:expr) => {
        pub struct $name;

        impl $crate::Plugin for $name {
            type State = ();
            fn init(_: &$crate::Config) -> ::std::result::Result<Self, ::std::string::String> {
                ::std::result::Result::Ok($name)
            }
            fn process(&mut self, _: &mut (), record: &$crate::Record) -> $crate::Outcome {
                $crate::__private::filter($f, record)
            }
        }

        $crate::export_plugin!($name);
    };
    ($f:expr) => {
        $crate::filter!(SluiceFilter, $f);
    };
}

/// A stateless plugin that turns each record into what the closure returns: an [`Output`]
/// (emitted in the record's place), `Option<Output>` (`None` drops the record), `Vec<Output>`,
/// an [`Outcome`], or a `Result` of any of these (`Err` sends the record to the dead-letter
/// topic with the error as reason). See [`IntoOutcome`].
///
/// Like [`filter!`], `map!(Name, |r| ...)` also names the plugin type.
#[macro_export]
macro_rules! map {
    ($name:ident, $f:expr) => {
        pub struct $name;

        impl $crate::Plugin for $name {
            type State = ();
            fn init(_: &$crate::Config) -> ::std::result::Result<Self, ::std::string::String> {
                ::std::result::Result::Ok($name)
            }
            fn process(&mut self, _: &mut (), record: &$crate::Record) -> $crate::Outcome {
                $crate::__private::map($f, record)
            }
        }

        $crate::export_plugin!($name);
    };
    ($f:expr) => {
        $crate::map!(SluiceMap, $f);
    };
}
