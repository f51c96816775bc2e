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
``--overwrite``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mednet.data.datalist import SPLITS, load_datalist
from mednet.errors import DataError
from mednet.data.naming import with_names
from mednet.data.slicing import slice_volume
from mednet.data.transforms import LoadLabelledVolumed
from mednet.io import atomic_path, refuse_existing

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
    refuse_existing(index_csv, overwrite=overwrite)
    splits = [split] if split else [s for s in SPLITS if load_datalist(datalist, s, required=False)]
    load = LoadLabelledVolumed(intensity_normalization=intensity_normalization, bias_correction=bias_correction)
    rows = []
    for s in splits:
        for item in with_names(load_datalist(datalist, s)):
            d = load(item)
            stack = slice_volume(d["image"], d.get("label"), axis=axis, drop_empty=drop_empty, source=item["image"])
            path = out_dir / s / f"{item['name']}_axis{stack.axis}.npz"
            arrays = {"images": stack.images, "indices": stack.indices, "axis": np.asarray(stack.axis),
                      "source": np.asarray(str(item["image"])), "volume_shape": np.asarray(stack.volume_shape)}
            if stack.labels is not None:
                arrays["labels"] = stack.labels
            with atomic_path(path, overwrite=overwrite) as tmp:  # tmp ends in .npz: NumPy adds no suffix
                np.savez_compressed(tmp, **arrays)
            fg = (stack.labels > 0) if stack.labels is not None else (stack.images != 0)
            fg_pixels = fg.reshape(len(stack), -1).sum(axis=1)
            rows += [{"split": s, "volume": item["image"], "name": item["name"], "axis": stack.axis, "index": int(i),
                      "file": str(path), "foreground_pixels": int(n)} for i, n in zip(stack.indices, fg_pixels)]
            print(f"{path}: {len(stack)} slices of {stack.images.shape[1:]} along axis {stack.axis}")
    with atomic_path(index_csv, overwrite=overwrite) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} slices; index {index_csv}")
    return index_csv
