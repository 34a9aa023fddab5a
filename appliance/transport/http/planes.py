"""The two HTTP listeners: the operator plane and the client plane, each with slots of its own.

- **Operator plane** (`server.http_host:server.metrics_port`): /health, /metrics, /metrics.json,
  /system, admin, the status page. Its door has its own caps and its own drain gate that never closes
  (a draining box must keep answering /health), so uploads and slow clients elsewhere cannot use up
  its connections, and one address can hold only its per-address share of them.
- **Client plane** (`openai.host:openai.port`): the OpenAI-compatible /v1 routes. Its door reads the
  runtime's drain gate (ERR1015 once draining), caps connections globally and per address, and gives
  a request `openai.header_timeout_sec` for its header and `openai.body_timeout_sec` for its body.

With the operator's certificate (tls.cert_file/key_file) and openai.tls, the client plane's port speaks
https: `tls_front.TlsFront` terminates TLS there, admits through the plane's door with the client's
own address, and pipes to waitress on a loopback port behind it.

Each plane has its own `HttpAccess` (allow-list, trusted proxies, tokens, rate limit), so the
uploads' requests never spend the bucket a health checker draws on. Asking either plane for a route
of the other answers ERR1018 with the port to use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

from appliance.config import AppConfig
from appliance.file_transcriber import FileTranscriber
from appliance.frontdoor import AddressPolicy, Door, DoorLimits, DrainGate
from appliance.runtime import Runtime
from appliance.security.http_access import HttpAccess, HttpAccessSettings
from appliance.transport.http.app import create_app, create_client_app
from appliance.transport.http.doors import RequestDeadlines
from appliance.transport.http.openai import openai_routes
from appliance.transport.http.server import HTTP_THREADS, MAX_SPOOLED_BODY_BYTES, HttpServer
from appliance.transport.http.tls_front import LOOPBACK, PeerMap, TlsFront, behind_tls, server_context

log = logging.getLogger(__name__)

Listener = TypeVar("Listener", HttpServer, TlsFront)
CLIENT_SPARE_THREADS = 2  # /v1/models and quick refusals answer while every upload slot decodes


class PlaneError(RuntimeError):
    """A plane cannot start as configured (a port taken, a bad access setting); the message says which."""


def _access(config: AppConfig, environ: Mapping[str, str] | None) -> HttpAccess:
    try:
        return HttpAccess(HttpAccessSettings.from_config(config.server, environ))
    except ValueError as err:
        raise PlaneError(f"HTTP access settings: {err}") from None


def _proxies(access: HttpAccess) -> AddressPolicy:
    """The trusted proxies (server.http_trusted_proxies): each connection of theirs is some client's,
    so the door holds them to its global cap only, not to one address's share."""
    return AddressPolicy(access.settings.trusted_proxies, setting="server.http_trusted_proxies")


def _policy(access: HttpAccess) -> AddressPolicy:
    """Who may connect at all: the allow-list, and the trusted proxies that speak for allowed clients
    (their forwarded address is checked per request, by HttpAccess)."""
    settings = access.settings
    if not settings.allowlist:
        return AddressPolicy()
    return AddressPolicy(settings.allowlist + settings.trusted_proxies, setting="STT_HTTP_ALLOWLIST")


def _bind(what: str, host: str, port: int, build: Callable[[], Listener]) -> Listener:
    try:
        return build()
    except OSError as err:
        raise PlaneError(f"cannot bind HTTP to {host}:{port} ({what}): {err.strerror or err}") from None


class HttpPlanes:
    """Both listeners, bound at construction (before the model loads: /health answers 503 "starting").
    `environ`: where the STT_* access settings (tokens, allow-list) are read; None: os.environ."""

    def __init__(self, config: AppConfig, runtime: Runtime, loop: asyncio.AbstractEventLoop, *,
                 environ: Mapping[str, str] | None = None):
        self._environ = environ
        server, openai = config.server, config.openai
        client_host = openai.host or server.http_host
        if openai.enabled and openai.port and openai.port == server.metrics_port and client_host == server.http_host:
            raise PlaneError(f"openai.port and server.metrics_port are both {openai.port}: the OpenAI API needs a "
                             "port of its own")
        self.client: HttpServer | None = None
        self.client_tls: TlsFront | None = None  # the client plane's port when it speaks https
        self.transcriber: FileTranscriber | None = None
        self.operator = self._operator(config, runtime)
        try:
            if openai.enabled:
                self.client = self._client(config, runtime, loop, client_host)
        except BaseException:
            if self.client is not None:
                self.client.stop()
            self.operator.stop()
            raise

    @property
    def operator_port(self) -> int:
        return self.operator.port

    @property
    def client_port(self) -> int | None:
        if self.client_tls is not None:
            return self.client_tls.port
        return self.client.port if self.client is not None else None

    @property
    def client_door(self) -> Door | None:
        """The door client-plane connections are admitted by (the TLS front's, when there is one)."""
        if self.client_tls is not None:
            return self.client_tls.door
        return self.client.door if self.client is not None else None

    @property
    def client_scheme(self) -> str:
        return "https" if self.client_tls is not None else "http"

    def _operator(self, config: AppConfig, runtime: Runtime) -> HttpServer:
        s = config.server
        access = _access(config, self._environ)
        # Its own drain gate, never closed: a draining appliance keeps answering /health and /metrics.
        door = Door("http", DoorLimits(s.http_max_connections, s.http_max_connections_per_address, "server",
                                       "http_max_connections", "http_max_connections_per_address"),
                    DrainGate(), _policy(access), on_refused=runtime.metrics.error, shared=_proxies(access))
        deadlines = RequestDeadlines(s.http_header_timeout_sec, s.http_header_timeout_sec,
                                     "server.http_header_timeout_sec", "server.http_header_timeout_sec")
        client_port = (lambda: self.client_port or 0) if config.openai.enabled else None
        app = create_app(runtime.status, runtime.admin, access, client_port=client_port)
        return _bind("operator plane", s.http_host, s.metrics_port, lambda: HttpServer(
            app, s.http_host, s.metrics_port, threads=HTTP_THREADS, max_body_bytes=MAX_SPOOLED_BODY_BYTES,
            door=door, deadlines=deadlines, name="http-operator"))

    def _client(self, config: AppConfig, runtime: Runtime, loop: asyncio.AbstractEventLoop,
                host: str) -> HttpServer:
        openai = config.openai
        access = _access(config, self._environ)
        door = Door("openai", DoorLimits(openai.max_connections, openai.max_connections_per_address, "openai"),
                    runtime.drain_gate, _policy(access), on_refused=runtime.metrics.error,
                    shared=_proxies(access))
        deadlines = RequestDeadlines(openai.header_timeout_sec, openai.body_timeout_sec,
                                     "openai.header_timeout_sec", "openai.body_timeout_sec")
        transcriber = FileTranscriber(runtime.sessions, loop, max_concurrent=openai.max_concurrent_requests,
                                      timeout_sec=openai.request_timeout_sec,
                                      max_audio_sec=config.server.max_audio_seconds_per_session,
                                      drain=runtime.drain_gate)
        self.transcriber = transcriber
        routes = openai_routes(transcriber, runtime.admin, max_body_bytes=openai.max_upload_bytes,
                               signed_tokens=config.auth.create_session_auth_profile == "signed_token")
        app = create_client_app(runtime.status, access, routes, operator_port=lambda: self.operator_port)
        tls = config.tls
        if not (openai.tls and tls.cert_file and tls.key_file):
            return self._waitress(app, host, openai.port, openai, door, deadlines)
        # https: the door admits at the TLS front; waitress, on loopback behind it, keeps the deadlines
        # and caps only the total (every piped connection comes from 127.0.0.1).
        context = server_context(tls.cert_file, tls.key_file)
        peers = PeerMap()
        behind = Door("openai-behind-tls", DoorLimits(2 * openai.max_connections, 0, "openai"), DrainGate())
        server = self._waitress(behind_tls(app, peers), LOOPBACK, 0, openai, behind, deadlines,
                               "http-client-behind-tls")
        try:
            self.client_tls = _bind("client plane (openai, https)", host, openai.port, lambda: TlsFront(
                host, openai.port, context=context, door=door, deadlines=deadlines,
                backend_port=lambda: server.port, peers=peers, name="https-client"))
        except BaseException:
            server.stop()
            raise
        return server

    @staticmethod
    def _waitress(app, host: str, port: int, openai, door: Door, deadlines: RequestDeadlines,
                  name: str = "http-client") -> HttpServer:
        return _bind("client plane (openai)", host, port, lambda: HttpServer(
            app, host, port, threads=openai.max_concurrent_requests + CLIENT_SPARE_THREADS,
            max_body_bytes=openai.max_upload_bytes + 1,  # waitress refuses bodies >= its limit
            door=door, deadlines=deadlines, name=name))

    def start(self) -> HttpPlanes:
        self.operator.start()
        if self.client is not None:
            self.client.start()
        if self.client_tls is not None:
            self.client_tls.start()
        return self

    def stop(self, timeout_sec: float = 2.0) -> None:
        """Close both listeners (idempotent); uploads still decoding are cancelled by the runtime's close."""
        if self.client_tls is not None:
            self.client_tls.stop(timeout_sec)
        if self.client is not None:
            self.client.stop(timeout_sec)
        self.operator.stop(timeout_sec)
