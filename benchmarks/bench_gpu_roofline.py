"""Predicted vs measured on an NVIDIA GPU: resnet50 and one Llama decoder layer, layer by layer.

    .venv/bin/python benchmarks/bench_gpu_roofline.py [--chip h100-sxm] [--batch 32] [--dtype fp16]

Needs a CUDA GPU. Each leaf module is timed with CUDA events recorded by forward hooks (no host sync inside the
forward), median of ``--repeat`` runs after warm-up; the whole forward is timed without hooks. Predictions are the
roofline of the same model captured on meta, on the catalog chip matching the GPU (or ``--chip``). Prints a
markdown table to paste into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from torch import nn

import xpusim
from xpusim.engines.roofline import Estimate, roofline
from xpusim.hardware.chip import load_chip
from xpusim.workload.api import materialize
from xpusim.workload.zoo import build

GPU_TO_CHIP = {"H100": "h100-sxm", "H200": "h200", "A100": "a100-sxm-80gb", "B200": "b200", "L4": "l4", "T4": "t4",
               "V100": "v100-sxm2-32gb", "4090": "rtx-4090"}
TORCH_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def time_leaves_cuda(module: nn.Module, args: tuple[Any, ...], repeat: int) -> tuple[dict[str, float], float]:
    names = {id(m): n for n, m in module.named_modules() if n and not any(True for _ in m.children())}
    events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
    open_: dict[int, torch.cuda.Event] = {}

    def pre(mod: nn.Module, _: Any) -> None:
        if id(mod) in names:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            open_[id(mod)] = ev

    def post(mod: nn.Module, _: Any, __: Any) -> None:
        if id(mod) in open_:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            events.append((names[id(mod)], open_.pop(id(mod)), end))

    with torch.no_grad():
        for _ in range(3):
            module(*args)
        torch.cuda.synchronize()
        totals = []
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(*args)
            end.record()
            torch.cuda.synchronize()
            totals.append(start.elapsed_time(end) / 1e3)
        h1 = torch.nn.modules.module.register_module_forward_pre_hook(pre)
        h2 = torch.nn.modules.module.register_module_forward_hook(post)
        samples: dict[str, list[float]] = {}
        try:
            for _ in range(repeat):
                events.clear()
                module(*args)
                torch.cuda.synchronize()
                per: dict[str, float] = {}
                for name, a, b in events:
                    per[name] = per.get(name, 0.0) + a.elapsed_time(b) / 1e3
                for name, t in per.items():
                    samples.setdefault(name, []).append(t)
        finally:
            h1.remove()
            h2.remove()
    return {n: statistics.median(v) for n, v in samples.items()}, statistics.median(totals)


def report(title: str, est: Estimate, measured: dict[str, float], total: float) -> None:
    print(f"\n### {title} on {torch.cuda.get_device_name()} (predicted on {est.chip.name}, {est.dtype})\n")
    print("| layer | predicted µs | measured µs | error |")
    print("|---|---|---|---|")
    errors = []
    for name, t in sorted(measured.items(), key=lambda kv: -kv[1]):
        pred = sum(o.time_s for o in est.ops if o.module == name or o.module.startswith(name + "."))
        if pred:
            errors.append(abs(pred / t - 1))
            print(f"| {name} | {pred * 1e6:,.1f} | {t * 1e6:,.1f} | {100 * (pred / t - 1):+.0f}% |")
    print(f"\nmedian |error| {100 * statistics.median(errors):.0f}% over {len(errors)} layers; whole model predicted "
          f"{est.latency_s * 1e3:.3f} ms, measured {total * 1e3:.3f} ms ({100 * (est.latency_s / total - 1):+.0f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chip", default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="fp16", choices=sorted(TORCH_DTYPE))
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; this benchmark needs one")
    gpu = torch.cuda.get_device_name()
    chip_name = args.chip or next((c for k, c in GPU_TO_CHIP.items() if k in gpu), None)
    if chip_name is None:
        raise SystemExit(f"error: no catalog chip for {gpu!r}; pass --chip")
    chip = load_chip(chip_name)
    dtype = TORCH_DTYPE[args.dtype]

    built = build("resnet50", batch=args.batch)
    module, inputs, _ = materialize(built.module, built.args, {}, dtype)
    module, inputs = module.cuda(), tuple(t.cuda() for t in inputs)
    est = roofline(xpusim.analyze("resnet50", batch=args.batch, dtype=dtype), chip)
    report(f"resnet50, batch {args.batch}", est, *time_leaves_cuda(module, inputs, args.repeat))

    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    from xpusim.workload.zoo import llm_configs

    cfg_dict = dict(llm_configs()["llama2-7b"]["config"])
    cfg_dict.pop("model_type")
    cfg = AutoConfig.for_model("llama", **cfg_dict)
    cfg._attn_implementation = "sdpa"

    class OneLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = LlamaDecoderLayer(cfg, 0)
            self.rope = LlamaRotaryEmbedding(cfg)

        def forward(self, x: torch.Tensor) -> Any:
            pos = torch.arange(x.shape[1], device=x.device)[None]
            return self.layer(x, position_embeddings=self.rope(x, pos))

    x = torch.randn(1, args.seq_len, cfg.hidden_size)
    layer = OneLayer()
    est = roofline(xpusim.analyze(layer, x, dtype=dtype), chip)
    layer = layer.to(dtype).cuda().eval()
    report(f"one Llama-2-7B decoder layer, {args.seq_len} tokens", est,
           *time_leaves_cuda(layer, (x.to(dtype).cuda(),), args.repeat))


if __name__ == "__main__":
    main()
