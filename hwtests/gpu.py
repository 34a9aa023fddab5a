"""GPU use while a step runs, from the first source this box has (`select_reader`):

- tegrastats  Jetson (the board's own tool): GR3D_FREQ, the integrated GPU's load, and RAM in use. Jetson
              memory is shared, so the memory figure is the whole board's RAM in use, CPU side included.
- nvml        NVIDIA GPUs through NVML (`pynvml`, package nvidia-ml-py): no process started per sample.
- nvidia-smi  the same figures where the driver is but nvidia-ml-py is not.

Apple Silicon has none yet: torch's MPS counters see only the calling process (hwtests, not the
server), so they would report the tester's memory as the appliance's; the figures stay None there.

Each source is a `Reader`, the one seam tests replace; on a box with none every figure is None.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

Reading = list[tuple[float | None, float | None]]  # per GPU: (utilisation %, memory used MiB); None: unknown
MIB = 2**20
SMI_QUERY = "utilization.gpu,memory.used"
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")  # "GR3D_FREQ 12%@[305,305]", "... 0%@1377", "... 1%" (r36)
_RAM = re.compile(r"\bRAM (\d+)/\d+([kMG])B")  # "RAM 3162/7620MB (lfb 4x2MB)"
_UNIT_MIB = {"k": 1 / 1024, "M": 1.0, "G": 1024.0}


class Reader(Protocol):
    source: str  # the name report.json keeps as gpu_source

    def read(self) -> Reading | None:
        """One sample (it may wait for the source's next line); None: the source stopped answering."""

    def close(self) -> None: ...


def parse_smi_csv(text: str) -> Reading | None:
    """`nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits` output."""
    try:
        return [(float(u), float(m)) for u, m in (line.split(",") for line in text.strip().splitlines())] or None
    except ValueError:  # "[N/A]", "[Not Supported]", a changed column count
        return None


def parse_tegrastats(line: str) -> tuple[float | None, float | None]:
    """(GR3D load %, RAM used MiB) from one tegrastats line; None where the line lacks the field."""
    gr3d, ram = _GR3D.search(line), _RAM.search(line)
    return (float(gr3d.group(1)) if gr3d else None,
            float(ram.group(1)) * _UNIT_MIB[ram.group(2)] if ram else None)


class NvmlReader:
    source = "nvml"

    def __init__(self) -> None:
        import pynvml

        self._nvml: Any = pynvml
        pynvml.nvmlInit()
        try:
            self._gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            if self.read() is None:
                raise RuntimeError("NVML gives no utilisation and memory here")
        except Exception:
            self.close()
            raise

    def read(self) -> Reading | None:
        try:
            return [(float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                     self._nvml.nvmlDeviceGetMemoryInfo(h).used / MIB) for h in self._gpus] or None
        except self._nvml.NVMLError:
            return None

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class SmiReader:
    source = "nvidia-smi"

    def __init__(self, exe: str) -> None:
        self._cmd = [exe, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"]
        if self.read() is None:
            raise RuntimeError("nvidia-smi gives no utilisation and memory here")

    def read(self) -> Reading | None:
        try:
            return parse_smi_csv(subprocess.run(self._cmd, capture_output=True, text=True, timeout=5,
                                                check=True).stdout)
        except (OSError, subprocess.SubprocessError):
            return None

    def close(self) -> None:
        pass


class TegrastatsReader:
    """A running `tegrastats --interval MS`; each read waits for its next line, so it sets the pace."""

    source = "tegrastats"

    def __init__(self, exe: str, interval_ms: int) -> None:
        self._proc = subprocess.Popen([exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)

    def read(self) -> Reading | None:
        assert self._proc.stdout is not None
        for _ in range(3):  # past a warning line or two; a format this does not know ends the sampling
            line = self._proc.stdout.readline()
            if not line:  # tegrastats ended
                return None
            util, ram = parse_tegrastats(line)
            if util is not None or ram is not None:
                return [(util, ram)]
        return None

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()


def _sources(interval_sec: float) -> list[Callable[[], Reader]]:
    """The readers this box may have, best first. On a Jetson tegrastats comes first: the board's memory
    is shared, and only tegrastats reports it as such."""
    sources: list[Callable[[], Reader]] = []
    if tegrastats := shutil.which("tegrastats"):
        sources.append(lambda: TegrastatsReader(tegrastats, max(1, round(interval_sec * 1000))))
    sources.append(NvmlReader)
    if smi := shutil.which("nvidia-smi"):
        sources.append(lambda: SmiReader(smi))
    return sources


def select_reader(interval_sec: float = 1.0, sources: Iterable[Callable[[], Reader]] | None = None) -> Reader | None:
    """The first source that opens, or None (no GPU, or no tool to read it)."""
    for open_source in _sources(interval_sec) if sources is None else sources:
        try:
            return open_source()
        except Exception:  # a missing module, library, tool or device: try the next source
            continue
    return None


def summarise(readings: list[Reading], source: str | None) -> dict[str, Any]:
    """Utilisation and memory summed over GPUs (the appliance may spread its pool over several)."""
    utils = [sum(u for u, _ in r if u is not None) for r in readings if any(u is not None for u, _ in r)]
    mems = [sum(m for _, m in r if m is not None) for r in readings if any(m is not None for _, m in r)]
    return {"gpu_util_mean_pct": sum(utils) / len(utils) if utils else None,
            "gpu_util_peak_pct": max(utils) if utils else None,
            "gpu_mem_peak_mib": max(mems) if mems else None,
            "gpu_source": source}


class GpuSampler:
    """start() ... stop() -> {"gpu_util_mean_pct", "gpu_util_peak_pct", "gpu_mem_peak_mib", "gpu_source"};
    the figures are None where no source answered, gpu_source None where the box has none."""

    def __init__(self, interval_sec: float = 1.0,
                 open_reader: Callable[[float], Reader | None] = select_reader):
        self._interval_sec = interval_sec
        self._open_reader = open_reader
        self._reader: Reader | None = None
        self._readings: list[Reading] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hwtests-gpu", daemon=True)

    def start(self) -> GpuSampler:
        self._reader = self._open_reader(self._interval_sec)
        if self._reader is not None:
            self._thread.start()
        return self

    def _loop(self) -> None:
        assert self._reader is not None
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                reading = self._reader.read()
                if reading is None:
                    return
                self._readings.append(reading)
                self._stop.wait(self._interval_sec - (time.monotonic() - started))
        finally:
            self._reader.close()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        return summarise(self._readings, self._reader.source if self._reader else None)
