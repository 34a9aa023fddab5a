"""`python -m clients.realtime.mic`: stream a live microphone to the appliance and print partial and
final results as they arrive, with a level meter on stderr.

Owns what a live source adds to the file clients: choosing the input device, capturing mono int16
blocks (sounddevice/PortAudio), stopping on Ctrl-C or `--duration`, going on across the server's idle
timeouts (clients.keep_listening), and the terminal display (clients/realtime/display.py). Session
options, the `-c` YAML, settings resolution, the session, result formats and exit codes come from
clients/cli_common.py; the options a microphone has and a file does not, and their checks, are
declared here (`MIC`).
"""

from __future__ import annotations

import argparse
import math
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TextIO

import numpy as np

from clients.cli_common import (
    EXIT_OK,
    ClientKind,
    CliError,
    Option,
    ResultTally,
    build_parser,
    connect,
    exit_code,
    open_session,
    print_summary,
    resolve_settings,
)
from clients.realtime.display import SILENCE_DBFS as SILENCE_DBFS  # the display's names stay importable here
from clients.realtime.display import LiveDisplay as LiveDisplay
from clients.realtime.display import level_dbfs as level_dbfs
from clients.realtime.display import meter_bar as meter_bar
from clients.sdk import KeepListening, SttClient

# The appliance refuses chunks outside 8-48 kHz (ERR1003, appliance/audio.py); it resamples the rest.
SERVER_MIN_RATE_HZ = 8_000
SERVER_MAX_RATE_HZ = 48_000
FALLBACK_RATE_HZ = 16_000
# The server takes at most 100 chunks/s (max_chunks_per_sec); long blocks make the meter and partials lag.
MIN_BLOCK_MS, MAX_BLOCK_MS = 10.0, 1000.0
MAX_QUEUED_BLOCKS = 50  # ~5 s at 100 ms: the sender thread only falls that far behind when gRPC stalls
NO_AUDIO_TIMEOUT_SEC = 5.0  # a device that opens but delivers nothing (a stalled sound server)


MIC_OPTIONS = (
    Option("device", ("--device",), "str", None,
           "input device: its index or part of its name (see --list-devices; default: the system's input)"),
    Option("sample_rate", ("--sample-rate",), "float", None,
           "capture rate in Hz, 8000-48000 (default: the device's own rate, else 16000; the server resamples)"),
    Option("duration", ("--duration",), "float", None,
           "stop by itself after this many seconds of audio (default: run until Ctrl-C)"),
    Option("keep_listening", ("--no-keep-listening",), "bool", True,
           "exit with ERR1012 when the server ends the session after its idle timeout "
           "(server.session_timeout_sec without speech) instead of going on in a new session"),
)


def check_mic_settings(settings: dict[str, Any]) -> None:
    """The microphone's own checks, run by cli_common.resolve_settings."""
    if not MIN_BLOCK_MS <= settings["chunk_ms"] <= MAX_BLOCK_MS:
        raise CliError(f"chunk_ms must be {MIN_BLOCK_MS:g}-{MAX_BLOCK_MS:g} for a microphone, "
                       f"got {settings['chunk_ms']:g}")
    rate = settings["sample_rate"]
    if rate is not None and (rate != int(rate) or not SERVER_MIN_RATE_HZ <= rate <= SERVER_MAX_RATE_HZ):
        raise CliError(f"sample_rate must be a whole number of Hz in {SERVER_MIN_RATE_HZ}-{SERVER_MAX_RATE_HZ} "
                       f"(the server's range), got {rate:g}")
    if settings["duration"] is not None and settings["duration"] <= 0:
        raise CliError(f"duration must be > 0 seconds, got {settings['duration']:g}")


MIC = ClientKind(
    prog="clients.realtime.mic",
    description="Stream a microphone to the appliance and print the results; Ctrl-C stops and flushes "
                "the last utterance.",
    streaming=True,
    defaults={"attributes": {"partial": "true"}},  # live speech: show the hypothesis while it grows
    # audio_path has no meaning here, and a live source cannot be sent faster than it is spoken. The
    # -c YAML still accepts both keys and ignores them, so clients/config/file.yaml works here too.
    dropped_keys=("audio_path", "realtime"),
    extra_options=MIC_OPTIONS,
    check_settings=check_mic_settings,
)


# --- devices -----------------------------------------------------------------------------------

def import_sounddevice() -> ModuleType:
    """sounddevice, imported only when a device is needed; missing pieces become CliErrors."""
    try:
        import sounddevice
    except ImportError:
        raise CliError("the microphone client needs sounddevice: pip install sounddevice") from None
    except OSError as err:  # sounddevice raises OSError when the PortAudio library itself is missing
        raise CliError(f"sounddevice cannot load PortAudio ({err}): install it "
                       "(Debian/Ubuntu: apt-get install libportaudio2)") from err
    return sounddevice


def input_devices(sd: ModuleType) -> tuple[list[dict[str, Any]], int | None]:
    """(every device with input channels, each with its `index`; the default input's index or None)."""
    devices = [{**dict(info), "index": index} for index, info in enumerate(sd.query_devices())
               if info["max_input_channels"] > 0]
    default = sd.default.device[0]  # PortAudio's default input; -1 (paNoDevice) when there is none
    return devices, (default if isinstance(default, int) and default >= 0 else None)


def describe_device(device: Mapping[str, Any]) -> str:
    return (f"{device['index']:>3}  {device['name']}  ({device['default_samplerate']:g} Hz, "
            f"{device['max_input_channels']} ch)")


def choose_input_device(devices: Sequence[Mapping[str, Any]], wanted: str | None,
                        default_index: int | None) -> Mapping[str, Any]:
    """The device `wanted` names (an index, or part of a name, case-insensitive; an exact name wins
    over partial matches); without `wanted`, the default input, else the first one."""
    if not devices:
        raise CliError("no input device found: PortAudio sees no microphone (no sound card, or no "
                       "PulseAudio/PipeWire server reachable); see --list-devices")
    listing = "; ".join(f"{d['index']}: {d['name']}" for d in devices)
    if wanted is None:
        return next((d for d in devices if d["index"] == default_index), devices[0])
    text = str(wanted).strip()
    if text.isdigit():
        match = next((d for d in devices if d["index"] == int(text)), None)
        if match is None:
            raise CliError(f"no input device with index {text} (input devices: {listing})")
        return match
    matches = [d for d in devices if text.lower() in str(d["name"]).lower()]
    exact = [d for d in matches if str(d["name"]).lower() == text.lower()]
    if len(exact) == 1 or len(matches) == 1:
        return (exact or matches)[0]
    if not matches:
        raise CliError(f"no input device matches {text!r} (input devices: {listing})")
    names = ", ".join(f"{d['index']}: {d['name']}" for d in matches)
    raise CliError(f"device {text!r} matches several inputs ({names}); pass its index")


def capture_rate_hz(requested_hz: float | None, device_default_hz: float | None) -> int:
    """The rate asked for; else the device's own (no resampling in PortAudio or the sound server)
    when the server accepts it; else 16 kHz, the model's rate."""
    if requested_hz is not None:
        return int(requested_hz)
    native = round(device_default_hz or 0)
    return native if SERVER_MIN_RATE_HZ <= native <= SERVER_MAX_RATE_HZ else FALLBACK_RATE_HZ


def list_devices(sd: ModuleType, out: TextIO, err: TextIO) -> int:
    devices, default_index = input_devices(sd)
    if not devices:
        print("no input devices (PortAudio sees none: no sound card, or no PulseAudio/PipeWire "
              "server reachable)", file=err)
        return EXIT_OK
    print("input devices (* = default):", file=out)
    for device in devices:
        print(("*" if device["index"] == default_index else " ") + describe_device(device), file=out)
    return EXIT_OK


# --- capture -----------------------------------------------------------------------------------

class MicCapture:
    """A PortAudio input stream (mono int16, fixed blocks) feeding a bounded queue.

    PortAudio calls `_on_block` on its own realtime thread, which must never wait (a late callback
    loses audio at the device), so a full queue drops the block and counts it instead.
    """

    def __init__(self, sd: ModuleType, device_index: int, rate_hz: int, block_samples: int,
                 max_queued_blocks: int = MAX_QUEUED_BLOCKS):
        self._blocks: queue.Queue[bytes] = queue.Queue(maxsize=max_queued_blocks)
        self._lock = threading.Lock()  # stop() runs on the sender thread, close() on the main one
        self._closed = False
        self.dropped_blocks = 0
        self.input_overflows = 0
        self.samples_read = 0
        try:
            # Opening here, before any session exists, reports a bad device before the server is contacted.
            self._stream = sd.InputStream(device=device_index, samplerate=rate_hz, blocksize=block_samples,
                                          channels=1, dtype="int16", callback=self._on_block)
        except (sd.PortAudioError, ValueError) as err:
            raise CliError(f"cannot open input device {device_index} for mono 16-bit audio at {rate_hz} Hz: "
                           f"{err} (try another --sample-rate, or see --list-devices)") from err

    def _on_block(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.input_overflows += 1
        try:
            self._blocks.put_nowait(np.asarray(indata[:, 0], dtype="<i2").tobytes())  # a copy: PortAudio reuses indata
        except queue.Full:
            self.dropped_blocks += 1

    def start(self) -> None:
        self._stream.start()

    def next_block(self, timeout_sec: float) -> bytes | None:
        try:
            block = self._blocks.get(timeout=timeout_sec)
        except queue.Empty:
            return None
        self.samples_read += len(block) // 2
        return block

    def stop_and_drain(self) -> Iterator[bytes]:
        """Stop capturing; yield what was captured but not yet read (speech right before Ctrl-C)."""
        self.stop()
        while (block := self.next_block(timeout_sec=0)) is not None:
            yield block

    def stop(self) -> None:
        with self._lock:
            if not self._closed:
                self._stream.stop()  # waits for a callback in progress, so nothing lands after it

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._stream.close()


# --- the run -----------------------------------------------------------------------------------

def live_chunks(capture: MicCapture, stop: threading.Event, display: LiveDisplay,
                max_samples: int | None) -> Iterator[bytes]:
    """What send_chunks streams: blocks until `stop` is set or max_samples were read, then what was
    still queued. Returning half-closes the stream, so the server flushes the last utterance."""
    last_block_sec = time.monotonic()
    while not stop.is_set():
        block = capture.next_block(timeout_sec=0.1)
        if block is None:
            if time.monotonic() - last_block_sec > NO_AUDIO_TIMEOUT_SEC:
                raise CliError(f"the input device delivered no audio for {NO_AUDIO_TIMEOUT_SEC:g} s")
            continue
        last_block_sec = time.monotonic()
        display.level(level_dbfs(block))
        yield block
        if max_samples is not None and capture.samples_read >= max_samples:
            break
    display.message("stopping: waiting for the last final (Ctrl-C again to quit at once)")
    yield from capture.stop_and_drain()


@contextmanager
def sigint_stops(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C only sets `stop` (capture ends, the stream half-closes, the last final still
    arrives); a second one raises KeyboardInterrupt as usual. The handler does nothing else: it runs
    between any two bytecodes of the main thread, which may hold the display's lock."""
    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def transcribe_microphone(settings: dict[str, Any], capture: MicCapture, device_name: str, rate_hz: int,
                          display: LiveDisplay) -> dict[str, Any]:
    """Create the session, stream the microphone until stopped, show every result; return the summary."""
    stop = threading.Event()
    max_samples = None if settings["duration"] is None else math.ceil(settings["duration"] * rate_hz)
    tally = ResultTally()
    with connect(settings) as client:
        session = open_session(client, settings)
        start_sec = time.monotonic()
        with sigint_stops(stop):
            try:
                capture.start()
                # Tests wait for this line before they play audio: nothing said earlier is heard.
                display.message(f"listening: {device_name!r} at {rate_hz} Hz, session {session.session_id} "
                                "(Ctrl-C to stop)")
                chunks = live_chunks(capture, stop, display, max_samples)
                results = client.send_chunks(session, chunks, rate_hz, realtime=False,
                                             keep_listening=keep_listening(client, settings, display))
                for result in results:
                    display.result(result)
                    tally.add(result)
            finally:
                stop.set()  # ends live_chunks too when the stream failed first
                display.close()
        wall_sec = time.monotonic() - start_sec
    if capture.dropped_blocks or capture.input_overflows:
        display.message(f"warning: audio lost: {capture.dropped_blocks} blocks dropped (client too slow), "
                        f"{capture.input_overflows} input overflows (device)")
    return {
        **tally.summary(session, capture.samples_read / rate_hz, wall_sec, results),
        "dropped_blocks": capture.dropped_blocks,
        "input_overflows": capture.input_overflows,
        "reopens": results.reopens,  # sessions opened after idle timeouts
    }


def keep_listening(client: SttClient, settings: dict[str, Any], display: LiveDisplay) -> KeepListening | None:
    """A microphone outlives the server's idle timeout: the next session has the first one's options
    (a server-chosen id: the first one's may still be taken) and each reopen prints one line."""
    if not settings["keep_listening"]:
        return None
    next_settings = {**settings, "session_id": ""}
    return KeepListening(open_session=lambda: open_session(client, next_settings),
                         on_reopen=lambda reopen: display.message(reopen.notice()))


def run_live(kind: ClientKind, argv: Sequence[str] | None = None, *, out: TextIO | None = None,
             err: TextIO | None = None) -> int:
    """cli_common.run for a live microphone: parse argv, pick the device, stream it; the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser(kind)
    parser.add_argument("--list-devices", action="store_true",
                        help="list input devices with their default rate and channels, then exit")
    args = parser.parse_args(argv)
    if vars(args).pop("list_devices", False):
        return exit_code(lambda: list_devices(import_sounddevice(), out, err), err)
    return exit_code(lambda: stream_microphone(kind, args, out, err), err)


def stream_microphone(kind: ClientKind, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = resolve_settings(kind, args)
    sd = import_sounddevice()
    devices, default_index = input_devices(sd)
    device = choose_input_device(devices, settings["device"], default_index)
    rate_hz = capture_rate_hz(settings["sample_rate"], device["default_samplerate"])
    block_samples = max(1, round(rate_hz * settings["chunk_ms"] / 1000))
    capture = MicCapture(sd, device["index"], rate_hz, block_samples)
    display = LiveDisplay(out, err, json_lines=settings["json"], out_is_tty=out.isatty(),
                          err_is_tty=err.isatty())
    try:
        summary = transcribe_microphone(settings, capture, str(device["name"]), rate_hz, display)
    finally:
        capture.close()
    print_summary(summary, settings, out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return run_live(MIC, argv)


if __name__ == "__main__":
    sys.exit(main())
