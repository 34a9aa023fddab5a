"""Which tests are `deploy`, `adversarial`, `slow`, `heavy`, `apart` and `solo` (markers in pyproject.toml).

Every run without `-m` runs them all (CI does). For a quick check while working:
`pytest -m "not slow and not deploy"`.
- `deploy`: every test under tests/deploy (images, containers, systemd, manifests).
- `adversarial`: every test under tests/adversarial (attacks on a real appliance, an honest client beside).
- `slow`: more than about 5 s on a 2-core box: streams played in real time, benchmarks, tools run
  as processes. Named below by module (every test in it) or by test, from `pytest --durations`.
- `heavy`: minutes of CPU that assert accuracy or structure, not timing (the corpus, hwtests, the
  soak): scripts/test.sh runs them in a pytest session of their own, beside the rest.
- `apart`: mostly waits on other processes (browsers, an agent framework, HAProxy fleets, the
  virtual microphone, grpcurl): scripts/test.sh runs them in a pytest session of their own, beside
  the rest, so their waits do not lengthen the main session.
- `solo`: needs the CPU to itself — it measures this process's share of the CPU, or holds the server
  at its decode capacity on purpose (finals due within `decode_queue_timeout_sec`), which the sessions
  beside it would tip over: run after them, alone.
A test named here that its module (when collected) no longer defines fails the collection, so the
tables cannot silently rot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent

# Seconds measured on the shared 2-core box (pytest --durations), for the next one who sorts these.
HEAVY = frozenset({
    "test_corpus.py",                # 230 s: the whole corpus streamed at once, WER against offline
    "test_hwtests.py",               # 110 s: python -m hwtests --tiny, its report's keys and plots
    "test_word_timing_corpus.py",    # 75 s: word-timed finals keep their text, clip after clip
    "test_torch_backend.py::test_corpus_wer_matches_faster_whisper_on_the_same_weights",  # 95 s
    "test_bench_soak.py::test_soak_smoke_run_exits_0_and_prints_the_leak_table",         # 30 s
    "test_convert.py",               # 55 s: converted checkpoints decode exactly as CTranslate2 does
    "test_faster_whisper_backend.py::test_word_timings_are_aligned_on_the_plain_decode_and_never_change_its_text",
})

APART = frozenset({
    "test_fleet.py",                 # 45 s: appliance processes behind HAProxy
    "test_status_page_browser.py",   # chromium
    "test_captions_browser.py",      # chromium, fake microphone
    "test_websocket_opus.py",        # 25 s: Opus streams, chromium's MediaRecorder
    "test_voice_agent.py",           # 17 s: Pipecat in its own process
    "test_openai_tls.py",            # 12 s: TLS deadlines run out
    "test_mic_client.py",            # the mic client through pulseaudio's virtual microphone
    "test_grpcurl.py",               # grpcurl processes, one behind HAProxy
})

SOLO = frozenset({
    "test_loadtest.py::test_sampler_sees_this_process_burn_cpu",  # > 40 % of a core while it burns one
    # Six partial streams on one decode slot: beside the heavy session a final waited past 5 s (ERR1009).
    "test_capacity.py::test_partials_drop_under_pressure_but_every_final_arrives",
    "test_capacity.py::test_flooding_stream_does_not_starve_a_realtime_stream",  # on-time service under a flood
})

SLOW = frozenset({
    *HEAVY,
    "test_fleet.py",                 # 45 s: appliance processes behind HAProxy, killed and drained
    "test_status_page_browser.py",   # 9 s: chromium renders the page while a stream runs
    "test_captions_browser.py",      # 14 s: chromium's fake microphone plays a recording to the captions page
    "test_voice_agent.py",           # 17 s: Pipecat pipelines in their own process stream JFK (2x), ws and wss
    "test_openai_tls.py",            # 12 s: https uploads, header and body deadlines run out over TLS
    "adversarial/test_fuzz.py",      # 20 s: hundreds of generated requests through the real server
    "adversarial/test_stream_abuse.py",     # 100 s: attacks each held until the server reaps them
    "adversarial/test_ticket_lifecycle.py",  # 45 s: resume windows run out
    "adversarial/test_attach.py::test_a_stolen_ticket_cannot_take_over_a_stream_in_progress",
    "test_streaming_e2e.py::test_noise_recording_gives_no_text",
    "test_streaming_e2e.py::test_partials_grow_committed_text_and_precede_the_final",
    "test_streaming_e2e.py::test_invalid_chunk_fails_only_its_own_stream",
    "test_streaming_e2e.py::test_realtime_stream_reports_latency_close_to_the_endpoint",
    "test_streaming_e2e.py::test_word_timestamps_cover_each_final_within_its_utterance",
    "test_streaming_e2e.py::test_sigterm_drains_live_streams_then_exits_zero",
    "test_streaming_e2e.py::test_half_close_flushes_the_last_utterance",
    "test_capacity.py::test_partials_drop_under_pressure_but_every_final_arrives",
    "test_capacity.py::test_fixed_vad_pool_err1008_leaves_the_running_stream_alone",
    "test_capacity.py::test_flooding_stream_does_not_starve_a_realtime_stream",
    "test_logging_pii.py::test_debug_log_holds_no_transcript_words",
    "test_torch_backend.py::test_the_appliance_serves_with_torch_whisper",
    "test_mic_client.py::test_appliance_server_mic_transcribes_speech_played_into_the_microphone",
    "test_resume.py::test_a_cut_mid_utterance_loses_and_repeats_nothing",
    "test_resume.py::test_a_resume_after_the_window_is_refused_with_a_code",
    "test_resume.py::test_a_stream_resumes_on_another_node_sharing_the_secret",
    "test_resume.py::test_a_cut_between_utterances_loses_and_repeats_nothing",
    "test_http_e2e.py::test_admin_load_and_unload_while_streams_run",
    "test_loadtest.py::test_loadtest_cli_against_a_real_server",
    "test_wyoming.py::test_sigterm_mid_transcription_delivers_what_was_heard_then_err1015_and_exits_cleanly",
    "test_openai_api.py::test_a_multilingual_model_loaded_at_run_time_translates",
    "test_websocket.py::test_deepgram_sdk_streams_real_speech_with_interim_and_final_results",  # 6-10 s: JFK at 2x
    "test_websocket.py::test_utterance_end_comes_after_each_gap_of_utterance_end_ms_between_words_and_only_then",  # 6 s
    "test_websocket_opus.py::test_a_real_mediarecorder_webm_stream_from_chromium_is_transcribed",  # 9 s: chromium
})


def _names(item: pytest.Item) -> tuple[str, str]:
    """(module path under tests/, `module::test` without parameters)."""
    module = Path(str(item.path)).resolve().relative_to(TESTS_DIR).as_posix()
    return module, f"{module}::{getattr(item, 'originalname', item.name)}"


def apply_markers(items: list[pytest.Item]) -> None:
    modules = {}  # module path -> the module object, to look names up however few of its tests were selected
    for item in items:
        module, test = _names(item)
        modules[module] = getattr(item, "module", None)
        if module.startswith("deploy/"):
            item.add_marker(pytest.mark.deploy)
        if module.startswith("adversarial/"):
            item.add_marker(pytest.mark.adversarial)
        if module in SLOW or test in SLOW:
            item.add_marker(pytest.mark.slow)
        if module in HEAVY or test in HEAVY:
            item.add_marker(pytest.mark.heavy)
        if module in APART:
            item.add_marker(pytest.mark.apart)
        if test in SOLO:
            item.add_marker(pytest.mark.solo)
    named = SLOW | SOLO | APART
    stale = [name for name in named if not (TESTS_DIR / name.split("::")[0]).is_file()]
    for module, test in (name.split("::") for name in named if "::" in name):
        if module in modules and not hasattr(modules[module], test):
            stale.append(f"{module}::{test}")
    if stale:
        raise pytest.UsageError(f"tests/markers.py names tests that are gone (renamed?): {', '.join(sorted(stale))}")
