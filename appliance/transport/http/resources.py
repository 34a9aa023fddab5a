"""Falcon resources: translate HTTP to calls on the status and model-admin facades and back, nothing else."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import falcon

from appliance.errors import ApplianceError
from appliance.model_admin import ModelAdmin
from appliance.observability.metrics import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from appliance.security.http_access import HttpAccess
from appliance.status import StatusView

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_MODEL_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Health:
    def __init__(self, status: StatusView, access: HttpAccess):
        self._status = status
        self._access = access

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        view = self._access.health_view(req.get_header("Authorization"))
        report = self._status.health()
        resp.status = falcon.HTTP_200 if report.healthy else falcon.HTTP_503
        if view == "minimal":
            resp.media = {"status": report.status}
            return
        resp.media = report.to_dict() | self._status.health_details()


class _Observability:
    def __init__(self, status: StatusView, access: HttpAccess):
        self._status = status
        self._access = access

    def _authorise(self, req: falcon.Request) -> None:
        self._access.require_observability(req.get_header("Authorization"))


class Metrics(_Observability):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._authorise(req)
        resp.content_type = PROMETHEUS_CONTENT_TYPE
        resp.data = self._status.exposition()


class MetricsJson(_Observability):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._authorise(req)
        resp.media = self._status.snapshot().to_dict()


class System(_Observability):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._authorise(req)
        resp.media = self._status.system()


class OpenApi:
    def __init__(self, document: dict):
        self._document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document


class Moved:
    """A sink for routes that live on the other plane's port: ERR1018 naming that port, so a client
    pointed at the old address learns where to go (the /v1 routes moved off metrics_port)."""

    def __init__(self, port: int | Callable[[], int], setting: str, plane: str):
        self._port = port  # a callable when the other plane binds a free port after this app is built
        self._setting = setting
        self._plane = plane

    def __call__(self, req: falcon.Request, resp: falcon.Response, **params) -> None:
        port = self._port() if callable(self._port) else self._port
        raise ApplianceError("ERR1018", f"{req.method} {req.path[:128]}: not served on this port; {self._plane} "
                             f"is on port {port} ({self._setting})")


class StatusPage:
    """The page itself holds no data: its script fetches /health, /metrics.json and /system."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = (STATIC_DIR / "index.html").read_bytes()


# --- admin ------------------------------------------------------------------------------------


def _body(req: falcon.Request, allowed: dict[str, type]) -> dict:
    """The JSON object body with only `allowed` keys of the right types (ERR1010 otherwise)."""
    body = req.get_media(default_when_empty={})
    if not isinstance(body, dict):
        raise ApplianceError("ERR1010", "the request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApplianceError("ERR1010", f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    for key, kind in allowed.items():
        value = body.get(key)
        if value is not None and not (isinstance(value, kind) and not (kind is str and not value)):
            raise ApplianceError("ERR1010", f"{key} must be a {'non-empty string' if kind is str else kind.__name__}")
    return body


class _Admin:
    def __init__(self, admin: ModelAdmin, access: HttpAccess):
        self._admin = admin
        self._access = access

    def _authorise(self, req: falcon.Request) -> None:
        self._access.require_admin(req.get_header("Authorization"))


class AdminModels(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._authorise(req)
        resp.media = self._admin.listing()


class AdminLoadModel(_Admin):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._authorise(req)
        body = _body(req, {"profile_id": str, "model_id": str, "model_size": str})
        if body.get("model_id") and not _MODEL_ID.match(body["model_id"]):
            raise ApplianceError("ERR1010", "model_id may hold 1-64 letters, digits, '.', '_' and '-'")
        log.info("admin %s: load_model %s", req.context.client_ip, body)
        model, created = self._admin.load_model(body.get("profile_id"), model_id=body.get("model_id"),
                                                  model_size=body.get("model_size"))
        resp.media = {"status": "loaded" if created else "already_loaded", "model": model}


class AdminUnloadModel(_Admin):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._authorise(req)
        body = _body(req, {"model_id": str, "drain": bool})
        if not body.get("model_id"):
            raise ApplianceError("ERR1010", "model_id is required")
        log.info("admin %s: unload_model %s", req.context.client_ip, body)
        status = self._admin.unload_model(body["model_id"], drain=bool(body.get("drain")))
        resp.status = falcon.HTTP_202 if status == "draining" else falcon.HTTP_200
        resp.media = {"status": status, "model_id": body["model_id"]}
