"""Real runs: the --compare example end to end, instrumentation overhead, measured vs simulated bubble spread;
with --predict, the step time and bubble predicted before the run (`xpusim run --predict`) against measured runs.

    .venv/bin/python benchmarks/bench_run.py [--repeats 3]
    .venv/bin/python benchmarks/bench_run.py --predict [--repeats 5] [--chip host.yaml]

Every run starts its own ranks (gloo on 127.0.0.1, one rank per core). Timings on a shared 2-core VM are noisy:
each figure is printed with the spread of its repeats.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from xpusim.parallel.real.compare import compare
from xpusim.parallel.real.launch import launch
from xpusim.parallel.real.spec import make_spec

MLP = "mlp:layers=8,width=1024"
GPT = "gpt:h=256,l=4,a=4,s=128,V=1024"


def _spread(xs: list[float], scale: float = 1.0, unit: str = "") -> str:
    return (f"{statistics.median(xs) * scale:.1f}{unit} ({min(xs) * scale:.1f} … {max(xs) * scale:.1f})")


def bench_predict(repeats: int, chip_file: str | None) -> None:
    """Predict, then measure: the MLP and a small GPT pipeline (pp=2, 1F1B, m=8), ``repeats`` runs each; the
    per-action diagnosis comes from --compare's measured means (not used by the prediction)."""
    import tempfile

    import torch

    from xpusim.api.host import probe_chip_file
    from xpusim.api.runs import predict_run
    from xpusim.parallel.real.links import measure_links

    torch.set_num_threads(1)  # as the ranks: the prediction's capture and the probe run one thread
    with tempfile.TemporaryDirectory(prefix="xpusim-bench-") as tmp:
        if chip_file is None:
            chip_file = str(Path(tmp) / "host.yaml")
            t0 = time.perf_counter()
            text, summary = probe_chip_file("host.yaml")
            Path(chip_file).write_text(text)
            print(f"probe: {summary} ({time.perf_counter() - t0:.0f} s)")
        t0 = time.perf_counter()
        links = measure_links()
        print(f"links ({time.perf_counter() - t0:.1f} s): p2p α {links.p2p_alpha_s * 1e3:.3f} ms + "
              f"{1 / links.p2p_s_per_byte / 1e9 if links.p2p_s_per_byte else float('inf'):.2f} GB/s; all-reduce α "
              f"{links.allreduce_alpha_s * 1e3:.3f} ms + "
              f"{1 / links.allreduce_s_per_byte / 1e9 if links.allreduce_s_per_byte else float('inf'):.2f} GB/s")
        print("| case | predicted step: calibrated / roofline only | measured step, median (min … max) | step error, "
              "calibrated | step error, roofline only | predicted bubble: calibrated / roofline only | measured "
              "bubble | bubble error (calibrated), points |")
        print("|---|---|---|---|---|---|---|---|")
        notes = []
        for name, model in (("MLP", MLP), ("GPT", GPT)):
            spec = make_spec(model=model, plan="pp=2", schedule="1f1b", micro_batches=8, steps=5,
                             predict=chip_file)
            pred = predict_run(spec, links=links)
            steps, bubbles, sims = [], [], []
            for _ in range(repeats):
                report = launch(spec)
                steps.append(report["measured"]["step_time_s"])
                bubbles.append(report["measured"]["bubble_fraction"])
                sims.append(compare(spec, report))
            errs = [100 * (pred.step_time_s / s - 1) for s in steps]
            roof_errs = [100 * (pred.roofline_step_time_s / s - 1) for s in steps]
            berrs = [100 * (pred.bubble_fraction - b) for b in bubbles]
            print(f"| {name} `{model}` pp=2 1f1b m=8 | {pred.step_time_s * 1e3:.1f} / "
                  f"{pred.roofline_step_time_s * 1e3:.1f} ms | {_spread(steps, 1e3, ' ms')} | "
                  f"{_spread(errs, unit='%')} | {_spread(roof_errs, unit='%')} | {100 * pred.bubble_fraction:.1f}% / "
                  f"{100 * pred.roofline_bubble_fraction:.1f}% | {_spread(bubbles, 100, '%')} | {_spread(berrs)} |")
            mean = {k: statistics.median(s["mean_action_s"][k] for s in sims) for k in sims[0]["mean_action_s"]}
            cal = pred.calibration
            if cal is not None:
                notes.append(f"{name}: calibration (measured, all ranks computing at once, / roofline), forward "
                             + ", ".join(f"{f:.2f}" for f in cal.forward) + "; backward "
                             + ", ".join(f"{b:.2f}" for b in cal.backward)
                             + f"; the runtime's own {cal.overhead_s_per_action * 1e3:.2f} ms per action")
            notes.append(
                f"{name}: per micro-batch, predicted (calibrated) vs measured (median of --compare's means): "
                + ", ".join(f"{s}F {pred.forward_s[s] * 1e3:.2f} vs {mean.get(f'{s}F', 0) * 1e3:.2f} ms, "
                            f"{s}B {pred.backward_s[s] * 1e3:.2f} vs {mean.get(f'{s}B', 0) * 1e3:.2f} ms"
                            for s in range(len(pred.forward_s)))
                + f"; optimizer {pred.optimizer_s * 1e3:.2f} vs "
                f"{statistics.median(s['optimizer_s'] for s in sims) * 1e3:.2f} ms"
                + (f"; tied embedding {pred.tied_embedding_s * 1e3:.2f} vs "
                   f"{statistics.median(s.get('tied_embedding_s', 0.0) for s in sims) * 1e3:.2f} ms"
                   if pred.tied_embedding_s else "")
                + f"; p2p {pred.p2p_s * 1e3:.2f} vs {statistics.median(s['transfer_s'] for s in sims) * 1e3:.2f} ms"
                + f"; measured per-action overhead "
                f"{statistics.median(s['overhead_s_per_action'] for s in sims) * 1e3:.2f} ms; --compare (the "
                f"measured means replayed) step {_spread([s['step_time_s'] for s in sims], 1e3, ' ms')}, bubble "
                f"{_spread([s['bubble_fraction'] for s in sims], 100, '%')}")
        print("\n".join(notes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=None, help="Runs per case (default 3; 5 with --predict).")
    ap.add_argument("--predict", action="store_true", help="Only the predicted-vs-measured section.")
    ap.add_argument("--chip", default=None, help="With --predict: a chip file of this machine instead of probing.")
    args = ap.parse_args()
    if args.predict:
        return bench_predict(args.repeats or 5, args.chip)
    args.repeats = args.repeats or 3
    xpusim = Path(sys.executable).with_name("xpusim")
    cmd = [str(xpusim), "run", "--plan", "pp=2", "--schedule", "1f1b", "--micro-batches", "8", "--model", MLP,
           "--steps", "5", "--compare", "-f", "json"]
    walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    print(f"`{' '.join(cmd[1:])}`: {statistics.median(walls):.1f} s wall (min {min(walls):.1f}, max {max(walls):.1f})")

    # Instrumentation overhead: the same pipeline with and without per-action timestamps, interleaved runs.
    on, off = [], []
    for _ in range(args.repeats):
        for instrument, bucket in ((True, on), (False, off)):
            spec = make_spec(model=MLP, plan="pp=2", schedule="1f1b", micro_batches=8, micro_batch=16, steps=6,
                             instrument=instrument)
            bucket.append(launch(spec)["measured"]["step_time_s"])
    ratio = statistics.median(on) / statistics.median(off) - 1
    print(f"8-layer MLP pipeline, 1F1B, m=8: step {statistics.median(on) * 1e3:.1f} ms instrumented vs "
          f"{statistics.median(off) * 1e3:.1f} ms not ({100 * ratio:+.1f}%;"
          f" runs {', '.join(f'{x * 1e3:.0f}' for x in on)} vs {', '.join(f'{x * 1e3:.0f}' for x in off)} ms)")
    calls = 2 * 8  # F and B per micro-batch on a rank (1F1B has no W)

    def nothing(chunk: int) -> int:
        return chunk

    from xpusim.parallel.real.worker import Recorder

    wrapped = Recorder(True).wrap(nothing, "F", 0)
    n = 100_000
    t0 = time.perf_counter()
    for i in range(n):
        wrapped(i)
    per_call = (time.perf_counter() - t0) / n
    print(f"wrapper cost {per_call * 1e6:.2f} µs per action × {calls} actions = {per_call * calls * 1e6:.0f} µs per "
          f"step = {100 * per_call * calls / statistics.median(off):.3f}% of the step")

    # Measured vs simulated bubble, GPipe and 1F1B, p = 2, m = 4 and 8.
    for schedule in ("gpipe", "1f1b"):
        for m in (4, 8):
            diffs, errs = [], []
            for _ in range(args.repeats):
                spec = make_spec(model=MLP, plan="pp=2", schedule=schedule, micro_batches=m, micro_batch=16, steps=5)
                report = launch(spec)
                sim = compare(spec, report)
                meas = report["measured"]
                diffs.append(meas["bubble_fraction"] - sim["bubble_fraction"])
                errs.append(sim["step_time_s"] / meas["step_time_s"] - 1)
            print(f"{schedule} p=2 m={m}: measured − simulated bubble {', '.join(f'{100 * d:+.1f}' for d in diffs)} "
                  f"points; step time error {', '.join(f'{100 * e:+.1f}%' for e in errs)}")


if __name__ == "__main__":
    main()
