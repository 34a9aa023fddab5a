"""Hostile and broken clients against a real appliance (real gRPC server, real model, real HTTP plane).

One test per threat of docs/security.md. Each asserts both halves: the attack is refused with its
stable code, and the victim (a session, a client, the plane) still works afterwards.
"""
