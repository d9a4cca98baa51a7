//! `sluice worker`: the plugin host without a broker, on any Kafka cluster.
//!
//! Workers started with the same `--group` share every pipeline's tasks. Each pipeline is a
//! consumer group of its own (`GROUP.PIPELINE`, so two pipelines reading one topic keep
//! separate offsets); a membership consumer per pipeline and worker takes part in it, and the
//! partitions the group assigns this worker are the tasks it runs, each on a thread, with the
//! same task code as inside the broker ([`crate::plugin::task`]) over a [`io::ClusterIo`].
//! When the group moves a partition away, its task commits and stops before the partition is
//! given up; when a worker dies, the others get its partitions after the session timeout and
//! restore each task from the changelog ([`changelog`]).
//!
//! Deployment: the plugins directory, as in the broker (every worker watches its own, so the
//! same files dropped into each, a shared volume or a copy, deploy everywhere), and the
//! cluster-wide way, `sluice plugin deploy` ([`deploy`]): the workers follow a compacted
//! topic and keep what it holds as a second directory. New code for a running pipeline is
//! hot-reloaded at each task's next batch boundary, state carried.

pub mod changelog;
pub mod deploy;
pub mod io;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use crate::plugin::engine::PluginEngine;
use crate::plugin::host::{load_checked, manifests_in, same_topology, writers_of, Fingerprint};
use crate::plugin::manifest::Manifest;
use crate::plugin::pipeline::{Deployed, Pipeline, Stats, Topology};
use crate::plugin::task::{self, Kind, TaskSpec};
use io::{ClusterIo, Shared};

/// How often the plugins directory is looked at.
const RESCAN: Duration = Duration::from_secs(1);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How the pipelines' consumer groups coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    /// The classic protocol with the cooperative-sticky assignor: a rebalance only stops the
    /// tasks that move.
    Classic,
    /// KIP-848 (Kafka 4.0+): the broker computes assignments.
    Consumer,
    /// KIP-848 where the cluster offers it (ConsumerGroupHeartbeat in its ApiVersions),
    /// classic otherwise. Resolved once, at start.
    Auto,
}

pub struct WorkerConfig {
    /// librdkafka settings shared by every client: bootstrap servers, security, and any
    /// `-X key=value` given.
    pub client: ClientConfig,
    pub plugins_dir: PathBuf,
    pub group: String,
    pub state_dir: PathBuf,
    pub protocol: GroupProtocol,
    pub session_timeout_ms: u32,
}

/// One pipeline running in this worker.
struct Member {
    fingerprint: Fingerprint,
    /// Why the latest files were refused, while this version runs on.
    error: Option<String>,
    pipeline: Arc<Pipeline>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// A pipeline whose manifest or component was refused, with what was refused.
struct Refused {
    fingerprint: Fingerprint,
    error: String,
}

/// What this worker runs, for its admin endpoint: `/metrics` and `/v1/pipelines` (the JSON
/// `sluice plugin list --admin` reads).
#[derive(Default)]
pub struct Status {
    /// What each request builds its answer from (refreshed at every rescan).
    sources: Mutex<Vec<StatusSource>>,
}

struct StatusSource {
    name: String,
    pipeline: Option<Arc<Pipeline>>,
    error: Option<String>,
}

impl Status {
    pub fn pipelines(&self) -> Vec<crate::plugin::host::PipelineStatus> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let none = Stats::default();
        sources
            .iter()
            .map(|s| {
                crate::plugin::host::pipeline_status(
                    &s.name,
                    s.pipeline.as_deref(),
                    s.error.as_ref(),
                    s.pipeline.as_ref().map_or(&none, |p| &p.stats),
                )
            })
            .collect()
    }

    /// Answers the worker's admin endpoint.
    pub fn route(&self, method: &str, target: &str) -> (&'static str, &'static str, String) {
        use crate::metrics::{JSON, TEXT};
        match (method, target.split('?').next().unwrap_or("")) {
            ("GET", "/metrics") => (
                "200 OK",
                TEXT,
                crate::metrics::render_pipeline_status(&self.pipelines()),
            ),
            ("GET", "/v1/pipelines") => (
                "200 OK",
                JSON,
                serde_json::to_string(&self.pipelines()).unwrap_or_default(),
            ),
            _ => ("404 Not Found", "text/plain", "not found\n".into()),
        }
    }
}

pub struct Worker {
    cfg: WorkerConfig,
    engine: Arc<PluginEngine>,
    rt: tokio::runtime::Handle,
    topology: Arc<Topology>,
    members: BTreeMap<String, Member>,
    refused: BTreeMap<String, Refused>,
    /// What the deployments topic holds, as files.
    deployed_dir: PathBuf,
    pub status: Arc<Status>,
    /// A client kept for metadata (topics and their partition counts), asked at every
    /// rescan: one connection, not one per rescan.
    metadata: Option<BaseConsumer>,
    /// Partition counts as last seen in the metadata (see [`merge_partition_counts`]).
    known_partitions: Mutex<HashMap<String, i32>>,
}

/// The partition counts to go by after a metadata fetch: `fetched` is each topic of a
/// successful answer with its count (None for a topic the answer gave an error for), None
/// for a failed fetch.
///
/// What was known is kept through a failed fetch and through a topic's error, and counts
/// only grow (as Kafka's do): the counts say which upstream tasks each task must hear from
/// before its event time moves on, and a watermark never goes back. When a Kafka node died,
/// one failed fetch made every worker forget every writer for a second, and a merge task
/// took the watermark of the writers it had heard from for the whole: it closed windows
/// without the partials of a writer that was moving between workers, which then came late.
/// A topic missing from a successful answer is gone (deleted).
fn merge_partition_counts(
    known: &HashMap<String, i32>,
    fetched: Option<Vec<(String, Option<i32>)>>,
) -> HashMap<String, i32> {
    let Some(fetched) = fetched else {
        return known.clone();
    };
    fetched
        .into_iter()
        .filter_map(|(t, n)| {
            let old = known.get(&t).copied();
            let n = match (n, old) {
                (Some(n), old) => n.max(old.unwrap_or(0)),
                (None, Some(o)) => o,
                (None, None) => return None,
            };
            Some((t, n))
        })
        .collect()
}

impl Worker {
    pub fn new(cfg: WorkerConfig, rt: tokio::runtime::Handle) -> anyhow::Result<Worker> {
        std::fs::create_dir_all(&cfg.plugins_dir)?;
        std::fs::create_dir_all(&cfg.state_dir)?;
        let engine = PluginEngine::new(Some(cfg.state_dir.join("plugin-cache")))?;
        let deployed_dir = cfg.state_dir.join("deployed");
        std::fs::create_dir_all(&deployed_dir)?;
        let metadata = cfg.client.create::<BaseConsumer>().ok();
        Ok(Worker {
            deployed_dir,
            status: Arc::default(),
            metadata,
            known_partitions: Mutex::new(HashMap::new()),
            cfg,
            engine,
            rt,
            topology: Arc::new(Topology::default()),
            members: BTreeMap::new(),
            refused: BTreeMap::new(),
        })
    }

    /// Runs until `stop` is set, then stops every pipeline at a commit.
    pub fn run(&mut self, stop: &AtomicBool) {
        tracing::info!(dir = %self.cfg.plugins_dir.display(), group = %self.cfg.group, deployments = %deploy::topic(&self.cfg.group), "worker watching for pipelines");
        let following = Arc::new(AtomicBool::new(false));
        let follower = {
            let (client, rt, group, dir) = (
                self.cfg.client.clone(),
                self.rt.clone(),
                self.cfg.group.clone(),
                self.deployed_dir.clone(),
            );
            let stop = following.clone();
            std::thread::Builder::new()
                .name("deployments".into())
                .spawn(move || deploy::follow(client, rt, group, dir, &stop))
        };
        while !stop.load(Ordering::Acquire) {
            self.reconcile();
            let until = std::time::Instant::now() + RESCAN;
            while std::time::Instant::now() < until && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for (name, m) in std::mem::take(&mut self.members) {
            stop_member(&name, m);
        }
        following.store(true, Ordering::Release);
        if let Ok(t) = follower {
            let _ = t.join();
        }
    }

    fn partitions(&self) -> impl Fn(&str) -> Option<i32> {
        let fetched = self
            .metadata
            .as_ref()
            .map(|c| c.fetch_metadata(None, METADATA_TIMEOUT));
        let fetched = match fetched {
            Some(Ok(md)) => Some(
                md.topics()
                    .iter()
                    .map(|t| {
                        let n = t.error().is_none().then_some(t.partitions().len() as i32);
                        (t.name().to_string(), n)
                    })
                    .collect(),
            ),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "metadata; going by the partition counts last seen");
                None
            }
            None => None,
        };
        let mut known = self
            .known_partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *known = merge_partition_counts(&known, fetched);
        let counts = known.clone();
        move |t: &str| counts.get(t).copied()
    }

    fn reconcile(&mut self) {
        // The plugins directory wins over the deployments topic for a name in both.
        let mut found = manifests_in(&self.deployed_dir);
        found.extend(manifests_in(&self.cfg.plugins_dir));
        self.topology.set(writers_of(&found, self.partitions()));
        let gone: Vec<String> = self
            .members
            .keys()
            .filter(|k| !found.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(m) = self.members.remove(&name) {
                stop_member(&name, m);
                tracing::info!(pipeline = %name, "pipeline undeployed");
            }
        }
        self.refused.retain(|k, _| found.contains_key(k));
        for (name, path) in found {
            self.reconcile_one(&name, &path);
        }
        let mut sources: Vec<StatusSource> = self
            .members
            .iter()
            .map(|(name, m)| StatusSource {
                name: name.clone(),
                pipeline: Some(m.pipeline.clone()),
                error: m.error.clone(),
            })
            .collect();
        sources.extend(
            self.refused
                .iter()
                .filter(|(name, _)| !self.members.contains_key(*name))
                .map(|(name, r)| StatusSource {
                    name: name.clone(),
                    pipeline: None,
                    error: Some(r.error.clone()),
                }),
        );
        *self
            .status
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = sources;
    }

    fn reconcile_one(&mut self, name: &str, path: &Path) {
        let Some((fp, parsed)) = Fingerprint::read(path) else {
            return;
        };
        if self.members.get(name).is_some_and(|m| m.fingerprint == fp)
            || self.refused.get(name).is_some_and(|r| r.fingerprint == fp)
        {
            return;
        }
        let loaded = parsed.map_err(|e| e.to_string()).and_then(|m| {
            let code = load_checked(&self.engine, &m)?;
            Ok((m, code))
        });
        let (manifest, code) = match loaded {
            Ok(x) => x,
            Err(e) => {
                if let Some(m) = self.members.get_mut(name) {
                    tracing::error!(pipeline = name, error = %e, "new version rejected; the running version keeps running");
                    m.error = Some(e.clone());
                } else {
                    tracing::error!(pipeline = name, error = %e, "pipeline rejected");
                }
                self.refused.insert(
                    name.to_string(),
                    Refused {
                        fingerprint: fp,
                        error: e,
                    },
                );
                return;
            }
        };
        self.refused.remove(name);
        let deployed = Deployed {
            config_json: manifest.config_json.clone(),
            limits: manifest.limits,
            code,
            generation: 0,
        };
        if let Some(m) = self.members.get_mut(name) {
            if same_topology(&m.pipeline.manifest, &manifest) {
                tracing::info!(pipeline = name, version = %deployed.code.version, "hot-reloading pipeline");
                Stats::add(&m.pipeline.stats.reloads, 1);
                m.pipeline.replace(deployed);
                m.fingerprint = fp;
                m.error = None;
                return;
            }
        }
        if let Some(old) = self.members.remove(name) {
            tracing::info!(
                pipeline = name,
                "pipeline topology changed; restarting it from its checkpoints"
            );
            stop_member(name, old);
        }
        match self.start(manifest, deployed, fp) {
            Ok(m) => {
                self.members.insert(name.to_string(), m);
            }
            Err(e) => tracing::error!(pipeline = name, error = %e, "cannot start pipeline"),
        }
    }

    fn start(
        &self,
        manifest: Manifest,
        deployed: Deployed,
        fingerprint: Fingerprint,
    ) -> Result<Member, String> {
        let name = manifest.name.clone();
        let group = format!("{}.{}", self.cfg.group, name);
        let mut subscribed: Vec<String> = manifest.inputs.clone();
        subscribed.push(manifest.retry_topic.clone());
        let mut plain: Vec<&str> = subscribed.iter().map(String::as_str).collect();
        plain.extend(manifest.output.as_deref());
        plain.push(&manifest.dead_letter);
        if let Some(e) = &manifest.event_time {
            plain.push(&e.late_topic);
        }
        let partitions = self.partitions();
        let missing: Vec<&str> = plain
            .into_iter()
            .filter(|t| partitions(t).is_none())
            .collect();
        io::create_topics(&self.cfg.client, &self.rt, &missing, &[])?;
        // The changelog has a partition per input partition of the widest input, as it was
        // when the changelog was made: a task's key maps to one of its partitions for good.
        let changelog = format!("{group}-changelog");
        let mut partitions = self.partitions();
        if partitions(&changelog).is_none() {
            let widest = subscribed.iter().filter_map(|t| partitions(t)).max();
            io::create_topics(
                &self.cfg.client,
                &self.rt,
                &[],
                &[(
                    changelog.as_str(),
                    widest.unwrap_or(1).max(1),
                    io::MAX_MESSAGE_BYTES,
                )],
            )?;
            // A new topic takes a moment to reach every broker's metadata.
            let deadline = std::time::Instant::now() + METADATA_TIMEOUT;
            partitions = self.partitions();
            while partitions(&changelog).is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                partitions = self.partitions();
            }
        }
        let changelog_partitions = partitions(&changelog)
            .ok_or_else(|| format!("changelog topic {changelog} does not show in the metadata"))?;
        let shared = Arc::new(Shared {
            client: self.cfg.client.clone(),
            group: group.clone(),
            txn_prefix: format!("{group}."),
            changelog,
            changelog_partitions,
            membership: std::sync::OnceLock::new(),
            cache_dir: self.cfg.state_dir.join("pipelines").join(&name),
            rt: self.rt.clone(),
        });
        let mut consumer_cfg = self.cfg.client.clone();
        consumer_cfg
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed");
        match self.cfg.protocol {
            GroupProtocol::Classic => {
                consumer_cfg
                    .set("partition.assignment.strategy", "cooperative-sticky")
                    .set(
                        "session.timeout.ms",
                        self.cfg.session_timeout_ms.to_string(),
                    )
                    .set(
                        "heartbeat.interval.ms",
                        (self.cfg.session_timeout_ms / 5).max(100).to_string(),
                    );
            }
            GroupProtocol::Consumer | GroupProtocol::Auto => {
                consumer_cfg.set("group.protocol", "consumer");
            }
        }
        let pipeline = Arc::new(Pipeline::new(
            manifest,
            deployed,
            Arc::new(Stats::default()),
        ));
        let ctx = MemberContext {
            tasks: Mutex::new(HashMap::new()),
            shared: shared.clone(),
            pipeline: pipeline.clone(),
            engine: self.engine.clone(),
            topology: self.topology.clone(),
            rt: self.rt.clone(),
        };
        let consumer: Arc<BaseConsumer<MemberContext>> = Arc::new(
            consumer_cfg
                .create_with_context(ctx)
                .map_err(|e| e.to_string())?,
        );
        // The tasks' commits carry the membership's group metadata (see `io::ClusterIo::commit`).
        let _ = shared.membership.set(Arc::downgrade(&consumer));
        let topics: Vec<&str> = subscribed.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| e.to_string())?;
        tracing::info!(pipeline = %name, group = %group, inputs = ?subscribed, "pipeline deployed; joining its group");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("{name}:membership"))
                .spawn(move || membership(consumer, &stop))
                .map_err(|e| e.to_string())?
        };
        Ok(Member {
            fingerprint,
            error: None,
            pipeline,
            stop,
            thread,
        })
    }
}

fn stop_member(name: &str, m: Member) {
    m.stop.store(true, Ordering::Release);
    m.pipeline.request_stop();
    if m.thread.join().is_err() {
        tracing::error!(pipeline = name, "membership thread panicked");
    }
}

/// Keeps the worker in the pipeline's group until `stop`; the rebalance callbacks start and
/// stop tasks.
fn membership(consumer: Arc<BaseConsumer<MemberContext>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        // Assigned partitions are paused: nothing is fetched here, the tasks read.
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            tracing::warn!(error = %e, "group membership");
            // Errors come back at once: no spinning on them.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    consumer.context().stop_all(|_| true);
    // Leaves the group when dropped: the tasks, stopped, hold no strong reference to it.
}

struct TaskHandle {
    revoked: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

struct MemberContext {
    tasks: Mutex<HashMap<(String, i32), TaskHandle>>,
    shared: Arc<Shared>,
    pipeline: Arc<Pipeline>,
    engine: Arc<PluginEngine>,
    topology: Arc<Topology>,
    rt: tokio::runtime::Handle,
}

impl ClientContext for MemberContext {}

impl MemberContext {
    /// Stops (each at a commit) and joins the tasks `which` selects.
    fn stop_all(&self, which: impl Fn(&(String, i32)) -> bool) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<(String, i32)> = tasks.keys().filter(|k| which(k)).cloned().collect();
        let mut stopping = Vec::new();
        for k in keys {
            if let Some(t) = tasks.remove(&k) {
                t.revoked.store(true, Ordering::Release);
                stopping.push((k, t));
            }
        }
        drop(tasks);
        self.pipeline.wake.notify_waiters();
        for ((topic, partition), t) in stopping {
            if t.thread.join().is_err() {
                tracing::error!(pipeline = %self.pipeline.manifest.name, %topic, partition, "task thread panicked");
            }
            tracing::info!(pipeline = %self.pipeline.manifest.name, %topic, partition, "task left this worker");
            // No longer this worker's: out of its status.
            self.pipeline
                .stats
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(topic, partition));
        }
    }

    fn start_task(&self, topic: String, partition: i32) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if tasks.contains_key(&(topic.clone(), partition)) {
            return;
        }
        let m = &self.pipeline.manifest;
        let kind = if topic == m.retry_topic {
            Kind::Retry
        } else {
            Kind::Input
        };
        let revoked = Arc::new(AtomicBool::new(false));
        let io = Box::new(ClusterIo::new(
            self.shared.clone(),
            topic.clone(),
            partition,
            revoked.clone(),
        ));
        let spec = TaskSpec {
            engine: self.engine.clone(),
            pipeline: self.pipeline.clone(),
            topic: topic.clone(),
            partition,
            kind,
            rt: self.rt.clone(),
            topology: self.topology.clone(),
        };
        match std::thread::Builder::new()
            .name(format!("{}:{topic}-{partition}", m.name))
            .spawn(move || task::run(spec, io))
        {
            Ok(thread) => {
                tracing::info!(pipeline = %m.name, %topic, partition, "task assigned to this worker");
                tasks.insert((topic, partition), TaskHandle { revoked, thread });
            }
            Err(e) => tracing::error!(pipeline = %m.name, error = %e, "cannot start a task thread"),
        }
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let gone: BTreeSet<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            tracing::info!(pipeline = %self.pipeline.manifest.name, tasks = gone.len(), lost = consumer.assignment_lost(), "tasks leaving this worker");
            // Each commits on its way out, its input position in its transaction.
            self.stop_all(|k| gone.contains(k));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "cannot pause the membership consumer's partitions");
            }
            for e in tpl.elements() {
                self.start_task(e.topic().to_string(), e.partition());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn partition_counts_survive_failed_fetches_and_only_grow() {
        let known = counts(&[("clicks", 6), ("clicks-valid", 6)]);
        assert_eq!(
            merge_partition_counts(&known, None),
            known,
            "a failed fetch forgets nothing"
        );
        let fetched = vec![
            ("clicks".to_string(), None),
            ("clicks-valid".to_string(), Some(3)),
            ("ad-counts".to_string(), Some(1)),
            ("broken".to_string(), None),
        ];
        assert_eq!(
            merge_partition_counts(&known, Some(fetched)),
            counts(&[("clicks", 6), ("clicks-valid", 6), ("ad-counts", 1)]),
            "a topic's error keeps its count; a smaller count is not believed; an unknown topic in error is left out"
        );
        let fetched = vec![("clicks".to_string(), Some(8))];
        assert_eq!(
            merge_partition_counts(&known, Some(fetched)),
            counts(&[("clicks", 8)]),
            "growth is taken; a topic a successful answer leaves out is gone"
        );
    }
}
