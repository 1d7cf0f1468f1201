//! The observer's three watches (main Pods, sidecars, policies), each writing the receive
//! time of what it sees into the shared [`State`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt as _};
use sidecar_api::SidecarPolicy;
use sidecar_api::constants::{
    LABEL_MAIN_UID, LABEL_MANAGED_BY, LABEL_TEMPLATE_HASH, MANAGED_BY_VALUE,
};

use super::{LiveSidecar, PolicySeen, ROLE_LABEL, ROLE_MAIN, State, lock};

fn in_scope(s: &State, obj_ns: Option<&str>) -> bool {
    obj_ns.is_some_and(|ns| s.namespaces.contains(ns))
}

fn fail(state: &Mutex<State>, e: String) {
    lock(state).error.get_or_insert(e);
}

/// kube's watcher with the observer's settings: the initial list comes from the watch
/// cache; errors are retried with backoff (a few are tolerated; a persistent one fails).
fn stream<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use kube::runtime::WatchStreamExt as _;
    kube::runtime::watcher(api, cfg.any_semantic()).default_backoff()
}

const MAX_WATCH_ERRORS: u32 = 20;

pub(super) async fn watch_mains(state: Arc<Mutex<State>>, api: Api<Pod>) {
    let cfg = watcher::Config::default().labels(&format!("{ROLE_LABEL}={ROLE_MAIN}"));
    let mut st = stream(api, cfg).boxed();
    let mut errors = 0;
    while let Some(ev) = st.next().await {
        let now = Instant::now();
        match ev {
            Ok(Event::Apply(p) | Event::InitApply(p)) => {
                let mut s = lock(&state);
                if in_scope(&s, p.metadata.namespace.as_deref())
                    && let Some(uid) = p.metadata.uid.clone()
                {
                    if p.spec.as_ref().is_some_and(|sp| sp.node_name.is_some()) {
                        s.mains_bound.entry(uid.clone()).or_insert(now);
                    }
                    s.mains.entry(uid).or_insert(now);
                }
            }
            Ok(Event::InitDone) => lock(&state).synced[0] = true,
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                if errors > MAX_WATCH_ERRORS {
                    return fail(&state, format!("main Pods: {e}"));
                }
            }
        }
    }
}

pub(super) async fn watch_sidecars(
    state: Arc<Mutex<State>>,
    api: Api<Pod>,
    selector: Option<String>,
) {
    let selector = selector.unwrap_or_else(|| format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"));
    let cfg = watcher::Config::default().labels(&selector);
    let mut st = stream(api, cfg).boxed();
    let mut errors = 0;
    let mut relisted: HashSet<(String, String)> = HashSet::new();
    while let Some(ev) = st.next().await {
        let now = Instant::now();
        match ev {
            Ok(Event::Init) => relisted.clear(),
            Ok(Event::Apply(p)) => sidecar_seen(&state, &p, now),
            Ok(Event::InitApply(p)) => {
                relisted.insert((p.namespace().unwrap_or_default(), p.name_any()));
                sidecar_seen(&state, &p, now);
            }
            Ok(Event::InitDone) => {
                let mut s = lock(&state);
                s.live.retain(|k, _| relisted.contains(k));
                s.synced[1] = true;
            }
            Ok(Event::Delete(p)) => {
                let mut s = lock(&state);
                let key = (p.namespace().unwrap_or_default(), p.name_any());
                if s.live.get(&key).map(|l| &l.uid) == p.metadata.uid.as_ref() {
                    s.live.remove(&key);
                }
            }
            Err(e) => {
                errors += 1;
                if errors > MAX_WATCH_ERRORS {
                    return fail(&state, format!("sidecars: {e}"));
                }
            }
        }
    }
}

fn sidecar_seen(state: &Mutex<State>, p: &Pod, now: Instant) {
    let mut s = lock(state);
    if !in_scope(&s, p.metadata.namespace.as_deref()) {
        return;
    }
    let Some(uid) = p.metadata.uid.clone() else {
        return;
    };
    let labels = p.labels();
    let hash = labels.get(LABEL_TEMPLATE_HASH).cloned().unwrap_or_default();
    if let Some(main) = labels.get(LABEL_MAIN_UID) {
        s.first_sidecar.entry(main.clone()).or_insert(now);
    }
    if p.spec.as_ref().is_some_and(|sp| sp.node_name.is_some()) {
        s.bound.entry(uid.clone()).or_insert(now);
    }
    if super::pod_ready(p) {
        s.ready.entry(uid.clone()).or_insert(now);
    }
    let key = (p.namespace().unwrap_or_default(), p.name_any());
    if s.sidecar_uids.insert(uid.clone()) || s.live.get(&key).is_none_or(|l| l.uid != uid) {
        s.live.insert(
            key,
            LiveSidecar {
                uid,
                hash,
                seen: now,
            },
        );
    }
}

pub(super) async fn watch_policies(state: Arc<Mutex<State>>, api: Api<SidecarPolicy>) {
    let mut st = stream(api, watcher::Config::default()).boxed();
    let mut errors = 0;
    while let Some(ev) = st.next().await {
        let now = Instant::now();
        // A change (a status write, mostly), not a relist.
        let write = matches!(ev, Ok(Event::Apply(_)));
        match ev {
            Ok(Event::Apply(p) | Event::InitApply(p)) => {
                let mut s = lock(&state);
                if !in_scope(&s, p.metadata.namespace.as_deref()) {
                    continue;
                }
                if write {
                    s.policy_writes.push(now);
                }
                let generation = p.metadata.generation;
                let seen = match &p.status {
                    Some(st) => PolicySeen {
                        ready: st.observed_generation == generation
                            && st
                                .conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True"),
                        matched: i64::from(st.matched_pods),
                    },
                    None => PolicySeen::default(),
                };
                let key = (p.namespace().unwrap_or_default(), p.name_any());
                let changed = s
                    .policies
                    .get(&key)
                    .is_none_or(|old| old.ready != seen.ready || old.matched != seen.matched);
                if changed {
                    s.policies.insert(key, seen);
                    s.policies_changed = Some(now);
                }
            }
            Ok(Event::Delete(p)) => {
                let mut s = lock(&state);
                s.policies
                    .remove(&(p.namespace().unwrap_or_default(), p.name_any()));
            }
            Ok(Event::InitDone) => lock(&state).synced[2] = true,
            Ok(Event::Init) => {}
            Err(e) => {
                errors += 1;
                if errors > MAX_WATCH_ERRORS {
                    return fail(&state, format!("policies: {e}"));
                }
            }
        }
    }
}

pub(super) async fn watch_events(
    state: Arc<Mutex<State>>,
    api: Api<k8s_openapi::api::core::v1::Event>,
) {
    let mut st = stream(api, watcher::Config::default()).boxed();
    let mut errors = 0;
    while let Some(ev) = st.next().await {
        let now = Instant::now();
        match ev {
            // A new Event or a write to one (a repeat's series count); not a relist. Only
            // the operator's: the scheduler writes one per binding too.
            Ok(Event::Apply(e)) => {
                let mut s = lock(&state);
                let ours = [
                    e.reporting_component.as_deref(),
                    e.source.as_ref().and_then(|s| s.component.as_deref()),
                ]
                .contains(&Some(sidecar_controller::REPORTING_CONTROLLER));
                if ours && s.synced[3] && in_scope(&s, e.metadata.namespace.as_deref()) {
                    s.event_writes.push(now);
                }
            }
            Ok(Event::InitDone) => lock(&state).synced[3] = true,
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                if errors > MAX_WATCH_ERRORS {
                    return fail(&state, format!("events: {e}"));
                }
            }
        }
    }
}
