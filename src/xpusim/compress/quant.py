"""Quantizers as pure functions on tensors: quantize, then dequantize back to float ("fake quantization"), so the
model runs unchanged and the error is what the reduced format loses.

- uniform affine: b bits, symmetric (zero point 0, levels −2^(b−1)+1 … 2^(b−1)−1) or asymmetric (0 … 2^b − 1 with a
  zero point), per tensor, per output channel (axis 0) or per group of g consecutive inputs; the range from min-max,
  a percentile of |x|, or the clipping that minimizes the mean squared error (Banner et al. 2019 style grid search);
- float formats by rounding the mantissa and clamping the exponent: TF32 (e8m10), BF16 (e8m7), FP16 (e5m10),
  FP8 E4M3 (OCP, max 448) and E5M2 (max 57344);
- power-of-two (logarithmic): each weight to ±2^k, k over 2^(b−1) − 1 exponents below the largest;
- codebook: k-means (Lloyd, 1-D) with 2^b centroids — "fewer unique weights", stored as b-bit indices + codebook;
- binary (XNOR-Net: sign × mean |w| per output channel) and ternary (TWN: threshold 0.7·mean |w|).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from xpusim.errors import UserError

Granularity = Literal["tensor", "channel", "group"]
Calibration = Literal["minmax", "percentile", "mse"]
FLOAT_FORMATS = {  # name: (exponent bits, mantissa bits, largest finite value)
    "tf32": (8, 10, None), "bf16": (8, 7, None), "fp16": (5, 10, 65504.0),
    "fp8-e4m3": (4, 3, 448.0), "fp8-e5m2": (5, 2, 57344.0),
}


class QuantError(UserError):
    """A quantizer setting that cannot be applied; the message names the field, the value and what is allowed."""


@dataclass(frozen=True, kw_only=True)
class UniformSpec:
    bits: int
    symmetric: bool = True
    granularity: Granularity = "tensor"
    group_size: int = 0
    calibration: Calibration = "minmax"
    percentile: float = 99.99

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise QuantError(f"bits={self.bits}: uniform quantization supports 2 to 8 bits")
        if self.granularity == "group" and self.group_size < 1:
            raise QuantError(f"group size {self.group_size}: per-group quantization needs group=G with G >= 1")
        if self.calibration not in ("minmax", "percentile", "mse"):
            raise QuantError(f"calibration {self.calibration!r}: expected minmax, percentile or mse")
        if not 50 < self.percentile <= 100:
            raise QuantError(f"percentile {self.percentile}: expected a value in (50, 100]")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) + 1 if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1


def _grouped(t: torch.Tensor, spec: UniformSpec) -> torch.Tensor:
    """``t`` as rows whose entries share one scale: (1, N), (C, N/C) or (C·G, g)."""
    if spec.granularity == "tensor":
        return t.reshape(1, -1)
    if t.dim() < 2:
        raise QuantError(f"per-{spec.granularity} quantization needs a weight with an output-channel axis; "
                         f"this tensor has shape {tuple(t.shape)}")
    rows = t.reshape(t.shape[0], -1)
    if spec.granularity == "channel":
        return rows
    if rows.shape[1] % spec.group_size:
        raise QuantError(f"group={spec.group_size} does not divide the {rows.shape[1]} inputs per output channel "
                         f"of a weight of shape {tuple(t.shape)}")
    return rows.reshape(-1, spec.group_size)


def _range(rows: torch.Tensor, spec: UniformSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (low, high) clipping range."""
    if spec.calibration == "percentile":
        if spec.symmetric:
            hi = torch.quantile(rows.abs().float(), spec.percentile / 100, dim=1)
            return -hi, hi
        lo = torch.quantile(rows.float(), 1 - spec.percentile / 100, dim=1)
        return lo, torch.quantile(rows.float(), spec.percentile / 100, dim=1)
    if spec.symmetric:
        hi = rows.abs().amax(dim=1)
        lo = -hi
    else:
        lo, hi = rows.amin(dim=1).clamp(max=0), rows.amax(dim=1).clamp(min=0)
    if spec.calibration == "mse":  # shrink the range where that lowers the squared error
        best_lo, best_hi = lo.clone(), hi.clone()
        best_err = torch.full_like(hi, float("inf"))
        for frac in torch.linspace(0.3, 1.0, 36):
            cand_lo, cand_hi = lo * frac, hi * frac
            err = ((_fake_rows(rows, cand_lo, cand_hi, spec) - rows) ** 2).sum(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, cand_lo, best_lo)
            best_hi = torch.where(better, cand_hi, best_hi)
        return best_lo, best_hi
    return lo, hi


def calibrated_range(rows: torch.Tensor, spec: UniformSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (low, high) range by the spec's calibration (min-max, percentile or MSE search)."""
    return _range(rows, spec)


def scale_zero(lo: torch.Tensor, hi: torch.Tensor, spec: UniformSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Step size and integer zero point for a [lo, hi] range."""
    if spec.symmetric:
        scale = hi.abs().clamp_min(1e-12) / spec.qmax
        return scale, torch.zeros_like(scale)
    scale = (hi - lo).clamp_min(1e-12) / (spec.qmax - spec.qmin)
    zero = (spec.qmin - torch.round(lo / scale)).clamp(spec.qmin, spec.qmax)
    return scale, zero


def _fake_rows(rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, spec: UniformSpec) -> torch.Tensor:
    scale, zero = scale_zero(lo, hi, spec)
    q = torch.clamp(torch.round(rows / scale[:, None]) + zero[:, None], spec.qmin, spec.qmax)
    return (q - zero[:, None]) * scale[:, None]


def quantize_uniform(t: torch.Tensor, spec: UniformSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(integer codes, scale, zero point) with one scale per row of ``_grouped``; codes have ``t``'s shape."""
    rows = _grouped(t.detach(), spec)
    lo, hi = _range(rows, spec)
    scale, zero = scale_zero(lo, hi, spec)
    q = torch.clamp(torch.round(rows / scale[:, None]) + zero[:, None], spec.qmin, spec.qmax)
    return q.reshape(t.shape), scale, zero


def fake_uniform(t: torch.Tensor, spec: UniformSpec) -> torch.Tensor:
    rows = _grouped(t.detach(), spec)
    lo, hi = _range(rows, spec)
    return _fake_rows(rows, lo, hi, spec).reshape(t.shape).to(t.dtype)


def round_float(t: torch.Tensor, fmt: str) -> torch.Tensor:
    """Round fp32 values to the nearest value of a narrower float format (round to nearest even), saturating at
    the format's largest finite value; subnormals included."""
    if fmt not in FLOAT_FORMATS:
        raise QuantError(f"float format {fmt!r}: expected one of {', '.join(FLOAT_FORMATS)}")
    _, man_bits, max_val = FLOAT_FORMATS[fmt]
    x = t.detach().float()
    if fmt in ("tf32", "bf16"):
        # Keep the fp32 exponent; round the mantissa to man_bits by integer arithmetic on the bit pattern.
        bits = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # the pattern as unsigned: sign bit stays put
        drop = 23 - man_bits
        half = 1 << (drop - 1)
        lsb = (bits >> drop) & 1
        rounded = ((bits + half - 1 + lsb) >> drop) << drop
        rounded = torch.where(rounded >= 2**31, rounded - 2**32, rounded)
        out = rounded.to(torch.int32).view(torch.float32)
        return torch.where(torch.isfinite(x), out, x).to(t.dtype)
    assert max_val is not None
    if fmt == "fp16":
        return x.clamp(-max_val, max_val).to(torch.float16).float().to(t.dtype)
    dtype = torch.float8_e4m3fn if fmt == "fp8-e4m3" else torch.float8_e5m2
    return x.clamp(-max_val, max_val).to(dtype).float().to(t.dtype)  # saturate, then round to nearest even


def float_step(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """The spacing of representable values of ``fmt`` around each |x| (for error bounds)."""
    exp_bits, man_bits, _ = FLOAT_FORMATS[fmt]
    bias = 2 ** (exp_bits - 1) - 1
    e = torch.floor(torch.log2(x.abs().clamp_min(1e-30))).clamp(min=1 - bias)
    return torch.pow(2.0, e - man_bits)


def fake_pow2(t: torch.Tensor, bits: int) -> torch.Tensor:
    """Sign × 2^k with k among the 2^(b−1) − 1 exponents at and below the largest |w|'s (rounded in log2), and 0."""
    if not 2 <= bits <= 8:
        raise QuantError(f"bits={bits}: power-of-two quantization supports 2 to 8 bits")
    x = t.detach()
    levels = 2 ** (bits - 1) - 1
    top = torch.round(torch.log2(x.abs().amax().clamp_min(1e-12)))
    k = torch.round(torch.log2(x.abs().clamp_min(1e-30))).clamp(top - levels + 1, top)
    out = torch.sign(x) * torch.pow(2.0, k)
    smallest = torch.pow(2.0, top - levels + 1)
    return torch.where(x.abs() < smallest / 2, torch.zeros_like(x), out).to(t.dtype)


def kmeans_codebook(t: torch.Tensor, values: int, iters: int = 30,
                    sample: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook of ``values`` floats, index of each weight): 1-D Lloyd's algorithm from linearly spaced centroids
    (Han et al. 2016, "Deep Compression"), fitted on at most ``sample`` weights (a fixed random subset), then
    every weight assigned to its nearest centroid (a binary search over the midpoints: it is 1-D)."""
    if values < 2 or values > 256:
        raise QuantError(f"codebook of {values} values: expected 2 to 256")
    x = t.detach().reshape(-1).float()
    pick = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))[:sample]
    fit = x[pick] if x.numel() > sample else x
    cent = torch.linspace(float(fit.min()), float(fit.max()), values)

    def assign(v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(v, (c[1:] + c[:-1]) / 2)

    for _ in range(iters):
        idx = assign(fit, cent)
        sums = torch.zeros(values).index_add_(0, idx, fit)
        counts = torch.zeros(values).index_add_(0, idx, torch.ones_like(fit))
        new = torch.where(counts > 0, sums / counts.clamp_min(1), cent)
        new, _ = torch.sort(new)
        if torch.allclose(new, cent):
            break
        cent = new
    return cent, assign(x, cent).reshape(t.shape)


def fake_kmeans(t: torch.Tensor, values: int) -> torch.Tensor:
    cent, idx = kmeans_codebook(t, values)
    return cent[idx].to(t.dtype)


def fake_binary(t: torch.Tensor) -> torch.Tensor:
    """XNOR-Net weights: sign(w) × α with α = mean |w| per output channel (Rastegari et al. 2016)."""
    x = t.detach()
    alpha = x.abs().reshape(x.shape[0], -1).mean(dim=1) if x.dim() > 1 else x.abs().mean().reshape(1)
    shape = (-1,) + (1,) * (x.dim() - 1) if x.dim() > 1 else (1,)
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype) * alpha.reshape(shape)


def fake_ternary(t: torch.Tensor) -> torch.Tensor:
    """Ternary weight networks (Li et al. 2016): threshold Δ = 0.7·mean |w|, α = mean of |w| above it."""
    x = t.detach()
    delta = 0.7 * x.abs().mean()
    mask = x.abs() > delta
    alpha = x.abs()[mask].mean() if bool(mask.any()) else x.abs().mean()
    return torch.sign(x) * mask * alpha


def packed_bytes(elements: int, bits: int) -> int:
    """Bytes of ``elements`` values packed at ``bits`` each."""
    return math.ceil(elements * bits / 8)
