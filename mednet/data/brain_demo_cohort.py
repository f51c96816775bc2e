"""Build a demo brain MRI cohort from the MNI ICBM152 template shipped with nilearn.

    python -m data_prep.demo_cohort --out demo/cohort --subjects 6 --seed 0 [--zoom 0.5] [--overwrite]

Each subject is the template T1 and its tissue labels (see :mod:`mednet.data.mni`) under seeded random
variation, drawn per subject, applied with MONAI transforms. The ranges are those real scanners produce, so a
model trained on the cohort has to cope with them (``VARIATION`` holds them; ``cohort.csv`` records each
subject's draws):

* spatial, to image and label together: one resampling combining an affine (rotation ±8°, scale ±8 %,
  translation ±5 voxels) and an elastic deformation (:class:`~monai.transforms.Rand3DElasticd`, magnitude
  80–160, sigma 8–10 voxels);
* intensity, to the image only, in acquisition order: a gamma contrast change (0.6–1.6; the sequence's tissue
  contrast), a bias field (:class:`~monai.transforms.RandBiasField`, degree 3, coefficients up to 0.4; the receive
  coil's profile, multiplying whatever contrast the sequence produced) and Rician noise of up to 5 % of the
  brain's median intensity (:class:`~monai.transforms.RandRicianNoise`; thermal noise of the magnitude image); the
  image is then re-masked so that background stays exactly 0 (a skull-stripped scan);
* geometry, so every later step runs off the template grid: subject ``i % 3 == 1`` is resampled to anisotropic
  voxels, 1.3–2.0 mm along one random axis and 0.9–1.2 mm along the others; subject ``i % 3 == 2`` to a
  256×128×256 grid stored in LPS orientation (0.77 × 1.82 × 0.74 mm, the course exercise's shape).

Test subjects are **harder** than the training subjects, by construction: gamma at the ends of the range (0.6–0.7
or 1.45–1.6), 5–6 % noise (training: up to 5 %), and a bias field whose realised range inside the brain (99.5th
over 0.5th percentile of the field) is at least ``TEST_FIELD_MARGIN`` × the largest of the training and
validation subjects' (coefficients drawn up to 0.4–0.5, then the log-field scaled up if it falls short). The
field is measured as it ends up in the image, after gamma, so the guarantee holds for what the network sees.

Every subject draws from its own random streams (``numpy.random.SeedSequence([seed, i])``, spawned once per
step: spatial, geometry, intensity draws, bias field, noise), so subjects and steps are independent and a change
to one step's draws moves no other.

Writes ``images/sub-XXX.nii.gz`` (float32), ``labels/sub-XXX.nii.gz`` (uint8), ``datalist.json``
(training / validation / test, by subject) and ``cohort.csv`` (one row per subject: split, shape, spacing,
orientation, the cohort's seed and generator, drawn bias coefficient bound and realised field range, gamma,
noise). The same seed gives the same volumes. The cohort is generated in a hidden staging folder next to the
output folder and moved into place only when complete (:func:`mednet.file_sets.replace_files`); with ``--overwrite`` the
earlier cohort's files are moved aside first and deleted only once the new ones are in place (moved back if that
fails, Ctrl-C included), so a run that fails midway leaves the earlier cohort intact. A run killed outright
(SIGKILL) leaves that hidden folder; the next run on the same ``--out`` puts the earlier cohort back from it and
deletes it.
"""

from __future__ import annotations

import csv
import math
import numbers
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    AdjustContrast,
    Compose,
    Orientationd,
    Rand3DElasticd,
    RandBiasField,
    RandRicianNoise,
    Resized,
    Spacingd,
)
from monai.utils import set_determinism

from mednet.data.datalist import write_datalist
from mednet.io import refuse_file_as_folder
from mednet.errors import DataError, OptionError
from mednet.data.mni import load_mni152_template
from mednet.file_sets import recover_replacements, replace_files
from mednet.io import atomic_path

__all__ = ["build_demo_cohort", "split_subjects", "subject_streams", "field_log_range", "VARIATION",
           "TEST_FIELD_MARGIN", "GENERATOR"]

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


#: per-subject intensity variation of training/validation subjects and of the (harder) test subjects
VARIATION = {
    "training": {"bias_coeff": (0.0, 0.4), "gamma": ((0.6, 1.6),), "noise": (0.0, 0.05)},
    "test": {"bias_coeff": (0.4, 0.5), "gamma": ((0.6, 0.7), (1.45, 1.6)), "noise": (0.05, 0.06)},
}


#: the test subjects' bias field spans at least this multiple of the widest training/validation field's range
TEST_FIELD_MARGIN = 1.15
#: written into ``cohort.csv``: a cohort from another generator is not reused as if it were this one's
GENERATOR = "mednet-demo-cohort-2"
#: the independent random streams of one subject, in spawn order
_STREAMS = ("spatial", "geometry", "draw", "bias", "noise")


def subject_streams(seed: int, index: int) -> dict[str, np.random.SeedSequence]:
    """Subject ``index``'s independent random streams (:data:`_STREAMS`), from ``SeedSequence([seed, index])``.

    Spawned, not ``seed + k``: seeds made by arithmetic collide between subjects (subject ``i``'s ``seed + 1`` is
    subject ``i + 1``'s ``seed``) and between transforms sharing one seed draw the same uniforms.
    """
    return dict(zip(_STREAMS, np.random.SeedSequence([int(seed), int(index)]).spawn(len(_STREAMS))))


def _monai_seed(stream: np.random.SeedSequence) -> int:
    """A 32-bit seed for a MONAI transform's ``set_random_state`` from ``stream``."""
    return int(stream.generate_state(1, dtype=np.uint32)[0])


def _spatial(seed: int) -> Rand3DElasticd:
    t = Rand3DElasticd(
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
    t.set_random_state(seed=seed)
    return t


def _draw_intensity(rng: np.random.Generator, split: str) -> dict[str, float]:
    """This subject's bias coefficient bound, gamma and noise level (fraction of the brain's median)."""
    v = VARIATION["test" if split == "test" else "training"]
    gamma_range = v["gamma"][int(rng.integers(len(v["gamma"])))]
    return {"bias_coeff": float(rng.uniform(*v["bias_coeff"])), "gamma": float(rng.uniform(*gamma_range)),
            "noise": float(rng.uniform(*v["noise"]))}


def field_log_range(log_field: np.ndarray, brain: np.ndarray) -> float:
    """``ln`` of the field's range inside ``brain``: 99.5th minus 0.5th percentile of ``log_field[brain]``
    (percentiles, so that a few voxels at the brain's edge do not decide it)."""
    lo, hi = np.percentile(log_field[brain], [0.5, 99.5])
    return float(hi - lo)


def _vary_intensity(image: MetaTensor, brain: np.ndarray, draw: dict[str, float], bias_seed: int, noise_seed: int,
                    min_log_range: float | None = None) -> tuple[MetaTensor, float]:
    """Gamma, bias field, then Rician noise (MONAI transforms); returns the image and the realised field range.

    ``min_log_range``: the field's log-range inside the brain (:func:`field_log_range`) is scaled up to at least
    this (the test subjects' guarantee); the field's shape is kept.
    """
    image = AdjustContrast(gamma=draw["gamma"])(image)
    bias = RandBiasField(degree=3, coeff_range=(0.0, draw["bias_coeff"]), prob=1.0)
    bias.set_random_state(seed=bias_seed)
    # the field itself (MONAI multiplies the image by exp(field)): applied to ones, the output is exp(field)
    log_field = np.log(np.asarray(bias(np.ones((1, *brain.shape), np.float32)))[0].astype(np.float64))
    log_range = field_log_range(log_field, brain)
    if min_log_range is not None and log_range < min_log_range:
        log_field *= min_log_range / max(log_range, 1e-12)
        log_range = field_log_range(log_field, brain)
    image = image * torch.from_numpy(np.exp(log_field)[None].astype(np.float32))
    sigma = draw["noise"] * float(np.median(image.array[0][brain]))
    noise = RandRicianNoise(prob=1.0, std=sigma, relative=False, sample_std=False)
    noise.set_random_state(seed=noise_seed)
    return noise(image), float(np.exp(log_range))


def _geometry(index: int, zoom: float, rng: np.random.Generator | None = None) -> Compose | None:
    """Resampling of subject ``index`` (``None``: stays on the template grid); ``rng`` draws the spacing."""
    if index % 3 == 1:
        rng = rng if rng is not None else np.random.default_rng(index)
        pixdim = rng.uniform(0.9, 1.2, size=3)
        pixdim[int(rng.integers(3))] = rng.uniform(1.3, 2.0)
        return Compose([Spacingd(keys=_KEYS, pixdim=tuple(float(p / zoom) for p in pixdim), mode=("bilinear", "nearest"))])
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


def _check_options(subjects, seed, zoom) -> tuple[int, int, float]:
    """``subjects``, ``seed`` and ``zoom`` as int, int, float; :class:`OptionError` naming every bad one."""
    problems = {}

    def as_int(value, name: str) -> int | None:
        if isinstance(value, bool):
            problems[name] = f"must be a whole number, got {value!r}"
            return None
        try:
            number = float(value) if isinstance(value, numbers.Number) else float(str(value).strip())
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number != int(number):
            problems[name] = f"must be a whole number, got {value!r}"
            return None
        return int(number)

    n = as_int(subjects, "--subjects")
    if n is not None and n < 3:
        problems["--subjects"] = f"a demo cohort needs at least 3 subjects (training, validation, test), got {n}"
    s = as_int(seed, "--seed")
    if s is not None and s < 0:  # numpy's generators take non-negative seeds only
        problems["--seed"] = f"must be ≥ 0, got {s}"
    try:
        z = math.nan if isinstance(zoom, bool) else float(zoom)
    except (TypeError, ValueError):
        z = math.nan
    if not 0 < z <= 1:  # also refuses NaN
        problems["--zoom"] = f"must be a number in (0, 1] (1 keeps the 1 mm template), got {zoom!r}"
    if problems:
        raise OptionError(problems)
    return n, s, z


def _cohort_files(out_dir: Path) -> list[Path]:
    """The files a cohort writes in ``out_dir`` that are there now (and nothing else a user keeps there), relative
    to ``out_dir``: ``datalist.json``, ``cohort.csv``, ``images/sub-*.nii.gz``, ``labels/sub-*.nii.gz``."""
    files = [Path("datalist.json"), Path("cohort.csv")]
    for sub in ("images", "labels"):
        if (out_dir / sub).is_dir():
            files += sorted(f.relative_to(out_dir) for f in (out_dir / sub).glob("sub-*.nii.gz"))
    return [f for f in files if (out_dir / f).is_file() or (out_dir / f).is_symlink()]


def build_demo_cohort(
    out: str = "demo/cohort", subjects: int = 6, seed: int = 0, zoom: float = 1.0, overwrite: bool = False
) -> Path:
    """Write the cohort to ``out`` and return the datalist path.

    Args:
        out: output directory; refused if it already holds files unless ``overwrite``.
        subjects: number of subjects (≥ 3).
        seed: seed of every random variation (same seed → same volumes).
        zoom: shrink the template first (e.g. 0.5 for quick tests); 1.0 keeps the 1 mm template.
        overwrite: replace an existing cohort in ``out`` (only the files a cohort writes: ``images/sub-*.nii.gz``,
            ``labels/sub-*.nii.gz``, ``datalist.json``, ``cohort.csv``; other files there are kept).

    Raises:
        OptionError: ``subjects`` or ``seed`` not a whole number, fewer than 3 subjects, ``zoom`` not in (0, 1];
            checked before anything is created.
        DataError: ``out`` (or its ``images``/``labels``) is a file or ``out`` lies under one, or ``out`` is not
            empty and not ``overwrite``.

    The new cohort is generated whole before it replaces the earlier one (:func:`mednet.file_sets.replace_files`): a run
    that fails (or is interrupted) midway leaves ``out`` as it was; if an earlier file cannot be put back, the
    :class:`DataError` names the hidden folder that keeps it. A run killed outright (SIGKILL) leaves a hidden
    ``.<out>.tmp-<8 hex>`` folder next to ``out``; the next run on ``out`` puts the earlier cohort back from it
    and deletes it, before it checks ``out``.
    """
    subjects, seed, zoom = _check_options(subjects, seed, zoom)
    out_dir = refuse_file_as_folder(out, "images", "labels")
    recover_replacements(out_dir)  # a run killed while replacing the cohort: the earlier one back, before the check
    splits = split_subjects(subjects)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(out_dir, "output directory is not empty; choose another --out or pass --overwrite")
    # The cohort is written whole into a hidden staging folder next to ``out`` and only then replaces the earlier
    # one's files, datalist.json last (:func:`mednet.file_sets.replace_files`): a failure while generating or while the
    # files move (Ctrl-C, a full disk, a bug) leaves the earlier cohort as it was, and no partial one that blocks
    # the re-run.
    with replace_files(out_dir, old=_cohort_files(out_dir), last="datalist.json") as staging:
        (staging / "images").mkdir()
        (staging / "labels").mkdir()
        datalist = _write_cohort(staging, subjects, seed, zoom, splits)
    print(f"wrote {subjects} subjects, {out_dir / 'cohort.csv'} and {out_dir / datalist.name}")
    return out_dir / datalist.name


def _write_cohort(staging: Path, subjects: int, seed: int, zoom: float, splits: dict[str, list[int]]) -> Path:
    """Generate every subject, ``cohort.csv`` and ``datalist.json`` into ``staging``; returns the staged datalist
    (its paths are relative to its folder, so it moves with the volumes)."""
    set_determinism(seed=seed)
    template = load_mni152_template(zoom=zoom)
    split_of = {i: s for s, idx in splits.items() for i in idx}
    items: dict[str, list[dict[str, str]]] = {s: [] for s in splits}
    rows = []
    widest = 0.0  # the widest realised log field range of the training/validation subjects so far
    for i in range(int(subjects)):
        t0 = time.perf_counter()
        streams = subject_streams(seed, i)
        data = {
            "image": MetaTensor(torch.from_numpy(template.t1[None].copy()), affine=torch.as_tensor(template.affine)),
            "label": MetaTensor(torch.from_numpy(template.label[None].astype(np.float32)), affine=torch.as_tensor(template.affine)),
        }
        data = _spatial(_monai_seed(streams["spatial"]))(data)
        geometry = _geometry(i, zoom, np.random.default_rng(streams["geometry"]))
        if geometry is not None:
            data = geometry(data)
        label = np.rint(data["label"].array[0]).astype(np.uint8)
        brain = label > 0
        draw = _draw_intensity(np.random.default_rng(streams["draw"]), split_of[i])
        # test subjects come last (split_subjects), so every training/validation field is known by then
        floor = math.log(TEST_FIELD_MARGIN) + widest if split_of[i] == "test" else None
        varied, field_range = _vary_intensity(data["image"], brain, draw, _monai_seed(streams["bias"]),
                                              _monai_seed(streams["noise"]), min_log_range=floor)
        if split_of[i] != "test":
            widest = max(widest, math.log(field_range))
        # re-mask after the intensity changes: a skull-stripped scan has background exactly 0
        image = np.where(brain, np.maximum(varied.array[0], 1.0), 0.0).astype(np.float32)
        affine = np.asarray(data["image"].affine, dtype=np.float64)
        name = f"sub-{i:03d}"
        img_path, lab_path = staging / "images" / f"{name}.nii.gz", staging / "labels" / f"{name}.nii.gz"
        for arr, path in ((image, img_path), (label, lab_path)):
            with atomic_path(path) as tmp:  # flushed to disk before it is renamed; tmp ends in .nii.gz
                nib.save(nib.Nifti1Image(arr, affine), str(tmp))
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
                "seed": int(seed),
                "generator": GENERATOR,
                "bias_coeff_max": round(draw["bias_coeff"], 3),
                "bias_field_range": round(field_range, 3),
                "gamma": round(draw["gamma"], 3),
                "noise_pct_of_median": round(100 * draw["noise"], 2),
                "csf_share": round(float(counts[0] / counts.sum()), 4),
                "gm_share": round(float(counts[1] / counts.sum()), 4),
                "wm_share": round(float(counts[2] / counts.sum()), 4),
            }
        )
        print(f"{name} [{split_of[i]}] {rows[-1]['shape']} {rows[-1]['spacing_mm']} mm {rows[-1]['orientation']}, "
              f"bias field x{field_range:.2f}, gamma {draw['gamma']:.2f}, noise {100 * draw['noise']:.1f} % "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    with atomic_path(staging / "cohort.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return write_datalist(
        staging / "datalist.json",
        items,
        name="mednet MNI152 demo cohort",
        description=f"{subjects} subjects derived from MNI ICBM152 2009a (nilearn), seed {seed}, zoom {zoom}",
        labels={"0": "background", "1": "CSF", "2": "GM", "3": "WM"},
    )
