//! Rendering the sidecar Pod of a (main Pod, policy) pair.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sidecar_api::Placement;
use sidecar_api::constants::{
    ENV_MAIN_POD_NAME, ENV_MAIN_POD_NAMESPACE, ENV_MAIN_POD_NODE, ENV_MAIN_POD_UID,
    LABEL_CLUSTER_POLICY, LABEL_MAIN_UID, LABEL_MANAGED_BY, LABEL_POLICY, LABEL_TEMPLATE_HASH,
    MANAGED_BY_VALUE,
};

use crate::naming::sidecar_name;
use crate::view::{PodView, PolicyView};

/// The sidecar Pod for `main` and `policy`:
/// - name [`sidecar_name`], in the main Pod's namespace;
/// - the template's labels and annotations, plus `app.kubernetes.io/managed-by`,
///   `sidecars.dev/policy`, `sidecars.dev/main-uid`, `sidecars.dev/template-hash`;
/// - one owner reference, to the main Pod, with `controller: true` (the garbage
///   collector deletes the sidecar with its main Pod);
/// - `MAIN_POD_NAME`, `MAIN_POD_NAMESPACE`, `MAIN_POD_UID`, `MAIN_POD_NODE` first in the
///   environment of every container and init container (replacing same-named entries),
///   so `$(MAIN_POD_NAME)` expands in command, args and later env values;
/// - with `SameNode`, a required node affinity on `metadata.name` = the main Pod's node,
///   added to every existing required term (terms are ORed, so each must carry it).
pub fn render(main: &PodView, policy: &PolicyView) -> Pod {
    let template = &policy.policy.spec.template;
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = tmeta.labels.unwrap_or_default();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    if policy.is_cluster() {
        labels.insert(
            LABEL_CLUSTER_POLICY.into(),
            policy.object_name().to_string(),
        );
    } else {
        labels.insert(LABEL_POLICY.into(), policy.name.clone());
    }
    labels.insert(LABEL_MAIN_UID.into(), main.uid.clone());
    labels.insert(LABEL_TEMPLATE_HASH.into(), policy.hash.clone());

    let mut spec: PodSpec = template.spec.clone().unwrap_or_default();
    let node = main.node_name.clone().unwrap_or_default();
    let env = [
        (ENV_MAIN_POD_NAME, main.name.as_str()),
        (ENV_MAIN_POD_NAMESPACE, main.namespace.as_str()),
        (ENV_MAIN_POD_UID, main.uid.as_str()),
        (ENV_MAIN_POD_NODE, node.as_str()),
    ];
    for c in spec.containers.iter_mut() {
        inject_env(c, &env);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        inject_env(c, &env);
    }
    if policy.placement() == Placement::SameNode && !node.is_empty() {
        pin_to_node(&mut spec, &node);
    }

    Pod {
        metadata: ObjectMeta {
            name: Some(sidecar_name(&main.name, &policy.name)),
            namespace: Some(main.namespace.clone()),
            labels: Some(labels),
            annotations: tmeta.annotations.filter(|a| !a.is_empty()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: main.name.clone(),
                uid: main.uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn inject_env(c: &mut Container, vars: &[(&str, &str)]) {
    let mut env: Vec<EnvVar> = vars
        .iter()
        .map(|(k, v)| EnvVar {
            name: (*k).into(),
            value: Some((*v).into()),
            value_from: None,
        })
        .collect();
    env.extend(
        c.env
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !vars.iter().any(|(k, _)| *k == e.name)),
    );
    c.env = Some(env);
}

fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let requirement = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.to_string()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let required = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in required.node_selector_terms.iter_mut() {
        let fields = term.match_fields.get_or_insert_with(Vec::new);
        fields.retain(|f| f.key != "metadata.name");
        fields.push(requirement.clone());
    }
}
