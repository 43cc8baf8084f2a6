"""Per-element FLOP conventions shared by the capture's formulas and the analytic LLM model (no torch here)."""

from __future__ import annotations

SOFTMAX_FLOPS_PER_ELEMENT = 5
"""max, subtract, exp, sum, divide (the convention of LLM-Viewer and most analytic models)."""
SCORE_SCALE_FLOPS_PER_ELEMENT = 1
"""The 1/sqrt(d) scaling of each attention score."""

LAYER_NORM_FLOPS_PER_ELEMENT = 8
"""mean (1 add), variance (subtract, square, add), normalize (subtract, multiply), affine (multiply, add)."""
RMS_NORM_FLOPS_PER_ELEMENT = 4
"""square, add, normalize multiply, affine multiply."""

COMPLEX_REAL_MACS_PER_MAC = 4
"""One complex multiply-accumulate (a+bi)(c+di) + acc = 4 real multiplies and 4 real adds = 4 real MACs, so a
complex matmul costs 4× the MACs and 8 real FLOPs per complex MAC. NB: 3M (Gauss/Karatsuba) algorithms do it in 3
real multiplies and are not assumed (PyTorch's complex ``conv2d`` does use 3 real convolutions, visibly)."""

COMPLEX_POINTWISE_FLOPS: dict[str, tuple[int, int]] = {
    "add": (2, 1),
    "sub": (2, 1),
    "rsub": (2, 1),
    "mul": (6, 2),
}
"""Real FLOPs per complex output element: (both operands complex, one operand real). A complex multiply is
4 multiplies + 2 adds; a complex add is 2 adds; with a real operand only its real part (add) or both parts by a
real (mul) take work. Other pointwise ops on complex tensors keep their real counts."""

POINTWISE_FLOPS: dict[str, float] = {
    # one arithmetic operation or comparison per output element
    **dict.fromkeys(
        "add sub rsub mul div neg abs relu relu6 clamp clamp_min clamp_max hardtanh threshold maximum minimum "
        "fmax fmin eq ne lt le gt ge where masked_fill sign floor ceil round trunc frac fmod remainder "
        "square pow exp exp2 expm1 log log2 log10 log1p sqrt rsqrt reciprocal erf erfc erfinv sin cos tan "
        "asin acos atan atan2 sinh cosh tanh logical_not logical_and logical_or logical_xor bitwise_not "
        "bitwise_and bitwise_or bitwise_xor isnan isinf isfinite nan_to_num lerp copysign heaviside "
        "threshold_backward prelu _prelu_kernel tril triu floor_divide".split(),
        1,
    ),
    "addcmul": 2,
    "addcdiv": 2,
    "leaky_relu": 2,
    "hardtanh_backward": 2,
    "sigmoid": 3,  # exp(-x), add 1, reciprocal
    "sigmoid_backward": 2,
    "tanh_backward": 2,
    "hardsigmoid": 3,  # add, clamp, scale
    "hardsigmoid_backward": 2,
    "elu": 3,
    "elu_backward": 3,
    "softplus": 3,
    "softplus_backward": 3,
    "silu": 4,  # sigmoid + multiply
    "silu_backward": 6,
    "hardswish": 4,  # hardsigmoid + multiply
    "hardswish_backward": 4,
    "gelu": 5,  # x · 0.5 · (1 + erf(x / √2)); the tanh form is counted the same
    "gelu_backward": 8,
    "mish": 5,  # softplus + tanh + multiply
    "mish_backward": 9,
    "native_dropout": 2,  # compare a random number, scale
    "native_dropout_backward": 2,
    "bernoulli": 1,
    "uniform": 1,
    "normal": 2,
    "rand": 1,
    "randn": 2,
    "rand_like": 1,
    "randn_like": 2,
    "upsample_bilinear2d": 7,  # 4 weighted taps: 4 multiplies, 3 adds
    "upsample_bicubic2d": 31,  # 16 taps
    "upsample_linear1d": 3,
    "upsample_trilinear3d": 15,
    "_upsample_bilinear2d_aa": 7,
    "cumsum": 1,
    "cumprod": 1,
    "logcumsumexp": 3,
}
