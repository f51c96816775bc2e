"""The brain bundle end to end: one ``python -m monai.bundle run`` subprocess per config (train, evaluate,
inference — the smoke paths), the other cases in-process through :func:`mednet.app.bundles.run_bundle` (the same
configs and checks, without ≈ 10 s of interpreter start each).

train (2 epochs on a tiny cohort) → evaluate (both protocols) → inference (file, output geometry), plus the
clear-error paths users hit: unknown variant, no validation volumes, mismatched checkpoint, existing output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from _bundle_cli import bundle_error_line, run_bundle_cli
from mednet.app.bundles import run_bundle
from test_outputs import check_report_against_predictions

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "brain_tissue_fcn" / "configs"
pytestmark = pytest.mark.slow


def bundle(config: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_bundle_cli("brain_tissue_fcn", config, *args, check=check)


def refusal(config: str, **overrides: object) -> str:
    """The one error line of ``config`` run with ``overrides`` (in-process; see :func:`bundle_error_line`)."""
    return bundle_error_line("brain_tissue_fcn", config, **overrides)


@pytest.fixture(scope="module")
def trained(tiny_cohort: Path, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    bundle("train", "--variant", "skip", "--epochs", "2", "--dataset_dir", str(tiny_cohort), "--runs_root", str(runs),
           "--max_patches_per_volume", "1500")
    (run_dir,) = list(runs.glob("train-skip-*"))
    return run_dir


def test_train_writes_run(trained: Path) -> None:
    for name in ("model.pt", "model_final.pt", "metrics.csv", "convergence.png", "settings.json", "finished.json",
                 "patch_stats.json", "validation_volumes.json"):
        assert (trained / name).is_file(), name
    (validation,) = json.loads((trained / "validation_volumes.json").read_text(encoding="utf-8"))["validation"]
    assert Path(validation["image"]).name == "sub-003.nii.gz" and Path(validation["label"]).is_file()
    assert not [p for p in trained.iterdir() if ".tmp-" in p.name]  # atomic writes leave no temporary file
    assert any((trained / "tensorboard").iterdir())
    df = pd.read_csv(trained / "metrics.csv")
    assert list(df["epoch"]) == [1, 2]
    done = json.loads((trained / "finished.json").read_text(encoding="utf-8"))
    assert done["epochs"] == 2 and done["key_metric"] == "val_mean_dice"
    assert done["best_metric"] == pytest.approx(df["val_mean_dice"].max(), abs=1e-6)
    assert done["best_epoch"] == int(df.loc[df["val_mean_dice"].idxmax(), "epoch"])
    for col in ("train_loss", "train_accuracy", "val_mean_dice", "val_dice_CSF", "val_dice_GM", "val_dice_WM",
                "val_acc_CSF", "val_pixel_accuracy"):
        assert col in df and df[col].notna().all(), col
    assert df["train_loss"].iloc[-1] < df["train_loss"].iloc[0]
    # two epochs on a tiny cohort already segment better than chance on the validation subject
    assert df["val_mean_dice"].max() > 0.5


def test_evaluate_and_infer(trained: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    proc = bundle("evaluate", "--dataset_dir", str(tiny_cohort), "--ckpt_path", str(trained / "model.pt"))
    (eval_dir,) = list(trained.glob("eval-test-*"))
    assert str(eval_dir) in proc.stdout
    provenance = json.loads((eval_dir / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["checkpoint"]["path"] == str((trained / "model.pt").resolve())
    assert provenance["checkpoint"]["training_settings"] == json.loads((trained / "settings.json").read_text(encoding="utf-8"))
    assert provenance["checkpoint"]["training_finished"]["epochs"] == 2 and provenance["split"] == "test"
    assert f"checkpoint {(trained / 'model.pt').resolve()}" in proc.stdout + proc.stderr  # logged too
    summary = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["info"]["checkpoint_sha256"] == provenance["checkpoint"]["sha256"]
    assert set(summary["protocols"]) == {"whole volume", "grid patches"}
    for scores in summary["protocols"].values():
        assert 0.4 < scores["mean_dice"] <= 1
    for sub in ("whole_volume", "grid_patches"):
        for name in ("metrics.json", "per_volume.csv", "confusion.csv", "confusion.png", "summary.md"):
            assert (eval_dir / sub / name).is_file(), (sub, name)
    metrics = json.loads((eval_dir / "whole_volume" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["background_rule"] == ["intensity 0 is background"]
    # the scores are those of the prediction written (per volume, pooled); summary.json holds each protocol's
    test_item = json.loads((tiny_cohort / "datalist.json").read_text(encoding="utf-8"))["test"][0]
    check_report_against_predictions(eval_dir / "whole_volume", eval_dir / "predictions",
                                     {"sub-004": tiny_cohort / test_item["label"]})
    for sub, protocol in (("whole_volume", "whole volume"), ("grid_patches", "grid patches")):
        overall = json.loads((eval_dir / sub / "metrics.json").read_text(encoding="utf-8"))["overall"]
        assert summary["protocols"][protocol] == overall, sub
    assert list((eval_dir / "whole_volume").glob("slices_*.png"))

    # the evaluation's predictions and the inference output are in the input's geometry
    src = nib.load(tiny_cohort / test_item["image"])
    pred = nib.load(next((eval_dir / "predictions").glob("*_seg.nii.gz")))
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)

    # inference on an LPS, 256x128x256-shaped subject (sub-002 of the cohort)
    lps = tiny_cohort / "images" / "sub-002.nii.gz"
    assert nib.aff2axcodes(nib.load(lps).affine) == ("L", "P", "S")
    out = tmp_path / "pred"
    bundle("inference", "--input", str(lps), "--output_dir", str(out), "--ckpt_path", str(trained / "model.pt"))
    seg = nib.load(out / "sub-002_seg.nii.gz")
    sidecar = json.loads((out / "sub-002_seg.json").read_text(encoding="utf-8"))  # BIDS-derivatives-style provenance
    assert sidecar["input"] == str(lps.resolve()) and sidecar["output"] == str((out / "sub-002_seg.nii.gz").resolve())
    assert sidecar["checkpoint"]["sha256"] == provenance["checkpoint"]["sha256"]
    assert sidecar["settings"]["views"] == [0, 1, 2] and {"mednet", "monai", "torch"} <= set(sidecar["versions"])
    src = nib.load(lps)
    assert seg.shape == src.shape and np.allclose(seg.affine, src.affine)
    labels = np.asarray(seg.dataobj)
    truth = np.asarray(nib.load(tiny_cohort / "labels" / "sub-002.nii.gz").dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(labels == 0, src.get_fdata() == 0)  # intensity-0 rule
    brain = truth > 0
    assert (labels[brain] == truth[brain]).mean() > 0.5  # the orientation round trip kept voxels in place

    # a second inference into the same folder refuses to overwrite and leaves the first file intact
    before = (out / "sub-002_seg.nii.gz").read_bytes()
    line = refusal("inference", input=str(lps), output_dir=str(out), ckpt_path=str(trained / "model.pt"))
    assert "already exists" in line and "sub-002_seg.nii.gz" in line
    assert (out / "sub-002_seg.nii.gz").read_bytes() == before


def test_unknown_variant_is_a_clear_error(tiny_cohort: Path, tmp_path: Path) -> None:
    line = refusal("train", variant="resnet", epochs=1, dataset_dir=str(tiny_cohort), runs_root=str(tmp_path))
    assert line.startswith("mednet error: --variant") and "resnet" in line and "skip" in line
    assert not any(tmp_path.iterdir())


def test_missing_validation_split_is_a_clear_error(tiny_cohort: Path, tmp_path: Path) -> None:
    data = json.loads((tiny_cohort / "datalist.json").read_text(encoding="utf-8"))
    data.pop("validation")
    shutil.copytree(tiny_cohort / "images", tmp_path / "images")
    shutil.copytree(tiny_cohort / "labels", tmp_path / "labels")
    (tmp_path / "datalist.json").write_text(json.dumps(data))
    line = refusal("train", epochs=1, dataset_dir=str(tmp_path), runs_root=str(tmp_path / "runs"), stride=4,
                   max_patches_per_volume=50)
    assert "validation" in line and "datalist.json" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run folder is left


def test_mismatched_checkpoint_is_a_clear_error(trained: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    assert json.loads((trained / "settings.json").read_text(encoding="utf-8")) == {
        "variant": "skip", "base_channels": 8, "intensity_normalization": "histogram", "bias_correction": "n4",
        "views": [0, 1, 2], "augmentation": True, "epochs": 2, "learning_rate": 0.004, "batch_size": 256, "loss": "ce",
        "seed": 0, "val_interval": 1, "overrides": {}}
    # the run's settings.json names what differs and how to fix it
    line = refusal("evaluate", variant="unpool", intensity_normalization="scale", dataset_dir=str(tiny_cohort),
                   ckpt_path=str(trained / "model.pt"))
    assert "model.pt" in line and "variant='skip' (this run: 'unpool')" in line
    assert "--intensity_normalization histogram" in line
    line = refusal("inference", views=[2], input=str(tiny_cohort / "images" / "sub-004.nii.gz"),
                   output_dir=str(tmp_path / "p"), ckpt_path=str(trained / "model.pt"))
    assert "--views '[0,1,2]'" in line and not (tmp_path / "p").exists()
    # a checkpoint without its run folder (copied, exported) is checked against the network itself
    shutil.copy(trained / "model.pt", tmp_path / "model.pt")
    line = refusal("evaluate", variant="unpool", dataset_dir=str(tiny_cohort), ckpt_path=str(tmp_path / "model.pt"))
    assert "model.pt" in line and "does not match" in line and "variant=unpool" in line
    line = refusal("evaluate", dataset_dir=str(tiny_cohort), ckpt_path=str(trained / "missing.pt"))
    assert "missing.pt: checkpoint not found" in line


def test_evaluation_refuses_volumes_the_run_trained_or_selected_on(trained: Path, tiny_cohort: Path,
                                                                     tmp_path: Path) -> None:
    """Another cohort's datalist whose test split holds the run's training and validation scans: the score would be
    a training score. Refused before any report folder; the same volumes asked for as --split training pass."""
    data = json.loads((tiny_cohort / "datalist.json").read_text(encoding="utf-8"))
    base = tiny_cohort.resolve()

    def absolute(items: list) -> list:
        return [{k: str(base / v) for k, v in item.items()} for item in items]

    # another split of the same scans ("another seed"): its test split is the run's first training and its validation
    # volume
    leaky = {"training": absolute(data["training"][1:]), "validation": absolute(data["test"]),
             "test": absolute(data["training"][:1] + data["validation"])}
    (tmp_path / "datalist.json").write_text(json.dumps(leaky), encoding="utf-8")
    before = set(trained.iterdir())
    line = refusal("evaluate", dataset_dir=str(tmp_path), ckpt_path=str(trained / "model.pt"))
    assert line.startswith(f"mednet error: {tmp_path / 'datalist.json'}: 2 volume(s) of its test split are volumes "
                           f"the run of {trained / 'model.pt'} was trained or selected on (1 training, 1 validation; "
                           "e.g. "), line
    assert set(trained.iterdir()) == before  # no eval-* folder
    from mednet.data.datalist import load_datalist
    from mednet.data.splits import check_evaluated_volumes

    training = load_datalist(tmp_path / "datalist.json", "training")  # run's training volumes, as --split training
    assert check_evaluated_volumes(training, trained / "model.pt", "training", tmp_path) is training
    own_test = load_datalist(tiny_cohort / "datalist.json", "test")
    assert check_evaluated_volumes(own_test, trained / "model.pt", "test", tiny_cohort) is own_test


def test_inputs_with_the_same_file_name_get_distinct_outputs(trained: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    """BIDS-like tree: subA/anat/T1.nii.gz and subB/anat/T1.nii.gz; the latest finished run is the default model."""
    root = tmp_path / "bids"
    entries = []
    for sub, src in (("subA", "sub-004"), ("subB", "sub-001")):
        (root / sub / "anat").mkdir(parents=True)
        shutil.copy(tiny_cohort / "images" / f"{src}.nii.gz", root / sub / "anat" / "T1.nii.gz")
        shutil.copy(tiny_cohort / "labels" / f"{src}.nii.gz", root / sub / "anat" / "T1_dseg.nii.gz")
        entries.append({"image": f"{sub}/anat/T1.nii.gz", "label": f"{sub}/anat/T1_dseg.nii.gz"})
    (root / "datalist.json").write_text(json.dumps({"validation": entries}))
    names = ["subA_anat_T1", "subB_anat_T1"]

    # without --ckpt_path only finished runs with these settings qualify; the error says why each was skipped
    line = refusal("inference", views=[2], input=str(tiny_cohort / "images" / "sub-004.nii.gz"),
                   output_dir=str(tmp_path / "q"), runs_root=str(trained.parent))
    assert "no finished run 'train-skip-*'" in line
    assert f"{trained.name}: other settings: views=[0, 1, 2] (requested [2])" in line
    assert "--ckpt_path" in line and "--views '[0,1,2]'" in line
    assert not (tmp_path / "q").exists()

    run_bundle("brain_tissue_fcn", "evaluate", dataset_dir=str(root), split="validation", runs_root=str(trained.parent))
    (eval_dir,) = list(trained.glob("eval-validation-*"))  # no --ckpt_path: the finished, compatible run
    assert json.loads((eval_dir / "provenance.json").read_text(encoding="utf-8"))["checkpoint"]["path"] == str((trained / "model.pt").resolve())
    assert sorted(p.name for p in (eval_dir / "predictions").iterdir()) == [f"{n}_seg.nii.gz" for n in names]
    for sub in ("whole_volume", "grid_patches"):
        assert list(pd.read_csv(eval_dir / sub / "per_volume.csv")["volume"]) == names
    assert sorted(p.name for p in (eval_dir / "whole_volume").glob("slices_*.png")) == [f"slices_{n}.png" for n in names]
    for n, src in zip(names, ("sub-004", "sub-001")):  # each prediction is of its own input
        assert nib.load(eval_dir / "predictions" / f"{n}_seg.nii.gz").shape == nib.load(tiny_cohort / "images" / f"{src}.nii.gz").shape
    # two volumes: the pooled confusion matrix is the sum of both, each row's Dice that of its own prediction file
    check_report_against_predictions(eval_dir / "whole_volume", eval_dir / "predictions",
                                     {n: root / sub / "anat" / "T1_dseg.nii.gz" for n, sub in zip(names, ("subA", "subB"))})

    out = tmp_path / "pred"
    run_bundle("brain_tissue_fcn", "inference", input=str(root / "datalist.json"), split="validation",
               output_dir=str(out), runs_root=str(trained.parent))
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}_seg.nii.gz" for n in names] + [f"{n}_seg.json" for n in names])
    for n, sub in zip(names, ("subA", "subB")):
        sidecar = json.loads((out / f"{n}_seg.json").read_text(encoding="utf-8"))
        assert sidecar["input"] == str((root / sub / "anat" / "T1.nii.gz").resolve())
        assert sidecar["checkpoint"]["path"] == str((trained / "model.pt").resolve())
        # the evaluation scored exactly what inference.json gives for the same volume and checkpoint
        np.testing.assert_array_equal(np.asarray(nib.load(out / f"{n}_seg.nii.gz").dataobj),
                                      np.asarray(nib.load(eval_dir / "predictions" / f"{n}_seg.nii.gz").dataobj))


def _write_dicom_series(nifti: Path, out_dir: Path) -> None:
    """The NIfTI volume as an int16 CT-style DICOM series written with SimpleITK."""
    import SimpleITK as sitk

    img = sitk.Cast(sitk.ReadImage(str(nifti)) * 10, sitk.sitkInt16)
    out_dir.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        for tag, value in (("0020|000d", uid + ".1"), ("0020|000e", uid), ("0008|0060", "MR"),
                           ("0020|0037", "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7])))),
                           ("0018|0050", str(img.GetSpacing()[2])), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))))):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(out_dir / f"im{k:03d}.dcm"))
        writer.Execute(s)


def test_inference_on_a_folder_with_dicom_and_a_mask(trained: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    from conftest import make_head
    from mednet.data.readers import SimpleITKReader

    inputs = tmp_path / "inputs"
    _write_dicom_series(tiny_cohort / "images" / "sub-003.nii.gz", inputs / "series3")
    shutil.copy(tiny_cohort / "images" / "sub-004.nii.gz", inputs / "sub-004.nii.gz")
    out = tmp_path / "out"
    run_bundle("brain_tissue_fcn", "inference", input=str(inputs), output_dir=str(out), ckpt_path=str(trained / "model.pt"))
    assert sorted(p.name for p in out.iterdir()) == ["series3_seg.json", "series3_seg.nii.gz", "sub-004_seg.json",
                                                     "sub-004_seg.nii.gz"]
    reader = SimpleITKReader()
    arr, meta = reader.get_data(reader.read(str(inputs / "series3")))
    seg = nib.load(out / "series3_seg.nii.gz")
    assert seg.shape == arr.shape and np.allclose(seg.affine, meta["original_affine"], atol=1e-4)
    truth = np.asarray(nib.load(tiny_cohort / "labels" / "sub-003.nii.gz").dataobj)
    brain = truth > 0
    assert (np.asarray(seg.dataobj)[brain] == truth[brain]).mean() > 0.5

    # the same subject (sub-004, the harder test subject) as a scan that is not skull-stripped: skull, scalp, noisy air
    img = nib.load(tiny_cohort / "images" / "sub-004.nii.gz")
    lab = nib.load(tiny_cohort / "labels" / "sub-004.nii.gz")
    stripped, brain = img.get_fdata(dtype=np.float32), np.asarray(lab.dataobj) > 0
    heads = tmp_path / "heads"
    heads.mkdir()
    nib.save(nib.Nifti1Image(make_head(stripped, brain, float(min(img.header.get_zooms()))), img.affine), heads / "head.nii.gz")
    # without a mask it is refused with one line naming the file, what was detected and what to do; nothing written
    line = refusal("inference", input=str(heads / "head.nii.gz"), output_dir=str(tmp_path / "refused"),
                   ckpt_path=str(trained / "model.pt"))
    assert "head.nii.gz: background is not zero" in line and "--mask" in line and "skull-strip" in line
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())

    # with its brain mask, every step uses the mask: labels identical to those of the skull-stripped scan
    half = brain.copy()
    half[: half.shape[0] // 2] = False  # a mask of the right half of the brain only
    for name, mask in (("full", brain), ("half", half)):
        shutil.copy(heads / "head.nii.gz", heads / f"head_{name}.nii.gz")
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), lab.affine), heads / f"mask_{name}.nii.gz")
    (heads / "datalist.json").write_text(json.dumps({"test": [
        {"image": f"head_{n}.nii.gz", "mask": f"mask_{n}.nii.gz"} for n in ("full", "half")]}))
    run_bundle("brain_tissue_fcn", "inference", input=str(heads / "datalist.json"), output_dir=str(tmp_path / "masked"),
               ckpt_path=str(trained / "model.pt"))
    reference = np.asarray(nib.load(out / "sub-004_seg.nii.gz").dataobj)
    full = np.asarray(nib.load(tmp_path / "masked" / "head_full_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(full, reference)
    assert (full[brain] == np.asarray(lab.dataobj)[brain]).mean() > 0.5
    seg = np.asarray(nib.load(tmp_path / "masked" / "head_half_seg.nii.gz").dataobj)
    assert (seg[~half] == 0).all() and (seg[half] > 0).all()  # outside the mask is background, whatever the intensity
    side = json.loads((tmp_path / "masked" / "head_half_seg.json").read_text(encoding="utf-8"))
    assert side["input"] == str((heads / "head_half.nii.gz").resolve())
    assert side["mask"] == str((heads / "mask_half.nii.gz").resolve())  # which mask was used is on record
    assert side["split"] == "test"  # a datalist's split; a folder input has none
    assert json.loads((out / "series3_seg.json").read_text(encoding="utf-8"))["split"] is None


def test_compare_variants_writes_the_exercise_table(tiny_cohort: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import mednet.app.compare_variants as module
    from mednet.app.compare_variants import compare_variants

    real_run_bundle = module.run_bundle

    def axial_without_n4(bundle: str, config: str, **overrides: object):  # the table, not the preprocessing, is tested
        return real_run_bundle(bundle, config, bias_correction="none", views=[2], **overrides)

    monkeypatch.setattr(module, "run_bundle", axial_without_n4)  # 2 trainings + 4 evaluations: 33 s → 13 s on 2 cores
    monkeypatch.chdir(tmp_path)  # a relative --out, outside the checkout: the runs must land there too
    out = compare_variants(dataset_dir=str(tiny_cohort), epochs=1, out="cmp", variants="unpool,skip",
                           max_patches_per_volume=300)
    assert out.is_absolute() and out.parent == tmp_path / "cmp" and (out / "runs").is_dir()
    (skip_run,) = (out / "runs").glob("train-skip-*")
    for protocol, key in (("whole_volume", "whole volume"), ("grid_patches", "grid patches")):
        df = pd.read_csv(out / f"variants_{protocol}.csv")
        assert list(df["model"]) == ["unpool", "unpool", "skip", "skip"]
        assert list(df["split"]) == ["training", "test"] * 2
        for col in ("Dice CSF", "Dice GM", "Dice WM", "Dice avg", "Acc CSF", "Acc GM", "Acc WM", "Acc avg"):
            assert df[col].between(0, 1).all(), col
        assert (out / f"variants_{protocol}.md").read_text(encoding="utf-8").count("| skip |") == 2
        # each row holds the scores of its own variant's evaluation on its own split (summary.json of that run)
        for split in ("training", "test"):
            (evaluation,) = skip_run.glob(f"eval-{split}-*")
            scores = json.loads((evaluation / "summary.json").read_text(encoding="utf-8"))["protocols"][key]
            row = df[(df["model"] == "skip") & (df["split"] == split)].iloc[0]
            assert row["Dice avg"] == pytest.approx(scores["mean_dice"], abs=1e-12), (protocol, split)
            assert row["Dice GM"] == pytest.approx(scores["dice_GM"], abs=1e-12), (protocol, split)
            assert row["Acc avg"] == pytest.approx(scores["mean_acc"], abs=1e-12), (protocol, split)
    with pytest.raises(ValueError, match="unknown variant"):
        compare_variants(dataset_dir=str(tiny_cohort), variants="vgg", out=str(tmp_path))
