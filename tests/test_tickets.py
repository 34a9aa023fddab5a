"""Session tickets: issued by CreateSession, verified when a stream attaches."""

from __future__ import annotations

import pytest

from appliance.errors import ApplianceError
from appliance.security.tickets import TicketSigner, identity_hash, new_nonce

SETTINGS = {"model_id": "cpu-tiny.en", "partials": True, "decode": {"decode.beam_size": "2"}}


def refused(signer: TicketSigner, ticket: str, session_id: str = "kiosk-7") -> str:
    with pytest.raises(ApplianceError) as info:
        signer.verify(ticket, session_id)
    assert info.value.code == "ERR1005" and info.value.grpc_status == "PERMISSION_DENIED"
    return info.value.message


def test_a_ticket_carries_the_session_its_settings_and_a_hashed_identity():
    signer = TicketSigner("secret", clock=lambda: 1000.0)
    ticket = signer.issue("kiosk-7", SETTINGS, "key:sk-123", ttl_sec=60)
    claims = signer.verify(ticket, "kiosk-7")
    assert claims.session_id == "kiosk-7" and claims.settings == SETTINGS and claims.expires_at == 1060.0
    assert claims.identity_hash == identity_hash("key:sk-123") and "sk-123" not in ticket
    assert ticket.isascii() and len(ticket) < 1024


def test_another_sessions_ticket_a_forgery_and_garbage_are_refused():
    signer = TicketSigner("secret")
    ticket = signer.issue("kiosk-7", SETTINGS, "ip:10.0.0.7", ttl_sec=60)
    assert "another session" in refused(signer, ticket, session_id="kiosk-8")
    version, body, signature = ticket.split(".")
    # A changed character mid-signature: the last base64 character carries padding bits, so changing
    # it can decode to the same bytes (a flaky "forgery").
    forged = signature[:5] + ("B" if signature[5] == "A" else "A") + signature[6:]
    assert "bad signature" in refused(signer, f"{version}.{body}.{forged}")
    other_node = TicketSigner("another-secret").issue("kiosk-7", SETTINGS, "ip:10.0.0.7", ttl_sec=60)
    assert "bad signature" in refused(signer, other_node)
    for garbage in ("", "v1", "v2.a.b", "caf\u00e9.x.y", "v1." + "a" * 10_000 + ".b", "\udcff"):
        refused(signer, garbage)


def test_an_expired_ticket_is_refused():
    now = [1000.0]
    signer = TicketSigner("secret", clock=lambda: now[0])
    ticket = signer.issue("kiosk-7", SETTINGS, "ip:10.0.0.7", ttl_sec=60)
    now[0] += 61
    assert "expired" in refused(signer, ticket)


def test_nodes_sharing_the_secret_accept_each_others_tickets_and_unset_secrets_differ_per_boot():
    ticket = TicketSigner("fleet").issue("kiosk-7", SETTINGS, "ip:10.0.0.7", ttl_sec=60)
    assert TicketSigner("fleet").verify(ticket, "kiosk-7").settings == SETTINGS
    refused(TicketSigner(), TicketSigner().issue("kiosk-7", SETTINGS, "ip:10.0.0.7", ttl_sec=60))


def test_a_resume_ticket_carries_where_to_resume_and_lasts_the_resume_window():
    now = [1000.0]
    signer = TicketSigner("secret", clock=lambda: now[0])
    created = signer.verify(signer.issue("kiosk-7", SETTINGS, "ip:10.0.0.7", ttl_sec=60), "kiosk-7")
    assert not created.is_resume
    ticket = signer.issue_resume(created, resume_from_sec=12.288, next_utterance_index=4, ttl_sec=30)
    resumed = TicketSigner("secret", clock=lambda: now[0]).verify(ticket, "kiosk-7")  # any node with the secret
    assert resumed.is_resume and (resumed.resume_from_sec, resumed.next_utterance_index) == (12.288, 4)
    assert (resumed.settings, resumed.identity_hash) == (created.settings, created.identity_hash)
    assert "another session" in refused(signer, ticket, session_id="kiosk-8")
    now[0] += 31
    message = refused(signer, ticket)
    assert "resume_window_sec" in message


def test_a_sessions_tickets_carry_its_incarnation_and_when_they_were_issued():
    now = [1000.0]
    signer = TicketSigner("secret", clock=lambda: now[0])
    created = signer.verify(signer.issue("kiosk-7", SETTINGS, "ip:10.0.0.7", ttl_sec=60, nonce="inc-1"), "kiosk-7")
    assert (created.nonce, created.issued_at) == ("inc-1", 1000.0)
    now[0] += 5
    resumed = signer.verify(signer.issue_resume(created, 1.5, 1, ttl_sec=30), "kiosk-7")
    assert (resumed.nonce, resumed.issued_at) == ("inc-1", 1005.0)  # the same incarnation, issued later
    assert new_nonce() != new_nonce() and len(new_nonce()) >= 12
    legacy = signer.verify(signer.issue("kiosk-7", SETTINGS, "ip:10.0.0.7", ttl_sec=60), "kiosk-7")
    assert legacy.nonce == ""  # a ticket without one matches any incarnation
