"""Dermoscopy images as a training/evaluation dataset: decode once, per-image augmentation, normalisation.

A split table (:func:`mednet.data.lesion_split.load_split_table`: ``image_id, lesion_id, dx, path[, cache_path],
split``) becomes a :class:`LesionImageDataset` of items ``{"image": (3, S, S) float32, "label": int64,
"image_id": str, "path": str}``:

1. **decode once**: each image is decoded (:func:`mednet.data.dermoscopy.load_rgb`: JPEG/PNG/DICOM, grey/RGBA/
   16-bit converted) and centre-cropped/resized to ``S × S`` (:func:`~mednet.data.dermoscopy.resize_center_crop`)
   the first time it is read — or read from the on-disk resized cache written by ``data_prep.dermoscopy
   --cache_size S`` — and kept as ``uint8`` in memory (``S = 64``: 12 KiB an image, 120 MiB for all of HAM10000;
   ``cache=False`` for large sizes). Decoding a 600×450 JPEG costs ~4 ms, far more than a training step per image
   at 64 px, so without this the loader starves training (measured in ``benchmarks/bench_dermoscopy_throughput.py``).
2. **per-image augmentation** (training only; torchvision ``transforms.v2`` on ``uint8`` tensors): random resized
   crop (scale 0.6–1), horizontal and vertical flips, rotation ±20°, colour jitter with factors *around 1*
   (brightness/contrast/saturation 0.8–1.2 — the dissertation's ``(0.01, 0.1)`` ranges are factor ranges that turn
   images near-black). No hue jitter: at 64 px it costs 0.65 ms an image (measured, one core: RGB→HSV and back),
   more than the rest of the per-image pipeline, and would make the loader the bottleneck of the small CNN. ``augmix``: torchvision ``AugMix`` (with the Jensen–Shannon loss, the item's
   image is ``(3, 3, S, S)``: clean and two AugMix views, see :class:`mednet.losses.classification.AugMixConsistency`).
3. **normalisation** by the *training split's* per-channel mean and std (:func:`channel_statistics`), recorded in
   the run's ``settings.json`` so evaluation and inference repeat it.
4. ``cutout`` (DeVries & Taylor 2017): MONAI ``RandCoarseDropout``, 2 holes of ``8 × S/32`` px filled with 0
   (= the training mean after normalisation), after normalisation as in the paper's code; seeded by the run's
   ``--seed`` through its own random state (MONAI's shared one ignores ``set_determinism``), reseeded per worker.

MixUp and CutMix mix *pairs* of images and their labels; they run on the batch (:class:`MixingPrepareBatch`).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from mednet.data.dermoscopy import (MAX_UPSCALE, DERMOSCOPY_CLASSES, DICOM_SUFFIXES, check_image_size, is_dicom_file,
                                    load_rgb, resize_center_crop)
from mednet.data.naming import PHOTO_SUFFIXES, unique_names
from mednet.data.splits import SPLITS
from mednet.errors import DataError, OptionError

__all__ = ["AUGMENTATIONS", "LesionImageDataset", "image_transform", "channel_statistics", "MixingPrepareBatch",
           "lesion_dataset", "list_lesion_images", "training_accuracy_output"]

logger = logging.getLogger("mednet")

#: ``--augmentation`` choices: per-image only (``none``), or with MixUp / CutMix / CutOut / AugMix
AUGMENTATIONS = ("none", "mixup", "cutmix", "cutout", "augmix")


class LesionImageDataset(Dataset):
    """Images of a split table, decoded and resized once, then transformed per access.

    Args:
        table: rows with ``image_id``, ``dx``, ``path`` and optionally ``cache_path`` (a resized copy, used when
            its size matches ``image_size``).
        image_size: ``S``; images are centre-cropped to a square and resized to ``S × S``.
        transform: ``(3, S, S) uint8`` tensor → float tensor (see :func:`image_transform`).
        class_names: the label order (``dx`` → index).
        cache: keep decoded ``uint8`` images in memory (per DataLoader worker).
        require_label: refuse rows without a known ``dx`` (training, evaluation); inference keeps them with label −1.

    Items: ``{"image": transform(image), "label": int64 scalar, "image_id": str, "path": str}``.
    """

    def __init__(self, table: pd.DataFrame, image_size: int, transform: Callable[[torch.Tensor], torch.Tensor] | None,
                 class_names: Sequence[str] = DERMOSCOPY_CLASSES, cache: bool = True, require_label: bool = True) -> None:
        self.table = table.reset_index(drop=True)
        self.image_size = int(image_size)
        self.transform = transform
        self.class_names = tuple(class_names)
        index = {name: i for i, name in enumerate(self.class_names)}
        dx = self.table["dx"] if "dx" in self.table else pd.Series([None] * len(self.table))
        self.labels = np.array([index.get(d, -1) for d in dx], dtype=np.int64)
        if require_label and (self.labels < 0).any():
            row = int(np.flatnonzero(self.labels < 0)[0])
            rows = table.attrs.get("rows")
            where = rows[row] if rows and len(rows) == len(self.table) else f"{table.attrs.get('source')}:row {row + 2}"
            raise DataError(where, f"unknown dx {dx[row]!r}; expected one of {', '.join(self.class_names)}")
        self.cache = cache
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.table)

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> LesionImageDataset:
        """The same images (and decoded-image cache) with another transform: the training split is decoded once
        for its normalisation statistics and for training."""
        other = object.__new__(LesionImageDataset)
        other.__dict__.update(self.__dict__)
        other.transform = transform
        return other

    def _cached_path(self, row: pd.Series) -> str | None:
        cached = row.get("cache_path") if "cache_path" in row else None
        if isinstance(cached, str) and cached and Path(cached).parent.name == f"cache_{self.image_size}":
            return cached
        return None

    def raw_image(self, i: int) -> np.ndarray:
        """Image ``i`` as ``(S, S, 3) uint8``, decoded and resized (memoised when ``cache``)."""
        if i in self._images:
            return self._images[i]
        row = self.table.iloc[i]
        cached = self._cached_path(row)
        image = load_rgb(cached or row["path"])
        check_image_size(image, self.image_size, cached or row["path"])
        if image.shape[:2] != (self.image_size, self.image_size):
            image = resize_center_crop(image, self.image_size)
        if self.cache:
            self._images[i] = image
        return image

    def __getitem__(self, i: int) -> dict:
        image = torch.from_numpy(np.array(self.raw_image(i), copy=True)).permute(2, 0, 1)  # (3, S, S) uint8 (copied: cached arrays stay read-only)
        row = self.table.iloc[i]
        return {"image": self.transform(image) if self.transform is not None else image, "label": torch.tensor(self.labels[i]),
                "image_id": str(row["image_id"]), "path": str(row["path"])}


def channel_statistics(dataset: LesionImageDataset) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``dataset``'s resized images in [0, 1] (the training split's: normalisation).

    Returns:
        ``([mean_R, mean_G, mean_B], [std_R, std_G, std_B])``, rounded to 5 decimals (they go to settings.json).
    """
    if len(dataset) == 0:
        raise DataError(dataset.table.attrs.get("source"), "no images to compute the normalisation from")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    n = 0
    for i in range(len(dataset)):
        x = dataset.raw_image(i).reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        total_sq += (x**2).sum(0)
        n += len(x)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 1e-12))
    return [round(float(m), 5) for m in mean], [round(float(s), 5) for s in std]


def _normalize(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


class _AugMixViews:
    """``(3, S, S) uint8`` → ``(3 views, 3, S, S)``: the clean image and two AugMix views, each normalised."""

    def __init__(self, base: Callable, augmix: Callable, normalize: Callable) -> None:
        self.base, self.augmix, self.normalize = base, augmix, normalize

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = self.base(image)
        return torch.stack([self.normalize(image), self.normalize(self.augmix(image)), self.normalize(self.augmix(image))])


class _CutOut:
    """CutOut (MONAI ``RandCoarseDropout``, 2 holes of ``8 × S/32`` px filled with 0) with its own random state.

    MONAI's randomizable transforms draw from ``self.R``, by default the class-level ``Randomizable.R`` seeded from
    the OS: neither ``torch.manual_seed`` nor ``monai.utils.set_determinism`` touches it, so ``--seed`` would not
    repeat the holes. With ``seed`` the transform gets its own ``RandomState(seed)``. DataLoader workers start from
    copies of that one state (every worker would cut the same holes in its images), so in a worker the state is
    reseeded once from ``seed`` and the worker's torch seed (``get_worker_info().seed``: the DataLoader's base seed,
    drawn from the seeded torch RNG, + the worker id) — different per worker, repeated by a run with the same seed.
    ``seed=None`` keeps the shared state (callers that seed ``Randomizable.R`` themselves, e.g. the augmentation
    figure).

    ``(3, S, S)`` float tensor → ``(3, S, S)`` float tensor (a plain ``torch.Tensor``).
    """

    def __init__(self, image_size: int, seed: int | None = None) -> None:
        from monai.transforms import RandCoarseDropout

        hole = max(1, round(8 * image_size / 32))
        self.dropout = RandCoarseDropout(holes=2, spatial_size=hole, fill_value=0.0, prob=1.0)
        self.seed = None if seed is None else int(seed)
        self._worker: tuple[int, int] | None = None  # (id, seed) of the DataLoader worker the state was seeded for
        if self.seed is not None:
            self.dropout.set_random_state(self.seed)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> _CutOut:
        """Seed the holes explicitly (MONAI's ``worker_init_fn``/``set_rnd`` call this): it then replaces the
        per-worker reseeding in this worker."""
        self.dropout.set_random_state(seed, state)
        info = torch.utils.data.get_worker_info()
        self._worker = None if info is None else (info.id, info.seed)
        return self

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.seed is not None:
            info = torch.utils.data.get_worker_info()
            if info is not None and self._worker != (info.id, info.seed):
                self._worker = (info.id, info.seed)
                state = np.random.SeedSequence([self.seed, info.seed % 2**32]).generate_state(1)[0]
                self.dropout.set_random_state(int(state))
        return torch.as_tensor(self.dropout(image))


def image_transform(image_size: int, mean: Sequence[float], std: Sequence[float], train: bool,
                    augmentation: str = "none", augmix_jsd: bool = False,
                    seed: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-image transform: ``(3, S, S) uint8`` → ``(3, S, S)`` float32 normalised (``(3, 3, S, S)`` for
    AugMix with the Jensen–Shannon loss). Evaluation (``train=False``) only normalises.

    ``seed`` (the run's ``--seed``) seeds CutOut's own random state (:class:`_CutOut`); the torchvision transforms
    draw from torch's RNG, which ``monai.utils.set_determinism`` and the DataLoader's worker seeding already cover.
    """
    if augmentation not in AUGMENTATIONS:
        raise OptionError({"--augmentation": f"unknown augmentation {augmentation!r}; choose one of {', '.join(AUGMENTATIONS)}"})
    normalize = _normalize(mean, std)
    if not train:
        return normalize
    base = v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomRotation(20),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),  # no hue: 0.65 of its 0.95 ms an image
    ])
    if augmentation == "augmix":
        augmix = v2.AugMix()
        if augmix_jsd:
            return _AugMixViews(base, augmix, normalize)
        return v2.Compose([base, augmix, normalize])
    if augmentation == "cutout":
        return v2.Compose([base, normalize, _CutOut(image_size, seed)])
    return v2.Compose([base, normalize])


class MixingPrepareBatch:
    """MONAI ``prepare_batch`` for classification: moves the batch to the device and applies MixUp or CutMix.

    torchvision ``transforms.v2.MixUp`` / ``CutMix`` (Zhang et al. 2018; Yun et al. 2019) take integer labels and
    return the λ-mixed one-hot labels ``(B, K)``; MONAI's ``MixUp`` rejects class labels and its ``CutMix`` applies
    the image mask to the labels (MONAI issue #8137), so they are not used. One λ per batch, drawn from
    Beta(α, α) (MixUp, default α = 1) or Beta(β, β) (CutMix, one box, β = 1), as in both papers.
    With AugMix's Jensen–Shannon loss the item's image is ``(3 views, C, S, S)``: the batch ``(B, 3, C, S, S)``
    becomes ``(3B, C, S, S)`` = ``[clean; aug1; aug2]`` (labels stay ``(B,)``).

    Args:
        mixing: ``None``/``"none"``, ``"mixup"`` or ``"cutmix"``.
        num_classes: ``K``.
        alpha: the Beta parameter.
    """

    def __init__(self, mixing: str | None = None, num_classes: int = len(DERMOSCOPY_CLASSES), alpha: float = 1.0) -> None:
        self.mixing = None if mixing in (None, "none") else mixing
        if self.mixing == "mixup":
            self.mix = v2.MixUp(alpha=alpha, num_classes=num_classes)
        elif self.mixing == "cutmix":
            self.mix = v2.CutMix(alpha=alpha, num_classes=num_classes)
        elif self.mixing is not None:
            raise OptionError({"--augmentation": f"batch mixing must be mixup or cutmix, got {mixing!r}"})

    def __call__(self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False,
                 **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = batchdata["image"], batchdata["label"].long().reshape(-1)
        if image.ndim == 5:  # AugMix views (B, 3, C, S, S) -> (3B, C, S, S)
            image = image.transpose(0, 1).reshape(-1, *image.shape[2:])
        if self.mixing is not None:
            image, label = self.mix(image, label)
        return (image.to(device=device, non_blocking=non_blocking),
                label.to(device=device, non_blocking=non_blocking))


def lesion_dataset(table: pd.DataFrame, image_size: int, mean: Sequence[float], std: Sequence[float], train: bool = False,
                   augmentation: str = "none", augmix_jsd: bool = False, cache: bool = True,
                   class_names: Sequence[str] = DERMOSCOPY_CLASSES, require_label: bool = True,
                   seed: int | None = None) -> LesionImageDataset:
    """:class:`LesionImageDataset` with :func:`image_transform` — what the bundle configs build."""
    transform = image_transform(image_size, mean, std, train, augmentation, augmix_jsd, seed)
    return LesionImageDataset(table, image_size, transform, class_names, cache=cache, require_label=require_label)


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV, read as the table readers read them (:func:`pandas.read_csv` with
    ``encoding="utf-8-sig"``, ``skipinitialspace``): a BOM, quoted names (``"path","label"``) and spaces after
    commas do not change which reader a CSV goes to."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f, skipinitialspace=True), [])
    return [c.strip() for c in header]


def list_lesion_images(input: str | os.PathLike, split: str | None = "test",
                       class_names: Sequence[str] = DERMOSCOPY_CLASSES) -> pd.DataFrame:
    """Images to classify: one image file (JPEG/PNG/… or a DICOM dermoscopy file), a folder of them, a split CSV
    (``split.csv`` or a folder holding one; ``split`` selects its rows, None = all) or a ``path,label`` CSV.

    Returns a table with ``image_id`` (the file stem; parent folders prefixed only where stems collide),
    ``path`` and, from a CSV, ``dx``.

    Raises:
        DataError: the input does not exist, a folder holds no images, or ``split`` selects no row of a CSV that
            has a ``split`` column (the run would otherwise succeed having classified nothing).
    """
    from mednet.data.lesion_split import load_split_table

    path = Path(input)
    if not path.exists():
        raise DataError(path, "input does not exist")
    if path.is_dir() and (path / "split.csv").is_file() or path.suffix.lower() == ".csv":
        if path.suffix.lower() == ".csv" and path.name != "split.csv" and path.is_file():
            columns = set(_csv_header(path))
            # the reader follows the columns: a split table has dx and split, a path,label CSV has label (and may
            # have lesion_id, image_id, dx_type, split: read_path_label_csv honours them)
            if {"path", "label"} <= columns and not {"dx", "split"} <= columns:
                from mednet.data.dermoscopy import read_path_label_csv

                table = read_path_label_csv(path, class_names)
                if split is not None and "split" in table:
                    if split not in SPLITS:  # as load_split_table
                        raise OptionError({"--split": f"unknown split {split!r} (expected one of {', '.join(SPLITS)})"})
                    present = [s for s in SPLITS if (table["split"] == s).any()]
                    table = table[table["split"] == split].reset_index(drop=True)
                    table.attrs["source"] = str(path)
                    if table.empty:  # as load_split_table: an inference run must not succeed writing nothing
                        raise DataError(path, f"split '{split}' is empty (present: {', '.join(present)})")
                return table
        return load_split_table(path, split, class_names)
    # a folder lists what load_rgb reads of a single file: photographs by suffix, and DICOM files as
    # is_dicom_file recognises them (.dcm/.dicom/.dic, or no suffix but the DICM marker: scanners write IM0001)
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and (p.suffix.lower() in PHOTO_SUFFIXES or is_dicom_file(p)))
    if not files:
        raise DataError(path, f"no images ({', '.join((*PHOTO_SUFFIXES, *DICOM_SUFFIXES))} or DICOM files) found")
    table = pd.DataFrame({"image_id": unique_names([str(f) for f in files]), "path": [str(f) for f in files]})
    table.attrs["source"] = str(path)
    return table


def training_accuracy_output(output: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Trainer output → ``(logits (B, K), classes (B,))`` for Ignite ``Accuracy``: soft (MixUp/CutMix) labels are
    argmaxed, and with AugMix's three views only the clean first ``B`` rows are scored."""
    pred, label = output["pred"].detach(), output["label"]
    label = label.argmax(1) if label.ndim == 2 else label.reshape(-1)
    return pred[: label.shape[0]], label.long()
