"""Whisper backends behind one interface; each is imported only when chosen."""

from __future__ import annotations

from appliance.models.backends.base import Backend, Segment, Transcript

__all__ = ["Backend", "Segment", "Transcript", "load_backend"]


def load_backend(backend: str, **kwargs) -> Backend:
    if backend == "faster_whisper":
        from appliance.models.backends.faster_whisper import FasterWhisperBackend

        return FasterWhisperBackend(**kwargs)
    raise ValueError(f"model.backend {backend!r} is not available (built: faster_whisper)")
