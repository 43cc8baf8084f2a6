"""The table of `xpusim serve`: latency percentiles, throughput, the KV cache, and the roofline bound beside."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from xpusim.api.serve import ServeResult


def print_serve(console: Console, r: ServeResult) -> None:
    d = r.to_dict()
    par = f"tp={r.parallel.tp} pp={r.parallel.pp} on {r.parallel.gpus} × {r.chip}" if r.parallel.gpus > 1 else r.chip
    t = Table(title=f"{r.model} served on {par} · {r.config.scheduler} scheduler · {r.workload}",
              title_justify="left", header_style="bold")
    for col in ("latency", "mean", "p50", "p90", "p99"):
        t.add_column(col, justify="left" if col == "latency" else "right")
    for key, label, scale, unit in (("ttft_s", "time to first token", 1.0, "s"),
                                    ("tpot_s", "time per output token", 1e3, "ms"),
                                    ("e2e_s", "end to end", 1.0, "s"), ("queue_s", "queueing", 1.0, "s")):
        row = d[key]
        t.add_row(label, *(f"{row[q] * scale:,.3f} {unit}" for q in ("mean", "p50", "p90", "p99")))
    console.print(t)
    b = d["roofline_bound"]
    chips = r.disaggregated["gpus"] if r.disaggregated is not None else r.parallel.gpus
    console.print(f"throughput {d['requests_per_s']:.2f} requests/s, {d['output_tokens_per_s']:,.0f} output tokens/s"
                  + (f" ({d['output_tokens_per_s'] / chips:,.0f} per chip)" if chips > 1 else "")
                  + f" over {d['makespan_s']:,.1f} s", markup=False)
    console.print(f"busy {b['busy_s']:,.1f} s: {b['output_tokens_per_busy_s']:,.0f} output tokens per busy second; "
                  f"the same batches on the ideal roofline (no CPU time) {b['roofline_busy_s']:,.1f} s, "
                  f"{b['roofline_output_tokens_per_busy_s']:,.0f} per second — the bound", markup=False)
    console.print(f"KV cache {d['kv_blocks']:,} blocks per chip, {100 * d['kv_utilization']:.0f}% used on average · "
                  f"at most {d['max_running']} sequences running · {d['preemptions']} preemptions · "
                  f"{d['iterations']:,} iterations", markup=False)
    if r.disaggregated is not None:
        g, kv = r.disaggregated, r.disaggregated["kv_transfer_s"]
        console.print(f"disaggregated: {g['prefill']} prefill + {g['decode']} decode instances ({g['gpus']} chips); "
                      f"KV transfer p50 {kv['p50'] * 1e3:.2f} ms, p99 {kv['p99'] * 1e3:.2f} ms on {g['fabric']}",
                      markup=False)
    if r.capacity is not None:
        c = r.capacity
        console.print(f"capacity: {c.rate_per_s:.2f} requests/s at {c.percentile} "
                      + ", ".join(f"{k} <= {v:g} s" for k, v in c.slo.items())
                      + f" (bisection over {len(c.tried)} Poisson runs)", markup=False)
    console.print("basis: " + "; ".join(r.basis), style="dim", markup=False)
