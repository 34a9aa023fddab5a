"""The boot-time model choice on machines this box is not.

CUDA servers, Jetsons, Macs and cgroup-limited containers are presented through `Probes`, the one
seam; model availability through the `model_available` callable.
"""

from __future__ import annotations

import dataclasses
import json

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
)
from appliance.hardware.models import GiB, MiB, candidates, model_memory_bytes
from appliance.hardware.report import format_decision
from tests.helpers import MODEL_YAML, SERVER_YAML

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
             devices=(GpuDevice(0, "NVIDIA A100-SXM4-80GB", 80 * GiB),
                      GpuDevice(1, "NVIDIA A100-SXM4-80GB", 80 * GiB))))
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
