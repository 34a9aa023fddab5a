"""Domain errors with stable codes, and the one table that maps them to transports.

Every refusal the appliance makes is an `ApplianceError` carrying a code from
`ERROR_TABLE`. Transports translate it (gRPC status, HTTP status) and nothing else.
Codes are a public contract: extend the table, never renumber
(tests/compat/error_code_contract.json pins it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorSpec:
    code: str
    meaning: str
    grpc_status: str  # name of a grpc.StatusCode member; kept as text so this module has no grpc import
    http_status: int


ERROR_TABLE: dict[str, ErrorSpec] = {
    spec.code: spec
    for spec in (
        ErrorSpec("ERR1001", "unknown session / session not created", "NOT_FOUND", 404),
        ErrorSpec("ERR1002", "session id already active", "ALREADY_EXISTS", 409),
        ErrorSpec("ERR1003", "invalid audio chunk (rate, size, encoding, chunk too long)", "INVALID_ARGUMENT", 400),
        ErrorSpec("ERR1004", "authentication failed (api key, signed token, expired ts)", "UNAUTHENTICATED", 401),
        ErrorSpec("ERR1005", "per-session token mismatch", "PERMISSION_DENIED", 403),
        ErrorSpec("ERR1006", "rate limited (CreateSession rps, audio bytes/sec, HTTP)", "RESOURCE_EXHAUSTED", 429),
        ErrorSpec("ERR1007", "session capacity reached (global, per IP, per key)", "RESOURCE_EXHAUSTED", 503),
        ErrorSpec("ERR1008", "VAD pool exhausted", "RESOURCE_EXHAUSTED", 503),
        ErrorSpec("ERR1009", "decode queue full / decode timed out", "UNAVAILABLE", 503),
        ErrorSpec("ERR1010", "unknown decode option or profile, bad value", "INVALID_ARGUMENT", 400),
        ErrorSpec("ERR1011", "unknown or unloaded model_id", "NOT_FOUND", 404),
        ErrorSpec("ERR1012", "session idle timeout", "DEADLINE_EXCEEDED", 504),
        ErrorSpec("ERR1013", "per-session audio limit reached", "RESOURCE_EXHAUSTED", 429),
        ErrorSpec("ERR1014", "global buffer / memory budget exceeded", "RESOURCE_EXHAUSTED", 503),
        ErrorSpec("ERR1015", "server draining", "UNAVAILABLE", 503),
        ErrorSpec("ERR1016", "internal decode failure", "INTERNAL", 500),
        ErrorSpec("ERR1017", "model busy: in use, loading, draining or the default (admin load/unload)",
                  "FAILED_PRECONDITION", 409),
        ErrorSpec("ERR1018", "no such HTTP route or method", "UNIMPLEMENTED", 404),
    )
}

# ERR1009 covers two situations with different gRPC/HTTP statuses.
DECODE_TIMEOUT_STATUS = ("DEADLINE_EXCEEDED", 504)


class ApplianceError(Exception):
    """A refusal with a stable code. `message` names the field, the value and what is accepted."""

    def __init__(self, code: str, message: str, *, retry_after_sec: float | None = None,
                 grpc_status: str | None = None, http_status: int | None = None):
        if code not in ERROR_TABLE:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_sec = retry_after_sec
        spec = ERROR_TABLE[code]
        self.grpc_status = grpc_status or spec.grpc_status
        self.http_status = http_status or spec.http_status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def decode_timeout(message: str) -> ApplianceError:
    """ERR1009 for a decode that ran out of time (as opposed to a full queue)."""
    grpc_status, http_status = DECODE_TIMEOUT_STATUS
    return ApplianceError("ERR1009", message, grpc_status=grpc_status, http_status=http_status)
