"""Command-line wrapper: ``python -m data_prep.demo_cohort`` runs :func:`mednet.data.brain_demo_cohort.build_demo_cohort` (see its module for details).

Build a demo brain MRI cohort from the MNI ICBM152 template shipped with nilearn.

    python -m data_prep.demo_cohort --out demo/cohort --subjects 6 --seed 0 [--zoom 0.5] [--overwrite]

Each subject is the template T1 and its tissue labels (see :mod:`mednet.data.mni`) under seeded random
variation, drawn per subject, applied with MONAI transforms. The ranges are those real scanners produce, so a
model trained on the cohort has to cope with them (``VARIATION`` holds them; ``cohort.csv`` records each
subject's draws):

* spatial, to image and label together: one resampling combining an affine (rotation ±8°, scale ±8 %,
  translation ±5 voxels) and an elastic deformation (:class:`~monai.transforms.Rand3DElasticd`, magnitude
  80–160, sigma 8–10 voxels);
* intensity, to the image only, in acquisition order: a bias field (:class:`~monai.transforms.RandBiasFieldd`,
  degree 3, coefficients up to 0.4 — the brain's brightest part up to ≈ 2× its darkest), a gamma contrast change
  (0.6–1.6) and Rician noise of up to 5 % of the brain's median intensity
  (:class:`~monai.transforms.RandRicianNoised`); the image is then re-masked so that background stays exactly 0
  (a skull-stripped scan);
* geometry, so every later step runs off the template grid: subject ``i % 3 == 1`` is resampled to anisotropic
  voxels, 1.3–2.0 mm along one random axis and 0.9–1.2 mm along the others; subject ``i % 3 == 2`` to a
  256×128×256 grid stored in LPS orientation (0.77 × 1.82 × 0.74 mm, the course exercise's shape).

Test subjects are **harder** than the training subjects: bias coefficients 0.4–0.5, gamma at the ends of the
range (0.6–0.7 or 1.45–1.6) and 5–6 % noise — at or beyond the edge of what training saw.

Writes ``images/sub-XXX.nii.gz`` (float32), ``labels/sub-XXX.nii.gz`` (uint8), ``datalist.json``
(training / validation / test, by subject) and ``cohort.csv`` (one row per subject: split, shape, spacing,
orientation, seed, drawn bias coefficient bound and realised field range, gamma, noise). The same seed gives the
same volumes.
"""

from mednet.data.brain_demo_cohort import *  # noqa: F401,F403  (the library function and its helpers, for ``from data_prep.demo_cohort import …``)
from mednet.data.brain_demo_cohort import build_demo_cohort

if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(build_demo_cohort)
