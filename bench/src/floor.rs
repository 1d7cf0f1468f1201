//! One floor round, two floors; no operator runs.
//! - *Phased*: the benchmark's own client creates N main Pods, then the N sidecar-shaped
//!   Pods the operator would create.
//! - *Ideal* (the tight one): in fresh namespaces, each sidecar is created the moment its
//!   main Pod's create returns, by a second pool of the same size (`concurrency` main
//!   creates and `concurrency` sidecar creates in flight, as the benchmark's client and the
//!   operator have in the operator round), same JSON: the best any controller could do on
//!   this API server. Timed like the operator, to the N-th sidecar at the watcher.

use std::time::Instant;

use crate::observe::Observer;
use crate::rounds::{Curves, FloorRound, Latency, round3};
use crate::workload::{self, BENCH_MANAGER, SIDECAR_MANAGER};
use crate::{Ctx, say, secs, since};

/// Runs floor round `r` in fresh namespaces.
pub(crate) async fn floor_round(ctx: &mut Ctx<'_>, r: usize) -> anyhow::Result<FloorRound> {
    let cfg = ctx.cfg;
    let timeout = cfg.timeout();
    say(&format!(
        "round {r}/{} floor: creating {} namespace(s)",
        cfg.rounds, ctx.namespaces
    ));
    let nss = ctx.fresh_namespaces(&format!("bench-r{r}-floor")).await?;
    let obs = Observer::start(&ctx.observer, &nss, false, timeout).await?;
    say(&format!(
        "round {r}/{} floor: creating {} main Pods",
        cfg.rounds, cfg.n
    ));
    let t0 = Instant::now();
    let created = workload::create_pods(
        &ctx.client,
        workload::main_pods(cfg.n, &nss),
        cfg.concurrency,
        BENCH_MANAGER,
    )
    .await?;
    let mains_s = secs(t0.elapsed());
    let sidecars = workload::render_sidecars(&created, &cfg.rollout_max_unavailable);
    anyhow::ensure!(
        sidecars.len() == cfg.n,
        "rendered {} sidecars",
        sidecars.len()
    );
    say(&format!(
        "round {r}/{} floor: creating {} sidecar-shaped Pods",
        cfg.rounds, cfg.n
    ));
    let t1 = Instant::now();
    workload::create_pods(&ctx.client, sidecars, cfg.concurrency, SIDECAR_MANAGER).await?;
    let sidecars_s = secs(t1.elapsed());
    obs.wait_live(
        cfg.n,
        "the floor's sidecars at the watcher",
        timeout,
        |_| true,
    )
    .await?;
    let sidecars_seen = obs.sidecars_seen();
    let phased_curve = obs.sidecar_times(t0);
    drop(obs);
    say(&format!(
        "round {r}/{} floor: deleting the namespaces",
        cfg.rounds
    ));
    ctx.drop_namespaces(&nss).await?;
    let (ideal_s, ideal_latency_ms, ideal_curve, ideal_samples) = ideal_floor(ctx, r).await?;
    Ok(FloorRound {
        round: r,
        mains_s,
        sidecars_s,
        floor_s: round3(mains_s + sidecars_s),
        sidecars_seen,
        ideal_s,
        ideal_latency_ms,
        curves: Curves {
            sidecars_s: phased_curve,
            ideal_sidecars_s: ideal_curve,
            latencies_ms: ideal_samples,
        },
    })
}

/// The ideal floor: seconds to the N-th sidecar, its latencies' percentiles, and (for the
/// pictures) its sidecars' times and raw latencies.
async fn ideal_floor(
    ctx: &mut Ctx<'_>,
    r: usize,
) -> anyhow::Result<(f64, Latency, Vec<f64>, Vec<f64>)> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let cfg = ctx.cfg;
    let timeout = cfg.timeout();
    let nss = ctx.fresh_namespaces(&format!("bench-r{r}-ideal")).await?;
    let obs = Observer::start(&ctx.observer, &nss, false, timeout).await?;
    say(&format!(
        "round {r}/{} ideal floor: {} main Pods, each sidecar created as its main Pod's create returns",
        cfg.rounds, cfg.n
    ));
    let (tx, rx) = tokio::sync::mpsc::channel::<k8s_openapi::api::core::v1::Pod>(cfg.n.max(1));
    let client = ctx.client.clone();
    let max_unavailable = cfg.rollout_max_unavailable.clone();
    let t0 = Instant::now();
    let pods = workload::main_pods(cfg.n, &nss);
    let concurrency = cfg.concurrency.max(1);
    let main_client = client.clone();
    // Owns the sender: when the last main Pod is created, the block ends, the sender is
    // dropped and the sidecar pool ends once it has created the last sidecar.
    let mains = async move {
        futures::stream::iter(pods)
            .map(|p| {
                let (client, tx) = (main_client.clone(), tx.clone());
                async move {
                    let created = workload::create_pods(&client, vec![p], 1, BENCH_MANAGER).await?;
                    for c in created {
                        let _ = tx.send(c).await;
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await
    };
    let sidecars = tokio_stream_of(rx)
        .map(|main| {
            let client = client.clone();
            let sidecars = workload::render_sidecars(&[main], &max_unavailable);
            async move { workload::create_pods(&client, sidecars, 1, SIDECAR_MANAGER).await }
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .try_collect::<Vec<_>>();
    let (m, s) = futures::join!(mains, sidecars);
    m?;
    s?;
    let ideal_s = since(obs.wait_first_sidecars(cfg.n, timeout).await?, t0);
    // A sidecar's event can reach the watcher before its main Pod's (two streams): the
    // latencies need every main Pod seen too.
    let deadline = Instant::now() + timeout;
    while obs.mains_seen() < cfg.n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the watcher saw {} of {} main Pods",
            obs.mains_seen(),
            cfg.n
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let samples = obs.latencies_ms();
    let latency = Latency::of(&samples);
    let curve = obs.sidecar_times(t0);
    drop(obs);
    ctx.drop_namespaces(&nss).await?;
    Ok((round3(ideal_s), latency, curve, samples))
}

/// The receiving side of a channel as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
