"""Hardware probes on this machine, for real: the probes, their files under a fake root,
`stt-appliance detect` and `serve`, and umockdev making pyudev enumerate a USB microphone and a GPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from appliance.hardware import JetsonInfo, probe_machine
from appliance.hardware.models import GiB, MiB
from appliance.hardware.probes import (
    cgroup_cpu_quota,
    gpu_build_declared,
    probe_cpu,
    probe_jetson,
    ram_bytes,
)
from clients.local_server import LocalAppliance
from tests.helpers import REPO_ROOT as REPO

CLI = REPO / ".venv" / "bin" / "stt-appliance"


# --- the real probes on this machine ------------------------------------------------------------

def test_real_probes_return_sane_values():
    machine = probe_machine()
    assert machine.probe_errors == ()
    assert machine.cpu.logical_cores >= machine.cpu.usable_cores >= 1
    assert machine.cpu.ram_bytes > 256 * MiB and machine.cpu.memory_limit_bytes > 0
    assert "float32" in machine.cpu.ct2_compute_types
    assert machine.software.ctranslate2
    assert machine.cuda.ct2_device_count >= 0 and len(machine.cuda.devices) <= max(
        machine.cuda.ct2_device_count, machine.cuda.torch_device_count)


def _expected_profile_here() -> str:
    machine = probe_machine()
    if machine.cuda.ct2_device_count or machine.cuda.torch_device_count or machine.jetson.is_jetson:
        pytest.skip("this machine has an accelerator; the CPU choice is not what auto makes here")
    big = machine.cpu.effective_cpus >= 8 and machine.cpu.memory_limit_bytes >= 8 * GiB
    return "cpu_large" if big else "cpu"


def test_probe_files_cgroup_v2(tmp_path):
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("150000 100000\n")
    (tmp_path / "sys/fs/cgroup/memory.max").write_text("536870912\n")
    (tmp_path / "proc/meminfo").write_text("MemTotal:       16384000 kB\nMemFree:  1 kB\n")
    cpu = probe_cpu(tmp_path)
    assert (cpu.cgroup_cpu_quota, cpu.cgroup_memory_limit_bytes, cpu.ram_bytes) == (1.5, 512 * MiB, 16384000 * 1024)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("max 100000\n")
    (tmp_path / "sys/fs/cgroup/memory.max").write_text("max\n")
    assert (cgroup_cpu_quota(tmp_path), probe_cpu(tmp_path).cgroup_memory_limit_bytes) == (None, None)


def test_probe_files_cgroup_v1(tmp_path):
    cpu_dir, mem_dir = tmp_path / "sys/fs/cgroup/cpu", tmp_path / "sys/fs/cgroup/memory"
    cpu_dir.mkdir(parents=True)
    mem_dir.mkdir(parents=True)
    (cpu_dir / "cpu.cfs_quota_us").write_text("50000\n")
    (cpu_dir / "cpu.cfs_period_us").write_text("100000\n")
    (mem_dir / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1 "unlimited"
    assert cgroup_cpu_quota(tmp_path) == 0.5
    assert probe_cpu(tmp_path).cgroup_memory_limit_bytes is None
    (cpu_dir / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert ram_bytes(tmp_path) == 0  # no meminfo under a fake root: unknown, not this machine's


def test_torch_cuda_is_imported_only_for_gpu_builds():
    # torch/version.py of a CPU wheel (this machine's) and of a CUDA wheel
    assert not gpu_build_declared("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\nhip: Optional[str] = None\n")
    assert gpu_build_declared("__version__ = '2.5.1'\ncuda: Optional[str] = '12.4'\nhip: Optional[str] = None\n")
    assert gpu_build_declared("cuda = None\nhip = '6.2.41133'\n")


def test_probe_files_jetson(tmp_path):
    assert probe_jetson(tmp_path) == JetsonInfo()
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert probe_jetson(tmp_path) == JetsonInfo(True, "NVIDIA Jetson Orin Nano Developer Kit", None)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1\nline two\n")
    assert probe_jetson(tmp_path).l4t_release == "# R35 (release), REVISION: 4.1"


# --- the CLI and serve, for real ----------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_detect_json_names_the_cpu_profile_here():
    expected = _expected_profile_here()
    done = _cli("detect", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["mode"], data["profile"], data["device"], data["backend"]) == \
        ("auto", expected, "cpu", "faster_whisper")
    if expected == "cpu":
        assert (data["model"], data["compute_type"], data["warnings"]) == ("tiny.en", "int8", [])
    assert data["machine"]["cpu"]["logical_cores"] >= 1 and data["machine"]["cpu"]["ram_bytes"] > 0


def test_detect_prints_a_table_and_honours_a_pinned_profile():
    _expected_profile_here()
    done = _cli("detect", "--profile", "jetson")
    assert done.returncode == 0, done.stderr
    assert "mode          pinned" in done.stdout and "model.profile pins profile 'jetson'" in done.stdout
    assert "Warnings:" in done.stdout and "falling back to CPU" in done.stdout


def test_detect_rejects_an_unknown_profile():
    done = _cli("detect", "--profile", "tpu", "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert ("configuration error: model.profile: expected 'auto' or one of ['apple_silicon_mps', 'cpu', "
            "'cpu_large', 'default', 'jetson', 'nvidia_cuda'], got 'tpu'") in done.stderr


def test_serve_applies_the_decision_and_logs_the_fallback():
    _expected_profile_here()
    with LocalAppliance("--profile", "nvidia_cuda") as server:
        ready = json.loads(server.ready_file.read_text())
        log = server.log()
    assert ready["model_id"] == "cpu-tiny.en"  # the CUDA profile fell back to CPU instead of failing to load
    assert "hardware pinned: profile cpu -> model tiny.en, faster_whisper on cpu, int8" in log
    assert "WARNING appliance.hardware: HARDWARE FALLBACK: profile 'nvidia_cuda' wants faster_whisper on cuda" in log


# --- udev devices through umockdev --------------------------------------------------------------

UMOCKDEV_DEVICES = """\
P: /devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/sound/card1
E: SUBSYSTEM=sound
A: id=Microphone
A: number=1

P: /devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0
E: SUBSYSTEM=usb
E: DEVTYPE=usb_interface
A: bInterfaceClass=01

P: /devices/pci0000:00/0000:00:14.0/usb1/1-2
E: SUBSYSTEM=usb
E: DEVTYPE=usb_device
A: product=Yeti Stereo Microphone
A: idVendor=b58e
A: idProduct=9e84

P: /devices/pci0000:00/0000:01:00.0/drm/card0
N: dri/card0
E: SUBSYSTEM=drm
E: DEVNAME=/dev/dri/card0
E: DEVTYPE=drm_minor

P: /devices/pci0000:00/0000:01:00.0/drm/card0-HDMI-A-1
E: SUBSYSTEM=drm
E: DEVTYPE=drm_connector

P: /devices/pci0000:00/0000:01:00.0
E: SUBSYSTEM=pci
E: PCI_ID=10DE:20B0
E: ID_MODEL_FROM_DATABASE=GA100 [A100 SXM4 40GB]
A: vendor=0x10de
"""

PRINT_DEVICES = ("import dataclasses, json; from appliance.hardware.probes import probe_devices; "
                 "print(json.dumps(dataclasses.asdict(probe_devices())))")


def test_udev_probe_enumerates_a_usb_microphone_and_a_gpu(tmp_path):
    if shutil.which("umockdev-run") is None:
        pytest.skip("umockdev is not installed (apt-get install umockdev)")
    pytest.importorskip("pyudev", reason="pyudev is not installed")
    devices = tmp_path / "mic-and-gpu.umockdev"
    devices.write_text(UMOCKDEV_DEVICES)
    done = subprocess.run(["umockdev-run", "--device", str(devices), "--", sys.executable, "-c", PRINT_DEVICES],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["udev_available"] is True
    assert found["sound"] == [{"subsystem": "sound", "sys_name": "card1", "device_node": None,
                               "description": "Yeti Stereo Microphone"}]
    # the connector card0-HDMI-A-1 is not a GPU
    assert found["gpus"] == [{"subsystem": "drm", "sys_name": "card0", "device_node": "/dev/dri/card0",
                              "description": "GA100 [A100 SXM4 40GB]"}]


def test_openmp_is_passive_before_any_appliance_module_loads_ctranslate2():
    # OpenMP reads OMP_WAIT_POLICY once, when ctranslate2 loads. The hardware probe loads it before
    # the backend does; spinning idle OpenMP threads once cost 60% on median final latency.
    import os
    import subprocess
    import sys

    code = ("import os; os.environ.pop('OMP_WAIT_POLICY', None); os.environ.pop('KMP_BLOCKTIME', None)\n"
            "from appliance.hardware.probes import probe_cuda\n"
            "import ctranslate2, sys\n"
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'])")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["PASSIVE", "0"]
