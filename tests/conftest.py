import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

# Tests capture models afresh: a capture cached by an earlier run (or by a test) must not hide a change.
# test_capture_cache.py turns the cache on for itself, in a temporary directory.
os.environ["XPUSIM_CAPTURE_CACHE"] = "0"


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # 2 threads on a shared 2-core box are 5-10x slower than 1 for small CPU work.
    torch.set_num_threads(1)


def process_alive(pid: int) -> bool:
    """A process that has not exited (a zombie counts as gone): for tests that no rank is left behind."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Fn(torch.nn.Module):
    """A function as a module, so a test can analyze one op: ``xpusim.analyze(Fn(torch.cdist), (a, b))``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)
