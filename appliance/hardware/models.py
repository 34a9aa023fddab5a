"""Whisper model sizes: which names are smaller than which, and roughly how much memory each needs.

Figures are float32 weights per loaded instance (parameters x 4 bytes, rounded): tiny 39 M,
base 74 M, small 244 M, medium 769 M, large 1550 M parameters. Half-precision and int8 weights
take proportionally less. They are estimates for choosing a model, not a guarantee.
"""

from __future__ import annotations

from collections.abc import Callable

MiB = 2**20
GiB = 2**30

# Smallest first; within a class, the names a profile's model_size may use.
SIZE_CLASSES: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("tiny", 150 * MiB, ("tiny.en", "tiny")),
    ("base", 300 * MiB, ("base.en", "base")),
    ("small", 1 * GiB, ("small.en", "small")),
    ("medium", 2560 * MiB, ("medium.en", "medium")),
    ("large", 5 * GiB, ("large-v3", "large-v2", "large-v1", "large")),
)

# Weight bytes relative to float32.
PRECISION_SCALE = {
    "float32": 1.0, "default": 1.0,
    "float16": 0.5, "bfloat16": 0.5, "int8_float16": 0.5, "int8_bfloat16": 0.5,
    "int8": 0.35, "int8_float32": 0.35,
}


def size_class(name: str) -> int | None:
    """Index into SIZE_CLASSES, or None for a path or a name not on the ladder."""
    for index, (_, _, names) in enumerate(SIZE_CLASSES):
        if name in names:
            return index
    return None


def model_memory_bytes(name: str, compute_type: str, pool_size: int = 1) -> int | None:
    index = size_class(name)
    if index is None:
        return None
    return int(SIZE_CLASSES[index][1] * PRECISION_SCALE.get(compute_type, 1.0)) * pool_size


def candidates(ceiling: str) -> list[str]:
    """`ceiling` and every smaller model, largest first. English-only ceilings prefer `.en`
    siblings, multilingual ones prefer multilingual siblings."""
    top = size_class(ceiling)
    if top is None:
        return [ceiling]
    english_first = ceiling.endswith(".en")
    ordered = [ceiling]
    for index in range(top, -1, -1):
        names = sorted(SIZE_CLASSES[index][2], key=lambda n: n.endswith(".en") != english_first)
        ordered += [n for n in names if n != ceiling]
    return ordered


def installed_model(name: str) -> bool:
    """True when the model store resolves `name` locally (a directory or an installed, verified pack)."""
    from appliance.models.store import ModelStoreError, resolve_model

    try:
        resolve_model(name)
    except (ModelStoreError, OSError):  # OSError: e.g. a read-only cache while assembling a split pack
        return False
    return True


ModelAvailable = Callable[[str], bool]
