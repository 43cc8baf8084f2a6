"""Figures: where the FLOPs and the bytes of a model go, and how totals grow in a sweep."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from xpusim.engines.roofline import Estimate
from xpusim.files import PLOT_SUFFIXES, check_output, write_atomic
from xpusim.workload.model import KINDS, OpCost, Workload

KIND_COLORS = {kind: plt.get_cmap("tab20")(i / 20) for i, kind in enumerate(KINDS)}


def save_atomic(fig: Figure, path: Path) -> None:
    """Write to a temporary file in the target directory, then rename: never a half-written figure."""
    try:
        check_output(path, "plot file", PLOT_SUFFIXES)
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix[1:].lower()))
    finally:
        plt.close(fig)


def layers_figure(wl: Workload, depth: int | None = None, max_rows: int = 60) -> Figure:
    """Per-layer FLOPs (bars coloured by op kind) over per-layer arithmetic intensity (FLOPs per byte)."""
    rows: Sequence[OpCost] = wl.ops if depth is None else wl.grouped(depth)
    rows = [o for o in rows if o.flops or o.bytes_total]
    n_rows = len(rows)
    if len(rows) > max_rows:  # keep the heaviest, in model order
        keep = {id(o) for o in sorted(rows, key=lambda o: -o.flops)[:max_rows]}
        rows = [o for o in rows if id(o) in keep]
    x = range(len(rows))
    colors = [KIND_COLORS.get(o.kind, "grey") for o in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 0.22 * len(rows) + 3), 7.5), sharex=True)
    ax1.bar(x, [o.flops / 1e9 for o in rows], color=colors)
    ax1.set_ylabel("GFLOPs")
    title = f"{wl.model} · {wl.mode} · {wl.dtype} · {wl.totals().flops / 1e9:.3f} GFLOPs in {len(wl.ops)} ops"
    ax1.set_title(title + ("" if len(rows) == n_rows else f" (the {len(rows)} of {n_rows} rows with most FLOPs)"))
    ax2.bar(x, [o.intensity for o in rows], color=colors)
    ax2.set_yscale("log")
    ax2.set_ylabel("FLOPs per byte")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels([o.name for o in rows], rotation=90, fontsize=6)
    present = [k for k in KINDS if any(o.kind == k for o in rows)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS[k]) for k in present]
    ax1.legend(handles, present, fontsize=7, ncol=min(len(present), 6), loc="upper right")
    for ax in (ax1, ax2):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def sweep_figure(model: str, param: str, results: Sequence[tuple[int, Workload]]) -> Figure:
    """Totals against the swept value, log-log, each normalised to its value at the first point."""
    values = [v for v, _ in results]
    series = {
        "MACs": [wl.totals().macs for _, wl in results],
        "weight bytes": [wl.totals().weight_bytes for _, wl in results],
        "activation bytes": [wl.totals().activation_bytes for _, wl in results],
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, ys in series.items():
        base = ys[0] or 1
        ax1.plot(values, [y / base for y in ys], marker="o", label=label)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel(param)
    ax1.set_ylabel(f"× value at {param}={values[0]}")
    ax1.legend()
    ax1.grid(alpha=0.3, which="both")
    ax2.plot(values, [wl.totals().intensity for _, wl in results], marker="o", color="black")
    ax2.set_xscale("log")
    ax2.set_xlabel(param)
    ax2.set_ylabel("FLOPs per byte (whole model)")
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle(f"{model}: cost vs {param}")
    fig.tight_layout()
    return fig


MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def roofline_figure(estimates: Sequence[Estimate], max_bars: int = 40) -> Figure:
    """Classic roofline (every op a point, coloured by kind, one marker per model) and per-layer time bars."""
    chip = estimates[0].chip
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [1.1, 1]})
    points = [o for e in estimates for o in e.ops if o.flops and o.bytes]
    lo = min((o.intensity for o in points), default=0.01) / 2
    hi = max((o.intensity for o in points), default=1000) * 2
    bw = chip.main_memory.bandwidth_bytes_per_s or 1.0
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    dtypes = sorted({e.dtype for e in estimates})
    for dtype in dtypes:
        for unit, style in (("tensor", "-"), ("vector", "--")):
            peak = chip.peak_flops_per_s(dtype, unit)
            if peak:
                ax.plot(xs, [min(peak, x * bw) for x in xs], style, color="black", lw=1.2,
                        label=f"{unit} {dtype}: {peak / 1e12:g} TFLOP/s, ridge {peak / bw:.0f} FLOP/B")
    kinds_seen: list[str] = []
    for i, est in enumerate(estimates):
        marker = MODEL_MARKERS[i % len(MODEL_MARKERS)]
        for kind in KINDS:
            ops = [o for o in est.ops if o.kind == kind and o.flops and o.bytes]
            if ops:
                ax.scatter([o.intensity for o in ops], [o.attainable_flops_per_s for o in ops], s=18, marker=marker,
                           color=KIND_COLORS[kind], alpha=0.8, edgecolors="none")
                kinds_seen += [kind] if kind not in kinds_seen else []
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte of main memory)")
    ax.set_ylabel("attainable FLOP/s")
    ax.set_title(f"roofline on {chip.title} ({chip.main_memory.bandwidth_gb_per_s:g} GB/s)")
    ax.grid(alpha=0.3, which="both")
    # One legend entry per roof, per op kind (colour) and per model (marker), below the chart: never over the points.
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="", marker="o", color=KIND_COLORS[k], label=k) for k in kinds_seen]
    if len(estimates) > 1:
        handles += [Line2D([], [], ls="", marker=MODEL_MARKERS[i % len(MODEL_MARKERS)], color="gray", label=e.model)
                    for i, e in enumerate(estimates)]
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    if len(estimates) == 1:
        est = estimates[0]
        ops = sorted(est.ops, key=lambda o: -o.time_s)[:max_bars]
        ops = [o for o in est.ops if o in ops]  # model order
        colors = ["tab:red" if o.bound == "memory" else "tab:blue" for o in ops]
        bx.bar(range(len(ops)), [o.time_s * 1e6 for o in ops], color=colors)
        bx.set_xticks(range(len(ops)))
        bx.set_xticklabels([o.name for o in ops], rotation=90, fontsize=6)
        bx.set_ylabel("time (µs)")
        bx.set_title(f"{est.model}: the {len(ops)} slowest ops, red = memory-bound, blue = compute-bound, "
                     f"total {est.latency_s * 1e3:.3g} ms", fontsize=9)
    else:  # several models: each model's latency, split into memory- and compute-bound time
        names = [e.model for e in estimates]
        mem = [sum(o.time_s for o in e.ops if o.bound == "memory") * 1e3 for e in estimates]
        comp = [sum(o.time_s for o in e.ops if o.bound != "memory") * 1e3 for e in estimates]
        bx.bar(names, mem, color="tab:red", label="memory-bound ops")
        bx.bar(names, comp, bottom=mem, color="tab:blue", label="compute-bound ops")
        bx.set_ylabel("latency (ms)")
        bx.tick_params(axis="x", rotation=30)
        bx.legend(fontsize=8)
        bx.set_title(f"latency per model on {chip.name} (batch {estimates[0].batch})", fontsize=9)
    bx.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
