"""Split bookkeeping shared by every task: the split names and the check that no group crosses splits.

A *group* is what must never be in two splits: a volume for brain segmentation (slices of one scan are
near-duplicates), a ``lesion_id`` for dermoscopy (HAM10000 holds 10,015 images of 7,470 lesions — images of
one lesion in training and test inflate every score). One checker serves both; the caller says what the
group is.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mednet.errors import DataError, OptionError

__all__ = ["SPLITS", "check_disjoint_groups", "check_fit_rows"]

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


def check_fit_rows(table, checkpoints: str | os.PathLike | Sequence[str | os.PathLike], split: str,
                   dataset_dir: str | os.PathLike, job: str = "calibration"):
    """Return ``table`` (rows a post-hoc fit is made on) after checking it is held-out validation data of every
    model in ``checkpoints``.

    A temperature, referral threshold or ensemble weight is *selected* on these rows, so they must be the
    validation split, and no lesion among them may be in the training or test split of the run that trained the
    model — possible when ``--dataset_dir`` names another split of the same source (another seed) than the run's
    own (``dataset_dir`` in its ``settings.json``).

    Args:
        table: the fitting rows, with a ``lesion_id`` column.
        checkpoints: the model(s) the fit is for (``settings.json`` beside each).
        split: the split ``table`` was read from; only ``"validation"`` is accepted.
        dataset_dir: the split folder ``table`` comes from.

    Raises:
        OptionError: ``split`` is not ``"validation"``.
        DataError: naming ``dataset_dir``, the run and how many of its training/test lesions are among the rows.
    """
    if split != "validation":
        raise OptionError({"--split": f"{job} is fitted on the validation split only (fitting it on {split!r} "
                                      "would select on data it must be judged on or was trained on)"})
    import pandas as pd

    lesions = set(table["lesion_id"].astype(str))
    for checkpoint in [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else checkpoints:
        settings_path = Path(checkpoint).parent / "settings.json"
        try:
            own = json.loads(settings_path.read_text(encoding="utf-8")).get("dataset_dir")
        except (OSError, ValueError, AttributeError):
            own = None
        if not own or Path(own).resolve() == Path(dataset_dir).resolve():
            continue
        own_csv = Path(own) / "split.csv"
        if not own_csv.is_file():
            logging.getLogger("mednet").warning(
                f"{checkpoint}: its training split {own} is not here; cannot check that the {job} rows of "
                f"{dataset_dir} are held out from it")
            continue
        rows = pd.read_csv(own_csv, usecols=["lesion_id", "split"], dtype=str)
        seen = rows[rows["split"].isin(["training", "test"])]
        shared = lesions & set(seen["lesion_id"])
        if shared:
            by_split = {s: len(shared & set(seen.loc[seen["split"] == s, "lesion_id"])) for s in ("training", "test")}
            raise DataError(dataset_dir, f"{len(shared)} lesion(s) of its validation split are in the training or test "
                                         f"split of the run that trained {checkpoint} ({own_csv}: "
                                         f"{by_split['training']} training, {by_split['test']} test); fit the "
                                         f"{job} on that run's own split (--dataset_dir {own})")
    return table
