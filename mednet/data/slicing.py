"""3D → 2D slicing with provenance.

The course exercise slices along the last array axis (axial in RAS). Any axis works: the slices are
returned as a ``(S, H, W)`` stack with ``S`` along the chosen axis and ``(H, W)`` the two remaining axes in
their original order, so ``np.moveaxis(stack, 0, axis)`` gives the volume back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mednet.errors import DataError

__all__ = ["SliceStack", "slice_volume"]


@dataclass
class SliceStack:
    """2D slices of one volume.

    Attributes:
        images: ``(S, H, W)`` float32 intensities.
        labels: ``(S, H, W)`` uint8 tissue labels, or None for unlabelled volumes.
        indices: ``(S,)`` int index of each slice along ``axis`` of the source volume.
        axis: the spatial axis (0, 1 or 2 of ``(X, Y, Z)``) the volume was sliced along.
        source: the volume's file (provenance).
        volume_shape: ``(X, Y, Z)`` of the source volume, to put predictions back.
    """

    images: np.ndarray
    labels: np.ndarray | None
    indices: np.ndarray
    axis: int
    source: str
    volume_shape: tuple[int, int, int]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def to_volume(self, slices: np.ndarray, fill: int | float = 0) -> np.ndarray:
        """Put ``(S, H, W)`` per-slice values (e.g. predictions) back into an ``(X, Y, Z)`` volume.

        Slices that were dropped (no foreground) are filled with ``fill``.
        """
        moved_shape = (self.volume_shape[self.axis],) + tuple(
            s for i, s in enumerate(self.volume_shape) if i != self.axis
        )
        out = np.full(moved_shape, fill, dtype=slices.dtype)
        out[self.indices] = slices
        return np.moveaxis(out, 0, self.axis)


def _as_numpy(vol: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = vol.detach().cpu().numpy() if isinstance(vol, torch.Tensor) else np.asarray(vol)
    return arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr


def slice_volume(
    image: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray | None = None,
    axis: int = -1,
    drop_empty: bool = False,
    source: str = "",
) -> SliceStack:
    """Cut a volume into 2D slices along ``axis``.

    Args:
        image: ``(X, Y, Z)`` or channel-first ``(1, X, Y, Z)`` volume.
        label: optional label volume of the same shape.
        axis: spatial axis to slice along (``-1`` = last, the course exercise's choice).
        drop_empty: drop slices with no foreground (label > 0 if a label is given, else image != 0).
        source: file name kept as provenance and used in error messages.

    Returns:
        A :class:`SliceStack` with ``(S, H, W)`` arrays.
    """
    img = _as_numpy(image).astype(np.float32, copy=False)
    if img.ndim != 3:
        raise DataError(source, f"expected a 3D volume to slice, got shape {img.shape}")
    if axis not in (-3, -2, -1, 0, 1, 2):
        raise DataError(source, f"slice axis must be 0, 1 or 2 (or -1), got {axis}")
    axis = axis % 3
    lab = None
    if label is not None:
        lab = _as_numpy(label)
        if lab.shape != img.shape:
            raise DataError(source, f"image shape {img.shape} and label shape {lab.shape} differ")
        lab = np.moveaxis(lab, axis, 0).astype(np.uint8)
    imgs = np.moveaxis(img, axis, 0)
    indices = np.arange(imgs.shape[0])
    if drop_empty:
        fg = lab > 0 if lab is not None else imgs != 0
        keep = fg.reshape(fg.shape[0], -1).any(axis=1)
        if not keep.any():
            raise DataError(source, "no slice contains foreground")
        indices = indices[keep]
    return SliceStack(
        images=np.ascontiguousarray(imgs[indices]),
        labels=None if lab is None else np.ascontiguousarray(lab[indices]),
        indices=indices,
        axis=axis,
        source=str(source),
        volume_shape=tuple(int(s) for s in img.shape),
    )
