"""A virtual microphone for tests, on a machine without a sound card.

A private PulseAudio daemon (its own socket, runtime and state dirs under a temp dir) with a null
sink `virt_speaker` whose monitor is remapped as the source `virt_mic`, both the defaults: whatever
`play()` sends into the sink is what PortAudio's `pulse` (and `default`) input device captures,
through ALSA's pulse plugin. Recipe and its quirks: shared/docs/PLATFORM.md, "A real microphone
without a sound card".

Debian packages: pulseaudio, pulseaudio-utils (pactl, paplay), libasound2-plugins (ALSA's pulse
plugin), libportaudio2 (for sounddevice).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

SINK = "virt_speaker"
SOURCE = "virt_mic"
PORTAUDIO_DEVICE = "pulse"  # the ALSA PCM that PortAudio lists; it records the server's default source
TOOLS = ("pulseaudio", "pactl", "paplay")
ALSA_PULSE_PLUGIN_GLOB = "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so"
# PulseAudio resamples twice here (the file's rate to the sink's 16 kHz, and that to the 44.1 kHz the
# `pulse` device captures at by default): with its best resampler rather than its default
# (speex-float-1) the virtual microphone adds as little as it can to what the test measures.
RESAMPLE_METHOD = "soxr-vhq"


def missing_requirements() -> list[str]:
    """What this machine lacks for a virtual microphone, each with how to get it; [] when complete."""
    missing = [f"{tool} (apt-get install {'pulseaudio' if tool == 'pulseaudio' else 'pulseaudio-utils'})"
               for tool in TOOLS if shutil.which(tool) is None]
    if not glob.glob(ALSA_PULSE_PLUGIN_GLOB):
        missing.append("ALSA's pulse plugin (apt-get install libasound2-plugins)")
    if importlib.util.find_spec("sounddevice") is None:
        missing.append("sounddevice (pip install sounddevice)")
    if not glob.glob("/usr/lib/*/libportaudio.so*") and not glob.glob("/usr/lib/libportaudio.so*"):
        missing.append("PortAudio (apt-get install libportaudio2)")
    return missing


class VirtualMic:
    """Start with `start()` (or `with`); `env` is what a client process needs to reach it."""

    def __init__(self, directory: Path, rate_hz: int = 16_000):
        self.directory = Path(directory)
        self.rate_hz = rate_hz
        self.socket = self.directory / "native"
        self.log_path = self.directory / "pulseaudio.log"
        self.process: subprocess.Popen | None = None
        runtime = self.directory / "runtime"
        self.env = {
            **os.environ,
            "PULSE_SERVER": f"unix:{self.socket}",
            # Private runtime, state and home: no clash with a desktop's daemon, nothing left behind.
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_RUNTIME_PATH": str(runtime / "pulse"),
            "PULSE_STATE_PATH": str(self.directory / "state"),
            "HOME": str(self.directory / "home"),
        }

    def start(self, timeout_sec: float = 20.0) -> VirtualMic:
        for name in ("runtime", "state", "home"):
            (self.directory / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self.directory / "daemon.pa"
        config.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            # norewinds=1: without it the first ~0.5 s of what is played never reaches the monitor.
            f"load-module module-null-sink sink_name={SINK} rate={self.rate_hz} channels=1 norewinds=1\n"
            f"load-module module-remap-source source_name={SOURCE} master={SINK}.monitor\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SOURCE}\n", encoding="utf-8")
        with self.log_path.open("wb") as log:
            # -n: none of the system's default.pa (no hardware detection, no D-Bus); --exit-idle-time=-1:
            # the daemon must not quit between tests when no client is connected.
            self.process = subprocess.Popen(
                ["pulseaudio", "-n", "-F", str(config), "--daemonize=no", "--exit-idle-time=-1",
                 "--use-pid-file=no", "--log-target=stderr", f"--resample-method={RESAMPLE_METHOD}"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_sec
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.process.returncode}:\n{self.log()}")
            if self.socket.exists() and self._pactl("info").returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"pulseaudio did not answer within {timeout_sec:g} s:\n{self.log()}")

    def _pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)

    def sources(self) -> str:
        return self._pactl("list", "short", "sources").stdout

    def play(self, wav: Path, timeout_sec: float = 120.0) -> None:
        """Play a file into the sink and return when it has been played."""
        subprocess.run(["paplay", f"--device={SINK}", str(wav)], env=self.env, check=True,
                       capture_output=True, timeout=timeout_sec)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> VirtualMic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
