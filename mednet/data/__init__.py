"""Data: volume readers and checks, datalists, 3D→2D slicing, balanced patches, datasets, transforms."""

from mednet.data import augment, bias_field, dermoscopy, lesion_images, lesion_split, scan_checks, splits  # noqa: F401  (bundle configs use mednet.data.X.Y)
from mednet.data.datalist import SPLITS, check_disjoint_splits, find_datalist, load_datalist, write_datalist
from mednet.data.datasets import CohortPatches, PatchDataset, extract_cohort_patches, volume_dataset
from mednet.errors import DataError
from mednet.data.tissue_labels import LABEL_NAMES, TISSUE_LABELS, TISSUE_NAMES
from mednet.data.patches import (
    GridPatches,
    PatchSet,
    class_distribution,
    extract_balanced_patches,
    grid_patches,
    reassemble_grid,
)
from mednet.data.readers import SimpleITKReader
from mednet.data.slicing import SliceStack, slice_volume
from mednet.data.transforms import LoadLabelledVolumed, SaveLabelVolumed, TissueLabels, TissueLabelsd
from mednet.data.volumes import (
    check_label_values,
    load_labelled_volume,
    load_volume,
    normalize_brain_intensity,
    save_label_volume,
)

__all__ = [
    "SPLITS", "check_disjoint_splits", "find_datalist", "load_datalist", "write_datalist",
    "CohortPatches", "PatchDataset", "extract_cohort_patches", "volume_dataset",
    "DataError", "LABEL_NAMES", "TISSUE_LABELS", "TISSUE_NAMES",
    "GridPatches", "PatchSet", "class_distribution", "extract_balanced_patches", "grid_patches", "reassemble_grid",
    "SimpleITKReader", "SliceStack", "slice_volume",
    "LoadLabelledVolumed", "SaveLabelVolumed", "TissueLabels", "TissueLabelsd",
    "check_label_values", "load_labelled_volume", "load_volume", "normalize_brain_intensity", "save_label_volume",
]
