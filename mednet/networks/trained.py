"""Trained classifiers loaded back from their training run: the network rebuilt from ``settings.json``.

Ensembles, distillation teachers, calibration and (later) the web demo all start from "this run folder" rather
than from a set of options the user must repeat: a classification run records the architecture, input size,
head and class names in ``settings.json`` (:func:`mednet.runs.write_run_settings`), so the network can be rebuilt
exactly and its weights checked against it (:func:`mednet.engines.checkpoints.load_weights`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mednet.errors import DataError
from mednet.networks.classifiers import build_classifier
from mednet.runs import SETTINGS_FILE, resolve_checkpoint

__all__ = ["TrainedClassifier", "load_trained_classifier", "load_trained_classifiers", "check_same_inputs"]

#: what a classification run must record to be rebuilt
_REQUIRED = ("model", "image_size", "class_names", "normalization")


@dataclass
class TrainedClassifier:
    """A classifier rebuilt from its run (``network`` in eval mode) and the settings it was trained with.

    Attributes:
        network: ``(B, 3, S, S) → (B, K)`` logits, in eval mode, on the requested device.
        checkpoint: the ``model.pt`` loaded.
        settings: the run's ``settings.json``.
    """

    network: torch.nn.Module
    checkpoint: Path
    settings: dict = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.settings["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.settings["image_size"])

    @property
    def normalization(self) -> dict:
        """``{"mean": [3 floats], "std": [3 floats]}`` of the run's training split."""
        return dict(self.settings["normalization"])

    @property
    def name(self) -> str:
        """A short label: ``<model>-<augmentation>`` (e.g. ``resnet18-mixup``) or the run folder's name."""
        aug = self.settings.get("augmentation")
        return f"{self.settings['model']}-{aug}" if aug else self.run_dir.name


def load_trained_classifier(path: str | os.PathLike, device: str | torch.device = "cpu",
                            class_names: Sequence[str] | None = None) -> TrainedClassifier:
    """Rebuild and load the classifier of a training run.

    An ensemble run (``ensemble.json``: ``settings.json`` with ``model = "ensemble"``, its members and weights) is
    rebuilt as a :class:`mednet.networks.ensemble.EnsembleClassifier` of its members.

    Args:
        path: a run folder (its ``model.pt``) or a checkpoint inside one (``settings.json`` beside it).
        device: where the network goes.
        class_names: when given, the run must have been trained on exactly these classes, in this order.

    Raises:
        DataError: no checkpoint, no or incomplete ``settings.json``, other classes, or weights that do not fit
            the architecture the settings name (names the file and the mismatch).
    """
    from mednet.runs import _read_json  # one reader for settings files

    folder = Path(path)
    if folder.is_dir() and not (folder / "model.pt").is_file() and (folder / SETTINGS_FILE).is_file():
        settings = _read_json(folder / SETTINGS_FILE) or {}
        if settings.get("model") == "ensemble":
            return _load_ensemble(folder, settings, device, class_names)
    checkpoint = resolve_checkpoint(path, ".", "")
    settings_file = checkpoint.parent / SETTINGS_FILE
    if not settings_file.is_file():
        raise DataError(checkpoint, f"no {SETTINGS_FILE} beside it: use a model.pt inside the classification "
                                    "training run that wrote it")
    settings = _read_json(settings_file) or {}
    missing = [k for k in _REQUIRED if k not in settings]
    if missing:
        raise DataError(settings_file, f"not a classification run (no {', '.join(missing)})")
    if class_names is not None and list(settings["class_names"]) != list(class_names):
        raise DataError(checkpoint, f"trained for classes {settings['class_names']}, expected {list(class_names)}")
    network = build_classifier(settings["model"], len(settings["class_names"]), int(settings["image_size"]),
                               cifar_stem=settings.get("cifar_stem"), cosine_head=bool(settings.get("cosine_head")),
                               batch_norm=settings.get("batch_norm", True))
    from mednet.engines.checkpoints import load_weights  # engines sit above networks

    load_weights(network, checkpoint, "cpu", f"the run's {SETTINGS_FILE} names model={settings['model']}")
    return TrainedClassifier(network.to(device).eval(), checkpoint, settings)


def _load_ensemble(folder: Path, settings: dict, device: str | torch.device,
                   class_names: Sequence[str] | None) -> TrainedClassifier:
    from mednet.networks.ensemble import EnsembleClassifier

    members = settings.get("members")
    if not members or "weights" not in settings:
        raise DataError(folder / SETTINGS_FILE, "an ensemble run without members or weights")
    models = load_trained_classifiers(members, device, class_names, what="ensemble members")
    network = EnsembleClassifier([m.network for m in models], settings["weights"]).to(device).eval()
    merged = {**models[0].settings, **settings}
    return TrainedClassifier(network, folder / SETTINGS_FILE, merged)


def check_same_inputs(models: Sequence[TrainedClassifier], what: str = "models") -> None:
    """Models that are combined (ensembles, teachers and their student) must see the same input tensor.

    Raises:
        DataError: an empty list, or a model with other class names, image size or normalisation than the first
            (names both runs).
    """
    if not models:
        raise DataError(None, f"no {what} given")
    first = models[0]
    for m in models[1:]:
        for key, a, b in (("class_names", first.class_names, m.class_names),
                          ("image_size", first.image_size, m.image_size)):
            if a != b:
                raise DataError(m.checkpoint, f"{key} {b!r} differs from {a!r} of {first.checkpoint}: {what} must "
                                              "share classes and input size")
        fa, fb = first.normalization, m.normalization
        if any(abs(x - y) > 1e-4 for k in ("mean", "std") for x, y in zip(fa[k], fb[k])):
            raise DataError(m.checkpoint, f"normalisation {fb} differs from {fa} of {first.checkpoint}: {what} must "
                                          "be trained on the same training split")


def load_trained_classifiers(paths: Sequence[str | os.PathLike], device: str | torch.device = "cpu",
                             class_names: Sequence[str] | None = None, what: str = "models") -> list[TrainedClassifier]:
    """:func:`load_trained_classifier` for each path, then :func:`check_same_inputs`."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    models = [load_trained_classifier(p, device, class_names) for p in paths]
    check_same_inputs(models, what)
    return models
