"""The HTTP answers this listener gives instead of an upgrade: the captions page's files, and coded refusals.

Only the files directly in `appliance/web/captions/` are served, by a name of plain characters
(no directories, no dot-files, no traversal), up to MAX_FILE_BYTES; anything else is ERR1018.
"""

from __future__ import annotations

import email.utils
import http
import json
import re
from collections.abc import Sequence
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Response

from appliance.errors import ApplianceError

CAPTIONS_DIR = Path(__file__).resolve().parents[2] / "web" / "captions"
MAX_FILE_BYTES = 2 * 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".json": "application/json",
    ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8", ".webmanifest": "application/manifest+json", ".map": "application/json",
}


def _response(status: int, body: bytes, content_type: str, extra: Sequence[tuple[str, str]] = ()) -> Response:
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type),
                       ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-cache"), *extra])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def coded(err: ApplianceError) -> Response:
    """A refusal before the upgrade: the HTTP status of its code and the {code, message} body."""
    extra = [("Retry-After", str(max(1, round(err.retry_after_sec))))] if err.retry_after_sec else []
    body = json.dumps({"code": err.code, "message": err.message}).encode()
    return _response(err.http_status, body, "application/json", extra)


def static_file(path: str, directory: Path = CAPTIONS_DIR) -> Response:
    """GET `path` ("/" is index.html) from `directory`; ERR1018 for anything not a file directly in it."""
    name = path.split("?", 1)[0].lstrip("/") or "index.html"
    missing = ApplianceError("ERR1018", f"no such page {path[:80]!r} (the captions page is at /, the stream at "
                             "/v1/listen)")
    if not _NAME.fullmatch(name) or ".." in name:
        return coded(missing)
    target = directory / name
    try:
        resolved = target.resolve(strict=True)
        if resolved.parent != directory.resolve() or not resolved.is_file() \
                or resolved.stat().st_size > MAX_FILE_BYTES:
            return coded(missing)
        body = resolved.read_bytes()
    except OSError:
        return coded(missing)
    return _response(200, body, CONTENT_TYPES.get(resolved.suffix.lower(), "application/octet-stream"))
