"""Roofline cases checked by hand against datasheet numbers, and the roofline CLI contract."""

import json
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
