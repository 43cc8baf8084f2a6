"""xpusim npu vs SCALE-Sim 3.0.0 on the first 8 convolutions of ResNet-18 (128x128, weight stationary), and the
whole of ResNet-50, timed.

    .venv/bin/python benchmarks/bench_npu.py [--scalesim-python .scalesim/bin/python]

With --scalesim-python (an environment with scalesim==3.0.0 and numpy<2.4), SCALE-Sim runs the same files in a
subprocess; the script prints both per-layer cycle counts, both wall times and the ratio.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import xpusim
from xpusim.engines.npu import NpuConfig, lower_workload, simulate
from xpusim.engines.scalesim_io import read_compute_report, read_config, read_topology

DATA = Path(__file__).parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalesim-python", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg_path, topo_path = DATA / "ws_128x128.cfg", DATA / "resnet18_first8.csv"
    t0 = time.perf_counter()
    sc = read_config(cfg_path)
    ours = simulate(list(read_topology(topo_path)), sc.npu, sc.dataflow)
    ours_s = time.perf_counter() - t0
    print(f"# {time.strftime('%Y-%m-%d')} · xpusim npu: {ours_s * 1e3:.2f} ms for {len(ours.layers)} layers")
    if args.scalesim_python:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "layout.csv").write_text("Layer name,\n")
            t0 = time.perf_counter()
            proc = subprocess.run(
                ["/usr/bin/time", "-f", "%M", args.scalesim_python, "-m", "scalesim.scale", "-c", str(cfg_path),
                 "-t", str(topo_path), "-p", d, "-l", str(Path(d) / "layout.csv"), "-i", "conv"],
                check=True, capture_output=True, text=True, timeout=3600)
            ss_s = time.perf_counter() - t0
            rss_mb = int(proc.stderr.strip().splitlines()[-1]) / 1024
            report = read_compute_report(next(Path(d).rglob("COMPUTE_REPORT.csv")))
        print("| layer | SCALE-Sim Total Cycles | xpusim total_cycles |")
        print("|---|---|---|")
        for layer, row in zip(ours.layers, report, strict=True):
            print(f"| {layer.name} | {int(row['Total Cycles']):,} | {layer.total_cycles:,} |")
        same = all(layer.total_cycles == row["Total Cycles"] for layer, row in zip(ours.layers, report, strict=True))
        print(f"\nidentical cycles: {same}; SCALE-Sim {ss_s:.1f} s and {rss_mb:.0f} MB peak RSS, xpusim "
              f"{ours_s * 1e3:.2f} ms: **{ss_s / ours_s:,.0f}x faster**")
    t0 = time.perf_counter()
    wl = xpusim.analyze("resnet50")
    layers, _ = lower_workload(wl)
    run = simulate(layers, NpuConfig(rows=128, cols=128, dram_bytes_per_cycle=10), "auto")
    total_s = time.perf_counter() - t0
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"resnet50 on 128x128 (auto dataflow): capture + lowering + simulation {total_s:.2f} s, "
          f"{run.total_cycles:,} cycles, process peak RSS {rss_gib:.2f} GiB")


if __name__ == "__main__":
    main()
