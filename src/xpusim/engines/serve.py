"""LLM serving, simulated iteration by iteration: requests arrive over time, a scheduler batches them continuously
(or statically), a paged KV cache holds their keys and values in fixed-size blocks and preempts a sequence when
the blocks run out, and each iteration's time comes from the same cost engine as ``xpusim llm`` (the roofline per
op on the chip, tensor-parallel collectives on its links), memoized by the iteration's shape — never per request.

Schedulers (what the engines do; the names are their documented policies):

``vllm``
    vLLM's original scheduler (v0, chunked prefill off): when waiting requests fit, an iteration runs only
    prefills — whole prompts, first come first served, up to the token budget and the sequence limit — else one
    decode step of every running sequence.
``sarathi``
    Sarathi-Serve's stall-free batching (vLLM v1's default): every iteration first gives each running sequence its
    next decode token, then fills the rest of the token budget with prefill chunks, oldest first.
``static``
    A fixed batch: when the server is idle it takes up to ``max_seqs`` waiting requests whose whole prompt and
    output fit the cache, prefills them together and decodes until the last one ends; nothing joins meanwhile.

KV cache: ``blocks`` blocks of ``block_size`` tokens per chip (vLLM's PagedAttention). A sequence holds
ceil(tokens in its cache / block_size) blocks; the cache holds the prompt, then one token more per decode step
(the step that produces output token k stores the key and value of token k − 1). When a running sequence needs a
block and none is free, the most recently admitted running sequence is preempted: its blocks are freed and it
goes back to the front of the queue, to be prefilled again with its prompt and what it has generated so far
(vLLM's recompute preemption). With ``kv_reserve="full"`` (TensorRT-LLM's GUARANTEED_NO_EVICT capacity policy)
a request is admitted only when the blocks for its whole prompt and output are free, and takes them all at once:
never preempted, at the price of fewer sequences running.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xpusim.engines.llm import Parallelism, expert_parallel, memory_per_gpu, shard
from xpusim.engines.roofline import estimate_op
from xpusim.errors import UserError
from xpusim.hardware.chip import Chip
from xpusim.hardware.cluster import Fabric, p2p_s
from xpusim.workload.transformer import (
    Precision,
    TransformerConfig,
    attention_op,
    head_ops,
    is_context_op,
    layer_groups,
    layer_ops,
)

Scheduler = Literal["vllm", "sarathi", "static"]
SCHEDULERS: tuple[str, ...] = ("vllm", "sarathi", "static")
KVReserve = Literal["on-demand", "full"]
KV_RESERVES: tuple[str, ...] = ("on-demand", "full")

VLLM_BLOCK_SIZE = 16  # vLLM's default --block-size (tokens per KV block)
VLLM_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
VLLM_MAX_NUM_SEQS = 256  # vLLM's default --max-num-seqs
VLLM_MAX_NUM_BATCHED_TOKENS = 8192  # vLLM v1's default token budget per iteration (chunked prefill)


class ServeError(UserError):
    """A serving request that cannot be simulated: the message names the option or file field and the value."""


# ---------------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Requests:
    """Arrival time (s), prompt tokens and output tokens of each request, in arrival order."""

    arrival_s: np.ndarray
    prompt_len: np.ndarray
    gen_len: np.ndarray
    prefilled: bool = False
    """The prompts' keys and values arrive with the requests (a disaggregated decode pool): they only decode, the
    first of ``gen_len`` tokens having come from the prefill."""

    def __len__(self) -> int:
        return len(self.arrival_s)

    def take(self, idx: np.ndarray, arrival_s: np.ndarray | None = None, *, gen_len: np.ndarray | None = None,
             prefilled: bool = False) -> Requests:
        """The requests ``idx`` (in that order), with new arrival times or output lengths when given."""
        return Requests(self.arrival_s[idx] if arrival_s is None else arrival_s, self.prompt_len[idx],
                        self.gen_len[idx] if gen_len is None else gen_len, prefilled)


@dataclass(frozen=True)
class Lengths:
    """A token-length distribution: ``fixed`` N, ``lognormal`` (median, sigma of the log) or ``uniform`` [lo, hi]."""

    kind: Literal["fixed", "lognormal", "uniform"]
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str, option: str) -> Lengths:
        kind, _, args = str(text).partition(":")
        try:
            if not args:
                n = int(kind)
                if n < 1:
                    raise ValueError
                return cls("fixed", n)
            vals = [float(v) for v in args.split(",")]
        except ValueError:
            raise ServeError(f"{option} {text!r}: expected a token count N, lognormal:MEDIAN,SIGMA or "
                             "uniform:LO,HI") from None
        if kind == "lognormal" and len(vals) == 2 and vals[0] >= 1 and vals[1] >= 0:
            return cls("lognormal", vals[0], vals[1])
        if kind == "uniform" and len(vals) == 2 and 1 <= vals[0] <= vals[1]:
            return cls("uniform", vals[0], vals[1])
        raise ServeError(f"{option} {text!r}: expected lognormal:MEDIAN,SIGMA (median >= 1, sigma >= 0) or "
                         "uniform:LO,HI (1 <= LO <= HI)")

    def sample(self, n: int, rng: np.random.Generator, cap: int) -> np.ndarray:
        if self.kind == "fixed":
            out = np.full(n, self.a)
        elif self.kind == "lognormal":
            out = rng.lognormal(math.log(self.a), self.b, n)
        else:
            out = rng.uniform(self.a, self.b + 1, n)
        return np.clip(np.floor(out), 1, cap).astype(np.int64)


def poisson_requests(n: int, rate_per_s: float, prompt: Lengths, gen: Lengths, *, max_len: int,
                     seed: int = 0) -> Requests:
    """``n`` requests arriving as a Poisson process of ``rate_per_s`` (exponential gaps, the first at 0); lengths
    drawn from ``prompt`` and ``gen``, each request's prompt + output capped at ``max_len`` tokens."""
    if rate_per_s <= 0:
        raise ServeError(f"--rate {rate_per_s:g} must be > 0 requests per second")
    if n < 1:
        raise ServeError(f"--requests {n} must be >= 1")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_per_s, n)
    gaps[0] = 0.0
    p = prompt.sample(n, rng, max_len - 1)
    g = np.minimum(gen.sample(n, rng, max_len - 1), max_len - p)
    return Requests(np.cumsum(gaps), p, g)


TRACE_FIELDS = ("arrival_s", "prompt_len", "gen_len")


def read_trace(path: str | Path) -> Requests:
    """A CSV with a header naming ``arrival_s``, ``prompt_len`` and ``gen_len`` (other columns ignored); rows
    sorted by arrival. A bad row is an error naming its line and field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ServeError(f"--trace-in {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [f for f in TRACE_FIELDS if f not in (reader.fieldnames or [])]
    if missing:
        raise ServeError(f"{path}: line 1: the header lacks {', '.join(missing)} (expected columns "
                         f"{', '.join(TRACE_FIELDS)})")
    rows: list[tuple[float, int, int]] = []
    for line, row in enumerate(reader, start=2):
        try:
            t = float(row["arrival_s"])
            if not math.isfinite(t) or t < 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ServeError(f"{path}: line {line}: arrival_s {row['arrival_s']!r} is not a time >= 0") from None
        vals = []
        for f in ("prompt_len", "gen_len"):
            try:
                v = int(row[f])
                if v < 1:
                    raise ValueError
            except (TypeError, ValueError):
                raise ServeError(f"{path}: line {line}: {f} {row[f]!r} is not a token count >= 1") from None
            vals.append(v)
        rows.append((t, vals[0], vals[1]))
    if not rows:
        raise ServeError(f"{path}: no requests after the header")
    rows.sort(key=lambda r: r[0])
    arr = np.array(rows, dtype=np.float64)
    return Requests(arr[:, 0], arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64))


# ---------------------------------------------------------------------------------------------- iteration cost
@dataclass
class IterationCost:
    """Seconds of one iteration on the serving chips, from the roofline of each op (`estimate_op`), the
    tensor-parallel collectives and pipeline sends (`Parallelism.comm_s`), and a fixed per-iteration CPU time
    (scheduling, sampling, preparing inputs, processing outputs: `Overhead`). Each term is memoized by its
    shape."""

    cfg: TransformerConfig
    chip: Chip
    precision: Precision
    parallel: Parallelism
    overhead_s: float
    overhead_s_per_seq: float = 0.0
    """CPU time per iteration: ``overhead_s`` + ``overhead_s_per_seq`` × sequences in the batch."""
    context_bucket: int = VLLM_BLOCK_SIZE
    """Decode attention is costed at the batch's mean context rounded up to this many tokens."""
    _memo: dict[tuple[Any, ...], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shard = shard(self.cfg, self.parallel.tp)
        self.groups = layer_groups(self.cfg)

    def _time(self, key: tuple[Any, ...], ops: Callable[[], list[Any]]) -> float:
        t = self._memo.get(key)
        if t is None:
            t = sum(e.time_s for e in (estimate_op(o, self.chip) for o in ops()))
            self._memo[key] = t
        return t

    def linear_s(self, tokens: int) -> float:
        """Every layer's ops that depend only on the tokens processed (projections, MLP or experts, norms, KV
        append) on ``tokens`` tokens, all layers (dense and MoE layers each with their own ops)."""
        key = ("lin", tokens)
        t = self._memo.get(key)
        if t is None:
            t = sum(n * self._time(("lin-group", tokens, moe), lambda moe=moe: [  # type: ignore[misc]
                expert_parallel(o, self.cfg, self.parallel.tp, tokens) if self.parallel.ep else o
                for o in layer_ops(self.shard, 1, tokens, tokens, self.precision, flash=True, moe=moe)
                if not is_context_op(o)]) for n, moe in self.groups)
            self._memo[key] = t
        return t

    def _attention_ops(self, seqs: int, new: int, context: int) -> list[Any]:
        if not self.cfg.mla:
            return [attention_op(self.shard, seqs, new, context, self.precision, flash=True)]
        return [o for o in layer_ops(self.shard, seqs, new, context, self.precision, flash=True, moe=False)
                if is_context_op(o)]

    def attention_s(self, seqs: int, new: int, context: int) -> float:
        """One layer's attention of ``seqs`` sequences, ``new`` tokens each against ``context`` keys (with MLA also
        its context-dependent projections)."""
        return self._time(("att", seqs, new, context), lambda: self._attention_ops(seqs, new, context))

    @functools.cached_property
    def attention_latency_s(self) -> float:
        """The fixed per-kernel latency inside `attention_s` (the same at every shape)."""
        return sum(estimate_op(o, self.chip).overhead_s for o in self._attention_ops(1, 1, 1))

    def head_s(self, tokens: int, logits: int) -> float:
        """Embedding of ``tokens`` tokens, final norm and lm_head of ``logits`` positions, and the communication of
        the whole pass."""
        key = ("head", tokens, logits)
        t = self._memo.get(key)
        if t is None:
            t = self._time(("head-ops", tokens, logits), lambda: head_ops(self.shard, 1, tokens, logits,
                                                                          self.precision))
            t += self.parallel.comm_s(self.cfg, 1, tokens, logits, self.precision)
            self._memo[key] = t
        return t

    def iteration_s(self, prefills: list[tuple[int, int]], decodes: int, decode_context: int, logits: int) -> float:
        """``prefills``: (chunk tokens, context after the chunk) per sequence; ``decodes`` sequences with
        ``decode_context`` keys in all; ``logits``: sequences that produce a token."""
        mean = math.ceil(decode_context / decodes) if decodes else 0
        bucket = math.ceil(mean / self.context_bucket) * self.context_bucket
        if not prefills:  # decode-only iterations repeat: memoize them whole
            key = ("decode", decodes, bucket, logits)
            t = self._memo.get(key)
            if t is None:
                t = self._memo[key] = self._iteration_s([], decodes, bucket, logits)
            return t
        return self._iteration_s(prefills, decodes, bucket, logits)

    def _iteration_s(self, prefills: list[tuple[int, int]], decodes: int, context: int, logits: int) -> float:
        tokens = decodes + sum(n for n, _ in prefills)
        # The prefills share one variable-length attention kernel (per op): its fixed latency is paid once.
        attention = sum(self.attention_s(1, n, ctx) - self.attention_latency_s for n, ctx in prefills)
        attention += self.attention_latency_s if prefills else 0.0
        if decodes:
            attention += self.attention_s(decodes, 1, context)
        seqs = decodes + len(prefills)
        return (self.linear_s(tokens) + self.cfg.layers * attention + self.head_s(tokens, logits) + self.overhead_s
                + self.overhead_s_per_seq * seqs)


@dataclass(frozen=True, kw_only=True)
class Overhead:
    """The serving engine's CPU time per iteration, which the GPU waits for: ``fixed_s`` + ``per_seq_s`` × the
    sequences in the batch."""

    fixed_s: float
    per_seq_s: float
    source: str


OVERHEADS = {
    "vllm": Overhead(fixed_s=1.167e-3, per_seq_s=0.1004e-3, source=(
        "vLLM (v0) on A100, Llama-2-7B, tp 1, measured by vidur (microsoft/vidur data/profiling/a100/"
        "cpu_overheads.csv): median schedule + sampler + prepare inputs + process outputs = 1.97 ms at batch 8, "
        "7.59 ms at batch 64, a line through both")),
    "none": Overhead(fixed_s=0.0, per_seq_s=0.0, source="no CPU time between iterations (an ideal engine: CUDA "
                                                        "graphs and an overlapped scheduler)"),
}
"""Named per-iteration CPU overheads (``--overhead``)."""


# ------------------------------------------------------------------------------------------------- simulation
@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    scheduler: Scheduler = "sarathi"
    max_batch_tokens: int = VLLM_MAX_NUM_BATCHED_TOKENS
    """Token budget of one iteration (vLLM's max_num_batched_tokens)."""
    max_seqs: int = VLLM_MAX_NUM_SEQS
    """Sequences running at once (vLLM's max_num_seqs; the batch of ``static``)."""
    block_size: int = VLLM_BLOCK_SIZE
    gpu_memory_utilization: float = VLLM_GPU_MEMORY_UTILIZATION
    """Share of each chip's memory the engine may use for weights, activations and the KV cache."""
    blocks: int | None = None
    """KV blocks per chip; None: what the memory leaves (vLLM's num_gpu_blocks_override when given)."""
    kv_reserve: KVReserve = "on-demand"
    """``on-demand``: a block when a sequence needs one, preempting when none is free (vLLM); ``full``: the blocks
    of the whole request at admission (TensorRT-LLM's GUARANTEED_NO_EVICT)."""


@dataclass(frozen=True, kw_only=True)
class KVBudget:
    """How the KV cache was sized: per chip, in bytes and blocks."""

    capacity_bytes: float
    weights_bytes: int
    activation_bytes: int
    block_bytes: int
    blocks: int


def kv_budget(cfg: TransformerConfig, chip: Chip, p: Precision, par: Parallelism, sc: ServeConfig) -> KVBudget:
    """vLLM's sizing: usable memory = capacity × gpu_memory_utilization; minus the weights on the fullest chip and
    the peak activations of one full iteration (``max_batch_tokens`` tokens); the rest in blocks of
    ``block_size`` tokens' keys and values for this chip's layers and key/value heads."""
    weights, kv_per_token, act = memory_per_gpu(cfg, p, 1, sc.max_batch_tokens, True, par.tp, par.pp)
    block = kv_per_token * sc.block_size
    usable = chip.main_memory.capacity_bytes * sc.gpu_memory_utilization
    blocks = sc.blocks if sc.blocks is not None else max(0, int((usable - weights - act) // block))
    return KVBudget(capacity_bytes=usable, weights_bytes=weights, activation_bytes=act, block_bytes=block,
                    blocks=blocks)


@dataclass(frozen=True, kw_only=True)
class Iteration:
    start_s: float
    end_s: float
    prefill_tokens: int
    decodes: int
    tokens_out: int
    """Output tokens produced: one per decode and per prefill that finished its prompt."""
    running: int
    blocks_used: int
    bound_s: float = 0.0
    """The same iteration on the ideal roofline without CPU overhead (``simulate(bound=...)``)."""
    instance: int = 0
    """Which engine ran it (disaggregated serving has several)."""


@dataclass(frozen=True, kw_only=True)
class ServeRun:
    """Per request: when it was first scheduled, produced its first token and finished; the iterations; the
    cache's size and the preemptions."""

    requests: Requests
    scheduled_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    iterations: tuple[Iteration, ...]
    budget: KVBudget
    preemptions: int
    max_running: int

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.requests.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """Time per output token after the first, of requests with more than one output token."""
        g = self.requests.gen_len
        many = g > 1
        return (self.finish_s[many] - self.first_token_s[many]) / (g[many] - 1)

    @property
    def e2e_s(self) -> np.ndarray:
        return self.finish_s - self.requests.arrival_s

    @property
    def queue_s(self) -> np.ndarray:
        return self.scheduled_s - self.requests.arrival_s

    @property
    def makespan_s(self) -> float:
        return float(self.finish_s.max() - self.requests.arrival_s.min())

    @property
    def kv_utilization(self) -> float:
        """Time-weighted mean share of the cache's blocks in use."""
        busy = sum((it.end_s - it.start_s) * it.blocks_used for it in self.iterations)
        total = sum(it.end_s - it.start_s for it in self.iterations)
        return busy / total / self.budget.blocks if total and self.budget.blocks else 0.0


class _Seq:
    """A request inside the engine. ``prompt``: the tokens to prefill before decoding (after a preemption: the
    original prompt and every output token so far, recomputed); ``cache``: tokens whose keys and values are in the
    cache; ``generated``: output tokens produced (prefill's end produces one, each decode step one more)."""

    __slots__ = ("blocks", "cache", "computed", "decoding", "generated", "i", "prompt", "running", "target")

    def __init__(self, i: int, prompt: int, gen: int, prefilled: bool = False) -> None:
        self.i, self.prompt, self.target = i, prompt, gen
        self.computed = self.cache = prompt if prefilled else 0
        self.generated = 1 if prefilled else 0
        self.blocks = 0
        self.decoding = prefilled
        """The prompt is in the cache: the sequence decodes."""
        self.running = False


def simulate(reqs: Requests, cost: IterationCost, sc: ServeConfig, budget: KVBudget,
             progress: Callable[[int, int], None] | None = None, bound: IterationCost | None = None) -> ServeRun:
    """Run every request to completion. Raises ServeError when one request alone can never fit the cache.
    ``bound``: also time each iteration with this cost (the ideal roofline, say) in `Iteration.bound_s`."""
    n, bs = len(reqs), sc.block_size
    need = np.ceil((reqs.prompt_len + reqs.gen_len - 1) / bs).astype(np.int64)
    worst = int(np.argmax(need))
    if need[worst] > budget.blocks:
        raise ServeError(f"request {worst + 1} needs {int(need[worst])} KV blocks of {bs} tokens (prompt "
                         f"{int(reqs.prompt_len[worst])} + output {int(reqs.gen_len[worst])}); the cache has "
                         f"{budget.blocks} per chip")
    longest = int(np.argmax(reqs.prompt_len))
    if sc.scheduler != "sarathi" and reqs.prompt_len[longest] > sc.max_batch_tokens:
        raise ServeError(f"request {longest + 1}'s prompt of {int(reqs.prompt_len[longest])} tokens exceeds "
                         f"--max-batch-tokens {sc.max_batch_tokens}: the {sc.scheduler} scheduler prefills whole "
                         "prompts (sarathi chunks them)")
    sched = np.full(n, np.nan)
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    arrival = reqs.arrival_s
    waiting: deque[_Seq] = deque()
    running: list[_Seq] = []
    free = budget.blocks
    now, nxt, done, preempted, max_running, admitted = 0.0, 0, 0, 0, 0, 0
    iterations: list[Iteration] = []

    def grow(s: _Seq, tokens: int) -> bool:
        """Give ``s`` the blocks for ``tokens`` cached tokens, if free."""
        nonlocal free
        extra = -(-tokens // bs) - s.blocks
        if extra <= 0:
            return True
        if extra > free:
            return False
        free -= extra
        s.blocks += extra
        return True

    def claim(s: _Seq, tokens: int) -> bool:
        """The blocks ``s`` needs for ``tokens`` cached tokens now, or for its whole request under full reservation."""
        return grow(s, s.prompt + s.target - 1 if sc.kv_reserve == "full" else tokens)

    def admit(s: _Seq) -> None:
        nonlocal admitted
        admitted += 1
        running.append(s)
        s.running = True
        if math.isnan(sched[s.i]):
            sched[s.i] = now

    while done < n:
        if not running and not waiting:
            now = max(now, float(arrival[nxt]))
        while nxt < n and arrival[nxt] <= now:
            waiting.append(_Seq(nxt, int(reqs.prompt_len[nxt]), int(reqs.gen_len[nxt]), reqs.prefilled))
            nxt += 1
        prefills: list[tuple[_Seq, int]] = []
        decodes: list[_Seq] = []
        admitted_before = admitted
        if sc.scheduler == "static":
            if not running:
                while waiting and len(running) < sc.max_seqs and free >= need[waiting[0].i]:
                    s = waiting.popleft()
                    grow(s, s.prompt + s.target - 1)  # the whole request reserved up front: never preempted
                    admit(s)
                prefills = [(s, s.prompt) for s in running]
            else:
                decodes = list(running)
        else:
            if sc.scheduler == "vllm" and waiting:
                budget_left, seqs = sc.max_batch_tokens, len(running)
                while waiting and seqs < sc.max_seqs:
                    s = waiting[0]
                    size = s.prompt - s.computed
                    if size > budget_left or not claim(s, s.prompt):
                        break
                    admit(waiting.popleft())
                    prefills.append((s, size))
                    budget_left -= size
                    seqs += 1
            if not prefills:
                # decodes first: each running sequence whose prompt is in the cache gets its next token
                for s in list(running):
                    if not s.running or not s.decoding:
                        continue
                    # a new block only when the last one is full (the cache holds ceil(cache / bs) blocks)
                    while s.cache % bs == 0 and not grow(s, s.cache + 1):
                        victim = running.pop()  # the most recently admitted: vLLM's recompute preemption
                        free += victim.blocks
                        if victim.generated:  # its whole text so far is prefilled again
                            victim.prompt = int(reqs.prompt_len[victim.i]) + victim.generated
                        victim.computed = victim.cache = victim.blocks = 0
                        victim.running = victim.decoding = False
                        waiting.appendleft(victim)
                        preempted += 1
                        if victim is s:
                            break
                    if s.running:
                        decodes.append(s)
                if sc.scheduler == "sarathi":
                    budget_left = sc.max_batch_tokens - len(decodes)
                    for s in [r for r in running if not r.decoding]:  # partly prefilled, oldest first
                        if budget_left <= 0:
                            break
                        chunk = min(s.prompt - s.computed, budget_left)
                        if grow(s, s.computed + chunk):
                            prefills.append((s, chunk))
                            budget_left -= chunk
                    while waiting and budget_left > 0 and len(running) < sc.max_seqs:
                        s = waiting[0]
                        chunk = min(s.prompt - s.computed, budget_left)
                        if not claim(s, s.computed + chunk):
                            break
                        admit(waiting.popleft())
                        if chunk:  # a prefilled sequence joins the decodes of the next iteration
                            prefills.append((s, chunk))
                            budget_left -= chunk
        if not prefills and not decodes:
            if admitted_before < admitted:  # prefilled sequences just joined: they decode from the next iteration
                continue
            if nxt >= n:
                raise ServeError("the scheduler stalled with requests waiting: the cache cannot hold the next "
                                 "prompt (increase memory or lower --max-batch-tokens)")
            now = max(now, float(arrival[nxt]))
            continue
        logits = len(decodes) + sum(1 for s, c in prefills if s.computed + c >= s.prompt)
        ctx = sum(s.cache + 1 for s in decodes)
        shape = [(c, s.cache + c) for s, c in prefills]
        t = cost.iteration_s(shape, len(decodes), ctx, logits)
        t_bound = bound.iteration_s(shape, len(decodes), ctx, logits) if bound is not None else 0.0
        start, now = now, now + t
        max_running = max(max_running, len(running))
        produced = []
        for s, c in prefills:
            s.computed += c
            s.cache += c
            if s.computed >= s.prompt:  # the prompt's last chunk: its logits give the next token
                s.decoding = True
                produced.append(s)
        for s in decodes:
            s.cache += 1
            produced.append(s)
        for s in produced:
            s.generated += 1
            if s.generated == 1:
                first[s.i] = now
            if s.generated >= s.target:
                finish[s.i] = now
                free += s.blocks
                s.blocks, s.running = 0, False
                running.remove(s)
                done += 1
        iterations.append(Iteration(start_s=start, end_s=now, prefill_tokens=sum(c for _, c in prefills),
                                    decodes=len(decodes), tokens_out=len(produced), running=len(running),
                                    blocks_used=budget.blocks - free, bound_s=t_bound))
        if progress is not None and len(iterations) % 2000 == 0:
            progress(done, n)
    return ServeRun(requests=reqs, scheduled_s=sched, first_token_s=first, finish_s=finish,
                    iterations=tuple(iterations), budget=budget, preemptions=preempted, max_running=max_running)


@dataclass(frozen=True, kw_only=True)
class Disaggregation:
    """Prefill and decode on separate instances (DistServe, Splitwise): ``prefill`` instances run only prompts and
    produce each request's first token, then the request's keys and values move to one of ``decode`` instances
    over ``fabric`` (every chip sends its shard to its counterpart, in parallel), which decodes the rest. Requests
    go to the instances round-robin, in arrival order to the prefill pool and in order of readiness to the decode
    pool."""

    prefill: int
    decode: int
    fabric: Fabric
    kv_bytes_per_token: int
    """Per chip of an instance (its layers' and key/value heads' share)."""

    def transfer_s(self, prompt_len: np.ndarray) -> np.ndarray:
        return np.array([p2p_s(float(n) * self.kv_bytes_per_token, self.fabric) for n in prompt_len])


def simulate_disaggregated(reqs: Requests, cost: IterationCost, sc: ServeConfig, budget: KVBudget,
                           dis: Disaggregation, bound: IterationCost | None = None) -> tuple[ServeRun, np.ndarray]:
    """Every request through a prefill instance (its first token), the KV transfer, and a decode instance (the
    rest): the combined run, and each request's transfer time. Each instance is `simulate`d on its share; the
    iterations of all instances are kept, marked by ``instance`` (prefill 0 … P−1, then decode)."""
    n = len(reqs)
    first, sched, finish = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    iterations: list[Iteration] = []
    preempted = max_running = 0
    pre_sc = dataclasses.replace(sc, scheduler="sarathi" if sc.scheduler == "static" else sc.scheduler)
    for k in range(dis.prefill):
        idx = np.arange(k, n, dis.prefill)
        r = simulate(reqs.take(idx, gen_len=np.ones(len(idx), dtype=np.int64)), cost, pre_sc, budget, bound=bound)
        first[idx], sched[idx] = r.first_token_s, r.scheduled_s
        iterations += [dataclasses.replace(it, instance=k) for it in r.iterations]
        preempted, max_running = preempted + r.preemptions, max(max_running, r.max_running)
    transfer = dis.transfer_s(reqs.prompt_len)
    ready = first + transfer
    finish[reqs.gen_len <= 1] = first[reqs.gen_len <= 1]
    more = np.flatnonzero(reqs.gen_len > 1)
    more = more[np.argsort(ready[more], kind="stable")]
    dec_sc = dataclasses.replace(sc, scheduler="sarathi")
    for k in range(dis.decode):
        idx = more[k::dis.decode]
        if not len(idx):
            continue
        r = simulate(reqs.take(idx, ready[idx], prefilled=True), cost, dec_sc, budget, bound=bound)
        finish[idx] = r.finish_s
        iterations += [dataclasses.replace(it, instance=dis.prefill + k) for it in r.iterations]
        preempted, max_running = preempted + r.preemptions, max(max_running, r.max_running)
    run = ServeRun(requests=reqs, scheduled_s=sched, first_token_s=first, finish_s=finish,
                   iterations=tuple(iterations), budget=budget, preemptions=preempted, max_running=max_running)
    return run, transfer


def percentiles(x: np.ndarray) -> dict[str, float]:
    if not len(x):
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summary(run: ServeRun) -> dict[str, Any]:
    """Throughput, latency percentiles, queueing, KV use and preemptions of a finished run."""
    n, span = len(run.requests), run.makespan_s
    out_tokens = int(run.requests.gen_len.sum())
    return {
        "requests": n, "output_tokens": out_tokens, "input_tokens": int(run.requests.prompt_len.sum()),
        "makespan_s": span, "requests_per_s": n / span if span else 0.0,
        "output_tokens_per_s": out_tokens / span if span else 0.0,
        "ttft_s": percentiles(run.ttft_s), "tpot_s": percentiles(run.tpot_s), "e2e_s": percentiles(run.e2e_s),
        "queue_s": percentiles(run.queue_s), "kv_utilization": run.kv_utilization, "preemptions": run.preemptions,
        "iterations": len(run.iterations), "max_running": run.max_running,
        "kv_blocks": run.budget.blocks, "kv_block_bytes": run.budget.block_bytes,
    }
