"""The dermoscopy bundle's image pipeline (:mod:`mednet.data.lesion_images`): the decode-once dataset, the
training split's normalisation statistics, the per-image transforms, batch MixUp/CutMix with correctly mixed
labels, AugMix views, the inference input listing and the training-accuracy output transform — on tiny images
written here (8–40 px, so every test runs in well under a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import mednet.data.lesion_images as lesion_images
from mednet.data.dermoscopy import DERMOSCOPY_CLASSES, load_rgb, resize_center_crop
from mednet.data.lesion_images import (
    AUGMENTATIONS,
    LesionImageDataset,
    MixingPrepareBatch,
    channel_statistics,
    image_transform,
    lesion_dataset,
    list_lesion_images,
    training_accuracy_output,
)
from mednet.data.lesion_split import load_split_table
from mednet.errors import DataError, OptionError

K = len(DERMOSCOPY_CLASSES)
# means/stds that are no multiple of 1/255: a normalised pixel is never exactly 0 (so CutOut's zeros stand out)
MEAN = [0.1234567, 0.2345678, 0.3456789]
STD = [0.2111, 0.2222, 0.2333]

# (image_id, lesion_id, dx, split, kind): kind "rgb" = 40×30 JPEG, "grey" = 40×30 grey PNG, "square" = 8×8 RGB PNG
ROWS = [
    ("img_a", "les_1", "mel", "training", "rgb"),
    ("img_b", "les_1", "mel", "training", "grey"),
    ("img_c", "les_2", "nv", "training", "rgb"),
    ("img_d", "les_3", "bkl", "validation", "grey"),
    ("img_e", "les_4", "vasc", "test", "rgb"),
    ("img_f", "les_5", "akiec", "test", "rgb"),
]


def _pixels(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "grey":
        return rng.integers(0, 256, (30, 40), dtype=np.uint8)
    if kind == "square":
        return rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)


def _write_image(path: Path, kind: str, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(kind, seed)).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def _write_split(folder: Path, rows=ROWS, extra: dict[str, list[str]] | None = None) -> Path:
    """``folder/split.csv`` (paths relative to it, as ``write_split_table`` writes them) and its images."""
    records = []
    for seed, (image_id, lesion_id, dx, split, kind) in enumerate(rows):
        name = f"images/{image_id}.{'png' if kind != 'rgb' else 'jpg'}"
        _write_image(folder / name, kind, seed)
        records.append({"image_id": image_id, "lesion_id": lesion_id, "dx": dx, "dx_type": "histo", "path": name,
                        "split": split})
    table = pd.DataFrame(records)
    for column, values in (extra or {}).items():
        table[column] = values
    csv = folder / "split.csv"
    table.to_csv(csv, index=False)
    return csv


@pytest.fixture
def split_csv(tmp_path: Path) -> Path:
    return _write_split(tmp_path / "data")


@pytest.fixture
def decode_counter(monkeypatch) -> list[str]:
    """Every path the dataset decodes, in order (``load_rgb`` wrapped where the dataset module looks it up)."""
    calls: list[str] = []

    def counting_load_rgb(path):
        calls.append(str(path))
        return load_rgb(path)

    monkeypatch.setattr(lesion_images, "load_rgb", counting_load_rgb)
    return calls


# ------------------------------------------------------------------------------------------- LesionImageDataset
def test_items_after_lesion_dataset_are_normalised_square_images_with_class_indices(split_csv):
    table = load_split_table(split_csv)
    ds = lesion_dataset(table, image_size=16, mean=MEAN, std=STD, train=False)
    assert len(ds) == len(ROWS)
    for i, (image_id, _, dx, _, _) in enumerate(ROWS):
        item = ds[i]
        assert set(item) == {"image", "label", "image_id", "path"}
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
        assert int(item["label"]) == DERMOSCOPY_CLASSES.index(dx)  # akiec 0 … vasc 6
        assert item["image_id"] == image_id
        assert item["path"] == table["path"][i] and Path(item["path"]).is_absolute()
        resized = resize_center_crop(load_rgb(item["path"]), 16).astype(np.float64) / 255  # (16, 16, 3)
        expected = (resized - np.array(MEAN)) / np.array(STD)
        np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert [int(ds[i]["label"]) for i in range(len(ds))] == [4, 4, 5, 2, 6, 0]


def test_grey_images_become_three_equal_channels(split_csv):
    ds = LesionImageDataset(load_split_table(split_csv), 8, transform=None)
    image = ds[1]["image"]  # img_b: grey PNG
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])


@pytest.mark.parametrize("cache, decodes_per_image", [(True, 1), (False, 2)])
def test_images_are_decoded_once_when_cached(split_csv, decode_counter, cache, decodes_per_image):
    ds = LesionImageDataset(load_split_table(split_csv), 8, transform=None, cache=cache)
    first = [ds[i]["image"] for i in range(len(ds))]
    second = [ds[i]["image"] for i in range(len(ds))]
    assert len(decode_counter) == decodes_per_image * len(ds)
    assert sorted(set(decode_counter)) == sorted(ds.table["path"])
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_with_transform_shares_the_decoded_images(split_csv, decode_counter):
    ds = LesionImageDataset(load_split_table(split_csv), 8, transform=None)
    mean, std = channel_statistics(ds)  # decodes every image once
    train = ds.with_transform(image_transform(8, mean, std, train=False))
    items = [train[i] for i in range(len(train))]
    assert len(decode_counter) == len(ds)  # nothing decoded again
    assert ds.transform is None and items[0]["image"].dtype == torch.float32  # the original keeps its transform


def test_unknown_dx_is_a_data_error_naming_the_csv(split_csv):
    table = load_split_table(split_csv)  # all dx are HAM10000 classes …
    with pytest.raises(DataError, match="unknown dx 'bkl'") as err:  # … but not of this 3-class task
        LesionImageDataset(table, 8, transform=None, class_names=("mel", "nv", "vasc", "akiec"))
    assert str(split_csv) in str(err.value)
    # inference keeps unlabelled rows with label -1
    ds = LesionImageDataset(table, 8, transform=None, class_names=("mel", "nv", "vasc", "akiec"), require_label=False)
    assert [int(ds[i]["label"]) for i in range(len(ds))] == [0, 0, 1, -1, 2, 3]


def test_unknown_dx_names_the_csv_row_as_the_readers_do(split_csv):
    table = load_split_table(split_csv)
    with pytest.raises(DataError) as err:
        LesionImageDataset(table, 8, transform=None, class_names=("mel", "nv", "vasc", "akiec"))
    assert err.value.path == f"{split_csv}:row 5"  # img_d, the 4th data row = line 5 of the CSV


def _with_cache(split_csv: Path, cache_dir_name: str, size: int) -> tuple[pd.DataFrame, Path]:
    """The split table with a ``cache_path`` for img_a pointing to a flat-coloured ``size``×``size`` PNG."""
    cached = split_csv.parent / cache_dir_name / "img_a.png"
    cached.parent.mkdir(parents=True)
    Image.new("RGB", (size, size), (7, 77, 177)).save(cached)
    table = load_split_table(split_csv)
    table["cache_path"] = ""
    table.loc[0, "cache_path"] = str(cached)
    return table, cached


def test_cache_path_is_read_only_when_its_folder_matches_the_image_size(split_csv, decode_counter):
    table, cached = _with_cache(split_csv, "cache_8", 8)
    at_8 = LesionImageDataset(table, 8, transform=None)[0]["image"]
    assert decode_counter == [str(cached)]
    assert at_8.shape == (3, 8, 8) and at_8[:, 0, 0].tolist() == [7, 77, 177]  # the cached pixels
    at_16 = LesionImageDataset(table, 16, transform=None)[0]["image"]
    assert decode_counter[1] == table["path"][0]  # a 16 px dataset ignores the 8 px cache
    expected = resize_center_crop(load_rgb(table["path"][0]), 16)
    assert torch.equal(at_16, torch.from_numpy(expected).permute(2, 0, 1))


def test_cache_of_another_size_with_a_common_prefix_is_not_used(split_csv, decode_counter):
    table, cached = _with_cache(split_csv, "cache_64", 64)
    LesionImageDataset(table, 6, transform=None)[0]
    assert decode_counter == [table["path"][0]]


# ----------------------------------------------------------------------------------------- channel_statistics
def test_channel_statistics_of_images_already_at_size_are_numpy_mean_and_std(tmp_path):
    rows = [(f"sq_{i}", f"les_{i}", dx, "training", "square") for i, dx in enumerate(["mel", "nv", "nv"])]
    csv = _write_split(tmp_path, rows)
    ds = LesionImageDataset(load_split_table(csv), 8, transform=None)
    mean, std = channel_statistics(ds)
    pixels = np.concatenate([_pixels("square", seed).reshape(-1, 3) for seed in range(3)]) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-5)  # rounded to 5 decimals
    np.testing.assert_allclose(std, pixels.std(0), atol=1e-5)  # population std (ddof 0)


def test_channel_statistics_are_over_the_resized_pixels(split_csv):
    table = load_split_table(split_csv)
    ds = LesionImageDataset(table, 12, transform=None)
    mean, std = channel_statistics(ds)
    pixels = np.concatenate([resize_center_crop(load_rgb(p), 12).reshape(-1, 3) for p in table["path"]]) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-4)
    np.testing.assert_allclose(std, pixels.std(0), atol=1e-4)
    assert all(isinstance(v, float) for v in mean + std)  # they go to settings.json


def test_channel_statistics_of_no_images_is_a_data_error(split_csv):
    table = load_split_table(split_csv).iloc[:0]
    table.attrs["source"] = str(split_csv)
    with pytest.raises(DataError, match="no images") as err:
        channel_statistics(LesionImageDataset(table, 8, transform=None))
    assert str(split_csv) in str(err.value)


# ----------------------------------------------------------------------------------------------- image_transform
def test_evaluation_transform_only_normalises():
    image = torch.arange(3 * 16 * 16, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(3, 16, 16)
    out = image_transform(16, MEAN, STD, train=False, augmentation="mixup")(image)  # augmentation is ignored
    expected = (image.double() / 255 - torch.tensor(MEAN, dtype=torch.float64)[:, None, None]) \
        / torch.tensor(STD, dtype=torch.float64)[:, None, None]
    assert out.dtype == torch.float32 and out.shape == (3, 16, 16)
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=0)
    # the same input gives the same output: nothing random at evaluation
    assert torch.equal(out, image_transform(16, MEAN, STD, train=False)(image))


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_every_training_augmentation_gives_a_normalised_square_image(augmentation):
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    out = image_transform(24, MEAN, STD, train=True, augmentation=augmentation)(image)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    lowest = min((0 - m) / s for m, s in zip(MEAN, STD))
    assert out.min() >= lowest - 1e-5  # normalised uint8 data, not raw 0–255
    # it augments: not the evaluation transform (which only normalises), and another draw gives another image
    plain = image_transform(24, MEAN, STD, train=False)(image)
    assert (out - plain).abs().mean() > 0.1, augmentation
    assert not torch.equal(out, image_transform(24, MEAN, STD, train=True, augmentation=augmentation)(image))


def test_augmix_with_jensen_shannon_gives_clean_and_two_augmented_views():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    views = image_transform(16, MEAN, STD, train=True, augmentation="augmix", augmix_jsd=True)(image)
    assert views.shape == (3, 3, 16, 16) and views.dtype == torch.float32
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])


def _zero_square(mask: np.ndarray, side: int) -> bool:
    """Whether ``mask`` (H, W) holds a ``side × side`` square that is all True."""
    h, w = mask.shape
    return any(mask[y:y + side, x:x + side].all() for y in range(h - side + 1) for x in range(w - side + 1))


@pytest.mark.parametrize("seed", range(3))
def test_cutout_zeroes_two_holes_of_a_quarter_of_the_side(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    out = torch.as_tensor(image_transform(32, MEAN, STD, train=True, augmentation="cutout")(image))
    assert out.shape == (3, 32, 32)
    zero = (out == 0).numpy()
    assert (zero == zero[0]).all()  # the holes go through all channels
    assert _zero_square(zero[0], 8)  # 8 × S/32 px holes at S = 32
    assert 64 <= zero[0].sum() <= 2 * 64  # two holes of 8×8 (they may overlap)
    # without CutOut, no normalised pixel is exactly 0 with these mean/std
    assert not (image_transform(32, MEAN, STD, train=True, augmentation="none")(image) == 0).any()



def _holes(transform, image: torch.Tensor, torch_seed: int = 0) -> np.ndarray:
    """The CutOut mask ``(S, S)`` bool of ``transform`` on ``image`` (torchvision's draws fixed by ``torch_seed``)."""
    torch.manual_seed(torch_seed)
    return (torch.as_tensor(transform(image)) == 0).numpy()[0]


def test_cutout_holes_follow_the_seed_and_not_monais_shared_random_state():
    """``--seed`` repeats CutOut's holes: MONAI's shared ``Randomizable.R`` (seeded from the OS, untouched by
    ``set_determinism``) is replaced by the transform's own seeded state."""
    from monai.transforms import Randomizable

    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    saved = Randomizable.R
    try:
        Randomizable.R = np.random.RandomState(1)
        first = _holes(image_transform(32, MEAN, STD, train=True, augmentation="cutout", seed=7), image)
        Randomizable.R = np.random.RandomState(2)  # a fresh process: another OS-seeded shared state
        again = image_transform(32, MEAN, STD, train=True, augmentation="cutout", seed=7)
        assert np.array_equal(_holes(again, image), first)
        assert first.sum() >= 64
        other = image_transform(32, MEAN, STD, train=True, augmentation="cutout", seed=8)
        assert not np.array_equal(_holes(other, image), first)
        # the transform's state goes on: its next image gets other holes
        assert not np.array_equal(_holes(again, image), first)
    finally:
        Randomizable.R = saved


def test_cutout_in_dataloader_workers_differs_per_worker_and_repeats_with_the_seed():
    """Workers start from copies of one state; each reseeds it (run seed + its torch worker seed), so two workers
    do not cut the same holes, and a run with the same seed repeats every worker's holes."""
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    class Same(torch.utils.data.Dataset):
        def __init__(self, transform):
            self.transform = transform

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.transform(image)

    def masks(seed: int) -> list[np.ndarray]:
        torch.manual_seed(0)  # what set_determinism does: the DataLoader's worker seeds follow it
        transform = v2.Compose([image_transform(32, MEAN, STD, train=False), lesion_images._CutOut(32, seed)])
        loader = torch.utils.data.DataLoader(Same(transform), batch_size=2, num_workers=2)
        return [(batch == 0).numpy()[:, 0] for batch in loader]  # batch k from worker k % 2

    first = masks(3)
    assert not np.array_equal(first[0], first[1])  # worker 0 and worker 1: other holes
    assert all(np.array_equal(a, b) for a, b in zip(first, masks(3)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, masks(4)))

def test_unknown_augmentation_is_an_option_error():
    with pytest.raises(OptionError, match="unknown augmentation 'randaugment'") as err:
        image_transform(16, MEAN, STD, train=True, augmentation="randaugment")
    assert list(err.value.problems) == ["--augmentation"]


# -------------------------------------------------------------------------------------------- MixingPrepareBatch
B = 4
LABELS = torch.tensor([5, 0, 4, 6])
VALUES = [10.0, 20.0, 30.0, 40.0]  # image i is filled with VALUES[i]


def _constant_batch(size: int) -> dict:
    image = torch.stack([torch.full((3, size, size), v) for v in VALUES])
    return {"image": image, "label": LABELS.clone(), "image_id": ["a", "b", "c", "d"]}


def _expected_soft_labels(lam: float) -> torch.Tensor:
    """torchvision v2 pairs sample i with the batch rolled by one: partner of i is i − 1 (of 0: the last)."""
    onehot = torch.nn.functional.one_hot(LABELS, K).double()
    return lam * onehot + (1 - lam) * onehot.roll(1, 0)


@pytest.mark.parametrize("seed", range(4))
def test_mixup_labels_are_the_lambda_weights_of_the_mixed_images(seed):
    torch.manual_seed(seed)
    image, label = MixingPrepareBatch("mixup", num_classes=K)(_constant_batch(8), device="cpu")
    assert image.shape == (B, 3, 8, 8) and label.shape == (B, K) and label.dtype.is_floating_point
    lam = float((image[1, 0, 0, 0] - VALUES[0]) / (VALUES[1] - VALUES[0]))  # image 1 = λ·x1 + (1−λ)·x0
    assert 0 <= lam <= 1
    for i in range(B):  # one λ for the whole batch
        torch.testing.assert_close(image[i], torch.full((3, 8, 8), lam * VALUES[i] + (1 - lam) * VALUES[i - 1]))
    torch.testing.assert_close(label.double(), _expected_soft_labels(lam), atol=1e-6, rtol=0)
    torch.testing.assert_close(label.sum(1), torch.ones(B))


def test_cutmix_labels_are_one_minus_the_pasted_box_fraction():
    boxes = 0
    for seed in range(8):
        torch.manual_seed(seed)
        image, label = MixingPrepareBatch("cutmix", num_classes=K)(_constant_batch(16), device="cpu")
        assert image.shape == (B, 3, 16, 16) and label.shape == (B, K)
        pasted = image[:, 0] == torch.tensor(VALUES[-1:] + VALUES[:-1])[:, None, None]  # partner's pixels
        kept = image[:, 0] == torch.tensor(VALUES)[:, None, None]
        assert (pasted | kept).all()
        assert (pasted == pasted[0]).all()  # one box for the batch
        rows, cols = np.nonzero(pasted[0].numpy())
        if len(rows):  # the pasted region is one rectangle
            boxes += 1
            assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        lam = 1.0 - float(pasted[0].double().mean())
        torch.testing.assert_close(label.double(), _expected_soft_labels(lam), atol=1e-6, rtol=0)
        torch.testing.assert_close(label.sum(1), torch.ones(B))
    assert boxes >= 4  # the seeds did cut and paste (not only empty boxes)


@pytest.mark.parametrize("mixing", [None, "none"])
def test_no_mixing_keeps_integer_labels(mixing):
    batch = _constant_batch(8)
    image, label = MixingPrepareBatch(mixing)(batch, device="cpu")
    assert torch.equal(image, batch["image"])
    assert label.dtype == torch.int64 and torch.equal(label, LABELS)


def test_augmix_views_become_clean_then_first_then_second_augmented_batch():
    # view v of sample b is filled with 100·v + b
    views = torch.stack([torch.stack([torch.full((3, 4, 4), 100.0 * v + b) for v in range(3)]) for b in range(B)])
    assert views.shape == (B, 3, 3, 4, 4)
    image, label = MixingPrepareBatch("none")({"image": views, "label": LABELS.clone()}, device="cpu")
    assert image.shape == (3 * B, 3, 4, 4)
    assert image[:, 0, 0, 0].tolist() == [100.0 * v + b for v in range(3) for b in range(B)]
    assert torch.equal(label, LABELS)  # labels stay (B,)


def test_unknown_mixing_is_an_option_error():
    with pytest.raises(OptionError, match="mixup or cutmix") as err:
        MixingPrepareBatch("cutout")
    assert list(err.value.problems) == ["--augmentation"]


# -------------------------------------------------------------------------------------------- list_lesion_images
def test_one_image_file_is_listed_alone(tmp_path):
    path = _write_image(tmp_path / "lesion.jpg", "rgb", 0)
    table = list_lesion_images(path)
    assert table.to_dict("records") == [{"image_id": "lesion", "path": str(path)}]


def test_a_folder_lists_only_its_images_and_tells_equal_stems_apart(tmp_path):
    for name in ("b.png", "a.jpg", "a.PNG"):
        _write_image(tmp_path / name, "rgb", 0)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "split.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    _write_image(tmp_path / "sub" / "d.png", "rgb", 1)  # not recursive
    table = list_lesion_images(tmp_path)
    assert [Path(p).name for p in table["path"]] == ["a.PNG", "a.jpg", "b.png"]
    assert list(table["image_id"]) == ["a", "a-2", "b"]  # one folder: no parent tells them apart
    assert table["image_id"].is_unique and "dx" not in table
    assert table.attrs["source"] == str(tmp_path)


def test_a_path_label_csv_prefixes_parent_folders_where_stems_collide(tmp_path):
    _write_image(tmp_path / "clinic_a" / "x.png", "rgb", 0)
    _write_image(tmp_path / "clinic_b" / "x.png", "rgb", 1)
    _write_image(tmp_path / "clinic_b" / "y.png", "rgb", 2)
    csv = tmp_path / "to_classify.csv"
    csv.write_text("path,label\nclinic_a/x.png,mel\nclinic_b/x.png,NV\nclinic_b/y.png,6\n")
    table = list_lesion_images(csv)
    assert list(table["image_id"]) == ["clinic_a_x", "clinic_b_x", "y"]
    assert list(table["dx"]) == ["mel", "nv", "vasc"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])


@pytest.mark.parametrize("split, image_ids", [("test", ["img_e", "img_f"]), ("training", ["img_a", "img_b", "img_c"]),
                                              (None, [r[0] for r in ROWS])])
def test_a_folder_holding_split_csv_selects_the_split(split_csv, split, image_ids):
    for source in (split_csv.parent, split_csv):
        table = list_lesion_images(source, split=split)
        assert list(table["image_id"]) == image_ids
        assert set(table["dx"]) <= set(DERMOSCOPY_CLASSES)
        assert table.attrs["source"] == str(split_csv)


def test_a_path_label_csv_with_a_split_column_is_listed(tmp_path):
    _write_image(tmp_path / "x.png", "rgb", 0)
    _write_image(tmp_path / "y.png", "rgb", 1)
    csv = tmp_path / "images.csv"
    csv.write_text("path,label,split\nx.png,mel,test\ny.png,nv,training\n")
    table = list_lesion_images(csv, split="test")
    assert "x" in set(table["image_id"]) and "dx" in table


def test_a_path_label_csv_without_rows_of_the_split_is_a_data_error(tmp_path):
    """Inference must not exit 0 having classified nothing."""
    _write_image(tmp_path / "x.png", "rgb", 0)
    _write_image(tmp_path / "y.png", "rgb", 1)
    csv = tmp_path / "images.csv"
    csv.write_text("path,label,split\nx.png,mel,training\ny.png,nv,validation\n")
    with pytest.raises(DataError, match=r"split 'test' is empty \(present: training, validation\)") as err:
        list_lesion_images(csv, split="test")
    assert err.value.path == str(csv)
    with pytest.raises(OptionError, match="unknown split 'tset'"):
        list_lesion_images(csv, split="tset")
    assert list(list_lesion_images(csv, split=None)["image_id"]) == ["x", "y"]  # None: every row


def test_a_path_label_csv_with_a_bom_and_quoted_header_is_read_as_one(tmp_path):
    _write_image(tmp_path / "x.png", "rgb", 0)
    _write_image(tmp_path / "y.png", "rgb", 1)
    csv = tmp_path / "exported.csv"  # as a spreadsheet exports it
    csv.write_bytes('\ufeff"path","label"\r\n"x.png","mel"\r\n"y.png","nv"\r\n'.encode("utf-8"))
    table = list_lesion_images(csv)
    assert list(table["image_id"]) == ["x", "y"] and list(table["dx"]) == ["mel", "nv"]


def test_a_folder_lists_every_dicom_file_a_single_file_would_be_read_as(tmp_path):
    """.dicom/.dic and suffix-less files with the DICM marker (a scanner's IM0001) are DICOM for load_rgb, so a
    folder of them must not be "no images found"; a suffix-less file without the marker is not listed."""
    from _dermoscopy_fixtures import write_dicom

    rgb = np.full((6, 5, 3), (10, 120, 200), dtype=np.uint8)
    for name in ("IM0001", "b.dicom", "c.dic"):
        write_dicom(tmp_path / name, rgb)
    (tmp_path / "DICOMDIR_notes").write_bytes(b"\0" * 128 + b"NOPE")  # no DICM marker: not an image
    table = list_lesion_images(tmp_path)
    assert [Path(p).name for p in table["path"]] == ["IM0001", "b.dicom", "c.dic"]
    assert table["image_id"][0] == "IM0001" and table["image_id"].is_unique
    assert all(np.array_equal(load_rgb(p), rgb) for p in table["path"])


def test_missing_input_and_empty_folder_are_data_errors_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as err:
        list_lesion_images(missing)
    assert err.value.path == str(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images") as err:
        list_lesion_images(empty)
    assert err.value.path == str(empty)


# -------------------------------------------------------------------------------------- training_accuracy_output
def test_training_accuracy_output_argmaxes_soft_labels():
    pred = torch.randn(3, K, requires_grad=True)
    soft = torch.tensor([[0.7, 0.3] + [0.0] * 5, [0.0] * 5 + [0.4, 0.6], [0.0, 0.0, 0.55, 0.45, 0.0, 0.0, 0.0]])
    logits, classes = training_accuracy_output({"pred": pred, "label": soft})
    assert classes.tolist() == [0, 6, 2] and classes.dtype == torch.int64
    assert torch.equal(logits, pred.detach()) and not logits.requires_grad


def test_training_accuracy_output_scores_only_the_clean_augmix_view():
    pred = torch.arange(3 * 2 * K, dtype=torch.float32).reshape(3 * 2, K)  # [clean; aug1; aug2], B = 2
    logits, classes = training_accuracy_output({"pred": pred, "label": torch.tensor([3, 1])})
    assert torch.equal(logits, pred[:2]) and classes.tolist() == [3, 1]


def test_an_image_far_too_small_for_the_image_size_is_refused_naming_it(split_csv):
    table = load_split_table(split_csv)  # 40×30 and 8×8 images
    at_120 = LesionImageDataset(table, 120, transform=None)  # 30 px × 4 = 120: still accepted
    assert at_120.raw_image(0).shape == (120, 120, 3)
    with pytest.raises(DataError) as err:
        LesionImageDataset(table, 121, transform=None).raw_image(0)  # 30 px would be enlarged > 4×
    assert err.value.path == table["path"][0] and "image is 40×30 px" in str(err.value)
    assert "far too small for --image_size 121" in str(err.value)


def test_a_path_label_csv_with_lesion_ids_is_read_as_a_path_label_csv(tmp_path):
    """Its lesion_id column does not make it a split table (which would miss image_id, dx, dx_type, split)."""
    _write_image(tmp_path / "x.png", "rgb", 0)
    _write_image(tmp_path / "y.png", "rgb", 1)
    csv = tmp_path / "images.csv"
    csv.write_text("path,label,lesion_id\nx.png,mel,les_1\ny.png,nv,les_2\n")
    table = list_lesion_images(csv)
    assert list(table["image_id"]) == ["x", "y"] and list(table["dx"]) == ["mel", "nv"]
    assert list(table["lesion_id"]) == ["les_1", "les_2"]
    csv.write_text("path,label,lesion_id,split\nx.png,mel,les_1,test\ny.png,nv,les_2,training\n")
    assert list(list_lesion_images(csv, split="test")["image_id"]) == ["x"]
