"""Batch-1 MACs against hand counts (DESIGN.md's validation set), with PyTorch's fast paths on and off."""

import json

import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

import xpusim
from xpusim.cli import app


def test_resnet50_exact_hand_count() -> None:
    assert xpusim.analyze("resnet50").totals().macs == 4_089_184_256


def test_mobilenet_v2_hand_count() -> None:
    assert round(xpusim.analyze("mobilenet_v2").totals().macs / 1e9, 3) == 0.301


def test_vit_b_16_hand_count_and_attention_share() -> None:
    wl = xpusim.analyze("vit_b_16")
    assert round(wl.totals().macs / 1e9, 3) == 17.564
    # Attention score and value products: 12 layers x 2 x 12 heads x 197^2 x 64 = 0.715 G (hand count).
    attention = sum(o.macs for o in wl.ops if o.op == "aten.bmm.default")
    assert attention == 12 * 2 * 12 * 197 * 197 * 64
    assert round(attention / 1e9, 3) == 0.715


def encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True)
    return nn.TransformerEncoder(layer, 6).eval()


def test_transformer_encoder_fast_path_hand_count() -> None:
    """Real tensors in eval mode take `_transformer_encoder_layer_fwd` (one fused op per layer)."""
    x = torch.randn(1, 128, 512)
    wl = xpusim.analyze(encoder(), x, device="eager")
    assert {o.op for o in wl.ops} == {"aten._transformer_encoder_layer_fwd.default"}
    # Per token 4d^2 + 2 d ff + 2 s d MACs (QKV, out-proj, FFN, scores, values), 6 layers, 128 tokens.
    d, ff, s = 512, 2048, 128
    assert wl.totals().macs == 6 * s * (4 * d * d + 2 * d * ff + 2 * s * d) == 2_516_582_400


def test_transformer_encoder_meta_equals_fast_path() -> None:
    """Meta runs the unfused math path; MACs and FLOPs must agree with the fused op's formula."""
    x = torch.randn(1, 128, 512)
    fused = xpusim.analyze(encoder(), x, device="eager").totals()
    unfused = xpusim.analyze(encoder(), x).totals()
    assert unfused.macs == fused.macs
    assert unfused.flops == fused.flops


@pytest.mark.slow
def test_vit_b_16_native_mha_fast_path() -> None:
    """torchvision's ViT on real tensors takes `_native_multi_head_attention`; the count must not change."""
    model = torchvision.models.vit_b_16().eval()
    wl = xpusim.analyze(model, torch.randn(1, 3, 224, 224), device="eager")
    assert any(o.op == "aten._native_multi_head_attention.default" for o in wl.ops)
    assert round(wl.totals().macs / 1e9, 3) == 17.564
    assert wl.totals().macs == xpusim.analyze("vit_b_16").totals().macs


def test_llama2_7b_closed_form() -> None:
    """2·params·tokens (as MACs: params·tokens, embeddings excluded, lm_head included) plus attention s²·d terms."""
    wl = xpusim.analyze("llama2-7b", seq_len=2048)
    d, ff, layers, vocab, s = 4096, 11008, 32, 32000, 2048
    dense = (layers * (4 * d * d + 3 * d * ff) + d * vocab) * s
    attention = layers * 2 * s * s * d
    assert wl.totals().macs == dense + attention == 14_630_806_093_824
    assert wl.uncounted == {}
    # Parameters: embeddings + lm_head + per layer (attention, MLP, 2 RMSNorm) + final norm.
    assert wl.params == 2 * vocab * d + layers * (4 * d * d + 3 * d * ff + 2 * d) + d == 6_738_415_616


def test_llama3_8b_grouped_query_attention_closed_form() -> None:
    """GQA: K and V projections are d x (kv_heads · head_dim) = 4096 x 1024; the vocabulary is 128,256."""
    wl = xpusim.analyze("llama3-8b", seq_len=256)
    d, kv, ff, layers, vocab, s = 4096, 8 * 128, 14336, 32, 128_256, 256
    dense = (layers * (2 * d * d + 2 * d * kv + 3 * d * ff) + d * vocab) * s
    assert wl.totals().macs == dense + layers * 2 * s * s * d
    assert wl.params == 8_030_261_248  # Meta's published parameter count of Llama-3-8B


def test_bert_base_closed_form() -> None:
    """12 layers of 4h² + 2·h·ff per token plus 2·s²·h attention; 109,482,240 parameters without the pooler."""
    wl = xpusim.analyze("bert-base", seq_len=128)
    h, ff, layers, s = 768, 3072, 12, 128
    assert wl.totals().macs == layers * (s * (4 * h * h + 2 * h * ff) + 2 * s * s * h)
    assert wl.params == 109_482_240 - (h * h + h)  # the published total includes the pooler (h² + h)
    assert wl.uncounted == {}


def test_compiled_module_is_costed_like_the_original() -> None:
    model = torchvision.models.resnet18()
    compiled = torch.compile(model)
    x = torch.randn(1, 3, 64, 64)
    assert xpusim.analyze(compiled, x).totals().macs == xpusim.analyze(model, x).totals().macs


@pytest.mark.slow
def test_zoo_model_eager_takes_fast_path() -> None:
    """--device eager gives a zoo model real weights: ViT then runs PyTorch's fused MHA, with the same MACs."""
    r = CliRunner().invoke(app, ["analyze", "vit_b_16", "--device", "eager", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["totals"]["macs"] == 17_563_828_224
    assert any(layer["op"] == "aten._native_multi_head_attention.default" for layer in d["layers"])


def test_encoder_fast_path_with_padding_counts_real_tokens() -> None:
    """With a padding mask PyTorch packs the batch into a nested tensor: only the 10 + 6 real tokens are costed."""
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), 2).eval()
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[1, 6:] = True
    wl = xpusim.analyze(enc, torch.randn(2, 10, 64), example_kwargs={"src_key_padding_mask": mask}, device="eager")
    assert wl.uncounted == {}
    d, ff, tokens = 64, 128, 10 + 6
    assert wl.totals().macs == 2 * (tokens * (4 * d * d + 2 * d * ff) + 2 * (10 * 10 + 6 * 6) * d)
