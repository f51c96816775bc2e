"""The procedural synthetic dermoscopy set: HAM10000 layout, class allocation, lesions, determinism, refusal to
overwrite, the CLI, and that its classes overlap (a linear model on colour/size statistics: above chance, far
below 100 %)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mednet.data.synthetic_dermoscopy import (
    HAM10000_CLASSES,
    HAM10000_COUNTS,
    METADATA_COLUMNS,
    allocate_images,
    generate_synthetic_dermoscopy,
    iter_synthetic_dermoscopy,
    plan_lesions,
)
from mednet.errors import DataError, OptionError
from mednet.io import TEMP_MARKER

REPO = Path(__file__).resolve().parents[1]


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "HAM10000_metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory) -> Path:
    """60 images of 32 px, seed 1."""
    out = tmp_path_factory.mktemp("derm") / "set"
    metadata = generate_synthetic_dermoscopy(out, n_images=60, size=32, seed=1)
    assert metadata == out / "HAM10000_metadata.csv"
    return out


def test_layout_columns_and_provenance(synthetic_set: Path) -> None:
    header = (synthetic_set / "HAM10000_metadata.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "lesion_id,image_id,dx,dx_type,age,sex,localization"
    rows = read_rows(synthetic_set)
    assert len(rows) == 60
    assert {r["dx_type"] for r in rows} == {"synthetic"}
    assert all(r["image_id"].startswith("SYN_") and r["lesion_id"].startswith("SYN_L") for r in rows)
    assert len({r["image_id"] for r in rows}) == 60
    assert {p.name for p in (synthetic_set / "images").iterdir()} == {f"{r['image_id']}.jpg" for r in rows}
    assert {r["sex"] for r in rows} <= {"male", "female", "unknown"}
    ages = [float(r["age"]) for r in rows if r["age"]]
    assert ages and all(5 <= a <= 85 and a % 5 == 0 for a in ages)
    settings = json.loads((synthetic_set / "synthetic.json").read_text(encoding="utf-8"))
    assert settings["synthetic"] is True and settings["dx_type"] == "synthetic"
    assert (settings["seed"], settings["n_images"], settings["size"]) == (1, 60, 32)
    assert settings["classes"] == list(HAM10000_CLASSES)
    assert settings["images_per_class"] == dict(Counter(r["dx"] for r in rows))
    assert len(settings["class_overlap"]) >= 3 and 0.10 <= settings["ambiguous_fraction"] <= 0.15
    assert not [p for p in synthetic_set.rglob("*") if TEMP_MARKER in p.name]  # no staging folder left behind


def test_images_decode_at_size_as_rgb_uint8(synthetic_set: Path) -> None:
    for path in sorted((synthetic_set / "images").iterdir())[:10]:
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 32))
            a = np.asarray(im)
        assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
        assert a.std() > 3  # a lesion on skin, not a flat colour


def test_allocation_follows_ham10000_proportions() -> None:
    assert allocate_images(10015) == HAM10000_COUNTS
    # 1000 · p_c = 32.65, 51.32, 109.74, 11.48, 111.13, 669.50, 14.18 → floors (997) + 3 largest remainders
    assert allocate_images(1000) == {"akiec": 33, "bcc": 51, "bkl": 110, "df": 11, "mel": 111, "nv": 670, "vasc": 14}
    # small N: every class raised to 3 images (3 lesions), paid for by nv (27 → 20)
    assert allocate_images(40) == {"akiec": 3, "bcc": 3, "bkl": 4, "df": 3, "mel": 4, "nv": 20, "vasc": 3}
    assert allocate_images(21) == dict.fromkeys(HAM10000_CLASSES, 3)


@pytest.mark.parametrize("n_images", [21, 60, 1000])
def test_lesions_per_class_and_images_per_lesion(n_images: int) -> None:
    lesions = plan_lesions(n_images, seed=0)
    per_class = Counter(lesion.dx for lesion in lesions)
    assert set(per_class) == set(HAM10000_CLASSES) and min(per_class.values()) >= 3
    assert all(1 <= len(lesion.image_ids) <= 3 for lesion in lesions)
    assert sum(len(lesion.image_ids) for lesion in lesions) == n_images
    assert len({i for lesion in lesions for i in lesion.image_ids}) == n_images
    assert len({lesion.lesion_id for lesion in lesions}) == len(lesions)
    images = Counter()
    for lesion in lesions:
        images[lesion.dx] += len(lesion.image_ids)
    assert dict(images) == allocate_images(n_images)
    if n_images == 1000:
        assert 450 <= len(lesions) <= 550  # ≈ N / 2
        assert Counter(len(lesion.image_ids) for lesion in lesions).keys() == {1, 2, 3}
        # ids are numbered in random order: the first hundred lesion ids are not one class
        assert len({lesion.dx for lesion in lesions[:100]}) >= 4


def test_written_set_groups_images_by_lesion(synthetic_set: Path) -> None:
    rows = read_rows(synthetic_set)
    by_lesion = defaultdict(list)
    for r in rows:
        by_lesion[r["lesion_id"]].append(r)
    assert all(1 <= len(v) <= 3 for v in by_lesion.values())
    for v in by_lesion.values():  # one lesion, one diagnosis and one patient
        assert len({(r["dx"], r["age"], r["sex"], r["localization"]) for r in v}) == 1
    assert min(Counter(v[0]["dx"] for v in by_lesion.values()).values()) >= 3
    # images of one lesion are re-drawings of it: closer to each other than to other lesions' images
    pixels = {r["image_id"]: np.asarray(Image.open(synthetic_set / "images" / f"{r['image_id']}.jpg"), np.float32)
              for r in rows}
    lesion_of = {r["image_id"]: r["lesion_id"] for r in rows}
    same = [np.abs(pixels[a["image_id"]] - pixels[b["image_id"]]).mean()
            for v in by_lesion.values() for a, b in zip(v, v[1:])]
    ids = [r["image_id"] for r in rows]
    other = [np.abs(pixels[a] - pixels[b]).mean() for a, b in zip(ids, ids[7:] + ids[:7]) if lesion_of[a] != lesion_of[b]]
    assert same and min(same) > 0  # not copies
    assert np.median(same) < 0.8 * np.median(other)


def test_deterministic_for_a_seed(synthetic_set: Path, tmp_path: Path) -> None:
    generate_synthetic_dermoscopy(tmp_path / "again", n_images=60, size=32, seed=1)
    assert folder_bytes(tmp_path / "again") == folder_bytes(synthetic_set)
    generate_synthetic_dermoscopy(tmp_path / "other", n_images=60, size=32, seed=2)
    other = folder_bytes(tmp_path / "other")
    assert other["HAM10000_metadata.csv"] != folder_bytes(synthetic_set)["HAM10000_metadata.csv"]
    first = read_rows(synthetic_set)[0]["image_id"]
    assert np.asarray(Image.open(tmp_path / "other" / "images" / f"{first}.jpg")).tobytes() != \
        np.asarray(Image.open(synthetic_set / "images" / f"{first}.jpg")).tobytes()


def test_resolution_independent() -> None:
    """Same seed at 64 and 32 px: the same lesions (every draw but the pixel noise is size-independent)."""
    small = list(iter_synthetic_dermoscopy(21, size=32, seed=3))
    large = list(iter_synthetic_dermoscopy(21, size=64, seed=3))
    assert [r for r, _ in small] == [r for r, _ in large]
    for (_, a), (_, b) in zip(small, large):
        b2 = b.astype(np.float32).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))  # 2×2 box down-sampling
        assert np.abs(a.astype(np.float32) - b2).mean() < 6  # grey levels (of 255)


def test_refuses_to_overwrite(synthetic_set: Path, tmp_path: Path) -> None:
    before = folder_bytes(synthetic_set)
    with pytest.raises(DataError, match="output already exists; choose another folder or pass --overwrite") as err:
        generate_synthetic_dermoscopy(synthetic_set, n_images=30, size=32, seed=5)
    assert err.value.path == str(synthetic_set)
    assert folder_bytes(synthetic_set) == before
    # with overwrite a smaller set replaces a larger one completely (no stale images)
    out = tmp_path / "set"
    generate_synthetic_dermoscopy(out, n_images=60, size=32, seed=1)
    (out / "images" / "extra").mkdir()
    (out / "images" / "extra" / "copy.jpg").write_bytes(b"a file of the earlier images/ folder")
    generate_synthetic_dermoscopy(out, n_images=25, size=32, seed=5, overwrite=True)
    rows = read_rows(out)
    assert len(rows) == 25 and sum(f.is_file() for f in (out / "images").rglob("*")) == 25  # every earlier file gone
    assert json.loads((out / "synthetic.json").read_text(encoding="utf-8"))["seed"] == 5


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_an_overwrite_that_fails_while_moving_in_keeps_the_earlier_set(tmp_path: Path, monkeypatch,
                                                                       failure: BaseException) -> None:
    """--overwrite replaces images, synthetic.json and the metadata all or nothing: a failure (or Ctrl-C) while the
    new files move in leaves the earlier set byte for byte, never new images under the old metadata."""
    import os

    out = tmp_path / "set"
    generate_synthetic_dermoscopy(out, n_images=30, size=32, seed=1)
    before = folder_bytes(out)
    real_replace, calls = os.replace, []

    def failing_replace(src, dst, *args, **kwargs):
        if "new" in Path(src).parts[-4:]:  # a staged file moving in (not an old one set aside)
            calls.append(src)
            if len(calls) == 5:  # the old set is aside, 4 new images are in
                raise failure
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(type(failure)):
        generate_synthetic_dermoscopy(out, n_images=25, size=32, seed=5, overwrite=True)
    monkeypatch.undo()
    assert folder_bytes(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no hidden staging folder left
    generate_synthetic_dermoscopy(out, n_images=25, size=32, seed=5, overwrite=True)
    assert len(read_rows(out)) == 25 and len(list((out / "images").iterdir())) == 25


def test_an_out_that_is_a_file_is_refused_also_with_overwrite(tmp_path: Path) -> None:
    """--overwrite cannot turn a file into a folder: one DataError naming it (not mkdir's FileExistsError), and the
    file is left as it was."""
    from _bundle_cli import command_in_process

    from data_prep.synthetic_dermoscopy import synthetic_dermoscopy

    afile = tmp_path / "afile"
    afile.write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(DataError, match=rf"^{afile}: is a file, not a folder; choose another --out$"):
            generate_synthetic_dermoscopy(afile, n_images=30, size=32, overwrite=overwrite)
    with pytest.raises(DataError, match=rf"^{afile}: is a file, not a folder \(--out "):
        generate_synthetic_dermoscopy(afile / "set", n_images=30, size=32)
    proc = command_in_process(synthetic_dermoscopy, "--out", str(afile), "--images", "30", "--overwrite")
    assert proc.returncode == 2 and proc.stderr.startswith(f"mednet error: {afile}: is a file, not a folder")
    assert afile.read_text() == "mine" and sorted(tmp_path.iterdir()) == [afile]


def test_bad_options_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="--images"):
        generate_synthetic_dermoscopy(tmp_path / "a", n_images=20)
    with pytest.raises(OptionError, match="--size"):
        generate_synthetic_dermoscopy(tmp_path / "b", n_images=30, size=8)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "data_prep.synthetic_dermoscopy", "--out", str(out), "--images", "40",
                           "--size", "32", "--seed", "1"], cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120)
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    assert Counter(r["dx"] for r in rows) == allocate_images(40)
    assert len(list((out / "images").glob("*.jpg"))) == 40


def _colour_size_statistics(image: np.ndarray) -> list[float]:
    """27 simple statistics: colour means/stds (whole, centre, lesion), lesion area, redness, blueness, darkness."""
    a = image.astype(np.float32) / 255
    q = a.shape[0] // 4
    centre = a[q:-q, q:-q].reshape(-1, 3)
    skin = np.median(np.concatenate([a[:q].reshape(-1, 3), a[-q:].reshape(-1, 3)]), axis=0)
    diff = np.abs(a - skin).sum(axis=-1)
    lesion = a[diff > 0.15] if (diff > 0.15).sum() > 3 else centre
    flat = a.reshape(-1, 3)
    return [*flat.mean(0), *flat.std(0), *centre.mean(0), *centre.std(0), *lesion.mean(0), *lesion.std(0),
            (diff > 0.15).mean(), (lesion[:, 0] - lesion[:, 1]).mean(), (lesion[:, 2] - lesion[:, 1]).mean(),
            lesion.min(0).mean(), lesion.max(0).mean(), *np.percentile(lesion.mean(1), [5, 50, 95]), (diff > 0.4).mean()]


def test_classes_overlap_by_a_linear_proxy() -> None:
    """Logistic regression on colour/size statistics of 1000 images (lesion-grouped 70/30 split): clearly
    above chance, clearly below 100 % — the classes are learnable but overlap (module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows, features = [], []
    for row, image in iter_synthetic_dermoscopy(1000, size=32, seed=0):
        rows.append(row)
        features.append(_colour_size_statistics(image))
    x = np.array(features)
    y = np.array([HAM10000_CLASSES.index(r["dx"]) for r in rows])
    train, test = next(GroupShuffleSplit(1, test_size=0.3, random_state=0).split(x, y, [r["lesion_id"] for r in rows]))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
    predicted = model.fit(x[train], y[train]).predict(x[test])
    accuracy = float((predicted == y[test]).mean())
    balanced = balanced_accuracy_score(y[test], predicted)
    assert 0.40 < accuracy < 0.95
    assert 0.30 < balanced < 0.90  # chance: 1/7 ≈ 0.14
