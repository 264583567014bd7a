"""Encryption at rest: message text and patient fields are Fernet tokens in the database, and
rows are found by a blind index (an HMAC of the value) instead of the value itself.

`EncryptedText` and `EncryptedJSON` encrypt on the way in and decrypt on the way out, so the
application keeps reading and writing plain strings and dicts. The keys come from settings:
`ENCRYPTION_KEYS` (the first encrypts, all decrypt) and `BLIND_INDEX_KEY`.

    python -m core.crypto generate-key   # a new key for ENCRYPTION_KEYS (or BLIND_INDEX_KEY)
    python -m core.crypto rotate         # re-encrypt everything with the first key
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Connection, Text, column, select, table, update
from sqlalchemy.sql import ClauseElement, operators
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

    from core.settings import Settings

# Marks a stored value as a token; a value without it was written before encryption and is
# read as it is until `rotate` (or migration 0009) encrypts it.
PREFIX = "enc1:"
# `info` key naming, on a blind index column, the column it indexes.
BLIND_INDEX_OF = "blind_index_of"


class UnreadableValue(RuntimeError):
    """A stored value that no key in ENCRYPTION_KEYS opens."""


class Keyring:
    """The keys in use: Fernet keys (the first encrypts, all decrypt) and the blind index key."""

    def __init__(self, keys: Sequence[bytes], index_key: bytes) -> None:
        if not keys:
            raise ValueError("ENCRYPTION_KEYS needs at least one key")
        self._fernets = [Fernet(key) for key in keys]
        self._multi = MultiFernet(self._fernets)
        self._index_key = index_key

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        return cls(settings.encryption_key_list(), settings.blind_index_secret())

    def encrypt(self, value: str) -> str:
        return PREFIX + self._multi.encrypt(value.encode()).decode("ascii")

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._multi.decrypt(stored[len(PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise UnreadableValue(
                "A stored value could not be decrypted with any key in ENCRYPTION_KEYS: add the "
                "key it was written with to ENCRYPTION_KEYS (keep old keys listed until "
                "`python -m core.crypto rotate` has re-encrypted everything)."
            ) from None

    def renewed(self, stored: str) -> str | None:
        """The value encrypted with the first key, or None when it already is."""
        if stored.startswith(PREFIX):
            try:
                self._fernets[0].decrypt(stored[len(PREFIX) :].encode("ascii"))
                return None
            except (InvalidToken, UnicodeError):
                pass
        return self.encrypt(self.decrypt(stored))

    def blind_index(self, value: str) -> str:
        normalized = unicodedata.normalize("NFC", value.strip())
        return hmac.new(self._index_key, normalized.encode(), hashlib.sha256).hexdigest()


_active: Keyring | None = None


def use(settings: Settings) -> Keyring:
    """Make these settings' keys the process's keys (the web app and worker call it at start)."""
    return use_keyring(Keyring.from_settings(settings))


def use_keyring(ring: Keyring) -> Keyring:
    global _active
    _active = ring
    return ring


def keyring() -> Keyring:
    """The process's keys: those last given to `use`, else those of the environment's settings."""
    global _active
    if _active is None:
        from core.settings import get_settings

        _active = Keyring.from_settings(get_settings())
    return _active


def blind_index(value: str) -> str:
    """What to look a row up by instead of an encrypted value (`address_hash == ...`)."""
    return keyring().blind_index(value)


def index_default(source: str) -> Callable[[Any], str | None]:
    """A column default filling a blind index from the value inserted into `source`, for ORM
    objects and Core inserts alike."""

    def fill(context: Any) -> str | None:
        value = context.get_current_parameters().get(source)
        return None if value is None else blind_index(value)

    return fill


# Comparing ciphertexts finds nothing (each encryption differs), so it is an error, not an
# empty result: the query must use the blind index.
_REFUSED = {
    operators.eq,
    operators.ne,
    operators.in_op,
    operators.not_in_op,
    operators.like_op,
    operators.not_like_op,
    operators.ilike_op,
    operators.not_ilike_op,
    operators.startswith_op,
    operators.endswith_op,
    operators.contains_op,
    operators.lt,
    operators.le,
    operators.gt,
    operators.ge,
}


def _is_value(operand: Any) -> bool:
    # SQL expressions (another column: SQLAlchemy compares columns internally) and NULL
    # checks are fine; only Python values would be compared with ciphertext.
    return not (
        operand is None
        or isinstance(operand, ClauseElement)
        or hasattr(operand, "__clause_element__")
    )


class _Comparator(TypeDecorator.Comparator[Any]):
    def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
        if op in _REFUSED and any(_is_value(operand) for operand in other):
            raise TypeError(
                f"{self.expr} is encrypted: compare its blind index column "
                "(e.g. address_hash == core.crypto.blind_index(value)) or filter in Python"
            )
        return super().operate(op, *other, **kwargs)


class EncryptedText(TypeDecorator[str]):
    """Text stored as a Fernet token; reads legacy plaintext as it is."""

    impl = Text
    cache_ok = True
    comparator_factory = _Comparator

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring().decrypt(value)


class EncryptedJSON(TypeDecorator[Any]):
    """JSON stored as a Fernet token of its text; reads legacy plain JSON as it is. Python None
    is SQL NULL."""

    impl = Text
    cache_ok = True
    comparator_factory = _Comparator

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return keyring().encrypt(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):  # a driver that decoded legacy JSON itself
            return value
        return json.loads(keyring().decrypt(value))


# --- re-encryption (rotate, migration 0009) ------------------------------------------------


@dataclass(frozen=True)
class EncryptedTable:
    """Where encrypted values live: a table, its key column, its encrypted columns, and its
    blind index columns (index column, indexed column)."""

    name: str
    key: str
    columns: tuple[str, ...]
    indexes: tuple[tuple[str, str], ...] = ()


@dataclass
class Counts:
    rows: int = 0  # rows read
    encrypted: int = 0  # plaintext values now encrypted
    reencrypted: int = 0  # values moved to the first key
    reindexed: int = 0  # blind index values filled or recomputed

    def add(self, other: Counts) -> None:
        self.rows += other.rows
        self.encrypted += other.encrypted
        self.reencrypted += other.reencrypted
        self.reindexed += other.reindexed


def orm_tables() -> list[EncryptedTable]:
    """The encrypted columns and blind indexes declared in core/orm.py."""
    from core.orm import Base

    found = []
    for orm_table in Base.metadata.sorted_tables:
        columns = tuple(
            c.name for c in orm_table.columns if isinstance(c.type, EncryptedText | EncryptedJSON)
        )
        if not columns:
            continue
        indexes = tuple(
            (c.name, str(c.info[BLIND_INDEX_OF]))
            for c in orm_table.columns
            if BLIND_INDEX_OF in c.info
        )
        key = next(iter(orm_table.primary_key.columns)).name
        found.append(EncryptedTable(orm_table.name, key, columns, indexes))
    return found


def reencrypt(
    connection: Connection,
    ring: Keyring,
    tables: Iterable[EncryptedTable],
    *,
    batch_size: int = 500,
    commit: bool = False,
    progress: Callable[[str, Counts], None] | None = None,
) -> dict[str, Counts]:
    """Encrypt every value with the first key (plaintext included) and bring every blind index
    up to date, one batch of rows at a time; what is already current is left alone. With
    `commit` each batch is its own transaction (a long rotation can stop and start again)."""
    totals: dict[str, Counts] = {}
    for spec in tables:
        names = [spec.key, *spec.columns, *(index for index, _ in spec.indexes)]
        # Untyped columns: the raw stored text, no decryption on the way.
        raw = table(spec.name, *(column(name) for name in dict.fromkeys(names)))
        key = raw.c[spec.key]
        counts = totals.setdefault(spec.name, Counts())
        last: Any = None
        while True:
            query = select(*raw.c).order_by(key).limit(batch_size)
            if last is not None:
                query = query.where(key > last)
            rows = connection.execute(query).mappings().all()
            if not rows:
                break
            batch = Counts(rows=len(rows))
            for row in rows:
                changes = _changes(ring, spec, row, batch)
                if changes:
                    connection.execute(update(raw).where(key == row[spec.key]).values(**changes))
            last = rows[-1][spec.key]
            if commit:
                connection.commit()
            counts.add(batch)
            if progress is not None:
                progress(spec.name, counts)
    return totals


def _changes(ring: Keyring, spec: EncryptedTable, row: Any, counts: Counts) -> dict[str, str]:
    changes: dict[str, str] = {}
    for name in spec.columns:
        stored = row[name]
        if stored is None:
            continue
        renewed = ring.renewed(stored)
        if renewed is not None:
            changes[name] = renewed
            if stored.startswith(PREFIX):
                counts.reencrypted += 1
            else:
                counts.encrypted += 1
    for index, source in spec.indexes:
        value = row[source]
        if value is None:
            continue
        wanted = ring.blind_index(ring.decrypt(value))
        if row[index] != wanted:
            changes[index] = wanted
            counts.reindexed += 1
    return changes


# --- command line --------------------------------------------------------------------------


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def rotate(settings: Settings, *, batch_size: int = 500, out: Any = sys.stdout) -> Counts:
    """Re-encrypt every encrypted column with the first key of ENCRYPTION_KEYS; audited."""
    from sqlalchemy import insert

    from core.db import make_sync_engine
    from core.orm import AuditEvent

    ring = use(settings)
    engine = make_sync_engine(settings.database_url)

    def report(name: str, counts: Counts) -> None:
        print(
            f"  {name}: {counts.rows} rows, {counts.encrypted} encrypted, "
            f"{counts.reencrypted} re-encrypted, {counts.reindexed} reindexed",
            file=out,
            flush=True,
        )

    try:
        with engine.connect() as connection:
            totals = reencrypt(
                connection,
                ring,
                orm_tables(),
                batch_size=batch_size,
                commit=True,
                progress=report,
            )
            total = Counts()
            for counts in totals.values():
                total.add(counts)
            connection.execute(
                insert(AuditEvent).values(
                    actor="cli",
                    action="encryption.rotated",
                    detail={
                        "tables": {name: vars(c) for name, c in totals.items()},
                        **vars(total),
                    },
                )
            )
            connection.commit()
    finally:
        engine.dispose()
    print(
        f"done: {total.rows} rows, {total.encrypted} encrypted, {total.reencrypted} re-encrypted, "
        f"{total.reindexed} reindexed. Every value now opens with the first key of "
        "ENCRYPTION_KEYS; the others can be removed.",
        file=out,
    )
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.crypto", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("generate-key", help="print a new key")
    rotating = commands.add_parser("rotate", help="re-encrypt everything with the first key")
    rotating.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    if args.command == "generate-key":
        print(generate_key())
        return 0
    from core.settings import get_settings

    settings = get_settings()
    print(f"re-encrypting with the first of {len(settings.encryption_key_list())} key(s)")
    try:
        rotate(settings, batch_size=args.batch_size)
    except UnreadableValue as exc:
        # What was done so far is kept; running again after fixing the keys goes on from there.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run as a script this file is `__main__`, but the column types the ORM uses, and the keys
    # they read, are those of `core.crypto`: go through that module.
    from core.crypto import main as _main

    raise SystemExit(_main())
