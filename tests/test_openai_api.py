"""The OpenAI-compatible transcription API, driven by the `openai` Python client (pointed at the
appliance's client plane, openai.port, as a script or notebook would be) against a real appliance process: every
response format, every accepted container, the model list, the api keys; and with raw HTTP the
refusals a broken or hostile uploader gets, each with its code, with the appliance serving on."""

from __future__ import annotations

import contextlib
import http.client
import io
import itertools
import json
import re
import threading
import time
import urllib.request
import uuid

import numpy as np
import openai
import pytest
import soundfile as sf
from openai import OpenAI

from appliance.errors import ApplianceError
from appliance.uploads import DecodedUpload
from clients.corpus import wer
from tests.inprocess import InProcessAppliance
from tests.media import encode
from tests.speech import COMMAND, JFK, JFK_TEXT

API_KEY = "kiosk-key"
ADMIN_TOKEN = "admin-token"
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
WER_BOUND = 0.25  # tiny.en on these recordings is near 0; this only catches a broken path


@pytest.fixture(scope="module")
def server(request) -> InProcessAppliance:
    """Keys required (one listed), one upload at a time, a 4 MiB body cap, no HTTP rate limit."""
    app = InProcessAppliance(env={
        "STT_AUTH_CREATE_SESSION_AUTH_PROFILE": "api_key", "STT_AUTH_ALLOWED_API_KEYS": API_KEY,
        "STT_OPENAI_MAX_CONCURRENT_REQUESTS": "1", "STT_OPENAI_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "STT_HTTP_RATE_LIMIT_RPS": "0", "STT_ADMIN_TOKEN": ADMIN_TOKEN, "STT_OPENAI_PORT": "0"})
    request.addfinalizer(app.stop)
    return app.start()


def openai_port(server: InProcessAppliance) -> int:
    """The client plane's port (openai.port; 0 here: the one it bound)."""
    return server.openai_port


def openai_url(server: InProcessAppliance) -> str:
    return f"http://127.0.0.1:{openai_port(server)}/v1"


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=openai_url(server), api_key=API_KEY, max_retries=0, timeout=120)


def encoded(path, container: str, subtype: str, rate_hz: int, channels: int) -> bytes:
    audio, source_rate = sf.read(str(path), dtype="float32")
    samples = np.interp(np.arange(0, len(audio), source_rate / rate_hz), np.arange(len(audio)), audio)
    out = io.BytesIO()
    sf.write(out, np.repeat(samples[:, None], channels, axis=1), rate_hz, format=container, subtype=subtype)
    return out.getvalue()


def cue_times(subtitles: str, mark: str) -> list[tuple[float, float]]:
    stamp = rf"(\d\d):(\d\d):(\d\d){re.escape(mark)}(\d\d\d)"
    times = []
    for m in re.finditer(stamp + " --> " + stamp, subtitles):
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, m.groups())
        times.append((h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000))
    return times


def cue_text(subtitles: str) -> str:
    lines = [line for line in subtitles.splitlines()
             if line and "-->" not in line and not line.isdigit() and line != "WEBVTT"]
    return " ".join(lines)


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_each_response_format_carries_the_speech(client, response_format):
    with JFK.open("rb") as f:
        answer = client.audio.transcriptions.create(model="whisper-1", file=f, response_format=response_format)
    if response_format == "json":
        text = answer.text
        assert answer.usage.seconds == 11  # whole seconds of audio, as OpenAI bills
    elif response_format == "verbose_json":
        text = answer.text
        assert answer.language == "english" and answer.duration == pytest.approx(11.0, abs=0.01)
        ends = [0.0] + [s.end for s in answer.segments]
        assert all(0 <= s.start < s.end <= 11.5 and s.start >= ends[i] - 0.01 for i, s in enumerate(answer.segments))
        assert " ".join(s.text for s in answer.segments) == text
    elif response_format == "text":
        assert isinstance(answer, str) and answer.endswith("\n")
        text = answer
    else:
        mark = "," if response_format == "srt" else "."
        assert answer.startswith("1\n" if response_format == "srt" else "WEBVTT\n\n")
        times = cue_times(answer, mark)
        assert times and all(0 <= a < b <= 11.5 for a, b in times)
        assert all(b1 <= a2 + 0.01 for (_, b1), (a2, _) in itertools.pairwise(times))
        text = cue_text(answer)
    assert wer(JFK_TEXT, text) <= WER_BOUND, text


def test_word_timestamps_cover_the_text_in_order(client):
    with JFK.open("rb") as f:
        answer = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                    timestamp_granularities=["word", "segment"])
    words = answer.words
    assert " ".join(w.word for w in words) == answer.text and answer.segments
    assert all(0 <= w.start <= w.end <= 11.5 for w in words)
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    ask = next(w for w in words if w.word.lower().startswith("ask"))  # "ask not" is said at about 3.4 s
    assert 2.5 < ask.start < 4.5, ask


@pytest.mark.parametrize(("container", "subtype", "rate_hz", "channels"), [
    ("FLAC", "PCM_24", 44100, 2), ("OGG", "OPUS", 48000, 1), ("MP3", "MPEG_LAYER_III", 22050, 2),
    ("WAV", "PCM_U8", 8000, 1)])
def test_every_accepted_container_is_decoded_and_resampled(client, container, subtype, rate_hz, channels):
    upload = encoded(COMMAND, container, subtype, rate_hz, channels)
    answer = client.audio.transcriptions.create(model="whisper-1", file=(f"cmd.{container.lower()}", upload),
                                                language="en", temperature=0.0, prompt="Robot commands:\nstop.")
    assert wer("go forward ten meters", answer.text) <= 0.25, answer.text


@pytest.fixture(scope="module")
def command_wav_text(client) -> str:
    with COMMAND.open("rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f, language="en", temperature=0.0).text


@pytest.mark.parametrize("name", ["webm", "mp4", "m4a", "mp3"])
def test_browser_and_phone_recordings_read_as_the_wav_does(client, command_wav_text, name):
    """Opus in WebM (Chrome, Firefox), AAC in MP4 and M4A (Safari, phones), MP3: encoded here by
    FFmpeg from the shipped recording, each transcribed as the WAV of the same speech is."""
    audio, rate_hz = sf.read(str(COMMAND), dtype="float32")
    upload = encode(audio, rate_hz, name)
    answer = client.audio.transcriptions.create(model="whisper-1", file=(f"recording.{name}", upload),
                                                language="en", temperature=0.0)
    assert wer(command_wav_text, answer.text) <= WER_BOUND, (answer.text, command_wav_text)
    assert wer("go forward ten meters", answer.text) <= WER_BOUND, answer.text


@pytest.mark.parametrize("name", ["webm", "mp4", "m4a", "mp3"])
def test_a_broken_recording_of_each_container_is_refused_with_err1003(server, name):
    audio, rate_hz = sf.read(str(COMMAND), dtype="float32")
    whole = encode(audio, rate_hz, name)
    # MP4's index comes last: half a file has none. WebM and MP3 keep their header, then noise.
    broken = whole[:len(whole) // 2] if name in ("mp4", "m4a") else whole[:8] + bytes(range(256)) * 16
    status, _, body = post(server, {"file": broken})
    assert (status, body["code"]) == (400, "ERR1003"), body


def test_models_are_listed_in_openais_shape_and_an_unknown_one_is_404(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["cpu-tiny.en"] and models[0].owned_by == "stt-appliance"
    assert client.models.retrieve("cpu-tiny.en").created == models[0].created > 1.6e9
    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve("gpt-4o")
    assert refused.value.code == "ERR1011"
    with pytest.raises(openai.NotFoundError) as refused, COMMAND.open("rb") as f:
        client.audio.transcriptions.create(model="large-v3", file=f)
    assert refused.value.code == "ERR1011" and "not loaded" in refused.value.message


def test_the_bearer_is_the_sessions_api_key(server):
    stranger = OpenAI(base_url=openai_url(server), api_key="made-up", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused, COMMAND.open("rb") as f:
        stranger.audio.transcriptions.create(model="whisper-1", file=f)
    assert refused.value.code == "ERR1004" and "unknown api_key" in refused.value.message
    for authorization, says in (("", "missing api_key"), ("Basic a2V5Og==", "Bearer")):
        status, headers, body = post(server, {"file": COMMAND.read_bytes()}, headers={"Authorization": authorization})
        assert (status, body["code"]) == (401, "ERR1004") and says in body["message"], body
        assert headers["www-authenticate"] == "Bearer"


def test_the_operator_port_names_the_port_the_openai_api_moved_to(server):
    """/v1 left server.metrics_port: a client still pointed there is told where to go, in OpenAI's shape."""
    moved = OpenAI(base_url=server.http_url + "/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as refused:
        moved.models.list()
    assert refused.value.code == "ERR1018" and f"port {openai_port(server)} (openai.port)" in refused.value.message


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client marks translations.create deprecated
def test_translation_needs_a_multilingual_model(client):
    with pytest.raises(openai.BadRequestError) as refused, COMMAND.open("rb") as f:
        client.audio.translations.create(model="whisper-1", file=f)
    assert refused.value.code == "ERR1010" and "multilingual" in refused.value.message


# --- refusals, with raw HTTP ---------------------------------------------------------------------


Fields = dict[str, bytes | str] | list[tuple[str, bytes | str]]


def post(server, fields: Fields, *, content_type: str | None = None, body: bytes | None = None,
         headers: dict | None = None, path: str = "/v1/audio/transcriptions") -> tuple[int, dict, dict]:
    boundary = uuid.uuid4().hex
    if body is None:
        parts = []
        for name, value in (fields.items() if isinstance(fields, dict) else fields):
            disposition = f'form-data; name="{name}"' + ('; filename="upload"' if isinstance(value, bytes) else "")
            data = value if isinstance(value, bytes) else value.encode()
            parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection("127.0.0.1", openai_port(server), timeout=60)
    try:
        connection.request("POST", path, body=body, headers={
            "Content-Type": content_type or f"multipart/form-data; boundary={boundary}",
            "Authorization": f"Bearer {API_KEY}", **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def aiff() -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(8000, dtype=np.float32), 16000, format="AIFF")
    return out.getvalue()


REFUSALS = {
    "not audio": ({"file": b"%PDF-1.7 definitely not audio" * 10}, 400, "ERR1003", "not audio"),
    "another container": ({"file": aiff()}, 400, "ERR1003", "AIFF"),
    "empty file": ({"file": b""}, 400, "ERR1003", "empty"),
    "no file": ({"model": "whisper-1"}, 400, "ERR1003", "no 'file' part"),
    "unknown field": ({"file": b"x", "stream": "true"}, 400, "ERR1010", "unknown form field"),
    "field twice": ([("file", b"x"), ("model", "a"), ("model", "b")], 400, "ERR1010", "given twice"),
    "bad format": ({"file": b"x", "response_format": "docx"}, 400, "ERR1010", "response_format"),
    "bad temperature": ({"file": b"x", "temperature": "hot"}, 400, "ERR1010", "temperature"),
    "granularity without verbose_json": ({"file": b"x", "timestamp_granularities[]": "word"}, 400, "ERR1010",
                                         "verbose_json"),
    "made-up granularity": ({"file": b"x", "response_format": "verbose_json", "timestamp_granularities[]": "char"},
                            400, "ERR1010", "char"),
    "made-up language": ({"file": JFK.read_bytes(), "language": "xx"}, 400, "ERR1010", "language"),
    "long prompt": ({"file": b"x", "prompt": "p" * 2000}, 400, "ERR1010", "prompt"),
    "control characters": ({"file": b"x", "language": "e\x00n"}, 400, "ERR1010", "control characters"),
    "field over its part buffer": ({"file": b"x", "model": "m" * 70_000}, 400, "ERR1010", ""),
    "not UTF-8": ({"file": b"x", "model": b"\xff\xfe"}, 400, "ERR1010", "UTF-8"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_bad_upload_is_refused_with_its_code(server, case):
    fields, status, code, says = REFUSALS[case]
    got, _, body = post(server, fields)
    assert (got, body["code"]) == (status, code), body
    assert says in body["message"] and body["error"]["code"] == code  # OpenAI's error object too


def damaged_mp3s(count: int) -> list[bytes]:
    audio, rate_hz = sf.read(str(JFK), dtype="float32")
    out = io.BytesIO()
    sf.write(out, audio, rate_hz, format="MP3")
    rng = np.random.default_rng(7)
    files = []
    for _ in range(count):
        data = bytearray(out.getvalue())
        for at in rng.integers(2000, len(data), 40):
            data[at] = int(rng.integers(256))
        files.append(bytes(data))
    return files


def test_damaged_mp3s_are_decoded_in_a_child_whose_codec_noise_stays_out_of_the_log(server, capfd):
    files = damaged_mp3s(4)
    for data in files:  # the same files decoded in this process: mpg123 complains on stderr
        with contextlib.suppress(ApplianceError):
            list(DecodedUpload(data).blocks())
    assert "MPEG" in capfd.readouterr().err
    for data in files:
        status, _, body = post(server, {"file": data, "response_format": "json"})
        assert status == 200 or (status, body["code"]) == (400, "ERR1003"), body
    log = server.log()
    assert "MPEG" not in log and "mpg123" not in log and "Traceback" not in log


def test_wrong_content_types_are_refused(server):
    status, _, body = post(server, {}, content_type="application/json", body=b'{"file": "x"}')
    assert (status, body["code"]) == (415, "ERR1010") and "multipart/form-data" in body["message"]
    status, _, body = post(server, {}, content_type="multipart/form-data; boundary=zz", body=b"--zz\r\ngarbage")
    assert (status, body["code"]) == (400, "ERR1010")


def test_a_body_over_the_cap_is_refused_before_it_is_sent(server):
    """Headers only: the 413 must come back without the server waiting for the body."""
    connection = http.client.HTTPConnection("127.0.0.1", openai_port(server), timeout=10)
    try:
        connection.putrequest("POST", "/v1/audio/transcriptions")
        connection.putheader("Content-Type", "multipart/form-data; boundary=zz")
        connection.putheader("Content-Length", str(MAX_UPLOAD_BYTES + 1))
        connection.endheaders()
        started = time.monotonic()
        response = connection.getresponse()
        assert response.status == 413 and time.monotonic() - started < 5
    finally:
        connection.close()
    with COMMAND.open("rb") as f:  # and the next upload is served
        status, _, body = post(server, {"file": f.read(), "model": "whisper-1"})
    assert status == 200 and "forward" in body["text"].lower()


def test_uploads_past_the_limit_are_turned_away_while_health_and_the_page_answer(server, client):
    """One upload at a time here: a second gets ERR1007 with Retry-After, /health stays quick, and
    the running upload shows on the status data as an openai stream."""
    long_audio = np.concatenate([sf.read(str(JFK), dtype="float32")[0]] * 6)  # 66 s
    upload = io.BytesIO()
    sf.write(upload, long_audio, 16000, format="WAV")
    results: dict = {}

    def first() -> None:
        results["answer"] = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", upload.getvalue()))

    runner = threading.Thread(target=first)
    runner.start()
    try:
        protocols: list[str] = []
        deadline = time.monotonic() + 30
        while not protocols and time.monotonic() < deadline:
            with urllib.request.urlopen(server.http_url + "/metrics.json", timeout=5) as r:
                protocols = [s["protocol"] for s in json.loads(r.read())["streams"]]
            time.sleep(0.05)
        assert protocols == ["openai"]
        status, headers, body = post(server, {"file": COMMAND.read_bytes()})
        assert (status, body["code"]) == (503, "ERR1007") and int(headers["retry-after"]) >= 1
        started = time.monotonic()
        with urllib.request.urlopen(server.http_url + "/health", timeout=5) as r:
            assert r.status == 200
        assert time.monotonic() - started < 1.0
    finally:
        runner.join(timeout=120)
    assert wer(" ".join([JFK_TEXT] * 6), results["answer"].text) <= WER_BOUND
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=5) as r:
        assert re.search(r'stt_sessions_by_protocol_total\{protocol="openai"\} [1-9]', r.read().decode())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_multilingual_model_loaded_at_run_time_translates(server, client):
    """Last in the module: it adds a model. English speech through task=translate stays English."""
    load = urllib.request.Request(server.http_url + "/admin/load_model", method="POST",
                                  data=json.dumps({"model_size": "base", "model_id": "cpu-base"}).encode(),
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                           "Content-Type": "application/json"})
    with urllib.request.urlopen(load, timeout=120) as r:
        assert json.loads(r.read())["model"]["model_id"] == "cpu-base"
    assert {m.id for m in client.models.list().data} == {"cpu-tiny.en", "cpu-base"}
    with JFK.open("rb") as f:
        answer = client.audio.translations.create(model="cpu-base", file=f, response_format="verbose_json")
    assert answer.task == "translate" and answer.language == "english"
    assert wer(JFK_TEXT, answer.text) <= WER_BOUND, answer.text
