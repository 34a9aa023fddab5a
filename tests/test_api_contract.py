"""The public API contract: proto and error codes only change additively.

The goldens in tests/compat/ pin what clients may rely on:

- `stt_proto_contract.json`: every message field (number, type, label), enum value and RPC of
  `proto/stt.proto`, generated from the compiled descriptor `appliance.api.stt_pb2.DESCRIPTOR`;
- `error_code_contract.json`: every ERR code with its meaning and gRPC/HTTP status (plus the ERR1009
  decode-timeout variant).

Additive rule: everything in a golden must still exist with the same number, type, label and status;
new messages, fields, enum values, methods and codes are allowed. After ADDING something, refresh the
goldens with `python -m tests.test_api_contract` (it refuses to write when the change is not additive).
"""

from __future__ import annotations

import re
import sys

from appliance.errors import DECODE_TIMEOUT_STATUS, ERROR_TABLE
from tests.api_contract import (
    ERROR_GOLDEN,
    PROTO_GOLDEN,
    ROOT,
    _fields,
    _load,
    check_errors,
    check_proto,
    error_contract,
    proto_contract,
    write_golden,
)

PROTO_FILE = ROOT / "proto" / "stt.proto"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"


# --------------------------------------------------------------------------- the contract


def test_goldens_exist():
    assert PROTO_GOLDEN.is_file(), f"missing {PROTO_GOLDEN}; run python -m tests.test_api_contract"
    assert ERROR_GOLDEN.is_file(), f"missing {ERROR_GOLDEN}; run python -m tests.test_api_contract"


def test_proto_is_additive_against_golden():
    problems = check_proto(_load(PROTO_GOLDEN), proto_contract())
    assert not problems, "proto/stt.proto breaks the API contract:\n  " + "\n  ".join(problems)


def test_error_codes_are_additive_against_golden():
    problems = check_errors(_load(ERROR_GOLDEN), error_contract())
    assert not problems, "appliance/errors.py breaks the error contract:\n  " + "\n  ".join(problems)


def test_golden_pins_the_whole_api():
    """Additions must be recorded in the goldens too (python -m tests.test_api_contract)."""
    golden, current = _load(PROTO_GOLDEN), proto_contract()
    missing = []
    for msg_name, msg in current["messages"].items():
        for field_name in msg["fields"]:
            if field_name not in golden["messages"].get(msg_name, {}).get("fields", {}):
                missing.append(f"field {msg_name}.{field_name}")
    for enum_name, enum in current["enums"].items():
        for value in enum["values"]:
            if value not in golden["enums"].get(enum_name, {}).get("values", {}):
                missing.append(f"enum value {enum_name}.{value}")
    for svc_name, svc in current["services"].items():
        for method in svc["methods"]:
            if method not in golden["services"].get(svc_name, {}).get("methods", {}):
                missing.append(f"rpc {svc_name}.{method}")
    missing += [f"error code {code}" for code in ERROR_TABLE if code not in _load(ERROR_GOLDEN)["codes"]]
    assert not missing, ("not yet pinned in tests/compat/ (run python -m tests.test_api_contract):\n  "
                         + "\n  ".join(missing))


def test_golden_matches_the_documented_api():
    """Sanity: the golden describes the API of DESIGN.md section 8."""
    golden = _load(PROTO_GOLDEN)
    assert golden["package"] == "stt.v1"
    methods = golden["services"]["stt.v1.SpeechToText"]["methods"]
    assert methods["CreateSession"] == {"input": "stt.v1.SessionRequest", "output": "stt.v1.SessionResponse",
                                        "client_streaming": False, "server_streaming": False}
    assert methods["StreamingRecognize"] == {"input": "stt.v1.AudioChunk", "output": "stt.v1.STTResult",
                                             "client_streaming": True, "server_streaming": True}
    request = golden["messages"]["stt.v1.SessionRequest"]["fields"]
    assert request["attributes"] == {"number": 2, "type": "map<string, string>", "label": "map"}
    assert request["vad_silence_sec"]["label"] == "optional"
    assert request["vad_mode"]["type"] == "stt.v1.VADMode"
    assert "stt.v1.SessionRequest.AttributesEntry" not in golden["messages"]
    assert golden["enums"]["stt.v1.Task"]["values"]["TASK_TRANSLATE"] == 2
    errors = _load(ERROR_GOLDEN)
    assert errors["variants"]["ERR1009"]["decode_timeout"] == {"grpc_status": "DEADLINE_EXCEEDED",
                                                               "http_status": 504}


# --------------------------------------------------------------------------- every field is documented

DOCUMENTED_MESSAGES = ("SessionRequest", "SessionResponse", "AudioChunk", "STTResult")

# Fields allowed to stay without a comment of their own: none. Document every new field.
UNDOCUMENTED_BASELINE: frozenset[str] = frozenset()

_FIELD_LINE = re.compile(r"^\s*(?:optional\s+|repeated\s+)?(?:map\s*<[^>]*>|[\w.]+)\s+(\w+)\s*=\s*\d+")


def undocumented_fields(proto_text: str, messages=DOCUMENTED_MESSAGES) -> list[str]:
    """`Message.field` for each field line with neither a `//` line right above nor a trailing `//`."""
    undocumented: list[str] = []
    current: str | None = None
    previous = ""
    for raw in proto_text.splitlines():
        line = raw.strip()
        if not line:
            previous = ""  # a blank line detaches a comment from the next field
            continue
        start = re.match(r"^message\s+(\w+)\s*\{", line)
        if start:
            current = start.group(1)
        elif line.startswith("}"):
            current = None
        elif current in messages and not line.startswith("//"):
            field = _FIELD_LINE.match(line)
            if field and not previous.startswith("//") and "//" not in line:
                undocumented.append(f"{current}.{field.group(1)}")
        previous = line
    return undocumented


def test_undocumented_field_parser():
    text = ("message AudioChunk {\n  // Hz.\n  int32 a = 1;\n  int32 b = 2; // ms\n  int32 c = 3;\n"
            "  // detached\n\n  map<string, string> d = 4;\n  optional float e = 5;\n}\n"
            "message Other {\n  int32 x = 1;\n}\n")
    assert undocumented_fields(text) == ["AudioChunk.c", "AudioChunk.d", "AudioChunk.e"]


def test_every_field_is_documented():
    text = PROTO_FILE.read_text(encoding="utf-8")
    found = undocumented_fields(text)
    new = sorted(set(found) - UNDOCUMENTED_BASELINE)
    assert not new, ("fields in proto/stt.proto without a `//` comment (meaning, unit, default) on the line "
                     "above or at the end of the line:\n  " + "\n  ".join(new))
    fixed = sorted(UNDOCUMENTED_BASELINE - set(found))
    assert not fixed, ("these fields are documented now; delete them from UNDOCUMENTED_BASELINE in "
                       "tests/test_api_contract.py:\n  " + "\n  ".join(fixed))
    # The parser sees every field of the four messages (so a parse slip cannot hide a missing comment).
    parsed = {f"{m}.{f}" for m in DOCUMENTED_MESSAGES for f in _fields(proto_contract(), m)}
    seen = set()
    current = None
    for line in text.splitlines():
        start = re.match(r"^\s*message\s+(\w+)\s*\{", line)
        current = start.group(1) if start else (None if line.strip().startswith("}") else current)
        field = _FIELD_LINE.match(line) if current in DOCUMENTED_MESSAGES else None
        if field:
            seen.add(f"{current}.{field.group(1)}")
    assert seen == parsed


# --------------------------------------------------------------------------- troubleshooting guide


def test_troubleshooting_lists_every_code():
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    missing = [code for code in ERROR_TABLE
               if not re.search(rf"^(#+\s.*\b{code}\b|\|\s*`?{code}`?\s*\|)", text, re.MULTILINE)]
    assert not missing, f"docs/troubleshooting.md has no heading or table row for {missing}"


def test_troubleshooting_table_states_the_contract_statuses():
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    for code, spec in ERROR_TABLE.items():
        row = re.search(rf"^\|\s*`?{code}`?\s*\|([^|]*)\|([^|]*)\|([^|]*)\|", text, re.MULTILINE)
        assert row, f"docs/troubleshooting.md: no summary table row for {code}"
        grpc_cell, http_cell = row.group(2), row.group(3)
        assert spec.grpc_status in grpc_cell and str(spec.http_status) in http_cell, (
            f"docs/troubleshooting.md row for {code} says {grpc_cell.strip()} / {http_cell.strip()}, "
            f"the table says {spec.grpc_status} / {spec.http_status}")
    row = re.search(r"^\|\s*`?ERR1009`?\s*\|([^|]*)\|([^|]*)\|([^|]*)\|", text, re.MULTILINE)
    assert DECODE_TIMEOUT_STATUS[0] in row.group(2) and str(DECODE_TIMEOUT_STATUS[1]) in row.group(3)


if __name__ == "__main__":
    force = "--force" in sys.argv[1:]
    issues = write_golden(force=force)
    if issues:
        print("refusing to rewrite the goldens: the change is not additive\n  " + "\n  ".join(issues)
              + "\n(fix the proto / error table; --force only for a deliberate, announced break)",
              file=sys.stderr)
        sys.exit(1)
    print(f"wrote {PROTO_GOLDEN.relative_to(ROOT)} and {ERROR_GOLDEN.relative_to(ROOT)}")
