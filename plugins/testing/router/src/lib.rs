//! Test plugin: routes by the value's prefix. Config `{"a": "topic-a", "b": "topic-b"}`
//! (both optional). A value "a:..." (or JSON `{"route": "a", ...}`) goes to the topic
//! configured for "a", likewise "b"; everything else, and routes without a configured topic,
//! go to the default output unchanged.

use serde::Deserialize;
use sluice_plugin::{Config, Outcome, Plugin, Record};

#[derive(Deserialize)]
pub struct Router {
    a: Option<String>,
    b: Option<String>,
}

#[derive(Deserialize)]
struct Routed {
    route: String,
}

impl Router {
    fn route(&self, record: &Record) -> Option<&str> {
        let route = match record.json::<Routed>() {
            Ok(r) => r.route,
            Err(_) => record.value_str()?.split_once(':')?.0.to_string(),
        };
        match route.as_str() {
            "a" => self.a.as_deref(),
            "b" => self.b.as_deref(),
            _ => None,
        }
    }
}

impl Plugin for Router {
    type State = ();

    fn init(config: &Config) -> Result<Self, String> {
        config.parse()
    }

    fn process(&mut self, _: &mut (), record: &Record) -> Outcome {
        match self.route(record) {
            Some(topic) => Outcome::emit(record.to_output().to_topic(topic)),
            None => Outcome::Keep,
        }
    }
}

sluice_plugin::export_plugin!(Router);

#[cfg(test)]
mod tests {
    use super::Router;
    use sluice_plugin::testing::Harness;
    use sluice_plugin::{Outcome, Record};

    #[test]
    fn routes_by_prefix_or_json() {
        let mut h = Harness::<Router>::new(r#"{"a": "topic-a", "b": "topic-b"}"#).unwrap();
        let to = |o: Outcome| match o {
            Outcome::Emit(v) => v[0].topic.clone(),
            _ => None,
        };
        assert_eq!(
            to(h.process(Record::new("a:1"))).as_deref(),
            Some("topic-a")
        );
        assert_eq!(
            to(h.process(Record::new("b:2"))).as_deref(),
            Some("topic-b")
        );
        assert_eq!(
            to(h.process(Record::new(r#"{"route":"b","x":1}"#))).as_deref(),
            Some("topic-b")
        );
        assert_eq!(h.process(Record::new("c:3")), Outcome::Keep);
        assert_eq!(h.process(Record::new("plain")), Outcome::Keep);
    }

    #[test]
    fn refuses_bad_config() {
        assert!(Harness::<Router>::new(r#"{"a": 1}"#).is_err());
    }
}
