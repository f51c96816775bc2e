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
from typing import TYPE_CHECKING

from mednet.errors import DataError, OptionError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SPLITS", "check_disjoint_groups", "check_fit_rows", "check_evaluated_rows"]

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


def _as_list(checkpoints: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    return [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints)


def _run_split(checkpoint: str | os.PathLike, dataset_dir: str | os.PathLike,
               job: str) -> tuple[str, Path, pd.DataFrame] | None:
    """The split a run was trained on: ``(its dataset_dir, its split.csv, rows lesion_id/split as str)``.

    The run's ``settings.json`` (beside ``checkpoint``) names the split folder it was trained on; its
    ``split.csv`` says where each lesion went. None (nothing to compare) when the settings name no folder or name
    ``dataset_dir`` itself (one split table is lesion-disjoint: :func:`check_disjoint_groups`), and, with a
    warning, when that folder's ``split.csv`` is not on this machine.
    """
    from mednet.data.dermoscopy import _read_csv  # the project's CSV reader (strings, BOM/spaces removed)

    settings_path = Path(checkpoint).parent / "settings.json"
    try:
        own = json.loads(settings_path.read_text(encoding="utf-8")).get("dataset_dir")
    except (OSError, ValueError, AttributeError):
        own = None
    if not own or Path(own).resolve() == Path(dataset_dir).resolve():
        return None
    own_csv = Path(own) / "split.csv"
    if not own_csv.is_file():
        logging.getLogger("mednet").warning(
            f"{checkpoint}: its training split {own} is not here; cannot check that the {job} rows of "
            f"{dataset_dir} are held out from it")
        return None
    return own, own_csv, _read_csv(own_csv, ["lesion_id", "split"], allow_empty=True)[["lesion_id", "split"]]


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
    lesions = set(table["lesion_id"].astype(str))
    for checkpoint in _as_list(checkpoints):
        found = _run_split(checkpoint, dataset_dir, job)
        if found is None:
            continue
        own, own_csv, rows = found
        seen = rows[rows["split"].isin(["training", "test"])]
        shared = lesions & set(seen["lesion_id"])
        if shared:
            by_split = {s: len(shared & set(seen.loc[seen["split"] == s, "lesion_id"])) for s in ("training", "test")}
            raise DataError(dataset_dir, f"{len(shared)} lesion(s) of its validation split are in the training or test "
                                         f"split of the run that trained {checkpoint} ({own_csv}: "
                                         f"{by_split['training']} training, {by_split['test']} test); fit the "
                                         f"{job} on that run's own split (--dataset_dir {own})")
    return table


def check_evaluated_rows(table, checkpoints: str | os.PathLike | Sequence[str | os.PathLike], split: str,
                         dataset_dir: str | os.PathLike, job: str = "evaluation"):
    """Return ``table`` (rows a model is scored on) after checking that no lesion among them was fitted or
    selected on by the run of any model in ``checkpoints``.

    ``--dataset_dir`` may name another split of the same source (another seed) than the run's own
    (``dataset_dir`` in its ``settings.json``): that folder's test split then holds lesions the model was trained
    on or selected on, and the scores are inflated without any sign. A lesion is refused when the run's
    ``split.csv`` puts it in ``training`` or ``validation`` and that is not the split being evaluated (rows of the
    run's own test split pass; so do the run's validation rows evaluated as ``--split validation``, which the
    report labels as such). Lesions the run's split does not list (an external test set) pass.

    Args:
        table: the evaluated rows, with a ``lesion_id`` column (``attrs["source"]``: the CSV, named in errors).
        checkpoints: the evaluated model, or every member of an ensemble (``settings.json`` beside each).
        split: the split ``table`` was read from.
        dataset_dir: the split folder ``table`` comes from.

    Raises:
        DataError: ``"<table>: N lesion(s) of its <split> split are in the training or validation split of the
            run that trained <checkpoint> (<run split.csv>: a training, b validation; e.g. …)"``.
    """
    lesions = set(table["lesion_id"].astype(str))
    source = table.attrs.get("source") or Path(dataset_dir) / "split.csv"
    fitted = [s for s in ("training", "validation") if s != split]  # what the model was trained / selected on
    for checkpoint in _as_list(checkpoints):
        found = _run_split(checkpoint, dataset_dir, job)
        if found is None:
            continue
        own, own_csv, rows = found
        seen = rows[rows["split"].isin(fitted)]
        shared = lesions & set(seen["lesion_id"])
        if shared:
            by_split = ", ".join(f"{len(shared & set(seen.loc[seen['split'] == s, 'lesion_id']))} {s}" for s in fitted)
            examples = ", ".join(sorted(shared)[:3]) + (", …" if len(shared) > 3 else "")
            raise DataError(source, f"{len(shared)} lesion(s) of its {split} split are in the "
                                    f"{' or '.join(fitted)} split of the run that trained {checkpoint} ({own_csv}: "
                                    f"{by_split}; e.g. {examples}); its {job} would score the model on lesions it "
                                    f"was trained or selected on — evaluate on that run's own split "
                                    f"(--dataset_dir {own})")
    return table
