"""What a real run executes: the model, the plan (the simulator's ``ParallelPlan``) and the run options, with a
command-line form shared by ``xpusim run``, its launcher and ``torchrun -m xpusim.run``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from xpusim.errors import UserError
from xpusim.hardware.chip import Chip, ChipError, load_chip
from xpusim.parallel.plan import SCHEDULES, ParallelPlan
from xpusim.workload.transformer import SpecError, TransformerConfig, key_values, parse_gpt

RUN_SCHEDULES = (*SCHEDULES, "zbv")


MLP_KEYS = {"layers": "ReLU layers (default 8)", "width": "width (default 1024)"}
"""Keys of an ``mlp:`` spec."""
MOE_KEYS = {"h": "hidden size", "l": "layers", "a": "attention heads", "s": "sequence length (default 16)",
            "V": "vocabulary (default 1024)", "e": "experts per layer", "k": "experts per token (top-k)",
            "ffn": "each expert's MLP width (default 4h)"}
"""Keys of a ``moe:`` spec: the ``gpt:`` model with a mixture-of-experts MLP in every layer."""


class RunSpecError(UserError):
    """A run request that cannot be executed; the message names the option and what is allowed."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    kind: str
    """``mlp`` or ``gpt``."""
    layers: int
    width: int = 0
    """MLP width."""
    hidden: int = 0
    heads: int = 0
    seq_len: int = 0
    vocab: int = 0
    ffn: int = 0
    """GPT MLP width (``ffn``, default 4h)."""
    kv_heads: int = 0
    """GPT key/value heads (``kv``, default ``heads``; fewer is grouped-query attention)."""
    experts: int = 0
    """MoE: experts per layer (``e``)."""
    top_k: int = 0
    """MoE: experts each token goes to (``k``)."""

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``mlp:layers=N,width=W``, or a ``gpt:`` spec with the meaning `xpusim.workload.transformer.parse_gpt`
        gives it everywhere (the simulator included)."""
        kind = text.partition(":")[0]
        if kind == "gpt":
            try:
                cfg = parse_gpt(text)
            except SpecError as exc:
                raise RunSpecError(f"--model: {exc}") from None
            return cls(kind="gpt", layers=cfg.layers, hidden=cfg.hidden, heads=cfg.heads, seq_len=cfg.max_positions,
                       vocab=cfg.vocab, ffn=cfg.ffn, kv_heads=cfg.kv_heads)
        if kind == "moe":
            v = key_values(text, MOE_KEYS, RunSpecError, f"--model {text!r}")
            missing = [key for key in ("h", "l", "a", "e", "k") if key not in v]
            if missing:
                raise RunSpecError(f"--model {text!r}: missing {', '.join(missing)}; e.g. moe:h=64,l=2,a=4,e=4,k=2")
            if v["h"] % v["a"] or v["k"] > v["e"]:
                raise RunSpecError(f"--model {text!r}: h must be a multiple of a, and k at most e")
            return cls(kind="moe", layers=v["l"], hidden=v["h"], heads=v["a"], seq_len=v.get("s", 16),
                       vocab=v.get("V", 1024), ffn=v.get("ffn", 4 * v["h"]), kv_heads=v["a"], experts=v["e"],
                       top_k=v["k"])
        if kind != "mlp":
            raise RunSpecError(f"--model {text!r}: expected mlp:layers=N,width=W, "
                               "gpt:h=..,l=..,a=..,s=..[,V=..,ffn=..,kv=..] or moe:h=..,l=..,a=..,e=..,k=..")
        vals = key_values(text, MLP_KEYS, RunSpecError, f"--model {text!r}")
        return cls(kind="mlp", layers=vals.get("layers", 8), width=vals.get("width", 1024))

    def text(self) -> str:
        """The spec back as text (``gpt:``: h, l, a, s and V always; ffn and kv when not their defaults)."""
        if self.kind == "mlp":
            return f"mlp:layers={self.layers},width={self.width}"
        if self.kind == "moe":
            return (f"moe:h={self.hidden},l={self.layers},a={self.heads},s={self.seq_len},V={self.vocab},"
                    f"e={self.experts},k={self.top_k},ffn={self.ffn}")
        out = f"gpt:h={self.hidden},l={self.layers},a={self.heads},s={self.seq_len},V={self.vocab}"
        if self.ffn != 4 * self.hidden:
            out += f",ffn={self.ffn}"
        if self.kv_heads != self.heads:
            out += f",kv={self.kv_heads}"
        return out

    def config(self) -> TransformerConfig:
        """The `TransformerConfig` of a ``gpt:`` spec (what the simulator builds from the same text)."""
        if self.kind != "gpt":
            raise RunSpecError(f"--model {self.text()!r} is not a transformer")
        return parse_gpt(self.text())


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    model: ModelSpec
    plan: ParallelPlan
    schedule: str = "1f1b"
    """Pipeline schedule: the plan's, or ``zbv`` (torch's ZBV zero-bubble, 2 stages per rank)."""
    steps: int = 5
    seed: int = 0
    fsdp: bool = False
    """Data parallel with FSDP2 ``fully_shard`` instead of DDP (``plan.zero`` 3: reshard after forward, 2: keep)."""
    timeout_s: float = 120.0
    check_grads: bool = False
    """After the first backward, compare loss and every gradient with a single-process run (rank 0)."""
    instrument: bool = True
    fault: str = ""
    """Testing aid: ``raise:RANK``, ``hang:RANK`` or ``kill:RANK`` (SIGKILL itself) makes that rank fail in the middle
    of step 2."""
    predict: str = ""
    """``--predict``: the chip file (``xpusim probe``'s) to predict the step from before the run."""

    @property
    def ranks(self) -> int:
        return self.plan.dp * self.plan.tp * self.plan.pp

    def to_argv(self) -> list[str]:
        p = self.plan
        argv = ["--model", self.model.text(), "--plan", f"dp={p.dp},tp={p.tp},pp={p.pp},ep={p.ep}", "--schedule",
                self.schedule, "--micro-batches", str(p.micro_batches), "--micro-batch", str(p.micro_batch),
                "--virtual-stages", str(p.vp), "--steps", str(self.steps), "--seed", str(self.seed),
                "--zero", str(p.zero), "--timeout", str(self.timeout_s)]
        if self.fsdp:
            argv.append("--fsdp")
        if self.check_grads:
            argv.append("--check-grads")
        if not self.instrument:
            argv.append("--no-instrument")
        if self.fault:
            argv += ["--fault", self.fault]
        if self.predict:
            argv += ["--predict", self.predict]
        return argv


def parse_plan(text: str) -> dict[str, int]:
    """``pp=2`` → {"dp": 1, "tp": 1, "pp": 2}; ``dp=2,tp=2,pp=2`` is a 3-D plan of 8 ranks. Through the one ``KEY=N``
    parser of the model specs."""
    keys = {"dp": "data-parallel ranks", "tp": "tensor-parallel ranks", "pp": "pipeline stages",
            "ep": "expert-parallel ranks (among the data-parallel ones)"}
    out = {"dp": 1, "tp": 1, "pp": 1, "ep": 1, **key_values(f"plan:{text}", keys, RunSpecError, f"--plan {text!r}")}
    if out["ep"] > 1 and "dp" not in text:  # EP folds into DP: ep=2 alone is two data-parallel ranks
        out["dp"] = out["ep"]
    return out


PREDICTED_SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1")
"""Schedules ``--predict`` times: xpusim's own (zbv runs torch's order, which xpusim has no generator for)."""


def load_predict_chip(path: str | Path, option: str = "--predict") -> Chip:
    """The chip file of ``--predict`` (``xpusim probe -o host.yaml`` writes this machine's); errors name the option
    and the value."""
    p = Path(path)
    if not p.is_file():
        raise RunSpecError(f"{option} {str(path)!r}: no such chip file; write this machine's with "
                           "'xpusim probe -o host.yaml' and give its path")
    try:
        return load_chip(p)
    except ChipError as exc:
        raise RunSpecError(f"{option} {str(path)!r}: {exc}") from None


DEFAULT_MODEL = "mlp:layers=8,width=1024"
DEFAULT_PLAN = "pp=2"
DEFAULT_MICRO_BATCHES = 8
DEFAULT_MICRO_BATCH = {"mlp": 16, "gpt": 1, "moe": 1}
"""Samples per micro-batch when not given, by model kind (``xpusim run`` and ``python -m xpusim.run`` alike)."""


def make_spec(*, model: str = DEFAULT_MODEL, plan: str = DEFAULT_PLAN, schedule: str = "1f1b",
              micro_batches: int = DEFAULT_MICRO_BATCHES, micro_batch: int | None = None,
              virtual_stages: int | None = None,
              steps: int = 5, seed: int = 0, zero: int = 0, fsdp: bool = False, timeout_s: float = 120.0,
              check_grads: bool = False, instrument: bool = True, fault: str = "", compare: bool = False,
              predict: str | None = None) -> RunSpec:
    """Validate user options into a RunSpec (every error names the option). ``micro_batch`` None: 16 samples
    for an MLP, 1 for a GPT; ``virtual_stages`` None: 2 for the interleaved schedules, else 1. ``compare``: the run
    will be simulated with its measured action times, which needs a pipeline and the per-action timestamps
    (instrumentation on)."""
    m = ModelSpec.parse(model)
    if micro_batch is None:
        micro_batch = DEFAULT_MICRO_BATCH[m.kind]
    degrees = parse_plan(plan)
    if virtual_stages is None:
        virtual_stages = 2 if schedule in ("interleaved", "zbv") else 1
    if compare and degrees["pp"] < 2:
        raise RunSpecError("--compare simulates the pipeline: it needs --plan pp=N with N >= 2")
    instrument = instrument or compare
    if predict:  # fail now, not after the run: the file must be a chip file (xpusim probe -o host.yaml)
        load_predict_chip(predict)
        if schedule not in PREDICTED_SCHEDULES:
            raise RunSpecError(f"--predict: --schedule {schedule} runs torch's own order, which xpusim has no "
                               f"generator for; predict one of {', '.join(PREDICTED_SCHEDULES)}")
    if schedule not in RUN_SCHEDULES:
        raise RunSpecError(f"--schedule {schedule!r}: expected one of {', '.join(RUN_SCHEDULES)}")
    for name, val in (("--micro-batches", micro_batches), ("--micro-batch", micro_batch), ("--steps", steps),
                      ("--virtual-stages", virtual_stages)):
        if val < 1:
            raise RunSpecError(f"{name} {val} must be >= 1")
    if timeout_s <= 0:
        raise RunSpecError(f"--timeout {timeout_s} must be > 0")
    if fsdp and zero == 0:
        zero = 3  # FSDP2's default: reshard after forward
    if zero not in (0, 2, 3):
        raise RunSpecError(f"--zero {zero}: real runs support 0 (DDP), 2 and 3 (FSDP2 without / with resharding "
                           "after forward)")
    if zero and degrees["dp"] < 2:
        raise RunSpecError(f"--zero {zero} shards over data-parallel ranks: it needs --plan dp=N with N >= 2")
    if zero and (degrees["tp"] > 1 or degrees["pp"] > 1):
        raise RunSpecError(f"--zero {zero} / --fsdp: real runs shard with FSDP2 on data-parallel-only plans; with tp "
                           "or pp the data-parallel ranks all-reduce gradients after the last micro-batch (DDP)")
    vp = virtual_stages
    if schedule in ("interleaved", "zbv"):
        vp = 2 if schedule == "zbv" else max(vp, 2)
        if degrees["pp"] < 2:
            raise RunSpecError(f"--schedule {schedule} needs --plan pp=N with N >= 2")
    elif vp != 1:
        raise RunSpecError(f"--virtual-stages {vp} needs --schedule interleaved")
    stages = degrees["pp"] * vp
    if m.layers % stages:
        raise RunSpecError(f"--model {model!r}: {m.layers} layers do not split into pp*v = {stages} stages")
    if degrees["ep"] > 1:
        if m.kind != "moe":
            raise RunSpecError(f"--plan ep={degrees['ep']} splits a mixture of experts: use --model moe:...")
        if (m.experts % degrees["ep"] or degrees["dp"] != degrees["ep"] or degrees["tp"] > 1 or degrees["pp"] > 1
                or zero or fsdp):
            raise RunSpecError(f"--plan ep={degrees['ep']}: real runs place the experts over all data-parallel "
                               f"ranks (dp = ep, no tp, pp or FSDP) and ep must divide e={m.experts}; valid ep: "
                               + ", ".join(str(e) for e in range(1, m.experts + 1) if m.experts % e == 0))
    if m.kind == "moe" and (degrees["tp"] > 1 or degrees["pp"] > 1):
        raise RunSpecError("--model moe:... runs with dp and ep (tp and pp of a MoE model are not in real runs)")
    if degrees["tp"] > 1:
        if m.kind != "gpt":
            raise RunSpecError("--plan tp=N splits attention heads and the MLP: use --model gpt:...")
        if m.heads % degrees["tp"]:
            raise RunSpecError(f"--plan tp={degrees['tp']} does not divide a={m.heads} heads")
        if m.kv_heads % degrees["tp"]:
            raise RunSpecError(f"--plan tp={degrees['tp']} does not divide kv={m.kv_heads} key/value heads")
        if m.ffn % degrees["tp"]:
            raise RunSpecError(f"--plan tp={degrees['tp']} does not divide ffn={m.ffn}")
    if schedule == "interleaved" and micro_batches % degrees["pp"]:
        raise RunSpecError(f"--micro-batches {micro_batches} must be a multiple of pp={degrees['pp']} for the "
                           "interleaved schedule")
    if fault and (fault.partition(":")[0] not in ("raise", "hang", "kill") or not fault.partition(":")[2].isdigit()):
        raise RunSpecError(f"--fault {fault!r}: expected raise:RANK, hang:RANK or kill:RANK")
    plan_schedule = schedule if schedule in SCHEDULES else "zb-h1"
    parallel = ParallelPlan(dp=degrees["dp"], tp=degrees["tp"], pp=degrees["pp"], ep=degrees["ep"], vp=vp,
                            micro_batch=micro_batch,
                        global_batch=micro_batch * micro_batches * degrees["dp"],
                        schedule=plan_schedule, zero=zero)  # type: ignore[arg-type]
    return RunSpec(model=m, plan=parallel, schedule=schedule, steps=steps, seed=seed, fsdp=fsdp or zero > 0,
                   timeout_s=timeout_s, check_grads=check_grads, instrument=instrument, fault=fault,
                   predict=str(predict or ""))


def argument_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m xpusim.run", description="One rank of an xpusim real run "
                                 "(start it with torchrun, or use 'xpusim run', which launches every rank).")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="mlp:layers=N,width=W or gpt:h=..,l=..,a=..,s=..[,V=..,"
                    "ffn=..,kv=..].")
    ap.add_argument("--plan", default=DEFAULT_PLAN, help="dp=N, tp=N, pp=N or a combination: "
                    "dp=2,tp=2,pp=2 (ranks = dp*tp*pp).")
    ap.add_argument("--schedule", default="1f1b", help=f"Pipeline schedule: {', '.join(RUN_SCHEDULES)}.")
    ap.add_argument("--micro-batches", type=int, default=DEFAULT_MICRO_BATCHES)
    ap.add_argument("--micro-batch", type=int, default=None, help="Samples per micro-batch (default 16 for mlp, "
                    "1 for gpt).")
    ap.add_argument("--virtual-stages", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zero", type=int, default=0)
    ap.add_argument("--fsdp", action="store_true")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--check-grads", action="store_true")
    ap.add_argument("--no-instrument", action="store_true")
    ap.add_argument("--fault", default="")
    ap.add_argument("--result", default="", help="Where rank 0 writes the run's raw JSON record (what 'xpusim run' "
                    "reads); without it rank 0 prints the same summary as 'xpusim run'.")
    ap.add_argument("--format", "-f", choices=("table", "json"), default="table",
                    help="Rank 0's summary: table or json (without --result).")
    ap.add_argument("--predict", default="", metavar="CHIP_FILE", help="Predict the step from the cost model "
                    "first, with this chip file ('xpusim probe -o host.yaml'); show predicted vs measured.")
    ap.add_argument("--compare", action="store_true", help="Simulate the pipeline with the measured action times "
                    "(pp=N only); print measured vs simulated.")
    ap.add_argument("--trace", default="", help="Rank 0 writes the measured timeline as a Chrome/Perfetto trace.")
    return ap


def spec_from_args(ns: argparse.Namespace) -> RunSpec:
    return make_spec(model=ns.model, plan=ns.plan, schedule=ns.schedule, micro_batches=ns.micro_batches,
                     micro_batch=ns.micro_batch, virtual_stages=ns.virtual_stages, steps=ns.steps, seed=ns.seed,
                     zero=ns.zero, fsdp=ns.fsdp, timeout_s=ns.timeout, check_grads=ns.check_grads,
                     instrument=not ns.no_instrument, fault=ns.fault, compare=getattr(ns, "compare", False),
                     predict=getattr(ns, "predict", ""))

