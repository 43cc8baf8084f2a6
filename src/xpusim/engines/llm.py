"""LLM inference on a chip or a tensor/pipeline-parallel group of chips: the analytic transformer builder
(`xpusim.workload.transformer`: prefill and decode as `OpCost` rows at the chosen bit widths, with its conventions)
timed op by op with the roofline engine, the collectives of tensor parallelism and the sends between pipeline
stages on the chips' links (α-β), plus the memory each chip needs (weights, KV cache, activations) and the largest
batch that fits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

from xpusim.engines.roofline import OpEstimate, energy_table, estimate_op
from xpusim.hardware.chip import Chip
from xpusim.hardware.cluster import Fabric, all_gather_s, all_reduce_s, p2p_s
from xpusim.workload.model import OpCost
from xpusim.workload.transformer import (  # re-exported: the builder lives in workload since the API split
    Precision,
    TransformerConfig,
    analytic_workload_ops,
    expected_experts,
    head_ops,
    layer_groups,
    layer_ops,
)

__all__ = ["LLMEstimate", "Parallelism", "PhaseEstimate", "Precision", "TransformerConfig", "analytic_workload_ops",
           "estimate_llm", "head_ops", "layer_ops", "min_gpus", "shard"]


@dataclass(frozen=True, kw_only=True)
class Parallelism:
    """How a model is spread for inference: ``tp`` tensor-parallel chips (Megatron-LM's split: attention heads and
    key/value heads, the MLP's width and the vocabulary divided; an all-reduce of the activations after the
    attention output and after the MLP of every layer), ``pp`` pipeline stages (consecutive layers; one send of the
    activations between neighbours), on ``fabric``'s links."""

    tp: int = 1
    pp: int = 1
    fabric: Fabric | None = None
    """The links the tensor-parallel collectives run on (a cluster's NVLink, say); needed when tp·pp > 1."""
    pp_fabric: Fabric | None = None
    """The links between pipeline stages (another node's, when the group spans nodes); default ``fabric``."""
    ep: bool = False
    """Expert parallelism over the tensor-parallel chips (vLLM's ``--enable-expert-parallel``): each chip holds E/tp
    whole experts instead of a 1/tp slice of every expert — the same bytes and work on average, but a step waits
    for the chip whose experts the batch touches most (`expected_max_touched`)."""

    def comm_s(self, cfg: TransformerConfig, batch: int, new: int, logits_tokens: int, p: Precision) -> float:
        """Seconds of communication of one pass over ``new`` tokens per sequence: per layer two all-reduces of the
        activations (after the attention output and after the MLP), one after the vocabulary-parallel embedding, an
        all-gather of the logits, and pp − 1 sends of the activations between stages."""
        if self.gpus == 1:
            return 0.0
        assert self.fabric is not None
        act = batch * new * cfg.hidden * p.a_bits / 8
        logits = batch * logits_tokens * cfg.vocab * p.a_bits / 8
        tp = (2 * cfg.layers + 1) * all_reduce_s(act, self.tp, self.fabric) + all_gather_s(logits, self.tp,
                                                                                           self.fabric)
        return tp + (self.pp - 1) * p2p_s(act, self.pp_fabric or self.fabric) if self.pp > 1 else tp

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    def check(self, cfg: TransformerConfig) -> None:
        """ValueError naming the degree and what it must divide."""
        for name, v in (("tp", self.tp), ("pp", self.pp)):
            if v < 1:
                raise ValueError(f"{name}={v} must be >= 1")
        allowed = ", ".join(map(str, _divisors(math.gcd(cfg.heads, cfg.kv_heads))))
        if cfg.heads % self.tp:
            raise ValueError(f"tp={self.tp} does not divide {cfg.name}'s {cfg.heads} attention heads (allowed: "
                             f"{allowed})")
        if cfg.kv_heads % self.tp:
            raise ValueError(f"tp={self.tp} does not divide {cfg.name}'s {cfg.kv_heads} key/value heads (allowed: "
                             f"{allowed})")
        if self.ep and (not cfg.moe or cfg.experts % self.tp):
            raise ValueError(f"ep: {cfg.name} has no experts to split" if not cfg.moe else
                             f"ep: tp={self.tp} does not divide {cfg.name}'s {cfg.experts} experts")
        if self.pp > cfg.layers:
            raise ValueError(f"pp={self.pp} exceeds {cfg.name}'s {cfg.layers} layers")
        if self.gpus > 1 and self.fabric is None:
            raise ValueError("tp·pp > 1 needs the links between the chips (a fabric)")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@functools.cache
def touched_distribution(experts: int, top_k: int, tokens: int) -> tuple[float, ...]:
    """P(exactly j distinct experts touched), j = 0 … E, when ``tokens`` tokens each pick ``top_k`` of the E
    experts uniformly: token by token, a token that finds j touched adds m new ones with probability
    C(j, k − m)·C(E − j, m)/C(E, k). Stops early once all E are touched for certain (long prefills)."""
    e, k = experts, top_k
    total = math.comb(e, k)
    step = [[math.comb(j, k - m) * math.comb(e - j, m) / total if k - m <= j else 0.0 for m in range(k + 1)]
            for j in range(e + 1)]
    dist = [0.0] * (e + 1)
    dist[0] = 1.0
    for _ in range(tokens):
        nxt = [0.0] * (e + 1)
        for j, pj in enumerate(dist):
            if pj:
                for m, pm in enumerate(step[j]):
                    if pm and j + m <= e:
                        nxt[j + m] += pj * pm
        dist = nxt
        if dist[e] > 1 - 1e-12:
            break
    return tuple(dist)


@functools.cache
def expected_max_touched(experts: int, top_k: int, tokens: int, chips: int) -> float:
    """Experts touched on the busiest of ``chips`` chips holding E/chips experts each, when ``tokens`` tokens each
    pick ``top_k`` of the E uniformly, exactly: the touched set is equally likely to be any set of its size j
    (`touched_distribution`), so the chance that no chip holds more than x of them is the number of j-sets with at
    most x per chip — the z^j coefficient of (Σ_{i ≤ x} C(n, i) z^i)^chips, n = E/chips — over C(E, j)."""
    n = experts // chips
    dist = touched_distribution(experts, top_k, tokens)
    expected = 0.0
    for x in range(n):  # E[max] = Σ_{x = 0}^{n − 1} P(max > x)
        poly = [1]
        for _ in range(chips):
            poly = [sum(poly[j - i] * math.comb(n, i) for i in range(min(x, j) + 1) if j - i < len(poly))
                    for j in range(len(poly) + x)]
        expected += sum(pj * (1 - (poly[j] / math.comb(experts, j) if j < len(poly) else 0.0))
                        for j, pj in enumerate(dist) if pj)
    return expected


def expert_parallel(op: OpCost, cfg: TransformerConfig, tp: int, tokens: int) -> OpCost:
    """A routed-expert GEMM of the tensor split (``tp`` slices of every expert the ``tokens`` reach) as expert
    parallelism runs it: the same work, whole experts' weights — those of the busiest chip."""
    if op.op != "analytic.grouped_matmul":
        return op
    reached = expected_experts(cfg.experts, cfg.top_k, tokens)
    busiest = expected_max_touched(cfg.experts, cfg.top_k, tokens, tp)
    (rows, _), (wk, wn) = op.input_shapes
    whole = (wk, wn * tp) if wk == cfg.hidden else (wk * tp, wn)
    return dataclasses.replace(op, weight_bytes=math.ceil(op.weight_bytes * tp * busiest / reached),
                               input_shapes=((rows, whole[0]), whole))


def shard(cfg: TransformerConfig, tp: int) -> TransformerConfig:
    """What one chip of a ``tp``-way tensor-parallel group holds and computes: its heads, key/value heads, MLP width
    (each expert's too) and vocabulary slice (Megatron-LM pads the vocabulary to a multiple of tp: ceil); norms,
    biases of row-split layers, positions, routers and MLA's latent projections stay whole (replicated)."""
    if tp == 1:
        return cfg
    return dataclasses.replace(cfg, heads=cfg.heads // tp, kv_heads=cfg.kv_heads // tp, ffn=math.ceil(cfg.ffn / tp),
                               vocab=math.ceil(cfg.vocab / tp), expert_ffn=math.ceil(cfg.expert_ffn / tp),
                               shared_ffn=math.ceil(cfg.shared_ffn / tp))


def memory_per_gpu(cfg: TransformerConfig, p: Precision, context: int, prompt_len: int, flash: bool, tp: int = 1,
                   pp: int = 1) -> tuple[int, int, int]:
    """(weights, KV cache per sequence, peak activations per sequence) in bytes on the fullest chip: the stage with
    the most layers (MoE layers where the model has them: they are the larger), plus the embedding (first stage) or
    the output head and final norm (last stage) — a tied head is a copy on the last stage when pp > 1. Every
    expert is resident."""
    sh = shard(cfg, tp)
    embed = sh.vocab * sh.hidden + (0 if sh.rms_norm else sh.max_positions * sh.hidden)
    head_side = (sh.vocab * sh.hidden) + (1 if sh.rms_norm else 2) * sh.hidden
    stage_layers = math.ceil(cfg.layers / pp)
    params = sh.params if pp == 1 else stage_layers * sh.layer_params(sh.moe) + max(embed, head_side)
    weights = math.ceil(params * p.w_bits / 8)
    kv = math.ceil(stage_layers * sh.kv_elements_per_token * context * p.kv_bits / 8)
    # Peak activations of the prefill: one layer's widest intermediates for the whole prompt (they are freed
    # layer by layer), plus the score matrix when attention is not fused.
    mlp = (2 if sh.gated_mlp else 1) * sh.ffn
    if sh.moe:
        mlp = max(mlp if sh.dense_layers else 0, 2 * (sh.top_k * sh.expert_ffn + sh.shared_ffn))
    act = math.ceil(prompt_len * (2 * sh.hidden + mlp) * p.a_bits / 8)
    if not flash:
        act += math.ceil(sh.heads * prompt_len * prompt_len * p.a_bits / 8)
    return weights, kv, act


def min_gpus(cfg: TransformerConfig, capacity_bytes: float, p: Precision, context: int, prompt_len: int, flash: bool,
             max_tp: int = 8) -> tuple[int, int] | None:
    """The smallest (tp, pp) — fewest chips, then the larger tp — whose fullest chip holds the weights and one
    sequence; tp ≤ ``max_tp`` (one node) dividing the heads and key/value heads. None when no such split fits."""
    best: tuple[int, int, int] | None = None
    for tp in _divisors(math.gcd(cfg.heads, cfg.kv_heads)):
        if tp > max_tp:
            break
        for pp in range(1, cfg.layers + 1):
            w, kv, act = memory_per_gpu(cfg, p, context, prompt_len, flash, tp, pp)
            if w + kv + act <= capacity_bytes:
                if best is None or (tp * pp, -tp) < (best[0], -best[1]):
                    best = (tp * pp, tp, pp)
                break
    return (best[1], best[2]) if best else None


@dataclass(frozen=True, kw_only=True)
class PhaseEstimate:
    time_s: float
    """Compute and communication, one after the other (nothing overlapped)."""
    flops: int
    bytes: int
    energy_j: float
    compute_bound_share: float
    ops: tuple[OpEstimate, ...]
    """One transformer layer's ops (times for one layer) plus the embedding/norm/lm_head ops, on one chip."""
    comm_s: float = 0.0
    """Of ``time_s``: tensor-parallel collectives and pipeline sends."""


@dataclass(frozen=True, kw_only=True)
class LLMEstimate:
    config: TransformerConfig
    chip: Chip
    precision: Precision
    batch: int
    prompt_len: int
    gen_len: int
    flash: bool
    prefill: PhaseEstimate
    decode: PhaseEstimate
    """Totals over all ``gen_len`` decode steps."""
    weights_bytes: int
    """Per chip (the fullest stage's), as are the KV cache, activations and ``max_batch``."""
    kv_cache_bytes: int
    activation_bytes: int
    max_batch: int
    assumptions: tuple[str, ...]
    parallel: Parallelism = Parallelism()
    min_gpus: tuple[int, int] | None = (1, 1)
    """The smallest (tp, pp) that holds the weights and one sequence (None: none within one node's tp)."""

    @property
    def time_to_first_token_s(self) -> float:
        return self.prefill.time_s

    @property
    def time_per_output_token_s(self) -> float:
        return self.decode.time_s / self.gen_len if self.gen_len else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second over the whole request (prefill included), all sequences of the batch."""
        total = self.prefill.time_s + self.decode.time_s
        return self.batch * self.gen_len / total if total else 0.0

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.tokens_per_s / self.parallel.gpus

    @property
    def memory_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def fits(self) -> bool:
        return self.memory_bytes <= self.chip.main_memory.capacity_bytes

    def cost_usd_per_million_tokens(self, price_per_hour_usd: float) -> float:
        """Cost of a million generated tokens at an hourly price per chip, all chips of the group (prefill time
        included)."""
        gpus_usd_per_s = price_per_hour_usd * self.parallel.gpus / 3600
        return gpus_usd_per_s / self.tokens_per_s * 1e6 if self.tokens_per_s else float("inf")

    def to_dict(self, price_per_hour_usd: float | None = None) -> dict[str, Any]:
        def phase(ph: PhaseEstimate) -> dict[str, Any]:
            return {"time_s": ph.time_s, "flops": ph.flops, "bytes": ph.bytes, "energy_j": ph.energy_j,
                    "compute_bound_share": ph.compute_bound_share, "communication_s": ph.comm_s}

        decode = phase(self.decode)
        decode["time_per_token_s"] = self.time_per_output_token_s
        layers = ([{"phase": "prefill", **o.to_dict()} for o in self.prefill.ops]
                  + [{"phase": "decode (last step)", **o.to_dict()} for o in self.decode.ops])
        extra = ({"cost_usd_per_million_tokens": self.cost_usd_per_million_tokens(price_per_hour_usd)}
                 if price_per_hour_usd is not None else {})
        return {
            "model": self.config.name, "chip": self.chip.name, "batch": self.batch, "prompt_len": self.prompt_len,
            "gen_len": self.gen_len, "flash_attention": self.flash,
            "bits": {"weights": self.precision.w_bits, "activations": self.precision.a_bits,
                     "kv_cache": self.precision.kv_bits},
            "prefill": phase(self.prefill), "decode": decode,
            "time_to_first_token_s": self.time_to_first_token_s, "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu, **extra,
            "parallel": {"tp": self.parallel.tp, "pp": self.parallel.pp, "gpus": self.parallel.gpus,
                         "fabric": self.parallel.fabric.name if self.parallel.fabric else None},
            "memory": {"per": "gpu", "weights_bytes": self.weights_bytes, "kv_cache_bytes": self.kv_cache_bytes,
                       "activation_bytes": self.activation_bytes, "total_bytes": self.memory_bytes,
                       "capacity_bytes": self.chip.main_memory.capacity_bytes, "fits": self.fits,
                       "max_batch": self.max_batch,
                       "min_gpus": ({"tp": self.min_gpus[0], "pp": self.min_gpus[1]} if self.min_gpus else None)},
            "assumptions": list(self.assumptions),
            "layers": layers,
        }


def _estimate_phase(chip: Chip, layer: list[OpCost], head: list[OpCost], layers: int, node_scale: float,
                    ) -> tuple[float, int, int, float, float, tuple[OpEstimate, ...]]:
    ests_layer = [estimate_op(o, chip, node_scale=node_scale) for o in layer]
    ests_head = [estimate_op(o, chip, node_scale=node_scale) for o in head]
    time_s = layers * sum(e.time_s for e in ests_layer) + sum(e.time_s for e in ests_head)
    flops = layers * sum(e.flops for e in ests_layer) + sum(e.flops for e in ests_head)
    nbytes = layers * sum(e.bytes for e in ests_layer) + sum(e.bytes for e in ests_head)
    energy = layers * sum(e.energy_j for e in ests_layer) + sum(e.energy_j for e in ests_head)
    compute = layers * sum(e.time_s for e in ests_layer if e.bound == "compute") + sum(
        e.time_s for e in ests_head if e.bound == "compute")
    return time_s, flops, nbytes, energy, compute, tuple(ests_layer + ests_head)


Phase = tuple[float, int, int, float, float, tuple[OpEstimate, ...]]


def _sum_phases(phases: Any) -> Phase:
    """Add `_estimate_phase` results (a model's dense and MoE layer groups); the ops listed are every group's."""
    out: list[Any] = [0.0, 0, 0, 0.0, 0.0, ()]
    for ph in phases:
        out = [a + b for a, b in zip(out, ph, strict=True)]
    return tuple(out)  # type: ignore[return-value]


def estimate_llm(cfg: TransformerConfig, chip: Chip, *, batch: int = 1, prompt_len: int = 1024, gen_len: int = 256,
                 precision: Precision | None = None, flash: bool = True,
                 parallel: Parallelism | None = None) -> LLMEstimate:
    """Prefill the prompt, then decode ``gen_len`` tokens one at a time, on one chip or a tensor/pipeline-parallel
    group (``parallel``). One batch at a time: its pipeline stages run one after the other (no second batch fills
    the pipeline), so pipeline parallelism adds memory, not speed; tensor parallelism divides each layer's work."""
    p = precision or Precision()
    par = parallel or Parallelism()
    for field_name, v in (("batch", batch), ("prompt_len", prompt_len)):
        if v < 1:
            raise ValueError(f"{field_name}={v} must be >= 1")
    if gen_len < 0:
        raise ValueError(f"gen_len={gen_len} must be >= 0")
    if prompt_len + gen_len > cfg.max_positions:
        raise ValueError(f"prompt_len + gen_len = {prompt_len + gen_len} exceeds {cfg.name}'s "
                         f"{cfg.max_positions} positions")
    par.check(cfg)
    from xpusim.precision import llm_compute_dtype  # the one dtype table (torch-free)

    table = energy_table()
    node_scale = chip.node_nm / table["node_nm"] if chip.node_nm else 1.0
    chip.require_dtype(llm_compute_dtype(p.a_bits, p.float16, lambda d: chip.best_peak_flops_per_s(d) is not None))
    sh = shard(cfg, par.tp)  # what one chip of the tensor-parallel group computes

    # Prefill: the whole prompt at once; only the last position's logits are needed to start generating.
    groups = layer_groups(cfg)

    def placed(ops: list[OpCost], tokens: int) -> list[OpCost]:
        return [expert_parallel(o, cfg, par.tp, tokens) for o in ops] if par.ep else ops

    pre = _sum_phases(_estimate_phase(chip, placed(layer_ops(sh, batch, prompt_len, prompt_len, p, flash=flash,
                                                             moe=moe), batch * prompt_len),
                                      head_ops(sh, batch, prompt_len, 1, p) if i == 0 else [], n, node_scale)
                      for i, (n, moe) in enumerate(groups))
    pre_comm = par.comm_s(cfg, batch, prompt_len, 1, p)
    # Decode: per step one token per sequence against a growing cache. Only the attention op depends on the
    # context, so everything else is estimated once and attention step by step (exact, no averaging).
    dec_time = dec_energy = dec_compute = dec_comm = 0.0
    dec_flops = dec_bytes = 0
    last: tuple[OpEstimate, ...] = ()
    if gen_len:
        st = _sum_phases(_estimate_phase(chip, placed([o for o in layer_ops(sh, batch, 1, prompt_len + 1, p,
                                                                             flash=flash, moe=moe)
                                                       if o.kind != "attention"], batch),
                                         head_ops(sh, batch, 1, 1, p) if i == 0 else [], n, node_scale)
                         for i, (n, moe) in enumerate(groups))
        dec_comm = gen_len * par.comm_s(cfg, batch, 1, 1, p)
        dec_time, dec_flops, dec_bytes, dec_energy, dec_compute = (gen_len * st[0] + dec_comm, gen_len * st[1],
                                                                   gen_len * st[2], gen_len * st[3], gen_len * st[4])
        for step in range(gen_len):
            attn = [o for o in layer_ops(sh, batch, 1, prompt_len + step + 1, p, flash=flash)
                    if o.kind == "attention"]
            at = _estimate_phase(chip, attn, [], cfg.layers, node_scale)
            dec_time += at[0]
            dec_flops += at[1]
            dec_bytes += at[2]
            dec_energy += at[3]
            dec_compute += at[4]
            if step == gen_len - 1:
                last = at[5] + st[5]
    prefill = PhaseEstimate(time_s=pre[0] + pre_comm, flops=pre[1], bytes=pre[2], energy_j=pre[3],
                            compute_bound_share=pre[4] / (pre[0] + pre_comm) if pre[0] else 0.0, ops=pre[5],
                            comm_s=pre_comm)
    decode = PhaseEstimate(time_s=dec_time, flops=dec_flops, bytes=dec_bytes, energy_j=dec_energy,
                           compute_bound_share=dec_compute / dec_time if dec_time else 0.0, ops=last, comm_s=dec_comm)

    context = prompt_len + gen_len
    weights, kv_per_seq, act_per_seq = memory_per_gpu(cfg, p, context, prompt_len, flash, par.tp, par.pp)
    capacity = chip.main_memory.capacity_bytes
    max_batch = max(0, int((capacity - weights) // (kv_per_seq + act_per_seq))) if capacity > weights else 0
    assumptions = [
        f"roofline per op on {chip.name}: dense peak of {p.compute_dtype}, every byte from "
        f"{chip.main_memory.name} ({chip.main_memory.bandwidth_gb_per_s:g} GB/s), ideal efficiency unless the chip "
        "file gives one",
        "prefill computes logits for the last prompt position only; decode reads the whole KV cache every step",
        "FlashAttention: scores stay on chip" if flash else "no FlashAttention: scores and probabilities go "
                                                            "through memory",
        f"weights (embeddings included) at {p.w_bits} bits, activations at {p.a_bits}, KV cache at {p.kv_bits}",
        "rotary embeddings, masks and sampling are not costed",
    ]
    if par.gpus > 1:
        assert par.fabric is not None
        assumptions.append(
            f"tp={par.tp} pp={par.pp} on {par.gpus} × {chip.name}: Megatron-LM's tensor split (heads, MLP width, "
            f"vocabulary ÷ tp; 2 all-reduces of the activations per layer, ring α-β on {par.fabric.name}), "
            "communication not overlapped with compute; one batch at a time through the pipeline stages; memory "
            "and the largest batch per chip (the fullest stage)")
        if par.ep:
            assumptions.append(f"expert parallelism: whole experts, {cfg.experts // par.tp} per chip; under uniform "
                               "routing each step waits for the chip whose experts the batch touches most")
    return LLMEstimate(config=cfg, chip=chip, precision=p, batch=batch, prompt_len=prompt_len, gen_len=gen_len,
                       flash=flash, prefill=prefill, decode=decode, weights_bytes=weights,
                       kv_cache_bytes=batch * kv_per_seq, activation_bytes=batch * act_per_seq, max_batch=max_batch,
                       assumptions=tuple(assumptions), parallel=par,
                       min_gpus=min_gpus(cfg, capacity, p, context, prompt_len, flash))
