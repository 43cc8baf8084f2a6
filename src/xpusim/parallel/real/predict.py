"""A real run's step time and bubble predicted before it runs, from the cost model alone: each stage's forward and
backward per micro-batch from the roofline of its ops on a chip (``xpusim probe``'s file of this machine), the
messages from measured gloo link costs (`xpusim.parallel.real.links`), and the plan's pipeline schedule through the
event simulator. ``xpusim run --predict host.yaml`` prints it, then the run measures it.

Where `compare` replays a run's *measured* action times (a check of the event executor), this is the check of the
cost model: nothing here reads a measurement of the run.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from xpusim.engines.roofline import roofline
from xpusim.hardware.chip import Chip
from xpusim.parallel.events import run_schedule
from xpusim.parallel.real.links import LinkCosts
from xpusim.parallel.real.models import build_stage, loss_fn
from xpusim.parallel.real.spec import PREDICTED_SCHEDULES, RunSpec, RunSpecError
from xpusim.parallel.schedules import PipelineSchedule, build
from xpusim.units import MIB
from xpusim.workload.capture import capture
from xpusim.workload.model import OpCost

FP32_BYTES = 4
SGD_BYTES_PER_PARAM = 3 * FP32_BYTES
"""Plain SGD's update ``p -= lr·g``: read the parameter and its gradient, write the parameter."""
DDP_BUCKET_BYTES = 25 * MIB
"""DistributedDataParallel's default ``bucket_cap_mb``: one all-reduce per bucket."""
_TP_SHARDED = re.compile(r"(^|\.)layers\.\d+\.(attn|fc1|fc2)(\.|$)")
"""Modules split over the tensor-parallel ranks (Megatron: q, k, v and fc1 by columns, o and fc2 by rows)."""
_ROW_BIAS = re.compile(r"(^|\.)layers\.\d+\.(attn\.o|fc2)\.bias$")
"""Biases of row-split layers: replicated, added after the all-reduce."""


# ------------------------------------------------------------------------------------------------- one stage
@dataclass(frozen=True, kw_only=True)
class StageCost:
    """One pipeline stage on one rank, per micro-batch: the roofline's compute, and the tensor-parallel
    collectives apart."""

    stage: int
    forward_s: float
    backward_s: float
    """The whole backward, or the input gradient only when the schedule splits it (then ``weight_s`` is W)."""
    weight_s: float
    tp_allreduce_s: float
    """The tensor-parallel all-reduces, four per layer: half in the forward, half in the backward."""
    params: int
    """Parameters this rank holds for the stage (its shard under tensor parallelism)."""
    param_tensors: int
    boundary_bytes: int
    """The activation this stage sends to the next one (and the gradient it gets back), per micro-batch."""
    flops: int
    uncounted: tuple[str, ...] = ()


class _WithLoss(nn.Module):
    """The last stage with its loss: the pipeline runtime computes the loss on the last stage's output and starts
    that stage's backward from it."""

    def __init__(self, stage: nn.Module, loss: Any) -> None:
        super().__init__()
        self.stage = stage
        self.loss = loss

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(self.stage(x), target)  # type: ignore[no-any-return]


def _stage_inputs(spec: RunSpec, stage: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta stand-ins of a stage's input (the previous stage's activation, which needs a gradient, or the first
    stage's data, which does not) and of the target."""
    mdl = spec.model
    if mdl.kind == "mlp":
        x = torch.empty(samples, mdl.width, device="meta", requires_grad=stage > 0)
        return x, torch.empty(samples, mdl.width, device="meta")
    target = torch.empty(samples, mdl.seq_len, dtype=torch.long, device="meta")
    if stage == 0:
        return torch.empty(samples, mdl.seq_len, dtype=torch.long, device="meta"), target
    return torch.empty(samples, mdl.seq_len, mdl.hidden, device="meta", requires_grad=True), target


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _weight_gradient_ops(module: nn.Module, ops: Sequence[OpCost]) -> list[bool]:
    """Which backward ops compute a weight gradient (ZB-H1's W): those that read no weight and write a tensor of the
    shape of a parameter of the module they are attributed to (dW = dyᵀ·x, a bias's sum over the batch); the rest
    of the backward is the input gradient (B; dx = dy·W reads the weight)."""
    out = []
    for o in ops:
        try:
            sub = module.get_submodule(o.module)
        except AttributeError:
            sub = None
        shapes = {_squeezed(q.shape) for q in sub.parameters(recurse=False)} if sub is not None else set()
        out.append(o.phase == "backward" and o.weight_bytes == 0 and _squeezed(o.output_shape) in shapes)
    return out


def stage_cost(spec: RunSpec, chip: Chip, links: LinkCosts, stage: int, stages: int, *,
               split_backward: bool = False, tp: int | None = None) -> StageCost:
    """Forward and backward of one micro-batch (``spec.plan.micro_batch`` samples) through ``stage`` of
    ``stages``: the stage's module (`build_stage`, on the meta device) captured in training mode (forward and
    backward, fp32), every op timed by the roofline on ``chip``; with tensor parallelism each rank does 1/tp of the
    attention and MLP sublayers and four all-reduces of the activation per layer (two forward, two backward).
    ``tp`` overrides the plan's."""
    tp, b, mdl = tp or spec.plan.tp, spec.plan.micro_batch, spec.model
    with torch.device("meta"):
        module = build_stage(mdl, spec.seed, stage, stages)
    last = stage == stages - 1
    x, target = _stage_inputs(spec, stage, b)
    captured: nn.Module = _WithLoss(module, loss_fn(mdl)) if last else module
    wl = capture(captured, (x, target) if last else (x,), mode="training", device="meta", name=f"stage {stage}")
    if tp > 1:  # this rank's share: the attention and MLP sublayers are split, the rest replicated
        ops = tuple(replace(o, macs=o.macs // tp, flops=o.flops // tp, weight_bytes=o.weight_bytes // tp,
                            activation_bytes_read=o.activation_bytes_read // tp,
                            bytes_written=o.bytes_written // tp)
                    if _TP_SHARDED.search(o.module) else o for o in wl.ops)
        wl = replace(wl, ops=ops)
    est = roofline(wl, chip)
    is_w = _weight_gradient_ops(captured, wl.ops) if split_backward else [False] * len(wl.ops)
    fwd = sum(e.time_s for o, e in zip(wl.ops, est.ops, strict=True) if o.phase == "forward")
    wgt = sum(e.time_s for e, w in zip(est.ops, is_w, strict=True) if w)
    bwd = sum(e.time_s for o, e in zip(wl.ops, est.ops, strict=True) if o.phase == "backward") - wgt
    act_bytes = b * (mdl.width if mdl.kind == "mlp" else mdl.seq_len * mdl.hidden) * FP32_BYTES
    tp_one = links.allreduce_s(act_bytes, tp)
    layers = len(module.layers) if tp > 1 else 0
    params = tensors = 0
    for name, q in module.named_parameters():
        sharded = tp > 1 and _TP_SHARDED.search(name) is not None and not _ROW_BIAS.search(name)
        params += q.numel() // tp if sharded else q.numel()
        tensors += 1
    return StageCost(stage=stage, forward_s=fwd, backward_s=bwd, weight_s=wgt, tp_allreduce_s=4 * layers * tp_one,
                     params=params, param_tensors=tensors,
                     boundary_bytes=0 if last else act_bytes, flops=est.flops, uncounted=tuple(wl.uncounted))


# ------------------------------------------------------------------------------------------------- calibration
@dataclass(frozen=True, kw_only=True)
class Calibration:
    """This CPU's compute against the roofline on this model: per stage, the forward and backward of one micro-batch
    timed on real tensors — every pipeline rank's stages at once, one process per rank pinned one per core as the
    run starts its ranks — over the roofline's time for the same ops. The prediction multiplies the roofline's
    compute by it: the roofline's per-op efficiency on this CPU, and what ranks computing side by side cost each
    other (shared caches and memory bandwidth), measured for these ops."""

    forward: tuple[float, ...]
    backward: tuple[float, ...]
    overhead_s_per_action: float = 0.0
    """The pipeline runtime's own time per action (posting sends and receives, its bookkeeping): a pipeline of
    near-empty stages (8 × 8 linear layers) run with the plan's schedule on the same ranks, its step time over the
    schedule's critical path in actions."""
    source: str = ""


def _runtime_step_s(sched: PipelineSchedule, rank: int, steps: int) -> float:
    """Step time (rank 0's view, the median after a warm-up) of ``sched`` on torch's pipeline runtime with stages
    that do next to nothing: what the runtime itself costs."""
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.pipelining import PipelineStage

    from xpusim.parallel.real.pipeline import runtime, stages_of

    ids = stages_of(sched, rank)
    pstages = [PipelineStage(nn.Linear(8, 8), sid, sched.stages, torch.device("cpu")) for sid in ids]
    rt = runtime(list[Any](pstages), sched, lambda out, target: F.mse_loss(out, target))
    x, y = torch.randn(sched.m, 8), torch.randn(sched.m, 8)
    times = []
    for _ in range(steps + 1):
        dist.barrier()
        t0 = time.perf_counter()
        rt.step(*((x,) if 0 in ids else ()), **({"target": y, "losses": []} if sched.stages - 1 in ids else {}))
        dist.barrier()  # the step ends when the last rank is done
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _time_rank_stages(spec: RunSpec, stage_ids: Sequence[int], stages: int, steps: int,
                      start: Callable[[], object]) -> dict[int, tuple[float, float]]:
    """One pipeline rank's stages: up to 8 micro-batches per step, each stage's forward then backward, gradients
    accumulated, freed before each step (the first backward allocates them) and an SGD step after it; per stage the
    mean (forward, backward) over all steps but the first (warm-up)."""
    from xpusim.parallel.real.models import batch

    mdl, b, m = spec.model, spec.plan.micro_batch, min(spec.plan.micro_batches, 8)
    modules = [build_stage(mdl, spec.seed, sid, stages) for sid in stage_ids]
    opt = torch.optim.SGD([q for mod in modules for q in mod.parameters()], lr=1e-3)
    lossf = loss_fn(mdl)
    data, target = batch(mdl, b, spec.seed, 0)
    hidden = torch.randn((b, mdl.width) if mdl.kind == "mlp" else (b, mdl.seq_len, mdl.hidden), requires_grad=True)
    times: dict[int, tuple[list[float], list[float]]] = {sid: ([], []) for sid in stage_ids}
    start()
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        for _ in range(m):
            for sid, mod in zip(stage_ids, modules, strict=True):
                t0 = time.perf_counter()
                y = mod(data if sid == 0 else hidden)  # a later stage's input: an activation that needs a gradient
                if sid == stages - 1:
                    y = lossf(y, target) / m
                t1 = time.perf_counter()
                grad = None if sid == stages - 1 else torch.ones_like(y)
                t2 = time.perf_counter()
                y.backward(grad)
                if step:
                    times[sid][0].append(t1 - t0)
                    times[sid][1].append(time.perf_counter() - t2)
        opt.step()
    return {sid: (statistics.fmean(f), statistics.fmean(bw)) for sid, (f, bw) in times.items()}


def _calibration_rank_main() -> None:
    """``python -m xpusim.parallel.real.predict RESULT STEPS RUN-OPTIONS...``: one pipeline rank of `time_stages`."""
    from datetime import timedelta

    import torch.distributed as dist

    from xpusim.files import write_atomic
    from xpusim.parallel.real.links import pin_rank_to_core
    from xpusim.parallel.real.spec import argument_parser, spec_from_args

    result, steps = sys.argv[1], int(sys.argv[2])
    spec = spec_from_args(argument_parser().parse_args(sys.argv[3:]))
    pin_rank_to_core()
    dist.init_process_group("gloo", timeout=timedelta(seconds=spec.timeout_s))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        sched = build(spec.schedule, spec.plan.pp, spec.plan.micro_batches, spec.plan.vp)
        mine = _time_rank_stages(spec, [s for s in range(sched.stages) if sched.rank_of(s) == rank], sched.stages,
                                 steps, dist.barrier)
        empty = _runtime_step_s(sched, rank, 2 * steps) if world > 1 else 0.0
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            timed = {str(s): t for part in gathered for s, t in part.items()}
            write_atomic(result, json.dumps(timed | {"empty_step_s": empty}))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # as the run's ranks: no interpreter teardown beside gloo's threads (see worker._end_process)


def time_stages(spec: RunSpec, *, steps: int = 3) -> tuple[list[tuple[float, float]], float]:
    """(per stage, the (forward, backward) seconds of one micro-batch, measured here while every pipeline rank
    computes at once; the pipeline runtime's own time per action): one process per pipeline rank, pinned one per
    core, as the run starts them (`_time_rank_stages`, `_runtime_step_s`; the plan's dp and tp replicas are not
    started)."""
    from xpusim.parallel.real.links import run_helper_ranks

    plan = spec.plan
    out = run_helper_ranks("xpusim.parallel.real.predict", [str(steps), *spec.to_argv()], plan.pp,
                           what="calibration", timeout_s=spec.timeout_s)
    sched = build(spec.schedule, plan.pp, plan.micro_batches, plan.vp)
    critical = max(e.end_s for e in run_schedule(sched, lambda a: 1.0))  # the empty step's length in actions
    return ([(float(out[str(s)][0]), float(out[str(s)][1])) for s in range(sched.stages)],
            float(out["empty_step_s"]) / critical)


def calibrate(spec: RunSpec, chip: Chip) -> Calibration:
    """Measured over roofline compute of every stage (`time_stages` against `stage_cost` without tensor
    parallelism), for `predict` on this machine."""
    plan = spec.plan
    stages = plan.pp * plan.vp
    zero = LinkCosts(p2p_alpha_s=0.0, p2p_s_per_byte=0.0, allreduce_alpha_s=0.0, allreduce_s_per_byte=0.0)
    fwd, bwd = [], []
    timed, overhead = time_stages(spec)
    for s, (f, b) in enumerate(timed):
        roof = stage_cost(spec, chip, zero, s, stages, tp=1)
        fwd.append(f / roof.forward_s)
        bwd.append(b / (roof.backward_s + roof.weight_s))
    return Calibration(forward=tuple(fwd), backward=tuple(bwd), overhead_s_per_action=overhead,
                       source=f"each stage's forward and backward timed on this CPU with all {plan.pp} pipeline "
                              f"ranks computing at once (a process per rank, one per core, {plan.micro_batch} "
                              f"samples per micro-batch) over the roofline on {chip.name}")


# ------------------------------------------------------------------------------------------------- the pipeline
@dataclass(frozen=True, kw_only=True)
class PipelineTimes:
    end_s: float
    """When the last compute action of the step ends (from 0)."""
    busy_s: tuple[float, ...]
    """Compute time of each pipeline rank."""

    @property
    def bubble_fraction(self) -> float:
        """(end − max busy) / max busy, as `compare` and the measured summary define it."""
        busiest = max(self.busy_s)
        return (self.end_s - busiest) / busiest if busiest else 0.0

    @property
    def idle_s_per_rank(self) -> tuple[float, ...]:
        return tuple(self.end_s - b for b in self.busy_s)


def simulate_pipeline(sched: PipelineSchedule, forward_s: Sequence[float], backward_s: Sequence[float],
                      weight_s: Sequence[float] | None = None, p2p_s: float = 0.0,
                      overhead_s: float = 0.0) -> PipelineTimes:
    """``sched`` through the event simulator with per-stage action times (per micro-batch), the point-to-point
    time of one message between stages on different ranks and the runtime's own time before each action (not
    compute: outside busy; none after the last action), as `compare` simulates a run."""
    times = {"F": forward_s, "B": backward_s, "W": weight_s or [0.0] * len(forward_s)}
    events = run_schedule(sched, lambda a: times[a.kind][a.stage] + overhead_s, lambda a: p2p_s)
    busy = [0.0] * sched.p
    for e in events:
        busy[e.rank] += e.end_s - e.start_s - overhead_s
    return PipelineTimes(end_s=max(e.end_s for e in events) - overhead_s, busy_s=tuple(busy))


# ------------------------------------------------------------------------------------------------- prediction
@dataclass(frozen=True, kw_only=True)
class Prediction:
    """A run's step predicted from the cost model (times in seconds; per-stage times per micro-batch)."""

    step_time_s: float
    """pipeline_s + tied_embedding_s + allreduce_s + optimizer_s."""
    pipeline_s: float
    bubble_fraction: float
    roofline_step_time_s: float
    """The same without the calibration: the roofline's compute as is (equal to step_time_s without one)."""
    roofline_bubble_fraction: float
    calibration: Calibration | None
    idle_s_per_rank: tuple[float, ...]
    forward_s: tuple[float, ...]
    """Per stage, one micro-batch."""
    backward_s: tuple[float, ...]
    weight_s: tuple[float, ...]
    """Per stage, the weight-gradient part of the backward in schedules that split it (zb-h1), else zeros."""
    optimizer_s: float
    """The slowest rank's SGD step."""
    p2p_s: float
    """One activation (or its gradient) between two stages on different ranks."""
    allreduce_s: float
    """The data-parallel gradient reduction per step (0 without dp)."""
    tp_allreduce_s: float
    """Tensor-parallel all-reduces of one micro-batch through one stage, forward and backward (in forward_s and
    backward_s)."""
    tied_embedding_s: float
    """GPT pipelines: the tied embedding's gradient all-reduced between the first and last stage."""
    chip: str
    links: LinkCosts
    basis: dict[str, str] = field(default_factory=dict)
    """How each term was computed, in words."""

    def to_dict(self) -> dict[str, Any]:
        cal = self.calibration
        return {"step_time_s": self.step_time_s, "pipeline_s": self.pipeline_s,
                "bubble_fraction": self.bubble_fraction,
                "roofline_only": {"step_time_s": self.roofline_step_time_s,
                                  "bubble_fraction": self.roofline_bubble_fraction},
                "calibration": {"forward": list(cal.forward), "backward": list(cal.backward),
                                "overhead_s_per_action": cal.overhead_s_per_action, "source": cal.source}
                if cal is not None else None,
                "idle_s_per_rank": {str(r): t for r, t in enumerate(self.idle_s_per_rank)},
                "forward_s_per_stage": list(self.forward_s), "backward_s_per_stage": list(self.backward_s),
                "weight_s_per_stage": list(self.weight_s), "optimizer_s": self.optimizer_s, "p2p_s": self.p2p_s,
                "allreduce_s": self.allreduce_s, "tp_allreduce_s": self.tp_allreduce_s,
                "tied_embedding_s": self.tied_embedding_s, "chip": self.chip, "links": self.links.to_dict(),
                "basis": dict(self.basis)}

    def versus(self, measured: dict[str, Any]) -> dict[str, Any]:
        """`to_dict` with the errors against a run's measured summary: ``error_pct`` (step time, (predicted −
        measured) / measured in %) and ``bubble_error_points``."""
        d = self.to_dict()
        meas = measured.get("step_time_s")
        d["error_pct"] = 100 * (self.step_time_s - meas) / meas if meas else None
        d["roofline_only"]["error_pct"] = 100 * (self.roofline_step_time_s - meas) / meas if meas else None
        if "bubble_fraction" in measured:
            d["bubble_error_points"] = 100 * (self.bubble_fraction - measured["bubble_fraction"])
        return d

    def summary(self) -> str:
        """One line: ``predicted: step 231.0 ms, bubble 12.5% (...)``."""
        def ms(xs: Sequence[float]) -> str:
            return "/".join(f"{x * 1e3:.1f}" for x in xs)

        parts = [f"pipeline {self.pipeline_s * 1e3:.1f} ms", f"optimizer {self.optimizer_s * 1e3:.1f} ms"]
        if self.tied_embedding_s:
            parts.append(f"tied embedding {self.tied_embedding_s * 1e3:.1f} ms")
        if self.allreduce_s:
            parts.append(f"dp all-reduce {self.allreduce_s * 1e3:.1f} ms")
        per = f"F {ms(self.forward_s)} ms, B {ms(self.backward_s)} ms"
        if any(self.weight_s):
            per += f", W {ms(self.weight_s)} ms"
        return (f"predicted: step {self.step_time_s * 1e3:.1f} ms, bubble {100 * self.bubble_fraction:.1f}% ("
                + " + ".join(parts) + f"; {per} per micro-batch and stage; p2p {self.p2p_s * 1e3:.2f} ms"
                + (f", tp all-reduces {self.tp_allreduce_s * 1e3:.1f} ms per micro-batch and stage"
                   if self.tp_allreduce_s else "") + f") on {self.chip}"
                + ("; compute calibrated × " + "/".join(f"{f:.2f}" for f in self.calibration.forward)
                   + " forward, × " + "/".join(f"{b:.2f}" for b in self.calibration.backward)
                   + f" backward, runtime {self.calibration.overhead_s_per_action * 1e3:.2f} ms per action (measured "
                   f"here); the roofline alone: step {self.roofline_step_time_s * 1e3:.1f} ms, "
                   f"bubble {100 * self.roofline_bubble_fraction:.1f}%" if self.calibration is not None else ""))


def _data_parallel(spec: RunSpec, costs: Sequence[StageCost], links: LinkCosts, chip: Chip,
                   held: dict[int, list[int]]) -> tuple[float, float, float, str]:
    """(gradient reduction per step, added to each forward, added to each backward, basis) of the plan's data
    parallelism."""
    plan = spec.plan
    dp = plan.dp
    if dp < 2:
        return 0.0, 0.0, 0.0, "no data parallelism"
    grad_bytes = max(sum(costs[s].params for s in stages) for stages in held.values()) * FP32_BYTES
    if spec.fsdp:  # dp only: fully_shard per layer and the root, each unit gathered before use
        units = spec.model.layers + 1
        gather = units * links.allgather_s(grad_bytes / units, dp)  # the parameters are as large as the gradients
        again = plan.zero >= 3  # ZeRO-3: resharded after forward, gathered again for the backward
        return gather, gather, gather if again else 0.0, (
            f"FSDP2 over {dp} ranks, {units} units: the parameters all-gathered before each micro-batch's forward"
            + (" and again before its backward" if again else "") + f", the {grad_bytes / MIB:.1f} MiB of "
            "gradients reduce-scattered once per step (each half a ring all-reduce)")
    if plan.tp == 1 and plan.pp == 1:  # DDP's buckets; gloo's threads share the rank's core: not overlapped
        buckets = max(1, math.ceil(grad_bytes / DDP_BUCKET_BYTES))
        t = buckets * links.allreduce_s(grad_bytes / buckets, dp)
        return t, 0.0, 0.0, (f"DDP: {grad_bytes / MIB:.1f} MiB of gradients in {buckets} bucket(s) of at most "
                             f"25 MiB, ring all-reduce among {dp} ranks, not overlapped with the backward")
    bw = (chip.memory_for(2 * grad_bytes).bandwidth_bytes_per_s or 1.0) * (chip.efficiency.memory
                                                                           if chip.efficiency else 1.0)
    copies = 4 * grad_bytes / bw  # into one flat buffer and back out (read + write each way)
    t = links.allreduce_s(grad_bytes, dp) + copies
    return t, 0.0, 0.0, (f"one flat ring all-reduce of this rank's {grad_bytes / MIB:.1f} MiB of gradients among "
                         f"{dp} data-parallel ranks after the pipeline's flush, plus copying them into and out of "
                         f"the flat buffer ({copies * 1e3:.2f} ms)")


def predict(spec: RunSpec, chip: Chip, links: LinkCosts, calibration: Calibration | None = None) -> Prediction:
    """The step time and bubble of ``spec`` on the machine ``chip`` and ``links`` describe, before running it.

    Per stage and micro-batch: forward and backward from the roofline of the stage's ops (`stage_cost`); the
    plan's schedule (`xpusim.parallel.schedules.build`, p = 1 is the plain loop of forward and backward) through
    the event simulator with one activation's point-to-point time between ranks; then the tied embedding's
    gradient all-reduce (GPT pipelines), the data-parallel gradient reduction and the slowest rank's SGD step.
    With a ``calibration`` (`calibrate`: this CPU's measured compute over the roofline's, per stage) the roofline's
    compute is scaled by it; the roofline-only step and bubble stay in ``roofline_step_time_s`` and
    ``roofline_bubble_fraction``."""
    if spec.schedule not in PREDICTED_SCHEDULES:
        raise RunSpecError(f"--predict: --schedule {spec.schedule} runs torch's own order, which xpusim has no "
                           f"generator for; predict one of {', '.join(PREDICTED_SCHEDULES)}")
    plan = spec.plan
    sched = build(spec.schedule, plan.pp, plan.micro_batches, plan.vp)
    stages = sched.stages
    costs = [stage_cost(spec, chip, links, s, stages, split_backward=sched.split_backward) for s in range(stages)]
    held: dict[int, list[int]] = {}
    for s in range(stages):
        held.setdefault(sched.rank_of(s), []).append(s)
    allreduce, fsdp_forward, fsdp_backward, dp_basis = _data_parallel(spec, costs, links, chip, held)
    boundary = max(c.boundary_bytes for c in costs)
    p2p = links.p2p_s(boundary) if stages > 1 else 0.0
    if calibration is not None and len(calibration.forward) != stages:
        raise ValueError(f"calibration has {len(calibration.forward)} stages; the plan has {stages}")

    def timed(cal: Calibration | None) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...],
                                                 PipelineTimes]:
        cf = cal.forward if cal is not None else (1.0,) * stages
        cb = cal.backward if cal is not None else (1.0,) * stages
        fwd = tuple(c.forward_s * k + c.tp_allreduce_s / 2 + fsdp_forward for c, k in zip(costs, cf, strict=True))
        bwd = tuple(c.backward_s * k + c.tp_allreduce_s / 2 + fsdp_backward for c, k in zip(costs, cb, strict=True))
        wgt = tuple(c.weight_s * k for c, k in zip(costs, cb, strict=True))
        return fwd, bwd, wgt, simulate_pipeline(sched, fwd, bwd, wgt, p2p, cal.overhead_s_per_action if cal else 0.0)

    forward, backward, weight, pipe = timed(calibration)
    roof = timed(None)[3] if calibration is not None else pipe
    eff_mem = chip.efficiency.memory if chip.efficiency else 1.0
    overhead_s = chip.efficiency.op_overhead_us * 1e-6 if chip.efficiency else 0.0
    opt_per_rank = []
    for ss in held.values():
        params = sum(costs[s].params for s in ss) // (plan.dp if spec.fsdp else 1)
        level = chip.memory_for(2 * FP32_BYTES * params)  # parameters and gradients
        bw = (level.bandwidth_bytes_per_s or 1.0) * eff_mem
        opt_per_rank.append(SGD_BYTES_PER_PARAM * params / bw + sum(costs[s].param_tensors for s in ss) * overhead_s)
    optimizer = max(opt_per_rank)
    tied = 0.0
    mdl = spec.model
    if mdl.kind == "gpt" and stages > 1 and sched.rank_of(0) != sched.rank_of(stages - 1):
        tied = links.allreduce_s(mdl.vocab * mdl.hidden * FP32_BYTES, 2)
    uncounted = sorted({u for c in costs for u in c.uncounted})
    per_stage = ", ".join(f"stage {c.stage}: {c.flops / 1e9:.3g} GFLOP" for c in costs)
    basis = {
        "calibration": ("compute × " + ", ".join(f"stage {s}: F {f:.2f}, B {b:.2f}" for s, (f, b) in enumerate(
            zip(calibration.forward, calibration.backward, strict=True))) + f" ({calibration.source}); the pipeline "
                        f"runtime's own {calibration.overhead_s_per_action * 1e3:.2f} ms before each action (a "
                        "pipeline of near-empty stages with the same schedule on the same ranks, its step over the "
                        "schedule's critical path in actions)"
                        if calibration is not None else "none: the roofline's compute as is"),
        "forward_backward": (f"roofline of each stage's ops on {chip.name} (fp32), captured in training mode with "
                             f"{plan.micro_batch} samples per micro-batch: forward and backward ops as counted "
                             f"(not 2× forward), per-op overhead {overhead_s * 1e6:.2f} µs included ({per_stage})"
                             + (f"; not costed (no formula): {', '.join(uncounted)}" if uncounted else "")),
        "pipeline": (f"{sched.name} p={plan.pp} v={plan.vp} m={plan.micro_batches} through the event simulator"
                     if plan.pp > 1 else f"{plan.micro_batches} micro-batches one after another"),
        "p2p": (f"{boundary:,} B activation per message: α {links.p2p_alpha_s * 1e3:.3f} ms + bytes × "
                f"{links.p2p_s_per_byte * 1e9:.3f} ns/B (gloo, measured)" if stages > 1 else "no pipeline"),
        "optimizer": (f"SGD: read parameter and gradient, write parameter ({SGD_BYTES_PER_PARAM} B per parameter) at "
                      f"the bandwidth of the memory level they fit in, plus one op overhead per parameter tensor; "
                      f"the slowest rank's"),
        "allreduce": dp_basis,
        "tp_allreduce": (f"tp={plan.tp}: 1/tp of the attention and MLP sublayers' ops per rank; 4 ring all-reduces "
                         "of the activation per layer (2 forward, 2 backward: Megatron's count)" if plan.tp > 1
                         else "no tensor parallelism"),
        "tied_embedding": (f"all-reduce of the {mdl.vocab}×{mdl.hidden} embedding gradient between the first and "
                           "last stage" if tied else "none"),
        "bubble": "(pipeline end − busiest rank's compute) / busiest rank's compute",
        "links": links.source or "given",
    }
    rest = tied + allreduce + optimizer
    return Prediction(step_time_s=pipe.end_s + rest, pipeline_s=pipe.end_s,
                      roofline_step_time_s=roof.end_s + rest, roofline_bubble_fraction=roof.bubble_fraction,
                      calibration=calibration,
                      bubble_fraction=pipe.bubble_fraction, idle_s_per_rank=pipe.idle_s_per_rank, forward_s=forward,
                      backward_s=backward, weight_s=weight, optimizer_s=optimizer, p2p_s=p2p, allreduce_s=allreduce,
                      tp_allreduce_s=max(c.tp_allreduce_s for c in costs), tied_embedding_s=tied, chip=chip.name,
                      links=links, basis=basis)


if __name__ == "__main__":
    _calibration_rank_main()
