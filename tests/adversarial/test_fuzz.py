"""No client can take the box down: generated CreateSession requests and chunk sequences against a real
server. Every refusal carries its ERR code, nothing leaves a traceback in the log, and afterwards the
server is SERVING and an honest client still gets its transcript.

A CI-sized, derandomized sample (the same cases on every run); `python bench/fuzz.py` runs thousands.
The generators and the runner live in tests/adversarial/fuzzing.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.adversarial.fuzzing import (
    FUZZ_SERVER_ENV,
    Case,
    Limits,
    Report,
    Runner,
    cases,
    grpc_health,
    honest_transcript,
    regression_cases,
    traceback_kinds,
)
from tests.conftest import start_appliance

CI_EXAMPLES = 300  # generated cases, besides the regression ones: ~15 s on a 2-core box
CI_LIMITS = Limits(create_timeout_sec=10.0, stream_timeout_sec=30.0, max_stream_bytes=2 * 1024 * 1024)


@pytest.fixture(scope="module")
def fuzz_server(request):
    return start_appliance(request, env=FUZZ_SERVER_ENV)


@pytest.fixture(scope="module")
def fuzz_report(fuzz_server) -> Report:
    """Run the regression cases, then CI_EXAMPLES generated ones; stop early if the server stops answering."""
    report = Report()
    stopped = report.stopped

    def run_one(runner: Runner, case: Case) -> None:
        if stopped:
            return
        outcome = runner.run(case)
        report.add(outcome)
        if fuzz_server.process.poll() is not None:
            stopped.append(f"the server died (exit {fuzz_server.process.returncode}) after: {outcome.describe()}")
        elif any(c.status == "TIMEOUT" for c in outcome.calls) and grpc_health(fuzz_server.address) != "SERVING":
            stopped.append(f"the server stopped answering after: {outcome.describe()}")

    with Runner(fuzz_server.address, CI_LIMITS) as runner:
        for case in regression_cases():
            run_one(runner, case)

        @settings(max_examples=CI_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(cases())
        def generated(case: Case) -> None:
            run_one(runner, case)

        generated()
    return report


def test_every_refusal_of_a_fuzzed_request_carries_its_err_code(fuzz_report):
    assert not fuzz_report.stopped, fuzz_report.stopped
    assert fuzz_report.cases >= CI_EXAMPLES
    assert fuzz_report.uncoded == 0, (
        f"{fuzz_report.uncoded} of {fuzz_report.cases} cases ended uncoded, {len(fuzz_report.distinct)} distinct:\n"
        + "\n".join(fuzz_report.uncoded_lines()))


def test_fuzzing_leaves_no_traceback_in_the_server_log(fuzz_server, fuzz_report):
    kinds = traceback_kinds(fuzz_server.log())
    assert not kinds, "tracebacks in the server log:\n" + "\n".join(f"{n} x {line}" for line, n in kinds.items())


def test_after_fuzzing_the_server_is_serving_and_transcribes(fuzz_server, fuzz_report, front_center_wav):
    assert fuzz_server.process.poll() is None, f"the server exited with {fuzz_server.process.returncode}"
    assert grpc_health(fuzz_server.address) == "SERVING"
    text = honest_transcript(fuzz_server.address)
    assert "front" in text and "center" in text, text
