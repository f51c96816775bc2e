"""The dermoscopy web demo: upload an image, see the calibrated top-3, a referral warning and an explanation.

    python -m mednet.app.web --run RUN_DIR [--port 7860] [--host 127.0.0.1] [--feedback_dir RUN/feedback]
        [--cache_dir RUN/web_cache] [--max_file_size 10mb] [--device cpu]

``--run`` is a classification training run folder (``model.pt``, ``settings.json``; an ensemble run works too) or a
serving file written by a promotion (:func:`mednet.app.retrain.resolve_serving`). The page (Gradio) takes a
dermoscopic photograph (JPEG, PNG) or a DICOM dermoscopy file and shows

* the top-3 classes with **calibrated** probabilities, ``softmax(logits / T)`` with the run's temperature
  (:func:`mednet.calibration.read_calibration`), the input preprocessed exactly as the run's evaluation does
  (:func:`mednet.data.dermoscopy.load_rgb`, centre crop and resize, the training split's normalisation);
* **"Uncertain — refer"** when the calibrated confidence is below the run's referral threshold (chosen on the
  validation split); without a ``calibration.json`` the plain softmax is shown and nothing is referred, and the page
  says so;
* the Grad-CAM overlay (Grad-CAM++, Integrated Gradients or GradientSHAP on request, :mod:`mednet.explain`);
* a disclaimer: the tool supports a clinician and does not replace one;
* "flag as wrong": the correct class and an optional comment are recorded with the image's pixels
  (:func:`mednet.data.feedback.append_feedback`, default folder ``RUN/feedback``), for a later gated retraining;
  a new upload clears both, and a "correct" class equal to the prediction is refused.

**Privacy.** The server listens on 127.0.0.1 unless ``--host`` says otherwise and never creates a share link;
Gradio's usage analytics are off (``GRADIO_ANALYTICS_ENABLED=False`` before Gradio is imported, and
``analytics_enabled=False``); Gradio 6's run history (every call, images included, kept in the browser), its
``/monitoring`` endpoint, the image "share" button (which posts to Hugging Face) and the footer link to gradio.app
are switched off; the theme names system fonts only, so the page loads no web font, and the test
(``tests/test_web.py``) checks in a real browser that the page requests nothing from outside 127.0.0.1. Gradio keeps
uploads on disk in its cache, here ``RUN/web_cache`` (``--cache_dir``): the demo deletes each upload as soon as it
is decoded (a DICOM file holds patient attributes; its pixels only are kept, in the browser session's memory), and
Gradio deletes the images it served after an hour. Only decoded pixels are shown, explained or stored: no DICOM
attribute is read (:func:`mednet.data.dermoscopy.read_dermoscopy_dicom` reads the pixel module only), the uploaded
file's name is never logged, and a DICOM upload is recorded in the feedback as ``source_name = dicom``.

Files that are not images, are corrupt, or are larger than ``--max_file_size`` get a message on the page (and the
previous image is forgotten). A missing or unusable run stops the start with one ``mednet error:`` line (exit
status 2).

:func:`build_app` returns the :class:`gradio.Blocks` (its :class:`WebModel` as ``app.mednet_model``) and
:func:`launch_app` serves it with the settings above; :meth:`WebModel.predict` is the page's prediction as a plain
function (no browser, no Gradio).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
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
    "launch_app",
    "parse_file_size",
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
class WebModel:
    """A run's classifier, calibration and preprocessing: what the page computes, without the page.

    Args:
        run: a run folder, a ``model.pt`` or a serving file (:func:`mednet.app.retrain.resolve_serving`).
        device: where the network runs.

    Raises:
        DataError: the run is missing, not a classification run, its weights do not fit its settings, or its
            calibration is unreadable (:func:`mednet.networks.trained.load_trained_classifier`,
            :func:`mednet.calibration.read_calibration`).
    """

    def __init__(self, run: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        from mednet.app.retrain import resolve_serving
        from mednet.calibration.run_calibration import read_calibration
        from mednet.data.lesion_images import image_transform
        from mednet.networks.trained import load_trained_classifier

        self.run_dir = resolve_serving(run).resolve()
        self.device = torch.device(device)
        self.classifier = load_trained_classifier(self.run_dir, self.device)
        calibration = read_calibration(self.classifier.run_dir)
        self.temperature = float(calibration["temperature"])
        self.threshold = calibration["referral_threshold"]
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
    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (K,), softmax(logits / T) (K,))`` of one input ``(1, 3, S, S)``, float64."""
        logits = self.network(x).double().cpu()[0]
        return logits.numpy(), torch.softmax(logits / self.temperature, dim=0).numpy()

    def predict_array(self, rgb: np.ndarray, method: str | None = "auto", top_k: int = 3) -> dict:
        """:meth:`predict` for decoded ``(H, W, 3)`` uint8 RGB pixels."""
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
def _result_markdown(model: WebModel, result: dict) -> str:
    lines = []
    if result["refer"]:
        lines += [f"## ⚠ {REFER_MESSAGE}",
                  f"The calibrated confidence ({100 * result['confidence']:.1f} %) is below this model's referral "
                  f"threshold ({100 * result['referral_threshold']:.1f} %, chosen on the validation split). Do not "
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
    """

    def __init__(self, model: WebModel, feedback_dir: str | os.PathLike | None = None,
                 upload_dir: str | os.PathLike | None = None) -> None:
        self.model = model
        self.feedback_dir = Path(feedback_dir) if feedback_dir else model.run_dir / "feedback"
        self.upload_dir = Path(upload_dir).resolve() if upload_dir else None

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
        is_dicom = is_dicom_file(path)
        try:
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
    """Gradio ≥ 6 takes the theme in ``launch()``; Gradio 5 in ``Blocks()``."""
    import gradio as gr

    return "theme" in inspect.signature(gr.Blocks.launch).parameters


def build_app(run: str | os.PathLike | WebModel, feedback_dir: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None, max_file_size: str | int = DEFAULT_MAX_FILE_SIZE):
    """The demo page as a :class:`gradio.Blocks` (serve it with :func:`launch_app`).

    Args:
        run: a run folder, a serving file, or an already loaded :class:`WebModel`.
        feedback_dir: where "flag as wrong" records (default ``RUN/feedback``).
        cache_dir: Gradio's upload cache (``GRADIO_TEMP_DIR``; default ``RUN/web_cache``).
        max_file_size: the largest upload (e.g. ``"10mb"``), shown on the page and used by :func:`launch_app`.

    The returned app carries ``mednet_model`` (the :class:`WebModel`), ``mednet_demo`` (:class:`WebDemo`),
    ``mednet_max_file_size`` (bytes) and ``mednet_theme``.
    """
    max_bytes = parse_file_size(max_file_size)
    model = run if isinstance(run, WebModel) else load_web_model(run)
    cache = Path(cache_dir) if cache_dir else model.run_dir / "web_cache"
    cache.mkdir(parents=True, exist_ok=True)
    # Gradio reads its cache folder when components are built: the uploads land here, not in the system /tmp
    os.environ["GRADIO_TEMP_DIR"] = str(cache.resolve())
    import gradio as gr

    demo = WebDemo(model, feedback_dir, cache)
    theme = _theme()
    blocks_args = {"title": "mednet — dermoscopy classifier", "analytics_enabled": False,
                   "delete_cache": (3600, 3600)}
    if not _theme_at_launch():
        blocks_args["theme"] = theme
    calibration = (f"temperature {model.temperature:.2f}, referral threshold "
                   f"{100 * model.threshold:.1f} %" if model.threshold is not None else
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
            with gr.Column(scale=2):
                result = gr.Markdown("Upload an image to see the prediction.", elem_id="prediction")
                overlay = gr.Image(label="Explanation overlay (the region the model sees)", type="numpy",
                                   interactive=False, elem_id="overlay", height=DISPLAY_SIZE, **_no_share_button(gr))
        state = gr.State(None, time_to_live=STATE_TTL_S)  # the decoded upload, for "flag as wrong"

        upload.upload(demo.on_new_upload, inputs=[upload, method],
                      outputs=[result, overlay, state, status, upload, corrected, comment])
        method.change(demo.on_method, inputs=[state, method], outputs=[result, overlay, state, status])
        flag.click(demo.on_flag, inputs=[state, corrected, comment], outputs=[status])
    app.mednet_model = model
    app.mednet_demo = demo
    app.mednet_max_file_size = max_bytes
    app.mednet_theme = theme
    return app


def _human_size(n: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} bytes"


def launch_app(app, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve ``app`` (:func:`build_app`) on ``host:port``: no share link, no analytics, the upload size limit,
    the system-font theme. ``block=False`` returns at once (the server runs in a thread; ``app.close()``)."""
    import gradio as gr

    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: the page is reachable from other machines on this network", host)
    params = inspect.signature(gr.Blocks.launch).parameters
    args = {"server_name": host, "server_port": int(port), "share": False, "inbrowser": False,
            "max_file_size": app.mednet_max_file_size, "show_error": False, "prevent_thread_lock": not block}
    if "theme" in params:
        args["theme"] = app.mednet_theme
    if "ssr_mode" in params:
        args["ssr_mode"] = False  # no Node server
    for name, value in (("enable_monitoring", False),  # no /monitoring endpoint
                        ("run_history", False),  # Gradio 6 would keep every call, images included, in the browser
                        ("footer_links", ["api", "settings"]),  # no link to gradio.app
                        ("pwa", False), ("mcp_server", False)):
        if name in params:
            args[name] = value
    return app.launch(**args)


# ---------------------------------------------------------------------------------------------------- command line
def web(run: str, port: int = 7860, host: str = "127.0.0.1", feedback_dir: str | None = None,
        cache_dir: str | None = None, max_file_size: str | int | float = DEFAULT_MAX_FILE_SIZE,
        device: str = "cpu") -> None:
    """Serve the demo page for ``run`` (a run folder or a serving file) until interrupted."""
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
    parse_file_size(max_file_size)
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError({"--device": f"expected cpu, cuda or cuda:N, got {device!r}"}) from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError({"--device": "cuda requested, but PyTorch sees no CUDA device here; use --device cpu"})
    app = build_app(load_web_model(str(run), torch_device), feedback_dir=feedback_dir, cache_dir=cache_dir,
                    max_file_size=max_file_size)
    model = app.mednet_model
    logger.info("serving %s on http://%s:%d (feedback: %s)", model.run_dir, host, port, app.mednet_demo.feedback_dir)
    launch_app(app, host, port)


if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(web)
