"""Roofline cases checked by hand against datasheet numbers, and the roofline CLI contract."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import xpusim
from xpusim.cli import app
from xpusim.engines.roofline import gemm_dims, roofline
from xpusim.hardware.chip import load_chip

runner = CliRunner()
A100, H100 = load_chip("a100-sxm-80gb"), load_chip("h100-sxm")


class MatMul(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


class Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def half(*shape: int) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float16, device="meta")


@pytest.mark.parametrize(("chip", "peak", "bandwidth"), [(A100, 312e12, 2039e9), (H100, 989.4e12, 3350e9)])
def test_large_gemm_is_compute_bound(chip, peak: float, bandwidth: float) -> None:
    n = 8192
    est = roofline(xpusim.analyze(MatMul(), (half(n, n), half(n, n))), chip)
    (op,) = est.ops
    flops, nbytes = 2 * n**3, 3 * n * n * 2  # read A and B, write C, 2 bytes each
    assert (op.flops, op.bytes) == (flops, nbytes)
    assert op.bound == "compute"
    assert op.time_s == pytest.approx(flops / peak)  # A100: 3.524 ms, H100: 1.111 ms
    assert op.intensity == pytest.approx(n / 3) and op.intensity > peak / bandwidth


@pytest.mark.parametrize(("chip", "bandwidth"), [(A100, 2039e9), (H100, 3350e9)])
def test_gemv_is_memory_bound(chip, bandwidth: float) -> None:
    n = 8192
    est = roofline(xpusim.analyze(MatMul(), (half(n, n), half(n, 1))), chip)
    (op,) = est.ops
    nbytes = (n * n + n + n) * 2
    assert op.bound == "memory" and op.bytes == nbytes
    assert op.time_s == pytest.approx(nbytes / bandwidth)  # A100: 65.8 µs
    assert op.attainable_flops_per_s == pytest.approx(2 * n * n / (nbytes / bandwidth))


@pytest.mark.parametrize(("chip", "expected_us"), [(A100, 49.37), (H100, 30.05)])
def test_elementwise_add_streams_at_memory_bandwidth(chip, expected_us: float) -> None:
    n = 2**24
    est = roofline(xpusim.analyze(Add(), (half(n), half(n))), chip)
    (op,) = est.ops
    assert op.bytes == 3 * n * 2 and op.flops == n
    assert op.bound == "memory"
    assert op.time_s * 1e6 == pytest.approx(expected_us, rel=1e-3)  # 100.66 MB / 2039 or 3350 GB/s


def test_latency_bounds_and_metrics() -> None:
    est = roofline(xpusim.analyze("resnet50", batch=32, dtype="float16"), A100)
    assert est.latency_perfect_overlap_s <= est.latency_s <= est.latency_no_overlap_s
    assert est.throughput_per_s == pytest.approx(32 / est.latency_s)
    assert est.energy_tdp_j == pytest.approx(400 * est.latency_s)
    assert 0 < est.utilization < 1
    share = est.bound_share()
    assert share["compute"] + share["memory"] == pytest.approx(1.0)
    assert est.cost_usd_per_million(3.6) == pytest.approx(est.latency_s / 32 * 1e6 / 1000)


def test_gemm_dims_of_conv_and_matmul() -> None:
    wl = xpusim.analyze(nn.Conv2d(16, 32, 3, padding=1, groups=2), torch.randn(2, 16, 8, 8))
    assert gemm_dims(wl.ops[0]) == (2 * 8 * 8, 16, 8 * 9)  # M = N·Ho·Wo, N = Cout/g, K = Cin/g·kh·kw
    wl = xpusim.analyze(nn.Linear(64, 10), torch.randn(5, 64))
    assert gemm_dims(wl.ops[0]) == (5, 10, 64)


def test_roofline_json_contract_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "roof.png"
    r = runner.invoke(app, ["roofline", "resnet18", "--chip", "a100-sxm-80gb", "--dtype", "fp16", "--batch", "8",
                            "--format", "json", "--plot", str(png), "--price-per-hour", "2.5"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["chip"] == "a100-sxm-80gb" and d["dtype"] == "fp16"
    assert {"latency_s", "throughput_per_s", "flops", "bytes", "energy_j", "cost_usd_per_million"} <= d["totals"].keys()
    keys = {"name", "kind", "flops", "bytes", "intensity", "time_s", "bound", "attainable_flops_per_s"}
    assert all(keys <= layer.keys() for layer in d["layers"])
    assert sum(layer["time_s"] for layer in d["layers"]) == pytest.approx(d["totals"]["latency_s"])
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_int8_halves_bytes_of_fp16() -> None:
    def run(dtype: str) -> dict:
        args = ["roofline", "resnet18", "--chip", "t4", "--dtype", dtype, "-f", "json"]
        return json.loads(runner.invoke(app, args).stdout)

    r16, r8 = run("fp16"), run("int8")
    assert r8["totals"]["flops"] == r16["totals"]["flops"]
    assert r8["totals"]["bytes"] == pytest.approx(r16["totals"]["bytes"] / 2, rel=1e-6)
    assert r8["totals"]["latency_s"] < r16["totals"]["latency_s"]


def test_several_models_on_one_chip() -> None:
    r = runner.invoke(app, ["roofline", "resnet18", "mobilenet_v2", "--chip", "t4", "-f", "json"])
    assert r.exit_code == 0
    assert [d["model"] for d in json.loads(r.stdout)] == ["resnet18", "mobilenet_v2"]


@pytest.mark.parametrize(("chip", "dtype"), [("t4", "fp16"), ("tpu-v4", "bf16"), ("gaudi2", "bf16")])
def test_default_dtype_is_one_the_chip_has(chip: str, dtype: str) -> None:
    r = runner.invoke(app, ["roofline", "resnet18", "--chip", chip, "-f", "json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["dtype"] == dtype


def _host_with(efficiency: dict) -> object:  # type: ignore[type-arg]
    from xpusim.hardware.chip import parse_chip

    return parse_chip({"name": "host", "title": "test host", "vendor": "measured", "kind": "host",
                       "dense_tflops": {"tensor": {"fp32": 0.1}, "vector": {"fp32": 0.1}},
                       "compute_source": "test", "memory": [{"name": "DRAM", "capacity_gib": 1.0,
                                                             "bandwidth_gb_per_s": 10.0, "source": "test"}],
                       "efficiency": efficiency}, "test")


def test_kind_overheads_go_from_warm_to_cold_with_the_largest_op_since() -> None:
    """Norm: 20 µs warm, 160 µs cold; cold_curve 0 at 1 MB to 1 at 4 MB (log-interpolated). A norm first (no norm
    before it): cold, 160. After a 2 MB convolution: log(2)/log(4) = half way, 20 + 0.5 · 140 = 90. Right after
    that norm: nothing since, warm, 20. An op kind the probe did not time keeps op_overhead_us (3 µs)."""
    from xpusim.engines.roofline import OpEstimate, with_kind_overheads

    host = _host_with({"op_overhead_us": 3.0, "kind_overhead_us": {"norm": [20.0, 160.0]},
                       "cold_curve": [[1e6, 0.0], [4e6, 1.0]]})

    def op(kind: str, nbytes: int) -> OpEstimate:
        return OpEstimate(name=kind, module="m", kind=kind, unit="vector", dtype="fp32", flops=0, bytes=nbytes,
                          compute_s=0.0, memory_s=0.0, energy_j=0.0, overhead_s=3e-6, memory_level="DRAM")

    out = with_kind_overheads((op("norm", 10), op("conv", 2_000_000), op("norm", 10), op("norm", 10),
                               op("pool", 10)), host)  # type: ignore[arg-type]
    assert [round(e.overhead_s * 1e6, 6) for e in out] == [160.0, 3.0, 90.0, 20.0, 3.0]


def test_cold_curve_fraction_outside_0_1_is_refused() -> None:
    with pytest.raises(Exception, match=r"cold_curve fraction 1\.5"):
        _host_with({"cold_curve": [[1e6, 1.5]]})


def test_first_touch_of_a_fresh_output_at_the_probed_rate() -> None:
    """Outputs of 32 MiB and more get fresh pages every time, written at 2 GB/s beyond the reused rate. A batch-16
    ResNet stem convolution writes 16·64·112·112·4 = 51,380,224 bytes: 51,380,224 / 2e9 = 25.690112 ms of first
    touch on top of its roofline time. Its in-place ReLU writes into that buffer (nothing fresh); an 8 MiB output
    stays below the threshold (pages reused); without the two probe fields there is no such term."""
    from xpusim.engines.roofline import estimate_op
    from xpusim.workload.model import OpCost

    host = _host_with({"fresh_alloc_bytes": 32 * 2**20, "first_touch_gb_per_s": 2.0})
    shape = (16, 64, 112, 112)

    def op(aten: str, out: tuple[int, ...]) -> OpCost:
        return OpCost(name=aten, module="m", op=aten, kind="activation", input_shapes=(out,), output_shape=out,
                      activation_bytes_read=4 * math.prod(out), bytes_written=4 * math.prod(out))

    conv = OpCost(name="conv", module="m", op="aten.convolution.default", kind="conv",
                  input_shapes=((16, 3, 224, 224), (64, 3, 7, 7)), output_shape=shape)
    stem = estimate_op(conv, host)  # type: ignore[arg-type]
    assert stem.first_touch_s == pytest.approx(51_380_224 / 2e9, rel=1e-12)
    assert stem.time_s == pytest.approx(max(stem.compute_s, stem.memory_s) + stem.overhead_s + 0.025690112)
    assert estimate_op(op("aten.relu_.default", shape), host).first_touch_s == 0.0  # type: ignore[arg-type]
    assert estimate_op(op("aten.relu.default", (2, 2**20)), host).first_touch_s == 0.0  # type: ignore[arg-type]
    assert estimate_op(conv, _host_with({})).first_touch_s == 0.0  # type: ignore[arg-type]
    assert estimate_op(conv, host).term == "first touch"  # type: ignore[arg-type]  # no FLOPs or bytes given


def test_fresh_allocation_size_is_measured_in_a_fresh_process() -> None:
    """On Linux (glibc), a buffer allocated again and again reuses its pages below the mmap threshold's ceiling
    (32 MiB on 64-bit, mallopt(3)) and faults every page at and above it — in a fresh process: one whose heap
    holds a free hole that large serves it from there (why the probe measures it rather than assumes it)."""
    import platform
    import subprocess
    import sys

    from xpusim.hardware.probe import minor_faults

    if minor_faults() is None or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's allocator and Linux's fault counts only")
    code = "from xpusim.hardware.probe import fresh_allocation_bytes as f; print(f())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout) == 32 * 2**20


def test_a_dtype_own_tensor_efficiency_replaces_the_common_one() -> None:
    """A 4096³ GEMM is 2·4096³ = 137,438,953,472 FLOPs. At bf16 (peak 1000 TFLOP/s, efficiency 0.6): 229.06 µs; at
    fp8 (peak 2000 TFLOP/s) with its own 0.5: 137.44 µs — not the 114.53 µs the common 0.6 would give."""
    from xpusim.engines.roofline import estimate_op
    from xpusim.hardware.chip import parse_chip
    from xpusim.workload.model import OpCost

    chip = parse_chip({"name": "x", "title": "x", "vendor": "x", "kind": "gpu", "compute_source": "test",
                       "dense_tflops": {"tensor": {"bf16": 1000.0, "fp8": 2000.0}, "vector": {"fp32": 50.0}},
                       "memory": [{"name": "HBM", "capacity_gib": 80.0, "bandwidth_gb_per_s": 3000.0,
                                   "source": "test"}],
                       "efficiency": {"tensor": 0.6, "tensor_by_dtype": {"fp8": 0.5}}}, "test")
    n = 4096

    def gemm(dtype: str) -> OpCost:
        return OpCost(name="mm", module="m", op="aten.mm.default", kind="matmul", input_shapes=((n, n), (n, n)),
                      output_shape=(n, n), dtype=dtype, macs=n**3, flops=2 * n**3)

    assert estimate_op(gemm("bfloat16"), chip).compute_s == pytest.approx(2 * n**3 / (1000e12 * 0.6), rel=1e-12)
    assert estimate_op(gemm("float8_e4m3fn"), chip).compute_s == pytest.approx(2 * n**3 / (2000e12 * 0.5), rel=1e-12)
