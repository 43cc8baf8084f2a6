"""3-D plans in one real run: a (pp, dp, tp) device mesh of 4 or 8 gloo ranks, Megatron-LM's rank order, tensor
parallelism inside each pipeline stage, data-parallel gradients all-reduced after the pipeline's flush. What is
deterministic is checked: loss and every gradient equal one process, every pipeline runs xpusim's schedule, and
--compare simulates one pipeline of the grid."""

import pytest

from xpusim.parallel.real.compare import compare, first_pipeline
from xpusim.parallel.real.launch import launch
from xpusim.parallel.real.spec import make_spec
from xpusim.parallel.schedules import build

GPT = "gpt:h=64,l=4,a=4,s=16,V=1024"


def _coords(plan: dict[str, int]) -> list[dict[str, int]]:
    """Megatron-LM's order by hand: tp fastest, then dp, then pp."""
    return [{"pp": p, "dp": d, "tp": t}
            for p in range(plan["pp"]) for d in range(plan["dp"]) for t in range(plan["tp"])]


@pytest.mark.slow
@pytest.mark.parametrize(("plan", "schedule"), [
    ("dp=2,pp=2", "1f1b"), ("tp=2,pp=2", "1f1b"), ("dp=2,tp=2", "1f1b"), ("dp=2,tp=2,pp=2", "1f1b"),
    ("dp=2,pp=2", "zbv"),
])
def test_gradients_equal_single_process(plan: str, schedule: str) -> None:
    spec = make_spec(model=GPT, plan=plan, schedule=schedule, micro_batches=4, micro_batch=2, steps=1,
                     check_grads=True, timeout_s=120)
    report = launch(spec)
    check = report["check"]
    assert check["loss_abs_error"] < 1e-5
    assert check["max_grad_rel_error"] < 1e-4, check["worst_param"]
    assert "head.weight" in check["params_compared"] and "layers.3.fc2.weight" in check["params_compared"]
    degrees = {"dp": spec.plan.dp, "tp": spec.plan.tp, "pp": spec.plan.pp}
    assert report["ranks"] == degrees["dp"] * degrees["tp"] * degrees["pp"]
    assert report["coords"] == _coords(degrees)
    if spec.plan.pp > 1 and schedule != "zbv":  # every pipeline of the grid ran xpusim's order
        lines = build(schedule, spec.plan.pp, 4).compact()
        assert report["actions"] == [[lines[c["pp"]]] for c in report["coords"]]


@pytest.mark.slow
def test_compare_simulates_one_pipeline_of_the_grid() -> None:
    spec = make_spec(model="mlp:layers=4,width=64", plan="dp=2,pp=2", micro_batches=4, steps=3, timeout_s=60)
    report = launch(spec)
    one = first_pipeline(report)
    assert one["ranks"] == 2 and [r["rank"] for r in one["events"]] == [0, 1]
    sim = compare(spec, report)
    assert sim["order"] == build("1f1b", 2, 4).compact()
    assert sim["xpusim_schedule"]["step_time_s"] == pytest.approx(sim["step_time_s"])
    # the data-parallel all-reduce ran once per step on every rank
    steps_with_dp = {ev[3] for r in report["events"] for ev in r["events"] if ev[1] == "dp"}
    assert steps_with_dp == {0, 1, 2}


def test_first_pipeline_renumbers_by_pipeline_coordinate() -> None:
    coords = _coords({"pp": 2, "dp": 2, "tp": 1})  # ranks 0, 1: stage 0; ranks 2, 3: stage 1
    report = {"ranks": 4, "coords": coords, "events": [{"rank": r, "events": [[f"r{r}", "F", 0, 0, 0.0, 1.0]]}
                                                       for r in range(4)]}
    one = first_pipeline(report)
    assert [(r["rank"], r["events"][0][0]) for r in one["events"]] == [(0, "r0"), (1, "r2")]


@pytest.mark.parametrize(("plan", "message"), [
    ("dp=2,pp=2", "FSDP2 on data-parallel-only plans"),
])
def test_fsdp_with_pipeline_is_refused(plan: str, message: str) -> None:
    from xpusim.parallel.real.spec import RunSpecError

    with pytest.raises(RunSpecError, match=message):
        make_spec(model=GPT, plan=plan, zero=3)
