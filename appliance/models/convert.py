"""Convert a CTranslate2 Whisper model (the packs we ship) into an openai-whisper checkpoint.

One artifact serves both backends: the torch backend runs weights converted from the same pack the
faster-whisper backend loads, and the conversion is exact (no retraining, no resampling of weights):

- `model.bin` layout: see `appliance.models.ct2_file`, which reads it.
- variable layout (ctranslate2 `converters/transformers.py`, Whisper): self-attention `linear_0`
  holds q;k;v stacked (k has no bias in Whisper: stored as zeros), `linear_1` is the output;
  cross-attention `linear_0` is q, `linear_1` k;v stacked, `linear_2` the output. The output
  projection is an alias of the token embedding, which openai-whisper ties as well.

The checkpoint is the `{"dims": ..., "model_state_dict": ...}` dict `whisper.load_model(path)` reads.
Weights keep their stored precision (float16 in our packs); loading casts them to the model's dtype.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from appliance.models.ct2_file import (
    BINARY_VERSION,
    ConversionError,
    Ct2Model,
    check_ct2_file,
    read_ct2_model,
)
from appliance.models.files import ModelStoreError, build_once, cache_dir, verify_file, write_atomically

__all__ = [  # the model.bin reader lives in ct2_file; its names stay importable from here
    "BINARY_VERSION", "CONVERTER_VERSION", "ConversionError", "Ct2Model", "check_ct2_file", "convert_to_torch",
    "read_ct2_model", "torch_checkpoint", "whisper_checkpoint",
]

CONVERTER_VERSION = 1  # bump when the output changes: cached checkpoints are keyed by it
_GELU = 3  # ctranslate2 common_spec.Activation.GELU (erf form, as nn.GELU)


def _layer_count(variables: dict, prefix: str) -> int:
    indices = {int(m.group(1)) for name in variables if (m := re.match(rf"{prefix}/layer_(\d+)/", name))}
    if indices != set(range(len(indices))):
        raise ConversionError(f"{prefix} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


class _Mapper:
    """Moves CTranslate2 variables into a whisper state dict, checking every variable is used once."""

    def __init__(self, model: Ct2Model, path: Path):
        self.variables, self.path = model.variables, path
        self.unused = set(model.variables)
        self.state: dict[str, np.ndarray] = {}

    def take(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise ConversionError(f"{self.path}: variable {name} is missing (not a Whisper model?)")
        self.unused.discard(name)
        return self.variables[name]

    def scalar(self, name: str) -> int:
        return int(self.take(name).reshape(()))

    def copy(self, ct2: str, whisper: str) -> None:
        self.state[whisper] = self.take(ct2)

    def linear(self, ct2: str, whisper: str) -> None:
        self.copy(f"{ct2}/weight", f"{whisper}.weight")
        self.copy(f"{ct2}/bias", f"{whisper}.bias")

    def layer_norm(self, ct2: str, whisper: str) -> None:
        self.copy(f"{ct2}/gamma", f"{whisper}.weight")
        self.copy(f"{ct2}/beta", f"{whisper}.bias")

    def fused(self, ct2: str, whispers: tuple[str, ...]) -> None:
        """Split a stacked projection; Whisper's key projection has no bias (CTranslate2 stores zeros)."""
        weights = np.split(self.take(f"{ct2}/weight"), len(whispers), axis=0)
        biases = np.split(self.take(f"{ct2}/bias"), len(whispers), axis=0)
        for whisper, weight, bias in zip(whispers, weights, biases, strict=True):
            self.state[f"{whisper}.weight"] = weight
            if whisper.endswith(".key"):
                if np.any(bias):
                    raise ConversionError(f"{self.path}: {ct2} has a non-zero key bias, which Whisper lacks")
            else:
                self.state[f"{whisper}.bias"] = bias

    def block(self, ct2: str, whisper: str, cross: bool) -> None:
        self.fused(f"{ct2}/self_attention/linear_0", (f"{whisper}.attn.query", f"{whisper}.attn.key",
                                                      f"{whisper}.attn.value"))
        self.linear(f"{ct2}/self_attention/linear_1", f"{whisper}.attn.out")
        self.layer_norm(f"{ct2}/self_attention/layer_norm", f"{whisper}.attn_ln")
        if cross:
            self.linear(f"{ct2}/attention/linear_0", f"{whisper}.cross_attn.query")
            self.fused(f"{ct2}/attention/linear_1", (f"{whisper}.cross_attn.key", f"{whisper}.cross_attn.value"))
            self.linear(f"{ct2}/attention/linear_2", f"{whisper}.cross_attn.out")
            self.layer_norm(f"{ct2}/attention/layer_norm", f"{whisper}.cross_attn_ln")
        self.linear(f"{ct2}/ffn/linear_0", f"{whisper}.mlp.0")
        self.linear(f"{ct2}/ffn/linear_1", f"{whisper}.mlp.2")
        self.layer_norm(f"{ct2}/ffn/layer_norm", f"{whisper}.mlp_ln")


def _check_decoder_flags(m: _Mapper) -> None:
    """Decoder settings Whisper hard-codes; anything else would convert to a different network."""
    expected = {"decoder/activation": _GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                "decoder/alibi": 0, "decoder/alibi_use_positive_positions": 0, "decoder/scale_alibi": 0,
                "decoder/start_from_zero_embedding": 0}
    for name, value in expected.items():
        if name in m.variables and m.scalar(name) != value:
            raise ConversionError(f"{m.path}: {name} is {m.scalar(name)}, Whisper needs {value}")
    for name in ("decoder/alignment_heads", "decoder/alignment_layer"):  # word timing hints: not weights
        if name in m.variables:
            m.take(name)


def whisper_checkpoint(model: Ct2Model, path: Path = Path("model.bin")) -> dict:
    """The openai-whisper checkpoint dict (dims + numpy state) for a parsed CTranslate2 Whisper model."""
    if model.spec != "WhisperSpec":
        raise ConversionError(f"{path} is a {model.spec} model, not Whisper")
    m = _Mapper(model, path)
    embeddings = m.take("decoder/embeddings/weight")
    projection = model.aliases.get("decoder/projection/weight")
    if projection != "decoder/embeddings/weight":
        separate = m.take("decoder/projection/weight") if "decoder/projection/weight" in m.variables else None
        if separate is None or not np.array_equal(separate, embeddings):
            raise ConversionError(f"{path}: the output projection is not tied to the token embedding")
    conv1 = m.take("encoder/conv1/weight")
    encoder_positions = m.take("encoder/position_encodings/encodings")
    decoder_positions = m.take("decoder/position_encodings/encodings")
    from whisper.model import ModelDimensions

    dims = ModelDimensions(
        n_mels=conv1.shape[1], n_audio_ctx=encoder_positions.shape[0], n_audio_state=encoder_positions.shape[1],
        n_audio_head=m.scalar("encoder/num_heads"), n_audio_layer=_layer_count(model.variables, "encoder"),
        n_vocab=embeddings.shape[0], n_text_ctx=decoder_positions.shape[0], n_text_state=embeddings.shape[1],
        n_text_head=m.scalar("decoder/num_heads"), n_text_layer=_layer_count(model.variables, "decoder"))
    m.state["encoder.conv1.weight"] = conv1
    m.copy("encoder/conv1/bias", "encoder.conv1.bias")
    m.linear("encoder/conv2", "encoder.conv2")
    m.state["encoder.positional_embedding"] = encoder_positions
    for i in range(dims.n_audio_layer):
        m.block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    m.layer_norm("encoder/layer_norm", "encoder.ln_post")
    m.state["decoder.token_embedding.weight"] = embeddings
    m.state["decoder.positional_embedding"] = decoder_positions
    for i in range(dims.n_text_layer):
        m.block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    m.layer_norm("decoder/layer_norm", "decoder.ln")
    _check_decoder_flags(m)
    if m.unused:
        raise ConversionError(f"{path}: variables with no place in openai-whisper: {', '.join(sorted(m.unused))}")
    return {"dims": asdict(dims), "model_state_dict": m.state}


def convert_to_torch(ct2_dir: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> str:
    """Write the openai-whisper checkpoint of the CTranslate2 model in `ct2_dir`; returns its sha256."""
    import io

    import torch

    checkpoint = whisper_checkpoint(read_ct2_model(Path(ct2_dir) / "model.bin"), Path(ct2_dir) / "model.bin")
    checkpoint["model_state_dict"] = {k: torch.from_numpy(np.array(v)) for k, v in
                                      checkpoint["model_state_dict"].items()}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return write_atomically(Path(out_path), [buffer.getvalue()])


# --- the converted checkpoint in the cache ---------------------------------------------------

def torch_checkpoint(ct2_dir: str | os.PathLike[str]) -> Path:
    """The openai-whisper checkpoint of `ct2_dir`, converted on first use and reused (verified) after.

    Keyed by the source model.bin's path, size and mtime and the converter version, so a replaced
    or re-assembled model converts again. A damaged cached checkpoint is converted again, not fatal."""
    source = Path(ct2_dir).resolve() / "model.bin"
    try:
        stat = source.stat()
    except OSError as err:
        raise ModelStoreError(f"model file {source} is missing") from err
    import hashlib

    key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{CONVERTER_VERSION}".encode()).hexdigest()
    target = cache_dir() / "torch" / key[:20] / "model.pt"
    manifest = target.with_name("manifest.json")

    def done() -> bool:
        try:
            verify_file(target, json.loads(manifest.read_text())["sha256"])
            return True
        except (OSError, ValueError, KeyError, ModelStoreError):
            return False

    def build() -> None:
        sha256 = convert_to_torch(source.parent, target)
        record = {"sha256": sha256, "source": str(source), "converter": CONVERTER_VERSION}
        write_atomically(manifest, [json.dumps(record).encode()])

    try:
        build_once(target, done, build)
    except OSError as err:
        raise ModelStoreError(f"cannot write the converted model into {target.parent}: {err}; "
                              "set STT_CACHE_DIR to a writable directory") from err
    return target
