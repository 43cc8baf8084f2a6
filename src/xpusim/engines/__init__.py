"""Engines: pure functions (workload, chip, options) -> estimate."""

from xpusim.engines.roofline import Estimate, OpEstimate, roofline

__all__ = ["Estimate", "OpEstimate", "roofline"]
