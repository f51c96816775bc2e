"""Prepare a dermoscopy dataset folder: a lesion-grouped, class-stratified split (and optionally resized images).

    python -m data_prep.dermoscopy --metadata HAM10000_metadata.csv \\
        --images HAM10000_images_part_1 HAM10000_images_part_2 --out data/ham10000 \\
        [--val 0.15 --test 0.15 --seed 0] [--cache_size 64] [--format ham10000|isic2018|path_label|dermamnist] \\
        [--lesion_groups CSV] [--allow_missing] [--overwrite]

Writes ``OUT/split.csv`` (``image_id, lesion_id, dx, dx_type, path, split`` [+ ``cache_path``]),
``OUT/split_stats.csv``/``.md``, ``OUT/split.json`` and, with ``--cache_size N``, ``OUT/cache_N/*.png``; the
bundle's ``--dataset_dir OUT`` reads the folder. See :func:`mednet.data.lesion_split.prepare_dermoscopy_split`.

``--images``: python-fire takes one value per flag — on its own ``--images a b`` would give ``b`` to the next
parameter, and ``--images a --images b`` would keep only ``b``. This wrapper therefore joins every value
after ``--images`` (up to the next ``--flag``) and repeated ``--images`` flags into one comma-separated value
before fire parses the line, so ``--images a b``, ``--images a --images b`` and ``--images a,b`` all mean the
two folders ``a`` and ``b`` (a folder name containing a comma is not supported).

Formats (``--metadata`` is): ``ham10000`` the HAM10000 metadata CSV; ``isic2018`` an ISIC 2018 Task 3
ground-truth CSV (``--lesion_groups`` HAM10000 metadata or ISIC lesion groupings, else every image is its own
lesion); ``path_label`` a ``path,label`` CSV (no ``--images``); ``dermamnist`` a DermaMNIST(-C/-E) ``.npz``
(no ``--images``; images written to ``OUT/images``, its own split kept). ``--images`` is refused for the formats
that do not read image folders, ``--lesion_groups`` for every format but ``isic2018``: they would be ignored while
``split.json`` recorded them.

``--allow_missing`` (``ham10000``/``isic2018``): go on when more than 1 % of the listed images have no file
(e.g. one of HAM10000's two image folders left out on purpose); ``split.json`` records ``n_listed`` and
``n_missing`` either way.

``--out`` must be a folder (a file there is refused before anything is read). Everything ``--format dermamnist``
can be refused for (images too small for ``--cache_size``, existing PNGs) is checked before its first PNG is
written, so a refused run does not block the corrected one.

Without lesion ids (``lesion_id`` = ``image_id``) ``split.json`` records ``"lesion_ids_known": false`` and
``split_stats.md`` says the split is by image; a class missing from a split is warned about and recorded
(``empty_class_splits``); a split given a non-zero ``--val``/``--test`` that would be empty is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mednet.data.lesion_split import prepare_dermoscopy_split

__all__ = ["join_list_flag", "main", "prepare_dermoscopy_split"]


def join_list_flag(argv: Sequence[str], flag: str = "--images") -> list[str]:
    """``[--images, a, b, --out, o, --images, c]`` → ``[--images, a,b,c, --out, o]`` (also ``--images=a``).

    Values are the arguments after ``flag`` up to the next one starting with ``--``; every occurrence is merged
    into the first.
    """
    out: list[str] = []
    values: list[str] = []
    position: int | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag or arg.startswith(flag + "="):
            if position is None:
                position = len(out)
                out.append(flag)
            if "=" in arg:
                values.append(arg.split("=", 1)[1])
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        out.append(arg)
        i += 1
    if position is not None:
        out.insert(position + 1, ",".join(v for v in values if v))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Run :func:`prepare_dermoscopy_split` on ``argv`` (default ``sys.argv[1:]``)."""
    from mednet.cli import run_cli

    sys.argv[1:] = join_list_flag(sys.argv[1:] if argv is None else argv)
    run_cli(prepare_dermoscopy_split)


if __name__ == "__main__":
    main()
