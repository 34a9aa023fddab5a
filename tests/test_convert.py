"""CTranslate2 -> openai-whisper conversion: exact weights, same encoder output, same transcripts.

Runs on the real packs (tiny.en, and the assembled base) against the real ctranslate2 and
faster-whisper; skipped where the torch extra is not installed.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("torch", reason="the torch extra is not installed (EXTRAS=torch scripts/setup.sh)")
pytest.importorskip("whisper", reason="openai-whisper is not installed (EXTRAS=torch scripts/setup.sh)")

import torch
import whisper
from whisper.model import ModelDimensions, Whisper

from appliance.models.backends.torch_whisper import preload_tokenizer
from appliance.models.convert import (
    ConversionError,
    check_ct2_file,
    read_ct2_model,
    torch_checkpoint,
    whisper_checkpoint,
)
from appliance.models.store import ModelStoreError, resolve_model, sha256_of
from tests import speech

pytestmark = pytest.mark.usefixtures("isolated_cache")  # conftest.py: STT_CACHE_DIR in tmp_path


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("convert-cache")


@pytest.fixture(scope="module")
def converted(module_cache):
    """name -> (CT2 directory, converted checkpoint path), converted once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STT_CACHE_DIR", str(module_cache))
        out = {}
        for name in ("tiny.en", "base"):
            resolved = resolve_model(name)
            out[name] = (resolved.path, torch_checkpoint(resolved.path))
        return out


def test_tiny_en_state_dict_loads_strictly_with_the_right_dims():
    model_bin = resolve_model("tiny.en").path / "model.bin"
    checkpoint = whisper_checkpoint(read_ct2_model(model_bin), model_bin)
    dims = ModelDimensions(**checkpoint["dims"])
    assert dims == ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                                   n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)
    model = Whisper(dims)
    state = {k: torch.from_numpy(np.array(v)) for k, v in checkpoint["model_state_dict"].items()}
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not model.is_multilingual


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_checkpoint_file_loads_with_whisper_load_model(converted, name):
    ct2_dir, checkpoint = converted[name]
    model = whisper.load_model(str(checkpoint), device="cpu")
    preload_tokenizer(model)  # for the transcribe tests below; see its docstring
    assert model.is_multilingual == (name == "base")
    # weights are the pack's float16 values, bit for bit
    ct2 = read_ct2_model(ct2_dir / "model.bin").variables
    embeddings = torch.from_numpy(ct2["decoder/embeddings/weight"].astype(np.float32))
    assert torch.equal(model.decoder.token_embedding.weight, embeddings)
    _, k, v = np.split(ct2["encoder/layer_0/self_attention/linear_0/weight"].astype(np.float32), 3)
    assert torch.equal(model.encoder.blocks[0].attn.key.weight, torch.from_numpy(k))
    assert torch.equal(model.encoder.blocks[0].attn.value.weight, torch.from_numpy(v))


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_encoder_output_matches_ctranslate2_float32(converted, prompt_audio, name):
    import ctranslate2

    ct2_dir, checkpoint = converted[name]
    model = whisper.load_model(str(checkpoint), device="cpu")
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(prompt_audio), model.dims.n_mels)
    with torch.inference_mode():
        ours = model.encoder(mel[None]).numpy()
    reference = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    theirs = np.array(reference.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None].numpy()))))
    assert ours.shape == theirs.shape == (1, 1500, model.dims.n_audio_state)
    # float32 both sides; what differs is summation order, which grows with depth and width:
    # tiny.en within 3e-5 (PLATFORM.md), base (6 layers, 512 wide, peak ~24) within 5e-5 of the peak
    bound = 3e-5 if name == "tiny.en" else 5e-5 * np.abs(theirs).max()
    assert np.abs(ours - theirs).max() < bound


def recordings(tmp_dir) -> dict[str, np.ndarray]:
    """The ALSA prompts and (with espeak-ng) a spoken sentence, as 16 kHz float32."""
    out = {name: speech.alsa_prompt_16k(name) for name in speech.ALSA_PROMPTS}
    if speech.espeak_available():
        import soundfile as sf
        import soxr

        spoken = speech.sentences_with_pauses(tmp_dir, sentences=speech.SENTENCES[:2])
        audio, rate_hz = sf.read(str(spoken.path), dtype="float32")
        out["espeak"] = soxr.resample(audio, rate_hz, 16_000).astype(np.float32)
    return out


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_greedy_transcripts_equal_faster_whisper_float32(converted, prompt_audio, tmp_path, name):
    from faster_whisper import WhisperModel

    ct2_dir, checkpoint = converted[name]
    model = whisper.load_model(str(checkpoint), device="cpu")
    preload_tokenizer(model)
    reference = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32")
    for label, audio in recordings(tmp_path).items():
        ours = whisper.transcribe(model, audio, language="en", temperature=0.0, fp16=False,
                                  condition_on_previous_text=False, without_timestamps=True, verbose=None)["text"]
        segments, _ = reference.transcribe(audio, language="en", beam_size=1, temperature=0.0, vad_filter=False,
                                           condition_on_previous_text=False, without_timestamps=True)
        theirs = "".join(s.text for s in segments)
        assert ours.strip() == theirs.strip(), label
        assert ours.strip(), label


def test_conversion_is_cached_verified_and_reused(tmp_path):
    resolved = resolve_model("tiny.en")
    first = torch_checkpoint(resolved.path)
    assert first.is_relative_to(tmp_path / "cache" / "stt-appliance" / "torch")
    manifest = json.loads(first.with_name("manifest.json").read_text())
    assert manifest["sha256"] == sha256_of(first)
    stamp = first.stat().st_mtime_ns
    assert torch_checkpoint(resolved.path) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not converted again
    # a damaged cached checkpoint is converted again rather than loaded
    with first.open("r+b") as f:
        f.seek(first.stat().st_size // 2)
        f.write(b"\xff\xff\xff\xff")
    os.utime(first, ns=(stamp, stamp + 1_000_000_000))
    assert torch_checkpoint(resolved.path) == first
    assert sha256_of(first) == manifest["sha256"]


def test_convert_command_writes_into_the_cache_and_reuses_it(capsys, tmp_path):
    from appliance.cli import main

    assert main(["models", "convert", "tiny.en", "--to", "torch"]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith("model.pt") and path.startswith(str(tmp_path / "cache"))
    assert main(["models", "convert", "tiny.en", "--to", "torch"]) == 0
    assert capsys.readouterr().out.strip() == path


@pytest.mark.parametrize("cut", [1, 1000, 40_000_000])
def test_truncated_model_bin_is_named(tmp_path, cut):
    source = (resolve_model("tiny.en").path / "model.bin").read_bytes()
    damaged = tmp_path / "model.bin"
    damaged.write_bytes(source[: len(source) - cut])
    for parse in (check_ct2_file, read_ct2_model):
        with pytest.raises(ConversionError, match="truncated") as info:
            parse(damaged)
        assert str(damaged) in str(info.value)
        assert isinstance(info.value, ModelStoreError)


def test_a_file_that_is_not_a_ct2_model_is_refused(tmp_path):
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(ConversionError, match=str(bogus)):
        check_ct2_file(bogus)
