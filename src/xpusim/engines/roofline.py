"""The roofline engine: pure functions from (workload, chip, options) to per-op and whole-model estimates.

Per op: compute time = FLOPs / (peak of the unit that runs it, for its dtype × efficiency); memory time =
bytes moved / (bandwidth of the memory level its data lives in × efficiency); time = the larger of the two
(compute and data movement of one op overlap perfectly); the op is *compute-bound* when compute time is the
larger. Whole model: the sum over ops (ops run one after another), with the two bounding cases stated:
no overlap at all (compute + memory per op) and perfect overlap across the whole model (max of the two sums).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from xpusim.hardware.chip import Chip, ChipError
from xpusim.precision import CHIP_DTYPES, chip_dtype_of, element_bytes
from xpusim.workload.model import OpCost, Workload

TENSOR_KINDS = frozenset(("matmul", "conv", "attention", "rnn", "fused"))
"""Op kinds that run on the matrix (tensor) unit; everything else runs on the vector unit."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OpEstimate:
    name: str
    module: str
    kind: str
    unit: str
    """``tensor`` or ``vector``: which peak bounded the compute."""
    dtype: str
    flops: int
    bytes: int
    compute_s: float
    memory_s: float
    energy_j: float
    overhead_s: float = 0.0
    """Fixed per-op cost from the chip file (dispatch/launch), added to the roofline time."""
    memory_level: str = ""
    first_touch_s: float = 0.0
    """Page faults on a fresh output buffer (host chips: outputs the allocator maps anew each time)."""

    @property
    def time_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.overhead_s + self.first_touch_s

    @property
    def term(self) -> str:
        """The largest part of the time: ``compute``, ``memory``, ``fixed cost`` or ``first touch``."""
        return max((self.compute_s, "compute"), (self.memory_s, "memory"), (self.overhead_s, "fixed cost"),
                   (self.first_touch_s, "first touch"))[1]

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0

    @property
    def attainable_flops_per_s(self) -> float:
        return self.flops / self.time_s if self.time_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "unit": self.unit, "dtype": self.dtype, "flops": self.flops,
            "bytes": self.bytes, "intensity": self.intensity, "compute_s": self.compute_s, "memory_s": self.memory_s,
            "time_s": self.time_s, "overhead_s": self.overhead_s, "first_touch_s": self.first_touch_s,
            "memory_level": self.memory_level, "term": self.term,
            "bound": self.bound, "attainable_flops_per_s": self.attainable_flops_per_s,
            "energy_j": self.energy_j,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    """A workload on a chip: per-op estimates plus whole-model metrics."""

    model: str
    chip: Chip
    dtype: str
    batch: int
    ops: tuple[OpEstimate, ...]
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def latency_s(self) -> float:
        """Ops one after another; within an op compute and memory overlap."""
        return sum(o.time_s for o in self.ops)

    @property
    def latency_no_overlap_s(self) -> float:
        return sum(o.compute_s + o.memory_s + o.overhead_s + o.first_touch_s for o in self.ops)

    @property
    def latency_perfect_overlap_s(self) -> float:
        overhead = sum(o.overhead_s + o.first_touch_s for o in self.ops)
        return max(sum(o.compute_s for o in self.ops), sum(o.memory_s for o in self.ops)) + overhead

    @property
    def flops(self) -> int:
        return sum(o.flops for o in self.ops)

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.ops)

    @property
    def throughput_per_s(self) -> float:
        return self.batch / self.latency_s if self.latency_s else 0.0

    @property
    def energy_j(self) -> float:
        """Sum of per-op energies from the per-access table (see `energy_table`)."""
        return sum(o.energy_j for o in self.ops)

    @property
    def energy_tdp_j(self) -> float | None:
        """Upper bound: the chip at its TDP for the whole latency."""
        return self.chip.tdp_w * self.latency_s if self.chip.tdp_w else None

    @property
    def utilization(self) -> float:
        """Achieved FLOP/s over the peak of the model's dtype (best unit)."""
        peak = self.chip.best_peak_flops_per_s(self.dtype) or 0.0
        return self.flops / (self.latency_s * peak) if self.latency_s and peak else 0.0

    @property
    def matrix_share(self) -> float | None:
        """Share of the FLOPs that run on the matrix engine: matrix-shaped ops (matmul, conv, attention, ...) on a
        chip with a matrix-unit peak at their dtype. None without FLOPs."""
        return matrix_share(self.ops)

    def bound_share(self) -> dict[str, float]:
        """Fraction of the latency spent in compute-bound and in memory-bound ops."""
        total = self.latency_s or 1.0
        share = {"compute": 0.0, "memory": 0.0}
        for o in self.ops:
            share[o.bound] += o.time_s / total
        return share

    def cost_usd_per_million(self, price_per_hour_usd: float) -> float:
        """Cost of a million inferences (or of a million of whatever ``batch`` counts) at an hourly price."""
        return price_per_hour_usd / 3600 * self.latency_s / self.batch * 1e6

    def to_dict(self, price_per_hour_usd: float | None = None) -> dict[str, Any]:
        totals: dict[str, Any] = {
            "latency_s": self.latency_s,
            "latency_no_overlap_s": self.latency_no_overlap_s,
            "latency_perfect_overlap_s": self.latency_perfect_overlap_s,
            "throughput_per_s": self.throughput_per_s,
            "flops": self.flops,
            "bytes": self.bytes,
            "achieved_flops_per_s": self.flops / self.latency_s if self.latency_s else 0.0,
            "utilization": self.utilization,
            "energy_j": self.energy_j,
            "energy_tdp_upper_bound_j": self.energy_tdp_j,
            "time_share_by_bound": self.bound_share(),
        }
        if price_per_hour_usd is not None:
            totals["cost_usd_per_million"] = self.cost_usd_per_million(price_per_hour_usd)
        return {
            "model": self.model,
            "chip": self.chip.name,
            "dtype": self.dtype,
            "batch": self.batch,
            "totals": totals,
            "assumptions": list(self.assumptions),
            "layers": [o.to_dict() for o in self.ops],
        }


def matrix_share(ops: Sequence[OpEstimate], weights: Sequence[float] | None = None) -> float | None:
    """FLOP-weighted share of ``ops`` (each counted ``weights[i]`` times) that run on the matrix engine: a
    matrix-shaped kind timed on the ``tensor`` unit (elementwise work timed there for want of a vector peak at its
    dtype does not count)."""
    ws = weights or [1.0] * len(ops)
    total = sum(o.flops * w for o, w in zip(ops, ws, strict=True))
    on_matrix = sum(o.flops * w for o, w in zip(ops, ws, strict=True) if o.unit == "tensor" and o.kind in TENSOR_KINDS)
    return on_matrix / total if total else None


@functools.cache
def energy_table() -> dict[str, Any]:
    """Horowitz ISSCC 2014 (45 nm) per-operation energies, from ``hardware/energy/horowitz-45nm.yaml``."""
    text = (resources.files("xpusim.hardware") / "energy" / "horowitz-45nm.yaml").read_text()
    return dict(yaml.safe_load(text))


def _unit_peak(chip: Chip, kind: str, dtype: str) -> tuple[str, float | None]:
    """The unit an op of ``kind`` runs on and its peak; a missing peak falls back to the other unit."""
    first, second = ("tensor", "vector") if kind in TENSOR_KINDS else ("vector", "tensor")
    for unit in (first, second):
        if (peak := chip.peak_flops_per_s(dtype, unit)) is not None:
            return unit, peak
    if dtype == "tf32":  # a chip without TF32 runs fp32
        return _unit_peak(chip, kind, "fp32")
    if kind not in TENSOR_KINDS and (peak := chip.peak_flops_per_s("fp32", "vector")) is not None:
        return "vector", peak  # elementwise work in a narrow dtype on a chip that only lists fp32 vector rates
    return first, None


def gemm_dims(op: OpCost) -> tuple[int, int, int] | None:
    """(M, N, K) of the GEMM a matmul or convolution amounts to (conv lowered by im2col, per group), else None."""
    shapes = op.input_shapes
    if op.kind == "conv" and op.op.startswith("aten.convolution") and len(shapes) >= 2 and op.output_shape:
        x, w, out = shapes[0], shapes[1], op.output_shape
        if len(x) < 3 or len(w) < 3 or not w[1]:
            return None
        groups = max(x[1] // w[1], 1)
        spatial = math.prod(out[2:])
        return out[0] * spatial, w[0] // groups, w[1] * math.prod(w[2:])
    if op.kind == "matmul":
        mats = [s for s in shapes if len(s) >= 2]
        if len(mats) >= 2:
            a, b = mats[-2], mats[-1]
            return math.prod(a[:-1]), b[-1], a[-1]
    return None


def fresh_output_bytes(op: OpCost) -> int:
    """Bytes of the new buffer an op allocates for its (first) output; 0 for an in-place op (``relu_``), which
    writes into its input."""
    short = op.op.split(".")[1] if op.op.startswith("aten.") else op.op
    if short.endswith("_") or not op.output_shape:
        return 0
    return int(math.prod(op.output_shape) * element_bytes(op.dtype))


def estimate_op(op: OpCost, chip: Chip, *, tf32: bool = False, node_scale: float = 1.0,
                model_weight_bytes: float = 0.0) -> OpEstimate:
    """One op on one chip. On a probed host, activations move at the bandwidth of the level the op's working set
    fits in, weights at the level the whole model's weights fit in (they were last read one forward ago)."""
    dtype = chip_dtype_of(op.dtype, tf32=tf32 and op.kind in TENSOR_KINDS)
    unit, peak = _unit_peak(chip, op.kind, dtype)
    if op.flops and peak is None:
        raise ChipError(f"chip {chip.name} has no peak for {dtype} ({op.name}); it supports {', '.join(chip.dtypes())}")
    eff = chip.efficiency
    compute_eff = 1.0 if eff is None else (eff.tensor_at(op.flops, gemm_dims(op), dtype) if unit == "tensor"
                                           else eff.vector)
    if eff is not None and (rate := eff.kind_tflops.get(op.kind)) is not None and peak:
        compute_eff = min(compute_eff, rate * 1e12 / peak)  # calibrated rate of this kind of op
    mem_eff = 1.0 if eff is None else eff.memory
    nbytes = op.bytes_total
    level = chip.memory_for(nbytes)
    bw = level.bandwidth_bytes_per_s or 0.0
    weight_level = chip.memory_for(model_weight_bytes) if chip.kind == "host" else level
    weight_bw = weight_level.bandwidth_bytes_per_s or bw
    compute_s = op.flops / (peak * compute_eff) if op.flops and peak else 0.0
    act_bytes = nbytes - op.weight_bytes
    memory_s = (act_bytes / bw + op.weight_bytes / weight_bw) / mem_eff if nbytes else 0.0
    table = energy_table()
    mac_pj = table["mac_pj"].get(dtype, table["mac_pj"]["fp32"])
    flop_pj = table["flop_pj"].get(dtype, table["flop_pj"]["fp32"])
    compute_pj = (op.macs * mac_pj + max(op.flops - 2 * op.macs, 0) * flop_pj) * node_scale
    energy_j = (compute_pj + nbytes * table["dram_pj_per_byte"]) * 1e-12
    return OpEstimate(name=op.name, module=op.module, kind=op.kind, unit=unit, dtype=dtype, flops=op.flops,
                      bytes=nbytes, compute_s=compute_s, memory_s=memory_s, energy_j=energy_j,
                      overhead_s=eff.overhead_s(unit) if eff is not None else 0.0, memory_level=level.name,
                      first_touch_s=eff.first_touch_s(fresh_output_bytes(op)) if eff is not None else 0.0)


def with_kind_overheads(ops: tuple[OpEstimate, ...], chip: Chip) -> tuple[OpEstimate, ...]:
    """The ops, in program order, with the fixed cost the chip file measured for their kind: from warm toward
    cold by how big the largest op that ran since that kind last did was (its code and metadata evicted: a norm or
    ReLU right after a big convolution pays most of the cold cost). Kinds without a measurement keep
    ``op_overhead_us``."""
    eff = chip.efficiency
    if eff is None or not eff.kind_overhead_us:
        return ops
    largest_since: dict[str, float] = {}  # per kind, the largest op since it last ran
    out = []
    for e in ops:
        if (cost := eff.kind_overhead_us.get(e.kind)) is not None:
            frac = 1.0 if e.kind not in largest_since else eff.cold_fraction(largest_since[e.kind])
            e = dataclasses.replace(e, overhead_s=(cost[0] + frac * (cost[1] - cost[0])) * 1e-6)
        for kind in largest_since:
            largest_since[kind] = max(largest_since[kind], e.bytes)
        largest_since[e.kind] = 0.0
        out.append(e)
    return tuple(out)


def roofline(wl: Workload, chip: Chip, *, tf32: bool = False, batch: int | None = None) -> Estimate:
    """Estimate every op of ``wl`` on ``chip`` with the roofline model."""
    dtype = chip_dtype_of(wl.dtype, tf32=tf32)
    if dtype in CHIP_DTYPES:
        chip.require_dtype("fp32" if dtype == "tf32" and chip.best_peak_flops_per_s("tf32") is None else dtype)
    table = energy_table()
    node_scale = chip.node_nm / table["node_nm"] if chip.node_nm else 1.0
    model_weights = sum(o.weight_bytes for o in wl.ops)
    ops = with_kind_overheads(tuple(estimate_op(op, chip, tf32=tf32, node_scale=node_scale,
                                                model_weight_bytes=model_weights) for op in wl.ops), chip)
    bw = chip.main_memory
    assumptions = [
        f"peaks: dense {dtype} from the chip file ({chip.compute_source})",
        (f"memory: every byte from {bw.name} at {bw.bandwidth_gb_per_s:g} GB/s ({bw.source})" if chip.kind != "host"
         else "memory: activations at the bandwidth of the smallest probed level the op's working set fits, "
              "weights at the level the whole model's weights fit"),
        "efficiency: " + ("ideal roofline (1.0 of peak and bandwidth)" if chip.efficiency is None
                          else f"from the chip file ({chip.efficiency.source or 'no source given'})"),
        f"energy: Horowitz ISSCC 2014 45 nm per-op table, compute scaled by node "
        f"{chip.node_nm or table['node_nm']:g}/45 nm, DRAM {table['dram_pj_per_byte']} pJ/B unscaled",
        "latency: ops run one after another; within an op compute and memory overlap",
    ]
    if wl.uncounted:
        assumptions.append(f"ops without a cost formula are not timed: {dict(wl.uncounted)}")
    if batch is None:
        batch = wl.input_shapes[0][0] if wl.input_shapes and wl.input_shapes[0] else 1
    return Estimate(model=wl.model, chip=chip, dtype=dtype, batch=batch, ops=ops, assumptions=tuple(assumptions))
