"""Train and evaluate all four FCN variants on the same data; write the course exercise's comparison table.

    python -m mednet.app.compare_variants --dataset_dir demo/cohort [--epochs 3] [--out runs/compare]
        [--variants unpool,transposed,strided,skip] [--max_patches_per_volume 10000]

For each variant: the bundle's ``train.json``, then ``evaluate.json`` on the ``training`` and ``test``
splits. Writes ``<out>/variants-<time>/variants_<protocol>.{md,csv}`` — one row per variant and split with
Dice and pixel accuracy per class and their average — for the whole-volume and the grid-patch protocols.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mednet.app.bundles import run_bundle
from mednet.data.tissue_labels import TISSUE_NAMES
from mednet.networks import FCN_VARIANTS
from mednet.reports.tables import write_table
from mednet.runs import new_run_dir

__all__ = ["compare_variants"]

_PROTOCOLS = {"whole volume": "whole_volume", "grid patches": "grid_patches"}


def compare_variants(dataset_dir: str = "demo/cohort", epochs: int = 3, out: str = "runs/compare",
                     variants: str | tuple = FCN_VARIANTS, max_patches_per_volume: int | None = 10000, seed: int = 0,
                     loss: str = "ce") -> Path:
    """Run the comparison; returns the folder holding the tables."""
    names = variants.split(",") if isinstance(variants, str) else list(variants)
    unknown = [v for v in names if v not in FCN_VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {FCN_VARIANTS}")
    out_dir = new_run_dir(Path(out).resolve(), "variants")  # absolute: run_bundle works from the checkout root
    runs_root = str(out_dir / "runs")
    dataset_dir = str(Path(dataset_dir).resolve())
    rows: dict[str, list[dict]] = {p: [] for p in _PROTOCOLS}
    for variant in names:
        train = run_bundle("brain_tissue_fcn", "train", dataset_dir=dataset_dir, variant=variant, epochs=epochs,
                           runs_root=runs_root, seed=seed, loss=loss, max_patches_per_volume=max_patches_per_volume)
        ckpt = str(Path(train.parser.get_parsed_content("output_dir")) / "model.pt")
        for split in ("training", "test"):
            ev = run_bundle("brain_tissue_fcn", "evaluate", dataset_dir=dataset_dir, variant=variant, ckpt_path=ckpt,
                            split=split, runs_root=runs_root)
            summary = json.loads((Path(ev.parser.get_parsed_content("output_dir")) / "summary.json").read_text(encoding="utf-8"))
            for protocol, key in _PROTOCOLS.items():
                o = next(v for k, v in summary["protocols"].items() if k == protocol)
                rows[protocol].append({"model": variant, "split": split,
                                       **{f"Dice {n}": o[f"dice_{n}"] for n in TISSUE_NAMES}, "Dice avg": o["mean_dice"],
                                       **{f"Acc {n}": o[f"acc_{n}"] for n in TISSUE_NAMES}, "Acc avg": o["mean_acc"]})
    for protocol, key in _PROTOCOLS.items():
        csv_path, md_path = write_table(pd.DataFrame(rows[protocol]), out_dir / f"variants_{key}",
                                        title=f"FCN variants, {epochs} epoch(s), {protocol}")
        print(md_path.read_text(encoding="utf-8"))
    print(f"comparison tables in {out_dir}")
    return out_dir


if __name__ == "__main__":
    from mednet.cli import run_cli

    run_cli(compare_variants)
