"""A fake of the OpenAI files and batches endpoints, served by ``tests/fault_server.py`` on 127.0.0.1.

``POST /v1/files`` (multipart upload, purpose ``batch``), ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/batches`` (list). A batch answers every line like the chat endpoint would
(same deterministic answers; content faults by marker, e.g. ``[[schema:1]]``; a status marker such as ``[[500:1]]``
becomes an error-file line) once ``batch_delay`` seconds have passed since it was created; until then it is
``in_progress`` with ``request_counts.completed`` growing. Server config: ``batch_delay`` (seconds),
``batch_fail_next`` (``expired``: the next batch answers only the first half of its requests;
``failed``/``cancelled``: none), ``batch_create_status`` (an HTTP status ``POST /v1/batches`` answers with instead,
0 = none), ``batch_mangle_next`` (the next batch's output file is hostile: ``truncated`` cuts its last line in half
and puts a line that is not JSON and one that is not an object before it; ``duplicate`` answers its first request
twice, differently, and its second request twice, identically). ``/stats`` gains ``batch``: ``files_uploaded``,
``batches_created``, ``batch_requests``, ``statuses``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fault_server import FaultServer

Reply = tuple[int, Any, bytes | None]


def _mangle(out: list[str], how: str) -> list[str]:
    """A hostile output file (see ``batch_mangle_next``)."""
    if how == "truncated" and len(out) >= 2:
        return [*out[:-1], "<html>502 Bad Gateway</html>", "[1, 2, 3]", out[-1][: len(out[-1]) // 2]]
    if how == "duplicate" and len(out) >= 2:
        first = json.loads(out[0])
        other = json.loads(json.dumps(first))
        content = other["response"]["body"]["choices"][0]["message"]
        content["content"] = content["content"].replace('"label": "', '"label": "x')  # a different answer
        return [out[0], json.dumps(other), out[1], out[1], *out[2:]]
    return out


def _multipart_file(body: bytes, content_type: str) -> bytes:
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return content[:-2] if content.endswith(b"\r\n") else content
    raise ValueError("no file part")


class BatchFake:
    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.reset()

    def reset(self) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.created = 0
        self.requests = 0

    def stats(self) -> dict[str, Any]:
        return {
            "files_uploaded": sum(1 for f in self.files if f.startswith("file-in")),
            "batches_created": self.created,
            "batch_requests": self.requests,
            "statuses": {b: v["status"] for b, v in self.batches.items()},
        }

    def handle(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        parts = path.strip("/").split("/")  # v1, files|batches, [id], [content]
        if parts[1] == "files" and method == "POST":
            return self._upload(body, headers)
        if parts[1] == "files" and len(parts) == 4 and parts[3] == "content" and parts[2] in self.files:
            return 200, None, self.files[parts[2]]
        if parts[1] == "batches" and method == "POST" and len(parts) == 2:
            return self._create(json.loads(body))
        if parts[1] == "batches" and len(parts) == 2:
            data = [self._view(b) for b in reversed(list(self.batches))]
            return (
                200,
                {
                    "object": "list",
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
                None,
            )
        if parts[1] == "batches" and len(parts) == 3 and parts[2] in self.batches:
            return 200, self._view(parts[2]), None
        return 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}, None

    def _upload(self, body: bytes, headers: dict[str, str]) -> Reply:
        data = _multipart_file(body, headers.get("content-type", ""))
        fid = f"file-in{len(self.files) + 1}"
        self.files[fid] = data
        return (
            200,
            {
                "id": fid,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": "batch.jsonl",
                "purpose": "batch",
                "status": "processed",
            },
            None,
        )

    def _create(self, req: dict[str, Any]) -> Reply:
        cfg = self.server.cfg
        if cfg.get("batch_create_status"):
            return int(cfg["batch_create_status"]), {"error": {"message": "injected", "type": "fault_server"}}, None
        fid = req["input_file_id"]
        if fid not in self.files:
            return 404, {"error": {"message": f"no file {fid}", "type": "invalid_request_error"}}, None
        self.created += 1
        bid = f"batch_{self.created}"
        lines = [json.loads(x) for x in self.files[fid].decode().splitlines() if x.strip()]
        self.requests += len(lines)
        self.batches[bid] = {
            "id": bid,
            "input_file_id": fid,
            "lines": lines,
            "created": time.time(),
            "status": "in_progress",
            "fail": cfg.get("batch_fail_next") or "",
            "endpoint": req["endpoint"],
            "metadata": req.get("metadata"),
            "completion_window": req["completion_window"],
            "output_file_id": None,
            "error_file_id": None,
            "counts": (0, 0),
            "mangle": cfg.get("batch_mangle_next") or "",
        }
        cfg["batch_fail_next"] = ""
        cfg["batch_mangle_next"] = ""
        return 200, self._view(bid), None

    def _view(self, bid: str) -> dict[str, Any]:
        b = self.batches[bid]
        total = len(b["lines"])
        elapsed = time.time() - b["created"]
        delay = float(self.server.cfg.get("batch_delay", 0.2))
        if b["status"] == "in_progress" and elapsed >= delay:
            self._finish(b)
        completed, failed = (
            b["counts"] if b["status"] != "in_progress" else (min(total, int(total * elapsed / delay)), 0)
        )
        errors = (
            {
                "object": "list",
                "data": [{"code": "injected", "message": f"injected {b['status']}", "line": None, "param": None}],
            }
            if b["status"] == "failed"
            else None
        )
        return {
            "id": bid,
            "object": "batch",
            "endpoint": b["endpoint"],
            "errors": errors,
            "input_file_id": b["input_file_id"],
            "completion_window": b["completion_window"],
            "status": b["status"],
            "output_file_id": b["output_file_id"],
            "error_file_id": b["error_file_id"],
            "created_at": int(b["created"]),
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": b["metadata"],
        }

    def _finish(self, b: dict[str, Any]) -> None:
        fail = b["fail"]
        lines = b["lines"]
        if fail == "expired":
            lines = lines[: len(lines) // 2]
        elif fail in ("failed", "cancelled"):
            lines = []
        out, err = [], []
        for n, line in enumerate(lines):
            ok, record = self._answer(line, f"{b['id']}_{n}")
            (out if ok else err).append(json.dumps(record))
        b["counts"] = (len(out), len(err))
        out = _mangle(out, b["mangle"])
        for kind, rows in (("out", out), ("err", err)):
            if rows:
                fid = f"file-{kind}-{b['id']}"
                self.files[fid] = ("\n".join(rows) + "\n").encode()
                b["output_file_id" if kind == "out" else "error_file_id"] = fid
        b["status"] = fail or "completed"

    def _answer(self, line: dict[str, Any], rid: str) -> tuple[bool, dict[str, Any]]:
        from fault_server import item_key

        srv = self.server
        req = line["body"]
        key = item_key(req.get("messages") or [])
        srv.by_item[key] += 1
        fault = srv._fault_for(key, -1, srv.by_item[key])
        if fault:
            srv.faults[fault] += 1
        if fault and fault.isdigit():
            body = {"error": {"message": f"injected {fault}", "type": "fault_server"}}
            return False, {
                "id": rid,
                "custom_id": line["custom_id"],
                "response": {"status_code": int(fault), "request_id": rid, "body": body},
                "error": None,
            }
        payload = srv.completion_payload(req, key, fault)
        return True, {
            "id": rid,
            "custom_id": line["custom_id"],
            "response": {"status_code": 200, "request_id": rid, "body": payload},
            "error": None,
        }
