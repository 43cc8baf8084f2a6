"""Tensor/pipeline-parallel LLM inference (`xpusim llm --tp/--pp`): per-chip work, communication, memory and the
"how many chips" answer against hand arithmetic."""

import math

import pytest
from typer.testing import CliRunner

import xpusim
from xpusim.cli import app
from xpusim.engines.llm import Parallelism, Precision, TransformerConfig, estimate_llm, memory_per_gpu, min_gpus
from xpusim.hardware.chip import load_chip
from xpusim.hardware.cluster import Fabric
from xpusim.workload.zoo import llm_configs

runner = CliRunner()
H100 = load_chip("h100-sxm")
# 100 GB/s one way, 2 µs, no derating: round numbers for hand arithmetic
LINK = Fabric(name="test link", bandwidth_gb_per_s_one_way_per_gpu=100, latency_us=2, efficiency=1.0, source="test")


def config(name: str) -> TransformerConfig:
    return TransformerConfig.from_hf(name, llm_configs()[name]["config"])


def test_llama2_70b_weights_per_chip_at_tp8_by_hand() -> None:
    """Per layer: attention 8192·8192·2 + 2·8192·1024 = 150,994,944 and MLP 3·8192·28672 = 704,643,072, both ÷ 8;
    two RMSNorms 16,384 stay whole: 106,971,136 per chip. × 80 layers + embedding and head 32000·8192/8 each +
    final norm 8192 = 8,623,235,072 parameters × 2 bytes."""
    w, kv, act = memory_per_gpu(config("llama2-70b"), Precision(), 2304, 2048, True, tp=8, pp=1)
    assert w == 8_623_235_072 * 2
    assert kv == 2 * 80 * 1 * 128 * 2304 * 2  # one key/value head per chip
    assert act == 2048 * (2 * 8192 + 2 * 28672 // 8) * 2


def test_pipeline_stage_holds_its_layers_and_one_end() -> None:
    """pp = 2, tp = 1: 40 layers of 855,654,400 plus the embedding (or the head and final norm) 262,144,000."""
    w, kv, _ = memory_per_gpu(config("llama2-70b"), Precision(), 100, 100, True, tp=1, pp=2)
    assert w == (40 * 855_654_400 + 32000 * 8192 + 8192) * 2
    assert kv == 2 * 40 * 8 * 128 * 100 * 2


def test_tensor_parallel_divides_the_matmuls_exactly() -> None:
    cfg = config("llama2-7b")
    one = estimate_llm(cfg, H100, batch=2, prompt_len=64, gen_len=0)
    four = estimate_llm(cfg, H100, batch=2, prompt_len=64, gen_len=0, parallel=Parallelism(tp=4, fabric=LINK))
    matmul = [o.flops for o in one.prefill.ops if o.kind == "matmul"]
    matmul4 = [o.flops for o in four.prefill.ops if o.kind == "matmul"]
    assert sum(matmul4) * 4 == sum(matmul)  # q, k, v, o, gate, up, down and the vocabulary-parallel lm_head


def test_communication_by_hand() -> None:
    """tp = 2, batch 1, prompt 64 on llama2-7b (h 4096, 32 layers, vocabulary 32000, bf16): the activations are
    64·4096·2 B = 524,288 B; a ring all-reduce over 2 costs 2α + S/β = 4 µs + 5.24288 µs; 2·32 + 1 of them, and an
    all-gather of the last position's logits (32000·2 B = 64,000 B: α + S/2/β = 2 µs + 0.32 µs)."""
    cfg = config("llama2-7b")
    est = estimate_llm(cfg, H100, batch=1, prompt_len=64, gen_len=0, parallel=Parallelism(tp=2, fabric=LINK))
    all_reduce = 4e-6 + 524_288 / 100e9
    assert est.prefill.comm_s == pytest.approx(65 * all_reduce + 2e-6 + 32_000 / 100e9)
    # pp = 2 alone: one send of the activations between the two stages, α + S/β
    pp = estimate_llm(cfg, H100, batch=1, prompt_len=64, gen_len=0, parallel=Parallelism(pp=2, fabric=LINK))
    assert pp.prefill.comm_s == pytest.approx(2e-6 + 524_288 / 100e9)
    alone = estimate_llm(cfg, H100, batch=1, prompt_len=64, gen_len=0)
    assert pp.prefill.time_s == pytest.approx(alone.prefill.time_s + pp.prefill.comm_s)  # stages one after the other


def test_throughput_per_chip_and_cost_of_the_group() -> None:
    est = estimate_llm(config("llama2-7b"), H100, batch=8, prompt_len=128, gen_len=16,
                       parallel=Parallelism(tp=4, fabric=LINK))
    assert est.tokens_per_s_per_gpu == pytest.approx(est.tokens_per_s / 4)
    assert est.cost_usd_per_million_tokens(2.0) == pytest.approx(4 * 2.0 / 3600 / est.tokens_per_s * 1e6)


def test_min_gpus_for_llama2_70b_on_h100() -> None:
    """138 GB of bf16 weights against 85.9 GB (80 GiB): one chip cannot, two can (tp 2 preferred to pp 2)."""
    cfg = config("llama2-70b")
    assert min_gpus(cfg, H100.main_memory.capacity_bytes, Precision(), 2304, 2048, True) == (2, 1)
    # a 40 GB chip needs 4: 138 / 4 = 34.5 GB of weights each
    assert min_gpus(cfg, 40e9, Precision(), 2304, 2048, True) == (4, 1)


@pytest.mark.parametrize(("args", "message"), [
    (["llama2-70b", "--chip", "h100-sxm", "--batch", "64"], "it needs at least 2 chips: --tp 2"),
    (["llama2-70b", "--chip", "h100-sxm", "--tp", "16"], "does not divide llama2-70b's 8 key/value heads"),
    (["llama2-70b", "--chip", "h100-sxm", "--tp", "3"], "does not divide llama2-70b's 64 attention heads"),
    (["llama2-7b", "--chip", "t4", "--tp", "2"], "no built-in cluster is made of t4"),
    (["llama2-7b", "--chip", "h100-sxm", "--tp", "2", "--cluster", "dgx-a100"], "built of a100-sxm-80gb"),
    (["llama2-7b", "--chip", "h100-sxm", "--pp", "33"], "exceeds llama2-7b's 32 layers"),
])
def test_cli_bad_input(args: list[str], message: str) -> None:
    r = runner.invoke(app, ["llm", *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.stderr


def test_cli_tp8_fits_llama2_70b() -> None:
    r = xpusim.llm("llama2-70b", chip="h100-sxm", tp=8, batch=64, prompt_len=2048, gen_len=16)
    d = r.to_dict()
    assert d["parallel"] == {"tp": 8, "pp": 1, "gpus": 8, "fabric": "NVLink4 via NVSwitch"}
    assert d["memory"]["fits"] and d["memory"]["per"] == "gpu"
    assert d["prefill"]["communication_s"] > 0
    assert math.isclose(d["tokens_per_s_per_gpu"] * 8, d["tokens_per_s"])
