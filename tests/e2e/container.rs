//! Container mode end to end: the API server calls the webhook this process serves on
//! `https://127.0.0.1:PORT` (its own managed CA in the configuration's caBundle), and the
//! Pods it creates come out with the policies' native sidecars.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sidecar_api::constants::{
    ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_SKIPPED, condition, condition_status, reason,
};
use sidecar_api::{SidecarPolicy, template_hash};
use sidecar_e2e::webhook::WEBHOOK_SECRET;
use sidecar_e2e::{
    Scene, TIMEOUT, cond_is, deployment, job, pod, status_current, wait_policy_event, wait_until,
};
use sidecar_webhook::certs::Lifetimes;

const WEB: (&str, &str) = ("app", "web");

/// A Container-mode policy selecting `app=web` that injects native sidecar `sidecar`
/// (mounting volume `volume`) and labels the Pod `injected-by=<name>`.
fn container_policy(name: &str, sidecar: &str, volume: &str) -> SidecarPolicy {
    let spec = serde_json::from_value(json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"injected-by": name}},
            "spec": {
                "initContainers": [{
                    "name": sidecar,
                    "image": "otel/agent:1",
                    "restartPolicy": "Always",
                    "volumeMounts": [{"name": volume, "mountPath": "/buffer"}],
                }],
                "volumes": [{"name": volume, "emptyDir": {}}],
            },
        },
    }))
    .expect("static Container-mode spec");
    SidecarPolicy::new(name, spec)
}

/// `pod` with a plain init container `setup` of its own.
fn with_setup(mut spec: Value) -> Value {
    spec["initContainers"] = json!([{"name": "setup", "image": "busybox:1.36"}]);
    spec
}

fn init_names(p: &Pod) -> Vec<String> {
    let spec = p.spec.as_ref();
    let inits = spec.and_then(|s| s.init_containers.as_ref());
    inits
        .into_iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

fn container_names(p: &Pod) -> Vec<String> {
    let spec = p.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.clone())
        .collect()
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn init<'a>(p: &'a Pod, name: &str) -> Option<&'a Container> {
    let inits = p.spec.as_ref()?.init_containers.as_ref()?;
    inits.iter().find(|c| c.name == name)
}

#[tokio::test]
async fn deployment_pods_get_the_native_sidecar_once_before_their_own_init_containers() {
    let scene = Scene::new("cm-deploy").await;
    let _webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    let log = scene
        .create(&container_policy("log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let hash = template_hash(&log.spec);

    let mut d = serde_json::to_value(deployment("web", 3, &[WEB])).expect("Deployment JSON");
    d["spec"]["template"]["spec"] = with_setup(d["spec"]["template"]["spec"].clone());
    let d = serde_json::from_value(d).expect("Deployment");
    scene
        .create::<k8s_openapi::api::apps::v1::Deployment>(&d)
        .await;

    let pods = scene
        .wait_pods("3 Deployment Pods", |pods| {
            (pods.len() == 3).then(|| pods.to_vec())
        })
        .await;
    for p in &pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        assert_eq!(
            init_names(p),
            ["log-shipper", "setup"],
            "{name}: native sidecar first, once"
        );
        let sidecar = init(p, "log-shipper").expect("the sidecar");
        assert_eq!(
            sidecar.restart_policy.as_deref(),
            Some("Always"),
            "{name}: a native sidecar"
        );
        assert_eq!(
            container_names(p),
            ["main"],
            "{name}: the app's containers unchanged"
        );
        let volumes: Vec<&str> = p
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| v.name.as_str())
            .filter(|v| *v == "log-buffer")
            .collect();
        assert_eq!(volumes, ["log-buffer"], "{name}: the volume, once");
        assert_eq!(
            annotation(p, ANNOTATION_INJECTED),
            Some(format!("log={hash}").as_str()),
            "{name}"
        );
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("injected-by").map(String::as_str),
            Some("log"),
            "{name}"
        );
    }
    scene
        .wait_policy(
            "log",
            "3 selected Pods, 3 with the current injection, Ready",
            |p| {
                let s = p.status.as_ref();
                status_current(p)
                    && s.map(|s| (s.matched_pods, s.updated_pods, s.ready_pods)) == Some((3, 3, 3))
                    && cond_is(
                        p,
                        condition::READY,
                        condition_status::TRUE,
                        reason::ALL_SIDECARS_READY,
                    )
            },
        )
        .await;
    op.stop().await;
}

#[tokio::test]
async fn two_policies_inject_in_name_order_whatever_their_creation_order() {
    let scene = Scene::new("cm-order").await;
    let _webhook = scene.start_webhook().await;
    let b = scene
        .create(&container_policy("b-mesh", "mesh-proxy", "mesh-certs"))
        .await;
    scene.wait_injecting(&[WEB], "mesh-proxy").await;
    let a = scene
        .create(&container_policy("a-log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let mut v = serde_json::to_value(pod("app", &[WEB])).expect("Pod JSON");
    v["spec"] = with_setup(v["spec"].clone());
    let created = scene
        .create::<Pod>(&serde_json::from_value(v).expect("Pod"))
        .await;
    assert_eq!(init_names(&created), ["log-shipper", "mesh-proxy", "setup"]);
    let record = format!(
        "a-log={},b-mesh={}",
        template_hash(&a.spec),
        template_hash(&b.spec)
    );
    assert_eq!(
        annotation(&created, ANNOTATION_INJECTED),
        Some(record.as_str())
    );
}

#[tokio::test]
async fn a_pod_with_a_container_of_the_sidecars_name_is_left_alone_and_the_policy_says_why() {
    let scene = Scene::new("cm-taken").await;
    let _webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    scene
        .create(&container_policy("log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let mut v = serde_json::to_value(pod("mine", &[WEB])).expect("Pod JSON");
    v["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "log-shipper", "image": "mine:1"}));
    let mine = scene
        .create::<Pod>(&serde_json::from_value(v).expect("Pod"))
        .await;
    let ok = scene.create(&pod("ok", &[WEB])).await;

    assert!(init_names(&mine).is_empty(), "nothing injected into mine");
    assert_eq!(
        container_names(&mine),
        ["main", "log-shipper"],
        "its own containers kept"
    );
    let image = mine.spec.as_ref().map(|s| s.containers[1].image.clone());
    assert_eq!(
        image,
        Some(Some("mine:1".to_string())),
        "its container not overwritten"
    );
    assert_eq!(annotation(&mine, ANNOTATION_INJECTED), None);
    assert_eq!(
        annotation(&mine, ANNOTATION_SKIPPED),
        Some("log=initContainer/log-shipper")
    );
    assert_eq!(
        init_names(&ok),
        ["log-shipper"],
        "another Pod of the policy is injected"
    );

    let p = scene
        .wait_policy("log", "Degraded NameCollision naming the Pod", |p| {
            status_current(p)
                && cond_is(
                    p,
                    condition::DEGRADED,
                    condition_status::TRUE,
                    reason::NAME_COLLISION,
                )
        })
        .await;
    let degraded = sidecar_e2e::cond(&p, condition::DEGRADED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        degraded.contains("mine (initContainer/log-shipper)"),
        "{degraded}"
    );
    wait_policy_event(&scene, "log", "NotInjected", "Pod mine").await;
    op.stop().await;
}

#[tokio::test]
async fn opted_out_and_unselected_pods_are_left_alone() {
    let scene = Scene::new("cm-optout").await;
    let _webhook = scene.start_webhook().await;
    scene
        .create(&container_policy("log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let mut out = pod("out", &[WEB]);
    out.metadata.annotations = Some([(ANNOTATION_INJECT.to_string(), "false".to_string())].into());
    let out = scene.create(&out).await;
    let other = scene.create(&pod("other", &[("app", "db")])).await;
    for p in [&out, &other] {
        assert!(init_names(p).is_empty(), "{:?}", p.metadata.name);
        assert_eq!(annotation(p, ANNOTATION_INJECTED), None);
        assert_eq!(annotation(p, ANNOTATION_SKIPPED), None);
    }
}

#[tokio::test]
async fn a_dry_run_shows_the_injected_pod_and_creates_nothing() {
    let scene = Scene::new("cm-dry").await;
    let _webhook = scene.start_webhook().await;
    scene
        .create(&container_policy("log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let shown = scene.dry_run(&pod("preview", &[WEB])).await;
    assert_eq!(init_names(&shown), ["log-shipper"]);
    let stored = scene.pods.get_opt("preview").await.expect("get");
    assert!(stored.is_none(), "a dry run stores nothing");
}

#[tokio::test]
async fn pods_are_created_while_the_webhook_is_down_and_injected_once_it_is_back() {
    let scene = Scene::new("cm-down").await;
    let webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    scene
        .create(&container_policy("log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let addr = webhook.addr;
    drop(webhook);

    // failurePolicy Ignore: the API server cannot reach the webhook and creates the Pod.
    let during = scene.create(&pod("during", &[WEB])).await;
    assert!(
        init_names(&during).is_empty(),
        "created without the sidecar"
    );
    scene
        .wait_policy("log", "1 selected Pod without the sidecar", |p| {
            let s = p.status.as_ref();
            status_current(p) && s.map(|s| (s.matched_pods, s.updated_pods)) == Some((1, 0))
        })
        .await;

    let back = scene
        .start_webhook_with(Lifetimes::default(), Some(addr))
        .await;
    let after = scene.create(&pod("after", &[WEB])).await;
    assert_eq!(init_names(&after), ["log-shipper"], "injected again");
    drop(back);
    op.stop().await;
}

#[tokio::test]
async fn a_job_whose_pod_has_a_native_sidecar_completes() {
    let scene = Scene::new("cm-job").await;
    let _webhook = scene.start_webhook().await;
    scene
        .create(&container_policy("log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    scene.create(&job("batch", &[WEB], &[])).await;
    let jobs: Api<Job> = scene.api();
    wait_until(TIMEOUT, "the Job to complete", async || {
        let j = jobs.get("batch").await.ok()?;
        let conditions = j.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(())
    })
    .await;
    let pods = scene.list_pods().await;
    let p = pods.first().expect("the Job's Pod");
    assert_eq!(
        init_names(p),
        ["log-shipper"],
        "it ran with the native sidecar"
    );
    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
    assert_eq!(phase.as_deref(), Some("Succeeded"));
    let sidecar_state = p
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|s| s.iter().find(|c| c.name == "log-shipper"))
        .and_then(|c| c.state.clone());
    assert!(
        sidecar_state.is_some_and(|s| s.terminated.is_some()),
        "the sidecar stopped with the Job"
    );
}

#[tokio::test]
async fn certificate_rotation_under_traffic_loses_no_admission() {
    let scene = Scene::new("cm-rotate").await;
    // Short lives: the serving certificate renews every ~4 s, the CA is replaced (with an
    // overlap in which both are trusted) after ~16 s.
    let lifetimes = Lifetimes {
        ca: Duration::from_secs(24),
        serving: Duration::from_secs(6),
        overlap: Duration::from_secs(2),
    };
    let _webhook = scene.start_webhook_with(lifetimes, None).await;
    scene
        .create(&container_policy("log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let secrets: Api<Secret> = scene.api();
    let key = |s: &Secret, k: &str| {
        let data = s.data.as_ref()?;
        data.get(k).map(|b| b.0.clone())
    };
    let (mut cas, mut servings) = (BTreeSet::new(), BTreeSet::new());
    let (mut admitted, mut lost) = (0, Vec::new());
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
    // Traffic until the CA was replaced and the serving certificate renewed several times.
    while cas.len() < 2 || servings.len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotations seen: {} CAs, {} serving certificates",
            cas.len(),
            servings.len()
        );
        for _ in 0..10 {
            let shown = scene
                .pods
                .create(&dry, &pod("traffic", &[WEB]))
                .await
                .expect("dry-run create");
            admitted += 1;
            if init_names(&shown) != ["log-shipper"] {
                lost.push(admitted);
            }
        }
        let s = secrets
            .get(WEBHOOK_SECRET)
            .await
            .expect("the certificate Secret");
        cas.extend(key(&s, "ca.crt"));
        servings.extend(key(&s, "tls.crt"));
    }
    assert!(
        lost.is_empty(),
        "{} of {admitted} admissions lost during rotation: {lost:?}",
        lost.len()
    );
    eprintln!(
        "{admitted} admissions across {} CAs and {} serving certificates",
        cas.len(),
        servings.len()
    );
}

/// Certificates from files (`--webhook-cert-dir`, e.g. cert-manager's): served as found,
/// and a replaced pair is served without a restart. Here the pair is replaced by one of
/// another CA and the configuration trusts only the new CA: admissions come back only if
/// the webhook loaded the new files.
#[tokio::test]
async fn certificates_from_a_directory_are_reloaded_when_the_files_change() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use kube::api::{Patch, PatchParams};
    use sidecar_webhook::CertSource;
    use sidecar_webhook::certs::{Hosts, new_ca, serving};
    use sidecar_webhook::registration::configuration_value;

    let scene = Scene::new("cm-certdir").await;
    let dir = std::env::temp_dir().join(format!("sidecar-certdir-{}", scene.name()));
    std::fs::create_dir_all(&dir).expect("dir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let life = Duration::from_secs(3600);
    let hosts = Hosts {
        dns: Vec::new(),
        ips: vec!["127.0.0.1".parse().expect("ip")],
    };
    // Writes a pair from a fresh CA into the directory; returns the CA.
    let issue = |dir: &std::path::Path| {
        let ca = new_ca(now, life).expect("CA");
        let pair = serving(&ca, &hosts, now, life).expect("serving");
        std::fs::write(dir.join("tls.crt"), &pair.cert).expect("tls.crt");
        std::fs::write(dir.join("tls.key"), &pair.key).expect("tls.key");
        ca.cert
    };
    let first_ca = issue(&dir);
    let configs: Api<MutatingWebhookConfiguration> = Api::all(scene.client.clone());
    let apply = |registration: &sidecar_webhook::registration::Registration, ca: &str| {
        configuration_value(registration, Some(ca)).expect("the configuration as JSON")
    };
    let (dir2, registration_seen) = (
        dir.clone(),
        std::sync::Arc::new(std::sync::Mutex::new(None)),
    );
    let seen = registration_seen.clone();
    // The issuer (here: this test) owns the caBundle; the operator only reads files.
    let webhook_fut = scene.start_webhook_from(None, move |_, registration| {
        *seen.lock().expect("lock") = Some(registration);
        CertSource::Dir {
            path: dir2,
            interval: Duration::from_millis(200),
        }
    });
    // The configuration must exist before the webhook is called: apply it as soon as
    // the registration is known, while start_webhook_from waits for the first call.
    let apply_first = async {
        let registration = wait_until(TIMEOUT, "the registration", async || {
            registration_seen.lock().expect("lock").clone()
        })
        .await;
        let pp = PatchParams::apply("cert-issuer").force();
        configs
            .patch(
                &registration.name,
                &pp,
                &Patch::Apply(apply(&registration, &first_ca)),
            )
            .await
            .expect("apply the configuration");
        registration
    };
    let (webhook, registration) = tokio::join!(webhook_fut, apply_first);
    scene
        .create(&container_policy("log", "log-shipper", "log-buffer"))
        .await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let shown = scene.dry_run(&pod("before", &[WEB])).await;
    assert_eq!(
        init_names(&shown),
        ["log-shipper"],
        "served from the first files"
    );

    // The issuer rotates to another CA: new files, and the configuration trusts only it.
    let second_ca = issue(&dir);
    let pp = PatchParams::apply("cert-issuer").force();
    configs
        .patch(
            &registration.name,
            &pp,
            &Patch::Apply(apply(&registration, &second_ca)),
        )
        .await
        .expect("apply the new CA");
    wait_until(TIMEOUT, "admissions under the new CA", async || {
        let shown = scene.dry_run(&pod("after", &[WEB])).await;
        (init_names(&shown) == ["log-shipper"]).then_some(())
    })
    .await;
    assert!(webhook.webhook.is_ready());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The API server applies the webhook's patch to Pods of every shape: the sidecar goes
/// before the Pod's own init containers (or becomes the first), the container and the volume
/// after the Pod's own (or become the first), the label and the annotation beside the Pod's
/// own and never over one it has. (The patch names these additions one by one; it is not a
/// diff of the Pod as the operator's types see it.)
#[tokio::test]
async fn the_injection_patch_applies_to_pods_of_every_shape() {
    let scene = Scene::new("cm-shapes").await;
    let _webhook = scene.start_webhook().await;
    let spec = serde_json::from_value(json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"mesh": "on"}, "annotations": {"example.com/mesh": "1"}},
            "spec": {
                "initContainers": [{"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}],
                "containers": [{"name": "exporter", "image": "exp:1"}],
                "volumes": [{"name": "certs", "emptyDir": {}}],
            },
        },
    }))
    .expect("static Container-mode spec");
    scene.create(&SidecarPolicy::new("mesh", spec)).await;
    scene.wait_injecting(&[WEB], "proxy").await;

    let bare = || serde_json::to_value(pod("web-0", &[WEB])).expect("Pod JSON");
    let mut full = bare();
    full["metadata"]["labels"]["mesh"] = json!("mine");
    full["metadata"]["annotations"] = json!({"keep": "me", "example.com/mesh": "mine"});
    full["spec"]["initContainers"] = json!([
        {"name": "setup", "image": "busybox:1.36"},
        {"name": "migrate", "image": "busybox:1.36"},
    ]);
    full["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    // (case, Pod, init containers, containers, volumes, label `mesh`, annotation)
    let cases = [
        (
            "nothing optional",
            bare(),
            vec!["proxy"],
            vec!["main", "exporter"],
            vec!["certs"],
            "on",
            "1",
        ),
        (
            "its own of each",
            full,
            vec!["proxy", "setup", "migrate"],
            vec!["main", "exporter"],
            vec!["data", "certs"],
            "mine",
            "mine",
        ),
    ];
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for (case, object, inits, containers, volumes, label, annotation_value) in cases {
        let object: Pod = serde_json::from_value(object).expect("Pod");
        let p = scene
            .pods
            .create(&dry, &object)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(init_names(&p), inits, "{case}");
        assert_eq!(container_names(&p), containers, "{case}");
        let vols: Vec<&str> = p
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| v.name.as_str())
            .filter(|v| !v.starts_with("kube-api-access"))
            .collect();
        assert_eq!(vols, volumes, "{case}");
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("mesh").map(String::as_str),
            Some(label),
            "{case}"
        );
        assert_eq!(labels.get("app").map(String::as_str), Some("web"), "{case}");
        assert_eq!(
            annotation(&p, "example.com/mesh"),
            Some(annotation_value),
            "{case}"
        );
        assert!(annotation(&p, ANNOTATION_INJECTED).is_some(), "{case}");
    }
}
