"""Datasets the brain bundle reads: balanced 2D training patches and whole labelled volumes.

* :func:`extract_cohort_patches` runs load → RAS → brain intensity normalisation → slice (along one or several
  axes) → balanced patch filter over every volume of a datalist split, keeping provenance
  ``(volume, axis, slice, row, col)`` and the class distribution before/after. :class:`CohortPatches` is that result; it saves to / loads from one compact ``.npz``.
* :class:`PatchDataset` serves it to a DataLoader as ``{"image": (1, P, P) float32, "label": (1, P, P) int64}``
  with label values 0–2 = CSF/GM/WM and −1 = background (present only when patches were extracted with
  ``max_background > 0``; the loss ignores it).
* :func:`volume_dataset` is a MONAI ``Dataset``/``CacheDataset`` of whole volumes for validation, evaluation
  and inference (see :class:`mednet.data.transforms.LoadLabelledVolumed`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, Dataset
from tqdm.auto import tqdm

from mednet.data.datalist import load_datalist
from mednet.errors import DataError
from mednet.io import atomic_path, refuse_existing
from mednet.data.tissue_labels import TISSUE_LABELS, TISSUE_NAMES
from mednet.data.naming import with_names
from mednet.data.patches import class_distribution, extract_balanced_patches
from mednet.data.slicing import slice_volume
from mednet.data.transforms import LoadLabelledVolumed

__all__ = ["CohortPatches", "check_patch_params", "check_patch_source", "extract_cohort_patches", "PatchDataset", "volume_dataset"]


@dataclass
class CohortPatches:
    """Balanced patches of several volumes.

    Attributes:
        images: ``(N, P, P)`` float32 (brain-normalised intensities).
        labels: ``(N, P, P)`` uint8, values 1–3 (and 0 where ``max_background`` allowed background).
        positions: ``(N, 5)`` int32 ``(volume, axis, slice, row, col)``; ``volume`` indexes ``volumes``, ``axis``
            is the slicing axis (0–2) of the RAS-oriented volume the patch was cut from.
        volumes: source image path of each volume.
        views: the slicing axes (planes) patches were extracted along — the planes the network is trained on
            (stored as ``axes`` in the ``.npz``).
        stats: ``{"before": {...}, "after": {...}, "per_volume": [...], "params": {...}}``.
    """

    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    volumes: list[str]
    views: list[int]
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write one compressed ``.npz`` (refused if it exists unless ``overwrite``)."""
        path = Path(path)
        refuse_existing(path, overwrite=overwrite)
        with atomic_path(path, overwrite=overwrite) as tmp:  # never a half-written file; tmp ends in .npz
            np.savez_compressed(
                tmp,
                images=self.images,
                labels=self.labels,
                positions=self.positions,
                volumes=np.asarray(self.volumes),
                axes=np.asarray(self.views, dtype=np.int32),
                stats=np.asarray(json.dumps(self.stats)),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CohortPatches:
        """Read a file written by :meth:`save`; DataError naming the file if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "patch file does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"images", "labels", "positions", "volumes", "axes"} - set(z.files)
                if missing:
                    raise DataError(path, f"not a mednet patch file (missing arrays {sorted(missing)})")
                out = cls(
                    images=z["images"].astype(np.float32, copy=False),
                    labels=z["labels"],
                    positions=z["positions"],
                    volumes=[str(v) for v in z["volumes"]],
                    views=[int(a) for a in np.atleast_1d(z["axes"])],
                    stats=json.loads(str(z["stats"])) if "stats" in z.files else {},
                )
        except DataError:
            raise
        except Exception as e:
            raise DataError(path, f"cannot read patch file ({type(e).__name__}: {e})") from e
        if out.images.shape != out.labels.shape or out.images.ndim != 3:
            raise DataError(path, f"images {out.images.shape} and labels {out.labels.shape} must both be (N, P, P)")
        if out.positions.shape != (len(out.images), 5):
            raise DataError(path, f"positions must be (N, 5) (volume, axis, slice, row, col), got {out.positions.shape}")
        return out


def check_patch_params(patches: CohortPatches, source: str | os.PathLike | None = None, **expected: object) -> CohortPatches:
    """Return ``patches`` if they were extracted with ``expected`` parameters (e.g. ``intensity_normalization``, ``views``).

    Patches prepared with ``python -m data_prep.patches`` under another preprocessing than the training run's
    would train a network on intensities it never sees at inference. Parameters absent from the file's stats
    (older files) are not checked.

    Raises:
        DataError: naming the patch file, each differing parameter and both values.
    """
    params = dict(patches.stats.get("params", {}))
    for old, new in (("axes", "views"), ("normalize", "intensity_normalization")):  # names before mednet 0.1 issue 8
        if old in params and new not in params:
            params[new] = params[old]
    differ = {k: (params[k], v) for k, v in expected.items()
              if k in params and (list(params[k]) if isinstance(params[k], (list, tuple)) else params[k])
              != (list(v) if isinstance(v, (list, tuple)) else v)}
    if differ:
        said = ", ".join(f"{k}={a!r} (this run: {b!r})" for k, (a, b) in differ.items())
        raise DataError(source, f"patches were extracted with {said}; extract them again with the run's settings "
                                "or change the run's options to match")
    return patches


def check_patch_source(patches: CohortPatches, source: str | os.PathLike | None, datalist: str | os.PathLike,
                       split: str = "training") -> CohortPatches:
    """Return ``patches`` if they were extracted from ``split`` of ``datalist``: every volume they come from is one
    of that split's images (compared as files: links resolved).

    A prepared patch file is chosen by hand (``--patches_file``); one made from the validation split, or from
    another cohort, would otherwise train on the volumes that select the model, or on data the run's records do
    not name. Files without per-volume stats (older files) are checked by their recorded split only.

    Raises:
        DataError: naming the patch file and the first volume that is not in ``split`` (and where it is instead).
    """
    recorded = patches.stats.get("params", {}).get("split")
    if recorded is not None and recorded != split:
        raise DataError(source, f"patches were extracted from the '{recorded}' split; a training run needs the "
                                f"'{split}' split's patches (python -m data_prep.patches --split {split})")
    volumes = [v["volume"] for v in patches.stats.get("per_volume", []) if isinstance(v, Mapping) and "volume" in v]
    if not volumes:
        return patches
    where = {os.path.realpath(item["image"]): name for name in ("training", "validation", "test")
             for item in load_datalist(datalist, name, required=False)}
    for volume in volumes:
        found = where.get(os.path.realpath(volume))
        if found != split:
            place = f"its '{found}' split" if found else "no split"
            raise DataError(source, f"patches come from {volume}, which is in {place} of {datalist}, not in "
                                    f"'{split}'; extract them from this datalist (python -m data_prep.patches)")
    return patches


def _shares_table(dist: Mapping) -> dict:
    return {name: {"pixels": int(dist["counts"][i]), "share": float(dist["shares"][i])} for i, name in enumerate(TISSUE_NAMES)}


def extract_cohort_patches(
    items: Sequence[Mapping[str, str]] | str | os.PathLike,
    split: str = "training",
    views: int | Sequence[int] = (0, 1, 2),
    patch_size: int = 16,
    stride: int = 1,
    min_pixels: int | float = 8,
    max_per_volume: int | None = None,
    balance: bool = True,
    seed: int = 0,
    progress: bool = True,
    intensity_normalization: str = "histogram",
    max_background: int | float = 0,
    bias_correction: str = "n4",
) -> CohortPatches:
    """Balanced patches from every labelled volume of ``items`` (or of ``split`` of a datalist path).

    Volumes are loaded with all checks (bad files raise :class:`DataError` naming them), oriented to RAS,
    normalised over the brain, sliced along each of ``views`` and filtered by
    :func:`mednet.data.patches.extract_balanced_patches` (no background, ≥ ``min_pixels`` of each class).

    Args:
        views: slicing axis (plane), or several: patches of all three orthogonal planes (the default) train one 2D
            network for multi-view inference (:class:`mednet.inference.ViewAggregationInferer`).
        max_per_volume: cap per volume, shared equally by the views (rounded up per view: the total may exceed it by
            at most one patch per view; it does not grow with the number of views).
        intensity_normalization, bias_correction: preprocessing of :class:`~mednet.data.transforms.LoadLabelledVolumed`
            (must be the one evaluation and inference use).
    """
    if isinstance(items, (str, os.PathLike)):
        items = load_datalist(items, split)
    if not items:
        raise DataError(None, f"no volumes in split '{split}'")
    views = _check_views(views)
    # the cap shared by the views, rounded up per view (2000 over 3 views: 667 each, 2001 at most). Kept as it is:
    # an exact split draws other patches, and every documented number of the main job would change (measured: the
    # patch draw alone moves validation Dice by 0.015, see the brain bundle docs)
    per_view_cap = None if max_per_volume is None else -(-int(max_per_volume) // len(views))
    caps = [per_view_cap] * len(views)
    load = LoadLabelledVolumed(intensity_normalization=intensity_normalization, allow_missing_label=False, bias_correction=bias_correction)
    images, labels, positions, volumes, per_volume = [], [], [], [], []
    before_counts = np.zeros(len(TISSUE_LABELS), dtype=np.int64)
    for v, item in enumerate(tqdm(items, desc=f"patches ({split})", disable=not progress, leave=False)):
        d = load(item)
        volumes.append(str(item["image"]))
        # every voxel outside the brain mask is background (as in evaluation and inference); tissue labels there
        # sit on zeroed intensities and would teach the network that "0" can be tissue
        outside = int(((d["label"] > 0) & ~d["mask"]).sum())
        if outside:
            d["label"] = d["label"] * d["mask"]
            logging.getLogger("mednet").warning(
                f"{item['image']}: {outside} labelled tissue voxel(s) lie outside the brain mask; used as background")
        before_counts += np.asarray(class_distribution(d["label"].numpy())["counts"], dtype=np.int64)
        for k, axis in enumerate(views):
            stack = slice_volume(d["image"], d["label"], axis=axis, drop_empty=True, source=item["image"])
            ps = extract_balanced_patches(
                stack.images,
                stack.labels,
                patch_size=patch_size,
                stride=stride,
                min_pixels=min_pixels,
                max_patches=caps[k],
                balance=balance,
                seed=seed + v + 1000 * k,
                source=item["image"],
                max_background=max_background,
            )
            pos = np.asarray(ps.positions, dtype=np.int32).copy()
            pos[:, 0] = stack.indices[pos[:, 0]]  # slice number in the volume, not in the kept stack
            images.append(ps.images)
            labels.append(ps.labels)
            head = np.tile(np.asarray([[v, axis]], np.int32), (len(pos), 1))
            positions.append(np.concatenate([head, pos], axis=1))
            per_volume.append({"volume": str(item["image"]), "axis": axis, "patches": len(ps.images),
                               "tissue_voxels_outside_mask": outside,
                               "before": _shares_table(class_distribution(stack.labels)),
                               "after": _shares_table(class_distribution(ps.labels))})
    out_labels = np.concatenate(labels)
    after_all = class_distribution(out_labels)
    total_before = before_counts.sum()
    stats = {
        "params": {"split": split, "views": views, "patch_size": patch_size, "stride": stride,
                   "min_pixels": min_pixels, "max_per_volume": max_per_volume, "balance": balance, "seed": seed,
                   "intensity_normalization": intensity_normalization, "max_background": max_background, "bias_correction": bias_correction},
        "patches": int(len(out_labels)),
        "before": {n: {"pixels": int(before_counts[i]), "share": float(before_counts[i] / max(total_before, 1))}
                   for i, n in enumerate(TISSUE_NAMES)},
        "after": _shares_table(after_all),
        "per_volume": per_volume,
    }
    return CohortPatches(
        images=np.concatenate(images), labels=out_labels, positions=np.concatenate(positions),
        volumes=volumes, views=views, stats=stats,
    )


def _check_views(views: int | Sequence[int]) -> list[int]:
    """``-1`` / ``2`` / ``(0, 1, 2)`` → distinct axes in 0–2 (negative axes count from the end)."""
    seq = [views] if isinstance(views, (int, np.integer)) else list(views)
    if not seq:
        raise ValueError("at least one slicing axis is needed")
    out = []
    for a in seq:
        if int(a) not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"slicing axis {a} is not one of the three spatial axes (0, 1, 2 or -3..-1)")
        if int(a) % 3 in out:
            raise ValueError(f"slicing axis {a} given twice in {seq}")
        out.append(int(a) % 3)
    return out


class PatchDataset(torch.utils.data.Dataset):
    """In-memory training patches: item ``i`` is ``{"image": (1, P, P) float32, "label": (1, P, P) int64}``.

    Labels are tissue indices 0–2 (label value − 1), the targets of a 3-channel network; background pixels
    (allowed by ``max_background``) become −1, which :func:`mednet.losses.tissue_loss` ignores.

    Args:
        patches: a :class:`CohortPatches`, or the path of a ``.npz`` written by ``python -m data_prep.patches``.
        transform: optional (random) dictionary transform applied to each item, e.g. MONAI flips and intensity
            augmentation.
    """

    def __init__(self, patches: CohortPatches | str | os.PathLike, transform: Callable | None = None) -> None:
        self.patches = patches if isinstance(patches, CohortPatches) else CohortPatches.load(patches)
        self.transform = transform
        if len(self.patches) == 0:
            raise DataError(None, "no training patches")
        self.images = torch.from_numpy(np.ascontiguousarray(self.patches.images, dtype=np.float32))[:, None]
        self.labels = torch.from_numpy(self.patches.labels.astype(np.int64) - 1)[:, None]

    @classmethod
    def from_datalist(cls, datalist: str | os.PathLike, split: str = "training", **kwargs) -> PatchDataset:
        """Extract balanced patches from ``split`` of ``datalist`` (kwargs: see :func:`extract_cohort_patches`)."""
        return cls(extract_cohort_patches(datalist, split=split, **kwargs))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": self.images[i], "label": self.labels[i]}
        return self.transform(item) if self.transform is not None else item


def volume_dataset(
    items: Sequence[Mapping[str, str]] | str | os.PathLike,
    split: str = "validation",
    cache: bool = False,
    require_label: bool = True,
    intensity_normalization: str = "histogram",
    bias_correction: str = "n4",
) -> Dataset:
    """MONAI dataset of whole volumes: each item is :class:`LoadLabelledVolumed`'s output.

    Every item carries ``"name"``, its output name (:func:`mednet.data.naming.with_names`, set once for the
    whole list: ``subA_T1`` / ``subB_T1`` when two inputs are called ``T1.nii.gz``), which the writers of
    predictions, figures and per-volume rows use instead of the file name.

    Args:
        items: datalist entries, or a datalist path (then ``split`` is read; an empty split is an error).
        cache: keep loaded volumes in memory (validation every epoch re-reads nothing).
        require_label: every volume must have a label (validation/evaluation); False for inference.
        normalize: intensity normalisation mode (see :func:`mednet.data.volumes.normalize_brain_intensity`);
            must be the one the network was trained with.
        bias_correction: ``"n4"`` or ``"none"`` (:mod:`mednet.data.bias_field`); as in training.
    """
    if isinstance(items, (str, os.PathLike)):
        items = load_datalist(items, split)
    if not items:
        raise DataError(None, f"no volumes in split '{split}'")
    items = with_names(items)
    transform = LoadLabelledVolumed(intensity_normalization=intensity_normalization, allow_missing_label=not require_label,
                                    bias_correction=bias_correction)
    if cache:
        return CacheDataset(list(items), transform=transform, num_workers=0, progress=False)
    return Dataset(list(items), transform=transform)
