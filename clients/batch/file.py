"""`python -m clients.batch.file`: upload a whole audio file as one chunk (upload_mode=batch)
with the accuracy-oriented decode profile by default, and print the results."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from clients.cli_common import ClientKind, run

BATCH_FILE = ClientKind(
    prog="clients.batch.file",
    description="Send a whole audio file to the appliance as one chunk and print the results.",
    streaming=False,
    defaults={"decode_profile": "accurate"},
    forced_attributes={"upload_mode": "batch"},
)


def main(argv: Sequence[str] | None = None) -> int:
    return run(BATCH_FILE, argv)


if __name__ == "__main__":
    sys.exit(main())
