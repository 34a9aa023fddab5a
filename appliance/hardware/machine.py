"""What the probes found: plain, frozen dataclasses with no behaviour beyond a few derived figures.

Every field has a safe "absent" value (0, None, empty tuple), so a probe that cannot look (no
ctranslate2 CUDA build, no torch, no pyudev, no /proc) reports absence instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    memory_bytes: int  # total device memory; 0 when unknown


@dataclass(frozen=True)
class CudaInfo:
    ct2_device_count: int = 0  # CUDA devices CTranslate2 can use (0 on CPU-only wheels, e.g. aarch64)
    torch_device_count: int = 0  # CUDA devices torch can use (0 without torch or without a CUDA build)
    devices: tuple[GpuDevice, ...] = ()  # names and memory, from torch where importable
    ct2_compute_types: tuple[str, ...] = ()  # compute types CTranslate2 supports on CUDA device 0

    @property
    def memory_bytes(self) -> int:
        """Memory of the first device (the one a single-GPU pool uses); 0 when unknown."""
        return self.devices[0].memory_bytes if self.devices else 0


@dataclass(frozen=True)
class JetsonInfo:
    is_jetson: bool = False
    model: str | None = None  # /proc/device-tree/model, e.g. "NVIDIA Jetson AGX Orin Developer Kit"
    l4t_release: str | None = None  # first line of /etc/nv_tegra_release


@dataclass(frozen=True)
class AppleInfo:
    platform: str = ""  # sys.platform: darwin, linux, ...
    machine: str = ""  # platform.machine(): arm64, x86_64, aarch64, ...
    mps_available: bool = False  # torch.backends.mps.is_available(); False without torch

    @property
    def is_apple_silicon(self) -> bool:
        return self.platform == "darwin" and self.machine == "arm64"


@dataclass(frozen=True)
class CpuInfo:
    machine: str = ""  # CPU architecture
    logical_cores: int = 1  # os.cpu_count()
    usable_cores: int = 1  # cores this process may run on (scheduler affinity)
    cgroup_cpu_quota: float | None = None  # CPUs the cgroup allows (quota / period); None = unlimited
    ram_bytes: int = 0  # physical memory (MemTotal)
    cgroup_memory_limit_bytes: int | None = None  # None = unlimited
    ct2_compute_types: tuple[str, ...] = ()  # compute types CTranslate2 supports on this CPU

    @property
    def effective_cpus(self) -> float:
        """CPUs the process can really use: affinity, capped by the cgroup quota."""
        cores = float(self.usable_cores)
        return min(cores, self.cgroup_cpu_quota) if self.cgroup_cpu_quota else cores

    @property
    def memory_limit_bytes(self) -> int:
        """RAM, capped by the cgroup memory limit."""
        if self.cgroup_memory_limit_bytes and self.ram_bytes:
            return min(self.ram_bytes, self.cgroup_memory_limit_bytes)
        return self.cgroup_memory_limit_bytes or self.ram_bytes


@dataclass(frozen=True)
class UdevDevice:
    subsystem: str  # sound, drm, ...
    sys_name: str  # card0, controlC0, renderD128, ...
    device_node: str | None = None  # /dev/snd/controlC0, /dev/dri/card0
    description: str = ""  # vendor/model as udev names them


@dataclass(frozen=True)
class DeviceInfo:
    udev_available: bool = False  # pyudev importable and /sys readable
    gpus: tuple[UdevDevice, ...] = ()  # drm cards
    sound: tuple[UdevDevice, ...] = ()  # ALSA cards (microphones, speakers)


@dataclass(frozen=True)
class SoftwareInfo:
    """Decode backends importable here (imported lazily by the backends, so only looked up)."""

    ctranslate2: bool = False  # faster_whisper backend
    torch: bool = False
    whisper: bool = False  # openai-whisper, needed with torch by the torch_whisper backend

    @property
    def torch_whisper(self) -> bool:
        return self.torch and self.whisper


@dataclass(frozen=True)
class Machine:
    cpu: CpuInfo = field(default_factory=CpuInfo)
    cuda: CudaInfo = field(default_factory=CudaInfo)
    jetson: JetsonInfo = field(default_factory=JetsonInfo)
    apple: AppleInfo = field(default_factory=AppleInfo)
    devices: DeviceInfo = field(default_factory=DeviceInfo)
    software: SoftwareInfo = field(default_factory=SoftwareInfo)
    probe_errors: tuple[str, ...] = ()  # probes that failed unexpectedly ("cuda: RuntimeError: ...")
