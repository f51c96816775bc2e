"""What a bundle run lets the command line override, and the config defaults that follow the run or the device.

An override MONAI accepts but the run should not (a computed id such as ``output_dir`` or ``run_settings``, an
engine's handlers, the option rules themselves, a comment) silently bypassed the bundle's own checks; a number for
a path, an infinite number or a misspelt argument of a ``**kwargs`` component failed only later, with a
traceback. Every case is checked in-process against the real configs (:func:`mednet.overrides.check_overrides`),
and the defaults by parsing the configs (nothing is trained).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mednet.overrides import OptionError, check_overrides, load_config

REPO = Path(__file__).resolve().parents[1]
BRAIN = REPO / "bundles" / "brain_tissue_fcn" / "configs"
DERM = REPO / "bundles" / "dermoscopy_classification" / "configs"
TRAIN, INFERENCE = BRAIN / "train.json", BRAIN / "inference.json"
EVALUATE = [INFERENCE, BRAIN / "evaluate.json"]
DERM_TRAIN, DERM_INFERENCE = DERM / "train.json", DERM / "inference.json"
DERM_EVALUATE = [DERM_INFERENCE, DERM / "evaluate.json"]
CALIBRATE = [DERM_INFERENCE, DERM / "calibrate.json"]
ENSEMBLE, EXPLAIN = DERM / "ensemble.json", DERM / "explain.json"


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the configs' % macros are relative to the checkout root, as for monai.bundle run


def refused(config: Path | list[Path], **overrides: object) -> str:
    with pytest.raises(OptionError) as info:
        check_overrides(config, overrides)
    return str(info.value)


@pytest.mark.parametrize(("config", "option", "value", "problem"), [
    # every settings check (latest run's filter, load_weights, provenance) compared against {}
    (TRAIN, "run_settings", {}, "--run_settings: is computed by train.json, not an option; set --variant, "
                                "--base_channels, --intensity_normalization, --bias_correction, --views instead"),
    # training wrote into any folder, bypassing training_run_dir's checks
    (TRAIN, "output_dir", "/tmp/elsewhere", "--output_dir: is computed by train.json, not an option; a training "
                                            "run's folder is --run_dir"),
    # evaluate then failed with a `str.parent` AttributeError traceback
    (EVALUATE, "checkpoint", "run/model.pt", "--checkpoint: is computed by inference.json + evaluate.json, not an "
                                             "option; use --ckpt_path"),
    (DERM_INFERENCE, "normalization", {"mean": [0, 0, 0], "std": [1, 1, 1]}, "--normalization: is computed by "
                                                                             "inference.json, not an option"),
    (CALIBRATE, "output_dir", "/tmp/x", "--output_dir: is computed by inference.json + calibrate.json, not an "
                                        "option"),
    (DERM_TRAIN, "cosine_head", True, "--cosine_head: is computed by train.json, not an option; set --loss instead"),
    (DERM_INFERENCE, "referral_threshold", 0.5, "--referral_threshold: is computed by inference.json, not an option; "
                                                "it is the run's calibration.json value"),
    # explain silently replaced the trained run's values
    (EXPLAIN, "class_names", ["a", "b"], "--class_names: is computed by explain.json, not an option; explain uses "
                                         "the trained run's (--ckpt_path)"),
    (EXPLAIN, "image_size", 32, "--image_size: is computed by explain.json, not an option"),
    (ENSEMBLE, "image_size", 32, "--image_size: is computed by ensemble.json, not an option; the members' own"),
    (TRAIN, "datalist", "d.json", "--datalist: is computed by train.json, not an option; set --dataset_dir instead"),
    # followed through the computed ids it is made of (network_def: the variant and its width)
    (TRAIN, "network", 1, "--network: is computed by train.json, not an option; set --device, --variant, "
                          "--base_channels instead"),
    # a nested id whose option is computed too: not "give --network", which is refused in turn
    (TRAIN, "train#trainer#network", 1, "--train#trainer#network: is --network's value in this config, which is "
                                        "computed by train.json, not an option; set --device, --variant"),
])
def test_a_computed_id_is_refused_naming_what_to_give(config, option: str, value: object, problem: str) -> None:
    assert refused(config, **{option: value}).startswith(problem)


def test_documented_and_used_overrides_of_computed_ids_pass() -> None:
    """The computed ids the docs, apps and benchmarks override stay options (the rule's ``overridable``)."""
    check_overrides(EVALUATE, {"output_dir": "/tmp/report", "patch_size": 32})  # brain docs; bench_brain_robustness
    check_overrides(INFERENCE, {"input": "scan.nii.gz", "output_dir": "predictions", "device": "cpu", "amp": False})
    check_overrides(DERM_EVALUATE, {"output_dir": "/tmp/report", "temperature": 1})  # retrain; "--temperature 1"
    check_overrides(DERM_INFERENCE, {"input": "images/", "temperature": 1.5, "device": "$torch.device('cpu')"})
    check_overrides(CALIBRATE, {"target_accuracy": 0.9, "referral_min_accepted": 10, "referral_confidence": 0.8})
    check_overrides(ENSEMBLE, {"output_dir": "/tmp/ensemble", "members": ["a", "b"], "device": "cuda:1"})
    check_overrides(EXPLAIN, {"input": "images/", "ckpt_path": "run", "device": "cpu", "amp": True})
    check_overrides(TRAIN, {"device": "cpu", "amp": False})
    # typed by their rules now that the default no longer types them
    assert refused(DERM_EVALUATE, temperature="hot").startswith("--temperature: expects a number")
    assert refused(EVALUATE, patch_size=0).startswith("--patch_size: must be ≥ 1")
    assert refused(INFERENCE, amp="yes").startswith("--amp: expects True or False")
    assert refused(DERM_TRAIN, device="gpu0") == "--device: expects a device such as cpu, cuda or cuda:1, got 'gpu0'"
    assert refused(DERM_TRAIN, device=0).startswith("--device: expects a device")


def test_a_sites_own_config_file_after_the_job_keeps_its_overridable_ids(tmp_path: Path) -> None:
    """``overridable: ["evaluate.json"]`` matched only the job's last file: a site override file appended to
    inference.json + evaluate.json made the evaluation's --output_dir a refused option."""
    site = tmp_path / "site.json"
    site.write_text('{"device": "cpu"}', encoding="utf-8")
    check_overrides([*EVALUATE, site], {"output_dir": "/tmp/report"})
    assert refused([*DERM_EVALUATE, site], run_settings={}).startswith("--run_settings: is computed by")
    assert refused([BRAIN / "train.json", site], output_dir="/tmp/x").startswith("--output_dir: is computed by")


@pytest.mark.parametrize(("config", "option"), [
    (TRAIN, "run_dir"), (INFERENCE, "ckpt_path"), (TRAIN, "patches_file"), (INFERENCE, "mask"),
    (DERM_TRAIN, "weights_path"), (DERM_TRAIN, "run_dir"), (CALIBRATE, "ckpt_path"), (EXPLAIN, "ckpt_path"),
    (INFERENCE, "input"), (DERM_INFERENCE, "input"), (TRAIN, "runs_root"),
])
def test_a_number_for_a_path_is_refused_with_the_quoting(config, option: str) -> None:
    """fire reads ``--run_dir 2024`` as an int: the check passed (a null default had no type), then
    ``Path(2024)`` raised a TypeError traceback."""
    assert f'--{option}: expects text' in refused(config, **{option: 2024})
    assert refused(config, **{option: 2024}).endswith(f'quote a name that reads as a number: --{option} "\'2024\'"')
    check_overrides(config, {option: "2024"})


def test_path_options_take_none_where_it_is_their_default() -> None:
    check_overrides(TRAIN, {"run_dir": None, "patches_file": None})
    check_overrides(INFERENCE, {"ckpt_path": None, "mask": None})
    assert refused(INFERENCE, ckpt_path="none") == "--ckpt_path: got the text 'none'; write None for no value"


@pytest.mark.parametrize(("config", "option", "suggestion"), [
    (TRAIN, "train#dataloader#bogus", None),  # MONAI's DataLoader(**kwargs) → torch's DataLoader
    (TRAIN, "validate#inferer#bogus", None),  # ViewAggregationInferer(**kwargs) → BatchedSliceInferer → …
    (INFERENCE, "inferer#bogus", None),
    (EVALUATE, "grid_inferer#bogus", None),  # SliceInferer(**kwargs) → SlidingWindowInferer
    (TRAIN, "train#dataloader#pin_memroy", "train#dataloader#pin_memory"),
    (TRAIN, "validate#inferer#overlapp", "validate#inferer#overlap"),
])
def test_a_name_no_callable_takes_is_refused_through_kwargs(config, option: str, suggestion: str | None) -> None:
    """``**kwargs`` accepted any name: --train#dataloader#bogus 1 failed after minutes of patch extraction."""
    name = " + ".join(Path(f).name for f in (config if isinstance(config, list) else [config]))
    hint = f" (did you mean --{suggestion}?)" if suggestion else ""
    assert refused(config, **{option: 1}) == f"--{option}: unknown option for {name}{hint}"


def test_names_the_kwargs_reach_pass() -> None:
    check_overrides(TRAIN, {"train#dataloader#pin_memory": True, "train#dataloader#prefetch_factor": 2,
                            "validate#inferer#overlap": 0.25, "validate#inferer#mode": "gaussian",
                            "validate#inferer#max_batch_pixels": 100_000})
    check_overrides(EVALUATE, {"grid_inferer#mode": "gaussian"})
    # spatial_dim is set per view by ViewAggregationInferer itself: passing it too would be a TypeError
    assert refused(TRAIN, **{"validate#inferer#spatial_dim": 1}).startswith(
        "--validate#inferer#spatial_dim: unknown option")


def test_kwargs_are_followed_to_their_destination() -> None:
    from monai.data import DataLoader
    from monai.inferers import SimpleInferer, SliceInferer

    from mednet.engines.handlers import ProgressBar
    from mednet.inference import ViewAggregationInferer
    from mednet.overrides import _accepted_keywords

    assert {"pin_memory", "dataset", "num_workers"} <= _accepted_keywords(DataLoader)
    assert {"spatial_dim", "overlap", "roi_size"} <= _accepted_keywords(SliceInferer)
    view = _accepted_keywords(ViewAggregationInferer)
    assert {"views", "margin", "overlap", "max_batch_pixels"} <= view and "spatial_dim" not in view
    assert {"every", "persist", "desc", "ncols"} <= _accepted_keywords(ProgressBar)  # ignite → tqdm
    assert _accepted_keywords(SimpleInferer) == set()
    assert _accepted_keywords(lambda **kwargs: None) is None  # a function's **kwargs cannot be followed


@pytest.mark.parametrize(("config", "option", "value"), [
    (TRAIN, "train#handlers#6#final_filename", "model.pt"),  # the final weights would overwrite the best model.pt
    (TRAIN, "train#handlers#6#bogus", 1),
    (TRAIN, "validate#handlers#1#log_dir", "/tmp/tb"),
    (TRAIN, "train#trainer#train_handlers", []),
    (EVALUATE, "handlers#1#output_dir", "/tmp/r"),
    (EVALUATE, "grid_evaluator#val_handlers#1#qualitative", True),
])
def test_an_engines_handlers_are_not_options(config, option: str, value: object) -> None:
    assert refused(config, **{option: value}) == (
        f"--{option}: is part of an engine's event handlers (checkpoints, reports, logs), which the bundle sets; "
        "not an option")


def test_a_handler_value_that_is_an_option_names_the_option() -> None:
    assert "give --referral_min_accepted instead" in refused(DERM_TRAIN, **{"calibrate#handlers#0#min_accepted": 5})


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_numbers_must_be_finite(value: float) -> None:
    """``--learning_rate 1e999`` reaches fire as inf, which passes every bound."""
    assert refused(TRAIN, learning_rate=value).startswith("--learning_rate: must be a finite number")
    assert refused(DERM_TRAIN, lr_schedule="multistep", milestones=[0.5, value]).startswith(
        "--milestones: every item must be a finite number")
    check_overrides(TRAIN, {"epochs": 10**400})  # a big int is finite (no float conversion error)


@pytest.mark.parametrize(("config", "option", "problem"), [
    (TRAIN, "option_rules#epochs#min", "changes train.json's checks of the options, not an option"),
    (TRAIN, "option_rules", "changes train.json's checks of the options, not an option"),
    (DERM_TRAIN, "_comment_run", "is a comment of train.json, not an option"),
    (EVALUATE, "_comment_dataset", "is a comment of inference.json + evaluate.json, not an option"),
])
def test_rules_and_comments_are_not_options(config, option: str, problem: str) -> None:
    assert refused(config, **{option: 0}) == f"--{option}: {problem}"
    check_overrides(config, {"_meta_#version": "9.9"})  # metadata ids stay MONAI's


def _parsed(files: list[Path], **overrides: object):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=[str(f) for f in files])
    parser.update(overrides)
    parser.parse()
    return parser


@pytest.mark.parametrize("config", [[TRAIN], [DERM_TRAIN], CALIBRATE, [ENSEMBLE], [EXPLAIN], EVALUATE])
def test_amp_follows_the_device(config: list[Path]) -> None:
    """``--device cpu`` on a GPU host kept AMP on (``amp`` was ``torch.cuda.is_available()``)."""
    assert _parsed(config, device="cpu").get_parsed_content("amp") is False
    assert _parsed(config, device="cuda:1").get_parsed_content("amp") is True  # torch.device needs no GPU here
    assert _parsed(config, device="$torch.device('cpu')").get_parsed_content("amp") is False
    assert _parsed(config, device="cpu", amp=True).get_parsed_content("amp") is True  # an explicit --amp wins


def test_brain_grid_evaluation_uses_the_runs_patch_size(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``patch_size`` was 16 whatever the run trained on: a ``--patch_size 32`` run was grid-evaluated at 16."""
    run = tmp_path / "train-skip-1"
    run.mkdir()
    (run / "patch_stats.json").write_text(json.dumps({"params": {"patch_size": 32, "views": [0, 1, 2]}}),
                                          encoding="utf-8")
    checkpoint = run / "model.pt"
    parsed = _parsed(EVALUATE, checkpoint=str(checkpoint))
    assert parsed.get_parsed_content("patch_size") == 32
    assert tuple(parsed.get_parsed_content("grid_inferer").roi_size) == (32, 32)
    assert _parsed(EVALUATE, checkpoint=str(checkpoint), patch_size=8).get_parsed_content("patch_size") == 8
    (run / "patch_stats.json").write_text(json.dumps({"per_volume": []}), encoding="utf-8")  # not recorded
    with caplog.at_level("WARNING", logger="mednet"):
        assert _parsed(EVALUATE, checkpoint=str(checkpoint)).get_parsed_content("patch_size") == 16
    assert "records no patch size" in caplog.text


def test_recorded_patch_size_refuses_a_bad_record(tmp_path: Path) -> None:
    from mednet.bundle_support import recorded_patch_size
    from mednet.errors import DataError

    (tmp_path / "patch_stats.json").write_text('{"params": {"patch_size": "big"}}', encoding="utf-8")
    with pytest.raises(DataError, match="patch_stats.json: params.patch_size 'big' is not a positive integer"):
        recorded_patch_size(tmp_path / "model.pt")
    (tmp_path / "patch_stats.json").write_text('{"params": ', encoding="utf-8")
    with pytest.raises(DataError, match="patch_stats.json: cannot read"):
        recorded_patch_size(tmp_path / "model.pt")
    assert recorded_patch_size(tmp_path / "elsewhere" / "model.pt", 12) == 12  # no record at all


def test_calibration_refit_uses_the_runs_referral_settings(tmp_path: Path) -> None:
    """calibrate.json's literal 0.95 / 20 / 0.9 refitted a run trained for another target: settings.json then
    disagreed with calibration.json. The run's recorded values are the defaults; an override still wins."""
    run = tmp_path / "train-resnet18-none-ce-1"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"target_accuracy": 0.9, "referral_min_accepted": 7,
                                                   "referral_confidence": 0.8}), encoding="utf-8")
    checkpoint = str(run / "model.pt")
    parsed = _parsed(CALIBRATE, checkpoint=checkpoint)
    assert [parsed.get_parsed_content(k) for k in ("target_accuracy", "referral_min_accepted",
                                                   "referral_confidence")] == [0.9, 7, 0.8]
    fitter = parsed.get("handlers")[1]  # the fitter reads them
    assert (fitter["target_accuracy"], fitter["min_accepted"], fitter["confidence_level"]) == (
        "@target_accuracy", "@referral_min_accepted", "@referral_confidence")
    assert _parsed(CALIBRATE, checkpoint=checkpoint, target_accuracy=0.99).get_parsed_content("target_accuracy") == 0.99
    (run / "settings.json").write_text(json.dumps({"model": "resnet18"}), encoding="utf-8")  # recorded none
    parsed = _parsed(CALIBRATE, checkpoint=checkpoint)
    assert [parsed.get_parsed_content(k) for k in ("target_accuracy", "referral_min_accepted",
                                                   "referral_confidence")] == [0.95, 20, 0.9]
    # a refit's explicit target (calibration.json) is what the served threshold was fitted for: a later refit keeps it
    (run / "settings.json").write_text(json.dumps({"target_accuracy": 0.9}), encoding="utf-8")
    (run / "calibration.json").write_text(json.dumps({"temperature": 1.2, "referral": {
        "threshold": 0.7, "target_accuracy": 0.99, "min_accepted": 30}}), encoding="utf-8")
    parsed = _parsed(CALIBRATE, checkpoint=checkpoint)
    assert [parsed.get_parsed_content(k) for k in ("target_accuracy", "referral_min_accepted",
                                                   "referral_confidence")] == [0.99, 30, 0.9]
    # the names read are the ones train.json records
    recorded = next(step for step in load_config(DERM_TRAIN)["run"] if "write_run_settings" in step)
    assert all(f"{k}=@{k}" in recorded for k in ("target_accuracy", "referral_min_accepted", "referral_confidence"))


def test_help_lists_the_options_of_the_job(capsys: pytest.CaptureFixture) -> None:
    """``python -m monai.bundle run --config_file …/train.json --help`` said "--help: unknown option"."""
    from mednet.overrides import check_cli_overrides

    argv = ["/venv/lib/site-packages/monai/bundle/__main__.py", "run", "--config_file", str(TRAIN), "--help"]
    with pytest.raises(SystemExit) as done:
        check_cli_overrides(argv)
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("options of train.json")
    assert "  --variant skip   [choices ['unpool', 'transposed', 'strided', 'skip']]" in lines
    assert "  --run_dir None" in lines and "  --augmentation True" in lines and "  --views [0, 1, 2]" in lines
    assert "  --device (computed unless given)" in lines  # overridable
    check_cli_overrides([*argv[:-1], "--help", "False"])  # no help asked for: a plain run's check
    argv = [argv[0], "run", "--config_file", str([str(f) for f in EVALUATE]), "-h"]
    with pytest.raises(SystemExit):
        check_cli_overrides(argv)
    lines = capsys.readouterr().out.splitlines()
    assert "  --variant (the --ckpt_path run's, else 'skip')   [choices ['unpool', 'transposed', 'strided', 'skip']]" in lines
    assert not [line for line in lines if line.startswith(("  --mask", "  --input", "  --overwrite"))]  # unused here
    assert not [line for line in lines if line.startswith(("  --network", "  --run_settings", "  --train", "  --_"))]


@pytest.mark.parametrize(("config", "recorded", "defaults"), [
    (EVALUATE, {"variant": "unpool", "base_channels": 4, "intensity_normalization": "zscore",
                "bias_correction": "none", "views": [2]},
     {"variant": "skip", "base_channels": 8, "intensity_normalization": "histogram", "bias_correction": "n4",
      "views": [0, 1, 2]}),
    (DERM_EVALUATE, {"model": "receptive_field_cnn", "image_size": 32, "cifar_stem": True, "batch_norm": False,
                     "loss": "ldam"},
     {"model": "resnet18", "image_size": 64, "cifar_stem": None, "batch_norm": True, "loss": "ce"}),
])
def test_a_named_checkpoint_brings_its_runs_settings(tmp_path: Path, config, recorded: dict, defaults: dict) -> None:
    """With --ckpt_path, evaluation and inference made the user repeat the training command's settings
    (--views "[2]" --bias_correction none; --image_size 32 --loss ldam), then refused the checkpoint without them."""
    run = tmp_path / "train-x-1"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps(recorded), encoding="utf-8")
    for ckpt in (str(run), str(run / "model.pt")):  # a run folder or its model.pt
        parsed = _parsed(config, ckpt_path=ckpt)
        assert {k: parsed.get_parsed_content(k) for k in recorded} == recorded
    key, value = next(iter(defaults.items()))  # a given option still wins (and is checked against the run)
    assert _parsed(config, ckpt_path=str(run), **{key: value}).get_parsed_content(key) == value
    check_overrides(config, {"ckpt_path": str(run), key: value})
    parsed = _parsed(config)  # no --ckpt_path: the defaults pick the latest run
    assert {k: parsed.get_parsed_content(k) for k in defaults} == defaults
    if "cifar_stem" in recorded:  # None from the command line: the run's own check, not MONAI's dropped-None refusal
        check_overrides(config, {"ckpt_path": str(run), "cifar_stem": None}, cli=True)
    bare = tmp_path / "copied.pt"  # a checkpoint without its run folder: the defaults
    assert {k: _parsed(config, ckpt_path=str(bare)).get_parsed_content(k) for k in defaults} == defaults
