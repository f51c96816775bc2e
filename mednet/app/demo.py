"""The main job: the brain demo, then the dermoscopy demo; prints where both reports are.

    python -m mednet.app.demo [--out demo]

Runs :func:`mednet.app.brain_demo.brain_demo` (MNI-derived cohort → patches → FCN → whole-volume evaluation) and
:func:`mednet.app.dermoscopy_demo.dermoscopy_demo` (synthetic dermoscopy set → lesion-grouped split → classifier
→ evaluation with the calibration report) with their defaults, under one output folder. Sized for ≤ 15 minutes
on 2 CPU cores.
"""

from __future__ import annotations

import time

from mednet.app.brain_demo import brain_demo
from mednet.app.dermoscopy_demo import dermoscopy_demo

__all__ = ["demo"]


def demo(out: str = "demo", seed: int = 0) -> dict:
    """Both demos under ``out``; returns their result dictionaries."""
    t0 = time.perf_counter()
    brain = brain_demo(out=out, seed=seed)
    dermoscopy = dermoscopy_demo(out=out, seed=seed)
    minutes = (time.perf_counter() - t0) / 60
    m = dermoscopy["metrics"]
    print(f"\nmednet demo finished in {minutes:.1f} min (brain {brain['minutes']:.1f}, dermoscopy {dermoscopy['minutes']:.1f})")
    print(f"  brain tissue segmentation report:  {brain['eval_dir']}/summary.md")
    print(f"  dermoscopy classification report:  {dermoscopy['eval_dir']}/classification_report.md "
          f"(synthetic data; balanced accuracy {m['balanced_accuracy']:.3f}, ECE {m['ece']:.4f})")
    return {"brain": brain, "dermoscopy": dermoscopy, "minutes": minutes}


if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(demo)
