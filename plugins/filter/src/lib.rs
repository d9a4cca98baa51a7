//! The standard `filter` plugin: keeps the records whose JSON value matches every condition
//! of `[config.where]` and drops the others; `project` narrows what is kept to some fields.
//!
//! ```toml
//! [config]
//! project = ["ad", "ts"]           # optional: emit only these fields
//! on_invalid = "dead_letter"       # or "drop": what becomes of values that are not JSON objects
//! [config.where]
//! event = { eq = "click" }
//! price = { gte = 10, lt = 100 }
//! "user.country" = { in = ["DE", "FR"] }
//! campaign = { exists = true }
//! ```
//!
//! Operators: `eq`, `ne` (any JSON value; numbers compare by value, so 10 equals 10.0), `in`,
//! `not_in` (lists), `gt`, `gte`, `lt`, `lte` (a number, or a string compared byte-wise),
//! `exists` (bool), `prefix` (string). A missing field fails every operator except
//! `exists = false`, `ne` and `not_in` (as in MongoDB). JSON `null` is a present field.

use std::cmp::Ordering;

use serde_json::Value;
use sluice_plugin::json::{Fields, Invalid, RawValue};
use sluice_plugin::{Config, Outcome, Plugin, Record};

/// What to do with a record whose value is not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    Drop,
    DeadLetter,
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    /// The field compared with the operand must give one of these orderings.
    Cmp(&'static [Ordering], Operand),
    Exists(bool),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Num(serde_json::Number),
    Str(String),
}

#[derive(Debug, Clone)]
struct Condition {
    field: usize,
    ops: Vec<Op>,
}

/// One projected field: a name and either a path index (a leaf) or nested fields.
#[derive(Debug, Clone)]
struct Projected {
    name: String,
    leaf: Option<usize>,
    children: Vec<Projected>,
}

pub struct Filter {
    fields: Fields,
    conditions: Vec<Condition>,
    project: Option<Vec<Projected>>,
    on_invalid: OnInvalid,
}

const OPERATORS: &str = "eq, ne, in, not_in, gt, gte, lt, lte, exists, prefix";

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

fn parse_op(path: &str, name: &str, v: &Value) -> Result<Op, String> {
    let wrong = |expected: &str| {
        format!(
            "condition on '{path}': '{name}' expects {expected}, got {}",
            type_name(v)
        )
    };
    let list = |v: &Value| match v {
        Value::Array(a) => Ok(a.clone()),
        _ => Err(wrong("a list of values")),
    };
    let operand = |v: &Value| match v {
        Value::Number(n) => Ok(Operand::Num(n.clone())),
        Value::String(s) => Ok(Operand::Str(s.clone())),
        _ => Err(wrong("a number or a string")),
    };
    use Ordering::*;
    Ok(match name {
        "eq" => Op::Eq(v.clone()),
        "ne" => Op::Ne(v.clone()),
        "in" => Op::In(list(v)?),
        "not_in" => Op::NotIn(list(v)?),
        "gt" => Op::Cmp(&[Greater], operand(v)?),
        "gte" => Op::Cmp(&[Greater, Equal], operand(v)?),
        "lt" => Op::Cmp(&[Less], operand(v)?),
        "lte" => Op::Cmp(&[Less, Equal], operand(v)?),
        "exists" => Op::Exists(v.as_bool().ok_or_else(|| wrong("true or false"))?),
        "prefix" => Op::Prefix(v.as_str().ok_or_else(|| wrong("a string"))?.to_string()),
        other => {
            return Err(format!(
                "condition on '{path}': unknown operator '{other}' (expected one of {OPERATORS})"
            ))
        }
    })
}

fn project_into(tree: &mut Vec<Projected>, path: &str, leaf: usize) {
    let mut level = tree;
    let mut names = path.split('.').peekable();
    while let Some(name) = names.next() {
        let i = match level.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                level.push(Projected {
                    name: name.to_string(),
                    leaf: None,
                    children: Vec::new(),
                });
                level.len() - 1
            }
        };
        if names.peek().is_none() {
            level[i].leaf = Some(leaf);
        }
        level = &mut level[i].children;
    }
}

impl Filter {
    pub fn from_json(config: &Value) -> Result<Filter, String> {
        let table = config
            .as_object()
            .ok_or("the config must be a table".to_string())?;
        let mut f = Filter {
            fields: Fields::new(),
            conditions: Vec::new(),
            project: None,
            on_invalid: OnInvalid::DeadLetter,
        };
        for (key, v) in table {
            match key.as_str() {
                "where" => {
                    let conds = v.as_object().ok_or_else(|| {
                        format!(
                            "'where' must be a table of field = {{ operator = value }}, got {}",
                            type_name(v)
                        )
                    })?;
                    for (path, ops) in conds {
                        let field = f.fields.add(path).map_err(|e| format!("'where': {e}"))?;
                        let ops = ops.as_object().ok_or_else(|| {
                            format!(
                                "condition on '{path}': expected a table of operators like {{ eq = \"x\" }}, got {}",
                                type_name(ops)
                            )
                        })?;
                        if ops.is_empty() {
                            return Err(format!(
                                "condition on '{path}': no operator (expected one of {OPERATORS})"
                            ));
                        }
                        let ops = ops
                            .iter()
                            .map(|(name, v)| parse_op(path, name, v))
                            .collect::<Result<Vec<_>, _>>()?;
                        if ops.len() > 1 && ops.contains(&Op::Exists(false)) {
                            return Err(format!(
                                "condition on '{path}': 'exists = false' cannot be combined with other operators"
                            ));
                        }
                        f.conditions.push(Condition { field, ops });
                    }
                }
                "project" => {
                    let list = v.as_array().ok_or_else(|| {
                        format!(
                            "'project' must be a list of field paths, got {}",
                            type_name(v)
                        )
                    })?;
                    let mut tree = Vec::new();
                    for p in list {
                        let p = p.as_str().ok_or_else(|| {
                            format!(
                                "'project' must list field paths (strings), not {}",
                                type_name(p)
                            )
                        })?;
                        let leaf = f.fields.add(p).map_err(|e| format!("'project': {e}"))?;
                        project_into(&mut tree, p, leaf);
                    }
                    f.project = Some(tree);
                }
                "on_invalid" => {
                    f.on_invalid = match v.as_str() {
                        Some("drop") => OnInvalid::Drop,
                        Some("dead_letter") => OnInvalid::DeadLetter,
                        _ => {
                            return Err(format!(
                                "'on_invalid' must be \"drop\" or \"dead_letter\", got {v}"
                            ))
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown key '{other}' (expected where, project, on_invalid)"
                    ))
                }
            }
        }
        Ok(f)
    }

    /// Whether the record matches, and the value to emit instead of it (with `project`).
    pub fn decide(&self, value: Option<&[u8]>) -> Result<Option<Option<Vec<u8>>>, Invalid> {
        let found = self.fields.read(value)?;
        if !self.conditions.iter().all(|c| c.matches(found[c.field])) {
            return Ok(None);
        }
        Ok(Some(self.project.as_ref().map(|tree| {
            let mut out = Vec::with_capacity(value.map_or(0, <[u8]>::len));
            write_projection(&mut out, tree, &found);
            out
        })))
    }
}

impl Condition {
    fn matches(&self, raw: Option<&RawValue>) -> bool {
        // Parsed once for all of this field's operators, and only if one needs the value.
        let needs_value = self.ops.iter().any(|op| !matches!(op, Op::Exists(_)));
        let value: Option<Value> = match raw {
            Some(r) if needs_value => match serde_json::from_str(r.get()) {
                Ok(v) => Some(v),
                Err(_) => return false,
            },
            _ => None,
        };
        self.ops.iter().all(|op| match (op, &value) {
            (Op::Exists(want), _) => raw.is_some() == *want,
            (Op::Ne(_) | Op::NotIn(_), None) => true,
            (_, None) => false,
            (Op::Eq(x), Some(v)) => json_eq(v, x),
            (Op::Ne(x), Some(v)) => !json_eq(v, x),
            (Op::In(xs), Some(v)) => xs.iter().any(|x| json_eq(v, x)),
            (Op::NotIn(xs), Some(v)) => !xs.iter().any(|x| json_eq(v, x)),
            (Op::Cmp(want, operand), Some(v)) => {
                let ord = match (v, operand) {
                    (Value::Number(a), Operand::Num(b)) => num_cmp(a, b),
                    (Value::String(a), Operand::Str(b)) => Some(a.as_str().cmp(b)),
                    _ => None,
                };
                ord.is_some_and(|o| want.contains(&o))
            }
            (Op::Prefix(p), Some(v)) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        })
    }
}

/// Numbers compare by value (exactly for integers), so 10 and 10.0 are equal.
fn num_cmp(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Writes the projected fields as one object, in `project`'s order, each value as it was in
/// the input. Absent fields are left out (a nested object with none of its fields too).
fn write_projection(out: &mut Vec<u8>, tree: &[Projected], found: &[Option<&RawValue>]) {
    out.push(b'{');
    let mut first = true;
    for p in tree {
        let present = |p: &Projected| p.leaf.is_some_and(|l| found[l].is_some());
        if !present(p) && !any_present(&p.children, found) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        // A field name is a string: serialising it cannot fail.
        serde_json::to_writer(&mut *out, &p.name).expect("a string serialises");
        out.push(b':');
        match p.leaf.and_then(|l| found[l]) {
            Some(raw) => out.extend_from_slice(raw.get().as_bytes()),
            None => write_projection(out, &p.children, found),
        }
    }
    out.push(b'}');
}

fn any_present(tree: &[Projected], found: &[Option<&RawValue>]) -> bool {
    tree.iter()
        .any(|p| p.leaf.is_some_and(|l| found[l].is_some()) || any_present(&p.children, found))
}

impl Plugin for Filter {
    type State = ();

    fn init(config: &Config) -> Result<Self, String> {
        let v: Value = config.parse()?;
        Filter::from_json(&v)
    }

    fn process(&mut self, _: &mut (), record: &Record) -> Outcome {
        match self.decide(record.value()) {
            Ok(None) => Outcome::Drop,
            Ok(Some(None)) => Outcome::Keep,
            Ok(Some(Some(projected))) => Outcome::emit(record.to_output().with_value(projected)),
            Err(why) => match self.on_invalid {
                OnInvalid::Drop => Outcome::Drop,
                OnInvalid::DeadLetter => Outcome::fail(why),
            },
        }
    }
}

sluice_plugin::export_plugin!(Filter);

#[cfg(test)]
mod tests;
