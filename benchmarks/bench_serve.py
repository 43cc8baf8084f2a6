"""Speed of `xpusim serve`: 10,000 requests simulated, wall time and simulated seconds per real second.

    .venv/bin/python benchmarks/bench_serve.py [--requests 10000] [--repeats 3]

Iteration times are memoized by shape (tokens in the iteration, attention shapes), never per request, so the cost
of a run grows with its iterations, not its requests' lengths. vidur reports its speed the same way (simulated
time per wall-clock time); no vidur is installed here to run beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time

from xpusim.api.serve import serve

CASES = [
    ("llama2-7b", "a100-sxm-80gb", 1, 4.0, "sarathi"),
    ("llama2-7b", "a100-sxm-80gb", 1, 4.0, "vllm"),
    ("llama2-70b", "h100-sxm", 8, 8.0, "sarathi"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print("| model | chip × tp | scheduler | rate | requests | iterations | simulated s | wall s (median, min–max) |"
          " simulated s per wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, chip, tp, rate, sched in CASES:
        walls, r = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = serve(model, chip=chip, tp=tp, rate=rate, requests=args.requests, scheduler=sched)
            walls.append(time.perf_counter() - t0)
        assert r is not None
        d = r.to_dict()
        wall = statistics.median(walls)
        print(f"| {model} | {chip} × {tp} | {sched} | {rate:g}/s | {d['requests']:,} | {d['iterations']:,} | "
              f"{d['makespan_s']:,.0f} | {wall:.2f} ({min(walls):.2f}–{max(walls):.2f}) | "
              f"{d['makespan_s'] / wall:,.0f} |")
    print("\n(each iteration is timed twice: at the measured efficiency and on the ideal roofline, the bound)")


if __name__ == "__main__":
    main()
