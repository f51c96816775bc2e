"""Gated retraining and the serving file: a promotion replaces only the run the candidate was compared with.

Training and evaluation are replaced by fakes (the end-to-end run with real training is
``tests/test_feedback.py::test_gated_retraining_end_to_end``): here the candidate always beats the old run, and what
is checked is what happens to ``--serving`` — refused before training when it names another run than ``--run``,
left alone (and the refusal recorded) when another promotion replaced it while the candidate trained, and replaced
with ``"previous"`` = the run it named otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mednet.app.retrain as retrain_module
from mednet.app.retrain import resolve_serving, retrain
from mednet.errors import DataError, OptionError

OLD_METRICS = {"balanced_accuracy": 0.5, "recall_mel": 0.5, "ece": 0.10}
NEW_METRICS = {"balanced_accuracy": 0.6, "recall_mel": 0.6, "ece": 0.05}  # better on every criterion
#: the real check, before the fixture replaces it
REAL_CHECK_HELD_OUT = retrain_module._check_held_out


def _fake_run(folder: Path) -> Path:
    """What the retraining reads of a run: settings.json and a model.pt."""
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({"model": "receptive_field_cnn", "image_size": 32,
                                                      "epochs": 1, "dataset_dir": "split"}), encoding="utf-8")
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "finished.json").write_text("{}", encoding="utf-8")
    return folder


def _write_serving(path: Path, run: Path) -> Path:
    path.write_text(json.dumps({"run": str(run)}), encoding="utf-8")
    return path


@pytest.fixture
def fake_training(tmp_path: Path, monkeypatch) -> dict:
    """Runs R0 and R1, a split folder, and a retraining whose training and evaluation are fakes: ``trained`` lists
    the candidates "trained"; ``during_training`` (a callable) runs while a candidate trains."""
    split = tmp_path / "split"
    split.mkdir()
    (split / "split.csv").write_text("image_id\n", encoding="utf-8")
    state = {"r0": _fake_run(tmp_path / "R0"), "r1": _fake_run(tmp_path / "R1"), "split": split, "trained": [],
             "during_training": None}

    def train(candidate: Path, dataset: Path, overrides) -> None:
        if (candidate / "finished.json").is_file():  # resumed: as the real step, nothing trained again
            return
        state["trained"].append(candidate)
        if state["during_training"] is not None:
            state["during_training"]()
        _fake_run(candidate)

    def evaluate(who, run, settings, split_name, dataset, folder: Path) -> Path:
        out = folder / f"{who}-{split_name}"
        out.mkdir(parents=True, exist_ok=True)
        return out

    monkeypatch.setattr(retrain_module, "_check_held_out", lambda run, settings, dataset: dataset)
    monkeypatch.setattr(retrain_module, "_check_train_options", lambda overrides: None)
    monkeypatch.setattr(retrain_module, "_train", train)
    monkeypatch.setattr(retrain_module, "_evaluate", evaluate)
    monkeypatch.setattr(retrain_module, "_gate_metrics",
                        lambda path: dict(NEW_METRICS if path.name.startswith("candidate") else OLD_METRICS))
    return state


def test_a_serving_file_naming_another_run_is_refused_before_training(fake_training: dict, tmp_path: Path) -> None:
    """serving.json serves R1; a retraining compared with R0 must not replace it (R1 was never compared)."""
    r0, r1 = fake_training["r0"], fake_training["r1"]
    serving = _write_serving(tmp_path / "serving.json", r1)
    before = serving.read_bytes()
    out = tmp_path / "retrain"
    with pytest.raises(DataError, match=rf"serving\.json: names run {r1.resolve()}, not --run {r0.resolve()}"):
        retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    assert fake_training["trained"] == [] and not out.exists()
    assert serving.read_bytes() == before

    # the same file named by a relative path, and --run given as the serving file itself: accepted
    _write_serving(serving, Path("R0"))
    result = retrain(str(serving), str(fake_training["split"]), str(out), serving=str(serving))
    record = json.loads(serving.read_text(encoding="utf-8"))
    assert result["promote"] and result["serving"] == str(serving.resolve()) and result["serving_refused"] is None
    assert Path(record["run"]) == (out / "candidate").resolve() and record["previous"] == str(r0.resolve())

    # run again after its promotion: the file now serves the candidate, not R0 — said, not promoted twice
    served = serving.read_bytes()
    again = retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    assert again["repeated"] and again["promote"] and again["markdown"] == str(out.resolve() / "comparison.md")
    assert serving.read_bytes() == served and len(fake_training["trained"]) == 1


@pytest.mark.parametrize("bad", ["model.pt", "folder"])
def test_serving_must_be_a_serving_file_not_a_model_or_a_folder(fake_training: dict, bad: str) -> None:
    """``--serving R0/model.pt`` resolves to R0 itself: a promotion would have written JSON over the weights."""
    r0 = fake_training["r0"]
    serving = r0 / "model.pt" if bad == "model.pt" else r0
    with pytest.raises(DataError, match="is not a serving file"):
        retrain(str(r0), str(fake_training["split"]), str(r0.parent / "out"), serving=str(serving))
    assert (r0 / "model.pt").read_bytes() == b"weights" and fake_training["trained"] == []


def test_a_promotion_during_training_is_not_overwritten(fake_training: dict, tmp_path: Path) -> None:
    """Two retrainings from one serving file: the one that promotes first wins; the second, whose candidate was
    compared with a run no longer served, leaves the file alone and records why."""
    r0, r1 = fake_training["r0"], fake_training["r1"]
    serving = _write_serving(tmp_path / "serving.json", r0)
    # another retraining promotes R1 into the serving file while this candidate trains
    fake_training["during_training"] = lambda: _write_serving(serving, r1)
    out = tmp_path / "retrain"
    result = retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    assert result["promote"] and result["serving"] is None
    assert resolve_serving(serving).resolve() == r1.resolve()  # untouched
    assert str(r1.resolve()) in result["serving_refused"] and "another promotion came first" in result["serving_refused"]
    comparison = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert comparison["promote"] is True and comparison["serving"] is None
    assert comparison["serving_refused"] == result["serving_refused"]
    markdown = (out / "comparison.md").read_text(encoding="utf-8")
    assert "(serving file not switched)" in markdown and f"`{serving.resolve()}` NOT switched" in markdown
    assert str(r1.resolve()) in markdown


def test_a_promotion_records_the_run_it_replaces_and_creates_a_missing_file(fake_training: dict,
                                                                            tmp_path: Path) -> None:
    r0 = fake_training["r0"]
    serving = _write_serving(tmp_path / "serving.json", r0)
    out = tmp_path / "retrain"
    result = retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    record = json.loads(serving.read_text(encoding="utf-8"))
    assert result["serving"] == str(serving.resolve()) and result["serving_refused"] is None
    assert record["previous"] == str(r0.resolve()) and Path(record["comparison"]) == (out / "comparison.json")
    assert "Serving file updated" in (out / "comparison.md").read_text(encoding="utf-8")

    fresh = tmp_path / "new" / "serving.json"  # no file yet: nothing served, so nothing to refuse
    fresh.parent.mkdir()
    result = retrain(str(r0), str(fake_training["split"]), str(tmp_path / "again"), serving=str(fresh))
    assert resolve_serving(fresh).resolve() == (tmp_path / "again" / "candidate").resolve()


# ---------------------------------------------------------------------------------------------------- re-runs
def _worse_candidate(monkeypatch, by: float = 0.05) -> None:
    """The candidate's balanced accuracy ``by`` below the old run's: not promoted at tolerance 0."""
    worse = {**OLD_METRICS, "balanced_accuracy": OLD_METRICS["balanced_accuracy"] - by}
    monkeypatch.setattr(retrain_module, "_gate_metrics",
                        lambda path: dict(worse if path.name.startswith("candidate") else OLD_METRICS))


def _outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("comparison.json", "comparison.md")}


def test_another_tolerance_on_a_started_retraining_is_refused(fake_training: dict, tmp_path: Path,
                                                              monkeypatch) -> None:
    """A NOT PROMOTED decision must not become PROMOTED by running the same --out again with a looser gate: the
    tolerance is recorded in retrain.json and another one refused, naming the recorded value; nothing is rewritten."""
    _worse_candidate(monkeypatch)
    r0, serving = fake_training["r0"], _write_serving(tmp_path / "serving.json", fake_training["r0"])
    out = tmp_path / "retrain"
    assert not retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))["promote"]
    assert json.loads((out / "retrain.json").read_text(encoding="utf-8"))["tolerance"] == 0.0
    before, served = _outputs(out), serving.read_bytes()
    for tolerance in (0.1, "0.06"):
        with pytest.raises(OptionError, match=r"^--tolerance: 0\.(1|06) differs from 0, the tolerance this retraining "
                                              r"was started with .*retrain\.json.*--tolerance 0\b"):
            retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving), tolerance=tolerance)
    assert _outputs(out) == before and serving.read_bytes() == served
    assert not retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving), tolerance=0)["promote"]
    assert _outputs(out) == before  # the same decision, rewritten as it was

    # a retrain.json written before it recorded the tolerance: the one of the decision in comparison.json
    record = json.loads((out / "retrain.json").read_text(encoding="utf-8"))
    del record["tolerance"]
    (out / "retrain.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(OptionError, match=r"^--tolerance: 0\.1 differs from 0,"):
        retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving), tolerance=0.1)
    assert _outputs(out) == before and serving.read_bytes() == served
    # a new --out with the looser gate is a new decision, recorded as such
    looser = retrain(str(r0), str(fake_training["split"]), str(tmp_path / "looser"), tolerance=0.1)
    assert looser["promote"] and json.loads(Path(looser["comparison"]).read_text())["decision"]["tolerance"] == 0.1


@pytest.mark.parametrize("tolerance", [-0.01, 0.11, 1, float("nan"), "much"])
def test_a_tolerance_outside_0_to_0_1_is_refused_before_training(fake_training: dict, tmp_path: Path,
                                                                 tolerance) -> None:
    with pytest.raises(OptionError, match=r"^--tolerance: must be a number in \[0, 0\.1\]"):
        retrain(str(fake_training["r0"]), str(fake_training["split"]), str(tmp_path / "out"), tolerance=tolerance)
    assert fake_training["trained"] == [] and not (tmp_path / "out").exists()


def test_an_earlier_decision_is_never_replaced_by_another(fake_training: dict, tmp_path: Path, monkeypatch) -> None:
    """Resumed after the candidate was trained again (or an evaluation replaced), the gate says PROMOTED where
    comparison.json says NOT PROMOTED: refused, the earlier comparison and the serving file kept as they were."""
    _worse_candidate(monkeypatch)
    r0, serving = fake_training["r0"], _write_serving(tmp_path / "serving.json", fake_training["r0"])
    out = tmp_path / "retrain"
    retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    before, served = _outputs(out), serving.read_bytes()
    _worse_candidate(monkeypatch, by=-0.1)  # now better than the old run
    with pytest.raises(DataError, match=r"comparison\.json: records the decision NOT PROMOTED, but this run's gate "
                                        r"says PROMOTED .*choose another --out"):
        retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    assert _outputs(out) == before and serving.read_bytes() == served


def test_the_same_command_after_its_promotion_exits_0_with_one_line(fake_training: dict, tmp_path: Path) -> None:
    """A finished job run again is not an error: status 0 and one line naming the earlier decision; with other
    settings the refusals still apply."""
    from _bundle_cli import command_in_process

    r0, serving = fake_training["r0"], _write_serving(tmp_path / "serving.json", fake_training["r0"])
    out = tmp_path / "retrain"
    args = ["--run", str(r0), "--dataset_dir", str(fake_training["split"]), "--out", str(out), "--serving",
            str(serving)]
    first = command_in_process(retrain, *args)
    assert first.returncode == 0, first.stderr
    promoted = serving.read_bytes()
    again = command_in_process(retrain, *args)
    assert again.returncode == 0 and "mednet error" not in again.stderr, again.stderr
    assert again.stdout.splitlines() == [f"nothing to do: {serving.resolve()} already serves this retraining's "
                                         f"candidate {(out / 'candidate').resolve()} (PROMOTED by an earlier run of "
                                         f"this command: {out.resolve() / 'comparison.md'})"]
    assert serving.read_bytes() == promoted and len(fake_training["trained"]) == 1
    other = command_in_process(retrain, *args, "--tolerance", "0.05")
    assert other.returncode == 2 and "mednet error: --tolerance: 0.05 differs from 0" in other.stderr
    other = command_in_process(retrain, *args, "--epochs", "3")
    assert other.returncode == 2 and "another run, split or training options" in other.stderr


def test_the_next_round_command_after_its_promotion_has_nothing_to_do(fake_training: dict, tmp_path: Path) -> None:
    """The README's next round runs with ``--run serving.json``; once it promoted, serving.json names the candidate
    itself, and running the command again was refused ("another run, split or training options") instead of having
    nothing to do — with or without --serving."""
    from _bundle_cli import command_in_process

    r0, serving = fake_training["r0"], _write_serving(tmp_path / "serving.json", fake_training["r0"])
    out = tmp_path / "retrain"
    args = ["--run", str(serving), "--dataset_dir", str(fake_training["split"]), "--out", str(out)]
    first = command_in_process(retrain, *args, "--serving", str(serving))
    assert first.returncode == 0, first.stderr
    promoted = serving.read_bytes()
    assert resolve_serving(serving) == (out / "candidate").resolve()
    for extra in (["--serving", str(serving)], []):
        again = command_in_process(retrain, *args, *extra)
        assert again.returncode == 0 and "mednet error" not in again.stderr, again.stderr
        assert again.stdout.startswith("nothing to do: ") and "PROMOTED by an earlier run" in again.stdout
    assert serving.read_bytes() == promoted and len(fake_training["trained"]) == 1
    assert json.loads((out / "retrain.json").read_text(encoding="utf-8"))["run"] == str(r0.resolve())


def test_run_takes_only_a_run_folder_its_model_or_a_serving_file(fake_training: dict, tmp_path: Path) -> None:
    """``--run R0/model_final.pt`` used to retrain (and the web demo to serve) R0/model.pt without a word."""
    r0 = fake_training["r0"]
    (r0 / "model_final.pt").write_bytes(b"other weights")
    (r0 / "notes.txt").write_text("not a serving file\n", encoding="utf-8")
    assert resolve_serving(r0 / "model.pt") == r0
    for name in ("model_final.pt", "notes.txt"):
        with pytest.raises(DataError, match=rf"{name}: .*takes only a run folder, its model\.pt or a serving file"):
            resolve_serving(r0 / name)
        with pytest.raises(DataError, match="only a run folder, its model.pt or a serving file"):
            retrain(str(r0 / name), str(fake_training["split"]), str(tmp_path / "out"))
    assert fake_training["trained"] == [] and not (tmp_path / "out").exists()


def test_a_split_remade_since_the_run_was_trained_is_refused_before_training(fake_training: dict, tmp_path: Path,
                                                                             monkeypatch) -> None:
    """The old run's split.csv re-made (--overwrite) after training: its split_fingerprint in settings.json no longer
    matches, and the retraining stops before training, naming the split — not after the candidate trained."""
    from mednet.data.splits import split_fingerprint

    monkeypatch.setattr(retrain_module, "_check_held_out", REAL_CHECK_HELD_OUT)
    split = fake_training["split"]
    (split / "split.csv").write_text("image_id,lesion_id,split\na,l1,training\nb,l2,test\n", encoding="utf-8")
    run = tmp_path / "R2"
    _fake_run(run)
    settings = json.loads((run / "settings.json").read_text(encoding="utf-8"))
    settings.update(dataset_dir=str(split), split_fingerprint=split_fingerprint(split))
    (run / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    # re-made: the same images, assigned otherwise
    (split / "split.csv").write_text("image_id,lesion_id,split\na,l1,test\nb,l2,training\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{split.resolve()}: this split changed since R2 was trained on it "
                                        r"\(.*split_fingerprint"):
        retrain(str(run), str(split), str(tmp_path / "out"))
    assert fake_training["trained"] == [] and not (tmp_path / "out").exists()


def test_a_rerun_keeps_the_record_of_the_serving_file_it_switched(fake_training: dict, tmp_path: Path) -> None:
    """Run again without --serving after a promotion into S1, the command used to reach the same decision and rewrite
    comparison.json/.md and retrain.json with no serving file: which file serves the candidate was erased. Now it has
    nothing to do (one line, status 0, nothing rewritten), and another --serving S2 is refused (S2 not switched)."""
    from _bundle_cli import command_in_process

    r0, s1 = fake_training["r0"], _write_serving(tmp_path / "s1.json", fake_training["r0"])
    s2 = _write_serving(tmp_path / "s2.json", r0)
    out = tmp_path / "retrain"
    args = ["--run", str(r0), "--dataset_dir", str(fake_training["split"]), "--out", str(out)]
    assert command_in_process(retrain, *args, "--serving", str(s1)).returncode == 0
    kept = {name: (out / name).read_bytes() for name in ("comparison.json", "comparison.md", "retrain.json")}
    served1, served2 = s1.read_bytes(), s2.read_bytes()

    again = command_in_process(retrain, *args)
    assert again.returncode == 0 and "mednet error" not in again.stderr, again.stderr
    assert again.stdout.splitlines() == [f"nothing to do: this retraining's candidate {(out / 'candidate').resolve()} "
                                         "was PROMOTED by an earlier run of this command, which switched serving file "
                                         f"{s1.resolve()}: {out.resolve() / 'comparison.md'}"]
    result = retrain(str(r0), str(fake_training["split"]), str(out))
    assert result["repeated"] and result["serving"] == str(s1.resolve()) and result["serving_refused"] is None

    other = command_in_process(retrain, *args, "--serving", str(s2))
    assert other.returncode == 2, other.stderr
    assert f"mednet error: --serving: {s2.resolve()} is not {s1.resolve()}, the serving file this retraining's " \
           "promotion switched" in other.stderr
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert s1.read_bytes() == served1 and s2.read_bytes() == served2 and len(fake_training["trained"]) == 1
    comparison = json.loads(kept["comparison.json"])
    assert comparison["serving"] == comparison["serving_file"] == str(s1.resolve())


def test_a_rerun_keeps_the_record_of_a_serving_file_left_alone(fake_training: dict, tmp_path: Path) -> None:
    """Promoted, but the serving file was not switched (another promotion came first): run again without --serving,
    the recorded refusal is kept too."""
    r0, r1 = fake_training["r0"], fake_training["r1"]
    serving = _write_serving(tmp_path / "serving.json", r0)
    fake_training["during_training"] = lambda: _write_serving(serving, r1)
    out = tmp_path / "retrain"
    first = retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    before = _outputs(out)
    again = retrain(str(r0), str(fake_training["split"]), str(out))
    assert again["repeated"] and again["serving"] is None and again["serving_refused"] == first["serving_refused"]
    assert _outputs(out) == before
    with pytest.raises(OptionError, match=r"^--serving: .*other\.json is not .*serving\.json, the serving file this "
                                          "retraining's promotion was recorded for"):
        retrain(str(r0), str(fake_training["split"]), str(out), serving=str(tmp_path / "other.json"))
    assert _outputs(out) == before and not (tmp_path / "other.json").exists()


def test_a_promotion_without_serving_may_still_switch_one_given_later(fake_training: dict, tmp_path: Path) -> None:
    """The documented flow stays: promoted without --serving, the same command with --serving switches it and
    records it."""
    r0 = fake_training["r0"]
    out = tmp_path / "retrain"
    assert retrain(str(r0), str(fake_training["split"]), str(out))["serving"] is None
    serving = _write_serving(tmp_path / "serving.json", r0)
    result = retrain(str(r0), str(fake_training["split"]), str(out), serving=str(serving))
    assert result["serving"] == str(serving.resolve()) and len(fake_training["trained"]) == 1
    assert json.loads((out / "comparison.json").read_text(encoding="utf-8"))["serving"] == str(serving.resolve())


@pytest.mark.parametrize("where", ["retrain.json", "comparison.json"])
def test_a_tolerance_edited_into_a_non_number_is_a_data_error(fake_training: dict, tmp_path: Path, where: str) -> None:
    """A hand-edited tolerance ("loose") in retrain.json, or in comparison.json for a retrain.json that records none
    (written before it did), was read with float(): a ValueError traceback. Now one error naming the file."""
    r0 = fake_training["r0"]
    out = tmp_path / "retrain"
    retrain(str(r0), str(fake_training["split"]), str(out))
    record = json.loads((out / "retrain.json").read_text(encoding="utf-8"))
    if where == "retrain.json":
        record["tolerance"] = "loose"
    else:
        del record["tolerance"]
        comparison = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
        comparison["decision"]["tolerance"] = "loose"
        (out / "comparison.json").write_text(json.dumps(comparison), encoding="utf-8")
    (out / "retrain.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{out.resolve() / where}: records the tolerance \"loose\", which is not a "
                                        "number"):
        retrain(str(r0), str(fake_training["split"]), str(out))


def _split_csv(folder: Path, training: list[str], held_out: list[tuple[str, str]]) -> Path:
    """A split folder: ``training`` image ids, and ``(image_id, split)`` validation/test rows (one lesion each)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(i, "training") for i in training] + held_out
    lines = ["image_id,lesion_id,dx,dx_type,path,split"]
    lines += [f"{i},L_{i},nv,histo,images/{i}.jpg,{split}" for i, split in rows]
    (folder / "split.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_training_rows_of_the_old_split_missing_from_the_new_are_warned_and_recorded(
        fake_training: dict, tmp_path: Path, monkeypatch, caplog) -> None:
    """The next round merged from demo/syn_split instead of the candidate's syn_split_fb1: the earlier feedback rows
    are silently not trained on. Not refused (it may be meant), but logged and counted in comparison.json/.md."""
    import logging

    held_out = [("v1", "validation"), ("t1", "test")]
    old_split = _split_csv(tmp_path / "syn_split_fb1", ["a", "b", "fb_1", "fb_2", "fb_3"], held_out)
    new_split = _split_csv(tmp_path / "syn_split_fb2", ["a", "b", "fb_2", "fb_9"], held_out)
    monkeypatch.setattr(retrain_module, "_check_held_out", lambda run, settings, dataset: old_split.resolve())
    out = tmp_path / "retrain"
    with caplog.at_level(logging.WARNING, logger="mednet"):
        result = retrain(str(fake_training["r0"]), str(new_split), str(out))
    warned = [r.getMessage() for r in caplog.records if "training row(s)" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"retrain: 2 training row(s) of {old_split.resolve()}")
    assert "(e.g. fb_1, fb_3)" in warned[0]
    comparison = json.loads(Path(result["comparison"]).read_text(encoding="utf-8"))
    assert comparison["training_rows_dropped"] == {"count": 2, "examples": ["fb_1", "fb_3"]}
    assert result["promote"]  # a warning, not a refusal
    markdown = Path(result["markdown"]).read_text(encoding="utf-8")
    assert "**2 training row(s) of" in markdown and "`fb_1`, `fb_3`" in markdown

    # the split merged from the run's own split keeps every row: nothing recorded
    complete = _split_csv(tmp_path / "complete", ["a", "b", "fb_1", "fb_2", "fb_3", "fb_9"], held_out)
    again = retrain(str(fake_training["r0"]), str(complete), str(tmp_path / "retrain2"))
    assert json.loads(Path(again["comparison"]).read_text(encoding="utf-8"))["training_rows_dropped"] is None
    assert "training row(s)" not in Path(again["markdown"]).read_text(encoding="utf-8")
