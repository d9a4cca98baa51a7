//! Where this instance runs: the pipeline and the partition it reads, known from `init` on,
//! before any record arrives.

/// The instance's place in its pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// The pipeline's name (its manifest's file name).
    pub pipeline: String,
    /// The partition this instance reads: an input partition, or the retry topic's.
    pub topic: String,
    /// -1 while the host only checks the configuration (before any task runs).
    pub partition: i32,
    /// True for the instance that re-processes retried records.
    pub retry: bool,
}

impl Task {
    /// "topic/partition".
    pub fn source(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static NATIVE: std::cell::RefCell<Task> = std::cell::RefCell::new(Task {
        pipeline: "test".into(),
        topic: "test".into(),
        partition: 0,
        retry: false,
    });
}

/// This instance's task.
pub fn task() -> Task {
    #[cfg(target_arch = "wasm32")]
    {
        let t = crate::bindings::sluice::plugin::host::task();
        Task {
            pipeline: t.pipeline,
            topic: t.topic,
            partition: t.partition,
            retry: t.retry,
        }
    }
    // Native builds are unit tests: the harness says where the plugin "runs".
    #[cfg(not(target_arch = "wasm32"))]
    NATIVE.with(|t| t.borrow().clone())
}

/// Sets what [`task`] returns in native unit tests (see `testing::Harness::with_task`).
#[cfg(not(target_arch = "wasm32"))]
pub fn set_native_task(task: Task) {
    NATIVE.with(|t| *t.borrow_mut() = task);
}

/// Tells the host that [`Plugin::tick`](crate::Plugin::tick) has nothing to do until more input
/// arrives: the instance is not ticked again until its next record. The default `tick` calls
/// it, so a plugin that defines none is ticked once and then only after input; a windowing
/// plugin calls it when no window is open, so its idle partitions cost no CPU.
pub fn pause_ticks() {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::sluice::plugin::host::pause_ticks();
    #[cfg(not(target_arch = "wasm32"))]
    TICKS_PAUSED.with(|p| p.set(true));
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static TICKS_PAUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Native builds: whether [`pause_ticks`] was called since the last `take` (for
/// `testing::Harness`, which plays the host).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn take_ticks_paused() -> bool {
    TICKS_PAUSED.with(|p| p.replace(false))
}

/// In a component the host keeps the flag; the harness is native only.
#[cfg(target_arch = "wasm32")]
pub(crate) fn take_ticks_paused() -> bool {
    false
}
