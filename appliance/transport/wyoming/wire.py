"""Reading Wyoming events off the socket, strictly: a JSON-object header line, then `data_length`
bytes of JSON object and `payload_length` bytes of payload.

The wyoming package's own reader trusts the header (a JSON array raises AttributeError, `{"type": 5}`
becomes an event no handler answers, a negative `data_length` is skipped); this one checks every
field where it enters and refuses anything else with ERR1010, so a malformed event gets a coded
`error` event and a close, never a traceback. Every read waits only until the connection's
`ConnectionClock` deadline (ERR1012 past it), so a slow drip of header bytes holds nothing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wyoming.event import Event

from appliance.errors import ApplianceError
from appliance.frontdoor import ConnectionClock

MAX_TYPE_CHARS = 64  # Wyoming's own types are a few words ("transcript-chunk")


def malformed(what: str) -> ApplianceError:
    return ApplianceError("ERR1010", f"malformed Wyoming event: {what}")


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """`raw` as a JSON object; ERR1010 for invalid UTF-8, invalid JSON, nesting too deep or any other value."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise malformed(f"the {what} is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise malformed(f"the {what} is a JSON {type(value).__name__}, not an object")
    return value


def block_length(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise malformed(f"{key} must be a whole number of bytes >= 0, not {str(value)[:16]!r}")
    return value


class EventReader:
    """Reads one event at a time from `reader`, each bounded by `max_event_bytes` (data + payload; the
    header line by the stream's own 64 KiB line limit) and by `clock`'s deadline."""

    def __init__(self, reader: asyncio.StreamReader, clock: ConnectionClock, max_event_bytes: int):
        self._reader = reader
        self._clock = clock
        self._max_event_bytes = max_event_bytes

    async def read(self) -> Event | None:
        """The next event; None when the client closed the connection between events."""
        try:
            line = await self._clock.within(self._reader.readline())
        except ValueError:  # the line limit: asyncio drops what it read and raises
            raise malformed("header line longer than 64 KiB") from None
        if not line:
            return None
        if not line.endswith(b"\n"):
            raise malformed("the connection ended inside an event header")
        header = json_object(line, "event header")
        event_type = header.get("type")
        if not isinstance(event_type, str) or not 0 < len(event_type) <= MAX_TYPE_CHARS:
            raise malformed(f"type must be a string of 1-{MAX_TYPE_CHARS} characters, not {str(event_type)[:16]!r}")
        data = header.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise malformed(f"data must be a JSON object, not a JSON {type(data).__name__}")
        data_length, payload_length = block_length(header, "data_length"), block_length(header, "payload_length")
        if data_length + payload_length > self._max_event_bytes:
            raise malformed(f"an event of {data_length + payload_length} bytes is over "
                            f"wyoming.max_event_bytes={self._max_event_bytes}")
        if data_length:
            data.update(json_object(await self._exactly(data_length), "event data"))
        payload = await self._exactly(payload_length) if payload_length else None
        return Event(type=event_type, data=data, payload=payload)

    async def _exactly(self, n: int) -> bytes:
        try:
            return await self._clock.within(self._reader.readexactly(n))
        except asyncio.IncompleteReadError as err:
            raise malformed(f"the connection ended {len(err.partial)} bytes into a block of {n}") from None
