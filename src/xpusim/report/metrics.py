"""The six key metrics as a console table: one row per design point, the assumptions under it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from xpusim.report.console import err


def _num(v: float | None, scale: float = 1.0) -> str:
    if v is None:
        return "-"
    x = v * scale
    if x and (abs(x) >= 1e9 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:,.0f}" if abs(x) >= 1e3 else f"{x:.4g}"


def print_report(console: Console, report: Any, hint: bool = False) -> None:
    """The table of a `xpusim.api.report.Report`, best-of lines and the assumptions (and, with ``hint``, how to get
    the page)."""
    llm = report.kind == "llm"
    t = Table(title=f"{report.model}: the six key metrics per design point", title_justify="left")
    heads = ["design point", "status", "accuracy ↑", f"throughput {'tok' if llm else 'samples'}/s ↑", "latency ms ↓",
             f"energy J/{'token' if llm else 'sample'} ↓", f"cost $/M{' tokens' if llm else ''} ↓",
             "flexibility ↑"]
    for i, h in enumerate(heads):
        t.add_column(h, justify="left" if i < 2 else "right")
    for p in report.points:
        m = p.metrics
        acc = "reference" if m["accuracy"] is None and p.ok else _num(m["accuracy"])
        flex = "-" if m["flexibility"] is None else f"{100 * m['flexibility']:.1f}%"
        t.add_row(p.label, p.status if p.ok else f"[yellow]{p.status}[/yellow]", acc, _num(m["throughput_per_s"]),
                  _num(m["latency_s"], 1e3), _num(m["energy_j"]), _num(m["cost_usd_per_million"]), flex)
    console.print(t)
    for p in report.points:
        if p.details.get("reason"):
            console.print(f"{p.label}: {p.details['reason']}", markup=False)
    console.print(report.summary().split("\n", 1)[-1] if "\n" in report.summary() else "", markup=False)
    for a in report.assumptions:
        console.print(f"- {a}", markup=False)
    if hint:
        err.print("add --out report.html for the interactive page")
