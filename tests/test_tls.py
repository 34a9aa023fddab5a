"""gRPC TLS end to end: a real appliance process with a self-signed certificate made here, real clients.

The certificates come from the `openssl` command line (`cryptography` is not a dependency): EC P-256,
one day, SAN DNS:localhost and IP:127.0.0.1 so that clients dialling 127.0.0.1:PORT verify the name.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appliance.transport.grpc.server import SERVICE_NAME
from appliance.transport.grpc.tls import TlsError, load_tls_pair, server_credentials
from clients.audio import load_pcm16
from clients.sdk import SttClient, SttError
from tests.helpers import REPO_ROOT, normalise
from tests.inprocess import InProcessAppliance


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def make_self_signed(directory: Path, name: str) -> CertPair:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return CertPair(cert, key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> CertPair:
    return make_self_signed(tmp_path_factory.mktemp("tls"), "server")


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory) -> CertPair:
    """A second, unrelated self-signed pair: an untrusted CA for clients, a mismatched key for the server."""
    return make_self_signed(tmp_path_factory.mktemp("tls-other"), "other")


@pytest.fixture(scope="module")
def tls_server(certs):
    with InProcessAppliance("--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
                        "--tls-required") as server:
        yield server


# --- the pair check, in process ------------------------------------------------------------

def test_load_tls_pair_accepts_matching_pair(certs):
    pair = load_tls_pair(certs.cert, certs.key)
    assert b"BEGIN CERTIFICATE" in pair.cert_chain_pem and b"PRIVATE KEY" in pair.private_key_pem
    assert isinstance(server_credentials(str(certs.cert), str(certs.key)), grpc.ServerCredentials)


def test_load_tls_pair_names_the_bad_file(certs, other_certs, tmp_path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(TlsError, match=re.escape(str(missing))) as err:
        load_tls_pair(missing, certs.key)
    assert err.value.key == "tls.cert_file"
    with pytest.raises(TlsError, match=re.escape(str(missing))) as err:
        load_tls_pair(certs.cert, missing)
    assert err.value.key == "tls.key_file"
    with pytest.raises(TlsError, match="does not match") as err:
        load_tls_pair(certs.cert, other_certs.key)
    assert err.value.key == "tls.key_file" and str(other_certs.key) in str(err.value)
    with pytest.raises(TlsError, match="no PEM certificate"):
        load_tls_pair(certs.key, certs.key)  # the key given as the certificate
    with pytest.raises(TlsError, match="no PEM private key"):
        load_tls_pair(certs.cert, certs.cert)  # the certificate given as the key
    empty = tmp_path / "empty.key"
    empty.write_text("")
    with pytest.raises(TlsError, match="empty"):
        load_tls_pair(certs.cert, empty)


# --- a real TLS server and real clients ----------------------------------------------------

def test_sdk_streams_over_tls(tls_server, certs, front_center_wav):
    pcm16, rate_hz = load_pcm16(front_center_wav)
    with SttClient(tls_server.address, tls_ca_file=certs.cert) as client:
        session = client.create_session()
        results = list(client.stream_audio(session, pcm16, rate_hz, realtime=False))
    text = normalise(" ".join(r.text for r in results if r.is_final and r.text))
    assert "front" in text and "center" in text, results


def test_plaintext_client_is_refused(tls_server):
    with SttClient(tls_server.address, timeout_sec=10) as client, pytest.raises(SttError) as err:
        client.create_session()
    assert err.value.status == grpc.StatusCode.UNAVAILABLE, err.value


@pytest.mark.parametrize("trust", ["other_ca", "system_cas"])
def test_client_that_does_not_trust_the_cert_is_refused(tls_server, other_certs, trust):
    options = {"tls_ca_file": other_certs.cert} if trust == "other_ca" else {"tls": True}
    with SttClient(tls_server.address, timeout_sec=10, **options) as client, pytest.raises(SttError) as err:
        client.create_session()
    assert err.value.status == grpc.StatusCode.UNAVAILABLE, err.value


def test_health_serving_over_tls(tls_server, certs):
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.cert.read_bytes())
    with grpc.secure_channel(tls_server.address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service


def test_health_check_over_localhost_name(tls_server, certs):
    """The SAN's DNS:localhost entry works too (a client dialling by name, not by IP)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.cert.read_bytes())
    with grpc.secure_channel(f"localhost:{tls_server.port}", credentials) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def _run(*args: str, timeout_sec: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout_sec)


def test_realtime_file_cli_over_tls(tls_server, certs, front_center_wav):
    done = _run("clients.realtime.file", str(front_center_wav), "--server", f"127.0.0.1:{tls_server.port}",
                "--tls-ca-file", str(certs.cert), "--no-realtime", "--json", timeout_sec=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    finals = [line for line in lines if line.get("is_final")]
    assert finals, lines
    text = normalise(" ".join(line["text"] for line in finals))
    assert "front" in text and "center" in text, text


def test_realtime_file_cli_without_tls_fails_against_tls_server(tls_server, front_center_wav):
    done = _run("clients.realtime.file", str(front_center_wav), "--server", tls_server.address,
                "--no-realtime", "--json", timeout_sec=120)
    assert done.returncode != 0
    assert "UNAVAILABLE" in done.stdout + done.stderr


# --- start-up refusals ---------------------------------------------------------------------

def _serve(*args: str) -> tuple[int, str]:
    done = _run("appliance", "serve", "--port", "0", "--grpc-host", "127.0.0.1", *args)
    return done.returncode, done.stdout + done.stderr


def test_tls_required_without_cert_refuses_to_start():
    code, output = _serve("--tls-required")
    assert code != 0, output
    assert "tls" in output.lower() and "cert_file" in output, output


def test_missing_cert_file_refuses_to_start(certs, tmp_path):
    missing = tmp_path / "no-such-cert.pem"
    code, output = _serve("--tls-required", "--tls-cert-file", str(missing), "--tls-key-file", str(certs.key))
    assert code != 0, output
    assert str(missing) in output and "tls.cert_file" in output, output


def test_missing_key_file_refuses_to_start(certs, tmp_path):
    missing = tmp_path / "no-such-key.pem"
    code, output = _serve("--tls-cert-file", str(certs.cert), "--tls-key-file", str(missing))
    assert code != 0, output
    assert str(missing) in output and "tls.key_file" in output, output


def test_mismatched_key_refuses_to_start(certs, other_certs):
    code, output = _serve("--tls-cert-file", str(certs.cert), "--tls-key-file", str(other_certs.key))
    assert code != 0, output
    assert "does not match" in output and str(other_certs.key) in output and str(certs.cert) in output, output


def test_cert_without_key_refuses_to_start(certs):
    code, output = _serve("--tls-cert-file", str(certs.cert))
    assert code != 0, output
    assert "tls.key_file" in output, output
