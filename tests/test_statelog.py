"""core.statelog: one line per change of state, DEBUG in between."""

from __future__ import annotations

import logging

import pytest

from gateway.core.statelog import StateLog


def test_logs_each_change_once_and_repeats_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.statelog")
    link = StateLog(log, "CMMS")
    with caplog.at_level(logging.DEBUG, logger="test.statelog"):
        assert link.change("down", logging.WARNING, "unreachable (%s)", "refused") is True
        assert link.change("down", logging.WARNING, "unreachable (%s)", "timeout") is False
        assert link.change("up", logging.INFO, "reachable again") is True
        assert link.change("up", logging.INFO, "reachable again") is False
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "CMMS: unreachable (refused)"),
        (logging.DEBUG, "CMMS: unreachable (timeout)"),
        (logging.INFO, "CMMS: reachable again"),
        (logging.DEBUG, "CMMS: reachable again"),
    ]


def test_quiet_records_without_logging(caplog: pytest.LogCaptureFixture) -> None:
    link = StateLog(logging.getLogger("test.statelog"), "CMMS", initial="unknown")
    with caplog.at_level(logging.DEBUG, logger="test.statelog"):
        assert link.quiet("up") is True
        assert link.change("up", logging.INFO, "reachable") is False
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
