"""xpusim llm and xpusim serve against published measured serving results (benchmarks/data/serving_validation.yaml).

    .venv/bin/python benchmarks/bench_serve_validation.py [--rows static,first-token,offline] [--limit N]

Calibration and validation are kept apart: the kernel efficiency xpusim uses (`xpusim.hardware.measured`) comes
from microsoft/vidur's profiled GEMMs and the FlashAttention papers — kernels, not serving runs — and nothing is
fitted to the rows below. Rows used: fp16 on A100/H100 with exact lengths (TensorRT-LLM 0.9.0 static batches and
first-token latency, LMDeploy 0.1.0a1 static batches, TensorRT-LLM 0.14.0 offline throughput with in-flight
batching). fp8 rows are skipped (no measured fp8 kernel efficiency), as are rows without exact lengths.

Engine overhead: TensorRT-LLM and LMDeploy run a C++ runtime with CUDA graphs; they are simulated with
``--overhead none`` (xpusim's vLLM overhead is vidur's measurement of vLLM's Python engine, another engine).
TensorRT-LLM 0.14.0's offline rows run with the settings trtllm-bench used (the data file's ``engines`` block):
whole requests reserved in the KV cache (``kv_reserve="full"``), its batch and token limits, its KV memory share.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

import xpusim
from xpusim.api.serve import serve
from xpusim.engines.llm import memory_per_gpu
from xpusim.hardware.chip import load_chip
from xpusim.workload.transformer import Precision, TransformerConfig, load_transformer

DATA = Path(__file__).parent / "data" / "serving_validation.yaml"
ENGINES = yaml.safe_load(DATA.read_text())["engines"]
MODELS = {"Llama-2-7B": "llama2-7b", "Llama-2-13B": "llama2-13b", "Llama-2-70B": "llama2-70b",
          "Llama-3-70B": "llama3-70b", "Llama-3.1-8B": "llama3.1-8b"}


def model(name: str) -> str | TransformerConfig:
    """Llama-3.1-8B is Llama-3-8B's architecture with a 128K context (max_position_embeddings 131072)."""
    if name == "llama3.1-8b":
        return dataclasses.replace(load_transformer("llama3-8b"), name="llama3.1-8b", max_positions=131072)
    return name


def chip(gpu: str) -> str:
    return "h100-sxm" if gpu.startswith("h100") else "a100-sxm-80gb"


def kind(row: dict[str, Any]) -> str | None:
    if str(row.get("dtype")) != "fp16" or row["model"] not in MODELS:
        return None
    mode = str(row["mode"])
    if mode.startswith("static batch (first-token"):
        return "first-token"
    if mode.startswith("static batch") and row.get("input_len") and row.get("output_len"):
        return "static"
    if mode.startswith("offline throughput (in-flight") and row.get("num_requests"):
        return "offline"
    return None


class SkipRow(Exception):
    """A row the model does not apply to, with the reason."""


def err(pred: float, meas: float) -> float:
    return 100 * (pred - meas) / meas


def evaluate(row: dict[str, Any], k: str) -> list[tuple[str, float, float]]:
    """(metric, measured, predicted) of one row."""
    m, c, tp = model(MODELS[row["model"]]), chip(row["gpu"]), int(row.get("tp") or 1)
    out: list[tuple[str, float, float]] = []
    if k in ("static", "first-token"):
        gen = int(row.get("output_len") or 1)
        r = xpusim.llm(m, chip=c, tp=tp, batch=int(row["batch"]), prompt_len=int(row["input_len"]), gen_len=gen,
                       efficiency="measured").estimate
        if not r.fits:  # the engine cannot have held the batch at once: it queued requests, not a static batch
            raise SkipRow(f"batch {row['batch']} does not fit {tp} × {c} (largest {r.max_batch}): not a static batch")
        if row.get("throughput_tok_s") is not None:
            per_gpu = "per GPU" in str(row.get("throughput_kind", ""))
            out.append(("throughput", float(row["throughput_tok_s"]),
                        r.tokens_per_s_per_gpu if per_gpu else r.tokens_per_s))
        # LMDeploy's "first token latency" with concurrent clients includes the engine's request queueing, which a
        # static batch does not model: its TTFT is compared at batch 1 only
        if row.get("ttft_ms") is not None and (int(row["batch"]) == 1 or "LMDeploy" not in row["engine"]):
            out.append(("TTFT", float(row["ttft_ms"]) / 1e3, r.time_to_first_token_s))
        if row.get("token_latency_p50_ms") is not None:
            out.append(("TPOT", float(row["token_latency_p50_ms"]) / 1e3, r.time_per_output_token_s))
        return out
    s = serve(m, chip=c, tp=tp, rate=1e9, requests=int(row["num_requests"]), prompt_len=str(row["input_len"]),
              gen_len=str(row["output_len"]), overhead="none", efficiency="measured",
              **trtllm_bench(row, m, c, tp)).to_dict()
    system = "per system" in str(row.get("throughput_kind", "")) or "system" in str(row.get("throughput_kind", ""))
    pred = s["output_tokens_per_s"] if system else s["output_tokens_per_s"] / tp
    out.append(("throughput", float(row["throughput_tok_s"]), pred))
    return out


def trtllm_bench(row: dict[str, Any], m: str | TransformerConfig, c: str, tp: int) -> dict[str, Any]:
    """The serving settings trtllm-bench 0.14 ran with (the data file's ``engines`` block, from its source):
    GUARANTEED_NO_EVICT (whole requests reserved), its max batch size and token budget for the model and tp, and a
    KV cache of 0.9 of the memory left free after the weights and activations (as vLLM's ``gpu_memory_utilization``
    counts it: 0.9 × (capacity − used) + used out of the capacity)."""
    eng = ENGINES["trtllm_bench_0_14"]
    max_seqs, max_tokens = eng["max_batch_size_and_max_num_tokens"][f"{row['model']} tp{tp}"]
    cfg = load_transformer(m)
    weights, _, act = memory_per_gpu(cfg, Precision(), 1, max_tokens, True, tp, 1)
    capacity = load_chip(c).main_memory.capacity_bytes
    frac = float(eng["kv_cache_free_gpu_mem_fraction"])
    used = weights + act
    return {"kv_reserve": "full" if eng["capacity_scheduler_policy"] == "GUARANTEED_NO_EVICT" else "on-demand",
            "max_seqs": max_seqs, "max_batch_tokens": max_tokens,
            "gpu_memory_utilization": (frac * (capacity - used) + used) / capacity}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="static,first-token,offline")
    ap.add_argument("--limit", type=int, default=0, help="At most this many rows of each kind (0: all).")
    args = ap.parse_args()
    wanted = set(args.rows.split(","))
    rows = yaml.safe_load(DATA.read_text())["rows"]
    errors: dict[tuple[str, str], list[float]] = {}
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    print("| engine | model | gpu × tp | batch / requests | in / out | metric | measured | xpusim | error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        k = kind(row)
        if k is None or k not in wanted or (args.limit and counts.get(k, 0) >= args.limit):
            continue
        counts[k] = counts.get(k, 0) + 1
        try:
            results = evaluate(row, k)
        except (xpusim.errors.UserError, SkipRow) as exc:
            print(f"| {row['engine']} {row['engine_version']} | {row['model']} | skipped: {exc} |||||||")
            continue
        for metric, meas, pred in results:
            e = err(pred, meas)
            errors.setdefault((k, metric), []).append(e)
            unit = (lambda v: f"{v:,.0f} tok/s") if metric == "throughput" else (lambda v: f"{v * 1e3:,.1f} ms")
            size = row.get("batch") or row.get("num_requests")
            print(f"| {row['engine']} {row['engine_version']} | {row['model']} | {chip(row['gpu'])} × "
                  f"{row.get('tp') or 1} | {size} | {row['input_len']} / {row.get('output_len')} | {metric} | "
                  f"{unit(meas)} | {unit(pred)} | {e:+.1f}% |")
    print()
    print("| rows | metric | n | median abs error | mean abs error | worst | median signed |")
    print("|---|---|---|---|---|---|---|")
    everything: list[float] = []
    for (k, metric), es in sorted(errors.items()):
        a = [abs(e) for e in es]
        everything += a
        print(f"| {k} | {metric} | {len(es)} | {statistics.median(a):.1f}% | {statistics.mean(a):.1f}% | "
              f"{max(es, key=abs):+.1f}% | {statistics.median(es):+.1f}% |")
    for metric in ("throughput", "TTFT", "TPOT"):
        a = [abs(e) for (_, m), es in errors.items() if m == metric for e in es]
        if a:
            print(f"| all | {metric} | {len(a)} | {statistics.median(a):.1f}% | {statistics.mean(a):.1f}% | | |")
    print(f"\n{sum(counts.values())} rows in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
