//! The CI-sized benchmark (part of `make test`): N = 100, one round, 5 s idle, the
//! operator in-process, on this test process's shared control plane. It checks that
//! the measurement is right — every sidecar counted, every latency sampled, the report
//! written with every field — and never a time: timings on a shared 2-core machine are
//! not test material.

use std::time::Duration;

use serde_json::Value;
use sidecar_bench::{Cluster, Config, OperatorMode};

const N: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_sized_benchmark_counts_everything() {
    let cp = sidecar_testenv::shared();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-ci");
    let _ = std::fs::remove_dir_all(&out);
    let mut cfg = Config::new(N);
    cfg.rounds = 1;
    cfg.idle_secs = 5;
    cfg.cluster = Cluster::Existing(cp.kubeconfig().to_path_buf());
    cfg.operator = OperatorMode::InProcess;
    cfg.out_dir = out.clone();
    cfg.timeout = Some(Duration::from_secs(180));
    // Churn, CI-sized: 3 s at 20 Pods/s (60 Pods a run), each living 2 s; no second rate.
    cfg.churn_secs = 3;
    cfg.churn_delete_after = Duration::from_secs(2);
    cfg.churn_max_rate = Some(0.0);

    let report = sidecar_bench::run(&cfg).await.expect("the benchmark runs");

    // In memory.
    assert_eq!(report.floor_rounds.len(), 1);
    assert_eq!(report.operator_rounds.len(), 1);
    let floor = &report.floor_rounds[0];
    assert_eq!(floor.sidecars_seen, N, "floor sidecars counted");
    let op = &report.operator_rounds[0];
    assert_eq!(op.convergence.sidecars_seen, N, "operator sidecars counted");
    assert_eq!(
        op.convergence.latency_ms.count, N,
        "one latency per main Pod"
    );
    assert!(
        op.rollout.rollout_finished,
        "the rollout of {N} sidecars finished"
    );
    assert_eq!(report.latency_ms.count, N);
    assert!(
        op.cost
            .api_calls_per_sidecar
            .get("create")
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "at least one create per sidecar counted: {:?}",
        op.cost.api_calls_per_sidecar
    );
    assert!(
        op.memory.cached_pods >= (2 * N) as f64,
        "the operator cached the main Pods and sidecars: {}",
        op.memory.cached_pods
    );
    assert!(op.memory.steady_rss_bytes > 0 && op.memory.peak_rss_bytes > 0);
    // The pictures: one line per series, linked from report.md.
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    let churn = report.churn.as_ref().expect("the churn section ran");
    check_churn(churn);
    for (file, lines) in [
        (sidecar_bench::pictures::CONVERGENCE_SVG, 3),
        (sidecar_bench::pictures::LATENCY_SVG, 2),
        (sidecar_bench::pictures::CHURN_SVG, churn.runs.len()),
    ] {
        let svg = std::fs::read_to_string(out.join(file)).expect("svg");
        // A series is a 2-px polyline through a point per Pod (the legend's are 2 points).
        let drawn = svg
            .split("<polyline")
            .skip(1)
            .filter(|p| p.contains("stroke-width=\"2\""))
            .filter(|p| {
                let points = p.split("points=\"").nth(1).unwrap_or_default();
                points
                    .split('"')
                    .next()
                    .unwrap_or_default()
                    .split(' ')
                    .count()
                    > 30
            })
            .count();
        assert_eq!(drawn, lines, "{file}: series drawn\n{svg}");
        assert!(
            svg.contains("operator"),
            "{file}: the legend names the operator"
        );
        assert!(md.contains(&format!("]({file})")), "report.md links {file}");
    }
    let cluster = report
        .cluster
        .as_ref()
        .expect("the cluster-policy section ran");
    assert_eq!(cluster.status_namespaces, 10, "{cluster:?}");
    assert!(cluster.floor_s > 0.0 && cluster.ratio > 0.0, "{cluster:?}");

    assert_report_files(&out);
}

/// Every churned Pod is counted and timed, and the attribution is measured, not assumed.
fn check_churn(churn: &sidecar_bench::churn::ChurnSection) {
    let runs: Vec<(&str, bool)> = churn
        .runs
        .iter()
        .map(|r| (r.placement.as_str(), r.pod_events))
        .collect();
    assert_eq!(
        runs,
        [("SameNode", true), ("Any", true), ("SameNode", false)],
        "{churn:?}"
    );
    for r in &churn.runs {
        assert_eq!(r.created, 60, "{r:?}");
        assert_eq!(
            r.without_sidecar, 0,
            "every churned Pod got its sidecar: {r:?}"
        );
        assert_eq!(r.latency_ms.count, 60, "one latency per Pod: {r:?}");
        assert_eq!(r.create_ms.count, 60, "one create latency per Pod: {r:?}");
        assert_eq!(r.samples_ms.len(), 60);
        assert!(
            r.queue_wait_ms.p99 > 0.0,
            "the queue wait was observed: {r:?}"
        );
        assert!(r.tail.pods >= 1, "{r:?}");
        assert_eq!(
            r.latency_from,
            if r.placement == "SameNode" {
                "binding"
            } else {
                "create"
            }
        );
        if r.pod_events {
            assert!(r.event_writes_per_s > 0.0, "Pod events counted: {r:?}");
        } else {
            assert_eq!(r.event_writes_per_s, 0.0, "no Pod events: {r:?}");
            assert_eq!(r.tail.all_with_event_write, 0.0, "{r:?}");
        }
    }
}

/// `report.json` has every field, `report.md` the table.
fn assert_report_files(out: &std::path::Path) {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json written"),
    )
    .expect("report.json is JSON");
    for field in [
        "n",
        "floor_s",
        "converge_s",
        "ratio",
        "ideal_floor_s",
        "ratio_ideal",
        "api_calls_per_sidecar",
        "peak_rss_bytes",
        "steady_rss_bytes",
        "bytes_per_cached_pod",
        "idle_writes",
        "cold_start_s",
        "cold_start_ratio",
        "rollout_s",
        "ready_s",
        "reconciles_per_pod",
        "cpu_s",
        "machine",
        "apf",
        "floor_rounds",
        "operator_rounds",
    ] {
        assert!(
            json.get(field).is_some(),
            "report.json lacks {field}: {json}"
        );
    }
    for p in ["p50", "p90", "p99", "max"] {
        assert!(
            json["latency_ms"][p].is_number(),
            "report.json lacks latency_ms.{p}"
        );
    }
    assert_eq!(json["n"], N);
    assert_eq!(json["latency_ms"]["count"], N);
    assert!(json["api_calls_per_sidecar"].is_object());
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md written");
    assert!(md.contains("ratio convergence / phased floor"), "{md}");
    assert!(md.contains("ratio convergence / ideal floor"), "{md}");
    // The ideal floor ran and its watcher saw every sidecar.
    assert!(
        json["ideal_floor_s"].as_f64().is_some_and(|s| s > 0.0),
        "{json}"
    );
    assert!(
        json["ratio_ideal"].as_f64().is_some_and(|r| r > 0.0),
        "{json}"
    );
    assert_eq!(json["ideal_latency_ms"]["count"], N);
}
