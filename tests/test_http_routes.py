"""Every route of the HTTP plane has its auth and its rate limit: no route is left out.

ROUTES classifies each route the app serves (public, observability token, admin token), and
`test_the_route_table_covers_exactly_the_routes_the_app_serves` fails when the app gains a route that
is not in it. The other tests run over the table, against a real waitress server: guarded routes refuse
a missing or wrong token with 401 ERR1004 (admin routes: 403 ERR1005 while the admin plane is
disabled), every route is rate limited per client (requests without a token spend the bucket too, and
another client keeps being served), and a chunked body over the limit is refused like a declared one.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest

from appliance.config import load_config
from appliance.runtime import Runtime
from appliance.security.http_access import HttpAccess, HttpAccessSettings
from appliance.transport.http.app import MAX_BODY_BYTES, create_app
from appliance.transport.http.resources import STATIC_DIR
from tests.adversarial.test_http_plane_abuse import raw_request
from tests.test_http_plane import ADMIN_TOKEN, OBS_TOKEN, assert_error, plane

TOKENS = {"STT_OBSERVABILITY_TOKEN": OBS_TOKEN, "STT_ADMIN_TOKEN": ADMIN_TOKEN}
TOKEN_FOR = {"public": None, "observability": OBS_TOKEN, "admin": ADMIN_TOKEN}


class Route(NamedTuple):
    template: str  # as the Falcon router holds it (the static route: its prefix)
    method: str
    path: str  # a request path that reaches the route
    access: str  # "public", "observability" (STT_OBSERVABILITY_TOKEN) or "admin" (STT_ADMIN_TOKEN)
    body: bytes | None = None  # admin POSTs: a body the handler refuses after auth, so nothing loads


ROUTES = [
    Route("/", "GET", "/", "public"),
    Route("/static/", "GET", "/static/status.js", "public"),
    Route("/openapi.json", "GET", "/openapi.json", "public"),
    # /health is public only in STT_PUBLIC_HEALTH=minimal mode (a bare {status}) or when no observability
    # token is configured; with the token configured and no such mode, it is guarded like the rest.
    Route("/health", "GET", "/health", "observability"),
    Route("/metrics", "GET", "/metrics", "observability"),
    Route("/metrics.json", "GET", "/metrics.json", "observability"),
    Route("/system", "GET", "/system", "observability"),
    Route("/admin/models", "GET", "/admin/models", "admin"),
    Route("/admin/load_model", "POST", "/admin/load_model", "admin", b'{"profile_id": "no-such-profile"}'),
    Route("/admin/unload_model", "POST", "/admin/unload_model", "admin", b'{"model_id": "cpu-nothing"}'),
]
GUARDED = [r for r in ROUTES if r.access != "public"]


def _ids(routes: list[Route]) -> list[str]:
    return [f"{r.method} {r.template}" for r in routes]


def _served_routes() -> set[tuple[str, str]]:
    """(template, method) for every route of an app built by create_app (private Falcon API, 4.x)."""
    config = load_config(env={})
    runtime = Runtime(config)
    try:
        app = create_app(runtime.status, runtime.admin, HttpAccess(HttpAccessSettings.from_config(config.server, {})))
    finally:
        runtime.close()
    served: set[tuple[str, str]] = set()

    def walk(nodes) -> None:  # CompiledRouter nodes: one per path segment, a resource where a route ends
        for node in nodes:
            if node.resource is not None:  # its method_map also holds Falcon's 405 defaults: use on_* instead
                served.update((node.uri_template, name[3:].upper()) for name in dir(node.resource)
                              if name.startswith("on_"))
            walk(node.children)

    walk(app._router._roots)
    served.update((static._prefix, "GET") for static, _, _ in app._static_routes)  # add_static_route
    return served


def _assert_served(route: Route, status: int, body: bytes) -> None:
    """Served: 200, or for guarded routes the handler's own answer (proof the token got past auth)."""
    if route.template == "/health":  # no model is loaded here: 503 "degraded", in full
        assert status == 503 and b"reasons" in body, (status, body)
    elif route.method == "POST":  # the handler refused the body itself: proof it ran
        assert status in (400, 404) and json.loads(body)["code"] in ("ERR1010", "ERR1011"), (status, body)
    else:
        assert status == 200, (status, body)


# --- the table is complete ------------------------------------------------------------------------


def test_the_route_table_covers_exactly_the_routes_the_app_serves():
    served = _served_routes()
    table = {(r.template, r.method) for r in ROUTES}
    assert served - table == set(), (f"routes with no access class: {sorted(served - table)}; add each to ROUTES "
                                     "in tests/test_http_routes.py (public, observability or admin)")
    assert table - served == set(), f"ROUTES names routes the app no longer serves: {sorted(table - served)}"
    assert (STATIC_DIR / "status.js").is_file(), "the static row must name a real file"


# --- auth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=_ids(ROUTES))
def test_each_route_refuses_a_missing_or_wrong_token_and_serves_the_right_one(route):
    with plane(TOKENS) as p:
        if route.access == "public":
            status, _, body = p.request(route.path, method=route.method, body=route.body)
            _assert_served(route, status, body)
            return
        wrong_tokens = [None, "wrong"] + ([OBS_TOKEN] if route.access == "admin" else [])
        for token in wrong_tokens:
            status, headers, body = p.request(route.path, method=route.method, token=token, body=route.body)
            assert_error(status, body, 401, "ERR1004")
            assert headers.get("WWW-Authenticate") == "Bearer"
        status, _, body = p.request(route.path, method=route.method, token=TOKEN_FOR[route.access],
                                    body=route.body)
        _assert_served(route, status, body)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.access == "admin"],
                         ids=_ids([r for r in ROUTES if r.access == "admin"]))
def test_each_admin_route_is_refused_to_everyone_while_no_admin_token_is_configured(route):
    with plane({"STT_OBSERVABILITY_TOKEN": OBS_TOKEN}) as p:
        for token in (None, "anything", OBS_TOKEN):
            status, _, body = p.request(route.path, method=route.method, token=token, body=route.body)
            assert_error(status, body, 403, "ERR1005")


# --- rate limit -----------------------------------------------------------------------------------


def _assert_limited(p, route: Route, token: str | None) -> None:
    status, headers, body = p.request(route.path, method=route.method, token=token, body=route.body)
    assert status == 429, f"{route.method} {route.path} is not rate limited: {status} {body[:200]!r}"
    assert_error(status, body, 429, "ERR1006")
    assert int(headers["Retry-After"]) >= 1


@pytest.mark.parametrize("route", ROUTES, ids=_ids(ROUTES))
def test_each_route_is_rate_limited_per_client_and_another_client_is_still_served(route):
    token = TOKEN_FOR[route.access]
    with plane(TOKENS, http_rate_limit_rps=0.5, http_rate_limit_burst=2,
               http_trusted_proxies=["127.0.0.1/32"]) as p:
        for _ in range(2):
            status, _, body = p.request(route.path, method=route.method, token=token, body=route.body)
            _assert_served(route, status, body)
        _assert_limited(p, route, token)
        status, _, body = p.request(route.path, method=route.method, token=token, body=route.body,
                                    headers={"X-Forwarded-For": "198.51.100.9"})
        _assert_served(route, status, body)  # another client has its own bucket


@pytest.mark.parametrize("route", GUARDED, ids=_ids(GUARDED))
def test_requests_without_a_token_spend_the_bucket_so_an_unauthenticated_flood_is_limited(route):
    with plane(TOKENS, http_rate_limit_rps=0.5, http_rate_limit_burst=2,
               http_trusted_proxies=["127.0.0.1/32"]) as p:
        for _ in range(2):
            status, _, body = p.request(route.path, method=route.method, body=route.body)
            assert_error(status, body, 401, "ERR1004")
        _assert_limited(p, route, None)
        _assert_limited(p, route, TOKEN_FOR[route.access])  # the bucket is the client's, token or not
        status, _, body = p.request(route.path, method=route.method, token=TOKEN_FOR[route.access],
                                    body=route.body, headers={"X-Forwarded-For": "198.51.100.9"})
        _assert_served(route, status, body)  # the victim keeps working


def test_public_minimal_health_is_rate_limited_too():
    with plane({**TOKENS, "STT_PUBLIC_HEALTH": "minimal"}, http_rate_limit_rps=0.5, http_rate_limit_burst=2) as p:
        for _ in range(2):
            status, _, body = p.request("/health")
            assert status == 503 and json.loads(body) == {"status": "degraded"}
        _assert_limited(p, Route("/health", "GET", "/health", "public"), None)


# --- bodies ---------------------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_refused_and_the_plane_keeps_serving():
    payload = b"x" * (MAX_BODY_BYTES + 1024)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:40_000], payload[40_000:]))
    with plane(TOKENS) as p:
        port = int(p.base.rsplit(":", 1)[1])
        status, body = raw_request(port, "POST /admin/load_model HTTP/1.1\r\nHost: x\r\n"
                                         f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
                                         "Transfer-Encoding: chunked\r\nConnection: close", chunked + b"0\r\n\r\n")
        assert_error(status, body, 413, "ERR1010")
        status, _, _ = p.request("/metrics.json", token=OBS_TOKEN)
        assert status == 200, "the plane keeps serving"
