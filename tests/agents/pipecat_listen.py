"""A Pipecat voice-agent front end pointed at the appliance: run by .venv-agents/bin/python, never imported.

    .venv-agents/bin/python tests/agents/pipecat_listen.py ws://127.0.0.1:8002 speech.wav [--pace 2]

It builds the pipeline an agent developer builds (Silero VAD -> Pipecat's DeepgramSTTService with
`base_url` at the box -> the next processor), plays a 16 kHz mono 16-bit WAV into it as
InputAudioRawFrame chunks at `--pace` x real time followed by a second of silence (a microphone
that stays open), waits until the transcriptions stop coming, ends the pipeline, and prints one JSON
object on stdout: {"interim": [...], "final": [...], "vad_stops": [...],
"errors": [...], "seconds": ...} (times in seconds from the start). It exits by
itself within `--timeout` seconds (status 2 then, with what it got). No network beyond the URL given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import wave

from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.workers.runner import WorkerRunner

RATE_HZ = 16_000
CHUNK_SEC = 0.02  # 20 ms frames, as Pipecat's transports deliver a microphone
TRAIL_SEC = 1.0
QUIET_SEC = 1.5  # no new transcription for this long after the audio: done


class Collector(FrameProcessor):
    """The agent's next stage: keeps every transcription frame with its arrival time."""

    def __init__(self, started: float) -> None:
        super().__init__()
        self.started = started
        self.got: dict[str, list] = {"interim": [], "final": [], "vad_stops": [], "errors": []}
        self.last = started

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        now = time.monotonic()
        if isinstance(frame, TranscriptionFrame):
            self.got["final"].append({"text": frame.text, "at": round(now - self.started, 3),
                                      "from_finalize": bool(getattr(frame.result, "from_finalize", False)),
                                      "speech_final": bool(getattr(frame.result, "speech_final", False))})
            self.last = now
        elif isinstance(frame, InterimTranscriptionFrame):
            self.got["interim"].append({"text": frame.text, "at": round(now - self.started, 3)})
            self.last = now
        elif isinstance(frame, VADUserStoppedSpeakingFrame):  # Pipecat sent Finalize
            self.got["vad_stops"].append(round(now - self.started, 3))
        await self.push_frame(frame, direction)


def pcm_of(path: str) -> bytes:
    with wave.open(path) as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (RATE_HZ, 1, 2):
            raise SystemExit(f"{path}: need 16 kHz mono 16-bit PCM")
        return wav.readframes(wav.getnframes())


async def play(task: PipelineWorker, pcm: bytes, pace: float, errors: list[str]) -> None:
    step = int(RATE_HZ * CHUNK_SEC) * 2
    audio = pcm + bytes(int(RATE_HZ * TRAIL_SEC) * 2)
    start = time.monotonic()
    for n, i in enumerate(range(0, len(audio), step)):
        if errors:
            return
        await task.queue_frame(InputAudioRawFrame(audio=audio[i:i + step], sample_rate=RATE_HZ, num_channels=1))
        await asyncio.sleep(max(0.0, start + (n + 1) * CHUNK_SEC / pace - time.monotonic()))


async def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    stt = DeepgramSTTService(api_key=args.api_key, base_url=args.base_url,
                             settings=DeepgramSTTService.Settings(model=args.model, interim_results=True,
                                                                  punctuate=True, smart_format=True))
    collector = Collector(started)
    vad = [VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=args.vad_stop_secs)))]
    pipeline = Pipeline([*(vad if args.vad_stop_secs > 0 else []), stt, collector])
    task = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=RATE_HZ), enable_rtvi=False)

    @task.event_handler("on_pipeline_error")
    async def on_error(_task: PipelineWorker, frame: ErrorFrame) -> None:  # errors travel upstream, to the worker
        collector.got["errors"].append(str(frame.error))

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)

    async def drive() -> None:
        await play(task, pcm_of(args.wav), args.pace, collector.got["errors"])
        done_playing = time.monotonic()
        collector.last = max(collector.last, done_playing)
        while time.monotonic() - collector.last < QUIET_SEC and not collector.got["errors"]:
            await asyncio.sleep(0.1)
        await task.queue_frame(EndFrame())

    run = asyncio.gather(runner.run(), drive())
    status = 0
    try:
        await asyncio.wait_for(run, args.timeout)
    except TimeoutError:
        status = 2
        collector.got["errors"].append(f"timed out after {args.timeout:g} s")
    collector.got["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(collector.got), flush=True)
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="the appliance's WebSocket door, e.g. ws://127.0.0.1:8002")
    parser.add_argument("wav", help="16 kHz mono 16-bit PCM WAV")
    parser.add_argument("--api-key", default="any-key", help="a key the appliance accepts (any string without auth)")
    parser.add_argument("--model", default="nova-3-general", help="Pipecat's default Deepgram model name")
    parser.add_argument("--pace", type=float, default=2.0, help="x real time")
    parser.add_argument("--vad-stop-secs", type=float, default=0.2,
                        help="Silero VAD's stop_secs (Pipecat's default 0.2); its stop sends Finalize; 0: no VAD")
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds before giving up")
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    sys.exit(asyncio.run(main(parser.parse_args())))
