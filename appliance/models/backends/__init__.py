"""Whisper backends behind one interface; each is imported only when chosen."""

from __future__ import annotations

from appliance.models.backends.base import Backend, Segment, Transcript

__all__ = ["Backend", "Segment", "Transcript", "load_backend"]


def load_backend(backend: str, **kwargs) -> Backend:
    if backend == "faster_whisper":
        from appliance.models.backends.faster_whisper import FasterWhisperBackend

        return FasterWhisperBackend(**kwargs)
    if backend == "torch_whisper":
        from appliance.models.store import ModelStoreError

        try:
            import torch  # noqa: F401
            import whisper  # noqa: F401
        except ImportError as err:
            raise ModelStoreError(
                f"model.backend torch_whisper needs torch and openai-whisper ({err}): "
                "EXTRAS=torch scripts/setup.sh (see docs/models.md)") from err
        from appliance.models.backends.torch_whisper import TorchWhisperBackend

        return TorchWhisperBackend(**kwargs)
    raise ValueError(f"model.backend {backend!r} is not available (built: faster_whisper, torch_whisper)")
