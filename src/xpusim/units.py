"""Unit constants and byte sizes: the one place where powers of ten and two live."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the types: this module must not pull torch in
    import torch

KILO = 10**3
MEGA = 10**6
GIGA = 10**9
TERA = 10**12
KIB = 2**10
MIB = 2**20
GIB = 2**30


def default_file_mode() -> int:
    """Permissions a new file gets under the current umask (temporary files from mkstemp are 0600)."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def dtype_bytes(dtype: torch.dtype) -> float:
    """Bytes per element of ``dtype``; sub-byte types (int4 packed in uint8 etc.) are not torch dtypes here."""
    if str(dtype) == "torch.bool":
        return 1.0
    return float(dtype.itemsize)


def dtype_name(dtype: torch.dtype) -> str:
    """Short dtype name as users type it: ``float32``, ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def human(n: float, unit: str = "") -> str:
    """Compact SI notation with 4 significant digits: ``4.089G``, ``25.56M``."""
    for factor, prefix in ((10**15, "P"), (TERA, "T"), (GIGA, "G"), (MEGA, "M"), (KILO, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.4g}{prefix}{unit}"
    if float(n).is_integer():
        return f"{int(n)}{unit}"
    return f"{n:.3g}{unit}"
