"""The status page's approve/reject buttons (docs/rollout.md): shown only with http.auth_*, a POST needs the
credentials, the per-process form token, the SameSite=Strict cookie and a same-origin request; a running
gateway with the Modbus press and the Mobility Work simulator sends an approved task once, a rejected one
never."""

from __future__ import annotations

import base64
import re

import httpx

from tests.e2e.helpers import wait_for
from tests.web.ops_gateway import Running, running_gateway

USER, PASSWORD = "planner", "pw-7c1e55a0"
AUTH = "  auth_user: planner\n  auth_password: pw-7c1e55a0\n"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}

RULES = """
- id: lube-a
  when: {counter: press1.strokes, every: 1000, unit: strokes}
  mode: approve
  task: {equipment: EQ-PRESS-01, description: "Lube A at {{ value | int }} strokes", assignees: [3]}
- id: lube-b
  when: {counter: press1.strokes, every: 1000, unit: strokes}
  mode: approve
  task: {equipment: EQ-PRESS-01, description: "Lube B at {{ value | int }} strokes", assignees: [3]}
"""


async def waiting_rows(run: Running) -> dict[str, int]:
    """rule id -> outbox id of the rows awaiting approval, once both rules fired."""
    await run.set_strokes(10)
    await run.wait_for_sample("press1.strokes", 10)
    await run.set_strokes(1010)

    async def both() -> dict[str, int] | None:
        rows = await run.gw.store.outbox.list(statuses=["awaiting_approval"])
        return {r.rule_id: r.id for r in rows} if len(rows) == 2 else None

    return await wait_for(both, what="two firings awaiting approval")


def form_token(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no approve form on the page"
    return match.group(1)


async def test_buttons_need_credentials_token_cookie_and_same_origin(
    tmp_path, free_port, monkeypatch
) -> None:
    async with running_gateway(tmp_path, free_port(), monkeypatch, http_extra=AUTH, rules=RULES) as run:
        ids = await waiting_rows(run)
        a, b = ids["lube-a"], ids["lube-b"]
        async with httpx.AsyncClient(base_url=run.url, headers=BASIC) as client:
            page = await client.get("/")
            assert page.status_code == 200
            token = form_token(page.text)
            assert f'action="/api/outbox/{a}/approve"' in page.text
            cookie = page.headers["set-cookie"]
            assert "mw_gateway_csrf=" in cookie and "SameSite=strict" in cookie and "HttpOnly" in cookie
            url = f"/api/outbox/{a}/approve"
            origin = {"Origin": run.url}

            assert (await client.post(url, data={}, headers=origin)).status_code == 403  # no field
            wrong = await client.post(url, data={"csrf": token[:-1] + "x"}, headers=origin)
            assert wrong.status_code == 403 and "form token" in wrong.text
            evil = await client.post(url, data={"csrf": token}, headers={"Origin": "http://evil.example"})
            assert evil.status_code == 403 and "cross-origin" in evil.text
            site = await client.post(url, data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"})
            assert site.status_code == 403
            async with httpx.AsyncClient(base_url=run.url, headers=BASIC) as no_cookie:
                refused = await no_cookie.post(url, data={"csrf": token}, headers=origin)
                assert refused.status_code == 403  # the field alone is not enough: the cookie must match
            async with httpx.AsyncClient(base_url=run.url) as anonymous:
                assert (await anonymous.post(url, data={"csrf": token})).status_code == 401
            assert run.sim.state.tasks == []  # none of the refused requests released anything

            done = await client.post(url, data={"csrf": token}, headers=origin)
            assert done.status_code == 303 and done.headers["location"] == "/#approvals"
            await wait_for(lambda: len(run.sim.state.tasks) >= 1, what="the approved task")
            again = await client.post(url, data={"csrf": token}, headers=origin)
            assert again.status_code == 409 and "not awaiting_approval" in again.text

            rejected = await client.post(f"/api/outbox/{b}/reject", data={"csrf": token}, headers=origin)
            assert rejected.status_code == 303
            row_a = await run.gw.store.outbox.get(a)
            row_b = await run.gw.store.outbox.get(b)
            assert row_a is not None and row_a.decided_by == f"web:{USER}"
            assert row_b is not None and row_b.status == "rejected" and row_b.decided_by == f"web:{USER}"
    (task,) = run.sim.state.tasks  # the approved one, once; the rejected one never
    assert task.body["description"].startswith("Lube A at 10")


async def test_no_buttons_and_no_decisions_without_authentication(tmp_path, free_port, monkeypatch) -> None:
    async with running_gateway(tmp_path, free_port(), monkeypatch, rules=RULES) as run:
        ids = await waiting_rows(run)
        async with httpx.AsyncClient(base_url=run.url) as client:
            page = (await client.get("/")).text
            assert "Awaiting approval" in page and 'name="csrf"' not in page
            assert f"mw-gateway outbox approve {ids['lube-a']}" in page
            refused = await client.post(f"/api/outbox/{ids['lube-a']}/approve", data={"csrf": "x"})
            assert refused.status_code == 403 and "http.auth_token" in refused.text
        row = await run.gw.store.outbox.get(ids["lube-a"])
        assert row is not None and row.status == "awaiting_approval"


async def test_approve_and_reject_by_clicking_in_headless_chromium(tmp_path, free_port, monkeypatch) -> None:
    from tests.web.cdp import chromium_page

    async with running_gateway(tmp_path, free_port(), monkeypatch, http_extra=AUTH, rules=RULES) as run:
        ids = await waiting_rows(run)
        async with chromium_page(tmp_path, headers=BASIC) as page:
            await page.navigate(run.url + "/")
            assert await page.evaluate("document.querySelectorAll('form.decide').length") == 4
            page.events.clear()
            await page.evaluate(
                f"document.querySelector('form[data-approve=\"{ids['lube-a']}\"] button').click()"
            )
            await page.wait_event("Page.loadEventFired")  # the 303 back to the status page
            assert await page.evaluate("location.pathname + location.hash") == "/#approvals"
            await wait_for(lambda: len(run.sim.state.tasks) >= 1, what="the task approved in the browser")
            page.events.clear()
            await page.evaluate(
                f"document.querySelector('form[data-reject=\"{ids['lube-b']}\"] button').click()"
            )
            await page.wait_event("Page.loadEventFired")
            text = await page.evaluate("document.getElementById('approvals').nextElementSibling.textContent")
            assert "No task waits for approval" in text
        row_a = await run.gw.store.outbox.get(ids["lube-a"])
        row_b = await run.gw.store.outbox.get(ids["lube-b"])
        assert row_a is not None and row_a.decided_by == f"web:{USER}" and row_a.status != "rejected"
        assert row_b is not None and row_b.status == "rejected"
    (task,) = run.sim.state.tasks
    assert task.body["description"].startswith("Lube A at 10")
