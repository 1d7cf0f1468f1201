//! The state one operator instance's watchers and workers share, in parts with one job
//! each: the caches (and the namespace scope), the work queues, per-policy state, what
//! the operator waits to see, Events, metrics and readiness.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::EventType;
use sidecar_planner::{LabelMatcher, Labels};

use crate::cache::{PodCache, PolicyCache};
use crate::events::Events;
use crate::expectations::{Expectations, Waiters};
use crate::health::Readiness;
use crate::keys::{PodKey, PolicyKey};
use crate::problems::PolicyState;
use crate::queues::Queues;
use crate::{Metrics, lock, read, write};

/// The watch-fed caches, and which namespaces this instance manages.
pub(crate) struct Caches {
    pods: RwLock<PodCache>,
    policies: RwLock<PolicyCache>,
    /// Namespaces in scope when a namespace selector is set (`None`: all): the ones
    /// reconciles act on. A namespace enters once both caches hold it, and leaves before
    /// they forget it.
    pub(crate) scope: Option<RwLock<HashSet<String>>>,
    /// Set to 1 once the initial scope is known; the Pod and policy watches start then.
    pub(crate) scope_generation: tokio::sync::watch::Sender<u64>,
}

impl Caches {
    /// Empty caches; `scoped`: a namespace selector decides the scope; `clusters`: the
    /// ClusterSidecarPolicies are watched (and unknown until listed).
    pub(crate) fn new(scoped: bool, clusters: bool) -> Self {
        Caches {
            pods: RwLock::default(),
            policies: RwLock::new(PolicyCache::new(clusters)),
            scope: scoped.then(RwLock::default),
            scope_generation: tokio::sync::watch::Sender::new(0),
        }
    }
    pub(crate) fn pods(&self) -> RwLockReadGuard<'_, PodCache> {
        read(&self.pods)
    }
    pub(crate) fn pods_mut(&self) -> RwLockWriteGuard<'_, PodCache> {
        write(&self.pods)
    }
    pub(crate) fn policies(&self) -> RwLockReadGuard<'_, PolicyCache> {
        read(&self.policies)
    }
    pub(crate) fn policies_mut(&self) -> RwLockWriteGuard<'_, PolicyCache> {
        write(&self.policies)
    }

    /// The namespace is managed by this instance. Reconciles check it after observing
    /// and before writing: a namespace on its way out (or not yet fully in) is left to
    /// the instance that manages it.
    pub(crate) fn in_scope(&self, ns: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| read(s).contains(ns))
    }
}

/// See the module doc.
pub(crate) struct Context {
    pub(crate) client: Client,
    /// [`Context::client`] without the client's retry of 429s, for evictions.
    pub(crate) evictions: Client,
    pub(crate) caches: Caches,
    pub(crate) queues: Queues,
    pub(crate) policy_state: PolicyState,
    expectations: Mutex<Expectations>,
    waiters: Mutex<Waiters>,
    pub(crate) events: Events,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) readiness: Readiness,
    /// Fault injection (see [`crate::OperatorConfig::pod_watch_lag`]).
    pub(crate) pod_watch_lag: Option<Duration>,
    /// See [`crate::OperatorConfig::unserved_namespaces`].
    pub(crate) unserved_namespaces: HashSet<String>,
    /// Where Container mode's repair may evict, and how long a replacement may take.
    pub(crate) repair: RepairSettings,
    /// Namespace → labels, kept by the namespace watch of cluster policies (empty without
    /// it).
    pub(crate) namespace_labels: RwLock<HashMap<String, Labels>>,
}

/// Container mode's repair settings (see [`crate::OperatorConfig::webhook`] and
/// [`crate::OperatorConfig::replacement_deadline`]).
#[derive(Debug, Clone)]
pub(crate) struct RepairSettings {
    /// The namespaces the webhook serves (a matcher with no requirement: all of them);
    /// `None`: no webhook runs, or its selector does not parse (then nothing is evicted).
    pub(crate) webhook: Option<LabelMatcher>,
    pub(crate) replacement_deadline: Duration,
}

impl RepairSettings {
    /// Whether the webhook injects in namespace `ns`, whose labels are `labels` when
    /// watched. Not watched (an instance of one namespace), the one label every namespace
    /// has, its name, is known all the same; for any other requirement it counts as not
    /// served.
    pub(crate) fn serves(&self, ns: &str, labels: Option<&Labels>) -> bool {
        self.webhook.as_ref().is_some_and(|m| match labels {
            Some(l) => m.matches(l),
            None => m.matches(&Labels::from_iter([("kubernetes.io/metadata.name", ns)])),
        })
    }

    pub(crate) fn new(webhook: &crate::WebhookReach, replacement_deadline: Duration) -> Self {
        let webhook = match webhook {
            crate::WebhookReach::Off => None,
            crate::WebhookReach::Namespaces(reqs) => {
                let selector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_expressions: Some(reqs.clone()),
                    match_labels: None,
                };
                kube::core::Selector::try_from(selector)
                    .ok()
                    .map(LabelMatcher::from)
            }
        };
        RepairSettings {
            webhook,
            replacement_deadline,
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("ready", &self.readiness.is_ready())
            .field("pods", &self.caches.pods().len())
            .finish_non_exhaustive()
    }
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Client,
        evictions: Client,
        caches: Caches,
        queues: Queues,
        events: Events,
        metrics: Arc<Metrics>,
        readiness: Readiness,
        pod_watch_lag: Option<Duration>,
        unserved_namespaces: HashSet<String>,
        repair: RepairSettings,
    ) -> Self {
        Context {
            client,
            evictions,
            caches,
            queues,
            policy_state: PolicyState::default(),
            expectations: Mutex::default(),
            waiters: Mutex::default(),
            events,
            metrics,
            readiness,
            pod_watch_lag,
            unserved_namespaces,
            repair,
            namespace_labels: RwLock::default(),
        }
    }

    /// Whether the webhook would inject a replacement in namespace `ns`: Container mode's
    /// repair evicts only there.
    pub(crate) fn webhook_serves(&self, ns: &str) -> bool {
        if self.unserved_namespaces.contains(ns) {
            return false;
        }
        let labels = self
            .namespace_labels
            .read()
            .unwrap_or_else(|e| e.into_inner());
        self.repair.serves(ns, labels.get(ns))
    }

    pub(crate) fn expectations(&self) -> MutexGuard<'_, Expectations> {
        lock(&self.expectations)
    }

    pub(crate) fn waiters(&self) -> MutexGuard<'_, Waiters> {
        lock(&self.waiters)
    }

    /// The Pod `key` is gone: reconcile the main Pod that waited for its name.
    pub(crate) fn name_freed(&self, key: &PodKey) {
        let main = self.waiters().freed(key);
        if let Some(main) = main {
            self.queues.pods.add(main);
        }
    }

    /// Records (or clears) a refusal of policy `key`'s creates; true when it is new or
    /// its message changed (its status is then computed again).
    pub(crate) fn set_refused(&self, key: &PolicyKey, message: Option<String>) -> bool {
        let changed = self.policy_state.set_refused(key, message);
        if changed {
            self.queues.policies.add(key.clone());
        }
        changed
    }

    /// Records how many eligible pairs of policy `key` lack an up-to-date Ready sidecar.
    pub(crate) fn set_not_converged(&self, key: &PolicyKey, n: i64) {
        self.policy_state
            .set_not_converged(key, n, &self.metrics.pairs_not_converged);
    }

    /// Policy `key` is gone (or out of scope).
    pub(crate) fn forget_policy(&self, key: &PolicyKey) {
        self.policy_state.forget(key);
        self.queues.forget_policy(key);
        self.set_not_converged(key, 0);
        self.metrics.set_drift(&key.0, &key.1, None);
    }

    /// A Warning Event on policy `key`.
    pub(crate) fn warn_policy(&self, key: &PolicyKey, reason: &str, action: &str, note: &str) {
        let policies = self.caches.policies();
        self.events
            .on_policy(&policies, key, EventType::Warning, reason, action, note);
    }

    /// A Normal Event on policy `key`.
    pub(crate) fn notice_policy(&self, key: &PolicyKey, reason: &str, action: &str, note: &str) {
        let policies = self.caches.policies();
        self.events
            .on_policy(&policies, key, EventType::Normal, reason, action, note);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;
    use crate::WebhookReach;

    #[test]
    fn the_repair_evicts_only_where_the_webhook_injects() {
        let req = |key: &str, value: &str| LabelSelectorRequirement {
            key: key.into(),
            operator: "In".into(),
            values: Some(vec![value.into()]),
        };
        let by_name = WebhookReach::Namespaces(vec![req("kubernetes.io/metadata.name", "shop")]);
        let by_team = WebhookReach::Namespaces(vec![req("team", "a")]);
        let team_a = Labels::from_iter([("team", "a")]);
        let deadline = Duration::from_secs(1);
        // (case, reach, namespace, its labels if watched, served)
        let cases = [
            ("no webhook", WebhookReach::Off, "shop", None, false),
            (
                "every namespace",
                WebhookReach::default(),
                "shop",
                None,
                true,
            ),
            ("by name, not watched", by_name.clone(), "shop", None, true),
            ("by name, another", by_name, "other", None, false),
            (
                "by label, watched",
                by_team.clone(),
                "x",
                Some(&team_a),
                true,
            ),
            ("by label, not watched", by_team, "x", None, false),
        ];
        for (case, reach, ns, labels, want) in cases {
            let settings = RepairSettings::new(&reach, deadline);
            assert_eq!(settings.serves(ns, labels), want, "{case}");
        }
    }
}
