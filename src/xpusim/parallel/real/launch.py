"""Local launcher: one process per rank on this machine, a free port found automatically, a deadline for the
whole run. If a rank fails or the deadline passes, every rank is stopped (its whole process group), the first
failure is reported with the end of that rank's error output, and no process is left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from xpusim.parallel.real.spec import RunSpec

STARTUP_ALLOWANCE_S = 60.0  # importing torch in every rank, before the run's own timeout starts to matter


class RunError(RuntimeError):
    """A real run that did not finish: which rank, why, and the end of its error output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


_PEER_ERRORS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket closed",
                "ECONNRESET", "EPIPE")


def _error_line(path: Path) -> str:
    """The exception line of a rank's traceback (``RuntimeError: ...``), without torchrun's ``[rankN]:``."""
    lines = [ln.split("]: ", 1)[-1] if ln.startswith("[rank") else ln for ln in _tail(path, 400).splitlines()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return ln.strip()
    return lines[-1].strip() if lines else "no error output"


def _exit_cause(rank: int, code: int) -> str:
    """``rank 1 failed (exit code 1)``, or for a rank ended by a signal (Popen's negative exit code)
    ``rank 1 was killed by signal SIGKILL (exit code -9)``: an abort (SIGABRT) or the OOM killer, not an error
    the rank reported itself."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"rank {rank} was killed by signal {name} (exit code {code})"
    return f"rank {rank} failed (exit code {code})"


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate every rank's process group, then kill what is left; reap them all."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


PORT_ATTEMPTS = 3
"""Ports tried before giving up: a free port found here can be taken by another program before rank 0 binds it."""

_PORT_TAKEN = ("EADDRINUSE", "Address already in use", "address already in use")


class _PortTaken(RunError):
    """Rank 0 could not listen on the rendezvous port: another program took it after it was found free."""


def launch(spec: RunSpec, *, on_start: Any = None, port: int | None = None) -> dict[str, Any]:
    """Run every rank of ``spec`` here and return rank 0's JSON report. ``on_start(pids)`` sees the rank
    processes of each attempt (tests use it to check that none outlives the run). The rendezvous port is a free
    one (or ``port``); when it turns out taken by the time rank 0 listens, the run starts again on another free
    port, up to ``PORT_ATTEMPTS`` times in all."""
    tried: list[int] = []
    for _ in range(PORT_ATTEMPTS):
        chosen = port if port is not None and not tried else free_port()
        tried.append(chosen)
        try:
            return _launch_once(spec, chosen, on_start)
        except _PortTaken:
            continue
    raise RunError(f"rank 0 could not listen on ports {', '.join(map(str, tried))}: each was taken by another "
                   "program (EADDRINUSE)")


def _launch_once(spec: RunSpec, port: int, on_start: Any) -> dict[str, Any]:
    world = spec.ranks
    with tempfile.TemporaryDirectory(prefix="xpusim-run-") as tmp_dir:
        tmp = Path(tmp_dir)
        result = tmp / "result.json"
        procs: list[subprocess.Popen[bytes]] = []
        logs = []
        try:
            for rank in range(world):
                env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                           LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                           OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
                err = tmp / f"rank{rank}.err"
                logs.append(err)
                argv = [sys.executable, "-m", "xpusim.run", *spec.to_argv(), "--result", str(result)]
                with open(err, "wb") as err_f:
                    procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err_f,
                                                  start_new_session=True))
            if on_start is not None:
                on_start([p.pid for p in procs])
            deadline = time.monotonic() + spec.timeout_s + STARTUP_ALLOWANCE_S
            failed: tuple[int, int] | None = None
            while True:
                codes = [p.poll() for p in procs]
                bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
                if bad:
                    failed = bad[0]
                    break
                if all(c == 0 for c in codes):
                    break
                if time.monotonic() > deadline:
                    alive = [r for r, c in enumerate(codes) if c is None]
                    _stop(procs)
                    raise RunError(f"the run did not finish within {spec.timeout_s:g} s (+{STARTUP_ALLOWANCE_S:g} s "
                                   f"start-up); ranks {', '.join(map(str, alive))} still running were stopped")
                time.sleep(0.05)
            if failed is not None:
                time.sleep(0.2)  # let near-simultaneous failures land, then tell the cause from its echoes
                codes = [p.poll() for p in procs]
                running = [r for r, c in enumerate(codes) if c is None]
                bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
                _stop(procs)
                if any(t in _tail(logs[0], 400) for t in _PORT_TAKEN):
                    raise _PortTaken(f"port {port} taken")
                rank, code = min(bad, key=lambda rc: (any(e in _error_line(logs[rc[0]]) for e in _PEER_ERRORS), rc[0]))
                names = f"rank{'s' if len(running) > 1 else ''} {', '.join(map(str, running))}"
                timed_out = "timed out" in _error_line(logs[rank]).lower()
                still = (f" ({names} never reached the collective: hung)" if timed_out else
                         f" ({names} still running)") if running else ""
                after = " after the run's result was written" if result.exists() else ""
                raise RunError(f"{_exit_cause(rank, code)}{after}: {_error_line(logs[rank])}; every rank was "
                               f"stopped{still}")
            if not result.exists():
                raise RunError("the ranks exited without writing a result")
            report: dict[str, Any] = json.loads(result.read_text())
            return report
        finally:
            _stop(procs)
