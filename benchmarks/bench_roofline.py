"""Speed of the hardware side: roofline of a captured model, the LLM estimator, the host probe, and the
accuracy of --measure (predicted vs measured per layer on this CPU).

    .venv/bin/python benchmarks/bench_roofline.py [--skip-probe] [--runs 5] [--models resnet18,encoder] [--batch 16]

Accuracy: per run, probe this CPU, then time every executed leaf of each model once and compare the host roofline
with it — the full model and, to see which term mattered most, with every kind's fixed cost warm and without the
per-kind fixed costs at all (both measured by the probe, never fitted to these models).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

import xpusim
from xpusim.api.host import count_flops
from xpusim.engines.llm import Precision, TransformerConfig, estimate_llm
from xpusim.engines.measure import line_up, time_executed_leaves
from xpusim.engines.roofline import roofline
from xpusim.hardware.chip import load_chip, parse_chip
from xpusim.hardware.probe import probe
from xpusim.workload.api import materialize
from xpusim.workload.zoo import build, llm_configs

REPEATS = 5


def median_s(fn, repeat: int = 7) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-probe", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="Probe and measure this many times (the spread).")
    parser.add_argument("--models", default="resnet18,mobilenet_v2,resnet50,vit_b_16,encoder")
    parser.add_argument("--batch", type=int, default=1, help="Batch of every model (first touch shows from 16 on).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d')} · torch {torch.__version__} · 1 thread")
    wl = xpusim.analyze("resnet50", batch=32, dtype="float16")
    a100 = load_chip("a100-sxm-80gb")
    t = median_s(lambda: roofline(wl, a100))
    print(f"roofline of a captured resnet50 ({len(wl.ops)} ops) on a100: {t * 1e3:.2f} ms")
    cfg = TransformerConfig.from_hf("llama2-70b", llm_configs()["llama2-70b"]["config"])
    h100 = load_chip("h100-sxm")
    t = median_s(lambda: estimate_llm(cfg, h100, batch=16, prompt_len=1024, gen_len=256,
                                      precision=Precision(w_bits=4, kv_bits=8)))
    print(f"llm estimate llama2-70b on h100 (prompt 1024, 256 decode steps): {t * 1e3:.1f} ms")
    if args.skip_probe:
        return
    t0 = time.perf_counter()
    data = probe(threads=1, count_flops=count_flops)
    print(f"probe: {time.perf_counter() - t0:.1f} s; fp32 {data['dense_tflops']['tensor']['fp32'] * 1e3:.1f} GFLOP/s, "
          + ", ".join(f"{m['name']} {m['bandwidth_gb_per_s']:.1f} GB/s" for m in data["memory"]))
    for run in range(args.runs):
        if run:  # every run probes afresh: the machine's own speed moves between runs
            data = probe(threads=1, count_flops=count_flops)
        accuracy_run(run + 1, data, args.models.split(","), args.batch)


VARIANTS = ("model", "no first touch", "warm only", "no kind overheads")
"""The full host model; then, each also without first touch of fresh output buffers: as it is; with every op kind's
fixed cost warm (no eviction); with the one 1-element-add overhead for every op (before the per-kind costs) — which
term mattered most."""


def variant(data: dict[str, Any], name: str) -> dict[str, Any]:
    eff = dict(data["efficiency"])
    if name != "model":
        eff["fresh_alloc_bytes"] = eff["first_touch_gb_per_s"] = None
    if name == "warm only":
        eff["cold_curve"] = [[1.0, 0.0]]
        eff["kind_overhead_us"] = {k: [w, w] for k, (w, _) in eff["kind_overhead_us"].items()}
    if name == "no kind overheads":
        eff["kind_overhead_us"], eff["cold_curve"] = {}, []
    return {**data, "efficiency": eff}


def accuracy_run(run: int, data: dict[str, Any], models: list[str], batch: int = 1) -> None:
    """Per model: time every executed leaf once, then line up each variant's prediction with those times."""
    eff = data["efficiency"]
    half = next((b for b, f in eff["cold_curve"] if f >= 0.5), None)
    where = f"after a GEMM of {half / 2**20:.1f} MiB" if half else "never (up to 12 MiB GEMMs)"
    print(f"run {run} · probe: norm fixed cost {eff['kind_overhead_us']['norm'][0]:.0f} µs warm, "
          f"{eff['kind_overhead_us']['norm'][1]:.0f} µs cold; half cold {where}; outputs of "
          f"{(eff['fresh_alloc_bytes'] or 0) / 2**20:.0f} MiB and more fault at {eff['first_touch_gb_per_s']} GB/s",
          flush=True)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "host.yaml"
        path.write_text(yaml.safe_dump(data))
        hosts = {v: parse_chip(variant(data, v), str(path)) for v in VARIANTS}
        for name in models:
            if name == "encoder":
                model: nn.Module = nn.TransformerEncoder(nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True),
                                                         6, enable_nested_tensor=False).eval()
                x = torch.randn(batch, 128, 512)
                wl = xpusim.analyze(model, x)
                module, margs, kwargs = model, (x,), {}
            else:
                wl = xpusim.analyze(name, batch=batch, dtype="float32")
                built = build(name, batch=batch)
                module, margs, kwargs = materialize(built.module, built.args, dict(built.kwargs), torch.float32)
            timings = time_executed_leaves(module.eval(), margs, kwargs, REPEATS)
            parts = []
            for v in VARIANTS:
                m = line_up(name, roofline(wl, hosts[v]), timings, repeats=REPEATS)
                parts.append(f"{v}: {100 * m.median_abs_error:.0f}% / {100 * m.total_error:+.0f}%")
            faults = "" if timings.faulted_bytes is None else f", {timings.faulted_bytes / 2**20:.1f} MiB faulted"
            print(f"run {run} · {name} batch {batch} ({len(m.layers)} layers, measured {timings.total_s * 1e3:.1f} ms"
                  f"{faults}) · median |layer error| / whole-model error · " + " · ".join(parts), flush=True)


if __name__ == "__main__":
    main()
