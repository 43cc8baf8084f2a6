"""Tables for chips, roofline estimates and LLM inference estimates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from xpusim.engines.roofline import Estimate
from xpusim.hardware.chip import Chip
from xpusim.precision import CHIP_DTYPES

if TYPE_CHECKING:
    from xpusim.api.calls import LLMResult, NpuResult, RooflineResult
from xpusim.units import GIGA, TERA, human


def _tf(v: float | None) -> str:
    return f"{v / TERA:,.1f}" if v else "-"


def chip_dict(chip: Chip) -> dict[str, Any]:
    """Everything a user compares: peaks, memory, ridge points, efficiency per watt, links, price."""
    return {
        "name": chip.name,
        "title": chip.title,
        "vendor": chip.vendor,
        "kind": chip.kind,
        "year": chip.year,
        "process": chip.process,
        "tdp_w": chip.tdp_w,
        "price_usd": chip.price_usd,
        "peak_flops_per_s": {unit: {d: chip.peak_flops_per_s(d, unit) for d in chip.peaks_tflops(unit)}
                             for unit in ("tensor", "vector") if chip.peaks_tflops(unit)},
        "memory": [{"name": m.name, "capacity_bytes": m.capacity_bytes,
                    "bandwidth_bytes_per_s": m.bandwidth_bytes_per_s, "source": m.source} for m in chip.memory],
        "ridge_point_flops_per_byte": {d: chip.ridge_point(d) for d in chip.dtypes()},
        "ridge_point_by_memory_level": {m.name: {d: chip.ridge_point(d, i) for d in chip.dtypes()}
                                        for i, m in enumerate(chip.memory) if m.bandwidth_gb_per_s},
        "bytes_per_flop": {d: 1 / r for d in chip.dtypes() if (r := chip.ridge_point(d))},
        "flops_per_watt": {d: chip.flops_per_watt(d) for d in chip.dtypes() if chip.flops_per_watt(d)},
        "links": [{"name": link.name, "kind": link.kind,
                   "bandwidth_bytes_per_s_bidirectional": link.bandwidth_gb_per_s_bidirectional * GIGA,
                   "source": link.source} for link in chip.links],
        "compute_source": chip.compute_source,
    }


def catalog_table(chips: Sequence[Chip]) -> Table:
    t = Table(title="chip catalog: dense peak TFLOP/s (best unit), main memory, ridge point at bf16/fp16",
              title_justify="left", header_style="bold")
    for col in ("chip", "year", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "memory", "GB/s",
                "ridge F/B", "TFLOP/s/W", "TDP W"):
        t.add_column(col, justify="left" if col == "chip" else "right")
    for c in chips:
        half = "bf16" if c.best_peak_flops_per_s("bf16") else "fp16"
        ridge = c.ridge_point(half)
        per_w = c.flops_per_watt(half)
        mem = c.main_memory
        t.add_row(c.name, str(c.year or "-"), *(_tf(c.best_peak_flops_per_s(d)) for d in CHIP_DTYPES[1:]),
                  f"{mem.capacity_bytes / 2**30:.0f} GiB {mem.name}", f"{mem.bandwidth_gb_per_s:,.0f}",
                  f"{ridge:.0f}" if ridge else "-", f"{per_w / TERA:.2f}" if per_w else "-",
                  f"{c.tdp_w:.0f}" if c.tdp_w else "-")
    return t


def compare_table(chips: Sequence[Chip], dtype: str) -> Table:
    t = Table(title=f"chips side by side at {dtype}", title_justify="left", header_style="bold")
    t.add_column("metric")
    for c in chips:
        t.add_column(c.name, justify="right")

    def row(label: str, values: Sequence[str]) -> None:
        t.add_row(label, *values)

    row("title", [c.title for c in chips])
    row(f"peak {dtype} TFLOP/s (tensor)", [_tf(c.peak_flops_per_s(dtype, "tensor")) for c in chips])
    row(f"peak {dtype} TFLOP/s (vector)", [_tf(c.peak_flops_per_s(dtype, "vector")) for c in chips])
    row("main memory", [f"{c.main_memory.capacity_bytes / 2**30:.0f} GiB {c.main_memory.name}" for c in chips])
    row("memory bandwidth GB/s", [f"{c.main_memory.bandwidth_gb_per_s:,.0f}" for c in chips])
    row(f"ridge point FLOP/B ({dtype})", [f"{r:.1f}" if (r := c.ridge_point(dtype)) else "-" for c in chips])
    row("ridge at on-chip levels", [", ".join(f"{m.name} {r:.1f}" for i, m in enumerate(c.memory) if i and
                                              (r := c.ridge_point(dtype, i))) or "-" for c in chips])
    row("bytes per FLOP", [f"{1 / r:.4f}" if (r := c.ridge_point(dtype)) else "-" for c in chips])
    row("TDP W", [f"{c.tdp_w:.0f}" if c.tdp_w else "-" for c in chips])
    row(f"TFLOP/s per W ({dtype})", [f"{v / TERA:.2f}" if (v := c.flops_per_watt(dtype)) else "-" for c in chips])
    row("scale-up link GB/s (bidir)",
        [f"{link.bandwidth_gb_per_s_bidirectional:,.0f} {link.name}" if (link := c.scale_up_link()) else "-"
         for c in chips])
    row("process", [c.process or "-" for c in chips])
    row("launch price USD", [f"{c.price_usd:,.0f}" if c.price_usd else "-" for c in chips])
    return t


def roofline_table(est: Estimate, top: int | None = None) -> Table:
    ops = list(est.ops)
    if top is not None:
        ops = sorted(ops, key=lambda o: -o.time_s)[:top]
    t = Table(title=f"{est.model} on {est.chip.name} · {est.dtype} · batch {est.batch}", title_justify="left",
              header_style="bold", show_footer=True)
    t.add_column("layer", footer="total", overflow="fold", max_width=44)
    t.add_column("kind", footer="")
    t.add_column("FLOPs", justify="right", footer=human(est.flops))
    t.add_column("bytes", justify="right", footer=human(est.bytes))
    t.add_column("FLOP/B", justify="right", footer=f"{est.flops / est.bytes:.1f}" if est.bytes else "")
    t.add_column("time µs", justify="right", footer=f"{est.latency_s * 1e6:,.1f}")
    t.add_column("bound", footer="")
    t.add_column("TFLOP/s", justify="right", footer=f"{est.flops / est.latency_s / TERA:.1f}" if est.latency_s else "")
    for o in ops:
        t.add_row(o.name, o.kind, human(o.flops), human(o.bytes), f"{o.intensity:.1f}", f"{o.time_s * 1e6:,.2f}",
                  o.bound, f"{o.attainable_flops_per_s / TERA:.2f}")
    return t


def print_roofline(console: Console, result: RooflineResult, top: int | None = None) -> None:
    """The per-layer table, the result's summary and assumptions, and the measured table when there is one."""
    est = result.estimate
    console.print(roofline_table(est, top))
    console.print(result.summary(), markup=False)
    console.print("assumptions: " + "; ".join(est.assumptions), style="dim", markup=False)
    if result.measured is not None:
        from xpusim.report.measure import print_measured

        print_measured(console, result.measured)


def print_llm(console: Console, result: LLMResult) -> None:
    e = result.estimate
    t = Table(title=f"{e.config.name} on {e.chip.name} · batch {e.batch} · prompt {e.prompt_len} · generate "
                    f"{e.gen_len} · W{e.precision.w_bits}A{e.precision.a_bits}KV{e.precision.kv_bits}"
                    f" · FlashAttention {'on' if e.flash else 'off'}", title_justify="left", header_style="bold")
    for col in ("phase", "time", "FLOPs", "bytes", "compute-bound share", "energy J"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    t.add_row("prefill (TTFT)", f"{e.prefill.time_s * 1e3:.3f} ms", human(e.prefill.flops), human(e.prefill.bytes),
              f"{100 * e.prefill.compute_bound_share:.0f}%", f"{e.prefill.energy_j:.3g}")
    t.add_row("decode, per token", f"{e.time_per_output_token_s * 1e3:.3f} ms",
              human(e.decode.flops / max(e.gen_len, 1)), human(e.decode.bytes / max(e.gen_len, 1)),
              f"{100 * e.decode.compute_bound_share:.0f}%", f"{e.decode.energy_j / max(e.gen_len, 1):.3g}")
    console.print(t)
    console.print(result.summary(), markup=False)
    console.print("assumptions: " + "; ".join(e.assumptions), style="dim")


def print_npu(console: Console, result: NpuResult, top: int | None = None) -> None:
    """Per-layer NPU table, totals, notes and checks."""
    run, title = result.run, result.title
    c = run.cfg
    rows = list(run.layers)
    if top is not None:
        rows = sorted(rows, key=lambda r: -r.total_cycles)[:top]
    t = Table(title=f"{title} on a {c.rows}x{c.cols} array · {c.dtype} · dataflow {run.dataflow} · SRAM "
                    f"{c.ifmap_sram_bytes // 1024}/{c.filter_sram_bytes // 1024}/{c.ofmap_sram_bytes // 1024} KiB · "
                    f"DRAM {c.dram_bytes_per_cycle:g} B/cycle", title_justify="left", header_style="bold",
              show_footer=True)
    for col, footer in (("layer", "total"), ("df", ""), ("M", ""), ("N", ""), ("K", ""), ("compute cyc", ""),
                        ("stall cyc", ""), ("total cyc", f"{run.total_cycles:,}"), ("util", ""), ("map eff", ""),
                        ("DRAM rd B", ""), ("DRAM wr B", ""), ("energy µJ", f"{run.energy_j * 1e6:,.1f}")):
        t.add_column(col, justify="left" if col in ("layer", "df") else "right", footer=footer)
    for r in rows:
        gemm = r.kind == "gemm"
        t.add_row(r.name, r.dataflow, str(r.m) if gemm else "", str(r.n) if gemm else "",
                  (str(r.k) + (f" ×{r.groups}" if r.groups > 1 else "")) if gemm else "",
                  f"{r.compute_cycles:,}", f"{r.stall_cycles:,}", f"{r.total_cycles:,}",
                  f"{100 * r.utilization(c):.0f}%" if gemm else "",
                  f"{100 * r.mapping_efficiency:.0f}%" if gemm else "",
                  human(r.dram_reads.total()), human(r.dram_writes.total()), f"{r.energy_pj * 1e-6:,.2f}")
    console.print(t)
    first, *rest = result.summary().split("\n")
    console.print(first, markup=False)
    for line in rest:
        console.print(line, style="" if line.startswith("check ") else "dim", markup=False)
