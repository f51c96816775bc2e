"""2D patches from slice stacks: class-balanced training windows and whole-slice grids.

Training patches (the course exercise's protocol): every ``P×P`` window, at a given stride, of every slice of a
``(S, H, W)`` stack is kept only if it holds **no background pixel** (label 0) and **at least ``min_pixels``
pixels of each tissue class** (CSF/GM/WM = 1/2/3, see :mod:`mednet.data.tissue_labels`). The per-window class counts
come from integral images (summed-area tables, one ``cumsum`` over H and W for all slices at once), so the
filter is a handful of array operations whatever the number of windows — about 7 M windows for a
256×128×256 volume at stride 1 — and memory stays at a few int32 arrays of the stack's size.

The windows that pass the filter are still dominated by grey matter (on MNI-derived slices, 16×16 windows at
stride 2 with ≥ 8 px per class hold ≈ 14 % / 55 % / 31 % CSF/GM/WM pixels); :func:`extract_balanced_patches`
then thins them so that the class pixel shares become about equal (see its docstring for the method).

Validation/test patches: :func:`grid_patches` cuts whole slices into non-overlapping ``P×P`` tiles (zero
padded = background) and :func:`reassemble_grid` puts per-tile outputs back into slices.

Pure numpy; :func:`naive_extract_balanced_patches` is a per-window Python loop kept as the reference the
vectorised filter is tested and benchmarked against.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mednet.errors import DataError
from mednet.data.tissue_labels import BACKGROUND, LABEL_NAMES, TISSUE_LABELS

logger = logging.getLogger("mednet")

__all__ = [
    "PatchSet",
    "GridPatches",
    "extract_balanced_patches",
    "naive_extract_balanced_patches",
    "balance_probabilities",
    "class_distribution",
    "grid_patches",
    "reassemble_grid",
]


# ----------------------------------------------------------------------------------------------- results
@dataclass
class PatchSet:
    """Training patches cut from one slice stack.

    Attributes:
        images: ``(N, P, P)`` float32 intensities.
        labels: ``(N, P, P)`` uint8 label values.
        positions: ``(N, 3)`` int32 ``(slice, row, col)`` of each patch's top-left pixel in the stack, so
            ``images[i] == stack[s, r:r + P, c:c + P]``.
        classes: the label values the selection rule (and :attr:`class_counts`) is about.
        source: provenance (file name) of the stack, or None.
        n_windows: windows examined (all ``P×P`` windows at the stride, over all slices).
        n_passed: windows that passed the background / ``min_pixels`` filter, before balancing and the cap.
    """

    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    classes: tuple[int, ...] = TISSUE_LABELS
    source: str | None = None
    n_windows: int = 0
    n_passed: int = 0

    def __len__(self) -> int:
        return len(self.images)

    @property
    def patch_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def class_counts(self) -> np.ndarray:
        """``(len(classes),)`` int64 pixel counts of each class over all patches."""
        return np.asarray(class_distribution(self.labels, self.classes)["counts"], dtype=np.int64)

    @property
    def class_shares(self) -> np.ndarray:
        """``(len(classes),)`` float share of each class among the pixels of ``classes`` (sums to 1)."""
        return np.asarray(class_distribution(self.labels, self.classes)["shares"], dtype=np.float64)

    def distribution(self) -> dict:
        """:func:`class_distribution` of the patches' labels (the "after" statistics)."""
        return class_distribution(self.labels, self.classes)


@dataclass
class GridPatches:
    """Non-overlapping ``P×P`` tiles covering whole slices (see :func:`grid_patches`).

    Attributes:
        images: ``(N, P, P)`` float32 tiles, ``N = S · (Hp/P) · (Wp/P)``, in (slice, row, col) raster order.
        labels: ``(N, P, P)`` uint8 tiles, or None when no label was given. Padding is background (0).
        positions: ``(N, 3)`` int32 ``(slice, row, col)`` top-left corner of each tile in the padded stack.
        patch_size: ``P``.
        original_shape: ``(S, H, W)`` of the input stack (``(1, H, W)`` for a single 2D slice).
        padded_shape: ``(S, Hp, Wp)`` with ``Hp``, ``Wp`` the multiples of ``P`` the slices were padded to.
        single_slice: the input was one ``(H, W)`` slice; :func:`reassemble_grid` then drops the slice axis.
    """

    images: np.ndarray
    labels: np.ndarray | None
    positions: np.ndarray
    patch_size: int
    original_shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    single_slice: bool = False

    def __len__(self) -> int:
        return len(self.images)

    @property
    def tiles_per_slice(self) -> tuple[int, int]:
        """``(rows, cols)`` of tiles in one slice."""
        return self.padded_shape[1] // self.patch_size, self.padded_shape[2] // self.patch_size


# ----------------------------------------------------------------------------------------------- helpers
def _as_stack(arr: np.ndarray, what: str, source: str | None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise DataError(source, f"{what} must be a (S, H, W) stack of 2D slices or one (H, W) slice, got shape {arr.shape}")
    return arr


def _check_inputs(image, label, patch_size, stride, classes, source) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    if not isinstance(patch_size, numbers.Integral) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    if not isinstance(stride, numbers.Integral) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    classes = tuple(int(c) for c in classes)
    if not classes or BACKGROUND in classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct non-background label values, got {classes}")
    img = _as_stack(image, "image", source)
    lab = _as_stack(label, "label", source)
    if img.shape != lab.shape:
        raise DataError(source, f"image shape {np.shape(image)} and label shape {np.shape(label)} differ")
    if patch_size > img.shape[1] or patch_size > img.shape[2]:
        raise DataError(
            source,
            f"patch size {patch_size}x{patch_size} is larger than the slices ({img.shape[1]}x{img.shape[2]}, "
            f"stack shape {img.shape}); use a smaller patch_size",
        )
    return img, lab, classes


def _min_count(min_pixels: float, patch_size: int, at_most: bool = False, name: str = "min_pixels") -> int:
    """``min_pixels`` as a pixel count: an int (or integral float ≥ 1) is a count, a float in (0, 1) a fraction.

    A bound that is not a whole number of pixels is rounded to the pixels it allows: up for a minimum ("at least
    1.5" is 2), down for a maximum (``at_most``: "at most 1.5" is 1).
    """
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, numbers.Real) or min_pixels < 0:
        raise ValueError(f"{name} must be a count ≥ 0 or a fraction in (0, 1), got {min_pixels!r}")
    if isinstance(min_pixels, numbers.Integral):
        return int(min_pixels)
    value = float(min_pixels) * patch_size * patch_size if 0 < min_pixels < 1 else float(min_pixels)
    return int(math.floor(value + 1e-9)) if at_most else int(math.ceil(value - 1e-9))


def _window_counts(mask: np.ndarray, patch_size: int, stride: int, table: np.ndarray) -> np.ndarray:
    """Number of True pixels in every ``P×P`` window (top-left corners at multiples of ``stride``).

    ``table`` is an ``(S, H+1, W+1)`` int32 buffer (first row/column zero) reused for the integral image.
    Returns ``(S, nr, nc)`` int32.
    """
    _, h, w = mask.shape
    p = patch_size
    np.cumsum(mask, axis=1, dtype=np.int32, out=table[:, 1:, 1:])
    np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
    nr = (h - p) // stride + 1
    nc = (w - p) // stride + 1
    top = slice(0, (nr - 1) * stride + 1, stride)
    bottom = slice(p, p + (nr - 1) * stride + 1, stride)
    left = slice(0, (nc - 1) * stride + 1, stride)
    right = slice(p, p + (nc - 1) * stride + 1, stride)
    out = table[:, bottom, right] - table[:, top, right]
    out -= table[:, bottom, left]
    out += table[:, top, left]
    return out


def _gather(stack: np.ndarray, positions: np.ndarray, patch_size: int, dtype) -> np.ndarray:
    """``(N, P, P)`` copies of ``stack[s, r:r+P, c:c+P]`` for every row of ``positions`` (one fancy index)."""
    if len(positions) == 0:
        return np.zeros((0, patch_size, patch_size), dtype=dtype)
    view = sliding_window_view(stack, (patch_size, patch_size), axis=(1, 2))
    return np.ascontiguousarray(view[positions[:, 0], positions[:, 1], positions[:, 2]], dtype=dtype)


def _nothing_kept(source, patch_size, stride, min_count, classes, lab: np.ndarray, max_background: int) -> DataError:
    names = "/".join(LABEL_NAMES.get(c, str(c)) for c in classes)
    absent = [LABEL_NAMES.get(c, str(c)) for c in classes if not (lab == c).any()]
    if absent:  # no threshold can help: say what is wrong with the label
        return DataError(source, f"the label has no {'/'.join(absent)} voxel in these slices, and every training patch "
                                 f"needs each of {names}; check the label, or move this volume out of the training "
                                 "split")
    background = "free of background" if max_background == 0 else f"with at most {max_background} background pixels"
    return DataError(
        source,
        f"no {patch_size}x{patch_size} window (stride {stride}) of the {lab.shape} stack is {background} with at "
        f"least {min_count} pixels of each of {names}; try a lower min_pixels or a smaller patch_size",
    )


def _systematic_sample(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices drawn so that item ``i`` is selected with probability ``p[i]`` (≤ 1).

    Systematic sampling over a random order: the number drawn is ``Σp`` ± 1 (lower variance than
    independent coin flips, so the realised class shares stay close to the expected ones).
    """
    order = rng.permutation(len(p))
    cum = np.cumsum(p[order])
    u = rng.random()
    hit = np.floor(cum + u) > np.floor(cum - p[order] + u)
    return np.sort(order[hit])


# ----------------------------------------------------------------------------------------------- balancing
def balance_probabilities(
    counts: np.ndarray,
    target: Sequence[float] | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    min_keep_fraction: float = 0.02,
    source: str | None = None,
) -> np.ndarray:
    """Keep probability of each window so that the expected class pixel shares of the kept set equal ``target``.

    Window ``i`` with class fractions ``f_i = counts_i / Σ_c counts_ic`` is kept with probability

        p_i = min(1, exp(λ · (f_i − t)))       (t = target shares, equal by default)

    i.e. a window whose composition is exactly the target is always kept, windows richer than the target in
    under-represented classes (λ_c > 0) are always kept, and windows richer in over-represented classes are
    thinned exponentially. ``λ`` (defined up to a constant, since Σ f = Σ t = 1) is found by damped Newton
    iterations on ``log(expected share) − log(t)``. If ``t`` is outside the convex hull of the window
    compositions, the probabilities are rescaled so the best window has p = 1 and the shares get as close
    as the windows allow. Classes with no pixel at all are left out of the balancing.

    **A floor on what is kept.** Where equal shares are out of reach (e.g. no window is a third CSF) or need all
    but a handful of windows thinned away, the solution above keeps almost nothing: one window of thousands, with
    nothing logged. If the expected number kept falls below ``min_keep_fraction`` of the windows, ``λ`` is scaled
    down (bisection on ``α·λ``, ``α ∈ [0, 1]``; ``α = 0`` keeps everything) to the largest ``α`` that keeps that
    fraction: the shares come as close to the target as a usable sample allows, and a warning says so. (On the
    MNI template's slices equal shares keep 7.8–12.7 % of the windows, per view — measured — so the 2 % floor
    leaves ordinary scans alone; a volume of hundreds of thousands of windows still yields thousands, more than
    the per-view cap.)

    Compared with the best possible thinning (a linear programme maximising the expected number kept under
    exact equal shares), this keeps about 80 % as many windows on MNI-derived slices, and unlike it keeps a
    random sample of every composition rather than cutting all grey-matter-rich windows.

    Args:
        counts: ``(N, C)`` pixel counts of each class in each window.
        target: ``(C,)`` target shares (normalised to sum to 1); None = equal.
        tol: stop when every expected share is within ``tol`` of its target.
        max_iter: Newton iterations at most.
        min_keep_fraction: the smallest expected fraction of the windows kept (0 turns the floor off).
        source: named in the warning (the volume the windows come from).

    Returns:
        ``(N,)`` float64 probabilities in [0, 1] (all ones if there is nothing to balance).
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 2:
        raise ValueError(f"counts must be (N, C), got shape {n.shape}")
    present = n.sum(axis=0) > 0
    t_all = np.full(n.shape[1], 1.0) if target is None else np.asarray(target, dtype=np.float64)
    if t_all.shape != (n.shape[1],) or np.any(t_all <= 0):
        raise ValueError(f"target must be {n.shape[1]} positive shares, got {target!r}")
    if len(n) == 0 or present.sum() < 2:
        return np.ones(len(n))
    n = n[:, present]
    t = t_all[present] / t_all[present].sum()
    tot = n.sum(axis=1)
    ok = tot > 0
    f = np.zeros_like(n)
    f[ok] = n[ok] / tot[ok, None]
    d = f - t  # (N, C): λ · d_i is the window's log keep-probability before capping

    def evaluate(lam: np.ndarray):
        x = d @ lam
        x_max = x.max()
        shift = min(x_max, 0.0)  # rescale so that the best window has p = 1 when none reaches 1
        p = np.exp(np.minimum(x - shift, 0.0))
        nc = p @ n
        s = nc / nc.sum()
        g = np.log(np.maximum(s, 1e-300)) - np.log(t)
        return p, x <= 0 if x_max >= 0 else np.ones(len(x), bool), nc, s, g

    lam = np.zeros(len(t))
    p, active, nc, s, g = evaluate(lam)
    for _ in range(max_iter):
        if np.abs(s - t).max() <= tol:
            break
        # Jacobian of g = log N_c − log N with respect to λ (windows above the cap do not move; at the cap the
        # one-sided derivative towards lower p is used, so the first step from λ = 0 is not zero)
        w = (p * active)[:, None] * d
        a = n.T @ w  # a[c, k] = Σ_i p_i n_ic d_ik
        jac = a / np.maximum(nc[:, None], 1e-300) - (a.sum(axis=0) / nc.sum())[None, :]
        step = np.linalg.lstsq(jac, -g, rcond=None)[0]
        if not np.all(np.isfinite(step)) or not np.any(step):
            break
        norm = np.abs(g).max()
        for _ in range(30):  # backtracking
            cand = evaluate(lam + step)
            if np.abs(cand[4]).max() < norm:
                break
            step = step * 0.5
        else:
            break
        lam = lam + step
        p, active, nc, s, g = cand
    floor = float(min_keep_fraction) * len(n)
    if p.sum() < floor:
        kept, reached = float(p.sum()), s
        lo, hi = 0.0, 1.0  # α: p(0) keeps every window; p(1) keeps fewer than the floor
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if evaluate(mid * lam)[0].sum() >= floor:
                lo = mid
            else:
                hi = mid
        p, _, _, s, _ = evaluate(lo * lam)
        logger.warning("%sbalancing the classes to %s would keep about %.0f of %d windows (shares %s); keeping %.0f "
                       "(%.0f %%) with shares %s instead", f"{source}: " if source else "", _shares(t), kept, len(n),
                       _shares(reached), p.sum(), 100 * p.sum() / len(n), _shares(s))
    return p


def _shares(s: np.ndarray) -> str:
    return "/".join(f"{100 * x:.0f}%" for x in s)


# ----------------------------------------------------------------------------------------------- training patches
def _selection_counts(min_pixels: int | float, max_background: int | float, patch_size: int) -> tuple[int, int]:
    """``(min pixels of each class, max background pixels)`` per window as counts, checked; shared by
    :func:`extract_balanced_patches` and its reference :func:`naive_extract_balanced_patches` so both refuse
    the same settings.

    Raises:
        ValueError: a count out of range, or a rule that lets an all-background window pass (``min_pixels`` 0
            with ``max_background`` the whole window): nothing to learn from it, and a batch of them has a 0/0
            loss (NaN).
    """
    m = _min_count(min_pixels, patch_size)
    max_bg = _min_count(max_background, patch_size, at_most=True, name="max_background")
    if m == 0 and max_bg >= patch_size * patch_size:
        raise ValueError(f"min_pixels 0 with max_background {max_background!r} (the whole {patch_size}×{patch_size} "
                         "window) keeps windows without any tissue; require ≥ 1 pixel of each class or less background")
    return m, max_bg


def extract_balanced_patches(
    image: np.ndarray,
    label: np.ndarray,
    patch_size: int = 16,
    stride: int = 1,
    min_pixels: int | float = 8,
    classes: Sequence[int] = TISSUE_LABELS,
    max_patches: int | None = None,
    seed: int = 0,
    balance: bool = True,
    source: str | None = None,
    max_background: int | float = 0,
) -> PatchSet:
    """Class-balanced ``P×P`` training patches from a stack of labelled 2D slices.

    1. **Filter** (vectorised): a window — top-left corner on the ``stride`` grid of every slice — is kept iff
       it contains at most ``max_background`` background pixels (label 0; default 0 = none, the course rule)
       and at least ``min_pixels`` pixels of each of ``classes``.
       Per-window class counts come from one integral image per class over the whole stack.
    2. **Balance** (``balance=True``): the windows that passed are thinned by
       :func:`balance_probabilities` — window ``i`` is kept with probability ``min(1, exp(λ·(f_i − 1/C)))``
       where ``f_i`` are its class pixel fractions and ``λ`` is solved so that the expected class pixel shares
       of the kept set are equal; the draw is systematic sampling over a seeded random order. Balanced windows
       and windows rich in rare classes are always kept; windows rich in the common class are subsampled.
       On MNI-derived slices (16×16, stride 2, ≥ 8 px) this turns ≈ 14/55/31 % CSF/GM/WM into ≈ 33/33/33 %
       while keeping about 12 % of the windows.
    3. **Cap** (``max_patches``): a seeded random subset of that size.

    Patches are returned in (slice, row, col) order. The same ``seed`` gives the same patches.

    Args:
        image: ``(S, H, W)`` intensities (or one ``(H, W)`` slice).
        label: ``(S, H, W)`` integer labels of the same shape (0 background, 1 CSF, 2 GM, 3 WM).
        patch_size: window side ``P`` in pixels.
        stride: step between window corners, in rows and columns.
        min_pixels: minimum pixels of each class per window: an int count, or a float in (0, 1) = fraction of
            ``P*P`` (rounded up).
        classes: label values each window must contain (and the balancing equalises).
        max_patches: keep at most this many (seeded random subset); None = no cap.
        seed: seed of the balancing draw and of the cap.
        balance: thin the windows to equal class shares; False keeps every window that passes the filter.
        source: file name for error messages and provenance.
        max_background: background pixels allowed per window (count, or fraction of ``P*P`` if < 1). A
            positive value lets the network see the brain's edge during training (the background pixels are
            then ignored by the loss); 0 is the course exercise's rule.

    Returns:
        A :class:`PatchSet`.

    Raises:
        DataError: image/label shapes differ, the patch is larger than the slices, or no window passes.
    """
    img, lab, classes = _check_inputs(image, label, patch_size, stride, classes, source)
    m, max_bg = _selection_counts(min_pixels, max_background, patch_size)
    if max_patches is not None and max_patches < 0:
        raise ValueError(f"max_patches must be ≥ 0 or None, got {max_patches!r}")
    s_, h, w = lab.shape
    nr = (h - patch_size) // stride + 1
    nc = (w - patch_size) // stride + 1
    table = np.zeros((s_, h + 1, w + 1), dtype=np.int32)

    # 1. filter: candidates are flat indices into the (S, nr, nc) window grid
    bg = _window_counts(lab == BACKGROUND, patch_size, stride, table)
    cand = np.flatnonzero(bg.ravel() <= max_bg)
    del bg
    count_dtype = np.int16 if patch_size * patch_size <= np.iinfo(np.int16).max else np.int32
    per_class: list[np.ndarray] = []
    for c in classes:
        if len(cand) == 0:
            break
        v = _window_counts(lab == c, patch_size, stride, table).ravel()[cand]
        ok = v >= m
        cand = cand[ok]
        per_class = [x[ok] for x in per_class] + [v[ok].astype(count_dtype)]
    del table
    if len(cand) == 0:
        raise _nothing_kept(source, patch_size, stride, m, classes, lab, max_bg)
    counts = np.stack(per_class, axis=1)
    n_passed = len(cand)

    # 2. balance, 3. cap
    rng = np.random.default_rng(seed)
    sel = np.arange(n_passed)
    if balance:
        sel = _systematic_sample(balance_probabilities(counts, source=source), rng)
    if max_patches is not None and len(sel) > max_patches:
        sel = np.sort(rng.choice(sel, size=max_patches, replace=False))
    flat = cand[sel]
    si, rem = np.divmod(flat, nr * nc)
    ri, ci = np.divmod(rem, nc)
    positions = np.stack([si, ri * stride, ci * stride], axis=1).astype(np.int32)
    return PatchSet(
        images=_gather(img, positions, patch_size, np.float32),
        labels=_gather(lab, positions, patch_size, np.uint8),
        positions=positions,
        classes=classes,
        source=None if source is None else str(source),
        n_windows=int(s_ * nr * nc),
        n_passed=int(n_passed),
    )


def naive_extract_balanced_patches(
    image: np.ndarray,
    label: np.ndarray,
    patch_size: int = 16,
    stride: int = 1,
    min_pixels: int | float = 8,
    classes: Sequence[int] = TISSUE_LABELS,
    source: str | None = None,
    max_background: int | float = 0,
) -> PatchSet:
    """Reference implementation of the filter of :func:`extract_balanced_patches`: one Python loop step per window.

    Same selection rule (≤ ``max_background`` background pixels, ≥ ``min_pixels`` of each class), no balancing
    and no cap; slow on purpose — it is what the vectorised version is checked and benchmarked against.
    """
    img, lab, classes = _check_inputs(image, label, patch_size, stride, classes, source)
    m, max_bg = _selection_counts(min_pixels, max_background, patch_size)  # the same refusals as the fast filter
    s_, h, w = lab.shape
    p = patch_size
    positions = []
    n_windows = 0
    for s in range(s_):
        for r in range(0, h - p + 1, stride):
            for c in range(0, w - p + 1, stride):
                n_windows += 1
                win = lab[s, r:r + p, c:c + p]
                if np.count_nonzero(win == BACKGROUND) > max_bg:
                    continue
                if all(np.count_nonzero(win == k) >= m for k in classes):
                    positions.append((s, r, c))
    if not positions:
        raise _nothing_kept(source, patch_size, stride, m, classes, lab, max_bg)
    pos = np.asarray(positions, dtype=np.int32).reshape(-1, 3)
    return PatchSet(
        images=np.stack([img[s, r:r + p, c:c + p] for s, r, c in positions]).astype(np.float32),
        labels=np.stack([lab[s, r:r + p, c:c + p] for s, r, c in positions]).astype(np.uint8),
        positions=pos,
        classes=classes,
        source=None if source is None else str(source),
        n_windows=n_windows,
        n_passed=len(pos),
    )


# ----------------------------------------------------------------------------------------------- statistics
def class_distribution(label: np.ndarray | PatchSet, classes: Sequence[int] = TISSUE_LABELS) -> dict:
    """Pixel counts and shares of ``classes`` in a label array (any shape) or in a :class:`PatchSet`.

    Shares are fractions of the non-background pixels that belong to ``classes`` (they sum to 1; with the
    standard labels 1–3 that is every non-background pixel). Use it on the slice stack for the "before"
    statistics and on the patches for the "after" ones.

    Returns:
        ``{"classes": [...], "names": [...], "counts": [...], "shares": [...], "total": int,
        "background": int}`` with plain Python numbers (JSON-ready).
    """
    lab = label.labels if isinstance(label, PatchSet) else np.asarray(label)
    classes = tuple(int(c) for c in classes)
    counts = [int(np.count_nonzero(lab == c)) for c in classes]
    total = sum(counts)
    return {
        "classes": list(classes),
        "names": [LABEL_NAMES.get(c, str(c)) for c in classes],
        "counts": counts,
        "shares": [c / total if total else 0.0 for c in counts],
        "total": total,
        "background": int(np.count_nonzero(lab == BACKGROUND)),
    }


# ----------------------------------------------------------------------------------------------- grid patches
def _pad_tile(stack: np.ndarray, p: int) -> np.ndarray:
    """``(S, Hp, Wp)`` zero-padded stack → ``(N, P, P)`` tiles in (slice, row, col) raster order."""
    s, hp, wp = stack.shape
    return stack.reshape(s, hp // p, p, wp // p, p).transpose(0, 1, 3, 2, 4).reshape(-1, p, p)


def grid_patches(image: np.ndarray, label: np.ndarray | None = None, patch_size: int = 16) -> GridPatches:
    """Cut every slice into non-overlapping ``P×P`` tiles covering it entirely (validation/test protocol).

    H and W are zero-padded at the bottom/right up to multiples of ``P`` (padding is background, label 0).
    :func:`reassemble_grid` puts per-tile values back and crops the padding.

    Args:
        image: ``(S, H, W)`` stack (or one ``(H, W)`` slice).
        label: optional labels of the same shape.
        patch_size: tile side ``P``.
    """
    if not isinstance(patch_size, numbers.Integral) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    single = np.ndim(image) == 2
    img = _as_stack(image, "image", None)
    lab = None
    if label is not None:
        lab = _as_stack(label, "label", None)
        if lab.shape != img.shape:
            raise DataError(None, f"image shape {np.shape(image)} and label shape {np.shape(label)} differ")
    p = int(patch_size)
    s, h, w = img.shape
    hp, wp = -(-h // p) * p, -(-w // p) * p
    pad = ((0, 0), (0, hp - h), (0, wp - w))
    tiles = _pad_tile(np.pad(img.astype(np.float32, copy=False), pad), p)
    lab_tiles = None if lab is None else _pad_tile(np.pad(lab.astype(np.uint8, copy=False), pad), p)
    si, ri, ci = np.meshgrid(np.arange(s), np.arange(0, hp, p), np.arange(0, wp, p), indexing="ij")
    positions = np.stack([si.ravel(), ri.ravel(), ci.ravel()], axis=1).astype(np.int32)
    return GridPatches(
        images=np.ascontiguousarray(tiles),
        labels=None if lab_tiles is None else np.ascontiguousarray(lab_tiles),
        positions=positions,
        patch_size=p,
        original_shape=(s, h, w),
        padded_shape=(s, hp, wp),
        single_slice=single,
    )


def reassemble_grid(patch_values: np.ndarray, grid: GridPatches) -> np.ndarray:
    """Inverse of :func:`grid_patches`: ``(N, [C,] P, P)`` per-tile values → ``(S, [C,] H, W)`` slices.

    Tiles must be in the grid's order (as returned). The padding is cropped; the dtype is kept. A grid cut
    from a single ``(H, W)`` slice gives back ``([C,] H, W)``.
    """
    v = np.asarray(patch_values)
    p = grid.patch_size
    s, hp, wp = grid.padded_shape
    _, h, w = grid.original_shape
    nh, nw = hp // p, wp // p
    if v.ndim not in (3, 4) or v.shape[0] != s * nh * nw or v.shape[-2:] != (p, p):
        raise ValueError(f"patch_values must be ({s * nh * nw}, [C,] {p}, {p}) for this grid, got {v.shape}")
    if v.ndim == 3:
        out = v.reshape(s, nh, nw, p, p).transpose(0, 1, 3, 2, 4).reshape(s, hp, wp)[:, :h, :w]
    else:
        c = v.shape[1]
        out = v.reshape(s, nh, nw, c, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(s, c, hp, wp)[..., :h, :w]
    out = np.ascontiguousarray(out)
    return out[0] if grid.single_slice else out
