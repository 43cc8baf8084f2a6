import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # 2 threads on a shared 2-core box are 5-10x slower than 1 for small CPU work.
    torch.set_num_threads(1)
