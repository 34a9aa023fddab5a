"""CreateSession against hostile callers: replayed signed tokens, made-up and rotated api keys, one
host grabbing every slot, and credentials no gRPC library would send. Each is refused with its code
(ERR1004/1006/1007) while an honest client keeps getting sessions and transcripts."""

from __future__ import annotations

import hashlib
import re
import time

import grpc
import pytest

from appliance.api import stt_pb2
from appliance.security.auth import auth_metadata
from clients.sdk import SttClient, SttError
from tests.adversarial.raw_grpc import unary_call
from tests.adversarial.victim import assert_transcribes, ipv6_loopback_or_skip
from tests.conftest import expect_error, serve_in_process, start_appliance

SECRET = "adversarial-signing-secret"
CREATE_SESSION = "/stt.v1.SpeechToText/CreateSession"
DUAL_STACK = ("--grpc-host", "::")  # the attacker comes from 127.0.0.1, the victim from ::1


def victim_address(server) -> str:
    return f"[::1]:{server.port}"


def test_a_replayed_signed_token_is_refused_inside_its_window_and_after_it(request, front_center_wav):
    server = serve_in_process(request, env={"STT_AUTH_CREATE_SESSION_AUTH_PROFILE": "signed_token",
                                            "STT_AUTH_CREATE_SESSION_AUTH_SECRET": SECRET,
                                            "STT_AUTH_CREATE_SESSION_AUTH_TTL_SEC": "2"})
    captured = auth_metadata(SECRET)  # what an eavesdropper copied off the victim's CreateSession
    with SttClient(server.address, metadata=captured) as victim_client:
        victim = victim_client.create_session()
    with SttClient(server.address, metadata=captured) as attacker:
        inside = expect_error(attacker.create_session)
        time.sleep(2.5)  # past the TTL: the replay memory may forget it, the ts check refuses it
        after = expect_error(attacker.create_session)
    assert inside.code == "ERR1004" and "replayed" in inside.message
    assert after.code == "ERR1004" and "expired" in after.message
    assert_transcribes(server.address, front_center_wav, session=victim)
    assert_transcribes(server.address, front_center_wav, metadata=auth_metadata(SECRET))


def test_made_up_and_rotated_api_keys_get_nothing_and_a_key_holder_elsewhere_is_served(
        request, tmp_path, front_center_wav):
    ipv6_loopback_or_skip()
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("".join(f"sha256:{hashlib.sha256(f'stolen-{i}'.encode()).hexdigest()}\n"
                                 for i in range(10)) + "victim-key\n")
    server = serve_in_process(request, *DUAL_STACK, env={
        "STT_AUTH_CREATE_SESSION_AUTH_PROFILE": "api_key", "STT_AUTH_ALLOWED_API_KEYS_FILE": str(keys_file),
        "STT_SERVER_CREATE_SESSION_RPS": "0.2", "STT_SERVER_CREATE_SESSION_BURST": "3"})
    with SttClient(server.address) as attacker:
        made_up = [expect_error(lambda k=k: attacker.create_session(attributes={"api_key": k}))
                   for k in ("guess-1", "guess-2", "cl\u00e9", "x" * 300)]
        outcomes: list[object] = []
        for i in range(10):  # ten real keys, rotated: the client IP's bucket still holds
            try:
                attacker.create_session(attributes={"api_key": f"stolen-{i}"})
                outcomes.append("ok")
            except SttError as err:
                outcomes.append(err)
    assert all(e.code == "ERR1004" for e in made_up), made_up
    assert outcomes[:3] == ["ok"] * 3
    assert all(getattr(e, "code", None) == "ERR1006" and "client IP" in e.message for e in outcomes[3:]), outcomes
    assert_transcribes(victim_address(server), front_center_wav, attributes={"api_key": "victim-key"})


def test_one_host_cannot_hold_every_session_by_default(request, front_center_wav):
    ipv6_loopback_or_skip()
    server = serve_in_process(request, *DUAL_STACK)  # shipped limits: 16 per client IP, 50 in all
    with SttClient(server.address) as attacker:
        for _ in range(16):
            attacker.create_session()  # created and never streamed: each holds a slot until it expires
        refused = expect_error(attacker.create_session)
    assert refused.code == "ERR1007" and "max_sessions_per_ip=16" in refused.message
    assert refused.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_transcribes(victim_address(server), front_center_wav)


BAD_AUTHORIZATION = [
    b"Bearer caf\xc3\xa9",  # UTF-8, not ASCII
    b"Bearer \xff\xfe\xfd",  # not UTF-8 at all
    b"Bearer \x01\x02\x7f",  # control characters
    b"\xe9" * 8000,  # large and undecodable
    b"Bearer " + b"x" * 20_000,  # larger than any client library would send
    b"Bearer 1700000000:" + b"f" * 64,  # well-formed, wrong and long expired
    b"Basic dXNlcjpwYXNz",
]


def test_unparseable_credentials_on_grpc_metadata_are_err1004_and_stay_out_of_the_log(request, front_center_wav):
    # A process of its own: grpcio's log guard (one count line a minute) is per process.
    server = start_appliance(request, env={"STT_AUTH_CREATE_SESSION_AUTH_PROFILE": "signed_token",
                                           "STT_AUTH_CREATE_SESSION_AUTH_SECRET": SECRET})
    body = stt_pb2.SessionRequest().SerializeToString()
    for value in BAD_AUTHORIZATION:
        for headers in ([(b"authorization", value)], [(b"authorization", b"Bearer " + b"a" * 64),
                                                      (b"x-stt-auth-ts", value)]):
            reply = unary_call(server.address, CREATE_SESSION, body, headers)
            assert reply.grpc_status == grpc.StatusCode.UNAUTHENTICATED.value[0], (value, reply)
            assert reply.grpc_message.startswith("ERR1004"), (value, reply)
    assert_transcribes(server.address, front_center_wav, metadata=auth_metadata(SECRET))
    log = server.log()
    assert "Traceback" not in log and "\\xe9\\xe9" not in log and "\\xff\\xfe" not in log
    # one line says such headers arrived, without their bytes
    assert len(re.findall(r"not UTF-8 arrived", log)) == 1


@pytest.mark.parametrize("attributes", [{"api_key": "cl\u00e9"}, {"api_key": "k" * 257}, {"api_key": "a b"}])
def test_malformed_api_key_attributes_are_err1004(appliance_server, attributes):
    with SttClient(appliance_server.address) as client:
        error = expect_error(lambda: client.create_session(attributes={**attributes, "api_key_required": "true"}))
    assert error.code == "ERR1004" and "malformed api_key" in error.message
