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
  which tensors an op really touches (embedding reads only the gathered rows; a sparse operand its values and
  indices; ``copy_`` does not read its destination).

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
    packed_weights: tuple[Tensor, ...] = ()
    """Weights an op reads from a packed (non-tensor) argument, e.g. a quantized layer's prepacked int8 weight:
    weight bytes at their real width, and parameters."""


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
    if is_sparse(a) or is_sparse(b):
        return _sparse_mm_cost(a, b, None, out)
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
    if is_sparse(args[1]) or is_sparse(args[2]):
        return _sparse_mm_cost(args[1], args[2], arg(args, kwargs, 3, "beta", 1), out)
    macs, _ = _mm_macs(args[1], args[2])
    k = cplx(args[1])
    return Cost("matmul", macs * k, 2 * macs * k + out_numel(out) * (2 if k > 1 else 1))


# ---------------------------------------------------------------- sparse (COO, CSR, ...) matmuls


def is_sparse(t: Any) -> bool:
    """A tensor in a sparse layout (COO, CSR, CSC, BSR, BSC): its dense shape says nothing about its cost."""
    return isinstance(t, Tensor) and t.layout != torch.strided


def _sparse_values(t: Tensor) -> Tensor:
    return t._values() if t.layout == torch.sparse_coo else t.values()


def sparse_storage_bytes(t: Tensor) -> int:
    """Bytes a sparse tensor really holds: its values plus its indices (COO: sparse_dim × nnz; compressed
    layouts: the compressed and the plain index arrays)."""
    values = _sparse_values(t)
    total = values.numel() * values.element_size()
    if t.layout == torch.sparse_coo:
        indices = [t._indices()]
    elif t.layout in (torch.sparse_csr, torch.sparse_bsr):
        indices = [t.crow_indices(), t.col_indices()]
    else:
        indices = [t.ccol_indices(), t.row_indices()]
    return total + sum(i.numel() * i.element_size() for i in indices)


def _sparse_mm_cost(a: Tensor, b: Tensor, beta: Any, out: Any) -> Cost:
    """Sparse A (M×K, nnz stored elements) @ dense B (K×N): nnz·N MACs, each stored element meets one row of B;
    dense A @ sparse B: M·nnz. FLOPs 2·MACs, plus one C add per output element for ``addmm`` unless beta = 0
    (``torch.sparse.mm`` runs ``_sparse_addmm`` with beta = 0: no add). Sparse operands read their values and
    indices only. NB: sparse @ sparse is counted as nnz(A)·N, as if B were dense (an upper bound).
    """
    k = cplx(_sparse_values(a) if is_sparse(a) else a)
    macs = k * (_sparse_values(a).numel() * b.shape[-1] if is_sparse(a) else a.shape[-2] * _sparse_values(b).numel())
    add = 0 if beta is None or beta == 0 else out_numel(out) * (2 if k > 1 else 1)
    sparse_reads = tuple((t, sparse_storage_bytes(t)) for t in (a, b) if is_sparse(t))
    return Cost("matmul", macs, 2 * macs + add, read_bytes_override=sparse_reads)


@register("_sparse_addmm")
def sparse_addmm_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(C, sparse A, dense B, beta=1, alpha=1): `_sparse_mm_cost` (beta is keyword-only)."""
    return _sparse_mm_cost(args[1], args[2], kwargs.get("beta", 1), out)


@register("_sparse_mm")
def sparse_mm_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(sparse A, dense B): `_sparse_mm_cost` (composite: normally lowered to ``_sparse_addmm`` before dispatch)."""
    return _sparse_mm_cost(args[0], args[1], None, out)


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


@register("_grouped_mm")
def grouped_mm_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """Grouped GEMM (a mixture of experts' experts in one kernel). 2-D × 3-D, (R, K) @ (G, K, N) with ``offs``
    assigning consecutive rows to groups: every row goes through one group's K×N, R·K·N MACs however the rows are
    split; 3-D × 3-D: a batched product; 3-D × 2-D (groups along N) and 2-D × 2-D (groups along K, the weight
    gradient): M·K·N. NB: the whole
    weight tensor is counted as read; with few rows (decode) only the groups that got rows are — the analytic
    `xpusim llm` counts those."""
    a, b = args[0], args[1]
    if a.dim() == 3 and b.dim() == 3:
        macs, _ = _mm_macs(a, b)
    elif a.dim() == 2 and b.dim() == 3:
        macs = a.shape[0] * a.shape[1] * b.shape[-1]
    elif a.dim() == 3 and b.dim() == 2:  # groups along N: each (M, K) against its columns of (K, N)
        macs = a.shape[1] * a.shape[2] * b.shape[-1]
    else:
        macs = a.shape[0] * a.shape[1] * b.shape[-1]
    return Cost("matmul", macs, 2 * macs)


@register("histc")
def histc_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """One bin lookup and count per input element (a MoE router's tokens per expert)."""
    return Cost("reduction", 0, args[0].numel())


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

POLAR_FLOPS_PER_ELEMENT = 4
"""``polar(abs, angle)`` = abs·cos(angle) + i·abs·sin(angle): a cosine, a sine and two multiplies per complex output
(rotary embeddings written as complex numbers, DeepSeek-V2)."""
register("polar")(_per_element("elementwise", POLAR_FLOPS_PER_ELEMENT))


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


def _embedding_bag_backward(mode_index: int, psw_index: int) -> Formula:
    def formula(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
        grad, idx = args[0], args[1]
        mode = int(arg(args, kwargs, mode_index, "mode", 0))
        if mode == 2:  # max: each bag's gradient goes to its argmax rows only
            return Cost("embedding", 0, grad.numel())
        dim = numel(grad.shape[1:])
        scaled = mode == 1 or arg(args, kwargs, psw_index, "per_sample_weights") is not None
        return Cost("embedding", 0, idx.numel() * dim * (2 if scaled else 1))

    formula.__doc__ = (
        "EmbeddingBag backward: scatter-add of each index's bag gradient row into the table's gradient, indices·D "
        "adds, + indices·D multiplies when rows are scaled (mean: 1/bag size; per-sample weights); max: one add per "
        "grad element (to the argmax rows)."
    )
    return formula


register("_embedding_bag_backward")(_embedding_bag_backward(8, 10))
register("_embedding_bag_dense_backward")(_embedding_bag_backward(7, 8))
register("_embedding_bag_sparse_backward")(_embedding_bag_backward(7, 8))


@register("_embedding_bag_per_sample_weights_backward")
def embedding_bag_psw_backward_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(grad, weight, indices, offsets, offset2bag, mode, padding_idx): per index the dot of its bag's gradient
    with its table row, D multiplies + D adds; reads only the gathered rows, as `embedding_bag_cost`."""
    weight, idx = args[1], args[2]
    dim = numel(weight.shape[1:])
    rows = min(idx.numel(), weight.shape[0])
    return Cost("embedding", 0, 2 * idx.numel() * dim,
                read_bytes_override=((weight, rows * dim * weight.element_size()),))


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


def _grid_sampler_backward(rank: str) -> Formula:
    def formula(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
        grad_out, mask = args[0], arg(args, kwargs, 6, "output_mask", (True, True))
        per = GRID_SAMPLE_FLOPS.get((rank, int(args[3])), 0)
        if not per:  # nearest: grad_input is a scatter-add (1 per element), the grid gets no gradient
            return Cost("elementwise", 0, grad_out.numel() if mask[0] else 0)
        return Cost("elementwise", 0, round(grad_out.numel() * per * (int(bool(mask[0])) + int(bool(mask[1])))))

    formula.__doc__ = (
        f"grid_sampler_{rank}_backward(grad_out, input, grid, interpolation, padding, align_corners, output_mask): "
        "the forward's `GRID_SAMPLE_FLOPS` per grad_output element per requested gradient (grad_input scatters each "
        "tap back, grad_grid differentiates the interpolation): about 2× the forward with both."
    )
    return formula


register("grid_sampler_2d_backward")(_grid_sampler_backward("2d"))
register("grid_sampler_3d_backward")(_grid_sampler_backward("3d"))


@register("_cdist_backward")
def cdist_backward_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(grad, x1, x2, p, cdist): the gradient of x1 only, pairwise, `pair_distance_flops` per pair (recompute the
    difference, scale by grad/dist, accumulate). Autograd calls it once per input needing a gradient (x2 with the
    arguments swapped), so x1 and x2 together cost 2× the forward's pairwise count.
    """
    x1, p, dist = args[1], float(args[3]), args[4]
    return Cost("reduction", 0, dist.numel() * pair_distance_flops(x1.shape[-1], p))


@register("_pdist_backward")
def pdist_backward_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """(grad, input N×M, p, pdist): each pair's gradient goes to both of its rows: 2× the forward,
    N(N−1)·`pair_distance_flops`."""
    x = args[1]
    n, m = x.shape
    return Cost("reduction", 0, n * (n - 1) * pair_distance_flops(m, float(args[2])))


# ---------------------------------------------------------------- detection, unique, sort-based ops


def sort_compares(n: int) -> int:
    """Compares of a comparison sort of n keys: n·log2(n) (merge/radix-free count; 0 for n ≤ 1)."""
    return round(n * math.log2(n)) if n > 1 else 0


NMS_IOU_FLOPS = 13
"""One IoU test of two boxes: intersection corners 2 max + 2 min (4), width and height 2 subtracts + 2 clamps at
0 (4), intersection area 1 multiply, union = area_a + area_b − inter (2), divide (1), compare with the threshold
(1)."""
NMS_AREA_FLOPS = 3
"""Area of one box, computed once: 2 subtracts, 1 multiply."""


@register("nms")
def nms_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """``torchvision::nms(dets N×4, scores N, iou_threshold)``, worst case (nothing suppressed): every pair of the
    N boxes is tested once, N(N−1)/2 · `NMS_IOU_FLOPS`, + N · `NMS_AREA_FLOPS` + the score sort N·log2(N).

    NB: how many boxes a suppression removes early is data-dependent; the worst case is counted (on a detector's
    pre-NMS top-k the pair count dominates either way).
    """
    n = args[0].shape[0]
    return Cost("elementwise", 0, NMS_IOU_FLOPS * n * (n - 1) // 2 + NMS_AREA_FLOPS * n + sort_compares(n))


ROI_ALIGN_ADAPTIVE_SAMPLES = 2
"""Samples per bin axis assumed when ``sampling_ratio <= 0`` (adaptive: ceil(roi_h/pooled_h) × ceil(roi_w/pooled_w),
which depends on the box sizes). torchvision's detectors pass ``sampling_ratio=2`` explicitly: 2×2 is assumed."""
ROI_ALIGN_SAMPLE_FLOPS = round(POINTWISE_FLOPS["upsample_bilinear2d"])
"""One bilinear sample: 4 taps, 4 multiplies + 3 adds (7)."""


def _roi_samples(sampling_ratio: int) -> int:
    s = sampling_ratio if sampling_ratio > 0 else ROI_ALIGN_ADAPTIVE_SAMPLES
    return s * s


@register("roi_align")
def roi_align_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """``torchvision::roi_align(input, rois K×5, scale, pooled_h, pooled_w, sampling_ratio, aligned)``: per output
    element (K·C·ph·pw) S = sampling_ratio² bilinear samples (`ROI_ALIGN_SAMPLE_FLOPS` each) and their average
    (S − 1 adds + 1 divide): 8·S FLOPs. Adaptive sampling_ratio (≤ 0): `ROI_ALIGN_ADAPTIVE_SAMPLES`² assumed.
    NB: the sample coordinates and tap weights (shared by all channels) are not counted; the whole feature map is
    counted as read.
    """
    s = _roi_samples(int(arg(args, kwargs, 5, "sampling_ratio", -1)))
    return Cost("pool", 0, out_numel(out) * (ROI_ALIGN_SAMPLE_FLOPS + 1) * s)


@register("_roi_align_backward")
def roi_align_backward_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """``torchvision::_roi_align_backward(grad, rois, scale, ph, pw, n, c, h, w, sampling_ratio, aligned)``: per
    grad element one divide by the sample count, then each of the S samples scatters to its 4 taps (4 multiplies +
    4 adds): 8·S + 1. Adaptive sampling_ratio as in `roi_align_cost`."""
    s = _roi_samples(int(arg(args, kwargs, 9, "sampling_ratio", -1)))
    return Cost("pool", 0, args[0].numel() * (8 * s + 1))


def _unique_cost(dim_index: int | None, sort: bool) -> Formula:
    def formula(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
        x = args[0]
        dim = arg(args, kwargs, dim_index, "dim") if dim_index is not None else None
        items = x.shape[int(dim)] if dim is not None and x.dim() else x.numel()
        per_item = x.numel() // items if items else 0
        return Cost("reduction", 0, (sort_compares(items) if sort else 0) * per_item + x.numel())

    formula.__doc__ = (
        "Sort-based unique: sort the n items (n·log2(n) compares, each of a whole slice for ``dim``), then one "
        "compare per element against its neighbour: numel·log2(n) + numel FLOPs. Inverse indices and counts are "
        "data movement (not counted). NB: a hash-based CPU path (``sorted=False``) is costed the same."
        if sort
        else "Consecutive unique: one compare per element against its neighbour (no sort)."
    )
    return formula


register("_unique2", "_unique")(_unique_cost(None, sort=True))
register("unique_dim")(_unique_cost(1, sort=True))
register("unique_consecutive")(_unique_cost(3, sort=False))
register("unique_dim_consecutive")(_unique_cost(1, sort=False))


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
    "_nested_tensor_from_mask to_padded_tensor _nested_from_padded _pack_padded_sequence"
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


# ---------------------------------------------------------------------------------- quantized (torch.ao) layers
def unpack_weights(packed: Any) -> tuple[Tensor, Tensor | None]:
    """The (weight, bias) inside a quantized layer's prepacked parameters."""
    for unpack in ("linear_unpack", "linear_unpack_fp16", "conv2d_unpack", "conv1d_unpack", "conv3d_unpack"):
        try:
            w, b = getattr(torch.ops.quantized, unpack)(packed)
            return w, b
        except (RuntimeError, AttributeError):
            continue
    raise ValueError(f"cannot unpack {type(packed).__name__}")


def packed_bytes(w: Tensor) -> int:
    """Storage of a packed weight at its real width: int8 values plus per-channel scales and zero points."""
    n = w.numel() * w.element_size()
    if w.is_quantized and w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                                          torch.per_channel_affine_float_qparams):
        n += w.q_per_channel_scales().numel() * 8 + w.q_per_channel_zero_points().numel() * 8
    return n


@register("quantized::linear_dynamic", "quantized::linear_dynamic_fp16", "quantized::linear",
          "quantized::linear_relu", "quantized::linear_relu_dynamic")
def quantized_linear_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """A quantized linear layer: the int8 (or fp16) GEMM of x (…, K) and the packed (N, K) weight: x.numel()/K·N·K
    MACs at the weight's width; + N per row for the bias (dynamic: + 2 per input element to quantize x on the fly
    and 1 per output to rescale)."""
    x, (w, b) = args[0], unpack_weights(args[1])
    n, k = w.shape[0], w.shape[1]
    rows = x.numel() // k
    macs = rows * n * k
    flops = 2 * macs + (rows * n if b is not None else 0) + rows * n
    if not x.is_quantized:  # dynamic: x is quantized on the fly (scale from its range, then per element)
        flops += 2 * x.numel()
    return Cost("matmul", macs=macs, flops=flops, reads=(x,),
                packed_weights=(w, *(() if b is None else (b,))))


@register("quantized::conv2d", "quantized::conv2d_relu", "quantized::conv1d", "quantized::conv1d_relu",
          "quantized::conv3d", "quantized::conv3d_relu")
def quantized_conv_cost(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Cost:
    """A static int8 convolution: the MACs of the float convolution of the same shapes (`conv_macs`), + 1 per output
    for the bias and 1 to requantize."""
    x, (w, b) = args[0], unpack_weights(args[1])
    o = first_tensor(out)
    assert o is not None
    macs = conv_macs(tuple(x.shape), tuple(w.shape), tuple(o.shape), transposed=False)
    flops = 2 * macs + (o.numel() if b is not None else 0) + o.numel()
    return Cost("conv", macs=macs, flops=flops, reads=(x,), packed_weights=(w, *(() if b is None else (b,))))


# quantize: x / scale, round, + zero point, clamp (4 per element); dequantize: (q − zero point) × scale (2)
register("quantize_per_tensor", "quantize_per_channel", "quantize_per_tensor_dynamic")(
    _per_element("elementwise", 4, "in"))
register("dequantize")(_per_element("elementwise", 2, "in"))
