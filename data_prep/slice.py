"""Command line of :func:`mednet.data.slice_files.slice_datalist` (options and outputs: see that module).

    python -m data_prep.slice --datalist demo/cohort/datalist.json --out demo/slices [--split training]
        [--axis -1] [--drop_empty] [--intensity_normalization histogram|scale|zscore] [--bias_correction n4|none]
        [--overwrite]
"""

from mednet.data.slice_files import *  # noqa: F401,F403  (the library function and its helpers, for ``from data_prep.slice import …``)
from mednet.data.slice_files import slice_datalist

if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(slice_datalist)
