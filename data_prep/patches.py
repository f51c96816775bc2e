"""Command line of :func:`mednet.data.patch_files.write_patches` (options and outputs: see that module).

    python -m data_prep.patches --datalist demo/cohort/datalist.json --out demo/patches [--split training]
        [--patch_size 16] [--stride 1] [--min_pixels 8] [--max_background 0] [--max_patches_per_volume N] [--no-balance] [--seed 0]
        [--views 0,1,2] [--intensity_normalization histogram|scale|zscore] [--bias_correction n4|none] [--overwrite]
    python -m data_prep.patches --datalist demo/cohort/datalist.json --out demo/patches --grid --split test [--axis -1]
"""

from mednet.data.patch_files import *  # noqa: F401,F403  (the library function and its helpers, for ``from data_prep.patches import …``)
from mednet.data.patch_files import write_patches

if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(write_patches)
