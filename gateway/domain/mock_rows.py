"""Synthetic mock rows made from a catalogue entry alone.

SECURITY: this function receives only public metadata, never a connection or a row, so a
sample cannot carry a real value by construction. It still looks like the real thing: valid
identifiers, values inside the bounds, the public categories, realistic nulls and edge values
(bounds, zero, empty and full-width strings), so code written against it meets real data well.
Key columns of one format share their keys across datasets, so joins on the samples find rows.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from gateway.domain.catalog import CatalogEntry, Column, ColumnType
from gateway.domain.identifiers import USCC_ALPHABET, org_code_check_char, resident_id_check_char, uscc_check_char

MockValue = str | int | float | bool | None
_EDGE_EVERY = 7
_NULL_RATE = 0.1


def mock_uscc(rng: random.Random) -> str:
    body = "".join(rng.choice(USCC_ALPHABET) for _ in range(8))
    first17 = f"91{rng.randint(110000, 659999):06d}{body}{org_code_check_char(body)}"
    return first17 + uscc_check_char(first17)


def mock_resident_id(rng: random.Random) -> str:
    birth = date(1960, 1, 1) + timedelta(days=rng.randrange(365 * 45))
    first17 = f"{rng.randint(110000, 659999):06d}{birth:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + resident_id_check_char(first17)


def shared_key(key_format: str, seed: int, row: int) -> str:
    """The row-th key of a format: the same in every dataset's sample, so a join on a shared key
    column (an enterprise's credit code, a person's id) finds rows in the samples as in the data."""
    rng = random.Random(f"{key_format}:{seed}:{row}")  # noqa: S311 - mock values, reproducible by design
    return mock_uscc(rng) if key_format == "uscc" else mock_resident_id(rng)


def _value(column: Column, rng: random.Random, row: int, seed: int) -> MockValue:
    edge = row % _EDGE_EVERY == _EDGE_EVERY - 1
    if column.nullable and rng.random() < _NULL_RATE:
        return None
    if column.key_format in ("uscc", "resident_id"):
        return shared_key(column.key_format, seed, row)
    if column.type is ColumnType.STRING:
        if column.categories:
            return column.categories[0 if edge else rng.randrange(len(column.categories))]
        if edge:
            return rng.choice(["", "ＡＢＣ１２３", "x" * 64, " padded "])
        return f"mock-{column.name}-{rng.randrange(10_000):04d}"
    if column.type in (ColumnType.INTEGER, ColumnType.FLOAT):
        low, high = column.bounds if column.bounds is not None else (0.0, 1000.0)
        # Edge values, or values skewed towards the low end like most amounts.
        number = rng.choice([low, high, max(low, min(high, 0.0))]) if edge else low + (high - low) * rng.random() ** 3
        return int(number) if column.type is ColumnType.INTEGER else round(number, 2)
    if column.type is ColumnType.BOOLEAN:
        return rng.random() < 0.5
    day = date(2000, 1, 1) + timedelta(days=rng.randrange(365 * 27))
    return (date(2000, 1, 1) if edge else day).isoformat()


def mock_rows(entry: CatalogEntry, rows: int, seed: int) -> list[dict[str, MockValue]]:
    rng = random.Random(f"{entry.dataset}:{seed}")  # noqa: S311 - mock values, reproducible by design
    return [{col.name: _value(col, rng, i, seed) for col in entry.columns} for i in range(rows)]
