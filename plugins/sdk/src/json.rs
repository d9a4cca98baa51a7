//! Reads a few fields of a JSON record value in one pass, without building the document.
//!
//! A filter or router usually looks at two or three fields of a large object; decoding it into
//! a `serde_json::Value` allocates every string, array and map of it for nothing. [`Fields`]
//! instead compiles the paths once (in `init`) and, per record, hands back each value asked
//! for as raw JSON text borrowed from the input. The rest is only checked for syntax, so an
//! invalid document is still refused, never allocated.
//!
//! Paths are dotted: `user.country` is the field `country` of the object in the field `user`
//! (so a field whose name contains a dot can't be addressed).
//!
//! ```
//! use sluice_plugin::json::{self, Fields};
//!
//! let mut fields = Fields::new();
//! let country = fields.add("user.country").unwrap();
//! let value: &[u8] = br#"{"user":{"id":7,"country":"DE"},"big":[1,2,3]}"#;
//! let found = fields.read(Some(value)).unwrap();
//! assert_eq!(found[country].and_then(json::as_str).as_deref(), Some("DE"));
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Re-exported so that plugins can name what [`Fields::read`] returns without enabling
/// serde_json's `raw_value` feature themselves.
pub use serde_json::value::RawValue;

/// A set of dotted paths, compiled into a tree of field names so that one pass over a record
/// finds them all. Build it once from the config; [`Fields::read`] it per record.
#[derive(Debug, Clone)]
pub struct Fields {
    nodes: Vec<Node>,
    leaves: usize,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: Vec<(String, usize)>,
    /// The index of the path that ends here.
    leaf: Option<usize>,
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

/// Why a value could not be read as a JSON object. Its `Display` is meant as a dead-letter
/// reason ("value is an array, not a JSON object").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The record has no value (a tombstone).
    NoValue,
    /// serde_json's message, with the line and column.
    NotJson(String),
    /// Valid JSON, but not an object: no path can match in it.
    NotObject(Kind),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NoValue => f.write_str("record has no value"),
            Invalid::NotJson(e) => write!(f, "not JSON: {e}"),
            Invalid::NotObject(k) => write!(f, "value is {}, not a JSON object", k.name()),
        }
    }
}

/// The type of a JSON value, for checking a field's type without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// With its article ("a string", "an object"), to drop into a sentence of a reason.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Boolean => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// The type of a raw JSON value, from its first character: the text is already known valid.
pub fn kind(raw: &RawValue) -> Kind {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't' | b'f') => Kind::Boolean,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

/// A raw JSON string's text, borrowed unless it has escapes to decode; `None` for other types.
pub fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get().trim();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(s).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// A JSON number, kept exact for integers: an `f64` would round ids and timestamps above 2^53.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// Written as an integer that fits an `i64`.
    Int(i64),
    /// Anything else: a fraction, an exponent, or an integer too large for `i64`.
    Float(f64),
}

/// A raw JSON number; `None` for other types.
pub fn as_number(raw: &RawValue) -> Option<Number> {
    let s = raw.get().trim();
    if kind(raw) != Kind::Number {
        return None;
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Number::Int(i));
    }
    s.parse::<f64>().ok().map(Number::Float)
}

impl Fields {
    /// No paths yet: [`Fields::read`] then only checks that the value is a JSON object.
    pub fn new() -> Self {
        Fields {
            nodes: vec![Node::default()],
            leaves: 0,
        }
    }

    /// Adds a dotted path; returns its index in what [`Fields::read`] returns (the same
    /// index again for a path already added).
    pub fn add(&mut self, path: &str) -> Result<usize, String> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!(
                "'{path}' is not a field path (names separated by single dots, like user.country)"
            ));
        }
        let mut node = 0;
        for name in path.split('.') {
            node = match self.nodes[node].children.iter().find(|(n, _)| n == name) {
                Some(&(_, child)) => child,
                None => {
                    self.nodes.push(Node::default());
                    let child = self.nodes.len() - 1;
                    self.nodes[node].children.push((name.to_string(), child));
                    child
                }
            };
        }
        Ok(*self.nodes[node].leaf.get_or_insert_with(|| {
            self.leaves += 1;
            self.leaves - 1
        }))
    }

    /// True before any path is added; a plugin with no fields to read can skip the parse.
    pub fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// Checks that `json` (a record's [`value`](crate::Record::value)) is one JSON object and
    /// returns the raw value of each path, indexed as [`Fields::add`] said (`None` where
    /// absent, including below a value that is not an object).
    pub fn read<'a>(&self, json: Option<&'a [u8]>) -> Result<Vec<Option<&'a RawValue>>, Invalid> {
        let json = json.ok_or(Invalid::NoValue)?;
        let mut out = vec![None; self.leaves];
        let mut de = serde_json::Deserializer::from_slice(json);
        let shape = NodeSeed {
            fields: self,
            node: 0,
            out: &mut out,
        }
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape))
        .map_err(|e| Invalid::NotJson(e.to_string()))?;
        match shape {
            Kind::Object => Ok(out),
            other => Err(Invalid::NotObject(other)),
        }
    }
}

struct NodeSeed<'f, 'o, 'de> {
    fields: &'f Fields,
    node: usize,
    out: &'o mut [Option<&'de RawValue>],
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_, 'de> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let node = &self.fields.nodes[self.node];
        while let Some(child) = map.next_key_seed(KeySeed(&node.children))? {
            let Some(child) = child else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let n = &self.fields.nodes[child];
            match n.leaf {
                Some(leaf) => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.out[leaf] = Some(raw);
                    if !n.children.is_empty() {
                        // A path and a longer one through it: read the longer ones from the
                        // raw text of this value.
                        let mut de = serde_json::Deserializer::from_str(raw.get());
                        NodeSeed {
                            fields: self.fields,
                            node: child,
                            out: &mut *self.out,
                        }
                        .deserialize(&mut de)
                        .map_err(serde::de::Error::custom)?;
                    }
                }
                None => {
                    map.next_value_seed(NodeSeed {
                        fields: self.fields,
                        node: child,
                        out: &mut *self.out,
                    })?;
                }
            }
        }
        Ok(Kind::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Kind::Array)
    }

    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::String)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Boolean)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
}

/// Matches an object key against a node's children without allocating: `Some(child)` or
/// `None` for a field nobody asked for.
struct KeySeed<'f>(&'f [(String, usize)]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().find(|(n, _)| n == key).map(|&(_, c)| c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a>(f: &Fields, json: &'a str) -> Result<Vec<Option<&'a str>>, Invalid> {
        f.read(Some(json.as_bytes()))
            .map(|v| v.into_iter().map(|r| r.map(RawValue::get)).collect())
    }

    #[test]
    fn reads_nested_paths_and_skips_the_rest() {
        let mut f = Fields::new();
        assert_eq!(f.add("a").unwrap(), 0);
        assert_eq!(f.add("user.country").unwrap(), 1);
        assert_eq!(f.add("user").unwrap(), 2);
        assert_eq!(f.add("a").unwrap(), 0);
        assert_eq!(f.add("missing.x").unwrap(), 3);
        let json = r#"{"z":[1,{"a":2}],"a":"x\"y","user":{"id":1,"country":"DE"},"missing":5}"#;
        assert_eq!(
            read(&f, json).unwrap(),
            vec![
                Some(r#""x\"y""#),
                Some(r#""DE""#),
                Some(r#"{"id":1,"country":"DE"}"#),
                None
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        let mut f = Fields::new();
        f.add("a").unwrap();
        assert!(matches!(read(&f, "{\"a\":1"), Err(Invalid::NotJson(_))));
        assert!(matches!(read(&f, "{\"a\":1} x"), Err(Invalid::NotJson(_))));
        assert!(matches!(read(&f, "{\"b\":[1,}"), Err(Invalid::NotJson(_))));
        assert_eq!(read(&f, "[1]"), Err(Invalid::NotObject(Kind::Array)));
        assert_eq!(read(&f, "\"s\""), Err(Invalid::NotObject(Kind::String)));
        assert_eq!(f.read(None).err(), Some(Invalid::NoValue));
        assert!(Fields::new().add("a..b").is_err());
        assert!(Fields::new().add("").is_err());
    }

    #[test]
    fn escaped_keys_and_values() {
        let mut f = Fields::new();
        f.add("k\"ey").unwrap();
        let json = r#"{"k\"ey":"a\u0041"}"#;
        let v = f.read(Some(json.as_bytes())).unwrap();
        assert_eq!(as_str(v[0].unwrap()).unwrap(), "aA");
        let n: &RawValue = serde_json::from_str("12").unwrap();
        assert_eq!(as_number(n), Some(Number::Int(12)));
        let n: &RawValue = serde_json::from_str("1.5e3").unwrap();
        assert_eq!(as_number(n), Some(Number::Float(1500.0)));
        let s: &RawValue = serde_json::from_str("\"12\"").unwrap();
        assert_eq!(as_number(s), None);
    }
}
