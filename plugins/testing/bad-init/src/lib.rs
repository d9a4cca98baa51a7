//! Test plugin whose init always refuses: "refusing config: CONFIG".

use sluice_plugin::{Config, Outcome, Plugin, Record};

pub struct BadInit;

impl Plugin for BadInit {
    type State = ();

    fn init(config: &Config) -> Result<Self, String> {
        Err(format!("refusing config: {}", config.as_str()))
    }

    fn process(&mut self, _: &mut (), _: &Record) -> Outcome {
        Outcome::Keep
    }
}

sluice_plugin::export_plugin!(BadInit);
