"""End to end through a real appliance process: real model, real VAD, real gRPC on loopback."""

from __future__ import annotations

import itertools
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appliance.api import stt_pb2, stt_pb2_grpc
from clients.audio import load_pcm16
from clients.corpus import normalize, offline_transcribe, wer
from clients.sdk import NO_RESUME, SttClient, SttError, split_pcm16
from tests import speech
from tests.conftest import finals_text, stream_file

LONG_SENTENCE = ("Every morning the old fisherman walked down to the harbour, checked his nets, "
                 "and told the children stories about the sea and the storms he had seen")


def send_raw(address: str, chunks: list) -> list:
    with grpc.insecure_channel(address) as channel:
        try:
            return list(stt_pb2_grpc.SpeechToTextStub(channel).StreamingRecognize(iter(chunks), timeout=30))
        except grpc.RpcError as err:
            raise SttError.from_rpc_error(err) from err


def test_sentences_become_one_final_each_in_order(appliance_server, sentences):
    results = stream_file(appliance_server.address, sentences.path)
    finals = [r for r in results if r.is_final]
    assert [r.utterance_index for r in finals] == list(range(len(sentences.sentences)))
    assert all(a.end_sec <= b.start_sec for a, b in itertools.pairwise(finals))
    for final, sentence in zip(finals, sentences.sentences, strict=True):
        assert wer(sentence, final.text) <= 0.25, (sentence, final.text)
    assert not any(not r.is_final for r in results), "partials are opt-in"


def test_realtime_stream_reports_latency_close_to_the_endpoint(appliance_server, sentences):
    results = stream_file(appliance_server.address, sentences.path, realtime=True)
    finals = [r for r in results if r.is_final]
    assert wer(sentences.reference, finals_text(results)) <= 0.15
    # End of speech -> final at the client: vad.silence (0.5 s) plus decode; generous bound for a busy CI box.
    assert all(0.4 <= r.latency_sec <= 4.0 for r in finals), [r.latency_sec for r in finals]


@pytest.mark.parametrize("rate_hz", [8_000, 48_000])
def test_other_sample_rates_are_resampled(appliance_server, alsa_prompts, tmp_path, rate_hz):
    import soundfile as sf
    import soxr

    source, reference = next(iter(alsa_prompts.items()))
    audio, source_rate = sf.read(str(source), dtype="float32", always_2d=True)
    path = tmp_path / f"prompt_{rate_hz}.wav"
    sf.write(str(path), soxr.resample(audio.mean(axis=1), source_rate, rate_hz), rate_hz, subtype="PCM_16")
    assert wer(reference, finals_text(stream_file(appliance_server.address, path))) == 0.0


def test_alsa_prompts(appliance_server, alsa_prompts):
    for path, reference in alsa_prompts.items():
        assert normalize(finals_text(stream_file(appliance_server.address, path))) == normalize(reference)


def test_digital_silence_gives_no_text(appliance_server, tmp_path):
    results = stream_file(appliance_server.address, speech.silence_wav(tmp_path, seconds=20.0))
    assert [r.text for r in results if r.text] == []


def test_noise_recording_gives_no_text(appliance_server, tmp_path):
    if not speech.NOISE_WAV.exists():
        pytest.skip("Debian's alsa-utils Noise.wav is not installed")
    results = stream_file(appliance_server.address, speech.looped_noise_wav(tmp_path, seconds=20.0),
                          realtime=True, attributes={"partial": "true"})
    assert [r.text for r in results if r.text] == []


def test_partials_grow_committed_text_and_precede_the_final(appliance_server, tmp_path):
    if not speech.espeak_available():
        pytest.skip("espeak-ng is not installed")
    long_sentence = LONG_SENTENCE
    recording = speech.sentences_with_pauses(tmp_path, (long_sentence,), name="long.wav")
    results = stream_file(appliance_server.address, recording.path, realtime=True,
                          attributes={"partial": "true"})
    partials = [r for r in results if not r.is_final]
    finals = [r for r in results if r.is_final]
    assert len(partials) >= 2 and len(finals) >= 1
    assert results.index(finals[0]) > results.index(partials[0])
    by_utterance: dict[int, list] = {}
    for r in results:
        by_utterance.setdefault(r.utterance_index, []).append(r)
    for items in by_utterance.values():
        committed = [r.committed_text.split() for r in items]
        for earlier, later in itertools.pairwise(committed):
            assert later[: len(earlier)] == earlier, (earlier, later)
        assert items[-1].is_final and all(not r.is_final for r in items[:-1])
        for r in items:
            assert r.text == f"{r.committed_text} {r.unstable_text}".strip()
    assert wer(long_sentence, finals_text(results)) <= 0.25


def test_half_close_flushes_the_last_utterance(appliance_server, sentences):
    """Speech that runs up to the half-close (no trailing silence) still gets its final."""
    pcm16, rate_hz = load_pcm16(sentences.path)
    samples = np.frombuffer(pcm16, dtype="<i2")
    first_sentence_end = samples.size // 3  # cut inside the second sentence
    with SttClient(appliance_server.address) as client:
        session = client.create_session()
        results = list(client.stream_audio(session, samples[: first_sentence_end + rate_hz].tobytes(), rate_hz))
    finals = [r for r in results if r.is_final]
    assert len(finals) == 2
    assert finals[-1].text, "the cut-off utterance's final carries its words"


def test_without_emit_final_on_vad_endpoints_do_not_close_utterances(appliance_server, sentences):
    results = stream_file(appliance_server.address, sentences.path, attributes={"emit_final_on_vad": "false"})
    finals = [r for r in results if r.is_final]
    assert len(finals) == 1, "one utterance, closed by the half-close"
    assert wer(sentences.reference, finals[0].text) <= 0.15


def test_auto_end_mode_ends_the_stream_after_the_first_final(appliance_server, sentences):
    results = stream_file(appliance_server.address, sentences.path, vad_mode="auto")
    finals = [r for r in results if r.is_final]
    assert len(finals) == 1 and wer(sentences.sentences[0], finals[0].text) <= 0.25


def test_invalid_chunk_fails_only_its_own_stream(appliance_server, sentences):
    good: dict[str, object] = {}

    def run_good_stream():
        good["results"] = stream_file(appliance_server.address, sentences.path, realtime=True)

    worker = threading.Thread(target=run_good_stream)
    worker.start()
    with SttClient(appliance_server.address) as client:
        session = client.create_session()
        with pytest.raises(SttError) as odd_bytes:  # the SDK refuses odd chunks itself: use the raw stub
            send_raw(appliance_server.address, [stt_pb2.AudioChunk(
                session_id=session.session_id, session_token=session.session_token, pcm16=b"\x00\x01\x02",
                sample_rate_hz=16_000)])
        session = client.create_session()
        with pytest.raises(SttError) as bad_rate:
            list(client.send_chunks(session, [b"\x00\x00" * 160], 1_000, realtime=False))
        session = client.create_session()
        with pytest.raises(SttError) as too_long:
            list(client.send_chunks(session, [b"\x00\x00" * 16_000 * 3], 16_000, realtime=False))
    worker.join(timeout=120)
    assert odd_bytes.value.code == bad_rate.value.code == too_long.value.code == "ERR1003"
    assert odd_bytes.value.status == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_chunk_ms" in str(too_long.value) and "sample_rate_hz=1000" in str(bad_rate.value)
    assert wer(sentences.reference, finals_text(good["results"])) <= 0.15


def test_batch_upload_is_one_chunk_and_exempt_from_max_chunk_ms(appliance_server, sentences):
    pcm16, rate_hz = load_pcm16(sentences.path)
    with SttClient(appliance_server.address) as client:
        session = client.create_session(decode_profile="accurate", attributes={"upload_mode": "batch"})
        assert session.max_chunk_ms == 0
        results = list(client.send_chunks(session, [pcm16], rate_hz, realtime=False))
    assert wer(sentences.reference, finals_text(results)) <= 0.15


def test_session_errors_carry_codes(appliance_server):
    with SttClient(appliance_server.address) as client:
        with pytest.raises(SttError) as profile:
            client.create_session(decode_profile="turbo")
        with pytest.raises(SttError) as option:
            client.create_session(attributes={"decode.beam_size": "0"})
        with pytest.raises(SttError) as unknown_option:
            client.create_session(attributes={"decode.beam_width": "3"})
        with pytest.raises(SttError) as model:
            client.create_session(model_id="cuda-large-v3")
        client.create_session(session_id="kiosk-7")
        with pytest.raises(SttError) as duplicate:
            client.create_session(session_id="kiosk-7")
        with pytest.raises(SttError) as unknown_session:
            fake = client.create_session()
            fake.session_id = "never-created"
            list(client.send_chunks(fake, [b"\x00\x00" * 1600], 16_000, realtime=False))
        with pytest.raises(SttError) as token:
            session = client.create_session(require_token=True)
            assert session.session_token
            session.session_token = "forged"
            list(client.send_chunks(session, [b"\x00\x00" * 1600], 16_000, realtime=False))
    assert profile.value.code == option.value.code == unknown_option.value.code == "ERR1010"
    assert "turbo" in str(profile.value) and "beam_width" in str(unknown_option.value)
    assert model.value.code == "ERR1011"
    assert duplicate.value.code == "ERR1002" and duplicate.value.status == grpc.StatusCode.ALREADY_EXISTS
    assert unknown_session.value.code == "ERR1001"
    assert token.value.code == "ERR1005"


def test_idle_session_times_out_after_flushing_its_final(tight_server, sentences):
    pcm16, rate_hz = load_pcm16(sentences.path)
    first_sentence = pcm16[: len(pcm16) // 3]
    results = []
    with SttClient(tight_server.address) as client:
        session = client.create_session()

        def chunks_then_stall():
            yield from split_pcm16(first_sentence, rate_hz, 100)
            threading.Event().wait(4.0)  # longer than session_timeout_sec=2

        with pytest.raises(SttError) as timeout:
            for result in client.send_chunks(session, chunks_then_stall(), rate_hz, realtime=False):
                results.append(result)
    assert timeout.value.code == "ERR1012"
    assert [r.is_final for r in results] == [True] and results[0].text


def test_buffer_cap_cuts_long_speech_without_losing_or_repeating_words(tight_server, tmp_path):
    if not speech.espeak_available():
        pytest.skip("espeak-ng is not installed")
    recording = speech.sentences_with_pauses(tmp_path, (LONG_SENTENCE,), name="long.wav")
    results = stream_file(tight_server.address, recording.path)
    finals = [r for r in results if r.is_final]
    assert len(finals) >= 3, "max_buffer_sec=4 cuts this ~12 s utterance"
    assert all(a.start_sec < b.start_sec for a, b in itertools.pairwise(finals))
    # Cutting costs little: compare with one offline decode of the whole file.
    offline = offline_transcribe(recording.path)
    assert wer(LONG_SENTENCE, finals_text(results)) <= wer(LONG_SENTENCE, offline) + 0.15, finals_text(results)


def test_grpc_health_and_reflection(appliance_server):
    with grpc.insecure_channel(appliance_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "stt.v1.SpeechToText"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=5)
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"stt.v1.SpeechToText", "grpc.health.v1.Health"} <= names


def test_sigterm_drains_live_streams_then_exits_zero(sentences):
    """A stream in the middle of speech gets its finals, the open utterance's included, then ERR1015
    (the audio after the drain was not heard; a resuming client would go on elsewhere, and there is
    no elsewhere here); the server exits 0."""
    from clients.local_server import LocalAppliance

    with LocalAppliance() as server:
        pcm16, rate_hz = load_pcm16(sentences.path)
        results, errors = [], []

        def stream():
            try:
                with SttClient(server.address, resume=NO_RESUME) as client:
                    session = client.create_session()
                    for result in client.stream_audio(session, pcm16, rate_hz, realtime=True):
                        results.append(result)
            except SttError as err:
                errors.append(err)

        worker = threading.Thread(target=stream)
        worker.start()
        threading.Event().wait(5.0)  # inside the second sentence (it runs ~3.9-6.5 s)
        server.process.send_signal(__import__("signal").SIGTERM)
        exit_code = server.process.wait(timeout=30)
        worker.join(timeout=30)
    assert exit_code == 0
    assert [e.code for e in errors] == ["ERR1015"] and "open utterance got its final" in errors[0].message
    finals = [r for r in results if r.is_final]
    assert len(finals) == 2 and all(r.text for r in finals), [r.text for r in finals]
    assert wer(sentences.sentences[0], finals[0].text) <= 0.25


def test_speech_events_bracket_each_utterance_before_its_partials_and_final(appliance_server, tmp_path):
    """Real speech (two shipped recordings, 1.5 s apart): with speech_events=true every utterance's
    SPEECH_STARTED comes before its first partial or final, its SPEECH_ENDED before its final and
    at the final's end; without the attribute there are none."""
    import soundfile as sf

    from tests.helpers import REPO_ROOT

    speech_dir = REPO_ROOT / "hwtests/speech"
    first, rate_hz = sf.read(str(speech_dir / "sent_en_jfk_ask_not.wav"), dtype="float32")
    second, _ = sf.read(str(speech_dir / "cmd_en_go_forward_ten_meters.wav"), dtype="float32")
    path = tmp_path / "two.wav"
    sf.write(str(path), np.concatenate([first, np.zeros(int(1.5 * rate_hz), np.float32), second]), rate_hz)
    results = stream_file(appliance_server.address, path, attributes={"partial": "true", "speech_events": "true"})
    events = [r for r in results if r.speech_event]
    finals = [r for r in results if r.is_final and r.text]
    assert len(finals) >= 2 and all(not e.text and not e.is_final for e in events)
    for final in finals:
        mine = [(n, r) for n, r in enumerate(results) if r.utterance_index == final.utterance_index]
        kinds = [r.speech_event or ("final" if r.is_final else "partial") for _, r in mine]
        started, ended = kinds.index("started"), len(kinds) - 1 - kinds[::-1].index("ended")
        assert started == 0 and kinds.index("final") > ended, kinds  # started first, ended before the final
        assert all(kind == "partial" for kind in kinds[started + 1:ended] if kind not in ("started", "ended"))
        started_at, ended_at = mine[started][1].start_sec, mine[ended][1].end_sec
        assert final.start_sec <= started_at < ended_at and ended_at == pytest.approx(final.end_sec, abs=0.01)
    assert "ask not what your country" in normalize(finals_text(results))
    plain = stream_file(appliance_server.address, path, attributes={"partial": "true"})
    assert not any(r.speech_event for r in plain) and len([r for r in plain if r.is_final]) == len(
        [r for r in results if r.is_final])


def test_word_timestamps_cover_each_final_within_its_utterance(appliance_server):
    """Real speech: with word_timestamps=true each final carries one timed word per word of its text,
    in order, inside the utterance, with probabilities in [0, 1]; partials carry none."""
    from tests.helpers import REPO_ROOT

    path = REPO_ROOT / "hwtests/speech/sent_en_jfk_ask_not.wav"
    results = stream_file(appliance_server.address, path, attributes={"word_timestamps": "true", "partial": "true"})
    finals = [r for r in results if r.is_final and r.text]
    assert finals and not any(r.words for r in results if not r.is_final)
    for final in finals:
        words = final.words
        assert " ".join(w.word for w in words) == final.text
        assert all(final.start_sec - 0.01 <= w.start_sec <= w.end_sec <= final.end_sec + 0.5 for w in words)
        assert all(0.0 <= w.probability <= 1.0 for w in words)
        assert all(a.start_sec <= b.start_sec for a, b in itertools.pairwise(words))
    probabilities = [w.probability for f in finals for w in f.words]
    assert sum(probabilities) / len(probabilities) > 0.5  # clear speech: the decoder was sure of most words
    # every result with text carries the decoder's confidence, speech events none
    assert all(0.0 < r.confidence <= 1.0 for r in results if r.text)
