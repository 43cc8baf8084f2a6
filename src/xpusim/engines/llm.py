"""LLM inference on a chip: the analytic transformer builder (`xpusim.workload.transformer`: prefill and decode as
`OpCost` rows at the chosen bit widths, with its conventions) timed op by op with the roofline engine, plus the
memory a serving chip needs (weights, KV cache, activations) and the largest batch that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from xpusim.engines.roofline import OpEstimate, energy_table, estimate_op
from xpusim.hardware.chip import Chip
from xpusim.workload.model import OpCost
from xpusim.workload.transformer import (  # re-exported: the builder lives in workload since the API split
    Precision,
    TransformerConfig,
    analytic_workload_ops,
    head_ops,
    layer_ops,
)

__all__ = ["LLMEstimate", "PhaseEstimate", "Precision", "TransformerConfig", "analytic_workload_ops",
           "estimate_llm", "head_ops", "layer_ops"]


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
    from xpusim.precision import llm_compute_dtype  # the one dtype table (torch-free)

    table = energy_table()
    node_scale = chip.node_nm / table["node_nm"] if chip.node_nm else 1.0
    chip.require_dtype(llm_compute_dtype(p.a_bits, p.float16, lambda d: chip.best_peak_flops_per_s(d) is not None))

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
