"""Vectorised vs per-window-loop extraction of balanced training patches, on a brain-like label volume.

    python benchmarks/bench_patch_extraction.py [--shape 256 128 256] [--patch 16] [--stride 1] [--min-pixels 8]
        [--naive-slices 8] [--repeat 3] [--seed 0]

The volume is the MNI152 2009a template shipped with nilearn, labelled as in :mod:`mednet.data.mni`
(0 background, 1 CSF, 2 GM, 3 WM) and resampled with nearest neighbour (``scipy.ndimage.zoom(order=0)``) to
``--shape`` (the course exercise's volumes are 256×128×256); the T1 is resampled the same way. It is sliced
along the last axis, as in the exercise.

The naive loop (:func:`mednet.data.patches.naive_extract_balanced_patches`, one Python step per window) is
timed once on ``--naive-slices`` evenly spaced slices, after an untimed warm-up call on the one with most brain
(the vectorised calls are warmed up by their own earlier runs: neither side pays first-call costs in its
timing); on those slices the two implementations are checked to keep exactly the same windows. The headline speed-up compares like with like and extrapolates nothing: the vectorised
filter without balancing, timed on the same slices. The naive time extrapolated linearly to all slices (how much
brain a slice holds varies, so this is an estimate) is set against the vectorised filter on the whole stack too. Balancing and the peak memory of the vectorised call are reported too.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from scipy import ndimage

from _common import int_at_least, positive_float, positive_int
from mednet.data.tissue_labels import TISSUE_NAMES
from mednet.data.mni import load_mni152_template
from mednet.data.patches import class_distribution, extract_balanced_patches, naive_extract_balanced_patches


def brain_stack(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(S, H, W)`` T1 and label stacks (slices along the last axis of a ``shape`` volume)."""
    t = load_mni152_template()
    factors = [n / o for n, o in zip(shape, t.label.shape)]
    label = ndimage.zoom(t.label, factors, order=0)
    t1 = ndimage.zoom(t.t1, factors, order=0)
    assert label.shape == tuple(shape), (label.shape, shape)
    return np.ascontiguousarray(np.moveaxis(t1, -1, 0)), np.ascontiguousarray(np.moveaxis(label, -1, 0))


def shares(dist: dict) -> str:
    return " / ".join(f"{s:5.1%}" for s in dist["shares"])


def best_time(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=positive_int, nargs=3, default=(256, 128, 256), metavar=("X", "Y", "Z"))
    ap.add_argument("--patch", type=positive_int, default=16)
    ap.add_argument("--stride", type=positive_int, default=1)
    ap.add_argument("--min-pixels", type=positive_float, default=8,
                    help="pixels of each class a window needs (< 1: a fraction of the window)")
    ap.add_argument("--naive-slices", type=int_at_least(3), default=8,
                    help="slices the naive loop is timed on (>= 3: the first and the last are outside the brain)")
    ap.add_argument("--repeat", type=positive_int, default=3, help="vectorised runs (best time reported)")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> dict:
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.patch > min(a.shape[:2]):
        ap.error(f"--patch {a.patch} is larger than a slice ({a.shape[0]}x{a.shape[1]})")
    min_pixels = a.min_pixels if a.min_pixels < 1 else int(a.min_pixels)
    kw = dict(patch_size=a.patch, stride=a.stride, min_pixels=min_pixels)

    t0 = time.perf_counter()
    image, label = brain_stack(tuple(a.shape))
    s, h, w = label.shape
    print(f"volume {tuple(a.shape)} (MNI152-derived, nearest-neighbour resampled) built in {time.perf_counter() - t0:.1f} s;"
          f" {s} slices of {h}x{w}, patch {a.patch}x{a.patch}, stride {a.stride}, min {min_pixels} px per class")

    # vectorised, whole stack
    t_vec, raw = best_time(lambda: extract_balanced_patches(image, label, balance=False, **kw), a.repeat)
    t_bal, bal = best_time(lambda: extract_balanced_patches(image, label, balance=True, seed=a.seed, **kw), a.repeat)
    tracemalloc.start()
    extract_balanced_patches(image, label, balance=True, seed=a.seed, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    # naive loop on a subset of slices, extrapolated per slice. Timed: one call on all of them, after an untimed
    # warm-up call on the one with most brain (one outside it keeps nothing, an error). One slice: a full
    # warm-up would double the slowest part, and the first call's one-off costs are what it removes
    idx = np.unique(np.linspace(0, s - 1, min(a.naive_slices, s)).round().astype(int))
    busiest = idx[[int(np.argmax([np.count_nonzero(label[i]) for i in idx]))]]
    naive_extract_balanced_patches(image[busiest], label[busiest], **kw)
    t1 = time.perf_counter()
    naive = naive_extract_balanced_patches(image[idx], label[idx], **kw)
    t_naive_sub = time.perf_counter() - t1
    t_naive = t_naive_sub / len(idx) * s
    t_vec_sub, sub = best_time(lambda: extract_balanced_patches(image[idx], label[idx], balance=False, **kw), a.repeat)
    same = np.array_equal(sub.positions, naive.positions)

    before = class_distribution(label)
    print(f"windows examined:            {raw.n_windows:,}")
    print(f"kept by the filter:          {len(raw):,}  (no background, >= {min_pixels} px of each class)")
    print(f"kept after balancing:        {len(bal):,}")
    print(f"class pixel shares {'/'.join(TISSUE_NAMES)}:")
    print(f"  all brain pixels:          {shares(before)}")
    print(f"  filtered windows:          {shares(raw.distribution())}")
    print(f"  balanced windows:          {shares(bal.distribution())}")
    print(f"vectorised filter:           {t_vec:8.3f} s  (best of {a.repeat})")
    print(f"vectorised filter + balance: {t_bal:8.3f} s  (best of {a.repeat}); peak numpy allocations {peak / 2**20:.0f} MiB")
    print(f"naive per-window loop:       {t_naive:8.1f} s  (measured {t_naive_sub:.2f} s on {len(idx)} of {s} slices,"
          f" extrapolated linearly per slice)")
    print(f"speed-up (filter vs loop):   {t_naive_sub / t_vec_sub:8.0f}x  on the {len(idx)} timed slices (both measured: "
          f"{t_naive_sub:.2f} s vs {t_vec_sub:.4f} s); {t_naive / t_vec:.0f}x with the loop extrapolated to the stack")
    print(f"same windows on the {len(idx)} timed slices: {same} ({len(naive):,} windows)")
    return {"t_vectorised": t_vec, "t_balanced": t_bal, "t_naive": t_naive, "speedup": t_naive_sub / t_vec_sub,
            "speedup_extrapolated": t_naive / t_vec, "t_naive_subset": t_naive_sub, "t_vectorised_subset": t_vec_sub,
            "kept": len(raw), "balanced": len(bal), "same": same, "peak_mib": peak / 2**20}


if __name__ == "__main__":
    main()
