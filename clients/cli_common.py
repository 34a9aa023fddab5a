"""What the CLIs share: one option table feeding argparse and the `-c` YAML, settings
resolution (CLI > YAML > defaults), the session, and exit codes; result printing and the summary
are clients/cli_output.py's (re-exported here).

Each CLI describes how it differs as a `ClientKind`: the file clients
(clients/realtime/file.py, clients/batch/file.py) only that, and run through `run`;
the microphone client (clients/realtime/mic.py) adds its own options and its run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from appliance.api import stt_pb2
from clients.audio import load_pcm16, pcm16_duration_sec
from clients.cli_output import ResultTally as ResultTally  # re-exported: the CLIs and benchmarks import them here
from clients.cli_output import format_result as format_result
from clients.cli_output import format_summary as format_summary
from clients.cli_output import latency_summary as latency_summary
from clients.cli_output import percentile as percentile
from clients.cli_output import print_line, print_summary
from clients.cli_output import result_line as result_line
from clients.cli_output import result_record as result_record
from clients.sdk import DEFAULT_SERVER, NO_RESUME, SttClient, SttError, split_pcm16

EXIT_OK = 0
EXIT_ERROR = 2  # usage, config, missing file and server errors alike, as argparse does
EXIT_INTERRUPTED = 130
BATCH_PIECE_MS = 60_000  # the batch client's chunk when the server sets no max_chunk_ms


class CliError(Exception):
    """A problem with what the user asked for; printed as `error: ...`, exit 2."""


@dataclass(frozen=True)
class Option:
    """One setting: its YAML key (also the argparse dest), flags, type and default."""

    key: str
    flags: tuple[str, ...]
    kind: str  # "str" | "float" | "bool" | "attributes"
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    streaming_only: bool = False  # meaningless for the batch client (it sends the file unpaced)


OPTIONS: tuple[Option, ...] = (
    Option("audio_path", (), "str", None, "audio file (WAV/FLAC/OGG); or audio_path in the config"),
    Option("server", ("--server",), "str", DEFAULT_SERVER, "server address host:port"),
    Option("chunk_ms", ("--chunk-ms",), "float", 100.0, "audio per chunk, milliseconds",
           streaming_only=True),
    Option("realtime", ("--no-realtime",), "bool", True,
           "send audio as fast as possible instead of at speaking pace", streaming_only=True),
    Option("resume", ("--no-resume",), "bool", True,
           "fail when the connection drops instead of re-dialing and resending the audio since the "
           "last final", streaming_only=True),
    Option("vad_mode", ("--vad-mode",), "str", "continue",
           "continue: one final per utterance; auto: end after the first utterance",
           choices=("continue", "auto")),
    Option("vad_silence", ("--vad-silence",), "float", None,
           "trailing silence that ends an utterance, seconds (server default if unset)"),
    Option("vad_threshold", ("--vad-threshold",), "float", None,
           "VAD speech probability threshold, 0-1 (server default if unset)"),
    Option("language", ("--language",), "str", "", "ISO 639-1 code, e.g. en (default: detect)"),
    Option("task", ("--task",), "str", "", "transcribe or translate (to English)",
           choices=("transcribe", "translate")),
    Option("decode_profile", ("--decode-profile",), "str", "",
           "named decode profile from the server's model.yaml"),
    Option("model_id", ("--model-id",), "str", "", "loaded model to use (default model if unset)"),
    Option("attributes", ("--attr", "--meta"), "attributes", {},
           "session attribute key=value, repeatable (e.g. partial=true)"),
    Option("require_token", ("--require-token",), "bool", False,
           "ask the server for a per-session token and send it with every chunk"),
    Option("signed_token_secret", ("--signed-token-secret",), "str", None,
           "sign CreateSession with this HMAC secret (server auth profile signed_token)"),
    Option("tls", ("--tls",), "bool", False, "use TLS with the system's trusted CAs"),
    Option("tls_ca_file", ("--tls-ca-file",), "str", None, "use TLS trusting this CA/cert PEM file"),
    Option("session_id", ("--session-id",), "str", "", "session id (default: server-generated)"),
    Option("metrics", ("--metrics",), "bool", False,
           "print a summary: durations, counts, client-side final latency, realtime factor"),
    Option("json", ("--json",), "bool", False, "print one JSON object per result (and summary)"),
)


def check_file_settings(settings: dict[str, Any]) -> None:
    """The file clients' own check: chunk_ms (the streaming one's option) is > 0."""
    if "chunk_ms" in settings and settings["chunk_ms"] <= 0:
        raise CliError(f"chunk_ms must be > 0, got {settings['chunk_ms']}")


@dataclass(frozen=True)
class ClientKind:
    """How one CLI differs from the others."""

    prog: str
    description: str
    streaming: bool  # False: the whole file goes at once, unpaced
    defaults: dict[str, Any] = field(default_factory=dict)
    forced_attributes: dict[str, str] = field(default_factory=dict)
    dropped_keys: tuple[str, ...] = ()  # shared options that mean nothing to this client
    extra_options: tuple[Option, ...] = ()  # options of this client alone
    check_settings: Callable[[dict[str, Any]], None] = check_file_settings  # raises CliError

    def options(self) -> tuple[Option, ...]:
        shared = tuple(opt for opt in OPTIONS if (self.streaming or not opt.streaming_only)
                       and opt.key not in self.dropped_keys)
        return shared + self.extra_options


# --- argparse ---------------------------------------------------------------------------

def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def build_parser(kind: ClientKind) -> argparse.ArgumentParser:
    # Defaults are SUPPRESSed so only flags the user typed reach the namespace:
    # that is what lets them override the YAML.
    parser = argparse.ArgumentParser(prog=f"python -m {kind.prog}", description=kind.description,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("-c", "--config", help="YAML file with defaults (keys: the long option "
                        "names with underscores, attributes as a mapping)")
    for opt in kind.options():
        default = kind.defaults.get(opt.key, opt.default)
        shown = not isinstance(default, bool) and default not in (None, "", {})
        help_text = f"{opt.help} (default: {default:g})" if isinstance(default, float) else (
            f"{opt.help} (default: {default})" if shown else opt.help)
        if opt.key == "audio_path":
            parser.add_argument("audio_path", nargs="?", metavar="AUDIO", help=help_text)
        elif opt.kind == "bool":
            action = "store_false" if opt.flags[0].startswith("--no-") else "store_true"
            parser.add_argument(*opt.flags, dest=opt.key, action=action, help=help_text)
        elif opt.kind == "attributes":
            parser.add_argument(*opt.flags, dest=opt.key, action="append", type=_key_value,
                                metavar="KEY=VALUE", help=help_text)
        else:
            parser.add_argument(*opt.flags, dest=opt.key, help=help_text,
                                type=_finite_float if opt.kind == "float" else str,
                                choices=opt.choices or None)
    return parser


# --- YAML config ------------------------------------------------------------------------

def load_config_file(path: str | Path, kind: ClientKind) -> dict[str, Any]:
    """Read and validate a client YAML; unknown keys and wrong types raise CliError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"config file not found: {path}") from None
    except (OSError, yaml.YAMLError) as err:
        raise CliError(f"cannot read config {path}: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"config {path}: expected a mapping of option names, got {type(data).__name__}")
    known = kind.options()
    by_key = {opt.key: opt for opt in (*OPTIONS, *known)}
    settings: dict[str, Any] = {}
    for key, value in data.items():
        opt = by_key.get(key)
        if opt is None:
            allowed = ", ".join(o.key for o in known)
            raise CliError(f"config {path}: unknown key {key!r} (allowed: {allowed})")
        if opt not in known or value is None:
            continue  # e.g. chunk_ms for the batch client: shared configs stay usable
        settings[key] = _config_value(path, opt, value)
    return settings


def _config_value(path: Path, opt: Option, value: Any) -> Any:
    where = f"config {path}: key {opt.key!r}"
    if opt.kind == "bool":
        if not isinstance(value, bool):
            raise CliError(f"{where} must be true or false, got {value!r}")
        return value
    if opt.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise CliError(f"{where} must be a number, got {value!r}")
        try:
            return _finite_float(str(value))
        except argparse.ArgumentTypeError as err:
            raise CliError(f"{where}: {err}") from None
    if opt.kind == "attributes":
        if not isinstance(value, dict):
            raise CliError(f"{where} must be a mapping of key: value, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if isinstance(value, bool):  # YAML 1.1 reads a bare `no` (Norwegian) as false
        raise CliError(f"{where} must be text, got {value!r}; quote it")
    if not isinstance(value, (str, int, float)):
        raise CliError(f"{where} must be text, got {value!r}")
    text = str(value)
    if opt.choices and text not in opt.choices:
        raise CliError(f"{where} must be one of {', '.join(opt.choices)}, got {text!r}")
    return text


def resolve_settings(kind: ClientKind, args: argparse.Namespace) -> dict[str, Any]:
    """defaults < kind defaults < YAML < CLI flags; attributes merge key by key. Then checked:
    an audio file where the client takes one, the CA file, and the kind's own checks."""
    settings = {opt.key: opt.default for opt in kind.options()}
    settings.update(kind.defaults)
    from_cli = vars(args).copy()
    config_path = from_cli.pop("config", None)
    from_file = load_config_file(config_path, kind) if config_path else {}
    cli_attributes = dict(from_cli.pop("attributes", []))
    attributes = {**settings["attributes"], **from_file.pop("attributes", {}), **cli_attributes}
    settings.update(from_file)
    settings.update(from_cli)
    settings["attributes"] = {**attributes, **kind.forced_attributes}
    if "audio_path" in settings and not settings["audio_path"]:
        raise CliError("no audio file: pass AUDIO or set audio_path in the -c config")
    if settings["tls_ca_file"] and not Path(settings["tls_ca_file"]).is_file():
        raise CliError(f"tls_ca_file not found: {settings['tls_ca_file']}")
    kind.check_settings(settings)
    return settings


# --- the session ------------------------------------------------------------------------

def connect(settings: dict[str, Any]) -> SttClient:
    """A client for the settings' server, TLS and auth (close it, or use `with`)."""
    metadata: Sequence[tuple[str, str]] = ()
    if settings["signed_token_secret"]:
        from appliance.security.auth import auth_metadata

        metadata = auth_metadata(settings["signed_token_secret"], api_key=settings["attributes"].get("api_key"))
    # Only streaming clients resume (the batch client's file goes at once: there is no tape to keep).
    resume = None if settings.get("resume", False) else NO_RESUME
    return SttClient(settings["server"], tls=settings["tls"], tls_ca_file=settings["tls_ca_file"],
                     metadata=metadata, resume=resume)


def open_session(client: SttClient, settings: dict[str, Any]) -> stt_pb2.SessionResponse:
    return client.create_session(
        settings["session_id"], vad_mode=settings["vad_mode"], vad_silence_sec=settings["vad_silence"],
        vad_threshold=settings["vad_threshold"], language=settings["language"], task=settings["task"],
        decode_profile=settings["decode_profile"], model_id=settings["model_id"],
        require_token=settings["require_token"], attributes=settings["attributes"])


# --- the run ----------------------------------------------------------------------------

def run(kind: ClientKind, argv: Sequence[str] | None = None, *, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    """Parse argv, transcribe the file, print results; return the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser(kind).parse_args(argv)

    def transcribe_file() -> int:
        settings = resolve_settings(kind, args)
        pcm16, sample_rate_hz = _load_audio(settings["audio_path"])
        return _transcribe(kind, settings, pcm16, sample_rate_hz, out)

    return exit_code(transcribe_file, err)


def exit_code(work: Callable[[], int], err: TextIO) -> int:
    """Run a CLI's `work`, return its exit code: a CliError or SttError prints `error: ...` and exits
    2, Ctrl-C prints `interrupted` and exits 130, neither with a traceback."""
    try:
        return work()
    except (CliError, SttError) as error:
        print(f"error: {error}", file=err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


def _load_audio(path: str) -> tuple[bytes, int]:
    try:
        pcm16, sample_rate_hz = load_pcm16(path)
    except (FileNotFoundError, ValueError) as error:
        raise CliError(str(error)) from error
    if not pcm16:
        raise CliError(f"audio file holds no samples: {path}")
    return pcm16, sample_rate_hz


def _transcribe(kind: ClientKind, settings: dict[str, Any], pcm16: bytes, sample_rate_hz: int,
                out: TextIO) -> int:
    tally = ResultTally()
    with connect(settings) as client:
        session = open_session(client, settings)
        start_sec = time.monotonic()
        if kind.streaming:
            results = client.stream_audio(session, pcm16, sample_rate_hz,
                                          chunk_ms=settings["chunk_ms"], realtime=settings["realtime"])
        else:
            # The largest chunks the server takes: its max_chunk_ms when it caps them, else pieces
            # small enough for a gRPC message (8 MiB by default; 60 s at 48 kHz is 5.8 MB).
            chunks = split_pcm16(pcm16, sample_rate_hz, session.max_chunk_ms or BATCH_PIECE_MS)
            results = client.send_chunks(session, chunks, sample_rate_hz, realtime=False)
        for result in results:
            tally.add(result)
            print_line(result_line(result, settings["json"]), out)
        wall_sec = time.monotonic() - start_sec
    audio_sec = pcm16_duration_sec(pcm16, sample_rate_hz)
    print_summary(tally.summary(session, audio_sec, wall_sec, results), settings, out)
    return EXIT_OK
