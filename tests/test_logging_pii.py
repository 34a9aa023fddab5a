"""Transcripts never reach the main log, even at DEBUG (log/PII policy)."""

from __future__ import annotations

import re

from clients.local_server import LocalAppliance
from tests.conftest import stream_file


def test_debug_log_holds_no_transcript_words(sentences):
    with LocalAppliance("--log-level", "DEBUG", "--log-metrics", "--faster-whisper-log-level", "DEBUG") as server:
        results = stream_file(server.address, sentences.path, attributes={"partial": "true"}, realtime=True)
        log = server.log().lower()
    finals = [r.text for r in results if r.is_final and r.text]
    assert len(finals) == 3
    assert "decode batch" in log, "the DEBUG/metrics log did run"
    words = {w for text in finals for w in re.findall(r"[a-z']{4,}", text.lower())}
    assert words, finals
    leaked = sorted(w for w in words if re.search(rf"\b{re.escape(w)}\b", log))
    assert leaked == [], f"transcript words in the main log: {leaked}"
