"""`xpusim parallel --ep` against published measured MoE training throughput (benchmarks/data/moe_training.yaml,
every row with its source and configuration), compared on tokens/s per GPU — the sources count model FLOPs in
different ways (see the file's ``flop_definitions``), tokens are unambiguous.

    .venv/bin/python benchmarks/bench_moe_validation.py

Nothing is fitted to these rows. Skipped (said per row): fp8 runs (the clusters' efficiencies are 16-bit), GPUs
other than H100, models not in the zoo, and plans the simulator cannot place (uneven pipeline stages, expert tensor
parallelism different from tp, context parallelism, FSDP with EP) — each printed with its reason.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml

import xpusim
from xpusim.errors import UserError

DATA = Path(__file__).parent / "data" / "moe_training.yaml"
ZOO = {"Mixtral 8x22B": "mixtral-8x22b", "Mixtral-8x22B": "mixtral-8x22b", "Qwen3-30B-A3B": "qwen3-30b-a3b",
       "Qwen3-235B-A22B": "qwen3-235b-a22b", "DeepSeek-V3": "deepseek-v3", "Mixtral 8x7B": "mixtral-8x7b"}


def zoo_name(model: str) -> str | None:
    return next((v for k, v in ZOO.items() if model.startswith(k)), None)


def skip_reason(r: dict[str, Any]) -> str | None:
    if "fp8" in str(r.get("precision", "")).lower():
        return "fp8"
    if "h100" not in str(r.get("gpu", "")).lower():
        return f"gpu {r.get('gpu')}"
    if zoo_name(str(r["model"])) is None:
        return "model not in the zoo"
    if (r.get("cp") or 1) > 1:
        return "context parallelism"
    if (r.get("etp") or r.get("tp") or 1) != (r.get("tp") or 1):
        return f"expert tensor parallelism {r.get('etp')} differs from tp {r.get('tp')}"
    if not r.get("micro_batch") or not r.get("global_batch") or (not (r.get("measured") or {}).get(
            "tokens_per_s_per_gpu") and not (r.get("derived") or {}).get("tokens_per_s_per_gpu")):
        return "batch or tokens/s not stated"
    return None


def main() -> None:
    rows = yaml.safe_load(DATA.read_text())["rows"]
    print("| row | gpus | tp | pp | ep | vp | b | B | recompute | measured tok/s/GPU | xpusim | error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    errs = []
    for r in rows:
        why = skip_reason(r)
        if why:
            print(f"| {r['id']} | skipped: {why} |||||||||||")
            continue
        meas = (r.get("measured") or {}).get("tokens_per_s_per_gpu") or r["derived"]["tokens_per_s_per_gpu"]
        vp = r.get("vpp") or 1
        recompute = "full" if "full" in str(r.get("recompute")) else "selective" if "selective" in str(
            r.get("recompute")) else "none"
        try:
            res = xpusim.train(zoo_name(str(r["model"])), cluster="dgx-h100", gpus=int(r["gpus"]),  # type: ignore[arg-type]
                               tp=int(r.get("tp") or 1), pp=int(r.get("pp") or 1), ep=int(r.get("ep") or 1),
                               batch=int(r["global_batch"]), micro_batch=int(r["micro_batch"]),
                               schedule=f"interleaved:{vp}" if vp > 1 else "1f1b", recompute=recompute,
                               sp=int(r.get("tp") or 1) > 1, seq_len=int(r["seq_len"]))
        except (UserError, ValueError) as exc:
            print(f"| {r['id']} | not simulated: {str(exc)[:160]} |||||||||||")
            continue
        pred = res.step.tokens_per_s / int(r["gpus"])
        e = 100 * (pred - meas) / meas
        errs.append(e)
        print(f"| {r['id']} | {r['gpus']} | {r.get('tp')} | {r.get('pp')} | {r.get('ep')} | {vp} | {r['micro_batch']} "
              f"| {r['global_batch']} | {recompute} | {meas:,.0f} | {pred:,.0f} | {e:+.1f}% |")
    if errs:
        a = [abs(x) for x in errs]
        print(f"\n{len(errs)} rows: median |error| {statistics.median(a):.1f}%, mean {statistics.mean(a):.1f}%, worst "
              f"{max(errs, key=abs):+.1f}%")


if __name__ == "__main__":
    main()
