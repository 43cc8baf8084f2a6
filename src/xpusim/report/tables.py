"""Render workloads as rich tables (human-readable numbers); JSON and CSV live on `Workload` itself."""

from __future__ import annotations

from collections.abc import Sequence

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
    console.print(wl.summary(), markup=False)


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
    from xpusim.api.calls import changed_layers

    changed = changed_layers(results)
    if changed:
        console.print(f"layers whose shapes change ({param} {results[0][0]} → {results[-1][0]}), first {len(changed)}:")
        for c in changed:
            console.print(f"  {c['name']}: {fmt_shape(c['from'])} → {fmt_shape(c['to'])}")


def print_models(console: Console) -> None:
    """Every model `xpusim analyze` knows by name, by family."""
    from xpusim.workload.zoo import llm_configs, torchvision_names, torchvision_task_names

    console.print("[bold]language models[/bold] (configs shipped, built on the meta device):")
    for name, entry in llm_configs().items():
        console.print(f"  {name:<12} {entry.get('source', '')}")
    names = torchvision_names()
    console.print(f"[bold]torchvision classifiers[/bold] ({len(names)}):\n  " + ", ".join(names))
    tasks = torchvision_task_names()
    console.print(f"[bold]torchvision detection and segmentation[/bold] ({len(tasks)}, no weights):\n  "
                  + ", ".join(tasks))
    console.print("and any file.py:factory returning an nn.Module (or (module, example_inputs[, example_kwargs])).")
