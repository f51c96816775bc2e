"""The dermoscopy bundle's engine pieces: optimisers and epoch schedules chosen by name
(:mod:`mednet.engines.optimization`) and the evaluation report / prediction table written when an Ignite engine
completes (:mod:`mednet.engines.classification_report`) — on a tiny ``ignite.engine.Engine`` that replays fixed
logits, so every number in the written files can be checked against :mod:`mednet.metrics.classification`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from ignite.engine import Engine, Events

from mednet.data.dermoscopy import DERMOSCOPY_CLASSES
from mednet.calibration import aurc, read_calibration
from mednet.engines.classification_report import (
    CalibrationFitter,
    ClassificationReport,
    PredictionWriter,
    prediction_table,
)
from mednet.engines.optimization import PlateauOnValidation, make_optimizer, make_scheduler
from mednet.errors import DataError, OptionError
from mednet.metrics.classification import classification_report, confusion_matrix

K = len(DERMOSCOPY_CLASSES)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(2, 1).parameters())


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


# ------------------------------------------------------------------------------------------------ make_optimizer
@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                        ("rmsprop", torch.optim.RMSprop)])
def test_make_optimizer_builds_the_named_optimizer_with_the_given_settings(name, kind):
    optimizer = make_optimizer(name, _params(), lr=0.01, momentum=0.8, weight_decay=1e-3)
    assert type(optimizer) is kind
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 1e-3
    if name != "adam":
        assert group["momentum"] == 0.8
    if name == "sgd":
        assert group["nesterov"] is False


def test_make_optimizer_defaults_are_the_calibration_study():
    group = make_optimizer("sgd", _params()).param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.9, 5e-4)


def test_unknown_optimizer_is_an_option_error_naming_the_option():
    with pytest.raises(OptionError, match="unknown optimizer 'lamb'") as err:
        make_optimizer("lamb", _params())
    assert list(err.value.problems) == ["--optimizer"]


# ------------------------------------------------------------------------------------------------ make_scheduler
def _lrs_per_epoch(optimizer: torch.optim.Optimizer, scheduler, epochs: int) -> list[float]:
    """The learning rate each epoch trains with, the schedule stepped once after each epoch."""
    lrs = []
    for _ in range(epochs):
        lrs.append(_lr(optimizer))
        optimizer.step()
        scheduler.step()
    return lrs


def test_multistep_milestones_are_fractions_of_the_run():
    optimizer = make_optimizer("sgd", _params(), lr=0.1)
    scheduler = make_scheduler("multistep", optimizer, epochs=10, milestones=[0.5, 0.75])
    assert sorted(scheduler.milestones) == [5, 8]  # 0.5 × 10, 0.75 × 10 = 7.5 → 8
    lrs = _lrs_per_epoch(optimizer, scheduler, 10)
    np.testing.assert_allclose(lrs, [0.1] * 5 + [0.01] * 3 + [0.001] * 2, rtol=1e-9)


def test_multistep_on_a_short_run_keeps_milestones_at_least_one_epoch():
    scheduler = make_scheduler("multistep", make_optimizer("sgd", _params()), epochs=1, milestones=[0.3, 0.9])
    assert sorted(scheduler.milestones) == [1]


@pytest.mark.parametrize("milestones", [[0.5, 1.0], [0.0], [-0.2, 0.5]])
def test_milestones_outside_the_run_are_an_option_error(milestones):
    with pytest.raises(OptionError) as err:
        make_scheduler("multistep", make_optimizer("sgd", _params()), epochs=10, milestones=milestones)
    assert list(err.value.problems) == ["--milestones"]


def test_step_schedule_decays_every_step_fraction_of_the_run():
    optimizer = make_optimizer("sgd", _params(), lr=1.0)
    scheduler = make_scheduler("step", optimizer, epochs=10, step_fraction=0.3, gamma=0.5)  # every 3 epochs
    np.testing.assert_allclose(_lrs_per_epoch(optimizer, scheduler, 10), [1, 1, 1, .5, .5, .5, .25, .25, .25, .125])


def test_cosine_ends_at_one_percent_of_the_learning_rate():
    optimizer = make_optimizer("sgd", _params(), lr=0.05)
    scheduler = make_scheduler("cosine", optimizer, epochs=8)
    lrs = _lrs_per_epoch(optimizer, scheduler, 8)
    assert lrs[0] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # decreasing every epoch
    assert lrs[4] == pytest.approx(0.0005 + (0.05 - 0.0005) / 2)  # half way: the mean of start and end
    assert _lr(optimizer) == pytest.approx(0.0005)  # after the last epoch: 1 % of 0.05


def test_constant_schedule_keeps_the_learning_rate():
    optimizer = make_optimizer("adam", _params(), lr=0.003)
    np.testing.assert_allclose(_lrs_per_epoch(optimizer, make_scheduler("constant", optimizer, 5), 5), [0.003] * 5)


def test_unknown_schedule_is_an_option_error_naming_the_option():
    with pytest.raises(OptionError, match="unknown schedule 'onecycle'") as err:
        make_scheduler("onecycle", make_optimizer("sgd", _params()), epochs=10)
    assert list(err.value.problems) == ["--lr_schedule"]


def _evaluator(metric: str = "val_balanced_accuracy") -> tuple[Engine, list[float]]:
    """An evaluator whose next run reports the next value pushed to the returned list as ``metric``."""
    values: list[float] = []
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.COMPLETED)
    def _report(engine: Engine) -> None:
        engine.state.metrics[metric] = values.pop(0)

    return evaluator, values


def test_plateau_follows_the_evaluator_metric_and_reduces_after_patience():
    optimizer = make_optimizer("sgd", _params(), lr=0.1)
    evaluator, values = _evaluator()
    scheduler = make_scheduler("plateau", optimizer, epochs=10, evaluator=evaluator, metric="val_balanced_accuracy")
    assert isinstance(scheduler, PlateauOnValidation)
    scheduler.step()  # before any validation: nothing to follow, nothing changes
    assert _lr(optimizer) == 0.1
    lrs = []
    for value in (0.5, 0.6, 0.6, 0.55, 0.6, 0.59):  # best 0.6 at the 2nd validation, then 4 without improvement
        values.append(value)
        evaluator.run([0])
        scheduler.step()
        lrs.append(_lr(optimizer))
    # ReduceLROnPlateau(patience 2): the 3rd validation without improvement reduces ×0.1
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert scheduler._last_lr == pytest.approx([0.01])  # what MONAI's LrScheduleHandler prints


def test_plateau_ignores_other_metrics_of_the_evaluator():
    optimizer = make_optimizer("sgd", _params(), lr=0.1)
    evaluator, values = _evaluator(metric="val_accuracy")
    scheduler = make_scheduler("plateau", optimizer, epochs=10, evaluator=evaluator, metric="val_balanced_accuracy")
    for value in (0.5, 0.4, 0.3, 0.2, 0.1):
        values.append(value)
        evaluator.run([0])
        scheduler.step()
    assert _lr(optimizer) == 0.1


def test_plateau_state_round_trips():
    optimizer = make_optimizer("sgd", _params(), lr=0.1)
    evaluator, values = _evaluator()
    scheduler = make_scheduler("plateau", optimizer, epochs=10, evaluator=evaluator)
    values += [0.5, 0.4]
    for _ in range(2):
        evaluator.run([0])
        scheduler.step()
    restored = make_scheduler("plateau", make_optimizer("sgd", _params(), lr=0.1), epochs=10, evaluator=evaluator)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.scheduler.best == 0.5 and restored.scheduler.num_bad_epochs == 1


def test_plateau_counts_each_validation_once_when_validating_every_second_epoch():
    optimizer = make_optimizer("sgd", _params(), lr=0.1)
    evaluator, values = _evaluator()
    scheduler = make_scheduler("plateau", optimizer, epochs=10, evaluator=evaluator)
    lrs = []
    for epoch in range(1, 9):  # ValidationHandler(interval=2) then LrScheduleHandler, every epoch
        if epoch % 2 == 0:
            values.append(0.5)  # no improvement after the first validation
            evaluator.run([0])
        scheduler.step()
        lrs.append(_lr(optimizer))
    # validations at epochs 2 (best), 4, 6, 8: the 3rd without improvement (epoch 8) is the first to reduce
    np.testing.assert_allclose(lrs, [0.1] * 7 + [0.01])


# -------------------------------------------------------------------------------------------- report engine
N = 14  # two images per class
LABELS = torch.tensor([k for k in range(K) for _ in range(2)])
IMAGE_IDS = [f"ISIC_{i:04d}" for i in range(N)]
PATHS = [f"/data/images/ISIC_{i:04d}.jpg" for i in range(N)]


def _logits(seed: int = 0) -> torch.Tensor:
    """(N, K) logits, right for most images (the label's logit raised), with some confident mistakes."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, K, generator=g)
    logits[torch.arange(N), LABELS] += 2.0
    return logits


def _batches(logits: torch.Tensor, batch_size: int = 4) -> list[dict]:
    return [{"logits": logits[i:i + batch_size], "label": LABELS[i:i + batch_size],
             "image_id": IMAGE_IDS[i:i + batch_size], "path": PATHS[i:i + batch_size]}
            for i in range(0, N, batch_size)]


def _engine(decollate: bool = False, with_label: bool = True) -> Engine:
    """An evaluator-shaped engine: the batch's logits as ``pred`` (batched dict, or a list of per-image dicts)."""
    def process(engine: Engine, batch: dict):
        out = {"pred": batch["logits"], "label": batch["label"] if with_label else None}
        if decollate:
            return [{"pred": p, "label": y} for p, y in zip(out["pred"], batch["label"])]
        return out

    return Engine(process)


def _probs(logits: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    return (logits.double() / temperature).softmax(1).numpy()


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> tuple[Path, Engine, torch.Tensor]:
    """One evaluation (T = 2) written to a folder that does not exist yet."""
    out = tmp_path_factory.mktemp("eval") / "test_split"
    logits = _logits()
    engine = _engine()
    ClassificationReport(out, DERMOSCOPY_CLASSES, n_bins=10, info={"split": "test", "data": "synthetic", "seed": 3},
                         temperature=2.0).attach(engine)
    engine.run(_batches(logits), max_epochs=1)
    return out, engine, logits


def test_report_writes_every_file(report_run):
    out, _, _ = report_run
    expected = {"metrics.json", "metrics.csv", "classification_report.csv", "classification_report.md",
                "confusion.csv", "confusion.png", "reliability.png", "predictions.csv", "risk_coverage.csv",
                "risk_coverage.png"}
    assert {p.name for p in out.iterdir()} == expected  # and no temporary file left behind
    for png in ("confusion.png", "reliability.png", "risk_coverage.png"):
        assert (out / png).read_bytes()[:8] == PNG_SIGNATURE


def test_report_numbers_are_the_classification_report_of_the_tempered_probabilities(report_run):
    out, engine, logits = report_run
    expected = classification_report(_probs(logits, 2.0), LABELS.numpy(), DERMOSCOPY_CLASSES, n_bins=10)
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["info"] == {"split": "test", "data": "synthetic", "seed": 3, "temperature": 2.0,
                             "referral_threshold": None}
    assert set(saved["metrics"]) == set(expected) | {"aurc"}
    probs = _probs(logits, 2.0)
    assert saved["metrics"]["aurc"] == pytest.approx(aurc(probs.max(1), probs.argmax(1) == LABELS.numpy()))
    # before temperature scaling: the same report at T = 1
    raw = classification_report(_probs(logits, 1.0), LABELS.numpy(), DERMOSCOPY_CLASSES, n_bins=10)
    for key in ("ece", "oe", "nll", "brier"):
        assert saved["uncalibrated"][key] == pytest.approx(raw[key], abs=1e-12), key
    for key, value in expected.items():
        assert saved["metrics"][key] == pytest.approx(value, abs=1e-12), key
        assert engine.state.report[key] == pytest.approx(value, abs=1e-12), key
    assert saved["metrics"]["n_samples"] == N and saved["metrics"]["n_bins"] == 10
    row = pd.read_csv(out / "metrics.csv")
    assert len(row) == 1
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "ece", "oe", "nll", "brier", "macro_auc"):
        assert row[key][0] == pytest.approx(expected[key], rel=1e-9), key


def test_report_tables_and_confusion_matrix(report_run):
    out, _, logits = report_run
    probs = _probs(logits, 2.0)
    expected = classification_report(probs, LABELS.numpy(), DERMOSCOPY_CLASSES, n_bins=10)
    table = pd.read_csv(out / "classification_report.csv")
    assert list(table["class"]) == [*DERMOSCOPY_CLASSES, "macro avg", "weighted avg"]
    assert list(table.columns) == ["class", "precision", "recall", "specificity", "f1", "support"]
    mel = table.set_index("class").loc["mel"]
    assert mel["recall"] == pytest.approx(expected["recall_mel"]) and mel["support"] == 2
    assert table["support"].iloc[-1] == N
    markdown = (out / "classification_report.md").read_text(encoding="utf-8")
    assert "test split, synthetic data, 14 images" in markdown and "| macro avg |" in markdown
    cm = pd.read_csv(out / "confusion.csv", index_col="true")
    assert list(cm.index) == list(DERMOSCOPY_CLASSES) and list(cm.columns) == list(DERMOSCOPY_CLASSES)
    np.testing.assert_array_equal(cm.to_numpy(), confusion_matrix(LABELS.numpy(), probs.argmax(1), K))
    assert cm.to_numpy().sum(1).tolist() == [2] * K  # rows are the true classes


def test_report_prediction_rows_divide_the_logits_by_the_temperature(report_run):
    out, _, logits = report_run
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["image_id", "path", *DERMOSCOPY_CLASSES, "prediction", "confidence", "label",
                                   "correct"]
    assert list(table["image_id"]) == IMAGE_IDS and list(table["path"]) == PATHS  # batch order kept
    tempered, plain = _probs(logits, 2.0), _probs(logits, 1.0)
    np.testing.assert_allclose(table[list(DERMOSCOPY_CLASSES)].to_numpy(), tempered, atol=5e-7)
    assert not np.allclose(tempered, plain, atol=1e-3)  # T = 2 did change the probabilities
    np.testing.assert_allclose(table["confidence"], tempered.max(1), atol=5e-7)
    assert list(table["label"]) == [DERMOSCOPY_CLASSES[k] for k in LABELS]
    assert list(table["correct"]) == list(tempered.argmax(1) == LABELS.numpy())


def test_report_refuses_decollated_output_with_a_clear_message(tmp_path):
    engine = _engine(decollate=True)
    ClassificationReport(tmp_path / "eval", DERMOSCOPY_CLASSES).attach(engine)
    with pytest.raises(TypeError, match="decollate=False"):
        engine.run(_batches(_logits()), max_epochs=1)
    assert not (tmp_path / "eval").exists()


def test_report_without_labels_is_refused(tmp_path):
    """A user error (one ``mednet error:`` line through a bundle), not a bug's traceback."""
    for writer, words in ((ClassificationReport, "evaluation needs labelled images"),
                          (CalibrationFitter, "calibration needs the labelled validation split")):
        engine = _engine(with_label=False)
        writer(tmp_path / writer.__name__, DERMOSCOPY_CLASSES).attach(engine)
        with pytest.raises(DataError, match=words):
            engine.run(_batches(_logits()), max_epochs=1)
        assert not (tmp_path / writer.__name__ / "calibration.json").exists()


def test_report_restarts_its_collection_with_each_run(tmp_path, monkeypatch):
    for plot in ("plot_confusion_matrix", "plot_reliability_diagram"):  # the figures are checked above; keep this fast
        monkeypatch.setattr(f"mednet.engines.classification_report.{plot}", lambda *args, **kwargs: None)
    logits = _logits(seed=1)
    engine = _engine()
    ClassificationReport(tmp_path, DERMOSCOPY_CLASSES).attach(engine)
    engine.run(_batches(_logits(seed=2)), max_epochs=1)
    engine.run(_batches(logits), max_epochs=1)  # a second validation: only its own images count
    assert engine.state.report["n_samples"] == N
    expected = classification_report(_probs(logits), LABELS.numpy(), DERMOSCOPY_CLASSES)
    assert engine.state.report["nll"] == pytest.approx(expected["nll"])


# ---------------------------------------------------------------------------------------------- PredictionWriter
def test_prediction_writer_writes_one_row_per_image(tmp_path):
    csv = tmp_path / "predictions.csv"
    logits = _logits()
    engine = _engine(with_label=False)
    PredictionWriter(csv, DERMOSCOPY_CLASSES, temperature=0.5).attach(engine)
    engine.run(_batches(logits, batch_size=5), max_epochs=1)
    table = pd.read_csv(csv)
    assert list(table.columns) == ["image_id", "path", *DERMOSCOPY_CLASSES, "prediction", "confidence"]
    assert list(table["image_id"]) == IMAGE_IDS and list(table["path"]) == PATHS
    probs = table[list(DERMOSCOPY_CLASSES)].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=5e-6)  # 7 values rounded to 6 decimals
    np.testing.assert_allclose(probs, _probs(logits, 0.5), atol=5e-7)
    assert list(table["prediction"]) == [DERMOSCOPY_CLASSES[k] for k in probs.argmax(1)]
    np.testing.assert_allclose(table["confidence"], probs.max(1))
    assert engine.state.predictions.shape == (N, 2 + K + 2)


def test_prediction_writer_refuses_an_existing_file_before_any_work(tmp_path):
    csv = tmp_path / "predictions.csv"
    csv.write_text("earlier results\n")
    with pytest.raises(DataError, match="already exists") as err:
        PredictionWriter(csv, DERMOSCOPY_CLASSES)
    assert err.value.path == str(csv)
    assert csv.read_text(encoding="utf-8") == "earlier results\n"
    engine = _engine(with_label=False)
    PredictionWriter(csv, DERMOSCOPY_CLASSES, overwrite=True).attach(engine)
    engine.run(_batches(_logits()), max_epochs=1)
    assert len(pd.read_csv(csv)) == N


def test_prediction_table_rounds_and_marks_correct_rows():
    probs = np.array([[0.1234567, 0.8765433], [0.6, 0.4]])
    table = prediction_table(["a", "b"], ["/a.jpg", "/b.jpg"], probs, ["benign", "malignant"], labels=np.array([1, 1]))
    assert table["benign"].tolist() == [0.123457, 0.6]
    assert table["prediction"].tolist() == ["malignant", "benign"]
    assert table["confidence"].tolist() == [0.876543, 0.6]
    assert table["label"].tolist() == ["malignant", "malignant"] and table["correct"].tolist() == [True, False]


# ------------------------------------------------------------------ calibration of a run


def _overconfident(n: int = 600, k: int = 7, seed: int = 0, scale: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(base); the network's logits are ``scale`` × base: over-confident by design."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, k, generator=g) * 3.0
    labels = torch.multinomial(base.softmax(1), 1, generator=g).reshape(-1)
    return base * scale, labels


def test_calibration_fitter_writes_the_runs_calibration(tmp_path):
    logits, labels = _overconfident()
    engine = Engine(lambda e, b: {"pred": b["logits"], "label": b["label"]})
    CalibrationFitter(tmp_path, DERMOSCOPY_CLASSES, n_bins=15, target_accuracy=0.8,
                      info={"split": "validation"}).attach(engine)
    batches = [{"logits": logits[i:i + 100], "label": labels[i:i + 100]} for i in range(0, len(labels), 100)]
    engine.run(batches, max_epochs=1)
    for name in ("calibration.json", "calibration_reliability.png", "calibration_risk_coverage.csv",
                 "calibration_risk_coverage.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "calibration.json").read_text(encoding="utf-8"))
    assert 3.0 < saved["temperature"] < 5.0  # the over-confidence factor is recovered
    before, after = saved["validation"]["before"], saved["validation"]["after"]
    assert after["nll"] <= before["nll"] and after["ece"] < before["ece"]
    assert after["accuracy"] == before["accuracy"]  # T never changes the argmax
    referral = saved["referral"]
    probs = (logits.double() / saved["temperature"]).softmax(1)
    accepted = probs.max(1).values >= referral["threshold"]
    assert accepted.float().mean().item() == pytest.approx(referral["coverage"])
    assert referral["achievable"] and 0 < referral["coverage"] < 1
    assert (probs.argmax(1) == labels)[accepted].float().mean().item() >= 0.8
    # the accepted validation cases' accuracy and its Clopper–Pearson bound at the default level, by hand
    hits, n = int((probs.argmax(1) == labels)[accepted].sum()), int(accepted.sum())
    assert referral["accuracy"] == pytest.approx(hits / n)
    assert referral["confidence_level"] == 0.9 and referral["target_accuracy"] == 0.8
    assert referral["accuracy_lower_bound"] == pytest.approx(scipy.stats.beta.ppf(0.1, hits, n - hits + 1))
    assert 0.8 <= referral["accuracy_lower_bound"] < referral["accuracy"]
    assert saved["fitted_on"]["split"] == "validation" and saved["fitted_on"]["n_images"] == len(labels)
    # what evaluation and inference read back
    got = read_calibration(tmp_path / "model.pt")
    assert got["temperature"] == pytest.approx(saved["temperature"])
    assert got["referral_threshold"] == pytest.approx(referral["threshold"])
    assert got["referral"] == referral


def test_calibration_fitter_passes_its_confidence_level_on(tmp_path):
    """A higher level asks for more evidence: the threshold accepts fewer validation cases (or none)."""
    logits, labels = _overconfident()
    coverage = {}
    for level in (0.5, 0.99):
        engine = Engine(lambda e, b: {"pred": b["logits"], "label": b["label"]})
        CalibrationFitter(tmp_path / str(level), DERMOSCOPY_CLASSES, target_accuracy=0.8,
                          confidence_level=level).attach(engine)
        engine.run([{"logits": logits, "label": labels}], max_epochs=1)
        referral = json.loads((tmp_path / str(level) / "calibration.json").read_text(encoding="utf-8"))["referral"]
        assert referral["confidence_level"] == level
        coverage[level] = referral["coverage"]
    assert coverage[0.99] < coverage[0.5]


def test_calibration_fitter_never_overwrites_unless_asked(tmp_path):
    (tmp_path / "calibration.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match="calibration.json"):
        CalibrationFitter(tmp_path, DERMOSCOPY_CLASSES, overwrite=False)
    with pytest.raises(OptionError, match="--target_accuracy"):
        CalibrationFitter(tmp_path, DERMOSCOPY_CLASSES, target_accuracy=1.5)
    with pytest.raises(OptionError, match=r"--referral_confidence: must be a number in \[0\.5, 1\)"):
        CalibrationFitter(tmp_path / "new", DERMOSCOPY_CLASSES, confidence_level=1.0)


def test_read_calibration_without_file_and_with_a_bad_one(tmp_path):
    assert read_calibration(tmp_path / "model.pt") == {"temperature": 1.0, "referral_threshold": None, "referral": {},
                                                       "file": None}
    (tmp_path / "calibration.json").write_text('{"temperature": -1}', encoding="utf-8")
    with pytest.raises(DataError, match="calibration.json"):
        read_calibration(tmp_path)


def test_report_referral_coverage_and_accuracy_on_the_test_split(tmp_path):
    """The coverage and accuracy a validation-chosen threshold gives on the evaluated split, against a hand count.

    Six images, T = 2; row i has logit 2·x_i for its predicted class and 0 for the other six, so its calibrated
    confidence is e^x / (e^x + 6): x = 4, 3, 2.5, 2.3 → .901, .770, .670, .624 (≥ .6: accepted), x = 2, 1 →
    .552, .312 (referred). Accepted: right, right, wrong, wrong → coverage 4/6, accuracy 2/4."""
    xs, predicted, labels = [4.0, 3.0, 2.5, 2.3, 2.0, 1.0], [0, 1, 2, 3, 4, 5], [0, 1, 3, 4, 4, 6]
    confidence = [math.exp(x) / (math.exp(x) + 6) for x in xs]
    assert [c >= 0.6 for c in confidence] == [True] * 4 + [False] * 2
    logits = torch.zeros(6, K)
    logits[torch.arange(6), torch.tensor(predicted)] = 2 * torch.tensor(xs)
    batch = {"logits": logits, "label": torch.tensor(labels), "image_id": [f"i{i}" for i in range(6)],
             "path": [""] * 6}
    engine = _engine()
    ClassificationReport(tmp_path, DERMOSCOPY_CLASSES, n_bins=10, info={"split": "test"}, temperature=2.0,
                         referral_threshold=0.6).attach(engine)
    engine.run([batch], max_epochs=1)
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics["referral_threshold"] == 0.6 and metrics["referral_n"] == 6
    assert (metrics["referral_accepted"], metrics["referral_referred"]) == (4, 2)
    assert metrics["referral_coverage"] == pytest.approx(4 / 6)
    assert metrics["referral_accuracy"] == pytest.approx(2 / 4) and metrics["referral_risk"] == pytest.approx(2 / 4)
    assert engine.state.report["referral_coverage"] == pytest.approx(4 / 6)
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert table["refer"].tolist() == [False] * 4 + [True] * 2
    np.testing.assert_allclose(table["confidence"], confidence, atol=1e-6)
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert row["referral_accuracy"] == pytest.approx(0.5) and row["referral_coverage"] == pytest.approx(4 / 6)


def test_predictions_mark_cases_below_the_referral_threshold():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7]])
    table = prediction_table(["a", "b", "c"], ["", "", ""], probs, ["x", "y"], referral_threshold=0.6)
    assert list(table["refer"]) == [False, True, False]
    assert list(table["decision"]) == ["x", "refer", "y"]
    assert "refer" not in prediction_table(["a"], [""], probs[:1], ["x", "y"]).columns


def test_report_writes_metrics_json_last(tmp_path, monkeypatch):
    """metrics.json marks a finished evaluation (the calibration study resumes on it): a report stopped while
    drawing leaves no metrics.json, so the resumed study evaluates again instead of failing on a missing
    predictions.csv."""
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mednet.engines.classification_report.plot_reliability_diagram", killed)
    engine = _engine()
    ClassificationReport(tmp_path / "eval", DERMOSCOPY_CLASSES).attach(engine)
    with pytest.raises(KeyboardInterrupt):
        engine.run(_batches(_logits()), max_epochs=1)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_markdown_tables_show_missing_values_as_a_dash():
    import pandas as pd

    from mednet.reports.tables import markdown_table

    table = pd.DataFrame({"ECE": [0.05, None], "selected epoch": [3, None], "model": ["cnn", None]})
    table = table.astype({"selected epoch": "Int64"})
    assert markdown_table(table).splitlines()[2:] == ["| 0.050 | 3 | cnn |", "| — | — | — |"]
