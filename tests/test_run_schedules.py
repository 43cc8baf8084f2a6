"""Real pipeline runs execute xpusim's own schedules: every rank runs, in every step, exactly the action list
`xpusim.parallel.schedules` generates for the simulator, and the gradients still equal one process (the tied
embedding's included). ``python -m xpusim.run`` prints the same summary as ``xpusim run``. Nothing here asserts
a timing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import process_alive
from xpusim.parallel.real.launch import free_port, launch
from xpusim.parallel.real.spec import make_spec
from xpusim.parallel.schedules import build

GPT = "gpt:h=64,l=4,a=4,s=16,V=1024"


@pytest.mark.slow
@pytest.mark.parametrize(("schedule", "pp", "m", "vs", "model"), [
    ("gpipe", 2, 8, 1, GPT),
    ("1f1b", 2, 8, 1, GPT),
    ("interleaved", 2, 8, 2, GPT),
    ("zb-h1", 2, 8, 1, GPT),
    ("1f1b", 2, 4, 1, "gpt:h=64,l=2,a=8,s=16,V=1000,ffn=96,kv=2"),  # grouped-query attention, ffn != 4h
    ("zb-h1", 4, 4, 1, GPT),  # the tied embedding's gradient summed over ranks 0 and 3 of 4
    ("interleaved", 4, 4, 2, "gpt:h=32,l=8,a=2,s=8,V=256"),
], ids=["gpipe", "1f1b", "interleaved", "zb-h1", "1f1b-gqa", "zb-h1-p4", "interleaved-p4"])
def test_pipeline_runs_xpusims_schedule(schedule: str, pp: int, m: int, vs: int, model: str) -> None:
    pids: list[int] = []
    spec = make_spec(model=model, plan=f"pp={pp}", schedule=schedule, micro_batches=m, micro_batch=1,
                     virtual_stages=vs, steps=2, check_grads=True, timeout_s=120)
    report = launch(spec, on_start=pids.extend)
    expected = build(schedule, pp, m, vs).compact()
    assert report["actions"] == [[line] * 2 for line in expected]  # every rank, every step
    check = report["check"]
    assert check["loss_abs_error"] < 1e-5
    assert check["max_grad_rel_error"] < 1e-4, check["worst_param"]
    assert {"embed.weight", "head.weight"} <= set(check["params_compared"])
    assert not any(process_alive(p) for p in pids)


@pytest.mark.slow
def test_zbv_records_what_torch_ran() -> None:
    spec = make_spec(model=GPT, plan="pp=2", schedule="zbv", micro_batches=4, micro_batch=1, steps=2,
                     check_grads=True, timeout_s=120, instrument=False)
    report = launch(spec)
    assert report["check"]["max_grad_rel_error"] < 1e-4
    for rank, steps in enumerate(report["actions"]):
        assert steps[0] == steps[1]  # the same order every step
        acts = steps[0].split()
        stages = {rank, 3 - rank}  # ZBV's V: rank 0 holds stages 0 and 3, rank 1 stages 1 and 2
        assert sorted(acts) == sorted(f"{s}{k}{j}" for s in stages for k in "FBW" for j in range(4))


def _torchrun() -> str | None:
    return shutil.which("torchrun", path=str(Path(sys.executable).parent))


@pytest.mark.slow
@pytest.mark.skipif(_torchrun() is None, reason="no torchrun")
@pytest.mark.parametrize("fmt", ["table", "json"])
def test_module_entry_point_prints_the_cli_summary(fmt: str, tmp_path: Path) -> None:
    torchrun = _torchrun()
    assert torchrun is not None
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    trace = tmp_path / "t.json"
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "xpusim.run",
                           "--model", "mlp:layers=2,width=16", "--micro-batches", "4", "--steps", "3",
                           "--check-grads", "--compare", "--trace", str(trace), "--format", fmt],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(trace.read_text())["traceEvents"]
    if fmt == "json":
        result = json.loads(proc.stdout)
        assert set(result) == {"plan", "model", "ranks", "backend", "measured", "trace", "simulated", "check"}
        assert result["plan"]["micro_batch"] == 16 and result["plan"]["micro_batches"] == 4
        assert result["check"]["max_grad_rel_error"] < 1e-4 and result["trace"] == str(trace)
        assert result["simulated"]["order"] == build("1f1b", 2, 4).compact()
    else:
        out = proc.stdout
        assert "mlp:layers=2,width=16, 2 ranks (gloo): dp=1 tp=1 pp=2, 4 micro-batches of 16, schedule 1f1b" in out
        assert "bubble fraction" in out and "simulated" in out and "vs one process" in out


def test_module_entry_point_bad_input_exit_2() -> None:
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    proc = subprocess.run([sys.executable, "-m", "xpusim.run", "--plan", "dp=2", "--compare"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "--compare simulates the pipeline" in proc.stderr
