"""Image classification scores and calibration errors over a whole split, and Ignite metrics that feed them.

Inputs everywhere: ``probs`` ``(N, K)`` softmax probabilities (rows sum to 1) and ``labels`` ``(N,)`` integer
classes in ``[0, K)``, as NumPy arrays or torch tensors; all arithmetic is in float64.

Scores from the pooled ``(K, K)`` confusion matrix ``cm[true, pred]`` (:func:`scores_from_confusion`):
per-class precision, recall (sensitivity), specificity, F1 and support; macro and support-weighted averages;
accuracy; balanced accuracy (= macro recall, the ISIC 2018 Task 3 ranking metric).

Calibration (:func:`reliability_bins` and the errors built on it), after Guo et al. 2017, "On calibration of
modern neural networks": the top-1 confidence ``conf_i = max_k p_ik`` is put into ``M`` equal-width bins
``B_m = ((m-1)/M, m/M]`` (default ``M = 15``), confidence exactly 0 into the first bin and exactly 1.0 into
the top bin; ``acc_m`` / ``conf_m`` are a bin's accuracy and mean confidence.

* ECE  = Σ_m |B_m|/n · |acc_m − conf_m|  (Guo et al. 2017);
* OE   = Σ_m |B_m|/n · conf_m · max(conf_m − acc_m, 0)  (overconfidence error, Thulasidasan et al. 2019,
  "On mixup training: improved calibration and predictive uncertainty for deep neural networks");
* UCE  = Σ_m |B_m|/n · conf_m · max(acc_m − conf_m, 0)  (underconfidence error: OE's mirror, defined here
  the same way with the sign of the gap flipped, so ``OE`` and ``UCE`` split the confidence-weighted gap);
* classwise ECE (Kull et al. 2019, "Beyond temperature scaling"): mean over classes ``k`` of the ECE of the
  one-vs-rest probability ``p_k`` against ``1[y = k]``.

Why hand-written: torchmetrics' ``CalibrationError`` puts confidence exactly 1.0 into a hidden extra bin
(torchmetrics issue #3510; on 1.9.0 preds [0.95, 1.0], targets [1, 0], 10 bins give 0.525 instead of the
textbook 0.475) and is only a test dependency here; MONAI 1.6's ``CalibrationErrorMetric`` bins per sample and
channel over spatial dimensions, not over a dataset's top-1 confidences; scikit-learn has ``calibration_curve``
but no ECE/OE. The tests compare these functions with torchmetrics on confidences < 1 and with scikit-learn.

:class:`ClassificationProbabilities` is an Ignite metric collecting softmax probabilities and labels over an
epoch; :func:`classification_metrics` derives scalar ``MetricsLambda``s from it (one report per epoch, cached)
for MONAI's ``key_val_metric`` / ``additional_metrics``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric, MetricsLambda
from ignite.metrics.metric import reinit__is_reduced
from sklearn.metrics import roc_auc_score

from mednet.metrics.confusion import confusion_matrix as generic_confusion_matrix
from mednet.errors import DataError

__all__ = [
    "confusion_matrix",
    "scores_from_confusion",
    "reliability_bins",
    "expected_calibration_error",
    "overconfidence_error",
    "underconfidence_error",
    "classwise_ece",
    "negative_log_likelihood",
    "brier_score",
    "macro_auc_ovr",
    "classification_report",
    "report_table",
    "logits_output",
    "ClassificationProbabilities",
    "classification_metrics",
    "EPOCH_METRIC_KEYS",
]

#: the row sums of ``probs`` may differ from 1 by this much (float32 softmax, averaged ensembles)
ROW_SUM_TOLERANCE = 1e-3
#: probabilities are clamped here before the logarithm in :func:`negative_log_likelihood`: the smallest normal
#: float32 (1.2e-38, −log = 87.3), below any probability a float32 softmax of logits less than ≈ 87 apart gives
#: (a clamp at 1e-12 would report 27.6 for a confident error whose cross-entropy is 60, e.g. LDAM's s = 30 head)
NLL_EPS = float(np.finfo(np.float32).tiny)

ArrayLike = np.ndarray | torch.Tensor | Sequence


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_labels(labels: ArrayLike, num_classes: int, n: int | None = None, what: str = "labels") -> np.ndarray:
    """``labels`` as an int64 ``(N,)`` array of classes in ``[0, num_classes)``."""
    arr = _numpy(labels)
    if arr.ndim != 1:
        raise DataError(None, f"{what} must have shape (N,), got {tuple(arr.shape)}")
    if n is not None and arr.shape[0] != n:
        raise DataError(None, f"{what} has {arr.shape[0]} entries but there are {n} samples")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(arr == np.round(arr)):
            raise DataError(None, f"{what} must be integer classes, got non-integer values")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise DataError(None, f"{what} must be classes 0..{num_classes - 1}, got range [{arr.min()}, {arr.max()}]")
    return arr


def _check_inputs(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (N, K) float64, labels (N,) int64)``, with the problems a user can cause named."""
    p = _numpy(probs).astype(np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(None, f"probabilities must have shape (N, K) with K >= 2 classes, got {tuple(p.shape)}")
    if p.shape[0] == 0:
        raise DataError(None, "no samples: probabilities have shape (0, K)")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise DataError(None, "probabilities must be finite and within [0, 1] (pass softmax outputs, not logits)")
    worst = float(np.abs(p.sum(1) - 1).max())
    if worst > ROW_SUM_TOLERANCE:
        raise DataError(None, f"probability rows must sum to 1 (worst row is off by {worst:.3g}); pass softmax outputs")
    return p, _check_labels(labels, p.shape[1], p.shape[0])


def confusion_matrix(labels: ArrayLike, pred: ArrayLike, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 confusion matrix ``cm[true, pred]`` of two ``(N,)`` integer class arrays (checked, then
    counted by the task-free :func:`mednet.metrics.confusion.confusion_matrix`)."""
    true = _check_labels(labels, num_classes)
    pred = _check_labels(pred, num_classes, true.shape[0], what="predictions")
    return generic_confusion_matrix(pred, true, num_classes).numpy()


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, ``nan`` where ``den == 0`` (an undefined score is never shown as 0 or 1)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusion(cm: ArrayLike, class_names: Sequence[str]) -> dict[str, float]:
    """Per-class and averaged scores from the pooled ``(K, K)`` confusion matrix ``cm[true, pred]``.

    Per class ``c`` (keys ``precision_<name>``, ``recall_<name>``, ``specificity_<name>``, ``f1_<name>``,
    ``support_<name>``), with TP/FP/FN/TN counted one-vs-rest on ``cm``:

    * precision = TP / (TP + FP), ``nan`` if ``c`` is never predicted;
    * recall (sensitivity) = TP / (TP + FN), ``nan`` if ``c`` is absent from the truth (support 0);
    * specificity = TN / (TN + FP), ``nan`` if every sample is ``c``;
    * F1 = 2 TP / (2 TP + FP + FN): the harmonic mean of *this* precision and recall wherever both are
      defined (not the mean of per-batch F1s), 0 for a class that is present but never predicted (or
      predicted but never present), ``nan`` only for a class neither present nor predicted — as scikit-learn
      ≥ 1.3 defines it;
    * support = TP + FN.

    ``macro_*`` averages of precision, specificity and F1 run over the classes that are present in the truth
    *or* predicted (scikit-learn's default, ``unique_labels(y_true, y_pred)``); there an undefined precision
    counts as 0 (``zero_division=0``). Both halves matter on small test splits where a rare class (df, vasc)
    may be missing: a model that never predicts a present class must not gain macro precision from it, and
    predictions of a class absent from the truth are errors that must not vanish from the average.
    ``macro_recall`` runs over the present classes only (a recall needs a true sample) and is
    ``balanced_accuracy`` (ISIC 2018 Task 3; scikit-learn's ``balanced_accuracy_score``). Support-``weighted_*``
    averages give absent classes weight 0. ``accuracy`` = trace / total.
    """
    cm = _numpy(cm).astype(np.float64)
    names = list(class_names)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise DataError(None, f"a confusion matrix must be square (K, K), got {tuple(cm.shape)}")
    if len(names) != cm.shape[0] or len(set(names)) != len(names):
        raise DataError(None, f"need {cm.shape[0]} distinct class names, got {names}")
    total = cm.sum()
    tp = np.diag(cm)
    support, predicted = cm.sum(1), cm.sum(0)
    fp, fn = predicted - tp, support - tp
    tn = total - tp - fp - fn
    per_class = {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    out: dict[str, float] = {}
    for score, values in per_class.items():
        out.update({f"{score}_{n}": float(v) for n, v in zip(names, values)})
    out.update({f"support_{n}": int(s) for n, s in zip(names, support)})

    present = support > 0
    present_or_predicted = present | (predicted > 0)
    weights = support[present] / support[present].sum() if present.any() else None
    for score, values in per_class.items():
        macro_over = present if score == "recall" else present_or_predicted
        v = np.nan_to_num(values[macro_over], nan=0.0) if score == "precision" else values[macro_over]
        out[f"macro_{score}"] = float(v.mean()) if weights is not None else float("nan")
        w = values[present] if score != "precision" else np.nan_to_num(values[present], nan=0.0)
        out[f"weighted_{score}"] = float((w * weights).sum()) if weights is not None else float("nan")
    out["accuracy"] = float(tp.sum() / total) if total > 0 else float("nan")
    out["balanced_accuracy"] = out["macro_recall"]
    return out


def _binned_gaps(confidence: np.ndarray, hit: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    """Equal-width binning of ``confidence`` ``(N,)`` against outcomes ``hit`` ``(N,)`` (0/1).

    Bin ``m`` (0-based) holds ``edges[m] < c <= edges[m+1]`` with ``edges[m] = m / n_bins`` (each the float
    nearest to the fraction); ``c = 0`` goes to the first bin and ``c = 1`` to the last (never to an extra bin).
    ``np.linspace(0, 1, M + 1)`` is not used: it computes ``m · (1 / M)``, which for some edges lands one float
    below ``m / M`` (``M = 6``: 5/6), and a confidence exactly on that edge went to the upper bin.
    """
    if int(n_bins) < 1:
        raise DataError(None, f"n_bins must be a positive integer, got {n_bins}")
    edges = np.arange(int(n_bins) + 1, dtype=np.float64) / int(n_bins)
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=confidence, minlength=n_bins)
    sum_hit = np.bincount(idx, weights=hit.astype(np.float64), minlength=n_bins)
    return {"edges": edges, "count": count.astype(np.int64),
            "accuracy": _ratio(sum_hit, count.astype(np.float64)),
            "confidence": _ratio(sum_conf, count.astype(np.float64))}


def _calibration_errors(bins: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """``(ECE, OE, UCE)`` of one binning (empty bins contribute nothing)."""
    full = bins["count"] > 0
    w = bins["count"][full] / bins["count"].sum()
    acc, conf = bins["accuracy"][full], bins["confidence"][full]
    ece = float((w * np.abs(acc - conf)).sum())
    oe = float((w * conf * np.maximum(conf - acc, 0)).sum())
    uce = float((w * conf * np.maximum(acc - conf, 0)).sum())
    return ece, oe, uce


def reliability_bins(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-1 reliability statistics (Guo et al. 2017) in ``n_bins`` equal-width bins ``((m-1)/M, m/M]``.

    Returns ``{"edges": (M+1,), "count": (M,) int64, "accuracy": (M,), "confidence": (M,)}``: per bin the
    number of samples, the fraction whose top-1 prediction is right and their mean top-1 confidence
    (``nan`` for an empty bin). Confidence exactly 1.0 is counted in the top bin.
    """
    p, y = _check_inputs(probs, labels)
    return _binned_gaps(p.max(1), p.argmax(1) == y, n_bins)


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Top-1 ECE = Σ_m |B_m|/n · |acc_m − conf_m| (Guo et al. 2017), bins as :func:`reliability_bins`."""
    return _calibration_errors(reliability_bins(probs, labels, n_bins))[0]


def overconfidence_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """OE = Σ_m |B_m|/n · conf_m · max(conf_m − acc_m, 0) (Thulasidasan et al. 2019), top-1 bins."""
    return _calibration_errors(reliability_bins(probs, labels, n_bins))[1]


def underconfidence_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """UCE = Σ_m |B_m|/n · conf_m · max(acc_m − conf_m, 0): OE's mirror (this project's definition, the gap's
    sign flipped; Thulasidasan et al. 2019 define only OE), top-1 bins."""
    return _calibration_errors(reliability_bins(probs, labels, n_bins))[2]


def classwise_ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al. 2019): mean over all ``K`` classes of the ECE of ``p_k`` against ``1[y = k]``.

    Each class's probabilities ``(N,)`` are binned like :func:`reliability_bins` (``p_k = 0`` in the first
    bin, ``1.0`` in the top bin); a bin's "accuracy" is the fraction of its samples whose label is ``k``.
    """
    p, y = _check_inputs(probs, labels)
    return float(np.mean([_calibration_errors(_binned_gaps(p[:, k], y == k, n_bins))[0] for k in range(p.shape[1])]))


def negative_log_likelihood(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean over samples of ``−log p_{i, y_i}``, ``p`` clamped at :data:`NLL_EPS` (the cross-entropy of the logits
    the probabilities came from, for logit gaps below ≈ 87)."""
    p, y = _check_inputs(probs, labels)
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], NLL_EPS)).mean())


def brier_score(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multiclass Brier score (Brier 1950): mean over samples of Σ_k (p_k − 1[y = k])², range [0, 2].

    Not halved: scikit-learn's ``brier_score_loss(..., labels=range(K), scale_by_half=False)``; the binary
    convention (``(p − y)²`` of the positive class, range [0, 1]) is half of this at ``K = 2``.
    """
    p, y = _check_inputs(probs, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(1).mean())


def _macro_auc_with_reason(p: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    present = np.unique(y)
    if len(present) < 2:
        return float("nan"), f"macro AUC undefined: only {len(present)} class present in the labels"
    return float(np.mean([roc_auc_score(y == k, p[:, k]) for k in present])), ""


def macro_auc_ovr(probs: ArrayLike, labels: ArrayLike) -> float:
    """Macro one-vs-rest ROC AUC over the classes present in ``labels``.

    The mean over present classes ``k`` of the binary AUC of ``p_k`` for ``y = k`` vs the rest — exactly
    scikit-learn's ``roc_auc_score(labels, probs, multi_class="ovr", average="macro")`` when every class is
    present, which raises otherwise (its ``ovr`` needs the kept columns to sum to 1). ``nan`` (with a
    ``RuntimeWarning`` saying why) when fewer than 2 classes are present.
    """
    p, y = _check_inputs(probs, labels)
    value, reason = _macro_auc_with_reason(p, y)
    if reason:
        warnings.warn(reason, RuntimeWarning, stacklevel=2)
    return value


def classification_report(probs: ArrayLike, labels: ArrayLike, class_names: Sequence[str],
                          n_bins: int = 15) -> dict[str, float]:
    """Everything above in one flat dict of numbers.

    Keys: those of :func:`scores_from_confusion` (prediction = argmax of ``probs``) plus ``nll``, ``brier``,
    ``ece``, ``oe``, ``uce``, ``classwise_ece``, ``macro_auc``, ``n_samples``, ``n_bins``.
    """
    p, y = _check_inputs(probs, labels)
    names = list(class_names)
    if len(names) != p.shape[1]:
        raise DataError(None, f"probabilities have {p.shape[1]} columns but {len(names)} class names were given: {names}")
    report = scores_from_confusion(confusion_matrix(y, p.argmax(1), p.shape[1]), names)
    ece, oe, uce = _calibration_errors(_binned_gaps(p.max(1), p.argmax(1) == y, n_bins))
    auc, reason = _macro_auc_with_reason(p, y)
    if reason:
        warnings.warn(reason, RuntimeWarning, stacklevel=2)
    report.update({
        "nll": negative_log_likelihood(p, y), "brier": brier_score(p, y),
        "ece": ece, "oe": oe, "uce": uce, "classwise_ece": classwise_ece(p, y, n_bins),
        "macro_auc": auc, "n_samples": int(len(y)), "n_bins": int(n_bins),
    })
    return report


def report_table(report: dict[str, float], class_names: Sequence[str]) -> pd.DataFrame:
    """scikit-learn ``classification_report``-shaped table of a :func:`classification_report` dict.

    Rows (index named ``class``): the classes, ``macro avg``, ``weighted avg``; columns ``precision``,
    ``recall``, ``specificity``, ``f1``, ``support`` (the average rows carry the total support).
    ``markdown_table`` drops the index: call ``.reset_index()`` first to keep the class names.
    """
    cols = ["precision", "recall", "specificity", "f1"]
    rows = {n: [report[f"{c}_{n}"] for c in cols] + [report[f"support_{n}"]] for n in class_names}
    total = sum(int(report[f"support_{n}"]) for n in class_names)
    for avg in ("macro", "weighted"):
        rows[f"{avg} avg"] = [report[f"{avg}_{c}"] for c in cols] + [total]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=cols + ["support"])
    df["support"] = df["support"].astype(np.int64)
    df.index.name = "class"
    return df


# ---------------------------------------------------------------- Ignite


def _plain(x: object) -> torch.Tensor:
    """A plain tensor (MONAI ``MetaTensor`` metadata dropped) on the CPU, detached."""
    return torch.as_tensor(x).as_subclass(torch.Tensor).detach().cpu()


def _hard_labels(label: torch.Tensor, batch: int, num_classes: int) -> torch.Tensor:
    """``(B,)`` int64 classes from integer labels ``(B,)``/``(B, 1)``/scalar or soft/one-hot labels ``(B, K)``
    (argmax: MixUp/CutMix targets count as their dominant class)."""
    if label.numel() == batch:
        label = label.reshape(batch)
        return label.round().long() if label.is_floating_point() else label.long()
    if label.numel() == batch * num_classes:
        return label.reshape(batch, num_classes).argmax(1)
    raise DataError(None, f"labels of shape {tuple(label.shape)} fit neither {batch} class indices nor "
                          f"({batch}, {num_classes}) soft labels")


def logits_output(output: dict | list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Engine output → ``(logits (B, K), labels (B,))``.

    Accepts MONAI's batched output (one dict, ``"pred"`` ``(B, K)``) and decollated output (a list of
    per-sample dicts, ``"pred"`` ``(K,)``). ``"label"``: classes ``(B,)``, ``(B, 1)`` (scalars per sample) or
    soft labels ``(B, K)`` (``(K,)`` per sample), which are argmaxed. ``"pred"`` must be logits: a
    post-processing softmax before this would be applied twice.
    """
    items = output if isinstance(output, list) else [output]
    logits, labels = [], []
    for o in items:
        pred = _plain(o["pred"])
        pred = pred.reshape(1, -1) if pred.ndim == 1 else pred
        if pred.ndim != 2:
            raise DataError(None, f"class logits must have shape (B, K) or (K,), got {tuple(pred.shape)}")
        logits.append(pred.float())
        labels.append(_hard_labels(_plain(o["label"]), pred.shape[0], pred.shape[1]))
    return torch.cat(logits), torch.cat(labels)


class ClassificationProbabilities(Metric):
    """Ignite metric: ``softmax(logits)`` and labels of every sample of an epoch.

    ``output_transform`` returns ``(logits (B, K), labels)`` with labels as :func:`logits_output` accepts
    (default: :func:`logits_output`). ``compute()`` returns ``(probs (N, K) float64, labels (N,) int64)``.
    Keeps ``N × K`` numbers (a few MB for tens of thousands of images). :meth:`report` caches the full
    :func:`classification_report` until the next update, so many derived metrics cost one computation.

    Not yet distributed: each process sees only its own samples (gathering unequal shards is a later issue).
    """

    def __init__(self, output_transform: Callable = logits_output, device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._cache: dict[object, object] = {}

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        logits, labels = (_plain(x) for x in output)
        logits = logits.reshape(1, -1) if logits.ndim == 1 else logits
        if logits.ndim != 2:
            raise DataError(None, f"class logits must have shape (B, K) or (K,), got {tuple(logits.shape)}")
        labels = _hard_labels(labels, logits.shape[0], logits.shape[1])
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
            raise DataError(None, f"labels must be classes 0..{logits.shape[1] - 1}, got range "
                                  f"[{int(labels.min())}, {int(labels.max())}]")
        self._probs.append(logits.double().softmax(1))
        self._labels.append(labels)
        self._cache = {}

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._probs:
            raise NotComputableError("ClassificationProbabilities needs at least one sample before compute()")
        if "data" not in self._cache:
            self._cache["data"] = (torch.cat(self._probs), torch.cat(self._labels))
        return self._cache["data"]

    def report(self, class_names: Sequence[str], n_bins: int = 15) -> dict[str, float]:
        """:func:`classification_report` of the samples so far (cached until the next update/reset)."""
        key = ("report", tuple(class_names), int(n_bins))
        if key not in self._cache:
            probs, labels = self.compute()
            self._cache[key] = classification_report(probs.numpy(), labels.numpy(), class_names, n_bins)
        return self._cache[key]


#: scalar keys :func:`classification_metrics` exposes besides ``recall_<name>`` per class
EPOCH_METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "ece", "oe", "uce", "nll", "brier", "macro_auc")


def classification_metrics(class_names: Sequence[str], prefix: str = "val_", n_bins: int = 15,
                           output_transform: Callable = logits_output) -> dict[str, Metric]:
    """Scalar Ignite metrics sharing one :class:`ClassificationProbabilities`.

    Returns ``{f"{prefix}accuracy", …balanced_accuracy, macro_f1, ece, oe, uce, nll, brier, macro_auc,
    f"{prefix}recall_<name>"}`` for every class (melanoma sensitivity is ``val_recall_mel``) — ready for MONAI's
    ``key_val_metric`` / ``additional_metrics``. The report is computed once per epoch, not once per key.
    """
    names = tuple(class_names)
    collector = ClassificationProbabilities(output_transform)
    keys = list(EPOCH_METRIC_KEYS) + [f"recall_{n}" for n in names]
    return {f"{prefix}{k}": MetricsLambda(lambda _data, k=k: collector.report(names, n_bins)[k], collector) for k in keys}
