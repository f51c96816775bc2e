"""Extract class-balanced 2D training patches (or grid patches) from a datalist split.

    python -m data_prep.patches --datalist demo/cohort/datalist.json --out demo/patches [--split training]
        [--patch_size 16] [--stride 1] [--min_pixels 8] [--max_background 0] [--max_patches_per_volume N] [--no-balance] [--seed 0]
        [--views 0,1,2] [--intensity_normalization histogram|scale|zscore] [--bias_correction n4|none] [--overwrite]
    python -m data_prep.patches --datalist demo/cohort/datalist.json --out demo/patches --grid --split test [--axis -1]

Training mode (default) keeps overlapping windows with no background pixel (at most ``max_background``, a count
or fraction, if given) and at least ``min_pixels``
(a count, or a fraction of the window if < 1) of each of CSF/GM/WM, then balances the class shares.
Patches are cut from slices along each of ``--views`` (default all three orthogonal planes; ``--views 2`` is the
course exercise's axial-only setup), the per-volume cap shared by the views.
Writes ``<out>/patches_<split>.npz`` (images, labels, positions = volume/axis/slice/row/col, volumes, axes),
``<out>/stats_<split>.json`` and ``<out>/stats_<split>.csv`` (class pixel distribution before = all brain
pixels, and after = kept patches), and prints the distribution.

``--grid`` instead cuts every slice into non-overlapping ``patch_size`` grid patches covering the whole slice
(validation/test protocol of the course exercise) with their positions, for reassembly.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from mednet.data.datalist import load_datalist
from mednet.data.datasets import CohortPatches, extract_cohort_patches
from mednet.errors import DataError, OptionError
from mednet.io import atomic_path, refuse_existing
from mednet.data.tissue_labels import TISSUE_NAMES
from mednet.data.patches import grid_patches
from mednet.data.slicing import slice_volume
from mednet.data.transforms import LoadLabelledVolumed

__all__ = ["write_patches", "write_grid_patches"]


def _check_all_or_no_labels(items: list[dict], split: str) -> None:
    """Raise :class:`DataError` if only some volumes of ``split`` have a ``label``.

    Grid patches of unlabelled volumes have no label rows, so a mixed split would store more images than labels
    and pair every later volume's images with another volume's labels.
    """
    unlabelled = [item["image"] for item in items if not item.get("label")]
    if unlabelled and len(unlabelled) < len(items):
        more = f" (and {len(unlabelled) - 1} other volume(s))" if len(unlabelled) > 1 else ""
        raise DataError(unlabelled[0], f"has no label{more}, but {len(items) - len(unlabelled)} other volume(s) of "
                                       f"split '{split}' have one; grid patches need labels on all volumes of the "
                                       "split or on none: add the missing labels or remove them all")


def _labels_inside_mask(d: dict, source: str) -> None:
    """Set ``d["label"]`` to background (0) wherever ``d["mask"]`` is off, warning with the count, in place.

    The rule of :func:`mednet.data.datasets.extract_cohort_patches`: the image is 0 outside the brain mask, so
    tissue labels there would pair zeroed intensities with tissue; inference predicts background there.
    """
    if d.get("label") is None:
        return
    outside = int(((d["label"] > 0) & ~d["mask"]).sum())
    if outside:
        d["label"] = d["label"] * d["mask"]
        logging.getLogger("mednet").warning(
            f"{source}: {outside} labelled tissue voxel(s) lie outside the brain mask; used as background")


def write_grid_patches(datalist: str, out: str, split: str = "validation", patch_size: int = 16, axis: int = -1,
                       overwrite: bool = False, intensity_normalization: str = "histogram",
                       bias_correction: str = "n4") -> Path:
    """Non-overlapping grid patches of every slice of every volume in ``split``; one ``.npz``.

    The file holds ``images`` ``(N, P, P)``, ``positions`` ``(N, 4)`` ``(volume, slice, row, col)``, ``volumes``,
    ``slice_stack_shapes``, ``axis`` and, when the split is labelled, ``labels`` ``(N, P, P)`` aligned with
    ``images`` row for row. Labels outside the brain mask are background (0), as in the training patches of
    :func:`~mednet.data.datasets.extract_cohort_patches` (a warning gives their count per volume).

    Raises:
        DataError: naming the first unlabelled volume when only some volumes of ``split`` have a label (their
            patches could not be aligned with the labels).
    """
    path = Path(out) / f"grid_{split}.npz"
    refuse_existing(path, overwrite=overwrite)
    items = load_datalist(datalist, split)
    _check_all_or_no_labels(items, split)
    load = LoadLabelledVolumed(intensity_normalization=intensity_normalization, bias_correction=bias_correction)
    images, labels, positions, volumes, shapes = [], [], [], [], []
    for v, item in enumerate(items):
        d = load(item)
        _labels_inside_mask(d, item["image"])
        stack = slice_volume(d["image"], d.get("label"), axis=axis, source=item["image"])
        grid = grid_patches(stack.images, stack.labels, patch_size=patch_size)
        images.append(grid.images)
        if grid.labels is not None:
            labels.append(grid.labels)
        positions.append(np.concatenate([np.full((len(grid.positions), 1), v, np.int32),
                                         np.asarray(grid.positions, np.int32)], axis=1))
        volumes.append(str(item["image"]))
        shapes.append(stack.images.shape)
    arrays = {"images": np.concatenate(images), "positions": np.concatenate(positions),
              "volumes": np.asarray(volumes), "slice_stack_shapes": np.asarray(shapes), "axis": np.asarray(axis)}
    if labels:
        arrays["labels"] = np.concatenate(labels)
    with atomic_path(path, overwrite=overwrite) as tmp:  # tmp ends in .npz: NumPy adds no suffix
        np.savez_compressed(tmp, **arrays)
    print(f"wrote {len(arrays['images'])} grid patches of {patch_size}x{patch_size} from {len(volumes)} volume(s) to {path}")
    return path


def _whole(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_patch_options(*, patch_size: object, stride: object, min_pixels: object, max_background: object,
                         max_patches_per_volume: object, max_per_volume: object, views: object) -> None:
    """Refuse bad numbers naming the option, before any volume is read (N4 on a volume takes seconds): they used to
    reach the patch filter as a traceback about an internal per-view value, and a cap of 0 wrote an empty file that
    training then refused without naming it. The bundle's own option rules give the same ranges."""
    problems = {}
    for flag, value in (("--patch_size", patch_size), ("--stride", stride)):
        if not _whole(value) or value < 1:
            problems[flag] = f"must be a whole number >= 1, got {value!r}"
    for flag, value in (("--max_patches_per_volume", max_patches_per_volume), ("--max_per_volume", max_per_volume)):
        if value is not None and (not _whole(value) or value < 1):
            problems[flag] = f"must be a whole number >= 1 (or None: no cap), got {value!r}"
    for flag, value in (("--min_pixels", min_pixels), ("--max_background", max_background)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < float("inf"):
            problems[flag] = f"must be a number >= 0 (a count, or a fraction of the window if < 1), got {value!r}"
    chosen = views if isinstance(views, (tuple, list)) else (views,)
    if not chosen or any(not _whole(v) or v not in (0, 1, 2) for v in chosen):
        problems["--views"] = f"must be axes among 0, 1, 2 (e.g. 2, or 0,1,2), got {views!r}"
    if problems:
        raise OptionError(problems)


def write_patches(
    datalist: str,
    out: str,
    split: str = "training",
    patch_size: int = 16,
    stride: int = 1,
    min_pixels: float = 8,
    max_background: float = 0,
    max_patches_per_volume: int | None = None,
    balance: bool = True,
    seed: int = 0,
    views: int | tuple[int, ...] = (0, 1, 2),
    grid: bool = False,
    axis: int = -1,
    overwrite: bool = False,
    intensity_normalization: str = "histogram",
    bias_correction: str = "n4",
    max_per_volume: int | None = None,
) -> Path:
    """Balanced training patches along ``views`` (or ``grid`` patches along ``axis``) of ``split``; returns the ``.npz`` path.

    ``max_patches_per_volume`` is the bundle's option of the same name (the cap shared by the views);
    ``max_per_volume`` is its earlier spelling, still accepted.

    ``intensity_normalization`` (``scale``, ``histogram`` or ``zscore``) and ``bias_correction`` (``n4`` or
    ``none``) must match the bundle's ``--intensity_normalization`` / ``--bias_correction`` when the patches are
    used for training.
    """
    _check_patch_options(patch_size=patch_size, stride=stride, min_pixels=min_pixels, max_background=max_background,
                         max_patches_per_volume=max_patches_per_volume, max_per_volume=max_per_volume, views=views)
    if max_per_volume is not None:
        if max_patches_per_volume is not None and max_patches_per_volume != max_per_volume:
            raise OptionError({"--max_per_volume": f"{max_per_volume} disagrees with --max_patches_per_volume "
                                                   f"{max_patches_per_volume}: they are the same option (give "
                                                   "--max_patches_per_volume only)"})
        max_patches_per_volume = max_per_volume
    if grid:
        return write_grid_patches(datalist, out, split, patch_size, axis, overwrite, intensity_normalization,
                                  bias_correction)
    out_dir = Path(out)
    npz, js, cs = (out_dir / f"{stem}_{split}.{ext}" for stem, ext in (("patches", "npz"), ("stats", "json"), ("stats", "csv")))
    refuse_existing(npz, js, cs, overwrite=overwrite)
    patches: CohortPatches = extract_cohort_patches(
        datalist, split=split, views=views, patch_size=patch_size, stride=stride,
        min_pixels=min_pixels, max_background=max_background,  # as given: read exactly as the bundle reads them
        max_per_volume=max_patches_per_volume, balance=balance, seed=seed, intensity_normalization=intensity_normalization,
        bias_correction=bias_correction,
    )
    with atomic_path(npz, overwrite=overwrite) as tmp:  # tmp ends in .npz: NumPy adds no suffix
        patches.save(tmp)
    with atomic_path(js, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(patches.stats, indent=2) + "\n", encoding="utf-8")
    with atomic_path(cs, overwrite=overwrite) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["stage", "class", "pixels", "share"])
        for stage in ("before", "after"):
            for name in TISSUE_NAMES:
                w.writerow([stage, name, patches.stats[stage][name]["pixels"], round(patches.stats[stage][name]["share"], 4)])
    fmt = lambda stage: " / ".join(f"{patches.stats[stage][n]['share']:.1%}" for n in TISSUE_NAMES)  # noqa: E731
    print(f"{len(patches)} patches of {patch_size}x{patch_size} from {len(patches.volumes)} volume(s), views {patches.views} -> {npz}")
    print(f"class shares CSF/GM/WM before (all brain pixels): {fmt('before')}")
    print(f"class shares CSF/GM/WM after (kept patches):      {fmt('after')}")
    print(f"stats: {js}, {cs}")
    return npz
