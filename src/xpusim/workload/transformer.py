"""Transformers as data: `TransformerConfig` (the shape of a decoder-only transformer), `Precision` (its bit
widths), the one parser of model specs that name a transformer — a zoo LLM (``llama2-7b``), an HF-style
``config.json`` file, or ``gpt:h=..,l=..,a=..,s=..[,V=..,ffn=..,kv=..]`` — and the analytic builder that writes
its ops as `OpCost` rows (prefill and decode) without capturing a model.

The builder writes the same ops the captured model runs — projections, attention products, MLP, norms, residuals,
lm_head — with bytes at the chosen bit widths: weights at ``w_bits``, activations at ``a_bits``, the KV cache at
``kv_bits``. It runs in milliseconds, so it sits inside search loops; a test holds its MACs equal to the captured
Hugging Face model of the same config. The engines (`xpusim.engines.llm`, `xpusim.parallel`) time these rows.

Conventions (NB, what it leaves out): rotary embeddings and masks are not costed (a few elementwise ops per
token); with FlashAttention the score matrix never goes to memory, without it scores and probabilities are
written and read once each at ``a_bits``; the KV cache is read in full at every decode step; all parameters
(embeddings included) are stored at ``w_bits``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from xpusim.errors import UserError
from xpusim.names import suggest
from xpusim.workload.flop_counts import (
    LAYER_NORM_FLOPS_PER_ELEMENT,
    POINTWISE_FLOPS,
    RMS_NORM_FLOPS_PER_ELEMENT,
    SCORE_SCALE_FLOPS_PER_ELEMENT,
    SOFTMAX_FLOPS_PER_ELEMENT,
)
from xpusim.workload.model import OpCost

GPT_KEYS = {"h": "hidden size", "l": "layers", "a": "attention heads", "s": "sequence length",
            "V": "vocabulary (default 51200)", "ffn": "MLP width (default 4h)", "kv": "key/value heads (default a)"}
"""Keys of a ``gpt:`` spec: a GPT-2/Megatron-style model (LayerNorm, GELU MLP, learned positions, biases, tied
embeddings)."""
DEFAULT_VOCAB = 51200
"""Megatron-LM's padded GPT-2 vocabulary (reference/parallelism.md): the one default of every ``gpt:`` spec."""


class SpecError(UserError):
    """A model spec that cannot be used; the message says which key and what is allowed."""


@dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """The shape of a decoder-only transformer, read from an HF-style config: dense (GPT, Llama), or a mixture of
    experts (``experts`` > 0: Mixtral, Qwen3-MoE, DeepSeek), with multi-head latent attention (``kv_lora_rank`` > 0:
    DeepSeek's MLA)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    """Per head: the query/key width (with MLA: the part without rotary embedding, ``qk_nope_head_dim``)."""
    ffn: int
    """The dense MLP's width (with experts: of the first ``dense_layers`` layers)."""
    vocab: int
    gated_mlp: bool
    """Llama-style SwiGLU MLP (gate, up, down) instead of GPT-style (fc, GELU, proj)."""
    rms_norm: bool
    tied_embeddings: bool
    max_positions: int
    experts: int = 0
    """Routed experts per MoE layer (0: a dense model)."""
    top_k: int = 0
    """Experts each token is routed to."""
    expert_ffn: int = 0
    """One routed expert's SwiGLU width."""
    shared_ffn: int = 0
    """The shared experts' SwiGLU width, all of them together (every token goes through them)."""
    dense_layers: int = 0
    """The first layers that keep a dense MLP (DeepSeek's first_k_dense_replace)."""
    qk_norm: bool = False
    """RMSNorm on each query and key head (Qwen3)."""
    q_lora_rank: int = 0
    """MLA: the queries' low-rank width (0: a full query projection)."""
    kv_lora_rank: int = 0
    """MLA: the compressed key/value latent width (0: standard attention)."""
    qk_rope_dim: int = 0
    """MLA: the per-head width that carries the rotary embedding (one shared key part of this width)."""
    v_head_dim: int = 0
    """MLA: the per-head value width."""

    def __post_init__(self) -> None:
        for f in ("hidden", "layers", "heads", "kv_heads", "head_dim", "ffn", "vocab"):
            if getattr(self, f) < 1:
                raise SpecError(f"{self.name}: {f}={getattr(self, f)} must be >= 1")
        if self.heads % self.kv_heads:
            raise SpecError(f"{self.name}: heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        if self.experts and not (0 < self.top_k <= self.experts and self.expert_ffn > 0):
            raise SpecError(f"{self.name}: experts={self.experts} needs 1 <= top_k <= experts and expert_ffn >= 1 "
                            f"(top_k={self.top_k}, expert_ffn={self.expert_ffn})")

    @property
    def moe(self) -> bool:
        return self.experts > 0

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.moe else 0

    @property
    def kv_elements_per_token(self) -> int:
        """Elements one token keeps in one layer's KV cache: keys and values of every key/value head, or with MLA
        the compressed latent and the shared rotary key (what the absorbed decode reads)."""
        if self.mla:
            return self.kv_lora_rank + self.qk_rope_dim
        return 2 * self.kv_heads * self.head_dim

    @classmethod
    def from_hf(cls, name: str, cfg: dict[str, Any]) -> TransformerConfig:
        model_type = cfg.get("model_type", "")
        if model_type == "gpt2":
            h, heads = int(cfg["n_embd"]), int(cfg["n_head"])
            return cls(name=name, hidden=h, layers=int(cfg["n_layer"]), heads=heads, kv_heads=heads,
                       head_dim=h // heads, ffn=int(cfg.get("n_inner") or 4 * h), vocab=int(cfg["vocab_size"]),
                       gated_mlp=False, rms_norm=False, tied_embeddings=True,
                       max_positions=int(cfg.get("n_positions", 1024)))
        if model_type not in ("llama", "mistral", "qwen2", "mixtral", "qwen3_moe", "deepseek_v2", "deepseek_v3"):
            raise SpecError(f"{name}: model_type {model_type!r} is not a decoder LLM the analytic builder knows "
                            "(gpt2, llama, mistral, qwen2, mixtral, qwen3_moe, deepseek_v2, deepseek_v3)")
        h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        common: dict[str, Any] = dict(
            name=name, hidden=h, layers=int(cfg["num_hidden_layers"]), heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads), head_dim=int(cfg.get("head_dim") or h // heads),
            ffn=int(cfg.get("intermediate_size") or cfg.get("moe_intermediate_size") or 0),
            vocab=int(cfg["vocab_size"]),
            gated_mlp=True, rms_norm=True, tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_positions=int(cfg.get("max_position_embeddings", 4096)))
        if model_type == "mixtral":
            return cls(**common, experts=int(cfg["num_local_experts"]), top_k=int(cfg["num_experts_per_tok"]),
                       expert_ffn=int(cfg["intermediate_size"]))
        if model_type == "qwen3_moe":
            if int(cfg.get("decoder_sparse_step", 1)) != 1 or cfg.get("mlp_only_layers"):
                raise SpecError(f"{name}: qwen3_moe with dense layers between MoE layers (decoder_sparse_step, "
                                "mlp_only_layers) is not modeled")
            return cls(**common, experts=int(cfg["num_experts"]), top_k=int(cfg["num_experts_per_tok"]),
                       expert_ffn=int(cfg["moe_intermediate_size"]), qk_norm=True)
        if model_type.startswith("deepseek"):
            if int(cfg.get("moe_layer_freq", 1)) != 1:
                raise SpecError(f"{name}: moe_layer_freq != 1 is not modeled")
            moe_ffn = int(cfg["moe_intermediate_size"])
            return cls(**common | {"kv_heads": heads, "head_dim": int(cfg["qk_nope_head_dim"])},
                       experts=int(cfg["n_routed_experts"]), top_k=int(cfg["num_experts_per_tok"]),
                       expert_ffn=moe_ffn, shared_ffn=int(cfg.get("n_shared_experts") or 0) * moe_ffn,
                       dense_layers=int(cfg.get("first_k_dense_replace", 0)),
                       q_lora_rank=int(cfg.get("q_lora_rank") or 0), kv_lora_rank=int(cfg["kv_lora_rank"]),
                       qk_rope_dim=int(cfg["qk_rope_head_dim"]), v_head_dim=int(cfg["v_head_dim"]))
        return cls(**common)

    # ----------------------------------------------------------------------------------------------- parameters
    def attention_params(self) -> int:
        """One layer's attention projections (and their biases and norms) — MLA's low-rank ones with MLA."""
        h = self.hidden
        if self.mla:
            qk = self.head_dim + self.qk_rope_dim
            q = (h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.heads * qk if self.q_lora_rank
                 else h * self.heads * qk)
            kv = h * (self.kv_lora_rank + self.qk_rope_dim) + self.kv_lora_rank \
                + self.kv_lora_rank * self.heads * (self.head_dim + self.v_head_dim)
            return q + kv + self.heads * self.v_head_dim * h
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        biases = 0 if self.rms_norm else q + 2 * kv + h
        return h * q + 2 * h * kv + q * h + biases + (2 * self.head_dim if self.qk_norm else 0)

    def mlp_params(self, moe: bool, active: bool = False) -> int:
        """One layer's MLP: dense, or router + routed experts (all of them, or the ``top_k`` a token uses when
        ``active``) + shared experts."""
        h = self.hidden
        if not moe:
            return (3 if self.gated_mlp else 2) * h * self.ffn + (0 if self.rms_norm else self.ffn + h)
        routed = (self.top_k if active else self.experts) * 3 * h * self.expert_ffn
        # NB: DeepSeek-V3's per-expert routing bias is a buffer, set by its balancing rule: not a parameter
        return h * self.experts + routed + 3 * h * self.shared_ffn

    def layer_params(self, moe: bool, active: bool = False) -> int:
        norms = (1 if self.rms_norm else 2) * 2 * self.hidden
        return self.attention_params() + self.mlp_params(moe, active) + norms

    def _params(self, active: bool) -> int:
        h = self.hidden
        dense = self.layers - self.moe_layers
        body = dense * self.layer_params(False) + self.moe_layers * self.layer_params(True, active)
        embed = self.vocab * h + (0 if self.rms_norm else self.max_positions * h)
        head = 0 if self.tied_embeddings else self.vocab * h
        return body + embed + head + (1 if self.rms_norm else 2) * h

    @property
    def params(self) -> int:
        return self._params(active=False)

    @property
    def active_params(self) -> int:
        """Parameters one token goes through: the ``top_k`` routed experts of each MoE layer, not all of them
        (every parameter for a dense model)."""
        return self._params(active=True)


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
                raise SpecError(f"{f}={getattr(self, f)} is not one of 2, 3, 4, 8, 16, 32")
        if self.a_bits < 8:
            raise SpecError(f"a_bits={self.a_bits}: activations below 8 bits are not modeled (use 8, 16 or 32)")

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


def attention_op(cfg: TransformerConfig, batch: int, new: int, context: int, p: Precision, *, flash: bool,
                 prefix: str = "layer") -> OpCost:
    """The attention of one layer: ``new`` query tokens per sequence against ``context`` cached keys and values
    (scores, softmax, weighted sum; with ``flash`` the scores never leave the chip)."""
    hd = cfg.head_dim
    q_dim, kv_dim = cfg.heads * hd, cfg.kv_heads * hd
    scores = batch * cfg.heads * new * context
    attn_macs = scores * 2 * hd
    q_bytes = math.ceil(batch * new * q_dim * p.a_bits / 8)
    o_bytes = q_bytes
    kv_bytes = math.ceil(2 * batch * context * kv_dim * p.kv_bits / 8)
    score_traffic = 0 if flash else 4 * math.ceil(scores * p.a_bits / 8)  # write S, read S, write P, read P
    return OpCost(name=f"{prefix}.attn/attention", module=f"{prefix}.attn", op="analytic.attention",
                  kind="attention", input_shapes=((batch, cfg.heads, new, hd), (batch, cfg.kv_heads, context, hd)),
                  output_shape=(batch, cfg.heads, new, hd), dtype=p.compute_dtype, macs=attn_macs,
                  flops=2 * attn_macs + scores * (SOFTMAX_FLOPS_PER_ELEMENT + SCORE_SCALE_FLOPS_PER_ELEMENT),
                  activation_bytes_read=q_bytes + kv_bytes + score_traffic // 2,
                  bytes_written=o_bytes + score_traffic // 2)


def attention_dropout_op(cfg: TransformerConfig, batch: int, new: int, context: int, p: Precision,
                         prefix: str = "layer") -> OpCost:
    """Training's dropout on the attention probabilities when they go through memory (no FlashAttention): read P,
    write the dropped P and a one-byte mask per score (Korthikanti et al. 2022 count the same 2 + 1 bytes per score
    among the activations the backward keeps)."""
    scores = batch * cfg.heads * new * context
    return OpCost(name=f"{prefix}.attn/dropout", module=f"{prefix}.attn", op="analytic.dropout", kind="attention",
                  input_shapes=((scores,),), output_shape=(scores,), dtype=p.compute_dtype, flops=scores,
                  activation_bytes_read=math.ceil(scores * p.a_bits / 8),
                  bytes_written=math.ceil(scores * p.a_bits / 8) + scores)


def expected_experts(experts: int, top_k: int, tokens: int) -> float:
    """Distinct experts ``tokens`` tokens reach when each picks ``top_k`` of ``experts`` uniformly at random: an
    expert is missed by one token with probability 1 − k/E, by all with (1 − k/E)^tokens."""
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


def is_context_op(op: OpCost) -> bool:
    """Whether a layer op's cost depends on the context (the attention product; MLA's expansion of the cached
    latents and its absorbed projections) rather than only on the tokens processed."""
    return op.kind == "attention" or any(part in op.name for part in (".attn.kv_b/", ".attn.q_absorb/",
                                                                      ".attn.v_absorb/"))


def layer_groups(cfg: TransformerConfig) -> list[tuple[int, bool]]:
    """(how many layers, whether they are MoE layers): the dense layers first (DeepSeek's first_k_dense_replace)."""
    dense, moe = cfg.layers - cfg.moe_layers, cfg.moe_layers
    return [(n, m) for n, m in ((dense, False), (moe, True)) if n]


def _moe_ops(cfg: TransformerConfig, t: int, p: Precision, prefix: str) -> list[OpCost]:
    """A mixture-of-experts MLP on ``t`` tokens under uniform routing (each expert gets t·k/E of them): router,
    top-k, the tokens permuted into expert order and back (dispatch, combine), the routed experts as grouped GEMMs —
    the work of t·k tokens, the weights of the experts the tokens reach (`expected_experts`) — and shared experts."""
    h, e, k, f = cfg.hidden, cfg.experts, cfg.top_k, cfg.expert_ffn
    routed = t * k
    per_expert = max(1, math.ceil(routed / e))
    reached = expected_experts(e, k, t)
    a = p.a_bits / 8

    def grouped(name: str, rows_in: int, cols_out: int) -> OpCost:
        macs = routed * rows_in * cols_out
        return OpCost(name=f"{prefix}.moe.experts.{name}/grouped_matmul", module=f"{prefix}.moe.experts",
                      op="analytic.grouped_matmul", kind="matmul",
                      input_shapes=((per_expert, rows_in), (rows_in, cols_out)), output_shape=(routed, cols_out),
                      dtype=p.compute_dtype, macs=macs, flops=2 * macs, params=e * rows_in * cols_out,
                      weight_bytes=math.ceil(reached * rows_in * cols_out * p.w_bits / 8),
                      activation_bytes_read=math.ceil(routed * rows_in * a),
                      bytes_written=math.ceil(routed * cols_out * a))

    ops = [
        _matmul(f"{prefix}.moe.router/matmul", t, h, e, p),
        _elementwise(f"{prefix}.moe.router/topk", "softmax", t * e, SOFTMAX_FLOPS_PER_ELEMENT, p),
        OpCost(name=f"{prefix}.moe/dispatch", module=f"{prefix}.moe", op="analytic.moe_dispatch", kind="memory",
               dtype=p.compute_dtype, input_shapes=((t, h),), output_shape=(routed, h),
               activation_bytes_read=math.ceil(t * h * a), bytes_written=math.ceil(routed * h * a)),
        grouped("gate", h, f), grouped("up", h, f),
        _elementwise(f"{prefix}.moe.experts/silu_mul", "activation", routed * f, POINTWISE_FLOPS["silu"] + 1, p,
                     reads=2),
        grouped("down", f, h),
        OpCost(name=f"{prefix}.moe/combine", module=f"{prefix}.moe", op="analytic.moe_combine", kind="elementwise",
               dtype=p.compute_dtype, input_shapes=((routed, h),), output_shape=(t, h), flops=2 * routed * h,
               activation_bytes_read=math.ceil(routed * h * a), bytes_written=math.ceil(t * h * a)),
    ]
    if cfg.shared_ffn:
        ops += [
            _matmul(f"{prefix}.moe.shared.gate/matmul", t, h, cfg.shared_ffn, p),
            _matmul(f"{prefix}.moe.shared.up/matmul", t, h, cfg.shared_ffn, p),
            _elementwise(f"{prefix}.moe.shared/silu_mul", "activation", t * cfg.shared_ffn,
                         POINTWISE_FLOPS["silu"] + 1, p, reads=2),
            _matmul(f"{prefix}.moe.shared.down/matmul", t, cfg.shared_ffn, h, p),
        ]
    return ops


def _batched_head_matmul(name: str, t: int, heads: int, k: int, n: int, p: Precision) -> OpCost:
    """Per head, (t×k) @ (k×n) with a weight per head: MLA's absorbed projections."""
    macs = t * heads * k * n
    return OpCost(name=name, module=name.rsplit("/", 1)[0], op="analytic.matmul", kind="matmul",
                  input_shapes=((t, k), (k, n)), output_shape=(t, heads, n), dtype=p.compute_dtype, macs=macs,
                  flops=2 * macs, params=heads * k * n, weight_bytes=math.ceil(heads * k * n * p.w_bits / 8),
                  activation_bytes_read=math.ceil(t * heads * k * p.a_bits / 8),
                  bytes_written=math.ceil(t * heads * n * p.a_bits / 8))


def _mla_ops(cfg: TransformerConfig, batch: int, new: int, context: int, p: Precision, prefix: str) -> list[OpCost]:
    """DeepSeek's multi-head latent attention. Queries through the low-rank ``q_lora_rank`` (or a full
    projection); keys and values compressed to a ``kv_lora_rank`` latent plus one shared rotary key, which is what
    the cache keeps. Prefill (``new`` > 1) expands the latent of the whole context to per-head keys and values and
    attends as usual; decode (``new`` = 1) uses the absorbed weights: each head's query is mapped into the latent
    space, attends over the cached latents directly, and its output is mapped back to the value width."""
    h, heads, nope, rope = cfg.hidden, cfg.heads, cfg.head_dim, cfg.qk_rope_dim
    lat, v = cfg.kv_lora_rank, cfg.v_head_dim
    t, ctx_rows = batch * new, batch * context
    a = p.a_bits / 8
    ops: list[OpCost] = []
    if cfg.q_lora_rank:
        ops += [_matmul(f"{prefix}.attn.q_a/matmul", t, h, cfg.q_lora_rank, p),
                _elementwise(f"{prefix}.attn.q_a_norm/norm", "norm", t * cfg.q_lora_rank, RMS_NORM_FLOPS_PER_ELEMENT,
                             p, weight_elements=cfg.q_lora_rank),
                _matmul(f"{prefix}.attn.q_b/matmul", t, cfg.q_lora_rank, heads * (nope + rope), p)]
    else:
        ops.append(_matmul(f"{prefix}.attn.q/matmul", t, h, heads * (nope + rope), p))
    ops += [_matmul(f"{prefix}.attn.kv_a/matmul", t, h, lat + rope, p),
            _elementwise(f"{prefix}.attn.kv_a_norm/norm", "norm", t * lat, RMS_NORM_FLOPS_PER_ELEMENT, p,
                         weight_elements=lat),
            OpCost(name=f"{prefix}.attn/kv_cache_write", module=f"{prefix}.attn", op="analytic.kv_write",
                   kind="memory", dtype=p.compute_dtype, activation_bytes_read=math.ceil(t * (lat + rope) * a),
                   bytes_written=math.ceil(t * (lat + rope) * p.kv_bits / 8),
                   output_shape=(batch, context, lat + rope))]
    cache_bytes = math.ceil(ctx_rows * (lat + rope) * p.kv_bits / 8)
    if new == 1:  # absorbed decode: attention in the latent space, the cache read once for all heads
        scores = batch * heads * context
        macs = scores * (lat + rope + lat)
        ops += [_batched_head_matmul(f"{prefix}.attn.q_absorb/matmul", t, heads, nope, lat, p),
                OpCost(name=f"{prefix}.attn/attention", module=f"{prefix}.attn", op="analytic.attention",
                       kind="attention", input_shapes=((batch, heads, 1, lat + rope), (batch, 1, context, lat + rope)),
                       output_shape=(batch, heads, 1, lat), dtype=p.compute_dtype, macs=macs,
                       flops=2 * macs + scores * (SOFTMAX_FLOPS_PER_ELEMENT + SCORE_SCALE_FLOPS_PER_ELEMENT),
                       activation_bytes_read=math.ceil(t * heads * (lat + rope) * a) + cache_bytes,
                       bytes_written=math.ceil(t * heads * lat * a)),
                _batched_head_matmul(f"{prefix}.attn.v_absorb/matmul", t, heads, lat, v, p)]
    else:  # prefill: the latent of every context token expanded to per-head keys and values
        scores = batch * heads * new * context
        macs = scores * (nope + rope + v)
        kv_b = _matmul(f"{prefix}.attn.kv_b/matmul", ctx_rows, lat, heads * (nope + v), p)
        ops += [dataclasses.replace(kv_b, activation_bytes_read=cache_bytes),
                OpCost(name=f"{prefix}.attn/attention", module=f"{prefix}.attn", op="analytic.attention",
                       kind="attention", input_shapes=((batch, heads, new, nope + rope),
                                                       (batch, heads, context, nope + rope)),
                       output_shape=(batch, heads, new, v), dtype=p.compute_dtype, macs=macs,
                       flops=2 * macs + scores * (SOFTMAX_FLOPS_PER_ELEMENT + SCORE_SCALE_FLOPS_PER_ELEMENT),
                       activation_bytes_read=math.ceil((t * heads * (nope + rope)
                                                        + ctx_rows * heads * (nope + rope + v)) * a),
                       bytes_written=math.ceil(t * heads * v * a))]
    ops.append(_matmul(f"{prefix}.attn.o/matmul", t, heads * v, h, p))
    return ops


def layer_ops(cfg: TransformerConfig, batch: int, new: int, context: int, p: Precision, *, flash: bool,
              prefix: str = "layer", moe: bool | None = None) -> list[OpCost]:
    """One transformer layer processing ``new`` tokens per sequence against ``context`` keys (new included).
    ``moe``: whether it is one of the model's MoE layers (default: whenever the model has experts; see
    `layer_groups` for models whose first layers stay dense)."""
    h, t = cfg.hidden, batch * new
    norm_flops = RMS_NORM_FLOPS_PER_ELEMENT if cfg.rms_norm else LAYER_NORM_FLOPS_PER_ELEMENT
    norm_w = h if cfg.rms_norm else 2 * h
    moe = cfg.moe if moe is None else moe
    attention = (_mla_ops(cfg, batch, new, context, p, prefix) if cfg.mla
                 else _attention_ops(cfg, batch, new, context, p, flash, prefix))
    return [
        _elementwise(f"{prefix}.norm1/norm", "norm", t * h, norm_flops, p, weight_elements=norm_w),
        *attention,
        _elementwise(f"{prefix}/residual1", "elementwise", t * h, 1, p, reads=2),
        _elementwise(f"{prefix}.norm2/norm", "norm", t * h, norm_flops, p, weight_elements=norm_w),
        *(_moe_ops(cfg, t, p, prefix) if moe else _dense_mlp_ops(cfg, t, p, prefix)),
        _elementwise(f"{prefix}/residual2", "elementwise", t * h, 1, p, reads=2),
    ]


def _attention_ops(cfg: TransformerConfig, batch: int, new: int, context: int, p: Precision, flash: bool,
                   prefix: str) -> list[OpCost]:
    """Multi-head (or grouped-query) attention: the fused q/k/v projection, the KV-cache append, the attention product
    (the whole cache read), Qwen3's per-head norms, the output projection."""
    h, hd = cfg.hidden, cfg.head_dim
    q_dim, kv_dim = cfg.heads * hd, cfg.kv_heads * hd
    t = batch * new
    bias = not cfg.rms_norm
    kv_new = 2 * t * kv_dim
    ops = [  # one fused q/k/v GEMM, as serving engines and Megatron-LM run it (one kernel, the input read once)
        _matmul(f"{prefix}.attn.qkv/matmul", t, h, q_dim + 2 * kv_dim, p, bias=bias),
        OpCost(name=f"{prefix}.attn/kv_cache_write", module=f"{prefix}.attn", op="analytic.kv_write", kind="memory",
               dtype=p.compute_dtype, activation_bytes_read=math.ceil(kv_new * p.a_bits / 8),
               bytes_written=math.ceil(kv_new * p.kv_bits / 8), output_shape=(2, batch, context, kv_dim)),
        attention_op(cfg, batch, new, context, p, flash=flash, prefix=prefix),
    ]
    if cfg.qk_norm:  # Qwen3: RMSNorm over each query and key head
        ops.append(_elementwise(f"{prefix}.attn.qk_norm/norm", "norm", t * (q_dim + kv_dim),
                                RMS_NORM_FLOPS_PER_ELEMENT, p, weight_elements=2 * hd))
    ops.append(_matmul(f"{prefix}.attn.o/matmul", t, q_dim, h, p, bias=bias))
    return ops


def _dense_mlp_ops(cfg: TransformerConfig, t: int, p: Precision, prefix: str) -> list[OpCost]:
    h = cfg.hidden
    if cfg.gated_mlp:
        return [
            _matmul(f"{prefix}.mlp.gate_up/matmul", t, h, 2 * cfg.ffn, p),  # gate and up fused, as engines run them
            _elementwise(f"{prefix}.mlp/silu_mul", "activation", t * cfg.ffn, POINTWISE_FLOPS["silu"] + 1, p, reads=2),
            _matmul(f"{prefix}.mlp.down/matmul", t, cfg.ffn, h, p),
        ]
    return [
        _matmul(f"{prefix}.mlp.fc/matmul", t, h, cfg.ffn, p, bias=True),
        _elementwise(f"{prefix}.mlp/gelu", "activation", t * cfg.ffn, POINTWISE_FLOPS["gelu"], p),
        _matmul(f"{prefix}.mlp.proj/matmul", t, cfg.ffn, h, p, bias=True),
    ]


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



def analytic_workload_ops(cfg: TransformerConfig, batch: int, seq_len: int, p: Precision, *, flash: bool = True,
                          logits: str = "all") -> list[OpCost]:
    """All ops of one forward over ``seq_len`` tokens (what a captured prefill runs), layers expanded."""
    ops = head_ops(cfg, batch, seq_len, seq_len if logits == "all" else 1, p)
    out = ops[:1]
    for i in range(cfg.layers):
        out += layer_ops(cfg, batch, seq_len, seq_len, p, flash=flash, prefix=f"layers.{i}",
                         moe=cfg.moe and i >= cfg.dense_layers)
    return out + ops[1:]


def key_values(text: str, keys: dict[str, str], error: type[UserError], where: str) -> dict[str, int]:
    """The ``KEY=N`` pairs after ``kind:`` in a spec (``gpt:h=64,l=2``, ``mlp:layers=8``), each a positive integer;
    ``keys`` maps each allowed key to what it means. Errors start with ``where``."""
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.partition(":")[2].split(","))):
        key, sep, val = part.partition("=")
        if not sep or key not in keys:
            allowed = ", ".join(f"{k} ({v})" for k, v in keys.items())
            raise error(f"{where}: {part!r} is not KEY=VALUE with KEY one of {allowed}")
        try:
            values[key] = int(val)
        except ValueError:
            raise error(f"{where}: {key}={val!r} is not an integer") from None
        if values[key] < 1:
            raise error(f"{where}: {key}={val} must be >= 1")
    return values


def parse_gpt(text: str) -> TransformerConfig:
    """``gpt:h=..,l=..,a=..,s=..[,V=..,ffn=..,kv=..]``: the one meaning of a GPT spec in analyze, llm, parallel and
    run. ``s`` is the sequence length (and the learned position table's size)."""
    values = key_values(text, GPT_KEYS, SpecError, f"model spec {text!r}")
    missing = [k for k in ("h", "l", "a", "s") if k not in values]
    if missing:
        raise SpecError(f"model spec {text!r}: missing {', '.join(f'{k} ({GPT_KEYS[k]})' for k in missing)}; "
                        "e.g. gpt:h=4096,l=32,a=32,s=2048")
    h, a = values["h"], values["a"]
    if h % a:
        raise SpecError(f"model spec {text!r}: h={h} is not a multiple of a={a}")
    kv = values.get("kv", a)
    if a % kv:
        raise SpecError(f"model spec {text!r}: a={a} is not a multiple of kv={kv}")
    return TransformerConfig(name=text, hidden=h, layers=values["l"], heads=a, kv_heads=kv, head_dim=h // a,
                             ffn=values.get("ffn", 4 * h), vocab=values.get("V", DEFAULT_VOCAB), gated_mlp=False,
                             rms_norm=False, tied_embeddings=True, max_positions=values["s"])


def gpt_spec(cfg: TransformerConfig) -> str:
    """The ``gpt:`` spec of a GPT-style config (every key written out)."""
    if cfg.gated_mlp or cfg.rms_norm or not cfg.tied_embeddings:
        raise SpecError(f"{cfg.name} is not a GPT-style model (LayerNorm, GELU MLP, tied embeddings)")
    return (f"gpt:h={cfg.hidden},l={cfg.layers},a={cfg.heads},s={cfg.max_positions},V={cfg.vocab},"
            f"ffn={cfg.ffn},kv={cfg.kv_heads}")


@functools.cache
def llm_configs() -> dict[str, dict[str, Any]]:
    """Shipped LLM configs by name (each JSON holds a ``source``, a ``task`` and the HF-style ``config``); read
    without torch, so naming an LLM never imports it."""
    root = resources.files("xpusim.workload") / "configs"
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith(".json"):
            out[entry.name.removesuffix(".json")] = json.loads(entry.read_text())
    return dict(sorted(out.items()))


def zoo_llms() -> dict[str, dict[str, Any]]:
    """The shipped decoder LLMs (what prefill/decode estimates take by name)."""
    return {n: e for n, e in llm_configs().items() if e.get("task") == "causal-lm"}


def load_transformer(model: str | TransformerConfig) -> TransformerConfig:
    """A decoder transformer from a zoo LLM name, an HF-style ``config.json`` file, a ``gpt:`` spec, or a
    `TransformerConfig` (used as is)."""
    if isinstance(model, TransformerConfig):
        return model
    if not isinstance(model, str):
        raise SpecError(f"model {model!r}: expected a name, a config.json path, a gpt: spec or a TransformerConfig")
    if model.startswith("gpt:"):
        return parse_gpt(model)
    configs = zoo_llms()
    if model in configs:
        return _from_hf(model, configs[model]["config"])
    if model.endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise SpecError(f"model {model!r}: no such file")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SpecError(f"{model}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise SpecError(f"{model}: expected a JSON object with the model's config")
        return _from_hf(path.stem, doc.get("config", doc))
    close = suggest(model, list(configs))
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise SpecError(f"unknown LLM {model!r}.{hint} Give a decoder LLM ({', '.join(configs)}), an HF config.json "
                    "file or gpt:h=..,l=..,a=..,s=..[,V=..,ffn=..,kv=..]")


def _from_hf(name: str, cfg: dict[str, Any]) -> TransformerConfig:
    try:
        return TransformerConfig.from_hf(name, cfg)
    except KeyError as exc:
        raise SpecError(f"{name}: config lacks the field {exc}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, UserError):
            raise
        raise SpecError(f"{name}: {exc}") from None


def with_seq_len(cfg: TransformerConfig, seq_len: int | None) -> int:
    """The sequence length to use: ``seq_len`` if given (checked against the model's positions), else the
    model's maximum positions."""
    s = seq_len if seq_len is not None else cfg.max_positions
    if s < 1 or s > cfg.max_positions:
        raise SpecError(f"seq_len {s} is outside 1..{cfg.max_positions} (the maximum positions of {cfg.name})")
    return s


__all__ = ["DEFAULT_VOCAB", "GPT_KEYS", "Precision", "SpecError", "TransformerConfig", "analytic_workload_ops",
           "gpt_spec", "head_ops", "key_values", "layer_ops", "load_transformer", "parse_gpt", "with_seq_len"]
