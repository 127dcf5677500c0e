"""SQL text for the data domain: quoting catalogue identifiers, the table name, the types.

Imports no other engine module. Invariant: an identifier reaches SQL only through quote(),
which refuses anything that is not a catalogue name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from gateway.domain.catalog import ColumnType
from gateway.errors import InternalError

SQL_TYPE = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "DATE",
}
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
TABLE = "records"
COUNT_SQL = f"SELECT count(*) FROM {TABLE}"  # noqa: S608 - constant table name
HASH_PREFIX = "_hash_"
"""`_hash_<key>`: a column of the table holding DuckDB's hash() of the text key it names; the
table is sorted by it. Catalogue names start with a letter, so no column of theirs is one."""
INDEX_PREFIX = "_index_"
"""`_index_<key>`: a table of (h, r): the hash of each row's key (text) and its row id, sorted by h."""


def hash_column(key: str) -> str:
    """The quoted name of the column holding the hash of catalogue column `key`."""
    return f'"{HASH_PREFIX}{quote(key)[1:-1]}"'


def index_table(key: str) -> str:
    """The quoted name of the sorted (key, row id) table of catalogue column `key`."""
    return f'"{INDEX_PREFIX}{quote(key)[1:-1]}"'


def quote(identifier: str) -> str:
    """Quote a catalogue identifier. Catalogue names match ^[a-z][a-z0-9_]*$; refuse anything else."""
    if not identifier or not (identifier[0].isascii() and identifier[0].islower()):
        raise InternalError("identifier not taken from the catalogue (this is a bug)")
    if not all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in identifier):
        raise InternalError("identifier not taken from the catalogue (this is a bug)")
    return f'"{identifier}"'


def scalar_int(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> int:
    """The one integer a query returns. Fetched to the end, so the connection is free for a
    relation (`con.sql`) next: DuckDB refuses one while an execute() result is unfinished."""
    rows = con.execute(sql, list(params)).fetchall()
    if len(rows) != 1:
        raise InternalError("a scalar query did not return one row (this is a bug)")
    return int(rows[0][0])
