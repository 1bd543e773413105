"""The SQLite schema as an ordered list of migrations. Applied versions are recorded in `schema_version`.

Versions are reserved by area so that parts can grow independently: 1 foundation, 2 webhooks and ledger,
3 outbox extras, 4 operations; later migrations of an area take the area digit then a sequence (11, 12 ...:
foundation; 21 ...: webhooks and ledger; 31 ...: outbox). A version is applied when it is missing from
`schema_version`, in sorted order. Never edit a released migration: add a new one.
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
            delivered_by     TEXT,              -- backend kind that delivered it (dry_run: shadow tasks)
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
    (
        2,
        """
        -- Every webhook received and committed (Mobility Work and ServiceMobility), verbatim.
        -- dedupe_key: Mobility Work's _idempotencyKey, the CloudEvents id, or "sha256:<canonical body hash>"
        -- for a body that carries neither.
        CREATE TABLE webhook_events (
            id          INTEGER PRIMARY KEY,
            source      TEXT NOT NULL,     -- mobility_work | servicemobility
            event       TEXT NOT NULL,     -- _event, or the CloudEvents type
            dedupe_key  TEXT NOT NULL,
            received_at REAL NOT NULL,
            task_id     TEXT,              -- the CMMS task (or work order) the event names, if any
            known       INTEGER NOT NULL,  -- 1 when the ledger understood the event, 0 stored only
            body        TEXT NOT NULL,     -- the raw body as received
            UNIQUE (source, dedupe_key)
        );
        CREATE INDEX webhook_events_task ON webhook_events(task_id);

        -- X-MW-Signature nonces seen, kept until their timestamp leaves the tolerance window.
        CREATE TABLE webhook_nonces (
            nonce      TEXT PRIMARY KEY,
            body_hash  TEXT NOT NULL,      -- sha256 of the raw body that came with it
            expires_at REAL NOT NULL
        );
        CREATE INDEX webhook_nonces_expiry ON webhook_nonces(expires_at);

        -- CMMS tasks as the webhooks describe them. firing_uuid comes from metadata.firing.
        CREATE TABLE tasks (
            task_id      TEXT PRIMARY KEY,
            source       TEXT NOT NULL,
            firing_uuid  TEXT,
            rule_id      TEXT,
            gateway      TEXT,
            equipment    TEXT,             -- JSON: the associatedTo / equipment object of the webhook
            state        TEXT NOT NULL,    -- unknown | scheduled | started | completed | canceled
            scheduled_at REAL, scheduled_by TEXT,
            started_at   REAL, started_by   TEXT,
            completed_at REAL, completed_by TEXT,
            canceled_at  REAL, canceled_by  TEXT,
            duplicate_of TEXT,             -- the first task bound to the same firing
            first_seen   REAL NOT NULL,
            updated_at   REAL NOT NULL
        );
        CREATE INDEX tasks_firing ON tasks(firing_uuid);

        CREATE TABLE task_activities (
            id          INTEGER PRIMARY KEY,
            task_id     TEXT NOT NULL,
            activity_id TEXT NOT NULL,
            description TEXT,
            minutes     REAL,
            at          REAL,
            reporter    TEXT,
            event_id    INTEGER NOT NULL REFERENCES webhook_events(id),
            UNIQUE (task_id, activity_id)
        );

        -- Spare-part movements against tasks: consumed (+quantity) and canceled consumption (-quantity).
        CREATE TABLE consumptions (
            id            INTEGER PRIMARY KEY,
            event_id      INTEGER NOT NULL REFERENCES webhook_events(id),
            source        TEXT NOT NULL,
            kind          TEXT NOT NULL,   -- consumed | canceled
            task_id       TEXT,            -- NULL: consumed outside any task
            article       TEXT NOT NULL,   -- articleCode (Mobility Work) or ProdNum (ServiceMobility)
            spare_part_id TEXT,
            name          TEXT,
            quantity      REAL NOT NULL,   -- signed: canceled rows are negative
            location      TEXT,
            at            REAL
        );
        CREATE INDEX consumptions_task ON consumptions(task_id);

        -- The last known stock of each spare part, from the stock webhooks.
        CREATE TABLE stock_levels (
            article       TEXT PRIMARY KEY,
            spare_part_id TEXT,
            name          TEXT,
            quantity      REAL,
            threshold     REAL,
            last_event    TEXT NOT NULL,
            updated_at    REAL NOT NULL
        );
        """,
    ),
    (
        3,
        """
        -- Outbox extras: make "the request may have reached the CMMS but we never saw the answer" visible.
        -- attempt_started_at is written (and fsynced) before a request leaves and cleared with its result:
        -- a row still carrying it at start-up was in flight when the gateway died.
        ALTER TABLE outbox ADD COLUMN attempt_started_at REAL;
        ALTER TABLE outbox ADD COLUMN first_attempt_at REAL;
        -- maybe_committed: attempts that may have created a task; maybe_committed_at: the last such attempt
        ALTER TABLE outbox ADD COLUMN maybe_committed INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE outbox ADD COLUMN maybe_committed_at REAL;
        ALTER TABLE outbox ADD COLUMN dead_at REAL;
        -- Attempts that may have created a task count against the month's quota too (conservative).
        ALTER TABLE quota_usage ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        11,
        """
        -- The installation id: random, made once with the database, part of every firing uuid, so that a lost
        -- and recreated state database never gives a new firing the uuid of an old one (issue 13, item 12).
        INSERT OR IGNORE INTO meta(key, value) VALUES ('installation_id', lower(hex(randomblob(16))));
        """,
    ),
    (
        31,
        """
        -- Outbox ids are never reused (AUTOINCREMENT): an id names one row forever, even after a rolled-back
        -- insert or a pruned row. claim_token names one attempt: set by the claim, required by every
        -- transition that records the attempt's result, cleared with it. SQLite cannot add AUTOINCREMENT to
        -- a table: the table is rebuilt, rows and ids kept.
        CREATE TABLE outbox_v31 (
            id                 INTEGER PRIMARY KEY AUTOINCREMENT,
            firing_id          INTEGER NOT NULL UNIQUE REFERENCES firings(id),
            priority           INTEGER NOT NULL,
            status             TEXT NOT NULL,
            attempts           INTEGER NOT NULL DEFAULT 0,
            next_attempt_at    REAL NOT NULL,
            created_at         REAL NOT NULL,
            updated_at         REAL NOT NULL,
            delivered_at       REAL,
            delivered_by       TEXT,
            last_status_code   INTEGER,
            last_error         TEXT,
            last_details       TEXT,
            last_request       TEXT,
            remote_id          TEXT,
            attempt_started_at REAL,
            first_attempt_at   REAL,
            maybe_committed    INTEGER NOT NULL DEFAULT 0,
            maybe_committed_at REAL,
            dead_at            REAL,
            claim_token        TEXT
        );
        INSERT INTO outbox_v31(id, firing_id, priority, status, attempts, next_attempt_at, created_at,
            updated_at, delivered_at, delivered_by, last_status_code, last_error, last_details, last_request,
            remote_id, attempt_started_at, first_attempt_at, maybe_committed, maybe_committed_at, dead_at)
        SELECT id, firing_id, priority, status, attempts, next_attempt_at, created_at,
            updated_at, delivered_at, delivered_by, last_status_code, last_error, last_details, last_request,
            remote_id, attempt_started_at, first_attempt_at, maybe_committed, maybe_committed_at, dead_at
        FROM outbox;
        DROP TABLE outbox;
        ALTER TABLE outbox_v31 RENAME TO outbox;
        CREATE INDEX outbox_due ON outbox(status, priority, next_attempt_at, id);
        """,
    ),
    (
        32,
        """
        -- Rule modes (docs/rollout.md). Two more outbox states, never claimed by the dispatcher:
        --   shadow             a `mode: shadow` firing: rendered as the backend would send it, never sent
        --   awaiting_approval  a `mode: approve` firing: waits for `mw-gateway outbox approve|reject ID`
        -- and one terminal state, rejected. decided_at/decided_by: who released or discarded the row, when.
        -- rendered_at: when the dispatcher stored a shadow row's rendering in last_request.
        ALTER TABLE outbox ADD COLUMN decided_at REAL;
        ALTER TABLE outbox ADD COLUMN decided_by TEXT;
        ALTER TABLE outbox ADD COLUMN rendered_at REAL;
        CREATE INDEX outbox_waiting ON outbox(status, created_at)
            WHERE status IN ('shadow', 'awaiting_approval');
        """,
    ),
    (
        33,
        """
        -- Shadow rows still to render (outbox.unrendered_shadows), asked by the dispatcher on every pass, at
        -- least once a second. Shadow rows are never pruned: without this index every pass read and sorted
        -- all of them (50,000 rows: 17 ms a pass). Rendered rows leave the index.
        -- (status, id): the query's `status = 'shadow'` then picks this index, in id order (with (id) alone
        -- the planner kept the status index and a sort).
        CREATE INDEX IF NOT EXISTS outbox_unrendered_shadow ON outbox(status, id)
            WHERE status = 'shadow' AND rendered_at IS NULL;
        """,
    ),
    (
        41,
        """
        -- Retention (runtime/housekeeping.py, 18.11): with foreign keys on, deleting a webhook event looks
        -- up the rows that reference it; without these indexes every deletion scanned both tables (100,000
        -- events: 69 s in one transaction, long enough for the systemd watchdog to kill the service).
        CREATE INDEX IF NOT EXISTS consumptions_event ON consumptions(event_id);
        CREATE INDEX IF NOT EXISTS task_activities_event ON task_activities(event_id);
        CREATE INDEX IF NOT EXISTS webhook_events_received ON webhook_events(received_at);
        CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox(status, delivered_at);
        """,
    ),
]
