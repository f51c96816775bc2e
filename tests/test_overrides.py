"""Bundle overrides are checked against the config files before any work (mednet.overrides), in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import monai.bundle
import pytest

from mednet.overrides import OptionError, check_cli_overrides, check_overrides, cli_overrides, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "brain_tissue_fcn" / "configs"
TRAIN, INFERENCE = (CONFIGS / f"{n}.json" for n in ("train", "inference"))
EVALUATE = [INFERENCE, CONFIGS / "evaluate.json"]  # an override of inference.json
MONAI_MAIN = str(Path(monai.bundle.__file__).parent / "__main__.py")


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the configs' % macros are relative to the checkout root, as for monai.bundle run


def refused(config: Path, **overrides: object) -> str:
    with pytest.raises(OptionError) as info:
        check_overrides(config, overrides)
    return str(info.value)


@pytest.mark.parametrize(("wrong", "right"), [("epoch", "epochs"), ("variannt", "variant"),
                                              ("learnig_rate", "learning_rate"), ("max_epochs", "epochs"),
                                              ("train#trainer#max_epochz", "train#trainer#max_epochs"),
                                              ("optimizer#weight_decayy", "optimizer#weight_decay")])
def test_unknown_option_names_the_nearest_valid_one(wrong: str, right: str) -> None:
    assert refused(TRAIN, **{wrong: 2}) == f"--{wrong}: unknown option for train.json (did you mean --{right}?)"


@pytest.mark.parametrize(("option", "value", "problem"), [
    ("epochs", "two", "--epochs: expects an integer (default 20), got 'two'"),
    ("epochs", 2.5, "--epochs: expects an integer (default 20), got 2.5"),
    ("epochs", True, "--epochs: expects an integer"),
    ("batch_size", 0, "--batch_size: must be ≥ 1, got 0"),
    ("variant", "resnet", "--variant: must be one of 'unpool', 'transposed', 'strided', 'skip', got 'resnet'"),
    ("learning_rate", -1, "--learning_rate: must be > 0, got -1"),
    ("learning_rate", 0.0, "--learning_rate: must be > 0, got 0.0"),
    ("views", 2, "--views: expects a list"),
    ("views", [0, 3], "--views: every item must be one of 0, 1, 2, got [0, 3]"),
    ("views", [], "--views: needs at least 1 item(s)"),
    ("views", [2, 2], "--views: must not repeat an item, got [2, 2]"),
    ("max_patches_per_volume", 0, "--max_patches_per_volume: must be ≥ 1"),
    ("max_patches_per_volume", "all", "--max_patches_per_volume: expects an integer, got 'all'"),
    ("dataset_dir", ["a", "b"], "--dataset_dir: expects text"),
])
def test_wrong_type_or_value_names_the_option(option: str, value: object, problem: str) -> None:
    assert refused(TRAIN, **{option: value}).startswith(problem)


def test_a_nested_id_that_only_refers_to_an_option_names_that_option() -> None:
    """--train#trainer#max_epochs 3 trained 3 epochs under a cosine schedule over 20 and recorded 20 (and bypassed
    val_interval's at_most rule); --optimizer#lr was recorded as --learning_rate's default."""
    assert refused(TRAIN, **{"train#trainer#max_epochs": 3}).startswith(
        "--train#trainer#max_epochs: is --epochs's value in this config; give --epochs instead")
    assert refused(TRAIN, **{"optimizer#lr": 0.1}).startswith("--optimizer#lr: is --learning_rate's value")
    derm = REPO / "bundles" / "dermoscopy_classification" / "configs" / "train.json"
    assert "give --referral_min_accepted instead" in refused(derm, **{"calibrate#handlers#0#min_accepted": 5})


def test_yes_no_text_and_open_upper_bounds_are_refused() -> None:
    """fire passes --amp false as the text 'false' (truthy); options whose default is an expression or null are not
    typed by their default, so this needs its own check. A decay factor or label smoothing of 1 is out of range."""
    derm = REPO / "bundles" / "dermoscopy_classification" / "configs"
    assert refused(TRAIN, amp="false").startswith("--amp: expects True or False")  # typed by its rule
    assert refused(derm / "train.json", cifar_stem="false").startswith("--cifar_stem: expects True or False")
    check_overrides(derm / "train.json", {"cifar_stem": None, "amp": False})  # null = by image size
    assert refused(INFERENCE, mask=False).startswith("--mask: expects text, got False")  # null default, typed by its rule
    assert refused(derm / "train.json", label_smoothing=1.0).startswith("--label_smoothing: must be < 1, got 1.0")
    assert refused(derm / "train.json", lr_schedule="plateau", lr_gamma=2).startswith("--lr_gamma: must be < 1")
    assert refused(derm / "train.json", lr_schedule="multistep", milestones=[5, 8]).startswith(
        "--milestones: every item must be < 1, got [5, 8]")


def test_valid_overrides_pass() -> None:
    check_overrides(TRAIN, {
        "epochs": 2, "learning_rate": 1,  # an int where the default is a float
        "min_pixels": 0.5,  # count or fraction: typed "float" by its rule although the default is 8
        "max_patches_per_volume": None, "patches_file": "p.npz",  # null defaults
        "views": [2], "variant": "unpool", "seed": 3,
        "validate#inferer#margin": 8,  # nested id
        "optimizer#weight_decay": 1e-4,  # not in the config, but an argument torch.optim.Adam takes
        "dataset_dir": "@runs_root", "batch_size": "$8 * 2",  # references / expressions resolve later
        "_meta_#version": "9.9",  # metadata ids are not the configs'
    })
    check_overrides(INFERENCE, {"input": "x.nii.gz", "mask": "m.nii.gz", "ckpt_path": "a.pt", "overwrite": True,
                                "series_id": "1.2.840.1"})
    check_overrides(EVALUATE, {"split": "training", "axis": 2, "ckpt_path": "run/model.pt"})
    check_overrides(TRAIN, {})


def test_rules_apply_only_to_options_of_the_config() -> None:
    # inference has no training options: `epochs` is unknown there, and its rule (common.json) is not suggested
    assert refused(INFERENCE, epochs=3) == "--epochs: unknown option for inference.json"
    assert refused(EVALUATE, split="val").startswith("--split: must be one of 'training', 'validation', 'test'")
    assert refused(INFERENCE, overwrite="true") == "--overwrite: expects True or False (default False), got 'true'"


def test_every_problem_is_reported_at_once() -> None:
    message = refused(TRAIN, epoch=2, batch_size=0, variant="resnet")
    assert message.count("; ") == 2 and "\n" not in message
    assert message.startswith("--epoch: unknown option") and "--batch_size: must be ≥ 1" in message


def test_option_rules_match_the_code_and_the_configs() -> None:
    """The bundle's declared choices are the ones the code accepts, and every rule names a real option."""
    from mednet.data.datalist import SPLITS
    from mednet.data.volumes import INTENSITY_NORMALIZATIONS
    from mednet.losses.segmentation import SEGMENTATION_LOSSES
    from mednet.networks import FCN_VARIANTS

    rules = load_config(TRAIN)["option_rules"]
    assert tuple(rules["variant"]["choices"]) == FCN_VARIANTS
    assert tuple(rules["loss"]["choices"]) == SEGMENTATION_LOSSES
    assert tuple(rules["intensity_normalization"]["choices"]) == INTENSITY_NORMALIZATIONS
    assert tuple(rules["split"]["choices"]) == SPLITS
    options = set().union(*(load_config(c) for c in (TRAIN, EVALUATE, INFERENCE)))
    assert set(rules) - {"_comment"} <= options  # a misspelt rule would be silently ignored
    for config in (TRAIN, EVALUATE, INFERENCE):
        assert load_config(config)["option_rules"] == rules  # each config copies the same rules


def test_the_check_is_generic(tmp_path: Path) -> None:
    """Another bundle's config gets the same check from its own ids, defaults and rules (no code of its own)."""
    config = tmp_path / "train.json"
    config.write_text(json.dumps({
        "backbone": "resnet18", "lr": 0.01, "mixup": False, "image_size": [224, 224],
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": "@epochs"}, "epochs": 10,
        "option_rules": {"backbone": {"choices": ["resnet18", "efficientnet_b0"]}, "lr": {"greater_than": 0},
                         "not_in_this_config": {"min": 1}}}))
    check_overrides(config, {"backbone": "efficientnet_b0", "mixup": True, "image_size": [256, 256], "epochs": 1,
                             "trainer#amp": True})  # SupervisedTrainer takes `amp`
    assert refused(config, backbone="vgg").startswith("--backbone: must be one of 'resnet18', 'efficientnet_b0'")
    assert refused(config, mixup=1) == "--mixup: expects True or False (default False), got 1"
    assert refused(config, lr=0) == "--lr: must be > 0, got 0"
    assert refused(config, zzz=1, backbon="x") == (
        "--zzz: unknown option for train.json; --backbon: unknown option for train.json (did you mean --backbone?)")
    assert refused(config, **{"trainer#ampp": True}).endswith("(did you mean --trainer#amp?)")


def test_an_option_the_run_never_reads_is_refused(tmp_path: Path) -> None:
    """An override config inherits ids it does not use: overriding one would be accepted and silently ignored."""
    from mednet.overrides import unused_ids

    assert refused(EVALUATE, mask="brain_mask.nii.gz") == (
        "--mask: not used by inference.json + evaluate.json (evaluation reads each volume's brain mask from the "
        "datalist's \"mask\" entries; --mask is for inference of one scan); it would be ignored")
    check_overrides(INFERENCE, {"mask": "brain_mask.nii.gz"})  # inference of one scan does read it
    assert refused(EVALUATE, series_id="1.2.840.1").startswith("--series_id: not used by inference.json + evaluate.json "
                                                              "(evaluation reads each volume's DICOM series from")
    dermoscopy = REPO / "bundles" / "dermoscopy_classification" / "configs"
    assert refused([dermoscopy / "inference.json", dermoscopy / "calibrate.json"], temperature=2.0) == (
        "--temperature: not used by inference.json + calibrate.json (it is an option of another of this bundle's "
        "configs); it would be ignored")
    config = tmp_path / "job.json"
    config.write_text(json.dumps({
        "imports": ["$import os"], "bundle_root": ".", "a": "$@b + 1", "b": 1, "dead": 2, "also_dead": "@dead",
        "net": {"_target_": "torch.nn.Identity"}, "run": ["$@a", "$@net::training", "$@2d_size", "$@copy"],
        "2d_size": 3, "source": 4, "copy": "%source", "_note": 3, "training": ["$@only_in_training"],
        "only_in_training": 5}))
    # reached only from dead ids: dead too; a %macro copy and an id starting with a digit are reached
    assert unused_ids(load_config(config), raw=load_config(config, raw=True)) == {
        "dead", "also_dead", "training", "only_in_training"}
    check_overrides(config, {"b": 5, "net#_disabled_": False, "bundle_root": "/x", "2d_size": 4, "source": 7})
    assert refused(config, dead=3).startswith("--dead: not used by job.json")
    check_overrides(config, {"b": "@dead", "dead": 3})  # an override that references it makes it used
    check_overrides(config, {"only_in_training": 6}, entry_ids=("initialize", "training", "finalize"))  # --run_id
    from mednet.overrides import cli_entry_ids

    assert cli_entry_ids(["m", "run", "--config_file", "c.json", "--run_id", "training"]) == (
        "initialize", "training", "finalize")
    assert cli_entry_ids(["m", "run", "--config_file=c.json", "--init_id=setup"]) == ("setup", "run", "finalize")
    no_entry = tmp_path / "fragment.json"
    no_entry.write_text(json.dumps({"a": 1}))
    assert unused_ids(load_config(no_entry)) == set()  # not a workflow: nothing is known to be dead


def test_an_option_that_another_setting_switches_off_is_refused() -> None:
    """``--focal_gamma 3`` with ``--loss ce`` is read by the loss expression but changes nothing; it would still be
    recorded in settings.json as if it had. Refused, naming the setting; a value equal to the default passes."""
    from mednet.overrides import inapplicable_overrides

    dermoscopy = REPO / "bundles" / "dermoscopy_classification" / "configs"
    train, distill = dermoscopy / "train.json", [dermoscopy / "train.json", dermoscopy / "distill.json"]
    assert refused(train, focal_gamma=3.0) == (
        "--focal_gamma: applies only with --loss focal, and this run has --loss ce; it would be ignored")
    check_overrides(train, {"focal_gamma": 3.0, "loss": "focal"})
    check_overrides(train, {"focal_gamma": 2, "loss": "ce"})  # the default (an int for a float): asks for nothing
    assert refused(train, loss="focal", drw_start=0.5).startswith("--drw_start: applies only with --loss ldam")
    assert refused(train, momentum=0.5, optimizer="adam") == (
        "--momentum: applies only with --optimizer sgd or --optimizer rmsprop, and this run has --optimizer adam; "
        "it would be ignored")
    assert refused(train, milestones=[0.3], lr_schedule="cosine").startswith(
        "--milestones: applies only with --lr_schedule multistep")
    assert refused(train, mixup_alpha=0.4).startswith("--mixup_alpha: applies only with --augmentation mixup or")
    assert refused(train, augmix_jsd=True, augmentation="cutout").startswith(
        "--augmix_jsd: applies only with --augmentation augmix")
    check_overrides(train, {"augmix_jsd": True, "augmentation": "augmix", "lr_schedule": "step", "lr_gamma": 0.5})
    check_overrides(train, {"augmentation": "cutmix", "mixup_alpha": 0.4})
    assert refused(distill, focal_gamma=1.0).startswith("--focal_gamma: applies only with --loss focal")
    assert inapplicable_overrides(train, {"loss": "ce", "focal_gamma": 2.0, "drw_start": 0.8, "momentum": 0.9}) == {
        "focal_gamma": "applies only with --loss focal, and this run has --loss ce; it would be ignored",
        "drw_start": "applies only with --loss ldam, and this run has --loss ce; it would be ignored"}


def test_referral_confidence_is_an_option_wherever_the_target_accuracy_is() -> None:
    """--referral_confidence (the level of the accuracy's lower bound a referral threshold must reach the target
    with) is checked in [0.5, 1) before any work, in every config that fits a threshold."""
    dermoscopy = REPO / "bundles" / "dermoscopy_classification" / "configs"
    calibrate = [dermoscopy / "inference.json", dermoscopy / "calibrate.json"]
    for config in (dermoscopy / "train.json", calibrate, dermoscopy / "ensemble.json"):
        check_overrides(config, {"referral_confidence": 0.5, "target_accuracy": 0.9})
        check_overrides(config, {"referral_confidence": 0.99})
        assert refused(config, referral_confidence=1.0).startswith("--referral_confidence: must be < 1, got 1.0")
        assert refused(config, referral_confidence=0.4).startswith("--referral_confidence: must be ≥ 0.5, got 0.4")
        assert refused(config, referral_confidence="high").startswith("--referral_confidence: expects a number")
    assert "give --referral_confidence instead" in refused(
        dermoscopy / "train.json", **{"calibrate#handlers#0#confidence_level": 0.8})
    assert refused(dermoscopy / "inference.json", referral_confidence=0.8).startswith(
        "--referral_confidence: unknown option for inference.json")


def test_validation_interval_is_at_most_the_epochs() -> None:
    """``--val_interval 5 --epochs 3`` would never validate: no model.pt after all the training."""
    dermoscopy = REPO / "bundles" / "dermoscopy_classification" / "configs" / "train.json"
    for config in (TRAIN, dermoscopy):
        assert refused(config, val_interval=5, epochs=3) == (
            "--val_interval: --val_interval 5 is more than --epochs 3; it must be at most 3")
        assert refused(config, epochs=1, val_interval=2).startswith("--val_interval: ")
        check_overrides(config, {"val_interval": 3, "epochs": 3})
    assert refused(TRAIN, epochs=0).startswith("--epochs: must be ≥ 1")  # the value rule first, no second line
    assert ";" not in refused(TRAIN, epochs=0, val_interval=2)  # only --epochs' own problem


def test_a_patch_option_is_refused_with_a_prepared_patch_file() -> None:
    """--patches_file: the patches were extracted already, with the file's own cap; --max_patches_per_volume would
    change nothing."""
    assert refused(TRAIN, patches_file="p.npz", max_patches_per_volume=500) == (
        "--max_patches_per_volume: applies only without --patches_file (this run has --patches_file p.npz); "
        "it would be ignored")
    check_overrides(TRAIN, {"max_patches_per_volume": 500})


def test_explain_target_class_takes_a_name_or_an_index() -> None:
    explain = REPO / "bundles" / "dermoscopy_classification" / "configs" / "explain.json"
    check_overrides(explain, {"target_class": "mel"})
    check_overrides(explain, {"target_class": 4})
    assert refused(explain, target_class=-1).startswith("--target_class: ")
    assert refused(explain, target_class=[1, 2]).startswith("--target_class: ")


def test_explain_methods_take_one_name_and_list_the_valid_ones() -> None:
    """``--methods gradcam`` is a one-item list, as in Python; an unknown method names the valid ones."""
    from mednet.explain import EXPLAIN_METHODS

    explain = REPO / "bundles" / "dermoscopy_classification" / "configs" / "explain.json"
    check_overrides(explain, {"methods": "gradcam"})
    check_overrides(explain, {"methods": ["gradcam", "integrated_gradients"]})
    valid = ", ".join(EXPLAIN_METHODS)
    assert refused(explain, methods="foo") == f"--methods: unknown method(s) 'foo'; choose from {valid}"
    assert refused(explain, methods=["gradcam", "foo"]) == f"--methods: unknown method(s) 'foo'; choose from {valid}"
    assert refused(explain, methods=[]) == f"--methods: no method given; choose from {valid}"
    assert refused(explain, methods=3) == (
        "--methods: is not accepted by mednet.explain.attribution.check_methods, got 3")


def test_a_rule_can_name_a_value_check(tmp_path: Path) -> None:
    """A rule's ``check`` function replaces the type rule: its answer and message are the command line's."""
    config = tmp_path / "explain.json"
    config.write_text(json.dumps({"maps": ["gradcam"], "option_rules": {
        "maps": {"type": "list", "check": "mednet.explain.attribution.check_methods"}}}))
    check_overrides(config, {"maps": "gradient_shap"})
    assert refused(config, maps="bar").startswith("--maps: unknown method(s) 'bar'; choose from gradcam")


def test_merged_config_files_are_checked_together(tmp_path: Path) -> None:
    """``--config_file "['train.json','extra.json']"`` (or MONAI's comma form): ids of every file are options."""
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"world_size": 2, "epochs": "$2 * @world_size"}))
    for files in ([TRAIN, extra], f"{TRAIN},{extra}"):
        check_overrides(files, {"world_size": 4, "batch_size": 8})
        # the later file computes --epochs: what it is computed from is the option
        assert refused(files, epochs=1) == ("--epochs: is computed by train.json + extra.json, not an option; set "
                                            "--world_size instead")
        assert refused(files, world_sise=4) == ("--world_sise: unknown option for train.json + extra.json "
                                                "(did you mean --world_size?)")
    assert refused(TRAIN, world_size=4).startswith("--world_size: unknown option for train.json")
    check_overrides(TRAIN, {"dataset_dir": tmp_path, "num_workers": 2})  # a Path from Python callers is text


def test_command_line_is_read_as_fire_reads_it(tmp_path: Path) -> None:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"config_file": str(TRAIN), "epochs": 5, "seed": 1}))
    argv = [MONAI_MAIN, "run", "--args_file", str(args_file), "--meta_file", "m.json", "--logging_file", "l.conf",
            "--workflow_type", "train", "--epochs", "2", "--learning_rate=-1", "--batch_size", "-3", "--amp",
            "--views", "[0, 1]", "--variant", "skip", "--train#trainer#max_epochs", "3"]
    config_file, overrides = cli_overrides(argv)
    assert config_file == str(TRAIN)
    assert overrides == {"seed": 1, "epochs": 2, "learning_rate": -1, "batch_size": -3, "amp": True, "views": [0, 1],
                         "variant": "skip", "train#trainer#max_epochs": 3}
    assert cli_overrides(["/usr/bin/pytest", "run", "--config_file", str(TRAIN), "--epoch", "2"]) is None
    assert cli_overrides([MONAI_MAIN, "verify_net_in_out", "--config_file", str(TRAIN)]) is None


def test_cli_check_runs_only_under_monai_bundle_run() -> None:
    check_cli_overrides()  # pytest's own command line: nothing to check
    check_cli_overrides([MONAI_MAIN, "run", "--config_file", str(TRAIN), "--epochs", "2"])
    with pytest.raises(OptionError, match=r"^--epoch: unknown option for train.json \(did you mean --epochs\?\)$"):
        check_cli_overrides([MONAI_MAIN, "run", "--config_file", str(TRAIN), "--epoch", "2"])
    with pytest.raises(OptionError, match="--epochs: expects an integer"):
        check_cli_overrides([MONAI_MAIN, "run", "--config_file", str(TRAIN), "--epochs", "2.5"])


def test_run_bundle_refuses_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mednet.app.bundles import run_bundle

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # run_bundle installs mednet's hook: restore it after
    with pytest.raises(OptionError, match=r"--epoch: unknown option .*did you mean --epochs"):
        run_bundle("brain_tissue_fcn", "train", epoch=1, dataset_dir=str(tmp_path / "missing"),
                   runs_root=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_evaluate_alone_names_its_base_config() -> None:
    """evaluate.json is an override of inference.json; run alone it is refused with the command to run."""
    from mednet.overrides import require_base_config

    argv = [str(Path(*Path("x/monai/bundle/__main__.py").parts)), "run", "--config_file", str(CONFIGS / "evaluate.json")]
    with pytest.raises(OptionError) as info:
        require_base_config("inference.json", "evaluate.json", argv)
    assert str(info.value).startswith("--config_file: evaluate.json is an override of inference.json")
    assert f"['{CONFIGS / 'inference.json'}','{CONFIGS / 'evaluate.json'}']" in str(info.value)
    both = [*argv[:3], f"['{CONFIGS / 'inference.json'}','{CONFIGS / 'evaluate.json'}']"]
    require_base_config("inference.json", "evaluate.json", both)  # no error
