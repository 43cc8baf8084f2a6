"""Plan search: enumerate every valid plan for a GPU count, estimate each with closed forms evaluated as numpy
arrays (thousands of plans per millisecond), drop those that do not fit in memory, and re-simulate the best
few event by event for the numbers that are reported.

The closed forms are the simulator's own cost terms with the pipeline flattened: step ≈ m·T_rank +
bubble + exposed communication + optimizer, where T_rank is one micro-batch through the busiest rank and the
bubble is (p − 1)·(F + B) of one chunk (GPipe, 1F1B, interleaved) or (p − 1)·(F + B_input) −
min(m − 1, p − 1)·W (ZB-H1), Narayanan
et al. 2021 and Qi et al. 2024; peak in-flight chunks per schedule as in ``PipelineSchedule.peak_in_flight``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace

import numpy as np

from xpusim.hardware.cluster import Cluster
from xpusim.parallel.plan import ParallelPlan, PlanError, divisors, problems, splits_sequence
from xpusim.parallel.simulate import (
    DDP_BUCKET_BYTES,
    StepResult,
    activation_bytes,
    head_cost,
    layer_args,
    layer_cost,
    params_per_stage,
    recompute_working_bytes,
    simulate,
)
from xpusim.parallel.spec import TrainModel
from xpusim.precision import element_bytes

SCHEDULE_CODES = ("1f1b", "gpipe", "interleaved", "zb-h1")
LONG_SEQUENCE = 8192
"""From this many tokens per sequence the search also tries context parallelism (cp > 1: Megatron-Core's long-context
recipes, e.g. Llama 3 at 8k tokens with cp 2); below it keeps cp = 1."""
RECOMPUTE_CODES = ("none", "selective", "full")


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    results: tuple[StepResult, ...]
    """The best plans, re-simulated, best first."""
    evaluated: int
    fitting: int
    seconds: float
    """Enumeration, estimates and re-simulation, end to end."""
    estimate_seconds: float
    """Enumeration and closed-form estimates of every plan (layer costs included)."""

    @property
    def plans_per_s(self) -> float:
        """Plans enumerated and estimated per second."""
        return self.evaluated / self.estimate_seconds if self.estimate_seconds else float("inf")


def enumerate_plans(model: TrainModel, cluster: Cluster, gpus: int, global_batch: int, *,
                    max_micro_batch: int = 16, max_tp: int | None = None,
                    base: ParallelPlan | None = None) -> list[ParallelPlan]:
    """Every valid plan: tp within a node, pp dividing the layers, for sequences of `LONG_SEQUENCE` tokens and more
    cp dividing s/2, for MoE models etp = tp or 1 and ep dividing the experts and t·c·d/etp,
    every schedule, v, b, ZeRO stage, recompute choice and sequence parallelism (rank order tp-dp-pp). The fields
    not searched (precision and bytes per parameter, dp overlap) come from ``base`` (default: `ParallelPlan`'s
    defaults)."""
    cfg = model.config
    recomputes = RECOMPUTE_CODES + (("moe",) if cfg.moe else ())  # the MoE layers recomputed: a MoE model only
    base = base or ParallelPlan()
    found = problems(replace(base, dp=1, tp=1, pp=1, vp=1, micro_batch=1, global_batch=1, schedule="1f1b", zero=0,
                             sp=False), cfg)
    if found:
        raise PlanError("invalid base plan for the search: " + "; ".join(found))
    max_tp = max_tp or cluster.gpus_per_node
    # the base plan's own settings, only where they differ from the defaults (a default base costs nothing)
    searched = {"dp", "tp", "pp", "cp", "ep", "etp", "vp", "micro_batch", "global_batch", "schedule", "zero", "sp",
                "recompute", "rank_order"}
    kept = {f.name: getattr(base, f.name) for f in fields(ParallelPlan)
            if f.init and f.name not in searched and getattr(base, f.name) != f.default}
    plans = []
    s = model.seq_len
    # context parallelism for long sequences only (flash attention), as Megatron-Core uses it
    long_seq = s >= LONG_SEQUENCE and base.flash
    for t in divisors(gpus):
        if t > max_tp or cfg.heads % t or cfg.kv_heads % t or cfg.ffn % t:
            continue
        for p, c in ((pp, cp) for pp in divisors(gpus // t) for cp in divisors(gpus // (t * pp))
                     if cp == 1 or (long_seq and splits_sequence(s, cp))):
            if cfg.layers % p:
                continue
            d = gpus // (t * p * c)
            if global_batch % d:
                continue
            # expert parallelism (MoE models only): experts split over tp ranks (etp = tp) or whole (etp = 1,
            # Megatron-Core's parallel folding), e expert-parallel ranks cut from the stage's t·c·d ranks
            experts = [(et, e) for et in sorted({t, 1}) for e in divisors(cfg.experts)
                       if cfg.expert_ffn % et == 0 and (t * c * d) % (et * e) == 0] if cfg.moe else [(t, 1)]
            micro = [b for b in divisors(global_batch // d) if b <= max_micro_batch]
            for (et, e), b in ((x, b) for x in experts for b in micro):
                m = global_batch // (d * b)
                scheds: list[tuple[str, int]] = [("1f1b", 1)]
                if p > 1:
                    scheds += [("gpipe", 1), ("zb-h1", 1)]
                    if m % p == 0:
                        scheds += [("interleaved", v) for v in divisors(cfg.layers // p) if v > 1]
                for sched, v in scheds:
                    for zero in ((0, 1, 2, 3) if d > 1 else (0,)):
                        for rc in recomputes:
                            for sp in ((False, True) if t > 1 else (False,)):
                                plans.append(ParallelPlan(dp=d, tp=t, pp=p, cp=c, ep=e, etp=None if et == t else et,
                                                          vp=v, micro_batch=b,
                                                          global_batch=global_batch, schedule=sched,  # type: ignore[arg-type]
                                                          zero=zero, sp=sp, recompute=rc,  # type: ignore[arg-type]
                                                          rank_order="tp-dp-pp", **kept))
    return plans


def estimate(model: TrainModel, cluster: Cluster, plans: list[ParallelPlan]) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form (step seconds, peak bytes per GPU) of every plan, as arrays."""
    cfg, s = model.config, model.seq_len
    chip = cluster.load_chip()
    n = len(plans)
    col = {k: np.empty(n) for k in ("t", "p", "v", "d", "e", "et", "b", "m", "zero", "f", "bi", "w", "hf", "hb", "ef",
                                    "eb", "act", "work", "cf", "cb", "sched", "overlap", "c", "blk")}
    costs: dict[tuple[object, ...], tuple[float, ...]] = {}
    per_setting: dict[tuple[int, int, int, int, str, str], tuple[float, ...]] = {}
    byte_rows: list[tuple[float, ...]] = []
    for i, pl in enumerate(plans):
        # raw fields (the properties cost more than the rest of the loop); pp and the rank order only where they
        # place an expert-parallel group
        key = (pl.tp, pl.micro_batch, pl.sp, pl.recompute, pl.dtype, pl.logits_bytes, pl.loss, pl.ep, pl.etp, pl.flash,
               pl.fp8,
               (pl.pp, pl.rank_order, pl.dispatcher, pl.routing_skew) if pl.ep > 1 else pl.routing_skew, pl.cp,
               pl.tp_overlap and pl.schedule != "zb-h1")  # `ParallelPlan.hides_tp_backward`, inlined (hot loop)
        if key not in costs:
            sl = s // pl.cp  # a context-parallel rank's tokens of each sequence
            lc = layer_cost(cfg, chip, s, pl.micro_batch, pl.tp, pl.sp, pl.recompute,
                            cluster.fabric(pl.tp) if pl.tp > 1 else None, pl.dtype, pl.ep,
                            *layer_args(pl, cluster))
            hc = head_cost(cfg, chip, sl, pl.micro_batch, pl.tp, pl.dtype, pl.logits_bytes, pl.loss)
            act = activation_bytes(cfg, sl, pl.micro_batch, pl.tp, pl.sp, pl.recompute, pl.flash, pl.expert_tp,
                                   pl.routing_skew, pl.fp8)
            work = recompute_working_bytes(cfg, sl, pl.micro_batch, pl.tp, pl.sp, pl.recompute, pl.flash,
                                           pl.expert_tp, pl.routing_skew, pl.fp8)
            costs[key] = (lc.fwd_s, lc.bwd_input_s, lc.bwd_weight_s, hc.fwd_s, hc.bwd_s, hc.embed_fwd_s,
                          hc.embed_bwd_s, act, work, lc.tp_fwd_s + lc.ep_fwd_s + lc.cp_fwd_s,
                          lc.tp_bwd_s + lc.ep_bwd_s + lc.cp_bwd_s,
                          pl.expert_tp)
        (col["f"][i], col["bi"][i], col["w"][i], col["hf"][i], col["hb"][i], col["ef"][i], col["eb"][i],
         col["act"][i], col["work"][i], col["cf"][i], col["cb"][i], col["et"][i]) = costs[key]
        col["t"][i], col["p"][i], col["v"][i], col["d"][i], col["e"][i] = pl.tp, pl.pp, pl.vp, pl.dp, pl.ep
        col["c"][i] = pl.cp
        col["b"][i], col["m"][i], col["zero"][i] = pl.micro_batch, pl.micro_batches, pl.zero
        col["sched"][i] = SCHEDULE_CODES.index(pl.schedule)
        col["overlap"][i] = pl.dp_overlap
        col["blk"][i] = pl.pipe_sends == "deepspeed"  # `ParallelPlan.blocking_sends` (c_pp is 0 at pp = 1)
        key_b = (pl.param_bytes, pl.grad_bytes, pl.optimizer_bytes, pl.logits_bytes, pl.dtype, pl.loss)
        if key_b not in per_setting:  # bytes per parameter, gradient, optimizer state, Adam step, logit, activation
            per_setting[key_b] = (pl.param_bytes, pl.grad_bytes, pl.optimizer_bytes, pl.optimizer_step_bytes,
                                  pl.kept_logit_bytes, element_bytes(pl.dtype))
        byte_rows.append(per_setting[key_b])
    for name, column in zip(("pb", "gb", "ob", "adam", "lb", "ab"), np.array(byte_rows, dtype=float).reshape(n, 6).T,
                            strict=True):
        col[name] = column
    pb, gb, ob, lb = col["pb"], col["gb"], col["ob"], col["lb"]
    t, p, v, d, b, m, zero, c = (col[k] for k in ("t", "p", "v", "d", "b", "m", "zero", "c"))
    dc = d * c  # the ranks holding the same weights (dp·cp): gradients and dense ZeRO shards
    chunk_layers = cfg.layers / (p * v)
    f_c = chunk_layers * (col["f"] + col["cf"])
    bi_c = chunk_layers * (col["bi"] + col["cb"])
    w_c = chunk_layers * col["w"]
    per_layer, embed, head = params_per_stage(cfg, 1, 1)
    # Routed experts (averaged over the layers) are split over e expert-parallel and etp expert tensor-parallel
    # ranks; their gradients, ZeRO shards and optimizer states go over the t·c·d/(etp·e) replicas holding the same.
    e, et = col["e"], col["et"]
    de = t * c * d / (et * e)
    x_layer = cfg.moe_layers * cfg.experts * 3 * cfg.hidden * cfg.expert_ffn / cfg.layers
    psi_x = cfg.layers / p * x_layer / (et * e)
    single = p * v == 1
    head_extra = np.where(single & cfg.tied_embeddings, 0.0, head)  # one stage: a tied output layer is the embedding
    # with p = 1 the one rank holds the first and the last chunk
    psi_first = (cfg.layers / p * (per_layer - x_layer) + embed + np.where(p == 1, head_extra, 0.0)) / t + psi_x
    psi_last = (cfg.layers / p * (per_layer - x_layer) + head_extra + np.where(p == 1, embed, 0.0)) / t + psi_x
    psi = np.maximum(psi_first, psi_last)

    # ZeRO-3 gathers, prefetched behind compute: what exceeds a chunk's compute is exposed per action.
    gpn, intra, inter = cluster.gpus_per_node, cluster.intra_node, cluster.inter_node
    dp_intra = t * dc <= gpn

    def ring_s(nr: np.ndarray, nbytes: np.ndarray, passes: np.ndarray | float) -> np.ndarray:
        """`group_ring_s` over ``nr`` ranks spread over the t·c·d ranks of a dp group (gpn/(t·c·d) per node)."""
        g = np.where(dp_intra, nr, np.maximum(1.0, np.floor(nr * gpn / (t * dc))))
        sent = passes * (nr - 1) / np.maximum(nr, 1) * nbytes
        inside = passes * (nr - 1) * intra.latency_s + sent / intra.bandwidth_bytes_per_s
        across = passes * (nr - 1) * inter.latency_s + np.maximum(
            sent / g / inter.bandwidth_bytes_per_s, sent * (g - 1) / g / intra.bandwidth_bytes_per_s)
        return np.where(nr > 1, np.where(dp_intra, inside, across), 0.0)

    def gather_s(dense: np.ndarray, experts: np.ndarray) -> np.ndarray:
        """All-gather of ``dense`` bytes per rank over d and of ``experts`` bytes over the expert replicas."""
        return ring_s(dc, dense, 1.0) + ring_s(de, experts, 1.0)

    zb = col["sched"] == SCHEDULE_CODES.index("zb-h1")
    dense_chunk, x_chunk = chunk_layers * (per_layer - x_layer) / t, psi_x / v

    def chunk(f: np.ndarray, bi: np.ndarray, extra_params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A chunk's F and B with the part of its ZeRO-3 gather (its layers and ``extra_params``) that does not fit
        behind them (ZB-H1 gathers before B, not W)."""
        ag = np.where(zero >= 3, gather_s(pb * (dense_chunk + extra_params / t), pb * x_chunk), 0.0)
        return np.maximum(f, ag), bi + np.maximum(0.0, ag - (bi + np.where(zb, 0.0, w_c)))

    # The last rank runs the output layer in its last chunk and, with p = 1, the embedding in its first.
    hf, hb, ef, eb = col["hf"], col["hb"], col["ef"], col["eb"]
    f_last, bi_last = chunk(f_c + hf + np.where(single, ef, 0.0), bi_c + hb + np.where(single, eb, 0.0),
                            head_extra + np.where(single, embed, 0.0))
    first_too = (p == 1) & (v > 1)
    f_first, bi_first = chunk(f_c + ef, bi_c + eb, np.full(n, float(embed)))
    f_c, bi_c = chunk(f_c, bi_c, np.zeros(n))
    # Pipeline sends: Megatron's 1/t per tp rank, delaying only the receiver (the fill and drain below); DeepSpeed's
    # whole tensor per rank, blocking its sender: every F but the last stage's, every B but the first stage's.
    blk = col["blk"] > 0
    pp_intra = t * dc * p <= cluster.gpus_per_node
    pp_bytes = s / c * b * cfg.hidden * col["ab"] / np.where(blk, 1.0, t)
    c_pp = np.where(p > 1, np.where(pp_intra, intra.latency_s + pp_bytes / intra.bandwidth_bytes_per_s,
                                    inter.latency_s + pp_bytes / inter.bandwidth_bytes_per_s), 0.0)
    send = np.where(blk, c_pp, 0.0)
    f_c, bi_c, f_first, bi_last = f_c + send, bi_c + send, f_first + send, bi_last + send
    rank_mb = (v - 1) * (f_c + bi_c + w_c) + f_last + bi_last + w_c \
        + np.where(first_too, f_first + bi_first - f_c - bi_c, 0.0)
    # with p > 1 the first rank may be the busier (a vocabulary-sized embedding gathered under ZeRO-3)
    rank_mb = np.maximum(rank_mb, (v - 1) * (f_c + bi_c + w_c) + f_first + bi_first + w_c)
    sched = col["sched"]
    # ZB-H1 hides min(m − 1, p − 1) weight gradients in the drain (exact for our schedule with even stages).
    # interleaved: the first chunk's F + B when it is the slower (its ZeRO-3 gather of the embedding) — its
    # warm-up and cool-down pass through it as often as through the others
    fb = np.maximum(f_c + bi_c, np.where((p > 1) & (v > 1), f_first + bi_first - eb - ef, 0.0))
    bubble = np.where(zb, (p - 1) * fb - np.minimum(m - 1, p - 1) * w_c, (p - 1) * (fb + w_c))
    pipe = m * rank_mb + bubble + np.where(blk, 0.0, 2 * (p * v - 1) * c_pp)

    grad_bytes = gb * psi
    ring = np.where(zero >= 1, 1.0, 2.0)  # reduce-scatter, or all-reduce (twice the traffic)
    reduce = ring_s(dc, gb * (psi - psi_x), ring) + ring_s(de, gb * psi_x, ring)
    last_frac = np.minimum(1.0, DDP_BUCKET_BYTES / np.maximum(grad_bytes / v, 1.0))
    # Overlapped: each chunk's share R/v starts with its last backward, one after the other. The rank's k-th chunk
    # from the end runs its last backward k·p backward slots before the pipeline ends (Megatron's interleaved
    # cool-down: groups of p micro-batches per chunk), so k + 1 shares must fit in k·p + 1 slots; ZB-H1's last
    # share starts with the last weight-gradient pass. Linear in k: the most exposed is k = 0 or k = v − 1.
    slot = np.where(zb, w_c, bi_c + w_c)
    exposed = np.maximum(np.maximum(reduce / v - slot, reduce - ((v - 1) * p + 1) * slot), 0.0)
    dp_exposed = np.where(col["overlap"] > 0, np.maximum(exposed, reduce * last_frac / v), reduce)
    bw = (chip.main_memory.bandwidth_bytes_per_s or 1.0) * (chip.efficiency.memory if chip.efficiency else 1.0)
    opt = col["adam"] * ((psi - psi_x) / np.where(zero >= 1, dc, 1) + psi_x / np.where(zero >= 1, de, 1)) / bw
    after = np.where((zero == 1) | (zero == 2), gather_s(pb * (psi - psi_x), pb * psi_x), 0.0)
    step = pipe + dp_exposed + opt + after

    # Memory on the first rank (embedding, most in-flight micro-batches) and the last (logits).
    gp = SCHEDULE_CODES.index("gpipe")
    il = SCHEDULE_CODES.index("interleaved")
    # interleaved: Megatron's warm-up forwards plus one, all m·v chunks when m = p (schedules.build)
    all_warm = m == p
    chunks_first = np.where(sched == gp, m, np.where(
        sched == il, np.where(all_warm, m * v, np.minimum(2 * (p - 1) + (v - 1) * p + 1, m * v)), np.minimum(p, m)))
    chunks_last = np.where(sched == gp, m, np.where(
        sched == il, np.where(all_warm, m * v, np.minimum((v - 1) * p + 1, m * v)),
        np.where(zb, np.minimum(p, m), 1.0)))
    def states(replicas: np.ndarray) -> np.ndarray:
        """Bytes of model states per parameter sharded by ZeRO over ``replicas``."""
        return (pb / np.where(zero >= 3, replicas, 1) + gb / np.where(zero >= 2, replicas, 1)
                + ob / np.where(zero >= 1, replicas, 1))

    experts = states(de) * psi_x
    act_first = chunks_first * chunk_layers * col["act"] + col["work"]
    act_last = chunks_last * chunk_layers * col["act"] + col["work"] + lb * s / c * b * cfg.vocab / t
    # ZeRO-3: one gathered layer in use and one prefetched, of the rank's largest chunk (embedding, output layer)
    both = np.where(single, embed + head_extra, np.maximum(embed, head_extra))

    def buffers(extra: np.ndarray) -> np.ndarray:
        per_layer_bytes = pb * (dense_chunk + x_chunk + np.where(p == 1, both, extra) / t) / chunk_layers
        return np.where(p > 1, 4 * pp_bytes, 0.0) + np.where(zero >= 3, 2 * per_layer_bytes, 0.0)

    mem = np.maximum(states(dc) * (psi_first - psi_x) + act_first + buffers(np.full(n, float(embed))),
                     states(dc) * (psi_last - psi_x) + act_last + buffers(head_extra)) + experts
    return step, mem


def search(model: TrainModel, cluster: Cluster, gpus: int, global_batch: int, *, top: int = 10,
           max_micro_batch: int = 16, base: ParallelPlan | None = None) -> SearchResult:
    """The ``top`` fastest plans that fit in memory, re-simulated event by event; ties go to less memory.
    ``base`` gives the fields the search does not vary (precision, bytes per parameter, dp overlap)."""
    start = time.perf_counter()
    plans = enumerate_plans(model, cluster, gpus, global_batch, max_micro_batch=max_micro_batch, base=base)
    if not plans:
        return SearchResult(results=(), evaluated=0, fitting=0, seconds=time.perf_counter() - start,
                            estimate_seconds=0.0)
    step, mem = estimate(model, cluster, plans)
    estimated = time.perf_counter()
    capacity = cluster.load_chip().main_memory.capacity_bytes
    fits = mem <= capacity
    order = [int(i) for i in np.lexsort((mem, np.where(fits, step, np.inf))) if fits[i]]
    # Re-simulate a few more than asked: the closed form may order near-ties differently.
    chosen = [simulate(model, cluster, plans[i]) for i in order[: top * 3]]
    chosen = sorted((r for r in chosen if r.fits), key=lambda r: (round(r.step_time_s, 9), r.memory.total))[:top]
    return SearchResult(results=tuple(chosen), evaluated=len(plans), fitting=int(fits.sum()),
                        seconds=time.perf_counter() - start, estimate_seconds=estimated - start)
