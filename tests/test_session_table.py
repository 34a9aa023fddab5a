"""The one table of live sessions (appliance.session_table) and a session's timeline
(appliance.session_timeline): states, caps, retention of ended records, what a resume may repeat."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from prometheus_client import CollectorRegistry

from appliance.config import AuthConfig, ServerConfig
from appliance.errors import ApplianceError
from appliance.observability.metrics import ApplianceMetrics
from appliance.resources import MemoryBudget
from appliance.security import Admission, AdmissionSlot
from appliance.security.tickets import TicketSigner, new_nonce
from appliance.session_attach import Attacher, SessionAdmission, ticket_claims
from appliance.session_table import LiveCall, SessionState, SessionTable, TableLimits
from appliance.session_timeline import IN_FLIGHT_SEC, MAX_KEPT_FINALS, SessionTimeline
from appliance.streaming.listeners import IgnoreStream
from appliance.streaming.resume import ResumePoint
from appliance.streaming.types import AudioIn, RecognitionResult
from tests.test_session import defaults, resolve


class FakeClock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def table_with(clock, **limits) -> SessionTable:
    values = dict(max_sessions=100, max_per_ip=0, max_per_api_key=0, unused_ttl_sec=60.0, resume_window_sec=30.0,
                  ticket_ttl_sec=60.0) | limits
    return SessionTable(TableLimits(**values), clock=clock, wall_clock=clock)


@pytest.fixture
def table(clock) -> SessionTable:
    return table_with(clock)


def slot(ip: str = "10.0.0.1", key: str | None = None) -> AdmissionSlot:
    return AdmissionSlot(f"key:{key}" if key else f"ip:{ip}", ip, key, "realtime")


def create(table: SessionTable, session_id: str, **kwargs) -> None:
    table.create(resolve(session_id=session_id), slot(**kwargs), nonce=f"n-{session_id}")


def state(table: SessionTable, session_id: str) -> SessionState | None:
    record = table.get(session_id)
    return record.state if record else None


def streaming_ids(table: SessionTable) -> list[str]:
    return [sid for sid in ("a", "b", "live") if state(table, sid) is SessionState.STREAMING]


def refused_code(fn, *args, **kwargs) -> ApplianceError:
    with pytest.raises(ApplianceError) as info:
        fn(*args, **kwargs)
    return info.value


def test_create_then_attach(table):
    create(table, "a")
    assert len(table) == 1 and streaming_ids(table) == []
    record = table.attach("a", call := LiveCall(None, "ipv4:10.0.0.1:1"))
    assert record.settings.session_id == "a" and record.call is call and call.generation == record.generation == 1
    assert streaming_ids(table) == ["a"] and len(table) == 1 and table.count(SessionState.STREAMING) == 1


def test_duplicate_id_is_err1002_while_created_streaming_or_resumable(table):
    create(table, "a")
    err = refused_code(create, table, "a")
    assert err.code == "ERR1002" and "'a'" in err.message
    table.attach("a", call := LiveCall(None, ""))
    assert refused_code(create, table, "a").code == "ERR1002"
    table.finish("a", call.generation, lost=True)
    assert state(table, "a") is SessionState.RESUMABLE and refused_code(create, table, "a").code == "ERR1002"


def test_attaching_an_unknown_or_streaming_session_is_err1001(table):
    err = refused_code(table.attach, "ghost", LiveCall(None, ""))
    assert err.code == "ERR1001" and "'ghost'" in err.message
    create(table, "a")
    table.attach("a", LiveCall(None, ""))
    assert refused_code(table.attach, "a", LiveCall(None, "")).code == "ERR1001"
    assert streaming_ids(table) == ["a"]


def test_an_ended_session_frees_its_id_and_slot_and_is_kept_to_refuse_its_tickets(table, clock):
    create(table, "a")
    table.attach("a", call := LiveCall(None, ""))
    table.finish("a", call.generation, lost=False)
    assert len(table) == 0 and streaming_ids(table) == [] and state(table, "a") is SessionState.ENDED
    assert table.get("a").settings is None and "has ended" in table.get("a").why_ended
    clock.now += 60.001  # max(resume window, ticket lifetime): every ticket it issued has expired
    assert table.get("a") is None
    create(table, "a")  # reusable
    table.discard_unused("a")  # its creator gave up on it: ended too
    assert len(table) == 0 and state(table, "a") is SessionState.ENDED
    create(table, "a")  # an ended session's id may be used again at once
    table.finish("never-existed", 1, lost=False)  # no error


def test_a_lost_session_waits_for_its_resume_then_ends(table, clock):
    create(table, "a", ip="10.0.0.1")
    table.attach("a", old := LiveCall(None, ""))
    table.finish("a", old.generation, lost=True)
    assert len(table) == 0 and table.by_client() == ({}, {})  # its caps are free while it waits
    record = table.resume("a", slot("10.0.0.9"), new := LiveCall(None, ""))  # the client may have moved
    assert record.generation == 2 == new.generation and table.by_client() == ({"10.0.0.9": 1}, {})
    table.finish("a", old.generation, lost=False)  # the taken-over call changes nothing
    assert state(table, "a") is SessionState.STREAMING
    table.finish("a", new.generation, lost=True)
    clock.now += 30.001
    assert state(table, "a") is SessionState.ENDED and "resume_window_sec" in table.get("a").why_ended
    assert refused_code(table.resume, "a", slot(), LiveCall(None, "")).code == "ERR1002"


def test_unused_sessions_are_forgotten_after_the_ttl(table, clock):
    create(table, "old")
    clock.now += 30
    create(table, "young")
    clock.now += 30  # "old" is exactly 60 s old: not yet expired
    assert len(table) == 2
    clock.now += 0.001
    assert len(table) == 1 and table.get("old") is None  # forgotten, not ended: it may stream elsewhere
    err = refused_code(table.attach, "old", LiveCall(None, ""))
    assert err.code == "ERR1001" and "expired" in err.message
    assert table.attach("young", LiveCall(None, "")).session_id == "young"
    create(table, "old")  # an expired id can be created again


def test_streaming_sessions_never_expire(table, clock):
    create(table, "live")
    table.attach("live", LiveCall(None, ""))
    clock.now += 10_000
    assert len(table) == 1 and streaming_ids(table) == ["live"]


def test_caps_global_per_ip_and_per_key_count_live_records(clock):
    table = table_with(clock, max_sessions=5, max_per_ip=2, max_per_api_key=1)
    create(table, "a", ip="10.0.0.1")
    create(table, "b", ip="10.0.0.1")
    err = refused_code(create, table, "c", ip="10.0.0.1")
    assert err.code == "ERR1007" and "max_sessions_per_ip=2" in err.message and err.retry_after_sec > 0
    create(table, "k1", ip="10.0.0.3", key="k")
    assert "max_sessions_per_api_key=1" in refused_code(create, table, "k2", ip="10.0.0.4", key="k").message
    table.discard_unused("k1")
    create(table, "k2", ip="10.0.0.4", key="k")
    create(table, "d", ip="10.0.0.2")
    create(table, "e", ip="10.0.0.5")
    assert "server.max_sessions=5" in refused_code(create, table, "f", ip="10.0.0.6").message
    table.discard_unused("a")
    table.discard_unused("e")
    assert table.by_client() == ({"10.0.0.1": 1, "10.0.0.4": 1, "10.0.0.2": 1}, {"k": 1})
    adopted = table.adopt(resolve(session_id="x"), slot("10.0.0.1"), "n-x", LiveCall(None, ""))
    assert adopted.state is SessionState.STREAMING  # adopted sessions count against the same caps
    assert "max_sessions_per_ip=2" in refused_code(
        table.adopt, resolve(session_id="y"), slot("10.0.0.1"), "n-y", LiveCall(None, "")).message


# --- a session's timeline: what a resume may go back over, and what it may not repeat ----------

def result(index: int, *, final: bool = True, text: str = "hello", token: str = "") -> RecognitionResult:
    return RecognitionResult(session_id="a", utterance_index=index, is_final=final, text=text, committed_text="",
                             unstable_text="", start_sec=float(index), end_sec=index + 0.5, language="en",
                             language_probability=1.0, decode_latency_sec=0.1, model_id="tiny.en",
                             resume_token=token)


class Heard(IgnoreStream):
    def __init__(self) -> None:
        self.results: list[RecognitionResult] = []

    def result_sent(self, result: RecognitionResult) -> None:
        self.results.append(result)


def test_a_token_counts_as_delivered_once_audio_kept_coming_for_the_in_flight_margin(clock):
    timeline = SessionTimeline(clock)
    timeline.token_issued(ResumePoint(0.0, 0))  # the checkpoint on attach
    timeline.chunk_received()
    clock.now += 3.0
    timeline.result_sent(result(0))
    timeline.token_issued(ResumePoint(3.0, 1))  # final 0's token
    clock.now += IN_FLIGHT_SEC - 0.1
    timeline.chunk_received()
    assert timeline.delivered() == ResumePoint(0.0, 0)  # final 0 may still be in flight
    timeline.check_resume("a", ResumePoint(0.0, 0))
    clock.now += 0.2
    timeline.chunk_received()
    assert timeline.delivered() == ResumePoint(3.0, 1)
    err = refused_code(timeline.check_resume, "a", ResumePoint(0.0, 0))
    assert err.code == "ERR1005" and "latest resume_token" in err.message
    timeline.check_resume("a", ResumePoint(3.0, 1))  # the latest token resumes


def test_a_resumed_call_sends_a_final_already_sent_only_as_its_first_copy(clock):
    timeline = SessionTimeline(clock)
    timeline.result_sent(first := result(0, text="the first decode", token="t1"))
    guard = timeline.replay_guard()
    again = guard.outgoing(result(0, text="a second decode", token="t2"))
    assert again == dataclasses.replace(first, resume_token="t2")  # the same words, a fresh token
    assert guard.outgoing(result(0, final=False)) is None  # no partial of an utterance already finalized
    checkpoint = result(0, final=False, text="", token="t3")
    assert guard.outgoing(checkpoint) is checkpoint
    assert guard.outgoing(later := result(1)) is later
    heard = Heard()
    listener = guard.listener(heard)
    for r in (result(0, text="a second decode"), result(0, final=False), result(1)):
        listener.result_sent(r)
    assert [r.utterance_index for r in heard.results] == [1]  # the transcript log hears index 0 once
    assert SessionTimeline(clock).replay_guard().listener(heard) is heard  # nothing finalized: no filter


def test_a_final_no_longer_kept_is_not_sent_again_at_all(clock):
    timeline = SessionTimeline(clock)
    for index in range(MAX_KEPT_FINALS + 1):
        timeline.result_sent(result(index))
    guard = timeline.replay_guard()
    assert guard.outgoing(result(0)) is None and guard.outgoing(result(1)) is not None


def test_tokens_a_lost_call_sent_stay_unproven_whatever_audio_the_next_call_brings(clock):
    timeline = SessionTimeline(clock)
    timeline.chunk_received()
    timeline.result_sent(result(0))
    timeline.token_issued(ResumePoint(3.0, 1))  # final 0's token, then the link went
    timeline.replay_guard()  # a new call attaches
    for _ in range(3):
        clock.now += IN_FLIGHT_SEC
        timeline.chunk_received()
    assert timeline.delivered() == ResumePoint(0.0, 0)
    timeline.check_resume("a", ResumePoint(0.0, 0))  # final 0 may never have reached the client


# --- attaching by ticket: the table decides ------------------------------------------------------

class Attaching:
    """A table, a ticket signer and the attacher over them, on a fake clock (wall and monotonic)."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.table = table_with(clock)
        self.tickets = TicketSigner("secret", clock=clock)
        admission = SessionAdmission(self.table, Admission(ServerConfig(), AuthConfig()), MemoryBudget(None, 0))
        self.attacher = Attacher(self.table, self.tickets, admission, defaults,
                                 ApplianceMetrics(CollectorRegistry()))

    def created(self, session_id: str) -> str:
        settings, nonce = resolve(session_id=session_id), new_nonce()  # as SessionService creates one
        self.table.create(settings, slot(), nonce)
        return self.tickets.issue(session_id, ticket_claims(settings), "ip:10.0.0.1", 60, nonce=nonce)

    def attach(self, session_id: str, token: str) -> LiveCall:
        call = LiveCall(None, "ipv4:10.0.0.1:5000")
        asyncio.run(self.attacher.attach(AudioIn(session_id, b"", 16_000, token), call.peer, call))
        return call

    def refused(self, session_id: str, token: str) -> ApplianceError:
        return refused_code(self.attach, session_id, token)


def test_an_ended_session_refuses_its_tickets_unless_one_came_later_from_another_node(clock):
    node = Attaching(clock)
    ticket = node.created("a")
    call = node.attach("a", ticket)
    claims = node.tickets.verify(ticket, "a")
    resume = node.tickets.issue_resume(claims, 2.0, 1, ttl_sec=30)
    node.table.finish("a", call.generation, lost=False)
    for token in (ticket, resume):
        err = node.refused("a", token)
        assert err.code == "ERR1005" and "has ended" in err.message
    clock.now += 5  # the session lived on elsewhere: that node's later ticket is adopted here
    later = node.tickets.issue_resume(claims, 8.0, 3, ttl_sec=30)
    assert node.attach("a", later).generation == 1 and state(node.table, "a") is SessionState.STREAMING


def test_a_ticket_of_an_earlier_session_with_the_same_id_is_refused(clock):
    node = Attaching(clock)
    first = node.created("kiosk")
    node.table.discard_unused("kiosk")
    node.created("kiosk")  # the id is used again
    err = node.refused("kiosk", first)
    assert err.code == "ERR1005" and "earlier session" in err.message


def test_a_resumable_session_resumes_from_its_tokens_but_not_from_before_what_was_delivered(clock):
    node = Attaching(clock)
    ticket = node.created("a")
    call = node.attach("a", ticket)
    timeline = node.table.get("a").timeline
    timeline.chunk_received()
    timeline.result_sent(result(0))
    timeline.token_issued(ResumePoint(3.0, 1))
    clock.now += IN_FLIGHT_SEC + 1
    timeline.chunk_received()  # audio kept coming: final 0 and its token were delivered
    node.table.finish("a", call.generation, lost=True)
    err = node.refused("a", ticket)  # the creation ticket resumes from 0.0
    assert err.code == "ERR1005" and "already delivered" in err.message
    resume = node.tickets.issue_resume(node.tickets.verify(ticket, "a"), 3.0, 1, ttl_sec=30)
    assert node.attach("a", resume).generation == 2
    assert node.refused("a", ticket).code == "ERR1002"  # streaming: only a resume ticket takes over
