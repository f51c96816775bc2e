"""Helpers shared by the benchmarks: a demo cohort on demand, the brain bundle's config parsed from Python."""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ensure_cohort(path: str, subjects: int = 6, zoom: float = 1.0, seed: int = 0) -> Path:
    """``path`` if it holds a datalist, else build a demo cohort there.

    A demo cohort (one with ``cohort.csv``) made by another generator than this mednet's is refused: its subjects
    are not what ``seed`` gives now. A folder without a datalist is built into only when it is empty or holds
    nothing but a cohort build that stopped before its datalist (``images/``, ``labels/``, ``cohort.csv``);
    anything else there is refused by :func:`build_demo_cohort`, never deleted.
    """
    from mednet.data.brain_demo_cohort import GENERATOR, build_demo_cohort
    from mednet.io import TEMP_MARKER

    p = Path(path)
    record = p / "cohort.csv"
    if (p / "datalist.json").is_file():
        if record.is_file():
            with open(record, encoding="utf-8", newline="") as f:
                made_by = next(csv.DictReader(f), {}).get("generator")
            if made_by != GENERATOR:
                raise SystemExit(f"mednet error: {record}: this demo cohort was made by "
                                 f"{made_by or 'an earlier mednet'}, not by {GENERATOR}; delete {p} or choose another folder")
        return p
    half_built = p.is_dir() and all(
        (f.name == "cohort.csv" and f.is_file())
        or (f.name in ("images", "labels") and f.is_dir() and all(g.name.startswith("sub-") or TEMP_MARKER in g.name for g in f.iterdir()))
        for f in p.iterdir())
    build_demo_cohort(out=str(p), subjects=subjects, zoom=zoom, seed=seed, overwrite=half_built)
    return p


def brain_parser(config: str = "train", **overrides):
    """The brain bundle's ``config`` as a MONAI ``ConfigParser`` (run from the repository root)."""
    import os

    from monai.bundle import ConfigParser

    os.chdir(REPO)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "brain_tissue_fcn" / "configs" / f"{config}.json"))
    parser.update(overrides)
    return parser


def baseline_loader(n4: bool = False):
    """``LoadLabelledVolumed`` for the intensity baselines: the scan's own intensities ÷ brain mean (``scale``),
    not clipped (the product clips to the brain's 0.5–99.5th percentiles; a baseline on raw intensities does not),
    without bias-field correction (the loader's default is N4) or, with ``n4``, after the product's N4.

    Raises ``RuntimeError`` for ``n4`` when this mednet's loader has no ``bias_correction`` option.
    """
    import inspect

    from mednet.data.transforms import LoadLabelledVolumed

    params = inspect.signature(LoadLabelledVolumed).parameters
    raw = {"clip_percentiles": None} if "clip_percentiles" in params else {}
    if "bias_correction" not in params:
        if n4:
            raise RuntimeError("LoadLabelledVolumed has no bias_correction option in this mednet")
        return LoadLabelledVolumed(intensity_normalization="scale", **raw)
    return LoadLabelledVolumed(intensity_normalization="scale", bias_correction="n4" if n4 else "none", **raw)


def add_device_argument(parser) -> None:
    """``--device auto|cpu|cuda`` (``auto``: the bundles' own rule, CUDA when present)."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run (auto: CUDA when present, as the bundles do); AMP on CUDA, as the bundles")


def resolve_device(name: str, parser: argparse.ArgumentParser | None = None):
    """The ``torch.device`` for ``--device`` (``auto`` → CUDA when available, else CPU).

    ``--device cuda`` without a GPU is refused through ``parser.error`` when ``parser`` is given (exit 2, usage
    line), like any other bad argument, before the benchmark builds or times anything.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        message = "--device cuda: no CUDA device is available (use --device cpu or auto)"
        if parser is not None:
            parser.error(message)
        raise SystemExit(message)
    return torch.device(name)


def device_overrides(device) -> dict:
    """Bundle overrides that pin ``device`` and the AMP rule of ``bundles/common/runtime.json`` (AMP on CUDA)."""
    return {"device": f"$torch.device('{device.type}')", "amp": device.type == "cuda"}


def synchronize(device) -> None:
    """Wait for queued GPU work, so that a wall-clock timer measures it (no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=``: an integer ≥ ``minimum``.

    Checked while parsing, so a bad count is refused at once through ``parser.error`` (exit 2, the option named)
    instead of failing after minutes of work (``--epochs 0``: at the end of training; ``--repeats 0``: ``min()``
    of nothing).
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


#: counts, sizes, epochs, repeats, threads
positive_int = int_at_least(1)
#: counts where 0 means "skip"
non_negative_int = int_at_least(0)


def int_list(minimum: int = 1, allowed: tuple[int, ...] | None = None) -> Callable[[str], list[int]]:
    """An argparse ``type=``: comma-separated integers, each ≥ ``minimum`` (and one of ``allowed`` if given), at
    least one (see :func:`int_at_least` for why at parsing). argparse applies it to a string default too."""
    rule = f"each one of {', '.join(map(str, allowed))}" if allowed else f"each >= {minimum}"

    def parse(text: str) -> list[int]:
        try:
            values = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"comma-separated integers {rule}, got {text!r}") from None
        if not values or min(values) < minimum or (allowed and not set(values) <= set(allowed)):
            raise argparse.ArgumentTypeError(f"comma-separated integers {rule}, got {text!r}")
        return values

    parse.__name__ = "int_list"
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type=``: a finite number > 0 (see :func:`int_at_least` for why at parsing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def cli_path(text: str) -> Path:
    """An argparse ``type=``: the path made absolute against the current directory, at parsing.

    The benchmarks change directory to the repository (the bundles' configs are relative to it); a relative
    ``--dataset_dir`` resolved after that would point into the repository instead of where the user ran from.
    """
    return Path(text).expanduser().resolve()


def default_output(name: str) -> Path:
    """``runs/<name>/<time>/`` in the repository: a fresh folder per run, the benchmarks' default output."""
    return REPO / "runs" / name / time.strftime("%Y%m%d-%H%M%S")


@dataclass
class PairedRounds:
    """Rates (items/s) of a baseline and a measured side, one of each per round."""

    baseline: list[float]
    measured: list[float]

    @property
    def ratios(self) -> list[float]:
        """measured / baseline per round: paired, so load drift that hits one round hits both sides alike."""
        return [m / b for m, b in zip(self.measured, self.baseline)]

    @property
    def median_ratio(self) -> float:
        """The headline: median of the paired ratios (of the two middle ones for an even count of rounds)."""
        return statistics.median(self.ratios)


def paired_rounds(baseline: Callable[[], float], measured: Callable[[], float], rounds: int, *,
                  warmup: tuple[Callable[[], object], Callable[[], object]] | None = None,
                  names: tuple[str, str] = ("plain", "bundle"), unit: str = "items/s", indent: str = "",
                  log: Callable[[str], object] | None = print) -> PairedRounds:
    """Run ``baseline`` and ``measured`` (each returns its rate) ``rounds`` times, back to back.

    ``warmup`` (one call per side, baseline first, untimed) comes before the first round: the first calls of a
    process pay one-off costs (lazy imports, allocator growth, kernel selection) that would otherwise all fall on
    round 1's first side (measured without it: ratio 1.135 in round 1, 0.829 in round 2). The order alternates
    (baseline first in odd rounds, measured first in even ones), so that what the first side of a round leaves
    behind (caches, clock boost, heat) favours neither side. ``log`` gets one line per round (``None``: silent).
    """
    if warmup is not None:
        for call in warmup:
            call()
    result = PairedRounds([], [])
    sides = (baseline, measured)
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        rates = {i: sides[i]() for i in order}
        result.baseline.append(rates[0])
        result.measured.append(rates[1])
        if log is not None:
            log(f"{indent}round {r + 1} ({names[order[0]]} then {names[order[1]]}): {names[0]} {rates[0]:.0f} {unit}, "
                f"{names[1]} {rates[1]:.0f} {unit}, ratio {rates[1] / rates[0]:.3f}")
    return result
