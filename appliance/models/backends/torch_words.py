"""Word timings for the torch backend, by alignment: the decode's own segments are aligned against
the encoder output of the window they were decoded on, with openai-whisper's own
`timing.add_word_timestamps` (cross-attention of the alignment heads, median filter, DTW, its
punctuation and boundary heuristics).

`whisper.transcribe(word_timestamps=True)` also moves the next window to the last word's end, so a
final shorter than the window is decoded again on its padding, where Whisper invents text; here the
decode runs without word timings, exactly as a plain one, and the alignment follows. `EncoderTap`
keeps what the encoder computed during the decode, so the alignment runs the decoder once on that
output instead of encoding the window again.
"""

from __future__ import annotations

import threading
from itertools import groupby
from typing import Any

import numpy as np

# whisper.timing turns SDPA off for the alignment with `disable_sdpa`, a switch on the attention
# CLASS, restored on exit: two alignments in two decode threads (two instances, or a final beside a
# speculative decode) would switch it back under each other, and the cross-attention weights the
# alignment reads come back None. One alignment at a time in the process.
_ALIGN_LOCK = threading.Lock()


class EncoderTap:
    """While open, records each (mel window, encoder output) pair `model`'s encoder computes."""

    def __init__(self, model):
        self._model = model
        self._seen: list[tuple[Any, Any]] = []  # torch tensors
        self._hook = None

    def __enter__(self) -> EncoderTap:
        self._hook = self._model.encoder.register_forward_hook(
            lambda _module, inputs, output: self._seen.append((inputs[0], output)))
        return self

    def __exit__(self, *exc) -> None:
        if self._hook is not None:
            self._hook.remove()

    def encoded(self, mel):
        """The recorded encoder output of exactly this mel window, or None."""
        import torch

        for window, output in reversed(self._seen):
            if window.shape[-2:] == mel.shape[-2:] and torch.equal(window.reshape(mel.shape), mel):
                return output
        return None


class _Encoded:
    """The model as `whisper.timing` calls it, with the encoder output of the decode it aligns."""

    def __init__(self, model, audio_features):
        self._model = model
        self._audio_features = audio_features

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def __call__(self, mel, tokens):
        return self._model.decoder(tokens, self._audio_features)


def add_words(model, tap: EncoderTap, result: dict, audio: np.ndarray, *, language: str, task: str,
              fp16: bool) -> None:
    """Sets `words` on each segment of `whisper.transcribe`'s `result`, window by window."""
    import torch
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
    from whisper.timing import add_word_timestamps
    from whisper.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages, language=language,
                              task=task)
    # the mel exactly as whisper.transcribe slices it into windows
    mel = log_mel_spectrogram(np.ascontiguousarray(audio, dtype=np.float32), model.dims.n_mels, padding=N_SAMPLES)
    content_frames = mel.shape[-1] - N_FRAMES
    last_speech_sec = 0.0
    for seek, window in groupby(result["segments"], key=lambda s: s["seek"]):
        segments = list(window)
        size = min(N_FRAMES, content_frames - seek)
        mel_window = pad_or_trim(mel[:, seek:seek + size], N_FRAMES).to(model.device)
        mel_window = mel_window.to(torch.float16 if fp16 else torch.float32)
        features = tap.encoded(mel_window)
        aligner = model if features is None else _Encoded(model, features)  # None: encode again, same text
        with _ALIGN_LOCK:
            add_word_timestamps(segments=segments, model=aligner, tokenizer=tokenizer, mel=mel_window,
                                num_frames=size, last_speech_timestamp=last_speech_sec)
        ends = [w["end"] for s in segments for w in s.get("words") or ()]
        last_speech_sec = ends[-1] if ends else last_speech_sec
