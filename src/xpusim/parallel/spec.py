"""Model specs for the parallel simulator: a zoo name (``gpt-175b``, ``llama2-70b``) or ``gpt:h=..,l=..,a=..,s=..``."""

from __future__ import annotations

from dataclasses import dataclass

from xpusim.engines.llm import TransformerConfig
from xpusim.names import suggest
from xpusim.workload.zoo import llm_configs

GPT_KEYS = {"h": "hidden size", "l": "layers", "a": "attention heads", "s": "sequence length",
            "V": "vocabulary", "ffn": "MLP width (default 4h)", "kv": "key/value heads (default a)"}
DEFAULT_VOCAB = 51200  # Megatron-LM's padded GPT-2 vocabulary (reference/parallelism.md)


class SpecError(ValueError):
    """A model spec that cannot be used; the message says which key and what is allowed."""


@dataclass(frozen=True, kw_only=True)
class TrainModel:
    """What is trained: the transformer's shape and the sequence length of a sample."""

    config: TransformerConfig
    seq_len: int


def _gpt(text: str) -> TrainModel:
    body = text.partition(":")[2]
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, sep, val = part.partition("=")
        if not sep or key not in GPT_KEYS:
            allowed = ", ".join(f"{k} ({v})" for k, v in GPT_KEYS.items())
            raise SpecError(f"model spec {text!r}: {part!r} is not KEY=VALUE with KEY one of {allowed}")
        try:
            values[key] = int(val)
        except ValueError:
            raise SpecError(f"model spec {text!r}: {key}={val!r} is not an integer") from None
        if values[key] < 1:
            raise SpecError(f"model spec {text!r}: {key}={val} must be >= 1")
    missing = [k for k in ("h", "l", "a", "s") if k not in values]
    if missing:
        raise SpecError(f"model spec {text!r}: missing {', '.join(f'{k} ({GPT_KEYS[k]})' for k in missing)}; "
                        "e.g. gpt:h=4096,l=32,a=32,s=2048")
    h, a = values["h"], values["a"]
    if h % a:
        raise SpecError(f"model spec {text!r}: h={h} is not a multiple of a={a}")
    kv = values.get("kv", a)
    if a % kv:
        raise SpecError(f"model spec {text!r}: a={a} is not a multiple of kv={kv}")
    cfg = TransformerConfig(name=text, hidden=h, layers=values["l"], heads=a, kv_heads=kv, head_dim=h // a,
                            ffn=values.get("ffn", 4 * h), vocab=values.get("V", DEFAULT_VOCAB), gated_mlp=False,
                            rms_norm=False, tied_embeddings=True, max_positions=values["s"])
    return TrainModel(config=cfg, seq_len=values["s"])


def parse_model(text: str, seq_len: int | None = None) -> TrainModel:
    """A zoo LLM name or a ``gpt:`` spec; ``seq_len`` overrides the sequence length (default: the model's
    maximum positions, which for the shipped GPT configs is Megatron-LM's 2048)."""
    if text.startswith("gpt:"):
        model = _gpt(text)
        return model if seq_len is None else TrainModel(config=model.config, seq_len=seq_len)
    configs = {n: e for n, e in llm_configs().items() if e.get("task") == "causal-lm"}
    if text not in configs:
        close = suggest(text, list(configs))
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SpecError(f"unknown model {text!r}.{hint} Give a decoder LLM ({', '.join(configs)}) "
                        "or gpt:h=..,l=..,a=..,s=..[,V=..,ffn=..,kv=..]")
    cfg = TransformerConfig.from_hf(text, configs[text]["config"])
    s = seq_len if seq_len is not None else cfg.max_positions
    if s < 1 or s > cfg.max_positions:
        raise SpecError(f"--seq-len {s} is outside 1..{cfg.max_positions} (the maximum positions of {text})")
    return TrainModel(config=cfg, seq_len=s)
