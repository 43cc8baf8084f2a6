"""Models by name: every torchvision classifier, transformer LLMs from shipped configs, user files.

Everything is built on the meta device: no weights are downloaded or allocated, so a 70B model costs no RAM.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xpusim.names import suggest
from xpusim.workload.errors import ModelSpecError
from xpusim.workload.transformer import llm_configs

DEFAULT_IMAGE_SIZE = 224
DEFAULT_MAX_SEQ_LEN = 2048




@dataclass(frozen=True, kw_only=True)
class BuiltModel:
    """A model ready to capture, with inputs built for the requested batch and sizes."""

    name: str
    module: torch.nn.Module
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    family: str = "vision"
    """``vision``, ``causal-lm``, ``encoder`` or ``user``."""


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


TASK_FAMILIES = ("detection", "segmentation")
"""torchvision's detection and segmentation models, by name: built without any weights (``weights=None``,
``weights_backbone=None``: nothing is downloaded). Detectors run data-dependent code (``nonzero``, ``nms``) that the
meta device cannot, so ``analyze``'s default ``auto`` mode captures them eagerly with random weights."""


@functools.cache
def torchvision_task_names() -> dict[str, str]:
    """Detection and segmentation model names → their family."""
    import torchvision

    return {n: fam for fam in TASK_FAMILIES
            for n in torchvision.models.list_models(module=getattr(torchvision.models, fam))}


def model_names() -> list[str]:
    """Every name `build` accepts (besides ``file.py:factory``)."""
    return list(llm_configs()) + list(torchvision_names()) + list(torchvision_task_names())


def _suggest(name: str) -> str:
    close = suggest(name, model_names())
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}.{hint} Run 'xpusim models' for the list, or give file.py:factory."


def build(
    spec: str,
    *,
    batch: int = 1,
    input_shape: tuple[int, ...] | None = None,
    image_size: int | None = None,
    seq_len: int | None = None,
) -> BuiltModel:
    """Build ``spec`` (zoo name or ``path/to/file.py:factory``) on the meta device with example inputs."""
    if batch < 1:
        raise ModelSpecError(f"batch={batch} must be >= 1")
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        return _build_user(spec, batch=batch, input_shape=input_shape)
    if spec in llm_configs():
        return _build_llm(spec, batch=batch, seq_len=seq_len)
    if spec in torchvision_names():
        return _build_torchvision(spec, batch=batch, input_shape=input_shape, image_size=image_size)
    if spec in torchvision_task_names():
        return _build_torchvision(spec, batch=batch, input_shape=input_shape, image_size=image_size,
                                  no_weights=True)
    raise ModelSpecError(_suggest(spec))


def _build_torchvision(
    name: str, *, batch: int, input_shape: tuple[int, ...] | None, image_size: int | None, no_weights: bool = False
) -> BuiltModel:
    import torchvision

    kw: dict[str, Any] = {"weights": None, "weights_backbone": None} if no_weights else {}
    try:
        with torch.device("meta"):
            module = torchvision.models.get_model(name, **kw)
    except NotImplementedError:  # builders that compute widths with tensors (RegNet) cannot run under meta
        with _params_to_meta():
            module = torchvision.models.get_model(name, **kw)
    if input_shape is None:
        size = image_size or DEFAULT_IMAGE_SIZE
        input_shape = (batch, 3, size, size)
    return BuiltModel(name=name, module=module, args=(torch.empty(input_shape, device="meta"),))


@contextlib.contextmanager
def _params_to_meta() -> Iterator[None]:
    """Build on the CPU but turn every parameter and buffer into meta the moment it is registered.

    Only one layer's weights ever exist in memory, and weight initialisation runs on meta (free).
    """
    orig_param, orig_buffer = torch.nn.Module.register_parameter, torch.nn.Module.register_buffer

    def register_parameter(self: torch.nn.Module, name: str, param: Any) -> None:
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        orig_param(self, name, param)

    def register_buffer(self: torch.nn.Module, name: str, tensor: Any, persistent: bool = True) -> None:
        if tensor is not None and tensor.device.type != "meta":
            tensor = tensor.to("meta")
        orig_buffer(self, name, tensor, persistent)

    torch.nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
    torch.nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = orig_param  # type: ignore[method-assign]
        torch.nn.Module.register_buffer = orig_buffer  # type: ignore[method-assign]


MOE_MODEL_TYPES = ("mixtral", "qwen3_moe", "deepseek_v2", "deepseek_v3")
"""Hugging Face model types built in bf16 (their experts run as one grouped GEMM)."""


def _build_llm(name: str, *, batch: int, seq_len: int | None) -> BuiltModel:
    entry = llm_configs()[name]
    cfg = dict(entry["config"])
    model_type = cfg.pop("model_type")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = AutoConfig.for_model(model_type, **cfg)
    max_len = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 0)
    if seq_len is None:
        seq_len = min(DEFAULT_MAX_SEQ_LEN, max_len) if max_len else DEFAULT_MAX_SEQ_LEN
    if seq_len < 1 or (max_len and seq_len > max_len):
        raise ModelSpecError(f"seq_len={seq_len} is outside 1..{max_len} (the max_position_embeddings of {name})")
    task = entry.get("task", "causal-lm")
    # PyTorch's grouped GEMM (a mixture of experts' experts) has bf16 kernels only, on meta too
    dtype = torch.bfloat16 if model_type in MOE_MODEL_TYPES else None
    with torch.device("meta"):
        if task == "causal-lm":
            module = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
        else:
            module = AutoModel.from_config(config, attn_implementation="sdpa", add_pooling_layer=False)
    ids = torch.empty((batch, seq_len), dtype=torch.long, device="meta")
    # transformers 5.x: a causal LM's forward on meta with use_cache=False calls .item() while looking for packed
    # sequences; with the cache on it runs and the FLOPs are the same (no past tokens).
    kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": True} if task == "causal-lm" else {"input_ids": ids}
    return BuiltModel(name=name, module=module, args=(), kwargs=kwargs, family=task)


def call_user_factory(spec: str, error: type[ValueError] = ValueError, kind: str = "model") -> Any:
    """``file.py:factory``: import the file the user named and return ``factory()`` (user code runs only
    because the user named it). Every failure is an ``error`` naming the file, the name and what went wrong."""
    path_s, sep, factory_name = spec.rpartition(":")
    if not sep or not path_s.endswith(".py"):
        raise error(f"{spec!r}: expected file.py:factory")
    path = Path(path_s)
    if not path.is_file():
        raise error(f"{kind} file {path_s!r} does not exist")
    if not factory_name.isidentifier():
        raise error(f"factory {factory_name!r} in {spec!r} is not a Python name")
    mod_name = f"xpusim_user_{abs(hash(path.resolve()))}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise error(f"cannot import {path_s!r} as a Python file")
    user_mod = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = user_mod
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # the file's own folder, so it can import its siblings
    try:
        loader_spec.loader.exec_module(user_mod)
    except Exception as exc:
        raise error(f"importing {path_s} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    factory: Callable[[], Any] | None = getattr(user_mod, factory_name, None)
    if not callable(factory):
        names = [n for n, v in vars(user_mod).items() if callable(v) and not n.startswith("_")]
        raise error(f"{path_s} has no callable {factory_name!r}; callables there: {', '.join(sorted(names)) or 'none'}")
    try:
        return factory()
    except Exception as exc:
        raise error(f"{spec}() raised {type(exc).__name__}: {exc}") from exc


def _build_user(spec: str, *, batch: int, input_shape: tuple[int, ...] | None) -> BuiltModel:
    """``file.py:factory``: the factory returns a module, a ``(module, example_inputs)`` pair or a ``(module,
    example_inputs, example_kwargs)`` triple (encoder-decoder models take keyword inputs). Without example inputs
    the user must give ``input_shape``."""
    made: Any = call_user_factory(spec, ModelSpecError)
    example: Any = None
    kwargs: dict[str, Any] = {}
    if isinstance(made, tuple) and len(made) in (2, 3) and isinstance(made[0], torch.nn.Module):
        if len(made) == 3:
            if not isinstance(made[2], dict):
                raise ModelSpecError(f"{spec}() returned a triple whose third item is {type(made[2]).__name__}, "
                                     "expected a dict of keyword inputs")
            kwargs = dict(made[2])
        made, example = made[0], made[1]
    if not isinstance(made, torch.nn.Module):
        raise ModelSpecError(f"{spec}() returned {type(made).__name__}, expected a torch.nn.Module")
    if input_shape is not None:
        example = torch.empty(input_shape, device="meta")
    if example is None and not kwargs:
        raise ModelSpecError(f"{spec}: give --input-shape (e.g. 1,3,224,224) or return (model, example_inputs)")
    args = () if example is None else example if isinstance(example, tuple) else (example,)
    if input_shape is None and batch != 1:
        args = tuple(_rebatch(a, batch) for a in args)
        kwargs = {k: _rebatch(v, batch) for k, v in kwargs.items()}
    return BuiltModel(name=spec, module=made, args=args, kwargs=kwargs, family="user")


def _rebatch(t: Any, batch: int) -> Any:
    """``t`` with ``batch`` rows: real tensors keep their values (rows repeated), so an eager run sees the
    factory's own data."""
    if isinstance(t, torch.Tensor) and t.dim() >= 1:
        if t.device.type == "meta" or t.shape[0] == 0:
            return torch.empty((batch, *t.shape[1:]), dtype=t.dtype, device="meta")
        reps = -(-batch // t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:batch]
    return t
