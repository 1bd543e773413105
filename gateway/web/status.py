"""The gateway's state as plain data: what /api/status returns and the status page renders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import Gateway


async def collect_status(gw: Gateway) -> dict[str, Any]:
    now = gw.clock.now()
    sources = []
    for name, source in gw.sources.items():
        st = source.stats
        sources.append({
            "name": name, "link": st.link.value, "reads": st.reads, "errors": st.errors,
            "reconnects": st.reconnects, "samples": st.samples, "last_error": st.last_error,
            "last_sample_age_s": None if st.last_sample_ts is None else round(now - st.last_sample_ts, 3),
        })
    signals = [
        {"signal": name, "value": s.value, "quality": s.quality.value, "ts": s.ts, "age_s": round(now - s.ts, 3),
         "reason": s.reason}
        for name, s in sorted(gw.engine.last_values.items())
    ]
    return {
        "gateway": {"id": gw.config.gateway.id, "started_at": gw.started_at, "uptime_s": round(now - gw.started_at, 1),
                    "timezone": gw.timezone, "cmms": gw.backend.kind, "samples_in": gw.samples_in,
                    "firings": gw.firings_out, "last_reload": gw.last_reload},
        "sources": sources,
        "signals": signals,
        "rules": gw.engine.rule_status(now),
        "outbox": {"counts": await gw.store.outbox.counts(), "dispatcher": gw.dispatcher.status.as_dict()},
    }
