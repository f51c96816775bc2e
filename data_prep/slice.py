"""Command-line wrapper: ``python -m data_prep.slice`` runs :func:`mednet.data.slice_files.slice_datalist` (see its module for details).

Slice 3D volumes into 2D slices with provenance.

    python -m data_prep.slice --datalist demo/cohort/datalist.json --out demo/slices [--split training]
        [--axis -1] [--drop_empty] [--intensity_normalization histogram|scale|zscore] [--bias_correction n4|none]
        [--overwrite]

For every volume of the split (all splits by default) writes ``<out>/<split>/<name>_axis<A>.npz`` holding
``images`` (S, H, W) float32 (RAS-oriented, brain-normalised), ``labels`` (S, H, W) uint8 if labelled,
``indices`` (S,) the slice index along the axis, ``axis``, ``source`` and ``volume_shape``; and
``<out>/slices.csv`` with one row per slice: split, volume, name, axis, index, file, foreground pixels.

``<name>`` is the volume's file stem, with parent folders prefixed only where stems collide within the split
(:func:`mednet.data.naming.unique_names`: ``subA/T1.nii.gz``, ``subB/T1.nii.gz`` → ``subA_T1``, ``subB_T1``), so
no volume's slices overwrite another's. Files are written atomically and never over an existing one unless
``--overwrite``.
"""

from mednet.data.slice_files import *  # noqa: F401,F403  (the library function and its helpers, for ``from data_prep.slice import …``)
from mednet.data.slice_files import slice_datalist

if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(slice_datalist)
