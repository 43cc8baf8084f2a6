"""Small models for real runs, built the same way on every rank from one seed, split into pipeline stages,
and fed deterministic data: an MLP (regression) and a GPT (next-token prediction)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from xpusim.parallel.real.spec import ModelSpec


class Attention(nn.Module):
    """Causal self-attention with ``kv_heads`` key/value heads (fewer than ``heads``: grouped-query attention, each
    key/value head serving ``heads // kv_heads`` query heads). The head counts follow the local widths, so tensor
    parallelism can shard q, k, v column-wise and o row-wise without changing this code."""

    def __init__(self, hidden: int, heads: int, kv_heads: int | None = None) -> None:
        super().__init__()
        self.head_dim = hidden // heads
        kv_width = (kv_heads or heads) * self.head_dim
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, kv_width)
        self.v = nn.Linear(hidden, kv_width)
        self.o = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.q(x), self.k(x), self.v(x)
        heads, kv_heads = q.shape[-1] // self.head_dim, k.shape[-1] // self.head_dim  # local under TP
        q = q.view(b, s, heads, self.head_dim).transpose(1, 2)
        k, v = (t.view(b, s, kv_heads, self.head_dim).transpose(1, 2) for t in (k, v))
        if kv_heads != heads:  # query head i reads key/value head i // (heads / kv_heads)
            k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, s, heads * self.head_dim))


class Block(nn.Module):
    """GPT-2's pre-norm block: LayerNorm, attention, residual; LayerNorm, MLP (fc1, GELU, fc2), residual."""

    def __init__(self, hidden: int, heads: int, kv_heads: int | None = None, ffn: int | None = None) -> None:
        super().__init__()
        width = ffn or 4 * hidden
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, heads, kv_heads)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, width)
        self.fc2 = nn.Linear(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Expert(nn.Module):
    """One expert: a GELU MLP (fc1, GELU, fc2)."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, width)
        self.fc2 = nn.Linear(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MoE(nn.Module):
    """A mixture-of-experts MLP: a router (softmax over ``experts``), each token's ``top_k`` experts, their outputs
    weighted by the renormalized router probabilities. With `expert_parallel` set, this rank computes only its
    E/ep experts: every token-expert pair is sent to the rank that holds the expert and its output sent back — two
    all-to-alls (dispatch and combine), differentiable, so the backward runs them in reverse."""

    def __init__(self, hidden: int, width: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.router = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.ModuleList(Expert(hidden, width) for _ in range(experts))
        self.top_k = top_k
        self.group: object | None = None
        self.rank, self.size = 0, 1

    def expert_parallel(self, group: object, rank: int, size: int) -> None:
        self.group, self.rank, self.size = group, rank, size

    def local(self) -> range:
        per = len(self.experts) // self.size
        return range(self.rank * per, (self.rank + 1) * per)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(tokens), dim=-1)
        weight, chosen = probs.topk(self.top_k, dim=-1)
        weight = weight / weight.sum(dim=-1, keepdim=True)
        token_of = torch.arange(tokens.shape[0]).repeat_interleave(self.top_k)
        expert_of, weight_of = chosen.reshape(-1), weight.reshape(-1)
        if self.group is None:
            y = self._compute(tokens[token_of], expert_of)
        else:
            y = self._expert_parallel(tokens[token_of], expert_of)
        out = torch.zeros_like(tokens).index_add(0, token_of, y * weight_of[:, None])
        return out.reshape(shape)

    def _compute(self, rows: torch.Tensor, expert_of: torch.Tensor) -> torch.Tensor:
        """Each row through its expert (rows of experts this rank does not hold: none are given to it)."""
        out = torch.zeros_like(rows)
        for e in torch.unique(expert_of).tolist():
            idx = (expert_of == e).nonzero().squeeze(1)
            out = out.index_add(0, idx, self.experts[e](rows[idx]))
        return out

    def _expert_parallel(self, rows: torch.Tensor, expert_of: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_to_all_single

        per = len(self.experts) // self.size
        dest = expert_of // per
        order = torch.argsort(dest, stable=True)
        send_counts = torch.bincount(dest, minlength=self.size)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)  # type: ignore[arg-type]
        sends, recvs = send_counts.tolist(), recv_counts.tolist()
        recv_expert = torch.empty(sum(recvs), dtype=expert_of.dtype)
        dist.all_to_all_single(recv_expert, expert_of[order], recvs, sends, group=self.group)  # type: ignore[arg-type]
        with warnings.catch_warnings():  # the autograd all-to-all's new home (functional collectives) is async-only
            warnings.simplefilter("ignore", FutureWarning)
            recv = all_to_all_single(torch.empty(sum(recvs), rows.shape[1]), rows[order], recvs, sends,
                                     group=self.group)
            done = self._compute(recv, recv_expert)
            back = all_to_all_single(torch.empty(rows.shape[0], rows.shape[1]), done, sends, recvs, group=self.group)
        return torch.zeros_like(rows).index_copy(0, order, back)


class MoEBlock(nn.Module):
    """The GPT block with its MLP replaced by a mixture of experts."""

    def __init__(self, hidden: int, heads: int, width: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, heads)
        self.ln2 = nn.LayerNorm(hidden)
        self.moe = MoE(hidden, width, experts, top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.moe(self.ln2(x))


class MLPLayer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class TiedHead(nn.Module):
    """The output projection (logits = x · Eᵀ) tied to the token embedding E: the very same Parameter when one
    module holds both, or a copy initialized equal on a later pipeline stage, whose gradient the run sums with
    the embedding's after backward (`tie_gradients`)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        assert isinstance(weight, nn.Parameter)
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


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
        self.head: TiedHead | None = None
        if last and "embed" in parts:
            embed = parts["embed"]
            assert isinstance(embed, nn.Embedding)
            self.head = TiedHead(embed.weight if first else nn.Parameter(embed.weight.detach().clone()))

    @property
    def tied_copy(self) -> nn.Parameter | None:
        """The output head's own copy of the token embedding (a last stage without the first), else None."""
        return self.head.weight if self.head is not None and self.embed is None else None

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
    """Every layer and the embedding/norm parts, initialized from ``seed`` (identical on every rank). A GPT is
    GPT-2's: token and learned position embeddings, pre-norm blocks, a final LayerNorm and the output head tied
    to the token embedding — `xpusim.workload.transformer.TransformerConfig.params` parameters."""
    torch.manual_seed(seed)
    if spec.kind == "mlp":
        return [MLPLayer(spec.width) for _ in range(spec.layers)], {}
    embed, pos = nn.Embedding(spec.vocab, spec.hidden), nn.Embedding(spec.seq_len, spec.hidden)
    nn.init.normal_(embed.weight, std=0.02)  # GPT-2's: the tied head's logits start small (loss near ln V)
    nn.init.normal_(pos.weight, std=0.01)
    parts: dict[str, nn.Module] = {"embed": embed, "pos": pos}
    layers: list[nn.Module] = [
        MoEBlock(spec.hidden, spec.heads, spec.ffn, spec.experts, spec.top_k) if spec.kind == "moe"
        else Block(spec.hidden, spec.heads, spec.kv_heads, spec.ffn) for _ in range(spec.layers)]
    parts["norm"] = nn.LayerNorm(spec.hidden)
    return layers, parts


def build_stage(spec: ModelSpec, seed: int, stage: int, stages: int) -> Stage:
    """Stage ``stage`` of ``stages`` equal slices (the whole model when ``stages`` is 1); parameter names follow
    the whole model's (``layers.{i}`` renumbered per stage; see ``global_name``). The output head is
    ``head.weight``: the token embedding itself in the whole model, a copy on a last stage that lacks it."""
    layers, parts = build_parts(spec, seed)
    per = spec.layers // stages
    return Stage(spec, layers[stage * per:(stage + 1) * per], first=stage == 0, last=stage == stages - 1,
                 parts=parts)


def count_params(stages: list[Stage]) -> int:
    """Parameters of a model split into ``stages``, the tied output head's copy counted once (with the
    embedding it copies)."""
    total = 0
    for st in stages:
        copy = st.tied_copy
        total += sum(q.numel() for q in st.parameters() if q is not copy)
    return total


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
