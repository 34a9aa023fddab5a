"""Hardware detection and the boot-time model choice (DESIGN.md section 6).

`probe_machine(probes)` looks at the machine through `Probes` (the one seam tests replace);
`select(config, machine)` turns config + machine into a `Decision`; `apply_decision` makes the
effective config from it. `detect` runs both, as `stt-appliance serve` and `detect` do.
"""

from __future__ import annotations

from appliance.config import AppConfig
from appliance.hardware.machine import (
    AppleInfo,
    CpuInfo,
    CudaInfo,
    DeviceInfo,
    GpuDevice,
    JetsonInfo,
    Machine,
    SoftwareInfo,
    UdevDevice,
)
from appliance.hardware.models import ModelAvailable, installed_model
from appliance.hardware.probes import Probes, probe_machine
from appliance.hardware.selection import Decision, apply_decision, select

__all__ = [
    "AppleInfo", "CpuInfo", "CudaInfo", "Decision", "DeviceInfo", "GpuDevice", "JetsonInfo", "Machine", "Probes",
    "SoftwareInfo", "UdevDevice", "apply_decision", "detect", "probe_machine", "select",
]


def detect(config: AppConfig, probes: Probes | None = None,
           model_available: ModelAvailable = installed_model) -> Decision:
    """Probe this machine (or what `probes` present) and choose the model setup for `config`."""
    return select(config, probe_machine(probes), model_available)
