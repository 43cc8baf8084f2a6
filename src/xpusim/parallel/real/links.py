"""What moving bytes between two ranks costs on this machine, measured: gloo point-to-point and all-reduce times at
a few message sizes, fitted to the α–β model (t = α + bytes·β). ``xpusim run --predict`` prices the pipeline's
activations and the all-reduces with it.

`measure_links` starts its own ranks the way the run's launcher does (``python -m xpusim.parallel.real.links``,
gloo on 127.0.0.1, a free port, one rank per core, a deadline, no process left behind); `cached_links` keeps the
result in ``$XPUSIM_CACHE`` (default ``~/.cache/xpusim``) under this host's name and torch version and reuses it
while it is there: delete the file to measure again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from xpusim.files import write_atomic
from xpusim.units import KIB, MIB

SIZES_BYTES = (4 * KIB, 64 * KIB, 1 * MIB, 4 * MIB, 16 * MIB)
"""Message sizes timed: from latency-bound to bandwidth-bound."""
MEASURE_TIMEOUT_S = 60.0  # importing torch in two ranks on a loaded 2-core VM, then a few seconds of timing


@dataclass(frozen=True, kw_only=True)
class LinkCosts:
    """The α–β cost of gloo between ranks of this machine. Point-to-point: α + bytes·β. All-reduce among n ranks
    (ring): (n − 1)·α + 2(n − 1)/n·bytes·β — two ranks, where it was measured, give α + bytes·β."""

    p2p_alpha_s: float
    p2p_s_per_byte: float
    allreduce_alpha_s: float
    """Latency of one all-reduce between two ranks."""
    allreduce_s_per_byte: float
    """Seconds per byte of the ring's 2(n − 1)/n·bytes traffic."""
    source: str = ""
    """How and where it was measured (or ``given``)."""

    def p2p_s(self, nbytes: float) -> float:
        return self.p2p_alpha_s + nbytes * self.p2p_s_per_byte if nbytes > 0 else 0.0

    def allreduce_s(self, nbytes: float, ranks: int) -> float:
        """One ring all-reduce of ``nbytes`` among ``ranks`` (0 for one rank: nothing to reduce)."""
        if ranks < 2 or nbytes <= 0:
            return 0.0
        return (ranks - 1) * self.allreduce_alpha_s + 2 * (ranks - 1) / ranks * nbytes * self.allreduce_s_per_byte

    def allgather_s(self, nbytes: float, ranks: int) -> float:
        """All-gather (or reduce-scatter) of ``nbytes`` in total: half a ring all-reduce (one of its two passes)."""
        return self.allreduce_s(nbytes, ranks) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_alpha_beta(sizes_bytes: Sequence[float], times_s: Sequence[float]) -> tuple[float, float]:
    """(α seconds, β seconds per byte) of t = α + bytes·β by least squares on the *relative* error (weights 1/t²):
    the sizes span four orders of magnitude, and a plain fit would let the largest message decide α alone. α is
    kept ≥ 0 (a negative latency is noise): then β is refitted through the origin; so is β (then t = α)."""
    if len(sizes_bytes) != len(times_s) or len(sizes_bytes) < 2:
        raise ValueError("fit_alpha_beta needs two or more (size, time) pairs of equal length")
    w = [1.0 / t**2 for t in times_s]
    sw = sum(w)
    sx = sum(wi * x for wi, x in zip(w, sizes_bytes, strict=True))
    sy = sum(wi * y for wi, y in zip(w, times_s, strict=True))
    sxx = sum(wi * x * x for wi, x in zip(w, sizes_bytes, strict=True))
    sxy = sum(wi * x * y for wi, x, y in zip(w, sizes_bytes, times_s, strict=True))
    det = sw * sxx - sx * sx
    if det <= 0:
        raise ValueError("fit_alpha_beta needs at least two different sizes")
    beta = (sw * sxy - sx * sy) / det
    alpha = (sy - beta * sx) / sw
    if alpha < 0:
        alpha, beta = 0.0, sxy / sxx
    elif beta < 0:  # the small messages took longer than the large ones: noise; all latency
        alpha, beta = sy / sw, 0.0
    return alpha, beta


def fit_links(timings: dict[str, Any], source: str = "") -> LinkCosts:
    """`LinkCosts` from a measurement's ``{"sizes_bytes": [...], "p2p_s": [...], "allreduce_s": [...]}``."""
    sizes = timings["sizes_bytes"]
    a_p, b_p = fit_alpha_beta(sizes, timings["p2p_s"])
    a_r, b_r = fit_alpha_beta(sizes, timings["allreduce_s"])  # two ranks: 2(n − 1)/n = 1
    return LinkCosts(p2p_alpha_s=a_p, p2p_s_per_byte=b_p, allreduce_alpha_s=a_r, allreduce_s_per_byte=b_r,
                     source=source)


# ------------------------------------------------------------------------------------------------- measuring
def _lower_quartile(xs: Sequence[float]) -> float:
    """The links' own cost, without most of the interference of other processes on a shared machine (a median
    moved with the load of the moment, and the first measurement is cached for good)."""
    return statistics.quantiles(xs, n=4)[0] if len(xs) > 1 else xs[0]


def _time_rank(sizes: Sequence[int], reps: int) -> dict[str, Any]:
    """In one rank: the one-way time of a ping-pong between ranks 0 and 1, and the time of an all-reduce among all
    ranks, per size (rank 0's view; the lower quartile of the repeats)."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    p2p, allreduce = [], []
    for size in sizes:
        buf = torch.ones(size // 4)
        n = max(3, min(reps, int(reps * MIB / size) or 3))  # fewer repeats for the big messages
        trips, reduces = [], []
        dist.barrier()
        for i in range(n + 1):  # the first trip is a warm-up; a ping-pong keeps the two ranks in step
            t0 = time.perf_counter()
            if rank == 0:
                dist.send(buf, 1)
                dist.recv(buf, 1)
            elif rank == 1:
                dist.recv(buf, 0)
                dist.send(buf, 0)
            if i:
                trips.append((time.perf_counter() - t0) / 2)
        dist.barrier()
        for i in range(n + 1):  # back to back: each all-reduce waits for every rank anyway
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            if i:
                reduces.append(time.perf_counter() - t0)
        p2p.append(_lower_quartile(trips))
        allreduce.append(_lower_quartile(reduces))
    return {"sizes_bytes": [float(s) for s in sizes], "p2p_s": p2p, "allreduce_s": allreduce, "ranks": world}


def _rank_main() -> None:
    """``python -m xpusim.parallel.real.links RESULT SIZES REPS``: one rank of `measure_links`."""
    from datetime import timedelta

    import torch.distributed as dist

    result, sizes, reps = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    pin_rank_to_core()
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=MEASURE_TIMEOUT_S))
    try:
        timings = _time_rank(sizes, reps)
        if rank == 0:
            write_atomic(result, json.dumps(timings))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # as the run's ranks: no interpreter teardown beside gloo's threads (see worker._end_process)


def run_helper_ranks(module: str, args: Sequence[str], ranks: int, *, what: str, timeout_s: float,
                     on_start: Callable[[list[int]], None] | None = None) -> Any:
    """Start ``python -m MODULE RESULT ARGS...`` as ``ranks`` gloo ranks on 127.0.0.1 (the environment
    ``torch.distributed`` reads, a free port), wait for them and return the JSON rank 0 wrote to RESULT. Every rank
    is stopped on failure or after ``timeout_s``; `RunError` names ``what``, the rank and its error. ``on_start(pids)``
    sees the processes (tests check that none outlives the measurement)."""
    from xpusim.parallel.real.launch import RunError, _error_line, _stop, free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="xpusim-helper-") as tmp_dir:
        tmp = Path(tmp_dir)
        result = tmp / "result.json"
        procs: list[subprocess.Popen[bytes]] = []

        def failed(rank: int, code: int | None) -> RunError:
            return RunError(f"{what}: rank {rank} failed (exit code {code}): {_error_line(tmp / f'rank{rank}.err')}")

        try:
            # started from a torchrun rank: not torchrun's store (TORCHELASTIC_USE_AGENT_STORE), a group of our own
            base = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC_", "TORCH_ELASTIC_"))}
            for rank in range(ranks):
                env = dict(base, RANK=str(rank), WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                           GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
                with open(tmp / f"rank{rank}.err", "wb") as err_f:
                    procs.append(subprocess.Popen([sys.executable, "-m", module, str(result), *args], env=env,
                                                  stdout=subprocess.DEVNULL, stderr=err_f, start_new_session=True))
            if on_start is not None:
                on_start([p.pid for p in procs])
            deadline = time.monotonic() + timeout_s
            while any(p.poll() is None for p in procs):
                bad = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode not in (None, 0)]
                if bad:
                    raise failed(*bad[0])
                if time.monotonic() > deadline:
                    raise RunError(f"{what} did not finish within {timeout_s:g} s")
                time.sleep(0.05)
            bad = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode != 0]
            if bad or not result.exists():
                raise failed(*(bad[0] if bad else (0, 0)))
            return json.loads(result.read_text())
        finally:
            _stop(procs)


def pin_rank_to_core() -> None:
    """One rank per core, as the run's ranks (when there are enough cores), and one thread."""
    import torch

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    cpus: list[int] = []
    if hasattr(os, "sched_getaffinity"):
        with contextlib.suppress(OSError):  # started by a pinned process (a torchrun rank): use the whole machine
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        cpus = sorted(os.sched_getaffinity(0))
    if cpus and world <= len(cpus):
        os.sched_setaffinity(0, {cpus[rank % len(cpus)]})
    torch.set_num_threads(1)


def measure_links(ranks: int = 2, *, sizes: Sequence[int] = SIZES_BYTES, reps: int = 10,
                  timeout_s: float = MEASURE_TIMEOUT_S, on_start: Callable[[list[int]], None] | None = None
                  ) -> LinkCosts:
    """Start ``ranks`` gloo processes on 127.0.0.1, time send/recv and all-reduce at ``sizes`` and fit α–β. Every
    rank is stopped on failure or after ``timeout_s``; `RunError` says which rank failed and why. ``on_start(pids)``
    sees the rank processes (tests check that none outlives the measurement)."""
    if ranks < 2:
        raise ValueError(f"measure_links needs 2 or more ranks, not {ranks}")
    timings = run_helper_ranks("xpusim.parallel.real.links", [",".join(map(str, sizes)), str(reps)], ranks,
                               what="link measurement", timeout_s=timeout_s, on_start=on_start)
    host = socket.gethostname()
    return fit_links(timings, source=f"measured on {host} with {ranks} gloo ranks on 127.0.0.1 (one per core), "
                                     f"{len(sizes)} sizes {sizes[0] // KIB} KiB … {sizes[-1] // MIB} MiB, "
                                     f"{time.strftime('%Y-%m-%d')}")


def cache_path(cache_dir: Path | None = None) -> Path:
    """Where `cached_links` keeps this machine's costs: keyed by host name and torch version."""
    from xpusim.workload.cache import user_cache_dir

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:  # pragma: no cover
        torch_version = "none"
    return (cache_dir or user_cache_dir()) / f"links-{socket.gethostname()}-torch{torch_version}.json"


def cached_links(cache_dir: Path | None = None) -> tuple[LinkCosts, Path, bool]:
    """(this machine's link costs, the cache file, whether they were measured now): reused when the cache file
    exists, else measured (`measure_links`, a few seconds) and written."""
    path = cache_path(cache_dir)
    if path.is_file():
        try:
            return LinkCosts(**json.loads(path.read_text())), path, False
        except (ValueError, TypeError):  # a damaged or older file: measure again
            pass
    links = measure_links()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(links.to_dict(), indent=2))
    return links, path, True


if __name__ == "__main__":
    _rank_main()
