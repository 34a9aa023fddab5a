"""Audio persistence (AudioStore) and the opt-in transcript sink, against real files in tmp_path."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import wave
from pathlib import Path

import pytest

from appliance.config import LoggingConfig
from appliance.observability.transcripts import LOGGER_NAME, TranscriptSink
from appliance.storage import AudioStore, safe_session_id

DAY_SEC = 86_400


def _chunk(index: int, samples: int = 160) -> bytes:
    """A distinct 16-bit chunk per index, so dropped and kept chunks are told apart."""
    return b"".join(((index * 7 + i) % 30_000).to_bytes(2, "little", signed=True) for i in range(samples))


def _wavs(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wav"))


def _read(path: Path) -> tuple[int, int, int, bytes]:
    with wave.open(str(path), "rb") as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.readframes(wav.getnframes())


def _old_file(path: Path, size_bytes: int, age_sec: float, now: float) -> Path:
    path.write_bytes(b"\0" * size_bytes)
    os.utime(path, (now - age_sec, now - age_sec))
    return path


# -- AudioStore ------------------------------------------------------------------------------------


def test_chunks_become_a_valid_wav(tmp_path):
    store = AudioStore(tmp_path / "audio", queue_max_chunks=64)
    store.start()
    chunks = [_chunk(i) for i in range(10)]
    for c in chunks:
        store.put("sess-1", c, 16_000)
    store.end_session("sess-1")
    store.close()
    [path] = _wavs(tmp_path / "audio")
    assert path.name.startswith("sess-1-") and path.name.endswith("Z.wav")
    assert _read(path) == (1, 2, 16_000, b"".join(chunks))
    assert store.written_bytes == sum(map(len, chunks))
    assert store.dropped_chunks == 0 and store.write_errors == 0


def test_sessions_get_separate_files_and_close_flushes_open_ones(tmp_path):
    store = AudioStore(tmp_path, queue_max_chunks=64)
    store.start()
    store.put("a", _chunk(1), 16_000)
    store.put("b", _chunk(2), 8_000)
    store.put("a", _chunk(3), 16_000)
    store.close()  # no end_session: close still finalises both files
    files = {p.name.split("-")[0]: p for p in _wavs(tmp_path)}
    assert _read(files["a"])[2:] == (16_000, _chunk(1) + _chunk(3))
    assert _read(files["b"])[2:] == (8_000, _chunk(2))


def test_chunk_at_another_rate_is_dropped_and_counted(tmp_path):
    store = AudioStore(tmp_path, queue_max_chunks=8)
    store.start()
    store.put("s", _chunk(1), 16_000)
    store.put("s", _chunk(2), 48_000)
    store.put("s", _chunk(3), 16_000)
    store.end_session("s")
    store.close()
    [path] = _wavs(tmp_path)
    assert _read(path)[2:] == (16_000, _chunk(1) + _chunk(3))
    assert store.dropped_chunks == 1


def test_full_queue_drops_the_oldest_chunks(tmp_path):
    store = AudioStore(tmp_path, queue_max_chunks=4)
    store.start()
    store.pause()
    for i in range(7):
        store.put("s", _chunk(i), 16_000)
    store.end_session("s")  # markers survive drops and still close the file
    assert store.dropped_chunks == 3
    store.resume()
    store.close()
    [path] = _wavs(tmp_path)
    assert _read(path)[3] == b"".join(_chunk(i) for i in range(3, 7))


def test_put_never_blocks_while_the_writer_is_stalled(tmp_path):
    store = AudioStore(tmp_path, queue_max_chunks=256)
    store.start()
    store.pause()
    pcm = _chunk(0, samples=320)
    began = time.perf_counter()
    for _ in range(10_000):
        store.put("s", pcm, 16_000)
    elapsed_sec = time.perf_counter() - began
    assert elapsed_sec < 0.5
    assert store.dropped_chunks == 10_000 - 256
    store.close()


def test_put_after_close_and_bad_input_never_raise(tmp_path):
    store = AudioStore(tmp_path, queue_max_chunks=4)
    store.start()
    store.close()
    store.put("s", _chunk(0), 16_000)
    store.put("s", None, "x")  # type: ignore[arg-type]
    store.end_session("s")
    assert store.dropped_chunks == 2


def test_writer_errors_are_counted_not_raised(tmp_path):
    blocker = tmp_path / "not-a-dir"
    store = AudioStore(tmp_path, queue_max_chunks=4)
    store.start()
    store.directory = blocker  # the writer can no longer create files (as with a vanished mount)
    store.put("s", _chunk(0), 16_000)
    store.end_session("s")
    store.close()
    assert store.write_errors == 1 and store.written_bytes == 0


@pytest.mark.parametrize("session_id", ["../../etc/passwd", "/abs/path", "..", "a\\b\0c", "", "x" * 500])
def test_session_ids_cannot_escape_the_directory(tmp_path, session_id):
    directory = tmp_path / "audio"
    store = AudioStore(directory, queue_max_chunks=4)
    store.start()
    store.put(session_id, _chunk(0), 16_000)
    store.end_session(session_id)
    store.close()
    [path] = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert path.parent == directory
    assert not path.name.startswith(".")
    safe = safe_session_id(session_id)
    assert len(safe) <= 64 and all(ch.isalnum() or ch in "._-" for ch in safe)


def test_retention_by_file_count_keeps_the_newest(tmp_path):
    now = time.time()
    old = [_old_file(tmp_path / f"old{i}.wav", 10, age_sec=100 - i, now=now) for i in range(5)]
    store = AudioStore(tmp_path, queue_max_chunks=4, max_files=3)
    store.start()
    store.close()
    assert _wavs(tmp_path) == old[2:]
    assert store.files_deleted == 2


def test_retention_by_bytes_runs_after_each_closed_file(tmp_path):
    now = time.time()
    _old_file(tmp_path / "a.wav", 1_000, age_sec=300, now=now)
    _old_file(tmp_path / "b.wav", 1_000, age_sec=200, now=now)
    (tmp_path / "notes.txt").write_bytes(b"\0" * 5_000)  # only .wav files are managed
    store = AudioStore(tmp_path, queue_max_chunks=8, max_bytes=2_500)
    store.start()
    store.put("new", _chunk(0, samples=400), 16_000)  # 800 bytes + 44-byte header
    store.end_session("new")
    store.close()
    names = [p.name for p in _wavs(tmp_path)]
    assert names[0] == "b.wav" and names[1].startswith("new-") and len(names) == 2
    assert (tmp_path / "notes.txt").exists()
    assert store.files_deleted == 1


def test_retention_by_age_uses_the_injected_clock(tmp_path):
    now = 2_000_000_000.0
    _old_file(tmp_path / "ancient.wav", 10, age_sec=3 * DAY_SEC, now=now)
    _old_file(tmp_path / "recent.wav", 10, age_sec=0.5 * DAY_SEC, now=now)
    store = AudioStore(tmp_path, queue_max_chunks=4, max_age_days=1, clock=lambda: now)
    store.start()
    store.close()
    assert [p.name for p in _wavs(tmp_path)] == ["recent.wav"]
    assert store.files_deleted == 1


# -- TranscriptSink --------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_records():
    handler = _Collect()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def test_sink_writes_json_lines_and_nothing_to_root(tmp_path, root_records):
    path = tmp_path / "logs" / "transcripts.log"
    sink = TranscriptSink(path, retention_days=7)
    sink.write("sess-1", 0, "hello wörld", 0.0, 1.25)
    sink.write("sess-1", 1, "second line", 1.5, 3.0)
    sink.close()
    sink.write("sess-1", 2, "after close", 3.0, 4.0)  # ignored, and must not fall back to stderr
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["utterance_index"], r["text"]) for r in lines] == [(0, "hello wörld"), (1, "second line")]
    assert lines[0]["session_id"] == "sess-1" and lines[0]["end_sec"] == 1.25
    assert lines[0]["ts"].endswith("+00:00")
    assert root_records == []
    assert logging.getLogger(LOGGER_NAME).handlers == []


def test_sink_file_is_owner_only(tmp_path):
    path = tmp_path / "transcripts.log"
    path.write_text("")
    path.chmod(0o644)  # an existing, too-open file is tightened
    sink = TranscriptSink(path, retention_days=1)
    sink.write("s", 0, "x", 0, 1)
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sink_rollover_reopens_owner_only(tmp_path):
    path = tmp_path / "transcripts.log"
    sink = TranscriptSink(path, retention_days=2)
    sink._handler.doRollover()
    sink.write("s", 0, "x", 0, 1)
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sink._handler.backupCount == 2


def test_prune_deletes_old_rotated_files(tmp_path):
    now = time.time()
    path = tmp_path / "transcripts.log"
    old = _old_file(tmp_path / "transcripts.log.2020-01-01", 10, age_sec=10 * DAY_SEC, now=now)
    fresh = _old_file(tmp_path / "transcripts.log.2020-01-09", 10, age_sec=1 * DAY_SEC, now=now)
    unrelated = _old_file(tmp_path / "transcripts.log.bak", 10, age_sec=10 * DAY_SEC, now=now)
    sink = TranscriptSink(path, retention_days=3)  # prunes at creation
    assert not old.exists() and fresh.exists() and unrelated.exists()
    assert sink.prune(now + 5 * DAY_SEC) == 1
    assert not fresh.exists() and path.exists()
    sink.close()


@pytest.mark.parametrize(("log_transcripts", "with_file", "expected"),
                         [(False, False, False), (True, False, False), (False, True, False), (True, True, True)])
def test_from_config_needs_both_keys(tmp_path, log_transcripts, with_file, expected):
    # LoggingConfig itself rejects log_transcripts without transcript_file, so build that case loosely.
    path = str(tmp_path / "t.log") if with_file else None
    if log_transcripts and not with_file:
        cfg = type("Cfg", (), {"log_transcripts": True, "transcript_file": None, "transcript_retention_days": 7.0})()
    else:
        cfg = LoggingConfig(log_transcripts=log_transcripts, transcript_file=path)
    sink = TranscriptSink.from_config(cfg)
    assert (sink is not None) is expected
    if sink is not None:
        assert sink.path == Path(path) and sink.retention_days == 7.0
        sink.close()
