"""xpusim probe writes a chip file that loads back; --measure lines predictions up with real timings."""

import json
import platform
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xpusim.cli import app
from xpusim.hardware.chip import load_chip

runner = CliRunner()

SMALL_MODEL = '''
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10)), torch.randn(1, 3, 64, 64)
'''


@pytest.mark.slow
def test_probe_then_measure(tmp_path: Path) -> None:
    host = tmp_path / "host.yaml"
    r = runner.invoke(app, ["probe", "--out", str(host)])
    assert r.exit_code == 0, r.stderr
    chip = load_chip(host)
    assert chip.kind == "host"
    fp32 = chip.peak_flops_per_s("fp32")
    assert fp32 is not None and 1e9 < fp32 < 1e13  # a CPU core: between 1 GFLOP/s and 10 TFLOP/s
    bw = chip.main_memory.bandwidth_bytes_per_s
    assert bw is not None and 1e9 < bw < 1e12
    assert chip.efficiency is not None and chip.efficiency.gemm and chip.efficiency.op_overhead_us > 0
    assert set(chip.efficiency.kind_tflops) == {"pool", "norm", "activation", "softmax"}
    kinds = chip.efficiency.kind_overhead_us
    assert set(kinds) == {"conv", "matmul", "norm", "activation", "pool", "reduction", "softmax", "elementwise"}
    assert all(warm > 0 and cold > 0 for warm, cold in kinds.values())
    curve = chip.efficiency.cold_curve
    assert [b for b, _ in curve] == [3 * n * n * 4 for n in (128, 192, 256, 384, 512, 768, 1024)]
    assert all(0 <= f <= 1 for _, f in curve)
    if platform.libc_ver()[0] == "glibc":  # glibc maps buffers anew only from 32 MiB on (more with heap holes)
        fresh = chip.efficiency.fresh_alloc_bytes
        assert fresh is None or (fresh >= 32 * 2**20 and chip.efficiency.first_touch_gb_per_s)

    model = tmp_path / "small.py"
    model.write_text(SMALL_MODEL)
    r = runner.invoke(app, ["roofline", f"{model}:build", "--chip", str(host), "--dtype", "fp32", "--measure",
                            "--format", "json"])
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)["measured"]
    assert {layer["module"] for layer in m["layers"]} == {"0", "1", "2", "3", "4", "5", "7"}  # Flatten is a view
    assert all(layer["measured_s"] > 0 and layer["predicted_s"] > 0 for layer in m["layers"])
    assert m["measured_total_s"] > 0 and m["median_abs_layer_error"] >= 0


def test_measure_needs_a_float_dtype() -> None:
    r = runner.invoke(app, ["roofline", "resnet18", "--chip", "t4", "--dtype", "int8", "--measure"])
    assert r.exit_code == 2 and "--measure runs int8 models only as fp32, bf16 or fp16" in r.stderr
