"""Feedback merge: perceptual-hash distances between distinct images vs. between an image and its near-copies.

    python benchmarks/bench_feedback_near_duplicates.py [--seed 0] [--images 1000] [--size 128]
        [--thresholds 0,1,2,4,6,8] [--held_out 3000]

The merge (:func:`mednet.data.feedback.merge_feedback`) keeps a flagged image out of training when both its 64-bit
perceptual hashes (:func:`mednet.data.feedback.perceptual_hash`: DCT ``imagehash.phash`` and difference
``imagehash.dhash``) are within :data:`mednet.data.feedback.NEAR_DUPLICATE_DISTANCE` bits (Hamming distance) of a
validation or test image's: a re-saved, resized or cropped copy of a held-out image would otherwise reach
training. This script measures what a
threshold separates, on the project's synthetic dermoscopy set
(:func:`mednet.data.synthetic_dermoscopy.generate_synthetic_dermoscopy`: written as JPEG, decoded with
:func:`mednet.data.dermoscopy.load_rgb` as the merge decodes a split):

* **distinct images**: every pair of images of *different* lesions — a match there drops genuine feedback, and
  since a flag is compared with every held-out image, the rare close pairs (the minimum, the low tail) matter —
  and every pair of different images of the *same* lesion (the generator re-draws a lesion with another pose,
  colour and lighting: another photograph of one lesion; dropping such a flag is no loss for a lesion-grouped
  evaluation);
* **copies**: each image against its JPEG re-save at quality 60/75/90 (Pillow's defaults otherwise, 4:2:0 chroma),
  its bilinear resize to ×0.5 and ×2, its centre crop to 90 % of each side, and a brightness change ×1.1
  (clipped) — a copy the threshold misses reaches training.

Printed per distribution: count, min / 1st percentile / median / max, and for each ``--thresholds`` value ``t``
the number of distinct pairs at distance ≤ t (they would be dropped) or the fraction of copies at distance > t
(they would leak); then, for distinct-lesion pairs, the probability that a genuine flag is dropped when compared with
``--held_out`` unrelated held-out images, ``1 − (1 − p)^M``. Two tables: the merge's rule (both hashes within
``t``: the larger of the two distances), then ``phash`` alone, which is why the rule needs both. The threshold the
merge uses is marked ``*``. Defaults: ≈ 20 s on one core.
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO  # noqa: F401  (puts the repository on sys.path)

#: the near-copies measured, in the table's order
COPIES = ("jpeg_q60", "jpeg_q75", "jpeg_q90", "resize_x0.5", "resize_x2", "crop_90pct", "brightness_x1.1")
#: the distributions of distinct images
DISTINCT = ("different_lesions", "same_lesion")


def copies_of(image: np.ndarray) -> dict[str, np.ndarray]:
    """The near-copies of ``image`` (``(H, W, 3)`` uint8 RGB) named in :data:`COPIES`, as decoded RGB arrays."""
    from PIL import Image

    pil = Image.fromarray(image, "RGB")
    h, w = image.shape[:2]
    out = {}
    for quality in (60, 75, 90):
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as reread:
            out[f"jpeg_q{quality}"] = np.asarray(reread.convert("RGB"))
    out["resize_x0.5"] = np.asarray(pil.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR))
    out["resize_x2"] = np.asarray(pil.resize((2 * w, 2 * h), Image.BILINEAR))
    ch, cw = round(0.9 * h), round(0.9 * w)
    top, left = (h - ch) // 2, (w - cw) // 2
    out["crop_90pct"] = np.ascontiguousarray(image[top:top + ch, left:left + cw])
    out["brightness_x1.1"] = np.clip(np.rint(image.astype(np.float32) * 1.1), 0, 255).astype(np.uint8)
    return out


def _bits(hex_hashes: list[str]) -> np.ndarray:
    """(N, 64) 0/1 int32 bits of 16-hex-digit hashes."""
    values = np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)
    return ((values[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.int32)


def _pairwise(bits: np.ndarray) -> np.ndarray:
    """(N, N) Hamming distances of (N, 64) bit rows."""
    return bits @ (1 - bits).T + (1 - bits) @ bits.T


def _phash(image: np.ndarray) -> str:
    return _imagehash("phash", image)


def _dhash(image: np.ndarray) -> str:
    return _imagehash("dhash", image)


def _imagehash(name: str, image: np.ndarray) -> str:
    import imagehash
    from PIL import Image

    return str(getattr(imagehash, name)(Image.fromarray(image, "RGB")))


def _hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def measure(seed: int, n_images: int, size: int) -> dict[str, dict[str, np.ndarray]]:
    """``{hash: {distribution: distances}}`` for ``"phash"`` and ``"dhash"`` (the two halves of
    :func:`mednet.data.feedback.perceptual_hash`): the distinct-image distributions :data:`DISTINCT` and one per
    copy in :data:`COPIES`."""
    from mednet.data.dermoscopy import load_rgb
    from mednet.data.synthetic_dermoscopy import generate_synthetic_dermoscopy

    with tempfile.TemporaryDirectory() as tmp:
        metadata = generate_synthetic_dermoscopy(Path(tmp) / "set", n_images=n_images, size=size, seed=seed)
        with open(metadata, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        images = [load_rgb(metadata.parent / "images" / f"{r['image_id']}.jpg") for r in rows]
    lesions = np.array([r["lesion_id"] for r in rows])
    upper = np.triu(np.ones((len(rows), len(rows)), dtype=bool), k=1)
    same = (lesions[:, None] == lesions[None, :]) & upper
    different = (lesions[:, None] != lesions[None, :]) & upper
    hashers = {"phash": _phash, "dhash": _dhash}
    result = {}
    for name, hasher in hashers.items():
        hashes = [hasher(image) for image in images]
        distances = _pairwise(_bits(hashes))
        table = {"different_lesions": distances[different], "same_lesion": distances[same]}
        per_copy: dict[str, list[int]] = {c: [] for c in COPIES}
        for image, digest in zip(images, hashes):
            for copy_name, copy in copies_of(image).items():
                per_copy[copy_name].append(_hamming(digest, hasher(copy)))
        result[name] = {**table, **{c: np.asarray(v) for c, v in per_copy.items()}}
    return result


def _print_table(title: str, distances: dict[str, np.ndarray], thresholds: list[int], marked: int,
                 held_out: int) -> None:
    print(title)
    print(f"{'distribution':<18} {'n':>7}  {'min':>3} {'p1':>5} {'median':>6} {'max':>3}   "
          + " ".join(f"{('*' if t == marked else '') + 't=' + str(t):>7}" for t in thresholds))
    for name, values in distances.items():
        if values.size == 0:  # e.g. no lesion with two images in a tiny set
            print(f"{name:<18} {0:>7}")
            continue
        distinct = name in DISTINCT
        # distinct pairs: how many a threshold drops (counts: the rates are tiny); copies: the fraction it misses
        cells = [f"{int((values <= t).sum()):7d}" if distinct else f"{(values > t).mean():7.2%}" for t in thresholds]
        print(f"{name:<18} {values.size:>7}  {int(values.min()):>3} {np.percentile(values, 1):>5.1f} "
              f"{np.median(values):>6.1f} {int(values.max()):>3}   " + " ".join(cells))
    p = [(distances["different_lesions"] <= t).mean() for t in thresholds]
    print(f"{'P(flag dropped)':<18} {'M=' + str(held_out):>7}  {'':>24}   "
          + " ".join(f"{1 - (1 - q) ** held_out:7.2%}" for q in p))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0,
                        help="generator seed (NEAR_DUPLICATE_DISTANCE was chosen on 0 and confirmed on 1)")
    parser.add_argument("--images", type=int, default=1000, help="synthetic images (>= 21)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--thresholds", default="0,1,2,4,6,8", help="comma-separated distances to tabulate")
    parser.add_argument("--held_out", type=int, default=3000,
                        help="held-out images a flag is compared with (HAM10000's validation + test: ~3000)")
    args = parser.parse_args()
    from mednet.data.feedback import NEAR_DUPLICATE_DISTANCE

    t0 = time.perf_counter()
    measured = measure(args.seed, args.images, args.size)
    thresholds = sorted({int(t) for t in args.thresholds.split(",") if t.strip()} | {NEAR_DUPLICATE_DISTANCE})
    print(f"Hamming distances of 64-bit hashes; synthetic dermoscopy, seed {args.seed}, {args.images} images at "
          f"{args.size} px ({time.perf_counter() - t0:.0f} s). Columns t=…: distinct pairs: number at distance "
          "<= t (dropped); copies: fraction at distance > t (leaked). * = NEAR_DUPLICATE_DISTANCE\n")
    both = {k: np.maximum(measured["phash"][k], measured["dhash"][k]) for k in measured["phash"]}
    _print_table("phash and dhash both within t (the merge's rule: the larger of the two distances)", both,
                 thresholds, NEAR_DUPLICATE_DISTANCE, args.held_out)
    _print_table("phash alone (for comparison)", measured["phash"], thresholds, -1, args.held_out)
    copies = np.concatenate([both[c] for c in COPIES if c != "crop_90pct"])
    print(f"merge's rule: largest distance of a JPEG/resize/brightness copy {copies.max()}, "
          f"{(copies > NEAR_DUPLICATE_DISTANCE).mean():.1%} of them beyond {NEAR_DUPLICATE_DISTANCE}; smallest "
          f"between different lesions {both['different_lesions'].min()}, between images of one lesion "
          f"{both['same_lesion'].min() if both['same_lesion'].size else 'n/a'}")


if __name__ == "__main__":
    main()
