"""The sliding windows (gateway/engine/triggers/window.py) against brute-force references over random sample
streams: irregular timestamps, gaps, bad samples, restarts (the state through JSON and back, the gateway's
downtime then being a hole). While the window holds fewer than DENSE_CELLS stretches the answers are exact;
with a small DENSE_CELLS (dense mode: cells merged per slot) they are bounded by the answers over the window
one slot shorter and one slot longer."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine.triggers import window as win
from gateway.engine.triggers.window import Edges, Segments

PROPS = settings(max_examples=120, deadline=None)
W = 300.0
# Mostly whole multiples of the window's fractions (edges of the window landing exactly on a sample), some
# arbitrary gaps.
DT = st.sampled_from([0.0, 1.0, 30.0, 60.0, 75.0, 150.0, 300.0, 450.0]) | st.floats(0, 200)


@dataclass(frozen=True)
class Ev:
    dt: float  # seconds after the previous event
    kind: str  # "good", "bad", "tick", "restart"
    value: float = 0.0


events = st.lists(
    st.one_of(
        st.builds(
            Ev,
            DT,
            st.just("good"),
            st.integers(-5, 5).map(float) | st.floats(-100, 100, allow_nan=False),
        ),
        st.builds(Ev, DT, st.just("bad")),
        st.builds(Ev, DT, st.just("tick")),
        st.builds(Ev, DT, st.just("restart")),
    ),
    max_size=120,
)


class Reference:
    """The history as plain segments, every answer computed by scanning it."""

    def __init__(self) -> None:
        self.segments: list[tuple[float, float, float]] = []  # [a, b) held v
        self.open: tuple[float, float] | None = None
        self.seen = 0.0

    def good(self, t: float, v: float) -> None:
        self.close(t)
        self.open = (t, v)
        self.seen = t

    def bad(self, t: float) -> None:
        self.close(t)
        self.seen = t

    def close(self, t: float) -> None:
        if self.open is not None and t > self.open[0]:
            self.segments.append((self.open[0], t, self.open[1]))
        self.open = None

    def restart(self) -> None:
        self.close(self.seen)

    def pieces(self, now: float, start: float) -> list[tuple[float, float, float]]:
        out = list(self.segments)
        if self.open is not None:
            out.append((self.open[0], max(now, self.open[0]), self.open[1]))
        return [(max(a, start), min(b, now), v) for a, b, v in out]

    def mean(self, now: float, width: float = W) -> tuple[float | None, float]:
        parts = [(a, b, v) for a, b, v in self.pieces(now, now - width) if b > a]
        covered = math.fsum(b - a for a, b, _ in parts)
        if covered <= 1e-9 * W:
            return None, covered
        return math.fsum(v * (b - a) for a, b, v in parts) / covered, covered

    def held(self, now: float, width: float = W) -> list[float]:
        """Values that held at some t in [now - width, now]."""
        start = now - width
        out = [v for a, b, v in self.segments if b > start and a <= now]
        if self.open is not None and self.open[0] <= now:
            out.append(self.open[1])
        return out

    def value_at(self, t: float) -> float | None:
        for a, b, v in self.segments:
            if a <= t < b:
                return v
        if self.open is not None and self.open[0] <= t:
            return self.open[1]
        return None


def _check(now: float, seg: Segments, ref: Reference) -> None:
    mean, covered = seg.aggregate(now)
    ref_mean, ref_covered = ref.mean(now)
    assert covered == pytest.approx(ref_covered, abs=1e-6)
    if ref_mean is None:
        assert mean is None
    else:
        assert mean == pytest.approx(ref_mean, rel=1e-9, abs=1e-7)
    held = ref.held(now)
    assert seg.minimum(now) == (min(held) if held else None)
    assert seg.maximum(now) == (max(held) if held else None)
    assert seg.value_at_edge(now) == ref.value_at(now - W)
    assert seg.current() == (ref.open[1] if ref.open is not None else None)


@PROPS
@given(events)
def test_aggregates_and_change_match_the_brute_force_reference(stream: list[Ev]) -> None:
    seg = Segments(W, track_lo=True, track_hi=True)
    ref = Reference()
    t = 1_767_225_600.0
    for ev in stream:
        t += ev.dt
        if ev.kind == "good":
            seg.good(t, ev.value, t)
            ref.good(t, ev.value)
        elif ev.kind == "bad":
            seg.bad(t)
            ref.bad(t)
        elif ev.kind == "tick":
            ref.seen = t
            seg.clamp(t)
        else:  # a restart: the state through JSON into a fresh window; nothing more is seen at this time
            state = json.loads(json.dumps(seg.export()))
            seg = Segments(W, track_lo=True, track_hi=True)
            seg.restore(state, None)
            ref.restart()
            continue
        _check(t, seg, ref)


@PROPS
@given(events)
def test_in_dense_mode_the_error_stays_within_one_slot(stream: list[Ev]) -> None:
    saved = win.DENSE_CELLS
    win.DENSE_CELLS = 4
    try:
        seg = Segments(W, track_lo=True, track_hi=True)
        slot = seg.slot
        ref = Reference()
        t = 1_767_225_600.0
        for ev in stream:
            t += ev.dt
            if ev.kind == "good":
                seg.good(t, ev.value, t)
                ref.good(t, ev.value)
            elif ev.kind == "bad":
                seg.bad(t)
                ref.bad(t)
            elif ev.kind == "restart":
                state = json.loads(json.dumps(seg.export()))
                seg = Segments(W, track_lo=True, track_hi=True)
                seg.restore(state, None)
                ref.restart()
                continue
            else:
                ref.seen = t
                seg.clamp(t)
            assert len(seg) <= 2 * win.DENSE_CELLS + 2
            narrow, wide = ref.held(t, W - slot), ref.held(t, W + slot)
            lo, hi = seg.minimum(t), seg.maximum(t)
            if lo is not None:
                assert min(wide) <= lo <= min(narrow or [lo])
                assert hi is not None and max(narrow or [hi]) <= hi <= max(wide)
            else:
                assert not narrow
            mean, covered = seg.aggregate(t)
            assert ref.mean(t, W - slot)[1] - 1e-6 <= covered <= ref.mean(t, W + slot)[1] + 1e-6
            if mean is not None and wide:
                assert min(wide) - 1e-6 <= mean <= max(wide) + 1e-6
    finally:
        win.DENSE_CELLS = saved


edge_events = st.lists(
    st.tuples(
        st.sampled_from([0.0, 1.0, 5.0, 20.0, 60.0, 75.0, 150.0, 300.0]) | st.floats(0, 100),
        st.sampled_from(["edge", "edge", "tick", "restart"]),
    ),
    max_size=150,
)


@PROPS
@given(edge_events, st.sampled_from([256, 4]))
def test_edge_counts_match_the_brute_force_reference(stream: list[tuple[float, str]], dense: int) -> None:
    saved = win.DENSE_CELLS
    win.DENSE_CELLS = dense
    try:
        edges = Edges(W)
        times: list[float] = []
        t = 1_767_225_600.0
        for dt, kind in stream:
            t += dt
            if kind == "edge":
                edges.add(t)
                times.append(t)
            elif kind == "restart":
                state = json.loads(json.dumps(edges.export()))
                edges = Edges(W)
                edges.restore(state)
            got = edges.in_window(t)
            exact = sum(1 for e in times if t - W < e <= t)
            if dense == 256:
                assert got == exact
            else:
                assert exact <= got <= sum(1 for e in times if t - W - edges.slot < e <= t)
                assert len(edges) <= 2 * dense + 2
    finally:
        win.DENSE_CELLS = saved
