"""xpusim: how AI workloads run on AI hardware — workload cost, compression, chips, scale-out."""

from typing import Any

from xpusim.workload import OpCost, Totals, Workload

__all__ = ["OpCost", "Totals", "Workload", "analyze"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # analyze needs torch: imported on first use, so torch-free commands start fast
    if name == "analyze":
        from xpusim.workload.api import analyze

        return analyze
    raise AttributeError(f"module 'xpusim' has no attribute {name!r}")
