"""Built-in tasks that need no download: a small CNN on scikit-learn's bundled digits (8×8 images, 10 classes),
trained from scratch with a fixed seed in a few seconds and cached."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CACHE_ENV = "XPUSIM_CACHE"


def cache_dir() -> Path:
    """Where trained float models are kept: $XPUSIM_CACHE, else ~/.cache/xpusim."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "xpusim")


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
    """Name of the output layer (kept whole by structured pruning)."""

    def evaluate(self, model: nn.Module) -> float:
        """Accuracy on the held-out split, in percent."""
        model.eval()
        with torch.no_grad():
            pred = model(self.test_x).argmax(dim=1)
        return 100.0 * float((pred == self.test_y).float().mean())

    def calibration_batch(self, n: int = 256) -> torch.Tensor:
        return self.train_x[:n]

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


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int,
          batch: int = 64) -> nn.Module:
    """Plain Adam + cross-entropy, deterministic for a seed (one thread)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model


def digits_task(seed: int = 0, epochs: int = 30) -> Task:
    """The digits CNN, trained once per (seed, epochs) and cached (loaded with weights_only=True)."""
    xtr, ytr, xte, yte = digits_data(seed)
    key = hashlib.sha256(f"digits-cnn-v1-{seed}-{epochs}".encode()).hexdigest()[:16]
    path = cache_dir() / f"digits-cnn-{key}.pt"
    torch.manual_seed(seed)
    model = DigitsCNN()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
    else:
        train(model, xtr, ytr, epochs=epochs, lr=3e-3, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return Task(name="digits-cnn", metric="accuracy %", train_x=xtr, train_y=ytr, test_x=xte, test_y=yte,
                model=model, example=xte[:1], classifier="fc2")


TASKS = {"digits-cnn": digits_task}
