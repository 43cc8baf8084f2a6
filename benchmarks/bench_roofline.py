"""Speed of the hardware side: roofline of a captured model, the LLM estimator, the host probe, and the
accuracy of --measure (predicted vs measured per layer on this CPU).

    .venv/bin/python benchmarks/bench_roofline.py [--skip-probe]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch import nn

import xpusim
from xpusim.api.host import count_flops
from xpusim.engines.llm import Precision, TransformerConfig, estimate_llm
from xpusim.engines.measure import compare_measured_module
from xpusim.engines.roofline import roofline
from xpusim.hardware.chip import load_chip, parse_chip
from xpusim.hardware.probe import probe
from xpusim.workload.zoo import llm_configs


def median_s(fn, repeat: int = 7) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-probe", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d')} · torch {torch.__version__} · 1 thread")
    wl = xpusim.analyze("resnet50", batch=32, dtype="float16")
    a100 = load_chip("a100-sxm-80gb")
    t = median_s(lambda: roofline(wl, a100))
    print(f"roofline of a captured resnet50 ({len(wl.ops)} ops) on a100: {t * 1e3:.2f} ms")
    cfg = TransformerConfig.from_hf("llama2-70b", llm_configs()["llama2-70b"]["config"])
    h100 = load_chip("h100-sxm")
    t = median_s(lambda: estimate_llm(cfg, h100, batch=16, prompt_len=1024, gen_len=256,
                                      precision=Precision(w_bits=4, kv_bits=8)))
    print(f"llm estimate llama2-70b on h100 (prompt 1024, 256 decode steps): {t * 1e3:.1f} ms")
    if args.skip_probe:
        return
    t0 = time.perf_counter()
    data = probe(threads=1, count_flops=count_flops)
    print(f"probe: {time.perf_counter() - t0:.1f} s; fp32 {data['dense_tflops']['tensor']['fp32'] * 1e3:.1f} GFLOP/s, "
          + ", ".join(f"{m['name']} {m['bandwidth_gb_per_s']:.1f} GB/s" for m in data["memory"]))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "host.yaml"
        path.write_text(yaml.safe_dump(data))
        host = parse_chip(data, str(path))
        for name in ("resnet18", "encoder"):
            if name == "encoder":
                model: nn.Module = nn.TransformerEncoder(nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True),
                                                         6, enable_nested_tensor=False).eval()
                x = torch.randn(1, 128, 512)
                est = roofline(xpusim.analyze(model, x), host)
                m = compare_measured_module(name, model, (x,), {}, est)
            else:
                from xpusim.engines.measure import compare_measured

                est = roofline(xpusim.analyze(name, dtype="float32"), host)
                m = compare_measured(name, est)
            print(f"--measure {name}: median |layer error| {100 * m.median_abs_error:.0f}% over {len(m.layers)} "
                  f"layers; whole model predicted {m.predicted_total_s * 1e3:.1f} ms, measured "
                  f"{m.measured_total_s * 1e3:.1f} ms ({100 * m.total_error:+.0f}%)")


if __name__ == "__main__":
    main()
