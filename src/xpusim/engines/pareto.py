"""Pareto fronts: the design points no other point beats on every objective at once.

One implementation for the report's trade-off plots and the sweep's ``--pareto``. Objectives are given as
``(key, direction)`` with direction ``"min"`` or ``"max"``; a point missing a value (None or NaN) for any
objective — a design that does not fit, a point that failed — is never on the front.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from xpusim.errors import UserError

DIRECTIONS = ("min", "max")


def parse_objectives(text: str | Sequence[str], directions: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """``"latency_s,energy_j"`` or ``["latency_s", "max:throughput_per_s"]`` as (key, direction) pairs.

    A bare key takes its direction from ``directions`` (default ``min``); ``max:KEY`` / ``min:KEY`` set it."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if len(items) < 2:
        raise UserError(f"pareto objectives {text!r}: name at least two, e.g. latency_s,energy_j")
    out = []
    for item in items:
        direction, _, key = item.rpartition(":")
        if direction and direction not in DIRECTIONS:
            raise UserError(f"pareto objective {item!r}: the prefix must be min: or max:")
        out.append((key, direction or (directions or {}).get(key, "min")))
    return out


def _value(point: Mapping[str, Any], key: str) -> float | None:
    v = point.get(key)
    if v is None or isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return None
    return float(v)


def pareto_mask(points: Sequence[Mapping[str, Any]], objectives: Sequence[tuple[str, str]]) -> list[bool]:
    """For each point, whether it is on the Pareto front (not dominated by any other point).

    Point a dominates b when a is at least as good on every objective and strictly better on one. Equal points
    are all on the front. O(n log n) for two objectives, O(n²) otherwise."""
    for key, direction in objectives:
        if direction not in DIRECTIONS:
            raise UserError(f"pareto objective {key!r}: direction {direction!r} is not min or max")
    # every objective turned into "smaller is better"; None where a value is missing
    vecs: list[tuple[float, ...] | None] = []
    for p in points:
        vals = [_value(p, k) for k, _ in objectives]
        if any(v is None for v in vals):
            vecs.append(None)
            continue
        vecs.append(tuple(float(v) if d == "min" else -float(v)  # type: ignore[arg-type]
                          for v, (_, d) in zip(vals, objectives, strict=True)))
    mask = [False] * len(points)
    valid = [i for i, v in enumerate(vecs) if v is not None]
    if len(objectives) == 2:
        # sweep by the first objective; a point is on the front when its second is below every earlier one's
        order = sorted(valid, key=lambda i: vecs[i])  # type: ignore[arg-type,return-value]
        best_second = math.inf
        j = 0
        while j < len(order):
            # points with equal first objective are judged together
            k = j
            while k < len(order) and vecs[order[k]][0] == vecs[order[j]][0]:  # type: ignore[index]
                k += 1
            group_best = min(vecs[i][1] for i in order[j:k])  # type: ignore[index]
            for i in order[j:k]:
                if vecs[i][1] == group_best and group_best < best_second:  # type: ignore[index]
                    mask[i] = True
            best_second = min(best_second, group_best)
            j = k
        return mask
    for i in valid:
        a = vecs[i]
        mask[i] = not any(
            all(x <= y for x, y in zip(vecs[j], a, strict=True)) and vecs[j] != a  # type: ignore[arg-type]
            for j in valid if j != i)
    return mask
