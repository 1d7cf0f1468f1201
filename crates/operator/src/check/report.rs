//! The report: for each policy, the Pods it selects and the sidecar Pods it would create.

use std::io::{self, Write};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sidecar_api::constants::{ANNOTATION_INJECT, INJECT_DISABLED, KIND as POLICY_KIND};
use sidecar_api::{Mode, Placement, UpdateStrategyType};
use sidecar_planner::inject::inject;
use sidecar_planner::{Ineligible, PodView, PolicyView, eligibility, render, sidecar_name};

use super::{Inputs, PodInput, PolicyInput, UNSCHEDULED_NODE, object_name, plural};

/// Writes the report; returns the number of sidecar Pods and of injected Pods shown.
pub(super) fn report(inputs: &Inputs, out: &mut dyn Write) -> io::Result<(usize, usize)> {
    writeln!(
        out,
        "# sidecar-operator check: offline preview, no cluster contacted."
    )?;
    writeln!(
        out,
        "# {} SidecarPolic{} valid, {} Pod{} (from Pods and workload templates) in {} file{}.",
        inputs.policies.len(),
        if inputs.policies.len() == 1 {
            "y"
        } else {
            "ies"
        },
        inputs.pods.len(),
        plural(inputs.pods.len()),
        inputs.files,
        plural(inputs.files),
    )?;
    let mut shown = 0;
    for policy in &inputs.policies {
        shown += report_policy(policy, &inputs.pods, out)?;
    }
    let injected = report_injections(inputs, out)?;
    Ok((shown, injected))
}

/// Container mode: each Pod (or workload's Pod template) as the admission webhook would
/// let it in, from [`inject`], the function the webhook calls: the policies of its
/// namespace that select it, in the webhook's order, with what each added or why not.
fn report_injections(inputs: &Inputs, out: &mut dyn Write) -> io::Result<usize> {
    let mut shown = 0;
    for pod in &inputs.pods {
        let policies: Vec<&PolicyView> = inputs
            .policies
            .iter()
            .map(|p| &p.view)
            .filter(|v| v.mode() == Mode::Container && v.namespace == pod.namespace())
            .collect();
        if policies.is_empty() {
            continue;
        }
        let injection = inject(&pod.pod, &policies);
        let Some(admitted) = &injection.pod else {
            continue;
        };
        let what = match &pod.origin {
            Some(o) => format!(
                "The Pod template of {o} ({}), as each of its Pods is admitted",
                pod.source
            ),
            None => format!("{} as admitted", describe_pod(pod)),
        };
        writeln!(out, "---")?;
        writeln!(out, "# {what}:")?;
        for (policy, hash) in &injection.injected {
            writeln!(
                out,
                "#   injected by {POLICY_KIND} {policy} (template hash {hash})"
            )?;
        }
        for (policy, skip) in injection.skipped.iter().filter(|(_, s)| s.is_problem()) {
            writeln!(
                out,
                "#   not injected by {POLICY_KIND} {policy}: {}",
                skip.message()
            )?;
        }
        let yaml = serde_yaml_ng::to_string(admitted).map_err(io::Error::other)?;
        out.write_all(yaml.as_bytes())?;
        shown += 1;
    }
    Ok(shown)
}

fn describe_pod(pod: &PodInput) -> String {
    let origin = pod
        .origin
        .as_ref()
        .map_or(String::new(), |o| format!("{o}, "));
    format!(
        "{} ({origin}{})",
        object_name("Pod", pod.namespace(), pod.name()),
        pod.source
    )
}

fn report_policy(
    policy: &PolicyInput,
    pods: &[PodInput],
    out: &mut dyn Write,
) -> io::Result<usize> {
    let view = &policy.view;
    write_policy_header(policy, out)?;
    let in_namespace: Vec<&PodInput> = pods
        .iter()
        .filter(|p| p.namespace() == view.namespace)
        .collect();
    let mut wanted = Vec::new();
    let mut lines = Vec::new();
    for pod in &in_namespace {
        let Some(mut main) = PodView::from_pod(&pod.pod) else {
            continue;
        };
        let unscheduled = main.node_name.is_none();
        if unscheduled && view.placement() == Placement::SameNode {
            main.node_name = Some(UNSCHEDULED_NODE.to_owned());
        }
        let Some((gets_sidecar, outcome)) = outcome(&main, unscheduled, view) else {
            continue;
        };
        if gets_sidecar {
            wanted.push((*pod, main));
        }
        lines.push(format!("#     {}: {outcome}", describe_pod(pod)));
    }
    writeln!(
        out,
        "#   selects {} of {} Pod{} in namespace {}{}",
        lines.len(),
        in_namespace.len(),
        plural(in_namespace.len()),
        view.namespace,
        if lines.is_empty() { "" } else { ":" }
    )?;
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    for (pod, main) in &wanted {
        write_sidecar(pod, main, view, out)?;
    }
    Ok(wanted.len())
}

/// The policy's line and its settings.
fn write_policy_header(policy: &PolicyInput, out: &mut dyn Write) -> io::Result<()> {
    let view = &policy.view;
    let max_unavailable = match &view.policy.spec.update_strategy.max_unavailable {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    writeln!(out)?;
    writeln!(
        out,
        "# {} ({}): valid",
        object_name(POLICY_KIND, &view.namespace, &view.name),
        policy.source
    )?;
    let paused = if view.paused() { ", PAUSED" } else { "" };
    if view.mode() == Mode::Container {
        // Placement means nothing there; the strategy decides about drifted Pods.
        let repair = match view.strategy() {
            UpdateStrategyType::OnDelete => {
                "Pods running without them or with an older template's are reported in status, never evicted".to_owned()
            }
            UpdateStrategyType::RollingUpdate => format!(
                "Pods running without them or with an older template's are evicted, if a controller owns them, at most {max_unavailable} unavailable at once"
            ),
        };
        return writeln!(
            out,
            "#   mode Container (sidecars injected into each Pod at its creation), updateStrategy \
             {} ({repair}), template hash {}{paused}",
            view.strategy().as_str(),
            view.hash,
        );
    }
    writeln!(
        out,
        "#   placement {}, updateStrategy {} (maxUnavailable {max_unavailable}), template hash \
         {}{paused}",
        view.placement().as_str(),
        view.strategy().as_str(),
        view.hash,
    )
}

/// What the policy does for main Pod `main` (`unscheduled`: it had no node): whether it gets a
/// sidecar, and the report's words; `None` when the policy does not select it.
fn outcome(main: &PodView, unscheduled: bool, view: &PolicyView) -> Option<(bool, String)> {
    let sidecar = object_name(
        "Pod",
        &view.namespace,
        &sidecar_name(&main.name, &view.name),
    );
    let refused = match eligibility(main, view) {
        Err(Ineligible::NotSelected) => return None,
        Ok(()) if unscheduled && view.placement() == Placement::SameNode => {
            return Some((
                true,
                format!(
                    "sidecar {sidecar} once the Pod is scheduled (placement SameNode; shown with \
                     node {UNSCHEDULED_NODE})"
                ),
            ));
        }
        Ok(()) => return Some((true, format!("sidecar {sidecar}"))),
        Err(Ineligible::OptedOut) => {
            format!("no sidecar: opted out ({ANNOTATION_INJECT}={INJECT_DISABLED})")
        }
        // A Pod that exists already (it records injections, or a controller owns it): what
        // the operator makes of it.
        Err(Ineligible::ContainerMode) if main.injected.is_some() || main.owner.is_some() => {
            return Some((false, existing_pod(main, view)));
        }
        Err(Ineligible::ContainerMode) => {
            return Some((
                false,
                "sidecars injected into the Pod at its creation (the admitted Pod is shown below)"
                    .to_owned(),
            ));
        }
        Err(Ineligible::Paused) => "no sidecar while the policy is paused".to_owned(),
        Err(Ineligible::IsSidecar) => "no sidecar: it is itself a sidecar".to_owned(),
        Err(Ineligible::Terminating) => "no sidecar: the Pod is terminating".to_owned(),
        Err(Ineligible::Terminal) => {
            "no sidecar: the Pod has finished (Succeeded or Failed)".to_owned()
        }
        Err(other) => format!("no sidecar: {}", other.as_str()),
    };
    Some((false, refused))
}

/// Container mode, a Pod that exists already: whether it runs the current sidecars, and what
/// the update strategy does about it if not.
fn existing_pod(main: &PodView, view: &PolicyView) -> String {
    let Some(drift) = sidecar_planner::drift_of(view, main) else {
        return "runs the current sidecars (recorded at its admission)".to_owned();
    };
    let runs = match drift {
        sidecar_planner::Drift::Missing => "runs without the sidecars",
        sidecar_planner::Drift::Outdated => "runs an older template's sidecars",
        sidecar_planner::Drift::Refused => {
            "runs without the sidecars: its namespace would have refused it with them"
        }
    };
    let then = match (
        view.strategy(),
        sidecar_planner::repair::recreating_owner(main),
    ) {
        (UpdateStrategyType::OnDelete, Some(_)) => {
            "reported in status (updateStrategy OnDelete); RollingUpdate with allowEviction: true would evict it".to_owned()
        }
        (UpdateStrategyType::OnDelete, None) => "reported in status (updateStrategy OnDelete); \
            RollingUpdate would not evict it either: no controller would recreate it"
            .to_owned(),
        (UpdateStrategyType::RollingUpdate, Some(o)) => {
            format!(
                "evicted for its {} {} to recreate with them",
                o.kind, o.name
            )
        }
        (UpdateStrategyType::RollingUpdate, None) => {
            "reported, never evicted: no controller would recreate it".to_owned()
        }
    };
    format!("{runs} ({}): {then}", drift.as_str())
}

/// The sidecar Pod of `main` as a YAML document, with comments on its placeholders.
fn write_sidecar(
    pod: &PodInput,
    main: &PodView,
    view: &PolicyView,
    out: &mut dyn Write,
) -> io::Result<()> {
    let sidecar = render(main, view);
    let yaml = serde_yaml_ng::to_string(&sidecar).map_err(io::Error::other)?;
    writeln!(out, "---")?;
    writeln!(
        out,
        "# Sidecar of {} for {}.",
        object_name("Pod", &main.namespace, &main.name),
        object_name(POLICY_KIND, &view.namespace, &view.name)
    )?;
    if pod.uid_is_placeholder {
        writeln!(
            out,
            "# Placeholder: main Pod uid {} (the API server assigns the real one).",
            main.uid
        )?;
    }
    if main.node_name.as_deref() == Some(UNSCHEDULED_NODE) {
        writeln!(
            out,
            "# Placeholder: node {UNSCHEDULED_NODE}. The main Pod has no spec.nodeName; with \
             placement SameNode the operator waits until it is scheduled, then pins the \
             sidecar to its node."
        )?;
    } else if main.node_name.is_none() {
        writeln!(
            out,
            "# The main Pod is not scheduled: placement Any creates the sidecar at once, with \
             MAIN_POD_NODE empty."
        )?;
    }
    out.write_all(yaml.as_bytes())
}
