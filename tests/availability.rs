//! An independent watcher of availability: how many eligible main Pods lack a Ready sidecar,
//! at every resourceVersion.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ResourceExt as _};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use sidecar_api::constants::LABEL_MAIN_UID;
use sidecar_planner::sidecar_name;

use crate::{
    Scene, TIMEOUT, hash_of, is_sidecar, node_of, phase_of, pod_ready, sidecars_of, uid_of,
    wait_until,
};

#[derive(Debug, Default)]
pub struct Availability {
    /// The namespace's Pods as of the last event (once the first list is done).
    pub pods: BTreeMap<String, Pod>,
    pub synced: bool,
    /// Eligible main Pods lacking a Ready sidecar, now.
    pub current: usize,
    /// The most seen at any resourceVersion.
    pub max: usize,
    /// (time since start, value) at every change.
    pub timeline: Vec<(Duration, usize)>,
    /// Pod watch events seen after the first list.
    pub events: usize,
    pub errors: Vec<String>,
    /// The cluster's state the first time the maximum was reached: wall-clock time and, for
    /// each main Pod lacking a Ready sidecar, what its sidecar was (to match with logs).
    pub worst: String,
}

/// Watches the namespace's Pods (its own watch, not the operator's) and, after every event,
/// counts the eligible main Pods selected by `selector` that lack a Ready sidecar of
/// `policy`: missing, not Ready, terminating, or not theirs. Watch events arrive in
/// resourceVersion order, so every count is the count of one real state of the cluster.
pub struct AvailabilityWatch {
    state: Arc<Mutex<Availability>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AvailabilityWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Eligible main Pods of `selector` lacking a Ready sidecar of `policy` in `pods`.
pub fn lacking_ready_sidecar(
    pods: &BTreeMap<String, Pod>,
    policy: &str,
    selector: (&str, &str),
) -> usize {
    let eligible = pods.values().filter(|m| {
        !is_sidecar(m)
            && m.labels().get(selector.0).map(String::as_str) == Some(selector.1)
            && m.metadata.deletion_timestamp.is_none()
            && node_of(m).is_some()
            && !matches!(phase_of(m), Some("Succeeded" | "Failed"))
    });
    eligible
        .filter(|m| {
            let sidecar = pods.get(&sidecar_name(&m.name_any(), policy));
            !sidecar.is_some_and(|s| {
                s.labels().get(LABEL_MAIN_UID) == Some(&uid_of(m))
                    && s.metadata.deletion_timestamp.is_none()
                    && pod_ready(s)
            })
        })
        .count()
}

/// [`lacking_ready_sidecar`]'s Pods, described: the time, then `main -> sidecar state`.
fn describe_lacking(pods: &BTreeMap<String, Pod>, policy: &str, selector: (&str, &str)) -> String {
    let mut out = format!("at {}:", k8s_openapi::jiff::Timestamp::now());
    for m in pods.values().filter(|m| {
        !is_sidecar(m) && m.labels().get(selector.0).map(String::as_str) == Some(selector.1)
    }) {
        let one = BTreeMap::from([(m.name_any(), m.clone())]);
        let name = sidecar_name(&m.name_any(), policy);
        let mut with = one.clone();
        if let Some(sc) = pods.get(&name) {
            with.insert(name.clone(), sc.clone());
        }
        if lacking_ready_sidecar(&with, policy, selector) == 0 {
            continue;
        }
        let state = match pods.get(&name) {
            None => "missing".to_string(),
            Some(sc) => format!(
                "uid={} rv={} deleting={} ready={} hash={:?}",
                uid_of(sc),
                sc.metadata.resource_version.as_deref().unwrap_or(""),
                sc.metadata.deletion_timestamp.is_some(),
                pod_ready(sc),
                sc.labels().get(sidecar_api::constants::LABEL_TEMPLATE_HASH)
            ),
        };
        out.push_str(&format!(" [{} -> {state}]", m.name_any()));
    }
    out
}

impl AvailabilityWatch {
    /// Starts watching, counting main Pods of `selector` that lack a Ready sidecar Pod of
    /// `policy`; returns once the first list is in.
    pub async fn start(
        pods: Api<Pod>,
        policy: &str,
        selector: (&'static str, &'static str),
    ) -> Self {
        let (p1, p2) = (policy.to_string(), policy.to_string());
        Self::start_counting(
            pods,
            move |pods| lacking_ready_sidecar(pods, &p1, selector),
            move |pods| describe_lacking(pods, &p2, selector),
        )
        .await
    }

    /// Starts watching, with `count` of the unavailable in the namespace's Pods after every
    /// event, and `describe` of the state when a new maximum is reached.
    pub async fn start_counting(
        pods: Api<Pod>,
        count: impl Fn(&BTreeMap<String, Pod>) -> usize + Send + 'static,
        describe: impl Fn(&BTreeMap<String, Pod>) -> String + Send + 'static,
    ) -> Self {
        let state = Arc::new(Mutex::new(Availability::default()));
        let sink = state.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut stream = watcher(pods, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut buffer = BTreeMap::new();
            while let Some(ev) = stream.next().await {
                let mut s = sink.lock().expect("availability state");
                match ev {
                    Ok(watcher::Event::Init) => {
                        buffer.clear();
                        continue;
                    }
                    Ok(watcher::Event::InitApply(p)) => {
                        buffer.insert(p.name_any(), p);
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        s.pods = std::mem::take(&mut buffer);
                        s.synced = true;
                    }
                    Ok(watcher::Event::Apply(p)) => {
                        s.pods.insert(p.name_any(), p);
                        s.events += 1;
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        s.pods.remove(&p.name_any());
                        s.events += 1;
                    }
                    Err(e) => {
                        s.errors.push(e.to_string());
                        continue;
                    }
                }
                if !s.synced {
                    continue;
                }
                let n = count(&s.pods);
                if s.timeline.is_empty() || n != s.current {
                    s.timeline.push((started.elapsed(), n));
                }
                s.current = n;
                if n > s.max {
                    s.worst = describe(&s.pods);
                }
                s.max = s.max.max(n);
            }
        });
        let watch = AvailabilityWatch { state, task };
        wait_until(
            TIMEOUT,
            "the availability watcher's first list",
            async || watch.lock().synced.then_some(()),
        )
        .await;
        watch
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Availability> {
        self.state.lock().expect("availability state")
    }

    /// Forgets the maximum and the timeline so far (keeps the current value).
    pub fn reset(&self) {
        let mut s = self.lock();
        s.max = s.current;
        s.timeline.clear();
        s.events = 0;
    }

    /// The timeline as `t=1.2s:0 t=3.4s:2 …`.
    pub fn timeline(&self) -> String {
        self.lock()
            .timeline
            .iter()
            .map(|(t, n)| format!("t={:.1}s:{n}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Scene {
    /// Waits (up to `timeout`) until policy `policy` has exactly `n` sidecars, every one at
    /// template hash `hash`, Ready and not terminating: a finished rollout. Panics naming
    /// `what`, with a dump of the Pods.
    pub async fn wait_rolled_out(
        &self,
        policy: &str,
        hash: &str,
        n: usize,
        timeout: Duration,
        what: &str,
    ) {
        self.wait_pods_within(timeout, what, |pods| {
            let sc = sidecars_of(pods, policy);
            let done = sc.len() == n
                && sc.values().all(|s| {
                    hash_of(s) == Some(hash)
                        && pod_ready(s)
                        && s.metadata.deletion_timestamp.is_none()
                });
            done.then_some(())
        })
        .await;
    }
}

impl AvailabilityWatch {
    /// Prints `[tag] context: max lacking a Ready sidecar …; timeline …` and asserts that
    /// the watch saw no gap and never more than `limit` main Pods lacking a Ready sidecar.
    pub fn assert_at_most(&self, limit: usize, tag: &str, context: &str) {
        let (max, errors) = {
            let s = self.lock();
            (s.max, s.errors.clone())
        };
        eprintln!(
            "[{tag}] {context}: max lacking a Ready sidecar {max}; timeline {}",
            self.timeline()
        );
        assert!(
            errors.is_empty(),
            "the watcher's record has gaps: {errors:?}"
        );
        assert!(
            max <= limit,
            "at most {limit} main Pods lacked a Ready sidecar; saw {max}: {}; worst {}",
            self.timeline(),
            self.lock().worst
        );
    }
}
