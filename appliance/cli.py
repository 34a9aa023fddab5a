"""`stt-appliance` command line: serve, models."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from appliance import __version__


def _serve(args: argparse.Namespace) -> int:
    from appliance.app import configure_logging, serve
    from appliance.config import ConfigError, load_config, overrides_from_args
    from appliance.models.store import ModelStoreError
    from appliance.transport.grpc.tls import TlsError

    try:
        config = load_config(server_path=args.config, model_path=args.model_config,
                             overrides=overrides_from_args(args))
    except ConfigError as err:
        print(f"stt-appliance: configuration error: {err}", file=sys.stderr)
        return 2
    configure_logging(config)
    try:
        return asyncio.run(serve(config, ready_file=Path(args.ready_file) if args.ready_file else None))
    except TlsError as err:
        print(f"stt-appliance: TLS error: {err}", file=sys.stderr)
        return 2
    except ModelStoreError as err:
        print(f"stt-appliance: model error: {err}", file=sys.stderr)
        return 3


def _models(args: argparse.Namespace) -> int:
    from appliance.models.store import PACKS, ModelStoreError, resolve_model

    if args.action == "list":
        rows = []
        for name, pack in sorted(PACKS.items()):
            try:
                resolved = resolve_model(name) if args.verify else None
                state = "verified" if resolved else "known"
            except ModelStoreError as err:
                state = f"unavailable: {err}"
            rows.append({"name": name, "package": pack.distribution, "state": state})
        for row in rows:
            print(json.dumps(row) if args.json else f"{row['name']:10} {row['package']:32} {row['state']}")
        return 0
    try:
        resolved = resolve_model(args.name)
    except ModelStoreError as err:
        print(f"stt-appliance: {err}", file=sys.stderr)
        return 3
    print(f"{resolved.name}: ok ({resolved.path}, {resolved.source})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from appliance.config import add_serve_arguments

    parser = argparse.ArgumentParser(prog="stt-appliance", description="Streaming speech-to-text edge appliance")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the gRPC server (default)")
    add_serve_arguments(serve)
    serve.add_argument("--ready-file", help="write {grpc_port, pid, model_id} as JSON here once serving")
    serve.set_defaults(handler=_serve)
    models = commands.add_parser("models", help="list or verify model packs")
    models_actions = models.add_subparsers(dest="action", required=True)
    listing = models_actions.add_parser("list", help="known model packs")
    listing.add_argument("--verify", action="store_true", help="also check installed files against their sha256")
    listing.add_argument("--json", action="store_true")
    verify = models_actions.add_parser("verify", help="check one model's files")
    verify.add_argument("name")
    models.set_defaults(handler=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "serve")  # `stt-appliance --port 50051` means serve
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
