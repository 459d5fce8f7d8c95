"""PreprocessCache: hits without recomputing, misses on changed sources or configs, rebuilt
corrupt entries, atomic writes, no pickle; and the benchmark's smoke run."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest

from sah.data.preprocess import PreprocessedCase, SwinPreprocess
from sah.data.preprocess.cache import PreprocessCache
from sah.data.readers.ct import CTVolume
from sah.errors import DataError


@dataclass(frozen=True, eq=False)
class CountingSwin(SwinPreprocess):
    """SwinPreprocess that counts how often it really runs."""

    calls: ClassVar[list[int]] = []

    def __call__(self, ct: CTVolume, label: np.ndarray | None = None) -> PreprocessedCase:
        CountingSwin.calls.append(1)
        return super().__call__(ct, label)


@pytest.fixture(autouse=True)
def reset_counter() -> None:
    CountingSwin.calls.clear()


def write_case(folder: Path, blood_hu: float = 70.0, name: str = "case") -> tuple[Path, Path]:
    shape = (40, 36, 10)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    radius = np.sqrt((((grid - centre) / np.array([17, 15, 6])[:, None, None, None]) ** 2).sum(0))
    image = np.where(radius < 1, 1000, -1000).astype(np.int16)
    image[radius < 0.85] = 35
    label = ((radius < 0.4) & (grid[0] > centre[0])).astype(np.uint8)
    image[label > 0] = blood_hu
    affine = np.diag([4.0, 4.0, 5.0, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / f"{name}_ct.nii.gz", folder / f"{name}_label.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), image_path)
    nib.save(nib.Nifti1Image(label, affine), label_path)
    return image_path, label_path


def entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.safetensors"))


def test_second_call_is_a_hit_without_recompute(tmp_path: Path) -> None:
    image, label = write_case(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    pipeline = CountingSwin(min_shape=(16, 16, 8))
    first = cache.get_or_compute(image, label, pipeline)
    second = cache.get_or_compute(image, label, pipeline)
    assert len(CountingSwin.calls) == 1
    assert (cache.stats.misses, cache.stats.hits, cache.stats.rebuilt) == (1, 1, 0)
    assert np.array_equal(first.image, second.image) and np.array_equal(first.label, second.label)
    assert np.allclose(first.affine, second.affine) and second.spacing == first.spacing
    assert second.image.dtype == np.float32 and second.label.dtype == np.uint8
    # A new cache object (a new run) hits too, and the memo spares it from reading the sources.
    again = PreprocessCache(tmp_path / "cache")
    again.get_or_compute(image, label, pipeline)
    assert len(CountingSwin.calls) == 1 and again.stats.hits == 1
    assert again.stats.hashed_bytes == 0


def test_unlabelled_case_is_cached_without_label(tmp_path: Path) -> None:
    image, _ = write_case(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    pipeline = CountingSwin(min_shape=None)
    assert cache.get_or_compute(image, None, pipeline).label is None
    assert cache.get_or_compute(image, None, pipeline).label is None
    assert len(CountingSwin.calls) == 1


def test_changed_source_or_config_is_a_miss(tmp_path: Path) -> None:
    image, label = write_case(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    pipeline = CountingSwin(min_shape=None)
    before = cache.get_or_compute(image, label, pipeline)
    stat = image.stat()
    write_case(tmp_path / "data", blood_hu=90.0)  # new content, same file name
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = cache.get_or_compute(image, label, pipeline)
    assert len(CountingSwin.calls) == 2
    assert not np.array_equal(before.image, after.image)
    cache.get_or_compute(image, label, CountingSwin(min_shape=None, clip_hu=(-100.0, 200.0)))
    assert len(CountingSwin.calls) == 3
    assert cache.stats.misses == 3 and cache.stats.hits == 0
    assert len(entries(tmp_path / "cache")) == 3
    assert len(list((tmp_path / "cache").glob("swin-*/pipeline.json"))) == 2


def test_touched_but_unchanged_source_is_rehashed_and_still_a_hit(tmp_path: Path) -> None:
    image, label = write_case(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    pipeline = CountingSwin(min_shape=None)
    cache.get_or_compute(image, label, pipeline)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 5_000_000))
    hashed = cache.stats.hashed_bytes
    cache.get_or_compute(image, label, pipeline)
    assert len(CountingSwin.calls) == 1 and cache.stats.hits == 1
    assert cache.stats.hashed_bytes == hashed + image.stat().st_size


def test_verify_content_catches_a_rewrite_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"a" * 100)
    stat = path.stat()
    memo = PreprocessCache(tmp_path / "cache")
    first = memo.content_hash(path)
    path.write_bytes(b"b" * 100)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert memo.content_hash(path) == first  # the memo trusts (size, mtime_ns), as documented
    assert PreprocessCache(tmp_path / "cache", verify_content=True).content_hash(path) != first


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),  # truncated
        lambda p: p.write_bytes(b""),  # emptied
        lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      "),  # garbage
    ],
    ids=["truncated", "empty", "garbage"],
)
def test_corrupt_entry_is_rebuilt(tmp_path: Path, damage) -> None:
    image, label = write_case(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    pipeline = CountingSwin(min_shape=None)
    good = cache.get_or_compute(image, label, pipeline)
    (entry,) = entries(tmp_path / "cache")
    damage(entry)
    rebuilt = cache.get_or_compute(image, label, pipeline)
    assert len(CountingSwin.calls) == 2 and cache.stats.rebuilt == 1
    assert np.array_equal(rebuilt.image, good.image)
    assert cache.get_or_compute(image, label, pipeline) is not None
    assert cache.stats.hits == 1 and len(CountingSwin.calls) == 2


def test_entry_without_its_label_is_rebuilt(tmp_path: Path) -> None:
    """An entry written for the unlabelled case is not served when a label is asked for."""
    from safetensors.numpy import load_file, save_file

    image, label = write_case(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    pipeline = CountingSwin(min_shape=None)
    cache.get_or_compute(image, label, pipeline)
    (entry,) = entries(tmp_path / "cache")
    arrays = load_file(entry)
    meta = {"format": "1", "shape": json.dumps(list(arrays["image"].shape))}
    save_file({k: v for k, v in arrays.items() if k != "label"}, entry, metadata=meta)
    assert cache.get_or_compute(image, label, pipeline).label is not None
    assert cache.stats.rebuilt == 1


def test_no_pickle_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("pickle or np.load used")

    for name in ("load", "loads", "dump", "dumps", "Unpickler", "Pickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    monkeypatch.setattr(np, "save", refuse)
    image, label = write_case(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    cache.get_or_compute(image, label, CountingSwin(min_shape=None))
    cache.get_or_compute(image, label, CountingSwin(min_shape=None))
    assert cache.stats.hits == 1
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".safetensors", ".json"}
    (entry,) = entries(tmp_path / "cache")
    header_length = int.from_bytes(entry.read_bytes()[:8], "little")
    assert entry.read_bytes()[8 : 8 + header_length].lstrip().startswith(b"{")


def test_failed_write_leaves_no_partial_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sah.data.preprocess.cache as module

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_file", half_write)
    image, label = write_case(tmp_path / "data")
    cache = PreprocessCache(tmp_path / "cache")
    case = cache.get_or_compute(image, label, CountingSwin(min_shape=None))
    assert case.label is not None  # the caller still gets its case
    assert entries(tmp_path / "cache") == []
    assert not [p for p in (tmp_path / "cache").rglob("*.tmp")]


def test_folder_hash_covers_all_files_sorted_by_name(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path / "cache", verify_content=True)
    series_a, series_b = tmp_path / "a", tmp_path / "b"
    for folder, order in ((series_a, (1, 2, 3)), (series_b, (3, 1, 2))):
        (folder / "sub").mkdir(parents=True)
        for i in order:  # created in another order: same hash
            (folder / f"IM{i:04d}.dcm").write_bytes(bytes([i]) * 64)
        (folder / "sub" / "IM9999.dcm").write_bytes(b"z" * 8)
    assert cache.content_hash(series_a) == cache.content_hash(series_b)
    (series_b / "sub" / "IM9999.dcm").write_bytes(b"y" * 8)
    assert cache.content_hash(series_a) != cache.content_hash(series_b)
    (series_b / "sub" / "IM9999.dcm").write_bytes(b"z" * 8)
    (series_b / "IM0004.dcm").write_bytes(b"")
    assert cache.content_hash(series_a) != cache.content_hash(series_b)


def test_missing_source_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        PreprocessCache(tmp_path / "cache").get_or_compute(
            tmp_path / "nope.nii.gz", None, SwinPreprocess()
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        PreprocessCache(tmp_path / "cache").content_hash(tmp_path / "empty")


def test_default_root_follows_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAH_CACHE_DIR", str(tmp_path / "c"))
    assert PreprocessCache().root == tmp_path / "c" / "preprocess"


def test_benchmark_quick_run_writes_json_and_markdown(quick_benchmark) -> None:
    out = quick_benchmark("bench_cache")
    result = json.loads(out.read_text())
    assert set(result["seconds_per_pass"]) == {
        "no_cache",
        "cold_cache",
        "warm_cache",
        "warm_same_object",
    }
    assert result["speedup_warm_vs_no_cache"] > 0
    assert "Speed-up" in out.with_suffix(".md").read_text()


def test_computing_cases_prints_timestamped_progress_and_hits_stay_silent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a terminal (pytest captures stderr) the progress is plain lines: the first case
    computed and the last of the ``total`` announced; a second pass from the cache prints
    nothing."""
    import re

    cases = [write_case(tmp_path / "src", name=f"c{i}", blood_hu=60.0 + i) for i in range(3)]
    pipeline = CountingSwin(min_shape=None)
    cache = PreprocessCache(tmp_path / "cache", total=3)
    for image, label in cases:
        cache.get_or_compute(image, label, pipeline)
    lines = capsys.readouterr().err.splitlines()
    name = re.escape(pipeline.name)
    assert re.match(
        rf"\[\d\d:\d\d:\d\d\] preprocessing {name}: case 1/3 \(\d+ s, 1 computed", lines[0]
    )
    assert re.match(
        rf"\[\d\d:\d\d:\d\d\] preprocessing {name}: case 3/3 \(\d+ s, 3 computed", lines[-1]
    )

    again = PreprocessCache(tmp_path / "cache", total=3)
    for image, label in cases:
        again.get_or_compute(image, label, pipeline)
    assert capsys.readouterr().err == ""
    assert again.stats.hits == 3
