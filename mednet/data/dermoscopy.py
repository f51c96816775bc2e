"""Dermoscopy data: readers for the public releases, image decoding (photographs and DICOM) and a resized cache.

Every reader returns one table (:class:`pandas.DataFrame`), one row per image in file order, with the columns
:data:`TABLE_COLUMNS` = ``image_id, lesion_id, dx, dx_type, path`` (+ ``split`` where the source has one):

* :func:`read_ham10000` — HAM10000 (Tschandl et al. 2018, Sci. Data 5:180161): ``HAM10000_metadata.csv``
  (``lesion_id,image_id,dx,dx_type,age,sex,localization``) and ``<image_id>.jpg`` in one or more folders
  (the release ships ``HAM10000_images_part_1`` / ``_part_2``). 10,015 images of 7,470 lesions: images of one
  lesion must stay in one split (:mod:`mednet.data.lesion_split`).
* :func:`read_isic2018_groundtruth` — ISIC 2018 Task 3 (Codella et al. 2019): ``image`` + one-hot
  ``MEL,NV,BCC,AKIEC,BKL,DF,VASC``; lesion ids from an optional HAM10000-style file.
* :func:`read_path_label_csv` — a generic ``path,label`` CSV (optional ``image_id``, ``lesion_id``,
  ``dx_type``, ``split``).
* :func:`read_dermamnist` — MedMNIST v2 DermaMNIST ``.npz`` (Yang et al. 2023) and the corrected DermaMNIST-C /
  -E files (Abhishek et al. 2025), which keep the same keys; :func:`dermamnist_to_folder` writes them as PNGs
  plus a split CSV, so every source reaches the bundle through one split-CSV format.

Age, sex and localisation are never copied into a table (outputs stay minimal), and no DICOM attribute other
than the pixel module is read into one: a DICOM file's image id is its file stem, never PatientName/PatientID.

Bad input raises :class:`~mednet.errors.DataError` naming the file, and for a CSV row ``"<csv>:row <n>"``
where ``n`` counts the header as row 1 (the row a spreadsheet shows, the line a text editor shows). What a
reader skips (images listed but not on disk) is counted (``attrs["n_listed"]``, ``attrs["n_missing"]``) and
logged on the ``"mednet"`` logger; more than 1 % of the listed images missing is an error unless the caller
passes ``allow_missing=True``.

Images: :func:`load_rgb` decodes any photograph or dermoscopy DICOM to ``(H, W, 3)`` uint8;
:func:`write_resized_cache` stores each image once at ``size × size`` so training does not decode 600×450
JPEGs every epoch. Hand-written rather than MONAI's ``LoadImage``/``PILReader``: those return channel-first
float arrays in (W, H) order, keep grey/RGBA/16-bit images as they are and do not read DICOM photographs
(``PydicomReader`` targets CT/MR series), while the classifier needs every image as the same 8-bit RGB.
"""

from __future__ import annotations

import codecs
import csv as csv_module
import functools
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mednet.errors import DataError
from mednet.data.naming import DICOM_SUFFIXES, PHOTO_SUFFIXES, unique_names
from mednet.data.splits import SPLITS as _SPLIT_NAMES
from mednet.file_sets import recover_replacements, replace_files
from mednet.io import atomic_path, refuse_existing

__all__ = [
    "DERMOSCOPY_CLASSES",
    "TABLE_COLUMNS",
    "DICOM_PHOTO_SOP_CLASSES",
    "DERMAMNIST_SPLITS",
    "read_ham10000",
    "read_isic2018_groundtruth",
    "read_path_label_csv",
    "read_dermamnist",
    "dermamnist_table",
    "dermamnist_to_folder",
    "MAX_IMAGE_PIXELS",
    "MAX_MISSING_FRACTION",
    "load_rgb",
    "read_dermoscopy_dicom",
    "resize_center_crop",
    "write_resized_cache",
]

logger = logging.getLogger("mednet")

#: the 7 HAM10000 / ISIC 2018 Task 3 diagnoses, in this order everywhere (class index = position)
DERMOSCOPY_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
#: the columns every reader returns (``split`` is added where the source has one)
TABLE_COLUMNS: tuple[str, ...] = ("image_id", "lesion_id", "dx", "dx_type", "path")
#: DICOM SOP classes accepted as dermoscopy photographs
DICOM_PHOTO_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image Storage",
}
#: DermaMNIST key prefix → the project's split name
DERMAMNIST_SPLITS: dict[str, str] = {"train": "training", "val": "validation", "test": "test"}
#: files an image folder may hold for one image id (``<image_id><suffix>``)
_IMAGE_FILE_SUFFIXES = PHOTO_SUFFIXES + (".dcm",)
#: dx_type of rows whose source does not say how the diagnosis was made
UNKNOWN_DX_TYPE = "unknown"


# ---------------------------------------------------------------------------------------------------- helpers
def _row(csv: str | os.PathLike, index: int) -> str:
    """``"<csv>:row <n>"`` for the 0-based data row ``index``: ``n`` is the file's line where that row starts
    (header = row 1), as an editor shows it (:func:`_row_number`)."""
    return f"{csv}:row {_row_number(csv, index)}"


def _row_number(csv: str | os.PathLike, index: int) -> int:
    """The file line on which data row ``index`` (0-based, as ``pandas.read_csv`` numbers them) starts.

    ``pandas`` skips blank and white-space-only lines, and a quoted field may span lines, so ``index + 2`` is the
    line only for a file without either. The lines are found with the ``csv`` module (cached per file version);
    ``index + 2`` is the fallback when the file is gone or cannot be read that way.
    """
    lines = _data_row_lines(str(csv), *_file_version(csv))
    return lines[index] if lines is not None and 0 <= index < len(lines) else index + 2


def _file_version(path: str | os.PathLike) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return 0, -1


@functools.lru_cache(maxsize=16)
def _data_row_lines(path: str, mtime_ns: int, size: int) -> list[int] | None:
    """Start lines of the data rows of ``path`` (the header's record excluded); None if it cannot be read."""
    if size < 0:
        return None
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv_module.reader(f)
            starts, end = [], 0
            for record in reader:
                if record and not (len(record) == 1 and not record[0].strip()):  # pandas skips blank lines
                    starts.append(end + 1)
                end = reader.line_num
    except (OSError, UnicodeDecodeError, csv_module.Error):
        return None
    return starts[1:]


def _check_no_values_beyond_header(csv: Path) -> None:
    """Refuse a CSV with a non-empty value beyond the header's columns (it would be dropped without a word);
    empty ones (a trailing comma) are fine."""
    with open(csv, encoding="utf-8-sig", newline="") as f:
        reader = csv_module.reader(f)
        width = len(next(reader, []))
        for row in reader:
            extra = [v for v in row[width:] if v.strip()]
            if extra:
                raise DataError(f"{csv}:row {reader.line_num}", f"{len(row)} fields for {width} header columns: the "
                                                               f"value(s) {', '.join(map(repr, extra[:3]))} belong "
                                                               "to no column (a missing header column, or an "
                                                               "unquoted comma in a value)")


def _not_utf8(csv: Path) -> DataError:
    """The error for a CSV that is not UTF-8 (a spreadsheet's "CSV" in Latin-1/cp1252, a UTF-16 export), naming
    the line of its first undecodable byte (pandas' decoder reports an offset in its read buffer, not the file)."""
    data = csv.read_bytes()
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body.count(b"\n", 0, e.start) + 1
        return DataError(f"{csv}:row {line}",
                         f"not UTF-8 text (byte 0x{body[e.start]:02x}: {e.reason}); save the CSV as UTF-8 (a "
                         "spreadsheet's \"CSV UTF-8\" format)")
    return DataError(csv, "not UTF-8 text; save the CSV as UTF-8")


def _unclosed_quote_line(csv: Path) -> int | None:
    """The file line on which the quoted value that runs to the end of ``csv`` starts (the last record); None if the
    ``csv`` module cannot tell. pandas' "EOF inside string starting at row n" counts records from 0 (blank lines
    included, a multi-line record once), not the line an editor shows."""
    try:
        with open(csv, encoding="utf-8-sig", newline="") as f:
            reader = csv_module.reader(f)
            start = end = 0
            for _ in reader:
                start, end = end + 1, reader.line_num
    except (OSError, UnicodeDecodeError, csv_module.Error):
        return None
    return start or None


def _read_csv(csv: str | os.PathLike, required: Sequence[str], allow_empty: bool = False) -> pd.DataFrame:
    """The CSV as strings (no NaN guessing, BOM and surrounding spaces removed), checked for ``required`` columns."""
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(csv, "file not found")
    try:
        # index_col=False: with a trailing comma on every data row pandas would otherwise take the first column
        # as the index and shift every value one column left (an "unknown dx" error about the wrong column); it
        # then drops fields beyond the header, which is checked below: only empty ones may go
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = pd.read_csv(csv, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True,
                             index_col=False)
        if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
            _check_no_values_beyond_header(csv)
    except pd.errors.EmptyDataError:
        raise DataError(csv, "the CSV file is empty") from None
    except UnicodeDecodeError:
        raise _not_utf8(csv) from None
    except pd.errors.ParserError as e:
        line = _unclosed_quote_line(csv) if "EOF inside string" in str(e) else None
        if line is not None:
            raise DataError(f"{csv}:row {line}", "a quoted value starts on this row and is never closed (an unbalanced "
                                                 "'\"'): every later row would be read into it") from None
        raise DataError(csv, f"not a readable CSV file ({str(e).strip()})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(csv, f"missing column(s) {', '.join(missing)} (columns present: {', '.join(df.columns)})")
    if df.empty and not allow_empty:
        raise DataError(csv, "the CSV file has a header but no rows")
    return df.apply(lambda col: col.str.strip())


def _check_image_id(image_id: str, where: str) -> str:
    """An image id becomes a file name (the cache): it must be non-empty and name no folder."""
    if not image_id or image_id in (".", "..") or re.search(r"[/\\\x00]", image_id):
        raise DataError(where, f"invalid image id {image_id!r} (it must be a non-empty file name without '/' or '\\')")
    return image_id


def _check_unique_ids(ids: Sequence[str], csv: str | os.PathLike, what: str = "image_id") -> None:
    first: dict[str, int] = {}
    for i, image_id in enumerate(ids):
        if image_id in first:
            raise DataError(_row(csv, i), f"duplicate {what} {image_id!r} (first listed at row {_row_number(csv, first[image_id])})")
        first[image_id] = i


def _check_unique_paths(paths: Sequence[str], csv: str | os.PathLike, what: str = "path") -> None:
    """One image file, one row: a file listed twice becomes two "lesions" (each row its own lesion when the CSV
    names none) and can land in training and test at once. Paths are compared resolved (``a.jpg``,
    ``./a.jpg`` and a symlink to it are one file); empty paths are left to the caller's checks."""
    first: dict[str, int] = {}
    for i, path in enumerate(paths):
        if not path:
            continue
        key = os.path.normcase(str(Path(path).resolve()))
        if key in first:
            raise DataError(_row(csv, i), f"duplicate {what} {path} (first listed at row {_row_number(csv, first[key])}); "
                                          "list each image once")
        first[key] = i


def _as_dirs(image_dirs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(image_dirs, (str, os.PathLike)):
        image_dirs = [image_dirs]
    dirs = [Path(d) for d in image_dirs]
    if not dirs:
        raise DataError(None, "no image folder given")
    for d in dirs:
        if not d.is_dir():
            raise DataError(d, "image folder not found")
    return dirs


def _index_image_files(dirs: Sequence[Path]) -> dict[str, Path]:
    """``{file stem: path}`` of the images directly inside ``dirs`` (not recursive); the first folder wins."""
    found: dict[str, Path] = {}
    duplicates = 0
    for d in dirs:
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            suffix = Path(entry.name).suffix.lower()
            if suffix in _IMAGE_FILE_SUFFIXES and entry.is_file():
                stem = entry.name[: -len(suffix)]
                if stem in found:
                    duplicates += 1
                else:
                    found[stem] = Path(entry.path)
    if duplicates:
        logger.warning("%d image ids have a file in more than one of %s; the first folder's file is used",
                       duplicates, ", ".join(map(str, dirs)))
    return found


#: the share of listed images that may lack a file before a release reader refuses (unless ``allow_missing``)
MAX_MISSING_FRACTION = 0.01


def _attach_paths(df: pd.DataFrame, dirs: Sequence[Path], source: Path,
                  allow_missing: bool = False) -> pd.DataFrame:
    """Add ``path`` (found by image id); rows without a file are dropped, counted and logged.

    ``attrs["n_listed"]`` / ``attrs["n_missing"]`` record the counts, for the split's record. More than
    :data:`MAX_MISSING_FRACTION` of the listed images missing is refused unless ``allow_missing``: it is what
    passing only one of HAM10000's two image folders gives (about half of the 10,015 images), and a warning in a
    long log is easily missed while the split silently trains and tests on half the data.
    """
    files = _index_image_files(dirs)
    paths = [files.get(i) for i in df["image_id"]]
    missing = [i for i, p in zip(df["image_id"], paths) if p is None]
    if len(missing) == len(df):
        raise DataError(source, f"none of its {len(df)} images was found as <image_id>.jpg (or "
                                f"{'/'.join(_IMAGE_FILE_SUFFIXES[1:])}) in {', '.join(map(str, dirs))}")
    if len(missing) > MAX_MISSING_FRACTION * len(df) and not allow_missing:
        raise DataError(source, f"{len(missing)} of its {len(df)} listed images ({100 * len(missing) / len(df):.1f} %) "
                                f"were not found in {', '.join(map(str, dirs))} (first: {', '.join(missing[:3])}); "
                                "give every image folder of the release (HAM10000: HAM10000_images_part_1 and "
                                "HAM10000_images_part_2), or --allow_missing True to use only the images found")
    if missing:
        logger.warning("%s: %d of %d listed images not found in %s and skipped (first: %s)", source, len(missing),
                       len(df), ", ".join(map(str, dirs)), ", ".join(missing[:3]))
    df = df.assign(path=[str(p) if p is not None else "" for p in paths])
    out = df[df["path"] != ""].reset_index(drop=True)
    out.attrs.update(n_listed=int(len(df)), n_missing=int(len(missing)))
    return out


def _finish(df: pd.DataFrame, source: Path, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The reader's table: :data:`TABLE_COLUMNS` (+ ``extra``); ``attrs`` = ``df``'s (the counts of
    :func:`_attach_paths`) and ``source``."""
    out = df[list(TABLE_COLUMNS) + [c for c in extra if c in df.columns]].reset_index(drop=True)
    out.attrs = {**df.attrs, "source": str(source)}
    return out


# ---------------------------------------------------------------------------------------------------- readers
def read_ham10000(
    metadata_csv: str | os.PathLike,
    image_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    class_names: Sequence[str] = DERMOSCOPY_CLASSES,
    allow_missing: bool = False,
) -> pd.DataFrame:
    """Read the HAM10000 release (Tschandl et al. 2018): metadata CSV + ``<image_id>.jpg`` in ``image_dirs``.

    Args:
        metadata_csv: ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,dx_type,…``; extra columns ignored).
        image_dirs: folder(s) holding the images, searched in order (not recursively).
        class_names: the accepted ``dx`` values.
        allow_missing: accept more than 1 % of the listed images without a file (they are skipped and logged).

    Returns:
        ``image_id, lesion_id, dx, dx_type, path`` per found image, in file order (``dx_type`` kept so that a
        synthetic set in this layout, ``dx_type = synthetic``, reports as synthetic); ``attrs["n_listed"]`` and
        ``attrs["n_missing"]`` count the listed images and those without a file.

    Raises:
        DataError: missing column(s) (all named), empty ``lesion_id``, unknown ``dx`` (row and value),
            duplicate ``image_id`` (both rows), no image found at all, more than 1 % of the listed images without
            a file (unless ``allow_missing``). Fewer listed images without a file are skipped and their number
            logged.
    """
    csv = Path(metadata_csv)
    df = _read_csv(csv, ["lesion_id", "image_id", "dx", "dx_type"])
    classes = set(class_names)
    for i, (image_id, lesion_id, dx) in enumerate(zip(df["image_id"], df["lesion_id"], df["dx"])):
        _check_image_id(image_id, _row(csv, i))
        if not lesion_id:
            raise DataError(_row(csv, i), f"empty lesion_id for image {image_id}")
        if dx.lower() not in classes:
            raise DataError(_row(csv, i), f"unknown dx {dx!r} (expected one of {', '.join(class_names)})")
    _check_unique_ids(list(df["image_id"]), csv)
    df["dx"] = df["dx"].str.lower()
    return _finish(_attach_paths(df, _as_dirs(image_dirs), csv, allow_missing), csv)


def _read_lesion_groups(groups_csv: Path) -> pd.DataFrame:
    """``image_id → lesion_id, dx_type`` from HAM10000's metadata or ISIC 2018's ``…_LesionGroupings.csv``
    (``image,lesion_id,diagnosis_confirm_type``).

    An empty ``lesion_id`` or image cell is refused naming its row: every image with an empty ``lesion_id`` would
    otherwise form one pseudo-lesion (kept in one split, counted as one lesion), and an empty image id matches no
    image, so its row's grouping would be lost without a word.
    """
    head = _read_csv(groups_csv, ["lesion_id"])
    image_col = "image_id" if "image_id" in head.columns else "image"
    if image_col not in head.columns:
        raise DataError(groups_csv, f"missing column image_id (or image) (columns present: {', '.join(head.columns)})")
    for i, (image_id, lesion_id) in enumerate(zip(head[image_col], head["lesion_id"])):
        if not image_id:
            raise DataError(_row(groups_csv, i), f"empty {image_col} (lesion_id {lesion_id or '(empty)'})")
        if not lesion_id:
            raise DataError(_row(groups_csv, i), f"empty lesion_id for image {image_id}")
    type_col = next((c for c in ("dx_type", "diagnosis_confirm_type") if c in head.columns), None)
    _check_unique_ids(list(head[image_col]), groups_csv)
    return pd.DataFrame({
        "image_id": head[image_col],
        "lesion_id": head["lesion_id"],
        "dx_type": head[type_col] if type_col else UNKNOWN_DX_TYPE,
    }).set_index("image_id")


def read_isic2018_groundtruth(
    csv: str | os.PathLike,
    image_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    lesion_groups_csv: str | os.PathLike | None = None,
    class_names: Sequence[str] = DERMOSCOPY_CLASSES,
    allow_missing: bool = False,
) -> pd.DataFrame:
    """Read an ISIC 2018 Task 3 ground-truth CSV (Codella et al. 2019): ``image`` + one-hot class columns.

    The class columns (``MEL,NV,BCC,AKIEC,BKL,DF,VASC`` in the release) are matched to ``class_names``
    case-insensitively; ``dx`` is the column holding the single 1 of a row.

    Args:
        csv: the ground-truth CSV (training, validation or test).
        image_dirs: folder(s) holding ``<image>.jpg``.
        lesion_groups_csv: optional ``image_id → lesion_id`` map: HAM10000's metadata CSV or ISIC's
            ``ISIC2018_Task3_Training_LesionGroupings.csv``; also supplies ``dx_type``. Without it every image is
            its own lesion (``lesion_id = image_id``, a warning is logged): a split can then not keep the images
            of one lesion together.
        allow_missing: accept more than 1 % of the listed images without a file (they are skipped and logged).

    Returns:
        ``image_id, lesion_id, dx, dx_type, path`` per found image, in file order; ``attrs["n_listed"]`` and
        ``attrs["n_missing"]`` as :func:`read_ham10000`.

    Raises:
        DataError: missing columns, a value other than 0/1, not exactly one 1 in a row, duplicate images, an
            image absent from ``lesion_groups_csv``, an empty image or ``lesion_id`` cell there (naming its row),
            no image found at all, more than 1 % of the listed images without a file (unless ``allow_missing``).
    """
    csv = Path(csv)
    head = _read_csv(csv, ["image"])
    lower = {c.lower(): c for c in head.columns}
    missing = [c.upper() for c in class_names if c not in lower]
    if missing:
        raise DataError(csv, f"missing column(s) {', '.join(missing)} (columns present: {', '.join(head.columns)})")
    columns = [lower[c] for c in class_names]
    dx = []
    for i, image_id in enumerate(head["image"]):
        _check_image_id(image_id, _row(csv, i))
        try:
            values = np.array([float(head.at[i, c]) for c in columns])
        except ValueError:
            raise DataError(_row(csv, i), f"class values must be numbers 0 or 1, got "
                                          f"{', '.join(head.loc[i, columns])}") from None
        if not np.all((values == 0) | (values == 1)) or values.sum() != 1:
            raise DataError(_row(csv, i), f"expected exactly one 1 among {','.join(columns)} (one-hot), got "
                                          f"{', '.join(head.loc[i, columns])}")
        dx.append(class_names[int(values.argmax())])
    _check_unique_ids(list(head["image"]), csv)
    df = pd.DataFrame({"image_id": head["image"], "dx": dx})
    if lesion_groups_csv is None:
        logger.warning("%s: no lesion grouping given (--lesion_groups); every image is its own lesion, so "
                       "images of one lesion may fall into different splits", csv)
        df["lesion_id"], df["dx_type"] = df["image_id"], UNKNOWN_DX_TYPE
    else:
        groups = _read_lesion_groups(Path(lesion_groups_csv))
        absent = [i for i in df["image_id"] if i not in groups.index]
        if absent:
            raise DataError(lesion_groups_csv, f"{len(absent)} images of {csv} have no lesion_id here "
                                               f"(first: {', '.join(absent[:3])})")
        df["lesion_id"] = groups.loc[df["image_id"], "lesion_id"].to_numpy()
        df["dx_type"] = groups.loc[df["image_id"], "dx_type"].to_numpy()
    return _finish(_attach_paths(df, _as_dirs(image_dirs), csv, allow_missing), csv)


def _class_index(label: str, class_names: Sequence[str]) -> int | None:
    """``"mel"``/``"MEL"`` → 4; ``"4"`` → 4; anything else → None."""
    lowered = [c.lower() for c in class_names]
    if label.lower() in lowered:
        return lowered.index(label.lower())
    if re.fullmatch(r"\d+", label) and int(label) < len(class_names):
        return int(label)
    return None


def read_path_label_csv(csv: str | os.PathLike, class_names: Sequence[str] = DERMOSCOPY_CLASSES) -> pd.DataFrame:
    """Read a generic ``path,label`` CSV (any image :func:`load_rgb` reads, DICOM included).

    ``label`` is a class name (case-insensitive) or its index in ``class_names``. Relative paths are resolved
    against the CSV's folder. Optional columns are honoured: ``image_id`` (else the file stem, made unique with
    :func:`mednet.data.naming.unique_names`), ``lesion_id`` (else ``image_id``: each image its own lesion),
    ``dx_type`` (else ``unknown``) and ``split`` (``training``/``validation``/``test``).

    Unlike the release readers, a listed file that does not exist is an error (the list was made by hand), and so
    is a file listed twice: its rows would become separate images, possibly in different splits.

    Returns:
        ``image_id, lesion_id, dx, dx_type, path`` (+ ``split``), in file order.
    """
    csv = Path(csv)
    df = _read_csv(csv, ["path", "label"])
    base = csv.resolve().parent
    paths = [os.path.normpath(base / p) if p else "" for p in df["path"]]
    dx = []
    for i, (path, label) in enumerate(zip(paths, df["label"])):
        if not path:
            raise DataError(_row(csv, i), "empty path")
        if not Path(path).is_file():
            raise DataError(_row(csv, i), f"image file {path} does not exist")
        k = _class_index(label, class_names)
        if k is None:
            raise DataError(_row(csv, i), f"unknown label {label!r} (expected a class name of "
                                          f"{', '.join(class_names)} or an index 0–{len(class_names) - 1})")
        dx.append(class_names[k])
    _check_unique_paths(paths, csv)
    image_ids = list(df["image_id"]) if "image_id" in df.columns else unique_names(paths)
    for i, image_id in enumerate(image_ids):
        _check_image_id(image_id, _row(csv, i))
    _check_unique_ids(image_ids, csv)
    out = pd.DataFrame({"image_id": image_ids, "dx": dx, "path": paths})
    out["lesion_id"] = df["lesion_id"] if "lesion_id" in df.columns else out["image_id"]
    for i, lesion_id in enumerate(out["lesion_id"]):
        if not lesion_id:
            raise DataError(_row(csv, i), "empty lesion_id")
    out["dx_type"] = df["dx_type"] if "dx_type" in df.columns else UNKNOWN_DX_TYPE
    if "split" in df.columns:
        for i, split in enumerate(df["split"]):
            if split not in _SPLIT_NAMES:
                raise DataError(_row(csv, i), f"unknown split {split!r} (expected one of {', '.join(_SPLIT_NAMES)})")
        out["split"] = df["split"]
    return _finish(out, csv, extra=("split",))


def read_dermamnist(
    npz_path: str | os.PathLike, num_classes: int = len(DERMOSCOPY_CLASSES)
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a DermaMNIST ``.npz`` (MedMNIST v2, Yang et al. 2023; or the corrected DermaMNIST-C / -E of
    Abhishek et al. 2025, same keys) as ``{"training"|"validation"|"test": (images, labels)}``.

    Keys: ``train_images`` ``(N, H, W, 3)`` uint8, ``train_labels`` ``(N, 1)`` (or ``(N,)``), and the same for
    ``val_`` and ``test_``. Returned labels are ``(N,)`` int64. MedMNIST's label order — 0 actinic keratoses,
    1 basal cell carcinoma, 2 benign keratosis, 3 dermatofibroma, 4 melanoma, 5 melanocytic nevi, 6 vascular —
    is exactly :data:`DERMOSCOPY_CLASSES`, so labels are used as they are.

    DermaMNIST carries no lesion ids, and its official split (from HAM10000 by image) leaks lesions between
    splits; the -C files fix that, the -E files use ISIC 2018's split (Abhishek et al. 2025).

    Raises:
        DataError: not an ``.npz`` (a renamed ``.npy`` included), keys missing (listing the missing and the
            present ones), wrong shapes or dtype, images and labels of different lengths, a label outside
            ``0..num_classes-1``.
    """
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise DataError(npz_path, "file not found")
    try:
        loaded = np.load(npz_path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # np.load reads a (renamed) .npy file as one array
            raise DataError(npz_path, f"not an .npz archive (it holds a single {loaded.shape} {loaded.dtype} array, "
                                      "as a .npy file does; DermaMNIST is an .npz with train_/val_/test_ keys)")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(npz_path, f"not a readable .npz file ({e})") from None
    expected = [f"{p}_{k}" for p in DERMAMNIST_SPLITS for k in ("images", "labels")]
    missing = [k for k in expected if k not in arrays]
    if missing:
        present = ", ".join(sorted(arrays)) or "none"
        raise DataError(npz_path, f"missing key(s) {', '.join(missing)} (present: {present})")
    out = {}
    for prefix, split in DERMAMNIST_SPLITS.items():
        images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataError(npz_path, f"{prefix}_images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(npz_path, f"{prefix}_labels must be ({len(images)}, 1) integers, got {labels.shape} "
                                      f"{labels.dtype}")
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise DataError(npz_path, f"{prefix}_labels[{bad[0]}] = {labels[bad[0]]} is outside 0..{num_classes - 1} "
                                      f"({bad.size} such labels)")
        out[split] = (images, labels.astype(np.int64))
    return out


def dermamnist_table(
    npz_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False,
    class_names: Sequence[str] = DERMOSCOPY_CLASSES, cache_size: int = 0,
) -> pd.DataFrame:
    """Write every DermaMNIST image as ``out_dir/images/dermamnist_<split>_<i>.png``; return their table.

    ``image_id = lesion_id = dermamnist_<split>_<i>`` (DermaMNIST has no lesion ids), ``dx_type = unknown``,
    ``split`` = the file's own split, ``path`` absolute.

    Everything that can be checked is checked before the first PNG is written, so a refused run leaves nothing that
    blocks its corrected re-run: the images' size against ``cache_size`` (> 0: the resized cache the caller writes
    next, :func:`check_image_size` — DermaMNIST's 28 px images cannot feed a 128 px cache) and every PNG that exists
    already (refused unless ``overwrite``). The PNGs are written into a hidden staging folder next to ``out_dir``
    and replace the earlier ones all or nothing (:func:`mednet.file_sets.replace_files`): an interrupted run (Ctrl-C, a
    full disk, a failed move) leaves no partial set, and with ``overwrite`` the earlier PNGs exactly as they were —
    never some images of the new file under the labels of the old ``split.csv``. With ``overwrite`` the earlier
    split's table and records (``split.csv``, ``split.json``, ``split_stats.csv/.md``) are retired with the old
    PNGs: the caller writes the new ones afterwards (:func:`mednet.data.lesion_split.prepare_dermoscopy_split`),
    and a failure in between leaves no table at all rather than the old labels over the new images (the command
    then says to prepare the split; run it again). A run killed outright (SIGKILL)
    leaves the hidden ``.<out_dir>.tmp-<8 hex>`` folder; the next run on ``out_dir`` puts the earlier PNGs back
    from it and deletes it before it checks anything.
    """
    return _write_dermamnist(npz_path, out_dir, overwrite, class_names, cache_size, with_split_csv=False)


#: what a prepared split folder holds besides its images: the table, its settings and its statistics
SPLIT_RECORDS = ("split.csv", "split.json", "split_stats.csv", "split_stats.md")


def dermamnist_to_folder(
    npz_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False,
    class_names: Sequence[str] = DERMOSCOPY_CLASSES,
) -> Path:
    """:func:`dermamnist_table` plus ``out_dir/split.csv`` (paths relative to it); returns the CSV path.

    The folder then reads like any prepared dataset (:func:`mednet.data.lesion_split.load_split_table`). The PNGs
    and ``split.csv`` replace the earlier ones together, ``split.csv`` last (:func:`mednet.file_sets.replace_files`): a
    failure leaves the earlier images and the table naming them as they were.
    """
    csv = Path(out_dir) / "split.csv"
    recover_replacements(out_dir)
    refuse_existing(csv, overwrite=overwrite)
    _write_dermamnist(npz_path, out_dir, overwrite, class_names, 0, with_split_csv=True)
    return csv


def _write_dermamnist(npz_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool,
                      class_names: Sequence[str], cache_size: int, with_split_csv: bool) -> pd.DataFrame:
    """:func:`dermamnist_table`, and with ``with_split_csv`` the table as ``out_dir/split.csv``, replaced together."""
    data = read_dermamnist(npz_path, num_classes=len(class_names))
    from PIL import Image

    if int(cache_size) > 0:  # one size per split array: its first image stands for all
        for images, _ in data.values():
            if len(images):
                check_image_size(images[0], int(cache_size), npz_path, "--cache_size")
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    recover_replacements(out_dir)  # a run killed while replacing the images: the earlier ones back, before the check
    plan = [(split, i, f"dermamnist_{split}_{i}") for split, (images, _) in data.items() for i in range(len(images))]
    pngs = [f"{image_dir.name}/{image_id}.png" for _, _, image_id in plan]
    refuse_existing(*(out_dir / png for png in pngs), overwrite=overwrite)
    rows = [{"image_id": image_id, "lesion_id": image_id, "dx": class_names[int(data[split][1][i])],
             "dx_type": UNKNOWN_DX_TYPE, "path": str((image_dir / f"{image_id}.png").resolve()), "split": split}
            for split, i, image_id in plan]
    table = _finish(pd.DataFrame(rows), Path(npz_path), extra=("split",))
    # the earlier split's table goes with the images it labels (dermamnist_table's docstring)
    retired = [*pngs, *SPLIT_RECORDS] if overwrite else []
    with replace_files(out_dir, old=retired, last="split.csv" if with_split_csv else None) as staging:
        (staging / image_dir.name).mkdir()
        for split, (images, _) in data.items():
            for i in tqdm(range(len(images)), desc=f"DermaMNIST {split}", unit="image", disable=None, leave=False):
                Image.fromarray(images[i]).save(staging / image_dir.name / f"dermamnist_{split}_{i}.png")
        if with_split_csv:
            from mednet.data.lesion_split import write_split_table  # lesion_split imports this module

            # written in the staging folder with the staged images' paths, so that its relative paths hold once moved
            staged = table.copy()
            staged["path"] = [str(staging / image_dir.name / f"{image_id}.png") for _, _, image_id in plan]
            write_split_table(staged, staging / "split.csv")
    return table


# ---------------------------------------------------------------------------------------------------- images
def _to_uint8(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Integer or float image with more than 8 bits → uint8, scaled by its maximum (all-zero stays zero).

    A float image with NaN or ±Inf (a mode-F TIFF, float DICOM pixel data) is refused naming ``path``: its
    maximum would be NaN/Inf and the image would silently come out black.
    """
    arr = arr.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(path, f"non-finite pixel values ({bad} NaN or infinite of {arr.size} pixels)")
    top = arr.max() if arr.size else 0.0
    if top <= 0:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)




def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM file: by its suffix (:data:`DICOM_SUFFIXES`) or the ``DICM`` marker after the 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


#: the most pixels (width × height) an image may declare before it is decoded. Dermoscopy photographs are at
#: most ~50 MP (an 8192 × 6144 camera sensor); 2**26 ≈ 67 M pixels leaves room for that while a decoded RGB image
#: stays ≤ 200 MB (400 MB at 16 bits). Pillow only warns up to ~179 M pixels and pydicom has no limit, so a small
#: file declaring a huge size (a decompression bomb) would otherwise take gigabytes of memory, e.g. on the web demo.
MAX_IMAGE_PIXELS = 2**26

_MAX_ERROR_CHARS = 300  # a decoder's message is kept, but short: it goes to one line or the web page


def _decoder_message(e: BaseException) -> str:
    """``e``'s message, prefixed with its type unless it is a decoder's usual error, and cut to one short line."""
    text = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, (OSError, SyntaxError, ValueError)):  # TypeError, IndexError, … from a damaged header
        text = f"{type(e).__name__}: {text}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _check_pixel_count(path: Path, width: int, height: int) -> None:
    """Refuse an image larger than :data:`MAX_IMAGE_PIXELS` from its declared size, before any decoding."""
    if int(width) * int(height) > MAX_IMAGE_PIXELS:
        raise DataError(path, f"image is {int(width)}×{int(height)} px ({int(width) * int(height):,} pixels), more "
                              f"than the {MAX_IMAGE_PIXELS:,} pixels accepted (damaged, or not a dermoscopy "
                              "photograph)")


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode a dermoscopy image to ``(H, W, 3)`` uint8 RGB.

    JPEG/PNG/BMP/TIFF through Pillow (EXIF orientation applied, as a viewer shows the photo); DICOM (``.dcm``
    or a ``DICM`` preamble) through :func:`read_dermoscopy_dicom`. Grey, grey+alpha, RGBA (alpha dropped),
    palette, CMYK and YCbCr images are converted to RGB; 16-bit and 32-bit grey images are scaled to 8 bits by
    their maximum. Every conversion is logged at debug level. A JPEG with an MPF segment (Pillow's ``MPO``:
    phones and stereo/depth cameras append previews or a second view) gives its primary image, frame 0.

    Raises:
        DataError: file missing, not an image, corrupt, damaged or truncated (``"cannot decode image: …"`` — any
            decoder exception, with its message; Pillow's ``load()`` raises on a truncated JPEG unless
            ``ImageFile.LOAD_TRUNCATED_IMAGES`` was switched on), larger than :data:`MAX_IMAGE_PIXELS` (checked
            on the declared size, before decoding), multi-frame, float pixels with NaN/Inf
            (``"non-finite pixel values (N …)"``).
    """
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    if is_dicom_file(path):
        return read_dermoscopy_dicom(path)
    try:
        with Image.open(path) as img:
            if img.format == "MPO":  # frame 0 is the primary image; the other frames are not the photograph
                img.seek(0)
            elif getattr(img, "n_frames", 1) > 1:
                raise DataError(path, f"multi-frame image ({img.n_frames} frames); expected one photograph")
            _check_pixel_count(path, *img.size)
            img.load()
            img = ImageOps.exif_transpose(img)
            mode = img.mode
            if mode == "RGB":
                return np.asarray(img, dtype=np.uint8).copy()
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                logger.debug("%s: %s image scaled to 8 bits by its maximum and replicated to RGB", path, mode)
                grey = _to_uint8(np.asarray(img), path)
                return np.repeat(grey[..., None], 3, axis=2)
            logger.debug("%s: %s image converted to RGB", path, mode)
            if mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # Pillow warns when a palette image with transparency goes straight to RGB
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (DataError, MemoryError):
        raise
    except Exception as e:  # Pillow's plugins raise OSError, ValueError, but also TypeError, IndexError, … on damage
        raise DataError(path, f"cannot decode image: {_decoder_message(e)}") from None


def _dicom_int(ds, keyword: str, default: int, path: Path) -> int:
    """A whole-number pixel-module element (pydicom converts values lazily: a damaged one raises on access)."""
    try:
        value = ds.get(keyword, default)
        return default if value is None or value == "" else int(value)
    except Exception as e:  # ValueError ("1x"), TypeError, …
        raise DataError(path, f"cannot decode image: damaged DICOM element {keyword} ({_decoder_message(e)})") from None


def read_dermoscopy_dicom(path: str | os.PathLike) -> np.ndarray:
    """Decode a single-frame DICOM dermoscopy photograph to ``(H, W, 3)`` uint8 RGB with pydicom (≥ 3.0).

    Accepted SOP classes: :data:`DICOM_PHOTO_SOP_CLASSES` (VL Photographic Image Storage,
    1.2.840.10008.5.1.4.1.1.77.1.4; Dermoscopic Photography Image Storage, 1.2.840.10008.5.1.4.1.1.77.1.7).
    Photometric interpretation RGB; YBR_FULL / YBR_FULL_422 are converted to RGB by
    :func:`pydicom.pixels.pixel_array` (its ``raw=False`` default applies
    :func:`pydicom.pixels.convert_color_space`, and knows when a JPEG decoder has already done so);
    MONOCHROME2 (MONOCHROME1 inverted) is replicated to three channels. More than 8 bits are scaled to 8 by the
    image maximum. Only the pixel module is read: no patient or study attribute reaches the result or an error.

    Raises:
        DataError: not DICOM, damaged (pydicom converts element values only when they are read, so any of its
            exceptions, at any step, becomes ``"cannot decode image: …"``), another SOP class (named), no pixel
            data, several frames, Rows × Columns above :data:`MAX_IMAGE_PIXELS` (checked before decoding), an
            unsupported photometric interpretation, pixel data pydicom cannot decode (e.g. a codec plugin not
            installed).
    """
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except MemoryError:
        raise
    except Exception as e:  # InvalidDicomError, OSError, EOFError, ValueError, NotImplementedError (unknown VR), …
        raise DataError(path, f"cannot decode image: not a readable DICOM file ({_decoder_message(e)})") from None
    try:
        return _decode_dicom(ds, path)
    except (DataError, MemoryError):
        raise
    except Exception as e:  # an element damaged anywhere is only found when read: still this file's problem
        raise DataError(path, f"cannot decode image: damaged DICOM file ({_decoder_message(e)})") from None


def _decode_dicom(ds, path: Path) -> np.ndarray:
    """:func:`read_dermoscopy_dicom` once the file is parsed (every exception here is wrapped there)."""
    import pydicom
    from pydicom.pixels import pixel_array

    sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop not in DICOM_PHOTO_SOP_CLASSES:
        name = pydicom.uid.UID(sop).name if sop else "none"
        raise DataError(path, f"SOP class {sop or '(missing)'} ({name}) is not a dermoscopy photograph; accepted: "
                              + "; ".join(f"{v} ({k})" for k, v in DICOM_PHOTO_SOP_CLASSES.items()))
    if "PixelData" not in ds:
        raise DataError(path, "the DICOM file holds no pixel data")
    frames = _dicom_int(ds, "NumberOfFrames", 1, path)
    if frames > 1:
        raise DataError(path, f"multi-frame DICOM ({frames} frames); expected one photograph")
    _check_pixel_count(path, _dicom_int(ds, "Columns", 0, path), _dicom_int(ds, "Rows", 0, path))
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("RGB", "YBR_FULL", "YBR_FULL_422", "MONOCHROME1", "MONOCHROME2"):
        raise DataError(path, f"unsupported photometric interpretation {photometric!r} (expected RGB, YBR_FULL, "
                              "YBR_FULL_422 or MONOCHROME1/2)")
    try:
        arr = pixel_array(ds)  # YBR_FULL(_422) → RGB
    except MemoryError:
        raise
    except Exception as e:  # pydicom raises RuntimeError/ValueError/NotImplementedError by codec and plugin
        raise DataError(path, f"cannot decode image: DICOM pixel data ({type(e).__name__}: {e})") from None
    if photometric.startswith("MONOCHROME"):
        if arr.ndim != 2:
            raise DataError(path, f"{photometric} pixel data of shape {arr.shape}; expected (rows, columns)")
        grey = arr if arr.dtype == np.uint8 else _to_uint8(arr, path)
        if photometric == "MONOCHROME1":  # minimum is white
            grey = 255 - grey
        logger.debug("%s: %s DICOM replicated to RGB", path, photometric)
        return np.repeat(grey[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise DataError(path, f"{photometric} pixel data of shape {arr.shape}; expected (rows, columns, 3)")
    return arr.copy() if arr.dtype == np.uint8 else _to_uint8(arr, path)


# ---------------------------------------------------------------------------------------------------- cache
def _stale(cached: Path, source: Path) -> bool:
    """``cached`` is missing, or older than ``source``. A cache whose source is gone (originals deleted to save
    space after caching) is kept: there is nothing newer to read."""
    try:
        cached_time = cached.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    try:
        return source.stat().st_mtime_ns > cached_time
    except OSError:
        return False


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 → ``(size, size, 3)`` uint8: centre crop to a square of the shorter side, then resize.

    Cropping keeps the aspect ratio (a plain resize would squash HAM10000's 600×450 images by 4:3); the lesion
    is centred in dermoscopy photographs, so the crop removes skin at the sides. Bicubic resampling: Pillow
    widens the filter to the whole source footprint when shrinking, so there is no aliasing. The crop is made
    first, not with ``ImageOps.fit`` (whose resampling box lets pixels outside the crop bleed into the edges).
    """
    from PIL import Image

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC))


#: an image is refused if it must be enlarged more than this to reach the model's input size (it holds no lesion
#: detail); one rule for training, the resized cache, evaluation and the web demo
MAX_UPSCALE = 4


def check_image_size(image: np.ndarray, size: int, where: str | os.PathLike | None,
                     what: str = "--image_size") -> None:
    """Refuse an ``(H, W, 3)`` image that must be enlarged more than :data:`MAX_UPSCALE` times to ``size``."""
    if min(image.shape[:2]) * MAX_UPSCALE < size:
        raise DataError(where, f"image is {image.shape[1]}×{image.shape[0]} px, far too small for {what} {size} "
                               f"(at least {-(-size // MAX_UPSCALE)} px a side)")


def write_resized_cache(
    table: pd.DataFrame, out_dir: str | os.PathLike, size: int, progress: bool | None = None, overwrite: bool = False
) -> pd.DataFrame:
    """Decode every image once (:func:`load_rgb`), :func:`resize_center_crop` it to ``size`` and store it as
    ``out_dir/cache_<size>/<image_id>.png``; returns a copy of ``table`` with ``cache_path`` (absolute).

    A PNG already in the cache is kept (the folder name fixes its size), so a re-run only decodes new images —
    unless its source file was modified after it (the cache would then hold the old pixels under the new
    labels) or ``overwrite`` is set. ``overwrite`` rewrites every listed image: a replaced source can keep an
    old modification time (unpacked from an archive, copied with ``cp -p``), so a re-preparation with
    ``--overwrite`` trusts no cached file. Files are written atomically: an interrupted run leaves no
    half-written PNG. ``progress=None`` shows a tqdm bar on a terminal only.
    """
    from PIL import Image

    if int(size) < 1:
        raise DataError(out_dir, f"cache size must be a positive number of pixels, got {size}")
    cache_dir = Path(out_dir) / f"cache_{int(size)}"
    cached, written = [], 0
    for image_id, path in tqdm(list(zip(table["image_id"], table["path"])), desc=f"cache {size}px", unit="image",
                               disable=None if progress is None else not progress, leave=False):
        target = cache_dir / f"{_check_image_id(str(image_id), str(path))}.png"
        if overwrite or _stale(target, Path(path)):
            image = load_rgb(path)
            check_image_size(image, int(size), path, "--cache_size")  # the same refusal as without a cache
            with atomic_path(target) as tmp:
                Image.fromarray(resize_center_crop(image, int(size))).save(tmp)
            written += 1
        cached.append(str(target.resolve()))
    logger.info("%s: %d images resized to %d px, %d already cached", cache_dir, written, size, len(cached) - written)
    return table.assign(cache_path=cached)
