"""hwtests/gpu.py without a GPU: the parsers on real-format output, the sampler over injected readers,
the tegrastats and nvidia-smi readers over stand-in executables, and the all-None answer of a box
without a GPU (this one)."""

from __future__ import annotations

import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from hwtests.gpu import (
    GpuSampler,
    Reader,
    Reading,
    SmiReader,
    TegrastatsReader,
    parse_smi_csv,
    parse_tegrastats,
    select_reader,
)

# One line per kind of board, in the format its JetPack prints (taken from users' logs and other tegrastats
# parsers' test data; the load lines keep that format with busier figures); split here only for length.
TEGRASTATS_LINES = {
    "AGX Orin, L4T r35 (two GPCs)": (
        "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) "
        "CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] "
        "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C "
        "GPU@-256C tj@44.343C VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW",
        0.0, 4321.0),
    "Orin Nano, L4T r36 (no clock)": (
        "12-23-2024 22:54:11 RAM 3162/7620MB (lfb 4x2MB) SWAP 0/3810MB (cached 0MB) "
        "CPU [1%@729,0%@729,0%@729,0%@729,off,off] GR3D_FREQ 1% cpu@62.843C soc2@61.968C gpu@61.687C "
        "tj@62.843C VDD_IN 3913mW/3922mW VDD_CPU_GPU_CV 598mW/598mW VDD_SOC 1238mW/1237mW",
        1.0, 3162.0),
    "Orin NX under load": (
        "RAM 6712/15368MB (lfb 12x4MB) SWAP 0/7684MB (cached 0MB) CPU [37%@1984,22%@1984,30%@1984,"
        "25%@1984,off,off,off,off] EMC_FREQ 41%@3199 GR3D_FREQ 99%@[918] CPU@51.5C GPU@52C tj@53C "
        "VDD_IN 14302mW/9011mW VDD_CPU_GPU_CV 6012mW/3100mW VDD_SOC 3020mW/2600mW",
        99.0, 6712.0),
    "Xavier NX, JetPack 5.1.2": (
        "07-09-2024 13:31:31 RAM 3168/6851MB (lfb 2x4MB) SWAP 161/3426MB (cached 0MB) "
        "CPU [23%@1397,17%@1192,16%@1190,13%@1190,23%@1190,10%@1190] EMC_FREQ 2%@204 GR3D_FREQ 0%@[114] "
        "VIC_FREQ 115 APE 150 AUX@45C CPU@46.5C thermal@45.6C AO@45C GPU@45.5C PMIC@50C "
        "VDD_IN 2763mW/2846mW VDD_CPU_GPU_CV 650mW/670mW VDD_SOC 650mW/711mW",
        0.0, 3168.0),
    "AGX Xavier, JetPack 4": (
        "RAM 1570/31927MB (lfb 6834x4MB) SWAP 0/15963MB (cached 0MB) CPU [1%@1190,0%@1190,0%@1190,"
        "0%@1190,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 5%@1377 APE 150 MTS fg 0% bg 0% AO@32C "
        "GPU@32C Tdiode@35C PMIC@100C AUX@31C CPU@33.5C thermal@32.3C GPU 0/0 CPU 155/155 SOC 930/930",
        5.0, 1570.0),
    "Nano, JetPack 4.6": (
        "RAM 1276/3956MB (lfb 108x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [31%@1479,12%@1479,5%@1479,2%@1479] EMC_FREQ 14%@1600 GR3D_FREQ 22%@921 APE 25 "
        "PLL@21C CPU@23C PMIC@100C GPU@22.5C AO@28C thermal@22.5C POM_5V_IN 3478/3201 POM_5V_GPU 812/740",
        22.0, 1276.0),
    "Nano, no clocks": (
        "RAM 613/3964MB (lfb 634x4MB) SWAP 0/1982MB (cached 0MB) CPU [2%@102,1%@102,0%@102,0%@102] "
        "EMC_FREQ 0% GR3D_FREQ 0% PLL@39C CPU@40.5C PMIC@100C GPU@41C AO@46C thermal@41C POM_5V_IN 900/943",
        0.0, 613.0),
}


@pytest.mark.parametrize("line,util,ram", TEGRASTATS_LINES.values(), ids=TEGRASTATS_LINES.keys())
def test_tegrastats_line(line, util, ram):
    assert parse_tegrastats(line) == (util, ram)


def test_tegrastats_line_without_the_fields():
    assert parse_tegrastats("") == (None, None)
    assert parse_tegrastats("CPU [1%@729,off] EMC_FREQ 0%@2133 GR3D2_FREQ 3%") == (None, None)  # not GR3D_FREQ
    assert parse_tegrastats("RAM 2/4GB SWAP 0/1GB") == (None, 2048.0)


def test_nvidia_smi_csv():
    assert parse_smi_csv("35, 1024\n") == [(35.0, 1024.0)]
    assert parse_smi_csv("100, 80123\n0, 3\n") == [(100.0, 80123.0), (0.0, 3.0)]
    assert parse_smi_csv("[N/A], [N/A]\n") is None  # what a Jetson's or a MIG slice's nvidia-smi may say
    assert parse_smi_csv("35, [Not Supported]\n") is None
    assert parse_smi_csv("") is None
    assert parse_smi_csv("35, 1024, 7\n") is None


class FakeReader:
    """Gives its readings, then None as a source that stopped answering does."""

    def __init__(self, readings: list[Reading], source: str = "fake"):
        self.source = source
        self._readings = list(readings)
        self.closed = False
        self.dry = threading.Event()  # set once every reading was given

    def read(self) -> Reading | None:
        if self._readings:
            return self._readings.pop(0)
        self.dry.set()
        return None

    def close(self) -> None:
        self.closed = True


def sample(readings: list[Reading], source: str = "fake") -> tuple[dict, FakeReader]:
    reader = FakeReader(readings, source)
    sampler = GpuSampler(interval_sec=0.001, open_reader=lambda _interval: reader).start()
    assert reader.dry.wait(timeout=5)
    return sampler.stop(), reader


def test_sampler_mean_and_peaks_over_the_step():
    figures, reader = sample([[(10.0, 500.0)], [(30.0, 700.0)], [(50.0, 600.0)]], "nvml")
    assert figures == {"gpu_util_mean_pct": 30.0, "gpu_util_peak_pct": 50.0, "gpu_mem_peak_mib": 700.0,
                       "gpu_source": "nvml"}
    assert reader.closed


def test_sampler_sums_over_gpus():
    figures, _ = sample([[(10.0, 100.0), (20.0, 200.0)], [(40.0, 150.0), (60.0, 250.0)]])
    assert figures["gpu_util_mean_pct"] == 65.0
    assert figures["gpu_util_peak_pct"] == 100.0
    assert figures["gpu_mem_peak_mib"] == 400.0


def test_sampler_without_utilisation_keeps_memory():  # a driver that answers memory only
    figures, _ = sample([[(None, 120.0)], [(None, 180.0)]], "nvidia-smi")
    assert figures == {"gpu_util_mean_pct": None, "gpu_util_peak_pct": None, "gpu_mem_peak_mib": 180.0,
                       "gpu_source": "nvidia-smi"}


def test_sampler_names_its_source_even_when_it_gave_nothing():
    figures, reader = sample([])
    assert figures == {"gpu_util_mean_pct": None, "gpu_util_peak_pct": None, "gpu_mem_peak_mib": None,
                       "gpu_source": "fake"}
    assert reader.closed


def test_sampler_stops_a_reader_that_keeps_answering():
    reader = FakeReader([[(5.0, 50.0)]] * 10_000)
    sampler = GpuSampler(interval_sec=0.01, open_reader=lambda _interval: reader).start()
    time.sleep(0.05)
    figures = sampler.stop()
    assert reader.closed and not reader.dry.is_set()
    assert figures["gpu_mem_peak_mib"] == 50.0


def test_select_reader_takes_the_first_source_that_opens():
    def missing() -> Reader:
        raise ImportError("No module named 'pynvml'")

    second, third = FakeReader([], "second"), FakeReader([], "third")
    assert select_reader(sources=[missing, lambda: second, lambda: third]) is second
    assert select_reader(sources=[missing]) is None


def executable(path: Path, script: str) -> str:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="a /bin/sh stand-in")
def test_tegrastats_reader_reads_a_running_process(tmp_path):
    line = TEGRASTATS_LINES["Orin NX under load"][0]
    exe = executable(tmp_path / "tegrastats", "echo 'Warning: some figures need root'\n"
                                               f"while :; do echo '{line}'; sleep 0.02; done\n")
    reader = TegrastatsReader(exe, 20)
    sampler = GpuSampler(interval_sec=0.02, open_reader=lambda _interval: reader).start()
    time.sleep(0.3)
    figures = sampler.stop()
    assert figures == {"gpu_util_mean_pct": 99.0, "gpu_util_peak_pct": 99.0, "gpu_mem_peak_mib": 6712.0,
                       "gpu_source": "tegrastats"}
    assert reader._proc.poll() is not None  # tegrastats is ended with the step


@pytest.mark.skipif(sys.platform == "win32", reason="a /bin/sh stand-in")
def test_tegrastats_reader_gives_up_on_a_format_it_does_not_know(tmp_path):
    exe = executable(tmp_path / "tegrastats", "while :; do echo 'GPU 3% MEM 100'; sleep 0.01; done\n")
    reader = TegrastatsReader(exe, 10)
    figures = GpuSampler(interval_sec=0.01, open_reader=lambda _interval: reader).start().stop()
    assert figures["gpu_util_mean_pct"] is None and figures["gpu_mem_peak_mib"] is None
    assert reader._proc.wait(timeout=5) is not None


@pytest.mark.skipif(sys.platform == "win32", reason="a /bin/sh stand-in")
def test_nvidia_smi_reader(tmp_path):
    exe = executable(tmp_path / "nvidia-smi", 'case "$1" in --query-gpu=utilization.gpu,memory.used) '
                                              'echo "42, 2048"; echo "0, 10";; *) exit 9;; esac\n')
    assert SmiReader(exe).read() == [(42.0, 2048.0), (0.0, 10.0)]
    broken = executable(tmp_path / "nvidia-smi-na", 'echo "[N/A], [N/A]"\n')
    with pytest.raises(RuntimeError):
        SmiReader(broken)


def test_no_gpu_here_gives_none():
    # nvidia-ml-py is installed here (the hwtests extra) but finds no driver: that must read as no GPU.
    if shutil.which("nvidia-smi") or shutil.which("tegrastats") or Path("/dev/nvidiactl").exists():
        pytest.skip("this box has an NVIDIA GPU or its tools; the all-None answer is for boxes without one")
    assert select_reader() is None
    assert GpuSampler().start().stop() == {"gpu_util_mean_pct": None, "gpu_util_peak_pct": None,
                                           "gpu_mem_peak_mib": None, "gpu_source": None}
