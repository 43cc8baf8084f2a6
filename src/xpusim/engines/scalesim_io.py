"""Read SCALE-Sim's files as they are: the ``.cfg`` architecture and the topology ``.csv`` (conv or GEMM form).

Both are data: ``configparser`` and ``csv``, never code. Conv and GEMM topologies are told apart by the header
row (a GEMM header names M, N and K); rows end with a trailing comma; output sizes follow SCALE-Sim's rule
ceil((H − F + S) / S), which differs from PyTorch's floor((H − F) / S) + 1 when (H − F) is not a multiple of S;
a layer whose name contains ``DP`` is depthwise (one GEMM per channel), as SCALE-Sim treats it. Words are 1 byte.

With ``InterfaceBandwidth: USER`` the stall cycles come from `xpusim.engines.scalesim_mem`, which replays
SCALE-Sim's memory model from each row's geometry; with CALC nothing stalls, as in SCALE-Sim.
"""

from __future__ import annotations

import configparser
import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

from xpusim.engines.npu import (
    DATAFLOWS,
    DEFAULT_DRAM_WORDS_PER_CYCLE,
    GemmLayer,
    LayerResult,
    NpuConfig,
    NpuError,
    NpuRun,
    pick,
    simulate_gemm,
)
from xpusim.engines.scalesim_mem import ConvShape, ReplayTooLarge, simulate_layer
from xpusim.units import KIB

CALC_WORDS: tuple[int, int, int] = (DEFAULT_DRAM_WORDS_PER_CYCLE,) * 3
"""Bandwidth words reported for a CALC-mode file, which gives none (CALC sizes the bandwidth so that nothing
stalls; these are never used for timing)."""


@dataclass(frozen=True, kw_only=True)
class ScaleSimConfig:
    npu: NpuConfig
    dataflow: str
    calc_bandwidth: bool
    """InterfaceBandwidth = CALC: SCALE-Sim sizes the bandwidth so that nothing stalls."""
    run_name: str
    bandwidth_words: tuple[int, int, int] = CALC_WORDS
    """USER mode: DRAM words per cycle of the (ifmap, filter, ofmap) SRAMs. SCALE-Sim 3.0.0 takes the first two
    from [layout] IfmapSRAMBankBandwidth / FilterSRAMBankBandwidth and the third from Bandwidth."""
    ignored: tuple[str, ...] = ()
    """Options the file turns on that xpusim does not model (custom layouts, sparsity, Ramulator traces)."""


@dataclass(frozen=True, kw_only=True)
class ScaleSimLayer:
    """One topology row: the GEMM it lowers to and the geometry SCALE-Sim's memory model needs."""

    gemm: GemmLayer
    shape: ConvShape
    """For a depthwise (``DP``) row: one channel's conv, run ``gemm.groups`` times."""


def _get(cp: configparser.ConfigParser, path: str, section: str, key: str) -> str:
    if not cp.has_section(section):
        raise NpuError(f"{path}: section [{section}] is missing")
    if not cp.has_option(section, key):
        raise NpuError(f"{path}: [{section}] {key} is missing")
    return cp.get(section, key).strip()


def _int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise NpuError(f"{where}: {value!r} is not an integer") from None


def read_config(path: str | Path) -> ScaleSimConfig:
    p = str(path)
    if not Path(p).is_file():
        raise NpuError(f"SCALE-Sim config {p!r} does not exist")
    cp = configparser.ConfigParser()
    try:
        cp.read(p)
    except configparser.Error as exc:
        raise NpuError(f"{p}: not a SCALE-Sim .cfg ({str(exc).splitlines()[0]})") from None
    arch = "architecture_presets"

    def num(key: str, section: str = arch) -> int:
        return _int(_get(cp, p, section, key), f"{p}: [{section}] {key}")

    dataflow = _get(cp, p, arch, "Dataflow")
    if dataflow not in ("os", "ws", "is"):
        raise NpuError(f"{p}: [{arch}] Dataflow = {dataflow!r}; SCALE-Sim knows os, ws and is")
    mode = _get(cp, p, "run_presets", "InterfaceBandwidth")
    if mode not in ("CALC", "USER"):
        raise NpuError(f"{p}: [run_presets] InterfaceBandwidth = {mode!r}; use CALC or USER")
    bandwidth = math.inf  # CALC: SCALE-Sim sizes the bandwidth so that nothing stalls
    words: tuple[int, int, int] = CALC_WORDS
    if mode == "USER":
        ofmap_bw = _int(_get(cp, p, arch, "Bandwidth").split(",")[0], f"{p}: [{arch}] Bandwidth")
        if ofmap_bw < 1:
            raise NpuError(f"{p}: [{arch}] Bandwidth = {ofmap_bw} must be >= 1")
        bandwidth = float(ofmap_bw)

        def bank(key: str) -> int:  # SCALE-Sim 3 reads these; older .cfg files have no [layout]: use Bandwidth
            if not cp.has_option("layout", key):
                return ofmap_bw
            v = _int(cp.get("layout", key).strip(), f"{p}: [layout] {key}")
            if v < 1:
                raise NpuError(f"{p}: [layout] {key} = {v} must be >= 1")
            return v

        words = (bank("IfmapSRAMBankBandwidth"), bank("FilterSRAMBankBandwidth"), ofmap_bw)
    npu = NpuConfig(rows=num("ArrayHeight"), cols=num("ArrayWidth"), ifmap_sram_bytes=num("IfmapSramSzkB") * KIB,
                    filter_sram_bytes=num("FilterSramSzkB") * KIB, ofmap_sram_bytes=num("OfmapSramSzkB") * KIB,
                    dram_bytes_per_cycle=bandwidth, dtype="int8", dram_per_operand=True)
    run_name = cp.get("general", "run_name", fallback=Path(p).stem)
    ignored = tuple(f"[{sec}] {key}" for sec, key in (("layout", "IfmapCustomLayout"), ("layout", "FilterCustomLayout"),
                                                       ("sparsity", "SparsitySupport"),
                                                       ("run_presets", "UseRamulatorTrace"))
                    if cp.get(sec, key, fallback="false").strip().lower() in ("true", "1", "yes"))
    return ScaleSimConfig(npu=npu, dataflow=dataflow, calc_bandwidth=mode == "CALC", run_name=run_name,
                          bandwidth_words=words, ignored=ignored)


CONV_FIELDS = ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels", "Num Filter", "Strides")
GEMM_FIELDS = ("M", "N", "K")


def read_topology(path: str | Path) -> list[GemmLayer]:
    """Layers of a SCALE-Sim topology file as GEMMs (conv rows lowered with SCALE-Sim's output-size rule)."""
    return [row.gemm for row in read_layers(path)]


def read_layers(path: str | Path) -> list[ScaleSimLayer]:
    """Rows of a SCALE-Sim topology file: each one's GEMM and its conv geometry."""
    p = str(path)
    if not Path(p).is_file():
        raise NpuError(f"SCALE-Sim topology {p!r} does not exist")
    with open(p, newline="") as f:
        rows = [r for r in csv.reader(f)]
    rows = [[c.strip() for c in r] for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise NpuError(f"{p}: empty topology file")
    header = [h for h in rows[0] if h]
    is_gemm = [h.upper() for h in header[1:4]] == list(GEMM_FIELDS)
    fields = GEMM_FIELDS if is_gemm else CONV_FIELDS
    layers = []
    for lineno, row in enumerate(rows[1:], start=2):
        cells = row[:-1] if row and row[-1] == "" else row  # SCALE-Sim rows end with a comma
        if len(cells) < 1 + len(fields):
            raise NpuError(f"{p} line {lineno}: expected {1 + len(fields)} fields (name, {', '.join(fields)}), "
                           f"got {len(cells)}")
        name = cells[0]
        vals = {}
        for field, cell in zip(fields, cells[1:1 + len(fields)], strict=True):
            v = _int(cell, f"{p} line {lineno}, field {field!r}")
            if v < 1:
                raise NpuError(f"{p} line {lineno}, field {field!r}: {v} must be >= 1")
            vals[field] = v
        if is_gemm:  # SCALE-Sim reads M, N, K as an M x K ifmap under one 1 x K filter
            m, n, k = vals["M"], vals["N"], vals["K"]
            layers.append(ScaleSimLayer(gemm=GemmLayer(name=name, m=m, n=n, k=k),
                                        shape=ConvShape(h=m, w=k, fh=1, fw=k, c=1, nf=n, stride=1)))
            continue
        h, w, fh, fw = vals["IFMAP Height"], vals["IFMAP Width"], vals["Filter Height"], vals["Filter Width"]
        c, nf, s = vals["Channels"], vals["Num Filter"], vals["Strides"]
        if fh > h or fw > w:
            raise NpuError(f"{p} line {lineno}: filter {fh}x{fw} is larger than the {h}x{w} ifmap")
        oh, ow = math.ceil((h - fh + s) / s), math.ceil((w - fw + s) / s)
        if "DP" in name:  # depthwise: one GEMM per channel
            gemm = GemmLayer(name=name, m=oh * ow, n=nf, k=fh * fw, groups=c, ifmap_unique_elems=h * w * c)
            shape = ConvShape(h=h, w=w, fh=fh, fw=fw, c=1, nf=nf, stride=s)
        else:
            gemm = GemmLayer(name=name, m=oh * ow, n=nf, k=fh * fw * c, ifmap_unique_elems=h * w * c)
            shape = ConvShape(h=h, w=w, fh=fh, fw=fw, c=c, nf=nf, stride=s)
        layers.append(ScaleSimLayer(gemm=gemm, shape=shape))
    return layers


def _with_scalesim_memory(res: LayerResult, layer: ScaleSimLayer, sc: ScaleSimConfig) -> LayerResult:
    """``res`` with SCALE-Sim's USER-mode stalls and, beside our counts, its own: summed over the layers SCALE-Sim
    runs for the row (one per channel for a depthwise row)."""
    c = sc.npu
    t = simulate_layer(layer.shape, res.dataflow, c.rows, c.cols,
                       (c.ifmap_sram_bytes, c.filter_sram_bytes, c.ofmap_sram_bytes), sc.bandwidth_words)
    g = layer.gemm.groups
    return replace(res, stall_cycles=g * t.stall_cycles, scalesim={
        "stall_cycles": g * t.stall_cycles, "total_cycles": g * t.total_cycles, "scalesim_layers": g,
        "dram_reads": {"ifmap": g * t.dram_reads_ifmap, "filter": g * t.dram_reads_filter},
        "dram_writes": {"ofmap": g * t.dram_writes_ofmap},
        "prefetches": {"ifmap": g * t.prefetches_ifmap, "filter": g * t.prefetches_filter}})


def simulate_scalesim(sc: ScaleSimConfig, layers: list[ScaleSimLayer], dataflow: str | None = None,
                      objective: str = "cycles", clock_hz: float | None = None) -> NpuRun:
    """SCALE-Sim inputs end to end: compute cycles in its convention, and with USER bandwidth its memory model's
    stalls; ``dataflow="auto"`` picks per layer on those cycles."""
    cfg = replace(sc.npu, clock_hz=clock_hz) if clock_hz is not None else sc.npu
    sc = replace(sc, npu=cfg)
    df = dataflow or sc.dataflow
    if df != "auto" and df not in DATAFLOWS:
        raise NpuError(f"unknown dataflow {df!r}; use one of {', '.join(DATAFLOWS)} or auto")
    if objective not in ("cycles", "energy"):  # checked before any replay runs
        raise NpuError(f"objective {objective!r} is not cycles or energy")
    out, too_large = [], []
    for layer in layers:
        tried = []
        for one in (DATAFLOWS if df == "auto" else (df,)):
            res = simulate_gemm(layer.gemm, cfg, one)
            if sc.calc_bandwidth:
                res = replace(res, stall_cycles=0)
            else:
                try:
                    res = _with_scalesim_memory(res, layer, sc)
                except ReplayTooLarge as exc:  # keep xpusim's own stall estimate for this one
                    too_large.append(f"{layer.gemm.name} ({one}): {exc}")
            tried.append(res)
        out.append(pick(objective, tried))
    notes = tuple(f"SCALE-Sim memory replay skipped, xpusim's own stall model used: {t}" for t in too_large)
    return NpuRun(cfg=cfg, dataflow=df, layers=tuple(out), cycle_convention="scalesim", notes=notes)


def read_compute_report(path: str | Path) -> list[dict[str, float]]:
    """SCALE-Sim's COMPUTE_REPORT.csv rows as dicts (for comparing cycles)."""
    with open(path, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r]
    header = [h for h in rows[0] if h]
    return [{h: float(v) for h, v in zip(header, r, strict=False) if v != ""} for r in rows[1:]]
