"""Read SCALE-Sim's files as they are: the ``.cfg`` architecture and the topology ``.csv`` (conv or GEMM form).

Both are data: ``configparser`` and ``csv``, never code. Conv and GEMM topologies are told apart by the header
row (a GEMM header names M, N and K); rows end with a trailing comma; output sizes follow SCALE-Sim's rule
ceil((H − F + S) / S), which differs from PyTorch's floor((H − F) / S) + 1 when (H − F) is not a multiple of S;
a layer whose name contains ``DP`` is depthwise (one GEMM per channel), as SCALE-Sim treats it. Words are 1 byte.
"""

from __future__ import annotations

import configparser
import csv
import math
from dataclasses import dataclass
from pathlib import Path

from xpusim.engines.npu import GemmLayer, NpuConfig, NpuError

KIB = 1024


@dataclass(frozen=True, kw_only=True)
class ScaleSimConfig:
    npu: NpuConfig
    dataflow: str
    calc_bandwidth: bool
    """InterfaceBandwidth = CALC: SCALE-Sim sizes the bandwidth so that nothing stalls."""
    run_name: str


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
    if mode == "USER":
        bandwidth = float(_int(_get(cp, p, arch, "Bandwidth").split(",")[0], f"{p}: [{arch}] Bandwidth"))
    npu = NpuConfig(rows=num("ArrayHeight"), cols=num("ArrayWidth"), ifmap_sram_bytes=num("IfmapSramSzkB") * KIB,
                    filter_sram_bytes=num("FilterSramSzkB") * KIB, ofmap_sram_bytes=num("OfmapSramSzkB") * KIB,
                    dram_bytes_per_cycle=bandwidth, dtype="int8", dram_per_operand=True)
    run_name = cp.get("general", "run_name", fallback=Path(p).stem)
    return ScaleSimConfig(npu=npu, dataflow=dataflow, calc_bandwidth=mode == "CALC", run_name=run_name)


CONV_FIELDS = ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels", "Num Filter", "Strides")
GEMM_FIELDS = ("M", "N", "K")


def read_topology(path: str | Path) -> list[GemmLayer]:
    """Layers of a SCALE-Sim topology file as GEMMs (conv rows lowered with SCALE-Sim's output-size rule)."""
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
        if is_gemm:
            layers.append(GemmLayer(name=name, m=vals["M"], n=vals["N"], k=vals["K"]))
            continue
        h, w, fh, fw = vals["IFMAP Height"], vals["IFMAP Width"], vals["Filter Height"], vals["Filter Width"]
        c, nf, s = vals["Channels"], vals["Num Filter"], vals["Strides"]
        if fh > h or fw > w:
            raise NpuError(f"{p} line {lineno}: filter {fh}x{fw} is larger than the {h}x{w} ifmap")
        oh, ow = math.ceil((h - fh + s) / s), math.ceil((w - fw + s) / s)
        if "DP" in name:  # depthwise: one GEMM per channel
            layers.append(GemmLayer(name=name, m=oh * ow, n=nf, k=fh * fw, groups=c, ifmap_unique_elems=h * w * c))
        else:
            layers.append(GemmLayer(name=name, m=oh * ow, n=nf, k=fh * fw * c, ifmap_unique_elems=h * w * c))
    return layers


def read_compute_report(path: str | Path) -> list[dict[str, float]]:
    """SCALE-Sim's COMPUTE_REPORT.csv rows as dicts (for comparing cycles)."""
    with open(path, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r]
    header = [h for h in rows[0] if h]
    return [{h: float(v) for h, v in zip(header, r, strict=False) if v != ""} for r in rows[1:]]
