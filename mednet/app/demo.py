"""The main job: the brain demo, then the dermoscopy demo; prints where both reports are.

    python -m mednet.app.demo [--out demo]

Runs :func:`mednet.app.brain_demo.brain_demo` (MNI-derived cohort → patches → FCN → whole-volume evaluation) and
:func:`mednet.app.dermoscopy_demo.dermoscopy_demo` (synthetic dermoscopy set → lesion-grouped split → classifier
→ evaluation with the calibration report) with their defaults, under one output folder. Sized for ≤ 15 minutes
on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Iterator

from mednet.app.brain_demo import brain_demo
from mednet.app.dermoscopy_demo import dermoscopy_demo
from mednet.errors import DataError, OptionError

__all__ = ["demo"]


@contextlib.contextmanager
def _only_own_options(out: str) -> Iterator[None]:
    """A demo folder built by ``brain_demo --subjects 3`` (or ``dermoscopy_demo --images 500``) is refused by the
    part it belongs to with "pass --subjects 3 to reuse it" — an option this command does not take."""
    try:
        yield
    except OptionError as e:
        reuse = {flag: why for flag, why in e.problems.items() if " was built with " in why or " was made with " in why}
        foreign = [flag for flag in reuse if flag.lstrip("-") not in inspect.signature(demo).parameters]
        if not foreign:  # not a demo folder's refusal, or one this command's own options fix
            raise
        built = "; ".join(why.split("; pass ")[0] for why in reuse.values())  # every difference, --seed too
        raise DataError(out, f"{built} — python -m mednet.app.demo has no {', '.join(foreign)}: choose another --out "
                             "(or delete that folder), or run python -m mednet.app.brain_demo / dermoscopy_demo with "
                             "those options") from None


def demo(out: str = "demo", seed: int = 0) -> dict:
    """Both demos under ``out``; returns their result dictionaries."""
    t0 = time.perf_counter()
    with _only_own_options(out):
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
