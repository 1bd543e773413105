"""The SQLite schema as an ordered list of migrations. Applied versions are recorded in `schema_version`.

Versions are reserved by area so that parts can grow independently: 1 foundation, 2 webhooks and ledger,
3 outbox extras, 4 operations. Never edit a released migration: add a new one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

        -- Every firing the engine produced, whatever became of it. key is the deterministic firing key.
        CREATE TABLE firings (
            id            INTEGER PRIMARY KEY,
            key           TEXT NOT NULL UNIQUE,
            uuid          TEXT NOT NULL UNIQUE,
            rule_id       TEXT NOT NULL,
            equipment     TEXT,            -- JSON of the task's equipment (item code string or native id)
            fired_at      REAL NOT NULL,
            priority      TEXT NOT NULL,   -- normal | high
            status        TEXT NOT NULL,   -- queued (has an outbox row) | suppressed (an open task existed)
            suppressed_by TEXT,            -- uuid of the firing whose task was still open
            task_state    TEXT,            -- from webhooks: scheduled | started | completed | canceled
            task_id       TEXT,            -- from webhooks: the CMMS's task id
            body          TEXT NOT NULL    -- the Firing as JSON (task, evidence, metadata)
        );
        CREATE INDEX firings_rule_equipment ON firings(rule_id, equipment, fired_at);

        -- The transactional outbox: one row per firing to deliver.
        CREATE TABLE outbox (
            id               INTEGER PRIMARY KEY,
            firing_id        INTEGER NOT NULL UNIQUE REFERENCES firings(id),
            priority         INTEGER NOT NULL,  -- 0 high, 1 normal: lower leaves first
            status           TEXT NOT NULL,     -- queued | delivered | dead | dropped
            attempts         INTEGER NOT NULL DEFAULT 0,
            next_attempt_at  REAL NOT NULL,
            created_at       REAL NOT NULL,
            updated_at       REAL NOT NULL,
            delivered_at     REAL,
            delivered_by     TEXT,              -- backend kind that delivered it (dry_run rows are shadow tasks)
            last_status_code INTEGER,
            last_error       TEXT,
            last_details     TEXT,              -- the server's error body, verbatim JSON
            last_request     TEXT,              -- what was sent (no secrets), JSON
            remote_id        TEXT
        );
        CREATE INDEX outbox_due ON outbox(status, priority, next_attempt_at, id);

        -- Tasks counted against the CMMS plan's monthly quota, per calendar month in the network's timezone.
        CREATE TABLE quota_usage (
            month TEXT PRIMARY KEY,   -- YYYY-MM
            used  INTEGER NOT NULL
        );

        -- Persistent rule state (counter baselines, running-hour accumulators, cooldowns), JSON per rule.
        CREATE TABLE rule_state (
            rule_id    TEXT PRIMARY KEY,
            state      TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        """,
    ),
]
