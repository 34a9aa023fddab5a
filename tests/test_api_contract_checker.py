"""The additive-rule checkers of tests/api_contract.py catch every kind of break: each test breaks a
copy of the golden one way and expects the problem to be named."""

from __future__ import annotations

import copy

import pytest

from tests.api_contract import ERROR_GOLDEN, PROTO_GOLDEN, _fields, _load, check_errors, check_proto


@pytest.fixture
def golden_proto() -> dict:
    return _load(PROTO_GOLDEN)


@pytest.fixture
def golden_errors() -> dict:
    return _load(ERROR_GOLDEN)


def _one(problems: list[str], *fragments: str) -> str:
    matching = [p for p in problems if all(f in p for f in fragments)]
    assert matching, f"expected a problem mentioning {fragments}, got {problems}"
    return matching[0]


def test_checker_accepts_additions(golden_proto, golden_errors):
    proto = copy.deepcopy(golden_proto)
    _fields(proto, "STTResult")["speakers"] = {"number": 99, "type": "stt.v1.Speaker", "label": "repeated"}
    proto["messages"]["stt.v1.Speaker"] = {"fields": {"label": {"number": 1, "type": "string", "label": "singular"}}}
    proto["enums"]["stt.v1.Task"]["values"]["TASK_DIARIZE"] = 3
    proto["services"]["stt.v1.SpeechToText"]["methods"]["ListModels"] = {
        "input": "stt.v1.Empty", "output": "stt.v1.Models", "client_streaming": False, "server_streaming": False}
    errors = copy.deepcopy(golden_errors)
    errors["codes"]["ERR1099"] = {"meaning": "new", "grpc_status": "INTERNAL", "http_status": 500}
    assert check_proto(golden_proto, proto) == []
    assert check_errors(golden_errors, errors) == []


def test_checker_reports_a_renamed_field(golden_proto):
    proto = copy.deepcopy(golden_proto)
    fields = _fields(proto, "STTResult")
    fields["transcript"] = fields.pop("text")
    problems = check_proto(golden_proto, proto)
    assert _one(problems, "stt.v1.STTResult.text", "reused by a different name", "'transcript'")


def test_checker_reports_a_removed_field(golden_proto):
    proto = copy.deepcopy(golden_proto)
    del _fields(proto, "AudioChunk")["session_token"]
    assert _one(check_proto(golden_proto, proto), "stt.v1.AudioChunk.session_token", "removed")


def test_checker_reports_a_renumbered_field(golden_proto):
    proto = copy.deepcopy(golden_proto)
    _fields(proto, "AudioChunk")["sample_rate_hz"]["number"] = 30
    assert _one(check_proto(golden_proto, proto), "stt.v1.AudioChunk.sample_rate_hz", "renumbered 3 -> 30")


def test_checker_reports_a_reused_field_number(golden_proto):
    proto = copy.deepcopy(golden_proto)
    fields = _fields(proto, "SessionResponse")
    del fields["max_chunk_ms"]
    fields["max_chunk_bytes"] = {"number": 12, "type": "int32", "label": "singular"}
    assert _one(check_proto(golden_proto, proto), "stt.v1.SessionResponse.max_chunk_ms",
                "number 12 is reused", "'max_chunk_bytes'")


def test_checker_reports_a_changed_type(golden_proto):
    proto = copy.deepcopy(golden_proto)
    _fields(proto, "STTResult")["start_sec"]["type"] = "float"
    assert _one(check_proto(golden_proto, proto), "stt.v1.STTResult.start_sec", "type changed double -> float")


def test_checker_reports_a_changed_label(golden_proto):
    proto = copy.deepcopy(golden_proto)
    _fields(proto, "SessionRequest")["vad_threshold"]["label"] = "singular"
    assert _one(check_proto(golden_proto, proto), "stt.v1.SessionRequest.vad_threshold",
                "label changed optional -> singular")


def test_checker_reports_a_dropped_enum_value(golden_proto):
    proto = copy.deepcopy(golden_proto)
    del proto["enums"]["stt.v1.VADMode"]["values"]["VAD_MODE_AUTO_END"]
    assert _one(check_proto(golden_proto, proto), "stt.v1.VADMode.VAD_MODE_AUTO_END", "removed")


def test_checker_reports_a_renumbered_enum_value(golden_proto):
    proto = copy.deepcopy(golden_proto)
    proto["enums"]["stt.v1.Task"]["values"]["TASK_TRANSLATE"] = 5
    assert _one(check_proto(golden_proto, proto), "stt.v1.Task.TASK_TRANSLATE", "renumbered 2 -> 5")


def test_checker_reports_a_changed_rpc(golden_proto):
    proto = copy.deepcopy(golden_proto)
    methods = proto["services"]["stt.v1.SpeechToText"]["methods"]
    methods["StreamingRecognize"]["client_streaming"] = False
    del methods["CreateSession"]
    problems = check_proto(golden_proto, proto)
    assert _one(problems, "StreamingRecognize", "client_streaming changed True -> False")
    assert _one(problems, "CreateSession", "removed")


def test_checker_reports_a_removed_message_and_package_change(golden_proto):
    proto = copy.deepcopy(golden_proto)
    del proto["messages"]["stt.v1.STTResult"]
    proto["package"] = "stt.v2"
    problems = check_proto(golden_proto, proto)
    assert _one(problems, "message stt.v1.STTResult", "removed")
    assert _one(problems, "package changed", "'stt.v1' -> 'stt.v2'")


def test_checker_reports_a_changed_error_status(golden_errors):
    errors = copy.deepcopy(golden_errors)
    errors["codes"]["ERR1006"]["grpc_status"] = "UNAVAILABLE"
    errors["codes"]["ERR1007"]["http_status"] = 429
    errors["variants"]["ERR1009"]["decode_timeout"]["http_status"] = 503
    problems = check_errors(golden_errors, errors)
    assert _one(problems, "ERR1006", "grpc_status changed 'RESOURCE_EXHAUSTED' -> 'UNAVAILABLE'")
    assert _one(problems, "ERR1007", "http_status changed 503 -> 429")
    assert _one(problems, "ERR1009", "decode_timeout", "http_status changed 504 -> 503")


def test_checker_reports_a_removed_or_renumbered_code(golden_errors):
    errors = copy.deepcopy(golden_errors)
    errors["codes"]["ERR2012"] = errors["codes"].pop("ERR1012")
    assert _one(check_errors(golden_errors, errors), "ERR1012", "removed or renumbered")
