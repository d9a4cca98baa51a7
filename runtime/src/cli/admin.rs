//! `sluice plugin list|reset`: a client of the broker's admin API (`--admin`, default
//! 127.0.0.1:9644), the same way Redpanda's rpk talks to its admin port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::plugin::AdminConn;

/// One HTTP/1.1 request; returns the status code and body.
fn request(conn: &AdminConn, method: &str, path: &str) -> Result<(u16, String)> {
    let admin = &conn.admin;
    let mut s = TcpStream::connect(admin).with_context(|| {
        format!("cannot reach the broker's admin API at {admin} (is `sluice serve` running? set --admin)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = conn
        .admin_token
        .as_deref()
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {admin}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    // The server closes the connection after one answer; bound what we accept.
    s.take(64 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed answer from the admin API")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed status line from the admin API")?;
    Ok((status, body.to_string()))
}

#[derive(Deserialize)]
struct Partition {
    topic: String,
    partition: i32,
    next_offset: i64,
    high_watermark: i64,
    lag: i64,
    #[serde(default)]
    event_time_watermark: Option<i64>,
}

#[derive(Deserialize)]
struct Pipeline {
    name: String,
    status: String,
    version: Option<String>,
    inputs: Vec<String>,
    output: Option<String>,
    records_in: u64,
    records_out: u64,
    dead_lettered: u64,
    retried: u64,
    traps: u64,
    #[serde(default)]
    late: u64,
    #[serde(default)]
    undecodable: u64,
    last_error: Option<String>,
    #[serde(default)]
    last_error_at_ms: Option<i64>,
    partitions: Vec<Partition>,
}

/// A duration in the largest whole unit: "40 s", "3 min", "2 h", "5 d".
fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

pub fn list(admin: &AdminConn, out: super::Output) -> Result<()> {
    let (status, body) = request(admin, "GET", "/v1/pipelines")?;
    if status != 200 {
        bail!("{}", error_of(&body));
    }
    if out.json() {
        let v: serde_json::Value =
            serde_json::from_str(&body).context("unexpected answer from the admin API")?;
        super::print_json(&v);
        return Ok(());
    }
    let pipelines: Vec<Pipeline> =
        serde_json::from_str(&body).context("unexpected answer from the admin API")?;
    if pipelines.is_empty() {
        println!(
            "no pipelines (drop NAME.toml and its component into the broker's plugins directory)"
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<32} {:<13} {:>10} {:>10} {:>8} {:>8} {:>6} {:>10}",
        "PIPELINE", "STATUS", "VERSION", "IN", "OUT", "DLQ", "RETRIED", "TRAPS", "LAG"
    );
    for p in &pipelines {
        let lag: i64 = p.partitions.iter().map(|x| x.lag).sum();
        println!(
            "{:<24} {:<32} {:<13} {:>10} {:>10} {:>8} {:>8} {:>6} {:>10}",
            p.name,
            p.status,
            p.version.as_deref().unwrap_or("-"),
            p.records_in,
            p.records_out,
            p.dead_lettered,
            p.retried,
            p.traps,
            lag
        );
        if !p.inputs.is_empty() {
            println!(
                "    {} -> {}",
                p.inputs.join(", "),
                p.output.as_deref().unwrap_or("(routes only)")
            );
        }
        for x in &p.partitions {
            let et = x
                .event_time_watermark
                .map(|w| format!(", event time {w}"))
                .unwrap_or_default();
            println!(
                "    {}-{}: next offset {}, high watermark {}, lag {}{et}",
                x.topic, x.partition, x.next_offset, x.high_watermark, x.lag
            );
        }
        if p.late > 0 || p.undecodable > 0 {
            println!(
                "    late records: {}, undecodable batches: {}",
                p.late, p.undecodable
            );
        }
        if let Some(e) = &p.last_error {
            let ago = p
                .last_error_at_ms
                .map(|at| format!(" ({} ago)", ago(crate::broker::now_ms() - at)))
                .unwrap_or_default();
            println!("    last error{ago}: {e}");
        }
    }
    Ok(())
}

pub fn reset(
    admin: &AdminConn,
    name: &str,
    to: &str,
    keep_state: bool,
    downstream: bool,
) -> Result<()> {
    // Checked here too, so a typo gets a local message without a round trip.
    crate::plugin::reset::parse_reset_to(to).map_err(|e| anyhow::anyhow!(e))?;
    let path = format!(
        "/v1/pipelines/{name}/reset?to={}&keep_state={keep_state}&downstream={downstream}",
        to.replace('+', "%2B")
    );
    let (status, body) = request(admin, "POST", &path)?;
    if status != 200 {
        bail!("{}", error_of(&body));
    }
    let state = if keep_state {
        "state kept"
    } else {
        "state emptied"
    };
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let moves = reply["reset"].as_array().cloned().unwrap_or_default();
    if moves.is_empty() {
        // A broker from before downstream resets answers `{}`.
        println!("pipeline {name} reset to {to} ({state})");
    }
    for m in moves {
        let inputs: Vec<String> = m["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                format!(
                    "{} to {}",
                    i[0].as_str().unwrap_or("?"),
                    i[1].as_str().unwrap_or("?")
                )
            })
            .collect();
        println!(
            "pipeline {} reset: {} ({state})",
            m["pipeline"].as_str().unwrap_or("?"),
            inputs.join(", ")
        );
    }
    Ok(())
}
