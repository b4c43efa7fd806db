"""SQLite schema, versioned with ``PRAGMA user_version`` and upgraded by ordered migrations.

``MIGRATIONS[i]`` turns a version-``i`` file into a version-``i + 1`` one. Never edit a
migration that has shipped: files in the field were made by it. Append a new one instead.
"""

from __future__ import annotations

import sqlite3

# Small tables with composite keys are WITHOUT ROWID (one b-tree instead of table + index);
# tables holding payloads keep rowids so that large blobs stay out of the key b-tree.
_V1 = (
    """CREATE TABLE sessions (
        client_id TEXT PRIMARY KEY,
        expiry_interval INTEGER NOT NULL,
        protocol_version INTEGER NOT NULL,
        username TEXT,
        disconnected_at REAL,
        will_topic TEXT,
        will_payload BLOB,
        will_qos INTEGER,
        will_retain INTEGER,
        will_props TEXT
    )""",
    """CREATE TABLE subscriptions (
        client_id TEXT NOT NULL,
        topic_filter TEXT NOT NULL,
        qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
        no_local INTEGER NOT NULL,
        retain_as_published INTEGER NOT NULL,
        retain_handling INTEGER NOT NULL CHECK (retain_handling BETWEEN 0 AND 2),
        subscription_id INTEGER,
        PRIMARY KEY (client_id, topic_filter)
    ) WITHOUT ROWID""",
    """CREATE TABLE messages (
        msg_id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
        retain INTEGER NOT NULL,
        props TEXT,
        expires_at REAL,
        origin TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE queue (
        client_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        msg_id INTEGER NOT NULL,
        qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
        state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 2),
        packet_id INTEGER,
        retain INTEGER NOT NULL,
        PRIMARY KEY (client_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE retained (
        topic TEXT PRIMARY KEY,
        msg_id INTEGER NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
        retain INTEGER NOT NULL,
        props TEXT,
        expires_at REAL,
        origin TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
)

# v2: subscription identifiers travel with each queued delivery, and inbound QoS 2 packet ids
# are kept so that exactly-once holds across a restart.
_V2 = (
    "ALTER TABLE queue ADD COLUMN subscription_ids TEXT NOT NULL DEFAULT ''",
    """CREATE TABLE inbound_qos2 (
        client_id TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)
    ) WITHOUT ROWID""",
)

# v3: a trusted client's queue policy (records.QueuePolicy as JSON, NULL = none) is part of
# its session, so that a restored session keeps it before the client connects again.
_V3 = ("ALTER TABLE sessions ADD COLUMN queue_policy TEXT",)

# v4: the session's owner (records.SessionRecord.owner). Sessions written before it had none:
# device sessions (client ids "dev-...") are the gateway's, any other one belongs to the user
# it last recorded -- which for a device session may be someone who took it over, and is
# exactly what this version stops.
_V4 = (
    "ALTER TABLE sessions ADD COLUMN owner TEXT",
    "UPDATE sessions SET owner = CASE WHEN substr(client_id, 1, 4) = 'dev-' THEN '#gateway' "
    "ELSE username END",
)

# v5: rows that did not decode at start-up are moved here, one by one, with where they came
# from and why (loader.py), instead of the whole file being moved aside. An operator reads
# them with `sqlite3 <store> 'SELECT * FROM quarantine'`; the gateway never reads them back.
_V5 = (
    """CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        quarantined_at REAL NOT NULL,
        source_table TEXT NOT NULL,
        row_key TEXT NOT NULL,
        client_id TEXT,
        reason TEXT NOT NULL,
        row_data TEXT NOT NULL
    )""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5)
SCHEMA_VERSION = len(MIGRATIONS)

TABLES = (
    "sessions",
    "subscriptions",
    "messages",
    "queue",
    "retained",
    "inbound_qos2",
    "quarantine",
)


class SchemaTooNew(Exception):
    """The file was written by a newer gateway whose schema this one does not know."""


def user_version(db: sqlite3.Connection) -> int:
    row = db.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to ``target``, one transaction per step; returns the version found.

    ``db`` must be in autocommit mode (isolation_level=None) so that the explicit
    transactions here are the only ones.
    """
    found = user_version(db)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(f"schema version {found} is newer than {SCHEMA_VERSION}")
    for version in range(found, target):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            # PRAGMA takes no bound parameters; version is an int we computed.
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return found
