"""The Falcon app: routes, the access middleware and the one error format ({code, message})."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import falcon
import falcon.media

from appliance.errors import ApplianceError
from appliance.model_admin import ModelAdmin
from appliance.observability.metrics import ApplianceMetrics
from appliance.security.http_access import HttpAccess
from appliance.status import StatusView
from appliance.transport.http import resources
from appliance.transport.http.openapi import openapi_document

log = logging.getLogger(__name__)

# Falcon's own HTTP errors (routing, media parsing) mapped onto the stable codes.
_CODE_FOR_STATUS = {400: "ERR1010", 401: "ERR1004", 403: "ERR1005", 404: "ERR1018", 405: "ERR1018",
                    413: "ERR1010", 415: "ERR1010", 429: "ERR1006"}
# Admin JSON is a few hundred bytes; only a route that says otherwise (an upload) takes more.
MAX_BODY_BYTES = 64 * 1024
MAX_FORM_PARTS = 16
MAX_FORM_FIELD_BYTES = 64 * 1024  # one text field of a multipart form; a file part is bounded by the body
# The page may load only what the appliance itself serves (it is offline: no CDN).
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


class AccessMiddleware:
    """Client IP (trusted proxies), allowlist and rate limit for every request; metrics and headers after."""

    def __init__(self, access: HttpAccess, metrics: ApplianceMetrics):
        self._access = access
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.client_ip = self._access.client_ip(req.remote_addr, req.get_header("X-Forwarded-For"))
        self._access.admit(req.context.client_ip)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
        limit = getattr(resource, "max_body_bytes", MAX_BODY_BYTES)
        if (req.content_length or 0) > limit:  # refused before the app reads a byte of it
            raise falcon.HTTPContentTooLarge(
                description=f"request body of {req.content_length} bytes; the limit on this route is {limit} bytes")

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        route = req.uri_template or "unmatched"  # bounded label set: templates, not raw paths
        self._metrics.http_requests_total.labels(route, f"{resp.status_code // 100}xx").inc()
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Cache-Control", "no-store")
        if (resp.content_type or "").startswith("text/html"):
            resp.set_header("Content-Security-Policy", _CSP)


def _error_body(req: falcon.Request, code: str, message: str, status: int) -> dict:
    """{code, message}; on the OpenAI routes also OpenAI's error object, which its clients read."""
    body: dict = {"code": code, "message": message}
    if req.path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        body["error"] = {"message": f"{code}: {message}", "type": kind, "code": code, "param": None}
    return body


def _appliance_error(req: falcon.Request, resp: falcon.Response, err: ApplianceError, params) -> None:
    resp.status = falcon.code_to_http_status(err.http_status)
    resp.media = _error_body(req, err.code, err.message, err.http_status)
    if err.retry_after_sec is not None:
        resp.set_header("Retry-After", str(max(1, math.ceil(err.retry_after_sec))))
    if err.code == "ERR1004":
        resp.set_header("WWW-Authenticate", "Bearer")


def _unexpected_error(req: falcon.Request, resp: falcon.Response, err: Exception, params) -> None:
    log.exception("HTTP %s %s failed", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = _error_body(req, "ERR1016", f"internal error: {type(err).__name__}", 500)


def _serialize_http_error(req: falcon.Request, resp: falcon.Response, err: falcon.HTTPError) -> None:
    code = _CODE_FOR_STATUS.get(err.status_code, "ERR1016")
    message = err.description or err.title or "request failed"
    if err.status_code in (404, 405):
        message = f"{req.method} {req.path}: " + ("no such route (see /openapi.json)" if err.status_code == 404
                                                    else "method not allowed on this route")
    resp.content_type = falcon.MEDIA_JSON
    resp.media = _error_body(req, code, message, err.status_code)


def _plane(access: HttpAccess, metrics: ApplianceMetrics) -> falcon.App:
    """An app with the access middleware, the bounded form parser and the one error format."""
    app = falcon.App(middleware=[AccessMiddleware(access, metrics)])
    multipart = app.req_options.media_handlers[falcon.MEDIA_MULTIPART]
    assert isinstance(multipart, falcon.media.MultipartFormHandler)
    multipart.parse_options.max_body_part_count = MAX_FORM_PARTS
    multipart.parse_options.max_body_part_buffer_size = MAX_FORM_FIELD_BYTES
    app.add_error_handler(Exception, _unexpected_error)
    app.add_error_handler(ApplianceError, _appliance_error)
    app.set_error_serializer(_serialize_http_error)
    return app


def create_app(status: StatusView, admin: ModelAdmin, access: HttpAccess,
               add_routes: Callable[[falcon.App], None] | None = None, *,
               client_port: int | Callable[[], int] | None = None) -> falcon.App:
    """The operator plane. `add_routes` mounts another door's routes here (tools and tests that want
    one app); `client_port`: where the OpenAI routes live, named in the answer to /v1/* here."""
    app = _plane(access, status.metrics)
    app.add_route("/", resources.StatusPage())
    app.add_static_route("/static", str(resources.STATIC_DIR))
    app.add_route("/health", resources.Health(status, access))
    app.add_route("/metrics", resources.Metrics(status, access))
    app.add_route("/metrics.json", resources.MetricsJson(status, access))
    app.add_route("/system", resources.System(status, access))
    app.add_route("/openapi.json", resources.OpenApi(openapi_document("operator" if add_routes is None else "all")))
    app.add_route("/admin/models", resources.AdminModels(admin, access))
    app.add_route("/admin/load_model", resources.AdminLoadModel(admin, access))
    app.add_route("/admin/unload_model", resources.AdminUnloadModel(admin, access))
    if add_routes is not None:
        add_routes(app)
    elif client_port is not None:
        app.add_sink(resources.Moved(client_port, "openai.port", "the OpenAI API"), prefix=r"/v1(/|$)")
    return app


def create_client_app(status: StatusView, access: HttpAccess, add_routes: Callable[[falcon.App], None],
                      operator_port: int | Callable[[], int]) -> falcon.App:
    """The client plane: the OpenAI routes and their own OpenAPI document, nothing an operator needs."""
    app = _plane(access, status.metrics)
    app.add_route("/openapi.json", resources.OpenApi(openapi_document("client")))
    add_routes(app)
    app.add_sink(resources.Moved(operator_port, "server.metrics_port", "the operator plane"),
                 prefix=r"/(health|metrics|metrics\.json|system)$|/admin/")
    return app
