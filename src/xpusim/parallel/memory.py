"""Memory per GPU: model states (ZeRO, Rajbhandari et al. SC'20) and activations (Korthikanti et al. 2022),
with the in-flight micro-batches of the pipeline schedule. All in bytes; formulas in reference/parallelism.md."""

from __future__ import annotations

from dataclasses import dataclass

# Mixed-precision Adam (ZeRO §3): 16-bit parameters and gradients, fp32 master copy, momentum and variance.
PARAM_BYTES = 2
GRAD_BYTES = 2
OPTIMIZER_BYTES = 12


@dataclass(frozen=True, kw_only=True)
class ModelStates:
    params: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer


def model_states(psi: float, dp: int, zero: int) -> ModelStates:
    """Bytes per device for ``psi`` parameters data-parallel over ``dp`` ranks at ZeRO ``zero`` (0–3):
    16Ψ, (4 + 12/N_d)Ψ, (2 + 14/N_d)Ψ, 16Ψ/N_d (ZeRO Fig. 1)."""
    return ModelStates(params=PARAM_BYTES * psi / (dp if zero >= 3 else 1),
                       grads=GRAD_BYTES * psi / (dp if zero >= 2 else 1),
                       optimizer=OPTIMIZER_BYTES * psi / (dp if zero >= 1 else 1))


def layer_activation_bytes(*, s: int, b: int, h: int, a: int, t: int = 1, sp: bool = False,
                           recompute: str = "none") -> float:
    """Activation bytes one transformer layer keeps for its backward (Korthikanti et al. 2022, Table 2): 16-bit
    activations and 1-byte dropout masks; ``full`` keeps only the layer input (2sbh, split over t with sp)."""
    sbh = s * b * h
    if recompute == "full":
        return 2 * sbh / (t if sp else 1)
    attention_core = 5 * a * s / (h * t)  # QKᵀ scores, softmax, dropout mask and output: what selective drops
    if recompute == "selective":
        attention_core = 0.0
    if sp:
        return sbh * (34 / t + attention_core)
    if t > 1:
        return sbh * (10 + 24 / t + attention_core)
    return sbh * (34 + attention_core)


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
