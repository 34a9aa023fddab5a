"""The measuring steps apart from the sweeps: inventory, cold start, one realtime stream over the
speech set (final latency and streamed text), offline transcripts, noise alone; and `StepClock`,
which times each step and writes the progress line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from clients.audio import load_pcm16
from clients.cli_common import percentile
from clients.corpus import Recording, offline_transcribe, word_errors
from clients.local_server import LocalAppliance
from clients.sdk import SttClient
from hwtests.noise import SAMPLE_RATE_HZ, noise_clips


class StepClock:
    """`with clock.step("name"):` prints "[2/7] name ..." then "... done in 3.1 s" on stderr and keeps
    each step's wall seconds (and its failure, if it raised) for the report."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps
        self.timings: dict[str, dict[str, Any]] = {}
        self._started = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        number = len(self.timings) + 1
        print(f"[hwtests {number}/{self.total_steps}] {name} ... (elapsed {self.elapsed_sec():.0f} s)",
              file=sys.stderr, flush=True)
        started = time.monotonic()
        entry: dict[str, Any] = {"wall_sec": None, "error": None}
        self.timings[name] = entry
        try:
            yield
        except Exception as err:
            entry["error"] = f"{type(err).__name__}: {err}"
            raise
        finally:
            entry["wall_sec"] = time.monotonic() - started
            outcome = "failed" if entry["error"] else "done"
            print(f"[hwtests {number}/{self.total_steps}] {name} {outcome} in {entry['wall_sec']:.1f} s",
                  file=sys.stderr, flush=True)

    def elapsed_sec(self) -> float:
        return time.monotonic() - self._started


def inventory(server_args: Sequence[str]) -> dict[str, Any]:
    """The `detect --json` report, with the same arguments as the server, so it names the profile,
    model and pool size that server will choose. Run as a process: detect is what operators run."""
    out = subprocess.run([sys.executable, "-m", "appliance", "detect", "--json", *server_args],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out)


def cold_start(server_args: Sequence[str], env: dict[str, str]) -> tuple[LocalAppliance, float]:
    """(the started appliance, seconds from launch to SERVING). The ready file is written after the
    warm-up decode, so this is what an operator waits for after `systemctl start`."""
    appliance = LocalAppliance(*server_args, env=env, startup_timeout_sec=300.0)
    started = time.monotonic()
    appliance.start()
    return appliance, time.monotonic() - started


def _stream(client: SttClient, pcm16: bytes, rate_hz: int, realtime: bool) -> tuple[list[float], str]:
    session = client.create_session(vad_mode="continue")
    finals = [r for r in client.stream_audio(session, pcm16, rate_hz, chunk_ms=100, realtime=realtime)
              if r.is_final]
    return [r.latency_sec for r in finals], " ".join(r.text.strip() for r in finals if r.text.strip())


def single_stream(address: str, recordings: Sequence[Recording]) -> dict[str, Any]:
    """Each recording alone at speaking pace: final latency p50/p95 and the streamed transcripts."""
    files, latencies = [], []
    with SttClient(address) as client:
        for rec in recordings:
            pcm16, rate_hz = load_pcm16(rec.path)
            file_latencies, text = _stream(client, pcm16, rate_hz, realtime=True)
            latencies.extend(file_latencies)
            files.append({"file": rec.path.name, "reference": rec.reference, "streamed": text,
                          "final_latencies_sec": file_latencies})
    return {"final_p50_s": percentile(latencies, 0.50), "final_p95_s": percentile(latencies, 0.95),
            "finals": len(latencies), "files": files}


def pooled_wer(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Errors over all reference words, not the mean of per-file WERs (short files would weigh as
    much as long ones)."""
    counts = [word_errors(ref, hyp) for ref, hyp in pairs]
    words = sum(n for _, n in counts)
    return sum(e for e, _ in counts) / words if words else None


def offline_baseline(inventory: dict[str, Any]) -> dict[str, Any]:
    """The served model, device and compute type for plain offline faster-whisper, so the WER gap
    measures streaming alone. An accelerator CTranslate2 cannot drive (Apple's MPS) falls back to
    the CPU, and a compute type the CPU lacks to float32."""
    device = "cuda" if str(inventory.get("device", "")).startswith("cuda") else "cpu"
    compute_type = inventory.get("compute_type") or "float32"
    cpu_types = inventory.get("machine", {}).get("cpu", {}).get("ct2_compute_types") or ["float32"]
    if device == "cpu" and compute_type not in cpu_types:
        compute_type = "float32"
    return {"model": inventory.get("model") or "tiny.en", "model_dir": inventory.get("model_dir"),
            "device": device, "compute_type": compute_type}


def accuracy(single: dict[str, Any], recordings: Sequence[Recording], inventory: dict[str, Any]) -> dict[str, Any]:
    """Streamed WER (from the single-stream pass) against plain offline faster-whisper with the
    same model on the same files; the gap is what streaming (endpointing, windows) costs."""
    baseline = offline_baseline(inventory)
    offline = {rec.path.name: offline_transcribe(rec.path, compute_type=baseline["compute_type"],
                                                 model=baseline["model"], model_dir=baseline["model_dir"],
                                                 device=baseline["device"])
               for rec in recordings}
    for entry in single["files"]:
        entry["offline"] = offline[entry["file"]]
    return {"stream_wer": pooled_wer([(f["reference"], f["streamed"]) for f in single["files"]]),
            "offline_wer": pooled_wer([(f["reference"], f["offline"]) for f in single["files"]]),
            "offline_baseline": baseline, "files": single["files"]}


def noise_words(address: str) -> dict[str, Any]:
    """Words transcribed from noise alone (must be 0), per kind of noise."""
    per_clip = {}
    with SttClient(address) as client:
        for name, pcm16 in noise_clips().items():
            _, text = _stream(client, pcm16, SAMPLE_RATE_HZ, realtime=False)
            per_clip[name] = {"words": len(text.split()), "text": text}
    return {"noise_words": sum(c["words"] for c in per_clip.values()), "noise": per_clip}
