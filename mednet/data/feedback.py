"""Clinician feedback on predictions ("flag as wrong") and its merge into a new training split.

Recording (:func:`append_feedback`, called by the web demo): the flagged image is stored once, as a PNG named by
its hash, in ``<feedback>/images/<sha256>.png``, and one row is appended to ``<feedback>/feedback.csv`` with
the columns :data:`FEEDBACK_COLUMNS`::

    timestamp, image_sha256, image_file, model_run, predicted, probability, corrected, comment, source_name

The append holds a :class:`filelock.FileLock` (``feedback.csv.lock``, 30 s timeout) and is flushed and fsynced
before the lock is released, so flags sent at the same moment from two browser tabs, two threads of one server
or two server processes all arrive, each as one whole line, under one header. The image is stored under that lock
after the table's checks, so a refused flag stores none; a last row cut short by a crash is moved to
``feedback.csv.damaged`` by the next append (so it cannot swallow the rows after it).

**The image hash** (:func:`image_sha256`) is the SHA-256 of the *decoded* RGB pixels (``"<H>x<W>x3:"`` then the
``uint8`` bytes, row-major), not of the uploaded file. The same picture uploaded twice therefore has one hash
whatever the upload's container (a JPEG and a DICOM holding the same pixels, or one file sent again), and
:func:`merge_feedback` can recognise a flagged image that is already in the dataset by decoding the split's
images with the same decoder (:func:`mednet.data.dermoscopy.load_rgb`). Hashing the uploaded bytes could do
neither — and would hash a DICOM file's header, patient attributes included. The PNG stored is lossless, so
decoding it gives back the hashed pixels exactly (the merge checks this). Only identical pixels match: a
re-compressed or resized copy of an image is a different image for this hash.

**Near-copies of held-out images** (:func:`perceptual_hash`): a JPEG re-save, a resized, mirrored or rotated copy
of a validation or test image has other pixels, hence another SHA-256; added to training, it would let the
retrained model be selected and scored on a lesion it was trained on. The merge therefore also compares two 64-bit
perceptual hashes (``imagehash.phash`` and ``imagehash.dhash`` of the same decoded pixels) of every flagged image
that is not an exact duplicate with those of the split's validation and test images, and leaves out a flag within
:data:`NEAR_DUPLICATE_DISTANCE` bits by both (listed in ``merge.json``, ``near_duplicates_held_out``). Neither hash
survives a mirror image or a quarter turn (about half the bits change), so the flagged image is compared in each of
its 8 orientations (:data:`ORIENTATIONS`; held-out hashes as they are), a mirrored or turned one needing to be
:data:`TURNED_EXTRA_BITS` closer. In the measurements (see the constants) this dropped no image for resembling an
unrelated lesion and caught ≥ 96.8 % of re-saved, resized or brightened copies, every exact mirror image or quarter
turn and 96 % of quarter turns re-saved as JPEG, but almost no cropped ones (a cropped screenshot usually escapes).
Near-copies of *training* images are added as before: they leak nothing into the evaluation.

**Privacy.** Only decoded pixels reach this module: a DICOM upload is never stored — its pixels are written as
a PNG without metadata chunks — and no DICOM attribute is read here. ``source_name`` keeps the base name of an
uploaded photograph (no folders) and for a DICOM upload is always ``"dicom"``: DICOM file names are often built
from patient names or ids. Identifiers burned into the pixels themselves cannot be detected here. Comments are
free text written by the clinician: they are kept in ``feedback.csv`` but never copied into a split. A comment or
upload name is put on one line first (tabs, carriage returns and line breaks become spaces; spaces around it are
removed); one that then starts like a spreadsheet formula (``=``, ``+``, ``-``, ``@``) is written with a leading
``'``, and so is such a start after a ``;`` or ``|`` inside the text (a spreadsheet that splits on ``;`` would make
it a cell of its own), so that opening ``feedback.csv`` in a spreadsheet shows it instead of running it. Not after
a ``,``: the csv writer quotes every field holding one, and a quoted field stays one cell.

**Merge** (:func:`merge_feedback`, ``python -m data_prep.feedback merge``): a *new* split folder holding every
row of the original split unchanged plus one training row per flagged image that is not already in any split and
is not a near-copy of a validation or test image; the original folder is only read. The latest flag of an image
(by time) wins, also over the label of a training row an earlier merge added from an older flag; the labels of the
original metadata are never changed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mednet.data.dermoscopy import DERMOSCOPY_CLASSES, DICOM_SUFFIXES, _read_csv, _row, load_rgb
from mednet.data.splits import SPLITS
from mednet.errors import DataError, OptionError
from mednet.io import atomic_path, refuse_existing, refuse_file_as_folder, write_json_atomic

__all__ = [
    "FEEDBACK_COLUMNS",
    "FEEDBACK_CSV",
    "FEEDBACK_IMAGES",
    "FEEDBACK_DAMAGED",
    "MAX_COMMENT_CHARS",
    "DICOM_SOURCE_NAME",
    "FEEDBACK_DX_TYPE",
    "HASH_CACHE",
    "HELD_OUT_COLUMNS",
    "NEAR_DUPLICATE_DISTANCE",
    "TURNED_EXTRA_BITS",
    "image_sha256",
    "perceptual_hash",
    "ORIENTATIONS",
    "perceptual_hash_variants",
    "perceptual_distance",
    "store_feedback_image",
    "append_feedback",
    "read_feedback",
    "held_out_rows",
    "merge_feedback",
]

logger = logging.getLogger("mednet")

#: the columns of ``feedback.csv``, in order
FEEDBACK_COLUMNS: tuple[str, ...] = ("timestamp", "image_sha256", "image_file", "model_run", "predicted",
                                     "probability", "corrected", "comment", "source_name")
#: the feedback table inside a feedback folder
FEEDBACK_CSV = "feedback.csv"
#: the folder (inside a feedback folder) of the flagged images, ``<sha256>.png``
FEEDBACK_IMAGES = "images"
#: where :func:`append_feedback` moves a last row of ``feedback.csv`` that a crash cut short (one per line)
FEEDBACK_DAMAGED = "feedback.csv.damaged"
#: longest comment accepted (characters, after folding it onto one line)
MAX_COMMENT_CHARS = 500
#: ``source_name`` of every DICOM upload (its file name may carry patient identifiers)
DICOM_SOURCE_NAME = "dicom"
#: ``dx_type`` of the training rows a merge adds (the diagnosis is the clinician's correction)
FEEDBACK_DX_TYPE = "feedback"
#: the per-image hash cache a merge writes into its split folder (and reads from the source split, if there)
HASH_CACHE = "image_hashes.csv"
#: a flagged image whose two perceptual hashes (:func:`perceptual_hash`: DCT ``phash`` and difference ``dhash``,
#: 64 bits each) are both at most this many bits (Hamming distance) from a validation or test image's is a
#: near-copy of it and is not added to training by :func:`merge_feedback` (:func:`perceptual_distance`: the larger
#: of the two distances).
#:
#: Chosen by measurement (``benchmarks/bench_feedback_near_duplicates.py --seed 0|1`` at its defaults: synthetic
#: dermoscopy, 1000 images at 128 px, JPEG-decoded as a split is), on generator seed 0 and confirmed on seed 1:
#:
#: * distinct images of different lesions (~498,900 pairs per seed): distances 5-56 and 5-58, median 30; none at
#:   <= 4 on either seed (``phash`` alone: 2-56 / 2-58, with 47 / 34 pairs at <= 4 — against HAM10000's ~3000
#:   held-out images that would drop 18-25 % of genuine flags, which is why both hashes must agree);
#: * an image and its JPEG re-save (quality 60/75/90), bilinear resize (x0.5, x2) or brightness x1.1: 0.1-3.2 %
#:   of them farther than 4 (caught: ≥ 96.8 %); its centre crop to 90 % of each side: 92-93 % farther (perceptual
#:   hashes are not robust to cropping: a cropped screenshot usually escapes).
#:
#: With the 8 orientations (:data:`ORIENTATIONS`; ``--images 300`` and 600, 128 px, seeds 0 and 1, ordered pairs
#: flagged/held-out): taking the nearest orientation at one threshold brings unrelated lesions closer (smallest
#: distance 5 and 4; on seed 1, 3 of 89,320 and 4 of 358,668 pairs within 4, which against ~3000 held-out images
#: would drop 3-10 % of genuine flags), so a mirrored or turned orientation must be within 3
#: (:data:`TURNED_EXTRA_BITS`): smallest distance then 6 and 5, none within 4 on either seed. Every exact mirror
#: image and quarter turn is caught (distance 0), a quarter turn re-saved as JPEG quality 75 in 96.0-96.3 % (100 and
#: 98.7 % without the extra bit; turned copies re-saved at quality 60, halved or brightened escape more often:
#: 5-17 % in a 100-image check, 1-2.5 % without it); copies that are not turned are caught as before.
#:
#: Synthetic lesions resemble each other more than photographs of different patients do, so on real images the
#: rate of genuine flags dropped is expected to be lower still; it has not been measured on real images.
NEAR_DUPLICATE_DISTANCE = 4
#: a flagged image mirrored or turned (:data:`ORIENTATIONS` other than the first) counts this many bits farther from
#: a held-out image: 7 more orientations are 7 more chances for an unrelated lesion to come close (see
#: :data:`NEAR_DUPLICATE_DISTANCE` for the measurements)
TURNED_EXTRA_BITS = 1

_LOCK_TIMEOUT_S = 30
_MAX_NAME_CHARS = 255
_MAX_RUN_CHARS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
#: first characters a spreadsheet reads as the start of a formula (OWASP "CSV injection"). A tab or carriage
#: return would be one too, but :func:`_no_formula` only sees text :func:`_one_line` made, which has none (every
#: control character became a space, and the spaces around the text are gone)
_FORMULA_START = ("=", "+", "-", "@")
#: a formula start after a field separator a spreadsheet may split a cell on (``;`` in many European locales,
#: ``|``), spaces between allowed: "see;=HYPERLINK(…)" opens as a second cell "=HYPERLINK(…)". A tab separator
#: never reaches it (:func:`_one_line` made it a space: nothing left to split on). Not after ``,``: the csv writer
#: quotes every field holding one, and a quoted field stays one cell whatever the separator, so prose like
#: "a, -2 mm" is left as written
_INNER_FORMULA = re.compile(r"([;|] *)(?=[=+\-@])")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PERCEPTUAL_HASH = re.compile(r"[0-9a-f]{32}")


# ---------------------------------------------------------------------------------------------------- recording
def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise DataError(None, f"a feedback image must be a (height, width, 3) uint8 RGB array, got {dtype} of shape "
                              f"{shape} (decode uploads with mednet.data.dermoscopy.load_rgb)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(None, f"a feedback image must not be empty, got shape {image.shape}")
    return np.ascontiguousarray(image)


def image_sha256(image: np.ndarray) -> str:
    """Hex SHA-256 of decoded ``(H, W, 3)`` uint8 RGB pixels: of ``"<H>x<W>x3:"`` followed by the pixel bytes
    (row-major), so two images with the same bytes but other shapes differ."""
    image = _check_image(image)
    h = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}x3:".encode("ascii"))
    h.update(image.tobytes())
    return h.hexdigest()


def perceptual_hash(image: np.ndarray) -> str:
    """The perceptual hashes of decoded ``(H, W, 3)`` uint8 RGB pixels as 32 hex digits: the 64-bit DCT hash
    (``imagehash.phash``) then the 64-bit difference hash (``imagehash.dhash``). Unlike :func:`image_sha256` they
    stay close for re-compressed or resized copies of an image (far less so for cropped ones, not at all for
    mirrored or rotated ones: :func:`perceptual_hash_variants`); compare two with :func:`perceptual_distance`."""
    import imagehash
    from PIL import Image

    picture = Image.fromarray(_check_image(image), mode="RGB")
    return f"{imagehash.phash(picture)}{imagehash.dhash(picture)}"


#: the orientations in which a flagged image is compared with the held-out images (:func:`perceptual_hash_variants`):
#: ``np.rot90`` by 0-3 quarter turns of the image, then of its mirror image (``np.fliplr``); ``fliplr+rot180`` is
#: the image flipped upside down
ORIENTATIONS: tuple[str, ...] = ("identity", "rot90", "rot180", "rot270",
                                 "fliplr", "fliplr+rot90", "fliplr+rot180", "fliplr+rot270")


def perceptual_hash_variants(image: np.ndarray) -> tuple[str, ...]:
    """:func:`perceptual_hash` of ``image`` in each of the 8 :data:`ORIENTATIONS` (the first: as it is).

    ``phash`` and ``dhash`` change by about half their bits when an image is mirrored or turned by 90°, so a
    mirrored or rotated copy of a held-out image is far from it by both; one of its orientations is the held-out
    image again."""
    image = _check_image(image)
    return tuple(perceptual_hash(np.ascontiguousarray(np.rot90(base, k)))
                 for base in (image, image[:, ::-1]) for k in range(4))


def perceptual_distance(a: str, b: str) -> int:
    """The larger of the two Hamming distances (differing bits, 0-64) between two :func:`perceptual_hash` values:
    a near-copy must be close by both hashes (:data:`NEAR_DUPLICATE_DISTANCE`)."""
    return max((int(a[:16], 16) ^ int(b[:16], 16)).bit_count(), (int(a[16:], 16) ^ int(b[16:], 16)).bit_count())


def store_feedback_image(feedback_dir: str | os.PathLike, image: np.ndarray) -> tuple[str, Path]:
    """Store ``image`` as ``feedback_dir/images/<sha256>.png`` unless it is there; returns ``(sha256, path)``.

    The PNG holds the pixels only (no text chunks, so nothing of an upload's metadata) and is written atomically
    (:func:`mednet.io.atomic_path`): two writers of the same image replace one complete file by an identical one.
    """
    image = _check_image(image)
    digest = image_sha256(image)
    path = Path(feedback_dir) / FEEDBACK_IMAGES / f"{digest}.png"
    _write_png(path, image)
    return digest, path


def _png(image: np.ndarray) -> bytes:
    """``image`` as PNG bytes: pixels only, no text chunks."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _write_png(path: Path, image: np.ndarray, png: bytes | None = None) -> bool:
    """Write ``image`` (or its already encoded ``png``) to ``path`` atomically unless it is there; whether it
    was written (the caller may then remove it again: no other call can have used it yet)."""
    if path.is_file():
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(_png(image) if png is None else png)
    return True


def _one_line(text: object, what: str, limit: int) -> str:
    """``text`` on one line (control characters and line breaks → one space), stripped, at most ``limit`` chars."""
    line = _CONTROL.sub(" ", "" if text is None else str(text)).strip()
    if len(line) > limit:
        raise OptionError({what: f"too long ({len(line)} characters; at most {limit})"})
    return line


def _no_formula(text: str) -> str:
    """``text`` (one line, as :func:`_one_line` returns it: no tab, no carriage return, no surrounding spaces) with
    a ``'`` in front when it starts like a spreadsheet formula (:data:`_FORMULA_START`), and before every formula
    start that follows a ``;`` or ``|`` (spaces between allowed). Not after a ``,``: the csv writer quotes a field
    holding one, and a quoted field stays one cell whatever separator the spreadsheet splits on.

    ``feedback.csv`` is opened by clinicians in Excel/LibreOffice, which run a cell such as ``=HYPERLINK(…)`` or
    ``@SUM(…)`` as a formula (OWASP "CSV injection"); a leading apostrophe makes the cell text. The CSV quoting
    keeps a comment in one field only for a program that splits on commas: a spreadsheet opened with ``;`` as the
    separator (the default in many European locales) or told to split on ``|`` cuts ``see;=HYPERLINK(…)``
    into a second cell that starts with ``=``, hence the apostrophe after such separators too
    (``see;'=HYPERLINK(…)``); the text is otherwise unchanged. Applied to the free-text fields only (comment, upload
    name): every other field is a class name, a number, a hash, a time or the run folder this server was started
    with.
    """
    text = _INNER_FORMULA.sub(r"\1'", text)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def _class_name(value: object, what: str, class_names: Sequence[str]) -> str:
    name = str(value).strip()
    if name not in class_names:
        raise OptionError({what: f"unknown class {name!r} (expected one of {', '.join(class_names)})"})
    return name


def _source_name(source_name: str | os.PathLike | None, is_dicom: bool) -> str:
    """The upload's base name (never a folder), or :data:`DICOM_SOURCE_NAME` for a DICOM upload."""
    name = Path(os.fspath(source_name or "").replace("\\", "/")).name
    if is_dicom or name.lower().endswith(DICOM_SUFFIXES):
        return DICOM_SOURCE_NAME
    return _one_line(name, "source_name", _MAX_NAME_CHARS)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _lock(feedback_dir: Path):
    from filelock import FileLock

    # a new lock object per call: the OS lock (flock / LockFileEx) then also excludes the other threads of this
    # process, which one FileLock object shared between threads would not (its lock is reentrant)
    return FileLock(str(feedback_dir / f"{FEEDBACK_CSV}.lock"), timeout=_LOCK_TIMEOUT_S)


#: the header line :func:`append_feedback` writes
_HEADER_LINE = (",".join(FEEDBACK_COLUMNS) + "\n").encode("ascii")


def _cut_row(f, size: int) -> int | None:
    """The offset of the last record of the open feedback table ``f`` (``size`` bytes) if it was cut short (a
    crash while it was written), else None.

    Only a table that does not end with a line break can hold a cut row. It is read as CSV, quote-aware and
    strict: if every record parses and the last one is a whole row of :data:`FEEDBACK_COLUMNS` (extra fields
    empty), it is whole — a hand-edited table may lack its final line break or hold a quoted comment over several
    lines. Otherwise its last record, from the line where it starts, is cut: a cut inside a quoted comment would
    open a quote that swallows every later row. A table that is only a cut header gives offset 0; one that cannot
    be read at all gives None (the header check refuses it)."""
    if size == 0:
        return None
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return None
    f.seek(0)
    data = f.read(size)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    line_starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A]  # byte offset of each line
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    record_line, last_line, last_row, whole = 1, 1, None, True
    try:
        for row in reader:
            last_line, last_row = record_line, row
            record_line = reader.line_num + 1
    except csv.Error:
        whole, last_line = False, record_line  # the record that fails starts on this line
    n = len(FEEDBACK_COLUMNS)
    if whole and last_row is not None and len(last_row) >= n and not any(last_row[n:]):
        return None
    start = line_starts[min(last_line, len(line_starts)) - 1]
    if start == 0:
        return 0 if _HEADER_LINE.startswith(data) else None
    return start


def _move_cut_row(csv_path: Path, f, start: int) -> None:
    """Move the cut-short last record (from ``start``) of the open table ``f`` to :data:`FEEDBACK_DAMAGED`
    (appended, fsynced first), then truncate the table to its last whole record."""
    f.seek(start)
    tail = f.read()
    damaged = csv_path.with_name(FEEDBACK_DAMAGED)
    with open(damaged, "ab") as out:
        out.write(tail + b"\n")
        out.flush()
        os.fsync(out.fileno())
    f.truncate(start)
    f.flush()
    os.fsync(f.fileno())
    logger.warning("%s: its last row was cut short (a crash while it was written): moved to %s and left out of "
                   "the feedback (flag that image again if it is missing)", csv_path, damaged)


def _write_row(f, data: bytes) -> None:
    """Append ``data`` to the open table ``f`` and make it durable before the lock is released."""
    f.seek(0, os.SEEK_END)
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _check_header(csv_path: Path) -> None:
    with open(csv_path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    if [c.strip().lstrip("\ufeff") for c in header] != list(FEEDBACK_COLUMNS):
        raise DataError(csv_path, f"not a feedback table: its header is {', '.join(header) or '(empty)'}; expected "
                                  f"{', '.join(FEEDBACK_COLUMNS)}")


def append_feedback(
    feedback_dir: str | os.PathLike,
    image: np.ndarray,
    *,
    model_run: str,
    predicted: str,
    probability: float,
    corrected: str,
    comment: str = "",
    source_name: str = "",
    is_dicom: bool = False,
    class_names: Sequence[str] = DERMOSCOPY_CLASSES,
) -> dict:
    """Record one "flag as wrong": under the lock, check the table, store the image as
    :func:`store_feedback_image` does, then append its row.

    The image is stored only after the checks, and a PNG this call wrote is removed again when its row cannot be
    written: a refused flag ("not recorded" on the page) leaves no patient image behind. A last row that a crash
    cut short is first moved to :data:`FEEDBACK_DAMAGED` (logged as a warning) rather than closed in place: cut
    inside a quoted comment it would swallow every later row, and closed it could still read as a valid flag that
    was never confirmed to anyone; moved, it is kept for a person to look at and never reaches a merge.

    Args:
        feedback_dir: the feedback folder (created).
        image: the decoded upload, ``(H, W, 3)`` uint8 RGB (:func:`mednet.data.dermoscopy.load_rgb`).
        model_run: the run that made the prediction (its folder).
        predicted, probability: the model's class and its (calibrated) probability in [0, 1].
        corrected: the class the clinician says is right.
        comment: optional free text; line breaks, tabs and other control characters become spaces, and the spaces
            around it are removed; at most :data:`MAX_COMMENT_CHARS` characters. Written with a leading ``'`` when
            it then starts with ``=``, ``+``, ``-`` or ``@``, and with a ``'`` before such a character that follows
            a ``;`` or ``|`` (not a ``,``: the csv writer quotes a field holding one), so that a spreadsheet shows
            it as text instead of running it as a formula (OWASP CSV injection; :func:`_no_formula`).
        source_name: the uploaded file's name; only its base name is kept (with a ``'`` in front as for
            ``comment``).
        is_dicom: the upload was a DICOM file: ``source_name`` is then recorded as ``"dicom"`` whatever it was
            (also when the name ends in ``.dcm``/``.dicom``).

    Returns:
        The row written, ``{column: value}`` for :data:`FEEDBACK_COLUMNS` (``probability`` as a float; comment and
        upload name as written, ``'`` included).

    Raises:
        OptionError: ``predicted``/``corrected`` not in ``class_names``, a probability outside [0, 1], a comment
            too long.
        DataError: ``image`` not an RGB uint8 array; ``feedback.csv`` exists with another header.
        filelock.Timeout: the lock was not obtained in 30 s.
        OSError: the row could not be written (e.g. a full disk).
    """
    predicted = _class_name(predicted, "predicted", class_names)
    corrected = _class_name(corrected, "corrected", class_names)
    try:
        probability = float(probability)
    except (TypeError, ValueError):
        raise OptionError({"probability": f"must be a number in [0, 1], got {probability!r}"}) from None
    if not 0.0 <= probability <= 1.0:
        raise OptionError({"probability": f"must be in [0, 1], got {probability!r}"})
    comment = _no_formula(_one_line(comment, "comment", MAX_COMMENT_CHARS))
    model_run = _one_line(model_run, "model_run", _MAX_RUN_CHARS)
    source = _no_formula(_source_name(source_name, is_dicom))
    image = _check_image(image)
    digest = image_sha256(image)
    folder = Path(feedback_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FEEDBACK_IMAGES / f"{digest}.png"
    png = None if path.is_file() else _png(image)  # encoded before the lock: a large image blocks no other writer
    csv_path = folder / FEEDBACK_CSV
    with _lock(folder), open(csv_path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        cut = _cut_row(f, size)
        if size and cut != 0:  # never appended to, nor cut, a table that is not ours
            _check_header(csv_path)
        if cut is not None:  # a row cut inside a quoted comment would swallow every later row
            _move_cut_row(csv_path, f, cut)
            size = cut
        prefix = b""
        if size:  # a last row without its line break (a hand-edited table) must not absorb this one
            f.seek(size - 1)
            prefix = b"" if f.read(1) == b"\n" else b"\n"
        row = {"timestamp": _now(), "image_sha256": digest, "image_file": f"{FEEDBACK_IMAGES}/{path.name}",
               "model_run": model_run, "predicted": predicted, "probability": f"{probability:.6f}",
               "corrected": corrected, "comment": comment, "source_name": source}
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if not size:
            writer.writerow(FEEDBACK_COLUMNS)
        writer.writerow([row[c] for c in FEEDBACK_COLUMNS])
        # the image only now, after the checks: a refused flag leaves no patient image behind
        created = _write_png(path, image, png)
        try:
            _write_row(f, prefix + text.getvalue().encode("utf-8"))
        except BaseException:
            if created:  # under the lock: no other flag can have recorded this image meanwhile
                path.unlink(missing_ok=True)
            raise
    logger.info("feedback: image %s… flagged (%s → %s)", digest[:12], predicted, corrected)
    return {**row, "probability": probability}


def read_feedback(feedback_dir: str | os.PathLike) -> pd.DataFrame:
    """``feedback_dir/feedback.csv`` as strings (``probability`` as float), in the order the flags arrived.

    Read under the append lock, so a row being written is never read half-way.

    Raises:
        DataError: no such folder (or a file instead), no ``feedback.csv``, an unreadable file, a missing column
            (naming the file and column), or a probability that is not a number (naming its row).
    """
    folder = Path(feedback_dir)
    csv_path = folder / FEEDBACK_CSV
    if not folder.exists():  # a mistyped --feedback is not "no feedback yet"
        raise DataError(folder, "feedback folder not found")
    if not folder.is_dir():
        raise DataError(folder, f"is a file, not a feedback folder (give the folder that holds {FEEDBACK_CSV})")
    if not csv_path.is_file():
        raise DataError(csv_path, "no feedback recorded here (flag a prediction in the web demo first)")
    with _lock(folder):  # the checks of every CSV the project reads: readable, required columns
        table = _read_csv(csv_path, FEEDBACK_COLUMNS, allow_empty=True)
    table = table[list(FEEDBACK_COLUMNS)].copy()
    try:
        table["probability"] = pd.to_numeric(table["probability"]).astype(float)
    except (TypeError, ValueError) as e:
        # pandas names the value's 0-based position; a hand-edited table's user needs its row (the line shown)
        for i, value in enumerate(table["probability"]):
            try:
                pd.to_numeric(pd.Series([value], dtype=str))
            except (TypeError, ValueError):
                raise DataError(_row(csv_path, i), f"probability {value!r} is not a number") from None
        raise DataError(csv_path, f"column probability holds a value that is not a number ({e})") from None
    table.attrs["source"] = str(csv_path)
    return table


# ---------------------------------------------------------------------------------------------------- merge
#: what identifies a held-out row: a merge must keep these, and a gated retraining compares them
HELD_OUT_COLUMNS: tuple[str, ...] = ("split", "image_id", "lesion_id", "dx", "path")


def held_out_rows(table_or_dataset: pd.DataFrame | str | os.PathLike,
                  class_names: Sequence[str] = DERMOSCOPY_CLASSES) -> pd.DataFrame:
    """The validation and test rows of a split (a table from :func:`load_split_table`, or a split folder/CSV):
    :data:`HELD_OUT_COLUMNS`, paths resolved (:func:`os.path.realpath`), sorted by split then image id — two
    splits evaluate on the same images with the same labels exactly when these tables are equal."""
    if isinstance(table_or_dataset, pd.DataFrame):
        table = table_or_dataset
    else:
        from mednet.data.lesion_split import load_split_table

        table = load_split_table(table_or_dataset, None, class_names, check_files=False)
    rows = table.loc[table["split"].isin(("validation", "test")), list(HELD_OUT_COLUMNS)].astype(str)
    rows["path"] = [os.path.realpath(p) for p in rows["path"]]
    return rows.sort_values(["split", "image_id"]).reset_index(drop=True)


def _row_ref(csv_path: Path, index: int) -> str:
    return _row(csv_path, index)


#: a feedback row's ``provenance`` in a merged split: ``feedback:<timestamp>:<model_run>``
_FEEDBACK_PROVENANCE = re.compile(r"feedback:(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
                                  r"(?:Z|[+-]\d{2}:\d{2})?):")


def _parse_time(text: str) -> datetime | None:
    """An ISO 8601 time (as :func:`_now` writes it) as an aware datetime (a time without offset is local time);
    None if it is not one."""
    try:
        time = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return time if time.tzinfo is not None else time.astimezone()


def _iso(time: datetime) -> str:
    """``time`` as provenance records it: ISO 8601 with ``T``, milliseconds (microseconds when it has them) and its
    UTC offset — one form, whatever form the flag's timestamp was re-saved in."""
    return time.isoformat(timespec="milliseconds" if time.microsecond % 1000 == 0 else "microseconds")


def _provenance_time(provenance: str) -> datetime | None:
    """The time of a ``feedback:<time>:<model_run>`` provenance (:func:`_parse_time`); None if it has none.

    Merges write it as :func:`_iso` does; earlier merges copied the flag's timestamp as it was, possibly in another
    form :func:`_parse_time` accepts (``2026-11-25 09:15:27.413+00:00``), so that is read too: the longest text
    before a ``:`` that parses (the time holds ``:`` itself)."""
    found = _FEEDBACK_PROVENANCE.match(provenance)
    if found:
        return _parse_time(found.group(1))
    if not provenance.startswith("feedback:"):
        return None
    rest = provenance[len("feedback:"):]
    for cut in reversed([i for i, c in enumerate(rest) if c == ":"]):
        time = _parse_time(rest[:cut])
        if time is not None:
            return time
    return None


def _checked_feedback(feedback_dir: Path, class_names: Sequence[str]) -> tuple[pd.DataFrame, int, dict[str, list]]:
    """The latest flag of each image, checked; the number of flags it supersedes; and every flag of each image.

    Latest = the latest ``timestamp`` (equal times: the later row; rows are appended under a lock, so file order is
    arrival order and agrees with the times unless a clock was set back). The latest flags keep the file order.
    ``flags`` maps each image hash to ``[(time, timestamp, model_run, corrected), …]`` by time.

    Raises:
        DataError: naming the row, for a hash that is not a SHA-256 hex digest, an unknown class or a timestamp
            that is not an ISO 8601 time.
    """
    table = read_feedback(feedback_dir)
    csv_path = Path(table.attrs["source"])
    if table.empty:
        raise DataError(csv_path, "the feedback file has a header but no rows: nothing to merge")
    times = []
    for i, row in enumerate(table.itertuples(index=False)):
        where = _row_ref(csv_path, i)
        if not _SHA256.fullmatch(row.image_sha256):
            raise DataError(where, f"image_sha256 {row.image_sha256!r} is not a SHA-256 hex digest")
        if row.corrected not in class_names:
            raise DataError(where, f"unknown corrected class {row.corrected!r} (expected one of "
                                   f"{', '.join(class_names)})")
        time = _parse_time(row.timestamp)
        if time is None:
            raise DataError(where, f"timestamp {row.timestamp!r} is not an ISO 8601 time (the latest flag of an image "
                                   "wins, so every flag needs its time)")
        times.append(time)
    order = sorted(range(len(table)), key=lambda i: (times[i], i))
    flags: dict[str, list] = {}
    for i in order:
        row = table.iloc[i]
        flags.setdefault(row["image_sha256"], []).append((times[i], row["timestamp"], row["model_run"],
                                                          row["corrected"]))
    last = {table["image_sha256"].iloc[i]: i for i in order}  # the latest flag's row of each image
    latest = table.iloc[sorted(last.values())].copy()
    # the index stays the file's data-row number, so an error about a kept flag names its own line
    latest.attrs = dict(table.attrs)
    return latest, len(table) - len(latest), flags


def _feedback_image(feedback_dir: Path, row, where: str) -> tuple[Path, tuple[str, ...]]:
    """The stored PNG of a feedback row (``images/<image_sha256>.png``), checked to hold the pixels its hash names,
    and its :func:`perceptual_hash_variants` (from the same decode; the first is its :func:`perceptual_hash`).

    The path is built from the validated hash, never taken from the row's ``image_file``: that column is text in a
    file clinicians open and edit, and an absolute or ``../`` path there would be read and written into the new
    split. A row whose ``image_file`` names another file than the one :func:`append_feedback` wrote is refused.
    """
    expected = f"{FEEDBACK_IMAGES}/{row.image_sha256}.png"
    if row.image_file != expected:
        raise DataError(where, f"image_file {row.image_file!r} is not {expected!r}, the file append_feedback stores "
                               "for its image_sha256 (the row was edited)")
    path = feedback_dir / FEEDBACK_IMAGES / f"{row.image_sha256}.png"
    if not path.is_file():
        raise DataError(where, f"image_file {expected} does not exist in {feedback_dir}")
    image = load_rgb(path)
    if image_sha256(image) != row.image_sha256:
        raise DataError(path, f"its pixels do not match image_sha256 {row.image_sha256[:12]}… of {where} "
                              "(the file was changed after it was recorded)")
    return path, perceptual_hash_variants(image)


#: the columns of ``image_hashes.csv`` (a cache written before perceptual hashes has no ``perceptual_hash``)
_HASH_CACHE_COLUMNS = ("path", "size", "mtime_ns", "sha256", "perceptual_hash")


def _read_hash_cache(path: Path) -> dict[str, dict]:
    """``{real path: cache row}`` of an ``image_hashes.csv`` (empty if there is none or it is unreadable).

    Only rows with both a SHA-256 and a 32-hex-digit ``perceptual_hash`` are returned: a row of a cache written
    before the perceptual hashes existed (no such column) is left out, so its image is decoded and hashed again.
    """
    if not path.is_file():
        return {}
    try:
        cached = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        perceptual = cached["perceptual_hash"] if "perceptual_hash" in cached.columns else [""] * len(cached)
        rows = {p: {"path": p, "size": int(size), "mtime_ns": int(mtime), "sha256": digest, "perceptual_hash": ph}
                for p, size, mtime, digest, ph in
                zip(cached["path"], cached["size"], cached["mtime_ns"], cached["sha256"], perceptual)}
    except (KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        logger.warning("%s: unreadable hash cache ignored", path)
        return {}
    return {p: r for p, r in rows.items() if _SHA256.fullmatch(r["sha256"]) and _PERCEPTUAL_HASH.fullmatch(r["perceptual_hash"])}


def _hash_row(path: str, digest: str, perceptual: str) -> dict:
    """The cache row of one image: its real path, size and modification time, and its two hashes."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return {"path": real, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest, "perceptual_hash": perceptual}


def _write_hash_cache(rows: Sequence[dict], out: Path) -> None:
    with atomic_path(out / HASH_CACHE) as tmp:
        pd.DataFrame(list(rows), columns=list(_HASH_CACHE_COLUMNS)).to_csv(tmp, index=False, encoding="utf-8")


def _image_hashes(paths: Sequence[str], caches: Sequence[Path], out: Path) -> list[dict]:
    """The cache rows (:func:`_hash_row`: ``sha256`` = :func:`image_sha256`, ``perceptual_hash`` = :func:`perceptual_hash`
    of the image decoded with :func:`load_rgb`) of ``paths``, in order, written to ``out/image_hashes.csv`` at once
    (a merge stopped later keeps them). A cached row is reused when the file's real path, size and modification
    time match and it has both hashes; ``caches`` are only read."""
    from tqdm.auto import tqdm

    known: dict[str, dict] = {}
    for cache in caches:
        known.update(_read_hash_cache(cache))
    rows, computed = [], 0
    for p in tqdm(paths, desc="hashing split images", unit="image", disable=None, leave=False):
        real = os.path.realpath(p)
        stat = os.stat(real)
        hit = known.get(real)
        if hit is not None and hit["size"] == stat.st_size and hit["mtime_ns"] == stat.st_mtime_ns:
            rows.append(hit)
        else:
            image = load_rgb(real)
            rows.append(_hash_row(real, image_sha256(image), perceptual_hash(image)))
            computed += 1
    _write_hash_cache(rows, out)
    logger.info("merge: %d split images hashed, %d taken from a cache", computed, len(paths) - computed)
    return rows


def _nearest_held_out(variants: Sequence[str], held_out: np.ndarray) -> tuple[int, int, int, int]:
    """``(index, distance, orientation, effective)``: the held-out image nearest to a flagged image, comparing
    each held-out image as it is (``held_out``: ``(M, 2)`` uint64, phash and dhash) with the flagged image in each
    of its :func:`perceptual_hash_variants` ``variants``. ``distance`` is :func:`perceptual_distance` in the
    ``orientation`` (index into :data:`ORIENTATIONS`) that matched; ``effective`` adds
    :data:`TURNED_EXTRA_BITS` when it is not the first (as uploaded), the number compared with
    :data:`NEAR_DUPLICATE_DISTANCE`. The first of equals wins. ``(-1, 65, 0, 65)`` for none."""
    if held_out.size == 0:
        return -1, 65, 0, 65
    mine = np.array([[int(v[:16], 16), int(v[16:], 16)] for v in variants], dtype=np.uint64)  # (V, 2)
    xor = np.ascontiguousarray(held_out[None, :, :] ^ mine[:, None, :])  # (V, M, 2)
    distances = np.unpackbits(xor.view(np.uint8)).reshape(len(mine), -1, 2, 64).sum(axis=3).max(axis=2)  # (V, M)
    effective = distances + np.where(np.arange(len(mine)) == 0, 0, TURNED_EXTRA_BITS)[:, None]
    index = int(np.argmin(effective.min(axis=0)))
    orientation = int(np.argmin(effective[:, index]))
    return index, int(distances[orientation, index]), orientation, int(effective[orientation, index])


def _cache_size(dataset_dir: Path, table: pd.DataFrame) -> int:
    """The resized cache's side in pixels: ``split.json``'s ``cache_size``, else the first cached PNG's width."""
    settings = dataset_dir / "split.json"
    if settings.is_file():
        size = json.loads(settings.read_text(encoding="utf-8")).get("cache_size")
        if size:
            return int(size)
    from PIL import Image

    with Image.open(table["cache_path"].iloc[0]) as img:
        return int(img.size[0])


def merge_feedback(
    feedback_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    class_names: Sequence[str] = DERMOSCOPY_CLASSES,
) -> Path:
    """Write a new split folder ``out_dir``: the split of ``dataset_dir`` plus the flagged images as training rows.

    ``out_dir/split.csv`` holds every row of ``dataset_dir/split.csv`` (same values, same order, the validation and
    test rows included; paths re-written relative to ``out_dir`` as :func:`write_split_table` does; only the label
    of a training row added by an earlier merge may change, see below), then one row per flagged image that is in
    no split yet and is no near-copy of a validation or test image:

    * the latest flag of an image wins (by ``timestamp``; equal times: the later row); earlier flags of it are
      counted as superseded, and an image whose flags name different classes (e.g. two clinicians disagree) is
      listed in ``merge.json``'s ``disagreements`` (``image_sha256``, ``classes`` in time order, ``chosen`` = the
      class it has in the new split, and its ``flags``);
    * an image whose pixel hash (:func:`image_sha256`) equals that of any image of any split is not added again and
      is counted per split. If that row came from the original metadata, its label is kept also when the
      correction disagrees (a *label conflict*, listed in ``merge.json``: the original metadata is never
      changed). If it is a training row an earlier merge added (``provenance`` ``feedback:<time>:…``), a flag later
      than that time with another class *relabels* it (``dx`` and ``provenance`` become the flag's; listed in
      ``merge.json``'s ``relabelled``): the latest flag wins across merges too;
    * an image that is in no split but whose :func:`perceptual_hash` values are both within
      :data:`NEAR_DUPLICATE_DISTANCE` bits of a validation or test image's, as uploaded or — within
      ``NEAR_DUPLICATE_DISTANCE - TURNED_EXTRA_BITS`` — mirrored or turned (:func:`perceptual_hash_variants`), e.g.
      a re-saved, resized, mirrored or rotated copy of a held-out image, is not added: it would put a held-out
      lesion into training, and the retraining gate would select and score the model on it. It is listed in
      ``merge.json``'s ``near_duplicates_held_out`` (``image_sha256``, the nearest held-out image's ``split``,
      ``image_id`` and ``dx``, the ``distance``, the flagged image's ``orientation`` that matched (an
      :data:`ORIENTATIONS` name), ``corrected``), counted in
      ``near_duplicates_skipped``/``near_duplicates_per_split`` and logged as a warning; in ``disagreements`` its
      ``chosen`` is null. Near-copies of training images are added (no leak into the evaluation). The check misses
      a few re-saved/resized copies (more of those also turned) and most cropped ones (see
      :data:`NEAR_DUPLICATE_DISTANCE`), and never checks
      a training row an earlier merge added;
    * an added row: ``image_id`` = ``lesion_id`` = ``feedback_<first 12 hex digits of the hash>`` (its own lesion
      group), ``dx`` = the correction, ``dx_type`` = ``feedback``, ``path`` = the stored PNG in the feedback folder,
      ``split`` = ``training``; with a resized cache in the source split, its ``cache_path`` is written to
      ``out_dir/cache_<size>/``.

    A ``provenance`` column says where each row came from: ``original`` (or the value it had, when
    ``dataset_dir`` is itself a merged split) and ``feedback:<time>:<model_run>`` for added rows, the flag's time
    always written as ``2026-11-25T09:15:27.413+00:00`` (a timestamp re-saved by a spreadsheet with a space
    instead of ``T`` is parsed and written in that form, so a later merge reads it back).

    Also written: ``split_stats.csv``/``.md``, ``split.json`` (the source's, updated: counts, ``data_provenance``,
    ``merged_from``), ``merge.json`` (flags, added per class, duplicates per split, near-copies of held-out images,
    superseded flags, label conflicts, relabelled rows, disagreeing flags) and ``image_hashes.csv`` (the pixel
    SHA-256 and the perceptual hash of every image, with its size and modification time; a later merge from
    ``out_dir`` reuses them — a cache written before the perceptual hashes, without their ``perceptual_hash`` column, is still
    read: its images are hashed again).
    Comments and upload names are not copied. ``dataset_dir`` is only read.

    Returns:
        The path of ``out_dir/split.csv``.

    Raises:
        DataError: ``out_dir`` already holds a split (or is ``dataset_dir``), is a file or lies under one, no or bad
            feedback (a missing image, an ``image_file`` other than ``images/<image_sha256>.png``, an unknown class,
            a bad timestamp, an image changed since it was flagged), a bad source split (also a feedback
            ``provenance`` without its time).
    """
    from mednet.data.lesion_split import (
        _PATH_COLUMNS,
        _relative,
        data_provenance,
        load_split_table,
        split_stats,
    )
    from mednet.reports import write_table

    feedback_dir, dataset_dir, out = Path(feedback_dir).resolve(), Path(dataset_dir).resolve(), Path(out_dir)
    if dataset_dir.suffix.lower() == ".csv":
        dataset_dir = dataset_dir.parent
    csv_out, stats_stem, settings_out, merge_out = (out / "split.csv", out / "split_stats", out / "split.json",
                                                    out / "merge.json")
    if out.resolve() == dataset_dir:
        raise OptionError({"--out": f"must be a new folder, not the source split {dataset_dir} (never overwritten)"})
    refuse_file_as_folder(out, hint="choose a new --out folder")
    refuse_existing(csv_out, settings_out, merge_out, stats_stem.with_suffix(".csv"), stats_stem.with_suffix(".md"),
                    hint="choose a new --out folder (a merge never overwrites)")
    table = load_split_table(dataset_dir, None, class_names)
    source_csv = Path(table.attrs["source"])
    feedback, superseded, flags = _checked_feedback(feedback_dir, class_names)
    feedback_csv = Path(feedback.attrs["source"])
    images = [_feedback_image(feedback_dir, row, _row_ref(feedback_csv, i))
              for i, row in zip(feedback.index, feedback.itertuples(index=False))]

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. no permission (a file in the way was refused above)
        raise DataError(out, f"cannot create the --out folder ({e.strerror or e})") from None
    hash_rows = _image_hashes(list(table["path"]), [dataset_dir / HASH_CACHE, out / HASH_CACHE], out)
    first: dict[str, int] = {}
    for i, r in enumerate(hash_rows):
        first.setdefault(r["sha256"], i)
    # the validation and test images a flagged image must not be a near-copy of
    held_out = np.flatnonzero(table["split"].isin(("validation", "test")).to_numpy())
    held_out_hashes = np.array([[int(hash_rows[i]["perceptual_hash"][:16], 16),
                                 int(hash_rows[i]["perceptual_hash"][16:], 16)] for i in held_out],
                               dtype=np.uint64).reshape(-1, 2)

    merged = table.copy()
    if "provenance" in merged.columns:
        merged["provenance"] = merged["provenance"].replace("", "original")
    else:
        merged["provenance"] = "original"

    added, duplicates, near_duplicates, relabelled, disagreements = [], [], [], [], []
    for row, (png, variants) in zip(feedback.itertuples(index=False), images):
        perceptual = variants[0]
        hit = first.get(row.image_sha256)
        near = None
        if hit is None:  # not these pixels: a near-copy of a held-out image must not reach training either
            index, distance, turn, effective = _nearest_held_out(variants, held_out_hashes)
            if effective <= NEAR_DUPLICATE_DISTANCE:
                near = table.iloc[held_out[index]]
                near_duplicates.append({"image_sha256": row.image_sha256, "split": near["split"],
                                        "image_id": near["image_id"], "dx": near["dx"], "distance": distance,
                                        "orientation": ORIENTATIONS[turn], "corrected": row.corrected})
                logger.warning("merge: flagged image %s… not added: a near-copy of %s image %s (perceptual hash "
                               "distance %d <= %d%s)", row.image_sha256[:12], near["split"], near["image_id"],
                               distance, NEAR_DUPLICATE_DISTANCE - (TURNED_EXTRA_BITS if turn else 0),
                               f", the flagged image {ORIENTATIONS[turn]}" if turn else "")
        # the flag's time in one form: a timestamp re-saved as "2026-11-25 09:15:27.413+00:00" must be read back
        provenance = f"feedback:{_iso(flags[row.image_sha256][-1][0])}:{row.model_run}"
        # the labels this image has had: its flags here, and the label an earlier merge gave it
        history = [(t, c) for t, _, _, c in flags[row.image_sha256]]
        chosen = row.corrected
        if hit is not None:
            original = table.iloc[hit]
            earlier = merged.at[hit, "provenance"]
            relabel = False
            if earlier.startswith("feedback:") and original["split"] == "training":
                # added by an earlier merge from a flag: a later flag replaces that flag's label
                added_at = _provenance_time(earlier)
                if added_at is None:
                    raise DataError(_row(source_csv, hit), f"provenance {earlier!r} does not start with "
                                                           "feedback:<ISO time>: (the latest flag of the image "
                                                           "cannot be told)")
                history.append((added_at, original["dx"]))
                relabel = flags[row.image_sha256][-1][0] > added_at and original["dx"] != row.corrected
                if relabel:
                    merged.at[hit, "dx"], merged.at[hit, "provenance"] = row.corrected, provenance
                    relabelled.append({"image_sha256": row.image_sha256, "image_id": original["image_id"],
                                       "from": original["dx"], "to": row.corrected, "was": earlier,
                                       "now": provenance})
                else:
                    chosen = original["dx"]
                conflict = False
            else:
                chosen = original["dx"]  # the original metadata is never changed
                conflict = bool(original["dx"] != row.corrected)
            duplicates.append({"image_sha256": row.image_sha256, "split": original["split"],
                               "image_id": original["image_id"], "dx": original["dx"], "corrected": row.corrected,
                               "label_conflict": conflict, "relabelled": relabel})
        classes = list(dict.fromkeys(c for _, c in sorted(history, key=lambda h: h[0])))
        if len(classes) > 1:
            disagreements.append({"image_sha256": row.image_sha256, "classes": classes,
                                  "chosen": None if near is not None else chosen,
                                  "flags": [{"timestamp": ts, "model_run": run, "corrected": c}
                                            for _, ts, run, c in flags[row.image_sha256]]})
        if hit is not None or near is not None:
            continue
        name = f"feedback_{row.image_sha256[:12]}"
        if (table["image_id"] == name).any() or any(a["image_id"] == name for a in added):
            raise DataError(feedback_csv, f"image id {name} is taken already (a 48-bit hash prefix collision); "
                                          "rename that row of the source split")
        added.append({"image_id": name, "lesion_id": name, "dx": row.corrected, "dx_type": FEEDBACK_DX_TYPE,
                      "path": str(png), "split": "training", "provenance": provenance, "_sha256": row.image_sha256,
                      "_perceptual": perceptual})

    new = pd.DataFrame(added, columns=["image_id", "lesion_id", "dx", "dx_type", "path", "split", "provenance",
                                       "_sha256", "_perceptual"])
    if len(new):
        if "cache_path" in merged.columns:
            from mednet.data.dermoscopy import write_resized_cache

            new = write_resized_cache(new, out, _cache_size(dataset_dir, table), progress=False)
        for column in merged.columns:
            if column not in new.columns:
                new[column] = ""
        merged = pd.concat([merged, new[list(merged.columns)]], ignore_index=True)
        # the added images' hashes too, for a later merge from out_dir
        _write_hash_cache([*hash_rows, *(_hash_row(p, h, ph) for p, h, ph in
                                         zip(new["path"], new["_sha256"], new["_perceptual"]))], out)

    written = merged.copy()
    base = out.resolve()
    for column in _PATH_COLUMNS:
        if column in written.columns:
            written[column] = [_relative(p, base) for p in written[column]]
    # split.csv, its stats, merge.json and split.json appear together or not at all: a split.csv left by a failure
    # after it would be accepted by the bundle and would block the corrected re-run
    created: list[Path] = []  # what this call wrote (another process's file is never removed)
    try:
        with atomic_path(csv_out, overwrite=False) as tmp:
            written.to_csv(tmp, index=False, encoding="utf-8")
        created.append(csv_out)
        check = load_split_table(out, None, class_names)  # the bundle's reader accepts it (lesions disjoint, files)
        if not held_out_rows(check).equals(held_out_rows(table)):  # guards this function, not the user's data
            raise DataError(csv_out, "internal error: the validation/test rows differ from the source split's")

        provenance = data_provenance(check)
        per_split = check.groupby("split")
        previous = json.loads((dataset_dir / "split.json").read_text(encoding="utf-8")) \
            if (dataset_dir / "split.json").is_file() else {}
        created += [stats_stem.with_suffix(".csv"), stats_stem.with_suffix(".md")]  # before: either may be written
        write_table(split_stats(check, class_names), stats_stem,
                    title=f"Images per class and split ({provenance} data, {source_csv} + feedback)",
                    footer="\nLast row: distinct lesions per split. No lesion is in two splits. Each flagged image "
                           "added is its own lesion, in training.\n")
        duplicates_per_split = {s: sum(d["split"] == s for d in duplicates) for s in SPLITS}
        near_per_split = {s: sum(d["split"] == s for d in near_duplicates) for s in ("validation", "test")}
        summary = {
            "time": _now(),
            "dataset_dir": str(dataset_dir),
            "feedback_dir": str(feedback_dir),
            "split_csv": str(csv_out.resolve()),
            "feedback_rows": int(len(feedback) + superseded),
            "flagged_images": int(len(feedback)),
            "superseded_flags": int(superseded),
            "added": int(len(new)),
            "added_per_class": {c: int((new["dx"] == c).sum()) for c in class_names},
            "duplicates_skipped": int(len(duplicates)),
            "duplicates_per_split": duplicates_per_split,
            "near_duplicate_distance": NEAR_DUPLICATE_DISTANCE,
            "near_duplicate_distance_turned": NEAR_DUPLICATE_DISTANCE - TURNED_EXTRA_BITS,
            "near_duplicates_skipped": int(len(near_duplicates)),
            "near_duplicates_per_split": near_per_split,
            "label_conflicts": int(sum(d["label_conflict"] for d in duplicates)),
            "relabelled": int(len(relabelled)),
            "relabelled_rows": relabelled,
            "disagreements": disagreements,
            "duplicates": duplicates,
            "near_duplicates_held_out": near_duplicates,
            "validation_and_test_unchanged": True,
        }
        created.append(write_json_atomic(summary, merge_out, overwrite=False))
        created.append(write_json_atomic({
            **previous,
            "merged_from": str(dataset_dir),
            "feedback_dir": str(feedback_dir),
            "merge": str(merge_out.resolve()),
            "class_names": list(class_names),
            "data_provenance": provenance,
            "n_images": int(len(check)),
            "n_lesions": int(check["lesion_id"].nunique()),
            "n_images_per_split": {s: int(per_split.size().get(s, 0)) for s in SPLITS},
            "n_lesions_per_split": {s: int(per_split["lesion_id"].nunique().get(s, 0)) for s in SPLITS},
        }, settings_out, overwrite=False))
    except BaseException:
        for path in created:
            Path(path).unlink(missing_ok=True)
        raise
    if summary["label_conflicts"]:
        logger.warning("merge: %d flagged image(s) are already in the split with another label; the split's label "
                       "is kept (listed in %s)", summary["label_conflicts"], merge_out)
    if relabelled:
        logger.info("merge: %d training row(s) added by an earlier merge relabelled by a later flag (listed in %s)",
                    len(relabelled), merge_out)
    if disagreements:
        logger.warning("merge: %d flagged image(s) have flags naming different classes; the latest flag's class is "
                       "used (listed in %s, disagreements)", len(disagreements), merge_out)
    if near_duplicates:
        logger.warning("merge: %d flagged image(s) not added as near-copies of validation/test images (listed in "
                       "%s, near_duplicates_held_out)", len(near_duplicates), merge_out)
    print(f"{csv_out}: {len(table)} original rows + {len(new)} feedback training rows "
          f"({len(duplicates)} flagged images already in a split: "
          + ", ".join(f"{s} {n}" for s, n in duplicates_per_split.items())
          + f"; {len(near_duplicates)} near-copies of held-out images: "
          + ", ".join(f"{s} {n}" for s, n in near_per_split.items())
          + f"; {len(relabelled)} relabelled; {superseded} superseded flags)")
    return csv_out
