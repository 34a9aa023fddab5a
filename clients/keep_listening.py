"""Always listening: one stream of live audio that outlives the server's idle timeout.

The server ends a stream that has heard no speech for `server.session_timeout_sec` with ERR1012:
its safety net against forgotten streams, which stays. A source meant to listen for days (a kiosk
microphone) passes `KeepListening` to `SttClient.send_chunks`; when its stream ends with ERR1012,
the SDK opens the next session (`open_session`), streams the audio from the seam into it, and the
results go on as one stream: positions on the first session's timeline, utterance indexes counting
on, one `Reopen` notice per new session.

The seam is the old session's latest resume point, the server's own word that it needs no audio
before it (every final carries one; a resumable session also gets one every 2 s of audio). The
audio tape (clients.resume.AudioTape) keeps everything from there on, so the audio in flight when
the error came, and anything said at that moment, is heard by the next session. CreateSession does
not tell the client the timeout (the API stays as it is), so the next session is opened when the
old one ends rather than just before: the source keeps filling the tape meanwhile, and the new
stream catches up at once, which costs a CreateSession round trip of latency and no audio.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from appliance.api import stt_pb2
from clients.results import TimedResult, Word

IDLE_TIMEOUT_CODE = "ERR1012"
DEFAULT_SEAM_KEEP_SEC = 10.0


@dataclass(frozen=True)
class Reopen:
    """One new session after an idle timeout: what the `on_reopen` callback gets."""

    previous_session_id: str
    session_id: str
    seam_sec: float  # on the stream's timeline: the new session hears the audio from here on
    reopens: int  # sessions opened after idle timeouts so far, this one included
    reason: str  # the server's message with the ERR1012

    def notice(self) -> str:
        """The one line a client shows."""
        return (f"idle timeout: session {self.previous_session_id} heard no speech ({IDLE_TIMEOUT_CODE}); "
                f"listening on in session {self.session_id} from {self.seam_sec:.2f} s (reopen {self.reopens})")


@dataclass(frozen=True)
class KeepListening:
    """`open_session`: opens the next session, usually `lambda: client.create_session(...)` with the
    first one's options (it may raise SttError, which ends the stream). `on_reopen`: called on the
    thread iterating the results, before the new session's first result. `seam_keep_sec`: audio kept
    for the seam when the client does not resume (with resume on, the tape already keeps it)."""

    open_session: Callable[[], stt_pb2.SessionResponse]
    on_reopen: Callable[[Reopen], None] | None = None
    seam_keep_sec: float = DEFAULT_SEAM_KEEP_SEC

    def __post_init__(self) -> None:
        if not callable(self.open_session):
            raise TypeError("KeepListening.open_session must be callable")
        if not 0 < self.seam_keep_sec <= 600:
            raise ValueError(f"seam_keep_sec must be in (0, 600], got {self.seam_keep_sec}")


def reopens_after(code: str | None, sent_new_audio: bool) -> bool:
    """Whether a stream that failed with `code` goes on in a new session: only after the idle timeout,
    and only when the failed call carried new audio (a source that stalled would otherwise open a
    session every few seconds, each ending with ERR1012 for want of any chunk)."""
    return code == IDLE_TIMEOUT_CODE and sent_new_audio


@dataclass(frozen=True)
class SessionTimeline:
    """Where one session sits in the stream: its 0 s is the stream's `offset_sec`, its utterance 0 the
    stream's `first_index`. The first session's results pass unchanged."""

    session: stt_pb2.SessionResponse
    offset_sec: float = 0.0
    first_index: int = 0

    def stream_sec(self, session_sec: float) -> float:
        return self.offset_sec + session_sec

    def result(self, result: TimedResult) -> TimedResult:
        if not self.offset_sec and not self.first_index:
            return result
        return dataclasses.replace(
            result, utterance_index=self.first_index + result.utterance_index,
            start_sec=self._shift(result.start_sec), end_sec=self._shift(result.end_sec),
            words=tuple(Word(w.word, self._shift(w.start_sec), self._shift(w.end_sec), w.probability)
                        for w in result.words))

    def _shift(self, session_sec: float) -> float:
        return round(self.offset_sec + session_sec, 6)
