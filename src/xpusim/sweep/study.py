"""A study: which API function to sweep, the fixed values, the axes, the constraints — read from YAML, checked,
and expanded into points with content keys.

::

    study: npu                       # the kind: roofline, llm, serve, npu, train or compress
    model: [resnet18, resnet50]      # a list is an axis (points: the cartesian product of all axes)
    array: [16x16, 32x32]
    dataflow: [os, ws, is]
    sram_kb: ["256,256,128", "6144,6144,2048"]
    dram_bytes_per_cycle: 16         # a scalar is a fixed value
    where: "dram_bytes_per_cycle >= 8"   # optional constraint(s) on a point's inputs (xpusim.sweep.expr)
    pareto: [latency_s, energy_j]    # optional default Pareto objectives

Every key is checked against the kind's API signature before anything runs (`xpusim.sweep.points.KINDS`).
A point's content key is the SHA-256 of the canonical JSON of the kind, its inputs and xpusim's version: what
`xpusim.sweep.run.sweep` resumes by.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import xpusim
from xpusim.errors import UserError
from xpusim.names import suggest
from xpusim.sweep.expr import Where, parse_where
from xpusim.sweep.points import KINDS, SEARCH_BATCH_SIZE, SEARCH_KEYS, Kind

RESERVED = {"study": "the kind: " + ", ".join(KINDS), "where": "constraint(s) every point must satisfy",
            "pareto": "default Pareto objectives, e.g. [latency_s, energy_j]"}
"""Study keys that are no input of a point."""
MAX_POINTS = 5_000_000
"""A grid larger than this is refused (it is most likely a mistake, and its points would not fit in memory)."""
Scalar = str | int | float | bool | None


@dataclass(frozen=True, kw_only=True)
class Point:
    """One design point: its content key and its inputs (study key → value, fixed values included)."""

    key: str
    inputs: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Study:
    """A checked study: the kind, fixed values and axes (in file order), the constraints."""

    kind: str
    fixed: dict[str, Scalar]
    axes: dict[str, tuple[Scalar, ...]]
    order: tuple[str, ...]
    """Input keys in the order the study gave them: the output's first columns."""
    where: tuple[Where, ...] = ()
    pareto: tuple[str, ...] | None = None
    """Objectives named in the study (``pareto:``), used when the caller names none."""
    source: str = "<dict>"

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    @property
    def grid_size(self) -> int:
        """Points of the cartesian product, before the constraints."""
        return math.prod(len(v) for v in self.axes.values())

    def batch_size(self) -> int:
        """Points per dask task by default."""
        return SEARCH_BATCH_SIZE if self.fixed.get("search") else self.spec.batch_size

    def iter_inputs(self) -> Iterator[dict[str, Any]]:
        """Every combination of the axes that satisfies the constraints, as a point's inputs."""
        names = list(self.axes)
        for combo in itertools.product(*(self.axes[n] for n in names)):
            values = dict(self.fixed)
            values.update(zip(names, combo, strict=True))
            inputs = {k: values[k] for k in self.order}
            if all(w.holds(inputs) for w in self.where):
                yield inputs

    def points(self) -> list[Point]:
        """The study's points in grid order, each once (a value listed twice gives one point)."""
        seen: dict[str, Point] = {}
        for inputs in self.iter_inputs():
            key = point_key(self.kind, inputs)
            seen.setdefault(key, Point(key=key, inputs=inputs))
        if not seen:
            raise UserError(f"study {self.source}: the where constraint leaves no points of the "
                            f"{self.grid_size:,} in the grid")
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"study": self.kind}
        for k in self.order:
            d[k] = list(self.axes[k]) if k in self.axes else self.fixed[k]
        if self.where:
            d["where"] = [w.text for w in self.where]
        if self.pareto:
            d["pareto"] = list(self.pareto)
        return d


def point_key(kind: str, inputs: Mapping[str, Any]) -> str:
    """The content key of a point: SHA-256 of the canonical JSON of the kind, the inputs and xpusim's version."""
    text = json.dumps({"study": kind, "inputs": dict(inputs), "xpusim": xpusim.__version__}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte: YAML text, not a path
        return False


def _read(study: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(study, Mapping):
        return study, "<dict>"
    if not isinstance(study, str | Path):
        raise UserError(f"study {study!r}: expected a path, a YAML string or a dict")
    if isinstance(study, Path) or ("\n" not in study and (study.strip().lower().endswith((".yaml", ".yml"))
                                                          or _is_file(study))):
        path = Path(study)
        if not path.is_file():
            raise UserError(f"study file {str(path)!r} does not exist")
        text, source = path.read_text(), str(path)
    else:
        text, source = study, "<yaml>"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"study {source}: not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise UserError(f"study {source}: expected a mapping such as 'study: npu' followed by keys and lists of "
                        f"values, got {type(doc).__name__}")
    return doc, source


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _strings(value: Any, key: str, source: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise UserError(f"study {source}: {key} {value!r}: expected a string or a list of strings")
    return tuple(items)


def load_study(study: str | Path | Mapping[str, Any]) -> Study:
    """Read and check a study (a ``.yaml`` path, a YAML string or a dict); every mistake is a `UserError`."""
    doc, source = _read(study)
    kind = doc.get("study")
    if kind not in KINDS:
        given = f"study {kind!r}" if "study" in doc else "no 'study' key"
        raise UserError(f"study {source}: {given}; expected 'study: KIND' with KIND one of {', '.join(KINDS)}")
    spec = KINDS[kind]
    allowed = spec.keys()
    fixed: dict[str, Scalar] = {}
    axes: dict[str, tuple[Scalar, ...]] = {}
    for key, value in doc.items():
        if key in RESERVED:
            continue
        if not isinstance(key, str) or key not in allowed:
            close = suggest(str(key), allowed)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"study {source}: unknown key {key!r} for a {kind} study.{hint} Allowed: "
                            f"{', '.join(allowed)} (and {', '.join(RESERVED)})")
        if isinstance(value, list | tuple):
            if not value:
                raise UserError(f"study {source}: axis {key!r} is empty; give at least one value")
            bad = [v for v in value if not _is_scalar(v)]
            if bad:
                raise UserError(f"study {source}: axis {key!r} holds {bad[0]!r}; an axis is a list of numbers, "
                                "strings or booleans (write shapes and sizes as text: \"256,256,128\")")
            axes[key] = tuple(value)
        elif _is_scalar(value):
            fixed[key] = value
        else:
            raise UserError(f"study {source}: {key} {value!r}: expected a value or a list of values")
    order = tuple(k for k in doc if k not in RESERVED)
    _check_kind(spec, fixed, axes, source)
    where = tuple(parse_where(t, set(order)) for t in _strings(doc["where"], "where", source)) \
        if doc.get("where") is not None else ()
    pareto = _strings(doc["pareto"], "pareto", source) if doc.get("pareto") is not None else None
    st = Study(kind=kind, fixed=fixed, axes=axes, order=order, where=where, pareto=pareto, source=source)
    if st.grid_size > MAX_POINTS:
        raise UserError(f"study {source}: {st.grid_size:,} points is more than {MAX_POINTS:,}; split the study")
    return st


def _check_kind(spec: Kind, fixed: dict[str, Scalar], axes: dict[str, tuple[Scalar, ...]], source: str) -> None:
    given = set(fixed) | set(axes)
    for alias, name in spec.aliases.items():
        if alias in given and name in given:
            raise UserError(f"study {source}: give {alias} or {name}, not both")
    if spec.name == "train":
        if "search" in axes or not isinstance(fixed.get("search", False), bool):
            raise UserError(f"study {source}: search must be a fixed true or false, not an axis")
        if fixed.get("search"):
            plan_keys = sorted(given - set(SEARCH_KEYS) - {"search"})
            if plan_keys:
                raise UserError(f"study {source}: with search: true the search chooses the plan; remove "
                                f"{', '.join(plan_keys)} (a search study takes {', '.join(SEARCH_KEYS)})")
            missing = [k for k in ("model", "gpus", "batch") if k not in given]
        else:
            if "top" in given:
                raise UserError(f"study {source}: top is for search: true")
            missing = [k for k in spec.required_keys() if k not in given]
    elif spec.name == "npu":
        missing = [] if "model" in given or {"scalesim_config", "scalesim_topology"} <= given else ["model"]
    elif spec.name == "compress":
        missing = [] if given & {"quant", "prune"} else ["quant or prune (one variant per point)"]
    else:
        missing = [k for k in spec.required_keys() if k not in given]
    if missing:
        raise UserError(f"study {source}: a {spec.name} study needs {', '.join(missing)}")
