"""The composition layer: xpusim's public Python API (see docs/api.md). One function per question —
`analyze`, `roofline`, `llm`, `npu`, `train`, `search`, `compress` — each returning a frozen result with
``to_dict()`` (the CLI's JSON), ``to_json()`` and ``summary()``."""

from xpusim.api.calls import (
    DEFAULT_PROJECTION_CHIP,
    DEFAULT_QUANTS,
    AnalyzeSweep,
    CompressResult,
    LLMResult,
    NpuResult,
    RooflineResult,
    SearchPlans,
    TrainResult,
    analyze,
    analyze_sweep,
    chip_dtype_for,
    compress,
    dumps,
    llm,
    npu,
    parallel,
    roofline,
    search,
    train,
    workload_at,
)
from xpusim.api.report import Report, report

__all__ = [
    "DEFAULT_PROJECTION_CHIP", "DEFAULT_QUANTS", "AnalyzeSweep", "CompressResult", "LLMResult", "NpuResult",
    "Report", "RooflineResult", "SearchPlans", "TrainResult", "analyze", "analyze_sweep", "chip_dtype_for",
    "compress", "dumps", "llm", "npu", "parallel", "report", "roofline",
    "search", "train", "workload_at",
]
