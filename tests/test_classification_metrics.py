"""Tests for :mod:`mednet.metrics.classification` and :mod:`mednet.reports.calibration`: hand-computed values,
scikit-learn and torchmetrics (a test dependency) as independent implementations, and the Ignite metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchmetrics.classification
from ignite.engine import Engine
from sklearn.metrics import (
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from _dermoscopy_fixtures import kept_figures

from mednet.errors import DataError
from mednet.metrics.classification import (
    ClassificationProbabilities,
    brier_score,
    classification_metrics,
    classification_report,
    classwise_ece,
    confusion_matrix,
    expected_calibration_error,
    logits_output,
    macro_auc_ovr,
    negative_log_likelihood,
    overconfidence_error,
    reliability_bins,
    report_table,
    scores_from_confusion,
    underconfidence_error,
)
from mednet.reports.calibration import plot_reliability_diagram

NAMES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

# Hand example, 3 classes, 5 bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]:
#   top-1 conf  pred  label  correct  bin
#   1.00        0     0      yes      (.8, 1]   <- confidence exactly 1.0 belongs to the top bin
#   0.90        0     1      no       (.8, 1]
#   0.85        1     1      yes      (.8, 1]
#   0.50        0     0      yes      (.4, .6]
#   0.50        1     2      no       (.4, .6]
#   0.38        0     0      yes      (.2, .4]
HAND_PROBS = np.array([
    [1.00, 0.00, 0.00],
    [0.90, 0.05, 0.05],
    [0.10, 0.85, 0.05],
    [0.50, 0.30, 0.20],
    [0.30, 0.50, 0.20],
    [0.38, 0.32, 0.30],
])
HAND_LABELS = np.array([0, 1, 1, 0, 2, 0])
# top bin:   n 3, conf (1 + .9 + .85)/3 = 11/12, acc 2/3, gap conf - acc = 1/4 (over-confident)
# (.4, .6]:  n 2, conf .5, acc 1/2, gap 0
# (.2, .4]:  n 1, conf .38, acc 1, gap acc - conf = .62 (under-confident)
HAND_ECE = 3 / 6 * 0.25 + 2 / 6 * 0 + 1 / 6 * 0.62  # = .125 + .103333 = .228333
HAND_OE = 3 / 6 * (11 / 12) * 0.25  # = 11/96 = .114583
HAND_UCE = 1 / 6 * 0.38 * 0.62  # = .039267


def _random(seed: int, n: int = 400, k: int = 7, p_correct: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(logits (n, k), probs (n, k), labels (n,))``: logits favour the true class with probability ``p_correct``
    (so every class is both present and predicted at n = 400)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1.5, (n, k))
    boost = rng.random(n) < p_correct
    logits[np.arange(n)[boost], labels[boost]] += 3.0
    probs = torch.from_numpy(logits).softmax(1).numpy()
    return logits, probs, labels


def test_hand_example_bins_ece_oe_uce() -> None:
    bins = reliability_bins(HAND_PROBS, HAND_LABELS, n_bins=5)
    np.testing.assert_array_equal(bins["count"], [0, 1, 2, 0, 3])
    np.testing.assert_allclose(bins["edges"], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(bins["accuracy"], [np.nan, 1, 0.5, np.nan, 2 / 3])
    np.testing.assert_allclose(bins["confidence"], [np.nan, 0.38, 0.5, np.nan, 11 / 12])
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, 5) == pytest.approx(HAND_ECE, abs=1e-12)
    assert overconfidence_error(HAND_PROBS, HAND_LABELS, 5) == pytest.approx(HAND_OE, abs=1e-12)
    assert underconfidence_error(HAND_PROBS, HAND_LABELS, 5) == pytest.approx(HAND_UCE, abs=1e-12)
    assert HAND_ECE == pytest.approx(0.2283333, abs=1e-6)  # the comment's arithmetic


def test_classwise_ece_counts_zero_and_one() -> None:
    # 2 classes, 5 bins; probs [[1, 0], [.7, .3]], both labels 1.
    # class 0: p = [1, .7] vs y = [0, 0]: top bin gap 1, (.6, .8] gap .7 -> .5*1 + .5*.7 = .85
    # class 1: p = [0, .3] vs y = [1, 1]: first bin (p = 0) gap 1, (.2, .4] gap .7 -> .85
    # (dropping p = 0 from the binning would give .35 for class 1 and .6 overall)
    probs, labels = np.array([[1.0, 0.0], [0.7, 0.3]]), np.array([1, 1])
    assert classwise_ece(probs, labels, n_bins=5) == pytest.approx(0.85, abs=1e-12)
    # top-1: conf 1.0 (wrong) in the top bin, .7 (wrong) in (.6, .8] -> .5*1 + .5*.7
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(0.85, abs=1e-12)


def test_confidence_on_an_inner_edge_goes_in_the_lower_bin() -> None:
    """Bins are ((m−1)/M, m/M] (DESIGN.md, Guo et al. 2017): a confidence exactly m/M belongs to bin m, not m + 1."""
    probs = np.array([[0.4, 0.3, 0.3], [0.4, 0.3, 0.3], [0.35, 0.33, 0.32]])
    # the reviewer's labels [0, 1, 0]: all three in (.2, .4]: acc 2/3, conf 1.15/3 → |2/3 − .38333| = .283333. It
    # does not tell the bins apart: with .4 in (.4, .6] it is 2/3·|.5 − .4| + 1/3·|1 − .35| = .283333 as well.
    assert expected_calibration_error(probs, [0, 1, 0], n_bins=5) == pytest.approx(0.2833333333, abs=1e-9)
    # labels [0, 0, 1] do: lower bin (right) 1·|2/3 − .38333| = .283333; upper bin (wrong) 2/3·|1 − .4| + 1/3·|0 − .35|
    # = .516667
    assert expected_calibration_error(probs, [0, 0, 1], n_bins=5) == pytest.approx(0.2833333333, abs=1e-9)
    np.testing.assert_array_equal(reliability_bins(probs, [0, 0, 1], n_bins=5)["count"], [0, 3, 0, 0, 0])
    # M = 6 and confidence 5/6: np.linspace's edge 5·(1/6) is one float below 5/6, which put it in (5/6, 1]
    assert np.linspace(0, 1, 7)[5] < 5 / 6
    probs = np.array([[5 / 6, 1 / 6], [0.9, 0.1]])
    bins = reliability_bins(probs, [1, 0], n_bins=6)
    np.testing.assert_array_equal(bins["count"], [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(bins["edges"], np.arange(7) / 6)
    # (4/6, 5/6]: wrong at 5/6; (5/6, 1]: right at .9 → ½·5/6 + ½·.1 = .466667 (one bin: |½ − .866667| = .366667)
    assert expected_calibration_error(probs, [1, 0], n_bins=6) == pytest.approx(0.5 * 5 / 6 + 0.5 * 0.1, abs=1e-12)


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_torchmetrics_below_confidence_one(n_bins: int) -> None:
    _, probs, labels = _random(seed=n_bins)
    assert probs.max() < 1.0  # torchmetrics puts 1.0 into a hidden extra bin (issue #3510)
    reference = torchmetrics.classification.MulticlassCalibrationError(num_classes=7, n_bins=n_bins, norm="l1")
    expected = float(reference(torch.from_numpy(probs).float(), torch.from_numpy(labels)))
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(expected, abs=1e-5)


def test_confidence_one_is_in_the_top_bin_unlike_torchmetrics() -> None:
    # preds [.95, 1.0] for class 1, targets [1, 0]; one bin (.9, 1] holds both: acc 1/2, conf .975 -> .475
    probs, labels = np.array([[0.05, 0.95], [0.0, 1.0]]), np.array([1, 0])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.475, abs=1e-12)
    # torchmetrics 1.x counts 1.0 apart: .5*|1 - .95| + .5*|0 - 1| = .525. If this starts failing, torchmetrics
    # fixed issue #3510 and the "confidence < 1" restriction of the comparison test can go.
    tm = torchmetrics.classification.BinaryCalibrationError(n_bins=10, norm="l1")
    assert float(tm(torch.tensor([0.95, 1.0]), torch.tensor(labels))) == pytest.approx(0.525, abs=1e-6)


def test_scores_match_sklearn_and_hand_specificity() -> None:
    _, probs, labels = _random(seed=3)
    pred = probs.argmax(1)
    cm = confusion_matrix(labels, pred, 7)
    assert cm.shape == (7, 7) and cm.dtype == np.int64 and cm.sum() == len(labels)
    assert cm[labels[0], pred[0]] >= 1
    s = scores_from_confusion(cm, NAMES)
    p, r, f, sup = precision_recall_fscore_support(labels, pred, labels=range(7), zero_division=np.nan)
    for k, name in enumerate(NAMES):
        assert s[f"precision_{name}"] == pytest.approx(p[k])
        assert s[f"recall_{name}"] == pytest.approx(r[k])
        assert s[f"f1_{name}"] == pytest.approx(f[k])
        assert s[f"f1_{name}"] == pytest.approx(2 * p[k] * r[k] / (p[k] + r[k]))  # harmonic mean of pooled P, R
        assert s[f"support_{name}"] == sup[k]
        negatives = labels != k
        assert s[f"specificity_{name}"] == pytest.approx(np.mean(pred[negatives] != k))  # TN / (TN + FP)
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(labels, pred, average=avg, zero_division=0)
        assert (s[f"{avg}_precision"], s[f"{avg}_recall"], s[f"{avg}_f1"]) == pytest.approx((ap, ar, af))
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert s["accuracy"] == pytest.approx(np.mean(pred == labels))


def test_undefined_scores_are_nan_and_averages_follow_sklearn() -> None:
    # classes: 0 and 1 present and predicted, 2 present but never predicted, 3 neither present nor predicted
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 1])
    s = scores_from_confusion(confusion_matrix(labels, pred, 4), ["a", "b", "c", "d"])
    assert math.isnan(s["precision_d"]) and math.isnan(s["recall_d"]) and math.isnan(s["f1_d"])
    assert s["specificity_d"] == 1.0 and s["support_d"] == 0
    assert math.isnan(s["precision_c"]) and s["recall_c"] == 0.0 and s["f1_c"] == 0.0
    # b: TP 2, FP 2 (one a, one c), FN 0 -> P .5, R 1, F1 2/3; specificity 2/4 (a, a, c, c: one a and one c hit b)
    assert (s["precision_b"], s["recall_b"], s["f1_b"], s["specificity_b"]) == pytest.approx((0.5, 1.0, 2 / 3, 0.5))
    present = [0, 1, 2]
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(labels, pred, labels=present, average=avg, zero_division=0)
        assert (s[f"{avg}_precision"], s[f"{avg}_recall"], s[f"{avg}_f1"]) == pytest.approx((ap, ar, af))
    assert s["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)


def test_macro_averages_count_predictions_of_a_class_absent_from_the_truth() -> None:
    # a quarter of the predictions name class 2, which the (small) test split does not hold: those errors must
    # lower macro precision and F1 as in scikit-learn's default (classes present or predicted)
    labels, pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    s = scores_from_confusion(confusion_matrix(labels, pred, 3), ["a", "b", "c"])
    ap, _, af, _ = precision_recall_fscore_support(labels, pred, average="macro", zero_division=0)
    assert (ap, af) == pytest.approx((2 / 3, 5 / 9))
    assert (s["macro_precision"], s["macro_f1"]) == pytest.approx((ap, af))
    # recall needs a true sample: balanced accuracy stays the mean over the present classes
    assert s["macro_recall"] == s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert s["weighted_f1"] == pytest.approx(f1_score(labels, pred, average="weighted"))


def test_nll_brier_auc() -> None:
    logits, probs, labels = _random(seed=5)
    ce = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert negative_log_likelihood(probs, labels) == pytest.approx(ce, rel=1e-9)
    # a confident error on LDAM's s = 30 cosine head (logit gap 60): the float32 softmax still holds e^-60, and the
    # reported NLL is the cross-entropy (a clamp at 1e-12 would report 27.6)
    wrong = torch.tensor([[30.0, -30.0]])
    p32 = wrong.softmax(1).numpy()
    assert negative_log_likelihood(p32, [1]) == pytest.approx(F.cross_entropy(wrong, torch.tensor([1])).item(), rel=1e-5)
    # Brier by hand: sample 1 (.7, .2, .1) label 0 -> .09 + .04 + .01 = .14; sample 2 (.2, .5, .3) label 2 ->
    # .04 + .25 + .49 = .78; mean .46
    hand = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    assert brier_score(hand, [0, 2]) == pytest.approx(0.46, abs=1e-12)
    assert brier_score(probs, labels) == pytest.approx(brier_score_loss(labels, probs, labels=range(7), scale_by_half=False))
    assert macro_auc_ovr(probs, labels) == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    with pytest.warns(RuntimeWarning, match="only 1 class"):
        assert math.isnan(macro_auc_ovr(probs[labels == 2], labels[labels == 2]))


def test_report_and_table() -> None:
    _, probs, labels = _random(seed=7)
    report = classification_report(probs, labels, NAMES, n_bins=15)
    assert report["ece"] == pytest.approx(expected_calibration_error(probs, labels, 15))
    assert report["classwise_ece"] == pytest.approx(classwise_ece(probs, labels, 15))
    assert report["oe"] + report["uce"] > 0 and report["n_samples"] == 400 and report["n_bins"] == 15
    table = report_table(report, NAMES)
    assert list(table.index) == [*NAMES, "macro avg", "weighted avg"]
    assert list(table.columns) == ["precision", "recall", "specificity", "f1", "support"]
    assert table.loc["mel", "recall"] == report["recall_mel"]
    assert table.loc["macro avg", "recall"] == report["balanced_accuracy"]
    assert table["support"].iloc[:7].sum() == 400 and table.loc["weighted avg", "support"] == 400


def test_bad_inputs_raise_data_error() -> None:
    _, probs, labels = _random(seed=9, n=20)
    with pytest.raises(DataError, match="sum to 1"):
        expected_calibration_error(probs * 0.5, labels)
    with pytest.raises(DataError, match="within"):
        negative_log_likelihood(np.log(probs), labels)
    bad = labels.copy()
    bad[3] = 7
    with pytest.raises(DataError, match=r"classes 0\.\.6, got range \[\d, 7\]"):
        brier_score(probs, bad)
    with pytest.raises(DataError, match="7 columns but 2 class names"):
        classification_report(probs, labels, ["a", "b"])


def _run_engine(batches: list, names=NAMES, n_bins: int = 15) -> tuple[dict, ClassificationProbabilities]:
    metrics = classification_metrics(names, prefix="val_", n_bins=n_bins)
    engine = Engine(lambda e, batch: batch)
    for key, metric in metrics.items():
        metric.attach(engine, key)
    engine.run(batches, max_epochs=1)
    collector = next(iter(metrics.values())).args[0]
    return engine.state.metrics, collector


def test_ignite_batched_and_decollated_outputs_equal_pure_functions() -> None:
    logits, probs, labels = _random(seed=11, n=60)
    lt, yt = torch.from_numpy(logits).float(), torch.from_numpy(labels)
    batched = [{"pred": lt[i:i + 16], "label": yt[i:i + 16, None]} for i in range(0, 60, 16)]  # (B, 1) labels
    decollated = [[{"pred": lt[j], "label": yt[j]} for j in range(i, min(i + 16, 60))] for i in range(0, 60, 16)]
    p32 = lt.double().softmax(1).numpy()  # the metric takes softmax of the float32 logits it is given
    expected = classification_report(p32, labels, NAMES)
    for batches in (batched, decollated):
        got, collector = _run_engine(batches)
        assert set(got) == {f"val_{k}" for k in ("accuracy", "balanced_accuracy", "macro_f1", "ece", "oe", "uce",
                                                 "nll", "brier", "macro_auc")} | {f"val_recall_{n}" for n in NAMES}
        assert collector.compute()[0].shape == (60, 7)  # one update per iteration, not one per derived metric
        for key, value in got.items():
            assert value == pytest.approx(expected[key[len("val_"):]], nan_ok=True), key
    assert got["val_ece"] == pytest.approx(expected_calibration_error(probs, labels), abs=1e-6)


def test_ignite_soft_labels_are_argmaxed() -> None:
    logits, _, labels = _random(seed=13, n=30)
    soft = 0.7 * np.eye(7)[labels] + 0.3 * np.eye(7)[(labels + 1) % 7]  # MixUp-style, dominant = true class
    batches = [{"pred": torch.from_numpy(logits[i:i + 10]), "label": torch.from_numpy(soft[i:i + 10])} for i in range(0, 30, 10)]
    got, collector = _run_engine(batches)
    np.testing.assert_array_equal(collector.compute()[1].numpy(), labels)
    probs = torch.from_numpy(logits).softmax(1).numpy()
    assert got["val_balanced_accuracy"] == pytest.approx(classification_report(probs, labels, NAMES)["balanced_accuracy"])
    one_sample = logits_output([{"pred": torch.from_numpy(logits[0]), "label": torch.from_numpy(soft[0])}])
    assert one_sample[0].shape == (1, 7) and one_sample[1].tolist() == [labels[0]]


def test_ignite_report_is_cached_per_epoch() -> None:
    collector = ClassificationProbabilities()
    logits, _, labels = _random(seed=15, n=20)
    collector.update(logits_output({"pred": torch.from_numpy(logits), "label": torch.from_numpy(labels)}))
    first = collector.report(NAMES)
    assert collector.report(NAMES) is first
    collector.update(logits_output({"pred": torch.from_numpy(logits[:2]), "label": torch.from_numpy(labels[:2])}))
    assert collector.report(NAMES)["n_samples"] == 22


def test_reliability_diagram_png(tmp_path) -> None:
    _, probs, labels = _random(seed=17, n=200)
    out = plot_reliability_diagram(probs, labels, tmp_path / "figs" / "reliability.png", n_bins=15, title="test")
    assert out == tmp_path / "figs" / "reliability.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["reliability.png"]  # no temporary file left behind


def test_reliability_diagram_draws_the_hand_example(monkeypatch) -> None:
    """The figure shows the hand example's bins (see the table above HAND_PROBS): accuracy bars where a bin holds
    samples, the sample count of every bin, the ECE/OE in the legend and the lines at mean confidence and accuracy."""
    import mednet.reports.calibration as calibration_figure

    figures = kept_figures(monkeypatch, calibration_figure)
    plot_reliability_diagram(HAND_PROBS, HAND_LABELS, "unused.png", n_bins=5, title="hand example")
    ((top, bottom),) = [fig.axes for fig in figures]
    counts = [(round(b.get_x(), 6), b.get_height()) for b in bottom.patches]
    assert counts == [(0.0, 0), (0.2, 1), (0.4, 2), (0.6, 0), (0.8, 3)]
    bars = sorted((round(b.get_x(), 6), round(b.get_y(), 6), round(b.get_height(), 6)) for b in top.patches)
    # (left, bottom, height): the accuracy bar from 0, then the gap bar from min(accuracy, confidence)
    assert bars == [(0.2, 0.0, 1.0), (0.2, 0.38, 0.62), (0.4, 0.0, 0.5), (0.4, 0.5, 0.0),
                    (0.8, 0.0, round(2 / 3, 6)), (0.8, round(2 / 3, 6), 0.25)]
    assert top.get_title() == "hand example"
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert f"ECE = {HAND_ECE:.3f}, OE = {HAND_OE:.3f}  (5 bins)" in legend
    lines = {line.get_label(): line.get_xdata()[0] for line in bottom.get_lines()}
    mean_confidence = HAND_PROBS.max(1).mean()
    assert lines == {f"mean confidence {mean_confidence:.3f}": pytest.approx(mean_confidence),
                     f"accuracy {4 / 6:.3f}": pytest.approx(4 / 6)}
