"""CPU and memory of one process, read from /proc and sampled in a background thread.

Owns: `read_sample(pid)` (one reading of cumulative CPU seconds and RSS) and `ProcSampler`,
which samples a pid every `interval_sec` while a run goes on and summarises it as `ProcStats`:
mean CPU% over the whole window (100% = one core busy), cores used, the busiest interval's
CPU%, peak and mean RSS, the kernel's lifetime RSS high-water mark (VmHWM), and how busy the
whole host was (all processes: on a shared box, other load shows there). Linux only; elsewhere,
or once the process is gone, sampling stops and what was gathered is kept.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_CLOCK_TICKS_PER_SEC = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    at_sec: float  # time.monotonic()
    cpu_sec: float  # user + system CPU seconds since the process started
    rss_bytes: int
    hwm_bytes: int  # peak RSS over the process's lifetime (VmHWM)
    host_busy_sec: float = 0.0  # /proc/stat: CPU seconds all CPUs spent not idle, since boot
    host_total_sec: float = 0.0  # /proc/stat: all CPU seconds since boot


@dataclass(frozen=True)
class ProcStats:
    pid: int
    samples: int
    wall_sec: float
    cpu_mean_pct: float | None  # CPU seconds used / wall seconds, in percent of one core
    cpu_peak_pct: float | None  # the busiest sampling interval
    cores_used: float | None  # cpu_mean_pct / 100
    cpus_available: int | None  # CPUs the process may run on
    rss_peak_mb: float | None
    rss_mean_mb: float | None
    rss_hwm_mb: float | None  # lifetime high-water mark, start-up included
    host_cpu_busy_pct: float | None = None  # all processes, percent of all the host's CPUs

    def as_dict(self) -> dict:
        return asdict(self)


def read_sample(pid: int) -> Sample | None:
    """One reading of `pid`; None when the process does not exist (or /proc is missing)."""
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        status = (proc / "status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime_ticks, stime_ticks = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    memory = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0]) * 1024  # reported in kB
    busy_sec, total_sec = _host_cpu_sec()
    return Sample(at_sec=time.monotonic(), cpu_sec=(utime_ticks + stime_ticks) / _CLOCK_TICKS_PER_SEC,
                  rss_bytes=memory.get("VmRSS", 0), hwm_bytes=memory.get("VmHWM", 0),
                  host_busy_sec=busy_sec, host_total_sec=total_sec)


def _host_cpu_sec() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole host from /proc/stat's first line; zeros without it."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _CLOCK_TICKS_PER_SEC, sum(ticks) / _CLOCK_TICKS_PER_SEC


def _cpus_available(pid: int) -> int | None:
    try:
        return len(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return os.cpu_count()


def summarise(pid: int, samples: list[Sample]) -> ProcStats:
    """Figures over `samples` (in time order); None where two samples are needed and missing."""
    cpu_mean = cpu_peak = None
    wall_sec = samples[-1].at_sec - samples[0].at_sec if samples else 0.0
    if len(samples) >= 2 and wall_sec > 0:
        cpu_mean = 100.0 * (samples[-1].cpu_sec - samples[0].cpu_sec) / wall_sec
        cpu_peak = max(100.0 * (b.cpu_sec - a.cpu_sec) / (b.at_sec - a.at_sec)
                       for a, b in itertools.pairwise(samples) if b.at_sec > a.at_sec)
    rss = [s.rss_bytes for s in samples]
    host_total = samples[-1].host_total_sec - samples[0].host_total_sec if samples else 0.0
    host_busy = (100.0 * (samples[-1].host_busy_sec - samples[0].host_busy_sec) / host_total
                 if host_total > 0 else None)
    return ProcStats(
        pid=pid, samples=len(samples), wall_sec=wall_sec,
        cpu_mean_pct=cpu_mean, cpu_peak_pct=cpu_peak,
        cores_used=None if cpu_mean is None else cpu_mean / 100.0,
        cpus_available=_cpus_available(pid),
        rss_peak_mb=max(rss) / MB if rss else None,
        rss_mean_mb=sum(rss) / len(rss) / MB if rss else None,
        rss_hwm_mb=max(s.hwm_bytes for s in samples) / MB if samples else None,
        host_cpu_busy_pct=host_busy,
    )


class ProcSampler:
    """Samples one pid in a daemon thread between start() and stop().

        sampler = ProcSampler(pid).start()
        ...                      # the load
        stats = sampler.stop()   # ProcStats
    """

    def __init__(self, pid: int, interval_sec: float = 0.5):
        if interval_sec <= 0:
            raise ValueError(f"interval_sec must be > 0, got {interval_sec}")
        self.pid = pid
        self.interval_sec = interval_sec
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"procstats-{pid}", daemon=True)

    def start(self) -> ProcSampler:
        self._take()
        self._thread.start()
        return self

    def _take(self) -> bool:
        sample = read_sample(self.pid)
        if sample is None:
            return False
        with self._lock:
            self._samples.append(sample)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_sec):
            if not self._take():
                return  # the process is gone

    def current(self) -> ProcStats:
        """Figures so far (for progress lines)."""
        with self._lock:
            return summarise(self.pid, list(self._samples))

    def stop(self) -> ProcStats:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._take()  # a last reading closes the window
        return self.current()
