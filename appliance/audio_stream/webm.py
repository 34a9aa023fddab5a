"""An incremental WebM (Matroska/EBML) demuxer for one Opus track, as MediaRecorder writes it.

It reads element headers flat, without a tree: Segment and Cluster are entered (live recorders write
both with "unknown size", the only elements that may have one), the track list and block groups are
read whole within a bound, SimpleBlocks are read one at a time, and the few other elements a WebM
file holds are skipped unread within a bound. An element this reader does not know is refused rather
than skipped, so garbage is caught at once instead of being taken as a huge element to skip. The
track list must hold one track, audio, A_OPUS; blocks must not use lacing (recorders do not lace Opus).
"""

from __future__ import annotations

from collections.abc import Iterator

from appliance.audio_stream.head import OpusHead
from appliance.audio_stream.limits import MAX_HEADER_BYTES, MAX_MASTER_BYTES, MAX_PACKET_BYTES, MAX_SKIP_BYTES, refuse

EBML, SEGMENT, CLUSTER, TRACKS = 0x1A45DFA3, 0x18538067, 0x1F43B675, 0x1654AE6B
SIMPLE_BLOCK, BLOCK_GROUP, BLOCK = 0xA3, 0xA0, 0xA1
TRACK_ENTRY, TRACK_NUMBER, TRACK_TYPE, CODEC_ID, CODEC_PRIVATE = 0xAE, 0xD7, 0x83, 0x86, 0x63A2
AUDIO, CHANNELS, VIDEO, CODEC_DELAY = 0xE1, 0x9F, 0xE0, 0x56AA
DOC_TYPE = 0x4282
ENTERED = frozenset({SEGMENT, CLUSTER})
READ_WHOLE = {EBML: 1024, TRACKS: MAX_MASTER_BYTES, BLOCK_GROUP: MAX_PACKET_BYTES + 1024,
              SIMPLE_BLOCK: MAX_PACKET_BYTES + 16}
SKIPPED = frozenset({
    0x114D9B74, 0x1549A966, 0x1C53BB6B, 0x1254C367, 0x1043A770, 0x1941A469,  # SeekHead Info Cues Tags Chapters
    0xEC, 0xBF,  # Void, CRC-32                                              # Attachments
    0xE7, 0xA7, 0xAB, 0x5854, 0xAF,  # Cluster: Timestamp, Position, PrevSize, SilentTracks, EncryptedBlock
})
UNKNOWN_SIZE = -1
TYPE_AUDIO, TYPE_VIDEO = 2, 1


def vint(data: bytes | bytearray, at: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-size integer at `at`; None when more bytes are needed.
    A size of all ones (with the marker removed) is UNKNOWN_SIZE."""
    if at >= len(data):
        return None
    first = data[at]
    if first == 0:
        raise refuse("the WebM stream is broken: an element header longer than 8 bytes (not EBML)")
    length = 9 - first.bit_length()
    if at + length > len(data):
        return None
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for byte in data[at + 1:at + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return UNKNOWN_SIZE, length
    return value, length


def children(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """(id, payload) of each element in a payload read whole (no unknown sizes inside)."""
    at = 0
    while at < len(payload):
        found = vint(payload, at, keep_marker=True)
        size = vint(payload, at + found[1], keep_marker=False) if found else None
        if found is None or size is None or size[0] == UNKNOWN_SIZE or at + found[1] + size[1] + size[0] > len(payload):
            raise refuse("the WebM stream is broken: an element runs past the one that holds it")
        start = at + found[1] + size[1]
        yield found[0], payload[start:start + size[0]]
        at = start + size[0]


def _uint(payload: bytes) -> int:
    if len(payload) > 8:
        raise refuse("the WebM stream is broken: an integer element of over 8 bytes")
    return int.from_bytes(payload, "big")


class WebmOpus:
    """feed(bytes) -> the Opus packets those bytes complete; `head` once the track list is read."""

    def __init__(self) -> None:
        self.head: OpusHead | None = None
        self._buffer = bytearray()
        self._track: int | None = None
        self._skip = 0  # bytes of a skipped element still to come
        self._consumed = 0  # bytes before the first audio packet
        self._audio = False
        self._started = False  # the EBML header was read

    def feed(self, data: bytes) -> list[bytes]:
        packets: list[bytes] = []
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            self._count(dropped)
            data = data[dropped:]
        self._buffer += data
        while not self._skip and (element := self._next()) is not None:
            if (packet := self._element(*element)) is not None:
                packets.append(packet)
                self._audio = True
        return packets

    def _next(self) -> tuple[int, bytes] | None:
        """The next element read whole (an entered one with an empty payload), once it is complete."""
        buffer = self._buffer
        found = vint(buffer, 0, keep_marker=True)
        size = vint(buffer, found[1], keep_marker=False) if found else None
        if found is None or size is None:
            return None
        element, header = found[0], found[1] + size[1]
        length = size[0]
        self._check(element, length)
        if element in ENTERED:
            self._take(header)
            return element, b""
        if element in SKIPPED:  # dropped as it comes, never buffered
            available = min(header + length, len(buffer))
            self._take(available)
            self._skip = header + length - available
            return element, b""
        if len(buffer) < header + length:
            return None
        payload = bytes(buffer[header:header + length])
        self._take(header + length)
        return element, payload

    def _check(self, element: int, length: int) -> None:
        if not self._started and element != EBML:
            raise refuse("the stream is neither Ogg nor WebM: it does not begin with an EBML header")
        if element not in ENTERED and element not in READ_WHOLE and element not in SKIPPED:
            raise refuse(f"the WebM stream holds an element this server does not read (id 0x{element:X}); "
                         "it may be damaged")
        if length == UNKNOWN_SIZE and element not in ENTERED:
            raise refuse(f"the WebM stream gives element 0x{element:X} an unknown size (only Segment and Cluster "
                         "may have one)")
        bound = READ_WHOLE.get(element, MAX_SKIP_BYTES if self._audio else MAX_HEADER_BYTES)
        if element not in ENTERED and length > bound:
            raise refuse(f"the WebM stream declares an element of {length} bytes (id 0x{element:X}); at most "
                         f"{bound} are accepted")

    def _take(self, count: int) -> None:
        del self._buffer[:count]
        self._count(count)

    def _count(self, count: int) -> None:
        if not self._audio:
            self._consumed += count
            if self._consumed > MAX_HEADER_BYTES:
                raise refuse(f"the WebM stream's headers run past {MAX_HEADER_BYTES} bytes before any audio")

    def _element(self, element: int, payload: bytes) -> bytes | None:
        if element == EBML:
            self._started = True
            doc = next((value for child, value in children(payload) if child == DOC_TYPE), b"")
            if doc.rstrip(b"\0") not in (b"webm", b"matroska"):
                raise refuse(f"the EBML stream's document type is {doc[:20]!r}, not webm")
        elif element == TRACKS:
            self._tracks(payload)
        elif element == SIMPLE_BLOCK:
            return self._block(payload)
        elif element == BLOCK_GROUP:
            blocks = [value for child, value in children(payload) if child == BLOCK]
            if len(blocks) != 1:
                raise refuse("the WebM stream is broken: a block group without exactly one block")
            return self._block(blocks[0])
        return None

    def _tracks(self, payload: bytes) -> None:
        if self._track is not None:
            raise refuse("the WebM stream has a second track list")
        entries = [dict(children(value)) for child, value in children(payload) if child == TRACK_ENTRY]
        for fields in entries:
            codec = fields.get(CODEC_ID, b"").rstrip(b"\0").decode("ascii", "replace")
            if _uint(fields.get(TRACK_TYPE, b"")) == TYPE_VIDEO or VIDEO in fields or codec.startswith("V_"):
                raise refuse("the WebM stream has a video track: send audio only")
        if len(entries) != 1:
            raise refuse(f"the WebM stream has {len(entries)} tracks: only one audio track (Opus) is decoded")
        fields = entries[0]
        codec = fields.get(CODEC_ID, b"").rstrip(b"\0").decode("ascii", "replace")
        if codec != "A_OPUS":
            raise refuse(f"the WebM track's codec is {codec[:40]!r}: this door decodes Opus (A_OPUS) only")
        if CODEC_PRIVATE in fields:
            self.head = OpusHead.parse(fields[CODEC_PRIVATE])
        else:
            audio = dict(children(fields.get(AUDIO, b"")))
            delay_ns = _uint(fields.get(CODEC_DELAY, b""))
            self.head = OpusHead.default(_uint(audio.get(CHANNELS, b"\x01")), min(65535, delay_ns * 48 // 1_000_000))
        self._track = _uint(fields.get(TRACK_NUMBER, b"\x01"))

    def _block(self, payload: bytes) -> bytes:
        if self._track is None:
            raise refuse("the WebM stream sends audio before its track list")
        track = vint(payload, 0, keep_marker=False)
        if track is None or len(payload) < track[1] + 3:
            raise refuse("the WebM stream is broken: a block shorter than its header")
        if track[0] != self._track:
            raise refuse(f"the WebM stream has a block of track {track[0]}, which its track list does not name")
        flags = payload[track[1] + 2]
        if flags & 0x06:
            raise refuse("the WebM stream laces several packets in one block: not supported (send one Opus "
                         "packet per block, as recorders do)")
        packet = payload[track[1] + 3:]
        if len(packet) > MAX_PACKET_BYTES:
            raise refuse(f"an Opus packet of {len(packet)} bytes: at most {MAX_PACKET_BYTES} are accepted")
        return packet
