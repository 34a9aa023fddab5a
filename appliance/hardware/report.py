"""Human-readable text of a `Decision`: what was found, what was chosen and why (`stt-appliance detect`)."""

from __future__ import annotations

import logging

from appliance.hardware.models import GiB, MiB
from appliance.hardware.selection import Decision


def _gib(value: int | None) -> str:
    return f"{value / GiB:.1f} GiB" if value else "-"


def _mib(value: int | None) -> str:
    return f"{value / MiB:.0f} MiB" if value is not None else "unknown"


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(key) for key, _ in rows)
    return [f"  {key:<{width}}  {value}" for key, value in rows]


def found_rows(decision: Decision) -> list[tuple[str, str]]:
    m = decision.machine
    cpu, cuda = m.cpu, m.cuda
    quota = f"{cpu.cgroup_cpu_quota:g}" if cpu.cgroup_cpu_quota else "none"
    gpus = ", ".join(f"#{d.index} {d.name} ({_gib(d.memory_bytes)})" for d in cuda.devices) or "-"
    sw = m.software
    rows = [
        ("cpu", f"{cpu.machine or '?'}, {cpu.logical_cores} cores, {cpu.usable_cores} usable, cgroup quota {quota}"),
        ("memory", f"RAM {_gib(cpu.ram_bytes)}, cgroup limit {_gib(cpu.cgroup_memory_limit_bytes)}"),
        ("cuda", f"ctranslate2 {cuda.ct2_device_count} device(s), torch {cuda.torch_device_count}; {gpus}"),
        ("jetson", (m.jetson.model or m.jetson.l4t_release or "yes") if m.jetson.is_jetson else "no"),
        ("apple", f"{m.apple.platform} {m.apple.machine}, MPS {'yes' if m.apple.mps_available else 'no'}"),
        ("backends", ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in
                               (("ctranslate2", sw.ctranslate2), ("torch", sw.torch), ("openai-whisper", sw.whisper)))),
    ]
    if m.devices.udev_available:
        rows.append(("udev gpus", ", ".join(f"{d.sys_name} {d.description}".strip() for d in m.devices.gpus) or "-"))
        rows.append(("udev sound", ", ".join(f"{d.sys_name} {d.description}".strip() for d in m.devices.sound) or "-"))
    else:
        rows.append(("udev", "pyudev not available"))
    return rows


def chosen_rows(decision: Decision) -> list[tuple[str, str]]:
    d = decision
    return [
        ("mode", d.mode), ("profile", d.profile),
        ("model", d.model + (f" (model_dir {d.model_dir})" if d.model_dir else "")),
        ("backend", d.backend), ("device", d.device), ("compute_type", d.compute_type), ("pool_size", str(d.pool_size)),
        ("cpu_threads", f"{d.cpu_threads}" + (" (auto)" if not d.cpu_threads else "")),
        ("model memory", f"~{_mib(d.model_memory_bytes)} of a {_mib(d.memory_budget_bytes)} budget"),
    ]


def format_decision(decision: Decision) -> str:
    lines = ["Found:", *_rows(found_rows(decision)), "Chosen:", *_rows(chosen_rows(decision)), "Why:"]
    lines += [f"  - {reason}" for reason in decision.reasons]
    if decision.warnings:
        lines.append("Warnings:")
        lines += [f"  ! {warning}" for warning in decision.warnings]
    return "\n".join(lines)


def log_decision(decision: Decision, logger: logging.Logger) -> None:
    """One INFO line with the choice and its reasons; each warning on its own WARNING line."""
    d = decision
    logger.info("hardware %s: profile %s -> model %s, %s on %s, %s, pool %d (%s)", d.mode, d.profile, d.model,
                d.backend, d.device, d.compute_type, d.pool_size, "; ".join(d.reasons))
    for warning in d.warnings:
        logger.warning("HARDWARE FALLBACK: %s", warning)
