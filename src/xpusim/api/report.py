"""The six key metrics side by side: accuracy, throughput, latency, energy, cost and flexibility of every design
point (chip × dtype × batch, NPU array × dataflow, compression variant × chip, or an LLM on each chip).

`report` composes the other API calls — `roofline`, `llm`, `npu`, `compress` — so every number in a report is the
number those calls give for the same point; it adds the cost and flexibility metrics, marks points that do not fit
or cannot run (they stay in the report), and keeps, beside each number, the assumption it rests on. `Report.to_html`
renders the page (`xpusim.api.html`).
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xpusim import precision
from xpusim.api import calls, parse
from xpusim.engines.roofline import matrix_share
from xpusim.errors import UserError
from xpusim.files import check_output
from xpusim.hardware.chip import Chip, ChipError, load_chip

if TYPE_CHECKING:
    from torch import nn

Progress = Callable[[str], None]

DEFAULT_CHIPS = ("a100-sxm-80gb", "h100-sxm", "l4", "t4")
"""The chips a report compares when none are named: two training/serving flagships and two inference GPUs."""
DEFAULT_USD_PER_KWH = 0.0806
"""Electricity, USD per kWh: the US average industrial price in 2023, 8.06 ¢/kWh (U.S. Energy Information
Administration data, as published by Statista, statistics/190680, 2024-03-18)."""
DEFAULT_PUE = 1.58
"""Data-centre power usage effectiveness, facility power / IT power: the industry average in 2023 (Uptime Institute
Intelligence, "Large data centers are mostly more efficient...", 2023-11-23; 1.55-1.59 since about 2020). The power
part of the cost is TDP × PUE × the electricity price."""


ELECTRICITY_ONLY = "electricity only"
"""How a cost's basis starts when the system has no hourly price: power cost alone, lower than any rental price."""


@dataclass(frozen=True)
class Metric:
    name: str
    key: str
    better: str
    """``max`` or ``min``: the direction in which a design is better."""
    definition: str


METRICS = (
    Metric("accuracy", "accuracy", "max",
           "The task's metric measured on held-out data when a compression task is given; otherwise 'reference': "
           "the model as given, its accuracy not changed by where it runs."),
    Metric("throughput", "throughput_per_s", "max",
           "Samples per second (batch / latency); for LLMs generated tokens per second over the whole request, all "
           "sequences of the batch, prefill included."),
    Metric("latency", "latency_s", "min",
           "Seconds for one batch; for LLMs the whole request: time to first token + gen_len × time per output "
           "token (both also shown)."),
    Metric("energy", "energy_j", "min",
           "Joules per inference (per sample) or per generated token, from the per-operation energy table "
           "(Horowitz, ISSCC 2014, 45 nm, scaled by the chip's process node); an NPU uses its own table."),
    Metric("cost", "cost_usd_per_million", "min",
           "USD per million inferences or tokens: the hourly price / (3600 × throughput) × 10⁶, from --usd-per-hour "
           "or the catalog's on-demand price; without either, electricity only (TDP × PUE × the electricity price), "
           "marked as such."),
    Metric("flexibility", "flexibility", "max",
           "The share of the model's FLOPs that run on the chip's matrix engine at the chosen dtype (the rest run on "
           "vector units at a fraction of the peak); for an NPU the share that lowers to the systolic array. "
           "The dtypes the chip supports are listed beside it."),
)
METRIC_KEYS = tuple(m.key for m in METRICS)
DIRECTIONS = {m.key: m.better for m in METRICS}


@dataclass(frozen=True, kw_only=True)
class DesignPoint:
    """One design point: what was chosen (``inputs``), the six metrics, the assumption behind each, and whether it
    runs (``status``: ``ok``, ``does not fit`` or ``unsupported``, with ``details["reason"]``)."""

    label: str
    inputs: dict[str, Any]
    metrics: dict[str, float | None]
    basis: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    layers: dict[str, Any] | None = None
    """What the page draws for this point: per-layer roofline rows, NPU cycles, or LLM phases."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "status": self.status, "inputs": self.inputs, "metrics": self.metrics,
                "basis": self.basis, "details": self.details, "layers": self.layers}


@dataclass(frozen=True, kw_only=True)
class Report(calls._Result):
    """Design points judged on the six key metrics (`METRICS`), with the run's provenance."""

    kind: str
    """``model`` (chips and NPU arrays), ``llm`` or ``compress``."""
    model: str
    points: tuple[DesignPoint, ...]
    assumptions: tuple[str, ...]
    meta: dict[str, Any]

    def pareto_pairs(self) -> list[tuple[str, str]]:
        """The two trade-offs the page plots: latency vs energy, and cost vs accuracy when accuracy was measured
        (cost vs throughput otherwise)."""
        measured = any(p.metrics["accuracy"] is not None for p in self.points)
        return [("latency_s", "energy_j"), ("cost_usd_per_million", "accuracy" if measured else "throughput_per_s")]

    def to_dict(self) -> dict[str, Any]:
        return _finite({
            "kind": self.kind, "model": self.model, "meta": self.meta,
            "metrics": [{"name": m.name, "key": m.key, "better": m.better, "definition": m.definition}
                        for m in METRICS],
            "assumptions": list(self.assumptions), "points": [p.to_dict() for p in self.points],
            "pareto": {f"{x}|{y}": self.pareto(x, y) for x, y in self.pareto_pairs()}})

    def pareto(self, x: str, y: str) -> list[bool]:
        """Which points are on the Pareto front of metrics ``x`` and ``y`` (points that cannot run never are)."""
        from xpusim.engines.pareto import pareto_mask

        rows = [p.metrics if p.ok else {} for p in self.points]
        return pareto_mask(rows, [(x, DIRECTIONS[x]), (y, DIRECTIONS[y])])

    def summary(self) -> str:
        ok = [p for p in self.points if p.ok]
        lines = [f"{self.model}: {len(self.points)} design points ({len(self.points) - len(ok)} cannot run)"]
        if ok:
            fastest = max(ok, key=lambda p: p.metrics["throughput_per_s"] or 0.0)
            lines.append(f"highest throughput: {fastest.label}")
            priced = [p for p in ok if p.metrics["cost_usd_per_million"] is not None]
            if priced:
                cheapest = min(priced, key=lambda p: p.metrics["cost_usd_per_million"] or math.inf)
                lines.append(f"lowest cost: {cheapest.label}")
            frugal = [p for p in ok if p.metrics["energy_j"] is not None]
            if frugal:
                lines.append(f"least energy: {min(frugal, key=lambda p: p.metrics['energy_j'] or math.inf).label}")
        return "\n".join(lines)

    def to_html(self, path: str | Path) -> Path:
        """Write the self-contained interactive page (no network request when opened); returns the path."""
        from xpusim.api.html import write_html

        return write_html(self, Path(path))


def _finite(obj: Any) -> Any:
    """NaN and infinities as None, so the JSON is strict (a browser's JSON.parse rejects NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------- the metrics
def _hourly(chip: Chip, usd_per_hour: float | None) -> tuple[float | None, str]:
    if usd_per_hour is not None:
        return usd_per_hour, f"${usd_per_hour:g}/h (--usd-per-hour)"
    if chip.usd_per_hour is not None:
        return chip.usd_per_hour, f"${chip.usd_per_hour:g}/h on demand ({chip.usd_per_hour_source})"
    return None, ""


def _count(x: float) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:.4g}"


def _cost(hourly: float | None, hourly_basis: str, power_w: float | None, power_basis: str,
          units_per_s: float, usd_per_kwh: float, unit: str) -> tuple[float | None, float | None, str]:
    """(cost, power cost, basis) per million ``unit`` at ``units_per_s``."""
    if not units_per_s:
        return None, None, "no throughput"
    power_cost = (power_w * DEFAULT_PUE / 1000 * usd_per_kwh / (3600 * units_per_s) * 1e6) if power_w else None
    if hourly is not None:
        return (hourly / (3600 * units_per_s) * 1e6, power_cost,
                f"{hourly_basis} / (3600 × {_count(units_per_s)} {unit}/s) × 10⁶")
    if power_cost is not None:
        return (power_cost, power_cost, f"{ELECTRICITY_ONLY}: {power_basis} × PUE {DEFAULT_PUE} × "
                f"${usd_per_kwh:g}/kWh (no hourly price for this system: give --usd-per-hour)")
    return None, None, "no hourly price and no power figure: give --usd-per-hour"


def _flex_basis(chip: Chip, dtype: str, share: float | None) -> str:
    head = f"{100 * share:.1f}% of FLOPs on the matrix engine at {dtype}" if share is not None else "no FLOPs"
    return f"{head}; {chip.name} has peaks for {len(chip.dtypes())} formats: {', '.join(chip.dtypes())}"


def _energy_basis(chip: Chip) -> str:
    node = f"scaled to {chip.node_nm:g} nm" if chip.node_nm else "unscaled (no process node in the chip file)"
    return f"per-operation energy table (Horowitz, ISSCC 2014, 45 nm) {node}"


def _roofline_layers(est: Any) -> dict[str, Any]:
    bw = est.chip.main_memory.bandwidth_bytes_per_s
    return {"type": "roofline", "peak_flops_per_s": est.chip.best_peak_flops_per_s(est.dtype),
            "bandwidth_bytes_per_s": bw,
            "rows": [{"name": o.name, "kind": o.kind, "intensity": o.intensity,
                      "flops_per_s": o.flops / o.time_s if o.time_s else 0.0, "time_s": o.time_s, "bound": o.bound}
                     for o in est.ops if o.flops and o.bytes]}


def _accuracy_reference(dtype: str) -> str:
    return (f"reference: no compression task given — the model as given, run at {dtype}; measure what a format "
            "does to accuracy with xpusim report TASK --compress")


def _chip_point(model: str | nn.Module, chip: Chip, dtype: str | None, batch: int, usd_per_hour: float | None,
                usd_per_kwh: float, input_shape: Sequence[int] | None, seq_len: int | None) -> DesignPoint:
    inputs: dict[str, Any] = {"system": chip.name, "dtype": dtype, "batch": batch}
    label = f"{chip.name} · {dtype or 'default'} · batch {batch}"
    try:
        d = calls.chip_dtype_for(chip, dtype)
    except UserError as exc:
        return DesignPoint(label=label, inputs=inputs, metrics=dict.fromkeys(METRIC_KEYS), basis={},
                           status="unsupported", details={"reason": str(exc)})
    inputs["dtype"], label = d, f"{chip.name} · {d} · batch {batch}"
    rf = calls.roofline(model, chip=chip, dtype=d, batch=batch, input_shape=input_shape, seq_len=seq_len)
    est = rf.estimate
    wl = calls.workload_at(model, d, batch=batch, input_shape=input_shape, seq_len=seq_len)
    # the least memory a run needs: the weights plus the largest single op's activations (read and written)
    need = wl.totals().weight_bytes + max((o.activation_bytes_read + o.bytes_written for o in wl.ops), default=0)
    cap = chip.main_memory.capacity_bytes
    hourly, hourly_basis = _hourly(chip, usd_per_hour)
    cost, power_cost, cost_basis = _cost(hourly, hourly_basis, chip.tdp_w, f"TDP {chip.tdp_w} W",
                                         est.throughput_per_s, usd_per_kwh, "samples")
    share = est.matrix_share
    metrics = {"accuracy": None, "throughput_per_s": est.throughput_per_s, "latency_s": est.latency_s,
               "energy_j": est.energy_j / batch, "cost_usd_per_million": cost, "flexibility": share}
    tdp = f"; at TDP ({chip.tdp_w} W) at most {est.energy_tdp_j / batch:.4g} J" if est.energy_tdp_j else ""
    basis = {"accuracy": _accuracy_reference(d),
             "throughput_per_s": f"batch {batch} / latency {est.latency_s:.4g} s",
             "latency_s": f"roofline: per op max(compute, memory) at {d}, ops one after another; "
                          f"{100 * est.bound_share()['memory']:.0f}% of the time memory-bound",
             "energy_j": _energy_basis(chip) + f", per sample (batch {batch}){tdp}",
             "cost_usd_per_million": cost_basis,
             "flexibility": _flex_basis(chip, d, share)}
    details = {"utilization": est.utilization, "memory_needed_bytes": need, "memory_capacity_bytes": cap,
               "power_usd_per_million": power_cost, "usd_per_hour": hourly}
    status = "ok" if need <= cap else "does not fit"
    return DesignPoint(label=label, inputs=inputs, metrics=metrics, basis=basis, details=details, status=status,
                       layers=_roofline_layers(est))


def _llm_point(model: Any, chip: Chip, batch: int, prompt_len: int, gen_len: int, usd_per_hour: float | None,
               usd_per_kwh: float) -> DesignPoint:
    inputs: dict[str, Any] = {"system": chip.name, "batch": batch, "prompt_len": prompt_len, "gen_len": gen_len}
    label = f"{chip.name} · batch {batch}"
    try:
        e = calls.llm(model, chip=chip, batch=batch, prompt_len=prompt_len, gen_len=gen_len).estimate
    except ChipError as exc:  # no peak for the 16-bit float it would run at
        return DesignPoint(label=label, inputs=inputs, metrics=dict.fromkeys(METRIC_KEYS), basis={},
                           status="unsupported", details={"reason": str(exc)})
    tokens = e.batch * e.gen_len
    latency = e.prefill.time_s + e.decode.time_s
    hourly, hourly_basis = _hourly(chip, usd_per_hour)
    cost, power_cost, cost_basis = _cost(hourly, hourly_basis, chip.tdp_w, f"TDP {chip.tdp_w} W", e.tokens_per_s,
                                         usd_per_kwh, "tokens")
    # each phase's ops are one transformer layer (standing for all of them) plus the embedding, norm and lm_head
    ops = [*e.prefill.ops, *e.decode.ops]
    share = matrix_share(ops, [float(e.config.layers) if o.name.startswith("layer") else 1.0 for o in ops])
    dtype = e.prefill.ops[0].dtype if e.prefill.ops else "?"
    inputs["dtype"] = dtype
    metrics = {"accuracy": None, "throughput_per_s": e.tokens_per_s, "latency_s": latency,
               "energy_j": (e.prefill.energy_j + e.decode.energy_j) / tokens if tokens else None,
               "cost_usd_per_million": cost, "flexibility": share}
    basis = {"accuracy": _accuracy_reference(dtype),
             "throughput_per_s": f"{e.batch} × {e.gen_len} tokens / ({e.prefill.time_s:.4g} s prefill + "
                                 f"{e.decode.time_s:.4g} s decode)",
             "latency_s": f"time to first token {e.time_to_first_token_s:.4g} s + {e.gen_len} × time per output "
                          f"token {e.time_per_output_token_s:.4g} s (roofline per op)",
             "energy_j": _energy_basis(chip) + ", per generated token (prefill included)",
             "cost_usd_per_million": cost_basis,
             "flexibility": _flex_basis(chip, dtype, share)}
    details = {"ttft_s": e.time_to_first_token_s, "tpot_s": e.time_per_output_token_s,
               "prefill_s": e.prefill.time_s, "decode_s": e.decode.time_s, "memory_bytes": e.memory_bytes,
               "memory_capacity_bytes": chip.main_memory.capacity_bytes, "max_batch": e.max_batch,
               "power_usd_per_million": power_cost, "usd_per_hour": hourly}
    layers = {"type": "llm", "prefill_s": e.prefill.time_s, "decode_s": e.decode.time_s,
              "roofline": _roofline_layers(_PhaseView(e.chip, dtype, e.prefill.ops))}
    return DesignPoint(label=label, inputs=inputs, metrics=metrics, basis=basis, details=details,
                       status="ok" if e.fits else "does not fit", layers=layers)


@dataclass(frozen=True)
class _PhaseView:
    """An LLM phase's ops seen as an estimate (chip, dtype, ops) for the per-layer roofline."""

    chip: Chip
    dtype: str
    ops: tuple[Any, ...]


def _npu_point(model: str | nn.Module, array: str, dataflow: str, batch: int, sram_kib: Sequence[int] | None,
               dram_bytes_per_cycle: float | None, dtype: str, usd_per_hour: float | None, usd_per_kwh: float,
               input_shape: Sequence[int] | None) -> DesignPoint:
    rows, cols = parse.array(array, "npu")
    name = f"npu-{rows}x{cols}"
    inputs: dict[str, Any] = {"system": name, "dtype": dtype, "batch": batch, "dataflow": dataflow}
    res = calls.npu(model, array=(rows, cols), dataflow=dataflow, sram_kib=sram_kib,
                    dram_bytes_per_cycle=dram_bytes_per_cycle, dtype=dtype, batch=batch, input_shape=input_shape)
    run, share = res.run, res.array_share
    throughput = batch / run.time_s if run.time_s else 0.0
    power_w = run.energy_j / run.time_s if run.time_s else None
    hourly = usd_per_hour
    cost, power_cost, cost_basis = _cost(hourly, f"${usd_per_hour:g}/h (--usd-per-hour)" if hourly else "", power_w,
                                         f"modelled average power {power_w or 0:.3g} W", throughput, usd_per_kwh,
                                         "samples")
    metrics = {"accuracy": None, "throughput_per_s": throughput, "latency_s": run.time_s,
               "energy_j": run.energy_j / batch, "cost_usd_per_million": cost, "flexibility": share}
    basis = {"accuracy": _accuracy_reference(dtype),
             "throughput_per_s": f"batch {batch} / latency {run.time_s:.4g} s",
             "latency_s": f"{run.total_cycles:,} cycles at {run.cfg.clock_hz / 1e9:g} GHz, {dataflow} dataflow "
                          f"(SCALE-Sim cycle conventions, DRAM stalls included)",
             "energy_j": f"{run.cfg.energy_table.source}, per sample (batch {batch})",
             "cost_usd_per_million": cost_basis,
             "flexibility": (f"{100 * (share or 0):.1f}% of FLOPs lower to the {rows}×{cols} array's GEMMs; the "
                             f"rest run on its vector unit")}
    details = {"cycles": run.total_cycles, "tops": run.tops, "peak_tops": run.peak_tops, "tops_per_w": run.tops_per_w,
               "power_usd_per_million": power_cost, "usd_per_hour": hourly}
    lay = {"type": "npu", "rows": [{"name": r.name, "compute_cycles": r.compute_cycles,
                                    "stall_cycles": r.stall_cycles} for r in run.layers]}
    return DesignPoint(label=f"{name} · {dataflow} · batch {batch}", inputs=inputs, metrics=metrics, basis=basis,
                       details=details, layers=lay)


def _compress_points(res: calls.CompressResult, batch: int, usd_per_hour: float | None,
                     usd_per_kwh: float) -> list[DesignPoint]:
    metric = res.task.metric
    points = []
    for variant in (res.baseline, *res.variants):
        name = getattr(variant, "name", "float32")
        for system, hw in variant.hardware.items():
            inputs = {"variant": name, "system": system, "dtype": hw.get("dtype"), "batch": batch}
            label = f"{name} on {system}"
            acc_basis = (f"{metric} measured on {res.task.name}'s held-out data"
                         + (" (the float32 model)" if variant is res.baseline else f" after {name}"))
            if hw.get("latency_s") is None:
                points.append(DesignPoint(label=label, inputs=inputs, metrics=dict.fromkeys(METRIC_KEYS) | {
                    "accuracy": variant.value}, basis={"accuracy": acc_basis}, status="unsupported",
                    details={"reason": hw.get("note", "cannot run")}))
                continue
            latency, energy = hw["latency_s"], hw["energy_j"]
            throughput = batch / latency
            is_npu = system.startswith("npu-")
            chip = None if is_npu else load_chip(system)
            if chip is not None:
                hourly, hourly_basis = _hourly(chip, usd_per_hour)
                power, power_basis = chip.tdp_w, f"TDP {chip.tdp_w} W"
            else:
                hourly = usd_per_hour
                hourly_basis = f"${usd_per_hour:g}/h (--usd-per-hour)" if usd_per_hour else ""
                power = energy / latency
                power_basis = f"modelled average power {power:.3g} W"
            cost, power_cost, cost_basis = _cost(hourly, hourly_basis, power, power_basis, throughput, usd_per_kwh,
                                                 "samples")
            share = hw.get("matrix_share")
            flex = (f"{100 * share:.1f}% of FLOPs on the matrix engine at {hw.get('dtype')}" if share is not None
                    else "no FLOPs")
            if chip is not None:
                flex = _flex_basis(chip, str(hw.get("dtype")), share)
            points.append(DesignPoint(
                label=label, inputs=inputs,
                metrics={"accuracy": variant.value, "throughput_per_s": throughput, "latency_s": latency,
                         "energy_j": energy / batch, "cost_usd_per_million": cost, "flexibility": share},
                basis={"accuracy": acc_basis, "throughput_per_s": f"batch {batch} / latency {latency:.4g} s",
                       "latency_s": "roofline at the variant's widths (ideal efficiency)" if chip is not None else
                       "systolic-array cycles at the variant's word width, best dataflow per layer",
                       "energy_j": (_energy_basis(chip) if chip is not None else "the NPU's energy table")
                       + f", per sample (batch {batch})",
                       "cost_usd_per_million": cost_basis, "flexibility": flex},
                details={"size_bytes": variant.size_bytes, "sparsity": getattr(variant, "sparsity", 0.0),
                         "power_usd_per_million": power_cost, "usd_per_hour": hourly}))
    return points


# ------------------------------------------------------------------------------------------------------ report
def is_llm(model: Any) -> bool:
    """Whether ``model`` names a decoder LLM (zoo LLM, ``gpt:`` spec, HF config.json) for prefill/decode."""
    from xpusim.workload.transformer import TransformerConfig, zoo_llms

    if isinstance(model, TransformerConfig):
        return True
    return isinstance(model, str) and (model.startswith("gpt:") or model.endswith(".json") or model in zoo_llms())


def _meta(command: str | None) -> dict[str, Any]:
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    return {"command": command or "xpusim.report(...)", "xpusim": version("xpusim"), "torch": version("torch"),
            "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def _at_batch(shape: Sequence[int] | None, batch: int) -> tuple[int, ...] | None:
    """A full input shape (its first size is the batch) at ``batch``."""
    return None if shape is None else (batch, *tuple(shape)[1:])


def _names(values: str | Sequence[Any] | None, what: str) -> list[Any] | None:
    if values is None:
        return None
    items = [v.strip() for v in (values.split(",") if isinstance(values, str) else values) if str(v).strip()]
    if not items:
        raise UserError(f"{what}: give at least one")
    return items


def _with_cost_note(r: Report) -> Report:
    marked = [p.label for p in r.points if p.basis.get("cost_usd_per_million", "").startswith(ELECTRICITY_ONLY)]
    if not marked:
        return r
    note = (f"cost of {', '.join(marked)}: electricity only (no hourly price for that system; give --usd-per-hour) "
            "— not comparable with the rented chips' cost, which includes the hardware")
    return Report(kind=r.kind, model=r.model, points=r.points, assumptions=(*r.assumptions, note), meta=r.meta)


def report(model: str | nn.Module = "resnet50", *, chips: str | Sequence[str | Path | Chip] | None = None,
           batch: int | Sequence[int] = 1, dtype: str | Sequence[str] | None = None,
           compress: str | Sequence[str] | None = None, data: str | None = None, epochs: int = 0, seed: int = 0,
           npu: str | Sequence[str] | None = None, dataflow: str | Sequence[str] = "auto",
           sram_kib: Sequence[int] | None = None, dram_bytes_per_cycle: float | None = None, npu_dtype: str = "int8",
           prompt_len: int = 1024, gen_len: int = 256, input_shape: Sequence[int] | None = None,
           seq_len: int | None = None, usd_per_hour: float | None = None, usd_per_kwh: float | None = None,
           out: str | Path | None = None, command: str | None = None, progress: Progress = calls._quiet) -> Report:
    """Judge design points on the six key metrics (`METRICS`).

    - a model on chips (× ``dtype`` × ``batch``; ``dtype`` default per chip by `xpusim.api.chip_dtype_for`) and/or
      on systolic arrays ``npu`` (``"32x32,64x64"``, × ``dataflow``);
    - a decoder LLM (zoo LLM, ``gpt:`` spec, config.json) on chips: prefill ``prompt_len``, decode ``gen_len``;
    - a compression task (``model`` = ``digits-cnn``, ``mnist1d-cnn``, ``minilm`` or ``file.py:factory`` with
      ``data``) with ``compress`` = ``"default"`` or variants (``w8a8,w4a8``), each measured for accuracy and
      projected onto every chip (and one ``npu`` array).

    Chips default to `DEFAULT_CHIPS` (without ``npu``). A point that does not fit or cannot run at its dtype stays
    in the report with its ``status``. ``usd_per_kwh`` defaults to `DEFAULT_USD_PER_KWH`. ``out``: also write the
    page there (`Report.to_html`; the path is checked before any work). ``command`` is recorded in the page's
    header.
    """
    from xpusim.api.html import HTML_SUFFIXES

    check_output(out, "out", HTML_SUFFIXES)
    r = _report(model, chips=chips, batch=batch, dtype=dtype, compress=compress, data=data, epochs=epochs, seed=seed,
                npu=npu, dataflow=dataflow, sram_kib=sram_kib, dram_bytes_per_cycle=dram_bytes_per_cycle,
                npu_dtype=npu_dtype, prompt_len=prompt_len, gen_len=gen_len, input_shape=input_shape,
                seq_len=seq_len, usd_per_hour=usd_per_hour,
                usd_per_kwh=DEFAULT_USD_PER_KWH if usd_per_kwh is None else usd_per_kwh, command=command,
                progress=progress)
    if out is not None:
        r.to_html(out)
    return r


def _report(model: Any, *, chips: Any, batch: int | Sequence[int], dtype: Any, compress: Any, data: str | None,
            epochs: int, seed: int, npu: Any, dataflow: Any, sram_kib: Sequence[int] | None,
            dram_bytes_per_cycle: float | None, npu_dtype: str, prompt_len: int, gen_len: int,
            input_shape: Sequence[int] | None, seq_len: int | None, usd_per_hour: float | None, usd_per_kwh: float,
            command: str | None, progress: Progress) -> Report:
    batches = [batch] if isinstance(batch, int) else list(batch)
    if not batches:
        raise UserError("batch: give at least one batch size")
    for b in batches:
        calls._positive("batch", b)
    calls._positive("usd_per_hour", usd_per_hour, allow_zero=True)
    calls._positive("usd_per_kwh", usd_per_kwh, allow_zero=True)
    chip_names = _names(chips, "chips")
    arrays = _names(npu, "npu")
    if chip_names is None and arrays is None:
        chip_names = list(DEFAULT_CHIPS)
    the_chips = [c if isinstance(c, Chip) else load_chip(c) for c in (chip_names or [])]
    dtypes: list[str | None] = list(_names(dtype, "dtype") or [None])
    for d in dtypes:
        if d is not None:
            precision.chip_dtype_name(d)
    dataflows = _names(dataflow, "dataflow") or ["auto"]
    for df in dataflows:
        if df not in ("os", "ws", "is", "auto"):
            raise UserError(f"dataflow {df!r} is not one of os, ws, is, auto")
    for a in arrays or []:
        parse.array(a, "npu")
    title = model if isinstance(model, str) else type(model).__name__
    points: list[DesignPoint] = []
    assumptions = [f"power cost: the chip's TDP (an NPU's modelled power) × PUE {DEFAULT_PUE} × ${usd_per_kwh:g}/kWh"]

    if compress is not None:
        if not isinstance(model, str):
            raise UserError("compress reports take a task name (digits-cnn, mnist1d-cnn, minilm) or file.py:factory")
        if arrays is not None and len(arrays) > 1:
            raise UserError(f"npu {','.join(arrays)}: a compression report projects onto one NPU array")
        if len(batches) > 1:
            raise UserError("batch: a compression report takes one batch size")
        quant = None if (compress == "default" or compress == ["default"]) else _names(compress, "compress")
        res = calls.compress(model, quant=quant, chips=[c.name for c in the_chips], batch=batches[0],
                             npu=arrays[0] if arrays else None, data=data, epochs=epochs, seed=seed,
                             progress=progress)
        points = _compress_points(res, batches[0], usd_per_hour, usd_per_kwh)
        assumptions.append(f"accuracy: {res.task.metric} measured on real held-out data for every variant")
        return _with_cost_note(Report(kind="compress", model=res.task.name, points=tuple(points),
                                      assumptions=tuple(assumptions), meta=_meta(command)))

    if is_llm(model):
        if arrays is not None:
            raise UserError(f"npu {','.join(arrays)!r}: systolic-array design points take vision models, not LLMs")
        for chip in the_chips:
            for b in batches:
                progress(f"{chip.name} · batch {b} ...")
                points.append(_llm_point(model, chip, b, prompt_len, gen_len, usd_per_hour, usd_per_kwh))
        assumptions.append(f"prompt {prompt_len} tokens, {gen_len} generated; weights, KV cache and activations at "
                           "16 bits (bf16 where the chip has it)")
        name = model if isinstance(model, str) else str(getattr(model, "name", model))
        return _with_cost_note(Report(kind="llm", model=name, points=tuple(points), assumptions=tuple(assumptions),
                                      meta=_meta(command)))

    for chip in the_chips:
        for d in dtypes:
            for b in batches:
                progress(f"{chip.name} · {d or 'default dtype'} · batch {b} ...")
                points.append(_chip_point(model, chip, d, b, usd_per_hour, usd_per_kwh, _at_batch(input_shape, b),
                                          seq_len))
    for a in arrays or []:
        for df in dataflows:
            for b in batches:
                progress(f"npu {a} · {df} · batch {b} ...")
                points.append(_npu_point(model, a, df, b, sram_kib, dram_bytes_per_cycle, npu_dtype, usd_per_hour,
                                         usd_per_kwh, _at_batch(input_shape, b)))
    if the_chips:
        assumptions.append("fits: the weights plus the largest single op's activations (the least memory a run "
                           "needs) within the chip's main memory")
    return _with_cost_note(Report(kind="model", model=title, points=tuple(points), assumptions=tuple(assumptions),
                                  meta=_meta(command)))


__all__ = ["DEFAULT_CHIPS", "DEFAULT_PUE", "DEFAULT_USD_PER_KWH", "METRICS", "DesignPoint", "Metric", "Report",
           "is_llm", "report"]
