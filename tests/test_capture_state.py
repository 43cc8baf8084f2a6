"""Capturing never touches the user's model; meta falls back to real tensors where it cannot run; factory files
keep their own inputs and weights, import their siblings and may return keyword inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import xpusim
from xpusim.cli import app

runner = CliRunner()


class Lazy(nn.Module):
    """Caches tensors on first use, in every way a forward can: a plain attribute, a list, a new attribute, a
    buffer registered on the fly."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.pe: torch.Tensor | None = None
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pe is None:
            self.pe = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
        self.seen.append(x.sum())
        if not hasattr(self, "extra"):
            self.extra = torch.ones(1, device=x.device)
        if "table" not in self._buffers:
            self.register_buffer("table", torch.zeros(1, device=x.device))
        return self.lin(x + self.pe)


@pytest.mark.parametrize("device", ["meta", "eager"])
def test_a_forward_that_caches_tensors_leaves_the_model_as_it_was(device: str) -> None:
    m = Lazy()
    weight = m.lin.weight
    wl = xpusim.analyze(m, torch.randn(2, 8), device=device)
    assert wl.totals().macs == 2 * 8 * 8  # the linear layer, by hand
    assert m.pe is None and m.seen == [] and not hasattr(m, "extra") and "table" not in m._buffers
    assert m.lin.weight is weight and weight.device.type == "cpu"
    y = m(torch.randn(2, 8))  # the real forward still works (it would fail on a cached meta tensor)
    assert y.shape == (2, 8) and m.pe is not None and m.pe.device.type == "cpu"


def test_a_detector_analyzes_by_falling_back_to_real_tensors_and_still_runs() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3).eval()
    image = [torch.rand(3, 160, 160)]
    with pytest.raises(xpusim.UserError, match="nonzero"):  # meta cannot: data-dependent shapes
        xpusim.analyze(det, image, device="meta")
    wl = xpusim.analyze(det, image)  # auto: meta, then eager
    assert wl.notes and "run eagerly on real tensors" in wl.notes[0] and "nonzero" in wl.notes[0]
    assert wl.totals().macs > 0
    with torch.no_grad():
        out = det(image)  # the AnchorGenerator's cached anchors were not left on meta
    assert set(out[0]) == {"boxes", "labels", "scores"}


LOOP = '''
import torch
from torch import nn

from helper import WIDTH  # a sibling module: the factory's folder is importable


class Loop(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(WIDTH, WIDTH)

    def forward(self, x, n):
        for _ in range(int(n)):
            x = self.lin(x)
        return x


def build():
    return Loop(), (torch.randn(2, WIDTH), torch.tensor(4))


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(WIDTH, 16), nn.Linear(16, 4)

    def forward(self, x, *, memory):
        return self.dec(self.enc(x) + memory)


def keywords():
    return Pair(), (torch.randn(3, WIDTH),), {"memory": torch.randn(3, 16)}


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Linear(WIDTH, 8)

    def forward(self, x):
        return self.block(x[:, :7])


def broken():
    return Broken(), torch.randn(2, WIDTH)
'''


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text("WIDTH = 512\n")
    path = tmp_path / "models.py"
    path.write_text(LOOP)
    return path


def test_eager_uses_the_factorys_own_inputs(factory: Path) -> None:
    # four passes through a 512x512 linear layer, batch 2, as the factory's n = 4 says
    expected = 4 * 2 * 512 * 512
    assert expected == 2_097_152
    assert xpusim.analyze(f"{factory}:build", device="eager").totals().macs == expected
    r = runner.invoke(app, ["analyze", f"{factory}:build", "--format", "json"])  # default: auto
    assert r.exit_code == 0, r.output
    assert "2,097,152 MACs" not in r.stdout and '"macs": 2097152' in r.stdout
    assert "meta could not run this model" in r.stdout and ".item()" in r.stdout


def test_a_factory_may_return_keyword_inputs(factory: Path) -> None:
    wl = xpusim.analyze(f"{factory}:keywords")
    assert wl.totals().macs == 3 * 512 * 16 + 3 * 16 * 4  # encoder and decoder linear layers


def test_a_model_that_fails_on_real_tensors_too_names_the_layer_and_the_op(factory: Path) -> None:
    r = runner.invoke(app, ["analyze", f"{factory}:broken"])
    assert r.exit_code == 2
    line = r.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert "in block" in line and "aten." in line and "shapes cannot be multiplied" in line


def test_an_lstm_reads_its_weights_once_per_call_in_both_modes() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(64, 128, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(4, 30, 64)
    # parameters by hand: per direction 4H(I + H) + 8H; layer 0 has I = 64, layer 1 I = 2H = 256
    params = 2 * (4 * 128 * (64 + 128) + 8 * 128) + 2 * (4 * 128 * (256 + 128) + 8 * 128)
    assert params == sum(p.numel() for p in lstm.parameters()) == 593_920
    meta, eager = (xpusim.analyze(lstm, x, device=d).totals() for d in ("meta", "eager"))
    assert meta.weight_bytes == eager.weight_bytes == 4 * params  # once, not once per time step
    assert meta.macs == eager.macs
    # meta's per-step ops and eager's fused oneDNN kernel now agree on the traffic to within a few percent
    assert meta.intensity == pytest.approx(eager.intensity, rel=0.10)
    assert meta.intensity > 30  # was 1.7 FLOP/B on meta (weights re-read every step), 40 eager


def test_two_separate_calls_of_one_rnn_read_its_weights_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(16, 32)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.rnn(a)[0] + self.rnn(b)[0].sum()

    m = Twice()
    weights = 4 * sum(p.numel() for p in m.parameters())
    wl = xpusim.analyze(m, (torch.randn(5, 2, 16), torch.randn(5, 2, 16)), device="meta")
    # each call is its own fused kernel: the weights are read once per call, twice in all
    assert wl.totals().weight_bytes == 2 * weights


PACKED = '''
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)

    def forward(self, x, lengths):
        out, _ = self.lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return out.data


def build():
    return Tagger(), (torch.randn(3, 5, 8), torch.tensor([5, 3, 2]))
'''


def test_cli_default_mode_analyzes_a_packed_sequence_rnn_and_a_detector(tmp_path: Path) -> None:
    path = tmp_path / "tagger.py"
    path.write_text(PACKED)
    r = runner.invoke(app, ["analyze", f"{path}:build", "--format", "json"])
    assert r.exit_code == 0, r.output
    import json

    doc = json.loads(r.stdout)
    # the 10 real tokens (5 + 3 + 2) each through W_ih (4H x I) and W_hh (4H x H), H = 16, I = 8
    assert doc["totals"]["macs"] == 10 * 4 * 16 * (8 + 16)
    assert doc["uncounted"] == {} and "run eagerly" in doc["notes"][0]
    r = runner.invoke(app, ["analyze", "fasterrcnn_mobilenet_v3_large_320_fpn", "--image-size", "128", "-f", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["totals"]["macs"] > 0 and doc["uncounted"] == {} and "nonzero" in doc["notes"][0]


def test_a_segmentation_model_runs_on_meta_without_any_weights() -> None:
    wl = xpusim.analyze("lraspp_mobilenet_v3_large", image_size=128)
    assert wl.notes == () and wl.uncounted == {} and wl.totals().macs > 0


def test_the_eager_memory_limit_can_be_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XPUSIM_EAGER_MEMORY_FRACTION", "1e-12")
    with pytest.raises(ValueError, match=r"XPUSIM_EAGER_MEMORY_FRACTION=0\.9"):
        xpusim.analyze("resnet18", device="eager")
    monkeypatch.setenv("XPUSIM_EAGER_MEMORY_FRACTION", "lots")
    with pytest.raises(ValueError, match="expected a number"):
        xpusim.analyze("resnet18", device="eager")
