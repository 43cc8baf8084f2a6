"""Functional mode: run a layer's real numbers through the simulated mapping, fold by fold, and compare.

The fold loops are the dataflow's (rows, cols) tiling of (M, N, K) from `npu.spatio_temporal`; a coverage
counter adds each fold's K extent to the outputs it touches and must end at exactly K everywhere — every MAC
is done once, none twice. Integer dtypes multiply int8 values and accumulate in int32; the reference is
PyTorch's own convolution/linear on the same values (in float64, exact for these integer ranges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xpusim.engines.npu import DATAFLOWS, NpuError

FLOAT_TOLERANCE = 1e-4
"""Largest absolute difference from PyTorch's result a float (fp32) check accepts: the fold loops add partial
sums in another order than PyTorch's kernel, so the last bits may differ (integer checks must be exact)."""


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    name: str
    dataflow: str
    m: int
    n: int
    k: int
    groups: int
    folds: int
    exact: bool
    max_abs_error: float
    coverage_ok: bool

    @property
    def ok(self) -> bool:
        return self.coverage_ok and (self.exact or self.max_abs_error <= FLOAT_TOLERANCE)


def tiled_gemm(a: torch.Tensor, b: torch.Tensor, dataflow: str, rows: int, cols: int
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(M×K)·(K×N) fold by fold as the array would do it; returns (result, coverage count per output, folds)."""
    if dataflow not in DATAFLOWS:
        raise NpuError(f"unknown dataflow {dataflow!r}")
    m, k = a.shape
    n = b.shape[1]
    acc_dtype = torch.int32 if not a.is_floating_point() else a.dtype
    out = torch.zeros(m, n, dtype=acc_dtype)
    cover = torch.zeros(m, n, dtype=torch.int64)
    a, b = a.to(acc_dtype), b.to(acc_dtype)
    row_dim, col_dim = {"os": ("m", "n"), "ws": ("k", "n"), "is": ("k", "m")}[dataflow]
    size = {"m": m, "n": n, "k": k}
    folds = 0
    for r0 in range(0, size[row_dim], rows):
        for c0 in range(0, size[col_dim], cols):
            span = {"m": (0, m), "n": (0, n), "k": (0, k)}
            span[row_dim] = (r0, min(r0 + rows, size[row_dim]))
            span[col_dim] = (c0, min(c0 + cols, size[col_dim]))
            (m0, m1), (n0, n1), (k0, k1) = span["m"], span["n"], span["k"]
            out[m0:m1, n0:n1] += a[m0:m1, k0:k1] @ b[k0:k1, n0:n1]
            cover[m0:m1, n0:n1] += k1 - k0
            folds += 1
    return out, cover, folds


def check_conv(conv: nn.Conv2d, x: torch.Tensor, dataflow: str, rows: int, cols: int, *, integer: bool,
               name: str = "conv") -> CheckResult:
    """im2col, per-group tiled GEMM, fold back, compare with PyTorch's convolution."""
    if integer:
        x = torch.randint(-128, 128, x.shape, dtype=torch.int8)
        w = torch.randint(-128, 128, conv.weight.shape, dtype=torch.int8)
        ref = F.conv2d(x.double(), w.double(), None, conv.stride, conv.padding, conv.dilation, conv.groups)
    else:
        w = conv.weight.detach()
        ref = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    n_batch, cin = x.shape[:2]
    g = conv.groups
    if isinstance(conv.padding, str):
        raise NpuError(f"{name}: padding={conv.padding!r} is not supported by --check; use explicit padding")
    cols_x = F.unfold(x.double() if integer else x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    cols_x = cols_x.to(torch.int8) if integer else cols_x
    ho, wo = ref.shape[2], ref.shape[3]
    kpg = (cin // g) * conv.kernel_size[0] * conv.kernel_size[1]
    cout_g = conv.out_channels // g
    outs = []
    folds = 0
    coverage_ok = True
    for gi in range(g):
        a = cols_x[:, gi * kpg:(gi + 1) * kpg, :].transpose(1, 2).reshape(-1, kpg)  # (N·Ho·Wo, K)
        b = w[gi * cout_g:(gi + 1) * cout_g].reshape(cout_g, kpg).t()  # (K, Cout/g)
        out, cover, f = tiled_gemm(a, b, dataflow, rows, cols)
        coverage_ok &= bool((cover == kpg).all())
        folds += f
        outs.append(out.reshape(n_batch, ho * wo, cout_g))
    got = torch.cat(outs, dim=2).transpose(1, 2).reshape(ref.shape)
    diff = (got.double() - ref.double()).abs().max().item()
    return CheckResult(name=name, dataflow=dataflow, m=n_batch * ho * wo, n=cout_g, k=kpg, groups=g, folds=folds,
                       exact=diff == 0.0, max_abs_error=diff, coverage_ok=coverage_ok)


def check_linear(lin: nn.Linear, x: torch.Tensor, dataflow: str, rows: int, cols: int, *, integer: bool,
                 name: str = "linear") -> CheckResult:
    x2 = x.reshape(-1, x.shape[-1])
    if integer:
        x2 = torch.randint(-128, 128, x2.shape, dtype=torch.int8)
        w = torch.randint(-128, 128, lin.weight.shape, dtype=torch.int8)
        ref = F.linear(x2.double(), w.double())
    else:
        w = lin.weight.detach()
        ref = F.linear(x2, w)
    got, cover, folds = tiled_gemm(x2, w.t(), dataflow, rows, cols)
    diff = (got.double() - ref.double()).abs().max().item()
    return CheckResult(name=name, dataflow=dataflow, m=x2.shape[0], n=w.shape[0], k=w.shape[1], groups=1,
                       folds=folds, exact=diff == 0.0, max_abs_error=diff,
                       coverage_ok=bool((cover == w.shape[1]).all()))


def check_model(model: nn.Module, args: tuple[Any, ...], dataflow: str, rows: int, cols: int, *, integer: bool,
                max_layers: int = 8) -> list[CheckResult]:
    """Run the model once to collect each conv/linear layer's real input, then check the first ``max_layers``."""
    inputs: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and len(inputs) < max_layers:
            def grab(m: nn.Module, a: Any, _: Any, name: str = name) -> None:
                if name not in inputs and len(inputs) < max_layers:
                    inputs[name] = (m, a[0].detach())
            hooks.append(mod.register_forward_hook(grab))
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    results = []
    for name, (mod, x) in inputs.items():
        dfs = DATAFLOWS if dataflow == "auto" else (dataflow,)
        for df in dfs:
            if isinstance(mod, nn.Conv2d):
                results.append(check_conv(mod, x, df, rows, cols, integer=integer, name=name))
            elif isinstance(mod, nn.Linear):
                results.append(check_linear(mod, x, df, rows, cols, integer=integer, name=name))
    return results
