"""The load itself: channels, pacing and result collection.

Owns `run_load(config, address, pid=None, on_tick=None) -> LoadResult`. Each channel is a thread
with its own gRPC connection. With realtime pacing a channel holds one session and streams the
recordings back to back (cycling through them, starting at file `channel % files`, with `gap_sec`
of silence after each so every file ends in an endpoint) until `duration_sec` has passed, then
half-closes and waits for the last finals. Without realtime pacing each file goes as fast as the
stream takes it in a session of its own, and the next file only follows once that stream has
ended (a closed loop: throughput, not an unbounded backlog). A refused or failed session is
counted and replaced by a new one until the duration is over.

Every result is filed under (channel, stream, utterance_index) as an `Utterance`; the figures
are made from those in report.py.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from clients.loadtest import SAMPLE_RATE_HZ, Clip
from clients.loadtest.procstats import ProcSampler, ProcStats
from clients.sdk import NO_RESUME, ResultStream, SentAudioLog, SttClient, SttError, TimedResult, split_pcm16

# Refusals that come with a stream's first chunk, before any utterance could have begun.
START_REFUSALS = {"ERR1001", "ERR1002", "ERR1004", "ERR1005"}
RETRY_AFTER_REFUSAL_SEC = 1.0


@dataclass(frozen=True)
class LoadConfig:
    channels: int
    duration_sec: float
    clips: tuple[Clip, ...]
    realtime: bool = True
    resume: bool = True  # streams re-dial after a dropped connection (the SDK's default)
    partials: bool = False
    chunk_ms: float = 100.0
    ramp_sec: float = 2.0
    gap_sec: float = 1.0
    grace_sec: float = 60.0  # after duration + the longest file, open streams are cancelled
    vad_silence_sec: float | None = None
    decode_profile: str = ""
    language: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    def session_attributes(self) -> dict[str, str]:
        return {**self.attributes, **({"partial": "true"} if self.partials else {})}


@dataclass
class Utterance:
    """What the client saw of one utterance. index -1: inferred from a stream error (no result)."""

    channel: int
    stream: int
    index: int
    file: str
    start_sec: float | None = None
    partials: int = 0
    last_partial_at_sec: float = 0.0  # since the run started
    first_partial_at_sec: float | None = None  # since the run started
    first_partial_sec: float | None = None  # time to first partial
    partial_gaps_sec: list[float] = field(default_factory=list)  # between consecutive partials received
    final: bool = False
    finals: int = 0  # finals received for it: more than one is a repeat (a resume gone wrong)
    node: str = ""  # the node (stt-node header) that sent its final
    latency_sec: float | None = None
    received_at_sec: float | None = None  # final, since the run started
    text_len: int | None = None
    decode_sec: float = 0.0  # server decode time of every result of this utterance
    partials_dropped: int = 0
    error: str | None = None  # code of the error that ended its stream while it was open

    @property
    def lost(self) -> bool:
        return not self.final and (self.partials > 0 or self.error is not None)


@dataclass(frozen=True)
class ErrorEvent:
    channel: int
    stream: int
    where: str  # "create" or "stream"
    code: str  # ERR10xx, else the gRPC status name
    at_sec: float
    message: str


@dataclass
class ChannelLog:
    channel: int
    streams: int = 0
    audio_sec: float = 0.0  # audio sent, silence gaps included
    wall_sec: float = 0.0  # time its streams were open
    resumes: int = 0  # re-attachments after a dropped connection, over its streams


@dataclass
class LoadResult:
    config: LoadConfig
    wall_sec: float
    utterances: list[Utterance]
    channels: list[ChannelLog]
    errors: list[ErrorEvent]
    server: ProcStats | None
    cancelled_at_grace: bool = False


@dataclass(frozen=True)
class Snapshot:
    """The run so far, once a second, for progress lines."""

    elapsed_sec: float
    channels: int
    channels_active: int
    finals: int
    latencies_sec: list[float]
    errors: int
    server: ProcStats | None


def error_code(err: SttError) -> str:
    return err.code or (err.status.name if err.status is not None else "UNKNOWN")


class _Stream:
    """One session's stream: which file sits where on its audio timeline, and when audio went out."""

    def __init__(self, channel: int, seq: int):
        self.channel, self.seq = channel, seq
        self.sent = SentAudioLog()
        self.files: list[tuple[float, str]] = []  # (offset of the file's start, name)
        self.audio_sec = 0.0
        self.results = 0
        self.calls: ResultStream | None = None  # the SDK's stream: the nodes serving it, its resumes

    @property
    def node(self) -> str:
        """The node serving the stream's current call ("" before its first answer)."""
        return self.calls.nodes[-1] if self.calls is not None and self.calls.nodes else ""

    def file_at(self, sec: float) -> str:
        name = self.files[0][1] if self.files else ""
        for offset, candidate in self.files:
            if offset <= sec + 1e-6:
                name = candidate
        return name


class _Collector:
    def __init__(self, started: float):
        self.started = started
        self._lock = threading.Lock()
        self._utterances: dict[tuple[int, int, int], Utterance] = {}
        self.errors: list[ErrorEvent] = []
        self.latencies: list[float] = []

    def on_result(self, stream: _Stream, r: TimedResult, received: float) -> None:
        if r.speech_event:
            return  # a VAD boundary, not a decode: it has no latency or text to count
        with self._lock:
            stream.results += 1
            key = (stream.channel, stream.seq, r.utterance_index)
            u = self._utterances.get(key)
            if u is None:
                u = self._utterances[key] = Utterance(stream.channel, stream.seq, r.utterance_index,
                                                      stream.file_at(r.start_sec), r.start_sec)
            u.decode_sec += r.decode_latency_sec
            u.partials_dropped = max(u.partials_dropped, r.partials_dropped)
            if not r.is_final:
                u.partials += 1
                if u.first_partial_at_sec is not None:
                    u.partial_gaps_sec.append(received - self.started - u.last_partial_at_sec)
                u.last_partial_at_sec = received - self.started
                if u.first_partial_at_sec is None:
                    u.first_partial_at_sec = received - self.started
                    sent = stream.sent.sent_time_for(r.start_sec)
                    u.first_partial_sec = None if sent is None else received - sent
                return
            u.final = True
            u.finals += 1
            u.node = stream.node
            u.latency_sec = None if math.isnan(r.latency_sec) else r.latency_sec
            u.received_at_sec = received - self.started
            u.text_len = len(r.text.strip())
            if u.latency_sec is not None:
                self.latencies.append(u.latency_sec)

    def on_error(self, channel: int, stream: _Stream | None, err: SttError) -> None:
        code = error_code(err)
        with self._lock:
            self.errors.append(ErrorEvent(channel, stream.seq if stream else -1,
                                          "stream" if stream else "create", code,
                                          time.monotonic() - self.started, err.message))
            if stream is None:
                return
            open_ = [u for (ch, seq, _), u in self._utterances.items()
                     if ch == channel and seq == stream.seq and not u.final]
            for u in open_:
                u.error = code
            refused_at_start = stream.results == 0 and code in START_REFUSALS
            if not open_ and not refused_at_start:
                self._utterances[(channel, stream.seq, -1)] = Utterance(
                    channel, stream.seq, -1, stream.file_at(stream.audio_sec), error=code)

    def utterances(self) -> list[Utterance]:
        with self._lock:
            return list(self._utterances.values())

    def counts(self) -> tuple[int, int, list[float]]:
        with self._lock:
            return len(self.latencies), len(self.errors), list(self.latencies)


class _Channel:
    def __init__(self, index: int, config: LoadConfig, client: SttClient, collector: _Collector,
                 chunks: dict[str, list[bytes]], start_at: float, deadline: float):
        self.index, self.config, self.client, self.collector = index, config, client, collector
        self.chunks, self.start_at, self.deadline = chunks, start_at, deadline
        self.log = ChannelLog(index)
        self._cursor = itertools.islice(itertools.cycle(config.clips), index % len(config.clips), None)
        gap_chunk = bytes(2 * max(1, round(SAMPLE_RATE_HZ * config.chunk_ms / 1000)))
        self._gap = [gap_chunk] * math.ceil(config.gap_sec * 1000 / config.chunk_ms) if config.realtime else []

    def run(self) -> None:
        cfg = self.config
        time.sleep(max(0.0, self.start_at - time.monotonic()))
        while time.monotonic() < self.deadline:
            try:
                session = self.client.create_session(
                    vad_mode="continue", vad_silence_sec=cfg.vad_silence_sec, language=cfg.language,
                    decode_profile=cfg.decode_profile, attributes=cfg.session_attributes())
            except SttError as err:
                self.collector.on_error(self.index, None, err)
                time.sleep(min(RETRY_AFTER_REFUSAL_SEC, max(0.0, self.deadline - time.monotonic())))
                continue
            except ValueError:  # the channel was closed: the run is being cancelled
                return
            stream = _Stream(self.index, self.log.streams)
            self.log.streams += 1
            opened = time.monotonic()
            try:
                stream.calls = self.client.send_chunks(session, self._audio(stream), SAMPLE_RATE_HZ,
                                                       realtime=cfg.realtime)
                for result in stream.calls:
                    self.collector.on_result(stream, result, time.monotonic())
            except SttError as err:
                self.collector.on_error(self.index, stream, err)
            except ValueError as err:  # raised by the SDK for a bad chunk: a client-side fault
                self.collector.on_error(self.index, stream, SttError(str(err), code="CLIENT_ERROR"))
            self.log.wall_sec += time.monotonic() - opened
            self.log.resumes += stream.calls.resumes if stream.calls is not None else 0
            self.log.audio_sec += stream.audio_sec

    def _audio(self, stream: _Stream) -> Iterator[bytes]:
        """Runs on the SDK's sender thread. A chunk counts as sent when the sender asks for the
        next one: it does so right after queueing the previous one at its due time."""
        while True:
            clip = next(self._cursor)
            stream.files.append((stream.audio_sec, clip.name))
            for piece in itertools.chain(self.chunks[clip.name], self._gap):
                yield piece
                stream.audio_sec += len(piece) / 2 / SAMPLE_RATE_HZ
                stream.sent.record(stream.audio_sec, time.monotonic())
            if not self.config.realtime or time.monotonic() >= self.deadline:
                return


def run_load(config: LoadConfig, address: str, pid: int | None = None,
             on_tick: Callable[[Snapshot], None] | None = None) -> LoadResult:
    """Run the load against `address`; sample `pid`'s CPU and RSS while it runs when given."""
    if config.channels < 1 or not config.clips:
        raise ValueError("need at least one channel and one audio file")
    chunks = {clip.name: split_pcm16(clip.pcm16, SAMPLE_RATE_HZ, config.chunk_ms) for clip in config.clips}
    sampler = ProcSampler(pid).start() if pid else None
    started = time.monotonic()
    deadline = started + config.duration_sec
    hard_deadline = deadline + max(c.duration_sec for c in config.clips) + config.gap_sec + config.grace_sec
    collector = _Collector(started)
    clients = [SttClient(address, resume=None if config.resume else NO_RESUME) for _ in range(config.channels)]
    channels = [_Channel(i, config, clients[i], collector, chunks,
                         started + config.ramp_sec * i / config.channels, deadline)
                for i in range(config.channels)]
    threads = [threading.Thread(target=ch.run, name=f"load-channel-{ch.index}", daemon=True) for ch in channels]
    for thread in threads:
        thread.start()
    cancelled = False

    def tick() -> None:
        if on_tick is not None:
            finals, errors, latencies = collector.counts()
            on_tick(Snapshot(time.monotonic() - started, config.channels,
                             sum(t.is_alive() for t in threads), finals, latencies, errors,
                             sampler.current() if sampler else None))
    try:
        while any(t.is_alive() for t in threads):
            next_tick = time.monotonic() + 1.0
            for thread in threads:
                thread.join(timeout=max(0.0, next_tick - time.monotonic()))
            tick()
            if not cancelled and time.monotonic() > hard_deadline:
                cancelled = True  # closing a channel ends its open streams with CANCELLED
                for client in clients:
                    client.close()
    finally:
        for client in clients:
            client.close()
        server = sampler.stop() if sampler else None
    return LoadResult(config, time.monotonic() - started, collector.utterances(),
                      [ch.log for ch in channels], list(collector.errors), server, cancelled)
