"""A parallel training plan (how the GPUs split the model and the batch) and its validation against a model.

Symbols follow reference/parallelism.md: d (dp) data-parallel, t (tp) tensor-parallel, p (pp) pipeline-parallel,
v virtual stages per rank, b micro-batch, B global batch, m = B / (b·d) micro-batches per pipeline per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal

from xpusim.errors import UserError
from xpusim.parallel.memory import (
    GRAD_BYTES,
    LOGITS_BYTES_PER_ELEMENT,
    OPTIMIZER_BYTES,
    PARAM_BYTES,
    optimizer_step_bytes,
)
from xpusim.workload.transformer import TransformerConfig

Schedule = Literal["gpipe", "1f1b", "interleaved", "zb-h1"]
SCHEDULES: tuple[str, ...] = ("gpipe", "1f1b", "interleaved", "zb-h1")
Recompute = Literal["none", "selective", "full", "moe"]
RECOMPUTES: tuple[str, ...] = ("none", "selective", "full", "moe")
Dispatcher = Literal["alltoall", "deepep"]
DISPATCHERS: tuple[str, ...] = ("alltoall", "deepep")
PipeSends = Literal["megatron", "deepspeed"]
PIPE_SENDS: tuple[str, ...] = ("megatron", "deepspeed")
Loss = Literal["megatron", "native", "te"]
LOSSES: tuple[str, ...] = ("megatron", "native", "te")
RankOrder = Literal["tp-dp-pp", "tp-pp-dp"]
RANK_ORDERS: tuple[str, ...] = ("tp-dp-pp", "tp-pp-dp")
TrainDtype = Literal["bf16", "fp16"]
TRAIN_DTYPES: tuple[str, ...] = ("bf16", "fp16")
"""Compute dtypes of a step: 16-bit mixed precision (the activation model, Korthikanti et al. 2022, counts 2-byte
activations and the layer cost runs at 16 bits)."""


class PlanError(UserError):
    """A plan that cannot run this model on these GPUs: every reason, each with the nearest valid values."""


@dataclass(frozen=True, kw_only=True)
class ParallelPlan:
    """One way to train: the parallel degrees, the batch split, the schedule and the memory savers."""

    dp: int = 1
    """Data-parallel replicas (d)."""
    tp: int = 1
    """Tensor-parallel ranks per layer (t), Megatron column/row split."""
    pp: int = 1
    """Pipeline stages (p)."""
    cp: int = 1
    """Context-parallel ranks (c, Megatron-Core's ``--context-parallel-size``): each sequence split into c chunks
    (2c halves, paired for a causal mask's balance) over c ranks, which pass their keys and values around a ring to
    attend to the whole sequence. They hold the same weights: gradients reduce, and ZeRO shards, over dp·c ranks.
    Numbered next to tp (Megatron's order tp-cp-dp-pp)."""
    ep: int = 1
    """Expert-parallel ranks (e): a mixture of experts' experts split over e ranks, each holding E/e of them; tokens
    reach them by all-to-all. The group is cut from the tp·cp·dp ranks of a pipeline stage (Megatron-Core's MoE
    parallel folding), so etp·e divides tp·cp·dp; with etp = tp and cp = 1 (the defaults) that is e dividing dp."""
    etp: int | None = None
    """Expert tensor-parallel ranks: each routed expert's weights split over etp ranks (Megatron-Core's
    ``--expert-tensor-parallel-size``); None: the same as tp. etp = 1 with tp > 1 keeps experts whole and lets the
    expert-parallel group span the tensor-parallel ranks."""
    vp: int = 1
    """Virtual stages (model chunks) per pipeline rank (v); > 1 only with the interleaved schedule."""
    dispatcher: Dispatcher = "alltoall"
    """How a MoE layer's tokens reach their experts' ranks: ``alltoall`` (Megatron-Core's NCCL all-to-all: a copy
    per routed expert, k per token) or ``deepep`` (DeepSeek's DeepEP: one copy per destination node across nodes,
    forwarded to the node's experts over NVLink; DeepSeek-V3 report Sec. 3.2.2)."""
    routing_skew: float = 1.0
    """Load imbalance of a mixture of experts: the busiest expert-parallel rank's routed tokens over the mean (1:
    uniform routing, what force-balanced benchmarks run). The step waits for that rank: its expert GEMMs, the
    tokens it receives in the all-to-all and its routed activations scale by the skew; the FLOPs do not."""
    stage_layers: tuple[int, ...] = ()
    """Decoder layers of each pipeline stage, virtual stages in order: p·v numbers summing to the model's layers (0
    is allowed: a stage holding only the embedding or the loss). Empty: the layers split evenly. `megatron_split`
    gives Megatron-LM's split that counts the embedding and the loss as one layer each."""
    micro_batch: int = 1
    """Samples per micro-batch (b)."""
    global_batch: int = 1
    """Samples per optimizer step (B), over all data-parallel replicas."""
    schedule: Schedule = "1f1b"
    zero: int = 0
    """0 plain data parallel; 1 optimizer states, 2 + gradients, 3 + parameters sharded over dp (3 = FSDP full
    shard, 2 = FSDP shard-grad-op)."""
    dp_overlap: bool = True
    """DDP-style bucketed gradient reduction overlapped with the last backward; False: one reduction after it."""
    pipe_sends: PipeSends = "megatron"
    """How pipeline stages pass activations and their gradients: ``megatron`` — each tp rank sends 1/t of the
    tensor and the receivers all-gather it over NVLink (Narayanan et al. 2021, Sec. 4.1), the transfer delaying only
    its receiver; ``deepspeed`` — DeepSpeed's PipelineEngine (Megatron-DeepSpeed: BLOOM), every tp rank sends the
    whole tensor with a blocking send that holds its sender (deepspeed/runtime/pipe/engine.py,
    _exec_send_activations and _exec_send_grads)."""
    tp_overlap: bool = True
    """Megatron-LM's asynchronous tensor-parallel backward (2022 on; Korthikanti et al. 2022, Sec. 6.2): a
    column-parallel layer's input-gradient all-reduce (with sp: its reduce-scatter) runs behind the layer's
    weight-gradient GEMM. False: every exchange on the critical path (Megatron-LM of 2021). Not with zb-h1, whose
    weight gradients run apart."""
    sp: bool = False
    """Megatron sequence parallelism (norms and dropout split along the sequence over the tp ranks)."""
    recompute: Recompute = "none"
    """Activation recomputation in the backward: ``selective`` the attention core (Korthikanti et al. 2022), ``full``
    the whole layer, ``moe`` the MoE layers (router, dispatch and combine all-to-alls, experts, shared experts:
    Megatron-Core's ``--recompute-granularity selective --recompute-modules moe``)."""
    flash: bool = True
    """FlashAttention (Dao et al. 2022; Megatron-Core with Transformer Engine): the attention never writes the s × s
    scores to memory, nor keeps them. False: the attention of Megatron-LM before it (2021–2022), scores in HBM and
    the attention probabilities dropped out there (Megatron's default attention dropout, 0.1)."""
    fp8: bool = False
    """The GEMMs in FP8 (Transformer Engine's recipe, forward and backward): at the chip's fp8 peak with the same
    achieved fraction as the 16-bit GEMMs, reading 1-byte inputs and weights; attention, norms, activations,
    communication and the MFU's peak stay in ``dtype``."""
    dtype: TrainDtype = "bf16"
    """Chip dtype the layers compute in (one of `TRAIN_DTYPES`): the roofline peak their time uses, and the dense
    peak MFU and HFU are measured against. Activations (and what pipeline stages send) are in this dtype."""
    param_bytes: int = PARAM_BYTES
    """Bytes per parameter of the working copy (2: bf16/fp16 mixed precision, ZeRO Sec. 3.1): parameter memory,
    ZeRO-3 gathers, the all-gather after a ZeRO-1/2 step, and the optimizer step's write."""
    grad_bytes: int = GRAD_BYTES
    """Bytes per gradient element (2, ZeRO Sec. 3.1): gradient memory and the data-parallel reduction."""
    optimizer_bytes: int = OPTIMIZER_BYTES
    """Optimizer-state bytes per parameter (ZeRO's K = 12 for mixed-precision Adam: fp32 master copy, momentum
    and variance)."""
    logits_bytes: int = LOGITS_BYTES_PER_ELEMENT
    """Bytes per logit the loss reads, writes and keeps (4: fp32, Korthikanti et al. 2022 Sec. 4.3)."""
    loss: Loss = "megatron"
    """How the cross-entropy loss runs over the logits (one of `LOSSES`; the passes each makes: `loss_bytes`):
    ``megatron`` Megatron's vocabulary-parallel cross-entropy, a kernel per step (Megatron-Core's default, and
    Megatron-LM's and Megatron-DeepSpeed's of 2021–22); ``native`` Megatron-Core's fused one
    (``--cross-entropy-loss-fusion``); ``te`` Transformer Engine's (``--cross-entropy-fusion-impl te``)."""
    rank_order: RankOrder = "tp-dp-pp"
    """How ranks are numbered, innermost first: consecutive ranks share a node, so the first group listed stays
    inside a node longest (Megatron-LM's default is tp-dp-pp)."""

    def span(self, group: str) -> int:
        """How many consecutive ranks one ``dp`` or ``pp`` group spans under the rank order."""
        order = self.rank_order.split("-")
        sizes = {"tp": self.tp * self.cp, "dp": self.dp, "pp": self.pp}  # cp ranks numbered next to tp
        span = 1
        for g in order[: order.index(group) + 1]:
            span *= sizes[g]
        return span

    def layers_per_stage(self, layers: int) -> tuple[int, ...]:
        """Decoder layers of each of the p·v stages (``stage_layers``, or ``layers`` split evenly)."""
        return self.stage_layers or (layers // self.stages,) * self.stages

    @property
    def hides_tp_backward(self) -> bool:
        """Whether the backward's tensor-parallel reductions run behind weight-gradient GEMMs (`tp_overlap`, with
        tp > 1 and a schedule that runs each weight gradient right after its input gradient: not zb-h1)."""
        return self.tp_overlap and self.tp > 1 and self.schedule != "zb-h1"

    @property
    def kept_logit_bytes(self) -> int:
        """Bytes per logit the loss keeps for its backward: the fp32 softmax (``logits_bytes``), or with ``te`` the
        gradient Transformer Engine writes into the 16-bit logits."""
        return 2 if self.loss == "te" else self.logits_bytes

    @property
    def blocking_sends(self) -> bool:
        """Whether pipeline sends carry whole tensors and hold their sender (`pipe_sends` deepspeed, pp > 1)."""
        return self.pipe_sends == "deepspeed" and self.pp > 1

    @property
    def expert_tp(self) -> int:
        """Ranks each routed expert is split over (etp, or tp when not given)."""
        return self.tp if self.etp is None else self.etp

    @property
    def expert_dp(self) -> int:
        """Replicas of each expert (expert data parallel): tp·cp·dp / (etp·ep); their gradients reduce over these
        (Megatron-Core's parallel folding: the experts' etp × ep × edp grid covers the attention's tp × cp × dp)."""
        return self.tp * self.cp * self.dp // (self.expert_tp * self.ep)

    @property
    def expert_span(self) -> int:
        """Consecutive ranks one expert-parallel group spans: etp·ep when it fits in the ranks of one pipeline
        stage's tp·cp·dp block as numbered, else dp steps of t·c·p ranks apart (rank order tp-pp-dp)."""
        span = self.expert_tp * self.ep
        return span if self.rank_order == "tp-dp-pp" or span <= self.tp * self.cp else span * self.pp

    @property
    def optimizer_step_bytes(self) -> float:
        """Bytes the mixed-precision optimizer step moves per local parameter (`memory.optimizer_step_bytes`: 46
        with the default bytes, 54 in fp16 with its loss scaling)."""
        return optimizer_step_bytes(param_bytes=self.param_bytes, grad_bytes=self.grad_bytes,
                                    optimizer_bytes=self.optimizer_bytes, loss_scaling=self.dtype == "fp16")

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def grad_replicas(self) -> int:
        """Ranks holding the same weights (a pipeline stage's tp shard): dp·cp — the gradient reduction's and the
        dense ZeRO shards' group."""
        return self.dp * self.cp

    @property
    def micro_batches(self) -> int:
        """m: micro-batches each pipeline runs per optimizer step (gradient accumulation steps)."""
        return self.global_batch // (self.micro_batch * self.dp)

    @property
    def stages(self) -> int:
        return self.pp * self.vp

    def label(self) -> str:
        parts = [f"dp={self.dp}", f"tp={self.tp}", f"pp={self.pp}"] + ([f"cp={self.cp}"] if self.cp > 1 else []) \
            + ([f"ep={self.ep}"] if self.ep > 1 else []) \
            + ([f"etp={self.etp}"] if self.expert_tp != self.tp else []) \
            + ([self.dispatcher] if self.ep > 1 and self.dispatcher != "alltoall" else []) \
            + ([f"skew={self.routing_skew:g}"] if self.routing_skew != 1 else [])
        if self.vp > 1:
            parts.append(f"v={self.vp}")
        if self.stage_layers:
            parts.append("layers=" + ",".join(f"{n}x{k}" if k > 1 else str(n) for n, k in _runs(self.stage_layers)))
        parts += [f"b={self.micro_batch}", f"m={self.micro_batches}", self.schedule]
        if self.zero:
            parts.append(f"zero{self.zero}")
        if self.sp:
            parts.append("sp")
        if self.recompute != "none":
            parts.append(f"recompute={self.recompute}")
        if not self.flash:
            parts.append("no-flash")
        if self.tp > 1 and not self.tp_overlap:
            parts.append("no-tp-overlap")
        if self.pp > 1 and self.pipe_sends != "megatron":
            parts.append(f"{self.pipe_sends}-sends")
        if self.fp8:
            parts.append("fp8")
        if self.loss != "megatron":
            parts.append(f"loss={self.loss}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {"dp": self.dp, "tp": self.tp, "pp": self.pp, "cp": self.cp, "ep": self.ep, "etp": self.etp,
                "dispatcher": self.dispatcher, "routing_skew": self.routing_skew, "vp": self.vp,
                "stage_layers": list(self.stage_layers),
                "micro_batch": self.micro_batch, "global_batch": self.global_batch,
                "micro_batches": self.micro_batches, "gpus": self.gpus, "schedule": self.schedule, "zero": self.zero,
                "dp_overlap": self.dp_overlap, "tp_overlap": self.tp_overlap, "pipe_sends": self.pipe_sends,
                "sp": self.sp, "recompute": self.recompute, "flash": self.flash, "fp8": self.fp8,
                "loss": self.loss, "rank_order": self.rank_order}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ParallelPlan:
        """The plan `to_dict` (optionally with `precision_dict`'s keys) describes. The derived ``micro_batches``
        and ``gpus`` may be present and must then agree; any other unknown key is a `PlanError`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"micro_batches", "gpus"})
        if unknown:
            raise PlanError(f"unknown plan keys {', '.join(map(repr, unknown))}; expected some of "
                            f"{', '.join(sorted(names))}")
        given = {k: (tuple(v) if k == "stage_layers" and isinstance(v, list) else v)  # JSON has lists
                 for k, v in data.items() if k in names}
        plan = cls(**given)  # type: ignore[arg-type]
        for derived in ("micro_batches", "gpus"):
            if derived in data and data[derived] != getattr(plan, derived):
                raise PlanError(f"{derived}={data[derived]!r} disagrees with the plan's {getattr(plan, derived)}")
        return plan

    def precision_dict(self) -> dict[str, object]:
        """The training precision the simulator assumes (not part of `to_dict`, which a real run shares)."""
        return {"dtype": self.dtype, "param_bytes": self.param_bytes, "grad_bytes": self.grad_bytes,
                "optimizer_bytes": self.optimizer_bytes, "logits_bytes": self.logits_bytes}


def divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def splits_sequence(seq_len: int, cp: int) -> bool:
    """Whether ``cp`` context-parallel ranks can take a ``seq_len`` sequence: Megatron cuts it into 2·cp equal halves
    and pairs them for a causal mask's balance (cp = 1 always can)."""
    return cp == 1 or seq_len % (2 * cp) == 0


def _nearest(value: int, candidates: list[int]) -> str:
    """The closest valid values on each side of ``value``."""
    below = [c for c in candidates if c < value]
    above = [c for c in candidates if c > value]
    near = ([max(below)] if below else []) + ([min(above)] if above else [])
    return " or ".join(str(c) for c in near) if near else "none"


def problems(plan: ParallelPlan, cfg: TransformerConfig, gpus: int | None = None) -> list[str]:
    """Every reason ``plan`` cannot train ``cfg`` (on ``gpus`` GPUs when given), with the nearest valid values."""
    out: list[str] = []
    for name in ("dp", "tp", "pp", "cp", "ep", "vp", "micro_batch", "global_batch"):
        if getattr(plan, name) < 1:
            out.append(f"{name}={getattr(plan, name)} must be >= 1")
    if plan.etp is not None and plan.etp < 1:
        out.append(f"etp={plan.etp} must be >= 1")
    if out:
        return out
    if plan.schedule not in SCHEDULES:
        out.append(f"schedule={plan.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if plan.recompute not in RECOMPUTES:
        out.append(f"recompute={plan.recompute!r} is not one of {', '.join(RECOMPUTES)}")
    if not plan.routing_skew >= 1:
        out.append(f"routing_skew={plan.routing_skew} must be >= 1 (the busiest rank's routed tokens over the mean)")
    if plan.dispatcher not in DISPATCHERS:
        out.append(f"dispatcher={plan.dispatcher!r} is not one of {', '.join(DISPATCHERS)}")
    if plan.pipe_sends not in PIPE_SENDS:
        out.append(f"pipe_sends={plan.pipe_sends!r} is not one of {', '.join(PIPE_SENDS)}")
    if plan.loss not in LOSSES:
        out.append(f"loss={plan.loss!r} is not one of {', '.join(LOSSES)}")
    if plan.rank_order not in RANK_ORDERS:
        out.append(f"rank_order={plan.rank_order!r} is not one of {', '.join(RANK_ORDERS)}")
    if plan.zero not in (0, 1, 2, 3):
        out.append(f"zero={plan.zero} is not one of 0, 1, 2, 3")
    if plan.dtype not in TRAIN_DTYPES:
        out.append(f"dtype={plan.dtype!r} is not one of {', '.join(TRAIN_DTYPES)} (16-bit mixed precision)")
    for name in ("param_bytes", "grad_bytes", "logits_bytes"):
        if getattr(plan, name) <= 0:
            out.append(f"{name}={getattr(plan, name)} must be > 0")
    if plan.optimizer_bytes < 0:
        out.append(f"optimizer_bytes={plan.optimizer_bytes} must be >= 0 (12 for mixed-precision Adam)")
    if gpus is not None and plan.gpus != gpus:
        tp_pp = plan.tp * plan.pp * plan.cp
        what = "tp*pp*cp" if plan.cp > 1 else "tp*pp"
        hint = (f"dp={gpus // tp_pp}" if gpus % tp_pp == 0
                else f"{what} must divide {gpus}: {what} = {_nearest(tp_pp, divisors(gpus))}")
        cp = f"*{plan.cp}" if plan.cp > 1 else ""
        out.append(f"gpus={gpus} but dp*{what} = {plan.dp}*{plan.tp}*{plan.pp}{cp} = {plan.gpus}; valid: {hint}")
    if plan.cp > 1 and not plan.flash:
        out.append(f"cp={plan.cp}: context parallelism runs a fused (flash) attention over the keys and values "
                   "passed around; it needs flash (drop --no-flash)")
    out += _expert_problems(plan, cfg)
    tp_ok = [t for t in divisors(cfg.heads) if cfg.kv_heads % t == 0 and cfg.ffn % t == 0]
    if plan.tp not in tp_ok:
        out.append(f"tp={plan.tp} does not divide heads={cfg.heads}, kv_heads={cfg.kv_heads} and "
                   f"ffn={cfg.ffn}; nearest valid tp: {_nearest(plan.tp, tp_ok)}")
    out += _stage_problems(plan, cfg.layers)
    per_step = plan.micro_batch * plan.dp
    if plan.global_batch % per_step:
        lo = plan.global_batch // per_step * per_step
        near = " or ".join(str(x) for x in (lo, lo + per_step) if x > 0)
        out.append(f"global batch {plan.global_batch} is not divisible by micro_batch*dp = "
                   f"{plan.micro_batch}*{plan.dp}; nearest valid batch: {near}")
    m = plan.global_batch // per_step if plan.global_batch % per_step == 0 else 0
    if plan.schedule == "interleaved":
        if plan.vp < 2:
            v_ok = [v for v in divisors(cfg.layers // plan.pp) if v > 1] if cfg.layers % plan.pp == 0 else []
            out.append(f"the interleaved schedule needs v >= 2 virtual stages per rank; valid v: "
                       f"{', '.join(map(str, v_ok[:6])) or 'none (layers per stage is 1)'}")
        if plan.pp < 2:
            out.append("the interleaved schedule needs pp >= 2")
        if m and m % plan.pp:
            lo = m // plan.pp * plan.pp
            near = " or ".join(str(x * per_step) for x in (lo, lo + plan.pp) if x > 0)
            out.append(f"interleaving needs the micro-batch count m={m} to be a multiple of pp={plan.pp}; "
                       f"nearest valid global batch: {near}")
    elif plan.vp != 1:
        out.append(f"v={plan.vp} virtual stages need --schedule interleaved (schedule is {plan.schedule})")
    if plan.sp and plan.tp < 2:
        out.append("sequence parallelism (--sp) splits along the tp ranks: it needs tp >= 2")
    return out


def _runs(values: tuple[int, ...]) -> list[tuple[int, int]]:
    """(value, repeats) of each run of equal neighbours."""
    out: list[tuple[int, int]] = []
    for x in values:
        if out and out[-1][0] == x:
            out[-1] = (x, out[-1][1] + 1)
        else:
            out.append((x, 1))
    return out


def megatron_split(layers: int, stages: int, *, embedding: bool = True, loss: bool = True) -> tuple[int, ...]:
    """Megatron-LM's ``--account-for-embedding-in-pipeline-split`` / ``--account-for-loss-in-pipeline-split``:
    the embedding and the loss count as a layer each, the layers + 2 split evenly over the ``stages`` (virtual)
    stages, so the first and the last hold one decoder layer fewer (Qwen3-235B's 94 layers on 8 × 4 stages:
    2, 3 × 30, 2)."""
    n = layers + embedding + loss
    if n % stages or n // stages < 1:
        ok = [k for k in divisors(n) if n // k >= 1]
        raise PlanError(f"Megatron's embedding-loss split needs layers + {int(embedding) + int(loss)} = {n} to be "
                        f"divisible by pp*v = {stages}; valid pp*v: {', '.join(map(str, ok))}")
    per = n // stages
    split = [per] * stages
    split[0] -= embedding
    split[-1] -= loss
    return tuple(split)


def _stage_problems(plan: ParallelPlan, layers: int) -> list[str]:
    stages = plan.pp * plan.vp
    what = f"pp*v = {plan.pp}*{plan.vp}" if plan.vp > 1 else f"pp={plan.pp}"
    if plan.stage_layers:
        given = plan.stage_layers
        if len(given) != stages or min(given) < 0 or sum(given) != layers:
            return [f"stage_layers={','.join(map(str, given))}: expected {stages} numbers >= 0 ({what}) summing to "
                    f"the {layers} layers (they have {len(given)} summing to {sum(given)})"]
        return []
    if layers % stages == 0:
        return []
    pp_ok = [p for p in divisors(layers) if layers % (p * plan.vp) == 0]
    uneven = (f"; or split unevenly with stage_layers (embedding-loss: Megatron's split, {(layers + 2) // stages} "
              f"per stage, one fewer on the first and the last)") if (layers + 2) % stages == 0 else \
        "; or give each stage's layers (stage_layers)"
    return [f"layers={layers} is not divisible by {what}; nearest valid pp"
            f"{f' for v={plan.vp}' if plan.vp > 1 else ''}: {_nearest(plan.pp, pp_ok)}{uneven}"]


def _expert_problems(plan: ParallelPlan, cfg: TransformerConfig) -> list[str]:
    if not cfg.moe:
        return [f"{name}={getattr(plan, name)}: {cfg.name} has no experts (expert parallelism needs a mixture of "
                f"experts)" for name in ("ep", "etp", "routing_skew") if (getattr(plan, name) or 1) > 1] + (
            [f"recompute=moe: {cfg.name} has no MoE layers to recompute; valid: none, selective, full"]
            if plan.recompute == "moe" else [])
    out = []
    etp, block = plan.expert_tp, plan.tp * plan.cp * plan.dp  # the ranks the experts fold onto
    if cfg.expert_ffn % etp:
        etp_ok = [k for k in divisors(block) if cfg.expert_ffn % k == 0]
        out.append(f"etp={etp} does not divide the experts' ffn={cfg.expert_ffn}; nearest valid etp: "
                   f"{_nearest(etp, etp_ok)}")
    if cfg.experts % plan.ep or block % (etp * plan.ep):
        ep_ok = [e for e in divisors(cfg.experts) if block % (etp * e) == 0]
        cp = f"*{plan.cp}" if plan.cp > 1 else ""
        what = (f"dp={plan.dp}" if etp == plan.tp and plan.cp == 1
                else f"tp*{'cp*' if cp else ''}dp/etp = {plan.tp}{cp}*{plan.dp}/{etp}")
        out.append(f"ep={plan.ep} must divide the {cfg.experts} experts and {what}; valid ep: "
                   f"{', '.join(map(str, ep_ok))}")
    return out


def check(plan: ParallelPlan, cfg: TransformerConfig, gpus: int | None = None) -> ParallelPlan:
    """``plan`` if valid, else PlanError with every reason."""
    found = problems(plan, cfg, gpus)
    if found:
        raise PlanError(f"invalid plan for {cfg.name}: " + "; ".join(found))
    return plan


def complete(cfg: TransformerConfig, gpus: int, **given: object) -> ParallelPlan:
    """A plan from what the user gave: dp defaults to gpus / (tp·pp·cp), the global batch to p micro-batches per
    replica (one per pipeline stage, the least that fills the pipeline; one without a pipeline); then checked."""
    given = {k: v for k, v in given.items() if v is not None}
    tp, pp = int(given.get("tp", 1)), int(given.get("pp", 1))  # type: ignore[call-overload]
    cp = int(given.get("cp", 1))  # type: ignore[call-overload]
    if "dp" not in given:
        given["dp"] = max(gpus // max(tp * pp * cp, 1), 1)
    plan = ParallelPlan(**given)  # type: ignore[arg-type]
    if "global_batch" not in given:
        plan = replace(plan, global_batch=plan.micro_batch * plan.dp * plan.pp)
    return check(plan, cfg, gpus)
