"""The ``xpusim`` command. Thin: parse, call the library, render. User mistakes exit 2 with one line."""

from __future__ import annotations

import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from xpusim.workload.api import SWEEP_PARAMS, analyze, parse_dtype, sweep
from xpusim.workload.capture import CaptureError
from xpusim.workload.zoo import ModelSpecError, llm_configs, torchvision_names

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
    try:
        shape = parse_shape(input_shape) if input_shape else None
        parse_dtype(dtype)
        common = dict(batch=batch, input_shape=shape, image_size=image_size, seq_len=seq_len, dtype=dtype,
                      mode=mode.value, device=device.value)
        console = out_console()
        if sweep_spec:
            from xpusim.report.tables import dumps, print_sweep, sweep_dict

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
            wl = analyze(model, **common)  # type: ignore[arg-type]
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


@app.command("models")
def models_cmd() -> None:
    """List the models 'xpusim analyze' knows by name."""
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
