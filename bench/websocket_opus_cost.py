"""What Opus on the WebSocket door costs: CPU seconds per minute of audio to turn a live stream's
binary messages into the pipeline's 16 kHz int16, for raw linear16 (the door's `Linear16`) and for
Opus in Ogg and WebM (`appliance.audio_stream.ContainerOpus`: the pure-Python demuxer plus libopus and
the resampler), with FFmpeg's own demuxer reading the same file as a yardstick (what the door does
not use).

    flock -x /tmp/cpu.lock python bench/websocket_opus_cost.py            # 60 s of speech, best of 5
    python bench/websocket_opus_cost.py --seconds 120 --message-ms 20 --repeats 3

The shipped JFK recording is looped to `--seconds` and encoded once (untimed) with PyAV at 24 kbit/s,
mono, 20 ms packets; each run cuts the bytes into messages of `--message-ms` of audio (MediaRecorder's
timeslice; 250 ms by default) and times the process's CPU over the whole stream. Single-threaded.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.audio_stream import ContainerOpus
from appliance.transport.websocket.pcm import Linear16
from tests.speech import JFK

RATE_HZ = 48_000


def speech(seconds: float) -> np.ndarray:
    audio, source_hz = sf.read(str(JFK), dtype="float32")
    audio = soxr.resample(audio, source_hz, RATE_HZ).astype(np.float32)
    return np.tile(audio, int(np.ceil(seconds * RATE_HZ / audio.size)))[: int(seconds * RATE_HZ)]


def encode(audio: np.ndarray, container: str) -> bytes:
    out_file = io.BytesIO()
    with av.open(out_file, "w", format=container, options={"live": "1"} if container == "webm" else {}) as out:
        stream = out.add_stream("libopus", rate=RATE_HZ, layout="mono")
        stream.bit_rate = 24_000
        for i in range(0, audio.size, 960):
            frame = av.AudioFrame.from_ndarray(audio[None, i:i + 960], format="flt", layout="mono")
            frame.sample_rate, frame.pts = RATE_HZ, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return out_file.getvalue()


def messages(data: bytes, seconds: float, message_ms: int) -> list[bytes]:
    step = max(1, int(len(data) * message_ms / 1000 / seconds))
    return [data[i:i + step] for i in range(0, len(data), step)]


def cpu(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--message-ms", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    audio = speech(args.seconds)
    pcm16 = (np.clip(soxr.resample(audio, RATE_HZ, 16_000), -1, 1) * 32767).astype("<i2").tobytes()
    files = {"ogg": encode(audio, "ogg"), "webm": encode(audio, "webm")}

    def linear16() -> None:
        pcm = Linear16(16_000, 1)
        for message in messages(pcm16, args.seconds, args.message_ms):
            for _ in pcm.pieces(message):
                pass

    def container(name: str):
        def run() -> None:
            stream = ContainerOpus()
            for message in messages(files[name], args.seconds, args.message_ms):
                for _ in stream.pieces(message):
                    pass
            assert abs(stream.duration_sec - args.seconds) < 0.5, stream.duration_sec
        return run

    def ffmpeg_demuxer(name: str):
        def run() -> None:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=16_000)
            with av.open(io.BytesIO(files[name]), format={"ogg": "ogg", "webm": "matroska"}[name]) as f:
                for packet in f.demux(audio=0):
                    for frame in packet.decode():
                        resampler.resample(frame)
        return run

    rows = [("linear16 16 kHz (Linear16)", linear16, len(pcm16))]
    for name in files:
        rows.append((f"Opus in {name} (ContainerOpus)", container(name), len(files[name])))
        rows.append((f"Opus in {name} (FFmpeg demuxer, yardstick)", ffmpeg_demuxer(name), len(files[name])))
    per_minute = 60.0 / args.seconds
    print(f"{args.seconds:.0f} s of speech, messages of {args.message_ms} ms, best of {args.repeats}")
    print(f"{'input':44} {'bytes':>9} {'CPU s / audio min':>18} {'% of a core live':>17}")
    for label, run, size in rows:
        seconds = cpu(run, args.repeats) * per_minute
        print(f"{label:44} {size:>9} {seconds:>18.4f} {100 * seconds / 60:>16.3f}%")


if __name__ == "__main__":
    main()
