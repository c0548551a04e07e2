"""The journal's schema, version 2, for SQLite and PostgreSQL (DESIGN section 6).

Both dialects have the same tables, columns, unique constraints and checks; they differ
only in types (SQLite stores timestamps as fixed-width UTC text that sorts in time order,
``YYYY-MM-DDTHH:MM:SS.ffffffZ``; PostgreSQL as ``timestamptz``). The SQL lives here as
Python strings so that it ships with the package without package-data rules.

Sensitive authentication data has no column anywhere: no track 2 equivalent, no PIN
block, no CVV. The PAN is kept as ``pan_encrypted`` (AES-GCM, see
:mod:`gateway_bridge.journal.pan_crypto`), ``pan_hash`` (HMAC-SHA256, for lookups) and
``masked_pan`` (first six, last four).

No index covers a column that completing an authorisation changes (state, response,
completion time): PostgreSQL then updates the row in place (a HOT update, helped by the
table's ``fillfactor``), which doubled the benchmark's throughput. Crash recovery's scan
for in-flight entries therefore goes by ``received_at`` and is bounded by its caller.

``schema_version`` holds one row; a database whose version is above
:data:`SCHEMA_VERSION` is refused (:class:`~gateway_bridge.journal.base.SchemaTooNew`).
A database whose version is below it is upgraded when opened: every statement here is
``CREATE ... IF NOT EXISTS``, so running them all in one transaction adds what is new and
leaves existing tables and rows alone, then the version row is rewritten.

Versions:

1. terminals, authorizations, reversals.
2. ``enrolment_codes`` (issue 8): at most one one-time enrolment code per terminal, kept
   only as a 32-byte digest, with its expiry, use time and failed attempt count. Its
   ``terminal_id`` references ``terminals`` (the SQLite journal's connections turn
   ``foreign_keys`` on, so both dialects enforce it).
"""

from __future__ import annotations

SCHEMA_VERSION = 3

_STATES = "'received', 'sent', 'approved', 'declined', 'failed', 'timed_out'"
_TERMINAL_STATUSES = "'active', 'suspended', 'revoked'"
_REVERSAL_STATES = "'pending', 'acknowledged', 'unknown_original'"
_REVERSAL_OUTCOMES = "'reversed', 'already_reversed', 'unknown_original'"


def _tables(*, ident: str, blob: str, ts: str, bigint: str, hot: str) -> list[str]:
    return [
        f"""
CREATE TABLE IF NOT EXISTS schema_version (
    version {bigint} NOT NULL
)""",
        f"""
CREATE TABLE IF NOT EXISTS terminals (
    terminal_id         TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ({_TERMINAL_STATUSES})),
    data_initial_key_id TEXT NOT NULL,
    data_bdk_id         TEXT NOT NULL,
    pin_bdk_id          TEXT NOT NULL,
    last_counter        {bigint},
    last_seen_at        {ts},
    created_at          {ts} NOT NULL,
    updated_at          {ts} NOT NULL
)""",
        f"""
CREATE TABLE IF NOT EXISTS authorizations (
    id                  {ident},
    terminal_id         TEXT NOT NULL,
    merchant_id         TEXT NOT NULL,
    idempotency_key     TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    original_message_id TEXT,
    request_digest      {blob} NOT NULL,
    transaction_type    TEXT NOT NULL CHECK (transaction_type IN ('purchase', 'refund', 'void')),
    amount              {bigint} NOT NULL,
    currency            TEXT NOT NULL,
    stan                {bigint},
    reference           TEXT NOT NULL,
    masked_pan          TEXT NOT NULL,
    pan_encrypted       {blob} NOT NULL,
    pan_key_id          TEXT NOT NULL,
    pan_hash            {blob} NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ({_STATES})),
    response_code       TEXT,
    authorization_code  TEXT,
    host_reference      TEXT,
    response_payload    {blob},
    received_at         {ts} NOT NULL,
    sent_at             {ts},
    completed_at        {ts},
    reversed_at         {ts},
    batch_id            TEXT,
    updated_at          {ts} NOT NULL,
    CONSTRAINT authorizations_idempotency UNIQUE (terminal_id, idempotency_key)
){hot}""",
        """
CREATE INDEX IF NOT EXISTS authorizations_by_message
    ON authorizations (terminal_id, message_id)""",
        """
CREATE INDEX IF NOT EXISTS authorizations_by_time ON authorizations (received_at)""",
        """
CREATE INDEX IF NOT EXISTS authorizations_by_terminal_time
    ON authorizations (terminal_id, received_at)""",
        """
CREATE INDEX IF NOT EXISTS authorizations_by_pan ON authorizations (pan_hash)""",
        f"""
CREATE TABLE IF NOT EXISTS reversals (
    id                  {ident},
    terminal_id         TEXT NOT NULL,
    merchant_id         TEXT NOT NULL,
    idempotency_key     TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    original_message_id TEXT NOT NULL,
    reason              TEXT NOT NULL,
    amount              {bigint} NOT NULL,
    currency            TEXT NOT NULL,
    origin              TEXT NOT NULL CHECK (origin IN ('terminal', 'bridge')),
    request_digest      {blob} NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ({_REVERSAL_STATES})),
    outcome             TEXT CHECK (outcome IN ({_REVERSAL_OUTCOMES})),
    attempts            {bigint} NOT NULL DEFAULT 0,
    last_error          TEXT,
    next_attempt_at     {ts} NOT NULL,
    response_payload    {blob},
    created_at          {ts} NOT NULL,
    updated_at          {ts} NOT NULL,
    CONSTRAINT reversals_idempotency UNIQUE (terminal_id, idempotency_key)
){hot}""",
        """
CREATE INDEX IF NOT EXISTS reversals_due ON reversals (next_attempt_at)
    WHERE state = 'pending'""",
        """
CREATE INDEX IF NOT EXISTS reversals_by_original
    ON reversals (terminal_id, original_message_id)""",
        # version 2
        f"""
CREATE TABLE IF NOT EXISTS enrolment_codes (
    terminal_id         TEXT PRIMARY KEY
                        REFERENCES terminals (terminal_id) ON DELETE CASCADE,
    code_digest         {blob} NOT NULL,
    created_at          {ts} NOT NULL,
    expires_at          {ts} NOT NULL,
    used_at             {ts},
    failed_attempts     {bigint} NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    created_by          TEXT NOT NULL
)""",
        f"""
CREATE TABLE IF NOT EXISTS terminal_batches (
    terminal_id         TEXT NOT NULL,
    idempotency_key     TEXT NOT NULL,
    claimed_at          {ts} NOT NULL,
    host_batch_id       TEXT,
    response_payload    {blob},
    CONSTRAINT terminal_batches_idempotency PRIMARY KEY (terminal_id, idempotency_key)
)""",
    ]


#: Statements that create (or upgrade to) the current schema in SQLite (one transaction).
SQLITE_SCHEMA: list[str] = _tables(
    ident="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB", ts="TEXT", bigint="INTEGER", hot=""
)

#: Statements that create (or upgrade to) the current schema in PostgreSQL (one transaction).
POSTGRES_SCHEMA: list[str] = _tables(
    ident="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    blob="BYTEA",
    ts="TIMESTAMPTZ",
    bigint="BIGINT",
    hot=" WITH (fillfactor = 80)",
)

#: Every table, in creation order: tests read every value of every row of each to check
#: that nothing holds sensitive authentication data.
TABLES = (
    "schema_version",
    "terminals",
    "authorizations",
    "reversals",
    "enrolment_codes",
    "terminal_batches",
)
