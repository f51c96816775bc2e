"""Dermoscopy data: readers of every source format, image decoding (photos, DICOM), the lesion-grouped split,
the resized cache, the split CSV and the ``data_prep.dermoscopy`` command line — on tiny fixtures written here
in each real format."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from _dermoscopy_fixtures import write_dicom
from _killed_replacement import kill_while_moving_in

from mednet.data.dermoscopy import (
    DERMOSCOPY_CLASSES,
    TABLE_COLUMNS,
    dermamnist_to_folder,
    load_rgb,
    read_dermamnist,
    read_dermoscopy_dicom,
    read_ham10000,
    read_isic2018_groundtruth,
    read_path_label_csv,
    resize_center_crop,
    write_resized_cache,
)
from mednet.data.lesion_split import (
    check_group_disjoint,
    load_split_table,
    prepare_dermoscopy_split,
    split_by_lesion,
    split_stats,
)
from mednet.errors import DataError, OptionError

REPO = Path(__file__).resolve().parents[1]

# colours of the fixture images, by class: a pixel read back tells which file was read
COLOUR = {"akiec": (200, 60, 30), "bcc": (30, 200, 60), "bkl": (60, 30, 200), "df": (120, 120, 0),
          "mel": (20, 20, 20), "nv": (150, 100, 80), "vasc": (220, 0, 110)}


def write_jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)
    return path


# HAM10000 layout: (lesion_id, image_id, dx, dx_type, folder); HAM_0003 has two images
HAM_ROWS = [
    ("HAM_0001", "ISIC_0001", "bkl", "histo", 1), ("HAM_0002", "ISIC_0002", "nv", "follow_up", 1),
    ("HAM_0003", "ISIC_0003", "mel", "histo", 2), ("HAM_0003", "ISIC_0004", "mel", "histo", 2),
    ("HAM_0004", "ISIC_0005", "df", "consensus", 1), ("HAM_0005", "ISIC_0006", "nv", "confocal", 2),
    ("HAM_0006", "ISIC_0007", "vasc", "histo", 1), ("HAM_0007", "ISIC_0008", "bcc", "histo", 2),
    ("HAM_0008", "ISIC_0009", "akiec", "histo", 1), ("HAM_0009", "ISIC_0010", "nv", "follow_up", 2),
]


def write_ham(root: Path, rows=HAM_ROWS, missing: tuple[str, ...] = ()) -> tuple[Path, list[Path]]:
    """HAM10000_metadata.csv (with the age/sex/localization columns of the release) + JPEGs in two folders."""
    dirs = [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for lesion, image, dx, dx_type, part in rows:
        lines.append(f"{lesion},{image},{dx},{dx_type},55.0,female,back")
        if image not in missing:
            write_jpeg(dirs[part - 1] / f"{image}.jpg", COLOUR[dx])
    csv = root / "HAM10000_metadata.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv, dirs


def synthetic_table(n_target: int = 2000, seed: int = 0) -> pd.DataFrame:
    """HAM10000's class proportions (akiec 327 … nv 6705 of 10,015), 1–3 images per lesion."""
    counts = np.array([327, 514, 1099, 115, 1113, 6705, 142])
    rng = np.random.default_rng(seed)
    rows, lesion = [], 0
    while len(rows) < n_target:
        dx = DERMOSCOPY_CLASSES[rng.choice(7, p=counts / counts.sum())]
        for _ in range(rng.integers(1, 4)):
            rows.append({"image_id": f"img{len(rows):05d}", "lesion_id": f"les{lesion:05d}", "dx": dx})
        lesion += 1
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ readers
def test_read_ham10000_finds_both_folders_and_skips_missing_images(tmp_path: Path, caplog) -> None:
    csv, dirs = write_ham(tmp_path, missing=("ISIC_0006",))
    with caplog.at_level(logging.WARNING, logger="mednet"):
        table = read_ham10000(csv, dirs, allow_missing=True)  # 1 of 10 missing: > 1 %, allowed here
    assert (table.attrs["n_listed"], table.attrs["n_missing"]) == (10, 1)
    assert table.attrs["source"] == str(csv)
    assert list(table.columns) == list(TABLE_COLUMNS)  # age/sex/localization not copied
    expected = [r for r in HAM_ROWS if r[1] != "ISIC_0006"]
    assert list(table["image_id"]) == [r[1] for r in expected]  # file order
    assert list(table["lesion_id"]) == [r[0] for r in expected]
    assert list(table["dx_type"]) == [r[3] for r in expected]
    assert table.loc[table["image_id"] == "ISIC_0003", "path"].item() == str(dirs[1] / "ISIC_0003.jpg")
    assert "1 of 10 listed images not found" in caplog.text and "ISIC_0006" in caplog.text
    for path, dx in zip(table["path"], table["dx"]):
        assert np.abs(load_rgb(path)[4, 4].astype(int) - COLOUR[dx]).max() <= 3  # JPEG rounding


def test_read_ham10000_refuses_more_than_one_percent_missing_unless_allowed(tmp_path: Path) -> None:
    """Passing only HAM10000_images_part_1 drops about half the release: refused, with the counts and the fix."""
    csv, dirs = write_ham(tmp_path)
    with pytest.raises(DataError, match=r"HAM10000_metadata\.csv: 5 of its 10 listed images \(50\.0 %\) were not "
                                        r"found in .*HAM10000_images_part_1 \(first: ISIC_0003, ISIC_0004, ISIC_0006\); "
                                        r"give every image folder.*--allow_missing True"):
        read_ham10000(csv, dirs[:1])
    half = read_ham10000(csv, dirs[:1], allow_missing=True)
    assert len(half) == 5 and (half.attrs["n_listed"], half.attrs["n_missing"]) == (10, 5)
    complete = read_ham10000(csv, dirs)
    assert len(complete) == 10 and (complete.attrs["n_listed"], complete.attrs["n_missing"]) == (10, 0)

    # exactly 1 % missing is accepted (skipped and logged); one image more is refused
    rows = [(f"HAM_{i:04d}", f"ISIC_{i:04d}", "nv", "histo", 1) for i in range(200)]
    csv, dirs = write_ham(tmp_path / "big", rows=rows, missing=("ISIC_0007", "ISIC_0100"))
    table = read_ham10000(csv, dirs)
    assert len(table) == 198 and (table.attrs["n_listed"], table.attrs["n_missing"]) == (200, 2)
    (dirs[0] / "ISIC_0150.jpg").unlink()
    with pytest.raises(DataError, match=r"3 of its 200 listed images \(1\.5 %\)"):
        read_ham10000(csv, dirs)

    # the ISIC 2018 reader applies the same rule
    gt = tmp_path / "gt.csv"
    gt.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
                  + "".join(f"ISIC_{i:04d},0,1,0,0,0,0,0\n" for i in range(148, 152)))
    with pytest.raises(DataError, match=r"gt\.csv: 1 of its 4 listed images \(25\.0 %\)"):
        read_isic2018_groundtruth(gt, dirs)
    isic = read_isic2018_groundtruth(gt, dirs, allow_missing=True)
    assert list(isic["image_id"]) == ["ISIC_0148", "ISIC_0149", "ISIC_0151"]
    assert (isic.attrs["n_listed"], isic.attrs["n_missing"]) == (4, 1)


def test_prepare_records_missing_images_and_takes_allow_missing(tmp_path: Path) -> None:
    """The split's record says how many listed images had no file; --allow_missing reaches the reader."""
    import json

    from mednet.data.lesion_split import prepare_dermoscopy_split

    rows = [(f"HAM_{i:04d}", f"ISIC_{i:04d}", "nv", "histo", 1 + i % 2) for i in range(200)]  # half in each folder
    csv, dirs = write_ham(tmp_path / "src", rows=rows, missing=("ISIC_0007", "ISIC_0100"))
    prepare_dermoscopy_split(csv, tmp_path / "a", images=[str(d) for d in dirs])
    record = json.loads((tmp_path / "a" / "split.json").read_text(encoding="utf-8"))
    assert (record["n_listed"], record["n_missing"], record["n_images"]) == (200, 2, 198)
    with pytest.raises(DataError, match=r"of its 200 listed images"):
        prepare_dermoscopy_split(csv, tmp_path / "b", images=str(dirs[0]))
    assert not (tmp_path / "b" / "split.csv").exists()
    prepare_dermoscopy_split(csv, tmp_path / "b", images=str(dirs[0]), allow_missing=True)
    record = json.loads((tmp_path / "b" / "split.json").read_text(encoding="utf-8"))
    assert record["n_listed"] == 200 and record["n_missing"] == record["n_listed"] - record["n_images"] > 2


def test_read_ham10000_errors_name_file_row_and_value(tmp_path: Path) -> None:
    csv, dirs = write_ham(tmp_path)
    text = csv.read_text(encoding="utf-8")
    bad = tmp_path / "no_columns.csv"
    bad.write_text(text.replace("lesion_id,image_id,dx,dx_type", "lesion,image_id,diagnosis,dx_type", 1))
    with pytest.raises(DataError, match=r"no_columns\.csv: missing column\(s\) lesion_id, dx "):
        read_ham10000(bad, dirs)
    bad.write_text(text.replace("ISIC_0005,df", "ISIC_0005,melanoma"))
    with pytest.raises(DataError, match=r"no_columns\.csv:row 6: unknown dx 'melanoma'"):
        read_ham10000(bad, dirs)
    bad.write_text(text.replace("ISIC_0010", "ISIC_0002"))
    with pytest.raises(DataError, match=r"no_columns\.csv:row 11: duplicate image_id 'ISIC_0002' \(first listed at row 3\)"):
        read_ham10000(bad, dirs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"HAM10000_metadata\.csv: none of its 10 images was found"):
        read_ham10000(csv, [empty])


def test_a_trailing_comma_on_every_row_does_not_shift_the_columns(tmp_path: Path) -> None:
    """pandas would take the first column as the index and read every value one column left ("unknown dx 'histo'")."""
    csv, dirs = write_ham(tmp_path)
    expected = read_ham10000(csv, dirs)
    lines = csv.read_text(encoding="utf-8").splitlines()
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("\n".join(lines[:1] + [line + "," for line in lines[1:]]) + "\n", encoding="utf-8")
    table = read_ham10000(trailing, dirs)
    assert table[["lesion_id", "image_id", "dx"]].equals(expected[["lesion_id", "image_id", "dx"]])
    # a value beyond the header is not dropped without a word (an unquoted comma in a value, a missing column)
    extra = tmp_path / "extra.csv"
    extra.write_text("\n".join(lines[:1] + [line + ",face" for line in lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"extra\.csv:row 2: 8 fields for 7 header columns: the value\(s\) 'face'"):
        read_ham10000(extra, dirs)
    with pytest.raises(DataError, match="image folder not found"):
        read_ham10000(csv, [tmp_path / "absent"])


HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
HAM_LINE = "HAM_0001,ISIC_0001,bkl,histo,55.0,female,back\n"


@pytest.mark.parametrize(("content", "where", "problem"), [
    (b"", "", "the CSV file is empty"),
    (HAM_HEADER.encode(), "", "the CSV file has a header but no rows"),
    # a spreadsheet's "CSV" on Windows: cp1252, 'é' = 0xe9 (followed by 'p', not a UTF-8 continuation byte)
    ((HAM_HEADER + HAM_LINE + "HAM_0002,ISIC_0002,nv,histo,40.0,male,dos (épaule)\n").encode("cp1252"), ":row 3",
     "not UTF-8 text (byte 0xe9: invalid continuation byte); save the CSV as UTF-8"),
    ((HAM_HEADER + HAM_LINE).encode("utf-16"), ":row 1", "not UTF-8 text (byte 0xff: invalid start byte)"),
    # pandas says "EOF inside string starting at row 2" for both: it counts records from 0, not lines
    ((HAM_HEADER + HAM_LINE + 'HAM_0002,"ISIC_0002,nv,histo,40.0,male,back\n' + HAM_LINE).encode(), ":row 3",
     "a quoted value starts on this row and is never closed"),
    ((HAM_HEADER + 'HAM_0001,ISIC_0001,bkl,histo,55.0,female,"back\nleft"\nHAM_0002,ISIC_0002,nv,histo,40.0,male,"'
      + "back\n" + HAM_LINE).encode(), ":row 4", "a quoted value starts on this row and is never closed"),
], ids=["empty", "header_only", "cp1252", "utf16", "unbalanced_quote", "unbalanced_after_multiline_value"])
def test_a_broken_csv_is_refused_naming_it_and_what_is_wrong(tmp_path: Path, content: bytes, where: str,
                                                             problem: str) -> None:
    csv = tmp_path / "HAM10000_metadata.csv"
    csv.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_ham10000(csv, [tmp_path])
    assert str(err.value).startswith(f"{csv}{where}: {problem}"), str(err.value)
    assert err.value.path == f"{csv}{where}"


def test_read_isic2018_groundtruth_one_hot_and_lesion_groups(tmp_path: Path, caplog) -> None:
    images = tmp_path / "ISIC2018_Task3_Training_Input"
    gt = tmp_path / "gt.csv"
    # the release's column order (MEL first), not ours
    gt.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
                  "ISIC_0001,0.0,0.0,0.0,0.0,1.0,0.0,0.0\n"
                  "ISIC_0003,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
                  "ISIC_0004,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
                  "ISIC_0009,0.0,0.0,0.0,1.0,0.0,0.0,0.0\n")
    for image, dx in (("ISIC_0001", "bkl"), ("ISIC_0003", "mel"), ("ISIC_0004", "mel"), ("ISIC_0009", "akiec")):
        write_jpeg(images / f"{image}.jpg", COLOUR[dx])
    groups = tmp_path / "ISIC2018_Task3_Training_LesionGroupings.csv"
    groups.write_text("image,lesion_id,diagnosis_confirm_type\nISIC_0001,HAM_0001,histopathology\n"
                      "ISIC_0003,HAM_0003,histopathology\nISIC_0004,HAM_0003,histopathology\n"
                      "ISIC_0009,HAM_0008,histopathology\n")
    table = read_isic2018_groundtruth(gt, images, lesion_groups_csv=groups)
    assert list(table["dx"]) == ["bkl", "mel", "mel", "akiec"]
    assert list(table["lesion_id"]) == ["HAM_0001", "HAM_0003", "HAM_0003", "HAM_0008"]
    assert set(table["dx_type"]) == {"histopathology"}
    ham_csv, _ = write_ham(tmp_path / "ham")  # HAM10000's metadata works as the grouping file too
    assert list(read_isic2018_groundtruth(gt, images, ham_csv)["lesion_id"]) == list(table["lesion_id"])
    with caplog.at_level(logging.WARNING, logger="mednet"):
        alone = read_isic2018_groundtruth(gt, [images])
    assert list(alone["lesion_id"]) == list(alone["image_id"]) and "no lesion grouping" in caplog.text
    bad = tmp_path / "bad.csv"
    bad.write_text(gt.read_text(encoding="utf-8").replace("ISIC_0003,1.0,0.0", "ISIC_0003,1.0,1.0"))
    with pytest.raises(DataError, match=r"bad\.csv:row 3: expected exactly one 1"):
        read_isic2018_groundtruth(bad, images)
    bad.write_text(gt.read_text(encoding="utf-8").replace("ISIC_0009,0.0,0.0,0.0,1.0", "ISIC_0009,0.0,0.0,0.0,0.5"))
    with pytest.raises(DataError, match=r"bad\.csv:row 5: expected exactly one 1"):
        read_isic2018_groundtruth(bad, images)
    bad.write_text(gt.read_text(encoding="utf-8").replace(",VASC", ",VAS"))
    with pytest.raises(DataError, match=r"missing column\(s\) VASC"):
        read_isic2018_groundtruth(bad, images)


@pytest.mark.parametrize("cell", ["lesion_id", "image"])
def test_lesion_groups_with_an_empty_cell_are_refused_naming_the_row(tmp_path: Path, cell: str) -> None:
    """Images with an empty lesion_id would all become one pseudo-lesion; an empty image loses its row's group."""
    images = tmp_path / "images"
    gt = tmp_path / "gt.csv"
    gt.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
                  "ISIC_0001,0,1,0,0,0,0,0\nISIC_0002,0,1,0,0,0,0,0\nISIC_0003,1,0,0,0,0,0,0\n")
    for image in ("ISIC_0001", "ISIC_0002", "ISIC_0003"):
        write_jpeg(images / f"{image}.jpg", COLOUR["nv"])
    rows = {"ISIC_0001": "HAM_0001", "ISIC_0002": "HAM_0002", "ISIC_0003": "HAM_0003"}
    lines = ["image,lesion_id,diagnosis_confirm_type"]
    for image, lesion in rows.items():
        if image == "ISIC_0002":
            image, lesion = ("", lesion) if cell == "image" else (image, "")
        lines.append(f"{image},{lesion},histopathology")
    if cell == "image":
        lines.append("ISIC_0002,HAM_0002,histopathology")  # listed too: only the empty cell is wrong
    groups = tmp_path / "groups.csv"
    groups.write_text("\n".join(lines) + "\n")
    problem = "empty lesion_id for image ISIC_0002" if cell == "lesion_id" else r"empty image \(lesion_id HAM_0002\)"
    with pytest.raises(DataError, match=rf"groups\.csv:row 3: {problem}"):
        read_isic2018_groundtruth(gt, images, lesion_groups_csv=groups)


def write_dermamnist(path: Path, n: dict[str, int] | None = None, label_offset: int = 0, drop: str = "",
                     seed: int = 0) -> Path:
    n = n or {"train": 7, "val": 3, "test": 4}
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, k in n.items():
        arrays[f"{prefix}_images"] = rng.integers(0, 256, (k, 28, 28, 3), dtype=np.uint8)
        arrays[f"{prefix}_labels"] = (np.arange(k) % 7 + label_offset).reshape(k, 1).astype(np.uint8)
    arrays.pop(drop, None)
    np.savez(path, **arrays)
    return path


def test_read_dermamnist_and_folder_through_one_split_csv(tmp_path: Path) -> None:
    npz = write_dermamnist(tmp_path / "dermamnist.npz")
    data = read_dermamnist(npz)
    assert list(data) == ["training", "validation", "test"]
    images, labels = data["training"]
    assert images.shape == (7, 28, 28, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6] and labels.dtype == np.int64
    csv = dermamnist_to_folder(npz, tmp_path / "out")
    table = load_split_table(tmp_path / "out")
    assert csv == tmp_path / "out" / "split.csv" and len(table) == 14
    first = table.iloc[0]
    assert (first["image_id"], first["lesion_id"], first["dx"], first["split"]) == \
        ("dermamnist_training_0", "dermamnist_training_0", "akiec", "training")
    assert table.loc[table["image_id"] == "dermamnist_test_3", "dx"].item() == "df"  # label 3 → df
    np.testing.assert_array_equal(load_rgb(first["path"]), images[0])  # PNG: lossless
    with pytest.raises(DataError, match="output already exists"):
        dermamnist_to_folder(npz, tmp_path / "out")


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("write, fail_at, error", [
    ("to_folder", 5, OSError("No space left on device")),   # the reviewer's case: while the old images move aside
    ("to_folder", 20, KeyboardInterrupt()),                 # Ctrl-C while the new ones move in
    ("table", 5, OSError("No space left on device")),       # dermamnist_table, as data_prep.dermoscopy calls it
])
def test_dermamnist_overwrite_that_fails_midway_keeps_every_earlier_image(tmp_path: Path, monkeypatch, write: str,
                                                                         fail_at: int, error: BaseException) -> None:
    """Built from a.npz, then from b.npz with overwrite while os.replace fails on its n-th call: every PNG (and
    split.csv) is still a.npz's — before, the images moved in so far stayed, under the old split.csv's labels."""
    from mednet.data.dermoscopy import dermamnist_table

    out = tmp_path / "out"
    a, b = write_dermamnist(tmp_path / "a.npz", seed=0), write_dermamnist(tmp_path / "b.npz", seed=1)
    build = (lambda npz: dermamnist_to_folder(npz, out, overwrite=True)) if write == "to_folder" else \
        (lambda npz: dermamnist_table(npz, out, overwrite=True))
    build(a)
    before = _folder_bytes(out)
    assert len([k for k in before if k.endswith(".png")]) == 14
    real, calls = os.replace, []

    def failing(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == fail_at:
            raise error
        return real(src, dst, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing)
        with pytest.raises(type(error)):
            build(b)
    assert _folder_bytes(out) == before
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    table = build(b)  # the re-run replaces the set whole
    after = _folder_bytes(out)
    assert set(after) == set(before) and all(after[k] != before[k] for k in after if k.endswith(".png"))
    if write == "to_folder":
        table = load_split_table(out)
    np.testing.assert_array_equal(load_rgb(table["path"][0]), read_dermamnist(b)["training"][0][0])


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_dermamnist_after_a_run_killed_while_moving_in(tmp_path: Path) -> None:
    """A run killed outright (SIGKILL) with 3 new images moved in: the next run puts the earlier images back before
    it checks anything (so without overwrite it refuses them, unchanged), and leaves no hidden folder."""
    out = tmp_path / "out"
    dermamnist_to_folder(write_dermamnist(tmp_path / "a.npz", seed=0), out)
    before = _folder_bytes(out)
    names = [k for k in before if k != "split.csv"] + ["split.csv"]
    proc = kill_while_moving_in(out, names, kill_at=3)
    assert proc.returncode == -9, proc.stderr
    assert _folder_bytes(out) != before and [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    with pytest.raises(DataError, match="output already exists"):
        dermamnist_to_folder(tmp_path / "a.npz", out)
    assert _folder_bytes(out) == before and not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_read_dermamnist_errors(tmp_path: Path) -> None:
    missing = write_dermamnist(tmp_path / "m.npz", drop="val_labels")
    with pytest.raises(DataError, match=r"m\.npz: missing key\(s\) val_labels \(present: test_images, test_labels, "
                                        r"train_images, train_labels, val_images\)"):
        read_dermamnist(missing)
    with pytest.raises(DataError, match=r"m\.npz: missing key\(s\) val_images, val_labels"):
        read_dermamnist(write_dermamnist(tmp_path / "m.npz", n={"train": 2, "test": 2}))
    with pytest.raises(DataError, match=r"train_labels\[6\] = 7 is outside 0\.\.6"):
        read_dermamnist(write_dermamnist(tmp_path / "o.npz", label_offset=1))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz"):
        read_dermamnist(tmp_path / "junk.npz")


@pytest.mark.parametrize(("images", "got"), [
    (lambda a: a[..., 0], r"\(7, 28, 28\) uint8"),  # grey, as MedMNIST's other 2D sets store them
    (lambda a: a.astype(np.float32) / 255, r"\(7, 28, 28, 3\) float32"),
    (lambda a: np.concatenate([a, a[..., :1]], axis=-1), r"\(7, 28, 28, 4\) uint8"),
], ids=["grey", "float", "rgba"])
def test_read_dermamnist_refuses_images_that_are_not_rgb_uint8(tmp_path: Path, images, got: str) -> None:
    npz = write_dermamnist(tmp_path / "d.npz")
    with np.load(npz) as loaded:
        arrays = dict(loaded)
    arrays["train_images"] = images(arrays["train_images"])
    np.savez(npz, **arrays)
    with pytest.raises(DataError, match=rf"d\.npz: train_images must be \(N, H, W, 3\) uint8, got {got}$") as err:
        read_dermamnist(npz)
    assert err.value.path == str(npz)


def test_read_dermamnist_refuses_a_npy_file_renamed_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "images.npy", np.zeros((2, 28, 28, 3), np.uint8))
    renamed = (tmp_path / "images.npy").rename(tmp_path / "dermamnist.npz")
    with pytest.raises(DataError, match=r"dermamnist\.npz: not an \.npz archive \(it holds a single \(2, 28, 28, 3\) "
                                        r"uint8 array") as err:
        read_dermamnist(renamed)
    assert err.value.path == str(renamed)


def test_read_path_label_csv(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "imgs" / "a.jpg", COLOUR["mel"])
    write_jpeg(tmp_path / "imgs" / "b.png", COLOUR["nv"])
    write_jpeg(tmp_path / "other" / "a.jpg", COLOUR["vasc"])
    csv = tmp_path / "list.csv"
    csv.write_text("path,label,lesion_id\nimgs/a.jpg,MEL,L1\nimgs/b.png,5,L1\nother/a.jpg,vasc,L2\n")
    table = read_path_label_csv(csv)
    assert list(table["dx"]) == ["mel", "nv", "vasc"]
    assert list(table["image_id"]) == ["imgs_a", "b", "other_a"]  # equal stems told apart by their folder
    assert list(table["lesion_id"]) == ["L1", "L1", "L2"] and set(table["dx_type"]) == {"unknown"}
    assert table["path"][2] == str(tmp_path / "other" / "a.jpg")  # relative to the CSV's folder
    csv.write_text("path,label,split\nimgs/a.jpg,mel,test\nimgs/b.png,nv,training\n")
    table = read_path_label_csv(csv)
    assert list(table["split"]) == ["test", "training"] and list(table["lesion_id"]) == ["a", "b"]
    csv.write_text("path,label\nimgs/a.jpg,mel\nimgs/b.png,7\n")
    with pytest.raises(DataError, match=r"list\.csv:row 3: unknown label '7'"):
        read_path_label_csv(csv)
    csv.write_text("path,label\nimgs/a.jpg,mel\nimgs/c.png,nv\n")
    with pytest.raises(DataError, match=r"list\.csv:row 3: image file .*c\.png does not exist"):
        read_path_label_csv(csv)
    # the row named is the file's line, as an editor shows it: blank lines and a quoted field over two lines
    # before it (pandas skips the former and joins the latter, so its row index is 1 here)
    csv.write_text('path,label,lesion_id\n\n"imgs/a.jpg",mel,"L\n1"\n  \nimgs/c.png,nv,L2\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"list\.csv:row 6: image file .*c\.png does not exist"):
        read_path_label_csv(csv)


def test_an_image_listed_twice_is_refused_naming_both_rows(tmp_path: Path) -> None:
    """One file under two rows would become two "lesions", possibly one in training and one in test."""
    for name in ("ISIC_1", "ISIC_2"):
        write_jpeg(tmp_path / "imgs" / f"{name}.jpg", COLOUR["nv"])
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\nimgs/ISIC_1.jpg,nv\nimgs/ISIC_2.jpg,nv\n./imgs/ISIC_1.jpg,nv\n")
    duplicate = re.escape(str(tmp_path / "imgs" / "ISIC_1.jpg"))
    with pytest.raises(DataError, match=rf"list\.csv:row 4: duplicate path {duplicate} \(first listed at row 2\)"):
        read_path_label_csv(csv)
    csv.write_text("path,label,image_id\nimgs/ISIC_1.jpg,nv,a\nimgs/ISIC_2.jpg,nv,b\nimgs/ISIC_1.jpg,nv,c\n")
    with pytest.raises(DataError, match=r"list\.csv:row 4: duplicate path"):  # not rescued by distinct image ids
        read_path_label_csv(csv)

    split = tmp_path / "split.csv"  # the prepared table: two image ids, one file, two splits
    split.write_text("image_id,lesion_id,dx,dx_type,path,split\n"
                     "ISIC_1,L1,nv,histo,imgs/ISIC_1.jpg,training\n"
                     "ISIC_2,L2,nv,histo,imgs/ISIC_2.jpg,training\n"
                     "ISIC_1-2,L3,nv,histo,imgs/ISIC_1.jpg,test\n")
    with pytest.raises(DataError, match=rf"split\.csv:row 4: duplicate path {duplicate} \(first listed at row 2\)"):
        load_split_table(split)


@pytest.mark.parametrize(("column", "value"), [("split", "valid"), ("split", "train "), ("split", "Test"),
                                             ("dx", "melanoma"), ("dx", "MEL")])
def test_a_hand_edited_split_table_with_an_unknown_value_is_refused_naming_the_row(tmp_path: Path, column: str,
                                                                                  value: str) -> None:
    """split.csv edited in a spreadsheet: a split or a class the bundle does not know is refused at its row, not
    dropped (a row in no split) or trained as a class of its own."""
    rows = [("ISIC_1", "L1", "nv", "training"), ("ISIC_2", "L2", "mel", "validation "), ("ISIC_3", "L3", "bcc", "test")]
    for image_id, _, dx, _ in rows:
        write_jpeg(tmp_path / "imgs" / f"{image_id}.jpg", COLOUR[dx])
    lines = ["image_id,lesion_id,dx,dx_type,path,split"] + [
        f"{i},{lesion},{dx},histo,imgs/{i}.jpg,{split}" for i, lesion, dx, split in rows]
    csv = tmp_path / "split.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert list(load_split_table(csv)["split"]) == ["training", "validation", "test"]  # spaces around a value: fine
    edited = lines[:2] + [lines[2].replace(",mel,", f",{value},") if column == "dx" else
                          lines[2].replace(",validation ", f",{value}")] + lines[3:]
    csv.write_text("\n".join(edited) + "\n", encoding="utf-8")
    expected = {"split": f"unknown split '{value.strip()}' (expected one of training, validation, test)",
                "dx": f"unknown dx '{value}' (expected one of {', '.join(DERMOSCOPY_CLASSES)})"}[column]
    with pytest.raises(DataError) as err:
        load_split_table(tmp_path)
    assert str(err.value) == f"{csv}:row 3: {expected}"


# ------------------------------------------------------------------------------------------------ images
def test_load_rgb_converts_grey_rgba_palette_and_16_bit(tmp_path: Path) -> None:
    Image.new("L", (5, 4), 77).save(tmp_path / "grey.png")
    grey = load_rgb(tmp_path / "grey.png")
    assert grey.shape == (4, 5, 3) and grey.dtype == np.uint8 and (grey == 77).all()
    Image.new("RGBA", (3, 2), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    assert load_rgb(tmp_path / "rgba.png")[0, 0].tolist() == [10, 20, 30]  # alpha dropped, colour kept
    palette = Image.new("P", (3, 2), 1)
    palette.putpalette([0, 0, 0, 40, 50, 60])  # index 1 → (40, 50, 60)
    palette.save(tmp_path / "palette.png")
    assert load_rgb(tmp_path / "palette.png")[1, 2].tolist() == [40, 50, 60]
    Image.new("RGB", (6, 6), (1, 2, 3)).save(tmp_path / "x.bmp")
    assert load_rgb(tmp_path / "x.bmp")[0, 0].tolist() == [1, 2, 3]
    deep = np.array([[0, 500], [1000, 250]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = load_rgb(tmp_path / "deep.png")
    assert out.shape == (2, 2, 3) and out[..., 1].tolist() == [[0, 128], [255, 64]]  # scaled by the max (1000)
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    assert load_rgb(tmp_path / "deep.tif")[..., 0].tolist() == [[0, 128], [255, 64]]


def test_load_rgb_refuses_a_float_image_with_nan(tmp_path: Path) -> None:
    pixels = np.array([[0.0, 0.5], [np.nan, 1.0]], dtype=np.float32)
    Image.fromarray(pixels, mode="F").save(tmp_path / "float.tif")
    with pytest.raises(DataError, match=r"float\.tif: non-finite pixel values \(1 ") as err:
        load_rgb(tmp_path / "float.tif")
    assert err.value.path == str(tmp_path / "float.tif")
    Image.fromarray(np.nan_to_num(pixels), mode="F").save(tmp_path / "finite.tif")  # finite: scaled by the max
    assert load_rgb(tmp_path / "finite.tif")[..., 0].tolist() == [[0, 128], [0, 255]]


def test_load_rgb_refuses_truncated_and_non_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = tmp_path / "good.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.jpg: cannot decode image: .*truncated"):
        load_rgb(cut)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.png: cannot decode image"):
        load_rgb(tmp_path / "notes.png")
    with pytest.raises(DataError, match=r"absent\.jpg: image file not found"):
        load_rgb(tmp_path / "absent.jpg")


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "YBR_FULL_422"])
def test_read_dermoscopy_dicom_colour(tmp_path: Path, photometric: str) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[...] = COLOUR["akiec"]
    rgb[:, 4:] = COLOUR["bcc"]  # two colours on a pixel-pair boundary (YBR_FULL_422 shares chroma per pair)
    path = write_dicom(tmp_path / f"{photometric}.dcm", rgb, photometric)
    out = load_rgb(path)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    tolerance = 0 if photometric == "RGB" else 2  # YCbCr ↔ RGB rounding
    assert np.abs(out.astype(int) - rgb).max() <= tolerance


def test_read_dermoscopy_dicom_grey_and_errors(tmp_path: Path) -> None:
    rgb = np.full((3, 3, 3), 90, np.uint8)
    vl = "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic Image Storage: accepted too
    assert (read_dermoscopy_dicom(write_dicom(tmp_path / "g.dcm", rgb, "MONOCHROME2", sop=vl)) == 90).all()
    with pytest.raises(DataError, match=r"ct\.dcm: SOP class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2 \(CT Image Storage\) "
                                        "is not a dermoscopy photograph"):
        read_dermoscopy_dicom(write_dicom(tmp_path / "ct.dcm", rgb, sop="1.2.840.10008.5.1.4.1.1.2"))
    with pytest.raises(DataError, match=r"multi\.dcm: multi-frame DICOM \(2 frames\)"):
        read_dermoscopy_dicom(write_dicom(tmp_path / "multi.dcm", rgb, frames=2))
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match=r"fake\.dcm: cannot decode image"):
        load_rgb(tmp_path / "fake.dcm")


# ------------------------------------------------------------------------------------------------ split
def test_split_by_lesion_grouped_stratified_and_seeded() -> None:
    table = synthetic_table()
    out = split_by_lesion(table, val=0.15, test=0.15, seed=0)
    check_group_disjoint(out)  # no lesion in two splits
    assert out.groupby("lesion_id")["split"].nunique().max() == 1
    overall = table["dx"].value_counts(normalize=True)
    sizes = out["split"].value_counts(normalize=True)
    assert abs(sizes["training"] - 0.70) < 0.01 and abs(sizes["validation"] - 0.15) < 0.01
    for split in ("training", "validation", "test"):
        share = out.loc[out["split"] == split, "dx"].value_counts(normalize=True)
        assert set(share.index) == set(DERMOSCOPY_CLASSES)  # df (≈1 %) and vasc included
        assert (share - overall).abs().max() < 0.02, split
    again = split_by_lesion(table.sample(frac=1, random_state=3), seed=0).sort_index()
    assert again["split"].tolist() == out["split"].tolist()  # seeded, independent of row order
    assert split_by_lesion(table, seed=1)["split"].tolist() != out["split"].tolist()


def test_held_out_splits_are_a_sample_of_the_lesions_not_only_single_image_ones() -> None:
    """Largest lesion first sent every multi-image lesion to training (its target is largest): validation and test
    then held single-image lesions only (0 % against HAM10000's 26 %), a biased sample."""
    rng = np.random.default_rng(0)
    classes = rng.choice(DERMOSCOPY_CLASSES, 3000, p=[0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
    images = np.where(rng.random(3000) < 0.26, rng.integers(2, 7, 3000), 1)  # 26 % of lesions: 2–6 images
    table = pd.DataFrame([{"image_id": f"I{k}_{j}", "lesion_id": f"L{k}", "dx": dx}
                          for k, (dx, n) in enumerate(zip(classes, images)) for j in range(n)])
    out = split_by_lesion(table, val=0.15, test=0.15, seed=0)
    per_lesion = out.groupby("lesion_id").agg(split=("split", "first"), n=("split", "size"))
    multi = per_lesion.groupby("split")["n"].apply(lambda n: float((n > 1).mean()))
    for split in ("training", "validation", "test"):
        assert abs(multi[split] - 0.26) < 0.05, multi.to_dict()
    shares = pd.crosstab(out["dx"], out["split"], normalize="index")  # each class's images: 70 / 15 / 15 %
    assert (shares["training"] - 0.70).abs().max() < 0.04 and (shares["test"] - 0.15).abs().max() < 0.04, shares


def test_split_small_class_reaches_every_split_and_errors() -> None:
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(8)], "lesion_id": ["a", "b", "c", "d", "d", "e", "f", "g"],
                          "dx": ["df", "df", "df", "nv", "nv", "nv", "nv", "nv"]})
    out = split_by_lesion(table, seed=0)
    assert set(out.loc[out["dx"] == "df", "split"]) == {"training", "validation", "test"}  # 3 lesions, one each
    mixed = table.assign(dx=["df", "df", "df", "nv", "mel", "nv", "nv", "nv"])
    mixed.attrs["source"] = "meta.csv"
    with pytest.raises(DataError, match="meta.csv: lesion_id d has images with different dx: nv, mel"):
        split_by_lesion(mixed)
    with pytest.raises(OptionError, match="--val"):
        split_by_lesion(table, val=0.5, test=0.5)
    leaking = out.assign(split=["training"] * 4 + ["test"] + ["training"] * 3)
    with pytest.raises(DataError, match="split.csv: lesion_id d is in both 'training' and 'test'"):
        check_group_disjoint(leaking, path="split.csv")


def test_split_stats_counts() -> None:
    table = pd.DataFrame({"lesion_id": ["a", "a", "b", "c", "d"], "dx": ["mel", "mel", "nv", "nv", "df"],
                          "split": ["training", "training", "training", "test", "validation"]})
    stats = split_stats(table).set_index("class")
    assert list(stats.columns) == ["training", "validation", "test", "total"]
    assert stats.loc["mel"].tolist() == [2, 0, 0, 2] and stats.loc["nv"].tolist() == [1, 0, 1, 2]
    assert stats.loc["akiec"].tolist() == [0, 0, 0, 0]
    assert stats.loc["total"].tolist() == [3, 1, 1, 5] and stats.loc["lesions"].tolist() == [2, 1, 1, 4]


# ------------------------------------------------------------------------------------------------ cache
def test_resized_cache_centre_crop_and_reuse(tmp_path: Path, monkeypatch) -> None:
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, 2:6] = 255  # the centre square is white, the sides black
    assert (resize_center_crop(image, 2) == 255).all()  # aspect kept: the sides are cropped, not squashed
    Image.fromarray(image).save(tmp_path / "wide.png")
    table = pd.DataFrame({"image_id": ["wide"], "path": [str(tmp_path / "wide.png")]})
    cached = write_resized_cache(table, tmp_path / "out", 2)
    target = tmp_path / "out" / "cache_2" / "wide.png"
    assert cached["cache_path"].tolist() == [str(target.resolve())]
    assert (np.asarray(Image.open(target)) == 255).all() and np.asarray(Image.open(target)).shape == (2, 2, 3)

    def no_decoding(path):
        raise AssertionError("a cached image was decoded again")

    monkeypatch.setattr("mednet.data.dermoscopy.load_rgb", no_decoding)
    assert write_resized_cache(table, tmp_path / "out", 2)["cache_path"].tolist() == [str(target.resolve())]
    with pytest.raises(AssertionError):  # another size is another cache
        write_resized_cache(table, tmp_path / "out", 3)


def test_resized_cache_refuses_an_image_far_too_small_as_training_would(tmp_path: Path) -> None:
    """The cache must not upscale a 10 px image into a 64 px PNG that training then accepts."""
    Image.new("RGB", (10, 10), (90, 40, 20)).save(tmp_path / "tiny.png")
    table = pd.DataFrame({"image_id": ["tiny"], "path": [str(tmp_path / "tiny.png")]})
    with pytest.raises(DataError, match=r"tiny\.png: image is 10×10 px, far too small for --cache_size 64 "
                                        r"\(at least 16 px a side\)"):
        write_resized_cache(table, tmp_path / "out", 64)
    assert not (tmp_path / "out" / "cache_64" / "tiny.png").exists()
    assert write_resized_cache(table, tmp_path / "out", 40)["cache_path"].map(os.path.isfile).all()  # 4× is allowed


def test_resized_cache_is_rewritten_when_its_source_changed_or_on_overwrite(tmp_path: Path) -> None:
    source = tmp_path / "x.png"
    Image.new("RGB", (6, 6), (10, 10, 10)).save(source)
    table = pd.DataFrame({"image_id": ["x"], "path": [str(source)]})
    target = Path(write_resized_cache(table, tmp_path / "out", 2)["cache_path"][0])
    Image.new("RGB", (6, 6), (200, 0, 0)).save(source)
    os.utime(source, ns=(target.stat().st_mtime_ns + 10**9,) * 2)  # modified after the cache was written
    write_resized_cache(table, tmp_path / "out", 2)
    assert np.asarray(Image.open(target))[0, 0].tolist() == [200, 0, 0]
    Image.new("RGB", (6, 6), (0, 90, 0)).save(source)
    os.utime(source, ns=(0, 0))  # a replaced file with an old time (unpacked from an archive): only overwrite sees it
    write_resized_cache(table, tmp_path / "out", 2)
    assert np.asarray(Image.open(target))[0, 0].tolist() == [200, 0, 0]
    write_resized_cache(table, tmp_path / "out", 2, overwrite=True)
    assert np.asarray(Image.open(target))[0, 0].tolist() == [0, 90, 0]


def test_prepare_with_overwrite_never_keeps_stale_cached_pixels(tmp_path: Path) -> None:
    """Same image ids, new pixels: the cache must follow the new source, or training reads old pixels."""
    a = write_dermamnist(tmp_path / "a.npz", seed=1)
    b = write_dermamnist(tmp_path / "b.npz", seed=2)
    out = tmp_path / "prepared"
    prepare_dermoscopy_split(a, out, format="dermamnist", cache_size=4)
    prepare_dermoscopy_split(b, out, format="dermamnist", cache_size=4, overwrite=True)
    table = load_split_table(out)
    new_images = read_dermamnist(b)["training"][0]
    first = table.iloc[0]
    assert first["image_id"] == "dermamnist_training_0"
    np.testing.assert_array_equal(load_rgb(first["path"]), new_images[0])
    np.testing.assert_array_equal(load_rgb(first["cache_path"]), resize_center_crop(new_images[0], 4))


# ------------------------------------------------------------------------------------------------ end to end
def test_prepare_dermoscopy_split_end_to_end_and_refuses_overwrite(tmp_path: Path) -> None:
    rows = HAM_ROWS + [(f"HAM_{k:04d}", f"ISIC_{k:04d}", "nv", "synthetic", 1 + k % 2) for k in range(20, 40)]
    csv, dirs = write_ham(tmp_path / "ham", rows=[r[:3] + ("synthetic",) + r[4:] for r in rows])
    out = tmp_path / "prepared"
    split_csv = prepare_dermoscopy_split(csv, out, images=f"{dirs[0]},{dirs[1]}", seed=3, cache_size=4)
    raw = pd.read_csv(split_csv, dtype=str)
    assert list(raw.columns) == ["image_id", "lesion_id", "dx", "dx_type", "path", "split", "cache_path"]
    assert raw["cache_path"][0] == "cache_4/ISIC_0001.png"  # relative to the dataset folder
    table = load_split_table(out)
    assert len(table) == 30 and table["lesion_id"].nunique() == 29
    assert table.loc[table["image_id"] == "ISIC_0003", "split"].item() == table.loc[
        table["image_id"] == "ISIC_0004", "split"].item()
    assert Image.open(table["cache_path"][0]).size == (4, 4)
    settings = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert settings["data_provenance"] == "synthetic" and settings["seed"] == 3
    assert settings["lesion_ids_known"] is True  # HAM10000's lesion_id: the split is lesion-disjoint
    assert "No lesion is in two splits." in (out / "split_stats.md").read_text(encoding="utf-8")
    assert settings["n_images"] == 30 and settings["n_lesions"] == 29
    assert sum(settings["n_images_per_split"].values()) == 30
    stats = pd.read_csv(out / "split_stats.csv").set_index("class")
    assert stats.loc["nv", "total"] == 23 and stats.loc["total", "total"] == 30
    assert "synthetic data" in (out / "split_stats.md").read_text(encoding="utf-8")
    assert len(load_split_table(out / "split.csv", split="test")) == settings["n_images_per_split"]["test"]
    with pytest.raises(DataError, match=r"split\.csv: output already exists"):
        prepare_dermoscopy_split(csv, out, images=dirs, seed=3)
    prepare_dermoscopy_split(csv, out, images=dirs, seed=4, overwrite=True)
    assert json.loads((out / "split.json").read_text(encoding="utf-8"))["seed"] == 4
    # the split file is checked when read: a listed image that disappeared, a lesion in two splits
    Path(table["path"][1]).unlink()
    with pytest.raises(DataError, match=r"split\.csv:row 3: path .*ISIC_0002\.jpg does not exist"):
        load_split_table(out)
    raw = pd.read_csv(split_csv, dtype=str)
    raw.loc[raw["image_id"] == "ISIC_0004", "split"] = "test" if raw["split"][2] != "test" else "training"
    raw.to_csv(split_csv, index=False)
    with pytest.raises(DataError, match="lesion_id HAM_0003 is in both"):
        load_split_table(out, check_files=False)



@pytest.mark.parametrize("header, lesion_column, known", [("path,label", "", False),
                                                          ("path,label,lesion_id", ",L{k}", True)])
def test_prepare_says_when_lesion_ids_were_unknown(tmp_path: Path, header: str, lesion_column: str,
                                                   known: bool) -> None:
    """Without lesion ids (lesion_id = image_id: path,label without lesion_id, ISIC 2018 without --lesion_groups,
    DermaMNIST) the split is by image: split.json and split_stats.md must not call it lesion-disjoint."""
    lines = [header]
    for k in range(12):
        dx = ("nv", "mel", "bkl")[k % 3]
        write_jpeg(tmp_path / "src" / f"p{k}.jpg", COLOUR[dx])
        lines.append(f"p{k}.jpg,{dx}" + lesion_column.format(k=k))
    listing = tmp_path / "src" / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    prepare_dermoscopy_split(listing, out, format="path_label", val=0.25, test=0.25)
    settings = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert settings["lesion_ids_known"] is known and settings["group"] == "lesion_id"
    footer = (out / "split_stats.md").read_text(encoding="utf-8")
    if known:
        assert "No lesion is in two splits." in footer
    else:
        assert "No lesion is in two splits" not in footer
        assert "Lesion ids were unknown" in footer and "images of one lesion may be in two splits" in footer


def test_prepare_refuses_a_requested_split_left_empty_and_records_empty_classes(tmp_path: Path, caplog) -> None:
    """A 4-image set would be "training 4, validation 0, test 0" (each class has < 3 lesions, so all stay in
    training): refused, naming the input, before anything is written. A class missing from a split (here: every
    class but nv has one lesion) is warned about and recorded in split.json and split_stats.md."""
    rows = [("HAM_0001", "ISIC_0001", "mel", "histo", 1), ("HAM_0002", "ISIC_0002", "nv", "histo", 1),
            ("HAM_0003", "ISIC_0003", "nv", "histo", 2), ("HAM_0004", "ISIC_0004", "bkl", "histo", 2)]
    csv, dirs = write_ham(tmp_path / "small", rows=rows)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare_dermoscopy_split(csv, out, images=dirs)
    assert str(err.value).startswith(f"{csv}: split(s) validation, test would be empty: 4 images of 4 lesions")
    assert "--val 0 / --test 0" in str(err.value)
    assert not out.exists() or not any(out.iterdir())  # nothing written
    # without validation (--val 0) nv's two lesions reach both splits asked for: accepted
    prepare_dermoscopy_split(csv, tmp_path / "no_val", images=dirs, val=0)
    counts = json.loads((tmp_path / "no_val" / "split.json").read_text(encoding="utf-8"))["n_images_per_split"]
    assert counts == {"training": 3, "validation": 0, "test": 1}

    csv, dirs = write_ham(tmp_path / "ham")  # HAM_ROWS: nv has 3 lesions, every other class one
    with pytest.raises(OptionError, match=r"^--seed: must be a whole number ≥ 0, got -1$"):
        prepare_dermoscopy_split(csv, tmp_path / "negative", images=dirs, seed=-1)  # numpy refuses it: a traceback
    assert not (tmp_path / "negative").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mednet"):
        prepare_dermoscopy_split(csv, out, images=dirs, val=0.2, test=0.2, seed=1)
    settings = json.loads((out / "split.json").read_text(encoding="utf-8"))
    single = ["akiec", "bcc", "bkl", "df", "mel", "vasc"]
    assert settings["empty_class_splits"] == {dx: ["validation", "test"] for dx in single}
    warned = [r.getMessage() for r in caplog.records if "has no image in" in r.getMessage()]
    assert len(warned) == 6 and any("class df has no image in validation, test" in m for m in warned)
    assert "No image of: akiec in validation, test;" in (out / "split_stats.md").read_text(encoding="utf-8")


def _path_label_listing(root: Path) -> Path:
    """A ``path,label`` CSV of 12 JPEGs (3 classes) in ``root``."""
    lines = ["path,label"]
    for k in range(12):
        dx = ("nv", "mel", "bkl")[k % 3]
        write_jpeg(root / f"p{k}.jpg", COLOUR[dx])
        lines.append(f"p{k}.jpg,{dx}")
    listing = root / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def test_prepare_refuses_images_and_lesion_groups_a_format_does_not_read(tmp_path: Path) -> None:
    """They would be ignored while split.json recorded them as the source; refused before anything is written."""
    from _bundle_cli import command_in_process

    listing = _path_label_listing(tmp_path / "src")
    groups, _ = write_ham(tmp_path / "ham")  # a lesion grouping file (HAM10000 metadata)
    out = tmp_path / "out"
    with pytest.raises(OptionError) as err:
        prepare_dermoscopy_split(listing, out, images=str(tmp_path / "src"), lesion_groups=groups,
                                 format="path_label")
    assert set(err.value.problems) == {"--images", "--lesion_groups"}
    assert "--format path_label reads no image folder" in err.value.problems["--images"]
    assert err.value.problems["--lesion_groups"].startswith("only --format isic2018 reads lesion groups; "
                                                            "--format path_label ")
    npz = write_dermamnist(tmp_path / "d.npz")
    with pytest.raises(OptionError, match=r"^--images: --format dermamnist reads no image folder"):
        prepare_dermoscopy_split(npz, out, images=str(tmp_path / "src"), format="dermamnist")
    csv, dirs = write_ham(tmp_path / "ham2")
    with pytest.raises(OptionError, match=r"^--lesion_groups: only --format isic2018 .*--format ham10000"):
        prepare_dermoscopy_split(csv, out, images=dirs, lesion_groups=groups)
    assert not out.exists()
    proc = command_in_process(prepare_dermoscopy_split, "--metadata", str(listing), "--out", str(out), "--format",
                              "path_label", "--lesion_groups", str(groups))
    assert proc.returncode == 2 and proc.stderr.startswith("mednet error: --lesion_groups: only --format isic2018")
    assert not out.exists()
    prepare_dermoscopy_split(listing, out, format="path_label", val=0.25, test=0.25)  # without them: accepted
    settings = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert settings["image_dirs"] == [] and settings["lesion_groups"] is None


def test_prepare_refuses_an_out_that_is_a_file(tmp_path: Path) -> None:
    """--out naming a file (or a path under one): one DataError naming it, before anything is read."""
    listing = _path_label_listing(tmp_path / "src")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, overwrite in ((afile, False), (afile, True), (afile / "sub", False)):
        with pytest.raises(DataError, match=rf"^{re.escape(str(afile))}: is a file, not a folder"):
            prepare_dermoscopy_split(listing, out, format="path_label", overwrite=overwrite)
    out = tmp_path / "out"
    out.mkdir()
    (out / "images").write_text("not a folder")  # where --format dermamnist writes its PNGs
    with pytest.raises(DataError, match=rf"^{re.escape(str(out / 'images'))}: is a file, not a folder; choose "
                                        r"another --out$"):
        prepare_dermoscopy_split(write_dermamnist(tmp_path / "d.npz"), out, format="dermamnist")
    assert afile.read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["images"]


def test_dermamnist_too_small_for_the_cache_is_refused_before_any_png(tmp_path: Path, monkeypatch) -> None:
    """28 px images and --cache_size 128: refused naming the .npz before the first PNG, so the corrected run
    (--cache_size 64) is not refused as "output already exists"; a failure while writing leaves no PNG either."""
    npz = write_dermamnist(tmp_path / "dermamnist.npz")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"^{re.escape(str(npz))}: image is 28×28 px, far too small for "
                                        r"--cache_size 128"):
        prepare_dermoscopy_split(npz, out, format="dermamnist", cache_size=128)
    assert not [p for p in tmp_path.rglob("*.png")]
    save, saved = Image.Image.save, []

    def fail_on_the_fifth(self, *args, **kwargs):
        saved.append(1)
        if len(saved) == 5:
            raise OSError("No space left on device")
        return save(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", fail_on_the_fifth)
        with pytest.raises(OSError, match="No space left"):
            prepare_dermoscopy_split(npz, out, format="dermamnist", cache_size=64)
    assert not [p for p in tmp_path.rglob("*.png")] and not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    prepare_dermoscopy_split(npz, out, format="dermamnist", cache_size=64)  # the corrected run, no --overwrite
    table = load_split_table(out)
    assert len(table) == 14 and Image.open(table["cache_path"][0]).size == (64, 64)


def test_dicom_patient_identifiers_never_reach_an_output(tmp_path: Path) -> None:
    rgb = np.full((6, 6, 3), COLOUR["mel"], np.uint8)
    write_dicom(tmp_path / "src" / "lesion_photo.dcm", rgb, "YBR_FULL")
    for k, dx in enumerate(("nv", "nv", "bkl")):
        write_jpeg(tmp_path / "src" / f"p{k}.jpg", COLOUR[dx])
    listing = tmp_path / "src" / "list.csv"
    listing.write_text("path,label\nlesion_photo.dcm,mel\np0.jpg,nv\np1.jpg,nv\np2.jpg,bkl\n")
    out = tmp_path / "out"
    # 4 images, 1–2 lesions per class: too few for validation and test (refused), so all go to training
    prepare_dermoscopy_split(listing, out, format="path_label", cache_size=4, val=0, test=0)
    table = load_split_table(out)
    assert "lesion_photo" in set(table["image_id"])  # the DICOM's id is its file stem
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) == 4 + 4  # split.csv, split_stats.csv/.md, split.json + 4 cached PNGs
    for p in written:
        content = p.read_bytes()
        assert b"Doe" not in content and b"PID-98765" not in content, p


@pytest.mark.slow  # a fresh interpreter imports torch and MONAI (several seconds on a busy CPU)
def test_cli_end_to_end_with_images_as_separate_values(tmp_path: Path) -> None:
    csv, dirs = write_ham(tmp_path / "ham")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "data_prep.dermoscopy", "--metadata", str(csv), "--images", str(dirs[0]),
            str(dirs[1]), "--out", str(out), "--val", "0.2", "--test", "0.2", "--seed", "1"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(load_split_table(out)) == 10  # images from both folders
    assert json.loads((out / "split.json").read_text(encoding="utf-8"))["fractions"] == {"validation": 0.2, "test": 0.2}


def test_cli_usage_names_every_option() -> None:
    """The usage text of ``python -m data_prep.dermoscopy`` lists every flag the command takes (--allow_missing was
    missing)."""
    import inspect

    import data_prep.dermoscopy as command

    usage = command.__doc__.split("Writes ``OUT/split.csv``")[0]
    missing = [name for name in inspect.signature(prepare_dermoscopy_split).parameters if f"--{name}" not in usage]
    assert not missing, missing


def test_cli_joins_image_folders_for_fire() -> None:
    from data_prep.dermoscopy import join_list_flag

    # fire alone would give `b` to the next parameter, and keep only the last of repeated flags
    assert join_list_flag(["--metadata", "m.csv", "--images", "a", "b", "--out", "o", "--images=c", "--overwrite"]) \
        == ["--metadata", "m.csv", "--images", "a,b,c", "--out", "o", "--overwrite"]
    assert join_list_flag(["--images", "a,b", "--out", "o"]) == ["--images", "a,b", "--out", "o"]
    assert join_list_flag(["m.csv", "o"]) == ["m.csv", "o"]


def test_dermamnist_overwrite_interrupted_after_the_images_leaves_no_old_table_over_new_images(
        tmp_path: Path, monkeypatch) -> None:
    """data_prep.dermoscopy --format dermamnist --overwrite replaces the PNGs, then writes the cache and split.csv:
    Ctrl-C in between left the old split.csv labelling the new file's images. The old table now goes with the old
    images, so what is left says "prepare the split" rather than training on wrong labels; a re-run completes."""
    import mednet.data.lesion_split as lesion_split

    a = write_dermamnist(tmp_path / "a.npz", seed=0)
    b = write_dermamnist(tmp_path / "b.npz", n={"train": 8, "val": 3, "test": 4}, seed=1)  # other pixels, rows
    out = tmp_path / "out"
    lesion_split.prepare_dermoscopy_split(a, out, format="dermamnist", cache_size=28)
    old_table = (out / "split.csv").read_text(encoding="utf-8")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lesion_split, "write_resized_cache", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lesion_split.prepare_dermoscopy_split(b, out, format="dermamnist", cache_size=28, overwrite=True)
    monkeypatch.undo()
    assert not (out / "split.csv").exists() and not (out / "split.json").exists()
    with pytest.raises(DataError):
        lesion_split.load_split_table(out)
    csv = lesion_split.prepare_dermoscopy_split(b, out, format="dermamnist", cache_size=28, overwrite=True)
    assert csv.read_text(encoding="utf-8") != old_table and len(lesion_split.load_split_table(out)) > 0
