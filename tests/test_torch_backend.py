"""The torch_whisper backend: weights converted from the installed pack, decode options, the pool,
and the real appliance serving with it (plus, with ../shared/audio, corpus WER against faster-whisper).
"""

from __future__ import annotations

import itertools
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("torch", reason="the torch extra is not installed (EXTRAS=torch scripts/setup.sh)")
pytest.importorskip("whisper", reason="openai-whisper is not installed (EXTRAS=torch scripts/setup.sh)")

from appliance.decode_options import DecodeOptions
from appliance.models.backends import load_backend
from appliance.models.backends.torch_whisper import (
    TorchWhisperBackend,
    pick_device,
    transcribe_kwargs,
)
from appliance.models.store import ModelStoreError, resolve_model
from clients.corpus import SHARED_AUDIO, english_corpus, normalize, word_errors
from tests import speech
from tests.conftest import finals_text, stream_file
from tests.helpers import REPO_ROOT
from tests.inprocess import InProcessAppliance

REALTIME = DecodeOptions()  # the shipped realtime profile's values


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """One cache for the module: the checkpoint is converted once, then reused (as in production)."""
    cache = tmp_path_factory.mktemp("torch-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STT_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="module")
def tiny(model_cache) -> TorchWhisperBackend:
    model = resolve_model("tiny.en")
    backend = load_backend("torch_whisper", model_id="cpu-tiny.en", model_path=str(model.path),
                           english_only=True, pool_size=2)
    assert isinstance(backend, TorchWhisperBackend)
    return backend


@pytest.fixture(scope="module")
def prompts(alsa_prompts) -> dict[str, np.ndarray]:
    return {name: speech.alsa_prompt_16k(name) for name in speech.ALSA_PROMPTS}


def text_of(transcript) -> str:
    return normalize(" ".join(s.text for s in transcript.segments))


def test_decodes_the_prompts(tiny, prompts):
    for name, audio in prompts.items():
        transcript = tiny.transcribe(audio, REALTIME, language=None, task="transcribe")
        assert text_of(transcript) == speech.ALSA_PROMPTS[name]
        assert (transcript.language, transcript.language_probability) == ("en", 1.0)
        assert transcript.audio_sec == pytest.approx(audio.size / 16_000) and transcript.decode_sec > 0
        segment = transcript.segments[0]
        assert segment.avg_logprob > -1.0 and segment.no_speech_prob < 0.6 and 0 < segment.compression_ratio < 2.4
    assert tiny.max_concurrency == 2 and tiny.device == "cpu" and tiny.english_only


def test_silence_gives_no_segments(tiny):
    transcript = tiny.transcribe(np.zeros(32_000, dtype=np.float32), REALTIME, language=None, task="transcribe")
    assert transcript.segments == ()


def test_timestamps_and_beam_search_are_honoured(tiny, prompts):
    audio = prompts["Front_Center.wav"]
    timed = tiny.transcribe(audio, DecodeOptions(without_timestamps=False), language=None, task="transcribe")
    assert text_of(timed) == "front center"
    # the times come from timestamp tokens (20 ms steps) the model predicted, inside the 30 s window
    start, end = timed.segments[0].start_sec, timed.segments[0].end_sec
    assert 0.0 <= start < end <= 30.0
    assert round(end / 0.02) * 0.02 == pytest.approx(end)
    beam = tiny.transcribe(audio, DecodeOptions(beam_size=5, best_of=5), language=None, task="transcribe")
    assert text_of(beam) == "front center"


def test_options_map_onto_openai_whisper():
    greedy = transcribe_kwargs(REALTIME, fp16=False, language="en", task="transcribe", audio_sec=2.0)
    assert (greedy["beam_size"], greedy["patience"], greedy["length_penalty"]) == (None, None, None)
    assert (greedy["temperature"], greedy["compression_ratio_threshold"], greedy["logprob_threshold"],
            greedy["no_speech_threshold"]) == (0.0, 2.4, -1.0, 0.6)
    assert greedy["without_timestamps"] and not greedy["condition_on_previous_text"]
    assert transcribe_kwargs(DecodeOptions(word_timestamps=True), fp16=False, language="en", task="transcribe",
                             audio_sec=3.0)["word_timestamps"] is False  # aligned after, never openai-whisper's mode
    assert greedy["sample_len"] == 30 and greedy["verbose"] is None and greedy["fp16"] is False
    tuned = DecodeOptions(beam_size=4, patience=2.0, length_penalty=0.5, temperature=(0.0, 0.4), best_of=3,
                          no_speech_threshold=None, log_prob_threshold=None, compression_ratio_threshold=None,
                          without_timestamps=False, hotwords="Kubernetes", initial_prompt="Cluster notes.")
    beam = transcribe_kwargs(tuned, fp16=True, language="de", task="translate", audio_sec=10.0)
    assert (beam["beam_size"], beam["patience"], beam["length_penalty"], beam["best_of"]) == (4, 2.0, 0.5, 3)
    assert (beam["no_speech_threshold"], beam["logprob_threshold"], beam["compression_ratio_threshold"]) == \
        (None, None, None)
    assert beam["temperature"] == (0.0, 0.4) and not beam["without_timestamps"]
    assert beam["initial_prompt"] == "Kubernetes Cluster notes."  # hotwords first, as faster-whisper
    assert (beam["language"], beam["task"], beam["fp16"]) == ("de", "translate", True)


def test_concurrent_calls_each_get_their_own_instance(tiny, prompts):
    names = list(prompts) * 2
    start = threading.Barrier(len(names))

    def decode(name: str) -> str:
        start.wait()
        return text_of(tiny.transcribe(prompts[name], REALTIME, language=None, task="transcribe"))

    with ThreadPoolExecutor(len(names)) as pool:
        assert list(pool.map(decode, names)) == [speech.ALSA_PROMPTS[n] for n in names]


def test_word_timings_align_the_plain_decode_on_its_own_encoder_output(tiny):
    # openai-whisper's word mode decoded a short window's padding again; the alignment reads the
    # plain decode's segments, with the encoder output that decode computed
    import soundfile as sf

    from appliance.models.backends import torch_words

    reencoded: list[int] = []
    tap_lookup = torch_words.EncoderTap.encoded

    def encoded(tap, mel):
        output = tap_lookup(tap, mel)
        reencoded.append(output is None)
        return output

    timed = DecodeOptions(word_timestamps=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_words.EncoderTap, "encoded", encoded)  # observe, not replace, the lookup
        for name in ("cmd_en_go_forward_ten_meters.wav", "sent_en_arctic_aew_a0001.wav"):
            audio, _ = sf.read(str(REPO_ROOT / "hwtests" / "speech" / name), dtype="float32")
            plain = tiny.transcribe(audio, REALTIME, language=None, task="transcribe")
            aligned = tiny.transcribe(audio, timed, language=None, task="transcribe")
            assert [s.text for s in aligned.segments] == [s.text for s in plain.segments], name
            for segment in aligned.segments:
                assert "".join(w.text for w in segment.words).split() == segment.text.split()
                assert all(0 <= w.start_sec <= w.end_sec <= audio.size / 16_000 + 0.05 for w in segment.words)
                assert all(a.start_sec <= b.start_sec for a, b in itertools.pairwise(segment.words))
    assert reencoded and not any(reencoded)  # every window aligned on the decode's own encoding


def test_multilingual_base_detects_or_forces_the_language(model_cache, prompts):
    model = resolve_model("base")
    backend = TorchWhisperBackend(model_id="cpu-base", model_path=str(model.path), english_only=False)
    audio = prompts["Side_Left.wav"]
    detected = backend.transcribe(audio, REALTIME, language=None, task="transcribe")
    assert detected.language == "en" and 0.5 < detected.language_probability <= 1.0
    assert text_of(detected) == "side left"
    forced = backend.transcribe(audio, REALTIME, language="de", task="transcribe")
    assert (forced.language, forced.language_probability) == ("de", 1.0)


def test_device_choice_uses_the_probes():
    """CUDA and MPS are absent here: the probes are the seam (appliance.hardware does the same)."""
    yes, no = (lambda: True), (lambda: False)
    assert pick_device("auto", yes, yes) == "cuda"
    assert pick_device("auto", no, yes) == "mps"
    assert pick_device("auto", no, no) == "cpu"
    assert pick_device("mps", no, yes) == "mps"
    with pytest.raises(ModelStoreError, match="no CUDA device"):
        pick_device("cuda", no, no)
    with pytest.raises(ModelStoreError, match="no MPS backend"):
        pick_device("mps", yes, no)


def test_explicit_cuda_on_this_machine_is_a_model_error(model_cache):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model = resolve_model("tiny.en")
    with pytest.raises(ModelStoreError, match="no CUDA device"):
        load_backend("torch_whisper", model_id="x", model_path=str(model.path), device="cuda", english_only=True)


# --- through the real appliance ---------------------------------------------------------------

def test_the_appliance_serves_with_torch_whisper(sentences, model_cache):
    with InProcessAppliance("--model-backend", "torch_whisper", env={"STT_CACHE_DIR": str(model_cache)}) as server:
        results = stream_file(server.address, sentences.path, attributes={"word_timestamps": "true"})
        log = server.log()
    assert re.search(r"torch_whisper: \d instance\(s\) of", log)  # torch, not faster-whisper, decoded
    errors, words = word_errors(sentences.reference, finals_text(results))
    assert errors / words <= 0.1, finals_text(results)
    finals = [r for r in results if r.is_final and r.text]
    assert len(finals) == len(sentences.sentences)
    for final in finals:  # openai-whisper's own word alignment, in the session timeline
        assert " ".join(w.word for w in final.words) == final.text
        assert all(final.start_sec - 0.01 <= w.start_sec <= w.end_sec <= final.end_sec + 0.5 for w in final.words)


def stream_corpus(recordings, *server_args: str, env: dict[str, str]) -> tuple[int, int, list[str]]:
    """Stream each recording (faster than realtime, one at a time); pooled (errors, words) and texts."""
    errors = words = 0
    texts = []
    with InProcessAppliance(*server_args, env={"STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC": "0", **env}) as server:
        for recording in recordings:
            text = finals_text(stream_file(server.address, recording.path, realtime=False))
            file_errors, file_words = word_errors(recording.reference, text)
            errors, words, texts = errors + file_errors, words + file_words, [*texts, text]
    return errors, words, texts


@pytest.mark.corpus
def test_corpus_wer_matches_faster_whisper_on_the_same_weights(model_cache):
    recordings = english_corpus()
    if not recordings:
        pytest.skip(f"no speech corpus at {SHARED_AUDIO} (a fresh clone without ../shared)")
    env = {"STT_CACHE_DIR": str(model_cache)}
    torch_errors, words, torch_texts = stream_corpus(recordings, "--model-backend", "torch_whisper",
                                                     "--compute-type", "float32", env=env)
    ct2_errors, _, ct2_texts = stream_corpus(recordings, "--model-backend", "faster_whisper",
                                             "--compute-type", "float32", env=env)
    torch_wer, ct2_wer = 100 * torch_errors / words, 100 * ct2_errors / words
    print(f"pooled WER over {len(recordings)} files, {words} words: torch_whisper {torch_wer:.1f}%, "
          f"faster_whisper {ct2_wer:.1f}%")
    assert abs(torch_wer - ct2_wer) <= 2.0, list(zip(torch_texts, ct2_texts, strict=True))
