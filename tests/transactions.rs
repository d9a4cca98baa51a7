//! End-to-end tests of transactions: librdkafka's transactional producer (confluent-kafka)
//! and read_committed consumers against the real binary, with real SIGKILLs of the broker
//! and of the client. The scenarios are in tests/clients/transactions.py and
//! txn_ctp_worker.py, and the Java client's and Kafka Streams' in tests/clients/java (their
//! doc comments say exactly what each checks).
//!
//! Registered in runtime/Cargo.toml as `[[test]] name = "transactions"`.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{require_java_clients, require_python_modules, run_ok, Broker, Script};

const LIMIT: Duration = Duration::from_secs(60);

/// Commit, abort and commit again: read_committed consumers get exactly the committed
/// records, the LSO holds them behind an open transaction and equals the high watermark once
/// none is open.
#[test]
fn read_committed_sees_only_committed_transactions() {
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    run_ok(&broker, "python3", "transactions.py", &["basic"], LIMIT);
}

/// A new instance with the same transactional.id fences the old one (its commit fails as
/// fenced) and its open transaction is aborted; a transaction left open by a silent producer
/// is aborted after transaction.timeout.ms so readers move on.
#[test]
fn fencing_and_timeouts_abort_what_a_producer_left_open() {
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    run_ok(&broker, "python3", "transactions.py", &["fencing"], LIMIT);
    run_ok(&broker, "python3", "transactions.py", &["timeout"], LIMIT);
}

/// Consume-transform-produce with send_offsets_to_transaction, every fourth transaction
/// aborted and redone: the output holds each input exactly once, the group's offsets are
/// the input's end.
#[test]
fn consume_transform_produce_is_exactly_once() {
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    run_ok(&broker, "python3", "transactions.py", &["ctp"], LIMIT);
}

/// The same in durable mode (`durability = "fsync"`): every transaction-log and offsets-log
/// write is fsynced off the coordinators' locks, with those requests on the blocking pool.
#[test]
fn consume_transform_produce_is_exactly_once_in_durable_mode() {
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start_with_config("durability = \"fsync\"\n");
    run_ok(&broker, "python3", "transactions.py", &["ctp"], LIMIT);
}

/// The same loop as a separate worker process, while the broker is killed with SIGKILL and
/// restarted three times and the worker itself is killed with SIGKILL twice (a new instance
/// takes over, fencing the dead one and aborting its open transaction): a read_committed
/// reader of the output sees each of the 3000 inputs exactly once, and the group's committed
/// offsets end at the input's end.
#[test]
fn exactly_once_under_kill9_of_broker_and_client() {
    require_python_modules(&["confluent_kafka"]);
    let mut broker = Broker::start();
    let total = 3000;
    let io = [
        "--src", "ctp-in", "--dst", "ctp-out", "--group", "ctp", "--total", "3000",
    ];
    let mut feed = vec!["ctp-feed"];
    feed.extend_from_slice(&io);
    run_ok(&broker, "python3", "transactions.py", &feed, LIMIT);
    let progress = broker.scratch().join("ctp-progress.txt");
    let progress_arg = progress.to_str().unwrap().to_string();
    let committed = || -> usize {
        fs::read_to_string(&progress)
            .map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse::<usize>().ok())
                    .sum()
            })
            .unwrap_or(0)
    };
    let worker_args = [
        "--src",
        "ctp-in",
        "--dst",
        "ctp-out",
        "--group",
        "ctp",
        "--txn-id",
        "ctp-worker",
        "--total",
        "3000",
        "--progress",
        progress_arg.as_str(),
    ];
    let spawn = |b: &Broker| Script::spawn(b, "python3", "txn_ctp_worker.py", &worker_args);
    let mut worker = spawn(&broker);
    let mut restarts = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    // (records committed before the kill, what to kill)
    let plan = [
        (300, "broker"),
        (700, "worker"),
        (1100, "broker"),
        (1600, "worker"),
        (2100, "broker"),
    ];
    let mut next = 0;
    let mut stalls = 0;
    let mut last_seen = (0, Instant::now());
    loop {
        if Instant::now() > deadline {
            let done = worker.finish(Duration::ZERO);
            panic!(
                "the worker did not finish in time ({} of {total} committed)\n{}\n{}",
                committed(),
                done.report(),
                broker.log_tail()
            );
        }
        if !worker.running() {
            let done = worker.finish(Duration::ZERO);
            if done.success() {
                break;
            }
            // A fatal client error: the application restarts it, as in production.
            restarts += 1;
            assert!(
                restarts <= 8,
                "worker keeps failing\n{}\n{}",
                done.report(),
                broker.log_tail()
            );
            println!(
                "worker exited ({}); starting a new instance",
                done.report().lines().next().unwrap_or("")
            );
            worker = spawn(&broker);
            continue;
        }
        // librdkafka can hang in send_offsets_to_transaction after its coordinator broker
        // restarts, past the call's timeout (confluentinc/librdkafka#5456 and #5511); an
        // application's supervisor restarts such a worker, and so does this one.
        if committed() != last_seen.0 {
            last_seen = (committed(), Instant::now());
        } else if last_seen.1.elapsed() > Duration::from_secs(25) {
            stalls += 1;
            assert!(
                stalls <= 4,
                "the worker keeps stalling\n{}",
                broker.log_tail()
            );
            let done = worker.finish(Duration::ZERO);
            println!(
                "worker stalled at {} committed; killed it: {}",
                committed(),
                done.stderr
                    .lines()
                    .rev()
                    .find(|l| l.contains("File"))
                    .unwrap_or("")
            );
            worker = spawn(&broker);
            last_seen = (committed(), Instant::now());
            continue;
        }
        if next < plan.len() && committed() >= plan[next].0 {
            match plan[next].1 {
                "broker" => {
                    broker.kill9();
                    println!(
                        "killed the broker with SIGKILL after {} committed",
                        committed()
                    );
                    sleep(Duration::from_millis(300));
                    broker.restart();
                }
                _ => {
                    drop(worker);
                    println!(
                        "killed the worker with SIGKILL after {} committed",
                        committed()
                    );
                    worker = spawn(&broker);
                }
            }
            next += 1;
        }
        sleep(Duration::from_millis(20));
    }
    assert_eq!(
        next,
        plan.len(),
        "the worker finished before every kill landed"
    );
    let mut verify = vec!["ctp-verify"];
    verify.extend_from_slice(&io);
    let out = run_ok(&broker, "python3", "transactions.py", &verify, LIMIT);
    println!("{out}");
}

fn run_java_ok(broker: &Broker, class: &str, args: &[&str], limit: Duration) -> String {
    let done = Script::spawn_java(broker, class, args).finish(limit);
    assert!(
        done.success(),
        "Java scenario failed\n{}\n{}",
        done.report(),
        broker.log_tail()
    );
    print!("{}", done.stdout);
    done.stdout
}

/// The Java client (kafka-clients 4.4): commit/abort/commit under read_committed, fencing by a
/// new instance, and consume-transform-produce with sendOffsetsToTransaction (KIP-447 group
/// metadata): each input exactly once, offsets committed with the output. On transactions
/// version 2 (the default): no AddPartitionsToTxn or AddOffsetsToTxn is sent, EndTxn bumps
/// the epoch.
#[test]
fn java_client_transactions() {
    require_java_clients();
    let broker = Broker::start();
    run_java_ok(
        &broker,
        "sluice.Transactions",
        &[&broker.bootstrap()],
        Duration::from_secs(90),
    );
    let metrics = admin_metrics(&broker);
    assert!(
        metrics.contains("sluice_request_duration_seconds_count{api=\"EndTxn\"}")
            && !metrics.contains("api=\"AddPartitionsToTxn\"")
            && !metrics.contains("api=\"AddOffsetsToTxn\""),
        "the Java client did not use transactions version 2:\n{metrics}"
    );
}

fn admin_metrics(broker: &Broker) -> String {
    broker.admin_get("/metrics")
}

/// The same with the broker offering transactions version 1 (`transaction_version = 1`): the
/// Java client falls back to AddPartitionsToTxn/AddOffsetsToTxn, as with Kafka 3.x.
#[test]
fn java_client_transactions_version_1() {
    require_java_clients();
    let broker = Broker::start_with_config("transaction_version = 1\n");
    run_java_ok(
        &broker,
        "sluice.Transactions",
        &[&broker.bootstrap()],
        Duration::from_secs(90),
    );
    let metrics = admin_metrics(&broker);
    assert!(
        metrics.contains("api=\"AddPartitionsToTxn\""),
        "the Java client did not fall back to transactions version 1:\n{metrics}"
    );
}

/// Kafka Streams 4.4 with processing.guarantee=exactly_once_v2 and a state store: counts
/// exactly once, its changelog topic is compacted by config, and a new instance with an empty
/// state directory restores from the changelog and counts on.
#[test]
fn kafka_streams_exactly_once_v2() {
    require_java_clients();
    let broker = Broker::start();
    run_java_ok(
        &broker,
        "sluice.StreamsEos",
        &[&broker.bootstrap()],
        Duration::from_secs(150),
    );
}

fn sluice(broker: &Broker, args: &[&str]) -> (String, String) {
    let out = support::command(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["--bootstrap", &broker.bootstrap()])
        .output()
        .expect("run sluice");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "sluice {args:?} failed ({})\n{stdout}{stderr}\n{}",
        out.status,
        broker.log_tail()
    );
    (stdout, stderr)
}

/// `sluice txn`: a transaction left open by a producer that went away shows in `list` and
/// `describe` and is not hanging (its coordinator will time it out). With the coordinator's
/// state lost (its directory deleted while the broker is down), the partition's open
/// transaction is hanging: `hanging` finds it, `abort` ends it, and read_committed readers
/// move past it. A second one, in another topic, is ended by Kafka's own
/// `kafka-transactions.sh abort` (TransactionsCommand: DescribeProducers, then
/// WriteTxnMarkers).
#[test]
fn txn_cli_lists_and_aborts_hanging_transactions() {
    require_python_modules(&["confluent_kafka"]);
    require_java_clients();
    let mut broker = Broker::start();
    run_ok(
        &broker,
        "python3",
        "transactions.py",
        &["open", "--src", "left-java"],
        LIMIT,
    );
    let out = run_ok(
        &broker,
        "python3",
        "transactions.py",
        &["open", "--src", "left-open"],
        LIMIT,
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("transactional_id="))
        .expect("transactional id printed")
        .trim()
        .to_string();
    let (list, _) = sluice(&broker, &["txn", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{list}"));
    assert!(row.contains("Ongoing"), "{row}");
    let pid: i64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (json, _) = sluice(&broker, &["txn", "list", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("txn list --format json");
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|t| t["transactional_id"] == id.as_str()
                && t["producer_id"] == pid
                && t["state"] == "Ongoing"
                && t["partitions"][0]["topic"] == "left-open"),
        "{json}"
    );
    let (desc, _) = sluice(&broker, &["txn", "describe", &id]);
    assert!(
        desc.contains("left-open-0") && desc.contains("Ongoing"),
        "{desc}"
    );
    let (hanging, summary) = sluice(&broker, &["txn", "hanging"]);
    assert!(summary.contains("0 hanging"), "{hanging}{summary}");

    broker.kill9();
    fs::remove_dir_all(broker.data_dir.path().join("internal/transactions")).unwrap();
    broker.restart();
    let (hanging, summary) = sluice(&broker, &["txn", "hanging"]);
    assert!(summary.contains("2 hanging"), "{hanging}{summary}");
    let row = hanging
        .lines()
        .find(|l| l.starts_with("left-open "))
        .unwrap_or_else(|| panic!("no hanging row:\n{hanging}"));
    assert_eq!(
        row.split_whitespace().nth(2).unwrap(),
        pid.to_string(),
        "{row}"
    );
    let (aborted, _) = sluice(
        &broker,
        &[
            "txn",
            "abort",
            "--topic",
            "left-open",
            "--partition",
            "0",
            "--producer-id",
            &pid.to_string(),
        ],
    );
    assert!(aborted.contains("aborted"), "{aborted}");
    let (_, summary) = sluice(&broker, &["txn", "hanging"]);
    assert!(summary.contains("1 hanging"), "{summary}");
    // The open transaction's first record is the topic's first.
    run_java_ok(
        &broker,
        "org.apache.kafka.tools.TransactionsCommand",
        &[
            "--bootstrap-server",
            &broker.bootstrap(),
            "abort",
            "--topic",
            "left-java",
            "--partition",
            "0",
            "--start-offset",
            "0",
        ],
        Duration::from_secs(60),
    );
    let (_, summary) = sluice(&broker, &["txn", "hanging"]);
    assert!(summary.contains("0 hanging"), "{summary}");
    for topic in ["left-open", "left-java"] {
        run_ok(
            &broker,
            "python3",
            "transactions.py",
            &["stable", "--src", topic],
            LIMIT,
        );
    }
}

/// Log compaction (a topic with cleanup.policy=compact): 6000 updates over 20 keys and two
/// tombstones shrink to about one record per key, each key's latest value kept, offsets
/// increasing with gaps; the same after kill -9 and restart.
#[test]
fn compaction_keeps_the_latest_value_per_key() {
    require_python_modules(&["confluent_kafka"]);
    let mut broker =
        Broker::start_with_config("log_cleaner_backoff_ms = 300\nsegment_bytes_min = 1024\n");
    let topic = ["--topic", "compacted"];
    run_ok(
        &broker,
        "python3",
        "compaction.py",
        &["write", topic[0], topic[1]],
        LIMIT,
    );
    broker.kill9();
    broker.restart();
    run_ok(
        &broker,
        "python3",
        "compaction.py",
        &["verify", topic[0], topic[1]],
        LIMIT,
    );
}

/// Kafka's own compaction checker (LogCompactionTester, kafka-tools 4.4) against sluice's
/// cleaner: 200,000 keyed updates (20% of them deletes, compressed with zstd) over 40,000
/// keys into a compacted topic with 256 KB segments; after the cleaner's passes a consumer
/// reads the topic back and the tool checks, key by key, that the latest value (or the
/// deletion) of every key survived. The reduction it reports shows the cleaner ran. Three
/// topics and three cleaner threads (`log.cleaner.threads`), so partitions are cleaned at
/// the same time.
#[test]
fn kafka_log_compaction_tester() {
    require_java_clients();
    let broker = Broker::start_with_config(
        "log_cleaner_backoff_ms = 200\nlog_cleaner_threads = 3\nsegment_bytes_min = 1024\n[topic_defaults]\n\"segment.bytes\" = \"262144\"\n",
    );
    let out = run_java_ok(
        &broker,
        "org.apache.kafka.tools.LogCompactionTester",
        &[
            "--bootstrap-server",
            &broker.bootstrap(),
            "--messages",
            "200000",
            "--duplicates",
            "5",
            "--percent-deletes",
            "20",
            "--compression-type",
            "zstd",
            "--topics",
            "3",
            // Seconds, whatever its help says.
            "--sleep",
            "5",
        ],
        Duration::from_secs(240),
    );
    assert!(
        out.contains("0 mismatches") && out.contains("Data verification is completed"),
        "{out}"
    );
    // "N rows of data produced, M rows of data consumed (R% reduction)."
    let reduction: f64 = out
        .split('(')
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no reduction figure in {out}"));
    assert!(reduction > 30.0, "the cleaner barely ran: {out}");
}

/// kill -9 while the cleaner works: more updates arrive while the broker is killed at
/// uneven moments (the cleaner runs every 50 ms, so kills land mid-pass), and after every
/// restart the topic still holds each key's latest value, with offsets increasing.
#[test]
fn compaction_survives_kill9_mid_pass() {
    require_python_modules(&["confluent_kafka"]);
    let mut broker =
        Broker::start_with_config("log_cleaner_backoff_ms = 50\nsegment_bytes_min = 1024\n");
    let topic = ["--topic", "churn"];
    run_ok(
        &broker,
        "python3",
        "compaction.py",
        &["write", topic[0], topic[1]],
        LIMIT,
    );
    for (round, pause_ms) in [37u64, 113, 5, 260, 71].into_iter().enumerate() {
        run_ok(
            &broker,
            "python3",
            "compaction.py",
            &[
                "more",
                topic[0],
                topic[1],
                "--round",
                &(round + 1).to_string(),
            ],
            LIMIT,
        );
        sleep(Duration::from_millis(pause_ms));
        broker.kill9();
        broker.restart();
        run_ok(
            &broker,
            "python3",
            "compaction.py",
            &[
                "verify",
                topic[0],
                topic[1],
                "--round",
                &(round + 1).to_string(),
            ],
            LIMIT,
        );
    }
}

/// Kafka's own tools (kafka-tools 4.4): TransactionalMessageCopier copies 3000 records in
/// transactions of 100 with random aborts, committing its group's offsets with them; a
/// read_committed reader of the copy sees each record exactly once. Then kafka-transactions.sh
/// (TransactionsCommand) lists and describes the copier's transactional id and finds nothing
/// hanging.
#[test]
fn kafka_tools_transactional_copier_and_transactions_command() {
    require_java_clients();
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    let io = [
        "--src", "copy-in", "--dst", "copy-out", "--group", "copiers", "--total", "3000",
    ];
    let mut feed = vec!["ctp-feed"];
    feed.extend_from_slice(&io);
    run_ok(&broker, "python3", "transactions.py", &feed, LIMIT);
    let bootstrap = broker.bootstrap();
    let out = run_java_ok(
        &broker,
        "org.apache.kafka.tools.TransactionalMessageCopier",
        &[
            "--broker-list",
            &bootstrap,
            "--input-topic",
            "copy-in",
            "--input-partition",
            "0",
            "--output-topic",
            "copy-out",
            "--transactional-id",
            "copier-0",
            "--consumer-group",
            "copiers",
            "--transaction-size",
            "100",
            "--enable-random-aborts",
            "--use-group-metadata",
            "--group-mode",
        ],
        Duration::from_secs(120),
    );
    assert!(
        out.contains("\"stage\":\"ShutdownComplete\"") && out.contains("\"remaining\":0"),
        "{out}"
    );
    let mut verify = vec!["ctp-verify", "--copied"];
    verify.extend_from_slice(&io);
    run_ok(&broker, "python3", "transactions.py", &verify, LIMIT);
    let tool = "org.apache.kafka.tools.TransactionsCommand";
    let limit = Duration::from_secs(60);
    let list = run_java_ok(
        &broker,
        tool,
        &["--bootstrap-server", &bootstrap, "list"],
        limit,
    );
    assert!(
        list.contains("copier-0") && list.contains("CompleteCommit"),
        "{list}"
    );
    let describe = run_java_ok(
        &broker,
        tool,
        &[
            "--bootstrap-server",
            &bootstrap,
            "describe",
            "--transactional-id",
            "copier-0",
        ],
        limit,
    );
    assert!(describe.contains("copier-0"), "{describe}");
    let hanging = run_java_ok(
        &broker,
        tool,
        &[
            "--bootstrap-server",
            &bootstrap,
            "find-hanging",
            "--broker-id",
            "1",
        ],
        limit,
    );
    assert_eq!(
        hanging.lines().count(),
        1,
        "only the header line: {hanging}"
    );
}

/// Kafka Connect 4.4 in distributed mode (sluice.ConnectEos): its compacted config, offset and
/// status topics, its workers' group, and exactly-once source support (KIP-618: transactional
/// producers per task, zombies fenced, offsets read read_committed). A source counts to 30,000
/// into a topic and a sink appends what it reads to a file; the worker is killed with kill -9
/// mid-stream and a new one takes over: read_committed readers see every number exactly once,
/// the sink's file holds each.
#[test]
fn kafka_connect_exactly_once_source_survives_kill_9_of_its_worker() {
    require_java_clients();
    let broker = Broker::start();
    let (bootstrap, port) = (broker.bootstrap(), support::free_port().to_string());
    let sink = broker.scratch().join("connect-sink.txt");
    let (sink, count) = (sink.to_str().unwrap(), "30000");
    let worker =
        || Script::spawn_java(&broker, "sluice.ConnectEos", &["worker", &bootstrap, &port]);
    let first = worker();
    // Above the scenario's own waits (verify: up to 120 s for the numbers, 60 s for the
    // sink), so a slow run fails with its message rather than the harness's kill.
    let limit = Duration::from_secs(200);
    run_java_ok(
        &broker,
        "sluice.ConnectEos",
        &["start", &bootstrap, &port, count, sink],
        limit,
    );
    // kill -9 (a Script's finish past its limit), while the source is still counting.
    let killed = first.finish(Duration::ZERO);
    assert!(
        killed.status.is_none(),
        "the first worker had exited: {}",
        killed.report()
    );
    let _second = worker();
    run_java_ok(
        &broker,
        "sluice.ConnectEos",
        &["verify", &bootstrap, &port, count, sink],
        limit,
    );
}

/// kafkajs 2.2.4: a transactional producer's commit and abort under kafkajs' read_committed
/// consumer, and sendOffsets committed with a transaction.
#[test]
fn kafkajs_transactions() {
    support::require_kafkajs();
    let broker = Broker::start();
    run_ok(&broker, "node", "node/kafkajs_transactions.js", &[], LIMIT);
}
