"""Naive baselines (mednet.metrics.baselines) and the robustness benchmark's corruption generator."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mednet.metrics import gmm_tissue_segmentation, scores_from_confusion, tissue_confusion_matrix

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _three_tissue_volume(seed: int = 0, noise: float = 4.0):
    """A 40³ volume: background 0 outside a ball; inside it shells of CSF (dark), GM, WM (bright) + noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(40) - 19.5,) * 3, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    label = np.zeros(r.shape, np.uint8)
    label[r < 18] = 1
    label[r < 15] = 2
    label[r < 9] = 3
    mean = np.array([0.0, 40.0, 90.0, 140.0])
    image = np.where(label > 0, mean[label] + rng.normal(0, noise, r.shape), 0.0).astype(np.float32)
    return image, label


def test_gmm_recovers_three_intensity_classes():
    image, label = _three_tissue_volume()
    pred = gmm_tissue_segmentation(image)
    assert pred.dtype == np.uint8 and pred.shape == label.shape
    assert (pred[label == 0] == 0).all()  # intensity 0 = background
    scores = scores_from_confusion(tissue_confusion_matrix(pred, label))
    assert scores["mean_dice"] > 0.99
    # classes are ordered by intensity, whatever order the mixture found them in; scaling does not matter
    np.testing.assert_array_equal(gmm_tissue_segmentation(torch.from_numpy(image * 0.01)[None]), pred[None])


def test_gmm_uses_the_given_mask_and_subsamples_the_fit():
    image, label = _three_tissue_volume(seed=1)
    mask = label > 0
    mask[:20] = False  # only half the brain is labelled
    pred = gmm_tissue_segmentation(image, mask, max_fit_voxels=500)
    assert (pred[~mask] == 0).all() and (pred[mask] > 0).all()
    assert (pred[mask] == label[mask]).mean() > 0.99
    with pytest.raises(ValueError, match="at least 3 brain voxels"):
        gmm_tissue_segmentation(np.zeros((4, 4, 4), np.float32))


@pytest.fixture(scope="module")
def corruptions():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _corruptions
    finally:
        sys.path.remove(str(BENCHMARKS))
    return _corruptions


def test_corruptions_level_zero_is_identity_and_background_stays_zero(corruptions):
    image, label = _three_tissue_volume(noise=0.0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    img0, lab0, aff0 = corruptions.corrupt(image, label, affine, corruptions.Severity(), rng)
    np.testing.assert_allclose(img0, image, rtol=1e-6)
    np.testing.assert_array_equal(lab0, label)
    np.testing.assert_array_equal(aff0, affine)

    sev = corruptions.Severity(bias=0.6, gamma=1.5, noise=0.08, spacing_mm=5.0, elastic_mm=4.0)
    img, lab, aff = corruptions.corrupt(image, label, affine, sev, np.random.default_rng(1))
    assert img.shape == lab.shape and set(np.unique(lab)) <= {0, 1, 2, 3}
    assert (img[lab == 0] == 0).all() and (img[lab > 0] > 0).all()  # skull-stripped
    assert sorted(np.sqrt((aff[:3, :3] ** 2).sum(0)).round(3).tolist()) == [2.0, 2.0, 5.0]
    assert abs(np.prod(img.shape) * 5.0 / 2.0 - image.size) / image.size < 0.1  # one axis coarser


def test_corruption_magnitudes(corruptions):
    shape, spacing = (40, 40, 40), np.array([2.0, 2.0, 2.0])
    brain = np.ones(shape, bool)
    log_field = corruptions.smooth_log_field(shape, spacing, 0.4, np.random.default_rng(2), brain)
    assert np.abs(log_field).max() == pytest.approx(0.4) and abs(log_field.mean()) < 1e-6
    disp = corruptions.displacement_field(shape, spacing, 3.0, np.random.default_rng(3), brain)
    assert np.sqrt((disp**2).sum(0)).max() == pytest.approx(3.0)  # in mm

    x = np.full(shape, 100.0, np.float32)
    noisy = corruptions.rician_noise(x, brain, 0.05, np.random.default_rng(4))
    assert (noisy >= 0).all() and noisy.std() == pytest.approx(5.0, rel=0.05)
    g = corruptions.gamma_contrast(np.linspace(0, 200, 1000).reshape(10, 10, 10).astype(np.float32), brain[:10, :10, :10], 2.0)
    assert g.max() == pytest.approx(200.0) and g.min() == pytest.approx(0.0, abs=1e-4)
    assert g.reshape(-1)[500] == pytest.approx(200.0 * (100.1 / 200.0) ** 2, rel=1e-3)


def test_robustness_ablation_levels_leave_out_one_realistic_corruption_each():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_brain_robustness as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    levels = bench.levels()
    realistic = next(lv for lv in levels if lv.corruption == "combined" and lv.name == "realistic")
    ablation = [lv for lv in levels if lv.corruption == "ablation"]
    assert realistic.params == bench.REALISTIC and ablation[0].params == bench.REALISTIC
    assert all(lv.params == bench.REALISTIC for lv in ablation)
    assert [lv.left_out for lv in ablation[1:]] == list(bench.ABLATED.values()) and len(ablation) == 6
    # opt-in, and appended last: the levels (and so the seeds) of the default benchmark do not move
    assert "ablation" not in bench.DEFAULT_CORRUPTIONS
    assert all(lv.corruption != "ablation" for lv in levels[: len(levels) - len(ablation)])
    severity = ablation[3].severity(0, np.random.default_rng(0), zoom=1.0)  # "-noise"
    assert severity.noise == 0 and severity.bias == 0.4 and 1.6 <= severity.spacing_mm <= 2.0


def test_robustness_ablation_levels_share_their_subjects(corruptions):
    """Every ablation level draws the same subject (parameters, axis, warp, field, noise) and leaves one corruption
    out: the differences between levels are that corruption's cost, not another draw. Before, each level had its
    own seed and "all" drew gamma 0.94 where "-bias" drew 0.64."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_brain_robustness as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    ablation = [lv for lv in bench.levels() if lv.corruption == "ablation"]
    image, label = _three_tissue_volume(noise=0.0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    results = {}
    for lv in ablation:
        rng = np.random.default_rng([7000, bench.CORRUPTIONS.index("ablation") + 1, 0, 0])  # as write_level_cohort
        sev = lv.severity(0, rng, zoom=1.0)
        results[lv.name] = (sev, corruptions.corrupt(image, label, affine, sev, rng))
    full, (img, lab, aff) = results["all"]
    for lv in ablation[1:]:
        sev, (img2, lab2, aff2) = results[lv.name]
        for key in bench.REALISTIC:
            expected = getattr(corruptions.Severity(), key) if key == lv.left_out else getattr(full, key)
            assert getattr(sev, key) == expected, (lv.name, key)
        if lv.left_out not in ("spacing_mm", "elastic_mm"):  # same geometry and warp: the same label map
            np.testing.assert_array_equal(lab2, lab)
            np.testing.assert_array_equal(aff2, aff)
        if lv.left_out == "noise":  # the same field and warp: only the noise differs
            brain = lab > 0
            assert np.corrcoef(img[brain], img2[brain])[0, 1] > 0.95


def test_bench_3d_training_crops_are_class_balanced_brain_only_targets(tiny_cohort):
    """The 3D benchmark's crops: 4 per step, (1, c, c, c), targets −1 (background) or tissue 0–2, image 0 outside the
    brain, and centres spread over the three tissues (ratios 0/1/1/1), not drawn by voxel count."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_brain_3d as bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    from mednet.data.datalist import find_datalist, load_datalist

    dataset = bench.crop_dataset(load_datalist(find_datalist(tiny_cohort), "training")[:1], crop=12, seed=0)
    centres = []
    for _ in range(10):
        crops = dataset[0]
        assert len(crops) == bench.CROPS_PER_STEP and set(crops[0]) == {"image", "label"}
        for crop in crops:
            image, label = torch.as_tensor(crop["image"]), torch.as_tensor(crop["label"])
            assert image.shape == label.shape == (1, 12, 12, 12) and label.dtype == torch.long
            assert set(label.unique().tolist()) <= {-1, 0, 1, 2} and (image[label < 0] == 0).all()
            centres.append(int(label[0, 6, 6, 6]))
    counts = np.bincount(np.asarray(centres), minlength=3)
    assert counts.sum() == 40 and (counts >= 5).all()  # each tissue ≈ 1/3 of 40 centres (CSF is ~15 % of voxels)


def test_benchmark_cohort_helper_never_deletes_user_files(tmp_path):
    """``ensure_cohort`` builds a demo cohort only into an empty folder or over a half-built cohort of its own; a
    folder with other files is refused (nothing deleted), and a cohort of an earlier generator is not reused."""
    from mednet.errors import DataError

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCHMARKS))
    user = tmp_path / "mine"
    (user / "images").mkdir(parents=True)
    (user / "images" / "sub-001.nii.gz").write_bytes(b"scan")
    (user / "notes.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(DataError, match="not empty"):
        _common.ensure_cohort(str(user))
    assert (user / "images" / "sub-001.nii.gz").read_bytes() == b"scan" and (user / "notes.txt").is_file()
    old = tmp_path / "old"
    old.mkdir()
    (old / "datalist.json").write_text("{}", encoding="utf-8")
    (old / "cohort.csv").write_text("subject,split,seed\nsub-000,training,0\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="made by an earlier mednet"):
        _common.ensure_cohort(str(old))
