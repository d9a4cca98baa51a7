//! Test plugin for hot reloads: emits "TAG:VALUE", with TAG from config `{"tag": "v2"}`
//! (default "v1"), and counts the records it has seen in its state, reported in a header
//! "seen" so a test can tell that state carried over from the previous version, and a header
//! "task" = "PIPELINE:TOPIC/PARTITION" from the host's task info.

use serde::{Deserialize, Serialize};
use sluice_plugin::{Config, Outcome, Plugin, Record};

#[derive(Deserialize)]
pub struct Version {
    #[serde(default = "v1")]
    tag: String,
}

fn v1() -> String {
    "v1".to_string()
}

#[derive(Default, Serialize, Deserialize)]
pub struct Seen {
    seen: u64,
}

impl Plugin for Version {
    type State = Seen;

    fn init(config: &Config) -> Result<Self, String> {
        config.parse()
    }

    fn process(&mut self, state: &mut Seen, record: &Record) -> Outcome {
        state.seen += 1;
        let mut value = format!("{}:", self.tag).into_bytes();
        value.extend_from_slice(record.value().unwrap_or_default());
        Outcome::emit(
            record
                .to_output()
                .with_value(value)
                .header("seen", state.seen.to_string())
                // Where the host says this instance runs (WIT host.task).
                .header("task", {
                    let t = sluice_plugin::task();
                    format!("{}:{}", t.pipeline, t.source())
                }),
        )
    }
}

sluice_plugin::export_plugin!(Version);

#[cfg(test)]
mod tests {
    use super::Version;
    use sluice_plugin::testing::Harness;
    use sluice_plugin::{Outcome, Output, Record};

    #[test]
    fn tags_and_carries_state_across_versions() {
        let mut old = Harness::<Version>::new("{}").unwrap();
        assert_eq!(
            old.process(Record::new("x")),
            Outcome::emit(
                Output::value("v1:x")
                    .header("seen", "1")
                    .header("task", "test:test/0")
            )
        );
        let mut new = Harness::<Version>::new(r#"{"tag":"v2"}"#).unwrap();
        new.restore(&old.snapshot()).unwrap();
        assert_eq!(
            new.process(Record::new("y")),
            Outcome::emit(
                Output::value("v2:y")
                    .header("seen", "2")
                    .header("task", "test:test/0")
            )
        );
    }
}
