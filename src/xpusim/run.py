"""``python -m xpusim.run``: one rank of a real parallel run, for ``torchrun --nproc-per-node N -m xpusim.run``.
``xpusim run`` starts every rank itself; both print the same summary (``print_run``'s table, or its JSON)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from xpusim.parallel.real.spec import RunSpec
from xpusim.parallel.real.worker import main as worker_main


def render(spec: RunSpec, report: dict[str, Any], *, fmt: str = "table", do_compare: bool = False,
           trace: str = "") -> None:
    """Rank 0's summary on stdout, the same as ``xpusim run``'s."""
    from xpusim.api.calls import dumps
    from xpusim.parallel.real.compare import compare, measured_timeline, run_result
    from xpusim.report.console import out_console
    from xpusim.report.parallel import print_run, write_trace

    simulated = compare(spec, report) if do_compare else None
    if trace:
        write_trace(measured_timeline(report), Path(trace), f"xpusim run {spec.plan.label()} (measured)")
        print(f"wrote {trace}", file=sys.stderr)
    result = run_result(spec, report, simulated, Path(trace) if trace else None)
    print(dumps(result)) if fmt == "json" else print_run(out_console(), result)


def main(argv: list[str] | None = None) -> None:
    worker_main(argv, render=render)


if __name__ == "__main__":
    main()
