"""The terminal's transaction journal on SQLite (DESIGN 3 and 6).

Write-ahead: the agent journals each state before it acts on it. SQLite in WAL mode with
``synchronous=FULL`` (each commit is on disk before the call returns) and
``secure_delete=ON`` (deleted content is overwritten with zeros), driven by one worker
thread (:mod:`terminal_agent.journal.worker`) behind an async API.

Card data: the request body (PAN, track 2 equivalent, PIN block) is needed, byte for byte,
for retries until the host answers. It is stored only AES-GCM encrypted (NIST SP 800-38D,
96-bit random nonce) under the journal key the caller gives, bound to the row by its
idempotency key as associated data, and it is deleted, overwritten and truncated out of
the WAL the moment the host answers, the transaction ends or its reversal is queued. The
PAN is otherwise kept only masked (first six, last four).

The DUKPT transaction counter of the terminal's data key is reserved here
(:meth:`TransactionJournal.reserve_counter`): each counter is committed as used before
it is returned, so a crash can skip counters but never reuse one.

End of day (issue 6, settlement): :meth:`TransactionJournal.close_batch` closes the
terminal batch; closed ``for_host`` it also gets a ``batch_settlements`` row in the same
commit, holding the idempotency key every BatchCloseRequest for that batch carries, and
later the host's answer (:meth:`TransactionJournal.record_settlement`) or why it is not
settled yet (:meth:`TransactionJournal.settlement_failed`).

Schema versions: 1 (transactions, message ids, transitions, DUKPT counters; the batches
table was added to it later without a bump), 2 (``batch_settlements``). A version 1 file
is upgraded in place, in one transaction, when it is opened; nothing in it is rewritten.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from paycore.dukpt import AES_MAX_COUNTER, AES_MAX_ONE_BITS
from terminal_agent.journal.errors import (
    BodyUnavailable,
    CounterExhausted,
    DuplicateTransaction,
    IllegalTransition,
    SchemaTooNew,
    UnknownBatch,
    UnknownTransaction,
)
from terminal_agent.journal.model import (
    BODY_STATES,
    TRANSITIONS,
    Batch,
    BatchLine,
    CardData,
    CardOutcome,
    HostAnswer,
    HostSettlement,
    HostStatus,
    HostTotal,
    MessageRole,
    Recovery,
    ReversalReason,
    State,
    TransactionRecord,
    TransactionType,
)
from terminal_agent.journal.worker import Tx, Worker

SCHEMA_VERSION: Final = 2
NONCE_BYTES: Final = 12
#: The journal's counter row for the terminal's envelope (data) key, unless told otherwise.
DATA_KEY: Final = "data"

Clock = Callable[[], datetime]
Random = Callable[[int], bytes]

_SCHEMA: Final = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE transactions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL UNIQUE,
        ecr_reference TEXT NOT NULL,
        transaction_type TEXT NOT NULL CHECK (transaction_type IN ('purchase','refund','void')),
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        state TEXT NOT NULL,
        masked_pan TEXT, aid TEXT, application_label TEXT, tvr TEXT, tsi TEXT,
        arqc TEXT, tc TEXT, cvm TEXT,
        approved INTEGER, response_code TEXT, authorization_code TEXT, host_reference TEXT,
        correlation_id TEXT, reversal_reason TEXT,
        request_body BLOB,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX transactions_state ON transactions (state)",
    """CREATE TABLE message_ids (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        transaction_id INTEGER NOT NULL REFERENCES transactions (id),
        role TEXT NOT NULL CHECK (role IN ('request', 'reversal')),
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX message_ids_transaction ON message_ids (transaction_id)",
    """CREATE TABLE transitions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        transaction_id INTEGER NOT NULL REFERENCES transactions (id),
        state TEXT NOT NULL,
        at TEXT NOT NULL
    )""",
    """CREATE TABLE dukpt_counters (
        key_id TEXT PRIMARY KEY,
        next_counter INTEGER NOT NULL
    )""",
)
#: Added without a schema version bump (an older database gains it when opened): the
#: terminal batches closed at end of day, their totals as JSON.
_BATCHES: Final = """CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    closed_at TEXT NOT NULL,
    since TEXT,
    totals TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    last_seq INTEGER NOT NULL
)"""
#: Version 2: the host's side of each batch closed for the host (one row per batch).
_SETTLEMENTS: Final = """CREATE TABLE batch_settlements (
    batch_id INTEGER PRIMARY KEY REFERENCES batches (id),
    idempotency_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'settled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    status TEXT CHECK (status IN ('in_balance', 'out_of_balance', 'unreconciled')),
    host_batch_id TEXT,
    host_totals TEXT,
    differences TEXT,
    updated_at TEXT NOT NULL
)"""
#: The statements that take a database from version N to N + 1 (run in one transaction).
_UPGRADES: Final[dict[int, tuple[str, ...]]] = {
    1: (
        _BATCHES,
        _SETTLEMENTS,
        "CREATE INDEX batch_settlements_state ON batch_settlements (state)",
    ),
}
_BATCH_COLUMNS: Final = (
    "b.id, b.closed_at, b.since, b.totals, b.idempotency_key,"
    " s.idempotency_key, s.state, s.attempts, s.reason, s.status, s.host_batch_id,"
    " s.host_totals, s.differences, s.updated_at"
    " FROM batches b LEFT JOIN batch_settlements s ON s.batch_id = b.id"
)

_AAD_PREFIX: Final = b"pos-terminal-journal/v1/request-body/"


def utc_now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("journal timestamps must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _dt(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def next_usable_counter(counter: int) -> int:
    """The smallest AES DUKPT counter >= ``counter`` with at most 16 one-bits
    (X9.24-3-2017 6.1); adding the lowest one-bit skips only unusable counters."""
    counter = max(counter, 1)
    while counter.bit_count() > AES_MAX_ONE_BITS:
        counter += counter & -counter
    return counter


def _migrate(tx: Tx) -> int:
    """Create the schema, or upgrade an older one in place; the version found (0: new)."""
    conn = tx.conn
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = int(row[0]) if row and row[0] is not None else 0
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(found, SCHEMA_VERSION)
        if found >= 1:
            for version in range(found, SCHEMA_VERSION):
                for statement in _UPGRADES[version]:
                    conn.execute(statement)
            if found != SCHEMA_VERSION:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            return found
    for statement in _SCHEMA:
        conn.execute(statement)
    for version in range(1, SCHEMA_VERSION):
        for statement in _UPGRADES[version]:
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    return 0


def _add_batches(tx: Tx) -> None:
    tx.conn.execute(_BATCHES)


def _batch(row: Sequence[Any]) -> Batch:
    batch_id, closed_at, since, totals, key, host_key = row[:6]
    state, attempts, reason, status, host_batch_id, host_totals, differences, at = row[6:]
    lines = tuple(
        BatchLine(cast(Any, t), cast(Any, s), str(c), int(n), int(a))
        for t, s, c, n, a in json.loads(totals)
    )
    host = None
    if host_key is not None:
        host = HostSettlement(
            idempotency_key=str(host_key),
            state=cast(Any, state),
            attempts=int(attempts),
            updated_at=_dt(at),
            reason=reason,
            status=cast("HostStatus | None", status),
            host_batch_id=host_batch_id,
            totals=tuple(
                HostTotal(cast(Any, t), str(c), int(n), int(a))
                for t, c, n, a in json.loads(host_totals or "[]")
            ),
            differences=tuple(str(d) for d in json.loads(differences or "[]")),
        )
    return Batch(
        int(batch_id), _dt(closed_at), _dt(since) if since is not None else None, lines, key, host
    )


def _load_batch(conn: sqlite3.Connection, batch_id: int) -> Batch:
    row = conn.execute(f"SELECT {_BATCH_COLUMNS} WHERE b.id = ?", (batch_id,)).fetchone()
    if row is None:
        raise UnknownBatch(f"no batch {batch_id}")
    return _batch(row)


def _row(conn: sqlite3.Connection, sql: str, args: Sequence[object]) -> dict[str, Any] | None:
    cursor = conn.execute(sql, tuple(args))
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def _record(conn: sqlite3.Connection, row: dict[str, Any], *, history: bool) -> TransactionRecord:
    ids = conn.execute(
        "SELECT message_id, role FROM message_ids WHERE transaction_id = ? ORDER BY seq",
        (row["id"],),
    ).fetchall()
    steps: tuple[tuple[State, datetime], ...] = ()
    if history:
        steps = tuple(
            (cast(State, state), _dt(at))
            for state, at in conn.execute(
                "SELECT state, at FROM transitions WHERE transaction_id = ? ORDER BY seq",
                (row["id"],),
            )
        )
    approved = row["approved"]
    return TransactionRecord(
        local_id=row["id"],
        idempotency_key=row["idempotency_key"],
        ecr_reference=row["ecr_reference"],
        transaction_type=row["transaction_type"],
        amount=row["amount"],
        currency=row["currency"],
        state=row["state"],
        message_ids=tuple(m for m, role in ids if role == "request"),
        reversal_message_ids=tuple(m for m, role in ids if role == "reversal"),
        masked_pan=row["masked_pan"],
        aid=row["aid"],
        application_label=row["application_label"],
        tvr=row["tvr"],
        tsi=row["tsi"],
        arqc=row["arqc"],
        tc=row["tc"],
        cvm=row["cvm"],
        approved=None if approved is None else bool(approved),
        response_code=row["response_code"],
        authorization_code=row["authorization_code"],
        host_reference=row["host_reference"],
        correlation_id=row["correlation_id"],
        reversal_reason=row["reversal_reason"],
        has_body=row["request_body"] is not None,
        created_at=_dt(row["created_at"]),
        updated_at=_dt(row["updated_at"]),
        history=steps,
    )


class TransactionJournal:
    """The terminal's journal in one SQLite file. Open with :meth:`open`, then :meth:`close`
    (or use it as an async context manager)."""

    def __init__(
        self, path: Path, worker: Worker, aead: AESGCM, clock: Clock, random: Random
    ) -> None:
        self.path = path
        self._worker = worker
        self._aead = aead
        self._clock = clock
        self._random = random

    @classmethod
    async def open(
        cls,
        path: str | Path,
        journal_key: bytes,
        *,
        clock: Clock = utc_now,
        random: Random = secrets.token_bytes,
    ) -> TransactionJournal:
        """Open (creating if needed) the journal at ``path``; ``journal_key`` is the AES key
        (16, 24 or 32 bytes) the request bodies are encrypted under.

        Raises :class:`SchemaTooNew` for a database from a newer release.
        """
        if len(journal_key) not in (16, 24, 32):
            raise ValueError("the journal key must be 16, 24 or 32 bytes (AES)")
        path = Path(path)
        worker = Worker(path)
        try:
            await worker.submit(_migrate)
            await worker.submit(_add_batches)
        except BaseException:
            await worker.stop()
            raise
        return cls(path, worker, AESGCM(bytes(journal_key)), clock, random)

    async def close(self) -> None:
        await self._worker.stop()

    async def __aenter__(self) -> TransactionJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"TransactionJournal(path={str(self.path)!r})"

    # -- the state machine ---------------------------------------------------------------

    async def create(
        self,
        *,
        idempotency_key: str,
        transaction_type: TransactionType,
        amount: int,
        currency: str,
        ecr_reference: str = "",
    ) -> TransactionRecord:
        """Journal a new sale, refund or void in state ``created``.

        Raises :class:`DuplicateTransaction` (with the existing ``local_id``) when the
        idempotency key is already journaled.
        """
        if transaction_type not in ("purchase", "refund", "void"):
            raise ValueError("transaction_type must be purchase, refund or void")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValueError("amount must be a positive int of minor units")
        now = _ts(self._clock())

        def job(tx: Tx) -> TransactionRecord:
            found = _row(
                tx.conn,
                "SELECT id FROM transactions WHERE idempotency_key = ?",
                (idempotency_key,),
            )
            if found is not None:
                raise DuplicateTransaction(idempotency_key, int(found["id"]))
            cursor = tx.conn.execute(
                "INSERT INTO transactions (idempotency_key, ecr_reference, transaction_type,"
                " amount, currency, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'created', ?, ?)",
                (idempotency_key, ecr_reference, transaction_type, amount, currency, now, now),
            )
            local_id = int(cast(int, cursor.lastrowid))
            tx.conn.execute(
                "INSERT INTO transitions (transaction_id, state, at) VALUES (?, 'created', ?)",
                (local_id, now),
            )
            return self._load(tx.conn, local_id)

        return await self._worker.submit(job)

    async def card_read(self, local_id: int, card: CardData) -> TransactionRecord:
        """``created -> card_read`` with the card's (masked, non-sensitive) data."""
        return await self._advance(
            local_id,
            "card_read",
            {
                "masked_pan": card.masked_pan,
                "aid": card.aid,
                "application_label": card.application_label,
                "tvr": card.tvr,
                "tsi": card.tsi,
                "arqc": card.arqc,
                "cvm": card.cvm,
            },
        )

    async def pin_captured(self, local_id: int) -> TransactionRecord:
        """``card_read -> pin_captured`` (the PIN pad returned an encrypted PIN block)."""
        return await self._advance(local_id, "pin_captured", {})

    async def mark_sent(self, local_id: int, request_body: bytes) -> TransactionRecord:
        """``card_read | pin_captured -> sent``, storing ``request_body`` encrypted.

        Call it before the first publish: from here on the host may have the request. The
        body (the exact JSON sealed into every envelope for this transaction) comes back
        from :meth:`request_body` for byte-identical retries until the host answers.
        """
        if not isinstance(request_body, bytes) or not request_body:
            raise ValueError("request_body must be non-empty bytes")

        def sealed(row: dict[str, Any]) -> dict[str, object]:
            nonce = self._random(NONCE_BYTES)
            aad = _AAD_PREFIX + str(row["idempotency_key"]).encode()
            return {"request_body": nonce + self._aead.encrypt(nonce, request_body, aad)}

        return await self._advance(local_id, "sent", sealed)

    async def add_message_id(
        self, local_id: int, message_id: str, *, role: MessageRole = "request"
    ) -> None:
        """Record an envelope message id sent for the transaction, before it is published.

        Requests (every retry is a new envelope) are recorded in state ``sent``; reversal
        envelopes in ``reversal_pending``. A response may correlate to any of them.
        """
        wanted: State = "sent" if role == "request" else "reversal_pending"
        now = _ts(self._clock())

        def job(tx: Tx) -> None:
            row = self._fetch(tx.conn, local_id)
            if row["state"] != wanted:
                raise IllegalTransition(local_id, row["state"], f"{role} message")
            tx.conn.execute(
                "INSERT INTO message_ids (message_id, transaction_id, role, created_at)"
                " VALUES (?, ?, ?, ?)",
                (message_id, local_id, role, now),
            )

        await self._worker.submit(job)

    async def request_body(self, local_id: int) -> bytes:
        """The decrypted request body for a retry; :class:`BodyUnavailable` once wiped."""

        def job(tx: Tx) -> tuple[bytes | None, str]:
            row = self._fetch(tx.conn, local_id)
            return row["request_body"], str(row["idempotency_key"])

        blob, key = await self._worker.submit(job)
        if blob is None:
            raise BodyUnavailable(f"transaction {local_id} has no request body any more")
        try:
            return self._aead.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _AAD_PREFIX + key.encode()
            )
        except (InvalidTag, ValueError):
            raise BodyUnavailable(
                f"the request body of transaction {local_id} does not open under this key"
            ) from None

    async def responded(self, local_id: int, answer: HostAnswer) -> TransactionRecord:
        """``sent -> responded`` with the host's answer; the request body is wiped."""
        return await self._advance(
            local_id,
            "responded",
            {
                "approved": int(answer.approved),
                "response_code": answer.response_code,
                "authorization_code": answer.authorization_code,
                "host_reference": answer.host_reference,
                "correlation_id": answer.correlation_id,
            },
        )

    async def complete(self, local_id: int, outcome: CardOutcome) -> TransactionRecord:
        """``responded -> completed``: the host approved and the card accepted (TC)."""
        updates: dict[str, object] = {"tc": outcome.tc}
        if outcome.tvr is not None:
            updates["tvr"] = outcome.tvr
        if outcome.tsi is not None:
            updates["tsi"] = outcome.tsi
        return await self._advance(local_id, "completed", updates, approved=True)

    async def decline(self, local_id: int) -> TransactionRecord:
        """``responded -> declined`` (host declined) or ``card_read -> declined`` (the card
        declined offline). A host approval cannot be declined: queue its reversal."""
        return await self._advance(local_id, "declined", {}, approved=False)

    async def not_completed(self, local_id: int) -> TransactionRecord:
        """Ended before anything was sent (cancelled, card removed, link down)."""
        return await self._advance(local_id, "not_completed", {})

    async def queue_reversal(self, local_id: int, reason: ReversalReason) -> TransactionRecord:
        """``sent | responded -> reversal_pending``; the request body is wiped."""
        return await self._advance(local_id, "reversal_pending", {"reversal_reason": reason})

    async def mark_reversed(self, local_id: int) -> TransactionRecord:
        """``reversal_pending -> reversed``: the bridge acknowledged the reversal."""
        return await self._advance(local_id, "reversed", {})

    async def pending_reversals(self) -> list[TransactionRecord]:
        """Transactions whose reversal is queued and not yet acknowledged, oldest first."""
        return await self._select("WHERE state = 'reversal_pending' ORDER BY id", ())

    async def recover(self) -> Recovery:
        """At start-up, settle what a crash left open.

        - ``sent`` (no response): the host may have approved; reversal queued
          (``terminal_error``).
        - ``responded`` and approved, not completed on the card: reversal queued.
        - ``responded`` and declined: ``declined``.
        - ``created``, ``card_read``, ``pin_captured`` (nothing sent): ``not_completed``.
        """
        now = _ts(self._clock())

        def job(tx: Tx) -> Recovery:
            reversals: list[int] = []
            declined: list[int] = []
            abandoned: list[int] = []
            rows = tx.conn.execute(
                "SELECT id, state, approved FROM transactions WHERE state IN"
                " ('created', 'card_read', 'pin_captured', 'sent', 'responded') ORDER BY id"
            ).fetchall()
            for local_id, state, approved in rows:
                target: State
                extra: dict[str, object] = {}
                if state == "sent" or (state == "responded" and approved):
                    target, bucket = "reversal_pending", reversals
                    extra["reversal_reason"] = "terminal_error"
                elif state == "responded":
                    target, bucket = "declined", declined
                else:
                    target, bucket = "not_completed", abandoned
                self._apply(tx, local_id, state, target, extra, now)
                bucket.append(local_id)
            return Recovery(tuple(reversals), tuple(declined), tuple(abandoned))

        return await self._worker.submit(job)

    # -- queries ----------------------------------------------------------------------------

    async def get(self, local_id: int, *, history: bool = False) -> TransactionRecord | None:
        def job(tx: Tx) -> TransactionRecord | None:
            row = _row(tx.conn, "SELECT * FROM transactions WHERE id = ?", (local_id,))
            return None if row is None else _record(tx.conn, row, history=history)

        return await self._worker.submit(job)

    async def by_idempotency_key(self, idempotency_key: str) -> TransactionRecord | None:
        found = await self._select("WHERE idempotency_key = ?", (idempotency_key,))
        return found[0] if found else None

    async def by_message_id(self, message_id: str) -> TransactionRecord | None:
        """The transaction an envelope (request or reversal) was sent for."""
        found = await self._select(
            "WHERE id = (SELECT transaction_id FROM message_ids WHERE message_id = ?)",
            (message_id,),
        )
        return found[0] if found else None

    async def recent(
        self, limit: int = 20, *, state: State | None = None
    ) -> list[TransactionRecord]:
        """The newest transactions first (for ``terminal-agent journal``); masked only."""
        if not 1 <= limit <= 10_000:
            raise ValueError("limit must be between 1 and 10000")
        if state is None:
            return await self._select("ORDER BY id DESC LIMIT ?", (limit,))
        return await self._select("WHERE state = ? ORDER BY id DESC LIMIT ?", (state, limit))

    # -- DUKPT counter -----------------------------------------------------------------------

    async def reserve_counter(self, key_id: str = DATA_KEY) -> int:
        """The next AES DUKPT transaction counter of ``key_id``, durably marked used.

        Returns only after the COMMIT that moves the stored counter past it is on disk, so
        a counter is handed out once even across crashes. Counters with more than 16
        one-bits are skipped (X9.24-3-2017 6.1); :class:`CounterExhausted` after the last.
        """

        def job(tx: Tx) -> int:
            row = tx.conn.execute(
                "SELECT next_counter FROM dukpt_counters WHERE key_id = ?", (key_id,)
            ).fetchone()
            counter = next_usable_counter(1 if row is None else int(row[0]))
            if counter > AES_MAX_COUNTER:
                raise CounterExhausted(
                    f"DUKPT key {key_id!r} has no transaction counter left; load a new key"
                )
            tx.conn.execute(
                "INSERT INTO dukpt_counters (key_id, next_counter) VALUES (?, ?)"
                " ON CONFLICT (key_id) DO UPDATE SET next_counter = excluded.next_counter",
                (key_id, counter + 1),
            )
            return counter

        return await self._worker.submit(job)

    async def next_counter(self, key_id: str = DATA_KEY) -> int:
        """The counter :meth:`reserve_counter` would hand out next (nothing reserved)."""

        def job(tx: Tx) -> int:
            row = tx.conn.execute(
                "SELECT next_counter FROM dukpt_counters WHERE key_id = ?", (key_id,)
            ).fetchone()
            return next_usable_counter(1 if row is None else int(row[0]))

        return await self._worker.submit(job)

    # -- terminal batches (end of day) ---------------------------------------------------

    async def close_batch(
        self, *, idempotency_key: str | None = None, for_host: bool = False
    ) -> Batch:
        """Close the terminal batch: totals by type, final state and currency of the
        ``completed`` and ``declined`` transactions that reached that state since the
        previous close (the journal's transitions are numbered, so each final transaction
        is counted in exactly one batch).

        A repeated ``idempotency_key`` returns the batch it closed; a close with nothing
        new records an empty batch. ``for_host``: the batch is to be settled with the host;
        in the same commit it gets a ``pending`` settlement with the wire idempotency key
        all its BatchCloseRequests carry (an existing settlement is kept as it is).
        """

        def job(tx: Tx) -> Batch:
            conn = tx.conn
            batch_id: int | None = None
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT id FROM batches WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    batch_id = int(row[0])
            if batch_id is None:
                batch_id = self._close(conn, idempotency_key)
            if for_host:
                conn.execute(
                    "INSERT INTO batch_settlements (batch_id, idempotency_key, state, updated_at)"
                    " VALUES (?, ?, 'pending', ?) ON CONFLICT (batch_id) DO NOTHING",
                    (batch_id, f"batch-{batch_id}-{self._random(8).hex()}", _ts(self._clock())),
                )
            return _load_batch(conn, batch_id)

        return await self._worker.submit(job)

    def _close(self, conn: sqlite3.Connection, idempotency_key: str | None) -> int:
        prev = conn.execute(
            "SELECT closed_at, last_seq FROM batches ORDER BY id DESC LIMIT 1"
        ).fetchone()
        since, after = (prev[0], int(prev[1])) if prev is not None else (None, 0)
        top = conn.execute("SELECT MAX(seq) FROM transitions").fetchone()
        upto = int(top[0]) if top and top[0] is not None else 0
        closed_at = _ts(self._clock())
        if since is not None:
            closed_at = max(closed_at, since)
        totals = conn.execute(
            "SELECT t.transaction_type, t.state, t.currency, COUNT(*), SUM(t.amount)"
            " FROM transitions s JOIN transactions t ON t.id = s.transaction_id"
            " WHERE s.state IN ('completed', 'declined') AND s.seq > ? AND s.seq <= ?"
            " GROUP BY t.transaction_type, t.state, t.currency"
            " ORDER BY t.transaction_type, t.state, t.currency",
            (after, upto),
        ).fetchall()
        cursor = conn.execute(
            "INSERT INTO batches (closed_at, since, totals, idempotency_key, last_seq)"
            " VALUES (?, ?, ?, ?, ?)",
            (closed_at, since, json.dumps([list(t) for t in totals]), idempotency_key, upto),
        )
        return int(cast(int, cursor.lastrowid))

    async def batches(self, limit: int = 20) -> list[Batch]:
        """The closed batches, newest first, each with its settlement (if any)."""
        if not 1 <= limit <= 10_000:
            raise ValueError("limit must be between 1 and 10000")

        def job(tx: Tx) -> list[Batch]:
            rows = tx.conn.execute(
                f"SELECT {_BATCH_COLUMNS} ORDER BY b.id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [_batch(r) for r in rows]

        return await self._worker.submit(job)

    async def batch(self, batch_id: int) -> Batch | None:
        """One closed batch with its settlement; ``None`` if there is no such batch."""

        def job(tx: Tx) -> Batch | None:
            try:
                return _load_batch(tx.conn, batch_id)
            except UnknownBatch:
                return None

        return await self._worker.submit(job)

    async def voided_purchases(self, batch_id: int) -> dict[str, tuple[int, int]]:
        """Per currency, (count, amount) of the purchases completed in batch ``batch_id``
        that a void had cancelled by the time the batch closed.

        A void travels as a reversal: the host then holds neither the purchase nor the
        void, so the totals the host settles leave both out (transaction.py).
        """

        def job(tx: Tx) -> dict[str, tuple[int, int]]:
            conn = tx.conn
            row = conn.execute("SELECT last_seq FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                raise UnknownBatch(f"no batch {batch_id}")
            upto = int(row[0])
            prev = conn.execute(
                "SELECT last_seq FROM batches WHERE id < ? ORDER BY id DESC LIMIT 1", (batch_id,)
            ).fetchone()
            after = int(prev[0]) if prev is not None else 0
            rows = conn.execute(
                "SELECT p.currency, COUNT(*), SUM(p.amount)"
                " FROM transitions s JOIN transactions p ON p.id = s.transaction_id"
                " JOIN transactions v ON v.transaction_type = 'void'"
                "  AND v.idempotency_key = substr('void:' || p.idempotency_key, 1, 64)"
                " WHERE p.transaction_type = 'purchase' AND s.state = 'completed'"
                "  AND s.seq > ? AND s.seq <= ?"
                "  AND EXISTS (SELECT 1 FROM transitions vs WHERE vs.transaction_id = v.id"
                "   AND vs.state = 'completed' AND vs.seq <= ?)"
                " GROUP BY p.currency",
                (after, upto, upto),
            ).fetchall()
            return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}

        return await self._worker.submit(job)

    async def pending_settlements(self) -> list[Batch]:
        """Batches closed for the host that it has not settled yet, oldest first."""

        def job(tx: Tx) -> list[Batch]:
            rows = tx.conn.execute(
                f"SELECT {_BATCH_COLUMNS} WHERE s.state = 'pending' ORDER BY b.id"
            ).fetchall()
            return [_batch(r) for r in rows]

        return await self._worker.submit(job)

    async def settlement_failed(self, batch_id: int, reason: str) -> Batch:
        """One more attempt that did not settle ``batch_id`` with the host, and why (plain
        words, no card data). A batch the host has settled meanwhile stays settled."""
        if not reason:
            raise ValueError("a reason is needed")
        now = _ts(self._clock())

        def job(tx: Tx) -> Batch:
            self._settlement_row(tx.conn, batch_id)
            tx.conn.execute(
                "UPDATE batch_settlements SET attempts = attempts + 1, reason = ?,"
                " updated_at = ? WHERE batch_id = ? AND state = 'pending'",
                (reason[:200], now, batch_id),
            )
            return _load_batch(tx.conn, batch_id)

        return await self._worker.submit(job)

    async def record_settlement(
        self,
        batch_id: int,
        *,
        status: HostStatus,
        host_batch_id: str,
        totals: Sequence[HostTotal],
        differences: Sequence[str],
    ) -> Batch:
        """The host's answer for ``batch_id``: the settlement becomes ``settled``.

        Recorded once: a second answer (a retry raced the first) leaves the first in place;
        the host answers a repeated idempotency key with its stored answer anyway.
        """
        now = _ts(self._clock())
        lines = json.dumps([[t.transaction_type, t.currency, t.count, t.amount] for t in totals])

        def job(tx: Tx) -> Batch:
            self._settlement_row(tx.conn, batch_id)
            tx.conn.execute(
                "UPDATE batch_settlements SET state = 'settled', attempts = attempts + 1,"
                " reason = NULL, status = ?, host_batch_id = ?, host_totals = ?,"
                " differences = ?, updated_at = ? WHERE batch_id = ? AND state = 'pending'",
                (status, host_batch_id, lines, json.dumps(list(differences)), now, batch_id),
            )
            return _load_batch(tx.conn, batch_id)

        return await self._worker.submit(job)

    @staticmethod
    def _settlement_row(conn: sqlite3.Connection, batch_id: int) -> None:
        found = conn.execute(
            "SELECT 1 FROM batch_settlements WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        if found is None:
            raise UnknownBatch(f"batch {batch_id} was not closed for the host")

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _fetch(conn: sqlite3.Connection, local_id: int) -> dict[str, Any]:
        row = _row(conn, "SELECT * FROM transactions WHERE id = ?", (local_id,))
        if row is None:
            raise UnknownTransaction(f"no transaction {local_id}")
        return row

    def _load(self, conn: sqlite3.Connection, local_id: int) -> TransactionRecord:
        return _record(conn, self._fetch(conn, local_id), history=False)

    async def _advance(
        self,
        local_id: int,
        target: State,
        updates: dict[str, object] | Callable[[dict[str, Any]], dict[str, object]],
        *,
        approved: bool | None = None,
    ) -> TransactionRecord:
        now = _ts(self._clock())

        def job(tx: Tx) -> TransactionRecord:
            row = self._fetch(tx.conn, local_id)
            current = row["state"]
            if target not in TRANSITIONS[current]:
                raise IllegalTransition(local_id, current, target)
            if (
                current == "responded"
                and approved is not None
                and bool(row["approved"]) != approved
            ):
                # completed needs a host approval; an approval is reversed, never declined
                raise IllegalTransition(local_id, current, target)
            fields = updates(row) if callable(updates) else updates
            self._apply(tx, local_id, current, target, fields, now)
            return self._load(tx.conn, local_id)

        return await self._worker.submit(job)

    @staticmethod
    def _apply(
        tx: Tx, local_id: int, current: str, target: State, fields: dict[str, object], now: str
    ) -> None:
        values = dict(fields)
        if target not in BODY_STATES and current in BODY_STATES:
            values["request_body"] = None  # secure_delete zeroes it; the worker truncates the WAL
            tx.wiped = True
        assignments = "".join(f", {name} = ?" for name in values)
        tx.conn.execute(
            f"UPDATE transactions SET state = ?, updated_at = ?{assignments} WHERE id = ?",  # noqa: S608 - column names are ours
            (target, now, *values.values(), local_id),
        )
        tx.conn.execute(
            "INSERT INTO transitions (transaction_id, state, at) VALUES (?, ?, ?)",
            (local_id, target, now),
        )

    async def _select(self, tail: str, args: Sequence[object]) -> list[TransactionRecord]:
        def job(tx: Tx) -> list[TransactionRecord]:
            cursor = tx.conn.execute(f"SELECT * FROM transactions {tail}", tuple(args))  # noqa: S608
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            return [_record(tx.conn, row, history=False) for row in rows]

        return await self._worker.submit(job)
