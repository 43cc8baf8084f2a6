"""``python -m xpusim.run``: one rank of a real parallel run, for ``torchrun --nproc-per-node N -m xpusim.run``.
``xpusim run`` starts every rank itself; both print the same summary (``print_run``'s table, or its JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from xpusim.parallel.real.spec import RunSpec
from xpusim.parallel.real.worker import main as worker_main

if TYPE_CHECKING:
    from xpusim.parallel.real.predict import Prediction


def predict_first(spec: RunSpec) -> Prediction | None:
    """With ``--predict``: the step predicted from the cost model, printed on stderr before the ranks start."""
    from xpusim.api.runs import predict_run
    from xpusim.report.console import err

    if not spec.predict:
        return None
    predicted = predict_run(spec, progress=err.print)
    err.print(predicted.summary(), markup=False)
    return predicted


def render(spec: RunSpec, report: dict[str, Any], *, fmt: str = "table", do_compare: bool = False,
           trace: str = "", output: Path | None = None, predicted: Prediction | None = None) -> None:
    """What rank 0 of a finished run shows, for ``xpusim run`` and ``python -m xpusim.run`` alike: simulated with
    the measured action times (``do_compare``), the measured timeline as a trace, then the table or its JSON, with
    the prediction made before the run (``predicted``; under torchrun, where rank 0 renders, made here from
    ``spec.predict``: still from the cost model alone)."""
    from xpusim.api.calls import dumps
    from xpusim.parallel.real.compare import compare, measured_timeline, run_result
    from xpusim.report.console import emit, err, out_console
    from xpusim.report.parallel import print_run, write_trace

    simulated = compare(spec, report) if do_compare else None
    predicted = predicted or predict_first(spec)
    if trace:
        write_trace(measured_timeline(report), Path(trace), f"xpusim run {spec.plan.label()} (measured)")
        err.print(f"wrote {trace}")
    result = run_result(spec, report, simulated, trace or None,
                        predicted=predicted.versus(report["measured"]) if predicted else None)
    emit(dumps(result), output) if fmt == "json" else print_run(out_console(), result)


def main(argv: list[str] | None = None) -> None:
    worker_main(argv, render=render)


if __name__ == "__main__":
    main()
