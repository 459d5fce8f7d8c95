"""Cohort manifests: one CSV row per patient naming its image, optional label and site.

``read_manifest`` checks everything a training run would otherwise trip over hours later
(missing columns, duplicate patients, files that are not there) and returns absolute paths, so
the rest of the framework never resolves paths itself. ``write_manifest`` writes paths relative
to the manifest's folder, so a cohort folder can be moved or shared as a whole.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from sah.errors import DataError

REQUIRED_COLUMNS = ("patient_id", "image")
PATH_COLUMNS = ("image", "label")
TEXT_COLUMNS = ("patient_id", "image", "label", "site")


def require_columns(
    table: pd.DataFrame, columns: Sequence[str], source: str | Path, fix: str = ""
) -> None:
    """DataError naming ``source``, every column of ``columns`` it lacks and those it has."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(
            source, f"lacks column(s) {_listed(missing)} (found: {_listed(table.columns)})", fix
        )


def _listed(names: Sequence[object], most: int = 10) -> str:
    shown = ", ".join(repr(str(n)) for n in list(names)[:most])
    return shown + (" ..." if len(names) > most else "")


def read_manifest(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a manifest CSV; ``image``/``label`` come back as absolute path strings.

    Columns: ``patient_id`` (unique, kept as text so "007" stays "007"), ``image`` (NIfTI file
    or DICOM folder), optional ``label`` and ``site``; other columns are kept as pandas reads
    them. Empty ``label``/``site`` cells become None. With ``check_files`` (the default) every
    image and label must exist now; pass False to defer that to loading (e.g. to skip bad rows).
    """
    path = Path(path).expanduser()
    table = _read_csv(path)
    require_columns(table, REQUIRED_COLUMNS, path, "add a header row with patient_id,image")
    for column in REQUIRED_COLUMNS:
        blank = table[column].isna() | (table[column].astype(str).str.strip() == "")
        if blank.any():
            rows = ", ".join(str(i + 1) for i in table.index[blank][:10])
            raise DataError(
                path, f"empty {column} in data row(s) {rows}", f"fill in every {column}"
            )
    table["patient_id"] = table["patient_id"].str.strip()
    duplicated = table["patient_id"][table["patient_id"].duplicated()].unique().tolist()
    if duplicated:
        raise DataError(
            path,
            f"duplicate patient_id(s): {', '.join(duplicated[:10])}",
            "give each patient one row (several scans of a patient need distinct ids)",
        )
    for column in ("label", "site"):
        if column in table.columns:
            table[column] = _object_column(table[column], _text_or_none)
    for column in PATH_COLUMNS:
        if column in table.columns:
            table[column] = _object_column(table[column], lambda p: _absolute(p, path.parent))
    if check_files:
        _check_files_exist(table, path)
    return table.reset_index(drop=True)


def write_manifest(df: pd.DataFrame, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``df`` as a manifest at ``path`` with image/label paths relative to its folder.

    ``df`` holds absolute paths (as ``read_manifest`` returns them); relative ones are taken
    relative to the current directory.

    The file is replaced atomically (temporary file + rename), so a crash never leaves half a
    manifest. An existing manifest with different content is kept unless ``overwrite`` is True;
    rewriting identical content is a no-op.
    """
    path = Path(path).expanduser().absolute()
    require_columns(df, REQUIRED_COLUMNS, path, "a manifest needs patient_id and image")
    table = df.copy()
    for column in PATH_COLUMNS:
        if column in table.columns:
            table[column] = _object_column(table[column], lambda p: _relative(p, path.parent))
    content = table.to_csv(index=False, lineterminator="\n")
    if path.exists():
        if path.read_text(encoding="utf-8") == content:
            return path
        if not overwrite:
            raise DataError(
                path,
                "exists with different content",
                "choose another path, delete the old manifest, or pass overwrite=True",
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "manifest does not exist", "check the path (data.manifest)")
    if path.stat().st_size == 0:
        raise DataError(path, "manifest is empty", "write a header row and one row per patient")
    try:
        table = pd.read_csv(
            path,
            dtype={c: str for c in TEXT_COLUMNS},
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(path, f"is not a readable CSV: {error}", "save it as UTF-8 CSV") from error
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise DataError(
            path, "manifest has a header but no patient rows", "add one row per patient"
        )
    return table


def _object_column(column: pd.Series, convert: Callable[[object], str | None]) -> pd.Series:
    """Map cells into an object column, so missing values stay None instead of becoming NaN."""
    return pd.Series([convert(v) for v in column], index=column.index, dtype=object)


def _text_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _absolute(value: object, folder: Path) -> str | None:
    text = _text_or_none(value)
    if text is None:
        return None
    return os.path.abspath(folder / Path(text).expanduser())


def _relative(value: object, folder: Path) -> str | None:
    text = _text_or_none(value)
    if text is None:
        return None
    try:
        return Path(os.path.relpath(os.path.abspath(text), folder)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(text).as_posix()


def _check_files_exist(table: pd.DataFrame, manifest: Path) -> None:
    for row in table.itertuples(index=False):
        for column in PATH_COLUMNS:
            file = getattr(row, column, None)
            if file is not None and not os.path.exists(file):
                raise DataError(
                    manifest,
                    f"patient {row.patient_id}: {column} {file} does not exist",
                    "fix the path (relative paths resolve against the manifest's folder) or "
                    "remove the row",
                )
