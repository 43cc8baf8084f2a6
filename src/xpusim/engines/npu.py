"""A systolic-array NPU: GEMM lowering, output/weight/input-stationary dataflows, SRAM/DRAM traffic, energy.

Analytical, not cycle-by-cycle: every count below is a closed form over the layer's GEMM dimensions, so a whole
ResNet-50 takes milliseconds.

**Lowering.** A convolution is a GEMM per group by im2col: M = batch × output pixels, K = Cin/groups × Fh × Fw,
N = Cout/groups; a depthwise convolution is Cin GEMMs of N = 1. Linear, matmul, bmm and attention products are
GEMMs directly (bmm: one GEMM per batch entry).

**Dataflows** (one implementation, three mappings of (M, N, K) onto array rows, array columns and time):

========= =========== =========== =========== ======================
dataflow   rows (S_r)  cols (S_c)  time (T)    stationary operand
========= =========== =========== =========== ======================
os         M           N           K           outputs (partial sums)
ws         K           N           M           filter (weights)
is         K           M           N           ifmap (inputs)
========= =========== =========== =========== ======================

folds = ⌈S_r/R⌉ · ⌈S_c/C⌉; cycles per fold = T + R + C − 2 (the skew to fill and drain a diagonal wavefront)
plus R more for ws/is, which preload the stationary operand row by row. Stall-free compute cycles = folds × per
fold − 1: the convention of SCALE-Sim's "Total Cycles" (its first cycle is numbered 0).

**Memory.** Double-buffered ifmap/filter/ofmap SRAMs: an operand is fetched from DRAM once if it fits in half of
its SRAM (the other half prefetches); otherwise it is re-fetched once per fold of the array dimension that does
not index it. DRAM reads of the ifmap count each input element once (overlapping windows reuse it on chip: the
unique input, not the im2col matrix). Partial sums stay on chip when the output tile fits the ofmap SRAM; else
they spill (written and read back once per extra fold). Stalls: with double buffering, DRAM transfers overlap
compute; a layer stalls when its DRAM bytes need more cycles at the given bandwidth than the compute takes, plus
the first tile, which nothing can hide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from xpusim.engines.roofline import energy_table
from xpusim.errors import UserError
from xpusim.precision import CHIP_DTYPE_BITS, element_bytes
from xpusim.units import GIGA, KIB, TERA

DATAFLOWS = ("os", "ws", "is")
NPU_DTYPES: tuple[str, ...] = ("int4", "int8", "fp8", "fp16", "bf16", "fp32")
"""Word sizes the array computes in (bits per word from `xpusim.precision.CHIP_DTYPE_BITS`)."""

DEFAULT_SRAM_KIB: tuple[int, int, int] = (6144, 6144, 2048)
"""Default (ifmap, filter, ofmap) SRAM sizes in KiB: SCALE-Sim's TPU-v1-like ``configs/google.cfg``
(``IfmapSramSzkB 6144``, ``FilterSramSzkB 6144``, ``OfmapSramSzkB 2048``; tag S-scalesim-google)."""
DEFAULT_DRAM_WORDS_PER_CYCLE = 10
"""Default DRAM bandwidth in words per cycle: ``Bandwidth : 10`` of the same ``google.cfg`` (S-scalesim-google);
bytes per cycle for the default 1-byte int8 words."""
DEFAULT_CLOCK_HZ = 1.0 * GIGA
"""NB: an assumption, not a datasheet number: 1 GHz, so cycles read as nanoseconds (SCALE-Sim has no clock)."""


class NpuError(UserError):
    """An NPU configuration or layer that cannot be simulated; the message says what is allowed."""


def _energy(key: str) -> float:
    return float(energy_table()[key])


@dataclass(frozen=True, kw_only=True)
class EnergyTable:
    """Energy per access in pJ. Defaults: the project's energy table, ``hardware/energy/horowitz-45nm.yaml``
    (Horowitz ISSCC 2014, 45 nm); see `horowitz_energy`."""

    mac_pj: float
    """One multiply-accumulate at the array's word size."""
    sram_pj_per_byte: float = field(default_factory=lambda: _energy("sram_pj_per_byte"))
    """8 KB SRAM, 10 pJ per 64-bit read (1.25 pJ/B)."""
    dram_pj_per_byte: float = field(default_factory=lambda: _energy("dram_pj_per_byte"))
    """DRAM, 1.3 nJ per 64-bit access, the low end of Horowitz's 1.3–2.6 nJ (162.5 pJ/B)."""
    rf_pj_per_mac: float = field(default_factory=lambda: _energy("rf_pj_per_mac"))
    """Register-file traffic per MAC inside the PE (not in the Horowitz table; 0 unless you give one)."""
    vector_op_mac_fraction: float = field(default_factory=lambda: _energy("vector_op_mac_fraction"))
    """Energy of one vector-unit op as a fraction of a MAC at the same word size (NB: an assumption, 0.5)."""
    source: str = field(default_factory=lambda: str(energy_table()["name"]))
    """Where the numbers come from (reported as ``energy_source``)."""


def horowitz_energy(dtype: str) -> EnergyTable:
    """The energy table at word size ``dtype``: MAC energy from ``mac_pj`` of the energy file, the rest its
    defaults."""
    return EnergyTable(mac_pj=float(energy_table()["mac_pj"][dtype]))


@dataclass(frozen=True, kw_only=True)
class NpuConfig:
    """The accelerator: a rows × cols array of MAC PEs, three double-buffered SRAMs and a DRAM link."""

    rows: int
    cols: int
    ifmap_sram_bytes: int = DEFAULT_SRAM_KIB[0] * KIB
    filter_sram_bytes: int = DEFAULT_SRAM_KIB[1] * KIB
    ofmap_sram_bytes: int = DEFAULT_SRAM_KIB[2] * KIB
    dram_bytes_per_cycle: float = float(DEFAULT_DRAM_WORDS_PER_CYCLE)
    dtype: str = "int8"
    clock_hz: float = DEFAULT_CLOCK_HZ
    macs_per_pe: int = 1
    """Low-bit packing: MACs one PE does per cycle (e.g. 2 int4 MACs in an int8 PE)."""
    sparsity: tuple[int, int] | None = None
    """N:M structured sparsity the hardware skips (N non-zeros in every M weights along K), e.g. (2, 4)."""
    vector_ops_per_cycle: int = 0
    """Throughput of the vector unit for non-GEMM layers (0: cols, one lane per array column)."""
    dram_per_operand: bool = False
    """True: ifmap, filter and ofmap each have their own DRAM channel of ``dram_bytes_per_cycle`` (SCALE-Sim's
    interface); False: one shared link."""
    energy: EnergyTable | None = None

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise NpuError(f"array {self.rows}x{self.cols}: rows and cols must be >= 1")
        for name in ("ifmap_sram_bytes", "filter_sram_bytes", "ofmap_sram_bytes"):
            if getattr(self, name) <= 0:
                raise NpuError(f"{name}={getattr(self, name)} must be > 0")
        if self.dram_bytes_per_cycle <= 0:
            raise NpuError(f"dram_bytes_per_cycle={self.dram_bytes_per_cycle} must be > 0")
        if self.dtype not in NPU_DTYPES:
            raise NpuError(f"dtype {self.dtype!r} is not one of {', '.join(NPU_DTYPES)}")
        if self.macs_per_pe < 1:
            raise NpuError(f"macs_per_pe={self.macs_per_pe} must be >= 1")
        if self.sparsity is not None:
            n, m = self.sparsity
            if not 0 < n <= m:
                raise NpuError(f"sparsity {n}:{m}: need 0 < N <= M")
        if self.clock_hz <= 0:
            raise NpuError(f"clock_hz={self.clock_hz} must be > 0")
        tile = math.ceil(2 * self.rows * self.cols * self.word_bytes)  # one rows x cols tile in each buffer half
        for name in ("ifmap_sram_bytes", "filter_sram_bytes", "ofmap_sram_bytes"):
            if getattr(self, name) < tile:
                raise NpuError(f"{name}={getattr(self, name)} is too small for one {self.rows}x{self.cols} tile of "
                               f"{self.dtype} words: double buffering needs at least {tile} bytes")

    @property
    def word_bytes(self) -> float:
        return CHIP_DTYPE_BITS[self.dtype] / 8

    @property
    def energy_table(self) -> EnergyTable:
        return self.energy or horowitz_energy(self.dtype)

    @property
    def vector_lanes(self) -> int:
        return self.vector_ops_per_cycle or self.cols


@dataclass(frozen=True, kw_only=True)
class GemmLayer:
    """One layer as ``groups`` independent GEMMs of (M × K) · (K × N)."""

    name: str
    m: int
    n: int
    k: int
    groups: int = 1
    ifmap_unique_elems: int | None = None
    """Distinct input elements (a conv's input tensor): DRAM reads of the ifmap count each once. None: M × K."""
    weight_density: float = 1.0
    """Fraction of non-zero weights (measured unstructured sparsity); used when the hardware skips zeros."""

    def __post_init__(self) -> None:
        for f in ("m", "n", "k", "groups"):
            if getattr(self, f) < 1:
                raise NpuError(f"layer {self.name}: {f}={getattr(self, f)} must be >= 1")

    @property
    def macs(self) -> int:
        return self.groups * self.m * self.n * self.k


@dataclass(frozen=True, kw_only=True)
class Traffic:
    ifmap: float = 0.0
    filter: float = 0.0
    ofmap: float = 0.0

    def total(self) -> float:
        return self.ifmap + self.filter + self.ofmap

    def to_dict(self) -> dict[str, float]:
        return {"ifmap": self.ifmap, "filter": self.filter, "ofmap": self.ofmap}


@dataclass(frozen=True, kw_only=True)
class LayerResult:
    name: str
    m: int
    n: int
    k: int
    groups: int
    dataflow: str
    macs: int
    compute_cycles: int
    stall_cycles: int
    mapping_efficiency: float
    sram_reads: Traffic
    sram_writes: Traffic
    dram_reads: Traffic
    dram_writes: Traffic
    energy_pj: float
    kind: str = "gemm"
    scalesim: dict[str, Any] | None = None
    """SCALE-Sim inputs in USER mode: its memory model's own counts (stalls, DRAM words, prefetches)."""

    @property
    def total_cycles(self) -> int:
        return self.compute_cycles + self.stall_cycles

    def utilization(self, cfg: NpuConfig) -> float:
        return self.macs / (cfg.rows * cfg.cols * cfg.macs_per_pe * self.total_cycles) if self.total_cycles else 0.0

    def to_dict(self, cfg: NpuConfig) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "M": self.m, "N": self.n, "K": self.k, "groups": self.groups,
            "dataflow": self.dataflow, "macs": self.macs, "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles, "total_cycles": self.total_cycles,
            "utilization": self.utilization(cfg), "mapping_efficiency": self.mapping_efficiency,
            "sram_reads": self.sram_reads.to_dict(), "sram_writes": self.sram_writes.to_dict(),
            "dram_reads": self.dram_reads.to_dict(), "dram_writes": self.dram_writes.to_dict(),
            "energy_j": self.energy_pj * 1e-12,  # pJ -> J
        } | ({"scalesim": self.scalesim} if self.scalesim is not None else {})


def spatio_temporal(dataflow: str, m: int, n: int, k: int) -> tuple[int, int, int]:
    """(S_r, S_c, T): which GEMM dimension goes on array rows, array columns and time."""
    if dataflow == "os":
        return m, n, k
    if dataflow == "ws":
        return k, n, m
    if dataflow == "is":
        return k, m, n
    raise NpuError(f"unknown dataflow {dataflow!r}; use one of {', '.join(DATAFLOWS)} or auto")


def compute_cycles(dataflow: str, m: int, n: int, k: int, rows: int, cols: int) -> tuple[int, int, float]:
    """(stall-free cycles in SCALE-Sim's convention, folds, mapping efficiency) of one GEMM."""
    s_r, s_c, t = spatio_temporal(dataflow, m, n, k)
    row_folds, col_folds = math.ceil(s_r / rows), math.ceil(s_c / cols)
    folds = row_folds * col_folds
    preload = 0 if dataflow == "os" else rows
    per_fold = t + preload + rows + cols - 2
    mapping = (s_r * s_c) / (row_folds * rows * col_folds * cols)
    return folds * per_fold - 1, folds, mapping


def simulate_gemm(layer: GemmLayer, cfg: NpuConfig, dataflow: str) -> LayerResult:
    """One layer on the array with one dataflow: cycles, SRAM/DRAM traffic per operand, stalls, energy."""
    k_eff = layer.k
    filter_density = 1.0
    if cfg.sparsity is not None:  # N:M along K: the array skips the pruned weights
        n_keep, m_block = cfg.sparsity
        k_eff = math.ceil(layer.k * n_keep / m_block)
        filter_density = n_keep / m_block
    elif layer.weight_density < 1.0:
        filter_density = layer.weight_density
        k_eff = max(1, math.ceil(layer.k * layer.weight_density))
    m, n, k, g = layer.m, layer.n, k_eff, layer.groups
    rows, cols = cfg.rows, cfg.cols * cfg.macs_per_pe  # packed low-bit MACs widen each PE column
    cycles_one, _, mapping = compute_cycles(dataflow, m, n, k, rows, cols)
    compute = g * (cycles_one + 1) - 1

    s_r, s_c, _ = spatio_temporal(dataflow, m, n, k)
    row_dim, col_dim = {"os": ("m", "n"), "ws": ("k", "n"), "is": ("k", "m")}[dataflow]
    folds_along = {row_dim: math.ceil(s_r / rows), col_dim: math.ceil(s_c / cols)}
    w = cfg.word_bytes

    # SRAM -> array: every operand element enters the array once per fold that does not index it.
    def refetch(op_dims: tuple[str, ...]) -> int:
        return math.prod(f for d, f in folds_along.items() if d not in op_dims)

    ifmap_elems = m * k
    filter_elems = k * n
    ofmap_elems = m * n
    sram_reads = Traffic(ifmap=g * ifmap_elems * refetch(("m", "k")) * w,
                         filter=g * filter_elems * refetch(("k", "n")) * w)
    k_passes = refetch(("m", "n"))  # partial-sum passes over the output
    sram_writes = Traffic(ofmap=g * ofmap_elems * k_passes * w)
    sram_reads = replace(sram_reads, ofmap=g * ofmap_elems * (k_passes - 1) * w)

    # DRAM <-> SRAM: once when an operand fits half of its (double-buffered) SRAM, else once per refetch.
    unique_ifmap = layer.ifmap_unique_elems if layer.ifmap_unique_elems is not None else g * ifmap_elems
    ifmap_bytes, filter_bytes = unique_ifmap * w, g * filter_elems * w
    if cfg.sparsity is not None:  # compressed weights plus one index per kept weight (log2 M bits)
        n_keep, m_block = cfg.sparsity
        filter_bytes = g * layer.k * n * filter_density * w * (1 + math.log2(m_block) / (8 * w))
    ofmap_bytes = g * ofmap_elems * w
    dram_reads = Traffic(
        ifmap=ifmap_bytes * (1 if ifmap_bytes <= cfg.ifmap_sram_bytes / 2 else refetch(("m", "k"))),
        filter=filter_bytes * (1 if filter_bytes <= cfg.filter_sram_bytes / 2 else refetch(("k", "n"))),
    )
    spill = k_passes > 1 and (rows * cols * w if dataflow == "os" else ofmap_bytes / g) > cfg.ofmap_sram_bytes / 2
    dram_writes = Traffic(ofmap=ofmap_bytes * (k_passes if spill else 1))
    dram_reads = replace(dram_reads, ofmap=ofmap_bytes * (k_passes - 1) if spill else 0.0)

    # Stalls: transfers overlap compute (double buffering) except the first tile of each input operand.
    dram_total = dram_reads.total() + dram_writes.total()
    first_tile = (min(ifmap_bytes, rows * k * w) + min(filter_bytes, k * cols * w))
    if cfg.dram_per_operand:
        per_channel = (dram_reads.ifmap, dram_reads.filter, dram_reads.ofmap + dram_writes.ofmap)
        transfer_cycles = max(per_channel) / cfg.dram_bytes_per_cycle
        first_tile = max(min(ifmap_bytes, rows * k * w), min(filter_bytes, k * cols * w))
    else:
        transfer_cycles = dram_total / cfg.dram_bytes_per_cycle
    stall = max(0.0, transfer_cycles - compute) + first_tile / cfg.dram_bytes_per_cycle
    et = cfg.energy_table
    energy = (g * m * n * k * (et.mac_pj + et.rf_pj_per_mac)
              + (sram_reads.total() + sram_writes.total()) * et.sram_pj_per_byte
              + dram_total * et.dram_pj_per_byte)
    return LayerResult(name=layer.name, m=layer.m, n=layer.n, k=layer.k, groups=g, dataflow=dataflow,
                       macs=layer.macs, compute_cycles=compute, stall_cycles=math.ceil(stall),
                       mapping_efficiency=mapping, sram_reads=sram_reads, sram_writes=sram_writes,
                       dram_reads=dram_reads, dram_writes=dram_writes, energy_pj=energy)


def simulate_vector(name: str, flops: int, bytes_moved: int, cfg: NpuConfig, kind: str) -> LayerResult:
    """A non-GEMM layer (pooling, norm, softmax, elementwise) on the vector unit: lanes ops per cycle, DRAM-bound
    if its bytes need longer."""
    compute = math.ceil(flops / cfg.vector_lanes) if flops else 0
    transfer = math.ceil(bytes_moved / cfg.dram_bytes_per_cycle)
    et = cfg.energy_table
    energy = flops * et.mac_pj * et.vector_op_mac_fraction + bytes_moved * (et.dram_pj_per_byte + et.sram_pj_per_byte)
    return LayerResult(name=name, m=0, n=0, k=0, groups=1, dataflow="vector", macs=0, compute_cycles=compute,
                       stall_cycles=max(0, transfer - compute), mapping_efficiency=1.0, sram_reads=Traffic(),
                       sram_writes=Traffic(), dram_reads=Traffic(ifmap=bytes_moved), dram_writes=Traffic(),
                       energy_pj=energy, kind=kind)


def best_dataflow(layer: GemmLayer, cfg: NpuConfig, objective: str = "cycles") -> LayerResult:
    """The mapper: try every dataflow, keep the one with the fewest total cycles (or the least energy)."""
    return pick(objective, [simulate_gemm(layer, cfg, df) for df in DATAFLOWS])


def pick(objective: str, results: list[LayerResult]) -> LayerResult:
    """The best of one layer's mappings: fewest total cycles (ties: least energy), or least energy."""
    if objective not in ("cycles", "energy"):
        raise NpuError(f"objective {objective!r} is not cycles or energy")
    if objective == "cycles":
        return min(results, key=lambda r: (r.total_cycles, r.energy_pj))
    return min(results, key=lambda r: (r.energy_pj, r.total_cycles))


@dataclass(frozen=True, kw_only=True)
class NpuRun:
    cfg: NpuConfig
    dataflow: str
    layers: tuple[LayerResult, ...]
    cycle_convention: str = "xpusim"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_cycles(self) -> int:
        return sum(r.total_cycles for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def energy_j(self) -> float:
        return sum(r.energy_pj for r in self.layers) * 1e-12  # pJ -> J

    @property
    def time_s(self) -> float:
        return self.total_cycles / self.cfg.clock_hz

    @property
    def tops(self) -> float:
        """Achieved tera-operations per second (2 per MAC) at the configured clock."""
        return 2 * self.macs / self.time_s / TERA if self.time_s else 0.0

    @property
    def peak_tops(self) -> float:
        return 2 * self.cfg.rows * self.cfg.cols * self.cfg.macs_per_pe * self.cfg.clock_hz / TERA

    @property
    def tops_per_w(self) -> float:
        power = self.energy_j / self.time_s if self.time_s else 0.0
        return self.tops / power if power else 0.0

    def to_dict(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "array": {"rows": c.rows, "cols": c.cols, "macs_per_pe": c.macs_per_pe},
            "dataflow": self.dataflow,
            "dtype": c.dtype,
            "sram_bytes": {"ifmap": c.ifmap_sram_bytes, "filter": c.filter_sram_bytes, "ofmap": c.ofmap_sram_bytes},
            "dram_bytes_per_cycle": c.dram_bytes_per_cycle,
            "clock_hz": c.clock_hz,
            "sparsity": f"{c.sparsity[0]}:{c.sparsity[1]}" if c.sparsity else None,
            "cycle_convention": self.cycle_convention,
            "energy_source": c.energy_table.source,
            "notes": list(self.notes),
            "layers": [r.to_dict(c) for r in self.layers],
            "totals": {"total_cycles": self.total_cycles, "stall_cycles": sum(r.stall_cycles for r in self.layers),
                       "macs": self.macs, "time_s": self.time_s, "energy_j": self.energy_j, "tops": self.tops,
                       "peak_tops": self.peak_tops, "tops_per_w": self.tops_per_w,
                       "utilization": self.tops / self.peak_tops if self.peak_tops else 0.0},
        }


def simulate(layers: list[GemmLayer | tuple[str, int, int, str]], cfg: NpuConfig, dataflow: str = "ws",
             objective: str = "cycles") -> NpuRun:
    """Every layer: GEMMs on the array (``dataflow`` or ``auto``), others ``(name, flops, elements moved, kind)`` on
    the vector unit, at the array's word size."""
    if dataflow != "auto" and dataflow not in DATAFLOWS:
        raise NpuError(f"unknown dataflow {dataflow!r}; use one of {', '.join(DATAFLOWS)} or auto")
    out = []
    for layer in layers:
        if isinstance(layer, GemmLayer):
            out.append(best_dataflow(layer, cfg, objective) if dataflow == "auto"
                       else simulate_gemm(layer, cfg, dataflow))
        else:
            name, flops, elements, kind = layer
            out.append(simulate_vector(name, flops, math.ceil(elements * cfg.word_bytes), cfg, kind))
    return NpuRun(cfg=cfg, dataflow=dataflow, layers=tuple(out))


def lower_workload(wl: Any) -> tuple[list[GemmLayer | tuple[str, int, int, str]], list[str]]:
    """A captured `Workload` as NPU layers: convolutions and matmuls as GEMMs, the rest as vector work.

    Returns the layers and notes about anything approximated. Vector work is given as elements moved (the
    capture's bytes over its element size); `simulate` applies the NPU's word size.
    """
    layers: list[GemmLayer | tuple[str, int, int, str]] = []
    unlowered: dict[str, int] = {}
    for op in wl.ops:
        g = gemm_of(op)
        if g is not None:
            layers.append(g)
        elif op.kind in ("matmul", "conv", "attention", "rnn", "fused") and op.macs:
            unlowered[op.op] = unlowered.get(op.op, 0) + 1
            elem = element_bytes(op.dtype)
            layers.append((op.name, 2 * op.macs, int(op.bytes_total / elem), op.kind))
        elif op.flops or op.bytes_total:
            elem = element_bytes(op.dtype)
            layers.append((op.name, op.flops, int(op.bytes_total / elem), op.kind))
    notes = [f"{n} × {name} not lowered to GEMM: timed on the vector unit" for name, n in unlowered.items()]
    return layers, notes


def array_share(layers: Sequence[GemmLayer | tuple[str, int, int, str]]) -> float | None:
    """Share of the FLOPs of `lower_workload`'s layers that run on the array (its GEMMs, 2 FLOPs per MAC); the rest
    run on the vector unit. None without FLOPs."""
    on_array = sum(2 * g.macs for g in layers if isinstance(g, GemmLayer))
    total = on_array + sum(g[1] for g in layers if not isinstance(g, GemmLayer))
    return on_array / total if total else None


def gemm_of(op: Any) -> GemmLayer | None:
    """The GEMM(s) one op amounts to, or None for non-GEMM work."""
    shapes = op.input_shapes
    if op.kind == "conv" and op.op.startswith("aten.convolution") and len(shapes) >= 2 and op.output_shape:
        x, w, out = shapes[0], shapes[1], op.output_shape
        if len(x) < 3 or not w[1]:
            return None
        groups = max(x[1] // w[1], 1)
        forward_m = out[0] * math.prod(out[2:])
        kernel = math.prod(w[2:])
        if forward_m * w[1] * kernel * (w[0] // groups) * groups == op.macs:  # ordinary convolution
            return GemmLayer(name=op.name, m=forward_m, n=w[0] // groups, k=w[1] * kernel, groups=groups,
                             ifmap_unique_elems=math.prod(x))
        # transposed: each input pixel scatters through Cout/g x kernel outputs
        return GemmLayer(name=op.name, m=x[0] * math.prod(x[2:]), n=w[1] * kernel, k=w[0] // groups, groups=groups,
                         ifmap_unique_elems=math.prod(x))
    if op.kind == "matmul" or op.op.startswith("analytic.matmul"):
        mats = [s for s in shapes if len(s) >= 2]
        if len(mats) < 2:
            return None
        a, b = mats[-2], mats[-1]
        batch = math.prod(a[:-2]) if len(a) > 2 else 1
        return GemmLayer(name=op.name, m=a[-2], n=b[-1], k=a[-1], groups=batch)
    return None
