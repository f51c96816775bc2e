"""Every catalogued bad input ends a ``python -m monai.bundle run`` with one ``mednet error:`` line, no traceback.

One subprocess (≈ 5 s of imports) keeps the command line itself tested: a misspelt option, refused in the
bundle's ``initialize`` with the one line on stderr, no traceback and a non-zero exit status. The other bad inputs
(a bad input volume, a bad datalist, a truncated or malicious checkpoint, a bad label) run in-process through
:func:`_bundle_cli.bundle_error_line` (the same configs, checks and error hook's choice of exception and line).
The error hook itself is unit-tested in-process below, with two small scripts run as subprocesses where only a
process shows it: a user error inside an engine (no traceback on stdout either), and SIGTERM during an atomic write
(the temporary file is removed, exit status 143).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from _bundle_cli import bundle_error_line
from mednet.app.bundles import config_file_argument
from mednet.bundle_support import error_line, install_error_hook, user_error
from mednet.errors import DataError
from mednet.errors import OptionError

REPO = Path(__file__).resolve().parents[1]


class _Malicious:
    """Pickles to a call of ``os.system``: what a checkpoint from an untrusted source can hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _inputs(cohort: Path, tmp: Path) -> dict[str, tuple[str, dict]]:
    """The bad inputs, and the bundle config and overrides (``--key value``) of each."""
    from mednet.networks import TissueFCN

    good_ckpt = tmp / "model.pt"
    torch.save(TissueFCN(variant="skip").state_dict(), good_ckpt)  # untrained: the runs stop before inference
    data = good_ckpt.read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"network": _Malicious(tmp / "PWNED")}, tmp / "malicious.pt")
    volume = (cohort / "images" / "sub-003.nii.gz").read_bytes()
    (tmp / "truncated.nii.gz").write_bytes(volume[: len(volume) // 2])
    (tmp / "notes.nii.gz").write_text("scan of subject 7, see the lab book\n")
    (tmp / "bad_datalist").mkdir()
    (tmp / "bad_datalist" / "datalist.json").write_text('{"training": [{"image": "images/sub-000.nii.gz",}]}')

    image = str(cohort / "images" / "sub-003.nii.gz")
    label = nib.load(cohort / "labels" / "sub-003.nii.gz")
    bad_label = np.asarray(label.dataobj).copy()
    bad_label.flat[bad_label.size // 2] = 7
    (tmp / "bad_label").mkdir()
    nib.save(nib.Nifti1Image(bad_label, label.affine), tmp / "bad_label" / "label7.nii.gz")
    (tmp / "bad_label" / "datalist.json").write_text(json.dumps({"test": [{"image": image, "label": "label7.nii.gz"}]}))
    out = {"output_dir": str(tmp / "predictions")}
    return {
        "truncated_nifti": ("inference", {"input": str(tmp / "truncated.nii.gz"), "ckpt_path": str(good_ckpt), **out}),
        "text_as_nifti": ("inference", {"input": str(tmp / "notes.nii.gz"), "ckpt_path": str(good_ckpt), **out}),
        "bad_datalist": ("train", {"dataset_dir": str(tmp / "bad_datalist"), "runs_root": str(tmp / "runs_bad")}),
        "truncated_checkpoint": ("inference", {"input": image, "ckpt_path": str(tmp / "truncated.pt"), **out}),
        "malicious_checkpoint": ("inference", {"input": image, "ckpt_path": str(tmp / "malicious.pt"), **out}),
        "evaluate_bad_label": ("evaluate", {"dataset_dir": str(tmp / "bad_label"), "ckpt_path": str(good_ckpt)}),
    }


@pytest.fixture(scope="module")
def bad_inputs(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, dict]]]:
    """The inputs' folder, and each case's config and overrides."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    return tmp, _inputs(tiny_cohort, tmp)


def case_line(bad_inputs: tuple[Path, dict], case: str) -> str:
    """The one ``mednet error:`` line of ``case`` (in-process, :func:`bundle_error_line`)."""
    config, overrides = bad_inputs[1][case]
    line = bundle_error_line("brain_tissue_fcn", config, **overrides)
    assert "MEDNET_TRACEBACK=1" in line
    return line


def the_error_line(proc: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one ``mednet error:`` line on stderr and no traceback on stderr or stdout (MONAI's
    StatsHandler logs to stdout)."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-5000:]
    assert "Traceback" not in proc.stdout, proc.stdout[-5000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mednet error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "MEDNET_TRACEBACK=1" in lines[0]
    return lines[0]


@pytest.mark.parametrize(("case", "file", "problem"), [
    ("truncated_nifti", "truncated.nii.gz", "truncated|ended before the end-of-stream marker"),
    ("text_as_nifti", "notes.nii.gz", "not a gzip file"),
    ("bad_datalist", "datalist.json", "not valid JSON"),
    ("truncated_checkpoint", "truncated.pt", "cannot read checkpoint"),
    ("evaluate_bad_label", "label7.nii.gz", r"label values \{7\} are not in the allowed set"),
])
def test_bad_input_is_one_line_naming_file_and_problem(bad_inputs: tuple, case: str, file: str, problem: str) -> None:
    line = case_line(bad_inputs, case)
    tmp = bad_inputs[0]
    assert line.startswith(f"mednet error: {tmp}") and f"{file}: " in line and re.search(problem, line), line
    assert not list(tmp.glob("eval-*")), "a failed evaluation left a report folder"


def test_malicious_checkpoint_is_refused_without_running_it(bad_inputs: tuple) -> None:
    line = case_line(bad_inputs, "malicious_checkpoint")
    assert not (bad_inputs[0] / "PWNED").exists()  # the pickled os.system call never ran
    assert "malicious.pt: refused to load the checkpoint" in line and re.search(r"(posix|nt)\.system", line), line
    assert "weights_only` set to `False` will likely succeed" not in line  # torch's advice, unsafe here


def test_misspelt_option_is_refused_before_any_work(tiny_cohort: Path, tmp_path: Path) -> None:
    """The command-line smoke path of the error hook: one line on stderr, no traceback, a failed exit status."""
    import monai.bundle.scripts
    from unittest import mock

    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           config_file_argument("brain_tissue_fcn", "train"), "--epoch", "2", "--dataset_dir", str(tiny_cohort),
           "--runs_root", str(tmp_path / "runs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MEDNET_TRACEBACK", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=600)
    line = the_error_line(proc)
    assert line.startswith("mednet error: --epoch: unknown option for train.json (did you mean --epochs?)"), line
    # it stopped inside `initialize`: MONAI logs its input summary only after initialize, and `run` would have
    # created the run directory before extracting any patch
    summary = "input summary of monai.bundle.scripts.run"
    assert summary not in proc.stdout + proc.stderr
    with mock.patch.object(monai.bundle.scripts.logger, "info") as info:  # what a run past initialize logs
        monai.bundle.scripts._log_input_summary(tag="run", args={})
    assert summary in info.call_args_list[0].args[0]
    assert not (tmp_path / "runs").exists()


def _chain(*excs: BaseException) -> BaseException:
    """``excs[0]`` raised from ``excs[1]`` raised from … (outermost first)."""
    for outer, inner in zip(excs, excs[1:]):
        outer.__cause__ = inner
    return excs[0]


def test_hook_shows_the_outermost_user_error() -> None:
    eof = EOFError("Compressed file ended")
    data = DataError("a/sub-1.nii.gz", "cannot read image (EOFError: Compressed file ended)")
    outer = _chain(RuntimeError("Failed to evaluate"), RuntimeError("applying transform"), data, eof)
    assert user_error(outer) is data
    # a DataError raised while handling another one (a datalist entry → its file): the outer one has the context
    inner = DataError("img.nii.gz", "file does not exist")
    wrapper = DataError("datalist.json", "training[0] is unusable: img.nii.gz: file does not exist")
    wrapper.__context__ = inner
    assert user_error(RuntimeError("x")) is None  # a bug keeps its traceback
    assert user_error(_chain(RuntimeError("wrap"), wrapper)) is wrapper
    option = OptionError({"--epoch": "unknown option for train.json"})
    assert user_error(_chain(RuntimeError("Failed to evaluate"), option)) is option
    # fallback: only a deepest FileNotFoundError that names its file
    missing = FileNotFoundError(2, "No such file or directory", "x.json")
    assert user_error(_chain(RuntimeError("wrap"), missing)) is missing
    assert user_error(_chain(ValueError("wrap"), KeyError("image"))) is None


def test_a_plain_value_error_is_a_bug_with_its_traceback() -> None:
    """Any deepest ValueError was printed as one line: ``$int('x')`` in a config gave ``mednet error: invalid literal
    for int() with base 10: 'x'`` — no path, and the bug's traceback hidden."""
    try:
        int("x")
    except ValueError as e:
        bug = e
    assert user_error(_chain(RuntimeError("Failed to evaluate"), bug)) is None
    assert user_error(FileNotFoundError("the writer wrote nothing")) is None  # names no file: a bug too
    assert user_error(_chain(RuntimeError("wrap"), DataError("a.png", "cannot decode"), bug)).path == "a.png"


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> None:
        try:
            raise EOFError("Compressed file ended")
        except EOFError as e:
            raise DataError("a/sub-1.nii.gz", "cannot read image (EOFError: Compressed file ended)") from e


def test_user_error_raised_in_a_dataloader_worker() -> None:
    """``--num_workers 2``: torch re-raises a worker's error as a RuntimeError holding its traceback as text."""
    with pytest.raises(RuntimeError) as info:
        next(iter(torch.utils.data.DataLoader(_Unreadable(), num_workers=1)))
    assert not isinstance(info.value, DataError) and "Original Traceback" in str(info.value)
    shown = user_error(_chain(RuntimeError("Failed to evaluate"), info.value))
    assert str(shown) == "a/sub-1.nii.gz: cannot read image (EOFError: Compressed file ended)"


def test_engine_logs_drop_a_user_errors_traceback_and_keep_a_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    """MONAI's StatsHandler logs each exception with logger.exception before re-raising: a bad validation image
    printed three tracebacks (141 lines) above the one line. Bugs keep their traceback in the log."""
    import io
    import logging

    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.delenv("MEDNET_TRACEBACK", raising=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    engine_log = logging.getLogger("mednet-test-engine")
    engine_log.addHandler(handler)
    restore = install_error_hook()
    try:
        for error in (DataError("img.png", "cannot decode"), _chain(RuntimeError("wrapped"), DataError("a", "b")),
                      ZeroDivisionError("a bug")):
            try:
                raise error
            except Exception:
                engine_log.exception(f"Exception: {error}")
    finally:
        engine_log.removeHandler(handler)
        restore()
    logged = stream.getvalue()
    assert "cannot decode" not in logged and "wrapped" not in logged
    assert "Exception: a bug" in logged and "Traceback" in logged and "ZeroDivisionError" in logged


def test_hook_prints_one_line_and_keeps_tracebacks_for_bugs(monkeypatch: pytest.MonkeyPatch, capsys,
                                                            request: pytest.FixtureRequest) -> None:
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: seen.append(a))
    monkeypatch.delenv("MEDNET_TRACEBACK", raising=False)
    restore = install_error_hook()
    install_error_hook()  # idempotent: not chained twice
    request.addfinalizer(restore)
    err = _chain(RuntimeError("Failed"), DataError("x.pt", "cannot read\n   checkpoint\n(details)"))
    sys.excepthook(type(err), err, None)
    assert capsys.readouterr().err == "mednet error: x.pt: cannot read checkpoint (details) " \
                                      "(MEDNET_TRACEBACK=1 shows the traceback)\n"
    assert seen == []
    bug = ZeroDivisionError("division by zero")
    sys.excepthook(type(bug), bug, None)
    assert seen == [(ZeroDivisionError, bug, None)] and capsys.readouterr().err == ""
    assert error_line(OptionError({"--a": "x", "--b": "y"})).startswith("mednet error: --a: x; --b: y (")


def test_traceback_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = lambda *a: None  # noqa: E731
    monkeypatch.setattr(sys, "excepthook", previous)
    monkeypatch.setenv("MEDNET_TRACEBACK", "1")
    restore = install_error_hook()
    try:
        assert sys.excepthook is previous
    finally:
        restore()


_ENGINE_ERROR_SCRIPT = """
from ignite.engine import Engine
from monai.handlers import StatsHandler

from mednet.bundle_support import install_error_hook
from mednet.errors import DataError

install_error_hook()  # as a bundle's initialize does: before the engines and their StatsHandler loggers exist


def step(engine, batch):
    try:
        raise EOFError("Compressed file ended")
    except EOFError as e:
        raise DataError("a/broken.jpg", "cannot decode image") from e


engine = Engine(step)
StatsHandler(iteration_log=False).attach(engine)  # monai.apps.get_logger: a new stdout handler, not propagated
engine.run([0], max_epochs=1)
"""


def test_a_user_error_inside_an_engine_prints_no_traceback_on_stdout(tmp_path: Path) -> None:
    """A DataError raised inside an evaluator printed two full tracebacks on stdout (StatsHandler's logger.exception,
    on a logger created after the hook's filter was given to the handlers of that moment)."""
    script = tmp_path / "engine_error.py"
    script.write_text(_ENGINE_ERROR_SCRIPT, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MEDNET_TRACEBACK", None)
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=300)
    line = the_error_line(proc)
    assert line.startswith("mednet error: a/broken.jpg: cannot decode image"), line
    assert "cannot decode image" not in proc.stdout, proc.stdout[-3000:]


def test_a_handler_created_after_the_hook_drops_a_user_errors_record_and_keeps_a_bugs(capsys) -> None:
    from monai.apps import get_logger

    restore = install_error_hook()
    try:
        late = get_logger("mednet-test-late-stats")  # its stdout handler is created now, after the hook
        for error in (DataError("img.png", "cannot decode"), ZeroDivisionError("a bug")):
            try:
                raise error
            except Exception:
                late.exception(f"Exception: {error}")
    finally:
        restore()
    out = capsys.readouterr().out
    assert "cannot decode" not in out
    assert "Exception: a bug" in out and "Traceback" in out and "ZeroDivisionError" in out
    # undone: the handlers lose the filter, the record factory is the previous one
    import logging

    assert not any(f for h in late.handlers for f in h.filters)
    assert not getattr(logging.getLogRecordFactory(), "mednet", False)


@pytest.fixture
def default_sigterm():
    """SIGTERM at its default for the test (a test runner may install its own handler), restored after."""
    import signal

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_run_bundle_undoes_the_hook_when_the_run_ends(monkeypatch: pytest.MonkeyPatch, default_sigterm) -> None:
    """After one refused run_bundle, an unrelated bug in the caller's script printed ``mednet error: cannot
    reshape…`` without its traceback: the hook stayed installed for good."""
    import logging
    import signal

    import mednet.app.bundles as bundles
    from mednet.app.bundles import run_bundle

    monkeypatch.delenv("MEDNET_TRACEBACK", raising=False)
    hook, factory = sys.excepthook, logging.getLogRecordFactory()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    during = {}

    def refuse(config_file, overrides) -> None:  # what check_overrides sees: the run in progress
        during.update(hook=getattr(sys.excepthook, "mednet", False), sigterm=signal.getsignal(signal.SIGTERM))
        raise OptionError({"--epoch": "unknown option for train.json"})

    monkeypatch.setattr(bundles, "check_overrides", refuse)
    with pytest.raises(OptionError):
        run_bundle("brain_tissue_fcn", "train", epoch=1)
    assert during["hook"] is True and during["sigterm"] not in (signal.SIG_DFL, None)
    assert sys.excepthook is hook and logging.getLogRecordFactory() is factory
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


_SIGTERM_SCRIPT = """
import sys
import time

from mednet.bundle_support import install_error_hook
from mednet.io import atomic_path

install_error_hook()  # as a bundle's initialize does
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a checkpoint")
    print(tmp, flush=True)
    time.sleep(120)  # Slurm's time limit arrives here
"""


def test_sigterm_unwinds_the_run_so_temporary_files_are_removed(tmp_path: Path) -> None:
    """SIGTERM (Slurm timeouts, torchrun teardown) ended the process without running ``finally``: an atomic write in
    progress left its ``.model.tmp-….pt`` beside the run's files. Now it exits with 143 after the cleanup."""
    import signal

    script = tmp_path / "writer.py"
    script.write_text(_SIGTERM_SCRIPT, encoding="utf-8")
    target = tmp_path / "run" / "model.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(target)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.is_file(), proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 143
    assert not tmp.exists() and not target.exists() and list(target.parent.iterdir()) == []


def test_sigterm_handling_only_replaces_the_default_in_the_main_thread(default_sigterm) -> None:
    import signal
    import threading

    from mednet.bundle_support import install_sigterm_exit

    def own(signum, frame) -> None:
        """A caller's own handler."""

    previous = signal.signal(signal.SIGTERM, own)
    try:
        install_sigterm_exit()()
        assert signal.getsignal(signal.SIGTERM) is own  # theirs decides
    finally:
        signal.signal(signal.SIGTERM, previous)
    results = []
    thread = threading.Thread(target=lambda: results.append(install_sigterm_exit()))
    thread.start()
    thread.join()
    results[0]()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_bad_training_image_leaves_no_run_folder(tmp_path: Path) -> None:
    """MONAI resolved ``@output_dir`` (creating the run folder) before ``@normalization`` (decoding every training
    image): a bad image left an empty train-*/ folder behind, contrary to the config's ``_comment_run``."""
    import pandas as pd

    from _dermoscopy_fixtures import synthetic_split

    split = synthetic_split(tmp_path / "data", n_images=30, size=32, seed=1)
    table = pd.read_csv(split / "split.csv")
    bad = (split / table[table["split"] == "training"]["path"].iloc[0]).resolve()
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    runs = tmp_path / "runs"
    line = bundle_error_line("dermoscopy_classification", "train", dataset_dir=str(split), runs_root=str(runs),
                             model="receptive_field_cnn", image_size=32, epochs=1)
    assert line.startswith(f"mednet error: {bad}: cannot decode image"), line
    assert not runs.exists() or not any(runs.iterdir())


def _fake_member(folder: Path, dataset_dir: Path, classes: list[str], size: int) -> Path:
    """A dermoscopy run folder as training leaves it (settings.json, calibration.json, finished.json), holding an
    untrained network: an ensemble member, with nothing trained."""
    from mednet.networks import build_classifier

    folder.mkdir()
    torch.manual_seed(0)
    torch.save(build_classifier("receptive_field_cnn", len(classes), size).state_dict(), folder / "model.pt")
    settings = {"model": "receptive_field_cnn", "image_size": size, "cifar_stem": None, "cosine_head": False,
                "batch_norm": True, "class_names": classes, "loss": "ce", "augmentation": "none",
                "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "seed": 0, "dataset_dir": str(dataset_dir)}
    (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    (folder / "calibration.json").write_text(json.dumps({"temperature": 1.0}), encoding="utf-8")
    (folder / "finished.json").write_text("{}", encoding="utf-8")
    return folder


def test_a_bad_validation_image_leaves_no_ensemble_folder(tmp_path: Path) -> None:
    """ensemble.json's run list resolved ``@output_dir`` (creating ensemble-*/) before ``@run_settings``, whose
    weights need the members' outputs on every validation image: a bad one left an empty ensemble folder."""
    import pandas as pd
    from PIL import Image

    classes, size = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"], 32
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    splits = {1: "training", 2: "training", 3: "validation", 4: "validation", 5: "test", 6: "test"}
    for i in splits:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(images / f"L{i}.png")
    (images / "L4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    data = tmp_path / "split"
    data.mkdir()
    pd.DataFrame([{"image_id": f"I{i}", "lesion_id": f"L{i}", "dx": classes[i % 7], "dx_type": "synthetic",
                   "path": str(images / f"L{i}.png"), "split": split} for i, split in splits.items()]).to_csv(
        data / "split.csv", index=False)
    members = [str(_fake_member(tmp_path / name, data, classes, size)) for name in ("a", "b")]
    runs = tmp_path / "ensembles"
    line = bundle_error_line("dermoscopy_classification", "ensemble", dataset_dir=str(data), members=members,
                             runs_root=str(runs), device="cpu")
    assert line.startswith(f"mednet error: {images / 'L4.png'}: cannot decode image"), line
    assert not runs.exists() or not any(runs.iterdir())


def test_the_closing_report_line_appears_once(tmp_path, capsys) -> None:
    """``report_paths`` is logged where logging shows INFO (a bundle's logging.conf: stdout) and printed only when
    nothing would show it; it printed *and* logged, so every bundle command ended with the line twice."""
    import io
    import logging

    from mednet.bundle_support import report_paths

    root, mednet_logger = logging.getLogger(), logging.getLogger("mednet")
    saved = root.handlers[:], root.level, mednet_logger.handlers[:], mednet_logger.level
    stream = io.StringIO()
    try:
        root.handlers[:] = []
        mednet_logger.handlers[:] = []
        mednet_logger.setLevel(logging.NOTSET)
        root.setLevel(logging.WARNING)  # nothing shows INFO: printed
        line = report_paths(tmp_path, "report")
        assert capsys.readouterr().out == line + "\n" and line == f"mednet: report written to {tmp_path.resolve()}"
        handler = logging.StreamHandler(stream)
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
        root.setLevel(logging.INFO)  # a handler, but one that drops INFO: still printed
        report_paths(tmp_path, "report")
        assert capsys.readouterr().out == line + "\n" and stream.getvalue() == ""
        handler.setLevel(logging.INFO)  # logging.conf's console handler: logged once, not printed
        report_paths(tmp_path, "report")
        assert capsys.readouterr().out == "" and stream.getvalue() == line + "\n"
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        mednet_logger.handlers[:], mednet_logger.level = saved[2], saved[3]
