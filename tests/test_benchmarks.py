"""The benchmarks' command lines (parsing, argument checks, output folders) and the shared paired-rounds helper.

The benchmarks themselves are run by hand (minutes each); these tests keep their argument parsing from drifting
and check what can be checked without measuring: a bad argument is refused at parsing (exit 2, the option named),
relative paths are taken from where the user ran, no run overwrites an earlier one's files by default, and the
headline median of paired rounds is right for an even count.
"""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))


@pytest.fixture
def bench(monkeypatch):
    """Import a benchmark module by name (``benchmarks/`` on ``sys.path`` for this test only)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def run_script(monkeypatch, path: Path, *args: str) -> int:
    """Run ``path`` as ``python path args...`` in this process; its exit code (0 when it returns)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # what ``python benchmarks/x.py`` puts first on sys.path
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        return 0 if e.code is None else e.code
    return 0


def test_there_are_benchmarks_to_check():
    assert len(SCRIPTS) >= 10, SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_every_benchmark_prints_its_help(monkeypatch, capsys, path):
    """``--help`` parses the whole command line definition: a broken ``add_argument`` fails here, not in a run."""
    assert run_script(monkeypatch, path, "--help") == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("script, args, option", [
    ("bench_inference", ["--repeats", "0"], "--repeats"),  # was a ValueError from min() of nothing
    ("bench_inference", ["--views", "3"], "--views"),
    ("bench_brain_3d", ["--epochs", "0"], "--epochs"),  # was load_state_dict(None) after the training
    ("bench_brain_3d", ["--subjects", "0"], "--subjects"),
    ("bench_brain_robustness", ["--subjects", "0"], "--subjects"),
    ("bench_brain_robustness", ["--zoom", "0"], "--zoom"),
    ("bench_brain_dice", ["--epochs", "-1"], "--epochs"),
    ("bench_training_throughput", ["--rounds", "0"], "--rounds"),
    ("bench_training_throughput", ["--batch_size", "x"], "--batch_size"),
    ("bench_dermoscopy_throughput", ["--rounds", "0"], "--rounds"),
    ("bench_dermoscopy_throughput", ["--images", "5"], "--images"),
    ("bench_dermoscopy_throughput", ["--parts", "4"], "--parts"),
    ("bench_distillation_throughput", ["--iterations", "0"], "--iterations"),
    ("bench_distillation_throughput", ["--teacher_counts", "1,0"], "--teacher_counts"),
    ("bench_distillation_throughput", ["--device", "gpu"], "--device"),
    ("bench_explain", ["--sanity_images", "0"], "--sanity_images"),
    ("bench_feedback_near_duplicates", ["--images", "20"], "--images"),
    ("bench_feedback_near_duplicates", ["--thresholds", "1,-2"], "--thresholds"),
    ("bench_feedback_near_duplicates", ["--thresholds", "1,x"], "--thresholds"),
    ("bench_patch_extraction", ["--min-pixels", "0"], "--min-pixels"),
    ("bench_patch_extraction", ["--shape", "64", "0", "64"], "--shape"),
])
def test_bad_arguments_are_refused_at_parsing(monkeypatch, capsys, script, args, option):
    """Exit 2 with argparse's one-line error naming the option, before any work (none of these gets far enough
    to import torch's models or build data)."""
    assert run_script(monkeypatch, BENCHMARKS / f"{script}.py", *args) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and option in err.splitlines()[-1], err


def test_near_duplicate_thresholds_are_parsed_by_the_shared_int_list(bench):
    """--thresholds was a string split by hand after the other checks: it is parsed (and checked) by argparse with
    the shared ``int_list`` like every other list option of the benchmarks."""
    parser = bench("bench_feedback_near_duplicates").build_parser()
    assert parser.parse_args([]).thresholds == [0, 1, 2, 4, 6, 8]
    assert parser.parse_args(["--thresholds", "3, 0,3"]).thresholds == [3, 0, 3]


def test_cuda_without_a_gpu_is_an_argument_error(monkeypatch, capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert run_script(monkeypatch, BENCHMARKS / "bench_distillation_throughput.py", "--device", "cuda") == 2
    assert "--device cuda: no CUDA device is available" in capsys.readouterr().err


def test_paired_rounds_warm_up_alternate_and_take_the_median(bench):
    """One untimed call per side before round 1, then alternating order; the median of an even count of paired
    ratios is the mean of the middle two (the benchmarks took the upper one: 3.0 here)."""
    common = bench("_common")
    calls: list[str] = []
    measured_rates = iter([1.0, 4.0, 2.0, 3.0])

    def baseline() -> float:
        calls.append("plain")
        return 1.0

    def measured() -> float:
        calls.append("bundle")
        return next(measured_rates)

    lines: list[str] = []
    result = common.paired_rounds(baseline, measured, 4, log=lines.append, unit="img/s",
                                  warmup=(lambda: calls.append("warm plain"), lambda: calls.append("warm bundle")))
    assert calls == ["warm plain", "warm bundle",
                     "plain", "bundle", "bundle", "plain", "plain", "bundle", "bundle", "plain"]
    assert result.ratios == [1.0, 4.0, 2.0, 3.0] and result.median_ratio == 2.5
    assert lines[1] == "round 2 (bundle then plain): plain 1 img/s, bundle 4 img/s, ratio 4.000"


def test_relative_paths_are_taken_from_the_current_directory(bench, monkeypatch, tmp_path):
    """The throughput benchmarks change directory to the repository (the bundles' configs are relative to it):
    a relative --dataset_dir / --work / --out must be made absolute against where the user ran first."""
    here = tmp_path.resolve()
    monkeypatch.chdir(here)
    training = bench("bench_training_throughput").build_parser()
    assert training.parse_args(["--dataset_dir", "cohort"]).dataset_dir == here / "cohort"
    assert training.parse_args([]).dataset_dir == REPO / "demo" / "bench_cohort"  # the default: in the repository
    args, _ = bench("bench_dermoscopy_throughput").parse_args(["--work", "work", "--parts", "1,2"])
    assert args.work == here / "work" and args.parts == {1, 2}
    args, _ = bench("bench_distillation_throughput").parse_args(["--out", "kd.json", "--teacher_counts", "1,5"])
    assert args.out == here / "kd.json" and args.teacher_counts == [1, 5]
    assert bench("bench_explain").parse_args(["--out", "figures"]).figures == here / "figures"


def test_explain_writes_a_fresh_folder_and_the_docs_only_on_request(bench, monkeypatch, capsys, tmp_path):
    """By default the figures go to runs/bench_explain/<time>/, never into the tracked docs; a folder that
    already holds them is refused (``--out``), a docs folder given with ``--docs`` is replaced on purpose."""
    explain = bench("bench_explain")
    default = explain.parse_args([]).figures
    assert default.parent == REPO / "runs" / "bench_explain" and not default.exists()
    (tmp_path / "explanations.png").write_bytes(b"figure")
    for argv in (["--out", str(tmp_path)], ["--json", str(tmp_path / "explanations.png")],
                 ["--out", str(tmp_path), "--docs", str(tmp_path)]):
        with pytest.raises(SystemExit) as e:
            explain.parse_args(argv)
        assert e.value.code == 2, argv
    assert "explanations.png exist" in capsys.readouterr().err
    assert explain.parse_args(["--docs", str(tmp_path)]).figures == tmp_path.resolve()
    assert explain.parse_args(["--out", str(tmp_path), "--skip_sanity"]).figures == tmp_path.resolve()


def test_distillation_never_replaces_an_earlier_result(bench, capsys, tmp_path):
    (tmp_path / "kd.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        bench("bench_distillation_throughput").parse_args(["--out", str(tmp_path / "kd.json")])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err
    assert (tmp_path / "kd.json").read_text(encoding="utf-8") == "{}"


def test_training_throughput_runs_end_to_end(bench, monkeypatch, capsys, tiny_cohort):
    """The smallest real run (64 patches, 2 rounds, CPU): warm-up, both sides, the paired ratio line."""
    import torch

    monkeypatch.chdir(REPO)  # the benchmark changes directory to the repository: restored after the test
    threads = torch.get_num_threads()
    try:
        bench("bench_training_throughput").main(["--dataset_dir", str(tiny_cohort), "--patches", "64", "--rounds", "2",
                                                 "--batch_size", "32", "--threads", "1", "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide: the tests after this one keep theirs
    out = capsys.readouterr().out
    assert "round 1 (plain then bundle)" in out and "round 2 (bundle then plain)" in out
    assert "throughput ratio bundle/plain, median of 2 paired rounds = " in out
