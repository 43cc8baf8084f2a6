"""How fast `xpusim report` builds and how fast its page opens.

1. The report of the issue's example (resnet50 on 4 chips × 2 batches), cold (first capture in this process, the
   capture cache may be warm on disk) and warm, with the HTML written; its size.
2. Time to interactive in headless Chromium: navigation start → the page's ``data-ready`` flag (all charts drawn).

Run: .venv/bin/python benchmarks/bench_report.py  (needs Debian's chromium and chromium-driver for part 2)
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import xpusim

CHIPS, BATCHES = "a100-sxm-80gb,h100-sxm,l4,t4", [1, 32]


def build(path: Path) -> float:
    t = time.perf_counter()
    xpusim.report("resnet50", chips=CHIPS, batch=BATCHES).to_html(path)
    return time.perf_counter() - t


def time_to_interactive(page: Path, runs: int = 5) -> list[float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        times = []
        for _ in range(runs):
            driver.get("about:blank")
            driver.get(page.resolve().as_uri())  # returns after the load event: every inline script has run
            ready = driver.execute_script("return document.body.dataset.ready === '1' ? "
                                          "performance.now() : null")
            times.append(ready / 1e3)
        return times
    finally:
        driver.quit()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "resnet50.html"
        cold = build(page)
        warm = sorted(build(page) for _ in range(5))
        print(f"report resnet50 × {CHIPS} × batch {BATCHES}: first {cold:.2f} s, warm median "
              f"{statistics.median(warm):.3f} s (min {warm[0]:.3f}); page {page.stat().st_size / 1e6:.2f} MB")
        if not shutil.which("chromedriver"):
            print("no chromedriver: skipping the browser timing", file=sys.stderr)
            return
        tti = sorted(time_to_interactive(page))
        print(f"time to interactive in headless Chromium: median {statistics.median(tti):.2f} s "
              f"(min {tti[0]:.2f}, max {tti[-1]:.2f}, {len(tti)} loads)")


if __name__ == "__main__":
    main()
