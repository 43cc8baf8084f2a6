"""Expert parallelism in the training simulator (`xpusim parallel --ep --etp`): the all-to-all volume, expert
memory divided by EP and expert TP, work unchanged, and the errors of a plan that cannot place the experts."""

import pytest
from typer.testing import CliRunner

import xpusim
from xpusim.cli import app
from xpusim.hardware.chip import load_chip
from xpusim.hardware.cluster import Fabric, GroupLinks, all_to_all_s
from xpusim.parallel.plan import PlanError
from xpusim.parallel.simulate import layer_cost, moe_a2a_bytes, precision
from xpusim.workload.transformer import load_transformer

runner = CliRunner()
LINK = Fabric(name="test link", bandwidth_gb_per_s_one_way_per_gpu=100, latency_us=2, efficiency=1.0, source="test")


def test_all_to_all_volume_by_hand() -> None:
    """Mixtral-8x7B, one micro-batch of 4096 tokens, tp 1: every token's hidden state (4096 × 2 B) goes to its 2
    experts: 4096 · 2 · 4096 · 2 B = 67,108,864 B per rank; among 8 ranks 7/8 of it leaves, in 7 messages:
    7 · 2 µs + 58,720,256 B / 100 GB/s."""
    cfg = load_transformer("mixtral-8x7b")
    nbytes = moe_a2a_bytes(cfg, 4096, 1, 1, precision())
    assert nbytes == 4096 * 2 * 4096 * 2
    one = all_to_all_s(nbytes, 8, LINK)
    assert one == pytest.approx(7 * 2e-6 + 7 / 8 * 67_108_864 / 100e9)
    links = GroupLinks(n=8, per_node=8, intra=LINK, inter=LINK)
    lc = layer_cost(cfg, load_chip("h100-sxm"), 4096, 1, 1, False, "none", None, "bf16", 8, links)
    assert lc.ep_fwd_s == pytest.approx(2 * one) and lc.ep_bwd_s == pytest.approx(2 * one)  # dispatch + combine
    # with tp 2 each rank sends its half of the tokens
    assert moe_a2a_bytes(cfg, 4096, 1, 2, precision()) == nbytes / 2


def test_expert_memory_divides_by_ep_dense_memory_does_not() -> None:
    """Mixtral-8x7B's routed experts: 32 layers × 8 × 3 · 4096 · 14336 = 45,097,156,608 parameters. On 8 GPUs
    (dp 8), ep 8 keeps 1/8 of them per GPU: 7/8 × 45.1 G × 2 B fewer parameter bytes (and the same for gradients);
    everything else (attention, router, embeddings) stays whole."""
    kw = {"cluster": "dgx-h100", "gpus": 8, "batch": 8, "seq_len": 1024, "zero": 1}
    one = xpusim.train("mixtral-8x7b", ep=1, **kw).step
    eight = xpusim.train("mixtral-8x7b", ep=8, **kw).step
    experts = 32 * 8 * 3 * 4096 * 14336
    assert one.memory.params - eight.memory.params == pytest.approx(2 * experts * 7 / 8)
    assert one.memory.grads - eight.memory.grads == pytest.approx(2 * experts * 7 / 8)
    # ZeRO-1 shards optimizer states over the replicas that hold the same parameters: d for the dense ones, d/ep
    # for the experts — with ep = dp every expert's states sit on one rank: 12 B × experts / 8 either way
    assert one.memory.optimizer == pytest.approx(eight.memory.optimizer)
    assert one.model_flops == pytest.approx(eight.model_flops)  # the work is the same, only where it runs moves
    assert eight.comm_s["ep"] > 0 and "ep" not in one.comm_s


def test_context_parallelism_with_experts_folds_ep_onto_tp_cp_dp() -> None:
    """Mixtral-8x7B at 8,192 tokens on 8 H100s (one node), ep 8 with experts whole: the experts fold onto the
    tp·cp·dp ranks (Megatron-Core's parallel folding), so cp 2 × dp 4 places ep 8 as dp 8 does. A cp rank holds half
    of each sequence: its all-to-all carries half the tokens (4096 · 2 · 4096 · 2 B, from 8192 · 2 · 4096 · 2 B);
    expert memory and the step's FLOPs stay; the expert replicas are tp·cp·dp/(etp·ep) = 1."""
    from xpusim.parallel.plan import ParallelPlan, check

    kw = {"cluster": "dgx-h100", "gpus": 8, "batch": 8, "seq_len": 8192, "ep": 8, "etp": 1, "zero": 1}
    dp8 = xpusim.train("mixtral-8x7b", **kw).step
    cp2 = xpusim.train("mixtral-8x7b", cp=2, **kw).step
    cfg = load_transformer("mixtral-8x7b")
    assert moe_a2a_bytes(cfg, 8192 // 2, 1, 1, precision()) == 4096 * 2 * 4096 * 2
    links = GroupLinks(n=8, per_node=8, intra=LINK, inter=LINK)
    whole = layer_cost(cfg, load_chip("h100-sxm"), 8192, 1, 1, False, "none", None, "bf16", 8, links)
    half = layer_cost(cfg, load_chip("h100-sxm"), 8192, 1, 1, False, "none", None, "bf16", 8, links, cp=2,
                      cp_fabric=LINK)
    assert whole.ep_fwd_s == pytest.approx(2 * all_to_all_s(8192 * 2 * 4096 * 2, 8, LINK))
    assert half.ep_fwd_s == pytest.approx(2 * all_to_all_s(4096 * 2 * 4096 * 2, 8, LINK))
    assert cp2.memory.params == pytest.approx(dp8.memory.params)
    assert cp2.model_flops == pytest.approx(dp8.model_flops)
    assert cp2.plan.expert_dp == 1 and cp2.plan.micro_batches == 2 * dp8.plan.micro_batches
    with pytest.raises(PlanError, match=r"ep=16 must divide the 8 experts and tp\*cp\*dp/etp = 1\*2\*4/1"):
        check(ParallelPlan(cp=2, dp=4, ep=16, etp=1, global_batch=8), cfg)


def test_expert_tensor_parallelism_folding_by_hand() -> None:
    """Qwen3-30B-A3B (48 MoE layers of 128 experts, top-8, hidden 2048, expert ffn 768) on 16 H100s (two DGX
    nodes), tp 2, dp 8, micro-batch 1 of 1024 tokens, 8 micro-batches, sp.

    - Memory: experts split over etp·ep ranks, the rest over tp. ep 8 with etp 2 and ep 16 with etp 1 both keep
      1/16 of the 48 · 128 · 3 · 2048 · 768 expert parameters per GPU; etp 1 with ep 8 keeps 1/8, 2 B each.
    - Work: the same GEMM FLOPs per step whichever way the experts are split.
    - Communication: with etp = tp = 2 each MoE layer exchanges the tokens routed to its experts over the 2 ranks,
      k = 8 copies of every token: all-gather and reduce-scatter of 1024 · 8 · 2048 · 2 B, forward and backward;
      with etp = 1 (parallel folding) none. The all-to-all of etp 1, ep 16 spans both nodes: 4 per layer (dispatch
      and combine, forward and backward) of 1024 · 8 · 2048 · 2 / 2 B per rank (its half of the tokens), 7/16 of it
      to the peers in its node over NVLink and 8/16 to the other node over InfiniBand, on both at once: the longer,
      8 α + 8/16 · bytes / β of InfiniBand."""
    from xpusim.hardware.cluster import all_gather_s, load_cluster

    kw = {"cluster": "dgx-h100", "gpus": 16, "tp": 2, "sp": True, "batch": 64, "seq_len": 1024}
    split = xpusim.train("qwen3-30b-a3b", ep=8, **kw).step  # etp = tp = 2
    whole = xpusim.train("qwen3-30b-a3b", ep=16, etp=1, **kw).step
    whole8 = xpusim.train("qwen3-30b-a3b", ep=8, etp=1, **kw).step
    experts = 48 * 128 * 3 * 2048 * 768
    assert split.memory.params == pytest.approx(whole.memory.params)
    assert whole8.memory.params - whole.memory.params == pytest.approx(2 * experts / 16)
    assert split.model_flops == pytest.approx(whole.model_flops)
    cluster = load_cluster("dgx-h100")
    m, layers = 64 // 8, 48
    exchange = 2 * all_gather_s(1024 * 8 * 2048 * 2, 2, cluster.fabric(2))  # all-gather + reduce-scatter
    assert split.comm_s["tp"] - whole.comm_s["tp"] == pytest.approx(m * layers * 2 * exchange)
    ib = cluster.inter_node
    a2a = 8 * ib.latency_s + 8 / 16 * 1024 * 8 * 2048 * 2 / 2 / ib.bandwidth_bytes_per_s
    assert whole.comm_s["ep"] == pytest.approx(m * layers * 4 * a2a)
    assert "etp=1" in whole.plan.label() and "etp" not in split.plan.label()


@pytest.mark.parametrize(("args", "message"), [
    (["llama2-7b", "--gpus", "8", "--ep", "2"], "has no experts"),
    (["llama2-7b", "--gpus", "8", "--tp", "2", "--etp", "2"], "etp=2: llama2-7b has no experts"),
    (["mixtral-8x7b", "--gpus", "8", "--tp", "2", "--etp", "1", "--ep", "16"],
     "ep=16 must divide the 8 experts and tp*dp/etp = 2*4/1; valid ep: 1, 2, 4, 8"),
    (["mixtral-8x7b", "--gpus", "8", "--etp", "3"], "etp=3 does not divide the experts' ffn=14336; nearest valid"),
    (["mixtral-8x7b", "--gpus", "8", "--ep", "3"], "ep=3 must divide the 8 experts and dp=8; valid ep: 1, 2, 4, 8"),
    (["mixtral-8x7b", "--gpus", "8", "--tp", "2", "--ep", "8"], "valid ep: 1, 2, 4"),
])
def test_bad_ep_one_error_line(args: list[str], message: str) -> None:
    r = runner.invoke(app, ["parallel", *args, "--cluster", "dgx-h100", "--seq-len", "1024"])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.stderr


def test_search_spans_ep_and_its_closed_form_matches_the_simulator() -> None:
    """The search puts expert parallelism in its space (experts split over etp = tp or kept whole, etp = 1, and
    every ep dividing the experts and t·d/etp; only ep 1 for a dense model) and its numpy closed forms — experts ÷
    (etp·e), their gradients reduced and ZeRO-sharded over the t·d/(etp·e) replicas that hold them, the all-to-alls
    on the critical path — give the event simulator's step within 1%."""
    from xpusim.hardware.cluster import load_cluster
    from xpusim.parallel.search import enumerate_plans, estimate, search
    from xpusim.parallel.simulate import simulate
    from xpusim.parallel.spec import parse_model

    cluster = load_cluster("dgx-h100")
    moe = parse_model("qwen3-30b-a3b", 4096)  # cp stays 1 (the test below covers it from 8,192 tokens)
    plans = enumerate_plans(moe, cluster, 64, 512)
    eps = {p.ep for p in plans}
    assert eps == {1, 2, 4, 8, 16, 32, 64} and all(
        moe.config.experts % p.ep == 0 == (p.tp * p.cp * p.dp) % (p.expert_tp * p.ep) for p in plans)
    assert {p.expert_tp for p in plans if p.tp == 4} == {1, 4}
    assert {p.ep for p in plans if p.dp == 16 and p.tp == 4 and p.expert_tp == 1} == {1, 2, 4, 8, 16, 32, 64}
    assert {p.ep for p in enumerate_plans(parse_model("gpt:h=1024,l=8,a=16,s=512"), cluster, 16, 64)} == {1}
    sample = [p for p in plans if p.ep > 1][::211]
    step, mem = estimate(moe, cluster, sample)
    assert len(sample) > 40
    for plan, est_s, est_b in zip(sample, step, mem, strict=True):
        r = simulate(moe, cluster, plan)
        assert est_s == pytest.approx(r.step_time_s, rel=0.01), plan.label()
        assert est_b == pytest.approx(r.memory.total, rel=0.01), plan.label()
    best = search(moe, cluster, 64, 512, top=3).results
    assert best and all(r.fits and moe.config.experts % r.plan.ep == 0 for r in best)


def test_search_tries_context_parallelism_for_long_moe_sequences_and_agrees_with_the_simulator() -> None:
    """At 16k tokens the search tries cp for a mixture of experts too, ep then dividing t·c·d/etp; its closed forms
    (expert replicas t·c·d/(etp·e), a cp rank's all-to-all of its s/c tokens, the MoE layers recomputed) give the
    simulator's step and memory within 1% on cp plans with experts split."""
    from xpusim.hardware.cluster import load_cluster
    from xpusim.parallel.search import enumerate_plans, estimate
    from xpusim.parallel.simulate import simulate
    from xpusim.parallel.spec import parse_model

    cluster = load_cluster("dgx-h100")
    moe = parse_model("qwen3-30b-a3b", 16384)
    plans = enumerate_plans(moe, cluster, 32, 64)
    assert {p.cp for p in plans} == {1, 2, 4, 8, 16, 32}
    assert all((p.tp * p.cp * p.dp) % (p.expert_tp * p.ep) == 0 for p in plans)
    assert any(p.cp * p.dp < p.ep for p in plans)  # ep folded across the cp ranks
    sample = [p for p in plans if p.cp > 1 and p.ep > 1][::97]
    assert len(sample) > 40 and {p.recompute for p in sample} == {"none", "selective", "full", "moe"}
    step, mem = estimate(moe, cluster, sample)
    for plan, est_s, est_b in zip(sample, step, mem, strict=True):
        r = simulate(moe, cluster, plan)
        assert est_s == pytest.approx(r.step_time_s, rel=0.01), plan.label()
        assert est_b == pytest.approx(r.memory.total, rel=0.01), plan.label()


def test_zero3_gathers_experts_only_among_the_replicas_that_share_them() -> None:
    """ZeRO-3 with ep = dp = 8: every data-parallel rank holds different experts, so the gradients reduced and the
    parameters gathered (twice per micro-batch) over the 8 replicas are the dense ones only: Mixtral-8x7B's
    parameters less its 32 · 8 · 3 · 4096 · 14336 expert weights."""
    from xpusim.hardware.cluster import all_gather_s, load_cluster
    from xpusim.parallel.plan import ParallelPlan
    from xpusim.parallel.simulate import params_per_stage, simulate
    from xpusim.parallel.spec import parse_model

    cluster, moe = load_cluster("dgx-h100"), parse_model("mixtral-8x7b")
    plan = ParallelPlan(dp=8, tp=1, pp=1, ep=8, global_batch=16, micro_batch=1, zero=3, recompute="full")
    r = simulate(moe, cluster, plan)
    per_layer, embed, head = params_per_stage(moe.config, 1, 1)
    experts = 32 * 8 * 3 * 4096 * 14336
    dense = 32 * per_layer + embed + head - experts
    fabric = cluster.fabric(8)
    m = 16 // 8
    expected = all_gather_s(plan.grad_bytes * dense, 8, fabric) + 2 * m * all_gather_s(plan.param_bytes * dense, 8,
                                                                                         fabric)
    assert r.comm_s["dp"] == pytest.approx(expected, rel=1e-9)


def test_search_that_fits_nothing_at_the_longest_sequence_says_to_give_one() -> None:
    """DeepSeek-V3's default sequence is its 163,840-token maximum: nothing fits, and the error says why."""
    r = runner.invoke(app, ["parallel", "deepseek-v3", "--cluster", "dgx-h100", "--gpus", "64", "--search",
                            "--batch", "64"])
    assert r.exit_code == 2
    assert "163,840 tokens, deepseek-v3's longest — give --seq-len" in r.stderr and "Traceback" not in r.stderr


def test_deepep_sends_each_token_once_per_other_node() -> None:
    """Qwen3-30B-A3B (128 experts, top-8, hidden 2048), ep 32 over 4 nodes of 8, one micro-batch of 4096 tokens,
    tp 1. A token's 8 experts miss a given node with probability Π_{i<8} (96 − i)/(128 − i) (uniform routing, 32
    experts per node), so it reaches 3 · (1 − that) ≈ 2.7 other nodes on average. NCCL's all-to-all sends the
    24/32 of its 8 copies that go to other nodes across InfiniBand; DeepEP one copy per other node."""
    import math

    from xpusim.hardware.cluster import load_cluster
    from xpusim.parallel.simulate import expected_remote_nodes

    miss = math.prod((96 - i) / (128 - i) for i in range(8))
    assert expected_remote_nodes(128, 8, 4) == pytest.approx(3 * (1 - miss))
    assert expected_remote_nodes(128, 8, 1) == 0.0
    cfg, cluster = load_transformer("qwen3-30b-a3b"), load_cluster("dgx-h100")
    links = cluster.group(32, 32)
    assert (links.n, links.per_node, links.nodes) == (32, 8, 4)
    ib = cluster.inter_node
    chip = load_chip("h100-sxm")
    copies = 4096 * 8 * 2048 * 2
    nccl = layer_cost(cfg, chip, 4096, 1, 1, False, "none", None, "bf16", 32, links)
    deepep = layer_cost(cfg, chip, 4096, 1, 1, False, "none", None, "bf16", 32, links, dispatcher="deepep")
    assert nccl.ep_fwd_s == pytest.approx(2 * (24 * ib.latency_s + 24 / 32 * copies / ib.bandwidth_bytes_per_s))
    remote = 4096 * 2048 * 2 * 3 * (1 - miss)
    assert deepep.ep_fwd_s == pytest.approx(2 * (24 * ib.latency_s + remote / ib.bandwidth_bytes_per_s))


def test_moe_activation_memory_by_hand() -> None:
    """Qwen3-30B-A3B (48 MoE layers, h 2048, 128 experts, top-8, expert ffn 768), one GPU, one micro-batch of 4096
    tokens, FlashAttention. A dense layer keeps 34 sbh bytes (Korthikanti, no scores), of which the MLP 19 sbh; the
    MoE block instead keeps per token its input 2h, fp32 router logits and probabilities 8 · 128, and per routed
    copy (8 per token) the permuted input 2h, gate and up outputs 4 · 768, the activation 2 · 768 and the expert
    output 2h: (34 − 19) sbh + sb (2h + 1024 + 8 (4h + 4608)) per layer; plus the fp32 logits on the last stage."""
    s, h = 4096, 2048
    r = xpusim.train("qwen3-30b-a3b", cluster="dgx-h100", gpus=1, batch=1, seq_len=s).step
    per_layer = 15 * s * h + s * (2 * h + 8 * 128 + 8 * (4 * h + 6 * 768))
    assert r.memory.activations == pytest.approx(48 * per_layer + 4 * s * 151936)
    # FP8: the dense part keeps 27 sbh, its MLP 14 (fc1's and fc2's inputs in 1 byte); the permuted input (h) and the
    # activation's output (768, the down projection's input) are kept in 1 byte too
    fp8 = xpusim.train("qwen3-30b-a3b", cluster="dgx-h100", gpus=1, batch=1, seq_len=s, fp8=True).step
    per_layer_fp8 = (27 - 14) * s * h + s * (2 * h + 8 * 128 + 8 * (3 * h + 5 * 768))
    assert fp8.memory.activations == pytest.approx(48 * per_layer_fp8 + 4 * s * 151936)
    # folding on 8 GPUs (tp 8, etp 1): each rank routes its 1/8 of the tokens, the whole experts' rows
    folded = xpusim.train("qwen3-30b-a3b", cluster="dgx-h100", gpus=8, tp=4, sp=True, ep=2, etp=1, batch=2,
                          seq_len=s).step
    assert folded.memory.activations == pytest.approx(48 * per_layer / 4 + 4 * s * 151936 / 4)


def test_routing_skew_slows_the_busiest_rank_not_the_flops() -> None:
    """Qwen3-30B-A3B on 8 H100s, ep 8, micro-batches of 4096 tokens: with the busiest rank receiving 1.5× the mean
    of the routed tokens, each all-to-all carries 1.5 × 4096 · 8 · 2048 · 2 B into it (7α + 7/8 · S/β on NVLink),
    its expert GEMMs run 1.5× the rows, and the FLOPs counted stay those of the tokens (the same work, unevenly
    spread)."""
    from xpusim.hardware.cluster import load_cluster

    h100 = load_cluster("dgx-h100")  # without the host's floor, which would hide the skew at this size
    kw = {"cluster": h100.model_copy(update={"efficiency": h100.efficiency.model_copy(
        update={"moe_layer_host_ms": 0.0})}), "gpus": 8, "ep": 8, "batch": 16, "seq_len": 4096}
    even = xpusim.train("qwen3-30b-a3b", **kw).step
    skewed = xpusim.train("qwen3-30b-a3b", routing_skew=1.5, **kw).step
    nv = load_cluster("dgx-h100").intra_node
    a2a = 7 * nv.latency_s + 7 / 8 * 1.5 * 4096 * 8 * 2048 * 2 / nv.bandwidth_bytes_per_s
    m, layers = 16 // 8, 48
    assert skewed.comm_s["ep"] == pytest.approx(m * layers * 4 * a2a)
    assert skewed.model_flops == even.model_flops and skewed.step_time_s > even.step_time_s
    assert "skew=1.5" in skewed.plan.label()
    r = runner.invoke(app, ["parallel", "qwen3-30b-a3b", "--gpus", "8", "--ep", "8", "--routing-skew", "0.5",
                            "--cluster", "dgx-h100", "--seq-len", "1024"])
    assert r.exit_code == 2 and "routing_skew=0.5 must be >= 1" in r.stderr
    r = runner.invoke(app, ["parallel", "llama2-7b", "--gpus", "8", "--routing-skew", "2", "--seq-len", "1024"])
    assert r.exit_code == 2 and "routing_skew=2.0: llama2-7b has no experts" in r.stderr


def test_search_keeps_the_settings_it_does_not_search() -> None:
    found = xpusim.search("qwen3-30b-a3b", cluster="dgx-h100", gpus=16, batch=64, seq_len=4096, top=3,
                          dispatcher="deepep", routing_skew=1.2, flash=False)
    assert all(p.plan.dispatcher == "deepep" and p.plan.routing_skew == 1.2 and not p.plan.flash
               for p in found.found.results)


def test_recomputing_the_moe_layers_by_hand() -> None:
    """recompute=moe (Megatron-Core's ``--recompute-modules moe``): Qwen3-30B-A3B on one GPU, one micro-batch of
    4096 tokens. The MoE block keeps only its input (2h per token) instead of its 2h + 8·128 + 8·(4h + 6·768) per
    token; its forward — router GEMM 2·s·h·128, three expert GEMMs 2·s·8·h·768 each — is counted again in the
    hardware FLOPs, and its time (the MoE ops' forward) joins the backward; with ep 8 its two all-to-alls run again."""
    from xpusim.hardware.cluster import load_cluster

    s, h, layers = 4096, 2048, 48
    kw = {"cluster": "dgx-h100", "gpus": 1, "batch": 1, "seq_len": s}
    none = xpusim.train("qwen3-30b-a3b", **kw).step
    moe = xpusim.train("qwen3-30b-a3b", recompute="moe", **kw).step
    kept = s * (2 * h + 8 * 128 + 8 * (4 * h + 6 * 768)) - s * 2 * h
    assert none.memory.activations - moe.memory.activations == pytest.approx(layers * kept - kept)  # one re-run
    moe_fwd_flops = 2 * s * h * 128 + 3 * 2 * s * 8 * h * 768
    assert moe.hardware_flops - none.hardware_flops == pytest.approx(layers * moe_fwd_flops)
    assert moe.model_flops == none.model_flops and moe.step_time_s > none.step_time_s
    # on 8 GPUs folded as tp 2 × ep 4, 8 sequences: the same forward FLOPs per sequence, summed over the ranks
    kw8 = {"cluster": "dgx-h100", "gpus": 8, "tp": 2, "sp": True, "ep": 4, "batch": 8, "seq_len": s}
    folded = [xpusim.train("qwen3-30b-a3b", recompute=rc, **kw8).step for rc in ("none", "moe")]
    assert folded[1].hardware_flops - folded[0].hardware_flops == pytest.approx(8 * layers * moe_fwd_flops)
    cfg, chip = load_transformer("qwen3-30b-a3b"), load_cluster("dgx-h100").load_chip()
    assert chip.efficiency is not None  # the GPU's work alone: without the host's floor on a layer pass (tested apart)
    chip = chip.model_copy(update={"efficiency": chip.efficiency.model_copy(update={"moe_layer_host_ms": 0.0})})
    args = (cfg, chip, s, 1, 1, False)
    plain, again = layer_cost(*args, "none", None), layer_cost(*args, "moe", None)
    # the added backward is the MoE block's forward: its memory-bound ops at HBM × 0.8 (router softmax over 128
    # experts; the SwiGLU reading gate and up, writing one; the combine reading the 8 expert outputs, writing one) ...
    hbm = 3350e9 * 0.8
    memory_s = (2 * s * 128 * 2 + 3 * s * 8 * 768 * 2 + s * 8 * h * 2 + s * h * 2) / hbm
    # ... and its GEMMs, between their FLOPs at H100's bf16 peak × 0.601 and that plus all their bytes at HBM rate
    gemm_flops = 2 * s * h * 128 + 3 * 2 * s * 8 * h * 768
    gemm_bytes = (s * h * 2 + h * 128 * 2 + s * 128 * 2) + 3 * (128 * h * 768 * 2 + s * 8 * h * 2 + s * 8 * 768 * 2)
    added = again.bwd_input_s - plain.bwd_input_s
    assert memory_s + gemm_flops / (989.4e12 * 0.601) < added < memory_s + gemm_flops / (989.4e12 * 0.601) \
        + gemm_bytes / hbm
    links = GroupLinks(n=8, per_node=8, intra=LINK, inter=LINK)
    ep_plain, ep_again = (layer_cost(cfg, chip, s, 1, 1, False, rc, None, "bf16", 8, links) for rc in ("none", "moe"))
    assert ep_again.ep_bwd_s == pytest.approx(2 * ep_plain.ep_bwd_s) and ep_again.ep_fwd_s == ep_plain.ep_fwd_s
    # a dense model has no MoE layers to recompute: one error naming the valid values
    r = runner.invoke(app, ["parallel", "llama2-7b", "--gpus", "8", "--recompute", "moe", "--seq-len", "1024"])
    assert r.exit_code == 2 and "recompute=moe: llama2-7b has no MoE layers to recompute; valid: none, selective, " \
        "full" in r.stderr


def test_weight_gradient_of_few_rows_per_expert_is_memory_bound_by_hand() -> None:
    """The weight gradient accumulates into the fp32 main gradient (read and write 4 bytes per weight). Qwen3-30B-A3B's
    gate projection on one H100, 4096 tokens: 128 experts of 2048 × 768 see 256 rows each. Its weight gradient reads
    the input (4096 · 8 · 2048 · 2 B) and the output's gradient (4096 · 8 · 768 · 2 B) and moves 8 B per weight:
    1,795,162,112 B at HBM × 80% (669.8 µs) against 103 GFLOP at bf16 × 0.601 (173.4 µs): memory-bound, 3.1× the
    forward GEMM, which reads the 2-byte weights once. A dense 8192-wide layer at 4096 tokens stays compute-bound."""
    from xpusim.engines.roofline import estimate_op
    from xpusim.hardware.cluster import load_cluster
    from xpusim.parallel.simulate import weight_gradient
    from xpusim.workload.transformer import layer_ops

    s, h, f = 4096, 2048, 768
    cfg, chip = load_transformer("qwen3-30b-a3b"), load_cluster("dgx-h100").load_chip()
    gate = next(o for o in layer_ops(cfg, 1, s, s, precision(), flash=True) if o.module.endswith(".experts"))
    wgrad = weight_gradient(gate)
    assert wgrad.bytes_total == s * 8 * h * 2 + s * 8 * f * 2 + 8 * 128 * h * f == 1_795_162_112
    est = estimate_op(wgrad, chip)
    assert est.bound == "memory" and est.time_s == pytest.approx(1_795_162_112 / (3350e9 * 0.8))
    assert est.compute_s == pytest.approx(2 * s * 8 * h * f / (989.4e12 * 0.601))
    assert est.time_s / estimate_op(gate, chip).time_s == pytest.approx(3.06, abs=0.01)
    from xpusim.parallel.spec import parse_model

    dense = parse_model("gpt:h=8192,l=2,a=64,s=4096").config
    fc1 = next(o for o in layer_ops(dense, 1, s, s, precision(), flash=True) if o.kind == "matmul")
    assert estimate_op(weight_gradient(fc1), chip).bound == "compute"
    assert estimate_op(weight_gradient(fc1), chip).time_s == estimate_op(fc1, chip).time_s


def test_a_moe_layer_pass_takes_at_least_the_hosts_launch_time_by_hand() -> None:
    """The dispatcher synchronises the host every MoE layer, so a layer pass takes at least the host's time to launch
    its kernels (dgx-h100: 9.19 ms forward and backward, fitted on Megatron-Bridge's eager Qwen3-30B-A3B FP8 run):
    a third in the forward, two thirds in the backward, a forward's third again when the backward re-runs it. A tiny
    MoE layer (h 256, 8 experts of 256, 512 tokens) is far below it: its forward takes 9.19/3 ms and its backward 2 ×
    9.19/3 ms, with full recomputation 3 × 9.19/3 ms; a dense model, which never waits on the host, is not floored; a
    layer whose GPU work exceeds the floor keeps its time."""
    from dataclasses import replace

    from xpusim.hardware.cluster import load_cluster
    from xpusim.parallel.spec import parse_model

    h100 = load_cluster("dgx-h100")
    chip = h100.load_chip()
    assert chip.efficiency is not None and chip.efficiency.moe_layer_host_ms == 9.19
    free = chip.model_copy(update={"efficiency": chip.efficiency.model_copy(update={"moe_layer_host_ms": 0.0})})
    tiny = replace(load_transformer("qwen3-30b-a3b"), hidden=256, layers=2, heads=4, kv_heads=4, head_dim=64,
                   experts=8, top_k=2, expert_ffn=256, vocab=1024)
    for recompute, backward_thirds in (("none", 2), ("full", 3)):
        lc = layer_cost(tiny, chip, 512, 1, 1, False, recompute, None, "bf16")
        assert lc.fwd_s + lc.tp_fwd_s + lc.ep_fwd_s == pytest.approx(9.19e-3 / 3)
        backward = lc.bwd_input_s + lc.bwd_weight_s + lc.tp_bwd_s + lc.ep_bwd_s
        assert backward == pytest.approx(backward_thirds * 9.19e-3 / 3)
        gpu = layer_cost(tiny, free, 512, 1, 1, False, recompute, None, "bf16")
        assert gpu.fwd_s < 9.19e-3 / 3 / 10  # the GPU's own time is a small part of it
    dense = parse_model("gpt:h=256,l=2,a=4,s=512").config
    assert layer_cost(dense, chip, 512, 1, 1, False, "none", None, "bf16") == \
        layer_cost(dense, free, 512, 1, 1, False, "none", None, "bf16")
    big = load_transformer("mixtral-8x7b")  # 16k tokens of Mixtral: far more GPU work than the floor
    assert layer_cost(big, chip, 16384, 1, 1, False, "none", None, "bf16") == \
        layer_cost(big, free, 16384, 1, 1, False, "none", None, "bf16")
