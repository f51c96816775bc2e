"""Tissue label convention shared by every brain module."""

from __future__ import annotations

__all__ = ["BACKGROUND", "TISSUE_LABELS", "TISSUE_NAMES", "LABEL_NAMES", "NUM_TISSUES"]

BACKGROUND = 0
#: label value -> name, background included (label volumes store these values)
LABEL_NAMES: dict[int, str] = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
#: the label values a network predicts (network channel ``c`` is label ``c + 1``)
TISSUE_LABELS: tuple[int, ...] = (1, 2, 3)
TISSUE_NAMES: tuple[str, ...] = tuple(LABEL_NAMES[v] for v in TISSUE_LABELS)
NUM_TISSUES = len(TISSUE_LABELS)
