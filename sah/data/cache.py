"""Where generated data (synthetic cohorts, preprocessing caches) lives, and how it is written.

Everything cached is keyed by a hash of what determines its content and written atomically, so
that concurrent or interrupted runs never expose a half-written entry (docs/CONVENTIONS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV_VAR = "SAH_CACHE_DIR"


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache root: ``override`` (config key ``paths.cache_dir``), else $SAH_CACHE_DIR, else
    ~/.cache/sah. The folder is not created here; writers create what they need."""
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sah"


def content_key(params: dict[str, Any], length: int = 12) -> str:
    """A short stable hash of JSON-serialisable parameters (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it is renamed to ``final``.

    If the body raises, the temporary folder is removed and ``final`` is left untouched. If
    another process created ``final`` meanwhile, its entry wins and ours is discarded (both are
    built from the same key, so they are equivalent).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_file(final: Path) -> Path:
    """A temporary sibling path to write ``final``'s content to; pass it to ``commit_file``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{final.name}-", dir=final.parent)
    os.close(fd)
    return Path(name)


def commit_file(tmp: Path, final: Path) -> None:
    """Move a finished temporary file into place (atomic on one filesystem)."""
    os.replace(tmp, final)
