"""The capture cache: a cached capture is the same Workload, keys change with every option, user files and eager
captures are never cached, a corrupt entry is captured again, and a warm CLI run does not import torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xpusim
from xpusim.workload import cache
from xpusim.workload.model import Workload


@pytest.fixture
def cache_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XPUSIM_CAPTURE_CACHE", "1")
    monkeypatch.setenv("XPUSIM_CACHE", str(tmp_path))
    return tmp_path / "captures"


@pytest.mark.parametrize(("model", "kwargs"), [
    ("resnet18", {}),
    ("resnet18", {"mode": "training", "input_shape": (2, 3, 32, 32)}),
    ("gpt2", {"seq_len": 16}),
])
def test_round_trip_is_the_same_workload(model: str, kwargs: dict) -> None:
    wl = xpusim.analyze(model, **kwargs)
    back = Workload.from_dict(json.loads(wl.to_json()))
    assert back == wl
    assert back.totals() == wl.totals() and back.to_dict() == wl.to_dict()


def test_second_call_reads_the_cache(cache_on: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = cache.analyze_cached("resnet18", batch=2)
    files = list(cache_on.glob("*.json"))
    assert len(files) == 1
    import xpusim.workload.api as api

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("captured again")

    monkeypatch.setattr(api, "analyze", boom)
    assert cache.analyze_cached("resnet18", batch=2) == first
    with pytest.raises(AssertionError, match="captured again"):  # another batch is another key
        cache.analyze_cached("resnet18", batch=3)


def test_keys_and_what_is_never_cached(cache_on: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k = cache.cache_key("resnet18", {"batch": 1})
    assert k == cache.cache_key("resnet18", {"batch": 1})
    assert len({k, cache.cache_key("resnet18", {"batch": 2}), cache.cache_key("resnet34", {"batch": 1}),
                cache.cache_key("resnet18", {"batch": 1, "mode": "training"})}) == 4
    assert not cache.cacheable("my_model.py:build", {})
    assert not cache.cacheable("resnet18", {"device": "eager"})
    monkeypatch.setenv("XPUSIM_CAPTURE_CACHE", "0")
    assert not cache.cacheable("resnet18", {})


def test_corrupt_entry_is_captured_again(cache_on: Path) -> None:
    cache_on.mkdir(parents=True)
    (cache_on / f"{cache.cache_key('resnet18', {})}.json").write_text("{not json")
    wl = cache.analyze_cached("resnet18")
    assert wl.totals().macs == 1_814_073_344  # resnet18 at 224x224 (the hand count in test_npu)
    assert cache.load("resnet18", {}) == wl


def test_warm_cli_run_never_imports_torch(tmp_path: Path) -> None:
    env = {**os.environ, "XPUSIM_CACHE": str(tmp_path), "XPUSIM_CAPTURE_CACHE": "1"}
    probe = ("import atexit, sys; atexit.register(lambda: print('TORCH', 'torch' in sys.modules)); "
             "from xpusim.cli import main; sys.argv = sys.argv[1:]; main()")
    run = [sys.executable, "-c", probe, "xpusim", "npu", "resnet18", "--format", "json"]
    cold = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    warm = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert cold.returncode == 0 and warm.returncode == 0, cold.stderr + warm.stderr
    assert "TORCH True" in cold.stdout and "TORCH False" in warm.stdout
    assert cold.stdout == warm.stdout.replace("TORCH False", "TORCH True")


def test_llm_by_name_never_imports_torch() -> None:
    # the shipped LLM configs are read without torch: `xpusim llm` costs an analytic transformer
    probe = ("import atexit, sys; atexit.register(lambda: print('TORCH', 'torch' in sys.modules)); "
             "from xpusim.cli import main; sys.argv = sys.argv[1:]; main()")
    r = subprocess.run([sys.executable, "-c", probe, "xpusim", "llm", "llama2-7b", "--chip", "h100-sxm", "-f", "json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("TORCH False")
