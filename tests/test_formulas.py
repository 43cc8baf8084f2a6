"""Op-level formulas against hand arithmetic: convolution variants, matmul, recurrent, attention, bytes."""

import pytest
import torch
from torch import nn

import xpusim
from xpusim.workload.capture import FAST_META


def macs(model: nn.Module, *inputs: torch.Tensor, device: str = "meta") -> int:
    return xpusim.analyze(model, inputs, device=device).totals().macs


@pytest.mark.parametrize(
    ("conv", "x_shape", "expected"),
    [
        # Cout x Hout x Wout x (Cin/groups) x kh x kw
        (nn.Conv2d(16, 32, 1), (1, 16, 10, 10), 32 * 100 * 16),
        (nn.Conv2d(16, 32, 3, padding=1, groups=4), (1, 16, 10, 10), 32 * 100 * 4 * 9),
        (nn.Conv2d(16, 16, 3, padding=1, groups=16), (2, 16, 10, 10), 2 * 16 * 100 * 9),  # depthwise, batch 2
        (nn.Conv2d(3, 8, 3, stride=2), (1, 3, 9, 9), 8 * 4 * 4 * 3 * 9),  # (9-3)/2+1 = 4
        (nn.Conv2d(3, 8, 3, dilation=2), (1, 3, 9, 9), 8 * 5 * 5 * 3 * 9),  # effective kernel 5
        (nn.Conv1d(4, 6, 5), (1, 4, 20), 6 * 16 * 4 * 5),
        (nn.Conv3d(2, 4, 3), (1, 2, 5, 5, 5), 4 * 27 * 2 * 27),
        # transposed: every input pixel x Cout/groups x kernel
        (nn.ConvTranspose2d(8, 4, 3, stride=2), (1, 8, 5, 5), 25 * 8 * 4 * 9),
        (nn.ConvTranspose2d(8, 4, 3, groups=2), (1, 8, 5, 5), 25 * 8 * 2 * 9),
    ],
)
def test_convolution_macs(conv: nn.Module, x_shape: tuple[int, ...], expected: int) -> None:
    assert macs(conv, torch.randn(x_shape)) == expected
    assert macs(conv, torch.randn(x_shape), device="eager") == expected


def test_linear_costs_and_bytes() -> None:
    lin = nn.Linear(64, 32)
    wl = xpusim.analyze(lin, torch.randn(8, 64))
    (op,) = wl.ops
    assert op.macs == 8 * 64 * 32
    assert op.flops == 2 * 8 * 64 * 32 + 8 * 32  # + bias add per output
    assert op.params == 64 * 32 + 32
    assert op.weight_bytes == (64 * 32 + 32) * 4
    assert op.activation_bytes_read == 8 * 64 * 4
    assert op.bytes_written == 8 * 32 * 4
    assert op.intensity == pytest.approx(op.flops / ((64 * 32 + 32 + 8 * 64 + 8 * 32) * 4))


def test_bfloat16_halves_bytes_not_macs() -> None:
    lin = nn.Linear(64, 32)
    f32 = xpusim.analyze(lin, torch.randn(8, 64)).totals()
    bf16 = xpusim.analyze(lin, torch.randn(8, 64), dtype="bfloat16").totals()
    assert bf16.macs == f32.macs
    assert 2 * bf16.bytes_read == f32.bytes_read
    assert 2 * bf16.bytes_written == f32.bytes_written


def test_batched_matmul_and_einsum() -> None:
    class M(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bij,bjk->bik", a, b) + a @ b

    assert macs(M(), torch.randn(3, 4, 5), torch.randn(3, 5, 6)) == 2 * 3 * 4 * 5 * 6


@pytest.mark.parametrize("device", ["meta", "eager"])
def test_lstm_over_whole_sequence(device: str) -> None:
    """Each step: 4 gates x H x (I + H) per layer; the sequence length is not ignored."""
    lstm = nn.LSTM(16, 32, num_layers=2)
    t, b = 7, 3
    expected = t * b * 4 * 32 * (16 + 32) + t * b * 4 * 32 * (32 + 32)
    assert macs(lstm, torch.randn(t, b, 16), device=device) == expected


@pytest.mark.parametrize("device", ["meta", "eager"])
def test_bidirectional_gru_and_rnn(device: str) -> None:
    gru = nn.GRU(16, 32, batch_first=True, bidirectional=True)
    assert macs(gru, torch.randn(3, 5, 16), device=device) == 2 * 5 * 3 * 3 * 32 * (16 + 32)
    rnn = nn.RNN(8, 12)
    assert macs(rnn, torch.randn(4, 2, 8), device=device) == 4 * 2 * 12 * (8 + 12)


class SDPA(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return nn.functional.scaled_dot_product_attention(q, k, v)


def test_fused_attention_matches_math_path() -> None:
    """CPU flash kernel (eager) and the math path (meta) both count B·H·L·S·(E + Ev)."""
    q, k, v = torch.randn(2, 4, 64, 32), torch.randn(2, 4, 48, 32), torch.randn(2, 4, 48, 32)
    fused = xpusim.analyze(SDPA(), (q, k, v), device="eager")
    assert [o.op for o in fused.ops] == ["aten._scaled_dot_product_flash_attention_for_cpu.default"]
    expected = 2 * 4 * 64 * 48 * (32 + 32)
    assert fused.totals().macs == expected
    math_path = xpusim.analyze(SDPA(), (q, k, v)).totals()
    assert math_path.macs == expected
    # The math path scales q and k by sqrt(scale) (one multiply per q and k element); the fused count scales
    # each score once. Everything else (2 per MAC, softmax 5 per score) is the same.
    scale_math, scale_fused = 2 * 4 * (64 + 48) * 32, 2 * 4 * 64 * 48
    assert math_path.flops - fused.totals().flops == scale_math - scale_fused
    # The fused kernel never writes the 64x48 score matrix to memory: it moves far fewer bytes.
    assert fused.totals().bytes_read == (64 + 48 + 48) * 32 * 8 * 4
    assert math_path.bytes_read > 2 * fused.totals().bytes_read
    # value head size differing from the query's (the flash kernel declines; the math path runs)
    v16 = torch.randn(2, 4, 48, 16)
    assert xpusim.analyze(SDPA(), (q, k, v16), device="eager").totals().macs == 2 * 4 * 64 * 48 * (32 + 16)


def test_fused_attention_backward_recomputes_scores() -> None:
    q = torch.randn(1, 2, 32, 16, requires_grad=True)
    wl = xpusim.analyze(SDPA(), (q, q, q), device="eager", mode="training")
    fwd, bwd = wl.totals("forward").macs, wl.totals("backward").macs
    assert fwd == 2 * 32 * 32 * 32 and bwd == 5 * 2 * 32 * 32 * 16  # 5 matmuls in the fused backward


def test_embedding_reads_only_gathered_rows() -> None:
    emb = nn.Embedding(50_000, 64)
    wl = xpusim.analyze(emb, torch.zeros(2, 10, dtype=torch.long))
    (op,) = wl.ops
    assert op.weight_bytes == 20 * 64 * 4  # 20 looked-up rows, not the 12.8 MB table
    assert op.activation_bytes_read == 20 * 8
    assert op.params == 50_000 * 64


def test_in_place_and_view_ops() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.view(4, 25).t()
            return torch.relu_(y.contiguous())

    wl = xpusim.analyze(M(), torch.randn(100))
    assert wl.uncounted == {}
    relu = next(o for o in wl.ops if o.op == "aten.relu_.default")
    assert relu.flops == 100 and relu.bytes_written == 400 and relu.activation_bytes_read == 400
    assert wl.free_ops["view"] == 1 and wl.free_ops["t"] == 1


def test_uncounted_op_is_reported_by_name() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.qr(x).Q

    wl = xpusim.analyze(M(), torch.randn(8, 8), device="eager")
    assert wl.uncounted == {"aten.linalg_qr.default": 1}


@pytest.mark.parametrize("name", sorted(set(FAST_META) - {"convolution"}))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_meta_outputs_equal_meta_kernels(name: str, dtype: torch.dtype, channels_last: bool) -> None:
    """Our shortcut output builders must produce exactly what PyTorch's meta kernels do."""
    x = torch.empty(2, 8, 5, 5, device="meta", dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.empty(8, device="meta", dtype=dtype)
    op = getattr(torch.ops.aten, name).default
    if "batch_norm" in name:
        args: tuple = (x, w, w, w, w, 0.1, 1e-5) if name.endswith("no_training") else (x, w, w, w, w, False, 0.1, 1e-5)
    else:
        args = (x,)
    ref = op(*args)
    ours = FAST_META[name](args)
    refs = ref if isinstance(ref, tuple) else (ref,)
    mine = ours if isinstance(ours, tuple) else (ours,)
    assert [(t.shape, t.stride(), t.dtype) for t in mine] == [(t.shape, t.stride(), t.dtype) for t in refs]


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "padding", "dilation", "transposed", "output_padding", "groups"),
    [
        ((2, 8, 15, 15), (16, 8, 3, 3), [1, 1], [1, 1], [1, 1], False, [0, 0], 1),
        ((1, 8, 15, 16), (16, 2, 3, 5), [2, 3], [0, 2], [2, 1], False, [0, 0], 4),
        ((1, 8, 9, 9), (8, 4, 3, 3), [2, 2], [1, 1], [1, 1], True, [1, 0], 2),
        ((1, 4, 20), (6, 4, 5), [2], [1], [1], False, [0], 1),
        ((1, 2, 5, 6, 7), (4, 2, 3, 3, 3), [1, 1, 1], [1, 0, 1], [1, 1, 1], False, [0, 0, 0], 1),
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed_view"])
def test_fast_conv_meta_equals_meta_kernel(x_shape: tuple, w_shape: tuple, stride: list, padding: list,
                                           dilation: list, transposed: bool, output_padding: list, groups: int,
                                           layout: str) -> None:
    x = torch.empty(x_shape, device="meta")
    if layout == "channels_last" and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    elif layout == "transposed_view":
        x = torch.empty(x_shape[::-1], device="meta").permute(*reversed(range(len(x_shape))))
    args = (x, torch.empty(w_shape, device="meta"), None, stride, padding, dilation, transposed, output_padding, groups)
    ref = torch.ops.aten.convolution.default(*args)
    ours = FAST_META["convolution"](args)
    assert (ours.shape, ours.stride(), ours.dtype) == (ref.shape, ref.stride(), ref.dtype)


def test_model_not_modified_by_meta_capture() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xpusim.analyze(model, torch.randn(3, 4), mode="training")
    assert model.training
    assert all(v.device.type == "cpu" for v in model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_broadcast_parameter_counts_its_own_elements() -> None:
    """ViT's class token (1, 1, 768) is expanded over the batch before the cat: 768 parameters, not 8·768."""
    wl = xpusim.analyze("vit_b_16", batch=8)
    cat = next(o for o in wl.ops if o.op == "aten.cat.default")
    assert cat.params == 768 and cat.weight_bytes == 768 * 4


ATEN = torch.ops.aten
GPU_ATTENTION_KERNELS = {
    # (B, H, L, E) layout
    "flash": lambda q, k, v: ATEN._scaled_dot_product_flash_attention(q, k, v)[0],
    "efficient": lambda q, k, v: ATEN._scaled_dot_product_efficient_attention(q, k, v, None, True)[0],
    "cudnn": lambda q, k, v: ATEN._scaled_dot_product_cudnn_attention(q, k, v, None, True)[0],
    # (B, L, H, E) layout of the low-level kernels
    "flash_forward": lambda q, k, v: ATEN._flash_attention_forward(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, None, 64, 48, 0.0, False, False)[0],
    "efficient_forward": lambda q, k, v: ATEN._efficient_attention_forward(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, None, None, None, None, 0.0, 0)[0],
}


class Kernel(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return GPU_ATTENTION_KERNELS[self.name](q, k, v)


@pytest.mark.parametrize("name", sorted(GPU_ATTENTION_KERNELS))
def test_gpu_attention_kernels_on_meta(name: str) -> None:
    """The CUDA kernels PyTorch dispatches to on GPUs, called on meta tensors (no GPU here): same hand count."""
    q, k, v = (torch.empty(2, 4, n, 32, device="meta") for n in (64, 48, 48))
    wl = xpusim.analyze(Kernel(name), (q, k, v))
    assert wl.uncounted == {}
    assert [o.kind for o in wl.ops if o.macs] == ["attention"]
    assert wl.totals().macs == 2 * 4 * 64 * 48 * (32 + 32)


@pytest.mark.parametrize("name", ["flash", "efficient", "cudnn"])
def test_gpu_attention_backward_on_meta(name: str) -> None:
    q, k, v = (torch.empty(2, 4, 64, 32, device="meta", requires_grad=True) for _ in range(3))
    wl = xpusim.analyze(Kernel(name), (q, k, v), mode="training")
    assert wl.uncounted == {}
    assert wl.totals("backward").macs == 5 * 2 * 4 * 64 * 64 * 32  # recompute Q·Kᵀ + 4 gradient matmuls


def test_cudnn_rnn_on_meta() -> None:
    """cuDNN's all-layers LSTM kernel (GPU only), called on meta: T·B·4H·(I + H)."""
    w = [torch.empty(4 * 32, 16, device="meta"), torch.empty(4 * 32, 32, device="meta")]
    h0 = torch.empty(1, 3, 32, device="meta")

    class CudnnLSTM(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return ATEN._cudnn_rnn(x, w, 2, None, h0, h0, 2, 32, 0, 1, False, 0.0, False, False, [], None)[0]

    wl = xpusim.analyze(CudnnLSTM(), torch.empty(5, 3, 16, device="meta"))
    assert wl.totals().macs == 5 * 3 * 4 * 32 * (16 + 32)
