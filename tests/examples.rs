//! The showcase examples, end to end, as a user runs them.
//!
//! `click_aggregation`: examples/click-aggregation/run.sh against a test broker. It builds
//! the standard plugins with `sluice plugin build`, deploys the three pipelines, produces
//! 200,000 clicks across 100 ads (ad0 takes 30%) over 6 partitions with a real Kafka client
//! (confluent-kafka, idempotent, acks=all), and compares every final count per ad and
//! window with the ground truth exactly. Mid-run, the test hot-reloads the aggregation
//! plugin and kills -9 and restarts the broker. It also checks the generator's load
//! figures: salting spreads the hot ad over the partitions, unsalted it sits on one.
//!
//! Registered in runtime/Cargo.toml as `[[test]] name = "examples"`.

#[path = "support/mod.rs"]
mod support;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{require_python_modules, Broker};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/click-aggregation")
}

/// The broker's pipelines (`GET /v1/pipelines`), or None while it is down.
fn pipelines(b: &Broker) -> Option<Vec<serde_json::Value>> {
    let mut s = TcpStream::connect(b.admin()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /v1/pipelines HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let body = buf.split_once("\r\n\r\n")?.1;
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .as_array()
        .cloned()
}

fn pipeline(b: &Broker, name: &str) -> Option<serde_json::Value> {
    pipelines(b)?.into_iter().find(|p| p["name"] == name)
}

/// Clicks in the `clicks` topic so far: the high watermarks of click-validate's inputs.
fn clicks_in(b: &Broker) -> u64 {
    pipeline(b, "click-validate")
        .and_then(|p| {
            p["partitions"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|x| x["high_watermark"].as_u64()).sum())
        })
        .unwrap_or(0)
}

/// run.sh in the background, its output in a file.
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("poll run.sh")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `what` while run.sh runs; fails with its output if it ends first or time runs out.
fn wait_for(b: &Broker, run: &mut Run, limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        if let Some(status) = run.exited() {
            panic!(
                "run.sh ended ({status}) before {what}\n{}\n{}",
                run.output(),
                b.log_tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}\n{}\n{}",
            run.output(),
            b.log_tail()
        );
        sleep(Duration::from_millis(100));
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

const CLICKS: u64 = 200_000;

/// run.sh against `b`, with these settings on top of the test's.
fn start_run(b: &Broker, env: &[(&str, &str)]) -> Run {
    let log = b.scratch().join("run.sh.log");
    let mut cmd = support::command("bash");
    cmd.arg(example().join("run.sh"))
        .env("SLUICE", env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE_BOOTSTRAP", b.bootstrap())
        .env("SLUICE_ADMIN", b.admin())
        .env("SLUICE_PLUGINS_DIR", b.plugins_dir())
        .env("OUT", b.scratch().join("out"))
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&log).unwrap())
        .stderr(File::create(b.scratch().join("run.sh.err")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run {
        child: cmd.spawn().expect("bash"),
        log,
    }
}

/// Waits for run.sh to end and checks it reported every count exact; returns its output.
fn finish_ok(b: &Broker, run: &mut Run, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = run.exited() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "run.sh did not finish\n{}\n{}",
            run.output(),
            b.log_tail()
        );
        sleep(Duration::from_millis(200));
    };
    let text = run.output();
    println!("{text}");
    assert!(
        status.success(),
        "run.sh failed ({status})\n{text}\n{}\n{}",
        fs::read_to_string(b.scratch().join("run.sh.err")).unwrap_or_default(),
        b.log_tail()
    );
    assert!(
        text.contains("OK: every final count equals the ground truth"),
        "{text}"
    );
    text
}

/// Hot reload of the aggregation plugin mid-run: a fresh copy of the component (new mtime)
/// under both aggregation pipelines. Returns the clicks in at the switch.
fn hot_reload_aggregation(b: &Broker, run: &mut Run) -> u64 {
    let dir = b.plugins_dir();
    let wasm = dir.join("salted-aggregate.wasm");
    let tmp = dir.join(".salted-aggregate.wasm.reload");
    fs::copy(&wasm, &tmp).unwrap();
    fs::rename(&tmp, &wasm).unwrap();
    wait_for(
        b,
        run,
        Duration::from_secs(60),
        "hot reload of click-partials and click-merge",
        || {
            ["click-partials", "click-merge"].iter().all(|n| {
                pipeline(b, n)
                    .is_some_and(|p| p["reloads"].as_u64() >= Some(1) && p["status"] == "running")
            })
        },
    );
    clicks_in(b)
}

#[test]
fn click_aggregation() {
    require_python_modules(&["confluent_kafka"]);
    let t0 = Instant::now();
    let mut b = Broker::start();
    let out = b.scratch().join("out");
    // 20 s of event time (20 windows of 1 s): room for a reload and a restart mid-run.
    let mut run = start_run(&b, &[("CLICKS", &CLICKS.to_string()), ("RATE", "10000")]);

    // Plugins built, pipelines deployed, the generator under way.
    wait_for(
        &b,
        &mut run,
        Duration::from_secs(600),
        "30,000 clicks in",
        || clicks_in(&b) >= 30_000,
    );
    let producing_at = t0.elapsed();

    let reloaded_at = hot_reload_aggregation(&b, &mut run);

    // kill -9 and restart the broker, still mid-run.
    wait_for(
        &b,
        &mut run,
        Duration::from_secs(120),
        "100,000 clicks in",
        || clicks_in(&b) >= 100_000,
    );
    let before_kill = clicks_in(&b);
    b.restart();
    assert!(
        reloaded_at < CLICKS && before_kill < CLICKS,
        "the reload ({reloaded_at} clicks in) and the restart ({before_kill} in) must happen while clicks are produced"
    );

    finish_ok(&b, &mut run, Duration::from_secs(300));

    // What was checked: 200,000 clicks, 100 ads, one with 30%, over 6 partitions.
    let truth = read_json(&out.join("truth.json"));
    assert_eq!(truth["clicks"], CLICKS);
    assert_eq!(truth["ads"], 100);
    assert!(
        truth["windows"].as_u64().unwrap() >= 100 * 15,
        "{}",
        truth["windows"]
    );
    let check = read_json(&out.join("check.json"));
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["finals"], truth["windows"]);
    let salted = read_json(&out.join("load-salted.json"));
    assert_eq!(salted["partitions"], 6);
    assert_eq!(salted["clicks"], CLICKS);
    let hot = salted["hot_clicks"].as_f64().unwrap() / CLICKS as f64;
    assert!((0.28..=0.32).contains(&hot), "the hot ad's share: {hot}");
    // Salting: the busiest partition holds about a sixth of the hot ad's clicks...
    let salted_max = salted["hot_max_share"].as_f64().unwrap();
    assert!(salted_max <= 0.3, "salted: {salted}");
    let busy: Vec<u64> = salted["hot_per_partition"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(
        busy.iter().all(|&n| n > 0),
        "every partition shares the hot ad: {busy:?}"
    );
    // ... unsalted, all of them.
    let unsalted = read_json(&out.join("load-unsalted.json"));
    assert_eq!(unsalted["salted"], false);
    assert_eq!(unsalted["hot_max_share"], 1.0, "unsalted: {unsalted}");
    let svg = fs::read_to_string(out.join("salting.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("without salting"),
        "{svg}"
    );

    let rss = rss_kib(b.pid());
    b.assert_alive();
    println!(
        "click aggregation: producing after {producing_at:?}; reloaded at {reloaded_at} clicks, \
         broker killed at {before_kill}; done in {:?}; broker RSS {} MiB after the restart",
        t0.elapsed(),
        rss / 1024
    );

    // The checker is no rubber stamp: a ground truth with one count off, one window
    // dropped and one made up, and a duplicated final record in ad-counts, all get reported.
    let counts = truth["counts"].as_object().unwrap();
    let mut tampered = truth.clone();
    let t = tampered["counts"].as_object_mut().unwrap();
    let (w0, n0) = counts["ad0"].as_object().unwrap().iter().next().unwrap();
    t["ad0"][w0] = serde_json::json!(n0.as_u64().unwrap() + 1);
    let (w1, _) = counts["ad1"].as_object().unwrap().iter().next().unwrap();
    t["ad1"].as_object_mut().unwrap().remove(w1);
    t.insert("ad-none".into(), serde_json::json!({ w0.clone(): 1 }));
    let bad_truth = b.scratch().join("tampered-truth.json");
    fs::write(&bad_truth, tampered.to_string()).unwrap();
    let (w2, n2) = counts["ad2"].as_object().unwrap().iter().next().unwrap();
    let first = format!(
        "{{\"key\":\"ad2\",\"window_start\":{w2},\"window_end\":{},\"count\":{n2}}}",
        w2.parse::<i64>().unwrap() + truth["window_ms"].as_i64().unwrap(),
    );
    let dup = support::command("python3")
        .args([
            "-c",
            "import sys; from confluent_kafka import Producer; \
             p = Producer({'bootstrap.servers': sys.argv[1]}); \
             p.produce('ad-counts', key=b'ad2', value=sys.argv[2].encode()); \
             sys.exit(p.flush(30))",
            &b.bootstrap(),
            &first,
        ])
        .status()
        .unwrap();
    assert!(dup.success());
    let o = support::command("python3")
        .arg(example().join("check.py"))
        .args(["--bootstrap", &b.bootstrap(), "--timeout", "3", "--truth"])
        .arg(&bad_truth)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{report}");
    for expect in [
        "1 missing",
        "1 wrong counts",
        "1 duplicate finals",
        "1 unexpected windows",
        "FAIL",
    ] {
        assert!(report.contains(expect), "no '{expect}' in\n{report}");
    }
}

/// Event time that does not depend on speed or interleaving (issue 11): clicks an hour
/// behind the wall clock, produced ten times faster than their event time advances, placed by
/// librdkafka's default partitioner (CRC32, not murmur2) and re-partitioned by murmur2 in
/// stage 1, with 20 clicks really late in their own partition and the broker killed -9 and
/// down for 10 s mid-stream. Every count must be
/// exact and only the 20 late clicks set apart; then the aggregation is reprocessed from the
/// start (`sluice plugin reset`) and must give the very same final counts.
#[test]
fn event_time_is_exact_under_backlog_speed_restarts_and_replay() {
    require_python_modules(&["confluent_kafka"]);
    let t0 = Instant::now();
    let mut b = Broker::start();
    let clicks = 120_000u64;
    let mut run = start_run(
        &b,
        &[
            ("CLICKS", &clicks.to_string()),
            // 60 s of event time in about 6 s of wall time.
            ("RATE", "2000"),
            ("SPEED", "10"),
            ("OFFSET_MS", "-3600000"),
            ("PARTITIONER", "consistent_random"),
            ("LATE", "20"),
            ("COMPARE_CLICKS", "0"),
            // Stage 1 re-partitions by murmur2: each partition of clicks-valid interleaves
            // the output of all six stage-1 tasks, the case that once made clicks look late.
            ("STAGE1_PARTITIONING", "key"),
        ],
    );
    wait_for(
        &b,
        &mut run,
        Duration::from_secs(600),
        "40,000 clicks in",
        || clicks_in(&b) >= 40_000,
    );
    let killed_at = clicks_in(&b);
    b.kill9();
    sleep(Duration::from_secs(10));
    b.restart();
    assert!(
        killed_at < clicks,
        "killed after the last click ({killed_at})"
    );
    let text = finish_ok(&b, &mut run, Duration::from_secs(300));
    assert!(
        text.contains("20 in clicks-late (expected 20)"),
        "the late clicks:\n{text}"
    );
    let out = b.scratch().join("out");
    let truth = read_json(&out.join("truth.json"));
    assert_eq!(truth["late"], 20);
    let skew = truth["start_ms"].as_i64().unwrap()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
    assert!(skew < -3_000_000, "event time an hour behind: {skew} ms");

    let o = support::command("python3")
        .arg(support::clients_dir().join("replay_compare.py"))
        .args([&b.bootstrap(), &b.admin(), env!("CARGO_BIN_EXE_sluice")])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{report}");
    assert!(
        o.status.success() && report.contains("OK: the replay's"),
        "{report}\n{}",
        b.log_tail()
    );
    b.assert_alive();
    println!(
        "event time: killed at {killed_at} clicks, done in {:?}",
        t0.elapsed()
    );
}

/// The other half of issue 11's matrix: clicks an hour *ahead* of the wall clock, placed by
/// Kafka's murmur2 partitioner (librdkafka's `murmur2_random`), ten times faster than event
/// time, and the aggregation plugin hot-reloaded mid-stream. Every count exact.
#[test]
fn event_time_is_exact_ahead_of_the_clock_with_murmur2_and_a_hot_reload() {
    require_python_modules(&["confluent_kafka"]);
    let mut b = Broker::start();
    let clicks = 80_000u64;
    let mut run = start_run(
        &b,
        &[
            ("CLICKS", &clicks.to_string()),
            ("RATE", "2000"),
            ("SPEED", "10"),
            ("OFFSET_MS", "3600000"),
            ("PARTITIONER", "murmur2_random"),
            ("COMPARE_CLICKS", "0"),
        ],
    );
    wait_for(
        &b,
        &mut run,
        Duration::from_secs(600),
        "20,000 clicks in",
        || clicks_in(&b) >= 20_000,
    );
    let reloaded_at = hot_reload_aggregation(&b, &mut run);
    assert!(reloaded_at < clicks, "reloaded after the last click");
    let text = finish_ok(&b, &mut run, Duration::from_secs(300));
    assert!(text.contains("0 in clicks-late (expected 0)"), "{text}");
    let truth = read_json(&b.scratch().join("out").join("truth.json"));
    let skew = truth["start_ms"].as_i64().unwrap()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
    assert!(skew > 3_000_000, "event time an hour ahead: {skew} ms");
    b.assert_alive();
}

/// `sluice demo`, the README's first command: it starts its own broker, builds and deploys
/// the example's pipelines and shows final counts and the hot ad's partition spread.
#[test]
fn demo_shows_final_counts_and_the_salted_spread() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let admin = format!("127.0.0.1:{}", support::free_port());
    let o = support::command(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "demo",
            "--seconds",
            "12",
            "--listen",
            &listen,
            "--admin",
            &admin,
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sluice demo");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}\n{out}");
    // The last screen.
    let last = out.rsplit("\x1b[2J\x1b[H").next().unwrap_or("");
    assert!(
        last.contains("final counts, window ["),
        "no final counts:\n{last}\n{err}"
    );
    assert!(last.contains("ad0 "), "{last}");
    for name in ["click-validate", "click-partials", "click-merge"] {
        assert!(
            last.contains(name) && last.contains("running"),
            "{name}:\n{last}"
        );
    }
    // Six salts over six partitions: the hot ad spread evenly.
    let shares: Vec<f64> = last
        .lines()
        .filter(|l| l.trim_start().starts_with('p') && l.contains('%'))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)?
                .trim_end_matches('%')
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(shares.len(), 6, "{last}");
    assert!(
        shares.iter().all(|s| (*s - 16.7).abs() < 1.0),
        "{shares:?}\n{last}"
    );
}
