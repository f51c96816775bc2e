"""The dermoscopy web demo: upload an image, see the calibrated top-3, a referral warning and an explanation.

    python -m mednet.app.web --run RUN_DIR [--port 7860] [--host 127.0.0.1] [--auth USERS_FILE]
        [--feedback_dir RUN/feedback] [--cache_dir RUN/web_cache] [--max_file_size 10mb] [--device cpu]

``--run`` is a finished classification training run folder (``model.pt``, ``settings.json``, ``finished.json``; an
ensemble run works too), its ``model.pt``, or a serving file written by a promotion
(:func:`mednet.app.retrain.resolve_serving`). The page (Gradio) takes a dermoscopic photograph (JPEG, PNG) or a
DICOM dermoscopy file and shows

* the top-3 classes with **calibrated** probabilities, ``softmax(logits / T)`` with the run's temperature
  (:func:`mednet.calibration.read_calibration`), the input preprocessed exactly as the run's evaluation does
  (:func:`mednet.data.dermoscopy.load_rgb`, centre crop and resize, the training split's normalisation);
* **"Uncertain — refer"** when the calibrated confidence is below the run's referral threshold (chosen on the
  validation split so that the accepted cases reach the target accuracy with the recorded confidence, e.g. 95 % at
  90 %: :func:`mednet.calibration.referral_threshold`; the page says both); without a ``calibration.json`` the plain
  softmax is shown and nothing is referred, and the page says so;
* the Grad-CAM overlay (Grad-CAM++, Integrated Gradients or GradientSHAP on request, :mod:`mednet.explain`);
* a disclaimer: the tool supports a clinician and does not replace one;
* "flag as wrong": the correct class and an optional comment are recorded with the image's pixels
  (:func:`mednet.data.feedback.append_feedback`, default folder ``RUN/feedback``), for a later gated retraining;
  a new upload clears both, and a "correct" class equal to the prediction is refused.

**Access.** ``--auth USERS_FILE`` asks for a login (a file of ``user:password`` lines, :func:`read_auth_file`;
passwords never go on the command line, where ``ps`` shows them). The flagged rows feed retraining, so a ``--host``
other than a loopback address is refused without ``--auth``. The API page is hidden and the events are not offered
to Gradio's client libraries (the page itself still calls them).

**Concurrency.** Gradio runs different events (one tab's upload, another's change of explanation) at the same
time; the explanations switch the network's flags and hook its layers, so every use of the network holds the
model's lock (:class:`WebModel`) and the model's events share one Gradio concurrency group.

**Privacy.** The server listens on 127.0.0.1 unless ``--host`` says otherwise and never creates a share link;
Gradio's usage analytics are off (``GRADIO_ANALYTICS_ENABLED=False`` before Gradio is imported, and
``analytics_enabled=False``); Gradio 6's run history (every call, images included, kept in the browser), its
``/monitoring`` endpoint, the image "share" button (which posts to Hugging Face) and the footer link to gradio.app
are switched off; the theme names system fonts only, so the page loads no web font, and the test
(``tests/test_web.py``) checks in a real browser that the page requests nothing from outside 127.0.0.1. Gradio keeps
uploads on disk in its cache and serves (and accepts as input) any file there, so the demo gives it a fresh private
folder ``mednet-web-*`` inside ``--cache_dir`` (default ``RUN/web_cache``; a folder that is or holds the run or the
feedback folder is refused), removed when the server stops (Ctrl-C, or ``SIGTERM``: ``kill``, ``systemctl stop``,
``docker stop``). Each server holds a lock (``flock``) on ``mednet-web-*.lock`` next to its folder for its whole
life, so a folder left by a server killed outright (``SIGKILL``, a crash) is removed by the next start in the same
cache folder. Gradio's console banner (with its "set share=True" hint) is off: the demo logs one line naming its
address once the server listens. The demo deletes each upload as soon as it is decoded
(a DICOM file holds patient attributes; its pixels only are kept, in the browser session's memory), and Gradio
deletes the images it served after an hour. Only decoded pixels are shown, explained or stored: no DICOM
attribute is read (:func:`mednet.data.dermoscopy.read_dermoscopy_dicom` reads the pixel module only), the uploaded
file's name is never logged, and a DICOM upload is recorded in the feedback as ``source_name = dicom``.

Files that are not images, are corrupt, or are larger than ``--max_file_size`` get a message on the page and the
previous image is forgotten (an oversized file never reaches the server: the page's script reports it to a hidden
event that clears the session's image, correction and comment). A missing or unusable run, a run whose training did
not finish (no ``finished.json``: no calibration, no referral threshold yet; the message names the run's own
config), a ``--port`` in use or reserved, a ``--host`` that is not an address of this machine or does not resolve,
and a ``--feedback_dir`` that cannot be created or written (checked before serving, not at the first flag) stop the
start with one ``mednet error:`` line (exit status 2), checked in that order: a refused start leaves no new folder.

:func:`build_app` returns the :class:`gradio.Blocks` (its :class:`WebModel` as ``app.mednet_model``) and
:func:`launch_app` serves it with the settings above; :meth:`WebModel.predict` is the page's prediction as a plain
function (no browser, no Gradio).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import ipaddress
import logging
import math
import os
import re
import shutil
import shlex
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

# before anything imports gradio: no usage analytics, no Hugging Face telemetry
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mednet.data.dermoscopy import MAX_UPSCALE, check_image_size, is_dicom_file  # noqa: E402
from mednet.errors import DataError, OptionError  # noqa: E402

__all__ = [
    "DISCLAIMER",
    "EXPLANATIONS",
    "REFER_MESSAGE",
    "WebModel",
    "WebDemo",
    "load_web_model",
    "build_app",
    "check_host",
    "is_loopback",
    "launch_app",
    "oversized_script",
    "parse_file_size",
    "read_auth_file",
    "referral_basis",
    "web",
]

logger = logging.getLogger("mednet")

#: shown at the top of the page
DISCLAIMER = ("**Decision support only.** This research tool supports and does not replace a clinician: its output is "
              "not a diagnosis. Every lesion of concern must be examined by a qualified clinician, whatever the "
              "tool shows.")
#: the heading shown when the calibrated confidence is below the run's referral threshold
REFER_MESSAGE = "Uncertain — refer"
#: dropdown label → method name of :mod:`mednet.explain.attribution`
EXPLANATIONS: dict[str, str] = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcampp",
                                "Integrated Gradients": "integrated_gradients", "GradientSHAP": "gradient_shap"}
#: the HAM10000 / ISIC 2018 diagnoses, spelled out on the page
CLASS_DESCRIPTIONS: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma", "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion", "df": "dermatofibroma", "mel": "melanoma", "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}
#: system font stacks: no web font is ever fetched (Gradio's default theme loads fonts from outside)
SYSTEM_FONTS: tuple[str, ...] = ("system-ui", "-apple-system", "Segoe UI", "Roboto", "Noto Sans", "Liberation Sans",
                                 "Arial", "sans-serif")
MONO_FONTS: tuple[str, ...] = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono",
                               "DejaVu Sans Mono", "monospace")
#: side (px) of the image the explanation is drawn on: the model's square crop, enlarged for the screen
DISPLAY_SIZE = 384
DEFAULT_MAX_FILE_SIZE = "10mb"
#: a browser session's decoded image is dropped after this many seconds (and when its tab closes)
STATE_TTL_S = 3600
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def parse_file_size(value: str | int | float, option: str = "--max_file_size") -> int:
    """``"10mb"``, ``"500kb"``, ``2048`` → bytes (binary units, as Gradio counts them).

    Raises:
        OptionError: not a positive size.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = float(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise OptionError({option: f"expected a size such as 10mb, 500kb or a number of bytes, got {value!r}"})
        size = float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
    if not math.isfinite(size) or size < 1:
        raise OptionError({option: f"must be a positive size, got {value!r}"})
    return int(size)


def _describe(name: str) -> str:
    description = CLASS_DESCRIPTIONS.get(name)
    return f"**{name}** — {description}" if description else f"**{name}**"


# ---------------------------------------------------------------------------------------------------- the model
def _serialised(method: Callable) -> Callable:
    """Run ``method`` holding the model's lock: the explanations switch the shared network's training and gradient
    flags and hook its layers, so two requests at once would read each other's activations (or miss a hook)."""
    @functools.wraps(method)
    def locked(self: WebModel, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return locked


#: the configs of a distillation run (distill.json overrides train.json)
_DISTILL_CONFIGS = ("['bundles/dermoscopy_classification/configs/train.json',"
                    "'bundles/dermoscopy_classification/configs/distill.json']")


def _how_to_finish(run_dir: Path) -> str:
    """How to finish the unfinished run ``run_dir``, from what its ``settings.json`` records (training writes it
    before the first epoch): a distilled student (``"distillation"``: its teachers) is resumed with train.json and
    distill.json, a train.json run with train.json; an ensemble (``"model": "ensemble"``; ensemble.json writes its
    settings just before ``finished.json`` and has no ``--run_dir``) is made again. Without a readable record the
    config is not known, and the advice stays generic."""
    from mednet.io import read_json_object
    from mednet.runs import SETTINGS_FILE

    try:
        settings = read_json_object(run_dir / SETTINGS_FILE) or {}
    except (DataError, OSError, ValueError):
        settings = {}
    quoted = shlex.quote(str(run_dir))  # a path with spaces stays one argument when the command is pasted
    if settings.get("model") == "ensemble":
        return ("build the ensemble again (python -m monai.bundle run --config_file "
                "bundles/dermoscopy_classification/configs/ensemble.json --members …: it makes a new run folder)")
    if settings.get("distillation"):
        return (f'finish it with python -m monai.bundle run --config_file "{_DISTILL_CONFIGS}" --run_dir {quoted} '
                "and the options it was started with (its --teachers too)")
    if settings.get("model"):
        return ("finish it with python -m monai.bundle run --config_file "
                f"bundles/dermoscopy_classification/configs/train.json --run_dir {quoted} and the options it was "
                "started with")
    return f"finish it with the command that started it and --run_dir {quoted}"


def _check_finished(run_dir: Path) -> None:
    """Refuse a run whose training did not finish (no ``finished.json``, the marker every training, ensemble and
    distillation run writes last: :func:`mednet.runs.mark_finished`). Its ``model.pt`` is the best epoch *so far*
    and it has no calibration yet — no temperature, no referral threshold — so a clinician would see uncalibrated
    probabilities and no "refer" warning from a model that may still change.

    Raises:
        DataError: naming the run, with the command that finishes it (:func:`_how_to_finish`: the run's own
            config, as its ``settings.json`` tells).
    """
    from mednet.runs import FINISHED_FILE, read_finished

    if read_finished(run_dir) is None:  # also DataError when finished.json is unreadable
        raise DataError(run_dir, f"training did not finish (no {FINISHED_FILE}): {_how_to_finish(run_dir)}, or serve "
                                 "a finished run")


class WebModel:
    """A run's classifier, calibration and preprocessing: what the page computes, without the page.

    Args:
        run: a run folder, a ``model.pt`` or a serving file (:func:`mednet.app.retrain.resolve_serving`).
        device: where the network runs.

    Raises:
        DataError: the run is missing, did not finish training (no ``finished.json``: :func:`_check_finished`), is
            not a classification run, its weights do not fit its settings, or its calibration is unreadable
            (:func:`mednet.networks.trained.load_trained_classifier`, :func:`mednet.calibration.read_calibration`).

    The methods that run the network hold :attr:`lock` (re-entrant), so one model can serve several threads.
    """

    def __init__(self, run: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        from mednet.app.retrain import resolve_serving
        from mednet.calibration.run_calibration import read_calibration
        from mednet.data.lesion_images import image_transform
        from mednet.networks.trained import load_trained_classifier

        #: held by every use of the network (Gradio runs the page's events in parallel threads)
        self.lock = threading.RLock()
        self.run_dir = resolve_serving(run).resolve()
        _check_finished(self.run_dir)
        self.device = torch.device(device)
        self.classifier = load_trained_classifier(self.run_dir, self.device)
        calibration = read_calibration(self.classifier.run_dir)
        self.temperature = float(calibration["temperature"])
        self.threshold = calibration["referral_threshold"]
        #: the run's recorded referral fit (target accuracy, confidence level, …; ``{}`` when not recorded)
        self.referral = dict(calibration.get("referral") or {})
        self.calibration_file = calibration["file"]
        norm = self.classifier.normalization
        # evaluation's transform, exactly: (3, S, S) uint8 → float in [0, 1] → normalised by the training split
        self.transform = image_transform(self.image_size, norm["mean"], norm["std"], train=False)

    @property
    def is_ensemble(self) -> bool:
        from mednet.networks.ensemble import EnsembleClassifier

        return isinstance(self.network, EnsembleClassifier)

    @property
    def methods(self) -> tuple[str, ...]:
        """The explanations this run offers: Grad-CAM(++) needs one network's last layer, so an ensemble offers
        only the input-gradient methods (Integrated Gradients, GradientSHAP)."""
        cam = ("gradcam", "gradcampp")
        return tuple(m for m in EXPLANATIONS.values() if not (self.is_ensemble and m in cam))

    @property
    def default_method(self) -> str:
        return self.methods[0]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classifier.class_names

    @property
    def image_size(self) -> int:
        return self.classifier.image_size

    @property
    def network(self) -> torch.nn.Module:
        return self.classifier.network

    # ------------------------------------------------------------------------------------------------ steps
    def load(self, image_path: str | os.PathLike) -> np.ndarray:
        """The upload decoded to ``(H, W, 3)`` uint8 RGB (JPEG, PNG, DICOM…): :func:`load_rgb`.

        Raises:
            DataError: not an image, corrupt, several frames, or too small for the model's input.
        """
        from mednet.data.dermoscopy import load_rgb

        rgb = load_rgb(image_path)
        self.check_size(rgb, image_path)
        return rgb

    def check_size(self, rgb: np.ndarray, where: str | os.PathLike | None = None) -> None:
        check_image_size(rgb, self.image_size, where, "this model's input size")

    def model_input(self, rgb: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """``(S, S, 3)`` uint8 crop the model sees and its normalised ``(1, 3, S, S)`` tensor, as in evaluation
        (:class:`mednet.data.lesion_images.LesionImageDataset`: centre crop to a square, resize, normalise)."""
        from mednet.data.dermoscopy import resize_center_crop

        crop = rgb if rgb.shape[:2] == (self.image_size, self.image_size) else resize_center_crop(rgb, self.image_size)
        tensor = torch.from_numpy(np.array(crop, copy=True)).permute(2, 0, 1)
        return crop, self.transform(tensor).unsqueeze(0).to(self.device)

    def display_image(self, rgb: np.ndarray) -> np.ndarray:
        """The region the model sees (the centred square), at :data:`DISPLAY_SIZE` px for the screen."""
        from mednet.data.dermoscopy import resize_center_crop

        return resize_center_crop(rgb, DISPLAY_SIZE)

    @_serialised
    def explain(self, x: torch.Tensor, target: int, method: str = "auto") -> np.ndarray:
        """``(S, S)`` map in [0, 1] of ``method`` (:data:`EXPLANATIONS`; ``"auto"`` = :attr:`default_method`) for
        class ``target`` of input ``x``."""
        from mednet.explain.attribution import attribution_maps

        method = self.default_method if method == "auto" else method
        if method not in self.methods:
            raise OptionError({"method": f"explanation {method!r} is not available for this run; choose one of "
                                         f"{', '.join(self.methods)}"})
        # the run's normalisation places Integrated Gradients' black baseline at pixel value 0
        maps = attribution_maps(self.network, x, methods=(method,), targets=[int(target)],
                                normalization=self.classifier.normalization)
        heatmap = maps[method][0].detach().cpu().numpy().astype(np.float32)
        return np.nan_to_num(heatmap, nan=0.0).clip(0.0, 1.0)

    def overlay(self, rgb: np.ndarray, x: torch.Tensor, target: int, method: str = "auto") -> np.ndarray:
        """The explanation of ``target`` drawn over the displayed crop: ``(DISPLAY_SIZE, DISPLAY_SIZE, 3)`` uint8."""
        from mednet.reports.explanation_figure import overlay_heatmap

        return overlay_heatmap(self.display_image(rgb), self.explain(x, target, method))

    # ------------------------------------------------------------------------------------------------ predict
    @_serialised
    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (K,), softmax(logits / T) (K,))`` of one input ``(1, 3, S, S)``, float64."""
        logits = self.network(x).double().cpu()[0]
        return logits.numpy(), torch.softmax(logits / self.temperature, dim=0).numpy()

    @_serialised
    def predict_array(self, rgb: np.ndarray, method: str | None = "auto", top_k: int = 3) -> dict:
        """:meth:`predict` for decoded ``(H, W, 3)`` uint8 RGB pixels (holding :attr:`lock` from the prediction to
        the explanation)."""
        self.check_size(rgb)
        method = self.default_method if method == "auto" else method
        _, x = self.model_input(rgb)
        logits, probs = self.probabilities(x)
        order = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
        best = int(order[0])
        confidence = float(probs[best])
        refer = self.threshold is not None and confidence < self.threshold
        result = {
            "classes": [self.class_names[i] for i in order],
            "probabilities": [float(probs[i]) for i in order],
            "all_probabilities": {name: float(p) for name, p in zip(self.class_names, probs)},
            "logits": logits.tolist(),
            "predicted": self.class_names[best],
            "confidence": confidence,
            "refer": bool(refer),
            "referral_threshold": self.threshold,
            "temperature": self.temperature,
            "method": method,
            "overlay": None,
        }
        if method:
            result["overlay"] = self.overlay(rgb, x, best, method)
        return result

    def predict(self, image_path: str | os.PathLike, method: str | None = "auto", top_k: int = 3) -> dict:
        """The page's prediction for an image file (JPEG, PNG, DICOM…).

        Returns:
            ``classes`` and ``probabilities`` (the top ``top_k``, most probable first, calibrated:
            ``softmax(logits / T)``), ``all_probabilities`` ``{class: p}``, ``logits``, ``predicted``,
            ``confidence`` (the top probability), ``refer`` (confidence below the run's referral threshold; False
            without a threshold), ``referral_threshold``, ``temperature``, ``method`` and ``overlay`` (the
            explanation of the predicted class over the model's crop, ``(DISPLAY_SIZE, DISPLAY_SIZE, 3)`` uint8;
            None when ``method`` is None). ``method``: one of :attr:`methods`, ``"auto"`` (Grad-CAM; Integrated
            Gradients for an ensemble) or None.

        Raises:
            DataError: the file is not a readable image or is too small.
        """
        return self.predict_array(self.load(image_path), method, top_k)


def load_web_model(run: str | os.PathLike, device: str | torch.device = "cpu") -> WebModel:
    """:class:`WebModel` of ``run`` (a run folder or a serving file)."""
    return WebModel(run, device)


# ---------------------------------------------------------------------------------------------------- page logic
def referral_basis(referral: Mapping[str, object]) -> str:
    """How a referral threshold was chosen, in words: ``"chosen on the validation split: accepted cases ≥ 95 %
    accurate at 90 % confidence"``; the target and the level only when ``referral`` (calibration.json's record)
    holds them as numbers (a run fitted before they were recorded says less, never a default it did not use)."""
    def number(key: str) -> float | None:
        value = referral.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    target, level = number("target_accuracy"), number("confidence_level")
    if target is not None and level is not None:
        return (f"chosen on the validation split: accepted cases ≥ {100 * target:g} % accurate at "
                f"{100 * level:g} % confidence")
    if target is not None:
        return f"chosen on the validation split for {100 * target:g} % accuracy"
    return "chosen on the validation split"


def _result_markdown(model: WebModel, result: dict) -> str:
    lines = []
    if result["refer"]:
        lines += [f"## ⚠ {REFER_MESSAGE}",
                  f"The calibrated confidence ({100 * result['confidence']:.1f} %) is below this model's referral "
                  f"threshold ({100 * result['referral_threshold']:.1f} %, {referral_basis(model.referral)}). Do not "
                  "rely on this prediction: refer the case to a dermatologist.", ""]
    lines += ["### Top-3 classes (calibrated probabilities)", "", "| | class | probability |", "|---|---|---|"]
    for rank, (name, p) in enumerate(zip(result["classes"], result["probabilities"]), start=1):
        lines.append(f"| {rank} | {_describe(name)} | {100 * p:.1f} % |")
    lines.append("")
    if result["referral_threshold"] is None:
        lines.append("This run has no calibration (`calibration.json`): probabilities are the plain softmax and no "
                     "case is referred.")
    elif not result["refer"]:
        lines.append(f"Confidence {100 * result['confidence']:.1f} % is at or above the referral threshold "
                     f"{100 * result['referral_threshold']:.1f} % (temperature {result['temperature']:.2f}).")
    return "\n".join(lines)


_UPLOAD_HINT = "Upload a dermoscopic photograph (JPEG or PNG) or a DICOM dermoscopy file."


def _user_problem(error: DataError, path: str | os.PathLike | None) -> str:
    """The problem of a :class:`DataError`, without the uploaded file's path or name (a DICOM file's name may hold
    patient identifiers; Pillow and the OS repeat the path in their messages)."""
    text = error.problem
    if path:
        for part in sorted({str(path), os.fspath(Path(path).resolve()), Path(path).name}, key=len, reverse=True):
            if part:
                text = text.replace(part, "the uploaded file")
    return text


class WebDemo:
    """The page's event handlers, callable without a browser.

    Args:
        model: the served :class:`WebModel`.
        feedback_dir: where "flag as wrong" appends (default ``RUN/feedback``).
        upload_dir: Gradio's upload cache; an upload inside it is deleted once decoded.
        max_file_size: the largest upload in bytes (None: no limit). Gradio refuses larger files before they reach
            the server; this check stands in for it where it did not (a direct call, an older Gradio).
    """

    def __init__(self, model: WebModel, feedback_dir: str | os.PathLike | None = None,
                 upload_dir: str | os.PathLike | None = None, max_file_size: int | None = None) -> None:
        self.model = model
        self.feedback_dir = Path(feedback_dir) if feedback_dir else model.run_dir / "feedback"
        self.upload_dir = Path(upload_dir).resolve() if upload_dir else None
        self.max_file_size = max_file_size

    def _is_too_large(self, path: Path) -> bool:
        try:
            return self.max_file_size is not None and path.stat().st_size > self.max_file_size
        except OSError:  # missing or unreadable: the decoder says so
            return False

    def _too_large(self) -> str:
        return (f"### Cannot analyse this file\nIt is larger than the limit of {_human_size(self.max_file_size or 0)}."
                f"\n\n{_UPLOAD_HINT}")

    def _forget_upload(self, path: Path) -> None:
        """Delete an upload inside the upload cache (and its folder, if now empty); never any other file."""
        if self.upload_dir is None:
            return
        try:
            resolved = path.resolve()
            if self.upload_dir not in resolved.parents:
                return
            resolved.unlink(missing_ok=True)
            folder = resolved.parent
            if folder != self.upload_dir and not any(folder.iterdir()):
                folder.rmdir()
        except OSError as e:  # never fail a prediction on it, never log the name
            logger.warning("could not delete an upload from the cache (%s)", type(e).__name__)

    def on_upload(self, file: str | os.PathLike | None, method_label: str | None = None) -> tuple:
        """An upload → ``(result markdown, overlay or None, session state or None, feedback status)``.

        A file that cannot be analysed gives a message and state None, whatever the decoder raised: the page's
        state is replaced, so a later "flag as wrong" cannot record the previous image under this upload."""
        if not file:
            return "", None, None, ""
        path = Path(file)
        try:
            if self._is_too_large(path):  # not decoded at all; deleted all the same
                return self._too_large(), None, None, ""
            is_dicom = is_dicom_file(path)
            rgb = self.model.load(path)
        except DataError as e:
            return (f"### Cannot analyse this file\n{_user_problem(e, path)}.\n\n{_UPLOAD_HINT}", None, None, "")
        except Exception as e:  # a decoder's unexpected error: a message, never a traceback nor the upload's name
            if os.environ.get("MEDNET_TRACEBACK", "") not in ("", "0"):
                raise
            logger.error("an upload could not be decoded (%s); set MEDNET_TRACEBACK=1 to see the traceback",
                         type(e).__name__)
            return f"### Cannot analyse this file\nIt could not be decoded.\n\n{_UPLOAD_HINT}", None, None, ""
        finally:
            self._forget_upload(path)
        state = {"image": rgb, "is_dicom": is_dicom, "source_name": "" if is_dicom else path.name}
        return self._analyse(state, method_label)

    def on_new_upload(self, file: str | os.PathLike | None, method_label: str | None = None) -> tuple:
        """The page's upload event: :meth:`on_upload`'s four outputs, then ``(upload box, correct class, comment)``
        reset to ``(None, None, "")``.

        The upload box is emptied (the file is gone from the cache; its name, which for a DICOM file may name the
        patient, goes too), and the correction and comment chosen for the previous image are cleared, so that one
        click on "flag as wrong" cannot record them for this one."""
        return (*self.on_upload(file, method_label), None, None, "")

    def on_oversized(self) -> tuple:
        """The page's hidden "oversized upload" event (:func:`build_app`): the browser refused a file larger than the
        limit, so no upload event came; the previous image, its prediction, correction and comment are cleared as
        a new upload would (:meth:`on_new_upload`'s seven outputs), so that "flag as wrong" cannot record the
        previous image under a correction meant for the refused one."""
        return self._too_large(), None, None, "", None, None, ""

    def on_method(self, state: dict | None, method_label: str) -> tuple:
        """Another explanation method for the image already shown."""
        if not state:
            return "", None, None, ""
        return self._analyse(state, method_label)

    def _analyse(self, state: dict, method_label: str) -> tuple:
        method = EXPLANATIONS.get(method_label or "", "auto")
        method = method if method in self.model.methods else "auto"
        try:
            result = self.model.predict_array(state["image"], method)
        except DataError as e:
            return f"### Cannot analyse this image\n{e.problem}.", None, None, ""
        except Exception as e:  # a message on the page, never a traceback; the name of the upload is not logged
            if os.environ.get("MEDNET_TRACEBACK", "") not in ("", "0"):
                raise
            logger.error("prediction failed (%s); set MEDNET_TRACEBACK=1 to see the traceback", type(e).__name__)
            return "### Cannot analyse this image\nThe model failed on it (an internal error).", None, None, ""
        state = {**state, "predicted": result["predicted"], "probability": result["confidence"]}
        logger.info("prediction: %s (%.3f)%s, %s", result["predicted"], result["confidence"],
                    " — refer" if result["refer"] else "", method)
        return _result_markdown(self.model, result), result["overlay"], state, ""

    def on_flag(self, state: dict | None, corrected: str | None, comment: str | None = "") -> str:
        """"Flag as wrong" → the confirmation (or what is missing) shown under the button."""
        from mednet.data.feedback import append_feedback

        if not state or "predicted" not in state:
            return "⚠ Upload an image first: there is no prediction to flag."
        if not corrected:
            return "⚠ Choose the correct class first."
        if corrected == state["predicted"]:  # nothing to correct: such a row would teach the model nothing
            return (f"⚠ Not recorded: the model predicted **{corrected}** too. Choose the class that is right, or "
                    "leave the prediction unflagged.")
        try:
            row = append_feedback(self.feedback_dir, state["image"], model_run=str(self.model.run_dir),
                                  predicted=state["predicted"], probability=state["probability"],
                                  corrected=corrected, comment=comment or "", source_name=state["source_name"],
                                  is_dicom=state["is_dicom"], class_names=self.model.class_names)
        except DataError as e:  # the problem only: the message's path is the server's feedback folder
            return f"⚠ Not recorded: {e.problem}"
        except OptionError as e:  # "comment: too long (…)": names the field, no path
            return f"⚠ Not recorded: {e}"
        except Exception as e:  # e.g. filelock.Timeout: another writer holds the feedback file
            logger.error("feedback not recorded (%s: %s)", type(e).__name__, e)
            return f"⚠ Not recorded ({type(e).__name__}); please try again."
        return (f"✓ Thank you — recorded: predicted **{row['predicted']}**, corrected to **{row['corrected']}** "
                f"(image {row['image_sha256'][:12]}…).")


# ---------------------------------------------------------------------------------------------------- the page
def _theme():
    import gradio as gr

    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))


def _no_share_button(gr) -> dict:
    """Image arguments without the "share" button (it posts the image to Hugging Face): Gradio ≥ 6 ``buttons``,
    Gradio 5 ``show_share_button``."""
    params = inspect.signature(gr.Image.__init__).parameters
    if "buttons" in params:
        return {"buttons": ["download", "fullscreen"]}
    if "show_share_button" in params:
        return {"show_share_button": False}
    return {}


def _theme_at_launch() -> bool:
    """Gradio ≥ 6 takes the theme (and the page's script) in ``launch()``; Gradio 5 in ``Blocks()``."""
    import gradio as gr

    return "theme" in inspect.signature(gr.Blocks.launch).parameters


def _event_options(listener: Callable, **wanted) -> dict:
    """The ``wanted`` options this Gradio's event ``listener`` takes, and the event kept out of the API page and the
    client libraries (Gradio ≥ 6 ``api_visibility="private"``, Gradio 5 ``show_api=False``)."""
    params = inspect.signature(listener).parameters
    options = {name: value for name, value in wanted.items() if name in params}
    if "api_visibility" in params:
        options["api_visibility"] = "private"
    elif "show_api" in params:
        options["show_api"] = False
    return options


def _hidden(gr) -> bool | str:
    """``visible`` for a component the page's script clicks: rendered but not shown (Gradio 6 ``"hidden"``; Gradio 5
    renders an invisible component all the same)."""
    annotation = str(inspect.signature(gr.Button.__init__).parameters["visible"].annotation)
    return "hidden" if "hidden" in annotation else False


#: the Gradio concurrency group of every event that runs the network: one at a time, in order of arrival
MODEL_EVENTS = "mednet-model"


def oversized_script(max_bytes: int) -> str:
    """The page's script: a file chosen for (or dropped on) the upload box that is larger than ``max_bytes`` clicks
    the hidden ``#oversized`` button. Gradio refuses such a file in the browser and sends the server nothing, so
    without this the previous image would stay in the session, ready to be flagged under the new correction."""
    return ("() => {\n"
            f"  const limit = {int(max_bytes)};\n"
            "  const tooLarge = (files) => Array.from(files || []).some((f) => f.size > limit);\n"
            "  const report = () => { const b = document.querySelector('#oversized'); if (b) b.click(); };\n"
            "  const inUpload = (t) => t instanceof Element && t.closest('#upload') !== null;\n"
            "  document.addEventListener('change', (e) => {\n"
            "    if (inUpload(e.target) && e.target.type === 'file' && tooLarge(e.target.files)) report();\n"
            "  }, true);\n"
            "  document.addEventListener('drop', (e) => {\n"
            "    if (inUpload(e.target) && e.dataTransfer && tooLarge(e.dataTransfer.files)) report();\n"
            "  }, true);\n"
            "}\n")


def _check_cache_dir(cache_dir: Path, run_dir: Path, feedback_dir: Path) -> Path:
    """``cache_dir`` resolved, unless it is or contains the run folder or the feedback folder (Gradio serves every
    file under it, and the demo deletes the uploads it finds there).

    Raises:
        OptionError: naming ``--cache_dir``.
    """
    root = cache_dir.resolve()
    for what, folder in (("run folder", run_dir.resolve()), ("feedback folder", feedback_dir.resolve())):
        if root == folder or root in folder.parents:
            raise OptionError({"--cache_dir": f"{root} is or contains the {what} {folder}; choose a folder of its "
                                              "own for Gradio's uploads, such as RUN/web_cache"})
    return root


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, outermost first: what a ``mkdir(parents=True)``
    of it would create."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    return missing[::-1]


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (outermost first, as :func:`_missing_folders` lists them) that are empty,
    innermost first: what a refused start created and nothing has used."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _check_feedback_dir(feedback_dir: Path) -> list[Path]:
    """Create the feedback folder and check, before serving, that a flag can be recorded there: the folder, its
    ``images/`` (if there) and its ``feedback.csv`` (if there) are writable and of the right kind. Otherwise every
    "flag as wrong" of the session would fail one by one with "Not recorded", after clinicians took the time.

    Returns:
        The folders it created (outermost first), for a start refused later to remove again (:func:`web`).

    Raises:
        OptionError: naming ``--feedback_dir`` (the default ``RUN/feedback`` too: the option that moves it).
    """
    from mednet.data.feedback import FEEDBACK_CSV, FEEDBACK_IMAGES

    def refuse(path: Path, problem: str) -> OptionError:
        return OptionError({"--feedback_dir": f"{path}: {problem}; give a folder this server can write to"})

    created = _missing_folders(feedback_dir)
    try:
        try:
            feedback_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # exist_ok covers folders only
            raise refuse(feedback_dir, "is a file, not a folder") from None
        except NotADirectoryError:
            raise refuse(feedback_dir, "a part of its path is a file") from None
        except OSError as e:
            raise refuse(feedback_dir, f"cannot create the folder ({e.strerror or e})") from None
        images, table = feedback_dir / FEEDBACK_IMAGES, feedback_dir / FEEDBACK_CSV
        if images.exists() and not images.is_dir():
            raise refuse(images, "is a file, not the folder of the flagged images")
        if table.exists() and not table.is_file():
            raise refuse(table, "is not a file")
        for folder in (feedback_dir, images):
            if folder.is_dir():
                try:  # a real write: os.access is wrong for root, ACLs and read-only mounts
                    with tempfile.TemporaryFile(dir=folder):
                        pass
                except OSError as e:
                    raise refuse(folder, f"cannot write there ({e.strerror or e})") from None
        if table.is_file():
            try:
                with open(table, "ab"):  # opened for appending, nothing written
                    pass
            except OSError as e:
                raise refuse(table, f"cannot append to it ({e.strerror or e})") from None
    except OptionError:
        _remove_if_empty(created)  # a refused start leaves no new folder
        raise
    return created


#: the name of every private cache folder (and, with ``.lock`` added, of its lock file next to it)
CACHE_PREFIX = "mednet-web-"
_CACHE_LOCK = ".lock"


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path`` (not unlinked or replaced meanwhile)."""
    try:
        held, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _remove_stale_caches(root: Path) -> list[Path]:
    """Remove the private cache folders in ``root`` whose server is gone, and their lock files.

    Each server holds an exclusive ``flock`` on ``mednet-web-XXXX.lock`` next to its folder ``mednet-web-XXXX``
    for its whole life (:func:`_new_private_cache`); the kernel drops the lock with the process however it ends
    (SIGKILL, OOM, a power cut), so a lock that can be taken belongs to no running server. The lock is held while
    the folder and then the lock file are removed, so no server can take it over meanwhile. A folder without a lock
    file (left by a demo older than the lock, or being created right now) is left alone: nothing tells whether its
    server is alive. Nothing is done where ``flock`` is missing (Windows).
    """
    from mednet.runs import _try_lock, fcntl

    removed: list[Path] = []
    if fcntl is None:
        return removed
    for lock in sorted(root.glob(f"{CACHE_PREFIX}*{_CACHE_LOCK}")):
        folder = lock.with_name(lock.name[: -len(_CACHE_LOCK)])
        try:
            fd = os.open(lock, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # not ours to read, a link, gone meanwhile
            continue
        try:
            if not _try_lock(fd) or not _same_file(fd, lock):
                continue  # its server is running (or a cleaner of another start got there first)
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                lock.unlink(missing_ok=True)  # still held: no server took it in between
                removed.append(folder)
        except OSError:  # e.g. a file system without locks (ENOLCK): left as it is
            continue
        finally:
            os.close(fd)
    if removed:
        logger.info("removed %d upload cache folder(s) of demos no longer running in %s", len(removed), root)
    return removed


def _new_private_cache(root: Path) -> tuple[Path, int | None]:
    """A new folder ``root/mednet-web-XXXX`` (mode 700) and the descriptor of its lock file
    ``root/mednet-web-XXXX.lock``, locked (``flock``) until the server ends (:func:`_release_private_cache`; the
    kernel releases it if the process is killed, and the next start removes the folder: :func:`_remove_stale_caches`).
    The lock file lies next to the folder, not in it: Gradio serves every file in its cache folder. Without
    ``flock`` (Windows) the folder only, and None."""
    from mednet.runs import _try_lock, fcntl

    if fcntl is not None:
        for _ in range(10):
            fd, name = tempfile.mkstemp(prefix=CACHE_PREFIX, suffix=_CACHE_LOCK, dir=root)
            lock = Path(name)
            try:
                locked = _try_lock(fd) and _same_file(fd, lock)
            except OSError:  # no locks on this file system: no clean-up of stale folders either
                lock.unlink(missing_ok=True)
                os.close(fd)
                break
            if not locked:  # taken for a stale lock by another start's clean-up, between mkstemp and flock
                os.close(fd)
                continue
            folder = lock.with_name(lock.name[: -len(_CACHE_LOCK)])
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:  # a folder of that name without its lock (an older demo's): never reused
                lock.unlink(missing_ok=True)
                os.close(fd)
                continue
            except OSError:
                lock.unlink(missing_ok=True)
                os.close(fd)
                raise
            # for a person looking at the folder; the lock, not this text, tells whether the server runs
            os.write(fd, f"{os.getpid()}\n".encode())
            return folder.resolve(), fd
    return Path(tempfile.mkdtemp(prefix=CACHE_PREFIX, dir=root)).resolve(), None


def _private_cache(cache_dir: Path, run_dir: Path, feedback_dir: Path) -> tuple[Path, int | None, list[Path]]:
    """A fresh folder of this server's own (``mednet-web-*``, mode 700) inside ``cache_dir``: Gradio serves, and
    accepts as input, every file under its cache folder, and the demo deletes the uploads it finds there. The
    folders of servers that are gone are removed first (:func:`_remove_stale_caches`).

    Returns:
        ``(folder, lock descriptor or None, the folders created on the way to cache_dir)``.

    Raises:
        OptionError: ``cache_dir`` is or contains the run folder or the feedback folder, or cannot be created.
    """
    root = _check_cache_dir(cache_dir, run_dir, feedback_dir)
    created = _missing_folders(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_caches(root)
        folder, lock = _new_private_cache(root)
    except OSError as e:
        _remove_if_empty(created)
        raise OptionError({"--cache_dir": f"{root}: cannot create a folder there ({e.strerror or e})"}) from None
    return folder, lock, created


def _release_private_cache(app) -> None:
    """Remove the app's private cache folder (:func:`build_app`), then its lock file, then release the lock; once."""
    cache = getattr(app, "mednet_cache_dir", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    fd = getattr(app, "mednet_cache_lock", None)
    app.mednet_cache_lock = None
    if fd is not None and cache is not None:
        with contextlib.suppress(OSError):
            cache.with_name(cache.name + _CACHE_LOCK).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.close(fd)


def build_app(run: str | os.PathLike | WebModel, feedback_dir: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None, max_file_size: str | int = DEFAULT_MAX_FILE_SIZE):
    """The demo page as a :class:`gradio.Blocks` (serve it with :func:`launch_app`).

    Args:
        run: a run folder, a serving file, or an already loaded :class:`WebModel`.
        feedback_dir: where "flag as wrong" records (default ``RUN/feedback``).
        cache_dir: where Gradio's upload cache is made: a fresh private folder ``mednet-web-*`` inside it becomes
            ``GRADIO_TEMP_DIR`` (default ``RUN/web_cache``).
        max_file_size: the largest upload (e.g. ``"10mb"``), shown on the page and used by :func:`launch_app`.

    The returned app carries ``mednet_model`` (the :class:`WebModel`), ``mednet_demo`` (:class:`WebDemo`),
    ``mednet_max_file_size`` (bytes), ``mednet_cache_dir`` (the private cache folder) and ``mednet_cache_lock``
    (its lock: remove both with :func:`_release_private_cache` when done), ``mednet_created_dirs`` (the feedback and
    cache folders this call created, outermost first), ``mednet_theme`` and ``mednet_js`` (:func:`oversized_script`).

    Raises:
        OptionError: the cache folder is or contains the run or the feedback folder (:func:`_private_cache`); the
            feedback folder cannot be created or written (:func:`_check_feedback_dir`).
    """
    max_bytes = parse_file_size(max_file_size)
    model = run if isinstance(run, WebModel) else load_web_model(run)
    feedback = Path(feedback_dir) if feedback_dir else model.run_dir / "feedback"
    cache_dir = Path(cache_dir) if cache_dir else model.run_dir / "web_cache"
    _check_cache_dir(cache_dir, model.run_dir, feedback)  # before the feedback folder is created
    created = _check_feedback_dir(feedback)
    try:
        cache, cache_lock, created_for_cache = _private_cache(cache_dir, model.run_dir, feedback)
    except OptionError:
        _remove_if_empty(created)  # a refused start leaves no new folder
        raise
    created += created_for_cache
    # Gradio reads its cache folder when components are built: the uploads land here, not in the system /tmp
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    import gradio as gr

    demo = WebDemo(model, feedback, cache, max_file_size=max_bytes)
    theme = _theme()
    script = oversized_script(max_bytes)
    blocks_args = {"title": "mednet — dermoscopy classifier", "analytics_enabled": False,
                   "delete_cache": (3600, 3600)}
    if not _theme_at_launch():
        blocks_args["theme"] = theme
        blocks_args["js"] = script
    calibration = (f"temperature {model.temperature:.2f}, referral threshold {100 * model.threshold:.1f} % "
                   f"({referral_basis(model.referral)})" if model.threshold is not None else
                   f"temperature {model.temperature:.2f}, no referral threshold")
    with gr.Blocks(**blocks_args) as app:
        gr.Markdown("# Dermoscopy classifier — demo")
        gr.Markdown(f"⚕️ {DISCLAIMER}", elem_id="disclaimer")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label=f"Dermoscopic image: JPEG, PNG or DICOM (at most "
                                       f"{_human_size(max_bytes)})", type="filepath", elem_id="upload")
                labels = [label for label, name in EXPLANATIONS.items() if name in model.methods]
                method = gr.Dropdown(labels, value=labels[0], label="Explanation (of the top class)",
                                     elem_id="method")
                gr.Markdown(f"Model: `{model.run_dir.name}` ({model.classifier.name}, {model.image_size} px; "
                            f"{calibration}). Classes: {', '.join(model.class_names)}.", elem_id="model_info")
                with gr.Group():
                    gr.Markdown("**Flag as wrong** — tell us the correct class; the image and your answer are "
                                "recorded for retraining.")
                    corrected = gr.Dropdown(list(model.class_names), value=None, label="Correct class",
                                            elem_id="corrected")
                    comment = gr.Textbox(label="Comment (optional)", lines=1, max_lines=3, elem_id="comment")
                    flag = gr.Button("Flag as wrong", variant="secondary", elem_id="flag")
                status = gr.Markdown("", elem_id="feedback_status")
                # clicked by the page's script when the browser refuses a file as too large (oversized_script)
                oversized = gr.Button("oversized upload", visible=_hidden(gr), elem_id="oversized")
            with gr.Column(scale=2):
                result = gr.Markdown("Upload an image to see the prediction.", elem_id="prediction")
                overlay = gr.Image(label="Explanation overlay (the region the model sees)", type="numpy",
                                   interactive=False, elem_id="overlay", height=DISPLAY_SIZE, **_no_share_button(gr))
        state = gr.State(None, time_to_live=STATE_TTL_S)  # the decoded upload, for "flag as wrong"

        # one group: a tab's upload and another's change of explanation never run the network at once, and a
        # refused oversized file clears the state after the upload before it, not before
        model_events = _event_options(upload.upload, concurrency_id=MODEL_EVENTS)
        page = [result, overlay, state, status, upload, corrected, comment]
        upload.upload(demo.on_new_upload, inputs=[upload, method], outputs=page, **model_events)
        oversized.click(demo.on_oversized, inputs=None, outputs=page, **model_events)
        method.change(demo.on_method, inputs=[state, method], outputs=[result, overlay, state, status],
                      **model_events)
        flag.click(demo.on_flag, inputs=[state, corrected, comment], outputs=[status],
                   **_event_options(flag.click))
    app.mednet_model = model
    app.mednet_demo = demo
    app.mednet_max_file_size = max_bytes
    app.mednet_cache_dir = cache
    app.mednet_cache_lock = cache_lock
    app.mednet_created_dirs = created
    app.mednet_theme = theme
    app.mednet_js = script
    return app


def _human_size(n: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------------------------------------------- access
def read_auth_file(path: str | os.PathLike, option: str = "--auth") -> list[tuple[str, str]]:
    """The logins of ``path``: one ``user:password`` per line → ``[(user, password), ...]`` for Gradio's ``auth``.

    Blank lines and lines starting with ``#`` are skipped; the password is what follows the first colon (it may
    hold colons), without the spaces around it. A file that other users can read is served with a warning.

    Raises:
        DataError: unreadable, no login, a line without a user or a password (its number only: the line may hold a
            password), or a user twice.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise DataError(file, f"cannot read the {option} file ({reason})") from None
    logins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        user, password = user.strip(), password.strip()
        if not colon or not user or not password:
            raise DataError(file, f"line {number}: expected user:password")
        if user in logins:
            raise DataError(file, f"line {number}: user {user!r} is given twice")
        logins[user] = password
    if not logins:
        raise DataError(file, "no user:password line")
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s: other users can read this password file (chmod 600 it)", file)
    return list(logins.items())


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``): reachable from this machine only."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, auth: object) -> None:
    """Refuse to serve beyond this machine without a login: every flag becomes a row for retraining.

    Raises:
        OptionError: ``host`` is not a loopback address and ``auth`` is empty.
    """
    if not auth and not is_loopback(host):
        raise OptionError({"--host": f"{host} would let anyone who reaches the port upload images and record "
                                     "feedback for retraining; give --auth USERS_FILE (user:password lines), or "
                                     "serve on 127.0.0.1"})


def _url(host: str, port: int) -> str:
    """``http://host:port/`` (an IPv6 address in brackets)."""
    bare = host.strip().strip("[]")
    return f"http://[{bare}]:{port}/" if ":" in bare else f"http://{bare}:{port}/"


def launch_app(app, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
               auth: list[tuple[str, str]] | None = None):
    """Serve ``app`` (:func:`build_app`) on ``host:port``: no share link, no analytics, no API page, the upload size
    limit, the system-font theme, and a login when ``auth`` (:func:`read_auth_file`) is given. Gradio's console
    banner is off (``quiet``: it offers a share link this demo never creates); once the server listens, one log
    line says where (``serving RUN on http://…``) and ``app.mednet_serving`` is True. ``block=False`` returns then
    (the server runs in a thread; ``app.close()``), ``block=True`` serves until Ctrl-C (or an exception such as
    :func:`web`'s ``SIGTERM`` one).

    Raises:
        OptionError: a non-loopback ``host`` without ``auth`` (:func:`check_host`); a ``host``/``port`` this server
            cannot listen on (:func:`_bind_problem`: in use, reserved, not an address of this machine, unknown).
        DataError: Gradio's server did not start although ``host:port`` can be bound (Gradio's message).
    """
    import gradio as gr

    check_host(host, auth)
    if not is_loopback(host):
        logger.warning("serving on %s: the page is reachable from other machines on this network (login required; "
                       "without a TLS proxy in front, passwords and images cross the network unencrypted)", host)
    params = inspect.signature(gr.Blocks.launch).parameters
    # prevent_thread_lock: launch() returns once the server listens, so that the log line comes after the bind
    args = {"server_name": host, "server_port": int(port), "share": False, "inbrowser": False,
            "max_file_size": app.mednet_max_file_size, "show_error": False, "prevent_thread_lock": True}
    if auth:
        args["auth"] = list(auth)
    if "theme" in params:
        args["theme"] = app.mednet_theme
    if "js" in params and _theme_at_launch():
        args["js"] = app.mednet_js
    if "ssr_mode" in params:
        args["ssr_mode"] = False  # no Node server
    for name, value in (("enable_monitoring", False),  # no /monitoring endpoint
                        ("run_history", False),  # Gradio 6 would keep every call, images included, in the browser
                        ("footer_links", ["settings"]),  # no API page, no link to gradio.app
                        ("show_api", False),  # Gradio 5's API page
                        ("quiet", True),  # no "* To create a public link, set share=True": our own line instead
                        ("pwa", False), ("mcp_server", False)):
        if name in params:
            args[name] = value
    try:
        result = app.launch(**args)
    except OSError as e:  # Gradio: "Cannot find empty port in range: 7891-7891 …", whatever uvicorn's bind said
        if "empty port" not in str(e) and not isinstance(e, socket.gaierror) and e.errno not in _BIND_ERRORS:
            raise
        with contextlib.suppress(Exception):  # whatever launch() set up before the server failed
            app.close(verbose=False)
        problem = _bind_problem(host, int(port))
        if problem is not None:
            raise problem from None
        raise DataError(None, f"the web server did not start on {_url(host, int(port))}, although this port can "
                              f"be bound now (Gradio: {str(e).strip()})") from None
    app.mednet_serving = True
    demo, logins = getattr(app, "mednet_demo", None), len(auth or ())
    logger.info("serving %s on %s (feedback: %s; %s)", app.mednet_model.run_dir, _url(host, int(port)),
                demo.feedback_dir if demo is not None else "none",
                f"{logins} login(s)" if logins else "no login")
    if block:
        app.block_thread()  # as launch() would: until Ctrl-C, which closes the server
    return result


#: the errors of a failed ``bind``: :func:`_bind_problem` says which
_BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, errno.EPERM)


def _bind_problem(host: str, port: int) -> OptionError | None:
    """Why this server cannot listen on ``host:port``, found by binding there as its server would (every address
    ``host`` resolves to, ``SO_REUSEADDR``; nothing listens), or None when it can. Gradio reports any failure of
    its server's bind as "Cannot find empty port", so the reason is read here from the bind's own error.

    Returns:
        OptionError on ``--port`` (in use: another server or a demo still running; reserved: below 1024 without
        the right to bind it) or on ``--host`` (not an address of this machine; a name that does not resolve).
    """
    name = host.strip().strip("[]")
    try:
        addresses = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return OptionError({"--host": f"{host}: unknown host (no address found for this name); give an address of "
                                      "this machine, such as 127.0.0.1 or 0.0.0.0 (all of them)"})
    bound, not_here = False, False
    for family, kind, proto, _, address in addresses:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # a family this machine lacks (no IPv6): asyncio's server skips it too
            continue
        try:
            with probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):  # as asyncio's server binds
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
                bound = True
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:  # one address of a name (localhost's ::1 with IPv6 off) may be absent
                not_here = True
                continue
            if e.errno == errno.EADDRINUSE:
                return OptionError({"--port": f"{port} is in use on {host}; choose another --port"})
            if e.errno in (errno.EACCES, errno.EPERM) and port < 1024:
                return OptionError({"--port": f"{port} is reserved on {host} (ports below 1024 need administrator "
                                              "rights); choose another --port"})
            return OptionError({"--host": f"cannot listen on {host} port {port} ({e.strerror or e})"})
    if not_here and not bound:
        return OptionError({"--host": f"{host} is not an address of this machine (it cannot listen there); give one "
                                      "of its own addresses, 0.0.0.0 (all of them) or 127.0.0.1"})
    return None


# ---------------------------------------------------------------------------------------------------- command line
def web(run: str, port: int = 7860, host: str = "127.0.0.1", auth: str | None = None,
        feedback_dir: str | None = None, cache_dir: str | None = None,
        max_file_size: str | int | float = DEFAULT_MAX_FILE_SIZE, device: str = "cpu") -> None:
    """Serve the demo page for ``run`` (a run folder or a serving file) until interrupted (Ctrl-C, or ``SIGTERM``:
    ``kill``, ``systemctl stop``, ``docker stop``; the process then ends with status 143).

    ``auth`` is a file of ``user:password`` lines (:func:`read_auth_file`), required unless ``host`` is a loopback
    address. The checks come first and in this order, so that a refused start leaves no new folder: the options,
    the run, the host and port (a bind, :func:`_bind_problem`); then the feedback folder is created and checked and
    the private upload cache made (:func:`build_app`; the feedback folder first, as the cache folder must not be in
    it). A start refused after that — a port taken in between, an unusable ``--cache_dir`` — removes the empty
    folders it created. The private upload cache is removed when the server stops, on ``SIGTERM`` too; one left by
    a server that was killed outright is removed by the next start in the same ``--cache_dir``
    (:func:`_remove_stale_caches`)."""
    from mednet.bundle_support import install_sigterm_exit

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise OptionError({"--port": f"expected a port number, got {port!r}"}) from None
    if not 0 < port < 65536:
        raise OptionError({"--port": f"expected a port number 1–65535, got {port}"})
    host = str(host)
    check_host(host, auth)
    logins = read_auth_file(auth) if auth else None
    parse_file_size(max_file_size)
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError({"--device": f"expected cpu, cuda or cuda:N, got {device!r}"}) from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError({"--device": "cuda requested, but PyTorch sees no CUDA device here; use --device cpu"})
    model = load_web_model(str(run), torch_device)
    problem = _bind_problem(host, port)  # before any folder is made
    if problem is not None:
        raise problem
    # SIGTERM raises SystemExit(143) from here until the server has stopped, so that the finally below runs
    restore_sigterm = install_sigterm_exit()
    app, stopped = None, False
    try:
        app = build_app(model, feedback_dir=feedback_dir, cache_dir=cache_dir, max_file_size=max_file_size)
        launch_app(app, host, port, auth=logins)
        stopped = True  # served until Ctrl-C
    finally:
        if app is not None:
            with contextlib.suppress(Exception):
                app.close(verbose=False)
            _release_private_cache(app)  # the private cache only: created by build_app, nothing else lives there
            if not stopped and not getattr(app, "mednet_serving", False):  # refused at launch: nothing served
                _remove_if_empty(app.mednet_created_dirs)
        restore_sigterm()


if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(web)
