"""Uploaded files are decoded in a child process, not in the appliance.

libsndfile and the codecs under it (mpg123, vorbis, opus, FLAC), and FFmpeg's demuxers and decoders
for WebM and MP4 (PyAV), are native code fed bytes from the network. In a child, a file that crashes
or wedges a codec ends that child and that upload only, and what a codec prints about a damaged
stream (mpg123 writes a line to stderr for every bad frame, thousands for a hostile file) goes to
/dev/null instead of the appliance's log.

Children come from a forkserver that has `appliance.uploads` imported already, so one costs a fork
(milliseconds), not an interpreter start. The child sends the format, then 16 kHz pcm16 blocks, then
the end, over a pipe whose small buffer paces it to the stream that consumes them. Messages are a
tag byte and raw bytes or JSON, never pickles: a child a codec exploit took over must not be able
to run code in the appliance by what it sends back.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection

from appliance.audio import MODEL_SAMPLE_RATE_HZ
from appliance.errors import ERROR_TABLE, ApplianceError
from appliance.uploads import DecodedUpload, UploadFormat

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["appliance.uploads"])
_start_lock = threading.Lock()
FIRST_MESSAGE_SEC = 30.0  # the child's probe of the header (plus the forkserver's own start, once)
BLOCK_SEC = 60.0  # one 5 s block of a healthy file decodes in milliseconds
STOP_SEC = 2.0
FORMAT, AUDIO, END, ERROR = b"F", b"A", b"E", b"X"


def _send(conn: Connection, tag: bytes, payload: dict) -> None:
    conn.send_bytes(tag + json.dumps(payload).encode())


def _decode_in_child(conn: Connection, data: bytes, max_duration_sec: float | None) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        upload = DecodedUpload(data, max_duration_sec=max_duration_sec)
        _send(conn, FORMAT, dataclasses.asdict(upload.format))
        for block in upload.blocks():
            conn.send_bytes(AUDIO + block)
        _send(conn, END, {"samples": upload.samples_out})
    except ApplianceError as err:
        _send(conn, ERROR, {"code": err.code, "message": err.message})
    finally:
        conn.close()


class SandboxedUpload:
    """DecodedUpload's interface (format, blocks(), decoded_sec), decoded by a child process."""

    def __init__(self, data: bytes, *, max_duration_sec: float | None = None):
        if not data:
            raise ApplianceError("ERR1003", "the uploaded file is empty")
        self._conn, child_conn = _context.Pipe(duplex=False)
        with _start_lock:  # the first upload starts the forkserver; two at once would race to
            self._process = _context.Process(target=_decode_in_child, args=(child_conn, data, max_duration_sec),
                                             name="upload-decoder", daemon=True)
            self._process.start()
        child_conn.close()
        self.samples_out = 0
        try:
            tag, payload = self._receive(FIRST_MESSAGE_SEC)
            if tag != FORMAT:
                raise ApplianceError("ERR1016", f"the upload decoder answered {tag!r} before the format")
            try:
                self.format = UploadFormat(**json.loads(payload))
            except (TypeError, ValueError):
                raise ApplianceError("ERR1016", "the upload decoder sent a malformed format") from None
        except BaseException:
            self.close()
            raise

    @property
    def decoded_sec(self) -> float:
        return self.samples_out / MODEL_SAMPLE_RATE_HZ

    def blocks(self) -> Iterator[bytes]:
        try:
            while True:
                tag, payload = self._receive(BLOCK_SEC)
                if tag == AUDIO:
                    self.samples_out += len(payload) // 2
                    yield payload
                elif tag == END:
                    return
                else:
                    raise ApplianceError("ERR1016", f"the upload decoder sent {tag!r} amid the audio")
        finally:
            self.close()

    def close(self) -> None:
        """Stop the child (done, refused, or its upload abandoned) and reap it."""
        self._conn.close()
        self._process.join(STOP_SEC)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(STOP_SEC)

    def _receive(self, timeout_sec: float) -> tuple[bytes, bytes]:
        """(tag, payload) of the child's next message; its error, or its death, as a coded refusal."""
        if not self._conn.poll(timeout_sec):
            raise ApplianceError("ERR1003", f"the audio decoder made no progress on this file in {timeout_sec:g} s")
        try:
            raw = self._conn.recv_bytes()
        except (EOFError, OSError):
            self._process.join(STOP_SEC)
            raise ApplianceError("ERR1003", "the audio decoder stopped on this file (exit code "
                                 f"{self._process.exitcode}); it is damaged or not what its header says") from None
        tag, payload = raw[:1], raw[1:]
        if tag == ERROR:
            refusal = json.loads(payload)
            code = refusal.get("code") if refusal.get("code") in ERROR_TABLE else "ERR1003"
            raise ApplianceError(code, str(refusal.get("message", ""))[:300])
        return tag, payload
