"""MONAI decathlon-style datalists: ``{"training": [{"image": …, "label": …}], "validation": […], "test": […]}``.

Paths inside the JSON are relative to the JSON file (MONAI's convention). They are resolved here rather than by
:func:`monai.data.load_decathlon_datalist`, which joins keys other than image/label (our ``mask``) only when the
joined file exists — a missing mask would then be reported by its bare relative path, or silently found
relative to the current directory. Splits are by volume: a volume listed in two splits is an error,
so slices or patches of one volume can never leak from training into validation or test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mednet.data.naming import VOLUME_SUFFIXES, with_names
from mednet.data.readers import holds_dicom_files
from mednet.data.splits import SPLITS, check_disjoint_groups
from mednet.errors import DataError
from mednet.io import refuse_existing, write_json_atomic

__all__ = ["SPLITS", "load_datalist", "write_datalist", "check_disjoint_splits", "find_datalist", "list_volume_inputs"]

_PATH_KEYS = ("image", "label", "mask")


def find_datalist(dataset_dir: str | os.PathLike, name: str = "datalist.json") -> Path:
    """``dataset_dir/datalist.json`` (or ``dataset_dir`` itself if it is a JSON file); DataError if absent."""
    p = Path(dataset_dir)
    p = p if p.suffix == ".json" else p / name
    if not p.is_file():
        raise DataError(p, "datalist not found (build one with `python -m data_prep.demo_cohort` or write a "
                           "decathlon-style JSON with 'training'/'validation'/'test' lists)")
    return p


def load_datalist(path: str | os.PathLike, split: str, required: bool = True) -> list[dict]:
    """Load one split of a datalist with absolute paths, checking every referenced file exists.

    Args:
        path: the datalist JSON, or a directory holding ``datalist.json``.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        required: if True an absent or empty split is an error; otherwise ``[]`` is returned.

    Returns:
        ``[{"image": "/abs/img.nii.gz", "label": "/abs/lab.nii.gz", ...}, ...]``.
    """
    path = find_datalist(path).resolve()
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: Windows Notepad starts UTF-8 files with a BOM
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason} at byte {e.start}); save the datalist as UTF-8") from None
    if not isinstance(content, dict):
        raise DataError(path, "a datalist must be a JSON object with 'training'/'validation'/'test' lists")
    check_disjoint_splits(content, path, base=path.parent)
    if not content.get(split):
        if required:
            present = [k for k in SPLITS if content.get(k)]
            raise DataError(path, f"split '{split}' is missing or empty (present: {present})")
        return []
    items = []
    for i, raw in enumerate(content[split]):
        if isinstance(raw, str):  # decathlon test lists may hold bare image paths
            raw = {"image": raw}
        item = dict(raw)
        for key in _PATH_KEYS:
            if key in item and item[key] in ("", None):  # '"label": ""' means no label, not the datalist's folder
                if key == "image":
                    raise DataError(path, f"{split}[{i}].image is empty")
                del item[key]
            if key in item:
                item[key] = os.path.normpath(os.path.join(path.parent, str(item[key])))
        items.append(item)
    for i, item in enumerate(items):
        for key in _PATH_KEYS:
            if key in item and not Path(item[key]).exists():
                raise DataError(item[key], f"listed as {split}[{i}].{key} in {path} but does not exist")
    return items


def _json_type(value: object) -> str:
    """The JSON name of ``value``'s type (``object``, ``array``, ``string``, ``number``…), as the user wrote it."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (Mapping, list, tuple, str, int, float, bool)) or value is None \
        else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_disjoint_splits(content: Mapping[str, Sequence[Mapping]], source: str | os.PathLike | None = None,
                          base: str | os.PathLike | None = None) -> None:
    """Raise :class:`DataError` if one image appears in two splits (or twice in one).

    The group of a datalist item is its volume (:func:`mednet.data.splits.check_disjoint_groups`); a volume listed
    twice in one split is refused too (its slices would be counted twice). With ``base`` (the datalist's folder)
    paths are compared as the files they name — joined to ``base``, symbolic links resolved — so one volume
    written two ways (``images/a.nii.gz`` and ``/data/images/a.nii.gz``, ``../x/a.nii.gz``) is one volume.
    """
    assignments, seen = [], set()
    for split in SPLITS:
        items = content.get(split) or []
        # the shape is checked first: a string split would be iterated character by character (then "listed
        # twice"), an object split by its keys (a missing file called "image"), a number item would be a TypeError
        if not isinstance(items, (list, tuple)):
            raise DataError(source, f"'{split}' must be a list of items ({{\"image\": path, …}} or an image path), "
                                    f"got {_json_type(items)} {_short(items)}")
        for i, item in enumerate(items):
            if isinstance(item, Mapping):
                if "image" not in item:
                    raise DataError(source, f"{split}[{i}] has no 'image' key")
                for key in _PATH_KEYS:
                    if key in item and not isinstance(item[key], str) and not (key != "image" and item[key] is None):
                        raise DataError(source, f"{split}[{i}].{key} must be a path (a string), got "
                                                f"{_json_type(item[key])} {_short(item[key])}")
            elif not isinstance(item, str):
                raise DataError(source, f"{split}[{i}] must be an object with an 'image' path or an image path, got "
                                        f"{_json_type(item)} {_short(item)}")
            image = item["image"] if isinstance(item, Mapping) else item
            key = os.path.normpath(str(image)) if base is None else os.path.realpath(os.path.join(base, str(image)))
            if (split, key) in seen:
                raise DataError(source, f"volume {image} is listed twice in '{split}'")
            seen.add((split, key))
            assignments.append((split, key))
    check_disjoint_groups(assignments, source, what="volume")


def write_datalist(
    path: str | os.PathLike, splits: Mapping[str, Sequence[Mapping[str, str]]], overwrite: bool = False, **extra
) -> Path:
    """Write a datalist JSON whose file paths are relative to the JSON's folder.

    Args:
        path: output JSON path (refused if it exists unless ``overwrite``).
        splits: ``{"training": [{"image": p, "label": q}], ...}`` with absolute or cwd-relative paths.
        extra: additional top-level fields (e.g. ``name``, ``labels``), written as given.
    """
    path = Path(path)
    refuse_existing(path, overwrite=overwrite)
    base = path.parent.resolve()
    content: dict = dict(extra)
    for split, items in splits.items():
        content[split] = [
            {k: (os.path.relpath(Path(v).resolve(), base) if k in _PATH_KEYS else v) for k, v in item.items()}
            for item in items
        ]
    check_disjoint_splits(content, path, base=base)  # one volume spelled two ways counts once
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(content, path)


def list_volume_inputs(input: str | os.PathLike, mask: str | os.PathLike | None = None, split: str = "test",
                       output_dir: str | os.PathLike | None = None, series_id: str | None = None) -> list[dict]:
    """Volumes to segment: a file, a DICOM series folder, a folder of volumes, or a datalist JSON.

    Returns ``[{"image": path[, "mask": path], "name": output name}, …]``. A folder holding DICOM files (``.dcm``, or any name with the DICOM magic) is one
    DICOM series; a folder of image files gives one item per file (and per DICOM sub-folder). For a datalist,
    ``split`` is read (labels, if present, are ignored by inference). ``name`` is the shortest name telling the
    inputs apart (:func:`mednet.data.naming.unique_names`: ``subA_T1`` / ``subB_T1`` for two ``T1.nii.gz``), the
    stem of every output written for that input.

    ``output_dir`` (where the segmentations go) may not be a folder input or inside it: the next run would read
    its ``*_seg.nii.gz`` files as scans to segment. ``series_id`` picks one series of a DICOM folder holding several
    (a PACS export with its localizer); datalist entries carry their own ``"series_id"``.
    """
    path = Path(input)
    if not path.exists():
        raise DataError(path, "input does not exist")
    if output_dir is not None and path.is_dir():
        out, folder = Path(output_dir).resolve(), path.resolve()
        if out == folder or folder in out.parents:
            raise DataError(output_dir, f"is inside the input folder {path}: a later run would read its segmentations "
                                        "as scans; choose an --output_dir outside it")
    if series_id and not (path.is_dir() and holds_dicom_files(path)):
        raise DataError(path, f"--series_id applies to one DICOM folder holding several series, not to "
                              f"{'a datalist' if path.suffix == '.json' else 'a folder of volumes' if path.is_dir() else 'a file'}"
                              " (give datalist entries a \"series_id\")")
    if path.suffix == ".json":
        if mask is not None:
            raise DataError(mask, f"--mask applies to a single input volume, not to the datalist {path} "
                                  "(give its items 'mask' entries, or pass --input with one volume)")
        return with_names([{"image": it["image"], **{k: it[k] for k in ("mask", "series_id") if it.get(k)}}
                           for it in load_datalist(path, split)])
    if path.is_dir() and not holds_dicom_files(path):
        items = sorted(str(p) for p in path.iterdir() if p.name.lower().endswith(VOLUME_SUFFIXES) or
                       holds_dicom_files(p))
        if not items:
            raise DataError(path, f"no volumes ({', '.join(VOLUME_SUFFIXES)} or DICOM folders) found")
        if mask is not None:
            raise DataError(mask, "--mask applies to a single input volume, not a folder (use a datalist with 'mask' entries)")
        return with_names([{"image": p} for p in items])
    return with_names([{"image": str(path), **({"mask": str(mask)} if mask else {}),
                        **({"series_id": str(series_id)} if series_id else {})}])
