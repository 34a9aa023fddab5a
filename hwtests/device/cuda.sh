#!/usr/bin/env bash
# Qualify an NVIDIA CUDA box in one go (README.md beside this file): install the appliance with the
# hwtests extra into .venv, plus the CUDA 12 libraries CTranslate2 loads and nvidia-ml-py; show the GPU
# and the profile the appliance picks; run hwtests on the GPU. Idempotent; run from anywhere.
#   hwtests/device/cuda.sh                                   report in ${OUT:-out}/hwtests
#   HWTESTS_ARGS="--full" HWTESTS_TIMEOUT=3600 hwtests/device/cuda.sh
#   PYTHON=python3.12 hwtests/device/cuda.sh                  the Python that makes .venv (3.11+)
set -euo pipefail
cd "$(dirname "$0")/../.."

out="${OUT:-out}/hwtests"
# The default fits ~7 minutes on one GPU: tiny.en on a datacentre GPU holds every step, so the
# counts are thinned and each step is shorter than --quick's 9 steps of 20 s (~12 minutes); the top
# step is tried once more to confirm the knee (hwtests/knee.py).
read -r -a hwtests_args <<<"${HWTESTS_ARGS:---quick --steps 1,4,8,16,32 --step-sec 15}"
timeout_sec="${HWTESTS_TIMEOUT:-540}"
py=.venv/bin/python

command -v nvidia-smi >/dev/null || { echo "cuda.sh: no nvidia-smi: is the NVIDIA driver installed?" >&2; exit 1; }
nvidia-smi

# The appliance as the project installs itself (a stamp per pyproject.toml and extras skips a rerun).
EXTRAS=hwtests scripts/setup.sh

# CTranslate2's Linux wheels load CUDA 12 cuBLAS (libcublas.so.12) at run time; 4.5 and 4.6 also cuDNN 9
# (4.8.5 has no cuDNN left in it): the installed library itself says which this one is.
ct2_loads_cudnn() {
  "$py" - <<'EOF'
import importlib.util, pathlib, sys
package = pathlib.Path(importlib.util.find_spec("ctranslate2").origin).parent
libraries = [*package.glob("*.so*"), *package.parent.glob("ctranslate2.libs/*.so*")]
sys.exit(0 if any(b"libcudnn" in path.read_bytes() for path in libraries) else 1)
EOF
}
packages=("nvidia-cublas-cu12" "nvidia-ml-py")  # nvidia-ml-py: hwtests reads the GPU through NVML
if ct2_loads_cudnn; then packages+=("nvidia-cudnn-cu12>=9,<10"); fi
"$py" -m pip install -q "${packages[@]}"  # already there: no download

# The pip packages' libraries (site-packages/nvidia/*/lib) for the appliance and its offline baseline.
nvidia_libs=$("$py" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("nvidia")
roots = spec.submodule_search_locations if spec and spec.submodule_search_locations else []
print(":".join(str(p / "lib") for root in roots for p in sorted(pathlib.Path(root).iterdir()) if (p / "lib").is_dir()))
EOF
)
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
"$py" -c 'import ctypes; ctypes.CDLL("libcublas.so.12")' \
  || { echo "cuda.sh: libcublas.so.12 does not load (LD_LIBRARY_PATH=${LD_LIBRARY_PATH})" >&2; exit 1; }

mkdir -p "$out"
"$py" -m appliance detect --json --profile nvidia_cuda >"$out/detect.json"
"$py" - "$out/detect.json" <<'EOF' || { echo "cuda.sh: the appliance would not run on the GPU here" >&2; exit 1; }
import json, sys
chosen = json.load(open(sys.argv[1]))
print("appliance:", " ".join(f"{k}={chosen.get(k)}" for k in ("profile", "model", "device", "compute_type", "pool_size")))
for warning in chosen.get("warnings") or []:
    print("  warning:", warning)
sys.exit(0 if chosen.get("device") == "cuda" else 1)
EOF

echo "hwtests ${hwtests_args[*]} (limit ${timeout_sec} s) -> ${out}"
status=0
# SIGINT, not SIGTERM, at the limit: hwtests then stops the appliance it started.
PYTHONUNBUFFERED=1 timeout -s INT -k 30 "$timeout_sec" \
  "$py" -m hwtests "${hwtests_args[@]}" --profile nvidia_cuda --out "$out" 2>&1 | tee "$out/hwtests.log" \
  || status=$?
if [ "$status" -eq 124 ]; then echo "cuda.sh: hwtests passed its ${timeout_sec} s limit" >&2; fi
if [ -f "$out/report.md" ]; then cat "$out/report.md"; fi
exit "$status"
