"""xpusim npu vs SCALE-Sim 3.0.0 on the first 8 convolutions of ResNet-18, and the whole of ResNet-50, timed.

    .venv/bin/python benchmarks/bench_npu.py [--scalesim-python .scalesim/bin/python] [--user-layers N]

Three cases: 128x128 weight stationary with CALC bandwidth (no stalls: the closed forms), and 32x32 and 128x128
weight stationary with 64 KiB SRAMs and a USER bandwidth of 10 words/cycle (stalls: the replay of SCALE-Sim's
memory model, `xpusim.engines.scalesim_mem`). With --scalesim-python (an environment with scalesim==3.0.0 and
numpy<2.4), SCALE-Sim runs the same files in a subprocess; the script prints both per-layer cycle counts, both
wall times and the ratio. --user-layers keeps the USER case to its first N layers (SCALE-Sim needs minutes per
layer there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from xpusim.engines.npu import LayerResult, simulate
from xpusim.engines.scalesim_io import read_compute_report, read_config, read_layers, read_topology, simulate_scalesim

DATA = Path(__file__).parent / "data"


def run_scalesim(python: str, cfg_path: Path, topo_path: Path) -> tuple[list[dict[str, float]], float, float]:
    """SCALE-Sim's COMPUTE_REPORT rows, its wall time in s and its peak RSS in MB."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "layout.csv").write_text("Layer name,\n")
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", python, "-m", "scalesim.scale", "-c", str(cfg_path),
             "-t", str(topo_path), "-p", d, "-l", str(Path(d) / "layout.csv"), "-i", "conv"],
            check=True, capture_output=True, text=True, timeout=4 * 3600)
        seconds = time.perf_counter() - t0
        rss_mb = int(proc.stderr.strip().splitlines()[-1]) / 1024
        return read_compute_report(next(Path(d).rglob("COMPUTE_REPORT.csv"))), seconds, rss_mb


def compare_layers(layers: Sequence[LayerResult], report: list[dict[str, float]], columns: tuple[str, ...]) -> bool:
    """Print SCALE-Sim's and xpusim's counts of each column ("Stall Cycles", "Total Cycles") per layer side by side;
    whether they are all identical."""
    attrs = [c.lower().replace(" ", "_") for c in columns]
    print("| layer | " + " | ".join(f"SCALE-Sim {c} | xpusim {a}" for c, a in zip(columns, attrs, strict=True)) + " |")
    print("|---|" + "---|---|" * len(columns))
    for layer, row in zip(layers, report, strict=True):
        print(f"| {layer.name} | " + " | ".join(f"{int(row[c]):,} | {getattr(layer, a):,}"
                                               for c, a in zip(columns, attrs, strict=True)) + " |")
    return all(getattr(layer, a) == row[c] for layer, row in zip(layers, report, strict=True)
               for c, a in zip(columns, attrs, strict=True))


def user_case(args: argparse.Namespace, user_cfg: Path, label: str, topo_path: Path) -> None:
    """One USER-bandwidth case: xpusim's replay of SCALE-Sim's memory model (peak RSS of a fresh process), and with
    --scalesim-python SCALE-Sim on the same files, per layer."""
    with tempfile.TemporaryDirectory() as d:
        user_topo = Path(d) / "topology.csv"
        lines = topo_path.read_text().splitlines()
        user_topo.write_text("\n".join(lines[:1 + args.user_layers]) + "\n")
        t0 = time.perf_counter()
        usc = read_config(user_cfg)
        user = simulate_scalesim(usc, read_layers(user_topo))
        user_s = time.perf_counter() - t0
        code = ("import sys; from xpusim.engines.scalesim_io import read_config, read_layers, simulate_scalesim; "
                "simulate_scalesim(read_config(sys.argv[1]), read_layers(sys.argv[2]))")
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", code, str(user_cfg),
                               str(user_topo)], check=True, capture_output=True, text=True, timeout=600)
        rss_mb = int(proc.stderr.strip().splitlines()[-1]) / 1024
        print(f"\n# USER, {label}, 10 words/cycle · xpusim npu (SCALE-Sim memory replay): {user_s:.2f} s for "
              f"{len(user.layers)} layers; a fresh process replaying them peaks at {rss_mb:.0f} MB RSS")
        if args.scalesim_python:
            report, ss_s, ss_rss = run_scalesim(args.scalesim_python, user_cfg, user_topo)
            same = compare_layers(user.layers, report, ("Stall Cycles", "Total Cycles"))
            print(f"\nidentical stall and total cycles: {same}; SCALE-Sim {ss_s:.1f} s and {ss_rss:.0f} MB peak RSS, "
                  f"xpusim {user_s:.2f} s: **{ss_s / user_s:,.0f}x faster**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalesim-python", default=None)
    parser.add_argument("--user-layers", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg_path, topo_path = DATA / "ws_128x128.cfg", DATA / "resnet18_first8.csv"
    t0 = time.perf_counter()
    sc = read_config(cfg_path)
    ours = simulate(list(read_topology(topo_path)), sc.npu, sc.dataflow)
    ours_s = time.perf_counter() - t0  # first call: includes reading the energy table file once per process
    t1 = time.perf_counter()
    simulate(list(read_topology(topo_path)), sc.npu, sc.dataflow)
    warm_s = time.perf_counter() - t1
    print(f"# {time.strftime('%Y-%m-%d')} · CALC, 128x128 ws · xpusim npu: {ours_s * 1e3:.2f} ms for "
          f"{len(ours.layers)} layers (first call in the process; again: {warm_s * 1e3:.2f} ms)")
    if args.scalesim_python:
        report, ss_s, rss_mb = run_scalesim(args.scalesim_python, cfg_path, topo_path)
        same = compare_layers(ours.layers, report, ("Total Cycles",))
        print(f"\nidentical cycles: {same}; SCALE-Sim {ss_s:.1f} s and {rss_mb:.0f} MB peak RSS, xpusim "
              f"{ours_s * 1e3:.2f} ms: **{ss_s / ours_s:,.0f}x faster**")

    for user_cfg, label in ((DATA / "ws_32x32_user.cfg", "32x32 ws, 64 KiB SRAMs"),
                            (DATA / "ws_128x128_user.cfg", "128x128 ws, 64 KiB SRAMs")):
        user_case(args, user_cfg, label, topo_path)
    # Whole ResNet-50 through the CLI in fresh processes: cold (captures with PyTorch) and warm (cached capture).
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "XPUSIM_CACHE": d, "XPUSIM_CAPTURE_CACHE": "1"}
        cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "xpusim.cli", "npu", "resnet50", "--array",
               "128x128", "--dataflow", "auto", "--format", "json", "--output", str(Path(d) / "out.json")]
        for label in ("cold (capture with PyTorch)", "warm (cached capture, no torch import)"):
            proc = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=600)
            wall_s, rss_kb = proc.stderr.strip().splitlines()[-1].split()
            cycles = json.loads((Path(d) / "out.json").read_text())["totals"]["total_cycles"]
            print(f"resnet50 on 128x128 (auto dataflow), fresh process, {label}: {float(wall_s):.2f} s, "
                  f"peak RSS {int(rss_kb) / 1024:.0f} MB, {cycles:,} cycles")

if __name__ == "__main__":
    main()
