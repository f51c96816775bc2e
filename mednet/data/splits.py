"""Split bookkeeping shared by every task: the split names and the check that no group crosses splits.

A *group* is what must never be in two splits: a volume for brain segmentation (slices of one scan are
near-duplicates), a ``lesion_id`` for dermoscopy (HAM10000 holds 10,015 images of 7,470 lesions — images of
one lesion in training and test inflate every score). One checker serves both; the caller says what the
group is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from mednet.errors import DataError

__all__ = ["SPLITS", "check_disjoint_groups"]

#: split names, in the order of MONAI datalists and of split CSVs
SPLITS = ("training", "validation", "test")


def check_disjoint_groups(assignments: Iterable[tuple[str, object]], source: str | os.PathLike | None = None,
                          what: str = "group") -> None:
    """Raise :class:`DataError` if one group is assigned to two different splits.

    Args:
        assignments: ``(split, group key)`` pairs, e.g. ``("training", "HAM_0000118")``; the same pair may repeat
            (several images of one lesion in one split are fine).
        source: the file the assignments come from (named in the error).
        what: the group's name in the message (``"volume"``, ``"lesion"``).

    Raises:
        DataError: ``"<source>: lesion_id HAM_0000118 is in both 'training' and 'test'"`` (and, when several
            groups leak, how many: a wrong split is then easier to recognise than one stray row).
    """
    seen: dict[object, str] = {}
    leaks: dict[object, tuple[str, str]] = {}
    for split, group in assignments:
        first = seen.setdefault(group, split)
        if first != split and group not in leaks:
            leaks[group] = (first, split)
    if leaks:
        group, (first, split) = next(iter(leaks.items()))
        more = f" ({len(leaks)} {what}s are in more than one split)" if len(leaks) > 1 else ""
        raise DataError(source, f"{what} {group} is in both '{first}' and '{split}'{more}; all of a {what}'s "
                                "images must stay in one split")
