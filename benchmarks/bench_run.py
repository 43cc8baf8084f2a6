"""Real runs: the --compare example end to end, instrumentation overhead, measured vs simulated bubble spread.

    .venv/bin/python benchmarks/bench_run.py [--repeats 3]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
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
