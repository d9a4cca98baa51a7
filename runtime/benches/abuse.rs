//! The attacker half of `abuse_bench.sh`: one kind of abuse against a running broker for a
//! while, then a line saying what the broker did about it. Not a test (it asserts nothing
//! about the broker); the script measures the broker's memory and other clients' throughput
//! while this runs.
//!
//!   abuse MODE BOOTSTRAP SECONDS [ARG]
//!
//! Modes:
//! - `conns N [IPS]`: opens N connections, spread over IPS source addresses 127.0.0.2.. (so
//!   per-IP limits are met or not), each asking ApiVersions once, and holds them.
//! - `frames SASL_ADDR`: malformed frames in a loop (a 2 GiB length, a negative one, garbage
//!   bodies, requests before authentication and frames over the 512 KiB pre-auth limit on a
//!   SASL listener), plus 16 connections that each send most of a 90 MiB request and stall.
//! - `fetch TOPIC`: 32 connections fetching TOPIC from offset 0 with max_bytes = 2 GiB.
//! - `zipbomb TOPIC`: 8 connections producing gzip batches of one record of 250 MiB of zeros
//!   (about 250 KB on the wire) to TOPIC (a compacted one makes the broker look inside).
//! - `pids TOPIC`: InitProducerId in a loop, and idempotent batches from made-up producer ids
//!   to TOPIC's partition 0.
//! - `groups`: JoinGroup with a new group id each time (then gone without leaving), and
//!   OffsetCommit to new group ids.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, FetchRequest, GroupId, InitProducerIdRequest, JoinGroupRequest,
    MetadataRequest, OffsetCommitRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice::client::Client;
use sluice::records::{encode_batch, encode_batch_as, Compression, ProducerFields, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    /// Counts one answer: accepted when `accepted` says so, else refused; a failed call is an
    /// error. Whether the caller's connection is still worth using.
    fn tally<T, E>(&self, r: Result<T, E>, accepted: impl FnOnce(&T) -> bool) -> bool {
        let counter = match &r {
            Ok(t) if accepted(t) => &self.ok,
            Ok(_) => &self.refused,
            Err(_) => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        r.is_ok()
    }

    fn line(&self) -> String {
        format!(
            "ok={} refused={} errors={}",
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        )
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A request frame as a client would send it: length, header, body.
fn frame<R: kafka_protocol::protocol::Request>(req: &R, version: i16) -> Vec<u8> {
    sluice::client::encode_request(req, version, 1, "abuse")
        .expect("encode")
        .to_vec()
}

/// Waits for every spawned attacker to end.
async fn finish(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Whether the broker closed `s` (or answered nothing) within a second.
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn conns(addr: SocketAddr, n: usize, ips: usize, hold: Duration) -> String {
    let counts = Arc::new(Counts::default());
    let hello = frame(&ApiVersionsRequest::default(), 0);
    let mut held = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let src: SocketAddr = format!("127.0.0.{}:0", 2 + i % ips.max(1))
            .parse()
            .expect("address");
        let attempt = async {
            let sock = TcpSocket::new_v4()?;
            sock.bind(src)?;
            let mut s = sock.connect(addr).await?;
            s.write_all(&hello).await?;
            let len = s.read_i32().await?;
            let mut body = vec![0u8; len.max(0) as usize];
            s.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(s)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(s)) => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
                held.push(s);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let opened_in = t0.elapsed();
    tokio::time::sleep(hold.saturating_sub(opened_in)).await;
    format!(
        "conns: {} connections tried from {} addresses in {:.1}s: answered (held) / closed by the broker / failed: {}",
        n,
        ips,
        opened_in.as_secs_f64(),
        counts.line()
    )
}

async fn frames(addr: SocketAddr, sasl: SocketAddr, until: Instant) -> String {
    let counts = Arc::new(Counts::default());
    // Stalled giants: most of a 90 MiB request each, then nothing.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let c = counts.clone();
        stalled.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                c.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let len: i32 = 90 << 20;
            let mut head = len.to_be_bytes().to_vec();
            // A produce header, so it looks like a real request until it stops.
            head.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1]);
            if s.write_all(&head).await.is_err() {
                return;
            }
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..85 {
                if s.write_all(&chunk).await.is_err() {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            c.ok.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(until.into()).await;
            drop(s);
        }));
    }
    let metadata = frame(&MetadataRequest::default().with_topics(None), 9);
    let mut garbage = vec![0u8; 300];
    garbage[..4].copy_from_slice(&296i32.to_be_bytes());
    for (i, b) in garbage.iter_mut().enumerate().skip(4) {
        *b = (i * 131 % 251) as u8;
    }
    let mut over_preauth = (600i32 << 10).to_be_bytes().to_vec();
    over_preauth.extend(std::iter::repeat_n(0u8, 600 << 10));
    let bad: Vec<(SocketAddr, Vec<u8>)> = vec![
        (addr, i32::MAX.to_be_bytes().to_vec()),
        (addr, (-5i32).to_be_bytes().to_vec()),
        (addr, garbage),
        (sasl, metadata),
        (sasl, over_preauth),
    ];
    let mut kinds = [0u64; 5];
    while Instant::now() < until {
        for (k, (to, bytes)) in bad.iter().enumerate() {
            let Ok(mut s) = TcpStream::connect(to).await else {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let _ = s.write_all(bytes).await;
            if closed(&mut s).await {
                kinds[k] += 1;
            } else {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    finish(stalled).await;
    format!(
        "frames: closed by the broker: 2 GiB length {}, negative length {}, garbage {}, \
         unauthenticated Metadata {}, 600 KiB before auth {}; stalled 90 MiB requests: 85 MiB written (into the broker or the kernel's buffers) {} / cut off {}; not closed within 1s or failed {}",
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3],
        kinds[4],
        counts.ok.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed)
    )
}

async fn fetch(addr: String, topic: String, until: Instant) -> String {
    let counts = Arc::new(Counts::default());
    let bytes = Arc::new(AtomicU64::new(0));
    let max_seen = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (addr, topic, c, bytes, max_seen) = (
            addr.clone(),
            topic.clone(),
            counts.clone(),
            bytes.clone(),
            max_seen.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = Client::connect(&addr).await else {
                c.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(100)
                .with_min_bytes(1)
                .with_max_bytes(i32::MAX)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name(&topic))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(i32::MAX)])]);
            while Instant::now() < until {
                match client.call(&req, 12).await {
                    Ok(r) => {
                        let n: usize = r
                            .responses
                            .iter()
                            .flat_map(|t| &t.partitions)
                            .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
                            .sum();
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        max_seen.fetch_max(n as u64, Ordering::Relaxed);
                        c.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    finish(tasks).await;
    format!(
        "fetch: 32 connections asking 2 GiB each: {} fetches, {:.0} MB received, largest response {:.1} MiB; failed {}",
        counts.ok.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) as f64 / 1e6,
        max_seen.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        counts.errors.load(Ordering::Relaxed)
    )
}

/// Whether a one-partition produce was accepted.
fn produced(r: &kafka_protocol::messages::ProduceResponse) -> bool {
    r.responses[0].partition_responses[0].error_code == 0
}

fn produce(topic: &str, partition: i32, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])])
}

async fn zipbomb(addr: String, topic: String, until: Instant) -> String {
    let record = Record {
        offset: 0,
        timestamp: 0,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from(vec![0u8; 250 << 20])),
        headers: vec![],
    };
    let batch = encode_batch(&[record], Compression::Gzip).expect("encode");
    let wire = batch.len();
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (addr, topic, c, batch) = (addr.clone(), topic.clone(), counts.clone(), batch.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = Client::connect(&addr).await else {
                c.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let req = produce(&topic, 0, batch);
            while Instant::now() < until {
                if !c.tally(client.call(&req, 9).await, produced) {
                    return;
                }
            }
        }));
    }
    finish(tasks).await;
    format!(
        "zipbomb: batches of 250 MiB decompressed, {wire} B on the wire: accepted / refused / failed: {}",
        counts.line()
    )
}

async fn pids(addr: String, topic: String, until: Instant) -> String {
    let counts = Arc::new(Counts::default());
    let inits = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    {
        let (addr, inits, c) = (addr.clone(), inits.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = Client::connect(&addr).await else {
                c.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let req = InitProducerIdRequest::default()
                .with_transaction_timeout_ms(-1)
                .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                .with_producer_epoch(-1);
            while Instant::now() < until {
                match client.call(&req, 4).await {
                    Ok(_) => inits.fetch_add(1, Ordering::Relaxed),
                    Err(_) => return,
                };
            }
        }));
    }
    for w in 0..4i64 {
        let (addr, topic, c) = (addr.clone(), topic.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = Client::connect(&addr).await else {
                c.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut pid = 1_000_000_000 * (w + 1);
            while Instant::now() < until {
                // Ten batches from ten made-up producers in one request.
                let mut all = Vec::new();
                for _ in 0..10 {
                    pid += 1;
                    let r = Record {
                        offset: 0,
                        timestamp: 0,
                        key: None,
                        value: Some(Bytes::from_static(b"x")),
                        headers: vec![],
                    };
                    let b = encode_batch_as(
                        &[r],
                        Compression::None,
                        Some(ProducerFields {
                            producer_id: pid,
                            epoch: 0,
                            base_sequence: 0,
                        }),
                    )
                    .expect("encode");
                    all.extend_from_slice(&b);
                }
                let r = client.call(&produce(&topic, 0, Bytes::from(all)), 9).await;
                if !c.tally(r, produced) {
                    return;
                }
            }
        }));
    }
    finish(tasks).await;
    format!(
        "pids: {} InitProducerId; requests of 10 batches from made-up producer ids accepted / refused / failed: {}",
        inits.load(Ordering::Relaxed),
        counts.line()
    )
}

async fn groups(addr: String, topic: String, until: Instant) -> String {
    let joins = Arc::new(Counts::default());
    let commits = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (addr, c) = (addr.clone(), joins.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < until {
                // A new connection each time: a member that never leaves, on a connection
                // that goes away.
                let Ok(mut client) = Client::connect(&addr).await else {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                i += 1;
                let req = JoinGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(format!("churn-{w}-{i}"))))
                    .with_session_timeout_ms(6000)
                    .with_rebalance_timeout_ms(6000)
                    .with_protocol_type(StrBytes::from_static_str("consumer"))
                    .with_protocols(vec![JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]))]);
                // 79, MEMBER_ID_REQUIRED: joined (KIP-394's first step). A failed call is
                // counted and the next join uses a new connection anyway.
                c.tally(client.call(&req, 5).await, |r| {
                    r.error_code == 0 || r.error_code == 79
                });
            }
        }));
    }
    for w in 0..2u64 {
        let (addr, topic, c) = (addr.clone(), topic.clone(), commits.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = Client::connect(&addr).await else {
                c.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut i = 0u64;
            while Instant::now() < until {
                i += 1;
                let req = OffsetCommitRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(format!("commit-{w}-{i}"))))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(name(&topic))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(0)])]);
                let r = client.call(&req, 8).await;
                if !c.tally(r, |r| r.topics[0].partitions[0].error_code == 0) {
                    return;
                }
            }
        }));
    }
    finish(tasks).await;
    format!(
        "groups: JoinGroup with a new group id joined / refused / failed: {}; OffsetCommit to a new group id: {}",
        joins.line(),
        commits.line()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; anything else is ours.
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let usage = "usage: abuse conns|frames|fetch|zipbomb|pids|groups BOOTSTRAP SECONDS [ARG..]";
    let (Some(mode), Some(boot), Some(secs)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().expect("SECONDS");
    let until = Instant::now() + Duration::from_secs(secs);
    let addr: SocketAddr = boot.parse().expect("BOOTSTRAP as IP:PORT");
    let arg = |i: usize| args.get(i).map(|s| s.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let boot = boot.to_string();
    let line = rt.block_on(async move {
        match *mode {
            "conns" => {
                let n = arg(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
                let ips = arg(4).and_then(|s| s.parse().ok()).unwrap_or(1);
                conns(addr, n, ips, Duration::from_secs(secs)).await
            }
            "frames" => {
                let sasl: SocketAddr = arg(3).expect("SASL_ADDR").parse().expect("SASL_ADDR");
                frames(addr, sasl, until).await
            }
            "fetch" => fetch(boot, arg(3).expect("TOPIC"), until).await,
            "zipbomb" => zipbomb(boot, arg(3).expect("TOPIC"), until).await,
            "pids" => pids(boot, arg(3).expect("TOPIC"), until).await,
            "groups" => groups(boot, arg(3).expect("TOPIC"), until).await,
            other => {
                eprintln!("unknown mode {other}; {usage}");
                std::process::exit(2);
            }
        }
    });
    println!("{line}");
}
