"""Check hwtests/gpu.py's NVIDIA readers on a real GPU, without installing the appliance: each reader
this box has samples while torch keeps the GPU busy with a known allocation; each must see the work.

    PYTHONPATH=. python3 hwtests/device/check_gpu.py        (needs torch with CUDA; ~20 s)

Exit 0 when select_reader chose NVML or nvidia-smi and every reader that opened saw utilisation above 0
and at least the allocation; 1 otherwise. One line per reader on stdout.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable

import torch

from hwtests.gpu import GpuSampler, NvmlReader, Reader, SmiReader, select_reader

BUSY_SEC = 4.0
HOLD_GIB = 4


def busy_gpu(seconds: float, stop: threading.Event) -> None:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        (a @ a).sum().item()


def measure(open_reader: Callable[[float], Reader | None]) -> dict:
    stop = threading.Event()
    worker = threading.Thread(target=busy_gpu, args=(BUSY_SEC, stop))
    sampler = GpuSampler(interval_sec=0.5, open_reader=open_reader).start()
    worker.start()
    worker.join()
    return sampler.stop()


def main() -> int:
    if not torch.cuda.is_available():
        print("check_gpu: torch sees no CUDA device")
        return 1
    _held = torch.empty(HOLD_GIB * 2**30, dtype=torch.uint8, device="cuda")  # on the GPU until exit
    chosen = select_reader()
    print(f"select_reader: {chosen.source if chosen else None}")
    if chosen:
        chosen.close()
    readers: dict[str, Callable[[float], Reader | None]] = {"select_reader": select_reader,
                                                            "nvml": lambda _i: NvmlReader()}
    if smi := shutil.which("nvidia-smi"):
        readers["nvidia-smi"] = lambda _i: SmiReader(smi)
    ok = chosen is not None and chosen.source in ("nvml", "nvidia-smi")
    for name, open_reader in readers.items():
        try:
            figures = measure(open_reader)
        except Exception as err:  # a reader that does not open here
            print(f"{name}: did not open: {type(err).__name__}: {err}")
            ok = False
            continue
        saw = (figures["gpu_util_peak_pct"] or 0) > 0 and (figures["gpu_mem_peak_mib"] or 0) >= HOLD_GIB * 1024
        ok = ok and saw
        print(f"{name}: {figures} -> {'ok' if saw else 'DID NOT SEE THE WORK'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
