"""The main job: demo cohort → train the ``skip`` FCN → evaluate on held-out subjects → print the report.

    python -m mednet.app.brain_demo [--out demo] [--epochs 6] [--subjects 6] [--variant skip] [--max_patches_per_volume 10000]

Runs, in order, what the README documents one by one: ``python -m data_prep.demo_cohort`` (skipped if
``<out>/cohort`` already holds a datalist), the brain bundle's ``train.json`` and ``evaluate.json``
(through MONAI's ``ConfigWorkflow``, like ``python -m monai.bundle run``). Sized to finish in ≤ 15 min on
2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from data_prep.demo_cohort import build_demo_cohort
from mednet.app.bundles import run_bundle

__all__ = ["brain_demo"]


def brain_demo(out: str = "demo", epochs: int = 6, subjects: int = 6, seed: int = 0, variant: str = "skip",
               max_patches_per_volume: int = 10000) -> dict:
    """Build (or reuse) the demo cohort under ``out``, train, evaluate; returns the run and report paths."""
    t0 = time.perf_counter()
    cohort = Path(out).resolve() / "cohort"
    if not (cohort / "datalist.json").is_file():
        build_demo_cohort(out=str(cohort), subjects=subjects, seed=seed)
    else:
        print(f"reusing the demo cohort in {cohort}")
    runs_root = str(Path(out).resolve() / "runs")
    train = run_bundle("brain_tissue_fcn", "train", dataset_dir=str(cohort), variant=variant, epochs=epochs,
                       runs_root=runs_root, seed=seed, max_patches_per_volume=max_patches_per_volume)
    run_dir = Path(train.parser.get_parsed_content("output_dir"))
    evaluation = run_bundle("brain_tissue_fcn", "evaluate", dataset_dir=str(cohort), variant=variant,
                            ckpt_path=str(run_dir / "model.pt"), runs_root=runs_root)
    eval_dir = Path(evaluation.parser.get_parsed_content("output_dir"))
    minutes = (time.perf_counter() - t0) / 60
    print(f"\nmednet brain demo finished in {minutes:.1f} min")
    print(f"  training run: {run_dir}  (model.pt, metrics.csv, convergence.png)")
    print(f"  evaluation:   {eval_dir}  (summary.md, whole_volume/, grid_patches/, predictions/)")
    print((eval_dir / "summary.md").read_text())
    return {"run_dir": str(run_dir), "eval_dir": str(eval_dir), "minutes": minutes}


if __name__ == "__main__":
    from data_prep._cli import run_cli

    run_cli(brain_demo)
