"""Hardware probes and the boot-time model choice.

Machines this box is not (CUDA servers, Jetsons, Macs, cgroup-limited containers) are presented
through `Probes`, the one seam; model availability through the `model_available` callable. The
real probes, `stt-appliance detect` and `serve` run for real on this machine, and umockdev makes
pyudev enumerate a USB microphone and a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.hardware import (
    AppleInfo,
    CpuInfo,
    CudaInfo,
    DeviceInfo,
    GpuDevice,
    JetsonInfo,
    Probes,
    SoftwareInfo,
    apply_decision,
    detect,
    probe_machine,
)
from appliance.hardware.models import GiB, MiB, candidates, model_memory_bytes
from appliance.hardware.probes import (
    cgroup_cpu_quota,
    gpu_build_declared,
    probe_cpu,
    probe_jetson,
    ram_bytes,
)
from appliance.hardware.report import format_decision
from clients.local_server import LocalAppliance

REPO = Path(__file__).resolve().parents[1]
SERVER_YAML, MODEL_YAML = REPO / "config" / "server.yaml", REPO / "config" / "model.yaml"
CLI = REPO / ".venv" / "bin" / "stt-appliance"
X86_CT2_CPU = ("float32", "int8", "int8_float32")
CUDA_TYPES = ("bfloat16", "float16", "float32", "int8", "int8_bfloat16", "int8_float16", "int8_float32")
ALL_BACKENDS = SoftwareInfo(ctranslate2=True, torch=True, whisper=True)
CT2_ONLY = SoftwareInfo(ctranslate2=True)


def config(**overrides):
    return load_config(SERVER_YAML, MODEL_YAML, env={}, overrides=overrides)


def installed(*names: str):
    return set(names).__contains__


LINUX = AppleInfo("linux", "x86_64")


def probes(cpu: CpuInfo, cuda: CudaInfo | None = None, jetson: JetsonInfo | None = None, apple: AppleInfo = LINUX,
           software: SoftwareInfo = CT2_ONLY) -> Probes:
    cuda, jetson = cuda or CudaInfo(), jetson or JetsonInfo()
    return Probes(cpu=lambda: cpu, cuda=lambda: cuda, jetson=lambda: jetson, apple=lambda: apple,
                  devices=DeviceInfo, software=lambda: software)


def choice(decision) -> tuple:
    return (decision.profile, decision.model, decision.backend, decision.device, decision.compute_type)


CUDA_SERVER = probes(
    CpuInfo("x86_64", 64, 64, None, 512 * GiB, None, X86_CT2_CPU),
    CudaInfo(ct2_device_count=2, torch_device_count=0, ct2_compute_types=CUDA_TYPES,
             devices=(GpuDevice(0, "NVIDIA A100-SXM4-80GB", 80 * GiB), GpuDevice(1, "NVIDIA A100-SXM4-80GB", 80 * GiB))))
ORIN = {"cpu": CpuInfo("aarch64", 12, 12, None, 32 * GiB, None, X86_CT2_CPU),
            "jetson": JetsonInfo(True, "NVIDIA Jetson AGX Orin Developer Kit",
                              "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64")}
ORIN_TORCH_CUDA = CudaInfo(ct2_device_count=0, torch_device_count=1, devices=(GpuDevice(0, "Orin", 30 * GiB),))
MAC = {"cpu": CpuInfo("arm64", 10, 10, None, 16 * GiB, None, X86_CT2_CPU)}
SMALL_CPU = CpuInfo("x86_64", 2, 2, None, 4 * GiB, None, X86_CT2_CPU)
SMALL_BOX = probes(SMALL_CPU)
CONTAINER = probes(CpuInfo("x86_64", 16, 16, 1.5, 16 * GiB, 512 * MiB, X86_CT2_CPU))


# --- choices per machine ------------------------------------------------------------------------

def test_cuda_server_gets_the_largest_installed_model_in_float16():
    decision = detect(config(), CUDA_SERVER, installed("tiny.en", "base", "large-v3"))
    assert choice(decision) == ("nvidia_cuda", "large-v3", "faster_whisper", "cuda", "float16")
    assert decision.warnings == [] and decision.mode == "auto"
    assert decision.memory_budget_bytes > decision.model_memory_bytes == 5 * GiB // 2  # float16 halves 5 GiB
    assert "2 CUDA device(s): NVIDIA A100-SXM4-80GB 80 GiB" in decision.reasons[0]
    # large-v3 not installed: the largest that is, with the reason said
    decision = detect(config(), CUDA_SERVER, installed("tiny.en", "base"))
    assert choice(decision) == ("nvidia_cuda", "base", "faster_whisper", "cuda", "float16")
    assert any("large-v3 (not installed)" in r for r in decision.reasons)


def test_gpu_memory_limits_the_model_times_the_pool():
    small_gpu = dataclasses.replace(CUDA_SERVER, cuda=lambda: CudaInfo(
        ct2_device_count=1, ct2_compute_types=CUDA_TYPES, devices=(GpuDevice(0, "GTX 1650", 4 * GiB),)))
    every = installed("tiny.en", "base", "small", "medium", "large-v3")
    assert detect(config(), small_gpu, every).model == "large-v3"  # 2.5 GiB float16 fits a 3.1 GiB budget
    decision = detect(config(**{"model.pool_size": 2}), small_gpu, every)
    assert (decision.model, decision.pool_size) == ("medium", 2)  # 2 x 2.5 GiB does not; 2 x 1.25 GiB does
    assert "model.pool_size=2 set by the operator: kept" in decision.reasons
    assert any("large-v3 (needs ~5120 MiB)" in r for r in decision.reasons)


def test_jetson_without_cuda_ctranslate2_uses_torch_cuda():
    jetson = probes(**ORIN, cuda=ORIN_TORCH_CUDA, software=ALL_BACKENDS)
    decision = detect(config(), jetson, installed("tiny.en", "base", "small"))
    assert choice(decision) == ("jetson", "small", "torch_whisper", "cuda", "float16")
    assert decision.warnings == []
    assert any("aarch64 wheels are CPU-only" in r and "torch_whisper can" in r for r in decision.reasons)
    # unified memory: the budget is host memory, not the GPU's
    assert decision.memory_budget_bytes == int(32 * GiB * 0.9) - 256 * MiB


def test_jetson_without_torch_falls_back_to_cpu_with_a_warning():
    decision = detect(config(), probes(**ORIN, software=CT2_ONLY), installed("tiny.en", "base", "small"))
    # 12 cores and 32 GiB make it a large CPU box: the base pack, float32
    assert choice(decision) == ("cpu_large", "base", "faster_whisper", "cpu", "float32")
    [warning] = decision.warnings
    assert "profile 'jetson' wants faster_whisper on cuda" in warning
    assert "aarch64 wheels are CPU-only" in warning and "falling back to CPU" in warning


def test_apple_silicon_uses_torch_on_mps():
    mac = probes(**MAC, apple=AppleInfo("darwin", "arm64", mps_available=True), software=ALL_BACKENDS)
    decision = detect(config(), mac, installed("tiny.en", "base"))
    assert choice(decision) == ("apple_silicon_mps", "base", "torch_whisper", "mps", "float16")
    assert decision.warnings == []
    assert apply_decision(config(), decision).model.device == "mps"


def test_mac_without_torch_falls_back_to_cpu_with_a_warning():
    mac = probes(**MAC, apple=AppleInfo("darwin", "arm64", mps_available=False), software=CT2_ONLY)
    decision = detect(config(), mac, installed("tiny.en", "base"))
    assert choice(decision) == ("cpu_large", "base", "faster_whisper", "cpu", "float32")
    [warning] = decision.warnings
    assert "torch_whisper needs torch and openai-whisper (not installed)" in warning


def test_small_cpu_box_keeps_the_bundled_model_even_when_base_is_installed():
    decision = detect(config(), SMALL_BOX, installed("tiny.en", "base"))
    assert choice(decision) == ("cpu", "tiny.en", "faster_whisper", "cpu", "int8")
    assert (decision.warnings, decision.cpu_threads, decision.pool_size) == ([], 0, 2)
    # ...so the effective config is the configured one with the profile's two replicas
    assert apply_decision(config(), decision) == config(**{"model.pool_size": 2, "model.compute_type": "int8"})


def test_cgroup_limits_cap_cpus_and_memory():
    # float32 set by the operator (auto keeps it) so the second replica does not fit
    decision = detect(config(**{"model.compute_type": "float32"}), CONTAINER, installed("tiny.en", "base"))
    # 16 host cores but a 1.5 CPU quota: the small CPU profile, one decode thread
    assert choice(decision) == ("cpu", "tiny.en", "faster_whisper", "cpu", "float32")
    assert decision.cpu_threads == 1 and decision.warnings == []
    assert decision.memory_budget_bytes == int(512 * MiB * 0.9) - 256 * MiB
    # the profile's second replica does not fit next to the first: one, said so, no warning
    assert decision.pool_size == 1
    assert any(r.startswith("pool_size 2 -> 1: 2 x ~150 MiB passes") for r in decision.reasons)
    # pinned to cpu_large, base (300 MiB) does not fit the 512 MiB limit: tiny.en
    decision = detect(config(**{"model.profile": "cpu_large"}), CONTAINER, installed("tiny.en", "base"))
    assert (decision.mode, decision.profile, decision.model) == ("pinned", "cpu_large", "tiny.en")
    assert any("base (needs ~300 MiB)" in r for r in decision.reasons)


def test_nothing_fitting_memory_takes_the_smallest_with_a_warning():
    tiny_container = probes(CpuInfo("x86_64", 4, 4, None, 16 * GiB, 300 * MiB, X86_CT2_CPU))
    decision = detect(config(), tiny_container, installed("tiny.en"))
    assert decision.model == "tiny.en"
    assert decision.warnings == [(f"no installed model fits the {decision.memory_budget_bytes / MiB:.0f} MiB "
                                 "memory budget; using the smallest, tiny.en")]


# --- pinning and operator settings --------------------------------------------------------------

def test_pinned_profile_is_used_as_written():
    decision = detect(config(**{"model.profile": "cpu_large"}), SMALL_BOX, installed("tiny.en", "base"))
    assert (decision.mode, *choice(decision)) == ("pinned", "cpu_large", "base", "faster_whisper", "cpu", "float32")
    assert decision.reasons[0] == "model.profile pins profile 'cpu_large'"


def test_pinned_accelerator_profile_without_the_accelerator_warns_and_uses_cpu():
    decision = detect(config(**{"model.profile": "nvidia_cuda"}), SMALL_BOX, installed("tiny.en", "base"))
    assert choice(decision) == ("cpu", "tiny.en", "faster_whisper", "cpu", "int8")
    assert decision.warnings == [("profile 'nvidia_cuda' wants faster_whisper on cuda, but CTranslate2 sees no "
                                 "CUDA device; falling back to CPU (profile 'cpu')")]


def test_auto_keeps_what_the_operator_set():
    available = installed("tiny.en", "base", "large-v3")
    decision = detect(config(**{"model.name": "base", "model.compute_type": "int8_float16"}), CUDA_SERVER, available)
    assert choice(decision) == ("nvidia_cuda", "base", "faster_whisper", "cuda", "int8_float16")
    decision = detect(config(**{"model.model_dir": "/srv/models/whisper-medium-ct2"}), CUDA_SERVER, available)
    assert (decision.model, decision.model_dir) == ("tiny.en", "/srv/models/whisper-medium-ct2")
    assert decision.model_memory_bytes == 75 * MiB  # tiny.en named, float16; the directory is what loads
    assert apply_decision(config(**{"model.model_dir": "/m"}), decision).model.model_dir == "/m"


def test_operator_device_the_machine_lacks_falls_back_loudly():
    decision = detect(config(**{"model.device": "cuda", "model.compute_type": "float16"}), SMALL_BOX,
                      installed("tiny.en"))
    assert choice(decision) == ("cpu", "tiny.en", "faster_whisper", "cpu", "int8")
    assert "falling back to CPU" in decision.warnings[0]


def test_unsupported_compute_type_is_replaced_with_a_warning():
    decision = detect(config(**{"model.compute_type": "bfloat16"}), SMALL_BOX, installed("tiny.en"))
    assert decision.compute_type == "float32"
    assert decision.warnings == [("compute_type 'bfloat16' is not supported by faster_whisper on cpu "
                                 "(supported: float32, int8, int8_float32); using 'float32'")]


def test_operator_precision_is_kept_and_a_profile_precision_the_backend_lacks_is_no_warning():
    small_box = probes(SMALL_CPU, software=ALL_BACKENDS)
    decision = detect(config(**{"model.compute_type": "float32"}), small_box, installed("tiny.en"))
    assert choice(decision) == ("cpu", "tiny.en", "faster_whisper", "cpu", "float32")
    assert "model.compute_type='float32' set by the operator: kept" in decision.reasons
    # the cpu profile's int8 is a CTranslate2 precision: under torch it is float32, said as a reason
    decision = detect(config(**{"model.backend": "torch_whisper"}), small_box, installed("tiny.en"))
    assert (decision.backend, decision.compute_type, decision.warnings) == ("torch_whisper", "float32", [])
    assert any(r.startswith("compute_type 'int8' is not supported by torch_whisper on cpu") for r in decision.reasons)


def test_non_english_language_skips_english_only_models():
    decision = detect(config(**{"model.language": "de"}), SMALL_BOX, installed("tiny.en", "tiny"))
    assert decision.model == "tiny" and decision.warnings == []
    decision = detect(config(**{"model.language": "de"}), SMALL_BOX, installed("tiny.en"))
    assert decision.model == "tiny.en"
    assert decision.warnings == [("model.language(s) ['de'] need a multilingual model, but only English-only "
                                 "models are installed; using tiny.en")]


def test_a_failing_probe_counts_as_absent_and_is_reported():
    def broken_driver() -> CudaInfo:
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

    decision = detect(config(), dataclasses.replace(SMALL_BOX, cuda=broken_driver), installed("tiny.en"))
    assert choice(decision) == ("cpu", "tiny.en", "faster_whisper", "cpu", "int8")
    assert decision.warnings == [("hardware probe failed (cuda: RuntimeError: CUDA driver version is insufficient "
                                 "for CUDA runtime version); treated as absent")]


def test_decision_is_json_and_readable():
    decision = detect(config(), CONTAINER, installed("tiny.en"))
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["machine"]["cpu"]["effective_cpus"] == 1.5
    assert data["machine"]["cpu"]["memory_limit_bytes"] == 512 * MiB
    text = format_decision(decision)
    assert "cgroup quota 1.5" in text and "profile       cpu" in text and "Why:" in text


def test_model_ladder():
    assert candidates("tiny.en") == ["tiny.en", "tiny"]
    assert candidates("base") == ["base", "base.en", "tiny", "tiny.en"]
    assert candidates("/opt/my-model") == ["/opt/my-model"]
    assert model_memory_bytes("small", "int8", 2) == int(GiB * 0.35) * 2
    assert model_memory_bytes("/opt/my-model", "float32") is None


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
    assert (data["mode"], data["profile"], data["device"], data["backend"]) == ("auto", expected, "cpu", "faster_whisper")
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
