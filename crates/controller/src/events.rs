//! Event publishing, off the reconcile path.
//!
//! Two kinds of Events, published by one background task:
//!
//! - **On policies** (Warnings: refusals, name collisions). They repeat while a problem
//!   lasts, so they go through kube's [`Recorder`], which aggregates a repeat into the
//!   `series` of the first Event. Its cache holds every Event it published for 6 minutes
//!   and is scanned on each publish; policies are few, so that is cheap.
//! - **On main Pods** (Normal: sidecar created, replaced). One per action the operator
//!   took, on a Pod that rarely sees a second one, so there is nothing to aggregate; they
//!   are created directly. Through the Recorder, a burst of 10,000 Pods would keep 10,000
//!   Events in its cache (≈ 1.5 KB each) and rescan them on every publish.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cache::PolicyCache;
use crate::keys::PolicyKey;

/// The `reportingController` of the operator's Events.
pub const REPORTING_CONTROLLER: &str = "sidecar-operator";

/// The sending side: queues Events for the publisher, never waiting.
pub(crate) struct Events {
    tx: mpsc::Sender<Outgoing>,
    reporter: Reporter,
    /// Publish Normal Events on main Pods.
    on_pods: bool,
}

impl Events {
    /// Starts the publisher (Events beyond `capacity` waiting are dropped).
    pub(crate) fn start(
        client: Client,
        reporter: Reporter,
        capacity: usize,
        on_pods: bool,
    ) -> (Events, JoinHandle<()>) {
        let (tx, task) = spawn(client, reporter.clone(), capacity);
        (
            Events {
                tx,
                reporter,
                on_pods,
            },
            task,
        )
    }

    /// Queues an Event; drops it when the queue is full (Events are informative; they
    /// never slow reconciles down).
    fn publish(&self, ev: Outgoing) {
        if self.tx.try_send(ev).is_err() {
            tracing::debug!("event queue full; dropping an event");
        }
    }

    /// An Event on policy `key` (aggregated by the Events API).
    pub(crate) fn on_policy(
        &self,
        policies: &PolicyCache,
        key: &PolicyKey,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let Some(policy) = policies.get(key) else {
            return;
        };
        let reference = policy.object_ref();
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        self.publish(Outgoing::Policy(Box::new((ev, reference))));
    }

    /// A Normal Event on the main Pod `owner` of namespace `ns` (when Pod Events are on).
    pub(crate) fn on_main(
        &self,
        owner: Option<&OwnerReference>,
        ns: &str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let Some(o) = owner else { return };
        if !self.on_pods {
            return;
        }
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(o.name.clone()),
            namespace: Some(ns.to_string()),
            uid: Some(o.uid.clone()),
            ..ObjectReference::default()
        };
        let ev = pod_event(&self.reporter, reference, reason, action, note);
        self.publish(Outgoing::Pod(Box::new(ev)));
    }
}

/// An Event waiting to be published.
enum Outgoing {
    /// Aggregated by the [`Recorder`].
    Policy(Box<(Event, ObjectReference)>),
    /// Created as is.
    Pod(Box<K8sEvent>),
}

/// Starts the publisher; Events queued beyond `capacity` are dropped by the sender.
fn spawn(
    client: Client,
    reporter: Reporter,
    capacity: usize,
) -> (mpsc::Sender<Outgoing>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(capacity);
    let recorder = Recorder::new(client.clone(), reporter);
    let task = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let result = match out {
                Outgoing::Policy(ev) => recorder.publish(&ev.0, &ev.1).await,
                Outgoing::Pod(ev) => {
                    let ns = ev.metadata.namespace.as_deref().unwrap_or("default");
                    Api::<K8sEvent>::namespaced(client.clone(), ns)
                        .create(&PostParams::default(), &ev)
                        .await
                        .map(drop)
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "publishing an event failed");
            }
        }
    });
    (tx, task)
}

/// A Normal Event on a Pod, in the shape kube's [`Recorder`] gives its Events.
pub(crate) fn pod_event(
    reporter: &Reporter,
    regarding: ObjectReference,
    reason: &str,
    action: &str,
    note: String,
) -> K8sEvent {
    let now = Timestamp::now();
    let name = event_name(
        regarding.name.as_deref().unwrap_or(&reporter.controller),
        now.as_nanosecond(),
    );
    K8sEvent {
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(name),
            ..ObjectMeta::default()
        },
        action: Some(action.to_string()),
        reason: Some(reason.to_string()),
        note: Some(note),
        event_time: Some(MicroTime(now)),
        type_: Some(event_type(EventType::Normal).to_string()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        regarding: Some(regarding),
        ..K8sEvent::default()
    }
}

/// Longest object name the API accepts (a DNS subdomain).
const MAX_NAME: usize = 253;

/// `<object>.<nanoseconds in hex>`, like client-go names Events, with the object's name cut
/// so the whole stays a valid name of at most 253 characters (a Pod's name may already be
/// 253 characters long).
fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!("{nanos:x}");
    let room = MAX_NAME - suffix.len() - 1;
    // Names are ASCII (DNS subdomains), so byte slicing is on char boundaries.
    let prefix = object
        .get(..room.min(object.len()))
        .unwrap_or(object)
        .trim_end_matches(['-', '.']);
    format!("{prefix}.{suffix}")
}

fn event_type(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_stay_valid_for_the_longest_pod_names() {
        let nanos = 1_764_620_000_123_456_789_i128;
        assert_eq!(event_name("web-0", nanos), format!("web-0.{nanos:x}"));
        for object in [
            "w".repeat(253),
            format!("{}-{}", "a".repeat(236), "b".repeat(16)),
            format!("{}.{}", "a".repeat(237), "b".repeat(15)),
        ] {
            let name = event_name(&object, nanos);
            assert!(name.len() <= 253, "{} characters", name.len());
            assert!(!name.contains("-.") && !name.contains(".."), "{name}");
            assert!(name.ends_with(&format!(".{nanos:x}")));
        }
    }

    #[test]
    fn pod_events_name_the_pod_and_the_reporter() {
        let reporter = Reporter {
            controller: "sidecar-operator".into(),
            instance: Some("op-0".into()),
        };
        let regarding = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        };
        let ev = pod_event(
            &reporter,
            regarding,
            "SidecarCreated",
            "Create",
            "created".into(),
        );
        assert!(ev.metadata.name.as_deref().unwrap().starts_with("web-0."));
        assert_eq!(ev.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(ev.type_.as_deref(), Some("Normal"));
        assert_eq!(ev.reporting_instance.as_deref(), Some("op-0"));
        assert_eq!(ev.regarding.and_then(|r| r.uid).as_deref(), Some("u-1"));
        assert!(ev.series.is_none() && ev.event_time.is_some());
    }
}
