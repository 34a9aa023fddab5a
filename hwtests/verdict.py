"""What the figures mean for an operator: the device classes this box meets, and a config snippet.

A class is a use the appliance is sold for, stated as streams held at a p95 final latency. The
kiosk is judged with partials on (its screen shows words while the visitor speaks); the room with
finals only (meeting minutes store finals). A class holds when the sweep's unbroken run of held
steps reaches its stream count within its latency.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hwtests.sweep import max_streams_within


@dataclass(frozen=True)
class DeviceClass:
    name: str
    min_streams: int
    p95_limit_sec: float
    partials: bool

    def describe(self) -> str:
        return (f"{self.name}: >= {self.min_streams} streams at p95 <= {self.p95_limit_sec:g} s"
                f" ({'with partials' if self.partials else 'finals only'})")


CLASSES = (
    DeviceClass("kiosk", min_streams=4, p95_limit_sec=1.0, partials=True),
    DeviceClass("room", min_streams=16, p95_limit_sec=2.0, partials=False),
)
# The sweeps stop at the loosest class limit: past it no class can be met.
SWEEP_P95_LIMIT_SEC = max(c.p95_limit_sec for c in CLASSES)
# (partial_decode_interval_sec, partial_decode_interval_max_sec): config/server.yaml's defaults, and
# half the partial decodes at every load for a box that loses capacity to them
PARTIAL_CADENCE_DEFAULT_SEC = (0.5, 3.0)
PARTIAL_CADENCE_SLOW_SEC = (1.0, 6.0)


def judge(capacity: dict[str, Any], noise_words: int | None,
          audio_input: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"verdict": "room, kiosk" | "none", "classes": [...with met/streams], "warnings": [...]}."""
    classes = []
    for cls in CLASSES:
        sweep = capacity["partials" if cls.partials else "finals_only"]
        streams = max_streams_within(sweep, cls.p95_limit_sec)
        classes.append({**asdict(cls), "description": cls.describe(), "streams_held": streams,
                        "met": streams is not None and streams >= cls.min_streams})
    met = [c["name"] for c in classes if c["met"]]
    warnings = []
    if noise_words:
        warnings.append(f"{noise_words} words transcribed from noise alone: check the VAD threshold")
    if audio_input is not None and audio_input.get("assessment") != "ok":
        warnings.append(f"audio input ({audio_input.get('device', 'no device')}): {audio_input.get('assessment')}")
    for name, sweep in capacity.items():
        if sweep["stopped_by"] is None and sweep["steps"]:
            warnings.append(f"{name}: every step held; the knee lies beyond {sweep['steps'][-1]['channels']} "
                            "streams (run --full or pass --steps)")
        warnings += knee_warnings(name, sweep.get("knee"))
    return {"verdict": ", ".join(met) if met else "none", "classes": classes, "warnings": warnings}


def knee_warnings(name: str, knee: dict[str, Any] | None) -> list[str]:
    """An unconfirmed knee, or tries so far apart that single passes would read knees more than a
    step apart: the box's load changed during the run (another job, thermal throttling)."""
    if not knee:
        return []
    out = []
    if not knee["confirmed"]:
        out.append(f"{name}: the knee's retries did not agree within the retry budget; "
                   "rerun with nothing else running")
    spread = knee["spread"]
    if spread["steps"] > 1:
        out.append(f"{name}: single passes would have read {spread['low']} to {spread['high']} streams "
                   f"({spread['steps']} steps apart): the box's load varied during the run")
    return out


def recommended_config(capacity: dict[str, Any], inventory: dict[str, Any]) -> str:
    """A YAML snippet for server.yaml/model.yaml sized from the knees, with why in comments."""
    finals = capacity["finals_only"]["max_streams"] or 1
    partials = capacity["partials"]["max_streams"]
    if partials is None:
        interval, interval_max = "null", "null"
        why = "partials did not hold even at the first step: leave them off"
    else:
        slow = partials < finals
        interval, interval_max = (f"{sec:g}" for sec in (PARTIAL_CADENCE_SLOW_SEC if slow
                                                          else PARTIAL_CADENCE_DEFAULT_SEC))
        why = (f"partials lower the knee ({partials} vs {finals} streams): decode them half as often" if slow
               else "partials cost no capacity here: the default")
    pool = inventory.get("pool_size", 1)
    return (f"# recommended for this box by hwtests (profile {inventory.get('profile')}, "
            f"model {inventory.get('model')})\n"
            "server:\n"
            f"  max_sessions: {finals}  # the finals-only knee: one more stream and p95 or a final gives way\n"
            f"  partial_decode_interval_sec: {interval}  # {why}\n"
            f"  partial_decode_interval_max_sec: {interval_max}  # the cadence under full decode load\n"
            "model:\n"
            f"  pool_size: {pool}  # what the '{inventory.get('profile')}' profile chose; the sweeps ran with it\n")
