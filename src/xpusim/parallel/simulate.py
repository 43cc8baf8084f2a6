"""One training step of a plan on a cluster: per-action compute times from the roofline engine, α-β
communication on the cluster's fabrics, the pipeline schedule executed event by event, then the gradient
reduction and the optimizer step. Returns the step time, throughput, MFU/HFU, bubble, memory and communication.

Rank order is tp → dp → pp by default (tensor-parallel peers are neighbours, then data-parallel replicas, then
pipeline stages), Megatron-LM's default: a tp group stays inside a node when t ≤ GPUs per node; tp → pp → dp
keeps pipeline neighbours closer instead. A group spanning more than one node runs at the inter-node bandwidth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from xpusim.engines.roofline import estimate_op
from xpusim.hardware.chip import Chip
from xpusim.hardware.cluster import (
    Cluster,
    Fabric,
    GroupLinks,
    all_gather_s,
    all_reduce_s,
    group_ring_s,
    hierarchical_all_to_all_s,
    p2p_s,
)
from xpusim.parallel.events import Event, Timeline, run_schedule
from xpusim.parallel.memory import (
    LOGITS_BYTES_PER_ELEMENT,
    MemoryBreakdown,
    ModelStates,
    dense_mlp_activation_bytes,
    layer_activation_bytes,
    model_states,
    moe_mlp_activation_bytes,
)
from xpusim.parallel.plan import ParallelPlan, PlanError, check, splits_sequence
from xpusim.parallel.schedules import Action, PipelineSchedule, build
from xpusim.parallel.spec import TrainModel
from xpusim.precision import TORCH_FLOAT16, element_bytes
from xpusim.units import MIB, TERA
from xpusim.workload.model import OpCost
from xpusim.workload.transformer import Precision, TransformerConfig, attention_dropout_op, head_ops, layer_ops

DDP_BUCKET_BYTES = 25 * MIB  # torch DistributedDataParallel's default bucket_cap_mb=25

# Fused (Flash) attention under a decoder's causal mask, as training runs it. The attention op counts the full
# score matrix (what unfused batched matmuls compute: Megatron-LM of 2021-22, Megatron-DeepSpeed); a fused kernel
# skips the blocks above the diagonal.
FA_CAUSAL_SPEEDUP = 1.75
"""FlashAttention-2 with the causal mask against without: "around 1.7-1.8x speedup" from skipping about half of the
blocks (Dao 2023, arXiv:2307.08691, Sec. 3.1.1). FlashAttention-3's FP8 forward at 16k tokens agrees: 1,056 TFLOP/s
with the mask (its FLOPs halved) against 1,171 without (Shah et al. 2024, Fig. 7), 2 x 1056 / 1171 = 1.80x."""
FA_BWD_WORK = 2.5
"""Backward over forward FLOPs of fused attention: 5 matmuls against 2, the scores recomputed (Dao 2023, Sec. 4.1)."""
FA_BWD_EFFICIENCY = 581 / 740
"""Backward over forward throughput of fused attention: FlashAttention-3 on H100, head dim 128, sequence 16k, no
mask: 581 TFLOP/s backward (Shah et al. 2024, arXiv:2407.08608, Fig. 6b) against 740 forward (its abstract)."""


# collectives (ring α-β): all_reduce_s, all_gather_s, p2p_s in xpusim.hardware.cluster, shared with the LLM engine
# ------------------------------------------------------------------------------------------------ layer cost
@dataclass(frozen=True, kw_only=True)
class LayerCost:
    """One transformer layer, one micro-batch, on one GPU of a tp group: seconds and FLOPs."""

    fwd_s: float
    bwd_input_s: float
    """Input-gradient part of the backward, recomputation included."""
    bwd_weight_s: float
    tp_fwd_s: float
    """Tensor-parallel collectives of the forward (on the critical path: Megatron does not overlap them)."""
    tp_bwd_s: float
    gemm_flops_fwd: float
    """Per GPU: the matmul and attention-product FLOPs of one forward (Eq. 3 counts these)."""
    recompute_flops: float
    ep_fwd_s: float = 0.0
    """Expert-parallel all-to-alls of the forward (dispatch and combine), averaged over the layers (dense layers
    have none); on the critical path."""
    ep_bwd_s: float = 0.0
    cp_fwd_s: float = 0.0
    """Context parallelism: what the ring of key/value chunks adds to the forward beyond the attention it runs
    behind."""
    cp_bwd_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class HeadCost:
    fwd_s: float
    bwd_s: float
    gemm_flops_fwd: float
    embed_fwd_s: float
    embed_bwd_s: float


def _sharded(cfg: TransformerConfig, t: int, etp: int | None = None) -> TransformerConfig:
    """One tensor-parallel rank's share; routed experts are split over ``etp`` ranks (default ``t``: Megatron-Core's
    expert tensor parallelism defaults to tp)."""
    return dataclasses.replace(cfg, heads=cfg.heads // t, kv_heads=cfg.kv_heads // t, ffn=cfg.ffn // t,
                               expert_ffn=cfg.expert_ffn // (etp or t), shared_ffn=cfg.shared_ffn // t)


PRECISION = Precision(w_bits=16, a_bits=16, kv_bits=16)
"""The layer cost's bit widths: 16-bit mixed precision, bf16 unless the plan's dtype says fp16 (`precision`)."""


def precision(dtype: str = "bf16") -> Precision:
    """16-bit weights, activations and KV of the plan's compute ``dtype`` (``bf16`` or ``fp16``)."""
    return dataclasses.replace(PRECISION, float16=TORCH_FLOAT16[dtype])


_ROW_PARALLEL = ("o", "proj", "down")  # a block's last GEMM (split along its input): no exchange in its backward
_REPLICATED_KINDS = ("norm", "elementwise")  # run on the full hidden state by every tp rank unless sp splits them


def layer_cost(cfg: TransformerConfig, chip: Chip, s: int, b: int, t: int, sp: bool, recompute: str,
               tp_fabric: Fabric | None, dtype: str = "bf16", ep: int = 1,
               ep_links: GroupLinks | None = None, etp: int | None = None,
               etp_fabric: Fabric | None = None, dispatcher: str = "alltoall", flash: bool = False,
               routing_skew: float = 1.0, fp8: bool = False, cp: int = 1,
               cp_fabric: Fabric | None = None, tp_overlap: bool = False) -> LayerCost:
    """One layer's forward and backward on one rank (memoized: the search asks for the same few hundred shapes).
    ``ep_links``: where the expert-parallel group sits; ``etp``: ranks each routed expert is split over (default
    ``t``), ``etp_fabric`` the links among them; ``dispatcher``, ``flash``, ``routing_skew``, ``fp8``, ``cp``,
    ``tp_overlap``: see `ParallelPlan`, ``cp_fabric`` the links of the context-parallel ring (`layer_args` gives
    them for a plan)."""
    etp = t if etp is None else etp
    links = tuple(f.model_dump_json() if f else "" for f in (tp_fabric, ep_links, etp_fabric, cp_fabric))
    key = (cfg, chip.model_dump_json(), s, b, t, sp, recompute, dtype, ep, etp, links, dispatcher, flash, routing_skew,
           fp8, cp, tp_overlap)
    if key not in _LAYER_CACHE:
        _LAYER_CACHE[key] = _layer_cost(cfg, chip, s, b, t, sp, recompute, tp_fabric, dtype, ep, ep_links, etp,
                                        etp_fabric, dispatcher, flash, routing_skew, fp8, cp, cp_fabric,
                                        tp_overlap)
    return _LAYER_CACHE[key]


_LAYER_CACHE: dict[tuple[object, ...], LayerCost] = {}


def _layer_cost(cfg: TransformerConfig, chip: Chip, s: int, b: int, t: int, sp: bool, recompute: str,
                tp_fabric: Fabric | None, dtype: str, ep: int, ep_links: GroupLinks | None, etp: int,
                etp_fabric: Fabric | None, dispatcher: str, flash: bool, skew: float, fp8: bool, cp: int = 1,
                cp_fabric: Fabric | None = None, tp_overlap: bool = False) -> LayerCost:
    prec = precision(dtype)
    if fp8 and chip.best_peak_flops_per_s("fp8") is None:
        raise PlanError(f"fp8: {chip.name} has no fp8 peak (it has {', '.join(chip.dtypes())})")
    full, s = s, s // cp  # with context parallelism the rank holds s/c of each sequence's tokens ...
    shard = _sharded(cfg, t, etp)
    ops = [_moe_rank(o, t, etp, ep) for o in layer_ops(shard, b, s, full, prec, flash=flash)
           if o.kind != "memory"]  # ... and its queries attend to all of them (1/c of the attention's work)
    fwd = gemm_fwd = gemm_w = attn = moe = 0.0
    attn_bwd = FA_BWD_WORK / FA_BWD_EFFICIENCY if flash else 2.0  # the attention's backward over its forward
    gemm_flops = moe_flops = 0.0
    window = {"attn": 0.0, "mlp": 0.0}  # weight-gradient GEMMs of the column-parallel layers (the first of a block)
    for op in ops:
        # the step waits for the busiest expert-parallel rank: skew times the mean routed rows (the same FLOPs)
        timed = _scale_rows(op, skew) if op.module.endswith(".experts") else op
        if fp8 and op.kind == "matmul":
            timed = _fp8_gemm(timed)
        est = estimate_op(timed, chip)
        split = sp and op.kind in _REPLICATED_KINDS and op.module.rsplit(".", 1)[-1] not in _MOE_MODULES
        time = est.time_s / (t if split else 1)
        fwd += time
        if ".moe" in op.module:  # the MoE block (router, experts, shared experts): what recompute=moe re-runs
            moe += time
            moe_flops += 2 * op.macs
        if op.kind == "matmul":
            gemm_fwd += time  # its input-gradient GEMM has the same shape and traffic
            wgrad = estimate_op(weight_gradient(timed), chip).time_s
            gemm_w += wgrad
            gemm_flops += 2 * op.macs
            block = op.module.split(".")[1] if op.module.count(".") >= 2 else ""
            if block in window and op.module.rsplit(".", 1)[-1] not in _ROW_PARALLEL:
                window[block] += wgrad
        elif op.kind == "attention":
            if flash:  # causal: the kernel skips the masked blocks; its backward is 2.5x the work, slower per FLOP
                fwd -= time - time / FA_CAUSAL_SPEEDUP
                time /= FA_CAUSAL_SPEEDUP
            attn += time
            gemm_flops += 2 * op.macs
    # Without FlashAttention training drops out attention probabilities in memory (Megatron's default attention
    # dropout, 0.1); its backward applies the kept mask to the gradient: one pass of the same bytes, not two
    drop = 0.0 if flash else estimate_op(attention_dropout_op(shard, b, s, full, prec), chip).time_s
    fwd += drop
    attn += drop  # selective recomputation re-runs it with the core attention
    act_bytes = s * b * cfg.hidden * prec.a_bits // 8

    def pair(nbytes: float, n: int, fabric: Fabric | None) -> float:
        """Megatron's tensor-parallel exchange around a block: an all-reduce, or with sp an all-gather before and a
        reduce-scatter after it (the same bytes on the wire)."""
        if fabric is None or n == 1:
            return 0.0
        return 2 * all_gather_s(nbytes, n, fabric) if sp else all_reduce_s(nbytes, n, fabric)

    # Attention and a dense MLP: one exchange each over the tp ranks, forward and backward. A MoE layer's routed
    # experts exchange the tokens routed to them (k copies of each) over the etp ranks, after the all-to-all (none
    # when etp = 1: Megatron-Core's parallel folding); its shared experts are a tp-split dense MLP.
    share = cfg.moe_layers / cfg.layers
    moe_tp = share * ((pair(act_bytes, t, tp_fabric) if cfg.shared_ffn else 0.0)
                      + pair(act_bytes * cfg.top_k * etp / t * skew, etp,
                             etp_fabric if etp_fabric is not None else tp_fabric))
    mlp = (1 - share) * pair(act_bytes, t, tp_fabric) + moe_tp
    tp_fwd = pair(act_bytes, t, tp_fabric) + mlp
    tp_bwd = tp_fwd
    if tp_overlap and tp_fabric is not None and t > 1:
        # Megatron's async backward: the input gradient of a column-parallel layer (qkv, fc) reduces (all-reduce,
        # with sp a reduce-scatter: half the pair) behind that layer's weight-gradient GEMM; with sp the all-gather
        # of the output gradient before the row-parallel layer stays exposed (Korthikanti et al. 2022, Sec. 6.2)
        one = all_gather_s(act_bytes, t, tp_fabric) if sp else all_reduce_s(act_bytes, t, tp_fabric)
        tp_bwd -= min(one, window["attn"]) + (1 - share) * min(one, window["mlp"])
    # every op's backward ≈ 2× its forward (fused attention's more); the weight GEMMs are split out
    bwd_input = 2 * fwd - gemm_fwd - drop + (attn_bwd - 2) * (attn - drop)
    if fp8:  # Transformer Engine's casts and transposes around the FP8 GEMMs: memory-bound passes of their own
        cast_fwd, cast_bwd = (memory_s(n, chip) for n in fp8_cast_bytes(ops, cfg.gated_mlp, t if sp else 1))
        fwd += cast_fwd
        bwd_input += cast_bwd
    recompute_flops = 0.0
    if recompute == "full":
        bwd_input += fwd
        tp_bwd += tp_fwd
        recompute_flops = gemm_flops
    elif recompute == "selective":
        bwd_input += attn
        recompute_flops = sum(2 * o.macs for o in ops if o.kind == "attention")
    elif recompute == "moe":  # Megatron-Core checkpoints the whole MoE layer: its forward and exchanges run again
        bwd_input += moe
        tp_bwd += moe_tp
        recompute_flops = moe_flops
    # Expert parallelism: the routed tokens go to their experts' ranks and come back (dispatch and combine), two
    # all-to-alls per MoE layer in the forward and two in the backward, k copies of each token's hidden state
    a2a = 0.0
    if ep > 1 and ep_links is not None:
        nbytes = moe_a2a_bytes(cfg, s, b, t, prec) * skew  # what the busiest rank receives
        remote = nbytes / cfg.top_k * expected_remote_nodes(cfg.experts, cfg.top_k, ep_links.nodes) \
            if dispatcher == "deepep" else None
        a2a = hierarchical_all_to_all_s(nbytes, ep_links, remote)
    ep_fwd = 2 * a2a * share
    ep_bwd = 2 * a2a * share + (ep_fwd if recompute in ("full", "moe") else 0.0)
    # Context parallelism (Megatron-Core's ring attention): c − 1 steps, each passing the rank's current key/value
    # chunk (its 1/t of the kv heads) to the next rank while the attention runs on the one it holds; the backward
    # passes the keys and values and their gradients (twice the bytes) behind the attention's backward. Only what
    # the attention does not cover lengthens the layer.
    cp_fwd = cp_bwd = 0.0
    if cp > 1 and cp_fabric is not None:
        kv_chunk = 2 * b * s * cfg.kv_heads * cfg.head_dim / t * prec.a_bits / 8
        cp_fwd = max(0.0, (cp - 1) * p2p_s(kv_chunk, cp_fabric) - attn)
        cp_bwd = max(0.0, (cp - 1) * p2p_s(2 * kv_chunk, cp_fabric) - attn_bwd * attn) \
            + (cp_fwd if recompute == "full" else 0.0)
    # The host's floor on a MoE layer: a third of its launches in the forward, two thirds in the backward (every op's
    # input and weight gradients), a forward's again when the backward re-runs it; averaged over the layers
    host_s = (chip.efficiency.moe_layer_host_ms * 1e-3 * share) if chip.efficiency is not None else 0.0
    if host_s:
        again = 1 if recompute in ("full", "moe") else 0
        fwd += max(0.0, host_s / 3 - (fwd + tp_fwd + ep_fwd + cp_fwd))
        bwd_input += max(0.0, host_s * (2 + again) / 3 - (bwd_input + gemm_w + tp_bwd + ep_bwd + cp_bwd))
    return LayerCost(fwd_s=fwd, bwd_input_s=bwd_input, bwd_weight_s=gemm_w, tp_fwd_s=tp_fwd, tp_bwd_s=tp_bwd,
                     gemm_flops_fwd=gemm_flops, recompute_flops=recompute_flops, ep_fwd_s=ep_fwd, ep_bwd_s=ep_bwd,
                     cp_fwd_s=cp_fwd, cp_bwd_s=cp_bwd)


def activation_bytes(cfg: TransformerConfig, s: int, b: int, t: int, sp: bool, recompute: str = "none",
                     flash: bool = False, etp: int | None = None, routing_skew: float = 1.0,
                     fp8: bool = False) -> float:
    """Activation bytes one layer (averaged over the model's layers) keeps for its backward on one rank:
    Korthikanti's formula, the MoE layers with their MoE block's (`moe_mlp_activation_bytes`) in place of the
    dense MLP's."""
    dense = layer_activation_bytes(s=s, b=b, h=cfg.hidden, a=cfg.heads, t=t, sp=sp,
                                   recompute="none" if recompute == "moe" else recompute, flash=flash, fp8=fp8)
    if not cfg.moe or recompute == "full":
        return dense
    # recompute=moe: the checkpoint keeps only the MoE layer's input, the rank's 1/t of the tokens (16-bit)
    moe = 2 * s * b * cfg.hidden / t if recompute == "moe" else moe_mlp_activation_bytes(
        s=s, b=b, h=cfg.hidden, t=t, top_k=cfg.top_k, experts=cfg.experts, expert_ffn=cfg.expert_ffn,
        shared_ffn=cfg.shared_ffn, etp=etp or t, skew=routing_skew, fp8=fp8)
    return dense + cfg.moe_layers / cfg.layers * (moe - dense_mlp_activation_bytes(s=s, b=b, h=cfg.hidden, t=t,
                                                                                   sp=sp, fp8=fp8))


def recompute_working_bytes(cfg: TransformerConfig, s: int, b: int, t: int, sp: bool, recompute: str,
                            flash: bool = False, etp: int | None = None, routing_skew: float = 1.0,
                            fp8: bool = False) -> float:
    """What the layer being recomputed holds on top of the kept activations while its backward runs: with ``full``
    the whole layer's activations, with ``moe`` its MoE block's, else nothing."""
    if recompute not in ("full", "moe"):
        return 0.0
    whole = activation_bytes(cfg, s, b, t, sp, flash=flash, etp=etp, routing_skew=routing_skew, fp8=fp8)
    return whole if recompute == "full" else whole - activation_bytes(cfg, s, b, t, sp, "moe", flash, etp,
                                                                      routing_skew, fp8)


def layer_args(plan: ParallelPlan, cluster: Cluster) -> tuple[GroupLinks | None, int, Fabric | None, str, bool,
                                                               float, bool, int, Fabric | None, bool]:
    """(where the expert-parallel group sits, etp, links of the expert tensor-parallel group, dispatcher, flash,
    routing skew, fp8, cp, the context-parallel ring's links, tp_overlap) of ``plan``: the arguments `layer_cost`
    takes after ``ep``. zb-h1 runs the weight gradients apart: nothing to hide the exchanges behind."""
    etp = plan.expert_tp
    return (cluster.group(plan.ep, plan.expert_span) if plan.ep > 1 else None, etp,
            cluster.fabric(etp) if etp > 1 else None, plan.dispatcher, plan.flash, plan.routing_skew, plan.fp8,
            plan.cp, cluster.fabric(plan.tp * plan.cp) if plan.cp > 1 else None,
            plan.hides_tp_backward)


def memory_s(nbytes: float, chip: Chip) -> float:
    """Seconds a memory-bound pass over ``nbytes`` takes in the chip's main memory at its memory efficiency (0 for a
    chip without a stated bandwidth): the optimizer step, the loss, the FP8 casts."""
    bw = chip.main_memory.bandwidth_bytes_per_s
    return nbytes / (bw * (chip.efficiency.memory if chip.efficiency else 1.0)) if bw else 0.0


def weight_gradient(op: OpCost) -> OpCost:
    """A GEMM's weight-gradient GEMM: its FLOPs; it reads the forward's input and the output's gradient (the
    forward's output bytes) and accumulates into the fp32 main gradient — read and write 4 bytes per weight, fused
    into the GEMM (Megatron's gradient-accumulation fusion, `wgrad_gemm_accum_fp32`; Transformer Engine's
    ``fuse_wgrad_accumulation``). Compute-bound unless the GEMM has few rows per weight (intensity about rows/4
    FLOP/B): a mixture of experts' experts with few tokens each."""
    return dataclasses.replace(op, weight_bytes=4 * op.params, bytes_written=4 * op.params,
                               activation_bytes_read=op.activation_bytes_read + op.bytes_written)


def fp8_cast_bytes(ops: list[OpCost], gated: bool, norm_split: int = 1) -> tuple[float, float]:
    """Bytes (forward, backward) of Transformer Engine's FP8 casts and transposes around a layer's GEMMs, beyond the
    1-byte reads `_fp8_gemm` gives the GEMMs (TE's Linear, LayerNormLinear, LayerNormMLP, transformer_engine/
    pytorch/module/): a GEMM's input cast in the norm or activation before it writes 1 byte instead of 2 (−1 per
    element) and is transposed for the weight gradient in the backward (``fp8_transpose``: 1 read, 1 written); any
    other input is cast and transposed in the forward (``fp8_cast_transpose_fused``: 2 read, 1 + 1 written), unless it
    is the previous GEMM's input too (gate and up); the output gradient is cast and transposed in the backward
    (``fp8_cast_transpose_bgrad_fused``: 2 read, 1 + 1 written), except a plain GeLU's first GEMM, whose cast runs in
    the GeLU's backward (``fp8_cast_transpose_bgrad_dgelu_fused``; a gated activation's is a pass of its own).
    ``ops``: the layer's forward ops in program order; ``norm_split``: the ranks a norm's rows are split over (t with
    sequence parallelism: the norm writes 1/t of the GEMM's rows, all-gathered after it). The weights' casts, once a
    step, are left out."""
    fwd = bwd = 0.0
    for i, op in enumerate(ops):
        if op.kind != "matmul":
            continue
        before, after = (ops[i - 1] if i else None), (ops[i + 1] if i + 1 < len(ops) else None)
        rows = math.prod(op.output_shape[:-1])
        inputs, outputs = rows * op.input_shapes[0][-1], rows * op.output_shape[-1]
        if before is not None and before.kind in ("norm", "activation"):
            fwd -= inputs / (norm_split if before.kind == "norm" else 1)
            bwd += 2 * inputs
        elif not (before is not None and before.kind == "matmul" and before.input_shapes[0] == op.input_shapes[0]):
            fwd += 4 * inputs
        if not (after is not None and after.kind == "activation" and not gated):
            bwd += 4 * outputs
    return fwd, bwd


def _fp8_gemm(op: OpCost) -> OpCost:
    """A GEMM as Transformer Engine's FP8 recipe runs it: at the fp8 peak, its input and weights read as 1-byte
    casts (the cast itself fused into the norm or activation before it), its output written in 16 bits."""
    return dataclasses.replace(op, dtype="float8_e4m3fn", activation_bytes_read=op.activation_bytes_read // 2,
                               weight_bytes=op.weight_bytes // 2)


def expected_remote_nodes(experts: int, k: int, nodes: int) -> float:
    """Other nodes a token's k experts sit on, expected under uniform routing with the experts spread evenly over
    ``nodes``: (N − 1)·(1 − C(E − E/N, k) / C(E, k)) — what DeepEP sends across nodes, once per node."""
    if nodes <= 1:
        return 0.0
    miss = math.comb(experts - experts // nodes, k) / math.comb(experts, k)
    return (nodes - 1) * (1 - miss)


def moe_a2a_bytes(cfg: TransformerConfig, s: int, b: int, t: int, prec: Precision) -> float:
    """Bytes one rank sends and receives in one expert-parallel all-to-all: its tokens' hidden states, each to its
    top_k experts — its 1/t share of the micro-batch's tokens (Megatron-Core's MoE layers take the sequence split
    over the tensor-parallel ranks)."""
    return s * b * cfg.top_k * cfg.hidden * prec.a_bits / 8 / t


def _scale_rows(op: OpCost, f: float) -> OpCost:
    """``op`` on ``f`` times as many tokens (rows): its work and activation traffic scale, its weights do not."""
    if f == 1:
        return op

    def rows(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (max(1, math.ceil(shape[0] * f)), *shape[1:]) if shape else shape

    return dataclasses.replace(op, macs=math.ceil(op.macs * f), flops=math.ceil(op.flops * f),
                               activation_bytes_read=math.ceil(op.activation_bytes_read * f),
                               bytes_written=math.ceil(op.bytes_written * f),
                               input_shapes=(rows(op.input_shapes[0]), *op.input_shapes[1:]) if op.input_shapes
                               else (), output_shape=rows(op.output_shape))


_MOE_MODULES = ("moe", "router", "experts")  # `layer_ops`' module names inside a MoE layer (`_moe_rank` sets the rows)


def _moe_rank(op: OpCost, t: int, etp: int, ep: int) -> OpCost:
    """A MoE layer's op on one rank, from the op `layer_ops` gives for the micro-batch's tokens. The router and the
    permutations (dispatch, combine) see the rank's 1/t share of the tokens (Megatron-Core's MoE layer takes the
    sequence split over the tp ranks). The routed experts see the tokens of their etp ranks, etp/t of the rows, and
    hold E/ep experts' weights with each expert's rows from all ep ranks: the work is the same, the GEMM per expert
    ep times taller."""
    module = op.module.rsplit(".", 1)[-1]
    if module in _MOE_MODULES[:2]:
        return _scale_rows(op, 1 / t)
    if module != "experts":
        return op
    op = _scale_rows(op, etp / t)
    if ep == 1 or op.op != "analytic.grouped_matmul":
        return op
    (rows, k), w = op.input_shapes
    return dataclasses.replace(op, weight_bytes=math.ceil(op.weight_bytes / ep), params=op.params // ep,
                               input_shapes=((rows * ep, k), w))


def loss_bytes(loss: str, a_bytes: float, logits_bytes: float) -> tuple[float, float]:
    """Bytes (forward, backward) the cross-entropy loss reads and writes per logit (an element of the rank's tokens
    × vocabulary/t logits), ``a_bytes`` the output layer's 16-bit logits, ``logits_bytes`` the loss's fp32.

    ``megatron``: Megatron-Core's ``vocab_parallel_cross_entropy`` (megatron/core/tensor_parallel/cross_entropy.py;
    Megatron-LM's mpu/cross_entropy.py of 2021 makes the same passes), one kernel each: forward — the cast to fp32
    (read 2, write 4), the max (read), subtracting it in place (read, write), exp in place (read, write), the sum
    (read), the division in place (read, write): 2 + 9 × 4 = 38 bytes; backward — scaling by the loss's gradient in
    place (read, write) and the cast back to 16 bits for the output layer (read 4, write 2): 2 + 3 × 4 = 14.

    ``native``: Megatron-Core's ``fused_vocab_parallel_cross_entropy`` (megatron/core/fusions/fused_cross_entropy.py),
    the same steps in four compiled functions, one pass each: the cast and the max (read 2, write 4), subtract, exp and
    sum in place (read, write), the division (read, write): 2 + 5 × 4 = 22; backward, scaling in place and the 16-bit
    gradient (read 4, write 4 and 2): 2 + 2 × 4 = 10.

    ``te``: Transformer Engine's ``parallel_cross_entropy`` (transformer_engine/pytorch/triton/cross_entropy.py, up to
    v2.17), Triton kernels on the 16-bit logits: an online max and sum (read 2), then the loss with the gradient
    written in place into the logits (read 2, write 2): 6; backward, that gradient scaled in place (read 2, write
    2): 4."""
    if loss == "megatron":
        return a_bytes + 9 * logits_bytes, a_bytes + 3 * logits_bytes
    if loss == "native":
        return a_bytes + 5 * logits_bytes, a_bytes + 2 * logits_bytes
    if loss == "te":
        return 3 * a_bytes, 2 * a_bytes
    raise ValueError(f"loss {loss!r}: expected one of megatron, native, te")


def head_cost(cfg: TransformerConfig, chip: Chip, s: int, b: int, t: int, dtype: str = "bf16",
              logits_bytes: float = LOGITS_BYTES_PER_ELEMENT, loss: str = "megatron") -> HeadCost:
    """Vocabulary-parallel output layer and loss on the last stage, embedding lookup on the first (memoized like
    `layer_cost`: the search asks for the same few hundred shapes for every plan)."""
    key = (cfg, chip.model_dump_json(), s, b, t, dtype, logits_bytes, loss)
    if key not in _HEAD_CACHE:
        _HEAD_CACHE[key] = _head_cost(cfg, chip, s, b, t, dtype, logits_bytes, loss)
    return _HEAD_CACHE[key]


_HEAD_CACHE: dict[tuple[object, ...], HeadCost] = {}


def _head_cost(cfg: TransformerConfig, chip: Chip, s: int, b: int, t: int, dtype: str,
               logits_bytes: float, loss: str) -> HeadCost:
    embed, norm, lm_head = head_ops(_sharded(cfg, 1), b, s, s, precision(dtype))
    lm_head = dataclasses.replace(lm_head, macs=lm_head.macs // t, flops=lm_head.flops // t,
                                  weight_bytes=lm_head.weight_bytes // t, bytes_written=lm_head.bytes_written // t)
    fwd = estimate_op(norm, chip).time_s + estimate_op(lm_head, chip).time_s
    # the cross-entropy loss: memory-bound passes over the rank's logits
    per_logit_fwd, per_logit_bwd = loss_bytes(loss, precision(dtype).a_bits / 8, logits_bytes)
    logits = b * s * cfg.vocab / t
    loss_fwd, loss_bwd = memory_s(per_logit_fwd * logits, chip), memory_s(per_logit_bwd * logits, chip)
    emb = estimate_op(embed, chip).time_s
    return HeadCost(fwd_s=fwd + loss_fwd, bwd_s=2 * fwd + loss_bwd, gemm_flops_fwd=2 * lm_head.macs,
                    embed_fwd_s=emb, embed_bwd_s=2 * emb)


# --------------------------------------------------------------------------------------------------- result
@dataclass(frozen=True, kw_only=True)
class StepResult:
    plan: ParallelPlan
    model: TrainModel
    cluster: Cluster
    step_time_s: float
    tokens_per_s: float
    samples_per_s: float
    model_flops: float
    """Per step, all GPUs: forward + backward matmul FLOPs (3 passes), Megatron's counting."""
    hardware_flops: float
    """Model FLOPs plus recomputation (Eq. 3 of Narayanan et al. with full recompute)."""
    bubble_fraction: float
    memory: MemoryBreakdown
    capacity_bytes: float
    comm_s: dict[str, float]
    timeline: Timeline
    schedule: PipelineSchedule

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.capacity_bytes

    @property
    def model_tflops_per_gpu(self) -> float:
        return self.model_flops / self.step_time_s / self.plan.gpus / TERA

    @property
    def hardware_tflops_per_gpu(self) -> float:
        return self.hardware_flops / self.step_time_s / self.plan.gpus / TERA

    @property
    def peak_flops_per_s(self) -> float:
        """Dense peak of the plan's compute dtype (tensor unit, else the best unit): MFU's and HFU's denominator."""
        chip = self.cluster.load_chip()
        dtype = self.plan.dtype
        return chip.peak_flops_per_s(dtype) or chip.best_peak_flops_per_s(dtype) or 0.0

    @property
    def mfu(self) -> float:
        peak = self.peak_flops_per_s
        return self.model_tflops_per_gpu * TERA / peak if peak else 0.0

    @property
    def hfu(self) -> float:
        peak = self.peak_flops_per_s
        return self.hardware_tflops_per_gpu * TERA / peak if peak else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.config.name, "cluster": self.cluster.name, "plan": self.plan.to_dict(),
            "step_time_s": self.step_time_s, "tokens_per_s": self.tokens_per_s, "samples_per_s": self.samples_per_s,
            "model_tflops_per_gpu": self.model_tflops_per_gpu,
            "hardware_tflops_per_gpu": self.hardware_tflops_per_gpu, "mfu": self.mfu, "hfu": self.hfu,
            "bubble_fraction": self.bubble_fraction, "precision": self.plan.precision_dict(),
            "memory_per_gpu_bytes": self.memory.to_dict(), "capacity_bytes": self.capacity_bytes,
            "fits": self.fits, "comm_s": dict(self.comm_s),
        }


# ------------------------------------------------------------------------------------------------ simulator
def params_per_stage(cfg: TransformerConfig, pp: int, vp: int) -> tuple[float, float, float]:
    """(per-layer parameters, embedding parameters, output-layer parameters); the first stage holds the
    embedding, the last the output layer (a copy of the embedding when tied, as Megatron-LM does)."""
    embed = cfg.vocab * cfg.hidden + (0 if cfg.rms_norm else cfg.max_positions * cfg.hidden)
    head = cfg.vocab * cfg.hidden
    per_layer = (cfg.params - embed - (0 if cfg.tied_embeddings else head)) / cfg.layers
    return per_layer, embed, head


def simulate(model: TrainModel, cluster: Cluster, plan: ParallelPlan, *,
             measured: dict[str, float] | None = None) -> StepResult:
    """Simulate one optimizer step. ``measured`` may give per-layer seconds ``fwd``, ``bwd`` (and ``bwd_weight``)
    to use in place of the roofline engine's."""
    cfg, s = model.config, model.seq_len
    check(plan, cfg)
    c = plan.cp
    if not splits_sequence(s, c):
        raise PlanError(f"cp={c}: the sequence ({s} tokens) must split into 2·cp = {2 * c} equal halves (Megatron "
                        f"pairs them for a causal mask's balance); valid cp: "
                        f"{', '.join(str(k) for k in range(1, 65) if splits_sequence(s, k))}")
    sl = s // c  # the tokens of each sequence on one rank
    chip = cluster.load_chip()
    t, p, v, d, b, m = plan.tp, plan.pp, plan.vp, plan.dp, plan.micro_batch, plan.micro_batches
    tp_fabric = cluster.fabric(t) if t > 1 else None
    n_ep, etp = plan.ep, plan.expert_tp
    lc = layer_cost(cfg, chip, s, b, t, plan.sp, plan.recompute, tp_fabric, plan.dtype, n_ep,
                    *layer_args(plan, cluster))
    hc = head_cost(cfg, chip, sl, b, t, plan.dtype, plan.logits_bytes, plan.loss)
    stage_layers = plan.layers_per_stage(cfg.layers)
    stages = p * v
    split = plan.schedule == "zb-h1"

    f_layer = lc.fwd_s + lc.tp_fwd_s + lc.ep_fwd_s + lc.cp_fwd_s
    b_in_layer = lc.bwd_input_s + lc.tp_bwd_s + lc.ep_bwd_s + lc.cp_bwd_s
    w_layer = lc.bwd_weight_s
    if measured:
        f_layer = measured["fwd"]
        w_layer = measured.get("bwd_weight", measured["bwd"] / 2)
        b_in_layer = measured["bwd"] - w_layer
    per_layer_params, embed_params, head_params = params_per_stage(cfg, p, v)
    # A tied output layer is the embedding itself when one stage holds both.
    head_extra = 0 if (stages == 1 and cfg.tied_embeddings) else head_params
    # Routed experts (averaged over the layers) are split over the e expert-parallel ranks and the etp expert
    # tensor-parallel ones; their gradients and ZeRO shards go over the t·d/(etp·e) replicas holding the same ones.
    expert_per_layer = cfg.moe_layers * cfg.experts * 3 * cfg.hidden * cfg.expert_ffn / cfg.layers
    stage_experts = [n * expert_per_layer / (etp * n_ep) for n in stage_layers]
    stage_params = [stage_layers[st] * (per_layer_params - expert_per_layer) / t + stage_experts[st]
                    + (embed_params / t if st == 0 else 0) + (head_extra / t if st == stages - 1 else 0)
                    for st in range(stages)]
    d_expert = plan.expert_dp

    # ZeRO-3 / FSDP: each chunk's parameters are all-gathered before its forward and again before its backward,
    # prefetched behind the previous action's compute; only what does not fit behind it is exposed.
    dp_links = cluster.group(d * c, plan.span("dp"))  # the cp ranks hold the same weights as the dp ones
    ex_links = cluster.group(d_expert, plan.span("dp"))  # the d/e replicas that hold the same experts

    def dp_ring(dense_bytes: float, expert_bytes: float, passes: int = 1) -> float:
        return (group_ring_s(dense_bytes, dp_links, passes=passes)
                + group_ring_s(expert_bytes, ex_links, passes=passes))

    gather = [dp_ring(plan.param_bytes * (sp_ - se), plan.param_bytes * se) if plan.zero >= 3 else 0.0
              for sp_, se in zip(stage_params, stage_experts, strict=True)]

    def compute(a: Action) -> float:
        first, last, n = a.stage == 0, a.stage == stages - 1, stage_layers[a.stage]
        if a.kind == "F":
            base = n * f_layer + (hc.embed_fwd_s if first else 0) + (hc.fwd_s if last else 0)
        elif a.kind == "B":
            base = n * (b_in_layer + (0 if split else w_layer)) \
                + (hc.embed_bwd_s if first else 0) + (hc.bwd_s if last else 0)
        else:
            return n * w_layer
        return base + max(0.0, gather[a.stage] - base)

    pp_fabric = cluster.fabric(plan.span("pp")) if p > 1 else cluster.intra_node
    # Megatron's scatter/gather: each tp rank sends 1/t of the activation, peers all-gather it over NVLink, and
    # the transfer delays only its receiver. DeepSpeed's engine sends the whole tensor from every tp rank, and
    # its blocking send holds the sender: the forward's output onward, the backward's gradient back.
    blocking = plan.blocking_sends
    pp_bytes = sl * b * cfg.hidden * element_bytes(plan.dtype) / (1 if blocking else t)
    pp_one = p2p_s(pp_bytes, pp_fabric) if p > 1 else 0.0

    def duration(a: Action) -> float:
        sends = blocking and (a.stage < stages - 1 if a.kind == "F" else a.kind == "B" and a.stage > 0)
        return compute(a) + (pp_one if sends else 0.0)

    sched = build(plan.schedule, p, m, v)
    events = run_schedule(sched, duration, (lambda a: 0.0) if blocking else (lambda a: pp_one))
    pipe_end = max(e.end_s for e in events)
    busy_list = [0.0] * p
    for e in events:
        busy_list[e.rank] += e.end_s - e.start_s
    busy = tuple(busy_list)
    no_p2p_end = run_schedule(sched, compute, record=False)[0].end_s if pp_one else pipe_end

    # Gradient reduction over dp: one all-reduce (ZeRO 0), or reduce-scatter (+ all-gather of the updated
    # parameters after the optimizer for ZeRO 1/2); per chunk, started during its last backward when overlapped.
    comm_events: list[Event] = []
    dp_total = 0.0
    dp_end = pipe_end
    last_kind = "W" if split else "B"
    last_bwd: dict[int, Event] = {}
    for e in events:
        if e.kind == last_kind:
            last_bwd[int(e.name.split(last_kind)[0])] = e  # events are in time order per rank
    for r in range(p):
        free = 0.0
        rank_stages = [st for st in range(stages) if st % p == r]
        for st in sorted(rank_stages, key=lambda x: last_bwd[x].end_s):
            nbytes = plan.grad_bytes * stage_params[st]
            reduce = dp_ring(plan.grad_bytes * (stage_params[st] - stage_experts[st]),
                             plan.grad_bytes * stage_experts[st], 1 if plan.zero >= 1 else 2)
            if reduce == 0.0:
                continue
            ev = last_bwd[st]
            if plan.dp_overlap:
                start = max(free, ev.start_s)
                end = max(start + reduce, ev.end_s + reduce * min(1.0, DDP_BUCKET_BYTES / nbytes))
            else:
                start = max(free, pipe_end)
                end = start + reduce
            free = end
            comm_events.append(Event(rank=r, name="dp-reduce", kind="dp", start_s=start, end_s=end))
            if r == 0:
                dp_total += reduce
        dp_end = max(dp_end, free)
    shard, shard_e = (d * c, d_expert) if plan.zero >= 1 else (1, 1)
    optimizer_s = memory_s(max(plan.optimizer_step_bytes * sum((stage_params[st] - stage_experts[st]) / shard
                                                               + stage_experts[st] / shard_e
                                                               for st in range(stages) if st % p == r)
                               for r in range(p)), chip)
    gather_after = 0.0
    if plan.zero in (1, 2):
        gather_after = max(
            dp_ring(plan.param_bytes * sum(stage_params[st] - stage_experts[st] for st in range(stages)
                                           if st % p == r),
                    plan.param_bytes * sum(stage_experts[st] for st in range(stages) if st % p == r))
            for r in range(p))
    step = dp_end + optimizer_s + gather_after
    for r in range(p):
        comm_events.append(Event(rank=r, name="optimizer", kind="opt", start_s=dp_end, end_s=dp_end + optimizer_s))
        if gather_after:
            comm_events.append(Event(rank=r, name="param-gather", kind="dp", start_s=dp_end + optimizer_s,
                                     end_s=step))
    timeline = Timeline(events=tuple(events) + tuple(comm_events), ranks=p, busy_s=busy, pipeline_end_s=pipe_end,
                        step_s=step)

    # FLOPs (per step, all GPUs): 3 passes of the matmuls; hardware adds the recomputed forward.
    layer_flops = lc.gemm_flops_fwd * t * c  # back to the whole layer (its tp shards and context chunks)
    per_micro = cfg.layers * layer_flops + hc.gemm_flops_fwd * t * c
    micro_total = m * d
    model_flops = 3 * per_micro * micro_total
    hardware_flops = model_flops + cfg.layers * lc.recompute_flops * t * c * micro_total

    # Memory on the most loaded pipeline rank.
    in_flight = sched.peak_live(lambda st: stage_layers[st])  # layers whose activations are held
    act_layer = activation_bytes(cfg, sl, b, t, plan.sp, plan.recompute, plan.flash, etp, plan.routing_skew,
                                 plan.fp8)
    working = recompute_working_bytes(cfg, sl, b, t, plan.sp, plan.recompute, plan.flash, etp, plan.routing_skew,
                                      plan.fp8)
    best: MemoryBreakdown | None = None
    for r in range(p):
        psi_e = sum(stage_experts[st] for st in range(stages) if st % p == r)
        psi = sum(stage_params[st] for st in range(stages) if st % p == r) - psi_e
        dense_states = model_states(psi, d * c, plan.zero, param_bytes=plan.param_bytes, grad_bytes=plan.grad_bytes,
                                    optimizer_bytes=plan.optimizer_bytes)
        expert_states = model_states(psi_e, d_expert, plan.zero, param_bytes=plan.param_bytes,
                                     grad_bytes=plan.grad_bytes, optimizer_bytes=plan.optimizer_bytes)
        states = ModelStates(params=dense_states.params + expert_states.params,
                             grads=dense_states.grads + expert_states.grads,
                             optimizer=dense_states.optimizer + expert_states.optimizer)
        acts = in_flight[r] * act_layer + working
        if r == (stages - 1) % p:
            acts += plan.kept_logit_bytes * sl * b * cfg.vocab / t  # what the loss keeps for its backward
        buffers = 2 * pp_bytes * 2 if p > 1 else 0.0  # send and receive buffers, both directions
        if plan.zero >= 3:
            buffers += 2 * plan.param_bytes * max(stage_params[st] / max(stage_layers[st], 1) for st in range(stages)
                                                  if st % p == r)  # one gathered layer in use, one prefetched
        mem = MemoryBreakdown(params=states.params, grads=states.grads, optimizer=states.optimizer,
                              activations=acts, buffers=buffers)
        if best is None or mem.total > best.total:
            best = mem
    assert best is not None

    rank_layers = max(sum(n for st, n in enumerate(stage_layers) if sched.rank_of(st) == r)
                      for r in range(p))  # the most loaded rank's
    tp_total = m * rank_layers * (lc.tp_fwd_s + lc.tp_bwd_s)
    ep_total = m * rank_layers * (lc.ep_fwd_s + lc.ep_bwd_s)
    cp_total = m * rank_layers * (lc.cp_fwd_s + lc.cp_bwd_s)
    pp_total = 2 * m * v * pp_one if p > 1 else 0.0
    exposed = tp_total + ep_total + cp_total + (pipe_end - no_p2p_end) + (dp_end - pipe_end) + gather_after
    comm = {"tp": tp_total, "pp": pp_total, "dp": dp_total + gather_after + (
        2 * m * sum(gather[st] for st in range(stages) if st % p == 0)), "exposed": exposed}
    if n_ep > 1:
        comm["ep"] = ep_total
    if c > 1:
        comm["cp"] = cp_total
    tokens = plan.global_batch * s
    return StepResult(plan=plan, model=model, cluster=cluster, step_time_s=step, tokens_per_s=tokens / step,
                      samples_per_s=plan.global_batch / step, model_flops=model_flops, hardware_flops=hardware_flops,
                      bubble_fraction=timeline.bubble_fraction, memory=best,
                      capacity_bytes=chip.main_memory.capacity_bytes, comm_s=comm, timeline=timeline, schedule=sched)

