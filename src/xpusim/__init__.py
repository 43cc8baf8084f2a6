"""xpusim: how AI workloads run on AI hardware — workload cost, compression, chips, scale-out.

The public API (docs/api.md)::

    import xpusim
    wl = xpusim.analyze("resnet50", batch=8)
    rf = xpusim.roofline("resnet50", chip="a100-sxm-80gb", dtype="fp16", batch=32)
    print(rf.summary()); rf.to_dict()

Everything is imported on first use, so ``import xpusim`` is cheap and torch is loaded only by what needs it.
"""

from importlib import import_module
from typing import Any

from xpusim.errors import UserError
from xpusim.workload import OpCost, Totals, Workload

_API = ("analyze", "analyze_sweep", "roofline", "llm", "npu", "train", "search", "compress", "AnalyzeSweep",
        "RooflineResult", "LLMResult", "NpuResult", "TrainResult", "SearchPlans", "CompressResult")
_LAZY = {
    **dict.fromkeys(_API, "xpusim.api"),  # one function per question, and the results they return
    "Report": "xpusim.api.report", "DesignPoint": "xpusim.api.report",
    "serve": "xpusim.api.serve", "ServeResult": "xpusim.api.serve",
    # the inputs, as objects
    "Chip": "xpusim.hardware.chip", "Cluster": "xpusim.hardware.cluster", "ParallelPlan": "xpusim.parallel.plan",
    "TransformerConfig": "xpusim.workload.transformer", "Precision": "xpusim.workload.transformer",
    "load_chip": "xpusim.hardware.chip", "load_cluster": "xpusim.hardware.cluster",
}

__all__ = ["OpCost", "Totals", "UserError", "Workload", "report", "sweep", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # imported on first use, so torch-free commands start fast
    if name == "compress":  # the package, made callable by xpusim.api (see xpusim.api.calls._CompressPackage)
        import_module("xpusim.api")
        return import_module("xpusim.compress")
    if name in ("report", "sweep"):  # packages callable as their API call (see xpusim.report, xpusim.sweep)
        return import_module(f"xpusim.{name}")
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xpusim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
