"""The live-captions page in a real headless Chromium (Debian's `chromium`, driven by Playwright, no
browser download), opened over https with a test certificate from the WebSocket door's listener.
Chromium's fake microphone plays a shipped recording; the page captures it through its AudioWorklet,
streams 16 kHz PCM over wss:// with the API key as the `token` subprotocol, and shows partials in
place, the level, the speech cue and the finals, whose words must be the recording's. A wrong key
is then shown as an error in words."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from clients.corpus import wer
from tests.helpers import REPO_ROOT
from tests.inprocess import InProcessAppliance
from tests.test_tls import make_self_signed

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RECORDING = REPO_ROOT / "hwtests/speech/sent_en_librispeech_dev-clean_1272-128104-0000.wav"
REFERENCE = "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"
KEY = "caption-key"
WER_BOUND = 0.3  # tiny.en streams this recording near 0; the bound catches a broken capture or resampler
LEAD_SEC, TRAIL_SEC = 0.5, 2.5  # the trailing silence lets the endpointer close the last utterance

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")


def fake_microphone(directory) -> str:
    """The recording with silence around it, as the 16-bit WAV Chromium's fake capture device plays
    (once: `%noloop`)."""
    audio, rate_hz = sf.read(str(RECORDING), dtype="int16")
    silence = lambda sec: np.zeros(int(sec * rate_hz), dtype=np.int16)  # noqa: E731
    path = directory / "microphone.wav"
    sf.write(str(path), np.concatenate([silence(LEAD_SEC), audio, silence(TRAIL_SEC)]), rate_hz, subtype="PCM_16")
    return f"{path}%noloop"


def test_the_captions_page_over_https_shows_the_recordings_words(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    certs = make_self_signed(tmp_path, "server")
    with InProcessAppliance("--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key), env={
            "STT_AUTH_CREATE_SESSION_AUTH_PROFILE": "api_key", "STT_AUTH_ALLOWED_API_KEYS": KEY}) as app, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_microphone(tmp_path)}"])
        try:
            # The test certificate is self-signed: the context accepts it, as a kiosk would trust it.
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"https://localhost:{app.websocket_port}/")
            assert page.title() == "Live captions"
            page.fill("#key", KEY)
            page.click("#start")
            seen = watch_until_final(page, timeout_sec=40)
            page.click("#stop")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('stream closed')",
                                   timeout=10_000)
            finals = page.inner_text("#finals")
            assert wer(REFERENCE, finals) <= WER_BOUND, finals
            assert seen["partial"], "no partial was shown in place"
            assert seen["level"], "the level meter never moved"
            assert seen["speech"], "the speech cue never showed speech"
            assert page.locator("#error").is_hidden(), page.inner_text("#error")

            page.fill("#key", "not-the-key")  # refused at the upgrade: the page says so in words
            page.click("#start")
            page.locator("#error").wait_for(state="visible", timeout=10_000)
            assert "refused the stream before it opened" in page.inner_text("#error")
        finally:
            browser.close()


def watch_until_final(page, timeout_sec: float) -> dict:
    """Poll the page while the recording plays: whether a partial, the level and the speech cue showed,
    until the finals hold most of the reference's words."""
    seen = {"partial": False, "level": False, "speech": False}
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        state = page.evaluate("""() => ({
            partial: document.getElementById('partial').textContent,
            level: document.getElementById('level-bar').style.width,
            cue: document.getElementById('speech').dataset.state,
            finals: document.getElementById('finals').innerText,
            error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
        })""")
        assert not state["error"], state["error"]
        seen["partial"] |= bool(state["partial"].strip())
        seen["level"] |= state["level"] not in ("", "0%")
        seen["speech"] |= state["cue"] == "speech"
        if state["finals"].strip() and wer(REFERENCE, state["finals"]) <= WER_BOUND:
            return seen
        time.sleep(0.1)
    return seen
