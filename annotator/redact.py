"""Keep secrets (API keys) out of every message, record and log line.

A backend registers the secrets it holds (:func:`register_secret`); :func:`redact` replaces each of them in a
text with ``***``. Error messages are redacted where they are formatted (the openai backend, the CLI's error
line), teacher text before it is stored, and every log record as it is made (:func:`install_log_redaction`,
installed by the first :func:`register_secret`).
"""

from __future__ import annotations

import logging
from typing import Any

REDACTED = "***"
MIN_SECRET_CHARS = 6  # shorter values (placeholders such as "x") would redact ordinary words

_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact ``value`` from now on, in messages and log records (ignored when empty or too short to be a real
    secret)."""
    if value and len(value.strip()) >= MIN_SECRET_CHARS:
        _secrets.add(value.strip())
        install_log_redaction()


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message with secrets redacted (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction() -> None:
    """Redact every log record from now on, whatever handler it goes to: records are cleaned as they are made
    (a log-record factory), so handlers configured later are covered too. Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return
    cleaner = RedactingFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        cleaner.filter(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
