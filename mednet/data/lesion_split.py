"""Lesion-grouped, class-stratified splits of dermoscopy tables, the split CSV, and its preparation.

HAM10000 holds 10,015 images of 7,470 lesions (Tschandl et al. 2018): up to six photographs of one lesion.
Splitting by image puts photographs of one lesion in training and test, and the test score then measures
recognition of seen lesions (the leak Abhishek et al. 2025 found in DermaMNIST). Here the unit of a split is
the lesion (``group``), and the split is stratified by diagnosis (``stratify``) so that rare classes (df, vasc:
about 1 % of images each) reach every split.

:func:`split_by_lesion` is a seeded greedy assignment written here rather than scikit-learn's
``StratifiedGroupKFold``: that gives k equal folds (15 %/15 %/70 % needs nested calls and approximate fold
sizes), balances classes only heuristically and guarantees no class in every fold. Per class, lesions are
shuffled with the seed. A class with fewer lesions than there are splits stays in training. Otherwise validation
and test each first take one of its smallest lesions, so that each split gets the class; then every lesion, in shuffled
order, goes to the split least filled relative to its target image count (fraction × the class's images). Each
split therefore holds each class's images within about one lesion (≤ 6 images in HAM10000) of its target, so
class proportions per split match the overall ones, and each split's lesions are a random sample: lesions with
several photographs reach validation and test in their share. (Before version 0.3.3 the largest lesions went
first, to the split furthest below its target in images, which was always training: validation and test then
held single-image lesions only.)

The split CSV (``split.csv``): ``image_id, lesion_id, dx, dx_type, path, split`` [``cache_path``], paths
relative to the CSV's folder (as in :func:`mednet.data.datalist.write_datalist`). :func:`prepare_dermoscopy_split`
writes it with ``split_stats.csv``/``.md`` and ``split.json``; :func:`load_split_table` reads it back for the
bundle's ``--dataset_dir``.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mednet.data.dermoscopy import (
    DERMOSCOPY_CLASSES,
    TABLE_COLUMNS,
    dermamnist_table,
    read_ham10000,
    read_isic2018_groundtruth,
    read_path_label_csv,
    write_resized_cache,
)
from mednet.data.splits import SPLITS, check_disjoint_groups
from mednet.errors import DataError, OptionError
from mednet.io import atomic_path, refuse_existing, refuse_file_as_folder
from mednet.reports import write_json, write_table

__all__ = [
    "SPLIT_COLUMNS",
    "SOURCE_FORMATS",
    "split_by_lesion",
    "check_group_disjoint",
    "split_stats",
    "write_split_table",
    "load_split_table",
    "read_dermoscopy_source",
    "data_provenance",
    "lesion_ids_known",
    "empty_class_splits",
    "prepare_dermoscopy_split",
]

logger = logging.getLogger("mednet")

#: columns of ``split.csv`` (``cache_path`` follows when a resized cache was written)
SPLIT_COLUMNS: tuple[str, ...] = (*TABLE_COLUMNS, "split")
#: the ``--format`` values of :func:`prepare_dermoscopy_split`
SOURCE_FORMATS: tuple[str, ...] = ("ham10000", "isic2018", "path_label", "dermamnist")
_PATH_COLUMNS = ("path", "cache_path")
#: the formats that read ``--images`` folders; the others name (``path_label``) or hold (``dermamnist``) their images
_IMAGE_FOLDER_FORMATS = ("ham10000", "isic2018")
_OWN_IMAGES = {"path_label": "its CSV's path column names each image", "dermamnist": "the .npz holds the images"}


def _source(table: pd.DataFrame, source: str | os.PathLike | None) -> str | None:
    return os.fspath(source) if source is not None else table.attrs.get("source")


def _positive_int(value: object) -> bool:
    """``value`` is a whole number > 0 (not a bool): a usable ``--cache_size`` before it is checked."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _check_fractions(val: float, test: float) -> None:
    problems = {}
    for option, value in (("--val", val), ("--test", test)):
        if not 0 <= float(value) < 1:
            problems[option] = f"must be a fraction in [0, 1), got {value}"
    if not problems and float(val) + float(test) >= 1:
        problems["--val"] = f"--val {val} + --test {test} leaves no training images (the sum must be below 1)"
    if problems:
        raise OptionError(problems)


def _lesion_labels(table: pd.DataFrame, stratify: str | None, group: str, source: str | None) -> pd.Series:
    """One ``stratify`` value per group; DataError if a group's images disagree."""
    for column in (group, stratify):
        if column is not None and column not in table.columns:
            raise DataError(source, f"the table has no column {column!r} (columns: {', '.join(table.columns)})")
    if stratify is None:
        return pd.Series("all", index=pd.Index(table[group].unique(), name=group))
    labels = table.groupby(group, sort=False)[stratify].unique()
    mixed = labels[labels.map(len) > 1]
    if len(mixed):
        lesion = mixed.index[0]
        raise DataError(source, f"{group} {lesion} has images with different {stratify}: "
                                f"{', '.join(map(str, mixed.iloc[0]))} ({len(mixed)} such {group}s); one lesion has "
                                "one diagnosis — fix the metadata")
    return labels.map(lambda v: v[0])


def split_by_lesion(
    table: pd.DataFrame,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    stratify: str | None = "dx",
    group: str = "lesion_id",
    source: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Assign every row to ``training``/``validation``/``test``, whole groups at a time, stratified.

    Args:
        table: one row per image, with columns ``group`` and ``stratify``.
        val, test: fractions of the images of each class for validation and test (0 leaves the split out).
        seed: the assignment is a function of ``seed`` and the table's content (not its row order).
        stratify: the class column (None: no stratification).
        group: rows with one value here always share a split.
        source: the table's file, for error messages (default ``table.attrs["source"]``).

    Returns:
        A copy of ``table`` with a ``split`` column. Every class with at least as many groups as there are
        (non-empty) splits appears in every split; each split holds each class's images within about one group
        (at most ≈ 1.3 × the largest group, measured on 150 random tables) of ``fraction × class images``.

    Raises:
        DataError: a group whose rows have different ``stratify`` values, a missing column, an empty table.
        OptionError: fractions outside [0, 1) or summing to 1 or more.
    """
    _check_fractions(val, test)
    source = _source(table, source)
    if table.empty:
        raise DataError(source, "no images to split")
    labels = _lesion_labels(table, stratify, group, source)
    sizes = table.groupby(group, sort=False).size()
    fractions = {"training": 1.0 - val - test, "validation": float(val), "test": float(test)}
    active = [s for s in SPLITS if fractions[s] > 0]
    rng = np.random.default_rng(seed)
    assignment: dict[object, str] = {}
    for label in sorted(labels.unique(), key=str):
        lesions = sorted(labels.index[labels == label], key=str)  # independent of row order
        lesions = [lesions[i] for i in rng.permutation(len(lesions))]
        total = float(sizes[lesions].sum())
        target = {s: fractions[s] * total for s in active}
        count = dict.fromkeys(active, 0.0)
        if len(lesions) < len(active):  # too few to reach every split: all to training, where they teach the class
            assignment.update(dict.fromkeys(lesions, "training"))
            continue
        # each split gets the class: the small splits first take the first of the smallest lesions (a 6-image lesion
        # would overshoot a rare class's 15 % at once)
        for s in sorted((s for s in active if s != "training"), key=lambda s: fractions[s]):
            g = min(lesions, key=lambda g: sizes[g])  # the first such in shuffled order
            lesions.remove(g)
            assignment[g], count[s] = s, count[s] + sizes[g]
        # in shuffled order, each lesion goes to the split least filled relative to its target. Not largest lesion
        # first: training's large target would then take every multi-image lesion, and the held-out splits would
        # be single-image lesions only, not a sample of the lesions (HAM10000: 26 % of lesions have several images)
        for g in lesions:
            s = min(active, key=lambda s: count[s] / target[s])  # ties: training, validation, test
            assignment[g], count[s] = s, count[s] + sizes[g]
    out = table.copy()
    out["split"] = table[group].map(assignment)
    return out


def check_group_disjoint(
    table: pd.DataFrame, group: str = "lesion_id", path: str | os.PathLike | None = None, split_column: str = "split"
) -> None:
    """Raise :class:`DataError` if one ``group`` value (lesion, volume, patient) appears in two splits.

    The table's columns are checked here; the check itself is the project's one split checker,
    :func:`mednet.data.splits.check_disjoint_groups` (the brain datalists use it with the volume as group).
    """
    source = _source(table, path)
    for column in (group, split_column):
        if column not in table.columns:
            raise DataError(source, f"the table has no column {column!r} (columns: {', '.join(table.columns)})")
    check_disjoint_groups(zip(table[split_column], table[group]), source, what=group)


def split_stats(table: pd.DataFrame, class_names: Sequence[str] = DERMOSCOPY_CLASSES,
                class_column: str = "dx", group: str | None = "lesion_id") -> pd.DataFrame:
    """Images per class × split: columns ``class, training, validation, test, total``; rows ``class_names``
    then ``total`` (images) and, with ``group``, ``lesions`` (distinct groups per split)."""
    counts = pd.crosstab(table[class_column], table["split"]).reindex(index=list(class_names), columns=list(SPLITS),
                                                                      fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum(axis=0)
    if group is not None:
        lesions = table.groupby("split")[group].nunique().reindex(list(SPLITS), fill_value=0)
        counts.loc["lesions"] = [*lesions.tolist(), int(table[group].nunique())]
    return counts.astype(int).rename_axis(None, axis=1).reset_index(names="class")


def _relative(path: str, base: Path) -> str:
    return os.path.relpath(Path(path).resolve(), base) if path else path


def write_split_table(table: pd.DataFrame, csv: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``table``'s :data:`SPLIT_COLUMNS` (+ ``cache_path``) to ``csv`` atomically, paths relative to its
    folder; refused if ``csv`` exists unless ``overwrite``."""
    csv = Path(csv)
    base = csv.parent.resolve()
    columns = [*SPLIT_COLUMNS, *(["cache_path"] if "cache_path" in table.columns else [])]
    out = table[columns].copy()
    for column in _PATH_COLUMNS:
        if column in out.columns:
            out[column] = [_relative(p, base) for p in out[column]]
    with atomic_path(csv, overwrite=overwrite) as tmp:
        out.to_csv(tmp, index=False)
    return csv


def load_split_table(
    dataset_dir_or_csv: str | os.PathLike,
    split: str | None = None,
    class_names: Sequence[str] = DERMOSCOPY_CLASSES,
    check_files: bool = True,
) -> pd.DataFrame:
    """Read ``split.csv`` (a folder holding it, or the CSV) with absolute paths, checked.

    Checks: the columns :data:`SPLIT_COLUMNS`, ``dx`` in ``class_names``, ``split`` in
    ``training/validation/test``, no duplicate ``image_id`` or ``path`` (one file under two ids would be two
    lesions, possibly in two splits), no lesion in two splits
    (:func:`check_group_disjoint`) and, with ``check_files``, every ``path`` (and ``cache_path``) exists.

    Args:
        split: keep only this split's rows (an absent or empty split is an error naming the present ones).

    Returns:
        The table (``path``/``cache_path`` absolute), ``attrs["source"]`` = the CSV.
    """
    from mednet.data.dermoscopy import _check_unique_ids, _check_unique_paths, _read_csv, _row

    csv = Path(dataset_dir_or_csv)
    if csv.is_dir() or not csv.suffix:
        csv = csv / "split.csv"
    if not csv.is_file():
        raise DataError(csv, "split table not found (prepare one with `python -m data_prep.dermoscopy`)")
    table = _read_csv(csv, SPLIT_COLUMNS)
    classes = set(class_names)
    for i, (dx, s) in enumerate(zip(table["dx"], table["split"])):
        if dx not in classes:
            raise DataError(_row(csv, i), f"unknown dx {dx!r} (expected one of {', '.join(class_names)})")
        if s not in SPLITS:
            raise DataError(_row(csv, i), f"unknown split {s!r} (expected one of {', '.join(SPLITS)})")
    _check_unique_ids(list(table["image_id"]), csv)
    check_group_disjoint(table, path=csv)
    base = csv.resolve().parent
    for column in _PATH_COLUMNS:
        if column not in table.columns:
            continue
        table[column] = [os.path.normpath(base / p) if p else p for p in table[column]]
        _check_unique_paths(list(table[column]), csv, column)
        if check_files:
            for i, p in enumerate(table[column]):
                if not p or not Path(p).is_file():
                    raise DataError(_row(csv, i), f"{column} {p or '(empty)'} does not exist")
    lines = [_row(csv, i) for i in range(len(table))]
    if split is not None:
        if split not in SPLITS:
            raise OptionError({"--split": f"unknown split {split!r} (expected one of {', '.join(SPLITS)})"})
        present = [s for s in SPLITS if (table["split"] == s).any()]
        keep = (table["split"] == split).to_numpy()
        lines = [line for line, k in zip(lines, keep) if k]
        table = table[keep].reset_index(drop=True)
        if table.empty:
            raise DataError(csv, f"split '{split}' is empty (present: {', '.join(present)})")
    table.attrs["source"] = str(csv)
    table.attrs["rows"] = lines  # each row's place in the CSV, for errors found later (``<csv>:row <n>``)
    return table


def _image_dirs(images: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[str]:
    """``"a,b"``, ``("a", "b")`` or ``["a"]`` → ``["a", "b"]`` (python-fire turns ``--images a,b`` into a tuple)."""
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)):
        images = os.fspath(images).split(",")
    return [os.fspath(d).strip() if not isinstance(d, (int, float)) else str(d) for d in images if str(d).strip()]


def read_dermoscopy_source(
    metadata: str | os.PathLike,
    images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    format: str = "ham10000",
    lesion_groups: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    allow_missing: bool = False,
    cache_size: int = 0,
) -> pd.DataFrame:
    """Read one source in ``format`` (:data:`SOURCE_FORMATS`) as a table (``dermamnist`` writes its PNGs
    under ``out/images``, after checking them against ``cache_size``: :func:`~mednet.data.dermoscopy.
    dermamnist_table`). ``allow_missing``: HAM10000 / ISIC 2018 may lack files for more than 1 % of the
    listed images (``attrs["n_listed"]``, ``attrs["n_missing"]`` count them).

    Raises:
        OptionError: an unknown ``format``; no ``images`` for a format that reads image folders; ``images`` or
            ``lesion_groups`` given to a format that does not read them (they would be ignored, while
            ``split.json`` records them as the source).
    """
    if format not in SOURCE_FORMATS:
        raise OptionError({"--format": f"unknown format {format!r} (expected one of {', '.join(SOURCE_FORMATS)})"})
    dirs = _image_dirs(images)
    problems = {}
    if format in _IMAGE_FOLDER_FORMATS and not dirs:
        problems["--images"] = f"the {format} format needs the image folder(s): --images DIR or --images DIR1,DIR2"
    elif format not in _IMAGE_FOLDER_FORMATS and dirs:
        problems["--images"] = (f"--format {format} reads no image folder ({_OWN_IMAGES[format]}); leave --images "
                                "out")
    if lesion_groups not in (None, "") and format != "isic2018":
        problems["--lesion_groups"] = (f"only --format isic2018 reads lesion groups; --format {format} "
                                       + ("has its own lesion_id column" if format == "ham10000" else
                                          "takes lesion ids from its own lesion_id column" if format == "path_label"
                                          else "has no lesion ids") + "; leave --lesion_groups out")
    if problems:
        raise OptionError(problems)
    if format == "ham10000":
        return read_ham10000(metadata, dirs, allow_missing=allow_missing)
    if format == "isic2018":
        return read_isic2018_groundtruth(metadata, dirs, lesion_groups, allow_missing=allow_missing)
    if format == "path_label":
        return read_path_label_csv(metadata)
    if out is None:
        raise OptionError({"--out": "the dermamnist format writes its images under --out"})
    return dermamnist_table(metadata, out, overwrite=overwrite, cache_size=cache_size)


def data_provenance(table: pd.DataFrame) -> str:
    """``"synthetic"`` when every ``dx_type`` is ``synthetic``, ``"real"`` when none is, else ``"mixed"``."""
    synthetic = table["dx_type"].astype(str).str.lower().eq("synthetic")
    return "synthetic" if synthetic.all() else "real" if not synthetic.any() else "mixed"


def lesion_ids_known(table: pd.DataFrame) -> bool:
    """Whether ``table``'s ``lesion_id`` names lesions: False when every ``lesion_id`` is its row's ``image_id``.

    That is what the readers set when the source has no lesion ids (ISIC 2018 without ``--lesion_groups``, a
    ``path,label`` CSV without ``lesion_id``, DermaMNIST): each image is then its own "lesion", so a split by
    ``lesion_id`` is a split by image and images of one lesion may be in two splits.
    """
    return not table["lesion_id"].astype(str).eq(table["image_id"].astype(str)).all()


def empty_class_splits(table: pd.DataFrame, splits: Sequence[str] = SPLITS,
                       class_column: str = "dx") -> dict[str, list[str]]:
    """``{class: [splits with no image of it]}`` for the classes present in ``table`` (``splits`` in order).

    A class with fewer lesions than splits cannot reach every split (:func:`split_by_lesion` keeps it in training):
    its validation/test recall is then undefined, which a report must not pass over silently.
    """
    counts = pd.crosstab(table[class_column], table["split"]).reindex(columns=list(splits), fill_value=0)
    return {str(c): [s for s in splits if counts.loc[c, s] == 0] for c in sorted(counts.index, key=str)
            if (counts.loc[c] == 0).any()}



def prepare_dermoscopy_split(
    metadata: str | os.PathLike,
    out: str | os.PathLike,
    images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    cache_size: int = 0,
    format: str = "ham10000",
    lesion_groups: str | os.PathLike | None = None,
    overwrite: bool = False,
    allow_missing: bool = False,
) -> Path:
    """Read a dermoscopy source, split it by lesion (stratified by dx) and write the dataset folder ``out``.

    Writes (atomically; each refused if it exists unless ``overwrite``):

    * ``out/split.csv`` — ``image_id, lesion_id, dx, dx_type, path, split`` [+ ``cache_path``];
    * ``out/split_stats.csv`` / ``.md`` — images per class × split, totals and lesions (:func:`split_stats`);
    * ``out/split.json`` — the settings (source, format, seed, fractions), image/lesion counts per split,
      ``data_provenance`` (``synthetic`` when ``dx_type`` says so), ``lesion_ids_known`` (False when every
      ``lesion_id`` is its ``image_id``: the source had no lesion ids, the split is by image and the stats footer
      says so) and ``empty_class_splits`` (``{class: [splits without its images]}``, also logged as warnings);
    * with ``cache_size`` > 0, ``out/cache_<size>/<image_id>.png`` (:func:`write_resized_cache`; with
      ``overwrite`` every listed image is resized again, so a new source with the same image ids never trains
      on the old pixels);
    * for ``format="dermamnist"``, ``out/images/*.png``.

    A source that carries its own split (DermaMNIST; a ``path_label`` CSV with a ``split`` column) keeps it
    (checked lesion-disjoint); ``val``/``test``/``seed`` are then unused and ``split.json`` says so.

    Args:
        metadata: HAM10000 metadata CSV, ISIC 2018 ground-truth CSV, ``path,label`` CSV or DermaMNIST ``.npz``.
        images: image folder(s) for ``ham10000``/``isic2018`` (refused for the other formats): a list, or one string
            with commas.
        lesion_groups: ``isic2018`` only (refused for the other formats): image → lesion_id CSV
            (see :func:`~mednet.data.dermoscopy.read_isic2018_groundtruth`).
        allow_missing: ``ham10000``/``isic2018``: go on when more than 1 % of the listed images have no file
            (e.g. one of HAM10000's two image folders on purpose); ``split.json`` records ``n_listed`` and
            ``n_missing`` either way.

    Returns:
        The path of ``split.csv``.

    Raises:
        DataError: naming ``metadata``, when a split given a non-zero fraction would get no image (too few lesions
            per class: each class needs one lesion per split to reach it); nothing is written then. Naming ``out``
            (or its ``images``/``cache_<size>``) when it is a file or lies under one, before anything is read.
            For ``dermamnist``, images too small for ``cache_size`` and existing PNGs are refused before the first
            PNG is written.
        OptionError: bad fractions, seed or cache size; ``images``/``lesion_groups`` missing for, or given to a
            format that does not read them (:func:`read_dermoscopy_source`).
    """
    # a file as --out (or as the folder of its images or cache) is refused before the first read or write
    out = refuse_file_as_folder(out, *(["images"] if format == "dermamnist" else []),
                                *([f"cache_{cache_size}"] if _positive_int(cache_size) else []))
    csv, stats_stem, settings = out / "split.csv", out / "split_stats", out / "split.json"
    refuse_existing(csv, stats_stem.with_suffix(".csv"), stats_stem.with_suffix(".md"), settings, overwrite=overwrite)
    _check_fractions(val, test)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise OptionError({"--seed": f"must be a whole number ≥ 0, got {seed!r}"})
    if int(cache_size) < 0:
        raise OptionError({"--cache_size": f"must be 0 (no cache) or a number of pixels, got {cache_size}"})
    table = read_dermoscopy_source(metadata, images, format, lesion_groups, out, overwrite, allow_missing,
                                   cache_size=int(cache_size))
    n_listed, n_missing = table.attrs.get("n_listed"), table.attrs.get("n_missing")  # before attrs can be lost
    source = table.attrs.get("source", os.fspath(metadata))
    kept = "split" in table.columns
    fractions = {"training": 1.0 - float(val) - float(test), "validation": float(val), "test": float(test)}
    if kept:
        check_group_disjoint(table, path=source)
        logger.info("%s: the source's own split is kept (--val/--test/--seed unused)", source)
    else:
        table = split_by_lesion(table, val=val, test=test, seed=seed, source=source)
        # a split asked for (fraction > 0) that got no image: the run would select or be tested on nothing
        empty = [s for s in SPLITS if fractions[s] > 0 and not (table["split"] == s).any()]
        if empty:
            per_class = table.groupby("dx")["lesion_id"].nunique()
            raise DataError(source, f"split(s) {', '.join(empty)} would be empty: {len(table)} images of "
                                    f"{table['lesion_id'].nunique()} lesions, and a class reaches every split only "
                                    f"with at least {sum(f > 0 for f in fractions.values())} lesions (lesions per class: "
                                    + ", ".join(f"{c} {n}" for c, n in per_class.items())
                                    + "); add images, or set the fraction of that split to 0 (--val 0 / --test 0)")
    # the splits that should hold every class: the source's own, or those given a fraction
    requested = [s for s in SPLITS if ((table["split"] == s).any() if kept else fractions[s] > 0)]
    empty_cells = empty_class_splits(table, requested)
    for dx, splits in empty_cells.items():
        logger.warning("%s: class %s has no image in %s (%d lesion(s) of it in all; a class reaches every split only "
                       "with at least one lesion per split): its recall there is undefined", source, dx,
                       ", ".join(splits), table.loc[table["dx"] == dx, "lesion_id"].nunique())
    ids_known = lesion_ids_known(table)
    if not ids_known:
        logger.warning("%s: no lesion ids (every lesion_id is its image_id): the split is by image, and images of one "
                       "lesion may be in two splits", source)
    if cache_size:
        table = write_resized_cache(table, out, int(cache_size), overwrite=overwrite)  # no stale pixels
    write_split_table(table, csv, overwrite=overwrite)
    stats = split_stats(table)
    provenance = data_provenance(table)
    footer = ("\nLast row: distinct lesions per split. No lesion is in two splits.\n" if ids_known else
              "\nLast row: distinct lesion ids per split. Lesion ids were unknown (each image is its own lesion_id), "
              "so images of one lesion may be in two splits.\n")
    if empty_cells:
        footer += "No image of: " + "; ".join(f"{dx} in {', '.join(sp)}" for dx, sp in empty_cells.items()) + ".\n"
    write_table(stats, stats_stem, title=f"Images per class and split ({provenance} data, {Path(source).name})",
                footer=footer)
    per_split = table.groupby("split")
    write_json({
        "source": os.fspath(Path(metadata).resolve()),
        "format": format,
        "image_dirs": [os.fspath(Path(d).resolve()) for d in _image_dirs(images)],
        "lesion_groups": os.fspath(Path(lesion_groups).resolve()) if lesion_groups else None,
        "split_from_source": kept,
        "seed": None if kept else int(seed),
        "fractions": None if kept else {"validation": float(val), "test": float(test)},
        "stratify": "dx",
        "group": "lesion_id",
        "lesion_ids_known": ids_known,  # False: lesion_id = image_id, a split by image (not lesion-disjoint)
        "empty_class_splits": empty_cells,  # {class: [splits with none of its images]}
        "cache_size": int(cache_size) or None,
        "class_names": list(DERMOSCOPY_CLASSES),
        "data_provenance": provenance,
        "n_listed": None if n_listed is None else int(n_listed),  # images the metadata lists (release formats)
        "n_missing": None if n_missing is None else int(n_missing),  # of which without a file (skipped)
        "n_images": int(len(table)),
        "n_lesions": int(table["lesion_id"].nunique()),
        "n_images_per_split": {s: int(per_split.size().get(s, 0)) for s in SPLITS},
        "n_lesions_per_split": {s: int(per_split["lesion_id"].nunique().get(s, 0)) for s in SPLITS},
    }, settings, overwrite=True)  # refused above unless overwrite
    print(f"{csv}: {len(table)} images of {table['lesion_id'].nunique()} lesions ({provenance} data), "
          + ", ".join(f"{s} {int(per_split.size().get(s, 0))}" for s in SPLITS))
    return csv
