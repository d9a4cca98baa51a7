//! End-to-end tests of consumer groups, durable committed offsets, the idempotent producer and
//! `sluice group`: real clients (confluent-kafka, kafka-python) over real sockets against the
//! real binary, and real SIGKILLs of the broker. Each test starts its own broker (default
//! config: group.initial.rebalance.delay.ms 3000, min session timeout 6000) and runs scenario
//! scripts from tests/clients (see each script's docstring for exactly what it checks).
//!
//! Registered in runtime/Cargo.toml as `[[test]] name = "groups" path = "../tests/groups.rs"`.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::{require_kafkajs, require_python_modules, run_ok, Broker, Script};

/// Every scenario finishes well within this; a script still running is killed and fails.
const LIMIT: Duration = Duration::from_secs(55);

/// Three confluent-kafka members split 6 partitions 2/2/2; one leaves (3/3); a member frozen
/// with SIGSTOP and one killed with SIGKILL are evicted after the session timeout; after all
/// members stop, a new one resumes exactly at the committed offsets.
#[test]
fn confluent_group_membership_and_resume() {
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    run_ok(
        &broker,
        "python3",
        "groups_confluent.py",
        &["membership"],
        LIMIT,
    );
}

/// The same with kafka-python's own coordinator client and its range, roundrobin and
/// cooperative-sticky assignors: even splits, leave, commits and exact resume.
#[test]
fn kafka_python_group_membership_and_resume() {
    require_python_modules(&["kafka"]);
    let broker = Broker::start();
    run_ok(&broker, "python3", "groups_kafka_python.py", &[], LIMIT);
}

/// One `sluice group describe` row: partition -> (committed, log end, lag), for `topic`.
fn describe_rows(
    broker: &Broker,
    group: &str,
    topic: &str,
) -> (String, BTreeMap<i32, (i64, i64, i64)>) {
    let out = support::command(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "group",
            "describe",
            group,
            "--bootstrap",
            &broker.bootstrap(),
        ])
        .output()
        .expect("run sluice group describe");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "sluice group describe {group} failed ({})\n{stdout}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        broker.log_tail()
    );
    let mut rows = BTreeMap::new();
    for line in stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && f[0] == topic {
            let n = |s: &str| {
                s.parse::<i64>()
                    .unwrap_or_else(|_| panic!("not a number in describe row: {line}"))
            };
            rows.insert(n(f[1]) as i32, (n(f[2]), n(f[3]), n(f[4])));
        }
    }
    (stdout, rows)
}

/// Offsets committed (with metadata, rewinds, by a member and by a non-member, and one group
/// deleted) are all still there after the broker is killed with SIGKILL right after the last
/// commit and restarted on the same data directory: OffsetFetch via the client's committed(),
/// `sluice group describe`, and a new member resuming at them.
#[test]
fn committed_offsets_survive_kill9() {
    require_python_modules(&["confluent_kafka"]);
    let mut broker = Broker::start();
    let state = broker.scratch().join("committed.json");
    let state_arg = state.to_str().unwrap().to_string();
    let common = [
        "--group", "durable", "--topic", "offsets", "--state", &state_arg,
    ];
    let args = |mode: &'static str| -> Vec<&str> {
        std::iter::once(mode)
            .chain(common.iter().copied())
            .collect()
    };
    run_ok(
        &broker,
        "python3",
        "groups_confluent.py",
        &args("commit"),
        LIMIT,
    );

    broker.kill9();
    println!("killed the broker with SIGKILL right after the commits");
    broker.restart();

    let expected: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state).expect("state file")).unwrap();
    for (group, offsets) in expected["groups"].as_object().expect("groups") {
        let (out, rows) = describe_rows(&broker, group, "offsets");
        let want: BTreeMap<i32, (i64, i64, i64)> = offsets
            .as_object()
            .unwrap()
            .iter()
            .map(|(p, v)| {
                let committed = v[0].as_i64().unwrap();
                (p.parse().unwrap(), (committed, 100, 100 - committed))
            })
            .collect();
        assert_eq!(
            rows, want,
            "`sluice group describe {group}` after kill -9 and restart: (committed, log end, lag) per partition\n{out}\n{}",
            broker.log_tail()
        );
    }
    run_ok(
        &broker,
        "python3",
        "groups_confluent.py",
        &args("check-committed"),
        LIMIT,
    );
}

/// Static members restarting within the session timeout get their partitions back without
/// the other member being rebalanced (first a follower restarts, then the group leader).
#[test]
fn static_member_restart_keeps_assignment_without_rebalance() {
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    run_ok(&broker, "python3", "groups_static.py", &[], LIMIT);
}

/// An idempotent producer (5 requests in flight, tiny batches) writes 24,000 records while
/// the broker is killed with SIGKILL and restarted three times; every record must end up stored
/// exactly once, in produce order per partition.
#[test]
fn idempotent_producer_survives_kill9() {
    require_python_modules(&["confluent_kafka"]);
    let mut broker = Broker::start();
    let progress = broker.scratch().join("progress.txt");
    let progress_arg = progress.to_str().unwrap().to_string();
    let acked = || {
        fs::read_to_string(&progress)
            .map(|s| s.lines().count() * 1000)
            .unwrap_or(0)
    };
    let mut producer = Script::spawn(
        &broker,
        "python3",
        "idempotent_kill9.py",
        &[
            "--count",
            "24000",
            "--rate",
            "3000",
            "--progress",
            &progress_arg,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for threshold in [4000, 10000, 16000] {
        while acked() < threshold {
            if !producer.running() || Instant::now() > deadline {
                let done = producer.finish(Duration::ZERO);
                panic!(
                    "producer did not get {threshold} records acknowledged ({} so far)\n{}\n{}",
                    acked(),
                    done.report(),
                    broker.log_tail()
                );
            }
            sleep(Duration::from_millis(10));
        }
        assert!(
            producer.running(),
            "producer finished before the kill; the kill must land mid-run"
        );
        broker.kill9();
        println!(
            "killed the broker with SIGKILL after {} acknowledgements",
            acked()
        );
        sleep(Duration::from_millis(300));
        broker.restart();
    }
    let done = producer.finish(LIMIT);
    assert!(
        done.success(),
        "idempotent producer scenario failed\n{}\n{}",
        done.report(),
        broker.log_tail()
    );
    print!("{}", done.stdout);
}

/// `sluice group describe` shows committed offset, log end and lag per partition; `group reset`
/// is refused for an active group, and --to-earliest / --to-offset make the next consumer
/// re-read from there; `group list` and `group delete`.
#[test]
fn cli_group_describe_lag_and_reset() {
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    let sluice = env!("CARGO_BIN_EXE_sluice");
    run_ok(
        &broker,
        "python3",
        "groups_cli.py",
        &["--sluice", sluice],
        LIMIT,
    );
}

/// KIP-848 (`group.protocol=consumer`, ConsumerGroupHeartbeat): the broker's assignor gives
/// three members 2 partitions each without any record read twice, 3/3 after one leaves, and a
/// fresh member resumes exactly at the offsets committed with member epochs.
#[test]
fn consumer_protocol_group_assigns_and_resumes() {
    require_python_modules(&["confluent_kafka"]);
    let broker = Broker::start();
    run_ok(
        &broker,
        "python3",
        "groups_consumer_protocol.py",
        &[],
        LIMIT,
    );
}

/// kafkajs 2.2.4 consumer groups (its own JoinGroup/SyncGroup client and assigner): two members
/// split 4 partitions 2/2, every record is read once, and a later member resumes exactly at the
/// auto-committed offsets.
#[test]
fn kafkajs_consumer_group_splits_and_resumes() {
    require_kafkajs();
    let broker = Broker::start();
    run_ok(
        &broker,
        "node",
        "node/kafkajs_consumer_group.js",
        &[],
        LIMIT,
    );
}

/// Share groups (KIP-932) with confluent-kafka's ShareConsumer: two members share one
/// partition's records (each delivered once), released records come back with a higher
/// delivery count, a poison record stops after 5 deliveries, and records held by a member that
/// quits without acknowledging go to another member.
#[test]
fn share_group_work_queue() {
    require_python_modules(&["confluent_kafka"]);
    let mut broker = Broker::start_with_config("share_auto_offset_reset = \"earliest\"\n");
    run_ok(&broker, "python3", "share_groups.py", &[], LIMIT);
    // Progress is durable: after kill -9 the group resumes after what it accepted.
    run_ok(
        &broker,
        "python3",
        "share_groups.py",
        &["before-restart"],
        LIMIT,
    );
    broker.kill9();
    broker.restart();
    run_ok(
        &broker,
        "python3",
        "share_groups.py",
        &["after-restart"],
        LIMIT,
    );
}
