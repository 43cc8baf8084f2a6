"""Render workloads as rich tables (human-readable numbers); JSON and CSV live on `Workload` itself."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from xpusim.units import human
from xpusim.workload.model import OpCost, Workload


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) if shape else "-"


def _main_input(op: OpCost) -> str:
    """The activation input's shape: the first input that is not a weight (for matmul, the larger operand)."""
    if not op.input_shapes:
        return "-"
    if op.kind == "matmul" and op.op.startswith(("aten.addmm", "aten.baddbmm")) and len(op.input_shapes) >= 2:
        return fmt_shape(op.input_shapes[1])
    return fmt_shape(op.input_shapes[0])


def layer_table(wl: Workload, depth: int | None = None, top: int | None = None) -> Table:
    rows = wl.ops if depth is None else tuple(wl.grouped(depth))
    if top is not None:
        rows = tuple(sorted(rows, key=lambda o: -o.flops)[:top])
    title = f"{wl.model} · {wl.mode} · {wl.dtype} · input {' '.join(fmt_shape(s) for s in wl.input_shapes)}"
    t = Table(title=title, title_justify="left", show_footer=True, header_style="bold")
    tot = wl.totals()
    t.add_column("layer", footer="total", overflow="fold", max_width=48)
    t.add_column("kind", footer="")
    t.add_column("input", footer="")
    t.add_column("output", footer="")
    t.add_column("MACs", justify="right", footer=human(tot.macs))
    t.add_column("FLOPs", justify="right", footer=human(tot.flops))
    t.add_column("params", justify="right", footer=human(tot.params))
    t.add_column("read B", justify="right", footer=human(tot.bytes_read))
    t.add_column("write B", justify="right", footer=human(tot.bytes_written))
    t.add_column("FLOP/B", justify="right", footer=f"{tot.intensity:.1f}")
    for o in rows:
        t.add_row(
            o.name,
            o.kind,
            _main_input(o),
            fmt_shape(o.output_shape),
            human(o.macs) if o.macs else "",
            human(o.flops),
            human(o.params) if o.params else "",
            human(o.bytes_read),
            human(o.bytes_written),
            f"{o.intensity:.1f}",
        )
    return t


def kind_table(wl: Workload) -> Table:
    t = Table(title="by kind", title_justify="left", header_style="bold")
    for col in ("kind", "ops", "MACs", "FLOPs", "% FLOPs", "bytes moved", "FLOP/B"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    total_flops = wl.totals().flops or 1
    counts: dict[str, int] = {}
    for o in wl.ops:
        counts[o.kind] = counts.get(o.kind, 0) + 1
    for kind, tot in wl.by_kind().items():
        t.add_row(kind, str(counts[kind]), human(tot.macs), human(tot.flops), f"{100 * tot.flops / total_flops:.1f}",
                  human(tot.bytes_read + tot.bytes_written), f"{tot.intensity:.1f}")
    return t


def print_workload(console: Console, wl: Workload, depth: int | None = None, top: int | None = None) -> None:
    console.print(layer_table(wl, depth, top))
    console.print(kind_table(wl))
    tot = wl.totals()
    console.print(
        f"[bold]totals[/bold]: {tot.macs:,} MACs, {tot.flops:,} FLOPs, {tot.params:,} params, "
        f"{tot.bytes_read:,} B read ({tot.weight_bytes:,} weights), {tot.bytes_written:,} B written, "
        f"intensity {tot.intensity:.2f} FLOP/B"
    )
    if wl.mode == "training":
        fwd, bwd = wl.totals("forward"), wl.totals("backward")
        ratio = bwd.macs / fwd.macs if fwd.macs else 0.0
        console.print(f"forward {fwd.macs:,} MACs, backward {bwd.macs:,} MACs (backward/forward = {ratio:.3f})")
    if wl.uncounted:
        listed = ", ".join(f"{k} ×{v}" for k, v in wl.uncounted.items())
        console.print(f"[yellow]uncounted ops (no cost formula; not included above)[/yellow]: {listed}")
    else:
        console.print("uncounted ops: none")


def sweep_dict(model: str, param: str, results: Sequence[tuple[int, Workload]]) -> dict[str, Any]:
    return {
        "model": model,
        "sweep": {"param": param, "values": [v for v, _ in results]},
        "results": [{"value": v, "input_shapes": [list(s) for s in wl.input_shapes], "totals": wl.totals().to_dict(),
                     "uncounted": dict(wl.uncounted)} for v, wl in results],
        "changed_layers": changed_layers(results),
    }


def changed_layers(results: Sequence[tuple[int, Workload]], limit: int = 12) -> list[dict[str, Any]]:
    """Layers whose output shape differs between the first and last value of a sweep (first ``limit``)."""
    if len(results) < 2:
        return []
    first, last = results[0][1], results[-1][1]
    last_by_name = {o.name: o for o in last.ops}
    out = []
    for o in first.ops:
        other = last_by_name.get(o.name)
        if other is not None and other.output_shape != o.output_shape:
            out.append({"name": o.name, "from": list(o.output_shape), "to": list(other.output_shape)})
            if len(out) >= limit:
                break
    return out


def print_sweep(console: Console, model: str, param: str, results: Sequence[tuple[int, Workload]]) -> None:
    t = Table(title=f"{model}: cost vs {param}", title_justify="left", header_style="bold")
    for col in (param, "input", "MACs", "× first", "FLOPs", "params", "weight B", "activation B", "FLOP/B"):
        t.add_column(col, justify="right")
    base = results[0][1].totals().macs or 1
    for v, wl in results:
        tot = wl.totals()
        t.add_row(str(v), " ".join(fmt_shape(s) for s in wl.input_shapes), human(tot.macs), f"{tot.macs / base:.2f}",
                  human(tot.flops), human(tot.params), human(tot.weight_bytes), human(tot.activation_bytes),
                  f"{tot.intensity:.1f}")
    console.print(t)
    changed = changed_layers(results)
    if changed:
        console.print(f"layers whose shapes change ({param} {results[0][0]} → {results[-1][0]}), first {len(changed)}:")
        for c in changed:
            console.print(f"  {c['name']}: {fmt_shape(c['from'])} → {fmt_shape(c['to'])}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2)
