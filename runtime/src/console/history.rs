//! The last minutes of the broker's counters, for the console's charts: a sampler that reads
//! the same atomics `/metrics` renders every [`INTERVAL`] and keeps [`KEEP`] samples in a
//! ring. Rates are computed when asked, from neighbouring samples, so the ring holds plain
//! counter readings and a missed tick only widens one step.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::broker::{now_ms, Broker};
use crate::plugin::PluginHost;

pub const INTERVAL: Duration = Duration::from_secs(2);
/// Ten minutes at [`INTERVAL`].
pub const KEEP: usize = 300;

/// Counter readings at one instant.
#[derive(Clone, Default)]
struct Sample {
    t_ms: i64,
    records_in: u64,
    records_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    requests: u64,
    connections: i64,
    rss_bytes: u64,
    /// Per pipeline: records in, records out, dead letters.
    pipelines: BTreeMap<String, (u64, u64, u64)>,
}

/// One step of the charts: rates over the interval that ends at `t`, gauges at `t`.
#[derive(Serialize)]
pub struct Point {
    pub t: i64,
    pub records_in_per_s: f64,
    pub records_out_per_s: f64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    pub requests_per_s: f64,
    pub connections: i64,
    pub rss_bytes: u64,
    /// Per pipeline: records in, out and dead-lettered per second.
    pub pipelines: BTreeMap<String, [f64; 3]>,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Samples every [`INTERVAL`] until the runtime stops.
    pub fn start(broker: Arc<Broker>, host: Option<Arc<PluginHost>>) -> Arc<History> {
        let h = Arc::new(History::default());
        let me = h.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (b, hs) = (broker.clone(), host.clone());
                // The pipeline status takes the host's locks: not on a runtime worker.
                let Ok(s) = tokio::task::spawn_blocking(move || sample(&b, hs.as_deref())).await
                else {
                    continue;
                };
                me.push(s);
            }
        });
        h
    }

    fn push(&self, s: Sample) {
        let mut q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The rates between each pair of neighbouring samples, oldest first.
    pub fn points(&self) -> Vec<Point> {
        let q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        q.iter()
            .zip(q.iter().skip(1))
            .map(|(a, b)| {
                let secs = ((b.t_ms - a.t_ms) as f64 / 1000.0).max(0.001);
                // Counters only grow, except a topic's when it is deleted: never below zero.
                let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
                Point {
                    t: b.t_ms,
                    records_in_per_s: rate(a.records_in, b.records_in),
                    records_out_per_s: rate(a.records_out, b.records_out),
                    bytes_in_per_s: rate(a.bytes_in, b.bytes_in),
                    bytes_out_per_s: rate(a.bytes_out, b.bytes_out),
                    requests_per_s: rate(a.requests, b.requests),
                    connections: b.connections,
                    rss_bytes: b.rss_bytes,
                    pipelines: b
                        .pipelines
                        .iter()
                        .map(|(name, &(i, o, d))| {
                            let (pi, po, pd) = a.pipelines.get(name).copied().unwrap_or((i, o, d));
                            (name.clone(), [rate(pi, i), rate(po, o), rate(pd, d)])
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

fn sample(broker: &Broker, host: Option<&PluginHost>) -> Sample {
    let mut s = Sample {
        t_ms: now_ms(),
        requests: broker.metrics.requests_total(),
        connections: broker.metrics.connections.load(Ordering::Relaxed),
        rss_bytes: rss_bytes(),
        ..Sample::default()
    };
    for t in broker.topics() {
        s.records_in += t.stats.records_in.load(Ordering::Relaxed);
        s.records_out += t.stats.records_out.load(Ordering::Relaxed);
        s.bytes_in += t.stats.bytes_in.load(Ordering::Relaxed);
        s.bytes_out += t.stats.bytes_out.load(Ordering::Relaxed);
    }
    if let Some(h) = host {
        for p in h.status() {
            s.pipelines
                .insert(p.name, (p.records_in, p.records_out, p.dead_lettered));
        }
    }
    s
}

/// This process's resident set, from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_neighbouring_samples_and_the_ring_is_bounded() {
        let h = History::default();
        for i in 0..(KEEP as u64 + 10) {
            h.push(Sample {
                t_ms: i as i64 * 2000,
                records_in: i * 100,
                pipelines: [("p".to_string(), (i * 10, i * 4, i))].into(),
                ..Sample::default()
            });
        }
        let pts = h.points();
        assert_eq!(pts.len(), KEEP - 1);
        assert_eq!(pts[0].t, 11 * 2000, "the oldest samples were dropped");
        assert!(pts.iter().all(|p| p.records_in_per_s == 50.0));
        assert_eq!(pts[3].pipelines["p"], [5.0, 2.0, 0.5]);
    }
}
