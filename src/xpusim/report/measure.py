"""Predicted vs measured table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from xpusim.engines.measure import Measured
from xpusim.units import MIB


def print_measured(console: Console, m: Measured, top: int = 25) -> None:
    t = Table(title=f"{m.model}: predicted on {m.chip} vs measured on this CPU ({m.threads} thread(s), median of "
                    f"{m.repeats})", title_justify="left", header_style="bold")
    for col in ("layer", "predicted µs", "measured µs", "error", "largest term"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    rows = sorted(m.layers, key=lambda r: -r.measured_s)[:top]
    for r in rows:
        t.add_row(r.module, f"{r.predicted_s * 1e6:,.1f}", f"{r.measured_s * 1e6:,.1f}", f"{100 * r.error:+.0f}%",
                  r.term)
    console.print(t)
    console.print(
        f"{len(m.layers)} leaf layers (slowest {len(rows)} shown): median |error| {100 * m.median_abs_error:.0f}% · "
        f"whole model predicted {m.predicted_total_s * 1e3:.2f} ms, measured {m.measured_total_s * 1e3:.2f} ms "
        f"({100 * m.total_error:+.0f}%)"
    )
    if m.faulted_bytes is not None:
        console.print(f"page faults per forward: {m.faulted_bytes / MIB:,.1f} MiB measured; first touch charged for "
                      f"{m.fresh_bytes / MIB:,.1f} MiB (outputs the allocator maps anew every time; reused heap pages "
                      "it returned to the OS and faults again are not modelled)")
