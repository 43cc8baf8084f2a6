"""Parallel simulator speed: plan-search rate, a full search, one simulated step of a big plan.

    .venv/bin/python benchmarks/bench_parallel.py

Peer: Calculon (SC'23) evaluates about 300 configurations per second per core on this kind of machine
(reference/peers.md); it is not on PyPI, so its figure is quoted, not rerun, and the ratio printed is against it.
"""

from __future__ import annotations

import time

from xpusim.hardware.cluster import load_cluster
from xpusim.parallel.plan import ParallelPlan
from xpusim.parallel.search import enumerate_plans, estimate, search
from xpusim.parallel.simulate import simulate
from xpusim.parallel.spec import parse_model

CALCULON_PLANS_PER_S = 300  # reference/peers.md


def best_of(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    cluster = load_cluster("dgx-a100")
    model = parse_model("gpt-175b")
    plans = enumerate_plans(model, cluster, 1024, 1536)
    estimate(model, cluster, plans)  # warm the per-(tp, b) layer costs once
    t_est = best_of(lambda: estimate(model, cluster, plans))
    rate = len(plans) / t_est
    print(f"closed-form estimate: {len(plans):,} plans in {t_est * 1e3:.1f} ms = {rate:,.0f} plans/s "
          f"({rate / CALCULON_PLANS_PER_S:,.0f}x Calculon's ~{CALCULON_PLANS_PER_S}/s)")

    cold = parse_model("gpt-175b")  # a fresh search: layer costs computed again inside
    t0 = time.perf_counter()
    found = search(cold, cluster, 1024, 1536, top=10)
    t_search = time.perf_counter() - t0
    print(f"full search gpt-175b on 1,024 A100s, batch 1536, cold: {found.evaluated:,} plans estimated in "
          f"{found.estimate_seconds:.2f} s ({found.plans_per_s:,.0f} plans/s, layer costs included), "
          f"{found.fitting:,} fit; best 30 re-simulated; {t_search:.2f} s in all")
    best = found.results[0]
    print(f"  best: {best.plan.label()}: {best.step_time_s:.2f} s/step, MFU {100 * best.mfu:.1f}%")

    plan = ParallelPlan(dp=24, tp=8, pp=8, vp=2, micro_batch=1, global_batch=2304, schedule="interleaved",
                        recompute="full")
    t_sim = best_of(lambda: simulate(model, cluster, plan))
    r = simulate(model, cluster, plan)
    print(f"one step of gpt-175b on 1,536 GPUs ({plan.label()}): {len(r.timeline.events):,} timeline events "
          f"in {t_sim * 1e3:.1f} ms")
    big = ParallelPlan(dp=6, tp=8, pp=64, vp=2, micro_batch=1, global_batch=3072, schedule="interleaved",
                       recompute="full")
    one_t = parse_model("gpt:h=25600,l=128,a=160,s=2048,V=51200")
    t_big = best_of(lambda: simulate(one_t, cluster, big), repeat=1)
    r = simulate(one_t, cluster, big)
    print(f"one step of the 1T model on 3,072 GPUs ({big.label()}): {len(r.timeline.events):,} events in "
          f"{t_big:.2f} s")


if __name__ == "__main__":
    main()
