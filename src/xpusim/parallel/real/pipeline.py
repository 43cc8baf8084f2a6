"""xpusim's own pipeline schedules, executed for real.

`xpusim.parallel.schedules` writes each schedule as data: per rank, the ordered actions ``0F0 0F1 0B0 ...``, the
lists the simulator times. A real run hands those very lists to torch.distributed.pipelining's action runtime
(``_PipelineScheduleRuntime``), which lowers a compute-only order to one with its sends and receives
(``_add_send_recv``: a receive is posted when its sender's action is placed, a send right after its compute) and
runs it. So the simulator and the run execute one order, and a run's record can be checked against it action by
action.

Kinds: xpusim's F is torch's F; its B is torch's full backward ``B`` in schedules without W, and the
input-gradient-only ``I`` in schedules that split the backward (ZB-H1), whose W is torch's ``W``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from xpusim.parallel.schedules import Action, PipelineSchedule, build

XPUSIM_SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1")
"""Real-run schedules that execute xpusim's generated order (``zbv`` runs torch's ScheduleZBVZeroBubble)."""


def planned(schedule: str, p: int, m: int, v: int = 1) -> PipelineSchedule | None:
    """xpusim's order for a real run's schedule, or None when the run uses torch's own (``zbv``)."""
    return build(schedule, p, m, v) if schedule in XPUSIM_SCHEDULES else None


def stages_of(sched: PipelineSchedule, rank: int) -> list[int]:
    """The stages ``rank`` holds, in increasing order."""
    return [s for s in range(sched.stages) if sched.rank_of(s) == rank]


def torch_order(sched: PipelineSchedule) -> dict[int, list[Any]]:
    """The schedule as torch's compute-only ``pipeline_order``: rank -> list of ``_Action``."""
    from torch.distributed.pipelining.schedules import _Action, _ComputationType

    kinds = {"F": _ComputationType.FORWARD,
             "B": _ComputationType.BACKWARD_INPUT if sched.split_backward else _ComputationType.FULL_BACKWARD,
             "W": _ComputationType.BACKWARD_WEIGHT}
    return {r: [_Action(a.stage, kinds[a.kind], a.mb) for a in acts] for r, acts in enumerate(sched.ranks)}


def from_torch_order(order: dict[int, Sequence[Any]]) -> list[tuple[Action, ...]]:
    """Back from torch's ``pipeline_order`` (compute actions only, bubbles dropped) to xpusim's actions; torch's
    ``I`` (input gradient) is xpusim's B."""
    names = {"F": "F", "B": "B", "I": "B", "W": "W"}
    out = []
    for r in sorted(order):
        acts = []
        for a in order[r]:
            if a is None or a.computation_type.value not in names:
                continue
            acts.append(Action(a.stage_index, names[a.computation_type.value], a.microbatch_index))  # type: ignore[arg-type]
        out.append(tuple(acts))
    return out


def runtime(stages: list[Any], sched: PipelineSchedule, loss_fn: Callable[..., Any]) -> Any:
    """A torch ``_PipelineScheduleRuntime`` over this rank's ``stages`` that runs exactly ``sched``'s order
    (the loss scaled by 1/m as torch's own schedules do: ``scale_grads``)."""
    from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

    if len(stages) != len(stages_of(sched, stages[0].group_rank)):
        raise ValueError(f"rank {stages[0].group_rank} holds {len(stages)} stages; {sched.name} places "
                         f"{stages_of(sched, stages[0].group_rank)} on it")
    rt = _PipelineScheduleRuntime(stages, n_microbatches=sched.m, loss_fn=loss_fn)
    order = torch_order(sched)
    rt.pipeline_order = order  # what torch's schedule classes set in __init__
    rt._prepare_schedule_with_comms(order)  # validates the order, infers stage -> rank, adds sends/receives
    return rt
