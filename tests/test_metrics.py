"""Tests for :mod:`mednet.metrics.segmentation` against MONAI's DiceMetric and an independent numpy version."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.metrics import DiceMetric
from monai.networks import one_hot

from mednet.metrics.segmentation import (
    LabelledPixelAccuracy,
    TissueConfusionMatrix,
    label_output,
    patch_accuracy_output,
    scores_from_confusion,
    tissue_confusion_matrix,
    tissue_metrics,
)

NAMES = ("CSF", "GM", "WM")


def _maps(seed: int, shape=(7, 6, 5), p_correct: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Random true labels 0–3 and a prediction equal to them with probability ``p_correct``."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 4, shape, generator=g)
    noise = torch.randint(0, 4, shape, generator=g)
    keep = torch.rand(shape, generator=g) < p_correct
    return torch.where(keep, true, noise), true


def _monai_dice(pred: torch.Tensor, true: torch.Tensor) -> np.ndarray:
    """Per-class (CSF, GM, WM) Dice of one volume with MONAI's DiceMetric on one-hot maps."""
    metric = DiceMetric(include_background=False, reduction="none")
    metric(y_pred=one_hot(pred[None, None], num_classes=4), y=one_hot(true[None, None], num_classes=4))
    out = metric.aggregate()
    return out.reshape(-1).double().numpy()


def _numpy_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Straight from the definitions, no confusion matrix."""
    pred, true = np.asarray(pred).ravel(), np.asarray(true).ravel()
    out = {}
    for c, name in zip((1, 2, 3), NAMES):
        tp = np.sum((pred == c) & (true == c))
        denom = np.sum(pred == c) + np.sum(true == c)
        out[f"dice_{name}"] = 2 * tp / denom if denom else math.nan
        out[f"acc_{name}"] = tp / np.sum(true == c) if np.sum(true == c) else math.nan
    tissue = true > 0
    out["pixel_accuracy"] = np.sum(pred[tissue] == true[tissue]) / np.sum(tissue)
    out["mean_dice"] = np.nanmean([out[f"dice_{n}"] for n in NAMES])
    out["mean_acc"] = np.nanmean([out[f"acc_{n}"] for n in NAMES])
    return out


def _assert_scores_close(a: dict, b: dict, keys=None) -> None:
    for k in keys or b:
        if math.isnan(b[k]):
            assert math.isnan(a[k]), k
        else:
            assert a[k] == pytest.approx(b[k], abs=1e-12), k


# ------------------------------------------------------------------ confusion matrix


def test_confusion_matrix_layout():
    true = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    pred = torch.tensor([0, 1, 2, 2, 3, 0, 1])
    cm = tissue_confusion_matrix(pred, true)
    assert cm.shape == (4, 4) and cm.dtype == torch.int64
    expected = np.zeros((4, 4), np.int64)
    for t, p in zip(true.tolist(), pred.tolist()):
        expected[t, p] += 1  # rows: truth, columns: prediction
    np.testing.assert_array_equal(cm.numpy(), expected)
    assert int(cm.sum()) == 7


def test_confusion_matrix_accepts_numpy_and_shapes():
    pred, true = _maps(0)
    a = tissue_confusion_matrix(pred, true)
    b = tissue_confusion_matrix(pred.numpy().astype(np.uint8), true.numpy()[None])  # any shape, same size
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="differ in size"):
        tissue_confusion_matrix(pred[:-1], true)


@pytest.mark.parametrize("pred, true", [([4, 1], [0, 1]), ([-1, 1], [1, 1])], ids=["pred4", "pred-1"])
def test_out_of_range_labels_are_rejected(pred, true):
    with pytest.raises(ValueError):
        tissue_confusion_matrix(torch.tensor(pred), torch.tensor(true))


# ------------------------------------------------------------------ scores


@pytest.mark.parametrize("seed", range(4))
def test_dice_agrees_with_monai(seed):
    pred, true = _maps(seed)
    scores = scores_from_confusion(tissue_confusion_matrix(pred, true))
    monai = _monai_dice(pred, true)
    for c, name in enumerate(NAMES):
        assert scores[f"dice_{name}"] == pytest.approx(float(monai[c]), abs=1e-6), name
    assert scores["mean_dice"] == pytest.approx(float(monai.mean()), abs=1e-6)
    mean_metric = DiceMetric(include_background=False, reduction="mean")
    mean_metric(y_pred=one_hot(pred[None, None], 4), y=one_hot(true[None, None], 4))
    assert scores["mean_dice"] == pytest.approx(float(mean_metric.aggregate()), abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_scores_agree_with_numpy(seed):
    pred, true = _maps(seed, shape=(9, 8))
    scores = scores_from_confusion(tissue_confusion_matrix(pred, true))
    assert set(scores) == {
        "dice_CSF", "dice_GM", "dice_WM", "mean_dice", "acc_CSF", "acc_GM", "acc_WM", "mean_acc", "pixel_accuracy",
    }
    _assert_scores_close(scores, _numpy_scores(pred.numpy(), true.numpy()))


def test_pixel_accuracy_ignores_background():
    true = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2])
    pred = torch.tensor([0, 0, 0, 0, 0, 0, 1, 3])  # background all right, tissue half right
    scores = scores_from_confusion(tissue_confusion_matrix(pred, true))
    assert scores["pixel_accuracy"] == pytest.approx(0.5)
    # a tissue pixel predicted as background counts as wrong
    scores = scores_from_confusion(tissue_confusion_matrix(torch.tensor([1, 0]), torch.tensor([1, 2])))
    assert scores["pixel_accuracy"] == pytest.approx(0.5)
    assert scores["acc_GM"] == 0.0 and scores["dice_GM"] == 0.0


def test_perfect_prediction():
    _, true = _maps(1)
    scores = scores_from_confusion(tissue_confusion_matrix(true, true))
    assert all(v == 1.0 for v in scores.values())


def test_absent_class_is_nan_and_ignored_by_means():
    true = torch.tensor([0, 1, 1, 1, 3, 3, 0])
    pred = torch.tensor([0, 1, 1, 3, 3, 3, 1])  # GM (2) absent from truth and prediction
    scores = scores_from_confusion(tissue_confusion_matrix(pred, true))
    assert math.isnan(scores["dice_GM"]) and math.isnan(scores["acc_GM"])
    dice_csf, dice_wm = 2 * 2 / (3 + 3), 2 * 2 / (2 + 3)
    assert scores["dice_CSF"] == pytest.approx(dice_csf) and scores["dice_WM"] == pytest.approx(dice_wm)
    assert scores["mean_dice"] == pytest.approx((dice_csf + dice_wm) / 2)
    assert scores["mean_acc"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 5)
    # MONAI also gives NaN for a class absent from the truth
    assert math.isnan(_monai_dice(pred, true)[1])
    _assert_scores_close(scores, _numpy_scores(pred.numpy(), true.numpy()))


def test_predicted_but_absent_from_truth_is_zero_dice_nan_accuracy():
    true = torch.tensor([1, 1, 0])
    pred = torch.tensor([1, 2, 0])
    scores = scores_from_confusion(tissue_confusion_matrix(pred, true))
    assert scores["dice_GM"] == 0.0  # a false positive is penalised, never NaN
    assert math.isnan(scores["acc_GM"])


def test_all_background_gives_nan_everywhere():
    zeros = torch.zeros(10, dtype=torch.long)
    scores = scores_from_confusion(tissue_confusion_matrix(zeros, zeros))
    assert all(math.isnan(v) for v in scores.values())


# ------------------------------------------------------------------ Ignite


def _run_engine(batches, metrics) -> dict:
    engine = Engine(lambda e, batch: batch)
    for name, metric in metrics.items():
        metric.attach(engine, name)
    return engine.run(batches, max_epochs=1).metrics


@pytest.mark.parametrize("decollated", [True, False], ids=["list_of_dicts", "single_dict"])
def test_tissue_metrics_on_engine(decollated):
    volumes = [_maps(s, shape=(6, 5, 4)) for s in range(6)]
    if decollated:  # 3 iterations of 2 items each, like MONAI's decollated evaluator output
        batches = [[{"pred": p[None], "label": t[None]} for p, t in volumes[i : i + 2]] for i in range(0, 6, 2)]
    else:  # 3 iterations of one batched dict (B, 1, X, Y, Z)
        batches = [
            {"pred": torch.stack([p[None] for p, _ in volumes[i : i + 2]]), "label": torch.stack([t[None] for _, t in volumes[i : i + 2]])}
            for i in range(0, 6, 2)
        ]
    metrics = tissue_metrics(prefix="val_")
    assert set(metrics) == {
        f"val_{k}"
        for k in ("dice_CSF", "dice_GM", "dice_WM", "mean_dice", "acc_CSF", "acc_GM", "acc_WM", "mean_acc", "pixel_accuracy")
    }
    cm_metric = next(iter(metrics.values())).args[0]
    assert all(m.args[0] is cm_metric for m in metrics.values())  # one shared confusion matrix

    results = _run_engine(batches, metrics)

    pooled = sum(tissue_confusion_matrix(p, t) for p, t in volumes)
    # not counted twice although nine metrics depend on it
    assert torch.equal(cm_metric.compute(), pooled)
    expected = scores_from_confusion(pooled)
    for k, v in expected.items():
        assert results[f"val_{k}"] == pytest.approx(v, abs=1e-12), k
    # pooled, not the mean of per-volume scores
    per_volume = np.mean([scores_from_confusion(tissue_confusion_matrix(p, t))["mean_dice"] for p, t in volumes])
    assert results["val_mean_dice"] != pytest.approx(per_volume, abs=1e-9)


def test_tissue_confusion_matrix_metric_resets_per_epoch():
    pred, true = _maps(3)
    engine = Engine(lambda e, batch: batch)
    TissueConfusionMatrix().attach(engine, "cm")
    state = engine.run([{"pred": pred, "label": true}] * 2, max_epochs=3)
    assert torch.equal(state.metrics["cm"], 2 * tissue_confusion_matrix(pred, true))


def test_label_output_and_patch_accuracy_output():
    items = [{"pred": torch.tensor([[1, 2]]), "label": torch.tensor([[1, 3]])}, {"pred": torch.tensor([0]), "label": torch.tensor([0])}]
    pred, true = label_output(items)
    assert pred.tolist() == [1, 2, 0] and true.tolist() == [1, 3, 0]
    pred, true = label_output({"pred": torch.ones(2, 1, 2, 2), "label": torch.zeros(2, 1, 2, 2)})
    assert pred.shape == true.shape == (8,)
    logits, targets = patch_accuracy_output({"pred": torch.zeros(2, 3, 4, 4), "label": torch.ones(2, 1, 4, 4)})
    assert logits.shape == (32, 3) and targets.shape == (32,) and targets.dtype == torch.long
    # background pixels inside patches (target -1) are left out of the accuracy
    label = torch.ones(2, 1, 4, 4)
    label[0, 0, 0] = -1
    pred = torch.randn(2, 3, 4, 4)
    logits, targets = patch_accuracy_output({"pred": pred, "label": label})
    assert logits.shape == (28, 3) and (targets == 1).all()
    torch.testing.assert_close(logits[0], pred[0, :, 1, 0])


def test_labelled_pixel_accuracy_matches_ignite_accuracy_on_kept_pixels():
    """The device-side metric equals the slow reference (Ignite ``Accuracy`` on boolean-indexed pixels) over an
    epoch of batches with background (−1) pixels, and resets between epochs."""
    from ignite.exceptions import NotComputableError
    from ignite.metrics import Accuracy

    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        label = torch.randint(-1, 3, (8, 1, 6, 6), generator=g)
        batches.append({"pred": torch.randn(8, 3, 6, 6, generator=g), "label": label})
    engine = Engine(lambda e, batch: batch)
    LabelledPixelAccuracy().attach(engine, "fast")
    Accuracy(output_transform=patch_accuracy_output).attach(engine, "reference")
    state = engine.run(batches, max_epochs=2)
    assert 0.2 < state.metrics["reference"] < 0.5  # random logits: about 1/3 correct
    assert state.metrics["fast"] == pytest.approx(state.metrics["reference"], abs=1e-12)
    only_background = Engine(lambda e, batch: batch)
    LabelledPixelAccuracy().attach(only_background, "fast")
    with pytest.raises(NotComputableError):
        only_background.run([{"pred": torch.randn(2, 3, 4, 4), "label": torch.full((2, 1, 4, 4), -1)}])
