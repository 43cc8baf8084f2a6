"""Workload analysis: capture any PyTorch model's aten ops and cost each one (MACs, FLOPs, bytes)."""

from typing import Any

from xpusim.workload.errors import CaptureError
from xpusim.workload.model import KINDS, OpCost, Totals, Workload

__all__ = ["KINDS", "CaptureError", "OpCost", "Totals", "Workload", "capture"]


def __getattr__(name: str) -> Any:  # capture needs torch: imported on first use, not with the package
    if name == "capture":
        from xpusim.workload.capture import capture

        return capture
    raise AttributeError(f"module 'xpusim.workload' has no attribute {name!r}")
