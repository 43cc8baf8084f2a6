"""``xpusim run --predict``: the step predicted from the cost model before a run. Expected values are worked out
by hand here (FLOPs and bytes of each op on a hand-made chip), never by calling the code under test; no timing is
asserted."""

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import process_alive
from xpusim.cli import app
from xpusim.hardware.chip import Chip, parse_chip
from xpusim.parallel.real.compare import run_result
from xpusim.parallel.real.links import LinkCosts, cache_path, cached_links, fit_alpha_beta, fit_links, measure_links
from xpusim.parallel.real.predict import Calibration, calibrate, predict, simulate_pipeline
from xpusim.parallel.real.spec import RunSpecError, argument_parser, make_spec, spec_from_args
from xpusim.parallel.schedules import build

runner = CliRunner()
PEAK_FLOPS, BW_BYTES = 1e9, 1e9  # the hand-made chip: 1 GFLOP/s, 1 GB/s, no efficiency curve, no op overhead
NO_LINKS = LinkCosts(p2p_alpha_s=0.0, p2p_s_per_byte=0.0, allreduce_alpha_s=0.0, allreduce_s_per_byte=0.0)


def hand_chip() -> Chip:
    return parse_chip({"name": "hand", "title": "hand-made", "vendor": "test", "kind": "cpu",
                       "dense_tflops": {"tensor": {"fp32": PEAK_FLOPS / 1e12}, "vector": {"fp32": PEAK_FLOPS / 1e12}},
                       "compute_source": "test",
                       "memory": [{"name": "DRAM", "capacity_gib": 1, "bandwidth_gb_per_s": BW_BYTES / 1e9,
                                   "source": "test"}]}, "hand")


def roof(flops: int, nbytes: int) -> float:
    return max(flops / PEAK_FLOPS, nbytes / BW_BYTES)


# mlp:layers=4,width=64, 16 samples per micro-batch, fp32; each stage holds 2 layers (Linear 64→64, ReLU)
B, W = 16, 64
ACT = B * W * 4  # one activation: 4096 B
LINEAR = roof(2 * B * W * W + B * W, (W * W + W) * 4 + ACT + ACT)  # addmm: matmul + bias; weights, x in, y out
RELU = roof(B * W, ACT + ACT)  # one op per element; read, write
RELU_BWD = roof(B * W, 2 * ACT + ACT)  # threshold_backward: grad and input in, grad out
DX = roof(2 * B * W * W, W * W * 4 + ACT + ACT)  # input gradient: dy · W
DW = roof(2 * B * W * W, 2 * ACT + W * W * 4)  # weight gradient: dyᵀ · x
DB = roof(B * W + W, ACT + W * 4)  # bias gradient: sum of dy over the batch (xpusim counts B·W + W)


def test_forward_and_backward_per_stage_are_the_rooflines_of_the_training_ops() -> None:
    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", schedule="gpipe", micro_batches=4)
    pred = predict(spec, hand_chip(), NO_LINKS)
    assert pytest.approx((132.096e-6, 8.192e-6)) == (LINEAR, RELU)  # compute-bound, memory-bound
    assert pred.forward_s == pytest.approx((2 * (LINEAR + RELU),) * 2)
    # stage 0's input needs no gradient, so its first layer skips dx; stage 1 gets the full backward of both layers
    layer_bwd = RELU_BWD + DX + DW + DB
    assert pred.backward_s == pytest.approx((layer_bwd + RELU_BWD + DW + DB, 2 * layer_bwd))
    # the optimizer: SGD reads parameter and gradient and writes the parameter, 12 B per parameter
    assert pred.optimizer_s == pytest.approx(12 * 2 * (W * W + W) / BW_BYTES)
    assert pred.p2p_s == 0.0 and pred.allreduce_s == 0.0 and pred.tied_embedding_s == 0.0
    assert pred.step_time_s == pytest.approx(pred.pipeline_s + pred.optimizer_s)
    # GPipe, p = 2, no transfer time, F equal and B0 ≤ B1: makespan F0 + B0 + m(F1 + B1), busiest rank m(F1 + B1)
    f0, f1 = pred.forward_s
    b0, b1 = pred.backward_s
    assert pred.bubble_fraction == pytest.approx((f0 + b0) / (4 * (f1 + b1)))
    assert "training mode" in pred.basis["forward_backward"] and "aten.mse_loss" in pred.basis["forward_backward"]


def test_calibration_scales_the_roofline_compute() -> None:
    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", schedule="gpipe", micro_batches=4)
    plain = predict(spec, hand_chip(), NO_LINKS)
    pred = predict(spec, hand_chip(), NO_LINKS, Calibration(forward=(2.0, 2.0), backward=(3.0, 3.0)))
    assert pred.forward_s == pytest.approx(tuple(2 * f for f in plain.forward_s))
    assert pred.backward_s == pytest.approx(tuple(3 * b for b in plain.backward_s))
    assert pred.roofline_step_time_s == pytest.approx(plain.step_time_s) == plain.roofline_step_time_s
    assert pred.optimizer_s == plain.optimizer_s  # memory-bound: not scaled


def test_zb_h1_splits_the_weight_gradient_off_the_backward() -> None:
    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", schedule="zb-h1", micro_batches=4)
    pred = predict(spec, hand_chip(), NO_LINKS)
    assert pred.weight_s[1] == pytest.approx(2 * (DW + DB))
    assert pred.backward_s[1] == pytest.approx(2 * (RELU_BWD + DX))


def test_links_price_the_activation_and_the_all_reduces() -> None:
    links = LinkCosts(p2p_alpha_s=1e-4, p2p_s_per_byte=1e-9, allreduce_alpha_s=2e-4, allreduce_s_per_byte=3e-9)
    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", micro_batches=4)
    assert predict(spec, hand_chip(), links).p2p_s == pytest.approx(1e-4 + ACT * 1e-9)
    # a ring all-reduce among 4: 3 α + 2·3/4 · bytes · β
    assert links.allreduce_s(1000, 4) == pytest.approx(3 * 2e-4 + 1.5 * 1000 * 3e-9)
    assert links.allreduce_s(1000, 1) == 0.0


def test_3d_plan_adds_tensor_and_data_parallel_collectives() -> None:
    links = LinkCosts(p2p_alpha_s=0.0, p2p_s_per_byte=0.0, allreduce_alpha_s=1e-3, allreduce_s_per_byte=1e-9)
    gpt = "gpt:h=64,l=4,a=4,s=16,V=128"
    flat = predict(make_spec(model=gpt, plan="pp=2", micro_batches=4), hand_chip(), links)
    pred = predict(make_spec(model=gpt, plan="dp=2,tp=2,pp=2", micro_batches=4), hand_chip(), links)
    one = 1e-3 + 1 * 16 * 64 * 4 * 1e-9  # an all-reduce of one activation (1 sample × 16 × 64 fp32) between 2
    assert pred.tp_allreduce_s == pytest.approx(4 * 2 * one)  # 4 per layer, 2 layers per stage
    assert pred.allreduce_s > 0.0 and flat.allreduce_s == 0.0
    assert pred.tied_embedding_s == pytest.approx(1e-3 + 128 * 64 * 4 * 1e-9) == flat.tied_embedding_s
    assert pred.forward_s[0] < flat.forward_s[0] + 2 * 2 * one  # half the sublayers' work, plus the all-reduces


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize(("p", "m"), [(2, 4), (4, 8), (3, 12)])
def test_equal_stages_without_transfers_give_the_closed_form_bubble(schedule: str, p: int, m: int) -> None:
    times = simulate_pipeline(build(schedule, p, m), [1.0] * p, [2.0] * p)
    assert times.bubble_fraction == pytest.approx((p - 1) / m)
    assert times.end_s == pytest.approx((m + p - 1) * 3.0)


def test_alpha_beta_fit_recovers_alpha_and_beta() -> None:
    sizes = [4096, 65536, 1 << 20, 4 << 20, 16 << 20]
    alpha, beta = 150e-6, 1 / 2.5e9
    assert fit_alpha_beta(sizes, [alpha + s * beta for s in sizes]) == pytest.approx((alpha, beta))
    links = fit_links({"sizes_bytes": sizes, "p2p_s": [alpha + s * beta for s in sizes],
                       "allreduce_s": [2 * alpha + s * 2 * beta for s in sizes]})
    assert (links.p2p_alpha_s, links.p2p_s_per_byte) == pytest.approx((alpha, beta))
    assert (links.allreduce_alpha_s, links.allreduce_s_per_byte) == pytest.approx((2 * alpha, 2 * beta))
    # noise that would make the latency negative: kept at 0, the slope refitted through the origin
    a, b = fit_alpha_beta([1000, 2000], [0.9e-6, 2.1e-6])
    assert a == 0.0 and b > 0
    assert fit_alpha_beta([1000, 2000], [2e-6, 1e-6]) == (pytest.approx(1.2e-6), 0.0)  # weights 1/t²


def test_cached_link_costs_are_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = LinkCosts(p2p_alpha_s=1e-4, p2p_s_per_byte=1e-9, allreduce_alpha_s=2e-4, allreduce_s_per_byte=2e-9,
                       source="test")
    cache_path(tmp_path).write_text(json.dumps(stored.to_dict()))

    def no_measuring() -> LinkCosts:
        raise AssertionError("measured although cached")

    monkeypatch.setattr("xpusim.parallel.real.links.measure_links", no_measuring)
    links, path, measured = cached_links(tmp_path)
    assert links == stored and path == cache_path(tmp_path) and not measured


def test_prediction_goes_into_the_run_result_with_its_error() -> None:
    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", micro_batches=4)
    pred = predict(spec, hand_chip(), NO_LINKS)
    measured = {"step_time_s": 2 * pred.step_time_s, "bubble_fraction": pred.bubble_fraction + 0.1}
    r = run_result(spec, {"ranks": 2, "backend": "gloo", "measured": measured}, predicted=pred.versus(measured))
    assert r["predicted"]["step_time_s"] == pred.step_time_s
    assert r["predicted"]["error_pct"] == pytest.approx(-50.0)
    assert r["predicted"]["bubble_error_points"] == pytest.approx(-10.0)
    assert set(r["predicted"]["basis"]) >= {"forward_backward", "p2p", "optimizer", "allreduce", "pipeline"}


def test_the_run_table_shows_predicted_against_measured() -> None:
    from rich.console import Console

    from xpusim.report.parallel import print_run

    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", micro_batches=4)
    pred = predict(spec, hand_chip(), NO_LINKS, Calibration(forward=(2.0, 2.0), backward=(2.0, 2.0)))
    measured = {"step_time_s": pred.step_time_s / 0.8, "bubble_fraction": 0.25, "idle_s_per_rank": {"0": 1e-3},
                "peak_rss_bytes_per_rank": [2**20, 2**20], "step_times_s": [1.0]}
    console = Console(record=True, width=200)
    print_run(console, run_result(spec, {"ranks": 2, "backend": "gloo", "measured": measured},
                                  predicted=pred.versus(measured)))
    text = console.export_text()
    assert "predicted" in text and "-20.0%" in text and "points" in text
    assert "calibrated: the roofline's compute × 2.00/2.00, 2.00/2.00" in text and "the roofline alone" in text


def test_predict_option_round_trips_and_is_checked(tmp_path: Path) -> None:
    chip = tmp_path / "host.yaml"
    chip.write_text(json.dumps(hand_chip().model_dump(exclude_none=True)))
    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", predict=str(chip))
    assert spec.predict == str(chip)
    assert spec_from_args(argument_parser().parse_args(spec.to_argv())) == spec
    with pytest.raises(RunSpecError, match="--predict: --schedule zbv"):
        make_spec(model="mlp:layers=4,width=64", plan="pp=2", schedule="zbv", predict=str(chip))


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such chip file"),
    ("name: host\n", "compute_source"),
    ("- just a list\n", "expected a mapping"),
])
def test_bad_predict_file_exits_2_naming_the_option(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "host.yaml"
    if content is not None:
        path.write_text(content)
    r = runner.invoke(app, ["run", "--model", "mlp:layers=4,width=64", "--predict", str(path)])
    assert r.exit_code == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: --predict ") and str(path) in r.stderr and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "starting" not in r.stderr  # nothing was launched


@pytest.mark.slow
def test_measure_links_starts_two_ranks_and_leaves_none() -> None:
    pids: list[int] = []
    start = time.monotonic()
    links = measure_links(sizes=(4096, 1 << 20), reps=3, on_start=pids.extend)
    assert time.monotonic() - start < 60  # the deadline; the timing itself is not asserted
    assert links.p2p_s_per_byte >= 0 and links.allreduce_s_per_byte >= 0  # a loaded machine can flatten a slope
    assert links.p2p_alpha_s >= 0 and links.allreduce_alpha_s >= 0 and "2 gloo ranks" in links.source
    assert len(pids) == 2 and not any(process_alive(p) for p in pids)


@pytest.mark.slow
def test_calibration_times_every_stage_in_its_own_rank() -> None:
    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", micro_batches=4)
    measured = calibrate(spec, hand_chip())  # real stages timed in 2 processes; only the answer's shape is checked
    assert len(measured.forward) == len(measured.backward) == 2 and min(measured.forward + measured.backward) > 0
    assert "2 pipeline ranks computing at once" in measured.source


def test_runtime_overhead_lengthens_each_action_but_is_not_compute() -> None:
    sched = build("gpipe", 2, 4)
    plain = simulate_pipeline(sched, [1.0, 1.0], [2.0, 2.0])
    slow = simulate_pipeline(sched, [1.0, 1.0], [2.0, 2.0], overhead_s=0.5)
    assert slow.busy_s == plain.busy_s  # overhead is not compute
    assert slow.end_s == pytest.approx((4 + 2 - 1) * (1.5 + 2.5) - 0.5)  # GPipe, each action 0.5 longer, none after
