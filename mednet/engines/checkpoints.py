"""Checkpoints: saving them so that a crash never costs the model, and loading them with clear messages.

* :class:`AtomicCheckpointSaver` — Ignite handler: best model by the validation key metric (``model.pt``),
  final model (``model_final.pt``), the run's completion marker (``finished.json``) and, for resuming, the
  state of the last completed epoch (``checkpoint_last.pt``), every file written atomically
  (:func:`mednet.io.atomic_path`).
* :func:`load_weights` — load a state dict with a clear message when the checkpoint is missing or does not
  fit the network.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
import random
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from mednet.errors import DataError
from mednet.io import atomic_path
from mednet.runs import FINISHED_FILE, RESUME_FILE, check_run_settings, mark_finished as _mark_finished

__all__ = ["AtomicCheckpointSaver", "RESUME_FILE", "finish_run", "load_weights", "state_to_save"]


logger = logging.getLogger(__name__)


def state_to_save(save_dict: Mapping[str, object]) -> dict:
    """``{"network": net}`` → ``net.state_dict()``; several objects → ``{name: state_dict}``.

    The single-object layout is ignite's ``Checkpoint`` layout (what MONAI's ``CheckpointSaver`` wrote before),
    so :func:`load_weights` and ``monai.bundle ckpt_export`` read both old and new checkpoints. ``DataParallel``
    / ``DistributedDataParallel`` wrappers are removed (``.module``) so the weights load into a plain network.
    """
    out = {}
    for name, obj in save_dict.items():
        if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            obj = obj.module
        out[name] = obj.state_dict()
    return next(iter(out.values())) if len(out) == 1 else out


#: the key of the trainer's AMP GradScaler state in ``checkpoint_last.pt``
_SCALER_KEY = "grad_scaler"
_RNG_KEY = "rng"


def _rng_state() -> dict:
    """The global random states (torch, CUDA, NumPy, Python) as tensors, ints and lists: what ``weights_only``
    loading accepts (NumPy's state tuple holds an array, so it is stored as its parts)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "gauss": float(gauss)},
             "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_initialized():  # not is_available(): a CPU run on a GPU machine must not wake every GPU
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    """Restore :func:`_rng_state`'s output (CUDA states only where the same number of devices is present)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _grad_scaler(engine: Engine) -> torch.amp.GradScaler | None:
    """The trainer's AMP loss scaler (MONAI trainers: ``engine.scaler``, None without AMP)."""
    scaler = getattr(engine, "scaler", None)
    return scaler if hasattr(scaler, "state_dict") and hasattr(scaler, "load_state_dict") else None


def _cpu_copy(state: object) -> object:
    """A detached CPU copy of a (nested) state dict, ``_metadata`` kept: the network trains on, the copy stays the
    best model (on the CPU, so a GPU run does not hold a second network in GPU memory)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, Mapping):
        out = OrderedDict((k, _cpu_copy(v)) for k, v in state.items())
        meta = getattr(state, "_metadata", None)
        if meta is not None:
            out._metadata = copy.deepcopy(meta)  # type: ignore[attr-defined]
        return out
    return copy.deepcopy(state)


#: the saver attached to each trainer. Weak both ways: the saver holds its trainer (``_trainer``), so a strong
#: value would keep every trainer — network, optimiser, cached data — alive for the rest of the process.
_SAVERS: weakref.WeakKeyDictionary[Engine, weakref.ref[AtomicCheckpointSaver]] = weakref.WeakKeyDictionary()


class AtomicCheckpointSaver:
    """Save the best and the final model of a training run, atomically, and mark the run finished.

    * after each validation (``evaluator``'s ``EPOCH_COMPLETED``): if the evaluator's key metric improved,
      ``save_dir/key_metric_filename`` (``model.pt``) is replaced by the current weights;
    * when training completes (the trainer's ``COMPLETED``): ``final_filename`` (``model_final.pt``), then
      ``finished.json`` (``mark_finished``: end time, epochs, key metric, best metric and epoch — see
      :func:`mednet.runs.mark_finished`) as the very last file, so its presence means every model is complete.

    Every file is written to a temporary file in ``save_dir`` and renamed over the old one
    (:func:`mednet.io.atomic_path`): a crash while saving leaves the previous ``model.pt`` intact.

    Why not MONAI's ``CheckpointSaver`` (ignite's ``Checkpoint``): with a fixed file name
    (``key_metric_filename="model.pt"``) ``Checkpoint.__call__`` first *removes* the previous best file and then
    writes the new one (ignite 0.5.5), so a crash, a full disk or a kill between the two leaves no model at all;
    ignite's ``DiskSaver(atomic=True)`` only protects the write itself. Subclassing would mean replacing
    ``Checkpoint.__call__`` (its whole logic: priority queue, file-name patterns, removal) while keeping its
    ``n_saved`` machinery unused, so this is a small handler of its own (~50 lines). It is generic: the objects
    to save, the key metric and the file names are parameters; the key metric defaults to the evaluator's
    (MONAI workflows set ``state.key_metric_name``).

    Args:
        save_dir: the run directory.
        save_dict: objects with ``state_dict()`` to save, e.g. ``{"network": net}`` (one object → its state
            dict is the file's content, see :func:`state_to_save`).
        evaluator: the validation engine whose key metric selects the best model (None: no best model).
        key_metric_name: metric in ``evaluator.state.metrics`` (default: ``evaluator.state.key_metric_name``).
        key_metric_filename: file of the best model.
        final_filename: file of the final model (None: not saved).
        mark_finished: write the completion marker ``finished.json`` that :func:`mednet.runs.latest_run` requires.
        mode: ``"max"`` (higher is better, e.g. Dice) or ``"min"`` (e.g. a loss).
        resume_dict: objects with ``state_dict()`` / ``load_state_dict()`` that a resumed run needs besides the
            trainer (network, optimiser, LR schedule). When given, the state of every completed epoch is
            written to ``save_dir/checkpoint_last.pt`` (with the trainer's epoch/iteration and this handler's
            best metric), and if that file exists when the handler is attached, the run **continues** from it:
            the objects are loaded, the trainer starts at the next epoch (Ignite resumes a state with epochs
            left), and the best model so far is kept. The global random states (torch, CUDA, NumPy, Python) are
            saved with each epoch and restored when the resumed run starts: the bundle seeds them once, at the
            start of every run, so without this a resumed run drew epoch 1's shuffling again. A transform with a
            random state of its own continues its stream when it is one of the resume objects (the brain bundle's
            batch augmentation, :meth:`~mednet.data.augment.TissuePatchAugmentation.state_dict`); others (the
            dermoscopy bundle's per-image transforms, in data-loader workers) start again from their seed, so such a
            resumed run is equivalent, not bit-identical, to an uninterrupted one. A run that
            trained every epoch but has no ``finished.json`` (stopped in a step after training) trains nothing
            and goes on to those steps; a finished run is refused.

            With ``resume_dict`` the best model's weights are also part of ``checkpoint_last.pt``, and ``model.pt``
            is written *after* it, at the end of the epoch, not at the validation: a run killed between an
            improving validation and the end of its epoch (LR step, logs, plots) resumes from the previous epoch,
            and ``model.pt`` must then be the best model *of the epochs kept* — not the discarded attempt's weights
            labelled with the previous best's metric. A resume rewrites ``model.pt`` from the checkpoint.

            The trainer's AMP ``GradScaler`` (MONAI's ``engine.scaler``, present with ``amp`` on a GPU) is saved
            and restored with them, when there is one: a resumed run would otherwise start its loss scale again at
            2^16 and skip steps until it has fallen back. A checkpoint without it (written without AMP) resumes
            with a fresh scaler.

    Attributes:
        best_metric: best key-metric value so far (None before the first validation).
        best_epoch: trainer epoch of ``best_metric``.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping[str, object], evaluator: Engine | None = None,
                 key_metric_name: str | None = None, key_metric_filename: str = "model.pt",
                 final_filename: str | None = "model_final.pt", mark_finished: bool = True,
                 mode: str = "max", resume_dict: Mapping[str, object] | None = None) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.evaluator = evaluator
        self.key_metric_name = key_metric_name
        self.key_metric_filename = key_metric_filename
        self.final_filename = final_filename
        self.mark_finished = mark_finished
        self.mode = mode
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.resume_dict = dict(resume_dict) if resume_dict is not None else None
        self.resumed_from_epoch: int | None = None
        self._trainer: Engine | None = None
        self._best_state: object | None = None  # the best model's weights (with resume_dict), saved in checkpoint_last
        self._best_pending = False  # model.pt is behind _best_state until the end of the epoch
        self._start = time.time()
        self._elapsed_before = 0.0  # training time of the epochs before a resume

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer (and, through it, to ``evaluator``); resume from ``checkpoint_last.pt`` if asked."""
        self._trainer = engine
        _SAVERS[engine] = weakref.ref(self)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.validated)
        if self.resume_dict is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_last)
            if (self.save_dir / RESUME_FILE).is_file():
                self.resume(engine)

    def _started(self, engine: Engine) -> None:
        self._start = time.time()

    def state_dict(self) -> dict:
        """Best metric and epoch so far, and the training time spent (restored by :meth:`resume`)."""
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "elapsed_s": self._elapsed_before + time.time() - self._start}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.best_metric = state.get("best_metric")  # type: ignore[assignment]
        self.best_epoch = state.get("best_epoch")  # type: ignore[assignment]
        self._elapsed_before = float(state.get("elapsed_s") or 0.0)  # type: ignore[arg-type]

    def save_last(self, engine: Engine) -> Path:
        """After each epoch (and its validation): everything a resumed run needs, in ``checkpoint_last.pt``."""
        state = {name: obj.state_dict() for name, obj in (self.resume_dict or {}).items()}
        scaler = _grad_scaler(engine)
        if scaler is not None:
            state[_SCALER_KEY] = scaler.state_dict()
        state["trainer"] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration,
                            "max_epochs": engine.state.max_epochs}
        state[_RNG_KEY] = _rng_state()
        state["saver"] = self.state_dict()
        if self._best_state is not None:
            state["best_model"] = self._best_state
        path = self.save(RESUME_FILE, state)
        if self._best_pending:  # after checkpoint_last.pt: a crash before this line resumes with this model
            self.save(self.key_metric_filename, self._best_state)
            self._best_pending = False
        return path

    def resume(self, engine: Engine) -> int:
        """Load ``checkpoint_last.pt`` into the resume objects and the trainer; returns the epoch resumed after.

        Raises:
            DataError: the file is unreadable or does not fit (another model, optimiser or schedule).
        """
        path = self.save_dir / RESUME_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DataError(path, _unreadable(e)) from e
        # an object marked ``resume_optional`` (state added in a later version, e.g. the batch augmentation's
        # generator) may be absent: it then starts again as it would in a new run
        optional = {k for k, obj in (self.resume_dict or {}).items() if getattr(obj, "resume_optional", False)}
        missing = [k for k in (*(self.resume_dict or {}), "trainer", "saver") if k not in state and k not in optional]
        if missing:
            raise DataError(path, f"not a resumable checkpoint of this run (no {', '.join(missing)})")
        for name, obj in (self.resume_dict or {}).items():
            if name not in state:
                logger.warning("%s: no saved state of the %s (a checkpoint from an earlier mednet): it starts again "
                               "as in a new run", path, name)
                continue
            try:
                obj.load_state_dict(state[name])  # type: ignore[attr-defined]
            except (RuntimeError, ValueError, KeyError) as e:
                raise DataError(path, f"cannot resume the {name} ({_first_sentence(str(e))}); was the run started "
                                      "with other settings? Start a new run instead") from e
        self.load_state_dict(state["saver"])
        epoch, max_epochs = int(state["trainer"]["epoch"]), engine.state.max_epochs
        iteration = int(state["trainer"]["iteration"])
        self.resumed_from_epoch = epoch
        if max_epochs is not None and epoch >= max_epochs and (self.save_dir / FINISHED_FILE).is_file():
            raise DataError(path, f"the run already completed {epoch} of {max_epochs} epochs; nothing to resume "
                                  "(its model.pt can be used with --ckpt_path; to train longer, start a new run)")
        if "best_model" in state:  # model.pt may hold a later, discarded epoch's weights (killed before this file)
            self._best_state = state["best_model"]
            self.save(self.key_metric_filename, self._best_state)
        if state.get(_SCALER_KEY):  # empty or absent: saved before the scaler's first step, or without AMP
            scaler_state = state[_SCALER_KEY]

            # MONAI's Trainer.run() makes a new GradScaler just before Engine.run (and there is none yet when the
            # handlers are attached): the loss scale is loaded once the run has started
            def restore_scaler(trainer: Engine) -> None:
                scaler = _grad_scaler(trainer)
                if scaler is not None:
                    scaler.load_state_dict(scaler_state)

            engine.add_event_handler(Events.STARTED, restore_scaler)
        if state.get(_RNG_KEY):  # at STARTED: after the run's own seeding, before the first batch is drawn
            rng = state[_RNG_KEY]
            engine.add_event_handler(Events.STARTED, lambda _: _set_rng_state(rng))
        if max_epochs is not None and epoch >= max_epochs:
            # every epoch was trained but the run stopped in a step after training (the dermoscopy bundle's
            # calibration, or before finished.json): train nothing and let the run go on to those steps. Ignite would
            # start a *new* run on a state that is already done, so the epoch is set once the run has started.
            def skip_training(trainer: Engine) -> None:
                trainer.state.epoch, trainer.state.iteration = epoch, iteration
                trainer.terminate()  # COMPLETED still fires: model_final.pt is (re)written from the last epoch

            engine.add_event_handler(Events.STARTED, skip_training)
            logger.info("%s trained all %d epochs before it was stopped: going on with the steps after training",
                        self.save_dir, epoch)
            return epoch
        engine.state.epoch, engine.state.iteration = epoch, iteration
        logger.info("resuming %s after epoch %d of %s (best %s so far: %s at epoch %s)", self.save_dir, epoch,
                    max_epochs, self.key_metric_name or "metric", self.best_metric, self.best_epoch)
        return epoch

    def save(self, filename: str, state: Mapping[str, object] | None = None) -> Path:
        """Write ``state`` (default: the current state of ``save_dict``) to ``save_dir/filename`` atomically
        (rank 0 only)."""
        import ignite.distributed as idist

        path = self.save_dir / filename
        if idist.get_rank() == 0:
            with atomic_path(path) as tmp:
                torch.save(state_to_save(self.save_dict) if state is None else state, tmp)
        return path

    def _metric_name(self, evaluator: Engine) -> str:
        name = self.key_metric_name or getattr(evaluator.state, "key_metric_name", None)
        if not name or name not in evaluator.state.metrics:
            raise KeyError(f"key metric {name!r} not among the evaluator's metrics {sorted(evaluator.state.metrics)}")
        return name

    def _better(self, value: float) -> bool:
        if self.best_metric is None or math.isnan(self.best_metric):
            return True  # the first validation always gives a model.pt, even a NaN one
        if math.isnan(value):
            return False
        return value > self.best_metric if self.mode == "max" else value < self.best_metric

    def validated(self, evaluator: Engine) -> None:
        """After a validation: save the best model if the key metric improved (strictly)."""
        name = self._metric_name(evaluator)
        value = float(evaluator.state.metrics[name])
        if not self._better(value):
            return
        epoch = self._trainer.state.epoch if self._trainer is not None else evaluator.state.epoch
        path = self.save_dir / self.key_metric_filename
        if self.resume_dict is None:
            self.save(self.key_metric_filename)
        else:  # written at the end of the epoch, after checkpoint_last.pt (see the class docstring)
            self._best_state = _cpu_copy(state_to_save(self.save_dict))
            self._best_pending = True
        self.best_metric, self.best_epoch = value, int(epoch)
        logger.info("best %s %.4f at epoch %d -> %s", name, value, epoch, path)

    def completed(self, engine: Engine) -> None:
        """Training completed: save the final model, then (``mark_finished``) write the completion marker."""
        if self._best_pending:  # a run stopped inside an epoch's handlers (terminate) before save_last
            self.save(self.key_metric_filename, self._best_state)
            self._best_pending = False
        if self.final_filename:
            self.save(self.final_filename)
        if self.mark_finished:
            self.write_finished_marker()

    def write_finished_marker(self) -> Path:
        """Write ``finished.json`` (rank 0): epochs, key metric, best metric and epoch, models, elapsed time.

        Called at the trainer's ``COMPLETED`` when ``mark_finished``; with ``mark_finished=False`` (the bundles)
        the run's last step calls it through :func:`finish_run`, after whatever the run does once training is over
        (the dermoscopy bundle fits its calibration on the best model), so a run killed in that step is not taken
        for a finished one.

        Raises:
            RuntimeError: the handler was never attached to a trainer.
        """
        import ignite.distributed as idist

        trainer = self._trainer
        if trainer is None:
            raise RuntimeError(f"{self.save_dir}: this checkpoint saver was never attached to a trainer")
        path = self.save_dir / FINISHED_FILE
        if idist.get_rank() == 0:
            name = self.key_metric_name or (getattr(self.evaluator.state, "key_metric_name", None)
                                            if self.evaluator is not None else None)
            path = _mark_finished(self.save_dir, epochs=trainer.state.epoch, max_epochs=trainer.state.max_epochs,
                                  key_metric=name, best_metric=self.best_metric, best_epoch=self.best_epoch,
                                  best_model=self.key_metric_filename if self.best_epoch is not None else None,
                                  final_model=self.final_filename,
                                  elapsed_s=round(self._elapsed_before + time.time() - self._start, 1),
                                  resumed_after_epoch=self.resumed_from_epoch)
        return path


def finish_run(trainer: Engine) -> Path:
    """Mark the run of ``trainer`` finished: ``finished.json`` from the :class:`AtomicCheckpointSaver` attached to it.

    The last step of a bundle's run list (``"$mednet.engines.checkpoints.finish_run(@train#trainer)"``): the saver
    sits inline in the shared ``train_handlers`` list, as MONAI's property check requires of handlers, so the run
    list reaches it through the trainer it was attached to.

    Raises:
        RuntimeError: no :class:`AtomicCheckpointSaver` was attached to ``trainer``.
    """
    reference = _SAVERS.get(trainer)
    saver = reference() if reference is not None else None
    if saver is None:
        raise RuntimeError("no AtomicCheckpointSaver is attached to this trainer: nothing can mark its run finished")
    return saver.write_finished_marker()


def _first_sentence(text: str, limit: int = 200) -> str:
    sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def _unreadable(e: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line.

    torch's messages run to 10–40 lines. For a file holding more than tensors (a pickle that imports e.g.
    ``os.system``: possibly malicious) its first lines advise retrying with ``weights_only=False``, which would
    run that code; so keep the first sentence, add torch's line naming the refused object, and say why it is
    refused. Otherwise (truncated or corrupt file, not a PyTorch file) torch's first sentence says enough.
    """
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    first = _first_sentence(lines[0]) if lines else type(e).__name__
    if isinstance(e, pickle.UnpicklingError) and first.lower().startswith("weights only load failed"):
        what = next((line for line in lines[1:] if re.search(r"GLOBAL|WeightsUnpickler|unsupported", line)), "")
        what = _first_sentence(re.sub(r"^WeightsUnpickler error:\s*", "", what)).rstrip(".")
        return (f"refused to load the checkpoint: {first.rstrip('.')}{f' ({what})' if what else ''} — it holds "
                "Python objects besides tensors, which could run code when loaded; use a model.pt written by "
                "mednet training or one from a source you trust")
    return f"cannot read checkpoint (truncated, corrupt or not a PyTorch file? {type(e).__name__}: {first})"


def _state_dict(obj: object, path: Path) -> dict:
    if isinstance(obj, dict) and "network" in obj and isinstance(obj["network"], dict):
        obj = obj["network"]  # MONAI CheckpointSaver with several objects
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(path, "not a network checkpoint (expected a state_dict of tensors)")
    return obj


def load_weights(network: torch.nn.Module, ckpt_path: str | os.PathLike, map_location: str | torch.device = "cpu",
                 hint: str = "", settings: dict | None = None) -> torch.nn.Module:
    """Load a state dict saved by training into ``network`` (``torch.load(weights_only=True)``).

    ``settings`` (e.g. ``{"variant": ..., "views": ...}``) are checked against the training run's
    ``settings.json`` first (:func:`mednet.runs.check_run_settings`). A symbolic link is followed to the file
    first: the run whose settings are checked is the one that holds the weights loaded (``shared/best.pt ->
    run/model.pt`` is checked against ``run/settings.json``, not against the link's folder).

    Besides a plain state dict, the network's part of a checkpoint holding several objects is read (``{"network":
    state_dict, ...}``: MONAI's ``CheckpointSaver``, or a ``checkpoint_last.pt`` given as ``--ckpt_path``).

    Raises:
        DataError: the file is missing, unreadable, not a state dict, or its tensors do not match the network
            (e.g. trained with another variant/width) — the message names the file and the mismatch, plus ``hint``.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    path = path.resolve()
    if settings:
        check_run_settings(path, settings)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise DataError(path, _unreadable(e)) from e
    sd = _state_dict(obj, path)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(sd) & set(expected) if sd[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]}: {tuple(sd[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)})")
        raise DataError(path, f"checkpoint does not match the network {type(network).__name__}: " + "; ".join(parts)
                        + (f". {hint}" if hint else ""))
    network.load_state_dict(sd)
    return network
