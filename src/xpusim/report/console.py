"""The command line's plumbing: the stdout console for tables, stderr for progress and errors, atomic file output,
and the one error policy every command runs under (`OneLineErrors`, `command`)."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from xpusim.errors import UserError

try:  # typer >= 0.20 carries its own copy of click; older typers use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions  # type: ignore[no-redef]
from xpusim.files import PLOT_SUFFIXES, check_output, write_atomic

err = Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    """Tables are wide: when stdout is not a terminal (a pipe, a file, CI), do not wrap them at 80 columns."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


def emit(text: str, output: Path | None = None) -> None:
    """Print ``text``, or write it atomically to ``output``."""
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    write_atomic(output, text)
    err.print(f"wrote {output}")


@contextmanager
def busy(message: str, show: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner with the current step on stderr (shown for table output only: JSON on stdout stays clean)."""
    if not show:
        yield lambda _: None
        return
    with err.status(message) as status:
        yield lambda text: status.update(text)


def command_line() -> str:
    """The running command as the user typed it (arguments and the options given on the command line), for a
    report's header; works under test runners, where ``sys.argv`` is the runner's."""
    import shlex

    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context

    ctx = get_current_context()
    words = ["xpusim", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:  # type: ignore[arg-type]
            continue
        value = ctx.params[param.name]  # type: ignore[index]
        value = value.value if isinstance(value, StrEnum) else value
        if not param.opts[0].startswith("-"):
            words += [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
        elif isinstance(value, bool):
            words.append(param.opts[0] if value else getattr(param, "secondary_opts", [param.opts[0]])[0])
        else:
            for v in value if isinstance(value, list | tuple) else [value]:
                words += [max(param.opts, key=len), str(v)]
    return shlex.join(words)


class Format(StrEnum):
    table, json, csv = "table", "json", "csv"


class OneLineErrors(TyperGroup):
    """Usage errors (``--batch 0``, ``--mode train``) as one line on stderr, exit 2, like every other mistake."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        standalone = kwargs.pop("standalone_mode", True)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        except click_exceptions.NoArgsIsHelpError:  # the help was printed already
            rv = 0
        except click_exceptions.UsageError as exc:
            err.print(f"error: {exc.format_message().replace('Value error, ', '')}", markup=False)
            rv = 2
        except typer.Abort:
            rv = 1
        if not standalone:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def command(target: typer.Typer, name: str, csv: bool = False) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command under the one error policy: a `UserError` (or an engine's ValueError) → ``error: ...``,
    exit 2, naming the option the user typed; a failed real run → exit 1. Before any work: output paths checked,
    and ``--format csv`` refused where the command has no CSV."""

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        options = {n: p.default.param_decls[0] for n, p in inspect.signature(fn).parameters.items()
                   if getattr(p.default, "param_decls", None) and p.default.param_decls[0].startswith("--")}

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            from xpusim.parallel.real.launch import RunError

            try:
                if kwargs.get("fmt") is Format.csv and not csv:
                    raise UserError(f"--format csv is not available for {name}; use table or json")
                for opt, suffixes in (("output", ()), ("plot", PLOT_SUFFIXES), ("trace", (".json",))):
                    check_output(kwargs.get(opt), f"--{opt}", suffixes)
                fn(*args, **kwargs)
            except RunError as exc:
                err.print(f"error: {exc}", markup=False)
                raise typer.Exit(1) from None
            except ValueError as exc:  # the API names its field (`recompute 'x'`): say the option (`--recompute 'x'`)
                first, sep, rest = str(exc).partition(" ")
                if rest[:1] in ("'", '"', "(", "-") or rest[:1].isdigit():  # `field value: ...`
                    first = options.get(first, first)
                err.print(f"error: {first}{sep}{rest}", markup=False)
                raise typer.Exit(2) from None

        return target.command(name)(run)

    return wrap
