"""The augmentation figure (issue 8 item 3): written, reproducible, labelled with mixed labels, provenance in the title."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import mednet.reports.augmentation_figure as augmentation_figure
from mednet.data.dermoscopy import DERMOSCOPY_CLASSES
from mednet.data.lesion_images import LesionImageDataset
from mednet.errors import OptionError
from mednet.reports.augmentation_figure import mixed_label_text, pick_images, plot_augmentations

SIZE = 16
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
# (image_id, dx, colour): three classes, one image of vasc
ROWS = [("ISIC_1", "nv", (200, 40, 40)), ("ISIC_2", "nv", (180, 60, 40)), ("ISIC_3", "mel", (60, 40, 30)),
        ("ISIC_4", "mel", (80, 50, 40)), ("ISIC_5", "vasc", (150, 20, 90))]


def tiny_dataset(tmp_path: Path, dx_type: str | list[str] = "synthetic") -> LesionImageDataset:
    """Uniform-colour 20×20 JPEGs (centre-cropped/resized to 16×16 on read)."""
    records = []
    for k, (image_id, dx, colour) in enumerate(ROWS):
        path = tmp_path / f"{image_id}.jpg"
        Image.new("RGB", (20, 20), colour).save(path, quality=95)
        kind = dx_type if isinstance(dx_type, str) else dx_type[k]
        records.append({"image_id": image_id, "dx": dx, "path": str(path), "dx_type": kind})
    table = pd.DataFrame(records)
    table.attrs["source"] = str(tmp_path / "split.csv")
    return LesionImageDataset(table, SIZE, transform=None)


def captured_figure(monkeypatch) -> dict:
    """Replace the atomic writer by one that keeps the figure, to read its panels and texts."""
    seen: dict = {}

    def keep(fig, png, dpi):
        seen["fig"] = fig
        return Path(png)

    monkeypatch.setattr(augmentation_figure, "save_figure", keep)
    return seen


def test_png_written_and_grows_with_augmentation_rows(tmp_path: Path) -> None:
    dataset = tiny_dataset(tmp_path)
    out = tmp_path / "figs"
    out.mkdir()
    small = plot_augmentations(dataset, out / "two.png", MEAN, STD, augmentations=["none"], n_images=3)
    full = plot_augmentations(dataset, out / "all.png", MEAN, STD, n_images=3)
    assert small == out / "two.png" and full == out / "all.png"
    assert sorted(p.name for p in out.iterdir()) == ["all.png", "two.png"]  # no temporary file left
    with Image.open(small) as a, Image.open(full) as b:
        a.load(), b.load()
        assert a.format == b.format == "PNG"
        assert a.width == b.width  # same 3 columns
        assert b.height == pytest.approx(a.height * 6 / 2, rel=0.02)  # 2 rows → 6 rows (original + 5)


def test_same_seed_same_figure_and_caller_rng_untouched(tmp_path: Path) -> None:
    dataset = tiny_dataset(tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    pixels = []
    for name, seed in (("a.png", 0), ("b.png", 0), ("c.png", 1)):
        plot_augmentations(dataset, tmp_path / name, MEAN, STD, augmentations=["cutout", "mixup"], n_images=2, seed=seed)
        with Image.open(tmp_path / name) as im:
            pixels.append(np.asarray(im.convert("RGB")))
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(pixels[0], pixels[1])  # seeded, cutout's MONAI RandomState included
    assert not np.array_equal(pixels[0], pixels[2])


def test_originals_unnormalised_cutout_holes_and_mixed_labels(tmp_path: Path, monkeypatch) -> None:
    seen = captured_figure(monkeypatch)
    dataset = tiny_dataset(tmp_path)
    plot_augmentations(dataset, tmp_path / "fig.png", MEAN, STD, augmentations=["cutout", "mixup", "cutmix"], n_images=3)
    fig = seen["fig"]
    axes = np.array(fig.axes).reshape(4, 3)
    try:
        assert [ax.get_ylabel() for ax in axes[:, 0]] == ["original", "cutout", "mixup", "cutmix"]
        # one image of each class, shown as decoded
        assert sorted(ax.get_title() for ax in axes[0]) == ["mel", "nv", "vasc"]
        for ax in axes[0]:
            i = dataset.table.index[dataset.table["dx"] == ax.get_title()]
            assert any(np.array_equal(ax.get_images()[0].get_array(), dataset.raw_image(int(k))) for k in i)
        # cutout fills 2 holes of 8·16/32 = 4 px with 0 after normalisation = the mean colour when displayed
        for ax in axes[1]:
            shown = np.asarray(ax.get_images()[0].get_array())
            assert shown.shape == (SIZE, SIZE, 3) and shown.min() >= 0 and shown.max() <= 1
            holes = int(np.all(shown == 0.5, axis=-1).sum())
            assert 16 <= holes <= 32
        for ax in axes[2:].ravel():
            assert re.fullmatch(r"(\d\.\d\d) (akiec|bcc|bkl|df|mel|nv|vasc)( \+ \d\.\d\d (akiec|bcc|bkl|df|mel|nv|vasc))?",
                                ax.get_title())
        weights = [sum(float(w) for w in re.findall(r"\d\.\d\d", ax.get_title())) for ax in axes[2:].ravel()]
        assert weights == pytest.approx([1.0] * 6, abs=0.011)
        assert "synthetic data" in fig._suptitle.get_text()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_title_names_synthetic_only_when_every_row_is(tmp_path: Path, monkeypatch) -> None:
    seen = captured_figure(monkeypatch)
    dataset = tiny_dataset(tmp_path, dx_type=["synthetic", "synthetic", "histo", "synthetic", "synthetic"])
    plot_augmentations(dataset, tmp_path / "fig.png", MEAN, STD, augmentations=["none"], n_images=2)
    try:
        assert "synthetic" not in seen["fig"]._suptitle.get_text()
    finally:
        import matplotlib.pyplot as plt

        plt.close(seen["fig"])


def test_mixed_label_text_two_largest_weights() -> None:
    weights = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.38, 0.62, 0.0])  # akiec bcc bkl df mel nv vasc
    assert mixed_label_text(weights, DERMOSCOPY_CLASSES) == "0.62 nv + 0.38 mel"
    assert mixed_label_text([0.1, 0.0, 0.0, 0.0, 0.3, 0.6, 0.0], DERMOSCOPY_CLASSES) == "0.60 nv + 0.30 mel"
    assert mixed_label_text(np.eye(7)[6], DERMOSCOPY_CLASSES) == "1.00 vasc"  # unmixed: no "+ 0.00 akiec"
    with pytest.raises(ValueError, match="3 label weights for 7 class names"):
        mixed_label_text([0.5, 0.5, 0.0], DERMOSCOPY_CLASSES)


def test_pick_images_spread_over_classes_and_seeded() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    picks = pick_images(labels, 3, seed=0)
    assert sorted(labels[picks]) == [0, 1, 2]
    assert pick_images(labels, 3, seed=0) == picks
    assert sorted(pick_images(labels, 10, seed=5)) == list(range(7))  # fewer images than asked: all of them
    assert len(set(pick_images(labels, 5, seed=1))) == 5


def test_unknown_augmentation_is_an_option_error(tmp_path: Path) -> None:
    dataset = tiny_dataset(tmp_path)
    with pytest.raises(OptionError, match=r"--augmentation: unknown augmentation 'randaugment'") as error:
        plot_augmentations(dataset, tmp_path / "fig.png", MEAN, STD, augmentations=["none", "randaugment"])
    assert "--augmentation" in error.value.problems
    assert not (tmp_path / "fig.png").exists()
