"""Builds the gRPC server: the service, health (grpc.health.v1), reflection, keepalive, TLS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from appliance.api import stt_pb2
from appliance.config import AppConfig
from appliance.frontdoor import Door, DoorLimits, DrainGate
from appliance.lifecycle import Lifecycle
from appliance.observability.health import HealthReport
from appliance.sessions import SessionService
from appliance.transport.grpc.servicer import SpeechToTextServicer, register
from appliance.transport.grpc.tls import server_credentials

SERVICE_NAME = stt_pb2.DESCRIPTOR.services_by_name["SpeechToText"].full_name


def server_options(config: AppConfig) -> list[tuple[str, int]]:
    s = config.server
    return [
        ("grpc.max_receive_message_length", int(s.grpc_max_receive_message_bytes)),
        ("grpc.max_send_message_length", int(s.grpc_max_send_message_bytes)),
        # Audio streams live for minutes: ping idle connections so dead kiosks are noticed, and let
        # clients ping us (every 10 s at most) to keep NAT state alive.
        ("grpc.keepalive_time_ms", 45_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class GrpcHealthPublisher:
    """Mirrors the health verdict into grpc.health.v1 for the overall server and the service:
    SERVING only while serving and healthy. A `HealthState` subscriber, so it changes when the
    verdict does."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self._loop = asyncio.get_running_loop()
        self._status: int | None = None

    def __call__(self, state: Lifecycle, report: HealthReport) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if report.healthy
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        if status != self._status:
            self._status = status
            self._loop.call_soon_threadsafe(self._loop.create_task, self._set(status))

    async def _set(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.servicer.set(name, status)


def listen_address(host: str, port: int) -> str:
    """`host:port` as gRPC parses it: an IPv6 literal ("::", "::1") goes in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def grpc_door(config: AppConfig, drain: DrainGate, on_refused: Callable[[str, str], None] | None = None) -> Door:
    """Admission of StreamingRecognize calls: open calls, attached to a session or not yet, globally
    (server.max_open_streams, null: 2 x max_sessions) and per client address (max_sessions_per_ip)."""
    s = config.server
    limits = DoorLimits(s.max_open_streams or 2 * s.max_sessions, s.max_sessions_per_ip, "server",
                        total_key="max_open_streams", per_address_key="max_sessions_per_ip")
    return Door("grpc", limits, drain, on_refused=on_refused)


def create_grpc_server(config: AppConfig, sessions: SessionService, health_publisher: GrpcHealthPublisher, *,
                       drain: DrainGate, on_refused: Callable[[str, str], None] | None = None,
                       host: str | None = None, port: int | None = None
                       ) -> tuple[grpc.aio.Server, int]:
    """Build (not start) the server; returns it with the bound port (port 0 picks a free one). `drain`
    is the runtime's one gate (runtime.drain_gate); `on_refused(code, door)` counts the door's refusals."""
    server = grpc.aio.server(options=server_options(config))
    register(SpeechToTextServicer(sessions, grpc_door(config, drain, on_refused),
                                  node_name=config.server.node_name or socket.gethostname()), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_publisher.servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = listen_address(host or config.server.grpc_host, config.server.port if port is None else port)
    if config.tls.cert_file and config.tls.key_file:
        credentials = server_credentials(config.tls.cert_file, config.tls.key_file)
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    return server, bound
