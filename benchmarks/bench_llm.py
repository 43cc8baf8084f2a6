"""Big language models on the meta device: wall time and peak RSS of building and analyzing them.

    .venv/bin/python benchmarks/bench_llm.py [llama2-70b] [--seq-len 4096]

Run one model per process: peak RSS (ru_maxrss) is the whole process's, imports included.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="llama2-70b")
    parser.add_argument("--seq-len", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    import xpusim
    from xpusim.workload.zoo import build

    t1 = time.perf_counter()
    built = build(args.model, seq_len=args.seq_len)
    t2 = time.perf_counter()
    wl = xpusim.workload.capture(built.module, built.args, built.kwargs, name=args.model)
    t3 = time.perf_counter()
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    tot = wl.totals()
    print(f"{args.model} seq {args.seq_len}: {tot.macs:,} MACs, {wl.params:,} params, {len(wl.ops)} ops, "
          f"uncounted {wl.uncounted or 'none'}")
    print(f"import {t1 - t0:.2f} s, build on meta {t2 - t1:.2f} s, capture {t3 - t2:.2f} s, "
          f"total {t3 - t0:.2f} s, peak RSS {rss_gib:.2f} GiB")


if __name__ == "__main__":
    main()
