"""Tests for :mod:`mednet.data.slicing` (3D volume -> (S, H, W) slice stack and back)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mednet.errors import DataError
from mednet.data.slicing import SliceStack, slice_volume

SHAPE = (6, 5, 4)


def _volume() -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) + 1).astype(np.float32)  # unique, non-zero


def _label() -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 4).astype(np.uint8)


@pytest.mark.parametrize(
    "axis, expected_shape",
    [(0, (6, 5, 4)), (1, (5, 6, 4)), (2, (4, 6, 5)), (-1, (4, 6, 5)), (-2, (5, 6, 4)), (-3, (6, 5, 4))],
)
def test_every_axis_shapes_and_values(axis, expected_shape):
    img, lab = _volume(), _label()
    stack = slice_volume(img, lab, axis=axis, source="vol.nii.gz")
    assert stack.images.shape == stack.labels.shape == expected_shape
    assert stack.images.dtype == np.float32 and stack.labels.dtype == np.uint8
    np.testing.assert_array_equal(stack.images, np.moveaxis(img, axis, 0))
    np.testing.assert_array_equal(stack.labels, np.moveaxis(lab, axis, 0))
    np.testing.assert_array_equal(stack.indices, np.arange(expected_shape[0]))
    assert stack.axis == axis % 3 and stack.axis in (0, 1, 2)
    assert stack.volume_shape == SHAPE and stack.source == "vol.nii.gz"
    assert len(stack) == expected_shape[0]
    assert stack.images.flags["C_CONTIGUOUS"] and stack.labels.flags["C_CONTIGUOUS"]
    # slice s is exactly the volume indexed at s along the axis
    s = 2
    np.testing.assert_array_equal(stack.images[s], np.take(img, s, axis=axis))
    # the documented inverse
    np.testing.assert_array_equal(np.moveaxis(stack.images, 0, axis), img)


def test_default_axis_is_last():
    stack = slice_volume(_volume())
    assert stack.axis == 2 and stack.images.shape == (4, 6, 5) and stack.labels is None


@pytest.mark.parametrize("to", ["torch", "channel_first_numpy", "channel_first_torch"])
def test_channel_first_and_torch_inputs(to):
    img, lab = _volume(), _label()
    if to == "torch":
        img_in, lab_in = torch.from_numpy(img), torch.from_numpy(lab)
    elif to == "channel_first_numpy":
        img_in, lab_in = img[None], lab[None]
    else:
        img_in, lab_in = torch.from_numpy(img)[None], torch.from_numpy(lab)[None]
    stack = slice_volume(img_in, lab_in, axis=1)
    np.testing.assert_array_equal(stack.images, np.moveaxis(img, 1, 0))
    np.testing.assert_array_equal(stack.labels, np.moveaxis(lab, 1, 0))
    assert stack.volume_shape == SHAPE


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_drop_empty_with_label(axis):
    img = _volume()
    lab = np.zeros(SHAPE, np.uint8)
    keep = [1, 3]
    for i in keep:
        idx = [slice(None)] * 3
        idx[axis] = i
        sub = lab[tuple(idx)]
        sub.flat[0] = 2  # a single foreground voxel makes the slice non-empty
    stack = slice_volume(img, lab, axis=axis, drop_empty=True)
    np.testing.assert_array_equal(stack.indices, keep)
    np.testing.assert_array_equal(stack.images, np.moveaxis(img, axis, 0)[keep])
    np.testing.assert_array_equal(stack.labels, np.moveaxis(lab, axis, 0)[keep])
    assert len(stack) == 2
    # without drop_empty nothing is dropped
    assert len(slice_volume(img, lab, axis=axis)) == SHAPE[axis]


def test_drop_empty_uses_label_not_image_when_given():
    img = _volume()  # every slice has non-zero intensities
    lab = np.zeros(SHAPE, np.uint8)
    lab[..., 0] = 1
    stack = slice_volume(img, lab, axis=-1, drop_empty=True)
    np.testing.assert_array_equal(stack.indices, [0])


def test_drop_empty_without_label_uses_image():
    img = _volume()
    img[:, :, [0, 2]] = 0.0
    stack = slice_volume(img, axis=2, drop_empty=True)
    np.testing.assert_array_equal(stack.indices, [1, 3])
    np.testing.assert_array_equal(stack.images, np.moveaxis(img, 2, 0)[[1, 3]])
    assert stack.labels is None


def test_drop_empty_all_empty_is_an_error():
    with pytest.raises(DataError, match=r"^v\.nii: no slice contains foreground"):
        slice_volume(_volume(), np.zeros(SHAPE, np.uint8), drop_empty=True, source="v.nii")


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("drop_empty", [False, True])
def test_to_volume_round_trip(axis, drop_empty):
    img = _volume()
    lab = _label()
    idx = [slice(None)] * 3
    idx[axis] = 0
    lab[tuple(idx)] = 0  # first slice along the axis: all background -> dropped when drop_empty
    stack = slice_volume(img, lab, axis=axis, drop_empty=drop_empty)
    assert (0 not in stack.indices) == drop_empty
    back = stack.to_volume(stack.labels)
    assert back.shape == SHAPE and back.dtype == np.uint8
    np.testing.assert_array_equal(back, lab)  # dropped slice was all 0 anyway
    back_img = stack.to_volume(stack.images)
    expected = img.copy()
    if drop_empty:
        expected[tuple(idx)] = 0.0  # dropped slices filled with 0
    np.testing.assert_array_equal(back_img, expected)
    assert back_img.dtype == np.float32


def test_to_volume_fill_value():
    lab = np.zeros(SHAPE, np.uint8)
    lab[2] = 1
    stack = slice_volume(_volume(), lab, axis=0, drop_empty=True)
    back = stack.to_volume(np.full((1, 5, 4), 7, np.int64), fill=-1)
    assert back.shape == SHAPE
    assert np.all(back[2] == 7) and np.all(back[[0, 1, 3, 4, 5]] == -1)


def test_slice_stack_direct_construction():
    stack = SliceStack(
        images=np.ones((2, 6, 5), np.float32),
        labels=None,
        indices=np.array([0, 3]),
        axis=2,
        source="x",
        volume_shape=SHAPE,
    )
    back = stack.to_volume(np.stack([np.full((6, 5), 1), np.full((6, 5), 2)]))
    assert back.shape == SHAPE
    np.testing.assert_array_equal(back[..., 0], 1)
    np.testing.assert_array_equal(back[..., 3], 2)
    np.testing.assert_array_equal(back[..., [1, 2]], 0)
    assert stack.meta == {}


def test_shape_mismatch_is_an_error():
    with pytest.raises(DataError) as err:
        slice_volume(_volume(), np.zeros((6, 5, 3), np.uint8), source="img.nii.gz")
    assert str(err.value).startswith("img.nii.gz: ")
    assert "(6, 5, 4)" in str(err.value) and "(6, 5, 3)" in str(err.value)


@pytest.mark.parametrize("axis", [3, -4, 10])
def test_bad_axis_is_an_error(axis):
    with pytest.raises(DataError, match=rf"^img\.nii\.gz: slice axis must be 0, 1 or 2 .*got {axis}"):
        slice_volume(_volume(), axis=axis, source="img.nii.gz")


@pytest.mark.parametrize("shape", [(6, 5), (2, 6, 5, 4), (1, 1, 6, 5, 4)])
def test_non_3d_input_is_an_error(shape):
    with pytest.raises(DataError, match="expected a 3D volume to slice"):
        slice_volume(np.ones(shape, np.float32), source="x")
