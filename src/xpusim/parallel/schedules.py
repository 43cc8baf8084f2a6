"""Pipeline schedules as data: per-rank ordered action lists, generated apart from any execution.

An action is ``{stage}{kind}{microbatch}`` (``0F1``, ``1B3``, ``0W2``), the form torch.distributed.pipelining
prints: F forward, B backward (input and weight gradients; input gradient only in schedules that also list W),
W weight gradient. Stage ``s`` of ``S = p·v`` stages lives on rank ``s mod p`` (Megatron's interleaving), so a
rank with v > 1 holds stages r, r+p, r+2p, ...
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["F", "B", "W"]
_ACTION = re.compile(r"^(\d+)([FBW])(\d+)$")


@dataclass(frozen=True, slots=True)
class Action:
    stage: int
    kind: Kind
    mb: int

    def __str__(self) -> str:
        return f"{self.stage}{self.kind}{self.mb}"

    @classmethod
    def parse(cls, text: str) -> Action:
        match = _ACTION.match(text.strip())
        if not match:
            raise ValueError(f"action {text!r} is not STAGE KIND MICROBATCH such as 0F1, 1B3, 0W2")
        return cls(int(match[1]), match[2], int(match[3]))  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class PipelineSchedule:
    name: str
    p: int
    m: int
    v: int
    ranks: tuple[tuple[Action, ...], ...]
    """Per pipeline rank, the actions in the order the rank runs them."""
    split_backward: bool
    """True when B is the input gradient only and W the weight gradient (zero-bubble schedules)."""
    placement: tuple[int, ...] | None = None
    """Rank of each stage when not Megatron's looping ``stage mod p`` (ZBV's V shape)."""

    @property
    def stages(self) -> int:
        return self.p * self.v

    def rank_of(self, stage: int) -> int:
        return self.placement[stage] if self.placement is not None else stage % self.p

    def compact(self) -> list[str]:
        """One line per rank: ``0F0 0F1 ... 0B0``."""
        return [" ".join(map(str, acts)) for acts in self.ranks]

    def peak_in_flight(self) -> list[int]:
        """Per rank, the most micro-batch chunks whose forward ran and whose activations are not yet freed
        (freed after B, or after W when the schedule splits the backward)."""
        return [round(x) for x in self.peak_live(lambda stage: 1.0)]

    def peak_live(self, weight: Callable[[int], float]) -> list[float]:
        """Per rank, the most of ``weight(stage)`` summed over the chunks in flight (`peak_in_flight` counts each
        as 1; the simulator weighs a chunk by its stage's layers)."""
        free_kind = "W" if self.split_backward else "B"
        peaks = []
        for acts in self.ranks:
            live = peak = 0.0
            for a in acts:
                live += weight(a.stage) if a.kind == "F" else -weight(a.stage) if a.kind == free_kind else 0.0
                peak = max(peak, live)
            peaks.append(peak)
        return peaks


def gpipe(p: int, m: int) -> PipelineSchedule:
    """GPipe: every forward, then every backward (Huang et al. 2019)."""
    ranks = tuple(tuple([Action(r, "F", j) for j in range(m)] + [Action(r, "B", j) for j in range(m)])
                  for r in range(p))
    return PipelineSchedule(name="gpipe", p=p, m=m, v=1, ranks=ranks, split_backward=False)


def one_f_one_b(p: int, m: int) -> PipelineSchedule:
    """1F1B (PipeDream-Flush): p − r − 1 warm-up forwards on rank r, then alternate, then drain."""
    ranks = []
    for r in range(p):
        warm = min(p - r - 1, m)
        acts = [Action(r, "F", j) for j in range(warm)]
        for i in range(m - warm):
            acts += [Action(r, "F", warm + i), Action(r, "B", i)]
        acts += [Action(r, "B", j) for j in range(m - warm, m)]
        ranks.append(tuple(acts))
    return PipelineSchedule(name="1f1b", p=p, m=m, v=1, ranks=tuple(ranks), split_backward=False)


def interleaved(p: int, m: int, v: int) -> PipelineSchedule:
    """Megatron-LM's interleaved 1F1B (Narayanan et al. 2021, §2.2.2): rank r runs v chunks (stages r + k·p);
    micro-batches go through the chunks in groups of p. Needs m to be a multiple of p."""
    if m % p:
        raise ValueError(f"interleaved schedule: m={m} micro-batches is not a multiple of p={p}")
    total = m * v

    def unit(k: int, forward: bool) -> tuple[int, int]:
        chunk = (k // p) % v
        return (chunk if forward else v - 1 - chunk), (k // (p * v)) * p + k % p

    ranks = []
    for r in range(p):
        warm = total if m == p else min((p - r - 1) * 2 + (v - 1) * p, total)
        acts: list[Action] = []

        def fwd(k: int, r: int = r) -> Action:
            chunk, mb = unit(k, True)
            return Action(chunk * p + r, "F", mb)

        def bwd(k: int, r: int = r) -> Action:
            chunk, mb = unit(k, False)
            return Action(chunk * p + r, "B", mb)

        acts += [fwd(k) for k in range(warm)]
        for i in range(total - warm):
            acts += [fwd(warm + i), bwd(i)]
        acts += [bwd(k) for k in range(total - warm, total)]
        ranks.append(tuple(acts))
    return PipelineSchedule(name="interleaved", p=p, m=m, v=v, ranks=tuple(ranks), split_backward=False)


def zb_h1(p: int, m: int) -> PipelineSchedule:
    """ZB-H1 (Qi et al., ICLR 2024, "Zero Bubble Pipeline Parallelism"): 1F1B with the backward split into the
    input gradient B (on the critical path) and the weight gradient W (off it). Rank r delays each W by r
    micro-batches, so the backward chain reaches the first rank sooner and the Ws fill the drain; every rank then
    holds at most p micro-batches' activations, 1F1B's peak. Bubble: (p − 1)(T_F + T_B − T_W) instead of 1F1B's
    (p − 1)(T_F + T_B + T_W)."""
    ranks = []
    for r in range(p):
        warm = min(p - r - 1, m)
        acts = [Action(r, "F", j) for j in range(warm)]
        w_next = 0
        for i in range(m):
            if warm + i < m:
                acts.append(Action(r, "F", warm + i))
            acts.append(Action(r, "B", i))
            if i - r >= w_next:
                acts.append(Action(r, "W", w_next))
                w_next += 1
        acts += [Action(r, "W", j) for j in range(w_next, m)]
        ranks.append(tuple(acts))
    return PipelineSchedule(name="zb-h1", p=p, m=m, v=1, ranks=tuple(ranks), split_backward=True)


def build(name: str, p: int, m: int, v: int = 1) -> PipelineSchedule:
    if name == "gpipe":
        return gpipe(p, m)
    if name == "1f1b":
        return one_f_one_b(p, m)
    if name == "interleaved":
        return interleaved(p, m, v)
    if name == "zb-h1":
        return zb_h1(p, m)
    raise ValueError(f"schedule {name!r} is not one of gpipe, 1f1b, interleaved, zb-h1")
