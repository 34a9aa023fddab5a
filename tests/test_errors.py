"""The error table, ApplianceError, and its translation into a rich gRPC status."""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from appliance.errors import DECODE_TIMEOUT_STATUS, ERROR_TABLE, ApplianceError, decode_timeout
from appliance.transport.grpc.status import ERROR_DOMAIN, to_grpc_status


@dataclass
class FinishedCall:
    """What a client sees of an aborted call: code, details and trailing metadata."""

    status: grpc.Status

    def code(self):
        return self.status.code

    def details(self):
        return self.status.details

    def trailing_metadata(self):
        return self.status.trailing_metadata


def rich_status(err: ApplianceError):
    status = to_grpc_status(err)
    parsed = rpc_status.from_call(FinishedCall(status))  # checks code and message agree too
    assert parsed is not None
    return status, parsed


def unpack(parsed, message_type):
    found = []
    for detail in parsed.details:
        if detail.Is(message_type.DESCRIPTOR):
            msg = message_type()
            detail.Unpack(msg)
            found.append(msg)
    return found


def test_codes_are_err_and_four_digits_and_keyed_by_themselves():
    # Extended, never renumbered: the codes run from ERR1001 without gaps.
    assert sorted(ERROR_TABLE) == [f"ERR{1001 + i}" for i in range(len(ERROR_TABLE))]
    assert len(ERROR_TABLE) >= 18
    for code, spec in ERROR_TABLE.items():
        assert re.fullmatch(r"ERR1\d{3}", code)
        assert spec.code == code
        assert spec.meaning


@pytest.mark.parametrize("code", sorted(ERROR_TABLE))
def test_every_code_maps_to_a_grpc_status_and_an_http_error_status(code):
    spec = ERROR_TABLE[code]
    status_code = grpc.StatusCode[spec.grpc_status]
    assert status_code is not grpc.StatusCode.OK
    assert hasattr(code_pb2, spec.grpc_status)
    assert isinstance(spec.http_status, int)
    assert 400 <= spec.http_status <= 599


def test_decode_timeout_status_is_valid():
    grpc_name, _http_status = DECODE_TIMEOUT_STATUS
    assert grpc.StatusCode[grpc_name] is grpc.StatusCode.DEADLINE_EXCEEDED
    err = decode_timeout("decode took longer than 10 s")
    assert (err.code, err.grpc_status, err.http_status) == ("ERR1009", "DEADLINE_EXCEEDED", 504)
    # the queue-full flavour keeps the table's status
    full = ApplianceError("ERR1009", "decode queue is full")
    assert (full.grpc_status, full.http_status) == ("UNAVAILABLE", 503)


def test_appliance_error_carries_code_message_and_table_statuses():
    err = ApplianceError("ERR1003", "sample_rate_hz=5 is outside the accepted range")
    assert str(err) == "ERR1003: sample_rate_hz=5 is outside the accepted range"
    assert err.message == "sample_rate_hz=5 is outside the accepted range"
    assert (err.grpc_status, err.http_status, err.retry_after_sec) == ("INVALID_ARGUMENT", 400, None)


def test_unknown_code_is_a_programming_error():
    with pytest.raises(ValueError, match="ERR9999"):
        ApplianceError("ERR9999", "nope")


@pytest.mark.parametrize("code", sorted(ERROR_TABLE))
def test_grpc_status_carries_error_info(code):
    err = ApplianceError(code, "something specific")
    status, parsed = rich_status(err)
    assert status.code is grpc.StatusCode[ERROR_TABLE[code].grpc_status]
    assert status.details == f"{code}: something specific"
    assert parsed.code == status.code.value[0]
    infos = unpack(parsed, error_details_pb2.ErrorInfo)
    assert len(infos) == 1
    assert (infos[0].reason, infos[0].domain) == (code, ERROR_DOMAIN)
    assert unpack(parsed, error_details_pb2.RetryInfo) == []


def test_grpc_status_carries_retry_info_when_retry_after_is_set():
    err = ApplianceError("ERR1008", "all 4 VAD slots are in use", retry_after_sec=1.5)
    status, parsed = rich_status(err)
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    [retry] = unpack(parsed, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 1
    assert retry.retry_delay.nanos == 500_000_000
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000
    [info] = unpack(parsed, error_details_pb2.ErrorInfo)
    assert info.reason == "ERR1008"


def test_grpc_status_uses_the_overridden_status_of_a_decode_timeout():
    status, parsed = rich_status(decode_timeout("decode timed out"))
    assert status.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert parsed.code == code_pb2.DEADLINE_EXCEEDED
    [info] = unpack(parsed, error_details_pb2.ErrorInfo)
    assert info.reason == "ERR1009"
