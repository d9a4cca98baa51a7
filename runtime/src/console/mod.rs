//! The web console: a read-only view of the broker served by the admin API.
//!
//! Two halves. The page itself (`assets/`: one HTML file, one script, one style sheet, built
//! into the binary, no front-end build step) is served at `/` to anyone who reaches the admin
//! listener: it holds no data. Everything it shows comes from the JSON routes below, which
//! sit behind the admin API's token like the rest of `/v1/` (the page asks for the token and
//! sends it as `Authorization: Bearer`). Every route only reads: the console changes nothing.
//!
//! - `GET /v1/overview`: the broker at a glance.
//! - `GET /v1/topics`, `GET /v1/topics/NAME`: partitions, watermarks, sizes, configs.
//! - `GET /v1/topics/NAME/messages?partition=P&offset=O|time=MS&max=N`: records, decoded.
//!   A negative offset counts back from the end. Reads as `read_uncommitted` does.
//! - `GET /v1/groups`, `GET /v1/groups/ID`: consumer, classic and share groups, members,
//!   committed offsets and lag per partition.
//! - `GET /v1/pipelines/NAME/dead-letters?max=N`: the newest dead letters with their reasons.
//! - `GET /v1/history`: the last minutes of rates and gauges ([`history`]).

pub mod history;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::broker::{Broker, Partition};
use crate::metrics::JSON;
use crate::plugin::PluginHost;

pub use history::History;

/// Records one message-browser request returns at most.
const MAX_RECORDS: usize = 500;
/// Bytes one message-browser request reads from the log at most.
const MAX_READ_BYTES: usize = 8 << 20;
/// A key or value is cut to this many bytes for display.
const MAX_SHOWN: usize = 64 << 10;

/// The page's files: (content type, body) for a path, if it is one of them.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/console" | "/console/" => Some((
            "text/html; charset=utf-8",
            include_str!("assets/index.html"),
        )),
        "/console/console.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("assets/console.js"),
        )),
        "/console/console.css" => Some((
            "text/css; charset=utf-8",
            include_str!("assets/console.css"),
        )),
        _ => None,
    }
}

type Reply = (&'static str, &'static str, String);

fn ok(v: Value) -> Reply {
    ("200 OK", JSON, v.to_string())
}

fn not_found(what: String) -> Reply {
    ("404 Not Found", JSON, json!({ "error": what }).to_string())
}

fn bad(what: String) -> Reply {
    (
        "400 Bad Request",
        JSON,
        json!({ "error": what }).to_string(),
    )
}

/// The console's routes; `None` for any other path, which the admin API then answers.
pub fn api(
    method: &str,
    path: &str,
    query: &str,
    broker: &Broker,
    host: Option<&PluginHost>,
    history: Option<&History>,
) -> Option<Reply> {
    if method != "GET" {
        return None;
    }
    let param = |k: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(a, _)| *a == k)
            .map(|(_, v)| percent_decode(v))
    };
    let parts: Vec<String> = path
        .trim_start_matches("/v1/")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    Some(match parts.as_slice() {
        ["overview"] => ok(overview(broker, host)),
        ["history"] => ok(json!({
            "interval_ms": history::INTERVAL.as_millis() as u64,
            "points": history.map(History::points).unwrap_or_default(),
        })),
        ["topics"] => ok(topics(broker)),
        ["topics", name] => match topic(broker, name) {
            Some(v) => ok(v),
            None => not_found(format!("no topic '{name}'")),
        },
        ["topics", name, "messages"] => {
            let Some(t) = broker.topic(name) else {
                return Some(not_found(format!("no topic '{name}'")));
            };
            let partition = match param("partition").map(|p| p.parse::<i32>()) {
                None => 0,
                Some(Ok(p)) => p,
                Some(Err(_)) => return Some(bad("partition must be a number".into())),
            };
            let Some(p) = t.partition(partition) else {
                return Some(not_found(format!("'{name}' has no partition {partition}")));
            };
            let max = param("max")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(50)
                .clamp(1, MAX_RECORDS);
            let from = match (param("offset"), param("time")) {
                (_, Some(t)) => match t.parse::<i64>() {
                    Ok(ms) => From::Time(ms),
                    Err(_) => return Some(bad("time must be milliseconds since the epoch".into())),
                },
                (Some(o), None) => match o.parse::<i64>() {
                    Ok(o) => From::Offset(o),
                    Err(_) => return Some(bad("offset must be a number".into())),
                },
                (None, None) => From::Offset(-(max as i64)),
            };
            match messages(p, from, max) {
                Ok(mut v) => {
                    v["topic"] = json!(name);
                    ok(v)
                }
                Err(e) => (
                    "500 Internal Server Error",
                    JSON,
                    json!({ "error": e }).to_string(),
                ),
            }
        }
        ["groups"] => ok(groups(broker)),
        ["groups", id] => match group(broker, id) {
            Some(v) => ok(v),
            None => not_found(format!("no group '{id}'")),
        },
        ["pipelines", name, "dead-letters"] => {
            let Some(h) = host else {
                return Some(not_found("no plugin host runs in this broker".into()));
            };
            let Some(st) = h.status().into_iter().find(|s| s.name == *name) else {
                return Some(not_found(format!("no pipeline '{name}'")));
            };
            let max = param("max")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(50)
                .clamp(1, MAX_RECORDS);
            ok(dead_letters(broker, st.dead_letter.as_deref(), max))
        }
        _ => return None,
    })
}

fn overview(broker: &Broker, host: Option<&PluginHost>) -> Value {
    let topics = broker.topics();
    let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
    let size: u64 = topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.size_bytes())
        .sum();
    json!({
        "cluster_id": broker.cluster_id,
        "node_id": broker.config.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": broker.config.data_dir.display().to_string(),
        "topics": topics.len(),
        "partitions": partitions,
        "size_bytes": size,
        "groups": broker.groups.list().len(),
        "pipelines": host.map(|h| h.status().len()),
        "connections": broker.metrics.connections.load(Ordering::Relaxed),
        "requests": broker.metrics.requests_total(),
    })
}

fn topics(broker: &Broker) -> Value {
    let list: Vec<Value> = broker
        .topics()
        .iter()
        .map(|t| {
            let (mut records, mut size) = (0i64, 0u64);
            for p in &t.partitions {
                let wm = p.watermarks();
                records += wm.high - wm.log_start;
                size += p.size_bytes();
            }
            json!({
                "name": t.name,
                "partitions": t.partitions.len(),
                // Offsets in the log: records, except where compaction or control batches
                // left gaps.
                "records": records,
                "size_bytes": size,
                "compacted": t.compacted(),
                "records_in": t.stats.records_in.load(Ordering::Relaxed),
                "records_out": t.stats.records_out.load(Ordering::Relaxed),
            })
        })
        .collect();
    Value::Array(list)
}

fn topic(broker: &Broker, name: &str) -> Option<Value> {
    let t = broker.topic(name)?;
    let partitions: Vec<Value> = t
        .partitions
        .iter()
        .map(|p| {
            let wm = p.watermarks();
            json!({
                "partition": p.index,
                "log_start": wm.log_start,
                "high_watermark": wm.high,
                "last_stable": wm.stable,
                "size_bytes": p.size_bytes(),
                "max_timestamp": p.max_timestamp(),
            })
        })
        .collect();
    let configs: Vec<Value> = t
        .config()
        .entries(&broker.defaults())
        .into_iter()
        .map(|e| json!({ "name": e.key, "value": e.value, "default": e.is_default, "doc": e.doc }))
        .collect();
    Some(json!({
        "name": t.name,
        "id": t.id.to_string(),
        "partitions": partitions,
        "configs": configs,
    }))
}

enum From {
    /// At this offset, or (negative) this many records before the end.
    Offset(i64),
    /// The first record stamped at or after this time (ms).
    Time(i64),
}

/// A key or value for display: text when it is UTF-8, base64 otherwise, cut at
/// [`MAX_SHOWN`].
fn shown(b: &Option<Bytes>) -> Value {
    let Some(b) = b else { return Value::Null };
    let cut = &b[..b.len().min(MAX_SHOWN)];
    let truncated = b.len() > MAX_SHOWN;
    match std::str::from_utf8(cut) {
        Ok(s) => json!({ "text": s, "size": b.len(), "truncated": truncated }),
        Err(_) => json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(cut),
            "size": b.len(),
            "truncated": truncated,
        }),
    }
}

fn record_json(r: &crate::records::Record) -> Value {
    json!({
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": shown(&r.key),
        "value": shown(&r.value),
        "headers": r.headers.iter().map(|(k, v)| json!({
            "key": String::from_utf8_lossy(k),
            "value": shown(v),
        })).collect::<Vec<_>>(),
    })
}

/// Up to `max` records of partition `p` from `from`, skipping control batches. A batch that
/// cannot be decoded is reported in place of its records, so one bad batch hides nothing
/// else.
fn messages(p: &Partition, from: From, max: usize) -> Result<Value, String> {
    let wm = p.watermarks();
    let start = match from {
        From::Offset(o) if o < 0 => (wm.high + o).max(wm.log_start),
        From::Offset(o) => o.max(wm.log_start),
        From::Time(ms) => p
            .offset_for_time(ms)
            .map_err(|e| e.to_string())?
            .map_or(wm.high, |(o, _)| o),
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut next = start;
    let mut read = 0usize;
    'reading: while out.len() < max && next < wm.high && read < MAX_READ_BYTES {
        let (_, slice) = p.plan_read(next).map_err(|e| e.to_string())?;
        let Some(slice) = slice else { break };
        let bytes = slice
            .read(MAX_READ_BYTES - read, true)
            .map_err(|e| e.to_string())?;
        if bytes.is_empty() {
            break;
        }
        read += bytes.len();
        let before = next;
        for b in crate::records::decode_each(bytes).map_err(|e| e.to_string())? {
            if b.last_offset < next {
                continue;
            }
            if !b.control {
                match b.records {
                    Ok(records) => {
                        for r in &records {
                            if r.offset < next {
                                continue;
                            }
                            if out.len() >= max {
                                break 'reading;
                            }
                            out.push(record_json(r));
                            next = r.offset + 1;
                        }
                    }
                    Err(e) => problems.push(json!({
                        "base_offset": b.base_offset,
                        "last_offset": b.last_offset,
                        "error": e.to_string(),
                    })),
                }
            }
            next = next.max(b.last_offset + 1);
        }
        if next <= before {
            break;
        }
    }
    Ok(json!({
        "partition": p.index,
        "log_start": wm.log_start,
        "high_watermark": wm.high,
        "start": start,
        "next": next,
        "records": out,
        "undecodable": problems,
    }))
}

/// Per partition of a group: (topic, partition) → (committed, owner).
type Rows = BTreeMap<(String, i32), (Option<i64>, Option<String>)>;

fn end_offset(broker: &Broker, topic: &str, partition: i32) -> Option<i64> {
    Some(broker.topic(topic)?.partition(partition)?.watermarks().high)
}

/// The rows of a group's offsets table, with each partition's log end and lag.
fn rows_json(broker: &Broker, rows: &Rows) -> (Vec<Value>, i64) {
    let mut total = 0;
    let list = rows
        .iter()
        .map(|((t, p), (committed, owner))| {
            let end = end_offset(broker, t, *p);
            let lag = match (committed, end) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                _ => None,
            };
            total += lag.unwrap_or(0);
            json!({
                "topic": t, "partition": p, "committed": committed,
                "end": end, "lag": lag, "owner": owner,
            })
        })
        .collect();
    (list, total)
}

/// The offsets table and members of group `id`.
fn group_rows(broker: &Broker, id: &str) -> Option<(Value, Rows, Vec<Value>)> {
    let mut rows = Rows::new();
    if let Some(v) = broker.groups.describe(id) {
        for (t, p, c) in broker.groups.committed_all(id) {
            rows.insert((t, p), (Some(c.offset), None));
        }
        let mut members = Vec::new();
        for (i, (member, instance, client, host, _, assignment)) in v.members.iter().enumerate() {
            let mut assigned: Vec<(String, i32)> = match v.owned.get(i) {
                Some(owned) => owned
                    .iter()
                    .filter_map(|(tid, ps)| Some((broker.topic_by_id(*tid)?.name.clone(), ps)))
                    .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
                    .collect(),
                None => crate::cli::group::assigned(assignment.clone()),
            };
            assigned.sort();
            for tp in &assigned {
                rows.entry(tp.clone()).or_insert((None, None)).1 = Some(member.clone());
            }
            members.push(json!({
                "id": member, "instance_id": instance, "client_id": client, "host": host,
                "assigned": assigned.iter().map(|(t, p)| format!("{t}-{p}")).collect::<Vec<_>>(),
            }));
        }
        let head = json!({
            "id": v.id, "type": v.group_type, "state": v.state,
            "protocol_type": v.protocol_type, "protocol": v.protocol,
        });
        return Some((head, rows, members));
    }
    let (share_members, parts) = broker.groups.share_detail(id)?;
    for (tid, p, spso) in parts {
        if let Some(t) = broker.topic_by_id(tid) {
            rows.insert((t.name.clone(), p), (Some(spso), None));
        }
    }
    let members = share_members
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "instance_id": null, "client_id": m.client_id, "host": m.client_host,
                "assigned": m.subscribed,
            })
        })
        .collect();
    let state = if share_members.is_empty() {
        "Empty"
    } else {
        "Stable"
    };
    let head = json!({ "id": id, "type": "share", "state": state, "protocol_type": "share", "protocol": "" });
    Some((head, rows, members))
}

fn groups(broker: &Broker) -> Value {
    let list: Vec<Value> = broker
        .groups
        .list()
        .iter()
        .filter_map(|g| {
            let (mut head, rows, members) = group_rows(broker, &g.id)?;
            let (_, lag) = rows_json(broker, &rows);
            head["members"] = json!(members.len());
            head["lag"] = json!(lag);
            Some(head)
        })
        .collect();
    Value::Array(list)
}

fn group(broker: &Broker, id: &str) -> Option<Value> {
    let (mut head, rows, members) = group_rows(broker, id)?;
    let (offsets, lag) = rows_json(broker, &rows);
    head["members"] = json!(members);
    head["offsets"] = json!(offsets);
    head["lag"] = json!(lag);
    Some(head)
}

/// The newest `max` records of a pipeline's dead-letter topic, newest first, each with the
/// reason and origin its headers carry.
fn dead_letters(broker: &Broker, topic: Option<&str>, max: usize) -> Value {
    let Some(name) = topic else {
        return json!({ "topic": null, "records": [] });
    };
    let Some(t) = broker.topic(name) else {
        // Created with the first dead letter.
        return json!({ "topic": name, "records": [] });
    };
    let mut all = Vec::new();
    for p in &t.partitions {
        if let Ok(v) = messages(p, From::Offset(-(max as i64)), max) {
            for mut r in v["records"].as_array().cloned().unwrap_or_default() {
                r["partition"] = json!(p.index);
                let header = |k: &str| {
                    r["headers"]
                        .as_array()
                        .and_then(|hs| hs.iter().find(|h| h["key"] == k))
                        .and_then(|h| h["value"]["text"].as_str())
                        .map(str::to_string)
                };
                let origin = json!({
                    "reason": header("sluice.dlq.reason"),
                    "topic": header("sluice.dlq.topic"),
                    "partition": header("sluice.dlq.partition").and_then(|s| s.parse::<i32>().ok()),
                    "offset": header("sluice.dlq.offset").and_then(|s| s.parse::<i64>().ok()),
                    "attempts": header("sluice.dlq.attempts").and_then(|s| s.parse::<u32>().ok()),
                    "plugin_version": header("sluice.dlq.plugin.version"),
                });
                r["dead_letter"] = origin;
                all.push(r);
            }
        }
    }
    all.sort_by_key(|r| std::cmp::Reverse(r["timestamp"].as_i64().unwrap_or(0)));
    all.truncate(max);
    json!({ "topic": name, "records": all })
}

/// `%XX` escapes (and `+` as a space, as forms send it) decoded; invalid escapes kept as
/// they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
