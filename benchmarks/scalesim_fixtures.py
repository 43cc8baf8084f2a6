"""Run SCALE-Sim 3.0.0 on small cases and keep its COMPUTE_REPORT rows as test fixtures.

SCALE-Sim needs numpy < 2.4, so it lives in its own environment:

    python3 -m venv .scalesim && .scalesim/bin/pip install scalesim==3.0.0 'numpy<2.4'
    .scalesim/bin/python benchmarks/scalesim_fixtures.py            # writes tests/fixtures/scalesim/

For each case it writes the .cfg and topology .csv SCALE-Sim reads (kept as fixtures too, so the project's
reader is tested on real files), runs ``python -m scalesim.scale``, and copies COMPUTE_REPORT.csv. Only these
small text files are committed; SCALE-Sim itself is not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "scalesim"

CONV_TOPOLOGY = """Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,
conv_a, 12, 12, 3, 3, 8, 16, 1,
conv_b, 15, 15, 3, 3, 4, 8, 2,
conv_c, 8, 8, 1, 1, 32, 24, 1,
conv_d, 10, 10, 5, 5, 3, 12, 1,
"""

# A depthwise row (SCALE-Sim runs one layer per channel), a stride-2 row whose last window runs past the ifmap
# under SCALE-Sim's ceil output-size rule, and a non-square filter.
MIXED_TOPOLOGY = """Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,
dw_DP, 10, 10, 3, 3, 3, 1, 1,
edge_s2, 12, 12, 3, 3, 3, 6, 2,
wide, 6, 20, 1, 5, 6, 10, 1,
"""

GEMM_TOPOLOGY = """Layer, M, N, K,
gemm_a, 64, 32, 48,
gemm_b, 17, 9, 33,
gemm_c, 20, 70, 16,
"""

CFG = """[general]
run_name = {name}

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {sram_kb}
FilterSramSzkB: {sram_kb}
OfmapSramSzkB: {sram_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: {ofmap_bw}
Dataflow: {df}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: {bw}
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: {bw}
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: {mode}
UseRamulatorTrace: False
"""

DFS = ("os", "ws", "is")
# (case name, rows, cols, dataflow, topology, SRAM KiB each, ifmap/filter bandwidth words/cycle or None for CALC,
#  ofmap bandwidth)
CASES = [
    *[(f"conv_{df}_{r}x{c}", r, c, df, "conv", 64, None, 10) for df in DFS for r, c in ((8, 8), (16, 4))],
    *[(f"gemm_{df}_{r}x{c}", r, c, df, "gemm", 64, None, 10) for df in DFS for r, c in ((8, 8), (4, 16))],
    *[(f"stall_{df}_8x8_bw{bw}", 8, 8, df, "conv", 1, bw, bw) for df in DFS for bw in (1, 4)],
    *[(f"stall_gemm_{df}_16x4_bw2", 16, 4, df, "gemm", 2, 2, 2) for df in DFS],
    *[(f"stall_mixed_{df}_4x16_bw3x5", 4, 16, df, "mixed", 1, 3, 5) for df in DFS],
]
TOPOLOGIES = {"conv": CONV_TOPOLOGY, "gemm": GEMM_TOPOLOGY, "mixed": MIXED_TOPOLOGY}


def run_case(name: str, rows: int, cols: int, df: str, topo: str, sram_kb: int, bw: int | None,
             ofmap_bw: int) -> None:
    cfg_text = CFG.format(name=name, rows=rows, cols=cols, sram_kb=sram_kb, bw=bw or 10, ofmap_bw=ofmap_bw, df=df,
                          mode="USER" if bw else "CALC")
    topo_text = TOPOLOGIES[topo]
    (OUT / f"{name}.cfg").write_text(cfg_text)
    (OUT / f"{topo}_topology.csv").write_text(topo_text)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "c.cfg").write_text(cfg_text)
        (tmp / "t.csv").write_text(topo_text)
        (tmp / "layout.csv").write_text("Layer name,\n")  # SCALE-Sim wants a layout file even with layouts off
        cmd = [sys.executable, "-m", "scalesim.scale", "-c", str(tmp / "c.cfg"), "-t", str(tmp / "t.csv"),
               "-p", str(tmp), "-l", str(tmp / "layout.csv"), "-i", "gemm" if topo == "gemm" else "conv"]
        subprocess.run(cmd, check=True, cwd=tmp, stdout=subprocess.DEVNULL, timeout=1800)
        report = next(tmp.rglob("COMPUTE_REPORT.csv"))
        shutil.copy(report, OUT / f"{name}.compute.csv")
        bw_report = next(tmp.rglob("BANDWIDTH_REPORT.csv"), None)
        if bw_report is not None:
            shutil.copy(bw_report, OUT / f"{name}.bandwidth.csv")
        detail = next(tmp.rglob("DETAILED_ACCESS_REPORT.csv"), None)
        if detail is not None:
            shutil.copy(detail, OUT / f"{name}.access.csv")
    print(name, "done", flush=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[1:])
    for case in CASES:
        if not only or case[0] in only:
            run_case(*case)


if __name__ == "__main__":
    main()
