"""`serve`: an LLM serving deployment simulated request by request (`xpusim.engines.serve`) — its throughput,
latency percentiles, queueing, KV cache use and preemptions — and the highest request rate that meets latency SLOs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xpusim.api.calls import _llm_cluster, _positive, _Result, dumps
from xpusim.engines.llm import Parallelism, min_gpus
from xpusim.engines.serve import (
    KV_RESERVES,
    OVERHEADS,
    SCHEDULERS,
    Disaggregation,
    IterationCost,
    KVBudget,
    Lengths,
    Overhead,
    Requests,
    ServeConfig,
    ServeError,
    ServeRun,
    kv_budget,
    percentiles,
    poisson_requests,
    read_trace,
    simulate,
    simulate_disaggregated,
    summary,
)
from xpusim.errors import UserError
from xpusim.files import check_output, write_atomic
from xpusim.hardware.chip import Chip, load_chip
from xpusim.hardware.cluster import Cluster
from xpusim.hardware.measured import with_measured_efficiency
from xpusim.precision import TORCH_FLOAT16, float16_for
from xpusim.workload.transformer import Precision, TransformerConfig, key_values, load_transformer

SLO_KEYS = {"ttft": "ttft_s", "tpot": "tpot_s"}
"""``--slo`` keys and the latency each bounds (seconds, at ``slo_percentile``)."""


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """The highest Poisson rate whose run met every SLO, and the runs that bracketed it."""

    rate_per_s: float
    slo: dict[str, float]
    percentile: str
    tried: tuple[tuple[float, bool], ...]
    """(rate, met) of every run of the search."""


@dataclass(frozen=True, kw_only=True)
class ServeResult(_Result):
    """A simulated serving run: the summary of `xpusim.engines.serve.summary`, the same run on the ideal roofline
    (the upper bound), and with ``slo`` the capacity found."""

    run: ServeRun
    bound: dict[str, Any]
    """The same iterations on the ideal roofline without CPU overhead: how long the engine was busy, and how long
    the same batches would take at the chip's peaks (no engine beats that)."""
    model: str
    chip: str
    parallel: Parallelism
    config: ServeConfig
    workload: str
    basis: tuple[str, ...]
    capacity: Capacity | None = None
    disaggregated: dict[str, Any] | None = None
    """Prefill and decode instances, their chips and the KV transfer times (with ``disaggregate``)."""
    wrote: tuple[Path, ...] = ()
    """The files written: the iterations' trace, the latency plot."""

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "chip": self.chip, "tp": self.parallel.tp, "pp": self.parallel.pp,
               "gpus": self.parallel.gpus, "scheduler": self.config.scheduler, "workload": self.workload,
               "config": dataclasses.asdict(self.config), **summary(self.run),
               "roofline_bound": self.bound, "basis": list(self.basis)}
        if self.capacity is not None:
            out["capacity"] = dataclasses.asdict(self.capacity)
        if self.disaggregated is not None:
            out["disaggregated"] = self.disaggregated
        return out

    def summary(self) -> str:
        s = summary(self.run)
        text = (f"{s['requests']} requests in {s['makespan_s']:.1f} s: {s['requests_per_s']:.2f} req/s, "
                f"{s['output_tokens_per_s']:,.0f} output tokens/s · TTFT p50 {s['ttft_s']['p50']:.3f} s p99 "
                f"{s['ttft_s']['p99']:.3f} s · TPOT p50 {s['tpot_s']['p50'] * 1e3:.1f} ms p99 "
                f"{s['tpot_s']['p99'] * 1e3:.1f} ms · KV cache {100 * s['kv_utilization']:.0f}% used, "
                f"{s['preemptions']} preemptions")
        if self.capacity is not None:
            c = self.capacity
            text += (f" · capacity {c.rate_per_s:.2f} req/s at {c.percentile} "
                     + ", ".join(f"{k} <= {v:g} s" for k, v in c.slo.items()))
        return text


def parse_slo(text: str | dict[str, float] | None) -> dict[str, float] | None:
    """``ttft=2,tpot=0.2`` → {"ttft": 2.0, "tpot": 0.2} (seconds)."""
    if text is None or isinstance(text, dict):
        return text
    out: dict[str, float] = {}
    for part in str(text).split(","):
        key, _, val = part.partition("=")
        key = key.strip()
        try:
            v = float(val)
        except ValueError:
            v = -1.0
        if key not in SLO_KEYS or not v > 0:
            raise ServeError(f"--slo {text!r}: expected ttft=SECONDS,tpot=SECONDS (each > 0; keys "
                             f"{', '.join(SLO_KEYS)})")
        out[key] = v
    return out


def _overhead(overhead: str | float | Overhead) -> Overhead:
    if isinstance(overhead, Overhead):
        return overhead
    if isinstance(overhead, int | float) and not isinstance(overhead, bool) and overhead >= 0:
        return Overhead(fixed_s=overhead / 1e3, per_seq_s=0.0, source=f"{overhead:g} ms per iteration (given)")
    if isinstance(overhead, str) and overhead in OVERHEADS:
        return OVERHEADS[overhead]
    try:
        ms = float(overhead)
    except (TypeError, ValueError):
        ms = -1.0
    if not ms >= 0:
        raise ServeError(f"--overhead {overhead!r}: expected {', '.join(OVERHEADS)} or milliseconds per "
                         "iteration (>= 0)")
    return _overhead(ms)


def _requests(cfg: TransformerConfig, trace_in: str | Path | None, rate: float | None, requests: int,
              prompt_len: str, gen_len: str, seed: int) -> tuple[Requests, str]:
    if trace_in is not None:
        reqs = read_trace(trace_in)
        too_long = [i for i in range(len(reqs)) if reqs.prompt_len[i] + reqs.gen_len[i] > cfg.max_positions]
        if too_long:
            i = too_long[0]
            raise ServeError(f"{trace_in}: request {i + 1}: prompt {int(reqs.prompt_len[i])} + output "
                             f"{int(reqs.gen_len[i])} tokens exceed {cfg.name}'s {cfg.max_positions} positions")
        return reqs, f"trace {Path(trace_in).name}: {len(reqs)} requests"
    if rate is None:
        raise ServeError("give --rate REQUESTS_PER_S (Poisson arrivals) or --trace-in FILE.csv")
    p, g = Lengths.parse(prompt_len, "--prompt-len"), Lengths.parse(gen_len, "--gen-len")
    reqs = poisson_requests(requests, rate, p, g, max_len=cfg.max_positions, seed=seed)
    return reqs, f"{requests} requests, Poisson at {rate:g}/s, prompt {prompt_len}, output {gen_len}, seed {seed}"


def serve(model: str | Path | TransformerConfig, *, chip: str | Path | Chip, tp: int = 1, pp: int = 1, ep: bool = False,
          cluster: str | Path | Cluster | None = None, rate: float | None = None, requests: int = 1000,
          prompt_len: str = "lognormal:1000,0.6", gen_len: str = "lognormal:250,0.8",
          trace_in: str | Path | None = None, scheduler: str = "sarathi",
          max_batch_tokens: int = ServeConfig.max_batch_tokens, max_seqs: int = ServeConfig.max_seqs,
          block_size: int = ServeConfig.block_size, gpu_memory_utilization: float = ServeConfig.gpu_memory_utilization,
          blocks: int | None = None, kv_reserve: str = "on-demand", overhead: str | float | Overhead = "vllm",
          efficiency: str = "measured",
          w_bits: int = 16, kv_bits: int = 16, seed: int = 0, slo: str | dict[str, float] | None = None,
          slo_percentile: str = "p99", trace: str | Path | None = None, plot: str | Path | None = None,
          disaggregate: str | None = None, progress: Callable[[str], None] | None = None) -> ServeResult:
    """Simulate serving ``model`` on ``tp`` × ``pp`` chips: Poisson arrivals at ``rate`` per second (``requests`` of
    them, lengths from ``prompt_len``/``gen_len``: ``N``, ``lognormal:MEDIAN,SIGMA`` or ``uniform:LO,HI``) or the
    requests of a CSV trace; the ``scheduler`` (``sarathi``, ``vllm``, ``static``), a paged KV cache (blocks taken
    as sequences grow, ``kv_reserve="on-demand"``, or for the whole request at admission, ``"full"``) and the
    engine's CPU ``overhead`` per iteration (``vllm``, ``none`` or milliseconds). ``efficiency``: ``measured``
    kernel efficiency from published GPU measurements where the chip has them, else ``ideal`` (the roofline).
    ``slo`` (``ttft=2,tpot=0.2``): also search the highest Poisson rate whose ``slo_percentile`` latencies meet
    them. ``trace``: write the iterations as a Chrome/Perfetto trace (a ``.csv`` path is read as ``trace_in``
    instead); ``plot``: the latency CDFs as a figure. ``disaggregate`` (``prefill=2,decode=6``): that many
    instances of ``tp`` × ``pp`` chips for prompts and for decoding, the KV cache moved between them on the
    cluster's links. ``ep``: a mixture of experts' experts whole, E/tp per chip (see `xpusim.llm`)."""
    if trace is not None and Path(trace).suffix not in (".csv", ".json"):
        raise ServeError(f"--trace {str(trace)!r}: expected a .csv of requests to replay or a .json to write the "
                         "iterations to")
    if trace is not None and str(trace).endswith(".csv"):  # `--trace requests.csv`: the requests to replay
        trace_in, trace = trace, None
    check_output(trace, "--trace", (".json",))
    check_output(plot, "--plot", (".png", ".svg", ".pdf"))
    if scheduler not in SCHEDULERS:
        raise ServeError(f"--scheduler {scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
    if kv_reserve not in KV_RESERVES:
        raise ServeError(f"--kv-reserve {kv_reserve!r}: expected on-demand (vLLM) or full (TensorRT-LLM's "
                         "GUARANTEED_NO_EVICT)")
    if efficiency not in ("measured", "ideal"):
        raise ServeError(f"--efficiency {efficiency!r}: expected measured or ideal")
    if slo_percentile not in ("p50", "p90", "p99"):
        raise ServeError(f"--slo-percentile {slo_percentile!r}: expected p50, p90 or p99")
    for name, v in (("tp", tp), ("pp", pp), ("requests", requests), ("max_batch_tokens", max_batch_tokens),
                    ("max_seqs", max_seqs), ("block_size", block_size), ("blocks", blocks)):
        _positive(name, v)
    if not 0 < gpu_memory_utilization <= 1:
        raise ServeError(f"--gpu-memory-utilization {gpu_memory_utilization:g} must be in (0, 1]")
    slos = parse_slo(slo)
    cfg = load_transformer(str(model) if isinstance(model, Path) else model)
    base_chip = load_chip(chip)
    pools = _pools(disaggregate)
    if ep and tp == 1:
        raise ServeError("--ep splits the experts over the tensor-parallel chips: give --tp > 1")
    par = Parallelism(tp=tp, pp=pp)
    if tp * pp > 1 or pools:
        cl = _llm_cluster(cluster, base_chip)
        par = Parallelism(tp=tp, pp=pp, fabric=cl.fabric(tp), pp_fabric=cl.fabric(tp * pp), ep=ep)
    try:
        par.check(cfg)
        prec = Precision(w_bits=w_bits, a_bits=16, kv_bits=kv_bits,
                         float16=TORCH_FLOAT16[float16_for(base_chip.dtypes())])
    except ValueError as exc:
        raise UserError(str(exc)) from None
    the_chip, eff_note = with_measured_efficiency(base_chip) if efficiency == "measured" else (
        base_chip, "ideal roofline (--efficiency ideal)")
    over = _overhead(overhead)
    sc = ServeConfig(scheduler=scheduler, max_batch_tokens=max_batch_tokens, max_seqs=max_seqs,  # type: ignore[arg-type]
                     block_size=block_size, gpu_memory_utilization=gpu_memory_utilization, blocks=blocks,
                     kv_reserve=kv_reserve)  # type: ignore[arg-type]
    budget = kv_budget(cfg, the_chip, prec, par, sc)
    if budget.blocks < 1:
        raise ServeError(_no_room(cfg, base_chip, prec, par, budget, sc))
    reqs, workload = _requests(cfg, trace_in, rate, requests, prompt_len, gen_len, seed)
    cost = IterationCost(cfg=cfg, chip=the_chip, precision=prec, parallel=par, overhead_s=over.fixed_s,
                         overhead_s_per_seq=over.per_seq_s)
    say = progress or (lambda s: None)
    say(f"simulating {len(reqs)} requests ({scheduler}, {budget.blocks:,} KV blocks of {block_size} tokens per chip)")
    ideal = IterationCost(cfg=cfg, chip=base_chip, precision=prec, parallel=par, overhead_s=0.0)
    dis = None
    if pools:
        dis = Disaggregation(prefill=pools[0], decode=pools[1], fabric=cl.fabric(sum(pools) * tp * pp),
                             kv_bytes_per_token=budget.block_bytes // block_size)
        run, transfer = simulate_disaggregated(reqs, cost, sc, budget, dis, bound=ideal)
    else:
        run = simulate(reqs, cost, sc, budget, lambda done, n: say(f"{done:,}/{n:,} requests done"), bound=ideal)
    busy = sum(it.end_s - it.start_s for it in run.iterations)
    ideal_busy = sum(it.bound_s for it in run.iterations)
    bound = {"busy_s": busy, "roofline_busy_s": ideal_busy, "roofline_share": ideal_busy / busy if busy else 0.0,
             "output_tokens_per_busy_s": int(reqs.gen_len.sum()) / busy if busy else 0.0,
             "roofline_output_tokens_per_busy_s": int(reqs.gen_len.sum()) / ideal_busy if ideal_busy else 0.0}
    capacity = None
    if slos:
        capacity = _capacity(cfg, cost, sc, budget, slos, slo_percentile, requests, prompt_len, gen_len, seed, say)
    if trace is not None:
        write_atomic(trace, json.dumps(chrome_trace(run, f"xpusim serve {cfg.name}")))
    basis = _basis(cfg, base_chip, par, budget, sc, eff_note, over)
    pool_info = None
    if dis is not None:
        pool_info = {"prefill": dis.prefill, "decode": dis.decode, "gpus": (dis.prefill + dis.decode) * par.gpus,
                     "fabric": dis.fabric.name, "kv_transfer_s": percentiles(transfer)}
        basis += (f"disaggregated: {dis.prefill} prefill and {dis.decode} decode instances of {par.gpus} chip(s), "
                  f"requests round-robin; each request's KV cache ({dis.kv_bytes_per_token:,} B per token per chip) "
                  f"sent chip to chip on {dis.fabric.name} (α-β), not overlapped",)
    wrote = tuple(Path(f) for f in (trace, plot) if f is not None)
    result = ServeResult(run=run, bound=bound, model=cfg.name, chip=base_chip.name, parallel=par, config=sc,
                         workload=workload, basis=basis, capacity=capacity, disaggregated=pool_info, wrote=wrote)
    if plot is not None:
        fig = latency_cdf_figure(result)
        write_atomic(plot, lambda tmp: fig.savefig(tmp, format=Path(str(plot)).suffix[1:], dpi=120))
    return result


def _basis(cfg: TransformerConfig, base_chip: Chip, par: Parallelism, budget: KVBudget, sc: ServeConfig,
           eff_note: str, over: Overhead) -> tuple[str, ...]:
    return (
        f"iteration time: the roofline per op on {base_chip.name} ({eff_note}), "
        + (f"tp={par.tp} pp={par.pp} collectives on {par.fabric.name}, " if par.fabric else "")
        + f"plus the engine's CPU time: {over.source}",
        f"KV cache: {sc.gpu_memory_utilization:g} of {base_chip.main_memory.capacity_bytes / 1e9:.1f} GB per chip, "
        f"minus weights {budget.weights_bytes / 1e9:.2f} GB and the activations of a {sc.max_batch_tokens}-token "
        f"iteration {budget.activation_bytes / 1e9:.2f} GB: {budget.blocks:,} blocks of {sc.block_size} tokens "
        f"({budget.block_bytes / 2**20:.2f} MiB each)",
        "preemption by recomputation (vLLM's default): the newest running sequence gives its blocks back",
        "decode attention costed at the batch's mean context, rounded up to a block",
    )


def _pools(text: str | None) -> tuple[int, int] | None:
    """``prefill=2,decode=6`` → (2, 6)."""
    if text is None:
        return None
    keys = {"prefill": "instances running prompts", "decode": "instances decoding"}
    vals = key_values(f"disaggregate:{text}", keys, ServeError, f"--disaggregate {text!r}")
    if set(vals) != set(keys):
        raise ServeError(f"--disaggregate {text!r}: give both, e.g. prefill=2,decode=6")
    return vals["prefill"], vals["decode"]


def _no_room(cfg: TransformerConfig, chip: Chip, prec: Precision, par: Parallelism, budget: KVBudget,
             sc: ServeConfig) -> str:
    on = f"{par.gpus} × {chip.name}" if par.gpus > 1 else f"one {chip.name}"
    head = (f"{cfg.name} leaves no room for a KV cache on {on}: weights {budget.weights_bytes / 1e9:.1f} GB + "
            f"activations {budget.activation_bytes / 1e9:.2f} GB per chip against {budget.capacity_bytes / 1e9:.1f} "
            f"GB usable ({sc.gpu_memory_utilization:g} of the memory)")
    need = min_gpus(cfg, budget.capacity_bytes, prec, sc.max_batch_tokens, sc.max_batch_tokens, True)
    if need is None:
        return head + "; no split within one node's 8-way tensor parallelism holds it"
    tp, pp = need
    return head + f"; it needs at least {tp * pp} chips: --tp {tp}" + (f" --pp {pp}" if pp > 1 else "")


def _meets(run: ServeRun, slos: dict[str, float], pct: str) -> bool:
    s = summary(run)
    return all(s[SLO_KEYS[k]][pct] <= v for k, v in slos.items())


def _capacity(cfg: TransformerConfig, cost: IterationCost, sc: ServeConfig, budget: KVBudget,
              slos: dict[str, float], pct: str, n: int, prompt_len: str, gen_len: str, seed: int,
              say: Callable[[str], None]) -> Capacity:
    """Bisection on the Poisson rate between 0 and the saturated throughput (every request at once), 10 runs: the
    same requests' lengths and seed at every rate, so latency only grows with the rate."""
    p, g = Lengths.parse(prompt_len, "--prompt-len"), Lengths.parse(gen_len, "--gen-len")

    def run_at(rate: float) -> ServeRun:
        return simulate(poisson_requests(n, rate, p, g, max_len=cfg.max_positions, seed=seed), cost, sc, budget)

    saturated = summary(run_at(1e9))["requests_per_s"]
    lo, hi = 0.0, saturated
    tried: list[tuple[float, bool]] = []
    for _ in range(10):
        mid = (lo + hi) / 2
        ok = _meets(run_at(mid), slos, pct)
        tried.append((mid, ok))
        say(f"SLO search: {mid:.3f} req/s {'meets' if ok else 'misses'} the SLOs")
        lo, hi = (mid, hi) if ok else (lo, mid)
    return Capacity(rate_per_s=lo, slo=slos, percentile=pct, tried=tuple(tried))


def chrome_trace(run: ServeRun, title: str) -> dict[str, Any]:
    """The iterations on one track (prefill tokens, decodes, running sequences in each event's args) and counters
    of running sequences and KV blocks in use: Chrome's trace-event format, which Perfetto opens."""
    events: list[dict[str, Any]] = [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": title}}]
    for i, it in enumerate(run.iterations):
        kind = "prefill+decode" if it.prefill_tokens and it.decodes else "prefill" if it.prefill_tokens else "decode"
        events.append({"ph": "X", "name": kind, "pid": 0, "tid": it.instance, "ts": it.start_s * 1e6,
                       "dur": (it.end_s - it.start_s) * 1e6,
                       "args": {"iteration": i, "prefill_tokens": it.prefill_tokens, "decodes": it.decodes,
                                "running": it.running, "kv_blocks_used": it.blocks_used}})
        events.append({"ph": "C", "name": "engine", "pid": 0, "ts": it.start_s * 1e6,
                       "args": {"running": it.running, "kv_blocks_used": it.blocks_used}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def latency_cdf_figure(result: ServeResult) -> Any:
    """Cumulative distributions of TTFT, TPOT and end-to-end latency (matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    run = result.run
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (name, vals, unit) in zip(axes, (("time to first token", run.ttft_s, "s"),
                                             ("time per output token", run.tpot_s * 1e3, "ms"),
                                             ("end to end", run.e2e_s, "s")), strict=True):
        x = np.sort(vals)
        ax.plot(x, np.arange(1, len(x) + 1) / max(len(x), 1))
        for q, style in ((0.5, ":"), (0.99, "--")):
            if len(x):
                ax.axvline(float(np.quantile(x, q)), linestyle=style, color="grey", label=f"p{int(q * 100)}")
        ax.set_xlabel(f"{name} ({unit})")
        ax.set_ylabel("share of requests")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(f"{result.model} on {result.parallel.gpus} × {result.chip}, {result.config.scheduler}: "
                 f"{result.workload}", fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["Capacity", "ServeResult", "chrome_trace", "dumps", "latency_cdf_figure", "parse_slo", "serve"]
