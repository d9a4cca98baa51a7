//! The aggregates of one key in one window, and the numbers they are made of.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A number from the input, kept exact while it is an integer: a sum of integers stays an
/// integer (written `30`, not `30.0`) unless it overflows i64.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Num {
    Int(i64),
    Float(f64),
}

// By hand rather than `untagged`, which buffers every value (and weighs on the wasm size).
impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(i64::try_from(v).map_or(Num::Float(v as f64), Num::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                Ok(Num::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub fn plus(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => match a.checked_add(b) {
                Some(s) => Num::Int(s),
                None => Num::Float(a as f64 + b as f64),
            },
            _ => Num::Float(self.as_f64() + other.as_f64()),
        }
    }

    fn cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            _ => self
                .as_f64()
                .partial_cmp(&other.as_f64())
                .unwrap_or(Ordering::Equal),
        }
    }
}

/// Which aggregates besides the count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub sum: bool,
    pub min: bool,
    pub max: bool,
}

impl Wanted {
    pub fn parse(list: &[String]) -> Result<Wanted, String> {
        let mut w = Wanted::default();
        for a in list {
            match a.as_str() {
                "count" => {}
                "sum" => w.sum = true,
                "min" => w.min = true,
                "max" => w.max = true,
                other => {
                    return Err(format!(
                        "'aggregates': unknown aggregate '{other}' (expected count, sum, min, max)"
                    ))
                }
            }
        }
        Ok(w)
    }

    pub fn any_value(self) -> bool {
        self.sum || self.min || self.max
    }
}

/// Count, and sum, min and max when wanted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<Num>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Num>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Num>,
}

fn pick(a: Option<Num>, b: Option<Num>, keep: Ordering) -> Option<Num> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.cmp(x) == keep { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Agg {
    /// Adds one record (its value when sum, min or max is wanted).
    pub fn add(&mut self, wanted: Wanted, value: Option<Num>) {
        self.count += 1;
        if let Some(v) = value {
            if wanted.sum {
                self.sum = Some(self.sum.map_or(v, |s| s.plus(v)));
            }
            if wanted.min {
                self.min = pick(self.min, Some(v), Ordering::Less);
            }
            if wanted.max {
                self.max = pick(self.max, Some(v), Ordering::Greater);
            }
        }
    }

    /// Combines another aggregate of the same key and window into this one.
    pub fn merge(&mut self, other: &Agg) {
        self.count += other.count;
        self.sum = match (self.sum, other.sum) {
            (Some(a), Some(b)) => Some(a.plus(b)),
            (a, b) => a.or(b),
        };
        self.min = pick(self.min, other.min, Ordering::Less);
        self.max = pick(self.max, other.max, Ordering::Greater);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_stay_exact_and_floats_mix_in() {
        assert_eq!(Num::Int(2).plus(Num::Int(3)), Num::Int(5));
        assert_eq!(Num::Int(2).plus(Num::Float(0.5)), Num::Float(2.5));
        assert_eq!(
            Num::Int(i64::MAX).plus(Num::Int(1)),
            Num::Float(i64::MAX as f64 + 1.0)
        );
        let w = Wanted {
            sum: true,
            min: true,
            max: true,
        };
        let mut a = Agg::default();
        a.add(w, Some(Num::Int(5)));
        a.add(w, Some(Num::Float(-1.5)));
        let mut b = Agg::default();
        b.add(w, Some(Num::Int(7)));
        a.merge(&b);
        assert_eq!(
            a,
            Agg {
                count: 3,
                sum: Some(Num::Float(10.5)),
                min: Some(Num::Float(-1.5)),
                max: Some(Num::Int(7)),
            }
        );
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(text, r#"{"count":3,"sum":10.5,"min":-1.5,"max":7}"#);
        assert_eq!(serde_json::from_str::<Agg>(&text).unwrap(), a);
        let big: Num = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(big, Num::Float(18446744073709551615.0));
    }
}
