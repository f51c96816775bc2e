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


def test_ce_ignores_background_pixels_and_dice_ce_refuses_them():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 1, 4, 4))
    with_bg = target.clone()
    with_bg[:, :, :2] = -1
    expected = torch.nn.functional.cross_entropy(logits.movedim(1, -1)[:, 2:].reshape(-1, 3), target[:, 0, 2:].reshape(-1))
    torch.testing.assert_close(tissue_loss("ce")(logits, with_bg), expected)
    with pytest.raises(ValueError, match="cannot ignore background"):
        tissue_loss("dice_ce")(logits, with_bg)
