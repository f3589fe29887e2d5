"""annotator: turn a strong LLM (the teacher) into an audited data annotator."""

__version__ = "0.1.0"
