//! Writing a policy never grants more than its writer has (issue 30 §3): the shipped
//! ValidatingAdmissionPolicy (crds/admission-policy.yaml) refuses a SidecarPolicy whose
//! writer may not create Pods where it reaches, exec into them (Container mode) or request a
//! token of the ServiceAccount it names, and a ClusterSidecarPolicy whose writer lacks those
//! rights cluster-wide. Users are impersonated with RBAC of their own.
//!
//! The admission policy is cluster-scoped and installed once for the shared control plane
//! (server-side apply, idempotent). Every other test writes policies as `system:masters`,
//! which every authorizer check allows, so it changes nothing for them.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sidecar_api::{ClusterSidecarPolicy, SidecarPolicy};
use sidecar_e2e::yaml_file_documents;
use sidecar_e2e::{TIMEOUT, minimal_policy, native_sidecar_policy, poll, repo_path, wait_until};
use sidecar_testenv::{TestNamespace, install_crd, shared};

/// The shipped admission policy and its binding.
const POLICY_FILE: &str = "crds/admission-policy.yaml";
/// Its name (and its binding's), as the API server quotes it in a refusal.
const POLICY_NAME: &str = "sidecarpolicy-writers.sidecars.dev";
const FIELD_MANAGER: &str = "sidecar-e2e";

/// Server-side applies (forced) the cluster-scoped `doc` as a `K`.
async fn apply_cluster<K>(client: &Client, doc: &Value)
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + DeserializeOwned,
{
    let name = doc["metadata"]["name"].as_str().expect("a name");
    Api::<K>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", doc["kind"]));
}

/// Both CRDs, the shipped admission policy and binding, and the user roles that aggregate
/// SidecarPolicy rights into `edit` (deploy/20-user-roles.yaml). Idempotent.
async fn install(client: &Client) {
    for crd in [sidecar_api::crd(), sidecar_api::cluster_crd()] {
        install_crd(client, &crd).await.expect("CRD");
    }
    let docs = yaml_file_documents(&repo_path(POLICY_FILE));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ],
        "{POLICY_FILE}"
    );
    apply_cluster::<ValidatingAdmissionPolicy>(client, &docs[0]).await;
    apply_cluster::<ValidatingAdmissionPolicyBinding>(client, &docs[1]).await;
    for doc in yaml_file_documents(&repo_path("deploy/20-user-roles.yaml")) {
        apply_cluster::<ClusterRole>(client, &doc).await;
    }
}

/// A client that acts as `user` (the admin's credentials, impersonating).
async fn as_user(user: &str) -> Client {
    let mut cfg = shared().kube_config().await;
    cfg.auth_info.impersonate = Some(user.to_string());
    Client::try_from(cfg).expect("impersonating client")
}

fn typed<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("static JSON")
}

/// A Role `name` in `ns` with `rules`, bound to User `user`.
async fn grant_role(client: &Client, ns: &str, name: &str, user: &str, rules: Value) {
    let role: Role = typed(json!({"metadata": {"name": name}, "rules": rules}));
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("Role");
    bind(client, ns, name, user, "Role", name).await;
}

/// A RoleBinding `name` in `ns` of `kind`/`role` to User `user`.
async fn bind(client: &Client, ns: &str, name: &str, user: &str, kind: &str, role: &str) {
    let binding: RoleBinding = typed(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }));
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding");
}

/// A ClusterRoleBinding `name` of ClusterRole `role` to User `user`.
async fn bind_cluster(client: &Client, name: &str, user: &str, role: &str) {
    let binding: ClusterRoleBinding = typed(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }));
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("ClusterRoleBinding");
}

/// The message of a refusal by the shipped admission policy (403 Forbidden), or a panic
/// describing what happened instead.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(POLICY_NAME) => s.message,
        other => panic!("{what}: expected a refusal by {POLICY_NAME}, got {other:?}"),
    }
}

/// Whether `result` is a refusal by the shipped admission policy (vs. success or RBAC).
fn refused_by_policy<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(POLICY_NAME))
}

/// Waits until `attempt` (a dry run that RBAC allows) is refused by the shipped admission
/// policy: the bindings and the policy are in force. Panics with the last answer.
async fn wait_in_force<T: std::fmt::Debug>(
    mut attempt: impl AsyncFnMut() -> Result<T, kube::Error>,
) {
    let mut last = String::new();
    let done = poll(TIMEOUT, async || {
        let r = attempt().await;
        if refused_by_policy(&r) {
            return Some(());
        }
        last = format!("{r:?}");
        None
    })
    .await;
    assert!(
        done.is_some(),
        "timed out after {}s waiting for {POLICY_NAME} to refuse; last answer: {last}",
        TIMEOUT.as_secs()
    );
}

fn assert_mentions(message: &str, needles: &[&str], what: &str) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "{what}: the message must say {needle:?}:\n{message}"
        );
    }
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// [`minimal_policy`] whose sidecar Pods run as ServiceAccount `sa`.
fn policy_as(name: &str, sa: &str) -> SidecarPolicy {
    let mut v = serde_json::to_value(minimal_policy(name, "web")).expect("JSON");
    v["spec"]["template"]["spec"]["serviceAccountName"] = json!(sa);
    typed(v)
}

/// (a) A Role on sidecarpolicies alone writes neither mode; (b) `edit` writes both; a user
/// who may create Pods but not exec into them, nor request a token, writes Pod mode only,
/// without a ServiceAccount; updates that leave spec alone, and status writes, are not
/// judged.
#[tokio::test]
async fn writing_a_policy_needs_the_rights_it_uses() {
    let client = shared().client().await;
    install(&client).await;
    let ns = TestNamespace::create(&client, "writers").await;
    let ns = ns.name();
    let (narrow, pods_only, editor) = (
        format!("{ns}-narrow"),
        format!("{ns}-pods-only"),
        format!("{ns}-editor"),
    );
    let policy_rules = json!({"apiGroups": ["sidecars.dev"], "resources": ["sidecarpolicies"],
                              "verbs": ["*"]});
    grant_role(
        &client,
        ns,
        "policies-only",
        &narrow,
        json!([policy_rules, {"apiGroups": ["sidecars.dev"],
            "resources": ["sidecarpolicies/status"], "verbs": ["get", "patch", "update"]}]),
    )
    .await;
    grant_role(
        &client,
        ns,
        "policies-and-pods",
        &pods_only,
        json!([policy_rules, {"apiGroups": [""], "resources": ["pods"],
            "verbs": ["get", "list", "watch", "create", "delete"]}]),
    )
    .await;
    bind(&client, ns, "edit", &editor, "ClusterRole", "edit").await;

    // A policy an admin wrote, for the narrow user's updates.
    let admin_policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns);
    admin_policies
        .create(&PostParams::default(), &minimal_policy("existing", "web"))
        .await
        .expect("the admin writes any policy");

    let narrow_api: Api<SidecarPolicy> = Api::namespaced(as_user(&narrow).await, ns);
    // In force once the narrow user (RBAC lets them write policies) is refused by it.
    wait_in_force(async || {
        narrow_api
            .create(&dry_run(), &minimal_policy("probe", "web"))
            .await
    })
    .await;

    // (a) sidecarpolicies rights alone: neither mode.
    let msg = refusal(
        narrow_api
            .create(&PostParams::default(), &minimal_policy("agent", "web"))
            .await,
        "a Pod-mode policy by a user who may not create Pods",
    );
    eprintln!("[writers] Pod mode, sidecarpolicies only: {msg}");
    assert_mentions(
        &msg,
        &[
            &format!("SidecarPolicy {ns}/agent: {narrow} may not create pods in namespace {ns}"),
            &format!("Writing it needs create on pods in namespace {ns}."),
            &format!("Fix: a RoleBinding in {ns} to the built-in edit or admin ClusterRole"),
        ],
        "Pod mode",
    );
    let msg = refusal(
        narrow_api
            .create(
                &PostParams::default(),
                &native_sidecar_policy("shipper", "api", "log-shipper", "busybox:1.36"),
            )
            .await,
        "a Container-mode policy by a user who may not create Pods",
    );
    eprintln!("[writers] Container mode, sidecarpolicies only: {msg}");
    assert_mentions(
        &msg,
        &[
            &format!("{narrow} may not create pods in namespace {ns}"),
            &format!("Writing it needs create on pods, create on pods/exec in namespace {ns}."),
        ],
        "Container mode",
    );
    // Changing the spec of a policy someone else wrote is writing it.
    let spec_patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "agent", "image": "busybox:1.37"}]}}}});
    let msg = refusal(
        narrow_api
            .patch(
                "existing",
                &PatchParams::default(),
                &Patch::Merge(&spec_patch),
            )
            .await,
        "a spec update by a user who may not create Pods",
    );
    assert_mentions(&msg, &["may not create pods"], "spec update");
    // Labels, and the status subresource, are not judged.
    narrow_api
        .patch(
            "existing",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "obs"}}})),
        )
        .await
        .expect("a metadata-only update is not checked");
    narrow_api
        .patch_status(
            "existing",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .expect("the binding does not match the status subresource");

    // Pods but no exec and no token: Pod mode only, without a ServiceAccount of its own.
    let pods_api: Api<SidecarPolicy> = Api::namespaced(as_user(&pods_only).await, ns);
    pods_api
        .create(&PostParams::default(), &minimal_policy("pod-mode", "web"))
        .await
        .expect("a user who may create Pods writes a Pod-mode policy");
    let msg = refusal(
        pods_api
            .create(
                &PostParams::default(),
                &native_sidecar_policy("shipper", "api", "log-shipper", "busybox:1.36"),
            )
            .await,
        "a Container-mode policy by a user who may not exec",
    );
    eprintln!("[writers] Container mode, pods create only: {msg}");
    assert_mentions(
        &msg,
        &[
            &format!("{pods_only} may not create pods/exec in namespace {ns}"),
            "with that Pod's ServiceAccount token",
            "or use mode: Pod.",
        ],
        "Container mode without exec",
    );
    let msg = refusal(
        pods_api
            .create(&PostParams::default(), &policy_as("builder", "builder"))
            .await,
        "a policy naming a ServiceAccount by a user who may not request its token",
    );
    eprintln!("[writers] serviceAccountName, pods create only: {msg}");
    assert_mentions(
        &msg,
        &[
            &format!(
                "{pods_only} may not create serviceaccounts/token for ServiceAccount builder \
                 in namespace {ns}"
            ),
            "create on serviceaccounts/token (ServiceAccount builder)",
            "or leave spec.template.spec.serviceAccountName unset.",
        ],
        "ServiceAccount",
    );

    // (b) edit (with the shipped user roles aggregated into it): both modes, any account.
    let edit_api: Api<SidecarPolicy> = Api::namespaced(as_user(&editor).await, ns);
    wait_until(TIMEOUT, "edit to aggregate sidecarpolicies", async || {
        let r = edit_api
            .create(&dry_run(), &minimal_policy("probe", "web"))
            .await;
        r.is_ok().then_some(())
    })
    .await;
    for policy in [
        minimal_policy("agent", "web"),
        native_sidecar_policy("shipper", "api", "log-shipper", "busybox:1.36"),
        policy_as("builder", "builder"),
    ] {
        let name = policy.metadata.name.clone().unwrap_or_default();
        edit_api
            .create(&PostParams::default(), &policy)
            .await
            .unwrap_or_else(|e| panic!("edit writes {name}: {e}"));
    }
    edit_api
        .patch(
            "existing",
            &PatchParams::default(),
            &Patch::Merge(&spec_patch),
        )
        .await
        .expect("edit changes any policy's spec");
}

/// (c) Namespace-level rights do not write a ClusterSidecarPolicy, even with RBAC on
/// clustersidecarpolicies: the same rights are needed in every namespace.
#[tokio::test]
async fn a_cluster_policy_needs_the_rights_cluster_wide() {
    let client = shared().client().await;
    install(&client).await;
    let ns = TestNamespace::create(&client, "csp-writers").await;
    let ns = ns.name();
    let (local, global) = (format!("{ns}-ns-edit"), format!("{ns}-cluster-edit"));
    // Cluster-scoped, so named after the namespace, and removed at the end.
    let writer_role = format!("{ns}-csp-writer");
    let role: ClusterRole = typed(json!({
        "metadata": {"name": writer_role},
        "rules": [{"apiGroups": ["sidecars.dev"], "resources": ["clustersidecarpolicies"],
                   "verbs": ["*"]}],
    }));
    let roles: Api<ClusterRole> = Api::all(client.clone());
    roles
        .create(&PostParams::default(), &role)
        .await
        .expect("ClusterRole");
    let bindings = [
        (
            format!("{ns}-local-csp"),
            local.clone(),
            writer_role.clone(),
        ),
        (
            format!("{ns}-global-csp"),
            global.clone(),
            writer_role.clone(),
        ),
        (format!("{ns}-global-edit"), global.clone(), "edit".into()),
    ];
    for (name, user, role) in &bindings {
        bind_cluster(&client, name, user, role).await;
    }
    bind(&client, ns, "edit", &local, "ClusterRole", "edit").await;

    // Named after the namespace (cluster policies of the shared plane are global); its
    // namespaceSelector matches no namespace.
    let name = ns.to_string();
    let csp = |mode: &str| -> ClusterSidecarPolicy {
        let template = if mode == "Container" {
            json!({"spec": {"initContainers": [
                {"name": "log-shipper", "image": "busybox:1.36", "restartPolicy": "Always"}]}})
        } else {
            json!({"spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}})
        };
        typed(json!({
            "apiVersion": "sidecars.dev/v1alpha1",
            "kind": "ClusterSidecarPolicy",
            "metadata": {"name": name},
            "spec": {
                "mode": mode,
                "namespaceSelector": {"matchLabels": {"sidecars-writers-test": name}},
                "selector": {"matchLabels": {"app": "web"}},
                "template": template,
            },
        }))
    };

    let local_api: Api<ClusterSidecarPolicy> = Api::all(as_user(&local).await);
    wait_in_force(async || local_api.create(&dry_run(), &csp("Pod")).await).await;
    let msg = refusal(
        local_api.create(&PostParams::default(), &csp("Pod")).await,
        "a cluster policy by a user with namespace rights only",
    );
    eprintln!("[writers] ClusterSidecarPolicy, edit in one namespace: {msg}");
    assert_mentions(
        &msg,
        &[
            &format!(
                "ClusterSidecarPolicy {name}: {local} may not create pods in every namespace \
                 (cluster-wide)"
            ),
            "Fix: a ClusterRoleBinding",
        ],
        "cluster policy",
    );
    refusal(
        local_api
            .create(&PostParams::default(), &csp("Container"))
            .await,
        "a Container-mode cluster policy by a user with namespace rights only",
    );

    // edit everywhere (and RBAC on cluster policies): both modes (dry runs: nothing stays).
    let global_api: Api<ClusterSidecarPolicy> = Api::all(as_user(&global).await);
    for mode in ["Pod", "Container"] {
        wait_until(
            TIMEOUT,
            "cluster-wide edit writes cluster policies",
            async || global_api.create(&dry_run(), &csp(mode)).await.ok(),
        )
        .await;
    }

    for (name, _, _) in &bindings {
        let _ = Api::<ClusterRoleBinding>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
    let _ = roles.delete(&writer_role, &DeleteParams::default()).await;
}
