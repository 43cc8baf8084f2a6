"""One figure of the training simulator's error on every published run it is checked against: Table 1 (the
calibration set), the dense validation rows (step time) and the MoE rows (tokens/s per GPU), one bar per row.

    .venv/bin/python benchmarks/plot_validation.py [--out docs/parallel-validation.png]

It runs benchmarks/bench_parallel_validation.py's and benchmarks/bench_moe_validation.py's tables (printed as they
run, about 40 s) and draws what they print. The sign is the simulator's: a positive dense error is a step
predicted too long, a positive MoE error throughput predicted too high.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import yaml
from matplotlib.axes import Axes

import bench_moe_validation as moe
import bench_parallel_validation as dense
from bench_parallel_validation import Point, summary
from xpusim.report.plots import save_atomic

OUT = Path(__file__).parent.parent / "docs" / "parallel-validation.png"


def family(row: str) -> str:
    """The source a row comes from, for its colour: the id's first word (korthikanti22-..., bridge-25.09-...)."""
    return row.split("-")[0]


def panel(ax: Axes, points: list[Point], title: str, band_pct: float, xlabel: str,
          hollow: frozenset[str] = frozenset()) -> None:
    """Signed error per row, one bar each in the file's order; the goal's band shaded; rows outside it named in red."""
    families = sorted({family(p.row) for p in points}, key=[family(p.row) for p in points].index)
    cmap = plt.get_cmap("tab10")
    colour = {f: cmap(i % 10) for i, f in enumerate(families)}
    y = range(len(points))
    ax.axvspan(-band_pct, band_pct, color="0.92", zorder=0)
    ax.axvline(0, color="0.3", lw=0.8)
    for i, p in zip(y, points, strict=True):
        c = colour[family(p.row)]
        ax.barh(i, p.error_pct, color="white" if p.row in hollow else c, edgecolor=c, hatch="//" if p.row in hollow
                else None)
    ax.set_yticks(list(y), [p.row + (" (fit, not counted)" if p.row in hollow else "") for p in points], fontsize=7)
    for tick, p in zip(ax.get_yticklabels(), points, strict=True):
        if abs(p.error_pct) > band_pct:
            tick.set_color("red")
    ax.invert_yaxis()
    counted = [p for p in points if p.row not in hollow]
    inside = sum(abs(p.error_pct) <= band_pct for p in counted)
    ax.set_title(f"{title}\n{summary(counted)}; {inside} within ±{band_pct:g}%", fontsize=9, loc="left")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="0.85", lw=0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help="figure file (.png, .svg or .pdf; default: %(default)s)")
    args = ap.parse_args()
    data = yaml.safe_load(dense.DATA.read_text())
    table1 = dense.report("calibration", dense.calibration_rows(data))
    validation = dense.report("validation", data["validation"])
    moe_points, moe_fit = moe.run()
    fig, axes = plt.subplots(3, 1, figsize=(9, 15), height_ratios=[len(table1) + 4, len(validation) + 4,
                                                                     len(moe_points) + len(moe_fit) + 4])
    step = "error in step time (%): + is a step predicted too long"
    panel(axes[0], table1, "Calibration: Megatron-LM SC'21 Table 1 (A100's efficiency is chosen on it)", 10, step)
    panel(axes[1], validation, "Validation, dense: never fitted", 10, step)
    panel(axes[2], moe_points + moe_fit, "Validation, mixture of experts on H100", 15,
          "error in tokens/s per GPU (%): + is throughput predicted too high",
          hollow=frozenset(p.row for p in moe_fit))
    fig.suptitle("xpusim parallel against published measured training runs", fontsize=11, x=0.02, ha="left")
    fig.tight_layout()
    save_atomic(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
