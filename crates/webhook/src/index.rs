//! The webhook's own view of the Container-mode policies: a watch of SidecarPolicies kept
//! as ready-to-use [`PolicyView`]s per namespace, so that an admission reads memory only,
//! never the API server. Every replica keeps one, leader or not (the controllers, and
//! their caches, run only on the leader).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource as _, ResourceExt as _};
use sidecar_api::{Mode, SidecarPolicy};
use sidecar_controller::{Lenient, watch_backoff};
use sidecar_planner::PolicyView;
use tokio::sync::watch;

type Namespaces = HashMap<String, BTreeMap<String, Arc<PolicyView>>>;

/// The Container-mode policies by namespace and name.
#[derive(Debug)]
pub struct PolicyIndex {
    policies: RwLock<Namespaces>,
    synced: watch::Sender<bool>,
}

impl Default for PolicyIndex {
    fn default() -> Self {
        PolicyIndex {
            policies: RwLock::new(HashMap::new()),
            synced: watch::Sender::new(false),
        }
    }
}

impl PolicyIndex {
    /// The Container-mode policies of `namespace`, in name order.
    pub fn namespace(&self, namespace: &str) -> Vec<Arc<PolicyView>> {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        policies
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many Container-mode policies are known.
    pub fn len(&self) -> usize {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        policies.values().map(BTreeMap::len).sum()
    }

    /// Whether no Container-mode policy is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first full list has been applied (before that, an admission would miss
    /// policies that exist).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once the first full list has been applied.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Keeps `view` if it is a Container-mode policy, forgets it otherwise (a policy whose
    /// mode changed to `Pod`).
    pub fn apply(&self, view: PolicyView) {
        let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
        let (ns, name) = (view.namespace.clone(), view.name.clone());
        if view.mode() == Mode::Container {
            policies.entry(ns).or_default().insert(name, Arc::new(view));
        } else {
            remove(&mut policies, &ns, &name);
        }
    }

    /// Forgets policy `namespace/name`.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
        remove(&mut policies, namespace, name);
    }

    /// Replaces everything with `views` (the result of a full list) and marks the index
    /// synced.
    pub fn replace_all(&self, views: Vec<PolicyView>) {
        let mut fresh = Namespaces::new();
        for v in views.into_iter().filter(|v| v.mode() == Mode::Container) {
            fresh
                .entry(v.namespace.clone())
                .or_default()
                .insert(v.name.clone(), Arc::new(v));
        }
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.synced.send_replace(true);
    }

    /// The view kept for `namespace/name`, if any (to carry status-independent state over
    /// an update).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PolicyView>> {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        policies.get(namespace)?.get(name).cloned()
    }

    /// The view of a listed or watched policy. One that does not decode is kept as a view
    /// that selects nothing (the leader reports it on the policy), never failing the watch.
    fn view(&self, p: Lenient<SidecarPolicy>) -> PolicyView {
        match p {
            Lenient::Ok(p) => {
                let prev = self.get(&p.namespace().unwrap_or_default(), &p.name_any());
                match prev {
                    Some(prev) => PolicyView::update(Arc::new(p), &prev),
                    None => PolicyView::new(Arc::new(p)),
                }
            }
            Lenient::Err(u) => PolicyView::undecodable(u.metadata, None, &u.error),
        }
    }
}

fn remove(policies: &mut Namespaces, namespace: &str, name: &str) {
    if let Some(m) = policies.get_mut(namespace) {
        m.remove(name);
        if m.is_empty() {
            policies.remove(namespace);
        }
    }
}

/// Keeps `index` in sync with the policies `api` sees; runs until aborted. A failing watch
/// is retried with the controllers' backoff; the index keeps its last state meanwhile.
pub async fn watch_policies(api: Api<Lenient<SidecarPolicy>>, index: Arc<PolicyIndex>) {
    let stream = watcher(api).backoff(watch_backoff());
    let mut stream = std::pin::pin!(stream);
    let mut buffer = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(p)) => buffer.push(index.view(p)),
            Ok(Event::InitDone) => index.replace_all(std::mem::take(&mut buffer)),
            Ok(Event::Apply(p)) => index.apply(index.view(p)),
            Ok(Event::Delete(p)) => {
                let meta = p.meta();
                let ns = meta.namespace.clone().unwrap_or_default();
                index.delete(&ns, meta.name.as_deref().unwrap_or_default());
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook policy watch error; retrying with backoff")
            }
        }
    }
}

fn watcher(
    api: Api<Lenient<SidecarPolicy>>,
) -> impl futures::Stream<Item = Result<Event<Lenient<SidecarPolicy>>, watcher::Error>> {
    kube::runtime::watcher(api, watcher::Config::default())
}
