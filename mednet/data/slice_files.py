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
``--overwrite``; every output is checked before the first volume is loaded. The per-volume files are written to a
hidden staging folder next to ``<out>`` and moved into place only after every volume succeeded, so a failed run
leaves no outputs behind (and does not block its re-run). With ``--overwrite`` the earlier files this run
replaces (its ``.npz`` names and ``slices.csv``) are first moved aside to a second hidden folder next to ``<out>``
and moved back if anything fails before the new ``slices.csv`` is in place, so ``<out>`` holds either the old
set or the new one, never new slices under the old index; the old files are deleted only after success. A process
killed outright (SIGKILL, power loss) in between cannot move them back: they are then in the hidden
``.<out>.tmp-*-replaced`` folder next to ``<out>``, never deleted.
"""

from __future__ import annotations

import csv
import logging
import secrets
import shutil
from pathlib import Path

import numpy as np

from mednet.data.datalist import SPLITS, load_datalist
from mednet.errors import DataError, OptionError
from mednet.data.naming import with_names
from mednet.data.slicing import slice_volume
from mednet.data.transforms import LoadLabelledVolumed
from mednet.io import TEMP_MARKER, atomic_path, refuse_existing

__all__ = ["slice_datalist"]


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
    splits = [split] if split else [s for s in SPLITS if load_datalist(datalist, s, required=False)]
    plan = [(s, item, Path(s) / f"{item['name']}_axis{axis}.npz")
            for s in splits for item in with_names(load_datalist(datalist, s))]
    # every output is refused up front, before hours of work (not at the first volume already written)
    refuse_existing(index_csv, *(out_dir / rel for _, _, rel in plan), overwrite=overwrite)
    load = LoadLabelledVolumed(intensity_normalization=intensity_normalization, bias_correction=bias_correction)
    # Per-volume files go to a hidden staging folder next to ``out`` and move into place only once every volume
    # succeeded: a failure (a bad volume, Ctrl-C) leaves no partial set of .npz files without slices.csv, and the
    # re-run is not refused on them.
    target = out_dir.resolve()
    token = secrets.token_hex(4)
    staging = target.parent / f".{target.name}{TEMP_MARKER}{token}"
    # with --overwrite: the earlier outputs this run replaces, moved here before the first new file goes in place
    replaced_dir = target.parent / f".{target.name}{TEMP_MARKER}{token}-replaced"
    moved: list[Path] = []
    replaced: list[tuple[Path, Path]] = []  # (output, where its earlier version waits)
    restored = True
    try:
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
        if overwrite:  # the earlier set goes aside whole (index first), to come back whole if a move fails
            for rel in [index_csv.relative_to(out_dir)] + [rel for _, _, rel in plan]:
                if (out_dir / rel).exists():
                    (replaced_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(out_dir / rel, replaced_dir / rel)
                    replaced.append((out_dir / rel, replaced_dir / rel))
        for _, _, rel in plan:
            with atomic_path(out_dir / rel, overwrite=False) as tmp:  # refuses a file that appeared meanwhile
                shutil.move(staging / rel, tmp)  # a rename, or a copy if ``out`` is on another file system
            moved.append(out_dir / rel)
        with atomic_path(index_csv, overwrite=False) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    except BaseException:
        for path in moved:  # files this run put in place
            path.unlink(missing_ok=True)
        restored = _restore(replaced, replaced_dir)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if restored:  # after success the earlier versions are no longer needed; after a failure they are back
            shutil.rmtree(replaced_dir, ignore_errors=True)
    print(f"wrote {len(rows)} slices; index {index_csv}")
    return index_csv


def _restore(replaced: list[tuple[Path, Path]], replaced_dir: Path) -> bool:
    """Move the earlier outputs set aside by an ``--overwrite`` run back in place; True if all came back.

    A file that cannot be moved back is logged with the hidden folder it stays in, and that folder is kept.
    """
    ok = True
    for path, aside in reversed(replaced):
        try:
            shutil.move(aside, path)
        except Exception as e:  # keep restoring the others; the caller re-raises the original error
            ok = False
            logging.getLogger("mednet").error(f"{path}: could not restore the earlier version ({e}); it is in {aside}")
    if not ok:
        logging.getLogger("mednet").error(f"{replaced_dir}: earlier slice files kept here; move them back by hand")
    return ok
