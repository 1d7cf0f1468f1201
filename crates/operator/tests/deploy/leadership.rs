//! Leader election between two `sidecar-operator run` processes: one leader, failover
//! after SIGKILL, a clean release on SIGTERM; and leadership given up promptly and
//! completely: a leader frozen (SIGSTOP) past its lease while a standby takes over sends no
//! write when it resumes, and stands by.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use sidecar_api::SidecarPolicy;
use sidecar_e2e::{minimal_policy as policy, pod, wait_pod, wait_until};
use sidecar_planner::sidecar_name;
use sidecar_testenv::{TestNamespace, install_crd, shared};

use crate::process::Proc;
use crate::{holder, lease_args, refused_policy, wait_leader};

/// SIGTERM (Linux).
const SIGTERM: i32 = 15;

const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// The process exists and has not exited (an exited, unreaped child is a zombie, `Z`).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_leader_frozen_past_its_lease_sends_no_write_when_it_resumes_and_stands_by() {
    let client = shared().client().await;
    install_crd(&client, &sidecar_api::crd())
        .await
        .expect("CRD");
    let ns = TestNamespace::create_labeled(
        &client,
        "lead",
        &[("pod-security.kubernetes.io/enforce", "baseline")],
    )
    .await;
    let lease = format!("lead-{}", ns.name());
    let kc = shared().kubeconfig().to_path_buf();
    // Lease 6 s; the renew deadline (4 s) and retry period (0.8 s) are the defaults.
    let args = lease_args(&lease, ns.name());
    let a = Proc::start(&kc, ns.name(), &args, "a");
    let b = Proc::start(&kc, ns.name(), &args, "b");
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    let first = wait_leader(&leases, &lease).await;
    let (leader, standby, standby_id) = if first == "a" {
        (&a, &b, "b")
    } else {
        (&b, &a, "a")
    };

    // Work the leader is busy with: one sidecar created, one template refused and rechecked.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());
    for p in [policy("agent", "web"), refused_policy("priv", "web")] {
        policies
            .create(&PostParams::default(), &p)
            .await
            .expect("policy");
    }
    pods.create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
        .await
        .expect("main Pod");
    wait_pod(&pods, &sidecar_name("web-0", "agent"), true, "sidecar").await;
    // The refused template is checked again with backoff (dry runs are POSTs: writes the
    // gate must fence too).
    let dry_runs = |p: &Proc| {
        p.metric("sidecar_operator_api_requests_total{verb=\"dry-run\",resource=\"pods\"}")
    };
    wait_until(
        Duration::from_secs(30),
        "the leader checking a refused template again",
        || async { (dry_runs(leader) >= 2.0).then_some(()) },
    )
    .await;

    // Freeze the leader. (A write between this reading and the signal would be counted as
    // sent after the resume; the window is well under a millisecond.)
    let before = leader.writes().expect("leader /metrics");
    sidecar_testenv::process::signal(leader.child.id(), SIGSTOP);
    let frozen_at = Instant::now();

    // The standby takes over and works: a Pod created meanwhile gets its sidecar.
    pods.create(&PostParams::default(), &pod("web-1", &[("app", "web")]))
        .await
        .expect("main Pod");
    wait_until(Duration::from_secs(60), "the standby taking over", || {
        let leases = leases.clone();
        let lease = lease.clone();
        async move { (holder(&leases, &lease).await.as_deref() == Some(standby_id)).then_some(()) }
    })
    .await;
    wait_pod(
        &pods,
        &sidecar_name("web-1", "agent"),
        true,
        "sidecar by the new leader",
    )
    .await;
    let frozen_for = frozen_at.elapsed();

    // Resume it: from the first instant on, not one write (of any resource, the Lease
    // and Events included) may leave it. Watch its counter for two lease durations.
    sidecar_testenv::process::signal(leader.child.id(), SIGCONT);
    let resumed_at = Instant::now();
    let mut readings = 0;
    while resumed_at.elapsed() < Duration::from_secs(12) {
        let writes = leader.writes();
        let alive = running(leader.child.id());
        match writes {
            Some(w) => {
                readings += 1;
                assert_eq!(
                    w,
                    before,
                    "the resumed leader sent {} write(s) {:?} after it resumed; requests now {:?}; log:\n{}",
                    w - before,
                    resumed_at.elapsed(),
                    leader.api_requests(),
                    leader.log_tail()
                );
            }
            None if !alive => panic!(
                "the resumed leader exited instead of standing by (its writes after the resume cannot be counted); log:\n{}",
                leader.log_tail()
            ),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        readings >= 20,
        "only {readings} readings of the resumed process's /metrics"
    );
    let fenced = leader.metric("sidecar_operator_writes_fenced_total");
    eprintln!(
        "[leadership] frozen {frozen_for:?}; {readings} readings over 12 s after SIGCONT: writes stayed at {before}; writes fenced (refused unsent) after the resume: {fenced}"
    );
    // It stands by: not leading, ready, the Lease untouched.
    assert_eq!(leader.metric("sidecar_operator_leader"), 0.0);
    assert_eq!(
        leader.get("/readyz").map(|(c, _)| c),
        Some(200),
        "a standby is ready"
    );
    assert_eq!(
        holder(&leases, &lease).await.as_deref(),
        Some(standby_id),
        "standby log:\n{}",
        standby.log_tail()
    );

    // A real standby: when the new leader dies, it takes over again and works.
    let created_before = leader.metric("sidecar_operator_sidecars_created_total");
    sidecar_testenv::process::signal(standby.child.id(), 9);
    pods.create(&PostParams::default(), &pod("web-2", &[("app", "web")]))
        .await
        .expect("main Pod");
    wait_pod(
        &pods,
        &sidecar_name("web-2", "agent"),
        true,
        "sidecar after the second failover",
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the resumed process creating it",
        || async {
            (leader.metric("sidecar_operator_sidecars_created_total") > created_before)
                .then_some(())
        },
    )
    .await;
    assert_eq!(leader.metric("sidecar_operator_leader"), 1.0);
}

#[tokio::test]
async fn leader_election_one_leader_failover_and_clean_release() {
    let client = shared().client().await;
    install_crd(&client, &sidecar_api::crd())
        .await
        .expect("CRD");
    let ns = TestNamespace::create(&client, "ha").await;
    let lease = format!("ha-{}", ns.name());
    let kc = shared().kubeconfig().to_path_buf();
    let args = lease_args(&lease, ns.name());
    let mut a = Proc::start(&kc, ns.name(), &args, "a");
    let mut b = Proc::start(&kc, ns.name(), &args, "b");
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    let first = wait_leader(&leases, &lease).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());
    policies
        .create(&PostParams::default(), &policy("agent", "web"))
        .await
        .expect("policy");
    for i in 0..3 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("web-{i}"), &[("app", "web")]),
        )
        .await
        .expect("main Pod");
    }
    for i in 0..3 {
        wait_pod(
            &pods,
            &sidecar_name(&format!("web-{i}"), "agent"),
            true,
            "sidecar",
        )
        .await;
    }
    // Exactly one process created them: the leader.
    let created = |p: &Proc| p.metric("sidecar_operator_sidecars_created_total");
    let (leader, standby) = if first == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    wait_until(Duration::from_secs(10), "leader metrics", || async {
        (created(leader) == 3.0).then_some(())
    })
    .await;
    assert_eq!(created(standby), 0.0, "the standby must create nothing");
    assert_eq!(
        standby.get("/readyz").map(|(c, _)| c),
        Some(200),
        "a standby is ready"
    );

    // SIGKILL the leader: the standby takes over within the lease duration and converges.
    leader.child.kill().expect("kill leader");
    let _ = leader.child.wait();
    let killed_at = Instant::now();
    pods.create(&PostParams::default(), &pod("web-3", &[("app", "web")]))
        .await
        .expect("main Pod");
    wait_pod(
        &pods,
        &sidecar_name("web-3", "agent"),
        true,
        "sidecar after failover",
    )
    .await;
    let took = killed_at.elapsed();
    eprintln!(
        "[ha] failover to {} converged {took:?} after SIGKILL",
        if first == "a" { "b" } else { "a" }
    );
    assert!(
        took < Duration::from_secs(6 + 20),
        "failover took {took:?}; standby log:\n{}",
        standby.log_tail()
    );
    let new_holder = holder(&leases, &lease).await;
    assert_ne!(new_holder.as_deref(), Some(first.as_str()));

    // SIGTERM the new leader: exit code 0, Lease released.
    let pid = standby.child.id();
    sidecar_testenv::process::signal(pid, SIGTERM);
    let status = wait_until(Duration::from_secs(30), "graceful exit", || {
        let st = standby.child.try_wait().ok().flatten();
        async move { st }
    })
    .await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        standby.log_tail()
    );
    wait_until(Duration::from_secs(10), "Lease released", || {
        let leases = leases.clone();
        let lease = lease.clone();
        async move { holder(&leases, &lease).await.is_none().then_some(()) }
    })
    .await;
}
