"""Writing files the user asked for: paths checked before any work starts, and one atomic write (a temporary file
in the target directory renamed into place), so a crash or a bad path never leaves a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from xpusim.errors import UserError
from xpusim.units import default_file_mode

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_output(path: Path | str | None, option: str, suffixes: Sequence[str] = ()) -> Path | None:
    """Raise `UserError` now if ``path`` cannot be written later: its directory is missing, it is a directory,
    or its suffix is not one of ``suffixes`` (when given). Call before the work that produces the file."""
    if path is None:
        return None
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise UserError(f"{option} {str(p)!r}: the suffix must be one of {', '.join(suffixes)}")
    if p.is_dir():
        raise UserError(f"{option} {str(p)!r} is a directory; give a file name")
    parent = p.parent
    if not parent.is_dir():
        raise UserError(f"{option} {str(p)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{option} {str(p)!r}: directory {str(parent)!r} is not writable")
    return p


def write_atomic(path: Path | str, content: str | bytes | Callable[[str], None]) -> None:
    """Write ``content`` (text, bytes, or a function that writes the file it is given) to ``path`` atomically."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=p.suffix or ".tmp")
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, p)
    finally:
        Path(tmp).unlink(missing_ok=True)
