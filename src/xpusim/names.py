"""Close-name suggestions for user typos (models, chips)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def suggest(name: str, choices: Sequence[str], n: int = 3) -> list[str]:
    """Names that start with what was typed first (``h100`` -> ``h100-sxm``), then the closest spellings."""
    low = name.lower()
    prefixed = [c for c in choices if c.lower().startswith(low)]
    close = difflib.get_close_matches(low, choices, n=n, cutoff=0.4)
    return list(dict.fromkeys(prefixed[:n] + close))[:n]
