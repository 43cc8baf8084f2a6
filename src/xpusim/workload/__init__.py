"""Workload analysis: capture any PyTorch model's aten ops and cost each one (MACs, FLOPs, bytes)."""

from xpusim.workload.capture import CaptureError, capture
from xpusim.workload.model import KINDS, OpCost, Totals, Workload

__all__ = ["KINDS", "CaptureError", "OpCost", "Totals", "Workload", "capture"]
