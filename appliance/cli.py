"""`stt-appliance` command line: serve, detect, models."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import __version__

if TYPE_CHECKING:
    from appliance.config import AppConfig


def _serve(args: argparse.Namespace) -> int:
    from appliance.app import StartupError, configure_logging, serve
    from appliance.config import ConfigError, load_config_from_args
    from appliance.models.store import ModelStoreError
    from appliance.transport.grpc.tls import TlsError

    try:
        config = load_config_from_args(args)
    except ConfigError as err:
        print(f"stt-appliance: configuration error: {err}", file=sys.stderr)
        return 2
    configure_logging(config)
    config, hardware_report = decide_hardware(config)
    try:
        return asyncio.run(serve(config, ready_file=Path(args.ready_file) if args.ready_file else None,
                                 hardware_report=hardware_report))
    except TlsError as err:
        print(f"stt-appliance: TLS error: {err}", file=sys.stderr)
        return 2
    except ModelStoreError as err:
        print(f"stt-appliance: model error: {err}", file=sys.stderr)
        return 3
    except StartupError as err:
        print(f"stt-appliance: cannot start: {err}", file=sys.stderr)
        return 1


def parse_serve_args(argv: Sequence[str]) -> argparse.Namespace:
    """`stt-appliance serve ARGV`'s flags, parsed as the command line parses them (SystemExit on a bad one).

    With `appliance.config.load_config_from_args` and `decide_hardware` this is the whole of how
    `serve` arrives at its config: the in-process appliance of the tests (tests/inprocess.py) goes
    the same way."""
    return build_parser().parse_args(["serve", *argv])


def decide_hardware(config: AppConfig) -> tuple[AppConfig, dict]:
    """Probe the machine, log the model setup chosen, and return the effective config with the
    decision's report (shown by /system)."""
    import logging

    from appliance.hardware import apply_decision, detect
    from appliance.hardware.report import log_decision

    decision = detect(config)
    log_decision(decision, logging.getLogger("appliance.hardware"))
    return apply_decision(config, decision), decision.to_dict()


def _detect(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config_from_args
    from appliance.hardware import detect
    from appliance.hardware.report import format_decision

    try:
        config = load_config_from_args(args)
    except ConfigError as err:
        print(f"stt-appliance: configuration error: {err}", file=sys.stderr)
        return 2
    decision = detect(config)  # warnings are in the output, not logged
    print(json.dumps(decision.to_dict(), indent=2) if args.json else format_decision(decision))
    return 0


def _models(args: argparse.Namespace) -> int:
    from appliance.models.store import ModelStoreError

    try:
        return _MODEL_ACTIONS[args.action](args)
    except ModelStoreError as err:
        print(f"stt-appliance: {err}", file=sys.stderr)
        return 3


def _models_list(args: argparse.Namespace) -> int:
    from appliance.models.store import PACKS, UNUSABLE, ModelStoreError, resolve_model

    rows = []
    for name, pack in sorted(PACKS.items()):
        try:
            resolved = resolve_model(name) if args.verify else None
            state = f"verified ({resolved.path})" if resolved else "known"
        except ModelStoreError as err:
            state = f"unavailable: {err}"
        rows.append({"name": name, "package": pack.distribution, "state": state})
    rows += [{"name": name, "package": "-", "state": f"unusable: {why}"} for name, why in sorted(UNUSABLE.items())]
    for row in rows:
        print(json.dumps(row) if args.json else f"{row['name']:10} {row['package']:70} {row['state']}")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from appliance.models.store import resolve_model

    resolved = resolve_model(args.name)
    print(f"{resolved.name}: ok ({resolved.path}, {resolved.source})")
    return 0


def _models_fetch(args: argparse.Namespace) -> int:
    from appliance.models.fetch import fetch_model

    resolved = fetch_model(args.name, allow_network=args.allow_network, revision=args.revision)
    print(f"{resolved.name}: ok ({resolved.path}, {resolved.source})")
    return 0


def _models_convert(args: argparse.Namespace) -> int:
    from appliance.models.store import ModelStoreError, resolve_model

    resolved = resolve_model(args.name)
    try:
        from appliance.models.convert import torch_checkpoint
    except ImportError as err:
        raise ModelStoreError(f"converting needs torch and openai-whisper ({err}): EXTRAS=torch scripts/setup.sh") \
            from err
    print(torch_checkpoint(resolved.path))
    return 0


_MODEL_ACTIONS = {"list": _models_list, "verify": _models_verify, "fetch": _models_fetch,
                  "convert": _models_convert}


def _healthcheck(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.healthcheck import run

    try:
        config = load_config(server_path=args.config, model_path=args.model_config)
    except ConfigError as err:
        print(f"stt-appliance: configuration error: {err}", file=sys.stderr)
        return 2
    return run(config, url=args.url, timeout_sec=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    from appliance.config import add_serve_arguments, default_config_paths

    parser = argparse.ArgumentParser(prog="stt-appliance", description="Streaming speech-to-text edge appliance")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the gRPC server (default)")
    add_serve_arguments(serve)
    serve.add_argument("--ready-file", help="write {grpc_port, http_port, pid, model_id} as JSON here once serving")
    serve.set_defaults(handler=_serve)
    detect = commands.add_parser("detect", help="probe the hardware and show the model setup serve would choose")
    add_serve_arguments(detect)
    detect.add_argument("--json", action="store_true", help="print the decision as JSON")
    detect.set_defaults(handler=_detect)
    models = commands.add_parser("models", help="list, verify, fetch or convert models (docs/models.md)")
    models_actions = models.add_subparsers(dest="action", required=True)
    listing = models_actions.add_parser("list", help="known model packs")
    listing.add_argument("--verify", action="store_true", help="also check installed files against their sha256")
    listing.add_argument("--json", action="store_true")
    verify = models_actions.add_parser("verify", help="resolve one model (assembling a split pack) and check its files")
    verify.add_argument("name")
    fetch = models_actions.add_parser("fetch", help="download a CTranslate2 model from the Hugging Face hub")
    fetch.add_argument("name", help="model name (tiny, base.en, small, large-v3, ...) or hub repository id")
    fetch.add_argument("--allow-network", action="store_true", help="required: the appliance is offline otherwise")
    fetch.add_argument("--revision", help="hub revision (branch, tag or commit)")
    convert = models_actions.add_parser("convert", help="convert a model for the torch_whisper backend")
    convert.add_argument("name")
    convert.add_argument("--to", choices=("torch",), required=True, help="target format")
    models.set_defaults(handler=_models)
    healthcheck = commands.add_parser("healthcheck", help="GET /health of a running server; exit 0 when healthy")
    server_yaml, model_yaml = default_config_paths()
    healthcheck.add_argument("--config", default=str(server_yaml), help="server YAML (for http_host, metrics_port)")
    healthcheck.add_argument("--model-config", default=str(model_yaml), help="model YAML")
    healthcheck.add_argument("--url", help="check this URL instead of the configured one")
    healthcheck.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    healthcheck.set_defaults(handler=_healthcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # `stt-appliance --port 50051` means serve
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
