"""Sanity checks of attribution maps: do they depend on what the network learnt, and do they point at evidence?

* **Model randomisation** (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018):
  :func:`model_randomisation_test` compares each image's map from the trained network with its map from a copy
  whose weights are re-initialised (:func:`randomised_copy`; *full* randomisation of every layer by default,
  He-normal weights and zero biases; *cascading* — the top ``n`` layers, output first — on request) by the
  Spearman rank correlation of the pixel values (:func:`rank_correlation`). A map that barely changes
  (correlation near 1) shows the image, not the model. Threshold used in the tests and docs: mean correlation
  **< 0.5** over the images whose maps are not constant.
* **Deletion / insertion** (Petsiuk et al., "RISE", BMVC 2018): :func:`deletion_insertion` removes the pixels
  the map ranks highest first (replaced by a baseline: 0 = the training mean colour, or the blurred image) and
  follows the target class's probability; the same with a random pixel order is the reference. A map that finds
  the evidence makes the probability fall faster: deletion AUC of the map < deletion AUC of random order (and
  insertion AUC above random's).

:func:`blob_task` and :func:`train_blob_classifier` give a small trained classifier on which both checks have a
known answer: the class is the colour of one disc at a random position on colour noise, so the evidence is
localised and nowhere else.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mednet.explain.attribution import (
    _device,
    _seeded,
    attribution_maps,
    blurred_baseline,
    explaining,
)

__all__ = ["RANDOMISATION_THRESHOLD", "randomised_copy", "rank_correlation", "model_randomisation_test",
           "deletion_insertion", "blob_task", "train_blob_classifier", "BLOB_COLOURS", "BLOB_NORMALIZATION"]

#: mean Spearman correlation (trained vs randomised maps) below which a method passes the randomisation test
RANDOMISATION_THRESHOLD = 0.5


# ---------------------------------------------------------------------------------------------------------------
# model randomisation
# ---------------------------------------------------------------------------------------------------------------
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _parameterised(net: nn.Module) -> list[list[nn.Module]]:
    """The network's layers, in registration (≈ forward) order: each a module with parameters of its own, with the
    normalisation layers that follow it (conv → BN is one layer, as in Adebayo et al.'s cascading randomisation,
    where counting the BN alone would make "the top layer" a BN whose convolution keeps its trained weights)."""
    layers: list[list[nn.Module]] = []
    for m in net.modules():
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if isinstance(m, _NORMS) and layers:
            layers[-1].append(m)
        else:
            layers.append([m])
    return layers


def _reinitialise(module: nn.Module) -> None:
    """He-normal weights (fan-in, ReLU gain) and zero biases for convolutions and linear layers; batch norms back
    to the identity (weight 1, bias 0, running mean 0, variance 1); any other parameter: He-uniform / zero."""
    with torch.no_grad():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            module.reset_parameters()
        else:  # e.g. the cosine head NormedLinear
            for p in module.parameters(recurse=False):
                if p.ndim >= 2:
                    nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                else:
                    p.zero_()


def randomised_copy(network: nn.Module, seed: int = 0, mode: str = "full", n_layers: int | None = None) -> nn.Module:
    """A deep copy of ``network`` with re-initialised weights (the original is untouched).

    Convolutions and linear layers get He-normal weights and zero biases, batch norms become the identity
    (:func:`_reinitialise`). Not PyTorch's default initialisation: its weights (He-uniform with a = √5) and biases
    (±1/√fan-in) shrink the activations through the 13 unnormalised blocks of ``receptive_field_cnn`` until the
    biases dominate and every map of the randomised network is constant — the test would then pass for a reason
    that has nothing to do with the method.

    Args:
        seed: of the new weights (global random states are left as they were).
        mode: ``"full"`` (the default, used in the tests and docs): every parameterised layer; ``"cascading"``:
            only the top ``n_layers`` (from the output down), Adebayo et al.'s cascading randomisation; a layer
            is a convolution or linear layer together with the normalisation layers that follow it.
        n_layers: for ``"cascading"`` (default 1; 0 randomises nothing: a control that must fail the test).
    """
    if mode not in ("full", "cascading"):
        raise ValueError(f"mode must be 'full' or 'cascading', got {mode!r}")
    other = copy.deepcopy(network)
    layers = _parameterised(other)
    if mode == "cascading":
        n = 1 if n_layers is None else max(int(n_layers), 0)
        layers = layers[len(layers) - n:] if n else []  # n_layers=0: nothing randomised (a control)
    with _seeded(seed, _device(other)):
        for layer in layers:
            for m in layer:
                _reinitialise(m)
    return other


def rank_correlation(map_a: np.ndarray | torch.Tensor, map_b: np.ndarray | torch.Tensor) -> float:
    """Spearman rank correlation of two maps' pixel values (scipy). A constant map ranks nothing: 0."""
    from scipy.stats import spearmanr

    a = np.asarray(torch.as_tensor(map_a).detach().cpu(), dtype=np.float64).ravel()
    b = np.asarray(torch.as_tensor(map_b).detach().cpu(), dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps of different sizes: {a.shape} vs {b.shape}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def model_randomisation_test(network: nn.Module, images: torch.Tensor, method: str = "gradcam",
                             targets: torch.Tensor | Sequence[int] | None = None, seed: int = 0, mode: str = "full",
                             n_layers: int | None = None, **kw: object) -> dict:
    """Adebayo et al.'s model randomisation test of ``method`` on ``images``.

    Both networks explain the same class: ``targets``, or the trained network's prediction. ``kw`` go to
    :func:`mednet.explain.attribution.attribution_maps` (``layer``, ``n_steps``, ``normalization``…).

    An image whose map is constant in either network (no gradient reaches it: e.g. ``receptive_field_cnn``'s
    logits pass a ReLU — ``convblock13`` is conv → ReLU → BN — so in a randomised copy about half of the classes
    are 0 for every input) ranks nothing and says nothing about the method: it gets correlation 0 in
    ``correlations`` but is left out of the summary (``n_constant``).

    Returns:
        ``{"method", "mode", "correlations": (B,) array, "informative": (B,) bool, "n_constant", "mean", "min",
        "max", "mean_all", "threshold", "passed", "maps": {"trained", "randomised"}}``: Spearman correlation of each
        image's two maps; ``mean``/``min``/``max`` over the informative images; ``passed`` = ``mean`` <
        :data:`RANDOMISATION_THRESHOLD` (False when no image is informative).
    """
    device = _device(network)
    images = torch.as_tensor(images).float().to(device)
    if targets is None:
        with explaining(network, input_grad=False), torch.no_grad():
            targets = network(images).argmax(1).cpu()
    random_net = randomised_copy(network, seed, mode, n_layers)
    trained = attribution_maps(network, images, (method,), targets, seed=seed, **kw)[method]
    randomised = attribution_maps(random_net, images, (method,), targets, seed=seed, **kw)[method]
    corr = np.array([rank_correlation(a, b) for a, b in zip(trained, randomised)])
    informative = np.array([float(a.max() - a.min()) > 0 and float(b.max() - b.min()) > 0
                            for a, b in zip(trained, randomised)])
    kept = corr[informative] if informative.any() else np.array([np.nan])
    mean = float(kept.mean())
    return {"method": method, "mode": mode, "correlations": corr, "informative": informative,
            "n_constant": int((~informative).sum()), "mean": mean, "min": float(kept.min()),
            "max": float(kept.max()), "mean_all": float(corr.mean()), "threshold": RANDOMISATION_THRESHOLD,
            "passed": bool(informative.any() and mean < RANDOMISATION_THRESHOLD),
            "maps": {"trained": trained, "randomised": randomised}}


# ---------------------------------------------------------------------------------------------------------------
# deletion / insertion
# ---------------------------------------------------------------------------------------------------------------
def _auc(curve: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    return np.trapezoid(curve, fractions, axis=-1)


def deletion_insertion(network: nn.Module, images: torch.Tensor, maps: torch.Tensor | np.ndarray,
                       targets: torch.Tensor | Sequence[int] | None = None, steps: int = 20,
                       baseline: float | str = 0.0, seed: int = 0, batch_size: int = 64) -> dict:
    """Class-probability curves when pixels are deleted (or inserted) in the map's order and in random order.

    Deletion: ``steps + 1`` images per curve, with the top ``k / steps`` of the pixels (all channels) replaced by
    the baseline; insertion: the baseline with those pixels put back. Ties in a map are broken at random.

    Args:
        images: ``(B, 3, S, S)`` normalised inputs.
        maps: ``(B, S, S)`` attribution maps (higher = more important).
        targets: the class whose softmax probability is followed; ``None`` = the prediction on the full image.
        baseline: a number in normalised input units (0 = the training mean colour) or ``"blur"``
            (:func:`mednet.explain.attribution.blurred_baseline`).
        seed: of the random order.

    Returns:
        ``fractions`` ``(steps+1,)``; ``deletion``, ``deletion_random``, ``insertion``, ``insertion_random``
        ``(B, steps+1)`` probabilities; ``deletion_auc``, ``deletion_auc_random``, ``insertion_auc``,
        ``insertion_auc_random`` (mean over images of the trapezoid area over the fraction removed or inserted) and
        the same per image (``deletion_aucs``, ``deletion_aucs_random``, …). A useful map has
        ``deletion_auc < deletion_auc_random`` and ``insertion_auc > insertion_auc_random``.
    """
    device = _device(network)
    images = torch.as_tensor(images).float().to(device)
    maps_np = np.asarray(torch.as_tensor(maps).detach().cpu(), dtype=np.float64)
    b, c, h, w = images.shape
    if maps_np.shape != (b, h, w):
        raise ValueError(f"maps must be {(b, h, w)}, got {maps_np.shape}")
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be a number or 'blur', got {baseline!r}")
        base = blurred_baseline(images)
    else:
        base = torch.full_like(images, float(baseline))
    n = h * w
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = torch.as_tensor(np.round(fractions * n).astype(np.int64), device=device)
    rng = np.random.default_rng(seed)
    curves = {k: np.zeros((b, steps + 1)) for k in ("deletion", "deletion_random", "insertion", "insertion_random")}
    with explaining(network, input_grad=False), torch.no_grad():
        if targets is None:
            targets = network(images).argmax(1).cpu()
        targets = torch.as_tensor(targets).long().reshape(-1)
        for i in range(b):
            tie = rng.random(n)
            orders = {"": np.lexsort((tie, -maps_np[i].ravel())), "_random": rng.permutation(n)}
            for suffix, order in orders.items():
                ranks = torch.empty(n, dtype=torch.long, device=device)
                ranks[torch.as_tensor(order, device=device)] = torch.arange(n, device=device)
                masks = (ranks[None, :] < counts[:, None]).reshape(steps + 1, 1, h, w)  # True = top pixels
                x, x0 = images[i : i + 1], base[i : i + 1]
                for kind, batch in (("deletion", torch.where(masks, x0, x)), ("insertion", torch.where(masks, x, x0))):
                    probs = torch.cat([network(batch[j : j + batch_size]).float().softmax(1)
                                       for j in range(0, steps + 1, batch_size)])
                    curves[kind + suffix][i] = probs[:, int(targets[i])].cpu().numpy()
    result: dict = {"fractions": fractions, **curves, "targets": targets.numpy(), "baseline": baseline}
    for kind in ("deletion", "insertion"):
        for suffix in ("", "_random"):
            aucs = _auc(curves[kind + suffix], fractions)
            result[f"{kind}_aucs{suffix}"] = aucs
            result[f"{kind}_auc{suffix}"] = float(aucs.mean())
    return result


# ---------------------------------------------------------------------------------------------------------------
# a task with localised evidence, and a small trained classifier on it
# ---------------------------------------------------------------------------------------------------------------
#: disc colours of :func:`blob_task`'s classes (RGB in [0, 1])
BLOB_COLOURS = ((0.95, 0.15, 0.15), (0.15, 0.85, 0.15), (0.15, 0.3, 0.95), (0.95, 0.85, 0.1), (0.85, 0.2, 0.9),
                (0.1, 0.85, 0.9), (0.98, 0.55, 0.1))
#: the normalisation :func:`train_blob_classifier` uses (the data's mean is ≈ 0.5)
BLOB_NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def blob_task(n_images: int, size: int = 32, num_classes: int = 4, radius: float | None = None,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images whose class is the colour of one disc (radius ``size / 8``) at a random position on colour noise.

    Returns:
        ``images`` ``(N, 3, S, S)`` float32 in [0, 1], ``labels`` ``(N,)`` int64 (balanced), ``masks``
        ``(N, S, S)`` bool (the disc: where the evidence is).
    """
    if not 1 <= num_classes <= len(BLOB_COLOURS):
        raise ValueError(f"num_classes must be 1…{len(BLOB_COLOURS)}")
    rng = np.random.default_rng(seed)
    r = size / 8 if radius is None else float(radius)
    labels = np.arange(n_images) % num_classes
    rng.shuffle(labels)
    images = np.clip(0.5 + rng.normal(0.0, 0.12, (n_images, 3, size, size)), 0, 1)
    yy, xx = np.mgrid[:size, :size] + 0.5
    masks = np.zeros((n_images, size, size), dtype=bool)
    for i, label in enumerate(labels):
        cy, cx = rng.uniform(r + 1, size - r - 1, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        colour = np.clip(np.asarray(BLOB_COLOURS[label]) + rng.normal(0, 0.04, 3), 0, 1)
        images[i][:, disc] = colour[:, None]
        masks[i] = disc
    return (torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long),
            torch.as_tensor(masks))


def train_blob_classifier(network: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 8,
                          batch_size: int = 32, learning_rate: float = 3e-3, seed: int = 0,
                          normalization: Mapping[str, Sequence[float]] = BLOB_NORMALIZATION,
                          device: str | torch.device = "cpu") -> nn.Module:
    """Train ``network`` on ``(images in [0, 1], labels)`` with a MONAI ``SupervisedTrainer`` (Adam, cross-entropy,
    inputs normalised by ``normalization``); returns it in eval mode. Deterministic for a given ``seed``."""
    from monai.engines import SupervisedTrainer

    mean = torch.as_tensor(normalization["mean"]).reshape(1, 3, 1, 1)
    std = torch.as_tensor(normalization["std"]).reshape(1, 3, 1, 1)
    x = (images - mean) / std
    data = [{"image": x[i], "label": labels[i]} for i in range(len(labels))]
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    network = network.to(device)
    trainer = SupervisedTrainer(device=torch.device(device), max_epochs=epochs, train_data_loader=loader,
                                network=network, optimizer=torch.optim.Adam(network.parameters(), learning_rate),
                                loss_function=nn.CrossEntropyLoss(), amp=False)
    trainer.run()
    return network.eval()
