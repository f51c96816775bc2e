"""Split bookkeeping shared by every task: the split names and the check that no group crosses splits.

A *group* is what must never be in two splits: a volume for brain segmentation (slices of one scan are
near-duplicates), a ``lesion_id`` for dermoscopy (HAM10000 holds 10,015 images of 7,470 lesions — images of
one lesion in training and test inflate every score). One checker serves both; the caller says what the
group is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mednet.errors import DataError, OptionError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SPLITS", "check_disjoint_groups", "check_fit_rows", "check_evaluated_rows", "check_evaluated_volumes",
           "split_csv_path",
           "recorded_dataset_dir", "split_fingerprint"]

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
    """The checkpoints to check, an ensemble run followed by its members' (recursively): an ensemble's own
    ``settings.json`` names only the split its weights were chosen on, while each member trained on its own."""
    found: list[str | os.PathLike] = []
    pending = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints)
    members_of: dict[str, str] = {}  # member → the ensemble that names it (for the warning)
    while pending:
        checkpoint = pending.pop(0)
        if any(Path(checkpoint) == Path(c) for c in found):
            continue
        found.append(checkpoint)
        try:
            settings = json.loads((Path(checkpoint).parent / "settings.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if str(checkpoint) in members_of:  # a top-level checkpoint without settings is checked elsewhere
                logging.getLogger("mednet").warning(
                    f"{members_of[str(checkpoint)]}: its member {checkpoint} has no readable settings.json here; "
                    "cannot check that the evaluated rows are held out from it")
            continue
        members = settings.get("members") if isinstance(settings, dict) else None
        if isinstance(members, list):
            for member in (m for m in members if isinstance(m, str)):
                path = _member_path(member)
                members_of[str(path)] = str(checkpoint)
                pending.append(path)
    return found


def _member_path(member: str) -> Path:
    """An ensemble member's checkpoint: recorded absolute since the bundle's 0.3.3, before that as typed (tried
    against the current folder, then the checkout)."""
    path = Path(member)
    if not path.is_absolute() and not path.exists():
        with contextlib.suppress(FileNotFoundError):
            from mednet.app.bundles import repo_root

            if (repo_root() / path).exists():
                path = repo_root() / path
    return path / "model.pt" if path.is_dir() else path


def split_csv_path(dataset_dir: str | os.PathLike) -> Path:
    """The ``split.csv`` of a split folder, or the CSV itself when ``dataset_dir`` names one (as
    :func:`mednet.data.lesion_split.load_split_table` accepts both)."""
    path = Path(dataset_dir)
    return path if path.suffix.lower() == ".csv" else path / "split.csv"


def recorded_dataset_dir(dataset_dir: str | os.PathLike) -> str:
    """``dataset_dir`` as a run records it in ``settings.json``: absolute, so that evaluation, calibration and
    distillation started from another folder find the split the run was trained on."""
    return str(Path(dataset_dir).resolve())


def split_fingerprint(dataset_dir: str | os.PathLike) -> str:
    """SHA-256 of a split's assignment: its sorted ``image_id, lesion_id, split`` rows (``dataset_dir``: a split
    folder or its ``split.csv``).

    Recorded in a run's ``settings.json`` at training, it tells whether the split was re-made since (another seed
    or method with ``--overwrite`` in the same folder), in which case its test rows may be images the run trained
    on. Paths, ``dx_type`` and the cache column are left out: moving the data or caching it changes no assignment.
    """
    import hashlib

    from mednet.data.dermoscopy import _read_csv  # the project's CSV reader (strings, BOM/spaces removed)

    csv = split_csv_path(dataset_dir)
    rows = _read_csv(csv, ["image_id", "lesion_id", "split"], allow_empty=True)
    lines = sorted("\t".join(r) for r in zip(rows["image_id"], rows["lesion_id"], rows["split"]))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _recorded_split_csv(recorded: str) -> Path | None:
    """The ``split.csv`` a run's recorded ``dataset_dir`` names, or None when it is not on this machine.

    Runs record an absolute path; runs made before that recorded the path as typed, relative to the folder the
    bundle ran in — tried against the current folder, then the checkout (bundle paths are relative to it).
    """
    candidates = [split_csv_path(recorded)]
    if not candidates[0].is_absolute():
        with contextlib.suppress(FileNotFoundError):
            from mednet.app.bundles import repo_root

            candidates.append(repo_root() / candidates[0])
    return next((c.resolve() for c in candidates if c.is_file()), None)


def _run_split(checkpoint: str | os.PathLike, dataset_dir: str | os.PathLike,
               job: str) -> tuple[str, Path, pd.DataFrame] | None:
    """The split a run was trained on: ``(its dataset_dir, its split.csv, rows as str)``, rows with
    ``image_id, lesion_id, split`` and ``path`` (resolved).

    The run's ``settings.json`` (beside ``checkpoint``) names the split it was trained on; its ``split.csv`` says
    where each image and lesion went. None (nothing to compare) when the settings name no split or name the
    ``dataset_dir`` itself (one split table is lesion-disjoint: :func:`check_disjoint_groups`), and, with a
    warning, when that ``split.csv`` is not on this machine.

    Raises:
        DataError: the settings record a ``split_fingerprint`` (:func:`split_fingerprint`) and the split found
            there now assigns its images differently: the run's own split was re-made since training, so which
            lesions the run trained on can no longer be told.
    """
    from mednet.data.dermoscopy import _read_csv  # the project's CSV reader (strings, BOM/spaces removed)

    settings_path = Path(checkpoint).parent / "settings.json"
    try:
        settings = json.loads(settings_path.read_text(encoding="utf-8"))
        own, fingerprint = settings.get("dataset_dir"), settings.get("split_fingerprint")
    except (OSError, ValueError, AttributeError):
        own, fingerprint = None, None
    if not own:
        return None
    own_csv = _recorded_split_csv(str(own))
    if own_csv is None:
        logging.getLogger("mednet").warning(
            f"{checkpoint}: its training split {own} is not here; cannot check that the {job} rows of "
            f"{dataset_dir} are held out from it")
        return None
    if fingerprint and split_fingerprint(own_csv) != fingerprint:
        raise DataError(own_csv, f"its images are assigned to splits differently from when {checkpoint} was trained "
                                 f"on it ({settings_path}: split_fingerprint); the split was re-made since (another "
                                 "--seed or version with --overwrite?), so its test rows may be images the model "
                                 "trained on — evaluate on the split the run was trained on, or train again")
    if own_csv == split_csv_path(dataset_dir).resolve():
        return None
    rows = _read_csv(own_csv, ["lesion_id", "split"], allow_empty=True)
    for column in ("image_id", "path"):  # always in a split.csv the project writes
        if column not in rows.columns:
            rows[column] = ""
    rows = rows[["image_id", "lesion_id", "split", "path"]].copy()
    rows["path"] = [os.path.realpath(own_csv.parent / p) if p else "" for p in rows["path"]]
    return str(own), own_csv, rows


def _shared_lesions(table, seen) -> tuple[set[str], dict[str, set[str]]]:
    """The ``lesion_id`` of ``table``'s rows that are in ``seen`` (rows of a run's split) by lesion, by
    ``image_id`` or by image file, overall and per ``seen`` split.

    The image id and file catch the same photograph under another lesion id: ISIC 2018's training images *are*
    HAM10000's, and read without ``--lesion_groups`` each is its own "lesion".
    """
    import pandas as pd

    lesions = table["lesion_id"].astype(str)
    keys = [("lesion_id", lesions)]
    if "image_id" in table.columns:
        keys.append(("image_id", table["image_id"].astype(str)))
    if "path" in table.columns:
        keys.append(("path", pd.Series([os.path.realpath(p) if p else "" for p in table["path"]], index=table.index,
                                       dtype=object)))
    by_split: dict[str, set[str]] = {}
    for split, rows in seen.groupby("split"):
        hit = None
        for column, values in keys:
            known = set(rows[column]) - {""}
            found = values.isin(known)
            hit = found if hit is None else hit | found
        by_split[str(split)] = set(lesions[hit])
    return set().union(*by_split.values()) if by_split else set(), by_split


def check_fit_rows(table, checkpoints: str | os.PathLike | Sequence[str | os.PathLike], split: str,
                   dataset_dir: str | os.PathLike, job: str = "calibration"):
    """Return ``table`` (rows a post-hoc fit is made on) after checking it is held-out validation data of every
    model in ``checkpoints``.

    A temperature, referral threshold or ensemble weight is *selected* on these rows, so they must be the
    validation split, and no lesion among them may be in the training or test split of the run that trained the
    model — possible when ``--dataset_dir`` names another split of the same source (another seed) than the run's
    own (``dataset_dir`` in its ``settings.json``). A row counts as in the run's split by its lesion, its image id
    or its image file (:func:`_shared_lesions`).

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
    for checkpoint in _as_list(checkpoints):
        found = _run_split(checkpoint, dataset_dir, job)
        if found is None:
            continue
        own, own_csv, rows = found
        shared, by_split = _shared_lesions(table, rows[rows["split"].isin(["training", "test"])])
        if shared:
            raise DataError(dataset_dir, f"{len(shared)} lesion(s) of its validation split are in the training or test "
                                         f"split of the run that trained {checkpoint} ({own_csv}: "
                                         f"{len(by_split.get('training', ()))} training, "
                                         f"{len(by_split.get('test', ()))} test); fit the "
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
    report labels as such). A row counts as in the run's split by its lesion, its image id or its image file (the
    same photograph under another lesion id, :func:`_shared_lesions`). Lesions the run's split does not list (an
    external test set) pass.

    Args:
        table: the evaluated rows, with a ``lesion_id`` column (``attrs["source"]``: the CSV, named in errors).
        checkpoints: the evaluated model, or every member of an ensemble (``settings.json`` beside each).
        split: the split ``table`` was read from.
        dataset_dir: the split folder ``table`` comes from.

    Raises:
        DataError: ``"<table>: N lesion(s) of its <split> split are in the training or validation split of the
            run that trained <checkpoint> (<run split.csv>: a training, b validation; e.g. …)"``.
    """
    source = table.attrs.get("source") or split_csv_path(dataset_dir)
    fitted = [s for s in ("training", "validation") if s != split]  # what the model was trained / selected on
    for checkpoint in _as_list(checkpoints):
        found = _run_split(checkpoint, dataset_dir, job)
        if found is None:
            continue
        own, own_csv, rows = found
        shared, found_in = _shared_lesions(table, rows[rows["split"].isin(fitted)])
        if shared:
            by_split = ", ".join(f"{len(found_in.get(s, ()))} {s}" for s in fitted)
            examples = ", ".join(sorted(shared)[:3]) + (", …" if len(shared) > 3 else "")
            raise DataError(source, f"{len(shared)} lesion(s) of its {split} split are in the "
                                    f"{' or '.join(fitted)} split of the run that trained {checkpoint} ({own_csv}: "
                                    f"{by_split}; e.g. {examples}); its {job} would score the model on lesions it "
                                    f"was trained or selected on — evaluate on that run's own split "
                                    f"(--dataset_dir {own})")
    return table


def _run_volumes(checkpoint: str | os.PathLike) -> dict[str, set[str]]:
    """``{"training": {...}, "validation": {...}}``: the real paths of the volumes a brain run trained and selected
    on, from the records beside ``checkpoint`` (``patch_stats.json``'s per-volume rows, ``validation_volumes.json``);
    a split without a record is left out (runs before those records existed)."""
    run = Path(checkpoint).parent
    found: dict[str, set[str]] = {}
    for split, name, read in (
            ("training", "patch_stats.json", lambda d: [row.get("volume") for row in d.get("per_volume") or []]),
            ("validation", "validation_volumes.json", lambda d: [item.get("image") for item in d.get("validation") or []])):
        try:
            paths = read(json.loads((run / name).read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        found[split] = {os.path.realpath(p) for p in paths if isinstance(p, str) and p}
    return found


def check_evaluated_volumes(items: Sequence[dict], checkpoint: str | os.PathLike, split: str,
                            datalist: str | os.PathLike, job: str = "evaluation") -> Sequence[dict]:
    """Return ``items`` (datalist entries a brain model is scored on) after checking that none is a volume the run
    of ``checkpoint`` trained on or selected its epoch on — the brain counterpart of :func:`check_evaluated_rows`.

    Evaluation picks the newest finished run with matching settings when ``--ckpt_path`` is not given, and that
    run may have been trained on another cohort that holds the evaluated scans: its Dice would then be a training
    score reported as a test score. A volume (by its real path) in the run's training split is refused unless the
    evaluated split is ``training`` (the report then says so), likewise for validation.

    Raises:
        DataError: naming ``datalist``, the run and a few of the volumes.
    """
    seen = _run_volumes(checkpoint)
    fitted = [s for s in ("training", "validation") if s != split and s in seen]
    evaluated = {os.path.realpath(str(item["image"])): str(item["image"]) for item in items if item.get("image")}
    shared = {s: sorted(p for p in evaluated if p in seen[s]) for s in fitted}
    if any(shared.values()):
        total = sorted({p for paths in shared.values() for p in paths})
        examples = ", ".join(Path(evaluated[p]).name for p in total[:3]) + (", …" if len(total) > 3 else "")
        counts = ", ".join(f"{len(shared[s])} {s}" for s in fitted)
        raise DataError(datalist, f"{len(total)} volume(s) of its {split} split are volumes the run of {checkpoint} "
                                  f"was trained or selected on ({counts}; e.g. {examples}); its {job} would report "
                                  f"a training score as a {split} score — pass --ckpt_path of a run trained without "
                                  f"them, or --split training / validation to score those on purpose")
    return items
