"""The xpusim command: JSON/CSV contract, depth grouping, sweeps, user files, and clear errors (exit 2)."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xpusim.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_json_contract() -> None:
    code, out, _ = run("analyze", "resnet18", "--format", "json")
    assert code == 0
    d = json.loads(out)
    assert {"model", "mode", "dtype", "input_shapes", "totals", "layers", "uncounted"} <= d.keys()
    assert set(d["totals"]) >= {"macs", "flops", "params", "bytes_read", "bytes_written", "weight_bytes",
                                "activation_bytes"}
    layer_keys = {"name", "module", "op", "kind", "input_shapes", "output_shape", "dtype", "macs", "flops", "params",
                  "bytes_read", "bytes_written", "intensity"}
    assert all(layer_keys <= layer.keys() for layer in d["layers"])
    assert all(isinstance(layer["macs"], int) and isinstance(layer["flops"], int) for layer in d["layers"])
    assert d["input_shapes"] == [[1, 3, 224, 224]]
    assert d["totals"]["macs"] == sum(layer["macs"] for layer in d["layers"]) == 1_814_073_344  # resnet18 hand count
    t = d["totals"]
    assert t["bytes_read"] + t["bytes_written"] == t["weight_bytes"] + t["activation_bytes"]


def test_depth_grouping_keeps_totals() -> None:
    _, out, _ = run("analyze", "resnet18", "--format", "json", "--depth", "1")
    d = json.loads(out)
    names = [layer["name"] for layer in d["layers"]]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert sum(layer["flops"] for layer in d["layers"]) == d["totals"]["flops"]


def test_csv_rows_sum_to_totals() -> None:
    code, out, _ = run("analyze", "mobilenet_v2", "--format", "csv", "--batch", "2")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sum(int(r["macs"]) for r in rows) == 2 * 300_774_272


def test_table_lists_totals_and_uncounted() -> None:
    code, out, _ = run("analyze", "resnet18", "--top", "3")
    assert code == 0
    assert "1,814,073,344 MACs" in out and "uncounted ops: none" in out


def test_sweep_batch_scales_linearly() -> None:
    _, out, _ = run("analyze", "resnet18", "--sweep", "batch=1,4", "--format", "json")
    d = json.loads(out)
    m1, m4 = (r["totals"]["macs"] for r in d["results"])
    assert m4 == 4 * m1
    assert d["results"][0]["totals"]["params"] == d["results"][1]["totals"]["params"]
    assert d["changed_layers"][0] == {"name": "conv1/convolution", "from": [1, 64, 112, 112], "to": [4, 64, 112, 112]}


def test_sweep_seq_len_shows_quadratic_attention() -> None:
    code, out, _ = run("analyze", "bert-base", "--sweep", "seq-len=64,128", "--format", "json")
    assert code == 0
    t64, t128 = (r["totals"]["macs"] for r in json.loads(out)["results"])
    # dense part doubles; the 2·s²·d attention part quadruples: 12 layers x 2 x 768 x (128² − 2·64²)
    assert t128 - 2 * t64 == 12 * 2 * 768 * (128**2 - 2 * 64**2)


def test_sweep_table() -> None:
    code, out, _ = run("analyze", "resnet18", "--sweep", "image-size=112,224")
    assert code == 0 and "× first" in out and "1x3x112x112" in out and "1x3x224x224" in out
    assert "conv1/convolution: 1x64x56x56 → 1x64x112x112" in out


USER_MODEL = '''
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 62 * 62, 10))

def with_inputs():
    return build(), torch.randn(1, 3, 64, 64)

def broken():
    class Bad(nn.Module):
        def forward(self, x):
            raise ValueError("shape mismatch in my layer")
    return Bad()
'''


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    p = tmp_path / "my_model.py"
    p.write_text(USER_MODEL)
    return p


def test_user_factory_with_input_shape_and_training(user_file: Path) -> None:
    code, out, _ = run("analyze", f"{user_file}:build", "--input-shape", "1,3,64,64", "--mode", "training",
                       "--format", "json")
    assert code == 0, out
    d = json.loads(out)
    conv, lin = 8 * 62 * 62 * 3 * 9, 8 * 62 * 62 * 10
    assert d["totals_by_phase"]["forward"]["macs"] == conv + lin
    assert d["mode"] == "training"


def test_user_factory_returning_inputs(user_file: Path) -> None:
    code, out, _ = run("analyze", f"{user_file}:with_inputs", "--batch", "3", "--format", "json")
    assert code == 0
    assert json.loads(out)["input_shapes"] == [[3, 3, 64, 64]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "resnet5"], "unknown model 'resnet5'. Did you mean resnet50"),
        (["analyze", "resnet18", "--input-shape", "1,x,3"], "--input-shape '1,x,3': expected comma-separated"),
        (["analyze", "resnet18", "--input-shape", "1,3,0,4"], "positive integers"),
        (["analyze", "resnet18", "--sweep", "depth=1,2"], "PARAM one of batch, seq-len, image-size"),
        (["analyze", "resnet18", "--dtype", "float13"], "dtype='float13' is not one of"),
        (["analyze", "llama2-7b", "--seq-len", "9999"], "seq_len=9999 is outside 1..4096"),
        (["analyze", "resnet18", "--input-shape", "1,3"], "resnet18 raised in forward: RuntimeError"),
        (["analyze", "nofile.py:build"], "model file 'nofile.py' does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1


def test_user_file_errors(user_file: Path) -> None:
    code, _, err = run("analyze", f"{user_file}:nothere", "--input-shape", "1,3,64,64")
    assert code == 2 and "has no callable 'nothere'; callables there: broken, build, with_inputs" in err
    code, _, err = run("analyze", f"{user_file}:build")
    assert code == 2 and "give --input-shape" in err
    code, _, err = run("analyze", f"{user_file}:broken", "--input-shape", "1,3,8,8")
    assert code == 2 and "raised in forward: ValueError: shape mismatch in my layer" in err


def test_output_file_written_whole(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    code, _, _ = run("analyze", "resnet18", "--format", "json", "--output", str(target))
    assert code == 0 and json.loads(target.read_text())["model"] == "resnet18"
    assert target.stat().st_mode & 0o044  # readable by others under a usual umask, not mkstemp's 0600
    code, _, err = run("analyze", "resnet18", "--format", "json", "--output", str(tmp_path / "no" / "r.json"))
    assert code == 2 and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_console_script_exit_code_and_no_traceback() -> None:
    r = subprocess.run([sys.executable, "-m", "xpusim.cli", "analyze", "vgg17"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: unknown model 'vgg17'") and "Traceback" not in r.stderr


def test_models_lists_zoo() -> None:
    code, out, _ = run("models")
    assert code == 0 and "llama2-70b" in out and "gpt-175b" in out and "resnet50" in out


def test_plots_written_and_bad_suffix_rejected(tmp_path: Path) -> None:
    png = tmp_path / "layers.png"
    code, _, _ = run("analyze", "resnet18", "--depth", "2", "--format", "json", "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "sweep.svg"
    code, _, _ = run("analyze", "resnet18", "--sweep", "batch=1,2,4", "--format", "json", "--plot", str(svg))
    assert code == 0 and "<svg" in svg.read_text()
    code, _, err = run("analyze", "resnet18", "--format", "json", "--plot", str(tmp_path / "x.gif"))
    assert code == 2 and "suffix must be one of .png, .svg, .pdf" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.png", "sweep.svg"]
