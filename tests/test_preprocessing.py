"""Preprocessing that makes the brain model hold on real scans: N4 bias correction, robust clipping, the brain
mask honoured, scans it cannot segment refused, training-patch augmentation, and the demo cohort's variation."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import RandBiasField

from conftest import make_head
from mednet.data.bias_field import correct_bias_field, n4_bias_field
from mednet.errors import DataError
from mednet.data.mni import load_mni152_template
from mednet.data.scan_checks import check_skull_stripped, zero_background_residue
from mednet.data.transforms import LoadLabelledVolumed


@pytest.fixture(scope="module")
def template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = load_mni152_template(zoom=0.5)
    return t.t1, t.label, t.affine


def _wm_variation(image: np.ndarray, label: np.ndarray) -> float:
    wm = image[label == 3]
    return float(wm.std() / wm.mean())


def _save(path: Path, arr: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return str(path)


def test_n4_removes_a_strong_bias_field(template) -> None:
    t1, label, affine = template
    brain = label > 0
    bias = RandBiasField(coeff_range=(0.4, 0.4), prob=1.0)
    bias.set_random_state(3)
    biased = bias(torch.from_numpy(t1)[None]).numpy()[0] * brain
    before, clean = _wm_variation(biased, label), _wm_variation(t1, label)
    assert before > 3 * clean  # the field really spreads white-matter intensities
    spacing = tuple(np.sqrt((affine[:3, :3] ** 2).sum(0)))
    corrected, info = correct_bias_field(torch.from_numpy(biased)[None], torch.from_numpy(brain)[None], spacing)
    after = _wm_variation(corrected[0].numpy(), label)
    assert after < 0.4 * before, (clean, before, after)
    assert info["method"] == "n4" and info["field_max"] > info["field_min"] > 0
    # outside the mask nothing changes; "none" is the identity
    np.testing.assert_array_equal(corrected[0].numpy()[~brain], biased[~brain])
    same, info = correct_bias_field(torch.from_numpy(biased)[None], torch.from_numpy(brain)[None], spacing, "none")
    assert info == {"method": "none"} and torch.equal(same[0], torch.from_numpy(biased))
    with pytest.raises(ValueError, match="n4, none"):
        correct_bias_field(torch.from_numpy(biased)[None], torch.from_numpy(brain)[None], spacing, "n3")
    # the field's mean log is 0 inside the mask: the corrected brain keeps its intensity level
    field = n4_bias_field(biased, brain, spacing)
    assert abs(float(np.log(field[brain]).mean())) < 1e-4


def test_one_outlier_voxel_does_not_break_normalisation(template, tmp_path: Path) -> None:
    t1, label, affine = template
    spiked = t1.copy()
    spiked[tuple(np.argwhere(label == 3)[0])] = t1.max() * 1e4
    clean, spike = _save(tmp_path / "clean.nii.gz", t1, affine), _save(tmp_path / "spike.nii.gz", spiked, affine)
    brain = torch.from_numpy(label > 0)[None]
    for mode in ("histogram", "scale"):
        a = LoadLabelledVolumed(intensity_normalization=mode, bias_correction="none")({"image": clean})["image"]
        b = LoadLabelledVolumed(intensity_normalization=mode, bias_correction="none")({"image": spike})["image"]
        diff = (a - b).abs()[brain]
        assert float(torch.quantile(diff, 0.99)) < 0.02, mode
        # without the robust clipping the same voxel wrecks the whole brain (this test can fail)
        c = LoadLabelledVolumed(intensity_normalization=mode, bias_correction="none", clip_percentiles=None)({"image": spike})["image"]
        # (histogram: every brain voxel falls into the first bin; scale: the mean is dragged up by the voxel)
        assert float(torch.quantile((a - c).abs()[brain], 0.5)) > {"histogram": 0.1, "scale": 0.03}[mode], mode


def test_the_brain_mask_is_honoured(template, tmp_path: Path) -> None:
    t1, label, affine = template
    brain = label > 0
    head = make_head(t1, brain, voxel_mm=2.0)
    mask = _save(tmp_path / "mask.nii.gz", brain.astype(np.uint8), affine)
    stripped = LoadLabelledVolumed()({"image": _save(tmp_path / "brain.nii.gz", t1, affine)})
    masked = LoadLabelledVolumed()({"image": _save(tmp_path / "head.nii.gz", head, affine), "mask": mask})
    assert masked["mask_rule"] == "brain mask file"
    out = masked["image"][0].numpy()
    assert (out[~brain] == 0).all()  # nothing outside the mask reaches the network
    # inside the mask: the same preprocessing as the skull-stripped scan (normalisation, N4, clipping use the mask)
    np.testing.assert_allclose(out[brain], stripped["image"][0].numpy()[brain], atol=1e-4)
    assert masked["preprocessing"]["bias_correction"]["method"] == "n4"


def test_scans_that_are_not_skull_stripped_are_refused(template, tmp_path: Path) -> None:
    t1, label, affine = template
    brain = label > 0
    spacing = (2.0, 2.0, 2.0)
    signs = check_skull_stripped(t1, "brain.nii.gz", spacing)
    assert 1000 < signs["nonzero_ml"] < 3000 and signs["face_nonzero_fraction"] < 0.01
    head = _save(tmp_path / "head.nii.gz", make_head(t1, brain, 2.0), affine)
    with pytest.raises(DataError, match="head.nii.gz: background is not zero.*--mask.*SynthStrip"):
        LoadLabelledVolumed()({"image": head})
    zero_air = make_head(t1, brain, 2.0, noisy_air=False)
    with pytest.raises(DataError, match="more than a brain.*--mask"):
        check_skull_stripped(zero_air, "zero_air.nii.gz", spacing)
    # a slab (partial coverage, or a crop) of a skull-stripped brain cuts through it on two faces: accepted;
    # the same slab of the head is still refused
    z = brain.shape[2] // 2
    assert check_skull_stripped(t1[:, :, z - 10:z + 10], "slab.nii.gz", spacing)["face_nonzero_fraction"] < 0.01
    with pytest.raises(DataError, match="head_slab.nii.gz: background is not zero"):
        check_skull_stripped(make_head(t1, brain, 2.0)[:, :, z - 10:z + 10], "head_slab.nii.gz", spacing)
    ct = np.where(brain, 40.0, -1000.0).astype(np.float32)  # brain ~40 HU in air at -1000 HU
    with pytest.raises(DataError, match="ct.nii.gz: .*look like CT"):
        LoadLabelledVolumed()({"image": _save(tmp_path / "ct.nii.gz", ct, affine)})
    # the check can be switched off (e.g. for an unusual but skull-stripped scan)
    LoadLabelledVolumed(bias_correction="none", check_skull_stripped=False)({"image": head})


def test_clip_range_of_a_large_brain_is_the_percentile_of_all_its_voxels() -> None:
    """Above 4 M brain voxels (a 0.5 mm scan) the clip range came from every other voxel: on a scan whose odd
    slices are darker (interleaved acquisition) that read the even slices only, 25 % off. Heavy-tailed intensities
    with that pattern must give ``np.percentile`` of every brain voxel; voxels outside the mask are untouched."""
    from mednet.data.volumes import clip_brain_intensity

    shape = (1, 176, 176, 168)
    image = (1 + np.random.default_rng(0).pareto(2.0, shape)).astype(np.float32)  # a heavy upper tail
    image[..., 1::2] *= 0.8
    brain = np.ones(shape, bool)
    brain[..., :6] = False  # outside: bright, never clipped
    image[~brain] = 500.0
    assert brain.sum() > 5_000_000
    for image, brain in ((image, brain), (image[..., :48], brain[..., :48])):  # and a 1.4 M-voxel brain
        out, (lo, hi) = clip_brain_intensity(torch.from_numpy(image), torch.from_numpy(brain))
        ref_lo, ref_hi = np.percentile(image[brain], [0.5, 99.5])
        assert lo == pytest.approx(ref_lo, rel=1e-5) and hi == pytest.approx(ref_hi, rel=1e-5), brain.sum()
        out = out.numpy()
        np.testing.assert_array_equal(out[brain], np.clip(image[brain], np.float32(lo), np.float32(hi)))
        np.testing.assert_array_equal(out[~brain], image[~brain])


def test_patch_augmentation_keeps_background_and_is_reproducible() -> None:
    from mednet.data.augment import AugmentingPrepareBatch, TissuePatchAugmentation

    g = torch.Generator().manual_seed(0)
    label = torch.randint(-1, 3, (64, 1, 16, 16), generator=g)
    image = torch.rand(64, 1, 16, 16, generator=g) * (label >= 0)
    aug = TissuePatchAugmentation(noise_prob=1.0, blur_prob=1.0, bias_prob=1.0, seed=5)
    out = aug(image, label)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert (out[label < 0] == 0).all()  # background stays 0
    changed = (out - image).abs().flatten(1).mean(1)
    assert (changed > 0).float().mean() > 0.9  # every patch was corrupted
    assert torch.equal(out, TissuePatchAugmentation(noise_prob=1.0, blur_prob=1.0, bias_prob=1.0, seed=5)(image, label))
    assert not torch.equal(out, TissuePatchAugmentation(noise_prob=1.0, blur_prob=1.0, bias_prob=1.0, seed=6)(image, label))
    # blur alone preserves a constant patch; without any corruption the batch is returned unchanged
    flat = torch.full((4, 1, 16, 16), 0.5)
    blurred = TissuePatchAugmentation(noise_prob=0, bias_prob=0, blur_prob=1.0)(flat, torch.zeros_like(flat))
    torch.testing.assert_close(blurred, flat)
    none = TissuePatchAugmentation(noise_prob=0, blur_prob=0, bias_prob=0)
    assert torch.equal(none(image, label), image)
    # as MONAI's prepare_batch: the label is passed through, the image augmented
    x, y = AugmentingPrepareBatch(aug)({"image": image, "label": label}, torch.device("cpu"))
    assert torch.equal(y, label) and (x[label < 0] == 0).all()
    with pytest.raises(ValueError, match=r"\(B, 1, P, P\)"):
        aug(image[:, 0], label[:, 0])


def _fixed_draws(monkeypatch: pytest.MonkeyPatch, aug, *values: np.ndarray) -> None:
    """``aug``'s uniform draws (blur sigmas, field coefficients, noise levels) return ``values`` in turn, each cut
    to the number of patches asked for (only the chosen patches are blurred)."""
    queue = [torch.as_tensor(v, dtype=torch.float32) for v in values]
    monkeypatch.setattr(aug, "_uniform", lambda n, lo, hi, g, device: queue.pop(0)[:n])


def _chosen(out: torch.Tensor, image: torch.Tensor) -> np.ndarray:
    """Which patches the augmentation changed (the others must come back exactly)."""
    return ~(out == image).flatten(1).all(1).numpy()


def test_patch_augmentation_matches_per_patch_references(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batched blur (grouped convolution), field (einsum) and noise against per-patch references: scipy's
    Gaussian filter along each axis (replicate padding = mode "nearest"), the field's polynomial patch by patch,
    and the share of noised patches."""
    from scipy import ndimage

    from mednet.data.augment import TissuePatchAugmentation

    b = 32
    image = torch.rand(b, 1, 16, 16, generator=torch.Generator().manual_seed(1)) + 0.5
    label = torch.zeros(b, 1, 16, 16, dtype=torch.long)  # all tissue
    rng = np.random.default_rng(0)
    x = image[:, 0].numpy().astype(np.float64)

    aug = TissuePatchAugmentation(noise_prob=0, bias_prob=0, blur_prob=0.5, blur_sigma=(0.3, 1.0))
    rows, cols = rng.uniform(0.3, 1.0, b), rng.uniform(0.3, 1.0, b)  # sigma along each patch axis
    _fixed_draws(monkeypatch, aug, rows, cols)
    out = aug(image, label)
    chosen = _chosen(out, image)
    assert 0 < chosen.sum() < b
    for rank, k in enumerate(np.flatnonzero(chosen)):  # the k-th blurred patch got the k-th sigmas
        ref = ndimage.gaussian_filter1d(x[k], rows[rank], axis=0, mode="nearest", radius=3)  # radius ceil(3 × 1.0)
        ref = ndimage.gaussian_filter1d(ref, cols[rank], axis=1, mode="nearest", radius=3)
        np.testing.assert_allclose(out[k, 0].numpy(), ref, rtol=0, atol=2e-6, err_msg=f"patch {k}")

    aug = TissuePatchAugmentation(noise_prob=0, blur_prob=0, bias_prob=0.5, bias_coeff=0.1)
    coeff = rng.uniform(-0.1, 0.1, (b, 5))
    _fixed_draws(monkeypatch, aug, coeff.ravel())
    out = aug(image, label)
    chosen = _chosen(out, image)
    assert 0 < chosen.sum() < b
    u, v = np.linspace(-1, 1, 16)[:, None], np.linspace(-1, 1, 16)[None, :]
    for k in np.flatnonzero(chosen):  # exp of the patch's own quadratic in (u = row, v = column)
        c = coeff[k]
        field = np.exp(c[0] * u + c[1] * v + c[2] * u * v + c[3] * u**2 + c[4] * v**2)
        np.testing.assert_allclose(out[k, 0].numpy(), x[k] * field, rtol=2e-6, err_msg=f"patch {k}")

    # noise: on ≈ noise_prob of the patches, at the drawn level (pooled residual ≈ the rms of U(0.02, 0.05) = 0.036)
    n = 4000
    flat = torch.full((n, 1, 8, 8), 1.0)
    out = TissuePatchAugmentation(noise_prob=0.3, noise_std=(0.02, 0.05), blur_prob=0, bias_prob=0)(
        flat, torch.zeros(n, 1, 8, 8, dtype=torch.long))
    noised = _chosen(out, flat)
    assert noised.mean() == pytest.approx(0.3, abs=0.03)
    assert float((out - flat)[torch.from_numpy(noised)].std()) == pytest.approx(0.036, rel=0.1)


def test_demo_cohort_varies_widely_and_tests_on_a_harder_subject(tiny_cohort: Path) -> None:
    from mednet.data.brain_demo_cohort import GENERATOR, TEST_FIELD_MARGIN, VARIATION

    rows = list(csv.DictReader(open(tiny_cohort / "cohort.csv")))
    train = [r for r in rows if r["split"] != "test"]
    (test,) = [r for r in rows if r["split"] == "test"]
    for r in rows:
        lo, hi = VARIATION["test" if r["split"] == "test" else "training"]["bias_coeff"]
        assert lo <= float(r["bias_coeff_max"]) <= hi
        assert 0.6 <= float(r["gamma"]) <= 1.6 and 0 <= float(r["noise_pct_of_median"]) <= 6
    # the field as it is in the image (after gamma), at least TEST_FIELD_MARGIN × the widest training field
    # (the CSV rounds to 3 decimals)
    assert float(test["bias_field_range"]) >= TEST_FIELD_MARGIN * max(float(r["bias_field_range"]) for r in train) - 2e-3
    assert {r["generator"] for r in rows} == {GENERATOR} and {r["seed"] for r in rows} == {"1"}
    assert float(test["noise_pct_of_median"]) >= max(float(r["noise_pct_of_median"]) for r in train)
    g = float(test["gamma"])  # an end of the range: 0.6–0.7 or 1.45–1.6
    assert 0.6 <= g <= 0.7 or 1.45 <= g <= 1.6
    spacings = [max(map(float, r["spacing_mm"].split("x"))) / min(map(float, r["spacing_mm"].split("x"))) for r in rows]
    assert max(spacings) > 1.3  # some subject is clearly anisotropic


def test_demo_cohort_test_field_is_wider_by_construction() -> None:
    """The test subject's guarantee does not depend on the draw: a weak drawn field is scaled up to the floor (its
    shape kept), a field already wider is left alone, and gamma comes first, so the range measured is the range
    in the image. Checked on many seeds through the cohort's own intensity step."""
    from monai.data import MetaTensor

    from mednet.data.brain_demo_cohort import _vary_intensity, field_log_range

    x, y, z = np.meshgrid(*(np.linspace(-1, 1, 24),) * 3, indexing="ij")
    brain = x**2 + y**2 + z**2 < 0.8
    image = MetaTensor(torch.from_numpy(np.where(brain, 100.0, 0.0).astype(np.float32)[None]))
    draw = {"bias_coeff": 0.3, "gamma": 0.6, "noise": 0.0}
    for seed in range(20):
        free, free_range = _vary_intensity(image, brain, draw, bias_seed=seed, noise_seed=0)
        floor = np.log(free_range) * 1.5
        forced, forced_range = _vary_intensity(image, brain, draw, bias_seed=seed, noise_seed=0, min_log_range=floor)
        assert np.log(forced_range) == pytest.approx(floor, rel=1e-6)
        # the field is what multiplies the (constant-brain) image: its range in the image is the recorded one
        ratio = forced.array[0][brain] / 100.0
        assert np.log(np.percentile(ratio, 99.5) / np.percentile(ratio, 0.5)) == pytest.approx(floor, rel=1e-3)
        # same shape, only stronger: log-fields proportional
        lf, lg = np.log(free.array[0][brain] / 100.0), np.log(forced.array[0][brain] / 100.0)
        assert np.corrcoef(lf, lg)[0, 1] > 0.9999
        _, kept_range = _vary_intensity(image, brain, draw, bias_seed=seed, noise_seed=0, min_log_range=0.01)
        assert kept_range == pytest.approx(free_range)
    assert field_log_range(np.where(brain, x, 0.0), brain) == pytest.approx(
        np.percentile(x[brain], 99.5) - np.percentile(x[brain], 0.5))


def test_demo_cohort_subjects_draw_from_independent_streams() -> None:
    """No subject's stream is another's (the old ``seed·1000 + i`` / ``+ 1`` scheme gave subject i's noise the
    seed of subject i+1's warp, and the warp and the bias field the same uniforms)."""
    from mednet.data.brain_demo_cohort import _monai_seed, subject_streams

    seeds = [_monai_seed(s) for seed in (0, 1) for i in range(12) for s in subject_streams(seed, i).values()]
    assert len(set(seeds)) == len(seeds)
    assert [_monai_seed(s) for s in subject_streams(3, 2).values()] == \
        [_monai_seed(s) for s in subject_streams(3, 2).values()]  # reproducible


def test_zoomed_template_affine_matches_the_resampling() -> None:
    """``ndimage.zoom`` maps corner voxels onto corner voxels: the zoomed template's affine puts its last voxel
    where the full template's last voxel is (1/zoom would misplace it by up to 2 mm at zoom 0.5)."""
    from mednet.data.mni import load_mni152_template

    full, half = load_mni152_template(), load_mni152_template(zoom=0.5)
    for corner in ((0, 0, 0), tuple(n - 1 for n in full.t1.shape)):
        scaled = tuple(0 if c == 0 else m - 1 for c, m in zip(corner, half.t1.shape))
        np.testing.assert_allclose(half.affine @ (*scaled, 1), full.affine @ (*corner, 1), atol=1e-6)


def test_preprocessing_description_names_the_clip() -> None:
    from mednet.data.transforms import describe_preprocessing

    assert "clipped to the brain's 0.5-99.5th percentiles" in describe_preprocessing("n4", "histogram")
    assert "clipped to the brain's 1-99th percentiles" in describe_preprocessing("n4", "histogram", clip_percentiles=(1, 99))
    assert "not clipped" in describe_preprocessing("none", None, clip_percentiles=None)


def test_float_residue_in_the_background_is_background(template, tmp_path: Path) -> None:
    """A skull-stripped scan saved as float after resampling holds background values of float noise, not exact
    zeros (nilearn's 2 mm template as float32: 2.8e-16 on 266k voxels): it was refused as not skull-stripped.
    Values up to 1e-6 x the brain's 99th-percentile |intensity| are background; exact zeros are untouched."""
    t1, label, affine = template
    brain = label > 0
    residue = np.where(brain, t1, np.float32(2.8e-16)).astype(np.float32)
    residue[0, 0, 0] = -3e-17  # residue of either sign
    clean = np.where(brain, t1, 0).astype(np.float32)
    dark = clean.copy()
    dark[tuple(np.argwhere(brain)[0])] = 1e-3 * np.percentile(t1[brain], 99)  # a dark brain voxel is brain
    check_skull_stripped(residue, "residue.nii.gz", (2.0, 2.0, 2.0))
    load = LoadLabelledVolumed(bias_correction="none")
    a = load({"image": _save(tmp_path / "residue.nii.gz", residue, affine)})
    b = load({"image": _save(tmp_path / "clean.nii.gz", clean, affine)})
    assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["image"], b["image"])
    assert torch.equal(load({"image": _save(tmp_path / "dark.nii.gz", dark, affine)})["mask"], b["mask"])

    image = torch.from_numpy(clean)[None]
    same, n = zero_background_residue(image)
    assert same is image and n == 0  # exact zeros: the very same tensor, bit for bit
    zeroed, n = zero_background_residue(torch.from_numpy(residue)[None])
    assert n == int((~brain).sum()) and torch.equal(zeroed, image)
    # a few corrupt voxels 1e9 times brighter are a 6-decade gap too, with the brain below it: nothing is zeroed
    hot = clean.copy()
    hot[tuple(np.argwhere(brain)[0])], hot[tuple(np.argwhere(brain)[1])] = 1e9, 2e9
    same, n = zero_background_residue(torch.from_numpy(hot)[None])
    assert n == 0
    assert int(load({"image": _save(tmp_path / "hot.nii.gz", hot, affine)})["mask"].sum()) == int(brain.sum())
