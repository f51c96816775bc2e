"""The calibration + ensemble distillation study in one resumable command.

    python -m mednet.app.calibration_study --dataset_dir DIR --out DIR [--preset cpu|paper]
        [--epochs N] [--student_epochs N] [--teacher_model NAME] [--student_model NAME] [--image_size S]

Reproduces the protocol of the calibration / ensemble knowledge-distillation study (shared reference 000/001)
on a prepared dermoscopy split (``python -m data_prep.dermoscopy`` output: ``split.csv``), with every choice
made on the **validation** split (best epoch, ensemble weights, temperature, referral threshold) and the test
split evaluated once per model:

1. five teachers, one per augmentation (none, MixUp, CutMix, CutOut, AugMix) — ``train.json``;
2. calibration ensembles of the teachers: 1:1:1:1:1, 5:1:5:1:1 (the study's ratio) and weights searched on
   validation — ``ensemble.json``;
3. the student alone — ``train.json``;
4. vanilla KD from the plain teacher at T = 4 and T = 50, and KD from each augmented teacher — ``distill.json``;
5. ensemble KD from all five teachers in the three modes (``add_loss``, ``avg_loss``, ``avg_softmax``);
6. ensembles of the individually distilled students (5:1:5:1:1 and searched);
7. temperature scaling and the referral threshold of every model (fitted on validation at the end of each
   training run / ensemble), and the full test report of every model before and after temperature scaling.

Writes ``OUT/study_table.md`` / ``.csv`` (accuracy, balanced accuracy, macro F1, mel sensitivity, ECE, OE, NLL,
Brier, AURC before/after temperature, T, parameters, inference images/s; sections as the study's tables),
``OUT/study_reliability.png`` (reliability diagrams of the key models side by side, after temperature scaling)
and ``OUT/study.json`` (the settings and the wall time). Every run lives in ``OUT/runs/<name>``.

**Resumable**: a finished step is skipped (training: ``finished.json`` + ``calibration.json``; ensemble:
``finished.json``; evaluation: an ``eval-test-*`` folder with ``metrics.json``), and a training run that was
killed continues from its last completed epoch (``checkpoint_last.pt``, ``--run_dir`` of ``train.json``). Run
the same command again to resume. Every step runs in this process through MONAI's ``ConfigWorkflow``
(:func:`mednet.app.bundles.run_bundle`, as ``python -m monai.bundle run`` would), so killing the study leaves
no orphaned training behind.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mednet.app.bundles import run_bundle
from mednet.errors import DataError, OptionError
from mednet.io import write_json_atomic, write_text_atomic
from mednet.runs import FINISHED_FILE

__all__ = ["PRESETS", "StudyPreset", "run_calibration_study", "study_plan", "inference_throughput"]

logger = logging.getLogger("mednet")

BUNDLE = "dermoscopy_classification"
AUGMENTATIONS = ("none", "mixup", "cutmix", "cutout", "augmix")
KD_MODES = ("add_loss", "avg_loss", "avg_softmax")
STUDY_RATIO = "5:1:5:1:1"  # the study's hand-picked ratio, in the order of AUGMENTATIONS


@dataclass(frozen=True)
class StudyPreset:
    """Models and schedules of one study preset (every field can be overridden on the command line)."""

    image_size: int
    teacher_model: str
    student_model: str
    epochs: int  # teachers
    student_epochs: int
    batch_size: int  # teachers
    student_batch_size: int
    optimizer: str
    learning_rate: float  # teachers
    student_learning_rate: float
    lr_schedule: str
    milestones: tuple[float, ...]
    momentum: float
    weight_decay: float
    n_bins: int
    kd_temperature: float  # KD from the augmented teachers and ensemble KD
    vanilla_kd_temperatures: tuple[float, ...] = (4.0, 50.0)
    kd_alpha: float = 0.8
    kd_gamma: float = 0.2
    seed: int = 0
    note: str = ""


PRESETS: dict[str, StudyPreset] = {
    # 2 CPU cores, ≤ 30 min on the 2000-image synthetic set at 32 px. Small networks and Adam + cosine: with the
    # study's SGD 0.05 these small networks predict only the majority class for many epochs (measured).
    "cpu": StudyPreset(image_size=32, teacher_model="receptive_field_cnn_x2", student_model="receptive_field_cnn",
                       epochs=12, student_epochs=12, batch_size=64, student_batch_size=64, optimizer="adam",
                       learning_rate=0.003, student_learning_rate=0.003, lr_schedule="cosine",
                       milestones=(0.5, 0.75), momentum=0.9, weight_decay=1e-4, n_bins=15, kd_temperature=4.0,
                       note="CPU preset: the dissertation CNN at double width (202 k parameters) teaching the dissertation CNN itself (51 k), 32 px, 12 epochs, Adam + cosine"),
    # The study's settings (report 000): WRN-40-2 teachers, ShuffleNetV1 student, SGD lr 0.05 / 0.01, momentum
    # 0.9, weight decay 5e-4, MultiStep x0.1, batch 128 / 64, 100 ECE bins. Its milestones 150/180/210 are those
    # of RepDistiller's 240-epoch schedule, used here as fractions of 240 epochs. For a GPU.
    "paper": StudyPreset(image_size=64, teacher_model="wrn_40_2", student_model="shufflenet_v1", epochs=240,
                         student_epochs=240, batch_size=128, student_batch_size=64, optimizer="sgd",
                         learning_rate=0.05, student_learning_rate=0.01, lr_schedule="multistep",
                         milestones=(0.625, 0.75, 0.875), momentum=0.9, weight_decay=5e-4, n_bins=100,
                         kd_temperature=4.0, note="the study's settings (WRN-40-2 -> ShuffleNetV1); for a GPU"),
}


@dataclass
class Step:
    """One run of the study: a training (``train``/``distill``) or an ensemble, and its row in the table."""

    name: str  # folder under OUT/runs
    kind: str  # train | distill | ensemble
    section: str
    technique: str
    overrides: dict = field(default_factory=dict)
    members: list[str] = field(default_factory=list)  # step names: teachers (distill) or members (ensemble)


def study_plan(preset: StudyPreset) -> list[Step]:
    """The study's runs in order (teachers before what depends on them)."""
    teacher = dict(model=preset.teacher_model, epochs=preset.epochs, batch_size=preset.batch_size,
                   learning_rate=preset.learning_rate)
    student = dict(model=preset.student_model, epochs=preset.student_epochs, batch_size=preset.student_batch_size,
                   learning_rate=preset.student_learning_rate)
    teachers = [f"teacher-{aug}" for aug in AUGMENTATIONS]
    label = {"none": "Without", "mixup": "MixUp", "cutmix": "CutMix", "cutout": "CutOut", "augmix": "AugMix"}
    steps = [Step(f"teacher-{aug}", "train", "Calibration (teachers)", label[aug], dict(teacher, augmentation=aug))
             for aug in AUGMENTATIONS]
    for ratio, name in (("1:1:1:1:1", "uniform"), (STUDY_RATIO, "5-1-5-1-1"), ("search", "searched")):
        steps.append(Step(f"ensemble-teachers-{name}", "ensemble", "Calibration (teachers)",
                          f"Calibration ensemble {ratio}" if ratio != "search" else "Calibration ensemble (weights searched on validation)",
                          {"weights": None if name == "uniform" else ratio}, teachers))
    steps.append(Step("student-alone", "train", "Student", "Without (student alone)", dict(student, augmentation="none")))
    kd = dict(student, augmentation="none", kd_alpha=preset.kd_alpha, kd_gamma=preset.kd_gamma)
    individual = []
    for t in preset.vanilla_kd_temperatures:
        name = f"student-kd-none-T{t:g}"
        steps.append(Step(name, "distill", "Individual KD", f"Vanilla KD (T = {t:g})", dict(kd, kd_temperature=t),
                          ["teacher-none"]))
        if t == preset.kd_temperature:
            individual.append(name)
    if not individual:  # the individual-KD ensemble needs a vanilla student at the KD temperature
        name = f"student-kd-none-T{preset.kd_temperature:g}"
        steps.append(Step(name, "distill", "Individual KD", f"Vanilla KD (T = {preset.kd_temperature:g})",
                          dict(kd, kd_temperature=preset.kd_temperature), ["teacher-none"]))
        individual.append(name)
    for aug in AUGMENTATIONS[1:]:
        name = f"student-kd-{aug}-T{preset.kd_temperature:g}"
        steps.append(Step(name, "distill", "Individual KD", f"KD with {label[aug]} teacher (T = {preset.kd_temperature:g})",
                          dict(kd, kd_temperature=preset.kd_temperature), [f"teacher-{aug}"]))
        individual.append(name)
    for mode in KD_MODES:
        steps.append(Step(f"student-ekd-{mode}-T{preset.kd_temperature:g}", "distill", "KD ensemble",
                          f"KD ensemble ({mode.replace('_', ' ')}, T = {preset.kd_temperature:g})",
                          dict(kd, kd_temperature=preset.kd_temperature, kd_mode=mode), teachers))
    for ratio, name in ((STUDY_RATIO, "5-1-5-1-1"), ("search", "searched")):
        steps.append(Step(f"ensemble-kd-students-{name}", "ensemble", "Ensemble of KD students",
                          f"Ensemble of individual KD students {ratio}" if ratio != "search"
                          else "Ensemble of individual KD students (weights searched on validation)",
                          {"weights": ratio}, individual))
    return steps


def inference_throughput(network: torch.nn.Module, image_size: int, batch_size: int = 64, repeats: int = 5,
                         device: str | torch.device = "cpu") -> float:
    """Images per second of ``network`` in eval mode on random ``(batch, 3, S, S)`` input (median of ``repeats``
    timed passes after one warm-up); the model alone, without data loading."""
    network = network.to(device).eval()
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    times = []
    with torch.no_grad():
        network(x)
        for _ in range(repeats):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            network(x)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times)


def _is_trained(run: Path) -> bool:
    return (run / FINISHED_FILE).is_file() and (run / "calibration.json").is_file()


def _latest_eval(run: Path, split: str = "test") -> Path | None:
    done = sorted(p for p in run.glob(f"eval-{split}-*") if (p / "metrics.json").is_file())
    return done[-1] if done else None


def _run_step(step: Step, runs: Path, dataset_dir: Path, preset: StudyPreset) -> None:
    """Train / distill / ensemble ``step`` unless it is done; then evaluate it on the test split once."""
    run = runs / step.name
    common = dict(dataset_dir=str(dataset_dir), image_size=preset.image_size, seed=preset.seed,
                  n_bins=preset.n_bins)
    if step.kind in ("train", "distill"):
        fit = dict(optimizer=preset.optimizer, lr_schedule=preset.lr_schedule, weight_decay=preset.weight_decay)
        if preset.lr_schedule == "multistep":  # train.json refuses options its other settings ignore
            fit["milestones"] = list(preset.milestones)
        if preset.optimizer in ("sgd", "rmsprop"):
            fit["momentum"] = preset.momentum
        if _is_trained(run):
            logger.info("study: %s already trained — skipped", step.name)
        elif (run / FINISHED_FILE).is_file():  # killed before calibration.json (bundle < 0.3.0 marked it finished first)
            run_bundle(BUNDLE, "calibrate", ckpt_path=str(run / "model.pt"), model=step.overrides["model"],
                       **common, overwrite=True)
        else:
            extra = {"teachers": [str(runs / t) for t in step.members]} if step.kind == "distill" else {}
            logger.info("study: %s %s", "resuming" if (run / "checkpoint_last.pt").is_file() else "training", step.name)
            run_bundle(BUNDLE, step.kind, run_dir=str(run), **common, **fit, **step.overrides, **extra)
        if _latest_eval(run) is None:
            run_bundle(BUNDLE, "evaluate", ckpt_path=str(run / "model.pt"), model=step.overrides["model"],
                       split="test", **common)
        return
    if (run / FINISHED_FILE).is_file() and _latest_eval(run) is not None:
        logger.info("study: %s already evaluated — skipped", step.name)
        return
    run.mkdir(parents=True, exist_ok=True)
    run_bundle(BUNDLE, "ensemble", output_dir=str(run), members=[str(runs / m) for m in step.members],
               dataset_dir=str(dataset_dir), seed=preset.seed, n_bins=preset.n_bins, split="test",
               **step.overrides)


def _row(step: Step, runs: Path, preset: StudyPreset, device: str | torch.device) -> dict:
    """One table row from the step's test evaluation (``metrics.json``) and its network."""
    from mednet.networks.trained import load_trained_classifier

    run = runs / step.name
    evaluation = _latest_eval(run)
    if evaluation is None:
        raise DataError(run, "no test evaluation found")
    content = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
    after, before = content["metrics"], content.get("uncalibrated") or content["metrics"]
    model = load_trained_classifier(run, device)
    params = sum(p.numel() for p in model.network.parameters())
    row = {"section": step.section, "technique": step.technique, "run": step.name,
           "model": model.settings.get("model"),
           "accuracy": after["accuracy"], "balanced_accuracy": after["balanced_accuracy"],
           "macro_f1": after["macro_f1"], "mel_sensitivity": after.get("recall_mel"),
           "temperature": content["info"].get("temperature", 1.0)}
    for key in ("ece", "oe", "nll", "brier", "aurc"):
        row[f"{key}_T1"] = before.get(key)
        row[f"{key}_T"] = after.get(key)
    row["referral_coverage"] = after.get("referral_coverage")
    row["referral_accuracy"] = after.get("referral_accuracy")
    row["parameters"] = int(params)
    row["images_per_s"] = round(inference_throughput(model.network, preset.image_size, device=device), 1)
    return row


_MD_COLUMNS = {"technique": "technique", "accuracy": "acc", "balanced_accuracy": "bal. acc", "macro_f1": "macro F1",
               "mel_sensitivity": "mel sens.", "ece_T1": "ECE", "ece_T": "ECE (TS)", "oe_T1": "OE", "oe_T": "OE (TS)",
               "nll_T1": "NLL", "nll_T": "NLL (TS)", "brier_T1": "Brier", "brier_T": "Brier (TS)", "aurc_T1": "AURC",
               "aurc_T": "AURC (TS)", "temperature": "T", "parameters": "params", "images_per_s": "img/s"}


def _markdown(table: pd.DataFrame, title: str, notes: Sequence[str]) -> str:
    from mednet.reports.tables import markdown_table

    parts = [f"# {title}", "", *notes, ""]
    shown = table.copy()
    shown["temperature"] = shown["temperature"].map(lambda t: f"{t:.3g}")
    shown["parameters"] = shown["parameters"].map(lambda n: f"{int(n):,}")
    shown["images_per_s"] = shown["images_per_s"].map(lambda v: f"{v:,.0f}")
    for section, rows in shown.groupby("section", sort=False):
        parts += [f"## {section}", "", markdown_table(rows[list(_MD_COLUMNS)].rename(columns=_MD_COLUMNS), digits=4), ""]
    return "\n".join(parts)


def _reliability_figure(steps: Sequence[Step], runs: Path, out: Path, n_bins: int) -> Path | None:
    """Reliability diagrams (after temperature scaling, test split) of the key models, side by side."""
    from mednet.reports.calibration import plot_reliability_comparison

    wanted = [s for s in steps if s.name in ("teacher-none", "ensemble-teachers-searched", "student-alone")
              or s.name.startswith("student-kd-none-T50") or s.name.startswith("student-ekd-add_loss")
              or s.name == "ensemble-kd-students-searched"]
    panels, labels, ids = [], None, None
    for s in wanted:
        evaluation = _latest_eval(runs / s.name)
        if evaluation is None:
            continue
        pred = pd.read_csv(evaluation / "predictions.csv", encoding="utf-8")
        class_names = _class_columns(pred)
        if ids is None:
            ids, labels = list(pred["image_id"]), np.array([class_names.index(c) for c in pred["label"]])
        elif list(pred["image_id"]) != ids:
            raise DataError(evaluation, "test images differ from the other models' (another split?)")
        panels.append((s.technique, pred[class_names].to_numpy(dtype=np.float64)))
    if not panels:
        return None
    return plot_reliability_comparison(panels, labels, out / "study_reliability.png", n_bins=n_bins,
                                       title="test split, after temperature scaling (fitted on validation)")


def _class_columns(pred: pd.DataFrame) -> list[str]:
    """The probability columns of a ``predictions.csv`` (between ``path`` and ``prediction``)."""
    cols = list(pred.columns)
    return cols[cols.index("path") + 1: cols.index("prediction")]


def run_calibration_study(dataset_dir: str, out: str, preset: str = "cpu", epochs: int | None = None,
                          student_epochs: int | None = None, teacher_model: str | None = None,
                          student_model: str | None = None, image_size: int | None = None,
                          n_bins: int | None = None, seed: int | None = None) -> dict:
    """Run (or resume) the whole study; returns the paths of the table and figure and the wall time.

    Args:
        dataset_dir: a prepared split (``split.csv`` from ``python -m data_prep.dermoscopy``).
        out: the study folder (created; runs in ``out/runs``). Give the same folder to resume.
        preset: ``cpu`` (≤ 30 min on 2 CPU cores on the synthetic set) or ``paper`` (the study's settings).
        epochs, student_epochs, teacher_model, student_model, image_size, n_bins, seed: override the preset.
    """
    if preset not in PRESETS:
        raise OptionError({"--preset": f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"})
    given = {k: v for k, v in dict(epochs=epochs, student_epochs=student_epochs, teacher_model=teacher_model,
                                   student_model=student_model, image_size=image_size, n_bins=n_bins,
                                   seed=seed).items() if v is not None}
    settings = replace(PRESETS[preset], **given)
    dataset = Path(dataset_dir).resolve()
    if not (dataset / "split.csv").is_file():
        raise DataError(dataset, "no split.csv: prepare the data first (python -m data_prep.dermoscopy, or "
                                 "python -m data_prep.synthetic_dermoscopy then python -m data_prep.dermoscopy)")
    root = Path(out).resolve()
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    record = root / "study.json"
    previous = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    wanted = {"preset": preset, "settings": asdict(settings), "dataset_dir": str(dataset)}
    if previous is not None and {k: previous.get(k) for k in wanted} != json.loads(json.dumps(wanted)):
        raise DataError(record, "this study folder was started with other settings or data; resume it with the "
                                "same options, or choose another --out")
    started = time.perf_counter()
    elapsed_before = float((previous or {}).get("elapsed_s", 0.0))
    write_json_atomic({**wanted, "elapsed_s": elapsed_before, "complete": False}, record)
    steps = study_plan(settings)
    for i, step in enumerate(steps, 1):
        logger.info("study step %d/%d: %s", i, len(steps), step.name)
        print(f"[study {i}/{len(steps)}] {step.name}", flush=True)
        _run_step(step, runs, dataset, settings)
        write_json_atomic({**wanted, "elapsed_s": round(elapsed_before + time.perf_counter() - started, 1),
                           "complete": False, "done": [s.name for s in steps[:i]]}, record)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = pd.DataFrame([_row(s, runs, settings, device) for s in steps])
    from mednet.reports.tables import write_csv

    write_csv(table, root / "study_table.csv")
    elapsed = elapsed_before + time.perf_counter() - started
    notes = [f"Preset `{preset}` ({settings.note}); data `{dataset}`; teachers `{settings.teacher_model}`, student "
             f"`{settings.student_model}`, {settings.image_size} px, {settings.epochs}/{settings.student_epochs} "
             f"epochs; {settings.n_bins} ECE bins; wall time {elapsed / 60:.1f} min.",
             "Test split, evaluated once per model. Best epoch (validation balanced accuracy), ensemble weights, "
             "temperature (TS) and referral threshold were all chosen on the validation split. "
             "Metrics without (TS) are at T = 1; accuracy, balanced accuracy, macro F1 and mel sensitivity do not "
             "change with T. img/s: inference of the model alone, batch 64."]
    write_text_atomic(_markdown(table, "Calibration and ensemble distillation study", notes), root / "study_table.md")
    figure = _reliability_figure(steps, runs, root, settings.n_bins)
    write_json_atomic({**wanted, "elapsed_s": round(elapsed, 1), "complete": True,
                       "done": [s.name for s in steps]}, record)
    print((root / "study_table.md").read_text(encoding="utf-8"))
    print(f"study finished: {root / 'study_table.md'}, {root / 'study_table.csv'}, {figure} ({elapsed / 60:.1f} min)")
    return {"table": str(root / "study_table.csv"), "markdown": str(root / "study_table.md"),
            "figure": None if figure is None else str(figure), "minutes": elapsed / 60}


if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(run_calibration_study)
