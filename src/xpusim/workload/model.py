"""`OpCost` (one dispatched op) and `Workload` (an ordered list of them), with aggregation and export."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from xpusim.precision import element_bytes

Shape = tuple[int, ...]

KINDS = (
    "matmul",
    "conv",
    "attention",
    "rnn",
    "norm",
    "softmax",
    "activation",
    "elementwise",
    "pool",
    "reduction",
    "embedding",
    "memory",
    "fused",
)
"""Op kinds, from matrix-engine work (matmul, conv, attention, rnn) to pure data movement (memory)."""

PHASES = ("forward", "backward")


FLOAT_CAPTURES = ("float32", "float16", "bfloat16")
"""Captures `Workload.retyped` rescales to narrower formats."""

SWEEP_PARAMS = ("batch", "seq-len", "image-size")
"""What ``analyze`` can sweep: how cost grows with batch, sequence length or image size."""

@dataclass(frozen=True, kw_only=True, slots=True)
class OpCost:
    """Cost of one dispatched (aten-level) operator."""

    name: str
    """Unique row name: module path, then the short op name, then ``#k`` for the k-th such op in that module."""
    module: str
    """Dotted module path of the innermost module that issued the op (``""`` for the model's own forward)."""
    op: str
    """The aten overload, e.g. ``aten.convolution.default``."""
    kind: str
    """One of `KINDS`."""
    phase: str = "forward"
    """``forward`` or ``backward``."""
    input_shapes: tuple[Shape, ...] = ()
    """Shapes of the tensor arguments, in argument order (NCHW for convolutions, (B, S, H) for sequences)."""
    output_shape: Shape = ()
    """Shape of the first tensor output."""
    dtype: str = "float32"
    """Dtype of the first floating-point tensor argument (the op's compute dtype)."""
    macs: int = 0
    """Multiply-accumulates of matmul-like work (conv, matmul, attention, rnn)."""
    flops: int = 0
    """All floating-point operations: 2 per MAC plus the documented per-element counts of `formulas`."""
    params: int = 0
    """Elements of model parameters this op reads."""
    weight_bytes: int = 0
    """Bytes read from parameters and buffers (the model's state)."""
    activation_bytes_read: int = 0
    """Bytes read from everything else (activations, gradients, masks, indices)."""
    bytes_written: int = 0
    """Bytes of the tensor outputs (for in-place ops, the tensor written)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"OpCost.kind={self.kind!r} is not one of {', '.join(KINDS)}")
        if self.phase not in PHASES:
            raise ValueError(f"OpCost.phase={self.phase!r} is not one of {', '.join(PHASES)}")
        for name in ("macs", "flops", "params", "weight_bytes", "activation_bytes_read", "bytes_written"):
            if getattr(self, name) < 0:
                raise ValueError(f"OpCost.{name}={getattr(self, name)} must be >= 0")

    @property
    def bytes_read(self) -> int:
        return self.weight_bytes + self.activation_bytes_read

    @property
    def bytes_total(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOPs per byte moved (read + written); 0 for an op that moves nothing."""
        total = self.bytes_total
        return self.flops / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shapes"] = [list(s) for s in self.input_shapes]
        d["output_shape"] = list(self.output_shape)
        d["bytes_read"] = self.bytes_read
        d["intensity"] = self.intensity
        return d


@dataclass(frozen=True, kw_only=True, slots=True)
class Totals:
    """Sums over a workload's ops (``params`` is the model's own count, each parameter once)."""

    macs: int
    flops: int
    params: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int
    """Bytes read from parameters and buffers, summed over ops (a weight read twice counts twice)."""
    activation_bytes: int
    """Every other byte moved: activations read plus all bytes written."""

    @property
    def intensity(self) -> float:
        total = self.bytes_read + self.bytes_written
        return self.flops / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["intensity"] = self.intensity
        return d


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """An ordered list of `OpCost` captured from one run of a model, with what could not be costed."""

    model: str
    """The model's name as the user gave it (or its class name)."""
    mode: str = "inference"
    """``inference`` (forward only) or ``training`` (forward and backward)."""
    dtype: str = "float32"
    input_shapes: tuple[Shape, ...] = ()
    ops: tuple[OpCost, ...] = ()
    params: int = 0
    """Number of parameters of the model (each counted once)."""
    uncounted: Mapping[str, int] = field(default_factory=dict)
    """aten ops with no cost formula, with how many times each ran. Never silently zero: they are listed here."""
    free_ops: Mapping[str, int] = field(default_factory=dict)
    """View and metadata ops (no arithmetic, no data movement) with their counts."""
    notes: tuple[str, ...] = ()
    """How the capture was made when it differs from the default (e.g. run eagerly because meta could not)."""

    def totals(self, phase: str | None = None) -> Totals:
        ops = self.ops if phase is None else [o for o in self.ops if o.phase == phase]
        weight = sum(o.weight_bytes for o in ops)
        act_read = sum(o.activation_bytes_read for o in ops)
        written = sum(o.bytes_written for o in ops)
        return Totals(
            macs=sum(o.macs for o in ops),
            flops=sum(o.flops for o in ops),
            params=self.params,
            bytes_read=weight + act_read,
            bytes_written=written,
            weight_bytes=weight,
            activation_bytes=act_read + written,
        )

    def by_kind(self) -> dict[str, Totals]:
        """Totals per op kind, in `KINDS` order."""
        out: dict[str, Totals] = {}
        for kind in KINDS:
            sub = [o for o in self.ops if o.kind == kind]
            if sub:
                out[kind] = replace(self, ops=tuple(sub)).totals()
        return out

    def grouped(self, depth: int) -> list[OpCost]:
        """Ops merged per module path truncated to ``depth`` components (and per phase), in first-seen order.

        A merged row keeps the kind of its op with the most FLOPs and the shapes of its first op.
        """
        if depth < 0:
            raise ValueError(f"depth={depth} must be >= 0")
        groups: dict[tuple[str, str], list[OpCost]] = {}
        for o in self.ops:
            key = (".".join(o.module.split(".")[:depth]) if o.module else "", o.phase)
            groups.setdefault(key, []).append(o)
        rows = []
        for (module, phase), ops in groups.items():
            main = max(ops, key=lambda o: o.flops)
            rows.append(
                OpCost(
                    name=(module or "(model)") + ("" if phase == "forward" else " [bwd]"),
                    module=module,
                    op=f"{len(ops)} ops" if len(ops) > 1 else ops[0].op,
                    kind=main.kind,
                    phase=phase,
                    input_shapes=ops[0].input_shapes,
                    output_shape=ops[-1].output_shape,
                    dtype=ops[0].dtype,
                    macs=sum(o.macs for o in ops),
                    flops=sum(o.flops for o in ops),
                    params=sum(o.params for o in ops),
                    weight_bytes=sum(o.weight_bytes for o in ops),
                    activation_bytes_read=sum(o.activation_bytes_read for o in ops),
                    bytes_written=sum(o.bytes_written for o in ops),
                )
            )
        return rows

    def retyped(self, dtype: str, bits: int, act_bits: int | None = None) -> Workload:
        """The same ops computed in ``dtype`` with weights stored at ``bits`` and activations at ``act_bits``
        (default ``bits``): int8 from a float16 capture, a W4A8 variant from a float32 one.

        Bytes scale from the capture's own floating-point width (``bits / 16`` for a float16 capture).
        NB: integer tensors (indices) are scaled too, a small overestimate of the savings.
        """
        if self.dtype not in FLOAT_CAPTURES:
            raise ValueError(f"retyped() expects a floating-point capture ({', '.join(FLOAT_CAPTURES)}), "
                             f"not {self.dtype}")
        source_bits = 8 * element_bytes(self.dtype)
        fw, fa = bits / source_bits, (bits if act_bits is None else act_bits) / source_bits
        ops = tuple(replace(o, dtype=dtype, weight_bytes=round(o.weight_bytes * fw),
                            activation_bytes_read=round(o.activation_bytes_read * fa),
                            bytes_written=round(o.bytes_written * fa)) for o in self.ops)
        return replace(self, dtype=dtype, ops=ops)

    def summary(self) -> str:
        """The totals in words (what ``xpusim analyze`` prints under its tables)."""
        tot = self.totals()
        lines = [f"totals: {tot.macs:,} MACs, {tot.flops:,} FLOPs, {tot.params:,} params, {tot.bytes_read:,} B read "
                 f"({tot.weight_bytes:,} weights), {tot.bytes_written:,} B written, intensity {tot.intensity:.2f} "
                 "FLOP/B"]
        if self.mode == "training":
            fwd, bwd = self.totals("forward"), self.totals("backward")
            ratio = bwd.macs / fwd.macs if fwd.macs else 0.0
            lines.append(f"forward {fwd.macs:,} MACs, backward {bwd.macs:,} MACs (backward/forward = {ratio:.3f})")
        lines.extend(f"note: {n}" for n in self.notes)
        if self.uncounted:
            listed = ", ".join(f"{k} ×{v}" for k, v in self.uncounted.items())
            lines.append(f"uncounted ops (no cost formula; not included above): {listed}")
        else:
            lines.append("uncounted ops: none")
        return "\n".join(lines)

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        ops = self.ops if depth is None else self.grouped(depth)
        d: dict[str, Any] = {
            "model": self.model,
            "mode": self.mode,
            "dtype": self.dtype,
            "input_shapes": [list(s) for s in self.input_shapes],
            "totals": self.totals().to_dict(),
            "layers": [o.to_dict() for o in ops],
            "uncounted": dict(self.uncounted),
            "free_ops": dict(self.free_ops),
        }
        if self.mode == "training":
            d["totals_by_phase"] = {p: self.totals(p).to_dict() for p in PHASES}
        if self.notes:
            d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Workload:
        """The inverse of ``to_dict()`` (ungrouped): derived fields (totals, bytes_read, intensity) are recomputed."""
        fields = set(OpCost.__dataclass_fields__)
        ops = []
        for row in d["layers"]:
            kw = {k: v for k, v in row.items() if k in fields}
            kw["input_shapes"] = tuple(tuple(s) for s in kw.get("input_shapes", ()))
            kw["output_shape"] = tuple(kw.get("output_shape", ()))
            ops.append(OpCost(**kw))
        return cls(model=d["model"], mode=d["mode"], dtype=d["dtype"],
                   input_shapes=tuple(tuple(s) for s in d["input_shapes"]), ops=tuple(ops),
                   params=int(d["totals"]["params"]), uncounted=dict(d["uncounted"]), free_ops=dict(d["free_ops"]),
                   notes=tuple(d.get("notes", ())))

    def to_json(self, depth: int | None = None, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(depth), indent=indent)

    def to_csv(self, depth: int | None = None) -> str:
        """One row per op (or per module group), the contract's layer fields as columns."""
        ops = self.ops if depth is None else self.grouped(depth)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for o in ops:
            d = o.to_dict()
            d["input_shapes"] = " ".join("x".join(map(str, s)) for s in o.input_shapes)
            d["output_shape"] = "x".join(map(str, o.output_shape))
            writer.writerow([d[c] for c in CSV_COLUMNS])
        return buf.getvalue()


CSV_COLUMNS = (
    "name",
    "module",
    "op",
    "kind",
    "phase",
    "input_shapes",
    "output_shape",
    "dtype",
    "macs",
    "flops",
    "params",
    "bytes_read",
    "weight_bytes",
    "activation_bytes_read",
    "bytes_written",
    "intensity",
)


def count_names(names: Iterable[str]) -> dict[str, int]:
    """Counts, most frequent first."""
    return dict(Counter(names).most_common())
