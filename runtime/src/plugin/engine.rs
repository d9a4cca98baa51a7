//! The wasmtime side of plugins: one shared engine, compiled components (cached on disk), and
//! sandboxed instances with a memory cap and a time cap per call.
//!
//! A plugin gets exactly what `wit/processor.wit` grants: a log function, where it runs, and a
//! way to say it needs no ticks for now.
//! Components whose language runtime needs WASI 0.2 (Python from componentize-py, JavaScript
//! from jco) get it, but with nothing in it: no files, network, environment or arguments,
//! clocks that stand still and randomness from a generator seeded by the task. So replaying a
//! plugin after a crash gives the same output whatever language it is written in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

// The host binds the core world; `on-watermark` (0.1.2) is looked up per component, so
// components built against 0.1.0 and 0.1.1 still load.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor-core",
});

/// The optional `on-watermark` export.
const ON_WATERMARK: &str = "on-watermark";
type WatermarkFunc = wasmtime::component::TypedFunc<(i64,), (Vec<OutputRecord>,)>;

pub use self::sluice::plugin::types::{Level, Record, TaskInfo};

/// Epoch ticks are this far apart; a call's time cap is rounded up to whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Log lines a plugin may write per call, and their length: a chatty plugin must not be able
/// to flood the broker's log.
const LOG_LINES_PER_CALL: u32 = 100;
const LOG_LINE_MAX: usize = 4096;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a valid sluice plugin component: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
}

/// Why a call into a plugin failed.
#[derive(Debug, Error, Clone)]
#[non_exhaustive]
pub enum CallError {
    #[error("plugin used more CPU than cpu_ms_per_call ({0} ms) in one call")]
    Timeout(u64),
    #[error("plugin exceeded its memory limit ({0} MiB)")]
    OutOfMemory(u64),
    #[error("plugin trapped: {0}")]
    Trap(String),
}

/// Per-instance limits, from the manifest's `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_mb: u64,
    pub cpu_ms_per_call: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            cpu_ms_per_call: 100,
        }
    }
}

/// What an instance's store carries.
pub struct HostState {
    limits: StoreLimits,
    /// WASI for language runtimes: empty and deterministic (see [`deterministic_wasi`]).
    wasi: wasmtime_wasi::WasiCtx,
    table: wasmtime::component::ResourceTable,
    plugin: Arc<str>,
    task: TaskInfo,
    log_lines: u32,
    /// The calling thread's CPU time when the current call started, in ns.
    call_cpu_start: u64,
    /// The instance called `host.pause-ticks` since its last `process`.
    ticks_paused: bool,
    cpu_budget_ns: u64,
}

/// CPU time consumed by the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass; CLOCK_THREAD_CPUTIME_ID is
    // always available on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl self::sluice::plugin::host::Host for HostState {
    fn task(&mut self) -> TaskInfo {
        self.task.clone()
    }

    fn pause_ticks(&mut self) {
        self.ticks_paused = true;
    }

    fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            if self.log_lines == LOG_LINES_PER_CALL + 1 {
                tracing::warn!(plugin = %self.plugin, "plugin log lines beyond {LOG_LINES_PER_CALL} in one call are dropped");
            }
            return;
        }
        let mut m = message;
        if m.len() > LOG_LINE_MAX {
            let mut cut = LOG_LINE_MAX;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
        }
        let p = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin = p, "{m}"),
            Level::Debug => tracing::debug!(plugin = p, "{m}"),
            Level::Info => tracing::info!(plugin = p, "{m}"),
            Level::Warn => tracing::warn!(plugin = p, "{m}"),
            Level::Error => tracing::error!(plugin = p, "{m}"),
        }
    }
}

impl self::sluice::plugin::types::Host for HostState {}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A clock that stands still at the Unix epoch: a plugin's notion of time is its records'
/// timestamps, `tick`'s `now-ms` and `on-watermark`, which replays reproduce.
struct StillClock;

impl wasmtime_wasi::HostWallClock for StillClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for StillClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The WASI a task's instance sees: nothing to reach outside it, and nothing that differs
/// between a run and its replay. stdin is closed, stdout and stderr are discarded (plugins
/// log through `host.log`), no preopened directories, no sockets.
fn deterministic_wasi(task: &TaskInfo) -> wasmtime_wasi::WasiCtx {
    use rand::SeedableRng;
    let mut seed = Sha256::new();
    seed.update(task.pipeline.as_bytes());
    seed.update(task.topic.as_bytes());
    seed.update(task.partition.to_be_bytes());
    let seed: [u8; 32] = seed.finalize().into();
    let mut b = wasmtime_wasi::WasiCtx::builder();
    b.wall_clock(StillClock)
        .monotonic_clock(StillClock)
        .secure_random(rand::rngs::StdRng::from_seed(seed))
        .insecure_random(rand::rngs::StdRng::from_seed(seed))
        .insecure_random_seed(u128::from_be_bytes(
            seed[..16].try_into().unwrap_or_default(),
        ))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    // A debugging aid: what language runtimes print (a Python traceback, a JavaScript
    // exception) on the broker's own standard error.
    if std::env::var_os("SLUICE_PLUGIN_STDERR").is_some() {
        b.inherit_stderr();
    }
    b.build()
}

/// The process-wide engine, its epoch clock and the compiled-component cache.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    clock: Arc<EpochClock>,
}

/// Who needs the epoch to move: the guest calls in flight. The clock thread ticks only while
/// there is one and sleeps otherwise, so idle pipelines cost it no wake-ups (it woke 200
/// times a second before, whatever the load).
#[derive(Default)]
struct EpochClock {
    in_flight: std::sync::atomic::AtomicUsize,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl EpochClock {
    /// Marks a guest call as running until the guard drops.
    fn enter(self: &Arc<Self>) -> InFlight {
        use std::sync::atomic::Ordering;
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        InFlight(self.clone())
    }
}

struct InFlight(Arc<EpochClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A cached compiled component: this magic, the SHA-256 of the rest, then the bytes
/// `precompile_component` made. The file becomes native code, so a torn write, a bad disk or
/// a stray edit must mean "recompile", never "run it": wasmtime itself checks only the header.
const CACHE_MAGIC: &[u8; 8] = b"SLUICEC1";

fn seal(compiled: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CACHE_MAGIC.len() + 32 + compiled.len());
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&Sha256::digest(compiled));
    out.extend_from_slice(compiled);
    out
}

fn unseal(file: &[u8]) -> Result<&[u8], &'static str> {
    let body = file
        .strip_prefix(CACHE_MAGIC.as_slice())
        .ok_or("not a sluice compiled-plugin file")?;
    if body.len() < 32 {
        return Err("truncated");
    }
    let (sum, compiled) = body.split_at(32);
    if Sha256::digest(compiled).as_slice() != sum {
        return Err("checksum mismatch");
    }
    Ok(compiled)
}

/// A compiled, type-checked plugin ready to instantiate.
#[derive(Clone)]
pub struct Code {
    pre: ProcessorCorePre<HostState>,
    /// Whether the component exports `on-watermark`.
    pub watermarks: bool,
    /// First 12 hex digits of the component's SHA-256: the version shown to users and
    /// stamped on dead letters.
    pub version: String,
}

impl PluginEngine {
    /// `cache_dir`: where compiled components are kept so a restart does not recompile them.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<PluginEngine>, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| EngineError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        ProcessorCore::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| EngineError::Engine(format!("{e:#}")))?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| EngineError::Engine(format!("{e:#}")))?;
        // The epoch clock: a thread, because a plugin stuck in a loop holds its thread and
        // only an increment from elsewhere can stop it. It parks while no guest code runs;
        // the first call to start unparks it (a token left before it parks is kept).
        let weak = engine.weak();
        let clock = Arc::new(EpochClock::default());
        let ticking = clock.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                if ticking.in_flight.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    // Woken by a call; the timeout only notices a dropped engine.
                    std::thread::park_timeout(Duration::from_secs(5));
                    if weak.upgrade().is_none() {
                        return;
                    }
                    continue;
                }
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| EngineError::Engine(e.to_string()))?;
        let _ = clock.thread.set(thread.thread().clone());
        if let Some(d) = &cache_dir {
            if let Err(e) = std::fs::create_dir_all(d) {
                tracing::warn!(dir = %d.display(), error = %e, "compiled-plugin cache disabled");
            }
        }
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            cache_dir,
            clock,
        }))
    }

    /// Compiles the component at `path` (or loads it from the cache) and checks that it
    /// exports the `processor` world.
    pub fn load(&self, path: &Path) -> Result<Code, EngineError> {
        let bytes = std::fs::read(path).map_err(|error| EngineError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        self.load_bytes(path, &bytes)
    }

    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Code, EngineError> {
        let invalid = |why: String| EngineError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let component = self.compile_cached(&hex, bytes).map_err(invalid)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let watermarks = component.get_export_index(None, ON_WATERMARK).is_some();
        let pre = ProcessorCorePre::new(pre).map_err(|e| invalid(format!("{e:#}")))?;
        Ok(Code {
            pre,
            watermarks,
            version: hex[..12].to_string(),
        })
    }

    fn compile_cached(&self, hex: &str, bytes: &[u8]) -> Result<Component, String> {
        use std::hash::{Hash, Hasher};
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(|e| format!("{e:#}"));
        };
        // The engine's compatibility hash changes with wasmtime's version and settings, so a
        // cached artifact is never loaded into an engine that cannot run it.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let file = dir.join(format!("{hex}-{:016x}.cwasm", h.finish()));
        match std::fs::read(&file) {
            Ok(sealed) => match unseal(&sealed) {
                // SAFETY: these bytes are exactly what `precompile_component` of an engine
                // with the same compatibility hash wrote (the checksum says so), in the
                // broker's own data directory: as trusted as the broker's own binary.
                Ok(compiled) => match unsafe { Component::deserialize(&self.engine, compiled) } {
                    Ok(c) => {
                        tracing::info!(file = %file.display(), "plugin loaded from the compiled cache");
                        return Ok(c);
                    }
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "cached plugin unusable; recompiling")
                    }
                },
                Err(why) => {
                    tracing::warn!(file = %file.display(), why, "cached plugin fails its check; recompiling")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the cached plugin; recompiling")
            }
        }
        let started = std::time::Instant::now();
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| format!("{e:#}"))?;
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            bytes = bytes.len(),
            "plugin compiled"
        );
        if let Err(e) = crate::broker::write_atomically(&file, &seal(&compiled)) {
            tracing::warn!(file = %file.display(), error = %e, "cannot cache the compiled plugin");
        }
        // SAFETY: these bytes were produced by this engine a moment ago.
        unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(|e| format!("{e:#}"))
    }

    /// A fresh instance of `code`; `init` is not called yet.
    pub fn instantiate(
        &self,
        code: &Code,
        task: TaskInfo,
        limits: Limits,
    ) -> Result<Instance, CallError> {
        let plugin: Arc<str> = Arc::from(task.pipeline.as_str());
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size((limits.memory_mb as usize).saturating_mul(1 << 20))
                // A language runtime's component is several core instances (interpreter,
                // libc, WASI adapter, the user's code), each with its tables and memory.
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            wasi: deterministic_wasi(&task),
            table: wasmtime::component::ResourceTable::new(),
            plugin,
            task,
            log_lines: 0,
            call_cpu_start: 0,
            ticks_paused: false,
            cpu_budget_ns: limits.cpu_ms_per_call.saturating_mul(1_000_000),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // The cap is on CPU time, not wall time: at every epoch tick past the deadline, check
        // how much CPU this thread really spent in the call, so a plugin on a busy machine
        // (descheduled, not looping) is not mistaken for a runaway one.
        store.epoch_deadline_callback(|ctx| {
            let s = ctx.data();
            let used = thread_cpu_ns().saturating_sub(s.call_cpu_start);
            if used >= s.cpu_budget_ns {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            let left_ticks = (s.cpu_budget_ns - used).div_ceil(EPOCH_TICK.as_nanos() as u64);
            Ok(wasmtime::UpdateDeadline::Continue(left_ticks.max(1)))
        });
        // Instantiation runs the component's start functions: guest code too.
        let running = self.clock.enter();
        arm(&mut store, limits);
        let instance = code
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| classify(e, limits))?;
        let processor =
            ProcessorCore::new(&mut store, &instance).map_err(|e| classify(e, limits))?;
        let on_watermark = if code.watermarks {
            Some(
                instance
                    .get_typed_func::<(i64,), (Vec<OutputRecord>,)>(&mut store, ON_WATERMARK)
                    .map_err(|e| {
                        CallError::Trap(format!(
                            "the component's {ON_WATERMARK} has the wrong type: {e:#}"
                        ))
                    })?,
            )
        } else {
            None
        };
        drop(running);
        Ok(Instance {
            store,
            processor,
            on_watermark,
            limits,
            clock: self.clock.clone(),
        })
    }
}

/// One sandboxed plugin instance. After any failed call it is poisoned (wasmtime refuses
/// further calls after a trap): drop it and make a new one.
pub struct Instance {
    store: Store<HostState>,
    processor: ProcessorCore,
    on_watermark: Option<WatermarkFunc>,
    limits: Limits,
    clock: Arc<EpochClock>,
}

fn arm(store: &mut Store<HostState>, limits: Limits) {
    let ticks = limits
        .cpu_ms_per_call
        .div_ceil(EPOCH_TICK.as_millis() as u64)
        .max(1);
    // One extra tick: the first may arrive at once. Past the deadline, the callback set in
    // `instantiate` decides by CPU time.
    store.set_epoch_deadline(ticks + 1);
    let s = store.data_mut();
    s.log_lines = 0;
    s.call_cpu_start = thread_cpu_ns();
}

fn classify(e: wasmtime::Error, limits: Limits) -> CallError {
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        return match t {
            wasmtime::Trap::Interrupt => CallError::Timeout(limits.cpu_ms_per_call),
            wasmtime::Trap::UnreachableCodeReached => {
                CallError::Trap("unreachable code reached (a panic in the plugin?)".into())
            }
            other => CallError::Trap(other.to_string()),
        };
    }
    let text = format!("{e:#}");
    // A refused memory.grow is an error, not a Trap, when trap_on_grow_failure is set.
    if text.contains("memory") && (text.contains("grow") || text.contains("limit")) {
        return CallError::OutOfMemory(limits.memory_mb);
    }
    CallError::Trap(text)
}

macro_rules! call {
    ($self:ident, $f:ident $(, $arg:expr)*) => {{
        let _running = $self.clock.enter();
        arm(&mut $self.store, $self.limits);
        let r = $self.processor.$f(&mut $self.store $(, $arg)*);
        r.map_err(|e| classify(e, $self.limits))
    }};
}

impl Instance {
    pub fn init(&mut self, config: &str) -> Result<Result<(), String>, CallError> {
        call!(self, call_init, config)
    }

    pub fn process(&mut self, batch: &Batch) -> Result<Vec<Outcome>, CallError> {
        // New input may give `tick` work again (a window opened).
        self.store.data_mut().ticks_paused = false;
        call!(self, call_process, batch)
    }

    pub fn tick(&mut self, now_ms: i64) -> Result<Vec<OutputRecord>, CallError> {
        call!(self, call_tick, now_ms)
    }

    /// Whether the instance asked not to be ticked until its next `process` call
    /// (`host.pause-ticks`).
    pub fn ticks_paused(&self) -> bool {
        self.store.data().ticks_paused
    }

    /// None when the component does not export `on-watermark`.
    pub fn on_watermark(
        &mut self,
        watermark_ms: i64,
    ) -> Result<Option<Vec<OutputRecord>>, CallError> {
        let Some(f) = self.on_watermark else {
            return Ok(None);
        };
        let _running = self.clock.enter();
        arm(&mut self.store, self.limits);
        f.call(&mut self.store, (watermark_ms,))
            .map(|(outs,)| Some(outs))
            .map_err(|e| classify(e, self.limits))
    }

    pub fn snapshot(&mut self) -> Result<Vec<u8>, CallError> {
        call!(self, call_snapshot)
    }

    pub fn restore(&mut self, state: &[u8]) -> Result<Result<(), String>, CallError> {
        call!(self, call_restore, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is: the preamble of an empty one.
    const EMPTY_COMPONENT: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn seal_and_unseal() {
        let sealed = seal(b"native code");
        assert_eq!(unseal(&sealed), Ok(&b"native code"[..]));
        for at in [0, 8, 20, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(unseal(&bad).is_err(), "flipped byte {at}");
        }
        assert!(unseal(&sealed[..sealed.len() - 1]).is_err());
        assert!(unseal(&sealed[..20]).is_err());
        assert!(unseal(b"").is_err());
    }

    #[test]
    fn a_damaged_cache_file_is_recompiled_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let engine = PluginEngine::new(Some(dir.path().to_path_buf())).unwrap();
        engine.compile_cached("abc", &EMPTY_COMPONENT).unwrap();
        let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let good = std::fs::read(&files[0]).unwrap();
        assert!(unseal(&good).is_ok());
        // Flip a byte in the middle of the native code, as a bad disk would.
        let mut bad = good.clone();
        let mid = 40 + (bad.len() - 40) / 2;
        bad[mid] ^= 0xff;
        std::fs::write(&files[0], &bad).unwrap();
        let again = PluginEngine::new(Some(dir.path().to_path_buf())).unwrap();
        again.compile_cached("abc", &EMPTY_COMPONENT).unwrap();
        let rewritten = std::fs::read(&files[0]).unwrap();
        assert!(
            rewritten != bad && unseal(&rewritten).is_ok(),
            "recompiled and rewritten"
        );
        // A file from before the checksum (no header) is recompiled the same way.
        std::fs::write(&files[0], unseal(&good).unwrap()).unwrap();
        again.compile_cached("abc", &EMPTY_COMPONENT).unwrap();
        assert!(unseal(&std::fs::read(&files[0]).unwrap()).is_ok());
    }
}
