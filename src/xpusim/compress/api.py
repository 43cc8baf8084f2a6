"""Compress a task's model with each variant and measure it: the task metric, the size of the compressed file,
parameters, MACs, sparsity."""

from __future__ import annotations

import copy
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xpusim.compress.prune import PruneSpec, dense_layers, prune_model
from xpusim.compress.quant import kmeans_codebook, quantize_uniform
from xpusim.compress.tasks import TASKS, Task, user_task
from xpusim.compress.variants import QuantLayer, Variant, quantize_model, set_observing
from xpusim.errors import UserError
from xpusim.workload.capture import CaptureError, capture
from xpusim.workload.model import Workload

QAT_EPOCHS = 8
QAT_LR = 1e-3
PRUNE_FT_LR = 1e-3
ADDER_LR = 3e-3

Projector = Callable[[nn.Module, torch.Tensor, "Variant | None", "tuple[int, int] | None"], dict[str, dict[str, Any]]]
"""What a variant buys on hardware: (model, example input, variant or None for float, N:M sparsity the hardware may
skip) -> {system name: {latency_s, energy_j, dtype, ...}}. Supplied by the composition layer (`xpusim.api`), so
compression knows nothing of chips."""


class CompressError(UserError):
    """A compression request that cannot run; the message names the option and what is allowed."""


@dataclass(frozen=True, kw_only=True)
class Measured:
    name: str
    value: float
    size_bytes: int
    params: int
    macs: int
    sparsity: float
    seconds: float
    hardware: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu_latency_s: float | None = None
    """Measured on this machine (float and structurally pruned models)."""

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "value": self.value, "size_bytes": self.size_bytes, "params": self.params,
             "macs": self.macs, "sparsity": self.sparsity, "hardware": self.hardware}
        if self.cpu_latency_s is not None:
            d["cpu_latency_s"] = self.cpu_latency_s
        return d


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned integers < 2^bits packed densely into bytes (big-endian bit order within a byte)."""
    u8 = values.reshape(-1).to(torch.uint8).numpy()
    planes = np.unpackbits(u8[:, None], axis=1)[:, 8 - bits:]
    return torch.from_numpy(np.packbits(planes.reshape(-1)).copy())


def encode_weight(w: torch.Tensor, v: Variant) -> dict[str, torch.Tensor]:
    """What a deployment would store for this weight under ``v``."""
    w = w.detach()
    if v.kind == "uniform":
        assert v.uniform is not None
        q, scale, zero = quantize_uniform(w, v.uniform)
        out = {"codes": pack_bits((q - v.uniform.qmin).to(torch.int64), v.weight_bits), "scale": scale.float()}
        if not v.uniform.symmetric:
            out["zero"] = zero.to(torch.int16)
        return out
    if v.kind == "codebook":
        cent, idx = kmeans_codebook(w, v.codebook)
        return {"index": pack_bits(idx, v.weight_bits), "codebook": cent.float()}
    if v.kind == "float":
        from xpusim.compress.quant import round_float

        r = round_float(w, v.float_format)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8-e4m3": torch.float8_e4m3fn,
                 "fp8-e5m2": torch.float8_e5m2, "tf32": torch.float32}[v.float_format]
        return {"value": r.to(dtype)}  # type: ignore[arg-type]
    if v.kind == "pow2":
        from xpusim.compress.quant import fake_pow2

        r = fake_pow2(w, v.weight_bits)
        k = torch.where(r == 0, torch.zeros_like(r), torch.log2(r.abs().clamp_min(1e-30)))
        top = k.max()
        code = torch.where(r == 0, torch.zeros_like(k), (top - k) + 1).to(torch.int64)  # 0 = zero, 1.. = exponents
        return {"code": pack_bits(code, v.weight_bits - 1), "sign": pack_bits((r < 0).to(torch.int64), 1),
                "top": top.reshape(1)}
    sign = (w >= 0).to(torch.int64)
    alpha = w.abs().reshape(w.shape[0], -1).mean(dim=1)
    if v.kind == "binary":
        return {"sign": pack_bits(sign, 1), "alpha": alpha}
    from xpusim.compress.quant import fake_ternary

    t = fake_ternary(w)
    return {"trit": pack_bits((torch.sign(t) + 1).to(torch.int64), 2), "alpha": t.abs().max().reshape(1)}


def to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A compact file: an 8-byte header length, a JSON header (name, dtype, shape, byte offset of each tensor),
    then the tensors' raw bytes back to back — so the size is the payload, not per-tensor pickle overhead."""
    entries, blobs, offset = [], [], 0
    for name, t in state.items():
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        entries.append({"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                        "offset": offset, "bytes": len(raw)})
        blobs.append(raw)
        offset += len(raw)
    header = json.dumps(entries, separators=(",", ":")).encode()
    return len(header).to_bytes(8, "little") + header + b"".join(blobs)


def deployable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as a deployment stores it: quantized layers as their encodings, the rest in float32."""
    state: dict[str, torch.Tensor] = {}
    quantized = {name for name, mod in model.named_modules() if isinstance(mod, QuantLayer)}
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLayer):
            for k, t in encode_weight(mod.inner.weight, mod.variant).items():
                state[f"{name}.weight.{k}"] = t
            if mod.inner.bias is not None:
                state[f"{name}.bias"] = mod.inner.bias.detach()
        elif not any(name == q or name.startswith(q + ".") for q in quantized):
            for pname, p in mod.named_parameters(recurse=False):
                state[f"{name}.{pname}" if name else pname] = p.detach()
    return state


def saved_size(model: nn.Module) -> int:
    return len(to_bytes(deployable_state(model)))


def _sparsity(model: nn.Module) -> float:
    zeros = total = 0
    for mod in model.modules():
        if isinstance(mod, QuantLayer):
            mod.eval()
            w = mod.quantized_weight()
            zeros += int((w == 0).sum())
            total += w.numel()
        elif isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            zeros += int((mod.weight == 0).sum())
            total += mod.weight.numel()
    return zeros / total if total else 0.0


def _macs(model: nn.Module, example: torch.Tensor) -> int:
    return capture_any(model, example).totals().macs


def check_variant(task: Task, variant: Variant) -> None:
    """Raise QuantError/CompressError if ``variant`` cannot apply to ``task`` (nothing is kept)."""
    if variant.kind == "adder":
        if not task.trainable:
            raise CompressError(f"--quant {variant.name}: {task.name} has no training data to fine-tune adder layers")
        if not any(isinstance(m, nn.Conv2d) for m in task.model.modules()):
            raise CompressError(f"--quant {variant.name}: {task.name} has no Conv2d layer to turn into an adder layer")
        return
    if variant.qat and not task.trainable:
        raise CompressError(f"--quant {variant.name}: {task.name} has no training data for QAT; use post-training "
                            "quantization (drop :qat)")
    quantize_model(copy.deepcopy(task.model), variant)


def check_prune(task: Task, spec: PruneSpec) -> None:
    if not task.trainable and (spec.mode == "structured" or spec.finetune_epochs):
        raise CompressError(f"--prune {spec.name}: {task.name} has no training data to fine-tune after pruning; "
                            "use a masking mode without :ft (e.g. 0.3, 0.3:global, 2:4)")


def _hardware(task: Task, model: nn.Module, variant: Variant | None, project: Projector | None,
              sparsity: tuple[int, int] | None = None) -> dict[str, dict[str, Any]]:
    return {} if project is None else project(model, task.example, variant, sparsity)


def capture_any(model: nn.Module, x: torch.Tensor) -> Workload:
    """Capture on the meta device, or on real tensors for models whose forward reads values (Hugging Face masks
    call ``.item()``)."""
    try:
        return capture(model, (x,), name="compressed")
    except CaptureError:
        return capture(model, (x,), name="compressed", device="eager")


def run_variant(task: Task, variant: Variant, seed: int = 0, project: Projector | None = None) -> Measured:
    start = time.perf_counter()
    if variant.kind == "adder":
        return _run_adder(task, variant, seed, project, start)
    model = quantize_model(copy.deepcopy(task.model), variant)
    if variant.act_bits:
        set_observing(model, True)
        with torch.no_grad():
            model(task.calibration_batch())
        set_observing(model, False)
    if variant.qat:
        torch.manual_seed(seed)
        task.finetune(model, QAT_EPOCHS, QAT_LR, seed)
    value = task.evaluate(model)
    params = sum(p.numel() for p in task.model.parameters())
    return Measured(name=variant.name, value=value, size_bytes=saved_size(model), params=params,
                    macs=_macs(task.model, task.example), sparsity=_sparsity(model),
                    seconds=time.perf_counter() - start,
                    hardware=_hardware(task, task.model, variant, project))


def _run_adder(task: Task, variant: Variant, seed: int, project: Projector | None, start: float) -> Measured:
    """AdderNet: every Conv2d becomes an L1-distance layer + batch norm, then fine-tuned. Costed on chips as the
    convolutions it replaces (NB: the chip files have no adder-specific peak; an adder needs no multiplier)."""
    from xpusim.compress.adder import to_adder

    model = to_adder(copy.deepcopy(task.model))
    torch.manual_seed(seed)
    task.finetune(model, variant.finetune_epochs, ADDER_LR, seed)
    model.eval()
    return Measured(name=variant.name, value=task.evaluate(model), size_bytes=len(to_bytes(dict(model.state_dict()))),
                    params=sum(p.numel() for p in model.parameters()), macs=_macs(task.model, task.example),
                    sparsity=_sparsity(model), seconds=time.perf_counter() - start,
                    hardware=_hardware(task, task.model, None, project),
                    cpu_latency_s=cpu_latency_s(model, task.test_x))


def cpu_latency_s(model: nn.Module, x: torch.Tensor, repeats: int = 15) -> float:
    """Median wall time of one forward over ``x`` on this CPU (after warm-up)."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            model(x)
            if i >= 3:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_prune(task: Task, spec: PruneSpec, seed: int = 0, project: Projector | None = None) -> Measured:
    start = time.perf_counter()
    model = copy.deepcopy(task.model)
    torch.manual_seed(seed)
    prune_model(model, spec, task.example, task.classifier,
                lambda m, epochs: task.finetune(m, epochs, PRUNE_FT_LR, seed))
    model.eval()
    dense = dense_layers(task.model, spec)
    name = f"prune {spec.name}" + (f" ({dense} layer{'s' if dense > 1 else ''} left dense)" if dense else "")
    return Measured(name=name, value=task.evaluate(model),
                    size_bytes=len(to_bytes(dict(model.state_dict()))),
                    params=sum(p.numel() for p in model.parameters()), macs=_macs(model, task.example),
                    sparsity=_sparsity(model), seconds=time.perf_counter() - start,
                    hardware=_hardware(task, model, None, project, (spec.n, spec.m) if spec.mode == "nm" else None),
                    cpu_latency_s=cpu_latency_s(model, task.test_x))


def baseline(task: Task, project: Projector | None = None) -> Measured:
    start = time.perf_counter()
    size = len(to_bytes(dict(task.model.state_dict())))
    return Measured(name="float32", value=task.evaluate(task.model), size_bytes=size,
                    params=sum(p.numel() for p in task.model.parameters()), macs=_macs(task.model, task.example),
                    sparsity=_sparsity(task.model), seconds=time.perf_counter() - start,
                    hardware=_hardware(task, task.model, None, project),
                    cpu_latency_s=cpu_latency_s(task.model, task.test_x))


def load_task(name: str, seed: int = 0, data: str | None = None, epochs: int = 0,
              progress: Callable[[str], None] | None = None) -> Task:
    """A built-in task by name, or a user model ``file.py:factory`` with ``data`` ``file.py:factory``."""
    if name.partition(":")[0].endswith(".py"):
        if data is None:
            raise CompressError(f"{name}: a user model needs --data file.py:factory returning "
                                "(train_x, train_y, test_x, test_y)")
        return user_task(name, data, CompressError, epochs=epochs, seed=seed, progress=progress)
    if data is not None:
        raise CompressError(f"--data is for user models (file.py:factory); {name} brings its own data")
    if name not in TASKS:
        raise CompressError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}, or file.py:factory")
    return TASKS[name](seed, progress=progress)

