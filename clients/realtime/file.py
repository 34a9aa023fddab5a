"""`python -m clients.realtime.file`: stream an audio file in chunks at speaking pace,
as a microphone would, and print partial/final results as they arrive."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from clients.cli_common import ClientKind, run

REALTIME_FILE = ClientKind(
    prog="clients.realtime.file",
    description="Stream an audio file to the appliance in realtime-paced chunks and print the results.",
    streaming=True,
)


def main(argv: Sequence[str] | None = None) -> int:
    return run(REALTIME_FILE, argv)


if __name__ == "__main__":
    sys.exit(main())
