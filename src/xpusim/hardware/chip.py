"""Chips as data: one YAML file per chip, validated with pydantic; every number carries its source.

File units are the ones datasheets print, named in the keys (``dense_tflops``, ``bandwidth_gb_per_s``,
``capacity_gib``); the model converts them to SI (``peak_flops_per_s``, ``bandwidth_bytes_per_s``, bytes).
"""

from __future__ import annotations

import functools
import itertools
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from xpusim.errors import UserError
from xpusim.names import suggest
from xpusim.precision import CHIP_DTYPES
from xpusim.units import GIB, GIGA, MIB, TERA

Dtype = Literal["fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4"]
Unit = Literal["tensor", "vector"]
UNITS: tuple[str, ...] = ("tensor", "vector")


class ChipError(UserError):
    """A chip name or file that cannot be used; the message names the field, the value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemoryLevel(_Strict):
    """One level of the memory hierarchy (main memory first, then caches/SRAM)."""

    name: str
    capacity_gib: PositiveFloat | None = Field(None, description="Capacity in GiB (main memory).")
    capacity_mib: PositiveFloat | None = Field(None, description="Capacity in MiB (caches, SRAM).")
    bandwidth_gb_per_s: PositiveFloat | None = Field(None, description="Bandwidth in 10^9 B/s; unknown if absent.")
    source: str

    @model_validator(mode="after")
    def _one_capacity(self) -> MemoryLevel:
        if (self.capacity_gib is None) == (self.capacity_mib is None):
            raise ValueError("give exactly one of capacity_gib or capacity_mib")
        return self

    @property
    def capacity_bytes(self) -> float:
        return self.capacity_gib * GIB if self.capacity_gib is not None else (self.capacity_mib or 0) * MIB

    @property
    def bandwidth_bytes_per_s(self) -> float | None:
        return self.bandwidth_gb_per_s * GIGA if self.bandwidth_gb_per_s is not None else None


class Link(_Strict):
    """A chip's link to its peers or host; the bandwidth is both directions added, as datasheets quote it."""

    name: str
    kind: Literal["scale-up", "scale-out", "host"]
    bandwidth_gb_per_s_bidirectional: PositiveFloat
    source: str

    @property
    def bandwidth_bytes_per_s_per_direction(self) -> float:
        return self.bandwidth_gb_per_s_bidirectional * GIGA / 2


class Efficiency(_Strict):
    """Achievable fraction of peak, measured or published; absent means the ideal roofline (1.0)."""

    tensor: list[tuple[PositiveFloat, float]] | float = Field(
        1.0, description="Matrix-unit efficiency: a constant, or [[flops, efficiency], ...] points (log-interpolated)."
    )
    tensor_by_dtype: dict[Dtype, float] = Field(
        default_factory=dict,
        description="Matrix-unit efficiency of one dtype's GEMMs in place of `tensor`, e.g. {fp8: 0.51}: an fp8 GEMM "
                    "reaches a smaller share of its (twice as high) peak than a bf16 one.")
    vector: float = 1.0
    memory: float = 1.0
    op_overhead_us: float = Field(0.0, ge=0, description="Fixed cost per op (dispatch, kernel launch), microseconds.")
    moe_layer_host_ms: float = Field(
        default=0.0, ge=0,
        description="Training: the host's time to launch one mixture-of-experts layer's kernels, forward and "
                    "backward, milliseconds. The dispatcher synchronises the host with the GPU in every MoE layer "
                    "(tokens per expert), so the host cannot run ahead and a layer pass takes at least this long; "
                    "0: not modelled.")
    tensor_overhead_us: float | None = Field(
        None, ge=0, description="Fixed cost per matrix-unit kernel (GEMM, convolution, attention), microseconds; "
                                "absent: op_overhead_us. GPU GEMM libraries pay more than a simple elementwise kernel.")
    gemm: dict[Literal["m", "n", "k"], list[tuple[PositiveFloat, float]]] | None = Field(
        None, description="Matrix-unit efficiency against each GEMM dimension (the other two large): "
                          "{m: [[size, efficiency], ...], n: ..., k: ...}; an op gets the lowest of the three."
    )
    kind_overhead_us: dict[str, tuple[NonNegativeFloat, NonNegativeFloat]] = Field(
        default_factory=dict,
        description="Fixed cost per op of a kind, microseconds: [warm, cold]; between them by cold_curve (host "
                    "chips, measured by xpusim probe).")
    cold_curve: list[tuple[PositiveFloat, float]] = Field(
        default_factory=list,
        description="[[bytes, fraction], ...]: how far from warm (0) to cold (1) an op kind's fixed cost is after an "
                    "op of that many bytes ran since the kind last did (log-interpolated, 0 below the first point, "
                    "flat beyond the last; xpusim probe measures it after square GEMMs); empty: always warm.")
    fresh_alloc_bytes: PositiveInt | None = Field(
        default=None,
        description="Outputs at least this large get fresh pages every time (the allocator maps and unmaps them; "
                    "glibc above its mmap threshold, at most 32 MiB) and pay first touch (host chips, measured by "
                    "xpusim probe); absent: no first-touch term.")
    first_touch_gb_per_s: PositiveFloat | None = Field(
        default=None,
        description="Rate of writing into fresh pages, beyond that of reused ones: page faults, zeroing, "
                    "unmapping (host chips, measured by xpusim probe).")
    kind_tflops: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="Calibrated compute rate (TFLOP/s by xpusim's FLOP counts) per op kind, e.g. pool, norm.",
    )
    source: str = ""

    @model_validator(mode="after")
    def _fractions(self) -> Efficiency:
        values = [e for _, e in self.tensor] if isinstance(self.tensor, list) else [self.tensor]
        values += [e for pts in (self.gemm or {}).values() for _, e in pts] + list(self.tensor_by_dtype.values())
        for v in [*values, self.vector, self.memory]:
            if not 0 < v <= 1:
                raise ValueError(f"efficiency {v} must be in (0, 1]")
        for _, f in self.cold_curve:
            if not 0 <= f <= 1:
                raise ValueError(f"cold_curve fraction {f} must be in [0, 1]")
        if isinstance(self.tensor, list) and not self.tensor:
            raise ValueError("efficiency.tensor points must not be empty")
        return self

    def cold_fraction(self, evicting_bytes: float) -> float:
        """How far toward cold an op kind is after an op of ``evicting_bytes`` ran since it last did."""
        if not self.cold_curve or evicting_bytes < self.cold_curve[0][0]:
            return 0.0
        return _log_interp(self.cold_curve, evicting_bytes)

    def first_touch_s(self, fresh_bytes: int) -> float:
        """Seconds of first touch for an output of ``fresh_bytes``: none below `fresh_alloc_bytes` (reused pages)."""
        if self.fresh_alloc_bytes is None or self.first_touch_gb_per_s is None or fresh_bytes < self.fresh_alloc_bytes:
            return 0.0
        return fresh_bytes / (self.first_touch_gb_per_s * 1e9)

    def overhead_s(self, unit: str) -> float:
        """The fixed cost of one op on ``unit`` ("tensor" or "vector"), seconds."""
        if unit == "tensor" and self.tensor_overhead_us is not None:
            return self.tensor_overhead_us * 1e-6
        return self.op_overhead_us * 1e-6

    def tensor_at(self, flops: float, gemm_mnk: tuple[int, int, int] | None = None, dtype: str = "") -> float:
        """Matrix-unit efficiency: the dtype's own where given, from the GEMM-dimension curves when the op's
        (M, N, K) is known, else from the FLOPs curve."""
        if dtype in self.tensor_by_dtype:
            return self.tensor_by_dtype[dtype]
        if gemm_mnk is not None and self.gemm:
            effs = [_log_interp(self.gemm[axis], dim) for axis, dim in zip("mnk", gemm_mnk, strict=True)
                    if axis in self.gemm]
            if effs:
                return min(effs)
        if not isinstance(self.tensor, list):
            return self.tensor
        return _log_interp(self.tensor, flops)


def _log_interp(points: list[tuple[float, float]], x: float) -> float:
    """Piecewise-linear in log(x) through sorted (x, y) points, flat beyond the ends."""
    pts = sorted(points)
    if x <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x <= x1:
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return pts[-1][1]


class Chip(_Strict):
    """One accelerator (or a CPU/host), as in its datasheet."""

    @classmethod
    def from_yaml(cls, path: str | Path) -> Chip:
        """A chip file (``.yaml``/``.yml``/``.json``) or catalog name, validated; `ChipError` names the field."""
        return load_chip(path)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    title: str
    vendor: str
    kind: Literal["gpu", "tpu", "npu", "cpu", "host"]
    year: int | None = None
    process: str | None = None
    node_nm: PositiveFloat | None = Field(None, description="Nominal feature size, for energy scaling.")
    tdp_w: PositiveFloat | None = None
    tdp_source: str | None = None
    price_usd: PositiveFloat | None = None
    usd_per_hour: PositiveFloat | None = Field(
        None, description="On-demand cloud price of one chip for one hour (the provider's price includes power).")
    usd_per_hour_source: str | None = None
    dense_tflops: dict[Unit, dict[Dtype, PositiveFloat]] = Field(
        description="Dense peak in TFLOP/s (TOP/s for integers) per unit and dtype; no 2:4-sparsity figures."
    )
    compute_source: str
    memory: list[MemoryLevel] = Field(min_length=1)
    links: list[Link] = []
    efficiency: Efficiency | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Chip:
        if not any(self.peaks_tflops(u) for u in UNITS):
            raise ValueError("dense_tflops needs at least one peak under tensor or vector")
        if self.memory[0].bandwidth_gb_per_s is None:
            raise ValueError("memory[0] (main memory) needs bandwidth_gb_per_s")
        return self

    @property
    def main_memory(self) -> MemoryLevel:
        return self.memory[0]

    def peaks_tflops(self, unit: str) -> dict[str, float]:
        """The datasheet peaks of one unit, by dtype (empty when the chip lists none)."""
        table: dict[str, dict[str, float]] = self.dense_tflops  # type: ignore[assignment]
        return table.get(unit, {})

    def dtypes(self) -> list[str]:
        return [d for d in CHIP_DTYPES if any(d in self.peaks_tflops(u) for u in UNITS)]

    def peak_flops_per_s(self, dtype: str, unit: str = "tensor") -> float | None:
        """Dense peak of ``unit`` for ``dtype`` (None if the datasheet gives none)."""
        tflops = self.peaks_tflops(unit).get(dtype)
        return tflops * TERA if tflops is not None else None

    def best_peak_flops_per_s(self, dtype: str) -> float | None:
        peaks = [p for u in UNITS if (p := self.peak_flops_per_s(dtype, u)) is not None]
        return max(peaks) if peaks else None

    def require_dtype(self, dtype: str) -> None:
        if dtype not in CHIP_DTYPES:
            raise ChipError(f"dtype {dtype!r} is not one of {', '.join(CHIP_DTYPES)}")
        if self.best_peak_flops_per_s(dtype) is None:
            raise ChipError(f"chip {self.name} has no {dtype} peak; it supports {', '.join(self.dtypes())}")

    def ridge_point(self, dtype: str, level: int = 0) -> float | None:
        """FLOPs per byte where compute time equals memory time (best unit's peak / level bandwidth)."""
        peak, bw = self.best_peak_flops_per_s(dtype), self.memory[level].bandwidth_bytes_per_s
        return peak / bw if peak and bw else None

    def flops_per_watt(self, dtype: str) -> float | None:
        peak = self.best_peak_flops_per_s(dtype)
        return peak / self.tdp_w if peak and self.tdp_w else None

    def memory_for(self, working_set_bytes: float) -> MemoryLevel:
        """The level an op's data is read from: main memory, except on a probed host, where it is the smallest
        level (with a measured bandwidth) that holds the op's whole working set."""
        if self.kind != "host":
            return self.main_memory
        fitting = [m for m in self.memory if m.bandwidth_gb_per_s and m.capacity_bytes >= working_set_bytes]
        return min(fitting, key=lambda m: m.capacity_bytes) if fitting else self.main_memory

    def scale_up_link(self) -> Link | None:
        return next((link for link in self.links if link.kind == "scale-up"), None)


def _chip_dir() -> Any:
    return resources.files("xpusim.hardware") / "chips"


@functools.cache
def catalog_names() -> tuple[str, ...]:
    return tuple(sorted(e.name.removesuffix(".yaml") for e in _chip_dir().iterdir() if e.name.endswith(".yaml")))


@functools.cache
def sources() -> dict[str, str]:
    """Source tag -> where the number comes from (``hardware/sources.yaml``)."""
    data = yaml.safe_load((resources.files("xpusim.hardware") / "sources.yaml").read_text())
    return dict(data)


def _format_validation(origin: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(file)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        parts.append(f"{loc}{shown}: {err['msg']}")
    more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return f"chip file {origin}: " + "; ".join(parts) + more


def parse_chip(data: Any, origin: str) -> Chip:
    if not isinstance(data, dict):
        raise ChipError(f"chip file {origin}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return Chip.model_validate(data)
    except ValidationError as exc:
        raise ChipError(_format_validation(origin, exc)) from None


@functools.cache
def _load_builtin(name: str) -> Chip:
    text = (_chip_dir() / f"{name}.yaml").read_text()
    return parse_chip(yaml.safe_load(text), f"{name}.yaml")


def read_user_yaml(text: str, kind: str, error: type[ValueError]) -> Any | None:
    """The data of a user's ``.yaml``/``.yml``/``.json`` file (``kind`` names it in errors), or None when
    ``text`` is not such a path. ``safe_load``: data, never code."""
    path = Path(text)
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        if path.suffix and path.is_file():
            raise error(f"{text!r} is a file but not a {kind} file: {kind} files are .yaml, .yml or .json")
        return None
    if not path.is_file():
        raise error(f"{kind} file {text!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise error(f"{kind} file {text}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_chip(spec: str | Path | Chip) -> Chip:
    """A catalog name (``a100-sxm-80gb``) or the path of a chip file (``.yaml``/``.yml``/``.json``); a `Chip` is
    returned as is."""
    if isinstance(spec, Chip):
        return spec
    text = str(spec)
    if text in catalog_names():
        return _load_builtin(text)
    data = read_user_yaml(text, "chip", ChipError)
    if data is not None or Path(text).suffix.lower() in (".yaml", ".yml", ".json"):
        return parse_chip(data, text)
    close = suggest(text, catalog_names())
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ChipError(f"unknown chip {text!r}.{hint} Run 'xpusim chips' for the catalog, or give a chip .yaml file.")


def all_chips() -> list[Chip]:
    return [_load_builtin(n) for n in catalog_names()]
