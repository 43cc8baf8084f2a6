"""Memory per GPU: model states (ZeRO, Rajbhandari et al. SC'20) and activations (Korthikanti et al. 2022),
with the in-flight micro-batches of the pipeline schedule. All in bytes; formulas in reference/parallelism.md."""

from __future__ import annotations

from dataclasses import dataclass

# Defaults of the plan's bytes per parameter: mixed-precision Adam, Rajbhandari et al. SC'20 (ZeRO) Sec. 3.1 —
# fp16/bf16 parameters (2Ψ) and gradients (2Ψ), and K = 12 bytes of optimizer states (fp32 master copy of the
# parameters, momentum and variance, 4 + 4 + 4): 2 + 2 + 12 = 16 bytes per parameter.
PARAM_BYTES = 2
"""Bytes of one parameter of the working copy the forward and backward read (16-bit)."""
GRAD_BYTES = 2
"""Bytes of one gradient element (16-bit)."""
OPTIMIZER_BYTES = 12
"""Optimizer-state bytes per parameter (ZeRO's K): fp32 master weights, Adam momentum and variance."""
LOGITS_BYTES_PER_ELEMENT = 4
"""The logits the cross-entropy loss keeps, per element: 4, because the loss computes them in fp32 even in
mixed-precision training (Korthikanti et al. 2022, Sec. 4.3: "calculated in 32-bit floating point and as a
result will require 4sbv/t of storage")."""


@dataclass(frozen=True, kw_only=True)
class ModelStates:
    params: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer


def model_states(psi: float, dp: int, zero: int, *, param_bytes: float = PARAM_BYTES,
                 grad_bytes: float = GRAD_BYTES, optimizer_bytes: float = OPTIMIZER_BYTES) -> ModelStates:
    """Bytes per device for ``psi`` parameters data-parallel over ``dp`` ranks at ZeRO ``zero`` (0–3). With the
    default 2 + 2 + 12 bytes per parameter: 16Ψ, (4 + 12/N_d)Ψ, (2 + 14/N_d)Ψ, 16Ψ/N_d (ZeRO Fig. 1)."""
    return ModelStates(params=param_bytes * psi / (dp if zero >= 3 else 1),
                       grads=grad_bytes * psi / (dp if zero >= 2 else 1),
                       optimizer=optimizer_bytes * psi / (dp if zero >= 1 else 1))


def optimizer_step_bytes(*, param_bytes: float = PARAM_BYTES, grad_bytes: float = GRAD_BYTES,
                         optimizer_bytes: float = OPTIMIZER_BYTES, loss_scaling: bool = False) -> float:
    """Bytes the mixed-precision optimizer step moves per local parameter, pass by pass as Megatron-LM runs it
    (``Float16OptimizerWithFloat16Params.step``, megatron/optimizer/optimizer.py, 2022; Megatron-Core's optimizers
    keep the passes): the gradients made fp32 (read ``grad_bytes``, write 4; none when they already are), with
    fp16's loss scaling unscaled and checked for inf/nan (read and write 4), their global norm for clipping (read 4),
    Adam (apex FusedAdam: read the fp32 master weights, momentum, variance — ``optimizer_bytes`` — and the gradient,
    write the three), the master weights copied into the working ones (read 4, write ``param_bytes``), and the
    gradient buffer zeroed for the next step (write ``grad_bytes``): 6 + 4 + 28 + 6 + 2 = 46 by default; fp16 adds 8.
    Every pass is memory-bound."""
    to_fp32 = grad_bytes + 4 if grad_bytes < 4 else 0
    return (to_fp32 + (8 if loss_scaling else 0) + 4 + 2 * optimizer_bytes + 4 + 4 + param_bytes
            + grad_bytes)


def layer_activation_bytes(*, s: int, b: int, h: int, a: int, t: int = 1, sp: bool = False,
                           recompute: str = "none", flash: bool = False, fp8: bool = False) -> float:
    """Activation bytes one transformer layer keeps for its backward (Korthikanti et al. 2022, Table 2): 16-bit
    activations and 1-byte dropout masks; ``full`` keeps only the layer input (2sbh, split over t with sp).
    ``flash``: FlashAttention never stores the s × s scores, so it keeps what selective recomputation keeps.
    ``fp8``: Transformer Engine keeps its GEMMs' inputs as the 1-byte casts it made — QKV's and fc1's (the norms'
    outputs, whole on every tp rank without sp: 2 → 1 each), the o-projection's (2 → 1) and fc2's (8 → 4): 7sbh
    fewer, 27 of the 34."""
    sbh = s * b * h
    if recompute == "full":
        return 2 * sbh / (t if sp else 1)
    attention_core = 5 * a * s / (h * t)  # QKᵀ scores, softmax, dropout mask and output: what selective drops
    if recompute == "selective" or flash:
        attention_core = 0.0
    whole, split = (8, 19) if fp8 else (10, 24)  # without sp: kept whole on every tp rank, split over them
    if sp or t == 1:
        return sbh * ((whole + split) / t + attention_core)
    return sbh * (whole + split / t + attention_core)


def moe_mlp_activation_bytes(*, s: int, b: int, h: int, t: int, top_k: int, experts: int, expert_ffn: int,
                             shared_ffn: int = 0, etp: int = 1, skew: float = 1.0, fp8: bool = False) -> float:
    """Activation bytes a MoE block (in place of the dense MLP) keeps for its backward on one rank: its 1/t of the
    sequence (Megatron-Core's MoE layer takes it split over the tp ranks), 16-bit unless said. The block input (2h
    per token, the router's and the shared experts' GEMM input), the router's fp32 logits and probabilities (8E),
    and per routed copy — k per token, etp times as many rows on a rank that shares its experts with etp ranks, each
    1/etp as wide — the permuted input (2h), the gate and up outputs (4f), the activation's output (2f) and the
    expert output the combine weighs (2h); shared experts as a SwiGLU MLP (6 f_shared, split over t). ``skew``: the
    busiest rank's routed rows over the mean. ``fp8``: the GEMM inputs kept as 1-byte casts — the permuted input
    (h) and the activation's output (f, the down projection's input; the shared experts' too)."""
    tokens = s * b / t
    routed = tokens * top_k * etp * skew
    one = 1 if fp8 else 2  # bytes of a kept GEMM input
    return (tokens * (2 * h + 8 * experts + (4 + one) * shared_ffn)
            + routed * ((2 + one) * h + (4 + one) * expert_ffn / etp))


def dense_mlp_activation_bytes(*, s: int, b: int, h: int, t: int = 1, sp: bool = False, fp8: bool = False) -> float:
    """The MLP's share of `layer_activation_bytes` (Korthikanti et al. 2022 Sec. 4.1: input 2sbh, GeLU input and
    output 16sbh, dropout mask sbh; without sp the input and the mask are kept whole on every tp rank). ``fp8``:
    the input and the GeLU's output (fc2's input) kept as 1-byte casts: 14sbh."""
    sbh = s * b * h
    whole, split = (2, 12) if fp8 else (3, 16)
    return sbh * (whole + split) / t if sp or t == 1 else sbh * (whole + split / t)


@dataclass(frozen=True, kw_only=True)
class MemoryBreakdown:
    params: float
    grads: float
    optimizer: float
    activations: float
    buffers: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.buffers

    def to_dict(self) -> dict[str, float]:
        return {"params": self.params, "grads": self.grads, "optimizer": self.optimizer,
                "activations": self.activations, "buffers": self.buffers, "total": self.total}
