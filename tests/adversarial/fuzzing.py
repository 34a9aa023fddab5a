"""A fuzzer for the gRPC API: generated CreateSession requests and chunk sequences against a real server.

The issue it answers is "no client can take the box down": whatever a client sends, the server
either serves it or refuses it with a stable code (a gRPC status whose details start with
``ERR10xx``, see docs/troubleshooting.md), and keeps serving everyone else. This module holds

- hypothesis strategies for one `Case`: a `SessionRequest` (hostile ids, attribute maps with
  ``decode.<option>`` values such as YAML bombs, 5000-digit numbers, NaN, nested lists, odd enums and
  floats), then a stream into the session (real speech, fuzzed chunk sequences with wrong ids,
  tokens, rates and byte counts) or raw bytes no protobuf library would send (invalid UTF-8 in
  string fields, broken wire format), sent through identity serializers;
- `Runner`, which executes one case against an address, every call bounded by a timeout, and
  classifies it as ``ok``, ``coded`` (every refusal carried its ERR code, under the gRPC status the
  code's table entry names) or ``uncoded`` (any other status, or no answer within the timeout);
- `Report`, which tallies outcomes, groups uncoded ones by signature and keeps the smallest input
  of each, and the server-side checks: tracebacks in the log, gRPC health, an honest transcript.

`tests/adversarial/test_fuzz.py` runs a CI-sized, derandomized sample; `bench/fuzz.py` runs
thousands of cases by hand.
"""

from __future__ import annotations

import re
import string
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import strategies as st

from appliance.api import stt_pb2, stt_pb2_grpc
from appliance.decode_options import DECODE_OPTION_NAMES
from appliance.errors import DECODE_TIMEOUT_STATUS, ERROR_TABLE

CREATE_SESSION = "/stt.v1.SpeechToText/CreateSession"
STREAMING_RECOGNIZE = "/stt.v1.SpeechToText/StreamingRecognize"
FRONT_CENTER_WAV = Path("/usr/share/sounds/alsa/Front_Center.wav")  # Debian alsa-utils: "Front Center"

# The fuzz server lifts the per-client limits: every case comes from one IP at machine speed, and
# rate/capacity refusals (coded, but all the same) would hide the validation paths behind them.
FUZZ_SERVER_ENV = {
    "STT_SERVER_CREATE_SESSION_RPS": "0",
    "STT_SERVER_MAX_SESSIONS_PER_IP": "0",
    "STT_SERVER_MAX_AUDIO_BYTES_PER_SEC": "0",
    "STT_SERVER_MAX_AUDIO_BYTES_PER_SEC_BATCH": "0",
}

CODED = re.compile(r"^(ERR10\d\d)\b")
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # server.grpc_max_receive_message_bytes (shipped): stay under it


# --------------------------------------------------------------------------------------------------
# Text for summaries and reports


def short(value: object, limit: int = 60) -> str:
    """repr of `value`, cut in the middle when long, with its length."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} chars" if isinstance(value, (str, bytes)) else f"{len(text)} repr chars"
    return f"{text[:limit - 15]}…{text[-10:]} ({size})"


def _cut(text: str, limit: int = 30) -> str:
    """`text` escaped (control and non-ASCII characters as \\x.., \\u..) and cut to about `limit`."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else f"{text[:limit - 8]}…{text[-4:]}({len(text)})"


# --------------------------------------------------------------------------------------------------
# Attribute values: what a hostile client writes into SessionRequest.attributes


def _nested(depth: int, inner: str = "", opener: str = "[", closer: str = "]") -> str:
    return opener * depth + inner + closer * depth


def _nested_mapping(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth


def _yaml_bomb(levels: int) -> str:
    """Billion laughs: level k is a list of two aliases of level k-1 (2**levels leaves, tiny text)."""
    parts = ["&a0 [0.1, 0.2]"] + [f"&a{k} [*a{k - 1}, *a{k - 1}]" for k in range(1, levels + 1)]
    return "[" + ", ".join(parts) + "]"


def _yaml_bomb_top(levels: int) -> str:
    """Billion laughs whose document is the last (largest) alias itself."""
    lines = ["- &a0 [0.1, 0.2]"] + [f"- &a{k} [*a{k - 1}, *a{k - 1}]" for k in range(1, levels + 1)]
    return "\n".join(lines)


SPECIAL_SCALARS = (
    "", " ", "nan", "NaN", ".nan", ".NaN", ".inf", "-.inf", "+.inf", "inf", "-inf", "Infinity", "1e309",
    "-1e309", "1e-400", "-0", "-0.0", "0", "1", "-1", "0x7fffffff", "0o777", "0b101", "1_000_000", "1e3",
    "4.9e-324", "1.7976931348623157e308", "true", "false", "True", "FALSE", "yes", "no", "on", "off", "y", "n",
    "null", "~", "Null", "tru", "[]", "{}", "[ ]", "[1, 2", "{a:", "'unterminated", '"\\x00"', '"\\uD800"',
    "0.0,0.2,0.4", "0.0,,0.2", "1,x", ",", "0.0, 0.2, 1e309", "- 1\n- 2", "? a\n: b", "%YAML 1.1\n---\n1",
    "--- 1\n--- 2", "&a 1", "*a", "[&a 1, *a]", "!!python/object/apply:os.system ['true']", "!!binary aGk=",
    "!!set {a, b}", "!!timestamp 2001-12-14", "2001-12-14t21:59:43.10-05:00", "12:30:45", "190:20:30",
    "!!float nan", "!!int 99999999999999999999", "!!str 1", "!!bool yes", "!!null", "!!omap [a: 1]",
    "!!pairs [a: 1]", "<<: {a: 1}", "{<<: *x}", "\t", "\x00", "\x7f", "\u2028", "\ufeff1", "１", "٣", "½",
    "realtime", "batch", "REALTIME", " batch ", "Batch\n",
)

DIGITS_LIMIT_EDGE = (4299, 4300, 4301, 5000, 20_000, 100_000)  # Python's int("9" * n) refuses n > 4300


def _number_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(min_value=-3, max_value=12).map(str),
        st.integers().map(str),
        st.integers(min_value=-(2 ** 80), max_value=2 ** 80).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(min_value=-2.0, max_value=2.0).map(lambda x: f"{x:.3g}"),
    )


def _huge_numbers() -> st.SearchStrategy[str]:
    digits = st.one_of(st.sampled_from(DIGITS_LIMIT_EDGE), st.integers(min_value=300, max_value=100_000))
    return st.one_of(
        digits.map(lambda n: "9" * n),
        digits.map(lambda n: "-" + "9" * n),
        digits.map(lambda n: "1e" + "9" * min(n, 5000)),
        digits.map(lambda n: "0." + "1" * n),
        digits.map(lambda n: "[" + "9" * n + "]"),
        digits.map(lambda n: "0x" + "f" * n),
    )


def _lists() -> st.SearchStrategy[str]:
    items = _number_texts()
    return st.one_of(
        st.lists(items, max_size=12).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(items, min_size=1, max_size=12).map(",".join),
        st.integers(min_value=0, max_value=5000).map(lambda n: "[" + ", ".join(["0.1"] * n) + "]"),
        st.integers(min_value=0, max_value=5000).map(lambda n: ",".join(["0.2"] * n)),
        st.lists(items, max_size=6).map(lambda xs: "\n".join(f"- {x}" for x in xs)),
    )


def _deep() -> st.SearchStrategy[str]:
    depth = st.one_of(st.integers(min_value=1, max_value=40), st.integers(min_value=40, max_value=3000),
                      st.sampled_from((99, 100, 101, 500, 999, 1000, 1001, 10_000)))
    return st.one_of(
        depth.map(_nested),
        depth.map(lambda d: _nested(d, "0.5")),
        depth.map(lambda d: _nested(d, "1, 2")),
        depth.map(lambda d: _nested(d, "", "[", "")),  # unterminated
        depth.map(lambda d: _nested(d, "1", "{a: ", "}")),
        depth.map(_nested_mapping),
        depth.map(lambda d: "- " * d + "1"),  # block sequences, one per indentation level
        depth.map(lambda d: "".join(f"{' ' * i}- \n" for i in range(min(d, 500))) + " " * min(d, 500) + "1"),
    )


def _mappings() -> st.SearchStrategy[str]:
    keys = st.one_of(st.sampled_from(DECODE_OPTION_NAMES), st.text(string.ascii_letters, min_size=1, max_size=8))
    return st.one_of(
        st.dictionaries(keys, _number_texts(), max_size=5).map(
            lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"),
        st.integers(min_value=1, max_value=40).map(_yaml_bomb),
        st.integers(min_value=1, max_value=40).map(_yaml_bomb_top),
        st.sampled_from(("{a: &x [1, 2], b: *x}", "&m {a: 1}", "{? [1, 2]: 3}", "{[1]: 1}", "[{a: 1}, {b: 2}]",
                         "a: 1\nb: 2", "{a: 1, a: 2}", "{beam_size: 5}", "[[0.1, 0.2], [0.3]]")),
    )


def _long_strings() -> st.SearchStrategy[str]:
    unit = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
    size = st.one_of(st.integers(min_value=1, max_value=2000), st.integers(min_value=2000, max_value=100_000))
    return st.builds(lambda u, n: (u * (n // len(u) + 1))[:n], unit, size)


def attribute_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SPECIAL_SCALARS),
        _number_texts(),
        _huge_numbers(),
        _lists(),
        _deep(),
        _mappings(),
        _long_strings(),
        st.text(st.characters(codec="utf-8"), max_size=40),
        st.text(st.characters(max_codepoint=0x1f), max_size=10),
    )


KNOWN_KEYS = ("partial", "upload_mode", "api_key", "emit_final_on_vad", "api_key_required")


def attribute_keys() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([f"decode.{name}" for name in DECODE_OPTION_NAMES]),
        st.sampled_from(KNOWN_KEYS),
        st.sampled_from(("decode.", "decode", "decode..beam_size", "DECODE.beam_size", "decode.beam_size ",
                         "decode.__class__", "decode.as_kwargs", "decode.__dict__", "decode.language",
                         "decode.task", "decode.vad_filter", "decode.word_timestamps", "decode.beam_size\x00",
                         "", " ", "\x00", "é", "decode.bèam")),
        st.text(st.characters(codec="utf-8"), max_size=30).map(lambda t: "decode." + t),
        st.text(st.characters(codec="utf-8"), max_size=30),
        st.integers(min_value=200, max_value=100_000).map(lambda n: "k" * n),
    )


def _attribute_maps() -> st.SearchStrategy[dict[str, str]]:
    return st.one_of(
        st.just({}),
        st.dictionaries(attribute_keys(), attribute_values(), max_size=4),
        st.dictionaries(attribute_keys(), attribute_values(), max_size=100),
        # Many entries at once (the values small enough for the whole request to stay < 8 MiB)
        st.builds(lambda n, value: {f"x{i}": value for i in range(n)},
                  st.integers(min_value=100, max_value=20_000), st.sampled_from(("", "1", "v" * 200))),
        st.builds(lambda n, value: {f"decode.x{i}": value for i in range(n)},
                  st.integers(min_value=2, max_value=5_000), st.sampled_from(("1", "[[[[]]]]"))),
    )


# --------------------------------------------------------------------------------------------------
# SessionRequest fields


def session_ids() -> st.SearchStrategy[str]:
    valid = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,40}\Z")
    return st.one_of(
        st.just(""),
        valid,
        st.sampled_from(("a" * 128, "a" * 129, "-lead", ".", "..", "../../etc/passwd", "a b", "a/b", "a\nb",
                         "%s%s%n", "${jndi:ldap://x}", "<script>", "null", "0")),
        st.integers(min_value=129, max_value=100_000).map(lambda n: "s" * n),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=30),
        st.text(st.characters(max_codepoint=0x1f), min_size=1, max_size=10),
    )


def enum_values(valid: Iterable[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(tuple(valid)), st.sampled_from((-1, 3, 4, 100, 2 ** 31 - 1, -(2 ** 31))),
                     st.integers(min_value=-(2 ** 31), max_value=2 ** 31 - 1))


def _float32(bits: int) -> float:
    return struct.unpack("<f", bits.to_bytes(4, "little"))[0]


def float_fields() -> st.SearchStrategy[float | None]:
    return st.one_of(
        st.none(),
        st.sampled_from((0.0, -0.0, 0.05, 0.049, 10.0, 10.01, 0.5, 1.0, 1.0001, -1.0, float("nan"), float("inf"),
                         -float("inf"), 3.4e38, 1e-45)),
        # any float32 bit pattern: NaNs with payloads, infinities, subnormals (hypothesis' width=32
        # floats reject some draws, and a rejection makes it repr the whole 50 kB strategy)
        st.integers(min_value=0, max_value=2 ** 32 - 1).map(_float32),
        st.floats(min_value=-100, max_value=100),
    )


def languages() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(("", "en", "fr", "de", "zz", "xx", "EN", "en-US", "en_US", "english", "auto", "None", "\x00",
                         "yue", "haw", "jw", "iw")),
        st.text(string.ascii_lowercase, min_size=1, max_size=4),
        st.text(st.characters(codec="utf-8"), max_size=20),
        st.integers(min_value=100, max_value=100_000).map(lambda n: "e" * n),
    )


def names() -> st.SearchStrategy[str]:
    """decode_profile / model_id."""
    return st.one_of(
        st.sampled_from(("", "", "realtime", "accurate", "default", "REALTIME", "cpu-tiny.en", "tiny.en",
                         "../../etc/passwd", "/dev/zero", "__init__", "__class__", "\x00", "large-v3")),
        st.text(st.characters(codec="utf-8"), max_size=20),
        st.integers(min_value=100, max_value=100_000).map(lambda n: "p" * n),
    )


@dataclass(frozen=True)
class RequestSpec:
    """A SessionRequest as generated: fields that differ from the defaults."""

    session_id: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    vad_mode: int = 0
    vad_silence_sec: float | None = None
    vad_threshold: float | None = None
    language: str = ""
    task: int = 0
    decode_profile: str = ""
    model_id: str = ""
    require_token: bool = False

    def message(self) -> stt_pb2.SessionRequest:
        enums: dict[str, Any] = {"vad_mode": self.vad_mode, "task": self.task}  # open enums: any int32 goes
        msg = stt_pb2.SessionRequest(session_id=self.session_id, attributes=self.attributes, language=self.language,
                                     decode_profile=self.decode_profile, model_id=self.model_id,
                                     require_token=self.require_token, **enums)
        if self.vad_silence_sec is not None:
            msg.vad_silence_sec = self.vad_silence_sec
        if self.vad_threshold is not None:
            msg.vad_threshold = self.vad_threshold
        return msg

    def summary(self) -> str:
        parts = []
        for name in ("session_id", "vad_mode", "vad_silence_sec", "vad_threshold", "language", "task",
                     "decode_profile", "model_id", "require_token"):
            value = getattr(self, name)
            if value not in ("", 0, None, False):
                parts.append(f"{name}={short(value)}")
        if self.attributes:
            items = list(self.attributes.items())
            shown = ", ".join(f"{short(k, 40)}: {short(v)}" for k, v in items[:4])
            more = f", … {len(items)} entries" if len(items) > 4 else ""
            parts.append(f"attributes={{{shown}{more}}}")
        return f"SessionRequest({', '.join(parts)})"


def session_requests() -> st.SearchStrategy[RequestSpec]:
    return st.builds(
        RequestSpec, session_id=session_ids(), attributes=_attribute_maps(), vad_mode=enum_values((0, 1, 2)),
        vad_silence_sec=float_fields(), vad_threshold=float_fields(), language=languages(),
        task=enum_values((0, 1, 2)), decode_profile=names(), model_id=names(), require_token=st.booleans())


def plausible_values() -> st.SearchStrategy[str]:
    """Values near the accepted ranges, so that the session is created and the decode runs with them."""
    return st.one_of(
        st.integers(min_value=0, max_value=12).map(str),
        st.floats(min_value=0, max_value=1.5).map(lambda x: f"{x:.2f}"),
        st.lists(st.floats(min_value=0, max_value=1).map(lambda x: f"{x:.1f}"), min_size=1, max_size=7).map(
            lambda xs: "[" + ", ".join(xs) + "]"),
        st.sampled_from(("true", "false", "null", "-1", "-5", "0.0,0.5,1.0", "2.4", "1e-9")),
        st.text(st.characters(codec="utf-8"), max_size=60),
        st.integers(min_value=1, max_value=2048).map(lambda n: ("front center " * n)[:n]),
    )


def near_valid_requests() -> st.SearchStrategy[RequestSpec]:
    """An honest request with a few decode options or fields changed: most are created, then decode speech."""
    overrides = st.dictionaries(st.sampled_from([f"decode.{name}" for name in DECODE_OPTION_NAMES]),
                                plausible_values(), min_size=1, max_size=4)
    return st.builds(RequestSpec, attributes=overrides, vad_mode=st.sampled_from((0, 1, 2)),
                     vad_silence_sec=st.one_of(st.none(), st.floats(min_value=0.05, max_value=10)),
                     vad_threshold=st.one_of(st.none(), st.floats(min_value=0, max_value=1)),
                     language=st.sampled_from(("", "en", "fr", "zz")), task=st.sampled_from((0, 1, 2)),
                     decode_profile=st.sampled_from(("", "realtime", "accurate")))


def honest_requests() -> st.SearchStrategy[RequestSpec]:
    """Requests the server should accept, so the chunk sequence that follows reaches the stream."""
    attributes = st.fixed_dictionaries({}, optional={
        "partial": st.sampled_from(("true", "false")), "upload_mode": st.sampled_from(("realtime", "batch")),
        "emit_final_on_vad": st.sampled_from(("true", "false"))})
    return st.builds(RequestSpec, attributes=attributes, vad_mode=st.sampled_from((0, 1, 2)),
                     require_token=st.booleans())


# --------------------------------------------------------------------------------------------------
# Chunk sequences


@lru_cache(maxsize=1)
def speech_pcm16() -> tuple[bytes, int] | None:
    """Front_Center.wav as (pcm16, rate), or None where Debian's alsa-utils prompts are absent."""
    if not FRONT_CENTER_WAV.is_file():
        return None
    from clients.audio import load_pcm16

    return load_pcm16(FRONT_CENTER_WAV)


def pcm_bytes(kind: str, nbytes: int, seed: int) -> bytes:
    """`nbytes` of audio of a kind: empty, zeros, noise (full scale), quiet noise, square, speech."""
    if nbytes <= 0 or kind == "empty":
        return b""
    samples = (nbytes + 1) // 2
    rng = np.random.default_rng(seed)
    if kind == "zeros":
        return bytes(nbytes)
    if kind == "noise":
        data = rng.integers(-32768, 32768, size=samples, dtype=np.int32).astype("<i2").tobytes()
    elif kind == "quiet":
        data = rng.integers(-300, 300, size=samples, dtype=np.int32).astype("<i2").tobytes()
    elif kind == "square":
        data = np.where(np.arange(samples) % 40 < 20, 32767, -32768).astype("<i2").tobytes()
    else:  # speech, or noise where the prompt is missing
        speech = speech_pcm16()
        if speech is None:
            return pcm_bytes("noise", nbytes, seed)
        pcm = speech[0]
        start = (seed * 2) % len(pcm)
        data = (pcm[start:] + pcm * (nbytes // len(pcm) + 1))
    return data[:nbytes]


RATES = (0, 1, 7999, 8000, 16000, 22050, 44100, 48000, 48001, 96000, 2 ** 31 - 1, -1, -(2 ** 31))

# First-chunk / later-chunk identity: "right" (the session's), "empty", "other:<text>" (a made-up id)
# or, for tokens, "garbage:<text>", "truncated", "flipped" (one character changed), "padded".
TOKEN_MODES = ("right", "empty", "truncated", "flipped", "padded")


@dataclass(frozen=True)
class ChunkSpec:
    session_id: str = "empty"
    token: str = "empty"
    kind: str = "speech"
    nbytes: int = 3200
    sample_rate_hz: int = 16000
    seed: int = 0

    def summary(self) -> str:
        ident = ("" if (self.session_id, self.token) == ("empty", "empty")
                 else f"id={_cut(self.session_id)} tok={_cut(self.token)} ")
        return f"{ident}{self.kind}×{self.nbytes}B@{self.sample_rate_hz}"


def _ids(first: bool) -> st.SearchStrategy[str]:
    other = st.text(st.characters(codec="utf-8"), max_size=20).map(lambda t: "other:" + t)
    if first:
        return st.one_of(st.just("right"), st.just("right"), st.just("right"), st.just("empty"), other)
    return st.one_of(st.just("empty"), st.just("empty"), st.just("right"), other)


def _tokens(first: bool) -> st.SearchStrategy[str]:
    garbage = st.one_of(st.text(st.characters(codec="utf-8"), max_size=40),
                        st.integers(min_value=100, max_value=100_000).map(lambda n: "t" * n)).map(
        lambda t: "garbage:" + t)
    if first:
        return st.one_of(st.just("right"), st.just("right"), st.just("right"), st.sampled_from(TOKEN_MODES), garbage)
    return st.one_of(st.just("empty"), st.just("right"), st.sampled_from(TOKEN_MODES), garbage)


def _sizes(max_bytes: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(min_value=0, max_value=64), st.integers(min_value=0, max_value=6400),
                     st.integers(min_value=0, max_value=64_001), st.sampled_from((1, 3, 31999, 32000, 64000, 64002)),
                     st.integers(min_value=0, max_value=max_bytes))


def chunk_specs(first: bool, max_bytes: int) -> st.SearchStrategy[ChunkSpec]:
    return st.builds(ChunkSpec, session_id=_ids(first), token=_tokens(first),
                     kind=st.sampled_from(("speech", "speech", "zeros", "noise", "quiet", "square", "empty")),
                     nbytes=_sizes(max_bytes),
                     sample_rate_hz=st.one_of(st.sampled_from(RATES), st.sampled_from((0, 16000, 48000)),
                                              st.integers(min_value=-(2 ** 31), max_value=2 ** 31 - 1)),
                     seed=st.integers(min_value=0, max_value=2 ** 16))


@st.composite
def chunk_sequences(draw, max_chunks: int = 40, max_bytes: int = 1_048_576) -> tuple[ChunkSpec, ...]:
    count = draw(st.integers(min_value=0, max_value=max_chunks))
    if count == 0:
        return ()
    first = draw(chunk_specs(True, max_bytes))
    later = draw(st.lists(chunk_specs(False, max_bytes), min_size=count - 1, max_size=count - 1))
    return (first, *later)


def _identity(mode: str, right: str) -> str:
    if mode == "right":
        return right
    if mode == "empty":
        return ""
    if mode == "truncated":
        return right[: len(right) // 2]
    if mode == "flipped":
        return right[:-1] + ("A" if right[-1:] != "A" else "B") if right else "A"
    if mode == "padded":
        return right + " "
    return mode.split(":", 1)[1]  # other:<text> / garbage:<text>


# --------------------------------------------------------------------------------------------------
# Raw protobuf wire bytes (what grpcio's own serializers would never produce)


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe0\x80\xaf",
            b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"caf\xe9", b"\x80", b"\xe2\x82")


def bad_utf8() -> st.SearchStrategy[bytes]:
    return st.builds(lambda prefix, bad, suffix: prefix.encode() + bad + suffix.encode(),
                     st.text(string.ascii_letters, max_size=6), st.sampled_from(BAD_UTF8),
                     st.text(string.ascii_letters, max_size=6))


def _wire_garbage() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=2000),
        st.sampled_from((
            b"\x0a", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05\x0a\x01a", b"\xff" * 11, b"\x18" + b"\xff" * 10 + b"\x01",
            b"\x1d\x00\x00", b"\x78", b"\x00", b"\x0b", b"\x0c", b"\x1a\x02\x08",
            b"\x12\x80\x80\x80\x80\x10", b"\x18\x01" * 1000)),
        st.integers(min_value=1, max_value=200_000).map(lambda d: b"\x7b" * d + b"\x7c" * d),  # nested groups (15)
        st.integers(min_value=1, max_value=5000).map(lambda d: b"\x7b" * d),  # unterminated groups
        st.integers(min_value=1, max_value=200).map(lambda n: field_bytes(99, b"x" * n) * n),  # unknown fields
    )


def _raw_map_entry(key: bytes, value: bytes) -> bytes:
    return field_bytes(2, field_bytes(1, key) + field_bytes(2, value))


def raw_session_requests() -> st.SearchStrategy[bytes]:
    base = session_requests().map(lambda spec: spec.message().SerializeToString())
    string_field = st.sampled_from((1, 6, 8, 9))
    return st.one_of(
        _wire_garbage(),
        st.builds(lambda b, n, bad: b + field_bytes(n, bad), base, string_field, bad_utf8()),
        st.builds(lambda n, bad: field_bytes(n, bad), string_field, bad_utf8()),
        st.builds(lambda bad: _raw_map_entry(bad, b"v"), bad_utf8()),
        st.builds(lambda bad: _raw_map_entry(b"decode.initial_prompt", bad), bad_utf8()),
        st.builds(lambda bad: _raw_map_entry(b"decode.beam_size", bad), bad_utf8()),
        st.just(field_bytes(2, field_bytes(1, b"k"))),  # map entry without a value
        st.just(field_bytes(2, field_bytes(2, b"v"))),  # map entry without a key
        st.just(field_bytes(2, b"\xff\xff")),  # map entry that is not a message
        st.builds(lambda v: field_varint(3, v) + field_varint(7, v), st.integers(min_value=0, max_value=2 ** 64 - 1)),
        st.just(field_bytes(3, b"x") + field_bytes(4, b"abc")),  # wrong wire types for enum / float
        st.just(varint(4 << 3 | 5) + b"\x00\x00\xc0\x7f"),  # vad_silence_sec = NaN
        st.builds(lambda b, g: b + g, base, _wire_garbage()),
    )


@dataclass(frozen=True)
class RawChunk:
    """One raw StreamingRecognize message: `kind` says how to build it around the session's id/token."""

    kind: str  # valid | bytes | bad_id | bad_token | valid_then
    payload: bytes = b""

    def build(self, session_id: str, token: str, speech: bytes) -> bytes:
        sid, tok = session_id.encode(), token.encode()
        valid = field_bytes(1, sid) + field_bytes(2, speech) + field_varint(3, 48000) + field_bytes(4, tok)
        if self.kind == "valid":
            return valid
        if self.kind == "bad_id":
            return field_bytes(1, self.payload) + field_bytes(4, tok)
        if self.kind == "bad_token":
            return field_bytes(1, sid) + field_bytes(4, self.payload)
        if self.kind == "valid_then":
            return valid + self.payload
        return self.payload

    def summary(self) -> str:
        return self.kind if self.kind == "valid" else f"{self.kind}:{short(self.payload, 40)}"


def raw_chunks() -> st.SearchStrategy[RawChunk]:
    return st.one_of(
        st.just(RawChunk("valid")),
        st.builds(RawChunk, st.just("bytes"), _wire_garbage()),
        st.builds(RawChunk, st.just("bad_id"), bad_utf8()),
        st.builds(RawChunk, st.just("bad_token"), bad_utf8()),
        st.builds(RawChunk, st.just("valid_then"), st.one_of(_wire_garbage(), bad_utf8().map(
            lambda b: field_bytes(1, b)), bad_utf8().map(lambda b: field_bytes(4, b)))),
        st.builds(RawChunk, st.just("bytes"), st.builds(lambda v: field_varint(3, v), st.integers(
            min_value=0, max_value=2 ** 64 - 1))),
    )


# --------------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """CreateSession (a RequestSpec, or raw bytes), then a stream into the session.

    stream: "none" (only the clean-up stream), "speech" (Front_Center.wav, honest chunks), "chunks"
    (`chunks`, fuzzed) or "raw" (`raw`, wire bytes). cancel_after >= 0: the client sends that many
    of the messages, holds the stream open a moment and cancels it (a client that vanishes).
    """

    request: RequestSpec | bytes
    stream: str = "none"
    chunks: tuple[ChunkSpec, ...] = ()
    raw: tuple[RawChunk, ...] = ()
    cancel_after: int = -1

    def summary(self) -> str:
        text = self._summary()
        return text if self.cancel_after < 0 else f"{text}, cancelled by the client after {self.cancel_after} sent"

    def _summary(self) -> str:
        if isinstance(self.request, bytes):
            head = f"raw CreateSession {short(self.request, 70)}"
        else:
            head = self.request.summary()
        if self.stream == "speech":
            return f"{head} + stream of Front_Center.wav"
        if self.stream == "chunks":
            shown = "; ".join(c.summary() for c in self.chunks[:4])
            more = f"; … {len(self.chunks)} chunks" if len(self.chunks) > 4 else ""
            return f"{head} + stream [{shown}{more}]"
        if self.stream == "raw":
            return f"{head} + raw stream [{'; '.join(r.summary() for r in self.raw[:4])}" \
                   f"{f'; … {len(self.raw)} messages' if len(self.raw) > 4 else ''}]"
        return head


def cases(max_chunks: int = 40, max_chunk_bytes: int = 1_048_576) -> st.SearchStrategy[Case]:
    """Every kind of case, weighted towards the CreateSession fields (where most validation lives)."""
    sequences = chunk_sequences(max_chunks, max_chunk_bytes)
    return st.one_of(
        st.builds(Case, session_requests(), st.sampled_from(("none", "speech"))),
        st.builds(Case, session_requests(), st.sampled_from(("none", "speech"))),
        st.builds(Case, near_valid_requests(), st.just("speech")),
        st.builds(Case, honest_requests(), st.just("chunks"), sequences),
        st.builds(Case, honest_requests(), st.sampled_from(("speech", "chunks")), sequences,
                  cancel_after=st.integers(min_value=0, max_value=8)),
        st.builds(Case, raw_session_requests()),
        st.builds(Case, honest_requests(), st.just("raw"), st.just(()), st.lists(raw_chunks(), max_size=6).map(tuple)),
    )


# Inputs of the kinds the issue names, run first on every fuzz run so a regression shows at once
# whatever the seed draws.
def regression_cases() -> list[Case]:
    def attrs(**kw: str) -> Case:
        return Case(RequestSpec(attributes={k.replace("__", "."): v for k, v in kw.items()}), "speech")

    return [
        attrs(decode__temperature=_nested(1000)),
        attrs(decode__beam_size=_nested(300, "1")),
        attrs(decode__temperature=_yaml_bomb_top(30)),
        attrs(decode__temperature="9" * 5000),
        attrs(decode__beam_size="9" * 5000),
        attrs(decode__temperature=",".join(["0.1"] * 5000)),
        attrs(decode__beam_size="1e309"),
        attrs(decode__temperature=".nan"),
        attrs(decode__initial_prompt="p" * 100_000),
        attrs(partial="maybe", upload_mode="x" * 100_000),
        Case(RequestSpec(attributes={f"x{i}": "v" * 200 for i in range(20_000)})),
        Case(RequestSpec(vad_mode=7, task=-1, vad_silence_sec=float("nan"), vad_threshold=float("inf"))),
        Case(RequestSpec(session_id="s" * 100_000, language="e" * 100_000, model_id="../../etc/passwd")),
        Case(field_bytes(1, b"caf\xe9")),
        Case(_raw_map_entry(b"decode.initial_prompt", b"\xff\xfe")),
        Case(b"\xff" * 16),
        Case(b"x"),  # field 15, varint, truncated
        Case(RequestSpec(), "raw", raw=(RawChunk("bytes", b"{"),)),  # first message: an unterminated group
        Case(RequestSpec(), "raw", raw=(RawChunk("bad_token", b"\xff"),)),
        Case(RequestSpec(), "speech", cancel_after=3),
        Case(RequestSpec(), "raw", raw=(RawChunk("bad_id", b"\xc3\x28"),)),
        Case(RequestSpec(), "raw", raw=(RawChunk("valid"), RawChunk("bytes", b"\xff" * 16))),
        Case(RequestSpec(), "chunks", (ChunkSpec("right", "right", "speech", 3, 16000),)),
        Case(RequestSpec(), "chunks", (ChunkSpec("right", "right", "speech", 3200, 2 ** 31 - 1),
                                       ChunkSpec(kind="noise", nbytes=1_000_000, sample_rate_hz=8000))),
        Case(RequestSpec(attributes={"upload_mode": "batch"}), "chunks",
             (ChunkSpec("right", "right", "speech", 1_000_000, 1),)),
    ]


# --------------------------------------------------------------------------------------------------
# Running a case


@dataclass
class Call:
    phase: str  # create | stream | cleanup
    status: str  # OK, or the gRPC status name; TIMEOUT when no answer came within the limit
    details: str = ""
    verdict: str = "ok"  # ok | coded | uncoded
    code: str | None = None
    note: str = ""


@dataclass
class Outcome:
    case: Case
    calls: list[Call]
    seconds: float

    @property
    def verdict(self) -> str:
        """uncoded if any call was (the clean-up included); else coded if the case's own calls were refused."""
        if any(c.verdict == "uncoded" for c in self.calls):
            return "uncoded"
        return "coded" if any(c.verdict == "coded" for c in self.calls if c.phase != "cleanup") else "ok"

    @property
    def first_bad(self) -> Call | None:
        return next((c for c in self.calls if c.verdict == "uncoded"), None)

    @property
    def codes(self) -> list[str]:
        """The codes of the case's own refusals (the clean-up's ERR1001 after a stream is expected)."""
        return [c.code for c in self.calls if c.code and c.phase != "cleanup"]

    def describe(self) -> str:
        """The input, then each call: phase, status, details (cut) and why it counts as uncoded."""
        lines = [self.case.summary()]
        for call in self.calls:
            note = f" [{call.note}]" if call.note else ""
            lines.append(f"    -> {call.phase}: {call.status} {short(call.details, 200) if call.details else ''}{note}")
        return "\n".join(lines)


def _error_info_reason(err: grpc.RpcError) -> str | None:
    try:
        status = rpc_status.from_call(err)
    except Exception:  # a malformed rich status is reported as "no ErrorInfo"
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def classify(phase: str, err: grpc.RpcError, timeout_sec: float) -> Call:
    """A failed call: coded when its details start with ERR10xx under the status that code is sent with."""
    status = err.code()
    details = err.details() or ""
    match = CODED.match(details)
    if status == grpc.StatusCode.DEADLINE_EXCEEDED and not match and details == "Deadline Exceeded":
        return Call(phase, "TIMEOUT", details, "uncoded", note=f"no answer within {timeout_sec:g} s (a hang)")
    name = status.name if status is not None else "?"
    if not match:
        return Call(phase, name, details, "uncoded", note="no ERR code")
    code = match.group(1)
    spec = ERROR_TABLE.get(code)
    allowed = {spec.grpc_status} if spec else set()
    if code == "ERR1009":
        allowed.add(DECODE_TIMEOUT_STATUS[0])
    if name not in allowed:
        return Call(phase, name, details, "uncoded", code,
                    note=f"{code} is sent as {' or '.join(sorted(allowed)) or 'nothing (unknown code)'}")
    reason = _error_info_reason(err)
    if reason != code:
        return Call(phase, name, details, "uncoded", code, note=f"ErrorInfo.reason {reason!r} != {code}")
    return Call(phase, name, details, "coded", code)


@dataclass
class Limits:
    create_timeout_sec: float = 15.0
    stream_timeout_sec: float = 60.0
    max_stream_bytes: int = 4 * 1024 * 1024  # audio per case, so one case cannot take minutes of decoding


class Runner:
    """Runs cases against one address over one channel (thread-safe: grpc channels are)."""

    def __init__(self, address: str, limits: Limits | None = None):
        self.address = address
        self.limits = limits or Limits()
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", -1),
                                                               ("grpc.max_send_message_length", -1)])
        self.stub = stt_pb2_grpc.SpeechToTextStub(self.channel)
        self.raw_create = self.channel.unary_unary(CREATE_SESSION, request_serializer=lambda b: b,
                                                   response_deserializer=lambda b: b)
        self.raw_stream = self.channel.stream_stream(STREAMING_RECOGNIZE, request_serializer=lambda b: b,
                                                     response_deserializer=lambda b: b)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- calls

    def _create(self, request: RequestSpec | bytes, calls: list[Call]) -> stt_pb2.SessionResponse | None:
        timeout = self.limits.create_timeout_sec
        try:
            if isinstance(request, bytes):
                response = stt_pb2.SessionResponse.FromString(self.raw_create(request, timeout=timeout))
            else:
                response = self.stub.CreateSession(request.message(), timeout=timeout)
        except grpc.RpcError as err:
            calls.append(classify("create", err, timeout))
            return None
        calls.append(Call("create", "OK"))
        return response

    def _stream(self, phase: str, messages: list, calls: list[Call], raw: bool = False,
                cancel_after: int = -1) -> bool:
        timeout = self.limits.stream_timeout_sec
        method = self.raw_stream if raw else self.stub.StreamingRecognize
        if cancel_after < 0:
            call = method(iter(messages), timeout=timeout)
        else:
            release = threading.Event()

            def requests():
                yield from messages[:cancel_after]
                release.wait(timeout)  # the stream stays open, silent, until the client cancels it

            call = method(requests(), timeout=timeout)
            threading.Timer(0.3, call.cancel).start()
        try:
            for _ in call:
                pass
        except grpc.RpcError as err:
            if cancel_after >= 0 and err.code() == grpc.StatusCode.CANCELLED:
                calls.append(Call(phase, "CANCELLED", "cancelled by the client"))
                return False
            calls.append(classify(phase, err, timeout))
            return False
        finally:
            call.cancel()
            if cancel_after >= 0:
                release.set()
        calls.append(Call(phase, "OK"))
        return True

    def _chunks(self, specs: tuple[ChunkSpec, ...], session: stt_pb2.SessionResponse) -> list[stt_pb2.AudioChunk]:
        budget = self.limits.max_stream_bytes
        out = []
        for spec in specs:
            nbytes = max(0, min(spec.nbytes, budget))
            budget -= nbytes
            out.append(stt_pb2.AudioChunk(
                session_id=_identity(spec.session_id, session.session_id),
                session_token=_identity(spec.token, session.session_token),
                pcm16=pcm_bytes(spec.kind, nbytes, spec.seed), sample_rate_hz=spec.sample_rate_hz))
        return out

    @staticmethod
    def _speech(session: stt_pb2.SessionResponse) -> list[stt_pb2.AudioChunk]:
        speech = speech_pcm16()
        pcm, rate = speech if speech is not None else (pcm_bytes("noise", 48000 * 2, 1), 48000)
        step = rate // 10 * 2  # 100 ms
        pieces = [pcm[i:i + step] for i in range(0, len(pcm), step)] + [bytes(step)] * 10  # 1 s of silence after
        return [stt_pb2.AudioChunk(session_id=session.session_id if i == 0 else "", pcm16=piece, sample_rate_hz=rate,
                                   session_token=session.session_token) for i, piece in enumerate(pieces)]

    def run(self, case: Case) -> Outcome:
        started = time.monotonic()
        calls: list[Call] = []
        session = self._create(case.request, calls)
        if session is not None:
            done = False
            if case.stream == "speech":
                done = self._stream("stream", self._speech(session), calls, cancel_after=case.cancel_after)
            elif case.stream == "chunks":
                done = self._stream("stream", self._chunks(case.chunks, session), calls,
                                    cancel_after=case.cancel_after)
            elif case.stream == "raw":
                speech = self._speech(session)[1].pcm16
                messages = [r.build(session.session_id, session.session_token, speech) for r in case.raw]
                done = self._stream("stream", messages, calls, raw=True)
            if not done or case.stream != "speech":
                # Release the session, which a refused attach (or a stream that never sent a chunk)
                # leaves to its owner until it expires: an honest empty stream. ok, ERR1001 (already
                # streamed) and ERR1002 (still ending) are all fine; only an uncoded answer counts.
                cleanup = stt_pb2.AudioChunk(session_id=session.session_id, session_token=session.session_token)
                self._stream("cleanup", [cleanup], calls)
        return Outcome(case, calls, time.monotonic() - started)


# --------------------------------------------------------------------------------------------------
# Server-side checks


def grpc_health(address: str, timeout_sec: float = 5.0) -> str:
    """grpc.health.v1 status of the whole server: SERVING / NOT_SERVING / ..., or the call's error."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout_sec)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as err:
        return f"error {err.code().name}: {err.details()}"


def http_health(http_url: str, timeout_sec: float = 5.0) -> str:
    """GET /health: the HTTP status, or the error."""
    try:
        with urllib.request.urlopen(f"{http_url}/health", timeout=timeout_sec) as reply:
            return str(reply.status)
    except urllib.error.HTTPError as err:
        return str(err.code)
    except OSError as err:
        return f"error {err}"


def active_sessions(http_url: str, timeout_sec: float = 5.0) -> str:
    """The stt_active_sessions gauge of GET /metrics (sessions created and not yet ended), or the error."""
    try:
        with urllib.request.urlopen(f"{http_url}/metrics", timeout=timeout_sec) as reply:
            text = reply.read().decode("utf-8", "replace")
    except OSError as err:
        return f"error {err}"
    match = re.search(r"^stt_active_sessions(?:\{[^}]*\})? (\S+)$", text, re.M)
    return f"{float(match.group(1)):g}" if match else "not in /metrics"


def honest_transcript(address: str) -> str:
    """Final text of Front_Center.wav streamed through a fresh default session (lower case)."""
    from clients.sdk import SttClient

    speech = speech_pcm16()
    if speech is None:
        raise FileNotFoundError(FRONT_CENTER_WAV)
    with SttClient(address, timeout_sec=30) as client:
        session = client.create_session()
        results = list(client.stream_audio(session, speech[0], speech[1], realtime=False))
    return " ".join(r.text for r in results if r.is_final and r.text).lower()


TRACEBACK = "Traceback (most recent call last):"


def tracebacks(log: str) -> list[str]:
    """One line per traceback in a server log: the exception line, with the log line before it."""
    lines = log.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.startswith(TRACEBACK):
            continue
        context = re.sub(r"^\d{4}-\d\d-\d\d[ T][\d:,.]+\s*", "", lines[i - 1].strip()) if i else ""
        exc = next((later for later in lines[i + 1:] if later and not later[0].isspace()), "?")
        out.append(f"{exc}   (after: {short(context, 160)[1:-1]})" if context else exc)
    return out


def traceback_kinds(log: str) -> Counter:
    """`tracebacks` grouped: session ids, numbers and timestamps folded so equal failures count together."""
    return Counter(re.sub(r"\b[0-9a-f]{32}\b", "<id>", line) for line in tracebacks(log))


# --------------------------------------------------------------------------------------------------
# Tallying


def signature(outcome: Outcome) -> str:
    """What makes two uncoded outcomes the same failure: phase, status and details without numbers/quotes."""
    bad = outcome.first_bad
    if bad is None:
        return ""
    details = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", bad.details)
    details = re.sub(r"\d+(\.\d+)?", "N", details)[:120]
    return f"{bad.phase} {bad.status} {details} {bad.note if bad.status != 'TIMEOUT' else ''}".strip()


@dataclass
class Report:
    cases: int = 0
    ok: int = 0
    coded: Counter = field(default_factory=Counter)
    uncoded: int = 0
    distinct: dict[str, list[Outcome]] = field(default_factory=dict)  # signature -> outcomes (smallest first)
    coded_examples: dict[str, Call] = field(default_factory=dict)  # code -> its first refusal
    seconds: float = 0.0
    stopped: list[str] = field(default_factory=list)  # why a run ended early (the server died or hung)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    on_uncoded: Callable[[Outcome], None] | None = field(default=None, repr=False)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.cases += 1
            self.seconds += outcome.seconds
            verdict = outcome.verdict
            for call in outcome.calls:
                if (call.verdict == "coded" and call.phase != "cleanup" and call.code is not None
                        and call.code not in self.coded_examples):
                    self.coded_examples[call.code] = call
            if verdict == "ok":
                self.ok += 1
            elif verdict == "coded":
                self.coded.update(outcome.codes)
            else:
                self.uncoded += 1
                self.coded.update(c.code for c in outcome.calls
                                  if c.verdict == "coded" and c.code and c.phase != "cleanup")
                group = self.distinct.setdefault(signature(outcome), [])
                group.append(outcome)
                group.sort(key=lambda o: len(o.case.summary()))
                del group[5:]
        if verdict == "uncoded" and self.on_uncoded is not None:
            self.on_uncoded(outcome)

    def __repr__(self) -> str:
        return (f"Report(cases={self.cases}, ok={self.ok}, coded={sum(self.coded.values())}, uncoded={self.uncoded}, "
                f"distinct={len(self.distinct)})")

    def uncoded_lines(self, limit: int = 20) -> list[str]:
        out = []
        for sig, group in list(self.distinct.items())[:limit]:
            out.append(f"[{sig}]\n  smallest of the group: {group[0].describe()}")
        return out

    def as_dict(self) -> dict:
        return {
            "cases": self.cases, "ok": self.ok, "coded": dict(self.coded), "uncoded": self.uncoded,
            "coded_examples": {code: call.__dict__ for code, call in self.coded_examples.items()},
            "uncoded_groups": [{"signature": sig, "examples": [
                {"input": o.case.summary(), "calls": [c.__dict__ for c in o.calls]} for o in group]}
                for sig, group in self.distinct.items()],
        }
