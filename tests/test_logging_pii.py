"""Transcripts never reach the main log, even at DEBUG (log/PII policy)."""

from __future__ import annotations

import itertools
import re

from tests.conftest import stream_file
from tests.inprocess import InProcessAppliance


def test_debug_log_holds_no_transcript_words(sentences):
    with InProcessAppliance("--log-level", "DEBUG", "--log-metrics", "--faster-whisper-log-level", "DEBUG") as server:
        results = stream_file(server.address, sentences.path, attributes={"partial": "true"}, realtime=True)
        log = server.log().lower()
    finals = [r.text for r in results if r.is_final and r.text]
    assert len(finals) == 3
    assert "decode batch" in log, "the DEBUG/metrics log did run"
    # Pairs of consecutive transcript words: any leaked piece of a final holds one. Single words would
    # match the log's own vocabulary (the sentences say "front door"; a door's refusal logs under
    # the logger "appliance.door.grpc").
    pairs = {" ".join(pair) for text in finals
             for pair in itertools.pairwise(re.findall(r"[a-z']+", text.lower()))}
    assert len(pairs) >= 10, finals
    leaked = sorted(p for p in pairs if re.search(r"\b" + r"\W+".join(map(re.escape, p.split())) + r"\b", log))
    assert leaked == [], f"transcript words in the main log: {leaked}"


def test_opt_in_transcript_sink_and_audio_persistence(sentences, tmp_path):
    import json
    import wave

    transcript_file = tmp_path / "transcripts" / "t.log"
    audio_dir = tmp_path / "audio"
    env = {"STT_LOGGING_LOG_TRANSCRIPTS": "true", "STT_LOGGING_TRANSCRIPT_FILE": str(transcript_file),
           "STT_STORAGE_PERSIST_AUDIO": "true", "STT_STORAGE_DIRECTORY": str(audio_dir)}
    with InProcessAppliance("--log-level", "DEBUG", env=env) as server:
        results = stream_file(server.address, sentences.path, session_id="kiosk-9")
        main_log = server.log().lower()
    finals = [r for r in results if r.is_final and r.text]
    lines = [json.loads(line) for line in transcript_file.read_text().splitlines()]
    assert [line["text"] for line in lines] == [r.text for r in finals]
    assert all(line["session_id"] == "kiosk-9" for line in lines)
    assert (transcript_file.stat().st_mode & 0o777) == 0o600
    assert finals[0].text.lower().split()[1] not in main_log.split()  # still not in the main log
    (wav_path,) = audio_dir.glob("kiosk-9-*.wav")
    with wave.open(str(wav_path)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        assert abs(wav.getnframes() / wav.getframerate() - sentences_duration(sentences.path)) < 0.2


def sentences_duration(path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate
