"""Discrete-event execution of a pipeline schedule: each rank runs its actions in order; an action starts when
its rank is free and its inputs have arrived (the previous stage's forward, the next stage's backward, each plus
the point-to-point transfer when the stages sit on different ranks). Transfers are asynchronous and do not
occupy the sender's compute; links are not contended (NB: a simplification for one message per boundary)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xpusim.parallel.schedules import Action, PipelineSchedule


class DeadlockError(RuntimeError):
    """The schedule cannot finish: every unfinished rank waits for an action that never runs."""


@dataclass(frozen=True, slots=True)
class Event:
    rank: int
    name: str
    """``0F1`` for compute; ``dp-reduce`` etc. for communication."""
    kind: str
    """F, B, W, or a communication kind (tp, pp, dp)."""
    start_s: float
    end_s: float


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """What every pipeline rank did and when; one representative rank per pipeline stage (the dp and tp peers of
    a rank run the same actions at the same times)."""

    events: tuple[Event, ...]
    ranks: int
    busy_s: tuple[float, ...]
    """Compute time of each rank."""
    pipeline_end_s: float
    """When the last backward of the step finished."""
    step_s: float
    """Pipeline end plus exposed gradient reduction and the optimizer step."""

    @property
    def bubble_fraction(self) -> float:
        """Pipeline idle time over the busiest rank's compute: (makespan − busy) / busy, Megatron's t_pb / t_id."""
        busiest = max(self.busy_s)
        return (self.pipeline_end_s - busiest) / busiest if busiest else 0.0


Durations = Callable[[Action], float]
Transfer = Callable[[Action], float]


def run_schedule(sched: PipelineSchedule, duration_s: Durations, transfer_s: Transfer | None = None, *,
                 record: bool = True) -> list[Event]:
    """Execute ``sched`` and return one event per action, in order per rank. ``duration_s(a)`` and
    ``transfer_s(a)`` (the point-to-point time of the message ``a`` waits for) are asked once per stage and kind:
    they must not depend on the micro-batch. ``record=False`` returns only one ``end`` event (the makespan)."""
    last, m, kinds = sched.stages - 1, sched.m, "FBW"
    dur: dict[tuple[int, str], float] = {}
    xfer: dict[tuple[int, str], float] = {}
    # Per rank: (action, own key, dependency key or -1, transfer delay, duration); keys index a flat table.
    plans: list[list[tuple[Action, int, int, float, float]]] = []
    for acts in sched.ranks:
        rows = []
        for a in acts:
            sk = (a.stage, a.kind)
            if sk not in dur:
                dur[sk] = duration_s(a)
                if a.kind == "F":
                    dep_stage = a.stage - 1
                elif a.kind == "B":
                    dep_stage = a.stage if a.stage == last else a.stage + 1
                else:
                    dep_stage = a.stage
                crosses = dep_stage >= 0 and sched.rank_of(dep_stage) != sched.rank_of(a.stage)
                xfer[sk] = transfer_s(a) if crosses and transfer_s is not None else 0.0
            if a.kind == "F":
                dep = -1 if a.stage == 0 else ((a.stage - 1) * 3) * m + a.mb
            elif a.kind == "B":
                dep = (a.stage * 3) * m + a.mb if a.stage == last else ((a.stage + 1) * 3 + 1) * m + a.mb
            else:
                dep = (a.stage * 3 + 1) * m + a.mb
            rows.append((a, (a.stage * 3 + kinds.index(a.kind)) * m + a.mb, dep, xfer[sk], dur[sk]))
        plans.append(rows)
    done = [-1.0] * (sched.stages * 3 * m)
    free = [0.0] * sched.p
    pos = [0] * sched.p
    events: list[Event] = []
    waiters: dict[int, int] = {}
    runnable = list(range(sched.p - 1, -1, -1))
    while runnable:
        r = runnable.pop()
        rows = plans[r]
        i, t_free, n = pos[r], free[r], len(rows)
        while i < n:
            a, key, dep, delay, d = rows[i]
            if dep < 0:
                ready = 0.0
            else:
                ready = done[dep]
                if ready < 0:
                    waiters[dep] = r  # resume this rank when its dependency completes
                    break
                ready += delay
            start = t_free if t_free > ready else ready
            t_free = start + d
            done[key] = t_free
            if record:
                events.append(Event(rank=r, name=str(a), kind=a.kind, start_s=start, end_s=t_free))
            woken = waiters.pop(key, None)
            if woken is not None:
                runnable.append(woken)
            i += 1
        pos[r], free[r] = i, t_free
    if any(pos[r] < len(plans[r]) for r in range(sched.p)):
        waiting = [f"rank {r} at {sched.ranks[r][pos[r]]}" for r in range(sched.p) if pos[r] < len(sched.ranks[r])]
        raise DeadlockError(f"schedule {sched.name} (p={sched.p}, m={sched.m}, v={sched.v}) deadlocks: "
                            + ", ".join(waiting) + " wait for actions that never run")
    if not record:
        events.append(Event(rank=0, name="end", kind="end", start_s=max(free), end_s=max(free)))
    return events
