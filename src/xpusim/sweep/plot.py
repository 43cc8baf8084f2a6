"""The Pareto plot of a sweep: every point on the first two objectives, the front marked and joined."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xpusim.engines.pareto import parse_objectives
from xpusim.errors import UserError
from xpusim.files import PLOT_SUFFIXES, check_output, write_atomic
from xpusim.sweep.points import MAXIMIZE
from xpusim.sweep.run import pareto_column

if TYPE_CHECKING:
    import pandas as pd

LOG_SPAN = 100.0
"""An axis whose positive values span more than this factor is drawn on a log scale."""


def plot_pareto(df: pd.DataFrame, objectives: str | Sequence[str], path: str | Path, *,
                title: str | None = None) -> Path:
    """Write a scatter plot (``.png``, ``.svg`` or ``.pdf``) of ``df``'s points on its first two objectives with
    the Pareto front of all objectives marked; returns the path. Failed points are left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    out = check_output(path, "plot", PLOT_SUFFIXES)
    assert out is not None
    objs = parse_objectives(objectives, dict.fromkeys(MAXIMIZE, "max"))
    front = pareto_column(df, objs)
    (xk, xd), (yk, yd) = objs[0], objs[1]
    ok = df["error"].isna().tolist() if "error" in df.columns else [True] * len(df)
    xs, ys = df[xk].astype("float64").tolist(), df[yk].astype("float64").tolist()
    pts = [(x, y, f) for x, y, f, good in zip(xs, ys, front, ok, strict=True) if good and x == x and y == y]
    if not pts:
        raise UserError(f"plot: no point has both {xk} and {yk} (every point failed?)")
    fig, ax = plt.subplots(figsize=(7, 5))
    try:
        ax.scatter([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], s=10, color="0.7",
                   label="dominated", zorder=1)
        on = sorted((p[0], p[1]) for p in pts if p[2])
        ax.plot([p[0] for p in on], [p[1] for p in on], "o-", color="tab:red", ms=5, lw=1.2,
                label=f"Pareto front ({len(on)})", zorder=2)
        for axis, values in ((ax.xaxis, [p[0] for p in pts]), (ax.yaxis, [p[1] for p in pts])):
            positive = [v for v in values if v > 0]
            if positive and len(positive) == len(values) and max(positive) / min(positive) > LOG_SPAN:
                (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
        ax.set_xlabel(f"{xk} ({'lower' if xd == 'min' else 'higher'} is better)")
        ax.set_ylabel(f"{yk} ({'lower' if yd == 'min' else 'higher'} is better)")
        more = f"; front over {', '.join(k for k, _ in objs)}" if len(objs) > 2 else ""
        ax.set_title(title or f"{len(pts):,} points{more}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format=out.suffix[1:].lower()))
    finally:
        plt.close(fig)
    return out
