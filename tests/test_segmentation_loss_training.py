"""Training with each segmentation loss on patches that contain background (−1) pixels, as the brain bundle's
train.json builds it: ``PatchDataset`` → ``SupervisedTrainer`` with ``mednet.losses.tissue_loss(@loss)``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def _patches(n: int = 48, size: int = 16, seed: int = 0):
    """``n`` tiny patches whose intensity follows the tissue (CSF dark, WM bright); about 20 % background (0)."""
    from mednet.data.datasets import CohortPatches

    rng = np.random.default_rng(seed)
    labels = rng.integers(1, 4, size=(n, size, size)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = 0  # background let in by max_background
    images = np.where(labels > 0, labels / 3.0, 0.0) + rng.normal(0, 0.05, labels.shape)
    images[labels == 0] = 0.0
    positions = np.zeros((n, 5), dtype=np.int32)
    return CohortPatches(images.astype(np.float32), labels, positions, ["synthetic.nii.gz"], [2])


@pytest.mark.parametrize("loss", ["ce", "dice_ce"])
def test_one_epoch_with_background_pixels(loss):
    from monai.engines import SupervisedTrainer
    from monai.inferers import SimpleInferer
    from ignite.metrics import Average

    from mednet.data.augment import AugmentingPrepareBatch, TissuePatchAugmentation
    from mednet.data.datasets import PatchDataset
    from mednet.losses import tissue_loss
    from mednet.metrics import LabelledPixelAccuracy
    from mednet.networks.fcn import TissueFCN

    torch.manual_seed(0)
    dataset = PatchDataset(_patches())
    assert bool((dataset.labels < 0).any())  # the case that made dice_ce refuse to train
    network = TissueFCN("skip", base_channels=4)
    before = [p.detach().clone() for p in network.parameters()]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True),
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=1e-3),
        loss_function=tissue_loss(loss),
        inferer=SimpleInferer(),
        key_train_metric={"train_accuracy": LabelledPixelAccuracy(device="cpu")},
        additional_metrics={"train_loss": Average(output_transform=lambda out: out["loss"], device="cpu")},
        decollate=False,
        prepare_batch=AugmentingPrepareBatch(TissuePatchAugmentation(seed=0)),
    )
    trainer.run()
    assert trainer.state.iteration == 3
    assert math.isfinite(float(trainer.state.metrics["train_loss"]))
    assert 0.0 <= trainer.state.metrics["train_accuracy"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, network.parameters()))
    assert all(torch.isfinite(p).all() for p in network.parameters())
