"""The `serve` command-line flags: one table mapping each flag to a dotted config key.

The flag's type, choices and default come from the config schema (`appliance.config_schema`), so
the table holds only flag -> key -> help. Every flag defaults to None, so `overrides_from_args`
returns exactly the flags given, which `appliance.config.load_config` applies above env vars and
files. (`load_config_from_args` lives in appliance.config: this module sits below it.)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from appliance.config_schema import section_fields
from appliance.config_sources import default_config_paths
from appliance.fields import FieldSpec


@dataclass(frozen=True)
class CliFlag:
    flag: str
    key: str  # dotted config key the flag overrides
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


SERVE_FLAGS: tuple[CliFlag, ...] = (
    CliFlag("--model", "model.name", "Whisper model name or path"),
    CliFlag("--model-dir", "model.model_dir", "local CTranslate2 model directory (overrides --model)"),
    CliFlag("--model-backend", "model.backend", "decode backend"),
    CliFlag("--device", "model.device", "compute device"),
    CliFlag("--compute-type", "model.compute_type", "weight/compute precision"),
    CliFlag("--language", "model.language", "language code ('' = auto-detect)"),
    CliFlag("--model-pool-size", "model.pool_size", "number of preloaded model instances"),
    CliFlag("--profile", "model.profile", "model load profile at boot: auto or a profile name"),
    CliFlag("--port", "server.port", "gRPC listen port (0 = pick a free port)"),
    CliFlag("--grpc-host", "server.grpc_host", "gRPC bind address"),
    CliFlag("--http-host", "server.http_host", "HTTP metrics/health bind host"),
    CliFlag("--max-sessions", "server.max_sessions", "concurrent client streams accepted"),
    CliFlag("--log-metrics", "server.log_metrics", "log decode latency and real-time factor per decode"),
    CliFlag("--decode-timeout", "server.decode_timeout_sec",
            "seconds to wait for outstanding decodes while draining (<= 0 waits indefinitely)"),
    CliFlag("--metrics-port", "server.metrics_port", "HTTP metrics/health port"),
    CliFlag("--wyoming-port", "wyoming.port", "Wyoming (Home Assistant) TCP port (0 = off)"),
    CliFlag("--log-level", "logging.level", "log level"),
    CliFlag("--log-file", "logging.file", "log file path"),
    CliFlag("--faster-whisper-log-level", "logging.faster_whisper_level",
            "faster_whisper logger level (default WARNING)"),
    CliFlag("--tls-cert-file", "tls.cert_file", "TLS certificate chain (PEM); enables gRPC TLS"),
    CliFlag("--tls-key-file", "tls.key_file", "TLS private key (PEM); enables gRPC TLS"),
    CliFlag("--tls-required", "tls.required", "refuse to start without a TLS cert and key"),
    CliFlag("--vad-silence", "vad.silence", "trailing silence in seconds that ends an utterance"),
    CliFlag("--vad-threshold", "vad.threshold", "Silero VAD speech probability threshold (0-1)"),
    CliFlag("--speech-threshold", "safety.speech_rms_threshold",
            "minimum RMS before buffered audio counts as speech (ignores low-level noise)"),
    CliFlag("--require-api-key", "auth.require_api_key", "require api_key on CreateSession"),
)

# Flags of deprecated keys (config_schema.DEPRECATED_KEYS): still parsed, so an old command line or
# systemd unit keeps starting, and passed on so the loader logs that they are ignored.
DEPRECATED_FLAGS: tuple[CliFlag, ...] = (
    CliFlag("--grpc-worker-threads", "server.grpc_worker_threads", "deprecated and ignored"),
)


def _spec(key: str) -> FieldSpec:
    section, name = key.split(".")
    return section_fields(section)[name]


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--config`, `--model-config` and every flag of SERVE_FLAGS and DEPRECATED_FLAGS to `parser`."""
    server_yaml, model_yaml = default_config_paths()
    parser.add_argument("--config", default=str(server_yaml), metavar="PATH",
                        help=f"server YAML (default: {server_yaml})")
    parser.add_argument("--model-config", default=str(model_yaml), metavar="PATH",
                        help=f"model/decode YAML (default: {model_yaml})")
    for row in SERVE_FLAGS:
        spec = _spec(row.key)
        text = f"{row.help} [{row.key}]"
        if spec.base is bool:
            parser.add_argument(row.flag, dest=row.dest, action="store_true", default=None, help=text)
        else:
            metavar = "{" + ",".join(spec.choices) + "}" if spec.choices else row.dest.upper()
            parser.add_argument(row.flag, dest=row.dest, type=spec.base, default=None, metavar=metavar,
                                help=text)
    for row in DEPRECATED_FLAGS:
        parser.add_argument(row.flag, dest=row.dest, default=None, metavar="VALUE", help=f"{row.help} [{row.key}]")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted-key overrides for the flags actually given on the command line."""
    return {row.key: getattr(args, row.dest) for row in (*SERVE_FLAGS, *DEPRECATED_FLAGS)
            if getattr(args, row.dest, None) is not None}

