"""Ignite handlers shared by every bundle: progress bar, per-epoch metrics CSV + convergence plot.

(Task reports: :mod:`mednet.engines.segmentation_report`, :mod:`mednet.engines.classification_report`.) They are plain Ignite handlers with an ``attach(engine)`` method, so MONAI workflows take them in their
``train_handlers`` / ``val_handlers`` lists like MONAI's own. Every file they write goes through
:func:`mednet.io.atomic_path` (complete old or complete new version, never half-written).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar as _IgniteProgressBar

from mednet.reports.plots import plot_convergence
from mednet.reports.tables import write_csv

__all__ = ["EpochMetricsWriter", "ProgressBar"]

logger = logging.getLogger(__name__)


def _scalar(v: object) -> float | None:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v)
    if isinstance(v, (int, float, np.floating, np.integer)):
        return float(v)
    return None


class ProgressBar(_IgniteProgressBar):
    """Ignite's tqdm progress bar, advanced every ``every`` iterations.

    Ignite's bar calls ``set_description`` (a forced redraw) at every iteration, which ignores tqdm's
    ``mininterval``: with 16-patch batches that is hundreds of redraws a second, flooding logs written to a
    file and costing training throughput. ``attach(engine)`` (as MONAI calls it) uses
    ``ITERATION_COMPLETED(every=every)`` instead.
    """

    def __init__(self, every: int = 25, **kwargs) -> None:
        super().__init__(**kwargs)
        self.every = every

    def attach(self, engine: Engine, metric_names=None, output_transform=None, event_name=None,  # type: ignore[override]
               closing_event_name=Events.EPOCH_COMPLETED, state_attributes=None) -> None:
        event = event_name if event_name is not None else Events.ITERATION_COMPLETED(every=self.every)
        super().attach(engine, metric_names, output_transform, event, closing_event_name, state_attributes)


class EpochMetricsWriter:
    """After every epoch add the trainer's and evaluator's scalar metrics to ``metrics.csv`` and redraw
    ``convergence.png`` (one panel per group of columns: ``plot_groups``, from the task — e.g.
    :data:`mednet.metrics.segmentation.CONVERGENCE_GROUPS`; default loss / training / validation).

    A redraw costs 0.3–0.6 s on a 2-core CPU (matplotlib's text layout; more panels cost more). That is nothing
    next to a real epoch, but it dominated runs with epochs of a second or less (the study's and the tests' tiny
    runs spent a third of their time drawing). So the figure is redrawn only while drawing has taken at most
    ``max_plot_share`` of the run's time so far, and always after the last epoch (or when training stops
    early): real runs get a redraw every epoch, short epochs every few.

    Attach it *after* MONAI's ``ValidationHandler`` so the row holds this epoch's validation metrics. An epoch
    without a validation (``--val_interval`` > 1) gets empty validation cells, not the previous validation's
    values (the evaluator's ``state.metrics`` persist between its runs), and columns that first appear in a later
    epoch (the first validation's) are added, so the file keeps every metric. The CSV
    is rewritten whole from the rows kept in memory (a few hundred bytes per epoch) and atomically, rather
    than appended to: an append interrupted by a crash would leave a truncated last row.

    Args:
        output_dir: the run directory.
        evaluator: the validation engine whose ``state.metrics`` are added (optional).
        plot: redraw ``convergence.png``.
        plot_groups: panel title → metric columns (see :func:`mednet.reports.plots.plot_convergence`).
        max_plot_share: most of the elapsed run time that redrawing may take before an epoch's redraw is skipped.
    """

    def __init__(self, output_dir: str | os.PathLike, evaluator: Engine | None = None, plot: bool = True,
                 plot_groups: dict[str, list[str]] | None = None, max_plot_share: float = 0.1) -> None:
        self.plot_groups = plot_groups
        self.max_plot_share = max_plot_share
        self._plot_seconds = 0.0
        self._plotted_epoch = 0
        self.output_dir = Path(output_dir)
        self.evaluator = evaluator
        self.plot = plot
        self.csv_path = self.output_dir / "metrics.csv"
        self.png_path = self.output_dir / "convergence.png"
        self._start = time.perf_counter()
        self._columns: list[str] | None = None
        self.rows: list[dict[str, float | int]] = []
        self._validated = False  # the evaluator ran since the last row

    def attach(self, engine: Engine) -> None:
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.COMPLETED, self._evaluated)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _evaluated(self, _: Engine) -> None:
        self._validated = True

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self.rows, self._columns = [], None
        self._plot_seconds, self._plotted_epoch = 0.0, engine.state.epoch  # earlier epochs were drawn by their run
        if engine.state.epoch > 0 and self.csv_path.is_file():  # a resumed run keeps the rows of its earlier epochs
            earlier = pd.read_csv(self.csv_path, encoding="utf-8")
            earlier = earlier[earlier["epoch"] <= engine.state.epoch]
            self.rows, self._columns = earlier.to_dict("records"), list(earlier.columns)
            if "elapsed_s" in earlier and len(earlier):
                self._start -= float(earlier["elapsed_s"].iloc[-1])

    def __call__(self, engine: Engine) -> None:
        row: dict[str, float | int] = {"epoch": engine.state.epoch}
        sources = (engine, self.evaluator if self._validated else None)
        self._validated = False
        for source in sources:
            if source is None:
                continue
            for k, v in source.state.metrics.items():
                s = _scalar(v)
                if s is not None:
                    row[k] = s
        row["elapsed_s"] = round(time.perf_counter() - self._start, 2)
        if self._columns is None:
            self._columns = list(row)
        for k in row:  # a metric first seen now (the first validation after epoch 1): a new column before the time
            if k not in self._columns:
                self._columns.insert(self._columns.index("elapsed_s") if "elapsed_s" in self._columns
                                     else len(self._columns), k)
        self.rows.append(row)
        write_csv(pd.DataFrame(self.rows).reindex(columns=self._columns), self.csv_path)
        last = engine.state.max_epochs is not None and engine.state.epoch >= engine.state.max_epochs
        within_budget = self._plot_seconds <= self.max_plot_share * (time.perf_counter() - self._start)
        if self.plot and (last or within_budget):
            self._draw(engine.state.epoch)

    def _draw(self, epoch: int) -> None:
        started = time.perf_counter()
        plot_convergence(self.csv_path, self.png_path, self.plot_groups)
        self._plot_seconds += time.perf_counter() - started
        self._plotted_epoch = epoch

    def _completed(self, engine: Engine) -> None:
        """Training ended (early stopping included): the figure shows every epoch of ``metrics.csv``."""
        if self.plot and self.rows and self._plotted_epoch < int(self.rows[-1]["epoch"]):
            self._draw(int(self.rows[-1]["epoch"]))
