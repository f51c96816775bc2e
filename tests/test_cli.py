"""The command lines of ``data_prep`` and ``mednet.app`` (:func:`mednet.cli.run_cli`): flags are checked against
the function's signature before any work, as the bundles' overrides are — fire alone ran the job with the flags
it knew and complained about a misspelt one afterwards, and read ``--overwrite false`` as true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mednet.cli import check_cli_flags
from mednet.errors import OptionError



def job(datalist: str, out: str, patch_size: int = 16, min_pixels: float = 8, max_per_volume: int | None = None,
        balance: bool = True, overwrite: bool = False, views: int | tuple[int, ...] = (0, 1, 2)) -> None:
    """A signature like data_prep.patches'."""


def paths(out: str | os.PathLike, folder: Path | None = None) -> None:
    """Like data_prep's --out / --dataset_dir."""


def test_flags_become_checked_name_value_tokens() -> None:
    argv = ["--datalist", "d.json", "--out=p", "--no-balance", "--max-per-volume", "None", "--views", "[0,1]",
            "--min_pixels", "0.5", "--overwrite"]
    assert check_cli_flags(job, argv) == ["--datalist='d.json'", "--out='p'", "--balance=False",
                                          "--max_per_volume=None", "--views=[0,1]", "--min_pixels=0.5",
                                          "--overwrite=True"]
    for word, value in (("false", "False"), ("0", "False"), ("Yes", "True"), ("TRUE", "True")):
        assert check_cli_flags(job, ["--datalist", "d", "--out", "o", "--overwrite", word])[-1] == f"--overwrite={value}"
    assert check_cli_flags(job, ["--datalist", "d", "--out", "o", "--nobalance"])[-1] == "--balance=False"


@pytest.mark.parametrize("argv, problem", [
    (["--datalist", "d", "--out", "o", "--overwite"], "--overwite: unknown option; did you mean --overwrite?"),
    (["--datalist", "d", "--out", "o", "--overwrite", "maybe"], "--overwrite: expected True or False, got 'maybe'"),
    (["--datalist", "d", "--out", "o", "--patch_size", "abc"], "--patch_size: expected an int, got 'abc'"),
    (["--datalist", "d", "--out", "o", "--min_pixels", "x"], "--min_pixels: expected a float, got 'x'"),
    (["--datalist", "d", "--out", "o", "--patch_size"], "--patch_size: needs a value"),
    (["--out", "o"], "--datalist: required"),
    (["d.json", "--out", "o"], "d.json: unexpected argument; options are given as --name value"),
    (["--datalist", "d", "--out", "o", "--no-balance=1"], "--no-balance: takes no value"),
])
def test_bad_flags_are_refused_before_any_work(argv: list[str], problem: str) -> None:
    with pytest.raises(OptionError) as err:
        check_cli_flags(job, argv)
    assert problem in str(err.value)


def test_every_problem_is_reported_at_once_and_kwargs_functions_accept_other_names() -> None:
    with pytest.raises(OptionError) as err:
        check_cli_flags(job, ["--datalst", "d", "--outt", "o", "--balance", "2"])
    assert set(err.value.problems) == {"--datalst", "--outt", "--balance", "--datalist", "--out"}

    def passes_options_on(run: str, epochs: int | None = None, **train_options: object) -> None:
        """Like mednet.app.retrain: unknown names go to the bundle, whose own check refuses misspellings."""

    assert check_cli_flags(passes_options_on, ["--run", "r", "--lr_schedule", "cosine", "--epochs", "2"]) == [
        "--run='r'", "--lr_schedule=cosine", "--epochs=2"]


@pytest.mark.parametrize("typed", ["2024", "1_000", "None", "none", "null", "a,b", "[1]", "it's \"x\"", "2.5"])
def test_text_and_path_flags_reach_the_function_as_typed(typed: str) -> None:
    """fire parses a value as a Python literal: ``--out 2024`` became an int and ``--out a,b`` a tuple, and the
    job failed with a traceback. Text and path parameters now get exactly the text typed."""
    import fire.parser

    tokens = check_cli_flags(paths, ["--out", typed, "--folder", typed])
    values = [fire.parser.DefaultParseValue(t.partition("=")[2]) for t in tokens]
    assert values[0] == typed
    assert values[1] == (None if typed in ("None", "none", "null") else typed)  # None where None is the default


@pytest.mark.parametrize("typed", ["None", "none", "null", "NULL"])
def test_none_reaches_an_optional_number_as_none(typed: str) -> None:
    """``--max_per_volume none`` (``int | None``) reached int() as the text 'none': a traceback."""
    import fire.parser

    def job(max_per_volume: int | None = 5000, stride: int = 1) -> None:
        """A job with an optional count."""

    (token,) = check_cli_flags(job, ["--max_per_volume", typed])
    assert fire.parser.DefaultParseValue(token.partition("=")[2]) is None
    with pytest.raises(OptionError, match="--stride: expected an int, got 'none'"):
        check_cli_flags(job, ["--stride", "none"])  # not optional: still refused


def test_a_misspelt_flag_stops_the_command_line_with_one_line_and_nothing_written(tmp_path: Path) -> None:
    from _bundle_cli import command_in_process
    from mednet.data.brain_demo_cohort import build_demo_cohort

    out = tmp_path / "cohort"  # the `python -m data_prep.demo_cohort` entry itself: tests/test_data_prep.py
    proc = command_in_process(build_demo_cohort, "--out", str(out), "--subject", "3", "--zoom", "0.2")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mednet error:")]
    assert lines == ["mednet error: --subject: unknown option; did you mean --subjects? "
                     "(MEDNET_TRACEBACK=1 shows the traceback)"]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_a_size_flag_takes_numbers_and_text() -> None:
    """The web demo's --max_file_size: "2mb" stays text, 1e7 reaches parse_file_size as a number (fire's parse)."""
    import fire.parser

    from mednet.app.web import web

    tokens = check_cli_flags(web, ["--run", "r", "--max_file_size", "1e7"])
    assert fire.parser.DefaultParseValue(tokens[-1].partition("=")[2]) == 1e7
    tokens = check_cli_flags(web, ["--run", "r", "--max_file_size", "2mb"])
    assert fire.parser.DefaultParseValue(tokens[-1].partition("=")[2]) == "2mb"


def evaluate_missing_cohort(dataset_dir: str) -> None:
    """An app step that runs a bundle (as brain_demo, compare_variants and retrain do)."""
    from mednet.app.bundles import run_bundle

    run_bundle("brain_tissue_fcn", "evaluate", dataset_dir=dataset_dir, ckpt_path=dataset_dir)


def broken_app(value: str) -> None:
    int(value)  # a bug: its traceback is kept


def test_a_user_error_inside_an_apps_bundle_run_is_one_line_and_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    """run_bundle undoes its error hook when it returns, so the command line picks the one line itself from MONAI's
    wrapper of the user error — not the 50-line traceback the default hook printed."""
    from _bundle_cli import command_in_process

    missing = tmp_path / "no_such_cohort"
    proc = command_in_process(evaluate_missing_cohort, "--dataset_dir", str(missing))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mednet error:")]
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    with pytest.raises(ValueError, match="invalid literal"):
        command_in_process(broken_app, "--value", "x")


def interrupted_training(run_dir: str) -> None:
    """Ctrl-C during a training run that completed an epoch, a progress bar open."""
    from tqdm import tqdm

    from mednet.runs import training_run_dir

    run = training_run_dir(run_dir, run_dir, "x")
    (run / "checkpoint_last.pt").write_bytes(b"state")
    bar = tqdm(total=10, desc="epoch 2")
    bar.update(3)
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_that_says_how_to_continue_the_run(tmp_path: Path) -> None:
    """Ctrl-C printed two KeyboardInterrupt tracebacks and no word on resuming; a progress bar left mid-line had the
    error line appended to it (one line in a log file)."""
    from _bundle_cli import command_in_process

    from mednet.runs import release_run_lock

    run = tmp_path / "my run"
    try:
        proc = command_in_process(interrupted_training, "--run_dir", str(run))
    finally:
        release_run_lock(run)
    assert proc.returncode == 130, proc.stderr
    lines = proc.stderr.splitlines()
    (line,) = [line for line in lines if "mednet error:" in line]
    assert line.startswith("mednet error: interrupted (Ctrl-C); continue the training run with --run_dir ")
    assert f"--run_dir '{run}'" in line and "Traceback" not in proc.stderr
