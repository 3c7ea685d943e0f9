"""What differs between SQLite and MySQL/MariaDB, kept here so that no query outside store/
asks which database it talks to: placeholders, upserts, bulk inserts, index hints, catalogs.

Queries are written with ``?`` placeholders; ``Dialect.sql`` turns them into the driver's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from pymysql.converters import escape_string

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

    def literal_insert_new(
        self, table: str, columns: Sequence[str], conflict: str, rows: Iterable[Sequence]
    ) -> str | None:
        """``insert_new`` for many rows as one statement with the values inlined, where that
        is faster than the driver's executemany; None: use executemany."""
        return None

    def index_hint(self, table: str, index: str) -> str:
        """``table`` as a FROM item that makes the planner read ``index``."""
        raise NotImplementedError

    def columns_query(self) -> str:
        """A query for the names of a table's columns, one per row (the table: one ``?``)."""
        raise NotImplementedError

    def indexes_query(self) -> str:
        """A query for the names of a table's indexes, one per row (the table: one ``?``)."""
        raise NotImplementedError

    def drop_index(self, table: str, index: str) -> str:
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

    def columns_query(self):
        return "SELECT name FROM pragma_table_info(?)"

    def indexes_query(self):
        return "SELECT name FROM pragma_index_list(?)"

    def drop_index(self, table, index):
        return f"DROP INDEX {index}"


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

    def literal_insert_new(self, table, columns, conflict, rows):
        # PyMySQL's per-value formatting is the bottleneck of executemany.
        values = ",".join("(" + ",".join(map(mysql_literal, r)) + ")" for r in rows)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"
            f" ON DUPLICATE KEY UPDATE {conflict} = {conflict}"
        )

    def index_hint(self, table, index):
        return f"{table} FORCE INDEX ({index})"

    def columns_query(self):
        return (
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
        )

    def indexes_query(self):
        return (
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
        )

    def drop_index(self, table, index):
        return f"DROP INDEX {index} ON {table}"


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
