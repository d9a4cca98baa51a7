//! `sluice worker` end to end: workers with no broker in them run a stateful plugin on a
//! Kafka cluster (here a sluice broker, the cluster the team's CI can start in a second; the
//! same scenario runs on a three-node Apache Kafka with tests/kafka/workers.sh). Workers are
//! killed with kill -9 and added while records flow; a read_committed reader must see every
//! input counted exactly once, in order per key.
//!
//! Registered in runtime/Cargo.toml as `[[test]] name = "workers"`.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{repo, require_kcat, sluice, Broker};

/// The counter test plugin (state: a count per key; emits "KEY=COUNT"), built from source
/// once per run with `sluice plugin build`.
fn counter() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("worker-components");
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("counter.wasm");
        let o = sluice()
            .args(["plugin", "build"])
            .arg(repo().join("plugins/testing/counter"))
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run sluice plugin build");
        assert!(
            o.status.success(),
            "sluice plugin build failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
}

/// A `sluice worker` process with its own plugins directory and state.
struct Worker {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Worker {
    fn start(bootstrap: &str, group: &str) -> Worker {
        Worker::start_with(bootstrap, group, &[])
    }

    fn start_with(bootstrap: &str, group: &str, extra: &[&str]) -> Worker {
        let dir = tempfile::Builder::new()
            .prefix("sluice-worker-")
            .tempdir()
            .unwrap();
        let plugins = dir.path().join("plugins");
        fs::create_dir_all(&plugins).unwrap();
        let log = fs::File::create(dir.path().join("worker.log")).unwrap();
        let child = sluice()
            .arg("worker")
            .args(["--bootstrap", bootstrap, "--group", group])
            .arg("--plugins-dir")
            .arg(&plugins)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--session-timeout-ms", "6000"])
            .args(extra)
            .env("SLUICE_LOG", "info,librdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn sluice worker");
        Worker {
            child: Some(child),
            dir,
        }
    }

    /// Drops the pipeline's files into this worker's plugins directory: the component, then
    /// the manifest.
    fn deploy(&self, name: &str, manifest: &str) {
        let plugins = self.dir.path().join("plugins");
        let tmp = plugins.join(".counter.wasm.tmp");
        fs::copy(counter(), &tmp).unwrap();
        fs::rename(&tmp, plugins.join("counter.wasm")).unwrap();
        fs::write(plugins.join(format!("{name}.toml")), manifest).unwrap();
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn full_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }

    fn log(&self) -> String {
        let log = self.full_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first: a clean stop commits and leaves the group.
            let _ = support::command("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cli(b: &Broker, args: &[&str]) {
    let o = sluice()
        .args(args)
        .args(["--bootstrap", &b.bootstrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Produces `lines` ("key:value") to `topic` with acks=all.
fn produce(b: &Broker, topic: &str, lines: &[String]) {
    let mut child = sluice()
        .args(["produce", topic, "--key-separator", ":"])
        .args(["--bootstrap", &b.bootstrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "sluice produce failed");
}

/// Everything a read_committed consumer sees in `topic`: (key, value).
fn read_committed(b: &Broker, topic: &str) -> Vec<(String, String)> {
    let o = support::command("kcat")
        .args([
            "-C",
            "-b",
            &b.bootstrap(),
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-X", "isolation.level=read_committed", "-f", "%k\t%s\n"])
        .output()
        .expect("run kcat");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The workers' log tails and the broker's, for a failure message.
fn logs(b: &Broker, workers: &[&Worker]) -> String {
    let l: Vec<String> = workers.iter().map(|w| w.log()).collect();
    format!("{}\n{}", l.join("\n----\n"), b.log_tail())
}

/// Waits until a read_committed reader sees `n` records in `topic`; past `within`, fails
/// with `logs()` (the workers' and the broker's).
fn wait_outputs(b: &Broker, topic: &str, n: usize, within: Duration, logs: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    loop {
        let got = read_committed(b, topic).len();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {n} outputs in {topic} after {within:?}\n{}",
            logs()
        );
        sleep(Duration::from_millis(500));
    }
}

/// The counter plugin's output ("KEY=COUNT" under KEY) over `keys` keys each seen `each`
/// times: every key counted 1, 2, ... `each`, no gap, no repeat (the state moved with the
/// output wherever the task ran).
fn assert_counted_once(out: &[(String, String)], keys: usize, each: u64) {
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, v) in out {
        let (vk, n) = v.split_once('=').expect("KEY=COUNT");
        assert_eq!(vk, k);
        per_key
            .entry(k.clone())
            .or_default()
            .push(n.parse().unwrap());
    }
    assert_eq!(per_key.len(), keys);
    let want: Vec<u64> = (1..=each).collect();
    for (k, counts) in per_key {
        assert_eq!(counts, want, "counts of {k}");
    }
}

const MANIFEST: &str = r#"
inputs = ["clicks"]
output = "counts"
dead_letter = "counts-dlq"
wasm = "counter.wasm"
"#;

#[test]
fn workers_share_a_stateful_pipeline_exactly_once_across_kill9_and_new_workers() {
    require_kcat();
    // The workers pick KIP-848 (the broker offers it), whose session timeout is the broker's.
    let b = Broker::start_with_config(
        "group_consumer_session_timeout_ms = 6000\ngroup_consumer_heartbeat_interval_ms = 1000\n",
    );
    counter();
    cli(&b, &["topic", "create", "clicks", "--partitions", "4"]);
    let keys = 40;
    let batch = |from: usize, n: usize| -> Vec<String> {
        (from..from + n)
            .map(|i| format!("k{}:v{i}", i % keys))
            .collect()
    };
    let mut w1 = Worker::start(&b.bootstrap(), "g");
    let admin = format!("127.0.0.1:{}", support::free_port());
    let w2 = Worker::start_with(&b.bootstrap(), "g", &["--admin", &admin]);
    w1.deploy("count", MANIFEST);
    w2.deploy("count", MANIFEST);
    let per_round = 3000;
    produce(&b, "clicks", &batch(0, per_round));
    let wait_for = |n: usize, workers: &[&Worker]| {
        wait_outputs(&b, "counts", n, Duration::from_secs(120), || {
            logs(&b, workers)
        })
    };
    wait_for(per_round, &[&w1, &w2]);
    // Both workers run tasks: the group split the four partitions. Both chose KIP-848.
    for w in [&w1, &w2] {
        assert!(
            w.log().contains("group protocol chosen") && w.log().contains("protocol=Consumer"),
            "the broker offers KIP-848:\n{}",
            w.log()
        );
        // The first worker may have done the round alone before the group moved tasks to
        // the second (KIP-848 moves them at the next heartbeats).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !w.log().contains("task assigned to this worker") {
            assert!(
                Instant::now() < deadline,
                "a worker got no task:\n{}",
                w.log()
            );
            sleep(Duration::from_millis(200));
        }
    }
    // `sluice plugin list --workers` names a worker for each of the four tasks.
    let o = sluice()
        .args([
            "plugin",
            "list",
            "--workers",
            "g",
            "--bootstrap",
            &b.bootstrap(),
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "plugin list --workers: {listing}");
    let tasks: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("count ") && l.contains(" clicks "))
        .collect();
    assert_eq!(tasks.len(), 4, "one row per task:\n{listing}");
    assert!(
        tasks.iter().all(|l| l.contains("sluice-worker-")),
        "every task has a worker:\n{listing}"
    );
    // The same for scripts.
    let o = sluice()
        .args(["plugin", "list", "--workers", "g", "--format", "json"])
        .args(["--bootstrap", &b.bootstrap()])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    let rows: Vec<&serde_json::Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["pipeline"] == "count" && r["topic"] == "clicks")
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["worker"]
            .as_str()
            .is_some_and(|w| w.contains("sluice-worker-"))
            && r["partition"].is_i64()),
        "{rows:?}"
    );
    // The worker's own endpoint: its pipeline, tasks and counters, as the broker's admin API
    // shows them.
    let o = sluice()
        .args(["plugin", "list", "--admin", &admin])
        .output()
        .unwrap();
    let own = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && own.contains("count"),
        "plugin list --admin: {own}"
    );
    // kill -9 in the middle of a round: its open transaction must never be seen.
    produce(&b, "clicks", &batch(per_round, per_round));
    w1.kill9();
    produce(&b, "clicks", &batch(2 * per_round, per_round));
    let w3 = Worker::start(&b.bootstrap(), "g");
    w3.deploy("count", MANIFEST);
    produce(&b, "clicks", &batch(3 * per_round, per_round));
    let total = 4 * per_round;
    wait_for(total, &[&w2, &w3]);
    // Worker 2 ran tasks to the end (it was there before and after the kill).
    let metrics = http_get(&admin, "/metrics");
    let records_in = metrics
        .lines()
        .find(|l| l.starts_with("sluice_pipeline_records_in_total{pipeline=\"count\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no records_in metric:\n{metrics}"));
    assert!(records_in > 0 && records_in <= total as u64, "{records_in}");
    // A little longer: anything beyond `total` would be a duplicate.
    sleep(Duration::from_secs(3));
    let out = read_committed(&b, "counts");
    assert_eq!(out.len(), total, "every input exactly once in the output");
    assert_counted_once(&out, keys, (total / keys) as u64);
    // The input positions went to the pipeline's group in the tasks' transactions (nothing
    // else commits them): every input read, no lag.
    let committed = |b: &Broker| -> Vec<(i64, i64)> {
        let o = sluice()
            .args(["plugin", "list", "--workers", "g", "--format", "json"])
            .args(["--bootstrap", &b.bootstrap()])
            .output()
            .unwrap();
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        rows.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["pipeline"] == "count" && r["topic"] == "clicks")
            .map(|r| {
                (
                    r["committed"].as_i64().unwrap_or(-1),
                    r["lag"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    };
    let mut rows = committed(&b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows.iter().map(|r| r.0).sum::<i64>() != total as i64 && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
        rows = committed(&b);
    }
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(
        rows.iter().map(|r| r.0).sum::<i64>(),
        total as i64,
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.1 == 0), "{rows:?}");
}

/// A task's changelog partition is shared with other tasks, and a read_committed reader sees
/// nothing past the oldest transaction still open there. A task that commits checkpoints
/// while another's transaction is open (here a client's, standing in for a worker killed in
/// the middle of a commit) and then moves must be restored from its last checkpoint, not
/// from the last one before that transaction: the new owner waits for it to end. Restoring
/// the older one would count the input in between twice.
#[test]
fn a_restore_waits_for_transactions_open_on_the_changelog() {
    require_kcat();
    support::require_python_modules(&["confluent_kafka"]);
    let b = Broker::start_with_config(
        "group_consumer_session_timeout_ms = 6000\ngroup_consumer_heartbeat_interval_ms = 1000\n",
    );
    counter();
    cli(&b, &["topic", "create", "clicks", "--partitions", "1"]);
    let keys = 10;
    let per_round = 500;
    let batch = |from: usize| -> Vec<String> {
        (from..from + per_round)
            .map(|i| format!("k{}:v{i}", i % keys))
            .collect()
    };
    let mut w1 = Worker::start(&b.bootstrap(), "g");
    w1.deploy("count", MANIFEST);
    produce(&b, "clicks", &batch(0));
    let within = Duration::from_secs(120);
    wait_outputs(&b, "counts", per_round, within, || logs(&b, &[&w1]));
    let ready = b.scratch().join("held-open");
    let release = b.scratch().join("release");
    // On every changelog partition: whichever the task's key maps to.
    let holder = support::Script::spawn(
        &b,
        "python3",
        "txn_hold_open.py",
        &[
            "--topic",
            "g.count-changelog",
            "--ready",
            ready.to_str().unwrap(),
            "--release",
            release.to_str().unwrap(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the transaction was not opened");
        sleep(Duration::from_millis(100));
    }
    // Checkpoints committed past the open transaction's first record.
    produce(&b, "clicks", &batch(per_round));
    wait_outputs(&b, "counts", 2 * per_round, within, || logs(&b, &[&w1]));
    w1.kill9();
    let w2 = Worker::start(&b.bootstrap(), "g");
    w2.deploy("count", MANIFEST);
    produce(&b, "clicks", &batch(2 * per_round));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w2.full_log().contains("task assigned to this worker") {
        assert!(
            Instant::now() < deadline,
            "no task for the new worker\n{}",
            logs(&b, &[&w2])
        );
        sleep(Duration::from_millis(200));
    }
    // Time enough for the new owner to restore and replay, had it not waited.
    sleep(Duration::from_secs(5));
    assert!(
        w2.full_log()
            .contains("waiting for the transactions open on the changelog to end"),
        "the new owner did not wait for the open transaction\n{}",
        logs(&b, &[&w2])
    );
    fs::write(&release, b"").unwrap();
    let held = holder.finish(Duration::from_secs(60));
    assert!(held.success(), "{}", held.report());
    wait_outputs(&b, "counts", 3 * per_round, within, || logs(&b, &[&w2]));
    // A little longer: anything beyond would be input counted twice.
    sleep(Duration::from_secs(3));
    let out = read_committed(&b, "counts");
    assert_eq!(
        out.len(),
        3 * per_round,
        "every input exactly once in the output"
    );
    assert_counted_once(&out, keys, (3 * per_round / keys) as u64);
}

#[test]
fn plugin_deploy_reaches_every_worker_and_a_broken_version_is_refused_everywhere() {
    require_kcat();
    let b = Broker::start();
    cli(&b, &["topic", "create", "events", "--partitions", "2"]);
    // Nothing in the workers' plugins directories: the deployments topic is the only way in.
    let w1 = Worker::start(&b.bootstrap(), "d");
    let w2 = Worker::start(&b.bootstrap(), "d");
    let src = tempfile::tempdir().unwrap();
    fs::copy(counter(), src.path().join("counter.wasm")).unwrap();
    let manifest = src.path().join("tally.toml");
    fs::write(
        &manifest,
        "inputs = [\"events\"]\noutput = \"tallies\"\nwasm = \"counter.wasm\"\n",
    )
    .unwrap();
    let deploy = |path: &Path| {
        sluice()
            .args(["plugin", "deploy"])
            .arg(path)
            .args(["--workers", "d", "--bootstrap", &b.bootstrap()])
            .output()
            .unwrap()
    };
    let o = deploy(&manifest);
    assert!(
        o.status.success(),
        "plugin deploy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines = |from: usize, n: usize| -> Vec<String> {
        (from..from + n)
            .map(|i| format!("k{}:{i}", i % 10))
            .collect()
    };
    produce(&b, "events", &lines(0, 500));
    let wait_for = |n: usize| {
        wait_outputs(&b, "tallies", n, Duration::from_secs(90), || {
            format!("{}\n----\n{}", w1.log(), w2.log())
        })
    };
    wait_for(500);
    for w in [&w1, &w2] {
        assert!(
            w.log().contains("deployment received"),
            "a worker did not get the deployment:\n{}",
            w.log()
        );
    }
    // A component that does not compile: both workers refuse it, the old version runs on.
    fs::write(src.path().join("counter.wasm"), b"\0asm broken").unwrap();
    let o = deploy(&manifest);
    assert!(o.status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while ![&w1, &w2].iter().all(|w| {
        w.log()
            .contains("new version rejected; the running version keeps running")
    }) {
        assert!(
            Instant::now() < deadline,
            "the broken version was not refused by both:\n{}\n----\n{}",
            w1.log(),
            w2.log()
        );
        sleep(Duration::from_millis(300));
    }
    produce(&b, "events", &lines(500, 500));
    wait_for(1000);
    let out = read_committed(&b, "tallies");
    assert_eq!(
        out.len(),
        1000,
        "each input once, through the refused deploy"
    );
    let last: BTreeMap<String, u64> = out
        .iter()
        .map(|(k, v)| (k.clone(), v.rsplit('=').next().unwrap().parse().unwrap()))
        .fold(BTreeMap::new(), |mut m, (k, n)| {
            let e = m.entry(k).or_insert(0);
            *e = (*e).max(n);
            m
        });
    assert!(last.values().all(|&n| n == 100), "{last:?}");
    // Undeploy: the workers stop the pipeline.
    let o = sluice()
        .args(["plugin", "undeploy", "tally", "--workers", "d"])
        .args(["--bootstrap", &b.bootstrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while ![&w1, &w2]
        .iter()
        .all(|w| w.log().contains("pipeline undeployed"))
    {
        assert!(Instant::now() < deadline, "not undeployed:\n{}", w1.log());
        sleep(Duration::from_millis(300));
    }
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("worker admin endpoint");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default()
}

/// Workers on a cluster that enforces ACLs, as a managed Kafka does: a worker logged in with
/// SCRAM as a principal holding exactly the ACLs the README lists runs the pipeline exactly
/// once; a worker whose principal holds none gets nowhere, says why in its log, and writes
/// nothing.
#[test]
fn workers_run_with_only_the_acls_the_readme_lists() {
    require_kcat();
    let sasl = format!("127.0.0.1:{}", support::free_port());
    let b = Broker::start_prepared(
        &format!(
            "authorizer = \"acl\"\nsuper_users = [\"User:admin\"]\n\
             group_consumer_session_timeout_ms = 6000\n\
             group_consumer_heartbeat_interval_ms = 1000\n\
             [[listeners]]\nname = \"SASL\"\naddress = \"{sasl}\"\nsecurity = \"SASL_PLAINTEXT\"\n"
        ),
        |data| {
            for (u, p) in [
                ("admin", "adminpw"),
                ("worker", "workerpw"),
                ("intruder", "x"),
            ] {
                let o = sluice()
                    .args(["user", "create", u, "--password", p, "--data-dir"])
                    .arg(data)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            }
        },
    );
    counter();
    let login = |user: &str, password: &str| -> Vec<String> {
        [
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-username",
            user,
            "--sasl-password",
            password,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let admin = |args: &[&str]| {
        let o = sluice()
            .args(args)
            .args(["--bootstrap", &sasl])
            .args(login("admin", "adminpw"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    for t in ["clicks", "counts", "counts-dlq"] {
        admin(&["topic", "create", t, "--partitions", "2"]);
    }
    // The test's own producer and reader come in unauthenticated, on the plain listener.
    admin(&[
        "acl",
        "add",
        "--principal",
        "User:ANONYMOUS",
        "--operation",
        "Write",
        "--topic",
        "clicks",
    ]);
    admin(&[
        "acl",
        "add",
        "--principal",
        "User:ANONYMOUS",
        "--operation",
        "Read",
        "--topic",
        "counts",
    ]);
    // What the README says a worker group G needs: Read on the inputs; Write on the
    // outputs and dead-letter topics; Create, Read and Write on the retry topics
    // (PIPELINE.retry) and the changelogs and deployments (G.*); Read on the groups G.*;
    // Write and Describe on the transactional ids G.PIPELINE.*.
    let w = "User:worker";
    let allow = |op: &str, resource: &[&str]| {
        let mut a = vec!["acl", "add", "--principal", w, "--operation", op];
        a.extend_from_slice(resource);
        admin(&a);
    };
    allow("Read", &["--topic", "clicks"]);
    for t in ["counts", "counts-dlq"] {
        allow("Write", &["--topic", t]);
    }
    for op in ["Create", "Read", "Write"] {
        allow(op, &["--topic", "count.retry"]);
        allow(op, &["--topic", "sec.", "--prefixed"]);
    }
    allow("Read", &["--group", "sec.", "--prefixed"]);
    for op in ["Write", "Describe"] {
        allow(op, &["--transactional-id", "sec.count.", "--prefixed"]);
    }
    let start_as = |user: &str, password: &str| {
        let args = login(user, password);
        Worker::start_with(
            &sasl,
            "sec",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let intruder = start_as("intruder", "x");
    intruder.deploy("count", MANIFEST);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !intruder.log().to_ascii_lowercase().contains("authoriz") {
        assert!(
            Instant::now() < deadline,
            "the refused worker does not say why:\n{}",
            intruder.log()
        );
        sleep(Duration::from_millis(300));
    }
    drop(intruder);
    let worker = start_as("worker", "workerpw");
    worker.deploy("count", MANIFEST);
    let n = 1000;
    let keys = 10;
    let lines: Vec<String> = (0..n).map(|i| format!("k{}:v{i}", i % keys)).collect();
    produce(&b, "clicks", &lines);
    wait_outputs(&b, "counts", n, Duration::from_secs(120), || {
        format!("{}\n{}", worker.log(), b.log_tail())
    });
    sleep(Duration::from_secs(2));
    let out = read_committed(&b, "counts");
    assert_eq!(out.len(), n, "each input once");
    assert_counted_once(&out, keys, (n / keys) as u64);
}
