"""One rank of a real run: set up torch.distributed (gloo on CPU, NCCL when GPUs are present), build this rank's
share of the model for the plan, train a few steps, record per-action timestamps, and send the record to rank 0,
which writes the run's JSON. Started by ``xpusim run`` (one process per rank) or by ``torchrun -m xpusim.run``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from xpusim.errors import UserError
from xpusim.files import check_output, write_atomic
from xpusim.parallel.real.models import MoE, batch, build_stage, global_name, loss_fn
from xpusim.parallel.real.spec import RunSpec, argument_parser, spec_from_args

DEVICE = torch.device("cpu")
"""Where this rank computes: the CPU with gloo, or its own GPU (``cuda:LOCAL_RANK``) with NCCL."""

Event = tuple[str, str, int, int, float, float]
"""(name, kind, stage, micro-batch, start, end): kind F, B, W, opt, dp (communication), step."""


class Recorder:
    """Timestamps on the system-wide monotonic clock (comparable across processes of one machine), and the order
    in which the wrapped pipeline actions ran (kept even with timestamps off)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.events: list[Event] = []
        self.order: list[str] = []
        """``{stage}{kind}{micro-batch}`` of every wrapped call, in the order they ran."""

    def add(self, name: str, kind: str, stage: int, mb: int, start: float, end: float) -> None:
        if self.enabled or kind in ("step", "opt"):
            self.events.append((name, kind, stage, mb, start, end))

    def wrap(self, fn: Callable[..., Any], kind: str, stage: int) -> Callable[..., Any]:
        def timed(chunk_id: int, *args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            out = fn(chunk_id, *args, **kwargs)
            end = time.monotonic()
            name = f"{stage}{kind}{chunk_id}"
            self.order.append(name)
            self.add(name, kind, stage, chunk_id, start, end)
            return out

        return timed


def _optimizer_step(opt: torch.optim.Optimizer, rec: Recorder, step: int, t0: float, t_grads: float, *,
                    stage: int) -> None:
    """Apply and clear the gradients; record the optimizer span and the whole step (from ``t0``)."""
    opt.step()
    opt.zero_grad(set_to_none=True)
    end = time.monotonic()
    rec.add("optimizer", "opt", stage, 0, t_grads, end)
    rec.add(f"step {step}", "step", stage, step, t0, end)


def _maybe_fault(spec: RunSpec, rank: int, step: int) -> None:
    """Testing aid (``--fault``): fail in the middle of step 2 on one rank."""
    if not spec.fault or step != 1:
        return
    what, _, who = spec.fault.partition(":")
    if int(who) != rank:
        return
    if what == "raise":
        raise RuntimeError(f"injected fault on rank {rank} in step 2")
    if what == "kill":  # die as an OOM kill would: no exception, no output, no teardown
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # hang: never reach the next collective
        time.sleep(3600)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective), or the tensor itself."""
    full = getattr(t, "full_tensor", None)
    return (full() if callable(full) else t).detach().clone()


# ------------------------------------------------------------------------------------------------------- mesh
@dataclass(frozen=True)
class Mesh:
    """This rank's place in the plan's (pp, dp, tp) grid and the torch DeviceMesh over it. Megatron-LM's order:
    tensor-parallel ranks adjacent (inside a node on a cluster), then data-parallel replicas, then pipeline stages,
    so global rank = (pp·dp_size + dp)·tp_size + tp."""

    pp: int
    dp: int
    tp: int
    sizes: tuple[int, int, int]
    """(pp, dp, tp) sizes."""
    device_mesh: Any

    @classmethod
    def build(cls, spec: RunSpec, rank: int) -> Mesh:
        from torch.distributed.device_mesh import init_device_mesh

        sizes = (spec.plan.pp, spec.plan.dp, spec.plan.tp)
        mesh = init_device_mesh(DEVICE.type, sizes, mesh_dim_names=("pp", "dp", "tp"))
        pp, rest = divmod(rank, sizes[1] * sizes[2])
        return cls(pp=pp, dp=rest // sizes[2], tp=rest % sizes[2], sizes=sizes, device_mesh=mesh)

    def group(self, dim: str) -> dist.ProcessGroup:
        """The process group of this rank's row along ``dim`` (``pp``, ``dp`` or ``tp``)."""
        return self.device_mesh[dim].get_group()

    def global_rank(self, pp: int, dp: int, tp: int) -> int:
        return (pp * self.sizes[1] + dp) * self.sizes[2] + tp

    @property
    def reports(self) -> bool:
        """Whether this rank reports its stage's gradients: the first data-parallel replica's first tensor-parallel
        rank (the others hold the same values, or their shards, gathered by the collective ``_full``)."""
        return self.dp == 0 and self.tp == 0


def tensor_parallel(layers: nn.ModuleList, mesh: Mesh) -> None:
    """Megatron-LM's tensor parallelism over the mesh's tp dimension: q, k, v and fc1 split by columns, o and fc2 by
    rows (one all-reduce after each row-split layer forward, one before each column-split layer backward)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    for block in layers:
        parallelize_module(block, mesh.device_mesh["tp"], {
            "attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(), "attn.v": ColwiseParallel(),
            "attn.o": RowwiseParallel(), "fc1": ColwiseParallel(), "fc2": RowwiseParallel()})


def allreduce_gradients(params: Sequence[torch.Tensor], mesh: Mesh, rec: Recorder, step: int) -> None:
    """Data parallelism as Megatron-LM's DDP does it beside tensor or pipeline parallelism: once per step, after the
    last micro-batch's backward (the pipeline's flush), every gradient of this rank — its local shard under tensor
    parallelism — is summed over the data-parallel ranks in one flat buffer and divided by their number."""
    grads: list[torch.Tensor] = []
    for q in params:  # every rank reduces the same list: a parameter this rank did not use (an expert no token of
        if q.grad is None:  # its batch chose) contributes zeros
            q.grad = torch.zeros_like(q)
        grads.append(getattr(q.grad, "_local_tensor", q.grad))
    start = time.monotonic()
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=mesh.group("dp"))
    flat.div_(mesh.sizes[1])
    for g, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(reduced)
    rec.add("data-parallel all-reduce", "dp", -1, step, start, time.monotonic())


def replica_batch(spec: RunSpec, mesh: Mesh, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This data-parallel replica's share of the step's global batch (every replica draws the same global batch)."""
    per = spec.plan.micro_batch * spec.plan.micro_batches
    x, y = batch(spec.model, per * mesh.sizes[1], spec.seed, step)
    lo = mesh.dp * per
    return x[lo:lo + per].to(DEVICE), y[lo:lo + per].to(DEVICE)


def mean_loss(losses: list[float] | float, mesh: Mesh) -> float:
    """The step's loss over the global batch: this replica's mean, averaged over the data-parallel ranks."""
    local = statistics.fmean(losses) if isinstance(losses, list) else losses
    t = torch.tensor(local, dtype=torch.float64)
    if mesh.sizes[1] > 1:
        dist.all_reduce(t, group=mesh.group("dp"))
    return float(t) / mesh.sizes[1]


# ------------------------------------------------------------------------------------ data and tensor parallel
def _accumulate(spec: RunSpec, model: nn.Module, xs: torch.Tensor, ys: torch.Tensor,
                rec: Recorder, sync: Callable[[bool], Any]) -> tuple[float, float]:
    """Forward and backward of each of the m micro-batches, gradients accumulated (the loss scaled by 1/m so that
    they average); ``sync(last)`` lets the data-parallel wrapper reduce only after the last one. Returns the
    mean loss and the end time."""
    m, b = spec.plan.micro_batches, spec.plan.micro_batch
    lossf = loss_fn(spec.model)
    total = 0.0
    end = time.monotonic()
    for j in range(m):
        sync(j == m - 1)
        t0 = time.monotonic()
        loss = lossf(model(xs[j * b:(j + 1) * b]), ys[j * b:(j + 1) * b]) / m
        t1 = time.monotonic()
        loss.backward()
        end = time.monotonic()
        rec.add(f"0F{j}", "F", 0, j, t0, t1)
        rec.add(f"0B{j}", "B", 0, j, t1, end)
        total += float(loss)
    return total, end


def run_flat(spec: RunSpec, mesh: Mesh, rec: Recorder) -> dict[str, Any]:
    """No pipeline: the whole model on every rank, split by tensor parallelism (tp), replicated over data-parallel
    ranks (dp) — DDP or FSDP2 when data parallelism is the only kind, else the flat all-reduce after the last
    micro-batch (``allreduce_gradients``)."""
    model = build_stage(spec.model, spec.seed, 0, 1).to(DEVICE)
    dp, tp, ep = mesh.sizes[1], mesh.sizes[2], spec.plan.ep
    if tp > 1:
        tensor_parallel(model.layers, mesh)
    expert_params: set[int] = set()  # this rank's experts
    all_experts: set[int] = set()
    if ep > 1:  # each rank computes its E/ep experts; tokens reach them by all-to-all
        for layer in model.layers:
            moe = layer.moe
            assert isinstance(moe, MoE)
            moe.expert_parallel(mesh.group("dp"), mesh.dp, ep)
            expert_params |= {id(q) for e in moe.local() for q in moe.experts[e].parameters()}
            all_experts |= {id(q) for q in moe.experts.parameters()}
    wrapped: nn.Module = model
    sync: Callable[[bool], Any] = lambda last: None  # noqa: E731
    if spec.fsdp:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        reshard = spec.plan.zero >= 3
        for layer in model.layers:
            fully_shard(layer, reshard_after_forward=reshard)
        fully_shard(model, reshard_after_forward=reshard)
        assert isinstance(model, FSDPModule)
        sync = model.set_requires_gradient_sync  # reduce-scatter only after the last micro-batch
    elif dp > 1 and tp == 1 and spec.model.kind != "moe":  # DDP needs every parameter used; experts may not be
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[DEVICE.index] if DEVICE.type == "cuda" else None)
        if rec.enabled:
            ddp.register_comm_hook(None, _timed_allreduce(rec, dp))
        wrapped = ddp

        def sync(last: bool) -> None:
            ddp.require_backward_grad_sync = last  # what ddp.no_sync() toggles

    manual = dp > 1 and (tp > 1 or spec.model.kind == "moe")
    named = dict(model.named_parameters(remove_duplicate=False))  # after wrapping: DTensors under FSDP2 and tensor
    # parallelism; the tied output head is listed under its own name (head.weight) too
    params = list(wrapped.parameters())
    opt = torch.optim.SGD(params, lr=1e-3)
    out: dict[str, Any] = {}
    for step in range(spec.steps):
        xs, ys = replica_batch(spec, mesh, step)
        dist.barrier()
        t0 = time.monotonic()
        _maybe_fault(spec, dist.get_rank(), step)
        loss, t2 = _accumulate(spec, wrapped, xs, ys, rec, sync)
        if manual:
            # the experts' gradients already hold every rank's tokens (the all-to-alls' backward brought them):
            # averaged over the replicas like the all-reduced ones, not summed again
            for q in params:
                if id(q) in expert_params and q.grad is not None:
                    q.grad.div_(dp)
            allreduce_gradients([q for q in params if id(q) not in all_experts], mesh, rec, step)
            t2 = time.monotonic()
        if step == 0 and spec.check_grads:
            out["loss"] = mean_loss(loss, mesh)
            grads = {n: _full(p.grad) for n, p in named.items() if p.grad is not None}  # a collective
            # one rank reports what every rank holds; each rank its own experts
            out["grads"] = {n: g for n, g in grads.items() if mesh.reports or id(named[n]) in expert_params}
        _optimizer_step(opt, rec, step, t0, t2, stage=0)
    return out


def _timed_allreduce(rec: Recorder, world: int) -> Callable[..., Any]:
    """DDP's default all-reduce (sum, then divide by the world size), with its span recorded."""

    def hook(state: object, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        start = time.monotonic()
        buf = bucket.buffer()
        fut = dist.all_reduce(buf, async_op=True).get_future()  # type: ignore[union-attr]

        def done(f: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
            rec.add(f"all-reduce bucket {bucket.index()}", "dp", 0, bucket.index(), start, time.monotonic())
            return f.value()[0].div_(world)

        return fut.then(done)

    hook.__annotations__ = {"state": object, "bucket": dist.GradBucket,  # DDP checks the real types
                            "return": torch.futures.Future[torch.Tensor]}
    return hook


# -------------------------------------------------------------------------------------------- pipeline parallel
def stage_ids(schedule: str, rank: int, p: int, v: int) -> list[int]:
    """Which stages a rank holds: Megatron's looping placement (r, r + p, ...), or the V shape of ZBV."""
    if schedule == "zbv":
        return [rank, 2 * p - 1 - rank]
    return [rank + k * p for k in range(v)]


class TiedEmbedding:
    """Megatron-LM's "embedding group": when the token embedding (first stage) and the output head tied to it
    (last stage) live in different stage modules, each holds its own copy, initialized equal; after backward the
    two gradients are summed between their holders — an all-reduce over the two ranks of the same data- and
    tensor-parallel coordinates, or a local sum when one rank holds both (ZBV) — so both copies get the gradient of
    the one tied weight and stay equal."""

    def __init__(self, first_pp: int, last_pp: int, mesh: Mesh, params: dict[int, torch.Tensor]) -> None:
        self.params = params  # stage -> this rank's copy (stage 0: the embedding, last stage: the head)
        self.local = first_pp == last_pp
        self.group = None
        if not self.local:  # every rank takes part in creating every group, in the same order
            for d in range(mesh.sizes[1]):
                for t in range(mesh.sizes[2]):
                    group = dist.new_group([mesh.global_rank(first_pp, d, t), mesh.global_rank(last_pp, d, t)])
                    if (d, t) == (mesh.dp, mesh.tp):
                        self.group = group
        self.member = mesh.pp in (first_pp, last_pp)

    def sum_gradients(self) -> None:
        if not self.member:
            return
        grads = [q.grad for q in self.params.values()]
        if any(g is None for g in grads):
            raise RuntimeError("the tied embedding has no gradient after backward")
        if self.local:
            total = grads[0] + grads[1]  # type: ignore[operator]
            for g in grads:
                g.copy_(total)  # type: ignore[union-attr]
        else:
            dist.all_reduce(grads[0], group=self.group)  # type: ignore[arg-type]


def run_pipeline(spec: RunSpec, mesh: Mesh, rec: Recorder) -> dict[str, Any]:
    """The pipeline on torch.distributed.pipelining's stages, over the mesh's pp dimension (each stage split by
    tensor parallelism when tp > 1, each pipeline a data-parallel replica when dp > 1). gpipe, 1f1b, interleaved and
    zb-h1 run xpusim's own generated order (`xpusim.parallel.schedules`, the one the simulator times) through
    torch's action runtime; zbv runs torch's ScheduleZBVZeroBubble. The order each rank really ran is recorded per
    step."""
    from torch.distributed.pipelining import PipelineStage, ScheduleZBVZeroBubble

    from xpusim.parallel.real.pipeline import planned, runtime, stages_of

    p, v, m = spec.plan.pp, spec.plan.vp, spec.plan.micro_batches
    stages = p * v
    plan = planned(spec.schedule, p, m, v)
    ids = stages_of(plan, mesh.pp) if plan is not None else stage_ids(spec.schedule, mesh.pp, p, v)
    modules = [build_stage(spec.model, spec.seed, sid, stages).to(DEVICE) for sid in ids]
    if mesh.sizes[2] > 1:
        for mod in modules:
            tensor_parallel(mod.layers, mesh)
    pstages = []
    for sid, mod in zip(ids, modules, strict=True):
        st = PipelineStage(mod, sid, stages, DEVICE, group=mesh.group("pp"))
        # per-micro-batch timestamps (and the order of actions) around the stage's own compute calls
        st.forward_one_chunk = rec.wrap(st.forward_one_chunk, "F", sid)  # type: ignore[method-assign]
        st.backward_one_chunk = rec.wrap(st.backward_one_chunk, "B", sid)  # type: ignore[method-assign]
        st.backward_weight_one_chunk = rec.wrap(  # type: ignore[method-assign]
            st.backward_weight_one_chunk, "W", sid)
        pstages.append(st)
    lossf = loss_fn(spec.model)
    sched: Any
    if plan is not None:
        sched = runtime(list[Any](pstages), plan, lossf)
    else:
        sched = ScheduleZBVZeroBubble(list[Any](pstages), n_microbatches=m, loss_fn=lossf)
    tied = None
    if spec.model.kind == "gpt" and stages > 1:
        mine: dict[int, torch.Tensor] = {}
        for sid, mod in zip(ids, modules, strict=True):
            if sid == 0:
                assert isinstance(mod.embed, nn.Embedding)
                mine[0] = mod.embed.weight
            if sid == stages - 1:
                assert mod.tied_copy is not None
                mine[sid] = mod.tied_copy
        tied = TiedEmbedding(stage_ids_rank(spec, plan, 0), stage_ids_rank(spec, plan, stages - 1), mesh, mine)
    params = [q for mod in modules for q in mod.parameters()]
    opt = torch.optim.SGD(params, lr=1e-3)
    holds_first, holds_last = 0 in ids, stages - 1 in ids
    out: dict[str, Any] = {"actions": []}
    for step in range(spec.steps):
        x, y = replica_batch(spec, mesh, step)
        losses: list[torch.Tensor] = []
        dist.barrier()
        t0 = time.monotonic()
        _maybe_fault(spec, dist.get_rank(), step)
        args = (x,) if holds_first else ()
        kwargs: dict[str, Any] = {"target": y, "losses": losses} if holds_last else {}
        n0 = len(rec.order)
        sched.step(*args, **kwargs)
        out["actions"].append(" ".join(rec.order[n0:]))
        t1 = time.monotonic()
        if tied is not None:
            tied.sum_gradients()
            t2 = time.monotonic()
            rec.add("tied embedding gradient sum", "tie", -1, step, t1, t2)
            t1 = t2
        if mesh.sizes[1] > 1:
            allreduce_gradients(params, mesh, rec, step)
            t1 = time.monotonic()
        if step == 0 and spec.check_grads:
            out["loss"] = mean_loss([float(t) for t in losses], mesh) if holds_last else None
            grads = {global_name(n, sid, stages, spec.model.layers): _full(q.grad)  # a collective under tp
                     for sid, mod in zip(ids, modules, strict=True)
                     for n, q in mod.named_parameters() if q.grad is not None}
            out["grads"] = grads if mesh.reports else {}
            if not mesh.reports:
                out["loss"] = None
        _optimizer_step(opt, rec, step, t0, t1, stage=-1)
    return out


def stage_ids_rank(spec: RunSpec, plan: Any, stage: int) -> int:
    """The rank that holds ``stage``."""
    if plan is not None:
        return int(plan.rank_of(stage))
    p, v = spec.plan.pp, spec.plan.vp
    return next(r for r in range(p) if stage in stage_ids(spec.schedule, r, p, v))


# --------------------------------------------------------------------------------------------------- reference
def reference_check(spec: RunSpec, results: list[dict[str, Any]]) -> dict[str, float]:
    """Loss and gradients of one single-process step on the same model and data, against the run's."""
    torch.manual_seed(spec.seed)
    model = build_stage(spec.model, spec.seed, 0, 1)
    x, y = batch(spec.model, spec.plan.global_batch, spec.seed, 0)
    loss = loss_fn(spec.model)(model(x), y)
    loss.backward()
    grads: dict[str, torch.Tensor] = {}
    run_loss = None
    for r in results:
        grads.update(r.get("grads", {}))
        if r.get("loss") is not None:
            run_loss = r["loss"]
    worst, worst_name = 0.0, ""
    missing = []
    # Relative to each gradient's own scale, floored at 1e-3 of the largest: some gradients are zero in exact
    # arithmetic (a key bias under softmax) and only rounding noise in float.
    scale = max(float(q.grad.abs().max()) for q in model.parameters() if q.grad is not None)
    for name, param in model.named_parameters(remove_duplicate=False):  # the tied head.weight: embed.weight's
        ref = param.grad
        if name not in grads or ref is None:
            missing.append(name)
            continue
        err = float((grads[name] - ref).abs().max()) / max(float(ref.abs().max()), 1e-3 * scale)
        if err > worst:
            worst, worst_name = err, name
    if missing:
        raise RuntimeError(f"gradients missing from the run: {', '.join(missing[:5])}")
    assert run_loss is not None
    return {"loss": run_loss, "reference_loss": float(loss), "max_grad_rel_error": worst,
            "worst_param": worst_name, "loss_abs_error": abs(run_loss - float(loss)),
            "params_compared": [n for n, _ in model.named_parameters(remove_duplicate=False)]}


# --------------------------------------------------------------------------------------------------------- main
def run_rank(spec: RunSpec, rank: int, world: int) -> dict[str, Any]:
    rec = Recorder(spec.instrument)
    mesh = Mesh.build(spec, rank)
    extra = run_pipeline(spec, mesh, rec) if spec.plan.pp > 1 else run_flat(spec, mesh, rec)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    gpu = torch.cuda.max_memory_allocated(DEVICE) if DEVICE.type == "cuda" else None
    extra["grads"] = {n: g.cpu() for n, g in extra.get("grads", {}).items()}
    return {"rank": rank, "coords": {"pp": mesh.pp, "dp": mesh.dp, "tp": mesh.tp}, "events": rec.events,
            "peak_rss_bytes": rss, "peak_cuda_bytes": gpu, **extra}


Renderer = Callable[..., None]
"""(spec, report, *, fmt, do_compare, trace) -> None: how rank 0 shows the finished run."""


def summarize(spec: RunSpec, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Step time, bubble and idle time per rank (medians over the steps that count: the first is warm-up when
    there are more than two), and peak RSS per rank. The bubble is one pipeline's — the ranks of the first
    data-parallel replica's first tensor-parallel rank, what the simulator's schedule describes; idle time is every
    rank's, over the whole grid's compute span."""
    spans: dict[int, tuple[float, float]] = {}
    for r in results:
        for _, kind, _, mb, start, end in r["events"]:
            if kind == "step":
                s0, s1 = spans.get(mb, (start, end))
                spans[mb] = (min(s0, start), max(s1, end))
    counted = sorted(spans)[1:] if len(spans) > 2 else sorted(spans)
    bubbles, idle = [], []
    for k in counted:
        lo, hi = spans[k]
        busy = {r["rank"]: [(ev[4], ev[5]) for ev in r["events"] if ev[1] in ("F", "B", "W") and lo <= ev[4] <= hi]
                for r in results}
        evs = [iv for ivs in busy.values() for iv in ivs]
        if not evs:
            continue
        span = max(e for _, e in evs) - min(s for s, _ in evs)
        per_rank = {rk: sum(e - s for s, e in ivs) for rk, ivs in busy.items()}
        idle.append({rk: span - b for rk, b in per_rank.items()})
        pipe = [busy[r["rank"]] for r in results if r["coords"]["dp"] == 0 and r["coords"]["tp"] == 0]
        pipe_evs = [iv for ivs in pipe for iv in ivs]
        pipe_span = max(e for _, e in pipe_evs) - min(s for s, _ in pipe_evs)
        busiest = max(sum(e - s for s, e in ivs) for ivs in pipe)
        bubbles.append((pipe_span - busiest) / busiest if busiest else 0.0)
    return {
        "step_time_s": statistics.median(spans[k][1] - spans[k][0] for k in counted),
        "step_times_s": [spans[k][1] - spans[k][0] for k in sorted(spans)],
        "bubble_fraction": statistics.median(bubbles) if bubbles else 0.0,
        "idle_s_per_rank": {str(rk): statistics.median(d[rk] for d in idle) for rk in idle[0]} if idle else {},
        "peak_rss_bytes_per_rank": [r["peak_rss_bytes"] for r in sorted(results, key=lambda r: r["rank"])],
        "peak_cuda_bytes_per_rank": [r["peak_cuda_bytes"] for r in sorted(results, key=lambda r: r["rank"])],
    }


def main(argv: list[str] | None = None, render: Renderer | None = None) -> None:
    """One rank. Rank 0 writes the run's record to ``--result``, or hands it to ``render`` (the entry point's
    summary: ``python -m xpusim.run`` prints ``xpusim run``'s table).

    With ``argv`` None this is the rank's process (``python -m xpusim.run``, what ``xpusim run`` and torchrun
    start), and it ends here with ``os._exit``: see ``_end_process``. Called with an ``argv`` list it returns."""
    ns = argument_parser().parse_args(argv)
    try:
        spec = spec_from_args(ns)
        if ns.trace:
            check_output(ns.trace, "--trace")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world != spec.ranks:
        print(f"error: the plan needs {spec.ranks} ranks but WORLD_SIZE={world}", file=sys.stderr)
        sys.exit(2)
    local = int(os.environ.get("LOCAL_RANK", rank))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cpus and int(os.environ.get("LOCAL_WORLD_SIZE", world)) <= len(cpus):
        os.sched_setaffinity(0, {cpus[local % len(cpus)]})  # one rank per core: ranks do not share a core
    torch.set_num_threads(1)
    global DEVICE
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("XPUSIM_BACKEND") != "gloo" else "gloo"
    if backend == "nccl":
        DEVICE = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(DEVICE)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=spec.timeout_s))
    try:
        _run_and_report(spec, ns, rank, world, backend, render)
        dist.barrier()  # no rank tears down while a peer still has work on the group
    except Exception:
        if argv is not None:
            raise
        traceback.print_exc()  # what the launcher reads; then the same hard exit, with status 1
        _end_process(1)
    finally:
        dist.destroy_process_group()
    if argv is None:
        _end_process(0)


def _end_process(code: int) -> None:
    """End the rank's process without the interpreter's teardown. ``destroy_process_group`` does not stop gloo's
    threads (``gloo_tcp_loop``, ``pt_gloo_runloop``; the store's ``pt_tcpstore_uv`` on rank 0; ``pt_autograd_*``
    after a tensor-parallel run): C++ objects the run created (DDP's reducer, the pipeline stages' autograd graphs)
    keep the process group alive, and /proc/self/task still lists those threads after
    ``destroy_process_group(); gc.collect()``. A normal exit then finalizes the interpreter and runs C++ static
    destructors while they run, which can abort the process (SIGABRT, "terminate called without an active
    exception") after the run has finished. Every rank has passed the final barrier and the group is destroyed, so
    nothing is left to do but flush the output and leave; ``os._exit`` skips that teardown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            stream.flush()
    if dist.is_initialized():
        dist.destroy_process_group()
    os._exit(code)


def _run_and_report(spec: RunSpec, ns: Any, rank: int, world: int, backend: str, render: Renderer | None) -> None:
    """Run this rank; rank 0 gathers every rank's record and writes or renders the report."""
    result = run_rank(spec, rank, world)
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(result, gathered, dst=0)
    if rank == 0:
        assert gathered is not None
        report: dict[str, Any] = {"spec": spec.to_argv(), "ranks": world, "backend": backend,
                                  "measured": summarize(spec, gathered),
                                  "events": [{"rank": r["rank"], "events": r["events"]} for r in gathered]}
        report["coords"] = [r["coords"] for r in sorted(gathered, key=lambda r: r["rank"])]  # (pp, dp, tp) of each
        if any("actions" in r for r in gathered):  # pipelines: the order each rank ran, per step
            report["actions"] = [r.get("actions", []) for r in sorted(gathered, key=lambda r: r["rank"])]
        if spec.check_grads:
            report["check"] = reference_check(spec, gathered)
        if ns.result:
            write_atomic(ns.result, json.dumps(report))
        elif render is not None:
            render(spec, report, fmt=ns.format, do_compare=ns.compare, trace=ns.trace)
        else:
            print(json.dumps(report))
