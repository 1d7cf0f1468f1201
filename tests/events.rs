//! The Events of a scene's namespace: listing them, picking those about one object, and
//! waiting for a Warning.

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use sidecar_api::constants::{MANAGED_BY_VALUE, reason};

use crate::{Scene, TIMEOUT, poll};

/// The Events (events.k8s.io/v1) of the scene's namespace.
pub async fn events(scene: &Scene) -> Vec<Event> {
    scene
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
}

/// The Events about the object `kind`/`name` with `reason`.
pub fn events_about<'a>(
    events: &'a [Event],
    kind: &str,
    name: &str,
    reason: &str,
) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
        })
        .collect()
}

/// One line per Event, for failure messages and the test log.
pub fn describe_events(events: &[&Event]) -> String {
    events
        .iter()
        .map(|e| {
            let about = e
                .regarding
                .as_ref()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r.kind.as_deref().unwrap_or("-"),
                        r.name.as_deref().unwrap_or("-")
                    )
                })
                .unwrap_or_default();
            format!(
                "  {} {} {about}: {} (series count {:?})\n",
                e.type_.as_deref().unwrap_or("-"),
                e.reason.as_deref().unwrap_or("-"),
                e.note.as_deref().unwrap_or("-"),
                e.series.as_ref().map(|s| s.count)
            )
        })
        .collect()
}

/// Waits for a Warning Event with `reason` about policy `name` whose note contains `needle`.
pub async fn wait_policy_event(scene: &Scene, name: &str, reason: &str, needle: &str) {
    wait_policy_event_of(scene, "Warning", name, reason, needle).await;
}

/// Waits for an Event of type `type_` (`Normal`, `Warning`) with `reason` about policy
/// `name` whose note contains `needle`.
pub async fn wait_policy_event_of(
    scene: &Scene,
    type_: &str,
    name: &str,
    reason: &str,
    needle: &str,
) {
    let found = poll(TIMEOUT, async || {
        let all = events(scene).await;
        let about = events_about(&all, "SidecarPolicy", name, reason);
        about
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some(type_)
                    && e.note.as_deref().is_some_and(|n| n.contains(needle))
            })
            .then_some(())
    })
    .await;
    if found.is_none() {
        let all = events(scene).await;
        panic!(
            "no {type_} Event {reason} on SidecarPolicy {name} saying {needle:?}; Events:\n{}",
            describe_events(&all.iter().collect::<Vec<_>>())
        );
    }
}

/// Waits until exactly one Warning Event with reason `CreateRefused` is about policy `name`
/// (the Events API aggregates repeats into one object), whose note contains `needle`.
pub async fn wait_refusal_event(scene: &Scene, name: &str, needle: &str) -> Event {
    let what = format!("a Warning Event CreateRefused on SidecarPolicy {name} saying {needle:?}");
    let found = poll(TIMEOUT, async || {
        let all = events(scene).await;
        let about = events_about(&all, "SidecarPolicy", name, reason::CREATE_REFUSED);
        about.first().map(|e| (*e).clone())
    })
    .await;
    let Some(event) = found else {
        let all = events(scene).await;
        panic!(
            "timed out waiting for {what}; Events:\n{}",
            describe_events(&all.iter().collect::<Vec<_>>())
        );
    };
    let all = events(scene).await;
    let about = events_about(&all, "SidecarPolicy", name, reason::CREATE_REFUSED);
    eprintln!(
        "[status] Events CreateRefused on {name}:\n{}",
        describe_events(&about)
    );
    assert_eq!(
        event.type_.as_deref(),
        Some("Warning"),
        "{}",
        describe_events(&about)
    );
    assert!(
        event.note.as_deref().is_some_and(|n| n.contains(needle)),
        "the Event names the server's reason ({needle:?}):\n{}",
        describe_events(&about)
    );
    assert_eq!(
        about.len(),
        1,
        "repeated refusals are aggregated into one Event object:\n{}",
        describe_events(&about)
    );
    event
}

/// Prints the Events the operator reported in the scene's namespace (one line each).
pub async fn print_operator_events(scene: &Scene) {
    let events = scene.api::<CoreEvent>().list(&Default::default()).await;
    let events: Vec<CoreEvent> = events
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| {
            let by = e.reporting_component.as_deref();
            let source = e.source.as_ref().and_then(|s| s.component.as_deref());
            by == Some(MANAGED_BY_VALUE) || source == Some(MANAGED_BY_VALUE)
        })
        .collect();
    eprintln!(
        "[api-calls] {} Events by the operator in {}",
        events.len(),
        scene.name()
    );
    for e in &events {
        eprintln!(
            "[api-calls]   {} {} {}: {} (count {:?})",
            e.type_.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("-"),
            e.involved_object.name.as_deref().unwrap_or("-"),
            e.message.as_deref().unwrap_or("-"),
            e.count
        );
    }
}
