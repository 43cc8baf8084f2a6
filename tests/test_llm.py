"""LLM inference: the analytic builder against the captured model, and decode/prefill on A100 by hand."""

import json

import pytest
from typer.testing import CliRunner

import xpusim
from xpusim.cli import app
from xpusim.engines.llm import Precision, TransformerConfig, analytic_workload_ops, estimate_llm
from xpusim.hardware.chip import load_chip
from xpusim.workload.zoo import llm_configs

runner = CliRunner()


def config(name: str) -> TransformerConfig:
    return TransformerConfig.from_hf(name, llm_configs()[name]["config"])


@pytest.mark.parametrize("name", ["gpt2", "llama2-7b", "llama3-8b"])
def test_analytic_builder_agrees_with_capture(name: str) -> None:
    """Same config, same tokens: MACs and parameters equal the captured Hugging Face model's exactly."""
    cfg = config(name)
    wl = xpusim.analyze(name, seq_len=64)
    ops = analytic_workload_ops(cfg, 1, 64, Precision(w_bits=32, a_bits=32, kv_bits=32))
    assert sum(o.macs for o in ops) == wl.totals().macs
    assert cfg.params == wl.params
    assert sum(o.flops for o in ops) == pytest.approx(wl.totals().flops, rel=0.005)


def test_llama2_7b_decode_on_a100_is_weights_over_bandwidth() -> None:
    """fp16, batch 1: each token reads every weight once: 6,738,415,616 × 2 B / 2039 GB/s = 6.61 ms.

    Precisely: all weights but the embedding table (one 4096-wide row of 32,000 is gathered per token):
    (6,738,415,616 − 32,000·4096) × 2 B = 13.21 GB → 6.48 ms; the KV cache adds 2·32·4096·2 B = 0.5 MB per token
    of context (128 to 192 tokens: 67 to 100 MB, about 1%); activations and norms are tiny.
    """
    est = estimate_llm(config("llama2-7b"), load_chip("a100-sxm-80gb"), batch=1, prompt_len=128, gen_len=64,
                       precision=Precision(float16="float16"))
    weights_over_bw = 6_738_415_616 * 2 / 2039e9
    streamed_weights_s = (6_738_415_616 - 32_000 * 4096) * 2 / 2039e9
    mean_kv_s = 2 * 32 * 4096 * 2 * (128 + 1 + 128 + 64) / 2 / 2039e9
    assert est.weights_bytes == 6_738_415_616 * 2
    assert est.decode.compute_bound_share == 0.0  # memory-bound
    assert est.time_per_output_token_s == pytest.approx(weights_over_bw, rel=0.02)
    assert est.time_per_output_token_s == pytest.approx(streamed_weights_s + mean_kv_s, rel=0.002)


def test_llama2_7b_prefill_1024_is_compute_bound() -> None:
    est = estimate_llm(config("llama2-7b"), load_chip("a100-sxm-80gb"), batch=1, prompt_len=1024, gen_len=1,
                       precision=Precision(float16="float16"))
    assert est.prefill.compute_bound_share > 0.8
    # Floor: the matmuls at 312 TFLOP/s. Dense: 2 FLOPs · 6.48 G layer weights · 1024 tokens = 13.26 TFLOP (42.5 ms);
    # attention: 32 layers · 2 products · 2 FLOPs · 32 heads · 1024² · 128 = 0.55 TFLOP (1.76 ms); lm_head for the
    # last token only. Norms, SiLU and residuals are memory-bound and add a few percent.
    dense = 2 * (32 * (4 * 4096**2 + 3 * 4096 * 11008)) * 1024
    attention = 32 * 2 * 2 * 32 * 1024**2 * 128
    floor = (dense + attention) / 312e12
    assert floor < est.time_to_first_token_s < 1.1 * floor


def test_memory_footprint_and_largest_batch_by_hand() -> None:
    est = estimate_llm(config("llama2-7b"), load_chip("a100-sxm-80gb"), batch=1, prompt_len=1024, gen_len=256)
    kv_per_seq = 2 * 32 * 32 * 128 * (1024 + 256) * 2  # K and V, layers, kv heads, head dim, tokens, bytes
    act_per_seq = 1024 * (2 * 4096 + 2 * 11008) * 2
    assert est.kv_cache_bytes == kv_per_seq == 671_088_640
    assert est.max_batch == (80 * 2**30 - 6_738_415_616 * 2) // (kv_per_seq + act_per_seq) == 98


def test_quantized_weights_and_kv_shrink_memory_and_decode_time() -> None:
    cfg, chip = config("llama2-70b"), load_chip("h100-sxm")
    fp16 = estimate_llm(cfg, chip, batch=8, prompt_len=512, gen_len=32)
    w4kv8 = estimate_llm(cfg, chip, batch=8, prompt_len=512, gen_len=32, precision=Precision(w_bits=4, kv_bits=8))
    assert w4kv8.weights_bytes == pytest.approx(fp16.weights_bytes / 4, rel=1e-6)
    assert w4kv8.kv_cache_bytes == fp16.kv_cache_bytes // 2
    assert not fp16.fits and w4kv8.fits  # 138 GB of fp16 weights do not fit in 80 GiB; 35 GB do
    assert w4kv8.time_per_output_token_s < fp16.time_per_output_token_s / 3


def test_flash_attention_saves_score_traffic() -> None:
    cfg, chip = config("llama2-7b"), load_chip("a100-sxm-80gb")
    on = estimate_llm(cfg, chip, batch=1, prompt_len=2048, gen_len=1, flash=True)
    off = estimate_llm(cfg, chip, batch=1, prompt_len=2048, gen_len=1, flash=False)
    scores = 32 * 32 * 2048 * 2048  # layers × heads × L × S
    assert off.prefill.bytes - on.prefill.bytes == 4 * scores * 2  # write S, read S, write P, read P at 2 B
    assert off.prefill.flops == on.prefill.flops


def test_llm_json_contract_and_errors() -> None:
    r = runner.invoke(app, ["llm", "llama2-7b", "--chip", "h100-sxm", "--batch", "16", "--prompt-len", "1024",
                            "--gen-len", "256", "--w-bits", "4", "--kv-bits", "8", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert {"time_s", "flops", "bytes"} <= d["prefill"].keys()
    assert {"time_per_token_s", "flops", "bytes"} <= d["decode"].keys()
    assert {"weights_bytes", "kv_cache_bytes", "activation_bytes"} <= d["memory"].keys()
    assert d["tokens_per_s"] > 0
    assert {layer["phase"] for layer in d["layers"]} == {"prefill", "decode (last step)"}
    r = runner.invoke(app, ["llm", "llama2-7b", "--chip", "h100-sxm", "--price-per-hour", "3.6", "-f", "json"])
    priced = json.loads(r.stdout)
    # $3.6/h = $0.001/s: a million tokens cost 1000 s / (tokens per second) dollars
    assert priced["cost_usd_per_million_tokens"] == pytest.approx(1000 / priced["tokens_per_s"])
    r = runner.invoke(app, ["llm", "llama2-7b", "--chip", "h100-sxm", "--prompt-len", "4000", "--gen-len", "200"])
    assert r.exit_code == 2 and "exceeds llama2-7b's 4096 positions" in r.stderr
    r = runner.invoke(app, ["llm", "lama2-7b", "--chip", "h100-sxm"])
    assert r.exit_code == 2 and "unknown LLM 'lama2-7b'" in r.stderr
    r = runner.invoke(app, ["llm", "llama2-7b", "--chip", "h100-sxm", "--w-bits", "5"])
    assert r.exit_code == 2 and "w_bits=5 is not one of" in r.stderr
