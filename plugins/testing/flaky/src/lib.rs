//! Test plugin: a value starting with "retry" asks for a retry with reason "not yet"; the
//! rest is kept.

use sluice_plugin::Outcome;

sluice_plugin::map!(Flaky, |r| {
    if r.value().is_some_and(|v| v.starts_with(b"retry")) {
        Outcome::retry("not yet")
    } else {
        Outcome::Keep
    }
});
