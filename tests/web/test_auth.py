"""Access to the status page, /api/* and /metrics: bearer token or basic auth; /healthz and webhooks open."""

from __future__ import annotations

import base64

import httpx
import pytest

from gateway.config import HttpSection, load_config
from gateway.core.errors import ConfigError
from gateway.web.auth import Credentials, is_protected
from gateway.web.server import build_app
from tests.web.ops_gateway import running_gateway

TOKEN = "status-token-3b7e91d2"


async def test_status_page_and_api_refuse_requests_without_the_token(tmp_path, free_port, monkeypatch):
    monkeypatch.setenv("MW_STATUS_TOKEN", TOKEN)
    extra = "  auth_token: ${MW_STATUS_TOKEN}\n"
    async with (
        running_gateway(tmp_path, free_port(), monkeypatch, http_extra=extra) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        for path in ("/", "/api/status", "/metrics"):
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in refused.text
            wrong = await client.get(path, headers={"Authorization": "Bearer not-the-token"})
            assert wrong.status_code == 401, path
            ok = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, path
        assert (await client.get("/healthz")).status_code == 200  # probes need no credentials
        # Webhooks are not behind the token: they have their own signature check, not our challenge.
        webhook = await client.post("/webhooks/mobility-work", content=b"{}")
        assert "www-authenticate" not in webhook.headers


async def test_basic_auth_for_browsers(tmp_path, free_port, monkeypatch):
    monkeypatch.setenv("MW_STATUS_PASSWORD", "correct horse")
    extra = "  auth_user: maintenance\n  auth_password: ${MW_STATUS_PASSWORD}\n"
    async with (
        running_gateway(tmp_path, free_port(), monkeypatch, http_extra=extra) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        refused = await client.get("/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic realm=")
        assert (await client.get("/", auth=("maintenance", "wrong"))).status_code == 401
        assert (await client.get("/", auth=("someone", "correct horse"))).status_code == 401
        page = await client.get("/", auth=("maintenance", "correct horse"))
        assert page.status_code == 200 and "mw-gateway" in page.text


def test_credentials_accept_only_well_formed_matching_headers():
    creds = Credentials(token=b"t0ken-abc", user=b"u", password=b"p:w")
    basic = "Basic " + base64.b64encode(b"u:p:w").decode()
    assert creds.accepts("Bearer t0ken-abc") and creds.accepts("bearer   t0ken-abc")
    assert creds.accepts(basic)
    for header in (
        None,
        "",
        "Bearer",
        "Bearer t0ken-abd",
        "Token t0ken-abc",
        "Basic !!!",
        "Basic " + base64.b64encode(b"u").decode(),
        "Basic " + base64.b64encode(b"u:p").decode(),
    ):
        assert not creds.accepts(header), header
    assert Credentials().accepts(None)  # nothing configured: open (loopback by default)


def test_protected_paths():
    assert all(is_protected(p) for p in ("/", "/api/status", "/api/reconciliation", "/metrics"))
    assert not any(is_protected(p) for p in ("/healthz", "/webhooks/mobility-work"))
    # Protection is the default (issue 18.15): a path nobody listed is protected.
    assert all(is_protected(p) for p in ("/favicon.ico", "/api2", "/debug", "/healthz/x", "/webhooks/x"))


async def test_every_mounted_route_but_the_allow_list_requires_auth():
    """Walk the real app: a route added later is protected unless added to PUBLIC_PATHS on purpose."""
    from starlette.routing import Route

    from gateway.web.auth import PUBLIC_PATHS
    from tests.web.fakes import fake

    f = fake()
    f.http = HttpSection(auth_token=TOKEN)
    app = build_app(f.deps())
    routes = [r for r in app.routes if isinstance(r, Route)]
    assert {r.path for r in routes} >= {"/", "/api/status", "/metrics", "/api/reconciliation", "/healthz"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        for route in routes:
            for method in sorted(route.methods or {"GET"}):
                if method == "HEAD":
                    continue
                r = await client.request(method, route.path)
                if route.path in PUBLIC_PATHS:
                    assert "www-authenticate" not in r.headers, route.path
                else:
                    assert r.status_code == 401, (method, route.path, r.status_code)


async def test_healthz_without_credentials_shows_only_status_and_component_names():
    from gateway.core.samples import LinkState
    from tests.web.fakes import dispatcher, fake, source

    f = fake(
        dispatcher=dispatcher(link_up=False, link_error="connect to cmms.internal:443: secret-ish detail"),
        sources=(source("press1", LinkState.DOWN), source("oven-line-7", LinkState.UP)),
    )
    f.http = HttpSection(auth_token=TOKEN)
    async with f.client() as client:
        public = await client.get("/healthz")
        full = await client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert public.status_code == full.status_code == 503
    assert public.json() == {"status": "unhealthy", "failing": ["cmms", "sources"]}
    assert "cmms.internal" not in public.text and "press1" not in public.text
    assert "press1" in full.text and "cmms.internal" in full.text
    f.http = HttpSection()  # no auth (loopback): the full reasons, as before
    async with f.client() as client:
        assert "reasons" in (await client.get("/healthz")).json()


@pytest.mark.parametrize(
    ("listen", "extra", "ok"),
    [
        ("127.0.0.1:8470", "", True),
        ("localhost:8470", "", True),
        ("[::1]:8470", "", True),
        ("0.0.0.0:8470", "", False),
        ("192.168.1.20:8470", "", False),
        ("0.0.0.0:8470", "  allow_plain_http: true\n", True),
        (
            "0.0.0.0:8470",
            "  tls_certificate: /etc/mw-gateway/cert.pem\n  tls_key: /etc/mw-gateway/key.pem\n",
            True,
        ),
        ("0.0.0.0:8470", "  tls_certificate: /etc/mw-gateway/cert.pem\n", False),
    ],
)
def test_listening_beyond_loopback_needs_tls_or_an_explicit_opt_in(tmp_path, listen, extra, ok):
    path = tmp_path / "gateway.yaml"
    path.write_text(f"gateway:\n  id: t\ncmms:\n  kind: dry_run\nhttp:\n  listen: '{listen}'\n{extra}")
    if ok:  # the webhook secret and auth needed beyond loopback are tested in tests/test_config.py
        path.write_text(path.read_text() + "  allow_unauthenticated: true\n")
    if ok:
        assert isinstance(load_config(path, env={}).http, HttpSection)
        return
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    text = str(info.value)
    assert f"{path}:6:" in text or f"{path}:7:" in text  # located at the http section
    assert "tls_certificate" in text
