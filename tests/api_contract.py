"""The API contract as data: generators, additive-rule checkers and the golden writer.

`proto_contract()` and `error_contract()` describe the compiled proto and the error table in the shape
of the goldens in tests/compat/; `check_proto()` and `check_errors()` list every way a current contract
breaks the additive rule against a golden. The tests are in test_api_contract.py (which also refreshes
the goldens: `python -m tests.test_api_contract`) and test_api_contract_checker.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import descriptor_pb2

from appliance.api import stt_pb2
from appliance.errors import DECODE_TIMEOUT_STATUS, ERROR_TABLE
from tests.helpers import REPO_ROOT as ROOT

COMPAT_DIR = ROOT / "tests" / "compat"
PROTO_GOLDEN = COMPAT_DIR / "stt_proto_contract.json"
ERROR_GOLDEN = COMPAT_DIR / "error_code_contract.json"

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


def _fields(contract: dict, message: str) -> dict:
    return contract["messages"][f"stt.v1.{message}"]["fields"]
