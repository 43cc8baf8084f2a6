"""Predicted vs measured: run a model for real on this CPU, time every leaf module, compare with the roofline.

Per executed leaf (a module that ran while none of its children did: a conv, a linear, a norm — or a whole
encoder layer on PyTorch's fused fast path), the prediction is the sum of the estimated times of the ops that
module and its children issued; the measurement is the median wall time of its forward over
repeated runs (forward hooks, perf_counter; CPU ops are synchronous). The whole model is timed separately,
without hooks. Ops a container issues itself (a residual add in a block's forward) count only in the total.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from xpusim.engines.roofline import Estimate
from xpusim.hardware.probe import minor_faults, page_bytes
from xpusim.precision import capture_dtype, torch_dtype
from xpusim.workload.api import materialize
from xpusim.workload.zoo import build

MEASURABLE_DTYPES = ("fp32", "tf32", "bf16", "fp16")
"""Chip dtypes a model can be run in on this CPU to be timed (integer and fp8 kernels are not timed here)."""


@dataclass(frozen=True, kw_only=True)
class LayerTiming:
    module: str
    predicted_s: float
    measured_s: float
    term: str = ""
    """The largest predicted part of the layer's time (`OpEstimate.term`, summed over its ops)."""

    @property
    def error(self) -> float:
        """Relative error of the prediction: predicted / measured − 1."""
        return self.predicted_s / self.measured_s - 1 if self.measured_s else float("inf")


@dataclass(frozen=True, kw_only=True)
class Measured:
    model: str
    chip: str
    threads: int
    repeats: int
    layers: tuple[LayerTiming, ...]
    predicted_total_s: float
    measured_total_s: float
    faulted_bytes: int | None = None
    """Page-faulted bytes per plain forward, measured (median; None where the OS does not count faults)."""
    fresh_bytes: int = 0
    """Bytes of the outputs the model charged first touch for (those the allocator maps anew every time)."""

    @property
    def median_abs_error(self) -> float:
        return statistics.median(abs(t.error) for t in self.layers) if self.layers else 0.0

    @property
    def total_error(self) -> float:
        return self.predicted_total_s / self.measured_total_s - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "chip": self.chip, "threads": self.threads, "repeats": self.repeats,
            "predicted_total_s": self.predicted_total_s, "measured_total_s": self.measured_total_s,
            "total_error": self.total_error, "median_abs_layer_error": self.median_abs_error,
            "faulted_bytes": self.faulted_bytes, "fresh_bytes": self.fresh_bytes,
            "layers": [{"module": t.module, "predicted_s": t.predicted_s, "measured_s": t.measured_s,
                        "error": t.error, "term": t.term} for t in self.layers],
        }


@dataclass(frozen=True, kw_only=True)
class Timings:
    leaves_s: dict[str, float]
    """Median time of every executed leaf module."""
    total_s: float
    """Median time of the whole model, timed without hooks."""
    faulted_bytes: int | None = None
    """Median page-faulted bytes of a plain forward (None where the OS does not count faults)."""


def time_executed_leaves(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                         repeats: int) -> Timings:
    """Median forward time of every *executed leaf* (a module that ran while none of its children did: a conv,
    or a whole encoder layer when PyTorch's fused fast path skips its children), and of the whole model
    (timed without hooks, its page faults counted)."""
    names = {id(m): n for n, m in module.named_modules() if n}
    samples: dict[str, list[float]] = defaultdict(list)
    current: dict[str, float] = {}
    stack: list[tuple[int, float, bool]] = []  # (module id, start time, a child ran)

    def pre(mod: torch.nn.Module, _: Any) -> None:
        if stack:
            mid, start, _child = stack[-1]
            stack[-1] = (mid, start, True)
        stack.append((id(mod), time.perf_counter(), False))

    def post(mod: torch.nn.Module, _: Any, __: Any) -> None:
        if not stack:
            return
        mid, start, child_ran = stack.pop()
        name = names.get(mid)
        if name is not None and not child_ran:
            current[name] = current.get(name, 0.0) + time.perf_counter() - start

    with torch.no_grad():
        module(*args, **kwargs)  # warm-up: allocator, oneDNN primitive caches
        totals, faults = [], []
        for _ in range(repeats):
            f0 = minor_faults()
            t0 = time.perf_counter()
            module(*args, **kwargs)
            totals.append(time.perf_counter() - t0)
            if f0 is not None:
                faults.append(((minor_faults() or f0) - f0) * page_bytes())
        h1 = torch.nn.modules.module.register_module_forward_pre_hook(pre)
        h2 = torch.nn.modules.module.register_module_forward_hook(post, always_call=True)
        try:
            for _ in range(repeats):
                current.clear()
                stack.clear()
                module(*args, **kwargs)
                for name, t in current.items():
                    samples[name].append(t)
        finally:
            h1.remove()
            h2.remove()
    return Timings(leaves_s={n: statistics.median(ts) for n, ts in samples.items()}, total_s=statistics.median(totals),
                   faulted_bytes=int(statistics.median(faults)) if faults else None)


def compare_measured(model: str, est: Estimate, *, batch: int = 1, input_shape: tuple[int, ...] | None = None,
                     seq_len: int | None = None, repeats: int = 5) -> Measured:
    """Build ``model`` with real random weights, time it on this CPU, and line it up with ``est``."""
    dtype = torch_dtype(capture_dtype(est.dtype)) if est.dtype in MEASURABLE_DTYPES else None
    if dtype is None:
        raise ValueError(f"--measure runs {est.dtype} models only as fp32, bf16 or fp16 on this CPU")
    built = build(model, batch=batch, input_shape=input_shape, seq_len=seq_len)
    module, args, kwargs = materialize(built.module, built.args, dict(built.kwargs), dtype)
    return compare_measured_module(model, module, args, kwargs, est, repeats=repeats)


def compare_measured_module(name: str, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                            est: Estimate, *, repeats: int = 5) -> Measured:
    """Time a ready (real-weight) module on this CPU and line it up with ``est``."""
    return line_up(name, est, time_executed_leaves(module.eval(), args, kwargs, repeats), repeats=repeats)


def _charged_fresh_bytes(est: Estimate) -> int:
    eff = est.chip.efficiency
    rate = eff.first_touch_gb_per_s if eff is not None else None
    return round(sum(o.first_touch_s for o in est.ops) * rate * 1e9) if rate else 0


def line_up(name: str, est: Estimate, timings: Timings, *, repeats: int) -> Measured:
    """Predicted (``est``) next to measured (`time_executed_leaves`' leaf and whole-model times)."""
    layers = []
    for module_name, t in timings.leaves_s.items():  # not `name`: that is the model's, reported below
        ops = [o for o in est.ops if o.module == module_name or o.module.startswith(module_name + ".")]
        pred = sum(o.time_s for o in ops)
        if pred:
            parts = {"compute": 0.0, "memory": 0.0, "fixed cost": 0.0, "first touch": 0.0}
            for o in ops:
                parts[o.term] += o.time_s
            layers.append(LayerTiming(module=module_name, predicted_s=pred, measured_s=t,
                                      term=max(parts, key=parts.__getitem__)))
    return Measured(model=name, chip=est.chip.name, threads=torch.get_num_threads(), repeats=repeats,
                    layers=tuple(layers), predicted_total_s=est.latency_s, measured_total_s=timings.total_s,
                    faulted_bytes=timings.faulted_bytes, fresh_bytes=_charged_fresh_bytes(est))
