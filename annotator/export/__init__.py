"""``annotator export``: a pipeline run as a Hugging Face ``DatasetDict`` (Arrow + Parquet + dataset card)."""

from annotator.export.dataset_builder import export_run
from annotator.export.summary import ExportOptions, ExportSummary

__all__ = ["ExportOptions", "ExportSummary", "export_run"]
