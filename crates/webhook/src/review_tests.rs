//! The admission handler as a table: AdmissionReview bytes in, the answer out; the patch
//! is applied to the Pod as the API server would, to check the Pod that results.

use std::sync::Arc;

use serde_json::{Value, json};
use sidecar_api::{SidecarPolicy, SidecarPolicySpec};

use super::*;

fn policy(name: &str, sidecar: &str) -> Arc<PolicyView> {
    let spec: SidecarPolicySpec = serde_json::from_value(json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"initContainers": [
            {"name": sidecar, "image": "agent:1", "restartPolicy": "Always"}]}},
    }))
    .expect("spec");
    let mut p = SidecarPolicy::new(name, spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.generation = Some(1);
    Arc::new(PolicyView::new(Arc::new(p)))
}

fn pod_json(labels: Value, annotations: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": labels, "annotations": annotations},
        "spec": {"containers": containers},
    })
}

fn web() -> Value {
    pod_json(
        json!({"app": "web"}),
        json!({}),
        json!([{"name": "app", "image": "web:1"}]),
    )
}

/// The AdmissionReview the API server sends for `operation` of `object` in namespace shop.
pub(crate) fn review_json(operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1234",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
            "dryRun": false,
        },
    }))
    .unwrap()
}

/// The answer's response and the Pod after its patch (`object` when there is none).
fn answer_of(body: &[u8], object: &Value, policies: &[Arc<PolicyView>]) -> (Answer, Value, Value) {
    let answer = review(body, |ns| InNamespace {
        policies: policies
            .iter()
            .filter(|p| p.namespace == ns)
            .cloned()
            .collect(),
        level: Level::Privileged,
    });
    let review: Value = serde_json::from_slice(answer.body.as_deref().expect("a review")).unwrap();
    let response = review["response"].clone();
    let mut pod = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the Pod as sent");
    }
    (answer, response, pod)
}

fn inits(pod: &Value) -> Vec<&str> {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

#[test]
fn each_review_gets_the_answer_its_pod_calls_for() {
    let both = vec![policy("b-mesh", "proxy"), policy("a-log", "shipper")];
    let opted_out = pod_json(
        json!({"app": "web"}),
        json!({"sidecars.dev/inject": "false"}),
        json!([{"name": "app", "image": "web:1"}]),
    );
    let taken = pod_json(
        json!({"app": "web"}),
        json!({}),
        json!([{"name": "app", "image": "web:1"}, {"name": "proxy", "image": "mine:1"}]),
    );
    let other = pod_json(
        json!({"app": "db"}),
        json!({}),
        json!([{"name": "db", "image": "db:1"}]),
    );
    // (case, operation, object, policies, outcome result/reason, init containers after)
    type Case<'a> = (
        &'a str,
        &'a str,
        Value,
        Vec<Arc<PolicyView>>,
        (&'a str, &'a str),
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "selected: both, in name order",
            "CREATE",
            web(),
            both.clone(),
            ("injected", ""),
            vec!["shipper", "proxy"],
        ),
        (
            "no policy in the namespace",
            "CREATE",
            web(),
            vec![],
            ("skipped", "no_policy"),
            vec![],
        ),
        (
            "not selected",
            "CREATE",
            other,
            both.clone(),
            ("skipped", "not_selected"),
            vec![],
        ),
        (
            "opted out",
            "CREATE",
            opted_out,
            both.clone(),
            ("skipped", "opted_out"),
            vec![],
        ),
        (
            "an update",
            "UPDATE",
            web(),
            both.clone(),
            ("skipped", "not_a_pod_create"),
            vec![],
        ),
        (
            "one name taken",
            "CREATE",
            taken,
            both.clone(),
            ("injected", ""),
            vec!["shipper"],
        ),
    ];
    for (case, op, object, policies, (result, reason), want) in cases {
        let (answer, response, pod) =
            answer_of(&review_json(op, object.clone()), &object, &policies);
        assert_eq!(response["uid"], "1234", "{case}: answers its request");
        assert_eq!(response["allowed"], true, "{case}: never refuses a Pod");
        assert_eq!(
            (answer.outcome.result(), answer.outcome.reason()),
            (result, reason),
            "{case}"
        );
        assert_eq!(inits(&pod), want, "{case}");
        // The API server reinvokes (IfNeeded) with the patched Pod: nothing more changes.
        let (again, response, _) = answer_of(&review_json(op, pod.clone()), &pod, &policies);
        assert!(
            response["patch"].is_null(),
            "{case}: reinvoked, no patch ({:?})",
            again.outcome
        );
    }
}

#[test]
fn a_skipped_policy_is_told_to_the_user_and_recorded_on_the_pod() {
    let policies = vec![policy("mesh", "proxy")];
    let taken = pod_json(
        json!({"app": "web"}),
        json!({}),
        json!([{"name": "app", "image": "web:1"}, {"name": "proxy", "image": "mine:1"}]),
    );
    let (answer, response, pod) =
        answer_of(&review_json("CREATE", taken.clone()), &taken, &policies);
    assert_eq!(answer.outcome, Outcome::Unchanged("name_taken"));
    let warnings = response["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{response}");
    assert!(
        warnings[0].as_str().unwrap().contains("SidecarPolicy mesh"),
        "{warnings:?}"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["sidecars.dev/skipped"],
        "mesh=initContainer/proxy"
    );
    assert_eq!(pod["spec"], taken["spec"], "the Pod's own spec untouched");
    assert_eq!(answer.refusals.len(), 1);
    assert_eq!(answer.refusals[0].pod, "web-", "named by its generateName");
}

#[test]
fn a_body_that_is_not_a_review_is_a_bad_request() {
    for body in [
        &b"not json"[..],
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ] {
        let answer = review(body, |_| InNamespace::default());
        assert!(answer.body.is_none(), "{}", String::from_utf8_lossy(body));
        assert_eq!(answer.outcome.result(), "error");
    }
}

/// A Container-mode policy `name` whose template adds a native sidecar, a container, a volume,
/// a label and an annotation (keys that need escaping in a JSON pointer included).
fn full_policy(name: &str) -> Arc<PolicyView> {
    let spec: SidecarPolicySpec = serde_json::from_value(json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {
                "labels": {"mesh": "on", "app": "not-this"},
                "annotations": {"example.com/a~b": "1"},
            },
            "spec": {
                "initContainers": [{"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}],
                "containers": [{"name": "exporter", "image": "exp:1"}],
                "volumes": [{"name": "certs", "emptyDir": {}}],
            },
        },
    }))
    .expect("spec");
    let mut p = SidecarPolicy::new(name, spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.generation = Some(1);
    Arc::new(PolicyView::new(Arc::new(p)))
}

/// The patch adds what the injection adds, where it adds it, and nothing else: a field the
/// operator's Pod type does not know (one a newer API server serves) stays on the container
/// that had it. (A diff of typed values dropped such fields from both sides and then moved
/// the Pod's own init container's onto the sidecar inserted before it.)
#[test]
fn fields_unknown_to_the_operator_stay_where_they_were() {
    let policies = vec![full_policy("mesh")];
    let mut object = web();
    object["spec"]["initContainers"] =
        json!([{"name": "migrate", "image": "db:1", "futureField": 1}]);
    object["spec"]["containers"][0]["futureField"] = json!({"x": 2});
    object["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}, "futureField": 3}]);
    object["spec"]["futurePodField"] = json!(true);
    object["metadata"]["futureMeta"] = json!("m");
    let (answer, _, pod) = answer_of(&review_json("CREATE", object.clone()), &object, &policies);
    assert_eq!(answer.outcome.result(), "injected", "{:?}", answer.outcome);
    assert_eq!(inits(&pod), ["proxy", "migrate"], "{pod}");
    let spec = &pod["spec"];
    assert_eq!(spec["initContainers"][1]["futureField"], 1, "{pod}");
    assert!(
        spec["initContainers"][0].get("futureField").is_none(),
        "{pod}"
    );
    assert_eq!(
        spec["containers"][0]["futureField"],
        json!({"x": 2}),
        "{pod}"
    );
    assert!(spec["containers"][1].get("futureField").is_none(), "{pod}");
    assert_eq!(spec["volumes"][0]["futureField"], 3, "{pod}");
    assert!(spec["volumes"][1].get("futureField").is_none(), "{pod}");
    assert_eq!(spec["futurePodField"], true);
    assert_eq!(pod["metadata"]["futureMeta"], "m");
}

/// Whatever the Pod has or lacks (no init containers, an empty list, no volumes, no labels or
/// annotations, a label the template also sets), the patched Pod is the injection's Pod, and a
/// reinvocation patches nothing.
#[test]
fn the_patch_yields_the_injected_pod() {
    let policies = vec![full_policy("mesh")];
    let bare = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "web:1"}]},
    });
    let with = |f: fn(&mut Value)| {
        let mut p = bare.clone();
        f(&mut p);
        p
    };
    let cases = [
        ("nothing optional", bare.clone()),
        (
            "empty lists",
            with(|p| {
                p["spec"]["initContainers"] = json!([]);
                p["spec"]["volumes"] = json!([]);
            }),
        ),
        (
            "its own of each",
            with(|p| {
                p["spec"]["initContainers"] =
                    json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]);
                p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
                p["metadata"]["labels"]["mesh"] = json!("mine");
                p["metadata"]["annotations"] = json!({"keep": "me", "example.com/a~b": "mine"});
            }),
        ),
        (
            "annotations without ours",
            with(|p| {
                p["metadata"]["annotations"] = json!({"keep": "me"});
            }),
        ),
    ];
    for (case, object) in cases {
        let (answer, _, patched) =
            answer_of(&review_json("CREATE", object.clone()), &object, &policies);
        assert_eq!(
            answer.outcome.result(),
            "injected",
            "{case}: {:?}",
            answer.outcome
        );
        let typed: Pod = serde_json::from_value(object.clone()).expect("pod");
        let refs: Vec<&PolicyView> = policies.iter().map(Arc::as_ref).collect();
        let want = inject_in(&typed, &refs, Level::Privileged)
            .pod
            .expect("injected");
        let got: Pod = serde_json::from_value(patched.clone()).expect("patched pod");
        assert_eq!(got, want, "{case}: {patched}");
        let (again, response, _) =
            answer_of(&review_json("CREATE", patched.clone()), &patched, &policies);
        assert!(
            response["patch"].is_null(),
            "{case}: reinvoked ({:?})",
            again.outcome
        );
    }
}
