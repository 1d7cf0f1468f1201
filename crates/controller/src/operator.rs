//! A running operator instance: [`Operator`] starts the watches, waits for the caches
//! to sync, then runs the pod and policy workers; [`Health`] answers readiness.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::events::Reporter;
use sidecar_api::SidecarPolicy;
use tokio::task::JoinHandle;

use crate::context::{Caches, Context};
use crate::decode::Lenient;
use crate::events::Events;
use crate::health::{self, Readiness};
use crate::queues::Queues;
use crate::{
    ApiCalls, Counter, Error, Metrics, OperatorConfig, counter, metrics, pod_controller,
    policy_controller, watch,
};

/// Readiness handle: ready while the caches are synced and both watches are
/// connected; not ready while the API server is unreachable.
#[derive(Clone, Debug)]
pub struct Health(Arc<Context>);

impl Health {
    /// See [`Health`].
    pub fn is_ready(&self) -> bool {
        self.0.readiness.is_ready()
    }
}

/// A running operator instance.
#[derive(Debug)]
pub struct Operator {
    ctx: Arc<Context>,
    counter: Arc<Counter>,
    watchers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Operator {
    /// Starts watching and returns once the caches have synced; workers run from then on.
    pub async fn start(config: kube::Config, opts: OperatorConfig) -> Result<Operator, Error> {
        let metrics = opts.metrics.clone().unwrap_or_default();
        let counter = Arc::new(Counter::new(metrics.api_requests.clone()));
        let watches = Arc::new(health::WatchHealth::default());
        // Every request is counted and passes the write gate.
        let counted = |config: kube::Config| {
            kube::client::ClientBuilder::try_from(config)
                .map_err(Error::Client)
                .map(|b| {
                    b.with_layer(&counter::counting_layer(
                        counter.clone(),
                        opts.write_gate.clone(),
                    ))
                })
        };
        // Evictions see a PodDisruptionBudget's 429 at once (the repair backs off and says
        // so in status) instead of the client retrying it for minutes.
        let mut no_retry = config.clone();
        no_retry.default_retry = false;
        let evictions = counted(no_retry)?.build();
        let client = counted(config)?
            .with_layer(&health::WatchHealthLayer(watches.clone()))
            .build();
        let reporter = Reporter {
            controller: crate::events::REPORTING_CONTROLLER.into(),
            instance: opts.instance.clone(),
        };
        let (events, publisher) = Events::start(client.clone(), reporter, 4096, opts.pod_events);
        // Cluster policies need cluster-wide reads; an instance of one namespace has none.
        let clusters = opts.cluster_policies && opts.namespace.is_none();
        let ctx = Arc::new(Context::new(
            client.clone(),
            evictions,
            Caches::new(opts.namespace_selector.is_some(), clusters),
            Queues::new(opts.status_debounce, &metrics),
            events,
            metrics,
            Readiness::new(watches, clusters),
            opts.pod_watch_lag,
            opts.unserved_namespaces.iter().cloned().collect(),
            crate::context::RepairSettings::new(&opts.webhook, opts.replacement_deadline),
        ));
        let (pods, policies): (Api<Lenient<Pod>>, Api<Lenient<SidecarPolicy>>) =
            match &opts.namespace {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client, ns),
                ),
                None => (Api::all(client.clone()), Api::all(client)),
            };
        let mut watchers = vec![publisher];
        let (mut pod_changes, mut policy_changes) = (None, None);
        match &opts.namespace_selector {
            Some(sel) => {
                let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
                let (pods_tx, pods_rx) = tokio::sync::mpsc::unbounded_channel();
                let (policies_tx, policies_rx) = tokio::sync::mpsc::unbounded_channel();
                (pod_changes, policy_changes) = (Some(pods_rx), Some(policies_rx));
                watchers.push(tokio::spawn(watch::watch_namespaces(
                    ctx.clone(),
                    api,
                    sel.clone(),
                    opts.namespace.clone(),
                    watch::ScopeControl {
                        pods: pods_tx,
                        policies: policies_tx,
                    },
                )));
            }
            None => {
                ctx.caches.scope_generation.send_replace(1);
            }
        }
        let mut op = Operator {
            ctx: ctx.clone(),
            counter,
            watchers: vec![
                tokio::spawn(watch::watch_pods(ctx.clone(), pods, pod_changes)),
                tokio::spawn(watch::watch_policies(ctx.clone(), policies, policy_changes)),
            ],
            workers: Vec::new(),
        };
        if clusters {
            op.watchers.push(tokio::spawn(watch::watch_clusters(
                ctx.clone(),
                Api::all(ctx.client.clone()),
                Api::all(ctx.client.clone()),
            )));
        }
        op.watchers.extend(watchers);
        let wait = ctx.readiness.wait_synced();
        if tokio::time::timeout(opts.sync_timeout, wait).await.is_err() {
            return Err(Error::SyncTimeout(opts.sync_timeout.as_secs()));
        }
        for _ in 0..opts.concurrency.max(1) {
            op.workers.push(tokio::spawn(pod_worker(ctx.clone())));
        }
        op.workers.push(tokio::spawn(status_worker(ctx.clone())));
        op.workers.push(tokio::spawn(status_worker(ctx)));
        Ok(op)
    }

    /// Requests sent so far by this instance's client, by verb.
    pub fn api_calls(&self) -> ApiCalls {
        self.counter.snapshot()
    }

    /// The controllers' metrics (register them with [`Metrics::register`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// Readiness: caches synced and watches connected (see [`Health`]).
    pub fn is_ready(&self) -> bool {
        self.ctx.readiness.is_ready()
    }

    /// A handle that answers readiness after the operator is moved or stopped.
    pub fn health(&self) -> Health {
        Health(self.ctx.clone())
    }

    /// Number of cached Pods.
    pub fn cached_pods(&self) -> usize {
        self.ctx.caches.pods().len()
    }

    /// Graceful stop: in-flight reconciles finish, queued keys are dropped (the caches
    /// stop with the watches, so they would be reconciled against a frozen picture; the
    /// next instance lists and reconciles everything anyway), watches end.
    pub async fn stop(mut self) {
        self.ctx.queues.shut_down();
        for w in std::mem::take(&mut self.watchers) {
            w.abort();
        }
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
    }

    /// Stop at once (leadership lost): every task, in-flight reconciles included, is
    /// cancelled where it stands and no queued key is taken; returns once all of them have
    /// ended. Writes a cancelled reconcile had not sent yet are never sent; one already on
    /// the wire may still land (the write gate closed before this is called, so none
    /// started after the deadline).
    pub async fn abort(mut self) {
        self.ctx.queues.shut_down();
        let tasks: Vec<_> = std::mem::take(&mut self.watchers)
            .into_iter()
            .chain(std::mem::take(&mut self.workers))
            .collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Operator {
    /// Abrupt stop (like a crash): every task is aborted where it stands.
    fn drop(&mut self) {
        self.ctx.queues.close();
        for t in self.watchers.iter().chain(self.workers.iter()) {
            t.abort();
        }
    }
}

async fn pod_worker(ctx: Arc<Context>) {
    while let Some(key) = ctx.queues.pods.next().await {
        let t0 = std::time::Instant::now();
        let r = pod_controller::reconcile_pod(&ctx, &key).await;
        ctx.queues.pods.done(&key);
        let retry = ctx.queues.pod_outcome(&key, r.is_err());
        finish(&ctx, "pod", &key, r, retry, t0.elapsed(), |d| {
            ctx.queues.pods.add_after(key.clone(), d)
        });
    }
}

async fn status_worker(ctx: Arc<Context>) {
    while let Some(key) = ctx.queues.policies.next().await {
        let t0 = std::time::Instant::now();
        let r = policy_controller::reconcile_policy(&ctx, &key).await;
        ctx.queues.policies.done(&key);
        let retry = ctx.queues.policy_outcome(&key, r.is_err());
        finish(&ctx, "policy", &key, r, retry, t0.elapsed(), |d| {
            ctx.queues.policies.add_after(key.clone(), d)
        });
    }
}

/// Counts a reconcile's outcome; a failure is logged and retried after `retry`.
fn finish(
    ctx: &Context,
    controller: &'static str,
    key: &impl std::fmt::Display,
    r: Result<(), Error>,
    retry: Option<Duration>,
    took: Duration,
    requeue: impl FnOnce(Duration),
) {
    ctx.metrics.reconciled(controller, r.is_ok(), took);
    if let Err(e) = r {
        let delay = retry.unwrap_or(Duration::from_secs(1));
        ctx.metrics
            .errors
            .get_or_create(&metrics::CategoryLabel {
                category: e.category(),
            })
            .inc();
        tracing::warn!(controller, key = %key, error = %e, category = e.category(), retry_in_s = delay.as_secs(), "reconcile failed");
        requeue(delay);
    }
}
