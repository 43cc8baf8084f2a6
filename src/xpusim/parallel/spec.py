"""Model specs for the parallel simulator: any transformer `xpusim.workload.transformer.load_transformer` knows
(a zoo name such as ``gpt-175b``, an HF config.json, ``gpt:h=..,l=..,a=..,s=..``) and the sequence length."""

from __future__ import annotations

from dataclasses import dataclass

from xpusim.workload.transformer import (
    DEFAULT_VOCAB,
    GPT_KEYS,
    SpecError,
    TransformerConfig,
    load_transformer,
    with_seq_len,
)

__all__ = ["DEFAULT_VOCAB", "GPT_KEYS", "SpecError", "TrainModel", "parse_model"]


@dataclass(frozen=True, kw_only=True)
class TrainModel:
    """What is trained: the transformer's shape and the sequence length of a sample."""

    config: TransformerConfig
    seq_len: int


def parse_model(text: str | TransformerConfig, seq_len: int | None = None) -> TrainModel:
    """A zoo LLM name, config.json, ``gpt:`` spec or config; ``seq_len`` overrides the sequence length (default:
    the model's maximum positions, which for the shipped GPT configs is Megatron-LM's 2048; for a ``gpt:`` spec
    its ``s``)."""
    cfg = load_transformer(text)
    if isinstance(text, str) and text.startswith("gpt:") and seq_len is not None:
        return TrainModel(config=cfg, seq_len=seq_len)  # a gpt: spec's s is its default, not a limit
    return TrainModel(config=cfg, seq_len=with_seq_len(cfg, seq_len))
