"""502/504 come from a proxy in front of the CMMS: the request may have reached it and been committed."""

from __future__ import annotations

import httpx
import pytest

from gateway.cmms.http import delivery_from_response
from gateway.core.delivery import Outcome


@pytest.mark.parametrize(("status", "maybe"), [(502, True), (504, True), (500, False), (503, False)])
def test_a_proxy_answer_is_a_retry_that_may_have_committed(status: int, maybe: bool) -> None:
    request = httpx.Request("POST", "https://cmms.test/partners/v1/tasks")
    response = httpx.Response(status, request=request, text="upstream")
    delivery = delivery_from_response(response, request=None, elapsed_s=0.1, now=0.0)
    assert delivery.outcome is Outcome.RETRY
    assert delivery.maybe_committed is maybe
