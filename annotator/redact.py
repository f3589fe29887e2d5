"""Keep secrets (API keys) out of every message, record, file and log line.

What is a secret: a value a backend registers (:func:`register_secret`: the API key), the value of every ``${VAR}``
of a pipeline file whose name looks like a secret's (:func:`is_secret_name`: ``KEY``, ``TOKEN``, ``SECRET``,
``PASSWORD``, ...; registered by :func:`annotator.config.expand_env`), and inside any URL the userinfo
(``user:pass@``) and the value of every query parameter named like a secret (``?api-key=...``, ``&token=...``).

:func:`redact` replaces all of these in a text with ``***``; :func:`redact_data` in every string of a JSON-like value.
They are applied where provenance is made or shown: the teacher's ``model_id`` (records, cache, run.json, card,
summary), the effective config and ``--set`` overrides in ``run.json``, every ``--json`` document, error messages (the
openai backend, the CLI's error line), teacher text before it is stored, and every log record as it is made
(:func:`install_log_redaction`, installed by the first :func:`register_secret`).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
MIN_SECRET_CHARS = 6  # shorter values (placeholders such as "x") would redact ordinary words

_secrets: set[str] = set()
_SECRET_NAME = re.compile(
    r"key|token|secret|passw|pwd|credential|auth|signature|sig$|^sig|cookie|session", re.IGNORECASE
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`]+")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable or a URL query parameter named ``name`` holds a secret (by its name)."""
    return bool(_SECRET_NAME.search(name.replace("-", "_")))


def _redact_url(match: re.Match[str]) -> str:
    url = match.group(0)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def register_secret(value: str | None) -> None:
    """Redact ``value`` from now on, in messages and log records (ignored when empty or too short to be a real
    secret)."""
    if value and len(value.strip()) >= MIN_SECRET_CHARS:
        _secrets.add(value.strip())
        install_log_redaction()


def redact(text: str) -> str:
    """``text`` with every registered secret, and the credentials inside every URL, replaced by ``***``."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "://" in text:
        text = _URL.sub(_redact_url, text)
    return text


def redact_data(data: Any) -> Any:
    """``data`` (dicts, lists, strings, numbers) with :func:`redact` applied to every string in it."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message with secrets redacted (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
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
