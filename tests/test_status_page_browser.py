"""The status page in a real headless Chromium (Debian's `chromium`, driven by Playwright, no browser
download): while a stream runs, a person sees the session, the latency chart and the health."""

from __future__ import annotations

import shutil
import threading

import pytest

from clients.audio import load_pcm16
from clients.sdk import SttClient
from tests.inprocess import InProcessAppliance

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "page-token"

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")


def _stream(address: str, path, stop: threading.Event, errors: list) -> None:
    try:
        pcm16, rate_hz = load_pcm16(path)
        with SttClient(address) as client:
            while not stop.is_set():  # a live kiosk: one realtime stream after another
                session = client.create_session()
                for _ in client.stream_audio(session, pcm16, rate_hz, realtime=True):
                    if stop.is_set():
                        break
    except Exception as err:
        errors.append(err)


def test_status_page_shows_the_live_session_and_latency_chart(sentences, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    stop, errors = threading.Event(), []
    with InProcessAppliance(env={"STT_OBSERVABILITY_TOKEN": TOKEN, "STT_HTTP_RATE_LIMIT_RPS": "0"}) as app:
        streamer = threading.Thread(target=_stream, args=(app.address, sentences.path, stop, errors), daemon=True)
        streamer.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = browser.new_page(viewport={"width": 1000, "height": 1200})
                    page.goto(app.http_url + "/")
                    # The data needs the observability token: the page asks for it.
                    page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
                    page.fill("#token", TOKEN)
                    page.click("#token-form button")
                    # Locators poll without eval (the page's CSP forbids it, rightly).
                    page.locator("#streams tbody tr").first.wait_for(timeout=60_000)
                    page.locator("#latency-chart circle").first.wait_for(timeout=60_000)
                    assert page.inner_text("#health") == "ok"
                    assert "cpu-tiny.en" in page.inner_text("#streams")
                    assert "cpu-tiny.en" in page.inner_text("#models")
                    assert page.locator("#latency-chart circle").count() >= 1
                    assert "1 streaming" in page.inner_text("#sessions")
                    assert "cpu" in page.inner_text("#hardware")
                    screenshot = tmp_path / "status-page.png"
                    page.screenshot(path=str(screenshot), full_page=True)
                    assert screenshot.stat().st_size > 10_000
                finally:
                    browser.close()
        finally:
            stop.set()
            streamer.join(timeout=30)
    assert not errors, errors
