"""One meaning of a model spec and one set of defaults for real runs (no processes started here): the real GPT
has exactly the parameters the simulator counts, split over pipeline stages or not; ``xpusim run``, its launcher
and ``python -m xpusim.run`` build the same spec from the same options; and the result both render."""

import pytest
import torch

from xpusim.parallel.real.compare import run_result
from xpusim.parallel.real.models import Stage, build_stage, count_params
from xpusim.parallel.real.pipeline import planned, stages_of, torch_order
from xpusim.parallel.real.spec import ModelSpec, RunSpecError, argument_parser, make_spec, spec_from_args
from xpusim.parallel.real.worker import stage_ids
from xpusim.parallel.schedules import build
from xpusim.parallel.spec import parse_model
from xpusim.workload.transformer import parse_gpt

torch.set_num_threads(1)

SPECS = ["gpt:h=64,l=4,a=4,s=16,V=1024", "gpt:h=64,l=4,a=4,s=16", "gpt:h=48,l=4,a=6,s=32,V=500,ffn=100",
         "gpt:h=64,l=4,a=8,s=16,V=1000,ffn=96,kv=2", "gpt:h=32,l=8,a=2,s=8,V=64,kv=1"]


@pytest.mark.parametrize("text", SPECS)
def test_real_gpt_has_the_simulators_parameter_count(text: str) -> None:
    expected = parse_gpt(text).params
    assert parse_model(text).config.params == expected  # what `xpusim parallel` simulates
    spec = ModelSpec.parse(text)
    assert spec.config() == parse_gpt(spec.text()) and spec.config().params == expected
    whole = build_stage(spec, 0, 0, 1)
    assert sum(q.numel() for q in whole.parameters()) == expected
    assert whole.head is not None and whole.embed is not None and whole.head.weight is whole.embed.weight  # tied
    for n_stages in (2, 4):
        stages = [build_stage(spec, 0, s, n_stages) for s in range(n_stages)]
        assert count_params(stages) == expected  # the last stage's copy of the embedding counted once
        copy = stages[-1].tied_copy
        assert copy is not None and torch.equal(copy, stages[0].embed.weight)  # type: ignore[union-attr]
        assert sum(q.numel() for st in stages for q in st.parameters()) == expected + copy.numel()


def test_mlp_spec_unchanged() -> None:
    spec = ModelSpec.parse("mlp:layers=4,width=32")
    assert (spec.kind, spec.layers, spec.width, spec.text()) == ("mlp", 4, 32, "mlp:layers=4,width=32")
    assert sum(q.numel() for q in build_stage(spec, 0, 0, 1).parameters()) == 4 * (32 * 32 + 32)
    assert count_params([build_stage(spec, 0, s, 2) for s in range(2)]) == 4 * (32 * 32 + 32)


@pytest.mark.parametrize(("text", "message"), [
    ("gpt:h=64,l=4,a=4", "missing s"),
    ("gpt:h=64,l=4,a=5,s=16", "not a multiple of a=5"),
    ("gpt:h=64,l=4,a=4,s=16,kv=3", "not a multiple of kv=3"),
    ("gpt:h=64,l=4,a=4,s=16,x=1", "'x=1' is not KEY=VALUE"),
    ("gpt:h=64,l=4,a=4,s=16,V=big", "V='big' is not an integer"),
    ("cnn:layers=3", "expected mlp:layers"),
])
def test_bad_gpt_spec_names_the_option(text: str, message: str) -> None:
    with pytest.raises(RunSpecError, match="--model") as info:
        make_spec(model=text, plan="pp=2")
    assert message in str(info.value)


def test_default_vocabulary_is_the_simulators() -> None:
    assert ModelSpec.parse("gpt:h=64,l=4,a=4,s=16").vocab == 51200 == parse_gpt("gpt:h=64,l=4,a=4,s=16").vocab


def test_tensor_parallel_needs_divisible_kv_heads() -> None:
    with pytest.raises(RunSpecError, match="kv=1"):
        make_spec(model="gpt:h=64,l=4,a=4,s=16,kv=1", plan="tp=2")


def test_defaults_are_the_clis() -> None:
    mlp = make_spec()
    assert (mlp.model.text(), mlp.plan.pp, mlp.plan.micro_batches, mlp.plan.micro_batch) == \
        ("mlp:layers=8,width=1024", 2, 8, 16)
    gpt = make_spec(model="gpt:h=64,l=4,a=4,s=16")
    assert (gpt.plan.micro_batches, gpt.plan.micro_batch) == (8, 1)
    # python -m xpusim.run (torchrun) with no options builds the same specs
    assert spec_from_args(argument_parser().parse_args([])) == mlp
    assert spec_from_args(argument_parser().parse_args(["--model", "gpt:h=64,l=4,a=4,s=16"])) == gpt


def test_gpt_spec_round_trips_through_argv() -> None:
    spec = make_spec(model="gpt:h=64,l=4,a=8,s=16,V=1000,ffn=96,kv=2", plan="pp=2", schedule="zb-h1")
    assert spec.model.text() == "gpt:h=64,l=4,a=8,s=16,V=1000,ffn=96,kv=2"
    assert spec_from_args(argument_parser().parse_args(spec.to_argv())) == spec


def test_run_result_has_the_keys_the_cli_renders() -> None:
    spec = make_spec(model="mlp:layers=2,width=8", plan="pp=2", micro_batches=4)
    report = {"ranks": 2, "backend": "gloo", "measured": {"step_time_s": 1.0}, "check": {"loss": 1.0}}
    r = run_result(spec, report)
    assert set(r) == {"plan", "model", "ranks", "backend", "measured", "trace", "check"}
    assert r["plan"]["schedule"] == "1f1b" and r["plan"]["micro_batches"] == 4 and r["trace"] is None
    assert run_result(spec, report, simulated={"x": 1}, trace="t.json")["simulated"] == {"x": 1}


@pytest.mark.parametrize(("schedule", "p", "m", "v"), [
    ("gpipe", 2, 4, 1), ("1f1b", 4, 8, 1), ("interleaved", 2, 4, 2), ("interleaved", 4, 8, 2), ("zb-h1", 4, 6, 1),
])
def test_torch_order_is_xpusims(schedule: str, p: int, m: int, v: int) -> None:
    sched = planned(schedule, p, m, v)
    assert sched is not None and sched == build(schedule, p, m, v)
    order = torch_order(sched)
    back = [" ".join(str(a) for a in order[r]) for r in range(p)]
    # torch writes the split backward's input gradient as I; xpusim calls it B
    assert back == [line.replace("B", "I") if sched.split_backward else line for line in sched.compact()]
    for r in range(p):
        assert stages_of(sched, r) == stage_ids(schedule, r, p, v)  # Megatron's looping placement


def test_zbv_runs_torchs_own_order() -> None:
    assert planned("zbv", 2, 4, 2) is None
    assert stage_ids("zbv", 0, 2, 2) == [0, 3] and stage_ids("zbv", 1, 2, 2) == [1, 2]


def test_stage_parts() -> None:
    spec = ModelSpec.parse(SPECS[0])
    first, last = build_stage(spec, 0, 0, 2), build_stage(spec, 0, 1, 2)
    assert isinstance(first, Stage) and first.head is None and first.tied_copy is None
    assert last.embed is None and last.tied_copy is not None
    assert [n for n, _ in last.named_parameters()][-1] == "head.weight"


@pytest.mark.parametrize(("schedule", "v"), [("1f1b", 1), ("interleaved", 2), ("zb-h1", 1)])
def test_compare_on_a_run_of_xpusims_order_matches_xpusims_schedule(schedule: str, v: int) -> None:
    # A record made by the event simulator on xpusim's own order (what the ranks now execute): the "as run" and
    # "xpusim's own schedule" simulations are one order, so they agree (zb-h1's split backward included).
    from xpusim.parallel.events import run_schedule
    from xpusim.parallel.real.compare import compare

    sched = build(schedule, 2, 4, v)
    cost = {"F": 1.0, "B": 2.0 if not sched.split_backward else 1.0, "W": 1.0}
    events = run_schedule(sched, lambda a: cost[a.kind], lambda a: 0.1)
    end = max(e.end_s for e in events)
    ranks = []
    for r in range(2):
        evs: list[list[object]] = [[str(a), a.kind, a.stage, a.mb, e.start_s, e.end_s]
                                   for e in events if e.rank == r for a in [_action(e.name)]]
        evs += [["optimizer", "opt", -1, 0, end, end + 0.5], ["step 0", "step", -1, 0, 0.0, end + 0.5]]
        ranks.append({"rank": r, "events": evs})
    spec = make_spec(model="mlp:layers=4,width=8", plan="pp=2", schedule=schedule, micro_batches=4,
                     virtual_stages=v)
    sim = compare(spec, {"ranks": 2, "events": ranks})
    assert sim["order"] == sched.compact()
    assert sim["xpusim_schedule"]["step_time_s"] == pytest.approx(sim["step_time_s"])
    assert sim["xpusim_schedule"]["bubble_fraction"] == pytest.approx(sim["bubble_fraction"])


def _action(name: str):  # type: ignore[no-untyped-def]
    from xpusim.parallel.schedules import Action

    return Action.parse(name)
