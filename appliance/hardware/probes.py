"""The real probes, one function per kind of hardware, and `Probes`: the one seam tests replace.

Each probe only looks (file reads, `find_spec`, device counts) and returns a dataclass from
`appliance.hardware.machine`. torch is imported only where it is installed and its answer is
needed (CUDA names/memory, MPS on a Mac), because importing it costs seconds at boot.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
from appliance.resources import cgroup_memory_limit_bytes

log = logging.getLogger(__name__)

ROOT = Path("/")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


# --- CUDA --------------------------------------------------------------------------------------

def _ct2_cuda() -> tuple[int, tuple[str, ...]]:
    if not _installed("ctranslate2"):
        return 0, ()
    import ctranslate2

    count = ctranslate2.get_cuda_device_count()  # 0 on CPU-only builds (all aarch64 wheels)
    types = tuple(sorted(ctranslate2.get_supported_compute_types("cuda"))) if count else ()
    return count, types


def _torch_gpu_build() -> bool:
    """Whether the installed torch is a CUDA (or ROCm) build, read from torch/version.py: importing
    torch takes ~1.7 s here, which a CPU-only build would add to every boot for nothing."""
    spec = importlib.util.find_spec("torch")
    folders = list(spec.submodule_search_locations or []) if spec else []
    text = _read(Path(folders[0]) / "version.py") if folders else None
    if text is None:
        return bool(folders)  # unknown layout: ask torch itself
    return gpu_build_declared(text)


def gpu_build_declared(version_py: str) -> bool:
    """torch/version.py sets `cuda` (or `hip`) to a version string in GPU builds, None in CPU ones."""
    builds = re.findall(r"^(cuda|hip)\b[^=\n]*=\s*(.+)$", version_py, re.MULTILINE)
    return any(value.strip() != "None" for _, value in builds)


def _torch_cuda() -> tuple[int, tuple[GpuDevice, ...]]:
    if not _installed("torch") or not _torch_gpu_build():
        return 0, ()
    import torch

    if not torch.cuda.is_available():
        return 0, ()
    count = torch.cuda.device_count()
    return count, tuple(GpuDevice(i, torch.cuda.get_device_name(i),
                                  int(torch.cuda.get_device_properties(i).total_memory)) for i in range(count))


def _nvidia_smi() -> tuple[GpuDevice, ...]:
    """Names and memory without torch (a CUDA server often has CTranslate2 but no torch)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    devices = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
            devices.append(GpuDevice(int(parts[0]), parts[1], int(parts[2]) * 2**20))  # MiB
    return tuple(devices)


def probe_cuda() -> CudaInfo:
    ct2_count, ct2_types = _ct2_cuda()
    torch_count, devices = _torch_cuda()
    if not devices and ct2_count:
        devices = _nvidia_smi()
    return CudaInfo(ct2_device_count=ct2_count, torch_device_count=torch_count, devices=devices,
                    ct2_compute_types=ct2_types)


# --- Jetson, Apple ------------------------------------------------------------------------------

def probe_jetson(root: Path = ROOT) -> JetsonInfo:
    release = _read(root / "etc/nv_tegra_release")
    model = _read(root / "proc/device-tree/model")
    is_jetson = bool(release) or bool(model and "jetson" in model.lower())
    return JetsonInfo(is_jetson=is_jetson, model=model or None,
                      l4t_release=release.splitlines()[0] if release else None)


def probe_apple() -> AppleInfo:
    mps = False
    if sys.platform == "darwin" and _installed("torch"):
        import torch

        mps = bool(torch.backends.mps.is_available())
    return AppleInfo(platform=sys.platform, machine=platform.machine(), mps_available=mps)


# --- CPU and memory -----------------------------------------------------------------------------

def cgroup_cpu_quota(root: Path = ROOT) -> float | None:
    """CPUs allowed by the cgroup: v2 `cpu.max` ("150000 100000"), else v1 cfs quota/period."""
    v2 = _read(root / "sys/fs/cgroup/cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and quota.isdigit() and period.isdigit() and int(period):
            return int(quota) / int(period)
        return None
    for folder in ("cpu", "cpu,cpuacct"):
        quota_us, period_us = (_read(root / f"sys/fs/cgroup/{folder}/cpu.cfs_{k}_us") for k in ("quota", "period"))
        if quota_us and period_us:
            try:
                q, p = int(quota_us), int(period_us)
            except ValueError:
                continue
            return q / p if q > 0 and p > 0 else None  # quota -1 = unlimited
    return None


def ram_bytes(root: Path = ROOT) -> int:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024  # kB
    if root != ROOT:
        return 0
    try:  # no /proc (macOS)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _ct2_cpu_types() -> tuple[str, ...]:
    if not _installed("ctranslate2"):
        return ()
    import ctranslate2

    return tuple(sorted(ctranslate2.get_supported_compute_types("cpu")))


def probe_cpu(root: Path = ROOT) -> CpuInfo:
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    limit_files = (root / "sys/fs/cgroup/memory.max", root / "sys/fs/cgroup/memory/memory.limit_in_bytes")
    return CpuInfo(machine=platform.machine(), logical_cores=logical, usable_cores=usable,
                   cgroup_cpu_quota=cgroup_cpu_quota(root), ram_bytes=ram_bytes(root),
                   cgroup_memory_limit_bytes=cgroup_memory_limit_bytes(limit_files),
                   ct2_compute_types=_ct2_cpu_types())


def probe_software() -> SoftwareInfo:
    return SoftwareInfo(ctranslate2=_installed("ctranslate2"), torch=_installed("torch"),
                        whisper=_installed("whisper"))


# --- udev: GPUs and sound cards -----------------------------------------------------------------

def _describe(device) -> str:
    """The model name udev knows for the card or the USB/PCI device it sits on, else the ALSA card id."""
    node, depth = device, 0
    while node is not None and depth < 4:  # card -> interface -> usb device / pci device
        for key in ("ID_MODEL_FROM_DATABASE", "ID_MODEL"):
            if node.properties.get(key):
                return str(node.properties[key]).replace("_", " ")
        product = node.attributes.get("product")
        if product:
            return product.decode(errors="replace").strip()
        node, depth = node.parent, depth + 1
    card_id = device.attributes.get("id")  # ALSA card id, e.g. "Microphone"
    return card_id.decode(errors="replace").strip() if card_id else ""


def _cards(context, subsystem: str) -> tuple[UdevDevice, ...]:
    found = []
    for device in context.list_devices(subsystem=subsystem):
        name = device.sys_name
        if not name.startswith("card") or "-" in name:  # skip connectors (card0-HDMI-A-1) and PCM nodes
            continue
        found.append(UdevDevice(subsystem, name, device.device_node, _describe(device)))
    return tuple(sorted(found, key=lambda d: d.sys_name))


def probe_devices() -> DeviceInfo:
    if not _installed("pyudev"):
        return DeviceInfo()
    try:
        import pyudev

        context = pyudev.Context()
    except (ImportError, OSError) as err:  # no libudev (macOS, minimal containers)
        log.debug("udev unavailable: %s", err)
        return DeviceInfo()
    return DeviceInfo(udev_available=True, gpus=_cards(context, "drm"), sound=_cards(context, "sound"))


# --- the seam -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probes:
    """One callable per probe; tests pass their own to present hardware this machine lacks."""

    cpu: Callable[[], CpuInfo] = probe_cpu
    cuda: Callable[[], CudaInfo] = probe_cuda
    jetson: Callable[[], JetsonInfo] = probe_jetson
    apple: Callable[[], AppleInfo] = probe_apple
    devices: Callable[[], DeviceInfo] = probe_devices
    software: Callable[[], SoftwareInfo] = probe_software


def probe_machine(probes: Probes | None = None) -> Machine:
    """Run every probe; one that raises is reported in `probe_errors` and counts as absent."""
    probes = probes or Probes()
    found, errors = {}, []
    defaults = Machine()
    for name in ("cpu", "cuda", "jetson", "apple", "devices", "software"):
        try:
            found[name] = getattr(probes, name)()
        except Exception as err:  # a broken driver or library must not stop the boot
            log.warning("hardware probe %s failed: %s: %s", name, type(err).__name__, err)
            errors.append(f"{name}: {type(err).__name__}: {err}")
            found[name] = getattr(defaults, name)
    return Machine(**found, probe_errors=tuple(errors))
