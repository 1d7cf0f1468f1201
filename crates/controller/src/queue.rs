//! A deduplicating work queue (the client-go workqueue design).
//!
//! - A key added while it waits is not added twice.
//! - A key added while a worker processes it is marked dirty and processed again once
//!   the worker is done, never by two workers at once.
//! - [`WorkQueue::add_after`] coalesces: a key has at most one pending delayed add, at the
//!   earliest deadline asked for (bursts of events become one reconcile; a debounce of
//!   0.5 s is never held back by a retry due in 5 minutes). A later deadline superseded
//!   by an earlier one is not kept: a reconcile that runs early asks again for what is
//!   not due yet (level-triggered), as kube-runtime's scheduler does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;

#[derive(Debug)]
struct State<K> {
    ready: VecDeque<K>,
    /// Waiting keys, with when each was queued.
    queued: HashMap<K, Instant>,
    active: HashSet<K>,
    dirty: HashSet<K>,
    /// Key → deadline of its pending delayed add.
    delayed: HashMap<K, tokio::time::Instant>,
    closed: bool,
}

impl<K: Clone + Eq + Hash> State<K> {
    /// Queues `key` now unless it waits already; whether it was queued.
    fn enqueue(&mut self, key: K) -> bool {
        if self.queued.contains_key(&key) {
            return false;
        }
        self.queued.insert(key.clone(), Instant::now());
        self.ready.push_back(key);
        true
    }
}

/// The queue; cheap to clone (shared).
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Arc<Mutex<State<K>>>,
    notify: Arc<Notify>,
    /// Observes each key's wait from its add to a worker taking it.
    wait: Option<Histogram>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: self.state.clone(),
            notify: self.notify.clone(),
            wait: self.wait.clone(),
        }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashMap::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
                delayed: HashMap::new(),
                closed: false,
            })),
            notify: Arc::new(Notify::new()),
            wait: None,
        }
    }

    /// The same queue, observing into `h` how long each key waits before a worker takes
    /// it (from its add, or from its re-queue when it was added while being processed).
    pub fn with_wait_histogram(mut self, h: Histogram) -> Self {
        self.wait = Some(h);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A worker that panicked while holding the lock leaves consistent sets behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `key` now.
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        if s.active.contains(&key) {
            s.dirty.insert(key);
        } else if s.enqueue(key) {
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Adds `key` after `delay`, unless a delayed add of it is already due sooner.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let deadline = tokio::time::Instant::now() + delay;
        {
            let mut s = self.lock();
            if s.closed || s.delayed.get(&key).is_some_and(|d| *d <= deadline) {
                return;
            }
            s.delayed.insert(key.clone(), deadline);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let due = {
                let mut s = q.lock();
                // Superseded by an earlier deadline (whose timer added it already).
                let mine = s.delayed.get(&key) == Some(&deadline);
                if mine {
                    s.delayed.remove(&key);
                }
                mine
            };
            if due {
                q.add(key);
            }
        });
    }

    /// Waits for the next key; `None` once the queue is closed and drained.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(k) = s.ready.pop_front() {
                    if let (Some(at), Some(h)) = (s.queued.remove(&k), &self.wait) {
                        h.observe(at.elapsed().as_secs_f64());
                    }
                    s.active.insert(k.clone());
                    if !s.ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(k);
                }
                if s.closed {
                    self.notify.notify_one();
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; re-queues it if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut s = self.lock();
        s.active.remove(key);
        if s.dirty.remove(key) && !s.closed && s.enqueue(key.clone()) {
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Stops accepting keys; workers drain what is queued, then `next` returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Stops at once: closes the queue and drops every waiting key, so `next` returns
    /// `None` now (keys being processed finish; they are not re-queued).
    pub fn shut_down(&self) {
        {
            let mut s = self.lock();
            s.closed = true;
            s.ready.clear();
            s.queued.clear();
            s.dirty.clear();
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Keys waiting (not counting active or delayed ones); for tests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// No key waiting; for tests.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_requeues_dirty_keys() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, Some("a"));
        q.add("a"); // while active: dirty, not queued twice
        assert_eq!(q.len(), 1);
        q.done(&"a");
        assert_eq!(q.next().await, Some("b"));
        assert_eq!(q.next().await, Some("a"));
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn each_take_observes_its_wait() {
        let h = Histogram::new([0.001, 1.0].into_iter());
        let q = WorkQueue::new().with_wait_histogram(h.clone());
        q.add("a");
        q.add("a"); // deduplicated: one wait, not two
        q.add("b");
        assert_eq!(q.next().await, Some("a"));
        q.add("a"); // dirty while active: re-queued by done
        q.done(&"a");
        assert_eq!(q.next().await, Some("b"));
        assert_eq!(q.next().await, Some("a"));
        let mut text = String::new();
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("wait", "", h);
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("wait_count 3"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_coalesce() {
        let q = WorkQueue::new();
        for _ in 0..10 {
            q.add_after("p", Duration::from_millis(500));
        }
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, Some("p"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_delayed_add_wins() {
        let q = WorkQueue::new();
        q.add_after("p", Duration::from_secs(300)); // a retry backoff
        q.add_after("p", Duration::from_millis(500)); // a debounce: not held back
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(q.len(), 1, "the earlier deadline fired");
        assert_eq!(q.next().await, Some("p"));
        q.done(&"p");
        q.add_after("p", Duration::from_secs(1));
        q.add_after("p", Duration::from_secs(60)); // later than pending: dropped
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, Some("p"));
        q.done(&"p");
        tokio::time::sleep(Duration::from_secs(400)).await;
        assert!(q.is_empty(), "superseded timers add nothing");
    }

    #[tokio::test]
    async fn shut_down_drops_what_waits() {
        let q = WorkQueue::new();
        q.add(1);
        q.add(2);
        assert_eq!(q.next().await, Some(1));
        q.add(1); // dirty while active
        q.shut_down();
        q.add(3);
        q.done(&1);
        assert_eq!(
            q.next().await,
            None,
            "nothing queued is taken after shut_down"
        );
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn close_drains_then_ends() {
        let q = WorkQueue::new();
        q.add(1);
        q.close();
        q.add(2);
        assert_eq!(q.next().await, Some(1));
        assert_eq!(q.next().await, None);
    }
}
