//! The fuzz targets' bodies: everything that parses bytes from outside, fed any bytes. Each
//! must return a value or an error, never panic, hang or allocate from a claimed length.
//!
//! They live in the library so that they always build with it: `runtime/fuzz` wraps each in
//! a libFuzzer target (coverage-guided, `tests/stress/fuzz.sh`), and the unit test below runs
//! each on mutated inputs for a few seconds in every CI run.

use std::sync::{Arc, Mutex};

use crate::broker::{Broker, BrokerConfig};
use crate::disk::sim::{Mount, SimDisk};
use crate::log::{flush, Log, LogConfig};

struct World {
    // The broker's data directory is on a simulated disk: a request that creates a topic
    // with thousands of partitions costs memory, not thousands of fsyncs, so executions
    // stay fast.
    _disk: Mount,
    broker: Arc<Broker>,
    rt: tokio::runtime::Runtime,
}

impl World {
    fn new() -> World {
        let disk = SimDisk::mount();
        let mut config = BrokerConfig::with_defaults(disk.root().join("data"));
        config.default_partitions = 2;
        let broker = Broker::open(config).expect("broker");
        let mut rt = tokio::runtime::Builder::new_current_thread();
        rt.enable_time();
        // Paused time: a long-polling fetch completes at once instead of waiting.
        #[cfg(feature = "fuzzing")]
        rt.start_paused(true);
        World {
            _disk: disk,
            broker: Arc::new(broker),
            rt: rt.build().expect("runtime"),
        }
    }
}

/// Inputs one broker serves before it is replaced by a fresh one. What earlier inputs
/// created (topics with thousands of partitions, groups, producers) makes every later
/// request slower: without a reset a run fell from 1,200 to 240 executions a second.
const INPUTS_PER_WORLD: u32 = 5_000;

/// One Kafka request frame (header and body) through the protocol dispatcher.
pub fn request(data: &[u8]) {
    static W: Mutex<Option<(World, u32)>> = Mutex::new(None);
    let mut guard = W.lock().unwrap_or_else(|e| e.into_inner());
    if guard
        .as_ref()
        .is_none_or(|(_, served)| *served >= INPUTS_PER_WORLD)
    {
        // The old world goes first: its disk mount and runtime are released before the
        // new ones are made.
        *guard = None;
        *guard = Some((World::new(), 0));
    }
    let Some((w, served)) = guard.as_mut() else {
        return;
    };
    *served += 1;
    // Frames with an odd correlation id arrive on a SASL listener, where everything but the
    // SASL exchange must be refused until it succeeds.
    let mut session = if data.get(7).is_some_and(|b| b & 1 == 1) {
        let mut l = crate::auth::Listener::plaintext("127.0.0.1", 9092);
        l.security = crate::auth::Security::SaslPlaintext;
        crate::auth::Session::new("fuzz".into(), Arc::new(l), &crate::auth::sasl::Mech::ALL)
    } else {
        crate::auth::Session::plaintext("fuzz")
    };
    // Without paused time (unit tests) a long poll is cut short.
    let frame = bytes::Bytes::copy_from_slice(data);
    let _ = w.rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_millis(100),
            crate::protocol::handle(&w.broker, &mut session, frame),
        )
        .await
    });
}

/// Record batches through header validation and record decoding with every codec, the
/// produce path's record peek (keys, timestamps) and recompression, and the same bytes as an
/// old client's message set (magic 0 and 1) and as batches to convert down.
pub fn records(data: &[u8]) {
    let b = bytes::Bytes::copy_from_slice(data);
    if let Ok(batches) = crate::log::batch::split_batches(data) {
        for (pos, h) in batches {
            let one = b.slice(pos..pos + h.size);
            let mut left = 1 << 20;
            let _ = crate::records::peek_records(&one, &mut left, |_, _| {});
            let to = (crate::records::Compression::Zstd, Some(1));
            let _ = crate::records::recompress(&one, &h, to, &mut left);
        }
    }
    let _ = crate::records::decode_batches(b.clone());
    let _ = crate::records::legacy::up_convert(b.clone(), 0);
    let _ = crate::records::legacy::down_convert(b, 1);
}

/// TLS records after the handshake, through the record layer's reader: see
/// `server::tls::fuzz_records` for the script the bytes are read as.
pub fn tls_records(data: &[u8]) {
    crate::server::tls::fuzz_records(data);
}

/// Plugin manifests (written by users) and checkpoints (on disk, possibly damaged).
pub fn plugin_files(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::plugin::manifest::Manifest::parse(
            std::path::Path::new("/plugins/fuzz.toml"),
            text,
        );
    }
    let _ = crate::plugin::checkpoint::Checkpoint::decode(data);
}

/// Splits `data` into pieces, each prefixed by a 2-byte big-endian length.
fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 10 {
        let n = (usize::from(data[0]) << 8 | usize::from(data[1])).min(data.len() - 2);
        out.push(&data[2..2 + n]);
        data = &data[2 + n..];
    }
    out
}

/// A partition's files on disk (segments, their indexes, the recovery point) through log
/// recovery, reads, time lookups, compaction and an append after recovery. A disk can hand
/// back anything.
pub fn segments(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let segments = usize::from(data[0] % 3) + 1;
    let stride = i64::from(data[1]) * 7;
    let recovery = i64::from(data[2]) * 5;
    let parts = pieces(&data[3..]);
    // On a simulated disk: the same storage code, no fsyncs, so executions stay fast.
    let disk = SimDisk::mount();
    let dir = disk.root().join("p");
    if crate::disk::create_dir_all(&dir).is_err() {
        return;
    }
    for s in 0..segments {
        let stem = dir.join(format!("{:020}", s as i64 * stride));
        for (k, ext) in ["log", "index", "timeindex"].iter().enumerate() {
            let bytes = parts.get(s * 3 + k).copied().unwrap_or_default();
            if let Ok(f) = crate::disk::File::create(&stem.with_extension(ext)) {
                let _ = f.write_all(bytes);
            }
        }
    }
    let _ = flush::write_recovery_point(&dir, recovery);
    let cfg = LogConfig {
        segment_bytes: 512,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    // Either way of opening: after a crash (scan) and after a clean shutdown (trust).
    let clean = data[0] & 0x80 != 0;
    let Ok(mut log) = Log::open_after(&dir, cfg, clean) else {
        return;
    };
    let mut next = log.log_start_offset();
    let mut rounds = 0;
    while let Ok(Some(slice)) = log.plan_read(next) {
        let Ok(bytes) = slice.read(4096, true) else {
            break;
        };
        let Some((end, _)) = crate::log::batch::span(&bytes) else {
            break;
        };
        if end <= next || rounds > 10_000 {
            break;
        }
        next = end;
        rounds += 1;
    }
    let _ = log.plan_time_lookup(i64::from(data[1]) << 4);
    let _ = log.scan_headers(0, |_, _| {});
    let cleaner = crate::log::cleaner::CleanConfig {
        min_cleanable_dirty_ratio: 0.0,
        ..Default::default()
    };
    if let Ok(Some(plan)) = log.clean_plan(0, log.next_offset(), 0, &cleaner) {
        if let Ok(Some(c)) = crate::log::cleaner::clean(&plan, &Vec::new(), 0, &cleaner) {
            let _ = log.swap_cleaned(&c);
        }
    }
    if let Some(extra) = parts.get(9) {
        if let Ok(batches) = crate::log::batch::split_batches(extra) {
            let _ = log.append(extra, &batches, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// A small deterministic PRNG (xorshift64*): the runs are reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Mutates `seed` as libFuzzer's simplest mutators do: flip, overwrite, insert, delete,
    /// duplicate a range, or put an interesting integer somewhere.
    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..=rng.below(8) {
            let at = rng.below(v.len() + 1);
            match rng.below(6) {
                0 if !v.is_empty() => {
                    let i = at.min(v.len() - 1);
                    v[i] ^= 1 << rng.below(8);
                }
                1 if !v.is_empty() => {
                    let i = at.min(v.len() - 1);
                    v[i] = rng.next() as u8;
                }
                2 => v.insert(at, rng.next() as u8),
                3 if !v.is_empty() => {
                    let end = (at + rng.below(16)).min(v.len());
                    v.drain(at.min(end)..end);
                }
                4 if !v.is_empty() => {
                    let from = rng.below(v.len());
                    let len = rng.below(64).min(v.len() - from);
                    let piece = v[from..from + len].to_vec();
                    v.splice(at..at, piece);
                }
                _ => {
                    let magic: [&[u8]; 6] = [
                        &[0xff, 0xff, 0xff, 0xff],
                        &[0x7f, 0xff, 0xff, 0xff],
                        &[0x80, 0, 0, 0],
                        &[0, 0, 0, 0],
                        &[0, 0, 0, 1],
                        &[0xff, 0xff],
                    ];
                    let m = magic[rng.below(magic.len())];
                    let i = at.min(v.len().saturating_sub(m.len()));
                    if v.len() >= m.len() {
                        v[i..i + m.len()].copy_from_slice(m);
                    }
                }
            }
        }
        v.truncate(16 << 10);
        v
    }

    /// Runs `target` on mutations of `seeds` for about `budget`.
    fn run(name: &str, seeds: &[Vec<u8>], budget: Duration, target: fn(&[u8])) {
        let mut rng = Rng(0x5eed_0000 ^ name.len() as u64);
        let started = Instant::now();
        let mut runs = 0u64;
        let mut corpus: Vec<Vec<u8>> = seeds.to_vec();
        while started.elapsed() < budget {
            let base = corpus[rng.below(corpus.len())].clone();
            let input = mutate(&mut rng, &base);
            target(&input);
            if corpus.len() < 256 && rng.below(8) == 0 {
                corpus.push(input);
            }
            runs += 1;
        }
        println!("{name}: {runs} inputs in {:?}, no crash", started.elapsed());
        assert!(runs > 0);
    }

    fn valid_batch() -> Vec<u8> {
        let records: Vec<crate::records::Record> = (0..3)
            .map(|i| crate::records::Record {
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: Some(bytes::Bytes::from(format!("value {i}"))),
                headers: vec![(bytes::Bytes::from_static(b"h"), None)],
                ..Default::default()
            })
            .collect();
        let mut out = Vec::new();
        for codec in [
            crate::records::Compression::None,
            crate::records::Compression::Gzip,
            crate::records::Compression::Lz4,
        ] {
            out.extend_from_slice(&crate::records::encode_batch(&records, codec).unwrap());
        }
        out
    }

    /// A Produce v9 frame (flexible) and an ApiVersions v3 frame, as clients send them.
    fn valid_requests() -> Vec<Vec<u8>> {
        use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ProduceRequest, RequestHeader};
        use kafka_protocol::protocol::{Encodable, StrBytes};
        fn frame(key: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
            let mut b = bytes::BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(version)
                .with_correlation_id(7)
                .with_client_id(Some(StrBytes::from_static_str("fuzz")))
                .encode(&mut b, key.request_header_version(version))
                .unwrap();
            body.encode(&mut b, version).unwrap();
            b.to_vec()
        }
        let mut produce = ProduceRequest::default().with_acks(1).with_timeout_ms(1000);
        let mut topic = kafka_protocol::messages::produce_request::TopicProduceData::default()
            .with_name(kafka_protocol::messages::TopicName(
                StrBytes::from_static_str("fz"),
            ));
        topic.partition_data.push(
            kafka_protocol::messages::produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(valid_batch()))),
        );
        produce.topic_data.push(topic);
        vec![
            frame(ApiKey::Produce, 9, &produce),
            frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        ]
    }

    /// Every target, a few seconds each: not libFuzzer's coverage-guided search (see
    /// `tests/stress/fuzz.sh` for that), but it keeps the targets building and catches a
    /// parser that panics on a near-miss of valid input.
    /// Inputs libFuzzer found crashing a target, kept in `runtime/fuzz/regressions/` as
    /// `TARGET-what-it-was`: each must now pass through its target.
    #[test]
    fn inputs_that_once_crashed_a_target_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        let mut ran = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap();
            let target: fn(&[u8]) = match name.split('-').next() {
                Some("segments") => super::segments,
                Some("records") => super::records,
                Some("request") => super::request,
                Some("plugin_files") => super::plugin_files,
                Some("tls_records") => super::tls_records,
                _ => panic!("{name}: no target named by its prefix"),
            };
            target(&data);
            ran += 1;
        }
        assert!(ran > 0, "no regression inputs in {}", dir.display());
    }

    #[test]
    fn fuzz_targets_survive_mutated_inputs() {
        let budget = Duration::from_millis(1500);
        run("records", &[valid_batch()], budget, super::records);
        run("request", &valid_requests(), budget, super::request);
        let manifest =
            b"input = \"clicks\"\noutput = \"out\"\ncomponent = \"f.wasm\"\n[config]\nx = 1\n"
                .to_vec();
        run("plugin_files", &[manifest], budget, super::plugin_files);
        let mut seg = vec![0u8, 3, 0];
        let b = valid_batch();
        seg.extend_from_slice(&(b.len() as u16).to_be_bytes());
        seg.extend_from_slice(&b);
        run("segments", &[seg], budget, super::segments);
        // Records sealed under TLS 1.3 and 1.2: data, then close_notify or a KeyUpdate.
        let tls = |first: u8, last: (u8, &[u8])| {
            let mut s = vec![first];
            for (op, body) in [(23u8, &b"request bytes"[..]), (23, &[0x42; 300][..]), last] {
                s.push(op);
                s.extend_from_slice(&(body.len() as u16).to_be_bytes());
                s.extend_from_slice(body);
            }
            s
        };
        let close: (u8, &[u8]) = (21, &[1, 0]);
        // Bit 6 of the first byte: reads too small to open records in the caller's buffer.
        let seeds = [
            tls(4 | 1 << 3, close),
            tls(4 | 1 << 3 | 0x40, close),
            tls(2, close),
            tls(2 | 3 << 3, close),
            tls(5 | 2 << 3, (22, &[24, 0, 0, 1, 1])),
            tls(5 | 2 << 3 | 0x40, (22, &[24, 0, 0, 1, 1])),
        ];
        run("tls_records", &seeds, budget, super::tls_records);
    }
}
