"""Every torchvision classifier: analyzed on meta with nothing uncounted, and conv/matmul/attention MACs equal
to PyTorch's own FlopCounterMode (an independent implementation) on the same model and input."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import xpusim
from xpusim.workload.zoo import build, torchvision_names

MATRIX_KINDS = ("conv", "matmul", "attention")


def flop_counter_macs(name: str) -> int:
    model = build(name).module.eval()
    x = torch.empty(1, 3, 224, 224, device="meta")
    fcm = FlopCounterMode(display=False)
    with torch.no_grad(), fcm, torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        model(x)
    return fcm.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per MAC and nothing else


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision_names())
def test_every_torchvision_model_matches_flop_counter(name: str) -> None:
    wl = xpusim.analyze(name)
    assert wl.uncounted == {}, f"{name}: ops without a formula: {wl.uncounted}"
    ours = sum(o.macs for o in wl.ops if o.kind in MATRIX_KINDS)
    assert ours == flop_counter_macs(name)
