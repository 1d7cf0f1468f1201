//! `sidecar-operator explain pod NAMESPACE/NAME`: reads the Pod, its namespace, the
//! namespace's Pods and SidecarPolicies and the ClusterSidecarPolicies from a live cluster,
//! and prints every policy's verdict ([`sidecar_planner::explain_pod`]). It never writes.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use sidecar_api::{ClusterSidecarPolicy, SidecarPolicy};
use sidecar_controller::Lenient;
use sidecar_planner::{Explained, Labels, PodView, PolicyView, explain_pod};

#[derive(clap::Args, Debug)]
pub(crate) struct ExplainArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Why a Pod has, or lacks, each policy's sidecars: every SidecarPolicy of its namespace
    /// and every ClusterSidecarPolicy, with the reason (selector, namespace selector, opt-out,
    /// unscheduled, terminal, paused, invalid spec, conflict, webhook missed it) and the
    /// sidecars it has or should have, with template hashes.
    Pod(PodArgs),
}

#[derive(clap::Args, Debug)]
struct PodArgs {
    /// The Pod, as NAMESPACE/NAME.
    target: String,
    /// Output: a table for people, or JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Kubeconfig file (default: in-cluster config, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The operator's namespace, which cluster policies leave out unless they name it.
    #[arg(long, env = "POD_NAMESPACE", default_value = "sidecar-system")]
    operator_namespace: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Output {
    Text,
    Json,
}

pub(crate) async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let What::Pod(args) = args.what;
    let Some((ns, name)) = args.target.split_once('/') else {
        bail!(
            "explain pod takes NAMESPACE/NAME, for example shop/web-0; got {:?}",
            args.target
        );
    };
    let config = crate::kube_config(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config).context("building the client")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("reading Pod {ns}/{name}"))?;
    let main = PodView::from_pod(&pod).context("the Pod has no name or uid")?;
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .with_context(|| format!("reading namespace {ns}"))?;
    let labels = namespace
        .metadata
        .labels
        .as_ref()
        .map(Labels::from)
        .unwrap_or_default();
    let others: Vec<PodView> = pods
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the Pods of {ns}"))?
        .items
        .iter()
        .filter_map(PodView::from_pod)
        .collect();
    let mut views: Vec<PolicyView> = Api::<Lenient<SidecarPolicy>>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the SidecarPolicies of {ns}"))?
        .items
        .into_iter()
        .map(|p| match p {
            Lenient::Ok(p) => PolicyView::new(Arc::new(p)),
            Lenient::Err(u) => PolicyView::undecodable(u.metadata, None, &u.error),
        })
        .collect();
    match Api::<Lenient<ClusterSidecarPolicy>>::all(client)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => views.extend(list.items.into_iter().map(|p| match p {
            Lenient::Ok(p) => PolicyView::cluster(Arc::new(p)),
            Lenient::Err(u) => PolicyView::cluster_undecodable(u.metadata, None, &u.error, None),
        })),
        // No ClusterSidecarPolicy CRD: there are none.
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e).context("listing the ClusterSidecarPolicies"),
    }
    let left_out: HashSet<String> = sidecar_api::constants::SYSTEM_NAMESPACES
        .iter()
        .map(|s| s.to_string())
        .chain([args.operator_namespace.clone()])
        .collect();
    let refs: Vec<&PolicyView> = views.iter().collect();
    let verdicts = explain_pod(&main, &labels, &refs, &left_out, |n| {
        others.iter().find(|p| p.name == n)
    });
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let doc = json!({
                "pod": {"namespace": ns, "name": name},
                "policies": verdicts.iter().map(verdict_json).collect::<Vec<_>>(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Output::Text => write!(out, "{}", table(ns, name, &verdicts))?,
    }
    Ok(())
}

fn verdict_json(e: &Explained) -> serde_json::Value {
    json!({
        "kind": e.kind,
        "name": e.name,
        "mode": e.mode.as_str(),
        "selects": e.verdict.selects(),
        "verdict": e.verdict.as_str(),
        "detail": e.detail,
        "sidecars": e.sidecars,
        "templateHash": e.template_hash,
        "haveHash": e.have_hash,
    })
}

/// The verdicts as a table, one line per policy, the detail below each.
fn table(ns: &str, name: &str, verdicts: &[Explained]) -> String {
    let mut s = format!("Pod {ns}/{name}: {} policies\n", verdicts.len());
    for e in verdicts {
        let hash = match &e.have_hash {
            Some(h) if *h == e.template_hash => format!("hash {h} (current)"),
            Some(h) => format!("hash {h} (current {})", e.template_hash),
            None => format!("current hash {}", e.template_hash),
        };
        s.push_str(&format!(
            "\n{} {} ({} mode): {}\n  {}\n  sidecars: {} — {hash}\n",
            e.kind,
            e.name,
            e.mode.as_str(),
            e.verdict.as_str(),
            e.detail,
            if e.sidecars.is_empty() {
                "none".to_string()
            } else {
                e.sidecars.join(", ")
            },
        ));
    }
    s
}
