"""CreateSession admission through a real server: auth profiles, rate limits, per-caller caps."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request

import grpc
import pytest

from appliance.security.auth import auth_metadata, sign
from clients.audio import load_pcm16
from clients.sdk import SttClient, split_pcm16
from tests.conftest import expect_error, finals_text

SECRET = "kiosk-fleet-secret"


def test_signed_token_profile(server_with):
    server = server_with(auth_create_session_auth_profile="signed_token", auth_create_session_auth_secret=SECRET,
                         auth_create_session_auth_ttl_sec=30)
    good = auth_metadata(SECRET)
    with SttClient(server.address, metadata=good) as client:
        assert client.create_session().session_id
        replayed = expect_error(client.create_session)  # the same signature again
    with SttClient(server.address) as client:
        missing = expect_error(client.create_session)
    stale_ts = f"{time.time() - 600:.6f}"
    with SttClient(server.address, metadata=[("authorization", f"Bearer {stale_ts}:{sign(SECRET, stale_ts)}")]) as c:
        expired = expect_error(c.create_session)
    with SttClient(server.address, metadata=auth_metadata("wrong-secret")) as client:
        forged = expect_error(client.create_session)
    for error in (replayed, missing, expired, forged):
        assert error.code == "ERR1004" and error.status == grpc.StatusCode.UNAUTHENTICATED, error
    assert "replay" in replayed.message


def test_api_key_profile_and_per_key_cap(server_with):
    server = server_with(auth_create_session_auth_profile="api_key", server_max_sessions_per_api_key=1)
    with SttClient(server.address) as client:
        missing = expect_error(client.create_session)
        client.create_session(attributes={"api_key": "kiosk-1"})
        capped = expect_error(lambda: client.create_session(attributes={"api_key": "kiosk-1"}))
        client.create_session(attributes={"api_key": "kiosk-2"})  # another caller is not affected
    assert missing.code == "ERR1004"
    assert capped.code == "ERR1007" and "per_api_key" in capped.message


def test_create_session_rate_limit(server_with):
    server = server_with(server_create_session_rps=0.5, server_create_session_burst=2)
    with SttClient(server.address) as client:
        client.create_session()
        client.create_session()
        limited = expect_error(client.create_session)
    assert limited.code == "ERR1006" and limited.status == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_audio_byte_rate_limit_refuses_realtime_and_paces_batch_uploads(server_with, sentences):
    server = server_with(server_max_audio_bytes_per_sec=32_000, server_max_audio_bytes_per_sec_burst=64_000,
                         server_max_audio_bytes_per_sec_batch=200_000,
                         server_max_audio_bytes_per_sec_burst_batch=64_000)
    pcm16, rate_hz = load_pcm16(sentences.path)
    with SttClient(server.address) as client:
        session = client.create_session()
        limited = expect_error(lambda: list(client.stream_audio(session, pcm16, rate_hz, realtime=False)))
        batch = client.create_session(attributes={"upload_mode": "batch"})
        started = time.monotonic()
        results = list(client.send_chunks(batch, split_pcm16(pcm16, rate_hz, 1000), rate_hz, realtime=False))
        elapsed_sec = time.monotonic() - started
    assert limited.code == "ERR1006"
    assert len([r for r in results if r.is_final]) == 3 and finals_text(results)
    # Paced, not refused: the bytes past the burst arrived at the batch rate.
    assert elapsed_sec >= 0.8 * (len(pcm16) - 64_000 - 32_000) / 200_000, elapsed_sec


def test_a_batch_upload_past_its_size_cap_is_err1013(server_with, sentences):
    server = server_with(server_max_batch_upload_bytes=100_000)
    pcm16, rate_hz = load_pcm16(sentences.path)
    assert len(pcm16) > 100_000
    with SttClient(server.address) as client:
        batch = client.create_session(attributes={"upload_mode": "batch"})
        error = expect_error(lambda: list(client.send_chunks(batch, split_pcm16(pcm16, rate_hz, 1000), rate_hz,
                                                             realtime=False)))
        realtime = client.create_session()  # the cap is the batch session's alone
        results = list(client.send_chunks(realtime, split_pcm16(pcm16, rate_hz, 1000), rate_hz, realtime=False))
    assert error.code == "ERR1013" and "max_batch_upload_bytes" in error.message
    assert len([r for r in results if r.is_final]) == 3


def test_realtime_client_signs_with_its_secret(server_with, alsa_prompts):
    import json
    import subprocess
    import sys

    server = server_with(auth_create_session_auth_profile="signed_token", auth_create_session_auth_secret=SECRET)
    path = next(iter(alsa_prompts))
    base = [sys.executable, "-m", "clients.realtime.file", str(path), "--server", server.address, "--no-realtime",
            "--json"]
    signed = subprocess.run([*base, "--signed-token-secret", SECRET], capture_output=True, text=True, timeout=120)
    unsigned = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert signed.returncode == 0, signed.stderr
    assert any(json.loads(line)["is_final"] for line in signed.stdout.splitlines())
    assert unsigned.returncode == 2 and "ERR1004" in unsigned.stderr
    # The OpenAI-compatible upload cannot carry a signature: refused up front, saying why.
    upload = urllib.request.Request(
        server.openai_url + "/audio/transcriptions", method="POST", data=b"--b\r\n--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b", "Authorization": "Bearer kiosk"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(upload, timeout=30)
    body = json.loads(refused.value.read())
    assert refused.value.code == 401 and body["code"] == "ERR1004" and "signed tokens" in body["message"]


def test_only_listed_api_keys_pass_inline_hashed_or_plain_in_a_file(server_with, tmp_path):
    keys_file = tmp_path / "keys.txt"
    digest = hashlib.sha256(b"kiosk-from-file").hexdigest()
    keys_file.write_text(f"# kiosks\nsha256:{digest}\n\nlobby-key\n")
    server = server_with(auth_create_session_auth_profile="api_key", auth_allowed_api_keys="kiosk-inline",
                         auth_allowed_api_keys_file=str(keys_file))
    with SttClient(server.address) as client:
        for key in ("kiosk-inline", "kiosk-from-file", "lobby-key"):  # inline, hashed in a file, plain in a file
            client.create_session(attributes={"api_key": key})
        unknown = expect_error(lambda: client.create_session(attributes={"api_key": "made-up"}))
    assert unknown.code == "ERR1004" and "unknown api_key" in unknown.message
    # rotating listed keys against the client IP's bucket: tests/adversarial/test_create_session_abuse.py
