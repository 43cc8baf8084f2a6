"""The Python API: `analyze` mirrors ``xpusim analyze`` and `sweep` mirrors ``--sweep``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from xpusim.precision import torch_dtype as torch_dtype_of
from xpusim.workload.capture import capture
from xpusim.workload.model import Workload
from xpusim.workload.zoo import ModelSpecError, build


def analyze(
    model: str | torch.nn.Module,
    example_inputs: Any = None,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    batch: int = 1,
    input_shape: Sequence[int] | None = None,
    image_size: int | None = None,
    seq_len: int | None = None,
    mode: str = "inference",
    device: str = "meta",
    dtype: str | torch.dtype | None = None,
    name: str | None = None,
) -> Workload:
    """Per-op MACs, FLOPs, params and bytes of one run of ``model``.

    ``model`` is a zoo name (``resnet50``, ``llama2-7b``), ``path/to/file.py:factory``, or any `nn.Module`.
    For a module give ``example_inputs`` (a tensor or tuple; real or meta) or ``input_shape``.
    By default everything runs on the meta device (no memory, no arithmetic, the module is not modified);
    ``device="eager"`` runs the tensors as given so PyTorch picks the kernels a real run would.

    >>> import xpusim
    >>> wl = xpusim.analyze("resnet50")
    >>> wl.totals().macs
    4089184256
    """
    torch_dtype = torch_dtype_of(dtype)
    shape = tuple(input_shape) if input_shape is not None else None
    if shape is not None and (not shape or any(int(d) < 1 for d in shape)):
        raise ValueError(f"input_shape={shape} must be a non-empty list of positive sizes")
    if isinstance(model, str):
        built = build(model, batch=batch, input_shape=shape, image_size=image_size, seq_len=seq_len)
        module, args, kwargs = built.module, built.args, dict(built.kwargs)
        if device == "eager" and any(t.device.type == "meta" for t in module.parameters()):
            # a meta-built zoo model: real (random) weights and inputs
            module, args, kwargs = materialize(module, args, kwargs, torch_dtype)
            torch_dtype = None
        elif device == "eager":  # a factory's own module: its weights and inputs as they are, shapes given made real
            args, kwargs = real_inputs(args), {k: real_inputs(v) for k, v in kwargs.items()}
        return capture(module, args, kwargs, mode=mode, device=device, dtype=torch_dtype, name=name or built.name)
    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"model must be a name, file.py:factory or torch.nn.Module, not {type(model).__name__}")
    if example_inputs is None:
        if shape is None:
            raise ValueError("give example_inputs or input_shape for a module")
        example_inputs = torch.empty(shape, device="meta")
    if device == "eager":
        example_inputs = real_inputs(example_inputs)
    return capture(model, example_inputs, example_kwargs, mode=mode, device=device, dtype=torch_dtype, name=name)


EAGER_MEMORY_FRACTION = 0.5
"""``device="eager"`` on a zoo model allocates its weights: refuse when they would take more than this share of the
available memory (``$XPUSIM_EAGER_MEMORY_FRACTION`` raises or lowers it)."""
EAGER_MEMORY_ENV = "XPUSIM_EAGER_MEMORY_FRACTION"


def _available_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**63


def real_inputs(x: Any) -> Any:
    """Meta tensors (inputs made from a shape) as real ones: random floats, zero integers; real tensors and other
    values unchanged."""
    if isinstance(x, torch.Tensor) and x.device.type == "meta":
        return torch.randn(x.shape, dtype=x.dtype) if x.is_floating_point() else torch.zeros(x.shape, dtype=x.dtype)
    if isinstance(x, tuple | list):
        return type(x)(real_inputs(v) for v in x)
    if isinstance(x, dict):
        return {k: real_inputs(v) for k, v in x.items()}
    return x


def materialize(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dtype: torch.dtype | None
) -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any]]:
    """Real CPU tensors for a meta-built model: random weights (values do not change costs), zero token ids."""
    need = sum(t.numel() * (dtype.itemsize if dtype and t.is_floating_point() else t.element_size())
               for t in list(module.parameters()) + list(module.buffers()))
    text = os.environ.get(EAGER_MEMORY_ENV, str(EAGER_MEMORY_FRACTION))
    try:
        fraction = float(text)
    except ValueError:
        raise ValueError(f"{EAGER_MEMORY_ENV}={text!r}: expected a number such as 0.8") from None
    if need > fraction * _available_memory_bytes():
        raise ValueError(f"an eager run needs {need / 2**30:.1f} GiB for the weights, more than {fraction:g} of the "
                         f"available memory; use device='meta' if the model runs there, or raise the limit with "
                         f"{EAGER_MEMORY_ENV}=0.9")
    module = module.to_empty(device="cpu")
    if dtype is not None:
        module = module.to(dtype)
    with torch.no_grad():  # values do not change costs, but uninitialised memory can hold NaNs and denormals
        for p in module.parameters():
            p.normal_(0, 0.02)
        for b in module.buffers():
            b.fill_(1 if b.is_floating_point() else 0)

    def real(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            dt = dtype if dtype is not None and x.is_floating_point() else x.dtype
            return torch.zeros(x.shape, dtype=dt) if not dt.is_floating_point else torch.randn(x.shape, dtype=dt)
        return x

    return module.eval(), tuple(real(a) for a in args), {k: real(v) for k, v in kwargs.items()}
