"""Reading a CTranslate2 `model.bin` (binary version 6) into numpy arrays, or only walking it.

Layout (ctranslate2 `specs/model_spec.py`, `_serialize`, binary version 6): uint32 version, string
spec name, uint32 revision, uint32 variable count, then per variable a string name, uint8 rank,
uint32 dims, uint8 dtype id, uint32 byte count and the raw bytes; then uint32 alias count and
(alias, target) string pairs. A string is uint16 length (with the NUL), the UTF-8 bytes and a NUL.
Little-endian, as written on x86/ARM. The model store walks the table to catch a truncated local
model; the torch converter (`appliance.models.convert`) loads the values.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from appliance.models.files import ModelStoreError

BINARY_VERSION = 6
# ctranslate2's DataType enum order (include/ctranslate2/types.h): float32, int8, int16, int32, float16, bfloat16
_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


class ConversionError(ModelStoreError):
    """The CTranslate2 model cannot be converted; the message names the file and why."""


@dataclass(frozen=True)
class Ct2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Reader:
    """Reads a model.bin front to back; a short read anywhere means the file is truncated."""

    def __init__(self, f: BinaryIO, path: Path):
        self.f, self.path = f, path
        self.size = os.fstat(f.fileno()).st_size

    def take(self, size: int) -> bytes:
        chunk = self.f.read(size)
        if len(chunk) != size:
            raise ConversionError(f"model file {self.path} is truncated: it ends at byte {self.size}, inside "
                                  "its variables")
        return chunk

    def skip(self, size: int) -> None:
        if self.f.tell() + size > self.size:
            self.take(self.size - self.f.tell() + 1)  # raises the truncation error
        self.f.seek(size, os.SEEK_CUR)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.unpack("H"))
        if not raw or raw[-1] != 0:
            raise ConversionError(f"model file {self.path} is corrupt: malformed string at byte {self.f.tell()}")
        return raw[:-1].decode("utf-8", errors="replace")


def _array(raw: bytes, dtype: Any, shape: tuple[int, ...], name: str, path: Path) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits into float32's upper half
        array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        array = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise ConversionError(f"model file {path} is corrupt: variable {name} holds {array.size} values "
                              f"for shape {shape}")
    return array.reshape(shape)


def _parse(path: Path, load_values: bool) -> Ct2Model:
    path = Path(path)
    with path.open("rb") as f:
        reader = _Reader(f, path)
        version = reader.unpack("I")
        if version != BINARY_VERSION:
            raise ConversionError(f"model file {path}: CTranslate2 binary version {version}; only "
                                  f"{BINARY_VERSION} is supported (or the file is corrupt)")
        spec, revision = reader.string(), reader.unpack("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(reader.unpack("I")):
            name = reader.string()
            shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
            type_id, size = reader.unpack("B"), reader.unpack("I")
            dtype = _DTYPES.get(type_id)
            if dtype is None:
                raise ConversionError(f"model file {path} is corrupt: variable {name} has unknown dtype "
                                      f"id {type_id}")
            if load_values:
                variables[name] = _array(reader.take(size), dtype, shape, name, path)
            else:
                reader.skip(size)
        aliases = {}
        for _ in range(reader.unpack("I")):
            alias = reader.string()
            aliases[alias] = reader.string()
        trailing = reader.size - f.tell()
    if trailing:
        raise ConversionError(f"model file {path} is corrupt: {trailing} unexpected bytes after the model")
    return Ct2Model(spec, revision, variables, aliases)


def read_ct2_model(path: Path) -> Ct2Model:
    """Parse a CTranslate2 `model.bin` (binary version 6) into numpy arrays."""
    return _parse(path, load_values=True)


def check_ct2_file(path: Path) -> None:
    """Walk a model.bin's variable table without loading it (milliseconds): catches truncation and
    a damaged table in files that have no pinned sha256, such as a local model directory."""
    _parse(path, load_values=False)
