//! Test plugin for back pressure: keeps every record after spinning `spin` iterations of
//! busy work on it (config `{"spin": 200000}`; default 0), so a test can make a pipeline
//! slower than its producers and then, by reloading with `spin = 0`, let it catch up.

use serde::Deserialize;
use sluice_plugin::{Config, Outcome, Plugin, Record};

#[derive(Deserialize)]
pub struct Slow {
    #[serde(default)]
    spin: u64,
}

impl Plugin for Slow {
    type State = ();

    fn init(config: &Config) -> Result<Self, String> {
        config.parse()
    }

    fn process(&mut self, _: &mut (), _: &Record) -> Outcome {
        let mut x = 0u64;
        for i in 0..self.spin {
            // Opaque to the optimiser, so the work is really done.
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(x);
        Outcome::Keep
    }
}

sluice_plugin::export_plugin!(Slow);

#[cfg(test)]
mod tests {
    use super::Slow;
    use sluice_plugin::testing::Harness;
    use sluice_plugin::{Outcome, Record};

    #[test]
    fn keeps_everything_whatever_the_spin() {
        for cfg in ["{}", r#"{"spin": 1000}"#] {
            let mut h = Harness::<Slow>::new(cfg).unwrap();
            assert_eq!(h.process(Record::new("x")), Outcome::Keep);
        }
        assert!(Harness::<Slow>::new(r#"{"spin": "lots"}"#).is_err());
    }
}
