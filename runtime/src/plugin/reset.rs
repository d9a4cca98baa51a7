//! `sluice plugin reset`: where a reset moves each pipeline it touches.
//!
//! A chain of pipelines connected by topics (a stage writing partials, a stage merging them)
//! cannot be rewound one pipeline at a time while it runs: between two resets the upstream
//! stage keeps writing (records, or only its watermark as the wall clock moves an idle
//! source along), and the downstream stage, already rewound, takes that in. Its watermark
//! then stands at the live run's and everything the replay sends it is late; or it counts
//! the live records and then the replayed ones again. So a reset with `downstream` plans the
//! whole chain at once, the way Kafka Streams' reset tool treats an application: the
//! pipeline named goes to the target, every pipeline reading (transitively) what it writes
//! goes to the *end* of the topics the chain rewrites, as they stand while all of them are
//! stopped, so it reads exactly what the replay writes; and the target for any other input.
//! The host stops every pipeline of the plan before taking a position and starts them after.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// Where a reset moves a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

/// Parses `earliest`, `latest`, an offset, or a time: milliseconds since the epoch written
/// `@MS`, or an RFC 3339 UTC time such as `2026-11-26T04:00:00Z`.
pub fn parse_reset_to(s: &str) -> Result<ResetTo, String> {
    match s {
        "earliest" => return Ok(ResetTo::Earliest),
        "latest" => return Ok(ResetTo::Latest),
        _ => {}
    }
    if let Some(ms) = s.strip_prefix('@') {
        return ms
            .parse()
            .map(ResetTo::Timestamp)
            .map_err(|_| format!("'{s}': expected @MILLISECONDS"));
    }
    if let Ok(o) = s.parse::<i64>() {
        return if o >= 0 {
            Ok(ResetTo::Offset(o))
        } else {
            Err(format!("'{s}': an offset cannot be negative"))
        };
    }
    parse_rfc3339_utc(s)
        .map(ResetTo::Timestamp)
        .ok_or_else(|| format!("'{s}' is not earliest, latest, an offset, @MILLISECONDS or a UTC time like 2026-11-26T04:00:00Z"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to milliseconds since the epoch.
fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, se) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms)
}

impl fmt::Display for ResetTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetTo::Earliest => f.write_str("earliest"),
            ResetTo::Latest => f.write_str("latest"),
            ResetTo::Offset(o) => write!(f, "{o}"),
            ResetTo::Timestamp(ms) => write!(f, "@{ms}"),
        }
    }
}

impl Serialize for ResetTo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a reset needs to know of a pipeline: what it reads and where its output goes.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    pub inputs: Vec<String>,
    pub output: Option<String>,
}

/// One pipeline's part of a reset: where each of its inputs goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub pipeline: String,
    pub inputs: Vec<(String, ResetTo)>,
}

/// The moves of a reset of `root` to `to` among the pipelines `flows`: `root` alone, or with
/// `downstream` every pipeline that reads what the chain from `root` writes, in the order
/// they were reached (root first).
pub fn plan(
    flows: &BTreeMap<String, Flow>,
    root: &str,
    to: ResetTo,
    downstream: bool,
) -> Result<Vec<Move>, String> {
    let Some(first) = flows.get(root) else {
        return Err(format!("no running pipeline named '{root}'"));
    };
    let mut order = vec![root.to_string()];
    let mut chain = BTreeSet::from([root.to_string()]);
    let mut rewritten = BTreeSet::new();
    if downstream {
        let mut i = 0;
        while i < order.len() {
            let Some(out) = flows.get(&order[i]).and_then(|f| f.output.clone()) else {
                i += 1;
                continue;
            };
            rewritten.insert(out.clone());
            for (name, f) in flows {
                if f.inputs.contains(&out) && chain.insert(name.clone()) {
                    order.push(name.clone());
                }
            }
            i += 1;
        }
    }
    let mut moves = vec![Move {
        pipeline: root.to_string(),
        inputs: first.inputs.iter().map(|t| (t.clone(), to)).collect(),
    }];
    for name in &order[1..] {
        let Some(f) = flows.get(name) else { continue };
        let mut inputs = Vec::with_capacity(f.inputs.len());
        for t in &f.inputs {
            if rewritten.contains(t) {
                inputs.push((t.clone(), ResetTo::Latest));
            } else if let ResetTo::Offset(_) = to {
                // An offset is a position in one topic; it means nothing in another.
                return Err(format!(
                    "pipeline '{name}' downstream of '{root}' also reads {t}: an offset cannot place it; reset to earliest, latest or a time"
                ));
            } else {
                inputs.push((t.clone(), to));
            }
        }
        moves.push(Move {
            pipeline: name.clone(),
            inputs,
        });
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(list: &[(&str, &[&str], Option<&str>)]) -> BTreeMap<String, Flow> {
        list.iter()
            .map(|(name, inputs, output)| {
                (
                    name.to_string(),
                    Flow {
                        inputs: inputs.iter().map(|s| s.to_string()).collect(),
                        output: output.map(str::to_string),
                    },
                )
            })
            .collect()
    }

    fn inputs(m: &Move) -> Vec<(&str, ResetTo)> {
        m.inputs.iter().map(|(t, to)| (t.as_str(), *to)).collect()
    }

    #[test]
    fn reset_targets() {
        assert_eq!(parse_reset_to("earliest"), Ok(ResetTo::Earliest));
        assert_eq!(parse_reset_to("latest"), Ok(ResetTo::Latest));
        assert_eq!(parse_reset_to("42"), Ok(ResetTo::Offset(42)));
        assert_eq!(
            parse_reset_to("@1700000000000"),
            Ok(ResetTo::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            parse_reset_to("2023-11-14T22:13:20Z"),
            Ok(ResetTo::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            parse_reset_to("1970-01-01T00:00:01.5Z"),
            Ok(ResetTo::Timestamp(1500))
        );
        assert!(parse_reset_to("-3").is_err());
        assert!(parse_reset_to("yesterday").is_err());
        assert!(parse_reset_to("2023-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn a_reset_alone_moves_only_the_pipeline_named() {
        let f = flows(&[
            ("partials", &["clicks"], Some("partials-out")),
            ("merge", &["partials-out"], Some("counts")),
        ]);
        let p = plan(&f, "partials", ResetTo::Earliest, false).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(inputs(&p[0]), [("clicks", ResetTo::Earliest)]);
        assert!(plan(&f, "nothing", ResetTo::Earliest, false).is_err());
    }

    #[test]
    fn downstream_readers_start_where_the_replay_writes() {
        let f = flows(&[
            ("validate", &["raw"], Some("clicks")),
            ("partials", &["clicks"], Some("partials-out")),
            ("merge", &["partials-out", "ads"], Some("counts")),
            ("report", &["counts"], None),
            ("other", &["raw"], Some("elsewhere")),
        ]);
        let p = plan(&f, "partials", ResetTo::Timestamp(5), true).unwrap();
        let names: Vec<&str> = p.iter().map(|m| m.pipeline.as_str()).collect();
        assert_eq!(names, ["partials", "merge", "report"]);
        assert_eq!(inputs(&p[0]), [("clicks", ResetTo::Timestamp(5))]);
        // What the chain rewrites is read from its end; the merge's own source from the target.
        assert_eq!(
            inputs(&p[1]),
            [
                ("partials-out", ResetTo::Latest),
                ("ads", ResetTo::Timestamp(5))
            ]
        );
        assert_eq!(inputs(&p[2]), [("counts", ResetTo::Latest)]);
        // An offset cannot place the merge's other input.
        assert!(plan(&f, "partials", ResetTo::Offset(3), true).is_err());
    }

    #[test]
    fn a_cycle_is_planned_once() {
        let f = flows(&[("a", &["t1"], Some("t2")), ("b", &["t2"], Some("t1"))]);
        let p = plan(&f, "a", ResetTo::Earliest, true).unwrap();
        assert_eq!(p.len(), 2);
        // The root's inputs go where the user said, even when the chain writes them.
        assert_eq!(inputs(&p[0]), [("t1", ResetTo::Earliest)]);
        assert_eq!(inputs(&p[1]), [("t2", ResetTo::Latest)]);
    }
}
