"""Reports: tables (CSV + Markdown), JSON and PNG figures, shared by every bundle."""

from mednet.reports import augmentation_figure, calibration  # noqa: F401  (bundle configs use mednet.reports.X.Y)
from mednet.reports.plots import plot_confusion_matrix, plot_convergence, save_figure
from mednet.reports.slice_figures import plot_tissue_slices
from mednet.reports.tables import markdown_table, write_csv, write_json, write_table

__all__ = ["plot_confusion_matrix", "plot_convergence", "plot_tissue_slices", "save_figure", "markdown_table", "write_csv", "write_json", "write_table"]
