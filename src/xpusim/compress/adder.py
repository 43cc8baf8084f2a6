"""AdderNet (Chen et al., CVPR 2020): a convolution whose output is the negative L1 distance between each input
patch and each filter, −Σ|x − w|, so the layer needs additions and absolute values but no multiplications.

``to_adder`` swaps every Conv2d (except those named in ``keep``) for an AdderConv2d started from the conv's
weights, followed by a per-channel batch norm as the paper does (adder outputs are large and negative); the model
must then be fine-tuned. NB: the paper's adaptive per-layer learning rate is not implemented; with plain Adam a
few epochs on the digits task reach only about 50–65% (the float CNN: 99%), and each epoch is slow on a CPU (the
(batch, out, k, positions) difference tensor), so the adder layer is a library building block, not yet a
``--quant`` variant.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _L1Distance(torch.autograd.Function):
    """Y[b, o, l] = −Σ_k |X[b, k, l] − W[o, k]| with AdderNet's gradients: the full-precision ∂Y/∂W = X − W
    (not its sign) and ∂Y/∂X = HardTanh(W − X), which the paper shows train far better than the true sign
    gradients (Chen et al. 2020, Eq. 5 and 7)."""

    @staticmethod
    def forward(ctx: Any, cols: torch.Tensor, wk: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cols, wk)
        return -(cols.unsqueeze(1) - wk[None, :, :, None]).abs().sum(dim=2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cols, wk = ctx.saved_tensors
        diff = cols.unsqueeze(1) - wk[None, :, :, None]  # (B, O, K, L): x − w
        g = grad.unsqueeze(2)  # (B, O, 1, L)
        grad_w = (diff * g).sum(dim=(0, 3))  # ∂Y/∂W = x − w
        grad_x = (F.hardtanh(-diff) * g).sum(dim=1)  # ∂Y/∂X = HT(w − x)
        return grad_x, grad_w


class AdderConv2d(nn.Module):
    """−Σ_k |x_k − w_k| over each receptive field, for every output channel (stride, padding as the conv had;
    no groups or dilation)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.groups != 1 or conv.dilation not in ((1, 1), 1):
            raise ValueError("AdderConv2d supports groups=1 and dilation=1 convolutions")
        if isinstance(conv.padding, str):
            raise ValueError(f"AdderConv2d needs numeric padding, not {conv.padding!r}")
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.stride: tuple[int, int] = (conv.stride[0], conv.stride[1])
        self.padding: tuple[int, int] = (conv.padding[0], conv.padding[1])
        self.kernel_size: tuple[int, int] = (conv.kernel_size[0], conv.kernel_size[1])
        self.out_channels = conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (B, K, L)
        wk = self.weight.reshape(self.out_channels, -1)  # (O, K)
        out = _L1Distance.apply(cols, wk)  # (B, O, L)
        kh, kw = self.kernel_size
        ph, pw = self.padding
        sh, sw = self.stride
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        return out.reshape(b, self.out_channels, oh, ow)


def to_adder(model: nn.Module, keep: tuple[str, ...] = ()) -> nn.Module:
    """Replace Conv2d layers by AdderConv2d + BatchNorm2d, in place."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d) and name not in keep:
            setattr(model, name, nn.Sequential(AdderConv2d(child), nn.BatchNorm2d(child.out_channels)))
        else:
            to_adder(child, keep)
    return model
