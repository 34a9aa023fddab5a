"""The api keys CreateSession accepts (`auth.allowed_api_keys`, `auth.allowed_api_keys_file`).

Entries are plain keys or `sha256:<64 hex>` digests (so a key file need not hold the keys
themselves); both become the digest `Authenticator` compares against. A file holds one entry per
line; blank lines and `#` comments are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

from appliance.config_schema import AuthConfig
from appliance.security.auth import hash_api_key

_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")


class ApiKeyFileError(ValueError):
    """The key file cannot be read or holds a line that is not a key."""


def _digest(entry: str) -> str:
    match = _DIGEST.fullmatch(entry)
    return match.group(1).lower() if match else hash_api_key(entry)


def read_key_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ApiKeyFileError(f"auth.allowed_api_keys_file {path!r} cannot be read: {err}") from None
    entries = [line.split("#", 1)[0].strip() for line in lines]
    return [entry for entry in entries if entry]


def allowed_key_digests(auth: AuthConfig) -> set[str] | None:
    """The sha256 digests of every allowed key; None when no list is configured (any well-formed key)."""
    entries: list[str] = list(auth.allowed_api_keys or [])
    if auth.allowed_api_keys_file:
        entries += read_key_file(auth.allowed_api_keys_file)
    if auth.allowed_api_keys is None and not auth.allowed_api_keys_file:
        return None
    return {_digest(entry) for entry in entries}
