"""Achieved efficiency of GPU kernels, from published measurements (``efficiency/gemm.yaml``: every row with its
source), as the chip's `Efficiency`: the fixed latency every kernel pays, what fraction of the datasheet peak a GEMM
of a given number of rows reaches, the fraction of the memory bandwidth that memory-bound kernels reach, and the
fraction of peak of fused attention.

Calibration set: microsoft/vidur's profiled projection GEMMs of Llama-2-7B (tp 1) and Llama-2-70B (tp 4) in fp16
at 1 … 4096 tokens on A100 and H100 (kernel times measured with CUDA events), and the FlashAttention-2 and -3 papers'
forward throughput. Nothing here is fitted to the serving results xpusim is validated on
(``benchmarks/data/serving_validation.yaml``).
"""

from __future__ import annotations

import functools
import statistics
from collections import defaultdict
from importlib import resources
from typing import Any

import numpy as np
import yaml

from xpusim.hardware.chip import Chip, Efficiency

CHIP_GPUS = {"a100-sxm-80gb": "a100", "a100-sxm-40gb": "a100", "h100-sxm": "h100"}
"""Which measured GPU a catalog chip takes its kernel efficiency from (vidur files its A100 profiles as "a100")."""

ATTENTION = {"a100": (0.73, "FlashAttention-2 forward on A100: up to 230 TFLOP/s, 73% of peak (Dao 2023, §4.1)"),
             "h100": (0.75, "FlashAttention-3 forward on H100 in fp16: 740 TFLOP/s, 75% of peak (Shah et al. 2024, "
                            "abstract)")}
"""Fused attention's fraction of the tensor peak, from the papers' text (their per-length figures are charts)."""


@functools.cache
def _rows() -> list[dict[str, Any]]:
    text = (resources.files("xpusim.hardware") / "efficiency" / "gemm.yaml").read_text()
    return list(yaml.safe_load(text)["entries"])


def _gpu(row: dict[str, Any]) -> str:
    return str(row["gpu"]).split()[0].split("-")[0]


def fit_kernel_latency(times_s: list[float], ideal_s: list[float]) -> tuple[float, float]:
    """(fixed latency t0 in s, achieved fraction f of the bandwidth) of ``time = t0 + ideal / f`` by least squares,
    where ``ideal`` is each kernel's bytes at the datasheet bandwidth: every kernel pays a launch-and-ramp latency on
    top of streaming its bytes, which is why small kernels reach a lower fraction of the bandwidth than big ones."""
    n = len(times_s)
    if n < 2 or len(ideal_s) != n:
        raise ValueError(f"need >= 2 (time, ideal) pairs of equal length, got {n} and {len(ideal_s)}")
    if len(set(ideal_s)) == 1:
        raise ValueError("the kernels' ideal times are all equal: latency and bandwidth cannot be told apart")
    slope, intercept = np.polyfit(ideal_s, times_s, 1)
    return float(intercept), 1.0 / float(slope)


@functools.cache
def measured_efficiency(chip_name: str) -> Efficiency | None:
    """The chip's measured kernel efficiency, or None when the table has no data for it. Every kernel costs a fixed
    latency plus its roofline time. A GEMM's latency and the bandwidth fraction: the least-squares line of time
    against ideal (datasheet-bandwidth) time over the weight-streaming M = 1 and 16 GEMMs (memory-bound, what decode
    does); any other kernel's latency: the median time of the norm, rotary, activation and add kernels at one token
    (a few KiB: nothing but latency).
    GEMMs: the fraction of peak with that latency taken out, median over the profiled projections at each token
    count M >= 128 (compute-bound there), interpolated in log M and flat beyond."""
    gpu = CHIP_GPUS.get(chip_name)
    if gpu is None:
        return None
    rows = [r for r in _rows() if r["kind"] == "gemm" and "vidur" in r["source"] and _gpu(r) == gpu]
    streaming = [r for r in rows if r["m"] < 128 and r.get("bandwidth_fraction") is not None]
    if len(streaming) < 2:
        return None
    times = [float(r["time_ms"]) * 1e-3 for r in streaming]
    latency_s, bandwidth = fit_kernel_latency(times, [t * float(r["bandwidth_fraction"])
                                                      for t, r in zip(times, streaming, strict=True)])
    by_m: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r["m"] >= 128:
            time_s = float(r["time_ms"]) * 1e-3
            by_m[int(r["m"])].append(min(1.0, float(r["fraction_of_peak"]) * time_s / (time_s - latency_s)))
    if not by_m:
        return None
    curve = [(float(m), statistics.median(v)) for m, v in sorted(by_m.items())]
    small = [float(r["time_ms"]) * 1e3 for r in _rows()
             if r["kind"] == "memory" and "vidur" in r["source"] and _gpu(r) == gpu and r.get("tokens") == 1]
    if not small:
        return None
    attention, attention_source = ATTENTION[gpu]
    return Efficiency(tensor=attention, memory=min(1.0, bandwidth), gemm={"m": curve},
                      op_overhead_us=statistics.median(small), tensor_overhead_us=latency_s * 1e6,
                      source=f"measured: vidur's {gpu.upper()} fp16 projection GEMMs (M = tokens; {len(rows)} kernels):"
                             f" {latency_s * 1e6:.1f} us per GEMM kernel and {bandwidth:.0%} of the bandwidth fitted "
                             f"on the M < 128 ones, GEMM efficiency by M on the rest; "
                             f"{statistics.median(small):.1f} us per other kernel (the median of its {len(small)} "
                             f"norm/rope/activation/add kernels at one token); {attention_source}")


def with_measured_efficiency(chip: Chip) -> tuple[Chip, str]:
    """(the chip with its measured kernel efficiency, a note saying which), or the chip unchanged with a note that
    the roofline is ideal for it."""
    eff = measured_efficiency(chip.name)
    if eff is None:
        return chip, f"no measured kernel efficiency for {chip.name}: the ideal roofline (an upper bound)"
    return chip.model_copy(update={"efficiency": eff}), eff.source
