"""Slice 3D volumes into 2D slices with provenance.

    python -m data_prep.slice --datalist demo/cohort/datalist.json --out demo/slices [--split training]
        [--axis -1] [--drop_empty] [--intensity_normalization histogram|scale|zscore] [--bias_correction n4|none]
        [--overwrite]

For every volume of the split (all splits by default) writes ``<out>/<split>/<name>_axis<A>.npz`` holding
``images`` (S, H, W) float32 (RAS-oriented, brain-normalised), ``labels`` (S, H, W) uint8 if labelled,
``indices`` (S,) the slice index along the axis, ``axis``, ``source`` and ``volume_shape``; and
``<out>/slices.csv`` with one row per slice: split, volume, name, axis, index, file, foreground pixels.

``<name>`` is the volume's file stem, with parent folders prefixed only where stems collide within the split
(:func:`mednet.data.naming.unique_names`: ``subA/T1.nii.gz``, ``subB/T1.nii.gz`` → ``subA_T1``, ``subB_T1``), so
no volume's slices overwrite another's. Files are written atomically and never over an existing one unless
``--overwrite``; every output is checked before the first volume is loaded. The per-volume files and
``slices.csv`` are written to a hidden staging folder next to ``<out>`` and moved into place only after every
volume succeeded (:func:`mednet.file_sets.replace_files`), so a failed run leaves no outputs behind (and does not block
its re-run). With ``--overwrite`` the earlier files this run replaces (its ``.npz`` names and ``slices.csv``) are
first moved aside into that hidden folder and moved back if anything fails before the new ``slices.csv`` is in
place (Ctrl-C included), so ``<out>`` holds either the old set or the new one, never new slices under the old
index; the old files are deleted only after success. If one cannot be moved back, the error names the hidden
folder that keeps it. A process killed outright (SIGKILL, power loss) leaves the hidden ``.<out>.tmp-<8 hex>``
folder next to ``<out>``: the next run on ``<out>`` moves the earlier files back from it and deletes it before it
checks anything (:func:`mednet.file_sets.recover_replacements`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from mednet.data.datalist import SPLITS, load_datalist
from mednet.errors import DataError, OptionError
from mednet.data.naming import with_names
from mednet.data.slicing import slice_volume
from mednet.data.transforms import LoadLabelledVolumed
from mednet.file_sets import recover_replacements, replace_files
from mednet.io import refuse_existing

__all__ = ["slice_datalist"]

logger = logging.getLogger("mednet")


def _listed_files(index_csv: Path, out_dir: Path) -> list[Path]:
    """The files (relative to ``out_dir``) of the earlier set that ``index_csv`` lists: ``--overwrite`` retires
    them all, so slices of another axis or of volumes no longer in the datalist do not stay beside the new set
    (``slices.csv`` would not list them, but a glob of ``*.npz`` would mix them in). An index that cannot be read
    retires only the files of the same names (logged)."""
    if not index_csv.is_file():
        return []
    try:
        with open(index_csv, newline="", encoding="utf-8") as f:
            listed = {row.get("file") or "" for row in csv.DictReader(f)}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        logger.warning("%s: cannot read the earlier index (%s); --overwrite replaces only files of the same names",
                       index_csv, e)
        return []
    root, rels = out_dir.resolve(), []
    for name in sorted(listed - {""}):
        try:
            rels.append(Path(name).resolve().relative_to(root))
        except ValueError:  # outside out: never another folder's file
            continue
    return rels


def slice_datalist(
    datalist: str, out: str, split: str | None = None, axis: int = -1, drop_empty: bool = False, overwrite: bool = False,
    intensity_normalization: str = "histogram", bias_correction: str = "n4",
) -> Path:
    """Slice every volume of ``split`` (or of all splits) of ``datalist`` into ``out``; returns the CSV path.

    Volumes get the bundle's preprocessing (:class:`~mednet.data.transforms.LoadLabelledVolumed` with
    ``intensity_normalization`` and ``bias_correction``).
    """
    out_dir = Path(out)
    index_csv = out_dir / "slices.csv"
    if isinstance(axis, bool) or axis not in (-3, -2, -1, 0, 1, 2):
        raise OptionError({"--axis": f"slice axis must be 0, 1 or 2 (or -1), got {axis!r}"})
    axis = int(axis) % 3
    recover_replacements(out_dir)  # a run killed while replacing the set: its earlier files back, before any check
    splits = [split] if split else [s for s in SPLITS if load_datalist(datalist, s, required=False)]
    plan = [(s, item, Path(s) / f"{item['name']}_axis{axis}.npz")
            for s in splits for item in with_names(load_datalist(datalist, s))]
    # every output is refused up front, before hours of work (not at the first volume already written)
    refuse_existing(index_csv, *(out_dir / rel for _, _, rel in plan), overwrite=overwrite)
    load = LoadLabelledVolumed(intensity_normalization=intensity_normalization, bias_correction=bias_correction)
    # The new set (per-volume files and slices.csv) is staged whole in a hidden folder next to ``out`` and only then
    # replaces the files it retires (with --overwrite: its .npz names and slices.csv), index last
    # (:func:`mednet.file_sets.replace_files`): a failure (a bad volume, Ctrl-C, a failed move) leaves ``out`` as it was.
    retired = ([index_csv.relative_to(out_dir), *(rel for _, _, rel in plan), *_listed_files(index_csv, out_dir)]
               if overwrite else [])
    with replace_files(out_dir, old=retired, last=index_csv.name) as staging:
        rows = []
        for s, item, rel in plan:
            d = load(item)
            stack = slice_volume(d["image"], d.get("label"), axis=axis, drop_empty=drop_empty, source=item["image"])
            path = out_dir / rel
            arrays = {"images": stack.images, "indices": stack.indices, "axis": np.asarray(stack.axis),
                      "source": np.asarray(str(item["image"])), "volume_shape": np.asarray(stack.volume_shape)}
            if stack.labels is not None:
                arrays["labels"] = stack.labels
            staged = staging / rel
            staged.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(staged, **arrays)  # staged ends in .npz: NumPy adds no suffix
            fg = (stack.labels > 0) if stack.labels is not None else (stack.images != 0)
            fg_pixels = fg.reshape(len(stack), -1).sum(axis=1)
            rows += [{"split": s, "volume": item["image"], "name": item["name"], "axis": stack.axis, "index": int(i),
                      "file": str(path), "foreground_pixels": int(n)} for i, n in zip(stack.indices, fg_pixels)]
            print(f"{path}: {len(stack)} slices of {stack.images.shape[1:]} along axis {stack.axis}")
        if not rows:
            raise DataError(datalist, f"no slices to write (split {split or 'all'}{', --drop_empty' if drop_empty else ''})")
        with open(staging / index_csv.name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(f"wrote {len(rows)} slices; index {index_csv}")
    return index_csv
