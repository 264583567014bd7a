"""The audit log's hash chain: each event carries the hash of the one before it, so editing,
deleting or reordering any row breaks the chain from that row on, and `verify` finds it.

    hash = sha256(prev_hash + canonical(event)), the first event's prev_hash is GENESIS;
    canonical(event) = json.dumps({"at", "actor", "action", "patient_id", "conversation_id",
                                   "detail"}, sort_keys=True, separators=(",", ":"),
                                   ensure_ascii=True)
    with `at` as ISO 8601 UTC with microseconds and a "Z" ("2026-12-07T22:30:00.000000Z").

Every way of writing an event is chained: ORM objects (`session.add(AuditEvent(...))`) and Core
inserts (`connection.execute(insert(AuditEvent).values(...))`). Writers are serialized so the
chain stays one line however many processes write: on PostgreSQL by a transaction-scoped
advisory lock, on SQLite by its single write lock, each taken before the chain's head is read
in the same transaction. ORM sessions hold their new events back until commit and take the
lock last, so a transaction never waits for a row lock while other writers wait for it.
Transactions that write events must run at READ COMMITTED (PostgreSQL's default): a snapshot
older than the lock would read a stale head. The unique index on prev_hash makes a fork
impossible even then; the second writer fails instead.

The migration (0008) makes the table append-only with triggers. `python -m core.audit verify`
walks the chain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, event, func, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql.dml import Insert

from core.orm import AuditEvent, utcnow

GENESIS = "0" * 64
# pg_advisory_xact_lock key of the audit chain ("audt").
LOCK_KEY = 0x61756474
HASHED_FIELDS = ("at", "actor", "action", "patient_id", "conversation_id", "detail")
TABLE = cast(Table, AuditEvent.__table__)
_PENDING = "audit_chain.pending"
_COMMITTING = "audit_chain.committing"


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were stored in UTC.
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def canonical(fields: Mapping[Any, Any]) -> str:
    body = {name: fields.get(name) for name in HASHED_FIELDS}
    body["at"] = as_utc(fields["at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body["detail"] = fields.get("detail") or {}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def link(prev_hash: str, fields: Mapping[Any, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(fields)).encode()).hexdigest()


def complete(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """An event's columns as they will be stored and read back: `at` in UTC, `detail` as its
    JSON round trip (tuples become lists), so the hash of what is read equals the hash written."""
    done = dict(fields)
    done["at"] = as_utc(done.get("at") or utcnow())
    done["detail"] = json.loads(json.dumps(done.get("detail") or {}))
    done.setdefault("patient_id", None)
    done.setdefault("conversation_id", None)
    return done


def lock_head(connection: Connection) -> str:
    """Take the chain's write lock for the rest of this transaction and return its head."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    elif dialect == "sqlite":
        # Any write statement takes SQLite's one write lock (and begins the transaction, which
        # the driver only does before writes), so the head read next is read under it.
        connection.execute(text("UPDATE audit_events SET id = id WHERE 0"))
    head = connection.scalar(select(TABLE.c.hash).order_by(TABLE.c.id.desc()).limit(1))
    return str(head) if head else GENESIS


# --- ORM: session.add(AuditEvent(...)) ------------------------------------------------------


def _chain_objects(session: Session, events: list[AuditEvent]) -> None:
    head = lock_head(session.connection())
    for item in events:
        fields = complete({name: getattr(item, name) for name in HASHED_FIELDS})
        item.at, item.detail = fields["at"], fields["detail"]
        item.prev_hash = head
        item.hash = head = link(head, fields)


def _transaction(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


@event.listens_for(Session, "before_flush")
def _hold_back_new_events(session: Session, _context: Any, _instances: Any) -> None:
    new = [o for o in session.new if isinstance(o, AuditEvent) and not o.hash]
    if not new:
        return
    if session.info.get(_COMMITTING):
        _chain_objects(session, new)
        return
    # Inserted at commit, under the chain's lock: holding that lock from an early flush to the
    # commit would make every other writer wait, and deadlock with row locks taken meanwhile.
    pending = session.info.setdefault(_PENDING, [])
    transaction = _transaction(session)
    for item in new:
        session.expunge(item)
        pending.append((transaction, item))


@event.listens_for(Session, "before_commit")
def _insert_held_events(session: Session) -> None:
    if not session.info.get(_PENDING) and not any(isinstance(o, AuditEvent) for o in session.new):
        return
    session.flush()
    held = [item for _, item in session.info.pop(_PENDING, [])]
    session.info[_COMMITTING] = True
    if held:
        _chain_objects(session, held)
        session.add_all(held)


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous: SessionTransaction) -> None:
    def inside(transaction: SessionTransaction | None) -> bool:
        while transaction is not None:
            if transaction is previous:
                return True
            transaction = transaction.parent
        return False

    pending = session.info.get(_PENDING)
    if pending:
        session.info[_PENDING] = [(t, item) for t, item in pending if not inside(t)]


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_COMMITTING, None)


# --- Core: connection.execute(insert(AuditEvent).values(...)) ---------------------------------


@event.listens_for(Engine, "before_execute", retval=True)
def _chain_core_insert(
    connection: Connection,
    statement: Any,
    multiparams: list[dict[str, Any]],
    params: dict[str, Any],
    _options: Any,
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    if not isinstance(statement, Insert) or getattr(statement.table, "name", None) != TABLE.name:
        return statement, multiparams, params
    if all(p.get("hash") for p in multiparams or [params]):
        return statement, multiparams, params  # the ORM's flush of events chained above
    if getattr(statement, "_multi_values", None):
        raise ValueError("insert audit events one row per .values() call, or as parameter lists")
    given = {
        k: v
        for k, v in statement.compile(dialect=connection.dialect).params.items()
        if v is not None
    }
    rows = [{**given, **p} for p in multiparams] if multiparams else [{**given, **params}]
    head = lock_head(connection)
    chained = []
    for row in rows:
        fields = complete(row)
        fields["prev_hash"] = head
        fields["hash"] = head = link(head, fields)
        chained.append(fields)
    rewritten = insert(TABLE).values(chained[0] if len(chained) == 1 else chained)
    returning = getattr(statement, "_returning", ())
    if returning:
        rewritten = rewritten.returning(*returning)
    return rewritten, [], {}


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    first_bad_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(
    connection: Connection,
    *,
    batch: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> Verdict:
    """Walk the chain in id order. `checked` counts the rows read, the bad one included; a
    chain cut short at its end cannot be told from a shorter log (keep the head's hash
    elsewhere if that matters)."""
    columns = [TABLE.c.id, TABLE.c.prev_hash, TABLE.c.hash, *(TABLE.c[n] for n in HASHED_FIELDS)]
    total = int(connection.scalar(select(func.count()).select_from(TABLE)) or 0)
    expected, last_id, checked = GENESIS, None, 0
    while True:
        query = select(*columns).order_by(TABLE.c.id).limit(batch)
        if last_id is not None:
            query = query.where(TABLE.c.id > last_id)
        rows = connection.execute(query).mappings().all()
        if not rows:
            return Verdict(True, checked, None)
        for row in rows:
            checked += 1
            if row["prev_hash"] != expected or row["hash"] != link(row["prev_hash"], row):
                return Verdict(False, checked, int(row["id"]))
            expected = row["hash"]
        last_id = rows[-1]["id"]
        if progress:
            progress(checked, total)


def chain_rows(
    rows: Iterable[Mapping[Any, Any]], head: str = GENESIS
) -> list[tuple[Any, str, str]]:
    """(id, prev_hash, hash) for existing rows in id order: the migration's back-fill."""
    links = []
    for row in rows:
        digest = link(head, complete(row))
        links.append((row["id"], head, digest))
        head = digest
    return links


def main(argv: list[str] | None = None) -> int:
    from core.db import make_sync_engine
    from core.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m core.audit")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check the audit log's hash chain")
    check.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args(argv)

    def report(done: int, total: int) -> None:
        print(f"checked {done} of {total} events", file=sys.stderr)

    engine = make_sync_engine(get_settings().database_url)
    try:
        with engine.connect() as connection:
            verdict = verify(connection, batch=args.batch, progress=report)
    finally:
        engine.dispose()
    print(json.dumps(verdict.as_dict()))
    if not verdict.ok:
        print(
            f"The audit log's chain is broken at event {verdict.first_bad_id}: that row was "
            "changed, or a row before it was deleted or moved. Keep the database as it is, "
            "compare it with a backup to see what changed, and report it to your security "
            "officer.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
