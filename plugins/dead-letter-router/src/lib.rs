//! The standard `dead-letter-router` plugin: checks that each record's value is a JSON object
//! with the required fields, of the required types. An invalid record goes to the pipeline's
//! dead-letter topic with a precise reason ("field 'ts' is a string, expected integer"); a
//! valid one goes to the default output, or, with `route_field`, to the topic that
//! `[config.routes]` names for the field's value.
//!
//! ```toml
//! [config]
//! route_field = "event"
//! default_route = "output"     # or a topic, "drop" or "dead_letter"
//! [config.required]
//! ts = "integer"
//! event = "string"
//! "user.id" = "string|integer"
//! [config.optional]
//! note = "string|null"
//! [config.routes]
//! click = "clicks-valid"
//! view = "views"
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;
use sluice_plugin::json::{self, Fields, Kind, RawValue};
use sluice_plugin::{Config, Outcome, Plugin, Record};

/// A set of JSON types a field may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Types(u8);

const STRING: u8 = 1;
const NUMBER: u8 = 2;
const INTEGER: u8 = 4;
const BOOLEAN: u8 = 8;
const OBJECT: u8 = 16;
const ARRAY: u8 = 32;
const NULL: u8 = 64;
const ANY: u8 = 127;

const TYPE_NAMES: [(&str, u8); 8] = [
    ("string", STRING),
    ("number", NUMBER),
    ("integer", INTEGER),
    ("boolean", BOOLEAN),
    ("object", OBJECT),
    ("array", ARRAY),
    ("null", NULL),
    ("any", ANY),
];

impl Types {
    fn parse(spec: &str) -> Result<Types, String> {
        let mut bits = 0;
        for name in spec.split('|').map(str::trim) {
            match TYPE_NAMES.iter().find(|(n, _)| *n == name) {
                Some((_, b)) => bits |= b,
                None => {
                    return Err(format!(
                        "unknown type '{name}' (expected string, number, integer, boolean, object, array, null or any; several joined with |)"
                    ))
                }
            }
        }
        Ok(Types(bits))
    }

    /// "integer or null".
    fn describe(self) -> String {
        if self.0 == ANY {
            return "any".into();
        }
        let names: Vec<&str> = TYPE_NAMES[..7]
            .iter()
            .filter(|(_, b)| self.0 & b != 0)
            // "number" already includes the integers.
            .filter(|(n, _)| !(*n == "integer" && self.0 & NUMBER != 0))
            .map(|(n, _)| *n)
            .collect();
        names.join(" or ")
    }

    /// `None` when `raw` has one of these types, else why not.
    fn check(self, raw: &RawValue) -> Option<String> {
        let kind = json::kind(raw);
        let bit = match kind {
            Kind::String => STRING,
            Kind::Boolean => BOOLEAN,
            Kind::Object => OBJECT,
            Kind::Array => ARRAY,
            Kind::Null => NULL,
            Kind::Number => {
                if self.0 & NUMBER != 0 {
                    return None;
                }
                match integral(raw.get()) {
                    true => INTEGER,
                    false if self.0 & INTEGER != 0 => {
                        return Some(format!(
                            "is a number with a fraction ({}), expected {}",
                            raw.get(),
                            self.describe()
                        ))
                    }
                    false => NUMBER,
                }
            }
        };
        if self.0 & bit != 0 {
            None
        } else {
            Some(format!("is {}, expected {}", kind.name(), self.describe()))
        }
    }
}

/// Whether a JSON number is a whole number (1, -3, 1.0 and 1e3 are; 1.5 is not).
fn integral(text: &str) -> bool {
    let t = text.trim();
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return true;
    }
    t.parse::<f64>()
        .is_ok_and(|f| f.is_finite() && f.fract() == 0.0)
}

#[derive(Debug, Clone)]
struct Rule {
    path: String,
    field: usize,
    types: Types,
    required: bool,
}

/// Where a valid record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Output,
    Drop,
    DeadLetter,
    Topic(String),
}

impl Route {
    fn parse(key: &str, v: &Value) -> Result<Route, String> {
        let s = v.as_str().ok_or_else(|| {
            format!(
                "'{key}' must be a topic name, \"output\", \"drop\" or \"dead_letter\", got {v}"
            )
        })?;
        Ok(match s {
            "output" => Route::Output,
            "drop" => Route::Drop,
            "dead_letter" => Route::DeadLetter,
            t if valid_topic(t) => Route::Topic(t.to_string()),
            t => {
                return Err(format!(
                    "'{key}': '{t}' is not a valid topic name (letters, digits, '.', '_', '-'; at most 249)"
                ))
            }
        })
    }
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub struct DeadLetterRouter {
    fields: Fields,
    rules: Vec<Rule>,
    route_field: Option<(String, usize)>,
    routes: BTreeMap<String, Route>,
    default_route: Route,
}

fn rules(fields: &mut Fields, key: &str, v: &Value, required: bool) -> Result<Vec<Rule>, String> {
    let mut out = Vec::new();
    let mut add = |path: &str, spec: &Value| -> Result<(), String> {
        let types = match spec {
            Value::String(s) => {
                Types::parse(s).map_err(|e| format!("'{key}' field '{path}': {e}"))?
            }
            other => {
                let want = "the type must be a string like \"integer\"";
                return Err(format!("'{key}' field '{path}': {want}, got {other}"));
            }
        };
        let field = fields.add(path).map_err(|e| format!("'{key}': {e}"))?;
        out.push(Rule {
            path: path.to_string(),
            field,
            types,
            required,
        });
        Ok(())
    };
    match v {
        Value::Object(m) => {
            for (path, spec) in m {
                add(path, spec)?;
            }
        }
        // `required = ["ts", "event"]`: present, of any type.
        Value::Array(a) if required => {
            for p in a {
                let path = p
                    .as_str()
                    .ok_or_else(|| format!("'{key}' must list field paths (strings), not {p}"))?;
                add(path, &Value::String("any".into()))?;
            }
        }
        other => {
            return Err(format!(
                "'{key}' must be a table of field = \"type\", got {other}"
            ))
        }
    }
    Ok(out)
}

impl DeadLetterRouter {
    pub fn from_json(config: &Value) -> Result<Self, String> {
        let table = config
            .as_object()
            .ok_or("the config must be a table".to_string())?;
        let mut r = DeadLetterRouter {
            fields: Fields::new(),
            rules: Vec::new(),
            route_field: None,
            routes: BTreeMap::new(),
            default_route: Route::Output,
        };
        for (key, v) in table {
            match key.as_str() {
                "required" => r.rules.extend(rules(&mut r.fields, key, v, true)?),
                "optional" => r.rules.extend(rules(&mut r.fields, key, v, false)?),
                "route_field" => {
                    let path = v
                        .as_str()
                        .ok_or_else(|| format!("'route_field' must be a field path, got {v}"))?;
                    let i = r
                        .fields
                        .add(path)
                        .map_err(|e| format!("'route_field': {e}"))?;
                    r.route_field = Some((path.to_string(), i));
                }
                "routes" => {
                    let m = v.as_object().ok_or_else(|| {
                        format!("'routes' must be a table of value = \"topic\", got {v}")
                    })?;
                    for (value, target) in m {
                        let route = Route::parse(&format!("routes.{value}"), target)?;
                        r.routes.insert(value.clone(), route);
                    }
                }
                "default_route" => r.default_route = Route::parse(key, v)?,
                other => {
                    return Err(format!(
                        "unknown key '{other}' (expected required, optional, route_field, routes, default_route)"
                    ))
                }
            }
        }
        // Reasons list problems by field path, required and optional fields alike.
        r.rules.sort_by(|a, b| a.path.cmp(&b.path));
        if !r.routes.is_empty() && r.route_field.is_none() {
            return Err(
                "'routes' needs 'route_field': the field whose value picks the route".into(),
            );
        }
        Ok(r)
    }

    /// The reason a value is invalid, or where it goes.
    pub fn decide(&self, value: Option<&[u8]>) -> Result<&Route, String> {
        let found = self.fields.read(value).map_err(|e| e.to_string())?;
        let problems: Vec<String> = self
            .rules
            .iter()
            .filter_map(|rule| match found[rule.field] {
                None if rule.required => Some(format!("field '{}' is missing", rule.path)),
                None => None,
                Some(raw) => rule
                    .types
                    .check(raw)
                    .map(|why| format!("field '{}' {why}", rule.path)),
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let Some((path, i)) = &self.route_field else {
            return match &self.default_route {
                Route::DeadLetter => Err("routed to the dead-letter topic (default_route)".into()),
                route => Ok(route),
            };
        };
        let key = found[*i].and_then(|raw| match json::kind(raw) {
            Kind::String => json::as_str(raw),
            Kind::Number | Kind::Boolean => Some(Cow::Borrowed(raw.get().trim())),
            _ => None,
        });
        let routed = key.as_ref().and_then(|k| self.routes.get(k.as_ref()));
        match (routed.unwrap_or(&self.default_route), key) {
            (Route::DeadLetter, Some(k)) if routed.is_some() => {
                Err(format!("{path} '{k}' is routed to the dead-letter topic"))
            }
            (Route::DeadLetter, Some(k)) => Err(format!("no route for {path} '{k}'")),
            (Route::DeadLetter, None) => Err(format!(
                "no route: field '{path}' is missing or not a string, number or boolean"
            )),
            (route, _) => Ok(route),
        }
    }
}

impl Plugin for DeadLetterRouter {
    type State = ();

    fn init(config: &Config) -> Result<Self, String> {
        let v: Value = config.parse()?;
        DeadLetterRouter::from_json(&v)
    }

    fn process(&mut self, _: &mut (), record: &Record) -> Outcome {
        match self.decide(record.value()) {
            Ok(Route::Output) => Outcome::Keep,
            Ok(Route::Drop) => Outcome::Drop,
            Ok(Route::Topic(t)) => Outcome::emit(record.to_output().to_topic(t.as_str())),
            // decide() turns a dead-letter route into its reason.
            Ok(Route::DeadLetter) => Outcome::fail("routed to the dead-letter topic"),
            Err(why) => Outcome::Fail(why),
        }
    }
}

sluice_plugin::export_plugin!(DeadLetterRouter);

#[cfg(test)]
mod tests;
