"""Gated retraining: retrain a run on a split with clinicians' feedback, and promote the new model only if it
is not worse.

    python -m mednet.app.retrain --run RUN --dataset_dir MERGED_SPLIT --out DIR [--epochs N]
        [--serving FILE] [--tolerance 0.0] [--<train.json option> VALUE ...]

1. ``--run`` is a finished training run folder, its ``model.pt``, or a serving file (:func:`resolve_serving`; any
   other file is refused: the run's ``model.pt`` is what is retrained and compared). Its ``settings.json`` gives
   the training settings repeated here — model, image size, cifar stem, batch norm, augmentation, loss,
   optimiser, learning rate, epochs, batch size, selection metric, seed, and (runs trained since the bundle's
   0.2.0) the learning-rate schedule, milestones, momentum, weight decay and the augmentation/loss parameters.
   Older runs do not record those: they take the bundle's defaults unless given here as ``--lr_schedule cosine
   --weight_decay 1e-4`` …; ``--epochs`` and any other option given here override the run's. The candidate's
   referral threshold is fitted for the old run's ``target_accuracy``, ``min_accepted`` and ``confidence_level``
   (``--referral_confidence``), read from its ``calibration.json`` (what the served model was calibrated for, also
   after a refit with ``calibrate.json``). ``val_interval`` and
   ``weights_path`` (fine-tuning from pre-trained weights) are carried when ``settings.json`` records them; runs
   that do not record them are retrained with the bundle's defaults (validation every epoch, from scratch) unless
   given here as ``--val_interval N --weights_path FILE``.
2. ``--dataset_dir`` is the split with the feedback (``python -m data_prep.feedback merge``). Its validation and
   test rows must be exactly those of the split the run was trained on (same images, lesions, labels and files),
   and that split must still assign its images as when the run was trained (its ``split_fingerprint`` in
   ``settings.json``), else nothing is trained: the comparison is only fair on unchanged held-out data. Training
   rows of that split missing from ``--dataset_dir`` (a merge from an earlier split drops the earlier rounds'
   feedback) are not refused, but warned about and counted in ``comparison.json`` (``training_rows_dropped``:
   count and a few image ids) and ``comparison.md``.
3. The candidate is trained in ``DIR/candidate`` (``train.json``, ``--run_dir``), then both models are evaluated
   on the validation and the test split (``evaluate.json``; each applies its own run's ``calibration.json``,
   i.e. its temperature fitted on validation) into ``DIR/evaluations/``.
4. The gate (:func:`promotion_decision`): on **both** splits the candidate's balanced accuracy ≥ old − tolerance,
   melanoma sensitivity (``recall_mel``) ≥ old − tolerance and ECE ≤ old + tolerance (``--tolerance`` in
   ``[0, 0.1]``, default 0).
5. ``DIR/comparison.md`` and ``DIR/comparison.json`` are written either way (old and new per split and
   criterion, pass/fail, the decision and its reasons). Only when the candidate is promoted and ``--serving FILE``
   is given, ``FILE`` is (atomically) replaced by ``{"run": candidate, "promoted_at", "previous": old run,
   "comparison": DIR/comparison.json}``; the web demo accepts this file as its ``--run``. Otherwise ``FILE`` is
   not touched. The candidate was only compared with ``--run``, so ``FILE``, if it exists, must name that run:
   a command whose ``FILE`` names another run is refused before any training, and at promotion ``FILE`` is
   checked again and replaced under a file lock (``FILE.lock``): if meanwhile it came to name another run (a
   second retraining from the same serving file promoted first), it is left as it is and ``comparison.json``
   (``serving_refused``) and ``comparison.md`` say why.

Resumable: run the same command again — a finished candidate (``DIR/candidate/finished.json``) is not trained
again, an interrupted one continues from its last epoch, and a finished evaluation is reused when its
``provenance.json`` names the same ``model.pt`` (SHA-256), split and dataset (a candidate trained again after
``DIR/candidate`` was deleted is evaluated again). ``DIR/retrain.json`` records the run, split, training options
and tolerance (and the last ``--serving`` given); once ``DIR`` holds a (partly) trained candidate or an evaluation,
a command with another run, split or training options is refused, and one with another ``--tolerance`` too (the
same candidate would be judged again by another gate). A decision once written is never replaced by another:
``comparison.json``/``.md`` are rewritten only with the same decision (e.g. to record a promotion into a
``--serving`` file given only now), and a resumed command whose gate decides otherwise (the candidate was trained
again after ``DIR/candidate`` was deleted) is refused. The same command run again after its promotion (``FILE``
now names the candidate) has nothing to do: it says so in one line naming ``comparison.md`` and exits with status 0;
so has the command run again without ``--serving`` once ``comparison.json`` records a promotion into a serving file
(the record of which file serves the candidate is kept), and another ``--serving`` is then refused (one serving
file per retraining).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mednet.app.bundles import repo_root, run_bundle
from mednet.calibration.run_calibration import calibrated_referral_settings
from mednet.data.feedback import _LOCK_TIMEOUT_S, held_out_rows
from mednet.errors import DataError, OptionError
from mednet.io import write_json_atomic, write_text_atomic
from mednet.runs import FINISHED_FILE, LOCK_FILE, PROVENANCE_FILE, SETTINGS_FILE, file_sha256, new_run_dir, now_iso

__all__ = ["CRITERIA", "GATE_SPLITS", "MAX_TOLERANCE", "check_tolerance", "promotion_decision", "resolve_serving",
           "retrain"]

logger = logging.getLogger("mednet")

BUNDLE = "dermoscopy_classification"
#: the splits the gate looks at (the merge leaves them unchanged)
GATE_SPLITS: tuple[str, ...] = ("validation", "test")
#: ``(metric key in metrics.json, "higher"/"lower" is better, label)``
CRITERIA: tuple[tuple[str, str, str], ...] = (
    ("balanced_accuracy", "higher", "balanced accuracy"),
    ("recall_mel", "higher", "mel sensitivity"),
    ("ece", "lower", "ECE"),
)
#: settings of the old run repeated by the retraining (those ``settings.json`` records and train.json takes)
CARRIED_SETTINGS: tuple[str, ...] = ("model", "image_size", "cifar_stem", "batch_norm", "augmentation", "loss",
                                     "optimizer", "learning_rate", "epochs", "batch_size", "selection_metric", "seed",
                                     # recorded by runs trained since the bundle's 0.2.0:
                                     "lr_schedule", "milestones", "lr_gamma", "momentum", "weight_decay",
                                     "mixup_alpha", "augmix_jsd", "label_smoothing", "focal_gamma", "drw_start",
                                     "balanced_sampler",
                                     # carried when recorded (train.json's settings.json does not record them yet):
                                     "val_interval", "weights_path", "target_accuracy", "referral_min_accepted",
                                     "referral_confidence")
#: what evaluation must repeat to rebuild a run's network (``cosine_head`` follows from ``loss``)
_MODEL_SETTINGS = ("model", "image_size", "cifar_stem", "batch_norm", "loss")
#: what the referral threshold is fitted for (train.json's and calibrate.json's options)
_REFERRAL_SETTINGS = ("target_accuracy", "referral_min_accepted", "referral_confidence")
_EPS = 1e-12  # values equal up to float round-off are equal
#: the largest ``--tolerance`` (:func:`check_tolerance`)
MAX_TOLERANCE = 0.1


# ---------------------------------------------------------------------------------------------------- serving
def resolve_serving(path: str | os.PathLike) -> Path:
    """The run folder ``path`` stands for: a run folder is itself, its ``model.pt`` its folder, a serving file
    (JSON written by a promotion) the ``"run"`` it names (relative to the file's folder if relative).

    Only ``model.pt`` stands for its run: the web demo and the retraining use the run's ``model.pt``, so another
    checkpoint of the run (``model_final.pt``, ``checkpoint_last.pt``) would silently be replaced by it.

    Raises:
        DataError: ``path`` missing, a file other than ``model.pt`` that is not a serving file, or naming a run
            that is not there.
    """
    p = Path(path)
    if p.is_dir():
        return p
    if not p.is_file():
        raise DataError(p, "not found (expected a run folder or a serving file)")
    if p.name == "model.pt":
        return p.parent
    if p.suffix == ".pt":
        raise DataError(p, f"takes only a run folder, its model.pt or a serving file: the run's model.pt is what is "
                           f"used, not {p.name} (give the run folder {p.parent})")
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(p, f"not a run folder or a serving file (JSON with \"run\"): takes only a run folder, its "
                           f"model.pt or a serving file ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("run"), str) or not record["run"]:
        raise DataError(p, "not a serving file: expected a JSON object with \"run\" (a run folder)")
    run = Path(record["run"])
    if not run.is_absolute():
        run = p.parent / run
    if not run.is_dir():
        raise DataError(p, f"names run {run}, which does not exist")
    return run


def _serving_run(serving: Path) -> Path | None:
    """The resolved run folder the serving file ``serving`` names; None if there is no such file yet.

    Raises:
        DataError: ``serving`` is a folder or a model file (a promotion would write JSON over it), or a serving file
            that is unreadable or names a run that is not there (:func:`resolve_serving`).
    """
    if not serving.exists():
        return None
    if not serving.is_file() or serving.suffix == ".pt":
        raise DataError(serving, "is not a serving file (--serving takes the JSON file a promotion writes, never a "
                                 "run folder or a model)")
    return resolve_serving(serving).resolve()


def _serving_lock(serving: Path):
    """An exclusive lock on the serving file (``<file>.lock``, the feedback appends' timeout): check-and-replace
    is then one step for every retraining promoting into this file."""
    from filelock import FileLock

    # a new lock object per call, as for the feedback appends: it then also excludes this process's other threads
    return FileLock(f"{serving}.lock", timeout=_LOCK_TIMEOUT_S)


def _check_serving(serving: Path, old_run: Path, candidate: Path) -> bool:
    """Refuse, before any training, a serving file that names another run than the one the candidate will be
    compared with: a promotion would otherwise replace a model the gate never looked at.

    Returns:
        True when the file already names this retraining's candidate (an earlier run of the command promoted it:
        :func:`_promoted_before` says so), False when it names ``old_run`` or does not exist yet.
    """
    current = _serving_run(serving)
    if current is None or current == old_run:
        return False
    if current == candidate.resolve():
        return True
    raise DataError(serving, f"names run {current}, not --run {old_run}: the candidate would be compared with a model "
                             f"that is not served; retrain the served model (--run {serving})")


def _recorded_serving(root: Path) -> tuple[dict, Path] | None:
    """``(comparison.json, its serving file)`` when an earlier run of this retraining PROMOTED its candidate with a
    ``--serving`` file (switched, or left alone and the reason recorded: ``serving_refused``); None otherwise
    (no decision yet, not promoted, or promoted without ``--serving``: a later command may still name one)."""
    comparison = root / "comparison.json"
    if not comparison.is_file():
        return None
    report = _read_json(comparison, "this retraining's decision")
    recorded = report.get("serving") or report.get("serving_file")
    if report.get("promote") is not True or not isinstance(recorded, str) or not recorded:
        return None
    return report, Path(recorded)


def _recorded_old_run(root: Path, run: str | os.PathLike) -> Path:
    """The run this retraining compared its candidate with, for ``--run`` naming the candidate itself: the README's
    next-round command (``--run serving.json``) run again after its promotion, when the serving file has come to
    name this retraining's own candidate. Its ``retrain.json`` says which run that was.

    Raises:
        DataError: ``out`` holds no record of that run (the candidate cannot be compared with itself).
    """
    record = root / "retrain.json"
    recorded = _read_json(record, "this retraining's record").get("run") if record.is_file() else None
    if not isinstance(recorded, str) or not recorded:
        raise DataError(run, f"names {root / 'candidate'}, this retraining's own candidate, and {record} does not "
                             "say which run it was compared with: give that run as --run")
    return Path(recorded)


def _check_recorded_serving(root: Path, serving: Path | None, candidate: Path) -> dict | None:
    """Keep the record of the serving file a promotion switched (or was refused): the command run again without
    ``--serving`` has nothing to do (rewriting ``comparison.json``/``.md`` and ``retrain.json`` would erase which
    file serves the candidate); the same ``--serving`` goes on (:func:`_promoted_before` when it names the
    candidate); another one is refused — a retraining records one serving file.

    Returns:
        The "nothing to do" result when ``serving`` is None and a promotion into a file is recorded, else None.

    Raises:
        OptionError: ``serving`` is another file than the recorded one.
    """
    found = _recorded_serving(root)
    if found is None:
        return None
    report, recorded = found
    comparison, markdown = root / "comparison.json", root / "comparison.md"
    switched = bool(report.get("serving"))
    if serving is None:
        outcome = (f"which switched serving file {recorded}: {markdown}" if switched
                   else f"but serving file {recorded} was NOT switched (why: {markdown})")
        print(f"nothing to do: this retraining's candidate {candidate} was PROMOTED by an earlier run of this "
              f"command, {outcome}")
        return {"promote": True, "comparison": str(comparison), "markdown": str(markdown), "candidate": str(candidate),
                "serving": str(recorded) if switched else None, "serving_refused": report.get("serving_refused"),
                "repeated": True}
    if serving != recorded:
        raise OptionError({"--serving": f"{serving} is not {recorded}, the serving file this retraining's promotion "
                                        f"{'switched' if switched else 'was recorded for'} ({comparison}); a "
                                        "retraining records one serving file: leave out --serving, or give "
                                        f"--serving {recorded}"})
    return None


def _promoted_before(root: Path, serving: Path, candidate: Path) -> dict:
    """The result of a command run again after it promoted its candidate into ``serving``: nothing to do, said in
    one line naming the earlier decision (a finished job run again is not an error).

    Raises:
        DataError: ``serving`` names the candidate, yet ``comparison.json`` records no promotion (edited by hand,
            or the comparison is gone): nothing here can tell that the served model passed the gate.
    """
    comparison, markdown = root / "comparison.json", root / "comparison.md"
    report = _read_json(comparison, "this retraining's decision") if comparison.is_file() else {}
    if report.get("promote") is not True:
        raise DataError(serving, f"already names this retraining's candidate {candidate}, but {comparison} records "
                                 "no promotion: check how it came to be served, or give another --serving file")
    print(f"nothing to do: {serving} already serves this retraining's candidate {candidate} (PROMOTED by an earlier "
          f"run of this command: {markdown})")
    return {"promote": True, "comparison": str(comparison), "markdown": str(markdown), "candidate": str(candidate),
            "serving": str(serving), "serving_refused": None, "repeated": True}


# ---------------------------------------------------------------------------------------------------- the gate
def _number(metrics: Mapping, split: str, key: str) -> float | None:
    """The value, NaN when recorded as null/NaN, None when absent."""
    values = metrics.get(split)
    if not isinstance(values, Mapping) or key not in values:
        return None
    value = values[key]
    return math.nan if value is None else float(value)


def check_tolerance(tolerance: object) -> float:
    """``--tolerance`` as a float in ``[0, MAX_TOLERANCE]``.

    Raises:
        OptionError: not a number, or outside that range (the metrics are fractions in [0, 1]: a tolerance above
            :data:`MAX_TOLERANCE` would let balanced accuracy or melanoma sensitivity drop by more than 10 points
            and still promote).
    """
    try:
        tol = float(tolerance)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OptionError({"--tolerance": f"must be a number in [0, {MAX_TOLERANCE:g}], got {tolerance!r}"}) from None
    if not 0.0 <= tol <= MAX_TOLERANCE:  # also refuses NaN
        raise OptionError({"--tolerance": f"must be a number in [0, {MAX_TOLERANCE:g}] (a worsening the gate still "
                                          f"accepts, in the metrics' units), got {tolerance!r}"})
    return tol


def promotion_decision(old: Mapping, new: Mapping, tolerance: float = 0.0) -> dict:
    """Whether the candidate (``new``) may replace ``old``: not worse on every criterion of :data:`CRITERIA` on
    every split of :data:`GATE_SPLITS`.

    Args:
        old, new: ``{split: {"balanced_accuracy": …, "recall_mel": …, "ece": …}}`` (evaluation ``metrics``).
        tolerance: how much worse still counts as not worse (same units as the metrics; in
            ``[0, MAX_TOLERANCE]``, :func:`check_tolerance`).

    A criterion passes when ``new ≥ old − tolerance`` (balanced accuracy, mel sensitivity) or ``new ≤ old +
    tolerance`` (ECE). A value recorded as NaN for **both** models (e.g. sensitivity on a split without
    melanoma) passes — it says nothing about either model; NaN for the candidate only, or a value missing from
    either dict, fails.

    Returns:
        ``{"promote": bool, "tolerance": float, "criteria": [{"split", "metric", "label", "better", "old", "new",
        "limit", "passed", "note"}, …], "reasons": [str, …]}`` — the reasons name every failed criterion, or say
        that none failed.
    """
    tol = check_tolerance(tolerance)
    criteria, reasons = [], []
    for split in GATE_SPLITS:
        for key, better, label in CRITERIA:
            o, n = _number(old, split, key), _number(new, split, key)
            limit = None if o is None or math.isnan(o) else (o - tol if better == "higher" else o + tol)
            note = ""
            if o is None or n is None:
                passed, note = False, f"missing for the {'old model' if o is None else 'candidate'}"
            elif math.isnan(o) and math.isnan(n):
                passed, note = True, "not measurable for either model on this split"
            elif math.isnan(n):
                passed, note = False, "not measurable for the candidate"
            elif math.isnan(o):  # same held-out rows, so measurable for one means measurable for both
                passed, note = False, "not measurable for the old model, yet measurable for the candidate"
            else:
                passed = n >= limit - _EPS if better == "higher" else n <= limit + _EPS
            criteria.append({"split": split, "metric": key, "label": label, "better": better,
                             "old": None if o is None or math.isnan(o) else o,
                             "new": None if n is None or math.isnan(n) else n,
                             "limit": limit, "passed": bool(passed), "note": note})
            if not passed:
                if note:
                    reasons.append(f"{split} {label}: {note}")
                else:
                    sign = "<" if better == "higher" else ">"
                    reasons.append(f"{split} {label}: candidate {n:.4f} {sign} limit {limit:.4f} "
                                   f"(old {o:.4f} {'−' if better == 'higher' else '+'} tolerance {tol:g})")
    promote = all(c["passed"] for c in criteria)
    if promote:
        reasons = [f"not worse than the old model on every criterion on {' and '.join(GATE_SPLITS)} "
                   f"(tolerance {tol:g})"]
    return {"promote": promote, "tolerance": tol, "criteria": criteria, "reasons": reasons}


# ---------------------------------------------------------------------------------------------------- steps
def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataError(path, f"not found ({what})")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(path, "not a JSON object")
    return obj


def _split_dir(dataset_dir: str | os.PathLike) -> Path:
    path = Path(dataset_dir).resolve()
    if path.suffix.lower() == ".csv":
        path = path.parent
    if not (path / "split.csv").is_file():
        raise DataError(path, "no split.csv (merge the feedback first: python -m data_prep.feedback merge)")
    return path


def _trained_split(run: Path, settings: Mapping) -> Path:
    """The split folder the run was trained on (``settings.json``'s ``dataset_dir``; relative to the checkout)."""
    recorded = settings.get("dataset_dir")
    if not recorded:
        raise DataError(run / SETTINGS_FILE, "records no dataset_dir: cannot check that the held-out splits are "
                                             "unchanged")
    path = Path(str(recorded))
    if not path.is_absolute():
        path = repo_root() / path
    if not (path / "split.csv").is_file() and not path.is_file():
        raise DataError(run / SETTINGS_FILE, f"the run was trained on {path}, which is not there any more: cannot "
                                             "check that the new split keeps its validation and test images")
    return path


def _check_held_out(run: Path, settings: Mapping, dataset: Path) -> Path:
    """Refuse ``dataset`` unless its validation and test rows equal those of the run's own split, and that split
    is still the one the run was trained on (its ``split_fingerprint`` in ``settings.json``, when recorded): a split
    re-made with ``--overwrite`` would pass the comparison of rows and fail only at the evaluation of the old run,
    after the candidate trained."""
    from mednet.data.splits import split_fingerprint

    trained_on = _trained_split(run, settings)
    recorded = settings.get("split_fingerprint")
    if recorded and split_fingerprint(trained_on) != recorded:
        raise DataError(trained_on, f"this split changed since {run.name} was trained on it (its images are assigned "
                                    f"to splits differently from {run / SETTINGS_FILE}'s split_fingerprint: re-made "
                                    "with --overwrite?); the old run's held-out rows are no longer known, so no fair "
                                    "comparison is possible — retrain a run trained on this split")
    old, new = held_out_rows(trained_on), held_out_rows(dataset)
    if old.equals(new):
        return trained_on
    old_rows = set(map(tuple, old.to_numpy().tolist()))
    new_rows = set(map(tuple, new.to_numpy().tolist()))
    gone, extra = sorted(old_rows - new_rows), sorted(new_rows - old_rows)
    example = (f"e.g. {gone[0][0]} row {gone[0][1]} is missing or changed" if gone
               else f"e.g. {extra[0][0]} row {extra[0][1]} is new" if extra else "the rows differ")
    raise DataError(dataset, f"its validation/test rows differ from those of {trained_on}, the split {run.name} was "
                             f"trained on ({len(gone)} missing or changed, {len(extra)} new; {example}); the gate "
                             "compares models on unchanged held-out splits — merge feedback into the run's own split "
                             f"(python -m data_prep.feedback merge --dataset_dir {trained_on} …)")


#: how many of the dropped training images ``comparison.json``/``.md`` name
_DROPPED_EXAMPLES = 5


def _dropped_training_rows(trained_on: Path, dataset: Path) -> list[str]:
    """The image ids of ``trained_on``'s training rows (the split the old run was trained on) that are not
    training rows of ``dataset``, sorted. Not a refusal — a merge from an earlier split (``demo/syn_split`` rather
    than the candidate's ``demo/syn_split_fb1``) drops the earlier rounds' feedback rows silently, which is seldom
    what was meant, but may be; a relabelled row (a later flag) keeps its image id and is not dropped."""
    from mednet.data.lesion_split import load_split_table

    if trained_on.resolve() == dataset.resolve():
        return []

    def training(split: Path) -> set[str]:
        table = load_split_table(split, None, check_files=False)
        return set(table.loc[table["split"] == "training", "image_id"].astype(str))

    return sorted(training(trained_on) - training(dataset))


def _run_settings(run: Path) -> dict:
    settings = _read_json(run / SETTINGS_FILE, "the run's settings")
    if settings.get("model") == "ensemble" or settings.get("distillation"):
        kind = "an ensemble" if settings.get("model") == "ensemble" else "a distilled student"
        raise DataError(run, f"is {kind}; gated retraining repeats a train.json run (retrain its members or "
                             "teacher runs instead)")
    if not (run / "model.pt").is_file():
        raise DataError(run, "no model.pt (not a finished training run)")
    return settings


def _check_train_options(overrides: Mapping) -> None:
    """Check the training options against ``train.json`` now (OptionError naming each bad one), not after the
    evaluation of the old run; bundle configs resolve their macros from the checkout root."""
    from mednet.app.bundles import _cwd, bundle_config_files
    from mednet.overrides import check_overrides

    try:
        with _cwd(repo_root()):
            check_overrides([str(f) for f in bundle_config_files(BUNDLE, "train")], overrides)
    except OptionError as error:
        raise OptionError({flag: _with_own_flag(flag, problem) for flag, problem in error.problems.items()}) from None


def _with_own_flag(flag: str, problem: str) -> str:
    """An unknown training option that is near one of this command's own flags (``--tolerence``) says so: the
    bundle's check only knows ``train.json``'s options."""
    import difflib

    if not problem.startswith("unknown option"):
        return problem
    own = [name for name in inspect.signature(retrain).parameters if name not in ("train_options",)]
    match = difflib.get_close_matches(flag.lstrip("-"), own, n=1)
    if not match:
        return problem
    return f"unknown option of retrain and of train.json (did you mean --{match[0]}, retrain's own option?)"


def _inapplicable(overrides: Mapping) -> list[str]:
    """The carried settings that ``train.json`` ignores with the other carried settings (its ``only_with`` rules)."""
    from mednet.app.bundles import _cwd, bundle_config_files
    from mednet.overrides import inapplicable_overrides

    with _cwd(repo_root()):
        return list(inapplicable_overrides([str(f) for f in bundle_config_files(BUNDLE, "train")], overrides))


def _started(root: Path) -> bool:
    """Whether an earlier command in ``root`` already trained or evaluated something."""
    candidate, evaluations = root / "candidate", root / "evaluations"
    if candidate.is_dir():  # a lock file alone (a kill before the first record) started nothing
        return any(p.name != LOCK_FILE for p in candidate.iterdir())
    return evaluations.is_dir() and any(evaluations.iterdir())


def _train(candidate: Path, dataset: Path, overrides: Mapping) -> None:
    """Train the candidate unless it finished; complete a missing calibration."""
    if (candidate / FINISHED_FILE).is_file():
        if (candidate / "calibration.json").is_file():
            logger.info("retrain: %s already trained — skipped", candidate)
            print(f"candidate already trained: {candidate}")
            return
        # finished, but stopped before calibration.json was written (bundle < 0.3.0 wrote finished.json first);
        # the referral threshold for the old run's target accuracy, as training would have fitted it
        run_bundle(BUNDLE, "calibrate", ckpt_path=str(candidate / "model.pt"), dataset_dir=str(dataset),
                   **{k: overrides[k] for k in (*_MODEL_SETTINGS, *_REFERRAL_SETTINGS) if k in overrides},
                   overwrite=True)
        return
    logger.info("retrain: %s %s", "resuming" if (candidate / "checkpoint_last.pt").is_file() else "training",
                candidate)
    run_bundle(BUNDLE, "train", run_dir=str(candidate), dataset_dir=str(dataset), **overrides)


def _evaluation_of(evaluation: Path, digest: str, split: str, dataset: Path) -> bool:
    """Whether ``evaluation`` is a finished evaluation of the weights with SHA-256 ``digest`` on ``split`` of
    ``dataset`` (its ``provenance.json``, written by evaluate.json, records all three)."""
    if not (evaluation / "metrics.json").is_file():
        return False
    try:
        record = json.loads((evaluation / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    checkpoint = record.get("checkpoint") if isinstance(record, dict) else None
    return (isinstance(checkpoint, dict) and checkpoint.get("sha256") == digest and record.get("split") == split
            and record.get("dataset_dir") == str(dataset))


def _evaluate(who: str, run: Path, settings: Mapping, split: str, dataset: Path, folder: Path) -> Path:
    """``folder/<who>-<split>-<time>``: the run evaluated on ``split``.

    A finished evaluation is reused only if it is of this very ``model.pt`` (its SHA-256), split and dataset: a
    candidate trained again after ``DIR/candidate`` was deleted has other weights, and the gate must not judge it
    by its predecessor's metrics. Other evaluations are left where they are (runs are never overwritten).
    """
    digest = file_sha256(run / "model.pt")
    done = [p for p in folder.glob(f"{who}-{split}-*") if _evaluation_of(p, digest, split, dataset)]
    if done:  # the latest of equals
        return max(done, key=lambda p: ((p / "metrics.json").stat().st_mtime_ns, p.name))
    out = new_run_dir(folder, f"{who}-{split}")
    run_bundle(BUNDLE, "evaluate", ckpt_path=str(run / "model.pt"), split=split, dataset_dir=str(dataset),
               output_dir=str(out), **{k: settings[k] for k in _MODEL_SETTINGS if k in settings})
    return out


def _gate_metrics(evaluation: Path) -> dict:
    content = _read_json(evaluation / "metrics.json", "an evaluation")
    metrics = content.get("metrics") or {}
    # absent stays absent (the gate fails it as missing); only a recorded null means "not measurable"
    return {key: metrics[key] for key, _, _ in CRITERIA if key in metrics}


def _fmt(value: object) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _markdown(report: Mapping) -> str:
    from mednet.reports.tables import markdown_table

    decision = report["decision"]
    rows = pd.DataFrame([{"split": c["split"], "criterion": c["label"] + (" ↑" if c["better"] == "higher" else " ↓"),
                          "old": _fmt(c["old"]), "candidate": _fmt(c["new"]), "limit": _fmt(c["limit"]),
                          "result": ("pass" if c["passed"] else "FAIL") + (f" ({c['note']})" if c["note"] else "")}
                         for c in decision["criteria"]])
    merge = report.get("merge") or {}
    dropped = report.get("training_rows_dropped")
    lines = [
        f"# Gated retraining: {'PROMOTED' if decision['promote'] else 'NOT PROMOTED'}"
        + (" (serving file not switched)" if report.get("serving_refused") else ""),
        "",
        f"- old run: `{report['old_run']}`",
        f"- candidate: `{report['candidate_run']}`, trained on `{report['dataset_dir']}`"
        + (f" ({merge['added']} feedback training rows added by the merge)" if "added" in merge else ""),
        f"- held-out splits: validation and test rows identical to those of `{report['old_dataset_dir']}`",
        *([f"- **{dropped['count']} training row(s) of `{report['old_dataset_dir']}` (the old run's split) are not "
           f"in the candidate's training split** (e.g. {', '.join(f'`{i}`' for i in dropped['examples'])})"]
          if dropped else []),
        f"- rule: on validation and test, balanced accuracy ≥ old − t, mel sensitivity ≥ old − t, ECE ≤ old + t "
        f"(t = {decision['tolerance']:g}); metrics after each run's own temperature scaling",
        "",
        markdown_table(rows),
        f"**Decision: {'promoted' if decision['promote'] else 'not promoted'}.**",
        "",
        *[f"- {r}" for r in decision["reasons"]],
        "",
    ]
    if decision["promote"] and report.get("serving_refused"):
        lines.append(f"**Serving file `{report['serving_file']}` NOT switched**: {report['serving_refused']}.")
    elif decision["promote"]:
        lines.append(f"Serving file updated: `{report['serving']}`." if report.get("serving")
                     else "No --serving file was given: nothing was switched.")
    elif report.get("serving_file"):
        lines.append(f"Serving file `{report['serving_file']}` left unchanged." if Path(report["serving_file"]).exists()
                     else f"Serving file `{report['serving_file']}` not written (nothing promoted).")
    return "\n".join(lines) + "\n"


def _check_same_retraining(record: Path, wanted: Mapping, tolerance: float) -> None:
    """Refuse to go on in a folder that holds a (partly) trained candidate or an evaluation of another retraining:
    another run, split or training options (:class:`DataError`), or another ``--tolerance``
    (:class:`OptionError`: the same candidate and evaluations would otherwise be judged again by a looser gate,
    and a decision flip in place without a trace)."""
    previous = _read_json(record, "this retraining's record")
    if {k: previous.get(k) for k in wanted} != wanted:
        raise DataError(record, "this folder holds a retraining with another run, split or training options; "
                                "resume it with the same options, or choose another --out")
    raw, source = previous.get("tolerance"), record
    if raw is None:  # recorded before retrain.json held it: the decision's, if there is one
        source = record.parent / "comparison.json"
        decision = (_read_json(source, "this retraining's decision").get("decision") if source.is_file() else None)
        raw = decision.get("tolerance") if isinstance(decision, Mapping) else None
    if raw is None:
        return
    try:
        recorded = math.nan if isinstance(raw, bool) else float(raw)
    except (TypeError, ValueError):  # a hand-edited record: "0.05 " is read, "loose" is not
        recorded = math.nan
    if not math.isfinite(recorded):
        raise DataError(source, f"records the tolerance {json.dumps(raw, ensure_ascii=False)}, which is not a number "
                                "(edited by hand?): the gate this retraining was started with is unknown; restore it, "
                                "or choose another --out")
    if recorded != tolerance:
        raise OptionError({"--tolerance": f"{tolerance:g} differs from {recorded:g}, the tolerance this "
                                          f"retraining was started with ({source}); resume it with --tolerance "
                                          f"{recorded:g}, or choose another --out: a gate decision is never "
                                          "made again in place"})


def _check_same_decision(comparison: Path, decision: Mapping) -> None:
    """Never replace an earlier decision with another (the candidate was trained again after ``DIR/candidate`` was
    deleted, an evaluation was replaced by hand…): ``comparison.json``/``.md`` are rewritten by a resumed command
    only when its decision is the same."""
    if not comparison.is_file():
        return
    earlier = _read_json(comparison, "this retraining's decision").get("promote")
    if isinstance(earlier, bool) and earlier != decision["promote"]:
        said = {True: "PROMOTED", False: "NOT PROMOTED"}
        raise DataError(comparison, f"records the decision {said[earlier]}, but this run's gate says "
                                    f"{said[bool(decision['promote'])]} (the candidate or an evaluation changed "
                                    "since): the earlier decision is kept; choose another --out for a new gated "
                                    "retraining")


def retrain(run: str, dataset_dir: str, out: str, epochs: int | None = None, serving: str | None = None,
            tolerance: float = 0.0, **train_options: object) -> dict:
    """Retrain ``run``'s settings on ``dataset_dir``, compare, promote only if not worse (module docstring).

    Args:
        run: the current model: a training run folder, or a serving file (:func:`resolve_serving`).
        dataset_dir: the split with the feedback (``python -m data_prep.feedback merge``); its validation and test
            rows must equal those of the split ``run`` was trained on.
        out: the folder of this retraining (``candidate/``, ``evaluations/``, ``comparison.md``/``.json``,
            ``retrain.json``); give the same folder to resume.
        epochs: training epochs (default: the old run's).
        serving: a serving file to point at the candidate if, and only if, it is promoted; if it exists it must
            name ``run``'s run folder (checked before training, and again under a lock when it is replaced).
        tolerance: allowed worsening per criterion (in ``[0, MAX_TOLERANCE]``; default 0: not worse at all); must
            be the one recorded in ``out/retrain.json`` when ``out`` holds a started retraining.
        train_options: further ``train.json`` options (``lr_schedule``, ``weight_decay``, …), checked by the
            bundle.

    Returns:
        ``{"promote", "comparison" (comparison.json), "markdown", "candidate", "serving" (path, or None when
        nothing was switched), "serving_refused" (why a promoted candidate was not switched to, or None)}``; when
        ``serving`` already names the candidate (an earlier run of the command promoted it), or is not given while
        ``out/comparison.json`` records a promotion into a serving file, nothing is done and the earlier decision
        is returned with ``"serving"`` = that file (None if it was not switched) and ``"repeated": True``.

    Raises:
        DataError: ``serving`` names another run than ``run`` (before any training), ``out`` holds a retraining
            with another run, split or training options, or a decision other than this run's, and the checks above.
        OptionError: a ``tolerance`` outside ``[0, MAX_TOLERANCE]`` or other than the one ``out`` was started with;
            a ``serving`` other than the file ``out/comparison.json`` records a promotion into.
    """
    tolerance = check_tolerance(tolerance)  # before hours of training
    old_run = resolve_serving(run).resolve()
    serving_path = Path(serving).resolve() if serving else None
    root = Path(out).resolve()
    candidate = root / "candidate"
    if old_run == candidate.resolve():  # --run serving.json again, after this retraining promoted its candidate
        old_run = _recorded_old_run(root, run)
    promoted_before = serving_path is not None and _check_serving(serving_path, old_run, candidate)
    settings = _run_settings(old_run)
    dataset = _split_dir(dataset_dir)
    old_dataset = _check_held_out(old_run, settings, dataset)
    dropped = _dropped_training_rows(old_dataset, dataset)
    overrides = {k: settings[k] for k in CARRIED_SETTINGS if k in settings}
    # nested overrides the old run was trained with (--optimizer#weight_decay 0.1): the candidate repeats them
    overrides.update(settings.get("overrides") or {})
    # what the served model was calibrated for (calibrate.json may have refitted it)
    overrides.update(calibrated_referral_settings(old_run))
    if epochs is not None:
        overrides["epochs"] = epochs
    blocked = {f"--{k}": "set by this command" for k in ("run_dir", "dataset_dir") if k in train_options}
    if blocked:
        raise OptionError(blocked)
    for key in _inapplicable({**overrides, **train_options}):  # e.g. focal_gamma of a ce run: recorded, but it changed nothing
        if key not in train_options:
            del overrides[key]
    overrides.update(train_options)
    _check_train_options(overrides)
    root.mkdir(parents=True, exist_ok=True)
    record = root / "retrain.json"
    wanted = json.loads(json.dumps({"run": str(old_run), "dataset_dir": str(dataset), "train": overrides}))
    if record.is_file() and _started(root):
        _check_same_retraining(record, wanted, tolerance)
        repeated = _check_recorded_serving(root, serving_path, candidate)
        if repeated is not None:  # promoted into a file earlier, and no --serving now: the record is kept
            return repeated
    if promoted_before:  # the same command again after its promotion: a finished job, not an error
        return _promoted_before(root, serving_path, candidate)
    if dropped:  # said before hours of training, and recorded in the comparison
        logger.warning("retrain: %d training row(s) of %s, the split %s was trained on, are not training rows of %s "
                       "(e.g. %s): the candidate does not train on them (a merge from an earlier split drops the "
                       "earlier feedback rows; merge into the split the run was trained on to keep them)",
                       len(dropped), old_dataset, old_run.name, dataset, ", ".join(dropped[:_DROPPED_EXAMPLES]))
    write_json_atomic({**wanted, "tolerance": tolerance, "serving": None if serving_path is None else str(serving_path),
                       "old_dataset_dir": str(old_dataset), "started": now_iso()}, record)

    _train(candidate, dataset, overrides)
    candidate_settings = _run_settings(candidate)
    folder = root / "evaluations"
    evaluations = {who: {split: _evaluate(who, run_dir, s, split, dataset, folder) for split in GATE_SPLITS}
                   for who, run_dir, s in (("old", old_run, settings), ("candidate", candidate, candidate_settings))}
    metrics = {who: {split: _gate_metrics(path) for split, path in by_split.items()}
               for who, by_split in evaluations.items()}
    decision = promotion_decision(metrics["old"], metrics["candidate"], tolerance)
    _check_same_decision(root / "comparison.json", decision)
    merge_file = dataset / "merge.json"
    merge = _read_json(merge_file, "merge summary") if merge_file.is_file() else None
    report = {
        "time": now_iso(),
        "promote": decision["promote"],
        "old_run": str(old_run),
        "candidate_run": str(candidate),
        "dataset_dir": str(dataset),
        "old_dataset_dir": str(old_dataset),
        "train_settings": overrides,
        "metrics": metrics,
        "evaluations": {who: {s: str(p) for s, p in by.items()} for who, by in evaluations.items()},
        "decision": decision,
        "merge": None if merge is None else {k: merge.get(k) for k in ("feedback_rows", "added", "added_per_class",
                                                                       "duplicates_skipped", "duplicates_per_split",
                                                                       "relabelled")},
        # training rows of the old run's split the candidate did not train on (None: none)
        "training_rows_dropped": None if not dropped else {"count": len(dropped),
                                                           "examples": dropped[:_DROPPED_EXAMPLES]},
        "serving_file": None if serving_path is None else str(serving_path),
        "serving": None,
        "serving_refused": None,
    }
    if decision["promote"] and serving_path is not None:
        promoted_to, comparison, markdown = _promote(report, serving_path, old_run, candidate, root)
    else:
        promoted_to = None
        comparison = write_json_atomic(report, root / "comparison.json")
        markdown = write_text_atomic(_markdown(report), root / "comparison.md")
    print(markdown.read_text(encoding="utf-8"))
    print(f"gated retraining: {'PROMOTED' if decision['promote'] else 'not promoted'} — {comparison}, {markdown}"
          + (f"; serving file {promoted_to} now points to {candidate}" if promoted_to else "")
          + (f"; serving file {serving_path} NOT switched: {report['serving_refused']}"
             if report["serving_refused"] else ""))
    return {"promote": decision["promote"], "comparison": str(comparison), "markdown": str(markdown),
            "candidate": str(candidate), "serving": None if promoted_to is None else str(promoted_to),
            "serving_refused": report["serving_refused"]}


def _promote(report: dict, serving: Path, old_run: Path, candidate: Path,
             root: Path) -> tuple[Path | None, Path, Path]:
    """Write the comparison and point ``serving`` at ``candidate`` — unless, under the serving file's lock, the file
    no longer names ``old_run`` (another retraining promoted into it while this candidate trained): the candidate
    was never compared with the model it would replace. Returns ``(serving or None, comparison.json, .md)``."""
    from filelock import Timeout

    try:
        with _serving_lock(serving):
            try:
                current = _serving_run(serving)
            except DataError as e:
                report["serving_refused"] = f"it cannot be read any more ({e.problem})"
            else:
                if current is not None and current != old_run:
                    report["serving_refused"] = (f"it now names {current}, not the old run {old_run} this candidate "
                                                 f"was compared with (another promotion came first); retrain against "
                                                 f"it (--run {serving}) to replace it")
            if report["serving_refused"] is None:
                report["serving"] = str(serving)
            comparison = write_json_atomic(report, root / "comparison.json")
            markdown = write_text_atomic(_markdown(report), root / "comparison.md")
            if report["serving_refused"] is None:
                # "previous" is what the file named (checked just now): old_run, or nothing served before
                write_json_atomic({"run": str(candidate), "promoted_at": now_iso(), "previous": str(old_run),
                                   "comparison": str(comparison)}, serving)
                return serving, comparison, markdown
    except Timeout:
        report["serving"] = None
        report["serving_refused"] = (f"its lock {serving}.lock was held by another process for "
                                     f"{_LOCK_TIMEOUT_S} s")
        comparison = write_json_atomic(report, root / "comparison.json")
        markdown = write_text_atomic(_markdown(report), root / "comparison.md")
    logger.warning("retrain: the candidate passed the gate, but serving file %s was not switched: %s", serving,
                   report["serving_refused"])
    return None, comparison, markdown


if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(retrain)
