"""An incremental Ogg demuxer for one Opus stream (RFC 3533 pages, RFC 7845 packets).

Bytes come in any cut; whole pages are taken as they complete (a page is at most 65,307 bytes, so the
buffer is bounded by one page plus what a message adds). One logical stream only: a page of another
serial number (a video or second audio stream multiplexed in, or a chained stream) is refused, as is
anything that is not a page where a page must begin (no resynchronisation on garbage). The page CRC is
not checked: a damaged packet is libopus's to refuse, and the bounds hold whatever the bytes say.
"""

from __future__ import annotations

import struct

from appliance.audio_stream.head import OpusHead
from appliance.audio_stream.limits import MAX_HEADER_BYTES, MAX_PACKET_BYTES, refuse

CAPTURE = b"OggS"
PAGE_HEADER_BYTES = 27
BOS, CONTINUED = 0x02, 0x01


class OggOpus:
    """feed(bytes) -> the Opus audio packets those bytes complete; `head` once the header is read."""

    def __init__(self) -> None:
        self.head: OpusHead | None = None
        self._buffer = bytearray()
        self._serial: int | None = None
        self._packet = bytearray()  # a packet continued onto the next page
        self._header_packets = 0  # OpusHead, OpusTags
        self._header_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets: list[bytes] = []
        while (page := self._next_page()) is not None:
            packets += self._packets(*page)
        return packets

    def _next_page(self) -> tuple[int, bytes, bytes] | None:
        """(flags, lacing table, body) of the page at the buffer's head, once it is whole."""
        buffer = self._buffer
        if len(buffer) < PAGE_HEADER_BYTES:
            if buffer and not CAPTURE.startswith(bytes(buffer[:4])):
                raise refuse("the Ogg stream is broken: bytes that are not an Ogg page where a page must begin")
            return None
        if buffer[:4] != CAPTURE or buffer[4] != 0:
            raise refuse("the Ogg stream is broken: bytes that are not an Ogg page (version 0) where a page "
                         "must begin")
        flags = buffer[5]
        serial = struct.unpack_from("<I", buffer, 14)[0]
        segments = buffer[26]
        if len(buffer) < PAGE_HEADER_BYTES + segments:
            return None
        lacing = bytes(buffer[PAGE_HEADER_BYTES:PAGE_HEADER_BYTES + segments])
        start = PAGE_HEADER_BYTES + segments
        end = start + sum(lacing)
        if len(buffer) < end:
            return None
        self._check_serial(serial, flags)
        body = bytes(buffer[start:end])
        del buffer[:end]
        if self._header_packets < 2:
            self._header_bytes += end
            if self._header_bytes > MAX_HEADER_BYTES:
                raise refuse(f"the Ogg stream's headers run past {MAX_HEADER_BYTES} bytes before any audio")
        return flags, lacing, body

    def _check_serial(self, serial: int, flags: int) -> None:
        if self._serial is None:
            if not flags & BOS:
                raise refuse("the Ogg stream does not begin with its first page (no beginning-of-stream flag)")
            self._serial = serial
        elif serial != self._serial or flags & BOS:
            raise refuse("the Ogg stream carries a second logical stream (video, another track or a chained "
                         "stream): only one Opus stream is decoded")

    def _packets(self, flags: int, lacing: bytes, body: bytes) -> list[bytes]:
        if bool(flags & CONTINUED) != bool(self._packet):
            raise refuse("the Ogg stream is broken: a page's continuation flag does not match the packet before it")
        packets: list[bytes] = []
        at = 0
        for size in lacing:
            self._packet += body[at:at + size]
            at += size
            limit = MAX_HEADER_BYTES if self._header_packets < 2 else MAX_PACKET_BYTES
            if len(self._packet) > limit:
                raise refuse(f"an Ogg packet of over {limit} bytes: an Opus packet is at most {MAX_PACKET_BYTES}")
            if size < 255:
                packet, self._packet = bytes(self._packet), bytearray()
                if (audio := self._header(packet)) is not None:
                    packets.append(audio)
        return packets

    def _header(self, packet: bytes) -> bytes | None:
        """The two header packets are read here; an audio packet is handed back."""
        if self._header_packets == 0:
            self.head = OpusHead.parse(packet)
        elif self._header_packets == 1:
            if not packet.startswith(b"OpusTags"):
                raise refuse("the Ogg Opus stream's second packet is not its comment header (OpusTags)")
        else:
            return packet
        self._header_packets += 1
        return None
