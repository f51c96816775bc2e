"""A 3D U-Net beside the brain bundle's 2D FCN, and the average of the two, at realistic combined corruption.

    python benchmarks/bench_brain_3d.py [--dataset_dir demo/cohort] [--ckpt_path RUN/model.pt] [--epochs 16]
        [--crop 48] [--seed 11000] [--subjects 2] [--threads 2] [--out DIR]

Why: the 2D FCN stays below mean Dice 0.90 at the robustness benchmark's realistic combined severity. Most of its
errors are partial-volume voxels on tissue boundaries (bundle docs, *What limits realistic combined severity*),
which a network that sees the third axis can resolve better. This benchmark measures that in a reproducible way.
It is not a product variant.

- **3D network**: MONAI ``UNet`` (3D; channels 16/32/64/128, strides 2, one residual unit; 0.6 M parameters).
- **Training data**: the demo cohort's training volumes, loaded as the bundle loads them (``volume_dataset``: N4,
  histogram normalisation). Random ``--crop``³ crops are drawn with class-balanced centres (MONAI
  ``RandCropByLabelClassesd``, ratios 0/1/1/1: CSF, GM and WM equally likely), 4 crops a step.
- **Augmentation**: Gaussian noise with σ ≤ 0.05 on half of the crops, on brain voxels only, as the 2D default.
- **Optimisation**: cross-entropy over brain voxels (background −1 ignored, as in the 2D patches); Adam 1e-3 with
  cosine decay. MONAI ``SupervisedTrainer`` runs ``--epochs`` epochs of 200 steps.
- **Validation**: whole-volume Dice of the validation subject after every epoch, with a sliding window (64³,
  overlap 0.25, Gaussian weights). The best epoch is kept.
- **Evaluation**: the realistic combined level of ``bench_brain_robustness.py``: the same generator, the same
  ``REALISTIC`` parameters and the same seeds from ``--seed``, so the subjects are the ones that benchmark
  scores. The clean template is also scored.
  - Per subject: the 2D model (``--ckpt_path``, with its run's settings and the bundle's 3-view inferer), the
    3D model, and the average of their probabilities.

On 2 CPU cores: 18 min of training at the defaults, then about 20 s per subject.

Writes ``--out`` (default ``runs/bench_brain_3d/<time>/``):
- ``scores.csv``: one row per subject and model;
- ``unet3d.pt``: the 3D weights (a state dict);
- ``metrics.csv``: per-epoch validation Dice.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from _common import REPO, positive_int
from bench_brain_robustness import REALISTIC, levels, write_level_cohort

STEPS_PER_EPOCH = 200
CROPS_PER_STEP = 4


def unet3d():
    """The 3D network measured here (0.6 M parameters): ``(B, 1, X, Y, Z)`` → ``(B, 3, X, Y, Z)`` logits."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                num_res_units=1)


def crop_dataset(items: list[dict], crop: int, seed: int):
    """Cached training volumes → lists of ``CROPS_PER_STEP`` class-balanced crops, labels as targets (−1 outside
    the brain), noise on half of them (brain voxels only)."""
    import torch
    from monai.data import CacheDataset
    from monai.transforms import (ClassesToIndicesd, Compose, Lambdad, RandCropByLabelClassesd, RandGaussianNoised,
                                  SelectItemsd)

    from mednet.data.transforms import LoadLabelledVolumed

    def brain_only(d: dict) -> dict:
        d = dict(d)
        d["image"] = d["image"] * (d["label"] >= 0)
        return d

    transform = Compose([
        LoadLabelledVolumed(intensity_normalization="histogram", bias_correction="n4"),
        ClassesToIndicesd(keys="label", num_classes=4),
        RandCropByLabelClassesd(keys=["image", "label"], label_key="label", spatial_size=[crop] * 3, ratios=[0, 1, 1, 1],
                                num_classes=4, num_samples=CROPS_PER_STEP, indices_key="label_cls_indices",
                                allow_smaller=False),
        SelectItemsd(keys=["image", "label"]),  # the crops only: not the whole-volume mask or indices
        Lambdad("label", lambda lab: (torch.as_tensor(lab) - 1).long()),  # tissue index 0–2, background −1
        RandGaussianNoised(keys="image", prob=0.5, std=0.05, sample_std=True),
        brain_only,
    ]).set_random_state(seed=seed)
    return CacheDataset(items, transform=transform, num_workers=0, progress=False)


def sliding_window():
    from monai.inferers import SlidingWindowInferer

    return SlidingWindowInferer(roi_size=(64, 64, 64), sw_batch_size=4, overlap=0.25, mode="gaussian")


def train_unet3d(datalist: Path, args, out: Path):
    """Train :func:`unet3d` with MONAI's ``SupervisedTrainer``; returns the network at its best validation epoch."""
    import copy

    import torch
    from ignite.engine import Events
    from monai.data import DataLoader, list_data_collate
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import LrScheduleHandler, ValidationHandler

    from mednet.bundle_support import select_metrics
    from mednet.data.datalist import load_datalist
    from mednet.data.datasets import volume_dataset
    from mednet.data.transforms import TissueLabelsd
    from mednet.engines.handlers import ProgressBar
    from mednet.losses import tissue_loss
    from mednet.metrics import tissue_metrics

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.train_seed)
    net = unet3d().to(device)
    train_ds = crop_dataset(load_datalist(datalist, "training"), args.crop, args.train_seed)
    sampler = torch.utils.data.RandomSampler(train_ds, replacement=True, num_samples=STEPS_PER_EPOCH,
                                             generator=torch.Generator().manual_seed(args.train_seed))
    loader = DataLoader(train_ds, batch_size=1, sampler=sampler, collate_fn=list_data_collate)
    metrics = tissue_metrics("val_")
    evaluator = SupervisedEvaluator(
        device=device, val_data_loader=DataLoader(volume_dataset(datalist, "validation", cache=True), batch_size=1),
        network=net, inferer=sliding_window(), postprocessing=TissueLabelsd(keys="pred", mask_key="mask"),
        key_val_metric=select_metrics(metrics, ["val_mean_dice"]), amp=device.type == "cuda")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs, eta_min=1e-5)
    trainer = SupervisedTrainer(
        device=device, max_epochs=args.epochs, train_data_loader=loader, network=net, optimizer=optimizer,
        loss_function=tissue_loss("ce"), amp=device.type == "cuda", decollate=False,
        train_handlers=[LrScheduleHandler(scheduler, print_lr=False),
                        ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
                        ProgressBar(persist=True, desc="3D U-Net")])
    best = {"dice": -1.0, "epoch": 0, "state": None}
    rows = []

    @evaluator.on(Events.COMPLETED)
    def keep_best(engine) -> None:
        dice, epoch = float(engine.state.metrics["val_mean_dice"]), trainer.state.epoch
        rows.append({"epoch": epoch, "val_mean_dice": round(dice, 4)})
        print(f"epoch {epoch}: validation mean Dice {dice:.4f}", flush=True)
        if dice > best["dice"]:
            best.update(dice=dice, epoch=epoch, state=copy.deepcopy(net.state_dict()))

    trainer.run()
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "val_mean_dice"])
        writer.writeheader()
        writer.writerows(rows)
    net.load_state_dict(best["state"])
    torch.save(best["state"], out / "unet3d.pt")
    print(f"best validation mean Dice {best['dice']:.4f} at epoch {best['epoch']}", flush=True)
    return net.eval(), device


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset_dir", default="demo/cohort", help="demo cohort: training + validation subjects")
    ap.add_argument("--ckpt_path", default=None, help="the 2D run's model.pt (default: latest skip run under demo/runs)")
    ap.add_argument("--epochs", type=positive_int, default=16, help=f"epochs of {STEPS_PER_EPOCH} steps")
    ap.add_argument("--crop", type=positive_int, default=48)
    ap.add_argument("--train_seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=11000,
                    help="seed of the evaluation subjects (as bench_brain_robustness; the docs' run: 7000)")
    ap.add_argument("--subjects", type=positive_int, default=2)
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--out", default=None)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    import numpy as np
    import torch

    from mednet.data.datalist import find_datalist
    from mednet.data.mni import load_mni152_template
    from mednet.data.transforms import LoadLabelledVolumed
    from mednet.engines.checkpoints import load_weights
    from mednet.inference import ViewAggregationInferer
    from mednet.metrics import scores_from_confusion, tissue_confusion_matrix
    from mednet.networks import TissueFCN
    from mednet.runs import SETTINGS_FILE, resolve_checkpoint

    from mednet.errors import DataError

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else REPO / "runs" / "bench_brain_3d" / time.strftime("%Y%m%d-%H%M%S")
    if (out / "scores.csv").exists():
        raise SystemExit(f"{out / 'scores.csv'} exists: choose another --out")
    # every input is checked before anything is written or trained (minutes)
    try:
        ckpt = resolve_checkpoint(args.ckpt_path, REPO / "demo" / "runs", "train-skip-").resolve()
        datalist = find_datalist(REPO / args.dataset_dir)
    except DataError as e:
        raise SystemExit(f"mednet error: {e} (train the 2D model first: python -m mednet.app.brain_demo)") from None
    settings_path = ckpt.parent / SETTINGS_FILE
    if not settings_path.is_file():
        raise SystemExit(f"mednet error: {settings_path}: not found (a finished training run writes it; the 3D "
                         f"network must be preprocessed as the 2D run was)")
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    if settings.get("intensity_normalization") != "histogram" or settings.get("bias_correction") != "n4":
        raise SystemExit(f"{ckpt}: the 2D run must use histogram normalisation and N4, as the 3D network does")
    net2d = TissueFCN(variant=settings.get("variant", "skip"), in_channels=1, out_channels=3,
                      base_channels=settings.get("base_channels", 8))
    load_weights(net2d, ckpt)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    net3d, device = train_unet3d(datalist, args, out)
    print(f"3D training: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    net2d = net2d.to(device).eval()
    views = ViewAggregationInferer(views=settings.get("views", [0, 1, 2]))
    window = sliding_window()

    # the robustness benchmark's realistic combined level (same index → same subjects for the same --seed)
    index, level = next((i, lv) for i, lv in enumerate(levels()) if lv.corruption == "combined" and lv.params == REALISTIC)
    gen = argparse.Namespace(out=str(out), subjects=args.subjects, seed=args.seed, zoom=1.0)
    folder, _ = write_level_cohort(level, index, load_mni152_template(), gen)
    template = load_mni152_template()
    clean = out / "cohorts" / "clean"
    import nibabel as nib

    for sub in ("images", "labels"):
        (clean / sub).mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(template.t1, template.affine), str(clean / "images" / "clean.nii.gz"))
    nib.save(nib.Nifti1Image(template.label, template.affine), str(clean / "labels" / "clean.nii.gz"))
    subjects = [(p, folder / "labels" / p.name, "realistic") for p in sorted((folder / "images").glob("*.nii.gz"))]
    subjects.append((clean / "images" / "clean.nii.gz", clean / "labels" / "clean.nii.gz", "clean"))

    load = LoadLabelledVolumed(intensity_normalization="histogram", bias_correction="n4")
    rows = []
    for image_path, label_path, kind in subjects:
        d = load({"image": str(image_path), "label": str(label_path)})
        x = d["image"][None].to(device)
        mask, label = d["mask"][0].bool().numpy(), np.asarray(d["label"])[0].astype(np.uint8)
        with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
            p2 = views(x, net2d)[0].float().cpu()
            p3 = torch.softmax(window(x, net3d).float(), 1)[0].cpu()
        for model, p in (("2d", p2), ("3d", p3), ("2d+3d", 0.5 * (p2 + p3))):
            pred = ((p.argmax(0).numpy() + 1) * mask).astype(np.uint8)
            s = scores_from_confusion(tissue_confusion_matrix(pred, label))
            rows.append({"subject": image_path.name.replace(".nii.gz", ""), "level": kind, "model": model,
                         **{k: round(float(s[k]), 4) for k in ("dice_CSF", "dice_GM", "dice_WM", "mean_dice")}})
            print(f"{rows[-1]['subject']:>24} {model:>6}: mean Dice {s['mean_dice']:.3f} "
                  f"(CSF {s['dice_CSF']:.3f} GM {s['dice_GM']:.3f} WM {s['dice_WM']:.3f})", flush=True)
    with open(out / "scores.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\n| model | realistic mean | realistic worst | clean |\n|---|---|---|---|")
    for model in ("2d", "3d", "2d+3d"):
        real = [r["mean_dice"] for r in rows if r["model"] == model and r["level"] == "realistic"]
        cl = [r["mean_dice"] for r in rows if r["model"] == model and r["level"] == "clean"]
        print(f"| {model} | {np.mean(real):.3f} | {min(real):.3f} | {cl[0]:.3f} |")
    print(f"\n-> {out} (scores.csv, metrics.csv, unet3d.pt)")


if __name__ == "__main__":
    main()
