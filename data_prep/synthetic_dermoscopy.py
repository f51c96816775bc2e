"""Command-line wrapper: ``python -m data_prep.synthetic_dermoscopy`` runs
:func:`mednet.data.synthetic_dermoscopy.generate_synthetic_dermoscopy` (see its module for what is drawn and how
the classes overlap).

Write a procedurally generated, dermoscopy-like image set in the HAM10000 layout.

    python -m data_prep.synthetic_dermoscopy --out demo/dermoscopy --images 1000 [--size 64] [--seed 0] [--overwrite]

Writes ``<out>/HAM10000_metadata.csv`` (``lesion_id,image_id,dx,dx_type,age,sex,localization``; ``dx_type`` is
``synthetic`` in every row), ``<out>/images/<image_id>.jpg`` (``--size`` × ``--size`` RGB) and
``<out>/synthetic.json`` (seed, size, counts, class proportions and the documented class overlap). The same seed
gives byte-identical files. An existing, non-empty ``--out`` is refused unless ``--overwrite``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mednet.data.synthetic_dermoscopy import generate_synthetic_dermoscopy

__all__ = ["synthetic_dermoscopy"]


def synthetic_dermoscopy(out: str, images: int = 1000, size: int = 64, seed: int = 0, overwrite: bool = False) -> Path:
    """Parse-only wrapper: ``--out`` folder, ``--images`` count, ``--size`` pixels, ``--seed``, ``--overwrite``."""
    metadata = generate_synthetic_dermoscopy(out, n_images=images, size=size, seed=seed, overwrite=overwrite)
    print(f"wrote {images} synthetic images ({size}×{size} px, seed {seed}) and {os.fspath(metadata)}")
    return metadata


if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(synthetic_dermoscopy)
