"""Reports: tables (CSV + Markdown), JSON and PNG figures, shared by every bundle."""

from mednet.reports.plots import plot_confusion_matrix, plot_convergence, save_figure
from mednet.reports.slice_figures import plot_tissue_slices
from mednet.reports.tables import markdown_table, write_csv, write_json, write_table

# last: calibration plots import mednet.metrics, which imports mednet.data, whose writers use the tables above
# (augmentation_figure depends on mednet.data too: configs reference it by "_target_", which imports it)
from mednet.reports import calibration  # noqa: E402,F401  (bundle configs use mednet.reports.X.Y)

__all__ = ["plot_confusion_matrix", "plot_convergence", "plot_tissue_slices", "save_figure", "markdown_table",
           "write_csv", "write_json", "write_table"]
