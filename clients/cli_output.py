"""What the CLIs print: one line or JSON object per result, and the --metrics summary with its
latency statistics (clients/cli_common.py re-exports these; benchmarks use `percentile`)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from appliance.api import stt_pb2
from clients.sdk import ResultStream, TimedResult


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), fraction in 0..1; None when empty."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(final_latencies_sec: Sequence[float]) -> dict[str, float | None]:
    clean = [v for v in final_latencies_sec if not math.isnan(v)]
    return {
        "final_latency_median_sec": statistics.median(clean) if clean else None,
        "final_latency_p95_sec": percentile(clean, 0.95),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def result_record(result: TimedResult) -> dict[str, Any]:
    """The JSON-lines shape of one result (speech events add "speech_event", results with text
    "confidence", word-timed finals "words")."""
    record = {
        "session_id": result.session_id,
        "utterance_index": result.utterance_index,
        "is_final": result.is_final,
        "text": result.text,
        "committed_text": result.committed_text,
        "unstable_text": result.unstable_text,
        "start_sec": _round(result.start_sec, 3),
        "end_sec": _round(result.end_sec, 3),
        "language": result.language,
        "latency_sec": _round(result.latency_sec),
        "decode_latency_sec": _round(result.decode_latency_sec),
    }
    if result.speech_event:
        record["speech_event"] = result.speech_event
    if result.text:
        record["confidence"] = _round(result.confidence)
    if result.words:
        record["words"] = [{"word": w.word, "start_sec": _round(w.start_sec, 3), "end_sec": _round(w.end_sec, 3),
                            "probability": _round(w.probability)} for w in result.words]
    return record


def format_result(result: TimedResult) -> str:
    if result.speech_event:
        at = result.start_sec if result.speech_event == "started" else result.end_sec
        return f"[speech {result.speech_event} #{result.utterance_index} at {at:.2f}s]"
    if result.is_final:
        return (f"[final #{result.utterance_index} {result.start_sec:.2f}-{result.end_sec:.2f}s] "
                f"{result.text.strip()}")
    hypothesis = f"{result.committed_text.strip()} | {result.unstable_text.strip()}".strip()
    return f"[partial #{result.utterance_index}] {hypothesis}"


def result_line(result: TimedResult, json_lines: bool) -> str:
    return json.dumps(result_record(result), ensure_ascii=False) if json_lines else format_result(result)


@dataclass
class ResultTally:
    """What the --metrics summary counts of the results, as they arrive."""

    final_latencies_sec: list[float] = field(default_factory=list)
    partials: int = 0

    def add(self, result: TimedResult) -> None:
        if result.speech_event:
            return
        if result.is_final:
            self.final_latencies_sec.append(result.latency_sec)
        else:
            self.partials += 1

    def summary(self, session: stt_pb2.SessionResponse, audio_sec: float, wall_sec: float,
                stream: ResultStream) -> dict[str, Any]:
        return {
            "summary": True,
            "session_id": session.session_id,
            "model_id": session.model_id,
            "decode_profile": session.decode_profile,
            "vad_silence_sec": _round(session.vad_silence_sec),
            "audio_sec": round(audio_sec, 3),
            "wall_sec": round(wall_sec, 3),
            "finals": len(self.final_latencies_sec),
            "partials": self.partials,
            **{k: _round(v) for k, v in latency_summary(self.final_latencies_sec).items()},
            "realtime_factor": _round(wall_sec / audio_sec) if audio_sec > 0 else None,
            "resumes": stream.resumes,  # re-attachments after a dropped connection
            "nodes": stream.nodes,  # the node (stt-node header) behind each call, in order
        }


def format_summary(summary: dict[str, Any]) -> str:
    def sec(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f} s"
    rtf = summary["realtime_factor"]
    return "\n".join((
        f"audio {summary['audio_sec']:.2f} s, wall {summary['wall_sec']:.2f} s, "
        f"realtime factor {'n/a' if rtf is None else f'{rtf:.3f}'}",
        f"finals {summary['finals']}, partials {summary['partials']}",
        f"final latency (client): median {sec(summary['final_latency_median_sec'])}, "
        f"p95 {sec(summary['final_latency_p95_sec'])}",
        *([f"resumed {summary['resumes']} time(s) after a dropped connection; nodes: "
           f"{' -> '.join(summary['nodes'])}"] if summary["resumes"] else []),
        *([f"listened on in {summary['reopens']} new session(s) after idle timeouts"]
          if summary.get("reopens") else []),  # the microphone client's summary
    ))


def print_line(line: str, out: TextIO) -> None:
    print(line, file=out, flush=True)  # flushed: a watcher sees each result as it lands


def print_summary(summary: dict[str, Any], settings: dict[str, Any], out: TextIO) -> None:
    """The summary, where --metrics asks for it, in the results' format."""
    if settings["metrics"]:
        text = json.dumps(summary, ensure_ascii=False) if settings["json"] else format_summary(summary)
        print_line(text, out)
