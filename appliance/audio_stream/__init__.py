"""Containerized live audio (Opus in Ogg or WebM, what browsers' MediaRecorder and Opus encoders
write) as the pipeline's 16 kHz mono int16, decoded as it arrives, message by message.

The containers are read here, in pure Python, by two small demuxers (`ogg.py`, `webm.py`) that know
only what it takes to find one Opus track and its packets; the packets alone go to libopus through
PyAV's codec context (`opus.py`). Container bytes never reach FFmpeg's demuxers: those parse a great
deal of format (and are where FFmpeg's parsing bugs have lived), while libopus is small and heavily
fuzzed. Every value a client controls is bounded (`limits.py`); a stream that breaks one is refused
with ERR1003, which ends that stream alone.
"""

from appliance.audio_stream.stream import ContainerOpus

__all__ = ["ContainerOpus"]
