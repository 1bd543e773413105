"""Warnings about rules that load but will not do what they say under the configuration given (printed by
`mw-gateway check`, logged at start). Pure: the caller says what the configuration provides."""

from __future__ import annotations

from gateway.engine.loader import RuleSet


def while_open_advice(ruleset: RuleSet, *, webhooks: bool) -> list[str]:
    """`while_open: suppress` (the default) holds a firing back while the rule's previous task for the same
    equipment is open; the gateway learns that a task is open, and when it is closed, only from the CMMS's
    task webhooks. Without a webhook secret (or a ServiceMobility JWT key) no webhook is accepted: the
    suppression then holds only while the previous firing still waits for delivery, and every later firing
    creates a task although the last one may still be open. Say so, rather than silently do nothing."""
    if webhooks:
        return []
    rules = [r.id for r in ruleset.rules if r.enabled and r.while_open == "suppress"]
    if not rules:
        return []
    shown = ", ".join(rules[:5]) + (f" and {len(rules) - 5} more" if len(rules) > 5 else "")
    return [
        f"warning: {len(rules)} rule{'s' if len(rules) != 1 else ''} use while_open: suppress ({shown}), but "
        "no webhook is accepted (http.webhook_secret is not set): the gateway never learns that a task is "
        "open, so a firing is held back only while the previous one awaits delivery. Configure the CMMS "
        "webhook and http.webhook_secret, or write while_open: create to say that every firing makes a task."
    ]
