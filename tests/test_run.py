"""Real runs on torch.distributed (gloo, one process per rank): gradients equal one process, measured bubble
near the simulator's given the measured times, faults end the run with no process left behind."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import process_alive
from xpusim.cli import app
from xpusim.parallel.events import run_schedule
from xpusim.parallel.real.compare import compare
from xpusim.parallel.real.launch import RunError, launch
from xpusim.parallel.real.spec import RunSpecError, make_spec
from xpusim.parallel.schedules import build

runner = CliRunner()
GPT = "gpt:h=64,l=4,a=4,s=16,V=1024"  # a small vocabulary: the default 51200 only makes the tests slower


@pytest.mark.slow
@pytest.mark.parametrize(("plan", "schedule", "extra"), [
    ("dp=2", "1f1b", {}), ("dp=2", "1f1b", {"zero": 3}), ("dp=2", "1f1b", {"zero": 2}), ("tp=2", "1f1b", {}),
    ("pp=2", "gpipe", {}), ("pp=2", "1f1b", {}), ("pp=2", "interleaved", {"virtual_stages": 2}),
    ("pp=2", "zb-h1", {}), ("pp=2", "zbv", {}),
], ids=["ddp", "fsdp2-zero3", "fsdp2-zero2", "tp", "gpipe", "1f1b", "interleaved", "zb-h1", "zbv"])
def test_gradients_equal_single_process(plan: str, schedule: str, extra: dict[str, int]) -> None:
    spec = make_spec(model=GPT, plan=plan, schedule=schedule, micro_batches=4, micro_batch=2, steps=1,
                     check_grads=True, timeout_s=60, **extra)  # type: ignore[arg-type]
    report = launch(spec)
    check = report["check"]
    assert check["loss_abs_error"] < 1e-5
    assert check["max_grad_rel_error"] < 1e-4, check["worst_param"]
    assert "head.weight" in check["params_compared"]  # the output head tied to embed.weight is checked too
    if schedule != "zbv" and plan.startswith("pp"):  # the run executed xpusim's own order, action by action
        assert report["actions"] == [[line] for line in build(schedule, 2, 4, spec.plan.vp).compact()]


@pytest.mark.slow
@pytest.mark.parametrize(("schedule", "m"), [("gpipe", 4), ("1f1b", 8)])
def test_compare_simulates_the_order_the_ranks_ran(schedule: str, m: int) -> None:
    # What is deterministic about --compare: the simulator replays exactly the order each rank executed, which is
    # xpusim's own schedule, so on the same measured action times both give the same step and bubble. How close
    # the simulated timing comes to the measured one depends on the machine's load: benchmarks/bench_run.py
    # measures that spread (benchmarks/RESULTS.md), a test does not.
    spec = make_spec(model="mlp:layers=8,width=1024", plan="pp=2", schedule=schedule, micro_batches=m,
                     micro_batch=16, steps=3, timeout_s=60)
    report = launch(spec)
    sim = compare(spec, report)
    assert sim["order"] == build(schedule, 2, m).compact()
    assert sim["xpusim_schedule"]["bubble_fraction"] == pytest.approx(sim["bubble_fraction"])
    assert sim["xpusim_schedule"]["step_time_s"] == pytest.approx(sim["step_time_s"])
    assert 0.0 < sim["bubble_fraction"] < 1.0 and sim["step_time_s"] > sim["optimizer_s"] > 0.0


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["raise:1", "hang:1"])
def test_fault_stops_every_rank(fault: str) -> None:
    pids: list[int] = []
    spec = make_spec(model="mlp:layers=4,width=64", plan="pp=2", micro_batches=2, steps=3, timeout_s=8, fault=fault)
    start = time.monotonic()
    with pytest.raises(RunError) as info:
        launch(spec, on_start=pids.extend)
    assert time.monotonic() - start < 8 + 40  # the timeout plus start-up, not forever
    msg = str(info.value)
    if fault.startswith("raise"):
        assert "rank 1 failed" in msg and "RuntimeError: injected fault on rank 1 in step 2" in msg
    else:
        assert "Timed out" in msg and "rank 1 never reached the collective: hung" in msg
    assert len(pids) == 2 and not any(process_alive(p) for p in pids)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "xpusim.run", "--plan", "dp=2",
                           "--model", GPT, "--steps", "2", "--check-grads", "--result", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["ranks"] == 2 and report["check"]["max_grad_rel_error"] < 1e-4


def test_compare_recovers_the_simulators_own_timeline() -> None:
    # A record made by the event simulator itself (1F1B, p = 2, m = 4, F = 1, B = 2, transfers 0.1): compare()
    # must find the transfer time and give back the same bubble.
    sched = build("1f1b", 2, 4)
    events = run_schedule(sched, lambda a: 1.0 if a.kind == "F" else 2.0, lambda a: 0.1)
    end = max(e.end_s for e in events)
    ranks = []
    for r in range(2):
        evs = [[e.name, e.kind, int(e.name[0]), int(e.name[2:]), e.start_s, e.end_s] for e in events if e.rank == r]
        evs.append(["optimizer", "opt", -1, 0, end, end + 0.5])
        evs.append(["step 0", "step", -1, 0, 0.0, end + 0.5])
        ranks.append({"rank": r, "events": evs})
    report = {"ranks": 2, "events": ranks}
    spec = make_spec(model="mlp:layers=2,width=8", plan="pp=2", micro_batches=4, steps=1)
    sim = compare(spec, report)
    assert sim["transfer_s"] == pytest.approx(0.1)
    assert sim["overhead_s_per_action"] == pytest.approx(0.0, abs=1e-12)
    busy = 4 * 3.0
    assert sim["bubble_fraction"] == pytest.approx((end - busy) / busy)
    assert sim["step_time_s"] == pytest.approx(end + 0.5)


@pytest.mark.parametrize(("args", "message"), [
    (["--plan", "pp=2,dp=2", "--zero", "3"], "FSDP2 on data-parallel-only plans"),
    (["--plan", "pp=2,qp=2"], "qp"),
    (["--plan", "tp=2"], "use --model gpt"),
    (["--plan", "dp=2", "--compare"], "--compare simulates the pipeline"),
    (["--schedule", "dualpipe"], "--schedule 'dualpipe'"),
    (["--zero", "3"], "needs --plan dp=N"),
    (["--model", "mlp:layers=3,width=8"], "do not split into pp*v = 2 stages"),
    (["--model", "cnn:layers=3"], "expected mlp:layers"),
    (["--plan", "pp=2", "--schedule", "interleaved", "--micro-batches", "3"], "multiple of pp=2"),
])
def test_cli_bad_input_exit_2(args: list[str], message: str) -> None:
    r = runner.invoke(app, ["run", *args])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_spec_round_trips_through_argv() -> None:
    from xpusim.parallel.real.spec import argument_parser, spec_from_args

    spec = make_spec(model=GPT, plan="pp=2", schedule="interleaved", virtual_stages=2, micro_batches=4, steps=3,
                     check_grads=True)
    assert spec_from_args(argument_parser().parse_args(spec.to_argv())) == spec
    with pytest.raises(RunSpecError, match="raise:RANK"):
        make_spec(model=GPT, plan="pp=2", fault="explode")
