"""What `/system` reports: the box, the profile chosen for it, the models, versions and memory."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from appliance import __version__
from appliance.resources import cgroup_memory_limit_bytes, rss_bytes

_PACKAGES = ("ctranslate2", "faster-whisper", "onnxruntime", "grpcio", "falcon", "waitress", "prometheus-client",
             "numpy", "torch", "openai-whisper")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def system_info(runtime) -> dict:
    """Everything an operator asks first; `runtime` is the appliance Runtime."""
    cfg = runtime.config
    hardware = dict(runtime.hardware_report)
    return {
        "appliance": {"version": __version__, "state": runtime.state.value, "pid": os.getpid(),
                      "uptime_sec": runtime.uptime_sec()},
        "platform": {"system": platform.system(), "machine": platform.machine(), "release": platform.release(),
                     "python": sys.version.split()[0], "cpu_count": os.cpu_count()},
        "hardware": hardware,
        "profile": {"configured": cfg.model.profile, "chosen": hardware.get("profile", cfg.model.profile),
                    "warnings": list(hardware.get("warnings", []))},
        "models": runtime.models.snapshot(),
        "model_load_profiles": sorted(cfg.model_load_profiles),
        "default_model_load_profile": cfg.model.default_model_load_profile,
        "memory": {"rss_bytes": rss_bytes(), "budget_bytes": runtime.memory_budget.budget_bytes,
                   "cgroup_limit_bytes": cgroup_memory_limit_bytes(), "total_bytes": total_memory_bytes()},
        "limits": {"max_sessions": cfg.server.max_sessions, "decode_slots": runtime.scheduler.max_in_flight,
                   "max_total_buffer_bytes": cfg.server.max_total_buffer_bytes},
        "versions": package_versions(),
    }
