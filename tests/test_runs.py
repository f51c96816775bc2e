"""Run folders (:mod:`mednet.runs`): which folder a training run may write to, which run a job's checkpoint
belongs to (through symbolic links), which settings a run records (nested overrides included) and the command-line
hints of its refusals."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path

import fire.parser
import pytest
import torch

from mednet.engines.checkpoints import load_weights
from mednet.errors import DataError, OptionError
from mednet.runs import (LOCK_FILE, OVERRIDES_KEY, RESUME_FILE, check_run_dir, check_run_settings,
                         checkpoint_provenance, command_overrides, latest_run, mark_finished, new_run_dir,
                         resolve_checkpoint, run_setting, training_run_dir, write_run_settings)


def _run(folder: Path, settings: dict | None, finished: bool = True) -> Path:
    """A training run folder: model.pt (a Linear(2, 2)), settings.json and, when ``finished``, finished.json."""
    folder.mkdir(parents=True)
    torch.save(torch.nn.Linear(2, 2).state_dict(), folder / "model.pt")
    if settings is not None:
        (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    if finished:
        mark_finished(folder, epochs=1)
    return folder


# --- a checkpoint reached through a symbolic link --------------------------------------------------------------


def test_a_symlinked_checkpoint_is_checked_against_the_run_that_holds_it(tmp_path: Path) -> None:
    """shared/best.pt -> run(variant=unpool)/model.pt was used for a variant=skip job: settings.json was looked for
    beside the link (none: not checked) while provenance recorded the run's settings."""
    run = _run(tmp_path / "runs" / "train-unpool-20260101-000000", {"variant": "unpool", "views": [0, 1, 2]})
    (tmp_path / "shared").mkdir()
    link = tmp_path / "shared" / "best.pt"
    link.symlink_to(run / "model.pt")

    resolved = resolve_checkpoint(str(link), tmp_path / "runs", "train-skip-", {"variant": "skip"})
    assert resolved == (run / "model.pt").resolve()
    with pytest.raises(DataError, match=f"variant='unpool' \\(this run: 'skip'\\).*settings: {run / 'settings.json'}"):
        check_run_settings(link, {"variant": "skip"})
    with pytest.raises(DataError, match="trained with variant='unpool'"):
        load_weights(torch.nn.Linear(2, 2), link, settings={"variant": "skip"})
    with pytest.raises(DataError, match="trained with variant='unpool'"):
        checkpoint_provenance(link, {"variant": "skip"}, job="inference")
    assert run_setting(link, "views") == [0, 1, 2]  # the run's record, not "not recorded beside the link"

    load_weights(torch.nn.Linear(2, 2), link, settings={"variant": "unpool"})
    prov = checkpoint_provenance(link, {"variant": "unpool"})
    assert prov["checkpoint"]["training_settings"] == {"variant": "unpool", "views": [0, 1, 2]}
    assert prov["checkpoint"]["run_dir"] == str(run.resolve())

    # a linked run folder was always fine; it still is
    (tmp_path / "link_run").symlink_to(run)
    with pytest.raises(DataError, match="variant='unpool'"):
        check_run_settings(tmp_path / "link_run" / "model.pt", {"variant": "skip"})
    assert resolve_checkpoint(tmp_path / "link_run", tmp_path, "x") == (run / "model.pt").resolve()


# --- the default checkpoint --------------------------------------------------------------------------------------


def test_a_run_without_settings_is_never_the_default_for_a_job_that_names_settings(tmp_path: Path) -> None:
    """A finished run without settings.json (copied, an older tool) was picked whatever the settings asked for."""
    wanted = {"variant": "skip", "views": [0, 1, 2]}
    old = _run(tmp_path / "train-skip-20260101-000000", wanted)
    unknown = _run(tmp_path / "train-skip-20260102-000000", None)  # newer, settings unknown
    assert latest_run(tmp_path, "train-skip-", settings=wanted) == old
    assert resolve_checkpoint(None, tmp_path, "train-skip-", wanted) == (old / "model.pt").resolve()
    with pytest.raises(DataError) as err:
        latest_run(tmp_path, "train-skip-", settings={"views": [1]})
    assert "train-skip-20260102-000000: no settings.json (trained with unknown settings)" in str(err.value)
    # without settings to match, and with an explicit --ckpt_path, it is still used
    assert latest_run(tmp_path, "train-skip-") == unknown
    assert resolve_checkpoint(unknown, tmp_path, "train-skip-", {"views": [1]}) == (unknown / "model.pt").resolve()


# --- --run_dir ---------------------------------------------------------------------------------------------------


def test_run_dir_never_trains_over_a_finished_run(tmp_path: Path) -> None:
    run = _run(tmp_path / "done", {"variant": "skip"}, finished=False)
    (run / "checkpoint_last.pt").write_bytes(b"state")
    mark_finished(run, epochs=2)
    before = (run / "model.pt").read_bytes()
    with pytest.raises(DataError) as err:
        training_run_dir(str(run), tmp_path / "runs", "train-skip")
    assert str(err.value).startswith(f"{run}: holds a finished training run (finished.json)")
    assert (run / "model.pt").read_bytes() == before and not (tmp_path / "runs").exists()


def test_run_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{tmp_path / 'afile'}: --run_dir is a file, not a folder$"):
        training_run_dir(str(tmp_path / "afile"), tmp_path, "train-skip")


def test_run_dir_refuses_a_trained_model_it_cannot_resume(tmp_path: Path) -> None:
    """model.pt and settings.json but no checkpoint_last.pt (a run of an earlier mednet, a copied folder) was
    adopted, and its settings.json overwritten by the next write_run_settings."""
    run = _run(tmp_path / "old", {"variant": "unpool"}, finished=False)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(DataError) as err:
        training_run_dir(str(run), tmp_path, "train-skip")
    assert str(err.value).startswith(f"{run}: holds a trained model (model.pt) but no checkpoint_last.pt")
    assert "choose another --run_dir" in str(err.value)
    # and should a caller go on regardless, the trained run's settings are protected
    with pytest.raises(DataError, match="started with variant='unpool'"):
        write_run_settings(run, {"variant": "skip"})
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_run_dir_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    """--run_dir runs/brain_tissue_fcn (the runs root) or any folder of other files is not a run to continue."""
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("notes.txt", "a.csv", "b", "c", "d", "e", "f"):
        (folder / name).write_text("x", encoding="utf-8")
    with pytest.raises(DataError) as err:
        training_run_dir(str(folder), tmp_path, "train-skip")
    assert str(err.value).startswith(f"{folder}: holds a.csv, b, c, d, e and 2 more but no mednet run records "
                                     "(settings.json or checkpoint_last.pt)")
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv", "b", "c", "d", "e", "f", "notes.txt"]


def test_run_dir_accepts_a_new_empty_or_interrupted_run_and_cleans_its_interrupted_writes(tmp_path: Path,
                                                                                         caplog) -> None:
    assert training_run_dir(str(tmp_path / "new" / "run"), tmp_path, "x").is_dir()
    (tmp_path / "empty").mkdir()
    assert training_run_dir(str(tmp_path / "empty"), tmp_path, "x") == tmp_path / "empty"
    # a run that stopped before its first epoch: its records bind nothing, the corrected command uses the folder
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "settings.json").write_text("{}", encoding="utf-8")
    (failed / "tensorboard").mkdir()
    assert training_run_dir(str(failed), tmp_path, "x") == failed
    # an interrupted run: resumed, after the temporary files of the writes its kill cut short are removed
    run = _run(tmp_path / "interrupted", {"variant": "skip"}, finished=False)
    (run / "checkpoint_last.pt").write_bytes(b"state")
    stale = [run / ".checkpoint_last.tmp-1a2b3c4d.pt", run / ".metrics.tmp-deadbeef.csv"]
    for path in stale:
        path.write_bytes(b"half")
    (run / "eval-test-1").mkdir()
    (run / "eval-test-1" / ".metrics.tmp-1a2b3c4d.json").write_bytes(b"x")  # another job's folder: not touched
    with caplog.at_level(logging.INFO, logger="mednet.io"):
        assert training_run_dir(str(run), tmp_path, "x") == run
    assert not any(p.exists() for p in stale)
    assert (run / "eval-test-1" / ".metrics.tmp-1a2b3c4d.json").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_last.pt", "eval-test-1", "model.pt", "run.lock",
                                                     "settings.json"]
    assert all(str(path) in caplog.text for path in stale)
    # a folder holding only such leftovers is a run that died writing its first record
    only_tmp = tmp_path / "only_tmp"
    only_tmp.mkdir()
    (only_tmp / ".settings.tmp-1a2b3c4d.json").write_bytes(b"{")
    assert training_run_dir(str(only_tmp), tmp_path, "x") == only_tmp
    assert [p.name for p in only_tmp.iterdir()] == ["run.lock"]  # and its leftovers are removed too
    # a job launcher's log, made before Python starts (sbatch --output=RUN/slurm-%j.out, `> RUN/train.log`)
    launched = tmp_path / "launched"
    launched.mkdir()
    for name in ("slurm-123.out", "train.log", "train.err"):
        (launched / name).write_text("starting\n", encoding="utf-8")
    assert training_run_dir(str(launched), tmp_path, "x") == launched
    assert sorted(p.name for p in launched.iterdir()) == ["run.lock", "slurm-123.out", "train.err", "train.log"]
    (launched / "tensorboard").mkdir()  # but not another job's outputs
    with pytest.raises(DataError, match="holds tensorboard but no mednet run records"):
        training_run_dir(str(launched), tmp_path, "x")


@pytest.mark.parametrize("blank", [" ", "\t", "runs/ ", "runs/  /x"])
def test_run_dir_refuses_blank_names(tmp_path: Path, monkeypatch, blank: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match="^--run_dir: .* has a blank folder name"):
        training_run_dir(blank, tmp_path / "runs", "train-skip")
    assert list(tmp_path.iterdir()) == []


def test_run_folders_that_cannot_be_created_are_a_user_error(tmp_path: Path) -> None:
    """FileExistsError / NotADirectoryError escaped as tracebacks."""
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{tmp_path / 'afile'}: cannot create the run folder \\(a file of that "
                                        "name is in the way\\)$"):
        training_run_dir(None, tmp_path / "afile", "train-skip")  # runs_root is a file
    with pytest.raises(DataError, match=f"^{tmp_path / 'afile' / 'sub'}: cannot create the run folder \\(a part of "
                                        "its path is a file\\)$"):
        training_run_dir(str(tmp_path / "afile" / "sub"), tmp_path, "train-skip")
    with pytest.raises(DataError, match="cannot create the run folder"):
        new_run_dir(tmp_path / "afile" / "runs", "train-skip")


# --- nested overrides ----------------------------------------------------------------------------------------------


def test_nested_overrides_are_recorded_and_compared_on_resume(tmp_path: Path) -> None:
    """--optimizer#weight_decay 0.1 took effect but was recorded nowhere, and a resume with another value (or
    without it) continued the run silently."""
    settings = {"variant": "skip", "epochs": 2}
    given = {"epochs": 2, "optimizer#weight_decay": 0.1, "train::dataloader::shuffle": False}
    path = write_run_settings(tmp_path, settings, overrides=given)
    recorded = {"optimizer#weight_decay": 0.1, "train#dataloader#shuffle": False}  # nested only, typed with '#'
    assert json.loads(path.read_text(encoding="utf-8")) == {**settings, OVERRIDES_KEY: recorded}

    (tmp_path / "checkpoint_last.pt").write_bytes(b"state")  # the run has trained an epoch
    before = path.read_bytes()
    with pytest.raises(DataError) as err:
        write_run_settings(tmp_path, settings, overrides={"optimizer#weight_decay": 0.2,
                                                          "train#dataloader#shuffle": False,
                                                          "train#trainer#epoch_length": 2})
    msg = str(err.value)
    assert msg.startswith(f"{path}: the run being resumed was started with other nested overrides: "
                          "--optimizer#weight_decay 0.1 (this command: 0.2), --train#trainer#epoch_length not given "
                          "(this command: 2)")
    assert ("give --optimizer#weight_decay 0.1 and leave out --train#trainer#epoch_length to continue it, or leave "
            "out --run_dir") in msg
    with pytest.raises(DataError, match="--optimizer#weight_decay 0.1 \\(this command: not given\\)"):
        write_run_settings(tmp_path, settings, overrides={"train#dataloader#shuffle": False})
    assert path.read_bytes() == before
    assert write_run_settings(tmp_path, settings, overrides=given) == path and path.read_bytes() == before

    # a run started without nested overrides records that, and is not resumed with one
    other = tmp_path / "other"
    other.mkdir()
    write_run_settings(other, settings, overrides={"epochs": 2})
    assert json.loads((other / "settings.json").read_text(encoding="utf-8"))[OVERRIDES_KEY] == {}
    (other / "checkpoint_last.pt").write_bytes(b"state")
    with pytest.raises(DataError, match="--lr_scheduler#eta_min not given \\(this command: 0.5\\)"):
        write_run_settings(other, settings, overrides={"lr_scheduler#eta_min": 0.5})

    # metadata ids are not settings; a run of an earlier mednet (no record) resumes, and stays "unknown"
    meta = tmp_path / "meta"
    meta.mkdir()
    write_run_settings(meta, settings, overrides={"_meta_#version": "9", "optimizer#weight_decay": 0.1})
    assert json.loads((meta / "settings.json").read_text(encoding="utf-8"))[OVERRIDES_KEY] == {
        "optimizer#weight_decay": 0.1}
    old = tmp_path / "old"
    old.mkdir()
    (old / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    (old / "checkpoint_last.pt").write_bytes(b"state")
    write_run_settings(old, settings, overrides={"optimizer#weight_decay": 0.1})
    assert json.loads((old / "settings.json").read_text(encoding="utf-8")) == {**settings, OVERRIDES_KEY: None}
    write_run_settings(old, settings, overrides={"optimizer#weight_decay": 0.3})  # still not compared


def test_nested_overrides_come_from_the_command_line_or_the_python_caller(tmp_path: Path, monkeypatch) -> None:
    """python -m monai.bundle run: read from its command line; a Python caller passes them through
    command_overrides; unknown (neither): nothing recorded, nothing compared."""
    settings = {"variant": "skip"}
    main = "/venv/lib/site-packages/monai/bundle/__main__.py"  # sys.argv[0] of python -m monai.bundle
    monkeypatch.setattr(sys, "argv", [main, "run", "--config_file", "train.json", "--epochs", "2",
                                      "--optimizer#weight_decay", "0.1", "--train#dataloader#shuffle", "False"])
    cli = tmp_path / "cli"
    cli.mkdir()
    write_run_settings(cli, settings)
    assert json.loads((cli / "settings.json").read_text(encoding="utf-8"))[OVERRIDES_KEY] == {
        "optimizer#weight_decay": 0.1, "train#dataloader#shuffle": False}

    monkeypatch.setattr(sys, "argv", ["pytest"])
    python = tmp_path / "python"
    python.mkdir()
    with command_overrides({"lr_scheduler#eta_min": 0.5, "epochs": 1}):
        write_run_settings(python, settings)
    assert json.loads((python / "settings.json").read_text(encoding="utf-8"))[OVERRIDES_KEY] == {
        "lr_scheduler#eta_min": 0.5}

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    write_run_settings(unknown, settings)
    assert json.loads((unknown / "settings.json").read_text(encoding="utf-8")) == settings
    (python / "checkpoint_last.pt").write_bytes(b"state")
    write_run_settings(python, settings)  # a resume whose overrides are unknown cannot be compared: accepted


# --- hints that a shell takes as they are ---------------------------------------------------------------------------


def _hint_pairs(message: str, before: str, after: str) -> dict[str, object]:
    """The ``--key value`` pairs of the hint between ``before`` and ``after`` in ``message``, as a shell splits them
    and python-fire (``python -m monai.bundle run``) reads them."""
    hint = message.split(before, 1)[1].split(after, 1)[0]
    words = shlex.split(hint)
    assert len(words) % 2 == 0 and all(w.startswith("--") for w in words[::2]), words
    return {k[2:]: fire.parser.DefaultParseValue(v) for k, v in zip(words[::2], words[1::2])}


TRAINED = {"views": [0, 1, 2], "dataset_dir": "/data/my split", "variant": "skip", "seed": 1, "tag": "1",
           "note": "a#b", "learning_rate": 0.0001, "augmentation": False, "weights_path": None, "ids": ["a", "b"]}
REQUESTED = {"views": [2], "dataset_dir": "/data/other", "variant": "unpool", "seed": 2, "tag": "2", "note": "c",
             "learning_rate": 0.1, "augmentation": True, "weights_path": "w.pt", "ids": ["c"]}


def test_the_use_this_run_hint_survives_a_shell(tmp_path: Path) -> None:
    """`pass --views [0, 1, 2]` pasted into a shell is three arguments, and a folder with a space two."""
    (tmp_path / "settings.json").write_text(json.dumps(TRAINED), encoding="utf-8")
    with pytest.raises(DataError) as err:
        check_run_settings(tmp_path / "model.pt", REQUESTED)
    assert _hint_pairs(str(err.value), "; pass ", " to use it") == TRAINED
    assert "--views '[0,1,2]'" in str(err.value)


def test_the_resume_and_latest_run_hints_survive_a_shell(tmp_path: Path) -> None:
    run = _run(tmp_path / "train-skip-1", TRAINED)
    with pytest.raises(DataError) as err:
        latest_run(tmp_path, "train-skip-", settings=REQUESTED)
    assert _hint_pairs(str(err.value), "Pass ", f" to use {run.name}") == TRAINED

    (run / "checkpoint_last.pt").write_bytes(b"state")
    with pytest.raises(DataError) as err:
        write_run_settings(run, REQUESTED, overrides={})
    assert _hint_pairs(str(err.value), "; pass ", " to continue it") == TRAINED

    (run / "settings.json").write_text(json.dumps({**TRAINED, OVERRIDES_KEY: {"optimizer#betas": [0.5, 0.9]}}),
                                       encoding="utf-8")
    with pytest.raises(DataError) as err:
        write_run_settings(run, TRAINED, overrides={"optimizer#betas": [0.9, 0.999]})
    assert _hint_pairs(str(err.value), "; give ", " to continue it") == {"optimizer#betas": [0.5, 0.9]}


def test_a_resume_on_changed_training_data_names_no_override(tmp_path: Path) -> None:
    """The channel statistics and class counts come from the training images: the resume hint suggested
    ``--normalization '{…}'``, an override the bundle refuses (a computed value)."""
    settings = {"model": "resnet18", "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
                "class_counts": [3, 4]}
    path = write_run_settings(tmp_path, settings, overrides={})
    (tmp_path / "checkpoint_last.pt").write_bytes(b"state")
    before = path.read_bytes()
    changed = {**settings, "normalization": {"mean": [0.6, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}, "class_counts": [3, 5]}
    with pytest.raises(DataError) as err:
        write_run_settings(tmp_path, changed, overrides={})
    assert str(err.value) == (f"{path}: the run being resumed was trained on other data (class_counts, normalization "
                              "differ: the training split's images or labels changed since); leave out --run_dir to "
                              "start a new run")
    assert path.read_bytes() == before


@pytest.mark.parametrize("bundle", ["brain_tissue_fcn", "dermoscopy_classification"])
def test_a_bad_run_dir_is_refused_before_the_data_are_read(tmp_path: Path, bundle: str) -> None:
    """--run_dir of a finished run was refused only when the run folder was made: after minutes of patch
    extraction (brain) or decoding every training image (dermoscopy)."""
    from _bundle_cli import bundle_error_line

    run = _run(tmp_path / "done", {"variant": "skip"})  # finished
    line = bundle_error_line(bundle, "train", run_dir=str(run), dataset_dir=str(tmp_path / "no_such_data"),
                             runs_root=str(tmp_path / "runs"))
    assert f"{run}: holds a finished training run" in line and "no_such_data" not in line
    assert not (tmp_path / "runs").exists()


# --- one process per run folder -----------------------------------------------------------------------------------


_HOLDER = """
import sys, time
from mednet.runs import acquire_run_lock
acquire_run_lock(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


def test_a_run_folder_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    """Two resumes of one --run_dir (or a resume of a run still training) interleaved checkpoint_last.pt, model.pt
    and metrics.csv: each write was atomic, but the run mixed two trainings."""
    import signal
    import subprocess

    run = _run(tmp_path / "interrupted", {"variant": "skip"}, finished=False)
    (run / RESUME_FILE).write_bytes(b"state")
    other = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        assert other.stdout.readline().strip() == "held"
        for check in (lambda: check_run_dir(str(run)), lambda: training_run_dir(str(run), tmp_path, "x")):
            with pytest.raises(DataError, match=f"in use by process {other.pid} on host .*still training it"):
                check()
        other.send_signal(signal.SIGKILL)  # killed: the kernel drops its lock, no file to delete by hand
        other.wait(timeout=30)
    finally:
        other.kill()
        other.wait()
        other.stdout.close()
    assert (run / LOCK_FILE).is_file()  # left behind by the kill, and no obstacle
    assert training_run_dir(str(run), tmp_path, "x") == run
    assert json.loads((run / LOCK_FILE).read_text(encoding="utf-8"))["pid"] == os.getpid()
    assert training_run_dir(str(run), tmp_path, "x") == run  # the same process again (a resume in-process)
    mark_finished(run, epochs=1)
    assert not (run / LOCK_FILE).exists()


def test_a_new_run_holds_its_lock_until_the_process_exits(tmp_path: Path) -> None:
    import subprocess

    code = ("import sys; from mednet.runs import training_run_dir; "
            "print(training_run_dir(None, sys.argv[1], 'train-x'))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          encoding="utf-8", check=True, cwd=Path(__file__).resolve().parents[1])
    run = Path(proc.stdout.strip())
    assert run.is_dir() and not (run / LOCK_FILE).exists()  # removed at exit


def test_a_resume_with_other_settings_is_refused_before_the_data_are_read(tmp_path: Path) -> None:
    """--epochs 10 on a run started with 15 was refused only when settings.json was written: after the patch
    extraction (tens of seconds with N4 on a real cohort)."""
    from _bundle_cli import bundle_error_line

    run = tmp_path / "interrupted"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"variant": "skip", "epochs": 15}), encoding="utf-8")
    (run / RESUME_FILE).write_bytes(b"state")
    line = bundle_error_line("brain_tissue_fcn", "train", run_dir=str(run), epochs=10,
                             dataset_dir=str(tmp_path / "no_such_data"))
    assert "the run being resumed was started with epochs=15 (this command: 10)" in line, line
    assert "no_such_data" not in line
