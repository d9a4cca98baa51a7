//! End-to-end tests of the plugin runtime: real plugins built from source (Rust with the SDK,
//! and C) during the test run, dropped into a running broker's plugins directory, fed and read
//! by real Kafka clients (kcat, confluent-kafka).
//!
//! Registered in runtime/Cargo.toml as `[[test]] name = "plugins"`.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{repo, require, require_kcat, require_python_modules, sluice, Broker, Script};

const WAIT: Duration = Duration::from_secs(60);

/// Builds every plugin of the plugins/ workspace once per test run with
/// `sluice plugin build`, as a user would, plus the C test plugin with clang.
fn components() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-components");
        fs::create_dir_all(&out).unwrap();
        let o = sluice()
            .args(["plugin", "build"])
            .arg(repo().join("plugins"))
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run sluice plugin build");
        assert!(
            o.status.success(),
            "sluice plugin build plugins failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let o = support::command("sh")
            .arg(repo().join("plugins/testing/c-filter/build.sh"))
            .arg(out.join("c-filter.wasm"))
            .env("SLUICE", env!("CARGO_BIN_EXE_sluice"))
            .output()
            .expect("run the C plugin's build.sh");
        assert!(
            o.status.success(),
            "building the C plugin failed (needs clang, lld, wasi-libc, libclang-rt-14-dev-wasm32):\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
}

fn component(name: &str) -> PathBuf {
    components().join(format!("{name}.wasm"))
}

/// Drops a pipeline into the broker's plugins directory: the component first, then the
/// manifest (which is what makes the host look).
fn deploy(b: &Broker, name: &str, plugin: &str, manifest: &str) {
    let dir = b.plugins_dir();
    fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    fs::copy(component(plugin), &tmp).unwrap();
    fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
    fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
}

/// The body of `GET path` on the broker's admin API.
/// The broker's pipeline status (`GET /v1/pipelines` on the admin API).
fn status(b: &Broker) -> serde_json::Value {
    let body = b.admin_get("/v1/pipelines");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad status body {body:?}: {e}"))
}

/// What `sluice plugin list` prints for the broker (it must succeed).
fn plugin_list(b: &Broker) -> String {
    let o = sluice()
        .args(["plugin", "list", "--admin", &b.admin()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}");
    text
}

fn pipeline(b: &Broker, name: &str) -> Option<serde_json::Value> {
    status(b)
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

fn wait_running(b: &Broker, name: &str, version: Option<&str>) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(p) = pipeline(b, name) {
            let ok = p["status"] == "running"
                && version.is_none_or(|v| p["version"].as_str() == Some(v));
            if ok && !p["partitions"].as_array().unwrap().is_empty() {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pipeline {name} not running: {:?}\n{}",
            pipeline(b, name),
            b.log_tail()
        );
        sleep(Duration::from_millis(100));
    }
}

/// Produces `lines` with kcat; "key:value" lines are keyed when `keyed`.
fn produce(b: &Broker, topic: &str, lines: &[String], keyed: bool) {
    let mut cmd = support::command("kcat");
    cmd.args(["-P", "-b", &b.bootstrap(), "-t", topic]);
    if keyed {
        cmd.arg("-K:");
    }
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("kcat");
    {
        let stdin = child.stdin.as_mut().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "kcat -P failed");
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
    headers: BTreeMap<String, String>,
    timestamp: i64,
}

/// Everything in `topic` now, read with kcat.
fn read_all(b: &Broker, topic: &str) -> Vec<Rec> {
    let o = support::command("kcat")
        .args(["-C", "-b", &b.bootstrap(), "-t", topic, "-e", "-q"])
        .args(["-f", "%p\x1f%o\x1f%k\x1f%s\x1f%h\x1f%T\x1e"])
        .output()
        .expect("kcat -C");
    let text = String::from_utf8_lossy(&o.stdout);
    text.split('\x1e')
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            let f: Vec<&str> = r.split('\x1f').collect();
            let headers = f[4]
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Rec {
                partition: f[0].parse().unwrap(),
                offset: f[1].parse().unwrap(),
                key: f[2].to_string(),
                value: f[3].to_string(),
                headers,
                timestamp: f[5].trim().parse().unwrap_or(-1),
            }
        })
        .collect()
}

/// Waits until `topic` holds at least `n` records, then returns them all.
fn wait_records(b: &Broker, topic: &str, n: usize) -> Vec<Rec> {
    let deadline = Instant::now() + WAIT;
    loop {
        let recs = read_all(b, topic);
        if recs.len() >= n {
            return recs;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} has {} records, expected {n}\n{:?}\n{}",
            recs.len(),
            status(b),
            b.log_tail()
        );
        sleep(Duration::from_millis(200));
    }
}

fn values(recs: &[Rec]) -> Vec<String> {
    recs.iter().map(|r| r.value.clone()).collect()
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn filter_map_and_routing_pipelines() {
    require_kcat();
    let b = Broker::start();
    deploy(
        &b,
        "evens",
        "even-filter",
        "inputs = [\"numbers\"]\noutput = \"evens-out\"\n",
    );
    deploy(
        &b,
        "shout",
        "upper",
        "inputs = [\"words\"]\noutput = \"shouted\"\n",
    );
    deploy(
        &b,
        "route",
        "router",
        "inputs = [\"mixed\"]\noutput = \"other\"\n[config]\na = \"topic-a\"\nb = \"topic-b\"\n",
    );
    for p in ["evens", "shout", "route"] {
        wait_running(&b, p, None);
    }
    produce(
        &b,
        "numbers",
        &lines(&["1", "2", "3", "4", "x7", "10"]),
        false,
    );
    produce(&b, "words", &lines(&["k1:hello", "k2:World"]), true);
    produce(&b, "mixed", &lines(&["a:1", "b:2", "c:3", "a:4"]), false);

    let evens = wait_records(&b, "evens-out", 3);
    assert_eq!(values(&evens), ["2", "4", "10"]);
    let dlq = wait_records(&b, "evens.dlq", 1);
    assert_eq!(values(&dlq), ["x7"]);
    let h = &dlq[0].headers;
    assert!(h["sluice.dlq.reason"].contains("not a number"), "{h:?}");
    assert_eq!(h["sluice.dlq.pipeline"], "evens");
    assert_eq!(h["sluice.dlq.topic"], "numbers");
    assert_eq!(h["sluice.dlq.partition"], "0");
    assert_eq!(h["sluice.dlq.offset"], "4");
    assert_eq!(h["sluice.dlq.attempts"], "1");
    assert_eq!(
        h["sluice.dlq.plugin.version"],
        pipeline(&b, "evens").unwrap()["version"].as_str().unwrap()
    );

    let shouted = wait_records(&b, "shouted", 2);
    assert_eq!(values(&shouted), ["HELLO", "WORLD"]);
    assert_eq!(shouted[0].key, "k1", "the map keeps the key");

    let a = wait_records(&b, "topic-a", 2);
    let bb = wait_records(&b, "topic-b", 1);
    let other = wait_records(&b, "other", 1);
    assert_eq!(values(&a).len(), 2, "{a:?}");
    assert_eq!(values(&bb).len(), 1, "{bb:?}");
    assert_eq!(values(&other).len(), 1, "{other:?}");

    let p = pipeline(&b, "evens").unwrap();
    assert_eq!(p["records_in"], 6);
    assert_eq!(p["records_out"], 3);
    assert_eq!(p["dead_lettered"], 1);
    assert_eq!(p["partitions"][0]["lag"], 0);

    // So does /metrics.
    let metrics = b.admin_get("/metrics");
    for line in [
        "sluice_pipeline_records_in_total{pipeline=\"evens\"} 6",
        "sluice_pipeline_records_out_total{pipeline=\"evens\"} 3",
        "sluice_pipeline_dead_lettered_total{pipeline=\"evens\"} 1",
        "sluice_pipeline_lag{pipeline=\"evens\",topic=\"numbers\",partition=\"0\"} 0",
        "sluice_pipeline_up{pipeline=\"evens\"} 1",
    ] {
        assert!(
            metrics.contains(line),
            "{line} missing from /metrics:\n{metrics}"
        );
    }
    // The CLI shows the same.
    let text = plugin_list(&b);
    assert!(text.contains("evens") && text.contains("running"), "{text}");
    assert!(text.contains("numbers-0"), "{text}");
}

#[test]
fn misbehaving_plugins_dead_letter_only_the_poison_records() {
    require_kcat();
    let b = Broker::start();
    // The CPU cap leaves "oom" ample time to reach the memory cap: with 32 MiB and 50 ms, filling
    // the memory page by page took over 50 ms of CPU on a slow CI machine, and that record was
    // dead-lettered as a runaway loop instead.
    deploy(
        &b,
        "poison",
        "poison",
        "inputs = [\"in\"]\noutput = \"out\"\n[limits]\nmemory_mb = 16\ncpu_ms_per_call = 300\n",
    );
    deploy(
        &b,
        "healthy",
        "upper",
        "inputs = [\"in\"]\noutput = \"healthy-out\"\n",
    );
    wait_running(&b, "poison", None);
    wait_running(&b, "healthy", None);
    let input = lines(&["a", "b", "panic", "c", "loop", "d", "oom", "e"]);
    produce(&b, "in", &input, false);
    let out = wait_records(&b, "out", 5);
    assert_eq!(values(&out), ["a", "b", "c", "d", "e"]);
    let dlq = wait_records(&b, "poison.dlq", 3);
    assert_eq!(
        values(&dlq),
        ["panic", "loop", "oom"],
        "each poison record exactly once"
    );
    assert!(
        dlq[0].headers["sluice.dlq.reason"].contains("panic"),
        "{:?}",
        dlq[0]
    );
    assert!(
        dlq[1].headers["sluice.dlq.reason"].contains("cpu_ms_per_call"),
        "{:?}",
        dlq[1]
    );
    assert!(
        dlq[2].headers["sluice.dlq.reason"].contains("memory"),
        "{:?}",
        dlq[2]
    );
    // Another pipeline on the same topic never noticed.
    assert_eq!(
        values(&wait_records(&b, "healthy-out", 8)),
        ["A", "B", "PANIC", "C", "LOOP", "D", "OOM", "E"]
    );
    sleep(Duration::from_millis(500));
    assert_eq!(read_all(&b, "out").len(), 5, "nothing doubled later");
    assert_eq!(read_all(&b, "poison.dlq").len(), 3, "nothing doubled later");
    let p = pipeline(&b, "poison").unwrap();
    assert!(p["traps"].as_u64().unwrap() >= 3, "{p}");
    // The last error says when it happened: during this test, not before it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at = p["last_error_at_ms"].as_i64().expect("last_error_at_ms");
    assert!((now_ms - 120_000..=now_ms).contains(&at), "{p}");
    let text = plugin_list(&b);
    assert!(
        text.contains("last error (") && text.contains(" s ago): "),
        "{text}"
    );
    // The broker still serves clients.
    produce(&b, "in", &lines(&["f"]), false);
    assert_eq!(values(&wait_records(&b, "out", 6))[5], "f");
}

#[test]
fn retries_back_off_then_dead_letter() {
    require_kcat();
    let b = Broker::start();
    deploy(
        &b,
        "flaky",
        "flaky",
        "inputs = [\"jobs\"]\noutput = \"done\"\n[retry]\nmax_attempts = 3\nbackoff_ms = 400\n",
    );
    wait_running(&b, "flaky", None);
    let t0 = Instant::now();
    produce(&b, "jobs", &lines(&["ok1", "retry-me", "ok2"]), false);
    assert_eq!(values(&wait_records(&b, "done", 2)), ["ok1", "ok2"]);
    let dlq = wait_records(&b, "flaky.dlq", 1);
    let took = t0.elapsed();
    assert_eq!(values(&dlq), ["retry-me"]);
    let h = &dlq[0].headers;
    assert_eq!(h["sluice.dlq.attempts"], "3", "{h:?}");
    assert!(
        h["sluice.dlq.reason"].contains("gave up after 3 attempts"),
        "{h:?}"
    );
    assert_eq!(h["sluice.dlq.topic"], "jobs");
    assert_eq!(h["sluice.dlq.offset"], "1");
    // Two backoffs of 400 ms separate the three attempts.
    assert!(took >= Duration::from_millis(800), "{took:?}");
    let retries = read_all(&b, "flaky.retry");
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert_eq!(retries[0].headers["sluice.retry.attempts"], "1");
    assert_eq!(retries[1].headers["sluice.retry.attempts"], "2");
    let p = pipeline(&b, "flaky").unwrap();
    assert_eq!(p["retried"], 2);
    assert_eq!(p["dead_lettered"], 1);
}

#[test]
fn state_survives_a_restart_and_reset_replays() {
    require_kcat();
    let mut b = Broker::start();
    deploy(
        &b,
        "count",
        "counter",
        "inputs = [\"clicks\"]\noutput = \"counts\"\n",
    );
    wait_running(&b, "count", None);
    produce(&b, "clicks", &lines(&["a:1", "b:1", "a:2"]), true);
    assert_eq!(
        values(&wait_records(&b, "counts", 3)),
        ["a=1", "b=1", "a=2"]
    );
    b.restart();
    wait_running(&b, "count", None);
    assert!(
        b.log_tail()
            .contains("plugin loaded from the compiled cache"),
        "a restart does not recompile\n{}",
        b.log_tail()
    );
    produce(&b, "clicks", &lines(&["a:3", "b:2"]), true);
    let after = wait_records(&b, "counts", 5);
    assert_eq!(
        values(&after),
        ["a=1", "b=1", "a=2", "a=3", "b=2"],
        "state carried over"
    );
    sleep(Duration::from_millis(500));
    assert_eq!(
        read_all(&b, "counts").len(),
        5,
        "nothing reprocessed after the restart"
    );

    // Replay from the start with an empty state: the same counts again.
    let o = sluice()
        .args([
            "plugin",
            "reset",
            "count",
            "--to",
            "earliest",
            "--admin",
            &b.admin(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let replayed = wait_records(&b, "counts", 10);
    assert_eq!(
        values(&replayed[5..]),
        ["a=1", "b=1", "a=2", "a=3", "b=2"],
        "replayed with fresh state"
    );
    // With --keep-state the counts go on from where they were.
    let o = sluice()
        .args([
            "plugin",
            "reset",
            "count",
            "--to",
            "3",
            "--keep-state",
            "--admin",
            &b.admin(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kept = wait_records(&b, "counts", 12);
    assert_eq!(values(&kept[10..]), ["a=4", "b=3"]);
    // Bad targets are refused with a clear message.
    let o = sluice()
        .args([
            "plugin",
            "reset",
            "count",
            "--to",
            "yesterday",
            "--admin",
            &b.admin(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("yesterday"));
}

/// `plugin reset --downstream`: the stage after the one named is reset in the same step, with
/// its state emptied, to the end of the topic the first stage rewrites: it sees the replay's
/// output once, and nothing of the live run twice.
#[test]
fn a_downstream_reset_replays_a_chain_once() {
    require_kcat();
    let b = Broker::start();
    deploy(
        &b,
        "count",
        "counter",
        "inputs = [\"clicks\"]\noutput = \"counts\"\n",
    );
    deploy(
        &b,
        "recount",
        "counter",
        "inputs = [\"counts\"]\noutput = \"recounts\"\n",
    );
    wait_running(&b, "count", None);
    wait_running(&b, "recount", None);
    produce(&b, "clicks", &lines(&["a:1", "b:1", "a:2"]), true);
    assert_eq!(
        values(&wait_records(&b, "recounts", 3)),
        ["a=1", "b=1", "a=2"]
    );
    let o = sluice()
        .args([
            "plugin",
            "reset",
            "count",
            "--to",
            "earliest",
            "--downstream",
            "--admin",
            &b.admin(),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        said.contains("pipeline count reset: clicks to earliest")
            && said.contains("pipeline recount reset: counts to latest"),
        "{said}"
    );
    // Fresh state downstream, fed only the replay: the same counts again, not a=3, b=2, a=4.
    let replayed = wait_records(&b, "recounts", 6);
    assert_eq!(values(&replayed[3..]), ["a=1", "b=1", "a=2"]);
    sleep(Duration::from_millis(500));
    assert_eq!(read_all(&b, "recounts").len(), 6, "nothing counted twice");
    assert_eq!(read_all(&b, "counts").len(), 6);
}

#[test]
fn hot_reload_switches_mid_stream_without_loss_and_rejects_broken_versions() {
    require_kcat();
    let b = Broker::start();
    let manifest =
        |tag: &str| format!("inputs = [\"in\"]\noutput = \"out\"\n[config]\ntag = \"{tag}\"\n");
    deploy(&b, "ver", "version", &manifest("v1"));
    let v1 = wait_running(&b, "ver", None)["version"]
        .as_str()
        .unwrap()
        .to_string();
    let n = 3000;
    let input: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    // Produce in slices while the manifest changes under the running pipeline.
    produce(&b, "in", &input[..1000], false);
    fs::write(b.plugins_dir().join("ver.toml"), manifest("v2")).unwrap();
    produce(&b, "in", &input[1000..2000], false);
    sleep(Duration::from_millis(600));
    produce(&b, "in", &input[2000..], false);
    let out = wait_records(&b, "out", n);
    assert_eq!(out.len(), n, "no record doubled");
    let mut tags = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let (tag, v) = r.value.split_once(':').unwrap();
        assert_eq!(v, i.to_string(), "order kept, nothing lost");
        assert_eq!(
            r.headers["seen"],
            (i + 1).to_string(),
            "state carried across the reload"
        );
        assert_eq!(r.headers["task"], "ver:in/0", "the host's task info");
        if tags.last() != Some(&tag.to_string()) {
            tags.push(tag.to_string());
        }
    }
    assert_eq!(tags, ["v1", "v2"], "one switch, mid-stream");
    assert_eq!(out[0].value, "v1:0");
    assert!(out[n - 1].value.starts_with("v2:"));
    let p = pipeline(&b, "ver").unwrap();
    assert_eq!(p["reloads"], 1);
    assert!(p["last_reload_pause_us"].as_u64().unwrap() < 100_000, "{p}");

    // A broken new component (init refuses) is rejected; the old one keeps running.
    fs::copy(component("bad-init"), b.plugins_dir().join("ver.wasm")).unwrap();
    let deadline = Instant::now() + WAIT;
    while pipeline(&b, "ver").unwrap()["last_error"].is_null() {
        assert!(Instant::now() < deadline, "rejection not reported");
        sleep(Duration::from_millis(100));
    }
    let p = pipeline(&b, "ver").unwrap();
    assert!(p["status"].as_str().unwrap().contains("rejected"), "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("refus"), "{p}");
    assert_eq!(
        p["version"].as_str().unwrap(),
        v1,
        "the old version still runs"
    );
    // Garbage bytes as a component: also rejected.
    fs::write(b.plugins_dir().join("ver.wasm"), b"\0asm garbage").unwrap();
    produce(&b, "in", &lines(&["after"]), false);
    let out = wait_records(&b, "out", n + 1);
    assert_eq!(out[n].value, "v2:after", "old version kept serving");
    assert!(b.log_tail().contains("rejected"), "a clear log line");
}

#[test]
fn invalid_manifests_are_reported_and_disturb_nothing() {
    require_kcat();
    let b = Broker::start();
    deploy(&b, "good", "upper", "inputs = [\"in\"]\noutput = \"out\"\n");
    wait_running(&b, "good", None);
    let dir = b.plugins_dir();
    fs::copy(component("upper"), dir.join("typo.wasm")).unwrap();
    fs::write(dir.join("typo.toml"), "inputs = [\"in\"]\noutptu = \"x\"\n").unwrap();
    fs::write(
        dir.join("wrongtype.toml"),
        "inputs = [\"in\"]\n[limits]\nmemory_mb = \"big\"\n",
    )
    .unwrap();
    fs::write(dir.join("noinputs.toml"), "output = \"x\"\n").unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let st = status(&b);
        let rejected: Vec<String> = st
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"] == "rejected")
            .map(|p| format!("{}: {}", p["name"], p["last_error"]))
            .collect();
        if rejected.len() == 3 {
            let all = rejected.join("\n");
            assert!(all.contains("typo.toml") && all.contains("outptu"), "{all}");
            assert!(
                all.contains("wrongtype.toml") && all.contains("memory_mb"),
                "{all}"
            );
            assert!(
                all.contains("noinputs.toml") && all.contains("inputs"),
                "{all}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        sleep(Duration::from_millis(100));
    }
    produce(&b, "in", &lines(&["still", "works"]), false);
    assert_eq!(values(&wait_records(&b, "out", 2)), ["STILL", "WORKS"]);
    let text = plugin_list(&b);
    assert!(
        text.contains("typo") && text.contains("rejected") && text.contains("outptu"),
        "{text}"
    );

    // Removing a manifest undeploys; putting it back resumes where it was.
    fs::remove_file(dir.join("good.toml")).unwrap();
    let deadline = Instant::now() + WAIT;
    while pipeline(&b, "good").is_some() {
        assert!(Instant::now() < deadline);
        sleep(Duration::from_millis(100));
    }
    produce(&b, "in", &lines(&["while", "away"]), false);
    sleep(Duration::from_millis(500));
    assert_eq!(read_all(&b, "out").len(), 2);
    fs::write(
        dir.join("good.toml"),
        "inputs = [\"in\"]\noutput = \"out\"\n",
    )
    .unwrap();
    assert_eq!(
        values(&wait_records(&b, "out", 4)),
        ["STILL", "WORKS", "WHILE", "AWAY"]
    );
}

#[test]
fn exactly_once_output_across_kill9_under_load() {
    require_kcat();
    require_python_modules(&["confluent_kafka"]);
    let mut b = Broker::start();
    // Two partitions, two tasks, each with its own state.
    for t in ["load", "eo-out"] {
        let o = sluice()
            .args([
                "topic",
                "create",
                t,
                "--partitions",
                "2",
                "--bootstrap",
                &b.bootstrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    deploy(
        &b,
        "eo",
        "version",
        "inputs = [\"load\"]\noutput = \"eo-out\"\n",
    );
    wait_running(&b, "eo", None);
    let n = 80_000;
    let load = Script::spawn(
        &b,
        "python3",
        "plugin_load.py",
        &["load", &n.to_string(), "15000"],
    );
    // Four crashes while records flow: at each, the tasks are somewhere between a
    // checkpoint and the next, with output written past it.
    for _ in 0..4 {
        sleep(Duration::from_millis(900));
        b.kill9();
        sleep(Duration::from_millis(100));
        b.restart();
    }
    let done = load.finish(Duration::from_secs(240));
    assert!(done.success(), "{}\n{}", done.report(), b.log_tail());
    let out = wait_records(&b, "eo-out", n);
    sleep(Duration::from_secs(2));
    let out2 = read_all(&b, "eo-out");
    assert_eq!(out2.len(), out.len());
    assert_eq!(out.len(), n, "every input exactly once in the output");
    let mut seen: Vec<u64> = out
        .iter()
        .map(|r| r.value.split_once(':').unwrap().1.parse().unwrap())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), n, "no duplicates");
    // Per output partition (= input partition), the state counter runs 1, 2, 3, ... with no
    // gap or repeat: the state was restored exactly at the checkpointed offset.
    for p in 0..2 {
        let counts: Vec<u64> = out
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.headers["seen"].parse().unwrap())
            .collect();
        let expect: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(counts, expect, "partition {p}");
    }
}

#[test]
fn a_plugin_written_in_c_runs_too() {
    require_kcat();
    let b = Broker::start();
    deploy(
        &b,
        "cfilter",
        "c-filter",
        "inputs = [\"in\"]\noutput = \"out\"\n",
    );
    wait_running(&b, "cfilter", None);
    produce(
        &b,
        "in",
        &lines(&["keep 1", "drop 2", "keep 3", "dropped 4", "keep 5"]),
        false,
    );
    assert_eq!(
        values(&wait_records(&b, "out", 3)),
        ["keep 1", "keep 3", "keep 5"]
    );
    let p = pipeline(&b, "cfilter").unwrap();
    assert_eq!(p["records_in"], 5);
    assert_eq!(p["records_out"], 3);
}

/// Idle instances cost no CPU when their plugin says it has no time-based work: a plugin built
/// with the SDK and no `tick` pauses its ticks (`host.pause-ticks`, WIT 0.1.3) until its next
/// record, while a component built against 0.1.0 (the C filter) is ticked every `tick_ms` as
/// before.
#[test]
fn idle_instances_that_pause_their_ticks_are_not_ticked() {
    require_kcat();
    let b = Broker::start();
    let manifest =
        |name: &str| format!("inputs = [\"{name}-in\"]\noutput = \"{name}-out\"\ntick_ms = 50\n");
    deploy(&b, "old", "c-filter", &manifest("old"));
    deploy(&b, "sdk", "even-filter", &manifest("sdk"));
    let ticks = |name: &str| pipeline(&b, name).unwrap()["ticks"].as_u64().unwrap();
    for (name, input) in [("old", "keep 1"), ("sdk", "2")] {
        wait_running(&b, name, None);
        produce(&b, &format!("{name}-in"), &lines(&[input]), false);
        assert_eq!(
            values(&wait_records(&b, &format!("{name}-out"), 1)),
            [input]
        );
    }
    // Each SDK instance is ticked once after its input at most, then paused.
    sleep(Duration::from_millis(500));
    let (old0, sdk0) = (ticks("old"), ticks("sdk"));
    sleep(Duration::from_millis(1500));
    let (old1, sdk1) = (ticks("old"), ticks("sdk"));
    assert!(
        old1 >= old0 + 5,
        "the 0.1.0 component is ticked: {old0} then {old1}"
    );
    assert_eq!(sdk1, sdk0, "the paused SDK instance was ticked while idle");
    assert!(sdk0 >= 1, "the SDK instance was never ticked at all");
    // A record ends the pause: one more tick, then quiet again.
    produce(&b, "sdk-in", &lines(&["4"]), false);
    assert_eq!(values(&wait_records(&b, "sdk-out", 2)), ["2", "4"]);
    let deadline = Instant::now() + WAIT;
    while ticks("sdk") == sdk1 {
        assert!(Instant::now() < deadline, "not ticked after a record");
        sleep(Duration::from_millis(50));
    }
    sleep(Duration::from_millis(300));
    let sdk2 = ticks("sdk");
    sleep(Duration::from_millis(1000));
    assert_eq!(
        ticks("sdk"),
        sdk2,
        "ticked while idle after the pause resumed"
    );
    assert!(b.admin_get("/metrics").contains(&format!(
        "sluice_pipeline_ticks_total{{pipeline=\"sdk\"}} {sdk2}"
    )));
}

#[test]
fn a_scaffolded_plugin_builds_and_runs_unedited() {
    require_kcat();
    let work = tempfile::tempdir().unwrap();
    let o = sluice()
        .args(["plugin", "new", "my-pass"])
        .arg("--dir")
        .arg(work.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let crate_dir = work.path().join("my-pass");
    // The scaffold's own target dir would rebuild std; share the plugins workspace's.
    let o = sluice()
        .args(["plugin", "build"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", repo().join("plugins/target"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let wasm = crate_dir.join("my-pass.wasm");
    assert!(wasm.exists(), "plugin build writes DIR/<name>.wasm");
    let b = Broker::start();
    fs::create_dir_all(b.plugins_dir()).unwrap();
    fs::copy(&wasm, b.plugins_dir().join("my-pass.wasm")).unwrap();
    // The manifest the scaffold wrote, with its inputs pointed at our topic.
    let manifest = fs::read_to_string(crate_dir.join("my-pass.toml")).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|l| {
            if l.starts_with("inputs") {
                "inputs = [\"in\"]".to_string()
            } else if l.starts_with("output") {
                "output = \"out\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(b.plugins_dir().join("my-pass.toml"), manifest).unwrap();
    wait_running(&b, "my-pass", None);
    produce(&b, "in", &lines(&["one", "two"]), false);
    assert_eq!(
        values(&wait_records(&b, "out", 2)),
        ["one", "two"],
        "a pass-through map"
    );
}

/// A pipeline behind its `max_lag` throttles producers to its input (Kafka quotas); once it
/// catches up, they run unthrottled. Nothing is lost either way.
#[test]
fn back_pressure_throttles_producers_while_a_pipeline_lags() {
    require_kcat();
    require_python_modules(&["confluent_kafka"]);
    let b = Broker::start();
    let manifest = |spin: u64| {
        format!(
            "inputs = [\"busy\"]\noutput = \"busy-out\"\nmax_lag = 5000\n[config]\nspin = {spin}\n"
        )
    };
    deploy(&b, "slow", "slow", &manifest(100_000));
    wait_running(&b, "slow", None);
    // Enough that the producer is still sending when the throttle (recomputed every
    // 100 ms) engages, however fast the machine.
    let n = 300_000;
    let report = |out: &str| -> serde_json::Value {
        serde_json::from_str(out.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{out}: {e}"))
    };
    let slow = support::run_ok(
        &b,
        "python3",
        "plugin_load.py",
        &["--value-bytes", "100", "busy", &n.to_string()],
        Duration::from_secs(240),
    );
    let slow = report(&slow);
    assert_eq!(slow["acked"], n, "{slow}");
    assert!(
        slow["throttle_max_ms"].as_u64().unwrap() > 0,
        "the producer saw throttle_time_ms while the pipeline lagged: {slow}"
    );
    assert!(throttled_total(&b) > 0.0);

    // Fast again: the pipeline catches up, the throttle lifts, and a producer the pipeline
    // keeps up with is never throttled.
    fs::write(b.plugins_dir().join("slow.toml"), manifest(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = pipeline(&b, "slow").unwrap();
        if p["reloads"] == 1 && p["partitions"][0]["lag"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "pipeline never caught up: {p}");
        sleep(Duration::from_millis(200));
    }
    sleep(Duration::from_millis(300));
    let before = throttled_total(&b);
    let fast = support::run_ok(
        &b,
        "python3",
        "plugin_load.py",
        &["busy", "15000", "5000"],
        Duration::from_secs(240),
    );
    let fast = report(&fast);
    assert_eq!(fast["acked"], 15_000, "{fast}");
    assert_eq!(
        fast["throttle_max_ms"], 0,
        "no throttling once caught up: {fast}"
    );
    assert_eq!(throttled_total(&b), before);
    println!("throttled: {slow}\nunthrottled: {fast}");
    // Nothing lost: every record went through the pipeline.
    assert_eq!(wait_records(&b, "busy-out", n + 15_000).len(), n + 15_000);
}

fn create_topics(b: &Broker, topics: &[&str], partitions: u32) {
    for t in topics {
        let o = sluice()
            .args(["topic", "create", t, "--partitions"])
            .arg(partitions.to_string())
            .args(["--bootstrap", &b.bootstrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

fn throttled_total(b: &Broker) -> f64 {
    b.admin_get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("sluice_produce_throttled_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sluice_produce_throttled_total in /metrics"))
}

/// A pipeline announces its event-time watermark into its output as control batches; Kafka
/// consumers must never see them: kcat, confluent-kafka, kafka-python and kafkajs read exactly
/// the data records, and positions and commits still reach the end of each partition.
#[test]
fn watermark_control_records_are_invisible_to_kafka_clients() {
    require_kcat();
    require_python_modules(&["confluent_kafka", "kafka"]);
    support::require_kafkajs();
    let b = Broker::start();
    create_topics(&b, &["ctl-in", "ctl-out"], 3);
    deploy(
        &b,
        "ctl",
        "upper",
        "inputs = [\"ctl-in\"]\noutput = \"ctl-out\"\n[event_time]\nlateness_ms = 100\n",
    );
    // Announcements go only to topics a pipeline reads: this one makes ctl-out one.
    deploy(
        &b,
        "ctl-next",
        "upper",
        "inputs = [\"ctl-out\"]\noutput = \"ctl-final\"\n[event_time]\nlateness_ms = 100\n",
    );
    wait_running(&b, "ctl", None);
    wait_running(&b, "ctl-next", None);
    let n = 300;
    let input: Vec<String> = (0..n).map(|i| format!("k{}:v{i}", i % 7)).collect();
    produce(&b, "ctl-in", &input, true);
    let out = wait_records(&b, "ctl-out", n);
    let mut got = values(&out);
    got.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("V{i}")).collect();
    want.sort();
    assert_eq!(got, want, "kcat reads the data records only");
    // Every announcement goes after the output it covers; wait for the last ones.
    sleep(Duration::from_millis(500));
    let count = n.to_string();
    support::run_ok(
        &b,
        "python3",
        "control_records_invisible.py",
        &["--topic", "ctl-out", "--count", &count],
        WAIT,
    );
    support::run_ok(
        &b,
        "node",
        "node/kafkajs_control_records.js",
        &["--topic", "ctl-out", "--count", &count],
        WAIT,
    );
    // The watermark reached the task: newest event time minus lateness_ms.
    let p = pipeline(&b, "ctl").unwrap();
    assert!(
        p["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["event_time_watermark"].as_i64().is_some()),
        "{p}"
    );
    // And the announcements are there for the clients to skip: ctl-out holds more offsets
    // than data records, and the pipeline reading it got a watermark from them.
    let next = pipeline(&b, "ctl-next").unwrap();
    let parts = next["partitions"].as_array().unwrap();
    let offsets: i64 = parts
        .iter()
        .map(|x| x["high_watermark"].as_i64().unwrap())
        .sum();
    assert!(offsets > n as i64, "no announcement in ctl-out: {next}");
    assert!(
        parts
            .iter()
            .any(|x| x["event_time_watermark"].as_i64().is_some()),
        "{next}"
    );
}

/// Watermark announcements go only where a pipeline reads: a pipeline whose output nothing
/// reads writes none (10,000 tasks into 1,000 partitions wrote gigabytes of them before), and
/// one added later is announced to from then on.
#[test]
fn watermarks_are_announced_only_to_topics_a_pipeline_reads() {
    require_kcat();
    let b = Broker::start();
    create_topics(&b, &["ann-in", "ann-out"], 4);
    deploy(
        &b,
        "ann",
        "upper",
        "inputs = [\"ann-in\"]\noutput = \"ann-out\"\n[event_time]\nlateness_ms = 0\n",
    );
    wait_running(&b, "ann", None);
    let input: Vec<String> = (0..40).map(|i| format!("k{i}:v{i}")).collect();
    produce(&b, "ann-in", &input, true);
    assert_eq!(wait_records(&b, "ann-out", 40).len(), 40);
    sleep(Duration::from_millis(1500));
    let end = |topic: &str| -> i64 {
        let o = sluice()
            .args([
                "topic",
                "describe",
                topic,
                "--format",
                "json",
                "--bootstrap",
            ])
            .arg(b.bootstrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["partitions"]
            .as_array()
            .unwrap_or_else(|| panic!("no partitions in {v}"))
            .iter()
            .map(|p| p["high_watermark"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(end("ann-out"), 40, "announcements in a topic nobody reads");
    // A reader arrives: every writer announces to it, and its watermark moves.
    deploy(
        &b,
        "ann-next",
        "upper",
        "inputs = [\"ann-out\"]\noutput = \"ann-final\"\n[event_time]\nlateness_ms = 0\n",
    );
    wait_running(&b, "ann-next", None);
    let deadline = Instant::now() + WAIT;
    loop {
        let p = pipeline(&b, "ann-next").unwrap();
        let parts = p["partitions"].as_array().unwrap().clone();
        if parts.len() == 4
            && parts
                .iter()
                .all(|x| x["event_time_watermark"].as_i64().is_some())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no watermark downstream: {p}");
        sleep(Duration::from_millis(100));
    }
    assert!(
        end("ann-out") >= 40 + 4,
        "the writers announced to the new reader"
    );
    assert_eq!(wait_records(&b, "ann-final", 40).len(), 40);
}

/// A batch that passes produce's checks (header, CRC) but whose records cannot be decoded
/// must not stall the pipelines reading its partition: it is dead-lettered with its offsets
/// and counted, and the records after it are processed.
#[test]
fn an_undecodable_input_batch_is_dead_lettered_and_the_pipeline_goes_on() {
    require_kcat();
    let b = Broker::start();
    deploy(
        &b,
        "shout",
        "upper",
        "inputs = [\"raw\"]\noutput = \"raw-out\"\n",
    );
    wait_running(&b, "shout", None);
    produce(&b, "raw", &lines(&["k1:one"]), true);
    wait_records(&b, "raw-out", 1);
    support::run_ok(
        &b,
        "python3",
        "plant_undecodable_batch.py",
        &["raw", "0"],
        WAIT,
    );
    produce(&b, "raw", &lines(&["k2:two"]), true);
    let out = wait_records(&b, "raw-out", 2);
    assert_eq!(values(&out), ["ONE", "TWO"]);
    let dlq = wait_records(&b, "shout.dlq", 1);
    let h = &dlq[0].headers;
    assert!(
        h["sluice.dlq.reason"].starts_with("undecodable batch at offsets 1..=1: "),
        "{h:?}"
    );
    assert_eq!(h["sluice.dlq.topic"], "raw");
    assert_eq!(h["sluice.dlq.partition"], "0");
    assert_eq!(h["sluice.dlq.offset"], "1");
    assert_eq!(h["sluice.dlq.last.offset"], "1");
    let p = pipeline(&b, "shout").unwrap();
    assert_eq!(p["undecodable"], 1, "{p}");
    assert_eq!(p["partitions"][0]["lag"], 0, "{p}");
    let metrics = b.admin_get("/metrics");
    assert!(
        metrics.contains("sluice_pipeline_undecodable_batches_total{pipeline=\"shout\"} 1"),
        "{metrics}"
    );
}

/// The upper-casing plugin deployed with `manifest` on a fresh broker, then a Python client
/// scenario against it.
fn upper_case_pipeline_then(manifest: &str, script: &str, args: &[&str]) {
    support::require_python_modules(&["confluent_kafka"]);
    let b = Broker::start();
    deploy(&b, "shout", "upper", manifest);
    wait_running(&b, "shout", None);
    support::run_ok(&b, "python3", script, args, WAIT);
}

/// A pipeline reads its input as a read_committed consumer would: records of an aborted
/// transaction never reach the plugin, and records of an open one only once it commits.
#[test]
fn a_pipeline_reads_only_committed_transactions() {
    upper_case_pipeline_then(
        "inputs = [\"txin\"]\noutput = \"txin-out\"\n",
        "txn_pipeline_input.py",
        &["--topic", "txin", "--output", "txin-out"],
    );
}

/// Event time's idle timeout counts only time a task spent caught up with its input: records
/// on their way (a transaction held open past the timeout, then aborted) are not silence,
/// or the watermark would jump past the next record the producer sends (it would be late).
#[test]
fn a_partition_whose_records_were_on_their_way_was_not_idle() {
    upper_case_pipeline_then(
        "inputs = [\"evin\"]\noutput = \"evin-out\"\n[event_time]\nlateness_ms = 500\n\
         idle_timeout_ms = 3000\nlate_topic = \"evin-late\"\n",
        "txn_abort_not_idle.py",
        &[
            "--topic",
            "evin",
            "--output",
            "evin-out",
            "--late",
            "evin-late",
        ],
    );
}

/// The admin API can reset pipelines, so: with `admin_token` set it answers only requests
/// that carry the token (the `sluice plugin` commands send it), it refuses to start on a
/// non-loopback address without one, and the `--metrics` listener serves metrics only.
#[test]
fn the_admin_api_needs_its_token_and_the_metrics_listener_serves_only_metrics() {
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let broker = Broker::start_with_config(&format!(
        "admin_token = \"s3cret\"\nmetrics = \"{metrics}\"\n"
    ));
    let admin = broker.admin();
    assert_eq!(support::http(&admin, "GET", "/v1/pipelines", None).0, 401);
    assert_eq!(
        support::http(&admin, "GET", "/v1/pipelines", Some("guess")).0,
        401
    );
    assert_eq!(
        support::http(&admin, "POST", "/v1/pipelines/x/reset?to=earliest", None).0,
        401
    );
    assert_eq!(
        support::http(&admin, "GET", "/v1/pipelines", Some("s3cret")).0,
        200
    );
    assert_eq!(support::http(&admin, "GET", "/metrics", None).0, 200);
    assert_eq!(support::http(&metrics, "GET", "/metrics", None).0, 200);
    assert_eq!(
        support::http(&metrics, "GET", "/v1/pipelines", Some("s3cret")).0,
        404
    );
    assert_eq!(
        support::http(&metrics, "POST", "/v1/pipelines/x/reset?to=earliest", None).0,
        404
    );
    // The CLI passes the token from SLUICE_ADMIN_TOKEN.
    let list = |token: Option<&str>| {
        let mut cmd = support::command(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["plugin", "list", "--admin", &admin]);
        cmd.env_remove("SLUICE_ADMIN_TOKEN");
        if let Some(t) = token {
            cmd.env("SLUICE_ADMIN_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    assert!(list(Some("s3cret")).status.success());
    let refused = list(None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Bearer"));

    // No token, not loopback: the broker will not start.
    let out = support::command(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--admin", "0.0.0.0:0", "--data-dir"])
        .arg(broker.scratch().join("never"))
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin_token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With ACLs on, a pipeline acts as its manifest's principal: refused (and reported) until
/// it may read its inputs, write its outputs and create the topics it needs, started by the
/// rescan once `sluice acl add` grants that, and stopped when the grant is taken back. A
/// plugin routing records to topics it names at run time writes only where its principal
/// may: elsewhere the record is dead-lettered with the reason.
#[test]
fn a_pipeline_acts_as_its_principal_under_acls() {
    require_kcat();
    // The plaintext listener's anonymous clients (kcat, the CLI) are super users here; the
    // pipeline is not.
    let b = Broker::start_with_config("authorizer = \"acl\"\nsuper_users = [\"User:ANONYMOUS\"]\n");
    let acl_for = |principal: &str, args: &[&str]| {
        let o = sluice()
            .args(["acl"])
            .args(args)
            .args(["--principal", principal, "--bootstrap", &b.bootstrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "sluice acl {args:?}: {o:?}");
    };
    let acl = |args: &[&str]| acl_for("User:evens-app", args);
    let refused = |why: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(p) = pipeline(&b, "evens") {
                let err = p["last_error"].as_str().unwrap_or_default().to_string();
                if p["status"] != "running" && err.contains("not authorized") && err.contains(why) {
                    return err;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pipeline not refused: {:?}\n{}",
                pipeline(&b, "evens"),
                b.log_tail()
            );
            sleep(Duration::from_millis(100));
        }
    };
    deploy(
        &b,
        "evens",
        "even-filter",
        "inputs = [\"numbers\"]\noutput = \"evens-out\"\nprincipal = \"User:evens-app\"\n",
    );
    let err = refused("read topic numbers");
    assert!(err.contains("User:evens-app"), "{err}");
    acl(&["add", "--operation", "Read", "--topic", "numbers"]);
    acl(&["add", "--operation", "Write", "--topic", "evens-out"]);
    acl(&[
        "add",
        "--operation",
        "Read",
        "--operation",
        "Write",
        "--topic",
        "evens.",
        "--prefixed",
    ]);
    // The topics do not exist yet: the pipeline would create them.
    refused("create topic numbers");
    acl(&["add", "--operation", "Create", "--cluster"]);
    wait_running(&b, "evens", None);
    produce(&b, "numbers", &lines(&["1", "2", "3", "4"]), false);
    assert_eq!(values(&wait_records(&b, "evens-out", 2)), ["2", "4"]);
    acl(&["remove", "--operation", "Write", "--topic", "evens-out"]);
    refused("write topic evens-out");

    // A router may write topic-a (which it may create) but not topic-b.
    for t in ["mixed", "other", "topic-b"] {
        let o = sluice()
            .args(["topic", "create", t, "--bootstrap", &b.bootstrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "topic create {t}: {o:?}");
    }
    let router = |args: &[&str]| acl_for("User:router-app", args);
    router(&["add", "--operation", "Read", "--topic", "mixed"]);
    for t in ["other", "topic-a"] {
        router(&["add", "--operation", "Write", "--topic", t]);
    }
    router(&["add", "--operation", "Create", "--topic", "topic-a"]);
    router(&[
        "add",
        "--operation",
        "All",
        "--topic",
        "route.",
        "--prefixed",
    ]);
    deploy(
        &b,
        "route",
        "router",
        "inputs = [\"mixed\"]\noutput = \"other\"\nprincipal = \"User:router-app\"\n[config]\na = \"topic-a\"\nb = \"topic-b\"\n",
    );
    wait_running(&b, "route", None);
    produce(&b, "mixed", &lines(&["a:1", "b:2", "c:3"]), false);
    assert_eq!(values(&wait_records(&b, "topic-a", 1)), ["a:1"]);
    assert_eq!(values(&wait_records(&b, "other", 1)), ["c:3"]);
    let dlq = wait_records(&b, "route.dlq", 1);
    assert_eq!(values(&dlq), ["b:2"]);
    let reason = &dlq[0].headers["sluice.dlq.reason"];
    assert!(
        reason.contains("User:router-app may not write topic topic-b"),
        "{reason}"
    );
}

/// `sluice plugin deploy` with no --workers reaches the broker's own plugin host through its
/// `sluice.deployments` topic: the pipeline runs, survives a kill -9 of the broker, and
/// `plugin undeploy` stops it. The plugins directory stays empty throughout.
#[test]
fn plugin_deploy_reaches_the_brokers_own_host() {
    require_kcat();
    let mut b = Broker::start();
    let src = b.scratch().join("to-deploy");
    fs::create_dir_all(&src).unwrap();
    fs::copy(component("even-filter"), src.join("even-filter.wasm")).unwrap();
    let manifest = src.join("evens.toml");
    fs::write(
        &manifest,
        "wasm = \"even-filter.wasm\"\ninputs = [\"numbers\"]\noutput = \"evens-out\"\n",
    )
    .unwrap();
    let bootstrap = b.bootstrap();
    let cli = |args: &[&str]| {
        let o = sluice()
            .args(["plugin"])
            .args(args)
            .args(["--bootstrap", &bootstrap])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "plugin {args:?}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let out = cli(&["deploy", manifest.to_str().unwrap()]);
    assert!(out.contains("sluice.deployments"), "{out}");
    wait_running(&b, "evens", None);
    let o = sluice()
        .args(["plugin", "list", "--admin", &b.admin(), "--format", "json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "evens" && p["status"] == "running"),
        "{listed}"
    );
    produce(&b, "numbers", &lines(&["1", "2", "3", "4"]), false);
    assert_eq!(values(&wait_records(&b, "evens-out", 2)), ["2", "4"]);
    assert!(
        fs::read_dir(b.plugins_dir())
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "the deployment must not go through the plugins directory"
    );

    b.restart();
    wait_running(&b, "evens", None);
    produce(&b, "numbers", &lines(&["6", "7"]), false);
    assert_eq!(values(&wait_records(&b, "evens-out", 3)), ["2", "4", "6"]);

    cli(&["undeploy", "evens"]);
    let deadline = Instant::now() + WAIT;
    while pipeline(&b, "evens").is_some() {
        assert!(
            Instant::now() < deadline,
            "still deployed:\n{}",
            b.log_tail()
        );
        sleep(Duration::from_millis(100));
    }
    produce(&b, "numbers", &lines(&["8"]), false);
    sleep(Duration::from_secs(2));
    assert_eq!(
        values(&read_all(&b, "evens-out")),
        ["2", "4", "6"],
        "an undeployed pipeline processed a record"
    );
}

/// Builds the plugin at `dir` (Python or TypeScript) with `sluice plugin build`.
fn build_lang(dir: &Path, out: &Path) {
    let o = sluice()
        .args(["plugin", "build"])
        .arg(dir)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run sluice plugin build");
    assert!(
        o.status.success(),
        "sluice plugin build {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Issue 17: the standard filter rewritten in Python (plugins/python/filter) and the click
/// example's validation stage in TypeScript (plugins/js/click-validate), built from source
/// with componentize-py and ComponentizeJS, run beside their Rust originals on the same
/// input with the same config: the same records come out, in the same order, and the same
/// records are dead-lettered with the same reasons.
#[test]
fn python_and_typescript_plugins_give_the_rust_plugins_results() {
    require_kcat();
    require(
        "componentize-py",
        &["--version"],
        "componentize-py",
        "pip install componentize-py==0.25.1",
    );
    let ts_dir = repo().join("plugins/js/click-validate");
    assert!(
        ts_dir.join("node_modules/.bin/componentize-js").exists(),
        "the TypeScript plugin's tools are missing: npm ci --prefix plugins/js/click-validate"
    );
    let b = Broker::start();
    let dir = b.plugins_dir();
    fs::create_dir_all(&dir).unwrap();
    build_lang(
        &repo().join("plugins/python/filter"),
        &dir.join("py-filter.wasm"),
    );
    build_lang(&ts_dir, &dir.join("ts-validate.wasm"));
    fs::copy(component("filter"), dir.join("rs-filter.wasm")).unwrap();
    fs::copy(
        component("dead-letter-router"),
        dir.join("rs-validate.wasm"),
    )
    .unwrap();
    let filter_config = "[config]\nproject = [\"ad\", \"ts\", \"user.country\"]\n\
        [config.where]\nevent = { in = [\"click\", \"buy\"] }\nts = { gte = 100 }\n\
        \"user.country\" = { ne = \"XX\" }\nad = { prefix = \"ad\" }\n";
    let validate_config = "[config]\nroute_field = \"event\"\ndefault_route = \"dead_letter\"\n\
        [config.routes]\nclick = \"output\"\nbuy = \"lang-buys\"\nspam = \"drop\"\n\
        [config.required]\nad = \"string\"\nts = \"integer\"\nevent = \"string\"\n\
        [config.optional]\n\"user.id\" = \"string|integer\"\nnote = \"string|null\"\n";
    for (name, config) in [
        ("rs-filter", filter_config),
        ("py-filter", filter_config),
        ("rs-validate", validate_config),
        ("ts-validate", validate_config),
    ] {
        fs::write(
            dir.join(format!("{name}.toml")),
            format!("inputs = [\"lang-in\"]\noutput = \"{name}-out\"\n{config}"),
        )
        .unwrap();
    }
    let input = lines(&[
        r#"{"ad":"ad1","ts":150,"event":"click","user":{"id":7,"country":"DE"}}"#,
        r#"{"ad":"ad2","ts":99,"event":"click"}"#,
        r#"{"ad":"ad3","ts":200,"event":"buy","user":{"country":"XX"}}"#,
        r#"{"ad":"ad4","ts":300,"event":"buy","note":null}"#,
        r#"{"ad":"ad5","ts":"300","event":"click"}"#,
        r#"{"ad":"ad6","ts":1.5,"event":"click"}"#,
        r#"{"ad":"ad7","ts":400,"event":"view"}"#,
        r#"{"ad":"ad8","ts":400,"event":"spam"}"#,
        r#"{"ts":500,"event":"click","user":{"id":1.25}}"#,
        r#"{"ad":"xx9","ts":600,"event":"click","note":3}"#,
        r#"{"ad":"ad10","ts":700}"#,
        r#"[1,2,3]"#,
        r#""just a string""#,
        "not json at all",
        r#"{"ad":"ad11","ts":800,"event":"click","user":{"id":"u11","country":"FR","age":30}}"#,
        r#"{"ad":"ad12","ts":1e3,"event":"view"}"#,
    ]);
    for name in ["rs-filter", "py-filter", "rs-validate", "ts-validate"] {
        wait_running(&b, name, None);
    }
    produce(&b, "lang-in", &input, false);
    let deadline = Instant::now() + WAIT;
    for name in ["rs-filter", "py-filter", "rs-validate", "ts-validate"] {
        while pipeline(&b, name).is_none_or(|p| p["records_in"] != input.len()) {
            assert!(
                Instant::now() < deadline,
                "{name} did not read the input: {:?}\n{}",
                pipeline(&b, name),
                b.log_tail()
            );
            sleep(Duration::from_millis(200));
        }
    }
    // What went where: (value, dead-letter reason) in order, per topic, read through the
    // web console's message browser (whole header values, whatever they hold).
    let seen = |topic: &str| -> Vec<(String, String)> {
        let body = b.admin_get(&format!("/v1/topics/{topic}/messages?offset=0&max=500"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["records"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let reason = r["headers"]
                            .as_array()
                            .and_then(|hs| hs.iter().find(|h| h["key"] == "sluice.dlq.reason"))
                            .and_then(|h| h["value"]["text"].as_str())
                            .unwrap_or_default()
                            .to_string();
                        (
                            r["value"]["text"].as_str().unwrap_or_default().to_string(),
                            reason,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // Only the JSON parsers' own messages differ.
    let dlq = |topic: &str| -> Vec<(String, String)> {
        seen(topic)
            .into_iter()
            .map(|(v, r)| match r.starts_with("not JSON") {
                true => (v, "not JSON".into()),
                false => (v, r),
            })
            .collect()
    };
    let rs_out = seen("rs-filter-out");
    assert_eq!(rs_out.len(), 3, "the Rust filter kept 3: {rs_out:?}");
    assert_eq!(seen("py-filter-out"), rs_out, "the Python filter's output");
    let rs_dlq = dlq("rs-filter.dlq");
    assert_eq!(rs_dlq.len(), 3, "{rs_dlq:?}");
    assert_eq!(
        dlq("py-filter.dlq"),
        rs_dlq,
        "the Python filter's dead letters"
    );

    let rs_valid = seen("rs-validate-out");
    assert_eq!(rs_valid.len(), 3, "{rs_valid:?}");
    assert_eq!(
        seen("ts-validate-out"),
        rs_valid,
        "the TypeScript validation's output"
    );
    let rs_dlq = dlq("rs-validate.dlq");
    assert_eq!(rs_dlq.len(), 10, "{rs_dlq:?}");
    assert!(
        rs_dlq
            .iter()
            .any(|(_, r)| r == "field 'ts' is a string, expected integer"),
        "{rs_dlq:?}"
    );
    assert_eq!(
        dlq("ts-validate.dlq"),
        rs_dlq,
        "the TypeScript validation's dead letters"
    );
    // Routed to another topic by both.
    assert_eq!(seen("lang-buys").len(), 4, "both routed the two valid buys");
}

/// `sluice plugin new NAME --lang python|js|c` makes a plugin that builds with `sluice
/// plugin build` and runs unedited (the scaffolds count records and tag each with its number).
#[test]
fn python_typescript_and_c_scaffolds_build_and_run_unedited() {
    require_kcat();
    let work = tempfile::tempdir().unwrap();
    // The JavaScript tools, as `npm install` in the scaffold would bring them.
    let js_tools = repo().join("plugins/js/click-validate/node_modules/.bin");
    let path = format!(
        "{}:{}",
        js_tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let b = Broker::start();
    fs::create_dir_all(b.plugins_dir()).unwrap();
    for lang in ["python", "js", "c"] {
        let name = format!("new-{lang}");
        let o = sluice()
            .args(["plugin", "new", &name, "--lang", lang, "--dir"])
            .arg(work.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dir = work.path().join(&name);
        let o = sluice()
            .args(["plugin", "build"])
            .arg(&dir)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{lang}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let wasm = dir.join(format!("{name}.wasm"));
        assert!(wasm.exists(), "plugin build writes DIR/<name>.wasm");
        fs::copy(&wasm, b.plugins_dir().join(format!("{name}.wasm"))).unwrap();
        fs::copy(
            dir.join(format!("{name}.toml")),
            b.plugins_dir().join(format!("{name}.toml")),
        )
        .unwrap();
    }
    for lang in ["python", "js", "c"] {
        let name = format!("new-{lang}");
        wait_running(&b, &name, None);
        produce(&b, &format!("{name}-in"), &lines(&["one", "two"]), false);
        let out = wait_records(&b, &format!("{name}-out"), 2);
        assert_eq!(values(&out), ["one", "two"], "{lang}");
        if lang != "c" {
            // The stateful scaffolds number the records and tag them.
            assert_eq!(
                out[1].headers.get("n").map(String::as_str),
                Some("2"),
                "{lang}: {out:?}"
            );
            assert_eq!(out[0].headers.get("tag"), Some(&name), "{lang}");
        }
    }
    // Their state (a dict, an object) survives a kill -9: snapshotted by the SDKs, restored
    // from the checkpoint, the records since replayed.
    let mut b = b;
    b.restart();
    for lang in ["python", "js"] {
        let name = format!("new-{lang}");
        wait_running(&b, &name, None);
        produce(&b, &format!("{name}-in"), &lines(&["three"]), false);
        let out = wait_records(&b, &format!("{name}-out"), 3);
        assert_eq!(values(&out), ["one", "two", "three"], "{lang}");
        assert_eq!(
            out[2].headers.get("n").map(String::as_str),
            Some("3"),
            "{lang}: {out:?}"
        );
    }
}

/// The Python and JavaScript SDKs beyond filters: config, `task()`, routing to a named topic,
/// `fail`, an exception (dead-lettered with it as the reason), `retry` with the pipeline's
/// backoff, `tick` and `pause_ticks`, in plugins/testing/py-features and js-features.
#[test]
fn python_and_javascript_sdks_route_fail_retry_and_tick() {
    require_kcat();
    let js_tools = repo().join("plugins/js/click-validate/node_modules/.bin");
    let path = format!(
        "{}:{}",
        js_tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let b = Broker::start();
    let dir = b.plugins_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, src) in [("py", "py-features"), ("js", "js-features")] {
        let o = sluice()
            .args(["plugin", "build"])
            .arg(repo().join("plugins/testing").join(src))
            .arg("--out")
            .arg(dir.join(format!("{name}.wasm")))
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "inputs = [\"{name}-in\"]\noutput = \"{name}-out\"\n[retry]\nmax_attempts = 2\n\
                 backoff_ms = 100\n[config]\nroute_to = \"{name}-routed\"\n"
            ),
        )
        .unwrap();
    }
    // The Python plugin once more, never ticked: it must add no record to `ticks`.
    fs::copy(dir.join("py.wasm"), dir.join("quiet.wasm")).unwrap();
    fs::write(
        dir.join("quiet.toml"),
        "inputs = [\"quiet-in\"]\noutput = \"quiet-out\"\ntick_ms = 0\n[config]\n\
         route_to = \"quiet-routed\"\n",
    )
    .unwrap();
    for name in ["py", "js", "quiet"] {
        wait_running(&b, name, None);
        produce(
            &b,
            &format!("{name}-in"),
            &lines(&["a", "retry", "fail", "raise", "route", "b"]),
            false,
        );
    }
    for name in ["py", "js"] {
        let out = wait_records(&b, &format!("{name}-out"), 2);
        assert_eq!(values(&out), ["a", "b"], "{name}");
        assert_eq!(
            out[0].headers.get("where").map(String::as_str),
            Some(format!("{name}/{name}-in/0/False").as_str()),
            "{name}: task() {out:?}"
        );
        assert_eq!(
            values(&wait_records(&b, &format!("{name}-routed"), 1)),
            ["route"]
        );
        let dlq = wait_records(&b, &format!("{name}.dlq"), 3);
        let reasons: BTreeMap<String, String> = dlq
            .iter()
            .map(|r| (r.value.clone(), r.headers["sluice.dlq.reason"].clone()))
            .collect();
        assert_eq!(reasons["fail"], "failed on purpose", "{name}");
        assert!(
            reasons["raise"].contains("raised on purpose"),
            "{name}: {reasons:?}"
        );
        assert!(reasons["retry"].contains("not yet"), "{name}: {reasons:?}");
        assert_eq!(
            dlq.iter().find(|r| r.value == "retry").unwrap().headers["sluice.dlq.attempts"],
            "2"
        );
    }
    // One tick record from each plugin's input task.
    let ticks = wait_records(&b, "ticks", 2);
    assert_eq!(values(&ticks), ["tick", "tick"]);
    // The never-ticked one ran (its records came out) for well over a default tick period.
    assert_eq!(values(&wait_records(&b, "quiet-out", 2)), ["a", "b"]);
    // After their one tick record, both call `pause_ticks()`: no more ticks while idle.
    sleep(Duration::from_millis(1200));
    let ticks = |name: &str| pipeline(&b, name).unwrap()["ticks"].as_u64().unwrap();
    let before = (ticks("py"), ticks("js"));
    sleep(Duration::from_millis(1300));
    assert_eq!((ticks("py"), ticks("js")), before, "paused ticks went on");
    assert_eq!(ticks("quiet"), 0);
    assert_eq!(read_all(&b, "ticks").len(), 2, "tick_ms = 0 ticked");
}
