//! The broker's plugin tasks, many on a few threads.
//!
//! A task used to be a thread of its own, parked while it waited for input. Ten thousand
//! tasks were ten thousand threads: each with a stack and a wasm signal stack, both with
//! guard pages, so four memory mappings a task before its instance, and `vm.max_map_count`
//! capped the tasks near 5,000. Here a task is a [`Task`] whose `step` does a bounded
//! piece of work and says what it waits for; a few threads step the tasks that are ready, in
//! turn, and a waiting task is a small future on the broker's runtime that hands it back to
//! the queue when its input grows, its time comes or its pipeline stops. An idle task holds
//! its instance and that future, and no thread.
//!
//! Invariants:
//! - a task is in exactly one place: the queue, a thread's hands, or its wait's future;
//! - a task's [`Finished`] is set once, after its last step (or when it is dropped unstepped
//!   because the runtime is gone), so whoever stops a pipeline may wait for it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use super::task::{self, Step, Task};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set when a task has run its last step.
#[derive(Default)]
pub struct Finished {
    over: Mutex<bool>,
    cv: Condvar,
}

impl Finished {
    fn set(&self) {
        *lock(&self.over) = true;
        self.cv.notify_all();
    }

    /// Blocks until the task is over.
    pub fn wait(&self) {
        let mut over = lock(&self.over);
        while !*over {
            over = self.cv.wait(over).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct Job {
    /// None only in `drop`: the task (its instance, its I/O) goes before `finished` is set.
    task: Option<Task>,
    finished: Arc<Finished>,
}

impl Job {
    fn task(&mut self) -> &mut Task {
        self.task
            .as_mut()
            .expect("a job's task is taken only when the job is dropped")
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        drop(self.task.take());
        self.finished.set();
    }
}

struct Queue {
    ready: Mutex<VecDeque<Job>>,
    cv: Condvar,
    rt: tokio::runtime::Handle,
}

impl Queue {
    fn push(&self, job: Job) {
        lock(&self.ready).push_back(job);
        self.cv.notify_one();
    }

    fn pop(&self) -> Job {
        let mut ready = lock(&self.ready);
        loop {
            if let Some(j) = ready.pop_front() {
                return j;
            }
            ready = self.cv.wait(ready).unwrap_or_else(|p| p.into_inner());
        }
    }
}

pub struct Pool {
    queue: Arc<Queue>,
    threads: usize,
}

impl Pool {
    /// Starts `threads` threads (at least one) that live as long as the process.
    pub fn new(threads: usize, rt: tokio::runtime::Handle) -> std::io::Result<Pool> {
        let queue = Arc::new(Queue {
            ready: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
            rt,
        });
        let threads = threads.max(1);
        for i in 0..threads {
            let q = queue.clone();
            std::thread::Builder::new()
                .name(format!("plugins-{i}"))
                .spawn(move || work(&q))?;
        }
        Ok(Pool { queue, threads })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `task` until it is over; the answer says when it is.
    pub fn submit(&self, task: Task) -> Arc<Finished> {
        let finished = Arc::new(Finished::default());
        self.queue.push(Job {
            task: Some(task),
            finished: finished.clone(),
        });
        finished
    }
}

/// The default size: threads block in fsyncs of checkpoints and durable output as well as
/// run guest code, so a few per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

fn work(q: &Arc<Queue>) {
    let mut job = q.pop();
    loop {
        match job.task().step() {
            Step::Again => {
                // Behind the others that are ready, without waking a thread to take it; alone,
                // it stays on this thread.
                let mut ready = lock(&q.ready);
                if let Some(next) = ready.pop_front() {
                    ready.push_back(job);
                    job = next;
                }
                continue;
            }
            // Dropping the job sets `finished`, after the task's last checkpoint.
            Step::Done => drop(job),
            Step::Wait(w) => match job.task().io().park(&w) {
                Some(wait) => {
                    let back = q.clone();
                    q.rt.spawn(async move {
                        wait.await;
                        back.push(job);
                    });
                }
                None => {
                    job.task().io().wait(&w);
                    q.push(job);
                }
            },
            Step::Backoff { until } => {
                let p = job.task().pipeline().clone();
                let back = q.clone();
                q.rt.spawn(async move {
                    task::backoff(p, until).await;
                    back.push(job);
                });
            }
        }
        job = q.pop();
    }
}
