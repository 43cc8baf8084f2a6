"""One design point of a sweep: a study key set mapped onto an API call, its result flattened into scalars.

Each study kind (`KINDS`) names the API function whose signature decides the keys a study may use, the point
function that calls it, the headline output columns (units in names) and how many points one dask task holds.
Point functions and `run_batch` are top-level functions, so dask pickles them by reference: a worker needs
xpusim installed, nothing else.
"""

from __future__ import annotations

import inspect
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import xpusim
from xpusim.api import calls, parse
from xpusim.errors import UserError

Row = tuple[str, dict[str, Any] | None, str | None]
"""What a worker sends back per point: (content key, outputs or None, error message or None)."""


def _number(v: Any) -> float | None:
    return None if v is None else float(v)


def _sram(value: Any) -> Any:
    return parse.sram_kib(value) if isinstance(value, str) else value


def _shape(value: Any) -> Any:
    return parse.shape(value) if isinstance(value, str) else value


def _names(value: Any) -> Any:
    """``"t4,a100-sxm-80gb"`` → a list of names (``""`` or ``none``: an empty list)."""
    if isinstance(value, str):
        return [] if value.strip().lower() in ("", "none") else [v.strip() for v in value.split(",") if v.strip()]
    return value


def _args(inputs: Mapping[str, Any], kind: Kind) -> dict[str, Any]:
    """A point's inputs as keyword arguments of the kind's API function (aliases renamed, text forms parsed)."""
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if key in kind.study_only:
            continue
        name = kind.aliases.get(key, key)
        convert = kind.converters.get(name)
        out[name] = convert(value) if convert is not None and value is not None else value
    return out


# ----------------------------------------------------------------------------------------------- point functions
def npu_point(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`xpusim.npu` at one point: cycles, latency, energy, TOPS of the whole model."""
    t = calls.npu(**_args(inputs, KINDS["npu"])).to_dict()["totals"]
    batch = inputs.get("batch") or 1
    return {"cycles": t["total_cycles"], "stall_cycles": t["stall_cycles"], "macs": t["macs"],
            "latency_s": t["time_s"], "throughput_per_s": batch / t["time_s"] if t["time_s"] else None,
            "energy_j": t["energy_j"], "tops": t["tops"], "peak_tops": t["peak_tops"], "tops_per_w": t["tops_per_w"],
            "utilization": t["utilization"]}


def roofline_point(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`xpusim.roofline` at one point: latency, throughput, energy, cost of one batch."""
    d = calls.roofline(**_args(inputs, KINDS["roofline"])).to_dict()
    t = d["totals"]
    share = t["time_share_by_bound"]
    return {"dtype": d["dtype"], "latency_s": t["latency_s"], "throughput_per_s": t["throughput_per_s"],
            "flops": t["flops"], "bytes": t["bytes"], "achieved_flops_per_s": t["achieved_flops_per_s"],
            "utilization": t["utilization"], "energy_j": t["energy_j"],
            "energy_tdp_upper_bound_j": t["energy_tdp_upper_bound_j"],
            "compute_bound_share": share["compute"], "memory_bound_share": share["memory"],
            "cost_usd_per_million": t.get("cost_usd_per_million")}


def llm_point(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`xpusim.llm` at one point: TTFT, time per output token, tokens/s, memory and whether it fits."""
    d = calls.llm(**_args(inputs, KINDS["llm"])).to_dict()
    pre, dec, mem = d["prefill"], d["decode"], d["memory"]
    return {"ttft_s": d["time_to_first_token_s"], "tpot_s": dec["time_per_token_s"], "tokens_per_s": d["tokens_per_s"],
            "prefill_s": pre["time_s"], "decode_s": dec["time_s"], "latency_s": pre["time_s"] + dec["time_s"],
            "flops": pre["flops"] + dec["flops"], "energy_j": pre["energy_j"] + dec["energy_j"],
            "memory_bytes": mem["total_bytes"], "weights_bytes": mem["weights_bytes"],
            "kv_cache_bytes": mem["kv_cache_bytes"], "activation_bytes": mem["activation_bytes"],
            "capacity_bytes": mem["capacity_bytes"], "fits": mem["fits"], "max_batch": mem["max_batch"],
            "cost_usd_per_million_tokens": d.get("cost_usd_per_million_tokens")}


def serve_point(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`xpusim.api.serve.serve` at one point: throughput, TTFT and TPOT percentiles, KV use, preemptions, and with
    ``slo`` the capacity."""
    from xpusim.api.serve import serve

    d = serve(**_args(inputs, KINDS["serve"])).to_dict()
    ttft, tpot = d["ttft_s"], d["tpot_s"]
    return {"requests_per_s": d["requests_per_s"], "output_tokens_per_s": d["output_tokens_per_s"],
            "ttft_p50_s": ttft["p50"], "ttft_p99_s": ttft["p99"], "tpot_p50_s": tpot["p50"], "tpot_p99_s": tpot["p99"],
            "e2e_p99_s": d["e2e_s"]["p99"], "queue_p99_s": d["queue_s"]["p99"], "kv_utilization": d["kv_utilization"],
            "preemptions": d["preemptions"], "gpus": d.get("disaggregated", {}).get("gpus", d["gpus"]),
            "capacity_requests_per_s": d.get("capacity", {}).get("rate_per_s")}


SEARCH_KEYS = ("model", *calls.SEARCH_KEYS)
"""The keys of a ``train`` study with ``search: true`` (the search chooses the plan)."""


def train_point(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`xpusim.train` at one point, or with ``search: true`` `xpusim.search` and its best plan (`calls.parallel`)."""
    search = bool(inputs.get("search"))
    given = {k: v for k, v in inputs.items() if k != "search"} if search else _args(inputs, KINDS["train"])
    r = calls.parallel(search=search, **given)
    step = r.step
    extra: dict[str, Any] = ({"plans_evaluated": r.found.evaluated, "plans_fitting": r.found.fitting}
                             if isinstance(r, calls.SearchPlans) else {"plans_evaluated": None, "plans_fitting": None})
    d = step.to_dict()
    plan = d["plan"]
    return {"step_time_s": d["step_time_s"], "tokens_per_s": d["tokens_per_s"], "samples_per_s": d["samples_per_s"],
            "mfu": d["mfu"], "hfu": d["hfu"], "model_tflops_per_gpu": d["model_tflops_per_gpu"],
            "hardware_tflops_per_gpu": d["hardware_tflops_per_gpu"], "bubble_fraction": d["bubble_fraction"],
            "memory_bytes": d["memory_per_gpu_bytes"]["total"], "capacity_bytes": d["capacity_bytes"],
            "fits": d["fits"], "comm_s": sum(d["comm_s"].values()), "plan": step.plan.label(),
            **{f"plan_{k}": plan[k] for k in PLAN_COLUMNS}, **extra}


PLAN_COLUMNS = ("dp", "tp", "pp", "cp", "ep", "etp", "vp", "micro_batch", "micro_batches", "global_batch", "schedule",
                "zero", "sp", "recompute", "flash", "fp8")


def _system_column(system: str, what: str) -> str:
    return f"{re.sub(r'[^0-9a-zA-Z]+', '_', system).strip('_')}_{what}"


def compress_point(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`xpusim.compress` with one variant (one ``quant`` or one ``prune``): metric, size, and latency and energy on
    each projected system (``latency_s``/``energy_j``: the first one; ``<system>_latency_s`` for each)."""
    args = _args(inputs, KINDS["compress"])
    quant, prune = args.get("quant") or [], args.get("prune") or []
    if len(quant) + len(prune) != 1:
        raise UserError(f"a compress point runs one variant: give one quant or one prune, not quant={quant!r} "
                        f"prune={prune!r}")
    r = calls.compress(**args)
    b, v = r.baseline, r.variants[0]
    out: dict[str, Any] = {
        "metric": r.task.metric, "metric_value": v.value, "baseline_value": b.value, "metric_delta": v.value - b.value,
        "size_bytes": v.size_bytes, "baseline_size_bytes": b.size_bytes,
        "compression_ratio": b.size_bytes / v.size_bytes if v.size_bytes else None, "params": v.params,
        "macs": v.macs, "sparsity": v.sparsity, "latency_s": None, "energy_j": None}
    for i, (system, hw) in enumerate(v.hardware.items()):
        if i == 0:
            out["latency_s"], out["energy_j"] = _number(hw.get("latency_s")), _number(hw.get("energy_j"))
        for what in ("latency_s", "energy_j", "cycles"):
            if what in hw:
                out[_system_column(system, what)] = _number(hw[what])
    return out


# ----------------------------------------------------------------------------------------------------- the kinds
@dataclass(frozen=True, kw_only=True)
class Kind:
    """A study kind: the API function it sweeps and what a point of it produces."""

    name: str
    api: Callable[..., Any]
    """The API function whose keyword parameters are the study's keys (less `excluded`, plus `aliases` and
    `study_only`)."""
    point: Callable[[Mapping[str, Any]], dict[str, Any]]
    """Top-level function: a point's inputs → its outputs (flat scalars)."""
    outputs: tuple[tuple[str, str], ...]
    """Headline output columns and their Arrow types (``float64``, ``int64``, ``bool``, ``string``)."""
    batch_size: int
    """Points per dask task by default: hundreds of cheap points, one expensive point."""
    excluded: frozenset[str] = frozenset()
    """API parameters a study cannot set (objects, callbacks, real measurements)."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Study key → API parameter (``sram_kb`` → ``sram_kib``)."""
    converters: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    """API parameter → how its text form in a study becomes the argument (``"256,256,128"`` → (256, 256, 128))."""
    study_only: Mapping[str, str] = field(default_factory=dict)
    """Keys that are no API parameter: name → meaning."""
    required: tuple[str, ...] = ()
    """Keys a study must give beyond the signature's parameters without default."""

    def parameters(self) -> dict[str, inspect.Parameter]:
        return {n: p for n, p in inspect.signature(self.api).parameters.items() if n not in self.excluded}

    def keys(self) -> list[str]:
        """Every key a study of this kind may use (inputs; the reserved ``study``/``where``/``pareto`` aside)."""
        return [*self.parameters(), *self.aliases, *self.study_only]

    def required_keys(self) -> list[str]:
        params = self.parameters()
        return [*(n for n, p in params.items() if p.default is inspect.Parameter.empty), *self.required]


def _serve_api() -> Callable[..., Any]:
    from xpusim.api.serve import serve

    return serve


F, INT, B, S = "float64", "int64", "bool", "string"
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind(name="roofline", api=calls.roofline, point=roofline_point, batch_size=100,
         excluded=frozenset({"example_inputs", "measure", "threads"}), converters={"input_shape": _shape},
         outputs=(("dtype", S), ("latency_s", F), ("throughput_per_s", F), ("flops", INT), ("bytes", INT),
                  ("achieved_flops_per_s", F), ("utilization", F), ("energy_j", F), ("energy_tdp_upper_bound_j", F),
                  ("compute_bound_share", F), ("memory_bound_share", F), ("cost_usd_per_million", F))),
    Kind(name="llm", api=calls.llm, point=llm_point, batch_size=200, excluded=frozenset({"require_fit"}),
         outputs=(("ttft_s", F), ("tpot_s", F), ("tokens_per_s", F), ("prefill_s", F), ("decode_s", F),
                  ("latency_s", F), ("flops", F), ("energy_j", F), ("memory_bytes", INT), ("weights_bytes", INT),
                  ("kv_cache_bytes", INT), ("activation_bytes", INT), ("capacity_bytes", INT), ("fits", B),
                  ("max_batch", INT), ("cost_usd_per_million_tokens", F))),
    Kind(name="serve", api=_serve_api(), point=serve_point, batch_size=2,
         excluded=frozenset({"progress", "trace", "trace_in", "plot"}),
         outputs=(("requests_per_s", F), ("output_tokens_per_s", F), ("ttft_p50_s", F), ("ttft_p99_s", F),
                  ("tpot_p50_s", F), ("tpot_p99_s", F), ("e2e_p99_s", F), ("queue_p99_s", F), ("kv_utilization", F),
                  ("preemptions", INT), ("gpus", INT), ("capacity_requests_per_s", F))),
    Kind(name="npu", api=calls.npu, point=npu_point, batch_size=100,
         excluded=frozenset({"example_inputs", "progress", "check", "check_layers"}),
         aliases={"sram_kb": "sram_kib"}, converters={"sram_kib": _sram, "input_shape": _shape},
         outputs=(("cycles", INT), ("stall_cycles", INT), ("macs", INT), ("latency_s", F), ("throughput_per_s", F),
                  ("energy_j", F), ("tops", F), ("peak_tops", F), ("tops_per_w", F), ("utilization", F))),
    Kind(name="train", api=calls.train, point=train_point, batch_size=50,
         excluded=frozenset({"plan"}), converters={"layer_ms": parse.layer_ms},
         study_only={"search": "true: run the plan search per point (keys: " + ", ".join(SEARCH_KEYS) +
                               ") and report its best plan",
                     "top": "with search: how many plans the search re-simulates (default 10)"},
         outputs=(("step_time_s", F), ("tokens_per_s", F), ("samples_per_s", F), ("mfu", F), ("hfu", F),
                  ("model_tflops_per_gpu", F), ("hardware_tflops_per_gpu", F), ("bubble_fraction", F),
                  ("memory_bytes", F), ("capacity_bytes", F), ("fits", B), ("comm_s", F), ("plan", S),
                  *((f"plan_{k}", S if k in ("schedule", "recompute") else B if k == "sp" else INT)
                    for k in PLAN_COLUMNS),
                  ("plans_evaluated", INT), ("plans_fitting", INT))),
    Kind(name="compress", api=calls.compress, point=compress_point, batch_size=1, excluded=frozenset({"progress"}),
         converters={"quant": lambda v: [v] if isinstance(v, str) else v,
                     "prune": lambda v: [v] if isinstance(v, str) else v, "chips": _names},
         outputs=(("metric", S), ("metric_value", F), ("baseline_value", F), ("metric_delta", F), ("size_bytes", INT),
                  ("baseline_size_bytes", INT), ("compression_ratio", F), ("params", INT), ("macs", INT),
                  ("sparsity", F), ("latency_s", F), ("energy_j", F))),
)}
"""Every study kind by name."""

SEARCH_BATCH_SIZE = 1
"""Points per task for a ``train`` study with ``search: true`` (each point searches thousands of plans)."""

MAXIMIZE = frozenset({"throughput_per_s", "tokens_per_s", "samples_per_s", "tops", "peak_tops", "tops_per_w",
                      "utilization", "achieved_flops_per_s", "mfu", "hfu", "model_tflops_per_gpu",
                      "hardware_tflops_per_gpu", "metric_value", "metric_delta", "compression_ratio", "max_batch",
                      "compute_bound_share", "sparsity"})
"""Outputs where more is better: a Pareto objective named bare takes ``max`` for these, ``min`` otherwise."""


# ------------------------------------------------------------------------------------------------- running points
def error_text(exc: BaseException) -> str:
    """A failed point's ``error`` column: the message of a user mistake, the type and message otherwise."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


def run_point(kind: str, inputs: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(outputs, None), or (None, error message) when the point raises: a failing point never stops a sweep."""
    try:
        return KINDS[kind].point(inputs), None
    except Exception as exc:  # any failure of one point becomes its row's error
        return None, error_text(exc)


_threads_limited = False


def _one_torch_thread() -> None:
    """Workers run one point at a time per thread: torch's own thread pool would only oversubscribe the cores."""
    global _threads_limited
    if not _threads_limited and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
        _threads_limited = True


def run_batch(kind: str, points: Sequence[tuple[str, Mapping[str, Any]]], *,
              limit_threads: bool = True) -> dict[str, Any]:
    """Run a task's points one after another (on a dask worker, or in-process for the serial path).

    Returns ``{"version": xpusim's version here, "seconds": wall time, "rows": [(key, outputs, error), ...]}``."""
    start = time.perf_counter()
    rows: list[Row] = []
    for key, inputs in points:
        if limit_threads:
            _one_torch_thread()
        outputs, error = run_point(kind, inputs)
        rows.append((key, outputs, error))
    return {"version": xpusim.__version__, "seconds": time.perf_counter() - start, "rows": rows}
