"""The public Python API: one function per question, each composing a model, a strategy and a system.

Every function takes names, files or objects (a zoo name, ``file.py:factory`` or an ``nn.Module``; a catalog chip
name, a chip ``.yaml`` or a `Chip`; a cluster name, file or `Cluster`), validates its arguments the way the CLI does
(bad input raises `xpusim.UserError` naming the field, the value and what is allowed), and returns a frozen result
with ``to_dict()`` (exactly the CLI's ``--format json``), ``to_json()`` and ``summary()`` (the words the CLI prints
under its table). This layer owns every policy decision — the dtype a chip is used at, how int8/int4 retype a
capture, which config a name means, how a compressed model is projected onto a chip — so the CLI only parses,
calls and renders.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xpusim.compress as _compress_package
from xpusim import precision
from xpusim.api import parse
from xpusim.errors import UserError
from xpusim.hardware.chip import Chip, load_chip
from xpusim.hardware.cluster import Cluster, load_cluster
from xpusim.units import GIGA, KIB, TERA
from xpusim.workload.model import SWEEP_PARAMS, Workload
from xpusim.workload.transformer import Precision, TransformerConfig, load_transformer

if TYPE_CHECKING:  # torch-free import: these are only types here
    from torch import nn

    from xpusim.engines.llm import LLMEstimate
    from xpusim.engines.measure import Measured
    from xpusim.engines.npu import NpuRun
    from xpusim.engines.npu_check import CheckResult
    from xpusim.engines.roofline import Estimate
    from xpusim.parallel.plan import ParallelPlan
    from xpusim.parallel.search import SearchResult
    from xpusim.parallel.simulate import StepResult
    from xpusim.parallel.spec import TrainModel

ModelArg = "str | nn.Module"
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def dumps(obj: Any) -> str:
    """The JSON text of a result (what ``--format json`` prints)."""
    return json.dumps(obj, indent=2)


class _Result:
    """What every result has: ``to_dict()``, ``to_json()`` and ``summary()``."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        return dumps(self.to_dict())

    def summary(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.summary()


def _positive(name: str, value: int | float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{name} {value!r} must be a {'non-negative' if allow_zero else 'positive'} number")


def _shape(input_shape: Sequence[int] | None) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UserError(f"input_shape={input_shape!r}: expected positive sizes such as (1, 3, 224, 224)")
    return shape


MODES = ("inference", "training")


# ------------------------------------------------------------------------------------------------------- analyze
DEVICES = ("auto", "meta", "eager")


def analyze(model: str | nn.Module, example_inputs: Any = None, *, batch: int = 1,
            input_shape: Sequence[int] | None = None, image_size: int | None = None, seq_len: int | None = None,
            mode: str = "inference", device: str = "auto", dtype: str | None = None, name: str | None = None,
            example_kwargs: dict[str, Any] | None = None) -> Workload:
    """Per-op MACs, FLOPs, params and bytes of one run of ``model`` (a `Workload`: ``to_dict()``, ``summary()``).

    ``device``: ``meta`` runs on shape-only stand-ins (no memory, no arithmetic); ``eager`` on real tensors, so
    PyTorch takes the kernels a real run would (a factory's own weights and inputs as given; a zoo model gets random
    weights); ``auto`` (default) is meta, and eager when meta cannot run the model (data-dependent code such as a
    detector's ``nonzero``/``nms``, ``.item()``, packed sequences), with a note in ``Workload.notes`` saying why.
    The model object is never modified. Zoo names are served from the capture cache when the same capture was made
    before (torch is then not imported).
    """
    for n, v in (("batch", batch), ("image_size", image_size), ("seq_len", seq_len)):
        _positive(n, v)
    if mode not in MODES:
        raise UserError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if device not in DEVICES:
        raise UserError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    if dtype is not None:
        dtype = precision.torch_dtype_name(dtype)
    shape = _shape(input_shape)
    if device == "auto":
        from dataclasses import replace

        from xpusim.workload.errors import CaptureError

        again = {"batch": batch, "input_shape": shape, "image_size": image_size, "seq_len": seq_len, "mode": mode,
                 "dtype": dtype, "name": name, "example_kwargs": example_kwargs}
        try:
            return analyze(model, example_inputs, device="meta", **again)  # type: ignore[arg-type]
        except CaptureError as exc:
            why = str(exc).split(": ", 1)[-1]
        if dtype is not None and not isinstance(model, str):
            raise UserError(f"meta could not run the model ({why}) and dtype= casts only on meta: cast the module "
                            "yourself and analyze it with device='eager'")
        wl = analyze(model, example_inputs, device="eager", **again)  # type: ignore[arg-type]
        note = (f"meta could not run this model ({why[:160]}); it was run eagerly on real tensors instead "
                f"({wl.params:,} parameters in memory)")
        return replace(wl, notes=(*wl.notes, note))
    if isinstance(model, str) and example_inputs is None and example_kwargs is None and name is None:
        from xpusim.workload.cache import analyze_cached

        return analyze_cached(model, batch=batch, input_shape=shape, image_size=image_size, seq_len=seq_len,
                              dtype=dtype, mode=mode, device=device)
    from xpusim.workload.api import analyze as capture_model

    return capture_model(model, example_inputs, example_kwargs=example_kwargs, batch=batch, input_shape=shape,
                         image_size=image_size, seq_len=seq_len, mode=mode, device=device, dtype=dtype, name=name)


def _sweep_dict(model: str, param: str, results: Sequence[tuple[int, Workload]]) -> dict[str, Any]:
    return {
        "model": model,
        "sweep": {"param": param, "values": [v for v, _ in results]},
        "results": [{"value": v, "input_shapes": [list(s) for s in wl.input_shapes], "totals": wl.totals().to_dict(),
                     "uncounted": dict(wl.uncounted)} for v, wl in results],
        "changed_layers": changed_layers(results),
    }


def changed_layers(results: Sequence[tuple[int, Workload]], limit: int = 12) -> list[dict[str, Any]]:
    """Layers whose output shape differs between the first and last value of a sweep (first ``limit``)."""
    if len(results) < 2:
        return []
    first, last = results[0][1], results[-1][1]
    last_by_name = {o.name: o for o in last.ops}
    out = []
    for o in first.ops:
        other = last_by_name.get(o.name)
        if other is not None and other.output_shape != o.output_shape:
            out.append({"name": o.name, "from": list(o.output_shape), "to": list(other.output_shape)})
            if len(out) >= limit:
                break
    return out



@dataclass(frozen=True, kw_only=True)
class AnalyzeSweep(_Result):
    """How a model's cost grows with batch, sequence length or image size."""

    model: str
    param: str
    results: tuple[tuple[int, Workload], ...]

    def to_dict(self) -> dict[str, Any]:
        return _sweep_dict(self.model, self.param, self.results)

    def to_csv(self) -> str:
        rows = ["value,macs,flops,params,bytes_read,bytes_written,weight_bytes,activation_bytes"]
        for v, wl in self.results:
            t = wl.totals()
            rows.append(f"{v},{t.macs},{t.flops},{t.params},{t.bytes_read},{t.bytes_written},{t.weight_bytes},"
                        f"{t.activation_bytes}")
        return "\n".join(rows) + "\n"

    def summary(self) -> str:
        first = self.results[0][1].totals().macs or 1
        return f"{self.model}: MACs vs {self.param}: " + ", ".join(
            f"{v} → {wl.totals().macs:,} ({wl.totals().macs / first:.2f}×)" for v, wl in self.results)


def analyze_sweep(model: str, param: str, values: Sequence[int], **kwargs: Any) -> AnalyzeSweep:
    """`analyze` once per value of ``param`` (``batch``, ``seq-len`` or ``image-size``)."""
    if param not in SWEEP_PARAMS:
        raise UserError(f"sweep parameter {param!r} is not one of {', '.join(SWEEP_PARAMS)}")
    if not values:
        raise UserError("a sweep needs at least one value")
    if kwargs.get("input_shape") is not None:
        raise UserError(f"input_shape {tuple(kwargs['input_shape'])!r}: a sweep sets the shape itself; give "
                        "image_size or seq_len instead")
    key = param.replace("-", "_")
    return AnalyzeSweep(model=model, param=param,
                        results=tuple((v, analyze(model, **{**kwargs, key: v})) for v in values))


# ------------------------------------------------------------------------------------------------------ roofline
def chip_dtype_for(chip: Chip, dtype: str | None) -> str:
    """The policy: the dtype a chip is used at — the one asked (any alias: ``bfloat16`` = ``bf16``) if the chip has
    a peak for it, else fp32 on a probed host and the first of fp16, bf16, fp32 the chip has."""
    d = precision.default_dtype(chip.dtypes(), host=chip.kind == "host") if dtype is None else \
        precision.chip_dtype_name(dtype)
    chip.require_dtype(d)
    return d


def workload_at(model: str | nn.Module, chip_dtype: str, *, example_inputs: Any = None, batch: int = 1,
                input_shape: Sequence[int] | None = None, seq_len: int | None = None,
                mode: str = "inference") -> Workload:
    """``model`` captured for costing at ``chip_dtype``: captured in the matching torch dtype; int8/int4 captured in
    float16 and retyped (bytes scaled by bits / 16)."""
    wl = analyze(model, example_inputs, batch=batch, input_shape=input_shape, seq_len=seq_len, mode=mode,
                 dtype=precision.capture_dtype(chip_dtype))
    bits = precision.retype_bits(chip_dtype)
    return wl.retyped(chip_dtype, bits) if bits is not None else wl


@dataclass(frozen=True, kw_only=True)
class RooflineResult(_Result):
    """Every layer of a model timed on a chip with the roofline model."""

    estimate: Estimate
    price_per_hour: float | None = None
    """USD per chip-hour, for the cost per million samples (None: no cost)."""
    measured: Measured | None = None
    """With ``measure=True``: the same model run on this CPU, layer by layer."""

    def to_dict(self) -> dict[str, Any]:
        d = self.estimate.to_dict(self.price_per_hour)
        if self.measured is not None:
            d["measured"] = self.measured.to_dict()
        return d

    def summary(self) -> str:
        est, price = self.estimate, self.price_per_hour
        share = est.bound_share()
        lines = [
            f"latency {est.latency_s * 1e3:.4g} ms (no overlap {est.latency_no_overlap_s * 1e3:.4g} ms, perfect "
            f"overlap {est.latency_perfect_overlap_s * 1e3:.4g} ms) · throughput {est.throughput_per_s:,.1f}/s · "
            f"{est.flops / est.latency_s / TERA:.1f} TFLOP/s = {100 * est.utilization:.1f}% of peak · "
            f"time compute-bound {100 * share['compute']:.0f}%, memory-bound {100 * share['memory']:.0f}%",
        ]
        energy = f"energy {est.energy_j:.4g} J per batch (per-op table)"
        if est.energy_tdp_j is not None:
            energy += f", ≤ {est.energy_tdp_j:.4g} J at TDP"
        if price is not None:
            energy += f" · ${est.cost_usd_per_million(price):,.2f} per million at ${price}/h"
        lines.append(energy)
        if self.measured is not None:
            m = self.measured
            lines.append(f"measured on this CPU ({m.threads} thread{'s' if m.threads > 1 else ''}): "
                         f"{m.measured_total_s * 1e3:.4g} ms vs predicted {m.predicted_total_s * 1e3:.4g} ms "
                         f"({100 * m.total_error:+.0f}%), median layer error {100 * m.median_abs_error:.0f}%")
        return "\n".join(lines)


def roofline(model: str | nn.Module, *, chip: str | Path | Chip, dtype: str | None = None,
             example_inputs: Any = None, batch: int = 1, input_shape: Sequence[int] | None = None,
             seq_len: int | None = None, mode: str = "inference", price_per_hour: float | None = None,
             measure: bool = False, threads: int = 1) -> RooflineResult:
    """Time every layer of ``model`` on ``chip`` with the roofline model (compute- or memory-bound, and why).

    ``dtype`` defaults by `chip_dtype_for`; ``measure`` also runs the model for real on this CPU (zoo names,
    ``threads`` threads) and lines the measurement up with the prediction.
    """
    from xpusim.engines.roofline import roofline as roofline_engine

    _positive("price_per_hour", price_per_hour, allow_zero=True)
    _positive("threads", threads)
    the_chip = load_chip(chip)
    d = chip_dtype_for(the_chip, dtype)
    wl = workload_at(model, d, example_inputs=example_inputs, batch=batch, input_shape=input_shape,
                     seq_len=seq_len, mode=mode)
    est = roofline_engine(wl, the_chip, tf32=d == "tf32")
    measured = None
    if measure:
        if not isinstance(model, str):
            raise UserError("measure=True builds the model by name: give a zoo name or file.py:factory")
        import torch

        from xpusim.engines.measure import compare_measured

        torch.set_num_threads(threads)
        measured = compare_measured(model, est, batch=batch, input_shape=_shape(input_shape), seq_len=seq_len)
    return RooflineResult(estimate=est, price_per_hour=price_per_hour, measured=measured)


# ----------------------------------------------------------------------------------------------------------- llm
@dataclass(frozen=True, kw_only=True)
class LLMResult(_Result):
    """LLM inference on one chip or a tensor/pipeline-parallel group: prefill (time to first token) and decode (time
    per output token)."""

    estimate: LLMEstimate
    price_per_hour: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.estimate.to_dict(self.price_per_hour)

    def summary(self) -> str:
        e, price = self.estimate, self.price_per_hour
        cap, gpus = e.chip.main_memory.capacity_bytes, e.parallel.gpus
        return (
            f"TTFT {e.time_to_first_token_s * 1e3:.4g} ms · time per output token "
            f"{e.time_per_output_token_s * 1e3:.4g} ms · tokens/s {e.tokens_per_s:,.1f} (batch {e.batch}, prefill "
            f"included)" + (f", {e.tokens_per_s_per_gpu:,.1f} per chip" if gpus > 1 else "")
            + f" · memory{' per chip' if gpus > 1 else ''} {e.memory_bytes / 1e9:.2f} GB = weights "
            f"{e.weights_bytes / 1e9:.2f} + KV cache {e.kv_cache_bytes / 1e9:.2f} + activations "
            f"{e.activation_bytes / 1e9:.2f} of {cap / 1e9:.1f} GB: {'fits' if e.fits else 'DOES NOT FIT'} · largest "
            f"batch that fits: {e.max_batch}"
            + (f" · ${e.cost_usd_per_million_tokens(price):,.2f} per million tokens at ${price}/h"
               if price is not None else "")
        )


def llm(model: str | Path | TransformerConfig, *, chip: str | Path | Chip, batch: int = 1, prompt_len: int = 1024,
        gen_len: int = 256, w_bits: int = 16, a_bits: int = 16, kv_bits: int = 16, float16: str | None = None,
        flash: bool = True, price_per_hour: float | None = None, tp: int = 1, pp: int = 1, ep: bool = False,
        cluster: str | Path | Cluster | None = None, require_fit: bool = False,
        efficiency: str = "ideal") -> LLMResult:
    """Prefill a prompt and decode ``gen_len`` tokens on one chip, or on ``tp`` × ``pp`` chips (tensor and pipeline
    parallel; analytic transformer, roofline per op, α-β collectives on the links of ``cluster``, by default the
    built-in cluster of that chip).

    ``model``: a zoo LLM, an HF-style config.json, a ``gpt:`` spec or a `TransformerConfig`. ``float16`` is the
    16-bit float of 16-bit activations (``bf16``/``fp16``); by default the one the chip has (bf16 where it has
    both). ``require_fit``: a model whose weights and one sequence do not fit the chips is an error that says how
    many chips it needs (what the CLI asks for); otherwise the result says "does not fit". ``efficiency``:
    ``ideal`` (the roofline, an upper bound) or ``measured`` (published kernel efficiency of the chip, where
    `xpusim.hardware.measured` has it). ``ep``: a mixture of experts' experts whole, E/tp per chip, instead of
    sliced over the tp chips (vLLM's expert parallelism).
    """
    from xpusim.engines.llm import Parallelism, estimate_llm

    for n, v in (("batch", batch), ("prompt_len", prompt_len), ("tp", tp), ("pp", pp)):
        _positive(n, v)
    _positive("gen_len", gen_len, allow_zero=True)
    _positive("price_per_hour", price_per_hour, allow_zero=True)
    cfg = load_transformer(str(model) if isinstance(model, Path) else model)
    the_chip = load_chip(chip)
    if efficiency not in ("ideal", "measured"):
        raise UserError(f"efficiency {efficiency!r}: expected ideal or measured")
    if ep and tp == 1:
        raise UserError("ep splits the experts over the tensor-parallel chips: give tp > 1")
    par = Parallelism(tp=tp, pp=pp)
    if tp * pp > 1:
        cl = _llm_cluster(cluster, the_chip)
        par = Parallelism(tp=tp, pp=pp, fabric=cl.fabric(tp), pp_fabric=cl.fabric(tp * pp), ep=ep)
    f16 = precision.float16_for(the_chip.dtypes()) if float16 is None else float16.lower()
    if f16 not in precision.TORCH_FLOAT16:
        raise UserError(f"float16 {float16!r} is not bf16 or fp16")
    try:
        prec = Precision(w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits, float16=precision.TORCH_FLOAT16[f16])
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if efficiency == "measured":
        from xpusim.hardware.measured import with_measured_efficiency

        the_chip, _ = with_measured_efficiency(the_chip)
    try:
        est = estimate_llm(cfg, the_chip, batch=batch, prompt_len=prompt_len, gen_len=gen_len, precision=prec,
                           flash=flash, parallel=par)
    except UserError:
        raise
    except ValueError as exc:  # the engine's argument checks
        raise UserError(str(exc)) from None
    if require_fit and est.max_batch == 0:
        raise UserError(_needs_more_chips(est))
    return LLMResult(estimate=est, price_per_hour=price_per_hour)


def _needs_more_chips(e: LLMEstimate) -> str:
    on = f"{e.parallel.gpus} × {e.chip.name}" if e.parallel.gpus > 1 else f"one {e.chip.name}"
    cap = e.chip.main_memory.capacity_bytes
    head = (f"{e.config.name} does not fit on {on} even at batch 1: weights {e.weights_bytes / 1e9:.1f} GB + one "
            f"sequence's KV cache and activations {(e.kv_cache_bytes + e.activation_bytes) / e.batch / 1e9:.2f} GB "
            f"per chip, of {cap / 1e9:.1f} GB")
    if e.min_gpus is None:
        return head + "; no tensor/pipeline split within one node's 8-way tensor parallelism holds it"
    tp, pp = e.min_gpus
    return head + f"; it needs at least {tp * pp} chips: --tp {tp}" + (f" --pp {pp}" if pp > 1 else "")


def _llm_cluster(cluster: str | Path | Cluster | None, chip: Chip) -> Cluster:
    """The cluster whose links a multi-chip LLM runs on: the one given, else the built-in cluster of ``chip``."""
    from xpusim.hardware.cluster import cluster_names

    if cluster is not None:
        cl = load_cluster(cluster)
        if cl.chip != chip.name:
            raise UserError(f"cluster {cl.name} is built of {cl.chip}, not {chip.name}")
        return cl
    for name in cluster_names():
        cl = load_cluster(name)
        if cl.chip == chip.name:
            return cl
    raise UserError(f"tp/pp > 1 needs the links between the chips: no built-in cluster is made of {chip.name} (those "
                    f"are {', '.join(cluster_names())}); give a cluster file with --cluster")


# ----------------------------------------------------------------------------------------------------------- npu
@dataclass(frozen=True, kw_only=True)
class NpuResult(_Result):
    """A model (or SCALE-Sim topology) on a systolic-array NPU: cycles, stalls, traffic and energy per layer."""

    run: NpuRun
    title: str
    checks: tuple[CheckResult, ...] | None = None
    """With ``check=True``: real numbers run fold by fold through the mapping, per checked layer."""
    array_share: float | None = None
    """Share of the model's FLOPs that lower to the array's GEMMs (None for SCALE-Sim topologies)."""

    def to_dict(self) -> dict[str, Any]:
        doc = self.run.to_dict()
        if self.checks is not None:
            doc["check"] = [vars(c) | {"ok": c.ok} for c in self.checks]
        return doc

    @property
    def ok(self) -> bool:
        """Every check passed (True when nothing was checked)."""
        return self.checks is None or all(c.ok for c in self.checks)

    def summary(self) -> str:
        run, c = self.run, self.run.cfg
        gemm_cycles = sum(r.total_cycles for r in run.layers if r.kind == "gemm")
        lines = [
            f"{run.total_cycles:,} cycles = {run.time_s * 1e3:.4g} ms at {c.clock_hz / 1e9:g} GHz "
            f"({100 * gemm_cycles / max(run.total_cycles, 1):.0f}% in GEMM layers) · {run.tops:.3g} TOPS of "
            f"{run.peak_tops:.3g} peak · {run.energy_j * 1e3:.4g} mJ · {run.tops_per_w:.3g} TOPS/W · "
            f"cycle convention: {run.cycle_convention}",
            *run.notes,
        ]
        for ch in self.checks or ():
            verdict = "exact" if ch.exact else f"max |error| {ch.max_abs_error:.2e}"
            lines.append(f"check {ch.name} ({ch.dataflow}, {ch.folds} folds, M={ch.m} N={ch.n} K={ch.k}"
                         f"{f' x{ch.groups}' if ch.groups > 1 else ''}): every MAC once: "
                         f"{'yes' if ch.coverage_ok else 'NO'}; vs PyTorch: {verdict}")
        return "\n".join(lines)


def npu(model: str | nn.Module | None = None, *, array: str | Sequence[int] = (128, 128), dataflow: str | None = None,
        sram_kib: Sequence[int] | None = None, dram_bytes_per_cycle: float | None = None, dtype: str = "int8",
        clock_ghz: float | None = None, macs_per_pe: int = 1, sparsity: str | None = None, objective: str = "cycles",
        batch: int = 1, input_shape: Sequence[int] | None = None, seq_len: int | None = None,
        example_inputs: Any = None, scalesim_config: str | Path | None = None,
        scalesim_topology: str | Path | None = None, check: bool = False, check_layers: int = 8,
        progress: Progress = _quiet) -> NpuResult:
    """A model on a rows × cols systolic array (SCALE-Sim's cycle conventions), or SCALE-Sim's own .cfg and
    topology files replayed as SCALE-Sim would run them.

    ``dataflow``: ``os``, ``ws``, ``is`` or ``auto`` (the best per layer by ``objective``); default ``ws``, or the
    SCALE-Sim config's. ``sram_kib``: (ifmap, filter, ofmap) KiB; it, ``dram_bytes_per_cycle`` and ``clock_ghz``
    default to SCALE-Sim's google.cfg (`xpusim.engines.npu.DEFAULT_SRAM_KIB`, ``DEFAULT_DRAM_WORDS_PER_CYCLE``,
    ``DEFAULT_CLOCK_HZ``). ``check`` runs real numbers through the mapping of the first ``check_layers``
    conv/linear layers.
    """
    from xpusim.engines.npu import (
        DEFAULT_CLOCK_HZ,
        DEFAULT_DRAM_WORDS_PER_CYCLE,
        DEFAULT_SRAM_KIB,
        NpuConfig,
        NpuRun,
        array_share,
        lower_workload,
        simulate,
    )

    clock_hz = DEFAULT_CLOCK_HZ if clock_ghz is None else clock_ghz * GIGA
    dram_bytes_per_cycle = float(DEFAULT_DRAM_WORDS_PER_CYCLE) if dram_bytes_per_cycle is None else dram_bytes_per_cycle

    _positive("clock_ghz", clock_ghz)
    _positive("dram_bytes_per_cycle", dram_bytes_per_cycle)
    _positive("check_layers", check_layers)
    if objective not in ("cycles", "energy"):
        raise UserError(f"objective {objective!r} is not one of cycles, energy")
    if scalesim_config is not None or scalesim_topology is not None:
        from xpusim.engines.scalesim_io import read_config, read_layers, simulate_scalesim

        if scalesim_config is None or scalesim_topology is None:
            raise UserError("give both scalesim_config and scalesim_topology")
        if check:
            raise UserError("check needs a model (SCALE-Sim topologies carry no weights)")
        sc = read_config(Path(scalesim_config))
        ss_layers = read_layers(Path(scalesim_topology))
        if sc.calc_bandwidth:
            notes = ["SCALE-Sim inputs, CALC bandwidth: 1-byte words; no stalls, as in SCALE-Sim; total_cycles "
                     "follow its 'Total Cycles'"]
        else:
            bw_i, bw_f, bw_o = sc.bandwidth_words
            notes = [f"SCALE-Sim inputs, USER bandwidth (ifmap {bw_i}, filter {bw_f}, ofmap {bw_o} words/cycle): "
                     "stalls from SCALE-Sim 3.0.0's memory model replayed; total_cycles follow its 'Total Cycles'; "
                     "dram_* count each input once, its own counts are under 'scalesim'"]
            progress(f"replaying SCALE-Sim's memory model for {len(ss_layers)} layers ...")
        if sc.ignored:
            notes.append(f"not modelled, ignored: {', '.join(sc.ignored)} (xpusim runs SCALE-Sim's default layout, "
                         "dense, without Ramulator)")
        run = simulate_scalesim(sc, ss_layers, dataflow or sc.dataflow, objective, clock_hz=clock_hz)
        run = NpuRun(cfg=run.cfg, dataflow=run.dataflow, layers=run.layers, cycle_convention="scalesim",
                     notes=(*notes, *run.notes))
        return NpuResult(run=run, title=Path(scalesim_topology).name)
    if model is None:
        raise UserError("give a model, or scalesim_config and scalesim_topology")
    rows, cols = parse.array(array)
    sizes = tuple(DEFAULT_SRAM_KIB if sram_kib is None else sram_kib)
    if len(sizes) != 3 or any(not isinstance(v, int) or v < 1 for v in sizes):
        raise UserError(f"sram_kib {sram_kib!r}: expected three positive KiB sizes: ifmap, filter, ofmap")
    cfg = NpuConfig(rows=rows, cols=cols, ifmap_sram_bytes=sizes[0] * KIB, filter_sram_bytes=sizes[1] * KIB,
                    ofmap_sram_bytes=sizes[2] * KIB, dram_bytes_per_cycle=dram_bytes_per_cycle, dtype=dtype,
                    clock_hz=clock_hz, macs_per_pe=macs_per_pe, sparsity=parse.sparsity(sparsity))
    wl = analyze(model, example_inputs, batch=batch, input_shape=input_shape, seq_len=seq_len)
    layers, notes = lower_workload(wl)
    df = dataflow or "ws"
    run = simulate(layers, cfg, df, objective)
    checks = None
    if check:
        checks, note = _npu_check(model, example_inputs, batch, input_shape, seq_len, df, cfg, check_layers)
        notes = [*notes, note]
    run = NpuRun(cfg=run.cfg, dataflow=run.dataflow, layers=run.layers, cycle_convention="scalesim",
                 notes=(*notes, *run.notes))
    title = model if isinstance(model, str) else (wl.model or type(model).__name__)
    return NpuResult(run=run, title=title, checks=checks, array_share=array_share(layers))


def _npu_check(model: str | nn.Module, example_inputs: Any, batch: int, input_shape: Sequence[int] | None,
               seq_len: int | None, dataflow: str, cfg: Any, max_layers: int) -> tuple[tuple[Any, ...], str]:
    from torch import nn as tnn

    from xpusim.engines.npu_check import check_model

    if isinstance(model, str):
        from xpusim.workload.api import materialize
        from xpusim.workload.zoo import build

        built = build(model, batch=batch, input_shape=_shape(input_shape), seq_len=seq_len)
        module, args, _ = materialize(built.module, built.args, dict(built.kwargs), None)
    else:
        if example_inputs is None:
            raise UserError("check=True on a module needs real example_inputs")
        module, args = model, example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    total = sum(isinstance(m, tnn.Conv2d | tnn.Linear) for m in module.modules())
    checks = tuple(check_model(module, args, dataflow, cfg.rows, cfg.cols * cfg.macs_per_pe,
                               integer=cfg.dtype in ("int8", "int4"), max_layers=max_layers))
    checked = len({c.name for c in checks})
    more = " (raise check_layers / --check-layers for more)" if checked < total else ""
    return checks, f"check: the first {checked} of {total} conv/linear layers{more}"


# ---------------------------------------------------------------------------------------------- train / search
@dataclass(frozen=True, kw_only=True)
class TrainResult(_Result):
    """One training step of a parallel plan on a cluster, simulated event by event."""

    step: StepResult

    def to_dict(self) -> dict[str, Any]:
        return self.step.to_dict()

    def summary(self) -> str:
        r = self.step
        return (f"{r.model.config.name} on {r.plan.gpus} × {r.cluster.load_chip().name} ({r.cluster.name}), seq "
                f"{r.model.seq_len}: {r.plan.label()}\nstep time {r.step_time_s:.4g} s · {r.samples_per_s:,.2f} "
                f"samples/s, {r.tokens_per_s:,.0f} tokens/s · MFU {100 * r.mfu:.1f}%, HFU {100 * r.hfu:.1f}% · "
                f"bubble {100 * r.bubble_fraction:.2f}% · memory {r.memory.total / 2**30:.2f} GiB of "
                f"{r.capacity_bytes / 2**30:.0f} GiB: {'fits' if r.fits else 'OUT OF MEMORY'}")


def _train_model(model: str | TransformerConfig, seq_len: int | None) -> TrainModel:
    from xpusim.parallel.spec import parse_model

    _positive("seq_len", seq_len)
    return parse_model(model, seq_len)


def _cluster_for(cluster: str | Path | Cluster, gpus: int) -> Cluster:
    _positive("gpus", gpus)
    cl = load_cluster(cluster)
    if cl.max_gpus is not None and gpus > cl.max_gpus:
        raise UserError(f"gpus {gpus}: {cl.name} has at most {cl.max_gpus}")
    return cl


def train(model: str | TransformerConfig, *, cluster: str | Path | Cluster = "dgx-a100", gpus: int,
          plan: ParallelPlan | dict[str, Any] | None = None, tp: int = 1, pp: int = 1, dp: int | None = None,
          cp: int = 1, ep: int = 1, etp: int | None = None, dispatcher: str = "alltoall", routing_skew: float = 1.0,
          batch: int | None = None, micro_batch: int = 1, schedule: str = "1f1b", recompute: str = "none",
          sp: bool = False, zero: int = 0, fsdp: str | None = None, flash: bool = True, fp8: bool = False,
          dtype: str = "bf16", dp_overlap: bool = True, tp_overlap: bool = True, pipe_sends: str = "megatron",
          loss: str = "megatron", seq_len: int | None = None, rank_order: str = "tp-dp-pp",
          stage_layers: str | Sequence[int] | None = None,
          layer_ms: str | tuple[float, float] | None = None) -> TrainResult:
    """One training step of a transformer on a cluster: step time, MFU, bubble, memory and communication per GPU.

    Give the plan as keywords (``tp``, ``pp``, ``dp`` — default gpus / (tp·pp·cp) —, ``cp`` context-parallel ranks
    (each sequence split over them, ring attention; flash attention), ``ep`` the expert-parallel ranks
    of a mixture of experts (cut from the tp·cp·dp ranks), ``etp`` the ranks each expert is split over (default tp;
    1 keeps experts whole, Megatron-Core's parallel folding), ``dispatcher`` alltoall or deepep (see
    `ParallelPlan.dispatcher`), ``routing_skew`` the busiest expert-parallel rank's tokens over the mean,
    ``flash`` False for attention that writes its scores (Megatron-LM before
    FlashAttention), ``tp_overlap`` False for a tensor-parallel backward without the asynchronous all-reduce
    (Megatron-LM before 2022), ``pipe_sends`` megatron or deepspeed (how stages pass activations: see
    `ParallelPlan.pipe_sends`), ``loss`` megatron, native or te (the cross-entropy's kernels: see
    `ParallelPlan.loss`), ``fp8`` the GEMMs in FP8 (Transformer Engine), ``dtype`` bf16 or fp16 (fp16 adds
    the loss scaling's pass to the optimizer step), ``batch`` the global batch in
    samples, ``schedule`` such as ``interleaved:2``, ``recompute`` none, selective (the attention core), full or
    moe (a mixture of experts' MoE layers), ``zero`` 0–3 or ``fsdp`` full/grad-op) or as a
    `ParallelPlan` / its ``to_dict()``. ``stage_layers``: uneven pipeline stages, ``embedding-loss`` (Megatron-LM's
    split counting the embedding and the loss as a layer each) or the layers of each (virtual) stage, ``2,3x30,2``.
    ``layer_ms``: measured (forward, backward) ms of one layer and micro-batch,
    in place of the roofline's (or their text, ``1.2,2.5``).
    """
    from xpusim.parallel.plan import RECOMPUTES, ParallelPlan, check, complete
    from xpusim.parallel.simulate import simulate

    tm = _train_model(model, seq_len)
    cl = _cluster_for(cluster, gpus)
    measured = None
    if isinstance(layer_ms, str):
        layer_ms = parse.layer_ms(layer_ms)
    if layer_ms is not None:
        fwd, bwd = (float(x) for x in layer_ms)
        if not (fwd > 0 and bwd > 0):
            raise UserError(f"layer_ms {layer_ms!r}: expected two positive numbers (forward, backward)")
        measured = {"fwd": fwd / 1e3, "bwd": bwd / 1e3}
    if plan is not None:
        the_plan = check(plan if isinstance(plan, ParallelPlan) else ParallelPlan.from_dict(plan), tm.config, gpus)
    else:
        if recompute not in RECOMPUTES:
            raise UserError(f"recompute {recompute!r}: expected one of {', '.join(RECOMPUTES)}")
        if fsdp is not None:
            if fsdp not in ("full", "grad-op"):
                raise UserError(f"fsdp {fsdp!r}: expected full (ZeRO-3) or grad-op (ZeRO-2)")
            zero = 3 if fsdp == "full" else 2
        if rank_order not in ("tp-dp-pp", "tp-pp-dp"):
            raise UserError(f"rank_order {rank_order!r}: expected tp-dp-pp or tp-pp-dp")
        sched, vp = parse.schedule(schedule)
        the_plan = complete(tm.config, gpus, dp=dp, tp=tp, pp=pp, cp=cp, ep=ep, etp=etp, dispatcher=dispatcher,
                            routing_skew=routing_skew, vp=vp, micro_batch=micro_batch,
                            stage_layers=parse.stage_layers(stage_layers, tm.config.layers, pp * vp),
                            global_batch=batch, schedule=sched, zero=zero, dp_overlap=dp_overlap, sp=sp, flash=flash,
                            fp8=fp8, dtype=dtype, tp_overlap=tp_overlap, pipe_sends=pipe_sends, loss=loss,
                            recompute=recompute, rank_order=rank_order)
    return TrainResult(step=simulate(tm, cl, the_plan, measured=measured))


@dataclass(frozen=True, kw_only=True)
class SearchPlans(_Result):
    """Every valid plan estimated in closed form; the best re-simulated, fastest first."""

    found: SearchResult
    top: int

    @property
    def best(self) -> TrainResult:
        return TrainResult(step=self.found.results[0])

    @property
    def step(self) -> StepResult:
        """The best plan's step (as `TrainResult.step`)."""
        return self.found.results[0]

    @property
    def plans(self) -> tuple[StepResult, ...]:
        return self.found.results

    def to_dict(self) -> dict[str, Any]:
        f = self.found
        # NB: no wall times here (they are in summary()): the same search gives the same dict.
        return {"evaluated": f.evaluated, "fitting": f.fitting, "plans": [r.to_dict() for r in f.results]}

    def counts(self) -> str:
        """How many plans were estimated, how fast, how many fit."""
        f = self.found
        return (f"estimated {f.evaluated:,} plans in {f.estimate_seconds:.2f} s ({f.plans_per_s:,.0f} plans/s), "
                f"{f.fitting:,} fit in memory; best {3 * self.top} re-simulated, {f.seconds:.2f} s in all")

    def summary(self) -> str:
        best = self.found.results[0]
        return f"{self.counts()}; best: {best.plan.label()}, step {best.step_time_s:.4g} s"


def search(model: str | TransformerConfig, *, cluster: str | Path | Cluster = "dgx-a100", gpus: int,
           batch: int | None, top: int = 10, seq_len: int | None = None, flash: bool = True, fp8: bool = False,
           dispatcher: str = "alltoall", routing_skew: float = 1.0, dp_overlap: bool = True,
           tp_overlap: bool = True, pipe_sends: str = "megatron", loss: str = "megatron") -> SearchPlans:
    """Search every valid plan (dp, tp, pp, virtual stages, micro-batch, schedule, ZeRO, sequence parallelism,
    recomputation; context parallelism from 8,192 tokens; for a mixture of experts ep and etp) for
    ``gpus`` GPUs and a global ``batch``; the ``top``
    fastest that fit, re-simulated. ``flash``, ``fp8``, ``dispatcher``, ``routing_skew``, ``dp_overlap``,
    ``tp_overlap``, ``pipe_sends`` and ``loss`` are kept as given (see `train`)."""
    from xpusim.parallel.plan import ParallelPlan
    from xpusim.parallel.search import search as search_plans

    if batch is None:
        raise UserError("--search needs --batch (the global batch in samples)")
    _positive("batch", batch)
    _positive("top", top)
    tm = _train_model(model, seq_len)
    cl = _cluster_for(cluster, gpus)
    base = ParallelPlan(flash=flash, fp8=fp8, dispatcher=dispatcher, routing_skew=routing_skew,  # type: ignore[arg-type]
                        dp_overlap=dp_overlap, tp_overlap=tp_overlap, pipe_sends=pipe_sends,  # type: ignore[arg-type]
                        loss=loss)  # type: ignore[arg-type]
    found = search_plans(tm, cl, gpus, batch, top=top, base=base)
    if not found.results:
        hint = (f"; the sequences are {tm.seq_len:,} tokens, {tm.config.name}'s longest — give --seq-len for a "
                "training length (4096, say)" if seq_len is None and tm.seq_len >= 16384 else "")
        raise UserError(f"no plan for {tm.config.name} on {gpus} GPUs with batch {batch} fits in "
                        f"{cl.load_chip().name}'s memory ({found.evaluated} plans tried){hint}")
    return SearchPlans(found=found, top=top)


_search = search  # `parallel`'s flag has the function's name


SEARCH_KEYS = ("cluster", "gpus", "batch", "top", "seq_len", "flash", "fp8", "dispatcher", "routing_skew",
               "dp_overlap", "tp_overlap", "pipe_sends", "loss")
"""What `search` takes besides the model: the job and the settings it keeps as given (the rest it searches)."""


def parallel(model: str | TransformerConfig, *, search: bool = False, top: int = 10,
             **given: Any) -> TrainResult | SearchPlans:
    """What ``xpusim parallel`` runs: one plan (`train`, ``given`` its keywords), or with ``search`` the ``top``
    plans of the search (`search`: the keys of `SEARCH_KEYS` are used, the plan's own degrees ignored — the search
    chooses them). ``layer_ms`` describes one plan: with ``search`` it is an error."""
    if not search:
        return train(model, **given)
    if given.get("layer_ms") is not None:
        raise UserError("--layer-ms applies to one plan; it cannot be combined with --search")
    return _search(model, top=top, **{k: v for k, v in given.items() if k in SEARCH_KEYS})


# ------------------------------------------------------------------------------------------------------ compress
DEFAULT_QUANTS = ("w8a8", "w4a8", "w2:per-tensor", "w2:per-tensor:qat", "codebook16", "fp8-e4m3")
"""The variants `compress` runs when given none."""
DEFAULT_PROJECTION_CHIP = "t4"
"""The chip compressed variants are projected onto when none is named: an inference GPU with int8 and fp16
tensor cores (and no fp8, so the FP8 variant shows what a missing format looks like)."""


@dataclass(frozen=True, kw_only=True)
class CompressResult(_Result):
    """Each compression variant measured on real data (metric, size, params, MACs, sparsity), projected onto chips
    and optionally a systolic array."""

    task: Any
    baseline: Any
    variants: tuple[Any, ...]
    chips: tuple[str, ...]
    npu: str | None = None
    prunes: tuple[Any, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        b = self.baseline
        return {"task": self.task.name, "metric": self.task.metric,
                "baseline": {"value": b.value, "size_bytes": b.size_bytes, "params": b.params, "macs": b.macs,
                             "hardware": b.hardware, "cpu_latency_s": b.cpu_latency_s},
                "variants": [r.to_dict() for r in self.variants]}

    @property
    def systems(self) -> list[str]:
        return [*self.chips, *([f"npu-{self.npu}"] if self.npu else [])]

    def summary(self) -> str:
        b, digits = self.baseline, 4 if self.task.metric.startswith("cosine") else 2
        lines = [f"{self.task.name}: float32 {self.task.metric} {b.value:.{digits}f}, {b.size_bytes:,} B"]
        for r in self.variants:
            lines.append(f"  {r.name}: {r.value:.{digits}f} ({r.value - b.value:+.{digits}f}), {r.size_bytes:,} B "
                         f"({b.size_bytes / r.size_bytes:.1f}× smaller), sparsity {100 * r.sparsity:.0f}%")
        return "\n".join(lines)


def compress(task: str = "digits-cnn", *, quant: Sequence[str] | None = None, prune: Sequence[str] | None = None,
             chips: Sequence[str] | None = None, batch: int = 64, npu: str | None = None, data: str | None = None,
             epochs: int = 0, seed: int = 0, progress: Progress = _quiet) -> CompressResult:
    """Quantize and prune a model, measure every variant on held-out data and project it onto chips.

    ``task``: a built-in task (``digits-cnn``, ``mnist1d-cnn``, ``minilm``) or a user ``file.py:factory`` with
    ``data`` (``file.py:factory`` returning train/test tensors). Without ``quant`` and ``prune``: `DEFAULT_QUANTS`.
    ``chips``: default `DEFAULT_PROJECTION_CHIP`; ``[]`` for none. ``npu``: also a ``ROWSxCOLS`` systolic array.
    """
    from xpusim.api.projection import projector
    from xpusim.compress.api import baseline, check_prune, check_variant, load_task, run_prune, run_variant
    from xpusim.compress.prune import parse_prune
    from xpusim.compress.variants import parse_variant

    _positive("batch", batch)
    variants = [parse_variant(q) for q in (quant or ([] if prune else DEFAULT_QUANTS))]
    prunes = [parse_prune(p) for p in (prune or [])]
    chip_names = [load_chip(c).name for c in (chips if chips is not None else [DEFAULT_PROJECTION_CHIP])]
    array = parse.array(npu, "npu") if npu is not None else None
    progress(f"loading {task} ...")
    t = load_task(task, seed, data, epochs, progress=progress)
    for v in variants:  # every setting checked on every layer before anything runs
        check_variant(t, v)
    for pr in prunes:
        check_prune(t, pr)
    project = projector(chip_names, batch, array) if chip_names or array else None
    progress("float32 baseline ...")
    base = baseline(t, project)
    results = []
    for v in variants:
        progress(f"{v.name} ...")
        results.append(run_variant(t, v, seed, project))
    for p in prunes:
        progress(f"prune {p.name} ...")
        results.append(run_prune(t, p, seed, project))
    return CompressResult(task=t, baseline=base, variants=tuple(results), chips=tuple(chip_names),
                          npu=f"{array[0]}x{array[1]}" if array else None, prunes=tuple(prunes))


class _CompressPackage(types.ModuleType):
    """``xpusim.compress`` names both the compression package and the API call: the package is made callable, so
    ``xpusim.compress("digits-cnn", quant=["w8a8"])`` is `compress` however the package was imported first."""

    def __call__(self, *args: Any, **kwargs: Any) -> CompressResult:
        return compress(*args, **kwargs)


_compress_package.__class__ = _CompressPackage

__all__ = [
    "DEFAULT_PROJECTION_CHIP", "DEFAULT_QUANTS", "AnalyzeSweep", "CompressResult", "LLMResult", "NpuResult",
    "RooflineResult", "SearchPlans", "TrainResult", "analyze", "analyze_sweep", "chip_dtype_for",
    "compress", "dumps", "llm", "npu", "parallel", "roofline",
    "search", "train", "workload_at",
]
