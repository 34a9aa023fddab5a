"""The model-admin facade the HTTP plane calls: list, load and unload models while streams run."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from appliance.config import AppConfig
from appliance.errors import ApplianceError
from appliance.hardware.models import model_memory_bytes
from appliance.models.registry import LoadSettings, ModelRegistry, model_id_for
from appliance.models.store import ModelStoreError
from appliance.resources import MemoryBudget

log = logging.getLogger(__name__)


class ModelAdmin:
    def __init__(self, config: AppConfig, models: ModelRegistry, memory_budget: MemoryBudget,
                 load_settings: Callable[[], LoadSettings], on_change: Callable[[], None] = lambda: None):
        self._config = config
        self._models = models
        self._memory_budget = memory_budget
        self._load_settings = load_settings
        self._on_change = on_change  # the health verdict counts loaded models

    def listing(self) -> dict[str, Any]:
        cfg = self._config
        return {"models": self._models.snapshot(), "default_model_id": self._models.default_id,
                "profiles": {name: dataclasses.asdict(p) for name, p in sorted(cfg.model_load_profiles.items())},
                "default_profile": cfg.model.default_model_load_profile}

    def load_model(self, profile_id: str | None = None, *, model_id: str | None = None,
                   model_size: str | None = None) -> tuple[dict, bool]:
        """Load a model by load profile (blocking; run it off the event loop). Live streams keep
        running: the new model joins the registry only after its warm-up decode."""
        cfg = self._config
        profile_id = profile_id or cfg.model.default_model_load_profile
        profile = cfg.model_load_profiles.get(profile_id)
        if profile is None:
            raise ApplianceError("ERR1010", f"unknown model load profile {profile_id!r} "
                                 f"(model_load_profiles: {', '.join(sorted(cfg.model_load_profiles))})")
        if model_size:
            profile = dataclasses.replace(profile, model_size=model_size)
        model_id = model_id or model_id_for(profile.device, profile.model_size)
        if self._models.get(model_id) is None:
            self._memory_budget.admit_model(model_id, model_memory_bytes(
                os.path.basename(str(profile.model_size).rstrip("/")), profile.compute_type, profile.pool_size))
        try:
            model, created = self._models.load(model_id, profile_id, profile, self._load_settings())
        except ModelStoreError as err:
            raise ApplianceError("ERR1010", f"model {profile.model_size!r} cannot be used: {err}") from None
        except ApplianceError:
            raise
        except Exception as err:  # the backend refused (device missing, bad weights): one code, logged
            log.exception("loading model %s failed", model_id)
            raise ApplianceError("ERR1016", f"loading {model_id} failed: {type(err).__name__}: {err}") from None
        self._on_change()
        return model.to_dict(), created

    def unload_model(self, model_id: str, *, drain: bool = False) -> str:
        status = self._models.unload(model_id, drain=drain)
        self._on_change()
        return status
