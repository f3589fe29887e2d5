"""A small, real OpenAI-compatible HTTP server (``POST /v1/chat/completions``) that injects faults.

Pure asyncio (no web framework): HTTP/1.1 with keep-alive, fast enough for thousands of requests per second
on one core, so it can serve as the fixed-latency teacher of ``make bench`` too.

Answers are valid and deterministic: the JSON schema in ``response_format`` is read (OpenAI ``json_schema`` or
llama.cpp-style ``json_object`` + ``schema``) and an instance is generated from it; a label enum is answered
with ``labels[sha256(text) % len(labels)]`` (see :func:`expected_label`), a ``rationale`` field echoes the item
text (so a test can map cached answers back to items).

Faults, by marker in the item text (the part of the prompt after ``Text:``):

    [[429]]  [[500]]  [[503]] ... any HTTP status   (429 carries Retry-After: <retry_after> seconds)
    [[timeout]]      accept the request and never answer (until ``hang`` seconds pass)
    [[drop]]         close the connection without an answer
    [[malformed]]    200 with content that is not JSON
    [[schema]]       200 with JSON that violates the schema (label not in the enum)
    [[length]]       200 with truncated JSON and finish_reason "length"
    [[garbage]]      200 whose HTTP body is not JSON at all
    [[nochoices]]    200 with an empty ``choices`` list
    [[wrongshape]]   200 with JSON that is not a chat completion (``choices`` is a string)
    [[trickle]]      200 whose body is sent one byte every ``trickle_interval`` seconds (a slow-loris server)
    [[huge]]         200 whose content is ``huge_chars`` characters of non-JSON text (a runaway answer)
    [[twojson]]      200 whose content holds two JSON answers that disagree
    [[echokey]]      500 whose error message echoes the request's ``Authorization`` header (the API key);
                     [[echokey401]] the same with status 401 (any status)
    [[tellschema]]   [[schema]] until the request re-asks (``validation.on_invalid: reask``): its last message is a
                     user message after the invalid answer that states the validation error ("schema violation");
                     then a valid answer. [[telljson]] the same with [[malformed]] ("not valid JSON");
                     [[deaf]] = [[schema]] whatever it is told. The messages of every request for these items are
                     kept in ``/stats`` ``messages_by_item``
    [[unsure]]       a model named in ``weak_models`` (config) answers a different label for each seed (its samples
                     disagree: a low vote share); any other model answers as usual
    [[wrong]]        a model named in ``weak_models`` answers the same wrong label every time (confidently wrong);
                     any other model answers as usual (cascade tests: a cheap and a strong teacher on one server)
    [[hard]]         every model answers a different label for each seed, like a weak one on [[unsure]]
    [[KIND:N]]       the fault for the item's first N requests only, then valid answers
    [[flaky:N]]      = [[500:N]]

or by global request number (1-based): ``POST /config {"by_request": {"3": "500", "7": "drop"}}``.

Control endpoints: ``GET /stats``, ``POST /reset`` (clears counters and ``by_request``), ``POST /config`` with any
of ``latency`` (seconds per answer), ``retry_after`` (seconds, sent as ``Retry-After``), ``hang`` (seconds a
``[[timeout]]`` request is held), ``prompt_tokens``/``completion_tokens``/``cached_tokens`` (usage reported per
answer, fixed so tests can compute token budgets and costs; ``cached_tokens`` goes in
``usage.prompt_tokens_details``), ``by_request``, ``record_times`` (keep per-item arrival times),
``max_prompt_chars`` (longer prompts get a 400 ``context_length_exceeded``, like a real server; 0 = no limit),
``trickle_interval`` and ``huge_chars`` (see the faults above), ``hold`` (true: every answer waits, in flight, until
``hold`` is set false again; a test that needs a run alive, e.g. holding its lock, holds its answers),
``hold_after`` (n > 0: requests after the n-th since the last reset are held the same way, until ``hold_after`` is
set to 0; a test that kills a run midway lets exactly n answers through), ``headers`` (added to every answer, e.g.
hostile ``x-ratelimit-reset-*`` values; cleared by ``/reset``).

Rate limits (like a provider's account limits): ``rpm`` and ``tpm`` (0 = none) allow ``rpm * rate_window / 60``
requests and ``tpm * rate_window / 60`` tokens (the usage the server reports: ``prompt_tokens +
completion_tokens``) in any sliding window of ``rate_window`` seconds (default 60; tests shrink it). Over a limit:
429 with ``Retry-After``, ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*``
(e.g. ``0.35s``); every answer carries the same headers. ``/stats`` has ``arrivals`` (time, accepted, tokens) of
every completion request and ``faults["rate_limited"]``.

A simulated teacher (``oracle`` mode, for ``annotator distill``'s tests and benchmark): ``oracle`` maps item texts to
their true label; a label request for such an item is answered with that label, flipped to another label of the
schema with probability ``oracle_flip``. The draw is seeded by ``oracle_seed``, the item, and the request's
temperature and seed: the same prompt always gets the same answer (as a cached teacher would), samples at other
seeds draw again. ``/stats`` ``faults["oracle_flip"]`` counts the flipped answers.

The OpenAI files and batches endpoints (Batch API) are faked too: see ``tests/batch_fake.py``.

Run: ``python tests/fault_server.py [--port 0] [--latency 0.5]``; it prints ``PORT <n>`` on stdout when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import re
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from batch_fake import BatchFake

ITEM_RE = re.compile(r"Text: (.*?)\n\nAnswer with JSON only", re.DOTALL)
MARKER_RE = re.compile(r"\[\[([a-z0-9]+)(?::(\d+))?\]\]")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def item_key(messages: list[dict[str, Any]]) -> str:
    """The item a request is about: the text after ``Text:`` in the last user message that has one (the default
    templates end that way; a re-ask adds user messages after it), else the whole last user message."""
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    for content in reversed(users):
        found = ITEM_RE.search(content)
        if found:
            return found.group(1)
    return users[-1] if users else ""


TOLD: dict[str, tuple[str, str | None]] = {
    "tellschema": ("schema", "schema violation"),
    "telljson": ("malformed", "not valid JSON"),
    "deaf": ("schema", None),
}
"""Re-ask faults: the content fault, and the words of the validation error a re-ask must state (None: never
fixed)."""


def told(messages: list[dict[str, Any]], error: str | None) -> bool:
    """Whether the request re-asks with ``error``: the invalid answer (assistant), then a user message naming it."""
    return (
        error is not None
        and len(messages) >= 2
        and messages[-2].get("role") == "assistant"
        and messages[-1].get("role") == "user"
        and error in str(messages[-1].get("content") or "")
    )


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def expected_label(text: str, labels: list[str]) -> str:
    """The label the server answers for ``text`` (``labels`` in schema/config order)."""
    return labels[_h(text) % len(labels)]


def parse_seconds(value: str) -> float:
    """``"0.350s"`` -> 0.35 (the reset format the server sends)."""
    return float(value.rstrip("s") or 0)


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    if fmt.get("type") == "json_object":
        return fmt.get("schema")
    return None


def instance(schema: dict[str, Any] | None, text: str, name: str = "") -> Any:
    """A deterministic instance of ``schema`` (the subset strict pydantic schemas use)."""
    if not schema:
        return {"label": "unknown"}
    if "enum" in schema:
        return expected_label(text, [str(x) for x in schema["enum"]])
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema and schema[key]:
            return instance(schema[key][0], text, name)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ == "object" or "properties" in schema:
        return {k: instance(v, text, k) for k, v in (schema.get("properties") or {}).items()}
    if typ == "array":
        return _array_instance(schema, text, name)
    return _scalar_instance(schema, typ, text, name)


def _array_instance(schema: dict[str, Any], text: str, name: str) -> list[Any]:
    n = max(1, int(schema.get("minItems", 1)))
    items = schema.get("items") or {}
    if "enum" in items:  # distinct values for sets of labels
        vals = [str(x) for x in items["enum"]]
        start = _h(text) % len(vals)
        return [vals[(start + i) % len(vals)] for i in range(min(n, len(vals)))]
    return [instance(items, f"{text}#{i}", name) for i in range(n)]


def _scalar_instance(schema: dict[str, Any], typ: Any, text: str, name: str) -> Any:
    if typ == "string":
        s = f"echo: {text}" if name == "rationale" else f"{name or 'value'} for {text[:40]}"
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        s = s.ljust(lo, ".")
        return s[: int(hi)] if hi is not None else s
    if typ == "integer":
        return int(schema.get("minimum", 1))
    if typ == "number":
        return float(schema.get("minimum", 1.0))
    if typ == "boolean":
        return True
    return None


WEAK_FAULTS = ("unsure", "wrong", "hard")


def weak_answer(answer: Any, schema: dict[str, Any] | None, text: str, fault: str, seed: int) -> Any:
    """A weak teacher's answer: ``unsure`` and ``hard`` shift the label by the seed (each sample another label),
    ``wrong`` shifts it by one (the same wrong label every time)."""
    enum = ((schema or {}).get("properties") or {}).get("label", {}).get("enum")
    if not isinstance(answer, dict) or not enum:
        return answer
    labels = [str(x) for x in enum]
    shift = 1 if fault == "wrong" else 1 + seed % (len(labels) - 1)
    return {**answer, "label": labels[(labels.index(str(answer["label"])) + shift) % len(labels)]}


# A started server's configuration (``POST /config`` changes any of it; ``POST /reset`` clears counters, ``headers``,
# ``batch_mangle_next`` and ``by_request`` only; the tests' ServerHandle.reset sets all of these again).
DEFAULTS: dict[str, Any] = {
    "latency": 0.0,
    "retry_after": 0.05,
    "hang": 30.0,
    "prompt_tokens": 50,
    "completion_tokens": 10,
    "by_request": {},
    "record_times": True,
    "max_prompt_chars": 0,
    "trickle_interval": 0.25,
    "huge_chars": 50_000_000,
    "rpm": 0,
    "tpm": 0,
    "rate_window": 60.0,
    "cached_tokens": 0,
    "batch_delay": 0.2,
    "batch_fail_next": "",
    "batch_create_status": 0,
    "weak_models": [],
    "hold": False,
    "hold_after": 0,
    "oracle": {},
    "oracle_flip": 0.0,
    "oracle_seed": 0,
}


class FaultServer:
    def __init__(self, latency: float = 0.0):
        self.cfg: dict[str, Any] = {**copy.deepcopy(DEFAULTS), "latency": latency}
        self.released = asyncio.Event()  # cleared while ``hold`` is on
        self.released.set()
        self.batch_api = BatchFake(self)
        self.reset()

    def reset(self) -> None:
        self.total = 0
        self.by_item: Counter[str] = Counter()
        self.ok_by_item: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.messages_by_item: dict[str, list[Any]] = defaultdict(list)
        self.in_flight = 0
        self.max_in_flight = 0
        self.cfg["headers"] = {}  # extra headers on every completion answer (hostile x-ratelimit-* values)
        self.cfg["batch_mangle_next"] = ""
        self.cfg["by_request"] = {}
        if hasattr(self, "batch_api"):
            self.batch_api.reset()
        self._limit_headers: dict[str, str] = {}
        self.arrivals: list[tuple[float, bool, int]] = []  # (time, accepted, tokens) per completion request
        self._window: list[tuple[float, int]] = []  # accepted requests in the current rate window

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_item": dict(self.by_item),
            "ok_by_item": dict(self.ok_by_item),
            "faults": dict(self.faults),
            "times": dict(self.times),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "config": self.cfg,
            "arrivals": self.arrivals,
            "batch": self.batch_api.stats(),
            "messages_by_item": dict(self.messages_by_item),
        }

    # -- HTTP ----------------------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length") or 0)
                body = await reader.readexactly(n) if n else b""
                keep = await self.dispatch(method, path.split("?", 1)[0], body, reader, writer, headers)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            try:
                writer.close()
            except Exception:  # pragma: no cover
                pass

    @staticmethod
    def _send(
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        extra: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(payload).encode("utf-8")
        hdrs = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            "Connection: keep-alive",
        ]
        hdrs += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(hdrs) + "\r\n\r\n").encode("latin-1") + data)

    async def dispatch(
        self,
        method: str,
        path: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: dict[str, str] | None = None,
    ) -> bool:
        if method == "GET" and path == "/stats":
            self._send(writer, 200, self.stats())
        elif method == "GET" and path in ("/health", "/v1/models"):
            self._send(writer, 200, {"object": "list", "data": [{"id": "fault-server", "object": "model"}]})
        elif method == "POST" and path == "/reset":
            self.reset()
            self._send(writer, 200, {"ok": True})
        elif method == "POST" and path == "/config":
            self.cfg.update(json.loads(body or b"{}"))
            if self.cfg["hold"] or self.cfg["hold_after"]:
                self.released.clear()
            else:
                self.released.set()
            self._send(writer, 200, self.cfg)
        elif method == "POST" and path.endswith("/chat/completions"):
            return await self.completion(body, reader, writer, headers or {})
        elif path.startswith(("/v1/files", "/v1/batches")):
            status, payload, raw = self.batch_api.handle(method, path, body, headers or {})
            self._send(writer, status, payload, raw=raw)
        else:
            self._send(writer, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})
        await writer.drain()
        return True

    # -- the teacher ---------------------------------------------------------------------------------------
    def _fault_for(self, key: str, nth: int, count_for_item: int) -> str | None:
        planned = self.cfg["by_request"].get(str(nth))
        if planned:
            return str(planned)
        for kind, limit in MARKER_RE.findall(key):
            if kind == "flaky":
                kind = "500"
            if not limit or count_for_item <= int(limit):
                return kind
        return None

    async def completion(
        self,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: dict[str, str] | None = None,
    ) -> bool:
        req = json.loads(body)
        key = item_key(req.get("messages") or [])
        limited = self._rate_limit()
        if limited is not None:
            self.faults["rate_limited"] += 1
            self._send(
                writer,
                429,
                {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
                limited,
            )
            await writer.drain()
            return True
        self.total += 1
        nth = self.total
        self.by_item[key] += 1
        if self.cfg["record_times"]:
            self.times[key].append(time.time())
        fault = self._fault_for(key, nth, self.by_item[key])
        if fault in TOLD:
            self.messages_by_item[key].append(req.get("messages") or [])
            content_fault, error = TOLD[fault]
            fault = None if told(req.get("messages") or [], error) else content_fault
        limit = self.cfg["max_prompt_chars"]
        if limit and sum(len(str(m.get("content") or "")) for m in req.get("messages") or []) > limit:
            fault = "context"
        if fault:
            self.faults[fault] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.cfg["latency"]:
                await asyncio.sleep(self.cfg["latency"])
            if self.cfg["hold"] or 0 < self.cfg["hold_after"] < nth:
                await self.released.wait()
            return await self._answer(req, key, fault, reader, writer, headers or {})
        finally:
            self.in_flight -= 1

    def _rate_limit(self) -> dict[str, str] | None:
        """Book this request against ``rpm``/``tpm``; the 429 headers when it is over a limit, else None (the
        ``x-ratelimit-*`` headers of the answer are then in ``self._limit_headers``)."""
        now = time.time()
        try:
            tokens = int(self.cfg["prompt_tokens"]) + int(self.cfg["completion_tokens"])
        except (OverflowError, ValueError, TypeError):  # hostile usage figures (inf, strings): not counted
            tokens = 0
        window = float(self.cfg["rate_window"])
        self._window = [(t, n) for t, n in self._window if t > now - window]
        max_req = self.cfg["rpm"] * window / 60.0
        max_tok = self.cfg["tpm"] * window / 60.0
        used_req, used_tok = len(self._window), sum(n for _, n in self._window)
        over = (max_req and used_req + 1 > max_req) or (max_tok and used_tok + tokens > max_tok)
        self.arrivals.append((now, not over, tokens))
        if not over:
            self._window.append((now, tokens))
            used_req, used_tok = used_req + 1, used_tok + tokens
        reset = f"{max(0.0, self._window[0][0] + window - now):.3f}s" if self._window else "0s"
        headers: dict[str, str] = {}
        if max_req:
            headers.update(
                {
                    "x-ratelimit-limit-requests": str(int(max_req)),
                    "x-ratelimit-remaining-requests": str(max(0, int(max_req - used_req))),
                    "x-ratelimit-reset-requests": reset,
                }
            )
        if max_tok:
            headers.update(
                {
                    "x-ratelimit-limit-tokens": str(int(max_tok)),
                    "x-ratelimit-remaining-tokens": str(max(0, int(max_tok - used_tok))),
                    "x-ratelimit-reset-tokens": reset,
                }
            )
        self._limit_headers = {**headers, **self.cfg.get("headers", {})}
        if not over:
            return None
        return {**headers, "Retry-After": f"{parse_seconds(reset):.3f}"}

    async def _answer(
        self,
        req: dict[str, Any],
        key: str,
        fault: str | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: dict[str, str],
    ) -> bool:
        if fault == "timeout":  # hold the request until the client gives up (closes) or ``hang`` passes
            try:
                await asyncio.wait_for(reader.read(1), self.cfg["hang"])
            except (asyncio.TimeoutError, ConnectionError):
                pass
            return False
        if fault == "drop":
            writer.transport.abort()
            return False
        if fault == "context":
            self._send(
                writer,
                400,
                {
                    "error": {
                        "message": f"This model's maximum context length is {self.cfg['max_prompt_chars']} characters",
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded",
                    }
                },
            )
            await writer.drain()
            return True
        if fault and fault.isdigit():
            status = int(fault)
            extra = {"Retry-After": str(self.cfg["retry_after"])} if status == 429 else None
            self._send(
                writer,
                status,
                {"error": {"message": f"injected {status}", "type": "fault_server", "code": status}},
                extra,
            )
            await writer.drain()
            return True
        if fault and fault.startswith("echokey"):  # a careless server that echoes the credentials it got
            self._send(
                writer,
                int(fault[len("echokey") :] or 500),
                {
                    "error": {
                        "message": f"upstream rejected {headers.get('authorization', '')!r}",
                        "type": "fault_server",
                    }
                },
            )
            await writer.drain()
            return True
        if fault == "garbage":
            self._send(writer, 200, None, raw=b"<html>this is not json")
            await writer.drain()
            return True
        if fault == "wrongshape":
            self._send(writer, 200, {"id": "x", "object": "chat.completion", "choices": "nope"})
            await writer.drain()
            return True

        payload = self.completion_payload(req, key, fault)
        if fault == "trickle":
            return await self._trickle(writer, json.dumps(payload).encode("utf-8"))
        self._send(writer, 200, payload, self._limit_headers)
        await writer.drain()
        return True

    def completion_payload(self, req: dict[str, Any], key: str, fault: str | None) -> dict[str, Any]:
        """The chat completion answering ``req`` (with a content fault applied)."""
        schema = _schema_of(req)
        answer = self._oracle(req, key, schema, instance(schema, key))
        if fault in WEAK_FAULTS:
            if fault == "hard" or req.get("model") in self.cfg["weak_models"]:
                answer = weak_answer(answer, schema, key, fault, int(req.get("seed") or 0))
            fault = None
        content = json.dumps(answer, ensure_ascii=False)
        finish = "stop"
        if fault == "malformed":
            content = "Sure! The label is {label: " + content[:10]
        elif fault == "schema":
            content = json.dumps({"label": "definitely_not_a_label", "labels": ["definitely_not_a_label"]})
        elif fault == "length":
            content, finish = content[: max(1, len(content) // 2)], "length"
        elif fault == "huge":
            content = "A" * int(self.cfg["huge_chars"])
        elif fault == "twojson":
            content = '{"label": "politics"} On reflection, a better answer: {"label": "economy"}'
        elif fault is None:
            self.ok_by_item[key] += 1
        return {
            "id": f"chatcmpl-{self.total}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", "fault-server"),
            "choices": []
            if fault == "nochoices"
            else [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": self.cfg["prompt_tokens"],
                "completion_tokens": self.cfg["completion_tokens"],
                "total_tokens": self.cfg["prompt_tokens"] + self.cfg["completion_tokens"],
                "prompt_tokens_details": {"cached_tokens": self.cfg["cached_tokens"]},
            },
        }

    def _oracle(self, req: dict[str, Any], key: str, schema: dict[str, Any] | None, answer: Any) -> Any:
        """``oracle`` mode: the item's true label, flipped with probability ``oracle_flip`` (module docstring)."""
        truth = self.cfg["oracle"].get(key)
        enum = (((schema or {}).get("properties") or {}).get("label") or {}).get("enum")
        if truth is None or not isinstance(answer, dict) or not enum:
            return answer
        draw = _h(f"{self.cfg['oracle_seed']}:{req.get('temperature')}:{req.get('seed')}:{key}")
        others = [str(x) for x in enum if x != truth]
        if others and (draw % 1_000_000) / 1_000_000 < float(self.cfg["oracle_flip"]):
            self.faults["oracle_flip"] += 1
            return {**answer, "label": others[(draw // 1_000_000) % len(others)]}
        return {**answer, "label": truth}

    async def _trickle(self, writer: asyncio.StreamWriter, data: bytes) -> bool:
        """Headers at once, then the body one byte every ``trickle_interval`` s until done or the client leaves."""
        head = [
            "HTTP/1.1 200 OK",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            "Connection: keep-alive",
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        try:
            for i in range(len(data)):
                if writer.is_closing():
                    return False
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(self.cfg["trickle_interval"])
        except ConnectionError:
            return False
        return True


async def serve(port: int, latency: float, host: str = "127.0.0.1") -> None:
    app = FaultServer(latency)
    server = await asyncio.start_server(app.handle, host, port, backlog=4096, limit=2**22)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args()
    try:
        asyncio.run(serve(args.port, args.latency, args.host))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
