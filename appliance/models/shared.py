"""`SharedModels`: a `ModelRegistry` loader that loads each model once per process.

For a process that runs several appliances, as the tests do (tests/inprocess.py): loading and
warming up even tiny.en takes about a second, and each appliance would load the same weights again.
Every registry that asks for the same model with the same profile and load settings gets the one
backend loaded first (its own `LoadedModel` record: leases and draining stay per registry).
Backends take calls from several threads at once; appliances sharing one share its replicas, as
they would share the CPU cores anyway. The appliance itself never uses this: one process, one
registry, nothing to share.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable

from appliance.config_schema import ModelLoadProfile
from appliance.models.registry import LoadedModel, LoadSettings, load_model
from appliance.models.store import ResolvedModel

log = logging.getLogger(__name__)


class SharedModels:
    def __init__(self, load: Callable[..., LoadedModel] = load_model):
        self._load = load
        self._loaded: dict[Hashable, LoadedModel] = {}
        self._lock = threading.Lock()  # held while loading: two appliances starting at once load once

    def __len__(self) -> int:
        with self._lock:
            return len(self._loaded)

    def __call__(self, model_id: str, profile_id: str, spec: ModelLoadProfile, settings: LoadSettings,
                 resolved: ResolvedModel | None = None) -> LoadedModel:
        key = (model_id, profile_id, spec, settings, str(resolved.path) if resolved else None)
        with self._lock:
            first = self._loaded.get(key)
            if first is None:
                first = self._loaded[key] = self._load(model_id, profile_id, spec, settings, resolved)
            else:
                log.info("model %s: sharing the backend another appliance of this process loaded", model_id)
        return dataclasses.replace(first, loaded_at=time.time(), active_streams=0, draining=False)
