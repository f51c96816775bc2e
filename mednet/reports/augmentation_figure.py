"""A figure of a few dermoscopy images before and after each training augmentation (issue 8, item 3).

The grid has one column per image and ``1 + len(augmentations)`` rows: the originals (the decoded, resized
``(S, S, 3) uint8`` images of :meth:`~mednet.data.lesion_images.LesionImageDataset.raw_image`), then, per
augmentation, the same images after *the training pipeline's own* transform
(:func:`~mednet.data.lesion_images.image_transform` with ``train=True``), so the figure shows what the network
is fed, not an imitation of it:

- ``none``: the per-image augmentation (random resized crop, flips, rotation, colour jitter around 1);
- ``cutout``: the same plus MONAI ``RandCoarseDropout`` holes (filled with 0 after normalisation = the
  training mean, so they show as the mean colour);
- ``augmix``: the same plus torchvision ``AugMix`` (one view: the Jensen–Shannon views are not drawn);
- ``mixup`` / ``cutmix``: the per-image augmentation, then the batch of those images through
  :class:`~mednet.data.lesion_images.MixingPrepareBatch` (torchvision ``v2.MixUp`` / ``v2.CutMix``, Zhang et al.
  2018; Yun et al. 2019); each panel is labelled with its mixed soft label (:func:`mixed_label_text`).

Every transformed image ``(3, S, S)`` float32 is un-normalised with the training split's ``mean``/``std`` and
clipped to [0, 1] for display. The figure is seeded: the torch RNG (torchvision transforms, MixUp/CutMix λ) is
forked and seeded, and MONAI's randomizable transforms, which draw from their own ``np.random.RandomState``
(``Randomizable.R``, a class attribute not touched by ``torch.manual_seed`` or ``monai.utils.set_determinism``),
get a seeded state for the duration of the call — ``image_transform`` builds its ``RandCoarseDropout`` inside and
does not expose it for ``set_random_state``. The caller's random states are left as they were.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mednet.data.lesion_images import AUGMENTATIONS, LesionImageDataset, MixingPrepareBatch, image_transform  # noqa: E402
from mednet.data.synthetic_dermoscopy import SYNTHETIC_DX_TYPE  # noqa: E402
from mednet.errors import DataError, OptionError  # noqa: E402
from mednet.reports.plots import save_figure  # noqa: E402

__all__ = ["plot_augmentations", "mixed_label_text", "pick_images"]

#: augmentations that mix pairs of images on the batch (and their labels)
_BATCH_MIXING = ("mixup", "cutmix")


def mixed_label_text(weights: Sequence[float] | np.ndarray | torch.Tensor, class_names: Sequence[str]) -> str:
    """A soft label ``(K,)`` in words: its two largest weights, e.g. ``"0.62 nv + 0.38 mel"``.

    Weights that round to 0.00 are left out, so an unmixed (one-hot) label reads ``"1.00 nv"``.

    Args:
        weights: ``(K,)`` class weights (a MixUp/CutMix label, summing to 1).
        class_names: the ``K`` class names, in label order.
    """
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.numel() != len(class_names):
        raise ValueError(f"{w.numel()} label weights for {len(class_names)} class names")
    order = torch.argsort(w, descending=True, stable=True)[:2].tolist()
    terms = [f"{w[k].item():.2f} {class_names[k]}" for k in order if round(w[k].item(), 2) > 0]
    return " + ".join(terms) if terms else f"{w[order[0]].item():.2f} {class_names[order[0]]}"


def pick_images(labels: np.ndarray, n_images: int, seed: int = 0) -> list[int]:
    """``n_images`` dataset indices, seeded and spread over the classes present.

    The classes take turns (in label order), each giving a random image of its own, until ``n_images`` are
    picked or the images run out; unlabelled images (label −1) count as one more class.

    Args:
        labels: ``(N,)`` integer labels.
        n_images: how many to pick (fewer when the dataset has fewer).
        seed: the NumPy generator's seed.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    picks: list[int] = []
    while len(picks) < n_images and any(queues):
        for queue in queues:
            if queue and len(picks) < n_images:
                picks.append(int(queue.pop(0)))
    return picks


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch and MONAI's shared ``Randomizable.R`` inside the block; restore the caller's states after."""
    from monai.transforms import Randomizable

    monai_state = Randomizable.R
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Randomizable.R = np.random.RandomState(seed)
        try:
            yield
        finally:
            Randomizable.R = monai_state


def _display(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised ``(3, S, S)`` float → ``(S, S, 3)`` in [0, 1] for ``imshow``."""
    m = torch.as_tensor(list(mean), dtype=torch.float32).reshape(3, 1, 1)
    s = torch.as_tensor(list(std), dtype=torch.float32).reshape(3, 1, 1)
    return (image.float() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def _is_synthetic(dataset: LesionImageDataset) -> bool:
    table = dataset.table
    return "dx_type" in table and len(table) > 0 and bool((table["dx_type"].astype(str) == SYNTHETIC_DX_TYPE).all())


def plot_augmentations(dataset: LesionImageDataset, png: str | os.PathLike, mean: Sequence[float], std: Sequence[float],
                       augmentations: Sequence[str] = AUGMENTATIONS, n_images: int = 4, seed: int = 0,
                       class_names: Sequence[str] | None = None) -> Path:
    """Write a PNG grid of ``n_images`` images: the originals, then one row per augmentation (see the module).

    Args:
        dataset: the images (only ``raw_image``, ``labels``, ``image_size`` and ``table`` are used; its own
            transform is ignored).
        png: where to write the figure (atomically).
        mean, std: the training split's per-channel normalisation (:func:`~mednet.data.lesion_images.channel_statistics`).
        augmentations: rows to draw, each one of :data:`~mednet.data.lesion_images.AUGMENTATIONS`.
        n_images: columns; images are picked seeded and spread over the classes (:func:`pick_images`).
        seed: seeds the picking and every random transform: the same call draws the same figure.
        class_names: display names of the labels (default: the dataset's).

    Returns:
        ``png`` as a :class:`~pathlib.Path`. The title says "synthetic data" when every row's ``dx_type`` is synthetic.

    Raises:
        OptionError: an unknown augmentation, ``n_images < 1``, or ``class_names`` of the wrong length.
        DataError: an empty dataset, or MixUp/CutMix asked for unlabelled images.
    """
    augmentations = list(augmentations)
    unknown = [a for a in augmentations if a not in AUGMENTATIONS]
    if unknown:
        raise OptionError({"--augmentation": f"unknown augmentation {unknown[0]!r}; choose one of {', '.join(AUGMENTATIONS)}"})
    if n_images < 1:
        raise OptionError({"--n_images": f"must be at least 1, got {n_images}"})
    names = tuple(class_names) if class_names is not None else dataset.class_names
    if len(names) != len(dataset.class_names):
        raise OptionError({"--class_names": f"{len(names)} names for the dataset's {len(dataset.class_names)} classes"})
    source = dataset.table.attrs.get("source")
    if len(dataset) == 0:
        raise DataError(source, "no images to draw the augmentation figure from")

    picks = pick_images(dataset.labels, n_images, seed)
    labels = torch.as_tensor(dataset.labels[picks], dtype=torch.int64)
    if any(a in _BATCH_MIXING for a in augmentations) and (labels < 0).any():
        raise DataError(source, "MixUp/CutMix need labelled images (a known dx) to mix their labels")
    originals = [torch.from_numpy(np.array(dataset.raw_image(i))).permute(2, 0, 1) for i in picks]  # (3, S, S) uint8

    rows: list[tuple[str, list[np.ndarray], list[str]]] = [
        ("original", [im.permute(1, 2, 0).numpy() for im in originals],
         [names[y] if y >= 0 else "unlabelled" for y in labels.tolist()])]
    with _seeded(seed):
        for augmentation in augmentations:
            transform = image_transform(dataset.image_size, mean, std, train=True, augmentation=augmentation)
            batch = torch.stack([transform(im) for im in originals])  # (B, 3, S, S) normalised
            texts = [""] * len(picks)
            if augmentation in _BATCH_MIXING:
                batch, soft = MixingPrepareBatch(augmentation, num_classes=len(names))({"image": batch, "label": labels})
                texts = [mixed_label_text(w, names) for w in soft]
            rows.append((augmentation, [_display(x, mean, std) for x in batch], texts))

    fig, axes = plt.subplots(len(rows), len(picks), figsize=(2.0 * len(picks), 2.1 * len(rows)), squeeze=False)
    for r, (row_name, images, texts) in enumerate(rows):
        for c, (image, text) in enumerate(zip(images, texts)):
            ax = axes[r, c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if text:
                ax.set_title(text, fontsize=7)
            if c == 0:
                ax.set_ylabel(row_name, fontsize=9)
    provenance = " — synthetic data" if _is_synthetic(dataset) else ""
    fig.suptitle(f"training augmentations, {dataset.image_size} px (seed {seed}){provenance}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png, dpi=90)
