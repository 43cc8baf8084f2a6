"""A cache of zoo-model captures, so a repeated ``xpusim analyze/roofline/npu resnet50`` skips PyTorch entirely.

Capturing needs torch, and importing this torch build alone takes ~650 MB and about a second; the capture of a
zoo model is a pure function of its name, the capture options, the torch/torchvision versions and xpusim's
costing code. All of those make the key, so a cached entry is never stale: a new torch, a changed formula or a
different option is a different file. Entries are JSON (data, read with ``json``), written atomically under
``$XPUSIM_CACHE/captures`` (default ``~/.cache/xpusim``). ``XPUSIM_CAPTURE_CACHE=0`` turns the cache off.
User models (``file.py:factory``) and eager captures are never cached: their result depends on code we do not
hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from xpusim.files import write_atomic
from xpusim.workload.model import Workload

CACHE_ENV = "XPUSIM_CACHE"
SWITCH_ENV = "XPUSIM_CAPTURE_CACHE"


def user_cache_dir() -> Path:
    """xpusim's cache root (captures here, trained compression baselines in `xpusim.compress.tasks`):
    $XPUSIM_CACHE, else ~/.cache/xpusim."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "xpusim")


def cache_dir() -> Path:
    return user_cache_dir() / "captures"


@functools.cache
def _code_digest() -> str:
    """Hash of everything that decides a capture's numbers: the workload package's code and shipped configs."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".yaml", ".yml", ".json"):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


@functools.cache  # installed versions do not change within a process; reading them costs ~2 ms each
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def cacheable(model: str, kwargs: dict[str, Any]) -> bool:
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return False
    return ":" not in model and not model.endswith(".py") and kwargs.get("device", "meta") == "meta"


def cache_key(model: str, kwargs: dict[str, Any]) -> str:
    spec = {"model": model, "options": {k: (list(v) if isinstance(v, tuple) else v if v is None or
                                            isinstance(v, int | float | bool) else str(v))
                                        for k, v in sorted(kwargs.items())},
            "torch": _version("torch"), "torchvision": _version("torchvision"), "code": _code_digest()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def load(model: str, kwargs: dict[str, Any]) -> Workload | None:
    path = cache_dir() / f"{cache_key(model, kwargs)}.json"
    try:
        return Workload.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: capture again
        return None


def store(model: str, kwargs: dict[str, Any], wl: Workload) -> None:
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        write_atomic(d / f"{cache_key(model, kwargs)}.json", wl.to_json(indent=None))
    except OSError:  # a read-only home is no reason to fail the run
        return


def analyze_cached(model: str, **kwargs: Any) -> Workload:
    """`xpusim.analyze` for a zoo model name, from the cache when this exact capture was made before."""
    use = cacheable(model, kwargs)
    if use:
        hit = load(model, kwargs)
        if hit is not None:
            return hit
    from xpusim.workload.api import analyze  # torch: only on a miss

    wl = analyze(model, **kwargs)
    if use:
        store(model, kwargs, wl)
    return wl
