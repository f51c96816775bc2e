"""Tests for knowledge distillation: :mod:`mednet.losses.distillation` (hand-computed values, the three ways to
combine teachers, option errors) and :mod:`mednet.engines.distillation` (a real epoch of the student trainer with
frozen BatchNorm teachers, MixUp labels, teachers loaded back from run folders)."""

from __future__ import annotations

import copy
import json
import logging
import math
import re

import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy, Average
from monai.engines.utils import IterationEvents

from mednet.engines.distillation import (
    DistillationTrainer,
    check_distillation,
    check_teachers_held_out,
    load_teacher_models,
    load_teachers,
    teacher_normalization,
)
from mednet.errors import DataError, OptionError
from mednet.losses.distillation import KD_MODES, DistillationLoss

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]

# B = 2, K = 3 logits of the hand-computed example (T = 2, α = 0.8, γ = 0.2)
STUDENT = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
TEACHER = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
LABELS = [0, 1]
SOFT_LABELS = [[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]]


def _softmax(z: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [x / sum(e) for x in e]


def _kl(p: list[float], q: list[float]) -> float:
    """Σ_j p_j log(p_j / q_j), written out."""
    return sum(pj * math.log(pj / qj) for pj, qj in zip(p, q) if pj > 0)


def _hand_kd(student, teacher, labels, t=2.0, alpha=0.8, gamma=0.2) -> float:
    kl = sum(_kl(_softmax(tt, t), _softmax(s, t)) for s, tt in zip(student, teacher)) / len(student)
    ce = 0.0
    for s, y in zip(student, labels):
        y = [1.0 if j == y else 0.0 for j in range(len(s))] if isinstance(y, int) else y
        ce -= sum(yj * math.log(qj) for yj, qj in zip(y, _softmax(s)))
    return gamma * ce / len(student) + alpha * t * t * kl


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


# --- the loss ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels, expected", [(LABELS, 0.20847525456), (SOFT_LABELS, 0.26847525456)])
def test_kd_loss_hand_computed(labels, expected):
    assert _hand_kd(STUDENT, TEACHER, labels) == pytest.approx(expected, abs=1e-9)
    target = torch.tensor(labels) if isinstance(labels[0], int) else _t(labels)
    for mode in KD_MODES:
        loss = DistillationLoss(temperature=2.0, alpha=0.8, gamma=0.2, mode=mode)
        value = loss(_t(STUDENT), _t(TEACHER)[None], target)
        assert value.item() == pytest.approx(expected, rel=1e-5)
        assert sum(loss.last_parts.values()) == pytest.approx(value.item(), rel=1e-6)
        # a list of (B, K) and a lone (B, K) are one teacher too
        assert loss(_t(STUDENT), [_t(TEACHER)], target).item() == pytest.approx(expected, rel=1e-5)
        assert loss(_t(STUDENT), _t(TEACHER), target).item() == pytest.approx(expected, rel=1e-5)


def test_kd_gradient_reaches_student_only():
    student = _t(STUDENT).requires_grad_(True)
    teacher = _t(TEACHER).requires_grad_(True)
    DistillationLoss(temperature=2.0)(student, teacher[None], torch.tensor(LABELS)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_avg_softmax_target_is_weighted_mean_summing_to_one():
    g = torch.Generator().manual_seed(0)
    teachers = torch.randn(3, 5, 7, generator=g) * 3
    loss = DistillationLoss(temperature=4.0, mode="avg_softmax", teacher_weights=[5, 1, 5])
    target = loss.teacher_target(teachers)
    assert target.shape == (5, 7)
    torch.testing.assert_close(target.sum(1), torch.ones(5))
    expected = (5 * torch.softmax(teachers[0] / 4, 1) + torch.softmax(teachers[1] / 4, 1)
                + 5 * torch.softmax(teachers[2] / 4, 1)) / 11
    torch.testing.assert_close(target, expected)
    # and the loss's KD part is the KL to that target, written out
    student = torch.randn(5, 7, generator=g)
    loss(student, teachers, torch.randint(0, 7, (5,), generator=g))
    q = torch.softmax(student / 4, 1)
    kl = sum(_kl(p.tolist(), qq.tolist()) for p, qq in zip(expected, q)) / 5
    assert loss.last_parts["kd"] == pytest.approx(0.8 * 16 * kl, rel=1e-4)


# a second teacher, unlike the first: the modes differ only with distinct teachers
TEACHER_2 = [[0.0, 0.0, 3.0], [1.0, -1.0, 2.0]]


@pytest.mark.parametrize("teacher_weights", [None, [3.0, 1.0]])
def test_two_teachers_add_and_avg_loss_hand_computed(teacher_weights):
    """``avg_loss`` = γ·CE + α·T²·Σ_m w_m KL(softmax(t_m/T) ‖ softmax(s/T)) (w summing to 1), ``add_loss`` the same
    with w summing to M = 2; written out with the per-teacher KL terms, and not ``avg_softmax``'s KL to the mean."""
    t, alpha, gamma = 2.0, 0.8, 0.2
    kl = []
    for teacher in (TEACHER, TEACHER_2):  # KL(teacher ‖ student) summed over classes, averaged over the batch
        kl.append(sum(_kl(_softmax(tt, t), _softmax(ss, t)) for ss, tt in zip(STUDENT, teacher)) / len(STUDENT))
    ce = -sum(math.log(_softmax(ss)[y]) for ss, y in zip(STUDENT, LABELS)) / len(STUDENT)
    raw = teacher_weights or [1.0, 1.0]
    w = [r / sum(raw) for r in raw]  # (1/2, 1/2) or (3/4, 1/4)
    expected_avg = gamma * ce + alpha * t * t * (w[0] * kl[0] + w[1] * kl[1])
    expected_add = gamma * ce + alpha * t * t * 2 * (w[0] * kl[0] + w[1] * kl[1])
    mean = [[w[0] * a + w[1] * b for a, b in zip(_softmax(r1, t), _softmax(r2, t))]
            for r1, r2 in zip(TEACHER, TEACHER_2)]
    expected_softmax = gamma * ce + alpha * t * t * sum(_kl(p, _softmax(ss, t)) for p, ss in zip(mean, STUDENT)) / 2
    teachers = torch.stack([_t(TEACHER), _t(TEACHER_2)])
    got = {mode: DistillationLoss(temperature=t, alpha=alpha, gamma=gamma, mode=mode,
                                  teacher_weights=teacher_weights)(_t(STUDENT), teachers, torch.tensor(LABELS)).item()
           for mode in KD_MODES}
    assert got["avg_loss"] == pytest.approx(expected_avg, rel=1e-5)
    assert got["add_loss"] == pytest.approx(expected_add, rel=1e-5)
    assert got["avg_softmax"] == pytest.approx(expected_softmax, rel=1e-5)
    # the KL to the teachers' mean is below the mean KL (convexity), strictly for distinct teachers
    assert expected_avg - expected_softmax > 0.05
    assert abs(got["avg_loss"] - got["avg_softmax"]) > 0.05


def test_add_loss_is_m_times_avg_loss():
    g = torch.Generator().manual_seed(1)
    student, teachers, labels = torch.randn(6, 7, generator=g), torch.randn(5, 6, 7, generator=g) * 2, torch.randint(0, 7, (6,), generator=g)
    add, avg = DistillationLoss(mode="add_loss"), DistillationLoss(mode="avg_loss")
    add(student, teachers, labels)
    avg(student, teachers, labels)
    assert add.last_parts["kd"] == pytest.approx(5 * avg.last_parts["kd"], rel=1e-5)
    assert add.last_parts["ce"] == pytest.approx(avg.last_parts["ce"], rel=1e-6)
    # identical teachers: avg_loss = one teacher's KD, add_loss = 5 × it
    same = teachers[:1].expand(5, -1, -1)
    one = DistillationLoss(mode="avg_loss")
    one(student, teachers[:1], labels)
    avg(student, same, labels)
    add(student, same, labels)
    assert avg.last_parts["kd"] == pytest.approx(one.last_parts["kd"], rel=1e-5)
    assert add.last_parts["kd"] == pytest.approx(5 * one.last_parts["kd"], rel=1e-5)
    # weighted: add_loss weights sum to M, avg_loss weights to 1
    w_add = DistillationLoss(mode="add_loss", teacher_weights=[5, 1, 5, 1, 1])
    w_avg = DistillationLoss(mode="avg_loss", teacher_weights=[5, 1, 5, 1, 1])
    w_add(student, teachers, labels)
    w_avg(student, teachers, labels)
    assert w_add.last_parts["kd"] == pytest.approx(5 * w_avg.last_parts["kd"], rel=1e-5)
    assert sum(w_avg.weights_for(5)) == pytest.approx(1.0)


def test_one_teacher_all_modes_equal():
    g = torch.Generator().manual_seed(2)
    student, teacher, soft = torch.randn(4, 7, generator=g), torch.randn(1, 4, 7, generator=g), torch.softmax(torch.randn(4, 7, generator=g), 1)
    values = [DistillationLoss(mode=mode)(student, teacher, soft).item() for mode in KD_MODES]
    assert values == pytest.approx([values[0]] * 3, rel=1e-6)


def test_effective_weights_and_log(caplog):
    loss = DistillationLoss(mode="add_loss")
    assert loss.effective_weights(5) == {"ce": 0.2, "kd_per_teacher": pytest.approx([0.8] * 5), "kd_total": pytest.approx(4.0)}
    assert DistillationLoss(mode="avg_loss").effective_weights(4)["kd_total"] == pytest.approx(0.8)
    with caplog.at_level(logging.INFO, logger="mednet"):
        g = torch.Generator().manual_seed(3)
        student, teachers, labels = torch.randn(2, 7, generator=g), torch.randn(5, 2, 7, generator=g), torch.tensor([0, 1])
        loss(student, teachers, labels)
        loss(student, teachers, labels)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("KD ")]
    assert lines == ["KD add_loss with 5 teachers: CE weight 0.2, KD weight 0.8 per teacher, 4.0 in total (T=4)"]


@pytest.mark.parametrize("kwargs, option", [
    ({"temperature": 0.0}, "--kd_temperature"),
    ({"temperature": -1.0}, "--kd_temperature"),
    ({"temperature": float("inf")}, "--kd_temperature"),
    ({"alpha": -0.1}, "--kd_alpha"),
    ({"gamma": -0.1}, "--kd_gamma"),
    ({"alpha": 0.0, "gamma": 0.0}, "--kd_alpha"),
    ({"mode": "sum"}, "--kd_mode"),
    ({"teacher_weights": [1.0, -1.0]}, "--teacher_weights"),
    ({"teacher_weights": [0.0, 0.0]}, "--teacher_weights"),
])
def test_option_errors(kwargs, option):
    with pytest.raises(OptionError, match=option) as info:
        DistillationLoss(**kwargs)
    assert option in info.value.problems
    if option == "--kd_mode":
        assert "add_loss, avg_loss or avg_softmax" in str(info.value)


def test_teacher_weight_count_and_shape_errors():
    loss = DistillationLoss(teacher_weights=[1.0, 2.0])
    with pytest.raises(OptionError, match="--teacher_weights.*2 weights.*3 teachers"):
        loss(torch.zeros(2, 7), torch.zeros(3, 2, 7), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(2, 2, 5\).*\(2, 7\)"):
        DistillationLoss()(torch.zeros(2, 7), torch.zeros(2, 2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(3, 7\).*\(2, 7\)"):
        DistillationLoss()(torch.zeros(2, 7), [torch.zeros(2, 7), torch.zeros(3, 7)], torch.tensor([0, 1]))


def test_teacher_weights_ratio_string():
    loss = DistillationLoss(mode="avg_softmax", teacher_weights="5:1:5")
    assert loss.weights_for(3) == pytest.approx([5 / 11, 1 / 11, 5 / 11])
    with pytest.raises(OptionError, match="--teacher_weights"):
        DistillationLoss(teacher_weights="5:1").weights_for(3)


# --- the trainer ------------------------------------------------------------------------------------------------


def _student() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 7))


def _teacher(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.BatchNorm1d(8),
                              torch.nn.Linear(8, 7))
    with torch.no_grad():  # running statistics a train-mode forward would visibly move
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net.eval()


def _data(n: int = 32, size: int = 16, views: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    shape = (views, 3, size, size) if views else (3, size, size)
    return [{"image": torch.randn(*shape, generator=g), "label": torch.tensor(i % 7)} for i in range(n)]


def _trainer(student, teachers, prepare_batch=None, data=None, **loss_kwargs) -> DistillationTrainer:
    from mednet.data.lesion_images import training_accuracy_output

    loader = torch.utils.data.DataLoader(data or _data(), batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    extra = {"prepare_batch": prepare_batch} if prepare_batch is not None else {}
    return DistillationTrainer(
        teachers=teachers, device="cpu", max_epochs=1, train_data_loader=loader, network=student,
        optimizer=torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9),
        loss_function=DistillationLoss(**loss_kwargs),
        key_train_metric={"train_accuracy": Accuracy(output_transform=training_accuracy_output)},
        additional_metrics={"train_loss": Average(output_transform=lambda out: out["loss"])},
        decollate=False, optim_set_to_none=True, **extra)


def test_trainer_epoch_keeps_teachers_frozen():
    torch.manual_seed(0)
    student, teachers = _student(), [_teacher(1), _teacher(2)]
    before_teachers = [copy.deepcopy(t.state_dict()) for t in teachers]
    before_student = copy.deepcopy(student.state_dict())
    trainer = _trainer(student, teachers, mode="avg_softmax")
    seen = []

    @trainer.on(Events.ITERATION_STARTED)
    def _meddle(engine):  # something calling .train() on a teacher must not make it update its BatchNorm stats
        teachers[0].train()

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def _modes(engine):
        seen.append([t.training for t in teachers])

    trainer.run()
    assert seen == [[False, False]] * 4
    for teacher, before in zip(teachers, before_teachers):
        after = teacher.state_dict()
        assert after.keys() == before.keys()
        assert all(torch.equal(after[k], before[k]) for k in before), "teacher weights or BatchNorm stats changed"
        assert teacher.training is False
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(student.state_dict()[k], v) for k, v in before_student.items())
    out = trainer.state.output
    assert {"image", "label", "pred", "loss", "ce_loss", "kd_loss"} <= set(out)
    assert "teacher_pred" not in out
    assert float(out["ce_loss"] + out["kd_loss"]) == pytest.approx(out["loss"].item(), rel=1e-5)
    assert {"train_loss", "train_accuracy"} <= set(trainer.state.metrics)


@pytest.mark.parametrize("mode", KD_MODES)
def test_trainer_loss_is_the_distillation_loss_of_the_teachers_on_the_same_batch(mode):
    """Each step's loss equals DistillationLoss(student(x), [teacher_m(x)], y) computed here, on the batch the
    engine drew, before the optimiser step changes the student (LOSS_COMPLETED fires before backward and step).
    Unequal teacher weights: teachers swapped, scored on another batch or in train mode would change the value."""
    torch.manual_seed(0)
    student, teachers = _student(), [_teacher(11), _teacher(12)]
    kwargs = {"temperature": 3.0, "alpha": 0.7, "gamma": 0.3, "mode": mode, "teacher_weights": [3.0, 1.0]}
    trainer = _trainer(student, teachers, **kwargs)
    reference = DistillationLoss(**kwargs)
    checked = []

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def _compare(engine):
        x, y = engine.state.batch["image"], engine.state.batch["label"]  # the loader's batch, before prepare_batch
        with torch.no_grad():
            teacher_logits = torch.stack([copy.deepcopy(t).eval()(x) for t in teachers])
            expected = reference(student(x), teacher_logits, y)
        checked.append((engine.state.output["loss"].item(), expected.item()))

    trainer.run()
    assert len(checked) == 4
    for got, expected in checked:
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # and the teachers matter: the same student with the teachers swapped gives another loss
    x, y = _data()[0]["image"][None], _data()[0]["label"][None]
    with torch.no_grad():
        swapped = reference(student(x), torch.stack([teachers[1](x), teachers[0](x)]), y)
        right = reference(student(x), torch.stack([teachers[0](x), teachers[1](x)]), y)
    assert abs(swapped.item() - right.item()) > 1e-4


def test_trainer_with_mixup_soft_labels():
    from mednet.data.lesion_images import MixingPrepareBatch

    student, teachers = _student(), [_teacher(3), _teacher(4)]
    before = [copy.deepcopy(t.state_dict()) for t in teachers]
    trainer = _trainer(student, teachers, MixingPrepareBatch("mixup", 7), mode="add_loss")
    trainer.run()
    label = trainer.state.output["label"]
    assert label.shape == (8, 7) and label.is_floating_point()
    assert math.isfinite(trainer.state.output["loss"].item())
    for teacher, b in zip(teachers, before):
        assert all(torch.equal(teacher.state_dict()[k], v) for k, v in b.items())


def test_trainer_refuses_augmix_views_and_bad_setup():
    from mednet.data.lesion_images import MixingPrepareBatch

    trainer = _trainer(_student(), [_teacher(5)], MixingPrepareBatch(None, 7), data=_data(16, views=3))
    with pytest.raises(OptionError, match="--augmix_jsd.*not supported with distillation"):
        trainer.run()
    with pytest.raises(OptionError, match="--teachers"):
        _trainer(_student(), [])
    with pytest.raises(OptionError, match="--teacher_weights"):
        _trainer(_student(), [_teacher(5)], teacher_weights=[1.0, 1.0])
    teacher = _teacher(6)
    with pytest.raises(ValueError, match="optimiser"):
        DistillationTrainer(teachers=[teacher], device="cpu", max_epochs=1, train_data_loader=[], network=_student(),
                            optimizer=torch.optim.SGD(teacher.parameters(), lr=0.1), loss_function=DistillationLoss())
    with pytest.raises(TypeError, match="DistillationLoss"):
        DistillationTrainer(teachers=[teacher], device="cpu", max_epochs=1, train_data_loader=[], network=_student(),
                            optimizer=torch.optim.SGD(_student().parameters(), lr=0.1),
                            loss_function=torch.nn.CrossEntropyLoss())


def test_check_distillation():
    teachers = [_teacher(7), _teacher(8)]
    check_distillation(DistillationLoss(teacher_weights=[2, 1]), teachers, False)
    check_distillation(DistillationLoss(), teachers, True, augmentation="mixup")  # no AugMix views without augmix
    with pytest.raises(OptionError, match="--augmix_jsd"):
        check_distillation(DistillationLoss(), teachers, True)
    with pytest.raises(OptionError, match="--teacher_weights"):
        check_distillation(DistillationLoss(teacher_weights=[1, 1, 1]), teachers)
    with pytest.raises(OptionError, match="--teachers"):
        check_distillation(DistillationLoss(), [])
    for loss in ("focal", "ldam", "recall"):  # the student's loss is KD + CE: another --loss would be ignored
        with pytest.raises(OptionError, match="--loss") as info:
            check_distillation(DistillationLoss(), teachers, loss=loss)
        assert f"--loss {loss} would be ignored" in info.value.problems["--loss"]


# --- teachers from run folders ----------------------------------------------------------------------------------


def _teacher_run(folder, model="receptive_field_cnn", weights="receptive_field_cnn", classes=CLASSES,
                 image_size=32, seed=0):
    from mednet.networks import build_classifier

    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    net = build_classifier(weights, len(classes), image_size)
    torch.save(net.state_dict(), folder / "model.pt")
    settings = {"model": model, "image_size": image_size, "cifar_stem": None, "cosine_head": False,
                "batch_norm": True, "class_names": list(classes),
                "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}, "augmentation": "none"}
    (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder, net


def test_load_teachers(tmp_path, caplog):
    (a, net_a), (b, _) = _teacher_run(tmp_path / "a", seed=1), _teacher_run(tmp_path / "b", seed=2)
    with caplog.at_level(logging.INFO, logger="mednet"):
        teachers = load_teachers([a, str(b)], CLASSES, student_image_size=32)
    assert len(teachers) == 2
    assert all(not t.training and not any(p.requires_grad for p in t.parameters()) for t in teachers)
    assert all(torch.equal(v, teachers[0].state_dict()[k]) for k, v in net_a.state_dict().items())
    assert sum("teacher receptive_field_cnn-none" in r.getMessage() for r in caplog.records) == 2
    models = load_teacher_models([a, b], CLASSES)
    assert [m.run_dir for m in models] == [a, b]
    assert teacher_normalization([a, b], CLASSES) == {"mean": [0.5] * 3, "std": [0.2] * 3}
    assert teacher_normalization(models) == {"mean": [0.5] * 3, "std": [0.2] * 3}


def test_load_teachers_errors(tmp_path):
    good, _ = _teacher_run(tmp_path / "good")
    for empty in ([], None):
        with pytest.raises(OptionError, match="--teachers") as info:
            load_teachers(empty, CLASSES)
        assert "--teachers" in info.value.problems
    other, _ = _teacher_run(tmp_path / "other_classes", classes=["a", "b", "c"])
    with pytest.raises(DataError) as info:
        load_teachers([good, other], CLASSES)
    assert info.value.path == str(other / "model.pt")
    arch, _ = _teacher_run(tmp_path / "arch", model="shufflenet_v2_x0_5")
    with pytest.raises(DataError, match="does not match") as info:
        load_teachers([arch], CLASSES)
    assert info.value.path == str(arch / "model.pt")
    with pytest.raises(DataError, match="image_size 32, the student at 64") as info:
        load_teachers([good], CLASSES, student_image_size=64)
    assert "good" in str(info.value)


def test_teachers_must_not_have_seen_the_students_validation_or_test_lesions(tmp_path):
    """A teacher trained on another seed's split of the same source saw some of the student's validation/test
    lesions: refused, naming the student's split.csv; teachers of the student's own split pass."""
    import pandas as pd

    def split_folder(name: str, assignment: dict[str, str]):
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame({"lesion_id": list(assignment), "split": list(assignment.values())}).to_csv(
            folder / "split.csv", index=False)
        return folder

    student = split_folder("student", {"L1": "training", "L2": "validation", "L3": "test"})
    other = split_folder("other", {"L1": "validation", "L2": "training", "L3": "test"})
    same, _ = _teacher_run(tmp_path / "same", seed=1)
    leaky, _ = _teacher_run(tmp_path / "leaky", seed=2)
    for run, split_dir in ((same, student), (leaky, other)):
        settings = json.loads((run / "settings.json").read_text(encoding="utf-8"))
        (run / "settings.json").write_text(json.dumps({**settings, "dataset_dir": str(split_dir)}), encoding="utf-8")
    assert len(load_teachers([same], CLASSES, dataset_dir=student)) == 1
    with pytest.raises(DataError) as info:
        load_teachers([same, leaky], CLASSES, dataset_dir=student)
    msg = str(info.value)
    assert msg.startswith(f"{student / 'split.csv'}: 1 lesion(s) of its validation split are in the training split")
    assert "L2" in msg and str(other / "split.csv") in msg
    # an ensemble teacher of the leaky run: its own settings name the student's split, its member's do not
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    (ensemble / "settings.json").write_text(json.dumps({"model": "ensemble", "members": [str(same), str(leaky)],
                                                        "weights": [0.5, 0.5], "dataset_dir": str(student)}),
                                            encoding="utf-8")
    with pytest.raises(DataError, match=r"1 lesion\(s\) of its validation split are in the training split of the run "
                                        rf"that trained {re.escape(str(leaky / 'model.pt'))}"):
        check_teachers_held_out([ensemble / "settings.json"], student)


def test_a_teacher_that_trained_on_the_students_test_image_under_another_id_is_refused(tmp_path):
    """The student's split.csv holds paths relative to its folder: matched as files, not as text."""
    import pandas as pd

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    for name, rows in (("teacher_split", [("I1", "L1", "../images/a.png", "training")]),
                       ("student_split", [("X1", "Z1", "../images/a.png", "test"), ("X2", "Z2", "b.png", "validation")])):
        (tmp_path / name).mkdir()
        pd.DataFrame(rows, columns=["image_id", "lesion_id", "path", "split"]).to_csv(tmp_path / name / "split.csv",
                                                                                       index=False)
    teacher, _ = _teacher_run(tmp_path / "teacher")
    settings = json.loads((teacher / "settings.json").read_text(encoding="utf-8"))
    (teacher / "settings.json").write_text(json.dumps({**settings, "dataset_dir": str(tmp_path / "teacher_split")}),
                                           encoding="utf-8")
    with pytest.raises(DataError, match=r"1 lesion\(s\) of its test split are in the training or validation split .*1 training, 0 validation; e\.g\. Z1"):
        check_teachers_held_out([teacher / "model.pt"], tmp_path / "student_split")
