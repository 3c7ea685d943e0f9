"""What differs between SQLite and MySQL/MariaDB, kept here so that no query outside store/
asks which database it talks to: placeholders, upserts, bulk inserts, index hints, catalogs.

Queries are written with ``?`` placeholders; ``Dialect.sql`` turns them into the driver's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pymysql.converters import escape_string

if TYPE_CHECKING:
    from solverfleet.collector.store.db import Tx

CHUNK = 500  # ids per IN (...) list: far below either database's parameter limit


def marks(n: int) -> str:
    """``n`` placeholders for an ``IN (...)`` list."""
    return ", ".join("?" for _ in range(n))


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``, for bounded ``IN`` lists and multi-row values."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Dialect:
    """The differences, as small string builders and a few statements."""

    name = ""
    for_update = ""

    def sql(self, text: str) -> str:
        return text

    def new(self, column: str) -> str:
        """The proposed value of ``column`` inside an upsert's update clause."""
        raise NotImplementedError

    def upsert(
        self, table: str, columns: Sequence[str], conflict: Sequence[str], updates: dict[str, str]
    ) -> str:
        raise NotImplementedError

    def insert_new(self, table: str, columns: Sequence[str], conflict: str) -> str:
        """An insert that skips rows whose ``conflict`` unique column already exists, and only
        that case: any other constraint violation is still an error."""
        raise NotImplementedError

    def insert_new_rows(
        self, tx: Tx, table: str, columns: Sequence[str], conflict: str, rows: Iterable[Sequence]
    ) -> int:
        """``insert_new`` for many rows at once; returns how many were inserted."""
        return tx.executemany(self.insert_new(table, columns, conflict), rows)

    def index_hint(self, table: str, index: str) -> str:
        """``table`` as a FROM item that makes the planner read ``index``."""
        raise NotImplementedError

    def has_index(self, tx: Tx, table: str, index: str) -> bool:
        raise NotImplementedError


class SqliteDialect(Dialect):
    name = "sqlite"

    def new(self, column: str) -> str:
        return f"excluded.{column}"

    def upsert(self, table, columns, conflict, updates):
        return (
            f"{_insert(table, columns)} ON CONFLICT ({', '.join(conflict)}) "
            f"DO UPDATE SET {_sets(updates)}"
        )

    def insert_new(self, table, columns, conflict):
        return f"{_insert(table, columns)} ON CONFLICT ({conflict}) DO NOTHING"

    def index_hint(self, table, index):
        return f"{table} INDEXED BY {index}"

    def has_index(self, tx, table, index):
        query = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?"
        return tx.one(query, (table, index)) is not None


class MysqlDialect(Dialect):
    name = "mysql"
    for_update = " FOR UPDATE"

    def sql(self, text: str) -> str:
        return _mysql_sql(text)

    def new(self, column: str) -> str:
        return f"VALUES({column})"

    def upsert(self, table, columns, conflict, updates):
        # MySQL evaluates these assignments left to right and later ones see earlier results;
        # callers order them so that the outcome matches SQLite (which sees old values only).
        return f"{_insert(table, columns)} ON DUPLICATE KEY UPDATE {_sets(updates)}"

    def insert_new(self, table, columns, conflict):
        # Not INSERT IGNORE: that would also turn bad values into silent warnings.
        return f"{_insert(table, columns)} ON DUPLICATE KEY UPDATE {conflict} = {conflict}"

    def insert_new_rows(self, tx, table, columns, conflict, rows):
        # One literal multi-row statement: PyMySQL's per-value formatting is the bottleneck.
        values = ",".join("(" + ",".join(map(mysql_literal, r)) + ")" for r in rows)
        return tx.execute_literal(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"
            f" ON DUPLICATE KEY UPDATE {conflict} = {conflict}"
        )

    def index_hint(self, table, index):
        return f"{table} FORCE INDEX ({index})"

    def has_index(self, tx, table, index):
        # SHOW INDEX takes no placeholder for the table: names come from schema.py only.
        return tx.one(f"SHOW INDEX FROM {table} WHERE Key_name = ?", (index,)) is not None


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks(len(columns))})"


def _sets(updates: dict[str, str]) -> str:
    return ", ".join(f"{col} = {expr}" for col, expr in updates.items())


@lru_cache(maxsize=512)
def _mysql_sql(text: str) -> str:
    return text.replace("%", "%%").replace("?", "%s")


def mysql_literal(value: Any) -> str:
    """A value as an SQL literal, for bulk statements built without PyMySQL's slow per-value
    formatting. Only ``None``, ``int`` and ``str`` occur in the collector's bulk inserts."""
    if value is None:
        return "NULL"
    if type(value) is int:
        return str(value)
    return "'" + escape_string(value) + "'"
