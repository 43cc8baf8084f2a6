"""Mixtures of experts and multi-head latent attention in the analytic transformer (`xpusim llm`, `serve`): the
zoo's MoE models against their published sizes and hand counts."""

import pytest

import xpusim
from xpusim.engines.llm import Parallelism, Precision, estimate_llm, memory_per_gpu
from xpusim.hardware.chip import load_chip
from xpusim.hardware.cluster import Fabric
from xpusim.workload.transformer import analytic_workload_ops, expected_experts, layer_ops, load_transformer

BF16 = Precision(float16="bfloat16")
EXPERT_7B = 3 * 4096 * 14336  # one Mixtral-8x7B expert: gate, up, down


def test_mixtral_8x7b_macs_at_1024_tokens_by_closed_form() -> None:
    """Per layer and token: q and o 4096², k and v 4096 × 1024 (8 key/value heads of 128), the router 4096 × 8,
    two of eight SwiGLU experts 2 × 3 × 4096 × 14336; per layer the attention products 2 · s² · 4096 (scores and
    the weighted sum, 32 heads × 128); the lm_head 4096 × 32000 per token (logits for all positions)."""
    cfg = load_transformer("mixtral-8x7b")
    s, h = 1024, 4096
    per_token = 2 * h * h + 2 * h * 1024 + h * 8 + 2 * EXPERT_7B
    expected = 32 * (s * per_token + 2 * s * s * h) + s * h * 32000
    ops = analytic_workload_ops(cfg, 1, s, BF16, logits="all")
    assert sum(o.macs for o in ops) == expected


def test_published_sizes() -> None:
    """Mixtral-8x7B: 46.7B parameters, 12.9B active (Mistral AI); Qwen3-235B-A22B and Qwen3-30B-A3B: 235B/22B and
    30.5B/3.3B (their names and model cards); DeepSeek-V3: 671B, 37B activated per token (its report counts without
    the embedding table); DeepSeek-V2-Lite: 15.7B, 2.4B."""
    mix = load_transformer("mixtral-8x7b")
    # by hand: 32 × (attention 41,943,040 + norms 8,192 + router 32,768 + 8 experts) + embedding and head + norm
    assert mix.params == 32 * (41_943_040 + 8_192 + 32_768 + 8 * EXPERT_7B) + 2 * 32000 * 4096 + 4096
    assert round(mix.params / 1e9, 1) == 46.7 and round(mix.active_params / 1e9, 1) == 12.9
    q235 = load_transformer("qwen3-235b-a22b")
    assert round(q235.params / 1e9) == 235 and round(q235.active_params / 1e9) == 22
    q30 = load_transformer("qwen3-30b-a3b")
    assert round(q30.params / 1e9, 1) == 30.5 and abs(q30.active_params - 3.3e9) < 0.1e9
    ds = load_transformer("deepseek-v3")
    # MLA per layer: q_a 7168·1536 + norm 1536 + q_b 1536·128·192 + kv_a 7168·576 + norm 512 + kv_b 512·128·256
    # + o 128·128·7168 = 187,107,328; dense MLP 3·7168·18432; MoE: router 7168·256 + 256 experts of 3·7168·2048 +
    # one shared (the routing bias is a buffer, not a parameter)
    mla, expert = 187_107_328, 3 * 7168 * 2048
    dense_layer = mla + 2 * 7168 + 3 * 7168 * 18432
    moe_layer = mla + 2 * 7168 + 7168 * 256 + 257 * expert
    assert ds.params == 3 * dense_layer + 58 * moe_layer + 2 * 129280 * 7168 + 7168
    assert abs(ds.params / 671e9 - 1) < 0.01
    without_embedding = ds.active_params - 129280 * 7168
    assert round(without_embedding / 1e9) == 37
    lite = load_transformer("deepseek-v2-lite")
    assert round(lite.params / 1e9, 1) == 15.7 and abs(lite.active_params - 102400 * 2048 - 2.4e9) < 0.1e9


def test_mla_caches_the_latent_only() -> None:
    """DeepSeek-V3 keeps 512 latent + 64 rotary elements per token and layer: 61 · 576 · 2 B = 70,272 B per token
    (a standard 128-head cache of 192-wide keys and 128-wide values would be 61 · 128 · 320 · 2 B = 4.9 MB)."""
    ds = load_transformer("deepseek-v3")
    _, kv, _ = memory_per_gpu(ds, BF16, 1, 1, True)
    assert kv == 61 * 576 * 2


def test_expected_experts() -> None:
    assert expected_experts(8, 2, 1) == pytest.approx(2)  # one token: exactly its top-2
    assert expected_experts(8, 2, 4) == pytest.approx(8 * (1 - 0.75 ** 4))  # 5.47 of 8
    assert expected_experts(256, 8, 1000) == pytest.approx(256, rel=1e-6)  # a prefill reaches them all


def test_mixtral_decode_at_batch_1_reads_two_of_eight_experts() -> None:
    """On an MI300X (192 GiB holds all 46.7B parameters), batch 1: every step reads the attention, router and norm
    weights, two experts per layer and the lm_head: 32 × (41,943,040 + 32,768 + 8,192 + 2 × 176,160,768) + 4096 ×
    32000 + 4096 = 12,748,853,248 parameters, 25.5 GB at 2 bytes — at 5300 GB/s, 4.81 ms per token (the KV cache of
    256 tokens adds 0.03 GB)."""
    chip = load_chip("mi300x")
    est = estimate_llm(load_transformer("mixtral-8x7b"), chip, batch=1, prompt_len=128, gen_len=128, precision=BF16)
    weights_read = (32 * (41_943_040 + 32_768 + 8_192 + 2 * EXPERT_7B) + 4096 * 32000 + 4096) * 2
    assert est.time_per_output_token_s == pytest.approx(weights_read / 5300e9, rel=0.02)
    # at batch 64 nearly every expert is read: decode is no longer 2/8 of the weights
    big = estimate_llm(load_transformer("mixtral-8x7b"), chip, batch=64, prompt_len=128, gen_len=16, precision=BF16)
    step = next(o for o in big.decode.ops if "experts.up" in o.name)
    assert step.bytes > 7.9 * 4096 * 14336 * 2


def test_tensor_parallel_splits_every_expert() -> None:
    cfg = load_transformer("mixtral-8x7b")
    link = Fabric(name="l", bandwidth_gb_per_s_one_way_per_gpu=100, latency_us=1, efficiency=1.0, source="test")
    one = estimate_llm(cfg, load_chip("mi300x"), batch=1, prompt_len=64, gen_len=0, precision=BF16)
    two = estimate_llm(cfg, load_chip("mi300x"), batch=1, prompt_len=64, gen_len=0, precision=BF16,
                       parallel=Parallelism(tp=2, fabric=link))
    flops = {o.name: o.flops for o in one.prefill.ops if "experts" in o.name and "matmul" in o.name}
    flops2 = {o.name: o.flops for o in two.prefill.ops if "experts" in o.name and "matmul" in o.name}
    assert flops and all(flops2[n] * 2 == f for n, f in flops.items())


def test_deepseek_dense_layers_are_dense() -> None:
    ds = load_transformer("deepseek-v3")
    dense = layer_ops(ds, 1, 16, 16, BF16, flash=True, moe=False)
    moe = layer_ops(ds, 1, 16, 16, BF16, flash=True, moe=True)
    assert any("mlp.gate" in o.name for o in dense) and not any("moe" in o.name for o in dense)
    assert any("moe.shared" in o.name for o in moe) and any("moe.router" in o.name for o in moe)
    # decode uses the absorbed attention: no per-head expansion of the cached latents
    step = layer_ops(ds, 1, 1, 4096, BF16, flash=True)
    assert not any("kv_b" in o.name for o in step) and any("q_absorb" in o.name for o in step)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v2-lite"])
def test_captured_hugging_face_model_equals_the_analytic_builder(name: str) -> None:
    """`xpusim analyze` captures the Hugging Face model on meta (bf16: the experts' grouped GEMM has no fp32 kernel);
    its MACs (the grouped GEMM counted as R·K·N for R routed rows) and parameters equal the analytic builder's."""
    import xpusim

    wl = xpusim.analyze(name, seq_len=64, device="meta")
    cfg = load_transformer(name)
    assert wl.totals().macs == sum(o.macs for o in analytic_workload_ops(cfg, 1, 64, BF16, logits="all"))
    assert wl.params == cfg.params
    assert not wl.uncounted


def test_grouped_mm_histc_polar_formulas_by_hand() -> None:
    import torch

    from xpusim.workload.formulas import FORMULAS

    meta = {"device": "meta"}
    a, b = torch.empty(12, 8, **meta), torch.empty(3, 8, 5, **meta)  # 12 routed rows, 3 experts of 8×5
    assert FORMULAS["_grouped_mm"]((a, b), {}, torch.empty(12, 5, **meta)).macs == 12 * 8 * 5
    a3, b3 = torch.empty(2, 4, 8, **meta), torch.empty(2, 8, 5, **meta)
    assert FORMULAS["_grouped_mm"]((a3, b3), {}, torch.empty(2, 4, 5, **meta)).macs == 2 * 4 * 8 * 5
    x = torch.empty(100, **meta)
    assert FORMULAS["histc"]((x,), {}, torch.empty(8, **meta)).flops == 100
    assert FORMULAS["polar"]((torch.empty(10, **meta), torch.empty(10, **meta)), {},
                             torch.empty(10, dtype=torch.complex64, **meta)).flops == 4 * 10
    assert FORMULAS["floor_divide"]((x, 2), {}, torch.empty(100, **meta)).flops == 100


def test_expert_parallel_decode_waits_for_the_busiest_chip() -> None:
    """Mixtral-8x7B on 8 H100s (tp 8), decode at batch 1: a token reaches exactly 2 of the 8 experts. The tensor
    split reads 2 × 1/8 of an expert's weights per layer on every chip; expert parallelism (one whole expert per
    chip) makes the step wait for a chip that reads one whole expert: per layer (1 − 2/8) · 3 · 4096 · 14336 · 2 B
    more, at the HBM bandwidth (the roofline's memory-bound decode GEMMs). At batch 64 every expert is reached and
    both read one expert's worth per chip: the same time."""
    from xpusim.engines.llm import expected_max_touched

    assert expected_max_touched(8, 2, 1, 8) == pytest.approx(1.0)
    # 4 experts on 2 chips, one token picking 2: both on one chip with probability 2/6 → E[max] = 2/6·2 + 4/6·1
    assert expected_max_touched(4, 2, 1, 2) == pytest.approx(4 / 3)
    assert expected_max_touched(8, 2, 64, 8) == pytest.approx(1.0)
    kw = {"chip": "h100-sxm", "tp": 8, "prompt_len": 128, "gen_len": 4}
    tpot = {(ep, b): xpusim.llm("mixtral-8x7b", ep=ep, batch=b, **kw).estimate.time_per_output_token_s
            for ep in (False, True) for b in (1, 64)}
    extra = 32 * (1 - 2 / 8) * 3 * 4096 * 14336 * 2 / 3.35e12
    assert tpot[(True, 1)] - tpot[(False, 1)] == pytest.approx(extra, rel=1e-3)
    assert tpot[(True, 64)] == pytest.approx(tpot[(False, 64)], rel=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["mixtral-8x7b", "--chip", "h100-sxm", "--ep"], "ep splits the experts over the tensor-parallel chips"),
    (["llama2-7b", "--chip", "h100-sxm", "--tp", "2", "--ep"], "ep: llama2-7b has no experts to split"),
    (["qwen3-30b-a3b", "--chip", "h100-sxm", "--tp", "3", "--ep"], "tp=3 does not divide"),
])
def test_llm_ep_bad_input_one_line(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from xpusim.cli import app

    r = CliRunner().invoke(app, ["llm", *args])
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_serving_with_expert_parallelism_reads_the_busiest_chips_experts() -> None:
    """The serving simulator's iteration cost takes the same expert placement: one decode token of Mixtral-8x7B on
    8 H100s (ideal roofline) costs (1 − 2/8) · 3 · 4096 · 14336 · 2 B more per layer with whole experts, at the HBM
    bandwidth; `serve --ep` without --tp is one error line."""
    from typer.testing import CliRunner

    from xpusim.cli import app
    from xpusim.engines.serve import IterationCost

    cfg, chip = load_transformer("mixtral-8x7b"), load_chip("h100-sxm")
    link = Fabric(name="test link", bandwidth_gb_per_s_one_way_per_gpu=450, latency_us=1, source="test")

    def linear(ep: bool) -> float:
        par = Parallelism(tp=8, fabric=link, ep=ep)
        return IterationCost(cfg=cfg, chip=chip, precision=Precision(), parallel=par, overhead_s=0.0).linear_s(1)

    assert linear(True) - linear(False) == pytest.approx(32 * (1 - 2 / 8) * 3 * 4096 * 14336 * 2 / 3.35e12, rel=1e-3)
    r = CliRunner().invoke(app, ["serve", "mixtral-8x7b", "--chip", "h100-sxm", "--ep", "--requests", "10"])
    assert r.exit_code == 2 and "--ep splits the experts over the tensor-parallel chips" in r.stderr, r.stderr
