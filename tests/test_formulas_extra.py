"""Formulas for complex matmuls, FFTs, distances, grid sampling, nn.Bilinear, EmbeddingBag, addbmm and the
training data-movement ops, against hand counts written out here (and FlopCounterMode where it counts the op)."""

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import xpusim
from conftest import Fn
from xpusim.workload.formulas import FORMULAS, FREE_OPS
from xpusim.workload.model import OpCost, Workload

torch.set_num_threads(1)
CF = torch.cfloat


def capture(model: nn.Module, *inputs: Any, device: str) -> Workload:
    wl = xpusim.analyze(model, inputs, device=device)
    assert wl.uncounted == {}
    return wl


def row(wl: Workload, short: str) -> OpCost:
    (op,) = [o for o in wl.ops if o.op.split(".")[1] == short]
    return op


def flop_counter(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


DEVICES = pytest.mark.parametrize("device", ["eager", "meta"])

# ---------------------------------------------------------------- complex matmuls: 4 real MACs per complex MAC


@DEVICES
def test_complex_mm_is_four_real_macs(device: str) -> None:
    a, b = torch.randn(3, 4, dtype=CF), torch.randn(4, 5, dtype=CF)
    op = row(capture(Fn(lambda x, y: x @ y), a, b, device=device), "mm")
    # (a+bi)(c+di) = (ac−bd) + (ad+bc)i: 4 real multiplies, 4 real adds with the accumulation
    assert op.macs == 3 * 4 * 5 * 4
    assert op.flops == 8 * 3 * 4 * 5
    # FlopCounterMode counts a complex mm as real: exactly a quarter of ours
    assert 4 * flop_counter(lambda: a @ b) == op.flops


@DEVICES
def test_complex_einsum_bmm_linear_vdot_mv(device: str) -> None:
    a, b = torch.randn(2, 3, 4, dtype=CF), torch.randn(2, 4, 5, dtype=CF)
    wl = capture(Fn(lambda x, y: torch.einsum("bij,bjk->bik", x, y)), a, b, device=device)
    assert wl.totals().macs == 4 * 2 * 3 * 4 * 5

    lin = nn.Linear(4, 3, dtype=CF)
    op = row(capture(lin, torch.randn(2, 4, dtype=CF), device=device), "addmm")
    assert op.macs == 4 * 2 * 4 * 3
    assert op.flops == 8 * 2 * 4 * 3 + 2 * 2 * 3  # complex bias add: 2 real adds per output

    v = torch.randn(6, dtype=CF)
    assert capture(Fn(torch.vdot), v, v, device=device).totals().macs == 4 * 6
    m = torch.randn(3, 6, dtype=CF)
    assert capture(Fn(torch.mv), m, v, device=device).totals().macs == 4 * 3 * 6


def test_complex_conv_runs_as_three_real_convs() -> None:
    """PyTorch's conv2d splits a complex convolution into 3 real ones (Gauss) before dispatch: 3×, not 4×."""
    conv = nn.Conv2d(2, 3, 3, dtype=CF)
    wl = capture(conv, torch.randn(1, 2, 5, 5, dtype=CF), device="eager")
    one_real = 3 * 3 * 3 * 2 * 9  # Cout·Hout·Wout · Cin·k²
    assert wl.totals().macs == 3 * one_real


@DEVICES
def test_complex_elementwise(device: str) -> None:
    a, b, r = torch.randn(3, 4, dtype=CF), torch.randn(3, 4, dtype=CF), torch.randn(3, 4)
    assert row(capture(Fn(torch.mul), a, b, device=device), "mul").flops == 12 * 6  # 4 mul + 2 add
    assert row(capture(Fn(torch.add), a, b, device=device), "add").flops == 12 * 2
    assert row(capture(Fn(torch.mul), a, r, device=device), "mul").flops == 12 * 2  # real × complex: 2 mul
    assert row(capture(Fn(torch.mul), r, r, device=device), "mul").flops == 12  # real unchanged


# ---------------------------------------------------------------- missing formulas


@DEVICES
def test_addbmm(device: str) -> None:
    c, a, b = torch.randn(3, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    op = row(capture(Fn(torch.addbmm), c, a, b, device=device), "addbmm")
    assert op.macs == 2 * 3 * 4 * 5
    assert op.flops == 2 * (2 * 3 * 4 * 5) + 3 * 5  # + C add per output
    assert 2 * op.macs == flop_counter(lambda: torch.bmm(a, b))  # the same products as a bmm


@DEVICES
def test_bilinear(device: str) -> None:
    bil = nn.Bilinear(3, 4, 5)  # y_o = x1ᵀ W_o x2 + b_o
    wl = capture(bil, torch.randn(2, 3), torch.randn(2, 4), device=device)
    op = row(wl, "_trilinear")
    # ATen: x1·W summed over in1 (B·O·in1·in2), then ·x2 summed over in2 (B·O·in2)
    assert op.macs == 2 * 5 * 3 * 4 + 2 * 5 * 4
    assert op.flops == 2 * op.macs
    assert wl.totals().flops == 2 * op.macs + 2 * 5  # + bias


@pytest.mark.parametrize(
    ("fn", "x", "expected"),
    [
        # real input (3 signals of 16): half of 5·N·log2 N per transform
        (lambda x: torch.fft.rfft(x), torch.randn(3, 16), 3 * 5 * 16 * 4 // 2),
        # ortho: + one multiply per real value of the 3×9 complex output
        (lambda x: torch.fft.rfft(x, norm="ortho"), torch.randn(3, 16), 3 * 5 * 16 * 4 // 2 + 2 * 3 * 9),
        # 2-D complex: 3·16 transforms of 8 along dim 1, 3·8 of 16 along dim 2
        (lambda x: torch.fft.fft2(x), torch.randn(3, 8, 16, dtype=CF), 3 * 16 * 5 * 8 * 3 + 3 * 8 * 5 * 16 * 4),
        # complex 3×9 -> real 3×16, halved; default "backward" norm scales the 48 real outputs by 1/16
        (lambda x: torch.fft.irfft(x), torch.randn(3, 9, dtype=CF), 3 * 5 * 16 * 4 // 2 + 48),
        # non-power-of-two length: the same 5·N·log2 N
        (lambda x: torch.fft.fft(x), torch.randn(2, 12, dtype=CF), round(2 * 5 * 12 * math.log2(12))),
    ],
)
@DEVICES
def test_fft(fn: Callable[..., Any], x: torch.Tensor, expected: int, device: str) -> None:
    assert capture(Fn(fn), x, device=device).totals().flops == expected


@DEVICES
def test_cdist_pdist(device: str) -> None:
    a, b = torch.randn(2, 5, 4), torch.randn(2, 6, 4)
    # p=2 per pair: 4 subtracts + 4 squares + 3 adds + 1 sqrt = 12
    assert capture(Fn(torch.cdist), a, b, device=device).totals().flops == 2 * 5 * 6 * 12
    # p=1: 4 subtracts + 4 abs + 3 adds = 11
    assert capture(Fn(lambda x, y: torch.cdist(x, y, p=1.0)), a, b, device=device).totals().flops == 2 * 5 * 6 * 11
    # p=3: 4 subtracts + 4 abs + 4 pow + 3 adds + 1 root = 16
    assert capture(Fn(lambda x, y: torch.cdist(x, y, p=3.0)), a, b, device=device).totals().flops == 2 * 5 * 6 * 16
    x = torch.randn(5, 4)
    assert capture(Fn(torch.pdist), x, device=device).totals().flops == (5 * 4 // 2) * 12  # 10 pairs
    assert capture(Fn(lambda t: torch.pdist(t, p=1.0)), x, device=device).totals().flops == 10 * 11


@DEVICES
def test_cdist_matmul_path(device: str) -> None:
    """P > 25: ATen computes ‖x‖² − 2x·y + ‖y‖² with a (P×(M+2)) @ ((M+2)×R) matmul."""
    a, b = torch.randn(2, 30, 4), torch.randn(2, 26, 4)
    wl = capture(Fn(torch.cdist), a, b, device=device)
    macs = 2 * 30 * 26 * (4 + 2)
    assert wl.totals().macs == macs
    norms = 2 * 2 * 30 * 4 + 2 * 2 * 26 * 4  # square + add per element of x and y
    scale = 2 * 30 * 4  # −2·x
    clamp_sqrt = 2 * 2 * 30 * 26
    assert wl.totals().flops == 2 * macs + norms + scale + clamp_sqrt


@DEVICES
def test_grid_sample(device: str) -> None:
    x, g = torch.randn(1, 2, 5, 5), torch.rand(1, 3, 4, 2) * 2 - 1
    out = 1 * 2 * 3 * 4

    def sample(mode: str) -> OpCost:
        fn = Fn(lambda t, grid: F.grid_sample(t, grid, mode=mode, align_corners=False))
        return row(capture(fn, x, g, device=device), "grid_sampler_2d")

    assert sample("bilinear").flops == out * 7  # 4 multiplies + 3 adds, as upsample_bilinear2d
    assert sample("bicubic").flops == out * 31  # 16 multiplies + 15 adds
    nearest = sample("nearest")
    assert (nearest.flops, nearest.kind) == (0, "memory")
    x3, g3 = torch.randn(1, 2, 5, 5, 5), torch.rand(1, 3, 4, 2, 3) * 2 - 1
    fn3 = Fn(lambda t, grid: F.grid_sample(t, grid, mode="bilinear", align_corners=False))
    assert row(capture(fn3, x3, g3, device=device), "grid_sampler_3d").flops == 2 * 3 * 4 * 2 * 15  # 8 taps


@DEVICES
def test_embedding_bag(device: str) -> None:
    idx, offsets = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9]), torch.tensor([0, 4])
    bag = nn.EmbeddingBag(10, 3, mode="sum")
    op = capture(bag, idx, offsets, device=device).ops[0]
    assert op.flops == (8 - 2) * 3  # 8 rows into 2 bags: 6 adds per dimension
    assert op.weight_bytes == 8 * 3 * 4  # only the gathered rows
    psw = torch.rand(8)
    assert capture(bag, idx, offsets, psw, device=device).ops[0].flops == (8 - 2) * 3 + 8 * 3  # + weight multiplies
    mean = nn.EmbeddingBag(10, 3, mode="mean")
    assert capture(mean, idx, offsets, device=device).ops[0].flops == (8 - 2) * 3 + 2 * 3  # + one divide per output


def test_slice_select_diagonal_backward_are_data_movement() -> None:
    w = nn.Parameter(torch.randn(4, 4))

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = w

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x @ self.w
            return y[:, 0].sum() + y[1:3].sum() + torch.diagonal(y).sum()

    wl = xpusim.analyze(M(), torch.randn(4, 4, requires_grad=True), mode="training", device="eager")
    assert wl.uncounted == {}
    moves = {o.op.split(".")[1]: o for o in wl.ops if o.phase == "backward" and o.kind == "memory"}
    for name in ("select_backward", "slice_backward", "diagonal_backward"):
        assert moves[name].flops == 0
        assert moves[name].bytes_written == 4 * 4 * 4  # zeros of the input's shape with the grad copied in


# ---------------------------------------------------------------- the registry itself


def test_every_registered_name_is_a_real_op() -> None:
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    namespaces = (torch.ops.aten, torch.ops.prim, torch.ops.torchvision)

    def real(name: str) -> bool:
        ns, sep, op = name.partition("::")  # namespaced: quantized::linear_dynamic
        return hasattr(getattr(torch.ops, ns), op) if sep else any(hasattr(n, name) for n in namespaces)

    unknown = [n for n in (*FORMULAS, *FREE_OPS) if not real(n)]
    assert unknown == []


@pytest.mark.parametrize(
    ("model", "inputs"),
    [
        (Fn(torch.fft.rfft), (torch.randn(2, 8),)),
        (Fn(torch.fft.irfft), (torch.randn(2, 5, dtype=CF),)),
        (Fn(torch.fft.fft), (torch.randn(2, 8, dtype=CF),)),
        (Fn(torch.cdist), (torch.randn(4, 3), torch.randn(5, 3))),
        (Fn(torch.pdist), (torch.randn(4, 3),)),
        (Fn(lambda x, g: F.grid_sample(x, g, align_corners=False)), (torch.randn(1, 1, 4, 4), torch.zeros(1, 2, 2, 2))),
        (nn.Bilinear(2, 3, 4), (torch.randn(2, 2), torch.randn(2, 3))),
        (nn.EmbeddingBag(6, 2), (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2]))),
        (Fn(torch.addbmm), (torch.randn(2, 2), torch.randn(3, 2, 4), torch.randn(3, 4, 2))),
    ],
)
def test_formerly_free_or_uncounted_ops_cost_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    for device in ("eager", "meta"):
        wl = capture(model, *inputs, device=device)
        assert wl.totals().flops > 0
        assert all(o.flops > 0 for o in wl.ops)
