"""Cost formulas per aten op: small pure functions of the op's arguments and outputs.

Conventions (the numbers users most often get confused about):

* **MACs** count multiply-accumulates of matrix-engine work only: matmul family, convolution, attention
  score and value products, recurrent-cell matmuls. One MAC = one multiply + one add.
* **FLOPs** count every floating-point operation: ``2 * MACs`` plus the per-element counts below for bias
  adds, normalization, softmax, activations, pooling, reductions. A special function (exp, log, tanh, erf,
  sqrt, reciprocal) counts as **one** FLOP, as a GPU's special-function unit issues it as one instruction.
* **Complex** matmuls (first matrix operand complex) count 4 real MACs per complex MAC, so 8 real FLOPs
  (`COMPLEX_REAL_MACS_PER_MAC`; 3M/Gauss algorithms are not assumed). Complex add/sub/mul count 2/2/6 FLOPs
  per element (`COMPLEX_POINTWISE_FLOPS`).
* Bytes are computed by the capture from the real tensor arguments, not here, except where a formula says
  which tensors an op really touches (embedding reads only the gathered rows; ``copy_`` does not read its
  destination).

Each formula returns a `Cost`; an op without a formula is reported by name and count as *uncounted*.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from xpusim.workload.flop_counts import (
    COMPLEX_POINTWISE_FLOPS,
    COMPLEX_REAL_MACS_PER_MAC,
    LAYER_NORM_FLOPS_PER_ELEMENT,
    POINTWISE_FLOPS,
    RMS_NORM_FLOPS_PER_ELEMENT,
    SCORE_SCALE_FLOPS_PER_ELEMENT,
    SOFTMAX_FLOPS_PER_ELEMENT,
)

Tensor = torch.Tensor


@dataclass(frozen=True, slots=True)
class Cost:
    """What a formula knows about one op; bytes default to "every tensor argument read, every output written"."""

    kind: str
    macs: int = 0
    flops: int = 0
    reads: tuple[Tensor, ...] | None = None
    """Tensors really read, when not all tensor arguments are (None = all of them)."""
    read_bytes_override: tuple[tuple[Tensor, int], ...] | None = None
    """(tensor, bytes) pairs replacing the full-tensor byte count for tensors only partly read."""


Formula = Callable[[tuple[Any, ...], dict[str, Any], Any], Cost]

FORMULAS: dict[str, Formula] = {}
"""aten op packet name (``convolution``, ``mm``) -> formula. Overloads of one packet share a formula."""


def register(*names: str) -> Callable[[Formula], Formula]:
    def deco(fn: Formula) -> Formula:
        for name in names:
            FORMULAS[name] = fn
        return fn

    return deco


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, Tensor):
                return o
    return None


def out_numel(out: Any) -> int:
    t = first_tensor(out)
    return t.numel() if t is not None else 0


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    """Argument ``i`` (or ``name``): dispatch may drop trailing arguments left at their schema default."""
    if i < len(args):
        return args[i]
    return kwargs.get(name, default)


def cplx(t: Any) -> int:
    """Real MACs per MAC of a product whose first matrix operand is ``t``: 4 if complex, else 1."""
    return COMPLEX_REAL_MACS_PER_MAC if isinstance(t, Tensor) and t.is_complex() else 1


# ---------------------------------------------------------------- matmul family


def _mm_macs(a: Tensor, b: Tensor) -> tuple[int, int]:
    """(MACs, output elements) of a (..., M, K) @ (..., K, N) product with batch dims already matching."""
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    batch = numel(a.shape[:-2])
    return batch * m * k * n, batch * m * n


@register("mm", "bmm", "_int_mm", "matmul")
def mm_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(B,)M×K @ K×N: B·M·K·N MACs, 2 FLOPs each (×4 MACs for complex)."""
    a, b = args[0], args[1]
    if a.dim() == 1 or b.dim() == 1:  # aten.matmul with vectors (rarely reaches dispatch)
        macs = out_numel(out) * a.shape[-1] * cplx(a)
        return Cost("matmul", macs, 2 * macs)
    macs, _ = _mm_macs(a, b)
    macs *= cplx(a)
    return Cost("matmul", macs, 2 * macs)


@register("addmm", "baddbmm", "addbmm", "_addmm_activation")
def addmm_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """beta·C + A@B: the product's MACs; FLOPs add one per output element for the bias/C add.

    ``addbmm`` sums the b products into one M×N output: b·M·K·N MACs (the sum over the batch is accumulation),
    one C add per output element. Complex: ×4 MACs, 2 FLOPs per C add.
    NB: scaling by alpha/beta != 1 and the fused activation of ``_addmm_activation`` are not counted.
    """
    macs, _ = _mm_macs(args[1], args[2])
    k = cplx(args[1])
    return Cost("matmul", macs * k, 2 * macs * k + out_numel(out) * (2 if k > 1 else 1))


@register("mv", "addmv")
def mv_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    mat = args[0] if args[0].dim() == 2 else args[1]
    k = cplx(mat)
    macs = numel(mat.shape) * k
    extra = out_numel(out) * (2 if k > 1 else 1) if mat is args[1] else 0
    return Cost("matmul", macs, 2 * macs + extra)


@register("dot", "vdot")
def dot_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """N MACs (×4 complex). NB: ``vdot``'s conjugation is a sign flip, not counted."""
    macs = args[0].numel() * cplx(args[0])
    return Cost("matmul", macs, 2 * macs)


@register("_scaled_mm")
def scaled_mm_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """FP8 GEMM with scales: the product's MACs. NB: the per-tensor scale multiplies are not counted."""
    macs, _ = _mm_macs(args[0], args[1])
    return Cost("matmul", macs, 2 * macs)


# ---------------------------------------------------------------- convolution


def conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool) -> int:
    """MACs of a (grouped, dilated, strided) convolution of any spatial rank.

    Forward: every output element needs Cin/groups · prod(kernel) MACs; weight is (Cout, Cin/g, *k).
    Transposed: every *input* element is scattered through Cout/g · prod(kernel) MACs; weight is (Cin, Cout/g, *k).
    """
    per = w_shape[1] * numel(w_shape[2:])
    return (numel(x_shape) if transposed else numel(out_shape)) * per


@register("convolution", "_convolution")
def conv_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Convolution 1-D/2-D/3-D, grouped, depthwise, transposed; bias adds one FLOP per output element.

    Complex: ×4 MACs, as a matmul. NB: ``nn.Conv*d`` never sends complex tensors here: ``conv2d`` splits them
    into 3 real convolutions and adds (Gauss's trick) before dispatch, and those are what is counted.
    """
    x, w, bias = args[0], args[1], args[2]
    transposed = bool(args[6])
    k = cplx(x)
    macs = conv_macs(x.shape, w.shape, out.shape, transposed) * k
    return Cost("conv", macs, 2 * macs + (out.numel() * (2 if k > 1 else 1) if bias is not None else 0))


@register("convolution_backward")
def conv_backward_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """grad_input and grad_weight each cost the forward's MACs; grad_bias one add per grad_output element.

    (Grad input is the transposed convolution of grad_output; grad weight correlates input with grad_output.)
    """
    grad_out, x, w = args[0], args[1], args[2]
    transposed = bool(args[7])
    mask = args[10]
    fwd = conv_macs(x.shape, w.shape, grad_out.shape, transposed)
    macs = fwd * (int(bool(mask[0])) + int(bool(mask[1])))
    return Cost("conv", macs, 2 * macs + (grad_out.numel() if mask[2] else 0))


# ---------------------------------------------------------------- attention

ATTN_BWD_FLOPS_PER_SCORE = 8
"""Backward per score element: recompute exp (2), dP·P and row-sum for dS (4), rescale (2)."""


def _attn_cost(b: int, h: int, lq: int, lk: int, e: int, ev: int) -> Cost:
    """softmax(Q·Kᵀ·scale)·V over the full Lq×Lk score matrix.

    NB: causal masking is *not* credited (kernels may skip about half the tiles); counts match the math path.
    """
    scores = b * h * lq * lk
    macs = scores * (e + ev)
    return Cost("attention", macs, 2 * macs + scores * (SOFTMAX_FLOPS_PER_ELEMENT + SCORE_SCALE_FLOPS_PER_ELEMENT))


def _attn_bwd_cost(b: int, h: int, lq: int, lk: int, e: int, ev: int) -> Cost:
    """Fused attention backward: recompute Q·Kᵀ, then dV = PᵀdO, dP = dO·Vᵀ, dQ = dS·K, dK = dSᵀ·Q.

    That is 5 matmuls (2.5× the forward's 2) because fused kernels do not store P.
    """
    scores = b * h * lq * lk
    macs = scores * (3 * e + 2 * ev)
    return Cost("attention", macs, 2 * macs + scores * ATTN_BWD_FLOPS_PER_SCORE)


def _attention_formula(q_index: int, layout: str, backward: bool) -> Formula:
    """One formula per (argument position of q, tensor layout, direction) instead of four near-copies.

    ``layout`` is ``BHLE`` for the ``_scaled_dot_product_*`` ops (batch dims may be several or none) and ``BLHE``
    for the low-level ``_flash_attention_*`` / ``_efficient_attention_*`` kernels. Backward ops take grad_out first.
    """
    cost = _attn_bwd_cost if backward else _attn_cost

    def formula(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
        q, k, v = args[q_index], args[q_index + 1], args[q_index + 2]
        if layout == "BLHE":
            return cost(q.shape[0], q.shape[2], q.shape[1], k.shape[1], q.shape[3], v.shape[3])
        b = numel(q.shape[:-3]) if q.dim() > 3 else 1
        return cost(b, q.shape[-3], q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1])

    formula.__doc__ = f"Fused attention {'backward' if backward else 'forward'}, {layout} layout."
    return formula


_SDPA_KERNELS = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)
register(*_SDPA_KERNELS, "scaled_dot_product_attention")(_attention_formula(0, "BHLE", backward=False))
register(*(f"{n}_backward" for n in _SDPA_KERNELS))(_attention_formula(1, "BHLE", backward=True))
register("_flash_attention_forward", "_efficient_attention_forward")(_attention_formula(0, "BLHE", backward=False))
register("_flash_attention_backward", "_efficient_attention_backward")(_attention_formula(1, "BLHE", backward=True))


@register("_native_multi_head_attention")
def native_mha_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """`nn.MultiheadAttention`'s fused inference fast path: in-projection, attention, out-projection.

    (query, key, value, embed_dim, num_heads, qkv_weight (3E, E), qkv_bias, proj_weight (E, E), proj_bias, ...),
    inputs (B, L, E). NB: averaging of returned attention weights is not counted.
    """
    q, k = args[0], args[1]
    e, h = int(args[3]), int(args[4])
    b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    proj_in = b * lq * e * e + 2 * b * lk * e * e
    proj_out = b * lq * e * e
    attn = _attn_cost(b, h, lq, lk, e // h, e // h)
    macs = proj_in + proj_out + attn.macs
    biases = b * lq * e + 2 * b * lk * e + b * lq * e
    return Cost("attention", macs, 2 * (proj_in + proj_out) + attn.flops + biases)




@register("_transformer_encoder_layer_fwd")
def encoder_layer_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """`nn.TransformerEncoderLayer`'s fused inference fast path: a whole layer in one op.

    Per token: QKV 3E², attention, out-projection E², FFN 2·E·F; two LayerNorms, two residual adds,
    the activation (ReLU 1, GELU 5 FLOPs per element) and every bias.
    """
    src = args[0]
    e, h = int(args[1]), int(args[2])
    use_gelu = bool(args[7])
    ffn_w1 = args[14]
    f = ffn_w1.shape[0]
    if src.is_nested:  # padded batches run as nested tensors: cost the real tokens
        lengths = [int(t.shape[0]) for t in src.unbind()]
        tokens, parts = sum(lengths), [(1, n) for n in lengths]
    else:
        tokens, parts = numel(src.shape[:-1]), [(numel(src.shape[:-2]), src.shape[-2])]
    dense_macs = tokens * (4 * e * e + 2 * e * f)
    attn = [_attn_cost(bb, h, s, s, e // h, e // h) for bb, s in parts]
    macs = dense_macs + sum(a.macs for a in attn)
    act = POINTWISE_FLOPS["gelu" if use_gelu else "relu"]
    elementwise = tokens * (
        3 * e + e + f + e  # biases: qkv, out-proj, ffn1, ffn2
        + 2 * LAYER_NORM_FLOPS_PER_ELEMENT * e
        + act * f
        + 2 * e  # residual adds
    )
    return Cost("fused", macs, 2 * dense_macs + sum(a.flops for a in attn) + elementwise)


# ---------------------------------------------------------------- recurrent

RNN_CELL_FLOPS_PER_HIDDEN = {0: 2, 1: 2, 2: 19, 3: 14}
"""Gate math per hidden unit per step (mode ids as in ATen: 0 RNN_RELU, 1 RNN_TANH, 2 LSTM, 3 GRU).
LSTM: 4 gate adds, 3 sigmoids (3 each), tanh ×2, 3 multiplies, 1 add. GRU: 3 gate adds, 2 sigmoids, tanh,
4 multiply/adds for r⊙h and the (1−z) blend. RNN: gate add and activation."""


def _rnn_cost(t_steps: int, batch: int, weights: Sequence[Tensor], hidden: int, mode: int, layers_dirs: int) -> Cost:
    """Over the whole sequence: every step multiplies by W_ih (G·H × I) and W_hh (G·H × H) of each layer/direction."""
    mats = [w for w in weights if w is not None and w.dim() == 2]
    macs = t_steps * batch * sum(w.numel() for w in mats)
    biases = t_steps * batch * sum(w.numel() for w in weights if w is not None and w.dim() == 1)
    gates = t_steps * batch * hidden * layers_dirs * RNN_CELL_FLOPS_PER_HIDDEN.get(mode, 2)
    return Cost("rnn", macs, 2 * macs + biases + gates)


@register("mkldnn_rnn_layer")
def mkldnn_rnn_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """oneDNN RNN layer (CPU LSTM path): one layer, one direction. Input (T, B, I) or (B, T, I)."""
    x = args[0]
    batch_first = bool(args[14])
    t_steps, batch = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    weights = list(args[1:5]) if args[12] else list(args[1:3])
    return _rnn_cost(t_steps, batch, weights, int(args[10]), int(args[9]), 1)


@register("_cudnn_rnn")
def cudnn_rnn_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """cuDNN RNN over all layers and directions; the weight list holds every W_ih, W_hh (and biases)."""
    x = args[0]
    mode, hidden, layers = int(args[6]), int(args[7]), int(args[9])
    batch_first, bidir = bool(args[10]), bool(args[13])
    t_steps, batch = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    if x.dim() == 2:  # packed sequence: (sum of lengths, I)
        t_steps, batch = x.shape[0], 1
    return _rnn_cost(t_steps, batch, list(args[1]), hidden, mode, layers * (2 if bidir else 1))


# ---------------------------------------------------------------- normalization and softmax


def _per_element(kind: str, flops_per_element: float, which: str = "out") -> Formula:
    def formula(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
        n = args[0].numel() if which == "in" else out_numel(out)
        return Cost(kind, 0, round(n * flops_per_element))

    formula.__doc__ = f"{flops_per_element} FLOPs per {'input' if which == 'in' else 'output'} element ({kind})."
    return formula


BATCH_NORM_INFERENCE_FLOPS_PER_ELEMENT = 4
"""(x − mean) · invstd · γ + β with running statistics. NB: frameworks that fold BN into the conv do 0."""
BATCH_NORM_TRAINING_FLOPS_PER_ELEMENT = 8
"""Batch statistics (mean 1, variance 3) plus normalize and affine (4)."""
NORM_BACKWARD_FLOPS_PER_ELEMENT = 10
"""Normalization backward: two reductions (dγ, dβ and the two mean terms of dx) and the dx combination."""


@register("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional", "batch_norm")
def batch_norm_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Batch norm; training (batch statistics) or inference (running statistics).

    ``_native_batch_norm_legit`` has a no-running-stats overload (input, w, b, training, ...).
    """
    training = next((a for a in args[3:7] if isinstance(a, bool)), False)
    per = BATCH_NORM_TRAINING_FLOPS_PER_ELEMENT if training else BATCH_NORM_INFERENCE_FLOPS_PER_ELEMENT
    return Cost("norm", 0, per * args[0].numel())


register("_native_batch_norm_legit_no_training")(_per_element("norm", BATCH_NORM_INFERENCE_FLOPS_PER_ELEMENT, "in"))
register("native_layer_norm", "native_group_norm", "layer_norm", "group_norm", "instance_norm")(
    _per_element("norm", LAYER_NORM_FLOPS_PER_ELEMENT, "in")
)
register("_fused_rms_norm", "rms_norm")(_per_element("norm", RMS_NORM_FLOPS_PER_ELEMENT, "in"))
register(
    "native_batch_norm_backward",
    "native_layer_norm_backward",
    "native_group_norm_backward",
    "_fused_rms_norm_backward",
    "batch_norm_backward",
)(_per_element("norm", NORM_BACKWARD_FLOPS_PER_ELEMENT, "in"))
register("_softmax", "_log_softmax", "_safe_softmax", "softmax", "log_softmax")(
    _per_element("softmax", SOFTMAX_FLOPS_PER_ELEMENT, "in")
)
register("_softmax_backward_data", "_log_softmax_backward_data")(_per_element("softmax", 3, "in"))

# ---------------------------------------------------------------- pointwise


def _complex_pointwise(real: Formula, counts: tuple[int, int]) -> Formula:
    """``real`` unless the output is complex; then `COMPLEX_POINTWISE_FLOPS` per element (both / one complex)."""

    def formula(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
        o = first_tensor(out)
        if o is None or not o.is_complex():
            return real(args, kwargs, out)
        both = all(isinstance(a, complex) or (isinstance(a, Tensor) and a.is_complex()) for a in args[:2])
        return Cost("elementwise", 0, o.numel() * counts[0 if both else 1])

    formula.__doc__ = f"{real.__doc__} Complex output: {counts[0]} FLOPs per element ({counts[1]} with a real operand)."
    return formula


for _name, _per in POINTWISE_FLOPS.items():
    _f = _per_element("activation" if _per > 1 and "backward" not in _name else "elementwise", _per)
    register(_name)(_complex_pointwise(_f, COMPLEX_POINTWISE_FLOPS[_name]) if _name in COMPLEX_POINTWISE_FLOPS else _f)
for _name in ("relu", "relu6", "hardtanh", "clamp", "clamp_min", "threshold", "tanh", "prelu", "_prelu_kernel"):
    register(_name)(_per_element("activation", POINTWISE_FLOPS[_name]))


# ---------------------------------------------------------------- pooling and reductions


def _adaptive_window_total(n_in: int, n_out: int) -> int:
    """Sum of window lengths of an adaptive pool along one dim (PyTorch's floor/ceil start/end rule)."""
    return sum(math.ceil((i + 1) * n_in / n_out) - (i * n_in) // n_out for i in range(n_out))


@register("_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d", "adaptive_max_pool2d",
          "adaptive_max_pool1d", "adaptive_max_pool3d")
def adaptive_pool_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """One add (or compare) per window element, one divide per output for averages. Windows are exact."""
    x, o = args[0], first_tensor(out)
    if o is None:
        return Cost("pool")
    spatial = len(x.shape) - 2 if len(x.shape) > 2 else 1
    if o.shape == x.shape:
        return Cost("pool", 0, x.numel())
    lead = numel(o.shape[:-spatial])
    windows = lead
    for n_in, n_out in zip(x.shape[-spatial:], o.shape[-spatial:], strict=True):
        windows *= _adaptive_window_total(n_in, n_out)
    return Cost("pool", 0, windows + o.numel())


def _pool_window(args: tuple[Any, ...]) -> int:
    kernel = args[1]
    return numel(kernel) if isinstance(kernel, (list, tuple)) else int(kernel) ** 2


@register("max_pool2d_with_indices", "max_pool3d_with_indices", "max_pool1d", "max_pool2d", "max_pool3d",
          "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d_with_indices")
def pool_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Kernel-window elements per output (compares for max, adds for average).

    NB: windows clipped by padding are counted at full size (an upper bound by at most the border).
    """
    return Cost("pool", 0, out_numel(out) * _pool_window(args))


@register("max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward", "avg_pool2d_backward",
          "avg_pool3d_backward", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
          "adaptive_max_pool2d_backward")
def pool_backward_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """One add per grad_output element (scatter back to the window's max, or spread over the window)."""
    return Cost("pool", 0, args[0].numel())


REDUCTION_FLOPS_PER_INPUT: dict[str, int] = {
    **dict.fromkeys("sum mean amax amin max min argmax argmin prod any all nansum count_nonzero".split(), 1),
    **dict.fromkeys("var std var_mean std_mean linalg_vector_norm norm".split(), 3),
    "logsumexp": 3,
    "topk": 1,
    "sort": 1,
}


def _reduction(per: int) -> Formula:
    def formula(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
        """FLOPs per input element; a mean adds one divide per output."""
        x = args[0]
        return Cost("reduction", 0, per * x.numel() + out_numel(out))

    return formula


for _name, _per_in in REDUCTION_FLOPS_PER_INPUT.items():
    register(_name)(_reduction(_per_in))


# ---------------------------------------------------------------- embedding


@register("embedding")
def embedding_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """A gather: no arithmetic; reads only the looked-up rows (at most the whole table) and the indices."""
    weight, idx = args[0], args[1]
    rows = min(idx.numel(), weight.shape[0])
    row_bytes = numel(weight.shape[1:]) * weight.element_size()
    return Cost("embedding", 0, 0, read_bytes_override=((weight, rows * row_bytes),))


@register("embedding_dense_backward")
def embedding_backward_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Scatter-add of grad_output rows into the table's gradient: one add per grad element."""
    return Cost("embedding", 0, args[0].numel())


@register("_embedding_bag", "_embedding_bag_forward_only")
def embedding_bag_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Gather + per-bag reduction: (indices − bags)·D adds (sum, mean) or compares (max), + bags·D divides for
    mean, + indices·D multiplies with ``per_sample_weights``. Reads the gathered rows only, as `embedding`.

    (weight, indices, offsets, scale_grad_by_freq, mode 0 sum / 1 mean / 2 max, sparse, per_sample_weights,
    include_last_offset, padding_idx). NB: empty bags and ``padding_idx`` entries are counted as present.
    """
    weight, idx, offsets = args[0], args[1], args[2]
    mode = int(arg(args, kwargs, 4, "mode", 0))
    psw = arg(args, kwargs, 6, "per_sample_weights")
    bags = offsets.numel() - (1 if arg(args, kwargs, 7, "include_last_offset", False) else 0)
    dim = numel(weight.shape[1:])
    n = idx.numel()
    flops = max(n - bags, 0) * dim + (bags * dim if mode == 1 else 0) + (n * dim if psw is not None else 0)
    rows = min(n, weight.shape[0])
    return Cost("embedding", 0, flops, read_bytes_override=((weight, rows * dim * weight.element_size()),))


# ---------------------------------------------------------------- FFT

FFT_FLOPS_PER_POINT_LOG2 = 5
"""A complex FFT of length N costs 5·N·log2(N) real FLOPs (the radix-2 Cooley–Tukey count used by FFTW's
benchmarks); a real-input (r2c) or real-output (c2r) transform costs half. NB: for lengths that are not powers
of two (Bluestein, mixed radix) the real cost differs; the same 5·N·log2(N) is used."""


def _fft_cost(logical: Sequence[int], dims: Sequence[int], half: bool, normalization: int, out: Any) -> Cost:
    """Σ over transformed dims d of (numel / N_d) transforms × 5·N_d·log2(N_d) = 5·numel·Σ log2(N_d).

    ``logical`` is the full signal shape (the real side of r2c/c2r). A normalization (1/N or 1/√N) adds one
    real multiply per real output value (2 per complex element).
    """
    total = numel(logical)
    flops = FFT_FLOPS_PER_POINT_LOG2 * total * sum(math.log2(logical[d]) for d in dims if logical[d] > 0)
    if half:
        flops /= 2
    o = first_tensor(out)
    if normalization and o is not None:
        flops += o.numel() * (2 if o.is_complex() else 1)
    return Cost("elementwise", 0, round(flops))


@register("_fft_r2c")
def fft_r2c_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(input, dim, normalization, onesided): real input of the signal's shape; half a complex FFT."""
    x = args[0]
    return _fft_cost(x.shape, [d % x.dim() for d in args[1]], True, int(args[2]), out)


@register("_fft_c2r")
def fft_c2r_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(input, dim, normalization, last_dim_size): real output of the signal's shape; half a complex FFT."""
    o = first_tensor(out)
    if o is None:
        return Cost("elementwise")
    return _fft_cost(o.shape, [d % o.dim() for d in args[1]], True, int(args[2]), out)


@register("_fft_c2c")
def fft_c2c_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(input, dim, normalization, forward): complex to complex."""
    x = args[0]
    return _fft_cost(x.shape, [d % x.dim() for d in args[1]], False, int(args[2]), out)


# ---------------------------------------------------------------- distances, sampling, trilinear


def pair_distance_flops(m: int, p: float) -> int:
    """FLOPs of one p-norm distance between two M-vectors.

    p = 2: M subtracts + M squares + (M−1) adds + 1 sqrt = 3M. p = 1, ∞, 0: M subtracts + M abs (or ≠ 0 tests)
    + (M−1) adds (or maxes) = 3M − 1. Other p: M subtracts + M abs + M pows + (M−1) adds + 1 pow(1/p) = 4M.
    """
    if p == 2:
        return 3 * m
    if p in (0, 1) or math.isinf(p):
        return 3 * m - 1
    return 4 * m


def _euclidean_dist_flops(b: int, p: int, r: int, m: int) -> Cost:
    """‖x−y‖ through a matmul (``_euclidean_dist``): [−2x, ‖x‖², 1] · [y, 1, ‖y‖²]ᵀ, clamp at 0, sqrt.

    B·P·R·(M+2) MACs; squared norms 2 FLOPs per element (square, add) of x and y; −2x 1 per element of x;
    clamp and sqrt 1 each per output.
    """
    macs = b * p * r * (m + 2)
    return Cost("matmul", macs, 2 * macs + 3 * b * p * m + 2 * b * r * m + 2 * b * p * r)


@register("_euclidean_dist")
def euclidean_dist_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    x1, x2 = args[0], args[1]
    return _euclidean_dist_flops(out_numel(out) // (x1.shape[-2] * x2.shape[-2] or 1), x1.shape[-2],
                                 x2.shape[-2], x1.shape[-1])


@register("_cdist_forward")
def cdist_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(x1 (..., P, M), x2 (..., R, M), p, compute_mode): `pair_distance_flops` per output pair.

    For p = 2 with compute_mode 1 (always mm), or 0/None (if necessary) and P or R > 25, ATen's kernel takes the
    matmul path of ``_euclidean_dist`` inside the op; that is counted then.
    """
    x1, x2 = args[0], args[1]
    p, mode = float(args[2]), args[3] if len(args) > 3 else None
    pp, r = x1.shape[-2], x2.shape[-2]
    if p == 2 and (mode == 1 or (mode in (None, 0) and (pp > 25 or r > 25))):
        return _euclidean_dist_flops(out_numel(out) // (pp * r or 1), pp, r, x1.shape[-1])
    return Cost("reduction", 0, out_numel(out) * pair_distance_flops(x1.shape[-1], p))


@register("_pdist_forward")
def pdist_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(input N×M, p=2): N(N−1)/2 pairs, `pair_distance_flops` each."""
    x = args[0]
    n, m = x.shape
    return Cost("reduction", 0, n * (n - 1) // 2 * pair_distance_flops(m, float(arg(args, kwargs, 1, "p", 2.0))))


GRID_SAMPLE_FLOPS = {
    ("2d", 0): POINTWISE_FLOPS["upsample_bilinear2d"],  # bilinear: 4 taps, 4 multiplies + 3 adds
    ("2d", 2): POINTWISE_FLOPS["upsample_bicubic2d"],  # bicubic: 16 taps, 16 multiplies + 15 adds
    ("3d", 0): POINTWISE_FLOPS["upsample_trilinear3d"],  # trilinear: 8 taps, 8 multiplies + 7 adds
}
"""FLOPs per output element of ``grid_sampler_{2d,3d}`` by interpolation mode (0 bilinear, 1 nearest, 2 bicubic);
nearest is a gather (0). NB: as for upsampling, computing the tap weights from the grid (per output location,
shared by all channels) and the padding-mode reflection are not counted."""


def _grid_sampler(rank: str) -> Formula:
    def formula(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
        per = GRID_SAMPLE_FLOPS.get((rank, int(args[2])), 0)
        return Cost("elementwise", 0, round(out_numel(out) * per)) if per else Cost("memory")

    formula.__doc__ = f"grid_sampler_{rank}(input, grid, interpolation, padding, align_corners): `GRID_SAMPLE_FLOPS`."
    return formula


register("grid_sampler_2d")(_grid_sampler("2d"))
register("grid_sampler_3d")(_grid_sampler("3d"))


@register("_trilinear")
def trilinear_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """``(i1·i2·i3).sum(sumdim)`` after unsqueezing each at its ``expand`` dims (what ``nn.Bilinear`` runs).

    ATen contracts in two products: i1·i2 summed over the sum dims i3 lacks, then that·i3 summed over the rest.
    MACs = numel(broadcast(i1, i2)) + numel(broadcast(buf, i3)); for ``nn.Bilinear`` (x1 B×I1, W O×I1×I2,
    x2 B×I2) that is B·O·I1·I2 + B·O·I2. Complex: ×4.
    """
    ins = args[:3]
    expands = [{int(d) for d in arg(args, kwargs, 3 + j, f"expand{j + 1}", ())} for j in range(3)]
    sumdim = {int(d) for d in arg(args, kwargs, 6, "sumdim", ())}
    total = ins[0].dim() + len(expands[0])
    shapes: list[list[int]] = []
    for t, ex in zip(ins, expands, strict=True):
        it = iter(t.shape)
        shapes.append([1 if d in ex else next(it) for d in range(total)])
    s12 = [max(a, b) for a, b in zip(shapes[0], shapes[1], strict=True)]
    buf = [1 if (d in sumdim and d in expands[2]) else s for d, s in enumerate(s12)]
    macs = (numel(s12) + numel([max(a, b) for a, b in zip(buf, shapes[2], strict=True)])) * cplx(ins[0])
    return Cost("matmul", macs, 2 * macs)


# ---------------------------------------------------------------- data movement (no arithmetic)


def _memory(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Pure data movement: 0 FLOPs; bytes are what it reads and writes."""
    return Cost("memory")


for _name in (
    "clone _to_copy cat stack constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d "
    "replication_pad1d replication_pad2d replication_pad3d index_select gather index scatter scatter_add "
    "index_put index_put_ _unsafe_index _unsafe_index_put index_add index_copy masked_scatter masked_select "
    "repeat roll flip upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact2d "
    "pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle im2col col2im slice_scatter "
    "select_scatter diagonal_scatter as_strided_scatter view_copy lift_fresh_copy nonzero "
    "select_backward slice_backward diagonal_backward embedding_renorm one_hot _copy_from _copy_from_and_resize "
    "_nested_tensor_from_mask to_padded_tensor _nested_from_padded"
).split():
    register(_name)(_memory)


@register("copy_", "copy")
def copy_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Reads the source, writes the destination (the destination is not read)."""
    return Cost("memory", reads=(args[1],))


@register("zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "fill", "fill_", "zero_", "zero",
          "arange", "scalar_tensor", "new_zeros", "new_ones", "new_full", "linspace", "eye", "tensor")
def fill_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Writes its output, reads nothing."""
    return Cost("memory", reads=())


FREE_OPS = frozenset(
    (
        "view _unsafe_view t transpose permute expand expand_as squeeze unsqueeze select slice split "
        "split_with_sizes unsafe_split unsafe_split_with_sizes unbind chunk as_strided alias detach "
        "_reshape_alias unfold narrow diagonal view_as_real view_as_complex _local_scalar_dense lift_fresh "
        "empty empty_like empty_strided new_empty new_empty_strided sym_size sym_stride sym_numel "
        "is_same_size _has_compatible_shallow_copy_type set_ resize_ _conj _neg_view conj resolve_conj "
        "resolve_neg _nested_tensor_size _nested_tensor_strides _nested_tensor_storage_offsets "
        "_nested_get_values _nested_view_from_buffer _to_dense _nested_tensor_from_mask_left_aligned "
        "_is_all_true _assert_async _assert_tensor_metadata _functional_assert_async record_stream "
        "_debug_has_internal_overlap _make_dep_token item equal t_ transpose_ squeeze_ unsqueeze_ "
        "as_strided_ detach_ swapdims_ swapaxes_ device"
    ).split()
)
"""Views, allocation and metadata ops: no arithmetic and no data movement of their own (``device`` is
``torch.ops.prim.device``; the capture keys ops by packet name)."""
