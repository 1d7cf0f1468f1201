//! The independent observer: watches (its own client, all namespaces) on main Pods, on
//! sidecars (label `app.kubernetes.io/managed-by=sidecar-operator`) and on policies,
//! recording the *receive time* of every event — not `creationTimestamp`, which the
//! server sets before the object is even stored, and which has one-second resolution.
//!
//! Only objects in the round's namespaces count.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

mod watch;

use watch::{watch_events, watch_mains, watch_policies, watch_sidecars};

/// Label of the benchmark's main Pods.
pub const ROLE_LABEL: &str = "sidecar-bench/role";
/// Value of [`ROLE_LABEL`] on main Pods.
pub const ROLE_MAIN: &str = "main";

/// The Pod's `Ready` condition is `True`.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A sidecar that exists now.
#[derive(Debug, Clone)]
pub struct LiveSidecar {
    /// uid.
    pub uid: String,
    /// `sidecars.dev/template-hash`.
    pub hash: String,
    /// When its first event arrived.
    pub seen: Instant,
}

/// A policy's status as last seen.
#[derive(Debug, Clone, Default)]
pub struct PolicySeen {
    /// `Ready=True`, `observedGeneration == generation`.
    pub ready: bool,
    /// `status.matchedPods`.
    pub matched: i64,
}

#[derive(Debug, Default)]
struct State {
    namespaces: HashSet<String>,
    synced: [bool; 4],
    error: Option<String>,
    /// Main Pod uid → receive time of its first event.
    mains: HashMap<String, Instant>,
    /// Main Pod uid → receive time of the first event showing it bound to a Node.
    mains_bound: HashMap<String, Instant>,
    /// Receive times of the policies' changes (status writes, once listed).
    policy_writes: Vec<Instant>,
    /// Receive times of Event (core/v1) writes in scope, once listed ([`Watches::events`]).
    event_writes: Vec<Instant>,
    /// Main Pod uid → receive time of the first event of any of its sidecars.
    first_sidecar: HashMap<String, Instant>,
    /// Every sidecar uid ever seen.
    sidecar_uids: HashSet<String>,
    /// Sidecars that exist now, by (namespace, name).
    live: HashMap<(String, String), LiveSidecar>,
    /// Sidecar uid → receive time of the first event showing it bound to a Node.
    bound: HashMap<String, Instant>,
    /// Sidecar uid → receive time of the first event showing it Ready.
    ready: HashMap<String, Instant>,
    /// Policies by (namespace, name).
    policies: HashMap<(String, String), PolicySeen>,
    /// When the policy map last changed in a way that matters.
    policies_changed: Option<Instant>,
}

/// What the observer watches besides main Pods and sidecars.
#[derive(Debug, Clone, Default)]
pub struct Watches {
    /// The label selector of the sidecars (default: the operator's,
    /// `app.kubernetes.io/managed-by=sidecar-operator`); each one names its main Pod in
    /// the label `sidecars.dev/main-uid`.
    pub sidecars: Option<String>,
    /// The SidecarPolicies (status: Ready, matchedPods; when each change arrived).
    pub policies: bool,
    /// The operator's Events (core/v1): when each write of one arrived.
    pub events: bool,
}

/// The observer; dropping it stops the watches.
#[derive(Debug)]
pub struct Observer {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Observer {
    /// Starts the watches (policies only if `policies`) and returns once they have
    /// listed.
    pub async fn start(
        client: &Client,
        namespaces: &[String],
        policies: bool,
        timeout: Duration,
    ) -> anyhow::Result<Observer> {
        let watches = Watches {
            policies,
            ..Watches::default()
        };
        Self::start_with(client, namespaces, watches, timeout).await
    }

    /// [`Observer::start`] with more watches.
    pub async fn start_with(
        client: &Client,
        namespaces: &[String],
        watches: Watches,
        timeout: Duration,
    ) -> anyhow::Result<Observer> {
        let Watches {
            sidecars,
            policies,
            events,
        } = watches;
        let state = Arc::new(Mutex::new(State {
            namespaces: namespaces.iter().cloned().collect(),
            synced: [false, false, !policies, !events],
            ..State::default()
        }));
        let pods: Api<Pod> = Api::all(client.clone());
        let mut tasks = vec![
            tokio::spawn(watch_mains(state.clone(), pods.clone())),
            tokio::spawn(watch_sidecars(state.clone(), pods, sidecars)),
        ];
        if policies {
            tasks.push(tokio::spawn(watch_policies(
                state.clone(),
                Api::all(client.clone()),
            )));
        }
        if events {
            tasks.push(tokio::spawn(watch_events(
                state.clone(),
                Api::all(client.clone()),
            )));
        }
        let me = Observer { state, tasks };
        me.wait(timeout, "the observer's watches to list", |s| {
            s.synced.iter().all(|b| *b).then_some(())
        })
        .await?;
        Ok(me)
    }

    /// Polls `probe` on the state every 10 ms until it yields `Some`.
    async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&State) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            {
                let s = lock(&self.state);
                if let Some(e) = &s.error {
                    bail!("the observer's watch failed: {e}");
                }
                if let Some(v) = probe(&s) {
                    return Ok(v);
                }
            }
            if Instant::now() > deadline {
                let s = lock(&self.state);
                bail!(
                    "timed out after {}s waiting for {what} (seen: {} main Pods, {} sidecars live, {} mains with a sidecar)",
                    timeout.as_secs(),
                    s.mains.len(),
                    s.live.len(),
                    s.first_sidecar.len()
                );
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                let s = lock(&self.state);
                crate::say(&format!(
                    "  … still waiting for {what}: {} main Pods, {} sidecars live, {} mains with a sidecar",
                    s.mains.len(),
                    s.live.len(),
                    s.first_sidecar.len()
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Seconds after `t0` at which each main Pod's first sidecar was seen, sorted: the
    /// curve "sidecars existing over time".
    pub fn sidecar_times(&self, t0: Instant) -> Vec<f64> {
        let s = lock(&self.state);
        let mut out: Vec<f64> = s
            .first_sidecar
            .values()
            .map(|t| t.saturating_duration_since(t0).as_secs_f64())
            .collect();
        out.sort_by(f64::total_cmp);
        out
    }

    /// Waits until `n` main Pods each have had a sidecar; returns the receive time of
    /// the last of those first sidecar events.
    pub async fn wait_first_sidecars(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        self.wait(timeout, &format!("{n} sidecars"), |s| {
            (s.first_sidecar.len() >= n).then(|| s.first_sidecar.values().copied().max())?
        })
        .await
    }

    /// Waits until exactly `n` sidecars exist and `ok` holds for each; returns the
    /// receive time of the last of their first events.
    pub async fn wait_live(
        &self,
        n: usize,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&LiveSidecar) -> bool,
    ) -> anyhow::Result<Instant> {
        self.wait(timeout, what, |s| {
            if s.live.len() != n || !s.live.values().all(&ok) {
                return None;
            }
            Some(
                s.live
                    .values()
                    .map(|l| l.seen)
                    .max()
                    .unwrap_or_else(Instant::now),
            )
        })
        .await
    }

    /// Waits until every policy of the round (one per namespace) says `Ready=True` for
    /// its generation with `matchedPods == want[namespace]`; returns when the last
    /// status change that mattered arrived.
    pub async fn wait_policies_ready(
        &self,
        want: &HashMap<String, i64>,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        self.wait(timeout, "every policy Ready=True", |s| {
            let all = want.iter().all(|(ns, n)| {
                s.policies
                    .iter()
                    .any(|((pns, _), p)| pns == ns && p.ready && p.matched == *n)
            });
            if all { s.policies_changed } else { None }
        })
        .await
    }

    /// Number of live sidecars.
    pub fn live_count(&self) -> usize {
        lock(&self.state).live.len()
    }

    /// When the last live sidecar was first seen bound to a Node, and Ready (`None`
    /// while some live sidecar is not).
    pub fn live_bound_ready(&self) -> (Option<Instant>, Option<Instant>) {
        let s = lock(&self.state);
        let last = |m: &HashMap<String, Instant>| -> Option<Instant> {
            s.live
                .values()
                .map(|l| m.get(&l.uid).copied())
                .collect::<Option<Vec<_>>>()?
                .into_iter()
                .max()
        };
        (last(&s.bound), last(&s.ready))
    }

    /// The template hashes of the live sidecars.
    pub fn live_hashes(&self) -> HashSet<String> {
        lock(&self.state)
            .live
            .values()
            .map(|l| l.hash.clone())
            .collect()
    }

    /// Distinct sidecar uids seen so far.
    pub fn sidecars_seen(&self) -> usize {
        lock(&self.state).sidecar_uids.len()
    }

    /// Number of main Pods seen.
    pub fn mains_seen(&self) -> usize {
        lock(&self.state).mains.len()
    }

    /// Pod → first sidecar latencies (ms), one per main Pod that has both; negative
    /// values (sidecar event received before its main Pod's) are kept as they are.
    pub fn latencies_ms(&self) -> Vec<f64> {
        self.windows(false)
            .into_iter()
            .map(|(main, sc)| signed_ms(main, sc))
            .collect()
    }

    /// One (start, first sidecar) pair of receive times per main Pod that has both: the
    /// start is the main Pod's first event, or with `from_bound` its first event showing
    /// it bound to a Node (what a `SameNode` sidecar waits for).
    pub fn windows(&self, from_bound: bool) -> Vec<(Instant, Instant)> {
        let s = lock(&self.state);
        let starts = if from_bound { &s.mains_bound } else { &s.mains };
        s.first_sidecar
            .iter()
            .filter_map(|(uid, sc)| Some((*starts.get(uid)?, *sc)))
            .collect()
    }

    /// Receive times of the policies' changes and of new Events since the watches listed.
    pub fn writes_seen(&self) -> (Vec<Instant>, Vec<Instant>) {
        let s = lock(&self.state);
        (s.policy_writes.clone(), s.event_writes.clone())
    }
}

/// `later − earlier` in milliseconds, negative when `later` is earlier.
pub fn signed_ms(earlier: Instant, later: Instant) -> f64 {
    if later >= earlier {
        later.duration_since(earlier).as_secs_f64() * 1000.0
    } else {
        -(earlier.duration_since(later).as_secs_f64() * 1000.0)
    }
}
