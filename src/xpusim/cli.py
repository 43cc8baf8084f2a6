"""The ``xpusim`` command. Thin: parse, call the library, render. User mistakes exit 2 with one line."""

from __future__ import annotations

import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from xpusim.hardware.chip import DTYPES, ChipError
from xpusim.units import default_file_mode
from xpusim.workload.errors import CaptureError, ModelSpecError

# torch is imported only by the commands that capture a model (and not even then when the capture is cached):
# importing it costs ~650 MB and about a second, which chips, llm and parallel never need.

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="xpusim: how AI workloads run on AI hardware. Start with: xpusim analyze resnet50",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    """Tables are wide: when stdout is not a terminal (a pipe, a file, CI), do not wrap them at 80 columns."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console

DEFAULT_MODEL = "resnet50"


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class Mode(StrEnum):
    inference = "inference"
    training = "training"


class Device(StrEnum):
    meta = "meta"
    eager = "eager"


class UserError(Exception):
    """A mistake in what the user typed; reported as one line, exit code 2."""


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"--input-shape {text!r}: expected comma-separated positive integers such as 1,3,224,224")
    return dims


def parse_sweep(text: str) -> tuple[str, list[int]]:
    from xpusim.workload.api import SWEEP_PARAMS

    name, sep, values = text.partition("=")
    if not sep or name not in SWEEP_PARAMS:
        raise UserError(f"--sweep {text!r}: expected PARAM=V1,V2,... with PARAM one of {', '.join(SWEEP_PARAMS)}")
    try:
        vals = [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        raise UserError(f"--sweep {text!r}: values must be positive integers such as {name}=1,8,32")
    return name, vals


def write_output(text: str, path: Path | None) -> None:
    """Print, or write atomically (a temporary file renamed into place: never a half-written file)."""
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    if not path.parent.exists():
        raise UserError(f"--output {str(path)!r}: directory {str(path.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    err.print(f"wrote {path}")


@app.command("analyze")
def analyze_cmd(
    model: str = typer.Argument(
        DEFAULT_MODEL, help="Zoo name (resnet50, vit_b_16, llama2-7b, ...; see 'xpusim models') or file.py:factory."
    ),
    batch: int = typer.Option(1, "--batch", "-b", help="Batch size.", min=1),
    input_shape: str | None = typer.Option(None, "--input-shape", help="Full input shape, e.g. 1,3,64,64."),
    image_size: int | None = typer.Option(None, "--image-size", help="Square image size for vision models.", min=1),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Sequence length for language models.", min=1),
    dtype: str | None = typer.Option(None, "--dtype", help="Cast parameters and inputs: float32, bfloat16, ..."),
    mode: Mode = typer.Option(Mode.inference, "--mode", help="inference (forward) or training (forward+backward)."),
    device: Device = typer.Option(
        Device.meta, "--device",
        help="meta: no memory, no arithmetic. eager: real random weights and inputs on the CPU, so PyTorch takes "
             "the kernels a real run would (fused attention fast paths).",
    ),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, json or csv."),
    depth: int | None = typer.Option(None, "--depth", help="Group rows by module path up to this depth.", min=0),
    top: int | None = typer.Option(None, "--top", help="Table only: show the N rows with the most FLOPs.", min=1),
    sweep_spec: str | None = typer.Option(None, "--sweep", help="PARAM=V1,V2,...: batch, seq-len or image-size."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write JSON/CSV here instead of stdout."),
    plot: Path | None = typer.Option(None, "--plot", help="Also save a figure (.png, .svg or .pdf)."),
) -> None:
    """Per-layer MACs, FLOPs, params, bytes read/written and arithmetic intensity of a model."""
    from xpusim.workload.cache import analyze_cached

    try:
        shape = parse_shape(input_shape) if input_shape else None
        if dtype is not None:
            from xpusim.workload.api import parse_dtype

            parse_dtype(dtype)
        common = dict(batch=batch, input_shape=shape, image_size=image_size, seq_len=seq_len, dtype=dtype,
                      mode=mode.value, device=device.value)
        console = out_console()
        if sweep_spec:
            from xpusim.report.tables import dumps, print_sweep, sweep_dict
            from xpusim.workload.api import sweep

            param, values = parse_sweep(sweep_spec)
            if shape is not None:
                raise UserError("--sweep and --input-shape do not combine: the sweep sets the shape")
            results = sweep(model, param, values, **{k: v for k, v in common.items() if k != param.replace("-", "_")})
            if plot is not None:
                from xpusim.report.plots import save_atomic, sweep_figure

                save_atomic(sweep_figure(model, param, results), plot)
                err.print(f"wrote {plot}")
            if fmt is Format.table:
                print_sweep(console, model, param, results)
            elif fmt is Format.json:
                write_output(dumps(sweep_dict(model, param, results)), output)
            else:
                rows = ["value,macs,flops,params,bytes_read,bytes_written,weight_bytes,activation_bytes"]
                for v, wl in results:
                    t = wl.totals()
                    rows.append(f"{v},{t.macs},{t.flops},{t.params},{t.bytes_read},{t.bytes_written},"
                                f"{t.weight_bytes},{t.activation_bytes}")
                write_output("\n".join(rows) + "\n", output)
            return
        with err.status(f"capturing {model} ...") if fmt is Format.table else _null():
            wl = analyze_cached(model, **common)
        if plot is not None:
            from xpusim.report.plots import layers_figure, save_atomic

            save_atomic(layers_figure(wl, depth), plot)
            err.print(f"wrote {plot}")
        if fmt is Format.table:
            from xpusim.report.tables import print_workload

            print_workload(console, wl, depth, top)
        elif fmt is Format.json:
            write_output(wl.to_json(depth), output)
        else:
            write_output(wl.to_csv(depth), output)
    except (UserError, ModelSpecError, CaptureError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


chips_app = typer.Typer(help="The chip catalog: peaks per dtype, memory, ridge points, efficiency per watt.")
app.add_typer(chips_app, name="chips")

CHIP_TO_TORCH = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp8": "float8_e4m3fn",
                 "fp64": "float64"}
"""Capture dtype for a chip dtype; int8/int4 are captured in float16 and retyped (bytes scaled)."""


@chips_app.callback(invoke_without_command=True)
def chips_cmd(
    ctx: typer.Context,
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json (csv: not available)."),
) -> None:
    """List every chip of the catalog (run 'xpusim chips compare A B ...' to put some side by side)."""
    if ctx.invoked_subcommand is not None:
        return
    from xpusim.hardware.chip import all_chips
    from xpusim.report.hardware import catalog_table, chip_dict
    from xpusim.report.tables import dumps

    chips = all_chips()
    if fmt is Format.json:
        write_output(dumps([chip_dict(c) for c in chips]), None)
    else:
        out_console().print(catalog_table(chips))


@chips_app.command("compare")
def chips_compare_cmd(
    names: list[str] = typer.Argument(..., help="Catalog names or chip .yaml files."),
    dtype: str = typer.Option("bf16", "--dtype", help=f"One of {', '.join(DTYPES)}."),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
) -> None:
    """Two or more chips side by side at one dtype."""
    from xpusim.hardware.chip import load_chip
    from xpusim.report.hardware import chip_dict, compare_table
    from xpusim.report.tables import dumps

    try:
        if dtype not in DTYPES:
            raise UserError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        chips = [load_chip(n) for n in names]
        if fmt is Format.json:
            write_output(dumps([chip_dict(c) for c in chips]), None)
        else:
            out_console().print(compare_table(chips, dtype))
    except (UserError, ChipError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


@app.command("roofline")
def roofline_cmd(
    models: list[str] = typer.Argument(..., help="One or more zoo names or file.py:factory (compared on one chip)."),
    chip: str = typer.Option(..., "--chip", "-c", help="Catalog name (see 'xpusim chips') or a chip .yaml file."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="fp32, tf32, bf16, fp16, fp8, int8. Default: fp32 on a probed host, else the first of "
                              "fp16, bf16, fp32 the chip has."),
    batch: int = typer.Option(1, "--batch", "-b", min=1),
    input_shape: str | None = typer.Option(None, "--input-shape", help="Full input shape, e.g. 1,3,64,64."),
    seq_len: int | None = typer.Option(None, "--seq-len", min=1),
    mode: Mode = typer.Option(Mode.inference, "--mode"),
    price_per_hour: float | None = typer.Option(None, "--price-per-hour", help="USD per chip-hour, for cost.", min=0),
    top: int | None = typer.Option(None, "--top", help="Table: the N slowest ops only.", min=1),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
    plot: Path | None = typer.Option(None, "--plot", help="Roofline and per-layer time figure (.png/.svg/.pdf)."),
    measure: bool = typer.Option(False, "--measure", help="Also run the model for real on this CPU, layer by layer."),
    threads: int = typer.Option(1, "--threads", min=1, help="With --measure: CPU threads (as probed)."),
    output: Path | None = typer.Option(None, "--output", "-o"),
) -> None:
    """Time every layer of a model on a chip with the roofline model: compute- or memory-bound, and why."""
    from xpusim.engines.roofline import roofline
    from xpusim.hardware.chip import load_chip
    from xpusim.report.hardware import print_roofline
    from xpusim.report.tables import dumps
    from xpusim.workload.cache import analyze_cached

    try:
        the_chip = load_chip(chip)
        if dtype is None:
            dtype = "fp32" if the_chip.kind == "host" else next(
                (d for d in ("fp16", "bf16", "fp32") if the_chip.best_peak_flops_per_s(d)), the_chip.dtypes()[0])
        if dtype not in DTYPES:
            raise UserError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        the_chip.require_dtype(dtype)
        shape = parse_shape(input_shape) if input_shape else None
        estimates = []
        for model in models:
            capture_dtype = CHIP_TO_TORCH.get(dtype, "float16")
            with err.status(f"capturing {model} ...") if fmt is Format.table else _null():
                wl = analyze_cached(model, batch=batch, input_shape=shape, seq_len=seq_len, dtype=capture_dtype,
                             mode=mode.value)
            if dtype in ("int8", "int4"):
                wl = wl.retyped(dtype, 8 if dtype == "int8" else 4)
            estimates.append(roofline(wl, the_chip, tf32=dtype == "tf32"))
        if plot is not None:
            from xpusim.report.plots import roofline_figure, save_atomic

            save_atomic(roofline_figure(estimates), plot)
            err.print(f"wrote {plot}")
        measured = None
        if measure:
            import torch

            from xpusim.engines.measure import compare_measured

            torch.set_num_threads(threads)
            measured = [compare_measured(m, est, batch=batch, input_shape=shape, seq_len=seq_len)
                        for m, est in zip(models, estimates, strict=True)]
        if fmt is Format.json:
            docs = [e.to_dict(price_per_hour) for e in estimates]
            if measured:
                for d, m in zip(docs, measured, strict=True):
                    d["measured"] = m.to_dict()
            write_output(dumps(docs[0] if len(docs) == 1 else docs), output)
        else:
            console = out_console()
            for i, est in enumerate(estimates):
                print_roofline(console, est, top, price_per_hour)
                if measured:
                    from xpusim.report.measure import print_measured

                    print_measured(console, measured[i])
    except (UserError, ModelSpecError, CaptureError, ChipError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


@app.command("llm")
def llm_cmd(
    model: str = typer.Argument(..., help="A zoo LLM (llama2-7b, gpt-175b, ...) or an HF-style config.json file."),
    chip: str = typer.Option(..., "--chip", "-c", help="Catalog name or chip .yaml file."),
    batch: int = typer.Option(1, "--batch", "-b", min=1),
    prompt_len: int = typer.Option(1024, "--prompt-len", min=1),
    gen_len: int = typer.Option(256, "--gen-len", min=0),
    w_bits: int = typer.Option(16, "--w-bits", help="Weight bits: 16, 8, 4, ..."),
    a_bits: int = typer.Option(16, "--a-bits", help="Activation (compute) bits: 32, 16 or 8."),
    kv_bits: int = typer.Option(16, "--kv-bits", help="KV-cache bits."),
    float16: str = typer.Option("bf16", "--float16", help="The 16-bit float of 16-bit activations: bf16 or fp16."),
    flash: bool = typer.Option(True, "--flash/--no-flash", help="FlashAttention: scores stay on chip."),
    price_per_hour: float | None = typer.Option(None, "--price-per-hour", help="USD per chip-hour, for cost.", min=0),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
    output: Path | None = typer.Option(None, "--output", "-o"),
) -> None:
    """LLM inference on a chip: time to first token, time per output token, tokens/s, memory, largest batch."""
    import json

    from xpusim.engines.llm import Precision, TransformerConfig, estimate_llm
    from xpusim.hardware.chip import load_chip
    from xpusim.report.hardware import print_llm
    from xpusim.report.tables import dumps
    from xpusim.workload.zoo import llm_configs

    try:
        if model in llm_configs():
            cfg_dict = llm_configs()[model]["config"]
        elif model.endswith(".json") and Path(model).is_file():
            try:
                cfg_dict = json.loads(Path(model).read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{model}: not valid JSON ({exc})") from None
            if not isinstance(cfg_dict, dict):
                raise UserError(f"{model}: expected a JSON object with the model's config")
            cfg_dict = cfg_dict.get("config", cfg_dict)
        else:
            names = [n for n, e in llm_configs().items() if e.get("task") == "causal-lm"]
            raise UserError(f"unknown LLM {model!r}; known: {', '.join(names)}, or an HF config.json file")
        if float16 not in ("bf16", "fp16"):
            raise UserError(f"--float16 {float16!r} is not bf16 or fp16")
        try:
            cfg = TransformerConfig.from_hf(Path(model).stem if model.endswith(".json") else model, cfg_dict)
        except KeyError as exc:
            raise UserError(f"{model}: config lacks the field {exc}") from None
        precision = Precision(w_bits=w_bits, a_bits=a_bits, kv_bits=kv_bits,
                              float16="bfloat16" if float16 == "bf16" else "float16")
        est = estimate_llm(cfg, load_chip(chip), batch=batch, prompt_len=prompt_len, gen_len=gen_len,
                           precision=precision, flash=flash)
        if fmt is Format.json:
            write_output(dumps(est.to_dict(price_per_hour)), output)
        else:
            print_llm(out_console(), est, price_per_hour)
    except (UserError, ChipError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


def _parse_array(text: str, option: str = "--array") -> tuple[int, int]:
    rows_s, sep, cols_s = text.lower().partition("x")
    try:
        rows, cols = int(rows_s), int(cols_s)
    except ValueError:
        rows = cols = 0
    if not sep or rows < 1 or cols < 1:
        raise UserError(f"{option} {text!r}: expected ROWSxCOLS with positive sizes, e.g. 128x128")
    return rows, cols


@app.command("npu")
def npu_cmd(
    model: str | None = typer.Argument(None, help="Zoo name or file.py:factory (or use the --scalesim-* files)."),
    array: str = typer.Option("128x128", "--array", help="PE array ROWSxCOLS."),
    dataflow: str | None = typer.Option(None, "--dataflow", help="os, ws, is or auto (best per layer). "
                                        "Default: ws, or the SCALE-Sim config's."),
    sram_kb: str = typer.Option("6144,6144,2048", "--sram-kb", help="ifmap,filter,ofmap SRAM sizes in KiB."),
    dram_bytes_per_cycle: float = typer.Option(10.0, "--dram-bytes-per-cycle", help="DRAM bandwidth."),
    dtype: str = typer.Option("int8", "--dtype", help="Word size: int4, int8, fp8, fp16, bf16, fp32."),
    clock_ghz: float = typer.Option(1.0, "--clock-ghz", help="Clock for time, TOPS and TOPS/W."),
    macs_per_pe: int = typer.Option(1, "--macs-per-pe", help="Low-bit MACs per PE per cycle."),
    sparsity: str | None = typer.Option(None, "--sparsity", help="N:M structured sparsity the array skips, e.g. 2:4."),
    objective: str = typer.Option("cycles", "--objective", help="With --dataflow auto: cycles or energy."),
    batch: int = typer.Option(1, "--batch", "-b", min=1),
    input_shape: str | None = typer.Option(None, "--input-shape"),
    seq_len: int | None = typer.Option(None, "--seq-len", min=1),
    scalesim_config: Path | None = typer.Option(None, "--scalesim-config", help="A SCALE-Sim .cfg, read as is."),
    scalesim_topology: Path | None = typer.Option(None, "--scalesim-topology", help="A SCALE-Sim topology .csv."),
    check: bool = typer.Option(False, "--check", help="Run real numbers through the mapping and compare."),
    top: int | None = typer.Option(None, "--top", min=1, help="Table: the N slowest layers."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
    output: Path | None = typer.Option(None, "--output", "-o"),
) -> None:
    """A systolic-array NPU: cycles, stalls, SRAM/DRAM traffic and energy per layer (SCALE-Sim-compatible)."""
    from xpusim.engines.npu import NpuConfig, NpuError, NpuRun, lower_workload, simulate
    from xpusim.report.hardware import print_npu
    from xpusim.report.tables import dumps
    from xpusim.workload.cache import analyze_cached

    try:
        run: NpuRun | None = None
        if scalesim_config is not None or scalesim_topology is not None:
            from xpusim.engines.scalesim_io import read_config, read_layers, simulate_scalesim

            if scalesim_config is None or scalesim_topology is None:
                raise UserError("give both --scalesim-config and --scalesim-topology")
            sc = read_config(scalesim_config)
            ss_layers = read_layers(scalesim_topology)
            df = dataflow or sc.dataflow
            title = f"{scalesim_topology.name}"
            if sc.calc_bandwidth:
                notes = ["SCALE-Sim inputs, CALC bandwidth: 1-byte words; no stalls, as in SCALE-Sim; total_cycles "
                         "follow its 'Total Cycles'"]
            else:
                bw_i, bw_f, bw_o = sc.bandwidth_words
                notes = [f"SCALE-Sim inputs, USER bandwidth (ifmap {bw_i}, filter {bw_f}, ofmap {bw_o} words/cycle): "
                         "stalls from SCALE-Sim 3.0.0's memory model replayed; total_cycles follow its 'Total Cycles'; "
                         "dram_* count each input once, its own counts are under 'scalesim'"]
            if sc.ignored:
                notes.append(f"not modelled, ignored: {', '.join(sc.ignored)} (xpusim runs SCALE-Sim's default "
                             "layout, dense, without Ramulator)")
            busy = not sc.calc_bandwidth and fmt is Format.table
            with err.status(f"replaying SCALE-Sim's memory model for {len(ss_layers)} layers ...") if busy else _null():
                run = simulate_scalesim(sc, ss_layers, df, objective, clock_hz=clock_ghz * 1e9)
            cfg, convention = run.cfg, "scalesim"
            layers: list = []
        else:
            if model is None:
                raise UserError("give a MODEL, or --scalesim-config and --scalesim-topology")
            rows, cols = _parse_array(array)
            try:
                sizes = [int(v) for v in sram_kb.split(",")]
            except ValueError:
                sizes = []
            if len(sizes) != 3 or any(v < 1 for v in sizes):
                raise UserError(f"--sram-kb {sram_kb!r}: expected three positive KiB sizes: ifmap,filter,ofmap")
            sp = None
            if sparsity:
                n_s, _, m_s = sparsity.partition(":")
                if not (n_s.isdigit() and m_s.isdigit()):
                    raise UserError(f"--sparsity {sparsity!r}: expected N:M such as 2:4")
                sp = (int(n_s), int(m_s))
            cfg = NpuConfig(rows=rows, cols=cols, ifmap_sram_bytes=sizes[0] * 1024, filter_sram_bytes=sizes[1] * 1024,
                            ofmap_sram_bytes=sizes[2] * 1024, dram_bytes_per_cycle=dram_bytes_per_cycle, dtype=dtype,
                            clock_hz=clock_ghz * 1e9, macs_per_pe=macs_per_pe, sparsity=sp)
            shape = parse_shape(input_shape) if input_shape else None
            wl = analyze_cached(model, batch=batch, input_shape=shape, seq_len=seq_len)
            layers, notes = lower_workload(wl)
            df, title, convention = dataflow or "ws", model, "scalesim"
        if run is None:
            run = simulate(layers, cfg, df, objective)
        run = NpuRun(cfg=run.cfg, dataflow=run.dataflow, layers=run.layers, cycle_convention=convention,
                     notes=(*notes, *run.notes))
        checks = None
        if check:
            if model is None:
                raise UserError("--check needs a MODEL (SCALE-Sim topologies carry no weights)")
            from xpusim.engines.npu_check import check_model
            from xpusim.workload.api import materialize
            from xpusim.workload.zoo import build

            built = build(model, batch=batch, input_shape=shape, seq_len=seq_len)
            module, args, _ = materialize(built.module, built.args, dict(built.kwargs), None)
            checks = check_model(module, args, df, cfg.rows, cfg.cols * cfg.macs_per_pe,
                                 integer=dtype in ("int8", "int4"))
        if fmt is Format.json:
            doc = run.to_dict()
            if checks is not None:
                doc["check"] = [vars(c) | {"ok": c.ok} for c in checks]
            write_output(dumps(doc), output)
        else:
            console = out_console()
            print_npu(console, run, title, top)
            if checks is not None:
                for c in checks:
                    verdict = "exact" if c.exact else f"max |error| {c.max_abs_error:.2e}"
                    console.print(f"check {c.name} ({c.dataflow}, {c.folds} folds, M={c.m} N={c.n} K={c.k}"
                                  f"{f' x{c.groups}' if c.groups > 1 else ''}): every MAC once: "
                                  f"{'yes' if c.coverage_ok else 'NO'}; vs PyTorch: {verdict}")
                if not all(c.ok for c in checks):
                    raise typer.Exit(1)
    except (UserError, ModelSpecError, CaptureError, NpuError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


@app.command("probe")
def probe_cmd(
    out: Path = typer.Option(Path("host.yaml"), "--out", "-o", help="Chip file to write."),
    threads: int = typer.Option(1, "--threads", min=1, help="Threads to measure with (use the same for --measure)."),
) -> None:
    """Measure this machine's roofline (matmul FLOP/s per dtype, bandwidth per memory level) into a chip file."""
    import yaml

    from xpusim.hardware.chip import parse_chip
    from xpusim.hardware.probe import probe

    try:
        with err.status("probing ...") as status:
            data = probe(threads=threads, progress=lambda s: status.update(f"probing: {s}"))
        parse_chip(data, str(out))  # what we write must load back
        header = "# Written by 'xpusim probe': this machine's measured roofline. Use with --chip " + out.name + "\n"
        write_output(header + yaml.safe_dump(data, sort_keys=False), out)
        chip_tf = data["dense_tflops"]["tensor"]
        err.print(f"fp32 matmul {chip_tf['fp32'] * 1e3:.1f} GFLOP/s"
                  + (f", bf16 {chip_tf['bf16'] * 1e3:.1f} GFLOP/s" if "bf16" in chip_tf else "")
                  + ", bandwidth "
                  + ", ".join(f"{m['name']} {m['bandwidth_gb_per_s']:.1f} GB/s" for m in data["memory"]))
    except UserError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


def _parse_schedule(text: str) -> tuple[str, int]:
    from xpusim.parallel.plan import SCHEDULES

    name, sep, v = text.partition(":")
    if name not in SCHEDULES:
        raise UserError(f"--schedule {text!r}: expected one of gpipe, 1f1b, interleaved:V (V virtual stages per "
                        "rank, e.g. interleaved:2), zb-h1")
    if name == "interleaved":
        try:
            vp = int(v) if sep else 2
        except ValueError:
            vp = 0
        if vp < 2:
            raise UserError(f"--schedule {text!r}: V must be an integer >= 2, e.g. interleaved:2")
        return name, vp
    if sep:
        raise UserError(f"--schedule {text!r}: only interleaved takes :V")
    return name, 1


@app.command("parallel")
def parallel_cmd(
    model: str = typer.Argument(..., help="A zoo LLM (gpt-175b, llama2-70b, ...) or gpt:h=..,l=..,a=..,s=..[,V=..,"
                                          "ffn=..,kv=..]."),
    cluster: str = typer.Option("dgx-a100", "--cluster", help="Cluster preset (dgx-a100, dgx-h100, hgx-b200, "
                                                               "tpu-v5p-pod, mi300x-node) or a cluster .yaml file."),
    gpus: int = typer.Option(..., "--gpus", "-g", min=1, help="GPUs in the job."),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor-parallel size."),
    pp: int = typer.Option(1, "--pp", min=1, help="Pipeline-parallel size."),
    dp: int | None = typer.Option(None, "--dp", min=1, help="Data-parallel size (default: gpus / (tp·pp))."),
    batch: int | None = typer.Option(None, "--batch", "-b", min=1,
                                     help="Global batch in samples (default: pp micro-batches per replica)."),
    micro_batch: int = typer.Option(1, "--micro-batch", min=1),
    schedule: str = typer.Option("1f1b", "--schedule", help="gpipe, 1f1b, interleaved:V or zb-h1."),
    recompute: str = typer.Option("none", "--recompute", help="Activation recomputation: none, selective, full."),
    sp: bool = typer.Option(False, "--sp", help="Megatron sequence parallelism (needs --tp > 1)."),
    zero: int = typer.Option(0, "--zero", min=0, max=3, help="ZeRO stage 0-3 over the data-parallel ranks."),
    fsdp: str | None = typer.Option(None, "--fsdp", help="FSDP: full (= ZeRO-3) or grad-op (= ZeRO-2)."),
    dp_overlap: bool = typer.Option(True, "--dp-overlap/--no-dp-overlap",
                                    help="DDP: reduce gradient buckets during the last backward (default), or "
                                         "one all-reduce after it."),
    seq_len: int | None = typer.Option(None, "--seq-len", min=1, help="Sequence length (default: the model's)."),
    rank_order: str = typer.Option("tp-dp-pp", "--rank-order",
                                   help="Rank numbering, innermost first: tp-dp-pp (Megatron) or tp-pp-dp."),
    layer_ms: str | None = typer.Option(None, "--layer-ms", help="Measured FWD,BWD milliseconds of one layer and "
                                                                 "micro-batch on one GPU, in place of the roofline's."),
    do_search: bool = typer.Option(False, "--search", help="Search every valid plan for --gpus and --batch."),
    top: int = typer.Option(10, "--top", min=1, help="With --search: how many plans to show."),
    trace: Path | None = typer.Option(None, "--trace", help="Write a Chrome/Perfetto trace (.json) of the step."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a Gantt chart (.png/.svg/.pdf) of the step."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
    output: Path | None = typer.Option(None, "--output", "-o"),
) -> None:
    """Training step of a transformer on a cluster: step time, MFU, bubble, memory and communication per GPU;
    --search ranks every valid plan."""
    from xpusim.hardware.cluster import ClusterError, load_cluster
    from xpusim.parallel.plan import RECOMPUTES, PlanError, complete
    from xpusim.parallel.search import search
    from xpusim.parallel.simulate import simulate
    from xpusim.parallel.spec import SpecError, parse_model
    from xpusim.report.parallel import gantt, print_result, search_table, write_trace
    from xpusim.report.tables import dumps

    try:
        if fmt is Format.csv:
            raise UserError("--format csv is not available for parallel; use table or json")
        if recompute not in RECOMPUTES:
            raise UserError(f"--recompute {recompute!r}: expected one of {', '.join(RECOMPUTES)}")
        if fsdp is not None:
            if fsdp not in ("full", "grad-op"):
                raise UserError(f"--fsdp {fsdp!r}: expected full (ZeRO-3) or grad-op (ZeRO-2)")
            zero = 3 if fsdp == "full" else 2
        if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise UserError(f"--plot {str(plot)!r}: the suffix must be .png, .svg or .pdf")
        sched, vp = _parse_schedule(schedule)
        if rank_order not in ("tp-dp-pp", "tp-pp-dp"):
            raise UserError(f"--rank-order {rank_order!r}: expected tp-dp-pp or tp-pp-dp")
        measured = None
        if layer_ms is not None:
            try:
                fwd_ms, bwd_ms = (float(x) for x in layer_ms.split(","))
            except ValueError:
                fwd_ms = bwd_ms = -1.0
            if not (fwd_ms > 0 and bwd_ms > 0):
                raise UserError(f"--layer-ms {layer_ms!r}: expected two positive numbers FWD,BWD such as 1.2,2.5")
            measured = {"fwd": fwd_ms / 1e3, "bwd": bwd_ms / 1e3}
            if do_search:
                raise UserError("--layer-ms applies to one plan; it cannot be combined with --search")
        train = parse_model(model, seq_len)
        cl = load_cluster(cluster)
        if cl.max_gpus is not None and gpus > cl.max_gpus:
            raise UserError(f"--gpus {gpus}: {cl.name} has at most {cl.max_gpus}")
        if do_search:
            if batch is None:
                raise UserError("--search needs --batch (the global batch in samples)")
            found = search(train, cl, gpus, batch, top=top)
            if not found.results:
                raise UserError(f"no plan for {train.config.name} on {gpus} GPUs with batch {batch} fits in "
                                f"{cl.load_chip().name}'s memory ({found.evaluated} plans tried)")
            if fmt is Format.json:
                write_output(dumps([r.to_dict() for r in found.results]), output)
            else:
                console = out_console()
                console.print(f"estimated {found.evaluated:,} plans in {found.estimate_seconds:.2f} s "
                              f"({found.plans_per_s:,.0f} plans/s), {found.fitting:,} fit in memory; "
                              f"best {3 * top} re-simulated, {found.seconds:.2f} s in all")
                console.print(search_table(found.results))
            result = found.results[0]
        else:
            plan = complete(train.config, gpus, dp=dp, tp=tp, pp=pp, vp=vp, micro_batch=micro_batch,
                            global_batch=batch, schedule=sched, zero=zero, dp_overlap=dp_overlap, sp=sp,
                            recompute=recompute, rank_order=rank_order)
            result = simulate(train, cl, plan, measured=measured)
            if fmt is Format.json:
                write_output(dumps(result.to_dict()), output)
            else:
                print_result(out_console(), result)
        title = f"{train.config.name} on {cl.name}: {result.plan.label()}"
        if trace is not None:
            write_trace(result.timeline, trace, title)
            err.print(f"wrote {trace}")
        if plot is not None:
            gantt(result.timeline, plot, title)
            err.print(f"wrote {plot}")
    except (UserError, SpecError, PlanError, ClusterError, ChipError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


@app.command("run")
def run_cmd(
    plan: str = typer.Option("pp=2", "--plan", help="dp=N, tp=N or pp=N (one kind of parallelism per run)."),
    model: str = typer.Option("mlp:layers=8,width=1024", "--model",
                              help="mlp:layers=N,width=W or gpt:h=..,l=..,a=..,s=..[,V=..]."),
    schedule: str = typer.Option("1f1b", "--schedule",
                                 help="Pipeline schedule: gpipe, 1f1b, interleaved, zb-h1, zbv."),
    micro_batches: int = typer.Option(8, "--micro-batches", help="Micro-batches per step and replica (pipeline "
                                                                  "micro-batches, or gradient accumulation)."),
    micro_batch: int | None = typer.Option(None, "--micro-batch",
                                           help="Samples per micro-batch (default 16 for mlp, 1 for gpt)."),
    virtual_stages: int = typer.Option(2, "--virtual-stages", help="Stages per rank for interleaved."),
    steps: int = typer.Option(5, "--steps", help="Optimizer steps (the first is warm-up when there are 3+)."),
    zero: int = typer.Option(0, "--zero", help="With dp: 2 or 3 runs FSDP2 without / with resharding after "
                                                "forward; 0 runs DDP."),
    fsdp: bool = typer.Option(False, "--fsdp", help="With dp: FSDP2 fully_shard (ZeRO-3 unless --zero 2)."),
    seed: int = typer.Option(0, "--seed"),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds for the whole run once the ranks are up."),
    do_compare: bool = typer.Option(False, "--compare", help="Simulate the pipeline with the measured action "
                                                             "times; print measured vs simulated."),
    check_grads: bool = typer.Option(False, "--check-grads", help="Compare loss and gradients after one step "
                                                                  "with a single-process run."),
    instrument: bool = typer.Option(True, "--instrument/--no-instrument", help="Per-action timestamps."),
    trace: Path | None = typer.Option(None, "--trace", help="Write the measured timeline as a Chrome/Perfetto "
                                                            "trace (.json)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
    output: Path | None = typer.Option(None, "--output", "-o"),
) -> None:
    """Run a parallel plan for real on torch.distributed (one process per rank, gloo on CPU), record the
    timeline, and with --compare hold the simulator to it."""
    from xpusim.parallel.real.compare import compare, measured_timeline
    from xpusim.parallel.real.launch import RunError, launch
    from xpusim.parallel.real.spec import RunSpecError, make_spec
    from xpusim.report.parallel import print_run, write_trace
    from xpusim.report.tables import dumps

    try:
        if fmt is Format.csv:
            raise UserError("--format csv is not available for run; use table or json")
        vs = virtual_stages if schedule == "interleaved" else 1
        if micro_batch is None:
            micro_batch = 1 if model.startswith("gpt") else 16
        spec = make_spec(model=model, plan=plan, schedule=schedule, micro_batches=micro_batches,
                         micro_batch=micro_batch, virtual_stages=vs, steps=steps, seed=seed, zero=zero, fsdp=fsdp,
                         timeout_s=timeout, check_grads=check_grads, instrument=instrument or do_compare)
        if do_compare and spec.plan.pp < 2:
            raise UserError("--compare simulates the pipeline: it needs --plan pp=N with N >= 2")
        if trace is not None and not trace.parent.exists():
            raise UserError(f"--trace {str(trace)!r}: directory {str(trace.parent)!r} does not exist")
        err.print(f"starting {spec.ranks} ranks ({spec.plan.label()}, {spec.model.text()}), {steps} steps ...")
        report = launch(spec)
        simulated = compare(spec, report) if do_compare else None
        if trace is not None:
            write_trace(measured_timeline(report), trace, f"xpusim run {spec.plan.label()} (measured)")
            err.print(f"wrote {trace}")
        result = {"plan": spec.plan.to_dict() | {"schedule": spec.schedule}, "model": spec.model.text(),
                  "ranks": report["ranks"], "backend": report["backend"], "measured": report["measured"],
                  "trace": str(trace) if trace is not None else None}
        if simulated is not None:
            result["simulated"] = simulated
        if "check" in report:
            result["check"] = report["check"]
        if fmt is Format.json:
            write_output(dumps(result), output)
        else:
            print_run(out_console(), result)
    except RunError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    except (UserError, RunSpecError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


DEFAULT_QUANTS = ["w8a8", "w4a8", "w2:per-tensor", "w2:per-tensor:qat", "codebook16", "fp8-e4m3"]


@app.command("compress")
def compress_cmd(
    task: str = typer.Argument("digits-cnn", help="Built-in task (digits-cnn, mnist1d-cnn, minilm) or a user model "
                                                  "file.py:factory with --data."),
    data: str | None = typer.Option(None, "--data", help="file.py:factory returning (train_x, train_y, test_x, "
                                                          "test_y) tensors, for a user model."),
    epochs: int = typer.Option(0, "--epochs", min=0, help="Train a user model this many epochs first (0: it is "
                                                           "already trained)."),
    quant: list[str] | None = typer.Option(None, "--quant", "-q",
                                           help="A quantization variant (repeatable): w8a8, w4a8:per-tensor, "
                                                "w4:group=16, w2:qat, fp8-e4m3, bf16, codebook16, pow2:4, binary, "
                                                "ternary (weights per channel unless :per-tensor)."),
    prune: list[str] | None = typer.Option(None, "--prune", "-p",
                                           help="A pruning variant (repeatable): 0.5, 0.5:global, 2:4, "
                                                "0.5:structured, with :ft=N fine-tuning epochs."),
    chip: list[str] | None = typer.Option(None, "--chip", "-c", help="Project each variant onto this chip "
                                                                      "(repeatable; default t4; 'none' for no "
                                                                      "projection): latency and energy."),
    batch: int = typer.Option(64, "--batch", min=1, help="Batch for the chip projection."),
    npu: str | None = typer.Option(None, "--npu", help="Also project onto a ROWSxCOLS systolic array (xpusim npu's "
                                                       "engine, best dataflow per layer; 2:4 masks skipped)."),
    seed: int = typer.Option(0, "--seed"),
    plot: Path | None = typer.Option(None, "--plot", help="Accuracy vs size (and vs latency on the first chip): "
                                                          ".png/.svg/.pdf."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
    output: Path | None = typer.Option(None, "--output", "-o"),
) -> None:
    """Quantize and prune a model, measure each variant on real data (accuracy, file size, parameters, MACs,
    sparsity) and project it onto chips. Without --quant/--prune: a default set of six variants."""
    from xpusim.compress.api import (
        CompressError,
        baseline,
        check_prune,
        check_variant,
        load_task,
        run_prune,
        run_variant,
    )
    from xpusim.compress.prune import parse_prune
    from xpusim.compress.quant import QuantError
    from xpusim.compress.variants import parse_variant
    from xpusim.engines.npu import NpuError
    from xpusim.hardware.chip import load_chip
    from xpusim.report.compress import compress_table, pareto_plot
    from xpusim.report.tables import dumps

    try:
        if fmt is Format.csv:
            raise UserError("--format csv is not available for compress; use table or json")
        if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise UserError(f"--plot {str(plot)!r}: the suffix must be .png, .svg or .pdf")
        variants = [parse_variant(q) for q in (quant or ([] if prune else DEFAULT_QUANTS))]
        prunes = [parse_prune(p) for p in (prune or [])]
        chips = [] if chip == ["none"] else [load_chip(c).name for c in (chip or ["t4"])]
        array = _parse_array(npu, "--npu") if npu is not None else None
        t = load_task(task, seed, data, epochs)
        for v in variants:  # every setting checked on every layer before anything runs
            check_variant(t, v)
        for pr in prunes:
            check_prune(t, pr)
        base = baseline(t, chips, batch, array)
        results = []
        for v in variants:
            err.print(f"{v.name} ...")
            results.append(run_variant(t, v, seed, chips, batch, array))
        for p in prunes:
            err.print(f"prune {p.name} ...")
            results.append(run_prune(t, p, seed, chips, batch, array))
        report = {"task": t.name, "metric": t.metric,
                  "baseline": {"value": base.value, "size_bytes": base.size_bytes, "params": base.params,
                               "macs": base.macs, "hardware": base.hardware, "cpu_latency_s": base.cpu_latency_s},
                  "variants": [r.to_dict() for r in results]}
        if fmt is Format.json:
            write_output(dumps(report), output)
        else:
            compress_table(out_console(), t, base, results, chips + ([f"npu-{npu}"] if npu else []), prunes)
        if plot is not None:
            pareto_plot(t, base, results, chips[0] if chips else None, plot)
            err.print(f"wrote {plot}")
    except (UserError, CompressError, QuantError, ChipError, NpuError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None


@app.command("models")
def models_cmd() -> None:
    """List the models 'xpusim analyze' knows by name."""
    from xpusim.workload.zoo import llm_configs, torchvision_names

    console = out_console()
    console.print("[bold]language models[/bold] (configs shipped, built on the meta device):")
    for name, entry in llm_configs().items():
        console.print(f"  {name:<12} {entry.get('source', '')}")
    names = torchvision_names()
    console.print(f"[bold]torchvision classifiers[/bold] ({len(names)}):")
    console.print("  " + ", ".join(names))
    console.print("and any file.py:factory returning an nn.Module (or (module, example_inputs)).")


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
