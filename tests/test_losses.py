"""Tests for :mod:`mednet.losses.segmentation` (loss selection by name)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mednet.losses import SEGMENTATION_LOSSES, tissue_loss


def _batch(seed: int = 0, b: int = 2, c: int = 3, h: int = 8, w: int = 7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * 2
    target = torch.randint(0, c, (b, 1, h, w), generator=g)
    return logits, target


def test_choices():
    assert SEGMENTATION_LOSSES == ("ce", "dice_ce")
    assert isinstance(tissue_loss(), torch.nn.Module)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("target_dtype", [torch.long, torch.float32])
def test_ce_equals_torch_cross_entropy(seed, target_dtype):
    logits, target = _batch(seed)
    loss = tissue_loss("ce")(logits, target.to(target_dtype))
    expected = F.cross_entropy(logits, target[:, 0].long())
    assert loss.ndim == 0
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert tissue_loss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)  # default is "ce"


def test_ce_gradient_matches_torch():
    logits, target = _batch(5)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    tissue_loss("ce")(a, target).backward()
    F.cross_entropy(b, target[:, 0]).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_dice_ce_adds_a_dice_term(seed):
    logits, target = _batch(seed)
    ce = tissue_loss("ce")(logits, target)
    dice_ce = tissue_loss("dice_ce")(logits, target)
    assert dice_ce.ndim == 0 and torch.isfinite(dice_ce)
    assert dice_ce.item() > ce.item() + 1e-4  # differs, and Dice loss is >= 0
    assert dice_ce.item() - ce.item() <= 1.0 + 1e-6  # the Dice term is in [0, 1]


def test_dice_ce_on_a_perfect_confident_prediction_is_near_zero():
    _, target = _batch(1)
    logits = F.one_hot(target[:, 0], 3).permute(0, 3, 1, 2).float() * 50.0
    assert tissue_loss("ce")(logits, target).item() < 1e-6
    assert tissue_loss("dice_ce")(logits, target).item() < 1e-3


@pytest.mark.parametrize("name", ["dice", "CE", "", "focal"])
def test_unknown_name_lists_the_choices(name):
    with pytest.raises(ValueError) as err:
        tissue_loss(name)
    msg = str(err.value)
    assert repr(name) in msg
    for choice in SEGMENTATION_LOSSES:
        assert choice in msg


def test_ce_ignores_background_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 1, 4, 4))
    with_bg = target.clone()
    with_bg[:, :, :2] = -1
    expected = torch.nn.functional.cross_entropy(logits.movedim(1, -1)[:, 2:].reshape(-1, 3), target[:, 0, 2:].reshape(-1))
    torch.testing.assert_close(tissue_loss("ce")(logits, with_bg), expected)


def _dice_ce_on_valid_pixels(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Independent Dice + CE over the pixels with target >= 0: Dice per sample and class (MONAI's default
    reduction, smoothing 1e-5 on both sides), CE averaged over all valid pixels of the batch."""
    b, c = logits.shape[:2]
    p = logits.softmax(dim=1).reshape(b, c, -1)
    t = target.reshape(b, -1)
    dice_terms, ce_logits, ce_targets = [], [], []
    for i in range(b):
        valid = t[i] >= 0
        pi, ti = p[i][:, valid], t[i][valid]
        for k in range(c):
            g = (ti == k).to(pi.dtype)
            inter = (pi[k] * g).sum()
            dice_terms.append(1 - (2 * inter + smooth) / (pi[k].sum() + g.sum() + smooth))
        ce_logits.append(logits[i].reshape(c, -1)[:, valid].T)
        ce_targets.append(ti)
    ce = F.cross_entropy(torch.cat(ce_logits), torch.cat(ce_targets))
    return torch.stack(dice_terms).mean() + ce


@pytest.mark.parametrize("seed", range(3))
def test_dice_ce_ignores_background_pixels(seed):
    """Training patches carry -1 wherever max_background lets background in (the bundle's default 0.25)."""
    logits, target = _batch(seed, b=3, h=9, w=8)
    g = torch.Generator().manual_seed(100 + seed)
    with_bg = torch.where(torch.rand(target.shape, generator=g) < 0.3, torch.full_like(target, -1), target)
    with_bg[2, :, :, :5] = -1  # one sample mostly background
    loss = tissue_loss("dice_ce")(logits, with_bg)
    assert loss.ndim == 0 and torch.isfinite(loss)
    torch.testing.assert_close(loss, _dice_ce_on_valid_pixels(logits, with_bg), rtol=1e-5, atol=1e-6)
    # float targets (as after a collate of float labels) give the same value
    torch.testing.assert_close(tissue_loss("dice_ce")(logits, with_bg.float()), loss)
    # whatever the network predicts at ignored pixels does not change the loss
    changed = torch.where(with_bg < 0, torch.randn(logits.shape, generator=g) * 10, logits)
    torch.testing.assert_close(tissue_loss("dice_ce")(changed, with_bg), loss)


def test_dice_ce_without_background_equals_monai_dice_ce():
    from monai.losses import DiceCELoss

    logits, target = _batch(4)
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target)
    torch.testing.assert_close(tissue_loss("dice_ce")(logits, target), expected)
    torch.testing.assert_close(_dice_ce_on_valid_pixels(logits, target), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_ignored_pixels_get_no_gradient(name):
    logits, target = _batch(7)
    target[:, :, ::2] = -1
    x = logits.clone().requires_grad_(True)
    tissue_loss(name)(x, target).backward()
    ignored = (target < 0).expand_as(x)
    assert torch.all(x.grad[ignored] == 0)
    assert x.grad[~ignored].abs().sum() > 0


def test_dice_ce_with_an_absent_class_and_an_all_background_sample():
    """A class missing from a sample's labelled pixels and a sample without labelled pixels stay finite: the
    sample without labels adds 0 to its Dice terms, the absent class ~1 unless it is predicted nowhere."""
    logits, target = _batch(8, b=2)
    target[0][target[0] == 2] = 1  # class 2 absent from sample 0
    target[1] = -1  # sample 1 entirely background
    x = logits.clone().requires_grad_(True)
    loss = tissue_loss("dice_ce")(x, target)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, _dice_ce_on_valid_pixels(logits, target), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert torch.all(x.grad[1] == 0) and torch.isfinite(x.grad).all()
