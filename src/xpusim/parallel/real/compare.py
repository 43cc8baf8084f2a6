"""A real run's record turned into the simulator's terms: the measured timeline (for the same trace format as
``xpusim parallel --trace``), and the simulator fed with the measured per-action compute times."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from xpusim.parallel.events import Event, Timeline, run_schedule
from xpusim.parallel.plan import SCHEDULES
from xpusim.parallel.real.spec import RunSpec
from xpusim.parallel.schedules import Action, PipelineSchedule, build

COMPUTE = ("F", "B", "W")


def _step_windows(report: dict[str, Any]) -> dict[int, tuple[float, float]]:
    spans: dict[int, tuple[float, float]] = {}
    for rank in report["events"]:
        for _, kind, _, mb, start, end in rank["events"]:
            if kind == "step":
                s0, s1 = spans.get(mb, (start, end))
                spans[mb] = (min(s0, start), max(s1, end))
    return spans


def counted_steps(report: dict[str, Any]) -> list[int]:
    """Steps that count: all but the first (warm-up) when there are more than two."""
    steps = sorted(_step_windows(report))
    return steps[1:] if len(steps) > 2 else steps


def measured_timeline(report: dict[str, Any]) -> Timeline:
    """Every recorded event of every rank, times from the start of the first step."""
    spans = _step_windows(report)
    t0 = min(s for s, _ in spans.values())
    events: list[Event] = []
    busy: dict[int, float] = defaultdict(float)
    for rank in report["events"]:
        r = rank["rank"]
        for name, kind, _, _, start, end in rank["events"]:
            if kind == "step":
                continue
            events.append(Event(rank=r, name=name, kind=kind, start_s=start - t0, end_s=end - t0))
            if kind in COMPUTE:
                busy[r] += end - start
    ranks = report["ranks"]
    end = max(s1 for _, s1 in spans.values()) - t0
    compute_end = max((e.end_s for e in events if e.kind in COMPUTE), default=end)
    return Timeline(events=tuple(sorted(events, key=lambda e: (e.rank, e.start_s))), ranks=ranks,
                    busy_s=tuple(busy[r] for r in range(ranks)), pipeline_end_s=compute_end, step_s=end)


def _as_run(spec: RunSpec, report: dict[str, Any], step: int) -> tuple[PipelineSchedule, dict[tuple[int, str], float],
                                                                    float, float]:
    """The order each rank really ran its actions in (one step); the mean measured time of each (stage, kind)
    over the counted steps; and two measured costs between actions: the point-to-point delay (a waiting rank's
    start minus its input's end) and the per-action overhead of the schedule's own code (the gap between two
    actions of a rank that did not wait)."""
    spans = _step_windows(report)
    counted = counted_steps(report)
    p, v, m = spec.plan.pp, spec.plan.vp, spec.plan.micro_batches
    durations: dict[tuple[int, str], list[float]] = defaultdict(list)
    ranks: list[tuple[Action, ...]] = []
    placement: dict[int, int] = {}
    split = any(kind == "W" for rank in report["events"] for _, kind, *_ in rank["events"])
    last = p * v - 1
    ends: dict[tuple[int, int, str, int], float] = {}  # (step, stage, kind, mb) -> end
    per_rank: list[list[tuple[int, int, str, int, float, float]]] = []
    for rank in sorted(report["events"], key=lambda r: r["rank"]):
        rows = []
        for _, kind, stage, mb, start, end in sorted(rank["events"], key=lambda e: e[4]):
            if kind not in COMPUTE:
                continue
            k = next((k for k in spans if spans[k][0] <= start <= spans[k][1]), -1)
            rows.append((k, stage, kind, mb, start, end))
            ends[(k, stage, kind, mb)] = end
            if k in counted:
                durations[(stage, kind)].append(end - start)
        per_rank.append(rows)
        acts = [Action(stage, kind, mb) for k, stage, kind, mb, _, _ in rows if k == step]  # type: ignore[arg-type]
        for a in acts:
            placement[a.stage] = rank["rank"]
        ranks.append(tuple(acts))
    delays, overheads = [], []
    for rows in per_rank:
        for (k0, *_, end0), (k, stage, kind, mb, start, _) in itertools.pairwise(rows):
            if k not in counted or k0 != k:
                continue
            if kind == "F":
                dep = (k, stage - 1, "F", mb) if stage > 0 else None
            elif kind == "B":
                dep = (k, stage, "F", mb) if stage == last else (k, stage + 1, "B", mb)
            else:
                dep = (k, stage, "B", mb)
            dep_end = ends.get(dep) if dep is not None else None
            remote = dep is not None and placement.get(dep[1]) != placement.get(stage)
            if dep_end is not None and remote and dep_end > end0:
                delays.append(start - dep_end)
            elif dep_end is None or dep_end <= end0:
                overheads.append(start - end0)
    sched = PipelineSchedule(name=f"{spec.schedule} as run", p=p, m=m, v=v, ranks=tuple(ranks), split_backward=split,
                             placement=tuple(placement[s] for s in range(p * v)))
    return (sched, {k: statistics.mean(ds) for k, ds in durations.items()},
            statistics.median(delays) if delays else 0.0, statistics.median(overheads) if overheads else 0.0)


def _simulated(sched: PipelineSchedule, mean_s: dict[tuple[int, str], float], transfer_s: float,
               overhead_s: float) -> dict[str, Any]:
    events = run_schedule(sched, lambda a: mean_s.get((a.stage, a.kind), 0.0) + overhead_s, lambda a: transfer_s)
    end = max(e.end_s for e in events) - overhead_s  # no overhead after the last action
    busy = [sum(e.end_s - e.start_s - overhead_s for e in events if e.rank == r) for r in range(sched.p)]
    return {"pipeline_s": end, "bubble_fraction": (end - max(busy)) / max(busy),
            "idle_s_per_rank": {str(r): end - b for r, b in enumerate(busy)}}


def first_pipeline(report: dict[str, Any]) -> dict[str, Any]:
    """The record of one pipeline of a 3-D run — the ranks of the first data-parallel replica's first tensor-parallel
    rank, renumbered by their pipeline coordinate — which is what the simulator's schedule describes (the other
    pipelines run the same order). A pipeline-only run is returned as it is."""
    coords = report.get("coords")
    if not coords or all(c["dp"] == 0 and c["tp"] == 0 for c in coords):
        return report
    keep = {r: c["pp"] for r, c in enumerate(coords) if c["dp"] == 0 and c["tp"] == 0}
    events = [dict(rank, rank=keep[rank["rank"]]) for rank in report["events"] if rank["rank"] in keep]
    return dict(report, ranks=len(keep), events=events)


def compare(spec: RunSpec, report: dict[str, Any]) -> dict[str, Any]:
    """Feed the measured per-action times into the simulator and return the simulated step time, bubble and idle
    time per rank — for the action order the ranks really ran, and for xpusim's own schedule of the same name."""
    if spec.plan.pp < 2:
        raise ValueError("--compare simulates the pipeline: it needs --plan pp=N with N >= 2")
    coords = report.get("coords")
    report = first_pipeline(report)
    # the simulated ranks are the first pipeline's: named by their global rank, as the measured ones are
    global_rank = {c["pp"]: r for r, c in enumerate(coords) if c["dp"] == 0 and c["tp"] == 0} if coords else {}
    step = counted_steps(report)[-1]
    sched, mean_s, transfer, overhead = _as_run(spec, report, step)
    opt = statistics.median(end - start for rank in report["events"] for _, kind, _, _, start, end in rank["events"]
                            if kind == "opt")
    # GPT pipelines: the tied embedding's gradient sum between the first and last stage, before the optimizer
    ties = [end - start for rank in report["events"] for _, kind, _, _, start, end in rank["events"] if kind == "tie"]
    tie = statistics.median(ties) if ties else 0.0
    # 3-D plans: the data-parallel gradient all-reduce after the pipeline's flush, before the optimizer
    dps = [end - start for rank in report["events"] for _, kind, _, _, start, end in rank["events"] if kind == "dp"]
    dp = statistics.median(dps) if dps else 0.0
    as_run = _simulated(sched, mean_s, transfer, overhead)
    idle = {str(global_rank.get(int(r), int(r))): t for r, t in as_run["idle_s_per_rank"].items()}
    out: dict[str, Any] = {"step_time_s": as_run["pipeline_s"] + tie + dp + opt,
                           "bubble_fraction": as_run["bubble_fraction"],
                           "idle_s_per_rank": idle, "optimizer_s": opt,
                           "transfer_s": transfer, "overhead_s_per_action": overhead,
                           "mean_action_s": {f"{s}{k}": t for (s, k), t in sorted(mean_s.items())},
                           "order": sched.compact()}
    if ties:
        out["tied_embedding_s"] = tie
    if dps:
        out["data_parallel_allreduce_s"] = dp
    if spec.schedule in SCHEDULES:  # the run executed this very order (see real/pipeline.py)
        own = _simulated(build(spec.schedule, spec.plan.pp, spec.plan.micro_batches, spec.plan.vp), mean_s,
                         transfer, overhead)
        out["xpusim_schedule"] = {"step_time_s": own["pipeline_s"] + tie + dp + opt,
                                  "bubble_fraction": own["bubble_fraction"]}
    return out


def run_result(spec: RunSpec, report: dict[str, Any], simulated: dict[str, Any] | None = None,
               trace: Path | str | None = None, predicted: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``xpusim run`` and ``python -m xpusim.run`` show (``print_run``'s input, and their ``--format json``):
    the plan with its schedule, the model, ranks, backend, the measured summary, the trace's path, and when
    present the simulated summary (``compare``), the prediction made before the run (``--predict``:
    `xpusim.parallel.real.predict.Prediction.versus`) and the gradient check."""
    result: dict[str, Any] = {"plan": spec.plan.to_dict() | {"schedule": spec.schedule}, "model": spec.model.text(),
                              "ranks": report["ranks"], "backend": report["backend"], "measured": report["measured"],
                              "trace": str(trace) if trace is not None else None}
    if simulated is not None:
        result["simulated"] = simulated
    if predicted is not None:
        result["predicted"] = predicted
    if "check" in report:
        result["check"] = report["check"]
    return result
