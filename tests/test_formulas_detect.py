"""Formulas for detection ops (torchvision nms, roi_align), unique, packed sequences, sparse matmuls and the
backward of cdist/pdist/grid_sample/EmbeddingBag, against hand counts written out here. Eager only: these ops
are data-dependent or take real sparse tensors."""

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import xpusim
from conftest import Fn
from xpusim.workload.model import OpCost, Workload

torch.set_num_threads(1)


def capture(model: nn.Module, *inputs: Any, mode: str = "inference") -> Workload:
    wl = xpusim.analyze(model, inputs, device="eager", mode=mode)
    assert wl.uncounted == {}
    return wl


def rows(wl: Workload, short: str) -> list[OpCost]:
    return [o for o in wl.ops if o.op.split(".")[1] == short]


def row(wl: Workload, short: str) -> OpCost:
    (op,) = rows(wl, short)
    return op


# ---------------------------------------------------------------- torchvision detection ops


def test_nms_worst_case_pairs() -> None:
    torch.manual_seed(0)
    n = 10
    xy = torch.rand(n, 2) * 10
    boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2) * 5], dim=1)
    wl = capture(Fn(lambda b, s: torchvision.ops.nms(b, s, 0.5)), boxes, torch.rand(n))
    op = row(wl, "nms")
    assert op.op == "torchvision.nms.default"
    # every pair once: 45 IoUs × (4 max/min + 4 sub/clamp + 1 mul + 2 union + 1 div + 1 compare = 13),
    # 10 areas × 3, score sort 10·log2(10) = 33.2 → 33
    assert op.flops == 45 * 13 + 10 * 3 + 33
    assert op.macs == 0


@pytest.mark.parametrize(("sampling_ratio", "samples"), [(2, 4), (3, 9), (-1, 4), (0, 4)])
def test_roi_align(sampling_ratio: int, samples: int) -> None:
    feat = torch.randn(1, 3, 16, 16)
    rois = torch.tensor([[0, 0.0, 0.0, 8.0, 8.0], [0, 2.0, 2.0, 10.0, 12.0]])
    fn = Fn(lambda f, r: torchvision.ops.roi_align(f, r, (4, 4), 1.0, sampling_ratio, aligned=True))
    op = row(capture(fn, feat, rois), "roi_align")
    assert op.op == "torchvision.roi_align.default"
    outputs = 2 * 3 * 4 * 4  # K rois × C × pooled
    # per output: S bilinear samples × 7 (4 mul + 3 add) + average (S − 1 adds + 1 divide); adaptive (≤ 0): 2×2
    assert op.flops == outputs * (7 * samples + samples)


def test_roi_align_backward() -> None:
    feat = torch.randn(1, 3, 16, 16, requires_grad=True)
    rois = torch.tensor([[0, 0.0, 0.0, 8.0, 8.0], [0, 2.0, 2.0, 10.0, 12.0]])
    fn = Fn(lambda f, r: torchvision.ops.roi_align(f, r, (4, 4), 1.0, 2))
    op = row(capture(fn, feat, rois, mode="training"), "_roi_align_backward")
    assert op.phase == "backward"
    # per grad element: 1 divide + 4 samples × 4 taps × (multiply + add)
    assert op.flops == 2 * 3 * 4 * 4 * (4 * 4 * 2 + 1)


# ---------------------------------------------------------------- unique


def test_unique_sort_based() -> None:
    x = torch.randint(0, 5, (16,))
    op = row(capture(Fn(lambda t: torch.unique(t, return_inverse=True, return_counts=True)), x), "_unique2")
    assert op.flops == 16 * 4 + 16  # sort 16·log2(16), then a neighbour compare per element

    m = torch.randint(0, 2, (8, 3))
    op = row(capture(Fn(lambda t: torch.unique(t, dim=0)), m), "unique_dim")
    assert op.flops == 8 * 3 * 3 + 24  # 8 rows sorted (8·log2 8 compares of 3 elements), + 24 neighbour compares

    op = row(capture(Fn(torch.unique_consecutive), x), "unique_consecutive")
    assert op.flops == 16


# ---------------------------------------------------------------- packed sequences


def test_pack_padded_sequence_lstm() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6)

    def run(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = lstm(nn.utils.rnn.pack_padded_sequence(x, lengths))
        return nn.utils.rnn.pad_packed_sequence(out)[0]

    x, lengths = torch.randn(5, 3, 4), torch.tensor([5, 3, 2])
    wl = capture(Fn(run), x, lengths)
    pack = row(wl, "_pack_padded_sequence")
    assert (pack.kind, pack.flops) == ("memory", 0)
    assert pack.bytes_read == x.numel() * 4 + 3 * 8  # padded input + int64 lengths
    assert pack.bytes_written == 10 * 4 * 4 + 5 * 8  # 10 real tokens × 4 features, batch_sizes (5 steps)
    # 10 real tokens (5 + 3 + 2), each through W_ih (24×4) and W_hh (24×6)
    assert wl.totals().macs == 10 * (24 * 4 + 24 * 6)


# ---------------------------------------------------------------- sparse matmuls


def _coo() -> torch.Tensor:
    dense = torch.zeros(4, 6)
    dense[0, 1], dense[1, 0], dense[1, 5], dense[2, 2], dense[3, 3] = 1.0, 2.0, 3.0, 4.0, 5.0
    return dense.to_sparse()  # nnz = 5


def test_sparse_mm_counts_nonzeros() -> None:
    sp, d = _coo(), torch.randn(6, 3)
    sparse_bytes = 5 * 4 + 2 * 5 * 8  # values + (2, nnz) int64 indices

    op = row(capture(Fn(torch.sparse.mm), sp, d), "_sparse_addmm")
    assert op.macs == 5 * 3  # nnz · N, not 4·6·3
    assert op.flops == 2 * 5 * 3  # beta = 0: no C add
    assert op.bytes_read == 4 * 3 * 4 + sparse_bytes + 6 * 3 * 4  # C (zeros) + sparse A + dense B

    op = row(capture(Fn(torch.addmm), torch.randn(4, 3), sp, d), "addmm")
    assert (op.macs, op.flops) == (5 * 3, 2 * 5 * 3 + 4 * 3)
    assert op.bytes_read == 4 * 3 * 4 + sparse_bytes + 6 * 3 * 4

    op = row(capture(Fn(torch.sparse.addmm), torch.randn(4, 3), sp, d), "_sparse_addmm")
    assert (op.macs, op.flops) == (5 * 3, 2 * 5 * 3 + 4 * 3)

    op = row(capture(Fn(torch.mm), sp, d), "mm")
    assert (op.macs, op.flops) == (5 * 3, 2 * 5 * 3)

    op = row(capture(Fn(torch.mm), torch.randn(2, 4), sp), "mm")  # dense @ sparse: M · nnz
    assert (op.macs, op.flops) == (2 * 5, 2 * 2 * 5)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
def test_sparse_csr_mm() -> None:
    a = _coo().to_sparse_csr()
    op = row(capture(Fn(torch.sparse.mm), a, torch.randn(6, 3)), "_sparse_addmm")
    assert op.macs == 5 * 3  # nnz x N
    # values (5 float32) + crow (rows + 1 int64) + col (5 int64), not rows x cols x 4
    assert op.activation_bytes_read >= 5 * 4 + (a.shape[0] + 1) * 8 + 5 * 8


# ---------------------------------------------------------------- backward of distances and sampling


def test_cdist_pdist_backward() -> None:
    x1, x2 = torch.randn(5, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    wl = capture(Fn(torch.cdist), x1, x2, mode="training")
    per_pair = 3 * 3  # p = 2: 3 sub + 3 square + 2 add + sqrt
    assert row(wl, "_cdist_forward").flops == 20 * per_pair
    back = rows(wl, "_cdist_backward")
    assert [o.flops for o in back] == [20 * per_pair] * 2  # once for x1, once for x2 (swapped): 2× forward

    wl = capture(Fn(torch.pdist), torch.randn(5, 3, requires_grad=True), mode="training")
    assert row(wl, "_pdist_forward").flops == 10 * per_pair
    assert row(wl, "_pdist_backward").flops == 2 * 10 * per_pair  # each pair's gradient to both rows


@pytest.mark.parametrize(("grid_grad", "expected"), [(True, 2 * 18 * 7), (False, 18 * 7)])
def test_grid_sample_backward(grid_grad: bool, expected: int) -> None:
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    grid = (torch.rand(1, 3, 3, 2) * 2 - 1).requires_grad_(grid_grad)
    wl = capture(Fn(lambda t, g: F.grid_sample(t, g, align_corners=False)), x, grid, mode="training")
    assert row(wl, "grid_sampler_2d").flops == 18 * 7  # 1·2·3·3 outputs, bilinear 7
    assert row(wl, "grid_sampler_2d_backward").flops == expected  # forward count per requested gradient

    x3 = torch.randn(1, 1, 4, 4, 4, requires_grad=True)
    g3 = (torch.rand(1, 2, 2, 2, 3) * 2 - 1).requires_grad_()
    wl = capture(Fn(lambda t, g: F.grid_sample(t, g, align_corners=False)), x3, g3, mode="training")
    assert row(wl, "grid_sampler_3d_backward").flops == 2 * 8 * 15  # trilinear 15, both gradients


# ---------------------------------------------------------------- EmbeddingBag backward


def test_embedding_bag_backward() -> None:
    idx, offsets = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 2])
    wl = capture(nn.EmbeddingBag(10, 4, mode="sum"), idx, offsets, mode="training")
    assert row(wl, "_embedding_bag_backward").flops == 4 * 4  # 4 indices × D adds

    wl = capture(nn.EmbeddingBag(10, 4, mode="mean"), idx, offsets, mode="training")
    assert row(wl, "_embedding_bag_backward").flops == 2 * 4 * 4  # + a 1/bag-size multiply per index·D

    wl = capture(nn.EmbeddingBag(10, 4, mode="max"), idx, offsets, mode="training")
    assert row(wl, "_embedding_bag_backward").flops == 2 * 4  # bags × D, to the argmax rows

    class Weighted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(10, 4, mode="sum")

        def forward(self, i: torch.Tensor, o: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return self.bag(i, o, per_sample_weights=w)

    psw = torch.rand(4, requires_grad=True)
    wl = capture(Weighted(), idx, offsets, psw, mode="training")
    assert row(wl, "_embedding_bag_backward").flops == 2 * 4 * 4  # scaled rows
    op = row(wl, "_embedding_bag_per_sample_weights_backward")
    assert op.flops == 2 * 4 * 4  # per index a D-dot of grad row and table row
    assert op.weight_bytes == 4 * 4 * 4  # only the 4 gathered rows of the 10-row table
    assert op.activation_bytes_read == 2 * 4 * 4 + 4 * 8 + 2 * 8  # grad (2 bags × 4), indices, offsets (int64)


def test_sort_compares_rounding() -> None:
    from xpusim.workload.formulas import sort_compares

    assert [sort_compares(n) for n in (0, 1, 2, 8, 10)] == [0, 0, 2, 24, round(10 * math.log2(10))]


# ---------------------------------------------------------------- quantized (torch.ao) layers
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dynamic_int8_linear_counts_its_packed_gemm() -> None:
    import warnings

    import xpusim

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    wl = xpusim.analyze(q, torch.randn(4, 64))  # meta has no kernel for quantized ops: auto runs it eagerly
    assert wl.uncounted == {} and wl.notes
    assert wl.totals().macs == 4 * 64 * 128 + 4 * 128 * 10  # batch x K x N per layer, by hand
    assert wl.params == 64 * 128 + 128 + 128 * 10 + 10  # the packed weights and biases
    # weights at their real width: int8 values (1 B) + float32 biases (per-tensor scales are not tensors here)
    assert wl.totals().weight_bytes == (64 * 128 + 128 * 10) * 1 + (128 + 10) * 4


def test_static_int8_conv_counts_the_float_convs_macs() -> None:
    import warnings

    from torch.ao.quantization import DeQuantStub, QuantStub, convert, get_default_qconfig, prepare

    import xpusim

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant, self.conv, self.dequant = QuantStub(), nn.Conv2d(3, 8, 3), DeQuantStub()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dequant(self.conv(self.quant(x)))

    net = Net().eval()
    net.qconfig = get_default_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(net)
        prepared(torch.randn(2, 3, 10, 10))
        q = convert(prepared)
    wl = xpusim.analyze(q, torch.randn(2, 3, 10, 10))
    assert wl.uncounted == {}
    conv = next(o for o in wl.ops if o.op.startswith("quantized.conv2d"))
    assert conv.macs == 2 * 8 * 8 * 8 * 3 * 3 * 3  # N x Cout x 8 x 8 outputs x Cin x 3 x 3
    assert wl.params == 8 * 3 * 3 * 3 + 8
