"""Compression results: the table (metric, size, parameters, MACs, sparsity, chip latency/energy) and the
Pareto figure (metric vs size, and vs latency on a chip)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _hw(r: Any, chip: str) -> tuple[str, str]:
    h = r.hardware.get(chip, {})
    if h.get("latency_s") is None:
        return "n/a", "n/a"
    return f"{h['latency_s'] * 1e6:,.1f} µs", f"{h['energy_j'] * 1e6:,.1f} µJ"


def compress_table(console: Console, result: Any) -> None:
    """The variants table of a `xpusim.api.CompressResult` and what its columns assume."""
    task, base, results, prunes = result.task, result.baseline, result.variants, result.prunes
    chips = result.systems
    t = Table(title=f"{task.name}: {task.metric} on held-out data", title_justify="left")
    cols = ["variant", task.metric, "Δ", "size", "× smaller", "params", "MACs", "zeros", "CPU ms"]
    for chip in chips:
        cols += [f"{chip} latency", f"{chip} energy"]
    for c in cols:
        t.add_column(c, justify="left" if c == "variant" else "right")
    digits = 4 if task.metric.startswith("cosine") else 2
    for r in [base, *results]:
        row = [r.name, f"{r.value:.{digits}f}", f"{r.value - base.value:+.{digits}f}", f"{r.size_bytes:,} B",
               f"{base.size_bytes / r.size_bytes:.1f}", f"{r.params:,}", f"{r.macs:,}", f"{100 * r.sparsity:.0f}%",
               f"{r.cpu_latency_s * 1e3:.2f}" if r.cpu_latency_s is not None else ""]
        for chip in chips:
            row += list(_hw(r, chip))
        t.add_row(*row)
    console.print(t)
    notes = []
    if any(p.mode != "structured" for p in prunes):
        notes.append("masking-only pruning (unstructured, global, N:M) keeps the dense tensors: no size or MAC "
                     "change until a sparse format or sparse hardware uses the zeros")
    if result.chips:
        notes.append("chip columns: roofline at ideal efficiency for one batch; weight-only formats dequantize into "
                     "16-bit matmuls; n/a where the chip has no peak for the format")
    notes.append("CPU ms: measured here, one forward over the held-out split (float and pruned models)")
    for n in notes:
        console.print(f"- {n}")


def _label(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """Name every point; labels of points in the right half of a (log) axis go to their left, so none runs off."""
    if not points:
        return
    xs = sorted(x for x, _, _ in points)
    mid = xs[len(xs) // 2]
    for x, y, name in points:
        right = x > mid
        ax.annotate(name, (x, y), fontsize=8, xytext=(-4 if right else 4, 3), textcoords="offset points",
                    ha="right" if right else "left")
    ax.margins(x=0.15, y=0.08)


def pareto_plot(task: Any, base: Any, results: Sequence[Any], chip: str | None, path: Path) -> None:
    from xpusim.report.plots import plt, save_atomic

    panels = 2 if chip else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.6), squeeze=False)
    everything = [base, *results]
    ax = axes[0][0]
    for r in everything:
        ax.scatter(r.size_bytes / 1024, r.value, s=40, color="black" if r is base else "#4C78A8")
    _label(ax, [(r.size_bytes / 1024, r.value, r.name) for r in everything])
    ax.set_xscale("log")
    ax.set_xlabel("file size (KiB, log)")
    ax.set_ylabel(task.metric)
    ax.set_title(f"{task.name}: {task.metric} vs size")
    ax.grid(alpha=0.3)
    if chip:
        ax2 = axes[0][1]
        shown = [(r, r.hardware.get(chip, {}).get("latency_s")) for r in everything]
        for r, lat in shown:
            if lat is not None:
                ax2.scatter(lat * 1e6, r.value, s=40, color="black" if r is base else "#F58518")
        _label(ax2, [(lat * 1e6, r.value, r.name) for r, lat in shown if lat is not None])
        ax2.set_xscale("log")
        ax2.set_xlabel(f"latency on {chip} (µs, roofline, log)")
        ax2.set_ylabel(task.metric)
        ax2.set_title(f"{task.metric} vs latency on {chip}")
        ax2.grid(alpha=0.3)
    save_atomic(fig, path)
