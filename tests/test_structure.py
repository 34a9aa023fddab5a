"""The size limits on the appliance's own code: no module over 400 lines, no class over 220, no
function or method over 80 (DESIGN.md §12). Each failure names every piece over its limit.

Generated code (the protobuf and gRPC modules in appliance/api/, marked "DO NOT EDIT") is not ours
to split and is left out.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

APPLIANCE = Path(__file__).resolve().parent.parent / "appliance"
GENERATED_DIR = APPLIANCE / "api"
GENERATED_MARK = "DO NOT EDIT"  # both protoc and its gRPC plugin put it in their modules' first lines

MODULE_LIMIT = 400
CLASS_LIMIT = 220
FUNCTION_LIMIT = 80


@dataclass(frozen=True)
class Piece:
    where: str  # path relative to the repository, and the line the piece starts on
    kind: str  # "module", "class" or "function"
    name: str  # qualified within its module (Outer.method, function.inner); "" for the module
    lines: int


def _generated(path: Path) -> bool:
    if GENERATED_DIR not in path.parents:
        return False
    with path.open(encoding="utf-8") as f:
        head = [f.readline() for _ in range(3)]
    return any(GENERATED_MARK in line for line in head)


def measure(source: str, where: str) -> list[Piece]:
    """The module and every class and function in it (nested ones too), with their lengths in lines
    (a definition's lines run from its `def`/`class` line to its last line, decorators not counted)."""
    pieces = [Piece(where, "module", "", len(source.splitlines()))]

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                assert child.end_lineno is not None
                pieces.append(Piece(f"{where}:{child.lineno}", kind, name, child.end_lineno - child.lineno + 1))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=where), "")
    return pieces


def appliance_pieces() -> list[Piece]:
    root = APPLIANCE.parent
    pieces: list[Piece] = []
    for path in sorted(APPLIANCE.rglob("*.py")):
        if _generated(path):
            continue
        pieces += measure(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
    return pieces


def over(kind: str, limit: int) -> list[str]:
    return [f"{p.where} {p.name}".rstrip() + f": {p.lines} lines (limit {limit})"
            for p in appliance_pieces() if p.kind == kind and p.lines > limit]


def test_the_measure_sees_modules_classes_and_nested_functions():
    source = ("class Outer:\n    def method(self):\n        def inner():\n            pass\n\n\n"
              "async def f():\n    pass\n")
    found = {(p.kind, p.name, p.lines) for p in measure(source, "m.py")}
    assert found == {("module", "", 8), ("class", "Outer", 4), ("function", "Outer.method", 3),
                     ("function", "Outer.method.inner", 2), ("function", "f", 2)}


def test_generated_protobuf_modules_are_left_out_and_nothing_else():
    walked = {p.where for p in appliance_pieces() if p.kind == "module"}
    assert "appliance/api/stt_pb2.py" not in walked
    assert "appliance/api/stt_pb2_grpc.py" not in walked
    assert "appliance/api/__init__.py" in walked
    assert len(walked) == len(list(APPLIANCE.rglob("*.py"))) - 2


def test_no_module_is_over_400_lines():
    assert not (found := over("module", MODULE_LIMIT)), "split these modules:\n" + "\n".join(found)


def test_no_class_is_over_220_lines():
    assert not (found := over("class", CLASS_LIMIT)), "split these classes:\n" + "\n".join(found)


def test_no_function_is_over_80_lines():
    assert not (found := over("function", FUNCTION_LIMIT)), "split these functions:\n" + "\n".join(found)
