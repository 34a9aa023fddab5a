"""`python -m clients.batch.file`: upload a whole audio file at once (upload_mode=batch: no
real-time pacing, chunks of up to 60 s) with the accuracy-oriented decode profile by default, and
print the results."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from clients.cli_common import ClientKind, run

BATCH_FILE = ClientKind(
    prog="clients.batch.file",
    description="Send a whole audio file to the appliance at once and print the results.",
    streaming=False,
    defaults={"decode_profile": "accurate"},
    forced_attributes={"upload_mode": "batch"},
)


def main(argv: Sequence[str] | None = None) -> int:
    return run(BATCH_FILE, argv)


if __name__ == "__main__":
    sys.exit(main())
