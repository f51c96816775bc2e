"""The main job: demo cohort → balanced patches → train the ``skip`` FCN → evaluate on held-out subjects.

    python -m mednet.app.brain_demo [--out demo] [--epochs 6] [--subjects 6] [--variant skip] [--max_patches_per_volume 10000]

Runs, in order, what the README documents one by one: ``python -m data_prep.demo_cohort`` (skipped if
``<out>/cohort`` already holds a datalist), ``python -m data_prep.patches`` (into a new
``<out>/patches-<time>/``: patches, stats JSON/CSV), the brain bundle's ``train.json`` on those patches and
``evaluate.json`` (through MONAI's ``ConfigWorkflow``, like ``python -m monai.bundle run``). Sized to finish
in ≤ 15 min on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from mednet.errors import DataError, OptionError
from mednet.data.brain_demo_cohort import GENERATOR, build_demo_cohort
from mednet.data.patch_files import write_patches
from mednet.app.bundles import run_bundle
from mednet.data.transforms import describe_preprocessing
from mednet.runs import new_run_dir

__all__ = ["brain_demo"]


def _check_reused_cohort(cohort: Path, subjects: int, seed: int) -> None:
    """Refuse to reuse a demo cohort built with another ``--subjects`` or ``--seed`` (its ``cohort.csv``): the run
    would train on other data than the command asks for, and its report would say otherwise."""
    import csv

    record = cohort / "cohort.csv"
    if not record.is_file():
        return
    with open(record, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    generator = rows[0].get("generator") if rows else None
    if rows and generator != GENERATOR:
        raise DataError(record, f"this demo cohort was made by {'an earlier mednet' if generator is None else generator}"
                                f", not by this mednet's generator ({GENERATOR}): its subjects differ from what "
                                "--seed gives now; choose another --out or delete the cohort folder")
    built = {"--subjects": len(rows)}
    if rows and str(rows[0].get("seed", "")).lstrip("-").isdigit():
        built["--seed"] = int(rows[0]["seed"])
    wanted = {"--subjects": int(subjects), "--seed": int(seed)}
    differ = {k: f"the demo cohort in {cohort} was built with {k} {built[k]}; pass {k} {built[k]} to reuse it, or "
                 f"choose another --out" for k in built if built[k] != wanted[k]}
    if differ:
        raise OptionError(differ)


def brain_demo(out: str = "demo", epochs: int = 6, subjects: int = 6, seed: int = 0, variant: str = "skip",
               max_patches_per_volume: int = 10000, max_background: float = 0.25,
               intensity_normalization: str = "histogram", views: tuple[int, ...] = (0, 1, 2),
               bias_correction: str = "n4", augmentation: bool = True) -> dict:
    """Build (or reuse) the demo cohort under ``out``, extract patches, train, evaluate; returns the paths.

    ``max_background``, ``intensity_normalization``, ``bias_correction``, ``augmentation`` and ``views`` (planes
    the patches are cut along and the network is applied along, probabilities averaged) are the bundle's defaults.
    """
    views = [int(v) for v in ((views,) if isinstance(views, int) else views)]
    t0 = time.perf_counter()
    cohort = Path(out).resolve() / "cohort"
    if not (cohort / "datalist.json").is_file():
        build_demo_cohort(out=str(cohort), subjects=subjects, seed=seed)
    else:
        _check_reused_cohort(cohort, subjects, seed)
        print(f"reusing the demo cohort in {cohort}")
    patches_dir = new_run_dir(Path(out).resolve(), "patches")
    patches = write_patches(str(cohort / "datalist.json"), str(patches_dir), max_patches_per_volume=max_patches_per_volume,
                            max_background=max_background, seed=seed,
                            intensity_normalization=intensity_normalization, views=views,
                            bias_correction=bias_correction)
    runs_root = str(Path(out).resolve() / "runs")
    train = run_bundle("brain_tissue_fcn", "train", dataset_dir=str(cohort), variant=variant, epochs=epochs,
                       runs_root=runs_root, seed=seed, patches_file=str(patches), max_background=max_background,
                       intensity_normalization=intensity_normalization, views=views,
                       bias_correction=bias_correction, augmentation=augmentation)
    run_dir = Path(train.parser.get_parsed_content("output_dir"))
    evaluation = run_bundle("brain_tissue_fcn", "evaluate", dataset_dir=str(cohort), variant=variant,
                            ckpt_path=str(run_dir / "model.pt"), runs_root=runs_root,
                            intensity_normalization=intensity_normalization, views=views,
                            bias_correction=bias_correction)
    eval_dir = Path(evaluation.parser.get_parsed_content("output_dir"))
    minutes = (time.perf_counter() - t0) / 60
    print(f"\nmednet brain demo finished in {minutes:.1f} min")
    print(f"  patches:      {patches_dir}  (patches_training.npz, stats_training.json/.csv)")
    print(f"  training run: {run_dir}  (model.pt, metrics.csv, convergence.png)")
    print(f"  evaluation:   {eval_dir}  (summary.md, whole_volume/, grid_patches/, predictions/)")
    print(f"  preprocessing: {describe_preprocessing(bias_correction, intensity_normalization, views)}; "
          f"training augmentation {'on' if augmentation else 'off'}")
    print((eval_dir / "summary.md").read_text(encoding="utf-8"))
    return {"patches": str(patches), "run_dir": str(run_dir), "eval_dir": str(eval_dir), "minutes": minutes}


if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(brain_demo)
