"""Server TLS for gRPC: load the certificate chain and private key, and check them before any port opens.

gRPC's own loader reports a bad pair late (at the first handshake, or as a bare "bind failed"), so the
pair is checked here with OpenSSL through `ssl`: each file must be readable PEM, the key unencrypted,
and the key must belong to the first certificate of the chain. Every failure is a `TlsError` whose
message names the setting and the file, e.g.

    tls.key_file: /etc/stt/key.pem does not match the certificate in /etc/stt/cert.pem
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc

from appliance.config import ConfigError

log = logging.getLogger(__name__)

_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKERS = (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN EC PRIVATE KEY-----",
                b"-----BEGIN RSA PRIVATE KEY-----", b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


class TlsError(ConfigError):
    """The TLS certificate or key cannot be used; `key` is "tls.cert_file" or "tls.key_file"."""

    def __init__(self, key: str, message: str):
        super().__init__(key, f"{key}: {message}")


@dataclass(frozen=True)
class TlsPair:
    """A checked certificate chain and private key (PEM bytes, as gRPC wants them)."""

    cert_file: Path
    key_file: Path
    cert_chain_pem: bytes
    private_key_pem: bytes


def _read(key: str, path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TlsError(key, f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise TlsError(key, f"{what} path is a directory, not a file: {path}") from None
    except OSError as err:
        raise TlsError(key, f"cannot read {what} file {path}: {err.strerror or err}") from None
    if not data.strip():
        raise TlsError(key, f"{what} file is empty: {path}")
    return data


def _no_password() -> bytes:
    raise TlsError("tls.key_file", "the private key is encrypted; gRPC needs an unencrypted key")


def load_tls_pair(cert_file: str | os.PathLike, key_file: str | os.PathLike) -> TlsPair:
    """Read and check a certificate chain and its private key; raises TlsError naming the bad file."""
    cert_path, key_path = Path(cert_file), Path(key_file)
    cert_pem = _read("tls.cert_file", cert_path, "certificate")
    key_pem = _read("tls.key_file", key_path, "private key")

    if _CERT_BEGIN not in cert_pem:
        raise TlsError("tls.cert_file", f"{cert_path} holds no PEM certificate (no '{_CERT_BEGIN.decode()}' "
                                        "line); was the key given as the certificate?")
    try:
        ssl.create_default_context(cadata=cert_pem.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError) as err:
        raise TlsError("tls.cert_file", f"{cert_path} is not a valid PEM certificate chain: {err}") from None

    if not any(marker in key_pem for marker in _KEY_MARKERS):
        raise TlsError("tls.key_file", f"{key_path} holds no PEM private key; was the certificate given "
                                       "as the key?")
    if b"ENCRYPTED" in key_pem:
        raise TlsError("tls.key_file", f"{key_path} is encrypted; gRPC needs an unencrypted private key "
                                       "(decrypt it with `openssl pkey -in KEY -out KEY.plain`)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert_path), str(key_path), password=_no_password)
    except TlsError as err:
        raise TlsError("tls.key_file", f"{key_path}: {err.message.split(': ', 1)[-1]}") from None
    except ssl.SSLError as err:
        if err.reason == "KEY_VALUES_MISMATCH" or "key values mismatch" in str(err).lower():
            raise TlsError("tls.key_file", f"{key_path} does not match the certificate in {cert_path} "
                                           "(the key belongs to another certificate)") from None
        raise TlsError("tls.key_file", f"cannot load {key_path} with the certificate {cert_path}: "
                                       f"{err}") from None
    except OSError as err:  # raced away between the read above and here
        raise TlsError("tls.key_file", f"cannot read {key_path}: {err.strerror or err}") from None

    try:
        mode = key_path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("tls.key_file %s is readable by group/others (mode %o); chmod 600 it",
                        key_path, stat.S_IMODE(mode))
    except OSError:
        pass
    return TlsPair(cert_path, key_path, cert_pem, key_pem)


def server_credentials(cert_file: str | os.PathLike, key_file: str | os.PathLike) -> grpc.ServerCredentials:
    """gRPC server credentials from a checked pair (no client certificates asked for)."""
    pair = load_tls_pair(cert_file, key_file)
    log.info("gRPC TLS enabled with certificate %s", pair.cert_file)
    return grpc.ssl_server_credentials([(pair.private_key_pem, pair.cert_chain_pem)])
