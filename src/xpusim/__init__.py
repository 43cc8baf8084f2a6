"""xpusim: how AI workloads run on AI hardware — workload cost, compression, chips, scale-out."""

from xpusim.workload import OpCost, Totals, Workload
from xpusim.workload.api import analyze

__all__ = ["OpCost", "Totals", "Workload", "analyze"]
__version__ = "0.1.0"
