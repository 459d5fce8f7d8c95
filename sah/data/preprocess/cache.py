"""On-disk cache of preprocessed cases, so a second epoch or run skips file I/O and resampling.

Layout under the root (default ``cache_dir() / "preprocess"``)::

    <pipeline name>-<fingerprint>/pipeline.json     the config, for people
    <pipeline name>-<fingerprint>/<k[:2]>/<k>.safetensors
    source-hashes/<hash of the path>.json           content-hash memo (below)

Key ``k`` hashes the content of the image (for a DICOM folder every file, sorted by relative
name) and of the label, the load options and the pipeline fingerprint, so a changed file or
config is a new entry. Entries are safetensors (arrays plus JSON metadata; no pickle anywhere),
written to a temporary file and moved into place with ``os.replace``, so readers never see half
an entry. An entry that fails to load or does not match its metadata (truncated, emptied,
foreign) is rebuilt.

Hashing gigabytes of DICOM at every start would eat much of the saving, so content hashes are
memoised per path with the files' (size, mtime_ns) signature: while neither changes, the stored
hash is reused without reading the file. A tool that rewrites a file in place keeping both size
and mtime would defeat this; ``verify_content=True`` hashes the bytes every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from sah.data.preprocess.pipelines import Preprocess, PreprocessedCase
from sah.data.progress import Progress
from sah.errors import DataError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the entry layout changes
CHUNK_BYTES = 1 << 20


@dataclass
class CacheStats:
    """Counts since the cache object was made: ``rebuilt`` entries were present but corrupt."""

    hits: int = 0
    misses: int = 0
    rebuilt: int = 0
    hashed_bytes: int = 0


class PreprocessCache:
    """``get_or_compute(image, label, pipeline)``: the cached case, else computed and stored."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        verify_content: bool = False,
        total: int | None = None,
    ) -> None:
        if root is None:
            from sah.data.cache import cache_dir

            root = cache_dir() / "preprocess"
        self.root = Path(root).expanduser()
        self.verify_content = verify_content
        self.stats = CacheStats()
        self._memo: dict[str, tuple[Any, str]] = {}
        # Progress lines start with the first case that must be computed (hits are instant);
        # ``total`` is the number of cases the caller will ask for, when it knows it.
        self.total = total
        self._progress: Progress | None = None

    def get_or_compute(
        self,
        image_path: str | Path,
        label_path: str | Path | None,
        pipeline: Preprocess,
        *,
        assume_offset: float | None = None,
        fill_nonfinite: float | None = None,
    ) -> PreprocessedCase:
        """The preprocessed case for these source files, from the cache when it holds it.

        ``assume_offset`` / ``fill_nonfinite`` are passed to ``load_ct`` and are part of the key.
        Errors in the source files (``DataError``) propagate; errors in cache files do not.
        """
        path = self.entry_path(
            image_path,
            label_path,
            pipeline,
            assume_offset=assume_offset,
            fill_nonfinite=fill_nonfinite,
        )
        if path.exists():
            case = self._read(path, expect_label=label_path is not None)
            if case is not None:
                self.stats.hits += 1
                self._advance(pipeline)
                return case
            self.stats.rebuilt += 1
        else:
            self.stats.misses += 1
        case = self._compute(image_path, label_path, pipeline, assume_offset, fill_nonfinite)
        self._write(path, case, pipeline)
        self._advance(pipeline)
        return case

    def _advance(self, pipeline: Preprocess) -> None:
        computed = self.stats.misses + self.stats.rebuilt
        if self._progress is None:
            if computed == 0:
                return
            total = self.total
            self._progress = Progress(f"preprocessing {pipeline.name}", total, unit="case")
            self._progress.done = self.stats.hits + computed - 1
        self._progress.advance(note=f"{computed} computed, {self.stats.hits} cached")
        if self.total is not None and self._progress.done >= self.total:
            self._progress.close()

    def entry_path(
        self,
        image_path: str | Path,
        label_path: str | Path | None,
        pipeline: Preprocess,
        *,
        assume_offset: float | None = None,
        fill_nonfinite: float | None = None,
    ) -> Path:
        """Where the entry for these inputs lives (it may not exist yet)."""
        fingerprint = pipeline.fingerprint()
        key_fields = {
            "format": CACHE_FORMAT,
            "image": self.content_hash(image_path),
            "label": None if label_path is None else self.content_hash(label_path),
            "load": {"assume_offset": assume_offset, "fill_nonfinite": fill_nonfinite},
            "pipeline": fingerprint,
        }
        key = _sha256_text(json.dumps(key_fields, sort_keys=True, separators=(",", ":")))
        folder = self.root / f"{pipeline.name}-{fingerprint}"
        return folder / key[:2] / f"{key}.safetensors"

    def content_hash(self, path: str | Path) -> str:
        """SHA-256 of a file's bytes, or of a folder's files (relative names and bytes, sorted by
        name); memoised by the (size, mtime_ns) of every file unless ``verify_content``."""
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(path, "does not exist", "check the path in the manifest")
        resolved = str(path.resolve())
        files = _list_files(path)
        signature = [[name, st.st_size, st.st_mtime_ns] for name, _, st in files]
        if not self.verify_content:
            cached = self._memo.get(resolved) or self._read_memo(resolved)
            if cached is not None and cached[0] == signature:
                self._memo[resolved] = cached
                return cached[1]
        digest = hashlib.sha256()
        for name, file, st in files:
            digest.update(name.encode() + b"\0" + st.st_size.to_bytes(8, "little"))
            with open(file, "rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    digest.update(chunk)
            self.stats.hashed_bytes += st.st_size
        value = digest.hexdigest()
        self._memo[resolved] = (signature, value)
        self._write_memo(resolved, signature, value)
        return value

    # -- entries --------------------------------------------------------------------------

    def _compute(
        self,
        image_path: str | Path,
        label_path: str | Path | None,
        pipeline: Preprocess,
        assume_offset: float | None,
        fill_nonfinite: float | None,
    ) -> PreprocessedCase:
        from sah.data.readers.ct import load_ct, load_label

        ct = load_ct(image_path, assume_offset=assume_offset, fill_nonfinite=fill_nonfinite)
        label = None if label_path is None else load_label(label_path, like=ct)
        return pipeline(ct, label)

    def _write(self, path: Path, case: PreprocessedCase, pipeline: Preprocess) -> None:
        tensors: dict[str, np.ndarray] = {
            "image": np.ascontiguousarray(case.image, dtype=np.float32),
            "affine": np.ascontiguousarray(case.affine, dtype=np.float64),
        }
        if case.label is not None:
            tensors["label"] = np.ascontiguousarray(case.label, dtype=np.uint8)
        metadata = {
            "format": str(CACHE_FORMAT),
            "pipeline": pipeline.name,
            "fingerprint": pipeline.fingerprint(),
            "shape": json.dumps(list(case.image.shape)),
            "has_label": str(case.label is not None),
        }
        try:
            description = path.parent.parent / "pipeline.json"
            if not description.exists():
                _atomic_write_json(description, _describe(pipeline))
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
            os.close(fd)
            try:
                save_file(tensors, tmp, metadata=metadata)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as error:  # a full or read-only cache must not stop training
            log.warning("could not write preprocessing cache entry %s: %s", path, error)

    def _read(self, path: Path, *, expect_label: bool) -> PreprocessedCase | None:
        """The stored case, or None (and the file removed) if it is not a complete entry."""
        try:
            with safe_open(str(path), framework="np") as handle:
                meta = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
            shape = tuple(json.loads(meta["shape"]))
            label = arrays.get("label")
            problem = None
            if meta.get("format") != str(CACHE_FORMAT):
                problem = f"format {meta.get('format')!r}"
            elif arrays["image"].shape != shape or arrays["affine"].shape != (4, 4):
                problem = "array shapes differ from the metadata"
            elif (label is not None) != expect_label or (
                label is not None and label.shape != shape
            ):
                problem = "label missing or of the wrong shape"
            if problem is None:
                return PreprocessedCase(arrays["image"], label, arrays["affine"])
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
            problem = f"{type(error).__name__}: {error}"
        log.warning("rebuilding corrupt preprocessing cache entry %s (%s)", path, problem)
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    # -- content-hash memo ----------------------------------------------------------------

    def _memo_path(self, resolved: str) -> Path:
        return self.root / "source-hashes" / f"{_sha256_text(resolved)[:32]}.json"

    def _read_memo(self, resolved: str) -> tuple[Any, str] | None:
        try:
            data = json.loads(self._memo_path(resolved).read_text())
            if data["path"] == resolved and isinstance(data["sha256"], str):
                return data["signature"], data["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or damaged memo: hash the content again
        return None

    def _write_memo(self, resolved: str, signature: Any, value: str) -> None:
        record = {"path": resolved, "signature": signature, "sha256": value}
        try:
            _atomic_write_json(self._memo_path(resolved), record)
        except OSError as error:
            log.warning("could not write content-hash memo for %s: %s", resolved, error)


def _list_files(path: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(relative name, path, stat) of a file, or of every file under a folder, sorted by name."""
    if path.is_file():
        return [(path.name, path, path.stat())]
    files = [p for p in path.rglob("*") if p.is_file()]
    if not files:
        raise DataError(path, "is an empty folder", "point the manifest at the DICOM series")
    named = sorted((p.relative_to(path).as_posix(), p) for p in files)
    return [(name, p, p.stat()) for name, p in named]


def _describe(pipeline: Preprocess) -> dict[str, Any]:
    return {
        "pipeline": pipeline.name,
        "version": pipeline.version,
        "fingerprint": pipeline.fingerprint(),
        "params": pipeline.params(),
    }


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
