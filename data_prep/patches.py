"""Command-line wrapper: ``python -m data_prep.patches`` runs :func:`mednet.data.patch_files.write_patches` (see its module for details).

Extract class-balanced 2D training patches (or grid patches) from a datalist split.

    python -m data_prep.patches --datalist demo/cohort/datalist.json --out demo/patches [--split training]
        [--patch_size 16] [--stride 1] [--min_pixels 8] [--max_background 0] [--max_per_volume N] [--no-balance] [--seed 0]
        [--axes 0,1,2] [--intensity_normalization histogram|scale|zscore] [--bias_correction n4|none] [--overwrite]
    python -m data_prep.patches --datalist demo/cohort/datalist.json --out demo/patches --grid --split test [--axis -1]

Training mode (default) keeps overlapping windows with no background pixel (at most ``max_background``, a count
or fraction, if given) and at least ``min_pixels``
(a count, or a fraction of the window if < 1) of each of CSF/GM/WM, then balances the class shares.
Patches are cut from slices along each of ``--axes`` (default all three orthogonal planes; ``--axes 2`` is the
course exercise's axial-only setup), the per-volume cap shared by the axes.
Writes ``<out>/patches_<split>.npz`` (images, labels, positions = volume/axis/slice/row/col, volumes, axes),
``<out>/stats_<split>.json`` and ``<out>/stats_<split>.csv`` (class pixel distribution before = all brain
pixels, and after = kept patches), and prints the distribution.

``--grid`` instead cuts every slice into non-overlapping ``patch_size`` grid patches covering the whole slice
(validation/test protocol of the course exercise) with their positions, for reassembly.
"""

from mednet.data.patch_files import *  # noqa: F401,F403  (the library function and its helpers, for ``from data_prep.patches import …``)
from mednet.data.patch_files import write_patches

if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(write_patches)
