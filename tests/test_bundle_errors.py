"""Every catalogued bad input ends a ``python -m monai.bundle run`` with one ``mednet error:`` line, no traceback.

One subprocess (≈ 5 s of imports) keeps the command line itself tested: a misspelt option, refused in the
bundle's ``initialize`` with the one line on stderr, no traceback and a non-zero exit status. The other bad inputs
(a bad input volume, a bad datalist, a truncated or malicious checkpoint, a bad label) run in-process through
:func:`_bundle_cli.bundle_error_line` (the same configs, checks and error hook's choice of exception and line).
The error hook itself is unit-tested in-process below.
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
    """The run failed with exactly one ``mednet error:`` line on stderr and no traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-5000:]
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
    # fallback: the deepest ValueError / FileNotFoundError (e.g. MONAI's own messages)
    missing = FileNotFoundError("Cannot find the config file: x.json.")
    assert user_error(_chain(RuntimeError("wrap"), missing)) is missing
    assert user_error(_chain(ValueError("wrap"), KeyError("image"))) is None


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
    try:
        install_error_hook()
        for error in (DataError("img.png", "cannot decode"), _chain(RuntimeError("wrapped"), DataError("a", "b")),
                      ZeroDivisionError("a bug")):
            try:
                raise error
            except Exception:
                engine_log.exception(f"Exception: {error}")
    finally:
        engine_log.removeHandler(handler)
    logged = stream.getvalue()
    assert "cannot decode" not in logged and "wrapped" not in logged
    assert "Exception: a bug" in logged and "Traceback" in logged and "ZeroDivisionError" in logged


def test_hook_prints_one_line_and_keeps_tracebacks_for_bugs(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: seen.append(a))
    monkeypatch.delenv("MEDNET_TRACEBACK", raising=False)
    install_error_hook()
    install_error_hook()  # idempotent: not chained twice
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
    install_error_hook()
    assert sys.excepthook is previous
