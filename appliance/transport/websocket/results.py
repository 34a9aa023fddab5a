"""Deepgram's live messages, shaped from the appliance's results: Results, SpeechStarted,
UtteranceEnd, Metadata and Error (the JSON a Deepgram client parses; field names are Deepgram's).

Times are the client's: seconds of the audio it sent. A Finalize adds silence the client never sent
(see live.py); `Timeline.client_sec` takes it back out.
"""

from __future__ import annotations

import bisect
import datetime
import re
import uuid
from dataclasses import dataclass, field

from appliance import __version__
from appliance.streaming.types import RecognitionResult
from appliance.streaming.word_timing import Word
from appliance.transport.websocket.options import LiveOptions

CHANNEL = [0, 1]  # [channel index, channels]: the appliance mixes every channel into one
_EDGE_PUNCTUATION = re.compile(r"^[^\w']+|[^\w']+$")


def request_id(session_id: str) -> str:
    """The session id as the UUID Deepgram's request_id is."""
    try:
        return str(uuid.UUID(hex=session_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_OID, session_id))


@dataclass
class Timeline:
    """Silence the server added (at timeline seconds, of seconds), so times can be told in the client's."""

    _at: list[float] = field(default_factory=list)
    _added: list[float] = field(default_factory=list)  # cumulative

    def add_silence(self, at_sec: float, duration_sec: float) -> None:
        self._at.append(at_sec)
        self._added.append((self._added[-1] if self._added else 0.0) + duration_sec)

    def client_sec(self, timeline_sec: float) -> float:
        i = bisect.bisect_right(self._at, timeline_sec)
        return round(max(0.0, timeline_sec - (self._added[i - 1] if i else 0.0)), 3)


def _plain(word: str) -> str:
    return _EDGE_PUNCTUATION.sub("", word).lower()


def _words(result: RecognitionResult, timeline: Timeline) -> list[dict]:
    words: tuple[Word, ...] = result.words
    if not words and result.text.strip():  # interims (and finals without timings): spread evenly, marked by
        tokens = result.text.split()       # the result's own confidence
        step = max(0.0, result.end_sec - result.start_sec) / len(tokens)
        words = tuple(Word(t, result.start_sec + i * step, result.start_sec + (i + 1) * step, result.confidence)
                      for i, t in enumerate(tokens))
    return [{"word": _plain(w.word), "start": timeline.client_sec(w.start_sec), "end": timeline.client_sec(w.end_sec),
             "confidence": round(float(w.probability), 4), "punctuated_word": w.word.strip()}
            for w in words if _plain(w.word)]


def results(result: RecognitionResult, options: LiveOptions, timeline: Timeline, *, speech_final: bool,
            from_finalize: bool, model_uuid: str) -> dict:
    words = _words(result, timeline)
    transcript = result.text.strip() if options.punctuate else " ".join(w["word"] for w in words)
    start = timeline.client_sec(result.start_sec)
    message = {
        "type": "Results", "channel_index": CHANNEL, "start": start,
        "duration": round(max(0.0, timeline.client_sec(result.end_sec) - start), 3),
        "is_final": result.is_final, "speech_final": speech_final,
        "channel": {"alternatives": [{"transcript": transcript, "confidence": round(float(result.confidence), 4),
                                      "words": words}]},
        "metadata": {"request_id": request_id(result.session_id), "model_uuid": model_uuid,
                     "model_info": {"name": result.model_id, "version": __version__, "arch": "whisper"}},
    }
    if from_finalize:
        message["from_finalize"] = True
    return message


def speech_started(at_sec: float, timeline: Timeline) -> dict:
    return {"type": "SpeechStarted", "channel": CHANNEL, "timestamp": timeline.client_sec(at_sec)}


def utterance_end(last_word_end_sec: float) -> dict:
    """`last_word_end_sec` in the client's seconds (a word's `end` as Results gave it)."""
    return {"type": "UtteranceEnd", "channel": CHANNEL, "last_word_end": round(last_word_end_sec, 3)}


def metadata(session_id: str, *, duration_sec: float, channels: int, sha256: str, model_id: str,
             model_uuid: str) -> dict:
    return {"type": "Metadata", "transaction_key": "deprecated", "request_id": request_id(session_id),
            "sha256": sha256, "created": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            "duration": round(duration_sec, 3), "channels": channels, "models": [model_uuid],
            "model_info": {model_uuid: {"name": model_id, "version": __version__, "arch": "whisper"}}}


def error(code: str, message: str, *, variant: str = "Error", client_message: str | None = None) -> dict:
    """Deepgram's Error frame, carrying the appliance's code."""
    body = {"type": "Error", "variant": variant, "description": f"{code}: {message}", "code": code}
    if client_message is not None:
        body["message"] = client_message[:200]
    return body


def model_uuid(model_id: str) -> str:
    """A stable UUID per model id (Deepgram names models by UUID in its metadata)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"stt-appliance:{model_id}"))
