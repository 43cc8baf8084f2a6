"""Compression variants from their command-line names, and fake-quantized layers that apply them.

Names: ``w8a8``, ``w4a16``, ``w4a8:per-tensor``, ``w4:group=64``, ``w2:qat``, ``w4a8:asym:mse``, ``fp8-e4m3``,
``bf16``, ``fp16``, ``tf32``, ``codebook16`` (k-means, 16 values), ``pow2:4`` (power-of-two, 4 bits), ``binary``,
``ternary``, ``adder`` (AdderNet: convolutions become L1-distance layers, then ``:ft=N`` epochs of fine-tuning,
default 30). Uniform weights are symmetric per output channel unless told otherwise; activations (``aB``) per
tensor, asymmetric, from min-max calibration. Options after ``:``: ``per-channel`` (default) | ``per-tensor`` |
``group=G``, ``asym``, ``minmax`` | ``percentile`` | ``mse`` (weights), ``a-minmax`` | ``a-percentile`` | ``a-mse``
(activations),
``qat`` (quantization-aware fine-tuning with the straight-through estimator; its weight range is refit by MSE at
every step unless a calibration is named).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from xpusim.compress.quant import (
    FLOAT_FORMATS,
    QuantError,
    UniformSpec,
    fake_binary,
    fake_kmeans,
    fake_pow2,
    fake_ternary,
    fake_uniform,
    round_float,
)

_W = re.compile(r"^w(\d+)(?:a(\d+))?$")
ADDER_EPOCHS = 30


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    kind: str
    """uniform, float, codebook, pow2, binary, ternary."""
    weight_bits: int
    """Bits per stored weight (index bits for a codebook)."""
    act_bits: int = 0
    """Activation bits (uniform, per tensor); 0 keeps activations in float."""
    act_calibration: str = "minmax"
    """How the activation range is set from the calibration batch: minmax, percentile or mse."""
    uniform: UniformSpec | None = None
    float_format: str = ""
    codebook: int = 0
    qat: bool = False
    finetune_epochs: int = 0
    """Adder: epochs of fine-tuning after the swap."""

    def weight_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.kind == "uniform":
            assert self.uniform is not None
            spec = self.uniform
            return lambda w: fake_uniform(w, spec)
        if self.kind == "float":
            fmt = self.float_format
            return lambda w: round_float(w, fmt)
        if self.kind == "codebook":
            n = self.codebook
            return lambda w: fake_kmeans(w, n)
        if self.kind == "pow2":
            b = self.weight_bits
            return lambda w: fake_pow2(w, b)
        return fake_binary if self.kind == "binary" else fake_ternary


def parse_variant(text: str) -> Variant:
    """A variant from its name (see the module docstring); errors name the part that is wrong."""
    head, *opts = text.strip().split(":")
    qat = "qat" in opts
    opts = [o for o in opts if o != "qat"]
    if head in FLOAT_FORMATS:
        if opts:
            raise QuantError(f"--quant {text!r}: float formats take no options besides qat (got {':'.join(opts)})")
        bits = {"tf32": 32, "bf16": 16, "fp16": 16, "fp8-e4m3": 8, "fp8-e5m2": 8}[head]
        return Variant(name=text, kind="float", weight_bits=bits, float_format=head, qat=qat)
    if m := re.match(r"^codebook(\d+)$", head):
        values = int(m[1])
        if values < 2 or values > 256 or values & (values - 1):
            raise QuantError(f"--quant {text!r}: a codebook needs a power of two of values from 2 to 256")
        return Variant(name=text, kind="codebook", weight_bits=int(math.log2(values)), codebook=values, qat=qat)
    if head == "adder":
        ft = ADDER_EPOCHS
        for o in opts:
            if not (o.startswith("ft=") and o[3:].isdigit() and int(o[3:]) > 0):
                raise QuantError(f"--quant {text!r}: adder takes :ft=N (fine-tuning epochs, N >= 1), not {o!r}")
            ft = int(o[3:])
        return Variant(name=text, kind="adder", weight_bits=32, finetune_epochs=ft)
    if head in ("binary", "ternary"):
        return Variant(name=text, kind=head, weight_bits=1 if head == "binary" else 2, qat=qat)
    if head == "pow2":
        bits = int(opts[0]) if opts and opts[0].isdigit() else 4
        if not 2 <= bits <= 8:
            raise QuantError(f"--quant {text!r}: bits={bits}; power-of-two supports 2 to 8 bits")
        return Variant(name=text, kind="pow2", weight_bits=bits, qat=qat)
    m = _W.match(head)
    if not m:
        raise QuantError(f"--quant {text!r}: expected wB[aB][:options] (e.g. w8a8, w4:per-channel, w2:qat), a float "
                         f"format ({', '.join(FLOAT_FORMATS)}), codebookN, pow2:B, binary or ternary")
    wb, ab = int(m[1]), int(m[2] or 0)
    if not 2 <= wb <= 8:
        raise QuantError(f"--quant {text!r}: weight bits {wb}; uniform quantization supports 2 to 8 bits")
    if ab and ab not in (8, 16) and not 2 <= ab <= 8:
        raise QuantError(f"--quant {text!r}: activation bits {ab}; use 2 to 8, or 16 for float activations")
    # Weights per output channel by default (as deployed int8 kernels do); QAT refits the clipping by MSE.
    spec = UniformSpec(bits=wb, granularity="channel", calibration="mse" if qat else "minmax")
    act_cal = "minmax"
    for o in opts:
        if o == "per-channel":
            spec = replace(spec, granularity="channel")
        elif o == "per-tensor":
            spec = replace(spec, granularity="tensor")
        elif o.startswith("group="):
            try:
                g = int(o.partition("=")[2])
            except ValueError:
                g = 0
            spec = UniformSpec(bits=wb, symmetric=spec.symmetric, granularity="group", group_size=g,
                               calibration=spec.calibration)
        elif o == "asym":
            spec = replace(spec, symmetric=False)
        elif o in ("minmax", "percentile", "mse"):
            spec = replace(spec, calibration=o)  # type: ignore[arg-type]
        elif o in ("a-minmax", "a-percentile", "a-mse"):
            act_cal = o[2:]
        else:
            raise QuantError(f"--quant {text!r}: unknown option {o!r}; options: per-channel (default), per-tensor, "
                             "group=G, asym, minmax, percentile, mse (weights), a-minmax, a-percentile, a-mse "
                             "(activations), qat")
    return Variant(name=text, kind="uniform", weight_bits=wb, act_bits=ab if ab < 16 else 0, uniform=spec, qat=qat,
                   act_calibration=act_cal)


def _ste(x: torch.Tensor, fq: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Straight-through estimator: the forward sees fq(x), the backward passes the gradient as if fq were identity."""
    return x + (fq(x) - x).detach()


class ActQuant(nn.Module):
    """Per-tensor asymmetric activation fake-quantizer: observes the calibration batch (min/max, or a sample of
    values for percentile and MSE), then its range is fixed."""

    SAMPLE = 1 << 18

    def __init__(self, bits: int, calibration: str = "minmax") -> None:
        super().__init__()
        self.spec = UniformSpec(bits=bits, symmetric=False, calibration=calibration)  # type: ignore[arg-type]
        self.lo: torch.Tensor
        self.hi: torch.Tensor
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))
        self.seen: list[torch.Tensor] = []
        self._observing = True

    @property
    def observing(self) -> bool:
        return self._observing

    @observing.setter
    def observing(self, value: bool) -> None:
        if self._observing and not value and self.seen and self.spec.calibration != "minmax":
            from xpusim.compress.quant import calibrated_range

            lo, hi = calibrated_range(torch.cat(self.seen)[None, :], self.spec)
            self.lo, self.hi = lo[0], hi[0]
        self.seen = []
        self._observing = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.lo = torch.minimum(self.lo, x.detach().min())
            self.hi = torch.maximum(self.hi, x.detach().max())
            if self.spec.calibration != "minmax":
                flat = x.detach().reshape(-1)
                pick = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[: self.SAMPLE]
                self.seen.append(flat[pick])
            return x
        lo, hi = self.lo.clamp(max=0), self.hi.clamp(min=0)
        scale = (hi - lo).clamp_min(1e-12) / (self.spec.qmax - self.spec.qmin)
        zero = torch.round(-lo / scale)

        def fq(t: torch.Tensor) -> torch.Tensor:
            q = torch.clamp(torch.round(t / scale) + zero, self.spec.qmin, self.spec.qmax)
            return (q - zero) * scale

        return _ste(x, fq)


class QuantLayer(nn.Module):
    """A Linear or Conv2d whose weight (and input, with activation bits) is fake-quantized on the fly; the float
    weight stays the trainable master copy for QAT."""

    def __init__(self, inner: nn.Module, variant: Variant) -> None:
        super().__init__()
        if not isinstance(inner, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            raise QuantError(f"cannot quantize a {type(inner).__name__}; Linear, Conv1d and Conv2d are supported")
        self.inner = inner
        self.variant = variant
        self.weight_fn = variant.weight_fn()
        self.act = ActQuant(variant.act_bits, variant.act_calibration) if variant.act_bits else None
        self._frozen: torch.Tensor | None = None
        self.weight_fn(inner.weight)  # fail early on a bad setting (per-channel on a vector, group not dividing)

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight; computed once while the layer is not training (k-means is not free)."""
        if self.training:
            self._frozen = None
            return _ste(self.inner.weight, self.weight_fn)
        if self._frozen is None:
            self._frozen = self.weight_fn(self.inner.weight).detach()
        return self._frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            x = self.act(x)
        w = self.quantized_weight()
        if isinstance(self.inner, nn.Linear):
            return F.linear(x, w, self.inner.bias)
        conv = self.inner
        fn = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
        return fn(x, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)  # type: ignore[arg-type]


def quantize_model(model: nn.Module, variant: Variant) -> nn.Module:
    """``model`` with every Linear and Conv wrapped in a QuantLayer (in place; pass a copy to keep the original)."""
    for name, child in list(model.named_children()):
        if isinstance(child, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            try:
                setattr(model, name, QuantLayer(child, variant))
            except QuantError as exc:
                raise QuantError(f"{variant.name} on layer {name!r} (weight {tuple(child.weight.shape)}): {exc}") \
                    from None
        else:
            quantize_model(child, variant)
    return model


def set_observing(model: nn.Module, observing: bool) -> None:
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.observing = observing
