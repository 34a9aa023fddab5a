"""The bounds on a containerized live stream: what a client may declare or send before it is refused
(ERR1003). Each is far above what an honest encoder writes and small enough to cost little."""

from __future__ import annotations

from appliance.errors import ApplianceError

MAX_HEADER_BYTES = 64 * 1024  # container bytes before the first audio packet (headers, tags, track list)
MAX_PACKET_BYTES = 8 * 1024  # one Opus packet: 510 kbit/s for 120 ms is 7650 bytes
MAX_SKIP_BYTES = 1024 * 1024  # one element skipped unread (cues, tags, void) once audio flows
MAX_MASTER_BYTES = MAX_HEADER_BYTES  # an element read whole (track list, block group)
OPUS_RATE_HZ = 48_000  # Opus always decodes at 48 kHz here; the stream's input rate is informational
MAX_SAMPLES_PER_PACKET = OPUS_RATE_HZ * 120 // 1000  # 120 ms, Opus's longest packet
PACKETS_PER_AUDIO_SEC = 400  # Opus's shortest frame is 2.5 ms: more packets than this carry no audio
PACKET_ALLOWANCE = 50  # packets beyond that rate tolerated (headers, empty packets at the start)


def refuse(message: str) -> ApplianceError:
    return ApplianceError("ERR1003", message)
