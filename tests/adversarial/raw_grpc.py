"""A gRPC call with header bytes no gRPC library would send, over plain HTTP/2 (the `h2` package).

grpcio refuses non-ASCII or control characters in metadata before they leave the client, but a
hostile client is not bound by that: this speaks HTTP/2 by hand (prior knowledge, no TLS) so a test
can put any bytes in `authorization` and see what the server answers.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events


@dataclass(frozen=True)
class RawReply:
    http_status: int
    grpc_status: int | None  # None: the server reset the stream or closed without trailers
    grpc_message: str
    body: bytes  # the length-prefixed response message(s), unparsed


def unary_call(address: str, method: str, request: bytes, headers: list[tuple[bytes, bytes]],
               timeout_sec: float = 10.0) -> RawReply:
    """POST one length-prefixed `request` to `/package.Service/Method` with extra `headers` as raw bytes."""
    host, _, port = address.rpartition(":")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None,
                                                                validate_outbound_headers=False,
                                                                normalize_outbound_headers=False))
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_sec) as sock:
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", method.encode()),
                                      (b":authority", address.encode()), (b"content-type", b"application/grpc"),
                                      (b"te", b"trailers"), *headers])
        conn.send_data(stream_id, struct.pack(">?I", False, len(request)) + request, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, trailers, body = 0, {}, b""
        ended = False
        while not ended:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    fields = dict(event.headers)
                    status = int(fields.get(b":status", b"0"))
                    trailers.update(fields)  # a trailers-only reply carries grpc-status here
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers.update(dict(event.headers))
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset,
                                        h2.events.ConnectionTerminated)):
                    ended = True
            sock.sendall(conn.data_to_send())
    grpc_status = trailers.get(b"grpc-status")
    return RawReply(status, int(grpc_status) if grpc_status is not None else None,
                    trailers.get(b"grpc-message", b"").decode("latin-1"), body)
