"""Whole-volume Dice of the brain bundle on held-out demo subjects (target: mean over CSF/GM/WM ≥ 0.90).

    python benchmarks/bench_brain_dice.py [--dataset_dir demo/cohort] [--variant skip] [--epochs 6]
        [--max_patches_per_volume 10000]

Trains with the bundle's ``train.json`` (its defaults: three views, histogram-equalised intensities, the main
job's 10 k patches per volume) and evaluates with ``evaluate.json`` on the test split (both through
MONAI's ``ConfigWorkflow``), then compares with a naive baseline computed in the same run: a 3-class Gaussian
mixture on the raw brain intensities (no bias-field correction) of each test volume (classes ordered by mean intensity: CSF < GM < WM).
Prints the per-class Dice of both and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import REPO, baseline_loader, ensure_cohort, positive_int


def gmm_baseline(items: list[dict]) -> dict[str, float]:
    """Pooled Dice of a per-volume 3-class Gaussian mixture on brain intensities
    (:func:`mednet.metrics.gmm_tissue_segmentation`)."""
    from mednet.metrics import gmm_tissue_segmentation, scores_from_confusion, tissue_confusion_matrix

    load = baseline_loader()  # the scan's own intensities (÷ brain mean), no bias-field correction
    cm = 0
    for item in items:
        d = load(item)
        img, lab = d["image"][0].numpy(), d["label"][0].numpy()
        pred = gmm_tissue_segmentation(img, d["mask"][0].numpy())
        cm = cm + tissue_confusion_matrix(pred, lab)
    return scores_from_confusion(cm)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset_dir", default="demo/cohort")
    ap.add_argument("--variant", default="skip")
    ap.add_argument("--epochs", type=positive_int, default=6)
    ap.add_argument("--max_patches_per_volume", type=positive_int, default=10000)
    ap.add_argument("--runs_root", default="runs/bench_dice")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    from mednet.app.bundles import run_bundle
    from mednet.data.datalist import load_datalist

    cohort = ensure_cohort(args.dataset_dir, subjects=6)
    t0 = time.perf_counter()
    train = run_bundle("brain_tissue_fcn", "train", dataset_dir=str(cohort.resolve()), variant=args.variant,
                       epochs=args.epochs, max_patches_per_volume=args.max_patches_per_volume,
                       runs_root=str((REPO / args.runs_root).resolve()))
    run_dir = Path(train.parser.get_parsed_content("output_dir"))
    t_train = time.perf_counter() - t0
    ev = run_bundle("brain_tissue_fcn", "evaluate", dataset_dir=str(cohort.resolve()), variant=args.variant,
                    ckpt_path=str(run_dir / "model.pt"))
    summary = json.loads((Path(ev.parser.get_parsed_content("output_dir")) / "summary.json").read_text(encoding="utf-8"))
    net = summary["protocols"]["whole volume"]
    base = gmm_baseline(load_datalist(cohort, "test"))
    print(f"\ntraining: {args.epochs} epochs in {t_train / 60:.1f} min -> {run_dir}")
    print(f"{'':24s} {'CSF':>6s} {'GM':>6s} {'WM':>6s} {'mean':>6s}")
    for name, s in ((f"{args.variant} FCN (whole volume)", net), ("grid patches 16x16", summary["protocols"]["grid patches"]),
                    ("3-class GMM baseline", base)):
        print(f"{name:24s} {s['dice_CSF']:6.3f} {s['dice_GM']:6.3f} {s['dice_WM']:6.3f} {s['mean_dice']:6.3f}")
    print(f"mean Dice ratio FCN / GMM = {net['mean_dice'] / base['mean_dice']:.2f}")
    print(f"target mean Dice >= 0.90 -> {'MET' if net['mean_dice'] >= 0.90 else 'NOT MET'}")


if __name__ == "__main__":
    main()
