"""Model registry: the models loaded right now, under the `model_id`s clients choose them by.

Loading happens off the event loop (an admin request runs in an HTTP worker thread; boot runs in a
thread too) and a model joins the registry only after its warm-up decode, so a stream never meets
a half-loaded model. Streams lease a model for their lifetime (`acquire`/`release`). Unloading a
model that streams are using is refused unless the caller asks to drain it: a draining model takes
no new streams and leaves the registry when its last stream ends. The default model (sessions that
name no model_id get it) cannot be unloaded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from appliance.config_schema import ModelLoadProfile
from appliance.decode_options import DecodeOptions
from appliance.errors import ApplianceError
from appliance.models.backends import Backend, load_backend
from appliance.models.backends.window_check import SECOND_LOOK_BELOW
from appliance.models.store import ResolvedModel, resolve_model

log = logging.getLogger(__name__)


def model_id_for(device: str, model_size: str) -> str:
    """`<device>-<model name>`, e.g. cpu-tiny.en: the id clients pass as model_id."""
    return f"{device}-{os.path.basename(str(model_size).rstrip('/'))}"


@dataclass
class LoadedModel:
    model_id: str
    backend: Backend
    profile_id: str
    spec: ModelLoadProfile
    source: str
    load_sec: float
    loaded_at: float = field(default_factory=time.time)
    active_streams: int = 0
    draining: bool = False

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "profile_id": self.profile_id, "model": self.spec.model_size,
                "backend": self.spec.backend, "device": self.spec.device, "compute_type": self.spec.compute_type,
                "pool_size": self.spec.pool_size, "source": self.source, "load_sec": round(self.load_sec, 3),
                "loaded_at": round(self.loaded_at, 3), "active_sessions": self.active_streams,
                "state": "draining" if self.draining else "loaded"}


@dataclass(frozen=True)
class LoadSettings:
    """What every load shares, from the `model` section: threads, encoder window and its second look,
    warm-up options."""

    cpu_threads: int = 0
    encode_window: str = "bucketed"
    second_look_below: float = SECOND_LOOK_BELOW  # model.second_look_below: unsure finals decoded again
    languages: tuple[str, ...] = ()  # model.languages: what a multilingual model detects among (language_choice)
    model_dir: str | None = None
    warm_up_options: DecodeOptions = field(default_factory=DecodeOptions)


def load_model(model_id: str, profile_id: str, spec: ModelLoadProfile, settings: LoadSettings,
               resolved: ResolvedModel | None = None) -> LoadedModel:
    """Resolve, load and warm up one model (blocking; seconds). ModelStoreError names a bad file."""
    started = time.perf_counter()
    resolved = resolved or resolve_model(str(spec.model_size), settings.model_dir)
    backend = load_backend(
        spec.backend, model_id=model_id, model_path=str(resolved.path), device=spec.device,
        compute_type=spec.compute_type, pool_size=spec.pool_size, cpu_threads=settings.cpu_threads,
        english_only=resolved.english_only, encode_window=settings.encode_window, languages=settings.languages,
        second_look_below=settings.second_look_below)
    # The first decode allocates the backend's buffers; a model serves only after it.
    backend.transcribe(np.zeros(16_000, dtype=np.float32), settings.warm_up_options, language=None, task="transcribe")
    load_sec = time.perf_counter() - started
    log.info("model %s (%s %s %s) loaded from %s and warmed up in %.2f s", model_id, spec.backend, spec.device,
             spec.compute_type, resolved.source, load_sec)
    return LoadedModel(model_id, backend, profile_id, spec, str(resolved.source), load_sec)


class ModelRegistry:
    """Thread-safe map of model_id -> LoadedModel with stream leases."""

    def __init__(self, loader: Callable[..., LoadedModel] = load_model):
        self._loader = loader
        self._models: dict[str, LoadedModel] = {}
        self._loading: set[str] = set()
        self._lock = threading.Lock()
        self.default_id = ""

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def load_through(self, loader: Callable[..., LoadedModel]) -> None:
        """Load with `loader` from now on (appliance.models.shared.SharedModels, where one process runs
        several appliances); only before the first load, so all of a registry's models had one loader."""
        with self._lock:
            if self._models or self._loading:
                raise RuntimeError("a registry's loader is chosen before its first load")
            self._loader = loader

    def ids(self) -> tuple[str, ...]:
        """Models that accept new sessions (not draining)."""
        with self._lock:
            return tuple(mid for mid, m in self._models.items() if not m.draining)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [m.to_dict() | {"default": mid == self.default_id} for mid, m in self._models.items()]

    def get(self, model_id: str) -> LoadedModel | None:
        with self._lock:
            return self._models.get(model_id)

    def load(self, model_id: str, profile_id: str, spec: ModelLoadProfile, settings: LoadSettings,
             *, resolved: ResolvedModel | None = None, make_default: bool = False) -> tuple[LoadedModel, bool]:
        """Load a model unless one with this id is loaded; returns (model, newly_loaded).

        A second request for an id that is loading waits for nothing: it is refused (ERR1017 with a
        retry hint) rather than loading the same weights twice."""
        with self._lock:
            existing = self._models.get(model_id)
            if existing is not None and not existing.draining:
                return existing, False
            if existing is not None:
                raise ApplianceError("ERR1017", f"model {model_id} is draining; load it again once it has unloaded")
            if model_id in self._loading:
                raise ApplianceError("ERR1017", f"model {model_id} is already loading", retry_after_sec=2.0)
            self._loading.add(model_id)
        try:
            model = self._loader(model_id, profile_id, spec, settings, resolved)
        finally:
            with self._lock:
                self._loading.discard(model_id)
        with self._lock:
            self._models[model_id] = model
            if make_default or not self.default_id:
                self.default_id = model_id
        return model, True

    def unload(self, model_id: str, *, drain: bool = False) -> str:
        """Remove a model: 'unloaded' at once, or 'draining' (with drain=True) while streams use it."""
        with self._lock:
            model = self._models.get(model_id)
            if model is None:
                raise ApplianceError("ERR1011",
                                     f"model_id {model_id!r} is not loaded (loaded: {', '.join(self._models)})")
            if model_id == self.default_id:
                raise ApplianceError("ERR1017", f"model {model_id} is the default model (sessions without a model_id "
                                     "use it) and cannot be unloaded")
            if model.active_streams and not drain:
                raise ApplianceError("ERR1017", f"model {model_id} serves {model.active_streams} stream(s); unload "
                                     "with drain=true to stop new sessions and unload when they end")
            if model.active_streams:
                model.draining = True
                log.info("model %s draining: unloads when its %d stream(s) end", model_id, model.active_streams)
                return "draining"
            del self._models[model_id]
        log.info("model %s unloaded", model_id)
        return "unloaded"

    def acquire(self, model_id: str) -> LoadedModel:
        """Lease a model for one stream (ERR1011 when it is gone or draining)."""
        with self._lock:
            model = self._models.get(model_id)
            if model is None or model.draining:
                raise ApplianceError("ERR1011", f"model_id {model_id!r} is not loaded (it was unloaded after the "
                                     "session was created)")
            model.active_streams += 1
            return model

    def release(self, model: LoadedModel) -> None:
        with self._lock:
            model.active_streams -= 1
            if model.draining and model.active_streams <= 0 and self._models.get(model.model_id) is model:
                del self._models[model.model_id]
                log.info("model %s unloaded after its last stream ended", model.model_id)
