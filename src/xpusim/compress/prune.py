"""Pruning: unstructured magnitude masks (per layer or global), N:M masks, and structured channel pruning that
really removes channels (Torch-Pruning's dependency graph keeps every connected layer consistent).

Names: ``0.5`` (50% of each layer's weights by magnitude), ``0.5:global`` (50% over all layers at once), ``2:4``
(N:M, keep the 2 largest of every 4 consecutive inputs), ``0.5:structured`` (channels removed until about 50% of
the parameters are gone); ``:steps=K`` prunes in K rounds (ratio·k/K each) with the fine-tuning split between
them; ``:ft=N``
fine-tunes N epochs afterwards (default 8 for structured, 0 otherwise), masks held fixed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from xpusim.compress.quant import QuantError

DEFAULT_STRUCTURED_FT = 8


@dataclass(frozen=True, kw_only=True)
class PruneSpec:
    name: str
    mode: str
    """unstructured, global, nm, structured."""
    ratio: float = 0.0
    n: int = 0
    m: int = 0
    finetune_epochs: int = 0
    steps: int = 1
    """Iterative schedule: prune to ratio·k/steps and fine-tune finetune_epochs/steps, for k = 1 … steps."""

    @property
    def changes_size(self) -> bool:
        return self.mode == "structured"


def parse_prune(text: str) -> PruneSpec:
    head, *opts = text.strip().split(":")
    ft = None
    steps = 1
    rest = []
    for o in opts:
        if o.startswith("steps="):
            steps = int(o[6:]) if o[6:].isdigit() else 0
            if steps < 1:
                raise QuantError(f"--prune {text!r}: steps={o[6:]} must be a whole number >= 1")
        elif o.startswith("ft="):
            try:
                ft = int(o[3:])
            except ValueError:
                ft = -1
            if ft < 0:
                raise QuantError(f"--prune {text!r}: ft={o[3:]} must be a whole number of epochs >= 0")
        else:
            rest.append(o)
    if re.fullmatch(r"\d+", head) and rest and re.fullmatch(r"\d+", rest[0]):  # N:M
        n, m = int(head), int(rest[0])
        if not 0 < n < m:
            raise QuantError(f"--prune {text!r}: N:M needs 0 < N < M (e.g. 2:4)")
        return PruneSpec(name=text, mode="nm", n=n, m=m, finetune_epochs=ft or 0)
    try:
        ratio = float(head)
    except ValueError:
        raise QuantError(f"--prune {text!r}: expected RATIO[:global|:structured][:ft=N] or N:M such as 2:4") from None
    if not 0 < ratio < 1:
        raise QuantError(f"--prune {text!r}: ratio {ratio} must be between 0 and 1 (exclusive)")
    mode = rest[0] if rest else "unstructured"
    if mode not in ("unstructured", "global", "structured") or len(rest) > 1:
        raise QuantError(f"--prune {text!r}: mode {':'.join(rest)!r} is not global or structured")
    if ft is None:
        ft = DEFAULT_STRUCTURED_FT if mode == "structured" else 0
    return PruneSpec(name=text, mode=mode, ratio=ratio, finetune_epochs=ft, steps=steps)


Prunable = nn.Linear | nn.Conv1d | nn.Conv2d


def _layers(model: nn.Module) -> list[Prunable]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def masks_for(model: nn.Module, spec: PruneSpec) -> dict[Prunable, torch.Tensor]:
    """Keep-masks (1 = keep) per layer for the unstructured and N:M modes; N:M skips layers whose inputs per
    output are not a multiple of M (see ``dense_layers``)."""
    layers = _layers(model)
    if spec.mode == "global":
        scores = torch.cat([m.weight.detach().abs().reshape(-1) for m in layers])
        k = int(spec.ratio * scores.numel())
        threshold = scores.kthvalue(k).values if k > 0 else scores.min() - 1
        return {m: (m.weight.detach().abs() > threshold).float() for m in layers}
    out = {}
    for layer in layers:
        w = layer.weight.detach()
        if spec.mode == "unstructured":
            k = int(spec.ratio * w.numel())
            thr = w.abs().reshape(-1).kthvalue(k).values if k > 0 else w.abs().min() - 1
            out[layer] = (w.abs() > thr).float()
        else:  # N:M along the inputs of each output row
            rows = w.reshape(w.shape[0], -1)
            if rows.shape[1] % spec.m:
                continue  # inputs not a multiple of M (a first conv with 9): left dense, as N:M kernels do
            groups = rows.abs().reshape(rows.shape[0], -1, spec.m)
            keep = torch.zeros_like(groups)
            keep.scatter_(2, groups.topk(spec.n, dim=2).indices, 1.0)
            out[layer] = keep.reshape(w.shape)
    return out


def apply_masks(masks: dict[Prunable, torch.Tensor]) -> list[torch.utils.hooks.RemovableHandle]:
    """Zero the pruned weights and keep them zero while training (gradient masked)."""
    handles = []
    for layer, mask in masks.items():
        with torch.no_grad():
            layer.weight.mul_(mask)
        handles.append(layer.weight.register_hook(lambda g, mask=mask: g * mask))
    return handles


def prune_channels(model: nn.Module, example: torch.Tensor, channel_ratio: float,
                   keep: list[nn.Module]) -> nn.Module:
    """Remove ``channel_ratio`` of the channels of every prunable layer (L2-magnitude importance), except the
    layers in ``keep`` (the classifier), with Torch-Pruning; the model is changed in place and returned."""
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=channel_ratio, ignored_layers=keep)
    pruner.step()
    return model


def prune_structured(model: nn.Module, example: torch.Tensor, ratio: float, keep_name: str) -> nn.Module:
    """Remove channels until about ``ratio`` of the parameters are gone: removing a fraction r of channels
    removes about 1 − (1 − r)² of a layer's weights (inputs and outputs both shrink), so the channel fraction is
    found by bisection on trial copies; then the model itself is pruned (in place)."""
    import copy

    total = sum(p.numel() for p in model.parameters())
    lo, hi = 0.0, min(ratio, 0.95)
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        prune_channels(trial, example, mid, [dict(trial.named_modules())[keep_name]])
        removed = 1 - sum(p.numel() for p in trial.parameters()) / total
        lo, hi = (mid, hi) if removed < ratio else (lo, mid)
    return prune_channels(model, example, (lo + hi) / 2, [dict(model.named_modules())[keep_name]])


def prune_model(model: nn.Module, spec: PruneSpec, example: torch.Tensor, classifier: str,
                finetune: Callable[[nn.Module, int], None]) -> nn.Module:
    """Prune ``model`` (in place) and fine-tune it for the spec's epochs with ``finetune(model, epochs)``.
    ``classifier`` names the output layer, which structured pruning keeps whole."""
    total = sum(p.numel() for p in model.parameters())
    epochs = [spec.finetune_epochs // spec.steps + (1 if k < spec.finetune_epochs % spec.steps else 0)
              for k in range(spec.steps)]
    for k in range(1, spec.steps + 1):
        target = spec.ratio * k / spec.steps  # of the original parameters
        if spec.mode == "structured":
            now = sum(p.numel() for p in model.parameters())
            prune_structured(model, example, 1 - (1 - target) * total / now, classifier)
            handles = []
        else:
            handles = apply_masks(masks_for(model, replace(spec, ratio=target)))
        if epochs[k - 1]:
            finetune(model, epochs[k - 1])
        for h in handles:
            h.remove()
    return model


def dense_layers(model: nn.Module, spec: PruneSpec) -> int:
    """How many prunable layers an N:M spec leaves dense."""
    if spec.mode != "nm":
        return 0
    return sum(1 for m in _layers(model) if m.weight[0].numel() % spec.m != 0)
