"""Small models for real runs, built the same way on every rank from one seed, split into pipeline stages,
and fed deterministic data: an MLP (regression) and a GPT (next-token prediction)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xpusim.parallel.real.spec import ModelSpec


class Attention(nn.Module):
    """Causal self-attention; the number of heads follows the local width, so tensor parallelism can shard q, k,
    v column-wise and o row-wise without changing this code."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.head_dim = hidden // heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.q(x), self.k(x), self.v(x)
        heads = q.shape[-1] // self.head_dim  # local heads under tensor parallelism
        q, k, v = (t.view(b, s, heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, s, heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, heads)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class MLPLayer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class Stage(nn.Module):
    """A contiguous slice of the model: optional embedding in front, layers, optional output head behind."""

    def __init__(self, spec: ModelSpec, layers: list[nn.Module], *, first: bool, last: bool,
                 parts: dict[str, nn.Module]) -> None:
        super().__init__()
        self.kind = spec.kind
        self.layers = nn.ModuleList(layers)
        self.embed = parts["embed"] if first and "embed" in parts else None
        self.pos = parts["pos"] if first and "pos" in parts else None
        self.norm = parts["norm"] if last and "norm" in parts else None
        self.head = parts["head"] if last and "head" in parts else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            assert isinstance(self.pos, nn.Embedding)
            x = self.embed(x) + self.pos.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.head is not None:
            x = self.head(x)
        return x


def build_parts(spec: ModelSpec, seed: int) -> tuple[list[nn.Module], dict[str, nn.Module]]:
    """Every layer and the embedding/head parts, initialized from ``seed`` (identical on every rank)."""
    torch.manual_seed(seed)
    if spec.kind == "mlp":
        return [MLPLayer(spec.width) for _ in range(spec.layers)], {}
    parts: dict[str, nn.Module] = {"embed": nn.Embedding(spec.vocab, spec.hidden),
                                   "pos": nn.Embedding(spec.seq_len, spec.hidden)}
    layers: list[nn.Module] = [Block(spec.hidden, spec.heads) for _ in range(spec.layers)]
    parts["norm"] = nn.LayerNorm(spec.hidden)
    parts["head"] = nn.Linear(spec.hidden, spec.vocab, bias=False)
    return layers, parts


def build_stage(spec: ModelSpec, seed: int, stage: int, stages: int) -> Stage:
    """Stage ``stage`` of ``stages`` equal slices (the whole model when ``stages`` is 1); parameter names follow
    the whole model's (``layers.{i}`` renumbered per stage; see ``global_name``)."""
    layers, parts = build_parts(spec, seed)
    per = spec.layers // stages
    return Stage(spec, layers[stage * per:(stage + 1) * per], first=stage == 0, last=stage == stages - 1,
                 parts=parts)


def global_name(name: str, stage: int, stages: int, layers: int) -> str:
    """A stage parameter's name in the whole model (``layers.0.fc.weight`` of stage 1 of 2 with 8 layers is
    ``layers.4.fc.weight``)."""
    if name.startswith("layers."):
        _, idx, rest = name.split(".", 2)
        return f"layers.{int(idx) + stage * (layers // stages)}.{rest}"
    return name


def batch(spec: ModelSpec, samples: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic inputs and targets for one optimizer step."""
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    if spec.kind == "mlp":
        return torch.randn(samples, spec.width, generator=g), torch.randn(samples, spec.width, generator=g)
    tokens = torch.randint(0, spec.vocab, (samples, spec.seq_len + 1), generator=g)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def loss_fn(spec: ModelSpec):  # type: ignore[no-untyped-def]
    if spec.kind == "mlp":
        return lambda out, target: F.mse_loss(out, target)
    return lambda out, target: F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
