"""Reports: tables (CSV + Markdown), JSON and PNG figures, shared by every bundle."""

from mednet.reports.plots import plot_confusion_matrix, plot_convergence, plot_slices
from mednet.reports.tables import markdown_table, write_csv, write_json, write_table

__all__ = ["plot_confusion_matrix", "plot_convergence", "plot_slices", "markdown_table", "write_csv", "write_json", "write_table"]
