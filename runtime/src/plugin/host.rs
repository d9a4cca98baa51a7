//! The plugin host: keeps the running pipelines equal to what the plugins directory says.
//!
//! Every change in the directory (seen by `notify`, and by a periodic rescan in case an event
//! is missed) triggers a reconciliation: new manifests deploy, changed components or configs
//! hot-reload, changed topology (inputs, outputs, ...) restarts the pipeline from its
//! checkpoints, removed manifests undeploy (their checkpoints stay, so putting the manifest
//! back resumes). A manifest or component that fails to load never disturbs what runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::engine::{Code, PluginEngine, TaskInfo};
use super::io::LocalIo;
use super::manifest::{Manifest, ManifestError, Partitioning};
use super::output::ensure_topic;
use super::pipeline::{Deployed, Pipeline, Stats, Topology};
use super::pool::{Finished, Pool};
use super::reset::{Flow, Move, ResetTo};
use super::task::{Kind, Task, TaskSpec};
use crate::broker::Broker;

/// How often the directory is rescanned even without events, and partitions re-counted.
const RESCAN: Duration = Duration::from_secs(2);
/// Events arriving this close together are handled as one (an editor's save, a copy).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// What identifies one version of a pipeline's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    manifest: String,
    wasm: Option<(u64, Option<SystemTime>)>,
}

impl Fingerprint {
    /// Reads the manifest at `path`: its version's fingerprint (its text, and the size and
    /// time of the component it names) and the parsed manifest. None if it cannot be read.
    pub fn read(path: &Path) -> Option<(Fingerprint, Result<Manifest, ManifestError>)> {
        let text = std::fs::read_to_string(path).ok()?;
        let parsed = Manifest::parse(path, &text);
        let wasm = parsed.as_ref().ok().and_then(|m| {
            std::fs::metadata(&m.wasm)
                .ok()
                .map(|md| (md.len(), md.modified().ok()))
        });
        Some((
            Fingerprint {
                manifest: text,
                wasm,
            },
            parsed,
        ))
    }
}

struct TaskHandle {
    topic: String,
    partition: i32,
    finished: Arc<Finished>,
    /// Gives the task's place in the budget back when the handle goes (after it finished).
    _slot: TaskSlot,
}

/// Tasks alive in this process, against [`task_budget`].
static LIVE_TASKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct TaskSlot;

impl TaskSlot {
    fn take() -> Option<TaskSlot> {
        let budget = task_budget();
        LIVE_TASKS
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |n| (n < budget).then_some(n + 1),
            )
            .ok()
            .map(|_| TaskSlot)
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        LIVE_TASKS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How many tasks this process may run. Tasks share the pool's threads, but each has its
/// own wasmtime instance: about four memory mappings (the linear memory's reservation, its
/// accessible part, its copy-on-write image, and guards). Past `vm.max_map_count` (65,530 by
/// default) mmap fails inside an allocation and the whole process aborts, so tasks past the
/// budget wait instead (`runtime/benches/tasks_bench.sh` measured the figures: 4,161
/// mappings with 1,000 tasks). Raising `vm.max_map_count` raises the budget.
fn task_budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        const MAPS_PER_TASK: usize = 5;
        // Mappings for everything else: segments, indexes, the runtime, the allocator.
        const RESERVED: usize = 8_192;
        let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(65_530);
        (max_maps.saturating_sub(RESERVED) / MAPS_PER_TASK).max(1)
    })
}

struct Entry {
    fingerprint: Fingerprint,
    /// Set when the files were refused; the running pipeline (if any) is the older version.
    error: Option<String>,
    running: Option<Running>,
    stats: Arc<Stats>,
}

struct Running {
    pipeline: Arc<Pipeline>,
    tasks: Vec<TaskHandle>,
    /// Partitions left without a task for want of budget at the last look (logged when it
    /// changes, not at every rescan).
    over_budget: usize,
}

#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub high_watermark: i64,
    pub lag: i64,
    /// The event-time watermark the task last handed its plugin (ms since the epoch).
    pub event_time_watermark: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    pub status: &'static str,
    pub version: Option<String>,
    pub inputs: Vec<String>,
    pub output: Option<String>,
    pub dead_letter: Option<String>,
    pub records_in: u64,
    pub records_out: u64,
    pub dead_lettered: u64,
    pub retried: u64,
    pub traps: u64,
    pub late: u64,
    pub undecodable: u64,
    pub reloads: u64,
    /// Calls of the plugin's `tick`.
    pub ticks: u64,
    pub last_reload_pause_us: u64,
    /// A rejected version's reason, else the last failure of a task.
    pub last_error: Option<String>,
    /// When `last_error` happened (ms since the epoch); a rejection is current: now.
    pub last_error_at_ms: Option<i64>,
    pub partitions: Vec<PartitionStatus>,
}

pub struct PluginHost {
    broker: Arc<Broker>,
    engine: Arc<PluginEngine>,
    /// Runs every task of every pipeline.
    pool: Pool,
    dir: PathBuf,
    /// Pipelines received through the deployments topic (see [`super::deployments`]), and
    /// the group whose topic is followed (`None`: not followed).
    deployed_dir: PathBuf,
    deployments_group: Option<String>,
    /// Stops the deployments follower.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    state_dir: PathBuf,
    rt: tokio::runtime::Handle,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Serializes reconciliations and resets.
    reconcile_lock: Mutex<()>,
    /// Who writes where, for the tasks' watermarks.
    topology: Arc<Topology>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PluginHost {
    pub fn new(
        broker: Arc<Broker>,
        dir: PathBuf,
        deployments_group: Option<String>,
        threads: usize,
        rt: tokio::runtime::Handle,
    ) -> anyhow::Result<Arc<PluginHost>> {
        let data = broker.config.data_dir.clone();
        let engine = PluginEngine::new(Some(data.join("plugin-cache")))?;
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create plugins directory {}: {e}", dir.display())
        })?;
        let deployed_dir = data.join("deployed");
        std::fs::create_dir_all(&deployed_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", deployed_dir.display()))?;
        let pool = Pool::new(threads, rt.clone())
            .map_err(|e| anyhow::anyhow!("cannot start the plugin task threads: {e}"))?;
        tracing::info!(threads = pool.threads(), "plugin task pool");
        Ok(Arc::new(PluginHost {
            broker,
            engine,
            pool,
            dir,
            deployed_dir,
            deployments_group,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            state_dir: data.join("pipelines"),
            rt,
            entries: Mutex::new(BTreeMap::new()),
            reconcile_lock: Mutex::new(()),
            topology: Arc::new(Topology::default()),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Watches the directory until the process ends.
    pub async fn watch(self: Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = {
            use notify::Watcher;
            let tx = tx.clone();
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                if ev.as_ref().is_ok_and(|e| only_read(&e.kind)) {
                    return;
                }
                let _ = tx.send(());
            })
            .and_then(|mut w| {
                w.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
                w.watch(&self.deployed_dir, notify::RecursiveMode::NonRecursive)?;
                Ok(w)
            })
        };
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the plugins directory; rescanning every {RESCAN:?}");
                None
            }
        };
        tracing::info!(dir = %self.dir.display(), deployments = ?self.deployments_group.as_deref().map(super::deployments::topic), "watching for pipelines");
        if let Some(group) = self.deployments_group.clone() {
            let (broker, dir, rt, stop) = (
                self.broker.clone(),
                self.deployed_dir.clone(),
                self.rt.clone(),
                self.stopping.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("deployments".into())
                .spawn(move || super::deployments::follow_local(broker, &group, dir, rt, &stop));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot follow the deployments topic");
            }
        }
        let bp = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                bp.broker.set_produce_throttles(bp.throttles());
            }
        });
        loop {
            let h = self.clone();
            let _ = tokio::task::spawn_blocking(move || h.reconcile()).await;
            tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(RESCAN) => {}
            }
        }
    }

    /// The plugins directory wins over the deployments topic for a name in both.
    fn manifests(&self) -> BTreeMap<String, PathBuf> {
        let mut found = manifests_in(&self.deployed_dir);
        found.extend(manifests_in(&self.dir));
        found
    }

    /// One pass: make the running pipelines match the directory.
    pub fn reconcile(&self) {
        let _g = lock(&self.reconcile_lock);
        let found = self.manifests();
        // Before any task starts, so none of them mistakes a fed topic for a producers' one.
        self.refresh_topology(&found);
        // Undeploy what disappeared.
        let gone: Vec<String> = lock(&self.entries)
            .keys()
            .filter(|k| !found.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            // Taken out first: the lock is not held while task threads are joined.
            let removed = lock(&self.entries).remove(&name);
            if let Some(e) = removed {
                if let Some(r) = e.running {
                    stop(r);
                    tracing::info!(pipeline = %name, "pipeline undeployed (its progress is kept)");
                }
            }
        }
        for (name, path) in found {
            self.reconcile_one(&name, &path);
        }
    }

    /// Who writes into which topic, from the manifests in the directory (whether or not they
    /// run yet): each task of a pipeline is a writer of the pipeline's output.
    fn refresh_topology(&self, found: &BTreeMap<String, PathBuf>) {
        self.topology.set(writers_of(found, |t| {
            self.broker.topic(t).map(|t| t.partitions.len() as i32)
        }));
    }

    fn reconcile_one(&self, name: &str, path: &Path) {
        let Some((fp, parsed)) = Fingerprint::read(path) else {
            return;
        };
        {
            let mut entries = lock(&self.entries);
            if let Some(e) = entries.get_mut(name) {
                if e.fingerprint == fp {
                    match e.running.as_mut() {
                        // Unchanged: only pick up partitions added since, as long as the
                        // ACLs still let it run.
                        Some(r) => match self.authorize(&r.pipeline.manifest) {
                            Ok(()) => {
                                self.spawn_missing(r);
                                return;
                            }
                            Err(why) => {
                                tracing::error!(pipeline = name, error = %why, "pipeline stopped: its ACLs were taken away");
                                e.stats.error(why.clone());
                                e.error = Some(why);
                                let r = e.running.take();
                                drop(entries);
                                if let Some(r) = r {
                                    stop(r);
                                }
                                return;
                            }
                        },
                        // Refused for its ACLs before: started once they allow it.
                        None if e
                            .error
                            .as_deref()
                            .is_some_and(|x| x.starts_with(NOT_AUTHORIZED)) =>
                        {
                            let Ok(m) = parsed.as_ref() else { return };
                            if let Err(why) = self.authorize(m) {
                                // Still refused; said again only when the reason changes
                                // (one grant of several given, say).
                                if e.error.as_deref() != Some(why.as_str()) {
                                    tracing::error!(pipeline = name, error = %why, "pipeline rejected");
                                    e.stats.error(why.clone());
                                    e.error = Some(why);
                                }
                                return;
                            }
                        }
                        None => return,
                    }
                }
                e.fingerprint = fp.clone();
            }
        }
        let stats = lock(&self.entries)
            .get(name)
            .map(|e| e.stats.clone())
            .unwrap_or_default();
        let loaded = parsed.map_err(|e| e.to_string()).and_then(|m| {
            self.authorize(&m)?;
            let code = self.load_checked(&m)?;
            Ok((m, code))
        });
        let mut entries = lock(&self.entries);
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry {
            fingerprint: fp,
            error: None,
            running: None,
            stats: stats.clone(),
        });
        let (manifest, code) = match loaded {
            Ok(x) => x,
            Err(e) => {
                if entry.running.is_some() {
                    tracing::error!(pipeline = name, error = %e, "new version rejected; the running version keeps running");
                } else {
                    tracing::error!(pipeline = name, error = %e, "pipeline rejected");
                }
                entry.stats.error(e.clone());
                entry.error = Some(e);
                return;
            }
        };
        entry.error = None;
        let deployed = Deployed {
            config_json: manifest.config_json.clone(),
            limits: manifest.limits,
            code,
            generation: 0,
        };
        match entry.running.take() {
            Some(r) if same_topology(&r.pipeline.manifest, &manifest) => {
                tracing::info!(pipeline = name, version = %deployed.code.version, "hot-reloading pipeline");
                Stats::add(&entry.stats.reloads, 1);
                entry.stats.last_reload_pause_us.store(0, Ordering::Relaxed);
                r.pipeline.replace(deployed);
                entry.running = Some(r);
            }
            old => {
                // Joining task threads can take a while (each finishes its batch and
                // checkpoints): not under the entries lock, which status and the 100 ms
                // throttle timer take.
                let stats = entry.stats.clone();
                drop(entries);
                if let Some(r) = old {
                    tracing::info!(
                        pipeline = name,
                        "pipeline topology changed; restarting it from its checkpoints"
                    );
                    stop(r);
                }
                let started = self.start(manifest, deployed, stats);
                // A failure is logged and kept in the entry.
                let _ = self.install(name, started);
            }
        }
    }

    /// With ACLs on, a pipeline acts as its principal, like any client: it must be allowed to
    /// read its inputs and retry topic, to write its output, retry, dead-letter and late
    /// topics, and to create those of them that do not exist yet. Checked at every (re)deploy
    /// and at every rescan of the plugins directory, so a revoked ACL stops the pipeline (at a
    /// checkpoint) and a granted one starts it.
    fn authorize(&self, m: &Manifest) -> Result<(), String> {
        use crate::auth::acl::{Operation, Resource};
        let acls = &self.broker.acls;
        if !acls.enabled() {
            return Ok(());
        }
        let host = super::PIPELINE_HOST;
        let reads = m.inputs.iter().chain(std::iter::once(&m.retry_topic));
        let late = m.event_time.as_ref().map(|e| &e.late_topic);
        let writes = m
            .output
            .iter()
            .chain([&m.dead_letter, &m.retry_topic])
            .chain(late);
        for (op, verb, topics) in [
            (Operation::Read, "read", reads.collect::<Vec<_>>()),
            (Operation::Write, "write", writes.collect::<Vec<_>>()),
        ] {
            for t in topics {
                let allowed = match op {
                    Operation::Write => self.broker.may_write_topic(&m.principal, host, t),
                    _ => acls.allowed(&m.principal, host, op, Resource::Topic, t),
                };
                if !allowed {
                    return Err(format!(
                        "{NOT_AUTHORIZED} {} may not {verb} topic {t} (grant it with: sluice acl add --principal {} --operation {op:?} --topic {t})",
                        m.principal, m.principal
                    ));
                }
            }
        }
        // The host creates the topics the manifest names, as a client's produce would: that
        // takes CREATE, on the topic or the cluster.
        let named = m
            .inputs
            .iter()
            .chain(m.output.iter())
            .chain([&m.dead_letter, &m.retry_topic])
            .chain(m.event_time.as_ref().map(|e| &e.late_topic));
        for t in named.filter(|t| self.broker.topic(t).is_none()) {
            if !self.broker.may_create_topic(&m.principal, host, t) {
                return Err(format!(
                    "{NOT_AUTHORIZED} {} may not create topic {t} (create it first, or grant it with: sluice acl add --principal {} --operation Create --topic {t})",
                    m.principal, m.principal
                ));
            }
        }
        Ok(())
    }

    fn load_checked(&self, m: &Manifest) -> Result<Code, String> {
        load_checked(&self.engine, m)
    }

    fn start(
        &self,
        manifest: Manifest,
        deployed: Deployed,
        stats: Arc<Stats>,
    ) -> Result<Running, String> {
        for t in manifest
            .inputs
            .iter()
            .chain(manifest.output.iter())
            .chain([&manifest.dead_letter, &manifest.retry_topic])
        {
            ensure_topic(&self.broker, t).map_err(|e| format!("cannot create topic {t}: {e}"))?;
        }
        tracing::info!(pipeline = %manifest.name, version = %deployed.code.version, inputs = ?manifest.inputs, "pipeline deployed");
        let pipeline = Arc::new(Pipeline::new(manifest, deployed, stats));
        let mut r = Running {
            pipeline,
            tasks: Vec::new(),
            over_budget: 0,
        };
        self.spawn_missing(&mut r);
        Ok(r)
    }

    /// Starts a task for every input partition (and retry partition) that has none.
    fn spawn_missing(&self, r: &mut Running) {
        let m = &r.pipeline.manifest;
        let mut wanted: Vec<(String, i32, Kind)> = Vec::new();
        for t in &m.inputs {
            if let Some(topic) = self.broker.topic(t) {
                for p in 0..topic.partitions.len() as i32 {
                    wanted.push((t.clone(), p, Kind::Input));
                }
            }
        }
        if let Some(topic) = self.broker.topic(&m.retry_topic) {
            for p in 0..topic.partitions.len() as i32 {
                wanted.push((m.retry_topic.clone(), p, Kind::Retry));
            }
        }
        // A set, not a scan of the task list per partition: a rescan runs every few seconds
        // and 3,000 tasks made the scan most of an idle broker's CPU.
        let running: std::collections::HashSet<(String, i32)> = r
            .tasks
            .iter()
            .map(|t| (t.topic.clone(), t.partition))
            .collect();
        let mut over_budget = 0;
        for (topic, partition, kind) in wanted {
            if running.contains(&(topic.clone(), partition)) {
                continue;
            }
            let Some(slot) = TaskSlot::take() else {
                over_budget += 1;
                continue;
            };
            let io = Box::new(
                LocalIo::new(
                    self.broker.clone(),
                    topic.clone(),
                    partition,
                    self.checkpoint_path(&m.name, &topic, partition),
                    self.rt.clone(),
                )
                .acting_as(&m.principal),
            );
            let spec = TaskSpec {
                engine: self.engine.clone(),
                pipeline: r.pipeline.clone(),
                topic: topic.clone(),
                partition,
                kind,
                rt: self.rt.clone(),
                topology: self.topology.clone(),
            };
            let finished = self.pool.submit(Task::new(spec, io));
            r.tasks.push(TaskHandle {
                topic,
                partition,
                finished,
                _slot: slot,
            });
        }
        if over_budget != r.over_budget {
            r.over_budget = over_budget;
            if over_budget > 0 {
                let why = format!(
                    "{over_budget} partition(s) wait for a task: the process runs its most tasks ({}, from vm.max_map_count); their records stay in the input until a place frees",
                    task_budget()
                );
                tracing::error!(pipeline = %m.name, "{why}");
                r.pipeline.stats.error(why);
            }
        }
    }

    fn checkpoint_path(&self, pipeline: &str, topic: &str, partition: i32) -> PathBuf {
        self.state_dir
            .join(pipeline)
            .join(topic)
            .join(format!("{partition}.ckpt"))
    }

    /// Rewinds (or fast-forwards) a pipeline's inputs, and with `downstream` those of every
    /// pipeline reading what it writes (see [`super::reset`]); their state is emptied unless
    /// kept. Every pipeline of the plan is stopped before any position is taken, so none
    /// writes in between, and all start again after.
    pub fn reset(
        &self,
        name: &str,
        to: ResetTo,
        keep_state: bool,
        downstream: bool,
    ) -> Result<Vec<Move>, String> {
        let _g = lock(&self.reconcile_lock);
        let (plan, taken) = {
            let mut entries = lock(&self.entries);
            if !entries.contains_key(name) {
                return Err(format!("no pipeline named '{name}'"));
            }
            let flows: BTreeMap<String, Flow> = entries
                .iter()
                .filter_map(|(n, e)| {
                    let m = &e.running.as_ref()?.pipeline.manifest;
                    Some((
                        n.clone(),
                        Flow {
                            inputs: m.inputs.clone(),
                            output: m.output.clone(),
                        },
                    ))
                })
                .collect();
            if !flows.contains_key(name) {
                return Err(format!("pipeline '{name}' is not running"));
            }
            let plan = super::reset::plan(&flows, name, to, downstream)?;
            let mut taken = Vec::with_capacity(plan.len());
            for m in &plan {
                let Some(entry) = entries.get_mut(&m.pipeline) else {
                    continue;
                };
                if let Some(r) = entry.running.take() {
                    taken.push((m.clone(), r, entry.stats.clone()));
                }
            }
            (plan, taken)
        };
        let mut stopped = Vec::with_capacity(taken.len());
        for (m, r, stats) in taken {
            let manifest = r.pipeline.manifest.clone();
            let deployed = r.pipeline.deployed();
            // Not under the entries lock (see reconcile_one).
            stop(r);
            stopped.push((m, manifest, deployed, stats));
        }
        let mut result = Ok(());
        for (m, _, _, _) in &stopped {
            for (t, to) in &m.inputs {
                let Some(topic) = self.broker.topic(t) else {
                    continue;
                };
                for part in &topic.partitions {
                    let path = self.checkpoint_path(&m.pipeline, t, part.index);
                    if let Err(e) = self.reset_one(&path, part, *to, keep_state) {
                        result = Err(e);
                    }
                }
            }
            tracing::info!(pipeline = %m.pipeline, inputs = ?m.inputs, keep_state, "pipeline reset");
        }
        for (m, manifest, deployed, stats) in stopped {
            let started = self.start(manifest, deployed, stats);
            if let Err(e) = self.install(&m.pipeline, started) {
                result = Err(e);
            }
        }
        result.map(|()| plan)
    }

    /// Puts a pipeline started without the entries lock into its entry (or stops it if the
    /// entry went meanwhile); a start that failed is logged and kept as the entry's error.
    fn install(&self, name: &str, started: Result<Running, String>) -> Result<(), String> {
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(name) else {
            drop(entries);
            if let Ok(r) = started {
                stop(r);
            }
            return Ok(());
        };
        match started {
            Ok(r) => {
                entry.running = Some(r);
                Ok(())
            }
            Err(e) => {
                tracing::error!(pipeline = name, error = %e, "pipeline failed to start");
                entry.stats.error(e.clone());
                entry.error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn reset_one(
        &self,
        path: &Path,
        part: &crate::broker::Partition,
        to: ResetTo,
        keep_state: bool,
    ) -> Result<(), String> {
        let wm = part.watermarks();
        let offset = match to {
            ResetTo::Earliest => wm.log_start,
            ResetTo::Latest => wm.high,
            ResetTo::Offset(o) => o.clamp(wm.log_start, wm.high),
            ResetTo::Timestamp(ts) => part
                .offset_for_time(ts)
                .map_err(|e| e.to_string())?
                .map(|(o, _)| o)
                .unwrap_or(wm.high),
        };
        let mut c = match super::checkpoint::Checkpoint::load(path).map_err(|e| e.to_string())? {
            Some(c) => c,
            None => super::checkpoint::Checkpoint {
                producer_id: self.broker.producer_ids.next().map_err(|e| e.to_string())?,
                next_offset: offset,
                state: Default::default(),
                plugin_version: String::new(),
                emitted: BTreeMap::new(),
                pending: Vec::new(),
                watermarks: Default::default(),
            },
        };
        c.next_offset = offset;
        if !keep_state {
            // Event-time bookkeeping belongs with the state it was derived with.
            c.state = Default::default();
            c.watermarks = Default::default();
        }
        c.save(path).map_err(|e| e.to_string())
    }

    pub fn status(&self) -> Vec<PipelineStatus> {
        let entries = lock(&self.entries);
        entries
            .iter()
            .map(|(name, e)| {
                pipeline_status(
                    name,
                    e.running.as_ref().map(|r| r.pipeline.as_ref()),
                    e.error.as_ref(),
                    &e.stats,
                )
            })
            .collect()
    }

    /// Back pressure: which input topics to throttle producers on, and by how much (ms),
    /// because a pipeline reading them lags (in records, over all partitions) beyond its
    /// `max_lag`. The delay grows with the excess, from 50 ms to 1 s.
    pub fn throttles(&self) -> std::collections::HashMap<String, u32> {
        let mut out = std::collections::HashMap::new();
        let entries = lock(&self.entries);
        for e in entries.values() {
            let Some(r) = &e.running else { continue };
            let m = &r.pipeline.manifest;
            let Some(max) = m.max_lag else { continue };
            let progress = lock(&e.stats.progress).clone();
            for t in &m.inputs {
                let Some(topic) = self.broker.topic(t) else {
                    continue;
                };
                let lag: i64 = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let next = progress
                            .get(&(t.clone(), p.index))
                            .map_or(0, |x| x.next_offset);
                        (p.watermarks().high - next).max(0)
                    })
                    .sum();
                if lag as u64 > max {
                    let ms = (50.0 * lag as f64 / max.max(1) as f64).clamp(50.0, 1000.0) as u32;
                    let cur = out.entry(t.clone()).or_insert(0);
                    *cur = (*cur).max(ms);
                }
            }
        }
        out
    }

    /// Stops every pipeline at a checkpoint (on shutdown).
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let _g = lock(&self.reconcile_lock);
        let running: Vec<Running> = lock(&self.entries)
            .values_mut()
            .filter_map(|e| e.running.take())
            .collect();
        // Not under the entries lock (see reconcile_one); all asked to stop first, so they
        // wind down side by side.
        for r in &running {
            r.pipeline.request_stop();
        }
        for r in running {
            stop(r);
        }
    }
}

/// Two manifests that differ only in code, config or limits can switch in place.
/// What `sluice plugin list` shows of one pipeline: `running` if it runs, `error` if its
/// latest files were refused.
pub fn pipeline_status(
    name: &str,
    running: Option<&Pipeline>,
    error: Option<&String>,
    s: &Stats,
) -> PipelineStatus {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let m = running.map(|r| &r.manifest);
    let partitions = lock(&s.progress)
        .iter()
        .filter(|((t, _), _)| m.is_some_and(|m| m.inputs.contains(t)))
        .map(|((t, p), pr)| PartitionStatus {
            topic: t.clone(),
            partition: *p,
            next_offset: pr.next_offset,
            high_watermark: pr.high_watermark,
            lag: (pr.high_watermark - pr.next_offset).max(0),
            event_time_watermark: pr.event_time_watermark,
        })
        .collect();
    let last_error = match error {
        Some(e) => Some((e.clone(), crate::broker::now_ms())),
        None => lock(&s.last_error).clone(),
    };
    PipelineStatus {
        name: name.to_string(),
        status: match (running, error) {
            (Some(_), None) => "running",
            (Some(_), Some(_)) => "running (new version rejected)",
            (None, _) => "rejected",
        },
        version: running.map(|r| r.deployed().code.version),
        inputs: m.map(|m| m.inputs.clone()).unwrap_or_default(),
        output: m.and_then(|m| m.output.clone()),
        dead_letter: m.map(|m| m.dead_letter.clone()),
        records_in: get(&s.records_in),
        records_out: get(&s.records_out),
        dead_lettered: get(&s.dead_lettered),
        retried: get(&s.retried),
        traps: get(&s.traps),
        late: get(&s.late),
        undecodable: get(&s.undecodable),
        reloads: get(&s.reloads),
        ticks: get(&s.ticks),
        last_reload_pause_us: get(&s.last_reload_pause_us),
        last_error: last_error.as_ref().map(|(e, _)| e.clone()),
        last_error_at_ms: last_error.map(|(_, at)| at),
        partitions,
    }
}

/// The pipelines' manifests in a plugins directory, by name.
pub fn manifests_in(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let is_toml = p.extension().is_some_and(|x| x == "toml");
        // A plugin workspace's own Cargo.toml is not a pipeline; editors' temp files
        // start with a dot.
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if is_toml && name != "Cargo" && !name.starts_with('.') && p.is_file() {
            out.insert(name.to_string(), p);
        }
    }
    out
}

/// Who writes into which topic, from the manifests `found` (whether or not they run yet):
/// each task of a pipeline is a writer of the pipeline's output. `partitions` tells a topic's
/// partition count, if it exists. Also returns the names of the pipelines found.
pub fn writers_of(
    found: &BTreeMap<String, PathBuf>,
    partitions: impl Fn(&str) -> Option<i32>,
) -> super::pipeline::Flows {
    let mut writers_of: super::pipeline::WritersOf = BTreeMap::new();
    let mut present = std::collections::BTreeSet::new();
    let mut read = std::collections::BTreeSet::new();
    for (name, path) in found {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let Ok(m) = Manifest::parse(path, &text) else {
            continue;
        };
        present.insert(name.clone());
        read.extend(m.inputs.iter().cloned());
        let Some(out) = &m.output else {
            continue;
        };
        let out_partitions = partitions(out);
        for input in &m.inputs {
            let Some(n) = partitions(input) else {
                continue;
            };
            for p in 0..n {
                let only = match (m.partitioning, out_partitions) {
                    (Partitioning::Input, Some(n)) if n > 0 => Some(p.rem_euclid(n)),
                    _ => None,
                };
                writers_of
                    .entry(out.clone())
                    .or_default()
                    .insert(super::watermark::writer_id(name, input, p), only);
            }
        }
    }
    super::pipeline::Flows {
        writers_of,
        running: present,
        read,
    }
}

/// Compiles the component and checks that its `init` accepts the config, without
/// touching what runs.
pub fn load_checked(engine: &PluginEngine, m: &Manifest) -> Result<Code, String> {
    if !m.wasm.exists() {
        return Err(format!(
            "{}: component {} not found",
            m.name,
            m.wasm.display()
        ));
    }
    let code = engine.load(&m.wasm).map_err(|e| e.to_string())?;
    let mut inst = engine
        .instantiate(
            &code,
            TaskInfo {
                pipeline: m.name.clone(),
                // The config check runs before any task: no partition yet.
                topic: m.inputs.first().cloned().unwrap_or_default(),
                partition: -1,
                retry: false,
            },
            m.limits,
        )
        .map_err(|e| format!("{}: {e}", m.wasm.display()))?;
    inst.init(&m.config_json)
        .map_err(|e| format!("{}: init failed: {e}", m.wasm.display()))?
        .map_err(|e| format!("{}: the plugin refused its config: {e}", m.wasm.display()))?;
    Ok(code)
}

/// An event that changes nothing: a file opened, read or closed unwritten. A rescan reads
/// every manifest, and inotify reports those opens too; counted as changes, they started
/// the next rescan, so the host rescanned without end (every 150 ms plus the rescan).
fn only_read(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

/// Whether a new manifest runs the same tasks as the old, so its code can be hot-reloaded.
pub fn same_topology(a: &Manifest, b: &Manifest) -> bool {
    a.inputs == b.inputs
        && a.output == b.output
        && a.dead_letter == b.dead_letter
        && a.start == b.start
        && a.tick_ms == b.tick_ms
        && a.retry == b.retry
        && a.max_lag == b.max_lag
        && a.partitioning == b.partitioning
        && a.event_time == b.event_time
}

/// How an ACL refusal starts, so a rescan knows to try the pipeline again.
const NOT_AUTHORIZED: &str = "not authorized:";

fn stop(r: Running) {
    r.pipeline.request_stop();
    for t in r.tasks {
        t.finished.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_of_the_plugins_directory_are_not_changes() {
        use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
        assert!(only_read(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(only_read(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!only_read(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!only_read(&EventKind::Create(CreateKind::File)));
        assert!(!only_read(&EventKind::Modify(ModifyKind::Any)));
    }
}
