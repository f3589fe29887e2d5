"""``annotator export``: a pipeline run as a Hugging Face ``DatasetDict`` (Arrow + Parquet + dataset card)."""

from annotator.export.dataset_builder import ExportOptions, ExportSummary, export_run

__all__ = ["ExportOptions", "ExportSummary", "export_run"]
