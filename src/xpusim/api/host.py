"""This machine as a chip: `probe_chip_file` measures its roofline (``xpusim probe``) and returns the chip file."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from xpusim.hardware.chip import parse_chip


def count_flops(module: object, x: object) -> int:
    """xpusim's FLOP count of one op (the probe divides it by the op's measured time to calibrate a rate)."""
    from xpusim.workload.capture import capture

    return capture(module, x, device="eager").totals().flops  # type: ignore[arg-type]


def probe_chip_file(file_name: str, *, threads: int = 1,
                    progress: Callable[[str], None] = lambda s: None) -> tuple[str, str]:
    """(YAML text of a chip file for this machine, a one-line summary). The data is checked to load back."""
    from xpusim.hardware.probe import probe

    data = probe(threads=threads, progress=progress, count_flops=count_flops)
    parse_chip(data, file_name)  # what is written must load back
    header = f"# Written by 'xpusim probe': this machine's measured roofline. Use with --chip {file_name}\n"
    tf = data["dense_tflops"]["tensor"]
    summary = (f"fp32 matmul {tf['fp32'] * 1e3:.1f} GFLOP/s" + (f", bf16 {tf['bf16'] * 1e3:.1f} GFLOP/s" if "bf16" in tf
                                                                else "")
               + ", bandwidth " + ", ".join(f"{m['name']} {m['bandwidth_gb_per_s']:.1f} GB/s" for m in data["memory"]))
    return header + yaml.safe_dump(data, sort_keys=False), summary
