"""Class-imbalance losses for image classification (dermoscopy): cross-entropy, focal, LDAM with deferred
re-weighting, recall loss, and AugMix's Jensen–Shannon consistency term, selected by name.

Every loss maps ``logits`` ``(B, K)`` and a ``target`` to a scalar, the **plain mean over the batch** of a
per-sample loss. ``target`` is either integer class indices ``(B,)`` / ``(B, 1)`` or soft labels ``(B, K)``
whose rows sum to 1 (torchvision.transforms.v2 ``MixUp`` / ``CutMix`` output). A one-hot soft label gives
exactly the value of its integer label, class weights included; for that reason a class weight ``w_c``
multiplies sample losses and the batch mean divides by ``B``, unlike ``torch.nn.CrossEntropyLoss`` with
integer targets, which divides by ``Σ_i w_{y_i}`` (and by ``B`` for soft targets). The exception is LDAM's
deferred re-weighting, which divides by the batch's total weight as Cao et al. (2019, Algorithm 1) and their code
do (:class:`LDAMLoss`).

Definitions (project DESIGN.md, "Definitions"):

- Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017): ``−α_t (1 − p_t)^γ log p_t``
  per sample, γ = 2.
- LDAM-DRW (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS
  2019): margin ``m_j ∝ n_j^(−1/4)``, scaled so the largest is 0.5; logits scaled by ``s = 30`` (the paper
  uses a cosine-normalised head); DRW weights ``w_c ∝ (1 − β) / (1 − β^{n_c})``, β = 0.9999, normalised to
  sum to ``C``, switched on late in training.
- Recall loss (Tian et al., "Striking the Right Balance: Recall Loss for Semantic Segmentation", ICRA 2022):
  ``L = mean_i (1 − R_{y_i}) · CE_i`` with ``1 − R_c = FN_c / GT_c`` on the current batch.
- AugMix consistency (Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness and
  Uncertainty", ICLR 2020): Jensen–Shannon divergence between the predictions on a clean image and two
  AugMix views.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.losses import FocalLoss

from mednet.errors import DataError, OptionError
from mednet.networks.classifiers import LDAM_SCALE

__all__ = [
    "LOSS_NAMES",
    "AugMixConsistency",
    "CrossEntropy",
    "DeferredReweighting",
    "Focal",
    "LDAMLoss",
    "RecallLoss",
    "batch_false_negative_rates",
    "class_counts",
    "classification_loss",
    "drw_weights",
    "ldam_margins",
]

logger = logging.getLogger("mednet")

#: names accepted by :func:`classification_loss` (``--loss``)
LOSS_NAMES = ("ce", "focal", "ldam", "recall")


def class_counts(labels: Iterable[int | str], class_names: Sequence[str], source: str = "training split") -> list[int]:
    """Number of samples of each class, in the order of ``class_names``.

    Args:
        labels: one label per sample, as a class index (int, or an integer-valued tensor / NumPy element) or as
            a class name (e.g. the ``dx`` column of a split CSV).
        class_names: the task's classes, e.g. ``["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]``.
        source: what ``labels`` came from (a split CSV path, ``"training split"``), named in errors.

    Raises:
        DataError: a label is not one of the classes, or a class has no sample (LDAM margins and DRW weights
            divide by the count, and a classifier cannot learn a class it never sees).
    """
    names = list(class_names)
    index = {name: i for i, name in enumerate(names)}
    counts = [0] * len(names)
    for label, n in Counter(label if isinstance(label, str) else int(label) for label in labels).items():
        i = index.get(label) if isinstance(label, str) else label
        if i is None or not 0 <= i < len(names):
            raise DataError(source, f"label {label!r} ({n} samples) is not one of the classes {', '.join(names)}")
        counts[i] += n
    missing = [name for name, n in zip(names, counts) if n == 0]
    if missing:
        which = ("class " if len(missing) == 1 else "classes ") + ", ".join(repr(name) for name in missing)
        raise DataError(
            source,
            f"{which} {'has' if len(missing) == 1 else 'have'} no training samples; every class needs at least one "
            f"(counts: {', '.join(f'{name} {n}' for name, n in zip(names, counts))})",
        )
    return counts


def _targets(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class indices ``(B,)`` and class probabilities ``(B, K)`` of ``target`` for ``logits`` ``(B, K)``.

    Integer targets ``(B,)`` / ``(B, 1)`` (any dtype) become one-hot rows; a floating ``(B, K)`` target is taken
    as soft labels and its index is the row's argmax (the class used by :class:`RecallLoss`).
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (B, K), got {tuple(logits.shape)}")
    batch, num_classes = logits.shape
    if num_classes < 2:
        raise ValueError(f"expected logits of at least 2 classes, got {tuple(logits.shape)}")
    if target.ndim == 2 and target.shape == logits.shape and target.is_floating_point():
        return target.argmax(dim=1), target.to(logits.dtype)
    if target.shape in ((batch,), (batch, 1)):
        indices = target.reshape(batch).long()
        return indices, F.one_hot(indices, num_classes).to(logits.dtype)
    raise ValueError(
        f"target of shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
        f"expected class indices ({batch},) or ({batch}, 1), or soft labels ({batch}, {num_classes})"
    )


def _as_weight(weight: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    return None if weight is None else torch.as_tensor(weight, dtype=torch.float32).flatten()


class CrossEntropy(torch.nn.Module):
    """Cross-entropy ``−Σ_j w_j ỹ_j log softmax(z)_j`` per sample, mean over the batch.

    A thin wrapper on ``torch.nn.functional.cross_entropy``: integer targets are turned into one-hot rows so
    that hard and soft labels share one code path and one reduction (divide by ``B``, see the module
    docstring); ``ỹ = (1 − ε) y + ε / K`` with ``ε = label_smoothing``.

    Args:
        label_smoothing: ε in [0, 1).
        weight: optional per-class weights ``(K,)``.
    """

    def __init__(self, label_smoothing: float = 0.0, weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", _as_weight(weight))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(B, K)``, ``target`` ``(B,)``, ``(B, 1)`` or soft ``(B, K)`` → scalar."""
        _, probabilities = _targets(logits, target)
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(logits, probabilities, weight=weight, label_smoothing=self.label_smoothing)


class Focal(torch.nn.Module):
    """Softmax focal loss (Lin et al. 2017) ``−Σ_j w_j y_j (1 − p_j)^γ log p_j`` per sample, mean over the batch.

    For a one-hot ``y`` this is ``−w_t (1 − p_t)^γ log p_t``. Computed by MONAI's ``FocalLoss(use_softmax=True)``
    (``to_onehot_y=True`` for integer targets, the soft label itself otherwise — MONAI's softmax focal term is
    elementwise ``−(1 − p_j)^γ log p_j · y_j``, so soft labels give the formula above). MONAI's ``"mean"``
    reduction averages over classes as well as samples (it returns ``1/K`` of the per-sample mean), so the
    elementwise loss is taken unreduced, summed over classes and averaged over the batch here.

    Args:
        gamma: focusing parameter γ ≥ 0 (γ = 0 gives cross-entropy).
        weight: optional per-class weights ``(K,)`` (the α_t of Lin et al. as a class vector).
    """

    def __init__(self, gamma: float = 2.0, weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        weight = _as_weight(weight)
        self.hard = FocalLoss(use_softmax=True, to_onehot_y=True, gamma=self.gamma, weight=weight, reduction="none")
        self.soft = FocalLoss(use_softmax=True, to_onehot_y=False, gamma=self.gamma, weight=weight, reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(B, K)``, ``target`` ``(B,)``, ``(B, 1)`` or soft ``(B, K)`` → scalar."""
        indices, probabilities = _targets(logits, target)
        if target.shape == logits.shape:
            elementwise = self.soft(logits, probabilities)
        else:
            elementwise = self.hard(logits, indices[:, None])
        return elementwise.sum(dim=1).mean()


def ldam_margins(counts: Sequence[int], max_margin: float = 0.5) -> torch.Tensor:
    """LDAM margins ``m_j = C / n_j^{1/4}`` (Cao et al. 2019) with ``C`` such that ``max_j m_j = max_margin``.

    Returns a float tensor ``(K,)``; e.g. counts 591/839/324 → 0.430/0.394/0.500. Counts must be positive.
    """
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    if n.ndim != 1 or n.numel() == 0 or bool((n <= 0).any()):
        raise ValueError(f"class counts must be positive, got {list(counts)}")
    margins = n.pow(-0.25)
    return (margins * (max_margin / margins.max())).float()


def drw_weights(counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Deferred re-weighting class weights ``w_c ∝ (1 − β) / (1 − β^{n_c})`` (Cao et al. 2019, the "effective
    number" weights of Cui et al. 2019), normalised to sum to the number of classes ``C``.

    Returns a float tensor ``(K,)``; e.g. counts 591/839/324, β = 0.9999 → 0.854/0.609/1.537.
    """
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    if n.ndim != 1 or n.numel() == 0 or bool((n <= 0).any()):
        raise ValueError(f"class counts must be positive, got {list(counts)}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    # -expm1(n log β) = 1 − β^n without cancellation for β close to 1
    weights = (1.0 - beta) / -torch.expm1(n * math.log(beta)) if beta > 0 else torch.ones_like(n)
    return (weights * (n.numel() / weights.sum())).float()


class LDAMLoss(torch.nn.Module):
    """Label-distribution-aware margin loss with optional deferred re-weighting (LDAM-DRW, Cao et al. 2019).

    Per sample: ``CE(s · (z − y ⊙ m), y)`` with ``z`` the logits ``(K,)``, ``m`` the :func:`ldam_margins`,
    ``s = scale``; for an integer label only the true class's logit loses its margin. **Soft labels** (MixUp,
    CutMix) generalise this by subtracting ``y_j m_j`` from every logit ``j`` — a λ-mixture of two labels gets
    λ and 1 − λ of the two margins — and using ``y`` as the cross-entropy target; a one-hot ``y`` gives the
    original loss. The paper's ``s = 30`` assumes a cosine-normalised head (logits in [−1, 1]); with ordinary
    linear logits a smaller scale may be needed.

    Deferred re-weighting: from epoch ``drw_start_epoch`` on (1-based, as Ignite's ``engine.state.epoch``)
    each sample's loss is multiplied by its class's :func:`drw_weights` ``w`` and the batch's sum is divided by
    the batch's total weight ``Σ_i w_{y_i}`` (soft labels: ``Σ_i y_i · w``), as in Cao et al.'s Algorithm 1 and
    their code (``F.cross_entropy(..., weight=w)``). Dividing by ``B`` instead would also scale the gradient by
    the mean sample weight (≈ 0.23 on HAM10000's class mix): switching DRW on would cut the learning rate by
    ≈ 4× besides re-weighting. Before that epoch, and always when ``drw_start_epoch`` is ``None``, no weights.
    Call :meth:`set_epoch` (or attach :class:`DeferredReweighting` to the trainer) at the start of each epoch.

    Args:
        class_counts: training samples per class ``(K,)``, all positive.
        max_margin: the largest margin (that of the rarest class).
        scale: logit scale ``s``.
        drw_beta: β of the DRW weights.
        drw_start_epoch: first epoch with DRW weights, or ``None`` for plain LDAM.
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_beta: float = 0.9999,
        drw_start_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if drw_start_epoch is not None and drw_start_epoch < 1:
            raise ValueError(f"drw_start_epoch must be >= 1 (epochs count from 1), got {drw_start_epoch}")
        self.scale = float(scale)
        self.drw_start_epoch = drw_start_epoch
        self.register_buffer("margins", ldam_margins(class_counts, max_margin))
        self.register_buffer("drw_class_weights", drw_weights(class_counts, drw_beta))
        self.drw_active = False

    @property
    def class_weight(self) -> torch.Tensor | None:
        """The per-class weights in use now: the DRW weights once switched on, else ``None``."""
        return self.drw_class_weights if self.drw_active else None

    def set_epoch(self, epoch: int) -> None:
        """Switch DRW on for ``epoch >= drw_start_epoch`` (1-based epochs), off otherwise."""
        self.drw_active = self.drw_start_epoch is not None and epoch >= self.drw_start_epoch

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(B, K)``, ``target`` ``(B,)``, ``(B, 1)`` or soft ``(B, K)`` → float32 (or float64) scalar.

        Computed in float32 at least, whatever the logits' dtype (AMP), as
        :class:`mednet.losses.distillation.DistillationLoss` does: the cosine head's logits reach ``±s = ±30``, where
        half precision's spacing is 1/64, and the margin shift ``z − s·m`` would be rounded again before the
        cross-entropy (and the loss returned in float16).
        """
        z = logits if logits.dtype == torch.float64 else logits.float()
        _, probabilities = _targets(z, target)
        if z.shape[1] != self.margins.numel():
            raise ValueError(f"logits have {z.shape[1]} classes, class counts {self.margins.numel()}")
        shifted = self.scale * (z - probabilities * self.margins.to(z.dtype))
        if self.class_weight is None:
            return F.cross_entropy(shifted, probabilities)
        weight = self.class_weight.to(shifted.dtype)
        total = F.cross_entropy(shifted, probabilities, weight=weight, reduction="sum")
        return total / (probabilities @ weight).sum()


def batch_false_negative_rates(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``1 − R_c = FN_c / GT_c`` for each class on one batch (Tian et al. 2022); 1 for a class absent from it.

    Args:
        predictions: predicted class indices ``(B,)``.
        labels: true class indices ``(B,)``.
        num_classes: ``K``.

    Returns:
        float tensor ``(K,)`` in [0, 1].
    """
    ground_truth = torch.bincount(labels, minlength=num_classes)
    false_negatives = torch.bincount(labels[predictions != labels], minlength=num_classes)
    rates = false_negatives.float() / ground_truth.clamp_min(1).float()
    return torch.where(ground_truth > 0, rates, torch.ones_like(rates))


class RecallLoss(torch.nn.Module):
    """Recall loss (Tian et al. 2022): ``L = mean_i max(1 − R_{c_i}, floor) · CE_i``.

    ``1 − R_c`` is the false-negative rate of class ``c`` on the current batch, from the argmax of the logits
    (:func:`batch_false_negative_rates`), treated as a constant (no gradient flows through it). ``c_i`` is the
    integer label, or the argmax of a soft label; ``CE_i`` is the cross-entropy against the (soft) label.
    The paper's reference code is written for segmentation maps, hence this short classification version.

    Args:
        weight_floor: lower bound of the per-class weight, so that classes recalled perfectly in a batch still
            contribute (0 = the paper's loss).
    """

    def __init__(self, weight_floor: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= weight_floor <= 1.0:
            raise ValueError(f"weight_floor must be in [0, 1], got {weight_floor}")
        self.weight_floor = float(weight_floor)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(B, K)``, ``target`` ``(B,)``, ``(B, 1)`` or soft ``(B, K)`` → scalar."""
        indices, probabilities = _targets(logits, target)
        with torch.no_grad():
            rates = batch_false_negative_rates(logits.argmax(dim=1), indices, logits.shape[1])
            sample_weights = rates.clamp_min(self.weight_floor)[indices].to(logits.dtype)
        per_sample = F.cross_entropy(logits, probabilities, reduction="none")
        return (sample_weights * per_sample).mean()


class AugMixConsistency(torch.nn.Module):
    """AugMix's loss (Hendrycks et al. 2020): ``base_loss(z_clean, y) + weight · JS(p_clean, p_aug1, p_aug2)``.

    ``JS = ⅓ Σ_i KL(p_i ‖ M)``, ``M = ⅓ Σ_i p_i``, with ``log M`` taken of ``M`` clamped to [1e−7, 1] as in the
    paper's code, averaged over the batch; the paper uses ``weight = 12``. Written here because neither MONAI
    nor torchvision (whose ``AugMix`` transform makes the views) provides the consistency term.

    Args:
        base_loss: the classification loss on the clean images (any loss of this module).
        weight: λ of the consistency term.

    ``forward(logits, target)``: ``logits`` ``(3B, K)`` = clean, first and second AugMix views stacked on
    dim 0 (``torch.cat``), ``target`` for the ``B`` clean images.
    """

    def __init__(self, base_loss: torch.nn.Module, weight: float = 12.0) -> None:
        super().__init__()
        self.base_loss = base_loss
        self.weight = float(weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(3B, K)``, ``target`` ``(B,)``, ``(B, 1)`` or soft ``(B, K)`` → scalar."""
        batch = target.shape[0]
        if logits.ndim != 2 or logits.shape[0] != 3 * batch:
            raise ValueError(
                f"AugMix consistency expects logits of 3 × {batch} rows (clean, view 1, view 2) for {batch} targets, "
                f"got {tuple(logits.shape)}"
            )
        clean, view1, view2 = logits.split(batch, dim=0)
        probabilities = [F.softmax(z, dim=1) for z in (clean, view1, view2)]
        log_mixture = torch.clamp(sum(probabilities) / 3.0, 1e-7, 1.0).log()
        js = sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probabilities) / 3.0
        return self.base_loss(clean, target) + self.weight * js


class DeferredReweighting:
    """Ignite handler that tells a loss the epoch, switching LDAM's deferred re-weighting on (Cao et al. 2019).

    On every ``Events.EPOCH_STARTED`` it calls ``loss.set_epoch(engine.state.epoch)`` (1-based, so a resumed
    run switches on at the right epoch too), and logs the weights once (logger ``"mednet"``) when they switch
    on. A loss wrapped in :class:`AugMixConsistency` is reached through ``base_loss``. A loss without
    ``set_epoch`` (CE, focal, recall) makes this handler a no-op, so a config may list it whatever the loss.

    Args:
        loss: the training loss.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        while not hasattr(loss, "set_epoch") and hasattr(loss, "base_loss"):
            loss = loss.base_loss
        self.loss = loss if hasattr(loss, "set_epoch") else None
        self._logged = False

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s ``EPOCH_STARTED`` event."""
        if self.loss is not None and not engine.has_event_handler(self, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.loss is None:
            return
        self.loss.set_epoch(engine.state.epoch)
        weights = getattr(self.loss, "class_weight", None)
        if weights is not None and not self._logged:
            self._logged = True
            logger.info(
                "epoch %d: deferred re-weighting on, class weights %s",
                engine.state.epoch,
                ", ".join(f"{w:.3f}" for w in weights.tolist()),
            )


def classification_loss(
    name: str,
    class_counts: Sequence[int],
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
    drw_start_epoch: int | None = None,
    augmix_jsd: bool = False,
    ldam_logit_scale: float = LDAM_SCALE,
) -> torch.nn.Module:
    """The training loss selected by ``--loss`` (:data:`LOSS_NAMES`).

    ``ldam_logit_scale``: LDAM's s, already applied by the network's cosine head
    (:class:`mednet.networks.classifiers.NormedLinear`, whose scale :func:`mednet.networks.build_classifier` sets to
    :data:`mednet.networks.classifiers.LDAM_SCALE`, this argument's default: one constant, so the two cannot
    disagree); the margins are scaled by it and the loss adds no scale
    (``s·cos − s·m`` = ``s(cos − m)``, the paper's loss), so evaluation sees the logits training saw.

    Args:
        name: ``"ce"`` (:class:`CrossEntropy`), ``"focal"`` (:class:`Focal`), ``"ldam"`` (:class:`LDAMLoss`,
            paper defaults) or ``"recall"`` (:class:`RecallLoss`).
        class_counts: training samples per class (:func:`class_counts`), all positive.
        label_smoothing: ε of ``"ce"``; must be 0 for the other losses.
        focal_gamma: γ of ``"focal"``.
        drw_start_epoch: first epoch of deferred re-weighting for ``"ldam"`` (``None``: none); must be ``None``
            for the other losses.
        augmix_jsd: wrap the loss in :class:`AugMixConsistency` (weight 12).

    Raises:
        OptionError: unknown name, or an option the chosen loss does not use.
    """
    if name not in LOSS_NAMES:
        raise OptionError({"--loss": f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}"})
    problems = {}
    if label_smoothing and name != "ce":
        problems["--label_smoothing"] = f"only used by --loss ce, not {name}"
    elif not 0.0 <= label_smoothing < 1.0:
        problems["--label_smoothing"] = f"must be in [0, 1), got {label_smoothing}"
    if drw_start_epoch is not None and name != "ldam":
        problems["--drw_start_epoch"] = f"only used by --loss ldam, not {name}"
    elif drw_start_epoch is not None and drw_start_epoch < 1:
        problems["--drw_start_epoch"] = f"must be an epoch >= 1, got {drw_start_epoch}"
    if name == "focal" and focal_gamma < 0:
        problems["--focal_gamma"] = f"must be >= 0, got {focal_gamma}"
    if problems:
        raise OptionError(problems)
    loss: torch.nn.Module
    if name == "ce":
        loss = CrossEntropy(label_smoothing=label_smoothing)
    elif name == "focal":
        loss = Focal(gamma=focal_gamma)
    elif name == "ldam":
        # the cosine head already multiplies by s (mednet.networks.classifiers.LDAM_SCALE): s·cos − s·m = s(cos − m)
        loss = LDAMLoss(class_counts, max_margin=0.5 * ldam_logit_scale, scale=1.0, drw_start_epoch=drw_start_epoch)
    else:
        loss = RecallLoss()
    return AugMixConsistency(loss) if augmix_jsd else loss
