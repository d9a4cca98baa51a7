//! Test plugin with state: counts records per key (key-less records count under "") and
//! emits "KEY=COUNT" for each record, keyed like the input. The counts survive snapshot and
//! restore, so a restarted or reloaded instance continues where the last checkpoint was.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_plugin::{Config, Outcome, Output, Plugin, Record};

#[derive(Default, Serialize, Deserialize)]
pub struct Counts {
    per_key: BTreeMap<String, u64>,
}

pub struct Counter;

impl Plugin for Counter {
    type State = Counts;

    fn init(_: &Config) -> Result<Self, String> {
        Ok(Counter)
    }

    fn process(&mut self, state: &mut Counts, record: &Record) -> Outcome {
        let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
        let n = state.per_key.entry(key.clone()).or_default();
        *n += 1;
        let mut out = Output::value(format!("{key}={n}"));
        out.key = record.key().map(<[u8]>::to_vec);
        Outcome::emit(out)
    }
}

sluice_plugin::export_plugin!(Counter);

#[cfg(test)]
mod tests {
    use super::Counter;
    use sluice_plugin::testing::Harness;
    use sluice_plugin::{Outcome, Record};

    fn value(o: Outcome) -> String {
        match o {
            Outcome::Emit(v) => String::from_utf8(v[0].value.clone().unwrap()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn counts_survive_snapshot_and_restore() {
        let mut h = Harness::<Counter>::new("{}").unwrap();
        h.process(Record::new("x").with_key("a"));
        h.process(Record::new("x").with_key("a"));
        h.process(Record::new("x"));
        let snap = h.snapshot();

        let mut h2 = Harness::<Counter>::new("{}").unwrap();
        h2.restore(&snap).unwrap();
        assert_eq!(value(h2.process(Record::new("x").with_key("a"))), "a=3");
        assert_eq!(value(h2.process(Record::new("x"))), "=2");
    }

    #[test]
    fn empty_snapshot_is_a_fresh_start_and_garbage_is_refused() {
        let mut h = Harness::<Counter>::new("{}").unwrap();
        h.restore(&[]).unwrap();
        assert_eq!(value(h.process(Record::new("x").with_key("a"))), "a=1");
        assert!(h.restore(b"\xc1 not msgpack").is_err());
    }
}
