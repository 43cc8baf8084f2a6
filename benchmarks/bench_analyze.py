"""xpusim analyze vs the peer FLOP counters, in one process, on the same model objects and inputs.

    .venv/bin/pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python benchmarks/bench_analyze.py [--repeat 5] [--models resnet50,vit_b_16]

Every tool gets the same eval-mode CPU model (real weights, random init) and input; each is warmed up once,
then timed ``--repeat`` times (the median is reported). xpusim keeps no state between calls: its memo tables
live inside one capture. A peer counts as *exact* when its MACs are within 0.05% of the hand count.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

import xpusim

HAND_MACS = {"resnet50": 4_089_184_256, "vit_b_16": 17_563_828_224}  # DESIGN.md's validation set


def quiet() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def xpusim_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    return xpusim.analyze(model, x).totals().macs


def flop_counter_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    fcm = FlopCounterMode(display=False)
    with torch.no_grad(), fcm:
        model(x)
    return fcm.get_total_flops() // 2


def fvcore_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    from fvcore.nn import FlopCountAnalysis

    a = FlopCountAnalysis(model, x)
    a.unsupported_ops_warnings(False)
    a.uncalled_modules_warnings(False)
    return int(a.total())  # fvcore's "flops" are MACs


def ptflops_macs(backend: str) -> Callable[[torch.nn.Module, torch.Tensor], int]:
    def run(model: torch.nn.Module, x: torch.Tensor) -> int:
        from ptflops import get_model_complexity_info

        macs, _ = get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False,
                                            verbose=False, backend=backend)
        return int(macs)

    return run


def calflops_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    from calflops import calculate_flops

    _, macs, _ = calculate_flops(model=model, input_shape=tuple(x.shape), output_as_string=False,
                                 print_results=False, print_detailed=False)
    return int(macs)


def deepspeed_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    from deepspeed.profiling.flops_profiler import get_model_profile

    _, macs, _ = get_model_profile(model=model, input_shape=tuple(x.shape), print_profile=False, detailed=False,
                                   as_string=False)
    return int(macs)


TOOLS: dict[str, Callable[[torch.nn.Module, torch.Tensor], int]] = {
    "xpusim": xpusim_macs,
    "FlopCounterMode": flop_counter_macs,
    "fvcore": fvcore_macs,
    "ptflops (pytorch)": ptflops_macs("pytorch"),
    "ptflops (aten)": ptflops_macs("aten"),
    "calflops": calflops_macs,
    "deepspeed": deepspeed_macs,
}


def time_tools(tools: dict[str, Callable[[torch.nn.Module, torch.Tensor], int]], model: torch.nn.Module,
               x: torch.Tensor, repeat: int) -> dict[str, tuple[int, float]]:
    """Warm each tool up once, then time them round-robin so that machine noise hits every tool alike."""
    macs: dict[str, int] = {}
    times: dict[str, list[float]] = {}
    with quiet():
        for tool, fn in tools.items():
            try:
                macs[tool] = fn(model, x)
                times[tool] = []
            except Exception as exc:  # a peer failing is a result too
                macs[tool] = -1
                print(f"{tool} failed: {type(exc).__name__}: {exc}", file=sys.__stdout__)
        for _ in range(repeat):
            for tool in times:
                t0 = time.perf_counter()
                tools[tool](model, x)
                times[tool].append(time.perf_counter() - t0)
    return {tool: (macs[tool], statistics.median(ts)) for tool, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default="resnet50,vit_b_16")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    print(f"# {time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores · "
          f"torch {torch.__version__} · 1 thread · median of {args.repeat} round-robin runs after 1 warm-up")
    for name in args.models.split(","):
        model = torchvision.models.get_model(name).eval()
        x = torch.randn(1, 3, 224, 224)
        rows = [(tool, macs, sec) for tool, (macs, sec) in time_tools(TOOLS, model, x, args.repeat).items()]
        ours = next(sec for tool, _, sec in rows if tool == "xpusim")
        hand = HAND_MACS.get(name)
        print(f"\n## {name} (hand count {hand / 1e9:.3f} GMACs)" if hand else f"\n## {name}")
        print("| tool | GMACs | exact | s per call | time / xpusim |")
        print("|---|---|---|---|---|")
        exact_peers = []
        for tool, macs, sec in rows:
            exact = hand is not None and abs(macs - hand) <= 5e-4 * hand
            if exact and tool != "xpusim":
                exact_peers.append((sec, tool))
            print(f"| {tool} | {macs / 1e9:.3f} | {'yes' if exact else 'no'} | {sec:.4f} | {sec / ours:.1f}× |")
        if exact_peers:
            sec, tool = min(exact_peers)
            print(f"\nfastest exact peer: {tool}, {sec:.4f} s; xpusim {ours:.4f} s: **{sec / ours:.1f}× faster**")


if __name__ == "__main__":
    main()
