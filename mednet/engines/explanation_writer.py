"""The classification bundle's explanations (``explain.json``): attribution maps of every image an evaluator sees.

:class:`ExplanationWriter` is an Ignite handler for a MONAI ``SupervisedEvaluator`` run with ``decollate=False``
(a batch is one dict: ``"pred"`` ``(B, K)`` logits, ``"label"`` ``(B,)``, the batch's ``"image_id"`` / ``"path"``
lists, as for :mod:`mednet.engines.classification_report`). The evaluator's forward pass runs without gradients,
so after each iteration the handler recomputes the maps on ``engine.state.batch``'s images with gradients
enabled (:func:`mednet.explain.attribution.attribution_maps_timed`), and writes to ``output_dir``:

* ``<image_id>.png``: the image and one overlay per method (:func:`mednet.reports.explanation_figure.
  plot_explanation`), titled with the predicted class, its calibrated probability (``softmax(logits / T)`` with
  the run's temperature), the true class when known, and the explained class when it is not the prediction;
* ``explanations.csv``: one row per image — ``image_id, path, png, prediction, probability, label, target,
  target_probability, temperature`` and ``resolution_<method>`` (the map's resolution before upsampling);
* ``timing.csv``: per method, images explained, seconds per image and in all, and the device.

PNG names are the image ids with characters that file systems refuse (and white space) replaced by ``_``
(:func:`_file_stem`). Distinct ids can then meet (``IMG 1`` and ``IMG_1``, files ``IMG 1.jpg`` and ``IMG_1.jpg`` of
one folder; or ``a`` and ``A`` on a case-insensitive disk), so a name already given in this run gets ``-2``,
``-3``… in the order the images are seen, as :func:`mednet.data.naming.unique_names` does: without it the run
would refuse its own first figure, or, with ``overwrite``, replace it and point two CSV rows at one PNG.

It stops the evaluator after ``max_images`` images. Existing outputs are never overwritten: they are refused when
the writer is made (the CSVs), when the run starts (every PNG, when the loader's images and order are known
beforehand: a table-backed dataset or a list of items, read in order) and otherwise for each batch before any of
its figures is written.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events

from mednet.errors import OptionError
from mednet.explain.attribution import (
    CAM_METHODS,
    EXPLAIN_METHODS,
    IG_BASELINES,
    attribution_maps_timed,
    check_cam_layer,
    check_layer,
    check_methods,
    map_resolution,
)
from mednet.io import refuse_existing

__all__ = ["ExplanationWriter", "check_explain_options", "check_target_class_option", "denormalize",
           "resolve_target_class", "run_explanations"]

logger = logging.getLogger("mednet")

#: ``--target_class`` values meaning "the predicted class"
_PREDICTED = (None, "", "null", "None", "none", "predicted")


def resolve_target_class(target_class: str | int | None, class_names: Sequence[str]) -> int | None:
    """``--target_class`` → a class index, or None for the predicted class (a name, or an index).

    Raises:
        OptionError: ``--target_class`` names no class of the run.
    """
    if target_class in _PREDICTED:
        return None
    names = list(class_names)
    if isinstance(target_class, (int, np.integer)) and not isinstance(target_class, bool):
        if 0 <= int(target_class) < len(names):
            return int(target_class)
    elif str(target_class) in names:
        return names.index(str(target_class))
    raise OptionError({"--target_class": f"{target_class!r} is not a class of this run; choose one of "
                                         f"{', '.join(names)} (or leave it out for the predicted class)"})


def check_target_class_option(target_class: object) -> None:
    """The command-line check of ``--target_class`` (explain.json's ``option_rules``): a class name or a class
    index ≥ 0 (the run's classes are known only when it loads, where :func:`resolve_target_class` checks them).

    Raises:
        OptionError: anything else (a list, a negative or fractional number).
    """
    if target_class in _PREDICTED or isinstance(target_class, str):
        return
    if isinstance(target_class, (int, np.integer)) and not isinstance(target_class, bool) and target_class >= 0:
        return
    raise OptionError({"--target_class": f"expects a class name or a class index ≥ 0, got {target_class!r}"})


def denormalize(images: torch.Tensor, normalization: Mapping[str, Sequence[float]] | None) -> np.ndarray:
    """Normalised ``(B, 3, S, S)`` inputs back to ``(B, S, S, 3)`` uint8 images (``x · std + mean``, clipped)."""
    x = torch.as_tensor(images).as_subclass(torch.Tensor).detach().float().cpu()
    if normalization is not None:
        mean = torch.as_tensor(normalization["mean"], dtype=torch.float32).reshape(1, -1, 1, 1)
        std = torch.as_tensor(normalization["std"], dtype=torch.float32).reshape(1, -1, 1, 1)
        x = x * std + mean
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _file_stem(image_id: str) -> str:
    """An image id as a file name: path separators, characters Windows refuses and white space become ``_``."""
    return re.sub(r"[\\/:*?\"<>|\s]+", "_", str(image_id)) or "image"


def _unique_stem(image_id: str, used: set[str]) -> str:
    """:func:`_file_stem`, with ``-2``, ``-3``… when an earlier image of the run has that name; adds it to ``used``.

    Names are compared case-insensitively (``A.png`` and ``a.png`` are one file on macOS and Windows).
    """
    stem = base = _file_stem(image_id)
    k = 2
    while stem.casefold() in used:
        stem, k = f"{base}-{k}", k + 1
    used.add(stem.casefold())
    return stem


def _planned_ids(loader: object) -> list[str] | None:
    """The image ids ``loader`` will yield, in order, when that is known without reading an image, else None.

    Known for a sequential loader over a table-backed dataset (:class:`mednet.data.lesion_images.
    LesionImageDataset`'s ``table``) or over a plain list of item dicts.
    """
    dataset = getattr(loader, "dataset", None)
    if not isinstance(getattr(loader, "sampler", None), torch.utils.data.SequentialSampler):
        return None
    table = getattr(dataset, "table", None)
    if isinstance(table, pd.DataFrame) and "image_id" in table.columns:
        return [str(i) for i in table["image_id"]]
    if isinstance(dataset, (list, tuple)) and all(isinstance(d, Mapping) and "image_id" in d for d in dataset):
        return [str(d["image_id"]) for d in dataset]
    return None


def check_explain_options(network: torch.nn.Module | None, class_names: Sequence[str],
                          methods: Sequence[str] = EXPLAIN_METHODS, target_class: str | int | None = None,
                          layer: str | None = None, ig_baseline: str = "black", n_steps: int = 50, n_samples: int = 20,
                          stdevs: float = 0.1, internal_batch_size: int = 16,
                          max_images: int = 16,
                          image_size: int | None = None) -> tuple[tuple[str, ...], int | None, str | None]:
    """Check explain.json's options against the run's network and classes before anything is read or written.

    Returns:
        ``(methods, target class index or None, Grad-CAM layer)`` — the layer resolved to the default when a
        Grad-CAM method is asked for and ``network`` is given, else ``layer`` as given.

    With ``image_size``, Grad-CAM at the layer is also run once, forward and backward, on a blank image: its output
    must be a feature map, computed once per forward pass and not modified in place by the next operation
    (:func:`~mednet.explain.attribution.check_cam_layer`).

    Raises:
        OptionError: naming every bad option (unknown method, baseline, class or layer; a layer whose output is
            no feature map, that runs twice or whose output is modified in place; Grad-CAM on an ensemble; counts
            below 1).
    """
    methods = check_methods(methods)
    target = resolve_target_class(target_class, class_names)
    problems = {f"--{k}": f"must be ≥ 1, got {v}" for k, v in
                (("n_steps", n_steps), ("n_samples", n_samples), ("internal_batch_size", internal_batch_size),
                 ("max_images", max_images)) if int(v) < 1}
    if ig_baseline not in IG_BASELINES:
        problems["--ig_baseline"] = f"must be one of {', '.join(IG_BASELINES)}, got {ig_baseline!r}"
    if not float(stdevs) >= 0:
        problems["--stdevs"] = f"must be ≥ 0, got {stdevs}"
    if problems:
        raise OptionError(problems)
    if network is not None and any(m in CAM_METHODS for m in methods):
        layer = check_layer(network, layer)
        if image_size is not None:  # forward and backward once: a bad layer fails here, not at the first batch
            check_cam_layer(network, layer, int(image_size))
    return methods, target, layer


def run_explanations(evaluator: Engine, output_dir: str | os.PathLike) -> None:
    """``evaluator.run()`` (explain.json's ``run``), removing ``output_dir`` if the run fails while it is still empty.

    explain.json's ``output_dir`` is a new ``RUN/explain-<time>/`` that :func:`mednet.runs.new_run_dir` creates when
    the config is resolved (creating it is what reserves the name). A run that fails before its first figure (an
    unreadable image in the first batch, Ctrl-C) would otherwise leave an empty folder next to the good ones. A
    folder holding anything (figures of earlier batches) is kept: outputs are never deleted.
    """
    try:
        evaluator.run()
    except BaseException:
        folder = Path(output_dir)
        try:
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()  # fails (and is left) if a file appeared meanwhile
        except OSError as e:
            logger.warning("%s: could not remove the empty explanation folder (%s)", folder, e)
        raise


class ExplanationWriter:
    """Attribution maps, one figure per image, ``explanations.csv`` and ``timing.csv`` (see the module docstring).

    Args:
        output_dir: the explanation folder (created if missing, when the first figure is written).
        class_names: the run's classes, in output order.
        network: the network to explain (default: the engine's ``network``).
        methods: any of :data:`mednet.explain.attribution.EXPLAIN_METHODS`.
        target_class: a class name (or index) to explain in every image; None = each image's predicted class.
        layer: Grad-CAM target layer; None = :func:`mednet.explain.attribution.default_target_layer`.
        ig_baseline, n_steps, n_samples, stdevs, internal_batch_size, seed: see
            :func:`mednet.explain.attribution.attribution_maps`.
        max_images: stop the evaluator after this many images.
        temperature: the run's fitted temperature (probabilities are ``softmax(logits / T)``).
        normalization: the run's ``{"mean", "std"}`` (black baseline, images shown un-normalised).
        overwrite: replace existing outputs (refused otherwise, before any image is read).

    Raises:
        OptionError: unknown method, baseline, target class or layer; Grad-CAM on an ensemble; counts below 1.
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str],
                 network: torch.nn.Module | None = None,
                 methods: Sequence[str] = EXPLAIN_METHODS, target_class: str | int | None = None,
                 layer: str | None = None, ig_baseline: str = "black", n_steps: int = 50, n_samples: int = 20,
                 stdevs: float = 0.1, internal_batch_size: int = 16, max_images: int = 16, temperature: float = 1.0,
                 normalization: Mapping[str, Sequence[float]] | None = None, seed: int = 0,
                 overwrite: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = tuple(class_names)
        self.network = network
        self.methods, self.target, self.layer = check_explain_options(
            network, self.class_names, methods, target_class, layer, ig_baseline, n_steps, n_samples, stdevs,
            internal_batch_size, max_images)
        self.options = {"ig_baseline": ig_baseline, "n_steps": int(n_steps), "n_samples": int(n_samples),
                        "stdevs": float(stdevs), "internal_batch_size": int(internal_batch_size)}
        self.max_images = int(max_images)
        self.temperature = float(temperature)
        self.normalization = None if normalization is None else {k: list(v) for k, v in normalization.items()}
        self.seed = int(seed)
        self.overwrite = overwrite
        refuse_existing(self.output_dir / "explanations.csv", self.output_dir / "timing.csv", overwrite=overwrite)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows: list[dict] = []
        self.seconds: dict[str, float] = {m: 0.0 for m in self.methods}
        self.resolutions: dict[str, str] | None = None
        self.device = ""
        self.stems: set[str] = set()
        ids = _planned_ids(getattr(engine.state, "dataloader", None))
        if ids is not None:  # every figure of the run, before any image is read (same names as _update gives)
            used: set[str] = set()
            refuse_existing(*(self.output_dir / f"{_unique_stem(i, used)}.png" for i in ids[: self.max_images]),
                            overwrite=self.overwrite)

    def _network(self, engine: Engine) -> torch.nn.Module:
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if network is None:
            raise TypeError("ExplanationWriter needs a network (argument, or the engine's network)")
        if self.network is None and any(m in CAM_METHODS for m in self.methods):
            self.layer = check_layer(network, self.layer)
        self.network = network
        return network

    def _update(self, engine: Engine) -> None:
        done = len(self.rows)
        if done >= self.max_images:
            engine.terminate()
            return
        out, batch = engine.state.output, engine.state.batch
        if isinstance(out, list):
            raise TypeError("the explanation writer needs the evaluator's batched output: set decollate=False")
        network = self._network(engine)
        images = torch.as_tensor(batch["image"]).as_subclass(torch.Tensor)
        n = min(images.shape[0], self.max_images - done)
        images = images[:n]
        logits = torch.as_tensor(out["pred"]).as_subclass(torch.Tensor).detach().float().cpu()[:n]
        probs = (logits / self.temperature).softmax(1)
        pred = probs.argmax(1)
        targets = pred.clone() if self.target is None else torch.full_like(pred, self.target)
        labels = batch.get("label")
        labels = (torch.as_tensor(labels).reshape(-1)[:n].long().tolist() if labels is not None else [-1] * n)
        ids = list(batch.get("image_id", [str(done + i) for i in range(n)]))[:n]
        paths = list(batch.get("path", [""] * n))[:n]
        size = int(images.shape[-1])
        if self.resolutions is None:
            self.resolutions = {m: "{}x{}".format(*map_resolution(network, m, size, self.layer)) for m in self.methods}
        with torch.enable_grad():
            maps, seconds = attribution_maps_timed(network, images, self.methods, targets, self.layer,
                                                   seed=self.seed + done, normalization=self.normalization,
                                                   **self.options)
        self.device = str(images.device if not list(network.parameters()) else next(network.parameters()).device)
        for m, s in seconds.items():
            self.seconds[m] += s * n
        raw = denormalize(images, self.normalization)
        pngs = [self.output_dir / f"{_unique_stem(ids[i], self.stems)}.png" for i in range(n)]
        refuse_existing(*pngs, overwrite=self.overwrite)  # all of the batch before its first figure
        # created only now, with the first figure's maps computed: a run failing before leaves no empty folder
        self.output_dir.mkdir(parents=True, exist_ok=True)
        from mednet.reports.explanation_figure import plot_explanation

        for i in range(n):
            name = self.class_names[int(pred[i])]
            title = f"{ids[i]}: pred {name} p={float(probs[i, pred[i]]):.2f}"
            label = labels[i]
            if 0 <= label < len(self.class_names):
                title += f", true {self.class_names[label]}"
            if int(targets[i]) != int(pred[i]):
                title += f"; maps for {self.class_names[int(targets[i])]}"
            png = pngs[i]
            plot_explanation(raw[i], {m: maps[m][i].numpy() for m in self.methods}, png, title,
                             resolutions={m: self.resolutions[m].replace("x", "×") for m in self.methods})
            self.rows.append({
                "image_id": ids[i], "path": paths[i], "png": png.name, "prediction": name,
                "probability": round(float(probs[i, pred[i]]), 6),
                "label": self.class_names[label] if 0 <= label < len(self.class_names) else "",
                "target": self.class_names[int(targets[i])],
                "target_probability": round(float(probs[i, targets[i]]), 6), "temperature": self.temperature,
                **{f"resolution_{m}": self.resolutions[m] for m in self.methods}})
        if len(self.rows) >= self.max_images:
            engine.terminate()

    def _write(self, engine: Engine) -> None:
        from mednet.reports.tables import write_csv

        n = len(self.rows)
        write_csv(pd.DataFrame(self.rows), self.output_dir / "explanations.csv")
        timing = pd.DataFrame([{"method": m, "n_images": n, "seconds_per_image": round(self.seconds[m] / max(n, 1), 6),
                                "seconds_total": round(self.seconds[m], 4), "device": self.device}
                               for m in self.methods])
        write_csv(timing, self.output_dir / "timing.csv")
        engine.state.explanations = pd.DataFrame(self.rows)
        logger.info("%d images explained (%s) in %s; seconds per image: %s", n, ", ".join(self.methods),
                    self.output_dir, ", ".join(f"{m} {self.seconds[m] / max(n, 1):.3f}" for m in self.methods))
