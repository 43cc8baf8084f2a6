"""The full default `xpusim compress digits-cnn` (float training + 6 variants + T4 projection) on one core.

    .venv/bin/python benchmarks/bench_compress.py

Runs the command in a fresh process pinned to one core (``taskset -c 0``, one torch thread): once with an empty
model cache (the float CNN is trained), once with the cache warm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    xpusim = str(Path(sys.executable).with_name("xpusim"))
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, XPUSIM_CACHE=cache, OMP_NUM_THREADS="1")
        for label in ("cold cache (trains the float CNN)", "warm cache"):
            t0 = time.perf_counter()
            out = subprocess.run([*pin, xpusim, "compress", "digits-cnn"], env=env, capture_output=True, text=True,
                                 check=True)
            wall = time.perf_counter() - t0
            print(f"xpusim compress digits-cnn, {label}: {wall:.1f} s on one core")
        print(out.stdout)


if __name__ == "__main__":
    main()
