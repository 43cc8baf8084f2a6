"""Measured GPU kernel efficiency (`xpusim.hardware.measured`): the per-kernel latency and bandwidth fitted on
vidur's profiled GEMMs, the latency of other kernels from its one-token kernels, and how the cost engines use them:
each against hand arithmetic or the measurements themselves."""

import math

import pytest

from xpusim.engines.llm import Parallelism
from xpusim.engines.roofline import estimate_op
from xpusim.engines.serve import IterationCost
from xpusim.hardware.chip import load_chip
from xpusim.hardware.measured import fit_kernel_latency, measured_efficiency, with_measured_efficiency
from xpusim.workload.transformer import Precision, _matmul, load_transformer


def test_fit_kernel_latency_recovers_a_hand_line() -> None:
    # time = 4 µs + ideal / 0.5 at ideal 1, 2, 3 µs: 6, 8, 10 µs
    t0, f = fit_kernel_latency([6e-6, 8e-6, 10e-6], [1e-6, 2e-6, 3e-6])
    assert t0 == pytest.approx(4e-6) and f == pytest.approx(0.5)


@pytest.mark.parametrize(("times", "ideal"), [([1.0], [1.0]), ([1.0, 2.0], [3.0, 3.0]), ([1.0, 2.0], [1.0])])
def test_fit_kernel_latency_refuses_what_cannot_be_fitted(times: list[float], ideal: list[float]) -> None:
    with pytest.raises(ValueError):
        fit_kernel_latency(times, ideal)


@pytest.mark.parametrize(("chip", "small_us"), [
    # vidur @ 7d47513, data/profiling/compute/{a100,h100}/meta-llama/Llama-2-7b-hf/mlp.csv at one token, medians of
    # input_layernorm, post_attention_layernorm, attn_rope, mlp_act, add (µs)
    ("a100-sxm-80gb", [5, 5, 5, 7, 2]),
    ("h100-sxm", [4, 4, 4, 6, 1]),
])
def test_small_kernel_latency_is_the_median_one_token_kernel(chip: str, small_us: list[float]) -> None:
    eff = measured_efficiency(chip)
    assert eff is not None
    assert eff.op_overhead_us == pytest.approx(sorted(small_us)[2])
    # the GEMM latency, fitted on other kernels, lies within a few µs of it: both are kernel launch and ramp
    assert eff.tensor_overhead_us is not None and abs(eff.tensor_overhead_us - eff.op_overhead_us) < 2.0


def test_gemm_latency_and_bandwidth_reproduce_vidurs_decode_gemms() -> None:
    # vidur's A100 M = 1 projections of Llama-2-7B (tp 1), kernel times in ms (gemm.yaml, from its mlp.csv)
    measured_ms = {(12288, 4096): 0.065, (4096, 4096): 0.025, (22016, 4096): 0.116, (4096, 11008): 0.060}
    chip, _ = with_measured_efficiency(load_chip("a100-sxm-80gb"))
    eff = chip.efficiency
    assert eff is not None and eff.tensor_overhead_us is not None
    for (n, k), ms in measured_ms.items():
        est = estimate_op(_matmul("x", 1, k, n, Precision()), chip)
        nbytes = 2 * (k * n + k + n)  # fp16 weight, input row, output row
        by_hand = eff.tensor_overhead_us * 1e-6 + nbytes / (2039e9 * eff.memory)
        assert est.time_s == pytest.approx(by_hand, rel=1e-9)
        assert abs(est.time_s / (ms * 1e-3) - 1) < 0.12  # the fit's residual on these four


def test_prefills_in_one_iteration_share_one_attention_latency() -> None:
    chip, _ = with_measured_efficiency(load_chip("a100-sxm-80gb"))
    cfg = load_transformer("llama2-7b")
    cost = IterationCost(cfg=cfg, chip=chip, precision=Precision(), parallel=Parallelism(), overhead_s=0.0)
    latency = cost.attention_latency_s
    assert latency == pytest.approx(chip.efficiency.tensor_overhead_us * 1e-6)  # type: ignore[union-attr]
    one = cost.iteration_s([(100, 100)], 0, 0, 1)
    two = cost.iteration_s([(100, 100), (100, 100)], 0, 0, 2)
    shared = (cost.linear_s(200) - cost.linear_s(100) + cost.head_s(200, 2) - cost.head_s(100, 1)
              + cfg.layers * (cost.attention_s(1, 100, 100) - latency))
    assert two - one == pytest.approx(shared, rel=1e-12)
    assert not math.isclose(two - one, shared + cfg.layers * latency)
