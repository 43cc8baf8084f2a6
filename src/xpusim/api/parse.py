"""Text forms of the API's arguments, as the CLI and study files write them (``1,3,224,224``, ``batch=1,8,32``,
``6144,6144,2048``, ``1.2,2.5``). Errors name the field as the API does; the CLI shows its option instead."""

from __future__ import annotations

from collections.abc import Sequence

from xpusim.errors import UserError
from xpusim.workload.model import SWEEP_PARAMS


def ints(text: str, field: str, count: int | None = None, example: str = "1,8,32") -> tuple[int, ...]:
    """Comma-separated positive integers (``x`` also separates: ``1x3x64x64``)."""
    try:
        values = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values) or (count is not None and len(values) != count):
        what = f"{count} " if count is not None else ""
        raise UserError(f"{field} {text!r}: expected {what}comma-separated positive integers such as {example}")
    return values


def shape(text: str | None) -> tuple[int, ...] | None:
    """``1,3,224,224`` → (1, 3, 224, 224)."""
    return None if text is None else ints(text, "input_shape", example="1,3,224,224")


def sweep(text: str) -> tuple[str, tuple[int, ...]]:
    """``batch=1,8,32`` → ("batch", (1, 8, 32))."""
    name, sep, values = text.partition("=")
    if not sep or name not in SWEEP_PARAMS:
        raise UserError(f"sweep {text!r}: expected PARAM=V1,V2,... with PARAM one of {', '.join(SWEEP_PARAMS)}")
    return name, ints(values, "sweep", example=f"{name}=1,8,32")


def sram_kib(text: str | None) -> tuple[int, ...] | None:
    """``6144,6144,2048`` → the ifmap, filter and ofmap SRAM sizes in KiB."""
    if text is None:
        return None
    try:
        return ints(text, "sram_kb", 3, "6144,6144,2048")
    except UserError:
        raise UserError(f"sram_kb {text!r}: expected three positive KiB sizes: ifmap,filter,ofmap") from None


def layer_ms(text: str | None) -> tuple[float, float] | None:
    """``1.2,2.5`` → measured (forward, backward) milliseconds of one layer."""
    if text is None:
        return None
    try:
        fwd, bwd = (float(x) for x in text.split(","))
    except ValueError:
        fwd = bwd = -1.0
    if not (fwd > 0 and bwd > 0):
        raise UserError(f"layer_ms {text!r}: expected two positive numbers FWD,BWD such as 1.2,2.5")
    return fwd, bwd


def array(text: str | Sequence[int], field_name: str = "array") -> tuple[int, int]:
    """``128x128`` or ``(128, 128)`` → (rows, cols) of a PE array."""
    if isinstance(text, str):
        rows_s, sep, cols_s = text.lower().partition("x")
        try:
            rows, cols = int(rows_s), int(cols_s)
        except ValueError:
            rows = cols = 0
        if not sep:
            rows = 0
    else:
        try:
            rows, cols = (int(v) for v in text)
        except (TypeError, ValueError):
            rows = cols = 0
    if rows < 1 or cols < 1:
        raise UserError(f"{field_name} {text!r}: expected ROWSxCOLS with positive sizes, e.g. 128x128")
    return rows, cols


def sparsity(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    n_s, _, m_s = text.partition(":")
    if not (n_s.isdigit() and m_s.isdigit()):
        raise UserError(f"sparsity {text!r}: expected N:M such as 2:4")
    return int(n_s), int(m_s)


SCHEDULE_HELP = "gpipe, 1f1b, interleaved:V (V virtual stages per rank, e.g. interleaved:2), zb-h1"


STAGE_SPLITS = {"embedding-loss": (True, True), "embedding": (True, False), "loss": (False, True)}


def stage_layers(text: str | Sequence[int] | None, layers: int, stages: int) -> tuple[int, ...]:
    """Layers per pipeline stage: ``embedding-loss`` (or ``embedding``, ``loss``: Megatron-LM's split counting
    them as layers, `megatron_split`), or the numbers per stage, ``NxK`` for N repeated K times: ``2,3x30,2``.
    None: even (empty)."""
    from xpusim.parallel.plan import megatron_split

    if text is None or text == "even":
        return ()
    if not isinstance(text, str):
        return tuple(int(x) for x in text)
    if text in STAGE_SPLITS:
        embedding, loss = STAGE_SPLITS[text]
        return megatron_split(layers, stages, embedding=embedding, loss=loss)
    out: list[int] = []
    try:
        for part in text.split(","):
            n, _, k = part.partition("x")
            out += [int(n)] * (int(k) if k else 1)
    except ValueError:
        out = [-1]
    if not out or min(out) < 0:
        raise UserError(f"stage_layers {text!r}: expected even, {', '.join(STAGE_SPLITS)} or layers per stage "
                        f"such as 2,3x30,2 (3x30: 3 repeated 30 times)")
    return tuple(out)


def schedule(text: str) -> tuple[str, int]:
    """``1f1b`` → ("1f1b", 1); ``interleaved:3`` → ("interleaved", 3) (``interleaved`` alone: 2)."""
    from xpusim.parallel.plan import SCHEDULES

    name, sep, v = text.partition(":")
    if name not in SCHEDULES:
        raise UserError(f"schedule {text!r}: expected one of {SCHEDULE_HELP}")
    if name == "interleaved":
        try:
            vp = int(v) if sep else 2
        except ValueError:
            vp = 0
        if vp < 2:
            raise UserError(f"schedule {text!r}: V must be an integer >= 2, e.g. interleaved:2")
        return name, vp
    if sep:
        raise UserError(f"schedule {text!r}: only interleaved takes :V")
    return name, 1
