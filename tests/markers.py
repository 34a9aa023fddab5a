"""Which tests are `deploy` and which are `slow` (markers registered in pyproject.toml).

Every run without `-m` runs them all (CI does). For a quick check while working:
`pytest -m "not slow and not deploy"`. `deploy` is every test under tests/deploy (images, containers,
systemd, manifests). `slow` is a test that takes more than about 5 s on a 2-core box, mostly streams
played in real time, benchmarks and tools run as processes; SLOW names them by module (every test in
it) or by test, from `pytest --durations`. A test named here that its module (when collected) no
longer defines fails the collection, so the table cannot silently rot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent

SLOW_MODULES = frozenset({
    "test_bench_soak.py",            # the soak benchmark, run as a process
    "test_corpus.py",                # the whole corpus streamed in real time
    "test_fleet.py",                 # appliance processes behind HAProxy, killed and drained
    "test_grpcurl.py",               # the same fleet, through grpcurl
    "test_hwtests.py",               # python -m hwtests --tiny against a real appliance
    "test_loadtest.py",              # stt-loadtest runs
    "test_status_page_browser.py",   # chromium renders the page while a stream runs
    "adversarial/test_fuzz.py",      # hundreds of generated requests through the real server
})

SLOW_TESTS = frozenset({
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
    "adversarial/test_attach.py::test_a_stolen_ticket_cannot_take_over_a_stream_in_progress",
    "test_torch_backend.py::test_corpus_wer_matches_faster_whisper_on_the_same_weights",
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
        if module in SLOW_MODULES or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    stale = sorted(name for name in SLOW_TESTS if name.split("::")[0] in modules
                   and not hasattr(modules[name.split("::")[0]], name.split("::")[1]))
    if stale:
        raise pytest.UsageError(f"tests/markers.py names tests that do not exist (renamed?): {', '.join(stale)}")
