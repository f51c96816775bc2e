"""Knowledge distillation training: a MONAI ``SupervisedTrainer`` whose loss also sees frozen teachers' logits.

The student is trained with :class:`mednet.losses.distillation.DistillationLoss` (Hinton et al. 2015,
arXiv:1503.02531): ``γ·CE(student, labels) + α·T²·KL(teachers ‖ student)`` at temperature ``T``. The teachers are
classification runs loaded back from their run folders (:func:`load_teachers`); they score **the same input batch
as the student**, after augmentation and MixUp / CutMix, so the student is taught what the teachers say about the
image it actually sees.

The teachers are constants of the training: no gradient (``requires_grad_(False)``, forward under
``torch.no_grad()``), never in the optimiser, and always in eval mode, so their BatchNorm layers use their
running statistics and do not update them (a teacher in train mode would normalise by the student's batch and
drift). Everything else — handlers, metrics, checkpoints, AMP, gradient accumulation — is the parent trainer's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from mednet.errors import DataError, OptionError
from mednet.losses.distillation import DistillationLoss

__all__ = ["DistillationTrainer", "check_distillation", "load_teacher_models", "load_teachers", "teacher_normalization"]

logger = logging.getLogger("mednet")

_NO_TEACHERS = "no teacher runs given: pass --teachers \"['RUN1','RUN2']\""


class DistillationTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` for a student network distilled from frozen ``teachers``.

    Args:
        teachers: ``M ≥ 1`` trained networks ``(B, 3, S, S) → (B, K)`` (e.g. :func:`load_teachers`); frozen,
            moved to the trainer's device and kept in eval mode.
        **supervised_trainer_kwargs: ``SupervisedTrainer``'s arguments (``device``, ``max_epochs``,
            ``train_data_loader``, ``network`` = the student, ``optimizer`` over the student's parameters only,
            ``loss_function`` = a :class:`DistillationLoss`, ``prepare_batch``, ``amp``, handlers, metrics, …).

    Each iteration's output is the parent's ``{"image", "label", "pred", "loss"}`` (``pred`` = the student's
    logits, so accuracy metrics and the ``train_loss`` average work unchanged) plus ``"ce_loss"`` and
    ``"kd_loss"`` (detached 0-d tensors, :attr:`DistillationLoss.last_part_tensors`, summing to ``"loss"``). The teachers' logits are not
    kept in the output (memory).

    Raises:
        TypeError: ``loss_function`` is not a :class:`DistillationLoss`.
        OptionError: no teachers, or ``--teacher_weights`` of another count than the teachers.
        ValueError: a teacher's parameters are in the optimiser, or the student is one of the teachers.
    """

    def __init__(self, *, teachers: Sequence[torch.nn.Module], **supervised_trainer_kwargs: object) -> None:
        loss = supervised_trainer_kwargs.get("loss_function")
        if not isinstance(loss, DistillationLoss):
            raise TypeError(f"DistillationTrainer needs a DistillationLoss as loss_function, got {type(loss).__name__}")
        teachers = list(teachers or [])
        if not teachers:
            raise OptionError({"--teachers": _NO_TEACHERS})
        super().__init__(**supervised_trainer_kwargs)  # type: ignore[arg-type]
        student_params = {id(p) for p in self.network.parameters()}
        optimised = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        for m, teacher in enumerate(teachers):
            if teacher is self.network:
                raise ValueError("the student network is also given as a teacher")
            params = {id(p) for p in teacher.parameters()}
            if params & optimised:
                raise ValueError(f"teacher {m + 1}'s parameters are in the optimiser: it must optimise the student's only")
            if params & student_params:
                raise ValueError(f"teacher {m + 1} shares parameters with the student")
            teacher.requires_grad_(False)
            teacher.to(self.state.device).eval()
        self.teachers: tuple[torch.nn.Module, ...] = tuple(teachers)
        loss.weights_for(len(self.teachers))  # --teacher_weights count, before the first epoch
        loss.log_weights(len(self.teachers))

    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teachers' logits ``(M, B, K)`` for ``inputs`` ``(B, 3, S, S)``, in eval mode, without gradient."""
        with torch.no_grad():
            return torch.stack([teacher(inputs) for teacher in self.teachers])

    def _iteration(self, engine: DistillationTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        """One training step, as ``SupervisedTrainer._iteration`` with the teachers' logits in the loss.

        prepare_batch → ``(inputs, targets)``; zero_grad (``optim_set_to_none``); under AMP autocast when enabled:
        student forward (``FORWARD_COMPLETED``), teachers' forward on the same inputs, loss
        (``LOSS_COMPLETED``); backward (``BACKWARD_COMPLETED``); optimiser step (with gradient accumulation as the
        parent); ``MODEL_COMPLETED``. With ``compile`` MetaTensors are turned into plain tensors and not restored
        (classification batches carry no spatial metadata worth keeping).

        Raises:
            ValueError: ``batchdata`` is None.
            OptionError: an AugMix multi-view batch (more image rows than labels): not supported here.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) == 2:
            inputs, targets = batch
            args: tuple = ()
            kwargs: dict = {}
        else:
            inputs, targets, args, kwargs = batch
        if engine.compile:
            inputs = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
            targets = targets.as_tensor() if isinstance(targets, MetaTensor) else targets
        if inputs.shape[0] != targets.shape[0]:
            raise OptionError({"--augmix_jsd": "not supported with distillation; train the student with "
                                               "--augmix_jsd false"})

        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        loss_function: DistillationLoss = engine.loss_function  # type: ignore[assignment]

        def _compute_pred_loss() -> None:
            # teachers first: run after the student's forward (its activations held for backward), the teachers'
            # forward was up to 25 % slower on CPU (measured: 5 teachers, bench_distillation_throughput.py)
            teacher_logits = engine.teacher_logits(inputs)
            engine.state.output[Keys.PRED] = engine.inferer(inputs, engine.network, *args, **kwargs)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            engine.state.output[Keys.LOSS] = loss_function(engine.state.output[Keys.PRED], teacher_logits, targets)
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        acc = engine.accumulation_steps
        if acc > 1:
            epoch_length = engine.state.epoch_length
            if epoch_length is not None:
                local_iter = (engine.state.iteration - 1) % epoch_length
                should_zero_grad = local_iter % acc == 0
                should_step = (local_iter + 1) % acc == 0 or (local_iter + 1) == epoch_length
            else:
                local_iter = engine.state.iteration - 1
                should_zero_grad = local_iter % acc == 0
                should_step = (local_iter + 1) % acc == 0
        else:
            should_zero_grad = should_step = True

        engine.network.train()
        for teacher in engine.teachers:  # handlers or user code may have called .train() on them
            if teacher.training:
                teacher.eval()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                _compute_pred_loss()
            loss = engine.state.output[Keys.LOSS]
            engine.scaler.scale(loss / acc if acc > 1 else loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
        else:
            _compute_pred_loss()
            loss = engine.state.output[Keys.LOSS]
            (loss / acc if acc > 1 else loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.optimizer.step()
        parts = loss_function.last_part_tensors  # tensors: a float() here would sync with the GPU every step
        engine.state.output["ce_loss"] = parts["ce"]
        engine.state.output["kd_loss"] = parts["kd"]
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def check_distillation(loss_function: DistillationLoss, teachers: Sequence[torch.nn.Module],
                       augmix_jsd: bool = False, augmentation: str | None = None, loss: str = "ce") -> None:
    """Refuse a distillation setup before any data is read, and log the effective loss weights.

    Args:
        loss_function: the student's :class:`DistillationLoss`.
        teachers: the teachers' networks (:func:`load_teachers`).
        augmix_jsd: ``--augmix_jsd``; its three views a sample are not supported by the KD trainer.
        augmentation: ``--augmentation`` when known (``augmix_jsd`` matters only with ``"augmix"``).
        loss: ``--loss`` of ``train.json``: the student's loss is always KD + cross-entropy, so anything but
            ``ce`` would be ignored while ``settings.json`` recorded it (and ``ldam`` would switch on the cosine
            head without its margins).

    Raises:
        OptionError: no teachers (``--teachers``), ``--teacher_weights`` of another count than the teachers,
            ``--augmix_jsd`` on, ``--loss`` other than ``ce``.
    """
    if not teachers:
        raise OptionError({"--teachers": _NO_TEACHERS})
    if loss != "ce":
        raise OptionError({"--loss": f"distillation trains the student with KD + cross-entropy; --loss {loss} would be "
                                     "ignored (shape the KD term with --kd_mode, --kd_temperature, --kd_alpha)"})
    if augmix_jsd and augmentation in (None, "augmix"):
        raise OptionError({"--augmix_jsd": "not supported with distillation; train the student with --augmix_jsd false"})
    loss_function.weights_for(len(teachers))
    loss_function.log_weights(len(teachers))


def _as_paths(paths: Sequence[str | os.PathLike] | str | os.PathLike | None) -> list[str | os.PathLike]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [paths] if str(paths).strip() else []
    return list(paths)


def load_teacher_models(paths: Sequence[str | os.PathLike] | str | os.PathLike | None,
                        class_names: Sequence[str] | None, device: str | torch.device = "cpu",
                        student_image_size: int | None = None,
                        dataset_dir: str | os.PathLike | None = None) -> list:
    """The teachers' training runs, rebuilt (:class:`mednet.networks.trained.TrainedClassifier`, networks frozen
    and in eval mode), for their settings (normalisation, image size) as well as their networks.

    Args:
        paths: the teachers' run folders (or their ``model.pt``).
        class_names: the student's classes; every teacher must have been trained on exactly these, in order.
        device: where the networks go.
        student_image_size: the student's ``--image_size``; the teachers must have been trained at it (they
            score the student's input batch).
        dataset_dir: the student's split folder: its validation and test lesions must be held out from every
            teacher (:func:`check_teachers_held_out`).

    Raises:
        OptionError: no paths (``--teachers``).
        DataError: a run without checkpoint or settings, trained for other classes, with weights that do not fit
            the architecture its settings name, or with another image size / normalisation than the other
            teachers or the student (names the run's file).
    """
    from mednet.networks.trained import load_trained_classifiers

    paths = _as_paths(paths)
    if not paths:
        raise OptionError({"--teachers": _NO_TEACHERS})
    models = load_trained_classifiers(paths, device, class_names, what="teachers")
    for model in models:
        if student_image_size is not None and model.image_size != int(student_image_size):
            raise DataError(model.checkpoint, f"teacher run {model.run_dir} was trained at image_size "
                                              f"{model.image_size}, the student at {int(student_image_size)}: train "
                                              "the student at the teachers' --image_size")
        model.network.requires_grad_(False)
        model.network.eval()
        n_params = sum(p.numel() for p in model.network.parameters())
        logger.info("teacher %s (%s): %s, %s parameters", model.name, model.checkpoint, model.settings["model"],
                    f"{n_params:,}")
    if dataset_dir is not None:
        check_teachers_held_out([model.checkpoint for model in models], dataset_dir)
    return models


def check_teachers_held_out(checkpoints: Sequence[str | os.PathLike], dataset_dir: str | os.PathLike) -> None:
    """Refuse teachers that saw the student's validation or test lesions.

    A teacher trained on another split of the same source (another seed) has trained on some of the student's
    validation and test lesions and passes that knowledge on through its soft targets: the student's checkpoint
    choice, temperature and test scores would then be made on data it has indirectly seen. Each of the student's
    validation and test rows (``dataset_dir/split.csv``) is checked against every teacher's own split, and an
    ensemble teacher's against each of its members' (:func:`mednet.data.splits.check_evaluated_rows`: a teacher's
    training lesions may not be in either, its validation lesions not in the test split).

    Raises:
        DataError: naming the student's ``split.csv``, the teacher's run and the overlapping lesions.
    """
    from mednet.data.dermoscopy import _read_csv
    from mednet.data.splits import check_evaluated_rows, split_csv_path

    csv = split_csv_path(dataset_dir)
    if not csv.is_file():
        return  # the training config reports a missing split folder itself
    table = _read_csv(csv, ["lesion_id", "split"], allow_empty=True)
    if "path" in table.columns:  # relative to the CSV's folder: resolved so that an image file is matched too
        table["path"] = [os.path.normpath(csv.resolve().parent / p) if p else p for p in table["path"]]
    for split in ("validation", "test"):
        rows = table[table["split"] == split]
        rows.attrs["source"] = str(csv)
        check_evaluated_rows(rows, list(checkpoints), split, dataset_dir, "distillation (the student is selected "
                                                                         "and scored on these lesions)")


def load_teachers(paths: Sequence[str | os.PathLike] | str | os.PathLike | None,
                  class_names: Sequence[str] | None, device: str | torch.device = "cpu",
                  student_image_size: int | None = None,
                  dataset_dir: str | os.PathLike | None = None) -> list[torch.nn.Module]:
    """The teachers' networks ``(B, 3, S, S) → (B, K)``, frozen (``requires_grad`` False) and in eval mode, for
    :class:`DistillationTrainer`. Arguments and errors as :func:`load_teacher_models`."""
    return [model.network for model in load_teacher_models(paths, class_names, device, student_image_size,
                                                           dataset_dir)]


def teacher_normalization(paths: Sequence[str | os.PathLike] | str | os.PathLike | Sequence | None,
                          class_names: Sequence[str] | None = None) -> dict:
    """``{"mean": [3 floats], "std": [3 floats]}`` the teachers were trained with: the student must normalise its
    input the same way, since the teachers score the student's batch.

    Args:
        paths: the teachers' run folders, or the ``TrainedClassifier`` objects of :func:`load_teacher_models`.
        class_names: as :func:`load_teacher_models`.

    Raises:
        OptionError / DataError: as :func:`load_teacher_models`; the teachers must share their normalisation
            (:func:`mednet.networks.trained.check_same_inputs`).
    """
    from mednet.networks.trained import TrainedClassifier, check_same_inputs

    items = _as_paths(paths)
    if items and all(isinstance(m, TrainedClassifier) for m in items):
        models = list(items)
        check_same_inputs(models, "teachers")
    else:
        models = load_teacher_models(items, class_names, "cpu")  # checks the teachers agree
    return models[0].normalization
