"""xpusim.sweep: study files, safe constraints, dask execution (local cluster, a real scheduler with a worker
killed mid-sweep), resume, failing points, Pareto. Every expected value comes from a plain call of the API."""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import process_alive
from xpusim.api import calls
from xpusim.errors import UserError
from xpusim.sweep import load_study, parse_where, plot_pareto, sweep

TINY = '''
import torch
from torch import nn


def cnn():
    return (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.Flatten(),
                          nn.Linear(16 * 7 * 7, 10)), torch.empty(1, 3, 16, 16))
'''
NPU_OUT = ("cycles", "stall_cycles", "macs", "latency_s", "energy_j", "tops", "tops_per_w", "utilization")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.py"
    path.write_text(TINY)
    return f"{path}:cnn"


def npu_study(model: str, arrays: int = 4) -> dict[str, Any]:
    # 4 arrays x 3 dataflows x 3 SRAMs x 3 bandwidths x 2 batches = 216 points
    return {"study": "npu", "model": model, "array": ["4x4", "8x8", "16x16", "32x8"][:arrays],
            "dataflow": ["os", "ws", "is"], "sram_kb": ["1,1,1", "8,8,4", "64,64,32"],
            "dram_bytes_per_cycle": [1, 4, 16], "batch": [1, 2], "dtype": "int8"}


def expected_npu(study: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The serial loop over the API: (array, dataflow, sram, bw, batch) → its totals."""
    out = {}
    for array, df, sram, bw, batch in itertools.product(study["array"], study["dataflow"], study["sram_kb"],
                                                        study["dram_bytes_per_cycle"], study["batch"]):
        sizes = tuple(int(s) for s in sram.split(","))
        t = calls.npu(study["model"], array=array, dataflow=df, sram_kib=sizes, dram_bytes_per_cycle=bw,
                      dtype=study["dtype"], batch=batch).to_dict()["totals"]
        out[(array, df, sram, bw, batch)] = {**t, "cycles": t["total_cycles"], "latency_s": t["time_s"]}
    return out


def assert_rows_match(df: Any, expected: dict[tuple[Any, ...], dict[str, Any]]) -> None:
    assert len(df) == len(expected) and df["key"].is_unique and df["error"].isna().all()
    got = {}
    for r in df.to_dict("records"):
        got[(r["array"], r["dataflow"], r["sram_kb"], r["dram_bytes_per_cycle"], r["batch"])] = r
    assert set(got) == set(expected)
    for point, exp in expected.items():
        for col in NPU_OUT:
            assert got[point][col] == exp[col], (point, col)
        assert got[point]["throughput_per_s"] == pytest.approx(point[4] / exp["time_s"], rel=1e-12)


# ------------------------------------------------------------------------------------------------ dask: local
@pytest.mark.slow
def test_local_cluster_gives_the_rows_of_a_serial_api_loop(tiny: str, tmp_path: Path) -> None:
    study = npu_study(tiny)
    expected = expected_npu(study)
    assert len(expected) == 216
    seen: list[Any] = []
    df = sweep(study, workers=2, out=tmp_path / "out.parquet", progress=seen.append)
    assert_rows_match(df, expected)
    assert df.attrs["computed"] == 216 and df.attrs["reused"] == 0
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 216 and seen[-1].workers == 2
    assert [p.done for p in seen] == sorted(p.done for p in seen) and seen[-1].eta_s == 0
    on_disk = pq.read_table(tmp_path / "out.parquet")
    assert sorted(on_disk.column("key").to_pylist()) == sorted(df["key"])
    assert multiprocessing.active_children() == []  # the local cluster's workers are gone


# ---------------------------------------------------------------------------- dask: a real scheduler, a kill
def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _dask() -> list[str]:
    script = Path(sys.executable).parent / "dask"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dask"]


@pytest.fixture
def scheduler_and_workers(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    sched_file = tmp_path / "scheduler.json"
    procs = [_spawn([*_dask(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                     str(sched_file), "--no-dashboard"])]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline and procs[0].poll() is None, "the scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written in one go; let it settle
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            procs.append(_spawn([*_dask(), "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                 "--no-dashboard", "--no-nanny", "--host", "127.0.0.1"]))
        yield address, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait(timeout=30)
        assert not any(process_alive(p.pid) for p in procs)


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_costs_only_its_task(
        tiny: str, tmp_path: Path, scheduler_and_workers: tuple[str, list[subprocess.Popen[bytes]]]) -> None:
    from distributed import Client

    address, procs = scheduler_and_workers
    victim = procs[1]
    study = npu_study(tiny)
    expected = expected_npu(study)
    with Client(address, timeout=30) as watcher:
        watcher.wait_for_workers(2, timeout=60)
        killed_at: list[int] = []

        def kill_once(p: Any) -> None:
            if p.done > 0 and not killed_at:
                time.sleep(0.5)  # let finished results pile up on the victim: they are lost with it
                victim.send_signal(signal.SIGKILL)
                killed_at.append(p.done)

        df = sweep(study, scheduler=address, batch_size=6, out=tmp_path / "out.parquet", progress=kill_once)
        assert killed_at and killed_at[0] < 216  # killed mid-sweep
        victim.wait(timeout=30)
        assert_rows_match(df, expected)
        on_disk = pq.read_table(tmp_path / "out.parquet").column("key").to_pylist()
        assert len(on_disk) == len(set(on_disk)) == 216

        # a notebook's own client is used as it is, and left open
        small = {**npu_study(tiny, arrays=1), "sram_kb": "8,8,4", "dram_bytes_per_cycle": 4}
        rows = sweep(small, client=watcher)
        assert len(rows) == 6 and rows["error"].isna().all()
        assert watcher.status == "running"


# --------------------------------------------------------------------------------------------------- resume
class Interrupted(Exception):
    pass


def test_resume_computes_only_the_missing_points(tiny: str, tmp_path: Path) -> None:
    study = {**npu_study(tiny, arrays=2), "dram_bytes_per_cycle": 4}  # 2 x 3 x 3 x 2 = 36 points
    out = tmp_path / "out.parquet"

    def stop_after_12(p: Any) -> None:
        if p.done >= 12:
            raise Interrupted

    with pytest.raises(Interrupted):
        sweep(study, client=False, out=out, batch_size=3, chunk_rows=3, progress=stop_after_12)
    saved = pq.read_table(out).column("key").to_pylist()
    assert 12 <= len(saved) < 36 and len(set(saved)) == len(saved)

    df = sweep(study, client=False, out=out, resume=True)
    assert df.attrs["computed"] == 36 - len(saved) and df.attrs["reused"] == len(saved)
    assert len(df) == 36 and df["key"].is_unique

    # a partial output (rows lost with a crash): only those are run again
    table = pq.read_table(out)
    pq.write_table(table.slice(0, 25), out)
    again = sweep(study, client=False, out=out, resume=True)
    assert again.attrs["computed"] == 11 and again.attrs["reused"] == 25
    assert sorted(again["key"]) == sorted(df["key"])
    assert sweep(study, client=False, out=out, resume=True).attrs["computed"] == 0

    # resuming with more values runs just the new points
    wider = {**study, "batch": [1, 2, 3]}
    assert sweep(wider, client=False, out=out, resume=True).attrs["computed"] == 18


def test_an_existing_output_is_refused_without_resume_or_force(tiny: str, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"not yet")
    small = {**npu_study(tiny, arrays=1), "dataflow": "ws", "sram_kb": "8,8,4", "dram_bytes_per_cycle": 4}
    with pytest.raises(UserError, match=r"exists; resume it .* or overwrite it"):
        sweep(small, client=False, out=out)
    df = sweep(small, client=False, out=out, force=True)
    assert len(df) == 2 and pq.read_table(out).num_rows == 2
    with pytest.raises(UserError, match="suffix"):
        sweep(small, client=False, out=tmp_path / "out.csv")


# -------------------------------------------------------------------------------------------- failing points
def test_a_failing_point_is_a_row_with_its_error() -> None:
    study = {"study": "train", "model": "gpt-1.7b", "cluster": "dgx-a100", "gpus": 8, "batch": 64,
             "tp": [1, 2, 3], "pp": 1}
    df = sweep(study, client=False)
    assert df["tp"].tolist() == [1, 2, 3]
    for tp in (1, 2):
        step = calls.train("gpt-1.7b", cluster="dgx-a100", gpus=8, batch=64, tp=tp, pp=1).step
        row = df[df["tp"] == tp].iloc[0]
        assert pd.isna(row["error"])
        assert row["step_time_s"] == step.step_time_s and row["mfu"] == step.mfu
        assert row["memory_bytes"] == step.memory.total and bool(row["fits"]) == step.fits
        assert row["plan_tp"] == tp and row["plan"] == step.plan.label()
    with pytest.raises(UserError) as exc:
        calls.train("gpt-1.7b", cluster="dgx-a100", gpus=8, batch=64, tp=3, pp=1)
    bad = df[df["tp"] == 3].iloc[0]
    assert bad["error"] == str(exc.value) and math.isnan(bad["step_time_s"])
    assert df.attrs["errors"] == 1

    # the plan search per point; a model that fits no plan is an error row
    search = {"study": "train", "search": True, "model": ["gpt-1.7b", "gpt-175b"], "cluster": "dgx-a100",
              "gpus": 8, "batch": 64}
    found = sweep(search, client=False, pareto="step_time_s,memory_bytes")
    best = calls.search("gpt-1.7b", cluster="dgx-a100", gpus=8, batch=64).best.step
    ok, oom = found.iloc[0], found.iloc[1]
    assert ok["plan"] == best.plan.label() and ok["step_time_s"] == best.step_time_s and bool(ok["pareto"])
    assert "no plan for gpt-175b on 8 GPUs with batch 64 fits" in oom["error"] and not oom["pareto"]


def test_where_constraints_select_points() -> None:
    study = {"study": "train", "model": "gpt-1.7b", "gpus": [4, 8], "batch": 32, "tp": [1, 2, 4, 8],
             "pp": [1, 2, 4], "where": "gpus % (tp*pp) == 0 and tp * pp > 1"}
    st = load_study(study)
    by_hand = [(g, t, p) for g in (4, 8) for t in (1, 2, 4, 8) for p in (1, 2, 4) if g % (t * p) == 0 and t * p > 1]
    assert [(i["gpus"], i["tp"], i["pp"]) for i in st.iter_inputs()] == by_hand
    assert len(st.points()) == len(by_hand) == 13


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("study", "message"), [
    ({"study": "nope", "model": "x"}, "study 'nope'; expected 'study: KIND' with KIND one of roofline, llm, serve, "
                                      "npu, train, compress"),
    ({"model": "x"}, "no 'study' key"),
    ({"study": "npu", "model": "resnet18", "arrays": ["8x8"]}, "unknown key 'arrays' for a npu study. Did you mean "
                                                               "array"),
    ({"study": "npu", "model": "resnet18", "colour": 1}, "Allowed: model, array, dataflow, sram_kib"),
    ({"study": "npu", "model": "resnet18", "array": []}, "axis 'array' is empty"),
    ({"study": "npu", "model": "resnet18", "array": [[8, 8]]}, "axis 'array' holds [8, 8]"),
    ({"study": "npu", "model": "resnet18", "sram_kb": "1,1,1", "sram_kib": "1,1,1"}, "sram_kb or sram_kib"),
    ({"study": "roofline", "model": "resnet18"}, "a roofline study needs chip"),
    ({"study": "train", "model": "gpt2", "gpus": 8, "batch": 8, "search": True, "tp": 2}, "remove tp"),
    ({"study": "npu", "model": "resnet18", "batch": [1, 2], "where": "batch > 4"}, "leaves no points"),
    ({"study": "npu", "model": "resnet18", "where": "size > 4"}, "unknown name size"),
    ("study: npu\nmodel: [a, b\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("missing.yaml", "study file 'missing.yaml' does not exist"),
])
def test_bad_studies_are_user_errors(study: Any, message: str) -> None:
    with pytest.raises(UserError) as exc:
        sweep(study, client=False)
    assert message in str(exc.value)


def test_a_study_file_and_its_yaml_text(tmp_path: Path) -> None:
    text = "study: npu\nmodel: [resnet18, resnet50]\narray: [16x16, 32x32]\ndataflow: ws\nsram_kb: '8,8,4'\n"
    path = tmp_path / "study.yaml"
    path.write_text(text)
    for source in (path, str(path), text):
        st = load_study(source)
        assert st.kind == "npu" and st.grid_size == 4 and st.fixed == {"dataflow": "ws", "sram_kb": "8,8,4"}


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    study = {"study": "npu", "model": "resnet18"}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sweep(study, scheduler=f"tcp://127.0.0.1:{port}", connect_timeout_s=2)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "sweep hung on an unreachable scheduler"
    assert len(errors) == 1 and isinstance(errors[0], UserError)
    assert f"scheduler 'tcp://127.0.0.1:{port}': cannot connect within 2 s" in str(errors[0])


def test_bad_options_are_user_errors(tmp_path: Path) -> None:
    study = {"study": "npu", "model": "resnet18"}
    for kwargs, message in [({"workers": -1}, "workers -1"), ({"batch_size": 0}, "batch_size 0"),
                            ({"resume": True}, "resume needs out"),
                            ({"out": tmp_path / "o.parquet", "resume": True, "force": True}, "not both"),
                            ({"pareto": "latency_s"}, "name at least two"),
                            ({"pareto": "latency_s,model"}, "'model' is not a numeric column"),
                            ({"scheduler": str(tmp_path / "nope.json")}, "does not exist")]:
        with pytest.raises(UserError, match=message):
            sweep(study, client=False, **kwargs) if "scheduler" not in kwargs else sweep(study, **kwargs)


# ----------------------------------------------------------------------------------------------- where parser
@pytest.mark.parametrize(("expr", "values", "holds"), [
    ("gpus % (tp*pp) == 0", {"gpus": 8, "tp": 2, "pp": 2}, True),
    ("gpus % (tp*pp) == 0", {"gpus": 8, "tp": 3, "pp": 1}, False),
    ("batch <= 4 and dataflow != \"os\"", {"batch": 4, "dataflow": "ws"}, True),
    ("not (batch > 1) or dataflow in ('os', 'is')", {"batch": 2, "dataflow": "is"}, True),
    ("2 ** tp == 8 and -tp < 0 and tp // 2 == 1 and tp / 2 == 1.5", {"tp": 3}, True),
    ("1 < tp <= 4", {"tp": 5}, False),
    ("flash == true and mode != null and not false", {"flash": True, "mode": "x"}, True),
])
def test_where_allows_arithmetic_comparisons_and_logic(expr: str, values: dict[str, Any], holds: bool) -> None:
    assert parse_where(expr, set(values)).holds(values) is holds


@pytest.mark.parametrize(("expr", "message"), [
    ("__import__('os').system('true')", "call is not allowed"),
    ("tp.__class__", "attribute is not allowed"),
    ("abs(tp)", "call is not allowed"),
    ("tp[0]", "subscript is not allowed"),
    ("(lambda: 1)()", "is not allowed"),
    ("[x for x in tp]", "is not allowed"),
    ("__builtins__", "name '__builtins__' is not allowed"),
    ("tp is 1", "is is not allowed"),
    ("tp = 1", "not an expression"),
    ("tp +", "not an expression"),
    ("gpu > 1", "unknown name gpu"),
    ("", "expected an expression"),
])
def test_where_refuses_everything_else(expr: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_where(expr, {"tp", "x"})


def test_where_evaluation_errors_are_user_errors() -> None:
    for expr, values, message in [("10 ** 10 ** 10 > tp", {"tp": 1}, "too large"),
                                  ("tp * 'a' == 'aa'", {"tp": 2}, "arithmetic needs numbers"),
                                  ("1 / tp > 0", {"tp": 0}, "ZeroDivisionError"),
                                  ("tp < 'a'", {"tp": 1}, "TypeError")]:
        with pytest.raises(UserError, match=message):
            parse_where(expr, set(values)).holds(values)


# --------------------------------------------------------------------------------------------------- pareto
def test_pareto_marks_the_non_dominated_points_and_plots_them(tiny: str, tmp_path: Path) -> None:
    study = {**npu_study(tiny, arrays=3), "batch": 1, "dram_bytes_per_cycle": 4}
    df = sweep(study, client=False, pareto="latency_s,energy_j", out=tmp_path / "o.parquet")
    pts = list(zip(df["latency_s"], df["energy_j"], strict=True))
    by_hand = [not any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in pts) for a in pts]
    assert df["pareto"].tolist() == by_hand and 0 < sum(by_hand) < len(df)
    assert pq.read_table(tmp_path / "o.parquet").column("pareto").to_pylist() == by_hand
    # max: objectives (tops is maximized by default)
    both = sweep(study, client=False, pareto=["latency_s", "tops"])
    pts2 = list(zip(both["latency_s"], both["tops"], strict=True))
    hand2 = [not any(b[0] <= a[0] and b[1] >= a[1] and b != a for b in pts2) for a in pts2]
    assert both["pareto"].tolist() == hand2
    for suffix in (".png", ".svg"):
        path = plot_pareto(df, "latency_s,energy_j", tmp_path / f"front{suffix}")
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<?xml" in head or b"<svg" in head
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left behind


def test_output_columns_keep_their_types(tiny: str) -> None:
    study = {**npu_study(tiny, arrays=1), "dataflow": ["ws", "bogus"], "sram_kb": "8,8,4",
             "dram_bytes_per_cycle": 4, "batch": 1}
    df = sweep(study, client=False)
    good, bad = df.iloc[0], df.iloc[1]
    assert "dataflow" in bad["error"] and "bogus" in bad["error"]
    assert str(df["cycles"].dtype) == "Int64" and str(df["latency_s"].dtype) == "float64"
    t = calls.npu(tiny, array="4x4", dataflow="ws", sram_kib=(8, 8, 4), dram_bytes_per_cycle=4).run
    assert good["cycles"] == t.total_cycles and good["energy_j"] == t.energy_j
    assert pa.types.is_integer(pa.Table.from_pandas(df).schema.field("cycles").type)


def test_roofline_and_llm_points_are_the_api_results(tiny: str) -> None:
    roof = sweep({"study": "roofline", "model": tiny, "chip": ["t4", "a100-sxm-80gb"], "batch": [1, 8],
                  "price_per_hour": 2.0}, client=False)
    for r in roof.to_dict("records"):
        d = calls.roofline(tiny, chip=r["chip"], batch=r["batch"], price_per_hour=2.0).to_dict()
        t = d["totals"]
        assert (r["dtype"], r["latency_s"], r["energy_j"], r["flops"]) == (d["dtype"], t["latency_s"], t["energy_j"],
                                                                         t["flops"])
        assert r["cost_usd_per_million"] == t["cost_usd_per_million"]
        assert r["compute_bound_share"] == t["time_share_by_bound"]["compute"]
    llm = sweep({"study": "llm", "model": ["gpt2", "llama2-70b"], "chip": "t4", "batch": [1, 4], "prompt_len": 256,
                 "gen_len": 64}, client=False, pareto="latency_s,max:tokens_per_s")
    for r in llm.to_dict("records"):
        e = calls.llm(r["model"], chip="t4", batch=r["batch"], prompt_len=256, gen_len=64).estimate
        assert (r["ttft_s"], r["tpot_s"], r["tokens_per_s"]) == (e.time_to_first_token_s, e.time_per_output_token_s,
                                                                 e.tokens_per_s)
        assert (r["memory_bytes"], bool(r["fits"])) == (e.memory_bytes, e.fits)
        assert r["latency_s"] == e.prefill.time_s + e.decode.time_s
    assert llm["fits"].tolist() == [True, True, False, False]  # 70B in bf16 is 140 GB; a T4 has 16 GB
    assert not llm["pareto"][~llm["fits"]].any() and llm["pareto"].any()  # a design that does not fit is no option


def test_serve_points_are_the_api_results() -> None:
    from xpusim.api.serve import serve

    df = sweep({"study": "serve", "model": "llama2-7b", "chip": ["a100-sxm-80gb", "h100-sxm"], "rate": 2.0,
                "requests": 30, "prompt_len": "200", "gen_len": "20"}, client=False)
    for r in df.to_dict("records"):
        d = serve("llama2-7b", chip=r["chip"], rate=2.0, requests=30, prompt_len="200", gen_len="20").to_dict()
        assert (r["output_tokens_per_s"], r["ttft_p99_s"], r["tpot_p50_s"]) == (
            d["output_tokens_per_s"], d["ttft_s"]["p99"], d["tpot_s"]["p50"])
        assert r["gpus"] == 1 and r["preemptions"] == 0


def test_the_studies_in_docs_sweep_md_load() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "sweep.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    assert len(blocks) >= 4
    for block in blocks:
        assert load_study(block).points()


def test_cli_sweep_writes_parquet_and_plot_and_refuses_to_overwrite(tiny: str, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from xpusim.cli import app

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({**npu_study(tiny, arrays=2), "sram_kb": "8,8,4", "dram_bytes_per_cycle": 4}))
    out, png = tmp_path / "r.parquet", tmp_path / "front.png"
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--workers", "0", "--pareto", "latency_s,energy_j",
                            "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "12 points: 12 computed" in r.stderr  # 2 arrays x 3 dataflows x 2 batches
    df = pd.read_parquet(out)
    assert len(df) == 12 and df["pareto"].any() and png.stat().st_size > 1000
    again = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--workers", "0"])
    assert again.exit_code == 2 and "--resume" in again.stderr and "--force" in again.stderr
    no_objectives = runner.invoke(app, ["sweep", str(study), "--workers", "0", "--plot", str(tmp_path / "p.png")])
    assert no_objectives.exit_code == 2 and "plot needs objectives" in no_objectives.stderr
    resumed = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--workers", "0", "--resume"])
    assert resumed.exit_code == 0 and "0 computed" in resumed.stderr and "12 reused" in resumed.stderr
