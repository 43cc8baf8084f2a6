"""xpusim sweep on dask: points per second of a cheap npu study on a plain loop over the API, the sweep's serial
path and local clusters of 1 and 2 workers, then the issue's npu study grown past 10,000 points, timed.

    .venv/bin/python benchmarks/bench_sweep.py [--skip-10k] [--workers 2]

Captures come from xpusim's capture cache (warmed first, and timed apart), so a point costs the NPU simulation,
not PyTorch. "cold" is `sweep(workers=N)` as the CLI runs it: start a local cluster, import xpusim and torch in
each worker, run, stop. "warm" reuses a cluster whose workers have already run a point (a notebook's client):
the steady-state rate. Scaling efficiency 1→N is rate(N) / (N · rate(1)); overhead is
1 − rate / (N · rate of the plain loop).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from xpusim.api import calls
from xpusim.sweep import sweep

CHEAP = {"study": "npu", "model": "resnet18", "array": ["16x16", "32x32", "64x64", "128x128", "256x256"],
         "dataflow": ["os", "ws", "is"], "sram_kb": ["256,256,128", "1024,1024,512", "6144,6144,2048"],
         "dram_bytes_per_cycle": [8, 16, 32, 64], "batch": [1, 2, 4, 8]}
"""5 x 3 x 3 x 4 x 4 = 720 points."""
ISSUE = {"study": "npu", "model": ["resnet18", "resnet50", "mobilenet_v2", "vit_b_16"],
         "array": ["16x16", "32x32", "64x64", "128x128", "256x256"], "dataflow": ["os", "ws", "is"],
         "sram_kb": ["256,256,128", "1024,1024,512", "6144,6144,2048"], "dram_bytes_per_cycle": [8, 16, 32, 64],
         "batch": list(range(1, 15))}
"""The issue's study is 4 x 5 x 3 x 3 x 4 = 720 points; 14 batch sizes make it 10,080."""


def warm_cache(study: dict[str, Any]) -> float:
    """Capture every (model, batch) once, so the cache serves every point; seconds taken."""
    t0 = time.perf_counter()
    models = study["model"] if isinstance(study["model"], list) else [study["model"]]
    for model, batch in itertools.product(models, study["batch"]):
        calls.npu(model, array="16x16", batch=batch)
    return time.perf_counter() - t0


def plain_loop(study: dict[str, Any]) -> tuple[int, float]:
    """(points, seconds) of a for-loop over the API, no sweep machinery."""
    axes = [study[k] for k in ("array", "dataflow", "sram_kb", "dram_bytes_per_cycle", "batch")]
    t0 = time.perf_counter()
    n = 0
    for array, df, sram, bw, batch in itertools.product(*axes):
        calls.npu(study["model"], array=array, dataflow=df, sram_kib=tuple(int(s) for s in sram.split(",")),
                  dram_bytes_per_cycle=bw, batch=batch)
        n += 1
    return n, time.perf_counter() - t0


def timed_sweep(study: dict[str, Any], out: Path, **kwargs: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    df = sweep(study, out=out, force=True, **kwargs)
    wall = time.perf_counter() - t0
    assert df["error"].isna().all() and df["key"].is_unique
    a = df.attrs
    busy = a["task_seconds"] / (max(a["workers"], 1) * a["run_seconds"])  # the workers' share of the run
    return {"points": len(df), "wall_s": wall, "rate": len(df) / wall, "bytes": out.stat().st_size,
            "run_s": a["run_seconds"], "busy": busy}


def on_cluster(study: dict[str, Any], out: Path, workers: int) -> tuple[dict[str, float], dict[str, float]]:
    """(cold: sweep(workers=N) with the cluster's start and stop, warm: the same on a cluster already warm)."""
    from distributed import Client, LocalCluster

    cold = timed_sweep(study, out, workers=workers)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        sweep({**study, "array": study["array"][:1], "dataflow": "ws", "sram_kb": study["sram_kb"][0],
               "dram_bytes_per_cycle": 16, "batch": study["batch"][:2]}, client=client)  # import, warm every worker
        warm = timed_sweep(study, out, client=client)
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-10k", action="store_true")
    parser.add_argument("--skip-serial-10k", action="store_true", help="skip the 10k study's serial run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("XPUSIM_CAPTURE_CACHE", "1")
    print(f"# {time.strftime('%Y-%m-%d')} · {os.cpu_count()} cores · torch {torch.__version__}, one thread per worker")
    print(f"warm the capture cache (cheap study): {warm_cache(CHEAP):.2f} s")
    plain_loop(CHEAP)  # warm this process: energy table, imports
    n, loop_s = plain_loop(CHEAP)
    loop_rate = n / loop_s
    print(f"cheap npu study, {n} points of resnet18:")
    print(f"  plain loop over xpusim.npu     {loop_s:7.2f} s  {loop_rate:8.1f} points/s")
    with tempfile.TemporaryDirectory() as d:
        sweep({**CHEAP, "array": "16x16"}, client=False)  # this process: pandas, pyarrow imported
        s = timed_sweep(CHEAP, Path(d) / "serial.parquet", client=False)
        print(f"  sweep, serial path             {s['wall_s']:7.2f} s  {s['rate']:8.1f} points/s  "
              f"(overhead vs the loop {100 * (1 - s['rate'] / loop_rate):+.1f}%)")
        rates = {}
        for w in sorted({1, args.workers}):
            cold, warm = on_cluster(CHEAP, Path(d) / f"w{w}.parquet", w)
            rates[w] = warm["rate"]
            label = f"{w} local worker{'s' if w > 1 else ' '}"
            overhead = 100 * (1 - warm["rate"] / (w * loop_rate))
            print(f"  sweep, {label}  warm  {warm['wall_s']:7.2f} s  {warm['rate']:8.1f} points/s (overhead vs {w}x "
                  f"the loop {overhead:+.1f}%; workers busy {100 * warm['busy']:.1f}% of the run); cold "
                  f"{cold['wall_s']:.2f} s, {cold['rate']:.1f} points/s")
        if args.workers > 1:
            print(f"  scaling 1 -> {args.workers} workers (warm): {rates[args.workers] / rates[1]:.2f}x, efficiency "
                  f"{100 * rates[args.workers] / (args.workers * rates[1]):.0f}%")
        if not args.skip_10k:
            grid = math.prod(len(v) for k, v in ISSUE.items() if isinstance(v, list) and k != "batch")
            print(f"issue study: {grid} points; with {len(ISSUE['batch'])} batch sizes "
                  f"{grid * len(ISSUE['batch']):,}")
            print(f"  warm the capture cache ({4 * len(ISSUE['batch'])} captures): {warm_cache(ISSUE):.2f} s")
            r = timed_sweep(ISSUE, Path(d) / "issue.parquet", workers=args.workers, pareto="latency_s,energy_j")
            print(f"  {r['points']:,} points, sweep(workers={args.workers}) cold: {r['wall_s']:.1f} s wall "
                  f"({r['run_s']:.1f} s run, workers busy {100 * r['busy']:.1f}% of it), {r['rate']:.0f} points/s, "
                  f"output {r['bytes'] / 1e6:.2f} MB")
            if not args.skip_serial_10k:
                r = timed_sweep(ISSUE, Path(d) / "issue.parquet", client=False, pareto="latency_s,energy_j")
                print(f"  {r['points']:,} points, serial path: {r['wall_s']:.1f} s wall, {r['rate']:.0f} points/s")


if __name__ == "__main__":
    main()
