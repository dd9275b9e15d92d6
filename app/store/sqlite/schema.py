"""The SQLite schema: the tables every repository reads and writes, and their upgrades.

Kept apart from the code that uses it so one place says what a store file contains; the
outbox (outbox.py) builds its triggers from this schema's live columns.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS benches (
    bench_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    labels TEXT NOT NULL,
    heartbeat_interval_s INTEGER NOT NULL,
    admin_state TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_heartbeat_at TEXT,
    agent_version TEXT,
    heartbeat_details TEXT,
    recorded_liveness TEXT NOT NULL DEFAULT 'offline',
    concurrency INTEGER NOT NULL DEFAULT 1,
    liveness_changes INTEGER NOT NULL DEFAULT 0,
    health_status TEXT,
    health_message TEXT,
    health_at TEXT,
    health_failures INTEGER NOT NULL DEFAULT 0,
    health_passes INTEGER NOT NULL DEFAULT 0,
    infra_failures INTEGER NOT NULL DEFAULT 0,
    health_check_due TEXT,
    quarantine TEXT,
    maintenance TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS bench_capabilities (
    capability TEXT NOT NULL,
    bench_id TEXT NOT NULL REFERENCES benches(bench_id),
    PRIMARY KEY (capability, bench_id)
);
CREATE INDEX IF NOT EXISTS bench_capabilities_by_bench ON bench_capabilities(bench_id);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id TEXT PRIMARY KEY,
    bench_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    start TEXT NOT NULL,
    "end" TEXT NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    announced INTEGER NOT NULL DEFAULT 0,
    advance INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 50,
    not_before TEXT,
    capabilities TEXT NOT NULL DEFAULT '[]',
    team TEXT,
    checked_in_at TEXT,
    idle_warned_at TEXT,
    allow_swap INTEGER NOT NULL DEFAULT 0,
    at_risk_reason TEXT,
    at_risk_since TEXT,
    kind TEXT NOT NULL DEFAULT 'booking'
);
CREATE INDEX IF NOT EXISTS reservations_by_bench ON reservations(bench_id, start, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_by_user ON reservations(user_id, start, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_by_state_end ON reservations(state, "end");
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    reservation_id TEXT NOT NULL,
    bench_id TEXT NOT NULL,
    created_by TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    pipeline_url TEXT,
    metadata TEXT NOT NULL,
    task_ids TEXT NOT NULL,
    time_budget_s INTEGER NOT NULL,
    status TEXT NOT NULL,
    artifacts_uri TEXT,
    summary TEXT,
    started_at TEXT,
    finished_at TEXT,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_reservation
    ON executions(reservation_id, created_at, execution_id);
CREATE INDEX IF NOT EXISTS executions_by_bench ON executions(bench_id, created_at, execution_id);
CREATE INDEX IF NOT EXISTS executions_by_reservation_status
    ON executions(reservation_id, status, created_at, execution_id);
CREATE INDEX IF NOT EXISTS executions_open ON executions(reservation_id, created_at, execution_id)
    WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS executions_by_status ON executions(status, created_at, execution_id);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    bench_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    timeout_s INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    lease_holder TEXT,
    lease_expires_at TEXT,
    attempt_started_at TEXT,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_lease ON tasks(status, lease_expires_at);
CREATE TABLE IF NOT EXISTS history (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    action TEXT NOT NULL,
    changes TEXT NOT NULL,
    expires_at TEXT,
    PRIMARY KEY (entity_type, entity_id, version)
);
-- The event log. AUTOINCREMENT: a seq is never reused, so "after seq N" never skips one,
-- and writers are serialised by SQLite's write lock, so seqs commit in order.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_at ON events(at);
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    bench_id TEXT,
    user_id TEXT,
    format TEXT NOT NULL,
    secret TEXT NOT NULL,
    state TEXT NOT NULL,
    disabled_reason TEXT,
    failing_since TEXT,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_by_owner ON webhooks(owner, webhook_id);
CREATE TABLE IF NOT EXISTS deliveries (
    webhook_id TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at TEXT,
    attempts TEXT NOT NULL,
    sender TEXT,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (webhook_id, delivery_id)
);
CREATE TABLE IF NOT EXISTS quotas (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    max_booked_hours_7d REAL,
    max_concurrent INTEGER,
    max_window_hours REAL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(due_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS deliveries_open_by_entity
    ON deliveries(webhook_id, entity_key, delivery_id) WHERE status IN ('pending', 'sending');
"""

# Indexes on added columns: created once the columns exist (old files gain them first).
_LATER_INDEXES = """
CREATE INDEX IF NOT EXISTS reservations_unannounced ON reservations(announced, start, "end")
    WHERE state = 'booked' AND announced < 2;
CREATE INDEX IF NOT EXISTS reservations_advancing ON reservations(start)
    WHERE state = 'booked' AND advance = 1;
CREATE INDEX IF NOT EXISTS reservations_booked_by_start ON reservations(start)
    WHERE state = 'booked';
CREATE INDEX IF NOT EXISTS reservations_by_team ON reservations(team, start) WHERE team IS NOT NULL;
CREATE INDEX IF NOT EXISTS reservations_at_risk ON reservations(start)
    WHERE state = 'booked' AND at_risk_reason IS NOT NULL;
"""


# Columns added after a table first shipped: a store file made by an older version gains
# them on open instead of failing (CREATE TABLE IF NOT EXISTS leaves old tables as they are).
_ADDED_COLUMNS = (
    ("benches", "recorded_liveness", "TEXT NOT NULL DEFAULT 'offline'"),
    ("benches", "concurrency", "INTEGER NOT NULL DEFAULT 1"),
    ("benches", "liveness_changes", "INTEGER NOT NULL DEFAULT 0"),
    ("benches", "health_status", "TEXT"),
    ("benches", "health_message", "TEXT"),
    ("benches", "health_at", "TEXT"),
    ("benches", "health_failures", "INTEGER NOT NULL DEFAULT 0"),
    ("benches", "health_passes", "INTEGER NOT NULL DEFAULT 0"),
    ("benches", "infra_failures", "INTEGER NOT NULL DEFAULT 0"),
    ("benches", "health_check_due", "TEXT"),
    ("benches", "quarantine", "TEXT"),
    ("benches", "maintenance", "TEXT NOT NULL DEFAULT '[]'"),
    ("history", "expires_at", "TEXT"),
    ("reservations", "announced", "INTEGER NOT NULL DEFAULT 0"),
    ("reservations", "advance", "INTEGER NOT NULL DEFAULT 0"),
    ("reservations", "priority", "INTEGER NOT NULL DEFAULT 50"),
    ("reservations", "not_before", "TEXT"),
    ("reservations", "capabilities", "TEXT NOT NULL DEFAULT '[]'"),
    ("reservations", "team", "TEXT"),
    ("reservations", "checked_in_at", "TEXT"),
    ("reservations", "idle_warned_at", "TEXT"),
    ("reservations", "allow_swap", "INTEGER NOT NULL DEFAULT 0"),
    ("reservations", "at_risk_reason", "TEXT"),
    ("reservations", "at_risk_since", "TEXT"),
    ("reservations", "kind", "TEXT NOT NULL DEFAULT 'booking'"),
)


async def add_missing_columns(connection: aiosqlite.Connection) -> None:
    for table, column, declaration in _ADDED_COLUMNS:
        rows = await connection.execute_fetchall(f"PRAGMA table_info({table})")
        if column not in {row["name"] for row in rows}:
            try:
                await connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            except sqlite3.OperationalError as error:
                # Another process opening the same old file added it first.
                if "duplicate column name" not in str(error):
                    raise
    await connection.executescript(_LATER_INDEXES)
