"""Choose the boot-time model setup from the config and the probed machine: a pure function.

Pinning rules (docs/hardware.md):
- `model.profile: <name>` pins that load profile: its backend, device, compute_type, pool_size
  and model_size are used as written.
- `model.profile: auto` picks the profile from the hardware class (Jetson, CUDA, Apple Silicon,
  CPU), then keeps every model key the operator set to something other than its built-in default
  (CLI, STT_MODEL_* env or YAML): auto only fills what the operator left alone.
- A profile's model_size is a ceiling: the largest model that is installed, fits the memory
  budget and suits the language is chosen at or below it. `model.model_dir`, or (auto) an
  operator-set `model.name`, names one model and is never replaced.
- In both modes a device the backend cannot use here is never passed on to it: the other
  backend takes it if it can, else the CPU profile does, with a WARNING.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from appliance.config import AppConfig, ModelConfig, ModelLoadProfile
from appliance.hardware.machine import Machine
from appliance.hardware.models import (
    GiB,
    MiB,
    ModelAvailable,
    candidates,
    installed_model,
    model_memory_bytes,
)

CPU_LARGE_MIN_CPUS = 8  # cores (after the cgroup quota) for the cpu_large profile
CPU_LARGE_MIN_MEMORY_BYTES = 8 * GiB
# The appliance without its model: Python, gRPC, the Silero VAD pool and audio buffers. Measured
# 326 MiB RSS serving tiny.en float32 (~150 MiB of weights) on this 2-core box.
PROCESS_BASELINE_BYTES = 256 * MiB
HEADROOM_RATIO = 0.10  # of the memory limit, for page cache, sessions and allocator slack
GPU_RESERVED_BYTES = 512 * MiB  # CUDA context and activation buffers per device
PLAN_KEYS = ("backend", "device", "compute_type", "pool_size")
# compute types torch Whisper runs with (it has no int8 path; float16 needs an accelerator)
TORCH_COMPUTE_TYPES = {"cpu": ("float32",), "cuda": ("float16", "float32"), "mps": ("float16", "float32")}


@dataclass
class Decision:
    mode: str  # "auto" (detected) or "pinned" (model.profile names a profile)
    profile: str
    model: str
    model_dir: str | None
    backend: str
    device: str
    compute_type: str
    pool_size: int
    cpu_threads: int
    model_memory_bytes: int | None  # estimate for pool_size instances; None for an unknown model
    memory_budget_bytes: int | None  # what models may use on the chosen device; None = unknown
    machine: Machine
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["machine"]["cpu"]["effective_cpus"] = self.machine.cpu.effective_cpus
        data["machine"]["cpu"]["memory_limit_bytes"] = self.machine.cpu.memory_limit_bytes
        data["machine"]["apple"]["is_apple_silicon"] = self.machine.apple.is_apple_silicon
        return data


def apply_decision(config: AppConfig, decision: Decision) -> AppConfig:
    """The effective config: the model section as the decision says (model_dir is kept as set)."""
    model = dataclasses.replace(config.model, name=decision.model, backend=decision.backend, device=decision.device,
                                compute_type=decision.compute_type, pool_size=decision.pool_size,
                                cpu_threads=decision.cpu_threads)
    return dataclasses.replace(config, model=model)


# --- profile choice ------------------------------------------------------------------------------

def _cpu_profile(machine: Machine, profiles: dict[str, ModelLoadProfile], default: str) -> str:
    cpu = machine.cpu
    big = cpu.effective_cpus >= CPU_LARGE_MIN_CPUS and cpu.memory_limit_bytes >= CPU_LARGE_MIN_MEMORY_BYTES
    wanted = ("cpu_large", "cpu") if big else ("cpu",)
    return next((name for name in wanted if name in profiles), default)


def _hardware_profile(machine: Machine, config: AppConfig) -> tuple[str, list[str]]:
    profiles, default = config.model_load_profiles, config.model.default_model_load_profile
    cpu, cuda = machine.cpu, machine.cuda
    cpu_text = (f"{cpu.effective_cpus:g} CPU(s) usable of {cpu.logical_cores}, "
                f"{cpu.memory_limit_bytes / GiB:.1f} GiB memory limit ({cpu.machine or 'unknown arch'})")
    if machine.jetson.is_jetson:
        wanted, why = "jetson", f"NVIDIA Jetson ({machine.jetson.model or machine.jetson.l4t_release})"
    elif cuda.ct2_device_count or cuda.torch_device_count:
        names = ", ".join(f"{d.name} {d.memory_bytes / GiB:.0f} GiB" for d in cuda.devices) or "names unknown"
        wanted = "nvidia_cuda"
        why = f"{max(cuda.ct2_device_count, cuda.torch_device_count)} CUDA device(s): {names}"
    elif machine.apple.is_apple_silicon:
        wanted = "apple_silicon_mps"
        why = f"Apple Silicon (darwin arm64), torch MPS {'available' if machine.apple.mps_available else 'unavailable'}"
    else:
        name = _cpu_profile(machine, profiles, default)
        return name, [f"no accelerator found; {cpu_text} -> profile {name!r}"]
    if wanted in profiles:
        return wanted, [f"{why} -> profile {wanted!r}"]
    name = _cpu_profile(machine, profiles, default)
    return name, [f"{why}, but model_load_profiles has no {wanted!r}; using {name!r}"]


# --- backend and device --------------------------------------------------------------------------

def _resolve_auto_device(backend: str, machine: Machine) -> str:
    if backend == "faster_whisper":
        return "cuda" if machine.cuda.ct2_device_count else "cpu"
    if machine.cuda.torch_device_count:
        return "cuda"
    return "mps" if machine.apple.mps_available else "cpu"


def device_problem(backend: str, device: str, machine: Machine) -> str | None:
    """Why `backend` cannot run on `device` here, or None when it can."""
    sw = machine.software
    if backend == "faster_whisper":
        if not sw.ctranslate2:
            return "ctranslate2 is not installed"
        if device == "mps":
            return "CTranslate2 has no MPS support (MPS needs torch_whisper)"
        if device == "cuda" and not machine.cuda.ct2_device_count:
            if machine.cpu.machine in ("aarch64", "arm64"):
                return ("CTranslate2 sees no CUDA device: its aarch64 wheels are CPU-only "
                        "(build CTranslate2 with CUDA, or use torch_whisper)")
            return "CTranslate2 sees no CUDA device"
        return None
    if not sw.torch_whisper:
        missing = [m for m, ok in (("torch", sw.torch), ("openai-whisper", sw.whisper)) if not ok]
        return f"torch_whisper needs {' and '.join(missing)} (not installed)"
    if device == "cuda" and not machine.cuda.torch_device_count:
        return "torch sees no CUDA device"
    if device == "mps" and not machine.apple.is_apple_silicon:
        return f"MPS exists only on Apple Silicon Macs (this is {machine.apple.platform} {machine.apple.machine})"
    if device == "mps" and not machine.apple.mps_available:
        return "torch reports MPS unavailable"
    return None


def _supported_compute_types(backend: str, device: str, machine: Machine) -> tuple[str, ...]:
    if backend == "torch_whisper":
        return TORCH_COMPUTE_TYPES.get(device, ())
    return machine.cuda.ct2_compute_types if device == "cuda" else machine.cpu.ct2_compute_types


# --- memory and model ----------------------------------------------------------------------------

def memory_budget_bytes(device: str, machine: Machine, config: AppConfig) -> int | None:
    """Bytes models may take on `device`: a discrete GPU's memory, else host memory (Jetson and
    Apple GPUs share it) = server.memory_budget_bytes, else the cgroup limit, else RAM; less headroom."""
    if device == "cuda" and not machine.jetson.is_jetson:
        total = machine.cuda.memory_bytes
        return max(0, int(total * (1 - HEADROOM_RATIO)) - GPU_RESERVED_BYTES) if total else None
    total = config.server.memory_budget_bytes or machine.cpu.memory_limit_bytes
    return max(0, int(total * (1 - HEADROOM_RATIO)) - PROCESS_BASELINE_BYTES) if total else None


def _needs_multilingual(model: ModelConfig) -> str | None:
    """Why an English-only model would not do, or None."""
    if model.task == "translate":
        return "model.task is 'translate'"
    languages = [model.language] if model.language else list(model.languages or [])
    other = [lang for lang in languages if lang != "en"]
    return f"model.language(s) {other} need a multilingual model" if other else None


@dataclass
class _Plan:
    model: str
    backend: str
    device: str
    compute_type: str
    pool_size: int


def _operator_set(model: ModelConfig) -> dict[str, Any]:
    """Model keys the operator set to something other than the built-in default."""
    defaults = ModelConfig()
    keys = ("name", *PLAN_KEYS)
    return {k: getattr(model, k) for k in keys if getattr(model, k) != getattr(defaults, k)}


def _compose(profile: ModelLoadProfile, operator: dict[str, Any]) -> _Plan:
    plan = _Plan(profile.model_size, profile.backend, profile.device, profile.compute_type, profile.pool_size)
    for key in PLAN_KEYS:
        if key in operator:
            setattr(plan, key, operator[key])
    return plan


class _Selector:
    def __init__(self, config: AppConfig, machine: Machine, model_available: ModelAvailable):
        self.config, self.machine, self.model_available = config, machine, model_available
        self.reasons: list[str] = []
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def choose(self) -> Decision:
        cfg = self.config
        pinned = cfg.model.profile != "auto"
        if pinned:
            name = cfg.model.profile
            self.reasons.append(f"model.profile pins profile {name!r}")
            operator: dict[str, Any] = {}
        else:
            name, why = _hardware_profile(self.machine, cfg)
            self.reasons += why
            operator = _operator_set(cfg.model)
            for key, value in operator.items():
                self.reasons.append(f"model.{key}={value!r} set by the operator: kept")
        plan = _compose(cfg.model_load_profiles[name], operator)
        name, plan = self._fit_device(name, plan, operator)
        self._fit_compute_type(plan, operator_set="compute_type" in operator)
        fixed_model = cfg.model.model_dir or operator.get("name")
        if fixed_model:
            plan.model = cfg.model.name
            if cfg.model.model_dir:
                self.reasons.append(f"model.model_dir={cfg.model.model_dir!r} names the model: kept")
        budget = memory_budget_bytes(plan.device, self.machine, cfg)
        if not fixed_model:
            plan.model = self._fit_model(plan, budget, pool_is_fixed="pool_size" in operator)
        if "pool_size" not in operator:
            self._fit_pool(plan, budget)
        for error in self.machine.probe_errors:
            self.warn(f"hardware probe failed ({error}); treated as absent")
        return Decision(
            mode="pinned" if pinned else "auto", profile=name, model=plan.model, model_dir=cfg.model.model_dir,
            backend=plan.backend, device=plan.device, compute_type=plan.compute_type, pool_size=plan.pool_size,
            cpu_threads=self._cpu_threads(plan.pool_size),
            model_memory_bytes=model_memory_bytes(plan.model, plan.compute_type, plan.pool_size),
            memory_budget_bytes=budget, machine=self.machine, reasons=self.reasons, warnings=self.warnings)

    def _fit_device(self, name: str, plan: _Plan, operator: dict[str, Any]) -> tuple[str, _Plan]:
        if plan.device == "auto":
            plan.device = _resolve_auto_device(plan.backend, self.machine)
            self.reasons.append(f"device auto -> {plan.device} for {plan.backend}")
        problem = device_problem(plan.backend, plan.device, self.machine)
        if problem is None:
            return name, plan
        other = "torch_whisper" if plan.backend == "faster_whisper" else "faster_whisper"
        if plan.device != "cpu" and "backend" not in operator and not device_problem(other, plan.device, self.machine):
            self.reasons.append(f"{plan.backend} cannot use {plan.device} ({problem}); {other} can: using it")
            plan.backend = other
            return name, plan
        cpu_name = _cpu_profile(self.machine, self.config.model_load_profiles,
                                self.config.model.default_model_load_profile)
        self.warn(f"profile {name!r} wants {plan.backend} on {plan.device}, but {problem}; "
                  f"falling back to CPU (profile {cpu_name!r})")
        fallback = _compose(self.config.model_load_profiles[cpu_name],
                            {k: v for k, v in operator.items() if k not in ("device", "compute_type")})
        fallback.device = "cpu"
        problem = device_problem(fallback.backend, "cpu", self.machine)
        if problem is not None:
            self.warn(f"{fallback.backend} cannot run on cpu ({problem}); using faster_whisper")
            fallback.backend = "faster_whisper"
        return cpu_name, fallback

    def _fit_compute_type(self, plan: _Plan, operator_set: bool) -> None:
        """A precision the backend lacks here becomes the nearest it has: a WARNING when the operator
        asked for it, a reason when only the profile did (the cpu profile's int8 under torch_whisper)."""
        supported = _supported_compute_types(plan.backend, plan.device, self.machine)
        if not supported or plan.compute_type == "default" or plan.compute_type in supported:
            return  # unknown support: let the backend decide
        chosen = next(t for t in ("float16", "float32", *sorted(supported)) if t in supported)
        text = (f"compute_type {plan.compute_type!r} is not supported by {plan.backend} on {plan.device} "
                f"(supported: {', '.join(supported)}); using {chosen!r}")
        if operator_set:
            self.warn(text)
        else:
            self.reasons.append(text)
        plan.compute_type = chosen

    def _fit_pool(self, plan: _Plan, budget: int | None) -> None:
        """A profile's extra replicas are a speed-up, not a need: fewer when memory is short."""
        one = model_memory_bytes(plan.model, plan.compute_type, 1)
        if budget is None or one is None or plan.pool_size <= 1 or one * plan.pool_size <= budget:
            return
        fitting = max(1, budget // one)
        self.reasons.append(f"pool_size {plan.pool_size} -> {fitting}: {plan.pool_size} x ~{one / MiB:.0f} MiB "
                            f"passes the {budget / MiB:.0f} MiB memory budget")
        plan.pool_size = fitting

    def _fit_model(self, plan: _Plan, budget: int | None, pool_is_fixed: bool) -> str:
        """The largest installed model at or below the profile's ceiling that fits the budget, with the
        operator's pool size, or one instance where the pool comes from the profile (_fit_pool)."""
        ceiling = plan.model
        pool = plan.pool_size if pool_is_fixed else 1
        multilingual_why = _needs_multilingual(self.config.model)
        budget_text = f"{budget / MiB:.0f} MiB" if budget is not None else "unknown"
        installed = {}  # name -> bool, each looked up once (resolving verifies files)

        def available(name: str) -> bool:
            if name not in installed:
                installed[name] = self.model_available(name)
            return installed[name]

        def fits(name: str) -> bool:
            need = model_memory_bytes(name, plan.compute_type, pool)
            return budget is None or need is None or need <= budget

        skipped = []
        for name in candidates(ceiling):
            if multilingual_why and name.endswith(".en"):
                skipped.append(f"{name} (English-only)")
            elif not fits(name):
                need = model_memory_bytes(name, plan.compute_type, pool) or 0
                skipped.append(f"{name} (needs ~{need / MiB:.0f} MiB)")
            elif not available(name):
                skipped.append(f"{name} (not installed)")
            else:
                if skipped:
                    self.reasons.append(f"skipped {', '.join(skipped)}")
                self.reasons.append(f"model {name}: largest at or below {ceiling!r} that is installed and fits the "
                                    f"{budget_text} memory budget ({pool} instance(s), "
                                    f"{plan.compute_type})")
                return name
        usable = [n for n in reversed(candidates(ceiling)) if available(n)]
        if not usable:
            self.warn(f"no model at or below {ceiling!r} is installed; keeping {ceiling!r} "
                      "(serve will say how to get it)")
            return ceiling
        english = [n for n in usable if n.endswith(".en")]
        if multilingual_why and len(english) == len(usable):
            chosen = next((n for n in reversed(usable) if fits(n)), usable[0])
            self.warn(f"{multilingual_why}, but only English-only models are installed; using {chosen}")
            return chosen
        self.warn(f"no installed model fits the {budget_text} memory budget; using the smallest, {usable[0]}")
        return usable[0]

    def _cpu_threads(self, pool_size: int) -> int:
        """Per instance. Left at 0 (all usable cores) unless a cgroup quota allows fewer CPUs than the
        affinity shows: then the quota, split over the pool, so decodes are not throttled."""
        configured = self.config.model.cpu_threads
        cpu = self.machine.cpu
        if configured or not cpu.cgroup_cpu_quota or cpu.cgroup_cpu_quota >= cpu.usable_cores:
            return configured
        threads = max(1, int(cpu.cgroup_cpu_quota) // pool_size)
        self.reasons.append(f"cgroup CPU quota {cpu.cgroup_cpu_quota:g} < {cpu.usable_cores} cores: "
                            f"cpu_threads {threads}")
        return threads


def select(config: AppConfig, machine: Machine, model_available: ModelAvailable = installed_model) -> Decision:
    """The model setup for `config` on `machine` (see the module docstring for the rules)."""
    return _Selector(config, machine, model_available).choose()
