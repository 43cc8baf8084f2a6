"""Design-space sweeps: thousands of API calls on dask.distributed (docs/sweep.md).

``xpusim.sweep(study, client=None, ...)`` runs every point of a study (a YAML file, a YAML string or a dict naming
one of ``roofline``, ``llm``, ``npu``, ``train``, ``compress`` and its axes) and returns a pandas DataFrame, one
row per point; `plot_pareto` draws its front. The package is callable, like ``xpusim.compress``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from xpusim.sweep.expr import Where, parse_where
from xpusim.sweep.plot import plot_pareto
from xpusim.sweep.points import KINDS, MAXIMIZE, Kind, run_batch, run_point
from xpusim.sweep.run import SweepProgress, pareto_column, read_output, summary, sweep
from xpusim.sweep.study import Point, Study, load_study, point_key

__all__ = ["KINDS", "MAXIMIZE", "Kind", "Point", "Study", "SweepProgress", "Where", "load_study", "pareto_column",
           "parse_where", "plot_pareto", "point_key", "read_output", "run_batch", "run_point", "summary", "sweep"]


class _SweepPackage(types.ModuleType):
    """``xpusim.sweep`` names both this package and its function: ``xpusim.sweep("study.yaml")`` is `sweep`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _SweepPackage
