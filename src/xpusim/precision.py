"""Precision: the one table of dtypes — names and aliases, bits and bytes per element, which chip peak a dtype
uses, what a workload is captured in for a chip dtype, and how int8/int4/fp8 retype a captured workload.

Two vocabularies meet here. Chips speak of peaks per *chip dtype* (``fp32``, ``tf32``, ``bf16``, ``fp16``,
``fp8``, ``int8``, ``int4``); captured ops carry *torch dtype names* (``float32``, ``bfloat16``,
``float8_e4m3fn``). Every other module converts through this one, so a new format is added in one place.
torch is imported only by `torch_dtype` (this module sits below every layer, and ``xpusim chips`` stays
torch-free).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from xpusim.errors import UserError

if TYPE_CHECKING:
    import torch

CHIP_DTYPES: tuple[str, ...] = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")
"""The dtypes a chip file lists peaks for, widest first."""

CHIP_DTYPE_BITS: dict[str, int] = {"fp64": 64, "fp32": 32, "tf32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8,
                                   "int4": 4}
"""Storage bits of one element (TF32 is stored as fp32; only the multiplier is narrower)."""

TORCH_NAMES: dict[str, str] = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "fp64": "float64", "double": "float64",
    "float8_e4m3fn": "float8_e4m3fn", "fp8": "float8_e4m3fn", "fp8-e4m3": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2", "fp8-e5m2": "float8_e5m2",
}
"""What a user may type for a capture dtype (``--dtype`` of analyze) → torch's dtype name."""

TORCH_TO_CHIP: dict[str, str] = {
    "float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16",
    "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "int8": "int8", "uint8": "int8", "int4": "int4",
}
"""The chip dtype an op of a torch dtype computes in."""

CAPTURE_FOR_CHIP: dict[str, str] = {"fp64": "float64", "fp32": "float32", "tf32": "float32", "bf16": "bfloat16",
                                    "fp16": "float16", "fp8": "float8_e4m3fn", "int8": "float16", "int4": "float16"}
"""What a model is captured in to be costed at a chip dtype: integer formats are captured in float16 and retyped
(bytes scaled by bits / 16, see `retype_bits`)."""

ELEMENT_BYTES: dict[str, float] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1, "complex64": 8, "complex128": 16,
    "int4": 0.5,
}
"""Bytes per element of a captured op's dtype name (names, so no torch is needed)."""

DEFAULT_FLOAT_ORDER: tuple[str, ...] = ("fp16", "bf16", "fp32")
"""Default compute dtype on an accelerator: the first of these the chip has a peak for (inference practice:
16-bit floats where the chip has them)."""

HOST_DEFAULT = "fp32"
"""Default on a probed host (`xpusim probe`): what its matmul was measured in."""


def chip_dtype_name(name: str, *, field: str = "dtype") -> str:
    """A chip dtype from what a user typed (``bf16`` or ``bfloat16``); `UserError` naming ``field`` otherwise."""
    low = name.lower()
    if low in CHIP_DTYPES:
        return low
    if low in TORCH_NAMES:
        return TORCH_TO_CHIP[TORCH_NAMES[low]]
    raise UserError(f"{field} {name!r} is not one of {', '.join(CHIP_DTYPES)}")


def torch_dtype_name(name: str, *, field: str = "dtype") -> str:
    """torch's name for a capture dtype a user typed (``bf16`` → ``bfloat16``)."""
    try:
        return TORCH_NAMES[name.lower()]
    except KeyError:
        raise UserError(f"{field}={name!r} is not one of {', '.join(TORCH_NAMES)}") from None


def torch_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """The torch dtype for a name (``None`` and dtypes pass through)."""
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    return getattr(torch, torch_dtype_name(name))  # type: ignore[no-any-return]


def chip_dtype_of(torch_name: str, *, tf32: bool = False) -> str:
    """The chip dtype an op captured in ``torch_name`` computes in (fp32 matmuls in TF32 only when asked)."""
    d = TORCH_TO_CHIP.get(torch_name, torch_name)
    return "tf32" if d == "fp32" and tf32 else d


def capture_dtype(chip_dtype: str) -> str:
    """What to capture a model in to cost it at ``chip_dtype`` (integer formats: float16, then `retype_bits`)."""
    return CAPTURE_FOR_CHIP[chip_dtype_name(chip_dtype)]


def retype_bits(chip_dtype: str) -> int | None:
    """Bits to retype a 16-bit capture to for ``chip_dtype`` (int8 → 8, int4 → 4), or None when the capture is
    already in the right dtype."""
    return {"int8": 8, "int4": 4}.get(chip_dtype)


def element_bytes(name: str, default: float = 4.0) -> float:
    """Bytes per element of a torch or chip dtype name."""
    if name in ELEMENT_BYTES:
        return ELEMENT_BYTES[name]
    if name in CHIP_DTYPE_BITS:
        return CHIP_DTYPE_BITS[name] / 8
    return default


def default_dtype(available: Sequence[str], *, host: bool = False) -> str:
    """The dtype a chip is used at when the user names none: fp32 on a probed host, else the first of
    `DEFAULT_FLOAT_ORDER` among ``available`` (the chip's dtypes with a peak), else the chip's first."""
    if host:
        return HOST_DEFAULT
    for d in DEFAULT_FLOAT_ORDER:
        if d in available:
            return d
    if not available:
        raise UserError("the chip lists no peak for any dtype")
    return available[0]


def float16_for(available: Sequence[str]) -> str:
    """The 16-bit float a chip runs 16-bit activations in: bf16 where it has it (training and LLM practice),
    else fp16 (T4, V100)."""
    return "bf16" if "bf16" in available or "fp16" not in available else "fp16"


def llm_compute_dtype(a_bits: int, float16: str, has: Callable[[str], bool]) -> str:
    """The chip dtype an LLM's matmuls use at ``a_bits`` activations: fp32, the chosen 16-bit float, or int8
    (fp8 on a chip with no int8 peak)."""
    if a_bits == 32:
        return "fp32"
    if a_bits == 16:
        return chip_dtype_name(float16, field="float16")
    return "int8" if has("int8") else "fp8"


TORCH_FLOAT16 = {"bf16": "bfloat16", "fp16": "float16", "bfloat16": "bfloat16", "float16": "float16"}
"""torch name of a 16-bit float given either way."""
