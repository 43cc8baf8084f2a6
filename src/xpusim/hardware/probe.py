"""Measure this machine's own roofline and write it as a chip file.

* Peak matmul FLOP/s per dtype (fp32; bf16 and int8 where the CPU build has kernels for them), and the matmul
  efficiency curve (achieved / peak against the product's FLOPs), from square matmuls of growing size.
* Bandwidth per memory level: a streaming add (read 2, write 1) with a working set sized to each cache level
  the OS reports (half of its capacity) and one far larger than the last level for main memory.
* The fixed cost of one op (dispatch and launch): a 1-element add, timed; and per op kind (conv, norm, ...) the
  fixed cost of a call on a few elements, warm and cold — right after the caches were flushed, as a model's big
  convolutions flush them for the small ops that follow.

Every number is a median of repeated timings after a warm-up; the file says how it was measured.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xpusim.units import GIB, GIGA, KIB, MIB, TERA

MATMUL_SIZES = (128, 256, 512, 1024, 2048)


@dataclass(frozen=True, kw_only=True)
class CacheLevel:
    name: str
    capacity_bytes: int


def _median_time(fn: Callable[[], Any], min_time_s: float = 0.15, max_reps: int = 200) -> float:
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time_s and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cache_levels() -> list[CacheLevel]:
    """Data/unified caches of CPU 0 as Linux reports them (empty elsewhere)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    levels = []
    for idx in sorted(root.glob("index*")):
        try:
            kind = (idx / "type").read_text().strip()
            level = (idx / "level").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": KIB, "M": MIB, "G": GIB}.get(size[-1], 1)
        levels.append(CacheLevel(name=f"L{level}", capacity_bytes=int(size.rstrip("KMG")) * mult))
    return levels


MIN_PROBED_LEVEL_BYTES = 256 * KIB
"""Smaller caches (L1) are not probed: one op's fixed overhead swamps a few-KiB transfer."""
SLOW_CALL_S = 0.25
"""Stop growing the matmul once one call takes this long: a dtype without fast kernels would take minutes."""


def matmul_flops(dtype: torch.dtype, sizes: tuple[int, ...] = MATMUL_SIZES) -> list[tuple[float, float]]:
    """(FLOPs of the product, achieved FLOP/s) for square matmuls of growing size."""
    out = []
    for n in sizes:
        if dtype == torch.int8:  # int8 x int8 -> int32, where the CPU build has the kernel
            a8, b8 = (torch.randint(-128, 127, (n, n), dtype=torch.int8) for _ in range(2))
            t = _median_time(functools.partial(torch._int_mm, a8, b8))
        else:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            t = _median_time(functools.partial(torch.mm, a, b, out=torch.empty(n, n, dtype=dtype)))
        out.append((2.0 * n**3, 2.0 * n**3 / t))
        if t > SLOW_CALL_S:
            break
    return out


def stream_bandwidth(working_set_bytes: int, overhead_s: float = 0.0) -> float:
    """Bytes per second of c = a + b over fp32 vectors whose three buffers total ``working_set_bytes``.

    The fixed per-op overhead is subtracted: the roofline adds it back separately.
    """
    n = max(working_set_bytes // (3 * 4), 1024)
    a, b, c = torch.rand(n), torch.rand(n), torch.empty(n)
    t = _median_time(lambda: torch.add(a, b, out=c))
    return 3 * 4 * n / max(t - overhead_s, 0.05 * t)


GEMM_SMALL_DIMS = (8, 32, 128, 512, 1024)
GEMM_BIG_DIM = 1024


def gemm_axis_efficiency(peak: float) -> dict[str, list[list[float]]]:
    """Efficiency of fp32 GEMMs with one dimension small and the other two 1024, per axis (m, n, k)."""
    out: dict[str, list[list[float]]] = {}
    big = GEMM_BIG_DIM
    for axis in "mnk":
        pts = []
        for s in GEMM_SMALL_DIMS:
            m, n, k = (s if axis == "m" else big), (s if axis == "n" else big), (s if axis == "k" else big)
            t = _median_time(functools.partial(torch.mm, torch.randn(m, k), torch.randn(k, n),
                                               out=torch.empty(m, n)))
            pts.append([float(s), round(min(2.0 * m * n * k / t / peak, 1.0), 4)])
        out[axis] = pts
    return out


KIND_CASES: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]] = {
    "pool": (lambda: torch.nn.MaxPool2d(3, 2, 1), (1, 64, 112, 112)),
    "norm": (lambda: torch.nn.BatchNorm2d(64).eval(), (1, 64, 56, 56)),
    "activation": (lambda: torch.nn.GELU(), (1, 256, 64, 64)),
    "softmax": (lambda: torch.nn.Softmax(dim=-1), (12, 128, 128)),
}
"""One representative op per vector kind, timed to calibrate that kind's effective rate."""


FlopCounter = Callable[[torch.nn.Module, torch.Tensor], int]
"""xpusim's FLOP count of one module on one input (given by the layer above: hardware knows no workloads)."""


def kind_rates(overhead_s: float, count_flops: FlopCounter) -> dict[str, float]:
    """Effective TFLOP/s per op kind: xpusim's FLOP count of the op over its measured time."""
    rates = {}
    for kind, (make, shape) in KIND_CASES.items():
        mod, x = make(), torch.randn(shape)
        flops = count_flops(mod, x)
        with torch.no_grad():
            t = _median_time(functools.partial(mod, x))
        rates[kind] = round(flops / max(t - overhead_s, 0.05 * t) / TERA, 6)
    return rates


OVERHEAD_CASES: dict[str, Callable[[], Callable[[], Any]]] = {
    "conv": lambda: functools.partial(torch.nn.Conv2d(8, 8, 1, bias=False), torch.randn(1, 8, 2, 2)),
    "matmul": lambda: functools.partial(torch.nn.Linear(8, 8), torch.randn(1, 8)),
    "norm": lambda: functools.partial(torch.nn.BatchNorm2d(8).eval(), torch.randn(1, 8, 2, 2)),
    "activation": lambda: functools.partial(torch.nn.ReLU(), torch.randn(1, 8, 2, 2)),
    "pool": lambda: functools.partial(torch.nn.MaxPool2d(2), torch.randn(1, 8, 4, 4)),
    "reduction": lambda: functools.partial(torch.nn.AdaptiveAvgPool2d(1), torch.randn(1, 8, 2, 2)),
    "softmax": lambda: functools.partial(torch.nn.Softmax(dim=-1), torch.randn(1, 8)),
    "elementwise": lambda: functools.partial(torch.add, torch.randn(1, 8, 2, 2), torch.randn(1, 8, 2, 2)),
}
"""Per op kind, a call on a few elements: its time is the kind's fixed cost (the module call, dispatch, kernel
selection) — a module for the kinds models call as modules, a function for the elementwise ops they call inline."""
COLD_SAMPLES = 25


def kind_overheads_s(flush_bytes: int) -> dict[str, tuple[float, float]]:
    """Per op kind, (warm, cold) seconds of the fixed cost: called again and again, and called right after a copy of
    ``flush_bytes`` has pushed its code and metadata out of the caches (what a model's big convolutions and GEMMs
    do to the small ops after them)."""
    n = max(flush_bytes // 4, 1024)
    src, dst = torch.rand(n), torch.empty(n)
    out: dict[str, tuple[float, float]] = {}
    with torch.no_grad():
        for kind, make in OVERHEAD_CASES.items():
            fn = make()
            warm = _median_time(fn, min_time_s=0.05, max_reps=500)
            out[kind] = (warm, _median_time_after(functools.partial(dst.copy_, src), fn))
    return out


def _median_time_after(before: Callable[[], Any], fn: Callable[[], Any]) -> float:
    """Median time of ``fn`` over `COLD_SAMPLES` calls, each right after ``before`` (untimed)."""
    samples = []
    for _ in range(COLD_SAMPLES):
        before()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


COLD_GEMM_SIZES = (128, 192, 256, 384, 512, 768, 1024)


def eviction_curve(warm_s: float, cold_s: float) -> list[list[float]]:
    """[[bytes, fraction], ...]: after a square fp32 GEMM whose operands take ``bytes`` (3·n²·4), how far a small
    norm's fixed cost has gone from warm (0) to cold (1) — how much of a small op's code and metadata a model's
    convolutions and GEMMs of that size evict on this machine (a GEMM re-reads its operands, so it evicts more than
    a copy of its bytes; a cache shared with other tenants holds less than the OS reports)."""
    fn = OVERHEAD_CASES["norm"]()
    curve = []
    with torch.no_grad():
        for n in COLD_GEMM_SIZES:
            gemm = functools.partial(torch.mm, torch.randn(n, n), torch.randn(n, n), out=torch.empty(n, n))
            frac = (_median_time_after(gemm, fn) - warm_s) / max(cold_s - warm_s, 1e-9)
            curve.append([float(3 * n * n * 4), round(min(max(frac, 0.0), 1.0), 4)])
    return curve


FRESH_SIZES_MIB = (1, 2, 4, 8, 16, 32, 64, 128)


def minor_faults() -> int | None:
    """Minor page faults of this process so far (None where the OS does not count them)."""
    try:
        import resource
    except ImportError:  # not on this OS: no fault counts, no first-touch term
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def page_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def fresh_allocation_bytes() -> int | None:
    """The smallest buffer (of `FRESH_SIZES_MIB`) that gets fresh pages every time it is allocated, written and freed
    again (page faults on all of six tries, after four to settle): the allocator maps it and unmaps it instead of
    keeping it. glibc does that above its mmap threshold, which rises with the buffers freed up to 32 MiB on 64-bit
    systems (mallopt(3)); below it a repeated buffer settles on pages already touched. None when no size up to
    128 MiB is fresh, or this OS does not count page faults."""
    if minor_faults() is None:
        return None
    page = page_bytes()
    for mib in FRESH_SIZES_MIB:
        n = mib * MIB // 4
        for _ in range(4):  # the first allocations of a size move the allocator's threshold and its heap's top
            torch.empty(n).fill_(1.0)
        faults = [0] * 6
        for i in range(len(faults)):
            before = minor_faults() or 0
            torch.empty(n).fill_(1.0)
            faults[i] = (minor_faults() or 0) - before
        if min(faults) * page >= 0.9 * mib * MIB:
            return mib * MIB
    return None


def first_touch_bytes_per_s(nbytes: int) -> float:
    """Bytes per second of first touch: writing ``nbytes`` into a fresh buffer (allocated, page-faulted, unmapped on
    free) minus writing them into a buffer already touched; the page faults, the kernel zeroing each page and the
    unmap are what is left."""
    n = nbytes // 4
    reused = torch.empty(n)
    fresh = _median_time(lambda: torch.empty(n).fill_(1.0), min_time_s=0.3, max_reps=50)
    warm = _median_time(lambda: reused.fill_(1.0), min_time_s=0.3, max_reps=50)
    return nbytes / max(fresh - warm, 1e-9)


def op_overhead_s() -> float:
    a, b, c = torch.ones(1), torch.ones(1), torch.empty(1)
    return _median_time(lambda: torch.add(a, b, out=c), min_time_s=0.05, max_reps=2000)


def probe(threads: int = 1, progress: Callable[[str], None] = lambda s: None, *,
          count_flops: FlopCounter | None = None) -> dict[str, Any]:
    """Measure and return a chip-file dict for this machine (validated by `xpusim.hardware.chip.Chip`)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        progress("matmul fp32")
        fp32 = matmul_flops(torch.float32)
        tensor: dict[str, float] = {"fp32": max(f for _, f in fp32) / TERA}
        curve = fp32
        bf16_note = ""
        try:
            progress("matmul bf16")
            bf16 = matmul_flops(torch.bfloat16)
            tensor["bf16"] = max(f for _, f in bf16) / TERA
        except RuntimeError as exc:  # no bf16 kernels on this CPU
            bf16_note = f" bf16 matmul failed: {exc}."
        try:
            progress("matmul int8")
            int8 = matmul_flops(torch.int8, sizes=MATMUL_SIZES[1:])  # _int_mm needs sizes > 16
            tensor["int8"] = max(f for _, f in int8) / TERA
        except (RuntimeError, AttributeError) as exc:
            bf16_note += f" int8 matmul failed: {exc}."
        peak = max(f for _, f in curve)
        efficiency = [[flops, round(min(achieved / peak, 1.0), 4)] for flops, achieved in curve]
        progress("op overhead")
        overhead = op_overhead_s()
        progress("fixed cost per op kind, warm and cold")
        levels = cache_levels()
        last_level = max((lv.capacity_bytes for lv in levels), default=32 * MIB)
        kind_overhead = kind_overheads_s(2 * last_level)
        eviction = eviction_curve(*kind_overhead["norm"])
        progress("first touch of fresh pages")
        fresh_bytes = fresh_allocation_bytes()
        touch = first_touch_bytes_per_s(max(fresh_bytes, 64 * MIB)) if fresh_bytes else None
        progress("GEMM shapes")
        gemm = gemm_axis_efficiency(peak)
        progress("vector op kinds")
        kinds = kind_rates(overhead, count_flops) if count_flops is not None else {}
        memory: list[dict[str, Any]] = []
        progress("main memory bandwidth")
        dram_ws = max(8 * last_level, 256 * MIB)
        total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        memory.append({"name": "DRAM", "capacity_gib": round(total_ram / GIB, 2) or 1.0,
                       "bandwidth_gb_per_s": round(stream_bandwidth(dram_ws, overhead) / GIGA, 3),
                       "source": f"measured: c = a + b (fp32) over a {dram_ws // MIB} MiB working set"})
        for lv in levels:
            if lv.capacity_bytes < MIN_PROBED_LEVEL_BYTES:
                continue
            progress(f"{lv.name} bandwidth")
            bw = stream_bandwidth(lv.capacity_bytes // 2, overhead)
            memory.append({"name": lv.name, "capacity_mib": round(lv.capacity_bytes / MIB, 4),
                           "bandwidth_gb_per_s": round(bw / GIGA, 3),
                           "source": f"measured: c = a + b (fp32) over {lv.capacity_bytes // 2 // KIB} KiB "
                                     f"(half of the {lv.name} capacity the OS reports)"})
    finally:
        torch.set_num_threads(old_threads)
    cpu = platform.processor() or platform.machine()
    return {
        "name": "host",
        "title": f"this host ({cpu}, {threads} thread{'s' if threads > 1 else ''}, torch {torch.__version__})",
        "vendor": "measured",
        "kind": "host",
        "year": None,
        "process": None,
        "node_nm": None,
        "tdp_w": None,
        "price_usd": None,
        "dense_tflops": {"tensor": tensor, "vector": {"fp32": tensor["fp32"]}},
        "compute_source": (f"measured: best of square matmuls n = {', '.join(map(str, MATMUL_SIZES))}, "
                           f"{threads} thread(s); the vector fp32 peak is taken equal (same SIMD units)." + bf16_note),
        "memory": memory,
        "links": [],
        "efficiency": {"tensor": efficiency, "vector": 1.0, "memory": 1.0,
                       "op_overhead_us": round(overhead * 1e6, 3), "gemm": gemm, "kind_tflops": kinds,
                       "kind_overhead_us": {k: [round(w * 1e6, 3), round(c * 1e6, 3)]
                                            for k, (w, c) in kind_overhead.items()},
                       "cold_curve": eviction,
                       "fresh_alloc_bytes": fresh_bytes,
                       "first_touch_gb_per_s": round(touch / GIGA, 3) if touch else None,
                       "source": "measured: square-matmul efficiency vs FLOPs; fp32 GEMMs with one dimension small "
                                 f"(the others {GEMM_BIG_DIM}); one representative op per vector kind "
                                 f"({', '.join(KIND_CASES)}); op overhead of a 1-element add; per kind the "
                                 "fixed cost of a call on a few elements, warm (repeated) and cold (right after "
                                 f"copying {2 * last_level // MIB} MiB, twice the last cache level), and how far "
                                 "toward cold a small norm is after square GEMMs of growing size; the smallest "
                                 "buffer of "
                                 f"{', '.join(map(str, FRESH_SIZES_MIB))} MiB that page-faults every time it is "
                                 "allocated again (fresh_alloc_bytes), and the rate of writing into fresh pages beyond "
                                 "that of reused ones (first_touch_gb_per_s)"},
        "notes": f"probed with {threads} thread(s) on {time.strftime('%Y-%m-%d')}; roofline uses the memory level "
                 "the op's working set fits in (host chips only)",
    }
