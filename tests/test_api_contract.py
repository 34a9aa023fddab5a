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

import copy
import json
import re
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from appliance.api import stt_pb2
from appliance.errors import DECODE_TIMEOUT_STATUS, ERROR_TABLE

ROOT = Path(__file__).resolve().parent.parent
COMPAT_DIR = ROOT / "tests" / "compat"
PROTO_GOLDEN = COMPAT_DIR / "stt_proto_contract.json"
ERROR_GOLDEN = COMPAT_DIR / "error_code_contract.json"
PROTO_FILE = ROOT / "proto" / "stt.proto"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALAR_TYPES = {
    _FDP.TYPE_DOUBLE: "double", _FDP.TYPE_FLOAT: "float", _FDP.TYPE_INT64: "int64",
    _FDP.TYPE_UINT64: "uint64", _FDP.TYPE_INT32: "int32", _FDP.TYPE_FIXED64: "fixed64",
    _FDP.TYPE_FIXED32: "fixed32", _FDP.TYPE_BOOL: "bool", _FDP.TYPE_STRING: "string",
    _FDP.TYPE_BYTES: "bytes", _FDP.TYPE_UINT32: "uint32", _FDP.TYPE_SFIXED32: "sfixed32",
    _FDP.TYPE_SFIXED64: "sfixed64", _FDP.TYPE_SINT32: "sint32", _FDP.TYPE_SINT64: "sint64",
}


# --------------------------------------------------------------------------- generators


def _field_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type in _SCALAR_TYPES:
        return _SCALAR_TYPES[field.type]
    return field.type_name.lstrip(".")  # message or enum full name, e.g. stt.v1.VADMode


def proto_contract(file_descriptor=stt_pb2.DESCRIPTOR) -> dict:
    """The contract dict of a compiled proto file (the shape of stt_proto_contract.json)."""
    fdp = descriptor_pb2.FileDescriptorProto.FromString(file_descriptor.serialized_pb)
    package = fdp.package
    messages: dict[str, dict] = {}
    enums: dict[str, dict] = {}

    def add_enum(enum: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        enums[f"{scope}.{enum.name}"] = {"values": {v.name: v.number for v in enum.value}}

    def add_message(message: descriptor_pb2.DescriptorProto, scope: str) -> None:
        full_name = f"{scope}.{message.name}"
        map_entries = {f"{full_name}.{n.name}": n for n in message.nested_type if n.options.map_entry}
        fields: dict[str, dict] = {}
        for field in message.field:
            type_name = _field_type(field)
            if type_name in map_entries:
                key, value = sorted(map_entries[type_name].field, key=lambda f: f.number)
                type_name, label = f"map<{_field_type(key)}, {_field_type(value)}>", "map"
            elif field.label == _FDP.LABEL_REPEATED:
                label = "repeated"
            elif field.proto3_optional:
                label = "optional"
            else:
                label = "singular"
            fields[field.name] = {"number": field.number, "type": type_name, "label": label}
        messages[full_name] = {"fields": fields}
        for nested in message.nested_type:
            if not nested.options.map_entry:
                add_message(nested, full_name)
        for enum in message.enum_type:
            add_enum(enum, full_name)

    for message in fdp.message_type:
        add_message(message, package)
    for enum in fdp.enum_type:
        add_enum(enum, package)
    services = {
        f"{package}.{service.name}": {"methods": {
            method.name: {
                "input": method.input_type.lstrip("."),
                "output": method.output_type.lstrip("."),
                "client_streaming": bool(method.client_streaming),
                "server_streaming": bool(method.server_streaming),
            } for method in service.method}}
        for service in fdp.service
    }
    return {"package": package, "messages": messages, "enums": enums, "services": services}


def error_contract() -> dict:
    """The contract dict of appliance.errors (the shape of error_code_contract.json)."""
    grpc_status, http_status = DECODE_TIMEOUT_STATUS
    return {
        "codes": {
            code: {"meaning": spec.meaning, "grpc_status": spec.grpc_status, "http_status": spec.http_status}
            for code, spec in sorted(ERROR_TABLE.items())
        },
        "variants": {
            "ERR1009": {"decode_timeout": {"grpc_status": grpc_status, "http_status": http_status}},
        },
    }


# --------------------------------------------------------------------------- checkers


def check_proto(golden: dict, current: dict) -> list[str]:
    """Every way `current` breaks the additive rule against `golden`; empty when compatible."""
    problems: list[str] = []
    if current.get("package") != golden.get("package"):
        problems.append(f"package changed: {golden.get('package')!r} -> {current.get('package')!r}")

    for msg_name, msg in golden.get("messages", {}).items():
        cur_msg = current.get("messages", {}).get(msg_name)
        if cur_msg is None:
            problems.append(f"message {msg_name} was removed or renamed")
            continue
        cur_fields = cur_msg["fields"]
        cur_by_number = {f["number"]: name for name, f in cur_fields.items()}
        for field_name, field in msg["fields"].items():
            where = f"{msg_name}.{field_name}"
            holder = cur_by_number.get(field["number"])
            if holder is not None and holder != field_name:
                problems.append(f"{where}: field number {field['number']} is reused by a different name "
                                f"{holder!r} (field numbers are immutable; renames are not allowed)")
            cur = cur_fields.get(field_name)
            if cur is None:
                if holder is None:
                    problems.append(f"{where} (number {field['number']}) was removed "
                                    "(fields may only be added)")
                continue
            if cur["number"] != field["number"]:
                problems.append(f"{where}: field renumbered {field['number']} -> {cur['number']}")
            if cur["type"] != field["type"]:
                problems.append(f"{where}: type changed {field['type']} -> {cur['type']}")
            if cur["label"] != field["label"]:
                problems.append(f"{where}: label changed {field['label']} -> {cur['label']}")

    for enum_name, enum in golden.get("enums", {}).items():
        cur_enum = current.get("enums", {}).get(enum_name)
        if cur_enum is None:
            problems.append(f"enum {enum_name} was removed or renamed")
            continue
        cur_values = cur_enum["values"]
        cur_by_number = {number: name for name, number in cur_values.items()}
        for value_name, number in enum["values"].items():
            where = f"{enum_name}.{value_name}"
            if value_name not in cur_values:
                holder = cur_by_number.get(number)
                extra = f" (number {number} is now {holder!r})" if holder else ""
                problems.append(f"{where} = {number}: enum value was removed or renamed{extra}")
            elif cur_values[value_name] != number:
                problems.append(f"{where}: enum value renumbered {number} -> {cur_values[value_name]}")

    for svc_name, svc in golden.get("services", {}).items():
        cur_svc = current.get("services", {}).get(svc_name)
        if cur_svc is None:
            problems.append(f"service {svc_name} was removed or renamed")
            continue
        for method_name, method in svc["methods"].items():
            cur = cur_svc["methods"].get(method_name)
            where = f"{svc_name}.{method_name}"
            if cur is None:
                problems.append(f"rpc {where} was removed or renamed")
                continue
            for key, value in method.items():
                if cur.get(key) != value:
                    problems.append(f"rpc {where}: {key} changed {value!r} -> {cur.get(key)!r}")
    return problems


def check_errors(golden: dict, current: dict) -> list[str]:
    """Every way `current` breaks the error-code contract; new codes are allowed."""
    problems: list[str] = []
    for code, spec in golden.get("codes", {}).items():
        cur = current.get("codes", {}).get(code)
        if cur is None:
            problems.append(f"{code} ({spec['meaning']}) was removed or renumbered (codes are never renumbered)")
            continue
        for key in ("grpc_status", "http_status"):
            if cur[key] != spec[key]:
                problems.append(f"{code}: {key} changed {spec[key]!r} -> {cur[key]!r}")
    for code, variants in golden.get("variants", {}).items():
        for variant, spec in variants.items():
            cur = current.get("variants", {}).get(code, {}).get(variant)
            if cur is None:
                problems.append(f"{code} variant {variant!r} was removed")
                continue
            for key in ("grpc_status", "http_status"):
                if cur[key] != spec[key]:
                    problems.append(f"{code} variant {variant!r}: {key} changed {spec[key]!r} -> {cur[key]!r}")
    return problems


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_golden(force: bool = False) -> list[str]:
    """Rewrite both goldens from the current descriptor and error table.

    Use only after ADDING fields, values, methods or codes. Refuses (returns the problems, writes
    nothing) when the current state breaks the existing goldens, unless `force`.
    """
    proto_now, errors_now = proto_contract(), error_contract()
    problems: list[str] = []
    if PROTO_GOLDEN.exists():
        problems += check_proto(_load(PROTO_GOLDEN), proto_now)
    if ERROR_GOLDEN.exists():
        problems += check_errors(_load(ERROR_GOLDEN), errors_now)
    if problems and not force:
        return problems
    _dump(PROTO_GOLDEN, proto_now)
    _dump(ERROR_GOLDEN, errors_now)
    return []


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


# --------------------------------------------------------------------------- the checker catches breaks


@pytest.fixture
def golden_proto() -> dict:
    return _load(PROTO_GOLDEN)


@pytest.fixture
def golden_errors() -> dict:
    return _load(ERROR_GOLDEN)


def _fields(contract: dict, message: str) -> dict:
    return contract["messages"][f"stt.v1.{message}"]["fields"]


def _one(problems: list[str], *fragments: str) -> str:
    matching = [p for p in problems if all(f in p for f in fragments)]
    assert matching, f"expected a problem mentioning {fragments}, got {problems}"
    return matching[0]


def test_checker_accepts_additions(golden_proto, golden_errors):
    proto = copy.deepcopy(golden_proto)
    _fields(proto, "STTResult")["words"] = {"number": 14, "type": "stt.v1.Word", "label": "repeated"}
    proto["messages"]["stt.v1.Word"] = {"fields": {"text": {"number": 1, "type": "string", "label": "singular"}}}
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
