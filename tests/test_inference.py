"""Whole-volume inference pieces: BatchedSliceInferer vs MONAI's SliceInferer, tissue labels, run folders."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SliceInferer

from mednet.errors import DataError
from mednet.data.transforms import TissueLabels, output_name, refuse_existing_outputs
from mednet.inference import BatchedSliceInferer, ViewAggregationInferer, foreground_box
from mednet.networks import TissueFCN
from mednet.runs import latest_run, mark_finished, new_run_dir, resolve_checkpoint


def _brain_like(shape=(40, 48, 30), radii=(0.6, 0.7, 0.5)) -> torch.Tensor:
    """An ellipsoid "brain" (1 + r + noise) in a zero background; ``radii``: fractions of the half-sides."""
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt(((g / np.array(radii)[:, None, None, None]) ** 2).sum(0))
    vol = np.where(r < 1, 1.0 + r + 0.1 * np.random.default_rng(0).standard_normal(shape), 0.0)
    return torch.as_tensor(vol, dtype=torch.float32)[None, None]


def test_foreground_box() -> None:
    vol = torch.zeros(1, 1, 50, 60, 40)
    vol[0, 0, 10:20, 30:35, 5:6] = 1
    # non-zero 10..19 / 30..34 / 5: grown by 2 on each side (8..21, 28..36, 3..7), then to a multiple of 8 (extra
    # split before/after: 14 -> 16, 9 -> 16, 5 -> 8 voxels)
    assert foreground_box(vol, margin=2, multiple=8) == (slice(7, 23), slice(25, 41), slice(2, 10))
    assert foreground_box(vol, margin=0, multiple=1) == (slice(10, 20), slice(30, 35), slice(5, 6))  # the tight box
    # at the volume's edges the box is clipped; every item and channel counts
    edge = torch.zeros(2, 2, 6, 60, 40)
    edge[0, 1, 0:2, 58:60, 39] = 1
    edge[1, 0, 3, 50, 39] = 1
    assert foreground_box(edge, margin=2, multiple=8) == (slice(0, 6), slice(47, 60), slice(36, 40))
    assert foreground_box(torch.zeros(1, 1, 4, 4, 4)) is None


@pytest.mark.parametrize("axis", [0, 1, 2])  # all three: the default views slice along each
def test_brain_slice_inferer_matches_slice_inferer_inside_the_brain(axis: int) -> None:
    torch.manual_seed(0)
    net = TissueFCN("skip", base_channels=8).eval()
    vol = _brain_like((72, 80, 64), radii=(0.3, 0.3, 0.3))  # a field of view much wider than the brain
    box = foreground_box(vol, 16)
    outside = torch.ones(vol.shape[2:], dtype=torch.bool)
    outside[box] = False
    # the 16-voxel margin still leaves background to skip along every axis (in-plane and whole slices)
    assert all(b.stop - b.start < n for b, n in zip(box, vol.shape[2:])) and outside.sum() > 0, box
    meta_vol = MetaTensor(vol, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    full = SliceInferer(spatial_dim=axis, roi_size=(-1, -1), sw_batch_size=8, progress=False)
    cropped = BatchedSliceInferer(spatial_dim=axis, roi_size=(-1, -1), sw_batch_size=8, progress=False, margin=16)
    with torch.no_grad():
        a, b = full(vol, net), cropped(meta_vol, net)
    assert b.shape == a.shape == (1, 3, *vol.shape[2:])
    assert isinstance(b, MetaTensor) and torch.equal(b.affine, meta_vol.affine)
    brain = vol[0, 0] != 0
    # inside the brain the logits are MONAI's full-field ones (measured: 1e-6 apart): only context beyond the
    # 16-voxel margin differs, and it no longer reaches the brain (no margin: 0.1 apart; a box not grown to a
    # multiple of 8: 2e-3)
    torch.testing.assert_close(b.as_tensor()[0][:, brain], a[0][:, brain], rtol=0, atol=5e-5)
    # outside the box nothing was computed: the fill value, where the full-field run has non-zero logits
    assert torch.all(b[0][:, outside] == 0) and torch.any(a[0][:, outside] != 0)


def test_slice_batches_follow_a_pixel_budget() -> None:
    """Whole slices are batched by a pixel budget (linear cost in the volume size); the result is unchanged."""
    torch.manual_seed(0)
    net = TissueFCN("skip", base_channels=8).eval()
    vol = _brain_like()
    calls: list[int] = []
    counting = lambda x: (calls.append(x.shape[0]), net(x))[1]  # noqa: E731
    fixed = BatchedSliceInferer(spatial_dim=2, roi_size=(-1, -1), sw_batch_size=16, progress=False, max_batch_pixels=None)
    budget = BatchedSliceInferer(spatial_dim=2, roi_size=(-1, -1), sw_batch_size=16, progress=False, max_batch_pixels=5000)
    with torch.no_grad():
        a = fixed(vol, counting)
        n_fixed, calls[:] = max(calls), []
        b = budget(vol, counting)
    box = foreground_box(vol, 16)
    pixels = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    assert n_fixed == 16 and max(calls) == max(1, 5000 // pixels) < 16
    torch.testing.assert_close(a, b)


def test_view_aggregation_averages_the_three_planes() -> None:
    torch.manual_seed(0)
    net = TissueFCN("skip", base_channels=8).eval()
    vol = MetaTensor(_brain_like(), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    agg = ViewAggregationInferer(views=(2, 0, 1), sw_batch_size=8)
    assert agg.views == [0, 1, 2]
    with torch.no_grad():
        out = agg(vol, net)
        per_view = [torch.softmax(BatchedSliceInferer(spatial_dim=v, roi_size=(-1, -1), sw_batch_size=8,
                                                    progress=False)(vol, net).as_tensor(), 1) for v in (0, 1, 2)]
        axial = ViewAggregationInferer(views=-1, sw_batch_size=8)(vol, net)
        plain = ViewAggregationInferer(sw_batch_size=8)(vol.as_tensor(), net)  # a plain tensor works too
    assert out.shape == (1, 3, *vol.shape[2:]) and isinstance(out, MetaTensor) and torch.equal(out.affine, vol.affine)
    torch.testing.assert_close(out.as_tensor(), sum(per_view) / 3)
    torch.testing.assert_close(out.sum(1), torch.ones_like(out.sum(1)))  # probabilities
    torch.testing.assert_close(axial.as_tensor(), per_view[2])
    assert not isinstance(plain, MetaTensor)
    torch.testing.assert_close(plain, out.as_tensor())
    # the planes disagree somewhere (an untrained network), so the average is not any one of them
    assert not torch.allclose(out.as_tensor(), per_view[2])
    with pytest.raises(ValueError, match="slicing axes"):
        ViewAggregationInferer(views=(0, 3))
    with pytest.raises(ValueError, match="slicing axes"):
        ViewAggregationInferer(views=())


def test_tissue_labels_masks_background() -> None:
    logits = torch.zeros(3, 4, 4, 2)
    logits[2] = 1.0  # WM everywhere
    mask = torch.zeros(1, 4, 4, 2, dtype=torch.bool)
    mask[0, :2] = True
    labels = TissueLabels()(logits, mask)
    assert labels.shape == (1, 4, 4, 2)
    assert set(labels[mask].tolist()) == {3.0} and set(labels[~mask].tolist()) == {0.0}
    with pytest.raises(ValueError, match="3 tissue channels"):
        TissueLabels()(torch.zeros(4, 2, 2))


def test_output_name() -> None:
    assert output_name("/x/sub-001.nii.gz") == "sub-001_seg.nii.gz"
    assert output_name("/x/scan.MHA", "p") == "scan_p.nii.gz"
    assert output_name("/x/series7/") == "series7_seg.nii.gz"


def test_existing_outputs_are_refused_before_the_first_volume(tmp_path: Path) -> None:
    items = [{"image": "/in/a/T1.nii.gz", "name": "a_T1"}, {"image": "/in/b/T1.nii.gz", "name": "b_T1"}]
    assert refuse_existing_outputs(items, tmp_path) == items
    (tmp_path / "b_T1_seg.json").write_text("{}", encoding="utf-8")  # a sidecar left by an earlier run
    with pytest.raises(DataError, match="b_T1_seg.json: output already exists"):
        refuse_existing_outputs(items, tmp_path)
    (tmp_path / "b_T1_seg.nii.gz").write_bytes(b"x")
    with pytest.raises(DataError, match="b_T1_seg.nii.gz: output already exists"):
        refuse_existing_outputs(items, tmp_path)
    assert refuse_existing_outputs(items, tmp_path, overwrite=True) == items


def test_run_dirs_never_collide_and_latest_is_found(tmp_path: Path) -> None:
    a, b = new_run_dir(tmp_path, "train-skip"), new_run_dir(tmp_path, "train-skip")
    assert a != b and a.is_dir() and b.is_dir()
    with pytest.raises(DataError, match="no finished run .*: no model.pt"):
        latest_run(tmp_path, "train-skip-")
    (a / "model.pt").write_bytes(b"x")
    (b / "model.pt").write_bytes(b"y")
    with pytest.raises(DataError, match="unfinished"):  # runs count once training completed (finished.json)
        latest_run(tmp_path, "train-skip-")
    mark_finished(a)
    time.sleep(0.01)
    mark_finished(b)
    assert latest_run(tmp_path, "train-skip-") == b
    assert resolve_checkpoint(None, tmp_path, "train-skip-") == b / "model.pt"
    assert resolve_checkpoint(a, tmp_path, "x") == a / "model.pt"
    with pytest.raises(DataError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "nope.pt", tmp_path, "x")


def test_run_settings_are_checked_against_the_training_run(tmp_path: Path) -> None:
    from mednet.runs import check_run_settings, write_run_settings

    run = new_run_dir(tmp_path, "train-skip")
    ckpt = run / "model.pt"
    ckpt.write_bytes(b"")
    trained = {"variant": "skip", "views": (0, 1, 2), "intensity_normalization": "histogram"}
    write_run_settings(run, trained)
    check_run_settings(ckpt, {"variant": "skip", "views": [0, 1, 2], "intensity_normalization": "histogram"})
    check_run_settings(ckpt, {"variant": "skip", "not_recorded": 1})  # only keys present in both are compared
    with pytest.raises(DataError, match=r"views=\[0, 1, 2\] \(this run: \[2\]\).*--views '\[0,1,2\]'"):
        check_run_settings(ckpt, {**trained, "views": [2]})
    check_run_settings(tmp_path / "elsewhere" / "model.pt", {"views": [2]})  # no settings.json: nothing to check
