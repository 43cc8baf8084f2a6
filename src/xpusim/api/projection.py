"""What a compressed model buys on a chip: its ops at the new widths through the roofline engine.

The model is captured once in float32 (``xpusim.workload``); each variant rewrites the ops' dtype and bytes:
weights at the stored bits, activations at 8 bits when they are quantized (else 16 for weight-only formats, which
dequantize into a 16-bit matmul), compute on the matching peak (int8 for WxA8, fp8 for FP8, bf16/fp16, fp32).
Structurally pruned models are captured as they are (fewer MACs); masks are costed dense (NB: the roofline has
no sparse-tensor-core speedup for 2:4).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xpusim import precision
from xpusim.compress.api import capture_any
from xpusim.compress.variants import Variant
from xpusim.engines.npu import NpuConfig, array_share, lower_workload
from xpusim.engines.npu import simulate as npu_simulate
from xpusim.engines.roofline import roofline
from xpusim.hardware.chip import ChipError, load_chip


def compute_dtype(v: Variant | None) -> tuple[str, int, int]:
    """(torch-style compute dtype, weight bits, activation bits) a variant runs with."""
    if v is None:
        return "float32", 32, 32
    if v.kind == "float":  # tf32 stores and moves fp32; the others are their own torch dtypes
        name = "float32" if v.float_format == "tf32" else precision.torch_dtype_name(v.float_format)
        bits = int(8 * precision.element_bytes(name))
        return name, bits, bits
    if v.kind == "uniform" and v.act_bits:
        return "int8", v.weight_bits, 8
    return "float16", v.weight_bits, 16  # weight-only: dequantize into a 16-bit matmul


def project(model: nn.Module, example: torch.Tensor, variant: Variant | None, chips: list[str],
            batch: int) -> dict[str, dict[str, float | str | None]]:
    """Latency and energy per inference batch on each chip (roofline, ideal efficiency)."""
    if not chips:
        return {}
    x = example.expand(batch, *example.shape[1:]) if example.shape[0] == 1 else example
    wl = capture_any(model, x)
    dtype, wb, ab = compute_dtype(variant)
    wl = wl.retyped(dtype, wb, ab)
    out: dict[str, dict[str, float | str | None]] = {}
    for name in chips:
        chip = load_chip(name)
        try:
            est = roofline(wl, chip, tf32=variant is not None and variant.float_format == "tf32", batch=batch)
        except ChipError as exc:  # e.g. FP8 on a chip without an FP8 peak
            out[chip.name] = {"latency_s": None, "energy_j": None, "dtype": dtype, "note": str(exc)}
            continue
        out[chip.name] = {"latency_s": est.latency_s, "energy_j": est.energy_j, "dtype": est.dtype,
                          "matrix_share": est.matrix_share}
    return out


def npu_word(v: Variant | None) -> tuple[str, int]:
    """(NPU word type, MACs per PE) for a variant: int8 words for WxA8 (the array's word is the widest operand,
    the 8-bit activations), 8-bit float words for FP8, 16-bit words when a weight-only format dequantizes, fp32
    for the float model."""
    if v is None:
        return "fp32", 1
    if v.kind == "float":  # the array's word: TF32 multiplies run on fp32 words here
        return ("fp32" if v.float_format == "tf32" else precision.chip_dtype_name(v.float_format)), 1
    if v.kind == "uniform" and v.act_bits:
        return "int8", 1
    return "fp16", 1


def project_npu(model: nn.Module, example: torch.Tensor, variant: Variant | None, array: tuple[int, int],
                batch: int, sparsity: tuple[int, int] | None = None) -> dict[str, float | str | None]:
    """Cycles, latency and energy on a rows × cols systolic array (``xpusim npu``'s engine, best dataflow per
    layer), at the variant's word width; N:M masks are skipped when ``sparsity`` says the array can."""
    x = example.expand(batch, *example.shape[1:]) if example.shape[0] == 1 else example
    layers, _ = lower_workload(capture_any(model, x))
    word, per_pe = npu_word(variant)
    cfg = NpuConfig(rows=array[0], cols=array[1], dtype=word, macs_per_pe=per_pe, sparsity=sparsity)
    run = npu_simulate(layers, cfg, "auto")
    return {"latency_s": run.time_s, "energy_j": run.energy_j, "dtype": word, "cycles": run.total_cycles,
            "matrix_share": array_share(layers)}


def projector(chips: list[str], batch: int, array: tuple[int, int] | None = None):  # type: ignore[no-untyped-def]
    """A `xpusim.compress.api.Projector` onto ``chips`` (roofline) and, given ``array``, a systolic NPU."""

    def run(model: nn.Module, example: torch.Tensor, variant: Variant | None,
            sparsity: tuple[int, int] | None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = dict(project(model, example, variant, chips, batch))
        if array is not None:
            out[f"npu-{array[0]}x{array[1]}"] = project_npu(model, example, variant, array, batch, sparsity)
        return out

    return run
