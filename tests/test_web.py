"""The dermoscopy web demo (``python -m mednet.app.web``).

Without a browser: the prediction equals ``softmax(logits / T)`` computed independently of the app, the referral
flag follows the run's threshold, every explanation method draws an overlay, a DICOM upload is predicted and its
patient attributes and file name reach neither the feedback, nor the log, nor the disk, bad uploads get a message
(an oversized one clears the previous image), two threads predicting at once get what each would get alone, the
upload cache is a private folder (never the run or the feedback), a non-loopback ``--host`` needs ``--auth`` and the
served app refuses requests without a login, and a missing or mismatched run stops the start with one
``mednet error:`` line, as do a port in use and a host that is not this machine's or does not resolve (checked before
any folder is made). A real server process stopped by SIGTERM exits with 143 and leaves no upload cache; a cache left
by a killed server is removed by the next start.

In a real browser (Debian's Chromium through Playwright, never a downloaded browser): the app is started as a
subprocess, a JPEG is uploaded, the top-3 and the overlay appear, another explanation is chosen, the prediction is
flagged with a corrected class (the feedback row is checked), a DICOM, a corrupt and an oversized file get their
answers (the oversized one, never sent, still clears the image before it: a flag then records nothing), and **no
request of the page leaves 127.0.0.1**. A screenshot is written to ``tmp_path`` (the test artefact) and, with
``MEDNET_UPDATE_SCREENSHOT=1``, to the README's ``docs/web_demo.png``. Without ``/usr/bin/chromium`` the browser test fails (CI installs it) unless
``MEDNET_SKIP_BROWSER=1``.
"""

from __future__ import annotations

import csv
import errno
import http.cookiejar
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from _dermoscopy_fixtures import PATIENT_ID, independent_probabilities, write_dicom  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
TEMPERATURE, THRESHOLD = 1.5, 0.3
SIZE = 32
DICOM_FILE_NAME = "Doe_Jane_PID-98765.dcm"
SECRETS = ("Doe", "Jane", PATIENT_ID, DICOM_FILE_NAME)


# ---------------------------------------------------------------------------------------------------- fixtures
def make_run(root: Path, threshold: float | None = THRESHOLD, temperature: float = TEMPERATURE,
             seed: int = 0, classes: list[str] = CLASSES) -> Path:
    """A classification run folder as training leaves it: model.pt, settings.json, calibration.json, finished.json."""
    from mednet.networks import build_classifier

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    network = build_classifier("receptive_field_cnn", 7, SIZE)
    with torch.no_grad():  # BatchNorm statistics away from (0, 1): the eval-mode network is not the identity
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    torch.save(network.state_dict(), root / "model.pt")
    settings = {"model": "receptive_field_cnn", "image_size": SIZE, "cifar_stem": None, "cosine_head": False,
                "batch_norm": True, "class_names": classes, "normalization": {"mean": MEAN, "std": STD},
                "augmentation": "none"}
    (root / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    if threshold is not None:
        (root / "calibration.json").write_text(json.dumps({"temperature": temperature,
                                                           "referral": {"threshold": threshold}}), encoding="utf-8")
    (root / "finished.json").write_text("{}", encoding="utf-8")
    return root


def lesion_image(seed: int = 0, h: int = 60, w: int = 80) -> np.ndarray:
    """A skin-coloured photo with a dark, irregular blob (uint8 RGB, not square: the crop is exercised)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 3), (xx - w / 2) / (w / 4)) + 0.15 * rng.standard_normal((h, w))
    skin = np.array([224, 172, 150], float)
    lesion = np.array([90, 50, 40], float)
    mix = np.clip(1.3 - r, 0, 1)[..., None]
    img = skin * (1 - mix) + lesion * mix + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def web_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("web_run") / "run")


@pytest.fixture(scope="module")
def web_model(web_run):
    from mednet.app.web import load_web_model

    return load_web_model(web_run)


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory) -> Path:
    return write_jpeg(tmp_path_factory.mktemp("images") / "lesion_0001.jpg", lesion_image())


# ---------------------------------------------------------------------------------------------------- no browser
def test_predict_matches_independent_calibrated_softmax(web_run, web_model, jpeg):
    result = web_model.predict(jpeg)
    logits, probs = independent_probabilities(web_run, jpeg, MEAN, STD, TEMPERATURE, SIZE)
    order = np.argsort(-probs)[:3]
    assert result["classes"] == [CLASSES[i] for i in order]
    assert len(result["probabilities"]) == 3
    np.testing.assert_allclose(result["probabilities"], probs[order], atol=1e-5)
    np.testing.assert_allclose(result["logits"], logits, atol=1e-4)
    assert sum(result["probabilities"]) <= 1.0 + 1e-9
    assert result["probabilities"] == sorted(result["probabilities"], reverse=True)
    assert result["temperature"] == TEMPERATURE and result["referral_threshold"] == THRESHOLD
    assert result["predicted"] == result["classes"][0]
    assert result["refer"] == (result["confidence"] < THRESHOLD)
    overlay = result["overlay"]
    assert overlay.dtype == np.uint8 and overlay.ndim == 3 and overlay.shape[2] == 3
    assert web_model.predict(jpeg, method=None)["overlay"] is None


@pytest.mark.parametrize("threshold", [0.0, 0.999, THRESHOLD])
def test_refer_flag_and_message_follow_the_threshold(tmp_path, jpeg, threshold):
    from mednet.app.web import REFER_MESSAGE, WebDemo, load_web_model

    model = load_web_model(make_run(tmp_path / "run", threshold=threshold))
    result = model.predict(jpeg, method=None)
    assert result["refer"] == (result["confidence"] < threshold)
    if threshold == 0.0:
        assert not result["refer"]
    if threshold == 0.999:
        assert result["refer"]
    markdown, overlay, state, _ = WebDemo(model, tmp_path / "fb").on_upload(str(jpeg))
    assert (REFER_MESSAGE.lower() in markdown.lower()) == result["refer"]
    assert "Top-3" in markdown and all(name in markdown for name in result["classes"])
    assert overlay is not None and state["predicted"] == result["predicted"]
    assert jpeg.is_file()  # a file outside the upload cache is never deleted


def test_the_referral_message_says_what_the_threshold_was_chosen_for(tmp_path, jpeg):
    """calibration.json records the target accuracy and the confidence level of its lower bound: the page says
    both; a run calibrated before they were recorded says only where the threshold was chosen."""
    from mednet.app.web import WebDemo, load_web_model, referral_basis

    run = make_run(tmp_path / "run", threshold=0.999)
    (run / "calibration.json").write_text(json.dumps({"temperature": TEMPERATURE, "referral": {
        "threshold": 0.999, "target_accuracy": 0.95, "confidence_level": 0.9, "min_accepted": 20}}), encoding="utf-8")
    model = load_web_model(run)
    assert model.referral["confidence_level"] == 0.9
    markdown = WebDemo(model, tmp_path / "fb").on_upload(str(jpeg))[0]
    assert "chosen on the validation split: accepted cases ≥ 95 % accurate at 90 % confidence" in markdown
    assert referral_basis({"threshold": 0.7}) == "chosen on the validation split"
    assert referral_basis({"target_accuracy": 0.99}) == "chosen on the validation split for 99 % accuracy"
    assert referral_basis({"target_accuracy": True, "confidence_level": "0.9"}) == "chosen on the validation split"


def test_without_calibration_the_plain_softmax_and_no_referral(tmp_path, jpeg):
    from mednet.app.web import WebDemo, load_web_model

    run = make_run(tmp_path / "run", threshold=None)
    model = load_web_model(run)
    result = model.predict(jpeg, method=None)
    _, probs = independent_probabilities(run, jpeg, MEAN, STD, TEMPERATURE, SIZE)
    probs = torch.softmax(torch.log(torch.as_tensor(probs)) * TEMPERATURE, 0).numpy()  # back to T = 1
    np.testing.assert_allclose(result["probabilities"], np.sort(probs)[::-1][:3], atol=1e-5)
    assert result["temperature"] == 1.0 and result["referral_threshold"] is None and not result["refer"]
    assert "no calibration" in WebDemo(model).on_upload(str(jpeg))[0]


def test_every_explanation_method_draws_an_overlay(web_model, tmp_path, jpeg):
    from mednet.app.web import EXPLANATIONS, WebDemo

    demo = WebDemo(web_model, tmp_path / "fb")
    _, first, state, _ = demo.on_upload(str(jpeg), "Grad-CAM")
    for label in EXPLANATIONS:
        markdown, overlay, new_state, _ = demo.on_method(state, label)
        assert "Top-3" in markdown
        assert overlay.dtype == np.uint8 and overlay.shape == first.shape
        assert new_state["predicted"] == state["predicted"]


def test_dicom_upload_is_predicted_and_keeps_no_identifier(web_model, tmp_path, caplog):
    from mednet.app.web import WebDemo
    from mednet.data.feedback import FEEDBACK_CSV

    rgb = lesion_image(seed=3)
    cache = tmp_path / "web_cache"
    upload = write_dicom(cache / "0a1b2c" / DICOM_FILE_NAME, rgb)
    feedback = tmp_path / "feedback"
    demo = WebDemo(web_model, feedback, upload_dir=cache)
    caplog.set_level(logging.DEBUG)
    markdown, overlay, state, _ = demo.on_upload(str(upload), "Grad-CAM")
    assert "Top-3" in markdown and overlay is not None
    np.testing.assert_array_equal(state["image"], rgb)
    assert not upload.exists() and not any(cache.rglob("*")), "the DICOM upload must be deleted from the cache"
    assert all(name in markdown for name in web_model.predict_array(rgb, None)["classes"])
    status = demo.on_flag(state, "mel", "dermatofibroma?")
    assert "recorded" in status
    table_text = (feedback / FEEDBACK_CSV).read_text(encoding="utf-8")
    rows = list(csv.DictReader(table_text.splitlines()))
    assert len(rows) == 1 and rows[0]["source_name"] == "dicom" and rows[0]["corrected"] == "mel"
    outputs = table_text + caplog.text + markdown + status + json.dumps(
        {k: v for k, v in state.items() if k != "image"})
    for secret in SECRETS:
        assert secret not in outputs
    for stored in feedback.rglob("*"):
        assert not any(secret in stored.name for secret in SECRETS)
        if stored.is_file():
            assert b"Doe" not in stored.read_bytes() and PATIENT_ID.encode() not in stored.read_bytes()


@pytest.mark.parametrize("kind", ["text", "truncated_jpeg", "empty", "tiny", "bad_dicom"])
def test_bad_uploads_get_a_message_not_an_exception(web_model, tmp_path, jpeg, kind):
    from mednet.app.web import WebDemo

    cache = tmp_path / "cache"
    name = {"text": "notes_Doe.txt", "truncated_jpeg": "cut_Doe.jpg", "empty": "empty_Doe.png",
            "tiny": "tiny_Doe.png", "bad_dicom": "Doe_Jane.dcm"}[kind]
    path = cache / "f00" / name
    path.parent.mkdir(parents=True)
    if kind == "text":
        path.write_text("not an image\n", encoding="utf-8")
    elif kind == "truncated_jpeg":
        path.write_bytes(jpeg.read_bytes()[:300])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "tiny":
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(path)
    else:
        path.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    demo = WebDemo(web_model, tmp_path / "fb", upload_dir=cache)
    markdown, overlay, state, status = demo.on_upload(str(path))
    assert markdown.startswith("### Cannot analyse") and overlay is None and state is None
    assert "Doe" not in markdown and str(cache) not in markdown
    assert not path.exists()
    assert "Upload an image first" in demo.on_flag(state, "mel", "")


def test_flag_needs_a_class_and_refuses_a_long_comment(web_model, tmp_path, jpeg):
    from mednet.app.web import WebDemo

    demo = WebDemo(web_model, tmp_path / "fb")
    _, _, state, _ = demo.on_upload(str(jpeg))
    assert "Choose the correct class" in demo.on_flag(state, None, "")
    assert "Not recorded" in demo.on_flag(state, "mel", "x" * 5000)
    assert not (tmp_path / "fb" / "feedback.csv").exists()


def test_an_unexpected_decoder_error_is_a_message_and_forgets_the_previous_image(web_model, tmp_path, jpeg,
                                                                                  monkeypatch):
    """A decoder exception that is not a DataError: the generic message, and state None replaces the previous
    image's, so "flag as wrong" cannot record that image under the failed upload."""
    from mednet.app.web import WebDemo

    monkeypatch.delenv("MEDNET_TRACEBACK", raising=False)
    cache = tmp_path / "cache"
    demo = WebDemo(web_model, tmp_path / "fb", upload_dir=cache)
    _, _, previous, _ = demo.on_upload(str(jpeg))
    assert previous["predicted"]
    path = cache / "f01" / "scan_Doe.tif"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"II*\0damaged")

    def damaged(image_path):
        raise TypeError(f"Missing dimensions in {image_path}")

    monkeypatch.setattr(web_model, "load", damaged)
    markdown, overlay, state, status = demo.on_upload(str(path))
    assert markdown.startswith("### Cannot analyse this file") and "could not be decoded" in markdown
    assert overlay is None and state is None and status == ""
    assert "Doe" not in markdown and "Missing dimensions" not in markdown and str(cache) not in markdown
    assert not path.exists()  # deleted from the upload cache all the same
    assert "Upload an image first" in demo.on_flag(state, "mel", "")
    assert not (tmp_path / "fb").exists()


def test_a_new_upload_resets_the_correction_and_the_comment(web_model, tmp_path, jpeg, monkeypatch):
    """The page's upload event clears "Correct class" and "Comment": one click on "flag as wrong" after a new upload
    must not send the previous image's correction and comment with the new image."""
    import gradio as gr

    from mednet.app.web import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test
    app = build_app(web_model, feedback_dir=tmp_path / "fb", cache_dir=tmp_path / "cache")
    fns = app.fns.values() if isinstance(app.fns, dict) else app.fns
    (event,) = [f for f in fns if any(name == "upload" for _, name in f.targets)]
    assert [getattr(o, "elem_id", None) for o in event.outputs][-3:] == ["upload", "corrected", "comment"]
    assert isinstance(event.outputs[2], gr.State)
    outputs = event.fn(str(jpeg), "Grad-CAM")
    assert len(outputs) == len(event.outputs) == 7
    markdown, overlay, state, status, upload, corrected, comment = outputs
    assert "Top-3" in markdown and overlay is not None and state["predicted"]
    assert (upload, corrected, comment) == (None, None, "")
    # a failed upload resets them too
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n", encoding="utf-8")
    assert event.fn(str(bad), "Grad-CAM")[2:] == (None, "", None, None, "")


def test_flag_of_the_predicted_class_is_refused_and_errors_show_no_server_path(web_model, tmp_path, jpeg):
    from mednet.app.web import WebDemo
    from mednet.data.feedback import FEEDBACK_CSV

    feedback = tmp_path / "server_feedback_folder"
    demo = WebDemo(web_model, feedback)
    _, _, state, _ = demo.on_upload(str(jpeg))
    predicted = state["predicted"]
    status = demo.on_flag(state, predicted, "same class")
    assert status.startswith("⚠ Not recorded") and f"predicted **{predicted}**" in status
    assert not feedback.exists()  # nothing recorded

    feedback.mkdir()
    (feedback / FEEDBACK_CSV).write_text("a,b\n", encoding="utf-8")  # not a feedback table: a DataError
    other = next(c for c in web_model.class_names if c != predicted)
    status = demo.on_flag(state, other, "")
    assert status.startswith("⚠ Not recorded: not a feedback table")
    assert str(tmp_path) not in status and "server_feedback_folder" not in status
    (feedback / FEEDBACK_CSV).unlink()
    assert "recorded: predicted" in demo.on_flag(state, other, "")


def test_build_app_with_a_serving_file(web_run, tmp_path, monkeypatch):
    import gradio as gr

    from mednet.app.web import build_app, parse_file_size

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test
    serving = tmp_path / "serving.json"
    serving.write_text(json.dumps({"run": str(web_run)}), encoding="utf-8")
    app = build_app(serving, cache_dir=tmp_path / "cache", max_file_size="2mb")
    assert isinstance(app, gr.Blocks)
    assert app.mednet_model.run_dir == web_run.resolve()
    assert app.mednet_demo.feedback_dir == web_run.resolve() / "feedback"
    assert app.mednet_max_file_size == 2 * 1024**2
    private = app.mednet_cache_dir  # a fresh folder of its own inside --cache_dir
    assert os.environ["GRADIO_TEMP_DIR"] == str(private) and private.parent == (tmp_path / "cache").resolve()
    assert parse_file_size("10mb") == 10 * 1024**2 and parse_file_size("500 KB") == 500 * 1024
    from mednet.errors import OptionError

    for bad in ("ten", "0mb", "-1", ""):
        with pytest.raises(OptionError, match="--max_file_size"):
            parse_file_size(bad)


def test_concurrent_requests_get_their_own_explanations(web_model):
    """Gradio runs one tab's upload and another's change of explanation at once, on the same network: each must get
    the overlay it would get alone (the explanations flip the network's flags and hook its layers)."""
    rgb = lesion_image(seed=7)
    serial = {m: web_model.predict_array(rgb, m) for m in ("gradcam", "gradcampp")}
    problems: list[str] = []
    start = threading.Barrier(2)

    def work(method: str) -> None:
        start.wait()
        for _ in range(60):
            try:
                result = web_model.predict_array(rgb, method)
            except Exception as e:  # e.g. a KeyError of the other thread's Grad-CAM hook
                problems.append(f"{method}: {e!r}")
                continue
            if not np.array_equal(result["overlay"], serial[method]["overlay"]):
                problems.append(f"{method}: another overlay")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: the race shows at once
    try:
        threads = [threading.Thread(target=work, args=(m,)) for m in serial]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not problems, problems[:5]


def test_the_model_events_share_one_concurrency_group_and_no_api(web_model, tmp_path, monkeypatch):
    from mednet.app.web import MODEL_EVENTS, build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test
    app = build_app(web_model, feedback_dir=tmp_path / "fb", cache_dir=tmp_path / "cache")
    fns = list(app.fns.values() if isinstance(app.fns, dict) else app.fns)
    by_trigger = {(getattr(app.blocks.get(i), "elem_id", None), name): f for f in fns for i, name in f.targets}
    for key in (("upload", "upload"), ("method", "change"), ("oversized", "click")):
        assert by_trigger[key].concurrency_id == MODEL_EVENTS, key
    assert all(getattr(f, "api_visibility", None) == "private" or getattr(f, "show_api", True) is False for f in fns)


def test_an_oversized_upload_clears_the_previous_image(web_model, tmp_path, jpeg, monkeypatch):
    """Gradio refuses a file above the limit in the browser, so no upload event comes: the page's script clicks a
    hidden button whose event clears the previous image, correction and comment. On the server, a file above the
    limit is refused too."""
    from mednet.app.web import WebDemo, build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test
    app = build_app(web_model, feedback_dir=tmp_path / "fb", cache_dir=tmp_path / "cache", max_file_size="1kb")
    fns = list(app.fns.values() if isinstance(app.fns, dict) else app.fns)
    (upload_event,) = [f for f in fns if any(name == "upload" for _, name in f.targets)]
    (oversized_event,) = [f for f in fns if any(getattr(app.blocks.get(i), "elem_id", None) == "oversized"
                                                 for i, _ in f.targets)]
    assert oversized_event.outputs == upload_event.outputs  # the same reset as a new upload
    markdown, overlay, state, status, upload, corrected, comment = oversized_event.fn()
    assert "larger than the limit of 1 KB" in markdown
    assert (overlay, state, status, upload, corrected, comment) == (None, None, "", None, None, "")
    assert "const limit = 1024;" in app.mednet_js and "#oversized" in app.mednet_js and "#upload" in app.mednet_js

    cache = tmp_path / "uploads"
    big = cache / "f00" / "big_lesion.jpg"
    big.parent.mkdir(parents=True)
    big.write_bytes(jpeg.read_bytes())
    assert big.stat().st_size > 1024
    demo = WebDemo(web_model, tmp_path / "fb", upload_dir=cache, max_file_size=1024)
    markdown, overlay, state, _ = demo.on_upload(str(big))
    assert "larger than the limit" in markdown and overlay is None and state is None
    assert not big.exists()  # deleted from the upload cache, never decoded
    assert "Top-3" in WebDemo(web_model, tmp_path / "fb", max_file_size=10**7).on_upload(str(jpeg))[0]


def test_the_upload_cache_is_a_private_folder_and_never_the_run(web_run, web_model, tmp_path, monkeypatch):
    """Gradio serves and accepts any file under its cache folder, and the demo deletes uploads found there: the
    cache is a fresh folder of its own, and a --cache_dir that is or holds the run or the feedback is refused."""
    from mednet.app.web import build_app
    from mednet.errors import OptionError

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test
    for cache, feedback in ((web_run, None), (web_run.parent, None), (tmp_path / "c", tmp_path / "c" / "fb"),
                            (tmp_path / "fb", tmp_path / "fb")):
        with pytest.raises(OptionError, match="^--cache_dir: .* is or contains the (run|feedback) folder"):
            build_app(web_model, feedback_dir=feedback, cache_dir=cache)
    cache = tmp_path / "cache"
    cache.mkdir()
    notes = cache / "notes.txt"
    notes.write_text("not an upload\n", encoding="utf-8")
    app = build_app(web_model, feedback_dir=tmp_path / "fb", cache_dir=cache)
    private = app.mednet_cache_dir
    # fresh: no file in it (Gradio ≥ 6 makes an empty folder of its own there, vibe_edit_history/)
    assert private.parent == cache.resolve() and private.name.startswith("mednet-web-")
    assert not any(p.is_file() for p in private.rglob("*"))
    assert os.environ["GRADIO_TEMP_DIR"] == str(private) and app.mednet_demo.upload_dir == private
    assert "Cannot analyse" in app.mednet_demo.on_upload(str(notes))[0]
    assert notes.is_file()  # outside the private folder: never deleted
    assert build_app(web_model, cache_dir=cache).mednet_cache_dir != private  # each server its own
    assert build_app(web_model).mednet_cache_dir.parent == web_run.resolve() / "web_cache"


def test_auth_file_and_host_checks(tmp_path):
    from mednet.app.web import check_host, read_auth_file
    from mednet.errors import DataError, OptionError

    users = tmp_path / "users.txt"
    users.write_text("# logins\nalice: s3cret:with:colons \n\nbob:pw\n", encoding="utf-8")
    assert read_auth_file(users) == [("alice", "s3cret:with:colons"), ("bob", "pw")]
    for text, problem in (("alice hunter2\n", "line 1: expected user:password"),
                          ("a:hunter2\n:hunter3\n", "line 2: expected user:password"), ("a:\n", "line 1: expected"),
                          ("a:hunter2\na:hunter3\n", "line 2: user 'a' is given twice"),
                          ("# none\n", "no user:password line")):
        users.write_text(text, encoding="utf-8")
        with pytest.raises(DataError, match=f"^{users}: {problem}") as info:
            read_auth_file(users)
        assert "hunter" not in str(info.value)  # a password never reaches the error line
    with pytest.raises(DataError, match="cannot read the --auth file"):
        read_auth_file(tmp_path / "missing.txt")
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        check_host(host, None)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(OptionError, match="^--host: .*--auth"):
            check_host(host, None)
        check_host(host, [("alice", "pw")])


def test_a_non_loopback_host_without_auth_is_refused(web_run, tmp_path, monkeypatch):
    from unittest import mock

    from _bundle_cli import command_in_process
    from mednet.app.web import web

    launch = mock.Mock()  # "serves" and returns at once
    monkeypatch.setattr("mednet.app.web.launch_app", launch)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # web() sets it; restored after the test
    refused = command_in_process(web, "--run", str(web_run), "--host", "0.0.0.0")
    assert refused.returncode == 2 and _error_lines(refused.stderr)[0].startswith("mednet error: --host: 0.0.0.0")
    assert not launch.called
    users = tmp_path / "users.txt"
    users.write_text("alice:s3cret\n", encoding="utf-8")
    users.chmod(0o600)
    served = command_in_process(web, "--run", str(web_run), "--host", "0.0.0.0", "--auth", str(users),
                                "--cache_dir", str(tmp_path / "cache"))
    assert served.returncode == 0, served.stderr
    assert launch.call_args.kwargs["auth"] == [("alice", "s3cret")] and "s3cret" not in served.stderr
    assert not any((tmp_path / "cache").iterdir())  # the private cache is removed when the server stops


def test_the_served_app_needs_a_login_and_serves_no_other_file(web_model, tmp_path, monkeypatch):
    """Launched with a login: without it, no page data, upload or file; with it, still no file of the cache folder
    outside the app's private one, and no API listing."""
    from mednet.app.web import build_app, launch_app
    from mednet.errors import OptionError

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "notes.txt").write_text("not for the page\n", encoding="utf-8")
    app = build_app(web_model, feedback_dir=tmp_path / "fb", cache_dir=cache)
    with pytest.raises(OptionError, match="^--host"):
        launch_app(app, "0.0.0.0", _free_port(), block=False)
    port = _free_port()
    launch_app(app, "127.0.0.1", port, block=False, auth=[("alice", "s3cret")])
    base = f"http://127.0.0.1:{port}"
    try:
        def fetch(opener, path: str, data: bytes | None = None) -> tuple[int, bytes]:
            try:
                with opener.open(base + path, data=data, timeout=30) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        anonymous = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        notes = f"/gradio_api/file={cache.resolve() / 'notes.txt'}"
        for path, data in (("/config", None), ("/gradio_api/info", None), (notes, None),
                           ("/gradio_api/upload", b"x"), ("/gradio_api/queue/join", b"{}")):
            assert fetch(anonymous, path, data)[0] == 401, path
        user = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                           urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        login = {"username": "alice", "password": "wrong"}
        assert fetch(user, "/login", urllib.parse.urlencode(login).encode())[0] == 400
        login["password"] = "s3cret"
        assert fetch(user, "/login", urllib.parse.urlencode(login).encode())[0] == 200
        status, config = fetch(user, "/config")
        assert status == 200 and b"Dermoscopy classifier" in config
        assert fetch(user, notes)[0] == 403 and (cache / "notes.txt").is_file()
        status, info = fetch(user, "/gradio_api/info")
        assert status in (200, 404) and b"on_flag" not in info and b"on_new_upload" not in info
    finally:
        app.close()


def _run_web(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MEDNET_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "mednet.app.web", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mednet error:")]


def test_startup_with_a_missing_or_mismatched_run_is_one_error_line(tmp_path, monkeypatch):
    from unittest import mock

    from _bundle_cli import command_in_process
    from mednet.app.web import web

    # in-process, a case that stopped being refused would start serving and hang the suite: make it fail instead
    monkeypatch.setattr("mednet.app.web.launch_app", mock.Mock(side_effect=AssertionError("the web app started")))
    # the real command line once; the other cases take the same entry in-process
    missing = _run_web("--run", str(tmp_path / "no_such_run"), "--port", str(_free_port()))
    assert missing.returncode == 2, missing.stderr
    assert len(_error_lines(missing.stderr)) == 1 and "no_such_run" in _error_lines(missing.stderr)[0]
    assert "Traceback" not in missing.stderr
    run = make_run(tmp_path / "mismatched")
    settings = json.loads((run / "settings.json").read_text(encoding="utf-8"))
    settings["class_names"] = CLASSES[:5]  # weights have 7 outputs
    (run / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    mismatched = command_in_process(web, "--run", str(run), "--port", str(_free_port()))
    lines = _error_lines(mismatched.stderr)
    assert mismatched.returncode == 2 and len(lines) == 1 and "model.pt" in lines[0], mismatched.stderr
    bad_size = command_in_process(web, "--run", str(make_run(tmp_path / "ok")), "--max_file_size", "lots")
    assert bad_size.returncode == 2 and "--max_file_size" in "".join(_error_lines(bad_size.stderr))
    bad_device = command_in_process(web, "--run", str(tmp_path / "ok"), "--device", "gpu0")  # was ignored before
    assert bad_device.returncode == 2 and "--device: expected cpu, cuda" in "".join(_error_lines(bad_device.stderr))


def test_an_unfinished_run_or_another_checkpoint_is_not_served(tmp_path, monkeypatch):
    """A run without finished.json (still training, or stopped) has no calibration and a model.pt that may still
    change: refused at start. --run RUN/model_final.pt would have served RUN/model.pt: refused; RUN/model.pt is the
    run."""
    from unittest import mock

    from _bundle_cli import command_in_process
    from mednet.app.web import load_web_model, web
    from mednet.errors import DataError

    monkeypatch.setattr("mednet.app.web.launch_app", mock.Mock(side_effect=AssertionError("the web app started")))
    run = make_run(tmp_path / "run")
    assert load_web_model(run / "model.pt").run_dir == run.resolve()
    (run / "model_final.pt").write_bytes((run / "model.pt").read_bytes())
    with pytest.raises(DataError, match=r"model_final\.pt: takes only a run folder, its model\.pt or a serving file"):
        load_web_model(run / "model_final.pt")
    (run / "finished.json").unlink()
    (run / "calibration.json").unlink()
    with pytest.raises(DataError, match=rf"^{run.resolve()}: training did not finish \(no finished\.json\): finish "
                                        r"it with .*--run_dir .*, or serve a finished run$"):
        load_web_model(run)
    serving = tmp_path / "serving.json"  # a serving file naming it: the same
    serving.write_text(json.dumps({"run": str(run)}), encoding="utf-8")
    refused = command_in_process(web, "--run", str(serving), "--cache_dir", str(tmp_path / "cache"))
    lines = _error_lines(refused.stderr)
    assert refused.returncode == 2 and len(lines) == 1 and "training did not finish" in lines[0], refused.stderr
    assert not (tmp_path / "cache").exists() and not (run / "feedback").exists()


def test_an_unusable_feedback_folder_is_refused_before_serving(web_model, tmp_path, monkeypatch):
    """Every flag would otherwise fail with "Not recorded (FileExistsError)" one by one, after clinicians took the
    time: a --feedback_dir that is a file, lies under one, holds a file as images/ or cannot be written stops the
    start, naming the option, and leaves no private cache behind."""
    from unittest import mock

    from _bundle_cli import command_in_process
    from mednet.app.web import build_app, web
    from mednet.errors import OptionError

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test
    cache = tmp_path / "cache"
    afile = tmp_path / "afile"
    afile.write_text("x\n", encoding="utf-8")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "images").write_text("x\n", encoding="utf-8")
    for feedback, problem in ((afile, "is a file, not a folder"), (afile / "fb", "a part of its path is a file"),
                              (odd, "is a file, not the folder of the flagged images")):
        with pytest.raises(OptionError, match=rf"^--feedback_dir: .*: {problem}; give a folder this server can "
                                              "write to$"):
            build_app(web_model, feedback_dir=feedback, cache_dir=cache)
    assert not cache.exists()
    if os.name == "posix" and os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            with pytest.raises(OptionError, match=r"^--feedback_dir: .*locked: cannot write there"):
                build_app(web_model, feedback_dir=locked, cache_dir=cache)
        finally:
            locked.chmod(0o700)
    with monkeypatch.context() as m:  # the same refusal where the test runs as root (which writes anywhere)
        denied = mock.Mock(side_effect=PermissionError(13, "Permission denied"))
        m.setattr("mednet.app.web.tempfile.TemporaryFile", denied)
        with pytest.raises(OptionError, match=r"^--feedback_dir: .*ro: cannot write there \(Permission denied\)"):
            build_app(web_model, feedback_dir=tmp_path / "ro", cache_dir=cache)
    assert not cache.exists()
    app = build_app(web_model, feedback_dir=tmp_path / "new" / "fb", cache_dir=cache)
    assert (tmp_path / "new" / "fb").is_dir() and app.mednet_demo.feedback_dir == tmp_path / "new" / "fb"

    launch = mock.Mock(side_effect=AssertionError("the web app started"))
    monkeypatch.setattr("mednet.app.web.launch_app", launch)
    refused = command_in_process(web, "--run", str(web_model.run_dir), "--feedback_dir", str(afile),
                                 "--cache_dir", str(tmp_path / "cache2"), "--port", str(_free_port()))
    lines = _error_lines(refused.stderr)
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"mednet error: --feedback_dir: {afile}: is a file, not a folder")
    assert not launch.called and not (tmp_path / "cache2").exists()


def test_a_port_in_use_is_one_error_line_and_leaves_no_folder(web_run, tmp_path, monkeypatch):
    """Another server on --port: one mednet error line naming --port (Gradio raised an OSError traceback), no
    "serving …" line before it, and neither the feedback folder nor the upload cache was made (the port is checked
    first). No browser needed."""
    from _bundle_cli import command_in_process
    from mednet.app.web import web

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # web() sets it; restored after the test
    cache, feedback = tmp_path / "cache", tmp_path / "run2" / "feedback"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        refused = command_in_process(web, "--run", str(web_run), "--port", str(port), "--cache_dir", str(cache),
                                     "--feedback_dir", str(feedback))
    assert refused.returncode == 2, refused.stderr
    assert _error_lines(refused.stderr) == [f"mednet error: --port: {port} is in use on 127.0.0.1; choose another "
                                            "--port (MEDNET_TRACEBACK=1 shows the traceback)"]
    assert "Traceback" not in refused.stderr and " serving " not in refused.stderr
    assert not cache.exists() and not feedback.parent.exists()


@pytest.mark.parametrize("host, option, problem", [
    ("192.0.2.1", "--host", "192.0.2.1 is not an address of this machine (it cannot listen there)"),
    ("no-such-host.invalid", "--host", "no-such-host.invalid: unknown host (no address found for this name)"),
])
def test_a_host_that_cannot_be_served_is_named_not_the_port(web_run, tmp_path, monkeypatch, host, option, problem):
    """Gradio reports every failed bind as "Cannot find empty port", which the demo turned into "--port N is in use"
    for an address of another machine or a mistyped host name too: the bind's own error tells them apart."""
    from _bundle_cli import command_in_process
    from mednet.app.web import web

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))
    users = tmp_path / "users.txt"
    users.write_text("alice:s3cret\n", encoding="utf-8")
    users.chmod(0o600)
    cache, feedback = tmp_path / "cache", tmp_path / "fb"
    port = _free_port()
    refused = command_in_process(web, "--run", str(web_run), "--host", host, "--auth", str(users), "--port",
                                 str(port), "--cache_dir", str(cache), "--feedback_dir", str(feedback))
    assert refused.returncode == 2, refused.stderr
    lines = _error_lines(refused.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"mednet error: {option}: {problem}"), refused.stderr
    assert "in use" not in refused.stderr and not cache.exists() and not feedback.exists()


@pytest.mark.parametrize("error, port, expected", [
    (errno.EACCES, 80, "--port: 80 is reserved on 127.0.0.1 (ports below 1024 need administrator rights)"),
    (errno.EACCES, 8080, "--host: cannot listen on 127.0.0.1 port 8080 (Permission denied)"),  # not privileged
    (errno.EADDRINUSE, 8080, "--port: 8080 is in use on 127.0.0.1"),
    (errno.EADDRNOTAVAIL, 8080, "--host: 127.0.0.1 is not an address of this machine"),
])
def test_the_bind_error_names_the_option_to_change(monkeypatch, error, port, expected):
    """What a failed bind means, by its errno (EACCES, EADDRINUSE, EADDRNOTAVAIL), also where the test cannot
    provoke it (root binds port 80)."""
    import mednet.app.web as web_module

    class RefusingSocket(socket.socket):
        def bind(self, address):
            raise OSError(error, os.strerror(error))

    monkeypatch.setattr(web_module.socket, "socket", RefusingSocket)
    assert str(web_module._bind_problem("127.0.0.1", port)).startswith(expected)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn's failed bind thread
def test_a_failed_launch_is_diagnosed_by_a_bind_of_its_own(web_model, tmp_path, monkeypatch):
    """Where Gradio's own bind fails (its "Cannot find empty port"), launch_app says why from the bind's errno: a port
    in use, an address of another machine; and when the port can be bound after all, not "in use" but Gradio's
    message, in one line. The refused start removes its cache and the empty folders it made."""
    from _bundle_cli import command_in_process
    from mednet.app.web import _bind_problem, build_app, launch_app, web
    from mednet.errors import DataError, OptionError

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))
    app = build_app(web_model, feedback_dir=tmp_path / "fb", cache_dir=tmp_path / "cache")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(OptionError, match=rf"^--port: {port} is in use on 127\.0\.0\.1"):
            launch_app(app, "127.0.0.1", port, block=False)
    assert _bind_problem("127.0.0.1", port) is None
    # Gradio's probe binds localhost only: an address of another machine reaches uvicorn, whose bind fails (5 s)
    with pytest.raises(OptionError, match=r"^--host: 192\.0\.2\.1 is not an address of this machine"):
        launch_app(app, "192.0.2.1", _free_port(), block=False, auth=[("alice", "pw")])
    assert not getattr(app, "mednet_serving", False)

    import functools

    import gradio as gr

    @functools.wraps(gr.Blocks.launch)  # the same signature: launch_app reads which options it takes
    def failing_launch(self, *args, **kwargs):
        raise OSError("Cannot find empty port in range: 1-1. You can specify a different port …")

    monkeypatch.setattr(gr.Blocks, "launch", failing_launch)
    port = _free_port()
    with pytest.raises(DataError, match=rf"^the web server did not start on http://127\.0\.0\.1:{port}/, although "
                                        r"this port can be bound now \(Gradio: Cannot find empty port"):
        launch_app(app, "127.0.0.1", port, block=False)
    # the same through the command: one line, and nothing left of this start (its cache, the folders it made)
    cache, feedback = tmp_path / "cache2", tmp_path / "run2" / "feedback"
    refused = command_in_process(web, "--run", str(web_model.run_dir), "--port", str(port), "--cache_dir",
                                 str(cache), "--feedback_dir", str(feedback))
    assert refused.returncode == 2 and len(_error_lines(refused.stderr)) == 1, refused.stderr
    assert "the web server did not start" in _error_lines(refused.stderr)[0] and " serving " not in refused.stderr
    assert not cache.exists() and not feedback.parent.exists()


def test_sigterm_stops_the_server_and_removes_its_cache(web_run, tmp_path):
    """kill, systemctl stop and docker stop send SIGTERM, which ended the demo at once: no finally ran, and every
    stop left a mednet-web-* folder in RUN/web_cache. Now the server stops, its cache and lock go, and the status is
    143. Gradio's banner (with its "set share=True" hint) is not printed; one line names the address, once the
    server listens. No browser needed (≈ 10 s)."""
    import signal

    port = _free_port()
    cache, log = tmp_path / "web_cache", tmp_path / "web.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("MEDNET_TRACEBACK", None)
    with open(log, "w", encoding="utf-8") as log_file:
        server = subprocess.Popen([sys.executable, "-m", "mednet.app.web", "--run", str(web_run), "--port", str(port),
                                   "--feedback_dir", str(tmp_path / "feedback"), "--cache_dir", str(cache)],
                                  cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/", server, log, timeout=120)
        assert [p.name.startswith("mednet-web-") for p in cache.iterdir()] == [True, True]  # the folder, its lock
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 143, log.read_text(encoding="utf-8")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output = log.read_text(encoding="utf-8")
    assert list(cache.iterdir()) == [], output
    assert "share=True" not in output and "public link" not in output and "Running on" not in output, output
    serving = [line for line in output.splitlines() if " INFO serving " in line]
    assert len(serving) == 1 and serving[0].endswith(f"on http://127.0.0.1:{port}/ (feedback: "
                                                      f"{tmp_path / 'feedback'}; no login)"), output
    assert "Traceback" not in output, output


def test_a_start_removes_the_caches_of_servers_that_are_gone_only(web_model, tmp_path, monkeypatch):
    """A server killed outright (SIGKILL, OOM, a power cut) leaves its mednet-web-* folder: the next start in the same
    cache folder removes it, as its lock (flock on mednet-web-*.lock, dropped by the kernel with the process) is
    free. A live server's folder (lock held) and a folder without a lock file (an older demo's, or one being made)
    are left alone."""
    import fcntl
    import signal

    from mednet.app.web import _release_private_cache, build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))
    cache = tmp_path / "cache"
    cache.mkdir()
    # a server that was killed: a real process took the lock, made its folder and an upload, and got SIGKILL
    code = ("import sys, time; from pathlib import Path; from mednet.app.web import _new_private_cache; "
            "folder, fd = _new_private_cache(Path(sys.argv[1])); (folder / 'upload.png').write_bytes(b'x'); "
            "print(folder, flush=True); time.sleep(600)")
    killed = subprocess.Popen([sys.executable, "-c", code, str(cache)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        dead = Path(killed.stdout.readline().strip())
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        killed.stdout.close()
    assert (dead / "upload.png").is_file() and dead.with_name(dead.name + ".lock").is_file()
    live, old = cache / "mednet-web-live0000", cache / "mednet-web-old00000"
    for folder in (live, old):
        folder.mkdir()
        (folder / "upload.png").write_bytes(b"x")
    held = os.open(live.with_name(live.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a server still running
        app = build_app(web_model, feedback_dir=tmp_path / "fb", cache_dir=cache)
        assert not dead.exists() and not dead.with_name(dead.name + ".lock").exists()
        assert (live / "upload.png").is_file() and (old / "upload.png").is_file()
        assert sorted(p.name for p in cache.iterdir()) == sorted(
            [live.name, live.name + ".lock", old.name, app.mednet_cache_dir.name, app.mednet_cache_dir.name + ".lock"])
        _release_private_cache(app)
        assert sorted(p.name for p in cache.iterdir()) == [live.name, live.name + ".lock", old.name]
    finally:
        os.close(held)


@pytest.mark.parametrize("kind", ["train", "distill", "ensemble", "unknown"])
def test_an_unfinished_run_is_told_how_to_finish_with_its_own_config(tmp_path, kind):
    """The message named train.json for every run: a distilled student is resumed with train.json and distill.json
    (and its teachers), an ensemble is built again (ensemble.json has no --run_dir), a run without settings.json
    gets the generic advice."""
    from mednet.app.web import _check_finished
    from mednet.errors import DataError

    run = tmp_path / "run"
    run.mkdir()
    settings = {"train": {"model": "receptive_field_cnn", "distillation": None},
                "distill": {"model": "shufflenet_v1", "distillation": {"teachers": ["T1", "T2"]}},
                "ensemble": {"model": "ensemble", "members": ["A/model.pt", "B/model.pt"]}}.get(kind)
    if settings is not None:
        (run / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    expected = {
        "train": rf"finish it with python -m monai.bundle run --config_file "
                 rf"bundles/dermoscopy_classification/configs/train\.json --run_dir {run} and the options it was "
                 r"started with, ",
        "distill": r"finish it with python -m monai\.bundle run --config_file \"\['bundles/dermoscopy_classification/"
                   r"configs/train\.json','bundles/dermoscopy_classification/configs/distill\.json'\]\" --run_dir "
                   rf"{run} and the options it was started with \(its --teachers too\), ",
        "ensemble": r"build the ensemble again \(python -m monai\.bundle run --config_file bundles/"
                    r"dermoscopy_classification/configs/ensemble\.json --members …: it makes a new run folder\), ",
        "unknown": rf"finish it with the command that started it and --run_dir {run}, ",
    }[kind]
    with pytest.raises(DataError, match=rf"^{run}: training did not finish \(no finished\.json\): {expected}or serve "
                                        r"a finished run$") as info:
        _check_finished(run)
    if kind != "train":
        assert "train.json --run_dir" not in str(info.value)


# ---------------------------------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the web app exited with status {process.returncode}:\n{log.read_text(encoding='utf-8')}")
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the web app did not serve {url} within {timeout:.0f} s:\n{log.read_text(encoding='utf-8')}")


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in ("127.0.0.1", "localhost")


@pytest.fixture
def chromium() -> str:
    if os.environ.get("MEDNET_SKIP_BROWSER") == "1":
        pytest.skip("MEDNET_SKIP_BROWSER=1: the browser test is skipped")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; .ci/run does) or set MEDNET_SKIP_BROWSER=1 to skip the browser test")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright Python package is missing: pip install -e '.[test]'")
    return CHROMIUM


def test_web_demo_in_a_real_browser(chromium, web_run, web_model, jpeg, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    feedback, cache, log = tmp_path / "feedback", tmp_path / "web_cache", tmp_path / "web.log"
    dicom = write_dicom(tmp_path / "uploads" / DICOM_FILE_NAME, lesion_image(seed=5, h=64, w=64))
    corrupt = tmp_path / "uploads" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    oversized = tmp_path / "uploads" / "huge.png"
    oversized.write_bytes(np.random.default_rng(0).integers(0, 256, 2 * 1024**2, dtype=np.uint8).tobytes())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w", encoding="utf-8") as log_file:
        server = subprocess.Popen([sys.executable, "-m", "mednet.app.web", "--run", str(web_run), "--port", str(port),
                                   "--feedback_dir", str(feedback), "--cache_dir", str(cache),
                                   "--max_file_size", "1mb"], cwd=REPO, env=env, stdout=log_file,
                                  stderr=subprocess.STDOUT)
    try:
        _wait_for_server(url, server, log)
        expected = web_model.predict(jpeg, method=None)
        requests: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.on("request", lambda request: requests.append(request.url))
                page.on("websocket", lambda ws: requests.append(ws.url))
                page.goto(url, wait_until="load")  # not "networkidle": the heartbeat stream stays open
                expect(page.locator("#disclaimer")).to_contain_text("does not replace a clinician")

                # 1. a JPEG: the top-3 and the overlay
                page.locator("#upload input[type=file]").set_input_files(str(jpeg))
                prediction = page.locator("#prediction")
                expect(prediction).to_contain_text("Top-3", timeout=120_000)
                text = prediction.inner_text()
                for name, p_class in zip(expected["classes"], expected["probabilities"]):
                    assert name in text and f"{100 * p_class:.1f} %" in text
                assert ("uncertain — refer" in text.lower()) == expected["refer"]
                overlay = page.locator("#overlay img")
                expect(overlay).to_be_visible(timeout=60_000)
                page.wait_for_function("() => { const i = document.querySelector('#overlay img');"
                                       " return i && i.complete && i.naturalWidth > 0; }")
                first_src = overlay.get_attribute("src")

                # 2. flag as wrong
                corrected = next(c for c in CLASSES if c != expected["predicted"])
                page.locator("#corrected input").click()
                page.get_by_role("option", name=corrected, exact=True).click()
                page.locator("#comment textarea").fill("looks different to me")
                page.locator("#flag").click()
                expect(page.locator("#feedback_status")).to_contain_text("recorded", timeout=60_000)
                rows = list(csv.DictReader((feedback / "feedback.csv").read_text(encoding="utf-8").splitlines()))
                assert len(rows) == 1
                row = rows[0]
                assert row["corrected"] == corrected and row["predicted"] == expected["predicted"]
                assert row["model_run"] == str(web_run.resolve()) and row["comment"] == "looks different to me"
                assert row["source_name"] == jpeg.name
                assert (feedback / "images" / f"{row['image_sha256']}.png").is_file()
                assert abs(float(row["probability"]) - expected["confidence"]) < 1e-5
                page.screenshot(path=str(tmp_path / "web_demo.png"))
                assert (tmp_path / "web_demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                if os.environ.get("MEDNET_UPDATE_SCREENSHOT") == "1":  # the README's copy: 128 colours, small
                    (REPO / "docs").mkdir(exist_ok=True)
                    with Image.open(tmp_path / "web_demo.png") as shot:
                        shot.convert("RGB").quantize(128, dither=Image.Dither.NONE).save(
                            REPO / "docs" / "web_demo.png", optimize=True)

                # 3. another explanation
                page.locator("#method input").click()
                page.get_by_role("option", name="Integrated Gradients").click()
                new_overlay = ("(old) => { const i = document.querySelector('#overlay img');"
                               " return i && i.getAttribute('src') !== old && i.complete && i.naturalWidth > 0; }")
                page.wait_for_function(new_overlay, arg=first_src, timeout=120_000)
                expect(prediction).to_contain_text("Top-3")

                # 4. a DICOM upload: predicted; its name and patient attributes stay out of the log and the disk
                ig_src = overlay.get_attribute("src")
                page.locator("#upload input[type=file]").set_input_files(str(dicom))
                page.wait_for_function(new_overlay, arg=ig_src, timeout=120_000)
                expect(prediction).to_contain_text("Top-3")
                # the JPEG's correction and comment were cleared: one click cannot send them with the DICOM
                expect(page.locator("#corrected input")).to_have_value("")
                expect(page.locator("#comment textarea")).to_have_value("")
                for secret in SECRETS:
                    assert secret not in page.content()
                for cached in cache.rglob("*"):  # the upload was deleted once decoded: no name, no attribute left
                    assert cached.suffix.lower() != ".dcm" and not any(s in cached.name for s in SECRETS)
                    if cached.is_file():
                        assert b"Doe" not in cached.read_bytes() and PATIENT_ID.encode() not in cached.read_bytes()

                # 5. a corrupt file, then a good one and an oversized one after it: messages on the page
                page.locator("#upload input[type=file]").set_input_files(str(corrupt))
                expect(prediction).to_contain_text("Cannot analyse", timeout=60_000)
                page.locator("#upload input[type=file]").set_input_files(str(jpeg))
                expect(prediction).to_contain_text("Top-3", timeout=120_000)
                page.locator("#corrected input").click()
                page.get_by_role("option", name=corrected, exact=True).click()
                page.locator("#upload input[type=file]").set_input_files(str(oversized))
                expect(page.get_by_text("exceed the maximum allowed size", exact=False).first).to_be_visible(
                    timeout=60_000)  # refused by the page before any byte is sent
                # ... and the JPEG is forgotten: a flag now cannot record it under the correction meant for the file
                expect(prediction).to_contain_text("larger than the limit", timeout=60_000)
                expect(page.locator("#corrected input")).to_have_value("")
                page.locator("#corrected input").click()
                page.get_by_role("option", name=corrected, exact=True).click()
                page.locator("#flag").click()
                expect(page.locator("#feedback_status")).to_contain_text("Upload an image first", timeout=60_000)
                assert len(list(csv.DictReader((feedback / "feedback.csv").read_text(encoding="utf-8")
                                               .splitlines()))) == 1
                page.screenshot(path=str(tmp_path / "oversized.png"))
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    server_log = log.read_text(encoding="utf-8")
    for secret in SECRETS:
        assert secret not in server_log, f"{secret!r} reached the server log"
    (tmp_path / "requests.txt").write_text("\n".join(requests) + "\n", encoding="utf-8")  # a test artefact
    outside = sorted({u for u in requests if not _is_local(u)})
    assert requests and not outside, f"the page requested resources outside 127.0.0.1: {outside}"
    uploads = [u for u in requests if urlsplit(u).path.endswith("/gradio_api/upload")]
    assert len(uploads) == 4, uploads  # JPEG, DICOM, corrupt file, JPEG: the oversized one never left the browser


def test_the_request_check_tells_local_from_outside():
    for url in ("http://127.0.0.1:7860/gradio_api/file=/x.webp", "http://localhost:1/", "ws://127.0.0.1:9/queue",
                "data:image/png;base64,AAAA", "blob:http://127.0.0.1:7860/0f3c", "about:blank"):
        assert _is_local(url), url
    for url in ("https://fonts.googleapis.com/css2?family=Inter", "https://api.gradio.app/pkg-version",
                "http://127.0.0.1.example.com/", "https://huggingface.co/api/telemetry", "ftp://127.0.0.1/x"):
        assert not _is_local(url), url


def test_a_name_with_one_unusable_address_is_served_on_the_other(monkeypatch):
    """``localhost`` may resolve to 127.0.0.1 and ::1 where IPv6 is off: one address that cannot be bound
    (EADDRNOTAVAIL) does not refuse the host while another can; only a name none of whose addresses can be bound
    is "not an address of this machine"."""
    import mednet.app.web as web_module

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    usable = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))
    absent = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))  # TEST-NET-1: no machine's own
    monkeypatch.setattr(web_module.socket, "getaddrinfo", lambda *a, **k: [absent, usable])
    assert web_module._bind_problem("localhost", port) is None
    monkeypatch.setattr(web_module.socket, "getaddrinfo", lambda *a, **k: [absent])
    assert str(web_module._bind_problem("localhost", port)).startswith(
        "--host: localhost is not an address of this machine")


def test_the_unfinished_run_advice_quotes_a_folder_with_spaces(tmp_path):
    """The command in the message is pasted into a shell: a run folder with a space stays one argument."""
    from mednet.app.web import _check_finished
    from mednet.errors import DataError

    run = tmp_path / "my runs" / "run 1"
    run.mkdir(parents=True)
    (run / "settings.json").write_text(json.dumps({"model": "receptive_field_cnn"}), encoding="utf-8")
    with pytest.raises(DataError) as info:
        _check_finished(run)
    assert f"--run_dir '{run}' and the options" in str(info.value)
