"""Achieved efficiency of GPU kernels, from published measurements (``efficiency/gemm.yaml``: every row with its
source), as the chip's `Efficiency`: what fraction of the datasheet peak a GEMM of a given number of rows reaches,
the fraction of the memory bandwidth that memory-bound kernels reach, and the fraction of peak of fused attention.

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


@functools.cache
def measured_efficiency(chip_name: str) -> Efficiency | None:
    """The chip's measured kernel efficiency, or None when the table has no data for it. GEMMs: the median
    fraction of peak over the profiled projections at each token count M ≥ 128 (compute-bound there), interpolated
    in log M and flat beyond; memory: the median fraction of the bandwidth reached by the M = 1 and 16 GEMMs
    (weight-streaming, memory-bound — what decode does)."""
    gpu = CHIP_GPUS.get(chip_name)
    if gpu is None:
        return None
    rows = [r for r in _rows() if r["kind"] == "gemm" and "vidur" in r["source"] and _gpu(r) == gpu]
    by_m: dict[int, list[float]] = defaultdict(list)
    bandwidth: list[float] = []
    for r in rows:
        if r["m"] >= 128:
            by_m[int(r["m"])].append(float(r["fraction_of_peak"]))
        elif r.get("bandwidth_fraction") is not None:
            bandwidth.append(float(r["bandwidth_fraction"]))
    if not by_m or not bandwidth:
        return None
    curve = [(float(m), statistics.median(v)) for m, v in sorted(by_m.items())]
    attention, attention_source = ATTENTION[gpu]
    return Efficiency(tensor=attention, memory=statistics.median(bandwidth), gemm={"m": curve}, op_overhead_us=0.0,
                      source=f"measured: vidur's {gpu.upper()} fp16 projection GEMMs (M = tokens; "
                             f"{len(rows)} kernels) for GEMMs and memory-bound ops; {attention_source}")


def with_measured_efficiency(chip: Chip) -> tuple[Chip, str]:
    """(the chip with its measured kernel efficiency, a note saying which), or the chip unchanged with a note that
    the roofline is ideal for it."""
    eff = measured_efficiency(chip.name)
    if eff is None:
        return chip, f"no measured kernel efficiency for {chip.name}: the ideal roofline (an upper bound)"
    return chip.model_copy(update={"efficiency": eff}), eff.source
