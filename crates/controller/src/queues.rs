//! The two work queues (Pods, policies) and their retry backoffs.
//!
//! Each queue has its own key type and its own backoff state, so a Pod and a policy of
//! the same name never share a failure count: a Pod's success never resets a failing
//! policy's backoff.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::keys::{PodKey, PolicyKey};
use crate::metrics::Metrics;
use crate::queue::WorkQueue;

/// The work queues of one operator instance.
pub(crate) struct Queues {
    /// Main Pods (and orphaned sidecars) to reconcile.
    pub(crate) pods: WorkQueue<PodKey>,
    /// Policies whose status (and rollout) to compute.
    pub(crate) policies: PolicyQueue,
    /// Delay that coalesces Pod events into one status computation per policy.
    debounce: Duration,
    pod_failures: Mutex<RetryBackoff<PodKey>>,
    policy_failures: Mutex<RetryBackoff<PolicyKey>>,
    /// Failing policies: when their retry is due. A debounced status run (Pod events) is
    /// not scheduled before it, so a status write that keeps failing backs off even while
    /// its Pods keep changing; a new generation still runs at once.
    policy_retry_at: Mutex<HashMap<PolicyKey, Instant>>,
}

impl Queues {
    pub(crate) fn new(debounce: Duration, metrics: &Metrics) -> Self {
        Queues {
            pods: WorkQueue::new().with_wait_histogram(metrics.queue_wait("pod")),
            policies: PolicyQueue(
                WorkQueue::new().with_wait_histogram(metrics.queue_wait("policy")),
            ),
            debounce,
            pod_failures: Mutex::default(),
            policy_failures: Mutex::default(),
            policy_retry_at: Mutex::default(),
        }
    }

    /// Schedules policy `key`'s status after the debounce delay, or when its retry is due
    /// if it is failing.
    pub(crate) fn status_soon(&self, key: PolicyKey) {
        let key = key.queued();
        let retry = crate::lock(&self.policy_retry_at).get(&key).copied();
        let wait = retry.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        });
        self.policies.add_after(key, wait.max(self.debounce));
    }

    /// Records a Pod reconcile's outcome; for a failure, the delay before its retry.
    pub(crate) fn pod_outcome(&self, key: &PodKey, failed: bool) -> Option<Duration> {
        crate::lock(&self.pod_failures).record(key, failed)
    }

    /// Records a policy reconcile's outcome; for a failure, the delay before its retry.
    pub(crate) fn policy_outcome(&self, key: &PolicyKey, failed: bool) -> Option<Duration> {
        let key = &key.clone().queued();
        let delay = crate::lock(&self.policy_failures).record(key, failed);
        let mut at = crate::lock(&self.policy_retry_at);
        match delay {
            Some(d) => at.insert(key.clone(), Instant::now() + d),
            None => at.remove(key),
        };
        delay
    }

    /// Policy `key` is gone: its failure count and retry time go with it.
    pub(crate) fn forget_policy(&self, key: &PolicyKey) {
        crate::lock(&self.policy_failures).0.remove(key);
        crate::lock(&self.policy_retry_at).remove(key);
    }

    /// No more keys are taken; queued ones are dropped.
    pub(crate) fn shut_down(&self) {
        self.pods.shut_down();
        self.policies.0.shut_down();
    }

    /// Closed at once (the operator is dropped).
    pub(crate) fn close(&self) {
        self.pods.close();
        self.policies.0.close();
    }
}

/// The policy queue: a key added for a ClusterSidecarPolicy's instance queues the cluster
/// policy (see [`PolicyKey::queued`]), whose run covers all its namespaces.
pub(crate) struct PolicyQueue(WorkQueue<PolicyKey>);

impl PolicyQueue {
    pub(crate) fn add(&self, key: PolicyKey) {
        self.0.add(key.queued());
    }
    pub(crate) fn add_after(&self, key: PolicyKey, delay: Duration) {
        self.0.add_after(key.queued(), delay);
    }
    pub(crate) async fn next(&self) -> Option<PolicyKey> {
        self.0.next().await
    }
    pub(crate) fn done(&self, key: &PolicyKey) {
        self.0.done(key);
    }
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Consecutive failed reconciles per key.
#[derive(Debug)]
pub(crate) struct RetryBackoff<K>(HashMap<K, u32>);

impl<K> Default for RetryBackoff<K> {
    fn default() -> Self {
        RetryBackoff(HashMap::new())
    }
}

impl<K: Clone + Eq + Hash> RetryBackoff<K> {
    /// Records a reconcile's outcome; for a failure, the delay before the retry:
    /// 1 s, 2 s, 4 s … capped at 5 minutes.
    pub(crate) fn record(&mut self, key: &K, failed: bool) -> Option<Duration> {
        if !failed {
            self.0.remove(key);
            return None;
        }
        let n = self.0.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        Some(Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pod_events_do_not_cut_a_failing_policys_backoff_short() {
        let q = Queues::new(Duration::from_millis(500), &Metrics::default());
        let key = PolicyKey::new("shop", "web");
        for _ in 0..3 {
            q.policy_outcome(&key, true); // retries due in 1 s, 2 s, then 4 s
        }
        q.status_soon(key.clone()); // a Pod event
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(q.policies.is_empty(), "not before the retry is due");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(q.policies.next().await, Some(key.clone()));
        q.policies.done(&key);
        q.policy_outcome(&key, false);
        q.status_soon(key.clone());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            q.policies.next().await,
            Some(key),
            "debounced again once it succeeded"
        );
    }

    #[test]
    fn pods_and_policies_of_one_name_back_off_apart() {
        let q = Queues::new(Duration::ZERO, &Metrics::default());
        let pod = PodKey::new("shop", "web");
        let policy = PolicyKey::new("shop", "web");
        let s = Duration::from_secs;
        // (Pod?, failed, expected delay)
        let steps = [
            (false, true, Some(s(1))),
            (false, true, Some(s(2))),
            (true, false, None),
            (true, true, Some(s(1))),
            (false, true, Some(s(4))),
            (false, false, None),
            (false, true, Some(s(1))),
        ];
        for (i, (is_pod, failed, want)) in steps.into_iter().enumerate() {
            let got = if is_pod {
                q.pod_outcome(&pod, failed)
            } else {
                q.policy_outcome(&policy, failed)
            };
            assert_eq!(got, want, "step {i}");
        }
        for _ in 0..20 {
            q.pod_outcome(&pod, true);
        }
        assert_eq!(q.pod_outcome(&pod, true), Some(s(256)));
    }
}
