"""Tests for :mod:`mednet.losses.classification`: hand-computed values of every loss, soft = hard labels for
one-hot soft labels, the LDAM/DRW numbers of the issue, class-count errors, gradients and the DRW switch on an
Ignite engine."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from mednet.errors import DataError, OptionError
from mednet.losses.classification import (
    LOSS_NAMES,
    AugMixConsistency,
    CrossEntropy,
    DeferredReweighting,
    Focal,
    LDAMLoss,
    RecallLoss,
    batch_false_negative_rates,
    class_counts,
    classification_loss,
    drw_weights,
    ldam_margins,
)

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
# logits [0, ln 3] → p = [1/4, 3/4]; [ln 3, 0] → p = [3/4, 1/4]
P_QUARTER_THREE_QUARTERS = [0.0, LN3]


def _random_batch(seed: int = 0, b: int = 6, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g) * 2, torch.randint(0, k, (b,), generator=g)


def _all_losses(k: int = 4) -> list[torch.nn.Module]:
    ldam = LDAMLoss([50, 20, 5, 9][:k], scale=5.0, drw_start_epoch=1)
    ldam.set_epoch(1)  # with DRW weights
    return [
        CrossEntropy(label_smoothing=0.1, weight=[1.0, 2.0, 0.5, 1.5][:k]),
        Focal(gamma=2.0, weight=[1.0, 2.0, 0.5, 1.5][:k]),
        ldam,
        RecallLoss(weight_floor=0.05),
        AugMixConsistency(CrossEntropy()),
    ]


# --- class counts -------------------------------------------------------------------------------------------


def test_class_counts_from_names_and_indices():
    names = ["akiec", "bcc", "df"]
    assert class_counts(["bcc", "df", "bcc", "akiec"], names) == [1, 2, 1]
    assert class_counts(torch.tensor([2, 2, 0, 1, 2]), names) == [1, 1, 3]


def test_class_with_no_samples_is_a_data_error_naming_the_class():
    with pytest.raises(DataError) as err:
        class_counts(["akiec", "bcc", "bcc"], ["akiec", "bcc", "df"], source="splits/ham.csv")
    assert str(err.value).startswith("splits/ham.csv: class 'df' has no training samples")
    assert "akiec 1, bcc 2, df 0" in str(err.value)
    with pytest.raises(DataError, match="classes 'bcc', 'df' have no training samples"):
        class_counts([0, 0], ["akiec", "bcc", "df"])


def test_unknown_label_is_a_data_error():
    with pytest.raises(DataError, match="training split: label 'melanoma' .* not one of the classes akiec, bcc"):
        class_counts(["akiec", "melanoma", "bcc"], ["akiec", "bcc"])
    with pytest.raises(DataError, match="label 3"):
        class_counts([0, 1, 3], ["akiec", "bcc"])


# --- cross-entropy ------------------------------------------------------------------------------------------


def test_cross_entropy_hand_computed():
    logits = torch.tensor([P_QUARTER_THREE_QUARTERS, P_QUARTER_THREE_QUARTERS])
    target = torch.tensor([1, 0])
    # −ln(3/4) = 0.287682, −ln(1/4) = 1.386294 → mean 0.836988
    assert CrossEntropy()(logits, target).item() == pytest.approx((math.log(4 / 3) + LN4) / 2, abs=1e-6)
    assert CrossEntropy()(logits, target[:, None]).item() == pytest.approx(0.836988, abs=1e-6)
    # ε = 0.2, K = 2: target 1 → ỹ = [0.1, 0.9]: 0.1·ln 4 + 0.9·ln(4/3) = 0.397543
    smoothed = CrossEntropy(label_smoothing=0.2)(logits[:1], target[:1])
    assert smoothed.item() == pytest.approx(0.1 * LN4 + 0.9 * math.log(4 / 3), abs=1e-6)
    # weights [2, 0.5]: (0.5·0.287682 + 2·1.386294) / 2 samples = 1.458215 (plain mean over the batch)
    weighted = CrossEntropy(weight=[2.0, 0.5])(logits, target)
    assert weighted.item() == pytest.approx((0.5 * math.log(4 / 3) + 2 * LN4) / 2, abs=1e-6)


def test_cross_entropy_soft_labels_match_torch():
    logits, _ = _random_batch(1)
    soft = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), dim=1)
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(CrossEntropy()(logits, soft), expected)


# --- focal --------------------------------------------------------------------------------------------------


def test_focal_hand_computed_per_sample_mean_over_batch():
    # logits [0, 0, ln 2] → p = [1/4, 1/4, 1/2]
    logits = torch.tensor([[0.0, 0.0, LN2], [0.0, 0.0, LN2]])
    target = torch.tensor([2, 0])
    # target 2: −(1 − 1/2)²·ln(1/2) = 0.25·0.693147 = 0.173287
    # target 0: −(1 − 1/4)²·ln(1/4) = 0.5625·1.386294 = 0.779791; mean 0.476539 (MONAI's "mean" would give /3)
    expected = (0.25 * LN2 + 0.5625 * LN4) / 2
    assert Focal(gamma=2.0)(logits, target).item() == pytest.approx(expected, abs=1e-6)
    assert Focal(gamma=2.0)(logits, target[:, None]).item() == pytest.approx(0.476539, abs=1e-6)
    # γ = 0 is cross-entropy
    assert Focal(gamma=0.0)(logits, target).item() == pytest.approx((LN2 + LN4) / 2, abs=1e-6)
    # class weights multiply the sample's loss: w = [3, 1, 2] → (2·0.173287 + 3·0.779791) / 2
    weighted = Focal(weight=[3.0, 1.0, 2.0])(logits, target)
    assert weighted.item() == pytest.approx((2 * 0.25 * LN2 + 3 * 0.5625 * LN4) / 2, abs=1e-6)


def test_focal_soft_label_hand_computed():
    # p = [1/4, 3/4], y = [0.3, 0.7]: 0.3·(3/4)²·ln 4 + 0.7·(1/4)²·ln(4/3)
    loss = Focal()(torch.tensor([P_QUARTER_THREE_QUARTERS]), torch.tensor([[0.3, 0.7]]))
    assert loss.item() == pytest.approx(0.3 * 0.5625 * LN4 + 0.7 * 0.0625 * math.log(4 / 3), abs=1e-6)


# --- LDAM-DRW -----------------------------------------------------------------------------------------------


def test_ldam_margins_and_drw_weights_of_the_issue():
    # m ∝ n^(−1/4), largest 0.5: 0.5·(324/591)^¼ = 0.430, 0.5·(324/839)^¼ = 0.394, 0.500
    assert ldam_margins([591, 839, 324]).tolist() == pytest.approx([0.430, 0.394, 0.500], abs=5e-4)
    # (1−β)/(1−β^n), β = 0.9999: 1.7425e-3, 1.2425e-3, 3.1366e-3; × 3 / 6.1216e-3 → 0.854, 0.609, 1.537
    weights = drw_weights([591, 839, 324], beta=0.9999)
    assert weights.tolist() == pytest.approx([0.854, 0.609, 1.537], abs=5e-4)
    assert weights.sum().item() == pytest.approx(3.0, abs=1e-5)
    assert ldam_margins([591, 839, 324], max_margin=1.0).max().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        ldam_margins([5, 0, 3])


def test_ldam_hand_computed_with_and_without_drw():
    # counts [16, 1] → margins 0.5·[16^(−¼), 1] / 1 = [0.25, 0.5]; scale s = 2; logits z = [1, 0]
    loss = LDAMLoss([16, 1], scale=2.0, drw_start_epoch=3)
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([1, 0])
    # target 1: s·(z − [0, 0.5]) = [2, −1] → CE = ln(1 + e³) = 3.048587
    # target 0: s·(z − [0.25, 0]) = [1.5, 0] → CE = ln(1 + e^−1.5) = 0.201413; mean 1.625000
    plain = (math.log(1 + math.exp(3)) + math.log(1 + math.exp(-1.5))) / 2
    assert loss(logits, target).item() == pytest.approx(plain, abs=1e-5)
    loss.set_epoch(2)
    assert loss.class_weight is None and loss(logits, target).item() == pytest.approx(plain, abs=1e-5)
    # DRW, β = 0.9999: 1 − β^16 = 1.59880e−3 → ratio 0.062547 : 1 → × 2 / 1.062547 = [0.11773, 1.88227]
    loss.set_epoch(3)
    torch.testing.assert_close(loss.class_weight, torch.tensor([0.11773, 1.88227]), atol=1e-5, rtol=0)
    # the weighted mean: divided by the batch's total weight 1.88227 + 0.11773 = 2 (Cao et al., Algorithm 1)
    drw = (1.88227 * math.log(1 + math.exp(3)) + 0.11773 * math.log(1 + math.exp(-1.5))) / 2  # 2.881016
    assert loss(logits, target).item() == pytest.approx(drw, abs=1e-4)
    # a batch of the rare class only: its weight cancels (the official code: F.cross_entropy(weight=w), mean)
    rare = torch.tensor([1, 1])
    assert loss(logits, rare).item() == pytest.approx(math.log(1 + math.exp(3)), abs=1e-5)
    official = F.cross_entropy(2.0 * (logits - F.one_hot(target, 2) * torch.tensor([0.25, 0.5])), target,
                               weight=loss.class_weight)
    assert loss(logits, target).item() == pytest.approx(official.item(), rel=1e-6)
    # a one-hot soft label (MixUp off) gives the integer label's value, weights included
    assert loss(logits, F.one_hot(target, 2).float()).item() == pytest.approx(official.item(), rel=1e-6)
    loss.set_epoch(1)  # e.g. a restarted schedule: off again
    assert loss.class_weight is None


def test_ldam_soft_label_subtracts_mixed_margins():
    # y = [0.4, 0.6], margins [0.25, 0.5], s = 2, z = [1, 0]: s·(z − y⊙m) = 2·[0.9, −0.3] = [1.8, −0.6]
    # CE = −0.4·log_softmax[0] − 0.6·log_softmax[1], log_softmax = [−ln(1 + e^−2.4), −ln(1 + e^2.4)]
    loss = LDAMLoss([16, 1], scale=2.0)(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.4, 0.6]]))
    expected = 0.4 * math.log(1 + math.exp(-2.4)) + 0.6 * math.log(1 + math.exp(2.4))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_ldam_refuses_mismatched_classes_and_bad_start_epoch():
    with pytest.raises(ValueError, match="3 classes, class counts 2"):
        LDAMLoss([4, 2])(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="drw_start_epoch"):
        LDAMLoss([4, 2], drw_start_epoch=0)


# --- recall loss --------------------------------------------------------------------------------------------


def test_recall_loss_hand_computed():
    logits = torch.tensor([[LN3, 0.0], [0.0, LN3], [0.0, LN3]])  # predictions 0, 1, 1
    target = torch.tensor([0, 0, 1])
    # class 0: GT 2, FN 1 → 1 − R = 0.5; class 1: GT 1, FN 0 → 0
    # CE = [ln(4/3), ln 4, ln(4/3)] → L = (0.5·0.287682 + 0.5·1.386294 + 0·0.287682) / 3 = 0.279329
    ce0, ce1 = math.log(4 / 3), LN4
    assert RecallLoss()(logits, target).item() == pytest.approx((0.5 * ce0 + 0.5 * ce1) / 3, abs=1e-6)
    # floor 0.1 lifts class 1's weight: + 0.1·0.287682 / 3
    floored = RecallLoss(weight_floor=0.1)(logits, target).item()
    assert floored == pytest.approx((0.5 * ce0 + 0.5 * ce1 + 0.1 * ce0) / 3, abs=1e-6)


def test_false_negative_rates_give_absent_class_weight_one():
    rates = batch_false_negative_rates(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1]), num_classes=3)
    assert rates.tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_recall_loss_soft_labels_use_the_argmax_class():
    logits = torch.tensor([[LN3, 0.0], [0.0, LN3], [0.0, LN3]])
    soft = torch.tensor([[0.8, 0.2], [0.7, 0.3], [0.1, 0.9]])  # classes 0, 0, 1 → weights 0.5, 0.5, 0
    log_p = logits.log_softmax(1)
    ce = -(soft * log_p).sum(1)
    expected = (0.5 * ce[0] + 0.5 * ce[1]) / 3
    assert RecallLoss()(logits, soft).item() == pytest.approx(expected.item(), abs=1e-6)


# --- AugMix consistency -------------------------------------------------------------------------------------


def test_augmix_consistency_hand_computed_one_row():
    # clean [0, 0] → [1/2, 1/2]; views [ln 3, 0] → [3/4, 1/4] and [0, ln 3] → [1/4, 3/4]; M = [1/2, 1/2]
    # KL(clean‖M) = 0; KL(view‖M) = 0.75·ln 1.5 + 0.25·ln 0.5 = 0.130812 each → JS = 2·0.130812 / 3 = 0.087208
    # CE(clean, 0) = ln 2 → loss = 0.693147 + 12·0.087208 = 1.739643
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0], [0.0, LN3]])
    kl_view = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = AugMixConsistency(CrossEntropy(), weight=12.0)(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(LN2 + 12.0 * 2 * kl_view / 3, abs=1e-6)


def test_augmix_consistency_zero_for_identical_views_positive_otherwise():
    clean, target = _random_batch(3)
    base = CrossEntropy()(clean, target)
    same = AugMixConsistency(CrossEntropy())(torch.cat([clean, clean, clean]), target)
    assert same.item() == pytest.approx(base.item(), abs=1e-6)
    different = AugMixConsistency(CrossEntropy())(torch.cat([clean, clean + torch.randn_like(clean), clean]), target)
    assert different.item() > base.item() + 1e-3


def test_augmix_consistency_refuses_logits_without_three_views():
    with pytest.raises(ValueError, match="3 × 2 rows"):
        AugMixConsistency(CrossEntropy())(torch.zeros(4, 3), torch.tensor([0, 1]))


# --- common behaviour ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(5))
def test_one_hot_soft_labels_equal_integer_labels(index):
    loss = _all_losses()[index]
    logits, target = _random_batch(4)
    if isinstance(loss, AugMixConsistency):
        logits = torch.cat([logits, logits * 0.5, logits + 1.0])
    hard = loss(logits, target)
    torch.testing.assert_close(loss(logits, target[:, None]), hard)
    torch.testing.assert_close(loss(logits, F.one_hot(target, 4).float()), hard)


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("soft", [False, True])
def test_gradients_flow(index, soft):
    loss = _all_losses()[index]
    logits, target = _random_batch(5, b=6)
    if isinstance(loss, AugMixConsistency):
        logits = torch.cat([logits, logits * 0.5, logits + 1.0])
    if soft:  # a MixUp-like λ mixture of two labels
        target = 0.7 * F.one_hot(target, 4).float() + 0.3 * F.one_hot(target.roll(1), 4).float()
    logits.requires_grad_(True)
    value = loss(logits, target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_target_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="does not match logits"):
        CrossEntropy()(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


# --- factory ------------------------------------------------------------------------------------------------


def test_factory_builds_each_loss():
    counts = [591, 839, 324]
    assert LOSS_NAMES == ("ce", "focal", "ldam", "recall")
    assert isinstance(classification_loss("ce", counts, label_smoothing=0.1), CrossEntropy)
    assert classification_loss("focal", counts, focal_gamma=1.0).gamma == 1.0
    ldam = classification_loss("ldam", counts, drw_start_epoch=8)
    # s = 30 is applied by the network's cosine head: the loss scales the margins instead (s·cos − s·m)
    assert isinstance(ldam, LDAMLoss) and ldam.drw_start_epoch == 8 and ldam.scale == 1.0
    assert ldam.margins.tolist() == pytest.approx([30 * 0.430, 30 * 0.394, 30 * 0.500], abs=30 * 5e-4)
    cos = torch.tensor([[0.2, -0.1, 0.4], [0.9, 0.0, -0.3]])
    target = torch.tensor([1, 2])
    paper = LDAMLoss(counts, max_margin=0.5, scale=30.0)  # the paper's loss on bare cosines
    assert ldam(30 * cos, target).item() == pytest.approx(paper(cos, target).item(), rel=1e-6)
    assert isinstance(classification_loss("recall", counts), RecallLoss)
    wrapped = classification_loss("ldam", counts, augmix_jsd=True)
    assert isinstance(wrapped, AugMixConsistency) and isinstance(wrapped.base_loss, LDAMLoss)
    assert wrapped.weight == 12.0


def test_factory_option_errors():
    with pytest.raises(OptionError, match="--loss: unknown loss 'dice'; choose one of ce, focal, ldam, recall"):
        classification_loss("dice", [3, 4])
    with pytest.raises(OptionError, match="--label_smoothing: only used by --loss ce, not focal"):
        classification_loss("focal", [3, 4], label_smoothing=0.1)
    with pytest.raises(OptionError, match="--drw_start_epoch: only used by --loss ldam, not ce"):
        classification_loss("ce", [3, 4], drw_start_epoch=5)


# --- deferred re-weighting on an Ignite engine --------------------------------------------------------------


def _weights_per_epoch(loss: torch.nn.Module, epochs: int) -> list[list[float] | None]:
    engine = Engine(lambda engine, batch: None)
    DeferredReweighting(loss).attach(engine)
    inner = loss.base_loss if isinstance(loss, AugMixConsistency) else loss
    seen: list[list[float] | None] = []

    @engine.on(Events.ITERATION_COMPLETED)
    def record(engine: Engine) -> None:
        weight = getattr(inner, "class_weight", None)
        seen.append(None if weight is None else weight.tolist())

    engine.run([0], max_epochs=epochs)
    return seen


def test_drw_switches_on_at_the_given_epoch_and_logs_once(caplog):
    loss = LDAMLoss([591, 839, 324], drw_start_epoch=3)
    with caplog.at_level(logging.INFO, logger="mednet"):
        seen = _weights_per_epoch(loss, epochs=4)
    assert seen[:2] == [None, None]
    assert seen[2] == pytest.approx([0.854, 0.609, 1.537], abs=5e-4) and seen[3] == seen[2]
    messages = [r.getMessage() for r in caplog.records if "deferred re-weighting" in r.getMessage()]
    assert messages == ["epoch 3: deferred re-weighting on, class weights 0.854, 0.609, 1.537"]


def test_drw_reaches_a_loss_inside_augmix_and_ignores_losses_without_drw():
    wrapped = classification_loss("ldam", [591, 839, 324], drw_start_epoch=2, augmix_jsd=True)
    assert [w is not None for w in _weights_per_epoch(wrapped, epochs=3)] == [False, True, True]
    assert _weights_per_epoch(CrossEntropy(), epochs=2) == [None, None]  # attach is a no-op


@pytest.mark.parametrize(("epochs", "drw_start", "first"), [(200, 0.8, 161), (10, 0.8, 9), (15, 0.8, 13), (1, 0.8, 1),
                                                            (5, 0.95, 5), (5, 1.0, None)])
def test_train_json_switches_drw_on_after_its_share_of_the_run(epochs: int, drw_start: float, first: int,
                                                               monkeypatch) -> None:
    """``--drw_start 0.8`` of 200 epochs: DRW from epoch 161 (1-based), i.e. for the last 40 epochs, as the paper's
    ``epoch // 160`` on 0-based epochs; never later than the last epoch, except ``1`` (after the whole run: never,
    plain LDAM)."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the configs' % macros are relative to the checkout root
    parser = ConfigParser()
    parser.read_config(str(repo / "bundles" / "dermoscopy_classification" / "configs" / "train.json"))
    parser.update({"loss": "ldam", "epochs": epochs, "drw_start": drw_start, "class_counts": [50, 20, 5, 9, 3, 7, 4],
                   "augmix_jsd": False})
    assert parser.get_parsed_content("loss_function").drw_start_epoch == first


def _train_json_parser(monkeypatch, **overrides):
    from pathlib import Path

    from monai.bundle import ConfigParser

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the configs' % macros are relative to the checkout root
    parser = ConfigParser()
    parser.read_config(str(repo / "bundles" / "dermoscopy_classification" / "configs" / "train.json"))
    parser.update({"class_counts": [50, 20, 5, 9, 3, 7, 4], "augmix_jsd": False, **overrides})
    return parser


def test_train_json_balanced_sampler_and_recall_mel_selection(monkeypatch) -> None:
    """``--balanced_sampler True``: every class is drawn with the same total weight (inverse-frequency sampling,
    no shuffle); ``--selection_metric recall_mel``: the model is selected on validation melanoma recall, which
    is then no additional metric (Ignite would compute and log it twice)."""
    import numpy as np
    import pandas as pd
    from torch.utils.data import RandomSampler, WeightedRandomSampler

    from mednet.data.dermoscopy import DERMOSCOPY_CLASSES
    from mednet.overrides import check_overrides

    counts = [50, 20, 5, 9, 3, 7, 4]  # the class_counts _train_json_parser sets: the table holds exactly these
    dx = np.random.default_rng(0).permutation(np.repeat(DERMOSCOPY_CLASSES, counts))
    table = pd.DataFrame({"image_id": [f"img{i}" for i in range(len(dx))], "dx": dx, "path": ""})
    fixed = {"train_table": table, "normalization": [[0.5] * 3, [0.25] * 3]}  # no image is read
    parser = _train_json_parser(monkeypatch, **fixed, balanced_sampler=True, selection_metric="recall_mel")
    loader = parser.get_parsed_content("train#dataloader")
    sampler = loader.sampler
    assert isinstance(sampler, WeightedRandomSampler) and sampler.replacement and sampler.num_samples == len(table)
    assert loader.batch_sampler.sampler is sampler  # drawn by the weights, not shuffled
    labels = np.asarray(loader.dataset.labels)
    assert labels.tolist() == [DERMOSCOPY_CLASSES.index(d) for d in dx]
    per_class = [float(sampler.weights[labels == k].sum()) for k in range(len(counts))]
    assert per_class == pytest.approx([per_class[0]] * len(counts))
    assert isinstance(_train_json_parser(monkeypatch, **fixed).get_parsed_content("train#dataloader").sampler,
                      RandomSampler)  # the default: shuffled, every image once an epoch

    assert list(parser.get_parsed_content("validate#key_metric")) == ["val_recall_mel"]
    additional = parser.get_parsed_content("validate#evaluator#additional_metrics")
    assert "val_recall_mel" not in additional and {"val_balanced_accuracy", "val_recall_nv"} <= set(additional)
    train = "bundles/dermoscopy_classification/configs/train.json"
    check_overrides(train, {"balanced_sampler": True, "selection_metric": "recall_mel"})
    with pytest.raises(OptionError, match="--selection_metric"):
        check_overrides(train, {"selection_metric": "recall_melanoma"})


def test_train_json_drw_start_none_is_plain_ldam_for_the_whole_run(monkeypatch) -> None:
    """``--drw_start None``: LDAM without deferred re-weighting, also in the last epoch (``min(@epochs, …)`` used
    to force DRW on at least there); the override check accepts it, for ``--loss ldam`` only."""
    from mednet.overrides import check_overrides

    parser = _train_json_parser(monkeypatch, loss="ldam", epochs=5, drw_start=None)
    loss = parser.get_parsed_content("loss_function")
    assert isinstance(loss, LDAMLoss) and loss.drw_start_epoch is None
    assert _weights_per_epoch(loss, epochs=5) == [None] * 5
    # the same run with the default 0.8 re-weights its last epoch
    loss = _train_json_parser(monkeypatch, loss="ldam", epochs=5).get_parsed_content("loss_function")
    assert [w is not None for w in _weights_per_epoch(loss, epochs=5)] == [False] * 4 + [True]
    # recorded as given in settings.json
    settings_call = next(item for item in parser["run"] if "write_run_settings" in item)
    assert "drw_start=@drw_start" in settings_call
    train = "bundles/dermoscopy_classification/configs/train.json"
    check_overrides(train, {"loss": "ldam", "drw_start": None})
    with pytest.raises(OptionError, match=r"--drw_start: got the text 'none'; write None for no value"):
        check_overrides(train, {"loss": "ldam", "drw_start": "none"})
    with pytest.raises(OptionError, match="--drw_start: applies only with --loss ldam"):
        check_overrides(train, {"loss": "ce", "drw_start": None})
    with pytest.raises(OptionError, match="--drw_start: must be ≤ 1"):
        check_overrides(train, {"loss": "ldam", "drw_start": 2})


def test_drw_start_1_is_plain_ldam_and_the_command_line_refuses_none(monkeypatch) -> None:
    """MONAI's command line (``create_workflow``) drops every None-valued argument, so ``--drw_start None`` would
    have kept DRW at 0.8 while the override check accepted it. ``--drw_start 1`` (re-weight from the end of the
    run on) is plain LDAM; ``None`` on the command line is refused with that hint (it still works from Python)."""
    from monai.bundle.scripts import create_workflow

    from mednet.overrides import check_cli_overrides

    loss = _train_json_parser(monkeypatch, loss="ldam", epochs=5, drw_start=1).get_parsed_content("loss_function")
    assert isinstance(loss, LDAMLoss) and loss.drw_start_epoch is None
    assert _weights_per_epoch(loss, epochs=5) == [None] * 5
    train = "bundles/dermoscopy_classification/configs/train.json"
    # the behaviour the refusal guards against: MONAI's own CLI path loses the None
    workflow = create_workflow(config_file=train, loss="ldam", drw_start=None)
    assert workflow.parser["drw_start"] == 0.8
    argv = ["x/monai/bundle/__main__.py", "run", "--config_file", train, "--loss", "ldam", "--drw_start", "None"]
    with pytest.raises(OptionError, match=r"--drw_start: MONAI's command line drops None values, so the run would "
                                          r"keep the default 0\.8; give --drw_start 1 instead"):
        check_cli_overrides(argv)
    check_cli_overrides([*argv[:-1], "1"])


def test_ldam_half_precision_logits_give_a_float32_loss() -> None:
    """AMP: half-precision logits near ±s = ±30 (spacing 1/64) lost precision in the margin shift and gave a
    float16 loss, 3e-4 off in relative terms; computed in float32 it is the float32 loss of the same values."""
    g = torch.Generator().manual_seed(0)
    logits = ((torch.rand(64, 7, generator=g) * 2 - 1) * 30).half()
    labels = torch.randint(0, 7, (64,), generator=g)
    loss = classification_loss("ldam", [10, 50, 200, 30, 120, 900, 15], drw_start_epoch=2)
    for epoch in (1, 2):  # without and with DRW
        loss.set_epoch(epoch)
        got = loss(logits, labels)
        assert got.dtype == torch.float32
        reference = loss(logits.double(), labels)  # the same half-precision values, in float64
        assert reference.dtype == torch.float64
        assert got.item() == pytest.approx(reference.item(), rel=1e-6)
        assert got.item() == loss(logits.float(), labels).item()
    soft = F.one_hot(labels, 7).half()
    assert loss(logits, soft).dtype == torch.float32


def test_ldam_scale_default_is_the_networks_cosine_head_scale() -> None:
    """The loss's s (margins scaled by it) and the cosine head's s are one constant."""
    import inspect

    from mednet.networks import build_classifier
    from mednet.networks.classifiers import LDAM_SCALE, NormedLinear

    assert inspect.signature(classification_loss).parameters["ldam_logit_scale"].default == LDAM_SCALE
    loss = classification_loss("ldam", [591, 839, 324])
    assert float(loss.margins.max()) == pytest.approx(0.5 * LDAM_SCALE) and loss.scale == 1.0
    net = build_classifier("receptive_field_cnn", 3, 32, cosine_head=True)
    heads = [m for m in net.modules() if isinstance(m, NormedLinear)]
    assert len(heads) == 1 and heads[0].scale == LDAM_SCALE
