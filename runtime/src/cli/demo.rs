//! `sluice demo`: the click-aggregation example running live, in one command.
//!
//! Starts a broker (this same binary, `sluice serve`) with its own data and plugins
//! directories, builds the two standard plugins the example uses, deploys the example's three
//! pipelines (validate → salted partial counts → merge), and produces skewed clicks with salted
//! keys; then prints, every second, the final per-ad counts of the latest closed window and how
//! the hot ad's clicks spread over the input partitions. The pipelines are exactly those of
//! `examples/click-aggregation/pipeline/`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use super::produce::{flush, Pending};
use crate::client::{partition_for_key, Client};
use crate::records::{Compression, Record};

const VALIDATE: &str =
    include_str!("../../../examples/click-aggregation/pipeline/click-validate.toml");
const PARTIALS: &str =
    include_str!("../../../examples/click-aggregation/pipeline/click-partials.toml");
const MERGE: &str = include_str!("../../../examples/click-aggregation/pipeline/click-merge.toml");

/// Topics of the example and their partition counts.
const TOPICS: [(&str, i32); 4] = [
    ("clicks", 6),
    ("clicks-valid", 6),
    ("clicks-partials", 1),
    ("ad-counts", 1),
];

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the demo keeps its broker data, plugins and log
    #[arg(long, default_value = "./sluice-demo")]
    pub dir: PathBuf,
    /// Kafka listener of the demo broker
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// Admin API of the demo broker
    #[arg(long, default_value = "127.0.0.1:9644")]
    pub admin: String,
    /// Clicks per second
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Number of ads
    #[arg(long, default_value_t = 100)]
    pub ads: u32,
    /// Share of all clicks that go to the hot ad, ad0
    #[arg(long, default_value_t = 0.3)]
    pub hot_share: f64,
    /// Salts per key: ad0#0 .. ad0#(N-1)
    #[arg(long, default_value_t = 6)]
    pub salts: u32,
    /// Produce unsalted keys, to see the hot partition
    #[arg(long)]
    pub no_salt: bool,
    /// Stop after this many seconds (default: run until Ctrl-C)
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// The demo broker; stopped (SIGINT, then SIGKILL) when dropped.
struct BrokerProcess(Child);

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        // SAFETY: sending a signal to our own child has no memory-safety preconditions.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo_plugins() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// Builds the example's plugins into `plugins` unless they are there already.
fn build_plugins(plugins: &Path) -> Result<()> {
    for name in ["dead-letter-router", "salted-aggregate"] {
        let out = plugins.join(format!("{name}.wasm"));
        if out.exists() {
            continue;
        }
        let src = repo_plugins().join(name);
        if !src.exists() {
            bail!(
                "the demo builds its plugins from the sluice source tree, and {} is missing",
                src.display()
            );
        }
        eprintln!("building the {name} plugin (once; about a minute on a fresh machine) ...");
        crate::plugin::build::build(&src, Some(&out))?;
    }
    Ok(())
}

/// A small deterministic generator (xorshift), so a demo run needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks an ad: ad0 with `hot_share`, the others by a Zipf-like 1/k law.
struct Ads {
    hot_share: f64,
    cumulative: Vec<f64>,
}

impl Ads {
    fn new(ads: u32, hot_share: f64) -> Ads {
        let weights: Vec<f64> = (1..ads.max(2)).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Ads {
            hot_share,
            cumulative,
        }
    }
    fn pick(&self, rng: &mut Rng) -> usize {
        if rng.unit() < self.hot_share {
            return 0;
        }
        let u = rng.unit();
        1 + self
            .cumulative
            .iter()
            .position(|&c| u <= c)
            .unwrap_or(self.cumulative.len() - 1)
    }
}

fn bar(share: f64, width: usize) -> String {
    "█".repeat(((share * width as f64).round() as usize).min(width))
}

fn get_status(admin: &str) -> Option<serde_json::Value> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /v1/pipelines HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    serde_json::from_str(buf.split_once("\r\n\r\n")?.1).ok()
}

pub async fn run(a: DemoArgs) -> Result<()> {
    // Registered first, for the whole run: a Ctrl-C that arrives while a request is in
    // flight is kept, and the broker is then stopped cleanly rather than orphaned.
    let mut stop = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    let plugins = a.dir.join("plugins");
    std::fs::create_dir_all(&plugins)
        .with_context(|| format!("cannot create {}", plugins.display()))?;
    {
        let p = plugins.clone();
        tokio::task::spawn_blocking(move || build_plugins(&p)).await??;
    }
    let log_path = a.dir.join("broker.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the sluice binary")?;
    let child = Command::new(exe)
        .arg("serve")
        .args(["--listen", &a.listen, "--admin", &a.admin])
        .arg("--data-dir")
        .arg(a.dir.join("data"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in the terminal reaches only the demo, which then
        // stops the broker itself (after its last request), instead of both at once.
        .process_group(0)
        .spawn()
        .context("cannot start the broker")?;
    let mut broker = BrokerProcess(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Some(status) = broker.0.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            bail!(
                "the demo broker exited ({status}); is another broker using {} or {}? Last log lines:\n{}",
                a.listen,
                a.admin,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        match Client::connect(&a.listen).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    for (t, n) in TOPICS {
        // Exists already when the demo runs again on the same directory.
        let _ = super::topic::create(&mut c, t, n, &[]).await;
    }
    for (name, text) in [
        ("click-validate", VALIDATE),
        ("click-partials", PARTIALS),
        ("click-merge", MERGE),
    ] {
        std::fs::write(plugins.join(format!("{name}.toml")), text)?;
    }
    let window_ms = toml::from_str::<toml::Table>(PARTIALS)
        .ok()
        .and_then(|t| t.get("config")?.get("window_ms")?.as_integer())
        .unwrap_or(1000);
    eprintln!(
        "broker on {} (admin {}), log in {}; pipelines deploying ...",
        a.listen,
        a.admin,
        log_path.display()
    );

    let produce_version = c
        .version(ApiKey::Produce, 9)
        .filter(|v| *v >= 3)
        .context("broker does not support Produce v3+")?;
    let fetch_version = c
        .version(ApiKey::Fetch, 12)
        .context("broker does not support Fetch")?;
    let mut reader = Client::connect(&a.listen).await?;
    let mut next_result = vec![0i64];

    let ads = Ads::new(a.ads, a.hot_share);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut salt_counter: BTreeMap<usize, u32> = BTreeMap::new();
    let partitions = TOPICS[0].1;
    let mut hot_per_partition = vec![0u64; partitions as usize];
    let mut all_per_partition = vec![0u64; partitions as usize];
    let mut produced = 0u64;
    // window start -> ad -> count
    let mut finals: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    let started = Instant::now();
    let mut last_screen = Instant::now();
    let tick = Duration::from_millis(50);
    let per_tick = (a.rate as f64 * tick.as_secs_f64()).max(1.0);
    let mut owed = 0.0;
    loop {
        let t0 = Instant::now();
        owed += per_tick;
        let mut pending = Pending::default();
        while owed >= 1.0 {
            owed -= 1.0;
            let ad = ads.pick(&mut rng);
            // Salting: the key becomes adN#S and S also picks the partition, counted from
            // where the unsalted key would go, so S = 0..salts covers that many distinct
            // partitions (hashing the salted key instead leaves collisions to chance).
            let home = partition_for_key(format!("ad{ad}").as_bytes(), partitions);
            let (key, p) = if a.no_salt {
                (format!("ad{ad}"), home)
            } else {
                let s = salt_counter.entry(ad).or_default();
                *s = (*s + 1) % a.salts.max(1);
                (
                    format!("ad{ad}#{s}"),
                    (home + *s as i32).rem_euclid(partitions),
                )
            };
            let ts = crate::broker::now_ms();
            let value = format!(
                "{{\"ad\":\"ad{ad}\",\"user\":\"u{}\",\"ts\":{ts},\"event\":\"click\"}}",
                rng.next() % 10_000
            );
            all_per_partition[p as usize] += 1;
            if ad == 0 {
                hot_per_partition[p as usize] += 1;
            }
            pending.push(
                p,
                Record {
                    offset: 0,
                    timestamp: ts,
                    key: Some(Bytes::from(key)),
                    value: Some(Bytes::from(value)),
                    headers: Vec::new(),
                },
            );
            produced += 1;
        }
        flush(
            &mut c,
            "clicks",
            &mut pending,
            Compression::None,
            1,
            produce_version,
        )
        .await?;
        if last_screen.elapsed() >= Duration::from_secs(1) {
            last_screen = Instant::now();
            // Final results that arrived since the last screen.
            let got = tokio::time::timeout(
                Duration::from_millis(600),
                super::consume::fetch(
                    &mut reader,
                    "ad-counts",
                    &[0],
                    &mut next_result,
                    fetch_version,
                ),
            )
            .await;
            if let Ok(Ok(recs)) = got {
                for (_, r) in recs {
                    let v: serde_json::Value = match r.value.as_deref().map(serde_json::from_slice)
                    {
                        Some(Ok(v)) => v,
                        _ => continue,
                    };
                    if let (Some(k), Some(ws), Some(n)) = (
                        v["key"].as_str(),
                        v["window_start"].as_i64(),
                        v["count"].as_u64(),
                    ) {
                        finals.entry(ws).or_default().insert(k.to_string(), n);
                    }
                }
            }
            while finals.len() > 30 {
                finals.pop_first();
            }
            screen(
                &a,
                window_ms,
                produced,
                started,
                &finals,
                &hot_per_partition,
                &all_per_partition,
            );
        }
        if let Some(s) = a.seconds {
            if started.elapsed() >= Duration::from_secs(s) {
                break;
            }
        }
        if let Some(rest) = tick.checked_sub(t0.elapsed()) {
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = stop.recv() => break,
            }
        }
    }
    eprintln!(
        "stopping the demo broker; its data stays in {}",
        a.dir.display()
    );
    drop(broker);
    Ok(())
}

fn screen(
    a: &DemoArgs,
    window_ms: i64,
    produced: u64,
    started: Instant,
    finals: &BTreeMap<i64, BTreeMap<String, u64>>,
    hot: &[u64],
    all: &[u64],
) {
    let mut o = String::new();
    use std::fmt::Write as _;
    o.push_str("\x1b[2J\x1b[H");
    let _ = writeln!(
        o,
        "sluice demo: clicks -> click-validate -> click-partials (salted) -> click-merge -> ad-counts   (Ctrl-C stops)"
    );
    let _ = writeln!(
        o,
        "generator: {} clicks/s over {} ads, ad0 takes {:.0}%, keys {}   produced {produced} in {:.0}s\n",
        a.rate,
        a.ads,
        a.hot_share * 100.0,
        if a.no_salt {
            "unsalted".to_string()
        } else {
            format!("salted into {} (ad0#0..ad0#{})", a.salts, a.salts.saturating_sub(1))
        },
        started.elapsed().as_secs_f64()
    );
    if let Some(st) = get_status(&a.admin).and_then(|v| v.as_array().cloned()) {
        for p in st {
            let lag: i64 = p["partitions"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|x| x["lag"].as_i64()).sum())
                .unwrap_or(0);
            let _ = writeln!(
                o,
                "  {:<16} {:<10} in {:>9}  out {:>9}  dead-lettered {:>5}  lag {:>6}",
                p["name"].as_str().unwrap_or("?"),
                p["status"].as_str().unwrap_or("?"),
                p["records_in"],
                p["records_out"],
                p["dead_lettered"],
                lag
            );
        }
    }
    match finals.iter().next_back() {
        Some((ws, counts)) => {
            let total: u64 = counts.values().sum();
            let _ = writeln!(
                o,
                "\nfinal counts, window [{ws}, {}) ({} ms), {total} clicks; top ads:",
                ws + window_ms,
                window_ms
            );
            let mut top: Vec<(&String, &u64)> = counts.iter().collect();
            top.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
            let max = top.first().map_or(1, |t| *t.1).max(1);
            for (k, n) in top.into_iter().take(8) {
                let _ = writeln!(o, "  {k:<6} {n:>7} {}", bar(*n as f64 / max as f64, 40));
            }
        }
        None => {
            let _ = writeln!(
                o,
                "\n(waiting for the first window to close: windows are {window_ms} ms, emitted once the watermark passes their end)"
            );
        }
    }
    let hot_total: u64 = hot.iter().sum::<u64>().max(1);
    let all_total: u64 = all.iter().sum::<u64>().max(1);
    let _ = writeln!(
        o,
        "\nwhere the hot ad's clicks land (partitions of 'clicks'):"
    );
    for (p, n) in hot.iter().enumerate() {
        let share = *n as f64 / hot_total as f64;
        let _ = writeln!(o, "  p{p} {:>5.1}% {}", share * 100.0, bar(share, 40));
    }
    let busiest = all.iter().copied().max().unwrap_or(0) as f64 / all_total as f64;
    let _ = writeln!(
        o,
        "busiest partition holds {:.1}% of all clicks (fair share {:.1}%){}",
        busiest * 100.0,
        100.0 / all.len().max(1) as f64,
        if a.no_salt {
            "; run without --no-salt to spread the hot ad"
        } else {
            "; run with --no-salt to see the hot ad pile onto one partition"
        }
    );
    print!("{o}");
    let _ = std::io::stdout().flush();
}
