"""The microphone client's terminal display: a level meter and the growing partial redrawn in place
on a terminal, plain lines when the output is a log (clients/realtime/mic.py feeds it)."""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable
from typing import TextIO

import numpy as np

from clients.cli_common import format_result, result_line
from clients.sdk import TimedResult

SILENCE_DBFS = -90.0  # one LSB of int16 is -90.3 dBFS: quieter than that is digital silence
METER_FLOOR_DBFS = -60.0  # the bar's left end; room noise of a real microphone sits around -60..-50
METER_WIDTH = 30
METER_INTERVAL_SEC = 0.1  # redraw rate of the in-place meter on a terminal
PLAIN_LEVEL_INTERVAL_SEC = 1.0  # one "level" line per second when stderr is a log, not a terminal
CLEAR_LINE = "\r\x1b[K"  # carriage return + erase to end of line


def level_dbfs(pcm16: bytes) -> float:
    """RMS level of int16 samples in dB relative to full scale (a full-scale square wave is 0)."""
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(samples * samples)))
    return max(SILENCE_DBFS, 20 * math.log10(rms / 32768.0)) if rms > 0 else SILENCE_DBFS


def meter_bar(dbfs: float) -> str:
    filled = round(METER_WIDTH * (min(0.0, max(METER_FLOOR_DBFS, dbfs)) - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS)
    return f"mic {dbfs:6.1f} dBFS [{'#' * filled}{'-' * (METER_WIDTH - filled)}]"


class LiveDisplay:
    """Results on `out`, the level meter and messages on `err`.

    On a terminal the meter and the growing partial share one status line, redrawn in place; finals,
    JSON lines and messages are printed above it on lines of their own. A stream that is not a
    terminal gets plain lines only: partials and finals as the file client prints them, and the
    loudest level of each second. Thread-safe: the meter is fed by the sender thread.
    """

    def __init__(self, out: TextIO, err: TextIO, *, json_lines: bool, out_is_tty: bool, err_is_tty: bool,
                 clock: Callable[[], float] = time.monotonic,
                 columns: Callable[[], int] = lambda: shutil.get_terminal_size().columns):
        self._out, self._err = out, err
        self._json = json_lines
        self._partials_in_place = out_is_tty and not json_lines
        self._meter_in_place = err_is_tty
        self._clock = clock
        self._columns = columns
        self._lock = threading.Lock()
        self._partial = ""
        self._meter = ""
        self._loudest_dbfs = SILENCE_DBFS  # since the level was last shown
        self._level_shown_sec = -math.inf

    def level(self, dbfs: float) -> None:
        with self._lock:
            self._loudest_dbfs = max(self._loudest_dbfs, dbfs)
            now = self._clock()
            interval = METER_INTERVAL_SEC if self._meter_in_place else PLAIN_LEVEL_INTERVAL_SEC
            if now - self._level_shown_sec < interval:
                return
            self._level_shown_sec = now
            if self._meter_in_place:
                self._meter = meter_bar(self._loudest_dbfs)
                self._redraw()
            else:
                self._print_line(self._err, f"level {self._loudest_dbfs:.1f} dBFS")
            self._loudest_dbfs = SILENCE_DBFS

    def result(self, result: TimedResult) -> None:
        with self._lock:
            if result.is_final or result.speech_event or not self._partials_in_place:
                self._partial = ""
                self._print_line(self._out, result_line(result, self._json))
            else:
                self._partial = format_result(result)
                self._redraw()

    def message(self, text: str) -> None:
        with self._lock:
            self._print_line(self._err, text)

    def close(self) -> None:
        """Leave the terminal on a clean line (the shell prompt follows)."""
        with self._lock:
            self._partial = self._meter = ""
            self._clear()

    def _print_line(self, stream: TextIO, text: str) -> None:
        self._clear()
        stream.write(text + "\n")
        stream.flush()
        self._redraw()

    def _clear(self) -> None:
        for stream, in_place in ((self._err, self._meter_in_place), (self._out, self._partials_in_place)):
            if in_place:
                stream.write(CLEAR_LINE)
                stream.flush()

    def _redraw(self) -> None:
        # Both streams usually are the same terminal: the meter, then the partial, on one line. It must
        # stay shorter than the terminal: a wrapped line cannot be taken back with a carriage return.
        self._clear()
        room = self._columns() - 1
        if self._meter:
            self._err.write(self._meter)
            self._err.flush()
            room -= len(self._meter) + 2
        if self._partial and room > 10:
            text = self._partial if len(self._partial) <= room else "..." + self._partial[-(room - 3):]
            self._out.write(("  " if self._meter else "") + text)
            self._out.flush()
