"""SharedModels (appliance/models/shared.py): one load of a model per process, one record per registry."""

from __future__ import annotations

import dataclasses

import numpy as np

from appliance.config import load_config
from appliance.models.registry import LoadSettings, ModelRegistry, load_model
from appliance.models.shared import SharedModels
from appliance.models.store import resolve_model
from appliance.runtime import boot_profile


def tiny_profile():
    return boot_profile(load_config(env={}))  # the packaged defaults: tiny.en


def test_registries_share_one_backend_but_keep_their_own_leases():
    loads = []

    def counted_load(*args):
        loads.append(args[0])
        return load_model(*args)

    shared, spec = SharedModels(counted_load), tiny_profile()
    resolved = resolve_model(str(spec.model_size))
    first, second = ModelRegistry(shared), ModelRegistry(shared)
    a, new_a = first.load("cpu-tiny.en", "cpu", spec, LoadSettings(), resolved=resolved, make_default=True)
    b, new_b = second.load("cpu-tiny.en", "cpu", spec, LoadSettings(), resolved=resolved, make_default=True)
    assert loads == ["cpu-tiny.en"] and len(shared) == 1
    assert new_a and new_b  # each registry loaded "its" model; only the weights were shared
    assert a.backend is b.backend and a is not b
    first.acquire("cpu-tiny.en")
    assert (first.get("cpu-tiny.en").active_streams, second.get("cpu-tiny.en").active_streams) == (1, 0)
    second_second = b.backend.transcribe(np.zeros(16_000, dtype=np.float32), LoadSettings().warm_up_options,
                                         language=None, task="transcribe")
    assert second_second.audio_sec == 1.0  # the shared backend decodes for the second registry too


def test_other_load_settings_or_another_profile_load_again():
    loads = []

    def counted_load(*args):
        loads.append((args[1], args[3].cpu_threads))
        return load_model(*args)

    shared, spec = SharedModels(counted_load), tiny_profile()
    shared("cpu-tiny.en", "cpu", spec, LoadSettings(cpu_threads=1))
    shared("cpu-tiny.en", "cpu", spec, LoadSettings(cpu_threads=2))
    shared("cpu-tiny.en", "cpu", dataclasses.replace(spec, pool_size=spec.pool_size + 1), LoadSettings(cpu_threads=2))
    shared("cpu-tiny.en", "cpu", spec, LoadSettings(cpu_threads=1))
    assert loads == [("cpu", 1), ("cpu", 2), ("cpu", 2)] and len(shared) == 3
