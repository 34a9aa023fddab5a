"""GPU use while a step runs, through nvidia-smi (present wherever the NVIDIA driver is, Jetson aside).

Polls in a thread instead of importing NVML, so this needs no CUDA Python package; on boxes without
nvidia-smi (CPU, Apple Silicon, Jetson, where tegrastats is the tool) every figure is None.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

QUERY = "utilization.gpu,memory.used"


def read_gpus() -> list[tuple[float, float]] | None:
    """[(utilisation %, memory used MiB)] per GPU, or None without nvidia-smi or when it fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        return [(float(u), float(m)) for u, m in (line.split(",") for line in out.strip().splitlines())]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


class GpuSampler:
    """start() ... stop() -> {"gpu_util_mean_pct", "gpu_util_peak_pct", "gpu_mem_peak_mib"} (None: no GPU)."""

    def __init__(self, interval_sec: float = 1.0):
        self._interval_sec = interval_sec
        self._samples: list[list[tuple[float, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hwtests-gpu", daemon=True)

    def start(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            reading = read_gpus()
            if reading is None:
                return
            self._samples.append(reading)
            self._stop.wait(self._interval_sec)

    def stop(self) -> dict[str, float | None]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if not self._samples:
            return {"gpu_util_mean_pct": None, "gpu_util_peak_pct": None, "gpu_mem_peak_mib": None}
        # Summed over GPUs: the appliance may spread its pool over several.
        utils = [sum(u for u, _ in reading) for reading in self._samples]
        return {"gpu_util_mean_pct": sum(utils) / len(utils), "gpu_util_peak_pct": max(utils),
                "gpu_mem_peak_mib": max(sum(m for _, m in reading) for reading in self._samples)}
