"""The Python API: each call's to_dict() is exactly what the CLI prints with --format json for the same arguments;
objects are accepted where names are; bad input raises xpusim.UserError naming the field; the layers import only
downwards; the same gpt: spec is the same model in `parallel` and `run`."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import xpusim
from xpusim.cli import app

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src" / "xpusim"


def cli_json(*args: str) -> object:
    r = runner.invoke(app, [*args, "--format", "json"])
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def without(d: object, keys: set[str]) -> object:
    """``d`` with measured wall times removed (they differ from one run to the next)."""
    if isinstance(d, dict):
        return {k: without(v, keys) for k, v in d.items() if k not in keys}
    if isinstance(d, list):
        return [without(v, keys) for v in d]
    return d


CASES = {
    "analyze": (lambda: xpusim.analyze("resnet18", batch=2),
                ["analyze", "resnet18", "--batch", "2"]),
    "roofline": (lambda: xpusim.roofline("resnet18", chip="a100-sxm-80gb", dtype="fp16", batch=8),
                 ["roofline", "resnet18", "--chip", "a100-sxm-80gb", "--dtype", "fp16", "--batch", "8"]),
    "roofline-int8": (lambda: xpusim.roofline("mobilenet_v2", chip="t4", dtype="int8", price_per_hour=0.35),
                      ["roofline", "mobilenet_v2", "--chip", "t4", "--dtype", "int8", "--price-per-hour", "0.35"]),
    "llm": (lambda: xpusim.llm("llama2-7b", chip="h100-sxm", batch=16, prompt_len=1024, gen_len=64, w_bits=4),
            ["llm", "llama2-7b", "--chip", "h100-sxm", "--batch", "16", "--prompt-len", "1024", "--gen-len", "64",
             "--w-bits", "4"]),
    "npu": (lambda: xpusim.npu("resnet18", array=(32, 32), dataflow="auto"),
            ["npu", "resnet18", "--array", "32x32", "--dataflow", "auto"]),
    "train": (lambda: xpusim.train("gpt-175b", cluster="dgx-a100", gpus=1536, tp=8, pp=8, batch=2304,
                                   schedule="interleaved:2", recompute="full"),
              ["parallel", "gpt-175b", "--cluster", "dgx-a100", "--gpus", "1536", "--tp", "8", "--pp", "8", "--batch",
               "2304", "--schedule", "interleaved:2", "--recompute", "full"]),
    "search": (lambda: xpusim.search("llama2-70b", cluster="dgx-h100", gpus=256, batch=1024, top=3),
               ["parallel", "llama2-70b", "--cluster", "dgx-h100", "--gpus", "256", "--batch", "1024", "--search",
                "--top", "3"]),
    "compress": (lambda: xpusim.compress("digits-cnn", quant=["w8a8"], prune=["2:4"], chips=["t4"]),
                 ["compress", "digits-cnn", "-q", "w8a8", "-p", "2:4", "--chip", "t4"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_to_dict_equals_cli_json(name: str) -> None:
    call, args = CASES[name]
    result = call()
    api_dict = json.loads(json.dumps(result.to_dict()))  # tuples → lists, as JSON has them
    cli = cli_json(*args)
    timed = {"cpu_latency_s"}  # compress measures each model's forward on this CPU: a wall time
    assert without(api_dict, timed) == without(cli, timed)
    assert result.summary()  # every result says what it found in words
    assert json.loads(result.to_json()) == api_dict


def test_results_are_frozen() -> None:
    r = xpusim.llm("gpt2", chip="t4", prompt_len=64, gen_len=8)
    with pytest.raises(AttributeError):
        r.price_per_hour = 1.0  # type: ignore[misc]


def test_objects_are_used_as_given(tmp_path: Path) -> None:
    chip = xpusim.Chip.from_yaml("l4")
    assert xpusim.load_chip(chip) is chip
    by_object = xpusim.roofline("resnet18", chip=chip).to_dict()
    assert by_object == xpusim.roofline("resnet18", chip="l4").to_dict()
    cluster = xpusim.Cluster.from_yaml("dgx-h100")
    plan = xpusim.train("gpt:h=1024,l=8,a=16,s=512", cluster=cluster, gpus=16, tp=2, pp=4).step.plan
    again = xpusim.train("gpt:h=1024,l=8,a=16,s=512", cluster=cluster, gpus=16, plan=plan.to_dict())
    assert again.step.plan == plan
    cfg = xpusim.TransformerConfig(name="tiny", hidden=256, layers=2, heads=4, kv_heads=4, head_dim=64, ffn=1024,
                                   vocab=1000, gated_mlp=False, rms_norm=False, tied_embeddings=True,
                                   max_positions=512)
    assert xpusim.llm(cfg, chip="t4", prompt_len=128, gen_len=4).estimate.config is cfg


def test_default_dtype_policy_is_one_for_roofline_and_llm() -> None:
    # T4 has fp16 tensor cores and no bf16: both commands pick fp16 there, bf16/fp16-capable chips keep bf16 for LLMs.
    assert xpusim.roofline("resnet18", chip="t4").estimate.dtype == "fp16"
    assert xpusim.llm("gpt2", chip="t4", prompt_len=64, gen_len=8).estimate.precision.float16 == "float16"
    assert xpusim.llm("gpt2", chip="a100-sxm-80gb", prompt_len=64, gen_len=8).estimate.precision.float16 == "bfloat16"
    r = runner.invoke(app, ["llm", "gpt2", "--chip", "t4", "--prompt-len", "64", "--gen-len", "8"])
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize(("call", "message"), [
    (lambda: xpusim.roofline("resnet18", chip="t4", dtype="bf16"), "chip t4 has no bf16 peak"),
    (lambda: xpusim.roofline("resnet18", chip="t4", dtype="int3"), "dtype 'int3' is not one of fp64, fp32"),
    (lambda: xpusim.roofline("resnet18", chip="h100"), "unknown chip 'h100'. Did you mean h100-sxm"),
    (lambda: xpusim.analyze("resnet18", mode="train"), "mode 'train' is not one of inference, training"),
    (lambda: xpusim.analyze("resnet18", batch=0), "batch 0 must be a positive number"),
    (lambda: xpusim.llm("lama2-7b", chip="t4"), "unknown LLM 'lama2-7b'"),
    (lambda: xpusim.llm("gpt2", chip="t4", w_bits=5), "w_bits=5 is not one of"),
    (lambda: xpusim.npu("resnet18", array="0x8"), "array '0x8': expected ROWSxCOLS"),
    (lambda: xpusim.train("gpt-175b", gpus=8, recompute="some"), "recompute 'some': expected one of"),
    (lambda: xpusim.train("gpt-175b", gpus=8, schedule="dualpipe"), "schedule 'dualpipe': expected one of"),
    (lambda: xpusim.train("gpt-175b", gpus=8, plan={"dp": 8, "bogus": 1}), "unknown plan keys 'bogus'"),
    (lambda: xpusim.search("gpt:h=64,l=2", gpus=8, batch=8), "missing a (attention heads)"),
    (lambda: xpusim.compress(quant=["w9a8"]), "weight bits 9"),
])
def test_bad_input_raises_user_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(xpusim.UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call()


def test_same_gpt_spec_same_model_in_parallel_and_run() -> None:
    from xpusim.parallel.real.models import build_parts
    from xpusim.parallel.real.spec import ModelSpec
    from xpusim.parallel.spec import parse_model

    for spec in ("gpt:h=64,l=2,a=4,s=16", "gpt:h=128,l=3,a=8,s=32,V=1000,ffn=256"):
        layers, parts = build_parts(ModelSpec.parse(spec), seed=0)
        unique = {id(p): p.numel() for m in [*layers, *parts.values()] for p in m.parameters()}
        assert sum(unique.values()) == parse_model(spec).config.params


# ----------------------------------------------------------------------------------------- the import graph
LAYERS = ["errors", "units", "names", "precision", "files", "workload", "hardware", "engines", "compress",
          "parallel", "api", "sweep", "report", "cli"]
"""Bottom to top: a module may import its own package and anything below it, nothing above."""
OWN_TOP_LEVEL = {"run": "cli"}  # `python -m xpusim.run`: an entry point like the CLI


def layer_of(module: str) -> str:
    part = module.split(".")[1] if module.startswith("xpusim.") else module
    return OWN_TOP_LEVEL.get(part, part)


def test_no_module_imports_a_layer_above_it() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        here = layer_of(".".join(rel.parts))
        if here not in rank:
            continue
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports included
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                       else [])
            for t in targets:
                if t.startswith("xpusim.") and (there := layer_of(t)) in rank and rank[there] > rank[here]:
                    upward.append(f"{rel}: imports {t}")
    assert upward == []


def test_cli_is_thin() -> None:
    # parse, call, render: a command's options are most of it, its body a few lines; the file grows by options
    tree = ast.parse((SRC / "cli.py").read_text())
    bodies = {f.name: f.end_lineno - f.body[1 if ast.get_docstring(f) else 0].lineno + 1  # type: ignore[operator]
              for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.endswith("_cmd")}
    assert len(bodies) >= 13 and max(bodies.values()) <= 26, bodies
    assert len((SRC / "cli.py").read_text().splitlines()) <= 33 * len(bodies)


# ------------------------------------------------------------------------------- the CLI's one error policy
@pytest.mark.parametrize(("args", "message"), [
    (["roofline", "resnet18", "--chip", "t4", "--format", "csv"], "--format csv is not available for roofline"),
    (["llm", "gpt2", "--chip", "t4", "-f", "csv"], "--format csv is not available for llm"),
    (["npu", "resnet18", "-f", "csv"], "--format csv is not available for npu"),
    (["chips", "-f", "csv"], "--format csv is not available for chips"),
    (["analyze", "resnet18", "--mode", "train"], "Invalid value for '--mode': 'train' is not one of"),
    (["analyze", "resnet18", "--batch", "0"], "'--batch' / '-b': Input should be greater than or equal"),
    (["parallel", "gpt-175b", "--gpus", "8", "--recompute", "some"], "--recompute 'some': expected one of"),
    (["analyze", "resnet18", "--input-shape", "1,x,3"], "--input-shape '1,x,3': expected"),
])
def test_cli_mistakes_are_one_line(args: list[str], message: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_file_that_is_not_a_chip_file_says_so(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    r = runner.invoke(app, ["roofline", "resnet18", "--chip", str(notes)])
    assert r.exit_code == 2 and "is a file but not a chip file: chip files are .yaml, .yml or .json" in r.stderr


@pytest.mark.parametrize("args", [
    ["compress", "digits-cnn", "--plot", "no-such-dir/p.png"],  # before any training
    ["probe", "--out", "no-such-dir/host.yaml"],  # before any measuring
    ["report", "digits-cnn", "--compress", "default", "--out", "no-such-dir/r.html"],  # before any training
    ["parallel", "gpt-175b", "--gpus", "8", "--trace", "no-such-dir/t.json"],
    ["analyze", "resnet18", "-f", "json", "--output", "."],
])
def test_output_paths_are_checked_before_any_work(args: list[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    import xpusim.api.calls as calls

    def no_work(*_: object, **__: object) -> None:
        raise AssertionError("work started before the output path was checked")

    for name in ("compress", "train", "analyze"):
        monkeypatch.setattr(calls, name, no_work)
    import xpusim.api.host as host

    monkeypatch.setattr(host, "probe_chip_file", no_work)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.stderr
    assert ("does not exist" in r.stderr or "is a directory" in r.stderr) and list(tmp_path.iterdir()) == []


def test_measure_names_the_model_not_its_last_layer() -> None:
    import torch

    torch.set_num_threads(1)
    r = xpusim.roofline("resnet18", chip="t4", dtype="fp32", measure=True)
    assert r.measured is not None and r.measured.model == "resnet18"
    assert r.to_dict()["measured"]["model"] == "resnet18"


def test_npu_check_says_how_many_layers_it_checked() -> None:
    r = xpusim.npu("resnet18", array=(16, 16), check=True, check_layers=2)
    assert r.checks is not None and len({c.name for c in r.checks}) == 2 and r.ok
    assert "check: the first 2 of 21 conv/linear layers" in r.summary()


USER_MODEL = """
import torch
from torch import nn

def build():  # no seed of its own: xpusim's --seed decides its initial weights
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(dim=1)
    return x[:200], y[:200], x[200:], y[200:]
"""


def test_compression_reproduces(tmp_path: Path) -> None:
    import torch

    f = tmp_path / "user.py"
    f.write_text(USER_MODEL)
    timed = {"cpu_latency_s"}  # a wall time
    runs = []
    for threads in (2, 1):  # training always runs on one thread: the thread count of the caller does not matter
        torch.set_num_threads(threads)
        r = xpusim.compress(f"{f}:build", data=f"{f}:data", epochs=3, quant=["w4a8", "w2:qat"], prune=["0.5"],
                            chips=[], seed=7)
        runs.append(without(r.to_dict(), timed))
    torch.set_num_threads(1)
    assert runs[0] == runs[1]
    # the seed is set before the user's factory builds the model: it decides the initial weights
    from xpusim.compress.api import load_task

    def weights(seed: int) -> list[torch.Tensor]:
        return [p.detach().clone() for p in load_task(f"{f}:build", seed, f"{f}:data").model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(weights(7), weights(7), strict=True))
    assert not torch.equal(weights(7)[0], weights(8)[0])
