"""Real runs' policy: what ``xpusim run --predict`` predicts from — the chip file the user gave (``xpusim probe``'s
measured roofline of this machine) and this machine's gloo link costs, measured once and then reused from the
cache (`xpusim.parallel.real.links.cached_links`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from xpusim.errors import UserError
from xpusim.parallel.real.links import LinkCosts
from xpusim.parallel.real.spec import RunSpec, load_predict_chip

if TYPE_CHECKING:  # torch-free import: the prediction captures the model, so it is imported when called
    from xpusim.parallel.real.predict import Prediction


def _quiet(_: str) -> None:
    return None


def predict_run(spec: RunSpec, *, links: LinkCosts | None = None, cache_dir: Path | None = None,
                calibrate: bool | None = None, progress: Callable[[str], None] = _quiet) -> Prediction:
    """``spec``'s step time and bubble predicted from the cost model, before the run: on ``spec.predict``'s chip
    file, with ``links`` (default: this machine's, from the cache in ``cache_dir`` or measured now and cached;
    ``progress`` hears which). ``calibrate`` (default: when the chip file is a probed host, i.e. this machine)
    scales the roofline's compute by each stage's forward and backward timed on this CPU (every rank's at once)
    (`xpusim.parallel.real.predict.calibrate`); the roofline-only figures stay in the prediction."""
    from xpusim.parallel.real.links import cache_path, cached_links
    from xpusim.parallel.real.predict import calibrate as measure_calibration
    from xpusim.parallel.real.predict import predict

    if not spec.predict:
        raise UserError("--predict: give the chip file to predict from (write it with 'xpusim probe -o host.yaml')")
    chip = load_predict_chip(spec.predict)
    if links is None:
        if not cache_path(cache_dir).is_file():
            progress("measuring this machine's gloo link costs (once; about 10 s) ...")
        links, path, measured = cached_links(cache_dir)
        progress(f"gloo link costs {'measured and cached in' if measured else 'from'} {path} (delete it to measure "
                 "again)")
    calibration = None
    if calibrate if calibrate is not None else chip.kind == "host":
        progress("timing each stage's forward and backward on this CPU, every rank's at once (calibration) ...")
        calibration = measure_calibration(spec, chip)
    return predict(spec, chip, links, calibration)
