"""Clinician feedback → merged training split → gated retraining.

Recording (atomic, file-locked appends from processes and threads at once; images stored once by pixel hash;
no DICOM names), the merge into a new split (deduplicated against every split, provenance, held-out rows
unchanged, the source never written), the promotion rule, and one retraining end to end on a tiny synthetic set.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _dermoscopy_fixtures import synthetic_split

from mednet.data.dermoscopy import load_rgb
from mednet.data.feedback import (
    FEEDBACK_COLUMNS,
    FEEDBACK_DAMAGED,
    NEAR_DUPLICATE_DISTANCE,
    append_feedback,
    held_out_rows,
    image_sha256,
    merge_feedback,
    perceptual_hash,
    perceptual_distance,
    read_feedback,
)
from mednet.errors import DataError, OptionError

ROWS_PER_WORKER = 25


def _image(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _worker_image(worker: int, i: int) -> np.ndarray:
    """Every third row of every worker flags the same image; the others one of two images of the worker."""
    return _image(0) if i % 3 == 0 else _image(100 * worker + i % 3)


def _append_many(folder: str, worker: int, barrier=None) -> None:
    """Append ROWS_PER_WORKER flags (module level: a spawned process imports it)."""
    if barrier is not None:
        barrier.wait(timeout=120)
    for i in range(ROWS_PER_WORKER):
        append_feedback(folder, _worker_image(worker, i), model_run=f"run-{worker}", predicted="nv",
                        probability=0.5, corrected="mel", comment=f'worker {worker}, "flag" {i}\nsecond line',
                        source_name=f"w{worker}_{i}.jpg")


# ---------------------------------------------------------------------------------------------------- recording
def test_append_read_round_trip_stores_each_image_once_and_no_dicom_name(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    photo, scan = _image(1), _image(2, 36, 36)
    row = append_feedback(folder, photo, model_run="runs/train-x", predicted="nv", probability=0.73,
                          corrected="mel", comment="  looks like\r\nmelanoma ", source_name="C:\\Users\\dr\\lesion 1.jpg")
    append_feedback(folder, photo, model_run="runs/train-x", predicted="nv", probability=0.73, corrected="bkl")
    append_feedback(folder, scan, model_run="runs/train-x", predicted="bcc", probability=0.41, corrected="akiec",
                    source_name="/pacs/DOE^JOHN_1234567.dcm")
    append_feedback(folder, scan, model_run="runs/train-x", predicted="bcc", probability=0.41, corrected="akiec",
                    source_name="IMG0001_SMITH", is_dicom=True)
    assert row["image_sha256"] == image_sha256(photo) and row["probability"] == 0.73

    table = read_feedback(folder)
    assert list(table.columns) == list(FEEDBACK_COLUMNS) and len(table) == 4
    assert table.loc[0, "source_name"] == "lesion 1.jpg"  # base name only
    assert table.loc[0, "comment"] == "looks like melanoma"
    assert list(table["corrected"]) == ["mel", "bkl", "akiec", "akiec"]
    assert table["probability"].tolist() == pytest.approx([0.73, 0.73, 0.41, 0.41])
    assert list(table["source_name"][2:]) == ["dicom", "dicom"]
    text = (folder / "feedback.csv").read_text(encoding="utf-8")
    assert "DOE" not in text and "SMITH" not in text and "Users" not in text

    pngs = sorted((folder / "images").iterdir())
    assert [p.name for p in pngs] == sorted(f"{image_sha256(a)}.png" for a in (photo, scan))  # once per image
    assert all(table["image_file"].map(lambda f: (folder / f).is_file()))
    stored = load_rgb(folder / table.loc[0, "image_file"])
    assert np.array_equal(stored, photo) and image_sha256(stored) == table.loc[0, "image_sha256"]


def test_concurrent_appends_from_two_processes_and_threads_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)  # two processes + this one: start together once the children have imported
    processes = [ctx.Process(target=_append_many, args=(str(folder), w, barrier)) for w in (1, 2)]
    for p in processes:
        p.start()
    errors: list[BaseException] = []

    def thread_worker(w: int) -> None:
        try:
            _append_many(str(folder), w)
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=thread_worker, args=(w,)) for w in (3, 4, 5)]
    barrier.wait(timeout=120)
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for p in processes:
        p.join(timeout=120)
    assert not errors, errors
    assert [p.exitcode for p in processes] == [0, 0]

    text = (folder / "feedback.csv").read_text(encoding="utf-8")
    assert text.count("timestamp,image_sha256") == 1 and text.startswith("timestamp,image_sha256")
    assert len(text.splitlines()) == 1 + 5 * ROWS_PER_WORKER  # whole lines: the comments were folded
    table = read_feedback(folder)
    assert len(table) == 5 * ROWS_PER_WORKER
    assert table["model_run"].value_counts().to_dict() == {f"run-{w}": ROWS_PER_WORKER for w in range(1, 6)}
    expected = {f'worker {w}, "flag" {i} second line' for w in range(1, 6) for i in range(ROWS_PER_WORKER)}
    assert set(table["comment"]) == expected
    for w in range(1, 6):
        mine = table[table["model_run"] == f"run-{w}"]
        assert list(mine["source_name"]) == [f"w{w}_{i}.jpg" for i in range(ROWS_PER_WORKER)]  # in order per worker
    hashes = {image_sha256(_worker_image(w, i)) for w in range(1, 6) for i in range(ROWS_PER_WORKER)}
    assert set(table["image_sha256"]) == hashes
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(f"{h}.png" for h in hashes)


def test_bad_input_is_refused_with_what_to_fix(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    common = dict(model_run="r", predicted="nv", probability=0.5)
    with pytest.raises(OptionError, match="melanoma"):
        append_feedback(folder, _image(1), **common, corrected="melanoma")
    with pytest.raises(OptionError, match="probability"):
        append_feedback(folder, _image(1), **{**common, "probability": 1.5}, corrected="mel")
    with pytest.raises(OptionError, match="comment: too long"):
        append_feedback(folder, _image(1), **common, corrected="mel", comment="x" * 501)
    with pytest.raises(DataError, match="uint8"):
        append_feedback(folder, _image(1).astype(np.float32), **common, corrected="mel")
    assert not (folder / "feedback.csv").exists()

    folder.mkdir(exist_ok=True)
    bad = folder / "feedback.csv"
    bad.write_text(",".join(c for c in FEEDBACK_COLUMNS if c != "corrected") + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column") as info:
        read_feedback(folder)
    assert str(bad) in str(info.value) and "corrected" in str(info.value)
    with pytest.raises(DataError, match="not a feedback table"):  # never appended to a foreign table
        append_feedback(folder, _image(1), **common, corrected="mel")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'elsewhere'}: feedback folder not found$"):
        read_feedback(tmp_path / "elsewhere")  # a mistyped folder is not "no feedback yet"
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match=r"elsewhere/feedback\.csv: no feedback recorded here"):
        read_feedback(tmp_path / "elsewhere")


def test_a_row_cut_inside_a_quoted_comment_does_not_swallow_later_rows(tmp_path: Path, caplog) -> None:
    """The server died while writing a row, inside its quoted comment: the next append moves that cut row aside
    (logged, kept in feedback.csv.damaged) instead of leaving a quote open that would swallow every later row."""
    folder = tmp_path / "feedback"
    common = dict(model_run="run-a", predicted="nv", probability=0.5)
    append_feedback(folder, _image(61), corrected="mel", **common)
    append_feedback(folder, _image(62), corrected="bcc", comment="looks, like bcc", **common)
    table_csv = folder / "feedback.csv"
    data = table_csv.read_bytes()
    table_csv.write_bytes(data[: data.rindex(b"like b") + len(b"like b")])  # cut inside "looks, like bcc"
    with caplog.at_level("WARNING", logger="mednet"):
        append_feedback(folder, _image(63), corrected="df", **common)
        append_feedback(folder, _image(64), corrected="vasc", **common)
    table = read_feedback(folder)
    assert list(table["corrected"]) == ["mel", "df", "vasc"]
    assert list(table["image_sha256"]) == [image_sha256(_image(i)) for i in (61, 63, 64)]
    damaged = (folder / FEEDBACK_DAMAGED).read_bytes()
    assert damaged.endswith(b'"looks, like b\n') and damaged.count(b"\n") == 1
    assert "cut short" in caplog.text and FEEDBACK_DAMAGED in caplog.text

    # a whole last row without its line break (the table was edited by hand) is kept, not moved
    table_csv.write_bytes(table_csv.read_bytes().rstrip(b"\n"))
    append_feedback(folder, _image(65), corrected="akiec", **common)
    assert list(read_feedback(folder)["corrected"]) == ["mel", "df", "vasc", "akiec"]
    assert (folder / FEEDBACK_DAMAGED).read_bytes() == damaged
    # hand-edited: a quoted comment over two lines and no final line break — a whole row, kept
    import csv as csv_module

    rows = list(csv_module.reader(table_csv.open(encoding="utf-8", newline="")))
    rows[-1][7] = "line one\nline two"  # the comment column
    with table_csv.open("w", encoding="utf-8", newline="") as f:
        csv_module.writer(f, lineterminator="\n").writerows(rows)
    table_csv.write_bytes(table_csv.read_bytes().rstrip(b"\n"))
    append_feedback(folder, _image(67), corrected="bkl", **common)
    assert list(read_feedback(folder)["corrected"]) == ["mel", "df", "vasc", "akiec", "bkl"]
    assert (folder / FEEDBACK_DAMAGED).read_bytes() == damaged  # nothing moved
    # the very first append died inside the header: the next one starts the table again
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "feedback.csv").write_bytes(b"timestamp,image_sha2")
    append_feedback(fresh, _image(66), corrected="bkl", **common)
    assert list(read_feedback(fresh)["corrected"]) == ["bkl"]


def test_a_refused_flag_leaves_no_image_behind(tmp_path: Path, monkeypatch) -> None:
    """The page says "not recorded" (another table's header, the lock held, a full disk): no patient image may stay
    in images/ — but an image an earlier flag stored stays."""
    import mednet.data.feedback as feedback_module
    from filelock import Timeout

    folder = tmp_path / "feedback"
    images = folder / "images"
    common = dict(model_run="run-a", predicted="nv", probability=0.5, corrected="mel")
    folder.mkdir()
    (folder / "feedback.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match="not a feedback table"):
        append_feedback(folder, _image(71), **common)
    assert not images.exists() or not any(images.iterdir())
    assert (folder / "feedback.csv").read_text(encoding="utf-8") == "a,b\n1,2\n"  # not cut, not appended to

    (folder / "feedback.csv").unlink()
    append_feedback(folder, _image(72), **common)
    kept = sorted(images.iterdir())
    monkeypatch.setattr(feedback_module, "_LOCK_TIMEOUT_S", 0.2)
    with feedback_module._lock(folder), pytest.raises(Timeout):  # another writer holds the lock
        append_feedback(folder, _image(73), **common)
    assert sorted(images.iterdir()) == kept

    def full(f, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feedback_module, "_write_row", full)
    for seed in (73, 72):  # a new image: removed again; the earlier flag's image: kept
        with pytest.raises(OSError, match="No space left"):
            append_feedback(folder, _image(seed), **common)
    assert sorted(images.iterdir()) == kept == [images / f"{image_sha256(_image(72))}.png"]
    monkeypatch.undo()
    assert list(read_feedback(folder)["image_sha256"]) == [image_sha256(_image(72))]


# ---------------------------------------------------------------------------------------------------- merge
@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory) -> Path:
    return synthetic_split(tmp_path_factory.mktemp("feedback_data"), n_images=60, size=32, seed=1)


def test_merge_adds_new_images_as_training_and_skips_duplicates(tiny_split: Path, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    from data_prep.feedback import main
    from mednet.data.lesion_split import load_split_table

    original = load_split_table(tiny_split)
    before = {p.name: p.read_bytes() for p in tiny_split.iterdir() if p.is_file()}
    test_row = original[original["split"] == "test"].iloc[0]
    other = next(c for c in ("mel", "nv") if c != test_row["dx"])
    feedback, new_image = tmp_path / "feedback", _image(7)
    common = dict(predicted="nv", probability=0.6)
    append_feedback(feedback, load_rgb(test_row["path"]), model_run="run-a", corrected=other, **common)
    append_feedback(feedback, new_image, model_run="run-a", corrected="bcc", **common)
    append_feedback(feedback, new_image, model_run="run-b", corrected="mel", **common)  # the latest flag wins

    out = tmp_path / "merged"
    csv = merge_feedback(feedback, tiny_split, out)
    assert csv == out / "split.csv"
    assert {p.name: p.read_bytes() for p in tiny_split.iterdir() if p.is_file()} == before  # source untouched
    info = json.loads((out / "merge.json").read_text(encoding="utf-8"))
    assert (info["feedback_rows"], info["flagged_images"], info["superseded_flags"]) == (3, 2, 1)
    assert (info["added"], info["duplicates_skipped"], info["label_conflicts"]) == (1, 1, 1)
    assert info["duplicates_per_split"] == {"training": 0, "validation": 0, "test": 1}
    assert info["duplicates"][0]["image_id"] == test_row["image_id"]
    assert info["added_per_class"]["mel"] == 1 and sum(info["added_per_class"].values()) == 1

    merged = load_split_table(out)
    assert len(merged) == len(original) + 1
    assert held_out_rows(merged).equals(held_out_rows(original))
    head = merged.iloc[: len(original)].reset_index(drop=True)
    pd.testing.assert_frame_equal(head[list(original.columns)], original.reset_index(drop=True), check_like=False)
    assert set(head["provenance"]) == {"original"}
    training = load_split_table(out, "training")
    added = training[training["image_id"].str.startswith("feedback_")]
    assert len(added) == 1
    row = added.iloc[0]
    digest = image_sha256(new_image)
    assert row["image_id"] == row["lesion_id"] == f"feedback_{digest[:12]}"
    assert (row["dx"], row["split"], row["dx_type"]) == ("mel", "training", "feedback")
    assert Path(row["path"]) == (feedback / "images" / f"{digest}.png").resolve()
    assert row["provenance"].startswith("feedback:") and row["provenance"].endswith(":run-b")
    assert len(pd.read_csv(out / "image_hashes.csv")) == len(merged)
    assert json.loads((out / "split.json").read_text(encoding="utf-8"))["n_images"] == len(merged)

    with pytest.raises(DataError, match="already exists"):
        merge_feedback(feedback, tiny_split, out)

    # the command line; a merge from a merged split: the added image is now a training duplicate
    monkeypatch.setattr(sys, "argv", ["data_prep.feedback"])
    main(["merge", "--feedback", str(feedback), "--dataset_dir", str(out), "--out", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "merge.json").read_text(encoding="utf-8"))
    assert again["added"] == 0 and again["duplicates_per_split"] == {"training": 1, "validation": 0, "test": 1}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", "--feedback", str(tmp_path / "none"), "--dataset_dir", str(out), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("mednet error:")


def _times(monkeypatch, *stamps: str) -> None:
    """The next append_feedback calls record these timestamps, in this order (then the clock again)."""
    import mednet.data.feedback as feedback_module

    queue, real = list(stamps), feedback_module._now
    monkeypatch.setattr(feedback_module, "_now", lambda: queue.pop(0) if queue else real())


def test_a_later_flag_relabels_an_image_an_earlier_merge_added(tiny_split: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    """The latest flag (by time) wins across merges for the rows merges add; the original metadata never changes;
    flags naming different classes for one image are listed."""
    from mednet.data.lesion_split import load_split_table

    original = load_split_table(tiny_split)
    test_row = original[original["split"] == "test"].iloc[0]
    other = next(c for c in ("mel", "nv") if c != test_row["dx"])
    image, digest = _image(11), image_sha256(_image(11))
    common = dict(predicted="nv", probability=0.6)
    feedback = tmp_path / "feedback"
    # in the file, the df flag comes first but is the later one: the time decides, not the file order
    _times(monkeypatch, "2026-01-02T10:00:00.000+01:00", "2026-01-02T08:30:00.000+01:00")
    append_feedback(feedback, image, model_run="run-a", corrected="df", **common)
    append_feedback(feedback, image, model_run="run-a", corrected="vasc", **common)
    first = json.loads(merge_feedback(feedback, tiny_split, tmp_path / "m1").with_name("merge.json").read_text())
    assert (first["added"], first["added_per_class"]["df"], first["superseded_flags"]) == (1, 1, 1)
    assert first["disagreements"] == [{"image_sha256": digest, "classes": ["vasc", "df"], "chosen": "df", "flags": [
        {"timestamp": "2026-01-02T08:30:00.000+01:00", "model_run": "run-a", "corrected": "vasc"},
        {"timestamp": "2026-01-02T10:00:00.000+01:00", "model_run": "run-a", "corrected": "df"}]}]

    # a clinician re-flags the added image as mel later (and an original test image with another class)
    _times(monkeypatch, "2026-01-03T09:00:00.000+01:00", "2026-01-03T09:01:00.000+01:00")
    append_feedback(feedback, image, model_run="run-b", corrected="mel", **common)
    append_feedback(feedback, load_rgb(test_row["path"]), model_run="run-b", corrected=other, **common)
    info = json.loads(merge_feedback(feedback, tmp_path / "m1", tmp_path / "m2").with_name("merge.json").read_text())
    m1, m2 = load_split_table(tmp_path / "m1"), load_split_table(tmp_path / "m2")
    added = m2[m2["image_id"] == f"feedback_{digest[:12]}"].iloc[0]
    assert (added["dx"], added["split"]) == ("mel", "training")
    assert added["provenance"] == "feedback:2026-01-03T09:00:00.000+01:00:run-b"
    assert (info["added"], info["relabelled"], info["label_conflicts"]) == (0, 1, 1)
    assert info["relabelled_rows"] == [{"image_sha256": digest, "image_id": f"feedback_{digest[:12]}", "from": "df",
                                        "to": "mel", "was": "feedback:2026-01-02T10:00:00.000+01:00:run-a",
                                        "now": "feedback:2026-01-03T09:00:00.000+01:00:run-b"}]
    assert [d["classes"] for d in info["disagreements"]] == [["vasc", "df", "mel"]]
    assert info["disagreements"][0]["chosen"] == "mel"
    conflict = next(d for d in info["duplicates"] if d["split"] == "test")
    assert conflict["label_conflict"] and not conflict["relabelled"]  # the original label stays
    assert m2.loc[m2["image_id"] == test_row["image_id"], "dx"].item() == test_row["dx"]
    assert held_out_rows(m2).equals(held_out_rows(original))
    others = m2["image_id"] != added["image_id"]
    pd.testing.assert_frame_equal(m2[others].reset_index(drop=True), m1[m1["image_id"] != added["image_id"]]
                                  .reset_index(drop=True))  # nothing else changed

    # an older flag from another feedback folder does not undo the later one; the disagreement is listed
    older = tmp_path / "older_feedback"
    _times(monkeypatch, "2025-12-31T23:00:00.000+01:00")
    append_feedback(older, image, model_run="run-c", corrected="nv", **common)
    late = json.loads(merge_feedback(older, tmp_path / "m2", tmp_path / "m3").with_name("merge.json").read_text())
    m3 = load_split_table(tmp_path / "m3")
    assert m3.loc[m3["image_id"] == added["image_id"], "dx"].item() == "mel" and late["relabelled"] == 0
    assert late["label_conflicts"] == 0 and late["duplicates"][0]["relabelled"] is False
    assert [(d["classes"], d["chosen"]) for d in late["disagreements"]] == [(["nv", "mel"], "mel")]


def test_merge_takes_the_image_from_its_hash_never_from_the_image_file_column(tiny_split: Path,
                                                                              tmp_path: Path) -> None:
    """feedback.csv is edited by hand: an image_file pointing elsewhere (even to a copy of the same pixels) is
    refused naming the row, and nothing outside the feedback folder reaches the split."""
    import csv as csv_module
    import shutil

    feedback = tmp_path / "feedback"
    append_feedback(feedback, _image(21), model_run="run-a", predicted="nv", probability=0.5, corrected="mel")
    stored = next((feedback / "images").iterdir())
    outside = shutil.copy(stored, tmp_path / "outside.png")  # same pixels, same hash
    table_csv = feedback / "feedback.csv"
    rows = list(csv_module.reader(table_csv.open(encoding="utf-8", newline="")))
    for i, bad in enumerate([str(outside), f"../{Path(outside).name}", f"images/../../{Path(outside).name}"]):
        rows[1][2] = bad
        with table_csv.open("w", encoding="utf-8", newline="") as f:
            csv_module.writer(f, lineterminator="\n").writerows(rows)
        with pytest.raises(DataError, match=rf"feedback\.csv:row 2: image_file '{re.escape(bad)}' is not "
                                            rf"'images/{stored.stem}\.png'"):
            merge_feedback(feedback, tiny_split, tmp_path / f"merged{i}")
        assert not (tmp_path / f"merged{i}" / "split.csv").exists()

    # with a superseded flag before it, the edited row is still named by its own line (row 4, not row 3)
    append_feedback(feedback, _image(22), model_run="run-a", predicted="nv", probability=0.5, corrected="mel")
    append_feedback(feedback, _image(22), model_run="run-b", predicted="nv", probability=0.5, corrected="bcc")
    rows = list(csv_module.reader(table_csv.open(encoding="utf-8", newline="")))
    rows[1][2] = f"images/{stored.stem}.png"  # row 2 repaired
    rows[3][2] = "images/elsewhere.png"  # the latest flag of image 22, file line 4
    with table_csv.open("w", encoding="utf-8", newline="") as f:
        csv_module.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(DataError, match=r"feedback\.csv:row 4: image_file 'images/elsewhere\.png'"):
        merge_feedback(feedback, tiny_split, tmp_path / "merged_superseded")


def _edit_cell(rows: list[list[str]], column: str, value: str) -> list[list[str]]:
    rows[1][rows[0].index(column)] = value
    return rows


# each edit of a one-flag feedback folder (its csv rows, its stored PNG) → what the refusal says; {csv}, {png} and
# {short_hash} (the first 12 digits of the image's hash) are filled in. Every check runs before the merge writes anything.
HAND_EDITS = {
    "header_only": (lambda rows, png: rows[:1], "{csv}: the feedback file has a header but no rows: nothing to merge"),
    "hash": (lambda rows, png: _edit_cell(rows, "image_sha256", "ab12" * 16 + "zz"),
             "{csv}:row 2: image_sha256 '" + "ab12" * 16 + "zz' is not a SHA-256 hex digest"),
    "class": (lambda rows, png: _edit_cell(rows, "corrected", "melanoma"),
              "{csv}:row 2: unknown corrected class 'melanoma' (expected one of akiec, bcc, bkl, df, mel, nv, vasc)"),
    "timestamp": (lambda rows, png: _edit_cell(rows, "timestamp", "25/11/2026 09:15"),
                  "{csv}:row 2: timestamp '25/11/2026 09:15' is not an ISO 8601 time (the latest flag of an image "
                  "wins, so every flag needs its time)"),
    "probability": (lambda rows, png: _edit_cell(rows, "probability", "0,73"),
                    "{csv}:row 2: probability '0,73' is not a number"),
    "deleted_png": (lambda rows, png: png.unlink() or rows,
                    "{csv}:row 2: image_file images/{png.name} does not exist in {png.parent.parent}"),
    "tampered_png": (lambda rows, png: _overwrite_png(png) or rows,
                     "{png}: its pixels do not match image_sha256 {short_hash}… of {csv}:row 2 (the file was "
                     "changed after it was recorded)"),
}


def _overwrite_png(png: Path) -> None:
    from PIL import Image

    pixels = load_rgb(png)
    pixels[0, 0] = 255 - pixels[0, 0]  # one pixel changed, e.g. by an image editor
    Image.fromarray(pixels).save(png)


@pytest.mark.parametrize("edit", list(HAND_EDITS))
def test_a_hand_edited_feedback_table_is_refused_at_merge_naming_the_row(tiny_split: Path, tmp_path: Path,
                                                                         edit: str) -> None:
    import csv as csv_module

    feedback = tmp_path / "feedback"
    append_feedback(feedback, _image(23), model_run="run-a", predicted="nv", probability=0.73, corrected="mel")
    table_csv, (png,) = feedback / "feedback.csv", list((feedback / "images").iterdir())
    change, expected = HAND_EDITS[edit]
    rows = change(list(csv_module.reader(table_csv.open(encoding="utf-8", newline=""))), png)
    with table_csv.open("w", encoding="utf-8", newline="") as f:
        csv_module.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(DataError) as err:
        merge_feedback(feedback, tiny_split, tmp_path / "merged")
    assert str(err.value) == expected.format(csv=table_csv.resolve(), png=png.resolve(), short_hash=png.stem[:12])
    assert not (tmp_path / "merged").exists()  # refused before the output folder was made


def _resaved(image: np.ndarray, folder: Path, how: str) -> np.ndarray:
    """``image`` as a clinician might upload a copy of it: a JPEG re-save (quality 75) or a bilinear ×2 resize,
    written to a file and decoded with load_rgb, as the web demo decodes an upload."""
    from PIL import Image

    pil = Image.fromarray(image, "RGB")
    path = folder / f"copy_{image_sha256(image)[:8]}_{how}.{'jpg' if how == 'jpeg' else 'png'}"
    if how == "jpeg":
        pil.save(path, format="JPEG", quality=75)
    else:
        pil.resize((2 * image.shape[1], 2 * image.shape[0]), Image.BILINEAR).save(path)
    return load_rgb(path)


def _near_copy(table: pd.DataFrame, split: str, folder: Path, how: str) -> tuple[pd.Series, np.ndarray]:
    """The first ``split`` row whose ``how`` copy is a near-copy by the merge's rule, and that copy.

    The hashes' robustness to each kind of copy is measured by benchmarks/bench_feedback_near_duplicates.py; these
    tests check what the merge does with a near-copy, so they take one the hash recognises."""
    for _, row in table[table["split"] == split].iterrows():
        image = load_rgb(row["path"])
        copy = _resaved(image, folder, how)
        assert image_sha256(copy) != image_sha256(image)  # not an exact duplicate
        if perceptual_distance(perceptual_hash(copy), perceptual_hash(image)) <= NEAR_DUPLICATE_DISTANCE:
            return row, copy
    raise AssertionError(f"no {how} copy of a {split} image is within {NEAR_DUPLICATE_DISTANCE} bits")


def test_near_copies_of_validation_and_test_images_stay_out_of_training(tiny_split: Path, tmp_path: Path,
                                                                       caplog) -> None:
    """A re-saved or resized copy of a held-out image has another SHA-256: it must still not reach training
    (the gate would select and score the retrained model on a lesion it trained on); near-copies of training
    images and unrelated images are added."""
    from mednet.data.lesion_split import load_split_table

    original = load_split_table(tiny_split)
    test_row, test_jpeg = _near_copy(original, "test", tmp_path, "jpeg")
    _, test_resized = _near_copy(original, "test", tmp_path, "resize")
    validation_row, validation_copy = _near_copy(original, "validation", tmp_path, "resize")
    _, training_copy = _near_copy(original, "training", tmp_path, "jpeg")
    unrelated = _image(41, 32, 32)
    feedback = tmp_path / "feedback"
    common = dict(model_run="run-a", predicted="nv", probability=0.6)
    append_feedback(feedback, test_jpeg, corrected="mel", **common)
    append_feedback(feedback, test_jpeg, corrected="bcc", **common)  # two flags that disagree
    for image, corrected in ((test_resized, "mel"), (validation_copy, "bkl"), (training_copy, "df"),
                             (unrelated, "vasc")):
        append_feedback(feedback, image, corrected=corrected, **common)

    with caplog.at_level("WARNING", logger="mednet"):
        merged = load_split_table(merge_feedback(feedback, tiny_split, tmp_path / "merged"))
    info = json.loads((tmp_path / "merged" / "merge.json").read_text(encoding="utf-8"))
    assert (info["flagged_images"], info["added"], info["duplicates_skipped"]) == (5, 2, 0)
    assert info["near_duplicates_skipped"] == 3 and info["near_duplicates_per_split"] == {"validation": 1, "test": 2}
    assert info["near_duplicate_distance"] == NEAR_DUPLICATE_DISTANCE
    listed = {d["image_sha256"]: d for d in info["near_duplicates_held_out"]}
    assert set(listed) == {image_sha256(a) for a in (test_jpeg, test_resized, validation_copy)}
    jpeg = listed[image_sha256(test_jpeg)]
    assert (jpeg["split"], jpeg["image_id"], jpeg["dx"], jpeg["corrected"]) == ("test", test_row["image_id"],
                                                                                 test_row["dx"], "bcc")
    assert 0 <= jpeg["distance"] <= NEAR_DUPLICATE_DISTANCE
    assert listed[image_sha256(validation_copy)]["image_id"] == validation_row["image_id"]
    assert [d["chosen"] for d in info["disagreements"]] == [None]  # in no split: no class chosen
    assert test_row["image_id"] in caplog.text and validation_row["image_id"] in caplog.text

    added = merged[merged["dx_type"] == "feedback"]
    assert set(added["image_id"]) == {f"feedback_{image_sha256(a)[:12]}" for a in (training_copy, unrelated)}
    assert set(added["split"]) == {"training"} and sorted(added["dx"]) == ["df", "vasc"]
    assert held_out_rows(merged).equals(held_out_rows(original))


def _turned_copy(table: pd.DataFrame, split: str, turn, skip: Sequence[str] = ()) -> tuple[pd.Series, np.ndarray]:
    """The first ``split`` row (not in ``skip``) whose ``turn``-ed copy (exact pixels, mirrored or rotated) the rule
    without orientations let through: farther than NEAR_DUPLICATE_DISTANCE by both hashes as uploaded."""
    for _, row in table[table["split"] == split].iterrows():
        image = load_rgb(row["path"])
        copy = np.ascontiguousarray(turn(image))
        if (row["image_id"] not in skip and image_sha256(copy) != image_sha256(image)
                and perceptual_distance(perceptual_hash(copy), perceptual_hash(image)) > NEAR_DUPLICATE_DISTANCE):
            return row, copy
    raise AssertionError(f"every {split} image looks the same turned")


def test_mirrored_and_rotated_copies_of_held_out_images_stay_out_of_training(tiny_split: Path,
                                                                             tmp_path: Path) -> None:
    """phash and dhash change by about half their bits when an image is mirrored or turned by 90°: the merge
    compares the flagged image in its 8 orientations, so such copies of validation and test images stay out of
    training too; a mirrored training image and an unrelated image are added."""
    from mednet.data.lesion_split import load_split_table

    original = load_split_table(tiny_split)
    test_lr, copy_lr = _turned_copy(original, "test", np.fliplr)
    test_rot, copy_rot = _turned_copy(original, "test", np.rot90, skip=[test_lr["image_id"]])
    validation_ud, copy_ud = _turned_copy(original, "validation", np.flipud)
    _, training_lr = _turned_copy(original, "training", np.fliplr)
    unrelated = _image(44, 32, 32)
    feedback = tmp_path / "feedback"
    for image, corrected in ((copy_lr, "mel"), (copy_rot, "bcc"), (copy_ud, "bkl"), (training_lr, "df"),
                             (unrelated, "vasc")):
        append_feedback(feedback, image, model_run="run-a", predicted="nv", probability=0.6, corrected=corrected)

    merged = load_split_table(merge_feedback(feedback, tiny_split, tmp_path / "merged"))
    info = json.loads((tmp_path / "merged" / "merge.json").read_text(encoding="utf-8"))
    assert (info["added"], info["near_duplicates_skipped"]) == (2, 3)
    assert info["near_duplicates_per_split"] == {"validation": 1, "test": 2}
    listed = {d["image_sha256"]: d for d in info["near_duplicates_held_out"]}
    # the orientation that turns each copy back: np.rot90 once more three times, the mirror, upside down
    assert {(d["image_id"], d["orientation"], d["distance"]) for d in listed.values()} == {
        (test_lr["image_id"], "fliplr", 0), (test_rot["image_id"], "rot270", 0),
        (validation_ud["image_id"], "fliplr+rot180", 0)}
    assert set(listed) == {image_sha256(a) for a in (copy_lr, copy_rot, copy_ud)}
    added = merged[merged["dx_type"] == "feedback"]
    assert set(added["image_id"]) == {f"feedback_{image_sha256(a)[:12]}" for a in (training_lr, unrelated)}
    assert held_out_rows(merged).equals(held_out_rows(original))


def test_a_mirrored_or_turned_match_must_be_one_bit_closer() -> None:
    """7 more orientations are 7 more chances for an unrelated lesion to come close (measured: within 4 bits on one
    seed): a match in a mirrored or turned orientation counts TURNED_EXTRA_BITS farther."""
    from mednet.data.feedback import TURNED_EXTRA_BITS, _nearest_held_out

    assert TURNED_EXTRA_BITS == 1
    held_out = np.array([[0, 0], [2**64 - 1, 2**64 - 1]], dtype=np.uint64)
    far, four, three = "8" * 32, ("f" + "0" * 15) * 2, ("7" + "0" * 15) * 2  # 16, 4 and 3 bits from [0, 0]
    assert _nearest_held_out([four] + [far] * 7, held_out) == (0, 4, 0, 4)  # as uploaded: a near-copy (<= 4)
    assert _nearest_held_out([far] * 4 + [four] + [far] * 3, held_out) == (0, 4, 4, 5)  # mirrored: not (> 4)
    assert _nearest_held_out([far] * 5 + [three] * 3, held_out) == (0, 3, 5, 4)  # first of equals
    assert _nearest_held_out([four] * 8, np.zeros((0, 2), dtype=np.uint64)) == (-1, 65, 0, 65)


def test_a_timestamp_saved_with_a_space_does_not_break_later_merges(tiny_split: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """A spreadsheet re-save writes "2026-11-25 09:15:27.413+00:00", which the merge accepts; the provenance it
    writes must then be read back by the next merge: the time is written in one ISO form, and a provenance an
    earlier version wrote with the space is read too."""
    from mednet.data.lesion_split import load_split_table

    image, digest = _image(51), image_sha256(_image(51))
    feedback = tmp_path / "feedback"
    common = dict(model_run="run-a", predicted="nv", probability=0.6)
    _times(monkeypatch, "2026-11-25 09:15:27.413+00:00")
    append_feedback(feedback, image, corrected="df", **common)
    m1 = load_split_table(merge_feedback(feedback, tiny_split, tmp_path / "m1"))
    written = "feedback:2026-11-25T09:15:27.413+00:00:run-a"
    assert m1.loc[m1["image_id"] == f"feedback_{digest[:12]}", "provenance"].item() == written

    _times(monkeypatch, "2026-11-26T10:00:00.000+01:00")
    append_feedback(feedback, image, corrected="mel", **common)  # a later flag relabels the added row
    info = json.loads(merge_feedback(feedback, tmp_path / "m1", tmp_path / "m2").with_name("merge.json").read_text())
    assert info["relabelled_rows"] == [{"image_sha256": digest, "image_id": f"feedback_{digest[:12]}", "from": "df",
                                        "to": "mel", "was": written,
                                        "now": "feedback:2026-11-26T10:00:00.000+01:00:run-a"}]

    legacy = tmp_path / "m1" / "split.csv"  # as the merge wrote it before: the timestamp copied as it was
    old = written.replace("T", " ", 1)
    legacy.write_text(legacy.read_text(encoding="utf-8").replace(written, old), encoding="utf-8")
    info = json.loads(merge_feedback(feedback, tmp_path / "m1", tmp_path / "m3").with_name("merge.json").read_text())
    assert [(r["was"], r["to"]) for r in info["relabelled_rows"]] == [(old, "mel")]


def test_hash_cache_keeps_perceptual_hashes_and_accepts_an_old_cache(tiny_split: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """image_hashes.csv holds each image's perceptual hashes, so a later merge decodes only the flagged images; a
    cache written before that column existed is still read (its images hashed again)."""
    import mednet.data.feedback as feedback_module
    from mednet.data.lesion_split import load_split_table

    original = load_split_table(tiny_split)
    _, copy = _near_copy(original, "test", tmp_path, "jpeg")
    feedback = tmp_path / "feedback"
    for image, corrected in ((copy, "mel"), (_image(42, 32, 32), "nv")):
        append_feedback(feedback, image, model_run="run-a", predicted="bkl", probability=0.6, corrected=corrected)
    first = merge_feedback(feedback, tiny_split, tmp_path / "m1").parent
    cache = pd.read_csv(first / "image_hashes.csv", dtype=str, keep_default_na=False)
    assert list(cache.columns) == ["path", "size", "mtime_ns", "sha256", "perceptual_hash"] and len(cache) == len(original) + 1
    assert cache["perceptual_hash"].str.fullmatch(r"[0-9a-f]{32}").all()

    decoded: list[str] = []
    real_load = feedback_module.load_rgb
    monkeypatch.setattr(feedback_module, "load_rgb", lambda p: decoded.append(str(p)) or real_load(p))
    again = json.loads(merge_feedback(feedback, first, tmp_path / "m2").with_name("merge.json").read_text())
    assert len(decoded) == 2  # the two flagged images only: every split image's hashes came from the cache
    assert (again["near_duplicates_skipped"], again["duplicates_per_split"]["training"]) == (1, 1)

    cache.drop(columns="perceptual_hash").to_csv(first / "image_hashes.csv", index=False)  # as an older merge wrote it
    decoded.clear()
    old = json.loads(merge_feedback(feedback, first, tmp_path / "m3").with_name("merge.json").read_text())
    assert len(decoded) == len(cache) + 2  # hashed again
    assert old["near_duplicates_held_out"] == again["near_duplicates_held_out"]
    rewritten = pd.read_csv(tmp_path / "m3" / "image_hashes.csv", dtype=str, keep_default_na=False)
    assert (rewritten.set_index("path")["perceptual_hash"].to_dict()
            == cache.set_index("path")["perceptual_hash"].to_dict())


def test_formula_like_comments_and_upload_names_are_written_as_text(tmp_path: Path) -> None:
    """A spreadsheet runs a cell starting with = + - @ as a formula: such free text gets a leading ' (after tabs and
    line breaks became spaces and the spaces around the text were removed: "\\t=1+1" is written "'=1+1")."""
    import csv as csv_module

    folder = tmp_path / "feedback"
    cases = [('=HYPERLINK("http://evil.example","x")', "@SUM(A1).jpg"), ("+1+2", "-x.png"), ("-2", "=1.jpg"),
             ("@cmd", "+y.png"), ("\t=1+1", "lesion.jpg"), ("\r\n@x", "a.jpg"), ("a = b - c", "a-b.jpg")]
    returned = [append_feedback(folder, _image(30 + i), model_run="-run", predicted="nv", probability=0.5,
                                corrected="mel", comment=comment, source_name=name)
                for i, (comment, name) in enumerate(cases)]
    rows = list(csv_module.DictReader((folder / "feedback.csv").open(encoding="utf-8", newline="")))
    assert [(r["comment"], r["source_name"]) for r in rows] == [
        ('\'=HYPERLINK("http://evil.example","x")', "'@SUM(A1).jpg"), ("'+1+2", "'-x.png"), ("'-2", "'=1.jpg"),
        ("'@cmd", "'+y.png"), ("'=1+1", "lesion.jpg"), ("'@x", "a.jpg"), ("a = b - c", "a-b.jpg")]
    assert [(r["comment"], r["source_name"]) for r in returned] == [(r["comment"], r["source_name"]) for r in rows]
    assert {r["model_run"] for r in rows} == {"-run"} and {r["corrected"] for r in rows} == {"mel"}  # not free text


def test_a_formula_after_a_field_separator_is_written_as_text(tmp_path: Path) -> None:
    """Opened with ";" as the separator (many European locales), "see;=HYPERLINK(…)" becomes a cell "=HYPERLINK(…)":
    a formula start after ; or | (spaces between) gets a ' too; the rest of the text is left as it was (a tab is a
    space by then). After a comma nothing changes: the writer quotes a field holding one, and a quoted field stays
    one cell."""
    import csv as csv_module

    folder = tmp_path / "feedback"
    cases = [('see;=HYPERLINK("http://evil.example","x")', "a;@SUM(A1).jpg"), ("a, -2 mm", "x|+1.png"),
             ("one;  +1", "b.jpg"), ("a;b, c|d - e = f", "a-b;c.jpg"), ("=x;@y", "c.jpg")]
    for i, (comment, name) in enumerate(cases):
        append_feedback(folder, _image(60 + i), model_run="run", predicted="nv", probability=0.5, corrected="mel",
                        comment=comment, source_name=name)
    rows = list(csv_module.DictReader((folder / "feedback.csv").open(encoding="utf-8", newline="")))
    assert [(r["comment"], r["source_name"]) for r in rows] == [
        ('see;\'=HYPERLINK("http://evil.example","x")', "a;'@SUM(A1).jpg"), ("a, -2 mm", "x|'+1.png"),
        ("one;  '+1", "b.jpg"), ("a;b, c|d - e = f", "a-b;c.jpg"), ("'=x;'@y", "c.jpg")]
    assert '"a, -2 mm"' in (folder / "feedback.csv").read_text(encoding="utf-8")  # quoted: one cell anywhere
    for row in rows:  # no cell a spreadsheet could split off starts like a formula
        for field in (row["comment"], row["source_name"]):
            cells = re.split(r"[;|\t]", field)
            assert not any(c.lstrip(" ").startswith(("=", "+", "-", "@")) for c in cells), field


def test_merge_refuses_an_out_that_is_a_file_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    """--out naming a file, or a folder under a file: one error line naming the file, not a FileExistsError
    traceback after every image was hashed."""
    from data_prep.feedback import main

    afile = tmp_path / "afile"
    afile.write_text("not a folder\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["data_prep.feedback"])
    for out in (afile, afile / "x", afile / "x" / "y"):
        with pytest.raises(DataError, match=rf"^{afile}: is a file, not a folder.*choose a new --out folder"):
            merge_feedback(tmp_path / "feedback", tmp_path / "split", out)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["merge", "--feedback", str(tmp_path / "feedback"), "--dataset_dir", str(tmp_path / "split"),
                  "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err
        assert [line for line in err.splitlines() if line.startswith("mednet error:")] == [
            f"mednet error: {afile}: is a file, not a folder"
            + ("" if out == afile else f" (--out {out} would lie inside it)")
            + "; choose a new --out folder (MEDNET_TRACEBACK=1 shows the traceback)"]
    assert afile.read_text(encoding="utf-8") == "not a folder\n"


def test_merge_from_a_missing_feedback_folder_says_so_in_one_line(tiny_split: Path, tmp_path: Path, capsys,
                                                                  monkeypatch) -> None:
    """``--feedback RUN/feedbak`` (mistyped) used to say "feedback.csv: no feedback recorded here (flag a prediction
    in the web demo first)", as if the folder held no flag yet: it names the folder as not found; a file given as the
    folder is named as such; nothing is written."""
    from data_prep.feedback import main

    monkeypatch.setattr(sys, "argv", ["data_prep.feedback"])
    typo, afile = tmp_path / "run" / "feedbak", tmp_path / "feedback.csv"
    afile.write_text("timestamp\n", encoding="utf-8")
    for feedback, problem in ((typo, "feedback folder not found"),
                              (afile, "is a file, not a feedback folder (give the folder that holds feedback.csv)")):
        with pytest.raises(SystemExit) as exit_info:
            main(["merge", "--feedback", str(feedback), "--dataset_dir", str(tiny_split), "--out",
                  str(tmp_path / "merged")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err
        assert [line for line in err.splitlines() if line.startswith("mednet error:")] == [
            f"mednet error: {feedback}: {problem} (MEDNET_TRACEBACK=1 shows the traceback)"]
    assert not (tmp_path / "merged").exists() and not typo.parent.exists()


def test_an_existing_merge_is_refused_without_naming_an_overwrite_flag(tmp_path: Path) -> None:
    """merge has no --overwrite: its refusal must not tell the user to pass one (other writers still do)."""
    from mednet.io import refuse_existing

    out = tmp_path / "merged"
    out.mkdir()
    (out / "split.csv").write_text("image_id\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        merge_feedback(tmp_path / "feedback", tmp_path / "split", out)
    assert str(info.value) == f"{out / 'split.csv'}: output already exists; choose a new --out folder (a merge never " \
                              "overwrites)"
    with pytest.raises(DataError, match=r"already exists; choose another path or pass --overwrite$"):
        refuse_existing(out / "split.csv")  # the default advice is unchanged


# ---------------------------------------------------------------------------------------------------- the gate
def _metrics(bacc: float = 0.6, mel: float = 0.5, ece: float = 0.1) -> dict:
    return {"balanced_accuracy": bacc, "recall_mel": mel, "ece": ece}


def test_promotion_decision_rule() -> None:
    from mednet.app.retrain import promotion_decision

    old = {"validation": _metrics(), "test": _metrics()}
    same = promotion_decision(old, old)
    assert same["promote"] and len(same["criteria"]) == 6 and all(c["passed"] for c in same["criteria"])
    better = promotion_decision(old, {"validation": _metrics(0.7, 0.6, 0.05), "test": _metrics(0.61, 0.5, 0.1)})
    assert better["promote"]

    for split in ("validation", "test"):
        for key, worse in (("balanced_accuracy", 0.59), ("recall_mel", 0.45), ("ece", 0.12)):
            new = {s: dict(old[s]) for s in old}
            new[split][key] = worse
            decision = promotion_decision(old, new)
            failed = [(c["split"], c["metric"]) for c in decision["criteria"] if not c["passed"]]
            assert not decision["promote"] and failed == [(split, key)]
            assert len(decision["reasons"]) == 1 and decision["reasons"][0].startswith(split)
            assert promotion_decision(old, new, tolerance=0.051)["promote"]  # within the tolerance
            assert not promotion_decision(old, new, tolerance=0.005)["promote"]

    nan_both = {s: _metrics(mel=math.nan) for s in ("validation", "test")}
    assert promotion_decision(nan_both, nan_both)["promote"]  # not measurable for either model
    assert not promotion_decision(old, nan_both)["promote"]  # measurable before, not now
    assert not promotion_decision(old, {"validation": _metrics()})["promote"]  # test missing
    # an old evaluation without a criterion (absent or null) never lets a candidate through
    lacking = {s: {k: v for k, v in _metrics().items() if k != "recall_mel"} for s in ("validation", "test")}
    decision = promotion_decision(lacking, old)
    assert not decision["promote"] and "validation mel sensitivity: missing for the old model" in decision["reasons"]
    decision = promotion_decision(nan_both, old)
    assert not decision["promote"] and any("not measurable for the old model" in r for r in decision["reasons"])
    with pytest.raises(OptionError, match="--tolerance"):
        promotion_decision(old, old, tolerance=-0.1)


def test_gate_reads_an_absent_metric_as_missing_not_as_unmeasurable(tmp_path: Path) -> None:
    """An old evaluation written before a criterion existed has no key for it: that must fail the gate."""
    from mednet.app.retrain import _gate_metrics

    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"balanced_accuracy": 0.6, "ece": 0.1,
                                                                    "recall_df": None}}), encoding="utf-8")
    assert _gate_metrics(tmp_path) == {"balanced_accuracy": 0.6, "ece": 0.1}
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {**_metrics(), "recall_mel": None}}), encoding="utf-8")
    assert _gate_metrics(tmp_path)["recall_mel"] is None  # recorded as not measurable


def test_resolve_serving(tmp_path: Path) -> None:
    from mednet.app.retrain import resolve_serving

    run = tmp_path / "run"
    run.mkdir()
    assert resolve_serving(run) == run
    serving = tmp_path / "serving.json"
    serving.write_text(json.dumps({"run": "run", "promoted_at": "now"}), encoding="utf-8")
    assert resolve_serving(serving) == run  # relative to the file's folder
    serving.write_text(json.dumps({"run": str(tmp_path / "gone")}), encoding="utf-8")
    with pytest.raises(DataError, match="does not exist"):
        resolve_serving(serving)
    serving.write_text("not json", encoding="utf-8")
    with pytest.raises(DataError, match="serving file"):
        resolve_serving(serving)
    with pytest.raises(DataError, match="not found"):
        resolve_serving(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------- end to end
def test_gated_retraining_end_to_end(tiny_split: Path, tmp_path: Path, monkeypatch) -> None:
    import mednet.app.retrain as retrain_module
    from mednet.app.bundles import run_bundle
    from mednet.app.retrain import resolve_serving, retrain
    from mednet.data.lesion_split import prepare_dermoscopy_split

    old_run = tmp_path / "old"
    run_bundle("dermoscopy_classification", "train", run_dir=str(old_run), dataset_dir=str(tiny_split),
               model="receptive_field_cnn", image_size=32, epochs=1, batch_size=16)
    feedback = tmp_path / "feedback"
    for seed, corrected in ((11, "mel"), (12, "bcc")):
        append_feedback(feedback, _image(seed), model_run=str(old_run), predicted="nv", probability=0.5,
                        corrected=corrected)
    merged = merge_feedback(feedback, tiny_split, tmp_path / "merged").parent

    # held-out rows other than the run's: refused before any training
    other = prepare_dermoscopy_split(tiny_split.parent / "synthetic" / "HAM10000_metadata.csv", tmp_path / "other",
                                     images=str(tiny_split.parent / "synthetic" / "images"), seed=3).parent
    with pytest.raises(DataError, match="validation/test rows differ"):
        retrain(str(old_run), str(other), str(tmp_path / "refused"))
    assert not (tmp_path / "refused" / "candidate").exists()
    with pytest.raises(OptionError, match="did you mean --lr_schedule"):  # checked before any work
        retrain(str(old_run), str(merged), str(tmp_path / "typo"), lr_shedule="cosine")
    assert not (tmp_path / "typo").exists()

    serving = tmp_path / "serving.json"
    serving.write_text(json.dumps({"run": str(old_run)}), encoding="utf-8")
    before = serving.read_bytes()
    out = tmp_path / "retrain"
    result = retrain(str(serving), str(merged), str(out), epochs=1, serving=str(serving))
    comparison = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert comparison["promote"] == result["promote"] == comparison["decision"]["promote"]
    assert comparison["old_run"] == str(old_run.resolve()) and len(comparison["decision"]["criteria"]) == 6
    assert set(comparison["metrics"]["old"]) == {"validation", "test"}
    for who in ("old", "candidate"):
        for split in ("validation", "test"):
            assert comparison["metrics"][who][split]["balanced_accuracy"] is not None
    markdown = (out / "comparison.md").read_text(encoding="utf-8")
    assert "Gated retraining" in markdown and "mel sensitivity" in markdown
    candidate = out / "candidate"
    assert (candidate / "finished.json").is_file() and (candidate / "calibration.json").is_file()
    if result["promote"]:
        record = json.loads(serving.read_text(encoding="utf-8"))
        assert Path(record["run"]).resolve() == candidate.resolve() and record["previous"] == str(old_run.resolve())
        assert Path(record["comparison"]) == (out / "comparison.json").resolve()
        assert resolve_serving(serving).resolve() == candidate.resolve()
    else:
        assert serving.read_bytes() == before

    # resumed: nothing trained or evaluated again; a serving file given only now follows the written decision
    finished = (candidate / "finished.json").stat().st_mtime_ns
    evaluations = sorted((out / "evaluations").iterdir())
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps({"run": str(old_run)}), encoding="utf-8")
    kept_bytes = kept.read_bytes()
    assert retrain(str(old_run), str(merged), str(out), epochs=1, serving=str(kept))["promote"] == result["promote"]
    if result["promote"]:
        assert resolve_serving(kept).resolve() == candidate.resolve()
    else:
        assert kept.read_bytes() == kept_bytes
    assert (candidate / "finished.json").stat().st_mtime_ns == finished
    assert sorted((out / "evaluations").iterdir()) == evaluations

    # a gate that now decides otherwise (a candidate trained again…) never replaces the written decision
    written = {name: (out / name).read_bytes() for name in ("comparison.json", "comparison.md")}
    real = retrain_module.promotion_decision
    fresh = tmp_path / "fresh.json"
    with monkeypatch.context() as m:
        m.setattr(retrain_module, "promotion_decision",
                  lambda o, n, t=0.0: {**real(o, n, t), "promote": not result["promote"]})
        with pytest.raises(DataError, match="records the decision"):
            retrain(str(old_run), str(merged), str(out), epochs=1, serving=str(fresh))
    assert not fresh.exists()
    with pytest.raises(OptionError, match="^--tolerance: 0.05 differs from 0,"):  # nor does a looser gate
        retrain(str(old_run), str(merged), str(out), epochs=1, serving=str(fresh), tolerance=0.05)
    with pytest.raises(DataError, match="another run, split or training options"):
        retrain(str(old_run), str(merged), str(out), epochs=2)
    assert {name: (out / name).read_bytes() for name in written} == written and not fresh.exists()


def test_perceptual_distance_is_the_larger_of_the_two_hash_distances() -> None:
    zero = "0" * 32
    assert perceptual_distance(zero, "f" + "0" * 31) == 4  # phash differs by 4 bits, dhash not at all
    assert perceptual_distance(zero, "1" + "0" * 15 + "ff" + "0" * 14) == 8  # 1 and 8 bits: a near-copy needs both
    image = _image(7, 24, 24)
    assert perceptual_distance(perceptual_hash(image), perceptual_hash(image)) == 0


def test_a_merge_that_fails_late_leaves_no_split_behind(tiny_split: Path, tmp_path: Path, monkeypatch) -> None:
    """split.csv is written first; a failure after it (stats, merge.json) must not leave a split the bundle would
    accept and that would block the corrected re-run."""
    import mednet.data.lesion_split as lesion_split

    feedback = tmp_path / "feedback"
    append_feedback(feedback, _image(43, 32, 32), model_run="run-a", predicted="nv", probability=0.6, corrected="mel")

    def broken(table):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(lesion_split, "data_provenance", broken)
        with pytest.raises(OSError, match="disk full"):
            merge_feedback(feedback, tiny_split, tmp_path / "merged")
    assert not {"split.csv", "merge.json", "split.json", "split_stats.csv", "split_stats.md"} & {
        p.name for p in (tmp_path / "merged").iterdir()}
    assert merge_feedback(feedback, tiny_split, tmp_path / "merged").is_file()  # the re-run is not blocked
