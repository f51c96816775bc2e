"""Build a demo brain MRI cohort from the MNI ICBM152 template shipped with nilearn.

    python -m data_prep.demo_cohort --out demo/cohort --subjects 6 --seed 0 [--zoom 0.5] [--overwrite]

Each subject is the template T1 and its tissue labels (see :mod:`mednet.data.mni`) under seeded random
variation applied with MONAI transforms:

* spatial, to image and label together: one resampling combining an affine (rotation ±8°, scale ±8 %,
  translation ±5 voxels) and an elastic deformation (:class:`~monai.transforms.Rand3DElasticd`);
* intensity, to the image only: bias field, gamma contrast, Gaussian noise; the image is then re-masked so
  that background stays exactly 0 (a skull-stripped scan);
* geometry, so every later step runs off the template grid: subject ``i % 3 == 1`` is resampled to
  anisotropic 1.2×1.2×1.5 mm voxels, subject ``i % 3 == 2`` to a 256×128×256 grid stored in LPS orientation
  (the course exercise's shape).

Writes ``images/sub-XXX.nii.gz`` (float32), ``labels/sub-XXX.nii.gz`` (uint8), ``datalist.json``
(training / validation / test, by subject) and ``cohort.csv`` (one row per subject: split, shape, spacing,
orientation, seed). The same seed gives the same volumes.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    Orientationd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandGaussianNoised,
    Resized,
    Spacingd,
)
from monai.utils import set_determinism

from mednet.data.datalist import write_datalist
from mednet.data.errors import DataError
from mednet.data.mni import load_mni152_template

__all__ = ["build_demo_cohort", "split_subjects"]

_KEYS = ("image", "label")


def split_subjects(n: int) -> dict[str, list[int]]:
    """Subject indices per split: the last ``max(1, n // 5)`` are test, the one before validation, the rest training."""
    if n < 3:
        raise DataError(None, f"a demo cohort needs at least 3 subjects (training, validation, test), got {n}")
    n_test = max(1, n // 5)
    return {
        "training": list(range(n - n_test - 1)),
        "validation": [n - n_test - 1],
        "test": list(range(n - n_test, n)),
    }


def _variation(seed: int) -> Compose:
    spatial = Rand3DElasticd(
        keys=_KEYS,
        sigma_range=(8, 10),
        magnitude_range=(80, 160),
        prob=1.0,
        rotate_range=(0.14, 0.14, 0.14),
        scale_range=(0.08, 0.08, 0.08),
        translate_range=(5, 5, 5),
        mode=("bilinear", "nearest"),
        padding_mode="zeros",
    )
    intensity = [
        RandBiasFieldd(keys="image", prob=1.0, coeff_range=(0.0, 0.1)),
        RandAdjustContrastd(keys="image", prob=1.0, gamma=(0.8, 1.25)),
        RandGaussianNoised(keys="image", prob=1.0, std=4.0),
    ]
    t = Compose([spatial, *intensity])
    t.set_random_state(seed=seed)
    return t


def _geometry(index: int, zoom: float) -> Compose | None:
    if index % 3 == 1:
        return Compose([Spacingd(keys=_KEYS, pixdim=(1.2 / zoom, 1.2 / zoom, 1.5 / zoom), mode=("bilinear", "nearest"))])
    if index % 3 == 2:
        size = tuple(max(8, int(round(s * zoom))) for s in (256, 128, 256))
        return Compose(
            [
                # "nearest-exact", not torch's legacy "nearest": the latter samples floor(i * scale) and shifts the
                # labels by half an output voxel against the trilinear image (measured: 0.8/1.8/0.8 mm).
                Resized(keys=_KEYS, spatial_size=size, mode=("trilinear", "nearest-exact")),
                Orientationd(keys=_KEYS, axcodes="LPS", labels=None),
            ]
        )
    return None


def build_demo_cohort(
    out: str = "demo/cohort", subjects: int = 6, seed: int = 0, zoom: float = 1.0, overwrite: bool = False
) -> Path:
    """Write the cohort to ``out`` and return the datalist path.

    Args:
        out: output directory; refused if it already holds files unless ``overwrite``.
        subjects: number of subjects (≥ 3).
        seed: seed of every random variation (same seed → same volumes).
        zoom: shrink the template first (e.g. 0.5 for quick tests); 1.0 keeps the 1 mm template.
        overwrite: replace an existing cohort in ``out``.
    """
    out_dir = Path(out)
    splits = split_subjects(int(subjects))
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise DataError(out_dir, "output directory is not empty; choose another --out or pass --overwrite")
        for sub in ("images", "labels"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)

    set_determinism(seed=seed)
    template = load_mni152_template(zoom=zoom)
    split_of = {i: s for s, idx in splits.items() for i in idx}
    items: dict[str, list[dict[str, str]]] = {s: [] for s in splits}
    rows = []
    for i in range(int(subjects)):
        t0 = time.perf_counter()
        sub_seed = int(seed) * 1000 + i
        data = {
            "image": MetaTensor(torch.from_numpy(template.t1[None].copy()), affine=torch.as_tensor(template.affine)),
            "label": MetaTensor(torch.from_numpy(template.label[None].astype(np.float32)), affine=torch.as_tensor(template.affine)),
        }
        data = _variation(sub_seed)(data)
        geometry = _geometry(i, zoom)
        if geometry is not None:
            data = geometry(data)
        label = np.rint(data["label"].array[0]).astype(np.uint8)
        brain = label > 0
        # re-mask after the intensity changes: a skull-stripped scan has background exactly 0
        image = np.where(brain, np.maximum(data["image"].array[0], 1.0), 0.0).astype(np.float32)
        affine = np.asarray(data["image"].affine, dtype=np.float64)
        name = f"sub-{i:03d}"
        img_path, lab_path = out_dir / "images" / f"{name}.nii.gz", out_dir / "labels" / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(img_path))
        nib.save(nib.Nifti1Image(label, affine), str(lab_path))
        items[split_of[i]].append({"image": str(img_path), "label": str(lab_path)})
        counts = np.bincount(label[brain], minlength=4)[1:4]
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        rows.append(
            {
                "subject": name,
                "split": split_of[i],
                "shape": "x".join(map(str, label.shape)),
                "spacing_mm": "x".join(f"{s:.3g}" for s in spacing),
                "orientation": "".join(nib.aff2axcodes(affine)),
                "seed": sub_seed,
                "csf_share": round(float(counts[0] / counts.sum()), 4),
                "gm_share": round(float(counts[1] / counts.sum()), 4),
                "wm_share": round(float(counts[2] / counts.sum()), 4),
            }
        )
        print(f"{name} [{split_of[i]}] {rows[-1]['shape']} {rows[-1]['spacing_mm']} mm "
              f"{rows[-1]['orientation']} ({time.perf_counter() - t0:.1f} s)", flush=True)
    with open(out_dir / "cohort.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    datalist = write_datalist(
        out_dir / "datalist.json",
        items,
        overwrite=True,
        name="mednet MNI152 demo cohort",
        description=f"{subjects} subjects derived from MNI ICBM152 2009a (nilearn), seed {seed}, zoom {zoom}",
        labels={"0": "background", "1": "CSF", "2": "GM", "3": "WM"},
    )
    print(f"wrote {subjects} subjects, {out_dir / 'cohort.csv'} and {datalist}")
    return datalist


if __name__ == "__main__":
    from data_prep._cli import run_cli

    run_cli(build_demo_cohort)
