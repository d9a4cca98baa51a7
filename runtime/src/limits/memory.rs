//! One budget for the bytes the broker holds for clients at once: large request frames while
//! they arrive and are handled, and fetch responses until they are written (Kafka's
//! `queued.max.request.bytes` memory pool, which covers requests only).
//!
//! The two sides give way differently, because they differ in who waits for whom:
//! - A large request waits for room before more of it is read ([`MemoryPool::reserve`]). Its
//!   sender's TCP window fills and it slows down; nothing is refused and nothing is lost.
//!   Small frames (up to [`SMALL_FRAME`]) take nothing from the budget, so the requests of
//!   consumers and admin tools are never stuck behind someone's 90 MiB produce.
//! - A fetch takes what is free, up to what it may return ([`MemoryPool::take_up_to`]), and
//!   never waits: under pressure responses get smaller (down to the one whole batch KIP-74
//!   guarantees), so consumers keep moving and the total stays near the budget.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Frames up to this size are read without a reservation: they cost at most this much per
/// connection, which `max_connections` already bounds.
pub const SMALL_FRAME: usize = 64 * 1024;

#[derive(Debug)]
pub struct MemoryPool {
    cap: usize,
    used: AtomicUsize,
    freed: Notify,
    /// Large requests that had to wait for room.
    pub waited: AtomicU64,
    /// Fetch responses cut short because the budget was spent.
    pub shrunk: AtomicU64,
    last_log_ms: AtomicI64,
}

/// Bytes taken from the pool, given back when dropped.
#[derive(Debug, Default)]
pub struct Held {
    pool: Option<Arc<MemoryPool>>,
    bytes: usize,
}

impl Held {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back all but `n` bytes (a fetch that found less data than it made room for).
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.bytes {
            if let Some(p) = &self.pool {
                p.give_back(self.bytes - n);
            }
            self.bytes = n;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

impl MemoryPool {
    pub fn new(cap: usize) -> Arc<MemoryPool> {
        Arc::new(MemoryPool {
            cap,
            used: AtomicUsize::new(0),
            freed: Notify::new(),
            waited: AtomicU64::new(0),
            shrunk: AtomicU64::new(0),
            last_log_ms: AtomicI64::new(0),
        })
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes between `min` and `want` bytes if at least `min` are free.
    fn take(&self, want: usize, min: usize) -> Option<usize> {
        let mut got = 0;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let free = self.cap.saturating_sub(used);
                if free < min {
                    return None;
                }
                got = want.min(free);
                Some(used + got)
            })
            .ok()
            .map(|_| got)
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    /// Waits until `bytes` (at most the whole budget, so one request larger than it is still
    /// served, alone) are free, and takes them.
    pub async fn reserve(self: &Arc<Self>, bytes: usize) -> Held {
        let bytes = bytes.min(self.cap);
        let mut counted = false;
        loop {
            // Registered before looking, so a release between the look and the wait wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.take(bytes, bytes).is_some() {
                return Held {
                    pool: Some(self.clone()),
                    bytes,
                };
            }
            if !counted {
                counted = true;
                let n = self.waited.fetch_add(1, Ordering::Relaxed) + 1;
                if super::log_due(&self.last_log_ms) {
                    tracing::info!(
                        bytes,
                        in_use = self.in_use(),
                        budget = self.cap,
                        waited_so_far = n,
                        setting = "max_in_flight_bytes",
                        "a large request waits for room before it is read"
                    );
                }
            }
            freed.await;
        }
    }

    /// Takes up to `want` bytes, whatever is free (possibly nothing), without waiting.
    pub fn take_up_to(self: &Arc<Self>, want: usize) -> Held {
        let got = self.take(want, 0).unwrap_or(0);
        if got < want {
            let n = self.shrunk.fetch_add(1, Ordering::Relaxed) + 1;
            if super::log_due(&self.last_log_ms) {
                tracing::info!(
                    want,
                    got,
                    budget = self.cap,
                    shrunk_so_far = n,
                    setting = "max_in_flight_bytes",
                    "fetch response made smaller: the memory budget is spent"
                );
            }
        }
        Held {
            pool: Some(self.clone()),
            bytes: got,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn requests_wait_for_room_and_fetches_take_what_is_left() {
        let pool = MemoryPool::new(100);
        let a = pool.reserve(60).await;
        let mut f = pool.take_up_to(70);
        assert_eq!(f.bytes(), 40, "a fetch gets what is free");
        assert_eq!(pool.take_up_to(10).bytes(), 0);
        assert_eq!(pool.shrunk.load(Ordering::Relaxed), 2);
        f.shrink_to(15);
        assert_eq!(pool.in_use(), 75);
        // 30 more do not fit: the request waits until `a` is dropped.
        let p = pool.clone();
        let waiter = tokio::spawn(async move { p.reserve(30).await.bytes() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .unwrap()
                .unwrap(),
            30
        );
        assert_eq!(pool.waited.load(Ordering::Relaxed), 1);
        drop(f);
        assert_eq!(pool.in_use(), 0, "everything given back");
        // Larger than the whole budget: served alone.
        assert_eq!(pool.reserve(1000).await.bytes(), 100);
    }
}
