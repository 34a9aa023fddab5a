"""What `/system` reports: the box, the profile chosen for it, the models, versions and memory."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

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


def platform_info() -> dict:
    return {"system": platform.system(), "machine": platform.machine(), "release": platform.release(),
            "python": sys.version.split()[0], "cpu_count": os.cpu_count()}


def memory_info(budget_bytes: int | None) -> dict:
    return {"rss_bytes": rss_bytes(), "budget_bytes": budget_bytes,
            "cgroup_limit_bytes": cgroup_memory_limit_bytes(), "total_bytes": total_memory_bytes()}
