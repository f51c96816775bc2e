"""Tests for :mod:`mednet.data.datalist` (decathlon-style datalists, split by volume)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mednet.data.datalist import SPLITS, check_disjoint_splits, find_datalist, load_datalist, write_datalist
from mednet.errors import DataError


@pytest.fixture
def dataset(tmp_path) -> Path:
    """``tmp_path/data/datalist.json`` listing files under ``tmp_path/data/vols`` with relative paths."""
    root = tmp_path / "data"
    (root / "vols").mkdir(parents=True)
    for name in ("a", "b", "c"):
        for kind in ("img", "lab", "mask"):
            (root / "vols" / f"{name}_{kind}.nii.gz").write_bytes(b"\x00")
    content = {
        "name": "toy",
        "training": [
            {"image": "vols/a_img.nii.gz", "label": "vols/a_lab.nii.gz", "mask": "vols/a_mask.nii.gz", "subject": "a"}
        ],
        "validation": [{"image": "vols/b_img.nii.gz", "label": "vols/b_lab.nii.gz"}],
        "test": [],
    }
    (root / "datalist.json").write_text(json.dumps(content))
    return root


def _write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


# ------------------------------------------------------------------ loading


def test_relative_paths_resolved_against_json_folder(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # cwd is not the JSON's folder
    items = load_datalist(dataset / "datalist.json", "training")
    assert items == [
        {
            "image": str(dataset / "vols" / "a_img.nii.gz"),
            "label": str(dataset / "vols" / "a_lab.nii.gz"),
            "mask": str(dataset / "vols" / "a_mask.nii.gz"),
            "subject": "a",
        }
    ]
    for key in ("image", "label", "mask"):
        assert os.path.isabs(items[0][key]) and Path(items[0][key]).is_file()


def test_directory_or_json_path_both_work(dataset):
    assert load_datalist(dataset, "validation") == load_datalist(dataset / "datalist.json", "validation")
    assert load_datalist(str(dataset), "validation")[0]["image"] == str(dataset / "vols" / "b_img.nii.gz")


def test_absolute_paths_kept(dataset, tmp_path):
    other = tmp_path / "elsewhere.nii.gz"
    other.write_bytes(b"\x00")
    path = _write_json(dataset / "abs.json", {"training": [{"image": str(other)}]})
    assert load_datalist(path, "training") == [{"image": str(other)}]


@pytest.mark.parametrize("split", ["test", "nonexistent"])
def test_missing_or_empty_split(dataset, split):
    path = dataset / "datalist.json"
    with pytest.raises(DataError) as err:
        load_datalist(dataset, split)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert f"split '{split}' is missing or empty" in msg
    assert "present: ['training', 'validation']" in msg
    assert load_datalist(dataset, split, required=False) == []


def test_missing_listed_file_is_named(dataset):
    (dataset / "vols" / "b_lab.nii.gz").unlink()
    missing = dataset / "vols" / "b_lab.nii.gz"
    with pytest.raises(DataError) as err:
        load_datalist(dataset, "validation")
    assert err.value.path == str(missing)
    assert str(err.value).startswith(f"{missing}: ")
    assert "validation[0].label" in str(err.value) and "does not exist" in str(err.value)
    assert str(dataset / "datalist.json") in str(err.value)
    load_datalist(dataset, "training")  # other splits unaffected


def test_missing_image_is_named(dataset):
    (dataset / "vols" / "a_img.nii.gz").unlink()
    with pytest.raises(DataError, match=r"a_img\.nii\.gz: listed as training\[0\]\.image"):
        load_datalist(dataset, "training")


def test_missing_mask_is_an_error(dataset):
    (dataset / "vols" / "a_mask.nii.gz").unlink()
    with pytest.raises(DataError) as err:
        load_datalist(dataset, "training")
    assert "a_mask.nii.gz" in str(err.value) and "training[0].mask" in str(err.value)


def test_missing_mask_is_named_by_its_resolved_path(dataset):
    (dataset / "vols" / "a_mask.nii.gz").unlink()
    with pytest.raises(DataError) as err:
        load_datalist(dataset, "training")
    assert err.value.path == str(dataset / "vols" / "a_mask.nii.gz")


def test_mask_is_not_looked_up_in_cwd(dataset, tmp_path, monkeypatch):
    (dataset / "vols" / "a_mask.nii.gz").unlink()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vols").mkdir()
    (tmp_path / "vols" / "a_mask.nii.gz").write_bytes(b"\x00")  # an unrelated file at cwd/vols/
    with pytest.raises(DataError):
        load_datalist(dataset, "training")


def test_relative_datalist_argument_gives_absolute_paths(dataset, monkeypatch):
    monkeypatch.chdir(dataset.parent)
    items = load_datalist("data", "training")
    assert os.path.isabs(items[0]["image"])


def test_volume_in_two_splits(dataset):
    content = json.loads((dataset / "datalist.json").read_text(encoding="utf-8"))
    content["test"] = [{"image": "vols/./a_img.nii.gz"}]  # same file, spelled differently
    path = _write_json(dataset / "leaky.json", content)
    with pytest.raises(DataError) as err:
        load_datalist(path, "validation")  # checked whatever split is asked for
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert "a_img.nii.gz" in msg and "'training'" in msg and "'test'" in msg


@pytest.mark.parametrize("spelling", ["absolute", "dotdot", "symlink"])
def test_volume_in_two_splits_written_as_another_path(dataset, spelling):
    content = json.loads((dataset / "datalist.json").read_text(encoding="utf-8"))
    volume = dataset / "vols" / "a_img.nii.gz"
    if spelling == "symlink":
        (dataset / "link.nii.gz").symlink_to(volume)
    other = {"absolute": str(volume), "dotdot": f"../{dataset.name}/vols/a_img.nii.gz", "symlink": "link.nii.gz"}[spelling]
    content["validation"] = [{"image": other}]
    path = _write_json(dataset / f"leaky_{spelling}.json", content)
    with pytest.raises(DataError, match="is in both 'training' and 'validation'"):
        load_datalist(path, "training")


def test_volume_twice_in_one_split():
    with pytest.raises(DataError, match="listed twice in 'training'"):
        check_disjoint_splits({"training": [{"image": "x.nii"}, {"image": "x.nii"}]}, "dl.json")
    check_disjoint_splits({"training": [{"image": "x.nii"}], "validation": [{"image": "y.nii"}], "test": None})


def test_invalid_json(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text('{"training": [')
    with pytest.raises(DataError) as err:
        load_datalist(tmp_path, "training")
    assert str(err.value).startswith(f"{path}: ") and "not valid JSON" in str(err.value)


def test_datalist_with_a_bom_is_read_and_non_utf8_is_named(tmp_path):
    """Windows Notepad saves UTF-8 with a BOM; a Latin-1 file is refused naming it (not a bare UnicodeDecodeError)."""
    path = tmp_path / "datalist.json"
    (tmp_path / "a.nii.gz").write_bytes(b"")
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"training": [{"image": "a.nii.gz"}]}).encode())
    assert [Path(d["image"]).name for d in load_datalist(path, "training")] == ["a.nii.gz"]
    path.write_bytes(json.dumps({"training": [{"image": "caf\u00e9.nii.gz"}]}).encode().replace(b"\\u00e9", b"\xe9"))
    with pytest.raises(DataError) as err:
        load_datalist(path, "training")
    assert str(err.value).startswith(f"{path}: not UTF-8 text")


def test_json_that_is_not_an_object(tmp_path):
    path = _write_json(tmp_path / "list.json", [{"image": "a.nii"}])
    with pytest.raises(DataError, match="must be a JSON object"):
        load_datalist(path, "training")


def test_item_without_image_key_is_a_data_error(tmp_path):
    (tmp_path / "lab.nii").write_bytes(b"\x00")
    path = _write_json(tmp_path / "dl.json", {"training": [{"label": "lab.nii"}]})
    with pytest.raises(DataError, match=r"training\[0\] has no 'image' key"):
        load_datalist(path, "training")



@pytest.mark.parametrize("content, problem", [
    ({"training": "a.nii.gz"}, "'training' must be a list of items ({\"image\": path, …} or an image path), got a string "
                               '"a.nii.gz"'),
    ({"training": {"image": "a.nii.gz"}}, "'training' must be a list of items ({\"image\": path, …} or an image "
                                          'path), got an object {"image": "a.nii.gz"}'),
    ({"training": [{"image": "a.nii.gz"}, 5]}, "training[1] must be an object with an 'image' path or an image path, "
                                               "got a number 5"),
    ({"training": [{"image": ["a.nii.gz"]}]}, 'training[0].image must be a path (a string), got an array ["a.nii.gz"]'),
    ({"training": [{"image": "a.nii.gz", "label": 3}]}, "training[0].label must be a path (a string), got a number 3"),
])
def test_a_malformed_datalist_names_the_split_or_item(tmp_path, content, problem):
    """Not "listed twice" (a string split read letter by letter), a missing file called "image" (an object split
    read by its keys) or a bare TypeError: the error says which entry is not the decathlon shape."""
    (tmp_path / "a.nii.gz").write_bytes(b"\x00")
    path = _write_json(tmp_path / "dl.json", content)
    with pytest.raises(DataError) as err:
        load_datalist(path, "training")
    assert str(err.value) == f"{path.resolve()}: {problem}"

# ------------------------------------------------------------------ find_datalist


def test_find_datalist(dataset, tmp_path):
    assert find_datalist(dataset) == dataset / "datalist.json"
    assert find_datalist(dataset / "datalist.json") == dataset / "datalist.json"
    (dataset / "other.json").write_text("{}")
    assert find_datalist(dataset, name="other.json") == dataset / "other.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        find_datalist(empty)
    assert err.value.path == str(empty / "datalist.json")
    assert "datalist not found" in str(err.value)
    with pytest.raises(DataError, match="datalist not found"):
        find_datalist(tmp_path / "missing.json")
    with pytest.raises(DataError, match="datalist not found"):
        load_datalist(empty, "training")


# ------------------------------------------------------------------ writing


def test_write_datalist_relative_paths_and_round_trip(dataset, tmp_path, monkeypatch):
    vols = dataset / "vols"
    splits = {
        "training": [{"image": str(vols / "a_img.nii.gz"), "label": str(vols / "a_lab.nii.gz"), "subject": "a"}],
        "validation": [{"image": str(vols / "b_img.nii.gz"), "mask": str(vols / "b_mask.nii.gz")}],
        "test": [{"image": str(vols / "c_img.nii.gz")}],
    }
    out = tmp_path / "out" / "sub" / "datalist.json"
    assert write_datalist(out, splits, name="toy", labels={"0": "background"}) == out
    content = json.loads(out.read_text(encoding="utf-8"))
    assert content["name"] == "toy" and content["labels"] == {"0": "background"}
    assert content["training"] == [
        {"image": "../../data/vols/a_img.nii.gz", "label": "../../data/vols/a_lab.nii.gz", "subject": "a"}
    ]
    assert content["validation"][0]["mask"] == "../../data/vols/b_mask.nii.gz"
    for split in SPLITS:
        for item in content[split]:
            assert not os.path.isabs(item["image"])
    monkeypatch.chdir(vols)  # resolution must not depend on cwd
    for split in SPLITS:
        assert load_datalist(out, split) == splits[split]


def test_write_datalist_cwd_relative_input(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(dataset)
    out = write_datalist(tmp_path / "dl.json", {"training": [{"image": "vols/a_img.nii.gz"}]})
    assert json.loads(out.read_text(encoding="utf-8"))["training"] == [{"image": "data/vols/a_img.nii.gz"}]
    assert load_datalist(out, "training") == [{"image": str(dataset / "vols" / "a_img.nii.gz")}]


def test_write_datalist_refuses_overwrite(dataset, tmp_path):
    out = tmp_path / "dl.json"
    out.write_text("keep me")
    splits = {"training": [{"image": str(dataset / "vols" / "a_img.nii.gz")}]}
    with pytest.raises(DataError) as err:
        write_datalist(out, splits)
    assert str(err.value).startswith(f"{out}: ") and "already exists" in str(err.value)
    assert out.read_text(encoding="utf-8") == "keep me"
    write_datalist(out, splits, overwrite=True)
    assert json.loads(out.read_text(encoding="utf-8"))["training"][0]["image"].endswith("a_img.nii.gz")


def test_write_datalist_refuses_leaky_splits(dataset, tmp_path):
    img = str(dataset / "vols" / "a_img.nii.gz")
    out = tmp_path / "dl.json"
    with pytest.raises(DataError, match="is in both 'training' and 'validation'"):
        write_datalist(out, {"training": [{"image": img}], "validation": [{"image": img}]})
    assert not out.exists()


def test_write_datalist_refuses_same_volume_spelled_differently(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(dataset)
    out = tmp_path / "dl.json"
    with pytest.raises(DataError, match="is in both"):
        write_datalist(
            out,
            {"training": [{"image": "vols/a_img.nii.gz"}], "validation": [{"image": str(dataset / "vols/a_img.nii.gz")}]},
        )


def test_mask_with_a_datalist_input_is_refused(dataset, tmp_path):
    """--mask names one volume's mask; with a datalist input (inference's default) it was silently dropped."""
    from mednet.data.datalist import list_volume_inputs

    mask = tmp_path / "brain_mask.nii.gz"
    with pytest.raises(DataError, match=r"^.*brain_mask\.nii\.gz: --mask applies to a single input volume, not to the datalist"):
        list_volume_inputs(dataset / "datalist.json", mask=mask, split="training")
    items = list_volume_inputs(dataset / "datalist.json", split="training")  # the datalist's own masks are used
    assert [Path(it["mask"]).name for it in items] == ["a_mask.nii.gz"]


def test_mask_with_a_folder_input_is_refused(dataset, tmp_path):
    """--mask names one volume's mask; a folder of volumes would have it silently applied to (or dropped for) all."""
    from mednet.data.datalist import list_volume_inputs

    mask = tmp_path / "brain_mask.nii.gz"
    with pytest.raises(DataError) as err:
        list_volume_inputs(dataset / "vols", mask=mask)
    assert str(err.value).startswith(f"{mask}: --mask applies to a single input volume, not a folder"), err.value
    assert "datalist with 'mask' entries" in str(err.value)  # what to do instead
    assert len(list_volume_inputs(dataset / "vols")) == 9  # the same folder without --mask: one item per volume
    (item,) = list_volume_inputs(dataset / "vols" / "a_img.nii.gz", mask=mask)  # one volume: --mask is its mask
    assert item["mask"] == str(mask)


def test_empty_label_or_mask_means_none_and_an_empty_image_is_refused(dataset):
    """An empty "label" used to resolve to the datalist's own folder, so the volume counted as labelled."""
    content = json.loads((dataset / "datalist.json").read_text())
    content["test"] = [{"image": "vols/c_img.nii.gz", "label": "", "mask": None}]
    _write_json(dataset / "datalist.json", content)
    assert load_datalist(dataset, "test") == [{"image": str(dataset / "vols" / "c_img.nii.gz")}]
    content["test"] = [{"image": ""}]
    _write_json(dataset / "datalist.json", content)
    with pytest.raises(DataError, match=r"datalist\.json: test\[0\]\.image is empty"):
        load_datalist(dataset, "test")


def test_output_folder_inside_a_folder_input_is_refused(tmp_path):
    """Segmentations written into the scanned folder would be read as scans by the next run."""
    from mednet.data.datalist import list_volume_inputs

    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.nii.gz").write_bytes(b"\x00")
    for out in (scans, scans / "seg"):
        with pytest.raises(DataError, match=r"is inside the input folder .*scans: a later run would read"):
            list_volume_inputs(scans, output_dir=out)
    assert [it["name"] for it in list_volume_inputs(scans, output_dir=tmp_path / "predictions")] == ["a"]
    single = list_volume_inputs(scans / "a.nii.gz", output_dir=scans)  # one file: its folder may hold the output
    assert single[0]["image"].endswith("a.nii.gz")
