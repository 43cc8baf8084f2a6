"""Capture a model's aten ops at the dispatcher and cost each one.

Runs the model under a `TorchDispatchMode`, by default on the meta device (no memory, no arithmetic: a 70B
model costs nothing to "run"), and turns every op into an `OpCost` with the path of the module that issued it.

Why it is fast:

* Costs are memoized per (op, argument shapes/strides/dtypes, weight-ness, scalars) within one capture:
  a ResNet's 16 identical bottleneck convolutions are costed once.
* On the meta device, a repeated op whose outputs are fresh tensors is not re-run: its outputs are rebuilt
  from the recorded shapes and strides. PyTorch's meta kernels for batch norm and convolution are Python
  decompositions costing ~2 ms each; rebuilding an empty meta tensor costs ~4 µs.
* The model is moved to meta without copying it: meta stand-ins replace its parameters and buffers for the
  duration of the call and the originals are put back afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from xpusim.units import dtype_name
from xpusim.workload.errors import CaptureError
from xpusim.workload.formulas import (
    FORMULAS,
    FREE_OPS,
    Cost,
    Formula,
    packed_bytes,
    sparse_storage_bytes,
    unpack_weights,
)
from xpusim.workload.model import OpCost, Shape, Workload

Tensor = torch.Tensor
PARAM, BUFFER = 1, 2
_INPLACE = ("inplace",)
_ALLOCATIONS = frozenset(("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"))
_MODULE_KEY = "xpusim_module"
MODES = ("inference", "training")
DEVICES = ("meta", "eager")




@dataclass(frozen=True, slots=True)
class _OpInfo:
    """What the capture needs to know about one aten overload, resolved once per capture."""

    short: str
    formula: Formula | None
    free: bool
    fresh_outputs: bool
    """All outputs are new tensors (no aliasing, no in-place): safe to rebuild from shapes on meta."""
    inplace_self: bool
    """An in-place op that returns its mutated first argument (``relu_``, ``add_``)."""
    fast_meta: Callable[[Sequence[Any]], Any] | None
    """Our own output builder for a fresh-output op on meta (see `FAST_META`)."""


@dataclass(frozen=True, slots=True)
class _Costed:
    """Memoized cost of one op signature (everything of `OpCost` but its place in the model)."""

    op: str
    short: str
    kind: str
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    dtype: str
    macs: int
    flops: int
    params: int
    weight_bytes: int
    activation_bytes_read: int
    bytes_written: int


def _batch_norm_meta(args: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor]:
    """Outputs of the batch-norm family on meta: like the input, plus (C,) statistics in at least float32."""
    x = args[0]
    stats_dtype = torch.promote_types(x.dtype, torch.float32)
    c = x.shape[1] if x.dim() > 1 else x.shape[0]
    return (torch.empty_like(x), torch.empty((c,), dtype=stats_dtype, device="meta"),
            torch.empty((c,), dtype=stats_dtype, device="meta"))


def _conv_meta(args: Sequence[Any]) -> Tensor:
    """aten.convolution's output for contiguous input and weight (PyTorch's size rule, contiguous result)."""
    x, w, _, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    n_sp = x.dim() - 2
    if not (x.is_contiguous() and w.is_contiguous()):  # other layouts: PyTorch's meta kernel picks the format
        return torch.ops.aten.convolution.default(*args)
    stride, padding, dilation = (list(v) * n_sp if len(v) == 1 else list(v) for v in (stride, padding, dilation))
    if transposed:
        output_padding = list(output_padding) * n_sp if len(output_padding) == 1 else list(output_padding)
        c_out = w.shape[1] * groups
        spatial = [(x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[2 + i] - 1)
                   + output_padding[i] + 1 for i in range(n_sp)]
    else:
        c_out = w.shape[0]
        spatial = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
                   for i in range(n_sp)]
    return torch.empty((x.shape[0], c_out, *spatial), dtype=x.dtype, device="meta")


def _unary_meta(args: Sequence[Any]) -> Tensor:
    return torch.empty_like(args[0])


FAST_META: dict[str, Callable[[Sequence[Any]], Any]] = {
    "convolution": _conv_meta,
    **dict.fromkeys(("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training"),
                    _batch_norm_meta),
    **dict.fromkeys("relu relu6 gelu silu sigmoid tanh hardswish hardsigmoid hardtanh elu leaky_relu mish".split(),
                    _unary_meta),
}
"""Output shapes computed here instead of by PyTorch's meta kernels, which for these ops are Python
decompositions costing 0.3–3 ms per call. Each must equal the meta kernel's (tests check shape, strides, dtype)."""


def _resolve(func: Any) -> _OpInfo:
    short = func._overloadpacket.__name__ if hasattr(func, "_overloadpacket") else str(func)
    namespace = getattr(func, "namespace", "aten")
    if namespace not in ("aten", "prims", "prim", "torchvision") and f"{namespace}::{short}" in FORMULAS:
        short = f"{namespace}::{short}"  # e.g. quantized::linear, apart from aten's linear
    schema = getattr(func, "_schema", None)
    fresh = inplace = False
    if schema is not None:
        fresh = all(r.alias_info is None for r in schema.returns) and not any(
            a.alias_info is not None and a.alias_info.is_write for a in schema.arguments
        )
        args0 = schema.arguments[0] if schema.arguments else None
        inplace = (
            len(schema.returns) == 1
            and args0 is not None
            and args0.alias_info is not None
            and args0.alias_info.is_write
            and schema.returns[0].alias_info is not None
            and schema.returns[0].alias_info.before_set == args0.alias_info.before_set
            and not any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments[1:])
        )
    free = short in FREE_OPS
    formula = FORMULAS.get(short)
    if formula is None and short.endswith("_"):  # in-place variant (relu_, add_) costs what its functional form does
        formula = FORMULAS.get(short[:-1])
    fast = FAST_META.get(short) if fresh else None
    return _OpInfo(short, None if free else formula, free, fresh and not free, inplace and not free, fast)


def _phys_bytes(t: Tensor) -> int:
    """Bytes a tensor really occupies: broadcast (stride-0) dimensions hold one copy."""
    if t.is_nested:
        return int(sum(_phys_bytes(c) for c in t.unbind()))
    if t.layout != torch.strided:  # sparse: values and indices (CSR and friends have no strides)
        return sparse_storage_bytes(t)
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            n *= size
    return n * t.element_size()


def _packed_params(model: torch.nn.Module) -> int:
    """Parameters held in quantized layers' prepacked weights (not `nn.Parameter`s, so ``parameters()`` misses
    them)."""
    n = 0
    for m in model.modules():
        packed = getattr(m, "_packed_params", None)
        if isinstance(packed, torch.ScriptObject):
            try:
                w, b = unpack_weights(packed)
            except ValueError:
                continue
            n += w.numel() + (b.numel() if b is not None else 0)
    return n


def _describe(args: Sequence[Any], tags: Mapping[int, tuple[int, Tensor]]) -> tuple[Any, ...]:
    """Hashable signature of an argument list: tensors by shape, stride, dtype and weight tag; lists as tuples.

    Hot path (once per op): flat loop, no recursion for the common cases (tensors, int lists, scalars).
    """
    out: list[Any] = []
    for x in args:
        if isinstance(x, Tensor):
            if x.is_nested:
                out.append(("nested", id(x)))
                continue
            if x.layout != torch.strided:  # sparse: no strides; its cost depends on the stored elements
                out.append((x.shape, str(x.layout), x._nnz(), x.dtype, id(x)))
                continue
            tag = tags.get(id(x))
            out.append((x.shape, x.stride(), x.dtype, tag[0] if tag else 0))
        elif isinstance(x, (list, tuple)):
            out.append(_describe(x, tags) if any(isinstance(v, (Tensor, list, tuple)) for v in x) else tuple(x))
        else:
            out.append(x)
    return tuple(out)


def _under(module: str, roots: Sequence[str]) -> str | None:
    """The root in ``roots`` that ``module`` is (or is inside of), if any."""
    for r in roots:
        if module == r or module.startswith(r + "."):
            return r
    return None


def _weights_once_per_rnn_call(records: list[tuple[str, str, _Costed]],
                               reads: Mapping[int, tuple[int, list[tuple[int, int]]]],
                               roots: Sequence[str]) -> list[tuple[str, str, _Costed]]:
    """One convention for recurrent layers in both modes: a call of an RNN/LSTM/GRU reads each weight once, as a
    fused RNN kernel does (eager CPU/GPU runs ``mkldnn_rnn_layer``/``_cudnn_rnn``), not once per time step as the
    per-step ``addmm``s of the meta decomposition would count. The ops of one call of a recurrent module (and
    phase) are one fused kernel: later reads of a weight in it cost no weight bytes, and a step's gate GEMMs and
    gate arithmetic keep their MACs and FLOPs but move no activations (they stay on chip). What moves is the
    weights (once per call) and the layer's inputs and outputs (the stack/cat/copy ops around the steps)."""
    out = []
    current: tuple[str | None, str, int] = (None, "", -1)
    seen: set[int] = set()
    for i, (module, phase, c) in enumerate(records):
        root = _under(module, roots)
        call, read = reads.get(i, (-1, []))
        if root is None:
            out.append((module, phase, c))
            continue
        if (root, phase, call) != current:
            current, seen = (root, phase, call), set()
        again = sum(b for wid, b in read if wid in seen)
        seen.update(wid for wid, _ in read)
        if c.kind in ("matmul", "elementwise", "activation"):  # a step's gates stay on chip in a fused kernel
            c = replace(c, activation_bytes_read=0, bytes_written=0)
        out.append((module, phase, replace(c, weight_bytes=c.weight_bytes - again) if again else c))
    return out


def _tensors(args: Sequence[Any]) -> list[Tensor]:
    out: list[Tensor] = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(v for v in a if isinstance(v, Tensor))
    return out


def _spec(out: Any) -> Any:
    if isinstance(out, Tensor):
        return ("T", tuple(out.shape), out.stride(), out.dtype)
    if isinstance(out, (tuple, list)):
        return (type(out), tuple(_spec(o) for o in out))
    return ("V", out)


def _rebuild(spec: Any) -> Any:
    if spec[0] == "T":
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device="meta")
    if spec[0] == "V":
        return spec[1]
    return spec[0](_rebuild(s) for s in spec[1])


class _Recorder(TorchDispatchMode):
    """Dispatch mode that costs every op and records it with the current module path and phase."""

    def __init__(self, tags: dict[int, tuple[int, Tensor]], stack: list[str], track_backward: bool) -> None:
        super().__init__()
        self.tags = tags
        self.stack = stack
        self.track_backward = track_backward
        self.infos: dict[Any, _OpInfo] = {}
        self.costs: dict[Any, tuple[_Costed, Any]] = {}
        self.records: list[tuple[str, str, _Costed]] = []
        self.uncounted: Counter[str] = Counter()
        self.free: Counter[str] = Counter()
        self.rnn_roots: tuple[str, ...] = ()
        """Paths of the model's recurrent modules (nn.RNNBase): their weight reads are tracked per call."""
        self.weight_reads: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        """Record index → (the call of its recurrent module, [(weight tensor id, bytes) read])."""
        self.entered: dict[str, int] = {}
        """Module path → the number of its latest call (module entries counted in order)."""
        self.last_op: Any = None
        self.last_module = ""
        """The op dispatched last and the module it ran in: where a failing forward raised."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        self.last_op, self.last_module = func, self.stack[-1]
        info = self.infos.get(func)
        if info is None:
            info = self.infos[func] = _resolve(func)
        if info.free:
            out = func(*args, **kwargs)
            self.free[info.short] += 1
            if info.short not in _ALLOCATIONS:  # a view of a weight is a weight; a new buffer shaped like one is not
                self._propagate_tags(args, out)
            return out
        if info.formula is None:
            self.uncounted[str(func)] += 1
            return func(*args, **kwargs)
        key = (func, _describe(args, self.tags), _describe(list(kwargs.items()), self.tags) if kwargs else ())
        hit = self.costs.get(key)
        if hit is None:
            if info.fast_meta is not None and args[0].device.type == "meta" and args[0].dim() >= 2:
                out = info.fast_meta(args)
            else:
                out = func(*args, **kwargs)
            on_meta = all(t.device.type == "meta" for t in tree_leaves(out) if isinstance(t, Tensor))
            spec = _INPLACE if on_meta and info.inplace_self else _spec(out) if on_meta and info.fresh_outputs else None
            hit = self.costs[key] = (self._cost(func, info, args, kwargs, out), spec)
        elif hit[1] is None:
            out = func(*args, **kwargs)
        elif hit[1] is _INPLACE:  # a meta in-place op changes nothing but returns its first argument
            out = args[0]
        else:
            out = _rebuild(hit[1])
        if hit[0].kind == "memory":
            self._propagate_tags(args, out, all_inputs=True)
        module, phase = self.stack[-1], "forward"
        if self.track_backward:
            node = torch._C._current_autograd_node()
            if node is not None:
                phase = "backward"
                module = _node_metadata(node).get(_MODULE_KEY, "")
        if self.rnn_roots and (root := _under(module, self.rnn_roots)) is not None:
            self.weight_reads[len(self.records)] = (self.entered.get(root, 0), [  # a view of a weight is the weight
                (id(t if t._base is None else t._base), _phys_bytes(t)) for t in _tensors(args) if id(t) in self.tags])
        self.records.append((module, phase, hit[0]))
        return out

    def _propagate_tags(self, args: Sequence[Any], out: Any, all_inputs: bool = False) -> None:
        """Views (and copies) of weights are weights: linear's ``weight.t()`` must still count as weight bytes."""
        tags = self.tags
        ins = [tags.get(id(t)) for t in _tensors(args)]
        if not ins:
            return
        tag = ins[0] if all_inputs else next((t for t in ins if t is not None), None)
        if tag is None or (all_inputs and any(t is None for t in ins)):
            return
        for o in tree_leaves(out):
            if isinstance(o, Tensor) and id(o) not in tags:
                tags[id(o)] = (tag[0], o)

    def _cost(self, func: Any, info: _OpInfo, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> _Costed:
        assert info.formula is not None
        cost: Cost = info.formula(tuple(args), kwargs, out)
        ins = _tensors(args) + _tensors(list(kwargs.values()))
        reads = ins if cost.reads is None else list(cost.reads)
        override = {id(t): b for t, b in cost.read_bytes_override or ()}
        weight_bytes = act_bytes = params = 0
        for w in cost.packed_weights:  # prepacked (quantized) weights: not tensors among the arguments
            weight_bytes += packed_bytes(w)
            params += w.numel()
        seen: set[int] = set()
        for t in reads:
            if id(t) in seen:
                continue
            seen.add(id(t))
            phys = _phys_bytes(t)
            nbytes = override.get(id(t), phys)
            tag = self.tags.get(id(t))
            if tag is None:
                act_bytes += nbytes
            else:
                weight_bytes += nbytes
                if tag[0] == PARAM:  # an expanded (broadcast) parameter still holds its own elements only
                    params += phys // max(t.element_size(), 1)
        written = 0
        seen.clear()
        outs = [o for o in tree_leaves(out) if isinstance(o, Tensor)]
        for o in outs:
            if id(o) not in seen:
                seen.add(id(o))
                written += _phys_bytes(o)
        floats = [t for t in ins if t.is_floating_point()]
        dtype = (floats or ins or outs)[0].dtype if (floats or ins or outs) else torch.float32
        return _Costed(
            op=str(func),
            short=info.short,
            kind=cost.kind,
            input_shapes=tuple(tuple(t.shape) if not t.is_nested else () for t in ins),
            output_shape=tuple(outs[0].shape) if outs and not outs[0].is_nested else (),
            dtype=dtype_name(dtype),
            macs=int(cost.macs),
            flops=int(cost.flops),
            params=params,
            weight_bytes=weight_bytes,
            activation_bytes_read=act_bytes,
            bytes_written=written,
        )


@contextlib.contextmanager
def _module_tracking(named: list[tuple[str, torch.nn.Module]], stack: list[str], tag_backward: bool,
                     entered: dict[str, int] | None = None) -> Iterator[None]:
    """Keep ``stack[-1]`` equal to the path of the innermost running module (global hooks, removed on exit)."""
    names: dict[int, str] = {}
    for n, m in named:
        names.setdefault(id(m), n)
    calls = itertools.count(1)

    def pre(mod: torch.nn.Module, args: Any) -> None:
        name = names.get(id(mod))
        if name is None:  # a module created on the fly, outside the model's tree
            parent = stack[-1]
            name = f"{parent}.{type(mod).__name__}" if parent else type(mod).__name__
        stack.append(name)
        if entered is not None:  # which call of a module an op belongs to
            entered[name] = next(calls)

    def post(mod: torch.nn.Module, args: Any, out: Any) -> None:
        name = stack.pop()
        if tag_backward and torch.is_grad_enabled():
            _tag_autograd_nodes(out, name)

    h1 = torch.nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = torch.nn.modules.module.register_module_forward_hook(post, always_call=True)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()


@contextlib.contextmanager
def _train_mode(model: torch.nn.Module, training: bool) -> Iterator[None]:
    """Set train/eval for the capture; restore the flags and any existing ``.grad`` afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()] if training else []
    if any(flag != training for _, flag in flags):
        model.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            if m.training != flag:
                m.training = flag
        for p, g in grads:
            p.grad = g


_MODULE_INTERNALS = frozenset(torch.nn.Module().__dict__) - {"training"}
"""nn.Module's own bookkeeping (hooks, parameter and buffer stores): restored by the contexts that change it."""
_STORES = ("_parameters", "_buffers", "_modules")


@contextlib.contextmanager
def _preserved_attributes(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Leave every module exactly as found, also when the forward fails: a forward that caches a tensor in a plain
    attribute (torchvision's ``AnchorGenerator.cell_anchors``, a lazily built positional table) or registers a
    buffer would otherwise keep a meta stand-in there, and every later real forward would fail.

    Restores attribute identity (a reassigned or added attribute), the contents of list and dict attributes, and
    the keys of the parameter, buffer and submodule stores."""
    unique = list({id(m): m for m in modules}.values())
    snapshots = []
    for mod in unique:
        attrs = {k: v for k, v in vars(mod).items() if k not in _MODULE_INTERNALS}
        contents = {k: (list(v) if isinstance(v, list) else dict(v)) for k, v in attrs.items()
                    if isinstance(v, list | dict)}
        stores = {k: dict(getattr(mod, k)) for k in _STORES}
        snapshots.append((mod, attrs, contents, stores))
    try:
        yield
    finally:
        for mod, attrs, contents, stores in snapshots:
            d = vars(mod)
            for k in [k for k in d if k not in _MODULE_INTERNALS and k not in attrs]:
                del d[k]  # added during the forward
            for k, v in attrs.items():
                if d.get(k) is not v:
                    d[k] = v
                if k in contents:
                    saved = contents[k]
                    if isinstance(v, list) and v != saved:
                        v[:] = saved  # type: ignore[index]
                    elif isinstance(v, dict) and (v.keys() != saved.keys()  # type: ignore[union-attr]
                                                  or any(v[x] is not saved[x] for x in saved)):  # type: ignore[index]
                        v.clear()
                        v.update(saved)  # type: ignore[arg-type]
            for k, saved_store in stores.items():
                store = getattr(mod, k)
                for key in [key for key in store if key not in saved_store]:
                    del store[key]


@contextlib.contextmanager
def _swapped_state(
    modules: list[torch.nn.Module],
    to_meta: bool,
    dtype: torch.dtype | None,
    training: bool,
    tags: dict[int, tuple[int, Tensor]],
) -> Iterator[None]:
    """Tag parameters and buffers as weights; with ``to_meta``, swap in meta stand-ins until exit.

    Swapping entries of ``_parameters``/``_buffers`` directly is ~50× cheaper than `torch.func.functional_call`
    (which walks ``named_modules`` per tensor); tied weights stay tied (one stand-in per original tensor).
    """
    saved: list[tuple[dict[str, Any], str, Tensor]] = []
    stand_ins: dict[int, Tensor] = {}
    seen: set[int] = set()
    for mod in modules:
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        stores: tuple[tuple[dict[str, Any], int], ...] = ((mod._parameters, PARAM), (mod._buffers, BUFFER))
        for store, tag in stores:
            for key, t in store.items():
                if t is None:
                    continue
                new = t
                if to_meta and not (t.device.type == "meta" and dtype in (None, t.dtype)):
                    cached = stand_ins.get(id(t))
                    if cached is None:
                        floating = t.is_floating_point()
                        cached = torch.empty_strided(t.shape, t.stride(), device="meta",
                                                     dtype=dtype if dtype is not None and floating else t.dtype)
                        if training and tag == PARAM and t.requires_grad:
                            cached.requires_grad_(True)
                        stand_ins[id(t)] = cached
                    new = cached
                    saved.append((store, key, t))
                    store[key] = new
                if id(new) not in tags:
                    tags[id(new)] = (tag, new)
    try:
        yield
    finally:
        for store, key, t in saved:
            store[key] = t


def _node_metadata(node: Any) -> dict[str, Any]:
    """The per-node scratch dict autograd keeps for users (a property at run time, typed as a method)."""
    md: dict[str, Any] = node.metadata
    return md


def _tag_autograd_nodes(out: Any, name: str) -> None:
    """Label the autograd nodes a module created with its path, so backward ops can be attributed to it.

    Post-hooks run innermost module first, so a node keeps the deepest module that produced it.
    """
    todo = [t.grad_fn for t in tree_leaves(out) if isinstance(t, Tensor) and t.grad_fn is not None]
    while todo:
        node = todo.pop()
        md = _node_metadata(node)
        if _MODULE_KEY in md:
            continue
        md[_MODULE_KEY] = name
        todo.extend(n for n, _ in node.next_functions if n is not None)


def _to_meta(x: Any, dtype: torch.dtype | None) -> Any:
    if isinstance(x, Tensor):
        dt = dtype if dtype is not None and x.is_floating_point() else x.dtype
        t = torch.empty_strided(tuple(x.shape), x.stride(), dtype=dt, device="meta")
        return t.requires_grad_(x.requires_grad)
    if isinstance(x, tuple):
        return tuple(_to_meta(v, dtype) for v in x)
    if isinstance(x, list):
        return [_to_meta(v, dtype) for v in x]
    if isinstance(x, dict):
        return {k: _to_meta(v, dtype) for k, v in x.items()}
    return x


def capture(
    model: torch.nn.Module | Callable[..., Any],
    example_inputs: Any = (),
    example_kwargs: Mapping[str, Any] | None = None,
    *,
    mode: str = "inference",
    device: str = "meta",
    dtype: torch.dtype | None = None,
    name: str | None = None,
) -> Workload:
    """Run ``model(*example_inputs, **example_kwargs)`` once and cost every aten op it dispatches.

    ``device="meta"`` (default) runs on meta stand-ins of the parameters, buffers and inputs: no memory and
    no arithmetic; the model object is not modified. ``device="eager"`` runs on the tensors as given, so
    PyTorch takes the same kernels as in a real run (e.g. the fused ``_native_multi_head_attention`` fast path).
    ``mode="training"`` sets train mode, runs forward and backward (gradient of ones for every floating
    output) and records backward ops with ``phase="backward"``, attributed to the module whose forward
    created them. ``dtype`` casts floating parameters and inputs (meta only).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not one of {', '.join(DEVICES)}")
    if dtype is not None and device != "meta":
        raise ValueError("dtype= casts only on device='meta'; cast the model yourself for device='eager'")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    # torch.compile'd modules: cost the original module (the ops are the same; the wrapper would try to compile).
    model = getattr(model, "_orig_mod", model) if type(model).__name__ == "OptimizedModule" else model
    kwargs = dict(example_kwargs or {})
    is_module = isinstance(model, torch.nn.Module)
    label: str = name or (type(model).__name__ if is_module else str(getattr(model, "__name__", "model")))
    training = mode == "training"

    tags: dict[int, tuple[int, Tensor]] = {}
    n_params = 0
    named: list[tuple[str, torch.nn.Module]] = []
    if isinstance(model, torch.nn.Module):
        named = list(model.named_modules(remove_duplicate=False))
        n_params = sum(p.numel() for p in model.parameters()) + _packed_params(model)
    if device == "meta":
        example_inputs = _to_meta(example_inputs, dtype)
        kwargs = _to_meta(kwargs, dtype)
    input_shapes = tuple(tuple(t.shape) for t in tree_leaves((example_inputs, kwargs)) if isinstance(t, Tensor))

    stack = [""]
    recorder = _Recorder(tags, stack, track_backward=training)
    recorder.rnn_roots = tuple(n for n, m in named if isinstance(m, torch.nn.RNNBase))
    try:
        with contextlib.ExitStack() as ctx:
            if isinstance(model, torch.nn.Module):
                ctx.enter_context(_preserved_attributes([m for _, m in named]))
                ctx.enter_context(_train_mode(model, training))
                ctx.enter_context(_swapped_state([m for _, m in named], device == "meta", dtype, training, tags))
                ctx.enter_context(_module_tracking(named, stack, training, recorder.entered))
            ctx.enter_context(torch.enable_grad() if training else torch.no_grad())
            with recorder:
                out = model(*example_inputs, **kwargs)
            if training:
                outs = [o for o in tree_leaves(out) if isinstance(o, Tensor) and o.grad_fn is not None]
                if not outs:
                    raise CaptureError(f"{label}: training mode needs an output that requires grad; none did")
                grads = [torch.ones_like(o) for o in outs]
                with recorder:
                    torch.autograd.backward(outs, grads)
    except CaptureError:
        raise
    except Exception as exc:  # the user's model raised: report it as one clear line, naming the layer and the op
        where = (f" in {recorder.last_module or 'the top module'} at {recorder.last_op}" if recorder.last_op
                 else "")
        raise CaptureError(f"{label} raised in {'forward/backward' if training else 'forward'}{where}: "
                           f"{type(exc).__name__}: {exc}".split("\n")[0]) from exc

    records = recorder.records
    if recorder.rnn_roots:
        records = _weights_once_per_rnn_call(records, recorder.weight_reads, recorder.rnn_roots)
    ops = _name_rows(records)
    first_float = next((t for t in tree_leaves((example_inputs, kwargs)) if isinstance(t, Tensor)
                        and t.is_floating_point()), None)
    first_param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if dtype is not None:
        wl_dtype = dtype
    elif first_param is not None:
        wl_dtype = first_param.dtype
    else:
        wl_dtype = first_float.dtype if first_float is not None else torch.float32
    return Workload(
        model=label,
        mode=mode,
        dtype=dtype_name(wl_dtype),
        input_shapes=input_shapes,
        ops=tuple(ops),
        params=n_params,
        uncounted=dict(recorder.uncounted.most_common()),
        free_ops=dict(recorder.free.most_common()),
    )


def _name_rows(records: list[tuple[str, str, _Costed]]) -> list[OpCost]:
    """Turn raw records into `OpCost`s named ``module/op`` (``#k`` from the second such op in a module on)."""
    seen: Counter[tuple[str, str, str]] = Counter()
    ops = []
    for module, phase, c in records:
        k = (module, c.short, phase)
        seen[k] += 1
        base = f"{module}/{c.short}" if module else c.short
        if phase == "backward":
            base += "[bwd]"
        ops.append(
            OpCost(
                name=base if seen[k] == 1 else f"{base}#{seen[k]}",
                module=module,
                op=c.op,
                kind=c.kind,
                phase=phase,
                input_shapes=c.input_shapes,
                output_shape=c.output_shape,
                dtype=c.dtype,
                macs=c.macs,
                flops=c.flops,
                params=c.params,
                weight_bytes=c.weight_bytes,
                activation_bytes_read=c.activation_bytes_read,
                bytes_written=c.bytes_written,
            )
        )
    return ops
