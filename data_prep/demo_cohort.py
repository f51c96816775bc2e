"""Command line of :func:`mednet.data.brain_demo_cohort.build_demo_cohort` (options and outputs: see that module).

    python -m data_prep.demo_cohort --out demo/cohort --subjects 6 --seed 0 [--zoom 0.5] [--overwrite]
"""

from mednet.data.brain_demo_cohort import *  # noqa: F401,F403  (the library function and its helpers, for ``from data_prep.demo_cohort import …``)
from mednet.data.brain_demo_cohort import build_demo_cohort

if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(build_demo_cohort)
