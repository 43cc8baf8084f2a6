"""Training mode: backward costs op by op against the forward (hand relations), attributed to modules."""

import torch
from torch import nn

import xpusim


def test_resnet18_backward_is_twice_forward_except_first_conv() -> None:
    wl = xpusim.analyze("resnet18", batch=2, mode="training")
    fwd = {o.module: o.macs for o in wl.ops if o.phase == "forward" and o.kind == "conv"}
    bwd = {o.module: o.macs for o in wl.ops if o.phase == "backward" and o.kind == "conv"}
    assert fwd.keys() == bwd.keys()
    for module, macs in fwd.items():
        # grad_input + grad_weight; the first conv needs no grad_input (its input is the image)
        assert bwd[module] == (1 if module == "conv1" else 2) * macs, module
    fc_fwd = sum(o.macs for o in wl.ops if o.phase == "forward" and o.module == "fc")
    fc_bwd = sum(o.macs for o in wl.ops if o.phase == "backward" and o.module == "fc")
    assert fc_bwd == 2 * fc_fwd  # two mm: grad input and grad weight
    ratio = wl.totals("backward").macs / (2 * wl.totals("forward").macs)
    assert round(ratio, 4) == 0.9675  # measured with FlopCounterMode on the same model (reference/peers.md)
    assert wl.uncounted == {}


def test_linear_training_relation_exact() -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    x = torch.randn(8, 32, requires_grad=True)
    wl = xpusim.analyze(model, x, mode="training")
    fwd, bwd = wl.totals("forward").macs, wl.totals("backward").macs
    assert fwd == 8 * (32 * 64 + 64 * 10)
    assert bwd == 2 * fwd  # input requires grad: both grad-input and grad-weight matmuls everywhere
    modules = {o.module for o in wl.ops if o.phase == "backward" and o.kind == "matmul"}
    assert modules == {"0", "2"}
    assert wl.to_dict()["totals_by_phase"]["backward"]["macs"] == bwd
