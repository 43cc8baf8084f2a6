"""Rendering of parallel-training results: the summary table, the search table, the Chrome/Perfetto trace and
the Gantt chart of the pipeline schedule."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from xpusim.files import check_output, write_atomic
from xpusim.parallel.events import Timeline
from xpusim.parallel.simulate import StepResult
from xpusim.units import GIB

KIND_COLORS = {"F": "#4C78A8", "B": "#54A24B", "W": "#F58518", "dp": "#E45756", "opt": "#9D755D"}
KIND_LABELS = {"F": "forward", "B": "backward", "W": "weight gradient", "dp": "data-parallel communication",
               "opt": "optimizer step"}


def _gib(x: float) -> str:
    return f"{x / GIB:,.2f} GiB"


def _s(x: float) -> str:
    return f"{x * 1e3:,.1f} ms" if x < 1 else f"{x:,.3f} s"


def print_result(console: Console, r: StepResult) -> None:
    plan = r.plan
    console.print(f"[bold]{r.model.config.name}[/bold] on {plan.gpus} × {r.cluster.load_chip().name} "
                  f"({r.cluster.name}), seq {r.model.seq_len}: {plan.label()}")
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("step time", _s(r.step_time_s))
    t.add_row("throughput", f"{r.samples_per_s:,.2f} samples/s, {r.tokens_per_s:,.0f} tokens/s")
    t.add_row("model TFLOP/s per GPU", f"{r.model_tflops_per_gpu:,.1f} (MFU {100 * r.mfu:.1f}%)")
    t.add_row("hardware TFLOP/s per GPU", f"{r.hardware_tflops_per_gpu:,.1f} (HFU {100 * r.hfu:.1f}%)")
    t.add_row("pipeline bubble", f"{100 * r.bubble_fraction:.2f}% of the busiest rank's compute")
    console.print(t)
    m = Table(title="memory per GPU (most loaded pipeline rank)", title_justify="left")
    for col in ("params", "grads", "optimizer", "activations", "buffers", "total", "capacity"):
        m.add_column(col, justify="right")
    d = r.memory.to_dict()
    m.add_row(*(_gib(d[k]) for k in ("params", "grads", "optimizer", "activations", "buffers", "total")),
              _gib(r.capacity_bytes))
    console.print(m)
    verdict = "[green]fits[/green]" if r.fits else "[red]OUT OF MEMORY[/red]"
    console.print(f"memory verdict: {verdict} ({100 * r.memory.total / r.capacity_bytes:.0f}% of capacity)")
    c = Table(title="communication per step on one rank", title_justify="left")
    cols = tuple(k for k in ("tp", "ep", "cp", "pp", "dp", "exposed") if k in r.comm_s)
    for col in cols:
        c.add_column(col, justify="right")
    c.add_row(*(_s(r.comm_s[k]) for k in cols))
    console.print(c)
    hidden = " (less what the weight-gradient GEMMs hide)" if r.plan.hides_tp_backward else ""
    sends = ("blocking sends of whole tensors (DeepSpeed), holding the sender" if r.plan.blocking_sends
             else "asynchronous, exposed only where a stage waits for it")
    console.print("tp" + (" and ep (all-to-all)" if "ep" in r.comm_s else "") + f": on the critical path{hidden}; "
                  + ("cp: the ring of keys and values beyond the attention it hides behind; " if "cp" in r.comm_s
                     else "") + f"pp: {sends}; dp: "
                  + ("overlapped with the last backward (DDP buckets)" if r.plan.dp_overlap else
                     "after the last backward") + "; exposed: what lengthens the step.")


def search_table(results: Sequence[StepResult]) -> Table:
    t = Table(title="best plans (re-simulated), fastest first", title_justify="left")
    moe = any(r.model.config.moe for r in results)  # the expert-parallel column only where experts exist
    cp = any(r.plan.cp > 1 for r in results)  # and the context-parallel one where a plan uses it
    for col in ("#", "dp", "tp", "pp", *(("cp",) if cp else ()), *(("ep", "etp") if moe else ()), "v", "b", "m",
                "schedule", "zero", "sp", "recompute", "step", "MFU", "bubble", "memory/GPU"):
        t.add_column(col, justify="right" if col not in ("schedule", "recompute") else "left")
    for i, r in enumerate(results, 1):
        p = r.plan
        t.add_row(str(i), str(p.dp), str(p.tp), str(p.pp), *((str(p.cp),) if cp else ()),
                  *((str(p.ep), str(p.expert_tp)) if moe else ()), str(p.vp),
                  str(p.micro_batch), str(p.micro_batches), p.schedule, str(p.zero), "yes" if p.sp else "no",
                  p.recompute, _s(r.step_time_s), f"{100 * r.mfu:.1f}%", f"{100 * r.bubble_fraction:.1f}%",
                  _gib(r.memory.total))
    return t


def trace_dict(timeline: Timeline, title: str) -> dict[str, Any]:
    """Chrome trace-event JSON (chrome://tracing, ui.perfetto.dev): one process per pipeline rank, a compute
    thread and a communication thread, times in microseconds."""
    events: list[dict[str, Any]] = []
    for r in range(timeline.ranks):
        events.append({"ph": "M", "name": "process_name", "pid": r, "args": {"name": f"pipeline rank {r}"}})
        events.append({"ph": "M", "name": "thread_name", "pid": r, "tid": 0, "args": {"name": "compute"}})
        events.append({"ph": "M", "name": "thread_name", "pid": r, "tid": 1, "args": {"name": "communication"}})
    for e in timeline.events:
        events.append({"ph": "X", "name": e.name, "cat": KIND_LABELS.get(e.kind, e.kind), "pid": e.rank,
                       "tid": 0 if e.kind in ("F", "B", "W", "opt") else 1,
                       "ts": round(e.start_s * 1e6, 3), "dur": round((e.end_s - e.start_s) * 1e6, 3)})
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"title": title}}


def write_figures(step: Any, trace: Path | None, plot: Path | None) -> None:
    """A simulated step's Chrome/Perfetto ``trace`` and Gantt ``plot`` (each when given), titled by model, cluster
    and plan."""
    title = f"{step.model.config.name} on {step.cluster.name}: {step.plan.label()}"
    if trace is not None:
        write_trace(step.timeline, trace, title)
    if plot is not None:
        gantt(step.timeline, plot, title)


def write_trace(timeline: Timeline, path: Path, title: str) -> None:
    """Write the trace atomically (temporary file renamed into place)."""
    check_output(path, "--trace")
    write_atomic(path, json.dumps(trace_dict(timeline, title), separators=(",", ":")))


def gantt(timeline: Timeline, path: Path, title: str) -> None:
    """A Gantt chart of the step: one row per pipeline rank, colored by action kind."""
    from matplotlib.patches import Patch

    from xpusim.report.plots import plt, save_atomic

    height = max(2.0, 0.45 * timeline.ranks + 1.2)
    fig, ax = plt.subplots(figsize=(12, height))
    scale, unit = (1e3, "ms") if timeline.step_s < 10 else (1.0, "s")
    by_kind: dict[str, list[tuple[int, float, float]]] = {}
    for e in timeline.events:
        by_kind.setdefault(e.kind, []).append((e.rank, e.start_s * scale, (e.end_s - e.start_s) * scale))
    for kind, rows in by_kind.items():
        for rank in {r for r, _, _ in rows}:
            bars = [(s, w) for r, s, w in rows if r == rank]
            compute = kind in ("F", "B", "W", "opt")
            lane = (rank - 0.4, 0.55) if compute else (rank + 0.18, 0.22)  # communication in a thin lane below
            ax.broken_barh(bars, lane, facecolors=KIND_COLORS.get(kind, "gray"), edgecolor="white",
                           linewidth=0.3)
    ax.set_yticks(range(timeline.ranks), [f"rank {r}" for r in range(timeline.ranks)])
    ax.invert_yaxis()
    ax.set_xlabel(f"time ({unit})")
    ax.set_title(title)
    ax.legend(handles=[Patch(color=KIND_COLORS[k], label=KIND_LABELS[k]) for k in KIND_COLORS if k in by_kind],
              loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.02 * (6 / height)), ncol=5, frameon=False)
    save_atomic(fig, path)


def print_run(console: Console, r: dict[str, Any]) -> None:
    """Measured summary of a real run, beside the simulated one (``--compare``) and the prediction made before it
    (``--predict``), each with its error against the measurement."""
    meas, sim, pred = r["measured"], r.get("simulated"), r.get("predicted")
    plan = r["plan"]
    console.print(f"[bold]{r['model']}[/bold], {r['ranks']} ranks ({r['backend']}): dp={plan['dp']} tp={plan['tp']} "
                  f"pp={plan['pp']}" + (f" ep={plan['ep']}" if plan.get("ep", 1) > 1 else "")
                  + (f" v={plan['vp']}" if plan["vp"] > 1 else "")
                  + f", {plan['micro_batches']} micro-batches of {plan['micro_batch']}, schedule {plan['schedule']}")
    t = Table(box=None)
    t.add_column("")
    t.add_column("measured", justify="right")
    others = [(name, d) for name, d in (("simulated", sim), ("predicted", pred)) if d is not None]
    for name, _ in others:
        t.add_column(name, justify="right")
        t.add_column("error", justify="right")

    def row(label: str, m: float, key: str, fmt: Callable[[float], str], points: bool = False,
            sub: str | None = None) -> None:
        cells = [label, fmt(m)]
        for _, d in others:
            s = (d.get(key) or {}).get(sub) if sub is not None else d.get(key)
            err = "" if s is None else f"{100 * (s - m):+.1f} points" if points else \
                f"{100 * (s - m) / m:+.1f}%" if m else ""
            cells += [fmt(s) if s is not None else "", err]
        t.add_row(*cells)

    row("step time", meas["step_time_s"], "step_time_s", _s)
    row("bubble fraction", meas["bubble_fraction"], "bubble_fraction", lambda x: f"{100 * x:.1f}%", points=True)
    for rank, idle in meas.get("idle_s_per_rank", {}).items():
        row(f"idle, rank {rank}", idle, "idle_s_per_rank", _s, sub=rank)
    console.print(t)
    rss = ", ".join(f"{b / 2**20:,.0f}" for b in meas["peak_rss_bytes_per_rank"])
    console.print(f"peak RSS per rank: {rss} MiB; step times: "
                  + ", ".join(_s(x) for x in meas["step_times_s"]) + " (first step excluded as warm-up when 3+)")
    if sim is not None:
        console.print("simulated: the event simulator on the action order each rank really ran, with each (stage, "
                      f"kind)'s mean measured time, the measured transfer ({_s(sim['transfer_s'])}) and per-action "
                      f"overhead ({_s(sim['overhead_s_per_action'])}), plus the measured optimizer step"
                      + (f" and data-parallel all-reduce ({_s(sim['data_parallel_allreduce_s'])})"
                         if "data_parallel_allreduce_s" in sim else ""))
        own = sim.get("xpusim_schedule")
        if own:
            console.print(f"with xpusim's own {plan['schedule']} order: step {_s(own['step_time_s'])}, bubble "
                          f"{100 * own['bubble_fraction']:.1f}%")
    if pred is not None:
        console.print("predicted: before the run, from the cost model — per stage and micro-batch F "
                      + "/".join(_s(x) for x in pred["forward_s_per_stage"]) + ", B "
                      + "/".join(_s(x) for x in pred["backward_s_per_stage"])
                      + f" (roofline on {pred['chip']}{', calibrated' if pred.get('calibration') else ''}), "
                      f"point-to-point {_s(pred['p2p_s'])} (measured gloo α–β), "
                      f"optimizer {_s(pred['optimizer_s'])}" + (f", tied embedding {_s(pred['tied_embedding_s'])}"
                                                                if pred["tied_embedding_s"] else "")
                      + (f", dp all-reduce {_s(pred['allreduce_s'])}" if pred["allreduce_s"] else ""))
        roof, cal = pred.get("roofline_only"), pred.get("calibration")
        if cal and roof:
            console.print("calibrated: the roofline's compute × " + ", ".join(
                f"{f:.2f}/{b:.2f}" for f, b in zip(cal["forward"], cal["backward"], strict=True))
                + " (forward/backward per stage: the stages timed on this CPU before the run, every rank's at once) "
                f"and {_s(cal.get('overhead_s_per_action', 0.0))} per action of the pipeline runtime's own; "
                f"the roofline alone predicts step {_s(roof['step_time_s'])}"
                + (f" ({roof['error_pct']:+.1f}%)" if roof.get("error_pct") is not None else "")
                + f", bubble {100 * roof['bubble_fraction']:.1f}%")
    chk = r.get("check")
    if chk:
        console.print(f"vs one process: loss {chk['loss']:.6f} vs {chk['reference_loss']:.6f}, largest gradient "
                      f"error {chk['max_grad_rel_error']:.2e} (relative, {chk['worst_param']})")
