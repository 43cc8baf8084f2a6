"""Compression: quantizer round-trips (property tests), the must-show accuracies on the built-in tasks, pruning
that really shrinks the model, user models and data, and clear errors."""

import copy
import json
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xpusim.cli import app
from xpusim.compress.api import (
    baseline,
    load_task,
    run_prune,
    run_variant,
    saved_size,
)
from xpusim.compress.prune import parse_prune
from xpusim.compress.quant import (
    QuantError,
    UniformSpec,
    fake_pow2,
    fake_uniform,
    float_step,
    kmeans_codebook,
    quantize_uniform,
    round_float,
)
from xpusim.compress.tasks import digits_task
from xpusim.compress.variants import parse_variant, quantize_model

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return digits_task(0)


# ------------------------------------------------------------------------------------------ property tests
SPECS = [UniformSpec(bits=b, symmetric=s, granularity=g, group_size=8 if g == "group" else 0)
         for b in (2, 3, 4, 8) for s in (True, False) for g in ("tensor", "channel", "group")]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.bits}b-{'sym' if s.symmetric else 'asym'}-{s.granularity}")
def test_uniform_round_trip_within_half_a_step(spec: UniformSpec, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(12, 32, generator=g) * (seed + 1) + (0.5 if not spec.symmetric else 0.0)
    q, scale, zero = quantize_uniform(w, spec)
    assert q.min() >= spec.qmin and q.max() <= spec.qmax and torch.equal(q, q.round())
    width = {"tensor": w.numel(), "channel": 32, "group": 8}[spec.granularity]
    rows = w.reshape(-1, width)
    deq = (q.reshape(rows.shape) - zero[:, None]) * scale[:, None]
    assert ((deq - rows).abs() <= scale[:, None] / 2 * (1 + 1e-5) + 1e-7).all()  # min-max: nothing is clipped
    assert torch.allclose(fake_uniform(w, spec).reshape(rows.shape), deq, atol=1e-6)


@pytest.mark.parametrize("fmt", ["tf32", "bf16", "fp16", "fp8-e4m3", "fp8-e5m2"])
@pytest.mark.parametrize("seed", range(3))
def test_float_formats_round_to_nearest(fmt: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, generator=g) * 10 ** torch.empty(4096).uniform_(-3, 2, generator=g)
    r = round_float(x, fmt)
    assert ((r - x).abs() <= float_step(x, fmt) / 2 * (1 + 1e-6)).all()
    if fmt == "bf16":  # the bit-level rounding agrees with torch's own conversion
        assert torch.equal(r, x.to(torch.bfloat16).float())
    if fmt == "tf32":  # 10 mantissa bits: representable in fp32 with the low 13 bits zero
        assert (r.view(torch.int32) & 0x1FFF == 0).all()


def test_pow2_and_codebook_shapes() -> None:
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    p = fake_pow2(w, 4)
    nz = p[p != 0].abs()
    assert torch.equal(torch.log2(nz), torch.log2(nz).round()) and p.abs().unique().numel() <= 2 ** 3 + 1
    cent, idx = kmeans_codebook(w, 16)
    assert cent.numel() == 16 and idx.max() < 16
    # every weight sits at its nearest centroid
    assert torch.equal(idx, torch.argmin((w.reshape(-1, 1) - cent).abs(), dim=1).reshape(w.shape))


# -------------------------------------------------------------------------------------- must-show (digits)
def test_w8a8_within_1_point_on_digits(digits) -> None:  # type: ignore[no-untyped-def]
    base = digits.evaluate(digits.model)
    assert base > 95
    assert run_variant(digits, parse_variant("w8a8")).value >= base - 1.0


def test_2bit_per_tensor_collapses_and_qat_recovers(digits) -> None:  # type: ignore[no-untyped-def]
    base = digits.evaluate(digits.model)
    assert run_variant(digits, parse_variant("w2:per-tensor")).value < 30  # near chance (10 classes)
    assert run_variant(digits, parse_variant("w2:per-tensor:qat")).value >= base - 3.0


def test_codebook16_accuracy_and_file_size(digits) -> None:  # type: ignore[no-untyped-def]
    base = baseline(digits)
    r = run_variant(digits, parse_variant("codebook16"))
    assert r.value >= base.value - 1.0
    layers = [m for m in digits.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    quantized = sum(m.weight.numel() for m in layers)
    others = sum(p.numel() for p in digits.model.parameters()) - quantized
    payload = quantized * 4 / 8 + others * 4 + 5 * 16 * 4  # 4-bit indices, fp32 biases, a 16-entry codebook per layer
    assert payload <= r.size_bytes <= payload + 4096  # plus the header
    assert base.size_bytes / r.size_bytes > 6


def test_structured_pruning_shrinks_and_speeds_up(digits) -> None:  # type: ignore[no-untyped-def]
    base = baseline(digits)
    r = run_prune(digits, parse_prune("0.5:structured"))
    assert r.value >= base.value - 2.0
    assert 0.4 <= r.params / base.params <= 0.6
    assert r.size_bytes < 0.6 * base.size_bytes and r.macs < base.macs
    # measured speedup: best of interleaved timings of the two models on the held-out split
    pruned = copy.deepcopy(digits.model)
    from xpusim.compress.prune import prune_structured

    prune_structured(pruned, digits.example, 0.5, digits.classifier)
    best = {"float": float("inf"), "pruned": float("inf")}
    with torch.no_grad():
        for _ in range(30):
            for name, m in (("float", digits.model), ("pruned", pruned)):
                t0 = time.perf_counter()
                m(digits.test_x)
                best[name] = min(best[name], time.perf_counter() - t0)
    assert best["pruned"] < best["float"]


@pytest.mark.parametrize("spec", ["0.5", "0.5:global", "2:4"])
def test_masking_only_pruning_keeps_the_size(digits, spec: str) -> None:  # type: ignore[no-untyped-def]
    base = baseline(digits)
    r = run_prune(digits, parse_prune(spec))
    assert r.size_bytes == base.size_bytes and r.params == base.params and r.macs == base.macs
    assert r.sparsity == pytest.approx(0.5, abs=0.03)


@pytest.mark.slow
def test_w8a8_within_1_point_on_mnist1d() -> None:
    t = load_task("mnist1d-cnn")
    base = t.evaluate(t.model)
    assert base > 85
    assert run_variant(t, parse_variant("w8a8")).value >= base - 1.0


@pytest.mark.slow
def test_minilm_w8a8_cosine() -> None:
    t = load_task("minilm")
    assert t.evaluate(t.model) == pytest.approx(1.0, abs=1e-6)
    assert run_variant(t, parse_variant("w8a8")).value >= 0.99


def test_quantized_file_smaller_by_the_bit_ratio(digits) -> None:  # type: ignore[no-untyped-def]
    sizes = {b: saved_size(quantize_model(copy.deepcopy(digits.model), parse_variant(f"w{b}"))) for b in (8, 4, 2)}
    assert sizes[8] > sizes[4] > sizes[2]


# ---------------------------------------------------------------------------------------------- user task
USER = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(dim=1)  # linearly separable
    return x[:200], y[:200], x[200:], y[200:]

def bad_shape():
    return torch.randn(10, 5), torch.zeros(10).long(), torch.randn(10, 5), torch.zeros(10).long()
"""


def test_user_model_and_data(tmp_path: Path) -> None:
    f = tmp_path / "user.py"
    f.write_text(USER)
    r = runner.invoke(app, ["compress", f"{f}:build", "--data", f"{f}:data", "--epochs", "150", "-q", "w8a8",
                            "--chip", "none", "-f", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["baseline"]["value"] > 80 and d["variants"][0]["value"] >= d["baseline"]["value"] - 2
    assert {"task", "metric", "baseline", "variants"} <= d.keys()
    assert {"name", "value", "size_bytes", "params", "macs", "sparsity", "hardware"} <= d["variants"][0].keys()


@pytest.mark.parametrize(("args", "message"), [
    (["-q", "w9a8"], "weight bits 9"),
    (["-q", "w0"], "weight bits 0"),
    (["-q", "w4:per-row"], "unknown option 'per-row'"),
    (["-q", "w4:group=16"], "group=16 does not divide the 9 inputs"),
    (["-p", "1.0"], "ratio 1.0 must be between 0 and 1"),
    (["-p", "4:2"], "N:M needs 0 < N < M"),
    (["nothing-here"], "unknown task 'nothing-here'"),
    (["--chip", "t5"], "unknown chip 't5'"),
])
def test_cli_bad_input_exit_2(args: list[str], message: str) -> None:
    r = runner.invoke(app, ["compress", *args])
    assert r.exit_code == 2, r.stdout
    assert message in r.stderr and "Traceback" not in r.stderr


def test_bad_data_factory_shape(tmp_path: Path) -> None:
    f = tmp_path / "user.py"
    f.write_text(USER)
    r = runner.invoke(app, ["compress", f"{f}:build", "--data", f"{f}:bad_shape"])
    assert r.exit_code == 2
    assert "cannot take the inputs" in r.stderr and "(5,)" in r.stderr


def test_per_channel_needs_a_channel_axis() -> None:
    with pytest.raises(QuantError, match=r"output-channel axis; this tensor has shape \(7,\)"):
        fake_uniform(torch.randn(7), UniformSpec(bits=4, granularity="channel"))


def test_adder_layer_is_negative_l1_distance() -> None:
    from xpusim.compress.adder import AdderConv2d, to_adder

    conv = torch.nn.Conv2d(3, 4, 3, padding=1, stride=2)
    a = AdderConv2d(conv)
    x = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    y = a(x)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for o, i, j in ((0, 0, 0), (3, 2, 1), (1, 3, 3)):  # hand: −Σ|patch − filter| at output (i, j)
        patch = xp[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
        expected = float(-(patch - conv.weight[o].detach()).abs().sum())
        assert float(y[0, o, i, j].detach()) == pytest.approx(expected, rel=1e-5)
    y.sum().backward()
    assert a.weight.grad is not None and a.weight.grad.abs().sum() > 0
    m = to_adder(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()))
    assert isinstance(m[0][0], AdderConv2d) and not any(isinstance(x, torch.nn.Conv2d) for x in m.modules())


def test_iterative_pruning_reaches_the_target(digits) -> None:  # type: ignore[no-untyped-def]
    r = run_prune(digits, parse_prune("0.6:structured:steps=2:ft=2"))
    assert 0.35 <= r.params / baseline(digits).params <= 0.45
    masks = run_prune(digits, parse_prune("0.7:steps=3"))
    assert masks.sparsity == pytest.approx(0.7, abs=0.03)


def test_activation_calibration_options(digits) -> None:  # type: ignore[no-untyped-def]
    v = parse_variant("w4a4:a-percentile")
    assert v.act_calibration == "percentile" and v.act_bits == 4
    assert run_variant(digits, v).value >= run_variant(digits, parse_variant("w4a4")).value - 1.0


@pytest.mark.slow
def test_adder_variant_learns(digits) -> None:  # type: ignore[no-untyped-def]
    # 6 epochs are far from the 30 the default uses (94% here), but well above chance (10%).
    r = run_variant(digits, parse_variant("adder:ft=6"))
    assert r.value > 40 and r.params > baseline(digits).params  # + batch norms
    with pytest.raises(QuantError, match="adder takes :ft=N"):
        parse_variant("adder:fast")
