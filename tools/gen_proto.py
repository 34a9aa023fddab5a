"""Regenerate the gRPC stubs in appliance/api/ from proto/stt.proto (the only way to change them).

    python tools/gen_proto.py            # rewrite appliance/api/stt_pb2*.py
    python tools/gen_proto.py --check    # exit 1 when the committed stubs are stale

The proto is mapped to the virtual path appliance/api/stt.proto so the generated modules import
each other as `appliance.api.stt_pb2`: one importable package, no sys.path tricks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STUBS = ("stt_pb2.py", "stt_pb2.pyi", "stt_pb2_grpc.py")


def generate(out_root: Path) -> dict[str, bytes]:
    """Run protoc into `out_root`; return {stub file name: bytes}."""
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", f"-Iappliance/api={REPO_ROOT / 'proto'}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", str(REPO_ROOT / "proto" / "stt.proto")]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on proto/stt.proto")
    return {name: (out_root / "appliance" / "api" / name).read_bytes() for name in STUBS}


def stale_stubs() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    committed_dir = REPO_ROOT / "appliance" / "api"
    return [name for name, data in fresh.items()
            if not (committed_dir / name).exists() or (committed_dir / name).read_bytes() != data]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        stale = stale_stubs()
        for name in stale:
            print(f"stale: appliance/api/{name} (run python tools/gen_proto.py)")
        return 1 if stale else 0
    generate(REPO_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
