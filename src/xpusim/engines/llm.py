"""LLM inference on a chip: an analytic transformer builder (prefill and decode) fed to the roofline engine.

The builder writes the same ops the captured model runs — projections, attention products, MLP, norms, residuals,
lm_head — as `OpCost` rows, with bytes at the chosen bit widths: weights at ``w_bits``, activations at
``a_bits``, the KV cache at ``kv_bits``. It runs in milliseconds, so it can sit inside search loops; a test
holds its MACs equal to the captured Hugging Face model of the same config.

Conventions (NB, what it leaves out): rotary embeddings and masks are not costed (a few elementwise ops per
token); with FlashAttention the score matrix never goes to memory, without it scores and probabilities are
written and read once each at ``a_bits``; the KV cache is read in full at every decode step; all parameters
(embeddings included) are stored at ``w_bits``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from xpusim.engines.roofline import OpEstimate, energy_table, estimate_op
from xpusim.hardware.chip import Chip
from xpusim.workload.flop_counts import (
    LAYER_NORM_FLOPS_PER_ELEMENT,
    POINTWISE_FLOPS,
    RMS_NORM_FLOPS_PER_ELEMENT,
    SCORE_SCALE_FLOPS_PER_ELEMENT,
    SOFTMAX_FLOPS_PER_ELEMENT,
)
from xpusim.workload.model import OpCost


@dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """The shape of a decoder-only transformer, read from an HF-style config."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    gated_mlp: bool
    """Llama-style SwiGLU MLP (gate, up, down) instead of GPT-style (fc, GELU, proj)."""
    rms_norm: bool
    tied_embeddings: bool
    max_positions: int

    def __post_init__(self) -> None:
        for f in ("hidden", "layers", "heads", "kv_heads", "head_dim", "ffn", "vocab"):
            if getattr(self, f) < 1:
                raise ValueError(f"{self.name}: {f}={getattr(self, f)} must be >= 1")
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")

    @classmethod
    def from_hf(cls, name: str, cfg: dict[str, Any]) -> TransformerConfig:
        model_type = cfg.get("model_type", "")
        if model_type == "gpt2":
            h, heads = int(cfg["n_embd"]), int(cfg["n_head"])
            return cls(name=name, hidden=h, layers=int(cfg["n_layer"]), heads=heads, kv_heads=heads,
                       head_dim=h // heads, ffn=int(cfg.get("n_inner") or 4 * h), vocab=int(cfg["vocab_size"]),
                       gated_mlp=False, rms_norm=False, tied_embeddings=True,
                       max_positions=int(cfg.get("n_positions", 1024)))
        if model_type in ("llama", "mistral", "qwen2"):
            h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            return cls(name=name, hidden=h, layers=int(cfg["num_hidden_layers"]), heads=heads,
                       kv_heads=int(cfg.get("num_key_value_heads") or heads),
                       head_dim=int(cfg.get("head_dim") or h // heads), ffn=int(cfg["intermediate_size"]),
                       vocab=int(cfg["vocab_size"]), gated_mlp=True, rms_norm=True,
                       tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                       max_positions=int(cfg.get("max_position_embeddings", 4096)))
        raise ValueError(f"{name}: model_type {model_type!r} is not a decoder LLM the analytic builder knows "
                         "(gpt2, llama, mistral, qwen2)")

    @property
    def params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h
        mlp = (3 if self.gated_mlp else 2) * h * self.ffn
        biases = 0 if self.rms_norm else (q + 2 * kv + h + self.ffn + h)  # GPT-2 has biases everywhere
        norms = (1 if self.rms_norm else 2) * 2 * h
        per_layer = attn + mlp + biases + norms
        embed = self.vocab * h + (0 if self.rms_norm else self.max_positions * h)
        head = 0 if self.tied_embeddings else self.vocab * h
        return self.layers * per_layer + embed + head + (1 if self.rms_norm else 2) * h


@dataclass(frozen=True, kw_only=True)
class Precision:
    """Bit widths: weights, activations (the compute dtype), KV cache."""

    w_bits: int = 16
    a_bits: int = 16
    kv_bits: int = 16
    float16: str = "bfloat16"
    """Which 16-bit float the activations use (``bfloat16`` or ``float16``)."""

    def __post_init__(self) -> None:
        for f in ("w_bits", "a_bits", "kv_bits"):
            if getattr(self, f) not in (2, 3, 4, 8, 16, 32):
                raise ValueError(f"{f}={getattr(self, f)} is not one of 2, 3, 4, 8, 16, 32")
        if self.a_bits < 8:
            raise ValueError(f"a_bits={self.a_bits}: activations below 8 bits are not modeled (use 8, 16 or 32)")

    @property
    def compute_dtype(self) -> str:
        """torch-style dtype name of the matmuls: activations decide (weight-only quantization dequantizes)."""
        return {32: "float32", 16: self.float16, 8: "int8"}[self.a_bits]


def _matmul(name: str, m: int, k: int, n: int, p: Precision, *, weight: bool = True, bias: bool = False) -> OpCost:
    """(m×k) @ (k×n); the right operand is a weight at w_bits (or an activation at a_bits)."""
    macs = m * k * n
    wb = p.w_bits if weight else p.a_bits
    return OpCost(name=name, module=name.rsplit("/", 1)[0], op="analytic.matmul", kind="matmul",
                  input_shapes=((m, k), (k, n)), output_shape=(m, n), dtype=p.compute_dtype, macs=macs,
                  flops=2 * macs + (m * n if bias else 0), params=k * n if weight else 0,
                  weight_bytes=math.ceil(k * n * wb / 8) if weight else 0,
                  activation_bytes_read=math.ceil(m * k * p.a_bits / 8) + (0 if weight else math.ceil(k * n * wb / 8)),
                  bytes_written=math.ceil(m * n * p.a_bits / 8))


def _elementwise(name: str, kind: str, elements: int, flops_per: float, p: Precision, reads: int = 1,
                 weight_elements: int = 0) -> OpCost:
    return OpCost(name=name, module=name.rsplit("/", 1)[0], op=f"analytic.{kind}", kind=kind,
                  input_shapes=((elements,),), output_shape=(elements,), dtype=p.compute_dtype,
                  flops=round(elements * flops_per), params=weight_elements,
                  weight_bytes=math.ceil(weight_elements * p.w_bits / 8),
                  activation_bytes_read=math.ceil(reads * elements * p.a_bits / 8),
                  bytes_written=math.ceil(elements * p.a_bits / 8))


def layer_ops(cfg: TransformerConfig, batch: int, new: int, context: int, p: Precision, *, flash: bool,
              prefix: str = "layer") -> list[OpCost]:
    """One transformer layer processing ``new`` tokens per sequence against ``context`` keys (new included)."""
    h, hd = cfg.hidden, cfg.head_dim
    q_dim, kv_dim = cfg.heads * hd, cfg.kv_heads * hd
    t = batch * new
    bias = not cfg.rms_norm
    norm_flops = RMS_NORM_FLOPS_PER_ELEMENT if cfg.rms_norm else LAYER_NORM_FLOPS_PER_ELEMENT
    norm_w = h if cfg.rms_norm else 2 * h
    ops = [
        _elementwise(f"{prefix}.norm1/norm", "norm", t * h, norm_flops, p, weight_elements=norm_w),
        _matmul(f"{prefix}.attn.q/matmul", t, h, q_dim, p, bias=bias),
        _matmul(f"{prefix}.attn.k/matmul", t, h, kv_dim, p, bias=bias),
        _matmul(f"{prefix}.attn.v/matmul", t, h, kv_dim, p, bias=bias),
    ]
    # KV cache: append the new keys and values, then read the whole cache for attention.
    kv_new = 2 * t * kv_dim
    kv_all = 2 * batch * context * kv_dim
    ops.append(OpCost(name=f"{prefix}.attn/kv_cache_write", module=f"{prefix}.attn", op="analytic.kv_write",
                      kind="memory", dtype=p.compute_dtype, activation_bytes_read=math.ceil(kv_new * p.a_bits / 8),
                      bytes_written=math.ceil(kv_new * p.kv_bits / 8), output_shape=(2, batch, context, kv_dim)))
    scores = batch * cfg.heads * new * context
    attn_macs = scores * 2 * hd
    q_bytes = math.ceil(t * q_dim * p.a_bits / 8)
    o_bytes = q_bytes
    kv_bytes = math.ceil(kv_all * p.kv_bits / 8)
    score_traffic = 0 if flash else 4 * math.ceil(scores * p.a_bits / 8)  # write S, read S, write P, read P
    ops.append(OpCost(name=f"{prefix}.attn/attention", module=f"{prefix}.attn", op="analytic.attention",
                      kind="attention", input_shapes=((batch, cfg.heads, new, hd), (batch, cfg.kv_heads, context, hd)),
                      output_shape=(batch, cfg.heads, new, hd), dtype=p.compute_dtype, macs=attn_macs,
                      flops=2 * attn_macs + scores * (SOFTMAX_FLOPS_PER_ELEMENT + SCORE_SCALE_FLOPS_PER_ELEMENT),
                      activation_bytes_read=q_bytes + kv_bytes + score_traffic // 2,
                      bytes_written=o_bytes + score_traffic // 2))
    ops += [
        _matmul(f"{prefix}.attn.o/matmul", t, q_dim, h, p, bias=bias),
        _elementwise(f"{prefix}/residual1", "elementwise", t * h, 1, p, reads=2),
        _elementwise(f"{prefix}.norm2/norm", "norm", t * h, norm_flops, p, weight_elements=norm_w),
    ]
    if cfg.gated_mlp:
        ops += [
            _matmul(f"{prefix}.mlp.gate/matmul", t, h, cfg.ffn, p),
            _matmul(f"{prefix}.mlp.up/matmul", t, h, cfg.ffn, p),
            _elementwise(f"{prefix}.mlp/silu_mul", "activation", t * cfg.ffn, POINTWISE_FLOPS["silu"] + 1, p, reads=2),
            _matmul(f"{prefix}.mlp.down/matmul", t, cfg.ffn, h, p),
        ]
    else:
        ops += [
            _matmul(f"{prefix}.mlp.fc/matmul", t, h, cfg.ffn, p, bias=True),
            _elementwise(f"{prefix}.mlp/gelu", "activation", t * cfg.ffn, POINTWISE_FLOPS["gelu"], p),
            _matmul(f"{prefix}.mlp.proj/matmul", t, cfg.ffn, h, p, bias=True),
        ]
    ops.append(_elementwise(f"{prefix}/residual2", "elementwise", t * h, 1, p, reads=2))
    return ops


def head_ops(cfg: TransformerConfig, batch: int, new: int, logits_tokens: int, p: Precision) -> list[OpCost]:
    """Embedding lookup of the new tokens, the final norm and the lm_head for ``logits_tokens`` per sequence."""
    h, t = cfg.hidden, batch * new
    norm_flops = RMS_NORM_FLOPS_PER_ELEMENT if cfg.rms_norm else LAYER_NORM_FLOPS_PER_ELEMENT
    embed = OpCost(name="embed/embedding", module="embed", op="analytic.embedding", kind="embedding",
                   dtype=p.compute_dtype, params=cfg.vocab * h,
                   weight_bytes=math.ceil(min(t, cfg.vocab) * h * p.w_bits / 8),
                   activation_bytes_read=8 * t, bytes_written=math.ceil(t * h * p.a_bits / 8), output_shape=(t, h))
    tl = batch * logits_tokens
    return [
        embed,
        _elementwise("norm/norm", "norm", tl * h, norm_flops, p, weight_elements=h),
        _matmul("lm_head/matmul", tl, h, cfg.vocab, p),
    ]


@dataclass(frozen=True, kw_only=True)
class PhaseEstimate:
    time_s: float
    flops: int
    bytes: int
    energy_j: float
    compute_bound_share: float
    ops: tuple[OpEstimate, ...]
    """One transformer layer's ops (times for one layer) plus the embedding/norm/lm_head ops."""


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
    kv_cache_bytes: int
    activation_bytes: int
    max_batch: int
    assumptions: tuple[str, ...]

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
    def memory_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def fits(self) -> bool:
        return self.memory_bytes <= self.chip.main_memory.capacity_bytes

    def cost_usd_per_million_tokens(self, price_per_hour_usd: float) -> float:
        """Cost of a million generated tokens at an hourly price for the chip (prefill time included)."""
        return price_per_hour_usd / 3600 / self.tokens_per_s * 1e6 if self.tokens_per_s else float("inf")

    def to_dict(self, price_per_hour_usd: float | None = None) -> dict[str, Any]:
        def phase(ph: PhaseEstimate) -> dict[str, Any]:
            return {"time_s": ph.time_s, "flops": ph.flops, "bytes": ph.bytes, "energy_j": ph.energy_j,
                    "compute_bound_share": ph.compute_bound_share}

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
            "time_to_first_token_s": self.time_to_first_token_s, "tokens_per_s": self.tokens_per_s, **extra,
            "memory": {"weights_bytes": self.weights_bytes, "kv_cache_bytes": self.kv_cache_bytes,
                       "activation_bytes": self.activation_bytes, "total_bytes": self.memory_bytes,
                       "capacity_bytes": self.chip.main_memory.capacity_bytes, "fits": self.fits,
                       "max_batch": self.max_batch},
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


def analytic_workload_ops(cfg: TransformerConfig, batch: int, seq_len: int, p: Precision, *, flash: bool = True,
                          logits: str = "all") -> list[OpCost]:
    """All ops of one forward over ``seq_len`` tokens (what a captured prefill runs), layers expanded."""
    ops = head_ops(cfg, batch, seq_len, seq_len if logits == "all" else 1, p)
    out = ops[:1]
    for i in range(cfg.layers):
        out += layer_ops(cfg, batch, seq_len, seq_len, p, flash=flash, prefix=f"layers.{i}")
    return out + ops[1:]


def estimate_llm(cfg: TransformerConfig, chip: Chip, *, batch: int = 1, prompt_len: int = 1024, gen_len: int = 256,
                 precision: Precision | None = None, flash: bool = True) -> LLMEstimate:
    """Prefill the prompt, then decode ``gen_len`` tokens one at a time, on one chip."""
    p = precision or Precision()
    for field_name, v in (("batch", batch), ("prompt_len", prompt_len)):
        if v < 1:
            raise ValueError(f"{field_name}={v} must be >= 1")
    if gen_len < 0:
        raise ValueError(f"gen_len={gen_len} must be >= 0")
    if prompt_len + gen_len > cfg.max_positions:
        raise ValueError(f"prompt_len + gen_len = {prompt_len + gen_len} exceeds {cfg.name}'s "
                         f"{cfg.max_positions} positions")
    table = energy_table()
    node_scale = chip.node_nm / table["node_nm"] if chip.node_nm else 1.0
    chip.require_dtype({32: "fp32", 16: "bf16" if p.float16 == "bfloat16" else "fp16", 8: "int8"}[p.a_bits]
                       if p.a_bits != 8 or chip.best_peak_flops_per_s("int8") is not None else "fp8")

    # Prefill: the whole prompt at once; only the last position's logits are needed to start generating.
    pre = _estimate_phase(chip, layer_ops(cfg, batch, prompt_len, prompt_len, p, flash=flash),
                          head_ops(cfg, batch, prompt_len, 1, p), cfg.layers, node_scale)
    # Decode: per step one token per sequence against a growing cache. Only the attention op depends on the
    # context, so everything else is estimated once and attention step by step (exact, no averaging).
    dec_time = dec_energy = dec_compute = 0.0
    dec_flops = dec_bytes = 0
    last: tuple[OpEstimate, ...] = ()
    if gen_len:
        step_layer = layer_ops(cfg, batch, 1, prompt_len + 1, p, flash=flash)
        static = [o for o in step_layer if o.kind != "attention"]
        st = _estimate_phase(chip, static, head_ops(cfg, batch, 1, 1, p), cfg.layers, node_scale)
        dec_time, dec_flops, dec_bytes, dec_energy, dec_compute = (gen_len * st[0], gen_len * st[1],
                                                                   gen_len * st[2], gen_len * st[3], gen_len * st[4])
        for step in range(gen_len):
            attn = [o for o in layer_ops(cfg, batch, 1, prompt_len + step + 1, p, flash=flash)
                    if o.kind == "attention"]
            at = _estimate_phase(chip, attn, [], cfg.layers, node_scale)
            dec_time += at[0]
            dec_flops += at[1]
            dec_bytes += at[2]
            dec_energy += at[3]
            dec_compute += at[4]
            if step == gen_len - 1:
                last = at[5] + st[5]
    prefill = PhaseEstimate(time_s=pre[0], flops=pre[1], bytes=pre[2], energy_j=pre[3],
                            compute_bound_share=pre[4] / pre[0] if pre[0] else 0.0, ops=pre[5])
    decode = PhaseEstimate(time_s=dec_time, flops=dec_flops, bytes=dec_bytes, energy_j=dec_energy,
                           compute_bound_share=dec_compute / dec_time if dec_time else 0.0, ops=last)

    weights = math.ceil(cfg.params * p.w_bits / 8)
    kv_per_seq = math.ceil(2 * cfg.layers * cfg.kv_heads * cfg.head_dim * (prompt_len + gen_len) * p.kv_bits / 8)
    # Peak activations of the prefill: one layer's widest intermediates for the whole prompt (they are freed
    # layer by layer), plus the score matrix when attention is not fused.
    act_per_seq = math.ceil(prompt_len * (2 * cfg.hidden + (2 if cfg.gated_mlp else 1) * cfg.ffn) * p.a_bits / 8)
    if not flash:
        act_per_seq += math.ceil(cfg.heads * prompt_len * prompt_len * p.a_bits / 8)
    capacity = chip.main_memory.capacity_bytes
    max_batch = max(0, int((capacity - weights) // (kv_per_seq + act_per_seq))) if capacity > weights else 0
    assumptions = (
        f"roofline per op on {chip.name}: dense peak of {p.compute_dtype}, every byte from "
        f"{chip.main_memory.name} ({chip.main_memory.bandwidth_gb_per_s:g} GB/s), ideal efficiency unless the chip "
        "file gives one",
        "prefill computes logits for the last prompt position only; decode reads the whole KV cache every step",
        "FlashAttention: scores stay on chip" if flash else "no FlashAttention: scores and probabilities go "
                                                            "through memory",
        f"weights (embeddings included) at {p.w_bits} bits, activations at {p.a_bits}, KV cache at {p.kv_bits}",
        "rotary embeddings, masks and sampling are not costed",
    )
    return LLMEstimate(config=cfg, chip=chip, precision=p, batch=batch, prompt_len=prompt_len, gen_len=gen_len,
                       flash=flash, prefill=prefill, decode=decode, weights_bytes=weights,
                       kv_cache_bytes=batch * kv_per_seq, activation_bytes=batch * act_per_seq, max_batch=max_batch,
                       assumptions=assumptions)
