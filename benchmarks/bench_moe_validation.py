"""`xpusim parallel --ep --etp` against published measured MoE training throughput
(benchmarks/data/moe_training.yaml, every row with its source and configuration), compared on tokens/s per GPU.

    .venv/bin/python benchmarks/bench_moe_validation.py

Tokens/s per GPU is taken as printed, or from the printed step time (global batch × sequence ÷ step ÷ GPUs), or —
where a source prints only model TFLOP/s per GPU — divided by the FLOPs per token of that source's definition
(the file's ``flop_per_token_reference``, recomputed from the model shapes; the ``basis`` column says which).
Where a source prints several routings, the balanced one is used (force-balanced or capacity factor 1): the
simulator costs uniform routing.

Configuration mapping: Megatron-Core's ``--recompute-modules`` lists of norms and activations (``selective (norm,
act)``) recompute elementwise ops only and run here as no recomputation (xpusim's ``selective`` is Korthikanti's
attention recomputation); 94- and 61-layer models on pipelines that do not divide them use Megatron's split that
counts the embedding and the loss as layers (``--stage-layers embedding-loss``), as the recipes do; NeMo AutoModel's
pipelines split the layers its own way (`automodel_split`). DeepEP and
NVIDIA's HybridEP dispatchers (both send a token once per destination node across nodes) run as ``deepep``, the
rest as ``alltoall``. ZeRO: FSDP rows (Megatron FSDP, NeMo AutoModel's FSDP2) run as ZeRO-3; the Megatron-Core
rows as ZeRO-1, the distributed optimizer their configurations turn on (``--use-distributed-optimizer: true`` in
yanring/Megatron-MoE-ModelZoo model_configs/benchmarking/Qwen3-235B-A22B.yaml @ 1ed4179f, stated for the Mixtral
row; the Megatron-LM moe_recipes descend from those configurations). Not modelled: the EP all-to-all overlapped
with another micro-batch's compute (``a2a_overlap`` rows run with the all-to-all exposed).

Nothing is fitted to these rows. One number is fitted beside them: dgx-h100's ``moe_layer_host_ms``, the host's floor
on a MoE layer pass, on Megatron-Bridge's CUDA-graph card (its eager Qwen3-30B-A3B FP8 run); that recipe's own row
(``calibrates``) is shown and left out of the statistics. Skipped (said per row): GPUs
other than H100, models not in the zoo, rows without a micro-batch.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

import xpusim
from bench_parallel_validation import Point, summary  # this folder: on the path when run as a script
from xpusim.errors import UserError
from xpusim.workload.transformer import load_transformer

DATA = Path(__file__).parent / "data" / "moe_training.yaml"
ZOO = {"Mixtral 8x22B": "mixtral-8x22b", "Mixtral-8x22B": "mixtral-8x22b", "Qwen3-30B-A3B": "qwen3-30b-a3b",
       "Qwen3-235B-A22B": "qwen3-235b-a22b", "DeepSeek-V3": "deepseek-v3", "Mixtral 8x7B": "mixtral-8x7b"}
FLOP_KEYS = {"qwen3-30b-a3b": "qwen3_30b_a3b", "qwen3-235b-a22b": "qwen3_235b_a22b",
             "mixtral-8x22b": "mixtral_8x22b_vocab32000", "mixtral-8x7b": "mixtral_8x7b_vocab32000"}
# printed TFLOP/s per GPU, balanced routing first (the simulator's uniform routing)
TFLOPS_KEYS = ("tflops_per_gpu", "tflops_per_gpu_force_balanced", "tflops_per_gpu_token_drop_cf1_approx",
               "tflops_per_gpu_dropless_force_balanced_approx")


def zoo_name(model: str) -> str | None:
    return next((v for k, v in ZOO.items() if model.startswith(k)), None)


def measured_tokens(r: dict[str, Any], reference: dict[str, Any]) -> tuple[float, str] | None:
    """(tokens/s per GPU, basis) of a row, or None when it cannot be had."""
    meas, derived = r.get("measured") or {}, r.get("derived") or {}
    if meas.get("tokens_per_s_per_gpu"):
        return float(meas["tokens_per_s_per_gpu"]), "printed"
    if meas.get("step_time_s"):
        return r["global_batch"] * r["seq_len"] / (meas["step_time_s"] * r["gpus"]), "step time"
    key = FLOP_KEYS.get(zoo_name(str(r["model"])) or "")
    if key and int(r["seq_len"]) != 4096:
        key = f"{key}_seq{r['seq_len']}"
    tflops = next((meas[k] for k in TFLOPS_KEYS if meas.get(k)), None)
    if tflops and key in reference:
        gflop = float(reference[key])
        return tflops * 1e3 / gflop, f"TFLOP/s ÷ {gflop:.1f} GFLOP"
    if derived.get("tokens_per_s_per_gpu"):
        return float(derived["tokens_per_s_per_gpu"]), "derived"
    return None


def skip_reason(r: dict[str, Any]) -> str | None:
    if "h100" not in str(r.get("gpu", "")).lower():
        return f"gpu {r.get('gpu')}"
    if zoo_name(str(r["model"])) is None:
        return "model not in the zoo"
    if not r.get("micro_batch") or not r.get("global_batch"):
        return "micro-batch not stated"
    return None


def zero_of(r: dict[str, Any]) -> int:
    """3 for FSDP (sharded parameters), else 1: Megatron-Core's distributed optimizer."""
    text = f"{r.get('other')} {r.get('id')}".lower()
    return 3 if re.search(r"fsdp(?!\s*0)", text) or "automodel" in str(r["source"]).lower() else 1


def recompute_of(text: str) -> str:
    """xpusim's recompute for a source's: full; ``moe`` where Megatron-Core's module list names the MoE layer
    (``moe``: router, all-to-alls, experts re-run); selective only for attention (Korthikanti's); module lists of
    norms and activations alone (``layernorm``, ``moe_act``) recompute elementwise ops only — none here."""
    if "full" in text:
        return "full"
    if "moe" in re.findall(r"[a-z_]+", text):
        return "moe"
    return "selective" if text.strip() == "selective" or "core_attn" in text else "none"


def layout_split(text: str) -> str | None:
    """Decoder layers per (virtual) stage of a Megatron pipeline layout the row states (``Et|(tt|)*30mL``: ``|``
    between stages, ``(...)*N`` repeated, ``t`` a decoder layer, ``E``/``m``/``L`` the embedding, the MTP module
    and the loss, which hold none): ``1,2,...,2,0``. None when the row states no layout."""
    m = re.search(r"pipeline layout (\S+)", text)
    if not m:
        return None
    spec = m.group(1)
    while (rep := re.search(r"\(([^()]*)\)\*(\d+)", spec)) is not None:
        spec = spec[:rep.start()] + rep.group(1) * int(rep.group(2)) + spec[rep.end():]
    return ",".join(str(stage.count("t")) for stage in spec.split("|"))


def automodel_split(layers: int, stages: int) -> str:
    """Decoder layers per stage as NeMo AutoModel splits a model over its pipeline stages
    (``generate_hf_model_fqn_per_model_part`` in nemo_automodel/components/distributed/pipelining/functional.py: the
    layers divided evenly, the first ``layers % stages`` stages one more; the embedding and the head ride on the
    first and the last stage)."""
    base, extra = divmod(layers, stages)
    return ",".join(str(base + (i < extra)) for i in range(stages))


def automodel(r: dict[str, Any]) -> bool:
    return "automodel" in str(r["source"]).lower()


def run() -> tuple[list[Point], list[Point]]:
    """Print the table and the statistics; return the counted rows and the calibration twin apart."""
    data = yaml.safe_load(DATA.read_text())
    rows, reference = data["rows"], data["flop_per_token_reference"]
    print("| row | gpus | tp | pp | ep | etp | vp | b | B | zero | recompute | measured tok/s/GPU (basis) | xpusim "
          "| error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    points: list[Point] = []
    calibration: list[Point] = []
    for r in rows:
        why = skip_reason(r)
        got = None if why else measured_tokens(r, reference)
        if why or got is None:
            print(f"| {r['id']} | skipped: {why or 'no tokens/s, step time or TFLOP/s with a FLOP reference'} "
                  f"|||||||||||||")
            continue
        meas, basis = got
        vp, pp, tp = r.get("vpp") or 1, int(r.get("pp") or 1), int(r.get("tp") or 1)
        model = zoo_name(str(r["model"]))
        assert model is not None
        cfg = load_transformer(model)
        layers = cfg.layers
        if int(r["seq_len"]) > cfg.max_positions:  # a long-context run with the rope scaled (Qwen3: YaRN to 131,072)
            cfg = dataclasses.replace(cfg, max_positions=int(r["seq_len"]))
        recompute = recompute_of(str(r.get("recompute")))
        if automodel(r) and pp > 1 and int(str(r.get("grad_accum") or 1).split()[0]) > 1:
            print(f"| {r['id']} | not simulated: AutoModel runs gradient accumulation {r['grad_accum']} as that many "
                  f"pipeline schedules per step (a flush each), which the simulator does not model |||||||||||||")
            continue
        split = layout_split(str(r.get("other", ""))) or (
            automodel_split(layers, pp * vp) if automodel(r) and pp > 1 else
            "embedding-loss" if layers % (pp * vp) else None)
        try:
            res = xpusim.train(cfg, cluster="dgx-h100", gpus=int(r["gpus"]), tp=tp, pp=pp, cp=int(r.get("cp") or 1),
                               ep=int(r.get("ep") or 1), etp=r.get("etp"),
                               dispatcher="deepep" if "ep" in str(r.get("dispatcher")).lower().replace(
                                   "alltoall", "") else "alltoall", batch=int(r["global_batch"]),
                               micro_batch=int(r["micro_batch"]), schedule=f"interleaved:{vp}" if vp > 1 else "1f1b",
                               recompute=recompute, sp=tp > 1, seq_len=int(r["seq_len"]), zero=zero_of(r),
                               fp8="fp8" in str(r.get("precision", "")).lower(),
                               loss=str(r.get("loss") or "megatron"), stage_layers=split)
        except (UserError, ValueError) as exc:
            print(f"| {r['id']} | not simulated: {str(exc)[:160]} |||||||||||||")
            continue
        pred = res.step.tokens_per_s / int(r["gpus"])
        point = Point(str(r["id"]), meas, pred)
        e = point.error_pct
        if r.get("calibrates"):  # its twin fitted a number the simulator uses: shown, not counted
            calibration.append(point)
            print(f"| {r['id']} (calibration, not counted) | {r['gpus']} | {tp} | {pp} | {r.get('ep')} | "
                  f"{r.get('etp') or tp} | {vp} | {r['micro_batch']} | {r['global_batch']} | {zero_of(r)} | "
                  f"{recompute} | {meas:,.0f} ({basis}) | {pred:,.0f} | {e:+.1f}% |")
            continue
        points.append(point)
        print(f"| {r['id']} | {r['gpus']} | {tp} | {pp} | {r.get('ep')} | {r.get('etp') or tp} | {vp} "
              f"| {r['micro_batch']} | {r['global_batch']} | {zero_of(r)} | {recompute} | {meas:,.0f} ({basis}) "
              f"| {pred:,.0f}"
              f"{'' if res.step.fits else ' (does not fit)'} | {e:+.1f}% |")
    if points:
        print(f"\n{summary(points)}")
    return points, calibration


def main() -> None:
    run()


if __name__ == "__main__":
    main()
