//! One floor round: the benchmark's own client creates N main Pods, then the N
//! sidecar-shaped Pods the operator would create; no operator runs.

use std::time::Instant;

use crate::observe::Observer;
use crate::rounds::{FloorRound, round3};
use crate::workload::{self, BENCH_MANAGER, SIDECAR_MANAGER};
use crate::{Ctx, say, secs};

/// Runs floor round `r` in fresh namespaces.
pub(crate) async fn floor_round(ctx: &mut Ctx<'_>, r: usize) -> anyhow::Result<FloorRound> {
    let cfg = ctx.cfg;
    let timeout = cfg.timeout();
    say(&format!(
        "round {r}/{} floor: creating {} namespace(s)",
        cfg.rounds, ctx.namespaces
    ));
    let nss = workload::create_namespaces(
        &ctx.client,
        &format!("bench-r{r}-floor"),
        ctx.namespaces,
        &ctx.run_id,
        timeout,
    )
    .await?;
    ctx.live.extend(nss.iter().cloned());
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
    drop(obs);
    say(&format!(
        "round {r}/{} floor: deleting the namespaces",
        cfg.rounds
    ));
    workload::delete_namespaces(&ctx.client, &nss, timeout).await?;
    ctx.live.retain(|n| !nss.contains(n));
    Ok(FloorRound {
        round: r,
        mains_s,
        sidecars_s,
        floor_s: round3(mains_s + sidecars_s),
        sidecars_seen,
    })
}
