"""Silero VAD on onnxruntime: one shared ONNX session, per-stream recurrent state, a slot pool.

The graph is `silero_vad_v6.onnx` as shipped inside faster-whisper (no torch needed). It takes rows of
64 context samples + 512 new samples at 16 kHz and carries an LSTM state (h, c) between calls, so a
stream's state is three small arrays that live in `VadStream`, never in the model. onnxruntime's
`InferenceSession.run` is thread-safe, so one session serves every stream; the pool hands out *slots*
(bounded like the seed's model pool: `vad.model_pool_size` to start, growing by
`vad.model_pool_growth_factor` up to `server.max_sessions`, then ERR1008; a factor of 1 keeps the
pool fixed, which bounds VAD state below the session cap).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from appliance.errors import ApplianceError

FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the frame Silero v5/v6 was trained on
CONTEXT_SAMPLES = 64
FRAME_SEC = FRAME_SAMPLES / 16_000
_STATE_SHAPE = (1, 1, 128)


def bundled_silero_path() -> Path:
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or spec.origin is None:
        raise RuntimeError("faster-whisper is not installed; it ships the Silero VAD ONNX graph")
    return Path(spec.origin).parent / "assets" / "silero_vad_v6.onnx"


class SileroOnnx:
    """The shared, stateless ONNX session."""

    def __init__(self, path: Path | None = None):
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        # One thread per call: calls come from many streams at once, and intra-op threads for a
        # few 32 ms frames cost more in wake-ups than they save.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(path or bundled_silero_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def run(self, rows: np.ndarray, h: np.ndarray, c: np.ndarray):
        probs, h, c = self._session.run(None, {"input": rows, "h": h, "c": c})
        return probs.reshape(-1), h, c


class VadStream:
    """One stream's VAD state: leftover samples, 64-sample context and the LSTM state."""

    def __init__(self, model: SileroOnnx):
        self._model = model
        self.leased = False
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed 16 kHz samples; return (frames [n, 512], speech probabilities [n]) for each whole frame.

        Samples that do not fill a frame wait for the next call.
        """
        audio = np.concatenate((self._pending, samples)) if self._pending.size else samples
        n_frames = audio.size // FRAME_SAMPLES
        self._pending = audio[n_frames * FRAME_SAMPLES:].copy()
        if n_frames == 0:
            return np.zeros((0, FRAME_SAMPLES), dtype=np.float32), np.zeros(0, dtype=np.float32)
        frames = audio[: n_frames * FRAME_SAMPLES].reshape(n_frames, FRAME_SAMPLES)
        contexts = np.empty((n_frames, CONTEXT_SAMPLES), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = frames[:-1, -CONTEXT_SAMPLES:]
        rows = np.ascontiguousarray(np.concatenate((contexts, frames), axis=1), dtype=np.float32)
        probs, self._h, self._c = self._model.run(rows, self._h, self._c)
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        return frames, probs

    @property
    def pending_samples(self) -> np.ndarray:
        return self._pending


class VadPool:
    """Hands out VAD slots; grows on demand up to `max_slots`, then refuses with ERR1008."""

    def __init__(self, model: SileroOnnx, initial_slots: int, max_slots: int, growth_factor: float):
        self._model = model
        self._max_slots = max(1, max_slots)
        self._capacity = min(max(1, initial_slots), self._max_slots)
        self._growth_factor = max(1.0, growth_factor)
        self._leased = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def leased(self) -> int:
        return self._leased

    def acquire(self) -> VadStream:
        with self._lock:
            if self._leased >= self._capacity:
                grown = max(self._capacity + 1, int(self._capacity * self._growth_factor))
                if self._capacity >= self._max_slots or self._growth_factor <= 1.0:
                    raise ApplianceError(
                        "ERR1008",
                        f"all {self._capacity} VAD slots are in use (vad.model_pool_size, growth factor "
                        f"{self._growth_factor:g}, at most server.max_sessions={self._max_slots}); "
                        "retry when a stream ends",
                        retry_after_sec=1.0,
                    )
                self._capacity = min(grown, self._max_slots)
            self._leased += 1
        stream = VadStream(self._model)
        stream.leased = True
        return stream

    def release(self, stream: VadStream) -> None:
        """Give a slot back; releasing the same stream twice frees one slot, not two."""
        with self._lock:
            if stream.leased:
                stream.leased = False
                self._leased -= 1

    def warm_up(self) -> None:
        """Run one frame so the first real stream does not pay onnxruntime's lazy initialisation."""
        VadStream(self._model).process(np.zeros(FRAME_SAMPLES, dtype=np.float32))
