"""`xpusim serve`: the serving simulator against hand arithmetic — conservation, Little's law, the low-load and
saturated limits, the paged KV cache's size and exactly when it preempts — and its bad-input errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xpusim.api.serve import serve
from xpusim.cli import app
from xpusim.engines.llm import Parallelism, Precision, TransformerConfig, estimate_llm
from xpusim.engines.serve import (
    IterationCost,
    Lengths,
    Requests,
    ServeConfig,
    ServeError,
    kv_budget,
    read_trace,
    simulate,
)
from xpusim.hardware.chip import load_chip
from xpusim.workload.zoo import llm_configs

runner = CliRunner()
A100 = load_chip("a100-sxm-80gb")
P16 = Precision(float16="bfloat16")


def llama7b() -> TransformerConfig:
    return TransformerConfig.from_hf("llama2-7b", llm_configs()["llama2-7b"]["config"])


def fixed(n: int, prompt: int, gen: int, gap_s: float = 0.0) -> Requests:
    return Requests(np.arange(n) * gap_s, np.full(n, prompt), np.full(n, gen))


def cost(cfg: TransformerConfig) -> IterationCost:
    return IterationCost(cfg=cfg, chip=A100, precision=P16, parallel=Parallelism(), overhead_s=0.0)


def test_kv_blocks_by_hand() -> None:
    """80 GiB × 0.9 = 77,309,411,328 B; minus weights 6,738,415,616 × 2 B and the activations of an 8192-token
    iteration 8192 · (2·4096 + 2·11008) · 2 B = 494,927,872 B; a 16-token block holds 16 · 2·32·32·128·2 B =
    8,388,608 B: 7550 blocks."""
    b = kv_budget(llama7b(), A100, P16, Parallelism(), ServeConfig())
    assert b.weights_bytes == 13_476_831_232
    assert b.activation_bytes == 494_927_872
    assert b.block_bytes == 8_388_608
    assert b.blocks == (77_309_411_328 - 13_476_831_232 - 494_927_872) // 8_388_608 == 7550


@pytest.mark.parametrize(("block", "expected"), [(16, 7550 // 75), (32, 3775 // 38)])
def test_concurrent_sequences_equal_the_hand_count(block: int, expected: int) -> None:
    """Static batching reserves each request whole: prompt 1000 + output 200 keep 1199 tokens in the cache, i.e.
    ceil(1199 / 16) = 75 blocks (ceil(1199 / 32) = 38); the cache holds blocks // need sequences at once."""
    cfg = llama7b()
    sc = ServeConfig(scheduler="static", max_seqs=10_000, block_size=block)
    b = kv_budget(cfg, A100, P16, Parallelism(), sc)
    run = simulate(fixed(300, 1000, 200), cost(cfg), sc, b)
    assert b.blocks == {16: 7550, 32: 3775}[block]
    assert run.max_running == expected and run.preemptions == 0


@pytest.mark.parametrize(("blocks", "preemptions"), [(10, 0), (9, 1)])
def test_preemption_exactly_when_blocks_run_out(blocks: int, preemptions: int) -> None:
    """Two requests, prompt 16 and 60 output tokens: each ends with 16 + 59 = 75 cached tokens, 5 blocks of 16.
    They grow in step (1, 2, 3, 4, 5 blocks each), so 10 blocks suffice; with 9 the second one's fifth block is
    missing when the caches reach 64 tokens, and it — the newest — is preempted once."""
    cfg = llama7b()
    sc = ServeConfig(scheduler="sarathi", blocks=blocks)
    b = kv_budget(cfg, A100, P16, Parallelism(), sc)
    run = simulate(fixed(2, 16, 60), cost(cfg), sc, b)
    assert run.preemptions == preemptions
    assert sum(it.tokens_out for it in run.iterations) == 120  # every output token once, preempted or not
    if not preemptions:
        assert max(it.blocks_used for it in run.iterations) == 10
    else:
        first = next(i for i, it in enumerate(run.iterations) if it.decodes == 1)
        # before it both decoded: the prefill (16 tokens each) and 48 decode steps took both caches to 64 tokens,
        # 4 blocks each; the next step needs a fifth block for each and only one is free
        assert first == 1 + 48
        assert run.iterations[first - 1].blocks_used == 8 and run.iterations[first - 1].decodes == 2


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm"])
def test_full_reservation_admits_whole_requests_and_never_preempts(scheduler: str) -> None:
    """The same two requests (5 blocks each, whole) under TensorRT-LLM's GUARANTEED_NO_EVICT: with 10 blocks both
    run at once from the start; with 9 the second waits until the first has finished and freed its 5, and is
    scheduled exactly then — no preemption, one sequence at a time."""
    cfg = llama7b()
    for blocks, together in ((10, True), (9, False)):
        sc = ServeConfig(scheduler=scheduler, blocks=blocks, kv_reserve="full")  # type: ignore[arg-type]
        run = simulate(fixed(2, 16, 60), cost(cfg), sc, kv_budget(cfg, A100, P16, Parallelism(), sc))
        assert run.preemptions == 0 and sum(it.tokens_out for it in run.iterations) == 120
        assert run.iterations[0].blocks_used == (10 if together else 5)  # all of a request's blocks at admission
        assert run.max_running == (2 if together else 1)
        if not together:
            assert run.scheduled_s[1] == run.finish_s[0]


def test_conservation_and_littles_law() -> None:
    cfg = llama7b()
    sc = ServeConfig()
    rng = np.random.default_rng(1)
    n = 200
    reqs = Requests(np.cumsum(rng.exponential(1 / 1.5, n)), rng.integers(50, 600, n), rng.integers(20, 200, n))
    run = simulate(reqs, cost(cfg), sc, kv_budget(cfg, A100, P16, Parallelism(), sc))
    assert not np.isnan(run.finish_s).any()  # every request admitted finishes
    assert (run.first_token_s >= reqs.arrival_s).all() and (run.finish_s >= run.first_token_s).all()
    assert sum(it.tokens_out for it in run.iterations) == int(reqs.gen_len.sum())  # tokens out = Σ gen lengths
    assert sum(it.prefill_tokens for it in run.iterations) == int(reqs.prompt_len.sum())  # no preemption here
    assert run.preemptions == 0
    # Little's law, L = λW, with L from the engine's own bookkeeping (sequences in its running list during each
    # iteration: those left after it plus those that finished in it) and W from the requests' timestamps (admission
    # to finish): two records of one occupancy, which must agree
    t0, t1 = float(run.scheduled_s.min()), float(run.finish_s.max())
    occupancy = sum((it.running + int((run.finish_s == it.end_s).sum())) * (it.end_s - it.start_s)
                    for it in run.iterations)
    lam = n / (t1 - t0)
    w = float((run.finish_s - run.scheduled_s).mean())
    assert occupancy / (t1 - t0) == pytest.approx(lam * w, rel=1e-9)
    assert float(run.queue_s.max()) < max(it.end_s - it.start_s for it in run.iterations)  # at most one iteration


def test_low_load_ttft_is_one_prefill_and_tpot_one_decode_step() -> None:
    """One request alone: TTFT is `xpusim llm`'s prefill of batch 1, TPOT its decode time per token (the serving
    engine costs decode attention at the context rounded up to a block: within 0.5%)."""
    cfg = llama7b()
    sc = ServeConfig()
    run = simulate(fixed(1, 512, 64), cost(cfg), sc, kv_budget(cfg, A100, P16, Parallelism(), sc))
    est = estimate_llm(cfg, A100, batch=1, prompt_len=512, gen_len=64, precision=P16)
    assert float(run.ttft_s[0]) == pytest.approx(est.prefill.time_s, rel=1e-9)
    assert float(run.tpot_s[0]) == pytest.approx(est.decode.time_s / 64, rel=5e-3)


def test_saturated_static_throughput_is_the_static_batch_throughput() -> None:
    """Every request at once, static batches of the size the cache allows (or max_seqs): the throughput is
    `xpusim llm`'s tokens/s at that batch — prefill, then decode steps to the end."""
    cfg = llama7b()
    sc = ServeConfig(scheduler="static", max_seqs=32)
    run = simulate(fixed(96, 256, 32), cost(cfg), sc, kv_budget(cfg, A100, P16, Parallelism(), sc))
    est = estimate_llm(cfg, A100, batch=32, prompt_len=256, gen_len=32, precision=P16)
    out_per_s = 96 * 32 / (run.finish_s.max() - 0.0)
    # the static engine's tokens/s counts the last decode step the same way: gen_len tokens in prefill + (gen−1)
    # decode steps; xpusim llm times gen_len decode steps — one step more per batch
    step = est.decode.time_s / 32
    assert out_per_s == pytest.approx(32 * 32 / (est.prefill.time_s + est.decode.time_s - step), rel=5e-3)


def test_api_serve_and_slo_capacity_meets_the_slo() -> None:
    r = serve("llama2-7b", chip="a100-sxm-80gb", rate=1.0, requests=60, prompt_len="200", gen_len="50",
              slo="ttft=0.5,tpot=0.05")
    assert r.capacity is not None and r.capacity.rate_per_s > 0
    met = [rate for rate, ok in r.capacity.tried if ok]
    missed = [rate for rate, ok in r.capacity.tried if not ok]
    assert r.capacity.rate_per_s == max(met) and (not missed or min(missed) > r.capacity.rate_per_s)
    d = r.to_dict()
    assert d["requests"] == 60 and d["output_tokens"] == 3000
    b = d["roofline_bound"]  # the bound is a bound
    assert 0 < b["roofline_busy_s"] < b["busy_s"] and b["roofline_output_tokens_per_busy_s"] > d["output_tokens_per_s"]


def test_lengths_parse() -> None:
    assert Lengths.parse("100", "--gen-len") == Lengths("fixed", 100)
    assert Lengths.parse("lognormal:1000,0.6", "--prompt-len") == Lengths("lognormal", 1000, 0.6)
    with pytest.raises(ServeError, match="--gen-len 'normal:3'"):
        Lengths.parse("normal:3", "--gen-len")


def test_trace_bad_row_names_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "requests.csv"
    f.write_text("arrival_s,prompt_len,gen_len\n0.0,100,20\n0.5,abc,20\n")
    with pytest.raises(ServeError, match=r"line 3: prompt_len 'abc'"):
        read_trace(f)
    f.write_text("arrival,prompt_len\n0,1\n")
    with pytest.raises(ServeError, match="line 1: the header lacks arrival_s, gen_len"):
        read_trace(f)


@pytest.mark.parametrize(("args", "message"), [
    (["llama2-70b", "--chip", "h100-sxm", "--tp", "3", "--rate", "1"], "does not divide llama2-70b's 64 attention"),
    (["llama2-70b", "--chip", "h100-sxm", "--tp", "16", "--rate", "1"], "8 key/value heads"),
    (["llama2-70b", "--chip", "h100-sxm", "--rate", "1"], "it needs at least 2 chips: --tp 2"),
    (["llama2-7b", "--chip", "a100-sxm-80gb", "--rate", "0"], "--rate 0 must be > 0"),
    (["llama2-7b", "--chip", "a100-sxm-80gb", "--rate", "-2"], "--rate -2 must be > 0"),
    (["llama2-7b", "--chip", "a100-sxm-80gb"], "give --rate"),
    (["llama2-7b", "--chip", "a100-sxm-80gb", "--rate", "1", "--scheduler", "fifo"], "--scheduler 'fifo'"),
    (["llama2-7b", "--chip", "a100-sxm-80gb", "--rate", "1", "--slo", "ttft=2,latency=1"], "--slo"),
    (["llama2-7b", "--chip", "a100-sxm-80gb", "--rate", "1", "--overhead", "fast"], "--overhead 'fast'"),
    (["llama2-7b", "--chip", "a100-sxm-80gb", "--rate", "1", "--kv-reserve", "all"], "--kv-reserve 'all': expected"),
])
def test_cli_bad_input_one_error_line(args: list[str], message: str) -> None:
    r = runner.invoke(app, ["serve", *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.stderr


def test_cli_trace_file_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "requests.csv"
    f.write_text("arrival_s,prompt_len,gen_len\n0.0,100,20\n-1,100,20\n")
    r = runner.invoke(app, ["serve", "llama2-7b", "--chip", "a100-sxm-80gb", "--trace", str(f)])
    assert r.exit_code == 2 and "line 3: arrival_s '-1'" in r.stderr


def test_cli_json_trace_and_plot(tmp_path: Path) -> None:
    trace, plot = tmp_path / "serve.json", tmp_path / "cdf.png"
    r = runner.invoke(app, ["serve", "llama2-7b", "--chip", "a100-sxm-80gb", "--rate", "2", "--requests", "40",
                            "--prompt-len", "uniform:100,300", "--gen-len", "30", "--trace", str(trace),
                            "--plot", str(plot), "-f", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["requests"] == 40 and d["output_tokens"] == 40 * 30
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(1 for e in events if e["ph"] == "X") == d["iterations"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_disaggregated_prefill_and_decode_by_hand() -> None:
    """Llama-2-70B at tp 8: a token's keys and values on one chip are 2 · 80 layers · 1 head · 128 · 2 B = 40,960 B;
    2 + 6 instances of 8 chips span 64 GPUs, so the transfer crosses InfiniBand (50 GB/s one way at 80%, 5 µs):
    a 1000-token prompt moves in 5 µs + 40,960,000 B / 40 GB/s = 1.029 ms."""
    r = serve("llama2-70b", chip="h100-sxm", tp=8, rate=2.0, requests=40, prompt_len="1000", gen_len="20",
              disaggregate="prefill=2,decode=6", overhead="none")
    d = r.to_dict()
    assert d["disaggregated"]["gpus"] == 64
    assert d["disaggregated"]["kv_transfer_s"]["p50"] == pytest.approx(5e-6 + 40_960_000 / 40e9)
    run = r.run
    assert sum(it.tokens_out for it in run.iterations) == 40 * 20  # the first token in prefill, 19 in decode
    assert sum(it.prefill_tokens for it in run.iterations) == 40 * 1000  # prompts prefilled once, never in decode
    transfer = 5e-6 + 40_960_000 / 40e9
    assert (run.finish_s - run.first_token_s >= transfer).all()  # decoding starts after the KV arrives
    assert {it.instance for it in run.iterations} == set(range(8))
    # at this load each prompt runs alone: TTFT is one prefill, as without disaggregation
    alone = serve("llama2-70b", chip="h100-sxm", tp=8, rate=0.001, requests=1, prompt_len="1000", gen_len="1",
                  overhead="none")
    assert float(run.ttft_s.min()) == pytest.approx(float(alone.run.ttft_s[0]))


def test_disaggregate_needs_both_pools() -> None:
    r = runner.invoke(app, ["serve", "llama2-7b", "--chip", "a100-sxm-80gb", "--rate", "1", "--disaggregate",
                            "prefill=2"])
    assert r.exit_code == 2 and "give both" in r.stderr
