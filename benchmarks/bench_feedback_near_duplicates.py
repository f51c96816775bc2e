"""Feedback merge: perceptual-hash distances between distinct images vs. between an image and its near-copies.

    python benchmarks/bench_feedback_near_duplicates.py [--seed 0] [--images 1000] [--size 128]
        [--thresholds 0,1,2,4,6,8] [--held_out 3000]

The merge (:func:`mednet.data.feedback.merge_feedback`) keeps a flagged image out of training when both its 64-bit
perceptual hashes (:func:`mednet.data.feedback.perceptual_hash`: DCT ``imagehash.phash`` and difference
``imagehash.dhash``) are within :data:`mednet.data.feedback.NEAR_DUPLICATE_DISTANCE` bits (Hamming distance) of a
validation or test image's, in the nearest of the flagged image's 8 orientations (4 quarter turns, each also
mirrored: :data:`mednet.data.feedback.ORIENTATIONS`): a re-saved, resized, mirrored or rotated copy of a held-out
image would otherwise reach training. This script measures what a threshold separates, on the project's
synthetic dermoscopy set (:func:`mednet.data.synthetic_dermoscopy.generate_synthetic_dermoscopy`: written as JPEG,
decoded with :func:`mednet.data.dermoscopy.load_rgb` as the merge decodes a split):

* **distinct images**: every ordered pair (flagged, held-out) of images of *different* lesions — a match there
  drops genuine feedback, and since a flag is compared with every held-out image, the rare close pairs (the
  minimum, the low tail) matter — and every pair of different images of the *same* lesion (the generator re-draws
  a lesion with another pose, colour and lighting: another photograph of one lesion; dropping such a flag is no
  loss for a lesion-grouped evaluation); unordered pairs in the tables without orientations;
* **copies**: each image against its JPEG re-save at quality 60/75/90 (Pillow's defaults otherwise, 4:2:0 chroma),
  its bilinear resize to ×0.5 and ×2, its centre crop to 90 % of each side, a brightness change ×1.1 (clipped),
  its mirror images (left-right, upside down), its quarter turn, and that turn re-saved as JPEG quality 75 — a
  copy the threshold misses reaches training.

Printed per distribution: count, min / 1st percentile / median / max, and for each ``--thresholds`` value ``t``
the number of distinct pairs at distance ≤ t (they would be dropped) or the fraction of copies at distance > t
(they would leak); then, for distinct-lesion pairs, the probability that a genuine flag is dropped when compared with
``--held_out`` unrelated held-out images, ``1 − (1 − p)^M``. Three tables: the merge's rule (both hashes within
``t``: the larger of the two distances, in the flagged image's nearest orientation, where a mirrored or turned
orientation counts ``TURNED_EXTRA_BITS`` farther, i.e. must be within ``t - 1``), the same without the
orientations (the image as uploaded only: mirrored and rotated copies escape), then ``phash`` alone, which is why
the rule needs both hashes. The threshold the merge uses is marked ``*``. Defaults: ≈ 1.5 min on one core.
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import int_list, positive_int  # also puts the repository on sys.path

#: the near-copies measured, in the table's order
COPIES = ("jpeg_q60", "jpeg_q75", "jpeg_q90", "resize_x0.5", "resize_x2", "crop_90pct", "brightness_x1.1",
          "mirror_lr", "mirror_ud", "rot90", "rot90_jpeg_q75")
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
    out["mirror_lr"] = np.ascontiguousarray(image[:, ::-1])
    out["mirror_ud"] = np.ascontiguousarray(image[::-1])
    out["rot90"] = np.ascontiguousarray(np.rot90(image))
    buffer = io.BytesIO()
    Image.fromarray(out["rot90"], "RGB").save(buffer, format="JPEG", quality=75)
    buffer.seek(0)
    with Image.open(buffer) as reread:
        out["rot90_jpeg_q75"] = np.asarray(reread.convert("RGB"))
    return out


def _bits(hex_hashes: list[str]) -> np.ndarray:
    """(N, 64) 0/1 int32 bits of 16-hex-digit hashes."""
    values = np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)
    return ((values[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.int32)


def _pairwise(bits: np.ndarray) -> np.ndarray:
    """(N, N) Hamming distances of (N, 64) bit rows."""
    return _pairwise_to(bits, bits)


def _pairwise_to(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) Hamming distances between the (N, 64) bit rows ``a`` and the (M, 64) bit rows ``b``."""
    return a @ (1 - b).T + (1 - a) @ b.T


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
    :func:`mednet.data.feedback.perceptual_hash`; unordered pairs, the image as it is) and for ``"rule"`` (the
    merge's: the larger of the two, for the flagged image — the first of an ordered pair, or the copy — in its
    nearest orientation, a mirrored or turned one counting ``TURNED_EXTRA_BITS`` farther): the distinct-image
    distributions :data:`DISTINCT` and one per copy in :data:`COPIES`."""
    from mednet.data.dermoscopy import load_rgb
    from mednet.data.feedback import TURNED_EXTRA_BITS, perceptual_distance, perceptual_hash_variants
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

    # the merge's rule: each flagged image in its 8 orientations against each held-out image as it is
    variants = [perceptual_hash_variants(image) for image in images]
    held_out = _bits([v[0][:16] for v in variants]), _bits([v[0][16:] for v in variants])
    nearest = None
    for k in range(len(variants[0])):
        turned = _bits([v[k][:16] for v in variants]), _bits([v[k][16:] for v in variants])
        d = np.maximum(_pairwise_to(turned[0], held_out[0]), _pairwise_to(turned[1], held_out[1]))
        d += TURNED_EXTRA_BITS if k else 0
        nearest = d if nearest is None else np.minimum(nearest, d)
    off_diagonal = ~np.eye(len(rows), dtype=bool)
    rule = {"different_lesions": nearest[(lesions[:, None] != lesions[None, :]) & off_diagonal],
            "same_lesion": nearest[(lesions[:, None] == lesions[None, :]) & off_diagonal]}
    per_copy = {c: [] for c in COPIES}
    for image, own in zip(images, variants):
        for copy_name, copy in copies_of(image).items():
            per_copy[copy_name].append(min(perceptual_distance(v, own[0]) + (TURNED_EXTRA_BITS if k else 0)
                                           for k, v in enumerate(perceptual_hash_variants(copy))))
    rule.update({c: np.asarray(v) for c, v in per_copy.items()})
    result["rule"] = rule
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0,
                        help="generator seed (NEAR_DUPLICATE_DISTANCE was chosen on 0 and confirmed on 1)")
    parser.add_argument("--images", type=positive_int, default=1000, help="synthetic images (>= 21)")
    parser.add_argument("--size", type=positive_int, default=128, help="image side in pixels (16 to 1024)")
    parser.add_argument("--thresholds", type=int_list(minimum=0), default="0,1,2,4,6,8",
                        help="comma-separated distances (>= 0) to tabulate; NEAR_DUPLICATE_DISTANCE is always added")
    parser.add_argument("--held_out", type=positive_int, default=3000,
                        help="held-out images a flag is compared with (HAM10000's validation + test: ~3000)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mednet.data.feedback import NEAR_DUPLICATE_DISTANCE, TURNED_EXTRA_BITS
    from mednet.data.synthetic_dermoscopy import HAM10000_CLASSES, MIN_LESIONS_PER_CLASS

    # the synthetic generator's limits, refused here rather than by a traceback from inside it
    minimum = MIN_LESIONS_PER_CLASS * len(HAM10000_CLASSES)
    if args.images < minimum:
        parser.error(f"--images must be >= {minimum} ({MIN_LESIONS_PER_CLASS} lesions per class), got {args.images}")
    if not 16 <= args.size <= 1024:
        parser.error(f"--size must be from 16 to 1024 pixels, got {args.size}")
    thresholds = sorted(set(args.thresholds) | {NEAR_DUPLICATE_DISTANCE})

    t0 = time.perf_counter()
    measured = measure(args.seed, args.images, args.size)
    print(f"Hamming distances of 64-bit hashes; synthetic dermoscopy, seed {args.seed}, {args.images} images at "
          f"{args.size} px ({time.perf_counter() - t0:.0f} s). Columns t=…: distinct pairs: number at distance "
          "<= t (dropped); copies: fraction at distance > t (leaked). * = NEAR_DUPLICATE_DISTANCE\n")
    rule = measured["rule"]
    _print_table("the merge's rule: phash and dhash both within t (the larger of the two distances), the flagged "
                 f"image in its nearest of 8 orientations, a mirrored or turned one counting {TURNED_EXTRA_BITS} bit "
                 "farther (distinct images: ordered pairs flagged, held-out)", rule,
                 thresholds, NEAR_DUPLICATE_DISTANCE, args.held_out)
    both = {k: np.maximum(measured["phash"][k], measured["dhash"][k]) for k in measured["phash"]}
    _print_table("phash and dhash both within t, the image as uploaded only (for comparison; unordered pairs)",
                 both, thresholds, -1, args.held_out)
    _print_table("phash alone, as uploaded (for comparison; unordered pairs)", measured["phash"], thresholds, -1,
                 args.held_out)
    copies = np.concatenate([rule[c] for c in COPIES if c != "crop_90pct"])
    print(f"merge's rule: largest distance of a JPEG/resize/brightness/mirror/rotation copy {copies.max()}, "
          f"{(copies > NEAR_DUPLICATE_DISTANCE).mean():.1%} of them beyond {NEAR_DUPLICATE_DISTANCE}; smallest "
          f"between different lesions {rule['different_lesions'].min()} "
          f"({int((rule['different_lesions'] <= NEAR_DUPLICATE_DISTANCE).sum())} ordered pairs within "
          f"{NEAR_DUPLICATE_DISTANCE}), between images of one lesion "
          f"{rule['same_lesion'].min() if rule['same_lesion'].size else 'n/a'}")


if __name__ == "__main__":
    main()
